/*
 * encode.c: the whole server-to-client messages of PROTOCOL.md that the
 * gateway sends often, each appended to a buffer as one message.
 */
#include "protocol_int.h"

/* Ends a message: on failure the buffer is cut back to where it began, so
 * a caller appending several messages never sends half of one. */
static rt_status finish(struct proto_writer *w, size_t mark)
{
    rt_status st = proto_writer_status(w);
    if (st == RT_OK && w->depth != 0)
        st = RT_INVAL;
    if (st != RT_OK)
        w->buf->len = mark;
    return st;
}

/* Appends a `msg` delivery. msg_id may be NULL (no key); data may be NULL
 * or NONE (no data). Binary data goes to JSON as data_b64. */
rt_status proto_encode_msg(struct proto_buf *buf, enum proto_codec codec, const char *channel,
                           size_t channel_len, bool has_seq, uint64_t seq, const char *msg_id,
                           size_t msg_id_len, const struct proto_payload *data, uint64_t ts_ms)
{
    struct proto_writer w;
    size_t mark = buf->len;
    proto_writer_init(&w, codec, buf);
    proto_w_map(&w);
    proto_w_kcstr(&w, "type", "msg");
    proto_w_kstr(&w, "channel", channel, channel_len);
    if (has_seq)
        proto_w_kuint(&w, "seq", seq);
    if (msg_id != NULL)
        proto_w_kstr(&w, "msg_id", msg_id, msg_id_len);
    proto_w_payload(&w, "data", data);
    proto_w_kuint(&w, "ts", ts_ms);
    proto_w_end(&w);
    return finish(&w, mark);
}

/* Appends a failed `reply` (has_id) or an `error`. message may be NULL. */
rt_status proto_encode_error(struct proto_buf *buf, enum proto_codec codec, bool has_id, int64_t id,
                             int code, const char *message, uint32_t retry_after_ms)
{
    struct proto_writer w;
    size_t mark = buf->len;
    proto_writer_init(&w, codec, buf);
    proto_w_map(&w);
    if (has_id) {
        proto_w_kcstr(&w, "type", "reply");
        proto_w_kint(&w, "id", id);
        proto_w_kbool(&w, "ok", false);
    } else {
        proto_w_kcstr(&w, "type", "error");
    }
    proto_w_key(&w, "error");
    proto_w_map(&w);
    proto_w_kint(&w, "code", code);
    proto_w_kcstr(&w, "reason", rt_error_reason(code));
    if (message != NULL)
        proto_w_kcstr(&w, "message", message);
    if (code == RT_E_RATE_LIMITED || code == RT_E_UNAVAILABLE)
        proto_w_kuint(&w, "retry_after_ms", retry_after_ms);
    proto_w_end(&w);
    proto_w_end(&w);
    return finish(&w, mark);
}

/* Appends a `gap` notice: seqs from..to (inclusive) will not arrive. */
rt_status proto_encode_gap(struct proto_buf *buf, enum proto_codec codec, const char *channel,
                           uint64_t from, uint64_t to)
{
    struct proto_writer w;
    size_t mark = buf->len;
    proto_writer_init(&w, codec, buf);
    proto_w_map(&w);
    proto_w_kcstr(&w, "type", "gap");
    proto_w_kcstr(&w, "channel", channel);
    proto_w_kuint(&w, "from", from);
    proto_w_kuint(&w, "to", to);
    proto_w_end(&w);
    return finish(&w, mark);
}

/* Appends {"type":"pong"}. */
rt_status proto_encode_pong(struct proto_buf *buf, enum proto_codec codec)
{
    struct proto_writer w;
    size_t mark = buf->len;
    proto_writer_init(&w, codec, buf);
    proto_w_map(&w);
    proto_w_kcstr(&w, "type", "pong");
    proto_w_end(&w);
    return finish(&w, mark);
}

/* Appends the `disconnect` notice sent before a deliberate close. */
rt_status proto_encode_disconnect(struct proto_buf *buf, enum proto_codec codec, int code,
                                  const char *reason, bool reconnect, uint32_t after_ms)
{
    struct proto_writer w;
    size_t mark = buf->len;
    proto_writer_init(&w, codec, buf);
    proto_w_map(&w);
    proto_w_kcstr(&w, "type", "disconnect");
    proto_w_kint(&w, "code", code);
    proto_w_kcstr(&w, "reason", reason);
    proto_w_kbool(&w, "reconnect", reconnect);
    proto_w_kuint(&w, "after_ms", after_ms);
    proto_w_end(&w);
    return finish(&w, mark);
}
