/*
 * htab.c: the intrusive chained hash table of rt.h (the hashes it is used
 * with are in hash.c). The owner embeds an rt_hnode, sets its hash and compares keys
 * itself while walking a chain, so one table type serves every kind of key.
 * Buckets double when the load reaches 1 and never shrink.
 */
#include "rt.h"

#include <stdlib.h>

#define HTAB_MIN_BUCKETS 8u

void rt_htab_init(struct rt_htab *t)
{
    t->buckets = NULL;
    t->nbuckets = 0;
    t->count = 0;
}

void rt_htab_free(struct rt_htab *t)
{
    free(t->buckets);
    rt_htab_init(t);
}

struct rt_hnode *rt_htab_chain(const struct rt_htab *t, uint64_t hash)
{
    if (t->nbuckets == 0)
        return NULL;
    return t->buckets[hash & (t->nbuckets - 1)];
}

static rt_status htab_grow(struct rt_htab *t)
{
    size_t nb = t->nbuckets ? t->nbuckets * 2 : HTAB_MIN_BUCKETS;
    struct rt_hnode **b = calloc(nb, sizeof(*b));
    if (!b)
        return RT_NOMEM;
    for (size_t i = 0; i < t->nbuckets; i++) {
        struct rt_hnode *n = t->buckets[i];
        while (n) {
            struct rt_hnode *next = n->next;
            size_t j = (size_t)(n->hash & (nb - 1));
            n->next = b[j];
            b[j] = n;
            n = next;
        }
    }
    free(t->buckets);
    t->buckets = b;
    t->nbuckets = nb;
    return RT_OK;
}

rt_status rt_htab_reserve(struct rt_htab *t)
{
    if (t->count < t->nbuckets)
        return RT_OK;
    if (htab_grow(t) != RT_OK && t->nbuckets == 0)
        return RT_NOMEM;
    return RT_OK; /* could not grow: longer chains, still correct */
}

void rt_htab_insert(struct rt_htab *t, struct rt_hnode *n)
{
    size_t i = (size_t)(n->hash & (t->nbuckets - 1));
    n->next = t->buckets[i];
    t->buckets[i] = n;
    t->count++;
}

void rt_htab_remove(struct rt_htab *t, struct rt_hnode *n)
{
    if (t->nbuckets == 0)
        return;
    struct rt_hnode **pp = &t->buckets[n->hash & (t->nbuckets - 1)];
    while (*pp && *pp != n)
        pp = &(*pp)->next;
    if (*pp) {
        *pp = n->next;
        t->count--;
    }
}

void rt_htab_each(struct rt_htab *t, void (*fn)(struct rt_hnode *n, void *arg), void *arg)
{
    for (size_t i = 0; i < t->nbuckets; i++) {
        struct rt_hnode *n = t->buckets[i];
        while (n) {
            struct rt_hnode *next = n->next;
            fn(n, arg);
            n = next;
        }
    }
}

size_t rt_htab_count(const struct rt_htab *t)
{
    return t->count;
}

size_t rt_htab_max_chain(const struct rt_htab *t)
{
    size_t longest = 0;
    for (size_t i = 0; i < t->nbuckets; i++) {
        size_t n = 0;
        for (const struct rt_hnode *c = t->buckets[i]; c; c = c->next)
            n++;
        longest = n > longest ? n : longest;
    }
    return longest;
}
