/*
 * fleet_wire.h: the bus messages of presence across nodes (docs/presence.md,
 * "On the bus"): their subjects, and each message encoded to and decoded
 * from msgpack. Pure: bytes in, structs out, messages built into a caller's
 * buffer; no fleet state, no I/O, no clock. Any thread.
 *
 * fleet_wire_decode is the one door for untrusted bytes: it reads a whole
 * message, every entry included, or refuses it, and never allocates. It is
 * the libFuzzer target (tests/fuzz/corpus/fleet_codec/ has valid messages to
 * start from).
 *
 * A message is a map; every one carries "n", the sending node's id:
 *   heartbeat       n, v (changes published), g (bus generation), t (ttl ms), hello?
 *   snapshot ask    n, r (request number), s (space), p (cell prefix)
 *   snapshot answer n, r, w (the node's v when answering), s, p, e [entries], end
 *   delta           n, s, c (share cell), e [entries]
 * and an entry is v, c (client), o (1 set, 0 clear); a set adds u (user),
 * la, lo, and me (meta encoding) with m (meta bytes) when there is meta.
 * Unknown keys are skipped, so newer nodes can add some.
 */
#ifndef GEO_FLEET_WIRE_H
#define GEO_FLEET_WIRE_H

#include "geo.h"
#include "protocol.h"

#define FLEET_WIRE_NODE_MAX    32         /* bytes of a node id: [A-Za-z0-9_-] */
#define FLEET_WIRE_MAX_BYTES   (8u << 20) /* larger messages are refused unread */
#define FLEET_WIRE_MAX_ELEMS   (1u << 20) /* msgpack elements in one message */
#define FLEET_WIRE_SUBJECT_MAX 160

#define FLEET_WIRE_SUBJ_HEARTBEAT "rtgate.geo.hb"
#define FLEET_WIRE_SUBJ_SNAPSHOT  "rtgate.geo.s"  /* + ".<node>": asked of one node */
#define FLEET_WIRE_SUBJ_REPLY     "rtgate.geo.r." /* + "<node>": a node's answers */
#define FLEET_WIRE_SUBJ_DELTA     "rtgate.geo.d." /* + "<space>.<c>.<c>...": one share cell */

/* What a subject carries. */
enum fleet_wire_kind {
    FLEET_WIRE_OTHER = 0, /* none of the fleet's */
    FLEET_WIRE_HEARTBEAT,
    FLEET_WIRE_SNAPSHOT_ASK,
    FLEET_WIRE_SNAPSHOT_ANSWER,
    FLEET_WIRE_DELTA,
};

/* One member's change (a delta's or a snapshot answer's entry). */
struct fleet_wire_entry {
    uint64_t v; /* the sender's change number: higher replaces lower */
    const char *client;
    size_t client_len;
    bool set; /* false: the member left */
    /* set only: */
    const char *user; /* may be empty */
    size_t user_len;
    double lat, lon;
    int meta_enc; /* enum proto_payload_enc, 0 without meta */
    const uint8_t *meta;
    size_t meta_len;
};

/* A decoded message. Strings point into the bytes given to fleet_wire_decode; absent ones are
 * NULL with length 0, absent numbers 0. */
struct fleet_wire_msg {
    const char *node; /* always there: 1..FLEET_WIRE_NODE_MAX of [A-Za-z0-9_-] */
    size_t node_len;
    const char *space, *prefix, *cell;
    size_t space_len, prefix_len, cell_len;
    uint64_t v, req, gen, watermark, ttl_ms;
    bool hello, end;
    uint32_t n_entries;
    /* Where the entries are, for fleet_wire_next_entry. */
    const uint8_t *bytes;
    size_t len;
    size_t entries_off; /* the "e" array's header; 0 without entries */
};

/*
 * Decodes one message: a msgpack map whose keys are strings, no deeper than
 * 16, at most FLEET_WIRE_MAX_ELEMS elements in FLEET_WIRE_MAX_BYTES, with a
 * valid node id, known keys of the right types, and entries that each have
 * v, c and o (and la, lo for a set; me with m). False, with out zeroed but
 * for bytes/len, for anything else.
 */
bool fleet_wire_decode(const uint8_t *bytes, size_t len, struct fleet_wire_msg *out);

/* Walks a decoded message's entries: start with a zeroed cursor. */
struct fleet_wire_cursor {
    size_t off;
    uint32_t done;
};
/* The next entry; false after the last. */
bool fleet_wire_next_entry(const struct fleet_wire_msg *m, struct fleet_wire_cursor *c,
                           struct fleet_wire_entry *e);

/* A node id, a space name or a client id as the wire accepts them: 1..max of [A-Za-z0-9_-]. */
bool fleet_wire_token_ok(const char *s, size_t len, size_t max);

/* ------------------------------------------------------------------------ */
/* Subjects                                                                  */

/*
 * What `subject` carries. For a delta, its cell's characters go to cell
 * (NUL-terminated) and *cell_len (0 when the subject has no well-formed
 * cell); cell may be NULL for the other kinds.
 */
enum fleet_wire_kind fleet_wire_kind_of(const char *subject, char cell[GEO_CELL_BUF],
                                        size_t *cell_len);
/*
 * The delta subject of a space and a cell prefix into buf:
 * rtgate.geo.d.<space>.<c>.<c>..., with ".>" when the prefix is shorter than
 * the share precision (it then covers every share cell under it).
 */
void fleet_wire_delta_subject(char *buf, size_t cap, const char *space, size_t space_len,
                              const char *cell, size_t cell_len, int share_precision);

/* ------------------------------------------------------------------------ */
/* Encoding: each call replaces out's content with one message               */

void fleet_wire_heartbeat(struct proto_buf *out, const char *node, size_t node_len, uint64_t v,
                          uint64_t gen, uint64_t ttl_ms, bool hello);
void fleet_wire_snapshot_ask(struct proto_buf *out, const char *node, size_t node_len, uint64_t req,
                             const char *space, size_t space_len, const char *prefix,
                             size_t prefix_len);

/* A message with entries: begin, any number of fleet_wire_put, then end. */
struct fleet_wire_writer {
    struct proto_writer w;
    uint32_t entries;
    bool answer; /* a snapshot answer: ends with "end" */
};
void fleet_wire_answer_begin(struct fleet_wire_writer *fw, struct proto_buf *out, const char *node,
                             size_t node_len, uint64_t req, uint64_t watermark, const char *space,
                             size_t space_len, const char *prefix, size_t prefix_len);
void fleet_wire_delta_begin(struct fleet_wire_writer *fw, struct proto_buf *out, const char *node,
                            size_t node_len, const char *space, size_t space_len, const char *cell);
void fleet_wire_put(struct fleet_wire_writer *fw, const struct fleet_wire_entry *e);
/* Closes the message (`last`: a snapshot answer's final chunk); RT_OK when it is complete. */
rt_status fleet_wire_end(struct fleet_wire_writer *fw, bool last);

#endif
