/*
 * near.c: the members within a circle, nearest first.
 *
 * The circle is first covered by at most cover_max_cells cells at the finest
 * precision that allows it (never finer than the index). From there the
 * search is best-first: a queue of regions (cells of any precision that hold
 * members), ordered by a lower bound of their distance to the centre. The
 * nearest region is taken next: a cell of the index precision is read
 * member by member, a coarser one is replaced by its occupied children
 * (found with one ordered-tree lookup per occupied child). Regions farther
 * than the radius are never queued, and once `limit` hits are kept the
 * search stops at the first region farther than the farthest hit. So the
 * cost follows the members in the cells that cover the circle, and with a
 * small limit in a crowded area only the cells nearest the centre.
 *
 * Hits are kept in a max-heap of `limit` entries built in the caller's array
 * and sorted in place at the end; the region queue lives on the stack. No
 * allocation.
 */
#include "geo_int.h"

#include <math.h>
#include <string.h>

#define QUEUE_MAX 512 /* regions; beyond that a region is read whole */

struct region {
    double lb;                   /* no member of the region is nearer */
    uint64_t code;               /* at precision p */
    const struct geo_cell *cell; /* set when p is the index precision */
    int p;
};

struct near_ctx {
    const struct geo *g;
    const struct geo_space *sp;
    const struct geo__circle *circle;
    double cos_lat; /* of the centre */
    struct geo_hit *heap;
    size_t limit, n;
    struct region *queue;
    size_t queued;
};

/* ------------------------------------------------------------------------ */
/* Hits                                                                       */

/* Nearest first; equal distances by client id, bytewise, shorter first. */
static int hit_cmp(const struct geo_hit *a, const struct geo_hit *b)
{
    if (a->dist_m != b->dist_m)
        return a->dist_m < b->dist_m ? -1 : 1;
    size_t la = a->member.client_len, lb = b->member.client_len;
    int c = memcmp(a->member.client, b->member.client, la < lb ? la : lb);
    if (c)
        return c;
    return (la > lb) - (la < lb);
}

static void swap_hits(struct geo_hit *a, struct geo_hit *b)
{
    struct geo_hit t = *a;
    *a = *b;
    *b = t;
}

static void hits_down(struct geo_hit *h, size_t n, size_t i)
{
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, big = i;
        if (l < n && hit_cmp(&h[l], &h[big]) > 0)
            big = l;
        if (r < n && hit_cmp(&h[r], &h[big]) > 0)
            big = r;
        if (big == i)
            return;
        swap_hits(&h[i], &h[big]);
        i = big;
    }
}

static void hits_up(struct geo_hit *h, size_t i)
{
    while (i > 0 && hit_cmp(&h[(i - 1) / 2], &h[i]) < 0) {
        swap_hits(&h[(i - 1) / 2], &h[i]);
        i = (i - 1) / 2;
    }
}

/* Heap to ascending order, in place. */
static void hits_sort(struct geo_hit *h, size_t n)
{
    for (size_t end = n; end > 1; end--) {
        swap_hits(&h[0], &h[end - 1]);
        hits_down(h, end - 1, 0);
    }
}

static void offer(struct near_ctx *q, const struct geo_member *m, double dist)
{
    struct geo_hit hit;
    hit.dist_m = dist;
    hit.member.client = m->strs;
    hit.member.client_len = m->client_len;
    if (q->n == q->limit) {
        if (hit_cmp(&hit, &q->heap[0]) >= 0)
            return; /* no nearer than the farthest kept */
        geo__member_view(m, &q->heap[0].member);
        q->heap[0].dist_m = dist;
        hits_down(q->heap, q->n, 0);
        return;
    }
    geo__member_view(m, &q->heap[q->n].member);
    q->heap[q->n].dist_m = dist;
    hits_up(q->heap, q->n++);
}

static void scan_cell(struct near_ctx *q, const struct geo_cell *c)
{
    const struct geo__circle *k = q->circle;
    for (const struct geo_member *m = c->head; m; m = m->cell_next) {
        double d = geo__haversine(k->lat, k->lon, m->lat, m->lon);
        if (d <= k->radius_m)
            offer(q, m, d);
    }
}

/* Whether a region at distance >= lb can still matter. */
static bool wanted(const struct near_ctx *q, double lb)
{
    if (lb > q->circle->radius_m)
        return false;
    return q->n < q->limit || lb <= q->heap[0].dist_m;
}

/* ------------------------------------------------------------------------ */
/* Lower bounds                                                               */

/* Degrees from lon, east or west, to the nearest longitude in [lo, hi]. */
static double lon_gap(double lon, double lo, double hi)
{
    if (lon < lo)
        return fmin(lo - lon, lon - hi + 360.0);
    if (lon > hi)
        return fmin(lon - hi, lo - lon + 360.0);
    return 0.0;
}

/*
 * A lower bound of the distance from the centre to a cell's box. Any path
 * to the box crosses its latitude gap, so R * dlat bounds it. Every point of
 * the box is at least dlon away in longitude, so the distance to the great
 * circle of the meridian dlon away, R * asin(cos(lat) sin(dlon)) (dlon capped
 * at 90 degrees), bounds it too; asin(y) >= y and sin(x) >= x - x^3/6 make
 * that cheaper and still a bound. The margin absorbs rounding, so pruning
 * never drops a member that the haversine keeps.
 */
static double lower_bound(const struct near_ctx *q, uint32_t row, uint32_t col, int p)
{
    struct geo_box b;
    geo__rowcol_box(row, col, p, &b);
    double lat = q->circle->lat, dlat = 0.0;
    if (lat < b.lat_min)
        dlat = b.lat_min - lat;
    else if (lat > b.lat_max)
        dlat = lat - b.lat_max;
    double x = fmin(lon_gap(q->circle->lon, b.lon_min, b.lon_max), 90.0) * GEO__DEG;
    double lb = fmax(dlat * GEO__DEG, q->cos_lat * x * (1.0 - x * x / 6.0)) * GEO_EARTH_RADIUS_M;
    return lb - lb * 1e-9 - 1e-3;
}

/* ------------------------------------------------------------------------ */
/* The region queue: a min-heap by lb                                         */

static void swap_regions(struct region *a, struct region *b)
{
    struct region t = *a;
    *a = *b;
    *b = t;
}

static void queue_push(struct near_ctx *q, const struct region *r)
{
    size_t i = q->queued++;
    q->queue[i] = *r;
    while (i > 0 && q->queue[(i - 1) / 2].lb > q->queue[i].lb) {
        swap_regions(&q->queue[(i - 1) / 2], &q->queue[i]);
        i = (i - 1) / 2;
    }
}

static struct region queue_pop(struct near_ctx *q)
{
    struct region top = q->queue[0];
    q->queue[0] = q->queue[--q->queued];
    for (size_t i = 0;;) {
        size_t l = 2 * i + 1, r = l + 1, min = i;
        if (l < q->queued && q->queue[l].lb < q->queue[min].lb)
            min = l;
        if (r < q->queued && q->queue[r].lb < q->queue[min].lb)
            min = r;
        if (min == i)
            break;
        swap_regions(&q->queue[i], &q->queue[min]);
        i = min;
    }
    return top;
}

/* ------------------------------------------------------------------------ */
/* Search                                                                     */

/* Leaf codes [lo, hi) of a region. */
static void region_range(const struct near_ctx *q, uint64_t code, int p, uint64_t *lo, uint64_t *hi)
{
    unsigned shift = 5u * (unsigned)(q->g->precision - p);
    *lo = code << shift;
    *hi = (code + 1) << shift;
}

/* A cell met while reading a region whole: read it if it can matter. */
static void visit_cell(struct geo_cell *c, void *arg)
{
    struct near_ctx *q = arg;
    if (wanted(q, lower_bound(q, c->row, c->col, q->g->precision)))
        scan_cell(q, c);
}

/* Queues an occupied region if it can matter (reads it now if the queue is full). */
static void consider(struct near_ctx *q, uint64_t code, int p, const struct geo_cell *cell)
{
    uint32_t row, col;
    if (cell) {
        row = cell->row;
        col = cell->col;
    } else {
        geo__deinterleave(code, p, &row, &col);
    }
    struct region r = {.lb = lower_bound(q, row, col, p), .code = code, .cell = cell, .p = p};
    if (!wanted(q, r.lb))
        return;
    if (q->queued < QUEUE_MAX) {
        queue_push(q, &r);
    } else if (cell) {
        scan_cell(q, cell);
    } else {
        uint64_t lo, hi;
        region_range(q, code, p, &lo, &hi);
        geo__tree_range(q->sp->tree, lo, hi, visit_cell, q);
    }
}

static void consider_leaf(struct geo_cell *c, void *arg)
{
    consider(arg, c->code, ((struct near_ctx *)arg)->g->precision, c);
}

/*
 * Queues the occupied children of a region coarser than the index: one
 * ordered lookup per occupied child, or one range walk when the children
 * are cells of the index.
 */
static void expand(struct near_ctx *q, const struct region *r)
{
    int cp = r->p + 1;
    unsigned shift = 5u * (unsigned)(q->g->precision - cp);
    uint64_t key, hi;
    region_range(q, r->code, r->p, &key, &hi);
    if (cp == q->g->precision) {
        geo__tree_range(q->sp->tree, key, hi, consider_leaf, q);
        return;
    }
    for (;;) {
        const struct geo_cell *c = geo__tree_ceil(q->sp->tree, key);
        if (!c || c->code >= hi)
            return;
        uint64_t child = c->code >> shift;
        consider(q, child, cp, NULL);
        key = (child + 1) << shift;
    }
}

/* Queues the occupied cells of the cover. */
static void seed(struct near_ctx *q)
{
    const struct geo *g = q->g;
    struct geo__span s;
    geo__span_at(q->circle, geo__choose_precision(q->circle, g->precision, g->cover_max_cells), &s);
    uint64_t k = geo__span_count(&s);
    for (uint64_t i = 0; i < k; i++) {
        uint64_t code = geo__span_code(&s, i), lo, hi;
        if (s.p == g->precision) {
            const struct geo_cell *c = geo__cell_find(q->sp, code);
            if (c)
                consider(q, code, s.p, c);
            continue;
        }
        region_range(q, code, s.p, &lo, &hi);
        const struct geo_cell *first = geo__tree_ceil(q->sp->tree, lo);
        if (first && first->code < hi)
            consider(q, code, s.p, NULL);
    }
}

static void search(struct near_ctx *q)
{
    seed(q);
    while (q->queued) {
        struct region r = queue_pop(q);
        if (!wanted(q, r.lb))
            return; /* every region left is at least as far */
        if (r.cell)
            scan_cell(q, r.cell);
        else
            expand(q, &r);
    }
}

/* The members within a circle (see geo.h). Loop thread. */
rt_status geo_near(struct geo *g, const char *space, size_t space_len, double lat, double lon,
                   double radius_m, struct geo_hit *out, size_t limit, size_t *n)
{
    *n = 0;
    if (!geo__space_name_ok(space, space_len) || !geo__circle_ok(lat, lon, radius_m) ||
        (limit && !out))
        return RT_INVAL;
    g->st.queries++;
    const struct geo_space *sp = geo__space_find(g, space, space_len);
    if (!sp || limit == 0)
        return RT_OK;
    struct geo__circle circle;
    struct region queue[QUEUE_MAX];
    geo__circle_init(&circle, lat, lon, radius_m);
    struct near_ctx q = {
        .g = g,
        .sp = sp,
        .circle = &circle,
        .cos_lat = cos(lat * GEO__DEG),
        .heap = out,
        .limit = limit,
        .queue = queue,
    };
    search(&q);
    hits_sort(out, q.n);
    *n = q.n;
    return RT_OK;
}
