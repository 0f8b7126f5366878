/*
 * ws.c: the client side of RFC 6455. The upgrade request and its checks,
 * server frames parsed in place, client frames masked in place. No I/O.
 */
#include "load.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

size_t lt_ws_request(char *out, size_t out_cap, const char *host_header, const char *path,
                     const char *key, const char *subprotocol)
{
    int n;
    if (subprotocol)
        n = snprintf(out, out_cap,
                     "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n"
                     "Sec-WebSocket-Protocol: %s\r\nUser-Agent: rtgate-load\r\n\r\n",
                     path, host_header, key, subprotocol);
    else
        n = snprintf(out, out_cap,
                     "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n"
                     "User-Agent: rtgate-load\r\n\r\n",
                     path, host_header, key);
    if (n < 0 || (size_t)n >= out_cap)
        return 0;
    return (size_t)n;
}

/* Finds the end of the header block; returns its length or 0. */
static size_t header_end(const char *buf, size_t len)
{
    for (size_t i = 3; i < len; i++)
        if (buf[i] == '\n' && buf[i - 1] == '\r' && buf[i - 2] == '\n' && buf[i - 3] == '\r')
            return i + 1;
    return 0;
}

/* Trims spaces and tabs around [*v, *v + *vl). */
static void trim(const char **v, size_t *vl)
{
    while (*vl && (**v == ' ' || **v == '\t')) {
        (*v)++;
        (*vl)--;
    }
    while (*vl && ((*v)[*vl - 1] == ' ' || (*v)[*vl - 1] == '\t'))
        (*vl)--;
}

static bool value_is(const char *v, size_t vl, const char *want)
{
    return vl == strlen(want) && strncasecmp(v, want, vl) == 0;
}

/* True when the comma-separated token list v contains want (case-insensitive). */
static bool list_has(const char *v, size_t vl, const char *want)
{
    size_t i = 0;
    while (i < vl) {
        size_t j = i;
        while (j < vl && v[j] != ',')
            j++;
        const char *t = v + i;
        size_t tl = j - i;
        trim(&t, &tl);
        if (value_is(t, tl, want))
            return true;
        i = j + 1;
    }
    return false;
}

lt_status lt_ws_parse_response(const char *buf, size_t len, const char *key,
                               const char *subprotocol, struct lt_ws_response *r)
{
    memset(r, 0, sizeof *r);
    size_t end = header_end(buf, len);
    if (!end)
        return len > 16384 ? LT_ERR : LT_AGAIN;
    r->header_len = end;
    if (end < 12 || memcmp(buf, "HTTP/1.1 ", 9) != 0)
        return LT_ERR;
    if (buf[9] < '1' || buf[9] > '5' || buf[10] < '0' || buf[10] > '9' || buf[11] < '0' ||
        buf[11] > '9')
        return LT_ERR;
    r->status = (buf[9] - '0') * 100 + (buf[10] - '0') * 10 + (buf[11] - '0');

    bool upgrade = false, connection = false, accept_ok = false, accept_seen = false;
    bool proto_seen = false, proto_ok = false;
    char want_accept[29];
    lt_ws_accept(key, want_accept);

    const char *line = memchr(buf, '\n', end);
    while (line && (size_t)(line + 1 - buf) < end) {
        const char *ls = line + 1;
        const char *le = memchr(ls, '\n', end - (size_t)(ls - buf));
        if (!le)
            break;
        size_t ll = (size_t)(le - ls);
        if (ll && ls[ll - 1] == '\r')
            ll--;
        line = le;
        if (ll == 0)
            break;
        const char *colon = memchr(ls, ':', ll);
        if (!colon)
            return LT_ERR;
        const char *name = ls;
        size_t nl = (size_t)(colon - ls);
        const char *v = colon + 1;
        size_t vl = ll - nl - 1;
        trim(&v, &vl);
        if (value_is(name, nl, "upgrade"))
            upgrade = value_is(v, vl, "websocket");
        else if (value_is(name, nl, "connection"))
            connection = list_has(v, vl, "upgrade");
        else if (value_is(name, nl, "sec-websocket-accept")) {
            accept_seen = true;
            accept_ok = vl == 28 && memcmp(v, want_accept, 28) == 0;
        } else if (value_is(name, nl, "sec-websocket-protocol")) {
            proto_seen = true;
            proto_ok = subprotocol && vl == strlen(subprotocol) && memcmp(v, subprotocol, vl) == 0;
        } else if (value_is(name, nl, "retry-after")) {
            char tmp[16];
            size_t tl = vl < sizeof tmp - 1 ? vl : sizeof tmp - 1;
            memcpy(tmp, v, tl);
            tmp[tl] = '\0';
            long s = strtol(tmp, NULL, 10);
            r->retry_after_s = s > 0 && s < 3600 ? (uint32_t)s : 0;
        }
    }
    if (r->status != 101)
        return LT_ERR;
    if (!upgrade || !connection || !accept_seen || !accept_ok)
        return LT_ERR;
    if (subprotocol ? !(proto_seen && proto_ok) : proto_seen)
        return LT_ERR;
    return LT_OK;
}

lt_status lt_ws_parse_frame(uint8_t *buf, size_t len, struct lt_ws_frame *f)
{
    if (len < 2)
        return LT_AGAIN;
    uint8_t b0 = buf[0], b1 = buf[1];
    if (b0 & 0x70) /* RSV1-3: no extension was negotiated */
        return LT_ERR;
    f->fin = (b0 & 0x80) != 0;
    f->opcode = b0 & 0x0F;
    bool masked = (b1 & 0x80) != 0;
    uint64_t plen = b1 & 0x7F;
    size_t hl = 2;
    if (plen == 126) {
        if (len < 4)
            return LT_AGAIN;
        plen = (uint64_t)buf[2] << 8 | buf[3];
        hl = 4;
    } else if (plen == 127) {
        if (len < 10)
            return LT_AGAIN;
        plen = 0;
        for (int i = 0; i < 8; i++)
            plen = plen << 8 | buf[2 + i];
        hl = 10;
    }
    switch (f->opcode) {
    case LT_WS_CONT:
    case LT_WS_TEXT:
    case LT_WS_BINARY:
        break;
    case LT_WS_CLOSE:
    case LT_WS_PING:
    case LT_WS_PONG:
        if (!f->fin || plen > 125)
            return LT_ERR;
        break;
    default:
        return LT_ERR;
    }
    if (plen > LT_WS_MAX_FRAME)
        return LT_ERR;
    uint32_t mask_key = 0;
    if (masked) {
        if (len < hl + 4)
            return LT_AGAIN;
        mask_key = (uint32_t)buf[hl] << 24 | (uint32_t)buf[hl + 1] << 16 |
                   (uint32_t)buf[hl + 2] << 8 | buf[hl + 3];
        hl += 4;
    }
    if (len - hl < plen)
        return LT_AGAIN;
    f->payload = buf + hl;
    f->payload_len = (size_t)plen;
    f->frame_len = hl + (size_t)plen;
    if (masked)
        lt_ws_mask(buf + hl, (size_t)plen, mask_key);
    return LT_OK;
}

void lt_ws_mask(uint8_t *data, size_t len, uint32_t mask_key)
{
    uint8_t k[4] = {(uint8_t)(mask_key >> 24), (uint8_t)(mask_key >> 16), (uint8_t)(mask_key >> 8),
                    (uint8_t)mask_key};
    size_t i = 0;
    if (len >= 16) {
        uint8_t k8[8] = {k[0], k[1], k[2], k[3], k[0], k[1], k[2], k[3]};
        uint64_t m;
        memcpy(&m, k8, 8);
        for (; i + 8 <= len; i += 8) {
            uint64_t v;
            memcpy(&v, data + i, 8);
            v ^= m;
            memcpy(data + i, &v, 8);
        }
    }
    for (; i < len; i++)
        data[i] ^= k[i & 3];
}

uint8_t *lt_ws_frame_in_place(uint8_t *buf, size_t len, uint8_t opcode, bool fin, uint32_t mask_key,
                              size_t *frame_len)
{
    uint8_t *payload = buf + LT_WS_HEADROOM;
    size_t hl = len < 126 ? 6 : len <= 0xFFFF ? 8 : 14;
    uint8_t *h = payload - hl;
    h[0] = (uint8_t)((fin ? 0x80 : 0) | (opcode & 0x0F));
    if (len < 126) {
        h[1] = (uint8_t)(0x80 | len);
    } else if (len <= 0xFFFF) {
        h[1] = 0x80 | 126;
        h[2] = (uint8_t)(len >> 8);
        h[3] = (uint8_t)len;
    } else {
        h[1] = 0x80 | 127;
        for (int i = 0; i < 8; i++)
            h[2 + i] = (uint8_t)((uint64_t)len >> (56 - 8 * i));
    }
    uint8_t *mk = payload - 4;
    mk[0] = (uint8_t)(mask_key >> 24);
    mk[1] = (uint8_t)(mask_key >> 16);
    mk[2] = (uint8_t)(mask_key >> 8);
    mk[3] = (uint8_t)mask_key;
    lt_ws_mask(payload, len, mask_key);
    *frame_len = hl + len;
    return h;
}

bool lt_ws_buf_append(uint8_t **buf, uint32_t *len, const uint8_t *p, size_t n)
{
    if ((uint64_t)*len + n > LT_WS_MAX_FRAME)
        return false;
    uint8_t *nb = realloc(*buf, *len + n + 1);
    if (!nb)
        return false;
    memcpy(nb + *len, p, n);
    *buf = nb;
    *len += (uint32_t)n;
    return true;
}

lt_status lt_ws_reassemble(uint8_t **buf, uint32_t *len, uint8_t *opcode,
                           const struct lt_ws_frame *f, const uint8_t **msg, size_t *mlen,
                           uint8_t **owned)
{
    *owned = NULL;
    if (f->opcode != LT_WS_CONT) {
        if (*opcode) /* a new message inside a fragmented one */
            return LT_ERR;
        if (f->fin) {
            *msg = f->payload;
            *mlen = f->payload_len;
            return LT_OK;
        }
        *opcode = f->opcode;
        return lt_ws_buf_append(buf, len, f->payload, f->payload_len) ? LT_AGAIN : LT_ERR;
    }
    if (!*opcode || !lt_ws_buf_append(buf, len, f->payload, f->payload_len))
        return LT_ERR;
    if (!f->fin)
        return LT_AGAIN;
    *msg = *owned = *buf;
    *mlen = *len;
    *buf = NULL;
    *len = 0;
    *opcode = 0;
    return LT_OK;
}
