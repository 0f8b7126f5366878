/*
 * nats_int.h: internals shared by the files of the nats engine (engine_nats.c
 * lists them); the rest of fanout/ sees the engine only through
 * fo__engine_nats. Fields marked {lock} belong to e->lock (the hand-off),
 * {jobs_lock} to the worker queue, {send_lock} to the sender's queue; all
 * the others to the loop thread, unless their comment says which thread owns
 * them. Each function says which thread runs it.
 */
#ifndef NATS_INT_H
#define NATS_INT_H

#include "fanout_int.h"
#include "nats_live.h"
#include "nats_security.h"
#include "nats_wire.h"

#include <nats/nats.h>
#include <pthread.h>
#include <stdatomic.h>

/* -------------------------------------------------------------------- */
/* Bounds and times                                                       */

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
#define SUBJECT_MAX         (sizeof(NW_KV_PREFIX) + PROTO_CHANNEL_MAX + 1 + 2 * PROTO_MSG_ID_MAX + 8)

/* -------------------------------------------------------------------- */
/* Durable channels' chains (nats_chain.c)                                */

/* One message of a durable channel's chain; msg is NULL for one dropped as invalid. */
struct chain_entry {
    uint64_t seq;
    uint64_t prev; /* held entries: Nats-Last-Sequence */
    struct fo_msg *msg;
};

/* A growable ring of chain entries, in seq order. */
struct chain_ring {
    struct chain_entry *v;
    uint32_t head, len, cap;
};

/* -------------------------------------------------------------------- */
/* Client publishes (nats_publish.c) and the sender thread (nats_sender.c) */

/*
 * What a client publish waits for: JetStream's acknowledgement of a durable
 * message (DURABLE) or of an ephemeral msg_id's claim (CLAIM), or the
 * sender thread's core publish of an ephemeral message (CORE).
 */
enum pub_stage { PUB_DURABLE, PUB_CLAIM, PUB_CORE };

/*
 * A client publish waiting for NATS. Made on the loop; while in inflight or
 * on the sender's queue its results are written by the thread that answers
 * it (nats.c's ack thread, the sender) under e->lock, then it is the loop's
 * again (pubs_done).
 */
struct pending_pub {
    struct fo_hnode node;     /* {lock} in inflight (DURABLE, CLAIM), key = the bytes of key */
    natsMsg *key;             /* the message handed to js_PublishMsgAsync */
    struct pending_pub *next; /* {lock} on pubs_done */
    enum pub_stage stage;
    natsMsg *eph; /* CLAIM: the message to publish once the id is new */
    uint64_t conn_id;
    int64_t req_id;
    natsStatus status; /* {lock} the results */
    int err_code;      /* {lock} */
    uint64_t seq;      /* {lock} */
    bool dup;          /* {lock} */
};

enum send_kind { SEND_CORE, SEND_JS, SEND_RAW, SEND_SUB, SEND_UNSUB };

/*
 * A call into nats.c for the sender thread: made on the loop, then the
 * sender's. CORE: a core publish of a client's message; JS: a JetStream
 * publish (a durable message or a msg_id claim); RAW: a plain publish (a
 * read's request, the bus's); SUB / UNSUB: a bus subscription.
 */
struct send_call {
    struct send_call *next; /* {send_lock} on the queue */
    enum send_kind kind;
    bool embedded;               /* part of a bus_sub: not freed on its own */
    natsMsg *msg;                /* CORE, JS (taken) */
    struct pending_pub *pub;     /* CORE, JS: answered through pubs_done */
    struct bus_sub *bus;         /* SUB, UNSUB */
    const char *subject, *reply; /* RAW (reply may be NULL) */
    const uint8_t *data;
    size_t len;
};

/* -------------------------------------------------------------------- */
/* The bus (nats_bus.c)                                                   */

/* A bus subscription (fo_bus_subscribe's handle); made and ended by the sender. */
struct bus_sub {
    struct send_call sub_cmd, unsub_cmd; /* queued at subscribe / unsubscribe */
    natsSubscription *sub;               /* the sender thread's */
    char subject[];
};

/* A bus message for the loop (fo_bus_*): subject, reply and data in one block. */
struct bus_msg {
    struct bus_msg *next;        /* {lock} on the bus list */
    const char *subject, *reply; /* into data's block; reply may be NULL */
    size_t len;
    uint8_t data[];
};

/* -------------------------------------------------------------------- */
/* JetStream work: jobs on workers (nats_jobs.c), reads from the loop     */
/* (nats_reads.c)                                                         */

enum js_job_kind { JOB_FETCH, JOB_FILL, JOB_STREAM };

/*
 * Blocking JetStream work for a worker thread; the result comes back whole.
 * Made on the loop, the worker's while it runs, the loop's again once on
 * jobs_done.
 */
struct js_job {
    struct js_job *next; /* {jobs_lock} on the queue, then {lock} on jobs_done */
    enum js_job_kind kind;
    uint64_t gen;   /* the channel's generation: a stale result is dropped */
    uint64_t after; /* FETCH, FILL: read the channel's messages after this seq */
    uint64_t until; /* FETCH: stop at a seq >= until; FILL: the last seq wanted */
    rt_status st;
    uint64_t gap_to;  /* FETCH: `after` was gone: seqs after+1..gap_to are lost */
    int64_t created;  /* STREAM: the stream's creation time (ns) */
    char why[160];    /* STREAM: what failed */
    bool reached_end; /* FETCH, FILL: no message after the last one */
    struct chain_entry *v;
    uint32_t n;
    size_t name_len;
    char name[]; /* the channel */
};

/* What a JetStream read sent from the loop is for (its reply comes back on the inbox). */
enum js_read_kind {
    READ_SYNC,          /* a first subscriber's sync point: the channel's latest seq */
    READ_PROBE,         /* the channel's latest seq: anything missed? */
    READ_RESUME_LATEST, /* a resume past what this node has seen: the channel's latest */
    READ_RESUME_OLDEST, /* a resume: the channel's oldest retained seq */
};

/* A JetStream read waiting for its reply on the inbox (loop thread). */
struct js_read {
    struct fo_hnode node;          /* in reads, key = the bytes of id */
    struct js_read *older, *newer; /* by deadline */
    uint64_t id;                   /* the last token of the reply subject */
    uint64_t deadline_ms;          /* rt_mono_ms */
    enum js_read_kind kind;
    bool stream_info; /* asking the stream's last seq (the channel had nothing) */
    uint64_t gen;     /* the channel's generation when sent */
    uint64_t op;      /* READ_RESUME_*: the registry's waiting subscribe */
    uint64_t since;   /* READ_RESUME_*: its since */
    size_t name_len;
    char name[]; /* the channel */
};

/* A reply on the inbox, handed to the loop. */
struct inbox_reply {
    struct inbox_reply *next; /* {lock} on replies */
    natsMsg *msg;
};

/* -------------------------------------------------------------------- */
/* Channels (nats_subs.c, nats_chain.c)                                    */

/* A subscribe waiting for its channel to be ready (nats_sub_prepare). */
struct ready_wait {
    uint64_t op;
    bool has_since;
    uint64_t since;
};

/*
 * How far a channel with interest is from taking subscribers: its SUB on
 * the loop reader is not confirmed (not asked yet, or it failed), is being
 * confirmed, (durable) its sync point is being read, or it is ready.
 */
enum chan_ready { CHAN_UNCONFIRMED, CHAN_CONFIRMING, CHAN_SYNCING, CHAN_READY };

/* Which of the engine's confirmation lists a channel is on. */
enum confirm_list { CONFIRM_NONE, CONFIRM_QUEUE, CONFIRM_BATCH };

/* A channel of an answered confirmation list, and its generation then. */
struct confirmed_chan {
    struct chan_state *cs;
    uint64_t gen;
};

/* The engine's state of one channel (fo_chan.eng). Loop thread. */
struct chan_state {
    struct fo_chan *ch;
    uint64_t lsid; /* the loop reader's subscription to the live subject; 0: none */
    struct chan_state *prev, *next; /* the engine's list of channels with a subscription */
    uint64_t gen; /* changes when interest goes: results for an older one are dropped */
    enum chan_ready ready;
    enum confirm_list on_list;
    struct chan_state *cprev, *cnext; /* on that list */
    struct ready_wait *waiting;       /* subscribes waiting for READY */
    uint32_t n_waiting, cap_waiting;
    /* Durable only. */
    uint64_t dispatched;   /* highest seq handed to fo__dispatch, or the sync point */
    uint64_t latest_known; /* >= dispatched: latest stored seq seen by a probe */
    uint64_t trimmed_through;
    uint64_t fill_target;   /* read back through this seq, then go on with held */
    struct chain_ring tail; /* chain of the newest dispatched messages */
    uint64_t tail_lo;       /* the seq before tail's first entry */
    struct js_job *replay;  /* the last history batch read back */
    struct chain_ring held; /* live messages waiting behind a hole */
    bool fill_busy, fetch_busy, probe_busy, probe_wanted, fetch_failed;
    uint64_t retry_at;  /* rt_mono_ms */
    uint64_t last_live; /* rt_mono_ms of the last live message */
    bool quiet_probed;  /* probed since then */
};

/* -------------------------------------------------------------------- */
/* The engine                                                             */

struct nats_engine {
    struct fo *fo;
    char *url, *stream;
    uint32_t replicas;
    natsOptions *opts;
    natsConnection *conn;
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
    bool connected_once;            /* "nats_connected" was logged: the next ones are reconnects */
    struct chan_state *with_sub[2]; /* channels with a subscription: [0] ephemeral, [1] durable */
    uint64_t drop_every, live_drop_count; /* test hook RTGATE_NATS_DROP_EVERY (reader) */
    double quiet_tokens;                  /* quiet probes allowed now (QUIET_RATE bucket) */
    uint64_t quiet_refill_ms;
    uint32_t probes_out; /* READ_PROBE waiting for JetStream */
    /* Confirming the reader's SUBs: one PING in flight (lr_confirm) for
     * batch; channels subscribed since wait on queue for the next one. */
    struct chan_state *confirm_queue, *confirm_batch;
    bool confirm_busy;
    struct confirmed_chan *confirmed; /* the answered list's copy (nats__confirm_answer) */
    uint32_t cap_confirmed;
    /* JetStream reads sent from the loop (struct js_read), answered on inbox. */
    char *inbox; /* "_INBOX.<nuid>"; replies come on inbox.<id> */
    natsSubscription *inbox_sub;
    struct rt_htab reads;
    struct js_read *reads_oldest, *reads_newest;
    uint64_t next_read;

    pthread_mutex_t lock;
    struct rt_htab inflight; /* {lock} pending_pub by the natsMsg pointer JetStream acks name */
    struct pending_pub *pubs_done, *pubs_done_tail; /* {lock} */
    struct js_job *jobs_done, *jobs_done_tail;      /* {lock} */
    struct inbox_reply *replies, *replies_tail;     /* {lock} */
    bool wake_pending;                              /* {lock} */
    uint64_t reconnects;                            /* {lock} connected / reconnected events */
    uint64_t disconnects;                           /* {lock} */
    uint64_t invalid;                               /* {lock} */
    struct bus_msg *bus_head, *bus_tail;            /* {lock} bus messages for the loop */
    size_t bus_bytes;                               /* {lock} */
    uint64_t bus_lost; /* {lock} times bus messages were lost: part of the generation */
    char server[256];  /* {lock} the server connected to, without user information */

    pthread_mutex_t send_lock;
    pthread_cond_t send_cond;
    struct send_call *sends, *sends_tail; /* {send_lock} calls for the sender thread */
    uint32_t n_sends;                     /* {send_lock} */
    bool send_stop;                       /* {send_lock} */
    pthread_t sender;
    bool sender_started;

    pthread_mutex_t jobs_lock;
    pthread_cond_t jobs_cond;
    struct js_job *jobs, *jobs_tail; /* {jobs_lock} */
    bool stopping;                   /* {jobs_lock} */
    pthread_t workers[N_WORKERS];
    int n_workers;
};

/*
 * A message's headers: a nats.c message, or the raw header block of an HMSG
 * read by the loop reader (nats_live.c). Values come back NUL-terminated in
 * the caller's buffer; one that does not fit counts as absent.
 */
struct msg_headers {
    natsMsg *m;
    const uint8_t *raw;
    size_t raw_len;
};

/* What the other threads handed over, taken by the loop under e->lock in one go. */
struct handed_over {
    struct pending_pub *pubs;
    struct js_job *jobs;
    struct inbox_reply *replies;
    struct bus_msg *bus;
    uint64_t reconnects, disconnects;
    char server[256];
};

/* Has a subscription to its live subject on the loop reader. */
static inline bool subscribed(const struct chan_state *cs)
{
    return cs->lsid != 0;
}
/* Durable: the chain's position is known (dispatched), subscribers may come. */
static inline bool synced(const struct chan_state *cs)
{
    return cs->ready == CHAN_READY;
}
/*
 * nats.c's connection (JetStream, publishes, the bus) is connected, as its
 * callbacks said: natsConnection_Status would take the connection's lock,
 * which nats.c holds while it tries a server (nats_sender.c). Any thread.
 */
static inline bool conn_up(const struct nats_engine *e)
{
    return atomic_load(&e->up);
}

/* -------------------------------------------------------------------- */
/* nats_msg.c: rtgate's messages to and from NATS messages (any thread)    */

/* A decimal uint64 (the whole string); false otherwise. */
bool nats__parse_u64(const char *s, uint64_t *out);
/* A header's value as a uint64; false if absent or not a number. */
bool nats__hget_u64(const struct msg_headers *h, const char *key, uint64_t *out);
bool nats__hdr_u64(natsMsg *m, const char *key, uint64_t *out);
/*
 * A fan-out message for a NATS message of channel (live or read back): JSON
 * and msgpack payloads parsed and validated once, JSON kept canonical. An
 * invalid payload (or Rtgate-Encoding) gives a message with payload NONE and
 * *invalid set, so that a durable chain keeps its seq. NULL on NOMEM.
 */
struct fo_msg *nats__msg_make(struct nats_engine *e, const struct msg_headers *h,
                              const uint8_t *data, size_t data_len, const char *channel, size_t len,
                              bool durable, uint64_t seq, bool *invalid);
/* The same for a durable message read back from JetStream (a DirectGet's reply). */
struct fo_msg *nats__msg_from_nats(struct nats_engine *e, natsMsg *m, const char *channel,
                                   size_t len, uint64_t seq, bool *invalid);
/* The NATS message of a client publish, with the headers backends read; NULL on NOMEM. */
natsMsg *nats__client_msg(const struct fo_chan *ch, const struct fo_pub_req *req);
/* The KV record that claims an ephemeral msg_id (nw_claim_subject); NULL on NOMEM. */
natsMsg *nats__claim_msg(const struct fo_chan *ch, const struct fo_pub_req *req);

/* -------------------------------------------------------------------- */
/* nats_handoff.c: the other threads to the loop                           */

/* Appends item (a struct with a `next`) to the list head..tail, under the list's lock. */
#define NATS_LIST_APPEND(head, tail, item)                                                         \
    do {                                                                                           \
        (item)->next = NULL;                                                                       \
        if (tail)                                                                                  \
            (tail)->next = (item);                                                                 \
        else                                                                                       \
            (head) = (item);                                                                       \
        (tail) = (item);                                                                           \
    } while (0)

/* With e->lock held, after a hand-over: lets go of the lock and wakes the
 * loop (fo_config.wake) if nothing woke it since it last took. Any thread. */
void nats__unlock_and_wake(struct nats_engine *e);
/* A client publish's stage is over: p goes to the loop (nats__pub_done). Not the loop thread. */
void nats__handoff_pub(struct nats_engine *e, struct pending_pub *p, natsStatus status);
/* A worker's job is done: j goes to the loop (nats__job_done). Worker threads. */
void nats__handoff_job(struct nats_engine *e, struct js_job *j);
/* Loop thread: takes everything handed over, in one go. */
void nats__handoff_take(struct nats_engine *e, struct handed_over *h);
/* nats.c's callbacks (its threads): publish acks, inbox replies, connection events, errors. */
void nats__on_pub_ack(jsCtx *js, natsMsg *m, jsPubAck *pa, jsPubAckErr *pae, void *closure);
void nats__on_inbox_reply(natsConnection *conn, natsSubscription *sub, natsMsg *m, void *closure);
void nats__on_connected(natsConnection *conn, void *closure);
void nats__on_disconnected(natsConnection *conn, void *closure);
void nats__on_nats_error(natsConnection *conn, natsSubscription *sub, natsStatus err,
                         void *closure);

/* -------------------------------------------------------------------- */
/* nats_sender.c: the sender thread, every call into nats.c's connection   */

/* Starts the sender thread (engine creation). RT_NOMEM / RT_UNAVAILABLE if it cannot. */
rt_status nats__sender_start(struct nats_engine *e);
/* Runs what is queued, then stops the thread; frees what it never took (engine end). */
void nats__sender_stop(struct nats_engine *e);
/*
 * Loop thread: queues s for the sender. RT_LIMIT when SENDS_MAX are queued
 * (the caller still owns s); unsubscribes always go (the handle must end).
 */
rt_status nats__send_push(struct nats_engine *e, struct send_call *s);
/* Loop thread: queues a plain publish (a read's, or the bus's) with copies of its bytes. */
rt_status nats__send_raw(struct nats_engine *e, const char *subject, const char *reply,
                         const uint8_t *data, size_t len);

/* -------------------------------------------------------------------- */
/* nats_jobs.c: blocking JetStream work on the worker threads              */

rt_status nats__workers_start(struct nats_engine *e);
/* Stops the workers (engine end) and frees the jobs they never took. */
void nats__workers_stop(struct nats_engine *e);
/* Loop thread: a job for channel cs (NULL for JOB_STREAM), or NULL on NOMEM. */
struct js_job *nats__job_new(enum js_job_kind kind, const struct chan_state *cs);
/* Loop thread: hands j to the workers; it comes back through nats__job_done. */
void nats__job_submit(struct nats_engine *e, struct js_job *j);
void nats__job_free(struct js_job *j);
/* jsOptions with this request timeout. */
void nats__js_opts(jsOptions *o, int64_t wait_ms);

/* -------------------------------------------------------------------- */
/* nats_stream.c: the stream of the durable channels                       */

/* Loop thread: checks (or creates) the stream on a worker, unless a check is under way. */
void nats__stream_check(struct nats_engine *e);
/*
 * Worker thread: creates the stream, or checks (and updates) an existing one,
 * and the msg_id bucket. *created: its birth. RT_UNAVAILABLE (JetStream did
 * not answer) or RT_INVAL (a stream this engine cannot use), why saying so.
 */
rt_status nats__stream_setup(struct nats_engine *e, int64_t *created, char *why, size_t why_cap);
/* Loop thread: the check is done; a failure is retried with backoff and logged once. */
void nats__stream_done(struct nats_engine *e, struct js_job *j);

/* -------------------------------------------------------------------- */
/* nats_reads.c: JetStream reads from the loop, answered on the inbox      */

/* Creation: the inbox's subscription (inbox.*), on nats.c's connection. */
natsStatus nats__inbox_open(struct nats_engine *e);
/*
 * Loop thread: sends a read for channel cs (kind, and for a resume the
 * registry's waiting subscribe op and its since); its answer comes back to
 * nats__sync_done, nats__probe_done or nats__resume_done. RT_OK or an error
 * (nothing sent).
 */
rt_status nats__read_start(struct nats_engine *e, const struct chan_state *cs,
                           enum js_read_kind kind, uint64_t op, uint64_t since);
/* Loop thread: a reply from the inbox answers its read, if it still waits (m stays the caller's).
 */
void nats__read_reply(struct nats_engine *e, natsMsg *m);
/* Loop thread: fails the reads whose time is up, or all of them (nats.c's connection was lost). */
void nats__reads_expire(struct nats_engine *e, bool all);
/* Engine end: frees the reads still waiting, unanswered. */
void nats__reads_free(struct nats_engine *e);

/* -------------------------------------------------------------------- */
/* nats_chain.c: durable channels' chains, holes and caches (loop thread)  */

/* Frees a ring's entries (their messages) and its memory. */
void nats__ring_free(struct chain_ring *r);
/* Forgets everything about a durable channel's history (its interest went). */
void nats__chan_forget(struct nats_engine *e, struct chan_state *cs);
/* A live message of a durable channel, seq after prev (takes m). */
void nats__durable_live(struct nats_engine *e, struct fo_chan *ch, struct chan_state *cs,
                        uint64_t seq, uint64_t prev, struct fo_msg *m);
/* Reads back (dispatched, target] on a worker, unless one is under way (then later). */
void nats__fill_start(struct nats_engine *e, struct chan_state *cs, uint64_t target);
/* Dispatches the held live messages that now continue the chain, up to the next hole. */
void nats__held_drain(struct nats_engine *e, struct fo_chan *ch, struct chan_state *cs);
/* Asks JetStream for the channel's latest seq (READ_PROBE); what is newer is read back. */
void nats__probe_start(struct nats_engine *e, struct chan_state *cs);
void nats__probe_done(struct nats_engine *e, struct chan_state *cs, rt_status st, uint64_t latest);
/* Every durable channel with interest is probed: messages missed while away are read back. */
void nats__resync_all(struct nats_engine *e);
/* The quiet-channel probes and the retries of failed reads, once a tick. */
void nats__chain_tick(struct nats_engine *e, uint64_t now);
/* A worker's FETCH or FILL (or STREAM) came back. */
void nats__job_done(struct nats_engine *e, struct js_job *j);
/* fo_engine_ops.fetch: history after `after` from the caches, or RT_AGAIN while a worker reads. */
rt_status nats__fetch(void *eng, struct fo_chan *ch, uint64_t after, struct fo_fetch *out);

/* -------------------------------------------------------------------- */
/* nats_subs.c: subscriptions on the loop reader, getting channels ready   */

/* The loop reader's hooks: a live message; after each (re)connect, every SUB again. */
void nats__on_live_msg(void *ctx, const struct nw_msg *m);
void nats__on_live_replay(void *ctx, struct lr *lr);
/* Sends the channel's SUB on the loop reader (now, or at its next connect). */
void nats__chan_subscribe(struct nats_engine *e, struct chan_state *cs);
/* Its UNSUB; forgets the channel's readiness, waiting subscribes and (durable) history. */
void nats__chan_unsubscribe(struct nats_engine *e, struct chan_state *cs);
/* Starts making cs ready for subscribers after its SUB (confirmation, then sync point). */
void nats__ready_start(struct nats_engine *e, struct chan_state *cs);
/* Remembers a subscribe (the registry's op) that waits for cs to be ready. */
rt_status nats__wait_add(struct chan_state *cs, uint64_t op, const struct fo_sub_req *req);
/* A resume on a ready durable channel: RT_OK (nothing to read), RT_AGAIN (reads sent), or an error.
 */
rt_status nats__resume_start(struct nats_engine *e, struct chan_state *cs, uint64_t op,
                             uint64_t since);
/* Sends the next confirmation PING if none is in flight and channels wait. */
void nats__confirm_kick(struct nats_engine *e);
/* Answers the channels on a confirmation list (the queue, when the reader is down). */
void nats__confirm_answer(struct nats_engine *e, enum confirm_list which, rt_status st);
/* READ_SYNC answered: the channel's chain starts at latest, its subscribes are answered. */
void nats__sync_done(struct nats_engine *e, struct fo_chan *ch, struct chan_state *cs, rt_status st,
                     uint64_t latest);
/* A resume's read answered: the next read, or the answer (fo__sub_ready). */
void nats__resume_done(struct nats_engine *e, struct chan_state *cs, struct js_read *q,
                       rt_status st, uint64_t seq);

/* -------------------------------------------------------------------- */
/* nats_publish.c: client publishes (loop thread)                          */

/* fo_engine_ops.publish: every answer comes later, through nats__pub_done. */
rt_status nats__publish(void *eng, struct fo_chan *ch, const struct fo_pub_req *req,
                        struct fo_pub_result *res, struct fo_msg **out);
/* A publish's stage is over: answers it (or publishes a newly claimed ephemeral message). */
void nats__pub_done(struct nats_engine *e, struct pending_pub *p);

/* -------------------------------------------------------------------- */
/* nats_bus.c: the bus (fanout.h)                                          */

void *nats__bus_subscribe(void *eng, const char *subject);
void nats__bus_unsubscribe(void *eng, void *handle);
rt_status nats__bus_publish(void *eng, const char *subject, const char *reply, const uint8_t *data,
                            size_t len);
uint64_t nats__bus_generation(const void *eng);
/* A bus subscription's message (nats.c's delivery thread): copied for the loop. */
void nats__on_bus_msg(natsConnection *conn, natsSubscription *sub, natsMsg *m, void *closure);
/* Loop thread: hands the messages taken from the hand-off to the bus's receiver; frees them. */
void nats__bus_deliver(struct nats_engine *e, struct bus_msg *list);

/* -------------------------------------------------------------------- */
/* engine_nats.c                                                           */

/* The registry's channel of that name, or NULL. Loop thread. */
struct fo_chan *nats__chan_find(struct nats_engine *e, const char *name, size_t len);

#endif
