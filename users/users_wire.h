/*
 * users_wire.h: the bus messages of users across the fleet (docs/users.md,
 * "On the bus"): their subjects, and each message encoded to and decoded
 * from msgpack. Pure: bytes in, structs out, messages built into a caller's
 * buffer; no state, no I/O, no clock. Any thread.
 *
 * users_wire_decode is the one door for untrusted bytes: it reads a whole
 * message, every entry and every connection of every entry included, or
 * refuses it, and never allocates.
 *
 * A message is a map; every one carries "n", the sending node's id:
 *   heartbeat        n, g (bus generation), hello?, bye?
 *   connections      n, fs? (a full state starts), fe? (it ends), e [entries]
 *   presence delta   n, ch (channel), e [entries]
 *   snapshot ask     n, r (request number), ch
 *   snapshot answer  n, r, w (the node's v when answering), ch, e [entries], end
 * A connections entry is u (user), c? ([[ts, client], ...]: the user's
 * connections on the node, complete) and p? (publishes since the last
 * report); a presence entry is v (change number), u, k (the user's
 * connections in the channel on the node; 0: none left) and i? (the token's
 * info, a compact JSON object). Unknown keys are skipped, so newer nodes can
 * add some.
 */
#ifndef USERS_WIRE_H
#define USERS_WIRE_H

#include "protocol.h"

#define USERS_WIRE_NODE_MAX    32         /* bytes of a node id: [A-Za-z0-9_-] */
#define USERS_WIRE_USER_MAX    128        /* bytes of a user id */
#define USERS_WIRE_CLIENT_MAX  32         /* bytes of a client id: [A-Za-z0-9] */
#define USERS_WIRE_INFO_MAX    1024       /* bytes of an info object */
#define USERS_WIRE_CONNS_MAX   4096       /* connections of one user in one entry */
#define USERS_WIRE_MAX_BYTES   (8u << 20) /* larger messages are refused unread */
#define USERS_WIRE_MAX_ELEMS   (1u << 20) /* msgpack elements in one message */
#define USERS_WIRE_SUBJECT_MAX 192

#define USERS_WIRE_SUBJ_HEARTBEAT "rtgate.users.hb"
#define USERS_WIRE_SUBJ_CONNS     "rtgate.users.c"
#define USERS_WIRE_SUBJ_PRESENCE  "rtgate.users.p." /* + "<channel>" */
#define USERS_WIRE_SUBJ_ASK       "rtgate.users.s"  /* + ".<node>": asked of one node */
#define USERS_WIRE_SUBJ_ANSWER    "rtgate.users.r." /* + "<node>": a node's answers */

/* What a subject carries. */
enum users_wire_kind {
    USERS_WIRE_OTHER = 0, /* none of ours */
    USERS_WIRE_HEARTBEAT,
    USERS_WIRE_CONNS,
    USERS_WIRE_PRESENCE,
    USERS_WIRE_ASK,
    USERS_WIRE_ANSWER,
};

/* One connection of a user on the sending node. */
struct users_wire_conn {
    uint64_t ts; /* ms since 1970 when the node accepted it: the order of the limit */
    const char *client;
    size_t client_len;
};

/* One entry of a connections report or of a presence message. */
struct users_wire_entry {
    const char *user;
    size_t user_len;
    /* connections report */
    bool has_conns; /* c: the user's complete list on the node follows */
    uint32_t n_conns;
    size_t conns_off; /* where the list is, for users_wire_next_conn */
    uint64_t pubs;
    /* presence */
    uint64_t v;
    uint64_t clients;
    const uint8_t *info; /* NULL when absent */
    size_t info_len;
};

/* A decoded message. Strings point into the bytes given to users_wire_decode; absent ones are
 * NULL with length 0, absent numbers 0. */
struct users_wire_msg {
    const char *node; /* always there: 1..USERS_WIRE_NODE_MAX of [A-Za-z0-9_-] */
    size_t node_len;
    const char *channel; /* when there, a valid channel name */
    size_t channel_len;
    uint64_t gen, req, watermark;
    bool hello, bye, full_start, full_end, end;
    uint32_t n_entries;
    const uint8_t *bytes;
    size_t len;
    size_t entries_off; /* the "e" array's header; 0 without entries */
};

/*
 * Decodes one message: a msgpack map whose keys are strings, no deeper than
 * 8, at most USERS_WIRE_MAX_ELEMS elements in USERS_WIRE_MAX_BYTES, with a
 * valid node id, known keys of the right types and ranges, and entries that
 * each have a valid user (and, when there, a list of at most
 * USERS_WIRE_CONNS_MAX valid connections and an info of at most
 * USERS_WIRE_INFO_MAX bytes). False, with out zeroed but for bytes/len, for
 * anything else.
 */
bool users_wire_decode(const uint8_t *bytes, size_t len, struct users_wire_msg *out);

/* Walks a decoded message's entries: start with a zeroed cursor. */
struct users_wire_cursor {
    size_t off;
    uint32_t done;
};
bool users_wire_next_entry(const struct users_wire_msg *m, struct users_wire_cursor *c,
                           struct users_wire_entry *e);
/* Walks an entry's connections: start with a zeroed cursor. */
bool users_wire_next_conn(const struct users_wire_msg *m, const struct users_wire_entry *e,
                          struct users_wire_cursor *c, struct users_wire_conn *out);

/* A node id: 1..USERS_WIRE_NODE_MAX of [A-Za-z0-9_-]. */
bool users_wire_node_ok(const char *s, size_t len);
/* A user id: 1..USERS_WIRE_USER_MAX of [A-Za-z0-9._:@|+=/~-] (tokens' sub, anonymous ids). */
bool users_wire_user_ok(const char *s, size_t len);
/* A client id: 1..USERS_WIRE_CLIENT_MAX of [A-Za-z0-9]. */
bool users_wire_client_ok(const char *s, size_t len);

/* ------------------------------------------------------------------------ */
/* Subjects                                                                  */

/* What `subject` carries; for a presence delta, *channel / *channel_len name its channel. */
enum users_wire_kind users_wire_kind_of(const char *subject, const char **channel,
                                        size_t *channel_len);
/* rtgate.users.p.<channel> into buf (cap at least USERS_WIRE_SUBJECT_MAX). */
void users_wire_presence_subject(char *buf, size_t cap, const char *channel, size_t channel_len);

/* ------------------------------------------------------------------------ */
/* Encoding: each call replaces out's content with one message               */

void users_wire_heartbeat(struct proto_buf *out, const char *node, size_t node_len, uint64_t gen,
                          bool hello, bool bye);
void users_wire_ask(struct proto_buf *out, const char *node, size_t node_len, uint64_t req,
                    const char *channel, size_t channel_len);

/* A message with entries: begin, any number of puts, then end. */
struct users_wire_writer {
    struct proto_writer w;
    uint32_t entries;
    bool conns;  /* a connections report: ends with fe */
    bool answer; /* a snapshot answer: ends with end */
};
void users_wire_conns_begin(struct users_wire_writer *fw, struct proto_buf *out, const char *node,
                            size_t node_len, bool full_start);
/* One user of a connections report: conns (when has_conns) and pubs (when not 0). */
void users_wire_put_user(struct users_wire_writer *fw, const char *user, size_t user_len,
                         bool has_conns, const struct users_wire_conn *conns, size_t n_conns,
                         uint64_t pubs);
void users_wire_delta_begin(struct users_wire_writer *fw, struct proto_buf *out, const char *node,
                            size_t node_len, const char *channel, size_t channel_len);
void users_wire_answer_begin(struct users_wire_writer *fw, struct proto_buf *out, const char *node,
                             size_t node_len, uint64_t req, uint64_t watermark, const char *channel,
                             size_t channel_len);
/* One member of a presence delta or answer (info NULL: none). */
void users_wire_put_member(struct users_wire_writer *fw, uint64_t v, const char *user,
                           size_t user_len, uint64_t clients, const uint8_t *info, size_t info_len);
/* Closes the message (`last`: the final chunk of a full state or of an answer). */
rt_status users_wire_end(struct users_wire_writer *fw, bool last);

#endif
