/*
 * peers.h: what the modules that keep state across the fleet over the NATS
 * bus share (geo presence, geo/fleet*.c; users and channel presence,
 * users/). Both follow one design (docs/presence.md, "On the bus"); the
 * parts that are the same logic in both live here once, each file one part:
 *
 *   peers_wire.c      the frame of every bus message: a msgpack map of
 *                     string keys, read pair by pair under limits, sent by a
 *                     node named under "n" (pure: bytes in, items out,
 *                     messages built into a caller's buffer; any thread)
 *   peers_table.c     the other nodes heard from: a bounded table by id, a
 *                     token each, their silence and bus generation
 *   peers_snapshot.c  the nodes a snapshot was asked of, and how far each
 *                     one's answer got
 *
 * The table and the snapshots are plain state with no lock: their owner
 * (a module running on the loop thread) serialises every call.
 *
 * Each module keeps its own messages, subjects and rules; what only looks
 * alike stays there (the codecs' message shapes, how each answers a
 * heartbeat). Each codec's decode still spells the same four steps (check,
 * walk the map, node id, every entry read) over its own message struct:
 * sharing that too would need the structs to share a head, and they are
 * the codecs' public API (the modules, the tests, the fuzz targets).
 */
#ifndef PEERS_H
#define PEERS_H

#include "protocol.h"
#include "rt.h"

#define PEERS_NODE_MAX 32 /* bytes of a node id: [A-Za-z0-9_-] */

/* ------------------------------------------------------------------------ */
/* Bus messages (peers_wire.c)                                               */

/* 1..max bytes, each a letter, a digit or one of the characters of extra (NULL: none). */
bool peers_wire_chars_ok(const char *s, size_t len, size_t max, const char *extra);
/* A node id: 1..PEERS_NODE_MAX of [A-Za-z0-9_-]. */
bool peers_wire_node_ok(const char *s, size_t len);

/* The bounds a codec reads its messages within. */
struct peers_wire_limits {
    size_t max_bytes;    /* larger messages are refused unread */
    size_t max_depth;    /* nesting, the message's own map counting 1 */
    size_t max_elems;    /* msgpack elements (array items plus map pairs) in one message */
    unsigned scan_flags; /* PROTO_MP_REJECT_*; keys that are not strings are always refused */
};

/*
 * True when bytes[0..len) is one whole msgpack object, 1..max_bytes long,
 * within the limits, with string keys only and valid UTF-8 (and nothing
 * scan_flags rejects). Every later read of the message relies on this
 * check: a count it passed is backed by bytes.
 */
bool peers_wire_check(const uint8_t *bytes, size_t len, const struct peers_wire_limits *lim);

/*
 * One pair of a map: its key, and its value's header (the value's own
 * bytes start at value_off, for a caller that keeps where a nested array
 * is). False refuses the pair, and with it the message.
 */
typedef bool (*peers_wire_pair_fn)(void *ctx, const struct proto_mp_item *key,
                                   const struct proto_mp_item *value, size_t value_off);
/*
 * Reads the map at p[*off..len) of a checked message: fn once per pair,
 * each value then skipped whole (so fn reads only what it needs), *off past
 * the map at the end. False when the item is not a map, a pair does not
 * read or fn refuses one.
 */
bool peers_wire_walk_map(const uint8_t *p, size_t len, size_t *off,
                         const struct peers_wire_limits *lim, peers_wire_pair_fn fn, void *ctx);

/* The key is the string name. */
bool peers_wire_key_is(const struct proto_mp_item *key, const char *name);
/* Typed values: true, with *out set, when the item is of that type (an unsigned is an integer
 * >= 0 of either msgpack family; a double is a float or an integer). */
bool peers_wire_u64(const struct proto_mp_item *it, uint64_t *out);
bool peers_wire_double(const struct proto_mp_item *it, double *out);
bool peers_wire_str(const struct proto_mp_item *it, const char **s, size_t *len);
bool peers_wire_bool(const struct proto_mp_item *it, bool *out);

/* An array value of at most max elements: where its header is (value_off) and its count. */
bool peers_wire_array(const struct proto_mp_item *it, size_t value_off, size_t max,
                      size_t *array_off, uint32_t *n);

/* Reads one element at p[*off..len) into out, advancing *off past it; false refuses it. */
typedef bool (*peers_wire_read_fn)(const uint8_t *p, size_t len, size_t *off, void *out);
/*
 * Walks an array of a checked message, one element a call: the array's
 * header is at array_off (0: there is none) and it holds n elements;
 * *off and *done are the caller's cursor, both 0 at the start. True with
 * the next element read into out; false after the last one, or when one
 * does not read.
 */
bool peers_wire_next(const uint8_t *p, size_t len, size_t array_off, uint32_t n, size_t *off,
                     uint32_t *done, peers_wire_read_fn read, void *out);
/* Every one of the n elements of that array reads (scratch holds one), so that a message is
 * taken whole or not at all. True for no array. */
bool peers_wire_all_read(const uint8_t *p, size_t len, size_t array_off, uint32_t n,
                         peers_wire_read_fn read, void *scratch);

/* Replaces out's content with the start of a message: its map, the sender's id ("n") first. */
void peers_wire_begin(struct proto_writer *w, struct proto_buf *out, const char *node,
                      size_t node_len);
/* Opens the message's entries ("e": an array, closed by the caller's proto_w_end). */
void peers_wire_entries_begin(struct proto_writer *w);

/* ------------------------------------------------------------------------ */
/* The other nodes (peers_table.c)                                           */

/* Another node heard from. An owner that keeps more of each node embeds this first in its own
 * struct (the table allocates node_size bytes, zeroed). */
struct peers_node {
    struct rt_hnode h; /* by id */
    struct peers_node *prev, *next;
    uint64_t token;     /* names the node in the owner's state: token_bits | a serial (never 0) */
    uint64_t last_seen; /* the owner's clock, ms */
    uint64_t gen;       /* its bus generation, from its heartbeats */
    size_t id_len;
    char id[PEERS_NODE_MAX + 1];
};

struct peers_table {
    struct rt_htab by_id;    /* struct peers_node */
    struct peers_node *list; /* every node, newest first */
    uint64_t serial;         /* tokens handed out */
    uint64_t token_bits;     /* or'ed into every token */
    size_t node_size;        /* bytes of the owner's node struct */
    uint32_t max;            /* nodes tracked at most: ids beyond are ignored (a flood) */
};

/* An empty table of nodes of node_size bytes (at least sizeof(struct peers_node)). */
void peers_table_init(struct peers_table *t, size_t node_size, uint64_t token_bits, uint32_t max);
/* Frees every node and the table's memory (t is empty after it). */
void peers_table_free(struct peers_table *t);
size_t peers_count(const struct peers_table *t);
struct peers_node *peers_find(const struct peers_table *t, const char *id, size_t len);
/*
 * The node of that id, made when new (*created; its last_seen is now)
 * unless the id is not a valid node id, the table holds max nodes already,
 * or memory is out: NULL then.
 */
struct peers_node *peers_get(struct peers_table *t, const char *id, size_t len, uint64_t now,
                             bool *created);
/* Unlinks nd from the table and frees it. */
void peers_remove(struct peers_table *t, struct peers_node *nd);

/* The owner's cleanup of a node going away (what it held), before the table frees it. */
typedef void (*peers_gone_fn)(void *arg, struct peers_node *nd);
/* Removes the nodes silent for ttl_ms at now, calling gone on each first; how many. */
size_t peers_expire(struct peers_table *t, uint64_t now, uint64_t ttl_ms, peers_gone_fn gone,
                    void *arg);
/*
 * Takes the bus generation of a heartbeat from nd: true when it moved since
 * the last one (the node restarted its bus or lost messages, so it may have
 * sent what this node never saw). Never true for a node just created.
 */
bool peers_gen_moved(struct peers_node *nd, bool created, uint64_t gen);

/* ------------------------------------------------------------------------ */
/* Snapshots asked of the nodes (peers_snapshot.c)                           */

/* One node asked, and how far its answer got. */
struct peers_answer {
    uint64_t token;
    uint64_t watermark; /* its change number when it answered */
    bool answered;      /* first chunk in */
    bool done;          /* last chunk in, or the node is gone */
};

/* A snapshot asked of some nodes (zeroed: none asked yet). */
struct peers_snapshot {
    uint64_t req;      /* the request number the answers carry */
    uint64_t deadline; /* the owner's clock, ms: the answers are not awaited past it */
    struct peers_answer *answers;
    uint32_t n_answers, cap_answers;
};

/* Frees the answers' memory (s itself is the owner's). */
void peers_snapshot_clear(struct peers_snapshot *s);
/* A new request: the nodes asked so far and their answers are forgotten. */
void peers_snapshot_renew(struct peers_snapshot *s, uint64_t req);
/*
 * Asks every node of t (one NULL) or one node more, afresh (its earlier
 * answer, if any, no longer counts), and awaits the answers until deadline.
 * A node that cannot be recorded (out of memory) is not awaited.
 */
void peers_snapshot_ask(struct peers_snapshot *s, const struct peers_table *t,
                        const struct peers_node *one, uint64_t deadline);
struct peers_answer *peers_snapshot_find(const struct peers_snapshot *s, uint64_t token);
/*
 * A chunk of token's answer came: its entry (the first chunk sets answered
 * and the watermark), recorded when the node was not asked (a node heard
 * of later). NULL when the chunk is to be ignored: the node's answer was
 * complete already, or out of memory. The caller sets done on the last.
 */
struct peers_answer *peers_snapshot_answer(struct peers_snapshot *s, uint64_t token,
                                           uint64_t watermark);
/* The node is gone: nothing of its answer is awaited, kept or swept. */
void peers_snapshot_forget(struct peers_snapshot *s, uint64_t token);
/* Every node asked answered whole (or is gone), after warm_until (when nodes not heard from
 * yet may still appear), or the deadline passed. */
bool peers_snapshot_over(const struct peers_snapshot *s, uint64_t now, uint64_t warm_until);
/* Some node asked did not answer whole. */
bool peers_snapshot_partial(const struct peers_snapshot *s);

#endif
