/* Writer, whole-message encoders, payload transcoding, base64 and UTF-8. */
#include "helpers.h"

#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* The buffer as a NUL-terminated string (JSON tests). */
static const char *text(struct proto_buf *b)
{
    proto_buf_reserve(b, 1);
    b->data[b->len] = '\0';
    return (const char *)b->data;
}

static void assert_json_eq(const uint8_t *p, size_t len, const char *want)
{
    json_t *got = th_json(p, len);
    json_t *exp = json_loads(want, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
    cr_assert_not_null(got, "not JSON: %.*s", (int)len, (const char *)p);
    cr_assert_not_null(exp);
    char *g = json_dumps(got, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY);
    cr_assert(json_equal(got, exp), "got %s want %s", g, want);
    free(g);
    json_decref(got);
    json_decref(exp);
}

static void assert_mp_eq(const uint8_t *p, size_t len, const char *want)
{
    json_t *got = th_mp_to_json(p, len);
    json_t *exp = json_loads(want, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
    cr_assert_not_null(got, "msgpack-c cannot read it");
    cr_assert_not_null(exp);
    char *g = json_dumps(got, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY);
    cr_assert(json_equal(got, exp), "got %s want %s", g, want);
    free(g);
    json_decref(got);
    json_decref(exp);
}

static void write_sample(struct proto_writer *w)
{
    proto_w_map(w);
    proto_w_kcstr(w, "s", "a\"b\\c\n\x01\xc3\xa9");
    proto_w_kint(w, "neg", -5);
    proto_w_kuint(w, "big", 9007199254740993ull);
    proto_w_kdouble(w, "d", 0.1);
    proto_w_kbool(w, "t", true);
    proto_w_key(w, "n");
    proto_w_null(w);
    proto_w_key(w, "arr");
    proto_w_array(w);
    proto_w_int(w, 1);
    proto_w_map(w);
    proto_w_end(w);
    proto_w_array(w);
    proto_w_end(w);
    proto_w_end(w);
    proto_w_end(w);
}

Test(writer, json_is_compact_escaped_and_ends_with_newline)
{
    struct proto_buf b;
    struct proto_writer w;
    proto_buf_init(&b, 0);
    proto_writer_init(&w, PROTO_JSON, &b);
    write_sample(&w);
    cr_assert_eq(proto_writer_status(&w), RT_OK);
    cr_assert_str_eq(text(&b), "{\"s\":\"a\\\"b\\\\c\\n\\u0001\xc3\xa9\",\"neg\":-5,"
                               "\"big\":9007199254740993,\"d\":0.1,\"t\":true,\"n\":null,"
                               "\"arr\":[1,{},[]]}\n");
    proto_buf_free(&b);
}

Test(writer, msgpack_reads_back_with_msgpack_c)
{
    struct proto_buf b;
    struct proto_writer w;
    proto_buf_init(&b, 0);
    proto_writer_init(&w, PROTO_MSGPACK, &b);
    write_sample(&w);
    cr_assert_eq(proto_writer_status(&w), RT_OK);
    assert_mp_eq(b.data, b.len,
                 "{\"s\":\"a\\\"b\\\\c\\n\\u0001\xc3\xa9\",\"neg\":-5,\"big\":9007199254740993,"
                 "\"d\":0.1,\"t\":true,\"n\":null,\"arr\":[1,{},[]]}");
    proto_buf_free(&b);
}

Test(writer, integer_extremes_are_exact_in_both_codecs)
{
    for (int c = 0; c < PROTO_NCODECS; c++) {
        struct proto_buf b;
        struct proto_writer w;
        proto_buf_init(&b, 0);
        proto_writer_init(&w, (enum proto_codec)c, &b);
        proto_w_array(&w);
        proto_w_int(&w, INT64_MIN);
        proto_w_int(&w, INT64_MAX);
        proto_w_int(&w, -33);
        proto_w_int(&w, -129);
        proto_w_int(&w, -40000);
        proto_w_int(&w, -3000000000);
        proto_w_uint(&w, UINT64_MAX);
        proto_w_uint(&w, 300);
        proto_w_uint(&w, 70000);
        proto_w_end(&w);
        cr_assert_eq(proto_writer_status(&w), RT_OK);
        if (c == PROTO_JSON) {
            cr_assert_str_eq(text(&b), "[-9223372036854775808,9223372036854775807,-33,-129,"
                                       "-40000,-3000000000,18446744073709551615,300,70000]\n");
        } else {
            msgpack_unpacked u;
            size_t off = 0;
            msgpack_unpacked_init(&u);
            cr_assert_eq(msgpack_unpack_next(&u, (const char *)b.data, b.len, &off),
                         MSGPACK_UNPACK_SUCCESS);
            msgpack_object *a = u.data.via.array.ptr;
            cr_assert_eq(a[0].via.i64, INT64_MIN);
            cr_assert_eq(a[1].via.u64, (uint64_t)INT64_MAX);
            cr_assert_eq(a[2].via.i64, -33);
            cr_assert_eq(a[3].via.i64, -129);
            cr_assert_eq(a[4].via.i64, -40000);
            cr_assert_eq(a[5].via.i64, -3000000000);
            cr_assert_eq(a[6].via.u64, UINT64_MAX);
            cr_assert_eq(a[7].via.u64, 300);
            cr_assert_eq(a[8].via.u64, 70000);
            msgpack_unpacked_destroy(&u);
        }
        proto_buf_free(&b);
    }
}

Test(writer, doubles_round_trip_and_stay_reals)
{
    const double vals[] = {0.1, 1.0, -0.0, 1e300, 5e-324, 123456789012345678.0, 2.5, 1.0 / 3};
    for (size_t i = 0; i < sizeof vals / sizeof *vals; i++) {
        struct proto_buf b;
        struct proto_writer w;
        proto_buf_init(&b, 0);
        proto_writer_init(&w, PROTO_JSON, &b);
        proto_w_double(&w, vals[i]);
        const char *t = text(&b);
        cr_assert(strpbrk(t, ".e") != NULL, "%s is not a real", t);
        cr_assert_eq(strtod(t, NULL), vals[i], "%s", t);
        json_t *j = th_json(b.data, b.len);
        cr_assert(json_is_real(j), "%s", t);
        json_decref(j);
        proto_buf_free(&b);
    }
}

Test(writer, short_doubles_print_short)
{
    struct proto_buf b;
    struct proto_writer w;
    proto_buf_init(&b, 0);
    proto_writer_init(&w, PROTO_JSON, &b);
    proto_w_array(&w);
    proto_w_double(&w, 52.52);
    proto_w_double(&w, 13.405);
    proto_w_double(&w, 100.0);
    proto_w_end(&w);
    cr_assert_str_eq(text(&b), "[52.52,13.405,100.0]\n");
    proto_buf_free(&b);
}

Test(writer, non_finite_doubles_become_null)
{
    for (int c = 0; c < PROTO_NCODECS; c++) {
        struct proto_buf b;
        struct proto_writer w;
        proto_buf_init(&b, 0);
        proto_writer_init(&w, (enum proto_codec)c, &b);
        proto_w_array(&w);
        proto_w_double(&w, NAN);
        proto_w_double(&w, INFINITY);
        proto_w_double(&w, -INFINITY);
        proto_w_end(&w);
        if (c == PROTO_JSON)
            cr_assert_str_eq(text(&b), "[null,null,null]\n");
        else
            assert_mp_eq(b.data, b.len, "[null,null,null]");
        proto_buf_free(&b);
    }
}

Test(writer, value_without_key_in_map_is_invalid_and_sticky)
{
    struct proto_buf b;
    struct proto_writer w;
    proto_buf_init(&b, 0);
    proto_writer_init(&w, PROTO_JSON, &b);
    proto_w_map(&w);
    proto_w_int(&w, 1);
    cr_assert_eq(proto_writer_status(&w), RT_INVAL);
    size_t len = b.len;
    proto_w_kint(&w, "a", 2);
    proto_w_end(&w);
    cr_assert_eq(b.len, len, "calls after an error write nothing");
    proto_buf_free(&b);
}

Test(writer, misuse_is_invalid)
{
    struct proto_buf b;
    struct proto_writer w;
    proto_buf_init(&b, 0);

    proto_writer_init(&w, PROTO_MSGPACK, &b);
    proto_w_end(&w);
    cr_assert_eq(proto_writer_status(&w), RT_INVAL, "end at depth 0");

    proto_writer_init(&w, PROTO_MSGPACK, &b);
    proto_w_array(&w);
    proto_w_key(&w, "k");
    cr_assert_eq(proto_writer_status(&w), RT_INVAL, "key in an array");

    proto_writer_init(&w, PROTO_JSON, &b);
    proto_w_map(&w);
    proto_w_key(&w, "k");
    proto_w_end(&w);
    cr_assert_eq(proto_writer_status(&w), RT_INVAL, "key without value");

    proto_writer_init(&w, PROTO_JSON, &b);
    proto_w_map(&w);
    proto_w_key(&w, "k");
    proto_w_key(&w, "k2");
    cr_assert_eq(proto_writer_status(&w), RT_INVAL, "two keys in a row");

    proto_writer_init(&w, PROTO_JSON, &b);
    proto_w_array(&w);
    proto_w_str(&w, "\xc0\xaf", 2);
    cr_assert_eq(proto_writer_status(&w), RT_INVAL, "invalid UTF-8");
    proto_buf_free(&b);
}

Test(writer, too_deep_is_too_big)
{
    struct proto_buf b;
    struct proto_writer w;
    proto_buf_init(&b, 0);
    proto_writer_init(&w, PROTO_JSON, &b);
    for (int i = 0; i < PROTO_WRITER_MAX_DEPTH; i++)
        proto_w_array(&w);
    cr_assert_eq(proto_writer_status(&w), RT_OK);
    proto_w_array(&w);
    cr_assert_eq(proto_writer_status(&w), RT_TOO_BIG);
    proto_buf_free(&b);
}

Test(writer, msgpack_container_over_65535_items_is_too_big)
{
    struct proto_buf b;
    struct proto_writer w;
    proto_buf_init(&b, 0);
    proto_writer_init(&w, PROTO_MSGPACK, &b);
    proto_w_array(&w);
    for (int i = 0; i < 65535; i++)
        proto_w_int(&w, 1);
    cr_assert_eq(proto_writer_status(&w), RT_OK);
    proto_w_end(&w);
    cr_assert_eq(b.data[1], 0xff);
    cr_assert_eq(b.data[2], 0xff);
    proto_writer_init(&w, PROTO_MSGPACK, &b);
    proto_w_array(&w);
    for (int i = 0; i < 65536; i++)
        proto_w_int(&w, 1);
    cr_assert_eq(proto_writer_status(&w), RT_TOO_BIG);
    proto_buf_free(&b);
}

/* -------------------------------------------------------------------- */

Test(buf, headroom_sits_before_data_and_take_hands_it_over)
{
    struct proto_buf b;
    proto_buf_init(&b, 16);
    cr_assert_eq(proto_encode_pong(&b, PROTO_JSON), RT_OK);
    memset(b.data - 16, 0xaa, 16); /* ASan would object if the headroom were not ours */
    size_t len;
    uint8_t *p = proto_buf_take(&b, &len);
    cr_assert_eq(len, strlen("{\"type\":\"pong\"}\n"));
    cr_assert(memcmp(p, "{\"type\":\"pong\"}\n", len) == 0);
    cr_assert_null(b.data);
    cr_assert_eq(b.headroom, 16);
    free(p - 16);

    p = proto_buf_take(&b, &len);
    cr_assert_not_null(p, "an empty buffer still hands over an allocation");
    cr_assert_eq(len, 0);
    free(p - 16);
}

Test(buf, reset_keeps_memory_and_reserve_grows)
{
    struct proto_buf b;
    proto_buf_init(&b, 4);
    cr_assert_eq(proto_buf_reserve(&b, 100000), RT_OK);
    cr_assert_geq(b.cap, 100000);
    b.len = 5;
    proto_buf_reset(&b);
    cr_assert_eq(b.len, 0);
    cr_assert_not_null(b.data);
    cr_assert_eq(proto_buf_reserve(&b, SIZE_MAX - 8), RT_NOMEM);
    proto_buf_free(&b);
    proto_buf_free(&b);
}

/* -------------------------------------------------------------------- */

Test(encode, msg_json_matches_protocol_example)
{
    struct proto_buf b;
    proto_buf_init(&b, 0);
    const char *data = "{\"text\":\"hi\"}";
    struct proto_payload p = {PROTO_PAYLOAD_JSON, (const uint8_t *)data, strlen(data), false};
    cr_assert_eq(proto_encode_msg(&b, PROTO_JSON, "chat.room1", 10, true, 124, "01JD", 4, &p,
                                  1764283000123ull),
                 RT_OK);
    cr_assert_str_eq(text(&b), "{\"type\":\"msg\",\"channel\":\"chat.room1\",\"seq\":124,"
                               "\"msg_id\":\"01JD\",\"data\":{\"text\":\"hi\"},"
                               "\"ts\":1764283000123}\n");
    proto_buf_free(&b);
}

Test(encode, msg_without_seq_msg_id_or_data)
{
    struct proto_buf b;
    proto_buf_init(&b, 0);
    cr_assert_eq(proto_encode_msg(&b, PROTO_JSON, "a", 1, false, 0, NULL, 0, NULL, 5), RT_OK);
    cr_assert_str_eq(text(&b), "{\"type\":\"msg\",\"channel\":\"a\",\"ts\":5}\n");
    proto_buf_free(&b);
}

Test(encode, msg_msgpack_carries_json_payload_as_msgpack)
{
    struct proto_buf b;
    proto_buf_init(&b, 0);
    const char *data = "{\"text\":\"hi\",\"n\":[1,2.5,null,true]}";
    struct proto_payload p = {PROTO_PAYLOAD_JSON, (const uint8_t *)data, strlen(data), false};
    cr_assert_eq(proto_encode_msg(&b, PROTO_MSGPACK, "chat.room1", 10, true, 7, NULL, 0, &p, 9),
                 RT_OK);
    assert_mp_eq(b.data, b.len,
                 "{\"type\":\"msg\",\"channel\":\"chat.room1\",\"seq\":7,"
                 "\"data\":{\"text\":\"hi\",\"n\":[1,2.5,null,true]},\"ts\":9}");
    proto_buf_free(&b);
}

Test(encode, binary_payload_is_data_b64_in_json_and_bin_in_msgpack)
{
    struct proto_buf b;
    proto_buf_init(&b, 0);
    const uint8_t raw[] = {0, 1, 2, 0xff, 'a'};
    struct proto_payload p = {PROTO_PAYLOAD_BINARY, raw, sizeof raw, false};
    cr_assert_eq(proto_encode_msg(&b, PROTO_JSON, "c", 1, false, 0, NULL, 0, &p, 1), RT_OK);
    cr_assert_str_eq(text(&b),
                     "{\"type\":\"msg\",\"channel\":\"c\",\"data_b64\":\"AAEC/2E=\",\"ts\":1}\n");
    proto_buf_reset(&b);
    cr_assert_eq(proto_encode_msg(&b, PROTO_MSGPACK, "c", 1, false, 0, NULL, 0, &p, 1), RT_OK);
    assert_mp_eq(b.data, b.len,
                 "{\"type\":\"msg\",\"channel\":\"c\",\"data\":{\"$bin\":\"AAEC/2E=\"},\"ts\":1}");
    proto_buf_free(&b);
}

Test(encode, msgpack_top_level_bin_goes_to_json_as_data_b64)
{
    struct proto_buf b;
    proto_buf_init(&b, 0);
    const uint8_t mp[] = {0xc4, 3, 'a', 'b', 'c'};
    struct proto_payload p = {PROTO_PAYLOAD_MSGPACK, mp, sizeof mp, false};
    cr_assert_eq(proto_encode_msg(&b, PROTO_JSON, "c", 1, false, 0, NULL, 0, &p, 1), RT_OK);
    cr_assert_str_eq(text(&b),
                     "{\"type\":\"msg\",\"channel\":\"c\",\"data_b64\":\"YWJj\",\"ts\":1}\n");
    proto_buf_free(&b);
}

Test(encode, invalid_payload_fails_and_leaves_buffer_unchanged)
{
    struct proto_buf b;
    proto_buf_init(&b, 0);
    cr_assert_eq(proto_encode_pong(&b, PROTO_JSON), RT_OK);
    size_t len = b.len;
    const char *bad = "{\"a\":";
    struct proto_payload p = {PROTO_PAYLOAD_JSON, (const uint8_t *)bad, strlen(bad), false};
    for (int c = 0; c < PROTO_NCODECS; c++) {
        cr_assert_eq(proto_encode_msg(&b, (enum proto_codec)c, "c", 1, false, 0, NULL, 0, &p, 1),
                     RT_INVAL);
        cr_assert_eq(b.len, len);
    }
    const uint8_t trunc[] = {0x92, 0x01};
    struct proto_payload q = {PROTO_PAYLOAD_MSGPACK, trunc, sizeof trunc, false};
    for (int c = 0; c < PROTO_NCODECS; c++) {
        cr_assert_eq(proto_encode_msg(&b, (enum proto_codec)c, "c", 1, false, 0, NULL, 0, &q, 1),
                     RT_INVAL);
        cr_assert_eq(b.len, len);
    }
    cr_assert_eq(proto_encode_msg(&b, PROTO_JSON, "\xff", 1, false, 0, NULL, 0, NULL, 1), RT_INVAL,
                 "a channel that is not UTF-8");
    cr_assert_eq(b.len, len);
    proto_buf_free(&b);
}

Test(encode, json_payload_with_newlines_is_compacted_onto_one_line)
{
    struct proto_buf b;
    proto_buf_init(&b, 0);
    const char *data = "{\n  \"a\" : [ 1 ,\n 2 ],\n \"s\": \"x y\"\n}\n";
    struct proto_payload p = {PROTO_PAYLOAD_JSON, (const uint8_t *)data, strlen(data), false};
    cr_assert_eq(proto_encode_msg(&b, PROTO_JSON, "c", 1, false, 0, NULL, 0, &p, 1), RT_OK);
    cr_assert_str_eq(text(&b), "{\"type\":\"msg\",\"channel\":\"c\",\"data\":{\"a\":[1,2],"
                               "\"s\":\"x y\"},\"ts\":1}\n");
    proto_buf_free(&b);
}

Test(encode, error_reply_with_id_and_retry_after)
{
    struct proto_buf b;
    proto_buf_init(&b, 0);
    cr_assert_eq(proto_encode_error(&b, PROTO_JSON, true, 4, 429, NULL, 350), RT_OK);
    cr_assert_str_eq(text(&b), "{\"type\":\"reply\",\"id\":4,\"ok\":false,\"error\":{\"code\":429,"
                               "\"reason\":\"rate_limited\",\"retry_after_ms\":350}}\n");
    proto_buf_free(&b);
}

Test(encode, error_without_id_has_message_and_no_retry_for_400)
{
    struct proto_buf b;
    proto_buf_init(&b, 0);
    cr_assert_eq(proto_encode_error(&b, PROTO_JSON, false, 0, 400, "bad \"x\"", 99), RT_OK);
    cr_assert_str_eq(text(&b), "{\"type\":\"error\",\"error\":{\"code\":400,"
                               "\"reason\":\"bad_request\",\"message\":\"bad \\\"x\\\"\"}}\n");
    proto_buf_reset(&b);
    cr_assert_eq(proto_encode_error(&b, PROTO_MSGPACK, true, -1, 503, "down", 1000), RT_OK);
    assert_mp_eq(b.data, b.len,
                 "{\"type\":\"reply\",\"id\":-1,\"ok\":false,\"error\":{\"code\":503,"
                 "\"reason\":\"unavailable\",\"message\":\"down\",\"retry_after_ms\":1000}}");
    proto_buf_free(&b);
}

Test(encode, gap_pong_and_disconnect)
{
    struct proto_buf b;
    proto_buf_init(&b, 0);
    cr_assert_eq(proto_encode_gap(&b, PROTO_JSON, "a.b", 5, 9), RT_OK);
    cr_assert_eq(proto_encode_pong(&b, PROTO_JSON), RT_OK);
    cr_assert_eq(proto_encode_disconnect(&b, PROTO_JSON, 1001, "draining", true, 1834), RT_OK);
    cr_assert_str_eq(text(&b), "{\"type\":\"gap\",\"channel\":\"a.b\",\"from\":5,\"to\":9}\n"
                               "{\"type\":\"pong\"}\n"
                               "{\"type\":\"disconnect\",\"code\":1001,\"reason\":\"draining\","
                               "\"reconnect\":true,\"after_ms\":1834}\n");
    proto_buf_free(&b);
}

Test(encode, several_msgpack_messages_back_to_back)
{
    struct proto_buf b;
    proto_buf_init(&b, 0);
    cr_assert_eq(proto_encode_gap(&b, PROTO_MSGPACK, "a.b", 5, 9), RT_OK);
    cr_assert_eq(proto_encode_pong(&b, PROTO_MSGPACK), RT_OK);
    cr_assert_eq(proto_encode_disconnect(&b, PROTO_MSGPACK, 1000, "bye", false, 0), RT_OK);
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    size_t off = 0;
    int n = 0;
    while (msgpack_unpack_next(&u, (const char *)b.data, b.len, &off) == MSGPACK_UNPACK_SUCCESS) {
        cr_assert_eq(u.data.type, MSGPACK_OBJECT_MAP);
        n++;
    }
    cr_assert_eq(n, 3);
    cr_assert_eq(off, b.len);
    msgpack_unpacked_destroy(&u);
    proto_buf_free(&b);
}

/* -------------------------------------------------------------------- */

static void convert_ok(const struct proto_payload *p, enum proto_payload_enc want,
                       struct proto_buf *out)
{
    proto_buf_reset(out);
    cr_assert_eq(proto_payload_convert(p, want, out), RT_OK);
}

Test(transcode, json_to_msgpack_to_json_keeps_semantics)
{
    const char *src =
        "{\"a\":[1,-2,3.25,\"x\\u0000y\",{\"b\":null,\"c\":false}],"
        "\"big\":9007199254740993,\"min\":-9223372036854775808,"
        "\"max\":9223372036854775807,\"e\":{},\"f\":[],\"u\":\"\\u00e9\\ud83d\\ude00\"}";
    struct proto_payload p = {PROTO_PAYLOAD_JSON, (const uint8_t *)src, strlen(src), false};
    struct proto_buf mp, js;
    proto_buf_init(&mp, 0);
    proto_buf_init(&js, 0);
    convert_ok(&p, PROTO_PAYLOAD_MSGPACK, &mp);
    assert_mp_eq(mp.data, mp.len, src);
    struct proto_payload q = {PROTO_PAYLOAD_MSGPACK, mp.data, mp.len, false};
    convert_ok(&q, PROTO_PAYLOAD_JSON, &js);
    assert_json_eq(js.data, js.len, src);
    cr_assert(strstr(text(&js), "9007199254740993") != NULL, "ints above 2^53 stay exact");
    proto_buf_free(&mp);
    proto_buf_free(&js);
}

Test(transcode, msgpack_uint64_max_and_float32_reach_json)
{
    const uint8_t mp[] = {0x92, 0xcf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                          0xff, 0xff, 0xca, 0x3f, 0xc0, 0x00, 0x00};
    struct proto_payload p = {PROTO_PAYLOAD_MSGPACK, mp, sizeof mp, false};
    struct proto_buf js;
    proto_buf_init(&js, 0);
    convert_ok(&p, PROTO_PAYLOAD_JSON, &js);
    cr_assert_str_eq(text(&js), "[18446744073709551615,1.5]");
    proto_buf_free(&js);
}

Test(transcode, nested_bin_becomes_base64_string_in_json)
{
    const uint8_t mp[] = {0x81, 0xa1, 'k', 0xc4, 2, 0xfb, 0xff};
    struct proto_payload p = {PROTO_PAYLOAD_MSGPACK, mp, sizeof mp, false};
    struct proto_buf js;
    proto_buf_init(&js, 0);
    convert_ok(&p, PROTO_PAYLOAD_JSON, &js);
    cr_assert_str_eq(text(&js), "{\"k\":\"+/8=\"}");
    proto_buf_free(&js);
}

Test(transcode, untranscodable_msgpack_is_invalid_for_json_only)
{
    const uint8_t ext[] = {0x91, 0xd4, 0x01, 0x00};
    const uint8_t intkey[] = {0x81, 0x01, 0x02};
    const uint8_t badutf8[] = {0xa2, 0xc3, 0x28};
    const uint8_t trailing[] = {0x01, 0x02};
    const uint8_t reserved[] = {0xc1};
    struct proto_buf out;
    proto_buf_init(&out, 0);
    struct proto_payload p = {PROTO_PAYLOAD_MSGPACK, ext, sizeof ext, false};
    cr_assert_eq(proto_payload_convert(&p, PROTO_PAYLOAD_JSON, &out), RT_INVAL);
    cr_assert_eq(proto_payload_convert(&p, PROTO_PAYLOAD_MSGPACK, &out), RT_OK, "ext passes");
    p = (struct proto_payload){PROTO_PAYLOAD_MSGPACK, intkey, sizeof intkey, false};
    cr_assert_eq(proto_payload_convert(&p, PROTO_PAYLOAD_JSON, &out), RT_INVAL);
    p = (struct proto_payload){PROTO_PAYLOAD_MSGPACK, badutf8, sizeof badutf8, false};
    cr_assert_eq(proto_payload_convert(&p, PROTO_PAYLOAD_JSON, &out), RT_INVAL);
    cr_assert_eq(proto_payload_convert(&p, PROTO_PAYLOAD_MSGPACK, &out), RT_INVAL);
    p = (struct proto_payload){PROTO_PAYLOAD_MSGPACK, trailing, sizeof trailing, false};
    cr_assert_eq(proto_payload_convert(&p, PROTO_PAYLOAD_MSGPACK, &out), RT_INVAL);
    p = (struct proto_payload){PROTO_PAYLOAD_MSGPACK, reserved, sizeof reserved, false};
    cr_assert_eq(proto_payload_convert(&p, PROTO_PAYLOAD_JSON, &out), RT_INVAL);
    cr_assert_eq(out.len, sizeof ext, "failures append nothing");
    proto_buf_free(&out);
}

Test(transcode, binary_has_no_json_value_but_converts_to_bin)
{
    const uint8_t raw[] = {1, 2, 3};
    struct proto_payload p = {PROTO_PAYLOAD_BINARY, raw, sizeof raw, false};
    struct proto_buf out;
    proto_buf_init(&out, 0);
    cr_assert_eq(proto_payload_convert(&p, PROTO_PAYLOAD_JSON, &out), RT_INVAL);
    cr_assert_eq(proto_payload_convert(&p, PROTO_PAYLOAD_BINARY, &out), RT_INVAL);
    convert_ok(&p, PROTO_PAYLOAD_MSGPACK, &out);
    const uint8_t want[] = {0xc4, 3, 1, 2, 3};
    cr_assert_eq(out.len, sizeof want);
    cr_assert(memcmp(out.data, want, sizeof want) == 0);
    proto_buf_free(&out);
}

Test(transcode, json_scalars_and_invalid_json)
{
    struct proto_buf out;
    proto_buf_init(&out, 0);
    const char *ok[] = {"1", "\"s\"", "null", "[1, 2]", " true "};
    const char *want[] = {"1", "\"s\"", "null", "[1,2]", "true"};
    for (size_t i = 0; i < 5; i++) {
        struct proto_payload p = {PROTO_PAYLOAD_JSON, (const uint8_t *)ok[i], strlen(ok[i]), false};
        convert_ok(&p, PROTO_PAYLOAD_JSON, &out);
        cr_assert_str_eq(text(&out), want[i]);
    }
    const char *bad[] = {"", "NaN", "{\"a\":1} {\"b\":2}", "[1,]", "\"\xff\"", "1e400"};
    for (size_t i = 0; i < 6; i++) {
        struct proto_payload p = {PROTO_PAYLOAD_JSON, (const uint8_t *)bad[i], strlen(bad[i]),
                                  false};
        cr_assert_eq(proto_payload_convert(&p, PROTO_PAYLOAD_MSGPACK, &out), RT_INVAL, "%s",
                     bad[i]);
    }
    proto_buf_free(&out);
}

/* -------------------------------------------------------------------- */

Test(base64, rfc4648_vectors_both_ways)
{
    const char *plain[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
    const char *enc[] = {"", "Zg==", "Zm8=", "Zm9v", "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy"};
    for (size_t i = 0; i < 7; i++) {
        struct proto_buf b;
        proto_buf_init(&b, 0);
        cr_assert_eq(proto_base64_encode((const uint8_t *)plain[i], strlen(plain[i]), &b), RT_OK);
        cr_assert_eq(b.len, strlen(enc[i]));
        cr_assert(b.len == 0 || memcmp(b.data, enc[i], b.len) == 0);
        proto_buf_reset(&b);
        cr_assert_eq(proto_base64_decode(enc[i], strlen(enc[i]), &b), RT_OK);
        cr_assert_eq(b.len, strlen(plain[i]));
        cr_assert(b.len == 0 || memcmp(b.data, plain[i], b.len) == 0);
        proto_buf_free(&b);
    }
}

Test(base64, all_byte_values_round_trip)
{
    uint8_t raw[256];
    for (int i = 0; i < 256; i++)
        raw[i] = (uint8_t)i;
    for (size_t n = 0; n <= 256; n += 37) {
        struct proto_buf e, d;
        proto_buf_init(&e, 0);
        proto_buf_init(&d, 0);
        cr_assert_eq(proto_base64_encode(raw, n, &e), RT_OK);
        cr_assert_eq(proto_base64_decode((const char *)e.data, e.len, &d), RT_OK);
        cr_assert_eq(d.len, n);
        cr_assert(n == 0 || memcmp(d.data, raw, n) == 0);
        proto_buf_free(&e);
        proto_buf_free(&d);
    }
}

Test(base64, rejects_malformed_text)
{
    const char *bad[] = {"Zg",   "Zg=",  "Zg===", "Z===",     "====",  "Zm9v\n",
                         "Zm-v", "Zh==", "Zm9=",  "Zg==Zm9v", "Zm 9v", "Zm9v YmFy"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        struct proto_buf b;
        proto_buf_init(&b, 0);
        cr_assert_eq(proto_base64_decode(bad[i], strlen(bad[i]), &b), RT_INVAL, "%s", bad[i]);
        cr_assert_eq(b.len, 0);
        proto_buf_free(&b);
    }
}

/* -------------------------------------------------------------------- */

Test(utf8, accepts_valid_text)
{
    const char *ok[] = {"",
                        "plain ascii",
                        "\xc3\xa9",
                        "\xe2\x82\xac",
                        "\xf0\x9f\x98\x80",
                        "\xf4\x8f\xbf\xbf",
                        "\xed\x9f\xbf",
                        "\xee\x80\x80",
                        "long ascii prefix then \xc3\xa9 and more ascii after it"};
    for (size_t i = 0; i < sizeof ok / sizeof *ok; i++)
        cr_assert(proto_utf8_valid(ok[i], strlen(ok[i])), "case %zu", i);
    cr_assert(proto_utf8_valid("a\0b", 3), "NUL is a valid code point");
}

Test(utf8, rejects_overlongs_surrogates_and_truncation)
{
    const char *bad[] = {
        "\xc0\xaf",
        "\xc1\xbf",
        "\xe0\x80\xaf",
        "\xe0\x9f\xbf",
        "\xf0\x80\x80\xaf",
        "\xf0\x8f\xbf\xbf",
        "\xed\xa0\x80",
        "\xed\xbf\xbf",
        "\xf4\x90\x80\x80",
        "\xf5\x80\x80\x80",
        "\xff",
        "\x80",
        "\xc3",
        "\xe2\x82",
        "\xf0\x9f\x98",
        "abcdefgh\xc3",
        "\xe2\x28\xa1",
        "\xc3\x28",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        cr_assert_not(proto_utf8_valid(bad[i], strlen(bad[i])), "case %zu", i);
}
