/*
 * users_wire.c: the bus messages of users across the fleet (users_wire.h),
 * in and out. Pure; reads through protocol/'s bounded msgpack scanner,
 * writes through its proto_writer.
 */
#include "users_wire.h"

#include <stdio.h>
#include <string.h>

#define MAX_DEPTH 8

static bool all_chars(const char *s, size_t len, size_t max, const char *extra)
{
    if (!s || len < 1 || len > max)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        bool alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
        if (!alnum && (c == '\0' || !extra || !strchr(extra, c)))
            return false;
    }
    return true;
}

bool users_wire_node_ok(const char *s, size_t len)
{
    return all_chars(s, len, USERS_WIRE_NODE_MAX, "_-");
}

bool users_wire_user_ok(const char *s, size_t len)
{
    return all_chars(s, len, USERS_WIRE_USER_MAX, "._:@|+=/~-");
}

bool users_wire_client_ok(const char *s, size_t len)
{
    return all_chars(s, len, USERS_WIRE_CLIENT_MAX, NULL);
}

/* ------------------------------------------------------------------------ */
/* Reading                                                                    */

/*
 * The pairs of the map at *off, one callback each with the key and the
 * value's header (the value's own bytes start at voff); the value is then
 * skipped whole, so callbacks read only what they need. False when a pair
 * does not read or a callback refuses it. The message was scanned whole
 * before, so every count is backed by bytes.
 */
typedef bool (*pair_fn)(void *ctx, const struct proto_mp_item *key, const struct proto_mp_item *v,
                        size_t voff);

static bool walk_map(const uint8_t *p, size_t len, size_t *off, pair_fn fn, void *ctx)
{
    struct proto_mp_item map, k, v;
    if (!proto_mp_read(p, len, off, &map) || map.kind != PROTO_MP_MAP)
        return false;
    for (size_t i = 0; i < map.n; i++) {
        if (!proto_mp_read(p, len, off, &k) || k.kind != PROTO_MP_STR)
            return false;
        size_t voff = *off;
        if (!proto_mp_read(p, len, off, &v) || !fn(ctx, &k, &v, voff))
            return false;
        struct proto_mp_scan sc; /* skip the value from its start */
        proto_mp_scan(p + voff, len - voff, MAX_DEPTH, USERS_WIRE_MAX_ELEMS, 0, &sc);
        if (sc.structural)
            return false;
        *off = voff + sc.end;
    }
    return true;
}

static bool key_is(const struct proto_mp_item *k, const char *name)
{
    size_t n = strlen(name);
    return k->n == n && memcmp(k->ptr, name, n) == 0;
}

static bool as_u64(const struct proto_mp_item *it, uint64_t *out)
{
    if (it->kind == PROTO_MP_UINT)
        *out = it->u;
    else if (it->kind == PROTO_MP_INT && it->i >= 0)
        *out = (uint64_t)it->i;
    else
        return false;
    return true;
}

static bool as_str(const struct proto_mp_item *it, const char **s, size_t *len)
{
    if (it->kind != PROTO_MP_STR)
        return false;
    *s = (const char *)it->ptr;
    *len = it->n;
    return true;
}

static bool as_bool(const struct proto_mp_item *it, bool *out)
{
    if (it->kind != PROTO_MP_BOOL)
        return false;
    *out = it->b;
    return true;
}

/* One [ts, client] pair of a connections list at *off. */
static bool read_conn(const uint8_t *p, size_t len, size_t *off, struct users_wire_conn *c)
{
    struct proto_mp_item arr, ts, client;
    if (!proto_mp_read(p, len, off, &arr) || arr.kind != PROTO_MP_ARRAY || arr.n != 2 ||
        !proto_mp_read(p, len, off, &ts) || !as_u64(&ts, &c->ts) ||
        !proto_mp_read(p, len, off, &client) || !as_str(&client, &c->client, &c->client_len))
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
    if (key_is(k, "u"))
        return as_str(v, &e->user, &e->user_len) && users_wire_user_ok(e->user, e->user_len);
    if (key_is(k, "p"))
        return as_u64(v, &e->pubs);
    if (key_is(k, "v"))
        return as_u64(v, &e->v);
    if (key_is(k, "k"))
        return as_u64(v, &e->clients) && e->clients <= UINT32_MAX;
    if (key_is(k, "i")) {
        if ((v->kind != PROTO_MP_BIN && v->kind != PROTO_MP_STR) || v->n > USERS_WIRE_INFO_MAX)
            return false;
        e->info = v->ptr;
        e->info_len = v->n;
        return true;
    }
    if (key_is(k, "c")) {
        if (v->kind != PROTO_MP_ARRAY || v->n > USERS_WIRE_CONNS_MAX)
            return false;
        e->has_conns = true;
        e->n_conns = (uint32_t)v->n;
        e->conns_off = voff;
        size_t off = voff;
        struct proto_mp_item arr;
        struct users_wire_conn conn;
        proto_mp_read(c->p, c->len, &off, &arr);
        for (uint32_t i = 0; i < e->n_conns; i++)
            if (!read_conn(c->p, c->len, &off, &conn))
                return false;
        return true;
    }
    return true; /* unknown: skipped */
}

/* Reads the entry map at *off (the message was scanned whole before). */
static bool read_entry(const uint8_t *p, size_t len, size_t *off, struct users_wire_entry *e)
{
    memset(e, 0, sizeof(*e));
    struct entry_ctx c = {p, len, e};
    return walk_map(p, len, off, entry_pair, &c) && e->user;
}

static bool msg_pair(void *arg, const struct proto_mp_item *k, const struct proto_mp_item *v,
                     size_t voff)
{
    struct users_wire_msg *m = arg;
    if (key_is(k, "n"))
        return as_str(v, &m->node, &m->node_len);
    if (key_is(k, "ch"))
        return as_str(v, &m->channel, &m->channel_len) &&
               proto_channel_valid(m->channel, m->channel_len);
    if (key_is(k, "g"))
        return as_u64(v, &m->gen);
    if (key_is(k, "r"))
        return as_u64(v, &m->req);
    if (key_is(k, "w"))
        return as_u64(v, &m->watermark);
    if (key_is(k, "hello"))
        return as_bool(v, &m->hello);
    if (key_is(k, "bye"))
        return as_bool(v, &m->bye);
    if (key_is(k, "fs"))
        return as_bool(v, &m->full_start);
    if (key_is(k, "fe"))
        return as_bool(v, &m->full_end);
    if (key_is(k, "end"))
        return as_bool(v, &m->end);
    if (key_is(k, "e")) {
        if (v->kind != PROTO_MP_ARRAY || v->n > USERS_WIRE_MAX_ELEMS)
            return false;
        m->entries_off = voff;
        m->n_entries = (uint32_t)v->n;
        return true;
    }
    return true; /* unknown: skipped */
}

/* Every entry reads (so that a message is taken whole or not at all). */
static bool entries_ok(const struct users_wire_msg *m)
{
    struct users_wire_cursor c = {0};
    struct users_wire_entry e;
    uint32_t n = 0;
    while (users_wire_next_entry(m, &c, &e))
        n++;
    return n == m->n_entries;
}

bool users_wire_decode(const uint8_t *bytes, size_t len, struct users_wire_msg *out)
{
    struct users_wire_msg *m = out;
    memset(m, 0, sizeof(*m));
    if (!bytes || len == 0 || len > USERS_WIRE_MAX_BYTES)
        return false;
    struct proto_mp_scan sc;
    proto_mp_scan(bytes, len, MAX_DEPTH, USERS_WIRE_MAX_ELEMS,
                  PROTO_MP_REJECT_NONSTR_K | PROTO_MP_REJECT_EXT, &sc);
    if (sc.structural || sc.content || sc.end != len)
        return false;
    m->bytes = bytes;
    m->len = len;
    size_t off = 0;
    if (walk_map(bytes, len, &off, msg_pair, m) && users_wire_node_ok(m->node, m->node_len) &&
        entries_ok(m))
        return true;
    memset(m, 0, sizeof(*m));
    m->bytes = bytes;
    m->len = len;
    return false;
}

bool users_wire_next_entry(const struct users_wire_msg *m, struct users_wire_cursor *c,
                           struct users_wire_entry *e)
{
    if (!m->entries_off || c->done >= m->n_entries)
        return false;
    if (c->off == 0) { /* past the array's header */
        struct proto_mp_item arr;
        c->off = m->entries_off;
        if (!proto_mp_read(m->bytes, m->len, &c->off, &arr) || arr.kind != PROTO_MP_ARRAY)
            return false;
    }
    if (!read_entry(m->bytes, m->len, &c->off, e))
        return false;
    c->done++;
    return true;
}

bool users_wire_next_conn(const struct users_wire_msg *m, const struct users_wire_entry *e,
                          struct users_wire_cursor *c, struct users_wire_conn *out)
{
    if (!e->has_conns || c->done >= e->n_conns)
        return false;
    if (c->off == 0) {
        struct proto_mp_item arr;
        c->off = e->conns_off;
        if (!proto_mp_read(m->bytes, m->len, &c->off, &arr) || arr.kind != PROTO_MP_ARRAY)
            return false;
    }
    if (!read_conn(m->bytes, m->len, &c->off, out))
        return false;
    c->done++;
    return true;
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

/* Starts a message: a map with the node's id first. */
static void begin(struct proto_writer *w, struct proto_buf *out, const char *node, size_t node_len)
{
    proto_buf_reset(out);
    proto_writer_init(w, PROTO_MSGPACK, out);
    proto_w_map(w);
    proto_w_kstr(w, "n", node, node_len);
}

void users_wire_heartbeat(struct proto_buf *out, const char *node, size_t node_len, uint64_t gen,
                          bool hello, bool bye)
{
    struct proto_writer w;
    begin(&w, out, node, node_len);
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
    begin(&w, out, node, node_len);
    proto_w_kuint(&w, "r", req);
    proto_w_kstr(&w, "ch", channel, channel_len);
    proto_w_end(&w);
}

static void entries_begin(struct users_wire_writer *fw)
{
    proto_w_key(&fw->w, "e");
    proto_w_array(&fw->w);
    fw->entries = 0;
}

void users_wire_conns_begin(struct users_wire_writer *fw, struct proto_buf *out, const char *node,
                            size_t node_len, bool full_start)
{
    begin(&fw->w, out, node, node_len);
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
    begin(&fw->w, out, node, node_len);
    proto_w_kstr(&fw->w, "ch", channel, channel_len);
    entries_begin(fw);
    fw->conns = fw->answer = false;
}

void users_wire_answer_begin(struct users_wire_writer *fw, struct proto_buf *out, const char *node,
                             size_t node_len, uint64_t req, uint64_t watermark, const char *channel,
                             size_t channel_len)
{
    begin(&fw->w, out, node, node_len);
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
