/*
 * htab.c: lookups by byte-string key on top of rt_htab, for the channel
 * table, the memory engine's dedup table and the nats engine's in-flight
 * publishes.
 */
#include "fanout_int.h"

#include <string.h>

struct fo_hnode *fo__htab_find(const struct rt_htab *t, const char *key, size_t len)
{
    uint64_t h = rt_hash_bytes(key, len);
    for (struct rt_hnode *c = rt_htab_chain(t, h); c; c = c->next) {
        struct fo_hnode *n = FO__CONTAINER(c, struct fo_hnode, h);
        if (c->hash == h && n->key_len == len && memcmp(n->key, key, len) == 0)
            return n;
    }
    return NULL;
}

rt_status fo__htab_insert(struct rt_htab *t, struct fo_hnode *n)
{
    if (rt_htab_reserve(t) != RT_OK)
        return RT_NOMEM;
    n->h.hash = rt_hash_bytes(n->key, n->key_len);
    rt_htab_insert(t, &n->h);
    return RT_OK;
}
