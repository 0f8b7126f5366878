/*
 * fanout_int.h: internals shared by the files of fanout/ (and its unit
 * tests). Not part of the public interface: the gateway includes fanout.h
 * only.
 *
 * Pieces:
 *   - fo__htab: byte-string keys on top of rt_htab (htab.c).
 *   - struct fo / fo_chan / fo_sub / fo_client: the registry (registry.c),
 *     subscribe and the subscribes that wait for the engine (subscribe.c),
 *     delivery (delivery.c).
 *   - struct fo_engine_ops: what an engine provides under the registry
 *     (engine_memory.c; the nats engine's files say what they do in
 *     nats_int.h).
 *
 * Threads: everything runs on the gateway's loop thread, except inside an
 * engine that says otherwise (the nats engine).
 */
#ifndef FANOUT_INT_H
#define FANOUT_INT_H

#include "fanout.h"

/* -------------------------------------------------------------------- */
/* Hash table (htab.c)                                                    */

/*
 * Tables keyed by byte strings: an rt_htab (common/rt.h) of fo_hnodes whose
 * hash is rt_hash_bytes of the key (keyed per process: channel names and
 * msg_ids are the clients' choice). Embed one in the hashed struct; key
 * points into that struct. Init, free, remove and each are rt_htab's.
 */
struct fo_hnode {
    struct rt_hnode h;
    const char *key;
    size_t key_len;
};

/* The node of t with this key, or NULL. */
struct fo_hnode *fo__htab_find(const struct rt_htab *t, const char *key, size_t len);
/*
 * Sets n's hash from its key (key and key_len set by the caller) and links n
 * into t; no duplicate check. RT_NOMEM only when t has no buckets and none
 * can be allocated.
 */
rt_status fo__htab_insert(struct rt_htab *t, struct fo_hnode *n);

#define FO__CONTAINER(ptr, type, member) RT_CONTAINER(ptr, type, member)

/* -------------------------------------------------------------------- */
/* Messages (msg.c)                                                       */

/*
 * A new message with refs = 1 and owned copies of channel, msg_id (may be
 * NULL) and the payload bytes, all in one allocation. NULL on NOMEM.
 */
struct fo_msg *fo__msg_create(const char *channel, size_t channel_len, const char *msg_id,
                              size_t msg_id_len, const struct proto_payload *payload, bool durable,
                              uint64_t seq, uint64_t ts_ms, size_t headroom);
/* Bytes a message accounts for in history_bytes. */
size_t fo__msg_bytes(const struct fo_msg *m);

/* -------------------------------------------------------------------- */
/* Engine interface                                                       */

struct fo_chan;

/* What the engine knows about a durable channel. */
struct fo_chan_info {
    uint64_t latest;          /* last seq accepted on this channel, 0 if none */
    uint64_t oldest;          /* oldest retained seq, 0 if nothing is retained */
    uint64_t trimmed_through; /* newest seq no longer retained, 0 if none was dropped:
                                 a `since` >= this can be replayed completely */
    char epoch[PROTO_EPOCH_MAX + 1];
};

/*
 * One step of a history read after seq `after`. gap_to != 0 says that seqs
 * gap_from..gap_to (inclusive, gap_from = after + 1) are no longer retained.
 * msg is the first retained message after max(after, gap_to), retained for
 * the caller, or NULL. NULL without a gap: everything up to `latest` has
 * been handed out and the reader is caught up. NULL after a gap: the reader
 * moves to gap_to and asks again (an engine that does not know yet what
 * follows the gap).
 */
struct fo_fetch {
    struct fo_msg *msg;
    uint64_t gap_from;
    uint64_t gap_to;
};

/*
 * An engine. All calls on the loop thread. `eng` is what create returned.
 * Messages the engine accepts are handed to fo__dispatch in seq order per
 * channel, each once; `latest` in chan_info never runs ahead of what fetch
 * can return or report as a gap (this is what makes the catch-up seam exact).
 */
struct fo_engine_ops {
    const char *name;
    rt_status (*create)(struct fo *fo, void **eng);
    void (*destroy)(void *eng); /* after every channel was closed */
    /* Per-channel engine state, stored in ch->eng. */
    rt_status (*chan_open)(void *eng, struct fo_chan *ch);
    void (*chan_close)(void *eng, struct fo_chan *ch);
    /* True when the engine keeps nothing for ch (no history, no dedup). */
    bool (*chan_idle)(void *eng, const struct fo_chan *ch);
    /*
     * The channel's first party arrived (a subscription, or a subscribe
     * waiting for sub_prepare) / the last one left. Never waits for the
     * network. RT_UNAVAILABLE: 503.
     */
    rt_status (*interest_add)(void *eng, struct fo_chan *ch);
    void (*interest_remove)(void *eng, struct fo_chan *ch);
    /*
     * RT_OK: *res is the answer and *msg the accepted message (a reference
     * for the caller, who dispatches it), or NULL for a dup. RT_AGAIN: the
     * engine calls fo__pub_done and fo__dispatch later. Other statuses: the
     * caller answers 503.
     */
    rt_status (*publish)(void *eng, struct fo_chan *ch, const struct fo_pub_req *req,
                         struct fo_pub_result *res, struct fo_msg **msg);
    void (*chan_info)(void *eng, const struct fo_chan *ch, struct fo_chan_info *out);
    /* RT_OK with *out filled, or RT_AGAIN if the engine has to fetch first. */
    rt_status (*fetch)(void *eng, struct fo_chan *ch, uint64_t after, struct fo_fetch *out);
    void (*tick)(void *eng, uint64_t now_ms);
    /*
     * Optional (ready at once when absent). Called by fo_subscribe, with
     * interest held, before chan_info: brings the engine's view of ch up to
     * date for this request (the first subscriber's confirmation and sync
     * point, a resume's latest and oldest retained seqs). RT_OK: ready now.
     * RT_AGAIN: the engine calls fo__sub_ready(fo, op, status) exactly once
     * later, on the loop thread, never from inside one of these operations;
     * it may do so after the registry forgot op (timed out, client gone):
     * that call is ignored. Anything else: 503. Must not wait for the network.
     */
    rt_status (*sub_prepare)(void *eng, struct fo_chan *ch, const struct fo_sub_req *req,
                             uint64_t op);
    /* Optional. Runs what the engine's threads handed over (fo_service). */
    void (*service)(void *eng);
    /* Optional. fo_ready; true when absent. */
    bool (*ready)(const void *eng);
    /* The bus (fanout.h); NULL for an engine without one. */
    void *(*bus_subscribe)(void *eng, const char *subject);
    void (*bus_unsubscribe)(void *eng, void *handle);
    rt_status (*bus_publish)(void *eng, const char *subject, const char *reply, const uint8_t *data,
                             size_t len);
    uint64_t (*bus_generation)(const void *eng);
    /* Optional: the engine's own counters into out (fo_get_stats). */
    void (*stats)(const void *eng, struct fo_stats *out);
};

extern const struct fo_engine_ops fo__engine_memory;
extern const struct fo_engine_ops fo__engine_nats;

/* -------------------------------------------------------------------- */
/* Registry                                                               */

/* A local subscription: one client on one channel. */
struct fo_sub {
    uint64_t conn_id; /* client->conn_id: dispatch reads it without touching the client */
    struct fo_client *client;
    struct fo_chan *chan;
    struct fo_sub *prev, *next; /* the client's list */
    struct fo_sub *grave_next;  /* freed when the registry is no longer busy */
    uint32_t slot;              /* index in chan->subs */
    bool durable;
    bool live; /* durable: takes messages as they are dispatched */
    bool dead; /* removed; memory kept until the registry is not busy */
    /* Durable only. */
    uint64_t cursor;   /* last seq delivered or skipped by a gap */
    uint64_t *unacked; /* ring of delivered, unacked seqs, increasing */
    uint32_t ua_head, ua_len, ua_cap;
};

struct fo_chan {
    struct fo_hnode node; /* key = name */
    bool durable;
    struct fo_sub **subs; /* NULL slots while dispatching (removed subs) */
    uint32_t n_slots, cap;
    uint32_t n_subs;    /* subs that are not dead */
    uint32_t n_waiting; /* subscribes waiting for the engine (fo_sub_op) */
    uint32_t holes;     /* NULL slots left by removals during a dispatch */
    uint32_t iterating; /* dispatch loops running over subs: do not reorder */
    uint32_t pins;      /* users outside the loops (queued dispatch, publish) */
    bool idle_queued;   /* on fo->idle_chans */
    struct fo_chan *idle_next;
    void *eng; /* engine's per-channel state */
    size_t name_len;
    char name[]; /* NUL-terminated */
};

/*
 * A subscribe waiting for the engine (fo_subscribe answered RT_AGAIN). It
 * holds interest in its channel (chan->n_waiting) until it is answered.
 */
struct fo_sub_op {
    struct fo_hnode node; /* in fo->sub_ops, key = the bytes of id */
    uint64_t id;
    struct fo_client *client;
    struct fo_chan *chan;
    struct fo_sub_op *cprev, *cnext; /* the client's */
    struct fo_sub_op *older, *newer; /* the node's, oldest (first to time out) first */
    uint64_t deadline_ms;            /* on fo's clock */
    int64_t req_id;
    bool has_since;
    uint64_t since;
    size_t epoch_len; /* 0: no epoch given */
    char epoch[PROTO_EPOCH_MAX + 1];
};

struct fo_client {
    struct fo *fo;
    uint64_t conn_id;
    struct fo_sub *head, *tail;
    uint32_t n_subs;
    struct fo_sub_op *ops; /* its subscribes waiting for the engine */
    uint32_t n_pending;
    uint32_t unacked;  /* durable messages delivered, not acked, all subs */
    uint32_t n_paused; /* durable subs that are not live */
    bool pumping, repump, dead;
    struct fo_client *grave_next;
};

/* A dispatch deferred because a sink callback published (see fo__dispatch). */
struct fo_pending {
    struct fo_pending *next;
    struct fo_chan *chan;
    struct fo_msg *msg;
};

struct fo {
    struct fo_config cfg; /* defaults applied; ephemeral patterns copied */
    char **ephemeral;
    struct fo_sink sink;
    const struct fo_engine_ops *ops;
    void *eng;
    struct rt_htab chans;
    struct fo_stats stats;
    uint64_t (*clock)(void *ctx); /* now in ms, wall clock; tests inject */
    void *clock_ctx;
    /* Re-entrancy: while busy (inside a sink callback), frees and
     * dispatches are deferred to the outermost exit. */
    uint32_t busy;
    bool draining;
    struct fo_pending *pending_head, *pending_tail;
    struct fo_sub *grave_subs;
    struct fo_client *grave_clients;
    struct fo_chan *idle_chans;
    fo_bus_fn bus_fn; /* receiver of bus messages (fo_bus_open) */
    void *bus_arg;
    /* Subscribes waiting for the engine (subscribe.c). */
    struct rt_htab sub_ops;
    struct fo_sub_op *ops_oldest, *ops_newest;
    uint64_t next_op_id;
};

/*
 * Creates the fan-out on an engine given by its operations rather than by
 * name: the unit tests' stand-in engines. As fo_create otherwise.
 */
rt_status fo__create_with(const struct fo_config *cfg, const struct fo_sink *sink,
                          const struct fo_engine_ops *ops, struct fo **out);

/* Callback regions: see registry.c. Leaving the outermost one settles. */
void fo__busy_enter(struct fo *fo);
void fo__busy_leave(struct fo *fo);
/* Removes the NULL slots of ch->subs once no dispatch iterates it. */
void fo__chan_compact(struct fo_chan *ch);
/* The client's subscription to channel, or NULL. */
struct fo_sub *fo__find_sub(const struct fo_client *c, const char *channel, size_t len);

/* Registry internals subscribe.c uses (registry.c). */
/* The channel's state, created when `create` (RT_LIMIT past max_channels). */
rt_status fo__chan_lookup(struct fo *fo, const char *name, size_t len, bool create,
                          struct fo_chan **out);
/* ch may have become idle: free it now, or when the current callback region ends. */
void fo__chan_release(struct fo *fo, struct fo_chan *ch);
rt_status fo__chan_add_slot(struct fo_chan *ch, struct fo_sub *s);
void fo__chan_remove_slot(struct fo_chan *ch, struct fo_sub *s);
/* Frees s now, or after the current callback region. */
void fo__sub_bury(struct fo *fo, struct fo_sub *s);

/* subscribe.c */
/*
 * Removes s from its channel and client (freed later when busy) and drops
 * the channel's interest if s was its last party. Returns the window space
 * s held. The channel is left for fo__chan_release.
 */
uint32_t fo__sub_detach(struct fo *fo, struct fo_sub *s);
/* Forgets c's waiting subscribes without answering them (the client is going). */
void fo__client_drop_ops(struct fo_client *c);
/*
 * The engine finished preparing waiting subscribe `op` (sub_prepare said
 * RT_AGAIN): answers it through sink->sub_done (503 unless st is RT_OK) and,
 * on success, pumps the client. Unknown ops are ignored. Loop thread.
 */
void fo__sub_ready(struct fo *fo, uint64_t op, rt_status st);
/* Answers 503 to the waiting subscribes whose time is up (fo_tick). */
void fo__sub_expire(struct fo *fo, uint64_t now_ms);
/* Frees every waiting subscribe without answering (fo_destroy). */
void fo__sub_ops_free(struct fo *fo);

/* Now in ms from the injected clock (rt_wall_ms by default). */
uint64_t fo__now(const struct fo *fo);
/* Test hook: replace the clock used for ts, history age and dedup. */
void fo__set_clock(struct fo *fo, uint64_t (*clock)(void *ctx), void *ctx);

/*
 * Hands an accepted message to the local subscribers of ch (borrowed: retain
 * to keep). Called by fo_publish for synchronous engines and by async
 * engines. Deferred (in order) when called from inside a sink callback.
 */
void fo__dispatch(struct fo *fo, struct fo_chan *ch, struct fo_msg *msg);
/* An async publish finished: forwards to sink->pub_done. */
void fo__pub_done(struct fo *fo, uint64_t conn_id, int64_t req_id, const struct fo_pub_result *res);
/* The engine dropped state of ch (e.g. in tick): free ch if nothing holds it. */
void fo__chan_check_idle(struct fo *fo, struct fo_chan *ch);
/*
 * Pumps every client that has a paused durable subscription on ch: an async
 * engine calls it when history a fetch answered RT_AGAIN for has arrived.
 */
void fo__chan_repump(struct fo *fo, struct fo_chan *ch);

#endif
