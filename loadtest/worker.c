/*
 * worker.c: one driver of the connection engine (net.h) that owns a slice
 * of the connections (some subscribers, some publishers) for the whole run.
 * Runs in a forked child; the parent drives the phases over the pipes:
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
 * Connections go to one of three endpoints: rtgate's protocol over WebSocket
 * (the default), NATS's protocol over nats-server's WebSocket listener
 * (--target nats-ws) and NATS over plain TCP (publishers with --publish-via
 * nats). The engine carries the bytes; this file says what they mean:
 * greetings, deliveries and their sequence tracking, acks, publishing.
 */
#include "net.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define TX_CAP          (256 * 1024)
#define PUB_FRAME_BYTES (48 * 1024) /* a publisher's batched frame stays below this */
#define RING_BITS       14          /* pub replies outstanding per publisher */
#define PIPE_TAG        1u          /* lt_net_watch tag of the parent's pipe */
#define HOUSEKEEP_NS    (20 * LT_NS_PER_MS)
#define NATS_PING_NS    (10 * LT_NS_PER_MS) /* a NATS publisher confirms its PUBs this often */
#define NATS_MARKS      1024u               /* PINGs outstanding per NATS publisher */

/* The engine's endpoints (struct lt_net_params.endpoints). */
enum { EP_RTGATE = 0, EP_NATS_WS, EP_NATS_TCP, N_ENDPOINTS };

/* Where a connection's greeting is while the engine says HELLO (lt_conn.hello_step). */
enum hello_step {
    STEP_NONE = 0,
    STEP_WAIT_INFO,    /* NATS: waiting for the server's INFO */
    STEP_CONNECT_SENT, /* `connect` sent (NATS: CONNECT + PING, no SUB) */
    STEP_SUB_SENT,     /* `sub` sent (NATS: CONNECT + SUB + PING) */
};

enum crole { R_SUB = 0, R_PUB = 1 };

struct conn {
    struct lt_conn link; /* the engine's part: first */
    uint8_t role;
    bool ever_ready; /* got ready once: its channel's deliveries are expected */
    bool ack_listed;
    uint32_t index;   /* global subscriber or publisher index */
    uint32_t channel; /* subscriber: channel index */
    uint32_t local;   /* subscriber: index into the worker's track array; publisher: pubs[] */
    uint32_t since_ack;
    uint64_t last_seq; /* durable: highest seq delivered */
    uint64_t acked_seq;
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
    struct lt_net net; /* its `now` is the worker's clock */
    int up_fd, down_fd;
    enum phase phase;
    uint64_t hard_deadline;
    struct lt_start times;
    uint64_t expected;

    struct conn *conns;
    uint32_t nconns;
    uint32_t nsubs; /* conns[0..nsubs) are subscribers (or idle connections) */
    struct pub *pubs;
    uint32_t npubs;

    /* setup */
    uint32_t next_open; /* conns opened in order; the engine retries refused ones */
    uint32_t resolved;  /* ready or failed */
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

    struct lt_stats st;          /* the engine's counters join it in take_net_counts */
    struct lt_net_counts counts; /* the engine's */
    uint64_t setup_refused;      /* `connect` or `sub` answered with an error, NATS -ERR */
    struct lt_hist lat;
    struct lt_hist setup;

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

static struct conn *conn_of(struct lt_conn *link)
{
    return (struct conn *)(void *)link; /* the link is the first member */
}

static bool is_ready(const struct conn *c)
{
    return c->link.state == LT_CONN_READY;
}

static bool at_step(const struct conn *c, enum hello_step step)
{
    return c->link.state == LT_CONN_HELLO && c->link.hello_step == step;
}

static bool in_setup(const struct conn *c)
{
    return lt_net_in_setup(&c->link);
}

/* ------------------------------------------------------------------ */
/* Sending (the payload is encoded at lt_net_tx's buffer) */

static struct lt_out tx_out(struct worker *w)
{
    return lt_net_tx(&w->net);
}

static void send_tx(struct worker *w, struct conn *c, size_t len)
{
    lt_net_send(&w->net, &c->link, len);
}

/* The driver's greeting got its answer. */
static void conn_ready(struct worker *w, struct conn *c)
{
    lt_net_ready(&w->net, &c->link);
    c->ever_ready = true;
    w->resolved++;
    if (w->net.now > w->st.setup_last_ns)
        w->st.setup_last_ns = w->net.now;
}

/* The greeting was refused: the connection never gets ready. */
static void setup_refused(struct worker *w, struct conn *c)
{
    w->setup_refused++;
    lt_net_abort(&w->net, &c->link, 0);
}

static void channel_of(const struct worker *w, const struct conn *c, char *out, size_t cap)
{
    lt_channel_name(w->cfg, c->channel, out, cap);
}

static void send_connect(struct worker *w, struct conn *c)
{
    struct lt_out o = tx_out(w);
    lt_enc_hello(&o, w->cfg, c->index);
    c->link.hello_step = STEP_CONNECT_SENT;
    send_tx(w, c, o.len);
}

static void send_sub(struct worker *w, struct conn *c)
{
    char ch[160];
    channel_of(w, c, ch, sizeof ch);
    struct lt_out o = tx_out(w);
    lt_enc_sub(&o, w->cfg->codec, 2, ch, w->cfg->presence);
    c->link.hello_step = STEP_SUB_SENT;
    send_tx(w, c, o.len);
}

static void send_ack(struct worker *w, struct conn *c)
{
    if (c->last_seq <= c->acked_seq || !is_ready(c))
        return;
    char ch[160];
    channel_of(w, c, ch, sizeof ch);
    struct lt_out o = tx_out(w);
    lt_enc_ack(&o, w->cfg->codec, ch, c->last_seq);
    send_tx(w, c, o.len);
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
            lt_hist_record(&w->lat, w->net.now > m->t ? w->net.now - m->t : 0);
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
        uint64_t until = w->net.now + after * LT_NS_PER_MS;
        if (until > p->backoff_until)
            p->backoff_until = until;
    } else {
        w->st.pub_errors++;
    }
}

static void on_message(struct worker *w, struct conn *c, const struct lt_smsg *m)
{
    switch (m->type) {
    case LT_M_MSG:
        on_delivery(w, c, m);
        return;
    case LT_M_CONNECTED:
        if (!at_step(c, STEP_CONNECT_SENT)) {
            w->counts.protocol_errors++;
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
        if (is_ready(c) && c->role == R_PUB) {
            on_pub_reply(w, c, m);
        } else if (at_step(c, STEP_SUB_SENT) && m->has_id && m->id == 2 && m->ok == 1) {
            conn_ready(w, c);
        } else if (in_setup(c)) {
            if (w->cfg->verbose > 0)
                fprintf(stderr, "rtgate-load: setup refused: id %lld code %d\n", (long long)m->id,
                        m->error_code);
            count_error_code(w, m->error_code);
            setup_refused(w, c);
        } else {
            w->st.foreign_msgs++;
        }
        return;
    case LT_M_ERROR:
        count_error_code(w, m->error_code);
        if (in_setup(c)) {
            setup_refused(w, c);
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

/* Remembers that a PING goes out now: its PONG confirms every PUB before next_id. */
static void mark_ping(struct worker *w, struct pub *p)
{
    p->marks[(p->mark_head + p->mark_len) % NATS_MARKS] = (uint64_t)p->next_id;
    p->mark_len++;
    p->unpinged = false;
    p->last_ping_ns = w->net.now;
    w->st.nats_pings++;
}

/* A PING for the PUBs not covered by one yet (the end of publishing). */
static void nats_ping_now(struct worker *w, struct pub *p)
{
    struct conn *c = &w->conns[p->conn];
    if (!p->unpinged || p->mark_len >= NATS_MARKS || !is_ready(c))
        return;
    struct lt_out o = tx_out(w);
    lt_nats_enc_ping(&o);
    mark_ping(w, p);
    send_tx(w, c, o.len);
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
    c->link.hello_step = sub ? STEP_SUB_SENT : STEP_CONNECT_SENT;
    send_tx(w, c, o.len);
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
    if (!is_ready(c)) {
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
        if (at_step(c, STEP_WAIT_INFO))
            nats_hello(w, c);
        return;
    case LT_N_PING: {
        struct lt_out o = tx_out(w);
        lt_nats_enc_pong(&o);
        send_tx(w, c, o.len);
        return;
    }
    case LT_N_PONG:
        if (at_step(c, STEP_CONNECT_SENT) || at_step(c, STEP_SUB_SENT))
            conn_ready(w, c);
        else if (is_ready(c) && c->role == R_PUB)
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
            setup_refused(w, c);
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
    uint32_t gen = c->link.gen;
    for (;;) {
        struct lt_nmsg m;
        lt_status st = lt_nats_scan(buf, len, &pos, &m);
        if (st == LT_AGAIN)
            return (long)pos;
        if (st != LT_OK) {
            if (w->cfg->verbose > 0)
                fprintf(stderr, "rtgate-load: unreadable NATS protocol: %.*s\n",
                        (int)(len - pos > 200 ? 200 : len - pos), (const char *)buf + pos);
            w->counts.protocol_errors++;
            lt_net_abort(&w->net, &c->link, EPROTO);
            return -1;
        }
        w->counts.msgs_in++;
        on_nats_op(w, c, &m);
        if (c->link.gen != gen) /* closed by the operation */
            return -1;
    }
}

/*
 * The payload of one NATS-over-WebSocket frame: a piece of the server's byte
 * stream. What an earlier frame left unfinished waits in fbuf. False when the
 * connection was closed.
 */

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
    while (p->next_ns <= w->net.now && p->next_ns < w->times.t_end) {
        uint64_t j = p->k * cfg->publishers + p->index;
        uint32_t channel = (uint32_t)(j % cfg->channels);
        if (!is_ready(c) || c->link.wlen > cfg->max_backlog || p->inflight >= ring_size - 1) {
            w->st.skipped_stalled++;
        } else if (p->next_ns < p->backoff_until) {
            w->st.skipped_backoff++;
        } else {
            /* A frame stays under PUB_FRAME_BYTES (the server caps message sizes). */
            if (o.len && o.len + cfg->payload + 256 > PUB_FRAME_BYTES) {
                send_tx(w, c, o.len);
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
            if (w->net.now - p->next_ns > w->st.pub_lag_max_ns)
                w->st.pub_lag_max_ns = w->net.now - p->next_ns;
        }
        p->k++;
        p->next_ns = slot_time(w, p);
    }
    if (o.len)
        send_tx(w, c, o.len);
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
    while (p->next_ns <= w->net.now && p->next_ns < w->times.t_end) {
        uint64_t j = p->k * cfg->publishers + p->index;
        uint32_t channel = (uint32_t)(j % cfg->channels);
        if (!is_ready(c) || c->link.wlen > cfg->max_backlog || p->inflight >= ring_size - 1) {
            w->st.skipped_stalled++;
        } else {
            if (o.len && o.len + cfg->payload + 512 > PUB_FRAME_BYTES) {
                send_tx(w, c, o.len);
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
            if (w->net.now - p->next_ns > w->st.pub_lag_max_ns)
                w->st.pub_lag_max_ns = w->net.now - p->next_ns;
        }
        p->k++;
        p->next_ns = slot_time(w, p);
    }
    if (p->unpinged && p->mark_len < NATS_MARKS && is_ready(c) &&
        (w->net.now - p->last_ping_ns >= NATS_PING_NS || p->next_ns >= w->times.t_end)) {
        lt_nats_enc_ping(&o);
        mark_ping(w, p);
    }
    if (o.len)
        send_tx(w, c, o.len);
}

static uint64_t pubs_inflight(const struct worker *w)
{
    uint64_t n = 0;
    for (uint32_t i = 0; i < w->npubs; i++)
        if (is_ready(&w->conns[w->pubs[i].conn]))
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
    while (w->next_open < w->nconns && w->net.now >= w->next_open_ns &&
           w->net.setting_up < w->cfg->max_handshaking) {
        if (w->st.setup_first_ns == 0)
            w->st.setup_first_ns = w->net.now;
        lt_net_open(&w->net, &w->conns[w->next_open++].link);
        w->next_open_ns += w->open_interval_ns;
        if (w->next_open_ns < w->net.now - 100 * LT_NS_PER_MS) /* do not burst to catch up */
            w->next_open_ns = w->net.now - 100 * LT_NS_PER_MS;
    }
}

/* Acks due by time, and the progress line (set-up timeouts and retries are the engine's). */
static void housekeep(struct worker *w)
{
    if (w->net.now >= w->next_ack_flush) {
        flush_acks(w);
        w->next_ack_flush = w->net.now + (uint64_t)w->cfg->ack_delay_ms * LT_NS_PER_MS;
    }
    if (w->cfg->verbose > 0 && w->phase == PH_SETUP && w->net.now >= w->next_progress) {
        fprintf(stderr, "rtgate-load: worker %u: %u/%u ready, %u resolved, %u handshaking\n",
                w->slice.id, (unsigned)w->counts.ready, w->nconns, w->resolved, w->net.setting_up);
        w->next_progress = w->net.now + LT_NS_PER_S;
    }
}

static uint64_t own_cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (uint64_t)ts.tv_sec * LT_NS_PER_S + (uint64_t)ts.tv_nsec;
}

/* The engine's counters into the ones sent to the parent (READY and RESULT). */
static void take_net_counts(struct worker *w)
{
    const struct lt_net_counts *n = &w->counts;
    w->st.conns_ready = n->ready;
    w->st.connect_errors = n->connect_errors;
    w->st.handshake_failures = n->handshake_failures;
    w->st.handshake_retries = n->handshake_retries;
    w->st.setup_errors = w->setup_refused + n->setup_timeouts;
    w->st.setup_timeouts = n->setup_timeouts;
    w->st.server_closes = n->server_closes;
    w->st.protocol_errors = n->protocol_errors;
    w->st.frames_in = n->frames_in;
    w->st.msgs_in = n->msgs_in;
    w->st.bytes_in = n->bytes_in;
}

static void send_result(struct worker *w)
{
    take_net_counts(w);
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
        if (c->role == R_SUB && c->ever_ready)
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
            if (w->conns[i].role == R_SUB && is_ready(&w->conns[i]))
                ready_on[w->conns[i].channel]++;
    take_net_counts(w);
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
        if (w->net.now >= w->times.t_end)
            w->phase = PH_PUB_DRAIN;
        else
            break;
        /* fall through */
    case PH_PUB_DRAIN:
        for (uint32_t i = 0; i < w->npubs; i++)
            nats_ping_now(w, &w->pubs[i]); /* PUBs a PING does not cover yet */
        if (pubs_inflight(w) == 0 || w->net.now >= w->times.t_drain) {
            pubs_give_up(w);
            lt_pipe_send(w->up_fd, LT_P_PUBDONE, w->accepted,
                         lt_nstreams(w->cfg) * sizeof(uint64_t));
            w->phase = PH_WAIT_EXPECT;
        }
        break;
    case PH_DRAIN:
        if (w->st.unique >= w->expected || w->net.now >= w->times.t_drain) {
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
        w->net.setting_up < w->cfg->max_handshaking && w->next_open_ns < t)
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
    for (uint32_t i = 0; i < w->nconns; i++)
        if (w->conns[i].link.fd >= 0)
            lt_net_close(&w->net, &w->conns[i].link);
}

static int worker_loop(struct worker *w)
{
    while (w->phase != PH_DONE) {
        w->net.now = lt_now_ns();
        if (got_signal || w->net.now >= w->hard_deadline)
            break;
        uint64_t until = next_wakeup(w);
        if (w->coalesce_ns && w->net.now - w->last_wake < w->coalesce_ns) {
            /* Let more bytes pile up per socket before reading (--rx-coalesce-us). */
            uint64_t nap_until = w->last_wake + w->coalesce_ns;
            if (nap_until > until)
                nap_until = until;
            if (nap_until > w->net.now) {
                uint64_t nap = nap_until - w->net.now;
                struct timespec ts = {.tv_sec = (time_t)(nap / LT_NS_PER_S),
                                      .tv_nsec = (long)(nap % LT_NS_PER_S)};
                nanosleep(&ts, NULL);
                w->net.now = lt_now_ns();
            }
        }
        w->last_wake = w->net.now;
        if (!lt_net_poll(&w->net, until))
            return 1; /* epoll failed, or the parent is gone */
        if (w->phase == PH_SETUP)
            open_due(w);
        if (w->phase == PH_RUN)
            for (uint32_t i = 0; i < w->npubs; i++) {
                if (w->conns[w->pubs[i].conn].link.endpoint == EP_NATS_TCP)
                    publish_due_nats(w, &w->pubs[i]);
                else
                    publish_due(w, &w->pubs[i]);
            }
        if (w->net.now >= w->next_housekeep) {
            housekeep(w);
            w->next_housekeep = w->net.now + HOUSEKEEP_NS;
        }
        advance_phase(w);
    }
    return 0;
}

/* ------------------------------------------------------------------ */
/* What the engine tells the worker */

static void net_on_up(struct lt_net *net, struct lt_conn *link)
{
    struct worker *w = net->p.owner;
    struct conn *c = conn_of(link);
    if (link->endpoint == EP_RTGATE)
        send_connect(w, c);
    else
        link->hello_step = STEP_WAIT_INFO; /* NATS: the server speaks first */
}

static void net_on_msg(struct lt_net *net, struct lt_conn *link, const struct lt_smsg *m,
                       const uint8_t *raw, size_t raw_len)
{
    (void)raw;
    (void)raw_len;
    on_message(net->p.owner, conn_of(link), m);
}

static long net_on_stream(struct lt_net *net, struct lt_conn *link, const uint8_t *p, size_t len)
{
    return nats_ops(net->p.owner, conn_of(link), p, len);
}

static void net_on_down(struct lt_net *net, struct lt_conn *link, enum lt_down why, int err)
{
    struct worker *w = net->p.owner;
    struct conn *c = conn_of(link);
    if (why == LT_DOWN_FAILED) {
        w->resolved++;
        return;
    }
    /* A lost publisher spoils the run (its slots are skipped): always say so. */
    if (c->role == R_PUB)
        fprintf(stderr, "rtgate-load: worker %u: publisher %u lost its connection (%s)\n",
                w->slice.id, c->index, err ? strerror(err) : "closed by the server");
}

static bool net_on_fd(struct lt_net *net, uint32_t tag)
{
    return tag == PIPE_TAG && read_parent(net->p.owner);
}

/* ------------------------------------------------------------------ */
/* Set-up and tear-down of the worker */

static void worker_free(struct worker *w)
{
    if (w->conns)
        lt_net_free(&w->net);
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
}

/* The engine over the worker's connections and its three endpoints. */
static bool net_init(struct worker *w)
{
    const struct lt_config *cfg = w->cfg;
    bool json = cfg->codec == LT_CODEC_JSON;
    struct lt_net_params np = {
        .cfg = cfg,
        .endpoints =
            {
                [EP_RTGATE] = {.framing = LT_FRAMING_RTGATE,
                               .dst = &cfg->dst,
                               .dst_len = cfg->dst_len,
                               .host_header = cfg->host_header,
                               .path = cfg->path,
                               .subprotocol = json ? LT_SUBPROTOCOL_JSON : LT_SUBPROTOCOL_MSGPACK,
                               .data_opcode = json ? LT_WS_TEXT : LT_WS_BINARY,
                               .bind_source = true,
                               .tls = cfg->tls,
                               .server_name = cfg->host},
                [EP_NATS_WS] = {.framing = LT_FRAMING_WS_STREAM,
                                .dst = &cfg->dst,
                                .dst_len = cfg->dst_len,
                                .host_header = cfg->host_header,
                                .path = cfg->path,
                                .data_opcode = LT_WS_BINARY,
                                .bind_source = true,
                                .tls = cfg->tls,
                                .server_name = cfg->host},
                [EP_NATS_TCP] = {.framing = LT_FRAMING_TCP_STREAM,
                                 .dst = &cfg->nats_dst,
                                 .dst_len = cfg->nats_dst_len,
                                 .max_pending = LT_NATS_MAX_PAYLOAD + LT_NATS_MAX_LINE},
            },
        .n_endpoints = N_ENDPOINTS,
        .conns = w->conns,
        .stride = sizeof *w->conns,
        .nconns = w->nconns,
        .ops = {.on_up = net_on_up,
                .on_msg = net_on_msg,
                .on_stream = net_on_stream,
                .on_down = net_on_down,
                .on_fd = net_on_fd},
        .owner = w,
        .counts = &w->counts,
        .setup = &w->setup,
        .tx_cap = TX_CAP,
        .max_queued = UINT32_MAX / 2,
        .retry_refused = true,
        .housekeep_ns = HOUSEKEEP_NS,
    };
    return lt_net_init(&w->net, &np);
}

static bool worker_init(struct worker *w, const struct lt_config *cfg, const struct lt_slice *s)
{
    memset(w, 0, sizeof *w);
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
    if (!w->conns || !w->pubs || !w->track || !w->unique || !w->accepted || !w->ack_list ||
        !net_init(w))
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
        c->role = R_PUB;
        c->index = p;
        c->local = k++;
        lt_net_place(&w->net, &c->link, cfg->pub_via == LT_PV_NATS ? EP_NATS_TCP : EP_RTGATE,
                     cfg->subs + p);
    }
    for (uint32_t i = 0; i < w->nsubs; i++) {
        struct conn *c = &w->conns[ci++];
        c->role = R_SUB;
        c->index = s->sub_lo + i;
        c->channel = c->index % cfg->channels;
        c->local = i;
        lt_net_place(&w->net, &c->link, cfg->target == LT_TGT_NATS_WS ? EP_NATS_WS : EP_RTGATE,
                     c->index);
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
    for (uint32_t k = 0; k < w->npubs; k++) /* unique per run and publisher */
        snprintf(w->pubs[k].inbox, sizeof w->pubs[k].inbox, "_INBOX.rtload%08x.%u.",
                 (unsigned)(lt_net_rand(&w->net) & 0xFFFFFFFFu), w->pubs[k].index);
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
    if (!lt_net_watch(&w->net, down_fd, PIPE_TAG))
        goto out;
    w->net.now = lt_now_ns();
    w->next_open_ns = w->net.now;
    w->next_housekeep = w->net.now + HOUSEKEEP_NS;
    rc = worker_loop(w);
    close_all(w);
out:
    worker_free(w);
    free(w);
    return rc;
}
