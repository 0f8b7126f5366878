/*
 * worker.c: one epoll loop that owns a slice of the connections (some
 * subscribers, some publishers) for the whole run. Runs in a forked child;
 * the parent drives the phases over the pipes:
 *
 *   SETUP        open connections at the connect rate: TCP, upgrade,
 *                `connect`, `sub` (NATS: [upgrade,] INFO, CONNECT + SUB +
 *                PING, PONG); then READY to the parent
 *   WAIT_START   until START (the same t0 for every worker)
 *   RUN          publishers fill their slots at the fixed rate until t_end
 *   PUB_DRAIN    wait for the replies of the last pubs; then PUBDONE
 *   WAIT_EXPECT  until EXPECT (deliveries this worker should see in all)
 *   DRAIN        until all arrived or t_drain; then RESULT
 *   WAIT_FINISH  connections stay open (the parent samples the server) until FINISH
 *
 * Connections come in three kinds: rtgate's protocol over WebSocket (the
 * default), NATS's protocol over nats-server's WebSocket listener (--target
 * nats-ws) and NATS over plain TCP (publishers with --publish-via nats).
 *
 * Only this file does socket I/O. All buffers are per worker except what a
 * connection cannot avoid keeping: a partial frame, a fragmented message,
 * unsent bytes. An idle connection holds none of them.
 */
#define _GNU_SOURCE /* epoll_pwait2 */
#include "load.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

#define RX_CHUNK        65536
#define TX_CAP          (256 * 1024)
#define PUB_FRAME_BYTES (48 * 1024) /* a publisher's batched frame stays below this */
#define RING_BITS       14          /* pub replies outstanding per publisher */
#define PIPE_TAG        UINT64_MAX
#define HOUSEKEEP_NS    (20 * LT_NS_PER_MS)
#define MAX_ATTEMPTS    20
#define NATS_PING_NS    (10 * LT_NS_PER_MS) /* a NATS publisher confirms its PUBs this often */
#define NATS_MARKS      1024u               /* PINGs outstanding per NATS publisher */

enum cstate {
    C_WAIT = 0,     /* not opened yet */
    C_RETRY,        /* refused at the handshake, waiting for retry_at_ns */
    C_CONNECTING,   /* TCP connect in progress */
    C_HANDSHAKE,    /* upgrade request sent */
    C_WAIT_INFO,    /* NATS: waiting for the server's INFO */
    C_CONNECT_SENT, /* `connect` sent */
    C_SUB_SENT,     /* `sub` sent */
    C_READY,
    C_CLOSED, /* was ready, then lost */
    C_FAILED, /* never got ready */
};

enum crole { R_SUB = 0, R_PUB = 1 };

enum ckind {
    K_RTGATE_WS = 0, /* rtgate's protocol over WebSocket */
    K_NATS_WS,       /* NATS's protocol inside WebSocket frames */
    K_NATS_TCP,      /* NATS's protocol over TCP (publishers) */
};

struct conn {
    int fd;
    uint8_t state;
    uint8_t role;
    uint8_t attempts;
    uint8_t frag_opcode; /* opcode of the fragmented message being reassembled, 0 = none */
    uint8_t kind;        /* enum ckind */
    bool want_out;       /* EPOLLOUT is registered */
    bool closing;        /* we sent close: a close from the server is the answer */
    bool ack_listed;
    uint32_t index;      /* global subscriber or publisher index */
    uint32_t channel;    /* subscriber: channel index */
    uint32_t local;      /* subscriber: index into the worker's track array; publisher: pubs[] */
    uint64_t started_ns; /* this attempt */
    uint64_t first_started_ns; /* the first attempt: retries stop after --setup-timeout */
    uint64_t retry_at_ns;
    uint8_t *rbuf; /* bytes of an incomplete frame (or response) */
    uint32_t rlen;
    uint32_t flen;
    uint8_t *fbuf; /* fragmented message being reassembled (NATS over WS: an unfinished op) */
    uint8_t *wbuf; /* bytes the socket did not take yet */
    uint32_t wlen;
    uint32_t since_ack;
    uint64_t last_seq; /* durable: highest seq delivered */
    uint64_t acked_seq;
    char key[25]; /* Sec-WebSocket-Key while handshaking */
};

struct inflight {
    int64_t id; /* 0 = free */
    uint32_t channel;
};

struct pub {
    uint32_t conn;
    uint32_t index; /* p */
    uint64_t k;     /* this publisher's next slot */
    uint64_t next_ns;
    int64_t next_id;
    uint64_t backoff_until;
    uint64_t *seq; /* next s per channel */
    struct inflight *ring;
    uint32_t inflight;
    /* NATS core publishing has no replies: a PONG confirms every PUB written before its PING. */
    uint64_t *marks; /* next_id when each outstanding PING was sent, oldest first */
    uint32_t mark_head, mark_len;
    uint64_t confirm_next; /* oldest id not confirmed yet */
    uint64_t last_ping_ns;
    bool unpinged;  /* PUBs written since the last PING */
    char inbox[64]; /* --durable-nats: "_INBOX.<unique>." (+ id: the reply subject) */
};

enum phase {
    PH_SETUP = 0,
    PH_WAIT_START,
    PH_RUN,
    PH_PUB_DRAIN,
    PH_WAIT_EXPECT,
    PH_DRAIN,
    PH_WAIT_FINISH,
    PH_DONE,
};

struct worker {
    const struct lt_config *cfg;
    struct lt_slice slice;
    int ep;
    int up_fd, down_fd;
    enum phase phase;
    uint64_t now;
    uint64_t hard_deadline;
    struct lt_start times;
    uint64_t expected;

    struct conn *conns;
    uint32_t nconns;
    uint32_t nsubs; /* conns[0..nsubs) are subscribers (or idle connections) */
    struct pub *pubs;
    uint32_t npubs;

    /* setup */
    uint32_t next_open;   /* conns opened in order; retries come back through C_RETRY */
    uint32_t handshaking; /* in C_CONNECTING .. C_SUB_SENT */
    uint32_t retrying;
    uint32_t resolved; /* ready or failed */
    uint64_t next_open_ns;
    uint64_t open_interval_ns;
    uint64_t next_housekeep;
    uint64_t next_progress;
    uint64_t next_ack_flush;
    uint64_t coalesce_ns; /* least time between two reads of the sockets */
    uint64_t last_wake;

    struct lt_track *track; /* nsubs x publishers */
    uint64_t *unique;       /* per stream */
    uint64_t *accepted;     /* per stream, this worker's publishers */
    uint32_t ack_every;
    uint32_t *ack_list;
    uint32_t n_ack;

    struct lt_stats st;
    struct lt_hist lat;
    struct lt_hist setup;

    uint8_t *rx;
    size_t rx_cap;
    uint8_t *tx; /* LT_WS_HEADROOM + TX_CAP */
    uint64_t rng;

    char fanout_name[160]; /* fanout: the one channel */
    char chan_prefix[160]; /* channels/idle: "<prefix>.c" */
    size_t chan_prefix_len;
};

static volatile sig_atomic_t got_signal;

static void on_signal(int sig)
{
    (void)sig;
    got_signal = 1;
}

static uint64_t rng_next(struct worker *w)
{
    /* xorshift64*: masking keys and handshake nonces, not secrets */
    uint64_t x = w->rng;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    w->rng = x;
    return x * 0x2545F4914F6CDD1Dull;
}

static void conn_close(struct worker *w, struct conn *c, enum cstate to);
static void conn_fail(struct worker *w, struct conn *c);

/* ------------------------------------------------------------------ */
/* Sending */

static void want_out(struct worker *w, struct conn *c, bool on)
{
    if (c->want_out == on || c->fd < 0)
        return;
    struct epoll_event ev = {.events = EPOLLIN | (on ? EPOLLOUT : 0u),
                             .data.u64 = (uint64_t)(c - w->conns)};
    if (epoll_ctl(w->ep, EPOLL_CTL_MOD, c->fd, &ev) == 0)
        c->want_out = on;
}

/* The connection broke (reset, EOF, write error). */
static void conn_lost(struct worker *w, struct conn *c)
{
    if (c->state == C_READY) {
        if (!c->closing)
            w->st.server_closes++;
        /* A lost publisher spoils the run (its slots are skipped): always say so. */
        if (c->role == R_PUB && !c->closing)
            fprintf(stderr, "rtgate-load: worker %u: publisher %u lost its connection (%s)\n",
                    w->slice.id, c->index, errno ? strerror(errno) : "closed by the server");
        conn_close(w, c, C_CLOSED);
    } else {
        conn_fail(w, c);
    }
}

/* Queues bytes behind what is already waiting, else writes them now. */
static void conn_write(struct worker *w, struct conn *c, const uint8_t *p, size_t len)
{
    if (c->fd < 0)
        return;
    enum lt_wq r = lt_wq_write(c->fd, &c->wbuf, &c->wlen, p, len, UINT32_MAX / 2);
    if (r == LT_WQ_FAILED)
        conn_lost(w, c);
    else if (r == LT_WQ_PENDING)
        want_out(w, c, true);
}

static void conn_flush(struct worker *w, struct conn *c)
{
    enum lt_wq r = lt_wq_flush(c->fd, &c->wbuf, &c->wlen);
    if (r == LT_WQ_FAILED)
        conn_lost(w, c);
    else if (r == LT_WQ_EMPTY)
        want_out(w, c, false);
}

/* Frames the payload sitting at w->tx + LT_WS_HEADROOM and sends it. */
static void send_frame(struct worker *w, struct conn *c, uint8_t opcode, size_t len)
{
    size_t flen;
    uint8_t *f = lt_ws_frame_in_place(w->tx, len, opcode, true, (uint32_t)rng_next(w), &flen);
    conn_write(w, c, f, flen);
}

static struct lt_out tx_out(struct worker *w)
{
    return (struct lt_out){.p = w->tx + LT_WS_HEADROOM, .len = 0, .cap = TX_CAP};
}

static uint8_t data_opcode(const struct worker *w)
{
    return w->cfg->codec == LT_CODEC_JSON ? LT_WS_TEXT : LT_WS_BINARY;
}

static void send_control(struct worker *w, struct conn *c, uint8_t opcode, const uint8_t *payload,
                         size_t len)
{
    memcpy(w->tx + LT_WS_HEADROOM, payload, len);
    send_frame(w, c, opcode, len);
}

/* ------------------------------------------------------------------ */
/* Connection life cycle */

static void free_bufs(struct conn *c)
{
    free(c->rbuf);
    free(c->fbuf);
    free(c->wbuf);
    c->rbuf = c->fbuf = c->wbuf = NULL;
    c->rlen = c->flen = c->wlen = 0;
    c->frag_opcode = 0;
}

static bool in_setup(const struct conn *c)
{
    return c->state >= C_CONNECTING && c->state <= C_SUB_SENT;
}

static void conn_close(struct worker *w, struct conn *c, enum cstate to)
{
    if (in_setup(c))
        w->handshaking--;
    if (c->fd >= 0) {
        close(c->fd); /* also leaves the epoll set */
        c->fd = -1;
    }
    free_bufs(c);
    c->want_out = false;
    c->state = (uint8_t)to;
}

/* A connection that never got ready. */
static void conn_fail(struct worker *w, struct conn *c)
{
    conn_close(w, c, C_FAILED);
    w->resolved++;
}

/* Refused with 429/503 at the handshake: try again later, a bounded number of times. */
static void conn_retry(struct worker *w, struct conn *c, uint32_t after_ms)
{
    conn_close(w, c, C_RETRY);
    uint64_t budget = (uint64_t)(w->cfg->setup_timeout_s * 1e9);
    if (c->attempts >= MAX_ATTEMPTS || w->now - c->first_started_ns > budget) {
        w->st.handshake_failures++;
        c->state = C_FAILED;
        w->resolved++;
        return;
    }
    w->st.handshake_retries++;
    uint64_t backoff =
        (uint64_t)(after_ms ? after_ms : 100u << (c->attempts < 5 ? c->attempts : 5));
    backoff = backoff * LT_NS_PER_MS + rng_next(w) % (50 * LT_NS_PER_MS);
    c->retry_at_ns = w->now + backoff;
    w->retrying++;
}

static void conn_ready(struct worker *w, struct conn *c)
{
    w->handshaking--;
    c->state = C_READY;
    w->resolved++;
    w->st.conns_ready++;
    lt_hist_record(&w->setup, w->now - c->started_ns);
    if (w->now > w->st.setup_last_ns)
        w->st.setup_last_ns = w->now;
}

static void conn_open(struct worker *w, struct conn *c)
{
    const struct lt_config *cfg = w->cfg;
    c->attempts++;
    c->started_ns = w->now;
    if (c->attempts == 1)
        c->first_started_ns = w->now;
    if (w->st.setup_first_ns == 0)
        w->st.setup_first_ns = w->now;
    bool tcp = c->kind == K_NATS_TCP;
    const struct sockaddr_storage *dst = tcp ? &cfg->nats_dst : &cfg->dst;
    socklen_t dst_len = tcp ? cfg->nats_dst_len : cfg->dst_len;
    int fd = socket(dst->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        w->st.connect_errors++;
        c->state = C_FAILED;
        w->resolved++;
        return;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (cfg->n_src && !tcp) {
        uint32_t g = c->role == R_SUB ? c->index : cfg->subs + c->index;
        size_t si = g % cfg->n_src;
        setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
        if (bind(fd, (const struct sockaddr *)&cfg->src[si], cfg->src_len[si]) != 0) {
            if (w->cfg->verbose > 1)
                fprintf(stderr, "rtgate-load: bind %s: %s\n", cfg->src_text[si], strerror(errno));
            close(fd);
            w->st.connect_errors++;
            c->state = C_FAILED;
            w->resolved++;
            return;
        }
    }
    int rc = connect(fd, (const struct sockaddr *)dst, dst_len);
    if (rc != 0 && errno != EINPROGRESS) {
        if (w->cfg->verbose > 1)
            fprintf(stderr, "rtgate-load: connect: %s\n", strerror(errno));
        close(fd);
        w->st.connect_errors++;
        c->state = C_FAILED;
        w->resolved++;
        return;
    }
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.u64 = (uint64_t)(c - w->conns)};
    if (epoll_ctl(w->ep, EPOLL_CTL_ADD, fd, &ev) != 0) {
        close(fd);
        w->st.connect_errors++;
        c->state = C_FAILED;
        w->resolved++;
        return;
    }
    c->fd = fd;
    c->want_out = true;
    c->state = C_CONNECTING;
    w->handshaking++;
}

/* The subprotocol a WebSocket connection offers: none for NATS. */
static const char *subprotocol_of(const struct worker *w, const struct conn *c)
{
    if (c->kind != K_RTGATE_WS)
        return NULL;
    return w->cfg->codec == LT_CODEC_JSON ? LT_SUBPROTOCOL_JSON : LT_SUBPROTOCOL_MSGPACK;
}

/* TCP is up: send the upgrade request (NATS over TCP: wait for INFO). */
static void conn_connected_tcp(struct worker *w, struct conn *c)
{
    int err = 0;
    socklen_t el = sizeof err;
    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el) != 0 || err != 0) {
        if (w->cfg->verbose > 1)
            fprintf(stderr, "rtgate-load: connect: %s\n", strerror(err));
        w->st.connect_errors++;
        conn_fail(w, c);
        return;
    }
    if (c->kind == K_NATS_TCP) { /* the server speaks first */
        c->state = C_WAIT_INFO;
        want_out(w, c, false);
        return;
    }
    uint8_t nonce[16];
    for (int i = 0; i < 16; i += 8) {
        uint64_t r = rng_next(w);
        memcpy(nonce + i, &r, 8);
    }
    lt_base64(nonce, sizeof nonce, c->key, sizeof c->key);
    char req[1024];
    size_t n = lt_ws_request(req, sizeof req, w->cfg->host_header, w->cfg->path, c->key,
                             subprotocol_of(w, c));
    c->state = C_HANDSHAKE;
    want_out(w, c, false);
    conn_write(w, c, (const uint8_t *)req, n);
}

static void channel_of(const struct worker *w, const struct conn *c, char *out, size_t cap)
{
    lt_channel_name(w->cfg, c->channel, out, cap);
}

static void send_connect(struct worker *w, struct conn *c)
{
    struct lt_out o = tx_out(w);
    lt_enc_connect(&o, w->cfg->codec, 1, "rtgate-load");
    c->state = C_CONNECT_SENT;
    send_frame(w, c, data_opcode(w), o.len);
}

static void send_sub(struct worker *w, struct conn *c)
{
    char ch[160];
    channel_of(w, c, ch, sizeof ch);
    struct lt_out o = tx_out(w);
    lt_enc_sub(&o, w->cfg->codec, 2, ch);
    c->state = C_SUB_SENT;
    send_frame(w, c, data_opcode(w), o.len);
}

static void send_ack(struct worker *w, struct conn *c)
{
    if (c->last_seq <= c->acked_seq || c->state != C_READY)
        return;
    char ch[160];
    channel_of(w, c, ch, sizeof ch);
    struct lt_out o = tx_out(w);
    lt_enc_ack(&o, w->cfg->codec, ch, c->last_seq);
    send_frame(w, c, data_opcode(w), o.len);
    c->acked_seq = c->last_seq;
    c->since_ack = 0;
    w->st.acks_sent++;
}

static void flush_acks(struct worker *w)
{
    for (uint32_t i = 0; i < w->n_ack; i++) {
        struct conn *c = &w->conns[w->ack_list[i]];
        c->ack_listed = false;
        send_ack(w, c);
    }
    w->n_ack = 0;
}

/* ------------------------------------------------------------------ */
/* Receiving */

static void count_error_code(struct worker *w, int code)
{
    w->st.error_codes[lt_error_code_index(code)]++;
}

static bool channel_matches(const struct worker *w, const struct conn *c, const char *name,
                            size_t len)
{
    if (w->cfg->scenario == LT_SC_FANOUT)
        return len == strlen(w->fanout_name) && memcmp(name, w->fanout_name, len) == 0;
    size_t pl = w->chan_prefix_len;
    if (len <= pl || memcmp(name, w->chan_prefix, pl) != 0)
        return false;
    uint64_t v = 0;
    for (size_t i = pl; i < len; i++) {
        if (name[i] < '0' || name[i] > '9' || i - pl > 9)
            return false;
        v = v * 10 + (uint64_t)(name[i] - '0');
    }
    return v == c->channel;
}

static void on_delivery(struct worker *w, struct conn *c, const struct lt_smsg *m)
{
    const struct lt_config *cfg = w->cfg;
    if (c->role != R_SUB || !m->has_data || m->p >= cfg->publishers ||
        !channel_matches(w, c, m->channel, m->channel_len)) {
        w->st.foreign_msgs++;
        return;
    }
    w->st.delivered++;
    size_t stream = (size_t)m->p * cfg->channels + c->channel;
    struct lt_track *t = &w->track[(size_t)c->local * cfg->publishers + m->p];
    enum lt_track_result r = lt_track_seen(t, m->s);
    if (r == LT_TR_DUP) {
        w->st.dup++;
    } else {
        if (r == LT_TR_LATE)
            w->st.ooo++;
        w->st.unique++;
        w->unique[stream]++;
        if (m->t >= w->times.t_measure && m->t < w->times.t_end) {
            w->st.delivered_measured++;
            lt_hist_record(&w->lat, w->now > m->t ? w->now - m->t : 0);
        }
    }
    if (m->has_seq) {
        if (m->seq <= c->last_seq)
            w->st.seq_violations++;
        else
            c->last_seq = m->seq;
        if (cfg->ack && ++c->since_ack >= w->ack_every) {
            send_ack(w, c);
        } else if (cfg->ack && !c->ack_listed && w->n_ack < w->nsubs) {
            c->ack_listed = true;
            w->ack_list[w->n_ack++] = (uint32_t)(c - w->conns);
        }
    }
}

static void on_pub_reply(struct worker *w, struct conn *c, const struct lt_smsg *m)
{
    struct pub *p = &w->pubs[c->local];
    struct inflight *f = m->has_id ? &p->ring[(uint64_t)m->id & ((1u << RING_BITS) - 1)] : NULL;
    if (!f || f->id != m->id || m->id == 0) {
        w->st.foreign_msgs++;
        return;
    }
    f->id = 0;
    p->inflight--;
    if (m->ok == 1) {
        w->st.pub_ok++;
        w->accepted[(size_t)p->index * w->cfg->channels + f->channel]++;
        return;
    }
    count_error_code(w, m->error_code);
    if (m->error_code == 429) {
        w->st.rate_limited++;
        uint64_t after = m->retry_after_ms > 0 ? (uint64_t)m->retry_after_ms : 100;
        uint64_t until = w->now + after * LT_NS_PER_MS;
        if (until > p->backoff_until)
            p->backoff_until = until;
    } else {
        w->st.pub_errors++;
    }
}

static void on_message(struct worker *w, struct conn *c, const struct lt_smsg *m)
{
    w->st.msgs_in++;
    switch (m->type) {
    case LT_M_MSG:
        on_delivery(w, c, m);
        return;
    case LT_M_CONNECTED:
        if (c->state != C_CONNECT_SENT) {
            w->st.protocol_errors++;
            return;
        }
        if (m->max_unacked > 0 && !w->cfg->ack_every) { /* ack well before the window fills */
            uint64_t every = (uint64_t)m->max_unacked / 4;
            w->ack_every = (uint32_t)(every ? every : 1);
        }
        if (c->role == R_SUB && (w->cfg->scenario != LT_SC_IDLE || w->cfg->idle_sub))
            send_sub(w, c);
        else
            conn_ready(w, c);
        return;
    case LT_M_REPLY:
        if (c->state == C_READY && c->role == R_PUB) {
            on_pub_reply(w, c, m);
        } else if (c->state == C_SUB_SENT && m->has_id && m->id == 2 && m->ok == 1) {
            conn_ready(w, c);
        } else if (in_setup(c)) {
            if (w->cfg->verbose > 0)
                fprintf(stderr, "rtgate-load: setup refused: id %lld code %d\n", (long long)m->id,
                        m->error_code);
            count_error_code(w, m->error_code);
            w->st.setup_errors++;
            conn_fail(w, c);
        } else {
            w->st.foreign_msgs++;
        }
        return;
    case LT_M_ERROR:
        count_error_code(w, m->error_code);
        if (in_setup(c)) {
            w->st.setup_errors++;
            conn_fail(w, c);
        } else {
            w->st.error_msgs++;
        }
        return;
    case LT_M_DISCONNECT:
        w->st.server_disconnects++;
        return;
    case LT_M_GAP:
        w->st.gap_msgs++;
        if (m->gap_to >= m->gap_from)
            w->st.gap_seqs += m->gap_to - m->gap_from + 1;
        return;
    case LT_M_PONG:
    case LT_M_OTHER:
        return;
    }
}

/* ------------------------------------------------------------------ */
/* NATS (the nats-ws target and the NATS publisher) */

/* Sends the NATS bytes sitting at w->tx + LT_WS_HEADROOM: framed over WebSocket, raw over TCP. */
static void send_nats(struct worker *w, struct conn *c, size_t len)
{
    if (c->kind == K_NATS_WS)
        send_frame(w, c, LT_WS_BINARY, len);
    else
        conn_write(w, c, w->tx + LT_WS_HEADROOM, len);
}

/* Remembers that a PING goes out now: its PONG confirms every PUB before next_id. */
static void mark_ping(struct worker *w, struct pub *p)
{
    p->marks[(p->mark_head + p->mark_len) % NATS_MARKS] = (uint64_t)p->next_id;
    p->mark_len++;
    p->unpinged = false;
    p->last_ping_ns = w->now;
    w->st.nats_pings++;
}

/* A PING for the PUBs not covered by one yet (the end of publishing). */
static void nats_ping_now(struct worker *w, struct pub *p)
{
    struct conn *c = &w->conns[p->conn];
    if (!p->unpinged || p->mark_len >= NATS_MARKS || c->state != C_READY)
        return;
    struct lt_out o = tx_out(w);
    lt_nats_enc_ping(&o);
    mark_ping(w, p);
    send_nats(w, c, o.len);
}

/* A PONG on a NATS publisher: the server has taken every PUB before the oldest PING. */
static void nats_confirm(struct worker *w, struct pub *p)
{
    if (!p->mark_len)
        return;
    uint64_t upto = p->marks[p->mark_head];
    p->mark_head = (p->mark_head + 1) % NATS_MARKS;
    p->mark_len--;
    const uint64_t mask = (1u << RING_BITS) - 1;
    for (uint64_t id = p->confirm_next; id < upto; id++) {
        struct inflight *f = &p->ring[id & mask];
        if (f->id != (int64_t)id)
            continue;
        f->id = 0;
        p->inflight--;
        w->st.pub_ok++;
        w->accepted[(size_t)p->index * w->cfg->channels + f->channel]++;
    }
    if (upto > p->confirm_next)
        p->confirm_next = upto;
}

/* After INFO: CONNECT, the subscription (subscribers; durable publishers: their inbox), PING. */
static void nats_hello(struct worker *w, struct conn *c)
{
    const struct lt_config *cfg = w->cfg;
    struct lt_out o = tx_out(w);
    char subj[LT_NATS_SUBJECT_MAX + 8];
    bool sub = false;
    lt_nats_enc_connect(&o);
    if (c->role == R_SUB && (cfg->scenario != LT_SC_IDLE || cfg->idle_sub)) {
        lt_nats_subject(cfg, c->channel, subj, sizeof subj);
        lt_nats_enc_sub(&o, subj, 1);
        sub = true;
    } else if (c->role == R_PUB && cfg->durable_nats) {
        snprintf(subj, sizeof subj, "%s*", w->pubs[c->local].inbox);
        lt_nats_enc_sub(&o, subj, 1);
    }
    lt_nats_enc_ping(&o);
    c->state = sub ? C_SUB_SENT : C_CONNECT_SENT;
    send_nats(w, c, o.len);
}

/* A JetStream publish acknowledgement on a publisher's inbox. */
static void on_js_ack(struct worker *w, struct conn *c, const struct lt_nmsg *n)
{
    struct pub *p = &w->pubs[c->local];
    size_t il = strlen(p->inbox);
    uint64_t id = 0;
    bool ok =
        n->subject_len > il && n->subject_len - il <= 19 && memcmp(n->subject, p->inbox, il) == 0;
    for (size_t i = il; ok && i < n->subject_len; i++) {
        if (n->subject[i] < '0' || n->subject[i] > '9')
            ok = false;
        else
            id = id * 10 + (uint64_t)(n->subject[i] - '0');
    }
    if (!ok) {
        w->st.foreign_msgs++;
        return;
    }
    struct lt_smsg m;
    size_t pos = 0;
    if (lt_scan_json(n->payload, n->payload_len, &pos, &m) != LT_OK) {
        memset(&m, 0, sizeof m);
        m.retry_after_ms = -1;
    }
    m.type = LT_M_REPLY;
    m.has_id = true;
    m.id = (int64_t)id;
    m.ok = m.error_code == 0 && m.has_seq ? 1 : 0; /* {"stream":..,"seq":N} */
    if (m.ok != 1 && m.error_code == 0)
        m.error_code = 500;
    on_pub_reply(w, c, &m);
}

/* A MSG: a delivery to a subscriber, or a JetStream ack to a durable publisher. */
static void on_nats_msg(struct worker *w, struct conn *c, const struct lt_nmsg *n)
{
    if (c->role == R_PUB) {
        on_js_ack(w, c, n);
        return;
    }
    if (c->state != C_READY) {
        w->st.foreign_msgs++;
        return;
    }
    const char *pre = lt_nats_prefix(w->cfg);
    size_t pl = strlen(pre);
    struct lt_smsg m;
    if (n->subject_len <= pl || memcmp(n->subject, pre, pl) != 0 ||
        lt_scan_data_json(n->payload, n->payload_len, &m) != LT_OK) {
        w->st.foreign_msgs++;
        return;
    }
    m.channel = n->subject + pl;
    m.channel_len = n->subject_len - pl;
    on_delivery(w, c, &m);
}

static void on_nats_op(struct worker *w, struct conn *c, const struct lt_nmsg *n)
{
    switch (n->op) {
    case LT_N_MSG:
        on_nats_msg(w, c, n);
        return;
    case LT_N_INFO:
        if (c->state == C_WAIT_INFO)
            nats_hello(w, c);
        return;
    case LT_N_PING: {
        struct lt_out o = tx_out(w);
        lt_nats_enc_pong(&o);
        send_nats(w, c, o.len);
        return;
    }
    case LT_N_PONG:
        if (c->state == C_CONNECT_SENT || c->state == C_SUB_SENT)
            conn_ready(w, c);
        else if (c->state == C_READY && c->role == R_PUB)
            nats_confirm(w, &w->pubs[c->local]);
        return;
    case LT_N_OK:
        return;
    case LT_N_ERR:
        w->st.nats_errs++;
        if (w->cfg->verbose > 0)
            fprintf(stderr, "rtgate-load: NATS -ERR %.*s\n", (int)n->payload_len,
                    (const char *)n->payload);
        if (in_setup(c)) {
            w->st.setup_errors++;
            conn_fail(w, c);
        } else {
            w->st.error_msgs++;
        }
        return;
    }
}

/*
 * Runs the NATS operations in buf[0..len). Returns the bytes used (the rest
 * is an operation still incomplete), or -1 when the connection was closed.
 */
static long nats_ops(struct worker *w, struct conn *c, const uint8_t *buf, size_t len)
{
    size_t pos = 0;
    int fd = c->fd;
    for (;;) {
        struct lt_nmsg m;
        lt_status st = lt_nats_scan(buf, len, &pos, &m);
        if (st == LT_AGAIN)
            return (long)pos;
        if (st != LT_OK) {
            if (w->cfg->verbose > 0)
                fprintf(stderr, "rtgate-load: unreadable NATS protocol: %.*s\n",
                        (int)(len - pos > 200 ? 200 : len - pos), (const char *)buf + pos);
            w->st.protocol_errors++;
            errno = EPROTO;
            conn_lost(w, c);
            return -1;
        }
        w->st.msgs_in++;
        on_nats_op(w, c, &m);
        if (c->fd != fd)
            return -1;
    }
}

/*
 * The payload of one NATS-over-WebSocket frame: a piece of the server's byte
 * stream. What an earlier frame left unfinished waits in fbuf. False when the
 * connection was closed.
 */
static bool nats_ws_chunk(struct worker *w, struct conn *c, const uint8_t *p, size_t len)
{
    if (c->flen) {
        if (!lt_ws_buf_append(&c->fbuf, &c->flen, p, len))
            goto proto_error;
        /* Detach: the operations may close the connection, which frees its buffers. */
        uint8_t *b = c->fbuf;
        size_t bl = c->flen;
        c->fbuf = NULL;
        c->flen = 0;
        long used = nats_ops(w, c, b, bl);
        if (used >= 0 && (size_t)used < bl) {
            memmove(b, b + used, bl - (size_t)used);
            c->fbuf = b;
            c->flen = (uint32_t)(bl - (size_t)used);
        } else {
            free(b);
        }
        return used >= 0;
    }
    long used = nats_ops(w, c, p, len);
    if (used < 0)
        return false;
    if ((size_t)used < len && !lt_ws_buf_append(&c->fbuf, &c->flen, p + used, len - (size_t)used))
        goto proto_error;
    return true;
proto_error:
    w->st.protocol_errors++;
    errno = EPROTO;
    conn_lost(w, c);
    return false;
}

/* One complete data message (possibly several protocol messages). */
static void on_payload(struct worker *w, struct conn *c, const uint8_t *p, size_t len)
{
    size_t pos = 0;
    int fd = c->fd;
    for (;;) {
        struct lt_smsg m;
        lt_status st = w->cfg->codec == LT_CODEC_JSON ? lt_scan_json(p, len, &pos, &m)
                                                      : lt_scan_msgpack(p, len, &pos, &m);
        if (st == LT_AGAIN)
            return;
        if (st != LT_OK) {
            if (w->cfg->verbose > 0)
                fprintf(stderr, "rtgate-load: unreadable message: %.*s\n",
                        (int)(len - pos > 200 ? 200 : len - pos), (const char *)p + pos);
            w->st.protocol_errors++;
            return;
        }
        on_message(w, c, &m);
        if (c->fd != fd) /* closed by the message */
            return;
    }
}

static void on_close_frame(struct worker *w, struct conn *c, const struct lt_ws_frame *f)
{
    if (!c->closing) {
        if (w->cfg->verbose > 0)
            fprintf(stderr, "rtgate-load: server closed a connection: code %d\n",
                    f->payload_len >= 2 ? f->payload[0] << 8 | f->payload[1] : 0);
        uint8_t echo[2] = {0x03, 0xE8}; /* 1000 */
        if (f->payload_len >= 2) {
            echo[0] = f->payload[0];
            echo[1] = f->payload[1];
        }
        c->closing = true;
        send_control(w, c, LT_WS_CLOSE, echo, 2);
        if (c->state == C_READY)
            w->st.server_closes++;
    }
    if (c->state == C_READY)
        conn_close(w, c, C_CLOSED);
    else
        conn_fail(w, c);
}

/* Handles one frame; false when the connection was closed. */
static bool on_frame(struct worker *w, struct conn *c, const struct lt_ws_frame *f)
{
    int fd = c->fd;
    w->st.frames_in++;
    switch (f->opcode) {
    case LT_WS_TEXT:
    case LT_WS_BINARY:
    case LT_WS_CONT: {
        if (c->kind == K_NATS_WS) { /* a stream of operations: frame bounds do not matter */
            bool cont = f->opcode == LT_WS_CONT;
            if (cont != (c->frag_opcode != 0))
                goto proto_error;
            c->frag_opcode = f->fin ? 0 : cont ? c->frag_opcode : f->opcode;
            if (!nats_ws_chunk(w, c, f->payload, f->payload_len))
                return false;
            break;
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
            on_payload(w, c, msg, mlen);
            free(owned);
        }
        break;
    }
    case LT_WS_PING:
        send_control(w, c, LT_WS_PONG, f->payload, f->payload_len);
        break;
    case LT_WS_PONG:
        break;
    case LT_WS_CLOSE:
        on_close_frame(w, c, f);
        return false;
    default:
        goto proto_error;
    }
    return c->fd == fd;
proto_error:
    w->st.protocol_errors++;
    errno = EPROTO;
    conn_lost(w, c);
    return false;
}

/* The upgrade response is in buf[0..len): returns bytes consumed, 0 to wait, -1 when closed. */
static long on_handshake_bytes(struct worker *w, struct conn *c, const uint8_t *buf, size_t len)
{
    struct lt_ws_response r;
    lt_status st = lt_ws_parse_response((const char *)buf, len, c->key, subprotocol_of(w, c), &r);
    if (st == LT_AGAIN)
        return 0;
    if (st != LT_OK) {
        if (r.status == 429 || r.status == 503) {
            conn_retry(w, c, r.retry_after_s * 1000u);
        } else {
            if (w->cfg->verbose > 0)
                fprintf(stderr, "rtgate-load: handshake refused (HTTP %d)\n", r.status);
            w->st.handshake_failures++;
            conn_fail(w, c);
        }
        return -1;
    }
    if (c->kind == K_NATS_WS) {
        c->state = C_WAIT_INFO;
        return (long)r.header_len;
    }
    send_connect(w, c);
    return c->fd < 0 ? -1 : (long)r.header_len;
}

static void conn_readable(struct worker *w, struct conn *c)
{
    size_t have = c->rlen;
    if (have + RX_CHUNK > w->rx_cap) {
        size_t ncap = w->rx_cap * 2;
        while (ncap < have + RX_CHUNK)
            ncap *= 2;
        uint8_t *nb = realloc(w->rx, ncap);
        if (!nb) {
            conn_lost(w, c);
            return;
        }
        w->rx = nb;
        w->rx_cap = ncap;
    }
    if (have) {
        memcpy(w->rx, c->rbuf, have);
        free(c->rbuf);
        c->rbuf = NULL;
        c->rlen = 0;
    }
    ssize_t n = recv(c->fd, w->rx + have, w->rx_cap - have, MSG_DONTWAIT);
    if (n <= 0) {
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
            n = 0; /* put the leftover back below */
        } else {
            if (n == 0)
                errno = 0; /* EOF */
            conn_lost(w, c);
            return;
        }
    }
    w->st.bytes_in += (uint64_t)n;
    size_t len = have + (size_t)n;
    size_t off = 0;
    if (c->kind == K_NATS_TCP) {
        long used = nats_ops(w, c, w->rx, len);
        if (used < 0)
            return;
        off = (size_t)used;
        goto stash;
    }
    if (c->state == C_HANDSHAKE) {
        long used = on_handshake_bytes(w, c, w->rx, len);
        if (used < 0)
            return;
        off = (size_t)used;
        if (used == 0) {
            off = 0;
            goto stash;
        }
    }
    while (off < len) {
        struct lt_ws_frame f;
        lt_status st = lt_ws_parse_frame(w->rx + off, len - off, &f);
        if (st == LT_AGAIN)
            break;
        if (st != LT_OK) {
            w->st.protocol_errors++;
            errno = EPROTO;
            conn_lost(w, c);
            return;
        }
        off += f.frame_len;
        if (!on_frame(w, c, &f))
            return;
    }
stash:
    if (off < len) {
        c->rbuf = malloc(len - off);
        if (!c->rbuf) {
            conn_lost(w, c);
            return;
        }
        memcpy(c->rbuf, w->rx + off, len - off);
        c->rlen = (uint32_t)(len - off);
    }
}

static void on_conn_event(struct worker *w, struct conn *c, uint32_t events)
{
    if (c->fd < 0)
        return;
    if (c->state == C_CONNECTING) {
        if (events & (EPOLLOUT | EPOLLERR | EPOLLHUP))
            conn_connected_tcp(w, c);
        return;
    }
    if (events & (EPOLLIN | EPOLLERR | EPOLLHUP))
        conn_readable(w, c);
    if (c->fd >= 0 && (events & EPOLLOUT))
        conn_flush(w, c);
}

/* ------------------------------------------------------------------ */
/* Publishing */

static uint64_t slot_time(const struct worker *w, const struct pub *p)
{
    double j = (double)(p->k * w->cfg->publishers + p->index);
    return w->times.t0 + (uint64_t)(j * 1e9 / w->cfg->rate);
}

/* Fills every slot of publisher p that is due, batched into frames below 48 KB. */
static void publish_due(struct worker *w, struct pub *p)
{
    const struct lt_config *cfg = w->cfg;
    struct conn *c = &w->conns[p->conn];
    struct lt_out o = tx_out(w);
    const uint32_t ring_size = 1u << RING_BITS;
    char ch[160];
    while (p->next_ns <= w->now && p->next_ns < w->times.t_end) {
        uint64_t j = p->k * cfg->publishers + p->index;
        uint32_t channel = (uint32_t)(j % cfg->channels);
        if (c->state != C_READY || c->wlen > cfg->max_backlog || p->inflight >= ring_size - 1) {
            w->st.skipped_stalled++;
        } else if (p->next_ns < p->backoff_until) {
            w->st.skipped_backoff++;
        } else {
            /* A frame stays under PUB_FRAME_BYTES (the server caps message sizes). */
            if (o.len && o.len + cfg->payload + 256 > PUB_FRAME_BYTES) {
                send_frame(w, c, data_opcode(w), o.len);
                o = tx_out(w);
            }
            int64_t id = p->next_id++;
            struct inflight *f = &p->ring[(uint64_t)id & (ring_size - 1)];
            if (f->id != 0) { /* the oldest slot's reply never came: give up on it */
                w->st.pub_no_reply++;
                p->inflight--;
            }
            f->id = id;
            f->channel = channel;
            p->inflight++;
            lt_channel_name(cfg, channel, ch, sizeof ch);
            lt_enc_pub(&o, cfg->codec, id, ch, p->seq[channel]++, p->index, p->next_ns,
                       cfg->payload);
            w->st.published++;
            if (w->now - p->next_ns > w->st.pub_lag_max_ns)
                w->st.pub_lag_max_ns = w->now - p->next_ns;
        }
        p->k++;
        p->next_ns = slot_time(w, p);
    }
    if (o.len)
        send_frame(w, c, data_opcode(w), o.len);
}

/*
 * The same for a NATS publisher: PUB rtgate.eph.<channel> with the JSON data
 * (or a JetStream publish to rtgate.dur.<channel> with a reply inbox). Core
 * NATS has no replies, so a PING every NATS_PING_NS (and after the last
 * slot) confirms the PUBs before it when its PONG comes back.
 */
static void publish_due_nats(struct worker *w, struct pub *p)
{
    const struct lt_config *cfg = w->cfg;
    struct conn *c = &w->conns[p->conn];
    struct lt_out o = tx_out(w);
    const uint32_t ring_size = 1u << RING_BITS;
    char subj[LT_NATS_SUBJECT_MAX], reply[sizeof p->inbox + 24];
    while (p->next_ns <= w->now && p->next_ns < w->times.t_end) {
        uint64_t j = p->k * cfg->publishers + p->index;
        uint32_t channel = (uint32_t)(j % cfg->channels);
        if (c->state != C_READY || c->wlen > cfg->max_backlog || p->inflight >= ring_size - 1) {
            w->st.skipped_stalled++;
        } else {
            if (o.len && o.len + cfg->payload + 512 > PUB_FRAME_BYTES) {
                send_nats(w, c, o.len);
                o = tx_out(w);
            }
            int64_t id = p->next_id++;
            struct inflight *f = &p->ring[(uint64_t)id & (ring_size - 1)];
            if (f->id != 0) { /* the oldest's ack never came: give up on it */
                w->st.pub_no_reply++;
                p->inflight--;
            }
            f->id = id;
            f->channel = channel;
            p->inflight++;
            lt_nats_subject(cfg, channel, subj, sizeof subj);
            if (cfg->durable_nats)
                snprintf(reply, sizeof reply, "%s%lld", p->inbox, (long long)id);
            lt_nats_enc_pub(&o, subj, cfg->durable_nats ? reply : NULL, p->seq[channel]++, p->index,
                            p->next_ns, cfg->payload);
            p->unpinged = !cfg->durable_nats;
            w->st.published++;
            if (w->now - p->next_ns > w->st.pub_lag_max_ns)
                w->st.pub_lag_max_ns = w->now - p->next_ns;
        }
        p->k++;
        p->next_ns = slot_time(w, p);
    }
    if (p->unpinged && p->mark_len < NATS_MARKS && c->state == C_READY &&
        (w->now - p->last_ping_ns >= NATS_PING_NS || p->next_ns >= w->times.t_end)) {
        lt_nats_enc_ping(&o);
        mark_ping(w, p);
    }
    if (o.len)
        send_nats(w, c, o.len);
}

static uint64_t pubs_inflight(const struct worker *w)
{
    uint64_t n = 0;
    for (uint32_t i = 0; i < w->npubs; i++)
        if (w->conns[w->pubs[i].conn].state == C_READY)
            n += w->pubs[i].inflight;
    return n;
}

static void pubs_give_up(struct worker *w)
{
    for (uint32_t i = 0; i < w->npubs; i++) {
        w->st.pub_no_reply += w->pubs[i].inflight;
        w->pubs[i].inflight = 0;
    }
}

/* ------------------------------------------------------------------ */
/* Setup, timers, phases */

static void open_due(struct worker *w)
{
    while (w->next_open < w->nconns && w->now >= w->next_open_ns &&
           w->handshaking < w->cfg->max_handshaking) {
        conn_open(w, &w->conns[w->next_open++]);
        w->next_open_ns += w->open_interval_ns;
        if (w->next_open_ns < w->now - 100 * LT_NS_PER_MS) /* do not burst to catch up */
            w->next_open_ns = w->now - 100 * LT_NS_PER_MS;
    }
}

static void housekeep(struct worker *w)
{
    uint64_t tmo = (uint64_t)(w->cfg->setup_timeout_s * 1e9);
    if (w->handshaking || w->retrying) {
        for (uint32_t i = 0; i < w->nconns; i++) {
            struct conn *c = &w->conns[i];
            if (in_setup(c) && w->now - c->started_ns > tmo) {
                w->st.setup_timeouts++;
                w->st.setup_errors++;
                conn_fail(w, c);
            } else if (c->state == C_RETRY && w->now >= c->retry_at_ns &&
                       w->handshaking < w->cfg->max_handshaking) {
                w->retrying--;
                conn_open(w, c);
            }
        }
    }
    if (w->now >= w->next_ack_flush) {
        flush_acks(w);
        w->next_ack_flush = w->now + (uint64_t)w->cfg->ack_delay_ms * LT_NS_PER_MS;
    }
    if (w->cfg->verbose > 0 && w->phase == PH_SETUP && w->now >= w->next_progress) {
        fprintf(stderr, "rtgate-load: worker %u: %u/%u ready, %u resolved, %u handshaking\n",
                w->slice.id, (unsigned)w->st.conns_ready, w->nconns, w->resolved, w->handshaking);
        w->next_progress = w->now + LT_NS_PER_S;
    }
}

static uint64_t own_cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (uint64_t)ts.tv_sec * LT_NS_PER_S + (uint64_t)ts.tv_nsec;
}

static void send_result(struct worker *w)
{
    w->st.cpu_ns_total = own_cpu_ns();
    size_t ns = lt_nstreams(w->cfg);
    size_t len = sizeof w->st + 2 * sizeof(struct lt_hist) + ns * sizeof(uint64_t);
    uint8_t *body = malloc(len);
    if (!body)
        return;
    uint8_t *q = body;
    memcpy(q, &w->st, sizeof w->st);
    q += sizeof w->st;
    memcpy(q, &w->lat, sizeof w->lat);
    q += sizeof w->lat;
    memcpy(q, &w->setup, sizeof w->setup);
    q += sizeof w->setup;
    memcpy(q, w->unique, ns * sizeof(uint64_t));
    lt_pipe_send(w->up_fd, LT_P_RESULT, body, len);
    free(body);
}

/* Reads one parent message (they are small and written atomically). */
static bool read_full(int fd, void *p, size_t len)
{
    uint8_t *b = p;
    while (len) {
        ssize_t n = read(fd, b, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return false;
        b += n;
        len -= (size_t)n;
    }
    return true;
}

/* Deliveries this worker should see: what was accepted on each ready subscriber's channel. */
static void take_expected(struct worker *w, const uint64_t *accepted_per_channel)
{
    w->expected = 0;
    for (uint32_t i = 0; i < w->nconns; i++) {
        const struct conn *c = &w->conns[i];
        if (c->role == R_SUB && (c->state == C_READY || c->state == C_CLOSED))
            w->expected += accepted_per_channel[c->channel];
    }
}

/* Reads one parent message; the worker waits for its body (the parent writes it whole). */
static bool read_parent(struct worker *w)
{
    struct lt_pipe_hdr h;
    if (!read_full(w->down_fd, &h, sizeof h) || h.len > (64u << 20))
        return false;
    uint8_t *body = h.len ? malloc((size_t)h.len) : NULL;
    if (h.len && (!body || !read_full(w->down_fd, body, (size_t)h.len))) {
        free(body);
        return false;
    }
    bool ok = true;
    switch (h.type) {
    case LT_P_START:
        if (h.len != sizeof w->times) {
            ok = false;
            break;
        }
        memcpy(&w->times, body, sizeof w->times);
        if (w->phase == PH_WAIT_START) {
            w->phase = PH_RUN;
            for (uint32_t i = 0; i < w->npubs; i++)
                w->pubs[i].next_ns = slot_time(w, &w->pubs[i]);
        }
        break;
    case LT_P_EXPECT:
        if (h.len != (uint64_t)w->cfg->channels * sizeof(uint64_t)) {
            ok = false;
            break;
        }
        take_expected(w, (const uint64_t *)(const void *)body);
        if (w->phase == PH_WAIT_EXPECT)
            w->phase = PH_DRAIN;
        break;
    case LT_P_FINISH:
        w->phase = PH_DONE;
        break;
    case LT_P_ABORT:
        if (w->phase < PH_WAIT_EXPECT) {
            pubs_give_up(w);
            lt_pipe_send(w->up_fd, LT_P_PUBDONE, w->accepted,
                         lt_nstreams(w->cfg) * sizeof(uint64_t));
        }
        if (w->phase < PH_WAIT_FINISH) {
            flush_acks(w);
            send_result(w);
        }
        w->phase = PH_DONE;
        break;
    default:
        ok = false;
        break;
    }
    free(body);
    return ok;
}

/* READY carries the counters and how many subscribers got ready on each channel. */
static void send_ready(struct worker *w)
{
    uint32_t *ready_on = calloc(w->cfg->channels, sizeof *ready_on);
    if (ready_on)
        for (uint32_t i = 0; i < w->nconns; i++)
            if (w->conns[i].role == R_SUB && w->conns[i].state == C_READY)
                ready_on[w->conns[i].channel]++;
    w->st.cpu_ns_setup = own_cpu_ns();
    if (ready_on)
        lt_pipe_send2(w->up_fd, LT_P_READY, &w->st, sizeof w->st, ready_on,
                      (size_t)w->cfg->channels * sizeof *ready_on);
    else
        lt_pipe_send(w->up_fd, LT_P_READY, &w->st, sizeof w->st); /* the parent counts it failed */
    free(ready_on);
}

static void advance_phase(struct worker *w)
{
    switch (w->phase) {
    case PH_SETUP:
        if (w->resolved >= w->nconns) {
            send_ready(w);
            w->phase = PH_WAIT_START;
        }
        break;
    case PH_RUN:
        if (w->now >= w->times.t_end)
            w->phase = PH_PUB_DRAIN;
        else
            break;
        /* fall through */
    case PH_PUB_DRAIN:
        for (uint32_t i = 0; i < w->npubs; i++)
            nats_ping_now(w, &w->pubs[i]); /* PUBs a PING does not cover yet */
        if (pubs_inflight(w) == 0 || w->now >= w->times.t_drain) {
            pubs_give_up(w);
            lt_pipe_send(w->up_fd, LT_P_PUBDONE, w->accepted,
                         lt_nstreams(w->cfg) * sizeof(uint64_t));
            w->phase = PH_WAIT_EXPECT;
        }
        break;
    case PH_DRAIN:
        if (w->st.unique >= w->expected || w->now >= w->times.t_drain) {
            if (w->st.unique < w->expected)
                w->st.drain_timeouts++;
            flush_acks(w);
            send_result(w);
            w->phase = PH_WAIT_FINISH;
        }
        break;
    case PH_WAIT_START:
    case PH_WAIT_EXPECT:
    case PH_WAIT_FINISH:
    case PH_DONE:
        break;
    }
}

/* The next time something is due, bounded to HOUSEKEEP_NS from now. */
static uint64_t next_wakeup(const struct worker *w)
{
    uint64_t t = w->next_housekeep;
    /* At the handshake limit the next open waits for a connection to finish (an event). */
    if (w->phase == PH_SETUP && w->next_open < w->nconns &&
        w->handshaking < w->cfg->max_handshaking && w->next_open_ns < t)
        t = w->next_open_ns;
    if (w->phase == PH_RUN) {
        for (uint32_t i = 0; i < w->npubs; i++)
            if (w->pubs[i].next_ns < t)
                t = w->pubs[i].next_ns;
        if (w->times.t_end < t)
            t = w->times.t_end;
    }
    return t;
}

static void close_all(struct worker *w)
{
    static const uint8_t normal[2] = {0x03, 0xE8};
    for (uint32_t i = 0; i < w->nconns; i++) {
        struct conn *c = &w->conns[i];
        if (c->fd >= 0 && c->state == C_READY && c->wlen == 0 && c->kind != K_NATS_TCP) {
            c->closing = true;
            send_control(w, c, LT_WS_CLOSE, normal, sizeof normal);
        }
        if (c->fd >= 0)
            conn_close(w, c, C_CLOSED);
    }
}

static int worker_loop(struct worker *w)
{
    struct epoll_event evs[512];
    bool have_pwait2 = true;
    while (w->phase != PH_DONE) {
        w->now = lt_now_ns();
        if (got_signal || w->now >= w->hard_deadline)
            break;
        uint64_t until = next_wakeup(w);
        if (w->coalesce_ns && w->now - w->last_wake < w->coalesce_ns) {
            /* Let more bytes pile up per socket before reading (--rx-coalesce-us). */
            uint64_t nap_until = w->last_wake + w->coalesce_ns;
            if (nap_until > until)
                nap_until = until;
            if (nap_until > w->now) {
                uint64_t nap = nap_until - w->now;
                struct timespec ts = {.tv_sec = (time_t)(nap / LT_NS_PER_S),
                                      .tv_nsec = (long)(nap % LT_NS_PER_S)};
                nanosleep(&ts, NULL);
                w->now = lt_now_ns();
            }
        }
        w->last_wake = w->now;
        uint64_t wait_ns = until > w->now ? until - w->now : 0;
        int n;
        if (have_pwait2) {
            struct timespec ts = {.tv_sec = (time_t)(wait_ns / LT_NS_PER_S),
                                  .tv_nsec = (long)(wait_ns % LT_NS_PER_S)};
            n = epoll_pwait2(w->ep, evs, 512, &ts, NULL);
            if (n < 0 && errno == ENOSYS) {
                have_pwait2 = false;
                continue;
            }
        } else {
            n = epoll_wait(w->ep, evs, 512, (int)((wait_ns + LT_NS_PER_MS - 1) / LT_NS_PER_MS));
        }
        if (n < 0 && errno != EINTR)
            return 1;
        w->now = lt_now_ns();
        for (int i = 0; i < n; i++) {
            if (evs[i].data.u64 == PIPE_TAG) {
                if (!read_parent(w))
                    return 1; /* the parent is gone */
                continue;
            }
            on_conn_event(w, &w->conns[evs[i].data.u64], evs[i].events);
        }
        w->now = lt_now_ns();
        if (w->phase == PH_SETUP)
            open_due(w);
        if (w->phase == PH_RUN)
            for (uint32_t i = 0; i < w->npubs; i++) {
                if (w->conns[w->pubs[i].conn].kind == K_NATS_TCP)
                    publish_due_nats(w, &w->pubs[i]);
                else
                    publish_due(w, &w->pubs[i]);
            }
        if (w->now >= w->next_housekeep) {
            housekeep(w);
            w->next_housekeep = w->now + HOUSEKEEP_NS;
        }
        advance_phase(w);
    }
    return 0;
}

/* ------------------------------------------------------------------ */
/* Set-up and tear-down of the worker */

static void worker_free(struct worker *w)
{
    if (w->conns)
        for (uint32_t i = 0; i < w->nconns; i++)
            if (w->conns[i].fd >= 0 || w->conns[i].rbuf || w->conns[i].wbuf || w->conns[i].fbuf)
                conn_close(w, &w->conns[i], C_CLOSED);
    for (uint32_t i = 0; w->pubs && i < w->npubs; i++) {
        free(w->pubs[i].seq);
        free(w->pubs[i].ring);
        free(w->pubs[i].marks);
    }
    free(w->pubs);
    free(w->conns);
    free(w->track);
    free(w->unique);
    free(w->accepted);
    free(w->ack_list);
    free(w->rx);
    free(w->tx);
    if (w->ep >= 0)
        close(w->ep);
}

static bool worker_init(struct worker *w, const struct lt_config *cfg, const struct lt_slice *s)
{
    memset(w, 0, sizeof *w);
    w->ep = -1;
    w->cfg = cfg;
    w->slice = *s;
    w->nsubs = s->sub_hi - s->sub_lo;
    for (uint32_t p = 0; p < cfg->publishers; p++)
        if (p % s->nworkers == s->id)
            w->npubs++;
    w->nconns = w->nsubs + w->npubs;
    size_t ns = lt_nstreams(cfg);
    w->conns = calloc(w->nconns ? w->nconns : 1, sizeof *w->conns);
    w->pubs = calloc(w->npubs ? w->npubs : 1, sizeof *w->pubs);
    w->track = calloc(w->nsubs ? (size_t)w->nsubs * (cfg->publishers ? cfg->publishers : 1) : 1,
                      sizeof *w->track);
    w->unique = calloc(ns ? ns : 1, sizeof *w->unique);
    w->accepted = calloc(ns ? ns : 1, sizeof *w->accepted);
    w->ack_list = calloc(w->nsubs ? w->nsubs : 1, sizeof *w->ack_list);
    w->rx_cap = 4 * RX_CHUNK;
    w->rx = malloc(w->rx_cap);
    w->tx = malloc(LT_WS_HEADROOM + TX_CAP);
    w->ep = epoll_create1(EPOLL_CLOEXEC);
    if (!w->conns || !w->pubs || !w->track || !w->unique || !w->accepted || !w->ack_list ||
        !w->rx || !w->tx || w->ep < 0)
        return false;
    /* Publishers first: they are few and must be there when publishing starts. */
    uint32_t ci = 0;
    for (uint32_t p = 0, k = 0; p < cfg->publishers; p++) {
        if (p % s->nworkers != s->id)
            continue;
        struct pub *pb = &w->pubs[k];
        pb->index = p;
        pb->conn = ci;
        pb->next_id = 1;
        pb->seq = calloc(cfg->channels, sizeof *pb->seq);
        pb->ring = calloc(1u << RING_BITS, sizeof *pb->ring);
        pb->marks = calloc(NATS_MARKS, sizeof *pb->marks);
        pb->confirm_next = 1;
        if (!pb->seq || !pb->ring || !pb->marks)
            return false;
        struct conn *c = &w->conns[ci++];
        c->fd = -1;
        c->role = R_PUB;
        c->kind = cfg->pub_via == LT_PV_NATS ? K_NATS_TCP : K_RTGATE_WS;
        c->index = p;
        c->local = k++;
    }
    for (uint32_t i = 0; i < w->nsubs; i++) {
        struct conn *c = &w->conns[ci++];
        c->fd = -1;
        c->role = R_SUB;
        c->kind = cfg->target == LT_TGT_NATS_WS ? K_NATS_WS : K_RTGATE_WS;
        c->index = s->sub_lo + i;
        c->channel = c->index % cfg->channels;
        c->local = i;
    }
    w->st.conns_planned = w->nconns;
    lt_hist_init(&w->lat);
    lt_hist_init(&w->setup);
    lt_channel_name(cfg, 0, w->fanout_name, sizeof w->fanout_name);
    snprintf(w->chan_prefix, sizeof w->chan_prefix, "%s.c", cfg->channel_prefix);
    w->chan_prefix_len = strlen(w->chan_prefix);
    double per_worker = cfg->connect_rate / (double)s->nworkers;
    w->open_interval_ns = per_worker > 0 ? (uint64_t)(1e9 / per_worker) : 0;
    w->ack_every = cfg->ack_every ? cfg->ack_every : 256; /* or max_unacked / 4 when told */
    w->coalesce_ns = (uint64_t)cfg->rx_coalesce_us * 1000u;
    w->rng = lt_now_ns() ^ ((uint64_t)getpid() << 32) ^ 0x9E3779B97F4A7C15ull;
    if (w->rng == 0)
        w->rng = 1;
    for (uint32_t k = 0; k < w->npubs; k++) /* unique per run and publisher */
        snprintf(w->pubs[k].inbox, sizeof w->pubs[k].inbox, "_INBOX.rtload%08x.%u.",
                 (unsigned)(rng_next(w) & 0xFFFFFFFFu), w->pubs[k].index);
    return true;
}

int lt_worker_main(const struct lt_config *cfg, const struct lt_slice *slice, int up_fd,
                   int down_fd, uint64_t hard_deadline_ns)
{
    struct worker *w = malloc(sizeof *w);
    if (!w)
        return 1;
    signal(SIGPIPE, SIG_IGN);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGINT, SIG_IGN); /* Ctrl-C reaches the parent, which asks for results first */
    int rc = 1;
    if (!worker_init(w, cfg, slice)) {
        fprintf(stderr, "rtgate-load: worker %u: out of memory\n", slice->id);
        goto out;
    }
    w->up_fd = up_fd;
    w->down_fd = down_fd;
    w->hard_deadline = hard_deadline_ns;
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = PIPE_TAG};
    if (epoll_ctl(w->ep, EPOLL_CTL_ADD, down_fd, &ev) != 0)
        goto out;
    w->now = lt_now_ns();
    w->next_open_ns = w->now;
    w->next_housekeep = w->now + HOUSEKEEP_NS;
    rc = worker_loop(w);
    close_all(w);
out:
    worker_free(w);
    free(w);
    return rc;
}
