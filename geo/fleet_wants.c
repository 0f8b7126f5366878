/*
 * fleet_wants.c: what the gateway asks of the fleet (fleet_int.h). A want
 * is a near query waiting for the follows of its circle to be ready (told
 * once through on_ready), or a watch holding its follows until released.
 * The owners' shares live here too: the connection that starts a follow
 * (or last holds it) is charged with it, so one client querying many areas
 * uses up its own share of max_follows, not the node's. Loop thread.
 */
#include "fleet_int.h"

#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------ */
/* Owners                                                                     */

static struct fleet_owner *owner_find(const struct geo_fleet *f, uint64_t id)
{
    uint64_t h = rt_hash_u64(id);
    for (struct rt_hnode *n = rt_htab_chain(&f->owners, h); n; n = n->next) {
        struct fleet_owner *o = RT_CONTAINER(n, struct fleet_owner, h);
        if (o->id == id)
            return o;
    }
    return NULL;
}

static struct fleet_owner *owner_new(struct geo_fleet *f, uint64_t id)
{
    struct fleet_owner *o = calloc(1, sizeof(*o));
    if (!o || rt_htab_reserve(&f->owners) != RT_OK) {
        free(o);
        return NULL;
    }
    o->id = id;
    o->h.hash = rt_hash_u64(id);
    rt_htab_insert(&f->owners, &o->h);
    return o;
}

/* Frees o once it is charged with nothing. */
static void owner_trim(struct geo_fleet *f, struct fleet_owner *o)
{
    if (!o || o->follows)
        return;
    if (!o->gone)
        rt_htab_remove(&f->owners, &o->h);
    free(o);
}

void fleet__uncharge(struct geo_fleet *f, struct fleet_follow *fo)
{
    struct fleet_owner *o = fo->owner;
    if (!o)
        return;
    fo->owner = NULL;
    o->follows--;
    owner_trim(f, o);
}

/* fo's charge goes to o (not NULL). */
static void charge(struct geo_fleet *f, struct fleet_follow *fo, struct fleet_owner *o)
{
    if (fo->owner == o)
        return;
    fleet__uncharge(f, fo);
    fo->owner = o;
    o->follows++;
}

void geo_fleet_forget(struct geo_fleet *f, uint64_t owner)
{
    struct fleet_owner *o = owner ? owner_find(f, owner) : NULL;
    if (!o)
        return;
    rt_htab_remove(&f->owners, &o->h);
    o->gone = true; /* freed with its last follow */
}

uint32_t geo_fleet_owner_follows(const struct geo_fleet *f, uint64_t owner)
{
    const struct fleet_owner *o = owner ? owner_find(f, owner) : NULL;
    return o ? o->follows : 0;
}

/* ------------------------------------------------------------------------ */
/* Wants                                                                      */

static void ready_push(struct geo_fleet *f, uint64_t ticket, bool partial)
{
    if (!rt_grow((void **)&f->readyq, &f->cap_ready, f->n_ready + 1, sizeof(*f->readyq)))
        return; /* the want stays pending; its owner times out */
    f->readyq[f->n_ready++] = (struct ready_report){ticket, partial};
}

static struct fleet_want *want_find(const struct geo_fleet *f, uint64_t ticket)
{
    uint64_t h = rt_hash_u64(ticket);
    for (struct rt_hnode *n = rt_htab_chain(&f->wants, h); n; n = n->next) {
        struct fleet_want *w = RT_CONTAINER(n, struct fleet_want, h);
        if (w->ticket == ticket)
            return w;
    }
    return NULL;
}

static void want_free(struct geo_fleet *f, struct fleet_want *w)
{
    rt_htab_remove(&f->wants, &w->h);
    free(w);
}

void fleet__follow_ready(struct geo_fleet *f, struct fleet_follow *fo, bool partial)
{
    for (uint32_t i = 0; i < fo->n_waiters; i++) {
        struct fleet_want *w = want_find(f, fo->waiters[i]);
        if (!w || w->reported)
            continue;
        w->partial = w->partial || partial;
        if (w->remaining && --w->remaining == 0) {
            w->reported = true;
            ready_push(f, w->ticket, w->partial);
            if (!w->hold)
                want_free(f, w);
        }
    }
    fo->n_waiters = 0;
}

struct move_ctx {
    struct fleet_follow *from, *to;
};

static void move_want(struct rt_hnode *n, void *arg)
{
    struct move_ctx *m = arg;
    struct fleet_want *w = RT_CONTAINER(n, struct fleet_want, h);
    for (uint32_t i = 0; i < w->n_follows; i++)
        if (w->follows[i] == m->from)
            w->follows[i] = m->to;
}

void fleet__wants_move(struct geo_fleet *f, struct fleet_follow *from, struct fleet_follow *to)
{
    struct move_ctx m = {from, to};
    rt_htab_each(&f->wants, move_want, &m);
}

void fleet__report_ready(struct geo_fleet *f)
{
    for (uint32_t i = 0; i < f->n_ready; i++) {
        struct ready_report r = f->readyq[i];
        if (f->on_ready)
            f->on_ready(f->arg, r.ticket, r.partial);
    }
    f->n_ready = 0;
}

/* The cells of the circle at the precision that needs at most FLEET_WANT_CELLS of them. */
static rt_status cells_of(const struct geo_fleet *f, double lat, double lon, double radius_m,
                          char (*cells)[GEO_CELL_BUF], size_t *n, int *p)
{
    size_t count = 0;
    rt_status st = geo_cover_precision(lat, lon, radius_m, f->share_p, FLEET_WANT_CELLS, p, &count);
    if (st == RT_OK)
        st = geo_cover(lat, lon, radius_m, *p, cells, FLEET_COVER_CAP, n);
    return st == RT_TOO_BIG ? RT_INVAL : st;
}

/* The want's follows, made where missing (charged to o); touched gets each once. */
static rt_status follow_cells(struct geo_fleet *f, struct fleet_want *w, struct fleet_owner *o,
                              const char *space, size_t space_len, char (*cells)[GEO_CELL_BUF],
                              size_t n, int p, struct fleet_follow **touched, uint32_t *nt)
{
    for (size_t i = 0; i < n; i++) {
        struct fleet_follow *fo = fleet__covering(f, space, space_len, cells[i], (size_t)p);
        if (!fo) {
            rt_status st = fleet__follow_new(f, space, space_len, cells[i], (size_t)p, &fo);
            if (st != RT_OK)
                return st;
            if (o)
                charge(f, fo, o);
        }
        bool dup = false;
        for (uint32_t j = 0; j < *nt && !dup; j++)
            dup = touched[j] == fo;
        if (dup)
            continue;
        touched[(*nt)++] = fo;
        fo->last_used = f->now;
        if (!fo->ready) {
            if (!rt_grow((void **)&fo->waiters, &fo->cap_waiters, fo->n_waiters + 1,
                         sizeof(*fo->waiters)))
                return RT_NOMEM;
            fo->waiters[fo->n_waiters++] = w->ticket;
            w->remaining++;
        }
    }
    return RT_OK;
}

rt_status geo_fleet_want(struct geo_fleet *f, uint64_t owner, const char *space, size_t space_len,
                         double lat, double lon, double radius_m, bool hold, uint64_t now_ms,
                         uint64_t *ticket, bool *ready)
{
    if (now_ms > f->now)
        f->now = now_ms;
    *ticket = 0;
    *ready = false;
    if (!geo__space_name_ok(space, space_len))
        return RT_INVAL;
    int p = 0;
    char cells[FLEET_COVER_CAP][GEO_CELL_BUF];
    size_t n = 0;
    rt_status st = cells_of(f, lat, lon, radius_m, cells, &n, &p);
    if (st != RT_OK)
        return st;
    /* The cells not followed yet: one new follow each (at most 16 lookups of up to p). */
    uint32_t need = 0;
    for (size_t i = 0; i < n; i++)
        need += fleet__covering(f, space, space_len, cells[i], (size_t)p) ? 0 : 1;
    struct fleet_owner *o = owner ? owner_find(f, owner) : NULL;
    if (need && o && o->follows && o->follows + need > f->max_owner) {
        f->st.refused_share++;
        return RT_AGAIN;
    }
    if (need && rt_htab_count(&f->follows) + need > f->max_follows) {
        f->st.refused_limit++;
        return RT_LIMIT;
    }
    if (owner && !o && (need || hold) && !(o = owner_new(f, owner)))
        return RT_NOMEM;
    struct fleet_want *w = calloc(1, sizeof(*w));
    if (!w || rt_htab_reserve(&f->wants) != RT_OK) {
        free(w);
        owner_trim(f, o);
        return RT_NOMEM;
    }
    w->ticket = ++f->next_ticket;
    w->hold = hold;
    struct fleet_follow *touched[FLEET_COVER_CAP];
    uint32_t nt = 0;
    st = follow_cells(f, w, o, space, space_len, cells, n, p, touched, &nt);
    if (st != RT_OK) {
        free(w); /* follows made stay and linger; waiters of this ticket are ignored */
        owner_trim(f, o);
        return st;
    }
    if (hold) {
        for (uint32_t j = 0; j < nt; j++) {
            touched[j]->holds++;
            w->follows[w->n_follows++] = touched[j];
            if (o)
                charge(f, touched[j], o); /* the last holder pays */
        }
    }
    owner_trim(f, o);
    *ticket = w->ticket;
    *ready = w->remaining == 0;
    if (*ready && !hold) {
        free(w);
        return RT_OK;
    }
    w->reported = *ready;
    w->h.hash = rt_hash_u64(w->ticket);
    rt_htab_insert(&f->wants, &w->h);
    return RT_OK;
}

void geo_fleet_release(struct geo_fleet *f, uint64_t ticket)
{
    struct fleet_want *w = want_find(f, ticket);
    if (!w)
        return;
    for (uint32_t i = 0; i < w->n_follows; i++) {
        w->follows[i]->holds--;
        w->follows[i]->last_used = f->now;
    }
    want_free(f, w);
}

static void free_want_cb(struct rt_hnode *n, void *arg)
{
    (void)arg;
    free(RT_CONTAINER(n, struct fleet_want, h));
}

void fleet__free_wants(struct geo_fleet *f)
{
    rt_htab_each(&f->wants, free_want_cb, NULL);
    rt_htab_free(&f->wants);
}
