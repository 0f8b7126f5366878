/*
 * Sink callbacks that call back into the fan-out. The gateway does not free
 * from inside deliver, but the registry must stay consistent if it does.
 */
#include "helpers.h"

#include <criterion/criterion.h>
#include <string.h>

struct world {
    struct tf_sink s;
    struct fo *fo;
    struct fo_client *c[8];
    int action;
    int fired;
};

static void world_init(struct world *w, uint32_t max_unacked)
{
    memset(w, 0, sizeof(*w));
    struct fo_config cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.max_unacked = max_unacked;
    tf_sink_init(&w->s);
    w->s.hook_ctx = w;
    w->fo = tf_fo(&cfg, &w->s);
    for (uint64_t i = 0; i < 8; i++)
        w->c[i] = tf_client(w->fo, i);
}

static void world_free(struct world *w)
{
    for (int i = 0; i < 8; i++)
        fo_client_destroy(w->c[i]);
    tf_sink_free(&w->s);
    fo_destroy(w->fo);
}

enum { UNSUB_OTHERS, DESTROY_SELF, PUBLISH_AGAIN, ACK_INSIDE, SUB_NEW, ACK_OTHER, PUBLISH_ONCE };

static void hook(struct tf_sink *s, uint64_t conn, struct fo_msg *m)
{
    struct world *w = s->hook_ctx;
    switch (w->action) {
    case UNSUB_OTHERS:
        if (conn == 0 && !w->fired++) {
            for (int i = 1; i < 8; i += 2)
                tf_unsub(w->c[i], "a");
        }
        break;
    case DESTROY_SELF:
        if (conn == 3 && !w->fired++) {
            fo_client_destroy(w->c[3]);
            w->c[3] = NULL;
        }
        break;
    case PUBLISH_AGAIN:
        if (m->seq < 3)
            cr_assert_eq(tf_pub(w->fo, "a", NULL, "again").error, 0);
        break;
    case ACK_INSIDE:
        tf_ack(w->c[conn], m->channel, m->seq);
        break;
    case ACK_OTHER:
        /* Delivering to conn 0 lets conn 1 ack: conn 1 catches up inside
         * this dispatch, including the message being dispatched. */
        if (conn == 0 && !w->fired++)
            tf_ack(w->c[1], "a", 3);
        break;
    case PUBLISH_ONCE:
        if (!w->fired++)
            cr_assert_eq(tf_pub(w->fo, "a", NULL, "inside").error, 0);
        break;
    case SUB_NEW:
        if (!w->fired++)
            cr_assert_eq(tf_sub(w->c[7], "a").error, 0);
        break;
    }
}

Test(reentrant, unsubscribing_others_during_dispatch)
{
    struct world w;
    world_init(&w, 100);
    for (int i = 0; i < 8; i++)
        tf_sub(w.c[i], "a");
    w.s.hook = hook;
    w.action = UNSUB_OTHERS;
    tf_pub(w.fo, "a", NULL, "1");
    tf_pub(w.fo, "a", NULL, "2");
    for (uint64_t i = 0; i < 8; i++) {
        if (i % 2 == 0)
            tf_expect_range(&w.s, i, "a", 1, 2);
        else
            cr_assert_leq(tf_count(&w.s, i, "a"), 1, "at most the message in flight");
    }
    struct fo_stats st;
    fo_get_stats(w.fo, &st);
    cr_assert_eq(st.subscriptions, 4);
    world_free(&w);
}

Test(reentrant, destroying_the_client_inside_deliver)
{
    struct world w;
    world_init(&w, 100);
    for (int i = 0; i < 8; i++) {
        tf_sub(w.c[i], "a");
        tf_sub(w.c[i], "b");
    }
    w.s.hook = hook;
    w.action = DESTROY_SELF;
    tf_pub(w.fo, "a", NULL, "1");
    tf_pub(w.fo, "a", NULL, "2");
    tf_pub(w.fo, "b", NULL, "1");
    for (uint64_t i = 0; i < 8; i++) {
        if (i != 3)
            tf_expect_range(&w.s, i, "a", 1, 2);
    }
    cr_assert_eq(tf_count(&w.s, 3, NULL), 1);
    world_free(&w);
}

Test(reentrant, publishing_inside_deliver_keeps_order_for_everyone)
{
    struct world w;
    world_init(&w, 100);
    for (int i = 0; i < 8; i++)
        tf_sub(w.c[i], "a");
    w.s.hook = hook;
    w.action = PUBLISH_AGAIN;
    tf_pub(w.fo, "a", NULL, "1");
    /* 1 triggers 8 publishes (2..9), 2 triggers 8 more (10..17). */
    struct fo_stats st;
    fo_get_stats(w.fo, &st);
    cr_assert_eq(st.published, 17);
    for (uint64_t i = 0; i < 8; i++)
        tf_expect_range(&w.s, i, "a", 1, 17);
    world_free(&w);
}

Test(reentrant, acking_inside_deliver_during_catch_up)
{
    struct world w;
    world_init(&w, 2);
    tf_sub(w.c[0], "a");
    tf_sub(w.c[0], "b");
    for (int i = 0; i < 10; i++) {
        tf_pub(w.fo, "a", NULL, "1");
        tf_pub(w.fo, "b", NULL, "1");
    }
    cr_assert_eq(tf_count(&w.s, 0, NULL), 2);
    w.s.hook = hook;
    w.action = ACK_INSIDE;
    tf_ack(w.c[0], "a", 1);
    tf_ack(w.c[0], "b", 1);
    tf_expect_range(&w.s, 0, "a", 1, 10);
    tf_expect_range(&w.s, 0, "b", 1, 10);
    cr_assert_eq(fo_client_unacked(w.c[0]), 0);
    tf_pub(w.fo, "a", NULL, "1");
    tf_expect_range(&w.s, 0, "a", 1, 11);
    world_free(&w);
}

Test(reentrant, subscribing_inside_deliver_starts_after_the_current_message)
{
    struct world w;
    world_init(&w, 100);
    tf_sub(w.c[0], "a");
    w.s.hook = hook;
    w.action = SUB_NEW;
    tf_pub(w.fo, "a", NULL, "1");
    tf_pub(w.fo, "a", NULL, "2");
    tf_expect_range(&w.s, 0, "a", 1, 2);
    tf_expect_range(&w.s, 7, "a", 2, 2);
    world_free(&w);
}

Test(reentrant, catch_up_inside_a_dispatch_does_not_duplicate)
{
    struct world w;
    world_init(&w, 3);
    tf_sub(w.c[0], "a");
    tf_sub(w.c[1], "a");
    for (int i = 0; i < 3; i++)
        tf_pub(w.fo, "a", NULL, "1");
    tf_ack(w.c[0], "a", 3);
    tf_pub(w.fo, "a", NULL, "4"); /* conn 1's window is full: paused */
    tf_ack(w.c[0], "a", 4);
    tf_expect_range(&w.s, 1, "a", 1, 3);
    w.s.hook = hook;
    w.action = ACK_OTHER;
    tf_pub(w.fo, "a", NULL, "5");
    tf_expect_range(&w.s, 0, "a", 1, 5);
    tf_expect_range(&w.s, 1, "a", 1, 5);
    world_free(&w);
}

Test(reentrant, publish_inside_a_catch_up_is_delivered_once)
{
    struct world w;
    world_init(&w, 100);
    tf_sub(w.c[0], "a");
    w.s.full[0] = true;
    tf_pub(w.fo, "a", NULL, "1");
    tf_pub(w.fo, "a", NULL, "2");
    w.s.full[0] = false;
    w.s.hook = hook;
    w.action = PUBLISH_ONCE;
    /* Replaying 1 publishes 3: stored now, dispatched after the pump, which
     * by then has replayed it from history and gone live. */
    fo_client_pump(w.c[0]);
    tf_expect_range(&w.s, 0, "a", 1, 3);
    tf_pub(w.fo, "a", NULL, "4");
    tf_expect_range(&w.s, 0, "a", 1, 4);
    world_free(&w);
}
