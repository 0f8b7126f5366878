/*
 * decode_harness.h: the body of fuzz_json.c and fuzz_msgpack.c, which
 * include it after defining FUZZ_CODEC. One input is one WebSocket frame of
 * that subprotocol, as a client would send it.
 *
 * Beyond "no crash, no leak, no undefined behaviour": every pub the decoder
 * accepts is written back with the writer (proto_w_payload, in both codecs)
 * and decoded again. The writer must not refuse a payload the decoder took,
 * the result must decode to the same channel, msg_id and bytes in the same
 * codec, and a JSON payload must reach msgpack exactly as
 * proto_payload_convert makes it. (msgpack to JSON is only required to
 * write: a uint64 above INT64_MAX is valid JSON that jansson cannot read back.)
 */
#include "fuzz.h"
#include "protocol.h"

#include <string.h>

static struct proto_decoder *dec;   /* the gateway's limits */
static struct proto_decoder *again; /* re-decoding our own output: larger frames */
static struct proto_buf frame, conv_a, conv_b;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    struct proto_limits lim = {.max_frame_bytes = 65536};
    struct proto_limits big = {.max_frame_bytes = 1u << 22};
    if (proto_decoder_create(&lim, &dec) != RT_OK || proto_decoder_create(&big, &again) != RT_OK)
        abort();
    proto_buf_init(&frame, 0);
    proto_buf_init(&conv_a, 0);
    proto_buf_init(&conv_b, 0);
    return 0;
}

static bool same_str(struct proto_str a, struct proto_str b)
{
    if (!a.ptr || !b.ptr)
        return !a.ptr && !b.ptr;
    return a.len == b.len && memcmp(a.ptr, b.ptr, a.len) == 0;
}

/* Copies bytes into b (replacing what it held). */
static void put(struct proto_buf *b, const uint8_t *p, size_t n)
{
    proto_buf_reset(b);
    FUZZ_CHECK(proto_buf_reserve(b, n + 1) == RT_OK);
    if (n)
        memcpy(b->data, p, n);
    b->len = n;
}

static bool same_bytes(const struct proto_buf *a, const struct proto_buf *b)
{
    return a->len == b->len && (a->len == 0 || memcmp(a->data, b->data, a->len) == 0);
}

/* Writes pub m in codec `to`, decodes it again and checks what came back. */
static void roundtrip(const struct proto_msg *m, enum proto_codec to)
{
    proto_buf_reset(&frame);
    struct proto_writer w;
    proto_writer_init(&w, to, &frame);
    proto_w_map(&w);
    proto_w_kcstr(&w, "type", "pub");
    proto_w_kint(&w, "id", m->id);
    proto_w_kstr(&w, "channel", m->channel.ptr, m->channel.len);
    if (m->msg_id.ptr)
        proto_w_kstr(&w, "msg_id", m->msg_id.ptr, m->msg_id.len);
    proto_w_payload(&w, "data", &m->data);
    proto_w_end(&w);
    FUZZ_CHECK(proto_writer_status(&w) == RT_OK);

    /* m's payload as the other decoding should give it back. (m lives in
     * `dec`'s memory, which decoding with `again` leaves alone.) */
    bool to_mp =
        FUZZ_CODEC == PROTO_JSON && to == PROTO_MSGPACK && m->data.enc == PROTO_PAYLOAD_JSON;
    if (to_mp) {
        proto_buf_reset(&conv_a);
        FUZZ_CHECK(proto_payload_convert(&m->data, PROTO_PAYLOAD_MSGPACK, &conv_a) == RT_OK);
    } else {
        put(&conv_a, m->data.ptr, m->data.len);
    }

    struct proto_msg *out;
    size_t n = 0;
    rt_status st = proto_decode(again, to, frame.data, frame.len, &out, &n);
    if (FUZZ_CODEC != to && to == PROTO_JSON)
        return; /* written is enough (see above) */
    FUZZ_CHECK(st == RT_OK && n == 1);
    FUZZ_CHECK(out[0].type == PROTO_T_PUB && out[0].error == 0);
    FUZZ_CHECK(same_str(out[0].channel, m->channel) && same_str(out[0].msg_id, m->msg_id));
    put(&conv_b, out[0].data.ptr, out[0].data.len);
    if (FUZZ_CODEC == to) {
        FUZZ_CHECK(out[0].data.enc == m->data.enc);
        FUZZ_CHECK(same_bytes(&conv_a, &conv_b));
    } else if (to_mp) {
        FUZZ_CHECK(out[0].data.enc == PROTO_PAYLOAD_MSGPACK);
        FUZZ_CHECK(same_bytes(&conv_a, &conv_b));
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct proto_msg *msgs;
    size_t n = 0;
    rt_status st = proto_decode(dec, FUZZ_CODEC, data, size, &msgs, &n);
    if (st == RT_TOO_BIG) {
        FUZZ_CHECK(size > 65536);
        return 0;
    }
    FUZZ_CHECK(st == RT_OK && n >= 1 && n <= 101);
    for (size_t i = 0; i < n; i++) {
        const struct proto_msg *m = &msgs[i];
        FUZZ_CHECK(m->error == 0 || m->error_message != NULL);
        if (m->error == 0 && m->channel.ptr)
            FUZZ_CHECK(proto_channel_valid(m->channel.ptr, m->channel.len));
        if (m->type != PROTO_T_PUB || m->error)
            continue;
        roundtrip(m, PROTO_JSON);
        roundtrip(m, PROTO_MSGPACK);
    }
    return 0;
}
