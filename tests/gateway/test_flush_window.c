/*
 * The flush window's controller (gateway/flush_window.c), fed made-up
 * periods of the event loop: a busy loop that keeps up keeps the short
 * window; one that falls behind, period after period, gets a longer one; the
 * window comes back at once with room to spare, and otherwise after a calm
 * spell, waiting longer after each try that fell behind.
 */
#include "flush_window.h"

#include <criterion/criterion.h>

#define BASE 20000u  /* 20 ms */
#define MAX  500000u /* 500 ms */

static const struct gw_fw_sample BUSY_ON_TIME = {.busy = 0.95, .timers = 40, .late = 0};
static const struct gw_fw_sample BEHIND = {.busy = 0.9, .timers = 40, .late = 30};
static const struct gw_fw_sample ROOMY = {.busy = 0.3, .timers = 40, .late = 0};
static const struct gw_fw_sample BUSYISH = {.busy = 0.65, .timers = 40, .late = 0};

static uint64_t run(struct gw_flush_window *fw, const struct gw_fw_sample *s, int periods)
{
    uint64_t w = fw->window_us;
    for (int i = 0; i < periods; i++)
        w = gw_fw_step(fw, s);
    return w;
}

/* Grows from the base until it reaches `target`; returns the periods it took. */
static int grow_to(struct gw_flush_window *fw, uint64_t target)
{
    int n = 0;
    while (fw->window_us < target && n < 100) {
        gw_fw_step(fw, &BEHIND);
        n++;
    }
    cr_assert_eq(fw->window_us, target);
    return n;
}

Test(flush_window, a_busy_loop_that_keeps_up_keeps_the_short_window)
{
    /* The bimodal runs: a loop 95% busy whose timers fire on time is keeping up. */
    struct gw_flush_window fw;
    gw_fw_init(&fw, BASE, MAX);
    cr_assert_eq(run(&fw, &BUSY_ON_TIME, 1000), BASE);
    /* A stall now and then (a few late firings of many) is not falling behind. */
    struct gw_fw_sample stalls = {.busy = 0.95, .timers = 40, .late = 3};
    cr_assert_eq(run(&fw, &stalls, 1000), BASE);
    /* A stall in a quiet period (the sweep's firing the only one timed) is one late period
     * among others on time, not falling behind. */
    struct gw_fw_sample one_stall = {.busy = 0.95, .timers = 1, .late = 1};
    struct gw_fw_sample quiet = {.busy = 0.95, .timers = 1, .late = 0};
    for (int i = 0; i < 100; i++) {
        gw_fw_step(&fw, &one_stall);
        cr_assert_eq(gw_fw_step(&fw, &quiet), BASE);
    }
    /* Late while mostly idle: stalled by something else, and a window would not help. */
    struct gw_fw_sample idle_late = {.busy = 0.2, .timers = 40, .late = 40};
    cr_assert_eq(run(&fw, &idle_late, 100), BASE);
}

Test(flush_window, a_loop_that_falls_behind_gets_longer_windows_up_to_the_max)
{
    /* Also when the sweep is the only timer timed: writes that wait for POLLOUT hold nothing. */
    struct gw_flush_window solo;
    gw_fw_init(&solo, BASE, MAX);
    struct gw_fw_sample sweep_late = {.busy = 1.0, .timers = 1, .late = 1};
    cr_assert_eq(run(&solo, &sweep_late, 40), MAX);

    struct gw_flush_window fw;
    gw_fw_init(&fw, BASE, MAX);
    uint64_t seen[32];
    int n = 0;
    for (int i = 0; i < 30; i++)
        seen[n++] = gw_fw_step(&fw, &BEHIND);
    cr_assert_eq(seen[0], BASE, "one late period is not yet behind");
    cr_assert_eq(seen[1], 2 * BASE, "the second in a row doubles it");
    cr_assert_eq(seen[2], 2 * BASE, "the next one lets the longer window drain what waited");
    cr_assert_eq(seen[3], 4 * BASE);
    for (int i = 1; i < n; i++)
        cr_assert(seen[i] == seen[i - 1] || seen[i] == 2 * seen[i - 1] || seen[i] == MAX);
    cr_assert_eq(seen[n - 1], MAX, "never past the max");
}

Test(flush_window, with_room_to_spare_it_comes_back_at_once)
{
    struct gw_flush_window fw;
    gw_fw_init(&fw, BASE, MAX);
    grow_to(&fw, MAX);
    uint64_t w = MAX;
    int periods = 0;
    while (w > BASE) {
        uint64_t next = gw_fw_step(&fw, &ROOMY);
        cr_assert_eq(next, w / 2 < BASE ? BASE : w / 2, "halves every period");
        w = next;
        periods++;
    }
    cr_assert_leq(periods, 5);
}

Test(flush_window, on_time_but_busy_it_tries_the_shorter_window_after_a_calm_spell)
{
    struct gw_flush_window fw;
    gw_fw_init(&fw, BASE, MAX);
    grow_to(&fw, 4 * BASE);
    cr_assert_eq(run(&fw, &BUSYISH, 7), 4 * BASE, "not before 2 s on time");
    cr_assert_eq(run(&fw, &BUSYISH, 1), 2 * BASE);
    cr_assert_eq(run(&fw, &BUSYISH, 8), BASE, "and down to the base, a step a spell");
    cr_assert_eq(run(&fw, &BUSYISH, 100), BASE);
    /* One late firing in a spell starts the count again. */
    grow_to(&fw, 2 * BASE);
    run(&fw, &BUSYISH, 6);
    struct gw_fw_sample one_late = {.busy = 0.65, .timers = 40, .late = 1};
    gw_fw_step(&fw, &one_late);
    cr_assert_eq(run(&fw, &BUSYISH, 7), 2 * BASE);
    cr_assert_eq(run(&fw, &BUSYISH, 1), BASE);
}

Test(flush_window, a_try_that_falls_behind_makes_the_next_one_wait_longer)
{
    struct gw_flush_window fw;
    gw_fw_init(&fw, BASE, MAX);
    grow_to(&fw, 2 * BASE);
    int spell = 8;
    for (int round = 0; round < 8; round++) {
        cr_assert_eq(run(&fw, &BUSYISH, spell - 1), 2 * BASE, "round %d", round);
        cr_assert_eq(run(&fw, &BUSYISH, 1), BASE, "round %d: the try", round);
        cr_assert_eq(gw_fw_step(&fw, &BEHIND), BASE, "round %d: one late period", round);
        cr_assert_eq(gw_fw_step(&fw, &BEHIND), 2 * BASE, "round %d: it falls behind", round);
        spell = spell * 2 > 240 ? 240 : spell * 2;
    }
    /* A try that holds for a minute makes the next one cheap again. */
    cr_assert_eq(run(&fw, &BUSYISH, 240), BASE);
    cr_assert_eq(run(&fw, &BUSYISH, 239), BASE);
    grow_to(&fw, 2 * BASE);
    cr_assert_eq(run(&fw, &BUSYISH, 7), 2 * BASE, "not yet: the last try held 59.75 s");
    cr_assert_eq(run(&fw, &BUSYISH, 233), BASE);
    cr_assert_eq(run(&fw, &BUSYISH, 240), BASE);
    grow_to(&fw, 2 * BASE);
    cr_assert_eq(run(&fw, &BUSYISH, 8), BASE, "after a minute at the base, 2 s again");
}

Test(flush_window, a_window_that_cannot_change_does_not)
{
    struct gw_flush_window fw;
    gw_fw_init(&fw, BASE, BASE);
    cr_assert_eq(run(&fw, &BEHIND, 50), BASE);
    gw_fw_init(&fw, 0, MAX);
    cr_assert_eq(run(&fw, &BEHIND, 50), 0);
}

Test(flush_window, late_means_half_the_window_and_never_under_2_ms)
{
    struct gw_flush_window fw;
    gw_fw_init(&fw, BASE, MAX);
    cr_assert_eq(gw_fw_late_bound_us(&fw), BASE / 2);
    gw_fw_init(&fw, 1000, MAX);
    cr_assert_eq(gw_fw_late_bound_us(&fw), 2000);
    gw_fw_init(&fw, BASE, MAX);
    grow_to(&fw, 8 * BASE);
    cr_assert_eq(gw_fw_late_bound_us(&fw), 4 * BASE);
}
