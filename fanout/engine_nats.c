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
 *     same subject); the node subscribes to that with core NATS. The chain of
 *     Last-Sequence values shows a missed message, which is then read back
 *     with DirectGet (NextBySubject), so dispatch per channel stays exact.
 *   - History reads for catch-up and resume go through a small per-channel
 *     cache (the tail of recent messages and the last batch read back) and,
 *     on a miss, a worker thread doing DirectGets (fetch answers RT_AGAIN,
 *     the result re-pumps the channel's paused subscriptions).
 *
 * Threads. nats.c runs subscription callbacks, publish acks and connection
 * events on its own threads; this file's workers run blocking JetStream
 * requests. None of them touch the registry: they hand over through `lock`
 * (a bounded ring of live messages plus lists of finished publishes and
 * jobs) and call fo_config.wake once per batch; fo_service then runs
 * nats_service on the loop thread. Fields marked {lock} belong to the lock,
 * {jobs_lock} to the worker queue, everything else to the loop thread.
 */
#include "fanout_int.h"
#include "nats_live.h"
#include "nats_security.h"

#include <nats/nats.h>
#include <pthread.h>
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

#define HANDOFF_CAP   65536u /* live messages waiting for the loop */
#define SERVICE_BATCH 4096u  /* live messages per nats_service round */
#define TAIL_MAX      256u   /* recent messages cached per durable channel with interest */
#define FETCH_BATCH   64u    /* messages per history read */
#define FILL_BATCH    512u   /* messages per hole fill */
#define HELD_MAX      8192u  /* live messages held per channel while a hole is filled */
#define INFLIGHT_MAX  16384u /* client publishes waiting for JetStream */
#define N_WORKERS     2
#define REQ_WAIT_MS   2000        /* JetStream requests on a worker */
#define LOOP_WAIT_MS  1000        /* JetStream requests that block the loop (first subscriber) */
#define PUB_WAIT_MS   5000        /* JetStream publish acknowledgement */
#define RETRY_MS      500u        /* failed reads and probes are retried after this */
#define QUIET_MS      2000u       /* a durable channel quiet this long is probed once */
#define QUIET_RATE    100u        /* quiet probes a second at most (and burst) */
#define BUS_MAX_BYTES (64u << 20) /* bus messages waiting for the loop; beyond: lost, resync */
#define SUBJECT_MAX   (sizeof(KV_PREFIX) + PROTO_CHANNEL_MAX + 1 + 2 * PROTO_MSG_ID_MAX + 8)

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

/* A message from a subscription, for the loop. Payload NONE: invalid. */
struct nlive {
    struct fo_msg *msg;
    uint64_t seq, prev; /* durable */
};

/* A client publish waiting for its JetStream acknowledgement. */
struct npub {
    struct fo_hnode node; /* in inflight, key = the bytes of `key` */
    natsMsg *key;         /* the message handed to js_PublishMsgAsync */
    struct npub *next;    /* pubs_done */
    bool claim;           /* ephemeral msg_id: claim in the KV bucket first */
    natsMsg *eph;         /* claim: the message to publish once the id is new */
    uint64_t conn_id;
    int64_t req_id;
    natsStatus status; /* {lock} results */
    int err_code;
    uint64_t seq;
    bool dup;
};

/* A bus message for the loop (fo_bus_*): subject, reply and data in one block. */
struct nbus {
    struct nbus *next;
    const char *subject, *reply; /* into data's block; reply may be NULL */
    size_t len;
    uint8_t data[];
};

enum njob_kind { JOB_FETCH, JOB_FILL, JOB_PROBE, JOB_STREAM };

/* Blocking JetStream work for a worker thread; the result comes back whole. */
struct njob {
    struct njob *next;
    enum njob_kind kind;
    uint64_t gen;   /* the channel's generation: a stale result is dropped */
    uint64_t after; /* FETCH, FILL: read the channel's messages after this seq */
    uint64_t until; /* FETCH: stop at a seq >= until; FILL: the last seq wanted */
    rt_status st;
    uint64_t gap_to;  /* FETCH: `after` was gone: seqs after+1..gap_to are lost */
    uint64_t latest;  /* PROBE: the channel's latest seq */
    int64_t created;  /* STREAM: the stream's creation time (ns) */
    bool reached_end; /* FETCH, FILL: no message after the last one */
    struct nent *v;
    uint32_t n;
    size_t name_len;
    char name[]; /* the channel */
};

/* Engine state of one channel (fo_chan.eng). */
struct nchan {
    struct fo_chan *ch;
    natsSubscription *sub;     /* NULL without local interest (or with lsid) */
    uint64_t lsid;             /* ephemeral, loop reader: the subscription's sid, else 0 */
    struct nchan *prev, *next; /* engine's list of channels with a subscription */
    uint64_t gen;              /* changes when interest goes */
    /* Durable only. */
    bool synced;           /* dispatched is known */
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
    struct lr *lr; /* loop reader of ephemeral channels (nats_live.h), or NULL */
    jsCtx *js;
    char epoch[PROTO_EPOCH_MAX + 1];
    int64_t created;
    bool stream_ok, stream_busy, was_up;
    uint64_t stream_retry_at;
    uint64_t next_gen;
    uint64_t seen_reconnects;
    struct nchan *with_sub[2]; /* channels with a subscription: [0] ephemeral, [1] durable */
    struct nlive *batch;       /* loop's copy of a ring batch */

    pthread_mutex_t lock;
    struct nlive *ring; /* {lock} */
    uint32_t r_head, r_len;
    struct rt_htab inflight; /* {lock} npub by natsMsg pointer */
    struct npub *pubs_done, *pubs_done_tail;
    struct njob *jobs_done, *jobs_done_tail;
    bool wake_pending;
    bool missed;         /* a durable live message was dropped: probe every channel */
    uint64_t reconnects; /* connected / reconnected events */
    uint64_t dropped, invalid;
    uint64_t drop_every, drop_count; /* test hook RTGATE_NATS_DROP_EVERY */
    uint64_t live_drop_count;        /* the same hook in the loop reader (loop thread) */
    double quiet_tokens;             /* quiet probes allowed now (QUIET_RATE bucket) */
    uint64_t quiet_refill_ms;
    struct nbus *bus_head, *bus_tail; /* bus messages for the loop */
    size_t bus_bytes;
    uint64_t bus_lost; /* times bus messages were lost: part of the generation */

    pthread_mutex_t jobs_lock;
    pthread_cond_t jobs_cond;
    struct njob *jobs, *jobs_tail; /* {jobs_lock} */
    bool stopping;
    pthread_t workers[N_WORKERS];
    int n_workers;
};

/* Has a subscription to its live subject: nats.c's, or the loop reader's. */
static bool subscribed(const struct nchan *nc)
{
    return nc->sub || nc->lsid;
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

static struct fo_msg *msg_from_nats(struct neng *e, natsMsg *m, const char *channel, size_t len,
                                    bool durable, uint64_t seq, bool *invalid)
{
    struct nhdr h = {m, NULL, 0};
    int n = natsMsg_GetDataLength(m);
    return msg_make(e, &h, (const uint8_t *)natsMsg_GetData(m), n > 0 ? (size_t)n : 0, channel, len,
                    durable, seq, invalid);
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

/*
 * Queues a live message for the loop. A full ring drops the oldest ephemeral
 * message (or the new one if the oldest is durable); a dropped durable one
 * is read back from JetStream after a probe (`missed`).
 */
static void handoff_push(struct neng *e, struct nlive it)
{
    struct fo_msg *drop = NULL;
    pthread_mutex_lock(&e->lock);
    if (e->drop_every && ++e->drop_count % e->drop_every == 0) {
        drop = it.msg; /* test hook: lost on the way, silently */
        it.msg = NULL;
    } else if (e->r_len == HANDOFF_CAP) {
        struct nlive *oldest = &e->ring[e->r_head];
        if (!oldest->msg->durable) {
            drop = oldest->msg;
            e->r_head = (e->r_head + 1) % HANDOFF_CAP;
            e->r_len--;
        } else {
            drop = it.msg;
            it.msg = NULL;
            e->missed = e->missed || drop->durable;
        }
        e->dropped += drop->durable ? 0 : 1;
    }
    if (it.msg) {
        e->ring[(e->r_head + e->r_len) % HANDOFF_CAP] = it;
        e->r_len++;
    }
    bool w = wake_locked(e);
    pthread_mutex_unlock(&e->lock);
    fo_msg_release(drop); /* never shared: freeing here is safe */
    if (w)
        wake(e);
}

/* Subscription callback (nats.c delivery thread): rtgate.eph.X or rtgate.live.X. */
static void on_nats_msg(natsConnection *nc, natsSubscription *sub, natsMsg *m, void *closure)
{
    (void)nc;
    (void)sub;
    struct neng *e = closure;
    const char *subj = natsMsg_GetSubject(m);
    bool durable = strncmp(subj, PREFIX_LIVE, sizeof(PREFIX_LIVE) - 1) == 0;
    const char *channel = subj + (durable ? sizeof(PREFIX_LIVE) : sizeof(PREFIX_EPH)) - 1;
    struct nlive it = {NULL, 0, 0};
    bool invalid = false;
    bool ok = !durable ||
              (hdr_u64(m, H_SEQ, &it.seq) && hdr_u64(m, H_LAST_SEQ, &it.prev) && it.seq > it.prev);
    if (ok)
        it.msg = msg_from_nats(e, m, channel, strlen(channel), durable, it.seq, &invalid);
    natsMsg_Destroy(m);
    if (!ok || invalid || !it.msg) {
        pthread_mutex_lock(&e->lock);
        e->invalid++;
        pthread_mutex_unlock(&e->lock);
    }
    if (it.msg && (durable || !invalid))
        handoff_push(e, it);
    else
        fo_msg_release(it.msg);
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

/* Connected / reconnected (nats.c thread). */
static void on_connected(natsConnection *nc, void *closure)
{
    (void)nc;
    struct neng *e = closure;
    pthread_mutex_lock(&e->lock);
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
    pthread_mutex_lock(&e->lock);
    bool w = wake_locked(e);
    pthread_mutex_unlock(&e->lock);
    if (w)
        wake(e);
}

/* Asynchronous errors (nats.c thread): a slow consumer lost live messages. */
static void on_nats_error(natsConnection *nc, natsSubscription *sub, natsStatus err, void *closure)
{
    (void)nc;
    (void)sub;
    struct neng *e = closure;
    rt_log(RT_LOG_WARN, "nats_async_error", "error=\"%s\"", natsStatus_GetText(err));
    if (err != NATS_SLOW_CONSUMER)
        return;
    pthread_mutex_lock(&e->lock);
    e->missed = true;
    e->bus_lost++; /* the bus's subscribers resync too */
    bool w = wake_locked(e);
    pthread_mutex_unlock(&e->lock);
    if (w)
        wake(e);
}

/* -------------------------------------------------------------------- */
/* JetStream requests (worker threads; the loop for a first subscriber)    */

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

/* The stream's last seq over all channels. */
static rt_status stream_last_seq(struct neng *e, int64_t wait, uint64_t *out)
{
    jsOptions o;
    js_opts(&o, wait);
    jsStreamInfo *si = NULL;
    jsErrCode ec = 0;
    natsStatus s = js_GetStreamInfo(&si, e->js, e->stream, &o, &ec);
    if (s == NATS_OK)
        *out = si->State.LastSeq;
    jsStreamInfo_Destroy(si);
    return s == NATS_OK ? RT_OK : RT_UNAVAILABLE;
}

/*
 * The channel's latest seq. A channel with nothing retained answers the
 * stream's last seq: every seq of the channel is at or below it, and a
 * `since` up to it is then "not recovered" rather than refused.
 */
static rt_status channel_latest(struct neng *e, const char *channel, int64_t wait, uint64_t *out)
{
    char subj[SUBJECT_MAX];
    dur_subject(subj, sizeof(subj), channel);
    jsOptions o;
    js_opts(&o, wait);
    jsDirectGetMsgOptions d;
    jsDirectGetMsgOptions_Init(&d);
    d.LastBySubject = subj;
    natsMsg *m = NULL;
    rt_status st = status_of(js_DirectGetMsg(&m, e->js, e->stream, &o, &d));
    if (st == RT_OK && !hdr_u64(m, H_SEQ, out))
        st = RT_UNAVAILABLE;
    natsMsg_Destroy(m);
    return st == RT_NOT_FOUND ? stream_last_seq(e, wait, out) : st;
}

/* A read-back message as a chain entry. */
static rt_status entry_of(struct neng *e, natsMsg *m, const char *channel, size_t len,
                          struct nent *out)
{
    if (!hdr_u64(m, H_SEQ, &out->seq))
        return RT_UNAVAILABLE;
    bool invalid = false;
    out->prev = 0;
    out->msg = msg_from_nats(e, m, channel, len, true, out->seq, &invalid);
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

static rt_status stream_setup(struct neng *e, int64_t *created);

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
    case JOB_PROBE:
        j->st = channel_latest(e, j->name, REQ_WAIT_MS, &j->latest);
        break;
    case JOB_STREAM:
        j->st = stream_setup(e, &j->created);
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
        if (natsConnection_Status(e->nc) == NATS_CONN_STATUS_CONNECTED)
            job_run(e, j);
        else
            j->st = RT_UNAVAILABLE;
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

/* Creates the stream, or checks (and updates) an existing one. *created: its birth. */
static rt_status stream_setup(struct neng *e, int64_t *created)
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
        rt_log(RT_LOG_ERROR, "nats_stream_failed", "stream=%s error=\"%s\" code=%d", e->stream,
               natsStatus_GetText(s), (int)ec);
        st = RT_UNAVAILABLE;
    } else if (st != RT_OK) {
        rt_log(RT_LOG_ERROR, "nats_stream_unusable",
               "stream=%s why=\"needs subjects %s>, allow_direct and republish %s> -> %s>\"",
               e->stream, PREFIX_DUR, PREFIX_DUR, PREFIX_LIVE);
    }
    if (st == RT_OK)
        *created = si->Created;
    jsStreamInfo_Destroy(si);
    if (st == RT_OK)
        bucket_setup(e);
    return st;
}

/* -------------------------------------------------------------------- */
/* Channels: chain, dispatch and hole fill (loop thread)                  */

static bool conn_up(const struct neng *e)
{
    return natsConnection_Status(e->nc) == NATS_CONN_STATUS_CONNECTED;
}

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
    nc->synced = false;
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
    if (nc->fill_busy || nc->fill_target <= nc->dispatched || !subscribed(nc))
        return;
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
    /* Too much behind one hole: read this one back from JetStream too. */
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
 * A live message of a durable channel. It continues the chain when its
 * Last-Sequence is at or below what was dispatched; a higher one means
 * messages were missed: they are read back first, this one waits.
 */
static void durable_live(struct neng *e, struct fo_chan *ch, struct nchan *nc, struct nlive *it)
{
    nc->last_live = rt_mono_ms();
    nc->quiet_probed = false;
    if (!nc->synced || it->seq <= nc->dispatched) {
        fo_msg_release(it->msg);
        return;
    }
    if (nc->fill_busy || nc->held.len > 0 || it->prev > nc->dispatched) {
        held_push(e, nc, (struct nent){it->seq, it->prev, it->msg});
        held_drain(e, ch, nc);
        return;
    }
    accept_msg(e, ch, nc, it->seq, it->msg);
    fo_msg_release(it->msg);
}

static struct fo_chan *chan_find(struct neng *e, const char *name, size_t len)
{
    struct fo_hnode *n = fo__htab_find(&e->fo->chans, name, len);
    return n ? FO__CONTAINER(n, struct fo_chan, node) : NULL;
}

/* One live message from the ring. The channel is pinned while it is used. */
static void live_one(struct neng *e, struct nlive *it)
{
    struct fo_msg *m = it->msg;
    struct fo_chan *ch = chan_find(e, m->channel, m->channel_len);
    struct nchan *nc = ch ? ch->eng : NULL;
    if (!nc || !subscribed(nc) || ch->durable != m->durable) {
        fo_msg_release(m);
        return;
    }
    ch->pins++;
    if (m->durable) {
        durable_live(e, ch, nc, it);
    } else {
        fo__dispatch(e->fo, ch, m);
        fo_msg_release(m);
    }
    ch->pins--;
    fo__chan_check_idle(e->fo, ch);
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

static void probe_done(struct neng *e, struct nchan *nc, struct njob *j)
{
    nc->probe_busy = false;
    if (j->st != RT_OK) {
        nc->probe_wanted = true;
        nc->retry_at = rt_mono_ms() + RETRY_MS;
        return;
    }
    if (nc->latest_known < j->latest)
        nc->latest_known = j->latest;
    fill_start(e, nc, j->latest);
}

static void probe_start(struct neng *e, struct nchan *nc)
{
    if (nc->probe_busy || !nc->synced) {
        nc->probe_wanted = !nc->probe_busy && nc->synced;
        return;
    }
    struct njob *j = job_new(JOB_PROBE, nc);
    if (!j) {
        nc->probe_wanted = true;
        return;
    }
    nc->probe_busy = true;
    nc->probe_wanted = false;
    job_submit(e, j);
}

/* Every durable channel with interest: look for messages missed while away. */
static void resync_all(struct neng *e)
{
    for (struct nchan *nc = e->with_sub[1]; nc; nc = nc->next)
        probe_start(e, nc);
}

static void stream_done(struct neng *e, struct njob *j)
{
    e->stream_busy = false;
    if (j->st != RT_OK) {
        e->stream_retry_at = rt_mono_ms() + RETRY_MS;
        return;
    }
    if (e->created && j->created != e->created)
        rt_log(RT_LOG_ERROR, "nats_stream_recreated",
               "stream=%s why=\"epoch changed; restart the gateways so that cursors follow\"",
               e->stream);
    e->created = j->created;
    epoch_of(e->created, e->epoch);
    if (!e->stream_ok)
        rt_log(RT_LOG_INFO, "nats_ready", "stream=%s epoch=%s", e->stream, e->epoch);
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
        if (j->kind == JOB_FILL)
            fill_done(e, ch, nc, j);
        else
            probe_done(e, nc, j);
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

/* An acknowledged (or failed) client publish: answer it. */
static void pub_done(struct neng *e, struct npub *p)
{
    struct fo_pub_result res;
    memset(&res, 0, sizeof(res));
    res.durable = !p->claim;
    if (!p->claim && p->status == NATS_OK) {
        res.seq = p->seq;
        res.dup = p->dup;
    } else if (p->claim && p->status == NATS_OK) {
        if (natsConnection_PublishMsg(e->nc, p->eph) != NATS_OK)
            pub_answer_error(&res, false, "NATS unavailable");
    } else if (p->claim && p->err_code == JSStreamWrongLastSequenceErr) {
        res.dup = true;
    } else {
        pub_answer_error(&res, !p->claim, "JetStream did not acknowledge");
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

/* Hands m to JetStream; the ack comes back to on_pub_ack. Takes m (and eph). */
static rt_status pub_async(struct neng *e, natsMsg *m, natsMsg *eph, const struct fo_pub_req *req)
{
    struct npub *p = calloc(1, sizeof(*p));
    if (!p) {
        natsMsg_Destroy(m);
        natsMsg_Destroy(eph);
        return RT_NOMEM;
    }
    p->key = m;
    p->node.key = (const char *)&p->key;
    p->node.key_len = sizeof(p->key);
    p->claim = eph != NULL;
    p->eph = eph;
    p->conn_id = req->conn_id;
    p->req_id = req->req_id;
    pthread_mutex_lock(&e->lock);
    rt_status st = fo__htab_insert(&e->inflight, &p->node);
    pthread_mutex_unlock(&e->lock);
    jsPubOptions po;
    jsPubOptions_Init(&po);
    po.MaxWait = PUB_WAIT_MS;
    po.ExpectNoMessage = p->claim;
    if (st == RT_OK && js_PublishMsgAsync(e->js, &m, &po) == NATS_OK)
        return RT_AGAIN;
    pthread_mutex_lock(&e->lock);
    if (st == RT_OK && fo__htab_find(&e->inflight, (const char *)&p->key, sizeof(p->key)))
        rt_htab_remove(&e->inflight, &p->node.h);
    pthread_mutex_unlock(&e->lock);
    natsMsg_Destroy(m);
    natsMsg_Destroy(eph);
    free(p);
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

/* rtgate.eph.X from the loop reader: dispatched at once, no hand-over. */
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
 * hand-over. A durable one goes through the same chain checks as one from
 * the ring (durable_live): a missing seq is read back from JetStream.
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
    struct nlive it = {NULL, 0, 0};
    if (durable &&
        !(hget_u64(&h, H_SEQ, &it.seq) && hget_u64(&h, H_LAST_SEQ, &it.prev) && it.seq > it.prev)) {
        e->fo->stats.upstream_invalid++;
        return;
    }
    if (durable && e->drop_every && ++e->live_drop_count % e->drop_every == 0)
        return; /* test hook: lost on the way, silently */
    bool invalid = false;
    it.msg = msg_make(e, &h, m->data, m->data_len, name, len, durable, it.seq, &invalid);
    if (!it.msg || invalid)
        e->fo->stats.upstream_invalid++;
    if (!it.msg || (invalid && !durable)) { /* a durable one keeps its seq in the chain */
        fo_msg_release(it.msg);
        return;
    }
    ch->pins++;
    if (durable) {
        durable_live(e, ch, nc, &it);
    } else {
        fo__dispatch(e->fo, ch, it.msg);
        fo_msg_release(it.msg);
    }
    ch->pins--;
    fo__chan_check_idle(e->fo, ch);
}

/* After the loop reader (re)connects: every ephemeral subscription again. */
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
/* Subscriptions (loop thread)                                            */

static rt_status subscribe(struct neng *e, struct nchan *nc)
{
    char subj[SUBJECT_MAX];
    const struct fo_chan *ch = nc->ch;
    snprintf(subj, sizeof(subj), "%s%s", ch->durable ? PREFIX_LIVE : PREFIX_EPH, ch->name);
    if (e->lr) {
        nc->lsid = lr_sub(e->lr, subj);
    } else if (natsConnection_Subscribe(&nc->sub, e->nc, subj, on_nats_msg, e) != NATS_OK) {
        nc->sub = NULL;
        return RT_UNAVAILABLE;
    }
    struct nchan **head = &e->with_sub[ch->durable];
    nc->prev = NULL;
    nc->next = *head;
    if (*head)
        (*head)->prev = nc;
    *head = nc;
    e->fo->stats.upstream_subscriptions++;
    return RT_OK;
}

static void unsubscribe(struct neng *e, struct nchan *nc)
{
    if (!subscribed(nc))
        return;
    if (nc->lsid) {
        lr_unsub(e->lr, nc->lsid);
        nc->lsid = 0;
    } else {
        natsSubscription_Unsubscribe(nc->sub);
        natsSubscription_Destroy(nc->sub);
        nc->sub = NULL;
    }
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
}

/*
 * First interest in a durable channel: subscribe to its live subject, make
 * sure the server has the subscription (flush), then read the latest seq.
 * Everything stored after that point arrives live; everything up to it is
 * history. Blocks the loop for two round trips.
 */
static rt_status chan_sync(struct neng *e, struct nchan *nc)
{
    if (!conn_up(e) || !e->stream_ok)
        return RT_UNAVAILABLE;
    if (!subscribed(nc) && subscribe(e, nc) != RT_OK)
        return RT_UNAVAILABLE;
    /* The subscription must be in place when the latest seq is read. With
     * nats.c's subscription no flush is needed: the request below follows the
     * SUB on the same connection, and the server handles a connection's
     * messages in order. The loop reader's SUB is on another connection: a
     * PING/PONG on it confirms it first. */
    if (nc->lsid && lr_flush(e->lr, LOOP_WAIT_MS) != RT_OK) {
        unsubscribe(e, nc);
        return RT_UNAVAILABLE;
    }
    uint64_t latest = 0;
    if (channel_latest(e, nc->ch->name, LOOP_WAIT_MS, &latest) != RT_OK) {
        unsubscribe(e, nc);
        return RT_UNAVAILABLE;
    }
    nc->synced = true;
    nc->dispatched = nc->latest_known = nc->tail_lo = latest;
    nc->trimmed_through = latest;
    return RT_OK;
}

/* The oldest retained seq of the channel decides whether `since` can be replayed whole. */
static rt_status chan_trim_point(struct neng *e, struct nchan *nc)
{
    natsMsg *m = NULL;
    rt_status st = direct_next(e, nc->ch->name, 0, LOOP_WAIT_MS, &m);
    uint64_t oldest = 0;
    if (st == RT_OK && !hdr_u64(m, H_SEQ, &oldest))
        st = RT_UNAVAILABLE;
    natsMsg_Destroy(m);
    if (st == RT_NOT_FOUND) {
        nc->trimmed_through = nc->latest_known > nc->dispatched ? nc->latest_known : nc->dispatched;
        return RT_OK;
    }
    if (st == RT_OK)
        nc->trimmed_through = oldest - 1;
    return st;
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

/* Ephemeral: subscribe (and flush, so a publish right after the reply is seen). */
static rt_status nats_interest_add(void *eng, struct fo_chan *ch)
{
    struct neng *e = eng;
    struct nchan *nc = ch->eng;
    if (ch->durable)
        return nc->synced ? RT_OK : chan_sync(e, nc);
    if (subscribed(nc))
        return RT_OK;
    if (subscribe(e, nc) != RT_OK)
        return RT_UNAVAILABLE;
    if (nc->lsid)
        lr_flush(e->lr, LOOP_WAIT_MS); /* down: the SUB goes out on reconnect */
    else if (conn_up(e))
        natsConnection_FlushTimeout(e->nc, LOOP_WAIT_MS);
    return RT_OK;
}

static void nats_interest_remove(void *eng, struct fo_chan *ch)
{
    unsubscribe(eng, ch->eng);
}

/*
 * Durable subscribe: sync a channel this node has no interest in yet; for a
 * `since`, learn the channel's latest (it may be ahead of what this node has
 * dispatched) and its oldest retained seq.
 */
static rt_status nats_chan_prepare(void *eng, struct fo_chan *ch, const struct fo_sub_req *req)
{
    struct neng *e = eng;
    struct nchan *nc = ch->eng;
    if (!nc->synced && chan_sync(e, nc) != RT_OK)
        return RT_UNAVAILABLE;
    nc->trimmed_through = nc->dispatched;
    if (!req->has_since)
        return RT_OK;
    if (!conn_up(e))
        return RT_UNAVAILABLE;
    if (req->since > nc->latest_known) {
        uint64_t latest = 0;
        if (channel_latest(e, ch->name, LOOP_WAIT_MS, &latest) != RT_OK)
            return RT_UNAVAILABLE;
        if (latest > nc->latest_known)
            nc->latest_known = latest;
        fill_start(e, nc, latest);
    }
    return chan_trim_point(e, nc);
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
    if (ch->durable)
        return pub_async(e, m, NULL, req);
    if (req->msg_id) {
        natsMsg *claim = claim_msg(ch, req);
        if (!claim) {
            natsMsg_Destroy(m);
            return RT_NOMEM;
        }
        return pub_async(e, claim, m, req);
    }
    natsStatus s = natsConnection_PublishMsg(e->nc, m);
    natsMsg_Destroy(m);
    if (s != NATS_OK)
        return RT_UNAVAILABLE;
    res->durable = false;
    res->dup = false;
    return RT_OK;
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
    if (!ch->durable || !nc->synced)
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
static void nats_tick(void *eng, uint64_t now_ms)
{
    struct neng *e = eng;
    (void)now_ms;
    uint64_t now = rt_mono_ms();
    if (!e->stream_ok && !e->stream_busy && now >= e->stream_retry_at && conn_up(e)) {
        struct njob *j = job_new(JOB_STREAM, NULL);
        if (j) {
            e->stream_busy = true;
            job_submit(e, j);
        }
    }
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

/* Connection state changes seen from the loop. */
static void conn_events(struct neng *e, uint64_t reconnects)
{
    bool up = conn_up(e);
    char where[1024]; /* the server it went to, or the list: never a URL's credentials */
    if (up != e->was_up || (up && reconnects != e->seen_reconnects)) /* a quick move too */
        rt_log(up ? RT_LOG_INFO : RT_LOG_WARN, up ? "nats_connected" : "nats_disconnected", "%s=%s",
               up ? "server" : "servers",
               up ? nsec_connected_server(e->nc, where, sizeof(where))
                  : nsec_urls_for_log(e->url, where, sizeof(where)));
    e->was_up = up;
    if (reconnects == e->seen_reconnects || !up)
        return;
    e->seen_reconnects = reconnects;
    resync_all(e); /* messages stored while away are read back */
    e->stream_retry_at = 0;
    if (!e->stream_busy) {
        struct njob *j = job_new(JOB_STREAM, NULL);
        if (j) {
            e->stream_busy = true;
            job_submit(e, j);
        }
    }
}

/* Takes what the other threads handed over, under the lock, in one go. */
static uint32_t service_take(struct neng *e, struct npub **pubs, struct njob **jobs, bool *missed,
                             uint64_t *reconnects, bool *more, struct nbus **bus)
{
    pthread_mutex_lock(&e->lock);
    *bus = e->bus_head;
    e->bus_head = e->bus_tail = NULL;
    e->bus_bytes = 0;
    e->wake_pending = false;
    uint32_t n = e->r_len < SERVICE_BATCH ? e->r_len : SERVICE_BATCH;
    for (uint32_t i = 0; i < n; i++)
        e->batch[i] = e->ring[(e->r_head + i) % HANDOFF_CAP];
    e->r_head = (e->r_head + n) % HANDOFF_CAP;
    e->r_len -= n;
    *more = e->r_len > 0;
    *pubs = e->pubs_done;
    *jobs = e->jobs_done;
    e->pubs_done = e->pubs_done_tail = NULL;
    e->jobs_done = e->jobs_done_tail = NULL;
    *missed = e->missed;
    e->missed = false;
    *reconnects = e->reconnects;
    e->fo->stats.upstream_dropped += e->dropped;
    e->fo->stats.upstream_invalid += e->invalid;
    e->dropped = e->invalid = 0;
    pthread_mutex_unlock(&e->lock);
    return n;
}

static void nats_service(void *eng)
{
    struct neng *e = eng;
    struct npub *pubs;
    struct njob *jobs;
    bool missed, more;
    uint64_t reconnects;
    struct nbus *bus;
    uint32_t n = service_take(e, &pubs, &jobs, &missed, &reconnects, &more, &bus);
    conn_events(e, reconnects);
    if (missed)
        resync_all(e);
    while (pubs) {
        struct npub *p = pubs;
        pubs = p->next;
        pub_done(e, p);
    }
    while (jobs) {
        struct njob *j = jobs;
        jobs = j->next;
        job_done(e, j);
    }
    for (uint32_t i = 0; i < n; i++)
        live_one(e, &e->batch[i]);
    while (bus) {
        struct nbus *b = bus;
        bus = b->next;
        if (e->fo->bus_fn)
            e->fo->bus_fn(e->fo->bus_arg, b->subject, b->reply, b->data, b->len);
        free(b);
    }
    if (more)
        wake(e); /* let the loop breathe, then go on */
}

static bool nats_ready(const void *eng)
{
    const struct neng *e = eng;
    return e->stream_ok && conn_up(e) && (!e->lr || lr_up(e->lr));
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
    if (!s) /* TLS and credentials: the same as the loop reader's */
        s = nsec_natsc_options(e->opts, e->fo->cfg.nats_security, e->url);
    return s;
}

static natsStatus connect_nats(struct neng *e)
{
    /* A refusal (TLS, credentials) fails the start with nats.c's reason; no server: retry. */
    natsStatus s =
        nsec_natsc_connect(&e->nc, e->opts, e->url, e->fo->cfg.nats_security, on_connected, e);
    if (s == NATS_NOT_YET_CONNECTED) {
        char where[1024];
        rt_log(RT_LOG_WARN, "nats_not_yet_connected", "servers=%s why=\"retrying in background\"",
               nsec_urls_for_log(e->url, where, sizeof(where)));
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
    e->ring = calloc(HANDOFF_CAP, sizeof(*e->ring));
    e->batch = calloc(SERVICE_BATCH, sizeof(*e->batch));
    const char *drop = getenv("RTGATE_NATS_DROP_EVERY"); /* tests only: docs/nats.md */
    e->drop_every = drop ? strtoull(drop, NULL, 10) : 0;
    rt_htab_init(&e->inflight);
    pthread_mutex_init(&e->lock, NULL);
    pthread_mutex_init(&e->jobs_lock, NULL);
    pthread_cond_init(&e->jobs_cond, NULL);
    return e->url && e->stream && e->ring && e->batch ? RT_OK : RT_NOMEM;
}

static void nats_destroy(void *eng);

static rt_status nats_create(struct fo *fo, void **out)
{
    struct neng *e = calloc(1, sizeof(*e));
    char where[1024]; /* for log lines: servers without credentials */
    if (!e)
        return RT_NOMEM;
    *out = e;
    if (engine_init(e, fo) != RT_OK)
        goto err;
    nats_SetMessageDeliveryPoolSize(2);
    natsStatus s = make_options(e, fo->cfg.node_id);
    if (!s)
        s = connect_nats(e);
    if (s) {
        rt_log(RT_LOG_ERROR, "nats_connect_failed", "servers=%s error=\"%s\"",
               nsec_urls_for_log(e->url, where, sizeof(where)), natsStatus_GetText(s));
        goto err;
    }
    for (; e->n_workers < N_WORKERS; e->n_workers++)
        if (pthread_create(&e->workers[e->n_workers], NULL, worker_main, e) != 0)
            goto err;
    if (fo->cfg.uv_loop) {
        char name[160];
        snprintf(name, sizeof(name), "rtgate-live %s", fo->cfg.node_id ? fo->cfg.node_id : "");
        struct lr_hooks hooks = {e, on_live_msg, on_live_replay};
        rt_status st = lr_create(fo->cfg.uv_loop, e->url, name, fo->cfg.nats_read_window_ms,
                                 fo->cfg.nats_security, &hooks, &e->lr);
        if (st == RT_NOMEM)
            goto err;
        if (st != RT_OK)
            rt_log(RT_LOG_WARN, "nats_live_off",
                   "servers=%s why=\"URLs or files it cannot use: channels read through nats.c\"",
                   nsec_urls_for_log(e->url, where, sizeof(where)));
    }
    e->was_up = conn_up(e);
    if (e->was_up) {
        e->seen_reconnects = e->reconnects;
        if (stream_setup(e, &e->created) != RT_OK)
            goto err;
        epoch_of(e->created, e->epoch);
        e->stream_ok = true;
        rt_log(RT_LOG_INFO, "nats_ready", "server=%s stream=%s epoch=%s",
               nsec_connected_server(e->nc, where, sizeof(where)), e->stream, e->epoch);
    }
    return RT_OK;
err:
    nats_destroy(e);
    *out = NULL;
    return RT_UNAVAILABLE;
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

/* What the other threads left behind, once they are all gone. */
static void free_handoff(struct neng *e)
{
    while (e->r_len > 0) {
        fo_msg_release(e->ring[e->r_head].msg);
        e->r_head = (e->r_head + 1) % HANDOFF_CAP;
        e->r_len--;
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
    jsCtx_Destroy(e->js);
    natsConnection_Destroy(e->nc);
    natsOptions_Destroy(e->opts);
    nats_CloseAndWait(5000);
    free_handoff(e);
    pthread_mutex_destroy(&e->lock);
    pthread_mutex_destroy(&e->jobs_lock);
    pthread_cond_destroy(&e->jobs_cond);
    free(e->ring);
    free(e->batch);
    free(e->url);
    free(e->stream);
    free(e);
}

/* -------------------------------------------------------------------- */
/* The bus (fanout.h): plain subjects for other modules (loop thread)       */

static void *nats_bus_subscribe(void *eng, const char *subject)
{
    struct neng *e = eng;
    natsSubscription *sub = NULL;
    natsStatus s = natsConnection_Subscribe(&sub, e->nc, subject, on_bus_msg, e);
    if (s != NATS_OK) {
        rt_log(RT_LOG_WARN, "nats_bus_subscribe_failed", "subject=%s error=\"%s\"", subject,
               natsStatus_GetText(s));
        return NULL;
    }
    return sub;
}

static void nats_bus_unsubscribe(void *eng, void *handle)
{
    (void)eng;
    natsSubscription *sub = handle;
    natsSubscription_Unsubscribe(sub);
    natsSubscription_Destroy(sub);
}

static rt_status nats_bus_publish(void *eng, const char *subject, const char *reply,
                                  const uint8_t *data, size_t len)
{
    struct neng *e = eng;
    natsStatus s = reply ? natsConnection_PublishRequest(e->nc, subject, reply, data, (int)len)
                         : natsConnection_Publish(e->nc, subject, data, (int)len);
    return s == NATS_OK ? RT_OK : RT_UNAVAILABLE;
}

static void nats_stats(const void *eng, struct fo_stats *out)
{
    const struct neng *e = eng;
    if (!e->lr)
        return;
    struct lr_stats ls;
    lr_get_stats(e->lr, &ls);
    out->reader_up = lr_up(e->lr);
    out->reader_connects = ls.connects;
    out->reader_reads = ls.wakeups;
    out->reader_messages = ls.msgs;
    out->reader_bad = ls.bad;
    out->reader_flush_timeouts = ls.flush_timeouts;
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
    .chan_prepare = nats_chan_prepare,
    .service = nats_service,
    .ready = nats_ready,
    .bus_subscribe = nats_bus_subscribe,
    .bus_unsubscribe = nats_bus_unsubscribe,
    .bus_publish = nats_bus_publish,
    .bus_generation = nats_bus_generation,
    .stats = nats_stats,
};
