/*
 * users.h: users across the fleet (docs/users.md): per-user limits that
 * hold across every gateway of a fleet (connections, publishes per second),
 * and channel presence (who is in a channel, with join and leave events).
 *
 * Limits. Every node keeps, for each user it knows, a replica of the user's
 * publish bucket and the list of the user's connections on every node. A
 * publish takes a token from the local replica at once (no round trip) and
 * is reported, batched, to the other nodes, which take it from their own
 * replicas; a replica may go into debt, so over time the fleet accepts the
 * bucket's rate and no more, and over any window at most
 * (k - 1) * (burst + rate * D) more than one bucket would (k: nodes where
 * the user publishes, D: the report interval plus the bus's latency). A
 * connection is refused when the user's known connections reach the limit;
 * when two nodes accepted the last place at once, every node sees the same
 * list, ranked by (accept time, client id), and the owner of the newest
 * beyond the limit closes it (on_evict).
 *
 * Presence. A node follows the channels its connections take part in: it
 * subscribes to the channel's subject, asks every node for a snapshot of
 * its members there, then applies the deltas. Members are users: a user's
 * connections on every node count as one member, which joins with its first
 * connection and leaves with its last. Every change a node publishes has a
 * number v, increasing per node; a snapshot answer carries the node's v when
 * it answered. Events are made from this node's table, so a reply (the table
 * when a connection starts watching) and the events after it (the table's
 * changes) always agree. Past max_members a channel switches to counting:
 * no member lists and no join/leave, a count event at most once a second.
 *
 * Nodes. Heartbeats every ttl/3 keep a node's connections and members; a
 * node silent for ttl_ms is dropped with them. A node makes a new id at
 * every start. Lost messages (the bus reconnected or dropped some: its
 * generation moved) are repaired by full states and snapshots again.
 *
 * Without a bus (the memory engine) everything above holds on one node.
 * No I/O of its own: tests connect several in memory. Loop thread.
 */
#ifndef USERS_H
#define USERS_H

#include "rt.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define USERS_NODE_MAX   32   /* bytes of a node id */
#define USERS_USER_MAX   128  /* bytes of a user id */
#define USERS_CLIENT_MAX 32   /* bytes of a client id */
#define USERS_INFO_MAX   1024 /* bytes of a user's info (a compact JSON object) */

/* The bus (NATS subjects and payloads); publish NULL: one node, no bus. */
struct users_bus {
    /* Publishes; reply may be NULL. A failure only counts (the next resync repairs). */
    rt_status (*publish)(void *ctx, const char *subject, const char *reply, const uint8_t *data,
                         size_t len);
    /* Starts receiving `subject`; returns a handle, or NULL on failure. */
    void *(*subscribe)(void *ctx, const char *subject);
    void (*unsubscribe)(void *ctx, void *handle);
    void *ctx;
};

enum users_event_kind {
    USERS_EV_JOIN,  /* a user's first connection entered the channel */
    USERS_EV_LEAVE, /* its last one left */
    USERS_EV_COUNT, /* counting: the number of members changed (or counting began) */
    USERS_EV_SYNC,  /* counting ended: here is the whole list again */
};

/* A change of a channel's presence, for the local connections watching it. */
struct users_event {
    enum users_event_kind kind;
    const char *channel;
    size_t channel_len;
    const char *user; /* join, leave */
    size_t user_len;
    const char *info; /* join: a compact JSON object, or NULL */
    size_t info_len;
    uint32_t clients;         /* join: the user's connections in the channel now */
    uint64_t count;           /* members now */
    const uint64_t *watchers; /* the connections to tell */
    size_t n_watchers;
};

/* A member as users_presence_each shows it. */
struct users_member_view {
    const char *user;
    size_t user_len;
    const char *info; /* or NULL */
    size_t info_len;
    uint32_t clients; /* connections in the channel, all nodes */
};

/* Called after the module's own work; the callee may call any users_* function. */
typedef void (*users_event_fn)(void *arg, const struct users_event *ev);
/* A presence want is ready: the channel's members are known (partial: some node did not
 * answer in time). */
typedef void (*users_ready_fn)(void *arg, uint64_t ticket, bool partial);
/* A local connection is beyond its user's connection limit: close it. Called once per
 * connection. */
typedef void (*users_evict_fn)(void *arg, uint64_t conn);

struct users_config {
    const char *node;          /* 1..USERS_NODE_MAX of [A-Za-z0-9_-], new at every start */
    struct users_bus bus;      /* publish NULL: one node */
    uint32_t pub_rate;         /* publishes per second per user; 0: no limit */
    uint32_t pub_burst;        /* 0 = pub_rate */
    uint32_t max_conns;        /* connections per user; 0: no limit */
    uint32_t ttl_ms;           /* a silent node's state goes after this; 0 = 30000 */
    uint32_t heartbeat_ms;     /* 0 = ttl_ms / 3 */
    uint32_t snapshot_wait_ms; /* longest wait for presence snapshots; 0 = 1000 */
    uint32_t linger_ms;        /* a channel nobody here watches stays followed; 0 = 30000 */
    uint32_t resync_ms;        /* full states and snapshots again this often; 0 = 300000 */
    uint32_t max_members;      /* per channel, then counting; 0 = 1000 */
    uint32_t max_channels;     /* channels followed at once; 0 = 10000 */
    uint32_t max_users;        /* users known (local ones always are); 0 = 1000000 */
    users_event_fn on_event;
    users_ready_fn on_ready;
    users_evict_fn on_evict;
    void *arg;
};

struct users;

/* RT_INVAL for a bad node id (with a bus), RT_NOMEM, RT_UNAVAILABLE when a subscription failed. */
rt_status users_create(const struct users_config *cfg, uint64_t now_ms, struct users **out);
/* Says goodbye on the bus (the others drop this node at once), unsubscribes, frees. NULL is a
 * no-op. */
void users_destroy(struct users *u);

/* ------------------------------------------------------------------------ */
/* Connections and publishes                                                 */

struct users_conn_in {
    uint64_t conn; /* the gateway's connection id */
    const char *user;
    size_t user_len;
    const char *client; /* unique in the fleet */
    size_t client_len;
    const char *info; /* the token's info (compact JSON object), or NULL */
    size_t info_len;
    bool anonymous;   /* its own user: never reported, never over the connection limit */
    uint64_t wall_ms; /* accept time, ms since 1970: the ranking of the limit */
};

/*
 * A connection of a user arrives (at `connect`). RT_LIMIT when the user's
 * connections known to this node already reach max_conns (*retry_after_ms:
 * when one of them may be gone, if a silent node holds some; else 0);
 * RT_CONFLICT for a conn already open; RT_INVAL, RT_NOMEM.
 */
rt_status users_conn_open(struct users *u, const struct users_conn_in *in, uint64_t now_ms,
                          uint32_t *retry_after_ms);
/* The connection is gone: it leaves every channel, its place is free. Unknown conns: no-op. */
void users_conn_close(struct users *u, uint64_t conn);

/*
 * Takes one publish from the connection's user (its replica of the fleet's
 * bucket). False with *retry_after_ms when there is none. An unknown conn or
 * no pub_rate: true.
 */
bool users_pub_take(struct users *u, uint64_t conn, uint64_t now_ms, uint32_t *retry_after_ms);

/* ------------------------------------------------------------------------ */
/* Channel presence                                                          */

/*
 * Interest in channel's presence before a connection enters it: follows the
 * channel (its snapshot is asked for) unless it is already. *ready true: its
 * members are known now. Else on_ready(*ticket) comes once, within
 * snapshot_wait_ms (unless users_presence_release first). RT_LIMIT
 * (max_channels), RT_INVAL, RT_NOMEM, RT_UNAVAILABLE (the subscription failed).
 */
rt_status users_presence_want(struct users *u, const char *channel, size_t len, uint64_t now_ms,
                              uint64_t *ticket, bool *ready);
/* Forgets a want that is not ready yet. Unknown tickets are ignored. */
void users_presence_release(struct users *u, uint64_t ticket);

/*
 * conn (open) enters channel: its user's count there grows (the others get
 * join if it is the user's first connection), and conn watches the channel
 * from now on. RT_CONFLICT if it already is in it, RT_NOT_FOUND for an
 * unknown conn, RT_LIMIT (max_channels), RT_NOMEM.
 */
rt_status users_presence_enter(struct users *u, uint64_t conn, const char *channel, size_t len);
/* conn leaves channel (leave for the others if it was its user's last). RT_NOT_FOUND if not in. */
rt_status users_presence_leave(struct users *u, uint64_t conn, const char *channel, size_t len);

struct users_presence_view {
    uint64_t count; /* members */
    bool counting;  /* past max_members: no list */
    bool partial;   /* some node's members may be missing (it did not answer a snapshot) */
};
/*
 * The channel as this node knows it now; with fn (not counting), every
 * member, in no particular order. RT_NOT_FOUND when it is not followed.
 */
rt_status users_presence_view(struct users *u, const char *channel, size_t len,
                              struct users_presence_view *out,
                              void (*fn)(void *arg, const struct users_member_view *m), void *arg);

/* ------------------------------------------------------------------------ */
/* The bus and the clock                                                     */

/* One message from a subscription. Anything malformed is counted and dropped. */
void users_receive(struct users *u, const char *subject, const char *reply, const uint8_t *data,
                   size_t len, uint64_t now_ms);
/* Publishes what changed since the last flush: connections, publishes, presence. */
void users_flush(struct users *u);
/* True while something waits for users_flush. */
bool users_pending(const struct users *u);
/*
 * Heartbeats, node expiry, snapshot deadlines, lingering channels, count
 * events, forgetting idle users. bus_gen is the bus's generation: when it
 * moves, this node asks for everybody's state again.
 */
void users_tick(struct users *u, uint64_t now_ms, uint64_t bus_gen);

struct users_stats {
    uint64_t users;         /* known (gauge) */
    uint64_t local_conns;   /* connections on this node (gauge) */
    uint64_t remote_conns;  /* of other nodes, known (gauge) */
    uint64_t nodes;         /* other nodes alive (gauge) */
    uint64_t channels;      /* channels followed (gauge) */
    uint64_t members;       /* members of them, all nodes (gauge) */
    uint64_t conns_refused; /* connections over the limit at open */
    uint64_t conns_evicted; /* connections closed later (two nodes took the last place) */
    uint64_t pubs_refused;  /* publishes over the user's rate */
    uint64_t events;        /* presence events made */
    uint64_t messages_out;  /* bus messages published */
    uint64_t messages_in;   /* bus messages applied */
    uint64_t snapshots;     /* presence snapshot requests sent */
    uint64_t snapshots_partial;
    uint64_t full_states; /* full connection states published */
    uint64_t resyncs;
    uint64_t nodes_expired;
    uint64_t bad_messages;
    uint64_t publish_failures;
    uint64_t users_untracked; /* remote users not kept: max_users */
};

void users_get_stats(const struct users *u, struct users_stats *st);

#endif
