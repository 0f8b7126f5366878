/*
 * The other nodes heard from (peers/peers_table.c): one entry per id with a
 * token of its own, a bound no flood of ids passes, an owner's larger node
 * struct, silence, generations.
 */
#include "peers.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#define BIT (1ull << 62)

/* An owner that keeps more of each node (as users/ does). */
struct owner_node {
    struct peers_node peer;
    uint32_t extra;
};

static struct peers_node *get(struct peers_table *t, const char *id, uint64_t now, bool *created)
{
    return peers_get(t, id, strlen(id), now, created);
}

Test(peers_table, a_node_is_made_once_with_a_token_of_its_own)
{
    struct peers_table t;
    peers_table_init(&t, sizeof(struct peers_node), BIT, 16);
    bool created;
    struct peers_node *a = get(&t, "nodeA", 100, &created);
    cr_assert(a && created);
    cr_assert(a->id_len == 5 && strcmp(a->id, "nodeA") == 0 && a->last_seen == 100);
    cr_assert_eq(a->token, BIT | 1);
    struct peers_node *b = get(&t, "nodeB", 200, &created);
    cr_assert(b && created && b->token == (BIT | 2));
    cr_assert_eq(get(&t, "nodeA", 300, &created), a);
    cr_assert_not(created);
    cr_assert_eq(a->last_seen, 100, "the owner says when a node was heard, not a lookup");
    cr_assert_eq(peers_find(&t, "nodeB", 5), b);
    cr_assert_null(peers_find(&t, "nodeC", 5));
    cr_assert_eq(peers_count(&t), 2);
    cr_assert(t.list == b && b->next == a && a->prev == b, "newest first");
    peers_table_free(&t);
    cr_assert_eq(peers_count(&t), 0);
}

Test(peers_table, bad_ids_and_ids_past_the_bound_are_not_tracked)
{
    struct peers_table t;
    peers_table_init(&t, sizeof(struct peers_node), 0, 3);
    bool created = true;
    cr_assert_null(get(&t, "a.b", 1, &created));
    cr_assert_not(created);
    cr_assert_null(peers_get(&t, "", 0, 1, &created));
    char id[8];
    for (int i = 0; i < 10; i++) {
        snprintf(id, sizeof(id), "n%d", i);
        struct peers_node *nd = get(&t, id, 1, &created);
        cr_assert_eq(nd != NULL, i < 3, "node %d", i);
        cr_assert_eq(created, i < 3);
    }
    cr_assert_eq(peers_count(&t), 3);
    cr_assert_not_null(get(&t, "n1", 1, &created), "a known node is still found when full");
    cr_assert_eq(get(&t, "n0", 1, &created)->token, 1, "tokens start at 1, never 0");
    peers_table_free(&t);
}

Test(peers_table, an_owner_keeps_more_of_each_node_in_its_own_struct)
{
    struct peers_table t;
    peers_table_init(&t, sizeof(struct owner_node), 0, 8);
    bool created;
    struct owner_node *o = RT_CONTAINER(get(&t, "x", 1, &created), struct owner_node, peer);
    cr_assert_eq(o->extra, 0, "zeroed");
    o->extra = 0xdeadbeef;
    struct owner_node *again = RT_CONTAINER(get(&t, "x", 2, &created), struct owner_node, peer);
    cr_assert_eq(again->extra, 0xdeadbeef);
    peers_table_free(&t); /* ASan: the whole struct is freed */
}

struct gone_log {
    char ids[8][PEERS_NODE_MAX + 1];
    size_t n;
    struct peers_table *t;
};

static void gone(void *arg, struct peers_node *nd)
{
    struct gone_log *g = arg;
    cr_assert_eq(peers_find(g->t, nd->id, nd->id_len), nd, "told while still in the table");
    snprintf(g->ids[g->n++], sizeof(g->ids[0]), "%s", nd->id);
}

Test(peers_table, the_silent_nodes_go_the_owner_told_first)
{
    struct peers_table t;
    peers_table_init(&t, sizeof(struct peers_node), 0, 8);
    bool created;
    get(&t, "old1", 1000, &created);
    struct peers_node *fresh = get(&t, "fresh", 1000, &created);
    get(&t, "old2", 1000, &created);
    fresh->last_seen = 2000;
    struct gone_log g = {.t = &t};
    cr_assert_eq(peers_expire(&t, 3999, 3000, gone, &g), 0, "not silent for the ttl yet");
    cr_assert_eq(peers_expire(&t, 4000, 3000, gone, &g), 2);
    cr_assert_eq(g.n, 2);
    cr_assert(strcmp(g.ids[0], "old2") == 0 && strcmp(g.ids[1], "old1") == 0);
    cr_assert_eq(peers_count(&t), 1);
    cr_assert(t.list == fresh && !fresh->prev && !fresh->next);
    cr_assert_null(peers_find(&t, "old1", 4));
    peers_remove(&t, fresh);
    cr_assert(peers_count(&t) == 0 && t.list == NULL);
    peers_table_free(&t);
}

Test(peers_table, a_generation_moves_only_for_a_node_known_before)
{
    struct peers_table t;
    peers_table_init(&t, sizeof(struct peers_node), 0, 8);
    bool created;
    struct peers_node *nd = get(&t, "a", 1, &created);
    cr_assert_not(peers_gen_moved(nd, true, 5), "a new node's first generation");
    cr_assert_eq(nd->gen, 5);
    cr_assert_not(peers_gen_moved(nd, false, 5));
    cr_assert(peers_gen_moved(nd, false, 6));
    cr_assert_eq(nd->gen, 6);
    cr_assert(peers_gen_moved(nd, false, 0), "backwards is a move too (a restart)");
    peers_table_free(&t);
}
