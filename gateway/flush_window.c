/*
 * flush_window.c: the flush window's controller (flush_window.h). Pure.
 */
#include "flush_window.h"

#define BEHIND_BUSY     0.5  /* a loop this busy and late is behind; less busy, just stalled */
#define RELAXED         0.45 /* below this, the window halves at once */
#define LATE_BOUND_MIN  2000 /* µs: a firing this late or less is never late */
#define PROBE_MIN       8    /* calm periods (2 s) before the first try of a shorter window */
#define PROBE_MAX       240  /* ... and at most (60 s), after tries that fell behind */
#define PROBE_FAILED    20   /* a grow this soon (5 s) after a step down: that try failed */
#define AT_BASE_RESET   240  /* at the base this long (60 s): tries start cheap again */
#define SATURATED_COUNT UINT32_MAX

void gw_fw_init(struct gw_flush_window *fw, uint64_t base_us, uint64_t max_us)
{
    *fw = (struct gw_flush_window){
        .base_us = base_us,
        .max_us = max_us,
        .window_us = base_us,
        .probe_after = PROBE_MIN,
        .since_step_down = SATURATED_COUNT,
        .since_grow = SATURATED_COUNT,
    };
}

uint64_t gw_fw_late_bound_us(const struct gw_flush_window *fw)
{
    uint64_t half = fw->window_us / 2;
    return half > LATE_BOUND_MIN ? half : LATE_BOUND_MIN;
}

static uint32_t bump(uint32_t n)
{
    return n == SATURATED_COUNT ? n : n + 1;
}

static void step_down(struct gw_flush_window *fw)
{
    uint64_t w = fw->window_us / 2;
    fw->window_us = w < fw->base_us ? fw->base_us : w;
    fw->calm = 0;
    fw->since_step_down = 0;
}

uint64_t gw_fw_step(struct gw_flush_window *fw, const struct gw_fw_sample *s)
{
    if (!fw->base_us || fw->max_us <= fw->base_us)
        return fw->window_us;
    fw->since_step_down = bump(fw->since_step_down);
    fw->since_grow = bump(fw->since_grow);
    /* Behind: most timers late in this period and the one before, while the loop works. One
     * stall (a slow callback, a burst of handshakes) makes one period late, not two in a row;
     * a loop that cannot keep up is late every period, even when the sweep's own firing is the
     * only one timed (its writes then wait for POLLOUT, not for the hold timer). */
    bool late = s->late && s->late * 2 >= s->timers;
    bool behind = late && fw->was_late && s->busy >= BEHIND_BUSY;
    fw->was_late = late;
    bool on_time = s->late == 0;
    fw->at_base = fw->window_us <= fw->base_us ? bump(fw->at_base) : 0;
    if (fw->at_base >= AT_BASE_RESET)
        fw->probe_after = PROBE_MIN; /* the last try held: the next one need not wait long */
    if (behind) {
        fw->calm = 0;
        /* A grown window needs a period to drain what waited: judge it after that. */
        if (fw->since_grow < 2 || fw->window_us >= fw->max_us)
            return fw->window_us;
        if (fw->since_step_down <= PROBE_FAILED) { /* the shorter window was too short */
            uint32_t p = fw->probe_after * 2;
            fw->probe_after = p > PROBE_MAX ? PROBE_MAX : p;
        }
        uint64_t w = fw->window_us * 2;
        fw->window_us = w > fw->max_us ? fw->max_us : w;
        fw->since_grow = 0;
        return fw->window_us;
    }
    if (fw->window_us <= fw->base_us) {
        fw->calm = 0;
        return fw->window_us;
    }
    if (s->busy < RELAXED && !late) {
        step_down(fw); /* room to spare: back at once */
        return fw->window_us;
    }
    fw->calm = on_time ? fw->calm + 1 : 0;
    if (fw->calm >= fw->probe_after)
        step_down(fw); /* on time for a while: try the shorter window */
    return fw->window_us;
}
