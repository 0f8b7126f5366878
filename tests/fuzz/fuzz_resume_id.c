/*
 * fuzz_resume_id.c: the resume position of a Server-Sent Events stream
 * (protocol/resume.c), the text a client sends back as Last-Event-ID:
 * hostile, up to the length lws lets through a header. The first input byte
 * picks what the rest is:
 *   even  the text of an id, decoded as the gateway decodes a Last-Event-ID;
 *   odd   positions built from the bytes (a count, then per position a
 *         hash, a seq and an epoch), encoded, then decoded back.
 *
 * Properties: a decoded id has at most PROTO_RESUME_MAX_CHANNELS positions,
 * each with a valid epoch that lies inside the scratch buffer; what was
 * decoded encodes again (within PROTO_RESUME_TEXT_MAX) and decodes to the
 * same positions; positions the encoder accepts come back from the decoder
 * exactly; and no input makes either read or write outside its bytes (ASan).
 */
#include "fuzz.h"
#include "protocol.h"

#include <string.h>

static bool epoch_valid(const char *e, size_t len)
{
    if (len < 1 || len > PROTO_EPOCH_MAX)
        return false;
    for (size_t i = 0; i < len; i++)
        if (e[i] < '!' || e[i] > '~')
            return false;
    return true;
}

static bool same_positions(const struct proto_resume_pos *a, const struct proto_resume_pos *b,
                           size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (a[i].channel_hash != b[i].channel_hash || a[i].seq != b[i].seq ||
            a[i].epoch_len != b[i].epoch_len || memcmp(a[i].epoch, b[i].epoch, a[i].epoch_len))
            return false;
    return true;
}

/* Encodes n positions and decodes the text again: the same positions. */
static void round_trip(const struct proto_resume_pos *pos, size_t n)
{
    struct proto_buf text, scratch;
    proto_buf_init(&text, 0);
    proto_buf_init(&scratch, 0);
    FUZZ_CHECK(proto_resume_encode(pos, n, &text) == RT_OK);
    FUZZ_CHECK(text.len > 0 && text.len <= PROTO_RESUME_TEXT_MAX);
    struct proto_resume_pos back[PROTO_RESUME_MAX_CHANNELS];
    size_t n_back = 0;
    FUZZ_CHECK(proto_resume_decode((const char *)text.data, text.len, back, &n_back, &scratch) ==
               RT_OK);
    FUZZ_CHECK(n_back == n && same_positions(pos, back, n));
    proto_buf_free(&text);
    proto_buf_free(&scratch);
}

static void decode_text(const uint8_t *data, size_t size)
{
    char *text = malloc(size ? size : 1); /* exact size: ASan sees an over-read */
    FUZZ_CHECK(text);
    memcpy(text, data, size);
    struct proto_buf scratch;
    proto_buf_init(&scratch, 0);
    struct proto_resume_pos pos[PROTO_RESUME_MAX_CHANNELS];
    size_t n = 99;
    if (proto_resume_decode(text, size, pos, &n, &scratch) == RT_OK) {
        FUZZ_CHECK(n <= PROTO_RESUME_MAX_CHANNELS);
        for (size_t i = 0; i < n; i++) {
            const uint8_t *e = (const uint8_t *)pos[i].epoch;
            FUZZ_CHECK(epoch_valid(pos[i].epoch, pos[i].epoch_len));
            FUZZ_CHECK(e >= scratch.data && e + pos[i].epoch_len <= scratch.data + scratch.len);
        }
        round_trip(pos, n);
    } else {
        FUZZ_CHECK(n == 0);
    }
    proto_buf_free(&scratch);
    free(text);
}

/* Reads k bytes (fewer at the end) as a little-endian number. */
static uint64_t take(const uint8_t **p, const uint8_t *end, int k)
{
    uint64_t v = 0;
    for (int i = 0; i < k && *p < end; i++)
        v |= (uint64_t)*(*p)++ << (8 * i);
    return v;
}

static void encode_positions(const uint8_t *data, size_t size)
{
    const uint8_t *p = data, *end = data + size;
    size_t n = take(&p, end, 1) % (PROTO_RESUME_MAX_CHANNELS + 1);
    struct proto_resume_pos pos[PROTO_RESUME_MAX_CHANNELS];
    char epochs[PROTO_RESUME_MAX_CHANNELS][PROTO_EPOCH_MAX];
    for (size_t i = 0; i < n; i++) {
        pos[i].channel_hash = (uint32_t)take(&p, end, 4);
        pos[i].seq = take(&p, end, 8);
        /* A length of 0 reuses the epoch before (a fleet's channels share one). */
        size_t len = take(&p, end, 1) % (PROTO_EPOCH_MAX + 1);
        if (len == 0 && i > 0) {
            pos[i].epoch = pos[i - 1].epoch;
            pos[i].epoch_len = pos[i - 1].epoch_len;
            continue;
        }
        len = len ? len : 1;
        for (size_t j = 0; j < len; j++)
            epochs[i][j] = (char)('!' + take(&p, end, 1) % ('~' - '!' + 1));
        pos[i].epoch = epochs[i];
        pos[i].epoch_len = len;
    }
    round_trip(pos, n);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 8192)
        return 0;
    if (data[0] & 1)
        encode_positions(data + 1, size - 1);
    else
        decode_text(data + 1, size - 1);
    return 0;
}
