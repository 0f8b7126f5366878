/* The resume position of an SSE stream (resume.c) and base64url, under hostile input. */
#include "helpers.h"

#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

static struct proto_buf text_of(const struct proto_resume_pos *pos, size_t n)
{
    struct proto_buf b;
    proto_buf_init(&b, 0);
    cr_assert_eq(proto_resume_encode(pos, n, &b), RT_OK);
    return b;
}

Test(base64url, rfc4648_vectors_unpadded_both_ways)
{
    const char *plain[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar", "\xfb\xff"};
    const char *enc[] = {"", "Zg", "Zm8", "Zm9v", "Zm9vYg", "Zm9vYmE", "Zm9vYmFy", "-_8"};
    for (size_t i = 0; i < sizeof plain / sizeof *plain; i++) {
        struct proto_buf b;
        proto_buf_init(&b, 0);
        cr_assert_eq(proto_base64url_encode((const uint8_t *)plain[i], strlen(plain[i]), &b),
                     RT_OK);
        cr_assert_eq(b.len, strlen(enc[i]), "%s", plain[i]);
        cr_assert_eq(memcmp(b.data, enc[i], b.len), 0, "%s", plain[i]);
        proto_buf_reset(&b);
        cr_assert_eq(proto_base64url_decode(enc[i], strlen(enc[i]), &b), RT_OK);
        cr_assert_eq(b.len, strlen(plain[i]));
        cr_assert_eq(memcmp(b.data, plain[i], b.len), 0);
        proto_buf_free(&b);
    }
}

Test(base64url, rejects_padding_the_other_alphabet_and_loose_bits)
{
    const char *bad[] = {"Zg==", "Z", "Zm9vY", "+/8", "Zh", "Zm9=", "Zm 9", "Zm9v\n"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        struct proto_buf b;
        proto_buf_init(&b, 0);
        cr_assert_eq(proto_base64url_decode(bad[i], strlen(bad[i]), &b), RT_INVAL, "%s", bad[i]);
        cr_assert_eq(b.len, 0);
        proto_buf_free(&b);
    }
}

Test(resume, positions_round_trip_with_shared_epochs)
{
    struct proto_resume_pos in[3] = {
        {proto_resume_hash("chat.a", 6), 0, "k3x9", 4},
        {proto_resume_hash("chat.b", 6), 127, "k3x9", 4},
        {proto_resume_hash("orders", 6), UINT64_MAX, "other-epoch", 11},
    };
    struct proto_buf t = text_of(in, 3);
    /* Two epochs, listed once each: 1 + 1 + 5 + 12 + 1 + 3 * 5 + (1 + 1 + 10) raw bytes. */
    cr_assert_eq(t.len, (47 * 4 + 2) / 3);
    for (size_t i = 0; i < t.len; i++)
        cr_assert(
            strchr("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", t.data[i]));
    struct proto_resume_pos out[PROTO_RESUME_MAX_CHANNELS];
    size_t n;
    struct proto_buf scratch;
    proto_buf_init(&scratch, 0);
    cr_assert_eq(proto_resume_decode((const char *)t.data, t.len, out, &n, &scratch), RT_OK);
    cr_assert_eq(n, 3);
    for (size_t i = 0; i < 3; i++) {
        cr_assert_eq(out[i].channel_hash, in[i].channel_hash);
        cr_assert_eq(out[i].seq, in[i].seq);
        cr_assert_eq(out[i].epoch_len, in[i].epoch_len);
        cr_assert_eq(memcmp(out[i].epoch, in[i].epoch, in[i].epoch_len), 0);
    }
    proto_buf_free(&t);
    proto_buf_free(&scratch);
}

Test(resume, the_longest_id_fits_the_documented_bound)
{
    char epochs[PROTO_RESUME_MAX_CHANNELS][PROTO_EPOCH_MAX];
    struct proto_resume_pos in[PROTO_RESUME_MAX_CHANNELS];
    for (size_t i = 0; i < PROTO_RESUME_MAX_CHANNELS; i++) {
        memset(epochs[i], 'a' + (int)i, PROTO_EPOCH_MAX);
        in[i] = (struct proto_resume_pos){(uint32_t)i, UINT64_MAX, epochs[i], PROTO_EPOCH_MAX};
    }
    struct proto_buf t = text_of(in, PROTO_RESUME_MAX_CHANNELS);
    cr_assert_leq(t.len, PROTO_RESUME_TEXT_MAX);
    cr_assert_eq(PROTO_RESUME_TEXT_MAX, 1711); /* docs/protocol.md states this bound */
    struct proto_resume_pos out[PROTO_RESUME_MAX_CHANNELS];
    size_t n;
    struct proto_buf scratch;
    proto_buf_init(&scratch, 0);
    cr_assert_eq(proto_resume_decode((const char *)t.data, t.len, out, &n, &scratch), RT_OK);
    cr_assert_eq(n, PROTO_RESUME_MAX_CHANNELS);
    proto_buf_free(&scratch);
    struct proto_buf b;
    proto_buf_init(&b, 0);
    struct proto_resume_pos many[PROTO_RESUME_MAX_CHANNELS + 1];
    memcpy(many, in, sizeof in);
    many[PROTO_RESUME_MAX_CHANNELS] = in[0];
    cr_assert_eq(proto_resume_encode(many, PROTO_RESUME_MAX_CHANNELS + 1, &b), RT_INVAL);
    struct proto_resume_pos bad_epoch = {1, 1, "with space", 10};
    cr_assert_eq(proto_resume_encode(&bad_epoch, 1, &b), RT_INVAL);
    proto_buf_free(&b);
    proto_buf_free(&t);
}

/* Decodes raw bytes given as an id: base64url first. */
static rt_status decode_raw(const uint8_t *raw, size_t len, size_t *n)
{
    struct proto_buf t, scratch;
    proto_buf_init(&t, 0);
    proto_buf_init(&scratch, 0);
    cr_assert_eq(proto_base64url_encode(raw, len, &t), RT_OK);
    struct proto_resume_pos out[PROTO_RESUME_MAX_CHANNELS];
    rt_status st = proto_resume_decode((const char *)t.data, t.len, out, n, &scratch);
    proto_buf_free(&t);
    proto_buf_free(&scratch);
    return st;
}

Test(resume, hostile_ids_are_refused)
{
    size_t n = 99;
    const uint8_t ok[] = {1, 1, 1, 'e', 1, 1, 2, 3, 4, 0, 5};
    cr_assert_eq(decode_raw(ok, sizeof ok, &n), RT_OK);
    cr_assert_eq(n, 1);
    struct {
        const char *why;
        uint8_t raw[40];
        size_t len;
    } bad[] = {
        {"empty", {0}, 0},
        {"version 2", {2, 1, 1, 'e', 1, 1, 2, 3, 4, 0, 5}, 11},
        {"17 epochs", {1, 17}, 2},
        {"epoch past the end", {1, 1, 9, 'e'}, 4},
        {"empty epoch", {1, 1, 0, 0}, 4},
        {"epoch with a control byte", {1, 1, 1, '\n', 0}, 5},
        {"17 positions", {1, 1, 1, 'e', 17}, 5},
        {"epoch index out of range", {1, 1, 1, 'e', 1, 1, 2, 3, 4, 1, 5}, 11},
        {"truncated position", {1, 1, 1, 'e', 1, 1, 2, 3}, 8},
        {"varint without its end", {1, 1, 1, 'e', 1, 1, 2, 3, 4, 0, 0x80}, 11},
        {"varint past 64 bits",
         {1,    1,    1,    'e',  1,    1,    2,    3,    4,    0,
          0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02},
         20},
        {"trailing byte", {1, 1, 1, 'e', 1, 1, 2, 3, 4, 0, 5, 0}, 12},
        {"no position count", {1, 1, 1, 'e'}, 4},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        cr_assert_eq(decode_raw(bad[i].raw, bad[i].len, &n), RT_INVAL, "%s", bad[i].why);
    /* Not base64url, or longer than any id can be. */
    struct proto_buf scratch;
    proto_buf_init(&scratch, 0);
    struct proto_resume_pos out[PROTO_RESUME_MAX_CHANNELS];
    cr_assert_eq(proto_resume_decode("AQ==", 4, out, &n, &scratch), RT_INVAL);
    char *huge = malloc(PROTO_RESUME_TEXT_MAX + 2);
    memset(huge, 'A', PROTO_RESUME_TEXT_MAX + 1);
    cr_assert_eq(proto_resume_decode(huge, PROTO_RESUME_TEXT_MAX + 1, out, &n, &scratch), RT_INVAL);
    free(huge);
    proto_buf_free(&scratch);
}

Test(resume, every_truncation_of_a_valid_id_is_refused_or_shorter)
{
    struct proto_resume_pos in[2] = {{7, 300, "ep", 2}, {8, 1, "ep", 2}};
    struct proto_buf t = text_of(in, 2);
    struct proto_buf raw;
    proto_buf_init(&raw, 0);
    cr_assert_eq(proto_base64url_decode((const char *)t.data, t.len, &raw), RT_OK);
    for (size_t cut = 0; cut < raw.len; cut++) {
        size_t n;
        cr_assert_eq(decode_raw(raw.data, cut, &n), RT_INVAL, "cut at %zu", cut);
    }
    proto_buf_free(&raw);
    proto_buf_free(&t);
}
