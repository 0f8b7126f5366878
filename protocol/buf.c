/*
 * buf.c: the growable output buffer with transport headroom, base64 and
 * UTF-8 validation.
 */
#include "protocol_int.h"

#include <stdlib.h>
#include <string.h>

#define BUF_MIN_CAP 256

/* Prepares an empty buffer; nothing is allocated until the first write. */
void proto_buf_init(struct proto_buf *b, size_t headroom)
{
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
    b->headroom = headroom;
}

/* Makes room for `extra` more bytes after len. Existing bytes keep their
 * offsets but may move: pointers into data are invalidated. */
rt_status proto_buf_reserve(struct proto_buf *b, size_t extra)
{
    if (b->data != NULL && extra <= b->cap - b->len)
        return RT_OK;
    if (extra > SIZE_MAX / 2 - b->len - b->headroom)
        return RT_NOMEM;
    size_t need = b->len + extra;
    size_t cap = b->cap < BUF_MIN_CAP ? BUF_MIN_CAP : b->cap;
    while (cap < need)
        cap *= 2;
    uint8_t *base = b->data != NULL ? b->data - b->headroom : NULL;
    uint8_t *nbase = realloc(base, b->headroom + cap);
    if (nbase == NULL)
        return RT_NOMEM;
    b->data = nbase + b->headroom;
    b->cap = cap;
    return RT_OK;
}

/* Forgets the contents but keeps the allocation for the next message. */
void proto_buf_reset(struct proto_buf *b)
{
    b->len = 0;
}

/* Appends n bytes (RT_NOMEM leaves the buffer as it was). */
rt_status proto_buf_append(struct proto_buf *b, const void *p, size_t n)
{
    return proto__put(b, p, n);
}

/* Frees the allocation; the buffer is empty and reusable afterwards. */
void proto_buf_free(struct proto_buf *b)
{
    if (b->data != NULL)
        free(b->data - b->headroom);
    proto_buf_init(b, b->headroom);
}

/* Gives the allocation to the caller, who frees data - headroom. An empty
 * buffer gets a minimal allocation first, so the result is only NULL when
 * that fails. */
uint8_t *proto_buf_take(struct proto_buf *b, size_t *len)
{
    if (b->data == NULL && proto_buf_reserve(b, 1) != RT_OK) {
        *len = 0;
        return NULL;
    }
    uint8_t *data = b->data;
    *len = b->len;
    proto_buf_init(b, b->headroom);
    return data;
}

/* -------------------------------------------------------------------- */

static const char B64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
static const char B64URL[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/* Appends the base64 text of in[0..len) in `alphabet`, padded with '=' or not. */
static rt_status b64_encode(const uint8_t *in, size_t len, struct proto_buf *out,
                            const char *alphabet, bool pad)
{
    size_t full = (len + 2) / 3 * 4;
    size_t olen = pad || len % 3 == 0 ? full : full - (3 - len % 3);
    if (len > SIZE_MAX / 2 || proto_buf_reserve(out, full) != RT_OK)
        return RT_NOMEM;
    uint8_t *o = out->data + out->len;
    size_t i = 0;
    for (; i + 3 <= len; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        *o++ = (uint8_t)alphabet[v >> 18];
        *o++ = (uint8_t)alphabet[(v >> 12) & 63];
        *o++ = (uint8_t)alphabet[(v >> 6) & 63];
        *o++ = (uint8_t)alphabet[v & 63];
    }
    if (i < len) {
        uint32_t v = (uint32_t)in[i] << 16;
        if (i + 1 < len)
            v |= (uint32_t)in[i + 1] << 8;
        *o++ = (uint8_t)alphabet[v >> 18];
        *o++ = (uint8_t)alphabet[(v >> 12) & 63];
        *o++ = i + 1 < len ? (uint8_t)alphabet[(v >> 6) & 63] : (uint8_t)'=';
        *o++ = '=';
    }
    out->len += olen;
    return RT_OK;
}

/* Appends the padded base64 text of in[0..len). */
rt_status proto_base64_encode(const uint8_t *in, size_t len, struct proto_buf *out)
{
    return b64_encode(in, len, out, B64, true);
}

rt_status proto_base64url_encode(const uint8_t *in, size_t len, struct proto_buf *out)
{
    return b64_encode(in, len, out, B64URL, false);
}

/* The 6-bit value of a base64 character (url: the - and _ alphabet), or -1. */
static int b64_value(char c, bool url)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == (url ? '-' : '+'))
        return 62;
    if (c == (url ? '_' : '/'))
        return 63;
    return -1;
}

/* Decodes one 4-character group of which the last `pad` are missing or '='
 * (0-2). The bits the padding drops must be zero: one encoding per input. */
static bool b64_group(const char *in, size_t pad, bool url, uint8_t *o)
{
    uint32_t v = 0;
    for (size_t k = 0; k < 4; k++) {
        int d = k < 4 - pad ? b64_value(in[k], url) : 0;
        if (d < 0)
            return false;
        v = v << 6 | (uint32_t)d;
    }
    if ((pad == 1 && (v & 0xff) != 0) || (pad == 2 && (v & 0xffff) != 0))
        return false;
    o[0] = (uint8_t)(v >> 16);
    o[1] = (uint8_t)(v >> 8);
    o[2] = (uint8_t)v;
    return true;
}

/* Appends the bytes of strict, padded base64 text (no whitespace, no
 * missing padding, zero padding bits). On RT_INVAL out is unchanged. */
rt_status proto_base64_decode(const char *in, size_t len, struct proto_buf *out)
{
    if (len % 4 != 0)
        return RT_INVAL;
    if (len == 0)
        return RT_OK;
    size_t pad = in[len - 1] == '=' ? (in[len - 2] == '=' ? 2 : 1) : 0;
    size_t olen = len / 4 * 3 - pad;
    if (proto_buf_reserve(out, len / 4 * 3) != RT_OK)
        return RT_NOMEM;
    uint8_t *o = out->data + out->len;
    for (size_t i = 0; i < len; i += 4, o += 3) {
        if (!b64_group(in + i, i + 4 == len ? pad : 0, false, o))
            return RT_INVAL;
    }
    out->len += olen;
    return RT_OK;
}

/* Unpadded base64url: the last group has 2 or 3 characters (never 1). */
rt_status proto_base64url_decode(const char *in, size_t len, struct proto_buf *out)
{
    size_t rest = len % 4, pad = rest ? 4 - rest : 0;
    if (rest == 1)
        return RT_INVAL;
    size_t olen = len / 4 * 3 + (rest ? rest - 1 : 0);
    if (proto_buf_reserve(out, olen + 3) != RT_OK)
        return RT_NOMEM;
    uint8_t *o = out->data + out->len;
    for (size_t i = 0; i < len; i += 4, o += 3) {
        char group[4] = {'A', 'A', 'A', 'A'};
        size_t n = len - i < 4 ? len - i : 4;
        memcpy(group, in + i, n);
        if (!b64_group(group, n < 4 ? pad : 0, true, o))
            return RT_INVAL;
    }
    out->len += olen;
    return RT_OK;
}

/* -------------------------------------------------------------------- */

/* Length of the valid UTF-8 sequence at s[0..len), or 0 if invalid. */
static size_t utf8_seq(const uint8_t *s, size_t len)
{
    uint8_t c = s[0];
    size_t n;
    uint8_t lo = 0x80, hi = 0xbf; /* range of the second byte */
    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf)
        n = 2;
    else if (c >= 0xe0 && c <= 0xef) {
        n = 3;
        if (c == 0xe0)
            lo = 0xa0; /* overlong */
        else if (c == 0xed)
            hi = 0x9f; /* surrogates */
    } else if (c >= 0xf0 && c <= 0xf4) {
        n = 4;
        if (c == 0xf0)
            lo = 0x90; /* overlong */
        else if (c == 0xf4)
            hi = 0x8f; /* above U+10FFFF */
    } else
        return 0;
    if (len < n || s[1] < lo || s[1] > hi)
        return 0;
    for (size_t k = 2; k < n; k++)
        if ((s[k] & 0xc0) != 0x80)
            return 0;
    return n;
}

/* True if s[0..len) is valid UTF-8: shortest forms, no surrogates,
 * nothing above U+10FFFF, no truncated sequence. NUL bytes are valid. */
bool proto_utf8_valid(const char *s, size_t len)
{
    const uint8_t *p = (const uint8_t *)s;
    size_t i = 0;
    while (i < len) {
        /* ASCII runs are the common case: take them 8 bytes at a time. */
        if (len - i >= 8) {
            uint64_t w;
            memcpy(&w, p + i, 8);
            if ((w & 0x8080808080808080ull) == 0) {
                i += 8;
                continue;
            }
        }
        size_t n = utf8_seq(p + i, len - i);
        if (n == 0)
            return false;
        i += n;
    }
    return true;
}

void proto_pct_encode(const char *in, size_t len, char *out, size_t cap)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t o = 0;
    if (!cap)
        return;
    for (size_t i = 0; i < len && o + 4 <= cap; i++) {
        unsigned char c = (unsigned char)in[i];
        if (c > ' ' && c < 0x7f && c != '%') {
            out[o++] = (char)c;
            continue;
        }
        out[o++] = '%';
        out[o++] = hex[c >> 4];
        out[o++] = hex[c & 15];
    }
    out[o] = '\0';
}
