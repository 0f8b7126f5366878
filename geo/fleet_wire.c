/*
 * fleet_wire.c: the fleet's bus messages and subjects (fleet_wire.h), in
 * and out. Pure; reads through protocol/'s bounded msgpack scanner, writes
 * through its proto_writer.
 */
#include "fleet_wire.h"

#include <stdio.h>
#include <string.h>

#define MAX_DEPTH 16

bool fleet_wire_token_ok(const char *s, size_t len, size_t max)
{
    if (!s || len < 1 || len > max)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-'))
            return false;
    }
    return true;
}

/* ------------------------------------------------------------------------ */
/* Reading                                                                    */

static bool key_is(const struct proto_mp_item *k, const char *name)
{
    size_t n = strlen(name);
    return k->n == n && memcmp(k->ptr, name, n) == 0;
}

static bool item_u64(const struct proto_mp_item *it, uint64_t *out)
{
    if (it->kind == PROTO_MP_UINT)
        *out = it->u;
    else if (it->kind == PROTO_MP_INT && it->i >= 0)
        *out = (uint64_t)it->i;
    else
        return false;
    return true;
}

static bool item_double(const struct proto_mp_item *it, double *out)
{
    if (it->kind == PROTO_MP_FLOAT)
        *out = it->d;
    else if (it->kind == PROTO_MP_INT)
        *out = (double)it->i;
    else
        return false;
    return true;
}

static bool item_str(const struct proto_mp_item *it, const char **s, size_t *len)
{
    if (it->kind != PROTO_MP_STR)
        return false;
    *s = (const char *)it->ptr;
    *len = it->n;
    return true;
}

static bool item_bool(const struct proto_mp_item *it, bool *out)
{
    *out = it->kind == PROTO_MP_BOOL && it->b; /* anything else reads as false */
    return true;
}

/* Skips the value at *off (the message was scanned whole before). */
static bool skip_value(const uint8_t *p, size_t len, size_t *off)
{
    struct proto_mp_scan sc;
    proto_mp_scan(p + *off, len - *off, MAX_DEPTH, FLEET_WIRE_MAX_ELEMS, 0, &sc);
    if (sc.structural)
        return false;
    *off += sc.end;
    return true;
}

/* One key of an entry into e; false when its value has the wrong type or range. */
static bool entry_field(const struct proto_mp_item *k, const struct proto_mp_item *v,
                        struct fleet_wire_entry *e, int *op, bool *has_lat, bool *has_lon)
{
    uint64_t u = 0;
    if (key_is(k, "v"))
        return item_u64(v, &e->v);
    if (key_is(k, "c"))
        return item_str(v, &e->client, &e->client_len);
    if (key_is(k, "o")) {
        if (!item_u64(v, &u) || u > 1)
            return false;
        *op = (int)u;
        return true;
    }
    if (key_is(k, "u"))
        return item_str(v, &e->user, &e->user_len);
    if (key_is(k, "la"))
        return (*has_lat = item_double(v, &e->lat));
    if (key_is(k, "lo"))
        return (*has_lon = item_double(v, &e->lon));
    if (key_is(k, "me")) {
        if (!item_u64(v, &u) || u < PROTO_PAYLOAD_JSON || u > PROTO_PAYLOAD_BINARY)
            return false;
        e->meta_enc = (int)u;
        return true;
    }
    if (key_is(k, "m")) {
        if (v->kind != PROTO_MP_BIN)
            return false;
        e->meta = v->ptr;
        e->meta_len = v->n;
        return true;
    }
    return true; /* unknown: skipped */
}

/* Reads the entry map at *off (the message was scanned whole before). */
static bool read_entry(const uint8_t *p, size_t len, size_t *off, struct fleet_wire_entry *e)
{
    memset(e, 0, sizeof(*e));
    int op = -1;
    bool has_lat = false, has_lon = false;
    struct proto_mp_item it, k, v;
    if (!proto_mp_read(p, len, off, &it) || it.kind != PROTO_MP_MAP)
        return false;
    for (size_t i = 0; i < it.n; i++) {
        if (!proto_mp_read(p, len, off, &k))
            return false;
        size_t voff = *off;
        if (!proto_mp_read(p, len, off, &v) || !entry_field(&k, &v, e, &op, &has_lat, &has_lon))
            return false;
        *off = voff;
        if (!skip_value(p, len, off))
            return false;
    }
    if (!e->client || op < 0)
        return false;
    e->set = op == 1;
    if (!e->set) { /* a clear names the member only */
        e->user = NULL;
        e->user_len = 0;
        e->lat = e->lon = 0;
        e->meta_enc = 0;
        e->meta = NULL;
        e->meta_len = 0;
        return true;
    }
    return has_lat && has_lon && (!e->meta_len || e->meta_enc);
}

/* One key of the top-level map into m; false when its value is of the wrong type. */
static bool msg_field(const struct proto_mp_item *k, const struct proto_mp_item *v, size_t voff,
                      struct fleet_wire_msg *m)
{
    if (key_is(k, "n"))
        return item_str(v, &m->node, &m->node_len);
    if (key_is(k, "s"))
        return item_str(v, &m->space, &m->space_len);
    if (key_is(k, "p"))
        return item_str(v, &m->prefix, &m->prefix_len);
    if (key_is(k, "c"))
        return item_str(v, &m->cell, &m->cell_len);
    if (key_is(k, "v"))
        return item_u64(v, &m->v);
    if (key_is(k, "r"))
        return item_u64(v, &m->req);
    if (key_is(k, "g"))
        return item_u64(v, &m->gen);
    if (key_is(k, "w"))
        return item_u64(v, &m->watermark);
    if (key_is(k, "t"))
        return item_u64(v, &m->ttl_ms);
    if (key_is(k, "hello"))
        return item_bool(v, &m->hello);
    if (key_is(k, "end"))
        return item_bool(v, &m->end);
    if (key_is(k, "e")) {
        if (v->kind != PROTO_MP_ARRAY || v->n > FLEET_WIRE_MAX_ELEMS)
            return false;
        m->entries_off = voff;
        m->n_entries = (uint32_t)v->n;
        return true;
    }
    return true; /* unknown: skipped */
}

/* Every entry reads (so that a message is taken whole or not at all). */
static bool entries_ok(const struct fleet_wire_msg *m)
{
    struct fleet_wire_cursor c = {0};
    struct fleet_wire_entry e;
    uint32_t n = 0;
    while (fleet_wire_next_entry(m, &c, &e))
        n++;
    return n == m->n_entries;
}

bool fleet_wire_decode(const uint8_t *bytes, size_t len, struct fleet_wire_msg *out)
{
    struct fleet_wire_msg *m = out;
    memset(m, 0, sizeof(*m));
    if (!bytes || len == 0 || len > FLEET_WIRE_MAX_BYTES)
        return false;
    struct proto_mp_scan sc;
    proto_mp_scan(bytes, len, MAX_DEPTH, FLEET_WIRE_MAX_ELEMS, PROTO_MP_REJECT_NONSTR_K, &sc);
    if (sc.structural || sc.content || sc.end != len)
        return false;
    size_t off = 0;
    struct proto_mp_item it, k, v;
    if (!proto_mp_read(bytes, len, &off, &it) || it.kind != PROTO_MP_MAP)
        return false;
    m->bytes = bytes;
    m->len = len;
    for (size_t i = 0; i < it.n; i++) {
        if (!proto_mp_read(bytes, len, &off, &k))
            goto bad;
        size_t voff = off;
        if (!proto_mp_read(bytes, len, &off, &v) || !msg_field(&k, &v, voff, m))
            goto bad;
        off = voff;
        if (!skip_value(bytes, len, &off))
            goto bad;
    }
    if (fleet_wire_token_ok(m->node, m->node_len, FLEET_WIRE_NODE_MAX) && entries_ok(m))
        return true;
bad:
    memset(m, 0, sizeof(*m));
    m->bytes = bytes;
    m->len = len;
    return false;
}

bool fleet_wire_next_entry(const struct fleet_wire_msg *m, struct fleet_wire_cursor *c,
                           struct fleet_wire_entry *e)
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

/* Starts a message: a map with the node's id first. */
static void begin(struct proto_writer *w, struct proto_buf *out, const char *node, size_t node_len)
{
    proto_buf_reset(out);
    proto_writer_init(w, PROTO_MSGPACK, out);
    proto_w_map(w);
    proto_w_kstr(w, "n", node, node_len);
}

void fleet_wire_heartbeat(struct proto_buf *out, const char *node, size_t node_len, uint64_t v,
                          uint64_t gen, uint64_t ttl_ms, bool hello)
{
    struct proto_writer w;
    begin(&w, out, node, node_len);
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
    begin(&w, out, node, node_len);
    proto_w_kuint(&w, "r", req);
    proto_w_kstr(&w, "s", space, space_len);
    proto_w_kstr(&w, "p", prefix, prefix_len);
    proto_w_end(&w);
}

void fleet_wire_answer_begin(struct fleet_wire_writer *fw, struct proto_buf *out, const char *node,
                             size_t node_len, uint64_t req, uint64_t watermark, const char *space,
                             size_t space_len, const char *prefix, size_t prefix_len)
{
    begin(&fw->w, out, node, node_len);
    proto_w_kuint(&fw->w, "r", req);
    proto_w_kuint(&fw->w, "w", watermark);
    proto_w_kstr(&fw->w, "s", space, space_len);
    proto_w_kstr(&fw->w, "p", prefix, prefix_len);
    proto_w_key(&fw->w, "e");
    proto_w_array(&fw->w);
    fw->entries = 0;
    fw->answer = true;
}

void fleet_wire_delta_begin(struct fleet_wire_writer *fw, struct proto_buf *out, const char *node,
                            size_t node_len, const char *space, size_t space_len, const char *cell)
{
    begin(&fw->w, out, node, node_len);
    proto_w_kstr(&fw->w, "s", space, space_len);
    proto_w_kcstr(&fw->w, "c", cell);
    proto_w_key(&fw->w, "e");
    proto_w_array(&fw->w);
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
