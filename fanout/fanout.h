/*
 * fanout.h: who is subscribed to what on this node, and the engine below it.
 *
 * The registry maps channels to local subscriptions (by connection id, never
 * by pointer into the gateway). A message arriving from the engine is one
 * refcounted fo_msg, encoded at most once per subprotocol, queued to every
 * local subscriber through the sink's deliver callback. Durable channels add
 * per-subscription cursors: since/epoch resume, the per-client max_unacked
 * window, catch-up from history, gap, and idempotent publish by msg_id.
 *
 * Engines: "memory" (single node, the default and the reference model) and
 * "nats" (a fleet: core NATS for ephemeral channels, JetStream for durable
 * ones; docs/nats.md). Same interface above both: publish and subscribe may
 * complete later (RT_AGAIN, then sink->pub_done / sink->sub_done) instead of
 * making the loop wait for a round trip, interest is added/removed per
 * channel, and history is fetched on catch-up.
 *
 * Threads: everything here runs on the gateway's loop thread, including the
 * sink callbacks. Engines that have their own threads hand over to it: they
 * call fo_config.wake from their thread, and the loop then calls fo_service.
 */
#ifndef FANOUT_H
#define FANOUT_H

#include "protocol.h"
#include "rt.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * One published message, shared by the history and every outbox that holds
 * it. Immutable after creation except for the lazily built frames. Refcounted
 * on the loop thread only.
 */
struct fo_msg {
    uint32_t refs;
    bool durable;
    uint64_t seq;   /* durable only, else 0 */
    uint64_t ts_ms; /* wall clock when accepted */
    char *channel;  /* NUL-terminated */
    size_t channel_len;
    char *msg_id; /* NUL-terminated or NULL */
    size_t msg_id_len;
    struct proto_payload payload; /* owned copy of the bytes */
    size_t headroom;              /* bytes before each frame, from fo_config */
    struct {
        uint8_t *alloc; /* NULL until built; frame starts at alloc + headroom */
        size_t len;
    } frames[PROTO_NCODECS];
};

struct fo_msg *fo_msg_retain(struct fo_msg *m);
void fo_msg_release(struct fo_msg *m); /* NULL is a no-op; frees at zero */

/*
 * The complete "msg" message for `codec` (built on first use, then cached).
 * *data has fo_config.frame_headroom writable bytes before it (the transport
 * may write its frame header there). Returns RT_NOMEM, or RT_INVAL if the
 * payload cannot be expressed in that codec.
 */
rt_status fo_msg_frame(struct fo_msg *m, enum proto_codec codec, uint8_t **data, size_t *len);

/*
 * TLS and credentials for every NATS connection the nats engine opens (and
 * rtgate-pub's); docs/nats.md#security. Empty strings are unset. Files are
 * read when the engine starts; their content never reaches a log line.
 */
struct fo_nats_security {
    char ca_file[512];    /* trust these CAs (PEM) instead of the system store */
    char cert_file[512];  /* client certificate (PEM chain) for mutual TLS ... */
    char key_file[512];   /* ... and its private key */
    char creds_file[512]; /* .creds: the user JWT and its NKey seed */
    char nkey_file[512];  /* an NKey user seed ("SU...") */
};

struct fo_config {
    const char *engine;           /* "memory" (default when NULL) */
    const char *node_id;          /* for logs and epochs */
    const char *const *ephemeral; /* channel patterns that are ephemeral */
    size_t n_ephemeral;           /* everything else is durable */
    size_t history_max;           /* messages kept per durable channel; default 1000 */
    uint64_t history_max_age_ms;  /* default 3600000 (1 h); 0 = default */
    uint64_t dedup_window_ms;     /* msg_id memory; default 120000 */
    size_t dedup_max_entries;     /* bound on remembered msg_ids; default 1000000 */
    size_t max_channels;          /* channels with state; default 100000 */
    size_t max_closed_channels;   /* memory: freed durable channels whose epoch and last seq
                                   * are remembered, so they go on numbering; default 100000 */
    uint32_t max_unacked;         /* per client; default 1024 */
    uint32_t max_subs;            /* per client; default 256 */
    /*
     * Subscribes that wait for the engine (fo_subscribe answered RT_AGAIN):
     * at most this many on the node (more: 503) and per client (more: 429),
     * each answered 503 after sub_timeout_ms. Defaults 4096, max_subs, 5000.
     */
    uint32_t max_pending_subs;
    uint32_t max_pending_subs_per_client;
    uint32_t sub_timeout_ms;
    size_t frame_headroom; /* bytes before each encoded frame (LWS_PRE) */
    /* Engine "nats" only (docs/nats.md); the strings are copied. */
    const char *nats_url;    /* "nats://host:port[,nats://...]" */
    const char *nats_stream; /* JetStream stream of the durable channels; default "RTGATE" */
    uint32_t nats_replicas;  /* stream replicas; default 1 */
    const struct fo_nats_security *nats_security; /* NULL: no TLS options, no credentials */
    /*
     * The gateway's uv_loop_t, required by the nats engine: it reads the
     * live subjects of all channels on it (nats_live.h).
     */
    void *uv_loop;
    uint32_t nats_read_window_ms; /* nats_live.h's read window; 0: read on readiness */
    /*
     * Called from an engine's own thread (never the loop thread) when it has
     * handed something over; the loop thread must then call fo_service soon
     * (uv_async_send does both). Several calls may be coalesced into one
     * fo_service. NULL: the caller polls fo_service (fo_tick also does).
     */
    void (*wake)(void *ctx);
    void *wake_ctx;
};

/* Answer to a publish. error is 0 on success, else a protocol code (400, 503, ...). */
struct fo_pub_result {
    int error;
    const char *error_message;
    uint32_t retry_after_ms; /* with 429/503 */
    bool durable;
    uint64_t seq; /* durable only */
    bool dup;
};

struct fo_sub_result;

/* Callbacks into the gateway. All run on the loop thread. */
struct fo_sink {
    void *ctx;
    /*
     * Queue `msg` to connection `conn_id` (retain it if kept). Return RT_OK
     * if queued, RT_AGAIN if that connection's outbox is full. An ephemeral
     * message refused that way is dropped and counted; a durable one is not
     * lost: the subscription falls behind and catches up from history on
     * fo_client_pump.
     */
    rt_status (*deliver)(void *ctx, uint64_t conn_id, struct fo_msg *msg);
    /* Tell conn_id it will not get seqs from..to of channel. RT_AGAIN as above. */
    rt_status (*gap)(void *ctx, uint64_t conn_id, const char *channel, uint64_t from, uint64_t to);
    /* A publish that returned RT_AGAIN has completed. */
    void (*pub_done)(void *ctx, uint64_t conn_id, int64_t req_id, const struct fo_pub_result *res);
    /*
     * A subscribe that returned RT_AGAIN has completed: queue the reply. If
     * it succeeded, the registry pumps the client right after (replay after
     * the reply). Do not call back into the fan-out from here: a request
     * that waited behind this one runs later (gateway/pending.c). Needed by
     * engines that wait for round trips (nats).
     */
    void (*sub_done)(void *ctx, uint64_t conn_id, int64_t req_id, const struct fo_sub_result *res);
};

struct fo;
struct fo_client;

/* Creates the fan-out with its engine. The sink is copied. */
rt_status fo_create(const struct fo_config *cfg, const struct fo_sink *sink, struct fo **out);
void fo_destroy(struct fo *fo); /* NULL is a no-op; destroy all clients first */

/* True if the (valid) channel is durable under the configured patterns. */
bool fo_channel_durable(const struct fo *fo, const char *channel, size_t len);

/* Per-connection state; conn_id is the gateway's stable connection id. */
rt_status fo_client_create(struct fo *fo, uint64_t conn_id, struct fo_client **out);
/* Unsubscribes from everything and frees. NULL is a no-op. */
void fo_client_destroy(struct fo_client *c);

struct fo_sub_req {
    const char *channel; /* valid, NUL-terminated */
    size_t channel_len;
    bool has_since;
    uint64_t since;
    const char *epoch; /* NULL when absent */
    size_t epoch_len;
    int64_t req_id; /* echoed to sink->sub_done */
};

struct fo_sub_result {
    int error; /* 0, or 400 (bad since), 403 (max_subs), 409 (already), 503 */
    const char *error_message;
    uint32_t retry_after_ms; /* with 503 */
    bool durable;
    uint64_t seq; /* latest seq at subscribe time (durable) */
    char epoch[PROTO_EPOCH_MAX + 1];
    bool has_recovered; /* since was given */
    bool recovered;
};

/*
 * Subscribes. RT_OK: *out is the answer now (out->error says whether it was
 * refused); the subscription delivers nothing by itself: the caller queues
 * the reply, then calls fo_client_pump, which replays history after `since`
 * (when recovered) before live messages, with no gap or duplicate at the
 * seam. RT_AGAIN: the engine needs a round trip first; the answer comes
 * through sink->sub_done (at the latest sub_timeout_ms later, as a 503),
 * and the registry pumps after it. Until then the request is not a
 * subscription (unsubscribe answers RT_NOT_FOUND) but counts against
 * max_subs, and a second subscribe to the channel is a 409.
 */
rt_status fo_subscribe(struct fo_client *c, const struct fo_sub_req *req,
                       struct fo_sub_result *out);

/*
 * Unsubscribes. Returns RT_NOT_FOUND if not subscribed. If the subscription
 * held window space that another paused durable subscription of this client
 * was waiting for, delivers that one right away (as fo_client_pump).
 */
rt_status fo_unsubscribe(struct fo_client *c, const char *channel, size_t len);

/*
 * Cumulative ack of every delivered seq <= seq on channel. Frees window
 * space and, if deliveries were paused, resumes them (as fo_client_pump).
 * Unknown channel or ephemeral: ignored (RT_NOT_FOUND).
 */
rt_status fo_ack(struct fo_client *c, const char *channel, size_t len, uint64_t seq);

/*
 * Delivers what this client's durable subscriptions are owed (replay after
 * subscribe, catch-up after acks or after its outbox had been full) as far as
 * the window and the outbox allow. Call when the outbox has room again.
 */
void fo_client_pump(struct fo_client *c);

/* Durable messages delivered to this client and not yet acked. */
uint32_t fo_client_unacked(const struct fo_client *c);

struct fo_pub_req {
    const char *channel; /* valid, NUL-terminated */
    size_t channel_len;
    const char *msg_id; /* NULL when absent */
    size_t msg_id_len;
    struct proto_payload payload; /* copied */
    uint64_t conn_id;             /* publisher, for pub_done */
    int64_t req_id;
    const char *user; /* for backends' headers (nats engine) */
    const char *client;
};

/*
 * Publishes. RT_OK: *out holds the answer now. RT_AGAIN: the answer comes
 * through sink->pub_done. A retry of a msg_id still in the dedup window gets
 * the original answer with dup=true and delivers nothing.
 */
rt_status fo_publish(struct fo *fo, const struct fo_pub_req *req, struct fo_pub_result *out);

struct fo_stats {
    uint64_t channels;         /* channels with state */
    uint64_t subscriptions;    /* local subscriptions */
    uint64_t published;        /* accepted publishes (not dups) */
    uint64_t dups;             /* publishes answered as duplicates */
    uint64_t deliveries;       /* messages queued to connections */
    uint64_t drops;            /* ephemeral deliveries dropped on full outboxes */
    uint64_t gaps;             /* gap messages sent */
    uint64_t history_messages; /* retained */
    uint64_t history_bytes;
    /* Engine "nats" (0 with the memory engine). */
    uint64_t upstream_subscriptions; /* NATS subscriptions held for local interest (gauge) */
    uint64_t upstream_invalid;       /* NATS messages dropped for an invalid payload or header */
    uint64_t upstream_fetched;       /* durable messages read back from JetStream */
    uint64_t upstream_quiet_probes;  /* quiet durable channels probed for a lost last message */
    /* Subscribes that waited for the engine. */
    uint64_t subs_pending;         /* waiting now (gauge) */
    uint64_t subs_waited;          /* answered after waiting */
    uint64_t sub_timeouts;         /* of them, answered 503 because the engine took too long */
    uint64_t subs_refused_pending; /* refused because too many were waiting (429 / 503) */
    /* The loop reader of the live subjects (nats_live.h); all 0 without it. */
    uint64_t reader_up;               /* 1 while connected (gauge) */
    uint64_t reader_connects;         /* handshakes completed */
    uint64_t reader_reads;            /* socket reads: one loop wake-up each */
    uint64_t reader_messages;         /* messages read */
    uint64_t reader_bad;              /* connections dropped for a protocol error from the server */
    uint64_t reader_confirm_failures; /* subscriptions the server did not confirm in time */
};

void fo_get_stats(const struct fo *fo, struct fo_stats *out);

/* ------------------------------------------------------------------------ */
/* Introspection (introspect.c): what the server API shows. Loop thread.    */

/* One channel as this node knows it. name points into the registry (or the
 * caller's string): use it before the registry changes. */
struct fo_channel_view {
    const char *name;
    size_t name_len;
    bool durable;         /* by the configured patterns */
    bool active;          /* the node holds state for it (subscribers, history, dedup) */
    uint32_t subscribers; /* local subscriptions */
    uint64_t latest;      /* durable and active: the latest seq this node knows, 0 if none */
    uint64_t oldest;      /* durable and active: the oldest seq still retained */
    char epoch[PROTO_EPOCH_MAX + 1]; /* durable and active */
};

/*
 * The channel `name` (valid): RT_OK with *out filled, or RT_NOT_FOUND when
 * the node holds no state for it (out then has name and durable only).
 */
rt_status fo_channel_get(const struct fo *fo, const char *name, size_t len,
                         struct fo_channel_view *out);

#define FO_LIST_MAX 1000 /* channels per page */

struct fo_list_req {
    const char *prefix; /* only names starting with it; NULL or "" for all */
    size_t prefix_len;
    const char *after; /* only names after it (the last name of the previous page); NULL first */
    size_t after_len;
    size_t limit; /* 1..FO_LIST_MAX */
};

/*
 * One page of the channels with state on this node, in byte order of their
 * names: at most req->limit into out[], *n of them, *more when more follow
 * (ask again with after = the last name). One pass over the table:
 * O(channels x log limit), bounded by fo_config.max_channels. RT_INVAL for
 * a limit outside 1..FO_LIST_MAX.
 */
rt_status fo_channel_list(const struct fo *fo, const struct fo_list_req *req,
                          struct fo_channel_view *out, size_t *n, bool *more);

/*
 * Drops expired history and dedup entries and frees channels left with no
 * state. Call about once a second. Ages are measured on the fan-out's own
 * clock (rt_wall_ms, the clock of fo_msg.ts_ms), so now_ms is not used:
 * any clock may be passed.
 */
void fo_tick(struct fo *fo, uint64_t now_ms);

/*
 * Runs what the engine's threads handed over: deliveries from NATS, publish
 * acknowledgements (sink->pub_done), history reads that paused subscriptions
 * were waiting for, connection events. Bounded work per call: if more is
 * left it wakes itself again. Call it when fo_config.wake fired. A no-op
 * for the memory engine. Loop thread.
 */
void fo_service(struct fo *fo);

/*
 * False while the engine cannot serve (nats: disconnected, or the stream is
 * not checked yet): the gateway's /readyz. Always true for memory. Loop thread.
 */
bool fo_ready(const struct fo *fo);

/* ------------------------------------------------------------------------ */
/* The bus: plain subjects of the engine's NATS connection, for other modules */
/* (the presence fleet, geo/fleet.h). Engine "nats" only; loop thread.        */

/* A message from a bus subscription, delivered during fo_service. */
typedef void (*fo_bus_fn)(void *arg, const char *subject, const char *reply, const uint8_t *data,
                          size_t len);

/*
 * Sets the receiver of every bus message. RT_INVAL when the engine has no bus
 * (memory).
 */
rt_status fo_bus_open(struct fo *fo, fo_bus_fn fn, void *arg);
/* Subscribes to subject (NATS wildcards allowed); a handle, or NULL. */
void *fo_bus_subscribe(struct fo *fo, const char *subject);
/* Ends a subscription; messages already on their way may still arrive. */
void fo_bus_unsubscribe(struct fo *fo, void *handle);
/* Publishes (reply may be NULL); buffered while NATS reconnects. */
rt_status fo_bus_publish(struct fo *fo, const char *subject, const char *reply, const uint8_t *data,
                         size_t len);
/*
 * A number that changes whenever bus messages may have been lost: NATS
 * reconnected, a subscription was a slow consumer, or the hand-over to the
 * loop was full. The receiver resyncs when it changes.
 */
uint64_t fo_bus_generation(const struct fo *fo);

#endif
