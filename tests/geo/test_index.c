/* The per-node index: set, clear, near, watches, removal by connection. */
#include "helpers.h"

#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#define S(str) (str), strlen(str)

static struct geo *make(struct tg_log *log)
{
    struct geo_config cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.on_event = log ? tg_log_event : NULL;
    cfg.arg = log;
    struct geo *g;
    cr_assert_eq(geo_create(&cfg, &g), RT_OK);
    return g;
}

static struct geo_stats stats(const struct geo *g)
{
    struct geo_stats st;
    geo_get_stats(g, &st);
    return st;
}

Test(index, set_returns_the_cell_and_copies_everything)
{
    struct geo *g = make(NULL);
    uint8_t meta[] = "{\"car\":\"B-123\"}";
    char user[] = "u42";
    struct geo_member_in in = {
        .space = "drivers",
        .space_len = 7,
        .client = "c9f",
        .client_len = 3,
        .user = user,
        .user_len = 3,
        .conn = 77,
        .lat = 52.52,
        .lon = 13.405,
        .meta = meta,
        .meta_len = sizeof(meta) - 1,
        .meta_enc = 1,
    };
    char cell[GEO_CELL_BUF];
    cr_assert_eq(geo_set(g, &in, cell), RT_OK);
    cr_assert_str_eq(cell, "u33dc0");
    meta[0] = 'X';
    user[0] = 'X';
    struct geo_member_view v;
    cr_assert_eq(geo_get(g, S("drivers"), S("c9f"), &v), RT_OK);
    cr_assert_eq(v.meta_len, sizeof(meta) - 1);
    cr_assert_eq(memcmp(v.meta, "{\"car\":\"B-123\"}", v.meta_len), 0);
    cr_assert_str_eq(v.user, "u42");
    cr_assert_str_eq(v.client, "c9f");
    cr_assert_str_eq(v.space, "drivers");
    cr_assert_eq(v.conn, 77);
    cr_assert_eq(v.meta_enc, 1);
    cr_assert_eq(v.lat, 52.52);
    struct geo_stats st = stats(g);
    cr_assert_eq(st.members, 1);
    cr_assert_eq(st.spaces, 1);
    cr_assert_eq(st.cells, 1);
    cr_assert_eq(st.sets, 1);
    /* Absent meta on the next set means none. */
    in.meta = NULL;
    in.meta_len = 0;
    cr_assert_eq(geo_set(g, &in, NULL), RT_OK);
    cr_assert_eq(geo_get(g, S("drivers"), S("c9f"), &v), RT_OK);
    cr_assert_eq(v.meta_len, 0);
    cr_assert_null(v.meta);
    geo_destroy(g);
}

Test(index, moving_between_cells_frees_the_old_cell)
{
    struct geo *g = make(NULL);
    char cell[GEO_CELL_BUF];
    cr_assert_eq(tg_set(g, "d", "a", 1, 52.52, 13.405, cell), RT_OK);
    cr_assert_eq(tg_set(g, "d", "b", 1, 52.52, 13.405, cell), RT_OK);
    cr_assert_eq(stats(g).cells, 1);
    cr_assert_eq(tg_set(g, "d", "a", 1, 48.8566, 2.3522, cell), RT_OK);
    cr_assert_str_eq(cell, "u09tvw");
    cr_assert_eq(stats(g).cells, 2);
    cr_assert_eq(tg_set(g, "d", "b", 1, 48.8566, 2.3522, cell), RT_OK);
    cr_assert_eq(stats(g).cells, 1);
    cr_assert_eq(stats(g).members, 2);
    geo_destroy(g);
}

Test(index, near_is_nearest_first_with_distances_and_limit)
{
    struct geo *g = make(NULL);
    /* Members every ~100 m north of the centre, in random insertion order. */
    int order[] = {5, 2, 9, 0, 7, 3, 8, 1, 6, 4};
    for (int i = 0; i < 10; i++) {
        char client[16];
        snprintf(client, sizeof(client), "m%d", order[i]);
        cr_assert_eq(tg_set(g, "d", client, 1, 52.52 + order[i] * 0.0009, 13.405, NULL), RT_OK);
    }
    struct geo_hit hits[20];
    size_t n;
    cr_assert_eq(geo_near(g, S("d"), 52.52, 13.405, 500, hits, 20, &n), RT_OK);
    cr_assert_eq(n, 5, "0, 100, 200, 300, 400 m");
    for (size_t i = 0; i < n; i++) {
        char want[32];
        snprintf(want, sizeof(want), "m%zu", i);
        cr_assert_str_eq(hits[i].member.client, want);
        cr_assert_float_eq(hits[i].dist_m, (double)i * 100.07, 0.5);
    }
    cr_assert_eq(geo_near(g, S("d"), 52.52, 13.405, 50000, hits, 3, &n), RT_OK);
    cr_assert_eq(n, 3);
    cr_assert_str_eq(hits[2].member.client, "m2");
    cr_assert_eq(geo_near(g, S("d"), 52.52, 13.405, 50000, hits, 0, &n), RT_OK);
    cr_assert_eq(n, 0);
    cr_assert_eq(geo_near(g, S("other"), 52.52, 13.405, 50000, hits, 20, &n), RT_OK);
    cr_assert_eq(n, 0, "an unknown space is empty");
    cr_assert_eq(stats(g).queries, 4);
    geo_destroy(g);
}

Test(index, equal_distances_are_ordered_by_client_id)
{
    struct geo *g = make(NULL);
    const char *ids[] = {"b", "ab", "a", "c", "aa"};
    for (int i = 0; i < 5; i++)
        cr_assert_eq(tg_set(g, "d", ids[i], 1, 10.0, 20.0, NULL), RT_OK);
    struct geo_hit hits[5];
    size_t n;
    cr_assert_eq(geo_near(g, S("d"), 10.001, 20.0, 1000, hits, 5, &n), RT_OK);
    cr_assert_eq(n, 5);
    const char *want[] = {"a", "aa", "ab", "b", "c"};
    for (int i = 0; i < 5; i++)
        cr_assert_str_eq(hits[i].member.client, want[i]);
    geo_destroy(g);
}

Test(index, clear_removes_and_frees_the_space)
{
    struct geo *g = make(NULL);
    cr_assert_eq(tg_set(g, "d", "a", 1, 1.0, 2.0, NULL), RT_OK);
    cr_assert_eq(geo_clear(g, S("d"), S("b")), RT_NOT_FOUND);
    cr_assert_eq(geo_clear(g, S("x"), S("a")), RT_NOT_FOUND);
    cr_assert_eq(geo_clear(g, S("d"), S("a")), RT_OK);
    cr_assert_eq(geo_clear(g, S("d"), S("a")), RT_NOT_FOUND);
    struct geo_stats st = stats(g);
    cr_assert_eq(st.members + st.spaces + st.cells, 0);
    geo_destroy(g);
}

Test(index, same_client_in_two_spaces_is_two_members)
{
    struct geo *g = make(NULL);
    cr_assert_eq(tg_set(g, "drivers", "a", 1, 1.0, 2.0, NULL), RT_OK);
    cr_assert_eq(tg_set(g, "riders", "a", 1, 3.0, 4.0, NULL), RT_OK);
    struct geo_member_view v;
    cr_assert_eq(geo_get(g, S("drivers"), S("a"), &v), RT_OK);
    cr_assert_eq(v.lat, 1.0);
    cr_assert_eq(geo_get(g, S("riders"), S("a"), &v), RT_OK);
    cr_assert_eq(v.lat, 3.0);
    cr_assert_eq(stats(g).spaces, 2);
    geo_destroy(g);
}

struct removed {
    char clients[8][16];
    size_t n;
};

static void on_removed(void *arg, const struct geo_member_view *m)
{
    struct removed *r = arg;
    cr_assert_lt(r->n, 8);
    snprintf(r->clients[r->n++], 16, "%s/%s", m->space, m->client);
}

Test(index, remove_conn_drops_its_members_and_watches_only)
{
    struct tg_log log = {0};
    struct geo *g = make(&log);
    cr_assert_eq(tg_set(g, "drivers", "a", 1, 10.0, 10.0, NULL), RT_OK);
    cr_assert_eq(tg_set(g, "riders", "a", 1, 10.0, 10.0, NULL), RT_OK);
    cr_assert_eq(tg_set(g, "drivers", "b", 2, 10.0, 10.0, NULL), RT_OK);
    uint64_t w_own, w_other;
    cr_assert_eq(geo_watch_add(g, S("drivers"), 10.0, 10.0, 100, 1, &w_own), RT_OK);
    cr_assert_eq(geo_watch_add(g, S("drivers"), 10.0, 10.0, 100, 2, &w_other), RT_OK);
    struct removed r = {0};
    size_t nm, nw;
    cr_assert_eq(geo_remove_conn(g, 1, on_removed, &r, &nm, &nw), RT_OK);
    cr_assert_eq(nm, 2);
    cr_assert_eq(nw, 1);
    cr_assert_eq(r.n, 2);
    bool d = strcmp(r.clients[0], "drivers/a") == 0 || strcmp(r.clients[1], "drivers/a") == 0;
    bool ri = strcmp(r.clients[0], "riders/a") == 0 || strcmp(r.clients[1], "riders/a") == 0;
    cr_assert(d && ri);
    /* Only the other connection's watch hears the leave. */
    cr_assert_eq(log.n, 1);
    cr_assert_eq(log.ev[0].watch, w_other);
    cr_assert_eq(log.ev[0].ev, GEO_EV_LEAVE);
    cr_assert_str_eq(log.ev[0].client, "a");
    struct geo_member_view v;
    cr_assert_eq(geo_get(g, S("drivers"), S("b"), &v), RT_OK);
    cr_assert_eq(geo_watch_remove(g, w_own, 1), RT_NOT_FOUND);
    struct geo_stats st = stats(g);
    cr_assert_eq(st.members, 1);
    cr_assert_eq(st.watches, 1);
    cr_assert_eq(st.spaces, 1, "riders is empty and gone");
    cr_assert_eq(geo_remove_conn(g, 99, NULL, NULL, &nm, &nw), RT_OK);
    cr_assert_eq(nm + nw, 0);
    geo_destroy(g);
    tg_log_free(&log);
}

Test(index, moving_a_member_to_another_connection_changes_its_owner)
{
    struct geo *g = make(NULL);
    cr_assert_eq(tg_set(g, "d", "a", 1, 10.0, 10.0, NULL), RT_OK);
    cr_assert_eq(tg_set(g, "d", "a", 2, 10.0, 10.0, NULL), RT_OK);
    size_t nm;
    cr_assert_eq(geo_remove_conn(g, 1, NULL, NULL, &nm, NULL), RT_OK);
    cr_assert_eq(nm, 0);
    cr_assert_eq(geo_remove_conn(g, 2, NULL, NULL, &nm, NULL), RT_OK);
    cr_assert_eq(nm, 1);
    geo_destroy(g);
}

Test(index, a_new_user_for_the_same_client_replaces_the_user)
{
    struct geo *g = make(NULL);
    struct geo_member_in in = {.space = "d",
                               .space_len = 1,
                               .client = "a",
                               .client_len = 1,
                               .user = "first",
                               .user_len = 5,
                               .lat = 1,
                               .lon = 1};
    cr_assert_eq(geo_set(g, &in, NULL), RT_OK);
    in.user = "second-user";
    in.user_len = 11;
    in.lat = 2;
    cr_assert_eq(geo_set(g, &in, NULL), RT_OK);
    struct geo_member_view v;
    cr_assert_eq(geo_get(g, S("d"), S("a"), &v), RT_OK);
    cr_assert_str_eq(v.user, "second-user");
    cr_assert_eq(v.lat, 2.0);
    cr_assert_eq(stats(g).members, 1);
    struct geo_hit hit;
    size_t n;
    cr_assert_eq(geo_near(g, S("d"), 2, 1, 10, &hit, 1, &n), RT_OK);
    cr_assert_eq(n, 1);
    geo_destroy(g);
}

Test(index, watch_reports_join_move_leave)
{
    struct tg_log log = {0};
    struct geo *g = make(&log);
    uint64_t w;
    cr_assert_eq(geo_watch_add(g, S("d"), 52.52, 13.405, 1000, 5, &w), RT_OK);
    cr_assert_eq(w, 1);
    cr_assert_eq(tg_set(g, "d", "a", 1, 52.53, 13.405, NULL), RT_OK); /* 1.1 km: outside */
    cr_assert_eq(log.n, 0);
    cr_assert_eq(tg_set(g, "d", "a", 1, 52.521, 13.405, NULL), RT_OK);
    cr_assert_eq(tg_set(g, "d", "a", 1, 52.522, 13.406, NULL), RT_OK);
    cr_assert_eq(tg_set(g, "d", "a", 1, 52.522, 13.406, NULL), RT_OK); /* same place: move */
    cr_assert_eq(tg_set(g, "d", "a", 1, 52.6, 13.406, NULL), RT_OK);
    cr_assert_eq(tg_set(g, "d", "a", 1, 52.52, 13.405, NULL), RT_OK);
    cr_assert_eq(geo_clear(g, S("d"), S("a")), RT_OK);
    cr_assert_eq(tg_set(g, "d", "b", 2, 52.52, 13.405, NULL), RT_OK);
    cr_assert_eq(geo_remove_conn(g, 2, NULL, NULL, NULL, NULL), RT_OK);
    enum geo_event want[] = {GEO_EV_JOIN, GEO_EV_MOVE,  GEO_EV_MOVE, GEO_EV_LEAVE,
                             GEO_EV_JOIN, GEO_EV_LEAVE, GEO_EV_JOIN, GEO_EV_LEAVE};
    cr_assert_eq(log.n, 8);
    for (size_t i = 0; i < log.n; i++) {
        cr_assert_eq(log.ev[i].ev, want[i], "event %zu: %s", i, geo_event_name(log.ev[i].ev));
        cr_assert_eq(log.ev[i].watch, w);
        cr_assert_eq(log.ev[i].watch_conn, 5);
    }
    cr_assert_eq(log.ev[3].lat, 52.6, "a leave after a move has the new position");
    cr_assert_eq(log.ev[5].lat, 52.52, "a leave after a clear has the last position");
    cr_assert_eq(stats(g).events, 8);
    cr_assert_eq(geo_watch_remove(g, w, 4), RT_NOT_FOUND, "not the owner");
    cr_assert_eq(geo_watch_remove(g, w, 5), RT_OK);
    cr_assert_eq(geo_watch_remove(g, w, 5), RT_NOT_FOUND);
    cr_assert_eq(tg_set(g, "d", "a", 1, 52.52, 13.405, NULL), RT_OK);
    cr_assert_eq(log.n, 8, "no events after unwatch");
    cr_assert_eq(stats(g).watch_cells, 0);
    geo_destroy(g);
    tg_log_free(&log);
}

Test(index, watch_ids_are_never_reused_and_spaces_are_separate)
{
    struct tg_log log = {0};
    struct geo *g = make(&log);
    uint64_t a, b, c;
    cr_assert_eq(geo_watch_add(g, S("d"), 0, 0, 10, 1, &a), RT_OK);
    cr_assert_eq(geo_watch_remove(g, a, 1), RT_OK);
    cr_assert_eq(geo_watch_add(g, S("d"), 0, 0, 10, 1, &b), RT_OK);
    cr_assert_eq(geo_watch_add(g, S("e"), 0, 0, 10, 1, &c), RT_OK);
    cr_assert(b > a && c > b);
    cr_assert_eq(tg_set(g, "e", "x", 1, 0, 0, NULL), RT_OK);
    cr_assert_eq(log.n, 1);
    cr_assert_eq(log.ev[0].watch, c);
    geo_destroy(g);
    tg_log_free(&log);
}

static struct geo *reentrant_g;
static int reentrant_calls;

static void reenter(void *arg, uint64_t watch_id, uint64_t watch_conn, enum geo_event ev,
                    const struct geo_member_view *m)
{
    (void)arg;
    (void)watch_conn;
    (void)ev;
    (void)m;
    struct geo *g = reentrant_g;
    uint64_t id;
    reentrant_calls++;
    cr_assert_eq(tg_set(g, "d", "z", 1, 0, 0, NULL), RT_AGAIN);
    cr_assert_eq(geo_clear(g, S("d"), S("a")), RT_AGAIN);
    cr_assert_eq(geo_watch_add(g, S("d"), 0, 0, 1, 1, &id), RT_AGAIN);
    cr_assert_eq(geo_watch_remove(g, watch_id, 9), RT_AGAIN);
    cr_assert_eq(geo_remove_conn(g, 1, NULL, NULL, NULL, NULL), RT_AGAIN);
    struct geo_hit hits[4];
    size_t n;
    cr_assert_eq(geo_near(g, S("d"), 0, 0, 10, hits, 4, &n), RT_OK, "reading is fine");
    cr_assert_eq(n, 1);
}

Test(index, callbacks_cannot_change_the_index)
{
    struct geo_config cfg = {.on_event = reenter};
    cr_assert_eq(geo_create(&cfg, &reentrant_g), RT_OK);
    uint64_t w;
    cr_assert_eq(geo_watch_add(reentrant_g, S("d"), 0, 0, 10, 9, &w), RT_OK);
    cr_assert_eq(tg_set(reentrant_g, "d", "a", 1, 0, 0, NULL), RT_OK);
    cr_assert_eq(geo_clear(reentrant_g, S("d"), S("a")), RT_OK);
    cr_assert_eq(reentrant_calls, 2);
    geo_destroy(reentrant_g);
}

Test(index, any_double_is_safe)
{
    struct geo *g = make(NULL);
    const double bad[] = {NAN, -NAN, INFINITY, -INFINITY, 1e308, -1e308, 90.5, -180.5, 4e9};
    struct geo_hit hits[2];
    size_t n;
    uint64_t w;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        double x = bad[i];
        cr_assert_eq(tg_set(g, "d", "a", 1, x, 0, NULL), RT_INVAL);
        cr_assert_eq(tg_set(g, "d", "a", 1, 0, x * 2, NULL), RT_INVAL);
        cr_assert_eq(geo_near(g, S("d"), x, 0, 10, hits, 2, &n), RT_INVAL);
        cr_assert_eq(geo_near(g, S("d"), 0, x * 2, 10, hits, 2, &n), RT_INVAL);
        cr_assert_eq(geo_near(g, S("d"), 0, 0, x * 1e6, hits, 2, &n), RT_INVAL);
        cr_assert_eq(geo_watch_add(g, S("d"), x, 0, 10, 1, &w), RT_INVAL);
        cr_assert_eq(geo_watch_add(g, S("d"), 0, 0, -fabs(x), 1, &w), RT_INVAL);
        cr_assert_eq(w, 0);
    }
    cr_assert_eq(geo_near(g, S("d"), 0, 0, -1e-300, hits, 2, &n), RT_INVAL);
    cr_assert_eq(geo_near(g, S("d"), 0, 0, 50000.0000001, hits, 2, &n), RT_INVAL);
    /* The extremes are fine. */
    cr_assert_eq(tg_set(g, "d", "a", 1, 90, 180, NULL), RT_OK);
    cr_assert_eq(tg_set(g, "d", "b", 1, -90, -180, NULL), RT_OK);
    cr_assert_eq(geo_near(g, S("d"), 90, 0, 0.001, hits, 2, &n), RT_OK);
    cr_assert_eq(n, 1, "the pole is one point");
    cr_assert_eq(geo_near(g, S("d"), -90, 123, 50000, hits, 2, &n), RT_OK);
    cr_assert_eq(n, 1);
    struct geo_stats st = stats(g);
    cr_assert_eq(st.members, 2);
    geo_destroy(g);
}

Test(index, sizes_are_checked)
{
    struct geo *g = make(NULL);
    static uint8_t meta[GEO_META_MAX + 1];
    static char long_id[GEO_USER_MAX + 2];
    memset(long_id, 'x', sizeof(long_id) - 1);
    struct geo_member_in in = {.space = "d",
                               .space_len = 1,
                               .client = "a",
                               .client_len = 1,
                               .meta = meta,
                               .meta_len = GEO_META_MAX + 1};
    cr_assert_eq(geo_set(g, &in, NULL), RT_TOO_BIG);
    in.meta_len = GEO_META_MAX;
    cr_assert_eq(geo_set(g, &in, NULL), RT_OK);
    in.client = long_id;
    in.client_len = GEO_CLIENT_MAX + 1;
    cr_assert_eq(geo_set(g, &in, NULL), RT_INVAL);
    in.client_len = GEO_CLIENT_MAX;
    cr_assert_eq(geo_set(g, &in, NULL), RT_OK);
    in.user = long_id;
    in.user_len = GEO_USER_MAX + 1;
    cr_assert_eq(geo_set(g, &in, NULL), RT_INVAL);
    in.user_len = GEO_USER_MAX;
    cr_assert_eq(geo_set(g, &in, NULL), RT_OK);
    in.space = long_id;
    in.space_len = GEO_SPACE_MAX + 1;
    cr_assert_eq(geo_set(g, &in, NULL), RT_INVAL);
    in.space_len = 0;
    cr_assert_eq(geo_set(g, &in, NULL), RT_INVAL);
    in.space_len = GEO_SPACE_MAX;
    cr_assert_eq(geo_set(g, &in, NULL), RT_OK);
    cr_assert_eq(geo_set(g, NULL, NULL), RT_INVAL);
    cr_assert_eq(stats(g).members, 3);
    geo_destroy(g);
}

Test(index, limits_refuse_with_rt_limit)
{
    struct geo_config cfg = {.max_members = 2, .max_watches = 1, .max_spaces = 2};
    struct geo *g;
    cr_assert_eq(geo_create(&cfg, &g), RT_OK);
    cr_assert_eq(tg_set(g, "d", "a", 1, 0, 0, NULL), RT_OK);
    cr_assert_eq(tg_set(g, "d", "b", 1, 0, 0, NULL), RT_OK);
    cr_assert_eq(tg_set(g, "d", "c", 1, 0, 0, NULL), RT_LIMIT);
    cr_assert_eq(tg_set(g, "d", "a", 1, 1, 1, NULL), RT_OK, "moving is not adding");
    uint64_t w;
    cr_assert_eq(geo_watch_add(g, S("e"), 0, 0, 1, 1, &w), RT_OK);
    cr_assert_eq(geo_watch_add(g, S("e"), 0, 0, 1, 1, &w), RT_LIMIT);
    cr_assert_eq(geo_clear(g, S("d"), S("a")), RT_OK);
    cr_assert_eq(tg_set(g, "f", "a", 1, 0, 0, NULL), RT_LIMIT, "third space");
    struct geo_stats st = stats(g);
    cr_assert_eq(st.spaces, 2, "the refused space is not left behind");
    cr_assert_eq(st.members, 1);
    geo_destroy(g);
}

Test(index, precision_is_configurable)
{
    struct geo *g;
    struct geo_config cfg = {.precision = 13};
    cr_assert_eq(geo_create(&cfg, &g), RT_INVAL);
    cfg.precision = -1;
    cr_assert_eq(geo_create(&cfg, &g), RT_INVAL);
    for (int p = 1; p <= GEO_PRECISION_MAX; p++) {
        cfg.precision = p;
        cr_assert_eq(geo_create(&cfg, &g), RT_OK);
        cr_assert_eq(geo_precision(g), p);
        char cell[GEO_CELL_BUF], want[GEO_CELL_BUF];
        cr_assert_eq(tg_set(g, "d", "a", 1, 57.64911, 10.40744, cell), RT_OK);
        geo_encode(57.64911, 10.40744, p, want);
        cr_assert_str_eq(cell, want);
        geo_destroy(g);
    }
    cr_assert_eq(geo_create(NULL, &g), RT_OK);
    cr_assert_eq(geo_precision(g), GEO_PRECISION_DEFAULT);
    geo_destroy(g);
    geo_destroy(NULL);
}

Test(index, churn_leaves_nothing_behind)
{
    struct tg_log log = {0};
    struct geo *g = make(&log);
    struct tg_rng r = {42};
    uint64_t ids[50];
    for (int i = 0; i < 50; i++) {
        double lat, lon;
        tg_point(&r, TG_ANY, &lat, &lon);
        cr_assert_eq(geo_watch_add(g, S("d"), lat, lon, tg_radius(&r), (uint64_t)(i % 7), &ids[i]),
                     RT_OK);
    }
    for (int i = 0; i < 3000; i++) {
        char client[16];
        snprintf(client, sizeof(client), "c%d", i % 500);
        double lat, lon;
        tg_point(&r, TG_ANY, &lat, &lon);
        cr_assert_eq(tg_set(g, i % 3 ? "d" : "e", client, (uint64_t)(i % 11), lat, lon, NULL),
                     RT_OK);
    }
    for (int i = 0; i < 50; i += 2)
        cr_assert_eq(geo_watch_remove(g, ids[i], (uint64_t)(i % 7)), RT_OK);
    for (uint64_t c = 0; c < 11; c++)
        cr_assert_eq(geo_remove_conn(g, c, NULL, NULL, NULL, NULL), RT_OK);
    struct geo_stats st = stats(g);
    cr_assert_eq(st.members + st.spaces + st.cells + st.watches + st.watch_cells, 0);
    geo_destroy(g);
    tg_log_free(&log);
}
