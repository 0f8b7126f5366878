/*
 * peers.h: what the modules that keep state across the fleet over the NATS
 * bus share (geo presence, geo/fleet*.c; users and channel presence,
 * users/). Both follow one design (docs/presence.md, "On the bus"); the
 * parts that are the same logic in both live here once, each file one part:
 *
 *   peers_wire.c  the frame of every bus message: a msgpack map of string
 *                 keys, read pair by pair under limits, sent by a node named
 *                 under "n" (pure: bytes in, items out, messages built into
 *                 a caller's buffer; any thread)
 *
 * Each module keeps its own messages, subjects and rules; what only looks
 * alike stays there (the codecs' message shapes, how each answers a
 * heartbeat).
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

/* Replaces out's content with the start of a message: its map, the sender's id ("n") first. */
void peers_wire_begin(struct proto_writer *w, struct proto_buf *out, const char *node,
                      size_t node_len);
/* Opens the message's entries ("e": an array, closed by the caller's proto_w_end). */
void peers_wire_entries_begin(struct proto_writer *w);

#endif
