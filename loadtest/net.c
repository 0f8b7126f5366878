/*
 * net.c: the connection engine of net.h. Sockets, the WebSocket upgrade,
 * frames in and out, write queues, set-up timeouts and retries, for the
 * workers (worker.c) and the single-process scenarios (scen.c) alike. The
 * only file of the tool that calls socket(), connect(), recv() or epoll
 * (send() is wq.c's; TLS is tls.c's, called from here).
 */
#define _GNU_SOURCE /* epoll_pwait2 */
#include "net.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

#define RX_CHUNK     65536
#define MAX_ATTEMPTS 20
#define WATCH_BIT    (1ull << 63) /* epoll data of a watched fd; connections carry their id */
#define FRAME_SLACK  16           /* a frame header (14) and then some */

static const struct lt_endpoint *endpoint_of(const struct lt_net *net, const struct lt_conn *c)
{
    return &net->p.endpoints[c->endpoint];
}

uint64_t lt_net_rand(struct lt_net *net)
{
    /* xorshift64*: masking keys, nonces and jitter, not secrets */
    uint64_t x = net->rng;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    net->rng = x;
    return x * 0x2545F4914F6CDD1Dull;
}

/* ------------------------------------------------------------------ */
/* The end of a connection */

/* Closes the socket and frees the buffers; the connection is IDLE. No callback. */
static void drop(struct lt_net *net, struct lt_conn *c)
{
    if (lt_net_in_setup(c))
        net->setting_up--;
    if (c->state == LT_CONN_RETRY)
        net->retrying--;
    if (c->tls) {
        lt_tls_free(c->tls);
        c->tls = NULL;
    }
    if (c->fd >= 0) {
        close(c->fd); /* also leaves the epoll set */
        c->fd = -1;
    }
    free(c->rbuf);
    free(c->fbuf);
    free(c->wbuf);
    c->rbuf = c->fbuf = c->wbuf = NULL;
    c->rlen = c->flen = c->wlen = 0;
    c->frag_opcode = 0;
    c->want_out = false;
    c->state = LT_CONN_IDLE;
    c->gen++;
}

/* A connection that never got ready. */
static void fail(struct lt_net *net, struct lt_conn *c, int err)
{
    drop(net, c);
    net->p.ops.on_down(net, c, LT_DOWN_FAILED, err);
}

/* The connection broke (reset, EOF, close frame, write or protocol error). */
static void lost(struct lt_net *net, struct lt_conn *c, int err)
{
    if (c->state != LT_CONN_READY) {
        fail(net, c, err);
        return;
    }
    net->p.counts->server_closes++;
    drop(net, c);
    net->p.ops.on_down(net, c, LT_DOWN_LOST, err);
}

void lt_net_abort(struct lt_net *net, struct lt_conn *c, int err)
{
    if (c->fd >= 0 || c->state == LT_CONN_RETRY)
        lost(net, c, err);
}

/* ------------------------------------------------------------------ */
/* Sending */

static void want_out(struct lt_net *net, struct lt_conn *c, bool on)
{
    if (c->want_out == on || c->fd < 0)
        return;
    struct epoll_event ev = {.events = EPOLLIN | (on ? EPOLLOUT : 0u), .data.u64 = c->id};
    if (epoll_ctl(net->ep, EPOLL_CTL_MOD, c->fd, &ev) == 0)
        c->want_out = on;
}

/* Queues bytes behind what already waits, else writes them now. */
static void conn_write(struct lt_net *net, struct lt_conn *c, const uint8_t *p, size_t len)
{
    if (c->fd < 0)
        return;
    enum lt_wq r = lt_wq_write(c->fd, c->tls, &c->wbuf, &c->wlen, p, len, net->p.max_queued);
    if (r == LT_WQ_FAILED)
        lost(net, c, errno);
    else if (r == LT_WQ_PENDING)
        want_out(net, c, true);
}

static void conn_flush(struct lt_net *net, struct lt_conn *c)
{
    enum lt_wq r = lt_wq_flush(c->fd, c->tls, &c->wbuf, &c->wlen);
    if (r == LT_WQ_FAILED)
        lost(net, c, errno);
    else if (r == LT_WQ_EMPTY)
        want_out(net, c, false);
}

/* Frames the payload sitting at tx + LT_WS_HEADROOM and sends it. */
static void send_frame(struct lt_net *net, struct lt_conn *c, uint8_t opcode, size_t len)
{
    size_t flen;
    uint8_t *f =
        lt_ws_frame_in_place(net->tx, len, opcode, true, (uint32_t)lt_net_rand(net), &flen);
    conn_write(net, c, f, flen);
}

struct lt_out lt_net_tx(struct lt_net *net)
{
    return (struct lt_out){.p = net->tx + LT_WS_HEADROOM, .len = 0, .cap = net->p.tx_cap};
}

void lt_net_send(struct lt_net *net, struct lt_conn *c, size_t len)
{
    const struct lt_endpoint *t = endpoint_of(net, c);
    if (t->framing == LT_FRAMING_TCP_STREAM)
        conn_write(net, c, net->tx + LT_WS_HEADROOM, len);
    else
        send_frame(net, c, t->data_opcode, len);
}

/* ------------------------------------------------------------------ */
/* Opening */

static void attempt(struct lt_net *net, struct lt_conn *c)
{
    const struct lt_config *cfg = net->p.cfg;
    const struct lt_endpoint *t = endpoint_of(net, c);
    c->attempts++;
    c->started_ns = net->now;
    c->hello_step = 0;
    c->closing = false;
    net->p.counts->attempts++;
    int fd = socket(t->dst->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        net->p.counts->connect_errors++;
        fail(net, c, errno);
        return;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (t->bind_source && c->source < cfg->n_src) {
        size_t si = c->source;
        setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
        if (bind(fd, (const struct sockaddr *)&cfg->src[si], cfg->src_len[si]) != 0) {
            int err = errno;
            if (cfg->verbose > 1)
                fprintf(stderr, "rtgate-load: bind %s: %s\n", cfg->src_text[si], strerror(err));
            close(fd);
            net->p.counts->connect_errors++;
            fail(net, c, err);
            return;
        }
    }
    if (connect(fd, (const struct sockaddr *)t->dst, t->dst_len) != 0 && errno != EINPROGRESS) {
        int err = errno;
        if (cfg->verbose > 1)
            fprintf(stderr, "rtgate-load: connect: %s\n", strerror(err));
        close(fd);
        net->p.counts->connect_errors++;
        fail(net, c, err);
        return;
    }
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.u64 = c->id};
    if (epoll_ctl(net->ep, EPOLL_CTL_ADD, fd, &ev) != 0) {
        int err = errno;
        close(fd);
        net->p.counts->connect_errors++;
        fail(net, c, err);
        return;
    }
    c->fd = fd;
    c->want_out = true;
    c->state = LT_CONN_CONNECTING;
    net->setting_up++;
}

void lt_net_place(struct lt_net *net, struct lt_conn *c, uint8_t endpoint, uint32_t spread)
{
    size_t n_src = net->p.cfg->n_src;
    c->endpoint = endpoint;
    c->source = (uint8_t)(n_src ? spread % n_src : LT_NET_NO_SOURCE);
}

void lt_net_open(struct lt_net *net, struct lt_conn *c)
{
    if (c->state != LT_CONN_IDLE)
        return;
    c->attempts = 0;
    c->cycle_ns = net->now;
    attempt(net, c);
}

void lt_net_ready(struct lt_net *net, struct lt_conn *c)
{
    if (c->state != LT_CONN_HELLO)
        return;
    net->setting_up--;
    c->state = LT_CONN_READY;
    net->p.counts->ready++;
    if (net->p.setup)
        lt_hist_record(net->p.setup, net->now - c->started_ns);
}

void lt_net_close(struct lt_net *net, struct lt_conn *c)
{
    static const uint8_t normal[2] = {0x03, 0xE8}; /* 1000 */
    if (c->state == LT_CONN_READY && c->fd >= 0 && c->wlen == 0 &&
        endpoint_of(net, c)->framing != LT_FRAMING_TCP_STREAM) {
        /* Best effort, and no callback: the connection goes either way. */
        memcpy(net->tx + LT_WS_HEADROOM, normal, sizeof normal);
        size_t flen;
        uint8_t *f = lt_ws_frame_in_place(net->tx, sizeof normal, LT_WS_CLOSE, true,
                                          (uint32_t)lt_net_rand(net), &flen);
        ssize_t sent = c->tls ? lt_tls_send(c->tls, f, flen)
                              : send(c->fd, f, flen, MSG_NOSIGNAL | MSG_DONTWAIT);
        (void)sent;
    }
    drop(net, c);
}

/* Refused with 429/503 at the upgrade: try again later, a bounded number of times. */
static void refused(struct lt_net *net, struct lt_conn *c, int status, uint32_t after_ms)
{
    net->p.counts->handshake_refused++;
    uint32_t gen = c->gen;
    if (net->p.ops.on_refused) {
        net->p.ops.on_refused(net, c, status);
        if (c->gen != gen)
            return;
    }
    uint64_t budget = (uint64_t)(net->p.cfg->setup_timeout_s * 1e9);
    if (!net->p.retry_refused || c->attempts >= MAX_ATTEMPTS || net->now - c->cycle_ns > budget) {
        net->p.counts->handshake_failures++;
        fail(net, c, 0);
        return;
    }
    drop(net, c);
    c->state = LT_CONN_RETRY;
    net->retrying++;
    net->p.counts->handshake_retries++;
    uint64_t backoff =
        (uint64_t)(after_ms ? after_ms : 100u << (c->attempts < 5 ? c->attempts : 5));
    c->retry_at_ns = net->now + backoff * LT_NS_PER_MS + lt_net_rand(net) % (50 * LT_NS_PER_MS);
}

/* The transport is up (TCP, or TLS over it): send the upgrade request. */
static void start_upgrade(struct lt_net *net, struct lt_conn *c)
{
    const struct lt_endpoint *t = endpoint_of(net, c);
    uint8_t nonce[16];
    for (int i = 0; i < 16; i += 8) {
        uint64_t r = lt_net_rand(net);
        memcpy(nonce + i, &r, 8);
    }
    lt_base64(nonce, sizeof nonce, c->key, sizeof c->key);
    char req[1024];
    size_t n = lt_ws_request(req, sizeof req, t->host_header, t->path, c->key, t->subprotocol);
    c->state = LT_CONN_UPGRADING;
    conn_write(net, c, (const uint8_t *)req, n);
}

/* One step of a wss:// connection's TLS handshake; the upgrade once it is done. */
static void tls_step(struct lt_net *net, struct lt_conn *c)
{
    bool want_write = false;
    int err = lt_tls_handshake(c->tls, &want_write);
    if (err == EAGAIN) {
        want_out(net, c, want_write);
        return;
    }
    if (err) {
        if (net->p.cfg->verbose > 0)
            fprintf(stderr, "rtgate-load: TLS handshake failed (%s)\n", strerror(err));
        net->p.counts->handshake_failures++;
        fail(net, c, err);
        return;
    }
    want_out(net, c, false);
    start_upgrade(net, c);
}

/* TCP is up: TLS (wss://), or the upgrade request (a TCP stream is up already). */
static void on_tcp_up(struct lt_net *net, struct lt_conn *c)
{
    int err = 0;
    socklen_t el = sizeof err;
    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el) != 0 || err != 0) {
        if (net->p.cfg->verbose > 1)
            fprintf(stderr, "rtgate-load: connect: %s\n", strerror(err));
        net->p.counts->connect_errors++;
        fail(net, c, err);
        return;
    }
    const struct lt_endpoint *t = endpoint_of(net, c);
    want_out(net, c, false);
    if (t->framing == LT_FRAMING_TCP_STREAM) { /* the server speaks first */
        c->state = LT_CONN_HELLO;
        net->p.ops.on_up(net, c);
        return;
    }
    if (t->tls) {
        c->tls = lt_tls_new(net->tls_ctx, c->fd, t->server_name);
        if (!c->tls) {
            net->p.counts->connect_errors++;
            fail(net, c, ENOMEM);
            return;
        }
        c->state = LT_CONN_TLS;
        tls_step(net, c);
        return;
    }
    start_upgrade(net, c);
}

/* ------------------------------------------------------------------ */
/* Receiving */

/* One complete data message of an rtgate endpoint: one or more rtgate messages. */
static void on_rtgate_payload(struct lt_net *net, struct lt_conn *c, const uint8_t *p, size_t len)
{
    size_t pos = 0;
    uint32_t gen = c->gen;
    bool json = net->p.cfg->codec == LT_CODEC_JSON;
    for (;;) {
        struct lt_smsg m;
        size_t start = pos;
        lt_status st = json ? lt_scan_json(p, len, &pos, &m) : lt_scan_msgpack(p, len, &pos, &m);
        if (st == LT_AGAIN)
            return;
        if (st != LT_OK) {
            if (net->p.cfg->verbose > 0)
                fprintf(stderr, "rtgate-load: unreadable message: %.*s\n",
                        (int)(len - pos > 200 ? 200 : len - pos), (const char *)p + pos);
            net->p.counts->protocol_errors++;
            return;
        }
        net->p.counts->msgs_in++;
        net->p.ops.on_msg(net, c, &m, p + start, pos - start);
        if (c->gen != gen) /* closed by the message */
            return;
    }
}

/*
 * The payload of one frame of a stream endpoint: a piece of the server's byte
 * stream. What an earlier frame left unfinished waits in fbuf. False when
 * the connection was closed.
 */
static bool on_stream_chunk(struct lt_net *net, struct lt_conn *c, const uint8_t *p, size_t len)
{
    uint32_t gen = c->gen;
    if (c->flen) {
        if (!lt_ws_buf_append(&c->fbuf, &c->flen, p, len))
            goto proto_error;
        /* Detach: the driver may close the connection, which frees its buffers. */
        uint8_t *b = c->fbuf;
        size_t bl = c->flen;
        c->fbuf = NULL;
        c->flen = 0;
        long used = net->p.ops.on_stream(net, c, b, bl);
        bool open = used >= 0 && c->gen == gen;
        if (open && (size_t)used < bl) {
            memmove(b, b + used, bl - (size_t)used);
            c->fbuf = b;
            c->flen = (uint32_t)(bl - (size_t)used);
        } else {
            free(b);
        }
        return open;
    }
    long used = net->p.ops.on_stream(net, c, p, len);
    if (used < 0 || c->gen != gen)
        return false;
    if ((size_t)used < len && !lt_ws_buf_append(&c->fbuf, &c->flen, p + used, len - (size_t)used))
        goto proto_error;
    return true;
proto_error:
    net->p.counts->protocol_errors++;
    lost(net, c, EPROTO);
    return false;
}

/* The server closes: echo its code (unless this answers our close), then the connection is gone. */
static void on_close_frame(struct lt_net *net, struct lt_conn *c, const struct lt_ws_frame *f)
{
    if (!c->closing) {
        if (net->p.cfg->verbose > 0)
            fprintf(stderr, "rtgate-load: server closed a connection: code %d\n",
                    f->payload_len >= 2 ? f->payload[0] << 8 | f->payload[1] : 0);
        uint8_t *echo = net->tx + LT_WS_HEADROOM;
        echo[0] = f->payload_len >= 2 ? f->payload[0] : 0x03;
        echo[1] = f->payload_len >= 2 ? f->payload[1] : 0xE8; /* 1000 */
        c->closing = true;
        uint32_t gen = c->gen;
        send_frame(net, c, LT_WS_CLOSE, 2);
        if (c->gen != gen) /* the echo failed: already reported */
            return;
    }
    lost(net, c, 0);
}

/* Handles one frame; false when the connection was closed. */
static bool on_frame(struct lt_net *net, struct lt_conn *c, const struct lt_ws_frame *f)
{
    uint32_t gen = c->gen;
    net->p.counts->frames_in++;
    switch (f->opcode) {
    case LT_WS_TEXT:
    case LT_WS_BINARY:
    case LT_WS_CONT: {
        if (endpoint_of(net, c)->framing == LT_FRAMING_WS_STREAM) {
            /* A stream of bytes: frame bounds do not matter, the fragment rules do. */
            bool cont = f->opcode == LT_WS_CONT;
            if (cont != (c->frag_opcode != 0))
                goto proto_error;
            c->frag_opcode = f->fin ? 0 : cont ? c->frag_opcode : f->opcode;
            return on_stream_chunk(net, c, f->payload, f->payload_len);
        }
        /* The reassembler detaches a finished message: it may close the connection. */
        const uint8_t *msg;
        size_t mlen;
        uint8_t *owned;
        lt_status st =
            lt_ws_reassemble(&c->fbuf, &c->flen, &c->frag_opcode, f, &msg, &mlen, &owned);
        if (st == LT_ERR)
            goto proto_error;
        if (st == LT_OK) {
            on_rtgate_payload(net, c, msg, mlen);
            free(owned);
        }
        break;
    }
    case LT_WS_PING:
        memcpy(net->tx + LT_WS_HEADROOM, f->payload, f->payload_len);
        send_frame(net, c, LT_WS_PONG, f->payload_len);
        break;
    case LT_WS_PONG:
        break;
    case LT_WS_CLOSE:
        on_close_frame(net, c, f);
        return false;
    default:
        goto proto_error;
    }
    return c->gen == gen;
proto_error:
    net->p.counts->protocol_errors++;
    lost(net, c, EPROTO);
    return false;
}

/* The upgrade response is in buf[0..len): returns bytes used, 0 to wait, -1 when closed. */
static long on_upgrade_response(struct lt_net *net, struct lt_conn *c, const uint8_t *buf,
                                size_t len)
{
    const struct lt_endpoint *t = endpoint_of(net, c);
    struct lt_ws_response r;
    lt_status st = lt_ws_parse_response((const char *)buf, len, c->key, t->subprotocol, &r);
    if (st == LT_AGAIN)
        return 0;
    if (st != LT_OK) {
        if (r.status == 429 || r.status == 503) {
            refused(net, c, r.status, r.retry_after_s * 1000u);
        } else {
            if (net->p.cfg->verbose > 0)
                fprintf(stderr, "rtgate-load: handshake refused (HTTP %d)\n", r.status);
            net->p.counts->handshake_failures++;
            fail(net, c, EPROTO);
        }
        return -1;
    }
    uint32_t gen = c->gen;
    c->state = LT_CONN_HELLO;
    net->p.ops.on_up(net, c);
    return c->gen == gen ? (long)r.header_len : -1;
}

/* Handles buf[0..len): returns the bytes used (the rest waits for more), -1 when closed. */
static long consume(struct lt_net *net, struct lt_conn *c, uint8_t *buf, size_t len)
{
    uint32_t gen = c->gen;
    if (endpoint_of(net, c)->framing == LT_FRAMING_TCP_STREAM) {
        long used = net->p.ops.on_stream(net, c, buf, len);
        return c->gen == gen ? used : -1;
    }
    size_t off = 0;
    if (c->state == LT_CONN_UPGRADING) {
        long used = on_upgrade_response(net, c, buf, len);
        if (used <= 0)
            return used;
        off = (size_t)used;
    }
    while (off < len) {
        struct lt_ws_frame f;
        lt_status st = lt_ws_parse_frame(buf + off, len - off, &f);
        if (st == LT_AGAIN)
            break;
        if (st != LT_OK) {
            net->p.counts->protocol_errors++;
            lost(net, c, EPROTO);
            return -1;
        }
        off += f.frame_len;
        if (!on_frame(net, c, &f))
            return -1;
    }
    return (long)off;
}

/* One read: the leftover of the last one, then what the socket has, as far as it fits. */
static void on_readable(struct lt_net *net, struct lt_conn *c)
{
    size_t have = c->rlen;
    if (have + RX_CHUNK > net->rx_cap) {
        size_t ncap = net->rx_cap * 2;
        while (ncap < have + RX_CHUNK)
            ncap *= 2;
        uint8_t *nb = realloc(net->rx, ncap);
        if (!nb) {
            lost(net, c, ENOMEM);
            return;
        }
        net->rx = nb;
        net->rx_cap = ncap;
    }
    if (have) {
        memcpy(net->rx, c->rbuf, have);
        free(c->rbuf);
        c->rbuf = NULL;
        c->rlen = 0;
    }
    ssize_t n = c->tls ? lt_tls_recv(c->tls, net->rx + have, net->rx_cap - have)
                       : recv(c->fd, net->rx + have, net->rx_cap - have, MSG_DONTWAIT);
    if (n <= 0) {
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
            n = 0; /* put the leftover back below */
        } else {
            lost(net, c, n == 0 ? 0 : errno);
            return;
        }
    }
    net->p.counts->bytes_in += (uint64_t)n;
    size_t len = have + (size_t)n;
    long used = consume(net, c, net->rx, len);
    if (used < 0)
        return;
    size_t left = len - (size_t)used;
    if (!left)
        return;
    size_t max = endpoint_of(net, c)->max_pending;
    if (left > (max ? max : LT_WS_MAX_FRAME + FRAME_SLACK)) {
        net->p.counts->protocol_errors++;
        lost(net, c, EPROTO);
        return;
    }
    c->rbuf = malloc(left);
    if (!c->rbuf) {
        lost(net, c, ENOMEM);
        return;
    }
    memcpy(c->rbuf, net->rx + used, left);
    c->rlen = (uint32_t)left;
}

static void on_event(struct lt_net *net, struct lt_conn *c, uint32_t events)
{
    if (c->fd < 0)
        return;
    if (c->state == LT_CONN_CONNECTING) {
        if (events & (EPOLLOUT | EPOLLERR | EPOLLHUP))
            on_tcp_up(net, c);
        return;
    }
    if (c->state == LT_CONN_TLS) {
        tls_step(net, c);
        return;
    }
    if (events & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
        /* OpenSSL may hold decrypted bytes it read with a record: epoll
         * will not report them, so read on while there are some. */
        uint32_t gen = c->gen;
        do
            on_readable(net, c);
        while (c->gen == gen && c->tls && lt_tls_pending(c->tls));
    }
    if (c->fd >= 0 && (events & EPOLLOUT))
        conn_flush(net, c);
}

/* ------------------------------------------------------------------ */
/* Timers and the loop */

/* Set-up timeouts, and refused connections whose retry is due (within --max-handshaking). */
static void housekeep(struct lt_net *net)
{
    if (!net->setting_up && !net->retrying)
        return;
    const struct lt_config *cfg = net->p.cfg;
    uint64_t tmo = (uint64_t)(cfg->setup_timeout_s * 1e9);
    for (uint32_t i = 0; i < net->p.nconns; i++) {
        struct lt_conn *c = lt_net_conn(net, i);
        if (lt_net_in_setup(c) && net->now - c->started_ns > tmo) {
            net->p.counts->setup_timeouts++;
            fail(net, c, ETIMEDOUT);
        } else if (c->state == LT_CONN_RETRY && net->now >= c->retry_at_ns &&
                   net->setting_up < cfg->max_handshaking) {
            net->retrying--;
            c->state = LT_CONN_IDLE;
            attempt(net, c);
        }
    }
}

bool lt_net_poll(struct lt_net *net, uint64_t until)
{
    struct epoll_event evs[512];
    net->now = lt_now_ns();
    if ((net->setting_up || net->retrying) && net->next_housekeep < until)
        until = net->next_housekeep;
    uint64_t wait_ns = until > net->now ? until - net->now : 0;
    int n = -1;
    if (net->have_pwait2) {
        struct timespec ts = {.tv_sec = (time_t)(wait_ns / LT_NS_PER_S),
                              .tv_nsec = (long)(wait_ns % LT_NS_PER_S)};
        n = epoll_pwait2(net->ep, evs, 512, &ts, NULL);
        if (n < 0 && errno == ENOSYS)
            net->have_pwait2 = false;
    }
    if (!net->have_pwait2)
        n = epoll_wait(net->ep, evs, 512, (int)((wait_ns + LT_NS_PER_MS - 1) / LT_NS_PER_MS));
    if (n < 0 && errno != EINTR)
        return false;
    net->now = lt_now_ns();
    for (int i = 0; i < n; i++) {
        uint64_t data = evs[i].data.u64;
        if (data & WATCH_BIT) {
            if (!net->p.ops.on_fd || !net->p.ops.on_fd(net, (uint32_t)data))
                return false;
            continue;
        }
        on_event(net, lt_net_conn(net, (uint32_t)data), evs[i].events);
    }
    net->now = lt_now_ns();
    if (net->now >= net->next_housekeep) {
        housekeep(net);
        net->next_housekeep = net->now + net->p.housekeep_ns;
    }
    return true;
}

bool lt_net_watch(struct lt_net *net, int fd, uint32_t tag)
{
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = WATCH_BIT | tag};
    return epoll_ctl(net->ep, EPOLL_CTL_ADD, fd, &ev) == 0;
}

bool lt_net_init(struct lt_net *net, const struct lt_net_params *params)
{
    memset(net, 0, sizeof *net);
    net->ep = -1;
    net->p = *params;
    for (uint32_t i = 0; i < net->p.nconns; i++) {
        struct lt_conn *c = lt_net_conn(net, i);
        memset(c, 0, sizeof *c);
        c->fd = -1;
        c->id = i;
        c->source = LT_NET_NO_SOURCE;
    }
    net->rx_cap = 4 * RX_CHUNK;
    net->rx = malloc(net->rx_cap);
    net->tx = malloc(LT_WS_HEADROOM + net->p.tx_cap);
    net->ep = epoll_create1(EPOLL_CLOEXEC);
    net->now = lt_now_ns();
    net->next_housekeep = net->now + net->p.housekeep_ns;
    net->have_pwait2 = true;
    net->rng = net->now ^ ((uint64_t)getpid() << 32) ^ 0x9E3779B97F4A7C15ull;
    if (net->rng == 0)
        net->rng = 1;
    for (size_t i = 0; i < net->p.n_endpoints; i++) {
        if (!net->p.endpoints[i].tls || net->tls_ctx)
            continue;
        char err[256];
        net->tls_ctx = lt_tls_ctx_create(net->p.cfg->tls_ca, err, sizeof err);
        if (!net->tls_ctx) {
            fprintf(stderr, "rtgate-load: %s\n", err);
            return false;
        }
    }
    return net->rx && net->tx && net->ep >= 0;
}

void lt_net_free(struct lt_net *net)
{
    if (!net->p.conns) /* zeroed, or freed already */
        return;
    for (uint32_t i = 0; i < net->p.nconns; i++) {
        struct lt_conn *c = lt_net_conn(net, i);
        if (c->fd >= 0 || c->rbuf || c->wbuf || c->fbuf)
            drop(net, c);
    }
    free(net->rx);
    free(net->tx);
    if (net->ep >= 0)
        close(net->ep);
    lt_tls_ctx_free(net->tls_ctx);
    net->tls_ctx = NULL;
    net->rx = net->tx = NULL;
    net->ep = -1;
    net->p.conns = NULL;
}
