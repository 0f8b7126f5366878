/*
 * writer.c: the codec-neutral message writer. The caller says "map, key,
 * value, ..., end" once; the writer produces compact JSON (one message per
 * line) or msgpack (16-bit container headers patched when the container
 * ends, so counts need not be known up front).
 */
#include "protocol_int.h"

#include <string.h>

/* Starts writing at the end of buf (earlier messages stay). */
void proto_writer_init(struct proto_writer *w, enum proto_codec codec, struct proto_buf *buf)
{
    memset(w, 0, sizeof *w);
    w->codec = codec;
    w->buf = buf;
    w->status = RT_OK;
}

/* RT_OK, or the first error: RT_NOMEM, RT_TOO_BIG (too deep, or over 65535
 * items in a msgpack container), RT_INVAL (misuse, invalid UTF-8 or an
 * untranscodable payload). */
rt_status proto_writer_status(const struct proto_writer *w)
{
    return w->status;
}

void proto__w_fail(struct proto_writer *w, rt_status st)
{
    if (w->status == RT_OK && st != RT_OK)
        w->status = st;
}

static bool w_in_map(const struct proto_writer *w)
{
    return w->depth > 0 && w->is_map[w->depth - 1];
}

/* Bookkeeping before a value: a map needs a key first, an array counts the
 * item and (JSON) separates it from the previous one. */
static bool w_value_begin(struct proto_writer *w)
{
    if (w->status != RT_OK)
        return false;
    if (w->depth == 0)
        return true;
    int top = w->depth - 1;
    if (w->is_map[top]) {
        if (!w->after_key) {
            proto__w_fail(w, RT_INVAL);
            return false;
        }
        w->after_key = false;
        return true;
    }
    if (w->count[top] == UINT16_MAX) {
        proto__w_fail(w, RT_TOO_BIG);
        return false;
    }
    if (w->codec == PROTO_JSON && w->count[top] > 0)
        proto__w_fail(w, proto__put_byte(w->buf, ','));
    w->count[top]++;
    return w->status == RT_OK;
}

bool proto__w_raw_begin(struct proto_writer *w)
{
    return w_value_begin(w);
}

static void w_open(struct proto_writer *w, bool is_map)
{
    if (!w_value_begin(w))
        return;
    if (w->depth == PROTO_WRITER_MAX_DEPTH) {
        proto__w_fail(w, RT_TOO_BIG);
        return;
    }
    int d = w->depth++;
    w->count[d] = 0;
    w->is_map[d] = is_map;
    w->hdr_pos[d] = w->buf->len;
    if (w->codec == PROTO_JSON) {
        proto__w_fail(w, proto__put_byte(w->buf, is_map ? '{' : '['));
        return;
    }
    const uint8_t hdr[3] = {is_map ? 0xde : 0xdc, 0, 0};
    proto__w_fail(w, proto__put(w->buf, hdr, sizeof hdr));
}

/* Opens a map (as a value, or as a top-level message). */
void proto_w_map(struct proto_writer *w)
{
    w_open(w, true);
}

/* Opens an array. */
void proto_w_array(struct proto_writer *w)
{
    w_open(w, false);
}

/* Closes the innermost map or array. Closing a top-level JSON message ends
 * its line. A map left with a key and no value is RT_INVAL. */
void proto_w_end(struct proto_writer *w)
{
    if (w->status != RT_OK)
        return;
    if (w->depth == 0 || w->after_key) {
        proto__w_fail(w, RT_INVAL);
        return;
    }
    int d = --w->depth;
    if (w->codec == PROTO_MSGPACK) {
        uint8_t *hdr = w->buf->data + w->hdr_pos[d];
        hdr[1] = (uint8_t)(w->count[d] >> 8);
        hdr[2] = (uint8_t)w->count[d];
        return;
    }
    proto__w_fail(w, proto__put_byte(w->buf, w->is_map[d] ? '}' : ']'));
    if (d == 0)
        proto__w_fail(w, proto__put_byte(w->buf, '\n'));
}

/* Writes key + suffix as one key of the current map. */
void proto__w_key2(struct proto_writer *w, const char *key, const char *suffix)
{
    if (w->status != RT_OK)
        return;
    int top = w->depth - 1;
    if (!w_in_map(w) || w->after_key) {
        proto__w_fail(w, RT_INVAL);
        return;
    }
    if (w->count[top] == UINT16_MAX) {
        proto__w_fail(w, RT_TOO_BIG);
        return;
    }
    char tmp[128];
    size_t klen = strlen(key), slen = strlen(suffix);
    if (klen + slen > sizeof tmp || !proto_utf8_valid(key, klen)) {
        proto__w_fail(w, RT_INVAL);
        return;
    }
    memcpy(tmp, key, klen);
    memcpy(tmp + klen, suffix, slen);
    if (w->codec == PROTO_JSON) {
        if (w->count[top] > 0)
            proto__w_fail(w, proto__put_byte(w->buf, ','));
        proto__w_fail(w, proto__js_str(w->buf, tmp, klen + slen));
        proto__w_fail(w, proto__put_byte(w->buf, ':'));
    } else {
        proto__w_fail(w, proto__mp_str(w->buf, tmp, klen + slen));
    }
    w->count[top]++;
    w->after_key = true;
}

/* Writes a map key (a NUL-terminated UTF-8 string of at most 127 bytes). */
void proto_w_key(struct proto_writer *w, const char *key)
{
    proto__w_key2(w, key, "");
}

/* Writes a string value; bytes that are not UTF-8 make it RT_INVAL. */
void proto_w_str(struct proto_writer *w, const char *s, size_t len)
{
    if (!proto_utf8_valid(s, len)) {
        proto__w_fail(w, RT_INVAL);
        return;
    }
    if (!w_value_begin(w))
        return;
    proto__w_fail(w, w->codec == PROTO_JSON ? proto__js_str(w->buf, s, len)
                                            : proto__mp_str(w->buf, s, len));
}

void proto_w_cstr(struct proto_writer *w, const char *s)
{
    proto_w_str(w, s, strlen(s));
}

void proto_w_int(struct proto_writer *w, int64_t v)
{
    if (w_value_begin(w))
        proto__w_fail(w,
                      w->codec == PROTO_JSON ? proto__js_int(w->buf, v) : proto__mp_int(w->buf, v));
}

void proto_w_uint(struct proto_writer *w, uint64_t v)
{
    if (w_value_begin(w))
        proto__w_fail(w, w->codec == PROTO_JSON ? proto__js_uint(w->buf, v)
                                                : proto__mp_uint(w->buf, v));
}

/* Writes a double exactly (float64 / round-trip text); NaN and infinities
 * become null in both codecs. */
void proto_w_double(struct proto_writer *w, double v)
{
    if (w_value_begin(w))
        proto__w_fail(w, w->codec == PROTO_JSON ? proto__js_double(w->buf, v)
                                                : proto__mp_double(w->buf, v));
}

void proto_w_bool(struct proto_writer *w, bool v)
{
    if (!w_value_begin(w))
        return;
    if (w->codec == PROTO_JSON)
        proto__w_fail(w, v ? proto__put(w->buf, "true", 4) : proto__put(w->buf, "false", 5));
    else
        proto__w_fail(w, proto__mp_bool(w->buf, v));
}

void proto_w_null(struct proto_writer *w)
{
    if (w_value_begin(w))
        proto__w_fail(w, w->codec == PROTO_JSON ? proto__put(w->buf, "null", 4)
                                                : proto__mp_nil(w->buf));
}

void proto_w_kstr(struct proto_writer *w, const char *key, const char *s, size_t len)
{
    proto_w_key(w, key);
    proto_w_str(w, s, len);
}

void proto_w_kcstr(struct proto_writer *w, const char *key, const char *s)
{
    proto_w_key(w, key);
    proto_w_cstr(w, s);
}

void proto_w_kint(struct proto_writer *w, const char *key, int64_t v)
{
    proto_w_key(w, key);
    proto_w_int(w, v);
}

void proto_w_kuint(struct proto_writer *w, const char *key, uint64_t v)
{
    proto_w_key(w, key);
    proto_w_uint(w, v);
}

void proto_w_kdouble(struct proto_writer *w, const char *key, double v)
{
    proto_w_key(w, key);
    proto_w_double(w, v);
}

void proto_w_kbool(struct proto_writer *w, const char *key, bool v)
{
    proto_w_key(w, key);
    proto_w_bool(w, v);
}
