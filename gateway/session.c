/*
 * session.c: one client session's life, whatever carries it: connect first,
 * then sub, unsub, pub, ack, ping; replies and deliveries through the
 * bounded outbox; limits, abuse and closes. The transports (ws.c, ...) feed
 * it frames of requests and drain its outbox through their ops table
 * (gw.h, struct gw_transport); nothing here knows how bytes travel.
 * Everything runs on the loop thread.
 */
#include "api.h"
#include "gw.h"

#include <stdlib.h>
#include <string.h>

#define CLOSE_GRACE_MS 5000 /* a closing connection that does not drain is cut */

static const struct gw_config *cfg_of(const struct gw_session *s)
{
    return s->srv->cfg;
}

/* The counters of the session's transport. */
static struct gw_transport_metrics *tm_of(const struct gw_session *s)
{
    return &s->srv->m.transport[s->transport];
}

const struct gw_transport *const gw_transports[GW_TRANSPORT_N] = {
    [GW_TRANSPORT_WS] = &gw_ws_transport,
    [GW_TRANSPORT_SSE] = &gw_sse_transport,
    [GW_TRANSPORT_POLL] = &gw_poll_transport,
};

/*
 * Output is normally written by the server's flush at the end of the loop
 * iteration (gw_session_flush), batched; closes go to the transport at once.
 */
void gw_session_want_write(struct gw_session *s)
{
    const struct gw_transport *tp = gw_transport_of(s);
    if (s->closing) {
        tp->want_write(s);
    } else if (s->held && s->reply_queued) {
        /* Held by the flush window, but a reply does not wait: back on the
         * flush list (the stale held entry is skipped). */
        s->held = false;
        if (!gw_server_mark_dirty(s->srv, s->conn_id))
            tp->want_write(s);
    } else if (!s->dirty) {
        s->dirty = true;
        if (!gw_server_mark_dirty(s->srv, s->conn_id)) {
            s->dirty = false;
            tp->want_write(s);
        }
    }
}

/* Queues whatever srv->reply holds to the session, unbounded by the outbox
 * limit: replies answer rate-limited requests, so they are bounded by them. */
static void queue_reply(struct gw_session *s)
{
    struct gw_server *srv = s->srv;
    if (!srv->reply.len)
        return;
    if (s->outbox.bytes > 2 * srv->cfg->max_outbox_bytes && !s->closing) {
        /* It sends but never reads: not even its replies fit any more. */
        rt_log(RT_LOG_WARN, "slow_consumer_close", "conn=%s peer=%s outbox_bytes=%zu", s->client_id,
               s->peer, s->outbox.bytes);
        srv->m.slow_consumer_closes++;
        gw_outbox_clear(&s->outbox, GW_FRAME_HEADROOM);
        proto_buf_reset(&srv->reply);
        gw_session_close(s, 1008, "slow_consumer", false, true, 1000);
        return;
    }
    if (gw_outbox_push_bytes(&s->outbox, srv->reply.data, srv->reply.len, GW_FRAME_HEADROOM) !=
        RT_OK) {
        rt_log(RT_LOG_ERROR, "outbox_nomem", "conn=%s peer=%s", s->client_id, s->peer);
        gw_session_close(s, 1011, "internal_error", false, true, 1000);
    }
    tm_of(s)->messages_out++;
    proto_buf_reset(&srv->reply);
    /* Replies answer the client's own requests: the flush window, meant for
     * streams of deliveries, does not delay them (nor what is queued before). */
    s->reply_queued = true;
    gw_session_want_write(s);
}

/* A refused message counts toward the abuse limit; past it the connection
 * is closed with 1008 (PROTOCOL.md section 5). */
static void note_refusal(struct gw_session *s)
{
    const struct gw_config *cfg = cfg_of(s);
    uint64_t now = rt_mono_ms();
    if (now - s->abuse_window_start > cfg->abuse_window_ms) {
        s->abuse_window_start = now;
        s->abuse_count = 0;
    }
    if (++s->abuse_count > cfg->abuse_limit && !s->closing) {
        rt_log(RT_LOG_WARN, "abuse_close", "conn=%s peer=%s refused=%u window_ms=%u", s->client_id,
               s->peer, s->abuse_count, cfg->abuse_window_ms);
        s->srv->m.closes_1008++;
        gw_session_close(s, 1008, "policy_violation", true, true, cfg->abuse_block_ms);
    }
}

void gw_session_reply_error(struct gw_session *s, const struct proto_msg *m, int code,
                            const char *message, uint32_t retry_after_ms)
{
    struct gw_server *srv = s->srv;
    int idx = rt_error_index(code);
    if (idx >= 0)
        srv->m.errors[idx]++;
    if (proto_encode_error(&srv->reply, (enum proto_codec)s->codec, m && m->has_id, m ? m->id : 0,
                           code, message, retry_after_ms) == RT_OK)
        queue_reply(s);
    if (code != RT_E_UNAVAILABLE)
        note_refusal(s);
}

/* Starts a reply {"type":"reply","id":..,"ok":true, ...}: the caller adds
 * fields, then finish_reply closes and queues it. */
void gw_session_begin_reply(struct gw_session *s, struct proto_writer *w, int64_t id)
{
    proto_writer_init(w, (enum proto_codec)s->codec, &s->srv->reply);
    proto_w_map(w);
    proto_w_kcstr(w, "type", "reply");
    proto_w_kint(w, "id", id);
    proto_w_kbool(w, "ok", true);
}

void gw_session_finish_reply(struct gw_session *s, struct proto_writer *w)
{
    proto_w_end(w);
    if (proto_writer_status(w) == RT_OK)
        queue_reply(s);
    else
        proto_buf_reset(&s->srv->reply);
}

static void on_connect(struct gw_session *s, const struct proto_msg *m)
{
    struct gw_server *srv = s->srv;
    const struct gw_config *cfg = cfg_of(s);
    if (s->state == GW_S_READY) {
        gw_session_reply_error(s, m, RT_E_CONFLICT, "already connected", 0);
        return;
    }
    if (!gw_authz_connect(s, m) || !gw_users_connect(s, m))
        return;
    if (fo_client_create(srv->fo, s->conn_id, &s->fo) != RT_OK) {
        gw_session_reply_error(s, m, RT_E_UNAVAILABLE, "out of memory", 1000);
        return;
    }
    s->state = GW_S_READY;
    struct proto_writer w;
    proto_writer_init(&w, (enum proto_codec)s->codec, &srv->reply);
    proto_w_map(&w);
    proto_w_kcstr(&w, "type", "connected");
    proto_w_kint(&w, "id", m->id);
    proto_w_kcstr(&w, "client", s->client_id);
    proto_w_kcstr(&w, "user", gw_session_user(s));
    proto_w_kcstr(&w, "node", cfg->node_id);
    proto_w_kuint(&w, "heartbeat_ms", cfg->ping_interval_ms);
    proto_w_key(&w, "limits");
    proto_w_map(&w);
    proto_w_kuint(&w, "pub_rate", cfg->pub_bucket.rate);
    proto_w_kuint(&w, "pub_burst", cfg->pub_bucket.burst);
    proto_w_kuint(&w, "max_message_bytes", cfg->max_message_bytes);
    proto_w_kuint(&w, "max_subs", cfg->max_subs);
    proto_w_kuint(&w, "max_unacked", cfg->max_unacked);
    gw_users_write_limits(s, &w);
    proto_w_end(&w);
    gw_authz_write_expiry(s, &w);
    if (gw_transport_of(s)->describe)
        gw_transport_of(s)->describe(s, &w);
    gw_session_finish_reply(s, &w);
    rt_log(RT_LOG_DEBUG, "session_connected", "conn=%s peer=%s", s->client_id, s->peer);
}

/* An error answer to request `id`, given by its id alone (the request may be gone). */
static void reply_error_to(struct gw_session *s, int64_t id, int error, const char *message,
                           uint32_t retry_after_ms)
{
    struct proto_msg m = {.has_id = true, .id = id};
    gw_session_reply_error(s, &m, error, message, retry_after_ms);
}

/* The answer to a sub, now (on_sub) or once it stopped waiting for NATS (sink_sub_done). */
static void reply_sub(struct gw_session *s, int64_t id, const struct fo_sub_result *res)
{
    if (res->error) {
        gw_chan_presence_reply(s, id, NULL);
        reply_error_to(s, id, res->error, res->error_message, res->retry_after_ms);
        return;
    }
    struct proto_writer w;
    gw_session_begin_reply(s, &w, id);
    proto_w_kbool(&w, "durable", res->durable);
    if (res->durable) {
        proto_w_kuint(&w, "seq", res->seq);
        proto_w_kcstr(&w, "epoch", res->epoch);
    }
    if (res->has_recovered)
        proto_w_kbool(&w, "recovered", res->recovered);
    gw_chan_presence_reply(s, id, &w); /* "presence", and the connection enters the channel */
    gw_session_finish_reply(s, &w);
}

static void on_sub(struct gw_session *s, const struct proto_msg *m)
{
    if (!gw_authz_may_sub(s, m) || gw_chan_presence_sub(s, m))
        return; /* refused, or waiting for the channel's members (chan_presence.c) */
    struct fo_sub_req req = {
        .channel = m->channel.ptr,
        .channel_len = m->channel.len,
        .has_since = m->has_since,
        .since = m->since,
        .epoch = m->epoch.ptr,
        .epoch_len = m->epoch.len,
        .req_id = m->id,
    };
    struct fo_sub_result res;
    rt_status st = fo_subscribe(s->fo, &req, &res);
    if (st == RT_AGAIN) {
        /* Answered by sink_sub_done; requests on this channel wait (pending.c). */
        gw_pending_sub_started(s, m->id, m->channel.ptr, m->channel.len);
        return;
    }
    if (st != RT_OK)
        res = (struct fo_sub_result){
            .error = RT_E_UNAVAILABLE, .error_message = "subscribe failed", .retry_after_ms = 1000};
    reply_sub(s, m->id, &res);
    /* Replay (when recovered) goes out after the reply. */
    if (!res.error)
        fo_client_pump(s->fo);
}

void gw_session_resume_sub(struct gw_session *s, const struct proto_msg *m)
{
    on_sub(s, m);
}

static void on_unsub(struct gw_session *s, const struct proto_msg *m)
{
    if (fo_unsubscribe(s->fo, m->channel.ptr, m->channel.len) != RT_OK) {
        gw_session_reply_error(s, m, RT_E_NOT_FOUND, "not subscribed to this channel", 0);
        return;
    }
    gw_chan_presence_unsub(s, m);
    struct proto_writer w;
    gw_session_begin_reply(s, &w, m->id);
    gw_session_finish_reply(s, &w);
}

static void reply_pub(struct gw_session *s, int64_t id, const struct fo_pub_result *res)
{
    if (res->error) {
        reply_error_to(s, id, res->error, res->error_message, res->retry_after_ms);
        return;
    }
    struct proto_writer w;
    gw_session_begin_reply(s, &w, id);
    if (res->durable)
        proto_w_kuint(&w, "seq", res->seq);
    proto_w_kbool(&w, "dup", res->dup);
    gw_session_finish_reply(s, &w);
}

static void on_pub(struct gw_session *s, const struct proto_msg *m)
{
    const struct gw_config *cfg = cfg_of(s);
    uint32_t retry = 0;
    if (!gw_authz_may_pub(s, m))
        return;
    if (!rt_bucket_take(&s->pub_bucket, &cfg->pub_bucket, rt_mono_ms(), &retry)) {
        gw_session_reply_error(s, m, RT_E_RATE_LIMITED, "publish rate exceeded", retry);
        return;
    }
    if (!gw_users_may_pub(s, m))
        return; /* over the user's rate, all its connections together (users.c) */
    struct fo_pub_req req = {
        .channel = m->channel.ptr,
        .channel_len = m->channel.len,
        .msg_id = m->msg_id.ptr,
        .msg_id_len = m->msg_id.len,
        .payload = m->data,
        .conn_id = s->conn_id,
        .req_id = m->id,
        .user = gw_session_user(s),
        .client = s->client_id,
    };
    struct fo_pub_result res;
    uint64_t start_us = gw_now_us();
    rt_status st = fo_publish(s->srv->fo, &req, &res);
    if (st == RT_AGAIN) {
        gw_pubtimes_start(s->srv->pubtimes, s->conn_id, m->id, start_us);
        return; /* answered by pub_done */
    }
    gw_pubtimes_observe(&s->srv->m, start_us, gw_now_us());
    if (st != RT_OK) {
        res = (struct fo_pub_result){
            .error = RT_E_UNAVAILABLE, .retry_after_ms = 1000, .error_message = "publish failed"};
    }
    reply_pub(s, m->id, &res);
}

static void on_ping(struct gw_session *s)
{
    if (proto_encode_pong(&s->srv->reply, (enum proto_codec)s->codec) == RT_OK)
        queue_reply(s);
}

/*
 * Runs a request of a connected session (or answers 401 / connect): from
 * handle_msg, or later from pending.c for one that waited behind a sub.
 */
void gw_session_dispatch(struct gw_session *s, const struct proto_msg *m)
{
    switch (m->type) {
    case PROTO_T_CONNECT:
        on_connect(s, m);
        break;
    case PROTO_T_SUB:
        on_sub(s, m);
        break;
    case PROTO_T_UNSUB:
        on_unsub(s, m);
        break;
    case PROTO_T_PUB:
        on_pub(s, m);
        break;
    case PROTO_T_ACK:
        fo_ack(s->fo, m->channel.ptr, m->channel.len, m->seq);
        break;
    case PROTO_T_GEO_SET:
    case PROTO_T_GEO_CLEAR:
    case PROTO_T_GEO_NEAR:
    case PROTO_T_GEO_WATCH:
    case PROTO_T_GEO_UNWATCH:
        gw_presence_handle(s, m);
        break;
    case PROTO_T_REFRESH:
        gw_authz_refresh(s, m);
        break;
    default:
        gw_session_reply_error(s, m, RT_E_BAD_REQUEST, "unknown type", 0);
        break;
    }
}

/* One decoded message, in order. */
static void handle_msg(struct gw_session *s, const struct proto_msg *m)
{
    const struct gw_config *cfg = cfg_of(s);
    uint32_t retry = 0;
    tm_of(s)->messages_in++;
    if (!rt_bucket_take(&s->msg_bucket, &cfg->msg_bucket, rt_mono_ms(), &retry)) {
        gw_session_reply_error(s, m, RT_E_RATE_LIMITED, "message rate exceeded", retry);
        return;
    }
    if (m->error) {
        gw_session_reply_error(s, m, m->error, m->error_message, 0);
        return;
    }
    if (m->type == PROTO_T_PING) {
        on_ping(s);
        return;
    }
    if (s->state != GW_S_READY && m->type != PROTO_T_CONNECT) {
        if (m->type != PROTO_T_ACK)
            gw_session_reply_error(s, m, RT_E_UNAUTHORIZED, "send connect first", 0);
        return;
    }
    if (gw_pending_defer(s, m))
        return; /* behind this connection's sub of the same channel (pending.c) */
    gw_session_dispatch(s, m);
}

void gw_session_request(struct gw_session *s, const struct proto_msg *m)
{
    handle_msg(s, m);
}

bool gw_session_may_send(struct gw_session *s, uint32_t *retry_after_ms)
{
    if (!rt_bucket_take(&s->msg_bucket, &cfg_of(s)->msg_bucket, rt_mono_ms(), retry_after_ms))
        return false;
    s->msg_bucket.milli += 1000; /* only looked: each message takes its own token */
    return true;
}

bool gw_session_take_token(struct gw_session *s, uint32_t *retry_after_ms)
{
    return rt_bucket_take(&s->msg_bucket, &cfg_of(s)->msg_bucket, rt_mono_ms(), retry_after_ms);
}

void gw_session_frame(struct gw_session *s, const uint8_t *frame, size_t len)
{
    struct proto_msg *msgs;
    size_t n = 0;
    tm_of(s)->bytes_in += len;
    rt_status st = proto_decode(s->srv->dec, (enum proto_codec)s->codec, frame, len, &msgs, &n);
    if (st != RT_OK) {
        gw_session_reply_error(s, NULL, st == RT_TOO_BIG ? RT_E_TOO_LARGE : RT_E_BAD_REQUEST,
                               "frame could not be decoded", 0);
        return;
    }
    for (size_t i = 0; i < n && !s->closing; i++)
        handle_msg(s, &msgs[i]);
}

void gw_session_sent(struct gw_session *s, uint32_t n, size_t bytes)
{
    struct gw_server *srv = s->srv;
    tm_of(s)->bytes_out += bytes;
    gw_metrics_delivered(&srv->m, &s->outbox, n,
                         srv->flush_wall_ms ? srv->flush_wall_ms : rt_wall_ms());
    if (srv->window_us)
        s->last_write_us = gw_now_us();
    gw_outbox_pop(&s->outbox, n, GW_FRAME_HEADROOM);
    if (!s->outbox.count)
        s->reply_queued = false;
    if (s->fo_stalled && s->outbox.bytes < cfg_of(s)->max_outbox_bytes / 2 && !s->closing) {
        s->fo_stalled = false;
        fo_client_pump(s->fo);
    }
}

void gw_session_flush(struct gw_session *s)
{
    if (s->pending)
        gw_pending_run(s); /* requests that waited behind a sub answered meanwhile */
    s->dirty = false;
    s->held = false;
    gw_transport_of(s)->flush(s);
}

void gw_session_close(struct gw_session *s, uint16_t code, const char *reason, bool tell,
                      bool reconnect, uint32_t after_ms)
{
    if (s->closing)
        return;
    s->closing = true;
    s->close_code = code;
    s->close_reason = reason;
    rt_log(RT_LOG_INFO, "session_closing", "conn=%s peer=%s code=%u reason=%s", s->client_id,
           s->peer, code, reason);
    if (tell && proto_encode_disconnect(&s->srv->reply, (enum proto_codec)s->codec, code, reason,
                                        reconnect, after_ms) == RT_OK)
        queue_reply(s);
    s->closing_since_ms = rt_mono_ms();
    gw_transport_of(s)->close(s);
}

int gw_session_open(struct gw_server *srv, struct gw_session *s, enum gw_transport_kind transport,
                    enum proto_codec codec, const char *peer)
{
    s->srv = srv;
    s->transport = (uint8_t)transport;
    snprintf(s->peer, sizeof s->peer, "%s", peer);
    s->codec = (uint8_t)codec;
    s->conn_id = gw_conns_add(&srv->conns, s);
    if (!s->conn_id)
        return -1;
    uint64_t now = rt_mono_ms();
    rt_bucket_init(&s->pub_bucket, &srv->cfg->pub_bucket, now);
    rt_bucket_init(&s->msg_bucket, &srv->cfg->msg_bucket, now);
    rt_bucket_init(&s->geo_bucket, &srv->cfg->geo_bucket, now);
    s->abuse_window_start = now;
    snprintf(s->client_id, sizeof s->client_id, "%s%llx", srv->client_prefix,
             (unsigned long long)++srv->client_seq);
    srv->m.connections++;
    tm_of(s)->connections++;
    tm_of(s)->connections_total++;
    s->opened_ms = s->last_rx_ms = now;
    if (srv->draining)
        gw_session_close(s, 1001, "draining", true, true, srv->cfg->drain_ms);
    return 0;
}

void gw_session_cut(struct gw_session *s)
{
    gw_transport_of(s)->cut(s);
}

void gw_session_idle_cut(struct gw_session *s, uint64_t silent_ms)
{
    s->srv->m.closes_idle++;
    s->closing = true;
    rt_log(RT_LOG_INFO, "session_idle_cut", "conn=%s peer=%s silent_ms=%llu", s->client_id, s->peer,
           (unsigned long long)silent_ms);
    gw_session_cut(s);
}

void gw_session_sweep(struct gw_session *s, uint64_t now)
{
    const struct gw_config *cfg = cfg_of(s);
    if (s->closing) {
        /* A peer that does not read cannot be closed politely: cut it. Not
         * with lws_set_timeout(seconds), an O(connections) sorted insert. */
        if (now - s->closing_since_ms >= CLOSE_GRACE_MS)
            gw_session_cut(s);
        return;
    }
    if (gw_authz_sweep(s, now))
        return; /* the token expired: closing with 4001 */
    if (s->state != GW_S_READY && now - s->opened_ms >= cfg->connect_timeout_ms) {
        s->srv->m.closes_4001++;
        gw_session_close(s, 4001, "connect_timeout", true, true, 0);
    } else {
        gw_transport_of(s)->heartbeat(s, now);
    }
}

void gw_session_closed(struct gw_session *s)
{
    struct gw_server *srv = s->srv;
    if (!srv || !s->conn_id)
        return;
    gw_metrics_closed(&srv->m, s);
    gw_users_closed(s);
    gw_presence_closed(s);
    gw_authz_closed(s);
    fo_client_destroy(s->fo);
    s->fo = NULL;
    gw_pending_free(s);
    gw_outbox_clear(&s->outbox, GW_FRAME_HEADROOM);
    gw_conns_remove(&srv->conns, s->conn_id);
    s->conn_id = 0;
    srv->m.connections--;
    tm_of(s)->connections--;
    rt_log(RT_LOG_DEBUG, "session_closed", "conn=%s peer=%s", s->client_id, s->peer);
}

/* ---- fan-out sink ---------------------------------------------------- */

static struct gw_session *sink_session(struct gw_server *srv, uint64_t conn_id)
{
    struct gw_session *s = gw_conns_get(&srv->conns, conn_id);
    return s && !s->closing ? s : NULL;
}

static rt_status sink_deliver(void *ctx, uint64_t conn_id, struct fo_msg *msg)
{
    struct gw_server *srv = ctx;
    struct gw_session *s = sink_session(srv, conn_id);
    if (!s)
        return RT_AGAIN;
    uint8_t *frame;
    size_t len;
    if (fo_msg_frame(msg, (enum proto_codec)s->codec, &frame, &len) != RT_OK)
        return RT_OK; /* cannot be expressed for this client: skipped, not stalled */
    if (s->outbox.bytes + len > srv->cfg->max_outbox_bytes) {
        s->fo_stalled = true;
        return RT_AGAIN;
    }
    if (gw_outbox_push_msg(&s->outbox, msg, frame, len) != RT_OK) {
        s->fo_stalled = true;
        return RT_AGAIN;
    }
    tm_of(s)->messages_out++;
    gw_session_want_write(s);
    return RT_OK;
}

static rt_status sink_gap(void *ctx, uint64_t conn_id, const char *channel, uint64_t from,
                          uint64_t to)
{
    struct gw_server *srv = ctx;
    struct gw_session *s = sink_session(srv, conn_id);
    if (!s)
        return RT_AGAIN;
    if (s->outbox.bytes > srv->cfg->max_outbox_bytes) {
        s->fo_stalled = true;
        return RT_AGAIN;
    }
    if (proto_encode_gap(&srv->reply, (enum proto_codec)s->codec, channel, from, to) != RT_OK)
        return RT_NOMEM;
    queue_reply(s);
    return RT_OK;
}

static void sink_pub_done(void *ctx, uint64_t conn_id, int64_t req_id,
                          const struct fo_pub_result *res)
{
    gw_pubtimes_done(ctx, conn_id, req_id);
    if (gw_api_is_request(conn_id)) {
        gw_api_pub_done(ctx, conn_id, req_id, res); /* a publish of the server API */
        return;
    }
    struct gw_session *s = sink_session(ctx, conn_id);
    if (s)
        reply_pub(s, req_id, res);
}

/* A sub that waited for NATS is answered; the fan-out pumps its replay right after. */
static void sink_sub_done(void *ctx, uint64_t conn_id, int64_t req_id,
                          const struct fo_sub_result *res)
{
    struct gw_session *s = sink_session(ctx, conn_id);
    if (!s)
        return;
    reply_sub(s, req_id, res);
    gw_pending_sub_done(s, req_id);
    gw_session_want_write(s); /* the flush runs what waited behind it */
}

struct fo_sink gw_session_sink(struct gw_server *srv)
{
    return (struct fo_sink){
        .ctx = srv,
        .deliver = sink_deliver,
        .gap = sink_gap,
        .pub_done = sink_pub_done,
        .sub_done = sink_sub_done,
    };
}
