/*
 * api.c: the HTTP side of the server API (api.h, docs/api.md): the key
 * check, routing, request bodies, answers that the engine gives later, and
 * clients that hang up first. The operations are in api_ops.c.
 *
 * A request is checked in this order, so that nothing is learnt or spent
 * before the key is right: an address with too many failed keys gets 429
 * (the key is not even looked at), a missing or wrong key 401 (and counts
 * against the address), then 404 / 405 for the route, 411 / 413 for the
 * body. Only then is anything allocated: a body route gets a request that
 * reads at most --api-max-body-bytes and answers from WRITEABLE. Loop thread.
 */
#include "api.h"

#include <libwebsockets.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#define AUTH_SLOTS 4096 /* addresses with recent failed keys */

struct gw_api {
    char *key; /* never logged */
    size_t key_len;
    struct gw_iplimit *auth_failures; /* per address: failed keys */
    struct rt_bucket pub_bucket;      /* node-wide publishes */
    struct gw_api_req *head;          /* requests in progress */
    uint32_t in_progress;
    uint32_t next_seq;
    uint64_t requests, failed_keys;
    struct gw_api_req get; /* the response of a GET (answered at once) */
};

/* ---- the key ------------------------------------------------------------ */

/* Reads the key file: one line of printable ASCII, GW_API_KEY_MIN bytes at
 * least, surrounding blanks and the newline dropped. Says why it cannot
 * without ever printing the file's bytes. */
static rt_status read_key(const char *path, struct gw_api *api)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        rt_log(RT_LOG_ERROR, "api_key_file", "path=%s error=cannot_open", path);
        return RT_INVAL;
    }
    char buf[GW_API_KEY_MAX + 2];
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    const char *why = NULL;
    if (n > GW_API_KEY_MAX)
        why = "too_long";
    size_t start = 0;
    while (!why && start < n && (buf[start] == ' ' || buf[start] == '\t'))
        start++;
    while (!why && n > start &&
           (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' ' || buf[n - 1] == '\t'))
        n--;
    for (size_t i = start; !why && i < n; i++)
        if (buf[i] < 0x21 || buf[i] > 0x7e)
            why = "not_one_printable_token";
    if (!why && n - start < GW_API_KEY_MIN)
        why = "shorter_than_16_bytes";
    if (!why && !(api->key = malloc(n - start + 1)))
        why = "out_of_memory";
    if (why) {
        rt_log(RT_LOG_ERROR, "api_key_file", "path=%s error=%s", path, why);
        explicit_bzero(buf, sizeof buf);
        return RT_INVAL;
    }
    api->key_len = n - start;
    memcpy(api->key, buf + start, api->key_len);
    api->key[api->key_len] = '\0';
    explicit_bzero(buf, sizeof buf);
    return RT_OK;
}

/*
 * Compares the presented token with the key in time that depends on the
 * token's length only: every byte of it is looked at, whatever the key,
 * and nothing stops early.
 */
static bool key_matches(const struct gw_api *api, const char *tok, size_t len)
{
    volatile uint8_t diff = len != api->key_len;
    for (size_t i = 0; i < len; i++)
        diff |= (uint8_t)((uint8_t)tok[i] ^ (uint8_t)api->key[i % api->key_len]);
    return diff == 0;
}

/* "Authorization: Bearer <key>" with the right key. */
static bool authorized(const struct gw_api *api, struct lws *wsi)
{
    char h[GW_API_KEY_MAX + 64];
    int n = lws_hdr_copy(wsi, h, sizeof h, WSI_TOKEN_HTTP_AUTHORIZATION);
    bool ok = false;
    if (n > 7 && strncasecmp(h, "bearer ", 7) == 0) {
        size_t s = 7, e = (size_t)n;
        while (s < e && h[s] == ' ')
            s++;
        while (e > s && h[e - 1] == ' ')
            e--;
        ok = key_matches(api, h + s, e - s);
    }
    explicit_bzero(h, sizeof h);
    return ok;
}

/* ---- responses ---------------------------------------------------------- */

/*
 * Writes a whole response: the status, a JSON body, Retry-After (seconds,
 * rounded up) when retry_after_ms is set, one extra header if given. With
 * `hang_up` the connection closes after it (a body we did not read may
 * follow the request); otherwise the transaction completes and the
 * connection may carry the next request. Returns lws's convention.
 */
static int respond(struct lws *wsi, unsigned status, uint32_t retry_after_ms, const char *hname,
                   const char *hvalue, const struct proto_buf *body, bool hang_up)
{
    uint8_t hdr[LWS_PRE + 1024];
    uint8_t *start = hdr + LWS_PRE, *p = start, *end = hdr + sizeof hdr - 1;
    if (lws_add_http_common_headers(wsi, status, "application/json", (lws_filepos_t)body->len, &p,
                                    end) ||
        lws_add_http_header_by_name(wsi, (const unsigned char *)"cache-control:",
                                    (const unsigned char *)"no-store", 8, &p, end))
        return -1;
    if (retry_after_ms) {
        char v[16];
        int n = snprintf(v, sizeof v, "%u", (retry_after_ms + 999) / 1000);
        if (lws_add_http_header_by_name(
                wsi, (const unsigned char *)"retry-after:", (const unsigned char *)v, n, &p, end))
            return -1;
    }
    if (hname &&
        lws_add_http_header_by_name(wsi, (const unsigned char *)hname,
                                    (const unsigned char *)hvalue, (int)strlen(hvalue), &p, end))
        return -1;
    if (hang_up && lws_add_http_header_by_token(wsi, WSI_TOKEN_CONNECTION,
                                                (const unsigned char *)"close", 5, &p, end))
        return -1;
    if (lws_finalize_write_http_header(wsi, start, &p, end))
        return -1;
    uint8_t *buf = malloc(LWS_PRE + body->len + 1);
    if (!buf)
        return -1;
    memcpy(buf + LWS_PRE, body->data, body->len);
    int n = lws_write(wsi, buf + LWS_PRE, body->len, LWS_WRITE_HTTP_FINAL);
    free(buf);
    if (n < 0 || hang_up)
        return -1;
    return lws_http_transaction_completed(wsi) ? -1 : 0;
}

/* An error answered before any request state exists. */
static int refuse(struct gw_api *api, struct lws *wsi, int code, const char *message,
                  uint32_t retry_after_ms, const char *hname, const char *hvalue, bool hang_up)
{
    gw_api_error(&api->get, code, message, retry_after_ms);
    return respond(wsi, api->get.status, api->get.retry_after_ms, hname, hvalue, &api->get.resp,
                   hang_up);
}

/* ---- requests ----------------------------------------------------------- */

static struct gw_api_req *req_by_wsi(const struct gw_api *api, const struct lws *wsi)
{
    for (struct gw_api_req *r = api->head; r; r = r->next)
        if (r->wsi == wsi)
            return r;
    return NULL;
}

static struct gw_api_req *req_by_id(const struct gw_api *api, uint64_t id)
{
    for (struct gw_api_req *r = api->head; r; r = r->next)
        if (r->id == id)
            return r;
    return NULL;
}

static struct gw_api_req *req_new(struct gw_api *api, struct lws *wsi, enum gw_api_route route,
                                  size_t body_len)
{
    struct gw_api_req *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->body = malloc(body_len + 1);
    if (!r->body) {
        free(r);
        return NULL;
    }
    r->body_cap = body_len;
    if (++api->next_seq == 0)
        api->next_seq = 1;
    r->id = (uint64_t)api->next_seq << 32;
    r->wsi = wsi;
    r->route = (uint8_t)route;
    r->started_ms = rt_mono_ms();
    proto_buf_init(&r->resp, 0);
    r->next = api->head;
    if (api->head)
        api->head->prev = r;
    api->head = r;
    api->in_progress++;
    return r;
}

static void req_free(struct gw_api *api, struct gw_api_req *r)
{
    if (r->prev)
        r->prev->next = r->next;
    else
        api->head = r->next;
    if (r->next)
        r->next->prev = r->prev;
    api->in_progress--;
    free(r->body);
    free(r->results);
    proto_buf_free(&r->resp);
    free(r);
}

/* The response is ready: written on the next WRITEABLE, or dropped if the
 * client is gone. */
static void req_answer(struct gw_api *api, struct gw_api_req *r)
{
    if (!r->wsi) {
        req_free(api, r);
        return;
    }
    r->answered = true;
    lws_callback_on_writable(r->wsi);
}

/* ---- routing ------------------------------------------------------------ */

static const struct {
    const char *path;
    bool prefix; /* the path continues (a channel name) */
    bool post;
    enum gw_api_route route;
    const char *name; /* for the log */
} routes[] = {
    {"/api/v1/publish", false, true, GW_API_PUBLISH, "publish"},
    {"/api/v1/disconnect", false, true, GW_API_DISCONNECT, "disconnect"},
    {"/api/v1/channels", false, false, GW_API_CHANNELS, "channels"},
    {"/api/v1/channels/", true, false, GW_API_CHANNEL, "channel"},
    {"/api/v1/presence", false, false, GW_API_PRESENCE, "presence"},
    {"/api/v1/node", false, false, GW_API_NODE, "node"},
};

#define N_ROUTES (sizeof routes / sizeof routes[0])

static int find_route(const char *uri)
{
    for (size_t i = 0; i < N_ROUTES; i++) {
        size_t n = strlen(routes[i].path);
        if (routes[i].prefix ? strncmp(uri, routes[i].path, n) == 0 && uri[n]
                             : strcmp(uri, routes[i].path) == 0)
            return (int)i;
    }
    return -1;
}

/* gw_api_arg_fn over lws's URL arguments ("name=value", URL-decoded by
 * lws, which skips an argument longer than its buffer: over 1 KiB counts
 * as absent). */
static int query_arg(void *ctx, const char *name, char *buf, size_t cap)
{
    char key[32], tmp[1024];
    int kn = snprintf(key, sizeof key, "%s=", name);
    if (kn <= 0 || (size_t)kn >= sizeof key)
        return -1;
    const char *v = lws_get_urlarg_by_name(ctx, key, tmp, (int)sizeof tmp);
    if (!v)
        return 0;
    if (strlen(v) >= cap)
        return -1;
    memcpy(buf, v, strlen(v) + 1);
    return 1;
}

/* Content-Length, or -1 when absent or not a plain decimal. */
static long long content_length(struct lws *wsi)
{
    char v[24];
    int n = lws_hdr_copy(wsi, v, sizeof v, WSI_TOKEN_HTTP_CONTENT_LENGTH);
    if (n <= 0)
        return -1;
    long long x = 0;
    for (int i = 0; i < n; i++) {
        if (v[i] < '0' || v[i] > '9' || x > (1ll << 40))
            return -1;
        x = x * 10 + (v[i] - '0');
    }
    return x;
}

bool gw_http_has_body(struct lws *wsi)
{
    return lws_hdr_total_length(wsi, WSI_TOKEN_POST_URI) > 0 ||
           lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_CONTENT_LENGTH) > 0 ||
           lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_TRANSFER_ENCODING) > 0;
}

bool gw_api_path(const char *uri)
{
    return strncmp(uri, GW_API_PREFIX, strlen(GW_API_PREFIX)) == 0 || strcmp(uri, "/api") == 0;
}

/* The request line and headers of an API request (LWS_CALLBACK_HTTP), the API on. */
int gw_api_http(struct gw_server *srv, struct lws *wsi, const char *uri)
{
    struct gw_api *api = srv->api;
    api->requests++;
    bool post = lws_hdr_total_length(wsi, WSI_TOKEN_POST_URI) > 0;
    bool get = lws_hdr_total_length(wsi, WSI_TOKEN_GET_URI) > 0;
    long long clen = content_length(wsi);
    /* A request with a body (read or not) ends its connection with the
     * answer: see gw_http_has_body. */
    bool unread = gw_http_has_body(wsi) || !get;
    /* The client's address (behind --trusted-proxy, the forwarded one), IPv6
     * by its /64 for the limit, as the handshake limit counts it. */
    const struct edge_addr *client = gw_peer_resolve(srv, wsi);
    char peer[EDGE_KEY_TEXT];
    if (client)
        edge_addr_limit_key(client, peer);
    else
        gw_peer_text(srv, wsi, peer);
    uint64_t now = rt_mono_ms();
    uint32_t retry = 0;
    if (gw_iplimit_blocked(api->auth_failures, peer, now, &retry))
        return refuse(api, wsi, RT_E_RATE_LIMITED, "too many failed keys from this address",
                      retry ? retry : 1000, NULL, NULL, unread);
    if (!authorized(api, wsi)) {
        api->failed_keys++;
        gw_iplimit_take(api->auth_failures, peer, now, NULL);
        rt_log(RT_LOG_INFO, "api_auth_failed", "peer=%s", peer);
        return refuse(api, wsi, RT_E_UNAUTHORIZED, "missing or wrong API key", 0,
                      "www-authenticate:", "Bearer realm=\"rtgate\"", unread);
    }
    int i = find_route(uri);
    if (i < 0)
        return refuse(api, wsi, RT_E_NOT_FOUND, "no such API path", 0, NULL, NULL, unread);
    if (routes[i].post ? !post : !get)
        return refuse(api, wsi, 405, "method not allowed", 0,
                      "allow:", routes[i].post ? "POST" : "GET", unread);
    rt_log(RT_LOG_DEBUG, "api_request", "peer=%s route=%s", peer, routes[i].name);
    if (!routes[i].post) {
        proto_buf_reset(&api->get.resp);
        gw_api_get(srv, routes[i].route, uri + strlen(routes[i].path), query_arg, wsi, &api->get);
        return respond(wsi, api->get.status, api->get.retry_after_ms, NULL, NULL, &api->get.resp,
                       unread);
    }
    if (clen < 0)
        return refuse(api, wsi, 411, "Content-Length required", 0, NULL, NULL, true);
    if ((unsigned long long)clen > srv->cfg->api_max_body_bytes)
        return refuse(api, wsi, RT_E_TOO_LARGE, "body over --api-max-body-bytes", 0, NULL, NULL,
                      true);
    if (api->in_progress >= GW_API_REQUESTS_MAX)
        return refuse(api, wsi, RT_E_UNAVAILABLE, "too many API requests in progress", 1000, NULL,
                      NULL, true);
    if (!req_new(api, wsi, routes[i].route, (size_t)clen))
        return refuse(api, wsi, RT_E_UNAVAILABLE, "out of memory", 1000, NULL, NULL, true);
    return 0; /* lws reads the body: gw_api_body, then gw_api_body_done */
}

int gw_api_body(struct gw_server *srv, struct lws *wsi, const void *in, size_t len)
{
    struct gw_api_req *r = srv->api ? req_by_wsi(srv->api, wsi) : NULL;
    if (!r || r->answered || len > r->body_cap - r->body_len)
        return -1; /* a body nobody asked for, or more than announced */
    if (len)
        memcpy(r->body + r->body_len, in, len);
    r->body_len += len;
    return 0;
}

/*
 * The body is in: the operation runs now. An answer known at once is
 * written at once; one the engine gives later is written from WRITEABLE.
 * Either way the connection ends with it (gw_http_has_body).
 */
int gw_api_body_done(struct gw_server *srv, struct lws *wsi)
{
    struct gw_api_req *r = srv->api ? req_by_wsi(srv->api, wsi) : NULL;
    if (!r)
        return -1;
    if (r->body_done)
        return 0; /* lws took bytes sent before the answer for more body: dropped,
                   * and the connection ends with the answer */
    r->body_done = true;
    r->body[r->body_len] = '\0';
    if (r->body_len >= 5 && memcmp(r->body, "POST ", 5) == 0) {
        /* lws 4.1 hands a POST pipelined behind another request its own
         * request line as its body: no JSON starts that way. */
        gw_api_error(r, RT_E_BAD_REQUEST,
                     "a request pipelined behind another: send it after the previous answer", 0);
    } else if (r->route == GW_API_PUBLISH) {
        gw_api_publish(srv, r);
        if (r->n_waiting)
            return 0; /* gw_api_pub_done answers */
    } else {
        gw_api_disconnect(srv, r);
    }
    int rc = respond(wsi, r->status, r->retry_after_ms, NULL, NULL, &r->resp, true);
    req_free(srv->api, r);
    return rc;
}

int gw_api_writable(struct gw_server *srv, struct lws *wsi)
{
    struct gw_api_req *r = srv->api ? req_by_wsi(srv->api, wsi) : NULL;
    if (!r || !r->answered)
        return 0;
    int rc = respond(wsi, r->status, r->retry_after_ms, NULL, NULL, &r->resp, true);
    req_free(srv->api, r);
    return rc;
}

void gw_api_closed(struct gw_server *srv, struct lws *wsi)
{
    struct gw_api_req *r = srv->api ? req_by_wsi(srv->api, wsi) : NULL;
    if (!r)
        return;
    r->wsi = NULL;
    if (!r->n_waiting) {
        req_free(srv->api, r);
        return;
    }
    /* The engine still owes answers: kept (unanswerable) until they come
     * or the deadline passes, so the bound on requests holds. */
    rt_log(RT_LOG_DEBUG, "api_client_gone", "waiting=%u", r->n_waiting);
}

bool gw_api_is_request(uint64_t conn_id)
{
    return conn_id != 0 && (conn_id & 0xffffffffu) == 0;
}

void gw_api_pub_done(struct gw_server *srv, uint64_t id, int64_t index,
                     const struct fo_pub_result *res)
{
    struct gw_api_req *r = srv->api ? req_by_id(srv->api, id) : NULL;
    if (!r || index < 0 || (uint64_t)index >= r->n_items ||
        r->results[index].error != GW_API_PENDING)
        return; /* given up at the deadline: this answer comes too late */
    r->results[index] = *res;
    if (--r->n_waiting == 0) {
        gw_api_publish_answer(r);
        req_answer(srv->api, r);
    }
}

void gw_api_sweep(struct gw_server *srv, uint64_t now_ms)
{
    struct gw_api *api = srv->api;
    if (!api)
        return;
    struct gw_api_req *next;
    for (struct gw_api_req *r = api->head; r; r = next) {
        next = r->next;
        if (r->answered || now_ms - r->started_ms < GW_API_DEADLINE_MS)
            continue;
        if (r->n_waiting) {
            /* The engine's answer is late: say so. The message may still be
             * stored; a retry with the same msg_id cannot store it twice. */
            for (uint32_t i = 0; i < r->n_items; i++)
                if (r->results[i].error == GW_API_PENDING)
                    r->results[i] = (struct fo_pub_result){
                        .error = RT_E_UNAVAILABLE,
                        .error_message = "no answer from the backend in time: outcome unknown, "
                                         "retry with the same msg_id",
                        .retry_after_ms = 1000};
            r->n_waiting = 0;
            rt_log(RT_LOG_WARN, "api_deadline", "waited_ms=%llu",
                   (unsigned long long)(now_ms - r->started_ms));
            gw_api_publish_answer(r);
            req_answer(api, r);
        } else if (r->wsi) {
            /* A body that does not arrive: the connection is cut (lws then
             * reports the close and the request goes). */
            shutdown(lws_get_socket_fd(r->wsi), SHUT_RDWR);
        }
    }
}

bool gw_api_take_publish(struct gw_server *srv, uint32_t *retry_after_ms)
{
    return rt_bucket_take(&srv->api->pub_bucket, &srv->cfg->api_pub_bucket, rt_mono_ms(),
                          retry_after_ms);
}

void gw_api_counts(const struct gw_server *srv, uint64_t *requests, uint64_t *in_progress,
                   uint64_t *failed_keys)
{
    const struct gw_api *api = srv->api;
    *requests = api ? api->requests : 0;
    *in_progress = api ? api->in_progress : 0;
    *failed_keys = api ? api->failed_keys : 0;
}

rt_status gw_api_create(struct gw_server *srv)
{
    srv->api = NULL;
    const struct gw_config *cfg = srv->cfg;
    if (!cfg->api_key_file[0])
        return RT_OK;
    struct gw_api *api = calloc(1, sizeof *api);
    if (!api)
        return RT_NOMEM;
    proto_buf_init(&api->get.resp, 0);
    rt_bucket_init(&api->pub_bucket, &cfg->api_pub_bucket, rt_mono_ms());
    if (read_key(cfg->api_key_file, api) != RT_OK ||
        gw_iplimit_create(&cfg->api_auth_bucket, AUTH_SLOTS, &api->auth_failures) != RT_OK) {
        srv->api = api;
        gw_api_destroy(srv);
        return RT_INVAL;
    }
    srv->api = api;
    rt_log(RT_LOG_INFO, "api_enabled", "key_file=%s", cfg->api_key_file);
    return RT_OK;
}

void gw_api_destroy(struct gw_server *srv)
{
    struct gw_api *api = srv->api;
    if (!api)
        return;
    while (api->head)
        req_free(api, api->head);
    if (api->key) {
        explicit_bzero(api->key, api->key_len);
        free(api->key);
    }
    gw_iplimit_destroy(api->auth_failures);
    proto_buf_free(&api->get.resp);
    free(api);
    srv->api = NULL;
}
