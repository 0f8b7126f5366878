/*
 * fleet.h: presence across nodes (PROTOCOL.md section 4; docs/presence.md
 * has the subjects and messages).
 *
 * Every node keeps its own members in its index (geo.h) and publishes their
 * changes, batched, on a bus subject keyed by space and cell at the share
 * precision (default 5: cells of about 5 x 5 km). A node follows only the
 * cells its clients query or watch: on first need it subscribes to the
 * cells' subjects, asks every node for a snapshot of its members there, and
 * from then on applies the deltas; the remote members sit in the same index
 * (owner GEO_FLEET_CONN_BIT | node serial), so `near` and the watch events
 * work unchanged. Heartbeats keep a node's members alive: a node silent for
 * ttl_ms is dropped with all its members (leave events). A node id is made
 * anew at every start and snapshots carry only a node's own members, so a
 * restarted node never brings its old entries back.
 *
 * Ordering: every change a node publishes has a number v, increasing per
 * node, and a snapshot reply carries the node's v at reply time as the
 * version of every member in it. A remote member keeps the version of the
 * state it holds and only a higher one replaces it, so deltas apply at once,
 * even while a snapshot is awaited, in whatever order the follows see them.
 * A lost delta (the bus reconnected, or it dropped messages for a slow
 * consumer) is repaired by a resync: a fresh snapshot of every followed cell,
 * after which the remote members the snapshot did not name (and that did not
 * change since) are dropped. A node whose publish failed says so in its next
 * heartbeat, and the others resync from it. Every resync_ms each node also
 * resyncs on its own, which repairs anything else (a forged or corrupted bus
 * message, a loss nobody noticed).
 *
 * No I/O of its own: it talks through struct geo_fleet_bus, so tests connect
 * several fleets in memory and the gateway connects it to NATS. Loop thread.
 */
#ifndef GEO_FLEET_H
#define GEO_FLEET_H

#include "geo.h"

#define GEO_FLEET_CONN_BIT    (1ull << 63) /* index owner ids of remote members */
#define GEO_FLEET_NODE_MAX    32           /* bytes of a node id */
#define GEO_FLEET_SUBJECT_MAX 160

/* The bus (NATS subjects and payloads). */
struct geo_fleet_bus {
    /* Publishes; reply may be NULL. A failure only counts (the next resync repairs). */
    rt_status (*publish)(void *ctx, const char *subject, const char *reply, const uint8_t *data,
                         size_t len);
    /* Starts receiving `subject` (may end in ".>"); returns a handle, or NULL on failure. */
    void *(*subscribe)(void *ctx, const char *subject);
    void (*unsubscribe)(void *ctx, void *handle);
    void *ctx;
};

/*
 * A want became ready: every cell it needs is followed and its snapshot is
 * in. `partial` when some node did not answer in time (its members may be
 * missing until its deltas or heartbeat bring them). Called from
 * geo_fleet_receive or geo_fleet_tick, after the fleet's own work; the
 * callee may call any geo / geo_fleet function.
 */
typedef void (*geo_fleet_ready_fn)(void *arg, uint64_t ticket, bool partial);

struct geo_fleet_config {
    struct geo *geo;            /* the index; the fleet owns its remote members */
    const char *node;           /* 1..GEO_FLEET_NODE_MAX of [A-Za-z0-9_-], new at every start */
    int share_precision;        /* 1..index precision; 0 = min(5, index precision) */
    uint32_t ttl_ms;            /* a silent node's members go after this; 0 = 30000 */
    uint32_t heartbeat_ms;      /* 0 = ttl_ms / 3 */
    uint32_t linger_ms;         /* a cell followed only for near is dropped after; 0 = 30000 */
    uint32_t snapshot_wait_ms;  /* longest wait for snapshot replies; 0 = 1000 */
    uint32_t max_follows;       /* cells (prefixes) followed at once; 0 = 10000 */
    uint32_t max_owner_follows; /* cells charged to one owner at once (see geo_fleet_want);
                                 * 0 = max(64, max_follows / 16) */
    uint32_t resync_ms;         /* every followed cell is snapshotted again this often, so
                                 * whatever went wrong unnoticed is put right; 0 = 300000 */
    struct geo_fleet_bus bus;
    geo_fleet_ready_fn on_ready;
    void *arg;
};

struct geo_fleet;

/*
 * Creates the fleet, subscribes to the heartbeat, snapshot and reply
 * subjects and says hello (the other nodes answer with their heartbeats).
 * RT_INVAL for a bad node id or precision, RT_NOMEM, RT_UNAVAILABLE when a
 * subscription failed.
 */
rt_status geo_fleet_create(const struct geo_fleet_config *cfg, uint64_t now_ms,
                           struct geo_fleet **out);
/* Unsubscribes and frees; the index keeps its remote members. NULL is a no-op. */
void geo_fleet_destroy(struct geo_fleet *f);

/* This node's local changes: as geo_set / geo_clear / geo_remove_conn, and published. */
rt_status geo_fleet_set(struct geo_fleet *f, const struct geo_member_in *in,
                        char cell[GEO_CELL_BUF]);
rt_status geo_fleet_clear(struct geo_fleet *f, const char *space, size_t space_len,
                          const char *client, size_t client_len);
rt_status geo_fleet_remove_conn(struct geo_fleet *f, uint64_t conn);

/*
 * Interest in a circle, for a near query (hold false: the cells stay followed
 * for linger_ms after the last use) or a watch (hold true: until
 * geo_fleet_release). *ticket gets the want's id. *ready is true when the
 * index can answer now; else on_ready(ticket) comes later, once. RT_INVAL,
 * RT_AGAIN (owner over its share: see below), RT_LIMIT (max_follows),
 * RT_NOMEM, RT_UNAVAILABLE (a subscription failed). A want refused with
 * RT_AGAIN or RT_LIMIT starts following nothing.
 *
 * owner (a connection; 0 = nobody) is charged with every cell the want
 * starts following, and a hold takes over the charge of the cells it holds
 * (the last holder pays). The charge lasts as long as the cell is followed
 * (held, then lingering), or until geo_fleet_forget(owner). An owner charged
 * with cells gets RT_AGAIN for a want that would take it past
 * max_owner_follows; wants on cells already followed are never refused, and
 * an owner charged with nothing may always start one want. So one client
 * querying many areas uses up its own share, not the node's.
 */
rt_status geo_fleet_want(struct geo_fleet *f, uint64_t owner, const char *space, size_t space_len,
                         double lat, double lon, double radius_m, bool hold, uint64_t now_ms,
                         uint64_t *ticket, bool *ready);
/* Ends a hold, or forgets a pending want (no on_ready then). Unknown tickets are ignored. */
void geo_fleet_release(struct geo_fleet *f, uint64_t ticket);

/*
 * The owner is gone (the connection closed; release its holds first): the
 * cells charged to it stay followed until their linger ends but count against
 * nobody's share, only max_follows. Unknown owners are ignored. O(1).
 */
void geo_fleet_forget(struct geo_fleet *f, uint64_t owner);
/* Cells charged to owner now. */
uint32_t geo_fleet_owner_follows(const struct geo_fleet *f, uint64_t owner);

/* One message from a subscription. Anything malformed is counted and dropped. */
void geo_fleet_receive(struct geo_fleet *f, const char *subject, const char *reply,
                       const uint8_t *data, size_t len, uint64_t now_ms);

/* Publishes the changes made since the last flush (call once per loop iteration, or less often). */
void geo_fleet_flush(struct geo_fleet *f);
/* True while changes wait for geo_fleet_flush. */
bool geo_fleet_pending(const struct geo_fleet *f);

/*
 * Heartbeats, node expiry, snapshot deadlines, lingering cells. bus_gen is
 * the bus's generation: it changes when the bus reconnected or lost
 * messages, and the fleet then resyncs every followed cell.
 */
void geo_fleet_tick(struct geo_fleet *f, uint64_t now_ms, uint64_t bus_gen);

struct geo_fleet_stats {
    uint64_t follows;         /* cells (prefixes) followed */
    uint64_t follows_pending; /* of them, waiting for a snapshot */
    uint64_t nodes;           /* other nodes alive */
    uint64_t remote_members;  /* members of other nodes in the index */
    uint64_t wants_pending;
    uint64_t deltas_out;   /* member changes published */
    uint64_t messages_out; /* bus messages published */
    uint64_t deltas_in;    /* member changes applied from other nodes */
    uint64_t snapshots;    /* snapshot requests sent */
    uint64_t snapshots_partial;
    uint64_t snapshots_answered;
    uint64_t resyncs;
    uint64_t nodes_expired;
    uint64_t bad_messages;
    uint64_t publish_failures;
    uint64_t owners;        /* live owners charged with cells */
    uint64_t refused_share; /* wants refused: owner over max_owner_follows */
    uint64_t refused_limit; /* wants refused: max_follows */
};

void geo_fleet_get_stats(const struct geo_fleet *f, struct geo_fleet_stats *st);

#endif
