/*
 * nats_live.c: the nats engine's loop-thread subscriber (nats_live.h).
 *
 * One connection at a time (struct lrc, freed by its close callback); the
 * reader itself (struct lr) is freed when the last of its handles is
 * closed. States: IDLE (waiting to retry) -> RESOLVING -> CONNECTING ->
 * HANDSHAKE (INFO read, CONNECT + PING sent, waiting for the PONG) -> UP.
 * Any error, EOF or protocol violation goes back to IDLE with a retry timer.
 */
#define _GNU_SOURCE /* memmem */
#include "nats_live.h"
#include "protocol.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <uv.h>

#define LR_PORT_DEFAULT 4222
#define LR_RETRY_MS     250u
#define LR_CONNECT_MS   2000u
#define LR_PING_MS      5000u
#define LR_PINGS_MAX    2u
#define LR_READ_CHUNK   ((size_t)64 << 10)
#define LR_WINDOW_READ  ((size_t)1 << 20) /* bytes read per window tick at most */
#define LR_PAYLOAD_DEF  ((size_t)1 << 20)
#define LR_PAYLOAD_CAP  ((size_t)64 << 20)
#define LR_KEEP_CAP     ((size_t)256 << 10) /* an empty input buffer above this is freed */
#define LR_CRED_MAX     256
/* Queued writes (with their requests' own size) beyond which a server that
 * does not read is dropped: a PING flood must not queue PONGs without end. */
#define LR_WQ_MAX ((size_t)8 << 20)

enum lr_state { LR_IDLE, LR_RESOLVING, LR_CONNECTING, LR_HANDSHAKE, LR_UP };

struct lr_server {
    char host[256];
    char port[8];
    char user[LR_CRED_MAX], pass[LR_CRED_MAX], token[LR_CRED_MAX];
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
    size_t wq_bytes; /* queued write requests, their struct included */
};

struct lr {
    uv_loop_t *loop;
    struct lr_hooks h;
    char *name;
    uint32_t window_ms;
    struct lr_server *servers;
    size_t n_servers, cur;

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
    bool failing_logged; /* one log line per outage, not one per retry */
    uint64_t err_log_ms; /* last -ERR logged while UP (at most one a second) */
    uint64_t err_quiet;  /* -ERRs not logged since */

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

/* -------------------------------------------------------------------- */
/* Lifetime                                                               */

static void forget_addresses(struct lr *lr)
{
    if (lr->ai)
        uv_freeaddrinfo(lr->ai);
    lr->ai = NULL;
    lr->ai_untried = NULL;
}

static void lr_unref(struct lr *lr)
{
    if (--lr->refs > 0)
        return;
    forget_addresses(lr);
    free(lr->in);
    free(lr->servers);
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

static void send_connect(struct lr *lr)
{
    const struct lr_server *sv = &lr->servers[lr->cur];
    json_t *o = json_pack("{s:b,s:b,s:i,s:b,s:b,s:s,s:s,s:s}", "verbose", 0, "pedantic", 0,
                          "protocol", 1, "headers", 1, "no_responders", 0, "name", lr->name, "lang",
                          "c-rtgate", "version", "1");
    if (o && sv->user[0]) {
        json_object_set_new(o, "user", json_string(sv->user));
        json_object_set_new(o, "pass", json_string(sv->pass));
    }
    if (o && sv->token[0])
        json_object_set_new(o, "auth_token", json_string(sv->token));
    char *js = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    if (!js) {
        lr_fail(lr, "out of memory");
        return;
    }
    size_t n = strlen(js);
    char *line = malloc(n + 32);
    if (line) {
        int k = snprintf(line, n + 32, "CONNECT %s\r\nPING\r\n", js);
        lr->pings_out++;
        lr_send(lr, line, (size_t)k);
    } else {
        lr_fail(lr, "out of memory");
    }
    free(line);
    free(js);
}

/* -------------------------------------------------------------------- */
/* Input                                                                  */

static void on_info(struct lr *lr, const char *arg, size_t len)
{
    if (lr->st != LR_HANDSHAKE || lr->pings_out > 0)
        return; /* an update while connected (cluster changes): nothing to do */
    json_error_t err;
    json_t *o = json_loadb(arg, len, 0, &err);
    if (!json_is_object(o)) {
        json_decref(o);
        lr_fail(lr, "INFO is not a JSON object");
        return;
    }
    json_int_t mp = json_integer_value(json_object_get(o, "max_payload"));
    bool tls = json_is_true(json_object_get(o, "tls_required"));
    bool headers = json_is_true(json_object_get(o, "headers"));
    json_decref(o);
    if (tls) {
        lr_fail(lr, "the server requires TLS (use --nats-loop-reader 0)");
        return;
    }
    if (!headers) {
        lr_fail(lr, "the server does not support headers");
        return;
    }
    lr->max_payload = mp > 0 ? (size_t)mp : LR_PAYLOAD_DEF;
    if (lr->max_payload > LR_PAYLOAD_CAP)
        lr->max_payload = LR_PAYLOAD_CAP;
    send_connect(lr);
}

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
    rt_log(RT_LOG_INFO, "nats_live_connected", "server=%s:%s connects=%llu",
           lr->servers[lr->cur].host, lr->servers[lr->cur].port,
           (unsigned long long)lr->stats.connects);
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
    size_t max = lr->max_payload + NW_LINE_MAX + LR_READ_CHUNK;
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
    lr->in_len += (size_t)n;
    lr_process(lr);
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
        ssize_t r = recv(fd, lr->in + lr->in_len, room, MSG_DONTWAIT);
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
        lr_fail(lr, r == 0 ? "closed by the server" : strerror(errno));
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
    if (lr->c != c)
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

static void on_retry(uv_timer_t *t)
{
    struct lr *lr = t->data;
    if (lr->st == LR_IDLE && !lr->dying)
        confirm_fail_all(lr); /* lr_fail ran: the confirmations' connection is gone */
    if (lr->st == LR_IDLE && !lr->dying)
        lr_connect_next(lr);
    else if (lr->st != LR_UP && lr->st != LR_IDLE)
        lr_fail(lr, "connect timed out");
}

static void lr_fail(struct lr *lr, const char *why)
{
    bool was_up = lr->st == LR_UP;
    const struct lr_server *sv = &lr->servers[lr->cur];
    if (was_up || !lr->failing_logged)
        rt_log(RT_LOG_WARN, "nats_live_disconnected", "server=%s:%s why=\"%s\"%s", sv->host,
               sv->port, why, was_up ? "" : " retrying=every_250ms");
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
    int port = atoi(sv->port);
    if (uv_ip4_addr(sv->host, port, (struct sockaddr_in *)&ss) == 0 ||
        uv_ip6_addr(sv->host, port, (struct sockaddr_in6 *)&ss) == 0) {
        start_tcp(lr, (struct sockaddr *)&ss);
        return;
    }
    struct addrinfo hints;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    lr->gai.data = lr;
    lr->st = LR_RESOLVING;
    if (uv_getaddrinfo(lr->loop, &lr->gai, on_resolved, sv->host, sv->port, &hints) == 0) {
        lr->gai_busy = true;
        lr->refs++;
    } else {
        lr->st = LR_IDLE;
        lr_fail(lr, "cannot resolve");
    }
}

/* -------------------------------------------------------------------- */
/* URLs                                                                   */

static bool copy_part(char *dst, size_t cap, const char *s, size_t n)
{
    if (n >= cap)
        return false;
    memcpy(dst, s, n);
    dst[n] = 0;
    return true;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = (char)(c | 0x20);
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* Undoes %XX in place, as nats.c does for the URL's user and password; false
 * for a '%' without two hex digits, or %00. */
static bool pct_decode_inplace(char *s)
{
    char *d = s;
    for (; *s; s++) {
        if (*s != '%') {
            *d++ = *s;
            continue;
        }
        int hi = hexval(s[1]), lo = hi >= 0 ? hexval(s[2]) : -1;
        if (lo < 0 || (hi | lo) == 0)
            return false;
        *d++ = (char)(hi << 4 | lo);
        s += 2;
    }
    *d = 0;
    return true;
}

/* nats://[user:pass@|token@]host[:port], or host[:port]; [v6]:port too. */
static bool parse_url(const char *s, size_t n, struct lr_server *out)
{
    memset(out, 0, sizeof(*out));
    while (n > 0 && (*s == ' ' || *s == '\t')) {
        s++;
        n--;
    }
    const char *scheme = memmem(s, n, "://", 3);
    if (scheme) {
        size_t sl = (size_t)(scheme - s);
        if (!(sl == 4 && strncasecmp(s, "nats", 4) == 0))
            return false; /* tls://, ws://: not here */
        n -= sl + 3;
        s = scheme + 3;
    }
    /* The last '@' ends the userinfo (as Go's net/url): a password may hold one. */
    const char *at = memrchr(s, '@', n);
    if (at) {
        const char *colon = memchr(s, ':', (size_t)(at - s));
        if (colon) {
            if (!copy_part(out->user, sizeof(out->user), s, (size_t)(colon - s)) ||
                !copy_part(out->pass, sizeof(out->pass), colon + 1, (size_t)(at - colon - 1)))
                return false;
        } else if (!copy_part(out->token, sizeof(out->token), s, (size_t)(at - s))) {
            return false;
        }
        if (!pct_decode_inplace(out->user) || !pct_decode_inplace(out->pass) ||
            !pct_decode_inplace(out->token))
            return false;
        n -= (size_t)(at - s) + 1;
        s = at + 1;
    }
    while (n > 0 && (s[n - 1] == '/' || s[n - 1] == ' '))
        n--;
    const char *host = s, *port = NULL;
    size_t hl = n;
    if (n > 0 && s[0] == '[') {
        const char *rb = memchr(s, ']', n);
        if (!rb)
            return false;
        host = s + 1;
        hl = (size_t)(rb - s - 1);
        size_t after = (size_t)(rb - s) + 1;
        if (after < n && rb[1] != ':')
            return false; /* "[::1]x": not a port */
        if (after < n)
            port = rb + 2;
    } else {
        const char *colon = memchr(s, ':', n);
        if (colon) {
            hl = (size_t)(colon - s);
            port = colon + 1;
        }
    }
    if (hl == 0 || !copy_part(out->host, sizeof(out->host), host, hl))
        return false;
    for (size_t i = 0; i < hl; i++) /* "ho st", "h/x", "h@x": resolving could only fail, forever */
        if ((unsigned char)host[i] <= ' ' || strchr("/@[]?#,", host[i]))
            return false;
    size_t pl = port ? (size_t)(s + n - port) : 0;
    if (!port || pl == 0) {
        snprintf(out->port, sizeof(out->port), "%d", LR_PORT_DEFAULT);
        return true;
    }
    if (!copy_part(out->port, sizeof(out->port), port, pl))
        return false;
    for (size_t i = 0; i < pl; i++)
        if (out->port[i] < '0' || out->port[i] > '9')
            return false;
    int p = atoi(out->port);
    return p > 0 && p < 65536;
}

/* -------------------------------------------------------------------- */
/* Interface                                                              */

rt_status lr_create(void *uv_loop, const char *urls, const char *name, uint32_t window_ms,
                    const struct lr_hooks *hooks, struct lr **out)
{
    *out = NULL;
    size_t count = 1;
    for (const char *p = urls; *p; p++)
        count += *p == ',';
    struct lr *lr = calloc(1, sizeof(*lr));
    if (!lr)
        return RT_NOMEM;
    lr->servers = calloc(count, sizeof(*lr->servers));
    lr->name = strdup(name ? name : "rtgate");
    if (!lr->servers || !lr->name) {
        free(lr->servers);
        free(lr->name);
        free(lr);
        return RT_NOMEM;
    }
    bool ok = true;
    for (const char *p = urls; *p && ok;) {
        const char *end = strchr(p, ',');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        if (n > 0) {
            struct lr_server *sv = &lr->servers[lr->n_servers++];
            /* CONNECT is JSON: credentials that are not UTF-8 could never be sent. */
            ok = parse_url(p, n, sv) && proto_utf8_valid(sv->user, strlen(sv->user)) &&
                 proto_utf8_valid(sv->pass, strlen(sv->pass)) &&
                 proto_utf8_valid(sv->token, strlen(sv->token));
        }
        p += n + (end ? 1 : 0);
    }
    if (!ok || lr->n_servers == 0 || !proto_utf8_valid(lr->name, strlen(lr->name))) {
        free(lr->servers);
        free(lr->name);
        free(lr);
        return RT_INVAL;
    }
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
