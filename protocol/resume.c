/*
 * resume.c: the resume position of a Server-Sent Events stream, the text of
 * its `id:` lines (docs/protocol.md, "Server-Sent Events"). An EventSource
 * sends the last one back as Last-Event-ID when it reconnects, and the
 * gateway resumes the stream's durable channels from it, with since/epoch,
 * for a client that knows nothing of either.
 *
 * The text is unpadded base64url of:
 *   u8 version (1)
 *   u8 E, then E epochs: u8 length (1..64), the epoch's bytes ('!'..'~')
 *   u8 N, then N positions: u32 little-endian hash of the channel name,
 *      u8 index of its epoch (< E), the seq as a LEB128 varint (<= 10 bytes)
 * and nothing after. Channels are named by a hash, not by name or by their
 * place in the URL, so that the id stays short and survives a reordered
 * URL; the epochs are listed once (a NATS fleet has one for every channel).
 * Nothing in it is an authority: a position is what a client may ask for
 * with `sub` since/epoch anyway, so the text is not signed. Pure: no I/O.
 */
#include "protocol_int.h"

#include <string.h>

#define RESUME_VERSION 1

uint32_t proto_resume_hash(const char *channel, size_t len)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (size_t i = 0; i < len; i++) {
        h ^= (uint8_t)channel[i];
        h *= 16777619u;
    }
    return h;
}

static bool epoch_ok(const char *e, size_t len)
{
    if (len < 1 || len > PROTO_EPOCH_MAX)
        return false;
    for (size_t i = 0; i < len; i++)
        if (e[i] < '!' || e[i] > '~')
            return false;
    return true;
}

rt_status proto_resume_encode(const struct proto_resume_pos *pos, size_t n, struct proto_buf *out)
{
    uint8_t raw[PROTO_RESUME_RAW_MAX];
    size_t len = 0, n_epochs = 0;
    const struct proto_resume_pos *epoch_of[PROTO_RESUME_MAX_CHANNELS];
    uint8_t index[PROTO_RESUME_MAX_CHANNELS];
    if (n > PROTO_RESUME_MAX_CHANNELS)
        return RT_INVAL;
    /* The distinct epochs, in order of first use. */
    for (size_t i = 0; i < n; i++) {
        if (!epoch_ok(pos[i].epoch, pos[i].epoch_len))
            return RT_INVAL;
        size_t k = 0;
        while (k < n_epochs && !(epoch_of[k]->epoch_len == pos[i].epoch_len &&
                                 !memcmp(epoch_of[k]->epoch, pos[i].epoch, pos[i].epoch_len)))
            k++;
        if (k == n_epochs)
            epoch_of[n_epochs++] = &pos[i];
        index[i] = (uint8_t)k;
    }
    raw[len++] = RESUME_VERSION;
    raw[len++] = (uint8_t)n_epochs;
    for (size_t k = 0; k < n_epochs; k++) {
        raw[len++] = (uint8_t)epoch_of[k]->epoch_len;
        memcpy(raw + len, epoch_of[k]->epoch, epoch_of[k]->epoch_len);
        len += epoch_of[k]->epoch_len;
    }
    raw[len++] = (uint8_t)n;
    for (size_t i = 0; i < n; i++) {
        for (int b = 0; b < 4; b++)
            raw[len++] = (uint8_t)(pos[i].channel_hash >> (8 * b));
        raw[len++] = index[i];
        uint64_t v = pos[i].seq;
        do {
            raw[len++] = (uint8_t)((v & 0x7f) | (v >= 0x80 ? 0x80 : 0));
            v >>= 7;
        } while (v);
    }
    return proto_base64url_encode(raw, len, out);
}

/* Reads a LEB128 varint of at most 10 bytes that fits 64 bits. */
static bool read_varint(const uint8_t *p, size_t len, size_t *off, uint64_t *out)
{
    uint64_t v = 0;
    for (unsigned shift = 0; shift < 70; shift += 7) {
        if (*off >= len)
            return false;
        uint8_t b = p[(*off)++];
        if (shift == 63 && b > 1)
            return false; /* past 64 bits */
        v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *out = v;
            return true;
        }
    }
    return false;
}

rt_status proto_resume_decode(const char *text, size_t text_len, struct proto_resume_pos *pos,
                              size_t *n, struct proto_buf *scratch)
{
    *n = 0;
    if (text_len == 0 || text_len > PROTO_RESUME_TEXT_MAX)
        return RT_INVAL;
    size_t start = scratch->len;
    rt_status st = proto_base64url_decode(text, text_len, scratch);
    if (st != RT_OK)
        return st;
    const uint8_t *p = scratch->data + start;
    size_t len = scratch->len - start, off = 0;
    const uint8_t *epoch[PROTO_RESUME_MAX_CHANNELS];
    uint8_t epoch_len[PROTO_RESUME_MAX_CHANNELS];
    if (len < 3 || p[off++] != RESUME_VERSION)
        return RT_INVAL;
    size_t n_epochs = p[off++];
    if (n_epochs > PROTO_RESUME_MAX_CHANNELS)
        return RT_INVAL;
    for (size_t k = 0; k < n_epochs; k++) {
        if (off >= len)
            return RT_INVAL;
        epoch_len[k] = p[off++];
        epoch[k] = p + off;
        if (len - off < epoch_len[k] || !epoch_ok((const char *)epoch[k], epoch_len[k]))
            return RT_INVAL;
        off += epoch_len[k];
    }
    if (off >= len)
        return RT_INVAL;
    size_t count = p[off++];
    if (count > PROTO_RESUME_MAX_CHANNELS)
        return RT_INVAL;
    for (size_t i = 0; i < count; i++) {
        if (len - off < 5)
            return RT_INVAL;
        uint32_t h = 0;
        for (int b = 0; b < 4; b++)
            h |= (uint32_t)p[off++] << (8 * b);
        uint8_t k = p[off++];
        uint64_t seq;
        if (k >= n_epochs || !read_varint(p, len, &off, &seq))
            return RT_INVAL;
        pos[i] = (struct proto_resume_pos){.channel_hash = h,
                                           .seq = seq,
                                           .epoch = (const char *)epoch[k],
                                           .epoch_len = epoch_len[k]};
    }
    if (off != len)
        return RT_INVAL;
    *n = count;
    return RT_OK;
}
