/*
 * longpoll.c: the long-polling transport, for clients that cannot read a
 * stream. A poll (GET /poll with the session token) is held until the
 * session has something to say, or for --poll-hold-ms, and answered with
 * what the outbox holds: one batch, the messages as a WebSocket JSON frame
 * carries them (one per line), at most GW_POLL_BATCH_MAX bytes, numbered
 * (Rtgate-Batch). The next poll says which batch it got (`ack`): the batch
 * is kept until then, so one lost on the way (a dropped connection, a load
 * balancer timing out) is answered again, and nothing between polls is
 * lost: it waits in the bounded outbox (the slow-consumer policy applies to
 * a client that stops polling). One poll is held at a time: a newer one
 * takes over and the older gets an empty answer. A session with no poll for
 * --idle-timeout-ms ends. A poll that lands on another node is relayed to
 * this one (relay.c) and held here the same way. Requests come by POST
 * (send.c). Loop thread.
 */
#include "http.h"

#include <libwebsockets.h>
#include <stdlib.h>
#include <string.h>

static bool held(const struct gw_hsession *h)
{
    return h->wsi || h->remote_ticket;
}

/* Answers the held poll with body (taken over), numbered batch. */
static void answer_held(struct gw_hsession *h, unsigned status, uint8_t *body, size_t len,
                        uint64_t batch)
{
    struct gw_server *srv = h->s.srv;
    if (h->wsi) {
        struct lws *wsi = h->wsi;
        h->wsi = NULL;
        gw_http_defer(wsi, lws_wsi_user(wsi), status, body, len, 0, batch);
    } else if (h->remote_ticket) {
        gw_relay_answer(srv, h->remote_ticket, h->remote_reply, status, 0, batch, body, len);
        free(body);
        h->remote_ticket = 0;
    } else {
        free(body);
    }
    h->unheld_since_ms = rt_mono_ms();
}

/* A copy of the retained batch, for its answer. */
static uint8_t *retained_copy(const struct gw_hsession *h)
{
    uint8_t *b = h->retained_len ? malloc(h->retained_len) : NULL;
    if (b)
        memcpy(b, h->retained, h->retained_len);
    return b;
}

/*
 * The next batch: the outbox's first items, up to GW_POLL_BATCH_MAX bytes
 * (at least one), taken off the outbox and kept as the retained batch.
 * False when out of memory.
 */
static bool take_batch(struct gw_hsession *h)
{
    struct gw_outbox *ob = &h->s.outbox;
    uint32_t n = 0;
    size_t bytes = 0;
    while (n < ob->count) {
        const struct gw_outbox_item *it = &ob->items[(ob->head + n) & (ob->cap - 1)];
        if (n && bytes + it->len > GW_POLL_BATCH_MAX)
            break;
        bytes += it->len;
        n++;
    }
    uint8_t *batch = malloc(bytes ? bytes : 1);
    if (!batch)
        return false;
    size_t at = 0;
    for (uint32_t i = 0; i < n; i++) {
        const struct gw_outbox_item *it = &ob->items[(ob->head + i) & (ob->cap - 1)];
        memcpy(batch + at, it->data, it->len);
        at += it->len;
    }
    free(h->retained);
    h->retained = batch;
    h->retained_len = (uint32_t)bytes;
    h->batch++;
    gw_session_sent(&h->s, n, bytes);
    return true;
}

/* The held poll gets the next batch, if the outbox has one. */
static void answer_if_any(struct gw_hsession *h)
{
    if (!held(h) || !h->s.outbox.count)
        return;
    if (!take_batch(h)) {
        gw_session_cut(&h->s);
        return;
    }
    answer_held(h, 200, retained_copy(h), h->retained_len, h->batch);
    if (h->s.closing && !h->s.outbox.count)
        gw_hsession_done(h); /* the last words went out */
}

static void poll_flush(struct gw_session *s)
{
    answer_if_any(gw_hsession_of(s));
}

static void poll_close(struct gw_session *s)
{
    struct gw_hsession *h = gw_hsession_of(s);
    if (held(h) && !s->outbox.count) {
        answer_held(h, 200, NULL, 0, h->batch);
        gw_hsession_done(h);
        return;
    }
    answer_if_any(h); /* else the next poll gets the disconnect; the sweep's grace bounds it */
}

static void poll_cut(struct gw_session *s)
{
    gw_hsession_done(gw_hsession_of(s));
}

static void poll_heartbeat(struct gw_session *s, uint64_t now)
{
    struct gw_hsession *h = gw_hsession_of(s);
    if (held(h)) {
        if (now >= h->hold_until_ms)
            answer_held(h, 200, NULL, 0, h->batch); /* nothing within the hold: empty */
    } else if (now - h->unheld_since_ms >= s->srv->cfg->idle_timeout_ms) {
        gw_session_idle_cut(s, now - h->unheld_since_ms);
    }
}

const struct gw_transport gw_poll_transport = {
    .name = "longpoll",
    .flush = poll_flush,
    .want_write = poll_flush,
    .close = poll_close,
    .cut = poll_cut,
    .heartbeat = poll_heartbeat,
    .describe = gw_sesstoken_describe,
};

/*
 * A new poll, acking batch `ack`: what the client has. The batch after it
 * again if that one was lost; 409 for a number that was never answered.
 * Returns false when the ack is refused (the caller answers 409).
 */
static bool take_ack(struct gw_hsession *h, uint64_t ack, bool *resend)
{
    *resend = false;
    if (ack == h->batch) {
        free(h->retained);
        h->retained = NULL;
        h->retained_len = 0;
        return true;
    }
    if (ack + 1 == h->batch && h->retained) {
        *resend = true;
        return true;
    }
    return false;
}

/* Holds a poll: the one held before is answered empty (one poll at a time). */
static void hold(struct gw_hsession *h)
{
    if (held(h))
        answer_held(h, 200, NULL, 0, h->batch);
    h->hold_until_ms = rt_mono_ms() + h->s.srv->cfg->poll_hold_ms;
}

/*
 * A batch sent again costs its session a token of its message bucket
 * (--msg-rate): a client's poll is a few hundred bytes, the batch up to
 * 64 KiB, and a client that lost an answer asks once, not in a loop.
 */
static bool resend_allowed(struct gw_hsession *h, uint32_t *retry_after_ms)
{
    return gw_session_take_token(&h->s, retry_after_ms);
}

int gw_poll_local(struct gw_hsession *h, struct lws *wsi, struct gw_http_req *r, uint64_t ack)
{
    bool resend;
    uint32_t retry = 0;
    if (!take_ack(h, ack, &resend))
        return gw_http_error(wsi, r, 409, "ack names no batch of this session", 0);
    if (resend && !resend_allowed(h, &retry))
        return gw_http_error(wsi, r, 429, "message rate exceeded", retry);
    hold(h);
    if (resend) {
        gw_http_defer(wsi, r, 200, retained_copy(h), h->retained_len, 0, h->batch);
        return 0;
    }
    h->wsi = wsi;
    r->conn_id = h->s.conn_id;
    gw_http_wait(wsi);
    answer_if_any(h);
    return 0;
}

int gw_poll_first(struct gw_hsession *h, struct lws *wsi, struct gw_http_req *r)
{
    h->wsi = wsi;
    r->conn_id = h->s.conn_id;
    gw_http_wait(wsi);
    h->hold_until_ms = rt_mono_ms() + h->s.srv->cfg->poll_hold_ms;
    answer_if_any(h); /* the connect's reply is there: batch 1 at once */
    return 0;
}

void gw_poll_remote(struct gw_hsession *h, uint64_t ack, uint64_t ticket, const char *reply)
{
    struct gw_server *srv = h->s.srv;
    bool resend;
    uint32_t retry = 0;
    if (!take_ack(h, ack, &resend)) {
        gw_relay_answer(srv, ticket, reply, 409, 0, 0, NULL, 0);
        return;
    }
    if (resend && !resend_allowed(h, &retry)) {
        gw_relay_answer(srv, ticket, reply, 429, retry, 0, NULL, 0);
        return;
    }
    hold(h);
    if (resend) {
        gw_relay_answer(srv, ticket, reply, 200, 0, h->batch, h->retained, h->retained_len);
        return;
    }
    h->remote_ticket = ticket;
    snprintf(h->remote_reply, sizeof h->remote_reply, "%s", reply);
    answer_if_any(h);
}

void gw_poll_closed(struct gw_hsession *h, struct lws *wsi)
{
    if (h->wsi == wsi) {
        h->wsi = NULL;
        h->unheld_since_ms = rt_mono_ms();
    }
}

void gw_poll_release(struct gw_hsession *h)
{
    if (held(h))
        answer_held(h, 404, NULL, 0, h->batch);
}
