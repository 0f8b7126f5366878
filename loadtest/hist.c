/*
 * hist.c: a log-linear histogram in the layout of HdrHistogram. Values are
 * ns. Bucket 0 holds 0..255 exactly; bucket b >= 1 holds [128 << b, 256 << b)
 * in 128 steps of 1 << b, so every recorded value is within 1/128 of the
 * truth: two significant digits from 1 µs to 100 s in 31 KB of counters.
 * Recording is a clz, a shift and an add.
 */
#include "load.h"

#include <string.h>

#define HALF_BITS  (LT_HIST_SUB_BITS - 1)
#define HALF_COUNT (1u << HALF_BITS)
#define SUB_MASK   ((1ull << LT_HIST_SUB_BITS) - 1)

void lt_hist_init(struct lt_hist *h)
{
    memset(h, 0, sizeof *h);
    h->min = UINT64_MAX;
}

size_t lt_hist_index(uint64_t v)
{
    if (v > LT_HIST_MAX_NS)
        v = LT_HIST_MAX_NS;
    /* Index of the power-of-two bucket: 0 for v < 256. */
    unsigned bucket = (unsigned)(64 - __builtin_clzll(v | SUB_MASK)) - LT_HIST_SUB_BITS;
    uint64_t sub = v >> bucket; /* 128..255 for bucket >= 1, 0..255 for bucket 0 */
    return ((size_t)(bucket + 1) << HALF_BITS) + (size_t)(sub - HALF_COUNT);
}

uint64_t lt_hist_lowest_equivalent(size_t index)
{
    size_t bucket = index >> HALF_BITS;
    uint64_t sub = (index & (HALF_COUNT - 1)) + HALF_COUNT;
    if (bucket == 0) { /* the first 128 indexes are the values 0..127 */
        sub -= HALF_COUNT;
        bucket = 1;
    }
    return sub << (bucket - 1);
}

uint64_t lt_hist_highest_equivalent(size_t index)
{
    size_t bucket = index >> HALF_BITS;
    size_t shift = bucket == 0 ? 0 : bucket - 1;
    return lt_hist_lowest_equivalent(index) + (1ull << shift) - 1;
}

void lt_hist_record(struct lt_hist *h, uint64_t v)
{
    h->counts[lt_hist_index(v)]++;
    h->total++;
    h->sum += (double)v;
    if (v < h->min)
        h->min = v;
    if (v > h->max)
        h->max = v;
}

void lt_hist_merge(struct lt_hist *into, const struct lt_hist *from)
{
    for (size_t i = 0; i < LT_HIST_COUNTS; i++)
        into->counts[i] += from->counts[i];
    into->total += from->total;
    into->sum += from->sum;
    if (from->min < into->min)
        into->min = from->min;
    if (from->max > into->max)
        into->max = from->max;
}

/*
 * The smallest recorded value v such that at least q% of the values are
 * <= v, reported as the top of its bucket (as HdrHistogram does), and never
 * above the exact max.
 */
uint64_t lt_hist_percentile(const struct lt_hist *h, double q)
{
    if (h->total == 0)
        return 0;
    if (q < 0)
        q = 0;
    if (q > 100)
        q = 100;
    uint64_t rank = (uint64_t)(q / 100.0 * (double)h->total + 0.5);
    if (rank < 1)
        rank = 1;
    if (rank > h->total)
        rank = h->total;
    uint64_t seen = 0;
    for (size_t i = 0; i < LT_HIST_COUNTS; i++) {
        seen += h->counts[i];
        if (seen >= rank) {
            uint64_t v = lt_hist_highest_equivalent(i);
            return v > h->max ? h->max : v;
        }
    }
    return h->max;
}

double lt_hist_mean(const struct lt_hist *h)
{
    return h->total ? h->sum / (double)h->total : 0.0;
}
