/*
 * httpapi.c: the endpoints of the HTTP transports on the listener, what
 * server.c's HTTP callback hands over (docs/protocol.md, "Server-Sent
 * Events and long-polling"):
 *
 *   GET  /sse              a stream: opens a session (connect from the
 *                          Authorization header or `token`), subscribes the
 *                          URL's `channel`s, resumes them from Last-Event-ID
 *   GET  /poll             without a session: opens one, answers batch 1
 *   GET  /poll?session=&ack=  with one: a long-poll (held, or relayed)
 *   POST /send?session=&seq=  requests for a session (here, or relayed)
 *   OPTIONS (any of them)  the CORS preflight
 *
 * Every request is hostile until shown otherwise: its Origin against
 * --allow-origin (403), a new session against the same admission as a
 * WebSocket handshake (drain 503, per-address rate 429, capacity 503, node
 * rate 503), a session token checked before anything is read (401; a
 * flood of bad ones from one address 429), a body's Content-Length against
 * --max-message-bytes before it is read (411, 413) and all bodies being
 * read together against GW_HTTP_BODIES_MAX (503). Answers carry a JSON
 * `error` body, Retry-After when there is one to give, and the CORS headers
 * for an allowed Origin. Loop thread.
 */
#include "api.h"
#include "http.h"

#include <libwebsockets.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

_Static_assert(sizeof(struct gw_http_req) <= sizeof(struct gw_session),
               "a request's state fits in lws's per-transaction data");

#define ARG_MAX        (4096 + 16) /* a URL argument or header: lws's header budget */
#define CONNECT_ID_MAX ((int64_t)1 << 53)

/* ---- answers --------------------------------------------------------------- */

static int add(struct lws *wsi, const char *name, const char *value, uint8_t **p, uint8_t *end)
{
    return lws_add_http_header_by_name(wsi, (const uint8_t *)name, (const uint8_t *)value,
                                       (int)strlen(value), p, end);
}

/* CORS for an allowed Origin: it may read the answer and these headers. */
static int add_cors(struct lws *wsi, const struct gw_http_req *r, uint8_t **p, uint8_t *end)
{
    if (!r || !r->origin[0])
        return 0;
    return add(wsi, "access-control-allow-origin:", r->origin, p, end) ||
           add(wsi, "vary:", "origin", p, end) ||
           add(wsi, "access-control-expose-headers:", "retry-after, rtgate-batch", p, end);
}

void gw_http_wake(struct lws *wsi)
{
    lws_rx_flow_control(wsi, 1);
    lws_callback_on_writable(wsi);
}

void gw_http_quiet(struct lws *wsi)
{
    lws_rx_flow_control(wsi, 0);
}

void gw_http_wait(struct lws *wsi)
{
    lws_http_headers_detach(wsi); /* everything needed of them is read: 4 KB less per wait */
    gw_http_wake(wsi);
}

int gw_http_answer(struct lws *wsi, struct gw_http_req *r, unsigned status, const char *ctype,
                   const uint8_t *body, size_t len, uint32_t retry_after_ms, uint64_t batch)
{
    uint8_t hdr[LWS_PRE + 1536];
    uint8_t *start = hdr + LWS_PRE, *p = start, *end = hdr + sizeof hdr - 1;
    char v[32];
    bool empty = status == 204;
    if (empty ? lws_add_http_header_status(wsi, status, &p, end)
              : lws_add_http_common_headers(wsi, status, ctype, (lws_filepos_t)len, &p, end))
        return -1;
    if (add(wsi, "cache-control:", "no-store", &p, end) || add_cors(wsi, r, &p, end))
        return -1;
    bool hang_up = r && r->closes; /* a request with a body: api.h, gw_http_has_body */
    if (hang_up && lws_add_http_header_by_token(wsi, WSI_TOKEN_CONNECTION, (const uint8_t *)"close",
                                                5, &p, end))
        return -1;
    if (retry_after_ms) {
        snprintf(v, sizeof v, "%u", (retry_after_ms + 999) / 1000);
        if (add(wsi, "retry-after:", v, &p, end))
            return -1;
    }
    if (batch) {
        snprintf(v, sizeof v, "%llu", (unsigned long long)batch);
        if (add(wsi, "rtgate-batch:", v, &p, end))
            return -1;
    }
    if (lws_finalize_write_http_header(wsi, start, &p, end))
        return -1;
    if (!empty && len) {
        uint8_t *buf = malloc(LWS_PRE + len);
        if (!buf)
            return -1;
        memcpy(buf + LWS_PRE, body, len);
        int n = lws_write(wsi, buf + LWS_PRE, len, LWS_WRITE_HTTP_FINAL);
        free(buf);
        if (n < 0)
            return -1;
    }
    if (hang_up)
        return -1;
    lws_rx_flow_control(wsi, 1); /* a held request stopped reading: the next one may come */
    return lws_http_transaction_completed(wsi) ? -1 : 0;
}

static const char *reason_of(unsigned status)
{
    switch (status) {
    case 401:
        return "unauthorized";
    case 403:
        return "forbidden";
    case 404:
        return "not_found";
    case 405:
        return "method_not_allowed";
    case 409:
        return "conflict";
    case 411:
        return "length_required";
    case 413:
        return "too_large";
    case 429:
        return "rate_limited";
    case 503:
        return "unavailable";
    default:
        return "bad_request";
    }
}

/* The body of an error answer: a protocol `error` message (one JSON line). */
static uint8_t *error_body(unsigned status, const char *message, uint32_t retry_after_ms,
                           size_t *len)
{
    struct proto_buf b;
    proto_buf_init(&b, 0);
    struct proto_writer w;
    proto_writer_init(&w, PROTO_JSON, &b);
    proto_w_map(&w);
    proto_w_kcstr(&w, "type", "error");
    proto_w_key(&w, "error");
    proto_w_map(&w);
    proto_w_kuint(&w, "code", status);
    proto_w_kcstr(&w, "reason", reason_of(status));
    proto_w_kcstr(&w, "message", message);
    if (retry_after_ms)
        proto_w_kuint(&w, "retry_after_ms", retry_after_ms);
    proto_w_end(&w);
    proto_w_end(&w);
    if (proto_writer_status(&w) != RT_OK) {
        proto_buf_free(&b);
        *len = 0;
        return NULL;
    }
    return proto_buf_take(&b, len);
}

int gw_http_error(struct lws *wsi, struct gw_http_req *r, unsigned status, const char *message,
                  uint32_t retry_after_ms)
{
    size_t len;
    uint8_t *body = error_body(status, message, retry_after_ms, &len);
    int rc = gw_http_answer(wsi, r, status, "application/json", body, len, retry_after_ms, 0);
    free(body);
    return rc;
}

static void drop_body(struct gw_server *srv, struct gw_http_req *r)
{
    if (r->counted)
        srv->http_body_bytes -= r->body_cap;
    r->counted = false;
    free(r->body);
    r->body = NULL;
    r->body_len = r->body_cap = 0;
}

void gw_http_defer(struct lws *wsi, struct gw_http_req *r, unsigned status, uint8_t *body,
                   size_t len, uint32_t retry_after_ms, uint64_t batch)
{
    struct gw_server *srv = lws_context_user(lws_get_context(wsi));
    drop_body(srv, r);
    if (!body && status >= 400)
        body = error_body(status,
                          status == 404 ? "no such session (it ended, or never was)"
                                        : "the node holding the session did not answer",
                          retry_after_ms, &len);
    r->deferred = true;
    r->status = (uint16_t)status;
    r->body = body;
    r->body_len = (uint32_t)len;
    r->retry_after_ms = retry_after_ms;
    r->batch = batch;
    gw_http_wake(wsi);
}

/* ---- the request ----------------------------------------------------------- */

/* The value of URL argument `name=` (urldecoded by lws) into buf; NULL when absent. */
static const char *arg(struct lws *wsi, const char *name, char *buf, int len)
{
    return lws_get_urlarg_by_name(wsi, name, buf, len);
}

static bool parse_u64(const char *v, uint64_t max, uint64_t *out)
{
    if (!v || !*v)
        return false;
    uint64_t x = 0;
    for (const char *c = v; *c; c++) {
        if (*c < '0' || *c > '9' || x > (max - (uint64_t)(*c - '0')) / 10)
            return false;
        x = x * 10 + (uint64_t)(*c - '0');
    }
    *out = x;
    return true;
}

/* Records the request's Origin to echo when it may have one (none, or on the
 * list, or any without a list); false: 403. */
static bool origin_ok(struct gw_server *srv, struct lws *wsi, struct gw_http_req *r)
{
    if (lws_hdr_total_length(wsi, WSI_TOKEN_ORIGIN) <= 0)
        return true; /* not a browser */
    if (!gw_server_origin_allowed(srv, wsi))
        return false;
    if (lws_hdr_copy(wsi, r->origin, sizeof r->origin, WSI_TOKEN_ORIGIN) <= 0)
        r->origin[0] = '\0'; /* longer than GW_ORIGIN_ECHO_MAX: no CORS */
    return true;
}

static int preflight(struct lws *wsi, struct gw_http_req *r)
{
    uint8_t hdr[LWS_PRE + 1024];
    uint8_t *start = hdr + LWS_PRE, *p = start, *end = hdr + sizeof hdr - 1;
    if (lws_add_http_header_status(wsi, 204, &p, end) || add_cors(wsi, r, &p, end) ||
        add(wsi, "access-control-allow-methods:", "GET, POST, OPTIONS", &p, end) ||
        add(wsi, "access-control-allow-headers:",
            "authorization, content-type, last-event-id, rtgate-session", &p, end) ||
        add(wsi, "access-control-max-age:", "600", &p, end) ||
        lws_finalize_write_http_header(wsi, start, &p, end))
        return -1;
    return lws_http_transaction_completed(wsi) ? -1 : 0;
}

/* The session token of a request: the Rtgate-Session header, else `session`. */
static bool token_of(struct lws *wsi, struct gw_http_req *r)
{
    char buf[GW_TOKEN_TEXT_MAX + 16];
    int n = lws_hdr_custom_copy(wsi, buf, sizeof buf, "rtgate-session:", 15);
    const char *v = n > 0 ? buf : arg(wsi, "session=", buf, sizeof buf);
    size_t len = v ? strlen(v) : 0;
    if (!len || len > GW_TOKEN_TEXT_MAX)
        return false;
    memcpy(r->token, v, len + 1);
    return true;
}

/*
 * Checks a request's session token. A token that does not check is answered
 * 401, or 429 once its address has sent too many (the handshake bucket: a
 * guesser pays per guess). Returns true with *t filled.
 */
static bool check_token(struct gw_server *srv, struct lws *wsi, struct gw_http_req *r,
                        struct gw_sesstoken *t, int *rc)
{
    enum gw_token_check c = GW_TOKEN_MALFORMED;
    if (token_of(wsi, r))
        c = gw_sesstoken_check(srv, r->token, strlen(r->token), t);
    if (c == GW_TOKEN_OK)
        return true;
    srv->http_refused++;
    uint32_t retry = 0;
    if (!gw_server_address_rate_ok(srv, wsi, &retry)) {
        *rc = gw_http_error(wsi, r, 429, "too many bad session tokens from this address", retry);
        return false;
    }
    char peer[EDGE_ADDR_TEXT];
    gw_peer_text(srv, wsi, peer);
    rt_log(RT_LOG_INFO, "session_token_refused", "peer=%s why=%s", peer,
           c == GW_TOKEN_FORGED ? "bad_mac" : "malformed");
    *rc = gw_http_error(wsi, r, 401,
                        c == GW_TOKEN_FORGED ? "session token does not verify"
                                             : "a session token is required (Rtgate-Session)",
                        0);
    return false;
}

/* The JWT of a new session: "Authorization: Bearer <jwt>", else the `token` argument. */
static const char *jwt_of(struct lws *wsi, char *buf, int len, size_t *out_len)
{
    int n = lws_hdr_copy(wsi, buf, len, WSI_TOKEN_HTTP_AUTHORIZATION);
    const char *v = NULL;
    if (n > 7 && !strncasecmp(buf, "Bearer ", 7))
        v = buf + 7;
    else if (n <= 0)
        v = arg(wsi, "token=", buf, len);
    *out_len = v ? strlen(v) : 0;
    return v && *v ? v : NULL;
}

/* The URL's channels of a stream, checked: 400 with why on a bad one. */
static const char *channels_of(struct lws *wsi, char store[][PROTO_CHANNEL_MAX + 1],
                               struct gw_hsession_params *p)
{
    static char frag[ARG_MAX];
    for (int i = 0; lws_hdr_fragment_length(wsi, WSI_TOKEN_HTTP_URI_ARGS, i) > 0; i++) {
        if (lws_hdr_copy_fragment(wsi, frag, sizeof frag, WSI_TOKEN_HTTP_URI_ARGS, i) < 0 ||
            strncmp(frag, "channel=", 8) != 0)
            continue;
        const char *name = frag + 8;
        size_t len = strlen(name);
        if (!proto_channel_valid(name, len))
            return "bad channel name in the URL";
        if (p->n_channels == GW_SSE_MAX_CHANNELS)
            return "at most 16 channels in a stream's URL";
        for (size_t k = 0; k < p->n_channels; k++)
            if (!strcmp(store[k], name))
                return "a channel is named twice in the URL";
        memcpy(store[p->n_channels], name, len + 1);
        p->channels[p->n_channels] = store[p->n_channels];
        p->n_channels++;
    }
    return NULL;
}

/* Opens a session for a stream or a first poll. */
static int open_session(struct gw_server *srv, struct lws *wsi, struct gw_http_req *r,
                        enum gw_transport_kind transport)
{
    const struct edge_addr *client = gw_peer_resolve(srv, wsi);
    struct gw_refusal why;
    if (!gw_server_admit(srv, wsi, client, &why))
        return gw_http_error(wsi, r, why.status, why.message, why.retry_after_ms);
    static char jwt[ARG_MAX], idbuf[64], last_id[PROTO_RESUME_TEXT_MAX + 2];
    static char chans[GW_SSE_MAX_CHANNELS][PROTO_CHANNEL_MAX + 1];
    struct gw_hsession_params p = {.transport = transport, .connect_id = 1};
    gw_peer_text(srv, wsi, p.peer);
    p.token = jwt_of(wsi, jwt, sizeof jwt, &p.token_len);
    const char *id = arg(wsi, "id=", idbuf, sizeof idbuf);
    uint64_t v;
    if (id) {
        if (!parse_u64(id, CONNECT_ID_MAX - GW_SSE_MAX_CHANNELS - 1, &v))
            return gw_http_error(wsi, r, 400, "id must be an integer 0..2^53", 0);
        p.connect_id = (int64_t)v;
    }
    struct proto_buf scratch;
    proto_buf_init(&scratch, 0);
    if (transport == GW_TRANSPORT_SSE) {
        const char *bad = channels_of(wsi, chans, &p);
        if (bad)
            return gw_http_error(wsi, r, 400, bad, 0);
        int n = lws_hdr_custom_copy(wsi, last_id, sizeof last_id, "last-event-id:", 14);
        if (n < 0 && lws_hdr_custom_length(wsi, "last-event-id:", 14) > 0)
            n = (int)sizeof last_id; /* too long to be ours */
        if (n > 0 &&
            proto_resume_decode(last_id, (size_t)n, p.resume, &p.n_resume, &scratch) != RT_OK) {
            proto_buf_free(&scratch);
            return gw_http_error(wsi, r, 400, "Last-Event-ID is not a position this server wrote",
                                 0);
        }
    }
    unsigned status;
    uint8_t *body;
    size_t len;
    struct gw_hsession *h = gw_hsession_create(srv, &p, &status, &body, &len);
    proto_buf_free(&scratch);
    if (!h) {
        int rc = body ? gw_http_answer(wsi, r, status, "application/json", body, len,
                                       status == 503 ? 1000 : 0, 0)
                      : gw_http_error(wsi, r, status, "no room for a session", 1000);
        free(body);
        return rc;
    }
    return transport == GW_TRANSPORT_SSE ? gw_sse_start(h, wsi, r) : gw_poll_first(h, wsi, r);
}

/* A poll for an existing session: here, or relayed to the node that holds it. */
static int poll_session(struct gw_server *srv, struct lws *wsi, struct gw_http_req *r)
{
    struct gw_sesstoken t;
    int rc = 0;
    if (!check_token(srv, wsi, r, &t, &rc))
        return rc;
    char buf[32];
    if (!parse_u64(arg(wsi, "ack=", buf, sizeof buf), UINT64_MAX / 2, &r->seq))
        return gw_http_error(wsi, r, 400, "a poll says which batch it got: ack=N", 0);
    if (memcmp(t.node, srv->node_key, GW_NODE_KEY_BYTES) != 0)
        return gw_relay_forward(srv, wsi, r, &t, NULL, 0) == RT_OK
                   ? 0
                   : gw_http_error(wsi, r, 404, "the session is held by a node out of reach", 0);
    struct gw_hsession *h = gw_hsession_find_poll(srv, &t);
    if (!h)
        return gw_http_error(wsi, r, 404, "no such session (it ended, or never was)", 0);
    return gw_poll_local(h, wsi, r, r->seq);
}

/* A POST: its headers now, its body through gw_httpapi_body, then gw_httpapi_body_done. */
static int send_begin(struct gw_server *srv, struct lws *wsi, struct gw_http_req *r)
{
    struct gw_sesstoken t;
    int rc = 0;
    if (!check_token(srv, wsi, r, &t, &rc))
        return rc;
    char buf[32];
    if (!parse_u64(arg(wsi, "seq=", buf, sizeof buf), UINT64_MAX / 2, &r->seq) || r->seq == 0)
        return gw_http_error(wsi, r, 400, "a POST is numbered: seq=1, 2, ...", 0);
    const char *end = arg(wsi, "close=", buf, sizeof buf);
    r->end = end && !strcmp(end, "1");
    if (lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_TRANSFER_ENCODING) > 0 ||
        lws_hdr_copy(wsi, buf, sizeof buf, WSI_TOKEN_HTTP_CONTENT_LENGTH) <= 0) {
        gw_http_error(wsi, r, 411, "a POST needs a Content-Length", 0);
        return -1;
    }
    uint64_t length;
    if (!parse_u64(buf, UINT64_MAX / 2, &length) || length > srv->cfg->max_message_bytes) {
        gw_http_error(wsi, r, 413, "the body is larger than max_message_bytes", 0);
        return -1; /* its body is not read: the connection goes */
    }
    /* A session of this node that ended: 404 now, its body not read (a stale
     * token must not hold a share of the bodies' memory while it trickles in). */
    if (!memcmp(t.node, srv->node_key, GW_NODE_KEY_BYTES) && !gw_hsession_find(srv, &t)) {
        gw_http_error(wsi, r, 404, "no such session (it ended, or never was)", 0);
        return -1;
    }
    if (length > GW_HTTP_BODIES_MAX || srv->http_body_bytes >= GW_HTTP_BODIES_MAX) {
        gw_http_error(wsi, r, 503, "too many requests being read", 1000);
        return -1;
    }
    /* The memory comes as the body does (body_grow): a Content-Length alone,
     * with nothing sent after it, holds none of the budget the others share. */
    r->body_want = (uint32_t)length;
    r->reading = true;
    /* A body that does not come within the handshake timeout ends the connection.
     * (lws calls BODY and BODY_COMPLETION for an explicit 0.) */
    lws_set_timeout(wsi, PENDING_TIMEOUT_HTTP_CONTENT,
                    (int)(srv->cfg->handshake_timeout_ms + 999) / 1000);
    return 0;
}

/* Room for `need` bytes of a POST body: doubled (at most its Content-Length),
 * so it holds at most twice what has arrived; within the bodies' budget.
 * False: over the budget. */
static bool body_grow(struct gw_server *srv, struct gw_http_req *r, uint32_t need)
{
    uint32_t cap = r->body_cap * 2;
    if (cap > r->body_want)
        cap = r->body_want;
    if (cap < need)
        cap = need;
    if (srv->http_body_bytes + (cap - r->body_cap) > GW_HTTP_BODIES_MAX)
        return false;
    uint8_t *body = realloc(r->body, cap);
    if (!body)
        return false;
    srv->http_body_bytes += cap - r->body_cap;
    r->counted = true;
    r->body = body;
    r->body_cap = cap;
    return true;
}

bool gw_httpapi_route(struct gw_server *srv, struct lws *wsi, const char *uri, void *user, int *rc)
{
    int kind = !strcmp(uri, GW_PATH_SSE)    ? GW_HTTP_STREAM
               : !strcmp(uri, GW_PATH_POLL) ? GW_HTTP_POLL
               : !strcmp(uri, GW_PATH_SEND) ? GW_HTTP_SEND
                                            : 0;
    struct gw_http_req *r = user;
    if (!kind || !srv->cfg->http_transports || !r)
        return false;
    memset(r, 0, sizeof *r);
    r->magic = GW_HTTP_MAGIC;
    r->kind = (uint8_t)kind;
    /* lws 4.1 hangs on a body followed by a pipelined request: a request with
     * a body ends its connection with its answer (api.h). */
    r->closes = gw_http_has_body(wsi);
    bool get = lws_hdr_total_length(wsi, WSI_TOKEN_GET_URI) > 0;
    bool post = lws_hdr_total_length(wsi, WSI_TOKEN_POST_URI) > 0;
    bool options = lws_hdr_total_length(wsi, WSI_TOKEN_OPTIONS_URI) > 0;
    if (!origin_ok(srv, wsi, r)) {
        srv->m.handshakes_refused[GW_REFUSE_ORIGIN]++;
        *rc = gw_http_error(wsi, r, 403, "origin not allowed", 0);
        return true;
    }
    if (options) {
        *rc = preflight(wsi, r);
    } else if (kind == GW_HTTP_SEND) {
        *rc = post ? send_begin(srv, wsi, r) : gw_http_error(wsi, r, 405, "POST only", 0);
    } else if (!get) {
        *rc = gw_http_error(wsi, r, 405, "GET only", 0);
    } else if (kind == GW_HTTP_STREAM) {
        *rc = open_session(srv, wsi, r, GW_TRANSPORT_SSE);
    } else {
        static char probe[ARG_MAX];
        bool has_session = lws_hdr_custom_length(wsi, "rtgate-session:", 15) > 0 ||
                           arg(wsi, "session=", probe, sizeof probe);
        *rc =
            has_session ? poll_session(srv, wsi, r) : open_session(srv, wsi, r, GW_TRANSPORT_POLL);
    }
    return true;
}

static struct gw_http_req *ours(void *user)
{
    struct gw_http_req *r = user;
    return r && r->magic == GW_HTTP_MAGIC ? r : NULL;
}

bool gw_httpapi_owns(void *user)
{
    return ours(user) != NULL;
}

int gw_httpapi_body(struct gw_server *srv, struct lws *wsi, void *user, const void *in, size_t len)
{
    struct gw_http_req *r = ours(user);
    (void)wsi;
    if (!r || r->kind != GW_HTTP_SEND || !r->reading)
        return -1;
    if (len > r->body_want - r->body_len)
        return -1; /* more than its Content-Length: lws would not, a peer cannot */
    if (!len)
        return 0; /* an explicit Content-Length: 0 comes as one empty BODY */
    if (!r->refused && r->body_len + len > r->body_cap &&
        !body_grow(srv, r, r->body_len + (uint32_t)len)) {
        uint32_t got = r->body_len;
        drop_body(srv, r);
        r->refused = true; /* read to its end, kept nowhere, answered 503 */
        r->body_len = got;
    }
    if (!r->refused)
        memcpy(r->body + r->body_len, in, len);
    r->body_len += (uint32_t)len;
    return 0;
}

int gw_httpapi_body_done(struct gw_server *srv, struct lws *wsi, void *user)
{
    struct gw_http_req *r = ours(user);
    if (!r || r->kind != GW_HTTP_SEND || !r->reading)
        return -1;
    r->reading = false;
    lws_set_timeout(wsi, NO_PENDING_TIMEOUT, 0);
    if (r->refused)
        return gw_http_error(wsi, r, 503, "too many requests being read", 1000);
    struct gw_sesstoken t;
    if (gw_sesstoken_check(srv, r->token, strlen(r->token), &t) != GW_TOKEN_OK)
        return -1; /* checked at the headers */
    if (memcmp(t.node, srv->node_key, GW_NODE_KEY_BYTES) != 0) {
        rt_status st = gw_relay_forward(srv, wsi, r, &t, r->body, r->body_len);
        drop_body(srv, r);
        return st == RT_OK
                   ? 0
                   : gw_http_error(wsi, r, 404, "the session is held by a node out of reach", 0);
    }
    uint32_t retry = 0;
    unsigned status = gw_send_apply(srv, &t, r->seq, r->body, r->body_len, r->end, &retry);
    drop_body(srv, r);
    if (status == 204)
        return gw_http_answer(wsi, r, 204, NULL, NULL, 0, 0, 0);
    return gw_http_error(wsi, r, status,
                         status == 404   ? "no such session (it ended, or never was)"
                         : status == 409 ? "seq out of order: POSTs are numbered 1, 2, ..."
                                         : "message rate exceeded",
                         retry);
}

bool gw_httpapi_writable(struct gw_server *srv, struct lws *wsi, void *user, int *rc)
{
    struct gw_http_req *r = ours(user);
    if (!r)
        return false;
    *rc = 0;
    /* lws arms a request timeout once LWS_CALLBACK_HTTP returns; a held poll, a
     * stream or a relayed request is bounded by its own deadline instead. */
    lws_set_timeout(wsi, NO_PENDING_TIMEOUT, 0);
    if (r->deferred) {
        r->deferred = false;
        uint8_t *body = r->body;
        r->body = NULL;
        *rc = gw_http_answer(wsi, r, r->status,
                             r->status == 200 ? "application/x-ndjson" : "application/json", body,
                             r->body_len, r->retry_after_ms, r->batch);
        free(body);
        return true;
    }
    if (r->kind == GW_HTTP_STREAM) {
        struct gw_session *s = gw_conns_get(&srv->conns, r->conn_id);
        if (s && s->transport == GW_TRANSPORT_SSE)
            *rc = gw_sse_writable(gw_hsession_of(s), wsi);
    }
    if (*rc == 0 && !lws_partial_buffered(wsi))
        gw_http_quiet(wsi); /* waiting with nothing to write: see gw_http_wake */
    return true;
}

void gw_httpapi_closed(struct gw_server *srv, struct lws *wsi, void *user)
{
    struct gw_http_req *r = ours(user);
    if (!r)
        return;
    r->magic = 0;
    drop_body(srv, r);
    if (r->ticket)
        gw_relay_forget(srv, r->ticket);
    struct gw_session *s = r->conn_id ? gw_conns_get(&srv->conns, r->conn_id) : NULL;
    if (s && s->transport == GW_TRANSPORT_SSE && gw_hsession_of(s)->wsi == wsi)
        gw_sse_closed(gw_hsession_of(s));
    else if (s && s->transport == GW_TRANSPORT_POLL)
        gw_poll_closed(gw_hsession_of(s), wsi);
}
