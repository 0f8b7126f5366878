/*
 * Subscribes that wait for the engine (fanout/subscribe.c). The stand-in
 * engine is the memory engine whose sub_prepare answers RT_AGAIN and hands
 * the operation to the test, which then plays the engine's fo__sub_ready:
 * what the nats engine does after its round trips to NATS.
 */
#include "helpers.h"

#include <criterion/criterion.h>
#include <string.h>

static struct {
    struct fo_engine_ops ops;
    bool defer;       /* sub_prepare answers RT_AGAIN */
    rt_status answer; /* otherwise this */
    uint64_t waiting[64];
    size_t n_waiting;
    int interest; /* interest_add minus interest_remove */
    int interest_adds;
} stand;

static rt_status stand_prepare(void *eng, struct fo_chan *ch, const struct fo_sub_req *req,
                               uint64_t op)
{
    (void)eng;
    (void)ch;
    (void)req;
    if (!stand.defer)
        return stand.answer;
    cr_assert_lt(stand.n_waiting, 64);
    stand.waiting[stand.n_waiting++] = op;
    return RT_AGAIN;
}

static rt_status stand_interest_add(void *eng, struct fo_chan *ch)
{
    stand.interest++;
    stand.interest_adds++;
    return fo__engine_memory.interest_add(eng, ch);
}

static void stand_interest_remove(void *eng, struct fo_chan *ch)
{
    stand.interest--;
    fo__engine_memory.interest_remove(eng, ch);
}

static struct fo *stand_fo(struct fo_config *cfg, struct tf_sink *s)
{
    memset(&stand, 0, sizeof(stand));
    stand.ops = fo__engine_memory;
    stand.ops.name = "stand-in";
    stand.ops.sub_prepare = stand_prepare;
    stand.ops.interest_add = stand_interest_add;
    stand.ops.interest_remove = stand_interest_remove;
    stand.defer = true;
    struct fo_config def;
    memset(&def, 0, sizeof(def));
    struct fo_sink sink = tf_sink_ops(s);
    struct fo *fo = NULL;
    cr_assert_eq(fo__create_with(cfg ? cfg : &def, &sink, &stand.ops, &fo), RT_OK);
    fo__set_clock(fo, tf_clock, NULL);
    return fo;
}

static rt_status sub_req(struct fo_client *c, const char *channel, int64_t req_id, bool has_since,
                         uint64_t since, const char *epoch, struct fo_sub_result *out)
{
    struct fo_sub_req req = {.channel = channel,
                             .channel_len = strlen(channel),
                             .has_since = has_since,
                             .since = since,
                             .epoch = epoch,
                             .epoch_len = epoch ? strlen(epoch) : 0,
                             .req_id = req_id};
    return fo_subscribe(c, &req, out);
}

/* Subscribes and expects it to wait; returns the engine's operation. */
static uint64_t sub_waits(struct fo_client *c, const char *channel, int64_t req_id)
{
    struct fo_sub_result r;
    size_t before = stand.n_waiting;
    cr_assert_eq(sub_req(c, channel, req_id, false, 0, NULL, &r), RT_AGAIN);
    cr_assert_eq(stand.n_waiting, before + 1);
    return stand.waiting[before];
}

static uint64_t pending_now(struct fo *fo)
{
    struct fo_stats st;
    fo_get_stats(fo, &st);
    return st.subs_pending;
}

Test(async_sub, answered_through_sub_done_and_live_after)
{
    struct tf_sink s;
    tf_sink_init(&s);
    struct fo *fo = stand_fo(NULL, &s);
    struct fo_client *a = tf_client(fo, 1);
    uint64_t op = sub_waits(a, "d.x", 7);
    cr_assert_eq(s.n_sub_done, 0, "answered before the engine was ready");
    cr_assert_eq(pending_now(fo), 1);
    tf_pub(fo, "d.x", NULL, "1"); /* while waiting: not a subscription yet, not replayed */
    cr_assert_eq(tf_count(&s, 1, "d.x"), 0);
    fo__sub_ready(fo, op, RT_OK);
    cr_assert_eq(s.n_sub_done, 1);
    cr_assert_eq(s.sub_done[0].conn, 1);
    cr_assert_eq(s.sub_done[0].req_id, 7);
    cr_assert_eq(s.sub_done[0].res.error, 0);
    cr_assert(s.sub_done[0].res.durable);
    cr_assert_eq(s.sub_done[0].res.seq, 1, "the reply's seq is the latest when it is answered");
    cr_assert_eq(pending_now(fo), 0);
    tf_pub(fo, "d.x", NULL, "2");
    tf_expect_range(&s, 1, "d.x", 2, 2);
    fo__sub_ready(fo, op, RT_OK); /* a second call for the same op is ignored */
    cr_assert_eq(s.n_sub_done, 1);
    fo_client_destroy(a);
    fo_destroy(fo);
    tf_sink_free(&s);
}

/*
 * A resume that waits: the reply comes first, then the replay of everything
 * after since, including what was published while it waited, then live:
 * no gap, no duplicate.
 */
Test(async_sub, resume_replays_after_the_reply_with_no_gap)
{
    struct tf_sink s;
    tf_sink_init(&s);
    struct fo *fo = stand_fo(NULL, &s);
    struct fo_client *pub = tf_client(fo, 2);
    stand.defer = false;
    stand.answer = RT_OK;
    struct fo_sub_result r0 = tf_sub(pub, "d.r"); /* learns the epoch */
    stand.defer = true;
    for (int i = 0; i < 5; i++)
        tf_pub(fo, "d.r", NULL, "1");
    struct fo_client *a = tf_client(fo, 1);
    struct fo_sub_result r;
    cr_assert_eq(sub_req(a, "d.r", 9, true, 2, r0.epoch, &r), RT_AGAIN);
    uint64_t op = stand.waiting[stand.n_waiting - 1];
    tf_pub(fo, "d.r", NULL, "1"); /* 6 and 7 while it waits */
    tf_pub(fo, "d.r", NULL, "1");
    size_t before = s.n;
    fo__sub_ready(fo, op, RT_OK);
    cr_assert_eq(s.n_sub_done, 1);
    const struct fo_sub_result *res = &s.sub_done[0].res;
    cr_assert_eq(res->error, 0);
    cr_assert(res->has_recovered && res->recovered);
    cr_assert_eq(res->seq, 7);
    cr_assert_eq(s.sub_done[0].events_before, before, "a replay went out before the reply");
    tf_pub(fo, "d.r", NULL, "1");
    tf_expect_range(&s, 1, "d.r", 3, 8);
    fo_client_destroy(a);
    fo_client_destroy(pub);
    fo_destroy(fo);
    tf_sink_free(&s);
}

Test(async_sub, a_waiting_subscribe_counts_for_409_and_max_subs)
{
    struct tf_sink s;
    tf_sink_init(&s);
    struct fo_config cfg = {.max_subs = 2};
    struct fo *fo = stand_fo(&cfg, &s);
    struct fo_client *a = tf_client(fo, 1);
    sub_waits(a, "d.a", 1);
    struct fo_sub_result r;
    cr_assert_eq(sub_req(a, "d.a", 2, false, 0, NULL, &r), RT_OK);
    cr_assert_eq(r.error, 409);
    sub_waits(a, "d.b", 3);
    cr_assert_eq(sub_req(a, "d.c", 4, false, 0, NULL, &r), RT_OK);
    cr_assert_eq(r.error, 403);
    cr_assert_eq(tf_unsub(a, "d.a"), RT_NOT_FOUND, "a waiting subscribe is not a subscription");
    fo_client_destroy(a);
    fo_destroy(fo);
    tf_sink_free(&s);
}

Test(async_sub, per_client_bound_is_429_and_leaves_others_alone)
{
    struct tf_sink s;
    tf_sink_init(&s);
    struct fo_config cfg = {.max_pending_subs_per_client = 2};
    struct fo *fo = stand_fo(&cfg, &s);
    struct fo_client *a = tf_client(fo, 1), *b = tf_client(fo, 2);
    sub_waits(a, "d.1", 1);
    uint64_t op = sub_waits(a, "d.2", 2);
    struct fo_sub_result r;
    cr_assert_eq(sub_req(a, "d.3", 3, false, 0, NULL, &r), RT_OK);
    cr_assert_eq(r.error, 429);
    cr_assert_gt(r.retry_after_ms, 0);
    sub_waits(b, "d.3", 1); /* another client is not refused */
    fo__sub_ready(fo, op, RT_OK);
    sub_waits(a, "d.3", 4); /* room again */
    struct fo_stats st;
    fo_get_stats(fo, &st);
    cr_assert_eq(st.subs_refused_pending, 1);
    fo_client_destroy(a);
    fo_client_destroy(b);
    fo_destroy(fo);
    tf_sink_free(&s);
}

Test(async_sub, node_bound_is_503)
{
    struct tf_sink s;
    tf_sink_init(&s);
    struct fo_config cfg = {.max_pending_subs = 3};
    struct fo *fo = stand_fo(&cfg, &s);
    struct fo_client *c[4];
    for (int i = 0; i < 3; i++) {
        c[i] = tf_client(fo, (uint64_t)i + 1);
        sub_waits(c[i], "e.x", 1);
    }
    c[3] = tf_client(fo, 4);
    struct fo_sub_result r;
    cr_assert_eq(sub_req(c[3], "e.y", 1, false, 0, NULL, &r), RT_OK);
    cr_assert_eq(r.error, 503);
    cr_assert_gt(r.retry_after_ms, 0);
    for (int i = 0; i < 4; i++)
        fo_client_destroy(c[i]);
    fo_destroy(fo);
    tf_sink_free(&s);
}

/* Past sub_timeout_ms: 503, the channel's interest goes, and a late answer is ignored. */
Test(async_sub, timeout_answers_503_and_drops_the_interest)
{
    struct tf_sink s;
    tf_sink_init(&s);
    struct fo_config cfg = {.sub_timeout_ms = 1000};
    struct fo *fo = stand_fo(&cfg, &s);
    struct fo_client *a = tf_client(fo, 1);
    uint64_t op = sub_waits(a, "e.t", 5);
    cr_assert_eq(stand.interest, 1);
    tf_now += 999;
    fo_tick(fo, 0);
    cr_assert_eq(s.n_sub_done, 0, "timed out early");
    tf_now += 2;
    fo_tick(fo, 0);
    cr_assert_eq(s.n_sub_done, 1);
    cr_assert_eq(s.sub_done[0].req_id, 5);
    cr_assert_eq(s.sub_done[0].res.error, 503);
    cr_assert_gt(s.sub_done[0].res.retry_after_ms, 0);
    cr_assert_eq(stand.interest, 0, "the interest outlived its last party");
    struct fo_stats st;
    fo_get_stats(fo, &st);
    cr_assert_eq(st.sub_timeouts, 1);
    cr_assert_eq(st.subs_pending, 0);
    cr_assert_eq(st.channels, 0);
    fo__sub_ready(fo, op, RT_OK); /* the engine answers late: ignored */
    cr_assert_eq(s.n_sub_done, 1);
    cr_assert_eq(tf_unsub(a, "e.t"), RT_NOT_FOUND);
    fo_client_destroy(a);
    fo_destroy(fo);
    tf_sink_free(&s);
}

Test(async_sub, engine_failure_answers_503)
{
    struct tf_sink s;
    tf_sink_init(&s);
    struct fo *fo = stand_fo(NULL, &s);
    struct fo_client *a = tf_client(fo, 1);
    uint64_t op = sub_waits(a, "d.f", 3);
    fo__sub_ready(fo, op, RT_UNAVAILABLE);
    cr_assert_eq(s.n_sub_done, 1);
    cr_assert_eq(s.sub_done[0].res.error, 503);
    cr_assert_eq(stand.interest, 0);
    stand.defer = false;
    stand.answer = RT_UNAVAILABLE; /* refused at once: answered now */
    struct fo_sub_result r;
    cr_assert_eq(sub_req(a, "d.f", 4, false, 0, NULL, &r), RT_OK);
    cr_assert_eq(r.error, 503);
    cr_assert_eq(stand.interest, 0);
    fo_client_destroy(a);
    fo_destroy(fo);
    tf_sink_free(&s);
}

/* The client goes while its subscribe waits: never answered, interest released. */
Test(async_sub, client_destroyed_while_waiting)
{
    struct tf_sink s;
    tf_sink_init(&s);
    struct fo *fo = stand_fo(NULL, &s);
    struct fo_client *a = tf_client(fo, 1);
    uint64_t op = sub_waits(a, "d.g", 1);
    fo_client_destroy(a);
    cr_assert_eq(stand.interest, 0);
    cr_assert_eq(pending_now(fo), 0);
    fo__sub_ready(fo, op, RT_OK);
    cr_assert_eq(s.n_sub_done, 0);
    fo_destroy(fo);
    tf_sink_free(&s);
}

/*
 * Interest is held from the first waiting subscribe to the last party: a
 * second subscriber waiting on the same channel keeps it when the first
 * fails, and it goes with the last subscription.
 */
Test(async_sub, interest_spans_waiting_and_attached_parties)
{
    struct tf_sink s;
    tf_sink_init(&s);
    struct fo *fo = stand_fo(NULL, &s);
    struct fo_client *a = tf_client(fo, 1), *b = tf_client(fo, 2);
    uint64_t op_a = sub_waits(a, "e.i", 1);
    uint64_t op_b = sub_waits(b, "e.i", 1);
    cr_assert_eq(stand.interest_adds, 1);
    fo__sub_ready(fo, op_a, RT_UNAVAILABLE);
    cr_assert_eq(stand.interest, 1, "the waiting second subscriber lost its interest");
    fo__sub_ready(fo, op_b, RT_OK);
    cr_assert_eq(s.sub_done[1].res.error, 0);
    cr_assert_eq(stand.interest, 1);
    tf_pub(fo, "e.i", NULL, "1");
    cr_assert_eq(tf_count(&s, 2, "e.i"), 1);
    cr_assert_eq(tf_count(&s, 1, "e.i"), 0);
    cr_assert_eq(tf_unsub(b, "e.i"), RT_OK);
    cr_assert_eq(stand.interest, 0);
    cr_assert_eq(stand.interest_adds, 1);
    fo_client_destroy(a);
    fo_client_destroy(b);
    fo_destroy(fo);
    tf_sink_free(&s);
}

/* A since above the latest, found once ready: 400, and the interest goes. */
Test(async_sub, bad_since_found_when_ready_is_400)
{
    struct tf_sink s;
    tf_sink_init(&s);
    struct fo *fo = stand_fo(NULL, &s);
    struct fo_client *pub = tf_client(fo, 2);
    stand.defer = false;
    stand.answer = RT_OK;
    struct fo_sub_result r0 = tf_sub(pub, "d.s");
    tf_pub(fo, "d.s", NULL, "1");
    stand.defer = true;
    struct fo_client *a = tf_client(fo, 1);
    struct fo_sub_result r;
    cr_assert_eq(sub_req(a, "d.s", 3, true, 5, r0.epoch, &r), RT_AGAIN);
    fo__sub_ready(fo, stand.waiting[stand.n_waiting - 1], RT_OK);
    cr_assert_eq(s.sub_done[0].res.error, 400);
    cr_assert_eq(stand.interest, 1, "only pub's subscription holds it now");
    fo_client_destroy(a);
    fo_client_destroy(pub);
    fo_destroy(fo);
    tf_sink_free(&s);
}

/* The memory engine never waits: every subscribe is answered at once. */
Test(async_sub, memory_engine_answers_at_once)
{
    struct tf_sink s;
    tf_sink_init(&s);
    struct fo *fo = tf_fo(NULL, &s);
    struct fo_client *a = tf_client(fo, 1);
    struct fo_sub_result r;
    cr_assert_eq(sub_req(a, "d.m", 1, true, 0, "nope", &r), RT_OK);
    cr_assert_eq(r.error, 0);
    cr_assert_eq(s.n_sub_done, 0);
    fo_client_destroy(a);
    fo_destroy(fo);
    tf_sink_free(&s);
}
