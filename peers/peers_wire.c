/*
 * peers_wire.c: the frame every fleet bus message shares (peers.h): ids'
 * characters, the whole-message check, a map read pair by pair with typed
 * values, an array read element by element, and a message's start. Pure;
 * reads through protocol/'s bounded msgpack scanner, writes through its
 * proto_writer. Any thread.
 */
#include "peers.h"

#include <string.h>

bool peers_wire_chars_ok(const char *s, size_t len, size_t max, const char *extra)
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

bool peers_wire_node_ok(const char *s, size_t len)
{
    return peers_wire_chars_ok(s, len, PEERS_NODE_MAX, "_-");
}

/* ------------------------------------------------------------------------ */
/* Reading                                                                    */

bool peers_wire_check(const uint8_t *bytes, size_t len, const struct peers_wire_limits *lim)
{
    if (!bytes || len == 0 || len > lim->max_bytes)
        return false;
    struct proto_mp_scan sc;
    proto_mp_scan(bytes, len, lim->max_depth, lim->max_elems,
                  lim->scan_flags | PROTO_MP_REJECT_NONSTR_K, &sc);
    return !sc.structural && !sc.content && sc.end == len;
}

bool peers_wire_walk_map(const uint8_t *p, size_t len, size_t *off,
                         const struct peers_wire_limits *lim, peers_wire_pair_fn fn, void *ctx)
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
        proto_mp_scan(p + voff, len - voff, lim->max_depth, lim->max_elems, 0, &sc);
        if (sc.structural)
            return false;
        *off = voff + sc.end;
    }
    return true;
}

bool peers_wire_key_is(const struct proto_mp_item *key, const char *name)
{
    size_t n = strlen(name);
    return key->kind == PROTO_MP_STR && key->n == n && memcmp(key->ptr, name, n) == 0;
}

bool peers_wire_u64(const struct proto_mp_item *it, uint64_t *out)
{
    if (it->kind == PROTO_MP_UINT)
        *out = it->u;
    else if (it->kind == PROTO_MP_INT && it->i >= 0)
        *out = (uint64_t)it->i;
    else
        return false;
    return true;
}

bool peers_wire_double(const struct proto_mp_item *it, double *out)
{
    if (it->kind == PROTO_MP_FLOAT)
        *out = it->d;
    else if (it->kind == PROTO_MP_INT)
        *out = (double)it->i;
    else
        return false;
    return true;
}

bool peers_wire_str(const struct proto_mp_item *it, const char **s, size_t *len)
{
    if (it->kind != PROTO_MP_STR)
        return false;
    *s = (const char *)it->ptr;
    *len = it->n;
    return true;
}

bool peers_wire_bool(const struct proto_mp_item *it, bool *out)
{
    if (it->kind != PROTO_MP_BOOL)
        return false;
    *out = it->b;
    return true;
}

bool peers_wire_array(const struct proto_mp_item *it, size_t value_off, size_t max,
                      size_t *array_off, uint32_t *n)
{
    if (it->kind != PROTO_MP_ARRAY || it->n > max)
        return false;
    *array_off = value_off;
    *n = (uint32_t)it->n;
    return true;
}

bool peers_wire_next(const uint8_t *p, size_t len, size_t array_off, uint32_t n, size_t *off,
                     uint32_t *done, peers_wire_read_fn read, void *out)
{
    if (!array_off || *done >= n)
        return false;
    if (*off == 0) { /* past the array's header */
        struct proto_mp_item arr;
        *off = array_off;
        if (!proto_mp_read(p, len, off, &arr) || arr.kind != PROTO_MP_ARRAY)
            return false;
    }
    if (!read(p, len, off, out))
        return false;
    (*done)++;
    return true;
}

bool peers_wire_all_read(const uint8_t *p, size_t len, size_t array_off, uint32_t n,
                         peers_wire_read_fn read, void *scratch)
{
    size_t off = 0;
    uint32_t done = 0;
    while (peers_wire_next(p, len, array_off, n, &off, &done, read, scratch))
        ;
    return done == n;
}

/* ------------------------------------------------------------------------ */
/* Writing                                                                    */

void peers_wire_begin(struct proto_writer *w, struct proto_buf *out, const char *node,
                      size_t node_len)
{
    proto_buf_reset(out);
    proto_writer_init(w, PROTO_MSGPACK, out);
    proto_w_map(w);
    proto_w_kstr(w, "n", node, node_len);
}

void peers_wire_entries_begin(struct proto_writer *w)
{
    proto_w_key(w, "e");
    proto_w_array(w);
}
