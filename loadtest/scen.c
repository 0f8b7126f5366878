/*
 * scen.c: the engine of the single-process scenarios (scen.h), their
 * options, and the JSON helpers they share. The scenarios themselves are in
 * scen_presence.c and scen_churn.c (churn and storm).
 */
#define _GNU_SOURCE /* epoll_pwait2 */
#include "scen.h"

#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#define RX_CHUNK     65536
#define HOUSEKEEP_NS (10 * LT_NS_PER_MS)
#define MAX_ATTEMPTS 20

/* ------------------------------------------------------------------ */
/* Small helpers */

uint64_t sc_rand(struct sc_engine *e)
{
    /* xorshift64*: masking keys, nonces and random walks, not secrets */
    uint64_t x = e->rng;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    e->rng = x;
    return x * 0x2545F4914F6CDD1Dull;
}

double sc_rand01(struct sc_engine *e)
{
    return (double)(sc_rand(e) >> 11) / 9007199254740992.0;
}

void sc_channel(const struct lt_config *cfg, uint32_t i, char *out, size_t cap)
{
    snprintf(out, cap, "%s.c%u", cfg->channel_prefix, i % (cfg->channels ? cfg->channels : 1));
}

bool sc_raise_fd_limit(uint32_t need)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return false;
    if (rl.rlim_cur >= need)
        return true;
    rl.rlim_cur = rl.rlim_max != RLIM_INFINITY && rl.rlim_max < need ? rl.rlim_max : need;
    return setrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur >= need;
}

static void count_code(struct sc_engine *e, int code)
{
    e->n.error_codes[lt_error_code_index(code)]++;
}

/* ------------------------------------------------------------------ */
/* Sending */

static void want_out(struct sc_engine *e, struct sc_conn *c, bool on)
{
    if (c->want_out == on || c->fd < 0)
        return;
    struct epoll_event ev = {.events = EPOLLIN | (on ? EPOLLOUT : 0u),
                             .data.u64 = (uint64_t)(c - e->conns)};
    if (epoll_ctl(e->ep, EPOLL_CTL_MOD, c->fd, &ev) == 0)
        c->want_out = on;
}

static void conn_lost(struct sc_engine *e, struct sc_conn *c);

static void conn_write(struct sc_engine *e, struct sc_conn *c, const uint8_t *p, size_t len)
{
    if (c->fd < 0)
        return;
    enum lt_wq r = lt_wq_write(c->fd, &c->wbuf, &c->wlen, p, len, 64u << 20);
    if (r == LT_WQ_FAILED)
        conn_lost(e, c);
    else if (r == LT_WQ_PENDING)
        want_out(e, c, true);
}

static void conn_flush(struct sc_engine *e, struct sc_conn *c)
{
    enum lt_wq r = lt_wq_flush(c->fd, &c->wbuf, &c->wlen);
    if (r == LT_WQ_FAILED)
        conn_lost(e, c);
    else if (r == LT_WQ_EMPTY)
        want_out(e, c, false);
}

struct lt_out sc_tx(struct sc_engine *e)
{
    return (struct lt_out){.p = e->tx + LT_WS_HEADROOM, .len = 0, .cap = SC_TX_CAP};
}

static void send_opcode(struct sc_engine *e, struct sc_conn *c, uint8_t opcode, size_t len)
{
    size_t flen;
    uint8_t *f = lt_ws_frame_in_place(e->tx, len, opcode, true, (uint32_t)sc_rand(e), &flen);
    conn_write(e, c, f, flen);
}

void sc_send(struct sc_engine *e, struct sc_conn *c, size_t len)
{
    send_opcode(e, c, e->cfg->codec == LT_CODEC_JSON ? LT_WS_TEXT : LT_WS_BINARY, len);
}

/* ------------------------------------------------------------------ */
/* Life cycle */

static bool in_setup(const struct sc_conn *c)
{
    return c->state >= SC_CONNECTING && c->state <= SC_SUB_SENT;
}

uint32_t sc_in_setup(const struct sc_engine *e)
{
    return e->handshaking + e->retrying;
}

/* Closes the socket and frees the buffers; the state becomes `to`. */
static void conn_drop(struct sc_engine *e, struct sc_conn *c, enum sc_state to)
{
    if (in_setup(c))
        e->handshaking--;
    if (c->state == SC_RETRY)
        e->retrying--;
    if (c->fd >= 0) {
        close(c->fd);
        c->fd = -1;
    }
    free(c->rbuf);
    free(c->fbuf);
    free(c->wbuf);
    c->rbuf = c->fbuf = c->wbuf = NULL;
    c->rlen = c->flen = c->wlen = 0;
    c->frag_opcode = 0;
    c->want_out = false;
    c->state = (uint8_t)to;
}

static void conn_fail(struct sc_engine *e, struct sc_conn *c)
{
    conn_drop(e, c, SC_IDLE);
    if (e->ops.on_failed)
        e->ops.on_failed(e, c);
}

static void conn_lost(struct sc_engine *e, struct sc_conn *c)
{
    if (c->state == SC_READY) {
        e->n.server_closes++;
        conn_drop(e, c, SC_IDLE);
        if (e->ops.on_lost)
            e->ops.on_lost(e, c);
    } else {
        conn_fail(e, c);
    }
}

/* Refused with 429/503 at the handshake. */
static void conn_refused(struct sc_engine *e, struct sc_conn *c, uint32_t after_ms)
{
    e->n.handshake_refused++;
    uint64_t budget = (uint64_t)(e->cfg->setup_timeout_s * 1e9);
    if (!e->retry_refused || c->attempts >= MAX_ATTEMPTS || e->now - c->cycle_ns > budget) {
        e->n.handshake_failures++;
        conn_fail(e, c);
        return;
    }
    conn_drop(e, c, SC_RETRY);
    e->retrying++;
    e->n.handshake_retries++;
    uint64_t backoff =
        (uint64_t)(after_ms ? after_ms : 100u << (c->attempts < 5 ? c->attempts : 5));
    c->retry_at_ns = e->now + backoff * LT_NS_PER_MS + sc_rand(e) % (50 * LT_NS_PER_MS);
}

static void conn_ready(struct sc_engine *e, struct sc_conn *c)
{
    e->handshaking--;
    c->state = SC_READY;
    e->n.ready++;
    lt_hist_record(&e->setup, e->now - c->started_ns);
    if (e->ops.on_ready)
        e->ops.on_ready(e, c);
}

static void attempt(struct sc_engine *e, struct sc_conn *c)
{
    const struct lt_config *cfg = e->cfg;
    c->attempts++;
    c->started_ns = e->now;
    e->n.attempts++;
    const struct sockaddr_storage *dst = c->node ? &cfg->sc.dst2 : &cfg->dst;
    socklen_t dst_len = c->node ? cfg->sc.dst2_len : cfg->dst_len;
    int fd = socket(dst->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        e->n.connect_errors++;
        conn_fail(e, c);
        return;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (cfg->n_src) {
        size_t si = c->index % cfg->n_src;
        setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
        if (bind(fd, (const struct sockaddr *)&cfg->src[si], cfg->src_len[si]) != 0) {
            close(fd);
            e->n.connect_errors++;
            conn_fail(e, c);
            return;
        }
    }
    if (connect(fd, (const struct sockaddr *)dst, dst_len) != 0 && errno != EINPROGRESS) {
        if (cfg->verbose > 1)
            fprintf(stderr, "rtgate-load: connect: %s\n", strerror(errno));
        close(fd);
        e->n.connect_errors++;
        conn_fail(e, c);
        return;
    }
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.u64 = (uint64_t)(c - e->conns)};
    if (epoll_ctl(e->ep, EPOLL_CTL_ADD, fd, &ev) != 0) {
        close(fd);
        e->n.connect_errors++;
        conn_fail(e, c);
        return;
    }
    c->fd = fd;
    c->want_out = true;
    c->state = SC_CONNECTING;
    e->handshaking++;
}

void sc_open(struct sc_engine *e, struct sc_conn *c)
{
    if (c->state != SC_IDLE)
        return;
    c->attempts = 0;
    c->cycle_ns = e->now;
    c->next_id = 3;
    attempt(e, c);
}

void sc_close(struct sc_engine *e, struct sc_conn *c)
{
    static const uint8_t normal[2] = {0x03, 0xE8};
    if (c->state == SC_READY && c->fd >= 0 && c->wlen == 0) {
        memcpy(e->tx + LT_WS_HEADROOM, normal, sizeof normal);
        send_opcode(e, c, LT_WS_CLOSE, sizeof normal);
    }
    conn_drop(e, c, SC_IDLE);
}

static const char *subprotocol(const struct sc_engine *e)
{
    return e->cfg->codec == LT_CODEC_JSON ? LT_SUBPROTOCOL_JSON : LT_SUBPROTOCOL_MSGPACK;
}

static void on_tcp_up(struct sc_engine *e, struct sc_conn *c)
{
    int err = 0;
    socklen_t el = sizeof err;
    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el) != 0 || err != 0) {
        if (e->cfg->verbose > 1)
            fprintf(stderr, "rtgate-load: connect: %s\n", strerror(err));
        e->n.connect_errors++;
        conn_fail(e, c);
        return;
    }
    uint8_t nonce[16];
    for (int i = 0; i < 16; i += 8) {
        uint64_t r = sc_rand(e);
        memcpy(nonce + i, &r, 8);
    }
    lt_base64(nonce, sizeof nonce, c->key, sizeof c->key);
    char req[1024];
    const struct lt_scen_config *sc = &e->cfg->sc;
    size_t n = lt_ws_request(req, sizeof req, c->node ? sc->host_header2 : e->cfg->host_header,
                             c->node ? sc->path2 : e->cfg->path, c->key, subprotocol(e));
    c->state = SC_HANDSHAKE;
    want_out(e, c, false);
    conn_write(e, c, (const uint8_t *)req, n);
}

/* The upgrade is done: `connect`, and `sub` right behind it (PROTOCOL.md 2.1 allows that). */
static void send_connect(struct sc_engine *e, struct sc_conn *c)
{
    struct lt_out o = sc_tx(e);
    lt_enc_connect(&o, e->cfg->codec, 1, "rtgate-load");
    if (c->subscribe) {
        char ch[160];
        sc_channel(e->cfg, c->index, ch, sizeof ch);
        lt_enc_sub(&o, e->cfg->codec, 2, ch);
    }
    c->state = SC_CONNECT_SENT;
    /* msgpack maps and JSON lines may share a frame (PROTOCOL.md 1). */
    sc_send(e, c, o.len);
}

/* ------------------------------------------------------------------ */
/* Receiving */

static void on_message(struct sc_engine *e, struct sc_conn *c, const struct lt_smsg *m,
                       const uint8_t *raw, size_t raw_len)
{
    e->n.msgs_in++;
    if (c->state == SC_CONNECT_SENT || c->state == SC_SUB_SENT) {
        if (m->type == LT_M_CONNECTED && c->state == SC_CONNECT_SENT) {
            if (c->subscribe)
                c->state = SC_SUB_SENT;
            else
                conn_ready(e, c);
        } else if (m->type == LT_M_REPLY && m->has_id && m->id == 2 && m->ok == 1 &&
                   c->state == SC_SUB_SENT) {
            conn_ready(e, c);
        } else if (m->type == LT_M_REPLY || m->type == LT_M_ERROR) {
            if (e->cfg->verbose > 0)
                fprintf(stderr, "rtgate-load: set-up refused: code %d\n", m->error_code);
            count_code(e, m->error_code);
            e->n.setup_errors++;
            conn_fail(e, c);
        }
        return;
    }
    if (m->type == LT_M_ERROR) {
        count_code(e, m->error_code);
        e->n.error_msgs++;
        return;
    }
    if (m->type == LT_M_DISCONNECT) {
        e->n.server_disconnects++;
        return;
    }
    if (e->ops.on_msg)
        e->ops.on_msg(e, c, m, raw, raw_len);
}

static void on_payload(struct sc_engine *e, struct sc_conn *c, const uint8_t *p, size_t len)
{
    size_t pos = 0;
    int fd = c->fd;
    for (;;) {
        struct lt_smsg m;
        size_t start = pos;
        lt_status st = e->cfg->codec == LT_CODEC_JSON ? lt_scan_json(p, len, &pos, &m)
                                                      : lt_scan_msgpack(p, len, &pos, &m);
        if (st == LT_AGAIN)
            return;
        if (st != LT_OK) {
            e->n.protocol_errors++;
            return;
        }
        on_message(e, c, &m, p + start, pos - start);
        if (c->fd != fd)
            return;
    }
}

/* One frame; false when the connection is gone. */
static bool on_frame(struct sc_engine *e, struct sc_conn *c, const struct lt_ws_frame *f)
{
    int fd = c->fd;
    e->n.frames_in++;
    switch (f->opcode) {
    case LT_WS_TEXT:
    case LT_WS_BINARY:
    case LT_WS_CONT: {
        const uint8_t *msg;
        size_t mlen;
        uint8_t *owned;
        lt_status st =
            lt_ws_reassemble(&c->fbuf, &c->flen, &c->frag_opcode, f, &msg, &mlen, &owned);
        if (st == LT_ERR)
            goto proto_error;
        if (st == LT_OK) {
            on_payload(e, c, msg, mlen);
            free(owned);
        }
        break;
    }
    case LT_WS_PING:
        memcpy(e->tx + LT_WS_HEADROOM, f->payload, f->payload_len);
        send_opcode(e, c, LT_WS_PONG, f->payload_len);
        break;
    case LT_WS_PONG:
        break;
    case LT_WS_CLOSE:
        conn_lost(e, c);
        return false;
    default:
        goto proto_error;
    }
    return c->fd == fd;
proto_error:
    e->n.protocol_errors++;
    conn_lost(e, c);
    return false;
}

/* Handles buf[0..len) (upgrade response, then frames); returns bytes used, -1 when closed. */
static long consume(struct sc_engine *e, struct sc_conn *c, uint8_t *buf, size_t len)
{
    size_t off = 0;
    if (c->state == SC_HANDSHAKE) {
        struct lt_ws_response r;
        lt_status st = lt_ws_parse_response((const char *)buf, len, c->key, subprotocol(e), &r);
        if (st == LT_AGAIN)
            return 0;
        if (st != LT_OK) {
            if (r.status == 429 || r.status == 503) {
                count_code(e, r.status);
                conn_refused(e, c, r.retry_after_s * 1000u);
            } else {
                if (e->cfg->verbose > 0)
                    fprintf(stderr, "rtgate-load: handshake refused (HTTP %d)\n", r.status);
                e->n.handshake_failures++;
                conn_fail(e, c);
            }
            return -1;
        }
        off = r.header_len;
        send_connect(e, c);
        if (c->fd < 0)
            return -1;
    }
    while (off < len) {
        struct lt_ws_frame f;
        lt_status st = lt_ws_parse_frame(buf + off, len - off, &f);
        if (st == LT_AGAIN)
            break;
        if (st != LT_OK) {
            e->n.protocol_errors++;
            conn_lost(e, c);
            return -1;
        }
        off += f.frame_len;
        if (!on_frame(e, c, &f))
            return -1;
    }
    return (long)off;
}

static void on_readable(struct sc_engine *e, struct sc_conn *c)
{
    for (int rounds = 0; rounds < 4 && c->fd >= 0; rounds++) {
        size_t have = c->rlen;
        if (have)
            memcpy(e->rx, c->rbuf, have); /* < one frame: rx has room for it and a read */
        ssize_t n = recv(c->fd, e->rx + have, RX_CHUNK, MSG_DONTWAIT);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
            conn_lost(e, c);
            return;
        }
        if (n < 0)
            return;
        e->n.bytes_in += (uint64_t)n;
        size_t len = have + (size_t)n;
        long used = consume(e, c, e->rx, len);
        if (used < 0 || c->fd < 0)
            return;
        size_t left = len - (size_t)used;
        if (left > LT_WS_MAX_FRAME + 16) {
            e->n.protocol_errors++;
            conn_lost(e, c);
            return;
        }
        if (left) {
            uint8_t *nb = realloc(c->rbuf, left);
            if (!nb) {
                conn_lost(e, c);
                return;
            }
            memcpy(nb, e->rx + used, left);
            c->rbuf = nb;
        } else {
            free(c->rbuf);
            c->rbuf = NULL;
        }
        c->rlen = (uint32_t)left;
        if ((size_t)n < RX_CHUNK)
            return;
    }
}

static void on_event(struct sc_engine *e, struct sc_conn *c, uint32_t events)
{
    if (c->fd < 0)
        return;
    if (c->state == SC_CONNECTING) {
        if (events & (EPOLLOUT | EPOLLERR | EPOLLHUP))
            on_tcp_up(e, c);
        return;
    }
    if (events & (EPOLLIN | EPOLLERR | EPOLLHUP))
        on_readable(e, c);
    if (c->fd >= 0 && (events & EPOLLOUT))
        conn_flush(e, c);
}

static void housekeep(struct sc_engine *e)
{
    if (!e->handshaking && !e->retrying)
        return;
    uint64_t tmo = (uint64_t)(e->cfg->setup_timeout_s * 1e9);
    for (uint32_t i = 0; i < e->nconns; i++) {
        struct sc_conn *c = &e->conns[i];
        if (in_setup(c) && e->now - c->started_ns > tmo) {
            e->n.setup_timeouts++;
            e->n.setup_errors++;
            conn_fail(e, c);
        } else if (c->state == SC_RETRY && e->now >= c->retry_at_ns &&
                   e->handshaking < e->cfg->max_handshaking) {
            e->retrying--;
            c->state = SC_IDLE;
            attempt(e, c);
        }
    }
}

void sc_poll(struct sc_engine *e, uint64_t until)
{
    struct epoll_event evs[256];
    e->now = lt_now_ns();
    if (e->next_housekeep < until && (e->handshaking || e->retrying))
        until = e->next_housekeep;
    uint64_t wait = until > e->now ? until - e->now : 0;
    struct timespec ts = {.tv_sec = (time_t)(wait / LT_NS_PER_S),
                          .tv_nsec = (long)(wait % LT_NS_PER_S)};
    int n = epoll_pwait2(e->ep, evs, 256, &ts, NULL);
    if (n < 0 && errno == ENOSYS)
        n = epoll_wait(e->ep, evs, 256, (int)((wait + LT_NS_PER_MS - 1) / LT_NS_PER_MS));
    e->now = lt_now_ns();
    for (int i = 0; i < n; i++)
        on_event(e, &e->conns[evs[i].data.u64], evs[i].events);
    if (e->now >= e->next_housekeep) {
        housekeep(e);
        e->next_housekeep = e->now + HOUSEKEEP_NS;
    }
}

bool sc_init(struct sc_engine *e, const struct lt_config *cfg, uint32_t nconns,
             const struct sc_ops *ops, void *arg)
{
    memset(e, 0, sizeof *e);
    e->ep = -1;
    e->cfg = cfg;
    e->ops = *ops;
    e->arg = arg;
    e->nconns = nconns;
    e->conns = calloc(nconns ? nconns : 1, sizeof *e->conns);
    /* Room for one frame's worth of leftover bytes plus a fresh read. */
    e->rx = malloc(LT_WS_MAX_FRAME + 16 + RX_CHUNK);
    e->tx = malloc(LT_WS_HEADROOM + SC_TX_CAP);
    e->ep = epoll_create1(EPOLL_CLOEXEC);
    if (!e->conns || !e->rx || !e->tx || e->ep < 0)
        return false;
    for (uint32_t i = 0; i < nconns; i++) {
        e->conns[i].fd = -1;
        e->conns[i].index = i;
    }
    lt_hist_init(&e->setup);
    e->now = lt_now_ns();
    e->rng = e->now ^ ((uint64_t)getpid() << 32) ^ 0x9E3779B97F4A7C15ull;
    if (e->rng == 0)
        e->rng = 1;
    return true;
}

void sc_free(struct sc_engine *e)
{
    for (uint32_t i = 0; e->conns && i < e->nconns; i++)
        if (e->conns[i].fd >= 0 || e->conns[i].rbuf || e->conns[i].wbuf || e->conns[i].fbuf)
            conn_drop(e, &e->conns[i], SC_IDLE);
    free(e->conns);
    free(e->rx);
    free(e->tx);
    if (e->ep >= 0)
        close(e->ep);
    e->conns = NULL;
    e->rx = e->tx = NULL;
    e->ep = -1;
}

/* ------------------------------------------------------------------ */
/* JSON */

double sc_us(const struct lt_hist *h, double q)
{
    return h->total ? (double)lt_hist_percentile(h, q) / 1e3 : 0;
}

void sc_json_hist(FILE *f, const char *key, const struct lt_hist *h)
{
    fprintf(f,
            ",\"%s\":{\"p50\":%.1f,\"p90\":%.1f,\"p99\":%.1f,\"p999\":%.1f,\"max\":%.1f,"
            "\"mean\":%.1f,\"count\":%llu}",
            key, sc_us(h, 50), sc_us(h, 90), sc_us(h, 99), sc_us(h, 99.9),
            h->total ? (double)h->max / 1e3 : 0, h->total ? lt_hist_mean(h) / 1e3 : 0,
            (unsigned long long)h->total);
}

void sc_json_counts(FILE *f, const struct sc_counts *n)
{
    static const char *names[LT_ERR_CODES] = {"400", "401", "403", "404",  "409",
                                              "413", "429", "503", "other"};
    fprintf(f,
            ",\"conn\":{\"attempts\":%llu,\"ready\":%llu,\"connect_errors\":%llu,"
            "\"handshake_refused\":%llu,\"handshake_retries\":%llu,\"handshake_failures\":%llu,"
            "\"setup_errors\":%llu,\"setup_timeouts\":%llu,\"server_closes\":%llu,"
            "\"server_disconnects\":%llu,\"protocol_errors\":%llu,\"error_msgs\":%llu,"
            "\"frames_in\":%llu,\"msgs_in\":%llu,\"bytes_in\":%llu,\"error_codes\":{",
            (unsigned long long)n->attempts, (unsigned long long)n->ready,
            (unsigned long long)n->connect_errors, (unsigned long long)n->handshake_refused,
            (unsigned long long)n->handshake_retries, (unsigned long long)n->handshake_failures,
            (unsigned long long)n->setup_errors, (unsigned long long)n->setup_timeouts,
            (unsigned long long)n->server_closes, (unsigned long long)n->server_disconnects,
            (unsigned long long)n->protocol_errors, (unsigned long long)n->error_msgs,
            (unsigned long long)n->frames_in, (unsigned long long)n->msgs_in,
            (unsigned long long)n->bytes_in);
    bool first = true;
    for (int i = 0; i < LT_ERR_CODES; i++)
        if (n->error_codes[i]) {
            fprintf(f, "%s\"%s\":%llu", first ? "" : ",", names[i],
                    (unsigned long long)n->error_codes[i]);
            first = false;
        }
    fprintf(f, "}}");
}

void sc_json_server(FILE *f, const struct lt_config *cfg, const struct lt_proc_sample *before,
                    const struct lt_proc_sample *a, const struct lt_proc_sample *b,
                    const char *const *unit_names, const double *units, size_t n_units)
{
    if (cfg->n_server_pids) {
        fprintf(f, ",\"server\":{\"pids\":[");
        for (size_t i = 0; i < cfg->n_server_pids; i++)
            fprintf(f, "%s%d", i ? "," : "", (int)cfg->server_pids[i]);
        bool ok = before->ok && a->ok && b->ok;
        double cpu_s = ok ? lt_ticks_to_us(b->cpu_ticks - a->cpu_ticks) / 1e6 : 0;
        double wall = (double)(b->at_ns - a->at_ns) / 1e9;
        fprintf(f, "],\"sampled\":%s,\"cpu_s\":%.3f,\"window_s\":%.3f,\"cpu_util\":%.3f",
                ok ? "true" : "false", cpu_s, wall, wall > 0 ? cpu_s / wall : 0);
        for (size_t i = 0; i < n_units; i++) {
            if (units[i] > 0)
                fprintf(f, ",\"cpu_us_per_%s\":%.1f", unit_names[i], cpu_s * 1e6 / units[i]);
            else
                fprintf(f, ",\"cpu_us_per_%s\":null", unit_names[i]);
        }
        fprintf(f, ",\"rss_kb_before\":%llu,\"rss_kb_start\":%llu,\"rss_kb_end\":%llu}",
                (unsigned long long)before->rss_kb, (unsigned long long)a->rss_kb,
                (unsigned long long)b->rss_kb);
    }
    if (cfg->n_broker_pids) {
        bool ok = a->broker_ok && b->broker_ok;
        double cpu_s = ok ? lt_ticks_to_us(b->broker_cpu_ticks - a->broker_cpu_ticks) / 1e6 : 0;
        fprintf(f, ",\"broker\":{\"sampled\":%s,\"cpu_s\":%.3f,\"rss_kb_end\":%llu}",
                ok ? "true" : "false", cpu_s, (unsigned long long)b->broker_rss_kb);
    }
    double wall = (double)(b->at_ns - a->at_ns) / 1e9;
    long hz = sysconf(_SC_CLK_TCK);
    fprintf(f, ",\"machine\":{\"busy_cores\":%.2f}",
            wall > 0 ? (double)(b->machine_busy_ticks - a->machine_busy_ticks) /
                           (double)(hz > 0 ? hz : 100) / wall
                     : 0.0);
}

void sc_emit(const struct lt_config *cfg, void (*fn)(FILE *f, const void *arg), const void *arg)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&buf, &len);
    if (!m)
        return;
    fn(m, arg);
    fputc('\n', m);
    fclose(m);
    fwrite(buf, 1, len, stdout);
    fflush(stdout);
    if (cfg->json_path) {
        FILE *f = fopen(cfg->json_path, "a");
        if (f) {
            fwrite(buf, 1, len, f);
            fclose(f);
        } else {
            fprintf(stderr, "rtgate-load: cannot append to %s: %s\n", cfg->json_path,
                    strerror(errno));
        }
    }
    free(buf);
}

/* ------------------------------------------------------------------ */
/* Options */

bool lt_scen_own(enum lt_scenario s)
{
    return s == LT_SC_PRESENCE || s == LT_SC_CHURN || s == LT_SC_STORM;
}

bool lt_scen_from_name(const char *name, enum lt_scenario *out)
{
    if (strcmp(name, "presence") == 0)
        *out = LT_SC_PRESENCE;
    else if (strcmp(name, "churn") == 0)
        *out = LT_SC_CHURN;
    else if (strcmp(name, "storm") == 0)
        *out = LT_SC_STORM;
    else
        return false;
    return true;
}

static bool num(const char *v, double lo, double hi, double *out)
{
    char *end;
    errno = 0;
    double d = strtod(v, &end);
    if (errno || end == v || *end || !isfinite(d) || d < lo || d > hi)
        return false;
    *out = d;
    return true;
}

static bool count(const char *v, uint32_t hi, uint32_t *out)
{
    double d;
    if (!num(v, 0, hi, &d) || d != floor(d))
        return false;
    *out = (uint32_t)d;
    return true;
}

static bool valid_space(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 64)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-'))
            return false;
    }
    return true;
}

bool lt_scen_option(struct lt_config *cfg, const char *name, const char *val, bool *ok)
{
    struct lt_scen_config *sc = &cfg->sc;
    *ok = true;
    if (strcmp(name, "--url2") == 0) {
        *ok = strlen(val) < sizeof sc->url2;
        if (*ok)
            strcpy(sc->url2, val);
    } else if (strcmp(name, "--setters") == 0) {
        *ok = count(val, LT_SCEN_MAX_CONNS, &sc->setters) && sc->setters > 0;
    } else if (strcmp(name, "--set-rate") == 0) {
        *ok = num(val, 0.01, 1e6, &sc->set_rate);
    } else if (strcmp(name, "--queriers") == 0) {
        *ok = count(val, LT_SCEN_MAX_CONNS, &sc->queriers);
        sc->queriers_given = true;
    } else if (strcmp(name, "--query-rate") == 0) {
        *ok = num(val, 0, 1e6, &sc->query_rate);
        sc->query_rate_given = true;
    } else if (strcmp(name, "--watchers") == 0) {
        *ok = count(val, LT_SCEN_MAX_CONNS, &sc->watchers);
    } else if (strcmp(name, "--radius-m") == 0) {
        *ok = num(val, 1, 50000, &sc->radius_m);
    } else if (strcmp(name, "--near-limit") == 0) {
        *ok = count(val, 1000, &sc->near_limit) && sc->near_limit > 0;
    } else if (strcmp(name, "--watch-radius-m") == 0) {
        *ok = num(val, 1, 50000, &sc->watch_radius_m);
    } else if (strcmp(name, "--area-km") == 0) {
        *ok = num(val, 0.01, 1000, &sc->area_km);
    } else if (strcmp(name, "--center") == 0) {
        *ok = sscanf(val, "%lf,%lf", &sc->center_lat, &sc->center_lon) == 2 &&
              fabs(sc->center_lat) <= 80 && fabs(sc->center_lon) <= 170;
    } else if (strcmp(name, "--step-m") == 0) {
        *ok = num(val, 0, 10000, &sc->step_m);
    } else if (strcmp(name, "--space") == 0) {
        *ok = valid_space(val);
        if (*ok)
            strcpy(sc->space, val);
    } else if (strcmp(name, "--reconnect-rate") == 0) {
        *ok = num(val, 0, 1e6, &sc->reconnect_rate);
    } else if (strcmp(name, "--hold") == 0) {
        *ok = num(val, 0, 3600, &sc->hold_s);
    } else {
        return false;
    }
    return true;
}

bool lt_scen_check(struct lt_config *cfg)
{
    struct lt_scen_config *sc = &cfg->sc;
    uint32_t total = 0;
    if (cfg->publishers || cfg->target != LT_TGT_RTGATE || cfg->pub_via != LT_PV_WS) {
        fprintf(stderr, "rtgate-load: %s speaks rtgate's protocol and has no publishers\n",
                lt_scenario_name(cfg->scenario));
        return false;
    }
    if (sc->url2[0]) {
        if (cfg->scenario != LT_SC_PRESENCE) {
            fprintf(stderr, "rtgate-load: --url2 is for --scenario presence\n");
            return false;
        }
        /* lt_parse_url fills the main target's fields: parse into a copy. */
        struct lt_config *tmp = malloc(sizeof *tmp);
        char err[256];
        if (!tmp)
            return false;
        *tmp = *cfg;
        bool ok = lt_parse_url(tmp, sc->url2, err, sizeof err);
        if (ok) {
            memcpy(&sc->dst2, &tmp->dst, sizeof sc->dst2);
            sc->dst2_len = tmp->dst_len;
            strcpy(sc->host_header2, tmp->host_header);
            strcpy(sc->path2, tmp->path);
        } else {
            fprintf(stderr, "rtgate-load: --url2: %s\n", err);
        }
        free(tmp);
        if (!ok)
            return false;
    }
    switch (cfg->scenario) {
    case LT_SC_PRESENCE:
        if (cfg->codec != LT_CODEC_JSON) {
            fprintf(stderr, "rtgate-load: presence speaks rtgate.v1.json only\n");
            return false;
        }
        if (!sc->setters)
            sc->setters = cfg->subs ? cfg->subs : 1000;
        if (sc->set_rate == 0)
            sc->set_rate = cfg->rate > 0 ? cfg->rate : 2000;
        if (!sc->queriers_given)
            sc->queriers = sc->query_rate_given && sc->query_rate == 0 ? 0 : 10;
        if (!sc->query_rate_given)
            sc->query_rate = sc->queriers ? 200 : 0;
        if (sc->query_rate > 0 && sc->queriers == 0) {
            fprintf(stderr, "rtgate-load: --query-rate needs --queriers > 0\n");
            return false;
        }
        if (sc->radius_m == 0)
            sc->radius_m = 500;
        if (sc->near_limit == 0)
            sc->near_limit = 50;
        if (sc->watch_radius_m == 0)
            sc->watch_radius_m = 1000;
        if (sc->area_km == 0)
            sc->area_km = 20;
        if (sc->center_lat == 0 && sc->center_lon == 0) {
            sc->center_lat = 52.52;
            sc->center_lon = 13.405;
        }
        if (sc->step_m == 0)
            sc->step_m = 25;
        if (!sc->space[0])
            strcpy(sc->space, "load");
        total = sc->setters + sc->queriers + sc->watchers;
        break;
    case LT_SC_CHURN:
        if (cfg->rate == 0)
            cfg->rate = 200;
        if (!cfg->channels)
            cfg->channels = 100;
        total = cfg->max_handshaking; /* the pool of connections in flight */
        break;
    case LT_SC_STORM:
        if (!cfg->subs)
            cfg->subs = 1000;
        if (!cfg->channels)
            cfg->channels = 100;
        if (sc->hold_s == 0)
            sc->hold_s = 1;
        total = cfg->subs;
        break;
    default:
        return false;
    }
    if (total > LT_SCEN_MAX_CONNS) {
        fprintf(stderr, "rtgate-load: %s runs in one process: at most %u connections\n",
                lt_scenario_name(cfg->scenario), LT_SCEN_MAX_CONNS);
        return false;
    }
    if (cfg->timeout_s == 0)
        cfg->timeout_s = (double)total / cfg->connect_rate + cfg->setup_timeout_s + cfg->warmup_s +
                         cfg->duration_s + cfg->drain_s + 60;
    return true;
}

int lt_scen_run(const struct lt_config *cfg)
{
    switch (cfg->scenario) {
    case LT_SC_PRESENCE:
        return lt_scen_presence(cfg);
    case LT_SC_CHURN:
        return lt_scen_churn(cfg);
    case LT_SC_STORM:
        return lt_scen_storm(cfg);
    default:
        return 2;
    }
}
