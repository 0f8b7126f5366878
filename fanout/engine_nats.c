/*
 * engine_nats.c: the "nats" engine, a fleet of gateways sharing channels
 * through NATS (docs/nats.md has the subject layout, headers and design).
 *
 *   - Ephemeral channel X: core NATS subject rtgate.eph.X. The node holds a
 *     subscription while X has local subscribers; its own publishes come back
 *     through it (echo), so every node dispatches the same way.
 *   - Durable channel X: JetStream stream (RTGATE) subject rtgate.dur.X. The
 *     stream republishes every stored message on rtgate.live.X with the
 *     headers Nats-Sequence and Nats-Last-Sequence (the previous seq of the
 *     same subject). The chain of Last-Sequence values shows a missed
 *     message, which is then read back with DirectGet (NextBySubject), so
 *     dispatch per channel stays exact.
 *   - The live subjects of all channels are read by the loop reader
 *     (nats_live.c) on the gateway's loop; nats.c's connection carries
 *     JetStream (publishes, reads), the ephemeral msg_id claims and the bus.
 *   - Nothing on the loop waits for NATS. A first subscriber is answered once
 *     the reader's SUB is confirmed (lr_confirm) and, for a durable channel,
 *     its sync point read (an asynchronous DirectGet on an inbox); a resume
 *     once the channel's oldest retained seq is known (fo__sub_ready).
 *   - History reads for catch-up go through a small per-channel cache (the
 *     tail of recent messages and the last batch read back) and, on a miss,
 *     a worker thread doing DirectGets (fetch answers RT_AGAIN, the result
 *     re-pumps the channel's paused subscriptions).
 *
 * Threads. nats.c runs subscription callbacks, publish acks and connection
 * events on its own threads; this file's workers run blocking JetStream
 * requests. None of them touch the registry: they hand over through `lock`
 * (lists of finished publishes, jobs, request replies and bus messages) and
 * call fo_config.wake once per batch; fo_service then runs nats_service on
 * the loop thread. Fields marked {lock} belong to the lock, {jobs_lock} to
 * the worker queue, everything else to the loop thread.
 */
#include "fanout_int.h"
#include "nats_live.h"

#include <jansson.h>
#include <nats/nats.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define PREFIX_EPH  "rtgate.eph."
#define PREFIX_DUR  "rtgate.dur."
#define PREFIX_LIVE "rtgate.live."
#define KV_BUCKET   "rtgate_dedup"
#define KV_PREFIX   "$KV." KV_BUCKET "."

#define H_CHANNEL  "Rtgate-Channel"
#define H_USER     "Rtgate-User"
#define H_CLIENT   "Rtgate-Client"
#define H_ENCODING "Rtgate-Encoding"
#define H_MSG_ID   "Rtgate-Msg-Id"
#define H_TS       "Rtgate-Ts"
#define H_NATS_ID  "Nats-Msg-Id"
#define H_SEQ      "Nats-Sequence"
#define H_LAST_SEQ "Nats-Last-Sequence"
#define H_TIME     "Nats-Time-Stamp"

#define TAIL_MAX            256u   /* recent messages cached per durable channel with interest */
#define FETCH_BATCH         64u    /* messages per history read */
#define FILL_BATCH          512u   /* messages per hole fill */
#define HELD_MAX            8192u  /* live messages held per channel while a hole is filled */
#define INFLIGHT_MAX        16384u /* client publishes waiting for JetStream */
#define N_WORKERS           2
#define REQ_WAIT_MS         2000        /* JetStream requests, on a worker or from the loop */
#define PUB_WAIT_MS         5000        /* JetStream publish acknowledgement */
#define RETRY_MS            500u        /* failed reads and probes are retried after this */
#define STREAM_RETRY_MAX_MS 10000u      /* the stream check backs off up to this */
#define PROBES_MAX          256u        /* probes waiting for JetStream at once */
#define SENDS_MAX           65536u      /* calls queued for the sender thread */
#define QUIET_MS            2000u       /* a durable channel quiet this long is probed once */
#define QUIET_RATE          100u        /* quiet probes a second at most (and burst) */
#define BUS_MAX_BYTES       (64u << 20) /* bus messages waiting for the loop; beyond: lost, resync */
#define SUBJECT_MAX         (sizeof(KV_PREFIX) + PROTO_CHANNEL_MAX + 1 + 2 * PROTO_MSG_ID_MAX + 8)

/* -------------------------------------------------------------------- */
/* Types                                                                  */

/* One message of a durable channel's chain; msg is NULL for one dropped as invalid. */
struct nent {
    uint64_t seq;
    uint64_t prev; /* held entries: Nats-Last-Sequence */
    struct fo_msg *msg;
};

struct nring {
    struct nent *v;
    uint32_t head, len, cap;
};

/*
 * What a client publish waits for: JetStream's acknowledgement of a durable
 * message (DURABLE) or of an ephemeral msg_id's claim (CLAIM), or the
 * sender thread's core publish of an ephemeral message (CORE).
 */
enum npub_stage { PUB_DURABLE, PUB_CLAIM, PUB_CORE };

/* A client publish waiting for NATS. */
struct npub {
    struct fo_hnode node; /* in inflight (DURABLE, CLAIM), key = the bytes of `key` */
    natsMsg *key;         /* the message handed to js_PublishMsgAsync */
    struct npub *next;    /* pubs_done */
    enum npub_stage stage;
    natsMsg *eph; /* CLAIM: the message to publish once the id is new */
    uint64_t conn_id;
    int64_t req_id;
    natsStatus status; /* {lock} results */
    int err_code;
    uint64_t seq;
    bool dup;
};

enum nsend_kind { SEND_CORE, SEND_JS, SEND_RAW, SEND_SUB, SEND_UNSUB };

/* A call into nats.c for the sender thread (see "The sender thread"). */
struct nsend {
    struct nsend *next;
    enum nsend_kind kind;
    bool embedded;               /* part of a bus subscription: not freed on its own */
    natsMsg *msg;                /* CORE, JS (taken) */
    struct npub *pub;            /* CORE, JS: answered through pubs_done */
    struct nbus_sub *bus;        /* SUB, UNSUB */
    const char *subject, *reply; /* RAW: a plain publish (reply may be NULL) */
    const uint8_t *data;
    size_t len;
};

/* A bus subscription (fo_bus_subscribe's handle); made and ended by the sender. */
struct nbus_sub {
    struct nsend sub_cmd, unsub_cmd; /* queued at subscribe / unsubscribe */
    natsSubscription *sub;           /* the sender thread's */
    char subject[];
};

/* A bus message for the loop (fo_bus_*): subject, reply and data in one block. */
struct nbus {
    struct nbus *next;
    const char *subject, *reply; /* into data's block; reply may be NULL */
    size_t len;
    uint8_t data[];
};

enum njob_kind { JOB_FETCH, JOB_FILL, JOB_STREAM };

/* Blocking JetStream work for a worker thread; the result comes back whole. */
struct njob {
    struct njob *next;
    enum njob_kind kind;
    uint64_t gen;   /* the channel's generation: a stale result is dropped */
    uint64_t after; /* FETCH, FILL: read the channel's messages after this seq */
    uint64_t until; /* FETCH: stop at a seq >= until; FILL: the last seq wanted */
    rt_status st;
    uint64_t gap_to;  /* FETCH: `after` was gone: seqs after+1..gap_to are lost */
    int64_t created;  /* STREAM: the stream's creation time (ns) */
    char why[160];    /* STREAM: what failed */
    bool reached_end; /* FETCH, FILL: no message after the last one */
    struct nent *v;
    uint32_t n;
    size_t name_len;
    char name[]; /* the channel */
};

/*
 * What a JetStream read sent from the loop is for; the reply comes back on
 * the engine's inbox (nats_service).
 */
enum nreq_kind {
    REQ_SYNC,          /* a first subscriber's sync point: the channel's latest seq */
    REQ_PROBE,         /* the channel's latest seq: anything missed? */
    REQ_RESUME_LATEST, /* a resume past what this node has seen: the channel's latest */
    REQ_RESUME_OLDEST, /* a resume: the channel's oldest retained seq */
};

/* A JetStream read waiting for its reply on the inbox (loop thread). */
struct nreq {
    struct fo_hnode node;       /* in reqs, key = the bytes of id */
    struct nreq *older, *newer; /* by deadline */
    uint64_t id;                /* the last token of the reply subject */
    uint64_t deadline_ms;       /* rt_mono_ms */
    enum nreq_kind kind;
    bool stream_info; /* asking the stream's last seq (the channel had nothing) */
    uint64_t gen;     /* the channel's generation when sent */
    uint64_t op;      /* RESUME_*: the registry's waiting subscribe */
    uint64_t since;   /* RESUME_*: its since */
    size_t name_len;
    char name[]; /* the channel */
};

/* A reply on the inbox, handed to the loop. */
struct nreply {
    struct nreply *next;
    natsMsg *msg;
};

/* A subscribe waiting for its channel to be ready (nats_sub_prepare). */
struct nwait {
    uint64_t op;
    bool has_since;
    uint64_t since;
};

/*
 * How far a channel with interest is from taking subscribers: its SUB on
 * the loop reader is not confirmed (NONE: not asked yet or failed), is
 * being confirmed, (durable) its sync point is being read, or READY.
 */
enum nready { NR_NONE, NR_CONFIRMING, NR_SYNCING, NR_READY };

/* Which of the engine's confirmation lists a channel is on. */
enum nconfirm_list { NCL_NONE, NCL_QUEUE, NCL_BATCH };

/* Engine state of one channel (fo_chan.eng). */
struct nchan {
    struct fo_chan *ch;
    uint64_t lsid;             /* the loop reader's subscription to the live subject; 0: none */
    struct nchan *prev, *next; /* engine's list of channels with a subscription */
    uint64_t gen;              /* changes when interest goes */
    enum nready ready;
    enum nconfirm_list on_list;
    struct nchan *cprev, *cnext; /* on that list */
    struct nwait *waiting;       /* subscribes waiting for READY */
    uint32_t n_waiting, cap_waiting;
    /* Durable only. */
    uint64_t dispatched;   /* highest seq handed to fo__dispatch, or the sync point */
    uint64_t latest_known; /* >= dispatched: latest stored seq seen by a probe */
    uint64_t trimmed_through;
    uint64_t fill_target; /* read back through this seq, then go on with held */
    struct nring tail;    /* chain of the newest dispatched messages */
    uint64_t tail_lo;     /* the seq before tail's first entry */
    struct njob *replay;  /* the last history batch read back */
    struct nring held;    /* live messages waiting behind a hole */
    bool fill_busy, fetch_busy, probe_busy, probe_wanted, fetch_failed;
    uint64_t retry_at;  /* rt_mono_ms */
    uint64_t last_live; /* rt_mono_ms of the last live message */
    bool quiet_probed;  /* probed since then */
};

struct neng {
    struct fo *fo;
    char *url, *stream;
    uint32_t replicas;
    natsOptions *opts;
    natsConnection *nc;
    struct lr *lr; /* the loop reader of every channel's live subject (nats_live.h) */
    jsCtx *js;
    char epoch[PROTO_EPOCH_MAX + 1];
    int64_t created;
    bool stream_ok, stream_busy;
    atomic_bool up;      /* nats.c's connection is connected (its callbacks set it) */
    bool js_down_logged; /* the stream check failed, said once until it works */
    uint64_t stream_retry_at, stream_backoff_ms;
    uint64_t next_gen;
    uint64_t seen_reconnects, seen_disconnects;
    bool connected_once;       /* "nats_connected" was logged: the next ones are reconnects */
    struct nchan *with_sub[2]; /* channels with a subscription: [0] ephemeral, [1] durable */
    uint64_t drop_every, live_drop_count; /* test hook RTGATE_NATS_DROP_EVERY (reader) */
    double quiet_tokens;                  /* quiet probes allowed now (QUIET_RATE bucket) */
    uint64_t quiet_refill_ms;
    uint32_t probes_out; /* REQ_PROBE waiting for JetStream */
    /* Confirming the reader's SUBs: one PING in flight (lr_confirm) for
     * batch; channels subscribed since wait on queue for the next one. */
    struct nchan *confirm_queue, *confirm_batch;
    bool confirm_busy;
    struct {
        struct nchan *nc;
        uint64_t gen;
    } * confirmed; /* on_confirmed's copy of batch */
    uint32_t cap_confirmed;
    /* JetStream reads sent from the loop (struct nreq), answered on inbox. */
    char *inbox; /* "_INBOX.<nuid>"; replies come on inbox.<id> */
    natsSubscription *inbox_sub;
    struct rt_htab reqs;
    struct nreq *reqs_oldest, *reqs_newest;
    uint64_t next_req;

    pthread_mutex_t lock;
    struct rt_htab inflight;                 /* {lock} npub by natsMsg pointer */
    struct npub *pubs_done, *pubs_done_tail; /* {lock} */
    struct njob *jobs_done, *jobs_done_tail; /* {lock} */
    struct nreply *replies, *replies_tail;   /* {lock} */
    bool wake_pending;                       /* {lock} */
    uint64_t reconnects;                     /* {lock} connected / reconnected events */
    uint64_t disconnects;                    /* {lock} */
    uint64_t invalid;                        /* {lock} */
    struct nbus *bus_head, *bus_tail;        /* {lock} bus messages for the loop */
    size_t bus_bytes;                        /* {lock} */
    uint64_t bus_lost; /* {lock} times bus messages were lost: part of the generation */
    char server[256];  /* {lock} the server connected to, without user information */

    pthread_mutex_t send_lock;
    pthread_cond_t send_cond;
    struct nsend *sends, *sends_tail; /* {send_lock} calls for the sender thread */
    uint32_t n_sends;                 /* {send_lock} */
    bool send_stop;                   /* {send_lock} */
    pthread_t sender;
    bool sender_started;

    pthread_mutex_t jobs_lock;
    pthread_cond_t jobs_cond;
    struct njob *jobs, *jobs_tail; /* {jobs_lock} */
    bool stopping;
    pthread_t workers[N_WORKERS];
    int n_workers;
};

/* Has a subscription to its live subject on the loop reader. */
static bool subscribed(const struct nchan *nc)
{
    return nc->lsid != 0;
}

/* Durable: the chain's position is known (dispatched), subscribers may come. */
static bool synced(const struct nchan *nc)
{
    return nc->ready == NR_READY;
}

/* -------------------------------------------------------------------- */
/* Rings                                                                  */

static struct nent *ring_at(const struct nring *r, uint32_t i)
{
    return &r->v[(r->head + i) % r->cap];
}

/* Appends e; RT_NOMEM when the ring would grow past max. */
static rt_status ring_push(struct nring *r, struct nent e, uint32_t max)
{
    if (r->len == r->cap) {
        uint32_t cap = r->cap ? r->cap * 2 : 16;
        if (cap > max)
            cap = max;
        if (cap <= r->cap)
            return RT_NOMEM;
        struct nent *v = malloc(cap * sizeof(*v));
        if (!v)
            return RT_NOMEM;
        for (uint32_t i = 0; i < r->len; i++)
            v[i] = *ring_at(r, i);
        free(r->v);
        r->v = v;
        r->cap = cap;
        r->head = 0;
    }
    *ring_at(r, r->len) = e;
    r->len++;
    return RT_OK;
}

static struct nent ring_pop(struct nring *r)
{
    struct nent e = r->v[r->head];
    r->head = (r->head + 1) % r->cap;
    r->len--;
    return e;
}

static void ring_free(struct nring *r)
{
    while (r->len > 0)
        fo_msg_release(ring_pop(r).msg);
    free(r->v);
    memset(r, 0, sizeof(*r));
}

/* Index of the first entry with seq > c (entries are increasing), or len. */
static uint32_t ring_after(const struct nring *r, uint64_t c)
{
    uint32_t lo = 0, hi = r->len;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (ring_at(r, mid)->seq <= c)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* -------------------------------------------------------------------- */
/* Headers and messages (any thread)                                      */

static bool parse_u64(const char *s, uint64_t *out)
{
    if (!s || *s < '0' || *s > '9')
        return false;
    char *end = NULL;
    unsigned long long v = strtoull(s, &end, 10);
    if (*end)
        return false;
    *out = v;
    return true;
}

/*
 * A message's headers: a nats.c message, or the raw header block of an HMSG
 * read by the loop reader (nats_live.c). Values come back NUL-terminated in
 * the caller's buffer; one that does not fit counts as absent.
 */
struct nhdr {
    natsMsg *m;
    const uint8_t *raw;
    size_t raw_len;
};

#define HVAL_MAX (3 * PROTO_MSG_ID_MAX + 1) /* a pct-encoded msg_id is the longest */

/* 1: found (copied into buf), 0: absent, -1: longer than buf. */
static int hget(const struct nhdr *h, const char *key, char *buf, size_t cap)
{
    const char *v = NULL;
    size_t n = 0;
    if (h->m) {
        if (natsMsgHeader_Get(h->m, key, &v) != NATS_OK || !v)
            return 0;
        n = strlen(v);
    } else if (!nw_hdr_get(h->raw, h->raw_len, key, &v, &n)) {
        return 0;
    }
    if (n >= cap)
        return -1;
    memcpy(buf, v, n);
    buf[n] = 0;
    return 1;
}

static bool hget_u64(const struct nhdr *h, const char *key, uint64_t *out)
{
    char v[32];
    return hget(h, key, v, sizeof(v)) > 0 && parse_u64(v, out);
}

static bool hdr_u64(natsMsg *m, const char *key, uint64_t *out)
{
    struct nhdr h = {m, NULL, 0};
    return hget_u64(&h, key, out);
}

/* Rtgate-Encoding: json (default), msgpack or binary; anything else is invalid. */
static enum proto_payload_enc hdr_encoding(const struct nhdr *h)
{
    char v[16];
    int r = hget(h, H_ENCODING, v, sizeof(v));
    if (r < 0)
        return PROTO_PAYLOAD_NONE;
    if (r == 0 || !strcmp(v, "json"))
        return PROTO_PAYLOAD_JSON;
    if (!strcmp(v, "msgpack"))
        return PROTO_PAYLOAD_MSGPACK;
    if (!strcmp(v, "binary"))
        return PROTO_PAYLOAD_BINARY;
    return PROTO_PAYLOAD_NONE;
}

static const char *encoding_name(enum proto_payload_enc enc)
{
    switch (enc) {
    case PROTO_PAYLOAD_MSGPACK:
        return "msgpack";
    case PROTO_PAYLOAD_BINARY:
        return "binary";
    default:
        return "json";
    }
}

static int hex_val(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/* Inverse of proto_pct_encode; false if the result is not a usable msg_id. */
static bool pct_decode(const char *in, char *out, size_t *len)
{
    size_t o = 0;
    for (size_t i = 0; in[i]; i++) {
        if (o == PROTO_MSG_ID_MAX)
            return false;
        int hi = in[i] == '%' ? hex_val(in[i + 1]) : -1;
        int lo = hi >= 0 ? hex_val(in[i + 2]) : -1;
        if (lo >= 0) {
            out[o++] = (char)(hi << 4 | lo);
            i += 2;
        } else {
            out[o++] = in[i];
        }
    }
    *len = o;
    return o > 0 && proto_utf8_valid(out, o);
}

/* The message's msg_id: Rtgate-Msg-Id (ours), else Nats-Msg-Id (a backend's). */
static size_t msg_id_of(const struct nhdr *h, char out[PROTO_MSG_ID_MAX + 1])
{
    char v[HVAL_MAX];
    size_t len = 0;
    if (hget(h, H_MSG_ID, v, sizeof(v)) > 0 && pct_decode(v, out, &len))
        return len;
    if (hget(h, H_NATS_ID, v, sizeof(v)) <= 0)
        return 0;
    len = strlen(v);
    if (len == 0 || len > PROTO_MSG_ID_MAX || !proto_utf8_valid(v, len))
        return 0;
    memcpy(out, v, len);
    return len;
}

/* Nats-Time-Stamp (RFC 3339, UTC) in ms, or 0. */
static uint64_t parse_stamp(const char *s)
{
    struct tm tm;
    memset(&tm, 0, sizeof(tm));
    int ms = 0;
    if (!s || sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d.%3d", &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
                     &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &ms) < 6)
        return 0;
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    time_t t = timegm(&tm);
    return t < 0 ? 0 : (uint64_t)t * 1000u + (uint64_t)ms;
}

/* When the message was accepted: Rtgate-Ts, else the stream's time, else now. */
static uint64_t ts_of(const struct nhdr *h)
{
    uint64_t ts = 0;
    char v[64];
    if (hget_u64(h, H_TS, &ts) && ts)
        return ts;
    if (hget(h, H_TIME, v, sizeof(v)) > 0 && (ts = parse_stamp(v)) != 0)
        return ts;
    return rt_wall_ms();
}

/*
 * A fan-out message for a NATS message of channel (live or read back). JSON
 * and msgpack payloads are parsed once here; JSON is kept in its canonical
 * form (proto_payload.canonical), so JSON frames copy it without parsing it
 * again. An invalid payload gives a message with payload NONE (counted by
 * the caller), so a durable chain keeps its seq. NULL on NOMEM. Any thread:
 * the message is not shared until the loop takes it.
 */
static struct fo_msg *msg_make(struct neng *e, const struct nhdr *h, const uint8_t *data,
                               size_t data_len, const char *channel, size_t len, bool durable,
                               uint64_t seq, bool *invalid)
{
    char id[PROTO_MSG_ID_MAX + 1];
    size_t id_len = msg_id_of(h, id);
    struct proto_payload p = {hdr_encoding(h), data, data_len, false};
    struct proto_buf b;
    proto_buf_init(&b, 0);
    bool ok = p.enc == PROTO_PAYLOAD_BINARY;
    if (p.enc == PROTO_PAYLOAD_JSON || p.enc == PROTO_PAYLOAD_MSGPACK)
        ok = proto_payload_convert(&p, p.enc, &b) == RT_OK;
    if (ok && p.enc == PROTO_PAYLOAD_JSON)
        p = (struct proto_payload){PROTO_PAYLOAD_JSON, b.data, b.len, true};
    *invalid = !ok;
    if (!ok)
        p = (struct proto_payload){PROTO_PAYLOAD_NONE, NULL, 0, false};
    struct fo_msg *m = fo__msg_create(channel, len, id_len ? id : NULL, id_len, &p, durable, seq,
                                      ts_of(h), e->fo->cfg.frame_headroom);
    proto_buf_free(&b);
    return m;
}

/* A message read back from JetStream (a worker's DirectGet). */
static struct fo_msg *msg_from_nats(struct neng *e, natsMsg *m, const char *channel, size_t len,
                                    uint64_t seq, bool *invalid)
{
    struct nhdr h = {m, NULL, 0};
    int n = natsMsg_GetDataLength(m);
    return msg_make(e, &h, (const uint8_t *)natsMsg_GetData(m), n > 0 ? (size_t)n : 0, channel, len,
                    true, seq, invalid);
}

/* -------------------------------------------------------------------- */
/* Hand-off to the loop (any thread)                                      */

/* Call with lock held: true if the caller must wake the loop after unlocking. */
static bool wake_locked(struct neng *e)
{
    if (e->wake_pending)
        return false;
    e->wake_pending = true;
    return true;
}

static void wake(struct neng *e)
{
    if (e->fo->cfg.wake)
        e->fo->cfg.wake(e->fo->cfg.wake_ctx);
}

/* JetStream publish ack or failure (nats.c thread). */
static void on_pub_ack(jsCtx *js, natsMsg *m, jsPubAck *pa, jsPubAckErr *pae, void *closure)
{
    (void)js;
    struct neng *e = closure;
    pthread_mutex_lock(&e->lock);
    struct fo_hnode *n = fo__htab_find(&e->inflight, (const char *)&m, sizeof(m));
    bool w = false;
    if (n) {
        struct npub *p = FO__CONTAINER(n, struct npub, node);
        rt_htab_remove(&e->inflight, &n->h);
        p->status = pa ? NATS_OK : (pae && pae->Err != NATS_OK ? pae->Err : NATS_ERR);
        p->err_code = pae ? (int)pae->ErrCode : 0;
        p->seq = pa ? pa->Sequence : 0;
        p->dup = pa && pa->Duplicate;
        p->next = NULL;
        if (e->pubs_done_tail)
            e->pubs_done_tail->next = p;
        else
            e->pubs_done = p;
        e->pubs_done_tail = p;
        w = wake_locked(e);
    }
    pthread_mutex_unlock(&e->lock);
    natsMsg_Destroy(m);
    if (w)
        wake(e);
}

/* A bus subscription's message (nats.c delivery thread): copied for the loop. */
static void on_bus_msg(natsConnection *nc, natsSubscription *sub, natsMsg *m, void *closure)
{
    (void)nc;
    (void)sub;
    struct neng *e = closure;
    const char *subj = natsMsg_GetSubject(m), *reply = natsMsg_GetReply(m);
    size_t len = (size_t)natsMsg_GetDataLength(m);
    size_t sl = strlen(subj) + 1, rl = reply ? strlen(reply) + 1 : 0;
    struct nbus *b = malloc(sizeof(*b) + len + sl + rl);
    if (b) {
        memcpy(b->data, natsMsg_GetData(m), len);
        memcpy(b->data + len, subj, sl);
        if (reply)
            memcpy(b->data + len + sl, reply, rl);
        b->subject = (const char *)b->data + len;
        b->reply = reply ? (const char *)b->data + len + sl : NULL;
        b->len = len;
        b->next = NULL;
    }
    natsMsg_Destroy(m);
    size_t cost = sizeof(*b) + len + sl + rl;
    pthread_mutex_lock(&e->lock);
    if (!b || e->bus_bytes + cost > BUS_MAX_BYTES) {
        e->bus_lost++;
        pthread_mutex_unlock(&e->lock);
        free(b);
        return;
    }
    if (e->bus_tail)
        e->bus_tail->next = b;
    else
        e->bus_head = b;
    e->bus_tail = b;
    e->bus_bytes += cost;
    bool w = wake_locked(e);
    pthread_mutex_unlock(&e->lock);
    if (w)
        wake(e);
}

/* A reply to a JetStream read sent from the loop (nats.c delivery thread): for the loop. */
static void on_inbox_reply(natsConnection *nc, natsSubscription *sub, natsMsg *m, void *closure)
{
    (void)nc;
    (void)sub;
    struct neng *e = closure;
    struct nreply *r = malloc(sizeof(*r));
    if (!r) {
        natsMsg_Destroy(m); /* its request times out */
        return;
    }
    r->next = NULL;
    r->msg = m;
    pthread_mutex_lock(&e->lock);
    if (e->replies_tail)
        e->replies_tail->next = r;
    else
        e->replies = r;
    e->replies_tail = r;
    bool w = wake_locked(e);
    pthread_mutex_unlock(&e->lock);
    if (w)
        wake(e);
}

/*
 * The URL of the server nc is connected to, without user information (a URL
 * may carry user:password@ or token@; logs never do). Takes nc's lock: never
 * on the loop thread.
 */
static void connected_server(natsConnection *nc, char *out, size_t cap)
{
    char url[256] = "";
    if (natsConnection_GetConnectedUrl(nc, url, sizeof(url)) != NATS_OK || !url[0]) {
        snprintf(out, cap, "unknown");
        return;
    }
    const char *scheme = strstr(url, "://");
    const char *host = scheme ? scheme + 3 : url;
    const char *at = strrchr(host, '@');
    snprintf(out, cap, "%.*s%s", scheme ? (int)(scheme + 3 - url) : 0, url, at ? at + 1 : host);
}

/* Connected / reconnected (nats.c thread). */
static void on_connected(natsConnection *nc, void *closure)
{
    struct neng *e = closure;
    char server[sizeof(e->server)];
    connected_server(nc, server, sizeof(server));
    atomic_store(&e->up, true);
    pthread_mutex_lock(&e->lock);
    memcpy(e->server, server, sizeof(server));
    e->reconnects++;
    bool w = wake_locked(e);
    pthread_mutex_unlock(&e->lock);
    if (w)
        wake(e);
}

static void on_disconnected(natsConnection *nc, void *closure)
{
    (void)nc;
    struct neng *e = closure;
    atomic_store(&e->up, false);
    pthread_mutex_lock(&e->lock);
    e->disconnects++;
    bool w = wake_locked(e);
    pthread_mutex_unlock(&e->lock);
    if (w)
        wake(e);
}

/* Asynchronous errors (nats.c thread): a slow consumer lost bus messages (or replies). */
static void on_nats_error(natsConnection *nc, natsSubscription *sub, natsStatus err, void *closure)
{
    (void)nc;
    (void)sub;
    struct neng *e = closure;
    rt_log(RT_LOG_WARN, "nats_async_error", "error=\"%s\"", natsStatus_GetText(err));
    if (err != NATS_SLOW_CONSUMER)
        return;
    pthread_mutex_lock(&e->lock);
    e->bus_lost++; /* the bus's subscribers resync; a lost reply's request times out */
    bool w = wake_locked(e);
    pthread_mutex_unlock(&e->lock);
    if (w)
        wake(e);
}

/* -------------------------------------------------------------------- */
/* The sender thread: the loop's calls into nats.c                        */

/*
 * nats.c takes its connection's lock for every publish, subscribe and
 * status query, and holds it while it tries a server after a loss: a TCP
 * connect and the wait for INFO, up to the 2 s connect timeout. A loop that
 * called nats.c stalled that long each time a dead server was tried (a ping
 * took 1991 ms with NATS black-holed). So the loop never calls it: its
 * publishes, requests and bus subscriptions go, in order, through a queue
 * to this one thread, and a client publish's outcome comes back through
 * the hand-off (pubs_done) like a JetStream acknowledgement.
 */

/* A client publish is answered (any thread but the loop): hands p to the loop. */
static void pub_finished(struct neng *e, struct npub *p, natsStatus status)
{
    pthread_mutex_lock(&e->lock);
    p->status = status;
    p->next = NULL;
    if (e->pubs_done_tail)
        e->pubs_done_tail->next = p;
    else
        e->pubs_done = p;
    e->pubs_done_tail = p;
    bool w = wake_locked(e);
    pthread_mutex_unlock(&e->lock);
    if (w)
        wake(e);
}

/*
 * Loop thread: queues s for the sender. RT_LIMIT when SENDS_MAX are queued
 * (the caller still owns s); unsubscribes always go (the handle must end).
 */
static rt_status send_push(struct neng *e, struct nsend *s)
{
    pthread_mutex_lock(&e->send_lock);
    if (e->n_sends >= SENDS_MAX && s->kind != SEND_UNSUB) {
        pthread_mutex_unlock(&e->send_lock);
        return RT_LIMIT;
    }
    s->next = NULL;
    if (e->sends_tail)
        e->sends_tail->next = s;
    else
        e->sends = s;
    e->sends_tail = s;
    e->n_sends++;
    pthread_cond_signal(&e->send_cond);
    pthread_mutex_unlock(&e->send_lock);
    return RT_OK;
}

/* Loop thread: a plain publish (a request's, or the bus's) with copies of its bytes. */
static rt_status send_raw(struct neng *e, const char *subject, const char *reply,
                          const uint8_t *data, size_t len)
{
    size_t sl = strlen(subject) + 1, rl = reply ? strlen(reply) + 1 : 0;
    struct nsend *s = malloc(sizeof(*s) + sl + rl + len);
    if (!s)
        return RT_NOMEM;
    memset(s, 0, sizeof(*s));
    char *at = (char *)(s + 1);
    s->kind = SEND_RAW;
    s->subject = memcpy(at, subject, sl);
    s->reply = reply ? memcpy(at + sl, reply, rl) : NULL;
    s->data = memcpy(at + sl + rl, data, len);
    s->len = len;
    rt_status st = send_push(e, s);
    if (st != RT_OK)
        free(s);
    return st;
}

/* Sender thread: hands a client publish to JetStream; a refusal is answered at once. */
static void send_js(struct neng *e, struct nsend *s)
{
    struct npub *p = s->pub;
    jsPubOptions po;
    jsPubOptions_Init(&po);
    po.MaxWait = PUB_WAIT_MS;
    po.ExpectNoMessage = p->stage == PUB_CLAIM;
    natsMsg *m = s->msg;
    natsStatus st = js_PublishMsgAsync(e->js, &m, &po);
    if (st == NATS_OK)
        return; /* on_pub_ack answers */
    natsMsg_Destroy(m);
    pthread_mutex_lock(&e->lock);
    bool ours = fo__htab_find(&e->inflight, (const char *)&p->key, sizeof(p->key)) != NULL;
    if (ours)
        rt_htab_remove(&e->inflight, &p->node.h);
    pthread_mutex_unlock(&e->lock);
    if (ours) /* else the ack handler has it (a failure reported both ways) */
        pub_finished(e, p, st);
}

/* Sender thread: runs one call. Frees s unless it is part of a subscription. */
static void send_run(struct neng *e, struct nsend *s)
{
    struct nbus_sub *b = s->bus;
    natsStatus st = NATS_OK;
    switch (s->kind) {
    case SEND_CORE:
        st = natsConnection_PublishMsg(e->nc, s->msg);
        natsMsg_Destroy(s->msg);
        pub_finished(e, s->pub, st);
        break;
    case SEND_JS:
        send_js(e, s);
        break;
    case SEND_RAW:
        /* A lost request times out; a lost bus message is the bus's to resync. */
        if (s->reply)
            natsConnection_PublishRequest(e->nc, s->subject, s->reply, s->data, (int)s->len);
        else
            natsConnection_Publish(e->nc, s->subject, s->data, (int)s->len);
        break;
    case SEND_SUB:
        st = natsConnection_Subscribe(&b->sub, e->nc, b->subject, on_bus_msg, e);
        if (st != NATS_OK)
            rt_log(RT_LOG_WARN, "nats_bus_subscribe_failed", "subject=%s error=\"%s\"", b->subject,
                   natsStatus_GetText(st));
        break;
    case SEND_UNSUB:
        if (b->sub) {
            natsSubscription_Unsubscribe(b->sub);
            natsSubscription_Destroy(b->sub);
        }
        free(b); /* s is part of b */
        return;
    }
    if (!s->embedded)
        free(s);
}

/* The sender thread: runs the queue in order; at stop, after what is queued. */
static void *sender_main(void *arg)
{
    struct neng *e = arg;
    for (;;) {
        pthread_mutex_lock(&e->send_lock);
        while (!e->sends && !e->send_stop)
            pthread_cond_wait(&e->send_cond, &e->send_lock);
        struct nsend *batch = e->sends;
        e->sends = e->sends_tail = NULL;
        e->n_sends = 0;
        bool stop = e->send_stop;
        pthread_mutex_unlock(&e->send_lock);
        while (batch) {
            struct nsend *s = batch;
            batch = s->next;
            send_run(e, s);
        }
        if (stop)
            return NULL;
    }
}

/* -------------------------------------------------------------------- */
/* JetStream jobs (worker threads)                                         */

static void js_opts(jsOptions *o, int64_t wait_ms)
{
    jsOptions_Init(o);
    o->Wait = wait_ms;
}

static void dur_subject(char *buf, size_t cap, const char *channel)
{
    snprintf(buf, cap, "%s%s", PREFIX_DUR, channel);
}

static rt_status status_of(natsStatus s)
{
    if (s == NATS_OK)
        return RT_OK;
    return s == NATS_NOT_FOUND ? RT_NOT_FOUND : RT_UNAVAILABLE;
}

/* The first message of channel with seq >= from. RT_NOT_FOUND if none. */
static rt_status direct_next(struct neng *e, const char *channel, uint64_t from, int64_t wait,
                             natsMsg **out)
{
    char subj[SUBJECT_MAX];
    dur_subject(subj, sizeof(subj), channel);
    jsOptions o;
    js_opts(&o, wait);
    jsDirectGetMsgOptions d;
    jsDirectGetMsgOptions_Init(&d);
    d.Sequence = from;
    d.NextBySubject = subj;
    *out = NULL;
    return status_of(js_DirectGetMsg(out, e->js, e->stream, &o, &d));
}

/* A read-back message as a chain entry. */
static rt_status entry_of(struct neng *e, natsMsg *m, const char *channel, size_t len,
                          struct nent *out)
{
    if (!hdr_u64(m, H_SEQ, &out->seq))
        return RT_UNAVAILABLE;
    bool invalid = false;
    out->prev = 0;
    out->msg = msg_from_nats(e, m, channel, len, out->seq, &invalid);
    if (!out->msg)
        return RT_NOMEM;
    if (invalid) {
        fo_msg_release(out->msg);
        out->msg = NULL;
    }
    return RT_OK;
}

static void job_free(struct njob *j)
{
    if (!j)
        return;
    for (uint32_t i = 0; i < j->n; i++)
        fo_msg_release(j->v[i].msg);
    free(j->v);
    free(j);
}

/* Appends m's entry to j; false to stop (error, full, or `until` reached). */
static bool job_take(struct neng *e, struct njob *j, natsMsg *m, uint32_t max)
{
    struct nent en;
    j->st = entry_of(e, m, j->name, j->name_len, &en);
    natsMsg_Destroy(m);
    if (j->st != RT_OK)
        return false;
    j->v[j->n++] = en;
    return j->n < max && en.seq < j->until;
}

/* Walks the channel from seq `from` on, appending to j until job_take says stop. */
static void job_walk(struct neng *e, struct njob *j, uint64_t from, uint32_t max)
{
    natsMsg *m = NULL;
    for (;;) {
        rt_status st = direct_next(e, j->name, from, REQ_WAIT_MS, &m);
        if (st == RT_NOT_FOUND) {
            j->reached_end = true;
            j->st = RT_OK;
            return;
        }
        if (st != RT_OK) {
            j->st = st;
            return;
        }
        if (!job_take(e, j, m, max))
            return;
        from = j->v[j->n - 1].seq + 1;
    }
}

/*
 * FETCH: the messages after j->after, for catch-up. If j->after itself is
 * no longer retained, what lay between it and the next retained message may
 * have been trimmed: that is reported as a gap (trimming is oldest first, so
 * a retained `after` proves nothing after it was lost).
 */
static void job_fetch(struct neng *e, struct njob *j)
{
    natsMsg *m = NULL;
    j->st = direct_next(e, j->name, j->after, REQ_WAIT_MS, &m);
    if (j->st == RT_NOT_FOUND) {
        j->st = RT_OK;
        j->reached_end = true;
        return;
    }
    if (j->st != RT_OK)
        return;
    uint64_t seq = 0;
    if (!hdr_u64(m, H_SEQ, &seq)) {
        natsMsg_Destroy(m);
        j->st = RT_UNAVAILABLE;
        return;
    }
    if (seq == j->after && j->after > 0) {
        natsMsg_Destroy(m);
        job_walk(e, j, j->after + 1, FETCH_BATCH);
        return;
    }
    if (seq > j->after + 1)
        j->gap_to = seq - 1;
    if (job_take(e, j, m, FETCH_BATCH))
        job_walk(e, j, seq + 1, FETCH_BATCH);
}

static rt_status stream_setup(struct neng *e, int64_t *created, char *why, size_t why_cap);

static void job_run(struct neng *e, struct njob *j)
{
    uint32_t max = j->kind == JOB_FILL ? FILL_BATCH : FETCH_BATCH;
    if (j->kind == JOB_FETCH || j->kind == JOB_FILL) {
        j->v = malloc(max * sizeof(*j->v));
        if (!j->v) {
            j->st = RT_NOMEM;
            return;
        }
    }
    switch (j->kind) {
    case JOB_FETCH:
        job_fetch(e, j);
        break;
    case JOB_FILL:
        job_walk(e, j, j->after + 1, max);
        break;
    case JOB_STREAM:
        j->st = stream_setup(e, &j->created, j->why, sizeof(j->why));
        break;
    }
}

static void *worker_main(void *arg)
{
    struct neng *e = arg;
    for (;;) {
        pthread_mutex_lock(&e->jobs_lock);
        while (!e->jobs && !e->stopping)
            pthread_cond_wait(&e->jobs_cond, &e->jobs_lock);
        struct njob *j = e->stopping ? NULL : e->jobs;
        if (j) {
            e->jobs = j->next;
            if (!e->jobs)
                e->jobs_tail = NULL;
        }
        pthread_mutex_unlock(&e->jobs_lock);
        if (!j)
            return NULL;
        j->next = NULL;
        if (natsConnection_Status(e->nc) == NATS_CONN_STATUS_CONNECTED) {
            job_run(e, j);
        } else {
            j->st = RT_UNAVAILABLE;
            snprintf(j->why, sizeof(j->why), "not connected to NATS");
        }
        pthread_mutex_lock(&e->lock);
        if (e->jobs_done_tail)
            e->jobs_done_tail->next = j;
        else
            e->jobs_done = j;
        e->jobs_done_tail = j;
        bool w = wake_locked(e);
        pthread_mutex_unlock(&e->lock);
        if (w)
            wake(e);
    }
}

/* Loop thread: hands j to the workers. */
static void job_submit(struct neng *e, struct njob *j)
{
    pthread_mutex_lock(&e->jobs_lock);
    if (e->jobs_tail)
        e->jobs_tail->next = j;
    else
        e->jobs = j;
    e->jobs_tail = j;
    pthread_cond_signal(&e->jobs_cond);
    pthread_mutex_unlock(&e->jobs_lock);
}

static struct njob *job_new(enum njob_kind kind, const struct nchan *nc)
{
    size_t len = nc ? nc->ch->name_len : 0;
    struct njob *j = calloc(1, sizeof(*j) + len + 1);
    if (!j)
        return NULL;
    j->kind = kind;
    if (nc) {
        memcpy(j->name, nc->ch->name, len);
        j->name_len = len;
        j->gen = nc->gen;
    }
    return j;
}

/* -------------------------------------------------------------------- */
/* Stream and bucket (create: loop thread; after a reconnect: a worker)    */

static void epoch_of(int64_t created, char out[PROTO_EPOCH_MAX + 1])
{
    static const char digits[] = "0123456789abcdefghijklmnopqrstuvwxyz";
    char tmp[32];
    size_t n = 0;
    uint64_t v = created > 0 ? (uint64_t)created : 1;
    while (v && n < sizeof(tmp)) {
        tmp[n++] = digits[v % 36];
        v /= 36;
    }
    for (size_t i = 0; i < n; i++)
        out[i] = tmp[n - 1 - i];
    out[n] = '\0';
}

static void stream_config(const struct neng *e, jsStreamConfig *c, const char **subjects,
                          jsRePublish *rp)
{
    const struct fo_config *fc = &e->fo->cfg;
    jsStreamConfig_Init(c);
    subjects[0] = PREFIX_DUR ">";
    rp->Source = PREFIX_DUR ">";
    rp->Destination = PREFIX_LIVE ">";
    rp->HeadersOnly = false;
    c->Name = e->stream;
    c->Subjects = subjects;
    c->SubjectsLen = 1;
    c->Storage = js_FileStorage;
    c->Replicas = e->replicas;
    c->MaxMsgsPerSubject = (int64_t)fc->history_max;
    c->MaxAge = (int64_t)fc->history_max_age_ms * 1000000;
    uint64_t dup_ms =
        fc->dedup_window_ms < fc->history_max_age_ms ? fc->dedup_window_ms : fc->history_max_age_ms;
    c->Duplicates = (int64_t)dup_ms * 1000000;
    c->AllowDirect = true;
    c->RePublish = rp;
}

/* The parts of an existing stream this engine cannot work without. */
static bool stream_usable(const jsStreamConfig *c)
{
    bool subj = false;
    for (int i = 0; i < c->SubjectsLen; i++)
        subj = subj || strcmp(c->Subjects[i], PREFIX_DUR ">") == 0;
    return subj && c->AllowDirect && c->RePublish && c->RePublish->Source &&
           c->RePublish->Destination && !strcmp(c->RePublish->Source, PREFIX_DUR ">") &&
           !strcmp(c->RePublish->Destination, PREFIX_LIVE ">") && !c->RePublish->HeadersOnly;
}

static bool stream_limits_differ(const jsStreamConfig *have, const jsStreamConfig *want)
{
    return have->MaxMsgsPerSubject != want->MaxMsgsPerSubject || have->MaxAge != want->MaxAge ||
           have->Duplicates != want->Duplicates || have->Replicas != want->Replicas;
}

/* Updates an existing stream to the configured limits; it must stay usable. */
static rt_status stream_update(struct neng *e, jsStreamInfo **si, jsStreamConfig *want)
{
    if (!stream_limits_differ((*si)->Config, want) && stream_usable((*si)->Config))
        return RT_OK;
    jsOptions o;
    js_opts(&o, REQ_WAIT_MS);
    jsStreamInfo *up = NULL;
    jsErrCode ec = 0;
    natsStatus s = js_UpdateStream(&up, e->js, want, &o, &ec);
    if (s == NATS_OK) {
        rt_log(RT_LOG_INFO, "nats_stream_updated", "stream=%s", e->stream);
        jsStreamInfo_Destroy(*si);
        *si = up;
        return RT_OK;
    }
    rt_log(RT_LOG_WARN, "nats_stream_update_failed", "stream=%s error=\"%s\" code=%d", e->stream,
           natsStatus_GetText(s), (int)ec);
    return stream_usable((*si)->Config) ? RT_OK : RT_INVAL;
}

/* The ephemeral msg_id bucket (TTL = dedup window); an existing one is kept. */
static void bucket_setup(struct neng *e)
{
    jsOptions o;
    js_opts(&o, REQ_WAIT_MS);
    jsStreamInfo *si = NULL;
    jsErrCode ec = 0;
    if (js_GetStreamInfo(&si, e->js, "KV_" KV_BUCKET, &o, &ec) == NATS_OK) {
        jsStreamInfo_Destroy(si);
        return;
    }
    kvConfig kc;
    kvConfig_Init(&kc);
    kc.Bucket = KV_BUCKET;
    kc.History = 1;
    kc.TTL = (int64_t)e->fo->cfg.dedup_window_ms * 1000000;
    kc.Replicas = (int)e->replicas;
    kvStore *kv = NULL;
    natsStatus s = js_CreateKeyValue(&kv, e->js, &kc);
    if (s != NATS_OK)
        rt_log(RT_LOG_WARN, "nats_bucket_failed", "bucket=%s error=\"%s\"", KV_BUCKET,
               natsStatus_GetText(s));
    kvStore_Destroy(kv);
}

/*
 * Creates the stream, or checks (and updates) an existing one. *created: its
 * birth. RT_UNAVAILABLE (JetStream did not answer) or RT_INVAL (a stream this
 * engine cannot use) with the reason in why; the caller logs it.
 */
static rt_status stream_setup(struct neng *e, int64_t *created, char *why, size_t why_cap)
{
    const char *subjects[1];
    jsRePublish rp;
    jsStreamConfig want;
    stream_config(e, &want, subjects, &rp);
    jsOptions o;
    js_opts(&o, REQ_WAIT_MS);
    jsStreamInfo *si = NULL;
    jsErrCode ec = 0;
    natsStatus s = js_GetStreamInfo(&si, e->js, e->stream, &o, &ec);
    rt_status st = RT_OK;
    if (s == NATS_NOT_FOUND || ec == JSStreamNotFoundErr) {
        s = js_AddStream(&si, e->js, &want, &o, &ec);
        if (s == NATS_OK)
            rt_log(RT_LOG_INFO, "nats_stream_created", "stream=%s replicas=%u", e->stream,
                   e->replicas);
    } else if (s == NATS_OK) {
        st = stream_update(e, &si, &want);
    }
    if (s != NATS_OK) {
        snprintf(why, why_cap, "%s (code %d)", natsStatus_GetText(s), (int)ec);
        st = RT_UNAVAILABLE;
    } else if (st != RT_OK) {
        snprintf(why, why_cap, "needs subjects %s>, allow_direct and republish %s> -> %s>",
                 PREFIX_DUR, PREFIX_DUR, PREFIX_LIVE);
    }
    if (st == RT_OK)
        *created = si->Created;
    jsStreamInfo_Destroy(si);
    if (st == RT_OK)
        bucket_setup(e);
    return st;
}

/* -------------------------------------------------------------------- */
/* JetStream reads from the loop: requests answered on the inbox           */

/*
 * A first subscriber's sync point, a resume's reads and the probes are single
 * DirectGets whose answer the loop needs: they are published from the loop
 * with a reply subject on the engine's inbox (one nats.c subscription,
 * inbox.*), and the reply comes back through the hand-off. Nothing waits:
 * a reply that does not come within REQ_WAIT_MS fails its request.
 */

static void req_done(struct neng *e, struct nreq *q, rt_status st, uint64_t seq);

/*
 * nats.c's connection (JetStream, publishes, the bus) is connected, as its
 * callbacks said: natsConnection_Status would take the connection's lock,
 * which nats.c holds while it tries a server (see the sender thread).
 */
static bool conn_up(const struct neng *e)
{
    return atomic_load(&e->up);
}

static struct nreq *req_find(struct neng *e, uint64_t id)
{
    struct fo_hnode *n = fo__htab_find(&e->reqs, (const char *)&id, sizeof(id));
    return n ? FO__CONTAINER(n, struct nreq, node) : NULL;
}

static void req_unlink(struct neng *e, struct nreq *q)
{
    rt_htab_remove(&e->reqs, &q->node.h);
    if (q->older)
        q->older->newer = q->newer;
    else
        e->reqs_oldest = q->newer;
    if (q->newer)
        q->newer->older = q->older;
    else
        e->reqs_newest = q->older;
}

/*
 * Publishes the read for q: a DirectGet (first or last message of the
 * channel's subject), or the stream's info when q->stream_info. RT_OK: q
 * waits for its reply (req_done frees it). Anything else: q is the caller's.
 */
static rt_status req_send(struct neng *e, struct nreq *q)
{
    char subj[SUBJECT_MAX + 64], reply[128], body[SUBJECT_MAX + 64];
    int blen = 0;
    if (q->stream_info) {
        snprintf(subj, sizeof(subj), "$JS.API.STREAM.INFO.%s", e->stream);
    } else {
        snprintf(subj, sizeof(subj), "$JS.API.DIRECT.GET.%s", e->stream);
        /* Channel names are [A-Za-z0-9_:.-]: nothing to escape in JSON. */
        blen = snprintf(body, sizeof(body), "{\"%s\":\"%s%.*s\"}",
                        q->kind == REQ_RESUME_OLDEST ? "next_by_subj" : "last_by_subj", PREFIX_DUR,
                        (int)q->name_len, q->name);
    }
    q->id = ++e->next_req;
    snprintf(reply, sizeof(reply), "%s.%llu", e->inbox, (unsigned long long)q->id);
    q->node.key = (const char *)&q->id;
    q->node.key_len = sizeof(q->id);
    if (!conn_up(e) || fo__htab_insert(&e->reqs, &q->node) != RT_OK)
        return RT_UNAVAILABLE;
    if (send_raw(e, subj, reply, (const uint8_t *)body, (size_t)blen) != RT_OK) {
        rt_htab_remove(&e->reqs, &q->node.h);
        return RT_UNAVAILABLE;
    }
    q->deadline_ms = rt_mono_ms() + REQ_WAIT_MS;
    q->newer = NULL;
    q->older = e->reqs_newest;
    if (e->reqs_newest)
        e->reqs_newest->newer = q;
    else
        e->reqs_oldest = q;
    e->reqs_newest = q;
    return RT_OK;
}

/* A read for channel nc (see req_send); gen pins it to the current interest. */
static rt_status req_start(struct neng *e, const struct nchan *nc, enum nreq_kind kind, uint64_t op,
                           uint64_t since)
{
    size_t len = nc->ch->name_len;
    struct nreq *q = calloc(1, sizeof(*q) + len + 1);
    if (!q)
        return RT_NOMEM;
    q->kind = kind;
    q->gen = nc->gen;
    q->op = op;
    q->since = since;
    q->name_len = len;
    memcpy(q->name, nc->ch->name, len);
    rt_status st = req_send(e, q);
    if (st != RT_OK)
        free(q);
    return st;
}

/* The stream's last seq from a STREAM.INFO reply. */
static rt_status stream_info_last(natsMsg *m, uint64_t *out)
{
    int n = natsMsg_GetDataLength(m);
    json_t *o = n > 0 ? json_loadb(natsMsg_GetData(m), (size_t)n, 0, NULL) : NULL;
    json_t *last = json_object_get(json_object_get(o, "state"), "last_seq");
    rt_status st = json_is_integer(last) && json_integer_value(last) >= 0 ? RT_OK : RT_UNAVAILABLE;
    if (st == RT_OK)
        *out = (uint64_t)json_integer_value(last);
    json_decref(o);
    return st;
}

/* A DirectGet reply: the message's seq, RT_NOT_FOUND (404), or RT_UNAVAILABLE. */
static rt_status direct_get_seq(natsMsg *m, uint64_t *out)
{
    const char *status = NULL;
    if (natsMsg_GetDataLength(m) == 0 && natsMsgHeader_Get(m, "Status", &status) == NATS_OK &&
        status)
        return strcmp(status, "404") == 0 ? RT_NOT_FOUND : RT_UNAVAILABLE;
    return hdr_u64(m, H_SEQ, out) ? RT_OK : RT_UNAVAILABLE;
}

/* A reply from the inbox (loop thread): answers its request, if it still waits. Takes nothing. */
static void req_reply(struct neng *e, natsMsg *m)
{
    const char *subj = natsMsg_GetSubject(m);
    const char *dot = strrchr(subj, '.');
    uint64_t id = 0;
    struct nreq *q = dot && parse_u64(dot + 1, &id) ? req_find(e, id) : NULL;
    if (!q)
        return; /* timed out already */
    req_unlink(e, q);
    uint64_t seq = 0;
    rt_status st = q->stream_info ? stream_info_last(m, &seq) : direct_get_seq(m, &seq);
    if (st == RT_NOT_FOUND && q->kind != REQ_RESUME_OLDEST) {
        /* A channel with nothing retained: its latest is taken to be the
         * stream's last seq, so every seq it ever had is at or below it. */
        q->stream_info = true;
        if (req_send(e, q) == RT_OK)
            return;
        st = RT_UNAVAILABLE;
    }
    req_done(e, q, st, seq);
}

/* Fails every request whose time is up, or all of them (NATS is gone). */
static void req_expire(struct neng *e, bool all)
{
    uint64_t now = rt_mono_ms();
    while (e->reqs_oldest && (all || e->reqs_oldest->deadline_ms <= now)) {
        struct nreq *q = e->reqs_oldest;
        req_unlink(e, q);
        req_done(e, q, RT_UNAVAILABLE, 0);
    }
}

/* -------------------------------------------------------------------- */
/* Channels: chain, dispatch and hole fill (loop thread)                  */

static void stats_cache(struct neng *e, const struct fo_msg *m, bool add)
{
    if (!m)
        return;
    struct fo_stats *s = &e->fo->stats;
    if (add) {
        s->history_messages++;
        s->history_bytes += fo__msg_bytes(m);
    } else {
        s->history_messages--;
        s->history_bytes -= fo__msg_bytes(m);
    }
}

static void replay_drop(struct neng *e, struct nchan *nc)
{
    if (!nc->replay)
        return;
    for (uint32_t i = 0; i < nc->replay->n; i++)
        stats_cache(e, nc->replay->v[i].msg, false);
    job_free(nc->replay);
    nc->replay = NULL;
}

static void tail_drop(struct neng *e, struct nchan *nc)
{
    for (uint32_t i = 0; i < nc->tail.len; i++)
        stats_cache(e, ring_at(&nc->tail, i)->msg, false);
    ring_free(&nc->tail);
}

/*
 * Appends a dispatched message to the tail cache (m may be NULL: invalid).
 * Never more than the configured history: a reader further behind gets the
 * same gap from here as from JetStream.
 */
static void tail_push(struct neng *e, struct nchan *nc, uint64_t seq, struct fo_msg *m)
{
    uint32_t max = e->fo->cfg.history_max < TAIL_MAX ? (uint32_t)e->fo->cfg.history_max : TAIL_MAX;
    if (nc->tail.len >= max) {
        struct nent old = ring_pop(&nc->tail);
        stats_cache(e, old.msg, false);
        fo_msg_release(old.msg);
        nc->tail_lo = old.seq;
    }
    struct nent en = {seq, 0, fo_msg_retain(m)};
    if (ring_push(&nc->tail, en, max) != RT_OK) {
        fo_msg_release(m);
        tail_drop(e, nc); /* no memory: the cache starts again after seq */
        nc->tail_lo = seq;
        return;
    }
    stats_cache(e, m, true);
}

/* Forgets everything about a durable channel's history (interest gone). */
static void chan_forget(struct neng *e, struct nchan *nc)
{
    tail_drop(e, nc);
    replay_drop(e, nc);
    ring_free(&nc->held);
    nc->fill_busy = nc->fetch_busy = nc->probe_busy = false;
    nc->probe_wanted = nc->fetch_failed = false;
    nc->dispatched = nc->latest_known = nc->trimmed_through = nc->fill_target = 0;
    nc->tail_lo = nc->last_live = 0;
    nc->quiet_probed = false;
    nc->gen = ++e->next_gen; /* results of jobs still running are dropped */
}

/* The next message of a durable channel in seq order: cache it and dispatch. */
static void accept_msg(struct neng *e, struct fo_chan *ch, struct nchan *nc, uint64_t seq,
                       struct fo_msg *m)
{
    nc->dispatched = seq;
    if (nc->latest_known < seq)
        nc->latest_known = seq;
    bool valid = m && m->payload.enc != PROTO_PAYLOAD_NONE;
    tail_push(e, nc, seq, valid ? m : NULL);
    if (valid)
        fo__dispatch(e->fo, ch, m);
}

/* Reads back (dispatched, nc->fill_target] on a worker, unless already running. */
static void fill_start(struct neng *e, struct nchan *nc, uint64_t target)
{
    if (nc->fill_target < target)
        nc->fill_target = target;
    if (nc->fill_busy || nc->fill_target <= nc->dispatched || !subscribed(nc) || !synced(nc))
        return; /* not synced yet: the fill starts from the sync point */
    struct njob *j = job_new(JOB_FILL, nc);
    if (!j) {
        nc->retry_at = rt_mono_ms() + RETRY_MS;
        return;
    }
    j->after = nc->dispatched;
    j->until = nc->fill_target;
    nc->fill_busy = true;
    job_submit(e, j);
}

static void held_push(struct neng *e, struct nchan *nc, struct nent en)
{
    if (ring_push(&nc->held, en, HELD_MAX) == RT_OK)
        return;
    /* Too much behind one hole (or the sync point): read this one back from
     * JetStream too, once the chain has reached it. */
    fo_msg_release(en.msg);
    fill_start(e, nc, en.seq);
}

/*
 * Dispatches the held live messages that now continue the chain; stops at
 * the next hole (and starts filling it). Interest may go while dispatching.
 */
static void held_drain(struct neng *e, struct fo_chan *ch, struct nchan *nc)
{
    while (subscribed(nc) && nc->held.len > 0 && !nc->fill_busy) {
        struct nent *h = ring_at(&nc->held, 0);
        if (h->seq > nc->dispatched && h->prev > nc->dispatched) {
            fill_start(e, nc, h->prev);
            return;
        }
        struct nent en = ring_pop(&nc->held);
        if (en.seq > nc->dispatched)
            accept_msg(e, ch, nc, en.seq, en.msg);
        fo_msg_release(en.msg);
    }
}

/*
 * A live message of a durable channel (takes m). It continues the chain when
 * its Last-Sequence is at or below what was dispatched; a higher one means
 * messages were missed: they are read back first, this one waits. While the
 * channel's sync point is being read every live message waits: the ones at
 * or below it are dropped then, the others continue the chain from it.
 */
static void durable_live(struct neng *e, struct fo_chan *ch, struct nchan *nc, uint64_t seq,
                         uint64_t prev, struct fo_msg *m)
{
    nc->last_live = rt_mono_ms();
    nc->quiet_probed = false;
    if (nc->ready == NR_CONFIRMING || nc->ready == NR_SYNCING) {
        held_push(e, nc, (struct nent){seq, prev, m});
        return;
    }
    if (!synced(nc) || seq <= nc->dispatched) {
        fo_msg_release(m);
        return;
    }
    if (nc->fill_busy || nc->held.len > 0 || prev > nc->dispatched) {
        held_push(e, nc, (struct nent){seq, prev, m});
        held_drain(e, ch, nc);
        return;
    }
    accept_msg(e, ch, nc, seq, m);
    fo_msg_release(m);
}

static struct fo_chan *chan_find(struct neng *e, const char *name, size_t len)
{
    struct fo_hnode *n = fo__htab_find(&e->fo->chans, name, len);
    return n ? FO__CONTAINER(n, struct fo_chan, node) : NULL;
}

/* -------------------------------------------------------------------- */
/* Job results (loop thread)                                              */

static void fill_done(struct neng *e, struct fo_chan *ch, struct nchan *nc, struct njob *j)
{
    nc->fill_busy = false;
    if (j->st != RT_OK) {
        nc->retry_at = rt_mono_ms() + RETRY_MS;
        return;
    }
    e->fo->stats.upstream_fetched += j->n;
    for (uint32_t i = 0; i < j->n && subscribed(nc); i++) {
        if (j->v[i].seq > nc->dispatched)
            accept_msg(e, ch, nc, j->v[i].seq, j->v[i].msg);
    }
    if (!subscribed(nc))
        return;
    if (j->reached_end && nc->dispatched < nc->fill_target) {
        /* Nothing more of this channel up to the target: the target was the
         * stream's last seq (an empty channel), or messages were trimmed. */
        rt_log(RT_LOG_DEBUG, "nats_fill_short", "channel=%s from=%llu to=%llu", ch->name,
               (unsigned long long)nc->dispatched + 1, (unsigned long long)nc->fill_target);
        nc->dispatched = nc->fill_target;
    }
    fill_start(e, nc, nc->fill_target);
    held_drain(e, ch, nc);
}

static void fetch_done(struct neng *e, struct fo_chan *ch, struct nchan *nc, struct njob *j)
{
    nc->fetch_busy = false;
    if (j->st != RT_OK) {
        nc->fetch_failed = true;
        nc->retry_at = rt_mono_ms() + RETRY_MS;
        job_free(j);
        return;
    }
    e->fo->stats.upstream_fetched += j->n;
    if (j->reached_end && j->n == 0)
        j->gap_to = j->until; /* nothing retained after `after` up to the cached part */
    replay_drop(e, nc);
    for (uint32_t i = 0; i < j->n; i++)
        stats_cache(e, j->v[i].msg, true);
    nc->replay = j;
    fo__chan_repump(e->fo, ch);
}

static void probe_done(struct neng *e, struct nchan *nc, rt_status st, uint64_t latest)
{
    nc->probe_busy = false;
    if (st != RT_OK) {
        nc->probe_wanted = true;
        nc->retry_at = rt_mono_ms() + RETRY_MS;
        return;
    }
    if (nc->latest_known < latest)
        nc->latest_known = latest;
    fill_start(e, nc, latest);
}

/* Asks JetStream for the channel's latest seq; what is newer is read back (probe_done). */
static void probe_start(struct neng *e, struct nchan *nc)
{
    if (nc->probe_busy || !synced(nc)) {
        nc->probe_wanted = !nc->probe_busy && synced(nc);
        return;
    }
    if (e->probes_out >= PROBES_MAX || req_start(e, nc, REQ_PROBE, 0, 0) != RT_OK) {
        nc->probe_wanted = true; /* the tick tries again */
        return;
    }
    e->probes_out++;
    nc->probe_busy = true;
    nc->probe_wanted = false;
}

/* Every durable channel with interest: look for messages missed while away. */
static void resync_all(struct neng *e)
{
    for (struct nchan *nc = e->with_sub[1]; nc; nc = nc->next)
        probe_start(e, nc);
}

/*
 * The stream check finished. A failure (JetStream unavailable or slow, a
 * stream this engine cannot use) is retried with backoff, 500 ms doubling up
 * to 10 s, and logged once until it works; /readyz says false meanwhile.
 */
static void stream_done(struct neng *e, struct njob *j)
{
    e->stream_busy = false;
    if (j->st != RT_OK) {
        uint64_t b = e->stream_backoff_ms ? e->stream_backoff_ms * 2 : RETRY_MS;
        e->stream_backoff_ms = b > STREAM_RETRY_MAX_MS ? STREAM_RETRY_MAX_MS : b;
        e->stream_retry_at = rt_mono_ms() + e->stream_backoff_ms;
        if (!e->js_down_logged)
            rt_log(j->st == RT_INVAL ? RT_LOG_ERROR : RT_LOG_WARN,
                   j->st == RT_INVAL ? "nats_stream_unusable" : "nats_jetstream_unavailable",
                   "stream=%s why=\"%s\" retrying=backoff_up_to_%ums", e->stream, j->why,
                   STREAM_RETRY_MAX_MS);
        e->js_down_logged = true;
        e->stream_ok = false;
        return;
    }
    e->stream_backoff_ms = 0;
    e->js_down_logged = false;
    if (e->created && j->created != e->created)
        rt_log(RT_LOG_ERROR, "nats_stream_recreated",
               "stream=%s why=\"epoch changed; restart the gateways so that cursors follow\"",
               e->stream);
    e->created = j->created;
    epoch_of(e->created, e->epoch);
    if (!e->stream_ok)
        rt_log(RT_LOG_INFO, "nats_stream_ready", "stream=%s epoch=%s replicas=%u", e->stream,
               e->epoch, e->replicas);
    e->stream_ok = true;
}

static void job_done(struct neng *e, struct njob *j)
{
    if (j->kind == JOB_STREAM) {
        stream_done(e, j);
        job_free(j);
        return;
    }
    struct fo_chan *ch = chan_find(e, j->name, j->name_len);
    struct nchan *nc = ch ? ch->eng : NULL;
    if (!nc || nc->gen != j->gen || !subscribed(nc)) {
        job_free(j);
        return;
    }
    ch->pins++;
    if (j->kind == JOB_FETCH) {
        fetch_done(e, ch, nc, j); /* keeps j as the replay cache */
    } else {
        fill_done(e, ch, nc, j);
        job_free(j);
    }
    ch->pins--;
    fo__chan_check_idle(e->fo, ch);
}

/* -------------------------------------------------------------------- */
/* Publishing (loop thread)                                               */

static void pub_answer_error(struct fo_pub_result *res, bool durable, const char *why)
{
    memset(res, 0, sizeof(*res));
    res->error = RT_E_UNAVAILABLE;
    res->error_message = why;
    res->retry_after_ms = 1000;
    res->durable = durable;
}

static rt_status pub_core(struct neng *e, struct npub *p, natsMsg *m);

/*
 * A client publish's stage is over (acknowledged, failed, or sent): answer
 * it, or, for a new ephemeral msg_id, publish the message now.
 */
static void pub_done(struct neng *e, struct npub *p)
{
    struct fo_pub_result res;
    memset(&res, 0, sizeof(res));
    res.durable = p->stage == PUB_DURABLE;
    if (p->stage == PUB_DURABLE && p->status == NATS_OK) {
        res.seq = p->seq;
        res.dup = p->dup;
    } else if (p->stage == PUB_CLAIM && p->status == NATS_OK) {
        natsMsg *m = p->eph;
        p->eph = NULL;
        if (pub_core(e, p, m) == RT_AGAIN)
            return; /* answered once it is sent */
        pub_answer_error(&res, false, "NATS unavailable");
    } else if (p->stage == PUB_CLAIM && p->err_code == JSStreamWrongLastSequenceErr) {
        res.dup = true;
    } else if (p->stage == PUB_CORE) {
        if (p->status != NATS_OK)
            pub_answer_error(&res, false, "NATS unavailable");
    } else {
        pub_answer_error(&res, p->stage == PUB_DURABLE, "JetStream did not acknowledge");
    }
    fo__pub_done(e->fo, p->conn_id, p->req_id, &res);
    natsMsg_Destroy(p->eph);
    free(p);
}

/* The NATS message of a client publish, with the headers backends read. */
static natsMsg *client_msg(const struct fo_chan *ch, const struct fo_pub_req *req)
{
    char subj[SUBJECT_MAX], id[3 * PROTO_MSG_ID_MAX + 1], scoped[SUBJECT_MAX], ts[24];
    snprintf(subj, sizeof(subj), "%s%s", ch->durable ? PREFIX_DUR : PREFIX_EPH, ch->name);
    natsMsg *m = NULL;
    if (natsMsg_Create(&m, subj, NULL, (const char *)req->payload.ptr, (int)req->payload.len))
        return NULL;
    snprintf(ts, sizeof(ts), "%llu", (unsigned long long)rt_wall_ms());
    natsStatus s = natsMsgHeader_Set(m, H_CHANNEL, ch->name);
    if (!s && req->user)
        s = natsMsgHeader_Set(m, H_USER, req->user);
    if (!s && req->client)
        s = natsMsgHeader_Set(m, H_CLIENT, req->client);
    if (!s)
        s = natsMsgHeader_Set(m, H_ENCODING, encoding_name(req->payload.enc));
    if (!s)
        s = natsMsgHeader_Set(m, H_TS, ts);
    if (!s && req->msg_id) {
        proto_pct_encode(req->msg_id, req->msg_id_len, id, sizeof(id));
        snprintf(scoped, sizeof(scoped), "%s:%s", ch->name, id);
        s = natsMsgHeader_Set(m, H_MSG_ID, id);
        if (!s && ch->durable)
            s = natsMsgHeader_Set(m, H_NATS_ID, scoped); /* JetStream dedups per stream */
    }
    if (s) {
        natsMsg_Destroy(m);
        return NULL;
    }
    return m;
}

/* The KV record that claims an ephemeral msg_id: $KV.rtgate_dedup.<channel>.<hex id>. */
static natsMsg *claim_msg(const struct fo_chan *ch, const struct fo_pub_req *req)
{
    static const char hex[] = "0123456789abcdef";
    char subj[SUBJECT_MAX];
    size_t o = (size_t)snprintf(subj, sizeof(subj), "%s%s.", KV_PREFIX, ch->name);
    for (size_t i = sizeof(KV_PREFIX) - 1; i < o; i++)
        subj[i] = subj[i] == ':' ? '=' : subj[i]; /* ':' is not a KV key character */
    for (size_t i = 0; i < req->msg_id_len && o + 3 < sizeof(subj); i++) {
        subj[o++] = hex[(unsigned char)req->msg_id[i] >> 4];
        subj[o++] = hex[(unsigned char)req->msg_id[i] & 15];
    }
    subj[o] = '\0';
    natsMsg *m = NULL;
    return natsMsg_Create(&m, subj, NULL, NULL, 0) == NATS_OK ? m : NULL;
}

/*
 * Queues m's core publish for the sender; its outcome answers p (pub_done,
 * stage CORE). RT_AGAIN, or an error with m destroyed (p stays the caller's).
 */
static rt_status pub_core(struct neng *e, struct npub *p, natsMsg *m)
{
    struct nsend *s = calloc(1, sizeof(*s));
    p->stage = PUB_CORE;
    if (s) {
        s->kind = SEND_CORE;
        s->msg = m;
        s->pub = p;
        if (send_push(e, s) == RT_OK)
            return RT_AGAIN;
    }
    free(s);
    natsMsg_Destroy(m);
    return RT_UNAVAILABLE;
}

/*
 * A client publish through JetStream (stage DURABLE, or CLAIM with the
 * message to publish after it in eph): registered by m's pointer, which the
 * acknowledgement (on_pub_ack) names, and queued for the sender. Takes m and
 * eph. RT_AGAIN, or an error (nothing queued).
 */
static rt_status pub_js(struct neng *e, natsMsg *m, natsMsg *eph, enum npub_stage stage,
                        const struct fo_pub_req *req)
{
    struct npub *p = calloc(1, sizeof(*p));
    struct nsend *s = calloc(1, sizeof(*s));
    if (!p || !s) {
        free(p);
        free(s);
        natsMsg_Destroy(m);
        natsMsg_Destroy(eph);
        return RT_NOMEM;
    }
    p->key = m;
    p->node.key = (const char *)&p->key;
    p->node.key_len = sizeof(p->key);
    p->stage = stage;
    p->eph = eph;
    p->conn_id = req->conn_id;
    p->req_id = req->req_id;
    s->kind = SEND_JS;
    s->msg = m;
    s->pub = p;
    pthread_mutex_lock(&e->lock);
    rt_status st = fo__htab_insert(&e->inflight, &p->node);
    pthread_mutex_unlock(&e->lock);
    if (st == RT_OK && send_push(e, s) == RT_OK)
        return RT_AGAIN;
    pthread_mutex_lock(&e->lock);
    if (st == RT_OK)
        rt_htab_remove(&e->inflight, &p->node.h);
    pthread_mutex_unlock(&e->lock);
    natsMsg_Destroy(m);
    natsMsg_Destroy(eph);
    free(p);
    free(s);
    return RT_UNAVAILABLE;
}

static size_t inflight_count(struct neng *e)
{
    pthread_mutex_lock(&e->lock);
    size_t n = e->inflight.count;
    pthread_mutex_unlock(&e->lock);
    return n;
}

/* -------------------------------------------------------------------- */
/* The loop reader's messages (loop thread)                               */

/* The channel name of rtgate.eph.X / rtgate.live.X, or NULL. */
static const char *live_channel(const struct nw_msg *m, bool *durable, size_t *len)
{
    size_t el = sizeof(PREFIX_EPH) - 1, ll = sizeof(PREFIX_LIVE) - 1;
    *durable = m->subject_len > ll && memcmp(m->subject, PREFIX_LIVE, ll) == 0;
    size_t pl = *durable ? ll : el;
    if (m->subject_len <= pl || m->subject_len - pl > PROTO_CHANNEL_MAX ||
        (!*durable && memcmp(m->subject, PREFIX_EPH, el) != 0))
        return NULL;
    *len = m->subject_len - pl;
    return m->subject + pl;
}

/*
 * rtgate.eph.X or rtgate.live.X from the loop reader: dispatched at once, no
 * hand-over. A durable one goes through the chain checks (durable_live): a
 * missing seq is read back from JetStream.
 */
static void on_live_msg(void *ctx, const struct nw_msg *m)
{
    struct neng *e = ctx;
    bool durable = false;
    size_t len = 0;
    const char *name = live_channel(m, &durable, &len);
    struct fo_chan *ch = name ? chan_find(e, name, len) : NULL;
    struct nchan *nc = ch ? ch->eng : NULL;
    if (!nc || !nc->lsid || nc->lsid != m->sid || ch->durable != durable)
        return; /* gone, or an older subscription's message */
    struct nhdr h = {NULL, m->hdr, m->hdr_len};
    uint64_t seq = 0, prev = 0;
    if (durable && !(hget_u64(&h, H_SEQ, &seq) && hget_u64(&h, H_LAST_SEQ, &prev) && seq > prev)) {
        e->fo->stats.upstream_invalid++;
        return;
    }
    if (durable && e->drop_every && ++e->live_drop_count % e->drop_every == 0)
        return; /* test hook: lost on the way, silently */
    bool invalid = false;
    struct fo_msg *msg = msg_make(e, &h, m->data, m->data_len, name, len, durable, seq, &invalid);
    if (!msg || invalid)
        e->fo->stats.upstream_invalid++;
    if (!msg || (invalid && !durable)) { /* a durable one keeps its seq in the chain */
        fo_msg_release(msg);
        return;
    }
    ch->pins++;
    if (durable) {
        durable_live(e, ch, nc, seq, prev, msg);
    } else {
        fo__dispatch(e->fo, ch, msg);
        fo_msg_release(msg);
    }
    ch->pins--;
    fo__chan_check_idle(e->fo, ch);
}

/* After the loop reader (re)connects: every channel's subscription again. */
static void on_live_replay(void *ctx, struct lr *lr)
{
    struct neng *e = ctx;
    char subj[SUBJECT_MAX];
    for (int d = 0; d < 2; d++) {
        for (struct nchan *nc = e->with_sub[d]; nc; nc = nc->next) {
            if (!nc->lsid)
                continue;
            snprintf(subj, sizeof(subj), "%s%s", d ? PREFIX_LIVE : PREFIX_EPH, nc->ch->name);
            lr_resub(lr, subj, nc->lsid);
        }
    }
    resync_all(e); /* durable messages stored while the reader was away are read back */
}

/* -------------------------------------------------------------------- */
/* Subscriptions and getting them ready (loop thread)                     */

/* Sends the SUB for the channel's live subject on the loop reader (now, or at its next connect). */
static void subscribe(struct neng *e, struct nchan *nc)
{
    char subj[SUBJECT_MAX];
    const struct fo_chan *ch = nc->ch;
    snprintf(subj, sizeof(subj), "%s%s", ch->durable ? PREFIX_LIVE : PREFIX_EPH, ch->name);
    nc->lsid = lr_sub(e->lr, subj);
    struct nchan **head = &e->with_sub[ch->durable];
    nc->prev = NULL;
    nc->next = *head;
    if (*head)
        (*head)->prev = nc;
    *head = nc;
    e->fo->stats.upstream_subscriptions++;
}

static struct nchan **confirm_head(struct neng *e, enum nconfirm_list which)
{
    return which == NCL_QUEUE ? &e->confirm_queue : &e->confirm_batch;
}

static void confirm_list_add(struct neng *e, struct nchan *nc, enum nconfirm_list which)
{
    struct nchan **head = confirm_head(e, which);
    nc->on_list = which;
    nc->cprev = NULL;
    nc->cnext = *head;
    if (*head)
        (*head)->cprev = nc;
    *head = nc;
}

static void confirm_list_remove(struct neng *e, struct nchan *nc)
{
    if (nc->on_list == NCL_NONE)
        return;
    if (nc->cprev)
        nc->cprev->cnext = nc->cnext;
    else
        *confirm_head(e, nc->on_list) = nc->cnext;
    if (nc->cnext)
        nc->cnext->cprev = nc->cprev;
    nc->cprev = nc->cnext = NULL;
    nc->on_list = NCL_NONE;
}

static void unsubscribe(struct neng *e, struct nchan *nc)
{
    confirm_list_remove(e, nc);
    nc->ready = NR_NONE;
    nc->n_waiting = 0; /* the registry forgot them: its interest is gone */
    if (!subscribed(nc))
        return;
    lr_unsub(e->lr, nc->lsid);
    nc->lsid = 0;
    if (nc->prev)
        nc->prev->next = nc->next;
    else
        e->with_sub[nc->ch->durable] = nc->next;
    if (nc->next)
        nc->next->prev = nc->prev;
    nc->prev = nc->next = NULL;
    e->fo->stats.upstream_subscriptions--;
    if (nc->ch->durable)
        chan_forget(e, nc);
    else
        nc->gen = ++e->next_gen; /* a confirmation under way is not for the next interest */
}

static void on_confirmed(void *arg, rt_status st);

/*
 * One PING in flight at a time confirms every SUB sent before it (a batch);
 * the channels subscribed meanwhile wait on the queue for the next one. More
 * than one would make the reader's keepalive (two PINGs unanswered: drop)
 * misread a slow server. A reader that is down leaves the queue to the tick.
 */
static void confirm_kick(struct neng *e)
{
    if (e->confirm_busy || !e->confirm_queue || lr_confirm(e->lr, on_confirmed, e) != RT_OK)
        return;
    e->confirm_busy = true;
    while (e->confirm_queue) {
        struct nchan *nc = e->confirm_queue;
        confirm_list_remove(e, nc);
        confirm_list_add(e, nc, NCL_BATCH);
    }
}

/* Remembers a subscribe that waits for nc to be ready. */
static rt_status wait_add(struct nchan *nc, uint64_t op, const struct fo_sub_req *req)
{
    if (nc->n_waiting == nc->cap_waiting) {
        uint32_t cap = nc->cap_waiting ? nc->cap_waiting * 2 : 4;
        struct nwait *w = realloc(nc->waiting, cap * sizeof(*w));
        if (!w)
            return RT_NOMEM;
        nc->waiting = w;
        nc->cap_waiting = cap;
    }
    nc->waiting[nc->n_waiting++] = (struct nwait){op, req->has_since, req->since};
    return RT_OK;
}

/*
 * A resume (since) on a synced channel: RT_OK if nothing needs reading (the
 * client has this node's latest: nothing to replay, recovered), else the
 * reads start (RT_AGAIN; fo__sub_ready follows): the channel's latest when
 * since is past what this node has seen (the client saw a newer message on
 * another node), then its oldest retained seq, which decides `recovered`.
 */
static rt_status resume_start(struct neng *e, struct nchan *nc, uint64_t op, uint64_t since)
{
    uint64_t latest = nc->latest_known > nc->dispatched ? nc->latest_known : nc->dispatched;
    if (since == latest)
        return RT_OK;
    if (!conn_up(e))
        return RT_UNAVAILABLE;
    enum nreq_kind kind = since > nc->latest_known ? REQ_RESUME_LATEST : REQ_RESUME_OLDEST;
    return req_start(e, nc, kind, op, since) == RT_OK ? RT_AGAIN : RT_UNAVAILABLE;
}

/*
 * Answers the subscribes waiting for nc: st RT_OK means nc is ready (a
 * waiting resume then starts its own reads). The list is taken first:
 * answering may remove the channel's interest.
 */
static void waiting_answer(struct neng *e, struct nchan *nc, rt_status st)
{
    uint32_t n = nc->n_waiting;
    struct nwait *w = nc->waiting;
    nc->waiting = NULL;
    nc->n_waiting = nc->cap_waiting = 0;
    uint64_t gen = nc->gen;
    for (uint32_t i = 0; i < n; i++) {
        rt_status r = st;
        if (r == RT_OK && w[i].has_since && nc->gen == gen && synced(nc))
            r = resume_start(e, nc, w[i].op, w[i].since);
        if (r != RT_AGAIN)
            fo__sub_ready(e->fo, w[i].op, r == RT_OK ? RT_OK : RT_UNAVAILABLE);
    }
    free(w);
}

/* A durable channel could not be made ready: its waiting subscribes get 503. */
static void sync_failed(struct neng *e, struct nchan *nc)
{
    nc->ready = NR_NONE;
    ring_free(&nc->held);
    nc->fill_target = 0;
    waiting_answer(e, nc, RT_UNAVAILABLE);
}

/* The reader's SUB for nc is confirmed (or the reader went down first). */
static void confirm_one(struct neng *e, struct nchan *nc, rt_status st)
{
    if (!nc->ch->durable) {
        /* Lost before the server confirmed it: the subscribes that waited get
         * 503 (a retry finds the reader down and is answered at once). */
        nc->ready = st == RT_OK ? NR_READY : NR_NONE;
        waiting_answer(e, nc, st == RT_OK ? RT_OK : RT_UNAVAILABLE);
        return;
    }
    /* The subscription is in place: everything stored after the seq read now
     * arrives live, everything up to it is history. */
    if (st != RT_OK || !e->stream_ok || req_start(e, nc, REQ_SYNC, 0, 0) != RT_OK) {
        sync_failed(e, nc);
        return;
    }
    nc->ready = NR_SYNCING;
}

/*
 * Answers the channels on a confirmation list: the batch when its PONG came
 * (or the reader went down), the queue when the reader is down.
 */
static void confirm_answer(struct neng *e, enum nconfirm_list which, rt_status st)
{
    struct nchan **head = confirm_head(e, which);
    uint32_t n = 0;
    for (struct nchan *nc = *head; nc; nc = nc->cnext)
        n++;
    if (n > e->cap_confirmed) {
        void *v = realloc(e->confirmed, n * sizeof(*e->confirmed));
        if (!v) { /* confirm them again with the next PING */
            while (*head) {
                struct nchan *nc = *head;
                confirm_list_remove(e, nc);
                confirm_list_add(e, nc, NCL_QUEUE);
            }
            return;
        }
        e->confirmed = v;
        e->cap_confirmed = n;
    }
    /* A copy with generations: answering may unsubscribe (and subscribe again)
     * channels of the list; none is freed before busy_leave. */
    n = 0;
    while (*head) {
        struct nchan *nc = *head;
        confirm_list_remove(e, nc);
        e->confirmed[n].nc = nc;
        e->confirmed[n++].gen = nc->gen;
    }
    fo__busy_enter(e->fo);
    for (uint32_t i = 0; i < n; i++) {
        struct nchan *nc = e->confirmed[i].nc;
        if (nc->gen == e->confirmed[i].gen && nc->ready == NR_CONFIRMING)
            confirm_one(e, nc, st);
    }
    fo__busy_leave(e->fo);
}

/* lr_confirm's answer for the batch (loop thread, from the reader's callbacks). */
static void on_confirmed(void *arg, rt_status st)
{
    struct neng *e = arg;
    e->confirm_busy = false;
    confirm_answer(e, NCL_BATCH, st);
    confirm_kick(e);
}

/*
 * Starts making nc ready for subscribers after its SUB: the confirmation,
 * then (durable) the sync point. With the reader down an ephemeral channel
 * is ready at once (the SUB goes out on reconnect); a durable one is not.
 */
static void ready_start(struct neng *e, struct nchan *nc)
{
    bool durable = nc->ch->durable;
    if (!lr_up(e->lr) || (durable && (!conn_up(e) || !e->stream_ok))) {
        nc->ready = durable ? NR_NONE : NR_READY;
        return;
    }
    nc->ready = NR_CONFIRMING;
    confirm_list_add(e, nc, NCL_QUEUE);
    confirm_kick(e);
}

/* REQ_SYNC answered: the channel's chain starts at latest. */
static void sync_done(struct neng *e, struct fo_chan *ch, struct nchan *nc, rt_status st,
                      uint64_t latest)
{
    if (nc->ready != NR_SYNCING)
        return;
    if (st != RT_OK) {
        sync_failed(e, nc);
        return;
    }
    nc->ready = NR_READY;
    nc->dispatched = nc->latest_known = nc->tail_lo = nc->trimmed_through = latest;
    /* Live messages that came while syncing: the ones after latest go on. */
    if (nc->fill_target > latest)
        fill_start(e, nc, nc->fill_target);
    else
        nc->fill_target = 0;
    held_drain(e, ch, nc);
    waiting_answer(e, nc, RT_OK);
}

/* A resume's read answered (REQ_RESUME_*): the next read, or the answer. */
static void resume_done(struct neng *e, struct nchan *nc, struct nreq *q, rt_status st,
                        uint64_t seq)
{
    if (q->kind == REQ_RESUME_LATEST) {
        if (st == RT_OK) {
            if (nc->latest_known < seq)
                nc->latest_known = seq;
            fill_start(e, nc, seq);
            st = req_start(e, nc, REQ_RESUME_OLDEST, q->op, q->since) == RT_OK ? RT_AGAIN
                                                                               : RT_UNAVAILABLE;
        }
        if (st != RT_AGAIN)
            fo__sub_ready(e->fo, q->op, RT_UNAVAILABLE);
        return;
    }
    /* JetStream trims oldest first: a since at or past oldest - 1 lost nothing. */
    if (st == RT_OK)
        nc->trimmed_through = seq - 1;
    else if (st == RT_NOT_FOUND)
        nc->trimmed_through = nc->latest_known > nc->dispatched ? nc->latest_known : nc->dispatched;
    fo__sub_ready(e->fo, q->op, st == RT_OK || st == RT_NOT_FOUND ? RT_OK : RT_UNAVAILABLE);
}

/* A request from the loop answered, failed or timed out (req_reply, req_expire). Frees q. */
static void req_done(struct neng *e, struct nreq *q, rt_status st, uint64_t seq)
{
    if (q->kind == REQ_PROBE)
        e->probes_out--;
    struct fo_chan *ch = chan_find(e, q->name, q->name_len);
    struct nchan *nc = ch ? ch->eng : NULL;
    bool resume = q->kind == REQ_RESUME_LATEST || q->kind == REQ_RESUME_OLDEST;
    if (!nc || nc->gen != q->gen || !subscribed(nc)) {
        if (resume)
            fo__sub_ready(e->fo, q->op, RT_UNAVAILABLE); /* ignored if answered already */
        free(q);
        return;
    }
    ch->pins++;
    switch (q->kind) {
    case REQ_SYNC:
        sync_done(e, ch, nc, st, seq);
        break;
    case REQ_PROBE:
        probe_done(e, nc, st, seq);
        break;
    case REQ_RESUME_LATEST:
    case REQ_RESUME_OLDEST:
        resume_done(e, nc, q, st, seq);
        break;
    }
    ch->pins--;
    fo__chan_check_idle(e->fo, ch);
    free(q);
}

/* -------------------------------------------------------------------- */
/* Engine operations (loop thread)                                        */

static rt_status nats_chan_open(void *eng, struct fo_chan *ch)
{
    struct neng *e = eng;
    struct nchan *nc = calloc(1, sizeof(*nc));
    if (!nc)
        return RT_NOMEM;
    nc->ch = ch;
    nc->gen = ++e->next_gen;
    ch->eng = nc;
    return RT_OK;
}

static void nats_chan_close(void *eng, struct fo_chan *ch)
{
    struct neng *e = eng;
    struct nchan *nc = ch->eng;
    if (!nc)
        return;
    unsubscribe(e, nc);
    chan_forget(e, nc);
    free(nc->waiting);
    free(nc);
    ch->eng = NULL;
}

/* Without local subscribers nothing is kept (chan_close unsubscribes). */
static bool nats_chan_idle(void *eng, const struct fo_chan *ch)
{
    (void)eng;
    (void)ch;
    return true;
}

/*
 * The channel's first party: SUB on the loop reader, then (without waiting)
 * its confirmation and, for a durable channel, its sync point.
 */
static rt_status nats_interest_add(void *eng, struct fo_chan *ch)
{
    struct neng *e = eng;
    struct nchan *nc = ch->eng;
    if (!subscribed(nc))
        subscribe(e, nc);
    ready_start(e, nc);
    return RT_OK;
}

static void nats_interest_remove(void *eng, struct fo_chan *ch)
{
    unsubscribe(eng, ch->eng);
}

/*
 * Ready at once for a channel whose SUB is confirmed (and, durable, synced),
 * but a resume may still need its reads (resume_start). Otherwise the
 * subscribe waits for the confirmation and sync under way (RT_AGAIN). A
 * durable channel needs JetStream: 503 without it, unless the node already
 * follows the channel and no since was given.
 */
static rt_status nats_sub_prepare(void *eng, struct fo_chan *ch, const struct fo_sub_req *req,
                                  uint64_t op)
{
    struct neng *e = eng;
    struct nchan *nc = ch->eng;
    if (nc->ready == NR_READY) {
        if (!ch->durable || !req->has_since)
            return RT_OK;
        return resume_start(e, nc, op, req->since);
    }
    if (ch->durable && (!conn_up(e) || !e->stream_ok))
        return RT_UNAVAILABLE;
    if (nc->ready == NR_NONE) {
        ready_start(e, nc); /* after a failed sync: again */
        if (nc->ready == NR_NONE)
            return RT_UNAVAILABLE;
        if (nc->ready == NR_READY)
            return RT_OK;
    }
    return wait_add(nc, op, req) == RT_OK ? RT_AGAIN : RT_NOMEM;
}

static void nats_chan_info(void *eng, const struct fo_chan *ch, struct fo_chan_info *out)
{
    const struct neng *e = eng;
    const struct nchan *nc = ch->eng;
    memset(out, 0, sizeof(*out));
    out->latest = nc->latest_known > nc->dispatched ? nc->latest_known : nc->dispatched;
    out->oldest = nc->trimmed_through + 1;
    out->trimmed_through = nc->trimmed_through;
    memcpy(out->epoch, e->epoch, sizeof(out->epoch));
}

static rt_status nats_publish(void *eng, struct fo_chan *ch, const struct fo_pub_req *req,
                              struct fo_pub_result *res, struct fo_msg **out)
{
    struct neng *e = eng;
    *out = NULL;
    bool needs_js = ch->durable || req->msg_id;
    if (!conn_up(e) || (needs_js && !e->stream_ok) || inflight_count(e) >= INFLIGHT_MAX)
        return RT_UNAVAILABLE;
    natsMsg *m = client_msg(ch, req);
    if (!m)
        return RT_NOMEM;
    (void)res; /* every answer comes through pub_done */
    if (ch->durable)
        return pub_js(e, m, NULL, PUB_DURABLE, req);
    if (req->msg_id) {
        natsMsg *claim = claim_msg(ch, req);
        if (!claim) {
            natsMsg_Destroy(m);
            return RT_NOMEM;
        }
        return pub_js(e, claim, m, PUB_CLAIM, req);
    }
    struct npub *p = calloc(1, sizeof(*p));
    if (!p) {
        natsMsg_Destroy(m);
        return RT_NOMEM;
    }
    p->conn_id = req->conn_id;
    p->req_id = req->req_id;
    rt_status st = pub_core(e, p, m);
    if (st != RT_AGAIN)
        free(p);
    return st;
}

/* Where the cached chains continue after cursor c: 0 none, 1 found (*en, *gap_to). */
static bool cache_find(const struct nchan *nc, uint64_t c, const struct nent **en, uint64_t *gap_to)
{
    *gap_to = 0;
    const struct nring *t = &nc->tail;
    if (t->len > 0 && c >= nc->tail_lo && c < ring_at(t, t->len - 1)->seq) {
        *en = ring_at(t, ring_after(t, c));
        return true;
    }
    const struct njob *r = nc->replay;
    if (!r || c < r->after)
        return false;
    if (r->gap_to && c < r->gap_to) {
        *gap_to = r->gap_to;
        *en = r->n ? &r->v[0] : NULL;
        return true;
    }
    if (r->n == 0 || c >= r->v[r->n - 1].seq)
        return false;
    uint32_t lo = 0, hi = r->n;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (r->v[mid].seq <= c)
            lo = mid + 1;
        else
            hi = mid;
    }
    *en = &r->v[lo];
    return true;
}

static rt_status fetch_start(struct neng *e, struct nchan *nc, uint64_t after)
{
    if (nc->fetch_busy || nc->fetch_failed)
        return RT_AGAIN;
    struct njob *j = job_new(JOB_FETCH, nc);
    if (!j)
        return RT_AGAIN;
    j->after = after;
    j->until = nc->tail.len ? nc->tail_lo : nc->dispatched; /* covered from there on */
    if (j->until <= after)
        j->until = after + 1;
    nc->fetch_busy = true;
    job_submit(e, j);
    return RT_AGAIN;
}

/*
 * History after `after` from the caches; messages dropped as invalid are
 * skipped. A miss starts a read on a worker (RT_AGAIN; the result re-pumps).
 * Everything after `dispatched` comes by dispatch, so a reader there is live.
 */
static rt_status nats_fetch(void *eng, struct fo_chan *ch, uint64_t after, struct fo_fetch *out)
{
    struct neng *e = eng;
    struct nchan *nc = ch->eng;
    memset(out, 0, sizeof(*out));
    if (!ch->durable || !synced(nc))
        return RT_OK;
    uint64_t c = after;
    while (c < nc->dispatched) {
        const struct nent *en = NULL;
        uint64_t gap_to = 0;
        if (!cache_find(nc, c, &en, &gap_to))
            break;
        if (gap_to) {
            out->gap_from = after + 1;
            out->gap_to = gap_to;
        }
        if (en && en->msg) {
            out->msg = fo_msg_retain(en->msg);
            return RT_OK;
        }
        c = en ? en->seq : gap_to; /* an invalid message, or nothing after the gap */
    }
    if (c >= nc->dispatched && !out->gap_to)
        return RT_OK; /* caught up: the rest comes by dispatch */
    if (c == after)
        return fetch_start(e, nc, after);
    /* Moved past a gap or past invalid messages: the reader resumes from c. */
    out->gap_from = after + 1;
    out->gap_to = c;
    return RT_OK;
}

/* Retries failed reads, probes and the stream check. */
/* Checks (or creates) the stream on a worker, unless a check is under way. */
static void stream_check(struct neng *e)
{
    if (e->stream_busy)
        return;
    struct njob *j = job_new(JOB_STREAM, NULL);
    if (j) {
        e->stream_busy = true;
        job_submit(e, j);
    }
}

/*
 * Every tick (fo_tick, 5 a second): the stream check's retry, JetStream
 * reads past their time, SUBs waiting for a confirmation the reader cannot
 * give, then per durable channel the retries and the quiet probes.
 */
static void nats_tick(void *eng, uint64_t now_ms)
{
    struct neng *e = eng;
    (void)now_ms;
    uint64_t now = rt_mono_ms();
    if (!e->stream_ok && now >= e->stream_retry_at && conn_up(e))
        stream_check(e);
    req_expire(e, false);
    if (!e->confirm_busy && e->confirm_queue && !lr_up(e->lr))
        confirm_answer(e, NCL_QUEUE, RT_UNAVAILABLE);
    confirm_kick(e);
    /*
     * A lost last message has no successor to reveal it, so a channel quiet
     * for QUIET_MS is probed once (a JetStream read). With thousands of
     * channels that each go quiet between messages that was one read per
     * message, half of the CPU of a many-durable-channels load: the probes
     * share a budget of QUIET_RATE a second, drawn at random among the
     * channels due, so every quiet channel is still probed, later.
     */
    double refill = (double)(now - e->quiet_refill_ms) * QUIET_RATE / 1000.0;
    e->quiet_refill_ms = now;
    e->quiet_tokens = e->quiet_tokens + refill > QUIET_RATE ? QUIET_RATE : e->quiet_tokens + refill;
    uint64_t due = 0;
    for (struct nchan *nc = e->with_sub[1]; nc; nc = nc->next)
        due += !nc->quiet_probed && nc->last_live && now - nc->last_live >= QUIET_MS &&
               now >= nc->retry_at;
    fo__busy_enter(e->fo); /* a re-pump frees nothing while the list is walked */
    for (struct nchan *nc = e->with_sub[1]; nc; nc = nc->next) {
        if (!nc->ch->durable || now < nc->retry_at)
            continue;
        if (nc->probe_wanted)
            probe_start(e, nc);
        if (nc->fill_target > nc->dispatched)
            fill_start(e, nc, nc->fill_target);
        if (!nc->quiet_probed && nc->last_live && now - nc->last_live >= QUIET_MS &&
            e->quiet_tokens >= 1.0 &&
            (double)due * ((double)rand() / ((double)RAND_MAX + 1.0)) < e->quiet_tokens) {
            e->quiet_tokens -= 1.0;
            e->fo->stats.upstream_quiet_probes++;
            nc->quiet_probed = true;
            probe_start(e, nc);
        }
        if (nc->fetch_failed) {
            nc->fetch_failed = false;
            fo__chan_repump(e->fo, nc->ch);
        }
    }
    fo__busy_leave(e->fo);
}

/* What the other threads handed over, taken under the lock in one go. */
struct handed {
    struct npub *pubs;
    struct njob *jobs;
    struct nreply *replies;
    struct nbus *bus;
    uint64_t reconnects, disconnects;
    char server[256];
};

/*
 * Connection state changes seen from the loop, logged once each: connected
 * (to which server), disconnected, reconnected. Requests on a lost
 * connection fail at once; after a reconnect every durable channel is probed
 * (what was stored while away is read back) and the stream checked again.
 */
static void conn_events(struct neng *e, const struct handed *h)
{
    if (h->disconnects != e->seen_disconnects) {
        e->seen_disconnects = h->disconnects;
        rt_log(RT_LOG_WARN, "nats_disconnected", "why=\"connection lost, reconnecting\"");
        req_expire(e, true);
    }
    if (h->reconnects == e->seen_reconnects || !conn_up(e))
        return;
    rt_log(RT_LOG_INFO, e->connected_once ? "nats_reconnected" : "nats_connected", "server=%s",
           h->server);
    e->connected_once = true;
    e->seen_reconnects = h->reconnects;
    resync_all(e);
    e->stream_retry_at = 0;
    e->stream_backoff_ms = 0;
    stream_check(e);
}

static void service_take(struct neng *e, struct handed *h)
{
    pthread_mutex_lock(&e->lock);
    h->bus = e->bus_head;
    e->bus_head = e->bus_tail = NULL;
    e->bus_bytes = 0;
    e->wake_pending = false;
    h->pubs = e->pubs_done;
    h->jobs = e->jobs_done;
    h->replies = e->replies;
    e->pubs_done = e->pubs_done_tail = NULL;
    e->jobs_done = e->jobs_done_tail = NULL;
    e->replies = e->replies_tail = NULL;
    h->reconnects = e->reconnects;
    h->disconnects = e->disconnects;
    memcpy(h->server, e->server, sizeof(h->server));
    e->fo->stats.upstream_invalid += e->invalid;
    e->invalid = 0;
    pthread_mutex_unlock(&e->lock);
}

/* fo_service: runs what the other threads handed over, on the loop thread. */
static void nats_service(void *eng)
{
    struct neng *e = eng;
    struct handed h;
    service_take(e, &h);
    conn_events(e, &h);
    while (h.pubs) {
        struct npub *p = h.pubs;
        h.pubs = p->next;
        pub_done(e, p);
    }
    while (h.jobs) {
        struct njob *j = h.jobs;
        h.jobs = j->next;
        job_done(e, j);
    }
    while (h.replies) {
        struct nreply *r = h.replies;
        h.replies = r->next;
        req_reply(e, r->msg);
        natsMsg_Destroy(r->msg);
        free(r);
    }
    while (h.bus) {
        struct nbus *b = h.bus;
        h.bus = b->next;
        if (e->fo->bus_fn)
            e->fo->bus_fn(e->fo->bus_arg, b->subject, b->reply, b->data, b->len);
        free(b);
    }
}

static bool nats_ready(const void *eng)
{
    const struct neng *e = eng;
    return e->stream_ok && conn_up(e) && lr_up(e->lr);
}

/* -------------------------------------------------------------------- */
/* Create / destroy (loop thread)                                         */

static char *dup_cstr(const char *s)
{
    size_t n = strlen(s) + 1;
    char *p = malloc(n);
    if (p)
        memcpy(p, s, n);
    return p;
}

/*
 * The --nats value for a log line: each URL without its user information
 * (user:password@ or token@), which never goes to a log.
 */
static void urls_for_log(const char *urls, char *out, size_t cap)
{
    size_t o = 0;
    out[0] = 0;
    while (*urls && o + 1 < cap) {
        size_t n = strcspn(urls, ",");
        const char *scheme = strstr(urls, "://");
        const char *host = scheme && (size_t)(scheme - urls) < n ? scheme + 3 : urls;
        const char *at = NULL;
        for (const char *q = host; q < urls + n; q++)
            at = *q == '@' ? q : at;
        const char *from = at ? at + 1 : host;
        int k = snprintf(out + o, cap - o, "%s%.*s%.*s", o ? "," : "", (int)(host - urls), urls,
                         (int)(urls + n - from), from);
        o = k > 0 && o + (size_t)k < cap ? o + (size_t)k : cap - 1;
        urls += n + (urls[n] == ',');
    }
}

/* Comma-separated URLs into the options. */
static natsStatus set_servers(natsOptions *o, char *urls)
{
    const char *list[32];
    int n = 0;
    char *save = NULL;
    for (char *t = strtok_r(urls, ",", &save); t && n < 32; t = strtok_r(NULL, ",", &save))
        list[n++] = t;
    return n ? natsOptions_SetServers(o, list, n) : NATS_INVALID_ARG;
}

static natsStatus make_options(struct neng *e, const char *node_id)
{
    char *urls = dup_cstr(e->url);
    char name[128];
    snprintf(name, sizeof(name), "rtgate %s", node_id ? node_id : "");
    natsStatus s = urls ? natsOptions_Create(&e->opts) : NATS_NO_MEMORY;
    if (!s)
        s = set_servers(e->opts, urls);
    free(urls);
    if (!s)
        s = natsOptions_SetName(e->opts, name);
    if (!s)
        s = natsOptions_SetMaxReconnect(e->opts, -1);
    if (!s)
        s = natsOptions_SetReconnectWait(e->opts, 250);
    if (!s)
        s = natsOptions_SetTimeout(e->opts, 2000);
    if (!s)
        s = natsOptions_SetPingInterval(e->opts, 5000);
    if (!s)
        s = natsOptions_SetMaxPingsOut(e->opts, 2);
    if (!s)
        s = natsOptions_UseGlobalMessageDelivery(e->opts, true);
    if (!s)
        s = natsOptions_SetRetryOnFailedConnect(e->opts, true, on_connected, e);
    if (!s)
        s = natsOptions_SetReconnectedCB(e->opts, on_connected, e);
    if (!s)
        s = natsOptions_SetDisconnectedCB(e->opts, on_disconnected, e);
    if (!s)
        s = natsOptions_SetErrorHandler(e->opts, on_nats_error, e);
    return s;
}

static natsStatus connect_nats(struct neng *e)
{
    natsStatus s = natsConnection_Connect(&e->nc, e->opts);
    if (s == NATS_NOT_YET_CONNECTED) {
        char urls[1024];
        urls_for_log(e->url, urls, sizeof(urls));
        rt_log(RT_LOG_WARN, "nats_not_yet_connected", "urls=%s why=\"retrying in background\"",
               urls);
        s = NATS_OK;
    }
    if (s)
        return s;
    jsOptions jo;
    js_opts(&jo, REQ_WAIT_MS);
    jo.PublishAsync.AckHandler = on_pub_ack;
    jo.PublishAsync.AckHandlerClosure = e;
    jo.PublishAsync.MaxPending = 4 * INFLIGHT_MAX;
    jo.PublishAsync.StallWait = 1;
    return natsConnection_JetStream(&e->js, e->nc, &jo);
}

static rt_status engine_init(struct neng *e, struct fo *fo)
{
    const struct fo_config *c = &fo->cfg;
    e->fo = fo;
    e->replicas = c->nats_replicas ? c->nats_replicas : 1;
    e->url = dup_cstr(c->nats_url ? c->nats_url : "nats://127.0.0.1:4222");
    e->stream = dup_cstr(c->nats_stream && *c->nats_stream ? c->nats_stream : "RTGATE");
    const char *drop = getenv("RTGATE_NATS_DROP_EVERY"); /* tests only: docs/nats.md */
    e->drop_every = drop ? strtoull(drop, NULL, 10) : 0;
    rt_htab_init(&e->inflight);
    rt_htab_init(&e->reqs);
    atomic_init(&e->up, false);
    pthread_mutex_init(&e->send_lock, NULL);
    pthread_cond_init(&e->send_cond, NULL);
    pthread_mutex_init(&e->lock, NULL);
    pthread_mutex_init(&e->jobs_lock, NULL);
    pthread_cond_init(&e->jobs_cond, NULL);
    return e->url && e->stream ? RT_OK : RT_NOMEM;
}

/* The reply subscription of the JetStream reads sent from the loop (inbox.*). */
static natsStatus inbox_open(struct neng *e)
{
    natsInbox *inbox = NULL;
    natsStatus s = natsInbox_Create(&inbox);
    if (s != NATS_OK)
        return s;
    size_t n = strlen(inbox);
    e->inbox = malloc(n + 3);
    if (!e->inbox) {
        natsInbox_Destroy(inbox);
        return NATS_NO_MEMORY;
    }
    memcpy(e->inbox, inbox, n + 1);
    natsInbox_Destroy(inbox);
    char subj[128];
    snprintf(subj, sizeof(subj), "%s.*", e->inbox);
    return natsConnection_Subscribe(&e->inbox_sub, e->nc, subj, on_inbox_reply, e);
}

/*
 * The loop reader of every channel's live subject. It takes nats:// URLs
 * only: anything else (tls://) is an error at start, never a silent fallback.
 */
static rt_status reader_open(struct neng *e, struct fo *fo)
{
    char name[160], urls[1024];
    snprintf(name, sizeof(name), "rtgate-live %s", fo->cfg.node_id ? fo->cfg.node_id : "");
    struct lr_hooks hooks = {e, on_live_msg, on_live_replay};
    rt_status st = fo->cfg.uv_loop ? lr_create(fo->cfg.uv_loop, e->url, name,
                                               fo->cfg.nats_read_window_ms, &hooks, &e->lr)
                                   : RT_INVAL;
    if (st == RT_INVAL) {
        urls_for_log(e->url, urls, sizeof(urls));
        rt_log(RT_LOG_ERROR, "nats_url_unsupported",
               "urls=%s why=\"the loop reader of live messages takes nats://host[:port] URLs "
               "(with user:password@ or token@); tls:// is not supported yet\"",
               urls);
    }
    return st;
}

static void nats_destroy(void *eng);

static rt_status nats_create(struct fo *fo, void **out)
{
    struct neng *e = calloc(1, sizeof(*e));
    if (!e)
        return RT_NOMEM;
    *out = e;
    if (engine_init(e, fo) != RT_OK)
        goto err;
    if (reader_open(e, fo) != RT_OK)
        goto err;
    nats_SetMessageDeliveryPoolSize(2);
    natsStatus s = make_options(e, fo->cfg.node_id);
    if (!s)
        s = connect_nats(e);
    if (!s)
        s = inbox_open(e);
    if (s) {
        char urls[1024];
        urls_for_log(e->url, urls, sizeof(urls));
        rt_log(RT_LOG_ERROR, "nats_connect_failed", "urls=%s error=\"%s\"", urls,
               natsStatus_GetText(s));
        goto err;
    }
    for (; e->n_workers < N_WORKERS; e->n_workers++)
        if (pthread_create(&e->workers[e->n_workers], NULL, worker_main, e) != 0)
            goto err;
    if (pthread_create(&e->sender, NULL, sender_main, e) != 0)
        goto err;
    e->sender_started = true;
    /* Before the loop runs, the one time the loop thread asks nats.c. The
     * stream is checked on a worker, retried with backoff until it works: a
     * slow JetStream at start never stops the gateway (/readyz says false
     * meanwhile). */
    if (natsConnection_Status(e->nc) == NATS_CONN_STATUS_CONNECTED) {
        char server[256];
        connected_server(e->nc, server, sizeof(server));
        atomic_store(&e->up, true);
        rt_log(RT_LOG_INFO, "nats_connected", "server=%s", server);
        e->connected_once = true;
        pthread_mutex_lock(&e->lock);
        e->seen_reconnects = e->reconnects;
        pthread_mutex_unlock(&e->lock);
        stream_check(e);
    }
    return RT_OK;
err:
    nats_destroy(e);
    *out = NULL;
    return RT_UNAVAILABLE;
}

/* Runs what is queued for the sender, then stops it; drops what it never took. */
static void stop_sender(struct neng *e)
{
    pthread_mutex_lock(&e->send_lock);
    e->send_stop = true;
    pthread_cond_signal(&e->send_cond);
    pthread_mutex_unlock(&e->send_lock);
    if (e->sender_started)
        pthread_join(e->sender, NULL);
    while (e->sends) { /* only if it never started */
        struct nsend *s = e->sends;
        e->sends = s->next;
        natsMsg_Destroy(s->msg);
        if (s->kind == SEND_CORE)
            free(s->pub); /* JS: in inflight, freed with it */
        if (s->kind == SEND_UNSUB)
            free(s->bus);
        else if (!s->embedded)
            free(s);
    }
}

static void stop_workers(struct neng *e)
{
    pthread_mutex_lock(&e->jobs_lock);
    e->stopping = true;
    pthread_cond_broadcast(&e->jobs_cond);
    pthread_mutex_unlock(&e->jobs_lock);
    for (int i = 0; i < e->n_workers; i++)
        pthread_join(e->workers[i], NULL);
    while (e->jobs) {
        struct njob *j = e->jobs;
        e->jobs = j->next;
        job_free(j);
    }
}

static void inflight_free(struct rt_hnode *n, void *arg)
{
    (void)arg;
    struct npub *p = FO__CONTAINER(n, struct npub, node.h);
    natsMsg_Destroy(p->eph);
    free(p);
}

/* What the other threads left behind, once they are all gone, and the requests. */
static void free_handoff(struct neng *e)
{
    while (e->reqs_oldest) {
        struct nreq *q = e->reqs_oldest;
        req_unlink(e, q);
        free(q);
    }
    rt_htab_free(&e->reqs);
    while (e->replies) {
        struct nreply *r = e->replies;
        e->replies = r->next;
        natsMsg_Destroy(r->msg);
        free(r);
    }
    while (e->bus_head) {
        struct nbus *b = e->bus_head;
        e->bus_head = b->next;
        free(b);
    }
    while (e->pubs_done) {
        struct npub *p = e->pubs_done;
        e->pubs_done = p->next;
        natsMsg_Destroy(p->eph);
        free(p);
    }
    while (e->jobs_done) {
        struct njob *j = e->jobs_done;
        e->jobs_done = j->next;
        job_free(j);
    }
    rt_htab_each(&e->inflight, inflight_free, NULL);
    rt_htab_free(&e->inflight);
}

/*
 * After every channel was closed. Stops the workers, closes the connection
 * and waits for nats.c's threads (nats_CloseAndWait), so no callback can run
 * when the engine's memory goes.
 */
static void nats_destroy(void *eng)
{
    struct neng *e = eng;
    if (!e)
        return;
    lr_destroy(e->lr);
    e->lr = NULL;
    stop_workers(e);
    stop_sender(e);
    /* Drain, then close: with the library's delivery pool, messages still
     * queued for subscriptions closed just before (a burst at shutdown) were
     * never freed when nats_CloseAndWait stopped the pool (LeakSanitizer, 2
     * runs in 10 under a flood); a drain lets the pool work through them. */
    if (e->nc && natsConnection_DrainTimeout(e->nc, 2000) == NATS_OK) {
        for (int i = 0; i < 300 && !natsConnection_IsClosed(e->nc); i++)
            nats_Sleep(10);
    }
    if (e->nc)
        natsConnection_Close(e->nc);
    natsSubscription_Destroy(e->inbox_sub);
    jsCtx_Destroy(e->js);
    natsConnection_Destroy(e->nc);
    natsOptions_Destroy(e->opts);
    nats_CloseAndWait(5000);
    free_handoff(e);
    pthread_mutex_destroy(&e->lock);
    pthread_mutex_destroy(&e->jobs_lock);
    pthread_cond_destroy(&e->jobs_cond);
    pthread_mutex_destroy(&e->send_lock);
    pthread_cond_destroy(&e->send_cond);
    free(e->confirmed);
    free(e->inbox);
    free(e->url);
    free(e->stream);
    free(e);
}

/* -------------------------------------------------------------------- */
/* The bus (fanout.h): plain subjects for other modules (loop thread)       */

/* The handle is made here; the sender thread subscribes (and later unsubscribes) in order. */
static void *nats_bus_subscribe(void *eng, const char *subject)
{
    struct neng *e = eng;
    size_t n = strlen(subject) + 1;
    struct nbus_sub *b = calloc(1, sizeof(*b) + n);
    if (!b)
        return NULL;
    memcpy(b->subject, subject, n);
    b->sub_cmd = (struct nsend){.kind = SEND_SUB, .embedded = true, .bus = b};
    b->unsub_cmd = (struct nsend){.kind = SEND_UNSUB, .embedded = true, .bus = b};
    if (send_push(e, &b->sub_cmd) != RT_OK) {
        free(b);
        return NULL;
    }
    return b;
}

/* Frees the handle (on the sender thread, after its subscribe). */
static void nats_bus_unsubscribe(void *eng, void *handle)
{
    struct nbus_sub *b = handle;
    send_push(eng, &b->unsub_cmd);
}

/* Queued for the sender thread; nats.c buffers it while it reconnects. */
static rt_status nats_bus_publish(void *eng, const char *subject, const char *reply,
                                  const uint8_t *data, size_t len)
{
    return send_raw(eng, subject, reply, data, len) == RT_OK ? RT_OK : RT_UNAVAILABLE;
}

static void nats_stats(const void *eng, struct fo_stats *out)
{
    const struct neng *e = eng;
    struct lr_stats ls;
    lr_get_stats(e->lr, &ls);
    out->reader_up = lr_up(e->lr);
    out->reader_connects = ls.connects;
    out->reader_reads = ls.wakeups;
    out->reader_messages = ls.msgs;
    out->reader_bad = ls.bad;
    out->reader_confirm_failures = ls.confirm_failures;
}

static uint64_t nats_bus_generation(const void *eng)
{
    struct neng *e = (struct neng *)eng; /* the lock is not part of the value */
    pthread_mutex_lock(&e->lock);
    uint64_t g = e->reconnects + e->bus_lost;
    pthread_mutex_unlock(&e->lock);
    return g;
}

const struct fo_engine_ops fo__engine_nats = {
    .name = "nats",
    .create = nats_create,
    .destroy = nats_destroy,
    .chan_open = nats_chan_open,
    .chan_close = nats_chan_close,
    .chan_idle = nats_chan_idle,
    .interest_add = nats_interest_add,
    .interest_remove = nats_interest_remove,
    .publish = nats_publish,
    .chan_info = nats_chan_info,
    .fetch = nats_fetch,
    .tick = nats_tick,
    .sub_prepare = nats_sub_prepare,
    .service = nats_service,
    .ready = nats_ready,
    .bus_subscribe = nats_bus_subscribe,
    .bus_unsubscribe = nats_bus_unsubscribe,
    .bus_publish = nats_bus_publish,
    .bus_generation = nats_bus_generation,
    .stats = nats_stats,
};
