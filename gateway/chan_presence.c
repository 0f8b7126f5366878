/*
 * chan_presence.c: channel presence in the gateway (docs/protocol.md,
 * Channel presence). A `sub` with "presence":true is checked
 * (presence_allow, or the sub rule), waits, when this node does not know the
 * channel's members yet, until it does (at most --geo-snapshot-wait-ms: the
 * users/ module asks the other nodes), then runs as a plain sub; its reply
 * carries "presence" (the members, or a count past --presence-max-members)
 * and, in the same step, the connection enters the channel: the others are
 * told, and from then on it gets the join / leave / count / sync events,
 * which are encoded once per codec and queued by reference, like channel
 * messages. Loop thread.
 */
#include "gw.h"
#include "users.h"

#include <libwebsockets.h>
#include <stdlib.h>
#include <string.h>

/*
 * A presence sub of a session: waiting for the channel's members (parked,
 * in srv->presence_reqs by ticket), or run and waiting for its reply.
 */
struct gw_presence_req {
    struct rt_hnode h;
    struct gw_presence_req *next; /* the session's list */
    uint64_t ticket;
    uint64_t serial; /* unique in the process: names it after its sub may have freed it */
    uint64_t conn_id;
    int64_t id;
    bool parked;
    bool has_since;
    uint64_t since;
    size_t channel_len, epoch_len; /* epoch_len 0: absent */
    char channel[PROTO_CHANNEL_MAX + 1];
    char epoch[PROTO_EPOCH_MAX + 1];
};

static struct gw_presence_req *req_new(struct gw_session *s, const struct proto_msg *m)
{
    static uint64_t serials;
    struct gw_presence_req *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->serial = ++serials;
    r->conn_id = s->conn_id;
    r->id = m->id;
    r->has_since = m->has_since;
    r->since = m->since;
    memcpy(r->channel, m->channel.ptr, m->channel.len);
    r->channel_len = m->channel.len;
    if (m->epoch.ptr) {
        memcpy(r->epoch, m->epoch.ptr, m->epoch.len);
        r->epoch_len = m->epoch.len;
    }
    struct gw_presence_req **tail = &s->presence_reqs;
    while (*tail)
        tail = &(*tail)->next;
    *tail = r; /* in request order: a reply finds the oldest with its id */
    return r;
}

/* Unlinks r from its session (s may be NULL when it is gone) and the table, and frees it. */
static void req_free(struct gw_server *srv, struct gw_session *s, struct gw_presence_req *r)
{
    if (s)
        for (struct gw_presence_req **pp = &s->presence_reqs; *pp; pp = &(*pp)->next)
            if (*pp == r) {
                *pp = r->next;
                break;
            }
    if (r->parked) {
        rt_htab_remove(&srv->presence_reqs, &r->h);
        if (srv->users)
            users_presence_release(srv->users, r->ticket);
        if (s)
            s->presence_waiting--;
    }
    free(r);
}

static bool same_channel(const struct gw_presence_req *r, const struct proto_msg *m)
{
    return r->channel_len == m->channel.len && !memcmp(r->channel, m->channel.ptr, r->channel_len);
}

static void refuse_want(struct gw_session *s, const struct proto_msg *m, rt_status st)
{
    if (st == RT_LIMIT)
        gw_session_reply_error(s, m, RT_E_UNAVAILABLE, "presence channel limit reached", 1000);
    else
        gw_session_reply_error(s, m, RT_E_UNAVAILABLE, "presence unavailable", 1000);
}

bool gw_chan_presence_sub(struct gw_session *s, const struct proto_msg *m)
{
    struct gw_server *srv = s->srv;
    if (!m->presence || !srv->users)
        return false;
    if (srv->presence_resuming == s->conn_id)
        return false; /* it waited already: the members are known */
    if (!gw_authz_may_presence(s, m))
        return true;
    for (struct gw_presence_req *r = s->presence_reqs; r; r = r->next)
        if (r->parked && same_channel(r, m)) {
            gw_session_reply_error(s, m, RT_E_CONFLICT, "already subscribing to this channel", 0);
            return true;
        }
    if (s->presence_waiting >= GW_PRESENCE_WAITING_MAX) {
        gw_session_reply_error(s, m, RT_E_RATE_LIMITED, "too many presence subs waiting", 100);
        return true;
    }
    uint64_t ticket = 0;
    bool ready = false;
    rt_status st = users_presence_want(srv->users, m->channel.ptr, m->channel.len, rt_mono_ms(),
                                       &ticket, &ready);
    if (st != RT_OK) {
        refuse_want(s, m, st);
        return true;
    }
    struct gw_presence_req *r =
        rt_htab_reserve(&srv->presence_reqs) == RT_OK ? req_new(s, m) : NULL;
    if (!r) {
        users_presence_release(srv->users, ticket);
        gw_session_reply_error(s, m, RT_E_UNAVAILABLE, "out of memory", 1000);
        return true;
    }
    if (ready)
        return false; /* the sub runs now; its reply finds r */
    r->parked = true;
    /* Requests behind it on this channel (a pub, say) wait as they do behind a
     * sub waiting for NATS (pending.c), so none overtakes its reply. */
    gw_pending_sub_started(s, m->id, m->channel.ptr, m->channel.len);
    r->ticket = ticket;
    r->h.hash = rt_hash_u64(ticket);
    rt_htab_insert(&srv->presence_reqs, &r->h);
    s->presence_waiting++;
    return true;
}

/* The channel's members are known: the parked sub runs. */
void gw_chan_presence_ready(void *arg, uint64_t ticket, bool partial)
{
    (void)partial; /* the reply reads it from the module's view */
    struct gw_server *srv = arg;
    uint64_t h = rt_hash_u64(ticket);
    struct gw_presence_req *r = NULL;
    for (struct rt_hnode *n = rt_htab_chain(&srv->presence_reqs, h); n && !r; n = n->next)
        if (RT_CONTAINER(n, struct gw_presence_req, h)->ticket == ticket)
            r = RT_CONTAINER(n, struct gw_presence_req, h);
    if (!r)
        return;
    struct gw_session *s = gw_conns_get(&srv->conns, r->conn_id);
    rt_htab_remove(&srv->presence_reqs, &r->h);
    r->parked = false;
    if (!s || s->closing) {
        req_free(srv, s, r);
        return;
    }
    s->presence_waiting--;
    struct proto_msg m = {
        .type = PROTO_T_SUB,
        .has_id = true,
        .id = r->id,
        .channel = {r->channel, r->channel_len},
        .epoch = {r->epoch_len ? r->epoch : NULL, r->epoch_len},
        .has_since = r->has_since,
        .since = r->since,
        .presence = true,
    };
    uint64_t serial = r->serial;
    gw_pending_sub_done(s, r->id); /* what waited behind it runs after its reply */
    srv->presence_resuming = s->conn_id;
    gw_session_resume_sub(s, &m); /* its reply frees r */
    srv->presence_resuming = 0;
    /* Refused before its reply (a refresh took the permission away meanwhile, say): r must
     * not wait for a later reply that reuses its id. A sub now waiting for NATS keeps r:
     * its reply (sink_sub_done) comes later and enters the channel then. */
    for (struct gw_presence_req *q = s->presence_reqs; q; q = q->next)
        if (q->serial == serial && !gw_pending_sub_waiting(s, q->id)) {
            req_free(srv, s, q);
            break;
        }
}

/* ---------------------------------------------------------------------- */
/* The reply                                                                */

static void write_member(void *arg, const struct users_member_view *mv)
{
    struct proto_writer *w = arg;
    proto_w_map(w);
    proto_w_kstr(w, "user", mv->user, mv->user_len);
    proto_w_kuint(w, "clients", mv->clients);
    if (mv->info) {
        struct proto_payload p = {PROTO_PAYLOAD_JSON, (const uint8_t *)mv->info, mv->info_len,
                                  true};
        proto_w_payload(w, "info", &p);
    }
    proto_w_end(w);
}

/* "members":[...] or, past the cap, nothing (the caller wrote "counting":true). */
static void write_members(struct users *u, const char *channel, size_t len, struct proto_writer *w)
{
    struct users_presence_view v;
    proto_w_key(w, "members");
    proto_w_array(w);
    users_presence_view(u, channel, len, &v, write_member, w);
    proto_w_end(w);
}

/* "presence":{"count":N,"members":[...]|"counting":true[,"partial":true]} */
static void write_presence(struct gw_server *srv, const char *channel, size_t len,
                           struct proto_writer *w)
{
    struct users_presence_view v;
    users_presence_view(srv->users, channel, len, &v, NULL, NULL);
    proto_w_key(w, "presence");
    proto_w_map(w);
    proto_w_kuint(w, "count", v.count);
    if (v.counting)
        proto_w_kbool(w, "counting", true);
    else
        write_members(srv->users, channel, len, w);
    if (v.partial)
        proto_w_kbool(w, "partial", true);
    proto_w_end(w);
}

void gw_chan_presence_reply(struct gw_session *s, int64_t id, struct proto_writer *w)
{
    struct gw_server *srv = s->srv;
    struct gw_presence_req *r = s->presence_reqs;
    while (r && (r->parked || r->id != id))
        r = r->next;
    if (!r || !srv->users)
        return;
    char channel[PROTO_CHANNEL_MAX + 1];
    size_t len = r->channel_len;
    memcpy(channel, r->channel, len);
    channel[len] = '\0';
    req_free(srv, s, r);
    if (!w)
        return; /* the sub failed: nothing entered */
    /* The others are told now (through their own buffers, not srv->reply); this connection's
     * view starts with the reply. */
    rt_status st = users_presence_enter(srv->users, s->conn_id, channel, len);
    if (st != RT_OK) {
        rt_log(RT_LOG_WARN, "presence_enter_failed", "conn=%s status=%s", s->client_id,
               rt_status_str(st));
        proto_w_key(w, "presence");
        proto_w_map(w);
        proto_w_kbool(w, "unavailable", true);
        proto_w_end(w);
        return;
    }
    write_presence(srv, channel, len, w);
}

void gw_chan_presence_unsub(struct gw_session *s, const struct proto_msg *m)
{
    if (s->srv->users)
        users_presence_leave(s->srv->users, s->conn_id, m->channel.ptr, m->channel.len);
}

void gw_chan_presence_closed(struct gw_session *s)
{
    while (s->presence_reqs)
        req_free(s->srv, s, s->presence_reqs);
    s->presence_waiting = 0;
}

static void free_req_cb(struct rt_hnode *n, void *arg)
{
    (void)arg;
    free(RT_CONTAINER(n, struct gw_presence_req, h));
}

void gw_chan_presence_free(struct gw_server *srv)
{
    rt_htab_each(&srv->presence_reqs, free_req_cb, NULL);
    rt_htab_free(&srv->presence_reqs);
}

/* ---------------------------------------------------------------------- */
/* Events                                                                   */

static const char *event_name(enum users_event_kind k)
{
    static const char *const names[] = {"join", "leave", "count", "sync"};
    return names[k];
}

/* {"type":"presence","channel":C,"event":E,"user":U,"clients":N,"info":{..},"count":N,...} */
static rt_status encode_event(struct gw_server *srv, const struct users_event *ev,
                              enum proto_codec codec, struct proto_buf *b)
{
    struct proto_writer w;
    proto_writer_init(&w, codec, b);
    proto_w_map(&w);
    proto_w_kcstr(&w, "type", "presence");
    proto_w_kstr(&w, "channel", ev->channel, ev->channel_len);
    proto_w_kcstr(&w, "event", event_name(ev->kind));
    if (ev->kind == USERS_EV_JOIN || ev->kind == USERS_EV_LEAVE)
        proto_w_kstr(&w, "user", ev->user, ev->user_len);
    if (ev->kind == USERS_EV_JOIN) {
        proto_w_kuint(&w, "clients", ev->clients);
        if (ev->info) {
            struct proto_payload p = {PROTO_PAYLOAD_JSON, (const uint8_t *)ev->info, ev->info_len,
                                      true};
            proto_w_payload(&w, "info", &p);
        }
    }
    proto_w_kuint(&w, "count", ev->count);
    if (ev->kind == USERS_EV_SYNC)
        write_members(srv->users, ev->channel, ev->channel_len, &w);
    proto_w_end(&w);
    return proto_writer_status(&w);
}

/*
 * The event's frame for codec, built once and shared by every watcher (the
 * outbox holds fan-out messages by reference): an fo_msg whose frames are
 * made here instead of by fo_msg_frame.
 */
static bool event_frame(struct gw_server *srv, const struct users_event *ev, struct fo_msg *msg,
                        enum proto_codec codec)
{
    if (msg->frames[codec].alloc)
        return true;
    struct proto_buf b;
    proto_buf_init(&b, LWS_PRE);
    if (encode_event(srv, ev, codec, &b) != RT_OK) {
        proto_buf_free(&b);
        return false;
    }
    size_t len = 0;
    uint8_t *data = proto_buf_take(&b, &len);
    if (!data)
        return false;
    msg->frames[codec].alloc = data - LWS_PRE;
    msg->frames[codec].len = len;
    return true;
}

/*
 * Queues the event to a watcher. Like a reply, never dropped (a lost event
 * would leave the watcher's view wrong): a connection whose queue holds
 * twice the bound is closed as a slow consumer instead.
 */
static void deliver(struct gw_server *srv, struct gw_session *s, struct fo_msg *msg)
{
    if (s->outbox.bytes > 2 * srv->cfg->max_outbox_bytes) {
        rt_log(RT_LOG_WARN, "slow_consumer_close", "conn=%s outbox_bytes=%zu", s->client_id,
               s->outbox.bytes);
        srv->m.slow_consumer_closes++;
        gw_outbox_clear(&s->outbox, LWS_PRE);
        gw_session_close(s, 1008, "slow_consumer", false, true, 1000);
        return;
    }
    struct fo_msg *m = msg;
    uint8_t *frame = m->frames[s->codec].alloc + LWS_PRE;
    if (gw_outbox_push_msg(&s->outbox, m, frame, m->frames[s->codec].len) != RT_OK) {
        gw_session_close(s, 1011, "internal_error", false, true, 1000);
        return;
    }
    srv->m.transport[s->transport].messages_out++;
    gw_session_want_write(s);
}

void gw_chan_presence_event(void *arg, const struct users_event *ev)
{
    struct gw_server *srv = arg;
    struct fo_msg *msg = calloc(1, sizeof *msg);
    if (!msg)
        return;
    msg->refs = 1;
    msg->headroom = LWS_PRE;
    for (size_t i = 0; i < ev->n_watchers; i++) {
        struct gw_session *s = gw_conns_get(&srv->conns, ev->watchers[i]);
        if (!s || s->closing)
            continue;
        if (!event_frame(srv, ev, msg, (enum proto_codec)s->codec)) {
            gw_session_close(s, 1011, "internal_error", false, true, 1000);
            continue;
        }
        deliver(srv, s, msg);
    }
    fo_msg_release(msg);
}
