/*
 * Property tests against brute force: near() must equal a scan of every
 * member, and the watch events must equal an inside/outside model, over
 * random populations that crowd the antimeridian, both poles, cell borders
 * and a dense city, with random changes in between.
 */
#include "helpers.h"

#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define N_MEMBERS 2000
#define N_CIRCLES 500

struct model_member {
    char client[16];
    bool present;
    uint64_t conn;
    double lat, lon;
};

struct model {
    struct model_member m[N_MEMBERS];
};

static void model_set(struct geo *g, struct model *md, size_t i, uint64_t conn, double lat,
                      double lon)
{
    char cell[GEO_CELL_BUF], want[GEO_CELL_BUF];
    cr_assert_eq(tg_set(g, "s", md->m[i].client, conn, lat, lon, cell), RT_OK);
    geo_encode(lat, lon, geo_precision(g), want);
    cr_assert_str_eq(cell, want);
    md->m[i].present = true;
    md->m[i].conn = conn;
    md->m[i].lat = lat;
    md->m[i].lon = lon;
}

static void populate(struct geo *g, struct model *md, struct tg_rng *r)
{
    memset(md, 0, sizeof(*md));
    for (size_t i = 0; i < N_MEMBERS; i++) {
        /* Unique, in an order unrelated to the insertion order. */
        snprintf(md->m[i].client, sizeof(md->m[i].client), "c%u-%zu",
                 (unsigned)(tg_next(r) % 100000), i);
        double lat, lon;
        if (i > 0 && tg_below(r, 20) == 0) { /* same place as another: ties */
            size_t j = tg_below(r, i);
            lat = md->m[j].lat;
            lon = md->m[j].lon;
        } else {
            tg_point(r, TG_ANY, &lat, &lon);
        }
        model_set(g, md, i, tg_below(r, 50), lat, lon);
    }
}

/* A few random changes: moves (small or far), clears, returns. */
static void churn(struct geo *g, struct model *md, struct tg_rng *r, int ops)
{
    for (int k = 0; k < ops; k++) {
        size_t i = tg_below(r, N_MEMBERS);
        struct model_member *mm = &md->m[i];
        if (mm->present && tg_below(r, 5) == 0) {
            cr_assert_eq(geo_clear(g, "s", 1, mm->client, strlen(mm->client)), RT_OK);
            mm->present = false;
            continue;
        }
        double lat = mm->lat, lon = mm->lon;
        if (mm->present && tg_below(r, 2))
            tg_nudge(r, 2000.0, &lat, &lon);
        else
            tg_point(r, TG_ANY, &lat, &lon);
        model_set(g, md, i, mm->conn, lat, lon);
    }
}

struct expect {
    size_t i;
    double d;
};

static const struct model *sort_model;

static int expect_cmp(const void *a, const void *b)
{
    const struct expect *x = a, *y = b;
    if (x->d != y->d)
        return x->d < y->d ? -1 : 1;
    const char *cx = sort_model->m[x->i].client, *cy = sort_model->m[y->i].client;
    size_t lx = strlen(cx), ly = strlen(cy);
    int c = memcmp(cx, cy, lx < ly ? lx : ly);
    return c ? c : (lx > ly) - (lx < ly);
}

/* Everything within the circle, by a scan of the whole model. */
static size_t brute_force(const struct model *md, double lat, double lon, double radius,
                          struct expect *out)
{
    size_t n = 0;
    for (size_t i = 0; i < N_MEMBERS; i++) {
        if (!md->m[i].present)
            continue;
        double d;
        cr_assert_eq(geo_distance(lat, lon, md->m[i].lat, md->m[i].lon, &d), RT_OK);
        if (d <= radius)
            out[n++] = (struct expect){i, d};
    }
    sort_model = md;
    qsort(out, n, sizeof(*out), expect_cmp);
    return n;
}

static void random_circle(struct tg_rng *r, const struct model *md, double *lat, double *lon)
{
    size_t k = tg_below(r, 8);
    if (k == 0) { /* on a member, exactly */
        size_t i = tg_below(r, N_MEMBERS);
        *lat = md->m[i].lat;
        *lon = md->m[i].lon;
    } else if (k == 1) {
        *lat = tg_below(r, 2) ? 90.0 : -90.0;
        *lon = tg_range(r, -180, 180);
    } else {
        tg_point(r, (enum tg_kind)(k % 7), lat, lon);
    }
}

static size_t random_limit(struct tg_rng *r)
{
    static const size_t limits[] = {1, 2, 5, 20, 50, 1000, N_MEMBERS};
    return limits[tg_below(r, sizeof(limits) / sizeof(limits[0]))];
}

static void check_near(struct geo *g, const struct model *md, struct tg_rng *r,
                       struct geo_hit *hits, struct expect *want, size_t *nonempty)
{
    double lat, lon, radius = tg_radius(r);
    random_circle(r, md, &lat, &lon);
    size_t limit = random_limit(r), n;
    cr_assert_eq(geo_near(g, "s", 1, lat, lon, radius, hits, limit, &n), RT_OK);
    size_t total = brute_force(md, lat, lon, radius, want);
    size_t expected = total < limit ? total : limit;
    cr_assert_eq(n, expected, "circle %.9g,%.9g r=%.9g limit %zu: got %zu want %zu (of %zu)", lat,
                 lon, radius, limit, n, expected, total);
    for (size_t k = 0; k < n; k++) {
        const struct model_member *mm = &md->m[want[k].i];
        cr_assert_str_eq(hits[k].member.client, mm->client, "rank %zu, circle %.9g,%.9g r=%.9g", k,
                         lat, lon, radius);
        cr_assert_eq(hits[k].dist_m, want[k].d);
        cr_assert_eq(hits[k].member.lat, mm->lat);
        cr_assert_eq(hits[k].member.lon, mm->lon);
    }
    *nonempty += n > 0;
}

static void near_matches_brute_force(int precision, size_t max_cells, uint64_t seed)
{
    struct geo_config cfg = {.precision = precision, .cover_max_cells = max_cells};
    struct geo *g;
    cr_assert_eq(geo_create(&cfg, &g), RT_OK);
    struct model *md = malloc(sizeof(*md));
    struct geo_hit *hits = malloc(N_MEMBERS * sizeof(*hits));
    struct expect *want = malloc(N_MEMBERS * sizeof(*want));
    cr_assert(md && hits && want);
    struct tg_rng r = {seed};
    populate(g, md, &r);
    size_t nonempty = 0;
    for (int c = 0; c < N_CIRCLES; c++) {
        churn(g, md, &r, 4);
        check_near(g, md, &r, hits, want, &nonempty);
    }
    /* The test means something only if many circles found members. */
    cr_assert_gt(nonempty, N_CIRCLES / 4, "only %zu circles found anything", nonempty);
    free(md);
    free(hits);
    free(want);
    geo_destroy(g);
}

Test(property, near_equals_brute_force_at_default_precision)
{
    near_matches_brute_force(6, 16, 1);
}

Test(property, near_equals_brute_force_with_one_cell_budget)
{
    near_matches_brute_force(6, 1, 2); /* every query a coarse range scan */
}

Test(property, near_equals_brute_force_with_a_large_cell_budget)
{
    near_matches_brute_force(6, 64, 3);
}

Test(property, near_equals_brute_force_at_other_precisions)
{
    near_matches_brute_force(1, 16, 4);
    near_matches_brute_force(3, 9, 5);
    near_matches_brute_force(9, 16, 6);
    near_matches_brute_force(12, 16, 7);
}

/* ------------------------------------------------------------------------ */
/* Watch events against a brute-force inside/outside model                    */

#define N_WMEMBERS 300
#define N_WATCHES  60
#define N_OPS      6000

struct model_watch {
    uint64_t id, conn;
    bool live;
    char space[2];
    double lat, lon, radius;
};

struct wmodel {
    struct model_member m[N_WMEMBERS];
    char space[N_WMEMBERS][2];
    struct model_watch w[N_WATCHES];
};

static bool inside(const struct model_watch *w, double lat, double lon)
{
    double d;
    cr_assert_eq(geo_distance(w->lat, w->lon, lat, lon, &d), RT_OK);
    return d <= w->radius;
}

/* The events one member change should cause, into log. */
static void expect_change(const struct wmodel *md, size_t i, bool had, double olat, double olon,
                          bool has, struct tg_log *log)
{
    const struct model_member *mm = &md->m[i];
    for (size_t k = 0; k < N_WATCHES; k++) {
        const struct model_watch *w = &md->w[k];
        if (!w->live || strcmp(w->space, md->space[i]) != 0)
            continue;
        bool was = had && inside(w, olat, olon), is = has && inside(w, mm->lat, mm->lon);
        if (!was && !is)
            continue;
        struct tg_event e;
        memset(&e, 0, sizeof(e));
        e.watch = w->id;
        e.watch_conn = w->conn;
        e.ev = is ? (was ? GEO_EV_MOVE : GEO_EV_JOIN) : GEO_EV_LEAVE;
        strcpy(e.client, mm->client);
        strcpy(e.space, md->space[i]);
        e.lat = mm->lat;
        e.lon = mm->lon;
        tg_log_push(log, &e);
    }
}

static void compare(struct tg_log *got, struct tg_log *want, int op)
{
    tg_log_sort(got);
    tg_log_sort(want);
    cr_assert_eq(got->n, want->n, "op %d: %zu events, want %zu", op, got->n, want->n);
    for (size_t k = 0; k < got->n; k++) {
        const struct tg_event *a = &got->ev[k], *b = &want->ev[k];
        cr_assert_eq(a->watch, b->watch, "op %d", op);
        cr_assert_eq(a->watch_conn, b->watch_conn);
        cr_assert_eq(a->ev, b->ev, "op %d watch %llu %s: %s, want %s", op,
                     (unsigned long long)a->watch, a->client, geo_event_name(a->ev),
                     geo_event_name(b->ev));
        cr_assert_str_eq(a->client, b->client);
        cr_assert_str_eq(a->space, b->space);
        cr_assert_eq(a->lat, b->lat);
        cr_assert_eq(a->lon, b->lon);
    }
    got->n = 0;
    want->n = 0;
}

static void op_set(struct geo *g, struct wmodel *md, struct tg_rng *r, struct tg_log *want)
{
    size_t i = tg_below(r, N_WMEMBERS);
    struct model_member *mm = &md->m[i];
    bool had = mm->present;
    double olat = mm->lat, olon = mm->lon, lat = mm->lat, lon = mm->lon;
    size_t how = tg_below(r, 4);
    if (had && how == 0) {
        /* set again in place (a meta update) */
    } else if (had && how == 1) {
        tg_nudge(r, exp(tg_range(r, 0, log(20000.0))), &lat, &lon);
    } else {
        tg_point(r, TG_ANY, &lat, &lon);
    }
    cr_assert_eq(tg_set(g, md->space[i], mm->client, mm->conn, lat, lon, NULL), RT_OK);
    mm->present = true;
    mm->lat = lat;
    mm->lon = lon;
    expect_change(md, i, had, olat, olon, true, want);
}

static void op_clear(struct geo *g, struct wmodel *md, struct tg_rng *r, struct tg_log *want)
{
    size_t i = tg_below(r, N_WMEMBERS);
    struct model_member *mm = &md->m[i];
    rt_status st = geo_clear(g, md->space[i], 1, mm->client, strlen(mm->client));
    cr_assert_eq(st, mm->present ? RT_OK : RT_NOT_FOUND);
    if (mm->present)
        expect_change(md, i, true, mm->lat, mm->lon, false, want);
    mm->present = false;
}

static void op_remove_conn(struct geo *g, struct wmodel *md, struct tg_rng *r, struct tg_log *want)
{
    uint64_t conn = tg_below(r, 20);
    size_t nm, nw, want_nm = 0, want_nw = 0;
    for (size_t k = 0; k < N_WATCHES; k++) {
        if (md->w[k].live && md->w[k].conn == conn) {
            md->w[k].live = false;
            want_nw++;
        }
    }
    for (size_t i = 0; i < N_WMEMBERS; i++) {
        if (md->m[i].present && md->m[i].conn == conn) {
            expect_change(md, i, true, md->m[i].lat, md->m[i].lon, false, want);
            md->m[i].present = false;
            want_nm++;
        }
    }
    cr_assert_eq(geo_remove_conn(g, conn, NULL, NULL, &nm, &nw), RT_OK);
    cr_assert_eq(nm, want_nm);
    cr_assert_eq(nw, want_nw);
}

static void op_watch(struct geo *g, struct wmodel *md, struct tg_rng *r)
{
    struct model_watch *w = &md->w[tg_below(r, N_WATCHES)];
    if (w->live) {
        cr_assert_eq(geo_watch_remove(g, w->id, w->conn), RT_OK);
        w->live = false;
        return;
    }
    w->conn = tg_below(r, 20);
    w->space[0] = tg_below(r, 4) ? 'a' : 'b';
    tg_point(r, TG_ANY, &w->lat, &w->lon);
    w->radius = tg_radius(r);
    cr_assert_eq(geo_watch_add(g, w->space, 1, w->lat, w->lon, w->radius, w->conn, &w->id), RT_OK);
    w->live = true;
}

static void watch_events_match_model(int precision, size_t max_cells, uint64_t seed)
{
    struct tg_log got = {0}, want = {0};
    struct geo_config cfg = {.precision = precision,
                             .cover_max_cells = max_cells,
                             .on_event = tg_log_event,
                             .arg = &got};
    struct geo *g;
    cr_assert_eq(geo_create(&cfg, &g), RT_OK);
    struct wmodel *md = calloc(1, sizeof(*md));
    cr_assert_not_null(md);
    struct tg_rng r = {seed};
    for (size_t i = 0; i < N_WMEMBERS; i++) {
        snprintf(md->m[i].client, sizeof(md->m[i].client), "m%zu", i);
        md->m[i].conn = tg_below(&r, 20);
        md->space[i][0] = tg_below(&r, 4) ? 'a' : 'b';
    }
    for (int k = 0; k < N_WATCHES; k++)
        op_watch(g, md, &r);
    size_t events = 0;
    for (int op = 0; op < N_OPS; op++) {
        size_t kind = tg_below(&r, 100);
        if (kind < 80)
            op_set(g, md, &r, &want);
        else if (kind < 92)
            op_clear(g, md, &r, &want);
        else if (kind < 99)
            op_watch(g, md, &r);
        else
            op_remove_conn(g, md, &r, &want);
        events += got.n;
        compare(&got, &want, op);
    }
    cr_assert_gt(events, 500, "only %zu events", events);
    free(md);
    geo_destroy(g);
    tg_log_free(&got);
    tg_log_free(&want);
}

Test(property, watch_events_equal_the_inside_outside_model)
{
    watch_events_match_model(6, 16, 11);
}

Test(property, watch_events_equal_the_model_at_other_precisions)
{
    watch_events_match_model(3, 4, 12);
    watch_events_match_model(9, 16, 13);
    watch_events_match_model(6, 1, 14);
}
