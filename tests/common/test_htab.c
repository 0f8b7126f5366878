#include "rt.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A keyed item as an owner of the table would define it. */
struct item {
    struct rt_hnode node;
    int value;
    size_t key_len;
    char key[24];
};

static struct item *item_new(int value)
{
    struct item *it = calloc(1, sizeof(*it));
    cr_assert_not_null(it);
    it->value = value;
    it->key_len = (size_t)snprintf(it->key, sizeof(it->key), "key-%d", value);
    it->node.hash = rt_hash_bytes(it->key, it->key_len);
    return it;
}

static struct item *find(const struct rt_htab *t, const char *key, size_t len, uint64_t h)
{
    for (struct rt_hnode *n = rt_htab_chain(t, h); n; n = n->next) {
        struct item *it = RT_CONTAINER(n, struct item, node);
        if (n->hash == h && it->key_len == len && memcmp(it->key, key, len) == 0)
            return it;
    }
    return NULL;
}

static struct item *find_value(const struct rt_htab *t, int value)
{
    char key[24];
    size_t len = (size_t)snprintf(key, sizeof(key), "key-%d", value);
    return find(t, key, len, rt_hash_bytes(key, len));
}

static void add(struct rt_htab *t, struct item *it)
{
    cr_assert_eq(rt_htab_reserve(t), RT_OK);
    rt_htab_insert(t, &it->node);
}

static void free_item_cb(struct rt_hnode *n, void *arg)
{
    struct rt_htab *t = arg;
    rt_htab_remove(t, n);
    free(RT_CONTAINER(n, struct item, node));
}

#define N_KEYS 10000

Test(htab, empty_table_finds_nothing)
{
    struct rt_htab t;
    rt_htab_init(&t);
    cr_assert_null(rt_htab_chain(&t, 0));
    cr_assert_null(rt_htab_chain(&t, rt_hash_bytes("x", 1)));
    cr_assert_eq(rt_htab_count(&t), 0);
    rt_htab_each(&t, free_item_cb, &t);
    rt_htab_free(&t);
    rt_htab_free(&t); /* free leaves an empty table: freeing again is fine */
}

Test(htab, insert_find_remove_10k_keys)
{
    struct rt_htab t;
    rt_htab_init(&t);
    for (int i = 0; i < N_KEYS; i++)
        add(&t, item_new(i));
    cr_assert_eq(rt_htab_count(&t), N_KEYS);

    for (int i = 0; i < N_KEYS; i++) {
        struct item *it = find_value(&t, i);
        cr_assert_not_null(it, "key %d", i);
        cr_assert_eq(it->value, i);
    }
    cr_assert_null(find_value(&t, N_KEYS));
    cr_assert_null(find_value(&t, -1));

    /* Remove the even keys: the odd ones stay findable. */
    for (int i = 0; i < N_KEYS; i += 2) {
        struct item *it = find_value(&t, i);
        cr_assert_not_null(it);
        rt_htab_remove(&t, &it->node);
        free(it);
    }
    cr_assert_eq(rt_htab_count(&t), N_KEYS / 2);
    for (int i = 0; i < N_KEYS; i++) {
        struct item *it = find_value(&t, i);
        if (i % 2)
            cr_assert(it && it->value == i, "odd key %d lost", i);
        else
            cr_assert_null(it, "even key %d still there", i);
    }

    rt_htab_each(&t, free_item_cb, &t);
    cr_assert_eq(rt_htab_count(&t), 0);
    rt_htab_free(&t);
}

Test(htab, buckets_double_at_load_one_and_never_shrink)
{
    struct rt_htab t;
    rt_htab_init(&t);
    cr_assert_eq(t.nbuckets, 0, "nothing is allocated before the first reserve");
    size_t prev = 0;
    for (int i = 0; i < N_KEYS; i++) {
        add(&t, item_new(i));
        cr_assert(t.nbuckets >= t.count, "load above 1: %zu nodes, %zu buckets", t.count,
                  t.nbuckets);
        cr_assert_eq(t.nbuckets & (t.nbuckets - 1), 0, "not a power of two: %zu", t.nbuckets);
        cr_assert(t.nbuckets == prev || t.nbuckets == 2 * prev || prev == 0, "grew from %zu to %zu",
                  prev, t.nbuckets);
        prev = t.nbuckets;
    }
    /* After growth every node is still on the chain of its hash. */
    for (int i = 0; i < N_KEYS; i++)
        cr_assert_not_null(find_value(&t, i), "key %d lost in growth", i);

    for (int i = 0; i < N_KEYS; i++) {
        struct item *it = find_value(&t, i);
        rt_htab_remove(&t, &it->node);
        free(it);
    }
    cr_assert_eq(rt_htab_count(&t), 0);
    cr_assert_eq(t.nbuckets, prev, "buckets never shrink");
    cr_assert_eq(rt_htab_reserve(&t), RT_OK);
    cr_assert_eq(t.nbuckets, prev, "an emptied table does not grow");
    rt_htab_free(&t);
    cr_assert_eq(t.nbuckets, 0);
    cr_assert_null(t.buckets);
}

struct visit {
    struct rt_htab *t;
    int *seen;
    int visited;
};

/* Removes and frees every node whose value is divisible by 3. */
static void remove_thirds_cb(struct rt_hnode *n, void *arg)
{
    struct visit *v = arg;
    struct item *it = RT_CONTAINER(n, struct item, node);
    v->seen[it->value]++;
    v->visited++;
    if (it->value % 3 == 0) {
        rt_htab_remove(v->t, n);
        free(it);
    }
}

Test(htab, each_visits_every_node_once_and_allows_removal)
{
    struct rt_htab t;
    rt_htab_init(&t);
    for (int i = 0; i < N_KEYS; i++)
        add(&t, item_new(i));

    int *seen = calloc(N_KEYS, sizeof(*seen));
    cr_assert_not_null(seen);
    struct visit v = {.t = &t, .seen = seen};
    rt_htab_each(&t, remove_thirds_cb, &v);
    cr_assert_eq(v.visited, N_KEYS);
    for (int i = 0; i < N_KEYS; i++)
        cr_assert_eq(seen[i], 1, "key %d visited %d times", i, seen[i]);
    cr_assert_eq(rt_htab_count(&t), (size_t)(N_KEYS - (N_KEYS + 2) / 3));
    for (int i = 0; i < N_KEYS; i++) {
        if (i % 3)
            cr_assert_not_null(find_value(&t, i), "key %d", i);
        else
            cr_assert_null(find_value(&t, i), "key %d", i);
    }

    /* A second pass sees only what is left. */
    memset(seen, 0, N_KEYS * sizeof(*seen));
    v.visited = 0;
    rt_htab_each(&t, remove_thirds_cb, &v);
    cr_assert_eq(v.visited, N_KEYS - (N_KEYS + 2) / 3);

    rt_htab_each(&t, free_item_cb, &t);
    cr_assert_eq(rt_htab_count(&t), 0);
    free(seen);
    rt_htab_free(&t);
}

Test(htab, equal_hashes_share_a_chain_and_stay_distinct)
{
    struct rt_htab t;
    rt_htab_init(&t);
    enum { N = 200 };
    struct item *items[N];
    const uint64_t same = 0x1234u;
    for (int i = 0; i < N; i++) {
        items[i] = item_new(i);
        items[i]->node.hash = same; /* every node collides */
        add(&t, items[i]);
    }
    cr_assert_eq(rt_htab_count(&t), N);
    for (int i = 0; i < N; i++) {
        cr_assert_eq(find(&t, items[i]->key, items[i]->key_len, same), items[i], "key %d", i);
    }
    cr_assert_null(find(&t, "key-x", 5, same));

    /* Remove from the middle, the head and the tail of the chain. */
    int order[] = {N / 2, N - 1, 0, 1, N - 2};
    for (size_t k = 0; k < sizeof(order) / sizeof(order[0]); k++) {
        struct item *it = items[order[k]];
        rt_htab_remove(&t, &it->node);
        free(it);
        items[order[k]] = NULL;
    }
    cr_assert_eq(rt_htab_count(&t), N - 5);
    for (int i = 0; i < N; i++) {
        if (items[i])
            cr_assert_eq(find(&t, items[i]->key, items[i]->key_len, same), items[i]);
    }
    /* Removing a node that is not in the table changes nothing. */
    struct item stray = {.node = {.hash = same}};
    rt_htab_remove(&t, &stray.node);
    cr_assert_eq(rt_htab_count(&t), N - 5);

    rt_htab_each(&t, free_item_cb, &t);
    cr_assert_eq(rt_htab_count(&t), 0);
    rt_htab_free(&t);
}

Test(htab, the_integer_mixer_spreads_keys_over_the_low_bits)
{
    cr_assert_eq(rt_hash_u64(0), 0);
    /* Keys that differ only in high bits spread evenly over the low bits
     * (the bucket index); unmixed they would all land in bucket 0. */
    unsigned per_bucket[16] = {0};
    for (uint64_t x = 0; x < 4096; x++)
        per_bucket[rt_hash_u64(x << 20) & 15u]++;
    for (int i = 0; i < 16; i++)
        cr_assert(per_bucket[i] >= 128 && per_bucket[i] <= 512, "bucket %d holds %u of 4096", i,
                  per_bucket[i]);
}

Test(htab, max_chain_counts_the_longest_chain)
{
    struct rt_htab t;
    rt_htab_init(&t);
    cr_assert_eq(rt_htab_max_chain(&t), 0);
    struct item *a = item_new(1), *b = item_new(2), *c = item_new(3);
    a->node.hash = b->node.hash = 5;
    c->node.hash = 6;
    add(&t, a);
    add(&t, b);
    add(&t, c);
    cr_assert_eq(rt_htab_max_chain(&t), 2);
    rt_htab_each(&t, free_item_cb, &t);
    rt_htab_free(&t);
}
