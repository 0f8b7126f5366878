/*
 * fleet_wire.c: the fleet's bus messages and subjects (fleet_wire.h), in
 * and out: their keys and entries. Pure; the frame every bus message shares
 * (the check, maps read pair by pair, typed values, a message's start) is
 * peers/peers_wire.c.
 */
#include "fleet_wire.h"
#include "peers.h"

#include <stdio.h>
#include <string.h>

_Static_assert(FLEET_WIRE_NODE_MAX == PEERS_NODE_MAX, "one node id size");

/* What fleet_wire_decode reads within. */
static const struct peers_wire_limits LIMITS = {
    .max_bytes = FLEET_WIRE_MAX_BYTES,
    .max_depth = 16,
    .max_elems = FLEET_WIRE_MAX_ELEMS,
    .scan_flags = 0,
};

bool fleet_wire_token_ok(const char *s, size_t len, size_t max)
{
    return peers_wire_chars_ok(s, len, max, "_-");
}

/* ------------------------------------------------------------------------ */
/* Reading                                                                    */

/* A flag: anything but true reads as false (a geo message is not refused for it; users' codec
 * refuses a flag that is not a bool). */
static bool item_flag(const struct proto_mp_item *it, bool *out)
{
    *out = it->kind == PROTO_MP_BOOL && it->b;
    return true;
}

/* An entry as it is read: the fields that must be there are checked at its end. */
struct entry_ctx {
    struct fleet_wire_entry *e;
    int op; /* o: -1 until read */
    bool has_lat, has_lon;
};

/* One key of an entry; false when its value has the wrong type or range. */
static bool entry_pair(void *arg, const struct proto_mp_item *k, const struct proto_mp_item *v,
                       size_t voff)
{
    (void)voff;
    struct entry_ctx *c = arg;
    struct fleet_wire_entry *e = c->e;
    uint64_t u = 0;
    if (peers_wire_key_is(k, "v"))
        return peers_wire_u64(v, &e->v);
    if (peers_wire_key_is(k, "c"))
        return peers_wire_str(v, &e->client, &e->client_len);
    if (peers_wire_key_is(k, "o")) {
        if (!peers_wire_u64(v, &u) || u > 1)
            return false;
        c->op = (int)u;
        return true;
    }
    if (peers_wire_key_is(k, "u"))
        return peers_wire_str(v, &e->user, &e->user_len);
    if (peers_wire_key_is(k, "la"))
        return (c->has_lat = peers_wire_double(v, &e->lat));
    if (peers_wire_key_is(k, "lo"))
        return (c->has_lon = peers_wire_double(v, &e->lon));
    if (peers_wire_key_is(k, "me")) {
        if (!peers_wire_u64(v, &u) || u < PROTO_PAYLOAD_JSON || u > PROTO_PAYLOAD_BINARY)
            return false;
        e->meta_enc = (int)u;
        return true;
    }
    if (peers_wire_key_is(k, "m")) {
        if (v->kind != PROTO_MP_BIN)
            return false;
        e->meta = v->ptr;
        e->meta_len = v->n;
        return true;
    }
    return true; /* unknown: skipped */
}

/* Reads the entry map at *off (the message was checked whole before). */
static bool read_entry(const uint8_t *p, size_t len, size_t *off, void *out)
{
    struct fleet_wire_entry *e = out;
    memset(e, 0, sizeof(*e));
    struct entry_ctx c = {.e = e, .op = -1};
    if (!peers_wire_walk_map(p, len, off, &LIMITS, entry_pair, &c))
        return false;
    if (!e->client || c.op < 0)
        return false;
    e->set = c.op == 1;
    if (!e->set) { /* a clear names the member only */
        e->user = NULL;
        e->user_len = 0;
        e->lat = e->lon = 0;
        e->meta_enc = 0;
        e->meta = NULL;
        e->meta_len = 0;
        return true;
    }
    return c.has_lat && c.has_lon && (!e->meta_len || e->meta_enc);
}

/* One key of the top-level map into m; false when its value is of the wrong type. */
static bool msg_pair(void *arg, const struct proto_mp_item *k, const struct proto_mp_item *v,
                     size_t voff)
{
    struct fleet_wire_msg *m = arg;
    if (peers_wire_key_is(k, "n"))
        return peers_wire_str(v, &m->node, &m->node_len);
    if (peers_wire_key_is(k, "s"))
        return peers_wire_str(v, &m->space, &m->space_len);
    if (peers_wire_key_is(k, "p"))
        return peers_wire_str(v, &m->prefix, &m->prefix_len);
    if (peers_wire_key_is(k, "c"))
        return peers_wire_str(v, &m->cell, &m->cell_len);
    if (peers_wire_key_is(k, "v"))
        return peers_wire_u64(v, &m->v);
    if (peers_wire_key_is(k, "r"))
        return peers_wire_u64(v, &m->req);
    if (peers_wire_key_is(k, "g"))
        return peers_wire_u64(v, &m->gen);
    if (peers_wire_key_is(k, "w"))
        return peers_wire_u64(v, &m->watermark);
    if (peers_wire_key_is(k, "t"))
        return peers_wire_u64(v, &m->ttl_ms);
    if (peers_wire_key_is(k, "hello"))
        return item_flag(v, &m->hello);
    if (peers_wire_key_is(k, "end"))
        return item_flag(v, &m->end);
    if (peers_wire_key_is(k, "e"))
        return peers_wire_array(v, voff, FLEET_WIRE_MAX_ELEMS, &m->entries_off, &m->n_entries);
    return true; /* unknown: skipped */
}

bool fleet_wire_decode(const uint8_t *bytes, size_t len, struct fleet_wire_msg *out)
{
    struct fleet_wire_msg *m = out;
    memset(m, 0, sizeof(*m));
    if (!peers_wire_check(bytes, len, &LIMITS))
        return false;
    m->bytes = bytes;
    m->len = len;
    size_t off = 0;
    if (peers_wire_walk_map(bytes, len, &off, &LIMITS, msg_pair, m) &&
        fleet_wire_token_ok(m->node, m->node_len, FLEET_WIRE_NODE_MAX) &&
        peers_wire_all_read(bytes, len, m->entries_off, m->n_entries, read_entry,
                            &(struct fleet_wire_entry){0}))
        return true;
    memset(m, 0, sizeof(*m));
    m->bytes = bytes;
    m->len = len;
    return false;
}

bool fleet_wire_next_entry(const struct fleet_wire_msg *m, struct fleet_wire_cursor *c,
                           struct fleet_wire_entry *e)
{
    return peers_wire_next(m->bytes, m->len, m->entries_off, m->n_entries, &c->off, &c->done,
                           read_entry, e);
}

/* ------------------------------------------------------------------------ */
/* Subjects                                                                   */

static bool starts_with(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

/* "rtgate.geo.d.<space>.<c>.<c>..." -> the cell's characters; 0 when it has none. */
static size_t delta_cell(const char *subject, char cell[GEO_CELL_BUF])
{
    const char *p = strchr(subject + strlen(FLEET_WIRE_SUBJ_DELTA), '.');
    size_t n = 0;
    while (p && *p == '.' && p[1] && (p[2] == '.' || p[2] == '\0') && n < GEO_PRECISION_MAX) {
        cell[n++] = p[1];
        p += 2;
    }
    cell[n] = '\0';
    return p && *p == '\0' ? n : 0;
}

enum fleet_wire_kind fleet_wire_kind_of(const char *subject, char cell[GEO_CELL_BUF],
                                        size_t *cell_len)
{
    if (cell_len)
        *cell_len = 0;
    if (!subject)
        return FLEET_WIRE_OTHER;
    if (strcmp(subject, FLEET_WIRE_SUBJ_HEARTBEAT) == 0)
        return FLEET_WIRE_HEARTBEAT;
    if (starts_with(subject, FLEET_WIRE_SUBJ_DELTA)) {
        char scratch[GEO_CELL_BUF];
        size_t n = delta_cell(subject, cell ? cell : scratch);
        if (cell_len)
            *cell_len = n;
        return FLEET_WIRE_DELTA;
    }
    if (starts_with(subject, FLEET_WIRE_SUBJ_REPLY))
        return FLEET_WIRE_SNAPSHOT_ANSWER;
    if (starts_with(subject, FLEET_WIRE_SUBJ_SNAPSHOT))
        return FLEET_WIRE_SNAPSHOT_ASK;
    return FLEET_WIRE_OTHER;
}

void fleet_wire_delta_subject(char *buf, size_t cap, const char *space, size_t space_len,
                              const char *cell, size_t cell_len, int share_precision)
{
    int w = snprintf(buf, cap, FLEET_WIRE_SUBJ_DELTA "%.*s", (int)space_len, space);
    size_t n = w < 0 ? 0 : (size_t)w < cap ? (size_t)w : cap - 1;
    for (size_t i = 0; i < cell_len && n + 3 < cap; i++) {
        buf[n++] = '.';
        buf[n++] = cell[i];
    }
    if ((int)cell_len < share_precision && n + 3 < cap) {
        buf[n++] = '.';
        buf[n++] = '>';
    }
    buf[n] = '\0';
}

/* ------------------------------------------------------------------------ */
/* Writing                                                                    */

void fleet_wire_heartbeat(struct proto_buf *out, const char *node, size_t node_len, uint64_t v,
                          uint64_t gen, uint64_t ttl_ms, bool hello)
{
    struct proto_writer w;
    peers_wire_begin(&w, out, node, node_len);
    proto_w_kuint(&w, "v", v);
    proto_w_kuint(&w, "g", gen);
    proto_w_kuint(&w, "t", ttl_ms);
    if (hello)
        proto_w_kbool(&w, "hello", true);
    proto_w_end(&w);
}

void fleet_wire_snapshot_ask(struct proto_buf *out, const char *node, size_t node_len, uint64_t req,
                             const char *space, size_t space_len, const char *prefix,
                             size_t prefix_len)
{
    struct proto_writer w;
    peers_wire_begin(&w, out, node, node_len);
    proto_w_kuint(&w, "r", req);
    proto_w_kstr(&w, "s", space, space_len);
    proto_w_kstr(&w, "p", prefix, prefix_len);
    proto_w_end(&w);
}

void fleet_wire_answer_begin(struct fleet_wire_writer *fw, struct proto_buf *out, const char *node,
                             size_t node_len, uint64_t req, uint64_t watermark, const char *space,
                             size_t space_len, const char *prefix, size_t prefix_len)
{
    peers_wire_begin(&fw->w, out, node, node_len);
    proto_w_kuint(&fw->w, "r", req);
    proto_w_kuint(&fw->w, "w", watermark);
    proto_w_kstr(&fw->w, "s", space, space_len);
    proto_w_kstr(&fw->w, "p", prefix, prefix_len);
    peers_wire_entries_begin(&fw->w);
    fw->entries = 0;
    fw->answer = true;
}

void fleet_wire_delta_begin(struct fleet_wire_writer *fw, struct proto_buf *out, const char *node,
                            size_t node_len, const char *space, size_t space_len, const char *cell)
{
    peers_wire_begin(&fw->w, out, node, node_len);
    proto_w_kstr(&fw->w, "s", space, space_len);
    proto_w_kcstr(&fw->w, "c", cell);
    peers_wire_entries_begin(&fw->w);
    fw->entries = 0;
    fw->answer = false;
}

void fleet_wire_put(struct fleet_wire_writer *fw, const struct fleet_wire_entry *e)
{
    struct proto_writer *w = &fw->w;
    proto_w_map(w);
    proto_w_kuint(w, "v", e->v);
    proto_w_kstr(w, "c", e->client, e->client_len);
    proto_w_kuint(w, "o", e->set ? 1 : 0);
    if (e->set) {
        proto_w_kstr(w, "u", e->user ? e->user : "", e->user_len);
        proto_w_kdouble(w, "la", e->lat);
        proto_w_kdouble(w, "lo", e->lon);
        if (e->meta_len) {
            proto_w_kint(w, "me", e->meta_enc);
            struct proto_payload p = {PROTO_PAYLOAD_BINARY, e->meta, e->meta_len, false};
            proto_w_payload(w, "m", &p);
        }
    }
    proto_w_end(w);
    fw->entries++;
}

rt_status fleet_wire_end(struct fleet_wire_writer *fw, bool last)
{
    proto_w_end(&fw->w); /* the entries */
    if (fw->answer)
        proto_w_kbool(&fw->w, "end", last);
    proto_w_end(&fw->w);
    return proto_writer_status(&fw->w);
}
