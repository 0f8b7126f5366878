/*
 * limits.c: per-user limits across the fleet (users.h). A user record holds
 * the user's connections on every node, sorted in the limit's order (accept
 * time, then client id), and this node's replica of the user's publish
 * bucket. Local changes are reported, batched, on one subject: a user's
 * complete list of connections here, and the publishes taken here since the
 * last report, which every other replica then takes too (into debt if it
 * must). A full state (all of this node's users) goes out when a node says
 * hello, when this node's publishes failed, and every resync_ms; the others
 * then drop what of this node it did not name. Loop thread.
 */
#include "users_int.h"

#include <stdlib.h>
#include <string.h>

/* A replica's debt stops at this many bursts: a report cannot lock a user out for long. */
#define DEBT_BURSTS 64u

struct users_user *users__user_find(const struct users *u, const char *name, size_t len)
{
    uint64_t h = rt_hash_bytes(name, len);
    for (struct rt_hnode *n = rt_htab_chain(&u->users, h); n; n = n->next) {
        struct users_user *usr = RT_CONTAINER(n, struct users_user, h);
        if (n->hash == h && usr->name_len == len && memcmp(usr->name, name, len) == 0)
            return usr;
    }
    return NULL;
}

/* The user's record, made if needed: for a local connection always, for a remote user while
 * fewer than max_users are known. */
static struct users_user *user_get(struct users *u, const char *name, size_t len, bool local)
{
    struct users_user *usr = users__user_find(u, name, len);
    if (usr)
        return usr;
    if (!local && rt_htab_count(&u->users) >= u->max_users) {
        u->st.users_untracked++;
        return NULL;
    }
    if (rt_htab_reserve(&u->users) != RT_OK || !(usr = calloc(1, sizeof(*usr) + len + 1)))
        return NULL;
    memcpy(usr->name, name, len);
    usr->name_len = len;
    rt_bucket_init(&usr->bucket, &u->pub, u->now);
    usr->h.hash = rt_hash_bytes(name, len);
    rt_htab_insert(&u->users, &usr->h);
    return usr;
}

static void user_mark_dirty(struct users *u, struct users_user *usr)
{
    if (usr->dirty || usr->anonymous || !u->has_bus)
        return;
    usr->dirty = true;
    usr->dirty_next = NULL;
    if (u->dirty_tail)
        u->dirty_tail->dirty_next = usr;
    else
        u->dirty_head = usr;
    u->dirty_tail = usr;
}

static void user_free(struct users *u, struct users_user *usr)
{
    rt_htab_remove(&u->users, &usr->h);
    free(usr->conns);
    free(usr);
}

/* ------------------------------------------------------------------------ */
/* Connections, in the limit's order                                          */

static int conn_cmp(const struct conn_entry *a, uint64_t ts, const char *client, size_t len)
{
    if (a->ts != ts)
        return a->ts < ts ? -1 : 1;
    size_t n = a->client_len < len ? a->client_len : len;
    int c = memcmp(a->client, client, n);
    if (c)
        return c;
    return a->client_len == len ? 0 : a->client_len < len ? -1 : 1;
}

static bool conns_insert(struct users_user *usr, uint64_t node, uint64_t ts, const char *client,
                         size_t len, uint64_t conn, uint32_t epoch)
{
    if (!rt_grow((void **)&usr->conns, &usr->cap_conns, usr->n_conns + 1, sizeof(*usr->conns)))
        return false;
    uint32_t at = usr->n_conns;
    while (at > 0 && conn_cmp(&usr->conns[at - 1], ts, client, len) > 0)
        at--;
    memmove(&usr->conns[at + 1], &usr->conns[at], (usr->n_conns - at) * sizeof(*usr->conns));
    struct conn_entry *e = &usr->conns[at];
    memset(e, 0, sizeof(*e));
    e->node = node;
    e->ts = ts;
    e->conn = conn;
    e->epoch = epoch;
    e->client_len = (uint8_t)len;
    memcpy(e->client, client, len);
    usr->n_conns++;
    return true;
}

static void conns_remove_at(struct users_user *usr, uint32_t i)
{
    memmove(&usr->conns[i], &usr->conns[i + 1], (usr->n_conns - i - 1) * sizeof(*usr->conns));
    usr->n_conns--;
}

/*
 * More connections than the limit (two nodes took the last places at once,
 * or a node came back from a partition): every node sees the same ranking,
 * and each closes its own connections beyond the limit.
 */
static void evict_beyond_limit(struct users *u, struct users_user *usr)
{
    if (!u->max_conns || usr->anonymous)
        return;
    for (uint32_t i = u->max_conns; i < usr->n_conns; i++) {
        struct conn_entry *e = &usr->conns[i];
        if (e->node != USERS_LOCAL || e->evicted)
            continue;
        e->evicted = true;
        u->st.conns_evicted++;
        if (u->on_evict)
            u->on_evict(u->arg, e->conn);
    }
}

/* Forgets node's connections of usr; returns how many. */
static uint32_t drop_node_conns(struct users *u, struct users_user *usr, uint64_t node,
                                bool stale_only, uint32_t epoch)
{
    uint32_t n = 0;
    for (uint32_t i = usr->n_conns; i-- > 0;) {
        struct conn_entry *e = &usr->conns[i];
        if (e->node == node && (!stale_only || e->epoch != epoch)) {
            conns_remove_at(usr, i);
            n++;
        }
    }
    u->remote_conns -= n < u->remote_conns ? n : u->remote_conns;
    return n;
}

/* When a silent node holds some of the user's places: the time until it may be dropped. */
static uint32_t retry_after(const struct users *u, const struct users_user *usr)
{
    uint64_t best = 0;
    for (uint32_t i = 0; i < usr->n_conns; i++) {
        const struct users_node *nd = NULL;
        for (nd = u->node_list; nd && nd->token != usr->conns[i].node; nd = nd->next)
            ;
        uint64_t silent = nd ? u->now - nd->last_seen : 0;
        if (nd && silent > 2 * (uint64_t)u->hb_ms && silent < u->ttl_ms &&
            (!best || u->ttl_ms - silent < best))
            best = u->ttl_ms - silent;
    }
    return best ? (uint32_t)best + 100 : USERS_CONN_RETRY_MS;
}

struct users_conn *users__conn_find(const struct users *u, uint64_t conn)
{
    uint64_t h = rt_hash_u64(conn);
    for (struct rt_hnode *n = rt_htab_chain(&u->conns, h); n; n = n->next) {
        struct users_conn *c = RT_CONTAINER(n, struct users_conn, h);
        if (c->conn == conn)
            return c;
    }
    return NULL;
}

rt_status users_conn_open(struct users *u, const struct users_conn_in *in, uint64_t now_ms,
                          uint32_t *retry_after_ms)
{
    if (now_ms > u->now)
        u->now = now_ms;
    *retry_after_ms = 0;
    if (!in->user || !in->user_len || in->user_len > USERS_USER_MAX || !in->client ||
        !users_wire_client_ok(in->client, in->client_len) || in->info_len > USERS_INFO_MAX)
        return RT_INVAL;
    if (users__conn_find(u, in->conn))
        return RT_CONFLICT;
    struct users_user *usr = user_get(u, in->user, in->user_len, true);
    if (!usr)
        return RT_NOMEM;
    usr->anonymous = in->anonymous;
    if (u->max_conns && !in->anonymous && usr->n_conns >= u->max_conns) {
        u->st.conns_refused++;
        *retry_after_ms = retry_after(u, usr);
        return RT_LIMIT;
    }
    /* The list is kept only for the limit: a user with no limit may have thousands of
     * connections here (one token for a whole load test, say), each an O(n) insert. */
    bool listed = u->max_conns && !in->anonymous;
    struct users_conn *c = calloc(1, sizeof(*c));
    if (!c || (in->info_len && !(c->info = malloc(in->info_len))) ||
        rt_htab_reserve(&u->conns) != RT_OK ||
        (listed &&
         !conns_insert(usr, USERS_LOCAL, in->wall_ms, in->client, in->client_len, in->conn, 0))) {
        if (c)
            free(c->info);
        free(c);
        return RT_NOMEM;
    }
    if (in->info_len)
        memcpy(c->info, in->info, in->info_len);
    c->info_len = in->info_len;
    c->conn = in->conn;
    c->user = usr;
    c->h.hash = rt_hash_u64(in->conn);
    rt_htab_insert(&u->conns, &c->h);
    usr->local_conns++;
    if (listed) {
        usr->conns_changed = true;
        user_mark_dirty(u, usr);
    }
    return RT_OK;
}

void users_conn_close(struct users *u, uint64_t conn)
{
    struct users_conn *c = users__conn_find(u, conn);
    if (!c)
        return;
    while (c->n_chans) {
        struct users_chan *ch = c->chans[c->n_chans - 1];
        users_presence_leave(u, conn, ch->name, ch->name_len);
    }
    struct users_user *usr = c->user;
    for (uint32_t i = 0; i < usr->n_conns; i++)
        if (usr->conns[i].node == USERS_LOCAL && usr->conns[i].conn == conn) {
            conns_remove_at(usr, i);
            break;
        }
    usr->local_conns--;
    if (u->max_conns && !usr->anonymous) {
        usr->conns_changed = true;
        user_mark_dirty(u, usr);
    }
    rt_htab_remove(&u->conns, &c->h);
    free(c->chans);
    free(c->info);
    free(c);
}

bool users_pub_take(struct users *u, uint64_t conn, uint64_t now_ms, uint32_t *retry_after_ms)
{
    if (!u->pub.rate)
        return true;
    struct users_conn *c = users__conn_find(u, conn);
    if (!c)
        return true;
    struct users_user *usr = c->user;
    if (!rt_bucket_take(&usr->bucket, &u->pub, now_ms, retry_after_ms)) {
        u->st.pubs_refused++;
        return false;
    }
    if (!usr->anonymous && u->has_bus) {
        usr->pubs_pending++;
        user_mark_dirty(u, usr);
    }
    return true;
}

/* ------------------------------------------------------------------------ */
/* Other nodes' reports                                                        */

/* Replaces node's connections of usr with the entry's list. */
static void replace_node_conns(struct users *u, struct users_user *usr, struct users_node *nd,
                               const struct users_wire_msg *m, const struct users_wire_entry *e)
{
    drop_node_conns(u, usr, nd->token, false, 0);
    struct users_wire_cursor c = {0};
    struct users_wire_conn wc;
    while (users_wire_next_conn(m, e, &c, &wc))
        if (conns_insert(usr, nd->token, wc.ts, wc.client, wc.client_len, 0, nd->full_epoch))
            u->remote_conns++;
    evict_beyond_limit(u, usr);
}

struct drop_ctx {
    struct users *u;
    uint64_t node;
    bool stale_only;
    uint32_t epoch;
};

static void drop_cb(struct rt_hnode *n, void *arg)
{
    struct drop_ctx *d = arg;
    drop_node_conns(d->u, RT_CONTAINER(n, struct users_user, h), d->node, d->stale_only, d->epoch);
}

/* A full state of nd ended: what of it the state did not name is gone. */
static void full_end(struct users *u, struct users_node *nd)
{
    struct drop_ctx d = {u, nd->token, true, nd->full_epoch};
    rt_htab_each(&u->users, drop_cb, &d);
}

void users__on_conns(struct users *u, const struct users_wire_msg *m)
{
    bool created;
    struct users_node *nd = users__heard_from(u, m, &created);
    if (!nd)
        return;
    if (m->full_start)
        nd->full_epoch++;
    struct users_wire_cursor c = {0};
    struct users_wire_entry e;
    uint64_t floor = (uint64_t)u->pub.burst * DEBT_BURSTS + u->pub.rate;
    while (users_wire_next_entry(m, &c, &e)) {
        struct users_user *usr = users__user_find(u, e.user, e.user_len);
        bool stored = (e.has_conns && e.n_conns) || (e.pubs && u->pub.rate);
        if (!usr && stored)
            usr = user_get(u, e.user, e.user_len, false);
        if (!usr || usr->anonymous)
            continue;
        if (e.has_conns)
            replace_node_conns(u, usr, nd, m, &e);
        if (e.pubs)
            rt_bucket_charge(&usr->bucket, &u->pub, u->now, e.pubs, floor);
    }
    if (m->full_end)
        full_end(u, nd);
}

void users__limits_drop_node(struct users *u, uint64_t token)
{
    struct drop_ctx d = {u, token, false, 0};
    rt_htab_each(&u->users, drop_cb, &d);
}

/* ------------------------------------------------------------------------ */
/* This node's reports                                                         */

struct report {
    struct users *u;
    struct users_wire_writer w;
    bool full, started;
    struct users_wire_conn *scratch;
    uint32_t cap_scratch;
};

static void report_end(struct report *r, bool last)
{
    if (!r->started)
        return;
    r->started = false;
    if (users_wire_end(&r->w, last) == RT_OK)
        users__publish(r->u, USERS_WIRE_SUBJ_CONNS, NULL, &r->u->out);
    else
        r->u->st.publish_failures++;
}

/* One user into the report (conns: its list here; pubs: what to charge the others). */
static void report_put(struct report *r, struct users_user *usr, bool conns, uint64_t pubs)
{
    struct users *u = r->u;
    if (r->started && (r->w.entries >= USERS_CHUNK_ENTRIES || u->out.len >= USERS_CHUNK_BYTES))
        report_end(r, false);
    if (!r->started) {
        users_wire_conns_begin(&r->w, &u->out, u->node, u->node_len, r->full);
        r->full = false; /* only the first chunk starts the full state */
        r->started = true;
    }
    uint32_t n = 0;
    if (conns &&
        rt_grow((void **)&r->scratch, &r->cap_scratch, usr->n_conns + 1, sizeof(*r->scratch)))
        for (uint32_t i = 0; i < usr->n_conns; i++)
            if (usr->conns[i].node == USERS_LOCAL)
                r->scratch[n++] = (struct users_wire_conn){usr->conns[i].ts, usr->conns[i].client,
                                                           usr->conns[i].client_len};
    users_wire_put_user(&r->w, usr->name, usr->name_len, conns, r->scratch, n, pubs);
}

static void full_cb(struct rt_hnode *n, void *arg)
{
    struct report *r = arg;
    struct users_user *usr = RT_CONTAINER(n, struct users_user, h);
    if (usr->local_conns && !usr->anonymous)
        report_put(r, usr, true, 0);
}

void users__flush_limits(struct users *u, bool full)
{
    struct report r = {.u = u};
    while (u->dirty_head) {
        struct users_user *usr = u->dirty_head;
        u->dirty_head = usr->dirty_next;
        usr->dirty = false;
        bool conns = usr->conns_changed && u->max_conns;
        uint64_t pubs = usr->pubs_pending;
        usr->conns_changed = false;
        usr->pubs_pending = 0;
        if (conns || pubs)
            report_put(&r, usr, conns, pubs);
    }
    u->dirty_tail = NULL;
    report_end(&r, false);
    if (full) {
        u->st.full_states++;
        r.full = true;
        rt_htab_each(&u->users, full_cb, &r);
        if (r.full) { /* nobody here: an empty full state still clears the others' view */
            users_wire_conns_begin(&r.w, &u->out, u->node, u->node_len, true);
            r.started = true;
        }
        report_end(&r, true);
    }
    free(r.scratch);
}

/* ------------------------------------------------------------------------ */
/* Forgetting                                                                  */

static bool bucket_full(const struct users *u, const struct users_user *usr)
{
    if (!u->pub.rate)
        return true;
    int64_t cap = (int64_t)u->pub.burst * 1000;
    uint64_t elapsed = u->now > usr->bucket.last_ms ? u->now - usr->bucket.last_ms : 0;
    return usr->bucket.milli >= cap || (int64_t)(elapsed * u->pub.rate) >= cap - usr->bucket.milli;
}

static void gc_cb(struct rt_hnode *n, void *arg)
{
    struct users *u = arg;
    struct users_user *usr = RT_CONTAINER(n, struct users_user, h);
    if (!usr->local_conns && !usr->n_conns && !usr->dirty && bucket_full(u, usr))
        user_free(u, usr);
}

void users__gc_users(struct users *u)
{
    rt_htab_each(&u->users, gc_cb, u);
}

static void free_user_cb(struct rt_hnode *n, void *arg)
{
    (void)arg;
    struct users_user *usr = RT_CONTAINER(n, struct users_user, h);
    free(usr->conns);
    free(usr);
}

static void free_conn_cb(struct rt_hnode *n, void *arg)
{
    (void)arg;
    struct users_conn *c = RT_CONTAINER(n, struct users_conn, h);
    free(c->chans);
    free(c->info);
    free(c);
}

void users__free_users(struct users *u)
{
    rt_htab_each(&u->conns, free_conn_cb, NULL);
    rt_htab_free(&u->conns);
    rt_htab_each(&u->users, free_user_cb, NULL);
    rt_htab_free(&u->users);
    u->dirty_head = u->dirty_tail = NULL;
}
