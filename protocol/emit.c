/*
 * emit.c: appends single JSON or msgpack values to a proto_buf. The writer
 * and the transcoders are built from these.
 */
#include "protocol_int.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Appends n bytes. */
rt_status proto__put(struct proto_buf *b, const void *p, size_t n)
{
    if (n == 0)
        return RT_OK;
    if (proto_buf_reserve(b, n) != RT_OK)
        return RT_NOMEM;
    memcpy(b->data + b->len, p, n);
    b->len += n;
    return RT_OK;
}

/* Appends one byte. */
rt_status proto__put_byte(struct proto_buf *b, uint8_t c)
{
    if (proto_buf_reserve(b, 1) != RT_OK)
        return RT_NOMEM;
    b->data[b->len++] = c;
    return RT_OK;
}

/* -------------------------------------------------------------------- */
/* JSON                                                                  */

/* The escape of a byte that JSON does not allow raw in a string, or 0. */
static char js_short_escape(uint8_t c)
{
    switch (c) {
    case '"':
        return '"';
    case '\\':
        return '\\';
    case '\b':
        return 'b';
    case '\f':
        return 'f';
    case '\n':
        return 'n';
    case '\r':
        return 'r';
    case '\t':
        return 't';
    default:
        return 0;
    }
}

/* Bytes the escaped form of s[0..len) takes, quotes excluded. */
static size_t js_escaped_len(const char *s, size_t len)
{
    size_t n = len;
    for (size_t i = 0; i < len; i++) {
        uint8_t c = (uint8_t)s[i];
        if (c < 0x20 || c == '"' || c == '\\')
            n += js_short_escape(c) != 0 ? 1 : 5;
    }
    return n;
}

/* Appends "s" with quote, backslash and control characters escaped. Other
 * bytes are copied: the caller guarantees UTF-8. */
rt_status proto__js_str(struct proto_buf *b, const char *s, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    size_t n = js_escaped_len(s, len);
    if (n > SIZE_MAX - 2 || proto_buf_reserve(b, n + 2) != RT_OK)
        return RT_NOMEM;
    uint8_t *o = b->data + b->len;
    *o++ = '"';
    if (n == len && len > 0) {
        memcpy(o, s, len);
        o += len;
    } else {
        for (size_t i = 0; i < len; i++) {
            uint8_t c = (uint8_t)s[i];
            if (c >= 0x20 && c != '"' && c != '\\') {
                *o++ = c;
                continue;
            }
            char e = js_short_escape(c);
            *o++ = '\\';
            if (e != 0) {
                *o++ = (uint8_t)e;
                continue;
            }
            memcpy(o, "u00", 3);
            o[3] = (uint8_t)hex[c >> 4];
            o[4] = (uint8_t)hex[c & 15];
            o += 5;
        }
    }
    *o++ = '"';
    b->len = (size_t)(o - b->data);
    return RT_OK;
}

/* Decimal digits of v, written backwards from end; returns the first. (snprintf
 * costs ~800 instructions an integer, and every frame has a few: callgrind.) */
static char *u64_digits(char *end, uint64_t v)
{
    do {
        *--end = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    return end;
}

rt_status proto__js_int(struct proto_buf *b, int64_t v)
{
    char tmp[24];
    char *end = tmp + sizeof tmp;
    char *p = u64_digits(end, v < 0 ? 0 - (uint64_t)v : (uint64_t)v);
    if (v < 0)
        *--p = '-';
    return proto__put(b, p, (size_t)(end - p));
}

rt_status proto__js_uint(struct proto_buf *b, uint64_t v)
{
    char tmp[24];
    char *end = tmp + sizeof tmp;
    char *p = u64_digits(end, v);
    return proto__put(b, p, (size_t)(end - p));
}

/* Prints v with the fewest significant digits (15..17) that read back
 * exactly. A locale with a decimal comma is undone. */
static int js_format_double(char *tmp, size_t size, double v)
{
    int n = 0;
    for (int prec = 15; prec <= 17; prec++) {
        n = snprintf(tmp, size, "%.*g", prec, v);
        for (char *c = tmp; *c != '\0'; c++)
            if (*c == ',')
                *c = '.';
        if (strtod(tmp, NULL) == v)
            break;
    }
    return n;
}

rt_status proto__js_double(struct proto_buf *b, double v)
{
    if (!isfinite(v))
        return proto__put(b, "null", 4);
    char tmp[40];
    int n = js_format_double(tmp, sizeof tmp - 2, v);
    /* Keep it a real for readers that tell 1.0 from 1. */
    if (strpbrk(tmp, ".e") == NULL) {
        memcpy(tmp + n, ".0", 3);
        n += 2;
    }
    return proto__put(b, tmp, (size_t)n);
}

/* -------------------------------------------------------------------- */
/* Msgpack                                                               */

/* Appends a type byte followed by the low `nbytes` bytes of v, big-endian. */
static rt_status mp_tagged(struct proto_buf *b, uint8_t tag, uint64_t v, int nbytes)
{
    uint8_t tmp[9];
    tmp[0] = tag;
    for (int k = 0; k < nbytes; k++)
        tmp[1 + k] = (uint8_t)(v >> (8 * (nbytes - 1 - k)));
    return proto__put(b, tmp, (size_t)nbytes + 1);
}

rt_status proto__mp_nil(struct proto_buf *b)
{
    return proto__put_byte(b, 0xc0);
}

rt_status proto__mp_bool(struct proto_buf *b, bool v)
{
    return proto__put_byte(b, v ? 0xc3 : 0xc2);
}

rt_status proto__mp_uint(struct proto_buf *b, uint64_t v)
{
    if (v < 0x80)
        return proto__put_byte(b, (uint8_t)v);
    if (v <= UINT8_MAX)
        return mp_tagged(b, 0xcc, v, 1);
    if (v <= UINT16_MAX)
        return mp_tagged(b, 0xcd, v, 2);
    if (v <= UINT32_MAX)
        return mp_tagged(b, 0xce, v, 4);
    return mp_tagged(b, 0xcf, v, 8);
}

rt_status proto__mp_int(struct proto_buf *b, int64_t v)
{
    if (v >= 0)
        return proto__mp_uint(b, (uint64_t)v);
    uint64_t u = (uint64_t)v; /* two's complement bytes */
    if (v >= -32)
        return proto__put_byte(b, (uint8_t)u);
    if (v >= INT8_MIN)
        return mp_tagged(b, 0xd0, u, 1);
    if (v >= INT16_MIN)
        return mp_tagged(b, 0xd1, u, 2);
    if (v >= INT32_MIN)
        return mp_tagged(b, 0xd2, u, 4);
    return mp_tagged(b, 0xd3, u, 8);
}

/* Non-finite values become nil, as in JSON, so both codecs say the same. */
rt_status proto__mp_double(struct proto_buf *b, double v)
{
    if (!isfinite(v))
        return proto__mp_nil(b);
    uint64_t bits;
    memcpy(&bits, &v, sizeof bits);
    return mp_tagged(b, 0xcb, bits, 8);
}

rt_status proto__mp_str(struct proto_buf *b, const char *s, size_t len)
{
    rt_status st = len <= 31           ? proto__put_byte(b, (uint8_t)(0xa0 | len))
                   : len <= UINT8_MAX  ? mp_tagged(b, 0xd9, len, 1)
                   : len <= UINT16_MAX ? mp_tagged(b, 0xda, len, 2)
                   : len <= UINT32_MAX ? mp_tagged(b, 0xdb, len, 4)
                                       : RT_TOO_BIG;
    return st != RT_OK ? st : proto__put(b, s, len);
}

rt_status proto__mp_bin(struct proto_buf *b, const uint8_t *p, size_t len)
{
    rt_status st = len <= UINT8_MAX    ? mp_tagged(b, 0xc4, len, 1)
                   : len <= UINT16_MAX ? mp_tagged(b, 0xc5, len, 2)
                   : len <= UINT32_MAX ? mp_tagged(b, 0xc6, len, 4)
                                       : RT_TOO_BIG;
    return st != RT_OK ? st : proto__put(b, p, len);
}

rt_status proto__mp_array_hdr(struct proto_buf *b, size_t n)
{
    if (n <= 15)
        return proto__put_byte(b, (uint8_t)(0x90 | n));
    if (n <= UINT16_MAX)
        return mp_tagged(b, 0xdc, n, 2);
    if (n <= UINT32_MAX)
        return mp_tagged(b, 0xdd, n, 4);
    return RT_TOO_BIG;
}

rt_status proto__mp_map_hdr(struct proto_buf *b, size_t n)
{
    if (n <= 15)
        return proto__put_byte(b, (uint8_t)(0x80 | n));
    if (n <= UINT16_MAX)
        return mp_tagged(b, 0xde, n, 2);
    if (n <= UINT32_MAX)
        return mp_tagged(b, 0xdf, n, 4);
    return RT_TOO_BIG;
}
