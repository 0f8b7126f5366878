/*
 * nats_live.c: the nats engine's loop-thread subscriber (nats_live.h).
 *
 * One connection at a time (struct lrc, freed by its close callback); the
 * reader itself (struct lr) is freed when the last of its handles is
 * closed. States: IDLE (waiting to retry) -> RESOLVING -> CONNECTING ->
 * HANDSHAKE (INFO read; TLS when wanted or required, through nats_tls.c's
 * memory buffers; CONNECT + PING sent, waiting for the PONG) -> UP. Any
 * error, EOF, protocol violation or a handshake past LR_CONNECT_MS goes
 * back to IDLE with a retry timer, towards the next server of the list:
 * the configured ones in a random order (so a fleet's readers spread over
 * a cluster), then those the cluster announced (INFO connect_urls).
 */
#include "nats_live.h"
#include "nats_creds.h"
#include "nats_tls.h"
#include "nats_url.h"
#include "protocol.h"

#include <errno.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <arpa/inet.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#define LR_RETRY_MS      250u
#define LR_CONNECT_MS    2000u
#define LR_PING_MS       5000u
#define LR_PINGS_MAX     2u
#define LR_READ_CHUNK    ((size_t)64 << 10)
#define LR_WINDOW_READ   ((size_t)1 << 20) /* bytes read per window tick at most */
#define LR_PAYLOAD_DEF   ((size_t)1 << 20)
#define LR_PAYLOAD_CAP   ((size_t)64 << 20)
#define LR_KEEP_CAP      ((size_t)256 << 10) /* an empty input buffer above this is freed */
#define LR_SERVERS_MAX   64                  /* configured and announced servers kept */
#define LR_ANNOUNCED_MAX 256                 /* connect_urls entries looked at per INFO */
#define LR_NONCE_MAX     128                 /* longest INFO nonce taken */
#define LR_TLS_CHUNK     ((size_t)64 << 10)  /* TLS records read from the socket at once */
#define LR_TLS_RECORD    ((size_t)16 << 10)  /* room for one record's plaintext */
/* Queued writes (with their requests' own size) beyond which a server that
 * does not read is dropped: a PING flood must not queue PONGs without end. */
#define LR_WQ_MAX ((size_t)8 << 20)

enum lr_state { LR_IDLE, LR_RESOLVING, LR_CONNECTING, LR_HANDSHAKE, LR_UP };

struct lr_server {
    struct nats_url url; /* host, port, credentials */
    bool announced;      /* learnt from a server's connect_urls, not configured */
    char tls_name[256];  /* announced by IP: the name its certificate is checked against */
};

/* An lr_confirm waiting for the PONG numbered `pong` (see lr.pongs). */
struct lr_confirm_wait {
    struct lr_confirm_wait *next;
    uint64_t pong;
    lr_confirm_fn fn;
    void *arg;
};

struct lrc {
    uv_tcp_t tcp;
    uv_connect_t creq;
    struct lr *lr;
    size_t wq_bytes;              /* queued write requests, their struct included */
    struct ntls *tls;             /* NULL until the server's INFO asked for TLS (or we did) */
    bool tls_ready;               /* handshake done: CONNECT went out through it */
    uint8_t *cipher;              /* TLS records read from the socket (LR_TLS_CHUNK) */
    char tls_why[200];            /* why the session failed, for the log */
    char nonce[LR_NONCE_MAX + 1]; /* INFO's, signed in CONNECT with --nats-creds/--nats-nkey */
};

struct lr {
    uv_loop_t *loop;
    struct lr_hooks h;
    char *name;
    uint32_t window_ms;
    struct lr_server *servers; /* configured (shuffled), then announced ones */
    size_t n_servers, cur, servers_cap;
    struct ntls_ctx *tls_ctx; /* trust and client certificate, for every TLS session */
    bool tls_wanted;          /* a tls:// URL, --nats-ca or a client certificate */
    struct ncreds *creds;     /* --nats-creds / --nats-nkey, or NULL */

    enum lr_state st;
    struct lrc *c; /* current connection, NULL in IDLE / RESOLVING */
    uv_getaddrinfo_t gai;
    bool gai_busy;
    struct addrinfo *ai;               /* the current server's addresses, while connecting */
    const struct addrinfo *ai_untried; /* those after the one being tried */
    uv_timer_t ctl_timer;              /* retry, connect timeout */
    uv_timer_t io_timer;               /* read window */
    uv_timer_t ping_timer;             /* keepalive while UP */
    int refs;                          /* open handles and pending requests, +1 until destroy */
    bool dying;
    bool failing_logged;     /* one log line per outage, not one per retry */
    uint64_t err_log_ms;     /* last -ERR logged while UP (at most one a second) */
    uint64_t err_quiet;      /* -ERRs not logged since */
    uint64_t servers_log_ms; /* last change of the server list logged at info level */

    uint8_t *in;
    size_t in_len, in_cap;
    char *cork; /* while replaying: SUBs gathered for one write */
    size_t cork_len, cork_cap;
    bool corked;
    size_t max_payload;
    uint32_t pings_out;
    bool windowed; /* reading on io_timer */
    uint64_t last_read_ms;
    uint64_t next_sid;
    /* lr_confirm: waiters in PING order; PONGs answer PINGs in order, so the
     * one answering a PING is numbered pongs + pings_out when it is sent. On
     * a lost connection the waiters are answered from the retry timer. */
    struct lr_confirm_wait *confirm_head, *confirm_tail;
    uint64_t pongs; /* PONGs to our PINGs, counted over every connection */
    struct lr_stats stats;
};

static void lr_fail(struct lr *lr, const char *why);
static void lr_connect_next(struct lr *lr);
static void lr_process(struct lr *lr);
static bool lr_room(struct lr *lr, size_t want);

/* -------------------------------------------------------------------- */
/* Lifetime                                                               */

static void forget_addresses(struct lr *lr)
{
    if (lr->ai)
        uv_freeaddrinfo(lr->ai);
    lr->ai = NULL;
    lr->ai_untried = NULL;
}

/* The list goes with the credentials its URLs held. */
static void free_servers(struct lr_server *servers, size_t cap)
{
    if (servers)
        OPENSSL_cleanse(servers, cap * sizeof(*servers));
    free(servers);
}

static void lr_unref(struct lr *lr)
{
    if (--lr->refs > 0)
        return;
    forget_addresses(lr);
    free(lr->in);
    free_servers(lr->servers, lr->servers_cap);
    ntls_ctx_destroy(lr->tls_ctx);
    ncreds_free(lr->creds);
    free(lr->name);
    free(lr);
}

static void handle_closed(uv_handle_t *h)
{
    lr_unref(h->data);
}

static void conn_closed(uv_handle_t *h)
{
    struct lrc *c = h->data;
    struct lr *lr = c->lr;
    ntls_free(c->tls);
    free(c->cipher);
    free(c);
    lr_unref(lr);
}

/* Closes the current connection (if any) and forgets its unread bytes. */
static void conn_drop(struct lr *lr)
{
    struct lrc *c = lr->c;
    lr->c = NULL;
    if (c)
        uv_close((uv_handle_t *)&c->tcp, conn_closed);
    uv_timer_stop(&lr->io_timer);
    uv_timer_stop(&lr->ping_timer);
    lr->in_len = 0;
    lr->windowed = false;
    lr->pings_out = 0;
}

/* -------------------------------------------------------------------- */
/* Output                                                                 */

struct lr_wreq {
    uv_write_t req;
    uv_buf_t buf;
    char data[];
};

/* Runs before the connection's close callback, so c is still there. */
static void write_done(uv_write_t *req, int status)
{
    struct lr_wreq *w = RT_CONTAINER(req, struct lr_wreq, req);
    struct lrc *c = req->data;
    c->wq_bytes -= sizeof(*w) + w->buf.len;
    free(w);
    if (status < 0 && status != UV_ECANCELED && c == c->lr->c)
        lr_fail(c->lr, uv_strerror(status));
}

/* Bytes to the socket as they are: what fits now, the rest queued in order. */
static bool send_raw(struct lr *lr, const char *p, size_t n)
{
    uv_stream_t *s = (uv_stream_t *)&lr->c->tcp;
    if (uv_stream_get_write_queue_size(s) == 0) {
        uv_buf_t b = uv_buf_init((char *)p, (unsigned)n);
        int r = uv_try_write(s, &b, 1);
        if (r == (int)n)
            return true;
        if (r < 0 && r != UV_EAGAIN) {
            lr_fail(lr, uv_strerror(r));
            return false;
        }
        if (r > 0) {
            p += r;
            n -= (size_t)r;
        }
    }
    struct lrc *c = lr->c;
    if (c->wq_bytes > 0 && c->wq_bytes + sizeof(struct lr_wreq) + n > LR_WQ_MAX) {
        lr_fail(lr, "the server does not read what it is sent");
        return false;
    }
    struct lr_wreq *w = malloc(sizeof(*w) + n);
    if (!w) {
        lr_fail(lr, "out of memory");
        return false;
    }
    memcpy(w->data, p, n);
    w->buf = uv_buf_init(w->data, (unsigned)n);
    w->req.data = c;
    int r = uv_write(&w->req, s, &w->buf, 1, write_done);
    if (r < 0) {
        free(w);
        lr_fail(lr, uv_strerror(r));
        return false;
    }
    c->wq_bytes += sizeof(*w) + n;
    return true;
}

/* The TLS records the session has ready (handshake messages, encrypted ops), to the socket. */
static bool send_tls_records(struct lr *lr)
{
    char chunk[LR_TLS_RECORD];
    while (lr->c && ntls_pending(lr->c->tls) > 0) {
        size_t n = ntls_take(lr->c->tls, chunk, sizeof(chunk));
        if (n == 0 || !send_raw(lr, chunk, n))
            break;
    }
    return lr->c != NULL;
}

/* Sends what fits now; queues the rest in order. False if the connection broke. */
static bool lr_send(struct lr *lr, const char *p, size_t n)
{
    if (!lr->c || n == 0)
        return lr->c != NULL;
    if (lr->corked) {
        if (lr->cork_cap - lr->cork_len < n) {
            size_t cap = lr->cork_cap ? lr->cork_cap * 2 : 65536;
            while (cap - lr->cork_len < n)
                cap *= 2;
            char *b = realloc(lr->cork, cap);
            if (!b) {
                lr_fail(lr, "out of memory");
                return false;
            }
            lr->cork = b;
            lr->cork_cap = cap;
        }
        memcpy(lr->cork + lr->cork_len, p, n);
        lr->cork_len += n;
        return true;
    }
    if (!lr->c->tls)
        return send_raw(lr, p, n);
    if (ntls_write(lr->c->tls, p, n) != RT_OK) {
        lr_fail(lr, "TLS: cannot encrypt");
        return false;
    }
    return send_tls_records(lr);
}

static void send_connect(struct lr *lr)
{
    const struct lr_server *sv = &lr->servers[lr->cur];
    json_t *o = json_pack("{s:b,s:b,s:i,s:b,s:b,s:s,s:s,s:s}", "verbose", 0, "pedantic", 0,
                          "protocol", 1, "headers", 1, "no_responders", 0, "name", lr->name, "lang",
                          "c-rtgate", "version", "1");
    if (o && sv->url.user[0]) {
        json_object_set_new(o, "user", json_string(sv->url.user));
        json_object_set_new(o, "pass", json_string(sv->url.pass));
    }
    if (o && sv->url.token[0])
        json_object_set_new(o, "auth_token", json_string(sv->url.token));
    if (o && lr->c->tls)
        json_object_set_new(o, "tls_required", json_true());
    const char *nonce = lr->c->nonce;
    rt_status st =
        o && lr->creds ? ncreds_connect_fields(lr->creds, nonce, strlen(nonce), o) : RT_OK;
    char *js = o && st == RT_OK ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    if (st == RT_INVAL) {
        lr_fail(lr, "the server sent no nonce to sign: it does not take NKeys or user JWTs");
        return;
    }
    if (!js) {
        lr_fail(lr, st == RT_OK ? "out of memory" : "cannot sign the server's nonce");
        return;
    }
    size_t n = strlen(js);
    char *line = malloc(n + 32);
    if (line) {
        int k = snprintf(line, n + 32, "CONNECT %s\r\nPING\r\n", js);
        lr->pings_out++;
        lr_send(lr, line, (size_t)k);
        OPENSSL_cleanse(line, (size_t)k); /* a password, token or JWT */
    } else {
        lr_fail(lr, "out of memory");
    }
    free(line);
    OPENSSL_cleanse(js, n);
    free(js);
}

/* -------------------------------------------------------------------- */
/* TLS (after the server's INFO, before CONNECT)                          */

/*
 * Decrypts what the session holds into lr->in past in_len + *got (growing
 * the buffer within lr_room's bound; in_len itself is the caller's to move).
 * 0 when it needs more of the socket, -1 when the session failed (c->tls_why).
 */
static int tls_decrypt(struct lr *lr, size_t *got)
{
    struct lrc *c = lr->c;
    for (;;) {
        size_t in_len = lr->in_len;
        lr->in_len += *got; /* the room is measured past what is already decrypted */
        bool room = lr_room(lr, LR_TLS_RECORD);
        lr->in_len = in_len;
        if (!room) {
            snprintf(c->tls_why, sizeof(c->tls_why), "an operation larger than the input buffer");
            return -1;
        }
        size_t at = lr->in_len + *got;
        ssize_t k = ntls_read(c->tls, lr->in + at, lr->in_cap - at, c->tls_why, sizeof(c->tls_why));
        if (k <= 0)
            return (int)k;
        *got += (size_t)k;
    }
}

/* Decrypts and handles everything the session holds; false if the connection failed. */
static bool tls_drain(struct lr *lr)
{
    struct lrc *c = lr->c;
    size_t got = 0;
    int r = tls_decrypt(lr, &got);
    lr->in_len += got;
    if (got > 0)
        lr_process(lr);
    if (lr->c == c && r < 0) {
        char why[256];
        snprintf(why, sizeof(why), "TLS: %s", c->tls_why);
        lr_fail(lr, why);
    }
    return lr->c == c && send_tls_records(lr); /* a key update may want an answer */
}

/* One step of the handshake; once done, CONNECT goes out through it. False if it failed. */
static bool tls_handshake_step(struct lr *lr)
{
    struct lrc *c = lr->c;
    char why[200], msg[256];
    rt_status st = ntls_handshake(c->tls, why, sizeof(why));
    if (!send_tls_records(lr))
        return false;
    if (st == RT_AGAIN)
        return true;
    if (st != RT_OK) {
        snprintf(msg, sizeof(msg), "TLS handshake failed: %s", why);
        lr_fail(lr, msg);
        return false;
    }
    c->tls_ready = true;
    send_connect(lr);
    return lr->c == c;
}

/* TLS records just read into c->cipher. */
static void tls_input(struct lr *lr, size_t n)
{
    struct lrc *c = lr->c;
    if (ntls_put(c->tls, c->cipher, n) != RT_OK) {
        lr_fail(lr, "out of memory");
        return;
    }
    if (!c->tls_ready && !tls_handshake_step(lr))
        return;
    if (lr->c == c && c->tls_ready)
        tls_drain(lr);
}

/* Starts TLS on the connection (the ClientHello goes out); the certificate must name the server. */
static void start_tls(struct lr *lr)
{
    struct lrc *c = lr->c;
    const struct lr_server *sv = &lr->servers[lr->cur];
    char err[256];
    /* TLS unasked (no file given: the system's trusted CAs), once. */
    if (!lr->tls_ctx && ntls_ctx_create(NULL, NULL, NULL, err, sizeof(err), &lr->tls_ctx)) {
        lr_fail(lr, err);
        return;
    }
    c->cipher = malloc(LR_TLS_CHUNK);
    rt_status st =
        c->cipher ? ntls_start(lr->tls_ctx, sv->tls_name[0] ? sv->tls_name : sv->url.host, &c->tls)
                  : RT_NOMEM;
    if (st != RT_OK) {
        lr_fail(lr, st == RT_NOMEM ? "out of memory" : "TLS: the server's name is not usable");
        return;
    }
    tls_handshake_step(lr);
}

/* -------------------------------------------------------------------- */
/* Servers announced by the cluster (INFO connect_urls)                   */

static size_t find_server(const struct lr *lr, const char *host, const char *port)
{
    for (size_t i = 0; i < lr->n_servers; i++)
        if (!strcasecmp(lr->servers[i].url.host, host) && !strcmp(lr->servers[i].url.port, port))
            return i;
    return lr->n_servers;
}

static bool is_ip_literal(const char *host)
{
    unsigned char buf[16];
    return inet_pton(AF_INET, host, buf) == 1 || inet_pton(AF_INET6, host, buf) == 1;
}

/* Room for one more server; false at LR_SERVERS_MAX or without memory. */
static bool servers_grow(struct lr *lr)
{
    if (lr->n_servers < lr->servers_cap)
        return true;
    size_t cap = lr->servers_cap * 2;
    if (lr->n_servers >= LR_SERVERS_MAX)
        return false;
    if (cap > LR_SERVERS_MAX)
        cap = LR_SERVERS_MAX;
    struct lr_server *p = calloc(cap, sizeof(*p));
    if (!p)
        return false;
    memcpy(p, lr->servers, lr->n_servers * sizeof(*p));
    free_servers(lr->servers, lr->servers_cap);
    lr->servers = p;
    lr->servers_cap = cap;
    return true;
}

/* An announced server, with the credentials of the one that announced it (as Go's client). */
static void add_announced(struct lr *lr, const struct lr_server *from, struct lr_server *sv)
{
    memcpy(sv->url.user, from->url.user, sizeof(sv->url.user));
    memcpy(sv->url.pass, from->url.pass, sizeof(sv->url.pass));
    memcpy(sv->url.token, from->url.token, sizeof(sv->url.token));
    sv->announced = true;
    /* A cluster announces IPs; a certificate names the host the URL named (as nats.c checks). */
    const char *name = from->tls_name[0] ? from->tls_name : from->url.host;
    if (is_ip_literal(sv->url.host) && !is_ip_literal(name))
        snprintf(sv->tls_name, sizeof(sv->tls_name), "%s", name);
    lr->servers[lr->n_servers++] = *sv;
    rt_log(RT_LOG_DEBUG, "nats_live_server_announced", "server=%s:%s", sv->url.host, sv->url.port);
}

/* One line when the list changed, at most one a second at info level (a server may
 * send INFO after INFO). */
static void log_servers(struct lr *lr, size_t added, size_t forgotten)
{
    uint64_t now = uv_now(lr->loop);
    bool quiet = lr->servers_log_ms && now - lr->servers_log_ms < 1000;
    if (added + forgotten == 0)
        return;
    if (!quiet)
        lr->servers_log_ms = now;
    rt_log(quiet ? RT_LOG_DEBUG : RT_LOG_INFO, "nats_live_servers",
           "servers=%zu announced_new=%zu forgotten=%zu from=%s:%s", lr->n_servers, added,
           forgotten, lr->servers[lr->cur].url.host, lr->servers[lr->cur].url.port);
}

/*
 * Merges an INFO's connect_urls (host:port strings) into the server list:
 * new ones are added (up to LR_SERVERS_MAX), announced ones no longer in it
 * are forgotten (never the current one; configured ones stay).
 */
static void merge_connect_urls(struct lr *lr, json_t *urls)
{
    if (!json_is_array(urls))
        return;
    bool listed[LR_SERVERS_MAX] = {false};
    struct lr_server from = lr->servers[lr->cur], sv;
    size_t i, added = 0, forgotten = 0;
    json_t *v;
    json_array_foreach(urls, i, v)
    {
        const char *u = json_string_value(v);
        if (i >= LR_ANNOUNCED_MAX)
            break;
        /* host:port only: no scheme, no userinfo, nothing nats_url_parse would refuse */
        memset(&sv, 0, sizeof(sv));
        if (!u || strchr(u, '@') || strstr(u, "://") || !nats_url_parse(u, strlen(u), &sv.url))
            continue;
        size_t at = find_server(lr, sv.url.host, sv.url.port);
        if (at == lr->n_servers && servers_grow(lr)) {
            add_announced(lr, &from, &sv);
            added++;
        }
        if (at < LR_SERVERS_MAX)
            listed[at] = true;
    }
    size_t kept = 0, cur = 0;
    for (size_t k = 0; k < lr->n_servers; k++) {
        if (lr->servers[k].announced && !listed[k] && k != lr->cur) {
            rt_log(RT_LOG_DEBUG, "nats_live_server_forgotten", "server=%s:%s",
                   lr->servers[k].url.host, lr->servers[k].url.port);
            forgotten++;
            continue;
        }
        if (k == lr->cur)
            cur = kept;
        lr->servers[kept++] = lr->servers[k];
    }
    if (kept < lr->n_servers)
        OPENSSL_cleanse(lr->servers + kept, (lr->n_servers - kept) * sizeof(*lr->servers));
    lr->n_servers = kept;
    lr->cur = cur;
    log_servers(lr, added, forgotten);
    OPENSSL_cleanse(&from, sizeof(from));
    OPENSSL_cleanse(&sv, sizeof(sv));
}

/* -------------------------------------------------------------------- */
/* The server's INFO                                                      */

/* The handshake's INFO: limits, TLS, the nonce; then TLS or CONNECT. */
static void on_first_info(struct lr *lr, json_t *o)
{
    struct lrc *c = lr->c;
    json_int_t mp = json_integer_value(json_object_get(o, "max_payload"));
    bool tls_required = json_is_true(json_object_get(o, "tls_required"));
    bool tls_available = json_is_true(json_object_get(o, "tls_available"));
    bool headers = json_is_true(json_object_get(o, "headers"));
    const char *nonce = json_string_value(json_object_get(o, "nonce"));
    if (!headers) {
        lr_fail(lr, "the server does not support headers");
        return;
    }
    if (nonce && strlen(nonce) > LR_NONCE_MAX) {
        lr_fail(lr, "INFO's nonce is too long");
        return;
    }
    snprintf(c->nonce, sizeof(c->nonce), "%s", nonce ? nonce : "");
    lr->max_payload = mp > 0 ? (size_t)mp : LR_PAYLOAD_DEF;
    if (lr->max_payload > LR_PAYLOAD_CAP)
        lr->max_payload = LR_PAYLOAD_CAP;
    if (lr->tls_wanted && !tls_required && !tls_available) {
        lr_fail(lr, "TLS was asked for (a tls:// URL, --nats-ca or --nats-tls-cert) and the "
                    "server does not offer it");
        return;
    }
    /* A server that requires TLS gets it even unasked, as nats.c does. */
    if (lr->tls_wanted || tls_required)
        start_tls(lr);
    else
        send_connect(lr);
}

/*
 * INFO: during the handshake it decides how to go on; any INFO (a cluster
 * sends updates while connected) may announce servers.
 */
static void on_info(struct lr *lr, const char *arg, size_t len)
{
    bool first = lr->st == LR_HANDSHAKE && lr->pings_out == 0 && !lr->c->tls;
    json_error_t err;
    json_t *o = json_loadb(arg, len, 0, &err);
    if (!json_is_object(o)) {
        json_decref(o);
        if (first)
            lr_fail(lr, "INFO is not a JSON object");
        return; /* a broken update changes nothing */
    }
    merge_connect_urls(lr, json_object_get(o, "connect_urls"));
    if (first)
        on_first_info(lr, o);
    json_decref(o);
}

/* -------------------------------------------------------------------- */
/* Input                                                                  */

static void on_ping_timer(uv_timer_t *t)
{
    struct lr *lr = t->data;
    if (lr->st != LR_UP)
        return;
    if (lr->pings_out >= LR_PINGS_MAX) {
        lr_fail(lr, "no PONG to the last PINGs");
        return;
    }
    lr->pings_out++;
    lr_send(lr, "PING\r\n", 6);
}

static void became_up(struct lr *lr)
{
    lr->st = LR_UP;
    lr->stats.connects++;
    uv_timer_stop(&lr->ctl_timer);
    const struct lr_server *sv = &lr->servers[lr->cur];
    rt_log(RT_LOG_INFO, "nats_live_connected", "server=%s:%s tls=%s announced=%s connects=%llu",
           sv->url.host, sv->url.port, lr->c->tls ? ntls_version(lr->c->tls) : "no",
           sv->announced ? "yes" : "no", (unsigned long long)lr->stats.connects);
    lr->failing_logged = false;
    forget_addresses(lr); /* after a loss: the next server */
    /* Every SUB in one write. */
    if (lr->h.replay) {
        lr->corked = true;
        lr->h.replay(lr->h.ctx, lr);
        lr->corked = false;
        if (lr->c)
            lr_send(lr, lr->cork, lr->cork_len);
        free(lr->cork);
        lr->cork = NULL;
        lr->cork_len = lr->cork_cap = 0;
        if (!lr->c)
            return; /* the resubscribe failed: lr_fail stopped the keepalive, keep it so */
    }
    uv_timer_start(&lr->ping_timer, on_ping_timer, LR_PING_MS, LR_PING_MS);
}

/*
 * A -ERR's text, quoted and cut to 200 bytes; while UP at most one line a
 * second (a server repeating -ERR must not flood the log: the others are
 * counted in the next line).
 */
static void log_server_error(struct lr *lr, const char *arg, size_t len)
{
    uint64_t now = uv_now(lr->loop);
    if (lr->st == LR_UP && lr->err_log_ms && now - lr->err_log_ms < 1000) {
        lr->err_quiet++;
        return;
    }
    if (lr->st != LR_UP && lr->failing_logged)
        return; /* refused again while retrying: the outage was logged once */
    char text[201];
    size_t n = len < sizeof(text) - 1 ? len : sizeof(text) - 1;
    for (size_t i = 0; i < n; i++) /* no quote, backslash or control byte in a log value */
        text[i] = arg[i] >= 0x20 && arg[i] < 0x7f && arg[i] != '"' && arg[i] != '\\' ? arg[i] : '?';
    text[n] = 0;
    rt_log(RT_LOG_WARN, "nats_live_server_error", "msg=\"%s\" not_logged=%llu", text,
           (unsigned long long)lr->err_quiet);
    lr->err_quiet = 0;
    lr->err_log_ms = lr->st == LR_UP ? now : 0;
}

/* Answers the lr_confirm waiters whose PONG came (in order; fn may add more). */
static void confirm_answered(struct lr *lr)
{
    while (lr->confirm_head && lr->confirm_head->pong <= lr->pongs) {
        struct lr_confirm_wait *w = lr->confirm_head;
        lr->confirm_head = w->next;
        if (!lr->confirm_head)
            lr->confirm_tail = NULL;
        lr_confirm_fn fn = w->fn;
        void *arg = w->arg;
        free(w);
        fn(arg, RT_OK);
    }
}

/* The connection the waiters' PINGs went out on is gone: each fails (fn may add more). */
static void confirm_fail_all(struct lr *lr)
{
    struct lr_confirm_wait *w = lr->confirm_head;
    lr->confirm_head = lr->confirm_tail = NULL;
    while (w) {
        struct lr_confirm_wait *next = w->next;
        lr->stats.confirm_failures++;
        w->fn(w->arg, RT_UNAVAILABLE);
        free(w);
        w = next;
    }
}

/* Handles every complete op in the input buffer; keeps the rest. */
static void lr_process(struct lr *lr)
{
    size_t off = 0;
    struct lrc *c = lr->c;
    while (off < lr->in_len && lr->c == c && c) {
        size_t used = 0;
        struct nw_msg m;
        const char *arg = NULL;
        size_t arg_len = 0;
        enum nw_op op =
            nw_scan(lr->in + off, lr->in_len - off, lr->max_payload, &used, &m, &arg, &arg_len);
        if (op == NW_MORE)
            break;
        if (op == NW_BAD) {
            lr->stats.bad++;
            lr_fail(lr, "protocol error from the server");
            return;
        }
        off += used;
        switch (op) {
        case NW_MSG:
            if (lr->st == LR_UP) {
                lr->stats.msgs++;
                lr->stats.bytes += m.data_len;
                if (lr->h.msg)
                    lr->h.msg(lr->h.ctx, &m);
            }
            break;
        case NW_PING:
            lr_send(lr, "PONG\r\n", 6);
            break;
        case NW_PONG:
            /* Only an answer to a PING of ours counts: an unsolicited PONG
             * before INFO must not complete a handshake that sent no CONNECT. */
            if (lr->pings_out == 0)
                break;
            lr->pings_out--;
            lr->pongs++;
            if (lr->st == LR_HANDSHAKE && lr->pings_out == 0)
                became_up(lr);
            else
                confirm_answered(lr);
            break;
        case NW_INFO:
            on_info(lr, arg, arg_len);
            if (lr->c == c && c->tls && !c->tls_ready && off < lr->in_len) {
                lr_fail(lr, "bytes after INFO, before the TLS handshake");
                return;
            }
            break;
        case NW_ERR:
            log_server_error(lr, arg, arg_len);
            if (lr->st != LR_UP) {
                lr_fail(lr, "refused by the server");
                return;
            }
            break;
        default:
            break;
        }
    }
    if (lr->c != c || !c)
        return; /* failed meanwhile: the buffer was reset */
    if (off == 0)
        return; /* nothing consumed; lr->in may be NULL (freed while empty) */
    memmove(lr->in, lr->in + off, lr->in_len - off);
    lr->in_len -= off;
    if (lr->in_len == 0 && lr->in_cap > LR_KEEP_CAP) {
        free(lr->in);
        lr->in = NULL;
        lr->in_cap = 0;
    }
}

/* Room for at least `want` more bytes (within the largest op allowed). */
static bool lr_room(struct lr *lr, size_t want)
{
    size_t max = lr->max_payload + NW_LINE_MAX + LR_READ_CHUNK + LR_TLS_RECORD;
    if (lr->in_cap - lr->in_len >= want)
        return true;
    size_t cap = lr->in_cap ? lr->in_cap * 2 : LR_READ_CHUNK;
    while (cap - lr->in_len < want)
        cap *= 2;
    if (cap > max)
        cap = max;
    if (cap <= lr->in_len)
        return false;
    uint8_t *p = realloc(lr->in, cap);
    if (!p)
        return false;
    lr->in = p;
    lr->in_cap = cap;
    return true;
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    (void)hint;
    struct lrc *c = h->data;
    struct lr *lr = c->lr;
    if (c == lr->c && c->tls) {
        *buf = uv_buf_init((char *)c->cipher, (unsigned)LR_TLS_CHUNK);
        return;
    }
    if (c != lr->c || !lr_room(lr, LR_READ_CHUNK / 4)) {
        *buf = uv_buf_init(NULL, 0); /* libuv reports UV_ENOBUFS */
        return;
    }
    /* 64 KiB at most however large the buffer grew: libuv reads up to 32
     * times per readiness, and each read is handled before the next. */
    size_t room = lr->in_cap - lr->in_len;
    if (room > LR_READ_CHUNK)
        room = LR_READ_CHUNK;
    *buf = uv_buf_init((char *)lr->in + lr->in_len, (unsigned)room);
}

static void on_io_timer(uv_timer_t *t);

/* Reads on readiness; a read soon after the previous one switches to the window timer. */
static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    (void)buf;
    struct lrc *c = s->data;
    struct lr *lr = c->lr;
    if (c != lr->c)
        return;
    if (n < 0) {
        lr_fail(lr, n == UV_EOF ? "closed by the server" : uv_strerror((int)n));
        return;
    }
    if (n == 0)
        return;
    lr->stats.wakeups++;
    if (c->tls) {
        tls_input(lr, (size_t)n);
    } else {
        lr->in_len += (size_t)n;
        lr_process(lr);
    }
    if (lr->c != c || lr->st != LR_UP || lr->window_ms == 0)
        return;
    uint64_t now = uv_now(lr->loop);
    if (now - lr->last_read_ms <= lr->window_ms) {
        uv_read_stop(s);
        lr->windowed = true;
        uv_timer_start(&lr->io_timer, on_io_timer, lr->window_ms, 0);
    }
    lr->last_read_ms = now;
}

/* Why a read failed, for lr_fail: the TLS session's reason, or the system's. */
static const char *io_error(struct lrc *c, int err)
{
    return err == EPROTO && c->tls_why[0] ? c->tls_why : strerror(err);
}

/*
 * Reads what the socket has, without waiting, as plaintext appended at
 * lr->in + lr->in_len (the caller then moves in_len), with recv()'s
 * contract: > 0 bytes, 0 at EOF, -1 with errno (EAGAIN: nothing yet, a TLS
 * record not complete included; EPROTO: the TLS session failed, c->tls_why).
 * Plain: at most `room` bytes, the room the caller made. TLS: one read of
 * the socket, everything it completes decrypted (lr->in may grow and move,
 * within lr_room's bound).
 */
static ssize_t lr_recv_plain(struct lr *lr, int fd, size_t room)
{
    struct lrc *c = lr->c;
    if (!c->tls)
        return recv(fd, lr->in + lr->in_len, room, MSG_DONTWAIT);
    size_t got = 0;
    int d = tls_decrypt(lr, &got); /* what earlier reads left complete */
    if (d == 0 && got == 0) {
        ssize_t r = recv(fd, c->cipher, LR_TLS_CHUNK, MSG_DONTWAIT);
        if (r <= 0)
            return r;
        if (ntls_put(c->tls, c->cipher, (size_t)r) != RT_OK) {
            errno = ENOMEM;
            return -1;
        }
        d = tls_decrypt(lr, &got);
    }
    if (d < 0) {
        errno = EPROTO;
        return -1;
    }
    if (got == 0)
        errno = EAGAIN;
    return got > 0 ? (ssize_t)got : -1;
}

/* Reads and handles what is there, without waiting; -1 if the connection failed. */
static ssize_t read_now(struct lr *lr, size_t limit)
{
    struct lrc *c = lr->c;
    int fd = -1;
    if (!c || uv_fileno((uv_handle_t *)&c->tcp, &fd) != 0)
        return -1;
    size_t got = 0;
    while (got < limit) {
        if (!lr_room(lr, LR_READ_CHUNK / 4)) {
            lr_fail(lr, "an operation larger than the input buffer");
            return -1;
        }
        size_t room = lr->in_cap - lr->in_len;
        if (room > limit - got)
            room = limit - got; /* the buffer may be 64 MiB: keep to the limit */
        ssize_t r = lr_recv_plain(lr, fd, room);
        if (r > 0) {
            lr->in_len += (size_t)r;
            got += (size_t)r;
            lr_process(lr);
            if (lr->c != c)
                return -1;
            continue;
        }
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            break;
        if (r < 0 && errno == EINTR)
            continue;
        lr_fail(lr, r == 0 ? "closed by the server" : io_error(c, errno));
        return -1;
    }
    return (ssize_t)got;
}

/* Window tick: read what came, handle it, and decide the mode. */
static void on_io_timer(uv_timer_t *t)
{
    struct lr *lr = t->data;
    struct lrc *c = lr->c;
    if (!c || lr->st != LR_UP)
        return;
    lr_process(lr);
    if (lr->c != c || (c->tls && !tls_drain(lr)))
        return;
    ssize_t got = lr->windowed ? read_now(lr, LR_WINDOW_READ) : 0;
    if (got < 0)
        return;
    if (got > 0)
        lr->stats.wakeups++;
    if (lr->c != c || !lr->windowed)
        return;
    if (got > 0) {
        lr->last_read_ms = uv_now(lr->loop);
        uv_timer_start(&lr->io_timer, on_io_timer, lr->window_ms, 0);
    } else {
        lr->windowed = false;
        int r = uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
        if (r < 0) /* else neither reading nor a timer: stuck for good */
            lr_fail(lr, uv_strerror(r));
    }
}

/* -------------------------------------------------------------------- */
/* Connecting                                                             */

/* Where a handshake that took too long stalled. */
static const char *handshake_stage(const struct lr *lr)
{
    const struct lrc *c = lr->c;
    if (lr->st != LR_HANDSHAKE || !c)
        return "connect timed out";
    if (c->tls && !c->tls_ready)
        return "TLS handshake timed out";
    return lr->pings_out == 0 ? "no INFO from the server in time" : "no answer to CONNECT in time";
}

static void on_retry(uv_timer_t *t)
{
    struct lr *lr = t->data;
    if (lr->st == LR_IDLE && !lr->dying)
        confirm_fail_all(lr); /* lr_fail ran: the confirmations' connection is gone */
    if (lr->st == LR_IDLE && !lr->dying)
        lr_connect_next(lr);
    else if (lr->st != LR_UP && lr->st != LR_IDLE)
        lr_fail(lr, handshake_stage(lr));
}

static void lr_fail(struct lr *lr, const char *why)
{
    bool was_up = lr->st == LR_UP;
    const struct lr_server *sv = &lr->servers[lr->cur];
    /* One warning per outage; each further failed try at debug level. */
    rt_log(was_up || !lr->failing_logged ? RT_LOG_WARN : RT_LOG_DEBUG, "nats_live_disconnected",
           "server=%s:%s why=\"%s\"%s", sv->url.host, sv->url.port, why,
           was_up ? "" : " retrying=every_250ms");
    lr->failing_logged = !was_up;
    conn_drop(lr);
    lr->st = LR_IDLE;
    if (!lr->dying)
        uv_timer_start(&lr->ctl_timer, on_retry, was_up ? 0 : LR_RETRY_MS, 0);
}

static void on_connect(uv_connect_t *req, int status)
{
    struct lrc *c = req->data;
    struct lr *lr = c->lr;
    if (c != lr->c)
        return;
    if (status < 0) {
        lr_fail(lr, uv_strerror(status));
        return;
    }
    lr->st = LR_HANDSHAKE;
    lr->max_payload = LR_PAYLOAD_DEF;
    int r = uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
    if (r < 0)
        lr_fail(lr, uv_strerror(r));
}

static void start_tcp(struct lr *lr, const struct sockaddr *addr)
{
    struct lrc *c = calloc(1, sizeof(*c));
    if (!c) {
        lr_fail(lr, "out of memory");
        return;
    }
    c->lr = lr;
    uv_tcp_init(lr->loop, &c->tcp);
    uv_unref((uv_handle_t *)&c->tcp); /* the gateway's loop ends without waiting for NATS */
    c->tcp.data = c;
    c->creq.data = c;
    lr->refs++;
    lr->c = c;
    lr->st = LR_CONNECTING;
    uv_tcp_nodelay(&c->tcp, 1);
    int r = uv_tcp_connect(&c->creq, &c->tcp, addr, on_connect);
    if (r < 0)
        lr_fail(lr, uv_strerror(r));
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    struct lr *lr = req->data;
    lr->gai_busy = false;
    if (lr->dying) {
        uv_freeaddrinfo(res);
        lr_unref(lr);
        return;
    }
    lr_unref(lr);
    if (lr->st != LR_RESOLVING) {
        uv_freeaddrinfo(res);
        return;
    }
    if (status < 0 || !res) {
        uv_freeaddrinfo(res);
        lr->st = LR_IDLE;
        lr_fail(lr, status < 0 ? uv_strerror(status) : "no address");
        return;
    }
    /* Every address is tried in turn (a name with an AAAA record for a
     * server that listens on IPv4 only, one of several A records down). */
    forget_addresses(lr);
    lr->ai = res;
    lr->ai_untried = res->ai_next;
    start_tcp(lr, res->ai_addr);
}

static void lr_connect_next(struct lr *lr)
{
    if (lr->gai_busy) { /* a slow resolver: try again later */
        uv_timer_start(&lr->ctl_timer, on_retry, LR_RETRY_MS, 0);
        return;
    }
    uv_timer_start(&lr->ctl_timer, on_retry, LR_CONNECT_MS, 0);
    if (lr->ai_untried) { /* the same server's next address */
        const struct addrinfo *a = lr->ai_untried;
        lr->ai_untried = a->ai_next;
        start_tcp(lr, a->ai_addr);
        return;
    }
    forget_addresses(lr);
    lr->cur = (lr->cur + 1) % lr->n_servers;
    const struct lr_server *sv = &lr->servers[lr->cur];
    struct sockaddr_storage ss;
    int port = atoi(sv->url.port);
    if (uv_ip4_addr(sv->url.host, port, (struct sockaddr_in *)&ss) == 0 ||
        uv_ip6_addr(sv->url.host, port, (struct sockaddr_in6 *)&ss) == 0) {
        start_tcp(lr, (struct sockaddr *)&ss);
        return;
    }
    struct addrinfo hints;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    lr->gai.data = lr;
    lr->st = LR_RESOLVING;
    if (uv_getaddrinfo(lr->loop, &lr->gai, on_resolved, sv->url.host, sv->url.port, &hints) == 0) {
        lr->gai_busy = true;
        lr->refs++;
    } else {
        lr->st = LR_IDLE;
        lr_fail(lr, "cannot resolve");
    }
}

/* -------------------------------------------------------------------- */
/* Interface                                                              */

/* Every URL of the comma-separated list; false for one nats_url_parse refuses. */
static bool parse_urls(struct lr *lr, const char *urls)
{
    for (const char *p = urls; *p;) {
        const char *end = strchr(p, ',');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        if (n > 0) {
            struct lr_server *sv = &lr->servers[lr->n_servers++];
            if (!nats_url_parse(p, n, &sv->url))
                return false;
            lr->tls_wanted |= sv->url.tls;
        }
        p += n + (end ? 1 : 0);
    }
    return lr->n_servers > 0;
}

/* A random order, so that the readers of a fleet do not all start on the first URL. */
static void shuffle_servers(struct lr *lr)
{
    for (size_t i = lr->n_servers; i > 1; i--) {
        uint32_t r = 0;
        if (uv_random(NULL, NULL, &r, sizeof(r), 0, NULL) != 0)
            r = (uint32_t)rt_mono_ms() ^ (uint32_t)getpid();
        size_t j = r % i;
        struct lr_server t = lr->servers[i - 1];
        lr->servers[i - 1] = lr->servers[j];
        lr->servers[j] = t;
    }
}

/* The TLS context and the credentials files; RT_INVAL after a log line naming the file. */
static rt_status load_security(struct lr *lr, const struct fo_nats_security *sec)
{
    char err[512];
    const char *none = "";
    lr->tls_wanted |= sec && (sec->ca_file[0] || sec->cert_file[0] || sec->key_file[0]);
    rt_status st = RT_OK;
    if (lr->tls_wanted) /* else made when a server requires TLS (start_tls): OpenSSL's is slow */
        st = ntls_ctx_create(sec ? sec->ca_file : none, sec ? sec->cert_file : none,
                             sec ? sec->key_file : none, err, sizeof(err), &lr->tls_ctx);
    if (st == RT_OK)
        st = ncreds_load(sec ? sec->creds_file : none, sec ? sec->nkey_file : none, err,
                         sizeof(err), &lr->creds);
    if (st == RT_INVAL)
        rt_log(RT_LOG_ERROR, "nats_security_invalid", "why=\"%s\"", err);
    return st;
}

static void free_unstarted(struct lr *lr)
{
    free_servers(lr->servers, lr->servers_cap);
    ntls_ctx_destroy(lr->tls_ctx);
    ncreds_free(lr->creds);
    free(lr->name);
    free(lr);
}

rt_status lr_create(void *uv_loop, const char *urls, const char *name, uint32_t window_ms,
                    const struct fo_nats_security *security, const struct lr_hooks *hooks,
                    struct lr **out)
{
    *out = NULL;
    size_t count = 1;
    for (const char *p = urls; *p; p++)
        count += *p == ',';
    struct lr *lr = calloc(1, sizeof(*lr));
    if (!lr)
        return RT_NOMEM;
    lr->servers_cap = count;
    lr->servers = calloc(count, sizeof(*lr->servers));
    lr->name = strdup(name ? name : "rtgate");
    if (!lr->servers || !lr->name) {
        free_unstarted(lr);
        return RT_NOMEM;
    }
    if (!parse_urls(lr, urls) || !proto_utf8_valid(lr->name, strlen(lr->name))) {
        free_unstarted(lr);
        return RT_INVAL;
    }
    rt_status st = load_security(lr, security);
    if (st != RT_OK) {
        free_unstarted(lr);
        return st;
    }
    shuffle_servers(lr);
    lr->loop = uv_loop;
    lr->h = *hooks;
    lr->window_ms = window_ms;
    lr->next_sid = 1;
    lr->max_payload = LR_PAYLOAD_DEF;
    lr->cur = lr->n_servers - 1; /* the first connect takes the first server */
    uv_timer_init(lr->loop, &lr->ctl_timer);
    uv_timer_init(lr->loop, &lr->io_timer);
    uv_timer_init(lr->loop, &lr->ping_timer);
    lr->ctl_timer.data = lr->io_timer.data = lr->ping_timer.data = lr;
    uv_unref((uv_handle_t *)&lr->ctl_timer);
    uv_unref((uv_handle_t *)&lr->io_timer);
    uv_unref((uv_handle_t *)&lr->ping_timer);
    lr->refs = 4; /* three timers, and the owner */
    lr_connect_next(lr);
    *out = lr;
    return RT_OK;
}

void lr_destroy(struct lr *lr)
{
    if (!lr)
        return;
    lr->dying = true;
    conn_drop(lr);
    lr->st = LR_IDLE;
    if (lr->gai_busy)
        uv_cancel((uv_req_t *)&lr->gai);
    uv_close((uv_handle_t *)&lr->ctl_timer, handle_closed);
    uv_close((uv_handle_t *)&lr->io_timer, handle_closed);
    uv_close((uv_handle_t *)&lr->ping_timer, handle_closed);
    while (lr->confirm_head) { /* the owner is going: nobody to tell */
        struct lr_confirm_wait *w = lr->confirm_head;
        lr->confirm_head = w->next;
        free(w);
    }
    lr->confirm_tail = NULL;
    lr_unref(lr);
}

static void send_sub(struct lr *lr, const char *subject, uint64_t sid)
{
    char buf[512];
    size_t n = nw_enc_sub(buf, sizeof(buf), subject, sid);
    if (n)
        lr_send(lr, buf, n);
}

uint64_t lr_sub(struct lr *lr, const char *subject)
{
    uint64_t sid = lr->next_sid++;
    if (lr->st == LR_UP)
        send_sub(lr, subject, sid);
    return sid;
}

void lr_resub(struct lr *lr, const char *subject, uint64_t sid)
{
    send_sub(lr, subject, sid);
}

void lr_unsub(struct lr *lr, uint64_t sid)
{
    if (lr->st != LR_UP)
        return;
    char buf[64];
    size_t n = nw_enc_unsub(buf, sizeof(buf), sid);
    if (n)
        lr_send(lr, buf, n);
}

/* See nats_live.h. Loop thread. */
rt_status lr_confirm(struct lr *lr, lr_confirm_fn fn, void *arg)
{
    if (lr->st != LR_UP || !lr->c)
        return RT_UNAVAILABLE;
    struct lr_confirm_wait *w = malloc(sizeof(*w));
    if (!w)
        return RT_NOMEM;
    lr->pings_out++;
    w->pong = lr->pongs + lr->pings_out;
    w->fn = fn;
    w->arg = arg;
    w->next = NULL;
    if (!lr_send(lr, "PING\r\n", 6)) {
        free(w); /* lr_fail dropped the connection: older waiters fail from the retry timer */
        return RT_UNAVAILABLE;
    }
    if (lr->confirm_tail)
        lr->confirm_tail->next = w;
    else
        lr->confirm_head = w;
    lr->confirm_tail = w;
    return RT_OK;
}

bool lr_up(const struct lr *lr)
{
    return lr && lr->st == LR_UP;
}

void lr_get_stats(const struct lr *lr, struct lr_stats *out)
{
    *out = lr->stats;
}
