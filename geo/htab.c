/*
 * htab.c: a small intrusive chained hash table. The owner embeds a
 * geo_hnode, sets its hash and compares keys itself while walking a chain,
 * so one table type serves spaces, members, cells, watches and connections.
 * Buckets double when the load reaches 1 and never shrink (a space that
 * empties is freed whole, tables with it).
 */
#include "geo_int.h"

#include <stdlib.h>

#define HTAB_MIN_BUCKETS 8u

/* FNV-1a, 64 bit, finished with a mixer: short keys (client ids, names). */
uint64_t geo__hash_bytes(const void *key, size_t len)
{
    const uint8_t *p = key;
    uint64_t h = 14695981039346656037ull;
    for (size_t i = 0; i < len; i++) {
        h ^= p[i];
        h *= 1099511628211ull;
    }
    return geo__hash_u64(h);
}

/* The splitmix64 finaliser: cell codes differ in their low bits only. */
uint64_t geo__hash_u64(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    x ^= x >> 31;
    return x;
}

/* An empty table; nothing is allocated until the first reserve. */
void geo__htab_init(struct geo_htab *t)
{
    t->buckets = NULL;
    t->nbuckets = 0;
    t->count = 0;
}

/* Frees the bucket array (not the nodes) and leaves the table empty. */
void geo__htab_free(struct geo_htab *t)
{
    free(t->buckets);
    geo__htab_init(t);
}

/* The chain that may hold `hash`; the caller walks it comparing keys. */
struct geo_hnode *geo__htab_chain(const struct geo_htab *t, uint64_t hash)
{
    if (t->nbuckets == 0)
        return NULL;
    return t->buckets[hash & (t->nbuckets - 1)];
}

static rt_status htab_grow(struct geo_htab *t)
{
    size_t nb = t->nbuckets ? t->nbuckets * 2 : HTAB_MIN_BUCKETS;
    struct geo_hnode **b = calloc(nb, sizeof(*b));
    if (!b)
        return RT_NOMEM;
    for (size_t i = 0; i < t->nbuckets; i++) {
        struct geo_hnode *n = t->buckets[i];
        while (n) {
            struct geo_hnode *next = n->next;
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

/* Room for one more node. RT_NOMEM only while the table has no buckets. */
rt_status geo__htab_reserve(struct geo_htab *t)
{
    if (t->count < t->nbuckets)
        return RT_OK;
    if (htab_grow(t) != RT_OK && t->nbuckets == 0)
        return RT_NOMEM;
    return RT_OK; /* could not grow: longer chains, still correct */
}

/* Links n (hash set by the caller) after a successful reserve; never allocates. */
void geo__htab_insert(struct geo_htab *t, struct geo_hnode *n)
{
    size_t i = (size_t)(n->hash & (t->nbuckets - 1));
    n->next = t->buckets[i];
    t->buckets[i] = n;
    t->count++;
}

/* Unlinks n, which must be in t. */
void geo__htab_remove(struct geo_htab *t, struct geo_hnode *n)
{
    struct geo_hnode **pp = &t->buckets[n->hash & (t->nbuckets - 1)];
    while (*pp && *pp != n)
        pp = &(*pp)->next;
    if (*pp) {
        *pp = n->next;
        t->count--;
    }
}
