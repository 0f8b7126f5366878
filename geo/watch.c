/*
 * watch.c: watches and their events.
 *
 * A watch registers in the cells that cover its circle, at the precision
 * picked for it (at most the index precision, so that it needs at most
 * cover_max_cells cells). A member's cell at the index precision lies in
 * exactly one cell of each coarser precision, so the watches that can see a
 * member are found by looking up its cell's prefix at each precision that
 * has registrations: a change looks only at the watches of the member's old
 * and new cells. Whether a member is inside is decided from its positions
 * alone (no per-watch state): inside before and after is a move, only after
 * a join, only before a leave.
 */
#include "geo_int.h"

#include <stdlib.h>
#include <string.h>

#define KEY(code, p) ((code) | ((uint64_t)(p) << 60))

static struct geo_wcell *wcell_find(const struct geo_space *sp, uint64_t key)
{
    uint64_t h = rt_hash_u64_keyed(key);
    for (struct rt_hnode *n = rt_htab_chain(&sp->wcells, h); n; n = n->next) {
        struct geo_wcell *c = GEO__CONTAINER(n, struct geo_wcell, hnode);
        if (c->key == key)
            return c;
    }
    return NULL;
}

static rt_status wcell_get(struct geo *g, struct geo_space *sp, uint64_t key,
                           struct geo_wcell **out)
{
    *out = wcell_find(sp, key);
    if (*out)
        return RT_OK;
    if (rt_htab_reserve(&sp->wcells) != RT_OK)
        return RT_NOMEM;
    struct geo_wcell *c = calloc(1, sizeof(*c));
    if (!c)
        return RT_NOMEM;
    c->key = key;
    c->hnode.hash = rt_hash_u64_keyed(key);
    rt_htab_insert(&sp->wcells, &c->hnode);
    g->st.watch_cells++;
    *out = c;
    return RT_OK;
}

static void reg_link(struct geo_space *sp, struct geo_wcell *c, struct geo_wreg *r, int p)
{
    r->wcell = c;
    r->prev = NULL;
    r->next = c->head;
    if (c->head)
        c->head->prev = r;
    c->head = r;
    sp->wregs_at[p]++;
}

static void reg_unlink(struct geo *g, struct geo_space *sp, struct geo_wreg *r, int p)
{
    struct geo_wcell *c = r->wcell;
    if (r->prev)
        r->prev->next = r->next;
    else
        c->head = r->next;
    if (r->next)
        r->next->prev = r->prev;
    sp->wregs_at[p]--;
    if (!c->head) {
        rt_htab_remove(&sp->wcells, &c->hnode);
        g->st.watch_cells--;
        free(c);
    }
}

static void conn_link(struct geo_conn *c, struct geo_watch *w)
{
    w->conn = c;
    w->conn_prev = NULL;
    w->conn_next = c->watches;
    if (c->watches)
        c->watches->conn_prev = w;
    c->watches = w;
}

static void conn_unlink(struct geo_watch *w)
{
    if (w->conn_prev)
        w->conn_prev->conn_next = w->conn_next;
    else
        w->conn->watches = w->conn_next;
    if (w->conn_next)
        w->conn_next->conn_prev = w->conn_prev;
}

/* Unregisters the first n registrations of w. */
static void regs_unlink(struct geo *g, struct geo_watch *w, size_t n)
{
    for (size_t i = 0; i < n; i++)
        reg_unlink(g, w->space, &w->regs[i], w->p);
}

/* Registers w in the cells of span s; on failure nothing stays registered. */
static rt_status regs_link(struct geo *g, struct geo_watch *w, const struct geo__span *s)
{
    for (size_t i = 0; i < w->nregs; i++) {
        struct geo_wcell *c;
        if (wcell_get(g, w->space, KEY(geo__span_code(s, i), s->p), &c) != RT_OK) {
            regs_unlink(g, w, i);
            return RT_NOMEM;
        }
        w->regs[i].watch = w;
        reg_link(w->space, c, &w->regs[i], s->p);
    }
    return RT_OK;
}

/* A watch block for the circle, registered in its cells; not yet linked. */
static rt_status watch_make(struct geo *g, struct geo_space *sp, double lat, double lon,
                            double radius_m, struct geo_watch **out)
{
    struct geo__circle c;
    struct geo__span s;
    geo__circle_init(&c, lat, lon, radius_m);
    geo__span_at(&c, geo__choose_precision(&c, g->precision, g->cover_max_cells), &s);
    size_t n = (size_t)geo__span_count(&s); /* at most 32, at precision 1 */
    struct geo_watch *w = calloc(1, sizeof(*w) + n * sizeof(w->regs[0]));
    if (!w)
        return RT_NOMEM;
    w->space = sp;
    w->lat = lat;
    w->lon = lon;
    w->radius_m = radius_m;
    w->p = s.p;
    w->nregs = n;
    if (regs_link(g, w, &s) != RT_OK) {
        free(w);
        return RT_NOMEM;
    }
    *out = w;
    return RT_OK;
}

static rt_status watch_add(struct geo *g, struct geo_space *sp, double lat, double lon,
                           double radius_m, uint64_t conn, uint64_t *watch_id)
{
    struct geo_conn *c;
    struct geo_watch *w;
    if (rt_htab_reserve(&g->watches) != RT_OK || geo__conn_get(g, conn, &c) != RT_OK)
        return RT_NOMEM;
    if (watch_make(g, sp, lat, lon, radius_m, &w) != RT_OK) {
        geo__conn_release(g, c);
        return RT_NOMEM;
    }
    w->id = ++g->next_watch_id;
    w->hnode.hash = rt_hash_u64(w->id);
    rt_htab_insert(&g->watches, &w->hnode);
    conn_link(c, w);
    sp->nwatches++;
    g->st.watches++;
    *watch_id = w->id;
    return RT_OK;
}

/* Adds a watch (see geo.h). Loop thread. */
rt_status geo_watch_add(struct geo *g, const char *space, size_t space_len, double lat, double lon,
                        double radius_m, uint64_t conn, uint64_t *watch_id)
{
    *watch_id = 0;
    if (!geo__space_name_ok(space, space_len) || !geo__circle_ok(lat, lon, radius_m))
        return RT_INVAL;
    if (g->busy)
        return RT_AGAIN;
    if (g->max_watches && g->st.watches >= g->max_watches)
        return RT_LIMIT;
    struct geo_space *sp;
    rt_status st = geo__space_get(g, space, space_len, &sp);
    if (st != RT_OK)
        return st;
    st = watch_add(g, sp, lat, lon, radius_m, conn, watch_id);
    if (st != RT_OK)
        geo__space_release(g, sp);
    return st;
}

/* Unlinks and frees w, and its space if that empties; not its connection entry. */
void geo__watch_free(struct geo *g, struct geo_watch *w)
{
    struct geo_space *sp = w->space;
    regs_unlink(g, w, w->nregs);
    rt_htab_remove(&g->watches, &w->hnode);
    conn_unlink(w);
    sp->nwatches--;
    g->st.watches--;
    free(w);
    geo__space_release(g, sp);
}

static struct geo_watch *watch_find(const struct geo *g, uint64_t id)
{
    uint64_t h = rt_hash_u64(id);
    for (struct rt_hnode *n = rt_htab_chain(&g->watches, h); n; n = n->next) {
        struct geo_watch *w = GEO__CONTAINER(n, struct geo_watch, hnode);
        if (w->id == id)
            return w;
    }
    return NULL;
}

/* Removes a watch of conn (see geo.h). Loop thread. */
rt_status geo_watch_remove(struct geo *g, uint64_t watch_id, uint64_t conn)
{
    if (g->busy)
        return RT_AGAIN;
    struct geo_watch *w = watch_find(g, watch_id);
    if (!w || w->conn->id != conn)
        return RT_NOT_FOUND;
    struct geo_conn *c = w->conn;
    geo__watch_free(g, w);
    geo__conn_release(g, c);
    return RT_OK;
}

/* ------------------------------------------------------------------------ */
/* Events                                                                     */

struct emit_ctx {
    struct geo *g;
    struct geo_member *m;
    struct geo_member_view view;
    bool had_old, has_new;
    double old_lat, old_lon;
};

static void report(struct emit_ctx *e, struct geo_watch *w, enum geo_event ev)
{
    e->g->st.events++;
    if (e->g->on_event)
        e->g->on_event(e->g->arg, w->id, w->conn->id, ev, &e->view);
}

static void judge(struct emit_ctx *e, struct geo_watch *w)
{
    bool was = e->had_old && geo__haversine(w->lat, w->lon, e->old_lat, e->old_lon) <= w->radius_m;
    bool is = e->has_new && geo__haversine(w->lat, w->lon, e->m->lat, e->m->lon) <= w->radius_m;
    if (is)
        report(e, w, was ? GEO_EV_MOVE : GEO_EV_JOIN);
    else if (was)
        report(e, w, GEO_EV_LEAVE);
}

/* Judges every watch registered over `code`, once per pass (the stamp). */
static void visit_code(struct emit_ctx *e, uint64_t code)
{
    struct geo *g = e->g;
    const struct geo_space *sp = e->m->space;
    for (int p = 1; p <= g->precision; p++) {
        if (!sp->wregs_at[p])
            continue;
        uint64_t prefix = code >> (5 * (g->precision - p));
        struct geo_wcell *c = wcell_find(sp, KEY(prefix, p));
        for (struct geo_wreg *r = c ? c->head : NULL; r; r = r->next) {
            if (r->watch->stamp == g->stamp)
                continue;
            r->watch->stamp = g->stamp;
            judge(e, r->watch);
        }
    }
}

/*
 * Reports the events of one change of m. The callback runs with g->busy set,
 * so it cannot change the lists being walked here.
 */
void geo__emit(struct geo *g, struct geo_member *m, bool had_old, double old_lat, double old_lon,
               uint64_t old_code, bool has_new)
{
    if (!m->space->nwatches)
        return;
    struct emit_ctx e = {
        .g = g,
        .m = m,
        .had_old = had_old,
        .has_new = has_new,
        .old_lat = old_lat,
        .old_lon = old_lon,
    };
    geo__member_view(m, &e.view);
    g->stamp++;
    g->busy = true;
    if (had_old)
        visit_code(&e, old_code);
    if (has_new && (!had_old || old_code != m->cell->code))
        visit_code(&e, m->cell->code);
    g->busy = false;
}
