/*
 * chans.c: channel presence across nodes (users.h). A node follows a
 * channel while its connections are in it or want to be (and lingers
 * linger_ms after): it subscribes to the channel's subject, asks every node
 * for a snapshot of its members there, applies the answers and the deltas as
 * they come under one rule (a holder keeps the version v of its state and
 * only a higher v of the same node replaces it), and once every node
 * answered (or snapshot_wait_ms passed) drops the holders the answers did
 * not name: what was left of a lost leave. It answers the others' asks with
 * its own holders only, and publishes its changes, batched per channel.
 * What the gateway calls (wants, entering, leaving, the view) is presence.c.
 * Loop thread.
 */
#include "users_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct users_chan *users__chan_find(const struct users *u, const char *name, size_t len)
{
    uint64_t h = rt_hash_bytes(name, len);
    for (struct rt_hnode *n = rt_htab_chain(&u->chans, h); n; n = n->next) {
        struct users_chan *ch = RT_CONTAINER(n, struct users_chan, h);
        if (n->hash == h && ch->name_len == len && memcmp(ch->name, name, len) == 0)
            return ch;
    }
    return NULL;
}

/* ------------------------------------------------------------------------ */
/* Snapshots asked                                                            */

static struct snap_peer *peer_find(struct chan_snapshot *s, uint64_t token)
{
    for (uint32_t i = 0; i < s->n_peers; i++)
        if (s->peers[i].token == token)
            return &s->peers[i];
    return NULL;
}

static struct snap_peer *peer_add(struct chan_snapshot *s, uint64_t token)
{
    struct snap_peer *p = peer_find(s, token);
    if (p)
        return p;
    if (!rt_grow((void **)&s->peers, &s->cap_peers, s->n_peers + 1, sizeof(*s->peers)))
        return NULL;
    p = &s->peers[s->n_peers++];
    memset(p, 0, sizeof(*p));
    p->token = token;
    return p;
}

static void snapshot_free(struct chan_snapshot *s)
{
    if (s)
        free(s->peers);
    free(s);
}

/* Asks every node (nd NULL) or one for ch's members, answers to this node's reply subject. */
static void ask(struct users *u, struct users_chan *ch, const struct users_node *nd)
{
    char subject[USERS_WIRE_SUBJECT_MAX];
    if (nd)
        snprintf(subject, sizeof(subject), USERS_WIRE_SUBJ_ASK ".%s", nd->id);
    else
        snprintf(subject, sizeof(subject), USERS_WIRE_SUBJ_ASK);
    users_wire_ask(&u->out, u->node, u->node_len, ch->snap->req, ch->name, ch->name_len);
    u->st.snapshots++;
    users__publish(u, subject, u->reply_subject, &u->out);
}

/* Starts ch's snapshot from every node (nd NULL: anew) or adds one node to it. */
static void snapshot_start(struct users *u, struct users_chan *ch, struct users_node *nd)
{
    struct chan_snapshot *s = ch->snap;
    if (!s) {
        if (!(s = calloc(1, sizeof(*s)))) {
            u->resync_wanted = true; /* the deltas still come; the next resync fills it */
            ch->ready = true;
            ch->partial = true;
            return;
        }
        ch->snap = s;
        s->req = ++u->next_req;
    } else if (!nd) {
        s->req = ++u->next_req;
        s->n_peers = 0;
    }
    s->deadline = u->now + u->wait_ms;
    ch->last_snapshot = u->now;
    if (nd) {
        struct snap_peer *p = peer_add(s, nd->token);
        if (p)
            p->answered = p->done = false;
    } else {
        for (struct users_node *n = u->node_list; n; n = n->next)
            peer_add(s, n->token);
    }
    ask(u, ch, nd);
}

static void snapshot_finish(struct users *u, struct users_chan *ch)
{
    struct chan_snapshot *s = ch->snap;
    bool partial = false;
    for (uint32_t i = 0; i < s->n_peers; i++)
        partial = partial || !s->peers[i].done;
    if (partial)
        u->st.snapshots_partial++;
    for (uint32_t i = 0; i < s->n_peers; i++)
        if (s->peers[i].answered)
            users__members_drop_node(u, ch, s->peers[i].token, s->req, s->peers[i].watermark);
    ch->snap = NULL;
    snapshot_free(s);
    ch->ready = true;
    ch->partial = partial;
    users__wants_ready(u, ch);
}

static void snapshot_check(struct users *u, struct users_chan *ch)
{
    struct chan_snapshot *s = ch->snap;
    if (!s)
        return;
    bool all = true;
    for (uint32_t i = 0; i < s->n_peers && all; i++)
        all = s->peers[i].done;
    if ((all && u->now >= u->warm_until) || u->now >= s->deadline)
        snapshot_finish(u, ch);
}

/* ------------------------------------------------------------------------ */
/* Following                                                                  */

static void chan_free(struct users *u, struct users_chan *ch);

/* Nobody here is in ch or waiting for it: it only lingers. */
static bool chan_idle(const struct users_chan *ch)
{
    return !ch->n_watchers && !ch->n_waiters && !ch->dirty_listed && !ch->snap;
}

/*
 * At max_channels: the channel that lingered longest makes room, so that
 * connections cycling through channels cannot fill the table for the
 * linger time; only channels somebody is in count against the limit.
 */
static bool unfollow_idlest(struct users *u)
{
    struct users_chan *best = NULL;
    for (struct users_chan *ch = u->chan_list; ch; ch = ch->next)
        if (chan_idle(ch) && (!best || ch->last_used < best->last_used))
            best = ch;
    if (best)
        chan_free(u, best);
    return best != NULL;
}

rt_status users__chan_follow(struct users *u, const char *name, size_t len, struct users_chan **out)
{
    struct users_chan *ch = users__chan_find(u, name, len);
    if (ch) {
        *out = ch;
        return RT_OK;
    }
    if (!proto_channel_valid(name, len))
        return RT_INVAL;
    if (rt_htab_count(&u->chans) >= u->max_channels && !unfollow_idlest(u))
        return RT_LIMIT;
    if (rt_htab_reserve(&u->chans) != RT_OK || !(ch = calloc(1, sizeof(*ch))))
        return RT_NOMEM;
    memcpy(ch->name, name, len);
    ch->name_len = len;
    rt_htab_init(&ch->members);
    rt_htab_init(&ch->dirty);
    if (u->has_bus) {
        char subject[USERS_WIRE_SUBJECT_MAX];
        users_wire_presence_subject(subject, sizeof(subject), name, len);
        if (!(ch->sub = u->bus.subscribe(u->bus.ctx, subject))) {
            free(ch);
            return RT_UNAVAILABLE;
        }
    }
    ch->h.hash = rt_hash_bytes(name, len);
    rt_htab_insert(&u->chans, &ch->h);
    ch->next = u->chan_list;
    if (u->chan_list)
        u->chan_list->prev = ch;
    u->chan_list = ch;
    ch->last_used = u->now;
    if (u->has_bus)
        snapshot_start(u, ch, NULL);
    else
        ch->ready = true; /* one node: everything is here */
    *out = ch;
    return RT_OK;
}

static void chan_free(struct users *u, struct users_chan *ch)
{
    if (ch->sub)
        u->bus.unsubscribe(u->bus.ctx, ch->sub);
    rt_htab_remove(&u->chans, &ch->h);
    if (ch->prev)
        ch->prev->next = ch->next;
    else
        u->chan_list = ch->next;
    if (ch->next)
        ch->next->prev = ch->prev;
    users__free_members(ch);
    snapshot_free(ch->snap);
    free(ch->watchers);
    free(ch->waiters);
    free(ch);
}

void users__tick_chans(struct users *u)
{
    for (struct users_chan *ch = u->chan_list, *next; ch; ch = next) {
        next = ch->next;
        snapshot_check(u, ch);
        /* A node that did not answer in time (slow, not dead: the ttl drops the dead) is
         * asked again, every USERS_RESYNC_GAP_MS, until the channel is complete. */
        if (ch->partial && !ch->snap && u->now - ch->last_snapshot >= USERS_RESYNC_GAP_MS)
            snapshot_start(u, ch, NULL);
        users__members_tick(u, ch);
        if (chan_idle(ch) && u->now - ch->last_used >= u->linger_ms)
            chan_free(u, ch); /* nobody here is in it: its members matter to nobody here */
    }
}

void users__resync_chans(struct users *u, struct users_node *nd)
{
    if (!u->has_bus || !u->chan_list)
        return;
    if (nd)
        u->st.resyncs++;
    for (struct users_chan *ch = u->chan_list; ch; ch = ch->next)
        snapshot_start(u, ch, nd);
}

void users__chans_drop_node(struct users *u, struct users_node *nd)
{
    for (struct users_chan *ch = u->chan_list, *next; ch; ch = next) {
        next = ch->next;
        users__members_drop_node(u, ch, nd->token, 0, 0);
        struct snap_peer *p = ch->snap ? peer_find(ch->snap, nd->token) : NULL;
        if (p && !p->done) {
            p->done = true;
            p->answered = false; /* nothing of it to keep or sweep */
        }
        snapshot_check(u, ch);
    }
}

/* ------------------------------------------------------------------------ */
/* Other nodes' members                                                       */

/*
 * The info of an entry as this node keeps it: the canonical compact JSON of
 * an object (so that it goes to JSON clients as it is), or nothing when it
 * is not one.
 */
static bool info_canonical(struct users *u, const uint8_t *info, size_t len, struct proto_buf *out)
{
    proto_buf_reset(out);
    struct proto_payload p = {PROTO_PAYLOAD_JSON, info, len, false};
    if (!len || proto_payload_convert(&p, PROTO_PAYLOAD_JSON, out) != RT_OK || !out->len ||
        out->data[0] != '{' || out->len > USERS_INFO_MAX) {
        if (len)
            u->st.bad_messages++;
        return false;
    }
    return true;
}

/* Applies m's entries from node nd to ch (named: the snapshot request answered, or 0). */
static void apply(struct users *u, struct users_chan *ch, struct users_node *nd,
                  const struct users_wire_msg *m, uint64_t named)
{
    struct users_wire_cursor c = {0};
    struct users_wire_entry e;
    struct proto_buf info;
    proto_buf_init(&info, 0);
    while (users_wire_next_entry(m, &c, &e)) {
        struct chan_member *mb = users__member_find(ch, e.user, e.user_len);
        struct holder *h = NULL;
        for (uint32_t i = 0; mb && i < mb->n_holders && !h; i++)
            if (mb->holders[i].node == nd->token)
                h = &mb->holders[i];
        if (h && e.v <= h->v) {
            if (named)
                h->named = named; /* known already: still named */
            continue;
        }
        const char *text = NULL;
        size_t text_len = 0;
        if (h && h->info && e.info_len == h->info_len && !memcmp(h->info, e.info, e.info_len)) {
            text = h->info; /* as before: already checked */
            text_len = h->info_len;
        } else if (e.info && info_canonical(u, e.info, e.info_len, &info)) {
            text = (const char *)info.data;
            text_len = info.len;
        }
        users__member_set(u, ch, nd->token, e.user, e.user_len, (uint32_t)e.clients, e.v, named,
                          text, text_len);
    }
    proto_buf_free(&info);
    users__members_mode(u, ch);
}

void users__on_delta(struct users *u, const struct users_wire_msg *m, const char *channel,
                     size_t channel_len)
{
    if (!channel || !m->channel || m->channel_len != channel_len ||
        memcmp(m->channel, channel, channel_len) != 0) {
        u->st.bad_messages++;
        return;
    }
    struct users_chan *ch = users__chan_find(u, channel, channel_len);
    bool created;
    struct users_node *nd = users__heard_from(u, m, &created);
    if (ch && nd)
        apply(u, ch, nd, m, 0);
}

void users__on_answer(struct users *u, const struct users_wire_msg *m)
{
    if (!m->channel) {
        u->st.bad_messages++;
        return;
    }
    struct users_chan *ch = users__chan_find(u, m->channel, m->channel_len);
    if (!ch || !ch->snap || ch->snap->req != m->req)
        return; /* an answer to an earlier ask */
    bool created;
    struct users_node *nd = users__heard_from(u, m, &created);
    struct snap_peer *p = nd ? peer_add(ch->snap, nd->token) : NULL;
    if (!p || p->done)
        return;
    if (!p->answered) {
        p->answered = true;
        p->watermark = m->watermark;
    }
    apply(u, ch, nd, m, ch->snap->req);
    if (m->end)
        p->done = true;
    snapshot_check(u, ch);
}

/* ------------------------------------------------------------------------ */
/* This node's members: answers and deltas                                    */

struct answer_ctx {
    struct users *u;
    const struct users_wire_msg *ask;
    const char *reply;
    struct users_wire_writer w;
};

static void answer_begin(struct answer_ctx *a)
{
    users_wire_answer_begin(&a->w, &a->u->out, a->u->node, a->u->node_len, a->ask->req, a->u->v,
                            a->ask->channel, a->ask->channel_len);
}

static void answer_end(struct answer_ctx *a, bool last)
{
    if (users_wire_end(&a->w, last) == RT_OK)
        users__publish(a->u, a->reply, NULL, &a->u->out);
    else
        a->u->st.publish_failures++;
}

static void answer_cb(struct rt_hnode *n, void *arg)
{
    struct answer_ctx *a = arg;
    struct chan_member *m = RT_CONTAINER(n, struct chan_member, h);
    for (uint32_t i = 0; i < m->n_holders; i++) {
        const struct holder *h = &m->holders[i];
        if (h->node != USERS_LOCAL)
            continue; /* only this node's own: nothing comes back from the dead */
        if (a->w.entries >= USERS_CHUNK_ENTRIES || a->u->out.len >= USERS_CHUNK_BYTES) {
            answer_end(a, false);
            answer_begin(a);
        }
        users_wire_put_member(&a->w, a->u->v, m->user, m->user_len, h->clients,
                              (const uint8_t *)h->info, h->info_len);
    }
}

void users__on_ask(struct users *u, const struct users_wire_msg *m, const char *reply)
{
    if (!m->channel || !reply ||
        strncmp(reply, USERS_WIRE_SUBJ_ANSWER, strlen(USERS_WIRE_SUBJ_ANSWER)) != 0 ||
        strlen(reply) >= USERS_WIRE_SUBJECT_MAX) {
        u->st.bad_messages++;
        return;
    }
    bool created;
    users__heard_from(u, m, &created);
    struct answer_ctx a = {.u = u, .ask = m, .reply = reply};
    answer_begin(&a);
    struct users_chan *ch = users__chan_find(u, m->channel, m->channel_len);
    if (ch)
        rt_htab_each(&ch->members, answer_cb, &a);
    answer_end(&a, true);
}

/* One channel's local changes since the last flush, in one message or a few. */
static void flush_chan(struct users *u, struct users_chan *ch)
{
    char subject[USERS_WIRE_SUBJECT_MAX];
    users_wire_presence_subject(subject, sizeof(subject), ch->name, ch->name_len);
    struct users_wire_writer w;
    bool started = false;
    while (ch->dirty_head) {
        struct chan_dirty *d = ch->dirty_head;
        ch->dirty_head = d->next;
        rt_htab_remove(&ch->dirty, &d->h);
        if (started && (w.entries >= USERS_CHUNK_ENTRIES || u->out.len >= USERS_CHUNK_BYTES)) {
            if (users_wire_end(&w, false) == RT_OK)
                users__publish(u, subject, NULL, &u->out);
            started = false;
        }
        if (!started) {
            users_wire_delta_begin(&w, &u->out, u->node, u->node_len, ch->name, ch->name_len);
            started = true;
        }
        struct chan_member *m = users__member_find(ch, d->user, d->len);
        const struct holder *h = NULL;
        for (uint32_t i = 0; m && i < m->n_holders && !h; i++)
            if (m->holders[i].node == USERS_LOCAL)
                h = &m->holders[i];
        users_wire_put_member(&w, ++u->v, d->user, d->len, h ? h->clients : 0,
                              h ? (const uint8_t *)h->info : NULL, h ? h->info_len : 0);
        free(d);
    }
    if (started && users_wire_end(&w, false) == RT_OK)
        users__publish(u, subject, NULL, &u->out);
}

void users__flush_chans(struct users *u)
{
    while (u->dirty_chans) {
        struct users_chan *ch = u->dirty_chans;
        u->dirty_chans = ch->dirty_next;
        ch->dirty_listed = false;
        flush_chan(u, ch);
    }
}

void users__free_chans(struct users *u)
{
    while (u->chan_list)
        chan_free(u, u->chan_list);
    u->dirty_chans = NULL;
}
