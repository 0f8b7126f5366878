/*
 * The nodes a snapshot was asked of (peers/peers_snapshot.c): who is
 * awaited, the watermark of an answer's first chunk, completion, gone
 * nodes, the deadline and the warm-up.
 */
#include "peers.h"

#include <criterion/criterion.h>
#include <string.h>

/* Two nodes, a and b, and a snapshot s (request 7, until 1000) asked of both. */
struct fixture {
    struct peers_table t;
    struct peers_node *a, *b;
    struct peers_snapshot s;
};

static void setup(struct fixture *fx)
{
    bool created;
    memset(fx, 0, sizeof(*fx));
    peers_table_init(&fx->t, sizeof(struct peers_node), 0, 8);
    fx->a = peers_get(&fx->t, "a", 1, 0, &created);
    fx->b = peers_get(&fx->t, "b", 1, 0, &created);
    peers_snapshot_renew(&fx->s, 7);
    peers_snapshot_ask(&fx->s, &fx->t, NULL, 1000);
}

static void teardown(struct fixture *fx)
{
    peers_snapshot_clear(&fx->s);
    peers_table_free(&fx->t);
}

Test(peers_snapshot, every_node_is_awaited_until_its_last_chunk)
{
    struct fixture fx;
    setup(&fx);
    struct peers_snapshot *s = &fx.s;
    cr_assert(s->req == 7 && s->deadline == 1000 && s->n_answers == 2);
    cr_assert(peers_snapshot_partial(s));
    cr_assert_not(peers_snapshot_over(s, 500, 0));

    struct peers_answer *pa = peers_snapshot_answer(s, fx.a->token, 40);
    cr_assert(pa && pa->answered && pa->watermark == 40 && !pa->done);
    pa = peers_snapshot_answer(s, fx.a->token, 41);
    cr_assert_eq(pa->watermark, 40, "the first chunk's watermark stays");
    pa->done = true;
    cr_assert_null(peers_snapshot_answer(s, fx.a->token, 42), "after the last chunk: ignored");
    cr_assert(peers_snapshot_partial(s), "b has not answered");

    peers_snapshot_answer(s, fx.b->token, 9)->done = true;
    cr_assert_not(peers_snapshot_partial(s));
    cr_assert_not(peers_snapshot_over(s, 500, 600), "all in, but nodes may still appear");
    cr_assert(peers_snapshot_over(s, 600, 600));
    teardown(&fx);
}

Test(peers_snapshot, the_deadline_ends_it_whoever_did_not_answer)
{
    struct fixture fx;
    setup(&fx);
    struct peers_snapshot *s = &fx.s;
    cr_assert_not(peers_snapshot_over(s, 999, 0));
    cr_assert(peers_snapshot_over(s, 1000, 5000));
    cr_assert(peers_snapshot_partial(s));
    peers_snapshot_clear(s);
    cr_assert(s->answers == NULL && s->n_answers == 0);
    peers_table_free(&fx.t);
}

Test(peers_snapshot, a_gone_node_is_not_awaited_and_nothing_of_it_is_kept)
{
    struct fixture fx;
    setup(&fx);
    struct peers_snapshot *s = &fx.s;
    peers_snapshot_answer(s, fx.a->token, 3);
    peers_snapshot_answer(s, fx.b->token, 4)->done = true;
    peers_snapshot_forget(s, fx.a->token);
    peers_snapshot_forget(s, fx.b->token);
    const struct peers_answer *pa = peers_snapshot_find(s, fx.a->token);
    const struct peers_answer *pb = peers_snapshot_find(s, fx.b->token);
    cr_assert(pa->done && !pa->answered, "half an answer of a gone node is neither kept nor swept");
    cr_assert(pb->done && pb->answered, "a complete answer stays one");
    cr_assert_not(peers_snapshot_partial(s));
    peers_snapshot_forget(s, 12345); /* never asked: nothing happens */
    cr_assert_eq(s->n_answers, 2);
    teardown(&fx);
}

Test(peers_snapshot, one_node_asked_again_starts_over_and_a_new_request_forgets_all)
{
    struct fixture fx;
    setup(&fx);
    struct peers_snapshot *s = &fx.s;
    peers_snapshot_renew(s, 1);
    peers_snapshot_ask(s, &fx.t, fx.a, 100);
    cr_assert_eq(s->n_answers, 1, "only the node asked");
    peers_snapshot_answer(s, fx.a->token, 5)->done = true;
    peers_snapshot_ask(s, &fx.t, fx.a, 200);
    const struct peers_answer *pa = peers_snapshot_find(s, fx.a->token);
    cr_assert(!pa->answered && !pa->done && s->deadline == 200);
    cr_assert_not_null(peers_snapshot_answer(s, fx.b->token, 1), "a node heard of later counts");
    cr_assert_eq(s->n_answers, 2);
    peers_snapshot_renew(s, 2);
    cr_assert(s->req == 2 && s->n_answers == 0);
    cr_assert_null(peers_snapshot_find(s, fx.a->token));
    teardown(&fx);
}
