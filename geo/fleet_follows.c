/*
 * fleet_follows.c: the (space, cell prefix) pairs this node follows
 * (fleet_int.h): each one's bus subscription, made on first need and
 * dropped after lingering unused; a coarser follow swallows the finer ones
 * inside it, so no two overlap and no delta comes twice; and the resyncs,
 * which ask for every follow's snapshot again. Loop thread.
 */
#include "fleet_int.h"

#include <stdlib.h>
#include <string.h>

struct fleet_follow *fleet__follow_find(const struct geo_fleet *f, const char *space, size_t slen,
                                        const char *prefix, size_t plen)
{
    uint64_t h = fleet__key_hash(space, slen, prefix, plen);
    for (struct rt_hnode *n = rt_htab_chain(&f->follows, h); n; n = n->next) {
        struct fleet_follow *fo = RT_CONTAINER(n, struct fleet_follow, h);
        if (n->hash == h && fo->space_len == slen && fo->prefix_len == plen &&
            memcmp(fo->space, space, slen) == 0 && memcmp(fo->prefix, prefix, plen) == 0)
            return fo;
    }
    return NULL;
}

struct fleet_follow *fleet__covering(const struct geo_fleet *f, const char *space, size_t slen,
                                     const char *cell, size_t clen)
{
    for (size_t k = 1; k <= clen; k++) {
        struct fleet_follow *fo = fleet__follow_find(f, space, slen, cell, k);
        if (fo)
            return fo;
    }
    return NULL;
}

static void follow_unlink(struct geo_fleet *f, struct fleet_follow *fo)
{
    rt_htab_remove(&f->follows, &fo->h);
    if (fo->prev)
        fo->prev->next = fo->next;
    else
        f->follow_list = fo->next;
    if (fo->next)
        fo->next->prev = fo->prev;
}

/* Unsubscribes, unlinks and frees fo (its members are the caller's business). */
static void follow_free(struct geo_fleet *f, struct fleet_follow *fo)
{
    f->bus.unsubscribe(f->bus.ctx, fo->sub);
    follow_unlink(f, fo);
    fleet__uncharge(f, fo);
    fleet__snapshot_free(fo->snap);
    free(fo->waiters);
    free(fo);
}

/*
 * fo (a finer prefix) is inside nf: nf takes over its holds and waiters, and
 * fo goes without a sweep (nf's snapshot covers its members).
 */
static void follow_merge(struct geo_fleet *f, struct fleet_follow *nf, struct fleet_follow *fo)
{
    nf->holds += fo->holds;
    nf->last_used = nf->last_used > fo->last_used ? nf->last_used : fo->last_used;
    for (uint32_t i = 0; i < fo->n_waiters; i++)
        if (rt_grow((void **)&nf->waiters, &nf->cap_waiters, nf->n_waiters + 1,
                    sizeof(*nf->waiters)))
            nf->waiters[nf->n_waiters++] = fo->waiters[i];
    fleet__wants_move(f, fo, nf);
    follow_free(f, fo);
}

/* Folds the follows of finer prefixes inside nf into it. */
static void follow_absorb(struct geo_fleet *f, struct fleet_follow *nf)
{
    for (struct fleet_follow *fo = f->follow_list, *next; fo; fo = next) {
        next = fo->next;
        if (fo != nf && fo->prefix_len > nf->prefix_len && fo->space_len == nf->space_len &&
            memcmp(fo->space, nf->space, nf->space_len) == 0 &&
            memcmp(fo->prefix, nf->prefix, nf->prefix_len) == 0)
            follow_merge(f, nf, fo);
    }
}

rt_status fleet__follow_new(struct geo_fleet *f, const char *space, size_t slen, const char *prefix,
                            size_t plen, struct fleet_follow **out)
{
    if (rt_htab_count(&f->follows) >= f->max_follows)
        return RT_LIMIT;
    struct fleet_follow *fo = calloc(1, sizeof(*fo));
    if (!fo || rt_htab_reserve(&f->follows) != RT_OK) {
        free(fo);
        return RT_NOMEM;
    }
    memcpy(fo->space, space, slen);
    memcpy(fo->prefix, prefix, plen);
    fo->space_len = slen;
    fo->prefix_len = plen;
    char subject[GEO_FLEET_SUBJECT_MAX];
    fleet_wire_delta_subject(subject, sizeof(subject), space, slen, prefix, plen, f->share_p);
    fo->sub = f->bus.subscribe(f->bus.ctx, subject);
    if (!fo->sub) {
        free(fo);
        return RT_UNAVAILABLE;
    }
    fo->h.hash = fleet__key_hash(space, slen, prefix, plen);
    rt_htab_insert(&f->follows, &fo->h);
    fo->next = f->follow_list;
    if (f->follow_list)
        f->follow_list->prev = fo;
    f->follow_list = fo;
    fo->last_used = f->now;
    if (fleet__snapshot_start(f, fo, NULL) != RT_OK) {
        fo->ready = true; /* deltas still come; the next resync fills it */
        f->resync_wanted = true;
    }
    follow_absorb(f, fo);
    *out = fo;
    return RT_OK;
}

/* Unfollows: the members only fo covered go (watchers get leave events). */
static void follow_drop(struct geo_fleet *f, struct fleet_follow *fo)
{
    f->bus.unsubscribe(f->bus.ctx, fo->sub);
    fo->sub = NULL;
    follow_unlink(f, fo);
    fleet__sweep_uncovered(f, fo); /* fo is out of the table: only others cover now */
    fleet__uncharge(f, fo);
    fleet__snapshot_free(fo->snap);
    free(fo->waiters);
    free(fo);
}

void fleet__tick_follows(struct geo_fleet *f)
{
    for (struct fleet_follow *fo = f->follow_list, *next; fo; fo = next) {
        next = fo->next;
        if (fo->snap)
            fleet__snapshot_check(f, fo);
        else if (!fo->holds && !fo->n_waiters && f->now - fo->last_used >= f->linger_ms)
            follow_drop(f, fo);
    }
}

void fleet__resync_all(struct geo_fleet *f)
{
    f->st.resyncs++;
    f->last_resync = f->now;
    f->resync_wanted = false;
    for (struct fleet_follow *fo = f->follow_list; fo; fo = fo->next)
        fleet__snapshot_start(f, fo, NULL);
}

void fleet__resync_node(struct geo_fleet *f, struct fleet_node *nd)
{
    if (!f->follow_list)
        return;
    f->st.resyncs++;
    for (struct fleet_follow *fo = f->follow_list; fo; fo = fo->next)
        fleet__snapshot_start(f, fo, nd);
}

void fleet__free_follows(struct geo_fleet *f)
{
    while (f->follow_list)
        follow_free(f, f->follow_list); /* the last one charged to an owner frees it */
}
