/*
 * mpread.c: a small msgpack reader. It never allocates, so a header that
 * claims 2^32 elements costs nothing: counts are checked against the bytes
 * left before anything trusts them. (msgpack-c's unpacker allocates storage
 * for a container from its header before seeing the elements, which is why
 * rtgate does not run it on untrusted bytes.)
 */
#include "protocol_int.h"

#include <string.h>

/* Reads an n-byte big-endian unsigned integer at p[*off]. */
static bool rd_be(const uint8_t *p, size_t len, size_t *off, int n, uint64_t *v)
{
    if (len - *off < (size_t)n)
        return false;
    uint64_t x = 0;
    for (int k = 0; k < n; k++)
        x = x << 8 | p[*off + (size_t)k];
    *off += (size_t)n;
    *v = x;
    return true;
}

/* Takes a body of n bytes at p[*off]. */
static bool rd_body(const uint8_t *p, size_t len, size_t *off, uint64_t n, struct proto_mp_item *it)
{
    if (n > len - *off)
        return false;
    it->ptr = p + *off;
    it->n = (size_t)n;
    *off += (size_t)n;
    return true;
}

static void set_uint(struct proto_mp_item *it, uint64_t u)
{
    if (u <= INT64_MAX) {
        it->kind = PROTO_MP_INT;
        it->i = (int64_t)u;
    } else {
        it->kind = PROTO_MP_UINT;
        it->u = u;
    }
}

/* Signed n-byte integer from its big-endian bits. */
static int64_t sign_extend(uint64_t v, int n)
{
    int shift = 64 - 8 * n;
    if (shift == 0)
        return (int64_t)v;
    uint64_t sign = 1ull << (8 * n - 1);
    return (int64_t)(v ^ sign) - (int64_t)sign;
}

static bool rd_float(const uint8_t *p, size_t len, size_t *off, int n, struct proto_mp_item *it)
{
    uint64_t v;
    if (!rd_be(p, len, off, n, &v))
        return false;
    it->kind = PROTO_MP_FLOAT;
    if (n == 4) {
        uint32_t bits = (uint32_t)v;
        float f;
        memcpy(&f, &bits, sizeof f);
        it->d = (double)f;
    } else {
        memcpy(&it->d, &v, sizeof it->d);
    }
    return true;
}

/* str / bin / ext with an explicit length of n bytes (ext: then a type byte). */
static bool rd_sized(const uint8_t *p, size_t len, size_t *off, enum proto_mp_kind kind, int n,
                     struct proto_mp_item *it)
{
    uint64_t size, type = 0;
    it->kind = kind;
    if (!rd_be(p, len, off, n, &size))
        return false;
    if (kind == PROTO_MP_EXT && !rd_be(p, len, off, 1, &type))
        return false;
    it->ext_type = (int8_t)sign_extend(type, 1);
    return rd_body(p, len, off, size, it);
}

static bool rd_fixext(const uint8_t *p, size_t len, size_t *off, size_t size,
                      struct proto_mp_item *it)
{
    uint64_t type;
    it->kind = PROTO_MP_EXT;
    if (!rd_be(p, len, off, 1, &type))
        return false;
    it->ext_type = (int8_t)sign_extend(type, 1);
    return rd_body(p, len, off, size, it);
}

static bool rd_count(const uint8_t *p, size_t len, size_t *off, enum proto_mp_kind kind, int n,
                     struct proto_mp_item *it)
{
    uint64_t v;
    it->kind = kind;
    if (!rd_be(p, len, off, n, &v))
        return false;
    it->n = (size_t)v;
    return true;
}

/* The type bytes 0xc0..0xdf. */
static bool rd_tagged(const uint8_t *p, size_t len, size_t *off, uint8_t c,
                      struct proto_mp_item *it)
{
    uint64_t v;
    switch (c) {
    case 0xc0:
        it->kind = PROTO_MP_NIL;
        return true;
    case 0xc2:
    case 0xc3:
        it->kind = PROTO_MP_BOOL;
        it->b = c == 0xc3;
        return true;
    case 0xc4:
        return rd_sized(p, len, off, PROTO_MP_BIN, 1, it);
    case 0xc5:
        return rd_sized(p, len, off, PROTO_MP_BIN, 2, it);
    case 0xc6:
        return rd_sized(p, len, off, PROTO_MP_BIN, 4, it);
    case 0xc7:
        return rd_sized(p, len, off, PROTO_MP_EXT, 1, it);
    case 0xc8:
        return rd_sized(p, len, off, PROTO_MP_EXT, 2, it);
    case 0xc9:
        return rd_sized(p, len, off, PROTO_MP_EXT, 4, it);
    case 0xca:
        return rd_float(p, len, off, 4, it);
    case 0xcb:
        return rd_float(p, len, off, 8, it);
    case 0xcc:
    case 0xcd:
    case 0xce:
    case 0xcf:
        if (!rd_be(p, len, off, 1 << (c - 0xcc), &v))
            return false;
        set_uint(it, v);
        return true;
    case 0xd0:
    case 0xd1:
    case 0xd2:
    case 0xd3:
        if (!rd_be(p, len, off, 1 << (c - 0xd0), &v))
            return false;
        it->kind = PROTO_MP_INT;
        it->i = sign_extend(v, 1 << (c - 0xd0));
        return true;
    case 0xd4:
    case 0xd5:
    case 0xd6:
    case 0xd7:
    case 0xd8:
        return rd_fixext(p, len, off, (size_t)1 << (c - 0xd4), it);
    case 0xd9:
        return rd_sized(p, len, off, PROTO_MP_STR, 1, it);
    case 0xda:
        return rd_sized(p, len, off, PROTO_MP_STR, 2, it);
    case 0xdb:
        return rd_sized(p, len, off, PROTO_MP_STR, 4, it);
    case 0xdc:
        return rd_count(p, len, off, PROTO_MP_ARRAY, 2, it);
    case 0xdd:
        return rd_count(p, len, off, PROTO_MP_ARRAY, 4, it);
    case 0xde:
        return rd_count(p, len, off, PROTO_MP_MAP, 2, it);
    case 0xdf:
        return rd_count(p, len, off, PROTO_MP_MAP, 4, it);
    default:
        return false; /* 0xc1 is reserved */
    }
}

/* Reads one item header (and the body of str/bin/ext). */
bool proto_mp_read(const uint8_t *p, size_t len, size_t *off, struct proto_mp_item *it)
{
    if (*off >= len)
        return false;
    uint8_t c = p[(*off)++];
    if (c <= 0x7f) {
        it->kind = PROTO_MP_INT;
        it->i = c;
        return true;
    }
    if (c >= 0xe0) {
        it->kind = PROTO_MP_INT;
        it->i = (int64_t)(int8_t)c;
        return true;
    }
    if (c <= 0x8f) {
        it->kind = PROTO_MP_MAP;
        it->n = c & 0x0fu;
        return true;
    }
    if (c <= 0x9f) {
        it->kind = PROTO_MP_ARRAY;
        it->n = c & 0x0fu;
        return true;
    }
    if (c <= 0xbf) {
        it->kind = PROTO_MP_STR;
        return rd_body(p, len, off, c & 0x1fu, it);
    }
    return rd_tagged(p, len, off, c, it);
}

/* -------------------------------------------------------------------- */

struct scan_state {
    uint64_t left[PROTO_MP_DEPTH_CAP]; /* items still to read at each level */
    bool is_map[PROTO_MP_DEPTH_CAP];
    size_t depth, max_depth;
    size_t elements, max_elements;
};

/* Checks one container header and opens its level. */
static const char *scan_open(struct scan_state *s, const struct proto_mp_item *it, size_t avail)
{
    bool is_map = it->kind == PROTO_MP_MAP;
    uint64_t items = is_map ? 2 * (uint64_t)it->n : it->n;
    /* Every element takes at least one byte: a larger count is a lie. */
    if (items > avail)
        return "msgpack container count exceeds the input";
    if (it->n > s->max_elements - s->elements)
        return "too many elements";
    s->elements += it->n;
    if (s->depth + 1 > s->max_depth)
        return "nesting too deep";
    if (items == 0)
        return NULL;
    s->left[s->depth] = items;
    s->is_map[s->depth] = is_map;
    s->depth++;
    return NULL;
}

/* Finds content problems of one scalar item. */
static const char *scan_content(const struct proto_mp_item *it, bool is_key, unsigned flags)
{
    if (is_key && it->kind != PROTO_MP_STR && (flags & PROTO_MP_REJECT_NONSTR_K))
        return "map keys must be strings (JSON clients cannot receive others)";
    if (it->kind == PROTO_MP_STR && !proto_utf8_valid((const char *)it->ptr, it->n))
        return "invalid UTF-8 in a string";
    if (it->kind == PROTO_MP_EXT && (flags & PROTO_MP_REJECT_EXT))
        return "msgpack ext types are not supported";
    return NULL;
}

/* Walks one object without recursion, checking structure, limits, UTF-8. */
void proto_mp_scan(const uint8_t *p, size_t len, size_t max_depth, size_t max_elements,
                   unsigned flags, struct proto_mp_scan *out)
{
    struct scan_state s;
    s.depth = 0;
    s.max_depth = max_depth < PROTO_MP_DEPTH_CAP ? max_depth : PROTO_MP_DEPTH_CAP;
    s.elements = 0;
    s.max_elements = max_elements;
    out->end = 0;
    out->structural = NULL;
    out->content = NULL;
    size_t off = 0;
    do {
        bool is_key = false;
        if (s.depth > 0) {
            is_key = s.is_map[s.depth - 1] && s.left[s.depth - 1] % 2 == 0;
            s.left[s.depth - 1]--;
        }
        struct proto_mp_item it;
        if (!proto_mp_read(p, len, &off, &it)) {
            out->structural = "truncated or invalid msgpack";
            return;
        }
        const char *why = scan_content(&it, is_key, flags);
        if (why != NULL && out->content == NULL)
            out->content = why;
        if (it.kind == PROTO_MP_ARRAY || it.kind == PROTO_MP_MAP) {
            out->structural = scan_open(&s, &it, len - off);
            if (out->structural != NULL)
                return;
        }
        while (s.depth > 0 && s.left[s.depth - 1] == 0)
            s.depth--;
    } while (s.depth > 0);
    out->end = off;
}
