/* Decoding well-formed and badly-formed requests: the per-field rules of
 * PROTOCOL.md, in both codecs (each case runs as JSON and as msgpack). */
#define _GNU_SOURCE /* memmem */
#include "helpers.h"

#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

static struct proto_decoder *dec;

static void setup(void)
{
    dec = NULL;
}

static void teardown(void)
{
    proto_decoder_destroy(dec);
}

TestSuite(decode, .init = setup, .fini = teardown);

/* Decodes `json` in both codecs and hands each message to check(). */
#define BOTH(json, m, body)                                                                        \
    do {                                                                                           \
        for (int codec_ = 0; codec_ < 2; codec_++) {                                               \
            struct proto_msg m =                                                                   \
                codec_ == 0 ? th_decode_one_json(&dec, json) : th_decode_one_mp(&dec, json);       \
            body;                                                                                  \
        }                                                                                          \
    } while (0)

/* Asserts a 400/413 for `json` in both codecs, and whether an id was found. */
static void expect_error(const char *json, int code, bool has_id)
{
    BOTH(json, m, {
        cr_assert_eq(m.error, code, "[%s] %s: error %d (%s)", codec_ ? "mp" : "json", json, m.error,
                     m.error_message ? m.error_message : "");
        cr_assert_not_null(m.error_message);
        cr_assert_eq(m.has_id, has_id, "[%s] %s", codec_ ? "mp" : "json", json);
    });
}

static void expect_ok(const char *json)
{
    BOTH(json, m, {
        cr_assert_eq(m.error, 0, "[%s] %s: %s", codec_ ? "mp" : "json", json,
                     m.error_message ? m.error_message : "");
    });
}

static bool str_is(struct proto_str s, const char *want)
{
    return s.ptr != NULL && s.len == strlen(want) && memcmp(s.ptr, want, s.len) == 0 &&
           s.ptr[s.len] == '\0';
}

/* -------------------------------------------------------------------- */

Test(decode, connect_with_token_and_name)
{
    BOTH("{\"type\":\"connect\",\"id\":1,\"token\":\"a.b.c\",\"name\":\"cli\"}", m, {
        cr_assert_eq(m.error, 0);
        cr_assert_eq(m.type, PROTO_T_CONNECT);
        cr_assert(m.has_id);
        cr_assert_eq(m.id, 1);
        cr_assert(str_is(m.token, "a.b.c"));
        cr_assert(str_is(m.name, "cli"));
    });
    BOTH("{\"type\":\"connect\",\"id\":-7}", m, {
        cr_assert_eq(m.error, 0);
        cr_assert_eq(m.id, -7);
        cr_assert_null(m.token.ptr);
        cr_assert_null(m.name.ptr);
    });
}

Test(decode, id_must_be_an_integer_for_requests)
{
    expect_error("{\"type\":\"connect\"}", 400, false);
    expect_error("{\"type\":\"sub\",\"id\":1.5,\"channel\":\"a\"}", 400, false);
    expect_error("{\"type\":\"pub\",\"id\":\"4\",\"channel\":\"a\",\"data\":1}", 400, false);
    expect_error("{\"type\":\"geo.clear\",\"id\":null,\"space\":\"s\"}", 400, false);
    expect_error("{\"type\":\"unsub\",\"id\":true,\"channel\":\"a\"}", 400, false);
    expect_error("{\"type\":\"geo.near\",\"id\":[1],\"space\":\"s\",\"lat\":0,\"lon\":0,"
                 "\"radius_m\":1}",
                 400, false);
}

Test(decode, ping_and_ack_need_no_id)
{
    BOTH("{\"type\":\"ping\"}", m, {
        cr_assert_eq(m.error, 0);
        cr_assert_eq(m.type, PROTO_T_PING);
        cr_assert_not(m.has_id);
    });
    BOTH("{\"type\":\"ping\",\"id\":9}", m, {
        cr_assert_eq(m.error, 0);
        cr_assert(m.has_id);
        cr_assert_eq(m.id, 9);
    });
    BOTH("{\"type\":\"ping\",\"id\":\"x\"}", m, {
        cr_assert_eq(m.error, 0);
        cr_assert_not(m.has_id);
    });
    BOTH("{\"type\":\"ack\",\"channel\":\"chat.room1\",\"seq\":124}", m, {
        cr_assert_eq(m.error, 0);
        cr_assert_eq(m.type, PROTO_T_ACK);
        cr_assert(str_is(m.channel, "chat.room1"));
        cr_assert(m.has_seq);
        cr_assert_eq(m.seq, 124);
    });
}

Test(decode, unknown_or_missing_type_is_400_but_keeps_id)
{
    expect_error("{\"type\":\"subscribe\",\"id\":3}", 400, true);
    expect_error("{\"id\":3}", 400, true);
    expect_error("{\"type\":7,\"id\":3}", 400, true);
    expect_error("{\"type\":\"\"}", 400, false);
    expect_error("{}", 400, false);
    BOTH("{\"type\":\"nope\",\"id\":3}", m, {
        cr_assert_eq(m.type, PROTO_T_UNKNOWN);
        cr_assert_str_eq(m.error_message, "unknown type");
        cr_assert_eq(m.id, 3);
    });
}

Test(decode, unknown_fields_are_ignored)
{
    BOTH("{\"x\":{\"deep\":[1,2]},\"type\":\"unsub\",\"id\":3,\"channel\":\"a.b\",\"future\":null}",
         m, {
             cr_assert_eq(m.error, 0);
             cr_assert_eq(m.type, PROTO_T_UNSUB);
             cr_assert(str_is(m.channel, "a.b"));
         });
}

Test(decode, fields_of_other_types_are_not_filled)
{
    BOTH("{\"type\":\"ping\",\"channel\":\"a\",\"token\":\"t\",\"lat\":1,\"data\":1}", m, {
        cr_assert_eq(m.error, 0);
        cr_assert_null(m.channel.ptr);
        cr_assert_null(m.token.ptr);
        cr_assert_not(m.has_lat);
        cr_assert_eq(m.data.enc, PROTO_PAYLOAD_NONE);
    });
}

Test(decode, sub_with_since_and_epoch)
{
    BOTH("{\"type\":\"sub\",\"id\":2,\"channel\":\"chat.room1\",\"since\":120,\"epoch\":\"k3x9\"}",
         m, {
             cr_assert_eq(m.error, 0);
             cr_assert_eq(m.type, PROTO_T_SUB);
             cr_assert(str_is(m.channel, "chat.room1"));
             cr_assert(m.has_since);
             cr_assert_eq(m.since, 120);
             cr_assert(str_is(m.epoch, "k3x9"));
         });
    BOTH("{\"type\":\"sub\",\"id\":2,\"channel\":\"c\"}", m, {
        cr_assert_eq(m.error, 0);
        cr_assert_not(m.has_since);
        cr_assert_null(m.epoch.ptr);
    });
    BOTH("{\"type\":\"sub\",\"id\":2,\"channel\":\"c\",\"since\":0}", m, {
        cr_assert(m.has_since);
        cr_assert_eq(m.since, 0);
    });
}

Test(decode, malformed_since_or_epoch_fails_closed)
{
    const char *bad[] = {
        "{\"type\":\"sub\",\"id\":2,\"channel\":\"c\",\"since\":-1}",
        "{\"type\":\"sub\",\"id\":2,\"channel\":\"c\",\"since\":1.5}",
        "{\"type\":\"sub\",\"id\":2,\"channel\":\"c\",\"since\":1.0}",
        "{\"type\":\"sub\",\"id\":2,\"channel\":\"c\",\"since\":\"5\"}",
        "{\"type\":\"sub\",\"id\":2,\"channel\":\"c\",\"since\":null}",
        "{\"type\":\"sub\",\"id\":2,\"channel\":\"c\",\"epoch\":\"\"}",
        "{\"type\":\"sub\",\"id\":2,\"channel\":\"c\",\"epoch\":5}",
        "{\"type\":\"sub\",\"id\":2,\"channel\":\"c\",\"epoch\":"
        "\"12345678901234567890123456789012345678901234567890123456789012345\"}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        expect_error(bad[i], 400, true);
    expect_ok("{\"type\":\"sub\",\"id\":2,\"channel\":\"c\",\"epoch\":"
              "\"1234567890123456789012345678901234567890123456789012345678901234\"}");
}

Test(decode, sub_presence_is_a_boolean)
{
    BOTH("{\"type\":\"sub\",\"id\":2,\"channel\":\"c\",\"presence\":true}", m, {
        cr_assert_eq(m.error, 0);
        cr_assert(m.presence);
    });
    BOTH("{\"type\":\"sub\",\"id\":2,\"channel\":\"c\",\"presence\":false}", m, {
        cr_assert_eq(m.error, 0);
        cr_assert_not(m.presence);
    });
    BOTH("{\"type\":\"sub\",\"id\":2,\"channel\":\"c\"}", m, cr_assert_not(m.presence));
    expect_error("{\"type\":\"sub\",\"id\":2,\"channel\":\"c\",\"presence\":1}", 400, true);
    expect_error("{\"type\":\"sub\",\"id\":2,\"channel\":\"c\",\"presence\":\"yes\"}", 400, true);
    /* Other types do not read it. */
    BOTH("{\"type\":\"unsub\",\"id\":2,\"channel\":\"c\",\"presence\":7}", m,
         cr_assert_eq(m.error, 0));
}

Test(decode, since_and_seq_take_the_whole_uint64_range_in_msgpack)
{
    struct th_bytes b = {0};
    th_byte(&b, 0x84);
    th_str(&b, "type");
    th_str(&b, "ack");
    th_str(&b, "channel");
    th_str(&b, "c");
    th_str(&b, "seq");
    th_be(&b, 0xcf, UINT64_MAX, 8);
    th_str(&b, "id");
    th_be(&b, 0xcf, UINT64_MAX, 8); /* not a usable id: above int64 */
    struct proto_msg *msgs;
    size_t n;
    cr_assert_eq(th_decode(&dec, PROTO_MSGPACK, b.p, b.len, &msgs, &n), RT_OK);
    cr_assert_eq(n, 1);
    cr_assert_eq(msgs[0].error, 0);
    cr_assert_eq(msgs[0].seq, UINT64_MAX);
    cr_assert_not(msgs[0].has_id);
    th_free(&b);
}

Test(decode, channel_rules)
{
    const char *bad[] = {"\"\"",    "\"a..b\"",    "\".a\"", "\"a.\"", "\"a b\"",      "\"a*\"",
                         "\"a.>\"", "\"\\u00e9\"", "5",      "null",   "\"a\\u0000b\""};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        char json[256];
        snprintf(json, sizeof json, "{\"type\":\"unsub\",\"id\":1,\"channel\":%s}", bad[i]);
        expect_error(json, 400, true);
    }
    expect_error("{\"type\":\"pub\",\"id\":1,\"data\":1}", 400, true);
    expect_error("{\"type\":\"ack\",\"seq\":1}", 400, false);
    char json[512], name[200];
    memset(name, 'x', 129);
    name[129] = '\0';
    snprintf(json, sizeof json, "{\"type\":\"sub\",\"id\":1,\"channel\":\"%s\"}", name);
    expect_error(json, 400, true);
    name[128] = '\0';
    snprintf(json, sizeof json, "{\"type\":\"sub\",\"id\":1,\"channel\":\"%s\"}", name);
    expect_ok(json);
    expect_ok("{\"type\":\"sub\",\"id\":1,\"channel\":\"A-z_0:9.b-c\"}");
}

Test(decode, pub_json_data_is_compact_json)
{
    struct proto_msg m = th_decode_one_json(
        &dec, "{\"type\":\"pub\",\"id\":4,\"channel\":\"chat.room1\",\"msg_id\":\"01JD\","
              "\"data\": { \"text\" : \"hi\", \"n\": [1, 2.5, null] } }");
    cr_assert_eq(m.error, 0);
    cr_assert_eq(m.type, PROTO_T_PUB);
    cr_assert(str_is(m.msg_id, "01JD"));
    cr_assert_eq(m.data.enc, PROTO_PAYLOAD_JSON);
    cr_assert_eq(m.data.len, strlen("{\"text\":\"hi\",\"n\":[1,2.5,null]}"));
    cr_assert(memcmp(m.data.ptr, "{\"text\":\"hi\",\"n\":[1,2.5,null]}", m.data.len) == 0);
}

Test(decode, pub_json_scalar_and_null_data)
{
    struct proto_msg m =
        th_decode_one_json(&dec, "{\"type\":\"pub\",\"id\":4,\"channel\":\"c\",\"data\":null}");
    cr_assert_eq(m.error, 0);
    cr_assert_eq(m.data.enc, PROTO_PAYLOAD_JSON);
    cr_assert_eq(m.data.len, 4);
    cr_assert(memcmp(m.data.ptr, "null", 4) == 0);
}

Test(decode, pub_msgpack_data_points_into_the_frame)
{
    uint8_t *mp;
    size_t len;
    th_json_text_to_mp("{\"type\":\"pub\",\"id\":4,\"channel\":\"c\",\"data\":{\"k\":[1,\"v\"]}}",
                       &mp, &len);
    struct proto_msg *msgs;
    size_t n;
    cr_assert_eq(th_decode(&dec, PROTO_MSGPACK, mp, len, &msgs, &n), RT_OK);
    cr_assert_eq(msgs[0].error, 0);
    cr_assert_eq(msgs[0].data.enc, PROTO_PAYLOAD_MSGPACK);
    cr_assert(msgs[0].data.ptr > mp && msgs[0].data.ptr + msgs[0].data.len == mp + len,
              "zero copy: the span of the value inside the frame");
    const uint8_t want[] = {0x81, 0xa1, 'k', 0x92, 0x01, 0xa1, 'v'};
    cr_assert_eq(msgs[0].data.len, sizeof want);
    cr_assert(memcmp(msgs[0].data.ptr, want, sizeof want) == 0);
    free(mp);
}

Test(decode, pub_msgpack_bin_data_is_binary)
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
    th_be(&b, 0xc5, 3, 2);
    th_put(&b, "\x00\xff\x01", 3);
    struct proto_msg *msgs;
    size_t n;
    cr_assert_eq(th_decode(&dec, PROTO_MSGPACK, b.p, b.len, &msgs, &n), RT_OK);
    cr_assert_eq(msgs[0].error, 0);
    cr_assert_eq(msgs[0].data.enc, PROTO_PAYLOAD_BINARY);
    cr_assert_eq(msgs[0].data.len, 3);
    cr_assert(memcmp(msgs[0].data.ptr, "\x00\xff\x01", 3) == 0);
    cr_assert_eq(msgs[0].data.ptr, b.p + b.len - 3);
    th_free(&b);
}

Test(decode, pub_data_b64_is_decoded_to_binary)
{
    BOTH("{\"type\":\"pub\",\"id\":4,\"channel\":\"c\",\"data_b64\":\"AAEC/2E=\"}", m, {
        cr_assert_eq(m.error, 0);
        cr_assert_eq(m.data.enc, PROTO_PAYLOAD_BINARY);
        cr_assert_eq(m.data.len, 5);
        cr_assert(memcmp(m.data.ptr, "\x00\x01\x02\xff\x61", 5) == 0);
    });
    BOTH("{\"type\":\"pub\",\"id\":4,\"channel\":\"c\",\"data_b64\":\"\"}", m, {
        cr_assert_eq(m.error, 0);
        cr_assert_eq(m.data.enc, PROTO_PAYLOAD_BINARY);
        cr_assert_eq(m.data.len, 0);
    });
}

Test(decode, pub_payload_rules)
{
    expect_error("{\"type\":\"pub\",\"id\":4,\"channel\":\"c\"}", 400, true);
    expect_error("{\"type\":\"pub\",\"id\":4,\"channel\":\"c\",\"data\":1,\"data_b64\":\"AA==\"}",
                 400, true);
    expect_error("{\"type\":\"pub\",\"id\":4,\"channel\":\"c\",\"data_b64\":\"AA=\"}", 400, true);
    expect_error("{\"type\":\"pub\",\"id\":4,\"channel\":\"c\",\"data_b64\":\"A A=\"}", 400, true);
    expect_error("{\"type\":\"pub\",\"id\":4,\"channel\":\"c\",\"data_b64\":5}", 400, true);
    expect_error("{\"type\":\"pub\",\"id\":4,\"channel\":\"c\",\"data\":1,\"msg_id\":\"\"}", 400,
                 true);
    expect_error("{\"type\":\"pub\",\"id\":4,\"channel\":\"c\",\"data\":1,\"msg_id\":7}", 400,
                 true);
    expect_error("{\"type\":\"pub\",\"id\":4,\"channel\":\"c\",\"data\":1,\"msg_id\":"
                 "\"12345678901234567890123456789012345678901234567890123456789012345\"}",
                 400, true);
    expect_ok("{\"type\":\"pub\",\"id\":4,\"channel\":\"c\",\"data\":1,\"msg_id\":"
              "\"1234567890123456789012345678901234567890123456789012345678901234\"}");
}

Test(decode, ack_seq_rules)
{
    expect_error("{\"type\":\"ack\",\"channel\":\"c\"}", 400, false);
    expect_error("{\"type\":\"ack\",\"channel\":\"c\",\"seq\":-1}", 400, false);
    expect_error("{\"type\":\"ack\",\"channel\":\"c\",\"seq\":2.0}", 400, false);
    expect_error("{\"type\":\"ack\",\"channel\":\"c\",\"seq\":\"2\"}", 400, false);
    expect_error("{\"type\":\"ack\",\"id\":5,\"channel\":\"c\"}", 400, true);
    BOTH("{\"type\":\"ack\",\"channel\":\"c\",\"seq\":0}", m, { cr_assert_eq(m.error, 0); });
}

static void long_field(char *json, size_t cap, const char *type, const char *field, size_t n)
{
    char *v = malloc(n + 1);
    memset(v, 'x', n);
    v[n] = '\0';
    snprintf(json, cap, "{\"type\":\"%s\",\"id\":1,\"%s\":\"%s\"}", type, field, v);
    free(v);
}

/* The token's bound (8192 bytes, 401 past it) is the gateway's auth's: the
 * decoder passes any token that fits the frame, so that a 60 KB one is
 * refused as a token and not as a malformed message. */
Test(decode, name_over_its_limit_is_413_and_tokens_are_left_to_auth)
{
    static char json[60 * 1024 + 200];
    long_field(json, sizeof json, "connect", "token", 60 * 1024);
    expect_ok(json);
    long_field(json, sizeof json, "refresh", "token", 60 * 1024);
    expect_ok(json);
    long_field(json, sizeof json, "connect", "name", PROTO_NAME_MAX);
    expect_ok(json);
    long_field(json, sizeof json, "connect", "name", PROTO_NAME_MAX + 1);
    expect_error(json, 413, true);
    expect_error("{\"type\":\"connect\",\"id\":1,\"token\":5}", 400, true);
    expect_error("{\"type\":\"connect\",\"id\":1,\"name\":[]}", 400, true);
    expect_error("{\"type\":\"connect\",\"id\":1,\"token\":\"a\\u0000b\"}", 400, true);
    expect_error("{\"type\":\"refresh\",\"id\":1,\"token\":5}", 400, true);
    expect_error("{\"type\":\"refresh\",\"token\":\"t\"}", 400, false);
}

Test(decode, geo_set_with_meta)
{
    BOTH("{\"type\":\"geo.set\",\"id\":5,\"space\":\"drivers\",\"lat\":52.52,\"lon\":13.405,"
         "\"meta\":{\"car\":\"B-123\"}}",
         m, {
             cr_assert_eq(m.error, 0);
             cr_assert_eq(m.type, PROTO_T_GEO_SET);
             cr_assert(str_is(m.space, "drivers"));
             cr_assert(m.has_lat && m.has_lon);
             cr_assert_eq(m.lat, 52.52);
             cr_assert_eq(m.lon, 13.405);
             cr_assert_eq(m.meta.enc, codec_ == 0 ? PROTO_PAYLOAD_JSON : PROTO_PAYLOAD_MSGPACK);
         });
    BOTH("{\"type\":\"geo.set\",\"id\":5,\"space\":\"d\",\"lat\":-90,\"lon\":180}", m, {
        cr_assert_eq(m.error, 0, "integers are numbers too");
        cr_assert_eq(m.lat, -90.0);
        cr_assert_eq(m.lon, 180.0);
        cr_assert_eq(m.meta.enc, PROTO_PAYLOAD_NONE);
    });
    BOTH(
        "{\"type\":\"geo.set\",\"id\":5,\"space\":\"d\",\"lat\":0,\"lon\":0,\"meta_b64\":\"YQ==\"}",
        m, {
            cr_assert_eq(m.error, 0);
            cr_assert_eq(m.meta.enc, PROTO_PAYLOAD_BINARY);
            cr_assert_eq(m.meta.len, 1);
        });
}

Test(decode, geo_ranges_and_required_fields)
{
    const char *bad[] = {
        "{\"type\":\"geo.set\",\"id\":5,\"space\":\"d\",\"lat\":90.0001,\"lon\":0}",
        "{\"type\":\"geo.set\",\"id\":5,\"space\":\"d\",\"lat\":-91,\"lon\":0}",
        "{\"type\":\"geo.set\",\"id\":5,\"space\":\"d\",\"lat\":0,\"lon\":180.5}",
        "{\"type\":\"geo.set\",\"id\":5,\"space\":\"d\",\"lat\":0,\"lon\":-181}",
        "{\"type\":\"geo.set\",\"id\":5,\"space\":\"d\",\"lat\":0}",
        "{\"type\":\"geo.set\",\"id\":5,\"space\":\"d\",\"lon\":0}",
        "{\"type\":\"geo.set\",\"id\":5,\"space\":\"d\",\"lat\":\"1\",\"lon\":0}",
        "{\"type\":\"geo.set\",\"id\":5,\"lat\":0,\"lon\":0}",
        "{\"type\":\"geo.set\",\"id\":5,\"space\":\"\",\"lat\":0,\"lon\":0}",
        "{\"type\":\"geo.set\",\"id\":5,\"space\":\"a.b\",\"lat\":0,\"lon\":0}",
        "{\"type\":\"geo.set\",\"id\":5,\"space\":\"a b\",\"lat\":0,\"lon\":0}",
        "{\"type\":\"geo.set\",\"id\":5,\"space\":\"d\",\"lat\":0,\"lon\":0,\"meta\":1,"
        "\"meta_b64\":\"AA==\"}",
        "{\"type\":\"geo.clear\",\"id\":6}",
        "{\"type\":\"geo.near\",\"id\":7,\"space\":\"d\",\"lat\":0,\"lon\":0}",
        "{\"type\":\"geo.near\",\"id\":7,\"space\":\"d\",\"lat\":0,\"lon\":0,\"radius_m\":0}",
        "{\"type\":\"geo.near\",\"id\":7,\"space\":\"d\",\"lat\":0,\"lon\":0,\"radius_m\":-5}",
        "{\"type\":\"geo.near\",\"id\":7,\"space\":\"d\",\"lat\":0,\"lon\":0,\"radius_m\":50000.5}",
        "{\"type\":\"geo.near\",\"id\":7,\"space\":\"d\",\"lat\":0,\"lon\":0,\"radius_m\":1,"
        "\"limit\":0}",
        "{\"type\":\"geo.near\",\"id\":7,\"space\":\"d\",\"lat\":0,\"lon\":0,\"radius_m\":1,"
        "\"limit\":1001}",
        "{\"type\":\"geo.near\",\"id\":7,\"space\":\"d\",\"lat\":0,\"lon\":0,\"radius_m\":1,"
        "\"limit\":2.5}",
        "{\"type\":\"geo.watch\",\"id\":8,\"space\":\"d\",\"lon\":0,\"radius_m\":1}",
        "{\"type\":\"geo.watch\",\"id\":8,\"space\":\"d\",\"lat\":0,\"lon\":0,\"radius_m\":60000}",
        "{\"type\":\"geo.unwatch\",\"id\":9}",
        "{\"type\":\"geo.unwatch\",\"id\":9,\"watch\":\"\"}",
        "{\"type\":\"geo.unwatch\",\"id\":9,\"watch\":1}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        expect_error(bad[i], 400, true);
}

Test(decode, geo_near_watch_clear_unwatch)
{
    BOTH("{\"type\":\"geo.near\",\"id\":7,\"space\":\"drivers\",\"lat\":52.5201,\"lon\":13.4049,"
         "\"radius_m\":500,\"limit\":20}",
         m, {
             cr_assert_eq(m.error, 0);
             cr_assert_eq(m.type, PROTO_T_GEO_NEAR);
             cr_assert(m.has_radius && m.has_limit);
             cr_assert_eq(m.radius_m, 500.0);
             cr_assert_eq(m.limit, 20);
         });
    BOTH("{\"type\":\"geo.watch\",\"id\":8,\"space\":\"d\",\"lat\":0,\"lon\":0,\"radius_m\":50000}",
         m, {
             cr_assert_eq(m.error, 0);
             cr_assert_eq(m.type, PROTO_T_GEO_WATCH);
             cr_assert_not(m.has_limit);
             cr_assert_eq(m.limit, PROTO_NEAR_LIMIT_DEFAULT);
         });
    BOTH("{\"type\":\"geo.clear\",\"id\":6,\"space\":\"Dr_iv-3rs\"}", m, {
        cr_assert_eq(m.error, 0);
        cr_assert_eq(m.type, PROTO_T_GEO_CLEAR);
        cr_assert(str_is(m.space, "Dr_iv-3rs"));
    });
    BOTH("{\"type\":\"geo.unwatch\",\"id\":9,\"watch\":\"w1\"}", m, {
        cr_assert_eq(m.error, 0);
        cr_assert_eq(m.type, PROTO_T_GEO_UNWATCH);
        cr_assert(str_is(m.watch, "w1"));
    });
}

Test(decode, meta_over_1024_encoded_bytes_is_413)
{
    static char json[4096];
    char big[1100];
    /* {"m":"xxx..."}: 1016 x's make exactly 1024 bytes of compact JSON. */
    memset(big, 'x', 1016);
    big[1016] = '\0';
    snprintf(json, sizeof json,
             "{\"type\":\"geo.set\",\"id\":5,\"space\":\"d\",\"lat\":0,\"lon\":0,"
             "\"meta\":{\"m\":\"%s\"}}",
             big);
    struct proto_msg m = th_decode_one_json(&dec, json);
    cr_assert_eq(m.error, 0, "%s", m.error_message);
    cr_assert_eq(m.meta.len, 1024);
    memset(big, 'x', 1017);
    big[1017] = '\0';
    snprintf(json, sizeof json,
             "{\"type\":\"geo.set\",\"id\":5,\"space\":\"d\",\"lat\":0,\"lon\":0,"
             "\"meta\":{\"m\":\"%s\"}}",
             big);
    m = th_decode_one_json(&dec, json);
    cr_assert_eq(m.error, 413);
    memset(big, 'x', 1090);
    big[1090] = '\0';
    snprintf(json, sizeof json,
             "{\"type\":\"geo.set\",\"id\":5,\"space\":\"d\",\"lat\":0,\"lon\":0,"
             "\"meta\":{\"m\":\"%s\"}}",
             big);
    expect_error(json, 413, true);
}

/* -------------------------------------------------------------------- */

Test(decode, several_json_messages_in_one_frame)
{
    const char *frame = "{\"type\":\"connect\",\"id\":1}{\"type\":\"ping\"}\n"
                        " \t\r\n{\"type\":\"sub\",\"id\":2,\"channel\":\"a\"}\n";
    struct proto_msg *msgs;
    size_t n;
    cr_assert_eq(th_decode(&dec, PROTO_JSON, frame, strlen(frame), &msgs, &n), RT_OK);
    cr_assert_eq(n, 3);
    cr_assert_eq(msgs[0].type, PROTO_T_CONNECT);
    cr_assert_eq(msgs[1].type, PROTO_T_PING);
    cr_assert_eq(msgs[2].type, PROTO_T_SUB);
    for (size_t i = 0; i < n; i++)
        cr_assert_eq(msgs[i].error, 0);
}

Test(decode, several_msgpack_messages_in_one_frame_each_checked_alone)
{
    const char *parts[] = {
        "{\"type\":\"connect\",\"id\":1}",
        "{\"type\":\"sub\",\"id\":2,\"channel\":\"bad..name\"}",
        "{\"type\":\"pub\",\"id\":3,\"channel\":\"a\",\"data\":[1,2]}",
    };
    struct th_bytes b = {0};
    for (size_t i = 0; i < 3; i++) {
        uint8_t *mp;
        size_t len;
        th_json_text_to_mp(parts[i], &mp, &len);
        th_put(&b, mp, len);
        free(mp);
    }
    struct proto_msg *msgs;
    size_t n;
    cr_assert_eq(th_decode(&dec, PROTO_MSGPACK, b.p, b.len, &msgs, &n), RT_OK);
    cr_assert_eq(n, 3);
    cr_assert_eq(msgs[0].error, 0);
    cr_assert_eq(msgs[1].error, 400);
    cr_assert_eq(msgs[1].id, 2);
    cr_assert_eq(msgs[2].error, 0);
    cr_assert_eq(msgs[2].data.len, 3);
    th_free(&b);
}

Test(decode, msgpack_duplicate_known_key_is_400_and_decoding_goes_on)
{
    struct th_bytes b = {0};
    th_byte(&b, 0x83);
    th_str(&b, "type");
    th_str(&b, "ping");
    th_str(&b, "id");
    th_byte(&b, 1);
    th_str(&b, "type");
    th_str(&b, "ping");
    th_byte(&b, 0x81);
    th_str(&b, "type");
    th_str(&b, "ping");
    struct proto_msg *msgs;
    size_t n;
    cr_assert_eq(th_decode(&dec, PROTO_MSGPACK, b.p, b.len, &msgs, &n), RT_OK);
    cr_assert_eq(n, 2);
    cr_assert_eq(msgs[0].error, 400);
    cr_assert(msgs[0].has_id);
    cr_assert_eq(msgs[1].error, 0);
    th_free(&b);
}

Test(decode, json_duplicate_keys_stop_the_frame)
{
    const char *frame =
        "{\"type\":\"ping\"}{\"type\":\"ping\",\"type\":\"ping\"}{\"type\":\"ping\"}";
    struct proto_msg *msgs;
    size_t n;
    cr_assert_eq(th_decode(&dec, PROTO_JSON, frame, strlen(frame), &msgs, &n), RT_OK);
    cr_assert_eq(n, 2);
    cr_assert_eq(msgs[0].error, 0);
    cr_assert_eq(msgs[1].error, 400);
    cr_assert_eq(msgs[1].type, PROTO_T_UNKNOWN);
    cr_assert_not(msgs[1].has_id);
}

Test(decode, msgpack_strings_are_nul_terminated_copies)
{
    /* Two messages whose strings sit back to back in the frame: without a
     * copy, "a" would run on into the next bytes. */
    struct th_bytes b = {0};
    th_byte(&b, 0x83);
    th_str(&b, "type");
    th_str(&b, "unsub");
    th_str(&b, "id");
    th_byte(&b, 1);
    th_str(&b, "channel");
    th_str(&b, "a");
    struct proto_msg *msgs;
    size_t n;
    cr_assert_eq(th_decode(&dec, PROTO_MSGPACK, b.p, b.len, &msgs, &n), RT_OK);
    cr_assert_str_eq(msgs[0].channel.ptr, "a");
    cr_assert(msgs[0].channel.ptr < (const char *)b.p ||
              msgs[0].channel.ptr >= (const char *)b.p + b.len);
    th_free(&b);
}

Test(decode, decoder_is_reusable_and_custom_limits_apply)
{
    struct proto_limits lim = {.max_messages = 2, .max_frame_bytes = 64};
    cr_assert_eq(proto_decoder_create(&lim, &dec), RT_OK);
    struct proto_msg *msgs;
    size_t n;
    const char *three = "{\"type\":\"ping\"}{\"type\":\"ping\"}{\"type\":\"ping\"}";
    for (int round = 0; round < 50; round++) {
        cr_assert_eq(
            proto_decode(dec, PROTO_JSON, (const uint8_t *)three, strlen(three), &msgs, &n), RT_OK);
        cr_assert_eq(n, 3);
        cr_assert_eq(msgs[2].error, 400);
    }
    char big[65];
    memset(big, ' ', sizeof big);
    cr_assert_eq(proto_decode(dec, PROTO_JSON, (const uint8_t *)big, 65, &msgs, &n), RT_TOO_BIG);
    cr_assert_eq(n, 0);
}

Test(decode, round_trip_pub_from_each_codec_to_each_codec)
{
    const char *data = "{\"text\":\"h\\u00e9\",\"n\":[9007199254740993,-1,0.5,true,null],"
                       "\"o\":{}}";
    char json[512];
    snprintf(json, sizeof json, "{\"type\":\"pub\",\"id\":4,\"channel\":\"c\",\"data\":%s}", data);
    json_t *want = json_loads(data, 0, NULL);
    BOTH(json, m, {
        for (int out = 0; out < 2; out++) {
            struct proto_buf b;
            proto_buf_init(&b, 0);
            cr_assert_eq(
                proto_encode_msg(&b, (enum proto_codec)out, "c", 1, true, 1, NULL, 0, &m.data, 2),
                RT_OK);
            json_t *got = out == 0 ? th_json(b.data, b.len) : th_mp_to_json(b.data, b.len);
            cr_assert_not_null(got);
            cr_assert(json_equal(json_object_get(got, "data"), want), "%d -> %d", codec_, out);
            json_decref(got);
            proto_buf_free(&b);
        }
    });
    json_decref(want);
}

Test(decode, binary_round_trip_through_data_b64)
{
    const uint8_t raw[] = {0, 1, 0xfe, 0xff, 'z', 0x80};
    struct proto_payload p = {PROTO_PAYLOAD_BINARY, raw, sizeof raw, false};
    struct proto_buf b;
    proto_buf_init(&b, 0);
    cr_assert_eq(proto_encode_msg(&b, PROTO_JSON, "c", 1, false, 0, NULL, 0, &p, 1), RT_OK);
    json_t *j = th_json(b.data, b.len);
    const char *b64 = json_string_value(json_object_get(j, "data_b64"));
    cr_assert_not_null(b64);
    char req[256];
    snprintf(req, sizeof req, "{\"type\":\"pub\",\"id\":1,\"channel\":\"c\",\"data_b64\":\"%s\"}",
             b64);
    json_decref(j);
    BOTH(req, m, {
        cr_assert_eq(m.data.enc, PROTO_PAYLOAD_BINARY);
        cr_assert_eq(m.data.len, sizeof raw);
        cr_assert(memcmp(m.data.ptr, raw, sizeof raw) == 0);
    });
    proto_buf_free(&b);
}

/*
 * A decoded JSON `data` is marked canonical: converting it to JSON again
 * gives the same bytes (so JSON frames may copy it), for values whose text
 * jansson normalises (spaces, escapes, reals, big and negative numbers,
 * deep nesting; duplicate keys are refused before).
 */
Test(decode, json_data_is_canonical_and_copied_as_is)
{
    const char *datas[] = {
        "{ \"a\" : 1 , \"b\":[ 1.0, 2.50, -0.0, 1e2, 1E-7, 12345678901234567 ] }",
        "\"h\\u00e9 \\/ \\ud83d\\ude00 \\t\"",
        "[[[[[[[[[[{\"x\":null}]]]]]]]]]]",
        "-9223372036854775808",
        "3.141592653589793",
        "true",
    };
    struct proto_decoder *d = NULL;
    for (size_t i = 0; i < sizeof datas / sizeof datas[0]; i++) {
        char json[512];
        snprintf(json, sizeof json, "{\"type\":\"pub\",\"id\":1,\"channel\":\"c\",\"data\":%s}",
                 datas[i]);
        struct proto_msg m = th_decode_one_json(&d, json);
        cr_assert_eq(m.error, 0, "%s", datas[i]);
        cr_assert_eq(m.data.enc, PROTO_PAYLOAD_JSON);
        cr_assert(m.data.canonical, "%s", datas[i]);
        struct proto_buf again;
        proto_buf_init(&again, 0);
        struct proto_payload raw = m.data;
        raw.canonical = false; /* forces the parse and dump */
        cr_assert_eq(proto_payload_convert(&raw, PROTO_PAYLOAD_JSON, &again), RT_OK);
        cr_assert_eq(again.len, m.data.len, "%s", datas[i]);
        cr_assert(memcmp(again.data, m.data.ptr, m.data.len) == 0, "%s", datas[i]);
        proto_buf_free(&again);
    }
    proto_decoder_destroy(d);

    /* The flag is what makes a frame copy the text: not canonical, it is re-dumped. */
    const char *spaced = "{ \"a\" : 1 }";
    struct proto_payload p = {PROTO_PAYLOAD_JSON, (const uint8_t *)spaced, strlen(spaced), false};
    struct proto_buf b;
    proto_buf_init(&b, 0);
    cr_assert_eq(proto_encode_msg(&b, PROTO_JSON, "c", 1, false, 0, NULL, 0, &p, 1), RT_OK);
    cr_assert_not_null(memmem(b.data, b.len, "\"data\":{\"a\":1}", 14));
    p.canonical = true;
    b.len = 0;
    cr_assert_eq(proto_encode_msg(&b, PROTO_JSON, "c", 1, false, 0, NULL, 0, &p, 1), RT_OK);
    cr_assert_not_null(memmem(b.data, b.len, "\"data\":{ \"a\" : 1 }", 18));
    /* msgpack frames still convert it. */
    b.len = 0;
    cr_assert_eq(proto_encode_msg(&b, PROTO_MSGPACK, "c", 1, false, 0, NULL, 0, &p, 1), RT_OK);
    json_t *got = th_mp_to_json(b.data, b.len);
    cr_assert_eq(json_integer_value(json_object_get(json_object_get(got, "data"), "a")), 1);
    json_decref(got);
    proto_buf_free(&b);
}
