/* Subscribe with since / epoch (PROTOCOL.md section 3). */
#include "helpers.h"

#include <criterion/criterion.h>
#include <string.h>

struct env {
    struct tf_sink s;
    struct fo *fo;
};

static void env_init(struct env *e, const struct fo_config *cfg)
{
    tf_sink_init(&e->s);
    e->fo = tf_fo(cfg, &e->s);
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

Test(resume, reply_carries_latest_seq_and_epoch)
{
    struct env e;
    env_init(&e, NULL);
    struct fo_client *a = tf_client(e.fo, 1);
    struct fo_sub_result r = tf_sub(a, "chat");
    cr_assert_eq(r.seq, 0);
    char epoch[PROTO_EPOCH_MAX + 1];
    strcpy(epoch, r.epoch);
    pub_n(e.fo, "chat", 5);
    struct fo_client *b = tf_client(e.fo, 2);
    r = tf_sub(b, "chat");
    cr_assert_eq(r.seq, 5);
    cr_assert_str_eq(r.epoch, epoch, "same incarnation, same epoch");
    cr_assert_not(r.has_recovered);
    /* Without since: live from now, nothing replayed. */
    fo_client_pump(b);
    cr_assert_eq(tf_count(&e.s, 2, "chat"), 0);
    pub_n(e.fo, "chat", 1);
    tf_expect_range(&e.s, 2, "chat", 6, 6);
    fo_client_destroy(a);
    fo_client_destroy(b);
    env_free(&e);
}

Test(resume, since_replays_exact_set_then_live_without_dup)
{
    struct env e;
    env_init(&e, NULL);
    struct fo_client *a = tf_client(e.fo, 1);
    struct fo_sub_result r = tf_sub(a, "chat");
    char epoch[PROTO_EPOCH_MAX + 1];
    strcpy(epoch, r.epoch);
    pub_n(e.fo, "chat", 10);
    tf_expect_range(&e.s, 1, "chat", 1, 10);
    /* Client 1 has seen 1..7 (say 8..10 were lost with the socket). */
    fo_client_destroy(a);
    pub_n(e.fo, "chat", 5); /* 11..15 while disconnected */
    tf_sink_free(&e.s);
    tf_sink_init(&e.s);
    a = tf_client(e.fo, 1);
    r = tf_sub_since(a, "chat", 7, epoch);
    cr_assert_eq(r.error, 0);
    cr_assert(r.has_recovered);
    cr_assert(r.recovered);
    cr_assert_eq(r.seq, 15);
    cr_assert_eq(tf_count(&e.s, 1, "chat"), 0, "subscribe itself delivers nothing");
    /* A publish between the reply and the pump lands in order too. */
    pub_n(e.fo, "chat", 1);
    fo_client_pump(a);
    pub_n(e.fo, "chat", 2);
    tf_expect_range(&e.s, 1, "chat", 8, 18);
    fo_client_destroy(a);
    env_free(&e);
}

Test(resume, since_equal_to_latest_is_recovered_and_live)
{
    struct env e;
    env_init(&e, NULL);
    pub_n(e.fo, "chat", 3);
    struct fo_client *a = tf_client(e.fo, 1);
    struct fo_sub_result r0 = tf_sub(a, "chat");
    tf_unsub(a, "chat");
    struct fo_sub_result r = tf_sub_since(a, "chat", 3, r0.epoch);
    cr_assert(r.recovered);
    pub_n(e.fo, "chat", 1);
    tf_expect_range(&e.s, 1, "chat", 4, 4);
    fo_client_destroy(a);
    env_free(&e);
}

Test(resume, stale_or_missing_epoch_is_not_recovered_and_replays_nothing)
{
    struct env e;
    env_init(&e, NULL);
    pub_n(e.fo, "chat", 5);
    struct fo_client *a = tf_client(e.fo, 1);
    struct fo_sub_result r = tf_sub_since(a, "chat", 2, "oldepoch");
    cr_assert_eq(r.error, 0);
    cr_assert(r.has_recovered);
    cr_assert_not(r.recovered);
    cr_assert_eq(r.seq, 5);
    fo_client_pump(a);
    cr_assert_eq(tf_count(&e.s, 1, "chat"), 0);
    pub_n(e.fo, "chat", 1);
    tf_expect_range(&e.s, 1, "chat", 6, 6);
    tf_unsub(a, "chat");
    /* Missing epoch, and a since above latest: still recovered:false, not 400
     * (the numbering is unknown, so since cannot be judged). */
    r = tf_sub_since(a, "chat", 100, NULL);
    cr_assert_eq(r.error, 0);
    cr_assert_not(r.recovered);
    fo_client_destroy(a);
    env_free(&e);
}

Test(resume, since_above_latest_in_same_epoch_is_400_and_subscribes_nothing)
{
    struct env e;
    env_init(&e, NULL);
    pub_n(e.fo, "chat", 5);
    struct fo_client *a = tf_client(e.fo, 1);
    struct fo_sub_result r0 = tf_sub(a, "chat");
    tf_unsub(a, "chat");
    struct fo_sub_result r = tf_sub_since(a, "chat", 6, r0.epoch);
    cr_assert_eq(r.error, 400);
    struct fo_stats st;
    fo_get_stats(e.fo, &st);
    cr_assert_eq(st.subscriptions, 0);
    pub_n(e.fo, "chat", 1);
    cr_assert_eq(tf_count(&e.s, 1, "chat"), 0);
    /* Not subscribed, so a proper sub works. */
    cr_assert_eq(tf_sub(a, "chat").error, 0);
    fo_client_destroy(a);
    env_free(&e);
}

Test(resume, since_on_ephemeral_is_400)
{
    static const char *const pats[] = {"eph.>"};
    struct fo_config cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.ephemeral = pats;
    cfg.n_ephemeral = 1;
    struct env e;
    env_init(&e, &cfg);
    struct fo_client *a = tf_client(e.fo, 1);
    struct fo_sub_result r = tf_sub_since(a, "eph.x", 0, NULL);
    cr_assert_eq(r.error, 400);
    struct fo_stats st;
    fo_get_stats(e.fo, &st);
    cr_assert_eq(st.subscriptions, 0);
    cr_assert_eq(st.channels, 0);
    fo_client_destroy(a);
    env_free(&e);
}

Test(resume, since_older_than_history_is_not_recovered)
{
    struct fo_config cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.history_max = 10;
    struct env e;
    env_init(&e, &cfg);
    struct fo_client *a = tf_client(e.fo, 1);
    pub_n(e.fo, "chat", 30); /* retains 21..30 */
    struct fo_sub_result r0 = tf_sub(a, "chat");
    tf_unsub(a, "chat");
    struct fo_sub_result r = tf_sub_since(a, "chat", 19, r0.epoch);
    cr_assert_eq(r.error, 0);
    cr_assert_not(r.recovered, "20 is gone");
    fo_client_pump(a);
    cr_assert_eq(tf_count(&e.s, 1, "chat"), 0);
    pub_n(e.fo, "chat", 1);
    tf_expect_range(&e.s, 1, "chat", 31, 31);
    tf_unsub(a, "chat");
    /* since 21 (latest 31, retained 22..31): complete. */
    r = tf_sub_since(a, "chat", 21, r0.epoch);
    cr_assert(r.recovered);
    fo_client_pump(a);
    cr_assert_eq(tf_count(&e.s, 1, "chat"), 1 + 10);
    fo_client_destroy(a);
    env_free(&e);
}

Test(resume, a_freed_empty_channel_comes_back_in_the_same_epoch)
{
    /* The channel's state goes with the last sub (no history, no dedup), but
     * a client that saw it empty resumes exactly: nothing was lost. */
    struct env e;
    env_init(&e, NULL);
    struct fo_client *a = tf_client(e.fo, 1);
    struct fo_sub_result r0 = tf_sub(a, "chat");
    tf_unsub(a, "chat");
    struct fo_stats st;
    fo_get_stats(e.fo, &st);
    cr_assert_eq(st.channels, 0, "state freed");
    pub_n(e.fo, "chat", 2);
    struct fo_sub_result r = tf_sub_since(a, "chat", 0, r0.epoch);
    cr_assert(r.recovered);
    cr_assert_str_eq(r.epoch, r0.epoch);
    fo_client_pump(a);
    cr_assert_eq(tf_count(&e.s, 1, "chat"), 2, "both messages replayed");
    fo_client_destroy(a);
    env_free(&e);
}

/* History aged out and nobody subscribed: the state goes, the numbering stays. */
static struct fo_sub_result age_out_and_resume(struct env *e, struct fo_sub_result *r0)
{
    struct fo_client *a = tf_client(e->fo, 1);
    *r0 = tf_sub(a, "chat");
    pub_n(e->fo, "chat", 3);
    fo_client_destroy(a);
    tf_now += 1000;
    fo_tick(e->fo, tf_now);
    struct fo_stats st;
    fo_get_stats(e->fo, &st);
    cr_assert_eq(st.channels, 0, "state freed");
    a = tf_client(e->fo, 1);
    struct fo_sub_result r = tf_sub_since(a, "chat", 3, r0->epoch);
    fo_client_destroy(a);
    return r;
}

Test(resume, a_freed_channel_goes_on_numbering_in_its_epoch)
{
    struct fo_config cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.history_max_age_ms = 1000;
    struct env e;
    env_init(&e, &cfg);
    struct fo_sub_result r0, r = age_out_and_resume(&e, &r0);
    cr_assert_eq(r.error, 0);
    cr_assert(r.recovered, "the client had everything up to 3");
    cr_assert_str_eq(r.epoch, r0.epoch);
    cr_assert_eq(r.seq, 3);
    cr_assert_eq(tf_pub(e.fo, "chat", NULL, "4").seq, 4);
    env_free(&e);
}

Test(resume, a_channel_dropped_from_the_closed_table_starts_a_new_epoch)
{
    struct fo_config cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.history_max_age_ms = 1000;
    cfg.max_closed_channels = 1;
    struct env e;
    env_init(&e, &cfg);
    struct fo_sub_result r0;
    age_out_and_resume(&e, &r0); /* "chat" is remembered ... */
    /* ... until another closed channel takes its place. */
    struct fo_client *b = tf_client(e.fo, 2);
    tf_sub(b, "other");
    pub_n(e.fo, "other", 1);
    fo_client_destroy(b);
    tf_now += 1000;
    fo_tick(e.fo, tf_now);
    tf_now += 1000;
    fo_tick(e.fo, tf_now);
    struct fo_client *a = tf_client(e.fo, 1);
    struct fo_sub_result r = tf_sub_since(a, "chat", 3, r0.epoch);
    cr_assert_eq(r.error, 0, "stale epoch is not a 400");
    cr_assert_not(r.recovered);
    cr_assert_str_neq(r.epoch, r0.epoch);
    cr_assert_eq(r.seq, 0);
    cr_assert_eq(tf_pub(e.fo, "chat", NULL, "1").seq, 1);
    /* A brand-new channel now cannot be told from a forgotten one: new epoch too. */
    struct fo_sub_result n = tf_sub(a, "fresh");
    cr_assert_str_neq(n.epoch, r0.epoch);
    fo_client_destroy(a);
    env_free(&e);
}
