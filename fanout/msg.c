/*
 * msg.c: the shared, refcounted fan-out message. One allocation holds the
 * struct, the channel, the msg_id and the payload bytes; each codec's frame
 * is encoded at most once, on first use, and then shared by every outbox.
 */
#include "fanout_int.h"

#include <stdlib.h>
#include <string.h>

/*
 * Creates a message with one reference (see fanout_int.h). Loop thread.
 */
struct fo_msg *fo__msg_create(const char *channel, size_t channel_len, const char *msg_id,
                              size_t msg_id_len, const struct proto_payload *payload, bool durable,
                              uint64_t seq, uint64_t ts_ms, size_t headroom)
{
    size_t id_bytes = msg_id ? msg_id_len + 1 : 0;
    size_t body = payload ? payload->len : 0;
    struct fo_msg *m = malloc(sizeof(*m) + channel_len + 1 + id_bytes + body);
    if (!m)
        return NULL;
    memset(m, 0, sizeof(*m));
    char *p = (char *)(m + 1);
    m->refs = 1;
    m->durable = durable;
    m->seq = durable ? seq : 0;
    m->ts_ms = ts_ms;
    m->headroom = headroom;
    m->channel = p;
    m->channel_len = channel_len;
    memcpy(p, channel, channel_len);
    p[channel_len] = '\0';
    p += channel_len + 1;
    if (msg_id) {
        m->msg_id = p;
        m->msg_id_len = msg_id_len;
        memcpy(p, msg_id, msg_id_len);
        p[msg_id_len] = '\0';
        p += id_bytes;
    }
    if (payload) {
        m->payload.enc = payload->enc;
        m->payload.canonical = payload->canonical;
        m->payload.len = body;
        m->payload.ptr = body ? (const uint8_t *)p : NULL;
        if (body)
            memcpy(p, payload->ptr, body);
    }
    return m;
}

/* What a retained message counts for in history_bytes. */
size_t fo__msg_bytes(const struct fo_msg *m)
{
    return sizeof(*m) + m->channel_len + m->msg_id_len + m->payload.len;
}

/* Adds a reference and returns m. Loop thread. */
struct fo_msg *fo_msg_retain(struct fo_msg *m)
{
    if (m)
        m->refs++;
    return m;
}

/* Drops a reference; the last one frees the message and its frames. Loop thread. */
void fo_msg_release(struct fo_msg *m)
{
    if (!m || --m->refs > 0)
        return;
    for (int i = 0; i < PROTO_NCODECS; i++)
        free(m->frames[i].alloc);
    free(m);
}

static rt_status msg_build_frame(struct fo_msg *m, enum proto_codec codec)
{
    struct proto_buf b;
    proto_buf_init(&b, m->headroom);
    rt_status st = proto_encode_msg(&b, codec, m->channel, m->channel_len, m->durable, m->seq,
                                    m->msg_id, m->msg_id_len, &m->payload, m->ts_ms);
    if (st != RT_OK) {
        proto_buf_free(&b);
        return st;
    }
    size_t len = 0;
    uint8_t *data = proto_buf_take(&b, &len);
    if (!data)
        return RT_NOMEM;
    m->frames[codec].alloc = data - m->headroom;
    m->frames[codec].len = len;
    return RT_OK;
}

/*
 * The cached "msg" frame for codec, built on first use. *data has headroom
 * writable bytes before it. Loop thread.
 */
rt_status fo_msg_frame(struct fo_msg *m, enum proto_codec codec, uint8_t **data, size_t *len)
{
    if (!m || (int)codec < 0 || codec >= PROTO_NCODECS)
        return RT_INVAL;
    if (!m->frames[codec].alloc) {
        rt_status st = msg_build_frame(m, codec);
        if (st != RT_OK)
            return st;
    }
    *data = m->frames[codec].alloc + m->headroom;
    *len = m->frames[codec].len;
    return RT_OK;
}
