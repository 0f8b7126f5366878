/*
 * Presence across nodes (geo/fleet*.c): several fleets joined by an
 * in-memory bus with NATS's subject matching and per-publisher ordering
 * (tests/support/membus.c), where the tests choose the interleaving, lose
 * messages, and kill nodes.
 */
#include "fleet.h"
#include "helpers.h"
#include "membus.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAXN     4
#define MAXW     16
#define MAXM     200
#define SUBJ_CAP GEO_FLEET_SUBJECT_MAX

struct tnode;

/* The bus and the nodes on it. */
struct tbus {
    struct membus m;
    struct tnode *nodes[MAXN];
    struct tg_rng rng;
};

struct twatch {
    uint64_t ticket, watch_id;
    double lat, lon, radius;
    bool ready, added;
    char inside[MAXM][GEO_CLIENT_MAX + 1];
    size_t n_inside;
};

/* A member as its own node knows it (the truth). */
struct tmember {
    char client[32];
    double lat, lon;
    bool present;
    uint64_t conn;
};

struct tnode {
    struct membus_port port; /* up, fail_publish, gen: how its bus is */
    struct tbus *bus;
    int idx;
    char id[24];
    struct geo *geo;
    struct geo_fleet *fl;
    uint64_t ready[256];
    bool ready_partial[256];
    size_t n_ready;
    struct twatch w[MAXW];
    size_t nw;
    struct tmember m[MAXM];
    size_t nm;
};

static uint64_t now_ms = 1000000;
static uint32_t resync_ms;              /* the nodes' periodic resync; 0 = the default (5 min) */
static uint32_t max_follows, max_owner; /* the nodes' caps; 0 = the defaults */
static unsigned restarts;

/* ---------------------------------------------------------------------- */
/* The bus                                                                  */

static size_t rng_below(void *rng, size_t n)
{
    return tg_below(rng, n);
}

/* A bus of MAXN nodes whose interleaving and losses follow seed. */
static void bus_init(struct tbus *b, uint64_t seed)
{
    memset(b, 0, sizeof(*b));
    b->rng.s = seed;
    membus_init(&b->m, MAXN, rng_below, &b->rng);
}

static void node_receive(struct membus_port *to, const char *subject, const char *reply,
                         const uint8_t *data, size_t len)
{
    struct tnode *n = RT_CONTAINER(to, struct tnode, port);
    geo_fleet_receive(n->fl, subject, reply, data, len, now_ms);
}

static void flush_all(struct tbus *b)
{
    for (int i = 0; i < MAXN; i++)
        if (b->nodes[i] && b->nodes[i]->fl && b->nodes[i]->port.up)
            geo_fleet_flush(b->nodes[i]->fl);
}

static void tick_all(struct tbus *b)
{
    for (int i = 0; i < MAXN; i++)
        if (b->nodes[i] && b->nodes[i]->fl && b->nodes[i]->port.up)
            geo_fleet_tick(b->nodes[i]->fl, now_ms, b->nodes[i]->port.gen);
}

/* Flushes, delivers and ticks until the fleet is quiet (time moves by step_ms). */
static void settle(struct tbus *b, uint64_t step_ms, int rounds)
{
    for (int r = 0; r < rounds; r++) {
        flush_all(b);
        membus_pump(&b->m);
        now_ms += step_ms;
        tick_all(b);
        membus_pump(&b->m);
    }
}

/* ---------------------------------------------------------------------- */
/* Nodes                                                                    */

static struct twatch *watch_by_id(struct tnode *n, uint64_t id)
{
    for (size_t i = 0; i < n->nw; i++)
        if (n->w[i].added && n->w[i].watch_id == id)
            return &n->w[i];
    return NULL;
}

static void inside_remove(struct twatch *w, const char *client)
{
    for (size_t i = 0; i < w->n_inside; i++)
        if (strcmp(w->inside[i], client) == 0) {
            memcpy(w->inside[i], w->inside[--w->n_inside], sizeof(w->inside[i]));
            return;
        }
}

static void on_event(void *arg, uint64_t watch_id, uint64_t watch_conn, enum geo_event ev,
                     const struct geo_member_view *m)
{
    (void)watch_conn;
    struct tnode *n = arg;
    struct twatch *w = watch_by_id(n, watch_id);
    cr_assert_not_null(w, "event for an unknown watch");
    if (ev == GEO_EV_LEAVE || ev == GEO_EV_MOVE)
        inside_remove(w, m->client);
    if (ev == GEO_EV_JOIN || ev == GEO_EV_MOVE) {
        cr_assert_lt(w->n_inside, MAXM);
        for (size_t i = 0; i < w->n_inside; i++)
            cr_assert_str_neq(w->inside[i], m->client, "join for a member already inside");
        snprintf(w->inside[w->n_inside++], GEO_CLIENT_MAX + 1, "%s", m->client);
    }
}

static void on_ready(void *arg, uint64_t ticket, bool partial)
{
    struct tnode *n = arg;
    cr_assert_lt(n->n_ready, 256);
    n->ready_partial[n->n_ready] = partial;
    n->ready[n->n_ready++] = ticket;
}

static void node_start(struct tbus *b, int idx)
{
    struct tnode *n = b->nodes[idx];
    if (!n) {
        n = calloc(1, sizeof(*n));
        b->nodes[idx] = n;
    }
    n->bus = b;
    n->idx = idx;
    membus_attach(&b->m, &n->port, idx, node_receive);
    snprintf(n->id, sizeof(n->id), "n%d-%u", idx, restarts++);
    struct geo_config gc;
    memset(&gc, 0, sizeof(gc));
    gc.on_event = on_event;
    gc.arg = n;
    cr_assert_eq(geo_create(&gc, &n->geo), RT_OK);
    struct geo_fleet_config fc;
    memset(&fc, 0, sizeof(fc));
    fc.geo = n->geo;
    fc.node = n->id;
    fc.ttl_ms = 3000;
    fc.linger_ms = 5000;
    fc.snapshot_wait_ms = 500;
    fc.resync_ms = resync_ms;
    fc.max_follows = max_follows;
    fc.max_owner_follows = max_owner;
    fc.bus = (struct geo_fleet_bus){membus_publish, membus_subscribe, membus_unsubscribe, &n->port};
    fc.on_ready = on_ready;
    fc.arg = n;
    cr_assert_eq(geo_fleet_create(&fc, now_ms, &n->fl), RT_OK);
}

/* The process dies: no goodbye, its state is gone. */
static void node_kill(struct tbus *b, int idx)
{
    struct tnode *n = b->nodes[idx];
    geo_fleet_destroy(n->fl);
    geo_destroy(n->geo);
    n->fl = NULL;
    n->geo = NULL;
    n->port.up = false;
    n->nw = n->nm = n->n_ready = 0;
    membus_drop_queue(&n->port); /* what it had not sent yet dies with it */
}

static void bus_free(struct tbus *b)
{
    for (int i = 0; i < MAXN; i++) {
        struct tnode *n = b->nodes[i];
        if (n && n->fl)
            node_kill(b, i);
        free(n);
    }
    membus_free(&b->m);
}

static struct tmember *member_at(struct tnode *n, const char *client)
{
    for (size_t i = 0; i < n->nm; i++)
        if (strcmp(n->m[i].client, client) == 0)
            return &n->m[i];
    cr_assert_lt(n->nm, MAXM);
    struct tmember *m = &n->m[n->nm++];
    memset(m, 0, sizeof(*m));
    snprintf(m->client, sizeof(m->client), "%s", client);
    m->conn = n->nm;
    return m;
}

static void set(struct tnode *n, const char *client, double lat, double lon, const char *meta)
{
    struct tmember *m = member_at(n, client);
    struct geo_member_in in;
    memset(&in, 0, sizeof(in));
    in.space = "drivers";
    in.space_len = 7;
    in.client = client;
    in.client_len = strlen(client);
    in.user = "u";
    in.user_len = 1;
    in.conn = m->conn;
    in.lat = lat;
    in.lon = lon;
    if (meta) {
        in.meta = (const uint8_t *)meta;
        in.meta_len = strlen(meta);
        in.meta_enc = 1;
    }
    cr_assert_eq(geo_fleet_set(n->fl, &in, NULL), RT_OK);
    m->lat = lat;
    m->lon = lon;
    m->present = true;
}

static void clear(struct tnode *n, const char *client)
{
    struct tmember *m = member_at(n, client);
    rt_status st = geo_fleet_clear(n->fl, "drivers", 7, client, strlen(client));
    cr_assert_eq(st, m->present ? RT_OK : RT_NOT_FOUND);
    m->present = false;
}

static void disconnect(struct tnode *n, const char *client)
{
    struct tmember *m = member_at(n, client);
    cr_assert_eq(geo_fleet_remove_conn(n->fl, m->conn), RT_OK);
    m->present = false;
}

static bool ready_has(const struct tnode *n, uint64_t ticket, bool *partial)
{
    for (size_t i = 0; i < n->n_ready; i++)
        if (n->ready[i] == ticket) {
            if (partial)
                *partial = n->ready_partial[i];
            return true;
        }
    return false;
}

/* A want; true if it was ready at once. */
static bool want(struct tnode *n, double lat, double lon, double radius, bool hold,
                 uint64_t *ticket)
{
    bool ready = false;
    cr_assert_eq(
        geo_fleet_want(n->fl, 0, "drivers", 7, lat, lon, radius, hold, now_ms, ticket, &ready),
        RT_OK);
    return ready;
}

/* A want charged to owner; its status. */
static rt_status want_by(struct tnode *n, uint64_t owner, double lat, double lon, bool hold,
                         uint64_t *ticket)
{
    bool ready = false;
    return geo_fleet_want(n->fl, owner, "drivers", 7, lat, lon, 20, hold, now_ms, ticket, &ready);
}

/* Every member of every live node inside the circle, as client ids. */
static size_t truth(struct tbus *b, double lat, double lon, double radius,
                    char out[][GEO_CLIENT_MAX + 1], size_t cap)
{
    size_t k = 0;
    for (int i = 0; i < MAXN; i++) {
        struct tnode *n = b->nodes[i];
        if (!n || !n->fl || !n->port.up)
            continue;
        for (size_t j = 0; j < n->nm; j++) {
            double d;
            if (!n->m[j].present)
                continue;
            cr_assert_eq(geo_distance(lat, lon, n->m[j].lat, n->m[j].lon, &d), RT_OK);
            if (d <= radius) {
                cr_assert_lt(k, cap);
                snprintf(out[k++], GEO_CLIENT_MAX + 1, "%s", n->m[j].client);
            }
        }
    }
    return k;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(a, b);
}

static void assert_same(char (*a)[GEO_CLIENT_MAX + 1], size_t na, char (*b)[GEO_CLIENT_MAX + 1],
                        size_t nb, const char *what)
{
    qsort(a, na, sizeof(*a), cmp_str);
    qsort(b, nb, sizeof(*b), cmp_str);
    size_t i = 0;
    for (; i < na && i < nb; i++)
        cr_assert_str_eq(a[i], b[i], "%s: differs at %zu (%zu vs %zu members)", what, i, na, nb);
    cr_assert_eq(na, nb, "%s: %zu members, expected %zu", what, na, nb);
}

/* near on node n equals the truth. */
static void check_near(struct tbus *b, struct tnode *n, double lat, double lon, double radius)
{
    static struct geo_hit hits[MAXM * MAXN];
    static char got[MAXM * MAXN][GEO_CLIENT_MAX + 1], want_[MAXM * MAXN][GEO_CLIENT_MAX + 1];
    size_t nh = 0;
    cr_assert_eq(geo_near(n->geo, "drivers", 7, lat, lon, radius, hits, MAXM * MAXN, &nh), RT_OK);
    for (size_t i = 0; i < nh; i++)
        snprintf(got[i], GEO_CLIENT_MAX + 1, "%s", hits[i].member.client);
    size_t nt = truth(b, lat, lon, radius, want_, MAXM * MAXN);
    assert_same(got, nh, want_, nt, "near");
}

/* A watch's event-built member set equals the truth. */
static void check_watch(struct tbus *b, struct twatch *w)
{
    static char want_[MAXM * MAXN][GEO_CLIENT_MAX + 1];
    size_t nt = truth(b, w->lat, w->lon, w->radius, want_, MAXM * MAXN);
    assert_same(w->inside, w->n_inside, want_, nt, "watch");
}

/* Once a hold is ready: add the index watch and take its members from near. */
static void watch_arm(struct tnode *n, struct twatch *w)
{
    static struct geo_hit hits[MAXM * MAXN];
    size_t nh = 0;
    cr_assert_eq(geo_watch_add(n->geo, "drivers", 7, w->lat, w->lon, w->radius, 999, &w->watch_id),
                 RT_OK);
    cr_assert_eq(geo_near(n->geo, "drivers", 7, w->lat, w->lon, w->radius, hits, MAXM * MAXN, &nh),
                 RT_OK);
    w->n_inside = 0;
    for (size_t i = 0; i < nh; i++)
        snprintf(w->inside[w->n_inside++], GEO_CLIENT_MAX + 1, "%s", hits[i].member.client);
    w->added = true;
}

static struct twatch *watch(struct tnode *n, double lat, double lon, double radius)
{
    cr_assert_lt(n->nw, MAXW);
    struct twatch *w = &n->w[n->nw++];
    memset(w, 0, sizeof(*w));
    w->lat = lat;
    w->lon = lon;
    w->radius = radius;
    w->ready = want(n, lat, lon, radius, true, &w->ticket);
    if (w->ready)
        watch_arm(n, w);
    return w;
}

static void arm_ready_watches(struct tnode *n)
{
    for (size_t i = 0; i < n->nw; i++) {
        struct twatch *w = &n->w[i];
        if (!w->ready && ready_has(n, w->ticket, NULL)) {
            w->ready = true;
            watch_arm(n, w);
        }
    }
}

static struct geo_fleet_stats fstats(const struct tnode *n)
{
    struct geo_fleet_stats st;
    geo_fleet_get_stats(n->fl, &st);
    return st;
}

/* ---------------------------------------------------------------------- */
/* Tests                                                                    */

Test(fleet, near_sees_members_of_other_nodes_with_their_meta)
{
    struct tbus b;
    bus_init(&b, 1);
    node_start(&b, 0);
    node_start(&b, 1);
    settle(&b, 400, 1); /* hellos, heartbeats, past the warm-up: each knows the other */
    cr_assert_eq(fstats(b.nodes[1]).nodes, 1);
    set(b.nodes[0], "a1", 52.5200, 13.4050, "{\"car\":\"B-123\"}");
    set(b.nodes[0], "a2", 52.5210, 13.4060, NULL);
    set(b.nodes[0], "far", 48.85, 2.35, NULL);
    geo_fleet_flush(b.nodes[0]->fl);
    membus_pump(&b.m); /* nobody follows yet: nothing kept */
    cr_assert_eq(fstats(b.nodes[1]).remote_members, 0);

    uint64_t t;
    cr_assert_not(want(b.nodes[1], 52.5201, 13.4049, 500, false, &t), "needs a snapshot first");
    membus_pump(&b.m);
    bool partial = true;
    cr_assert(ready_has(b.nodes[1], t, &partial));
    cr_assert_not(partial);
    check_near(&b, b.nodes[1], 52.5201, 13.4049, 500);
    struct geo_member_view v;
    cr_assert_eq(geo_get(b.nodes[1]->geo, "drivers", 7, "a1", 2, &v), RT_OK);
    cr_assert(v.conn & GEO_FLEET_CONN_BIT);
    cr_assert_eq(v.meta_len, strlen("{\"car\":\"B-123\"}"));
    cr_assert_eq(memcmp(v.meta, "{\"car\":\"B-123\"}", v.meta_len), 0);
    cr_assert_eq(v.meta_enc, 1);
    cr_assert_str_eq(v.user, "u");
    cr_assert_eq(geo_get(b.nodes[1]->geo, "drivers", 7, "far", 3, &v), RT_NOT_FOUND,
                 "a cell nobody asked about is not copied");

    /* Deltas now: a move, a new member, a clear, a disconnect. */
    set(b.nodes[0], "a1", 52.5202, 13.4052, NULL);
    set(b.nodes[0], "a3", 52.5199, 13.4051, NULL);
    clear(b.nodes[0], "a2");
    settle(&b, 10, 1);
    check_near(&b, b.nodes[1], 52.5201, 13.4049, 500);
    cr_assert_eq(geo_get(b.nodes[1]->geo, "drivers", 7, "a1", 2, &v), RT_OK);
    cr_assert_eq(v.meta_len, 0, "meta replaced by none");
    disconnect(b.nodes[0], "a3");
    settle(&b, 10, 1);
    check_near(&b, b.nodes[1], 52.5201, 13.4049, 500);

    /* A second near on the same cells is answered at once. */
    cr_assert(want(b.nodes[1], 52.5201, 13.4049, 300, false, &t));
    bus_free(&b);
}

Test(fleet, watch_events_across_nodes)
{
    struct tbus b;
    bus_init(&b, 2);
    node_start(&b, 0);
    node_start(&b, 1);
    settle(&b, 400, 1);
    set(b.nodes[0], "inside", 52.5200, 13.4050, NULL);
    struct twatch *w = watch(b.nodes[1], 52.5200, 13.4050, 1000);
    cr_assert_not(w->ready);
    settle(&b, 10, 1);
    arm_ready_watches(b.nodes[1]);
    cr_assert(w->ready);
    check_watch(&b, w);
    cr_assert_eq(w->n_inside, 1);

    set(b.nodes[0], "joiner", 52.5210, 13.4060, NULL); /* join */
    set(b.nodes[0], "inside", 52.5201, 13.4051, NULL); /* move */
    settle(&b, 10, 1);
    check_watch(&b, w);
    cr_assert_eq(w->n_inside, 2);
    set(b.nodes[0], "inside", 52.60, 13.60, NULL); /* leaves the circle and the followed cells */
    disconnect(b.nodes[0], "joiner");              /* leave by disconnect */
    settle(&b, 10, 1);
    check_watch(&b, w);
    cr_assert_eq(w->n_inside, 0);
    cr_assert_eq(fstats(b.nodes[1]).remote_members, 0, "a member moved away is not kept stale");
    bus_free(&b);
}

Test(fleet, a_dead_node_expires_and_its_restart_brings_nothing_back)
{
    struct tbus b;
    bus_init(&b, 3);
    node_start(&b, 0);
    node_start(&b, 1);
    settle(&b, 400, 1);
    for (int i = 0; i < 20; i++) {
        char c[16];
        snprintf(c, sizeof(c), "m%d", i);
        set(b.nodes[0], c, 52.52 + i * 0.0001, 13.405, NULL);
    }
    struct twatch *w = watch(b.nodes[1], 52.521, 13.405, 2000);
    settle(&b, 10, 2);
    arm_ready_watches(b.nodes[1]);
    cr_assert_eq(w->n_inside, 20);

    node_kill(&b, 0); /* kill -9 */
    now_ms += 1000;
    tick_all(&b);
    cr_assert_eq(w->n_inside, 20, "still inside the TTL");
    now_ms += 2100; /* ttl 3000 */
    tick_all(&b);
    cr_assert_eq(w->n_inside, 0, "leave events once the TTL ran out");
    cr_assert_eq(fstats(b.nodes[1]).remote_members, 0);
    cr_assert_eq(fstats(b.nodes[1]).nodes_expired, 1);

    node_start(&b, 0); /* the same node restarts: a new id, nothing of before */
    settle(&b, 10, 3);
    check_watch(&b, w);
    cr_assert_eq(w->n_inside, 0);
    set(b.nodes[0], "new", 52.521, 13.405, NULL); /* and its new members do arrive */
    settle(&b, 10, 1);
    check_watch(&b, w);
    cr_assert_eq(w->n_inside, 1);
    bus_free(&b);
}

Test(fleet, a_partitioned_node_comes_back_whole)
{
    struct tbus b;
    bus_init(&b, 4);
    node_start(&b, 0);
    node_start(&b, 1);
    settle(&b, 400, 1);
    set(b.nodes[0], "stays", 52.52, 13.405, NULL);
    set(b.nodes[0], "goes", 52.5201, 13.405, NULL);
    struct twatch *w = watch(b.nodes[1], 52.52, 13.405, 1000);
    settle(&b, 10, 2);
    arm_ready_watches(b.nodes[1]);
    cr_assert_eq(w->n_inside, 2);

    b.nodes[0]->port.up = false; /* cut off: B hears nothing, A's changes are lost */
    now_ms += 3500;
    tick_all(&b);
    cr_assert_eq(w->n_inside, 0, "expired");
    b.nodes[0]->port.up = true;
    clear(b.nodes[0], "goes");
    set(b.nodes[0], "meanwhile", 52.5202, 13.405, NULL);
    b.nodes[0]->port.gen++; /* A's bus reconnected */
    settle(&b, 10, 3);
    check_watch(&b, w);
    cr_assert_eq(w->n_inside, 2);
    bus_free(&b);
}

/* Publishes that fail are announced in the next heartbeat; the others resync from the node. */
Test(fleet, a_node_whose_publishes_failed_is_resynced_from)
{
    struct tbus b;
    bus_init(&b, 12);
    node_start(&b, 0);
    node_start(&b, 1);
    settle(&b, 400, 1);
    struct twatch *w = watch(b.nodes[1], 52.52, 13.405, 1000);
    settle(&b, 10, 1);
    arm_ready_watches(b.nodes[1]);
    cr_assert(w->ready);
    b.nodes[0]->port.fail_publish = true;
    set(b.nodes[0], "lost", 52.5201, 13.405, NULL);
    geo_fleet_flush(b.nodes[0]->fl);
    b.nodes[0]->port.fail_publish = false;
    cr_assert_eq(fstats(b.nodes[0]).publish_failures, 1);
    settle(&b, 10, 2);
    cr_assert_eq(w->n_inside, 0, "the delta was lost");
    settle(&b, 600, 3); /* the next heartbeat (every ttl/3 = 1 s) */
    check_watch(&b, w);
    cr_assert_eq(w->n_inside, 1);
    bus_free(&b);
}

/*
 * A snapshot that waits for a slow node must not drop a member that moved
 * into its cells after its own node answered.
 */
Test(fleet, a_member_moving_in_while_a_snapshot_waits_stays)
{
    struct tbus b;
    bus_init(&b, 8);
    for (int i = 0; i < 3; i++)
        node_start(&b, i);
    settle(&b, 400, 1);
    set(b.nodes[0], "x", 52.52, 13.405, NULL);
    uint64_t t;
    want(b.nodes[1], 52.52, 13.405, 200, true, &t);
    settle(&b, 10, 1);
    cr_assert(ready_has(b.nodes[1], t, NULL));
    check_near(&b, b.nodes[1], 52.52, 13.405, 200);

    cr_assert_not(want(b.nodes[1], 52.60, 13.405, 200, false, &t)); /* ~9 km north */
    while (membus_deliver_one(&b.m, 1)) /* the request reaches nodes 0 and 2 */
        ;
    while (membus_deliver_one(&b.m, 0)) /* node 0 answers; node 2's answer is slow */
        ;
    cr_assert_not(ready_has(b.nodes[1], t, NULL));
    set(b.nodes[0], "x", 52.60, 13.405, NULL); /* x moves into the cells awaited */
    geo_fleet_flush(b.nodes[0]->fl);
    while (membus_deliver_one(&b.m, 0))
        ;
    while (membus_deliver_one(&b.m, 2)) /* node 2's answer: the snapshot is complete */
        ;
    cr_assert(ready_has(b.nodes[1], t, NULL));
    check_near(&b, b.nodes[1], 52.60, 13.405, 200);
    struct geo_member_view v;
    cr_assert_eq(geo_get(b.nodes[1]->geo, "drivers", 7, "x", 1, &v), RT_OK);
    cr_assert_float_eq(v.lat, 52.60, 1e-9);
    bus_free(&b);
}

Test(fleet, many_joins_at_once_go_out_in_few_messages)
{
    struct tbus b;
    bus_init(&b, 5);
    node_start(&b, 0);
    node_start(&b, 1);
    settle(&b, 400, 1);
    uint64_t t;
    want(b.nodes[1], 52.52, 13.405, 100, true, &t);
    settle(&b, 10, 1);
    cr_assert(ready_has(b.nodes[1], t, NULL));
    uint64_t before = fstats(b.nodes[0]).messages_out;
    struct geo_member_in in;
    memset(&in, 0, sizeof(in));
    in.space = "drivers";
    in.space_len = 7;
    char client[16];
    for (int i = 0; i < 5000; i++) { /* 5,000 members join one cell in one iteration */
        snprintf(client, sizeof(client), "j%d", i);
        in.client = client;
        in.client_len = strlen(client);
        in.conn = 10 + (uint64_t)i;
        in.lat = 52.52 + (i % 50) * 0.00001;
        in.lon = 13.405 + (i / 50) * 0.00001;
        cr_assert_eq(geo_fleet_set(b.nodes[0]->fl, &in, NULL), RT_OK);
    }
    geo_fleet_flush(b.nodes[0]->fl);
    uint64_t sent = fstats(b.nodes[0]).messages_out - before;
    cr_assert_leq(sent, 4, "%lu bus messages for 5,000 joins", (unsigned long)sent);
    membus_pump(&b.m);
    cr_assert_eq(fstats(b.nodes[1]).remote_members, 5000);
    bus_free(&b);
}

Test(fleet, garbage_on_the_bus_is_counted_and_ignored)
{
    struct tbus b;
    bus_init(&b, 6);
    node_start(&b, 0);
    struct tg_rng r = {7};
    const char *subjects[] = {"rtgate.geo.hb",  "rtgate.geo.s",
                              "rtgate.geo.r.x", "rtgate.geo.d.drivers.u.3.3.d.c",
                              "rtgate.geo.d.x", "rtgate.geo.zz"};
    uint8_t buf[256];
    for (int i = 0; i < 5000; i++) {
        size_t len = tg_below(&r, sizeof(buf));
        for (size_t k = 0; k < len; k++)
            buf[k] = (uint8_t)tg_next(&r);
        if (len && tg_below(&r, 2))
            buf[0] = (uint8_t)(0x80 | (buf[0] & 0x0f)); /* a map, so parsing goes deeper */
        geo_fleet_receive(b.nodes[0]->fl, subjects[i % 6], "rtgate.geo.r.y", buf, len, now_ms);
    }
    cr_assert_gt(fstats(b.nodes[0]).bad_messages, 4000);
    cr_assert_eq(fstats(b.nodes[0]).remote_members, 0);
    /* Well-formed heartbeats of 10,000 made-up nodes: the node table stays bounded. */
    for (int i = 0; i < 10000; i++) {
        uint8_t hb[64];
        char id[16];
        int n = snprintf(id, sizeof(id), "x%d", i);
        size_t k = 0;
        hb[k++] = 0x81; /* {"n": id} */
        hb[k++] = 0xa1;
        hb[k++] = 'n';
        hb[k++] = (uint8_t)(0xa0 | n);
        memcpy(hb + k, id, (size_t)n);
        k += (size_t)n;
        geo_fleet_receive(b.nodes[0]->fl, "rtgate.geo.hb", NULL, hb, k, now_ms);
    }
    cr_assert_eq(fstats(b.nodes[0]).nodes, 4096);
    bus_free(&b);
}

/*
 * Real bus messages (heartbeats, deltas, snapshot requests and answers), each
 * mutated many ways (bytes changed, cut short, lengths bumped), fed to a node
 * following those cells: nothing crashes or trips the sanitizers, and it
 * still works afterwards.
 */
Test(fleet, mutated_real_messages_are_survived)
{
    struct tbus b;
    bus_init(&b, 10);
    resync_ms = 2000; /* what forged ids left behind goes with the periodic resync */
    node_start(&b, 0);
    node_start(&b, 1);
    settle(&b, 400, 1);
    uint64_t t;
    want(b.nodes[1], 52.52, 13.405, 3000, true, &t);
    for (int i = 0; i < 30; i++) {
        char c[16];
        snprintf(c, sizeof(c), "m%d", i);
        set(b.nodes[0], c, 52.52 + i * 0.0003, 13.405, i % 2 ? "{\"k\":[1,2,3]}" : NULL);
    }
    geo_fleet_flush(b.nodes[0]->fl);
    /* Capture what is queued now (node 1's snapshot request, node 0's deltas). */
    struct membus_msg saved[64];
    size_t ns = membus_copy_queued(&b.m, saved, 64);
    membus_pump(&b.m); /* answers come too: capture them on the next round */
    ns += membus_copy_queued(&b.m, saved + ns, 64 - ns);
    settle(&b, 10, 2);
    cr_assert_geq(ns, 3);
    struct tg_rng r = {11};
    uint8_t buf[1 << 16];
    for (size_t i = 0; i < ns; i++) {
        for (int round = 0; round < 400; round++) {
            size_t len = saved[i].len < sizeof(buf) ? saved[i].len : sizeof(buf);
            memcpy(buf, saved[i].data, len);
            tg_mutate(&r, buf, &len, sizeof(buf), 3);
            const char *reply = saved[i].reply[0] ? saved[i].reply : NULL;
            geo_fleet_receive(b.nodes[1]->fl, saved[i].subject, reply, buf, len, now_ms);
        }
        free(saved[i].data);
    }
    cr_assert_gt(fstats(b.nodes[1]).bad_messages, 1000);
    settle(&b, 600, 8); /* made-up nodes expire; the periodic resync sweeps made-up members */
    check_near(&b, b.nodes[1], 52.52, 13.405, 3000);
    cr_assert_geq(fstats(b.nodes[1]).resyncs, 1);
    bus_free(&b);
}

/* msgpack by hand, for messages the fleet itself would never write. */
static size_t mp_str(uint8_t *p, const char *s)
{
    size_t n = strlen(s);
    p[0] = (uint8_t)(0xa0 | n);
    memcpy(p + 1, s, n);
    return n + 1;
}

static size_t mp_f64(uint8_t *p, double d)
{
    uint64_t u;
    memcpy(&u, &d, sizeof(u));
    p[0] = 0xcb;
    for (int i = 0; i < 8; i++)
        p[1 + i] = (uint8_t)(u >> (56 - 8 * i));
    return 9;
}

/* {"n":"z9","s":"drivers","e":[ ...: the head of a hand-made delta of n entries. */
static size_t mp_delta_head(uint8_t *m, unsigned n)
{
    size_t k = 0;
    m[k++] = 0x83;
    k += mp_str(m + k, "n");
    k += mp_str(m + k, "z9");
    k += mp_str(m + k, "s");
    k += mp_str(m + k, "drivers");
    k += mp_str(m + k, "e");
    m[k++] = (uint8_t)(0x90 | n);
    return k;
}

/* {"v":1,"c":"q","o":1,"la":52.52,"lo":13.405}: a set with no user and no meta. */
static size_t mp_bare_set(uint8_t *m)
{
    size_t k = 0;
    m[k++] = 0x85;
    k += mp_str(m + k, "v");
    m[k++] = 0x01;
    k += mp_str(m + k, "c");
    k += mp_str(m + k, "q");
    k += mp_str(m + k, "o");
    m[k++] = 0x01;
    k += mp_str(m + k, "la");
    k += mp_f64(m + k, 52.52);
    k += mp_str(m + k, "lo");
    k += mp_f64(m + k, 13.405);
    return k;
}

/* One node watching central Berlin; subject gets the delta subject of its share cell. */
static void follow_berlin(struct tbus *b, char subject[SUBJ_CAP])
{
    node_start(b, 0);
    uint64_t t;
    want(b->nodes[0], 52.52, 13.405, 100, true, &t);
    char cell[GEO_CELL_BUF];
    cr_assert_eq(geo_encode(52.52, 13.405, 5, cell), RT_OK);
    snprintf(subject, SUBJ_CAP, "rtgate.geo.d.drivers.%c.%c.%c.%c.%c", cell[0], cell[1], cell[2],
             cell[3], cell[4]);
}

Test(fleet, an_entry_without_user_or_meta_is_stored_once)
{
    struct tbus b;
    bus_init(&b, 9);
    char subject[SUBJ_CAP];
    follow_berlin(&b, subject);
    uint8_t m[128];
    size_t k = mp_delta_head(m, 1);
    k += mp_bare_set(m + k);
    geo_fleet_receive(b.nodes[0]->fl, subject, NULL, m, k, now_ms);
    cr_assert_eq(fstats(b.nodes[0]).deltas_in, 1);
    cr_assert_eq(m[k - 32], 0x01);
    m[k - 32] = 0x02; /* v 2, the same state: compared (no user to compare), version kept */
    geo_fleet_receive(b.nodes[0]->fl, subject, NULL, m, k, now_ms);
    geo_fleet_receive(b.nodes[0]->fl, subject, NULL, m, k, now_ms); /* a duplicate: ignored */
    struct geo_member_view v;
    cr_assert_eq(fstats(b.nodes[0]).bad_messages, 0);
    cr_assert_eq(fstats(b.nodes[0]).deltas_in, 2);
    cr_assert_eq(geo_get(b.nodes[0]->geo, "drivers", 7, "q", 1, &v), RT_OK);
    cr_assert_eq(v.user_len, 0);
    cr_assert_eq(v.version, 2);
    cr_assert_eq(fstats(b.nodes[0]).remote_members, 1);
    cr_assert_eq(fstats(b.nodes[0]).bad_messages, 0);
    bus_free(&b);
}

/*
 * A delta whose second entry is malformed is refused whole: the codec reads
 * a message entirely before the fleet applies any of it, so a half-applied
 * batch cannot happen.
 */
Test(fleet, a_message_with_one_bad_entry_applies_none)
{
    struct tbus b;
    bus_init(&b, 12);
    char subject[SUBJ_CAP];
    follow_berlin(&b, subject);
    uint8_t m[160];
    size_t k = mp_delta_head(m, 2);
    k += mp_bare_set(m + k);
    m[k++] = 0x82; /* {"v":2,"c":"r"}: no "o", neither a set nor a clear */
    k += mp_str(m + k, "v");
    m[k++] = 0x02;
    k += mp_str(m + k, "c");
    k += mp_str(m + k, "r");
    geo_fleet_receive(b.nodes[0]->fl, subject, NULL, m, k, now_ms);
    cr_assert_eq(fstats(b.nodes[0]).bad_messages, 1);
    cr_assert_eq(fstats(b.nodes[0]).deltas_in, 0);
    cr_assert_eq(fstats(b.nodes[0]).remote_members, 0);
    struct geo_member_view v;
    cr_assert_eq(geo_get(b.nodes[0]->geo, "drivers", 7, "q", 1, &v), RT_NOT_FOUND);
    bus_free(&b);
}

/*
 * Three nodes, random sets / moves / clears / disconnects, watches and near
 * queries on random circles, messages interleaved at random across
 * publishers and, in one variant, some lost on their way to one node (its
 * bus generation moves, as a slow consumer's would: it must resync itself). Once settled, every
 * node's near and every watch's event-built member set equal the truth.
 */
/* A few km around Berlin, or astride the antimeridian: many members per circle. */
static void dense_point(struct tg_rng *r, double *lat, double *lon)
{
    if (tg_below(r, 4)) {
        *lat = 52.52 + tg_range(r, -0.03, 0.03);
        *lon = 13.405 + tg_range(r, -0.05, 0.05);
    } else {
        *lat = 65.0 + tg_range(r, -0.03, 0.03);
        *lon = 179.97 + tg_range(r, 0.0, 0.06);
        if (*lon > 180.0)
            *lon -= 360.0;
    }
}

static void random_fleet(uint64_t seed, unsigned drop_pct)
{
    struct tbus b;
    bus_init(&b, seed);
    b.m.drop_port = (int)(seed % 3);
    struct tg_rng r = {seed * 31 + 7};
    for (int i = 0; i < 3; i++)
        node_start(&b, i);
    settle(&b, 400, 1);
    b.m.drop_pct = drop_pct;
    for (int step = 0; step < 3000; step++) {
        struct tnode *n = b.nodes[tg_below(&r, 3)];
        unsigned op = (unsigned)tg_below(&r, 100);
        char client[32];
        snprintf(client, sizeof(client), "n%d-m%zu", n->idx, tg_below(&r, 60));
        double lat, lon;
        dense_point(&r, &lat, &lon);
        if (op < 45) {
            struct tmember *m = member_at(n, client);
            if (m->present && tg_below(&r, 2)) {
                lat = m->lat;
                lon = m->lon;
                tg_nudge(&r, 800, &lat, &lon);
            }
            set(n, client, lat, lon, tg_below(&r, 3) ? NULL : "{\"k\":1}");
        } else if (op < 52)
            clear(n, client);
        else if (op < 56)
            disconnect(n, client);
        else if (op < 58 && n->nw < MAXW)
            watch(n, lat, lon, tg_range(&r, 100, 3000));
        else if (op < 62) {
            uint64_t t;
            want(n, lat, lon, tg_range(&r, 100, 3000), false, &t);
        } else if (op < 75)
            geo_fleet_flush(n->fl);
        else if (op < 95) {
            for (int k = (int)tg_below(&r, 8); k >= 0; k--)
                membus_deliver_one(&b.m, (int)tg_below(&r, MAXN));
        } else {
            now_ms += tg_below(&r, 400);
            tick_all(&b);
        }
        for (int i = 0; i < 3; i++)
            arm_ready_watches(b.nodes[i]);
    }
    /* A last change to every member, still lossy: what is lost now only a resync repairs. */
    for (int i = 0; i < 3; i++) {
        struct tnode *n = b.nodes[i];
        for (size_t k = 0; k < n->nm; k++) {
            if (tg_below(&r, 4) == 0) {
                if (n->m[k].present)
                    clear(n, n->m[k].client);
            } else {
                double lat, lon;
                dense_point(&r, &lat, &lon);
                set(n, n->m[k].client, lat, lon, NULL);
            }
        }
    }
    flush_all(&b);
    membus_pump(&b.m);
    b.m.drop_pct = 0;
    size_t inside_total = 0;
    settle(&b, 600, 8); /* resyncs (1 s apart at most) and snapshot deadlines run out */
    for (int i = 0; i < 3; i++) {
        struct tnode *n = b.nodes[i];
        arm_ready_watches(n);
        for (size_t k = 0; k < n->nw; k++) {
            cr_assert(n->w[k].ready, "watch %zu of node %d never became ready", k, i);
            check_near(&b, n, n->w[k].lat, n->w[k].lon, n->w[k].radius);
            check_watch(&b, &n->w[k]);
            inside_total += n->w[k].n_inside;
        }
    }
    if (drop_pct)
        cr_assert_gt(b.m.dropped, 0);
    cr_log_info("seed %lu: %zu members inside watches at the end, %lu delivered, %lu lost",
                (unsigned long)seed, inside_total, (unsigned long)b.m.delivered,
                (unsigned long)b.m.dropped);
    cr_assert_gt(inside_total, 50, "the watches must see enough to be a test");
    bus_free(&b);
}

Test(fleet, random_operations_converge_without_loss)
{
    for (uint64_t seed = 1; seed <= 4; seed++)
        random_fleet(seed, 0);
}

Test(fleet, random_operations_converge_after_lost_messages)
{
    for (uint64_t seed = 11; seed <= 14; seed++)
        random_fleet(seed, 10);
}

/* Areas far apart (0.5 degree steps): each a cell of its own. */
static double area_lat(int i)
{
    return -60.0 + 0.5 * (i % 240);
}

static double area_lon(int i)
{
    return -170.0 + 0.5 * (i / 240) + 0.00011;
}

Test(fleet, one_owner_uses_its_share_not_the_nodes)
{
    struct tbus b;
    bus_init(&b, 21);
    max_follows = 12;
    max_owner = 4;
    node_start(&b, 0);
    node_start(&b, 1);
    settle(&b, 400, 1);
    struct tnode *n = b.nodes[1];
    uint64_t t;
    int area = 0;
    rt_status st = RT_OK;
    for (; area < 20 && st == RT_OK; area++) {
        st = want_by(n, 1, area_lat(area), area_lon(area), false, &t);
        cr_assert_leq(geo_fleet_owner_follows(n->fl, 1), 4);
    }
    cr_assert_eq(st, RT_AGAIN, "the sprayer is refused past its share");
    cr_assert_eq(geo_fleet_owner_follows(n->fl, 1), 4);
    cr_assert_eq(fstats(n).follows, 4);
    cr_assert_eq(fstats(n).refused_share, 1);
    settle(&b, 10, 1);
    cr_assert_eq(want_by(n, 1, area_lat(0), area_lon(0), false, &t), RT_OK,
                 "cells already followed are never refused");
    cr_assert_eq(want_by(n, 2, area_lat(100), area_lon(100), false, &t), RT_OK,
                 "another owner still gets new cells");
    cr_assert_eq(geo_fleet_owner_follows(n->fl, 2), 1);
    cr_assert_eq(fstats(n).owners, 2);

    /* The sprayer goes: its cells linger for the node cap only. */
    geo_fleet_forget(n->fl, 1);
    geo_fleet_forget(n->fl, 1);
    cr_assert_eq(geo_fleet_owner_follows(n->fl, 1), 0);
    cr_assert_eq(fstats(n).owners, 1);
    cr_assert_eq(fstats(n).follows, 5);

    /* Many owners together reach the node cap: 503 for whoever comes then. */
    st = RT_OK;
    uint64_t owner = 3;
    for (area = 200; area < 240 && st == RT_OK; area++)
        st = want_by(n, owner++, area_lat(area), area_lon(area), false, &t);
    cr_assert_eq(st, RT_LIMIT);
    cr_assert_eq(fstats(n).follows, 12);
    cr_assert_eq(fstats(n).refused_limit, 1);
    cr_assert_eq(geo_fleet_owner_follows(n->fl, owner - 1), 0, "a refused want charges nothing");

    /* Past the linger time everything lapses, the forgotten owner with its cells. */
    settle(&b, 6000, 1);
    cr_assert_eq(fstats(n).follows, 0);
    cr_assert_eq(fstats(n).owners, 0);
    cr_assert_eq(want_by(n, 1, area_lat(1), area_lon(1), false, &t), RT_OK);
    max_follows = max_owner = 0;
    bus_free(&b);
}

Test(fleet, a_watch_takes_over_the_charge_of_the_cells_it_holds)
{
    struct tbus b;
    bus_init(&b, 22);
    max_owner = 2;
    node_start(&b, 0);
    node_start(&b, 1);
    settle(&b, 400, 1);
    struct tnode *n = b.nodes[1];
    uint64_t t, tw;
    cr_assert_eq(want_by(n, 1, area_lat(0), area_lon(0), false, &t), RT_OK);
    cr_assert_eq(want_by(n, 1, area_lat(1), area_lon(1), false, &t), RT_OK);
    cr_assert_eq(want_by(n, 1, area_lat(2), area_lon(2), false, &t), RT_AGAIN);
    settle(&b, 10, 1);
    /* Owner 2 watches owner 1's first area: the charge is its own now. */
    cr_assert_eq(want_by(n, 2, area_lat(0), area_lon(0), true, &tw), RT_OK);
    cr_assert_eq(geo_fleet_owner_follows(n->fl, 1), 1);
    cr_assert_eq(geo_fleet_owner_follows(n->fl, 2), 1);
    cr_assert_eq(want_by(n, 1, area_lat(2), area_lon(2), false, &t), RT_OK);
    /* Held cells do not lapse; they count against the watcher until they do. */
    settle(&b, 6000, 1);
    cr_assert_eq(fstats(n).follows, 1);
    cr_assert_eq(geo_fleet_owner_follows(n->fl, 1), 0);
    cr_assert_eq(geo_fleet_owner_follows(n->fl, 2), 1);
    uint64_t tw2;
    cr_assert_eq(want_by(n, 2, area_lat(3), area_lon(3), true, &tw2), RT_OK);
    cr_assert_eq(want_by(n, 2, area_lat(4), area_lon(4), true, &t), RT_AGAIN,
                 "watches use the share too");
    cr_assert_eq(t, 0);
    geo_fleet_release(n->fl, tw);
    geo_fleet_release(n->fl, tw2);
    cr_assert_eq(geo_fleet_owner_follows(n->fl, 2), 2, "released cells linger, charged");
    settle(&b, 6000, 1);
    cr_assert_eq(geo_fleet_owner_follows(n->fl, 2), 0);
    cr_assert_eq(fstats(n).owners, 0);
    max_owner = 0;
    bus_free(&b);
}
