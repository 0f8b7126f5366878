/*
 * track.c: per (subscriber, publisher stream) sequence checking with a
 * 64-entry window behind the highest sequence seen, as IPsec's anti-replay
 * window does. Sixteen bytes per stream, O(1) per delivery.
 */
#include "load.h"

enum lt_track_result lt_track_seen(struct lt_track *t, uint64_t s)
{
    if (s >= t->next) {
        uint64_t shift = s - t->next + 1; /* how far the window moves */
        if (t->next == 0 && s > 0)
            shift = 64; /* first delivery: nothing below it was seen yet */
        t->window = shift >= 64 ? 0 : t->window << shift;
        t->window |= 1;
        t->next = s + 1;
        return LT_TR_NEW;
    }
    uint64_t back = t->next - 1 - s;
    if (back >= 64)
        return LT_TR_LATE;
    uint64_t bit = 1ull << back;
    if (t->window & bit)
        return LT_TR_DUP;
    t->window |= bit;
    return LT_TR_LATE;
}
