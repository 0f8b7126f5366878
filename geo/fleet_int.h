/*
 * fleet_int.h: what the files of presence across nodes share (fleet.h is
 * the outside's view). One file a concern:
 *
 *   fleet_wire.c       the bus messages and subjects (pure; fleet_wire.h)
 *   fleet.c            create / destroy, receiving (dispatch by subject), time, stats
 *   fleet_nodes.c      the other nodes: table, heartbeats, silence
 *   fleet_follows.c    the cells followed: subscriptions, merging, lingering, resyncs
 *   fleet_snapshots.c  snapshots: asking, the answers, completion and sweep; answering others
 *   fleet_remote.c     other nodes' members applied to the index (deltas, answers)
 *   fleet_local.c      this node's members: changes noted, published in batches
 *   fleet_wants.c      near queries and watches waiting for follows; the owners' shares
 *
 * Threads: all of it runs on the loop thread (fleet.h), so no field here is
 * behind a lock and none carries a {lock} tag.
 */
#ifndef GEO_FLEET_INT_H
#define GEO_FLEET_INT_H

#include "fleet.h"
#include "fleet_wire.h"
#include "geo_int.h"
#include "protocol.h"

_Static_assert(FLEET_WIRE_NODE_MAX == GEO_FLEET_NODE_MAX, "one node id size");
_Static_assert(FLEET_WIRE_SUBJECT_MAX == GEO_FLEET_SUBJECT_MAX, "one subject size");

#define FLEET_CHUNK_BYTES   (256u * 1024u) /* a bus message with entries is split beyond this */
#define FLEET_CHUNK_ENTRIES 2000u
#define FLEET_WANT_CELLS    16u /* cells a want follows at most (a coarser prefix beyond) */
#define FLEET_COVER_CAP     32u /* cells geo_cover may return at precision 1 */
#define FLEET_WARMUP_MS     300u
#define FLEET_HELLO_GAP_MS  100u  /* hellos are answered at most this often */
#define FLEET_RESYNC_GAP_MS 1000u /* a wanted resync waits this long after the last */
#define FLEET_NODES_MAX     4096u /* other nodes tracked; ids beyond are ignored (a flood) */

/* Another node heard from. */
struct fleet_node {
    struct rt_hnode h; /* by id */
    struct fleet_node *prev, *next;
    uint64_t token; /* owner id of its members in the index (GEO_FLEET_CONN_BIT | serial) */
    uint64_t last_seen;
    uint64_t gen; /* its bus generation, from heartbeats */
    size_t id_len;
    char id[GEO_FLEET_NODE_MAX + 1];
};

/* A node asked for a snapshot, and how far its answer got. */
struct snapshot_peer {
    uint64_t token;
    uint64_t watermark; /* its v when it answered */
    bool answered;      /* first chunk in */
    bool done;          /* last chunk in, or the node is gone */
};

/* A client id named by a snapshot answer. */
struct snapshot_name {
    struct rt_hnode h;
    size_t len;
    char client[];
};

/* A snapshot awaited for one follow. */
struct fleet_snapshot {
    uint64_t req;
    uint64_t deadline;
    struct snapshot_peer *peers;
    uint32_t n_peers, cap_peers;
    struct rt_htab named; /* struct snapshot_name: the clients the answers named */
};

/*
 * A connection charged with follows. In the table while it is live and
 * charged with at least one; freed with its last follow (a forgotten owner
 * lives on, out of the table, until then: bounded by the follows).
 */
struct fleet_owner {
    struct rt_hnode h; /* by id */
    uint64_t id;
    uint32_t follows; /* charged to it */
    bool gone;        /* forgotten: out of the table */
};

/* A (space, cell prefix) followed: its subscription, holds and snapshot. */
struct fleet_follow {
    struct rt_hnode h; /* by space NUL prefix */
    struct fleet_follow *prev, *next;
    void *sub;
    struct fleet_owner *owner; /* charged with it, or NULL */
    uint32_t holds;
    uint64_t last_used;
    bool ready;
    struct fleet_snapshot *snap; /* while one is awaited */
    uint64_t *waiters;           /* tickets of wants waiting for it */
    uint32_t n_waiters, cap_waiters;
    size_t space_len, prefix_len;
    char space[GEO_SPACE_MAX + 1];
    char prefix[GEO_CELL_BUF];
};

/* A near query waiting for its follows, or a watch holding them. */
struct fleet_want {
    struct rt_hnode h; /* by ticket */
    uint64_t ticket;
    uint32_t remaining; /* follows not ready yet */
    bool hold, partial, reported;
    uint32_t n_follows;
    struct fleet_follow *follows[FLEET_COVER_CAP]; /* held (hold only) */
};

/* A local member changed since the last flush. */
struct dirty_member {
    struct rt_hnode h; /* by space NUL client */
    struct dirty_member *next;
    char old_cell[GEO_CELL_BUF]; /* share cell at the last flush, "" if absent then */
    size_t space_len, client_len;
    char strs[]; /* space NUL client NUL */
};

/* A want that became ready, reported once the fleet's own work is done. */
struct ready_report {
    uint64_t ticket;
    bool partial;
};

struct geo_fleet {
    struct geo *geo;
    struct geo_fleet_bus bus;
    geo_fleet_ready_fn on_ready;
    void *arg;
    int share_p;
    uint32_t ttl_ms, hb_ms, linger_ms, wait_ms, max_follows, max_owner, resync_ms;
    char node[GEO_FLEET_NODE_MAX + 1];
    size_t node_len;
    char reply_subject[GEO_FLEET_SUBJECT_MAX];

    struct rt_htab nodes; /* struct fleet_node */
    struct fleet_node *node_list;
    uint64_t node_serial;
    struct rt_htab follows; /* struct fleet_follow */
    struct fleet_follow *follow_list;
    struct rt_htab wants;  /* struct fleet_want */
    struct rt_htab owners; /* struct fleet_owner */
    uint64_t next_ticket;
    struct rt_htab dirty; /* struct dirty_member */
    struct dirty_member *dirty_head, *dirty_tail;

    uint64_t v;        /* changes published so far */
    uint64_t next_req; /* snapshot requests */
    uint64_t now, warm_until, last_hb, last_hello_answer, last_resync;
    uint64_t bus_gen;
    uint64_t lost_out; /* own publishes that failed: part of the generation others see */
    bool bus_gen_known, resync_wanted;

    void *sub_hb, *sub_snap, *sub_snap_me, *sub_reply;
    struct proto_buf out; /* the message being sent */

    struct ready_report *readyq;
    uint32_t n_ready, cap_ready;
    struct geo_fleet_stats st;
};

/* ------------------------------------------------------------------------ */
/* fleet.c                                                                    */

/* The hash of "a NUL b" (a space and a client, prefix or cell). */
uint64_t fleet__key_hash(const char *a, size_t alen, const char *b, size_t blen);
/* Publishes b; a failure is counted and said in the next heartbeat. */
void fleet__publish(struct geo_fleet *f, const char *subject, const char *reply,
                    const struct proto_buf *b);
/* True for the index owner ids of other nodes' members. */
static inline bool fleet__remote(uint64_t conn)
{
    return (conn & GEO_FLEET_CONN_BIT) != 0;
}
/* A decoded message names a valid space. */
bool fleet__space_ok(const struct fleet_wire_msg *m);

/* ------------------------------------------------------------------------ */
/* fleet_nodes.c                                                              */

struct fleet_node *fleet__node_find(const struct geo_fleet *f, const char *id, size_t len);
/* The node of that id, made when new (*created) unless the table is full or the id bad. */
struct fleet_node *fleet__node_get(struct geo_fleet *f, const char *id, size_t len, bool *created);
/* The sender of m, its silence reset; NULL (counted as a bad message) when it cannot be
 * tracked (a bad id, or the table is full). */
struct fleet_node *fleet__heard_from(struct geo_fleet *f, const struct fleet_wire_msg *m,
                                     bool *created);
void fleet__send_heartbeat(struct geo_fleet *f, bool hello);
void fleet__on_heartbeat(struct geo_fleet *f, const struct fleet_wire_msg *m);
/* Drops the nodes silent for ttl_ms, with their members. */
void fleet__expire_nodes(struct geo_fleet *f);
void fleet__free_nodes(struct geo_fleet *f);

/* ------------------------------------------------------------------------ */
/* fleet_follows.c                                                            */

struct fleet_follow *fleet__follow_find(const struct geo_fleet *f, const char *space, size_t slen,
                                        const char *prefix, size_t plen);
/* The follow (any prefix length: there is at most one) that covers `cell`. */
struct fleet_follow *fleet__covering(const struct geo_fleet *f, const char *space, size_t slen,
                                     const char *cell, size_t clen);
/* Subscribes to a new prefix, asks for its snapshot and folds finer follows into it. */
rt_status fleet__follow_new(struct geo_fleet *f, const char *space, size_t slen, const char *prefix,
                            size_t plen, struct fleet_follow **out);
/* Snapshot deadlines, and follows that lingered long enough. */
void fleet__tick_follows(struct geo_fleet *f);
/* A fresh snapshot of every followed cell, from every node (own bus lost messages). */
void fleet__resync_all(struct geo_fleet *f);
/* Every followed cell from one node (it appeared, or lost messages). */
void fleet__resync_node(struct geo_fleet *f, struct fleet_node *nd);
void fleet__free_follows(struct geo_fleet *f);

/* ------------------------------------------------------------------------ */
/* fleet_snapshots.c                                                          */

/* Asks every node (nd NULL: starts over) or one more node (nd) for fo's snapshot. */
rt_status fleet__snapshot_start(struct geo_fleet *f, struct fleet_follow *fo,
                                struct fleet_node *nd);
/* Finishes fo's snapshot when every node answered (after the warm-up) or the deadline passed. */
void fleet__snapshot_check(struct geo_fleet *f, struct fleet_follow *fo);
/* The node is gone: no snapshot waits for it any longer. */
void fleet__snapshot_forget_node(struct geo_fleet *f, const struct fleet_node *nd);
void fleet__snapshot_free(struct fleet_snapshot *s);
/* Records a client an answer named (out of memory: it may be swept, and comes back with the
 * next delta or resync). */
void fleet__snapshot_name(struct fleet_snapshot *s, const char *client, size_t len);
/* Drops the remote members in fo's prefix that no other follow covers (fo is unlinked). */
void fleet__sweep_uncovered(struct geo_fleet *f, struct fleet_follow *fo);
void fleet__on_snapshot_answer(struct geo_fleet *f, const struct fleet_wire_msg *m);
void fleet__on_snapshot_ask(struct geo_fleet *f, const struct fleet_wire_msg *m, const char *reply);

/* ------------------------------------------------------------------------ */
/* fleet_remote.c                                                             */

/* Applies m's entries from node nd; named (snapshot answers) records the clients named. */
void fleet__apply(struct geo_fleet *f, struct fleet_node *nd, const struct fleet_wire_msg *m,
                  struct fleet_snapshot *named);
/* Removes a remote member if `owner` still holds it. */
void fleet__remote_clear(struct geo_fleet *f, uint64_t owner, const char *space, size_t slen,
                         const char *client, size_t clen);
void fleet__on_delta(struct geo_fleet *f, const struct fleet_wire_msg *m, const char *cell,
                     size_t clen);

/* ------------------------------------------------------------------------ */
/* fleet_local.c                                                              */

/* A local member as a wire entry of change v. */
void fleet__entry_of(const struct geo_member_view *m, uint64_t v, struct fleet_wire_entry *e);
void fleet__free_dirty(struct geo_fleet *f);

/* ------------------------------------------------------------------------ */
/* fleet_wants.c                                                              */

/* fo became ready (its snapshot finished): the wants waiting for it count down. */
void fleet__follow_ready(struct geo_fleet *f, struct fleet_follow *fo, bool partial);
/* fo is folded into nf: the wants holding fo hold nf. */
void fleet__wants_move(struct geo_fleet *f, struct fleet_follow *from, struct fleet_follow *to);
/* Calls on_ready for the wants that became ready. */
void fleet__report_ready(struct geo_fleet *f);
void fleet__free_wants(struct geo_fleet *f);
/* fo's charge goes to nobody (freeing an owner charged with nothing else). */
void fleet__uncharge(struct geo_fleet *f, struct fleet_follow *fo);

#endif
