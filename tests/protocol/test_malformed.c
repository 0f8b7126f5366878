/* Hostile and broken frames: truncation at every byte, allocation bombs,
 * deep nesting, bad UTF-8, wrong shapes, limits, and a mutation fuzz whose
 * invariant is that whatever the decoder accepts can be sent to clients of
 * both codecs. */
#include "helpers.h"

#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ASan's malloc hooks (absent without ASan: the allocation checks are then
 * skipped, the rest of each test still runs). */
int __sanitizer_install_malloc_and_free_hooks(void (*malloc_hook)(const volatile void *, size_t),
                                              void (*free_hook)(const volatile void *))
    __attribute__((weak));

static size_t largest_alloc;

static void on_malloc(const volatile void *p, size_t size)
{
    (void)p;
    if (size > largest_alloc)
        largest_alloc = size;
}

/* ASan refuses to install a malloc hook without a free hook. */
static void on_free(const volatile void *p)
{
    (void)p;
}

static struct proto_decoder *dec;

static void setup(void)
{
    dec = NULL;
    largest_alloc = 0;
    if (__sanitizer_install_malloc_and_free_hooks != NULL)
        __sanitizer_install_malloc_and_free_hooks(on_malloc, on_free);
}

static void teardown(void)
{
    proto_decoder_destroy(dec);
}

TestSuite(malformed, .init = setup, .fini = teardown, .timeout = 60);

/* Decodes and checks the frame-error shape: n entries, the last a 400
 * that lost its id; the ones before it fine. */
static void expect_frame_error(enum proto_codec codec, const void *p, size_t len, size_t n,
                               const char *what)
{
    struct proto_msg *msgs;
    size_t count;
    cr_assert_eq(th_decode(&dec, codec, p, len, &msgs, &count), RT_OK, "%s", what);
    cr_assert_eq(count, n, "%s: %zu messages", what, count);
    for (size_t i = 0; i + 1 < count; i++)
        cr_assert_eq(msgs[i].error, 0, "%s: message %zu", what, i);
    cr_assert_eq(msgs[n - 1].error, 400, "%s", what);
    cr_assert_eq(msgs[n - 1].type, PROTO_T_UNKNOWN, "%s", what);
    cr_assert_not(msgs[n - 1].has_id, "%s", what);
    cr_assert_not_null(msgs[n - 1].error_message);
}

/* One message that is well framed but wrong: a 400 with its id. */
static void expect_msg_error(const void *p, size_t len, const char *what)
{
    struct proto_msg *msgs;
    size_t count;
    cr_assert_eq(th_decode(&dec, PROTO_MSGPACK, p, len, &msgs, &count), RT_OK, "%s", what);
    cr_assert_eq(count, 1, "%s", what);
    cr_assert_eq(msgs[0].error, 400, "%s", what);
    cr_assert(msgs[0].has_id, "%s", what);
}

/* -------------------------------------------------------------------- */

static bool is_ws(uint8_t c)
{
    return c == ' ' || c == '\n' || c == '\t' || c == '\r';
}

Test(malformed, json_truncated_at_every_byte)
{
    const char *frame = "{\"type\":\"pub\",\"id\":4,\"channel\":\"c\",\"msg_id\":\"m\","
                        "\"data\":{\"a\":[1,2.5,\"x\\u00e9\",null,true],\"b\":{}}}\n"
                        "{\"type\":\"ping\"}\n";
    size_t len = strlen(frame);
    size_t end1 = (size_t)(strchr(frame, '\n') - frame);
    for (size_t cut = 0; cut <= len; cut++) {
        size_t trimmed = cut;
        while (trimmed > 0 && is_ws((uint8_t)frame[trimmed - 1]))
            trimmed--;
        struct proto_msg *msgs;
        size_t n;
        cr_assert_eq(th_decode(&dec, PROTO_JSON, frame, cut, &msgs, &n), RT_OK);
        if (trimmed == end1 || trimmed == len - 1) {
            cr_assert_eq(n, trimmed == end1 ? 1 : 2, "cut %zu", cut);
            for (size_t i = 0; i < n; i++)
                cr_assert_eq(msgs[i].error, 0, "cut %zu", cut);
        } else {
            char what[32];
            snprintf(what, sizeof what, "cut %zu", cut);
            expect_frame_error(PROTO_JSON, frame, cut, cut > end1 ? 2 : 1, what);
        }
    }
}

Test(malformed, msgpack_truncated_at_every_byte)
{
    uint8_t *a, *b;
    size_t alen, blen;
    th_json_text_to_mp("{\"type\":\"pub\",\"id\":4,\"channel\":\"chat.room\",\"msg_id\":\"m\","
                       "\"data\":{\"a\":[1,-300,2.5,\"x\\u00e9\",null,true,70000,"
                       "-9223372036854775807],\"b\":{},\"s\":\"" /* a str8 */
                       "0123456789012345678901234567890123456789\"}}",
                       &a, &alen);
    th_json_text_to_mp("{\"type\":\"ping\"}", &b, &blen);
    struct th_bytes f = {0};
    th_put(&f, a, alen);
    th_put(&f, b, blen);
    for (size_t cut = 0; cut <= f.len; cut++) {
        struct proto_msg *msgs;
        size_t n;
        cr_assert_eq(th_decode(&dec, PROTO_MSGPACK, f.p, cut, &msgs, &n), RT_OK);
        if (cut == alen || cut == f.len) {
            cr_assert_eq(n, cut == alen ? 1 : 2);
            for (size_t i = 0; i < n; i++)
                cr_assert_eq(msgs[i].error, 0, "cut %zu", cut);
        } else {
            char what[32];
            snprintf(what, sizeof what, "cut %zu", cut);
            expect_frame_error(PROTO_MSGPACK, f.p, cut, cut > alen ? 2 : 1, what);
        }
    }
    free(a);
    free(b);
    th_free(&f);
}

/* -------------------------------------------------------------------- */

Test(malformed, huge_msgpack_counts_cost_nothing)
{
    /* Each claims 2^32-1 elements or bytes in 5 bytes of input. msgpack-c's
     * unpacker would allocate gigabytes for the containers. */
    static const uint8_t bombs[][10] = {
        {0xdf, 0xff, 0xff, 0xff, 0xff}, /* map32 */
        {0xdd, 0xff, 0xff, 0xff, 0xff}, /* array32 (not a map either) */
        {0xdb, 0xff, 0xff, 0xff, 0xff}, /* str32 */
        {0xc6, 0xff, 0xff, 0xff, 0xff}, /* bin32 */
        {0xc9, 0xff, 0xff, 0xff, 0xff, 0x01},
        {0xde, 0xff, 0xff}, /* map16 */
        {0x81, 0xa4, 'd', 'a', 't', 'a', 0xdd, 0xff, 0xff, 0xff},
        {0x81, 0xa4, 'd', 'a', 't', 'a', 0xdf, 0x0f, 0xff, 0xff},
        {0x81, 0xa4, 'd', 'a', 't', 'a', 0xdb, 0xff, 0xff, 0xff},
    };
    static const size_t lens[] = {5, 5, 5, 5, 6, 3, 10, 10, 10};
    if (__sanitizer_install_malloc_and_free_hooks != NULL) {
        /* The probe itself works: a 2 MiB allocation is seen. */
        void *volatile probe = malloc(2 << 20);
        free(probe);
        cr_assert_geq(largest_alloc, 2 << 20);
        largest_alloc = 0;
    }
    for (size_t i = 0; i < sizeof lens / sizeof *lens; i++) {
        char what[32];
        snprintf(what, sizeof what, "bomb %zu", i);
        expect_frame_error(PROTO_MSGPACK, bombs[i], lens[i], 1, what);
    }
    /* The same bytes handed to the transcoder as a backend payload. */
    for (size_t i = 0; i < sizeof lens / sizeof *lens; i++) {
        struct proto_payload p = {PROTO_PAYLOAD_MSGPACK, bombs[i], lens[i], false};
        struct proto_buf out;
        proto_buf_init(&out, 0);
        cr_assert_eq(proto_payload_convert(&p, PROTO_PAYLOAD_JSON, &out), RT_INVAL);
        cr_assert_eq(proto_payload_convert(&p, PROTO_PAYLOAD_MSGPACK, &out), RT_INVAL);
        proto_buf_free(&out);
    }
    if (__sanitizer_install_malloc_and_free_hooks != NULL)
        cr_assert_lt(largest_alloc, 1 << 20, "largest allocation %zu bytes", largest_alloc);
}

Test(malformed, container_count_is_checked_against_bytes_left)
{
    /* An array16 claiming 1000 items followed by only 999. */
    struct th_bytes b = {0};
    th_byte(&b, 0x81);
    th_str(&b, "data");
    th_be(&b, 0xdc, 1000, 2);
    for (int i = 0; i < 999; i++)
        th_byte(&b, 0x01);
    expect_frame_error(PROTO_MSGPACK, b.p, b.len, 1, "short array");
    th_free(&b);
}

/* -------------------------------------------------------------------- */

/* {"type":"pub","id":1,"channel":"c","data":[[[...1...]]]} with `levels` arrays. */
static char *deep_json(size_t levels)
{
    const char *head = "{\"type\":\"pub\",\"id\":1,\"channel\":\"c\",\"data\":";
    size_t hl = strlen(head);
    char *s = malloc(hl + 2 * levels + 3);
    memcpy(s, head, hl);
    memset(s + hl, '[', levels);
    s[hl + levels] = '1';
    memset(s + hl + levels + 1, ']', levels);
    strcpy(s + hl + 2 * levels + 1, "}");
    return s;
}

static void deep_mp(struct th_bytes *b, size_t levels)
{
    th_byte(b, 0x84);
    th_str(b, "type");
    th_str(b, "pub");
    th_str(b, "id");
    th_byte(b, 1);
    th_str(b, "channel");
    th_str(b, "c");
    th_str(b, "data");
    for (size_t i = 0; i < levels; i++)
        th_byte(b, 0x91);
    th_byte(b, 0x01);
}

Test(malformed, deep_nesting_in_both_codecs)
{
    const size_t levels[] = {33, 1000, 3000, 100000};
    for (size_t i = 0; i < sizeof levels / sizeof *levels; i++) {
        /* The frame limit would refuse the longest: lift it for this test. */
        struct proto_limits lim = {.max_frame_bytes = 1 << 20};
        proto_decoder_destroy(dec);
        cr_assert_eq(proto_decoder_create(&lim, &dec), RT_OK);
        char *s = deep_json(levels[i]);
        char what[48];
        snprintf(what, sizeof what, "json %zu levels", levels[i]);
        expect_frame_error(PROTO_JSON, s, strlen(s), 1, what);
        free(s);
        struct th_bytes b = {0};
        deep_mp(&b, levels[i]);
        snprintf(what, sizeof what, "msgpack %zu levels", levels[i]);
        expect_frame_error(PROTO_MSGPACK, b.p, b.len, 1, what);
        th_free(&b);
    }
}

Test(malformed, nesting_up_to_the_limit_is_fine)
{
    /* The top-level map is depth 1, so data may nest 31 arrays. */
    char *s = deep_json(31);
    struct proto_msg m = th_decode_one_json(&dec, s);
    cr_assert_eq(m.error, 0, "%s", m.error_message);
    free(s);
    struct th_bytes b = {0};
    deep_mp(&b, 31);
    struct proto_msg *msgs;
    size_t n;
    cr_assert_eq(th_decode(&dec, PROTO_MSGPACK, b.p, b.len, &msgs, &n), RT_OK);
    cr_assert_eq(n, 1);
    cr_assert_eq(msgs[0].error, 0);
    /* And such a payload still converts to JSON for the other clients. */
    struct proto_buf out;
    proto_buf_init(&out, 0);
    cr_assert_eq(proto_payload_convert(&msgs[0].data, PROTO_PAYLOAD_JSON, &out), RT_OK);
    proto_buf_free(&out);
    th_free(&b);
}

Test(malformed, too_many_elements_in_one_message)
{
    /* 4 top-level pairs + 4093 items = 4097 > 4096. */
    for (int items = 4092; items <= 4093; items++) {
        struct th_bytes j = {0}, b = {0};
        th_put(&j, "{\"type\":\"pub\",\"id\":1,\"channel\":\"c\",\"data\":[", 43);
        for (int i = 0; i < items; i++)
            th_put(&j, i ? ",0" : "0", i ? 2 : 1);
        th_put(&j, "]}", 2);
        th_byte(&b, 0x84);
        th_str(&b, "type");
        th_str(&b, "pub");
        th_str(&b, "id");
        th_byte(&b, 1);
        th_str(&b, "channel");
        th_str(&b, "c");
        th_str(&b, "data");
        th_be(&b, 0xdc, (uint64_t)items, 2);
        for (int i = 0; i < items; i++)
            th_byte(&b, 0);
        for (int c = 0; c < 2; c++) {
            struct th_bytes *f = c == 0 ? &j : &b;
            if (items == 4092) {
                struct proto_msg *msgs;
                size_t n;
                cr_assert_eq(th_decode(&dec, (enum proto_codec)c, f->p, f->len, &msgs, &n), RT_OK);
                cr_assert_eq(msgs[0].error, 0, "codec %d: %s", c, msgs[0].error_message);
            } else {
                expect_frame_error((enum proto_codec)c, f->p, f->len, 1, "4097 elements");
            }
        }
        th_free(&j);
        th_free(&b);
    }
}

/* -------------------------------------------------------------------- */

static const char *const BAD_UTF8[] = {
    "\xc0\xaf",         /* overlong '/' */
    "\xe0\x80\xaf",     /* overlong, 3 bytes */
    "\xf0\x80\x80\xaf", /* overlong, 4 bytes */
    "\xed\xa0\x80",     /* surrogate U+D800 */
    "\xed\xbf\xbf",     /* surrogate U+DFFF */
    "\xf4\x90\x80\x80", /* above U+10FFFF */
    "\xe2\x82",         /* truncated */
    "\xff",
    "\x80",
};

Test(malformed, invalid_utf8_in_json_is_refused)
{
    for (size_t i = 0; i < sizeof BAD_UTF8 / sizeof *BAD_UTF8; i++) {
        char frame[128];
        snprintf(frame, sizeof frame,
                 "{\"type\":\"pub\",\"id\":1,\"channel\":\"c\",\"data\":\"a%sb\"}", BAD_UTF8[i]);
        expect_frame_error(PROTO_JSON, frame, strlen(frame), 1, BAD_UTF8[i]);
        snprintf(frame, sizeof frame, "{\"type\":\"ping\",\"x%s\":1}", BAD_UTF8[i]);
        expect_frame_error(PROTO_JSON, frame, strlen(frame), 1, BAD_UTF8[i]);
    }
    const char *lone = "{\"type\":\"pub\",\"id\":1,\"channel\":\"c\",\"data\":\"\\ud800\"}";
    expect_frame_error(PROTO_JSON, lone, strlen(lone), 1, "escaped lone surrogate");
}

Test(malformed, invalid_utf8_in_msgpack_is_400_with_id)
{
    for (size_t i = 0; i < sizeof BAD_UTF8 / sizeof *BAD_UTF8; i++) {
        const char *bad = BAD_UTF8[i];
        for (int where = 0; where < 4; where++) {
            struct th_bytes b = {0};
            th_byte(&b, 0x85);
            th_str(&b, "type");
            th_str(&b, "pub");
            th_str(&b, "id");
            th_byte(&b, 1);
            th_str(&b, "channel");
            th_str(&b, where == 0 ? bad : "c");
            th_str(&b, "data");
            th_byte(&b, 0x91); /* [ {bad: bad} ] or [ {"k": "v"} ] */
            th_byte(&b, 0x81);
            th_str(&b, where == 1 ? bad : "k");
            th_str(&b, where == 2 ? bad : "v");
            th_str(&b, where == 3 ? bad : "unknown");
            th_byte(&b, 0xc0);
            char what[32];
            snprintf(what, sizeof what, "utf8 %zu at %d", i, where);
            expect_msg_error(b.p, b.len, what);
            th_free(&b);
        }
    }
}

/* -------------------------------------------------------------------- */

Test(malformed, top_level_must_be_an_object_or_map)
{
    const char *json[] = {"[1]", "1", "\"s\"", "null", "true", "[{\"type\":\"ping\"}]"};
    for (size_t i = 0; i < sizeof json / sizeof *json; i++)
        expect_frame_error(PROTO_JSON, json[i], strlen(json[i]), 1, json[i]);
    const char *after = "{\"type\":\"ping\"} [1] {\"type\":\"ping\"}";
    expect_frame_error(PROTO_JSON, after, strlen(after), 2, "array after a message");

    const uint8_t mp[][3] = {{0x91, 0x01}, {0x01}, {0xa1, 'a'}, {0xc0}, {0xc4, 0x01, 0x00}};
    const size_t lens[] = {2, 1, 2, 1, 3};
    for (size_t i = 0; i < sizeof lens / sizeof *lens; i++)
        expect_frame_error(PROTO_MSGPACK, mp[i], lens[i], 1, "msgpack non-map");
    const uint8_t mp_after[] = {0x81, 0xa4, 't', 'y', 'p', 'e', 0xa4, 'p', 'i', 'n', 'g', 0x01};
    expect_frame_error(PROTO_MSGPACK, mp_after, sizeof mp_after, 2, "int after a message");
}

Test(malformed, empty_and_blank_frames)
{
    expect_frame_error(PROTO_JSON, "", 0, 1, "empty json");
    expect_frame_error(PROTO_JSON, " \n\t\r ", 5, 1, "blank json");
    expect_frame_error(PROTO_MSGPACK, "", 0, 1, "empty msgpack");
    expect_frame_error(PROTO_JSON, NULL, 0, 1, "NULL, 0");
}

Test(malformed, garbage_json)
{
    const char *bad[] = {
        "\xef\xbb\xbf{\"type\":\"ping\"}", /* BOM */
        "{\"type\":\"ping\"",
        "{\"type\":\"ping\",}",
        "{'type':'ping'}",
        "{\"type\":\"ping\"}}",
        "{\"type\":\"ping\"}\x01",
        "\x00",
        "{\"type\":\"ping\" /* c */}",
    };
    const size_t ok_before[] = {0, 0, 0, 0, 1, 1, 0, 0};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        size_t len = i == 6 ? 1 : strlen(bad[i]);
        expect_frame_error(PROTO_JSON, bad[i], len, ok_before[i] + 1, bad[i]);
    }
}

Test(malformed, reserved_msgpack_byte_is_refused)
{
    const uint8_t top[] = {0xc1};
    expect_frame_error(PROTO_MSGPACK, top, 1, 1, "0xc1 alone");
    const uint8_t inner[] = {0x82, 0xa4, 't', 'y', 'p',  'e', 0xa4,
                             'p',  'i',  'n', 'g', 0xa1, 'x', 0xc1};
    expect_frame_error(PROTO_MSGPACK, inner, sizeof inner, 1, "0xc1 as a value");
}

/* -------------------------------------------------------------------- */

static void frame_of_pings(struct th_bytes *b, enum proto_codec codec, int n)
{
    for (int i = 0; i < n; i++) {
        if (codec == PROTO_JSON) {
            th_put(b, "{\"type\":\"ping\"}\n", 16);
        } else {
            th_byte(b, 0x81);
            th_str(b, "type");
            th_str(b, "ping");
        }
    }
}

Test(malformed, at_most_100_messages_per_frame)
{
    for (int c = 0; c < 2; c++) {
        struct th_bytes b = {0};
        frame_of_pings(&b, (enum proto_codec)c, 100);
        struct proto_msg *msgs;
        size_t n;
        cr_assert_eq(th_decode(&dec, (enum proto_codec)c, b.p, b.len, &msgs, &n), RT_OK);
        cr_assert_eq(n, 100);
        for (size_t i = 0; i < n; i++)
            cr_assert_eq(msgs[i].error, 0);
        frame_of_pings(&b, (enum proto_codec)c, 1);
        expect_frame_error((enum proto_codec)c, b.p, b.len, 101, "101 messages");
        th_free(&b);
    }
}

Test(malformed, frame_over_max_frame_bytes_is_too_big)
{
    for (int c = 0; c < 2; c++) {
        struct th_bytes b = {0};
        frame_of_pings(&b, (enum proto_codec)c, 1);
        /* Pad with whitespace (JSON) or with a long unknown field (msgpack). */
        uint8_t *big = calloc(1, 65537);
        memset(big, ' ', 65537);
        memcpy(big, b.p, b.len);
        struct proto_msg *msgs;
        size_t n = 99;
        if (c == PROTO_JSON) {
            cr_assert_eq(th_decode(&dec, PROTO_JSON, big, 65536, &msgs, &n), RT_OK);
            cr_assert_eq(n, 1);
            cr_assert_eq(msgs[0].error, 0);
        }
        cr_assert_eq(th_decode(&dec, (enum proto_codec)c, big, 65537, &msgs, &n), RT_TOO_BIG);
        cr_assert_eq(n, 0);
        cr_assert_null(msgs);
        free(big);
        th_free(&b);
    }
}

/* -------------------------------------------------------------------- */

Test(malformed, nan_and_infinity)
{
    const char *json[] = {
        "{\"type\":\"geo.set\",\"id\":1,\"space\":\"s\",\"lat\":NaN,\"lon\":0}",
        "{\"type\":\"geo.set\",\"id\":1,\"space\":\"s\",\"lat\":Infinity,\"lon\":0}",
        "{\"type\":\"geo.set\",\"id\":1,\"space\":\"s\",\"lat\":-Infinity,\"lon\":0}",
        "{\"type\":\"geo.set\",\"id\":1,\"space\":\"s\",\"lat\":1e400,\"lon\":0}",
        "{\"type\":\"pub\",\"id\":1,\"channel\":\"c\",\"data\":nan}",
    };
    for (size_t i = 0; i < sizeof json / sizeof *json; i++)
        expect_frame_error(PROTO_JSON, json[i], strlen(json[i]), 1, json[i]);

    const double vals[] = {NAN, INFINITY, -INFINITY};
    for (size_t i = 0; i < 3; i++) {
        for (int field = 0; field < 3; field++) {
            struct th_bytes b = {0};
            th_byte(&b, 0x86);
            th_str(&b, "type");
            th_str(&b, "geo.near");
            th_str(&b, "id");
            th_byte(&b, 1);
            th_str(&b, "space");
            th_str(&b, "s");
            const char *names[] = {"lat", "lon", "radius_m"};
            for (int k = 0; k < 3; k++) {
                th_str(&b, names[k]);
                uint64_t bits;
                double v = k == field ? vals[i] : 1.0;
                memcpy(&bits, &v, 8);
                th_be(&b, 0xcb, bits, 8);
            }
            expect_msg_error(b.p, b.len, names[field]);
            th_free(&b);
        }
    }
}

Test(malformed, nan_inside_msgpack_data_passes_and_reaches_json_as_null)
{
    struct th_bytes b = {0};
    th_byte(&b, 0x84);
    th_str(&b, "type");
    th_str(&b, "pub");
    th_str(&b, "id");
    th_byte(&b, 1);
    th_str(&b, "channel");
    th_str(&b, "c");
    th_str(&b, "data");
    th_byte(&b, 0x92);
    th_be(&b, 0xca, 0x7fc00000, 4); /* float32 NaN */
    th_be(&b, 0xcb, 0x7ff0000000000000ull, 8);
    struct proto_msg *msgs;
    size_t n;
    cr_assert_eq(th_decode(&dec, PROTO_MSGPACK, b.p, b.len, &msgs, &n), RT_OK);
    cr_assert_eq(msgs[0].error, 0);
    struct proto_buf out;
    proto_buf_init(&out, 0);
    cr_assert_eq(proto_payload_convert(&msgs[0].data, PROTO_PAYLOAD_JSON, &out), RT_OK);
    cr_assert_eq(out.len, 11);
    cr_assert(memcmp(out.data, "[null,null]", 11) == 0);
    proto_buf_free(&out);
    th_free(&b);
}

/* A pub whose data is `value` (raw msgpack bytes). */
static void pub_with(struct th_bytes *b, const uint8_t *value, size_t vlen)
{
    th_byte(b, 0x84);
    th_str(b, "type");
    th_str(b, "pub");
    th_str(b, "id");
    th_byte(b, 7);
    th_str(b, "channel");
    th_str(b, "c");
    th_str(b, "data");
    th_put(b, value, vlen);
}

Test(malformed, ext_types_in_data_are_refused)
{
    static const uint8_t exts[][18] = {
        {0xd4, 0x01, 0x00},                   /* fixext1 */
        {0xd8, 0x01},                         /* fixext16 (zero body) */
        {0xc7, 0x02, 0x05, 0xaa, 0xbb},       /* ext8 */
        {0xd6, 0xff, 0x5f, 0x5e, 0x10, 0x00}, /* timestamp32 (type -1) */
        {0x91, 0xd5, 0x02, 0x00, 0x00},       /* [fixext2] */
        {0x81, 0xa1, 'k', 0xc8, 0x00, 0x01, 0x03, 0x00},
    };
    static const size_t lens[] = {3, 18, 5, 6, 5, 8};
    for (size_t i = 0; i < sizeof lens / sizeof *lens; i++) {
        struct th_bytes b = {0};
        pub_with(&b, exts[i], lens[i]);
        char what[16];
        snprintf(what, sizeof what, "ext %zu", i);
        expect_msg_error(b.p, b.len, what);
        th_free(&b);
    }
}

Test(malformed, ext_elsewhere)
{
    /* In an unknown field: ignored. */
    struct th_bytes b = {0};
    th_byte(&b, 0x82);
    th_str(&b, "type");
    th_str(&b, "ping");
    th_str(&b, "x");
    th_put(&b, "\xd4\x01\x00", 3);
    struct proto_msg *msgs;
    size_t n;
    cr_assert_eq(th_decode(&dec, PROTO_MSGPACK, b.p, b.len, &msgs, &n), RT_OK);
    cr_assert_eq(msgs[0].error, 0);
    th_free(&b);
    /* As a field value: wrong type. */
    th_byte(&b, 0x83);
    th_str(&b, "type");
    th_str(&b, "ack");
    th_str(&b, "channel");
    th_str(&b, "c");
    th_str(&b, "seq");
    th_put(&b, "\xd4\x01\x00", 3);
    cr_assert_eq(th_decode(&dec, PROTO_MSGPACK, b.p, b.len, &msgs, &n), RT_OK);
    cr_assert_eq(msgs[0].error, 400);
    th_free(&b);
}

Test(malformed, non_string_map_keys)
{
    /* Top level: {1: 2, "type": "ping", "id": 3} */
    const uint8_t top[] = {0x83, 0x01, 0x02, 0xa4, 't',  'y', 'p', 'e', 0xa4,
                           'p',  'i',  'n',  'g',  0xa2, 'i', 'd', 0x03};
    expect_msg_error(top, sizeof top, "int key at top level");
    const uint8_t inside[][8] = {
        {0x81, 0x01, 0x02},            /* {1: 2} */
        {0x91, 0x81, 0xc3, 0xc0},      /* [{true: nil}] */
        {0x81, 0x91, 0x01, 0x02},      /* {[1]: 2} */
        {0x81, 0xc4, 0x01, 'k', 0x02}, /* {bin: 2} */
        {0x81, 0x80, 0x02},            /* {{}: 2} */
    };
    const size_t lens[] = {3, 4, 4, 5, 3};
    for (size_t i = 0; i < sizeof lens / sizeof *lens; i++) {
        struct th_bytes b = {0};
        pub_with(&b, inside[i], lens[i]);
        struct proto_msg *msgs;
        size_t n;
        cr_assert_eq(th_decode(&dec, PROTO_MSGPACK, b.p, b.len, &msgs, &n), RT_OK);
        cr_assert_eq(msgs[0].error, 400, "case %zu", i);
        cr_assert(strstr(msgs[0].error_message, "keys") != NULL, "%s", msgs[0].error_message);
        th_free(&b);
    }
}

/* -------------------------------------------------------------------- */

static uint64_t rng = 0x9e3779b97f4a7c15ull;

static uint32_t rnd(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng >> 11);
}

/* What the decoder accepts must be usable: strings terminated and UTF-8,
 * payloads encodable for clients of both codecs. */
static void check_invariants(const struct proto_msg *msgs, size_t n)
{
    cr_assert(n >= 1 && n <= 101);
    for (size_t i = 0; i < n; i++) {
        const struct proto_msg *m = &msgs[i];
        if (m->error != 0) {
            cr_assert_not_null(m->error_message);
            continue;
        }
        const struct proto_str *strs[] = {&m->token,  &m->name,  &m->channel, &m->epoch,
                                          &m->msg_id, &m->space, &m->watch};
        for (size_t k = 0; k < sizeof strs / sizeof *strs; k++) {
            if (strs[k]->ptr == NULL)
                continue;
            cr_assert_eq(strs[k]->ptr[strs[k]->len], '\0');
            cr_assert(proto_utf8_valid(strs[k]->ptr, strs[k]->len));
        }
        for (int c = 0; c < 2; c++) {
            struct proto_buf b;
            proto_buf_init(&b, 0);
            cr_assert_eq(
                proto_encode_msg(&b, (enum proto_codec)c, "c", 1, false, 0, NULL, 0, &m->data, 1),
                RT_OK, "data of an accepted message must encode");
            struct proto_writer w;
            proto_writer_init(&w, (enum proto_codec)c, &b);
            proto_w_map(&w);
            proto_w_payload(&w, "meta", &m->meta);
            proto_w_end(&w);
            cr_assert_eq(proto_writer_status(&w), RT_OK);
            proto_buf_free(&b);
        }
    }
}

static void mutate(struct th_bytes *f)
{
    int edits = 1 + (int)(rnd() % 4);
    for (int e = 0; e < edits && f->len > 0; e++) {
        size_t at = rnd() % f->len;
        switch (rnd() % 5) {
        case 0:
            f->p[at] ^= (uint8_t)(1u << (rnd() % 8));
            break;
        case 1:
            f->p[at] = (uint8_t)rnd();
            break;
        case 2:
            f->len = at;
            break;
        case 3:
            memmove(f->p + at, f->p + at + 1, f->len - at - 1);
            f->len--;
            break;
        default: {
            uint8_t interesting[] = {0xdd, 0xdf, 0xdb, 0xc1, 0xff, 0x00, '"', '{', '\\', 0x80};
            f->p[at] = interesting[rnd() % sizeof interesting];
        }
        }
    }
}

Test(malformed, mutation_fuzz_keeps_invariants)
{
    const char *seeds[] = {
        "{\"type\":\"pub\",\"id\":4,\"channel\":\"chat.room1\",\"msg_id\":\"01JD\","
        "\"data\":{\"text\":\"h\\u00e9\",\"n\":[1,-2,3.5,null,true,{\"x\":[]}]}}",
        "{\"type\":\"geo.set\",\"id\":5,\"space\":\"drivers\",\"lat\":52.52,\"lon\":13.405,"
        "\"meta\":{\"car\":\"B-123\"}}",
        "{\"type\":\"sub\",\"id\":2,\"channel\":\"chat.room1\",\"since\":120,\"epoch\":\"k3x9\"}",
        "{\"type\":\"pub\",\"id\":9,\"channel\":\"c\",\"data_b64\":\"AAEC/2E=\"}",
        "{\"type\":\"connect\",\"id\":1,\"token\":\"a.b.c\",\"name\":\"n\"}",
    };
    struct th_bytes f = {0};
    for (int iter = 0; iter < 20000; iter++) {
        enum proto_codec codec = (enum proto_codec)(iter & 1);
        f.len = 0;
        for (int k = 0; k < 1 + (int)(rnd() % 3); k++) {
            const char *seed = seeds[rnd() % 5];
            if (codec == PROTO_JSON) {
                th_put(&f, seed, strlen(seed));
            } else {
                uint8_t *mp;
                size_t len;
                th_json_text_to_mp(seed, &mp, &len);
                th_put(&f, mp, len);
                free(mp);
            }
        }
        mutate(&f);
        struct proto_msg *msgs;
        size_t n;
        cr_assert_eq(th_decode(&dec, codec, f.p, f.len, &msgs, &n), RT_OK);
        check_invariants(msgs, n);
    }
    for (int iter = 0; iter < 5000; iter++) {
        f.len = 0;
        size_t len = rnd() % 64;
        for (size_t k = 0; k < len; k++)
            th_byte(&f, (uint8_t)((k == 0 && (iter & 2)) ? 0x80 | (rnd() & 15) : rnd()));
        struct proto_msg *msgs;
        size_t n;
        cr_assert_eq(th_decode(&dec, (enum proto_codec)(iter & 1), f.p, f.len, &msgs, &n), RT_OK);
        check_invariants(msgs, n);
    }
    th_free(&f);
    if (__sanitizer_install_malloc_and_free_hooks != NULL)
        cr_assert_lt(largest_alloc, 1 << 20, "largest allocation %zu bytes", largest_alloc);
}
