/*
 * fleet_snapshots.c: snapshots, both ways (fleet_int.h). This node asks
 * every node (or one) for its members in a followed prefix, applies the
 * answers as they come, and when all answered (or the wait is over) drops
 * the remote members the answers did not name: what was left of a lost
 * leave. It answers the others' asks with its own members only, in chunks.
 * Loop thread.
 */
#include "fleet_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------ */
/* The clients an answer named, and the nodes asked                           */

static void free_name_cb(struct rt_hnode *n, void *arg)
{
    (void)arg;
    free(RT_CONTAINER(n, struct snapshot_name, h));
}

void fleet__snapshot_free(struct fleet_snapshot *s)
{
    if (!s)
        return;
    free(s->peers);
    rt_htab_each(&s->named, free_name_cb, NULL);
    rt_htab_free(&s->named);
    free(s);
}

static void names_clear(struct fleet_snapshot *s)
{
    rt_htab_each(&s->named, free_name_cb, NULL);
    rt_htab_free(&s->named);
    rt_htab_init(&s->named);
}

static bool named(const struct fleet_snapshot *s, const char *client, size_t len)
{
    uint64_t h = rt_hash_bytes(client, len);
    for (struct rt_hnode *n = rt_htab_chain(&s->named, h); n; n = n->next) {
        struct snapshot_name *e = RT_CONTAINER(n, struct snapshot_name, h);
        if (n->hash == h && e->len == len && memcmp(e->client, client, len) == 0)
            return true;
    }
    return false;
}

void fleet__snapshot_name(struct fleet_snapshot *s, const char *client, size_t len)
{
    if (named(s, client, len) || rt_htab_reserve(&s->named) != RT_OK)
        return;
    struct snapshot_name *e = malloc(sizeof(*e) + len);
    if (!e)
        return;
    e->len = len;
    memcpy(e->client, client, len);
    e->h.hash = rt_hash_bytes(client, len);
    rt_htab_insert(&s->named, &e->h);
}

static struct snapshot_peer *peer_find(struct fleet_snapshot *s, uint64_t token)
{
    for (uint32_t i = 0; i < s->n_peers; i++)
        if (s->peers[i].token == token)
            return &s->peers[i];
    return NULL;
}

static struct snapshot_peer *peer_add(struct fleet_snapshot *s, uint64_t token)
{
    struct snapshot_peer *p = peer_find(s, token);
    if (p)
        return p;
    if (!rt_grow((void **)&s->peers, &s->cap_peers, s->n_peers + 1, sizeof(*s->peers)))
        return NULL;
    p = &s->peers[s->n_peers++];
    memset(p, 0, sizeof(*p));
    p->token = token;
    return p;
}

void fleet__snapshot_forget_node(struct geo_fleet *f, const struct fleet_node *nd)
{
    for (struct fleet_follow *fo = f->follow_list; fo; fo = fo->next) {
        struct snapshot_peer *p = fo->snap ? peer_find(fo->snap, nd->token) : NULL;
        if (p && !p->done) {
            p->done = true;
            p->answered = false; /* nothing of it to keep or sweep */
        }
    }
}

/* ------------------------------------------------------------------------ */
/* Asking                                                                     */

/* Sends a snapshot ask for fo (to one node, or to all when nd is NULL). */
static void ask(struct geo_fleet *f, struct fleet_follow *fo, const struct fleet_node *nd)
{
    char subject[GEO_FLEET_SUBJECT_MAX];
    if (nd)
        snprintf(subject, sizeof(subject), FLEET_WIRE_SUBJ_SNAPSHOT ".%s", nd->id);
    else
        snprintf(subject, sizeof(subject), FLEET_WIRE_SUBJ_SNAPSHOT);
    fleet_wire_snapshot_ask(&f->out, f->node, f->node_len, fo->snap->req, fo->space, fo->space_len,
                            fo->prefix, fo->prefix_len);
    f->st.snapshots++;
    fleet__publish(f, subject, f->reply_subject, &f->out);
}

rt_status fleet__snapshot_start(struct geo_fleet *f, struct fleet_follow *fo, struct fleet_node *nd)
{
    struct fleet_snapshot *s = fo->snap;
    if (!s) {
        if (!(s = calloc(1, sizeof(*s))))
            return RT_NOMEM;
        rt_htab_init(&s->named);
        fo->snap = s;
        s->req = ++f->next_req;
    } else if (!nd) {
        s->req = ++f->next_req;
        s->n_peers = 0;
        names_clear(s);
    }
    s->deadline = f->now + f->wait_ms;
    if (nd) {
        struct snapshot_peer *p = peer_add(s, nd->token);
        if (p)
            p->answered = p->done = false;
        ask(f, fo, nd);
        return RT_OK;
    }
    for (struct fleet_node *n = f->node_list; n; n = n->next)
        peer_add(s, n->token);
    ask(f, fo, NULL);
    return RT_OK;
}

/* ------------------------------------------------------------------------ */
/* Sweeping                                                                   */

struct sweep_ctx {
    struct geo_fleet *f;
    struct fleet_snapshot *s; /* NULL: unfollow, members still covered by others stay */
    char (*clients)[GEO_CLIENT_MAX + 1];
    uint64_t *owners;
    uint32_t n, cap;
};

static void sweep_visit(void *arg, const struct geo_member_view *m)
{
    struct sweep_ctx *c = arg;
    if (!fleet__remote(m->conn))
        return;
    if (c->s) {
        struct snapshot_peer *p = peer_find(c->s, m->conn);
        if (!p || !p->answered || m->version > p->watermark ||
            named(c->s, m->client, m->client_len))
            return; /* named, or changed since the answer, or its node did not answer */
    } else {
        char cell[GEO_CELL_BUF];
        if (geo_encode(m->lat, m->lon, c->f->share_p, cell) == RT_OK &&
            fleet__covering(c->f, m->space, m->space_len, cell, (size_t)c->f->share_p))
            return;
    }
    if (!rt_grow((void **)&c->clients, &c->cap, c->n + 1, sizeof(*c->clients)) ||
        !(c->owners = realloc(c->owners, (size_t)c->cap * sizeof(*c->owners))))
        return; /* kept: the next resync tries again */
    memcpy(c->clients[c->n], m->client, m->client_len + 1);
    c->owners[c->n++] = m->conn;
}

/* Drops the remote members in fo's prefix that snap's answers did not name (or, snap NULL,
 * that no follow covers). The visit only collects: the index is not changed under it. */
static void sweep(struct geo_fleet *f, struct fleet_follow *fo, struct fleet_snapshot *snap)
{
    struct sweep_ctx c = {f, snap, NULL, NULL, 0, 0};
    geo_each_prefix(f->geo, fo->space, fo->space_len, fo->prefix, fo->prefix_len, sweep_visit, &c,
                    NULL);
    for (uint32_t i = 0; i < c.n; i++)
        fleet__remote_clear(f, c.owners[i], fo->space, fo->space_len, c.clients[i],
                            strlen(c.clients[i]));
    free(c.clients);
    free(c.owners);
}

void fleet__sweep_uncovered(struct geo_fleet *f, struct fleet_follow *fo)
{
    sweep(f, fo, NULL);
}

static void snapshot_finish(struct geo_fleet *f, struct fleet_follow *fo)
{
    struct fleet_snapshot *s = fo->snap;
    bool partial = false;
    for (uint32_t i = 0; i < s->n_peers; i++)
        partial = partial || !s->peers[i].done;
    if (partial)
        f->st.snapshots_partial++;
    sweep(f, fo, s);
    fo->snap = NULL;
    fleet__snapshot_free(s);
    fo->ready = true;
    fleet__follow_ready(f, fo, partial);
}

void fleet__snapshot_check(struct geo_fleet *f, struct fleet_follow *fo)
{
    struct fleet_snapshot *s = fo->snap;
    if (!s)
        return;
    bool all = true;
    for (uint32_t i = 0; i < s->n_peers && all; i++)
        all = s->peers[i].done;
    if ((all && f->now >= f->warm_until) || f->now >= s->deadline)
        snapshot_finish(f, fo);
}

void fleet__on_snapshot_answer(struct geo_fleet *f, const struct fleet_wire_msg *m)
{
    if (!fleet__space_ok(m) || !m->prefix) {
        f->st.bad_messages++;
        return;
    }
    struct fleet_follow *fo =
        fleet__follow_find(f, m->space, m->space_len, m->prefix, m->prefix_len);
    if (!fo || !fo->snap || fo->snap->req != m->req)
        return; /* an answer to an earlier ask */
    bool created;
    struct fleet_node *nd = fleet__node_get(f, m->node, m->node_len, &created);
    struct snapshot_peer *p = nd ? peer_add(fo->snap, nd->token) : NULL;
    if (!p || p->done)
        return;
    nd->last_seen = f->now;
    if (!p->answered) {
        p->answered = true;
        p->watermark = m->watermark;
    }
    fleet__apply(f, nd, m, fo->snap);
    if (m->end)
        p->done = true;
    fleet__snapshot_check(f, fo);
}

/* ------------------------------------------------------------------------ */
/* Answering                                                                  */

struct answer_ctx {
    struct geo_fleet *f;
    const struct fleet_wire_msg *ask;
    const char *reply;
    struct fleet_wire_writer w;
};

static void answer_begin(struct answer_ctx *c)
{
    const struct fleet_wire_msg *a = c->ask;
    fleet_wire_answer_begin(&c->w, &c->f->out, c->f->node, c->f->node_len, a->req, c->f->v,
                            a->space, a->space_len, a->prefix, a->prefix_len);
}

static void answer_end(struct answer_ctx *c, bool last)
{
    if (fleet_wire_end(&c->w, last) == RT_OK)
        fleet__publish(c->f, c->reply, NULL, &c->f->out);
    else
        c->f->st.publish_failures++;
}

static void answer_visit(void *arg, const struct geo_member_view *m)
{
    struct answer_ctx *c = arg;
    if (fleet__remote(m->conn))
        return; /* only this node's own members: nothing comes back from the dead */
    if (c->w.entries >= FLEET_CHUNK_ENTRIES || c->f->out.len >= FLEET_CHUNK_BYTES) {
        answer_end(c, false);
        answer_begin(c);
    }
    struct fleet_wire_entry e;
    fleet__entry_of(m, c->f->v, &e); /* its state as of the watermark */
    fleet_wire_put(&c->w, &e);
}

void fleet__on_snapshot_ask(struct geo_fleet *f, const struct fleet_wire_msg *m, const char *reply)
{
    uint64_t code;
    if (!fleet__space_ok(m) || !m->prefix || m->prefix_len < 1 ||
        m->prefix_len > (size_t)f->share_p || !geo__parse_cell(m->prefix, m->prefix_len, &code) ||
        !reply || strncmp(reply, FLEET_WIRE_SUBJ_REPLY, strlen(FLEET_WIRE_SUBJ_REPLY)) != 0) {
        f->st.bad_messages++;
        return;
    }
    char prefix[GEO_CELL_BUF];
    for (size_t i = 0; i < m->prefix_len; i++)
        prefix[i] = (char)(m->prefix[i] >= 'A' && m->prefix[i] <= 'Z' ? m->prefix[i] - 'A' + 'a'
                                                                      : m->prefix[i]);
    struct answer_ctx c = {.f = f, .ask = m, .reply = reply};
    answer_begin(&c);
    geo_each_prefix(f->geo, m->space, m->space_len, prefix, m->prefix_len, answer_visit, &c, NULL);
    answer_end(&c, true);
    f->st.snapshots_answered++;
}
