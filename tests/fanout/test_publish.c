/* Idempotent publish, dedup window and bound, history bounds. */
#include "helpers.h"

#include <criterion/criterion.h>
#include <string.h>

static const char *const pats[] = {"eph.>"};

static bool contains(const uint8_t *hay, size_t len, const char *needle)
{
    size_t n = strlen(needle);
    for (size_t i = 0; i + n <= len; i++) {
        if (memcmp(hay + i, needle, n) == 0)
            return true;
    }
    return false;
}

static struct fo *make(struct tf_sink *s, uint64_t dedup_ms, size_t dedup_max)
{
    struct fo_config cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.ephemeral = pats;
    cfg.n_ephemeral = 1;
    cfg.dedup_window_ms = dedup_ms;
    cfg.dedup_max_entries = dedup_max;
    cfg.history_max = 100;
    cfg.history_max_age_ms = 10000;
    tf_sink_init(s);
    return tf_fo(&cfg, s);
}

Test(publish, same_msg_id_gets_original_seq_dup_and_is_delivered_once)
{
    struct tf_sink s;
    struct fo *fo = make(&s, 5000, 0);
    struct fo_client *c = tf_client(fo, 1);
    tf_sub(c, "chat");
    struct fo_pub_result a = tf_pub(fo, "chat", "m1", "1");
    struct fo_pub_result b = tf_pub(fo, "chat", "m2", "2");
    struct fo_pub_result a2 = tf_pub(fo, "chat", "m1", "1");
    cr_assert_eq(a.seq, 1);
    cr_assert_not(a.dup);
    cr_assert_eq(b.seq, 2);
    cr_assert_eq(a2.error, 0);
    cr_assert(a2.dup);
    cr_assert(a2.durable);
    cr_assert_eq(a2.seq, 1);
    /* Same msg_id on another channel is another message. */
    cr_assert_not(tf_pub(fo, "other", "m1", "1").dup);
    tf_expect_range(&s, 1, "chat", 1, 2);
    struct fo_stats st;
    fo_get_stats(fo, &st);
    cr_assert_eq(st.dups, 1);
    cr_assert_eq(st.published, 3);
    fo_client_destroy(c);
    tf_sink_free(&s);
    fo_destroy(fo);
}

Test(publish, after_the_dedup_window_it_publishes_anew)
{
    struct tf_sink s;
    struct fo *fo = make(&s, 5000, 0);
    cr_assert_eq(tf_pub(fo, "chat", "m1", "1").seq, 1);
    tf_now += 4999;
    cr_assert(tf_pub(fo, "chat", "m1", "1").dup);
    tf_now += 1;
    /* Expired even without a tick. */
    struct fo_pub_result r = tf_pub(fo, "chat", "m1", "1");
    cr_assert_not(r.dup);
    cr_assert_eq(r.seq, 2);
    /* And through the tick. */
    tf_now += 5000;
    fo_tick(fo, tf_now);
    r = tf_pub(fo, "chat", "m1", "1");
    cr_assert_not(r.dup);
    cr_assert_eq(r.seq, 3);
    tf_sink_free(&s);
    fo_destroy(fo);
}

Test(publish, ephemeral_dedup_has_no_seq)
{
    struct tf_sink s;
    struct fo *fo = make(&s, 5000, 0);
    struct fo_client *c = tf_client(fo, 1);
    tf_sub(c, "eph.typing");
    struct fo_pub_result a = tf_pub(fo, "eph.typing", "x", "1");
    struct fo_pub_result b = tf_pub(fo, "eph.typing", "x", "1");
    cr_assert_not(a.dup);
    cr_assert_not(a.durable);
    cr_assert_eq(a.seq, 0);
    cr_assert(b.dup);
    cr_assert_not(b.durable);
    cr_assert_eq(b.seq, 0);
    cr_assert_eq(tf_count(&s, 1, "eph.typing"), 1);
    /* The dedup entry keeps the channel state; it goes when the entry does. */
    fo_client_destroy(c);
    struct fo_stats st;
    fo_get_stats(fo, &st);
    cr_assert_eq(st.channels, 1);
    tf_now += 5000;
    fo_tick(fo, tf_now);
    fo_get_stats(fo, &st);
    cr_assert_eq(st.channels, 0);
    tf_sink_free(&s);
    fo_destroy(fo);
}

Test(publish, dedup_is_bounded_oldest_evicted_first)
{
    struct tf_sink s;
    struct fo *fo = make(&s, 60000, 3);
    tf_pub(fo, "eph.a", "1", "1");
    tf_pub(fo, "eph.b", "2", "1");
    tf_pub(fo, "eph.c", "3", "1");
    tf_pub(fo, "eph.d", "4", "1"); /* evicts (eph.a, 1) */
    struct fo_stats st;
    fo_get_stats(fo, &st);
    cr_assert_eq(st.channels, 3, "eph.a had nothing but its dedup entry");
    cr_assert_not(tf_pub(fo, "eph.a", "1", "1").dup); /* evicts (eph.b, 2) */
    cr_assert(tf_pub(fo, "eph.c", "3", "1").dup);
    cr_assert_not(tf_pub(fo, "eph.b", "2", "1").dup);
    tf_sink_free(&s);
    fo_destroy(fo);
}

Test(publish, history_is_bounded_by_count)
{
    struct tf_sink s;
    struct fo *fo = make(&s, 0, 0);
    for (int i = 0; i < 250; i++)
        tf_pub(fo, "chat", NULL, "12345");
    struct fo_stats st;
    fo_get_stats(fo, &st);
    cr_assert_eq(st.history_messages, 100);
    cr_assert_gt(st.history_bytes, 100 * 5);
    struct fo_chan *ch = FO__CONTAINER(fo__htab_find(&fo->chans, "chat", 4), struct fo_chan, node);
    struct fo_chan_info info;
    fo->ops->chan_info(fo->eng, ch, &info);
    cr_assert_eq(info.latest, 250);
    cr_assert_eq(info.oldest, 151);
    cr_assert_eq(info.trimmed_through, 150);
    tf_sink_free(&s);
    fo_destroy(fo);
}

Test(publish, history_expires_by_age_with_injected_clock)
{
    struct tf_sink s;
    struct fo *fo = make(&s, 0, 0);
    tf_pub(fo, "chat", NULL, "1"); /* t0 */
    tf_now += 4000;
    tf_pub(fo, "chat", NULL, "2"); /* t0 + 4 s */
    tf_now += 6000;                /* t0 + 10 s: seq 1 is 10 s old */
    fo_tick(fo, tf_now);
    struct fo_stats st;
    fo_get_stats(fo, &st);
    cr_assert_eq(st.history_messages, 1);
    /* A resume from 0 now misses seq 1. */
    struct fo_client *c = tf_client(fo, 1);
    struct fo_chan *ch = FO__CONTAINER(fo__htab_find(&fo->chans, "chat", 4), struct fo_chan, node);
    struct fo_chan_info info;
    fo->ops->chan_info(fo->eng, ch, &info);
    struct fo_sub_result r = tf_sub_since(c, "chat", 0, info.epoch);
    cr_assert_not(r.recovered);
    tf_unsub(c, "chat");
    r = tf_sub_since(c, "chat", 1, info.epoch);
    cr_assert(r.recovered);
    fo_client_pump(c);
    tf_expect_range(&s, 1, "chat", 2, 2);
    fo_client_destroy(c);
    tf_now += 4000;
    fo_tick(fo, tf_now);
    fo_get_stats(fo, &st);
    cr_assert_eq(st.history_messages, 0);
    cr_assert_eq(st.history_bytes, 0);
    cr_assert_eq(st.channels, 0);
    tf_sink_free(&s);
    fo_destroy(fo);
}

Test(publish, binary_payload_is_copied_and_framed)
{
    struct tf_sink s;
    struct fo *fo = make(&s, 0, 0);
    s.build_frames = true;
    s.codec[1] = PROTO_JSON;
    struct fo_client *c = tf_client(fo, 1);
    tf_sub(c, "bin");
    uint8_t bytes[] = {0, 1, 2, 255};
    struct fo_pub_req req = {.channel = "bin",
                             .channel_len = 3,
                             .payload = {PROTO_PAYLOAD_BINARY, bytes, sizeof(bytes)}};
    struct fo_pub_result r;
    cr_assert_eq(fo_publish(fo, &req, &r), RT_OK);
    cr_assert_eq(r.error, 0);
    cr_assert_eq(s.n, 1);
    cr_assert(contains(s.ev[0].frame, s.ev[0].frame_len, "\"data_b64\":\"AAEC/w==\""));
    fo_client_destroy(c);
    tf_sink_free(&s);
    fo_destroy(fo);
}
