/*
 * users_int.h: what the files of users across the fleet share (users.h is
 * the outside's view). One file a concern:
 *
 *   users_wire.c   the bus messages and subjects (pure; users_wire.h)
 *   users.c        create / destroy, receiving (dispatch by subject), flush, time, stats
 *   nodes.c        the other nodes: table, heartbeats, silence, goodbyes
 *   limits.c       users, their connections on every node and their publish buckets;
 *                  the reports and full states that carry them
 *   members.c      a channel's members: holders per node, join / leave, counting, events
 *   chans.c        the channels followed: subscriptions, snapshots asked and answered,
 *                  deltas, lingering
 *   presence.c     what the gateway calls: wants, entering, leaving, the view
 *
 * Threads: all of it runs on the loop thread (users.h), so no field here is
 * behind a lock and none carries a {lock} tag.
 */
#ifndef USERS_INT_H
#define USERS_INT_H

#include "protocol.h"
#include "users.h"
#include "users_wire.h"

_Static_assert(USERS_WIRE_NODE_MAX == USERS_NODE_MAX, "one node id size");
_Static_assert(USERS_WIRE_USER_MAX == USERS_USER_MAX, "one user id size");
_Static_assert(USERS_WIRE_CLIENT_MAX == USERS_CLIENT_MAX, "one client id size");
_Static_assert(USERS_WIRE_INFO_MAX == USERS_INFO_MAX, "one info size");

#define USERS_CHUNK_BYTES    (256u * 1024u) /* a bus message with entries is split beyond this */
#define USERS_CHUNK_ENTRIES  2000u
#define USERS_WARMUP_MS      300u  /* snapshots wait this long at start for nodes to be heard */
#define USERS_HELLO_GAP_MS   100u  /* hellos are answered at most this often */
#define USERS_FULL_GAP_MS    1000u /* full states go out at most this often */
#define USERS_RESYNC_GAP_MS  1000u /* a wanted resync waits this long after the last */
#define USERS_COUNT_EVERY_MS 1000u /* count events of a counting channel, at most */
#define USERS_GC_EVERY_MS    5000u /* idle users are forgotten this often */
#define USERS_CONN_RETRY_MS  5000u /* retry_after_ms of a refused connection, by default */
#define USERS_NODES_MAX      4096u /* other nodes tracked; ids beyond are ignored (a flood) */
#define USERS_LOCAL          0u    /* the node token of this node's own entries */

/* Another node heard from. */
struct users_node {
    struct rt_hnode h; /* by id */
    struct users_node *prev, *next;
    uint64_t token; /* marks its connections and members (a serial, never USERS_LOCAL) */
    uint64_t last_seen;
    uint64_t gen;        /* its bus generation, from heartbeats */
    uint32_t full_epoch; /* its latest full state: entries not in it go at its end */
    size_t id_len;
    char id[USERS_NODE_MAX + 1];
};

/* One connection of a user, on this node (node USERS_LOCAL) or another. */
struct conn_entry {
    uint64_t node;
    uint64_t ts;    /* accept time, ms since 1970 */
    uint64_t conn;  /* local: the gateway's id */
    uint32_t epoch; /* remote: its node's full state that named it last */
    bool evicted;   /* local: on_evict was called */
    uint8_t client_len;
    char client[USERS_CLIENT_MAX + 1];
};

/*
 * A user this node knows: one of its connections is here, or another node
 * reported it (its connections, or publishes its replica must take).
 */
struct users_user {
    struct rt_hnode h; /* by name */
    struct users_user *dirty_next;
    bool dirty;         /* on the list of users to report */
    bool conns_changed; /* its connections here changed since the last report */
    bool anonymous;     /* its own user, on this node only: never reported */
    uint32_t local_conns;
    uint64_t pubs_pending;    /* publishes here not reported yet */
    struct rt_bucket bucket;  /* the replica of the fleet's bucket; may be in debt */
    struct conn_entry *conns; /* every node's, sorted by (ts, client): the limit's order */
    uint32_t n_conns, cap_conns;
    size_t name_len;
    char name[];
};

/* A local connection (opened at `connect`). */
struct users_conn {
    struct rt_hnode h; /* by conn */
    uint64_t conn;
    struct users_user *user;
    char *info; /* or NULL */
    size_t info_len;
    struct users_chan **chans; /* the channels it entered */
    uint32_t n_chans, cap_chans;
};

/* What one node holds of a member: its connections in the channel. */
struct holder {
    uint64_t node;  /* USERS_LOCAL: this node */
    uint64_t v;     /* the node's change number of this state */
    uint64_t named; /* the snapshot request that named it last */
    uint32_t clients;
    uint32_t info_len;
    char *info; /* owned, or NULL */
};

/* A user present in a channel: on one node or several. */
struct chan_member {
    struct rt_hnode h; /* by user */
    uint32_t clients;  /* the holders' sum */
    struct holder *holders;
    uint32_t n_holders, cap_holders;
    size_t user_len;
    char user[];
};

/* A user whose local state in a channel changed since the last flush. */
struct chan_dirty {
    struct rt_hnode h; /* by user */
    struct chan_dirty *next;
    size_t len;
    char user[];
};

/* A node asked for a snapshot, and how far its answer got. */
struct snap_peer {
    uint64_t token;
    uint64_t watermark; /* its v when it answered */
    bool answered;      /* first chunk in */
    bool done;          /* last chunk in, or the node is gone */
};

/* A snapshot awaited for one channel. */
struct chan_snapshot {
    uint64_t req;
    uint64_t deadline;
    struct snap_peer *peers;
    uint32_t n_peers, cap_peers;
};

/* A channel followed: its subscription, members, watchers and snapshot. */
struct users_chan {
    struct rt_hnode h; /* by name */
    struct users_chan *prev, *next;
    struct users_chan *dirty_next;
    bool dirty_listed;
    bool ready;    /* a snapshot finished */
    bool partial;  /* ... without some node's answer */
    bool counting; /* past max_members */
    void *sub;
    uint64_t last_used;
    uint64_t last_snapshot;        /* when the last one was asked for */
    uint64_t count_told, count_at; /* the last count event */
    struct chan_snapshot *snap;    /* while one is awaited */
    struct rt_htab members;        /* struct chan_member */
    struct rt_htab dirty;          /* struct chan_dirty */
    struct chan_dirty *dirty_head;
    uint64_t *watchers; /* local connections in it */
    uint32_t n_watchers, cap_watchers;
    uint64_t *waiters; /* tickets of wants */
    uint32_t n_waiters, cap_waiters;
    size_t name_len;
    char name[PROTO_CHANNEL_MAX + 1];
};

/* A want not ready yet. */
struct presence_want {
    struct rt_hnode h; /* by ticket */
    uint64_t ticket;
    struct users_chan *chan;
};

struct ready_report {
    uint64_t ticket;
    bool partial;
};

struct users {
    struct users_bus bus;
    bool has_bus;
    users_event_fn on_event;
    users_ready_fn on_ready;
    users_evict_fn on_evict;
    void *arg;
    struct rt_bucket_cfg pub;
    uint32_t max_conns, ttl_ms, hb_ms, wait_ms, linger_ms, resync_ms, max_members, max_channels,
        max_users;
    char node[USERS_NODE_MAX + 1];
    size_t node_len;
    char reply_subject[USERS_WIRE_SUBJECT_MAX];

    struct rt_htab nodes; /* struct users_node */
    struct users_node *node_list;
    uint64_t node_serial;
    struct rt_htab users; /* struct users_user */
    struct users_user *dirty_head, *dirty_tail;
    struct rt_htab conns; /* struct users_conn */
    struct rt_htab chans; /* struct users_chan */
    struct users_chan *chan_list, *dirty_chans;
    struct rt_htab wants; /* struct presence_want */
    uint64_t next_ticket;

    uint64_t v;        /* presence changes published so far */
    uint64_t next_req; /* snapshot requests */
    uint64_t now, warm_until, last_hb, last_hello_answer, last_hello, last_resync, last_full,
        last_gc;
    uint64_t bus_gen;
    uint64_t lost_out; /* own publishes that failed: part of the generation others see */
    bool bus_gen_known, resync_wanted, full_wanted;
    uint64_t remote_conns;

    void *sub_hb, *sub_conns, *sub_ask, *sub_ask_me, *sub_answer;
    struct proto_buf out; /* the message being sent */

    struct ready_report *readyq;
    uint32_t n_ready, cap_ready;
    struct users_stats st;
};

/* ------------------------------------------------------------------------ */
/* users.c                                                                   */

/* Publishes out on subject (a failure counts toward the generation others see). */
void users__publish(struct users *u, const char *subject, const char *reply,
                    const struct proto_buf *b);

/* ------------------------------------------------------------------------ */
/* nodes.c                                                                   */

struct users_node *users__node_find(const struct users *u, const char *id, size_t len);
/* Finds or makes (created) the node of id; NULL for a bad id or a full table. */
struct users_node *users__node_get(struct users *u, const char *id, size_t len, bool *created);
/* A message from m's node: it is alive; NULL (counted bad) when it cannot be tracked. */
struct users_node *users__heard_from(struct users *u, const struct users_wire_msg *m,
                                     bool *created);
void users__on_heartbeat(struct users *u, const struct users_wire_msg *m);
void users__send_heartbeat(struct users *u, bool hello, bool bye);
void users__expire_nodes(struct users *u);
void users__free_nodes(struct users *u);

/* ------------------------------------------------------------------------ */
/* limits.c                                                                  */

struct users_user *users__user_find(const struct users *u, const char *name, size_t len);
struct users_conn *users__conn_find(const struct users *u, uint64_t conn);
void users__on_conns(struct users *u, const struct users_wire_msg *m);
/* The node is gone: its connections are forgotten. */
void users__limits_drop_node(struct users *u, uint64_t token);
/* Publishes the users to report; with full, this node's whole state after them. */
void users__flush_limits(struct users *u, bool full);
/* Forgets users with no connection anywhere and a full bucket. */
void users__gc_users(struct users *u);
void users__free_users(struct users *u);

/* ------------------------------------------------------------------------ */
/* members.c                                                                 */

struct chan_member *users__member_find(const struct users_chan *ch, const char *user, size_t len);
/* The info shown for a member: its local holder's, else the first one's that has one. */
const char *users__member_info(const struct chan_member *m, size_t *len);
/*
 * Sets what node holds of user in ch (clients 0: nothing) at version v
 * (named: the snapshot request that named it, or 0), and tells the watchers
 * when the user joins or leaves. info (or NULL) is copied. False when out of
 * memory (nothing changed).
 */
bool users__member_set(struct users *u, struct users_chan *ch, uint64_t node, const char *user,
                       size_t user_len, uint32_t clients, uint64_t v, uint64_t named,
                       const char *info, size_t info_len);
/* Switches counting on or off after changes, and tells the watchers. */
void users__members_mode(struct users *u, struct users_chan *ch);
/* Drops node's holders of every member of ch; with keep_req, only those that request did
 * not name and that did not change after watermark (a snapshot's sweep). */
void users__members_drop_node(struct users *u, struct users_chan *ch, uint64_t node,
                              uint64_t keep_req, uint64_t watermark);
/* Count events of counting channels, at most every USERS_COUNT_EVERY_MS. */
void users__members_tick(struct users *u, struct users_chan *ch);
/* Tells ch's watchers (m: the member of a join or leave; count: the members after it). */
void users__emit(struct users *u, struct users_chan *ch, enum users_event_kind kind,
                 const struct chan_member *m, uint64_t count);
void users__free_members(struct users_chan *ch);
/* Remembers that user's local state in ch must be published. */
void users__mark_dirty(struct users *u, struct users_chan *ch, const char *user, size_t len);

/* ------------------------------------------------------------------------ */
/* chans.c                                                                   */

struct users_chan *users__chan_find(const struct users *u, const char *name, size_t len);
/* The followed channel, following it now if it is not (RT_LIMIT, RT_NOMEM, RT_UNAVAILABLE). */
rt_status users__chan_follow(struct users *u, const char *name, size_t len,
                             struct users_chan **out);
void users__on_delta(struct users *u, const struct users_wire_msg *m, const char *channel,
                     size_t channel_len);
void users__on_ask(struct users *u, const struct users_wire_msg *m, const char *reply);
void users__on_answer(struct users *u, const struct users_wire_msg *m);
/* Snapshots of every channel again, from every node (nd NULL) or from one. */
void users__resync_chans(struct users *u, struct users_node *nd);
/* The node is gone: its members leave, snapshots stop waiting for it. */
void users__chans_drop_node(struct users *u, struct users_node *nd);
void users__tick_chans(struct users *u);
void users__flush_chans(struct users *u);
void users__free_chans(struct users *u);

/* ------------------------------------------------------------------------ */
/* presence.c                                                                */

/* ch's members are known: the wants waiting for it are reported (after the module's work). */
void users__wants_ready(struct users *u, struct users_chan *ch);
/* Calls on_ready for the wants that became ready. */
void users__report_ready(struct users *u);
void users__free_wants(struct users *u);

#endif
