/* The ack window, full outboxes, catch-up from history and gaps. */
#include "helpers.h"

#include <criterion/criterion.h>
#include <string.h>

struct env {
    struct tf_sink s;
    struct fo *fo;
};

static void env_init(struct env *e, uint32_t max_unacked, size_t history_max)
{
    struct fo_config cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.max_unacked = max_unacked;
    cfg.history_max = history_max;
    cfg.history_max_age_ms = 60000;
    tf_sink_init(&e->s);
    e->fo = tf_fo(&cfg, &e->s);
}

static void env_free(struct env *e)
{
    tf_sink_free(&e->s);
    fo_destroy(e->fo);
}

static void pub_n(struct fo *fo, const char *ch, int n)
{
    for (int i = 0; i < n; i++)
        cr_assert_eq(tf_pub(fo, ch, NULL, "{}").error, 0);
}

Test(window, full_window_pauses_then_ack_catches_up_in_order)
{
    struct env e;
    env_init(&e, 5, 1000);
    struct fo_client *c = tf_client(e.fo, 1);
    tf_sub(c, "a");
    pub_n(e.fo, "a", 12);
    tf_expect_range(&e.s, 1, "a", 1, 5);
    cr_assert_eq(fo_client_unacked(c), 5);
    fo_client_pump(c); /* nothing: the window is full */
    tf_expect_range(&e.s, 1, "a", 1, 5);
    /* Ack 3: room for 3 more. */
    cr_assert_eq(tf_ack(c, "a", 3), RT_OK);
    tf_expect_range(&e.s, 1, "a", 1, 8);
    cr_assert_eq(fo_client_unacked(c), 5);
    /* Acking an old seq again frees nothing. */
    tf_ack(c, "a", 2);
    tf_expect_range(&e.s, 1, "a", 1, 8);
    tf_ack(c, "a", 8);
    tf_expect_range(&e.s, 1, "a", 1, 12);
    cr_assert_eq(fo_client_unacked(c), 4);
    /* Caught up: live again, one more fits, then pauses again. */
    pub_n(e.fo, "a", 3);
    tf_expect_range(&e.s, 1, "a", 1, 13);
    tf_ack(c, "a", 100);
    tf_expect_range(&e.s, 1, "a", 1, 15);
    cr_assert_eq(fo_client_unacked(c), 2);
    pub_n(e.fo, "a", 1);
    tf_expect_range(&e.s, 1, "a", 1, 16);
    fo_client_destroy(c);
    env_free(&e);
}

Test(window, window_is_per_client_across_channels)
{
    struct env e;
    env_init(&e, 4, 1000);
    struct fo_client *c = tf_client(e.fo, 1);
    tf_sub(c, "a");
    tf_sub(c, "b");
    for (int i = 0; i < 4; i++) {
        tf_pub(e.fo, "a", NULL, "1");
        tf_pub(e.fo, "b", NULL, "1");
    }
    cr_assert_eq(fo_client_unacked(c), 4);
    tf_expect_range(&e.s, 1, "a", 1, 2);
    tf_expect_range(&e.s, 1, "b", 1, 2);
    /* Acking b frees 2: the pump shares them out. */
    tf_ack(c, "b", 2);
    cr_assert_eq(fo_client_unacked(c), 4);
    cr_assert_eq(tf_count(&e.s, 1, NULL), 6);
    tf_ack(c, "a", 100);
    tf_ack(c, "b", 100);
    tf_ack(c, "a", 100);
    tf_ack(c, "b", 100);
    tf_expect_range(&e.s, 1, "a", 1, 4);
    tf_expect_range(&e.s, 1, "b", 1, 4);
    fo_client_destroy(c);
    env_free(&e);
}

Test(window, unsub_frees_window_space_for_other_subs)
{
    struct env e;
    env_init(&e, 2, 1000);
    struct fo_client *c = tf_client(e.fo, 1);
    tf_sub(c, "a");
    tf_sub(c, "b");
    pub_n(e.fo, "a", 2);
    pub_n(e.fo, "b", 2);
    cr_assert_eq(tf_count(&e.s, 1, "b"), 0);
    tf_unsub(c, "a");
    cr_assert_eq(fo_client_unacked(c), 2);
    tf_expect_range(&e.s, 1, "b", 1, 2);
    fo_client_destroy(c);
    env_free(&e);
}

Test(window, ephemeral_messages_ignore_the_window)
{
    static const char *const pats[] = {"eph"};
    struct fo_config cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.ephemeral = pats;
    cfg.n_ephemeral = 1;
    cfg.max_unacked = 1;
    struct env e;
    tf_sink_init(&e.s);
    e.fo = tf_fo(&cfg, &e.s);
    struct fo_client *c = tf_client(e.fo, 1);
    tf_sub(c, "dur");
    tf_sub(c, "eph");
    pub_n(e.fo, "dur", 3);
    pub_n(e.fo, "eph", 3);
    cr_assert_eq(tf_count(&e.s, 1, "dur"), 1);
    cr_assert_eq(tf_count(&e.s, 1, "eph"), 3);
    fo_client_destroy(c);
    env_free(&e);
}

Test(window, full_outbox_pauses_durable_and_pump_catches_up)
{
    struct env e;
    env_init(&e, 1000, 1000);
    struct fo_client *c = tf_client(e.fo, 1), *d = tf_client(e.fo, 2);
    tf_sub(c, "a");
    tf_sub(d, "a");
    pub_n(e.fo, "a", 3);
    e.s.full[1] = true;
    pub_n(e.fo, "a", 4); /* 4..7 refused for c */
    e.s.full[1] = false;
    pub_n(e.fo, "a", 1); /* 8: c is paused, not live: does not get 8 ahead of 4 */
    tf_expect_range(&e.s, 1, "a", 1, 3);
    tf_expect_range(&e.s, 2, "a", 1, 8);
    /* The outbox drains a bit: room for two. */
    e.s.room[1] = 2;
    fo_client_pump(c);
    tf_expect_range(&e.s, 1, "a", 1, 5);
    e.s.room[1] = -1;
    fo_client_pump(c);
    tf_expect_range(&e.s, 1, "a", 1, 8);
    pub_n(e.fo, "a", 2);
    tf_expect_range(&e.s, 1, "a", 1, 10);
    cr_assert_eq(fo_client_unacked(c), 10);
    fo_client_destroy(c);
    fo_client_destroy(d);
    env_free(&e);
}

Test(window, gap_when_history_was_trimmed_while_paused)
{
    struct env e;
    env_init(&e, 1000, 5);
    struct fo_client *c = tf_client(e.fo, 1);
    tf_sub(c, "a");
    pub_n(e.fo, "a", 2);
    e.s.full[1] = true;
    pub_n(e.fo, "a", 10); /* 3..12; history keeps 8..12 */
    e.s.full[1] = false;
    fo_client_pump(c);
    struct tf_event *g[4];
    cr_assert_eq(tf_gaps(&e.s, 1, "a", g, 4), 1);
    cr_assert_eq(g[0]->from, 3);
    cr_assert_eq(g[0]->to, 7);
    uint64_t seqs[32];
    size_t n = tf_seqs(&e.s, 1, "a", seqs, 32);
    cr_assert_eq(n, 2 + 5);
    for (size_t i = 2; i < n; i++)
        cr_assert_eq(seqs[i], 8 + (i - 2));
    /* The gap comes before 8. */
    size_t gap_at = (size_t)(g[0] - e.s.ev);
    cr_assert_eq(e.s.ev[gap_at + 1].seq, 8);
    pub_n(e.fo, "a", 1);
    cr_assert_eq(tf_seqs(&e.s, 1, "a", seqs, 32), 8);
    cr_assert_eq(seqs[7], 13);
    struct fo_stats st;
    fo_get_stats(e.fo, &st);
    cr_assert_eq(st.gaps, 1);
    fo_client_destroy(c);
    env_free(&e);
}

Test(window, gap_refused_by_full_outbox_is_sent_later)
{
    struct env e;
    env_init(&e, 1000, 2);
    struct fo_client *c = tf_client(e.fo, 1);
    tf_sub(c, "a");
    e.s.full[1] = true;
    pub_n(e.fo, "a", 5); /* keeps 4, 5 */
    fo_client_pump(c);
    pub_n(e.fo, "a", 2); /* keeps 6, 7 */
    e.s.full[1] = false;
    fo_client_pump(c);
    struct tf_event *g[4];
    cr_assert_eq(tf_gaps(&e.s, 1, "a", g, 4), 1);
    cr_assert_eq(g[0]->from, 1);
    cr_assert_eq(g[0]->to, 5);
    tf_expect_range(&e.s, 1, "a", 6, 7);
    fo_client_destroy(c);
    env_free(&e);
}

Test(window, window_pause_with_expired_history_gives_gap_to_latest)
{
    struct env e;
    env_init(&e, 2, 1000);
    struct fo_client *c = tf_client(e.fo, 1);
    tf_sub(c, "a");
    pub_n(e.fo, "a", 6); /* 1, 2 delivered; 3..6 wait */
    tf_now += 60000;
    fo_tick(e.fo, tf_now); /* all history expires */
    struct fo_stats st;
    fo_get_stats(e.fo, &st);
    cr_assert_eq(st.history_messages, 0);
    tf_ack(c, "a", 2);
    struct tf_event *g[4];
    cr_assert_eq(tf_gaps(&e.s, 1, "a", g, 4), 1);
    cr_assert_eq(g[0]->from, 3);
    cr_assert_eq(g[0]->to, 6);
    /* Live again after the gap. */
    pub_n(e.fo, "a", 1);
    uint64_t seqs[8];
    cr_assert_eq(tf_seqs(&e.s, 1, "a", seqs, 8), 3);
    cr_assert_eq(seqs[2], 7);
    fo_client_destroy(c);
    env_free(&e);
}

Test(window, resume_replay_respects_window)
{
    struct env e;
    env_init(&e, 3, 1000);
    struct fo_client *c = tf_client(e.fo, 1);
    pub_n(e.fo, "a", 1);
    struct fo_sub_result r0 = tf_sub(c, "a");
    fo_client_destroy(c);
    pub_n(e.fo, "a", 9); /* the history keeps the channel and its epoch */
    c = tf_client(e.fo, 1);
    struct fo_sub_result r = tf_sub_since(c, "a", 0, r0.epoch);
    cr_assert(r.recovered);
    fo_client_pump(c);
    tf_expect_range(&e.s, 1, "a", 1, 3);
    cr_assert_eq(fo_client_unacked(c), 3);
    for (uint64_t k = 3; k <= 12; k += 3)
        tf_ack(c, "a", k);
    tf_expect_range(&e.s, 1, "a", 1, 10);
    fo_client_destroy(c);
    env_free(&e);
}
