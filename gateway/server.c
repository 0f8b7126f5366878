/*
 * server.c: libwebsockets on our own libuv loop. The lws callback stays
 * thin: HTTP endpoints (/healthz, /readyz, /metrics), the handshake checks
 * (TLS port, path, Origin, drain, subprotocol, per-client-address rate,
 * capacity, node rate) and the hand-off of WebSocket events to the session layer.
 */
#include "api.h"
#include "gw.h"

#include <libwebsockets.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#define SCRATCH_BYTES   (64 * 1024)
#define TX_PACKET_BYTES (1024 * 1024) /* largest single send() lws may make */
#define IPLIMIT_SLOTS   65536

static struct gw_server *server_of(struct lws *wsi)
{
    return lws_context_user(lws_get_context(wsi));
}

/* Writes a complete small HTTP response. Returns lws's convention. */
static int http_respond(struct lws *wsi, unsigned status, const char *ctype, const char *body,
                        size_t body_len, uint32_t retry_after_s)
{
    uint8_t hdr[LWS_PRE + 512];
    uint8_t *start = hdr + LWS_PRE, *p = start, *end = hdr + sizeof hdr - 1;
    if (lws_add_http_common_headers(wsi, status, ctype, (lws_filepos_t)body_len, &p, end))
        return -1;
    if (retry_after_s) {
        char v[16];
        int n = snprintf(v, sizeof v, "%u", retry_after_s);
        if (lws_add_http_header_by_name(
                wsi, (const unsigned char *)"retry-after:", (const unsigned char *)v, n, &p, end))
            return -1;
    }
    if (lws_finalize_write_http_header(wsi, start, &p, end))
        return -1;
    uint8_t *buf = malloc(LWS_PRE + body_len + 1);
    if (!buf)
        return -1;
    memcpy(buf + LWS_PRE, body, body_len);
    int n = lws_write(wsi, buf + LWS_PRE, body_len, LWS_WRITE_HTTP_FINAL);
    free(buf);
    return n < 0 ? -1 : 0;
}

static int on_http(struct lws *wsi, const char *uri, void *user)
{
    struct gw_server *srv = server_of(wsi);
    int r;
    if (gw_httpapi_route(srv, wsi, uri, user, &r)) /* /sse, /poll, /send: httpapi.c */
        return r;
    if (srv->api && gw_api_path(uri))
        return gw_api_http(srv, wsi, uri); /* the server API: answers and completes itself */
    if (!strcmp(uri, "/healthz")) {
        r = http_respond(wsi, 200, "text/plain", "ok\n", 3, 0);
    } else if (!strcmp(uri, "/readyz") && !srv->draining && !fo_ready(srv->fo)) {
        r = http_respond(wsi, 503, "text/plain", "backend down\n", 13, 0); /* NATS down */
    } else if (!strcmp(uri, "/readyz")) {
        r = srv->draining ? http_respond(wsi, 503, "text/plain", "draining\n", 9, 0)
                          : http_respond(wsi, 200, "text/plain", "ready\n", 6, 0);
    } else if (!strcmp(uri, "/metrics")) {
        size_t len;
        char *body = gw_metrics_render(srv, &len);
        r = body ? http_respond(wsi, 200, "text/plain; version=0.0.4", body, len, 0) : -1;
        free(body);
    } else if (!strcmp(uri, srv->cfg->ws_path)) {
        r = http_respond(wsi, 426, "text/plain", "websocket upgrade required\n", 27, 0);
    } else if (srv->statics) {
        r = gw_static_serve(srv->statics, wsi, uri); /* completes or starts its transfer */
        return r || gw_http_has_body(wsi) ? -1 : 0;  /* a body ends the connection */
    } else {
        r = http_respond(wsi, 404, "text/plain", "not found\n", 10, 0);
    }
    if (r || gw_http_has_body(wsi) || lws_http_transaction_completed(wsi))
        return -1; /* a body ends the connection (api.h: gw_http_has_body) */
    return 0;
}

/* True if the Sec-WebSocket-Protocol list is absent or names one of ours. */
static bool subprotocol_ok(struct lws *wsi)
{
    char list[256];
    int n = lws_hdr_copy(wsi, list, sizeof list, WSI_TOKEN_PROTOCOL);
    if (n <= 0)
        return n == 0;
    char *save = NULL;
    for (char *tok = strtok_r(list, ", \t", &save); tok; tok = strtok_r(NULL, ", \t", &save))
        if (!strcmp(tok, PROTO_SUBPROTOCOL_JSON) || !strcmp(tok, PROTO_SUBPROTOCOL_MSGPACK))
            return true;
    return false;
}

static const char *status_text(unsigned status)
{
    switch (status) {
    case 400:
        return "Bad Request";
    case 404:
        return "Not Found";
    case 403:
        return "Forbidden";
    case 429:
        return "Too Many Requests";
    default:
        return "Service Unavailable";
    }
}

/*
 * Refuses a WebSocket handshake with an HTTP status. The response is written
 * whole by hand: at this stage lws has not recorded the request's HTTP
 * version and would answer "HTTP/1.0" with no reason phrase.
 */
static int refuse(struct lws *wsi, int cause, unsigned status, const char *body,
                  uint32_t retry_after_ms)
{
    struct gw_server *srv = server_of(wsi);
    char peer[EDGE_ADDR_TEXT];
    gw_peer_text(srv, wsi, peer);
    srv->m.handshakes_refused[cause]++;
    if (gw_refusal_log_take(srv))
        rt_log(RT_LOG_INFO, "handshake_refused", "peer=%s status=%u why=\"%.*s\"", peer, status,
               (int)strlen(body) - 1, body);
    char retry[48] = "";
    if (retry_after_ms)
        snprintf(retry, sizeof retry, "Retry-After: %u\r\n", (retry_after_ms + 999) / 1000);
    char buf[LWS_PRE + 512];
    int n = snprintf(buf + LWS_PRE, sizeof buf - LWS_PRE,
                     "HTTP/1.1 %u %s\r\nContent-Type: text/plain\r\nContent-Length: %zu\r\n"
                     "Connection: close\r\n%s\r\n%s",
                     status, status_text(status), strlen(body), retry, body);
    if (n < 0 || (size_t)n >= sizeof buf - LWS_PRE)
        return -1;
    lws_write(wsi, (unsigned char *)buf + LWS_PRE, (size_t)n, LWS_WRITE_HTTP_HEADERS);
    return -1; /* Connection: close: hang up once written */
}

#define REFUSAL_LINES_PER_S 20

/*
 * True if a refused handshake or connection may be logged now: at most
 * REFUSAL_LINES_PER_S a second, then a line with the count of the others
 * (the metrics count every one). A refusal costs its client one TCP
 * connection; a line each would let one client fill the disk.
 */
bool gw_refusal_log_take(struct gw_server *srv)
{
    return rt_log_budget_take(&srv->refusal_log, REFUSAL_LINES_PER_S, rt_mono_ms(),
                              "handshakes_refused_not_logged");
}

/* With --tls-cert, lws lets plain HTTP through (ALLOW_NON_SSL_ON_SSL_PORT)
 * only so that it gets a clear answer instead of a dropped connection. */
static bool plain_on_tls_port(struct lws *wsi)
{
    return server_of(wsi)->tls && !lws_is_ssl(wsi);
}

static int refuse_plain(struct lws *wsi)
{
    return refuse(wsi, GW_REFUSE_NOT_TLS, 400, "this port speaks TLS: use wss:// or https://\n", 0);
}

bool gw_server_origin_allowed(struct gw_server *srv, struct lws *wsi)
{
    const struct gw_config *cfg = srv->cfg;
    if (!cfg->n_allow_origin || lws_hdr_total_length(wsi, WSI_TOKEN_ORIGIN) <= 0)
        return true;
    char origin[EDGE_ORIGIN_MAX], norm[EDGE_ORIGIN_MAX];
    int n = lws_hdr_copy(wsi, origin, sizeof origin, WSI_TOKEN_ORIGIN);
    if (n <= 0 || !edge_origin_normalize(origin, (size_t)n, norm, sizeof norm))
        return false;
    for (size_t i = 0; i < cfg->n_allow_origin; i++)
        if (!strcmp(norm, cfg->allow_origin[i]))
            return true;
    return false;
}

/* Takes a handshake token for the client's address (IPv6 by /64). */
static bool client_rate_ok(struct lws *wsi, const struct edge_addr *client, uint32_t *retry)
{
    struct gw_server *srv = server_of(wsi);
    char key[EDGE_KEY_TEXT];
    if (client)
        edge_addr_limit_key(client, key);
    else
        gw_peer_text(srv, wsi, key);
    return gw_iplimit_take(srv->iplimit, key, rt_mono_ms(), retry);
}

bool gw_server_address_rate_ok(struct gw_server *srv, struct lws *wsi, uint32_t *retry_after_ms)
{
    return client_rate_ok(wsi, gw_peer_resolve(srv, wsi), retry_after_ms);
}

bool gw_server_admit(struct gw_server *srv, struct lws *wsi, const struct edge_addr *client,
                     struct gw_refusal *out)
{
    uint32_t retry = 0;
    if (srv->draining)
        *out = (struct gw_refusal){GW_REFUSE_DRAINING, 503, "draining\n", 1000};
    else if (!client_rate_ok(wsi, client, &retry))
        *out = (struct gw_refusal){GW_REFUSE_RATE, 429, "too many connections from this address\n",
                                   retry};
    else if (srv->m.connections >= srv->cfg->max_connections)
        *out = (struct gw_refusal){GW_REFUSE_CAPACITY, 503, "gateway at capacity\n", 1000};
    else if (!gw_connrate_take(srv->connrate, rt_mono_ms(), &retry))
        *out = (struct gw_refusal){GW_REFUSE_NODE_RATE, 503, "too many new connections\n", retry};
    else
        return true;
    return false;
}

/* LWS_CALLBACK_HTTP_CONFIRM_UPGRADE: the last chance to answer in HTTP. */
static int on_confirm_upgrade(struct lws *wsi)
{
    struct gw_server *srv = server_of(wsi);
    const struct edge_addr *client = gw_peer_resolve(srv, wsi); /* refusals log it */
    if (plain_on_tls_port(wsi))
        return refuse_plain(wsi);
    char uri[128] = "";
    lws_hdr_copy(wsi, uri, sizeof uri, WSI_TOKEN_GET_URI);
    if (strcmp(uri, srv->cfg->ws_path) != 0)
        return refuse(wsi, GW_REFUSE_SUBPROTOCOL, 404, "no websocket endpoint here\n", 0);
    if (!gw_server_origin_allowed(srv, wsi))
        return refuse(wsi, GW_REFUSE_ORIGIN, 403, "origin not allowed\n", 0);
    if (srv->draining)
        return refuse(wsi, GW_REFUSE_DRAINING, 503, "draining\n", 1000);
    if (!subprotocol_ok(wsi))
        return refuse(wsi, GW_REFUSE_SUBPROTOCOL, 400,
                      "unsupported subprotocol: offer rtgate.v1.json or rtgate.v1.msgpack\n", 0);
    struct gw_refusal why;
    if (!gw_server_admit(srv, wsi, client, &why))
        return refuse(wsi, why.cause, why.status, why.message, why.retry_after_ms);
    return 0;
}

/*
 * The client's close frame (LWS_CALLBACK_WS_PEER_INITIATED_CLOSE): a reason
 * that is not UTF-8 gets 1007 (RFC 6455 7.4.1), which lws 4.1 checks only
 * with LWS_SERVER_OPTION_VALIDATE_UTF8, an option that would also close on
 * bad text frames (docs/protocol.md answers those with 400). Otherwise lws
 * echoes the close.
 */
static int on_peer_close(struct lws *wsi, const uint8_t *payload, size_t len)
{
    if (len <= 2 || proto_utf8_valid((const char *)payload + 2, len - 2))
        return 0;
    static const char reason[] = "invalid utf-8 in close reason";
    lws_close_reason(wsi, LWS_CLOSE_STATUS_INVALID_PAYLOAD, (unsigned char *)(uintptr_t)reason,
                     sizeof reason - 1);
    return -1;
}

#define SWEEP_MS 250

/*
 * One timer firing, due at due_us, ran at now_us: a loop that cannot keep up
 * fires its timers late (flush_window.c decides what that means for the
 * window).
 */
static void time_timer(struct gw_server *srv, uint64_t now_us, uint64_t due_us)
{
    srv->timers_timed++;
    if (now_us > due_us && now_us - due_us > gw_fw_late_bound_us(&srv->flush_window))
        srv->timers_late++;
}

/*
 * Grows the flush window while the loop falls behind, brings it back when it
 * has room (flush_window.h says how). A loop that is behind anyway has its
 * deliveries waiting in line, and a longer window turns that wait into fewer,
 * larger writes, which is what lets it catch up; a busy loop that keeps up
 * keeps the short window. Called from the sweep; the loop's idle time comes
 * from libuv's metrics (UV_METRICS_IDLE_TIME).
 */
static void adapt_window(struct gw_server *srv)
{
    uint64_t now = gw_now_us(), idle_ns = uv_metrics_idle_time(srv->loop);
    uint64_t span = now - srv->busy_at_us;
    struct gw_fw_sample sample = {.timers = srv->timers_timed, .late = srv->timers_late};
    srv->timers_timed = srv->timers_late = 0;
    if (!srv->busy_at_us || span == 0) {
        srv->busy_at_us = now;
        srv->idle_at_ns = idle_ns;
        return;
    }
    double idle = (double)(idle_ns - srv->idle_at_ns) / 1000.0 / (double)span;
    sample.busy = idle > 1.0 ? 0.0 : 1.0 - idle;
    srv->busy_at_us = now;
    srv->idle_at_ns = idle_ns;
    uint64_t w = gw_fw_step(&srv->flush_window, &sample);
    if (w != srv->window_us)
        rt_log(RT_LOG_DEBUG, "flush_window", "busy=%.2f window_ms=%llu late=%u/%u", sample.busy,
               (unsigned long long)(w / 1000), sample.late, sample.timers);
    srv->window_us = w;
}

void gw_server_sweep(struct gw_server *srv, uint64_t now_ms)
{
    uint64_t now_us = gw_now_us();
    if (srv->sweep_due_us)
        time_timer(srv, now_us, srv->sweep_due_us);
    srv->sweep_due_us = now_us + SWEEP_MS * 1000ull;
    gw_presence_tick(srv, now_ms);
    gw_api_sweep(srv, now_ms);
    gw_users_tick(srv, now_ms);
    adapt_window(srv);
    for (uint32_t i = 0; i < srv->conns.used; i++)
        if (srv->conns.slots[i])
            gw_session_sweep(srv->conns.slots[i], now_ms);
    gw_relay_sweep(srv, now_ms);
    gw_hsession_reap(srv);
}

static void on_sweep(uv_timer_t *t)
{
    gw_server_sweep(t->data, rt_mono_ms());
}

static rt_status start_sweep(struct gw_server *srv)
{
    uv_timer_t *t = malloc(sizeof *t);
    if (!t || uv_timer_init(srv->loop, t) != 0) {
        free(t);
        return RT_NOMEM;
    }
    t->data = srv;
    uv_timer_start(t, on_sweep, SWEEP_MS, SWEEP_MS);
    srv->sweep_timer = t;
    return RT_OK;
}

static void sweep_closed(uv_handle_t *h)
{
    free(h);
}

uint64_t gw_now_us(void)
{
    return uv_hrtime() / 1000;
}

/* Appends an id to one of the server's id lists. False when out of memory. */
static bool id_list_push(uint64_t **list, uint32_t *n, uint32_t *cap, uint64_t id)
{
    if (*n == *cap) {
        uint32_t ncap = *cap ? *cap * 2 : 256;
        uint64_t *nl = realloc(*list, sizeof *nl * ncap);
        if (!nl)
            return false;
        *list = nl;
        *cap = ncap;
    }
    (*list)[(*n)++] = id;
    return true;
}

bool gw_server_mark_dirty(struct gw_server *srv, uint64_t conn_id)
{
    return id_list_push(&srv->dirty, &srv->n_dirty, &srv->dirty_cap, conn_id);
}

static void on_hold_timer(uv_timer_t *t);

/* Arms the hold timer for due_us unless it fires earlier already. */
static void hold_arm(struct gw_server *srv, uint64_t due_us, uint64_t now_us)
{
    if (srv->hold_due_us && srv->hold_due_us <= due_us)
        return;
    /* uv timers count from the loop's cached time, which lags by however long
     * this iteration has run: refresh it so the timer does not fire early. */
    uv_update_time(srv->loop);
    uint64_t ms = due_us > now_us ? (due_us - now_us + 999) / 1000 : 0;
    uv_timer_start(srv->hold_timer, on_hold_timer, ms, 0);
    srv->hold_due_us = due_us;
}

/*
 * Holds a dirty session until its flush window ends. It stays marked dirty,
 * so deliveries meanwhile only add to its outbox. Writes now instead when the
 * list cannot grow.
 */
static void hold(struct gw_server *srv, struct gw_session *s, uint64_t now_us)
{
    if (!id_list_push(&srv->held, &srv->n_held, &srv->held_cap, s->conn_id)) {
        gw_session_flush(s);
        return;
    }
    s->held = true;
    hold_arm(srv, s->last_write_us + srv->window_us, now_us);
}

/*
 * The earliest held window has ended: every held session whose window is
 * over (or ends within a fraction of it: the timer counts in whole ms) goes
 * back on the flush list, which the prepare handler writes in this same loop
 * iteration. The others stay held and the timer is re-armed.
 */
static void on_hold_timer(uv_timer_t *t)
{
    struct gw_server *srv = t->data;
    uint64_t window = srv->window_us;
    uint64_t real_now = gw_now_us(), now = real_now + window / 8;
    uint64_t next = UINT64_MAX;
    uint32_t keep = 0;
    time_timer(srv, real_now, srv->hold_due_us);
    srv->hold_due_us = 0;
    for (uint32_t i = 0; i < srv->n_held; i++) {
        struct gw_session *s = gw_conns_get(&srv->conns, srv->held[i]);
        if (!s || !s->held)
            continue; /* closed, or flushed another way meanwhile */
        uint64_t due = s->last_write_us + window;
        if (due <= now && gw_server_mark_dirty(srv, srv->held[i])) {
            s->held = false;
            continue;
        }
        srv->held[keep++] = srv->held[i];
        next = due < next ? due : next;
    }
    srv->n_held = keep;
    if (keep)
        hold_arm(srv, next, real_now);
}

void gw_server_flush(struct gw_server *srv)
{
    gw_presence_flush(srv); /* presence changes of this iteration, batched per cell */
    gw_users_flush(srv);
    uint64_t window = srv->window_us;
    uint64_t now = window && srv->n_dirty ? gw_now_us() : 0;
    srv->flush_wall_ms = srv->n_dirty ? rt_wall_ms() : 0; /* the writes' time, for metrics */
    /* Flushing may queue more (a drained outbox pumps durable catch-up): the
     * list may grow while it is walked. */
    for (uint32_t i = 0; i < srv->n_dirty; i++) {
        struct gw_session *s = gw_conns_get(&srv->conns, srv->dirty[i]);
        if (!s || !s->dirty || s->held)
            continue;
        if (window && now - s->last_write_us < window && !s->reply_queued && !s->closing)
            hold(srv, s, now);
        else
            gw_session_flush(s);
    }
    srv->n_dirty = 0;
    srv->flush_wall_ms = 0;
    gw_hsession_reap(srv); /* long-poll sessions whose last answer went out */
}

struct flush_handles {
    uv_prepare_t prepare; /* before the loop blocks: output queued by timers */
    uv_check_t check;     /* after I/O callbacks: output queued by them */
    int closed;
};

static void on_prepare(uv_prepare_t *h)
{
    gw_server_flush(h->data);
}

static void on_check(uv_check_t *h)
{
    gw_server_flush(h->data);
}

static rt_status start_flush(struct gw_server *srv)
{
    struct flush_handles *fh = calloc(1, sizeof *fh);
    if (!fh)
        return RT_NOMEM;
    uv_prepare_init(srv->loop, &fh->prepare);
    uv_check_init(srv->loop, &fh->check);
    fh->prepare.data = fh->check.data = srv;
    uv_prepare_start(&fh->prepare, on_prepare);
    uv_check_start(&fh->check, on_check);
    srv->flush_handles = fh;
    uv_timer_t *t = malloc(sizeof *t);
    if (!t || uv_timer_init(srv->loop, t) != 0) {
        free(t);
        return RT_NOMEM;
    }
    t->data = srv;
    srv->hold_timer = t;
    return RT_OK;
}

static void flush_closed(uv_handle_t *h)
{
    struct flush_handles *fh = h->data;
    if (++fh->closed == 2)
        free(fh);
}

static void stop_flush(struct gw_server *srv)
{
    if (srv->hold_timer) {
        uv_timer_stop(srv->hold_timer);
        uv_close(srv->hold_timer, sweep_closed); /* frees it */
        srv->hold_timer = NULL;
        srv->hold_due_us = 0;
    }
    struct flush_handles *fh = srv->flush_handles;
    if (!fh)
        return;
    uv_prepare_stop(&fh->prepare);
    uv_check_stop(&fh->check);
    fh->prepare.data = fh->check.data = fh;
    uv_close((uv_handle_t *)&fh->prepare, flush_closed);
    uv_close((uv_handle_t *)&fh->check, flush_closed); /* the second close frees */
    srv->flush_handles = NULL;
}

static enum proto_codec codec_of(struct lws *wsi)
{
    const struct lws_protocols *p = lws_get_protocol(wsi);
    return p && p->id == PROTO_MSGPACK ? PROTO_MSGPACK : PROTO_JSON;
}

static int callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                    size_t len)
{
    switch (reason) {
    case LWS_CALLBACK_HTTP:
        if (plain_on_tls_port(wsi))
            return refuse_plain(wsi);
        return on_http(wsi, in ? (const char *)in : "", user);
    case LWS_CALLBACK_HTTP_BODY: /* a POST /send (httpapi.c), or an API request */
        if (gw_httpapi_owns(user))
            return gw_httpapi_body(server_of(wsi), wsi, user, in, len);
        return gw_api_body(server_of(wsi), wsi, in, len);
    case LWS_CALLBACK_HTTP_BODY_COMPLETION:
        if (gw_httpapi_owns(user))
            return gw_httpapi_body_done(server_of(wsi), wsi, user);
        return gw_api_body_done(server_of(wsi), wsi);
    case LWS_CALLBACK_HTTP_WRITEABLE: { /* a static file's next chunk, or a deferred answer */
        int r;
        if (gw_httpapi_writable(server_of(wsi), wsi, user, &r))
            return r;
        if (gw_static_writable(server_of(wsi)->statics, wsi, user) < 0)
            return -1;
        return gw_api_writable(server_of(wsi), wsi);
    }
    case LWS_CALLBACK_CLOSED_HTTP:
        gw_httpapi_closed(server_of(wsi), wsi, user);
        gw_api_closed(server_of(wsi), wsi);
        return 0;
    case LWS_CALLBACK_HTTP_CONFIRM_UPGRADE:
        return on_confirm_upgrade(wsi);
    case LWS_CALLBACK_OPENSSL_LOAD_EXTRA_SERVER_VERIFY_CERTS:
        return gw_tls_attach(server_of(wsi), user);
    case LWS_CALLBACK_WS_PEER_INITIATED_CLOSE:
        gw_ws_peer_close(user, in, len);
        return on_peer_close(wsi, in, len);
    case LWS_CALLBACK_ESTABLISHED:
        return gw_ws_open(server_of(wsi), user, wsi, codec_of(wsi));
    case LWS_CALLBACK_RECEIVE:
        return gw_ws_rx(user, in, len, lws_is_final_fragment(wsi),
                        lws_remaining_packet_payload(wsi));
    case LWS_CALLBACK_SERVER_WRITEABLE:
        return gw_ws_writable(user);
    case LWS_CALLBACK_TIMER:
        return gw_ws_timer(user);
    case LWS_CALLBACK_RECEIVE_PONG:
        gw_ws_pong(user);
        return 0;
    case LWS_CALLBACK_CLOSED:
        gw_ws_closed(user);
        return 0;
    default:
        return 0;
    }
}

/* protocols[0] also takes HTTP and WebSocket clients that offer no
 * subprotocol (PROTOCOL.md: they get JSON, and no header back). The
 * per-session data (a WebSocket's session, ws.c) is sized in make_context. */
static struct lws_protocols protocols[] = {
    {PROTO_SUBPROTOCOL_JSON, callback, 0, 0, PROTO_JSON, NULL, 0},
    {PROTO_SUBPROTOCOL_MSGPACK, callback, 0, 0, PROTO_MSGPACK, NULL, 0},
    {NULL, NULL, 0, 0, 0, NULL, 0},
};

#define LWS_LINES_PER_S 20

/*
 * lws logs some clients' mistakes at WARN (a request without a URI, an
 * illegal frame length): a flood of such clients must not flood the log. At
 * most LWS_LINES_PER_S lines a second; the count of the others goes out with
 * the first line of a later second.
 */
static void lws_log_emit(int level, const char *line)
{
    static struct rt_log_budget budget;
    if (!rt_log_budget_take(&budget, LWS_LINES_PER_S, rt_mono_ms(), "lws_lines_suppressed"))
        return;
    size_t n = strlen(line);
    while (n && (line[n - 1] == '\n' || line[n - 1] == '\r'))
        n--;
    rt_log(level == LLL_ERR ? RT_LOG_ERROR : RT_LOG_WARN, "lws", "msg=\"%.*s\"", (int)n, line);
}

/* The nats engine's threads wake the loop through this; it then runs fo_service. */
static uv_async_t fo_wakeup;

static void on_fo_wakeup(uv_async_t *h)
{
    struct gw_server *srv = h->data;
    if (srv->fo)
        fo_service(srv->fo);
}

/* Any thread (fo_config.wake). uv_async_send coalesces a burst into one wakeup. */
static void fo_wake(void *ctx)
{
    uv_async_send(ctx);
}

static rt_status make_fanout(struct gw_server *srv, const struct gw_config *cfg)
{
    if (!uv_is_active((uv_handle_t *)&fo_wakeup)) {
        uv_async_init(srv->loop, &fo_wakeup, on_fo_wakeup);
        uv_unref((uv_handle_t *)&fo_wakeup); /* closed by the final uv_walk in main */
    }
    fo_wakeup.data = srv;
    struct fo_config fc = {
        .engine = cfg->nats_url[0] ? "nats" : "memory",
        .nats_url = cfg->nats_url,
        .nats_stream = cfg->nats_stream,
        .nats_replicas = cfg->nats_replicas,
        .nats_security = &cfg->nats_security,
        .uv_loop = srv->loop,
        .nats_read_window_ms = cfg->nats_read_window_ms,
        .sub_timeout_ms = cfg->sub_timeout_ms,
        .max_pending_subs = cfg->max_pending_subs,
        .max_pending_subs_per_client = cfg->max_pending_subs_per_conn,
        .wake = fo_wake,
        .wake_ctx = &fo_wakeup,
        .node_id = cfg->node_id,
        .ephemeral = cfg->ephemeral,
        .n_ephemeral = cfg->n_ephemeral,
        .history_max = cfg->history,
        .history_max_age_ms = cfg->history_age_ms,
        .dedup_window_ms = cfg->dedup_window_ms,
        .max_unacked = cfg->max_unacked,
        .max_subs = cfg->max_subs,
        .frame_headroom = GW_FRAME_HEADROOM,
    };
    struct fo_sink sink = gw_session_sink(srv);
    return fo_create(&fc, &sink, &srv->fo);
}

static rt_status make_context(struct gw_server *srv, const struct gw_config *cfg, void *loop)
{
    /*
     * tx_packet_size 0 would make lws cap every send() at rx_buffer_size
     * (1 KB by default) and push the rest of a frame through its buflist and
     * a POLLOUT round trip (two epoll_ctl calls and another send per KB):
     * exactly the batched frames the flush builds. Let the kernel take whole
     * frames; lws still buffers what a full socket does not take.
     */
    for (int i = 0; i < 2; i++) {
        protocols[i].per_session_data_size = gw_ws_session_size();
        protocols[i].rx_buffer_size = cfg->rx_buffer;
        protocols[i].tx_packet_size = TX_PACKET_BYTES;
    }
    static void *foreign_loops[1];
    foreign_loops[0] = loop;
    struct lws_context_creation_info info;
    memset(&info, 0, sizeof info);
    info.port = CONTEXT_PORT_NO_LISTEN_SERVER; /* listener.c accepts and adopts */
    info.protocols = protocols;
    /* No LWS_SERVER_OPTION_VALIDATE_UTF8: invalid UTF-8 gets a 400 from the
     * decoder instead of a close (PROTOCOL.md: a bad message never closes). */
    info.options =
        LWS_SERVER_OPTION_LIBUV | LWS_SERVER_OPTION_HTTP_HEADERS_SECURITY_BEST_PRACTICES_ENFORCE;
    info.foreign_loops = foreign_loops;
    info.user = srv;
    /*
     * Heartbeats are ours (gw_server_sweep). lws's own validity timers sit in
     * a sorted list that costs O(connections) per re-arm (every connect and
     * every pong); a policy with no hangup time turns them off.
     */
    static const lws_retry_bo_t no_validity_timers;
    info.retry_and_idle_policy = &no_validity_timers;
    info.fd_limit_per_thread = 0;
    /* Each stage of a connection's set-up (TLS handshake, the HTTP upgrade
     * request from its first byte) has this long: lws counts whole seconds. */
    info.timeout_secs = (cfg->handshake_timeout_ms + 999) / 1000;
    info.timeout_secs_ah_idle = info.timeout_secs;
    if (cfg->tls_cert[0]) {
        /*
         * The vhost's SSL_CTX is made without files: gw_tls_attach installs
         * the certificate tls.c loaded. HTTP/1.1 only (no h2, whose streams
         * would share one socket). Plain HTTP is let through so that
         * on_confirm_upgrade and on_http answer it 400.
         */
        info.options |= LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT |
                        LWS_SERVER_OPTION_CREATE_VHOST_SSL_CTX |
                        LWS_SERVER_OPTION_ALLOW_NON_SSL_ON_SSL_PORT |
                        LWS_SERVER_OPTION_ALLOW_HTTP_ON_HTTPS_LISTENER;
        info.alpn = "http/1.1";
    }
    srv->ctx = lws_create_context(&info);
    if (!srv->ctx) {
        rt_log(RT_LOG_ERROR, "listen_failed", "addr=%s:%d", cfg->listen_host, cfg->listen_port);
        return RT_ERR;
    }
    return RT_OK;
}

rt_status gw_server_start(struct gw_server *srv, const struct gw_config *cfg, void *uv_loop)
{
    memset(srv, 0, sizeof *srv);
    srv->cfg = cfg;
    srv->loop = uv_loop;
    lws_set_log_level(LLL_ERR | LLL_WARN, lws_log_emit);
    struct proto_limits lim = {.max_frame_bytes = cfg->max_message_bytes};
    uint8_t rnd[4];
    uv_random(NULL, NULL, rnd, sizeof rnd, 0, NULL);
    snprintf(srv->client_prefix, sizeof srv->client_prefix, "c%02x%02x%02x%02x", rnd[0], rnd[1],
             rnd[2], rnd[3]);
    srv->scratch_cap = SCRATCH_BYTES;
    uv_random(NULL, NULL, srv->node_key, sizeof srv->node_key, 0, NULL);
    for (size_t i = 0; i < sizeof srv->node_key; i++)
        snprintf(srv->node_key_hex + 2 * i, 3, "%02x", srv->node_key[i]);
    proto_buf_init(&srv->http_out, GW_FRAME_HEADROOM);
    srv->window_us = cfg->flush_window_ms * 1000ull;
    gw_fw_init(&srv->flush_window, srv->window_us, cfg->flush_window_max_ms * 1000ull);
    /* The loop's idle time, for adapt_window. Must precede uv_run. */
    uv_loop_configure(uv_loop, UV_METRICS_IDLE_TIME);
    uint8_t *scratch = malloc(LWS_PRE + SCRATCH_BYTES);
    proto_buf_init(&srv->reply, 0);
    if (!scratch || proto_decoder_create(&lim, &srv->dec) != RT_OK ||
        gw_conns_init(&srv->conns, cfg->max_connections + 64) != RT_OK ||
        gw_iplimit_create(&cfg->ip_bucket, IPLIMIT_SLOTS, &srv->iplimit) != RT_OK ||
        gw_connrate_create(&cfg->conn_bucket, &srv->connrate) != RT_OK ||
        gw_pubtimes_create(&srv->pubtimes) != RT_OK || make_fanout(srv, cfg) != RT_OK ||
        gw_presence_create(srv) != RT_OK || gw_users_create(srv) != RT_OK ||
        gw_relay_start(srv) != RT_OK || gw_static_create(cfg, &srv->statics) != RT_OK ||
        gw_api_create(srv) != RT_OK) {
        free(scratch);
        gw_server_free(srv);
        return RT_NOMEM;
    }
    srv->scratch = scratch + LWS_PRE;
    if (gw_tls_create(srv, &srv->tls) != RT_OK || make_context(srv, cfg, uv_loop) != RT_OK ||
        gw_listener_start(srv) != RT_OK || start_sweep(srv) != RT_OK || start_flush(srv) != RT_OK ||
        gw_authz_start(srv) != RT_OK) {
        gw_server_free(srv);
        return RT_ERR;
    }
    if (srv->tls && !cfg->n_allow_origin)
        rt_log(RT_LOG_WARN, "origin_unchecked",
               "msg=\"TLS is on but no --allow-origin is set: any web page may open "
               "WebSockets to this node from its visitors' browsers\"");
    return RT_OK;
}

void gw_server_stop(struct gw_server *srv)
{
    gw_authz_stop(srv);
    stop_flush(srv);
    gw_listener_stop(srv);
    if (srv->sweep_timer) {
        uv_timer_stop(srv->sweep_timer);
        uv_close(srv->sweep_timer, sweep_closed);
        srv->sweep_timer = NULL;
    }
    if (srv->ctx)
        lws_context_destroy(srv->ctx); /* closes every session */
    srv->ctx = NULL;
}

void gw_server_free(struct gw_server *srv)
{
    gw_server_stop(srv);
    gw_hsession_free_all(srv); /* long-polls: no connection of theirs closed them */
    gw_relay_stop(srv);
    gw_api_destroy(srv);
    gw_users_destroy(srv);
    gw_presence_destroy(srv);
    gw_static_destroy(srv->statics);
    srv->statics = NULL;
    fo_destroy(srv->fo);
    srv->fo = NULL;
    proto_decoder_destroy(srv->dec);
    srv->dec = NULL;
    gw_iplimit_destroy(srv->iplimit);
    srv->iplimit = NULL;
    gw_connrate_destroy(srv->connrate);
    srv->connrate = NULL;
    gw_pubtimes_destroy(srv->pubtimes);
    srv->pubtimes = NULL;
    gw_peer_free(srv);
    gw_tls_destroy(srv->tls);
    srv->tls = NULL;
    gw_conns_free(&srv->conns);
    free(srv->dirty);
    srv->dirty = NULL;
    srv->n_dirty = srv->dirty_cap = 0;
    free(srv->held);
    srv->held = NULL;
    srv->n_held = srv->held_cap = 0;
    proto_buf_free(&srv->reply);
    proto_buf_free(&srv->http_out);
    if (srv->scratch)
        free(srv->scratch - LWS_PRE);
    srv->scratch = NULL;
}
