/*
 * users.c: users across the fleet (users.h), the hub: the module made and
 * freed, each bus message handed to the file of its concern, the flush, the
 * clock's work (heartbeats, resyncs, expiry, lingering, forgetting) and the
 * stats. The other concerns are in the files users_int.h lists. Loop
 * thread; no I/O of its own.
 */
#include "users_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void users__publish(struct users *u, const char *subject, const char *reply,
                    const struct proto_buf *b)
{
    if (!u->has_bus)
        return;
    u->st.messages_out++;
    if (u->bus.publish(u->bus.ctx, subject, reply, b->data, b->len) != RT_OK) {
        u->st.publish_failures++;
        u->lost_out++; /* the next heartbeat says so: the others resync from this node */
        u->full_wanted = true;
    }
}

/* ------------------------------------------------------------------------ */
/* Receiving                                                                  */

void users_receive(struct users *u, const char *subject, const char *reply, const uint8_t *data,
                   size_t len, uint64_t now_ms)
{
    if (now_ms > u->now)
        u->now = now_ms;
    struct users_wire_msg m;
    if (!subject || !users_wire_decode(data, len, &m)) {
        u->st.bad_messages++;
        return;
    }
    if (m.node_len == u->node_len && memcmp(m.node, u->node, u->node_len) == 0)
        return; /* our own, echoed */
    u->st.messages_in++;
    const char *channel;
    size_t channel_len;
    switch (users_wire_kind_of(subject, &channel, &channel_len)) {
    case USERS_WIRE_HEARTBEAT:
        users__on_heartbeat(u, &m);
        break;
    case USERS_WIRE_CONNS:
        users__on_conns(u, &m);
        break;
    case USERS_WIRE_PRESENCE:
        users__on_delta(u, &m, channel, channel_len);
        break;
    case USERS_WIRE_ASK:
        users__on_ask(u, &m, reply);
        break;
    case USERS_WIRE_ANSWER:
        users__on_answer(u, &m);
        break;
    case USERS_WIRE_OTHER:
        u->st.bad_messages++;
        break;
    }
    users__report_ready(u);
}

/* ------------------------------------------------------------------------ */
/* Flush and time                                                             */

void users_flush(struct users *u)
{
    bool full = u->full_wanted && u->now - u->last_full >= USERS_FULL_GAP_MS;
    if (full) {
        u->full_wanted = false;
        u->last_full = u->now;
    }
    users__flush_limits(u, full && u->has_bus && u->max_conns);
    users__flush_chans(u);
}

bool users_pending(const struct users *u)
{
    return u->dirty_head || u->dirty_chans ||
           (u->full_wanted && u->now - u->last_full >= USERS_FULL_GAP_MS);
}

/*
 * Snapshots of every channel again, and this node's full state. With lost
 * (this node's bus dropped messages), a hello too: every node sends its full
 * state. The periodic one does not: each node's own full state repairs the
 * others' view of it, so n nodes send n full states, not n * n.
 */
static void resync_all(struct users *u, bool lost)
{
    u->st.resyncs++;
    u->last_resync = u->now;
    u->resync_wanted = false;
    u->full_wanted = true;
    if (lost && u->now - u->last_hello >= USERS_HELLO_GAP_MS) {
        u->last_hello = u->now;
        users__send_heartbeat(u, true, false);
    }
    users__resync_chans(u, NULL);
}

void users_tick(struct users *u, uint64_t now_ms, uint64_t bus_gen)
{
    if (now_ms > u->now)
        u->now = now_ms;
    if (!u->bus_gen_known) {
        u->bus_gen_known = true;
        u->bus_gen = bus_gen;
    } else if (bus_gen != u->bus_gen) {
        u->bus_gen = bus_gen;
        u->resync_wanted = true;
    }
    if (u->has_bus && u->resync_wanted && u->now - u->last_resync >= USERS_RESYNC_GAP_MS)
        resync_all(u, true);
    else if (u->has_bus && u->now - u->last_resync >= u->resync_ms)
        resync_all(u, false);
    if (u->has_bus && u->now - u->last_hb >= u->hb_ms)
        users__send_heartbeat(u, false, false);
    users__expire_nodes(u);
    users__tick_chans(u);
    if (u->now - u->last_gc >= USERS_GC_EVERY_MS) {
        u->last_gc = u->now;
        users__gc_users(u);
    }
    users__report_ready(u);
}

/* ------------------------------------------------------------------------ */
/* Create / destroy                                                           */

static uint32_t or_default(uint32_t v, uint32_t dflt)
{
    return v ? v : dflt;
}

/* The configuration with its defaults; false when it is not usable. */
static bool configure(struct users *u, const struct users_config *cfg)
{
    size_t nlen = cfg->node ? strlen(cfg->node) : 0;
    u->has_bus = cfg->bus.publish != NULL;
    if (u->has_bus &&
        (!users_wire_node_ok(cfg->node, nlen) || !cfg->bus.subscribe || !cfg->bus.unsubscribe))
        return false;
    if (!u->has_bus && nlen > USERS_NODE_MAX)
        return false;
    u->bus = cfg->bus;
    u->on_event = cfg->on_event;
    u->on_ready = cfg->on_ready;
    u->on_evict = cfg->on_evict;
    u->arg = cfg->arg;
    u->pub.rate = cfg->pub_rate;
    u->pub.burst = or_default(cfg->pub_burst, cfg->pub_rate);
    u->max_conns = cfg->max_conns;
    u->ttl_ms = or_default(cfg->ttl_ms, 30000);
    u->hb_ms = or_default(cfg->heartbeat_ms, u->ttl_ms / 3);
    u->hb_ms = or_default(u->hb_ms, 1);
    u->wait_ms = or_default(cfg->snapshot_wait_ms, 1000);
    u->linger_ms = or_default(cfg->linger_ms, 30000);
    u->resync_ms = or_default(cfg->resync_ms, 300000);
    u->max_members = or_default(cfg->max_members, 1000);
    u->max_channels = or_default(cfg->max_channels, 10000);
    u->max_users = or_default(cfg->max_users, 1000000);
    if (nlen)
        memcpy(u->node, cfg->node, nlen);
    u->node_len = nlen;
    snprintf(u->reply_subject, sizeof(u->reply_subject), USERS_WIRE_SUBJ_ANSWER "%s", u->node);
    return true;
}

static rt_status subscribe_all(struct users *u)
{
    if (!u->has_bus)
        return RT_OK;
    char me[USERS_WIRE_SUBJECT_MAX];
    snprintf(me, sizeof(me), USERS_WIRE_SUBJ_ASK ".%s", u->node);
    u->sub_hb = u->bus.subscribe(u->bus.ctx, USERS_WIRE_SUBJ_HEARTBEAT);
    u->sub_conns = u->bus.subscribe(u->bus.ctx, USERS_WIRE_SUBJ_CONNS);
    u->sub_ask = u->bus.subscribe(u->bus.ctx, USERS_WIRE_SUBJ_ASK);
    u->sub_ask_me = u->bus.subscribe(u->bus.ctx, me);
    u->sub_answer = u->bus.subscribe(u->bus.ctx, u->reply_subject);
    if (!u->sub_hb || !u->sub_conns || !u->sub_ask || !u->sub_ask_me || !u->sub_answer)
        return RT_UNAVAILABLE;
    users__send_heartbeat(u, true, false); /* the others answer with theirs and their state */
    u->last_hello = u->now;
    return RT_OK;
}

rt_status users_create(const struct users_config *cfg, uint64_t now_ms, struct users **out)
{
    *out = NULL;
    struct users *u = calloc(1, sizeof(*u));
    if (!u)
        return RT_NOMEM;
    if (!configure(u, cfg)) {
        free(u);
        return RT_INVAL;
    }
    rt_htab_init(&u->nodes);
    rt_htab_init(&u->users);
    rt_htab_init(&u->conns);
    rt_htab_init(&u->chans);
    rt_htab_init(&u->wants);
    proto_buf_init(&u->out, 0);
    u->now = u->last_resync = u->last_gc = now_ms;
    u->warm_until = now_ms + (u->wait_ms < USERS_WARMUP_MS ? u->wait_ms : USERS_WARMUP_MS);
    if (subscribe_all(u) != RT_OK) {
        users_destroy(u);
        return RT_UNAVAILABLE;
    }
    *out = u;
    return RT_OK;
}

void users_destroy(struct users *u)
{
    if (!u)
        return;
    if (u->has_bus && u->sub_hb)
        users__send_heartbeat(u, false, true); /* goodbye: the others drop this node now */
    users__free_chans(u);
    users__free_wants(u);
    void *subs[] = {u->sub_hb, u->sub_conns, u->sub_ask, u->sub_ask_me, u->sub_answer};
    for (size_t i = 0; i < sizeof(subs) / sizeof(subs[0]); i++)
        if (subs[i])
            u->bus.unsubscribe(u->bus.ctx, subs[i]);
    users__free_users(u); /* and the connections */
    users__free_nodes(u);
    rt_htab_free(&u->chans);
    proto_buf_free(&u->out);
    free(u->readyq);
    free(u);
}

void users_get_stats(const struct users *u, struct users_stats *st)
{
    *st = u->st;
    st->users = rt_htab_count(&u->users);
    st->local_conns = rt_htab_count(&u->conns);
    st->remote_conns = u->remote_conns;
    st->nodes = rt_htab_count(&u->nodes);
    st->channels = rt_htab_count(&u->chans);
    st->members = 0;
    for (const struct users_chan *ch = u->chan_list; ch; ch = ch->next)
        st->members += rt_htab_count(&ch->members);
}
