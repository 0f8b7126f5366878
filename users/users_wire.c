/*
 * users_wire.c: the bus messages of users across the fleet (users_wire.h),
 * in and out: their keys, entries and connections. Pure; the frame every
 * bus message shares (the check, maps read pair by pair, typed values, a
 * message's start) is peers/peers_wire.c.
 */
#include "peers.h"
#include "users_wire.h"

#include <stdio.h>
#include <string.h>

_Static_assert(USERS_WIRE_NODE_MAX == PEERS_NODE_MAX, "one node id size");

/* What users_wire_decode reads within. */
static const struct peers_wire_limits LIMITS = {
    .max_bytes = USERS_WIRE_MAX_BYTES,
    .max_depth = 8,
    .max_elems = USERS_WIRE_MAX_ELEMS,
    .scan_flags = PROTO_MP_REJECT_EXT,
};

bool users_wire_node_ok(const char *s, size_t len)
{
    return peers_wire_node_ok(s, len);
}

bool users_wire_user_ok(const char *s, size_t len)
{
    return peers_wire_chars_ok(s, len, USERS_WIRE_USER_MAX, "._:@|+=/~-");
}

bool users_wire_client_ok(const char *s, size_t len)
{
    return peers_wire_chars_ok(s, len, USERS_WIRE_CLIENT_MAX, NULL);
}

/* ------------------------------------------------------------------------ */
/* Reading                                                                    */

/* One [ts, client] pair of a connections list at *off. */
static bool read_conn(const uint8_t *p, size_t len, size_t *off, void *out)
{
    struct users_wire_conn *c = out;
    struct proto_mp_item arr, ts, client;
    if (!proto_mp_read(p, len, off, &arr) || arr.kind != PROTO_MP_ARRAY || arr.n != 2 ||
        !proto_mp_read(p, len, off, &ts) || !peers_wire_u64(&ts, &c->ts) ||
        !proto_mp_read(p, len, off, &client) ||
        !peers_wire_str(&client, &c->client, &c->client_len))
        return false;
    return users_wire_client_ok(c->client, c->client_len);
}

struct entry_ctx {
    const uint8_t *p;
    size_t len;
    struct users_wire_entry *e;
};

static bool entry_pair(void *arg, const struct proto_mp_item *k, const struct proto_mp_item *v,
                       size_t voff)
{
    struct entry_ctx *c = arg;
    struct users_wire_entry *e = c->e;
    if (peers_wire_key_is(k, "u"))
        return peers_wire_str(v, &e->user, &e->user_len) &&
               users_wire_user_ok(e->user, e->user_len);
    if (peers_wire_key_is(k, "p"))
        return peers_wire_u64(v, &e->pubs);
    if (peers_wire_key_is(k, "v"))
        return peers_wire_u64(v, &e->v);
    if (peers_wire_key_is(k, "k"))
        return peers_wire_u64(v, &e->clients) && e->clients <= UINT32_MAX;
    if (peers_wire_key_is(k, "i")) {
        if ((v->kind != PROTO_MP_BIN && v->kind != PROTO_MP_STR) || v->n > USERS_WIRE_INFO_MAX)
            return false;
        e->info = v->ptr;
        e->info_len = v->n;
        return true;
    }
    if (peers_wire_key_is(k, "c")) {
        if (!peers_wire_array(v, voff, USERS_WIRE_CONNS_MAX, &e->conns_off, &e->n_conns))
            return false;
        e->has_conns = true;
        return peers_wire_all_read(c->p, c->len, e->conns_off, e->n_conns, read_conn,
                                   &(struct users_wire_conn){0});
    }
    return true; /* unknown: skipped */
}

/* Reads the entry map at *off (the message was checked whole before). */
static bool read_entry(const uint8_t *p, size_t len, size_t *off, void *out)
{
    struct users_wire_entry *e = out;
    memset(e, 0, sizeof(*e));
    struct entry_ctx c = {p, len, e};
    return peers_wire_walk_map(p, len, off, &LIMITS, entry_pair, &c) && e->user;
}

static bool msg_pair(void *arg, const struct proto_mp_item *k, const struct proto_mp_item *v,
                     size_t voff)
{
    struct users_wire_msg *m = arg;
    if (peers_wire_key_is(k, "n"))
        return peers_wire_str(v, &m->node, &m->node_len);
    if (peers_wire_key_is(k, "ch"))
        return peers_wire_str(v, &m->channel, &m->channel_len) &&
               proto_channel_valid(m->channel, m->channel_len);
    if (peers_wire_key_is(k, "g"))
        return peers_wire_u64(v, &m->gen);
    if (peers_wire_key_is(k, "r"))
        return peers_wire_u64(v, &m->req);
    if (peers_wire_key_is(k, "w"))
        return peers_wire_u64(v, &m->watermark);
    if (peers_wire_key_is(k, "hello"))
        return peers_wire_bool(v, &m->hello);
    if (peers_wire_key_is(k, "bye"))
        return peers_wire_bool(v, &m->bye);
    if (peers_wire_key_is(k, "fs"))
        return peers_wire_bool(v, &m->full_start);
    if (peers_wire_key_is(k, "fe"))
        return peers_wire_bool(v, &m->full_end);
    if (peers_wire_key_is(k, "end"))
        return peers_wire_bool(v, &m->end);
    if (peers_wire_key_is(k, "e"))
        return peers_wire_array(v, voff, USERS_WIRE_MAX_ELEMS, &m->entries_off, &m->n_entries);
    return true; /* unknown: skipped */
}

bool users_wire_decode(const uint8_t *bytes, size_t len, struct users_wire_msg *out)
{
    struct users_wire_msg *m = out;
    memset(m, 0, sizeof(*m));
    if (!peers_wire_check(bytes, len, &LIMITS))
        return false;
    m->bytes = bytes;
    m->len = len;
    size_t off = 0;
    if (peers_wire_walk_map(bytes, len, &off, &LIMITS, msg_pair, m) &&
        users_wire_node_ok(m->node, m->node_len) &&
        peers_wire_all_read(bytes, len, m->entries_off, m->n_entries, read_entry,
                            &(struct users_wire_entry){0}))
        return true;
    memset(m, 0, sizeof(*m));
    m->bytes = bytes;
    m->len = len;
    return false;
}

bool users_wire_next_entry(const struct users_wire_msg *m, struct users_wire_cursor *c,
                           struct users_wire_entry *e)
{
    return peers_wire_next(m->bytes, m->len, m->entries_off, m->n_entries, &c->off, &c->done,
                           read_entry, e);
}

bool users_wire_next_conn(const struct users_wire_msg *m, const struct users_wire_entry *e,
                          struct users_wire_cursor *c, struct users_wire_conn *out)
{
    if (!e->has_conns)
        return false;
    return peers_wire_next(m->bytes, m->len, e->conns_off, e->n_conns, &c->off, &c->done, read_conn,
                           out);
}

/* ------------------------------------------------------------------------ */
/* Subjects                                                                   */

static bool starts_with(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

enum users_wire_kind users_wire_kind_of(const char *subject, const char **channel,
                                        size_t *channel_len)
{
    if (channel) {
        *channel = NULL;
        *channel_len = 0;
    }
    if (!subject)
        return USERS_WIRE_OTHER;
    if (strcmp(subject, USERS_WIRE_SUBJ_HEARTBEAT) == 0)
        return USERS_WIRE_HEARTBEAT;
    if (strcmp(subject, USERS_WIRE_SUBJ_CONNS) == 0)
        return USERS_WIRE_CONNS;
    if (starts_with(subject, USERS_WIRE_SUBJ_PRESENCE)) {
        const char *ch = subject + strlen(USERS_WIRE_SUBJ_PRESENCE);
        if (channel && proto_channel_valid(ch, strlen(ch))) {
            *channel = ch;
            *channel_len = strlen(ch);
        }
        return USERS_WIRE_PRESENCE;
    }
    if (starts_with(subject, USERS_WIRE_SUBJ_ANSWER))
        return USERS_WIRE_ANSWER;
    if (strcmp(subject, USERS_WIRE_SUBJ_ASK) == 0 || starts_with(subject, USERS_WIRE_SUBJ_ASK "."))
        return USERS_WIRE_ASK;
    return USERS_WIRE_OTHER;
}

void users_wire_presence_subject(char *buf, size_t cap, const char *channel, size_t channel_len)
{
    snprintf(buf, cap, USERS_WIRE_SUBJ_PRESENCE "%.*s", (int)channel_len, channel);
}

/* ------------------------------------------------------------------------ */
/* Writing                                                                    */

void users_wire_heartbeat(struct proto_buf *out, const char *node, size_t node_len, uint64_t gen,
                          bool hello, bool bye)
{
    struct proto_writer w;
    peers_wire_begin(&w, out, node, node_len);
    proto_w_kuint(&w, "g", gen);
    if (hello)
        proto_w_kbool(&w, "hello", true);
    if (bye)
        proto_w_kbool(&w, "bye", true);
    proto_w_end(&w);
}

void users_wire_ask(struct proto_buf *out, const char *node, size_t node_len, uint64_t req,
                    const char *channel, size_t channel_len)
{
    struct proto_writer w;
    peers_wire_begin(&w, out, node, node_len);
    proto_w_kuint(&w, "r", req);
    proto_w_kstr(&w, "ch", channel, channel_len);
    proto_w_end(&w);
}

static void entries_begin(struct users_wire_writer *fw)
{
    peers_wire_entries_begin(&fw->w);
    fw->entries = 0;
}

void users_wire_conns_begin(struct users_wire_writer *fw, struct proto_buf *out, const char *node,
                            size_t node_len, bool full_start)
{
    peers_wire_begin(&fw->w, out, node, node_len);
    if (full_start)
        proto_w_kbool(&fw->w, "fs", true);
    entries_begin(fw);
    fw->conns = true;
    fw->answer = false;
}

void users_wire_put_user(struct users_wire_writer *fw, const char *user, size_t user_len,
                         bool has_conns, const struct users_wire_conn *conns, size_t n_conns,
                         uint64_t pubs)
{
    struct proto_writer *w = &fw->w;
    proto_w_map(w);
    proto_w_kstr(w, "u", user, user_len);
    if (has_conns) {
        proto_w_key(w, "c");
        proto_w_array(w);
        for (size_t i = 0; i < n_conns; i++) {
            proto_w_array(w);
            proto_w_uint(w, conns[i].ts);
            proto_w_str(w, conns[i].client, conns[i].client_len);
            proto_w_end(w);
        }
        proto_w_end(w);
    }
    if (pubs)
        proto_w_kuint(w, "p", pubs);
    proto_w_end(w);
    fw->entries++;
}

void users_wire_delta_begin(struct users_wire_writer *fw, struct proto_buf *out, const char *node,
                            size_t node_len, const char *channel, size_t channel_len)
{
    peers_wire_begin(&fw->w, out, node, node_len);
    proto_w_kstr(&fw->w, "ch", channel, channel_len);
    entries_begin(fw);
    fw->conns = fw->answer = false;
}

void users_wire_answer_begin(struct users_wire_writer *fw, struct proto_buf *out, const char *node,
                             size_t node_len, uint64_t req, uint64_t watermark, const char *channel,
                             size_t channel_len)
{
    peers_wire_begin(&fw->w, out, node, node_len);
    proto_w_kuint(&fw->w, "r", req);
    proto_w_kuint(&fw->w, "w", watermark);
    proto_w_kstr(&fw->w, "ch", channel, channel_len);
    entries_begin(fw);
    fw->conns = false;
    fw->answer = true;
}

void users_wire_put_member(struct users_wire_writer *fw, uint64_t v, const char *user,
                           size_t user_len, uint64_t clients, const uint8_t *info, size_t info_len)
{
    struct proto_writer *w = &fw->w;
    proto_w_map(w);
    proto_w_kuint(w, "v", v);
    proto_w_kstr(w, "u", user, user_len);
    proto_w_kuint(w, "k", clients);
    if (info && info_len) {
        struct proto_payload p = {PROTO_PAYLOAD_BINARY, info, info_len, false};
        proto_w_payload(w, "i", &p);
    }
    proto_w_end(w);
    fw->entries++;
}

rt_status users_wire_end(struct users_wire_writer *fw, bool last)
{
    proto_w_end(&fw->w); /* the entries */
    if (fw->answer)
        proto_w_kbool(&fw->w, "end", last);
    else if (fw->conns && last)
        proto_w_kbool(&fw->w, "fe", true);
    proto_w_end(&fw->w);
    return proto_writer_status(&fw->w);
}
