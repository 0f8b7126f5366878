/*
 * The frame the fleet's bus codecs share (peers/peers_wire.c): ids'
 * characters, the whole-message check, maps read pair by pair, typed
 * values, arrays read element by element, a message's start. The codecs'
 * own suites (tests/geo/test_fleet_wire.c, tests/users/test_users_wire.c)
 * test the messages built on it.
 */
#include "peers.h"

#include <criterion/criterion.h>
#include <string.h>

static const struct peers_wire_limits LIM = {
    .max_bytes = 64,
    .max_depth = 3,
    .max_elems = 16,
    .scan_flags = 0,
};

/* {"n":"nodeA","v":7,"e":[{"x":1},{"x":2}],"z":{"deep":[1,2,3]}} */
static void sample(struct proto_buf *b)
{
    struct proto_writer w;
    proto_buf_init(b, 0);
    peers_wire_begin(&w, b, "nodeA", 5);
    proto_w_kuint(&w, "v", 7);
    peers_wire_entries_begin(&w);
    for (uint64_t x = 1; x <= 2; x++) {
        proto_w_map(&w);
        proto_w_kuint(&w, "x", x);
        proto_w_end(&w);
    }
    proto_w_end(&w);
    proto_w_key(&w, "z");
    proto_w_map(&w);
    proto_w_key(&w, "deep");
    proto_w_array(&w);
    for (uint64_t x = 1; x <= 3; x++)
        proto_w_uint(&w, x);
    proto_w_end(&w);
    proto_w_end(&w);
    proto_w_end(&w);
    cr_assert_eq(proto_writer_status(&w), RT_OK);
}

Test(peers_wire, ids_are_letters_digits_and_the_extra_characters_within_the_bounds)
{
    cr_assert(peers_wire_node_ok("node_A-9", 8));
    cr_assert_not(peers_wire_node_ok("", 0));
    cr_assert_not(peers_wire_node_ok(NULL, 3));
    cr_assert_not(peers_wire_node_ok("a.b", 3));
    cr_assert_not(peers_wire_node_ok("a\0b", 3), "a NUL is never an extra character");
    char id[PEERS_NODE_MAX + 1];
    memset(id, 'a', sizeof(id));
    cr_assert(peers_wire_node_ok(id, PEERS_NODE_MAX));
    cr_assert_not(peers_wire_node_ok(id, PEERS_NODE_MAX + 1));
    cr_assert(peers_wire_chars_ok("abc123", 6, 6, NULL));
    cr_assert_not(peers_wire_chars_ok("ab_c", 4, 6, NULL));
    cr_assert(peers_wire_chars_ok("a@b.c", 5, 6, "@."));
    cr_assert_not(peers_wire_chars_ok("a b", 3, 6, "@."));
}

Test(peers_wire, the_check_takes_one_whole_object_within_the_limits)
{
    struct proto_buf b;
    sample(&b);
    cr_assert(peers_wire_check(b.data, b.len, &LIM));
    cr_assert_not(peers_wire_check(NULL, 0, &LIM));
    cr_assert_not(peers_wire_check(b.data, 0, &LIM));
    for (size_t n = 1; n < b.len; n++)
        cr_assert_not(peers_wire_check(b.data, n, &LIM), "truncated at %zu", n);
    uint8_t more[80];
    memcpy(more, b.data, b.len);
    more[b.len] = 0xc0; /* a second object after the first */
    cr_assert_not(peers_wire_check(more, b.len + 1, &LIM));
    struct peers_wire_limits small = LIM;
    small.max_bytes = b.len - 1;
    cr_assert_not(peers_wire_check(b.data, b.len, &small), "larger than max_bytes");
    small = LIM;
    small.max_depth = 2;
    cr_assert_not(peers_wire_check(b.data, b.len, &small), "deeper than max_depth");
    small = LIM;
    small.max_elems = 8;
    cr_assert_not(peers_wire_check(b.data, b.len, &small), "more elements than max_elems");
    proto_buf_free(&b);
}

Test(peers_wire, the_check_refuses_keys_that_are_not_strings_bad_utf8_and_ext_when_asked)
{
    static const uint8_t int_key[] = {0x81, 0x01, 0x02};                         /* {1:2} */
    static const uint8_t nested_int_key[] = {0x81, 0xa1, 'a', 0x81, 0x01, 0x02}; /* {"a":{1:2}} */
    static const uint8_t bad_utf8[] = {0x81, 0xa1, 'a', 0xa1, 0xff};             /* {"a":"\xff"} */
    static const uint8_t ext[] = {0x81, 0xa1, 'a', 0xd4, 0x01, 0x00};            /* {"a":fixext1} */
    cr_assert_not(peers_wire_check(int_key, sizeof(int_key), &LIM));
    cr_assert_not(peers_wire_check(nested_int_key, sizeof(nested_int_key), &LIM));
    cr_assert_not(peers_wire_check(bad_utf8, sizeof(bad_utf8), &LIM));
    cr_assert(peers_wire_check(ext, sizeof(ext), &LIM));
    struct peers_wire_limits no_ext = LIM;
    no_ext.scan_flags = PROTO_MP_REJECT_EXT;
    cr_assert_not(peers_wire_check(ext, sizeof(ext), &no_ext));
}

struct seen {
    char keys[8][8];
    size_t voff[8];
    size_t n;
    int refuse_at; /* -1: none */
};

static bool collect(void *arg, const struct proto_mp_item *k, const struct proto_mp_item *v,
                    size_t voff)
{
    (void)v;
    struct seen *s = arg;
    cr_assert_lt(s->n, 8);
    if ((int)s->n == s->refuse_at)
        return false;
    memcpy(s->keys[s->n], k->ptr, k->n < 7 ? k->n : 7);
    s->voff[s->n++] = voff;
    return true;
}

Test(peers_wire, a_map_is_read_pair_by_pair_each_value_skipped_whole)
{
    struct proto_buf b;
    sample(&b);
    struct seen s = {.refuse_at = -1};
    size_t off = 0;
    cr_assert(peers_wire_walk_map(b.data, b.len, &off, &LIM, collect, &s));
    cr_assert_eq(off, b.len, "past the map at the end");
    cr_assert_eq(s.n, 4, "the nested maps' pairs are skipped, not walked");
    cr_assert_str_eq(s.keys[0], "n");
    cr_assert_str_eq(s.keys[1], "v");
    cr_assert_str_eq(s.keys[2], "e");
    cr_assert_str_eq(s.keys[3], "z");
    struct proto_mp_item it;
    size_t at = s.voff[2];
    cr_assert(proto_mp_read(b.data, b.len, &at, &it));
    cr_assert(it.kind == PROTO_MP_ARRAY && it.n == 2, "value_off is where the value starts");

    s = (struct seen){.refuse_at = 2};
    off = 0;
    cr_assert_not(peers_wire_walk_map(b.data, b.len, &off, &LIM, collect, &s));
    cr_assert_eq(s.n, 2, "a refused pair stops the walk");
    static const uint8_t array[] = {0x91, 0x01};
    off = 0;
    s = (struct seen){.refuse_at = -1};
    cr_assert_not(peers_wire_walk_map(array, sizeof(array), &off, &LIM, collect, &s));
    proto_buf_free(&b);
}

/* Reads one element of the sample's "e": a map {"x": n} into a uint64_t. */
static bool x_pair(void *arg, const struct proto_mp_item *k, const struct proto_mp_item *v,
                   size_t voff)
{
    (void)voff;
    return !peers_wire_key_is(k, "x") || peers_wire_u64(v, arg);
}

static bool read_x(const uint8_t *p, size_t len, size_t *off, void *out)
{
    return peers_wire_walk_map(p, len, off, &LIM, x_pair, out);
}

Test(peers_wire, an_array_is_read_element_by_element_from_a_zeroed_cursor)
{
    struct proto_buf b;
    sample(&b);
    struct seen s = {.refuse_at = -1};
    size_t off = 0;
    cr_assert(peers_wire_walk_map(b.data, b.len, &off, &LIM, collect, &s));
    size_t e_off = s.voff[2], at = 0;
    uint32_t done = 0;
    uint64_t x = 0;
    cr_assert(peers_wire_next(b.data, b.len, e_off, 2, &at, &done, read_x, &x));
    cr_assert(x == 1 && done == 1);
    cr_assert(peers_wire_next(b.data, b.len, e_off, 2, &at, &done, read_x, &x));
    cr_assert(x == 2 && done == 2);
    cr_assert_not(peers_wire_next(b.data, b.len, e_off, 2, &at, &done, read_x, &x), "past n");

    at = 0, done = 0;
    cr_assert(peers_wire_next(b.data, b.len, e_off, 1, &at, &done, read_x, &x));
    cr_assert_not(peers_wire_next(b.data, b.len, e_off, 1, &at, &done, read_x, &x),
                  "n bounds the walk, not the array");
    at = 0, done = 0;
    cr_assert_not(peers_wire_next(b.data, b.len, 0, 2, &at, &done, read_x, &x), "no array");
    at = 0, done = 0;
    cr_assert_not(peers_wire_next(b.data, b.len, s.voff[1], 2, &at, &done, read_x, &x),
                  "not an array at array_off");
    cr_assert_eq(done, 0);
    proto_buf_free(&b);
}

Test(peers_wire, an_array_value_is_located_and_read_whole_or_refused)
{
    struct proto_buf b;
    sample(&b);
    size_t off = 0, e_off = 0;
    uint32_t n = 0;
    struct proto_mp_item map, k, v;
    cr_assert(proto_mp_read(b.data, b.len, &off, &map));
    for (int pair = 0; pair < 3; pair++) { /* to "e" */
        cr_assert(proto_mp_read(b.data, b.len, &off, &k));
        e_off = off;
        cr_assert(proto_mp_read(b.data, b.len, &off, &v));
    }
    cr_assert(peers_wire_key_is(&k, "e"));
    cr_assert_not(peers_wire_array(&v, e_off, 1, &e_off, &n), "more than max elements");
    cr_assert_eq(n, 0, "untouched when refused");
    cr_assert(peers_wire_array(&v, e_off, 2, &e_off, &n));
    cr_assert_eq(n, 2);
    uint64_t x;
    cr_assert(peers_wire_all_read(b.data, b.len, e_off, 2, read_x, &x));
    cr_assert_not(peers_wire_all_read(b.data, b.len, e_off, 3, read_x, &x),
                  "a count the elements do not back");
    cr_assert(peers_wire_all_read(b.data, b.len, 0, 0, read_x, &x), "no array: nothing to read");
    struct proto_mp_item str = {.kind = PROTO_MP_STR};
    cr_assert_not(peers_wire_array(&str, 5, 10, &e_off, &n));
    proto_buf_free(&b);
}

static struct proto_mp_item one(const uint8_t *bytes, size_t len)
{
    struct proto_mp_item it;
    size_t off = 0;
    cr_assert(proto_mp_read(bytes, len, &off, &it));
    return it;
}
#define ONE(...) one((const uint8_t[]){__VA_ARGS__}, sizeof((const uint8_t[]){__VA_ARGS__}))

Test(peers_wire, typed_values_take_their_own_type_only)
{
    uint64_t u = 9;
    double d = 0;
    bool flag = false;
    const char *s = NULL;
    size_t n = 0;
    struct proto_mp_item it = ONE(0x05);
    cr_assert(peers_wire_u64(&it, &u) && u == 5);
    it = ONE(0xcf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff);
    cr_assert(peers_wire_u64(&it, &u) && u == UINT64_MAX);
    it = ONE(0xff); /* -1 */
    cr_assert_not(peers_wire_u64(&it, &u));
    cr_assert(peers_wire_double(&it, &d) && d == -1.0);
    it = ONE(0xcb, 0x3f, 0xf8, 0, 0, 0, 0, 0, 0); /* 1.5 */
    cr_assert(peers_wire_double(&it, &d) && d == 1.5);
    cr_assert_not(peers_wire_u64(&it, &u));
    it = ONE(0xa2, 'h', 'i');
    cr_assert(peers_wire_str(&it, &s, &n) && n == 2 && !memcmp(s, "hi", 2));
    cr_assert(peers_wire_key_is(&it, "hi"));
    cr_assert_not(peers_wire_key_is(&it, "h"));
    cr_assert_not(peers_wire_key_is(&it, "hii"));
    cr_assert_not(peers_wire_u64(&it, &u));
    cr_assert_not(peers_wire_bool(&it, &flag));
    it = ONE(0xc3);
    cr_assert(peers_wire_bool(&it, &flag) && flag);
    cr_assert_not(peers_wire_str(&it, &s, &n));
    it = ONE(0xc4, 0x01, 'x'); /* bin is not a string */
    cr_assert_not(peers_wire_str(&it, &s, &n));
    cr_assert_not(peers_wire_key_is(&it, "x"));
}

Test(peers_wire, a_message_starts_with_its_senders_id_and_replaces_the_buffer)
{
    struct proto_buf b;
    proto_buf_init(&b, 0);
    struct proto_writer w;
    peers_wire_begin(&w, &b, "old", 3);
    proto_w_end(&w);
    peers_wire_begin(&w, &b, "nodeB", 5);
    proto_w_end(&w);
    cr_assert_eq(proto_writer_status(&w), RT_OK);
    struct proto_mp_item map, k, v;
    size_t off = 0;
    cr_assert(proto_mp_read(b.data, b.len, &off, &map) && map.kind == PROTO_MP_MAP && map.n == 1);
    cr_assert(proto_mp_read(b.data, b.len, &off, &k) && peers_wire_key_is(&k, "n"));
    cr_assert(proto_mp_read(b.data, b.len, &off, &v) && v.kind == PROTO_MP_STR && v.n == 5 &&
              !memcmp(v.ptr, "nodeB", 5));
    cr_assert_eq(off, b.len, "nothing of the first message is left");
    proto_buf_free(&b);
}
