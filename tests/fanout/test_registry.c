/* Subscriptions, fan-out and the registry's limits. */
#include "helpers.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const ephemeral_patterns[] = {"typing.>", "cursor.*"};

static struct fo_config cfg_with_ephemeral(void)
{
    struct fo_config cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.ephemeral = ephemeral_patterns;
    cfg.n_ephemeral = 2;
    return cfg;
}

Test(registry, fanout_to_100_clients_each_gets_every_message_once_in_order)
{
    struct tf_sink s;
    tf_sink_init(&s);
    s.build_frames = true; /* every client JSON */
    struct fo *fo = tf_fo(NULL, &s);
    struct fo_client *c[100];
    for (uint64_t i = 0; i < 100; i++) {
        c[i] = tf_client(fo, i);
        cr_assert_eq(tf_sub(c[i], "chat.room1").error, 0);
    }
    for (int k = 1; k <= 20; k++) {
        struct fo_pub_result r = tf_pub(fo, "chat.room1", NULL, "{\"k\":1}");
        cr_assert_eq(r.error, 0);
        cr_assert(r.durable);
        cr_assert_eq(r.seq, (uint64_t)k);
    }
    for (uint64_t i = 0; i < 100; i++)
        tf_expect_range(&s, i, "chat.room1", 1, 20);
    /* One encoding per message: every client got the same frame bytes. */
    for (size_t k = 0; k < s.n; k++) {
        const struct tf_event *first = &s.ev[(s.ev[k].seq - 1) * 100]; /* in dispatch order */
        cr_assert_eq(first->seq, s.ev[k].seq);
        cr_assert_eq(s.ev[k].frame, first->frame);
    }
    struct fo_stats st;
    fo_get_stats(fo, &st);
    cr_assert_eq(st.deliveries, 2000);
    cr_assert_eq(st.published, 20);
    cr_assert_eq(st.subscriptions, 100);
    cr_assert_eq(st.channels, 1);
    for (int i = 0; i < 100; i++)
        fo_client_destroy(c[i]);
    tf_sink_free(&s);
    fo_destroy(fo);
}

Test(registry, frame_is_encoded_once_per_codec_and_shared)
{
    struct tf_sink s;
    tf_sink_init(&s);
    s.build_frames = true;
    struct fo_config cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.frame_headroom = 16;
    struct fo *fo = tf_fo(&cfg, &s);
    struct fo_client *c[10];
    for (uint64_t i = 0; i < 10; i++) {
        s.codec[i] = i % 2 ? PROTO_MSGPACK : PROTO_JSON;
        c[i] = tf_client(fo, i);
        tf_sub(c[i], "news");
    }
    tf_pub(fo, "news", "m-1", "{\"text\":\"hi\"}");
    cr_assert_eq(s.n, 10);
    struct fo_msg *m = s.ev[0].msg;
    for (size_t i = 0; i < s.n; i++) {
        cr_assert_eq(s.ev[i].msg, m, "one shared message");
        enum proto_codec k = s.codec[s.ev[i].conn];
        cr_assert_eq(s.ev[i].frame, m->frames[k].alloc + 16, "cached frame reused");
    }
    cr_assert_neq(m->frames[PROTO_JSON].alloc, m->frames[PROTO_MSGPACK].alloc);
    /* The JSON frame says what PROTOCOL.md says a msg says. */
    const char *json = (const char *)m->frames[PROTO_JSON].alloc + 16;
    size_t len = m->frames[PROTO_JSON].len;
    char *text = strndup(json, len);
    cr_assert(strstr(text, "\"type\":\"msg\""), "%s", text);
    cr_assert(strstr(text, "\"channel\":\"news\""), "%s", text);
    cr_assert(strstr(text, "\"seq\":1"), "%s", text);
    cr_assert(strstr(text, "\"msg_id\":\"m-1\""), "%s", text);
    cr_assert(strstr(text, "\"ts\":1000000"), "%s", text);
    free(text);
    for (int i = 0; i < 10; i++)
        fo_client_destroy(c[i]);
    tf_sink_free(&s);
    fo_destroy(fo);
}

Test(registry, message_owns_copies_of_its_bytes)
{
    char channel[] = "chan.a";
    char id[] = "id-1";
    char data[] = "[1,2,3]";
    struct proto_payload p = {PROTO_PAYLOAD_JSON, (const uint8_t *)data, strlen(data), false};
    struct fo_msg *m = fo__msg_create(channel, 6, id, 4, &p, true, 7, 42, 0);
    cr_assert_not_null(m);
    memset(channel, 'x', 6);
    memset(id, 'y', 4);
    memset(data, 'z', 7);
    cr_assert_str_eq(m->channel, "chan.a");
    cr_assert_str_eq(m->msg_id, "id-1");
    cr_assert_eq(memcmp(m->payload.ptr, "[1,2,3]", 7), 0);
    cr_assert_eq(fo_msg_retain(m), m);
    cr_assert_eq(m->refs, 2);
    fo_msg_release(m);
    fo_msg_release(m);
    fo_msg_release(NULL);
}

Test(registry, unsubscribe_stops_delivery)
{
    struct tf_sink s;
    tf_sink_init(&s);
    struct fo *fo = tf_fo(NULL, &s);
    struct fo_client *a = tf_client(fo, 1), *b = tf_client(fo, 2);
    tf_sub(a, "c");
    tf_sub(b, "c");
    tf_pub(fo, "c", NULL, "1");
    cr_assert_eq(tf_unsub(a, "c"), RT_OK);
    cr_assert_eq(tf_unsub(a, "c"), RT_NOT_FOUND);
    tf_pub(fo, "c", NULL, "2");
    tf_expect_range(&s, 1, "c", 1, 1);
    tf_expect_range(&s, 2, "c", 1, 2);
    fo_client_destroy(a);
    fo_client_destroy(b);
    tf_sink_free(&s);
    fo_destroy(fo);
}

Test(registry, ephemeral_or_durable_by_pattern)
{
    struct tf_sink s;
    tf_sink_init(&s);
    struct fo_config cfg = cfg_with_ephemeral();
    struct fo *fo = tf_fo(&cfg, &s);
    cr_assert_not(fo_channel_durable(fo, "typing.room1.u1", 15));
    cr_assert_not(fo_channel_durable(fo, "cursor.x", 8));
    cr_assert(fo_channel_durable(fo, "cursor.x.y", 10));
    cr_assert(fo_channel_durable(fo, "chat.room1", 10));
    struct fo_client *c = tf_client(fo, 1);
    struct fo_sub_result r = tf_sub(c, "typing.room1");
    cr_assert_eq(r.error, 0);
    cr_assert_not(r.durable);
    cr_assert_eq(r.seq, 0);
    cr_assert_eq(r.epoch[0], '\0');
    cr_assert_not(r.has_recovered);
    r = tf_sub(c, "chat.room1");
    cr_assert(r.durable);
    cr_assert_eq(strlen(r.epoch), 8);
    for (const char *p = r.epoch; *p; p++)
        cr_assert((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9'), "epoch %s", r.epoch);
    struct fo_pub_result p = tf_pub(fo, "typing.room1", NULL, "true");
    cr_assert_not(p.durable);
    cr_assert_eq(p.seq, 0);
    tf_pub(fo, "typing.room1", NULL, "false");
    cr_assert_eq(tf_count(&s, 1, "typing.room1"), 2);
    cr_assert_eq(s.ev[0].seq, 0);
    cr_assert_not(s.ev[0].msg->durable);
    /* Ephemeral: no window, no ack. */
    cr_assert_eq(fo_client_unacked(c), 0);
    cr_assert_eq(tf_ack(c, "typing.room1", 1), RT_NOT_FOUND);
    /* No history: a channel with no subs and nothing else is freed. */
    tf_unsub(c, "typing.room1");
    struct fo_stats st;
    fo_get_stats(fo, &st);
    cr_assert_eq(st.channels, 1);
    fo_client_destroy(c);
    tf_sink_free(&s);
    fo_destroy(fo);
}

Test(registry, ephemeral_full_outbox_drops_and_counts)
{
    struct tf_sink s;
    tf_sink_init(&s);
    struct fo_config cfg = cfg_with_ephemeral();
    struct fo *fo = tf_fo(&cfg, &s);
    struct fo_client *c = tf_client(fo, 1);
    tf_sub(c, "typing.a");
    s.full[1] = true;
    tf_pub(fo, "typing.a", NULL, "1");
    tf_pub(fo, "typing.a", NULL, "2");
    s.full[1] = false;
    fo_client_pump(c);
    tf_pub(fo, "typing.a", NULL, "3");
    cr_assert_eq(tf_count(&s, 1, "typing.a"), 1);
    cr_assert_eq(memcmp(s.ev[0].msg->payload.ptr, "3", 1), 0);
    struct fo_stats st;
    fo_get_stats(fo, &st);
    cr_assert_eq(st.drops, 2);
    fo_client_destroy(c);
    tf_sink_free(&s);
    fo_destroy(fo);
}

Test(registry, seq_is_strictly_increasing_per_channel)
{
    struct tf_sink s;
    tf_sink_init(&s);
    struct fo *fo = tf_fo(NULL, &s);
    uint64_t last_a = 0, last_b = 0;
    for (int i = 0; i < 50; i++) {
        struct fo_pub_result a = tf_pub(fo, "a", NULL, "0");
        struct fo_pub_result b = tf_pub(fo, "b", NULL, "0");
        cr_assert_gt(a.seq, last_a);
        cr_assert_gt(b.seq, last_b);
        last_a = a.seq;
        last_b = b.seq;
    }
    cr_assert_eq(last_a, 50);
    tf_sink_free(&s);
    fo_destroy(fo);
}

Test(registry, second_sub_is_409)
{
    struct tf_sink s;
    tf_sink_init(&s);
    struct fo *fo = tf_fo(NULL, &s);
    struct fo_client *c = tf_client(fo, 1);
    cr_assert_eq(tf_sub(c, "a").error, 0);
    struct fo_sub_result r = tf_sub(c, "a");
    cr_assert_eq(r.error, 409);
    cr_assert_not_null(r.error_message);
    /* Another client may. */
    struct fo_client *d = tf_client(fo, 2);
    cr_assert_eq(tf_sub(d, "a").error, 0);
    /* After unsub, again. */
    tf_unsub(c, "a");
    cr_assert_eq(tf_sub(c, "a").error, 0);
    fo_client_destroy(c);
    fo_client_destroy(d);
    tf_sink_free(&s);
    fo_destroy(fo);
}

Test(registry, max_subs_is_403)
{
    struct tf_sink s;
    tf_sink_init(&s);
    struct fo_config cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.max_subs = 3;
    struct fo *fo = tf_fo(&cfg, &s);
    struct fo_client *c = tf_client(fo, 1);
    cr_assert_eq(tf_sub(c, "a").error, 0);
    cr_assert_eq(tf_sub(c, "b").error, 0);
    cr_assert_eq(tf_sub(c, "c").error, 0);
    cr_assert_eq(tf_sub(c, "d").error, 403);
    cr_assert_eq(tf_sub(c, "a").error, 409, "409 is checked before the count");
    tf_unsub(c, "b");
    cr_assert_eq(tf_sub(c, "d").error, 0);
    struct fo_stats st;
    fo_get_stats(fo, &st);
    cr_assert_eq(st.subscriptions, 3);
    fo_client_destroy(c);
    tf_sink_free(&s);
    fo_destroy(fo);
}

Test(registry, max_channels_is_503_with_retry_after)
{
    struct tf_sink s;
    tf_sink_init(&s);
    struct fo_config cfg = cfg_with_ephemeral();
    cfg.max_channels = 2;
    struct fo *fo = tf_fo(&cfg, &s);
    struct fo_client *c = tf_client(fo, 1);
    cr_assert_eq(tf_sub(c, "a").error, 0);
    cr_assert_eq(tf_pub(fo, "b", NULL, "1").error, 0); /* durable: b keeps history */
    struct fo_sub_result r = tf_sub(c, "c");
    cr_assert_eq(r.error, 503);
    cr_assert_eq(r.retry_after_ms, 1000);
    struct fo_pub_result p = tf_pub(fo, "typing.x", NULL, "1");
    cr_assert_eq(p.error, 503);
    cr_assert_eq(p.retry_after_ms, 1000);
    /* Existing channels still work. */
    cr_assert_eq(tf_pub(fo, "a", NULL, "1").error, 0);
    cr_assert_eq(tf_pub(fo, "b", NULL, "1").error, 0);
    struct fo_stats st;
    fo_get_stats(fo, &st);
    cr_assert_eq(st.channels, 2);
    /* a has history too; once it expires and c leaves, room comes back. */
    tf_unsub(c, "a");
    tf_now += 3600000;
    fo_tick(fo, tf_now);
    fo_get_stats(fo, &st);
    cr_assert_eq(st.channels, 0);
    cr_assert_eq(st.history_messages, 0);
    cr_assert_eq(tf_sub(c, "c").error, 0);
    fo_client_destroy(c);
    tf_sink_free(&s);
    fo_destroy(fo);
}

Test(registry, ephemeral_publish_without_subscribers_keeps_no_channel)
{
    struct tf_sink s;
    tf_sink_init(&s);
    struct fo_config cfg = cfg_with_ephemeral();
    cfg.max_channels = 1;
    struct fo *fo = tf_fo(&cfg, &s);
    for (int i = 0; i < 10; i++) {
        char ch[32];
        snprintf(ch, sizeof(ch), "typing.%d", i);
        cr_assert_eq(tf_pub(fo, ch, NULL, "1").error, 0);
    }
    struct fo_stats st;
    fo_get_stats(fo, &st);
    cr_assert_eq(st.channels, 0);
    tf_sink_free(&s);
    fo_destroy(fo);
}

Test(registry, publisher_gets_its_own_message)
{
    struct tf_sink s;
    tf_sink_init(&s);
    struct fo *fo = tf_fo(NULL, &s);
    struct fo_client *c = tf_client(fo, 7);
    tf_sub(c, "me");
    struct fo_pub_req req = {.channel = "me",
                             .channel_len = 2,
                             .payload = {PROTO_PAYLOAD_JSON, (const uint8_t *)"1", 1},
                             .conn_id = 7,
                             .req_id = 4};
    struct fo_pub_result r;
    cr_assert_eq(fo_publish(fo, &req, &r), RT_OK);
    tf_expect_range(&s, 7, "me", 1, 1);
    fo_client_destroy(c);
    tf_sink_free(&s);
    fo_destroy(fo);
}

Test(registry, bad_requests_are_400)
{
    struct tf_sink s;
    tf_sink_init(&s);
    struct fo *fo = tf_fo(NULL, &s);
    struct fo_client *c = tf_client(fo, 1);
    struct fo_sub_req req = {.channel = "", .channel_len = 0};
    struct fo_sub_result r;
    cr_assert_eq(fo_subscribe(c, &req, &r), RT_OK);
    cr_assert_eq(r.error, 400);
    struct fo_sub_req bad_epoch = {.channel = "a",
                                   .channel_len = 1,
                                   .has_since = true,
                                   .since = 0,
                                   .epoch = "",
                                   .epoch_len = 0};
    cr_assert_eq(fo_subscribe(c, &bad_epoch, &r), RT_OK);
    cr_assert_eq(r.error, 400);
    char long_id[80];
    memset(long_id, 'x', sizeof(long_id) - 1);
    long_id[79] = '\0';
    cr_assert_eq(tf_pub(fo, "a", long_id, "1").error, 400);
    fo_client_destroy(c);
    tf_sink_free(&s);
    fo_destroy(fo);
}

Test(registry, create_refuses_unknown_engine_and_bad_patterns)
{
    struct tf_sink s;
    tf_sink_init(&s);
    struct fo_sink sink = tf_sink_ops(&s);
    struct fo *fo = NULL;
    struct fo_config cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.engine = "carrier-pigeon";
    cr_assert_eq(fo_create(&cfg, &sink, &fo), RT_INVAL);
    cr_assert_null(fo);
    static const char *const bad[] = {"ok.*", "a..b"};
    memset(&cfg, 0, sizeof(cfg));
    cfg.ephemeral = bad;
    cfg.n_ephemeral = 2;
    cr_assert_eq(fo_create(&cfg, &sink, &fo), RT_INVAL);
    fo_destroy(NULL);
    fo_client_destroy(NULL);
}

Test(registry, client_destroy_with_pending_state_frees_everything)
{
    struct tf_sink s;
    tf_sink_init(&s);
    struct fo_config cfg = cfg_with_ephemeral();
    cfg.max_unacked = 4;
    struct fo *fo = tf_fo(&cfg, &s);
    struct fo_client *c = tf_client(fo, 1);
    struct fo_client *d = tf_client(fo, 2);
    tf_sub(c, "a");
    tf_sub(c, "b");
    tf_sub(c, "typing.x");
    tf_sub(d, "a");
    for (int i = 0; i < 10; i++) {
        tf_pub(fo, "a", NULL, "1");
        tf_pub(fo, "b", "id", "1");
        tf_pub(fo, "typing.x", NULL, "1");
    }
    cr_assert_eq(fo_client_unacked(c), 4);
    s.full[2] = true;
    tf_pub(fo, "a", NULL, "1");
    fo_client_destroy(c);
    struct fo_stats st;
    fo_get_stats(fo, &st);
    cr_assert_eq(st.subscriptions, 1);
    fo_client_destroy(d);
    fo_get_stats(fo, &st);
    cr_assert_eq(st.subscriptions, 0);
    tf_sink_free(&s);
    fo_destroy(fo); /* history and dedup entries still held: freed here */
}
