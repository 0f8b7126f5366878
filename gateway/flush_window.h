/*
 * flush_window.h: when the flush window (--flush-window-ms, server.c) grows
 * and when it comes back. Pure: fed one sample of the event loop per sweep
 * (250 ms), it says the window for the next period. No clock, no I/O; loop
 * thread (it has no state outside its struct).
 *
 * A longer window means fewer, larger writes: less CPU per delivery, and up
 * to the window's length more latency for a busy stream. That trade pays
 * only when the loop cannot keep up at the shorter window: its deliveries
 * then wait in line anyway, and fewer writes are what lets it catch up. A
 * busy loop that keeps up must not pay it. So the window grows only on
 * evidence that the loop is behind (its timers fire late, period after
 * period), not on how busy it is; it comes back fast when the loop has room,
 * and otherwise steps down to try the shorter window after a calm spell,
 * waiting longer before the next try each time a try falls behind again.
 */
#ifndef GW_FLUSH_WINDOW_H
#define GW_FLUSH_WINDOW_H

#include <stdbool.h>
#include <stdint.h>

/* One period of the loop, as the server saw it. */
struct gw_fw_sample {
    double busy;     /* fraction of the period the loop was not waiting for events */
    uint32_t timers; /* timer firings timed in the period (the sweep's, the hold timer's) */
    uint32_t late;   /* of them, later than gw_fw_late_bound_us */
};

struct gw_flush_window {
    uint64_t base_us, max_us; /* --flush-window-ms, --flush-window-max-ms */
    uint64_t window_us;       /* now */
    uint32_t calm;            /* periods in a row on time at this window */
    uint32_t probe_after;     /* calm periods before trying half the window */
    uint32_t since_step_down; /* periods since the window last shrank */
    uint32_t since_grow;      /* periods since the window last grew */
    uint32_t at_base;         /* periods in a row at the base window */
    bool was_late;            /* most timers were late in the last period */
};

/* Starts at base. The window never changes when max_us <= base_us or base_us is 0. */
void gw_fw_init(struct gw_flush_window *fw, uint64_t base_us, uint64_t max_us);
/* How late a timer may fire, at the window now, before it counts as late. */
uint64_t gw_fw_late_bound_us(const struct gw_flush_window *fw);
/* Takes one period's sample; returns the window for the next period (also fw->window_us). */
uint64_t gw_fw_step(struct gw_flush_window *fw, const struct gw_fw_sample *s);

#endif
