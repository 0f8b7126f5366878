/*
 * peers_table.c: the other nodes heard from (peers.h). Each gets a token
 * the owner's state names it by; the table is bounded (a flood of made-up
 * ids cannot grow it), and a node silent for the owner's ttl goes. What a
 * node means (heartbeats answered, what goes with it) stays the owner's.
 * The owner's thread.
 */
#include "peers.h"

#include <stdlib.h>
#include <string.h>

void peers_table_init(struct peers_table *t, size_t node_size, uint64_t token_bits, uint32_t max)
{
    memset(t, 0, sizeof(*t));
    rt_htab_init(&t->by_id);
    t->token_bits = token_bits;
    t->node_size = node_size < sizeof(struct peers_node) ? sizeof(struct peers_node) : node_size;
    t->max = max;
}

static void free_node_cb(struct rt_hnode *n, void *arg)
{
    (void)arg;
    free(RT_CONTAINER(n, struct peers_node, h));
}

void peers_table_free(struct peers_table *t)
{
    rt_htab_each(&t->by_id, free_node_cb, NULL);
    rt_htab_free(&t->by_id);
    t->list = NULL;
}

size_t peers_count(const struct peers_table *t)
{
    return rt_htab_count(&t->by_id);
}

struct peers_node *peers_find(const struct peers_table *t, const char *id, size_t len)
{
    uint64_t h = rt_hash_bytes(id, len);
    for (struct rt_hnode *n = rt_htab_chain(&t->by_id, h); n; n = n->next) {
        struct peers_node *nd = RT_CONTAINER(n, struct peers_node, h);
        if (n->hash == h && nd->id_len == len && memcmp(nd->id, id, len) == 0)
            return nd;
    }
    return NULL;
}

struct peers_node *peers_get(struct peers_table *t, const char *id, size_t len, uint64_t now,
                             bool *created)
{
    *created = false;
    struct peers_node *nd = peers_find(t, id, len);
    if (nd || !peers_wire_node_ok(id, len) || peers_count(t) >= t->max)
        return nd;
    if (rt_htab_reserve(&t->by_id) != RT_OK || !(nd = calloc(1, t->node_size)))
        return NULL;
    memcpy(nd->id, id, len);
    nd->id_len = len;
    nd->token = t->token_bits | ++t->serial;
    nd->last_seen = now;
    nd->h.hash = rt_hash_bytes(id, len);
    rt_htab_insert(&t->by_id, &nd->h);
    nd->next = t->list;
    if (t->list)
        t->list->prev = nd;
    t->list = nd;
    *created = true;
    return nd;
}

void peers_remove(struct peers_table *t, struct peers_node *nd)
{
    rt_htab_remove(&t->by_id, &nd->h);
    if (nd->prev)
        nd->prev->next = nd->next;
    else
        t->list = nd->next;
    if (nd->next)
        nd->next->prev = nd->prev;
    free(nd);
}

size_t peers_expire(struct peers_table *t, uint64_t now, uint64_t ttl_ms, peers_gone_fn gone,
                    void *arg)
{
    size_t n = 0;
    for (struct peers_node *nd = t->list, *next; nd; nd = next) {
        next = nd->next;
        if (now - nd->last_seen >= ttl_ms) {
            gone(arg, nd);
            peers_remove(t, nd);
            n++;
        }
    }
    return n;
}

bool peers_gen_moved(struct peers_node *nd, bool created, uint64_t gen)
{
    bool moved = !created && nd->gen != gen;
    nd->gen = gen;
    return moved;
}
