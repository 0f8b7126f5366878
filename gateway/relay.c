/*
 * relay.c: a POST or a poll that lands on a node other than the one holding
 * its session, carried there over NATS (the nats engine's bus, fanout.h),
 * so that a load balancer needs no sticky sessions. Each process listens on
 *   rtgate.sess.<node key>   requests for its sessions
 *   rtgate.sessr.<node key>  the answers to the requests it relayed
 * (the node key is the random one its session tokens carry). The node a
 * request lands on has checked its token; the holder checks it again (the
 * bus is not trusted either) and answers: a POST at once (its requests are
 * handled there, their replies go out on the session's stream or poll), a
 * poll when it is answered there (held like a local one). The answer comes
 * back on the reply subject, and the waiting HTTP request gets it. A request
 * not answered in time (the holder died, NATS is down) gets 503 with
 * Retry-After; a client's stream reconnect then opens a new session where it
 * lands. At most RELAY_WAITING_MAX requests wait at once (503 past it).
 *
 * Wire (little-endian), request:
 *   u8 version 1 | u8 kind (1 POST, 2 poll, 3 POST close=1) | u64 ticket | u64 seq or ack |
 *   u8 token length | token | u32 body length | body
 * answer:
 *   u8 version 1 | u64 ticket | u16 status | u32 retry_after_ms | u64 batch |
 *   u32 body length | body
 * Loop thread.
 */
#include "http.h"

#include <libwebsockets.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RELAY_VERSION      1
#define RELAY_KIND_SEND    1
#define RELAY_KIND_POLL    2
#define RELAY_KIND_END     3 /* a POST with close=1 */
#define RELAY_WAITING_MAX  65536
#define RELAY_SEND_WAIT_MS 3000 /* a POST's answer; a poll's is its hold time plus this */
#define SUBJ_REQUEST       "rtgate.sess."
#define SUBJ_ANSWER        "rtgate.sessr."
#define SUBJ_PREFIX        "rtgate.sess" /* both */

/* An HTTP request here waiting for the answer of the node holding its session. */
struct relay_wait {
    struct rt_hnode h; /* hash: the ticket */
    uint64_t ticket;
    struct lws *wsi;
    uint64_t deadline_ms;
};

struct gw_relay {
    struct rt_htab waiting;
    uint64_t next_ticket;
    void *sub_requests, *sub_answers; /* bus subscriptions */
    char answer_subject[64];
    /* metrics */
    uint64_t forwarded, timed_out;
};

/* ---- wire -------------------------------------------------------------------- */

struct wire {
    uint8_t *p;
    size_t len, cap;
    bool failed;
};

static void put(struct wire *w, const void *src, size_t n)
{
    if (w->failed || n > w->cap - w->len) {
        w->failed = true;
        return;
    }
    if (!n)
        return; /* (src may be NULL: a POST without a body, an empty answer) */
    memcpy(w->p + w->len, src, n);
    w->len += n;
}

static void put_le(struct wire *w, uint64_t v, int bytes)
{
    uint8_t b[8];
    for (int i = 0; i < bytes; i++)
        b[i] = (uint8_t)(v >> (8 * i));
    put(w, b, (size_t)bytes);
}

struct reader {
    const uint8_t *p;
    size_t len, at;
    bool failed;
};

static uint64_t get_le(struct reader *r, int bytes)
{
    uint64_t v = 0;
    if (r->failed || r->len - r->at < (size_t)bytes) {
        r->failed = true;
        return 0;
    }
    for (int i = 0; i < bytes; i++)
        v |= (uint64_t)r->p[r->at++] << (8 * i);
    return v;
}

static const uint8_t *get_bytes(struct reader *r, size_t n)
{
    if (r->failed || r->len - r->at < n) {
        r->failed = true;
        return NULL;
    }
    r->at += n;
    return r->p + r->at - n;
}

static void hex(const uint8_t *key, char out[2 * GW_NODE_KEY_BYTES + 1])
{
    for (int i = 0; i < GW_NODE_KEY_BYTES; i++)
        snprintf(out + 2 * i, 3, "%02x", key[i]);
}

/* ---- the requester's side ------------------------------------------------------ */

static struct relay_wait *find_wait(struct gw_relay *rl, uint64_t ticket)
{
    uint64_t hash = rt_hash_u64(ticket);
    for (struct rt_hnode *n = rt_htab_chain(&rl->waiting, hash); n; n = n->next)
        if (n->hash == hash && RT_CONTAINER(n, struct relay_wait, h)->ticket == ticket)
            return RT_CONTAINER(n, struct relay_wait, h);
    return NULL;
}

bool gw_relay_ready(const struct gw_server *srv)
{
    return srv->relay != NULL;
}

rt_status gw_relay_forward(struct gw_server *srv, struct lws *wsi, struct gw_http_req *r,
                           const struct gw_sesstoken *t, const uint8_t *body, size_t len)
{
    struct gw_relay *rl = srv->relay;
    if (!rl)
        return RT_INVAL; /* no bus: nothing reaches another node */
    if (rt_htab_count(&rl->waiting) >= RELAY_WAITING_MAX) {
        gw_http_defer(wsi, r, 503, NULL, 0, 1000, 0);
        return RT_OK;
    }
    struct relay_wait *w = calloc(1, sizeof *w);
    size_t tlen = strlen(r->token), cap = 32 + tlen + len;
    uint8_t *buf = malloc(cap);
    if (!w || !buf || rt_htab_reserve(&rl->waiting) != RT_OK) {
        free(w);
        free(buf);
        gw_http_defer(wsi, r, 503, NULL, 0, 1000, 0);
        return RT_OK;
    }
    struct wire out = {.p = buf, .cap = cap};
    uint8_t head[2] = {RELAY_VERSION, r->kind == GW_HTTP_POLL ? RELAY_KIND_POLL
                                      : r->end                ? RELAY_KIND_END
                                                              : RELAY_KIND_SEND};
    w->ticket = ++rl->next_ticket;
    put(&out, head, 2);
    put_le(&out, w->ticket, 8);
    put_le(&out, r->seq, 8);
    put_le(&out, tlen, 1);
    put(&out, r->token, tlen);
    put_le(&out, len, 4);
    put(&out, body, len);
    char subject[64], node[2 * GW_NODE_KEY_BYTES + 1];
    hex(t->node, node);
    snprintf(subject, sizeof subject, SUBJ_REQUEST "%s", node);
    rt_status st =
        out.failed ? RT_NOMEM : fo_bus_publish(srv->fo, subject, rl->answer_subject, buf, out.len);
    free(buf);
    if (st != RT_OK) {
        free(w);
        gw_http_defer(wsi, r, 503, NULL, 0, 1000, 0);
        return RT_OK;
    }
    w->wsi = wsi;
    w->h.hash = rt_hash_u64(w->ticket);
    w->deadline_ms =
        rt_mono_ms() + RELAY_SEND_WAIT_MS + (r->kind == GW_HTTP_POLL ? srv->cfg->poll_hold_ms : 0);
    rt_htab_insert(&rl->waiting, &w->h);
    r->ticket = w->ticket;
    gw_http_wait(wsi);
    rl->forwarded++;
    return RT_OK;
}

void gw_relay_forget(struct gw_server *srv, uint64_t ticket)
{
    struct gw_relay *rl = srv->relay;
    struct relay_wait *w = rl ? find_wait(rl, ticket) : NULL;
    if (!w)
        return;
    rt_htab_remove(&rl->waiting, &w->h);
    free(w);
}

/* The holder's answer to one of ours: the waiting request answers its client. */
static void on_answer(struct gw_server *srv, const uint8_t *data, size_t len)
{
    struct reader in = {.p = data, .len = len};
    if (get_le(&in, 1) != RELAY_VERSION)
        return;
    uint64_t ticket = get_le(&in, 8);
    unsigned status = (unsigned)get_le(&in, 2);
    uint32_t retry = (uint32_t)get_le(&in, 4);
    uint64_t batch = get_le(&in, 8);
    size_t blen = (size_t)get_le(&in, 4);
    const uint8_t *body = get_bytes(&in, blen);
    struct relay_wait *w = in.failed || in.at != len ? NULL : find_wait(srv->relay, ticket);
    if (!w || status < 200 || status > 599)
        return; /* late (timed out, or its client left), or not ours */
    struct lws *wsi = w->wsi;
    struct gw_http_req *r = lws_wsi_user(wsi);
    rt_htab_remove(&srv->relay->waiting, &w->h);
    free(w);
    if (!r || r->magic != GW_HTTP_MAGIC || r->ticket != ticket)
        return;
    r->ticket = 0;
    uint8_t *copy = blen ? malloc(blen) : NULL;
    if (blen && !copy) {
        gw_http_defer(wsi, r, 503, NULL, 0, 1000, 0);
        return;
    }
    if (blen)
        memcpy(copy, body, blen);
    gw_http_defer(wsi, r, status, copy, blen, retry, batch);
}

static void expire_cb(struct rt_hnode *n, void *arg)
{
    struct gw_server *srv = arg;
    struct relay_wait *w = RT_CONTAINER(n, struct relay_wait, h);
    if (rt_mono_ms() < w->deadline_ms)
        return;
    struct gw_http_req *r = lws_wsi_user(w->wsi);
    rt_htab_remove(&srv->relay->waiting, n);
    srv->relay->timed_out++;
    if (r && r->magic == GW_HTTP_MAGIC && r->ticket == w->ticket) {
        r->ticket = 0;
        gw_http_defer(w->wsi, r, 503, NULL, 0, 1000, 0);
    }
    free(w);
}

void gw_relay_sweep(struct gw_server *srv, uint64_t now_ms)
{
    (void)now_ms;
    if (srv->relay)
        rt_htab_each(&srv->relay->waiting, expire_cb, srv);
}

/* ---- the holder's side ----------------------------------------------------------- */

void gw_relay_answer(struct gw_server *srv, uint64_t ticket, const char *reply, unsigned status,
                     uint32_t retry_after_ms, uint64_t batch, const uint8_t *body, size_t len)
{
    if (!srv->relay || !reply[0])
        return;
    size_t cap = 32 + len;
    uint8_t *buf = malloc(cap);
    if (!buf)
        return; /* the requester times out and answers 503 */
    struct wire out = {.p = buf, .cap = cap};
    put_le(&out, RELAY_VERSION, 1);
    put_le(&out, ticket, 8);
    put_le(&out, status, 2);
    put_le(&out, retry_after_ms, 4);
    put_le(&out, batch, 8);
    put_le(&out, len, 4);
    put(&out, body, len);
    if (!out.failed)
        fo_bus_publish(srv->fo, reply, NULL, buf, out.len);
    free(buf);
}

/* An answer subject we send to: one of ours, not anything a bus message names. */
static bool reply_ok(const char *reply)
{
    size_t n = strlen(SUBJ_ANSWER);
    if (!reply || strncmp(reply, SUBJ_ANSWER, n) != 0 || strlen(reply) != n + 2 * GW_NODE_KEY_BYTES)
        return false;
    for (const char *c = reply + n; *c; c++)
        if (!((*c >= '0' && *c <= '9') || (*c >= 'a' && *c <= 'f')))
            return false;
    return true;
}

/* A request relayed to us by the node it landed on. */
static void on_request(struct gw_server *srv, const char *reply, const uint8_t *data, size_t len)
{
    struct reader in = {.p = data, .len = len};
    if (get_le(&in, 1) != RELAY_VERSION || !reply_ok(reply))
        return;
    unsigned kind = (unsigned)get_le(&in, 1);
    uint64_t ticket = get_le(&in, 8), seq = get_le(&in, 8);
    size_t tlen = (size_t)get_le(&in, 1);
    const char *token = (const char *)get_bytes(&in, tlen);
    size_t blen = (size_t)get_le(&in, 4);
    const uint8_t *body = get_bytes(&in, blen);
    if (in.failed || in.at != len || blen > srv->cfg->max_message_bytes)
        return;
    struct gw_sesstoken t;
    if (gw_sesstoken_check(srv, token, tlen, &t) != GW_TOKEN_OK) {
        gw_relay_answer(srv, ticket, reply, 401, 0, 0, NULL, 0);
        return;
    }
    if (kind == RELAY_KIND_SEND || kind == RELAY_KIND_END) {
        uint32_t retry = 0;
        unsigned status = gw_send_apply(srv, &t, seq, body, blen, kind == RELAY_KIND_END, &retry);
        gw_relay_answer(srv, ticket, reply, status, retry, 0, NULL, 0);
        return;
    }
    struct gw_hsession *h = gw_hsession_find_poll(srv, &t);
    if (kind != RELAY_KIND_POLL || !h) {
        gw_relay_answer(srv, ticket, reply, 404, 0, 0, NULL, 0);
        return;
    }
    gw_poll_remote(h, seq, ticket, reply);
}

bool gw_relay_receive(struct gw_server *srv, const char *subject, const char *reply,
                      const uint8_t *data, size_t len)
{
    if (strncmp(subject, SUBJ_PREFIX, strlen(SUBJ_PREFIX)) != 0)
        return false;
    if (!srv->relay)
        return true;
    if (!strncmp(subject, SUBJ_ANSWER, strlen(SUBJ_ANSWER)))
        on_answer(srv, data, len);
    else
        on_request(srv, reply, data, len);
    return true;
}

rt_status gw_relay_start(struct gw_server *srv)
{
    if (!srv->cfg->http_transports || !gw_bus_open(srv))
        return RT_OK; /* the memory engine: one node, nothing to relay */
    struct gw_relay *rl = calloc(1, sizeof *rl);
    if (!rl)
        return RT_NOMEM;
    rt_htab_init(&rl->waiting);
    char subject[64];
    snprintf(subject, sizeof subject, SUBJ_REQUEST "%s", srv->node_key_hex);
    snprintf(rl->answer_subject, sizeof rl->answer_subject, SUBJ_ANSWER "%s", srv->node_key_hex);
    rl->sub_requests = fo_bus_subscribe(srv->fo, subject);
    rl->sub_answers = fo_bus_subscribe(srv->fo, rl->answer_subject);
    if (!rl->sub_requests || !rl->sub_answers) {
        fo_bus_unsubscribe(srv->fo, rl->sub_requests);
        fo_bus_unsubscribe(srv->fo, rl->sub_answers);
        free(rl);
        rt_log(RT_LOG_WARN, "relay_off",
               "msg=\"no bus: POSTs and polls reach this node's sessions only here\"");
        return RT_OK;
    }
    srv->relay = rl;
    if (srv->cfg->session_key_source == GW_SESSION_KEY_RANDOM)
        rt_log(RT_LOG_WARN, "session_key_local",
               "msg=\"no --session-secret nor HS256 --jwt-key: session tokens of this node "
               "are refused by the others; SSE and long-poll clients then need sticky "
               "sessions\"");
    return RT_OK;
}

static void free_wait_cb(struct rt_hnode *n, void *arg)
{
    (void)arg;
    free(RT_CONTAINER(n, struct relay_wait, h));
}

void gw_relay_stop(struct gw_server *srv)
{
    struct gw_relay *rl = srv->relay;
    if (!rl)
        return;
    fo_bus_unsubscribe(srv->fo, rl->sub_requests);
    fo_bus_unsubscribe(srv->fo, rl->sub_answers);
    rt_htab_each(&rl->waiting, free_wait_cb, NULL);
    rt_htab_free(&rl->waiting);
    free(rl);
    srv->relay = NULL;
}
