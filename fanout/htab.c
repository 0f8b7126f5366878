/*
 * htab.c: a small intrusive chained hash table keyed by byte strings, used
 * for the channel table and the memory engine's dedup table. Buckets double
 * when the load reaches 1; they never shrink (a table that once held many
 * channels keeps its bucket array, 8 bytes per bucket).
 */
#include "fanout_int.h"

#include <stdlib.h>
#include <string.h>

#define HTAB_MIN_BUCKETS 16u

/* FNV-1a, 64 bit: short keys, no adversarial load worth a keyed hash here. */
uint64_t fo__hash(const void *key, size_t len)
{
    const uint8_t *p = key;
    uint64_t h = 14695981039346656037ull;
    for (size_t i = 0; i < len; i++) {
        h ^= p[i];
        h *= 1099511628211ull;
    }
    return h;
}

/* An empty table; nothing is allocated until the first insert. Loop thread. */
void fo__htab_init(struct fo_htab *t)
{
    t->buckets = NULL;
    t->nbuckets = 0;
    t->count = 0;
}

/* Frees the bucket array (not the nodes) and leaves the table empty. */
void fo__htab_free(struct fo_htab *t)
{
    free(t->buckets);
    fo__htab_init(t);
}

static bool key_eq(const struct fo_hnode *n, uint64_t hash, const char *key, size_t len)
{
    return n->hash == hash && n->key_len == len && memcmp(n->key, key, len) == 0;
}

/* The node with this key, or NULL. */
struct fo_hnode *fo__htab_find(const struct fo_htab *t, const char *key, size_t len)
{
    if (t->nbuckets == 0)
        return NULL;
    uint64_t h = fo__hash(key, len);
    for (struct fo_hnode *n = t->buckets[h & (t->nbuckets - 1)]; n; n = n->next) {
        if (key_eq(n, h, key, len))
            return n;
    }
    return NULL;
}

static rt_status htab_grow(struct fo_htab *t)
{
    size_t nb = t->nbuckets ? t->nbuckets * 2 : HTAB_MIN_BUCKETS;
    struct fo_hnode **b = calloc(nb, sizeof(*b));
    if (!b)
        return RT_NOMEM;
    for (size_t i = 0; i < t->nbuckets; i++) {
        struct fo_hnode *n = t->buckets[i];
        while (n) {
            struct fo_hnode *next = n->next;
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

/*
 * Links n (its key and key_len set by the caller, not already present).
 * RT_NOMEM only when the first bucket array cannot be allocated.
 */
rt_status fo__htab_insert(struct fo_htab *t, struct fo_hnode *n)
{
    if (t->count >= t->nbuckets && htab_grow(t) != RT_OK) {
        if (t->nbuckets == 0)
            return RT_NOMEM;
        /* Could not grow: chains get longer, still correct. */
    }
    n->hash = fo__hash(n->key, n->key_len);
    size_t i = (size_t)(n->hash & (t->nbuckets - 1));
    n->next = t->buckets[i];
    t->buckets[i] = n;
    t->count++;
    return RT_OK;
}

/* Unlinks n, which must be in t. */
void fo__htab_remove(struct fo_htab *t, struct fo_hnode *n)
{
    struct fo_hnode **pp = &t->buckets[n->hash & (t->nbuckets - 1)];
    while (*pp && *pp != n)
        pp = &(*pp)->next;
    if (*pp) {
        *pp = n->next;
        t->count--;
    }
}

/* Calls fn on every node; fn may unlink or free that node, not others. */
void fo__htab_each(struct fo_htab *t, void (*fn)(struct fo_hnode *n, void *arg), void *arg)
{
    for (size_t i = 0; i < t->nbuckets; i++) {
        struct fo_hnode *n = t->buckets[i];
        while (n) {
            struct fo_hnode *next = n->next;
            fn(n, arg);
            n = next;
        }
    }
}
