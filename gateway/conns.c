/*
 * conns.c: connection ids. An id is (generation << 32 | slot + 1), so an id
 * held past its connection's end (by the fan-out, or a pending publish)
 * finds nothing rather than a stranger.
 */
#include "gw.h"

#include <stdlib.h>
#include <string.h>

rt_status gw_conns_init(struct gw_conns *t, uint32_t cap)
{
    memset(t, 0, sizeof *t);
    t->slots = calloc(cap, sizeof *t->slots);
    t->gens = calloc(cap, sizeof *t->gens);
    t->free_list = malloc(sizeof *t->free_list * cap);
    if (!t->slots || !t->gens || !t->free_list) {
        gw_conns_free(t);
        return RT_NOMEM;
    }
    t->cap = cap;
    for (uint32_t i = 0; i < cap; i++)
        t->free_list[i] = cap - 1 - i;
    t->n_free = cap;
    return RT_OK;
}

void gw_conns_free(struct gw_conns *t)
{
    free(t->slots);
    free(t->gens);
    free(t->free_list);
    memset(t, 0, sizeof *t);
}

uint64_t gw_conns_add(struct gw_conns *t, struct gw_session *s)
{
    if (!t->n_free)
        return 0;
    uint32_t slot = t->free_list[--t->n_free];
    if (slot >= t->used)
        t->used = slot + 1;
    t->slots[slot] = s;
    t->gens[slot]++;
    return ((uint64_t)t->gens[slot] << 32) | (uint64_t)(slot + 1);
}

static bool decode(const struct gw_conns *t, uint64_t id, uint32_t *slot)
{
    uint32_t s = (uint32_t)(id & 0xffffffffu);
    if (s == 0 || s > t->cap || t->gens[s - 1] != (uint32_t)(id >> 32))
        return false;
    *slot = s - 1;
    return true;
}

void gw_conns_remove(struct gw_conns *t, uint64_t id)
{
    uint32_t slot;
    if (!decode(t, id, &slot) || !t->slots[slot])
        return;
    t->slots[slot] = NULL;
    t->free_list[t->n_free++] = slot;
}

struct gw_session *gw_conns_get(const struct gw_conns *t, uint64_t id)
{
    uint32_t slot;
    return decode(t, id, &slot) ? t->slots[slot] : NULL;
}
