/*
 * Users across the fleet (users/): several nodes joined by an in-memory
 * bus with NATS's subject matching and per-publisher ordering, where the
 * tests choose the interleaving, lose messages, and kill nodes. Every
 * watching connection is a self-checking client: it rebuilds the channel's
 * members from its reply and the events after it, refusing a join of a
 * member it has or a leave of one it has not, and is compared with the
 * truth at the end.
 */
#include "users.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAXN    5
#define MAXSUBS 4096
#define MAXC    64 /* connections per node */
#define MAXU    64 /* members a view holds */
#define SUBJ    192

struct tnode;

struct tsub {
    struct tnode *node;
    char subject[SUBJ];
    bool live;
};

struct tmsg {
    char subject[SUBJ];
    char reply[SUBJ];
    uint8_t *data;
    size_t len;
};

struct tqueue {
    struct tmsg *v;
    size_t head, n, cap;
};

struct tbus {
    struct tnode *nodes[MAXN];
    struct tqueue q[MAXN]; /* per publisher: NATS keeps a publisher's order */
    struct tsub *subs[MAXSUBS];
    size_t nsubs;
    uint64_t rng;
    unsigned drop_pct; /* of the messages to drop_node: lost, and its generation moves */
    int drop_node;
};

/* What one watching connection believes the channel holds. */
struct tview {
    bool counting;
    uint64_t count;
    size_t n;
    char members[MAXU][40];
};

struct tconn {
    uint64_t id;
    char user[40];
    char client[24];
    bool open, evicted, in_chan;
    char chan[32];
    struct tview view;
};

struct tnode {
    struct tbus *bus;
    int idx;
    bool up;
    uint64_t gen;
    char id[24];
    struct users *u;
    struct tconn c[MAXC];
    size_t nc;
    uint64_t ready[64];
    bool ready_partial[64];
    size_t n_ready;
    uint64_t joins, leaves, counts, syncs;
};

static uint64_t now_ms = 1000000;
static uint64_t wall_ms = 1764000000000ull;
static unsigned restarts;
static uint32_t cfg_rate, cfg_burst, cfg_max_conns, cfg_max_members;

static uint64_t rnd(struct tbus *b)
{
    b->rng = b->rng * 6364136223846793005ull + 1442695040888963407ull;
    return b->rng >> 33;
}

/* ---------------------------------------------------------------------- */
/* The bus                                                                  */

static bool match(const char *pattern, const char *subject)
{
    size_t pl = strlen(pattern);
    if (pl >= 2 && strcmp(pattern + pl - 2, ".>") == 0)
        return strncmp(pattern, subject, pl - 1) == 0;
    return strcmp(pattern, subject) == 0;
}

static rt_status bus_publish(void *ctx, const char *subject, const char *reply, const uint8_t *data,
                             size_t len)
{
    struct tnode *n = ctx;
    if (!n->up)
        return RT_OK;
    struct tqueue *q = &n->bus->q[n->idx];
    if (q->n == q->cap) {
        size_t ncap = q->cap ? q->cap * 2 : 64;
        struct tmsg *v = calloc(ncap, sizeof(*v));
        cr_assert_not_null(v);
        for (size_t i = 0; i < q->n; i++)
            v[i] = q->v[(q->head + i) % q->cap];
        free(q->v);
        q->v = v;
        q->head = 0;
        q->cap = ncap;
    }
    struct tmsg *m = &q->v[(q->head + q->n++) % q->cap];
    snprintf(m->subject, sizeof(m->subject), "%s", subject);
    snprintf(m->reply, sizeof(m->reply), "%s", reply ? reply : "");
    m->data = malloc(len);
    cr_assert_not_null(m->data);
    memcpy(m->data, data, len);
    m->len = len;
    return RT_OK;
}

static void *bus_subscribe(void *ctx, const char *subject)
{
    struct tnode *n = ctx;
    cr_assert_lt(n->bus->nsubs, MAXSUBS);
    struct tsub *s = calloc(1, sizeof(*s));
    s->node = n;
    s->live = true;
    snprintf(s->subject, sizeof(s->subject), "%s", subject);
    n->bus->subs[n->bus->nsubs++] = s;
    return s;
}

static void bus_unsubscribe(void *ctx, void *handle)
{
    (void)ctx;
    ((struct tsub *)handle)->live = false;
}

static bool deliver_one(struct tbus *b, int i)
{
    struct tqueue *q = &b->q[i];
    if (!q->n)
        return false;
    struct tmsg m = q->v[q->head];
    q->head = (q->head + 1) % q->cap;
    q->n--;
    for (size_t k = 0; k < b->nsubs; k++) {
        struct tsub *s = b->subs[k];
        if (!s->live || !s->node->up || !s->node->u || !match(s->subject, m.subject))
            continue;
        if (b->drop_pct && s->node->idx == b->drop_node && rnd(b) % 100 < b->drop_pct) {
            s->node->gen++; /* the receiver learns it lost something (slow consumer) */
            continue;
        }
        users_receive(s->node->u, m.subject, m.reply[0] ? m.reply : NULL, m.data, m.len, now_ms);
    }
    free(m.data);
    return true;
}

static size_t pending(const struct tbus *b)
{
    size_t n = 0;
    for (int i = 0; i < MAXN; i++)
        n += b->q[i].n;
    return n;
}

/* Delivers everything, publishers interleaved at random. */
static void pump(struct tbus *b)
{
    for (int guard = 0; pending(b) && guard < 10000000; guard++)
        deliver_one(b, (int)(rnd(b) % MAXN));
    cr_assert_eq(pending(b), 0);
}

static void flush_all(struct tbus *b)
{
    for (int i = 0; i < MAXN; i++)
        if (b->nodes[i] && b->nodes[i]->u)
            users_flush(b->nodes[i]->u);
}

static void tick_all(struct tbus *b)
{
    for (int i = 0; i < MAXN; i++)
        if (b->nodes[i] && b->nodes[i]->u)
            users_tick(b->nodes[i]->u, now_ms, b->nodes[i]->gen);
}

/* Flushes, delivers and ticks until the fleet is quiet (time moves by step_ms). */
static void settle(struct tbus *b, uint64_t step_ms, int rounds)
{
    for (int r = 0; r < rounds; r++) {
        flush_all(b);
        pump(b);
        now_ms += step_ms;
        wall_ms += step_ms;
        tick_all(b);
        pump(b);
    }
}

/* ---------------------------------------------------------------------- */
/* Nodes and their connections                                              */

static struct tconn *conn_by_id(struct tnode *n, uint64_t id)
{
    for (size_t i = 0; i < n->nc; i++)
        if (n->c[i].id == id)
            return &n->c[i];
    return NULL;
}

static bool view_has(const struct tview *v, const char *user, size_t len)
{
    for (size_t i = 0; i < v->n; i++)
        if (strlen(v->members[i]) == len && !memcmp(v->members[i], user, len))
            return true;
    return false;
}

static void view_add(struct tview *v, const char *user, size_t len)
{
    cr_assert_lt(v->n, MAXU);
    snprintf(v->members[v->n++], sizeof(v->members[0]), "%.*s", (int)len, user);
}

static void view_remove(struct tview *v, const char *user, size_t len)
{
    for (size_t i = 0; i < v->n; i++)
        if (strlen(v->members[i]) == len && !memcmp(v->members[i], user, len)) {
            memcpy(v->members[i], v->members[--v->n], sizeof(v->members[0]));
            return;
        }
    cr_assert_fail("removing a member the view does not have");
}

static void add_member_cb(void *arg, const struct users_member_view *m)
{
    struct tview *v = arg;
    cr_assert_not(view_has(v, m->user, m->user_len), "a member listed twice");
    cr_assert_gt(m->clients, 0);
    view_add(v, m->user, m->user_len);
}

/* Replaces the view with the channel as the node shows it (a reply, or a sync). */
static void view_load(struct tnode *n, struct tconn *c)
{
    struct users_presence_view pv;
    memset(&c->view, 0, sizeof(c->view));
    cr_assert_eq(users_presence_view(n->u, c->chan, strlen(c->chan), &pv, add_member_cb, &c->view),
                 RT_OK);
    c->view.counting = pv.counting;
    c->view.count = pv.count;
    if (!pv.counting)
        cr_assert_eq(c->view.n, pv.count);
}

static void on_event(void *arg, const struct users_event *ev)
{
    struct tnode *n = arg;
    for (size_t i = 0; i < ev->n_watchers; i++) {
        struct tconn *c = conn_by_id(n, ev->watchers[i]);
        cr_assert_not_null(c, "an event for an unknown connection");
        cr_assert(c->in_chan && strlen(c->chan) == ev->channel_len &&
                  !memcmp(c->chan, ev->channel, ev->channel_len));
        struct tview *v = &c->view;
        switch (ev->kind) {
        case USERS_EV_JOIN:
            cr_assert_not(v->counting, "join while counting");
            cr_assert_not(view_has(v, ev->user, ev->user_len), "join of a member it has");
            cr_assert_gt(ev->clients, 0);
            view_add(v, ev->user, ev->user_len);
            cr_assert_eq(v->n, ev->count);
            break;
        case USERS_EV_LEAVE:
            cr_assert_not(v->counting, "leave while counting");
            view_remove(v, ev->user, ev->user_len);
            cr_assert_eq(v->n, ev->count);
            break;
        case USERS_EV_COUNT:
            v->counting = true;
            v->count = ev->count;
            break;
        case USERS_EV_SYNC:
            view_load(n, c);
            cr_assert_not(c->view.counting);
            break;
        }
    }
    n->joins += ev->kind == USERS_EV_JOIN;
    n->leaves += ev->kind == USERS_EV_LEAVE;
    n->counts += ev->kind == USERS_EV_COUNT;
    n->syncs += ev->kind == USERS_EV_SYNC;
}

static void on_ready(void *arg, uint64_t ticket, bool partial)
{
    struct tnode *n = arg;
    cr_assert_lt(n->n_ready, 64);
    n->ready_partial[n->n_ready] = partial;
    n->ready[n->n_ready++] = ticket;
}

static void on_evict(void *arg, uint64_t conn)
{
    struct tnode *n = arg;
    struct tconn *c = conn_by_id(n, conn);
    cr_assert_not_null(c);
    cr_assert(c->open && !c->evicted, "evicted twice");
    c->evicted = true;
}

static struct tnode *node_start(struct tbus *b, int idx)
{
    struct tnode *n = b->nodes[idx];
    if (!n) {
        n = calloc(1, sizeof(*n));
        b->nodes[idx] = n;
    }
    memset(n, 0, sizeof(*n));
    n->bus = b;
    n->idx = idx;
    n->up = true;
    snprintf(n->id, sizeof(n->id), "n%d-%u", idx, restarts++);
    struct users_config cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.node = n->id;
    cfg.bus = (struct users_bus){bus_publish, bus_subscribe, bus_unsubscribe, n};
    cfg.pub_rate = cfg_rate;
    cfg.pub_burst = cfg_burst;
    cfg.max_conns = cfg_max_conns;
    cfg.max_members = cfg_max_members;
    cfg.ttl_ms = 3000;
    cfg.snapshot_wait_ms = 500;
    cfg.linger_ms = 5000;
    cfg.on_event = on_event;
    cfg.on_ready = on_ready;
    cfg.on_evict = on_evict;
    cfg.arg = n;
    cr_assert_eq(users_create(&cfg, now_ms, &n->u), RT_OK);
    return n;
}

/* The process dies: no goodbye, its state is gone. */
static void node_kill(struct tbus *b, int idx)
{
    struct tnode *n = b->nodes[idx];
    n->up = false; /* users_destroy's goodbye is lost on the way */
    users_destroy(n->u);
    n->u = NULL;
    n->nc = 0;
    for (size_t k = 0; k < b->q[idx].n; k++)
        free(b->q[idx].v[(b->q[idx].head + k) % b->q[idx].cap].data);
    b->q[idx].n = 0;
}

static void bus_free(struct tbus *b)
{
    for (int i = 0; i < MAXN; i++) {
        if (b->nodes[i] && b->nodes[i]->u)
            node_kill(b, i);
        free(b->nodes[i]);
        for (size_t k = 0; k < b->q[i].n; k++)
            free(b->q[i].v[(b->q[i].head + k) % b->q[i].cap].data);
        free(b->q[i].v);
    }
    for (size_t k = 0; k < b->nsubs; k++)
        free(b->subs[k]);
}

static uint64_t conn_seq = 1;

/* A connection of user on node n; its status. */
static rt_status open_conn(struct tnode *n, const char *user, struct tconn **out)
{
    cr_assert_lt(n->nc, MAXC);
    struct tconn *c = &n->c[n->nc];
    memset(c, 0, sizeof(*c));
    c->id = conn_seq++;
    snprintf(c->user, sizeof(c->user), "%s", user);
    snprintf(c->client, sizeof(c->client), "c%dx%llu", n->idx, (unsigned long long)c->id);
    static const char info[] = "{\"name\":\"x\"}";
    struct users_conn_in in = {
        .conn = c->id,
        .user = c->user,
        .user_len = strlen(c->user),
        .client = c->client,
        .client_len = strlen(c->client),
        .info = info,
        .info_len = sizeof(info) - 1,
        .anonymous = strncmp(user, "anon-", 5) == 0,
        .wall_ms = wall_ms++,
    };
    uint32_t retry = 0;
    rt_status st = users_conn_open(n->u, &in, now_ms, &retry);
    if (st == RT_OK) {
        c->open = true;
        n->nc++;
        if (out)
            *out = c;
    } else {
        cr_assert_gt(retry, 0);
    }
    return st;
}

static void close_conn(struct tnode *n, struct tconn *c)
{
    users_conn_close(n->u, c->id);
    c->open = c->in_chan = false;
}

/* conn enters channel once its members are known (the wait is pumped); its view is its reply. */
static void enter(struct tbus *b, struct tnode *n, struct tconn *c, const char *chan)
{
    uint64_t ticket = 0;
    bool ready = false;
    cr_assert_eq(users_presence_want(n->u, chan, strlen(chan), now_ms, &ticket, &ready), RT_OK);
    for (int i = 0; !ready && i < 100; i++) {
        settle(b, 10, 1);
        for (size_t k = 0; k < n->n_ready; k++)
            ready = ready || n->ready[k] == ticket;
    }
    cr_assert(ready, "a want never became ready");
    cr_assert_eq(users_presence_enter(n->u, c->id, chan, strlen(chan)), RT_OK);
    snprintf(c->chan, sizeof(c->chan), "%s", chan);
    c->in_chan = true;
    view_load(n, c);
}

static void leave(struct tnode *n, struct tconn *c)
{
    cr_assert_eq(users_presence_leave(n->u, c->id, c->chan, strlen(c->chan)), RT_OK);
    c->in_chan = false;
}

/* The users with a connection in chan on a live node. */
static size_t truth(struct tbus *b, const char *chan, char out[][40])
{
    size_t n = 0;
    for (int i = 0; i < MAXN; i++) {
        struct tnode *nd = b->nodes[i];
        for (size_t k = 0; nd && nd->u && k < nd->nc; k++) {
            struct tconn *c = &nd->c[k];
            if (!c->open || !c->in_chan || strcmp(c->chan, chan) != 0)
                continue;
            bool seen = false;
            for (size_t j = 0; j < n && !seen; j++)
                seen = strcmp(out[j], c->user) == 0;
            if (!seen)
                snprintf(out[n++], 40, "%s", c->user);
        }
    }
    return n;
}

/* Every watcher of chan on every live node believes exactly the truth. */
static void check_views(struct tbus *b, const char *chan)
{
    char t[MAXC * MAXN][40];
    size_t nt = truth(b, chan, t);
    for (int i = 0; i < MAXN; i++) {
        struct tnode *nd = b->nodes[i];
        for (size_t k = 0; nd && nd->u && k < nd->nc; k++) {
            struct tconn *c = &nd->c[k];
            if (!c->open || !c->in_chan || strcmp(c->chan, chan) != 0)
                continue;
            if (c->view.counting) {
                cr_assert_eq(c->view.count, nt, "node %d: count %llu, truth %zu", i,
                             (unsigned long long)c->view.count, nt);
                continue;
            }
            cr_assert_eq(c->view.n, nt, "node %d conn %llu sees %zu members, truth %zu", i,
                         (unsigned long long)c->id, c->view.n, nt);
            for (size_t j = 0; j < nt; j++)
                cr_assert(view_has(&c->view, t[j], strlen(t[j])), "node %d misses %s", i, t[j]);
        }
    }
}

static void reset_cfg(void)
{
    cfg_rate = cfg_burst = cfg_max_conns = cfg_max_members = 0;
}

/* ---------------------------------------------------------------------- */
/* One node, no bus (the memory engine)                                     */

static struct users *single(uint32_t rate, uint32_t burst, uint32_t max_conns)
{
    struct users_config cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.pub_rate = rate;
    cfg.pub_burst = burst;
    cfg.max_conns = max_conns;
    struct users *u;
    cr_assert_eq(users_create(&cfg, now_ms, &u), RT_OK);
    return u;
}

static rt_status single_open(struct users *u, uint64_t id, const char *user, bool anonymous)
{
    char client[24];
    snprintf(client, sizeof(client), "c%llu", (unsigned long long)id);
    struct users_conn_in in = {id,   user, strlen(user), client,   strlen(client),
                               NULL, 0,    anonymous,    wall_ms++};
    uint32_t retry;
    return users_conn_open(u, &in, now_ms, &retry);
}

Test(users_single, the_connection_limit_counts_a_users_connections_and_frees_on_close)
{
    struct users *u = single(0, 0, 3);
    for (uint64_t i = 1; i <= 3; i++)
        cr_assert_eq(single_open(u, i, "alice", false), RT_OK);
    cr_assert_eq(single_open(u, 4, "alice", false), RT_LIMIT);
    cr_assert_eq(single_open(u, 5, "bob", false), RT_OK, "other users are not affected");
    cr_assert_eq(single_open(u, 1, "carol", false), RT_CONFLICT);
    users_conn_close(u, 2);
    cr_assert_eq(single_open(u, 6, "alice", false), RT_OK);
    /* Anonymous users are their connection: never over the limit. */
    for (uint64_t i = 10; i < 20; i++) {
        char name[24];
        snprintf(name, sizeof(name), "anon-c%llu", (unsigned long long)i);
        cr_assert_eq(single_open(u, i, name, true), RT_OK);
    }
    struct users_stats st;
    users_get_stats(u, &st);
    cr_assert_eq(st.conns_refused, 1);
    cr_assert_eq(st.local_conns, 14);
    users_destroy(u);
}

Test(users_single, the_publish_rate_is_per_user_across_its_connections)
{
    struct users *u = single(10, 5, 0);
    cr_assert_eq(single_open(u, 1, "alice", false), RT_OK);
    cr_assert_eq(single_open(u, 2, "alice", false), RT_OK);
    cr_assert_eq(single_open(u, 3, "bob", false), RT_OK);
    uint32_t ok = 0, retry = 0;
    for (int i = 0; i < 20; i++)
        ok += users_pub_take(u, 1 + (uint64_t)(i % 2), now_ms, &retry);
    cr_assert_eq(ok, 5, "the burst is shared by the user's connections");
    cr_assert_eq(retry, 100);
    cr_assert(users_pub_take(u, 3, now_ms, &retry), "bob has his own bucket");
    now_ms += 1000;
    ok = 0;
    for (int i = 0; i < 20; i++)
        ok += users_pub_take(u, 2, now_ms, &retry);
    cr_assert_eq(ok, 5);
    users_destroy(u);
}

Test(users_single, presence_on_one_node_joins_and_leaves_users_not_connections)
{
    struct users *u = single(0, 0, 0);
    cr_assert_eq(single_open(u, 1, "alice", false), RT_OK);
    cr_assert_eq(single_open(u, 2, "alice", false), RT_OK);
    uint64_t ticket;
    bool ready;
    cr_assert_eq(users_presence_want(u, "room", 4, now_ms, &ticket, &ready), RT_OK);
    cr_assert(ready, "one node: no snapshot to wait for");
    cr_assert_eq(users_presence_enter(u, 1, "room", 4), RT_OK);
    cr_assert_eq(users_presence_enter(u, 1, "room", 4), RT_CONFLICT);
    cr_assert_eq(users_presence_enter(u, 2, "room", 4), RT_OK);
    cr_assert_eq(users_presence_enter(u, 99, "room", 4), RT_NOT_FOUND);
    struct users_presence_view v;
    cr_assert_eq(users_presence_view(u, "room", 4, &v, NULL, NULL), RT_OK);
    cr_assert(v.count == 1 && !v.partial && !v.counting);
    users_conn_close(u, 1);
    cr_assert_eq(users_presence_view(u, "room", 4, &v, NULL, NULL), RT_OK);
    cr_assert_eq(v.count, 1, "alice is still there with her other connection");
    cr_assert_eq(users_presence_leave(u, 2, "room", 4), RT_OK);
    cr_assert_eq(users_presence_leave(u, 2, "room", 4), RT_NOT_FOUND);
    cr_assert_eq(users_presence_view(u, "room", 4, &v, NULL, NULL), RT_OK);
    cr_assert_eq(v.count, 0);
    users_destroy(u);
}

Test(users_single, at_the_channel_cap_a_lingering_channel_makes_room_a_watched_one_does_not)
{
    struct users_config cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.max_channels = 2;
    struct users *u;
    cr_assert_eq(users_create(&cfg, now_ms, &u), RT_OK);
    cr_assert_eq(single_open(u, 1, "alice", false), RT_OK);
    cr_assert_eq(users_presence_enter(u, 1, "a", 1), RT_OK);
    cr_assert_eq(users_presence_enter(u, 1, "b", 1), RT_OK);
    uint64_t ticket;
    bool ready;
    cr_assert_eq(users_presence_want(u, "c", 1, now_ms, &ticket, &ready), RT_LIMIT);
    cr_assert_eq(users_presence_leave(u, 1, "a", 1), RT_OK); /* a lingers */
    cr_assert_eq(users_presence_want(u, "c", 1, now_ms, &ticket, &ready), RT_OK);
    cr_assert(ready);
    struct users_presence_view v;
    cr_assert_eq(users_presence_view(u, "a", 1, &v, NULL, NULL), RT_NOT_FOUND, "a made room");
    cr_assert_eq(users_presence_view(u, "b", 1, &v, NULL, NULL), RT_OK);
    users_destroy(u);
}

/* ---------------------------------------------------------------------- */
/* Limits across the fleet                                                  */

/*
 * One user with a connection on each of k nodes publishes as fast as it
 * may for `secs` (one attempt per node per ms), reports flushed every
 * flush_ms and delivered at once. Returns the accepted publishes and
 * checks the bound of users.h on every window.
 */
static uint32_t saturate(struct tbus *b, struct tconn **conns, int k, uint32_t secs,
                         uint32_t flush_ms, uint64_t *times, uint32_t cap)
{
    uint32_t ok = 0, retry;
    for (uint32_t t = 0; t < secs * 1000; t++) {
        for (int i = 0; i < k; i++) {
            struct tnode *n = b->nodes[i];
            if (users_pub_take(n->u, conns[i]->id, now_ms, &retry)) {
                cr_assert_lt(ok, cap);
                times[ok++] = now_ms;
            }
        }
        now_ms++;
        if (t % flush_ms == flush_ms - 1) {
            flush_all(b);
            pump(b);
        }
    }
    return ok;
}

Test(users_fleet, a_users_publishes_hold_to_one_bucket_across_three_nodes)
{
    reset_cfg();
    cfg_rate = 10;
    cfg_burst = 10;
    struct tbus b = {.rng = 1};
    for (int i = 0; i < 3; i++)
        node_start(&b, i);
    settle(&b, 50, 10);
    struct tconn *alice[3], *bob;
    for (int i = 0; i < 3; i++)
        cr_assert_eq(open_conn(b.nodes[i], "alice", &alice[i]), RT_OK);
    cr_assert_eq(open_conn(b.nodes[0], "bob", &bob), RT_OK);
    settle(&b, 50, 4);
    static uint64_t times[4096];
    const uint32_t secs = 5, flush_ms = 20;
    uint32_t ok = saturate(&b, alice, 3, secs, flush_ms, times, 4096);
    /* users.h: at most B + R t + (k - 1)(B + R D) in any window of t. */
    double slack = 2 * (cfg_burst + cfg_rate * flush_ms / 1000.0);
    double bound = cfg_burst + cfg_rate * (double)secs + slack;
    cr_assert_leq(ok, bound, "%u accepted, bound %.1f", ok, bound);
    cr_assert_geq(ok, cfg_rate * secs, "%u accepted: the user got less than its rate", ok);
    for (uint32_t i = 0; i < ok; i++)
        for (uint32_t j = i; j < ok; j++) {
            double window = (double)(times[j] - times[i]) / 1000.0;
            cr_assert_leq(j - i + 1, cfg_burst + cfg_rate * window + slack + 1e-9,
                          "%u publishes in %.3f s", j - i + 1, window);
        }
    /* Bob was never charged for Alice. */
    uint32_t retry, bob_ok = 0;
    for (int i = 0; i < 20; i++)
        bob_ok += users_pub_take(b.nodes[0]->u, bob->id, now_ms, &retry);
    cr_assert_eq(bob_ok, cfg_burst);
    bus_free(&b);
}

Test(users_fleet, without_reports_each_node_would_give_a_whole_bucket)
{
    /* The test above can fail: the same load with the reports lost is over its bound. */
    reset_cfg();
    cfg_rate = 10;
    cfg_burst = 10;
    struct tbus b = {.rng = 2};
    for (int i = 0; i < 3; i++)
        node_start(&b, i);
    settle(&b, 50, 10);
    struct tconn *alice[3];
    for (int i = 0; i < 3; i++)
        cr_assert_eq(open_conn(b.nodes[i], "alice", &alice[i]), RT_OK);
    settle(&b, 50, 4);
    for (int i = 0; i < MAXN; i++)
        if (b.nodes[i])
            b.nodes[i]->up = false; /* their reports are lost */
    uint32_t ok = 0, retry;
    for (uint32_t t = 0; t < 5000; t++, now_ms++)
        for (int i = 0; i < 3; i++)
            ok += users_pub_take(b.nodes[i]->u, alice[i]->id, now_ms, &retry);
    cr_assert_gt(ok, cfg_burst + cfg_rate * 5 + 2 * (cfg_burst + cfg_rate * 0.02));
    bus_free(&b);
}

Test(users_fleet, the_connection_limit_holds_across_nodes_and_races_are_settled)
{
    reset_cfg();
    cfg_max_conns = 3;
    struct tbus b = {.rng = 3};
    for (int i = 0; i < 3; i++)
        node_start(&b, i);
    settle(&b, 50, 10);
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(open_conn(b.nodes[i], "alice", NULL), RT_OK);
        settle(&b, 10, 2);
    }
    for (int i = 0; i < 3; i++)
        cr_assert_eq(open_conn(b.nodes[i], "alice", NULL), RT_LIMIT, "node %d let a 4th in", i);
    cr_assert_eq(open_conn(b.nodes[1], "bob", NULL), RT_OK);
    /* One closes: a place is free on every node. */
    close_conn(b.nodes[0], &b.nodes[0]->c[0]);
    settle(&b, 10, 2);
    cr_assert_eq(open_conn(b.nodes[2], "alice", NULL), RT_OK);
    settle(&b, 10, 2);
    cr_assert_eq(open_conn(b.nodes[0], "alice", NULL), RT_LIMIT);

    /* A race: carol opens 2 on each node before any report travels (6 > 3). */
    for (int i = 0; i < 3; i++)
        for (int k = 0; k < 2; k++)
            cr_assert_eq(open_conn(b.nodes[i], "carol", NULL), RT_OK);
    settle(&b, 10, 3);
    uint32_t open = 0, evicted = 0;
    uint64_t newest_kept = 0, oldest_evicted = UINT64_MAX;
    for (int i = 0; i < 3; i++)
        for (size_t k = 0; k < b.nodes[i]->nc; k++) {
            struct tconn *c = &b.nodes[i]->c[k];
            if (strcmp(c->user, "carol") != 0)
                continue;
            if (c->evicted) {
                evicted++;
                oldest_evicted = c->id < oldest_evicted ? c->id : oldest_evicted;
                close_conn(b.nodes[i], c);
            } else {
                open++;
                newest_kept = c->id > newest_kept ? c->id : newest_kept;
            }
        }
    cr_assert_eq(open, 3, "%u of carol's connections kept", open);
    cr_assert_eq(evicted, 3);
    cr_assert_lt(newest_kept, oldest_evicted, "the newest are the ones closed");
    settle(&b, 10, 3);
    for (int i = 0; i < 3; i++)
        cr_assert_eq(open_conn(b.nodes[i], "carol", NULL), RT_LIMIT);
    bus_free(&b);
}

Test(users_fleet, a_joining_node_learns_the_limit_and_a_dead_nodes_places_free_after_the_ttl)
{
    reset_cfg();
    cfg_max_conns = 2;
    struct tbus b = {.rng = 4};
    node_start(&b, 0);
    node_start(&b, 1);
    settle(&b, 50, 10);
    cr_assert_eq(open_conn(b.nodes[0], "alice", NULL), RT_OK);
    cr_assert_eq(open_conn(b.nodes[1], "alice", NULL), RT_OK);
    settle(&b, 50, 4);
    node_start(&b, 2); /* joins: hello, then everybody's full state */
    settle(&b, 50, 30);
    cr_assert_eq(open_conn(b.nodes[2], "alice", NULL), RT_LIMIT);
    /* Node 1 dies without a goodbye: its connection counts until the ttl (3 s). */
    node_kill(&b, 1);
    settle(&b, 100, 10);
    cr_assert_eq(open_conn(b.nodes[2], "alice", NULL), RT_LIMIT, "dropped before the ttl");
    settle(&b, 100, 25);
    cr_assert_eq(open_conn(b.nodes[2], "alice", NULL), RT_OK);
    /* A node that says goodbye frees its places at once. */
    settle(&b, 50, 2);
    users_destroy(b.nodes[0]->u);
    b.nodes[0]->u = NULL;
    b.nodes[0]->nc = 0;
    pump(&b);
    cr_assert_eq(open_conn(b.nodes[2], "alice", NULL), RT_OK);
    bus_free(&b);
}

Test(users_fleet, lost_reports_are_repaired_by_the_full_state_after_a_hello)
{
    reset_cfg();
    cfg_max_conns = 4;
    struct tbus b = {.rng = 5};
    for (int i = 0; i < 3; i++)
        node_start(&b, i);
    settle(&b, 50, 10);
    b.drop_pct = 100; /* node 2 hears nothing for a while */
    b.drop_node = 2;
    for (int i = 0; i < 2; i++)
        for (int k = 0; k < 2; k++)
            cr_assert_eq(open_conn(b.nodes[i], "alice", NULL), RT_OK);
    settle(&b, 10, 2);
    b.drop_pct = 0;
    settle(&b, 100, 30); /* its generation moved: hello, full states */
    cr_assert_eq(open_conn(b.nodes[2], "alice", NULL), RT_LIMIT);
    bus_free(&b);
}

/* ---------------------------------------------------------------------- */
/* Channel presence across the fleet                                        */

Test(users_presence, joins_and_leaves_reach_every_node_once_per_user)
{
    reset_cfg();
    struct tbus b = {.rng = 6};
    for (int i = 0; i < 3; i++)
        node_start(&b, i);
    settle(&b, 50, 10);
    struct tconn *a0, *a1, *b2, *w2;
    cr_assert_eq(open_conn(b.nodes[0], "alice", &a0), RT_OK);
    cr_assert_eq(open_conn(b.nodes[1], "alice", &a1), RT_OK);
    cr_assert_eq(open_conn(b.nodes[2], "bob", &b2), RT_OK);
    cr_assert_eq(open_conn(b.nodes[2], "walt", &w2), RT_OK);
    enter(&b, b.nodes[2], w2, "room");
    cr_assert_eq(w2->view.n, 1);
    enter(&b, b.nodes[0], a0, "room");
    settle(&b, 10, 3);
    check_views(&b, "room");
    enter(&b, b.nodes[1], a1, "room"); /* alice's second connection: no join */
    settle(&b, 10, 3);
    cr_assert_eq(b.nodes[2]->joins, 1, "one join for alice, on node 2");
    enter(&b, b.nodes[2], b2, "room");
    settle(&b, 10, 3);
    check_views(&b, "room");
    struct users_presence_view v;
    cr_assert_eq(users_presence_view(b.nodes[0]->u, "room", 4, &v, NULL, NULL), RT_OK);
    cr_assert_eq(v.count, 3);
    leave(b.nodes[0], a0); /* alice is still on node 1 */
    settle(&b, 10, 3);
    check_views(&b, "room");
    cr_assert_eq(b.nodes[2]->leaves, 0);
    close_conn(b.nodes[1], a1);
    settle(&b, 10, 3);
    check_views(&b, "room");
    cr_assert_eq(b.nodes[2]->leaves, 1);
    bus_free(&b);
}

Test(users_presence, a_dead_nodes_members_leave_after_the_ttl)
{
    reset_cfg();
    struct tbus b = {.rng = 7};
    for (int i = 0; i < 3; i++)
        node_start(&b, i);
    settle(&b, 50, 10);
    struct tconn *c[3];
    const char *users[] = {"u0", "u1", "u2"};
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(open_conn(b.nodes[i], users[i], &c[i]), RT_OK);
        enter(&b, b.nodes[i], c[i], "room");
        settle(&b, 10, 2);
    }
    check_views(&b, "room");
    node_kill(&b, 1);
    settle(&b, 100, 20); /* 2 s: still there */
    cr_assert_eq(c[0]->view.n, 3);
    settle(&b, 100, 15); /* past the 3 s ttl */
    check_views(&b, "room");
    cr_assert_eq(c[0]->view.n, 2);
    bus_free(&b);
}

Test(users_presence, a_snapshot_without_an_answer_is_partial_and_completes_later)
{
    reset_cfg();
    struct tbus b = {.rng = 8};
    for (int i = 0; i < 2; i++)
        node_start(&b, i);
    settle(&b, 50, 10);
    struct tconn *a, *w;
    cr_assert_eq(open_conn(b.nodes[0], "alice", &a), RT_OK);
    enter(&b, b.nodes[0], a, "room");
    settle(&b, 10, 2);
    b.drop_pct = 100; /* node 0 hears nothing: node 1's ask is not answered */
    b.drop_node = 0;
    cr_assert_eq(open_conn(b.nodes[1], "walt", &w), RT_OK);
    uint64_t ticket;
    bool ready;
    cr_assert_eq(users_presence_want(b.nodes[1]->u, "room", 4, now_ms, &ticket, &ready), RT_OK);
    cr_assert_not(ready);
    settle(&b, 100, 7);
    cr_assert_eq(b.nodes[1]->n_ready, 1);
    cr_assert(b.nodes[1]->ready_partial[0], "a node did not answer: partial");
    cr_assert_eq(users_presence_enter(b.nodes[1]->u, w->id, "room", 4), RT_OK);
    w->in_chan = true;
    snprintf(w->chan, sizeof(w->chan), "room");
    view_load(b.nodes[1], w);
    cr_assert_eq(w->view.n, 1, "only itself yet");
    b.drop_pct = 0;
    settle(&b, 100, 30); /* node 0 lost messages: it resyncs, node 1 gets alice */
    check_views(&b, "room");
    cr_assert_eq(w->view.n, 2);
    bus_free(&b);
}

Test(users_presence, a_node_slow_to_answer_is_asked_again_until_the_channel_is_complete)
{
    reset_cfg();
    struct tbus b = {.rng = 11};
    for (int i = 0; i < 2; i++)
        node_start(&b, i);
    settle(&b, 50, 10);
    struct tconn *a, *w;
    cr_assert_eq(open_conn(b.nodes[0], "alice", &a), RT_OK);
    enter(&b, b.nodes[0], a, "room");
    settle(&b, 10, 2);
    b.nodes[0]->up = false; /* cut off, but back before the ttl: nobody's generation moves */
    cr_assert_eq(open_conn(b.nodes[1], "walt", &w), RT_OK);
    enter(&b, b.nodes[1], w, "room"); /* completes partial after the wait */
    cr_assert_eq(w->view.n, 1);
    b.nodes[0]->up = true;
    settle(&b, 100, 20);
    check_views(&b, "room");
    cr_assert_eq(w->view.n, 2, "alice came as a join once node 0 answered");
    struct users_presence_view v;
    cr_assert_eq(users_presence_view(b.nodes[1]->u, "room", 4, &v, NULL, NULL), RT_OK);
    cr_assert_not(v.partial);
    bus_free(&b);
}

Test(users_presence, past_the_cap_a_channel_counts_and_lists_again_under_half)
{
    reset_cfg();
    cfg_max_members = 4;
    struct tbus b = {.rng = 9};
    for (int i = 0; i < 2; i++)
        node_start(&b, i);
    settle(&b, 50, 10);
    struct tconn *c[8];
    for (int i = 0; i < 8; i++) {
        char name[8];
        snprintf(name, sizeof(name), "u%d", i);
        cr_assert_eq(open_conn(b.nodes[i % 2], name, &c[i]), RT_OK);
        enter(&b, b.nodes[i % 2], c[i], "room");
        settle(&b, 10, 2);
    }
    settle(&b, 500, 4); /* count events come at most once a second */
    check_views(&b, "room");
    cr_assert(c[0]->view.counting && c[0]->view.count == 8);
    cr_assert(c[7]->view.counting, "a reply past the cap says counting");
    for (int i = 7; i >= 2; i--) {
        leave(b.nodes[i % 2], c[i]);
        settle(&b, 10, 2);
    }
    settle(&b, 500, 4);
    cr_assert_not(c[0]->view.counting, "2 members: listed again");
    cr_assert_gt(b.nodes[0]->syncs, 0);
    check_views(&b, "room");
    bus_free(&b);
}

/*
 * Churn: connections of a few users on four nodes enter and leave two
 * channels, close, and one node's traffic is partly lost for a while (it
 * resyncs) while the publishers' messages interleave at random. After each
 * quiet period every watcher's own rebuilt view (reply + events, checked
 * event by event) is the truth.
 */
Test(users_presence, churn_with_reordering_and_loss_keeps_every_view_exact, .timeout = 60)
{
    reset_cfg();
    struct tbus b = {.rng = 10};
    for (int i = 0; i < 4; i++)
        node_start(&b, i);
    settle(&b, 50, 10);
    const char *chans[] = {"room.a", "room.b"};
    for (int round = 0; round < 6; round++) {
        b.drop_pct = round % 2 ? 30 : 0;
        b.drop_node = round % 4;
        for (int op = 0; op < 60; op++) {
            struct tnode *n = b.nodes[rnd(&b) % 4];
            uint64_t r = rnd(&b) % 10;
            if (r < 4 && n->nc < MAXC) {
                char user[8];
                snprintf(user, sizeof(user), "u%llu", (unsigned long long)(rnd(&b) % 12));
                struct tconn *c;
                if (open_conn(n, user, &c) == RT_OK)
                    enter(&b, n, c, chans[rnd(&b) % 2]);
            } else if (n->nc) {
                struct tconn *c = &n->c[rnd(&b) % n->nc];
                if (c->open && c->in_chan && r < 7)
                    leave(n, c);
                else if (c->open)
                    close_conn(n, c);
            }
            if (rnd(&b) % 3 == 0)
                settle(&b, 5, 1);
        }
        b.drop_pct = 0;
        settle(&b, 200, 15); /* resyncs are spaced 1 s apart */
        check_views(&b, chans[0]);
        check_views(&b, chans[1]);
    }
    bus_free(&b);
}
