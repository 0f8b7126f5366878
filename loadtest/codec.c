/*
 * codec.c: requests written straight into frame buffers, and a targeted
 * scanner for server messages in both subprotocols. The scanner walks the
 * top-level object once, keeps the handful of fields the load generator
 * needs and skips the rest without building anything (a long `pad` string
 * is one memchr). It accepts any key order and any whitespace, so it does
 * not depend on how the server lays out its JSON.
 */
#include "load.h"

#include <string.h>

/* ------------------------------------------------------------------ */
/* Output helpers. */

static void out_bytes(struct lt_out *o, const void *p, size_t n)
{
    if (o->overflow || o->cap - o->len < n) {
        o->overflow = true;
        return;
    }
    memcpy(o->p + o->len, p, n);
    o->len += n;
}

static void out_str(struct lt_out *o, const char *s)
{
    out_bytes(o, s, strlen(s));
}

static void out_fill(struct lt_out *o, uint8_t c, size_t n)
{
    if (o->overflow || o->cap - o->len < n) {
        o->overflow = true;
        return;
    }
    memset(o->p + o->len, c, n);
    o->len += n;
}

static size_t u64_digits(uint64_t v)
{
    size_t n = 1;
    while (v >= 10) {
        v /= 10;
        n++;
    }
    return n;
}

static void out_u64(struct lt_out *o, uint64_t v)
{
    char tmp[24];
    size_t n = u64_digits(v);
    for (size_t i = n; i > 0; i--) {
        tmp[i - 1] = (char)('0' + v % 10);
        v /= 10;
    }
    out_bytes(o, tmp, n);
}

static void out_i64(struct lt_out *o, int64_t v)
{
    if (v < 0) {
        out_bytes(o, "-", 1);
        out_u64(o, (uint64_t)0 - (uint64_t)v);
    } else {
        out_u64(o, (uint64_t)v);
    }
}

/* msgpack pieces */

static void mp_u8(struct lt_out *o, uint8_t b)
{
    out_bytes(o, &b, 1);
}

static void mp_be(struct lt_out *o, uint64_t v, int bytes)
{
    uint8_t b[8];
    for (int i = 0; i < bytes; i++)
        b[i] = (uint8_t)(v >> (8 * (bytes - 1 - i)));
    out_bytes(o, b, (size_t)bytes);
}

static size_t mp_uint_size(uint64_t v)
{
    return v < 128 ? 1 : v <= 0xFF ? 2 : v <= 0xFFFF ? 3 : v <= 0xFFFFFFFFu ? 5 : 9;
}

static void mp_uint(struct lt_out *o, uint64_t v)
{
    if (v < 128) {
        mp_u8(o, (uint8_t)v);
    } else if (v <= 0xFF) {
        mp_u8(o, 0xCC);
        mp_be(o, v, 1);
    } else if (v <= 0xFFFF) {
        mp_u8(o, 0xCD);
        mp_be(o, v, 2);
    } else if (v <= 0xFFFFFFFFu) {
        mp_u8(o, 0xCE);
        mp_be(o, v, 4);
    } else {
        mp_u8(o, 0xCF);
        mp_be(o, v, 8);
    }
}

static void mp_int(struct lt_out *o, int64_t v)
{
    if (v >= 0) {
        mp_uint(o, (uint64_t)v);
    } else if (v >= -32) {
        mp_u8(o, (uint8_t)(0xE0 | (uint8_t)(v + 32)));
    } else {
        mp_u8(o, 0xD3);
        mp_be(o, (uint64_t)v, 8);
    }
}

static size_t mp_str_header_size(size_t n)
{
    return n < 32 ? 1 : n <= 0xFF ? 2 : n <= 0xFFFF ? 3 : 5;
}

static void mp_str_header(struct lt_out *o, size_t n)
{
    if (n < 32) {
        mp_u8(o, (uint8_t)(0xA0 | n));
    } else if (n <= 0xFF) {
        mp_u8(o, 0xD9);
        mp_be(o, n, 1);
    } else if (n <= 0xFFFF) {
        mp_u8(o, 0xDA);
        mp_be(o, n, 2);
    } else {
        mp_u8(o, 0xDB);
        mp_be(o, n, 4);
    }
}

static void mp_str(struct lt_out *o, const char *s)
{
    size_t n = strlen(s);
    mp_str_header(o, n);
    out_bytes(o, s, n);
}

/* ------------------------------------------------------------------ */
/* Requests. */

void lt_enc_connect(struct lt_out *o, enum lt_codec c, int64_t id, const char *name,
                    const char *token)
{
    if (c == LT_CODEC_JSON) {
        out_str(o, "{\"type\":\"connect\",\"id\":");
        out_i64(o, id);
        out_str(o, ",\"name\":\"");
        out_str(o, name);
        if (*token) { /* the option allowed only base64url and dots: nothing to escape */
            out_str(o, "\",\"token\":\"");
            out_str(o, token);
        }
        out_str(o, "\"}\n");
        return;
    }
    mp_u8(o, *token ? 0x84 : 0x83);
    mp_str(o, "type");
    mp_str(o, "connect");
    mp_str(o, "id");
    mp_int(o, id);
    mp_str(o, "name");
    mp_str(o, name);
    if (*token) {
        mp_str(o, "token");
        mp_str(o, token);
    }
}

void lt_enc_hello(struct lt_out *o, const struct lt_config *cfg, uint32_t index)
{
    const char *token = cfg->n_tokens ? cfg->tokens[index % cfg->n_tokens] : cfg->token;
    lt_enc_connect(o, cfg->codec, 1, "rtgate-load", token);
}

void lt_enc_sub(struct lt_out *o, enum lt_codec c, int64_t id, const char *channel, bool presence)
{
    if (c == LT_CODEC_JSON) {
        out_str(o, "{\"type\":\"sub\",\"id\":");
        out_i64(o, id);
        out_str(o, ",\"channel\":\"");
        out_str(o, channel);
        out_str(o, presence ? "\",\"presence\":true}\n" : "\"}\n");
        return;
    }
    mp_u8(o, presence ? 0x84 : 0x83);
    mp_str(o, "type");
    mp_str(o, "sub");
    mp_str(o, "id");
    mp_int(o, id);
    mp_str(o, "channel");
    mp_str(o, channel);
    if (presence) {
        mp_str(o, "presence");
        mp_u8(o, 0xc3);
    }
}

void lt_enc_ack(struct lt_out *o, enum lt_codec c, const char *channel, uint64_t seq)
{
    if (c == LT_CODEC_JSON) {
        out_str(o, "{\"type\":\"ack\",\"channel\":\"");
        out_str(o, channel);
        out_str(o, "\",\"seq\":");
        out_u64(o, seq);
        out_str(o, "}\n");
        return;
    }
    mp_u8(o, 0x83);
    mp_str(o, "type");
    mp_str(o, "ack");
    mp_str(o, "channel");
    mp_str(o, channel);
    mp_str(o, "seq");
    mp_uint(o, seq);
}

size_t lt_data_min_size(enum lt_codec c, uint64_t s, uint64_t p, uint64_t t)
{
    if (c == LT_CODEC_JSON) /* {"s":S,"p":P,"t":T,"pad":""} */
        return 25 + u64_digits(s) + u64_digits(p) + u64_digits(t);
    /* fixmap, 3 x (fixstr(1) key + uint), fixstr "pad", empty fixstr */
    return 1 + 3 * 2 + mp_uint_size(s) + mp_uint_size(p) + mp_uint_size(t) + 4 + 1;
}

size_t lt_data_json_len(uint64_t s, uint64_t p, uint64_t t, uint32_t payload)
{
    size_t min = lt_data_min_size(LT_CODEC_JSON, s, p, t);
    return payload > min ? payload : min;
}

void lt_enc_data_json(struct lt_out *o, uint64_t s, uint64_t p, uint64_t t, uint32_t payload)
{
    size_t min = lt_data_min_size(LT_CODEC_JSON, s, p, t);
    size_t pad = payload > min ? payload - min : 0;
    out_str(o, "{\"s\":");
    out_u64(o, s);
    out_str(o, ",\"p\":");
    out_u64(o, p);
    out_str(o, ",\"t\":");
    out_u64(o, t);
    out_str(o, ",\"pad\":\"");
    out_fill(o, 'x', pad);
    out_str(o, "\"}");
}

/* Pad length making the msgpack data value `payload` bytes long (or just under). */
static size_t mp_pad_len(size_t base_without_pad_str, uint32_t payload)
{
    size_t best = 0;
    static const size_t limits[] = {31, 0xFF, 0xFFFF, 0xFFFFFFFFu};
    for (size_t i = 0; i < 4; i++) {
        size_t hdr = mp_str_header_size(limits[i]);
        if (payload < base_without_pad_str + hdr)
            continue;
        size_t n = payload - base_without_pad_str - hdr;
        if (n > limits[i])
            n = limits[i];
        if (mp_str_header_size(n) == hdr && n > best)
            best = n;
    }
    return best;
}

void lt_enc_pub(struct lt_out *o, enum lt_codec c, int64_t id, const char *channel, uint64_t s,
                uint64_t p, uint64_t t, uint32_t payload)
{
    size_t min = lt_data_min_size(c, s, p, t);
    if (c == LT_CODEC_JSON) {
        out_str(o, "{\"type\":\"pub\",\"id\":");
        out_i64(o, id);
        out_str(o, ",\"channel\":\"");
        out_str(o, channel);
        out_str(o, "\",\"data\":");
        lt_enc_data_json(o, s, p, t, payload);
        out_str(o, "}\n");
        return;
    }
    size_t pad = mp_pad_len(min - 1, payload);
    mp_u8(o, 0x84);
    mp_str(o, "type");
    mp_str(o, "pub");
    mp_str(o, "id");
    mp_int(o, id);
    mp_str(o, "channel");
    mp_str(o, channel);
    mp_str(o, "data");
    mp_u8(o, 0x84);
    mp_str(o, "s");
    mp_uint(o, s);
    mp_str(o, "p");
    mp_uint(o, p);
    mp_str(o, "t");
    mp_uint(o, t);
    mp_str(o, "pad");
    mp_str_header(o, pad);
    out_fill(o, 'x', pad);
}

/* ------------------------------------------------------------------ */
/* Message types by name. */

static enum lt_mtype type_of(const uint8_t *s, size_t n)
{
    static const struct {
        const char *name;
        enum lt_mtype type;
    } names[] = {
        {"msg", LT_M_MSG},     {"reply", LT_M_REPLY},           {"connected", LT_M_CONNECTED},
        {"error", LT_M_ERROR}, {"disconnect", LT_M_DISCONNECT}, {"pong", LT_M_PONG},
        {"gap", LT_M_GAP},
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strlen(names[i].name) == n && memcmp(names[i].name, s, n) == 0)
            return names[i].type;
    return LT_M_OTHER;
}

static bool key_is(const uint8_t *k, size_t kl, const char *want)
{
    size_t wl = strlen(want);
    return kl == wl && memcmp(k, want, wl) == 0;
}

static void smsg_init(struct lt_smsg *m)
{
    memset(m, 0, sizeof *m);
    m->ok = -1;
    m->retry_after_ms = -1;
    m->heartbeat_ms = -1;
    m->max_unacked = -1;
    m->close_code = -1;
}

/* Fields of a nested object, by the key path they were found under. */
enum nest { NEST_TOP, NEST_DATA, NEST_ERROR, NEST_LIMITS };

/* Stores an integer field found at `where` under key k. */
static void take_int(struct lt_smsg *m, enum nest where, const uint8_t *k, size_t kl, bool neg,
                     uint64_t v)
{
    int64_t sv = neg ? -(int64_t)v : (int64_t)v;
    switch (where) {
    case NEST_TOP:
        if (key_is(k, kl, "id")) {
            m->has_id = true;
            m->id = sv;
        } else if (key_is(k, kl, "seq") && !neg) {
            m->has_seq = true;
            m->seq = v;
        } else if (key_is(k, kl, "heartbeat_ms")) {
            m->heartbeat_ms = sv;
        } else if (key_is(k, kl, "code")) {
            m->close_code = sv;
        } else if (key_is(k, kl, "from")) {
            m->gap_from = v;
        } else if (key_is(k, kl, "to")) {
            m->gap_to = v;
        }
        break;
    case NEST_DATA:
        if (neg)
            break;
        if (kl == 1 && k[0] == 's') {
            m->has_s = true;
            m->s = v;
        } else if (kl == 1 && k[0] == 'p') {
            m->has_p = true;
            m->p = v;
        } else if (kl == 1 && k[0] == 't') {
            m->has_t = true;
            m->t = v;
        }
        break;
    case NEST_ERROR:
        if (key_is(k, kl, "code"))
            m->error_code = (int)sv;
        else if (key_is(k, kl, "retry_after_ms"))
            m->retry_after_ms = sv;
        break;
    case NEST_LIMITS:
        if (key_is(k, kl, "max_unacked"))
            m->max_unacked = sv;
        break;
    }
}

/* ------------------------------------------------------------------ */
/* JSON */

struct jcur {
    const uint8_t *p;
    const uint8_t *end;
};

#define MAX_DEPTH 32

static void j_ws(struct jcur *c)
{
    while (c->p < c->end && (*c->p == ' ' || *c->p == '\n' || *c->p == '\r' || *c->p == '\t'))
        c->p++;
}

/* At a '"': sets the raw content span and moves past the closing quote. */
static bool j_string(struct jcur *c, const uint8_t **s, size_t *n)
{
    if (c->p >= c->end || *c->p != '"')
        return false;
    const uint8_t *start = c->p + 1;
    const uint8_t *q = start;
    for (;;) {
        q = memchr(q, '"', (size_t)(c->end - q));
        if (!q)
            return false;
        /* The quote is escaped when an odd number of backslashes precede it. */
        size_t bs = 0;
        while (q - bs > start && q[-1 - (ptrdiff_t)bs] == '\\')
            bs++;
        if ((bs & 1) == 0)
            break;
        q++;
    }
    *s = start;
    *n = (size_t)(q - start);
    c->p = q + 1;
    return true;
}

/* An object key and its colon, with the whitespace around them. */
static bool j_key(struct jcur *c, const uint8_t **k, size_t *kl)
{
    if (!j_string(c, k, kl))
        return false;
    j_ws(c);
    if (c->p >= c->end || *c->p != ':')
        return false;
    c->p++;
    j_ws(c);
    return true;
}

static bool j_skip(struct jcur *c, int depth);

static bool j_skip_container(struct jcur *c, int depth, uint8_t close, bool object)
{
    if (depth > MAX_DEPTH)
        return false;
    c->p++;
    j_ws(c);
    if (c->p < c->end && *c->p == close) {
        c->p++;
        return true;
    }
    for (;;) {
        j_ws(c);
        if (object) {
            const uint8_t *k;
            size_t kl;
            if (!j_key(c, &k, &kl))
                return false;
        }
        if (!j_skip(c, depth + 1))
            return false;
        j_ws(c);
        if (c->p >= c->end)
            return false;
        if (*c->p == ',') {
            c->p++;
            continue;
        }
        if (*c->p == close) {
            c->p++;
            return true;
        }
        return false;
    }
}

/* Skips one value of any kind. */
static bool j_skip(struct jcur *c, int depth)
{
    if (c->p >= c->end)
        return false;
    const uint8_t *s;
    size_t n;
    switch (*c->p) {
    case '"':
        return j_string(c, &s, &n);
    case '{':
        return j_skip_container(c, depth, '}', true);
    case '[':
        return j_skip_container(c, depth, ']', false);
    default: {
        const uint8_t *start = c->p;
        while (c->p < c->end) {
            uint8_t ch = *c->p;
            if ((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'z') || ch == '-' || ch == '+' ||
                ch == '.' || ch == 'E')
                c->p++;
            else
                break;
        }
        return c->p > start;
    }
    }
}

/*
 * Reads an integer value. Returns false on malformed input; *is_int is
 * false (and the value skipped) for anything that is not a plain integer.
 */
static bool j_int(struct jcur *c, bool *is_int, bool *neg, uint64_t *v)
{
    const uint8_t *start = c->p;
    *neg = false;
    *v = 0;
    *is_int = false;
    if (c->p < c->end && *c->p == '-') {
        *neg = true;
        c->p++;
    }
    size_t digits = 0;
    while (c->p < c->end && *c->p >= '0' && *c->p <= '9') {
        if (digits < 19)
            *v = *v * 10 + (uint64_t)(*c->p - '0');
        digits++;
        c->p++;
    }
    if (c->p < c->end && (*c->p == '.' || *c->p == 'e' || *c->p == 'E')) {
        c->p = start;
        return j_skip(c, 0);
    }
    if (digits == 0) {
        c->p = start;
        return j_skip(c, 0);
    }
    *is_int = digits <= 19;
    return true;
}

static bool j_object(struct jcur *c, struct lt_smsg *m, enum nest where, int depth);

/* One key's value inside an object at `where`. */
static bool j_value(struct jcur *c, struct lt_smsg *m, enum nest where, const uint8_t *k, size_t kl,
                    int depth)
{
    if (c->p >= c->end)
        return false;
    uint8_t ch = *c->p;
    if (where == NEST_TOP) {
        if (ch == '"' && (key_is(k, kl, "type") || key_is(k, kl, "channel"))) {
            const uint8_t *s;
            size_t n;
            if (!j_string(c, &s, &n))
                return false;
            if (k[0] == 't') {
                m->type = type_of(s, n);
            } else {
                m->channel = (const char *)s;
                m->channel_len = n;
            }
            return true;
        }
        if (ch == '{') {
            enum nest inner = key_is(k, kl, "data")     ? NEST_DATA
                              : key_is(k, kl, "error")  ? NEST_ERROR
                              : key_is(k, kl, "limits") ? NEST_LIMITS
                                                        : NEST_TOP;
            if (inner != NEST_TOP) {
                if (inner == NEST_DATA)
                    m->has_data = true;
                return j_object(c, m, inner, depth + 1);
            }
        }
        if ((ch == 't' || ch == 'f') && key_is(k, kl, "ok")) {
            bool t = ch == 't';
            if (!j_skip(c, depth))
                return false;
            m->ok = t ? 1 : 0;
            return true;
        }
    }
    if (ch == '-' || (ch >= '0' && ch <= '9')) {
        bool is_int, neg;
        uint64_t v;
        if (!j_int(c, &is_int, &neg, &v))
            return false;
        if (is_int)
            take_int(m, where, k, kl, neg, v);
        return true;
    }
    return j_skip(c, depth);
}

static bool j_object(struct jcur *c, struct lt_smsg *m, enum nest where, int depth)
{
    if (depth > MAX_DEPTH || c->p >= c->end || *c->p != '{')
        return false;
    c->p++;
    j_ws(c);
    if (c->p < c->end && *c->p == '}') {
        c->p++;
        return true;
    }
    for (;;) {
        j_ws(c);
        const uint8_t *k;
        size_t kl;
        if (!j_key(c, &k, &kl))
            return false;
        if (!j_value(c, m, where, k, kl, depth))
            return false;
        j_ws(c);
        if (c->p >= c->end)
            return false;
        if (*c->p == ',') {
            c->p++;
            continue;
        }
        if (*c->p == '}') {
            c->p++;
            return true;
        }
        return false;
    }
}

lt_status lt_scan_json(const uint8_t *buf, size_t len, size_t *pos, struct lt_smsg *m)
{
    struct jcur c = {buf + *pos, buf + len};
    j_ws(&c);
    if (c.p >= c.end) {
        *pos = len;
        return LT_AGAIN;
    }
    smsg_init(m);
    if (!j_object(&c, m, NEST_TOP, 0))
        return LT_ERR;
    if (m->has_data && !(m->has_s && m->has_p && m->has_t))
        m->has_data = false;
    *pos = (size_t)(c.p - buf);
    return LT_OK;
}

lt_status lt_scan_data_json(const uint8_t *buf, size_t len, struct lt_smsg *m)
{
    struct jcur c = {buf, buf + len};
    smsg_init(m);
    m->type = LT_M_MSG;
    j_ws(&c);
    if (!j_object(&c, m, NEST_DATA, 1))
        return LT_ERR;
    j_ws(&c);
    if (c.p != c.end)
        return LT_ERR;
    m->has_data = m->has_s && m->has_p && m->has_t;
    return LT_OK;
}

/* ------------------------------------------------------------------ */
/* msgpack */

struct mcur {
    const uint8_t *p;
    const uint8_t *end;
};

static bool m_need(const struct mcur *c, size_t n)
{
    return (size_t)(c->end - c->p) >= n;
}

static uint64_t m_be(const uint8_t *p, int bytes)
{
    uint64_t v = 0;
    for (int i = 0; i < bytes; i++)
        v = v << 8 | p[i];
    return v;
}

/* Reads a string's span; false if the next object is not a string. */
static bool m_str(struct mcur *c, const uint8_t **s, size_t *n)
{
    if (!m_need(c, 1))
        return false;
    uint8_t b = *c->p;
    size_t hl, len;
    if ((b & 0xE0) == 0xA0) {
        hl = 1;
        len = b & 0x1F;
    } else if (b == 0xD9 || b == 0xDA || b == 0xDB) {
        int w = b == 0xD9 ? 1 : b == 0xDA ? 2 : 4;
        if (!m_need(c, 1 + (size_t)w))
            return false;
        hl = 1 + (size_t)w;
        len = (size_t)m_be(c->p + 1, w);
    } else {
        return false;
    }
    if (!m_need(c, hl) || (size_t)(c->end - c->p) - hl < len)
        return false;
    *s = c->p + hl;
    *n = len;
    c->p += hl + len;
    return true;
}

/* Map length at the cursor; false if not a map. */
static bool m_map(struct mcur *c, uint32_t *n)
{
    if (!m_need(c, 1))
        return false;
    uint8_t b = *c->p;
    if ((b & 0xF0) == 0x80) {
        *n = b & 0x0F;
        c->p++;
    } else if (b == 0xDE && m_need(c, 3)) {
        *n = (uint32_t)m_be(c->p + 1, 2);
        c->p += 3;
    } else if (b == 0xDF && m_need(c, 5)) {
        *n = (uint32_t)m_be(c->p + 1, 4);
        c->p += 5;
    } else {
        return false;
    }
    /* Every entry takes at least two bytes: refuse counts the input cannot hold. */
    return (uint64_t)*n * 2 <= (uint64_t)(c->end - c->p);
}

/* Integer at the cursor: true and advanced when it is one. */
static bool m_int(struct mcur *c, bool *neg, uint64_t *v)
{
    if (!m_need(c, 1))
        return false;
    uint8_t b = *c->p;
    *neg = false;
    if (b < 0x80) {
        *v = b;
        c->p++;
        return true;
    }
    if (b >= 0xE0) {
        *neg = true;
        *v = (uint64_t)(0x100 - b);
        c->p++;
        return true;
    }
    int w;
    bool is_signed = false;
    switch (b) {
    case 0xCC:
        w = 1;
        break;
    case 0xCD:
        w = 2;
        break;
    case 0xCE:
        w = 4;
        break;
    case 0xCF:
        w = 8;
        break;
    case 0xD0:
        w = 1, is_signed = true;
        break;
    case 0xD1:
        w = 2, is_signed = true;
        break;
    case 0xD2:
        w = 4, is_signed = true;
        break;
    case 0xD3:
        w = 8, is_signed = true;
        break;
    default:
        return false;
    }
    if (!m_need(c, 1 + (size_t)w))
        return false;
    uint64_t raw = m_be(c->p + 1, w);
    c->p += 1 + (size_t)w;
    if (is_signed) {
        int shift = 64 - 8 * w;
        int64_t sv = (int64_t)(raw << shift) >> shift;
        *neg = sv < 0;
        *v = sv < 0 ? (uint64_t)0 - (uint64_t)sv : (uint64_t)sv;
    } else {
        *v = raw;
    }
    return true;
}

static bool m_skip(struct mcur *c, int depth)
{
    if (depth > MAX_DEPTH || !m_need(c, 1))
        return false;
    uint8_t b = *c->p;
    size_t fixed = 0; /* bytes after the type byte */
    uint64_t count = 0, items = 0;
    int lw = 0; /* width of a length field */
    if (b < 0x80 || b >= 0xE0 || b == 0xC0 || b == 0xC2 || b == 0xC3) {
        fixed = 0;
    } else if ((b & 0xF0) == 0x80) {
        items = (uint64_t)(b & 0x0F) * 2;
    } else if ((b & 0xF0) == 0x90) {
        items = b & 0x0F;
    } else if ((b & 0xE0) == 0xA0) {
        fixed = b & 0x1F;
    } else {
        switch (b) {
        case 0xCC:
        case 0xD0:
            fixed = 1;
            break;
        case 0xCD:
        case 0xD1:
            fixed = 2;
            break;
        case 0xCA:
        case 0xCE:
        case 0xD2:
            fixed = 4;
            break;
        case 0xCB:
        case 0xCF:
        case 0xD3:
            fixed = 8;
            break;
        case 0xD4:
            fixed = 2;
            break;
        case 0xD5:
            fixed = 3;
            break;
        case 0xD6:
            fixed = 5;
            break;
        case 0xD7:
            fixed = 9;
            break;
        case 0xD8:
            fixed = 17;
            break;
        case 0xC4:
        case 0xD9:
            lw = 1;
            break;
        case 0xC5:
        case 0xDA:
            lw = 2;
            break;
        case 0xC6:
        case 0xDB:
            lw = 4;
            break;
        case 0xC7:
            lw = -1;
            break; /* ext8: len then type */
        case 0xC8:
            lw = -2;
            break;
        case 0xC9:
            lw = -4;
            break;
        case 0xDC:
        case 0xDD:
        case 0xDE:
        case 0xDF: {
            int w = (b == 0xDC || b == 0xDE) ? 2 : 4;
            if (!m_need(c, 1 + (size_t)w))
                return false;
            count = m_be(c->p + 1, w);
            items = (b == 0xDE || b == 0xDF) ? count * 2 : count;
            c->p += 1 + (size_t)w;
            if (items > (uint64_t)(c->end - c->p))
                return false;
            for (uint64_t i = 0; i < items; i++)
                if (!m_skip(c, depth + 1))
                    return false;
            return true;
        }
        default:
            return false; /* 0xC1 is never used */
        }
    }
    c->p++;
    if (lw != 0) {
        int w = lw < 0 ? -lw : lw;
        if (!m_need(c, (size_t)w))
            return false;
        fixed = (size_t)m_be(c->p, w) + (lw < 0 ? 1 : 0);
        c->p += w;
    }
    if (items) {
        if (items > (uint64_t)(c->end - c->p))
            return false;
        for (uint64_t i = 0; i < items; i++)
            if (!m_skip(c, depth + 1))
                return false;
        return true;
    }
    if (!m_need(c, fixed))
        return false;
    c->p += fixed;
    return true;
}

static bool m_object(struct mcur *c, struct lt_smsg *m, enum nest where, int depth);

static bool m_value(struct mcur *c, struct lt_smsg *m, enum nest where, const uint8_t *k, size_t kl,
                    int depth)
{
    if (!m_need(c, 1))
        return false;
    uint8_t b = *c->p;
    if (where == NEST_TOP) {
        if (key_is(k, kl, "type") || key_is(k, kl, "channel")) {
            const uint8_t *s;
            size_t n;
            if (m_str(c, &s, &n)) {
                if (k[0] == 't') {
                    m->type = type_of(s, n);
                } else {
                    m->channel = (const char *)s;
                    m->channel_len = n;
                }
                return true;
            }
        } else if (key_is(k, kl, "ok") && (b == 0xC2 || b == 0xC3)) {
            m->ok = b == 0xC3;
            c->p++;
            return true;
        } else if ((b & 0xF0) == 0x80 || b == 0xDE || b == 0xDF) {
            enum nest inner = key_is(k, kl, "data")     ? NEST_DATA
                              : key_is(k, kl, "error")  ? NEST_ERROR
                              : key_is(k, kl, "limits") ? NEST_LIMITS
                                                        : NEST_TOP;
            if (inner != NEST_TOP) {
                if (inner == NEST_DATA)
                    m->has_data = true;
                return m_object(c, m, inner, depth + 1);
            }
        }
    }
    bool neg;
    uint64_t v;
    if (m_int(c, &neg, &v)) {
        take_int(m, where, k, kl, neg, v);
        return true;
    }
    return m_skip(c, depth);
}

static bool m_object(struct mcur *c, struct lt_smsg *m, enum nest where, int depth)
{
    uint32_t n;
    if (depth > MAX_DEPTH || !m_map(c, &n))
        return false;
    for (uint32_t i = 0; i < n; i++) {
        const uint8_t *k;
        size_t kl;
        if (!m_str(c, &k, &kl)) {
            /* A non-string key is legal msgpack; it is just not ours. */
            if (!m_skip(c, depth + 1) || !m_skip(c, depth + 1))
                return false;
            continue;
        }
        if (!m_value(c, m, where, k, kl, depth))
            return false;
    }
    return true;
}

lt_status lt_scan_msgpack(const uint8_t *buf, size_t len, size_t *pos, struct lt_smsg *m)
{
    if (*pos >= len)
        return LT_AGAIN;
    struct mcur c = {buf + *pos, buf + len};
    smsg_init(m);
    if (!m_object(&c, m, NEST_TOP, 0))
        return LT_ERR;
    if (m->has_data && !(m->has_s && m->has_p && m->has_t))
        m->has_data = false;
    *pos = (size_t)(c.p - buf);
    return LT_OK;
}
