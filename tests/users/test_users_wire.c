/*
 * The bus codec of users across the fleet (users/users_wire.c) alone: every
 * kind of message encoded and decoded back, every truncation refused,
 * hostile shapes and values refused, random mutations survived (this suite
 * runs under ASan and UBSan), subjects.
 */
#include "users_wire.h"

#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

static const struct users_wire_conn CONNS[] = {
    {1764283000123ull, "c1a2b3c4d1", 10},
    {0, "c9", 2},
    {UINT64_MAX, "cffffffff123456789abcdef012345", 30},
};
static const char INFO[] = "{\"name\":\"Alice\",\"tags\":[1,2]}";

/* Every message kind, written by the encoders. */
static void encode_all(struct proto_buf out[6])
{
    for (int i = 0; i < 6; i++)
        proto_buf_init(&out[i], 0);
    struct users_wire_writer w;
    users_wire_heartbeat(&out[0], "nodeA", 5, 7, true, false);
    users_wire_ask(&out[1], "node_B-2", 8, 42, "chat.room1", 10);
    users_wire_conns_begin(&w, &out[2], "nodeA", 5, true);
    users_wire_put_user(&w, "alice@example", 13, true, CONNS, 3, 0);
    users_wire_put_user(&w, "bob", 3, false, NULL, 0, 12);
    users_wire_put_user(&w, "carol", 5, true, NULL, 0, 1);
    cr_assert_eq(users_wire_end(&w, true), RT_OK);
    users_wire_delta_begin(&w, &out[3], "nodeA", 5, "chat.room1", 10);
    users_wire_put_member(&w, 9, "alice@example", 13, 2, (const uint8_t *)INFO, strlen(INFO));
    users_wire_put_member(&w, 10, "bob", 3, 0, NULL, 0);
    cr_assert_eq(users_wire_end(&w, false), RT_OK);
    users_wire_answer_begin(&w, &out[4], "nodeB", 5, 42, 77, "chat.room1", 10);
    users_wire_put_member(&w, 77, "anon-c1234", 10, 1, NULL, 0);
    cr_assert_eq(users_wire_end(&w, true), RT_OK);
    users_wire_heartbeat(&out[5], "nodeA", 5, 0, false, true);
}

static void free_all(struct proto_buf out[6])
{
    for (int i = 0; i < 6; i++)
        proto_buf_free(&out[i]);
}

Test(users_wire, every_message_decodes_back_to_what_was_encoded)
{
    struct proto_buf out[6];
    encode_all(out);
    struct users_wire_msg m;
    cr_assert(users_wire_decode(out[0].data, out[0].len, &m));
    cr_assert(m.node_len == 5 && !memcmp(m.node, "nodeA", 5) && m.gen == 7 && m.hello && !m.bye);

    cr_assert(users_wire_decode(out[1].data, out[1].len, &m));
    cr_assert(m.req == 42 && m.channel_len == 10 && !memcmp(m.channel, "chat.room1", 10));

    cr_assert(users_wire_decode(out[2].data, out[2].len, &m));
    cr_assert(m.full_start && m.full_end && m.n_entries == 3);
    struct users_wire_cursor c = {0};
    struct users_wire_entry e;
    cr_assert(users_wire_next_entry(&m, &c, &e));
    cr_assert(e.user_len == 13 && e.has_conns && e.n_conns == 3 && e.pubs == 0);
    struct users_wire_cursor cc = {0};
    struct users_wire_conn conn;
    for (int i = 0; i < 3; i++) {
        cr_assert(users_wire_next_conn(&m, &e, &cc, &conn));
        cr_assert_eq(conn.ts, CONNS[i].ts);
        cr_assert(conn.client_len == CONNS[i].client_len &&
                  !memcmp(conn.client, CONNS[i].client, conn.client_len));
    }
    cr_assert_not(users_wire_next_conn(&m, &e, &cc, &conn));
    cr_assert(users_wire_next_entry(&m, &c, &e));
    cr_assert(e.user_len == 3 && !e.has_conns && e.pubs == 12);
    cr_assert(users_wire_next_entry(&m, &c, &e));
    cr_assert(e.has_conns && e.n_conns == 0 && e.pubs == 1); /* "no connections here" */
    cr_assert_not(users_wire_next_entry(&m, &c, &e));

    cr_assert(users_wire_decode(out[3].data, out[3].len, &m));
    cr_assert(!m.full_start && !m.full_end && m.n_entries == 2);
    c = (struct users_wire_cursor){0};
    cr_assert(users_wire_next_entry(&m, &c, &e));
    cr_assert(e.v == 9 && e.clients == 2 && e.info_len == strlen(INFO) &&
              !memcmp(e.info, INFO, e.info_len));
    cr_assert(users_wire_next_entry(&m, &c, &e));
    cr_assert(e.v == 10 && e.clients == 0 && !e.info);

    cr_assert(users_wire_decode(out[4].data, out[4].len, &m));
    cr_assert(m.req == 42 && m.watermark == 77 && m.end && m.n_entries == 1);

    cr_assert(users_wire_decode(out[5].data, out[5].len, &m));
    cr_assert(m.bye && !m.hello);
    free_all(out);
}

Test(users_wire, every_truncation_is_refused)
{
    struct proto_buf out[6];
    encode_all(out);
    struct users_wire_msg m;
    for (int i = 0; i < 6; i++)
        for (size_t n = 0; n < out[i].len; n++)
            cr_assert_not(users_wire_decode(out[i].data, n, &m), "message %d cut at %zu", i, n);
    free_all(out);
}

Test(users_wire, random_mutations_never_crash_and_decoded_values_stay_in_range)
{
    struct proto_buf out[6];
    encode_all(out);
    uint64_t seed = 0x9e3779b97f4a7c15ull;
    uint8_t buf[1024];
    size_t accepted = 0;
    for (int round = 0; round < 20000; round++) {
        const struct proto_buf *b = &out[round % 6];
        cr_assert_leq(b->len, sizeof(buf));
        memcpy(buf, b->data, b->len);
        for (int k = 0; k < 1 + round % 4; k++) {
            seed = seed * 6364136223846793005ull + 1442695040888963407ull;
            buf[(seed >> 33) % b->len] ^= (uint8_t)(1u << ((seed >> 20) % 8));
        }
        struct users_wire_msg m;
        if (!users_wire_decode(buf, b->len, &m))
            continue;
        accepted++;
        cr_assert(users_wire_node_ok(m.node, m.node_len));
        cr_assert(!m.channel || proto_channel_valid(m.channel, m.channel_len));
        struct users_wire_cursor c = {0};
        struct users_wire_entry e;
        uint32_t n = 0;
        while (users_wire_next_entry(&m, &c, &e)) {
            n++;
            cr_assert(users_wire_user_ok(e.user, e.user_len));
            cr_assert_leq(e.info_len, USERS_WIRE_INFO_MAX);
            struct users_wire_cursor cc = {0};
            struct users_wire_conn conn;
            uint32_t k = 0;
            while (users_wire_next_conn(&m, &e, &cc, &conn)) {
                cr_assert(users_wire_client_ok(conn.client, conn.client_len));
                k++;
            }
            cr_assert_eq(k, e.has_conns ? e.n_conns : 0);
        }
        cr_assert_eq(n, m.n_entries);
    }
    cr_assert_gt(accepted, 0); /* some flips land in values that stay valid */
    free_all(out);
}

/* Builds {"n":"nodeA", <key>: <value written by fn>} by hand. */
static void one_field(struct proto_buf *b, const char *key, void (*fn)(struct proto_writer *))
{
    proto_buf_reset(b);
    struct proto_writer w;
    proto_writer_init(&w, PROTO_MSGPACK, b);
    proto_w_map(&w);
    proto_w_kcstr(&w, "n", "nodeA");
    proto_w_key(&w, key);
    fn(&w);
    proto_w_end(&w);
}

static void bad_channel(struct proto_writer *w)
{
    proto_w_cstr(w, "chat..room");
}
static void neg_gen(struct proto_writer *w)
{
    proto_w_int(w, -1);
}
static void str_hello(struct proto_writer *w)
{
    proto_w_cstr(w, "yes");
}
static void entry_bad_user(struct proto_writer *w)
{
    proto_w_array(w);
    proto_w_map(w);
    proto_w_kcstr(w, "u", "has space");
    proto_w_end(w);
    proto_w_end(w);
}
static void entry_no_user(struct proto_writer *w)
{
    proto_w_array(w);
    proto_w_map(w);
    proto_w_kuint(w, "p", 3);
    proto_w_end(w);
    proto_w_end(w);
}
static void entry_bad_client(struct proto_writer *w)
{
    proto_w_array(w);
    proto_w_map(w);
    proto_w_kcstr(w, "u", "alice");
    proto_w_key(w, "c");
    proto_w_array(w);
    proto_w_array(w);
    proto_w_uint(w, 5);
    proto_w_cstr(w, "c-1"); /* '-' is not in a client id */
    proto_w_end(w);
    proto_w_end(w);
    proto_w_end(w);
    proto_w_end(w);
}
static void entry_conn_triple(struct proto_writer *w)
{
    proto_w_array(w);
    proto_w_map(w);
    proto_w_kcstr(w, "u", "alice");
    proto_w_key(w, "c");
    proto_w_array(w);
    proto_w_array(w);
    proto_w_uint(w, 5);
    proto_w_cstr(w, "c1");
    proto_w_uint(w, 1);
    proto_w_end(w);
    proto_w_end(w);
    proto_w_end(w);
    proto_w_end(w);
}
static void entry_big_info(struct proto_writer *w)
{
    static char big[USERS_WIRE_INFO_MAX + 2];
    memset(big, 'a', sizeof(big) - 1);
    proto_w_array(w);
    proto_w_map(w);
    proto_w_kcstr(w, "u", "alice");
    proto_w_kcstr(w, "i", big);
    proto_w_end(w);
    proto_w_end(w);
}
static void entry_huge_clients(struct proto_writer *w)
{
    proto_w_array(w);
    proto_w_map(w);
    proto_w_kcstr(w, "u", "alice");
    proto_w_kuint(w, "k", (uint64_t)UINT32_MAX + 1);
    proto_w_end(w);
    proto_w_end(w);
}

Test(users_wire, hostile_fields_refuse_the_whole_message)
{
    struct {
        const char *key;
        void (*fn)(struct proto_writer *);
    } cases[] = {
        {"ch", bad_channel},      {"g", neg_gen},        {"hello", str_hello},
        {"e", entry_bad_user},    {"e", entry_no_user},  {"e", entry_bad_client},
        {"e", entry_conn_triple}, {"e", entry_big_info}, {"e", entry_huge_clients},
    };
    struct proto_buf b;
    proto_buf_init(&b, 0);
    struct users_wire_msg m;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        one_field(&b, cases[i].key, cases[i].fn);
        cr_assert_not(users_wire_decode(b.data, b.len, &m), "case %zu accepted", i);
    }
    /* The node id is checked too; unknown keys are skipped. */
    proto_buf_reset(&b);
    struct proto_writer w;
    proto_writer_init(&w, PROTO_MSGPACK, &b);
    proto_w_map(&w);
    proto_w_kcstr(&w, "n", "bad node");
    proto_w_end(&w);
    cr_assert_not(users_wire_decode(b.data, b.len, &m));
    proto_buf_reset(&b);
    proto_writer_init(&w, PROTO_MSGPACK, &b);
    proto_w_map(&w);
    proto_w_kcstr(&w, "n", "nodeA");
    proto_w_kcstr(&w, "future", "x");
    proto_w_end(&w);
    cr_assert(users_wire_decode(b.data, b.len, &m));
    /* Too many connections in one entry. */
    proto_buf_reset(&b);
    proto_writer_init(&w, PROTO_MSGPACK, &b);
    proto_w_map(&w);
    proto_w_kcstr(&w, "n", "nodeA");
    proto_w_key(&w, "e");
    proto_w_array(&w);
    proto_w_map(&w);
    proto_w_kcstr(&w, "u", "alice");
    proto_w_key(&w, "c");
    proto_w_array(&w);
    for (int i = 0; i < USERS_WIRE_CONNS_MAX + 1; i++) {
        proto_w_array(&w);
        proto_w_uint(&w, 1);
        proto_w_cstr(&w, "c1");
        proto_w_end(&w);
    }
    proto_w_end(&w);
    proto_w_end(&w);
    proto_w_end(&w);
    proto_w_end(&w);
    cr_assert_eq(proto_writer_status(&w), RT_OK);
    cr_assert_not(users_wire_decode(b.data, b.len, &m));
    proto_buf_free(&b);
}

Test(users_wire, subjects)
{
    const char *ch;
    size_t len;
    cr_assert_eq(users_wire_kind_of("rtgate.users.hb", &ch, &len), USERS_WIRE_HEARTBEAT);
    cr_assert_eq(users_wire_kind_of("rtgate.users.c", &ch, &len), USERS_WIRE_CONNS);
    cr_assert_eq(users_wire_kind_of("rtgate.users.s", &ch, &len), USERS_WIRE_ASK);
    cr_assert_eq(users_wire_kind_of("rtgate.users.s.nodeA", &ch, &len), USERS_WIRE_ASK);
    cr_assert_eq(users_wire_kind_of("rtgate.users.sx", &ch, &len), USERS_WIRE_OTHER);
    cr_assert_eq(users_wire_kind_of("rtgate.users.r.nodeA", &ch, &len), USERS_WIRE_ANSWER);
    cr_assert_eq(users_wire_kind_of("rtgate.users.p.chat.room-1", &ch, &len), USERS_WIRE_PRESENCE);
    cr_assert(len == 11 && !memcmp(ch, "chat.room-1", 11));
    cr_assert_eq(users_wire_kind_of("rtgate.users.p.bad..ch", &ch, &len), USERS_WIRE_PRESENCE);
    cr_assert_null(ch);
    cr_assert_eq(users_wire_kind_of("rtgate.geo.hb", &ch, &len), USERS_WIRE_OTHER);
    char buf[USERS_WIRE_SUBJECT_MAX];
    users_wire_presence_subject(buf, sizeof(buf), "a.b", 3);
    cr_assert_str_eq(buf, "rtgate.users.p.a.b");
    cr_assert(users_wire_user_ok("a|b@c.d/e~f", 11));
    cr_assert_not(users_wire_user_ok("", 0));
    cr_assert_not(users_wire_client_ok("c_1", 3));
}
