/*
 * index.c: the per-node index. Spaces, connections, cells and members, and
 * the calls that change them (set, clear, remove by connection).
 *
 * Every object that exists only to hold others (space, connection, cell) is
 * created on first need and freed as soon as it is empty, so the index's
 * memory follows its population. geo_set allocates everything it may need
 * before it changes anything: a failure leaves the index as it was.
 */
#include "geo_int.h"

#include <stdlib.h>
#include <string.h>

/* 1..GEO_SPACE_MAX bytes; the characters are the gateway's to check. */
bool geo__space_name_ok(const char *name, size_t len)
{
    return name && len >= 1 && len <= GEO_SPACE_MAX;
}

/* ------------------------------------------------------------------------ */
/* Create / destroy                                                          */

/* Creates an index (see geo.h). Loop thread. */
rt_status geo_create(const struct geo_config *cfg, struct geo **out)
{
    struct geo_config defaults;
    memset(&defaults, 0, sizeof(defaults));
    if (!cfg)
        cfg = &defaults;
    *out = NULL;
    if (cfg->precision < 0 || cfg->precision > GEO_PRECISION_MAX)
        return RT_INVAL;
    struct geo *g = calloc(1, sizeof(*g));
    if (!g)
        return RT_NOMEM;
    g->precision = cfg->precision ? cfg->precision : GEO_PRECISION_DEFAULT;
    g->cover_max_cells = cfg->cover_max_cells ? cfg->cover_max_cells : GEO_COVER_CELLS;
    g->max_members = cfg->max_members;
    g->max_watches = cfg->max_watches;
    g->max_spaces = cfg->max_spaces;
    g->on_event = cfg->on_event;
    g->arg = cfg->arg;
    rt_htab_init(&g->spaces);
    rt_htab_init(&g->conns);
    rt_htab_init(&g->watches);
    *out = g;
    return RT_OK;
}

static void free_tree(struct geo_cell *c)
{
    while (c) {
        free_tree(c->left);
        struct geo_cell *right = c->right;
        for (struct geo_member *m = c->head, *next; m; m = next) {
            next = m->cell_next;
            free(m->meta);
            free(m);
        }
        free(c);
        c = right;
    }
}

/* rt_htab_each callback: frees the struct whose hnode is at *offset. */
static void free_node_cb(struct rt_hnode *n, void *arg)
{
    const size_t *offset = arg;
    free((char *)n - *offset);
}

static void free_chains(struct rt_htab *t, size_t offset)
{
    rt_htab_each(t, free_node_cb, &offset);
    rt_htab_free(t);
}

static void free_space(struct geo_space *sp)
{
    free_tree(sp->tree);
    rt_htab_free(&sp->members);
    rt_htab_free(&sp->cells);
    free_chains(&sp->wcells, offsetof(struct geo_wcell, hnode));
    free(sp);
}

static void free_space_cb(struct rt_hnode *n, void *arg)
{
    (void)arg;
    free_space(GEO__CONTAINER(n, struct geo_space, hnode));
}

/* Frees everything without events. NULL is a no-op. Loop thread. */
void geo_destroy(struct geo *g)
{
    if (!g)
        return;
    rt_htab_each(&g->spaces, free_space_cb, NULL);
    rt_htab_free(&g->spaces);
    free_chains(&g->watches, offsetof(struct geo_watch, hnode));
    free_chains(&g->conns, offsetof(struct geo_conn, hnode));
    free(g);
}

/* The index precision. Any thread that owns g. */
int geo_precision(const struct geo *g)
{
    return g->precision;
}

/* Copies the counters. Loop thread. */
void geo_get_stats(const struct geo *g, struct geo_stats *st)
{
    *st = g->st;
}

/* ------------------------------------------------------------------------ */
/* Spaces                                                                     */

struct geo_space *geo__space_find(const struct geo *g, const char *name, size_t len)
{
    uint64_t h = rt_hash_bytes(name, len);
    for (struct rt_hnode *n = rt_htab_chain(&g->spaces, h); n; n = n->next) {
        struct geo_space *sp = GEO__CONTAINER(n, struct geo_space, hnode);
        if (n->hash == h && sp->name_len == len && memcmp(sp->name, name, len) == 0)
            return sp;
    }
    return NULL;
}

/* The space with this name, created if absent. RT_LIMIT, RT_NOMEM. Loop thread. */
rt_status geo__space_get(struct geo *g, const char *name, size_t len, struct geo_space **out)
{
    *out = geo__space_find(g, name, len);
    if (*out)
        return RT_OK;
    if (g->max_spaces && g->st.spaces >= g->max_spaces)
        return RT_LIMIT;
    if (rt_htab_reserve(&g->spaces) != RT_OK)
        return RT_NOMEM;
    struct geo_space *sp = calloc(1, sizeof(*sp));
    if (!sp)
        return RT_NOMEM;
    memcpy(sp->name, name, len);
    sp->name_len = len;
    rt_htab_init(&sp->members);
    rt_htab_init(&sp->cells);
    rt_htab_init(&sp->wcells);
    sp->hnode.hash = rt_hash_bytes(name, len);
    rt_htab_insert(&g->spaces, &sp->hnode);
    g->st.spaces++;
    *out = sp;
    return RT_OK;
}

/* Frees the space if it holds neither members nor watches. Loop thread. */
void geo__space_release(struct geo *g, struct geo_space *sp)
{
    if (!sp || sp->nmembers || sp->nwatches)
        return;
    rt_htab_remove(&g->spaces, &sp->hnode);
    g->st.spaces--;
    free_space(sp);
}

/* ------------------------------------------------------------------------ */
/* Connections                                                                */

struct geo_conn *geo__conn_find(const struct geo *g, uint64_t id)
{
    uint64_t h = rt_hash_u64(id);
    for (struct rt_hnode *n = rt_htab_chain(&g->conns, h); n; n = n->next) {
        struct geo_conn *c = GEO__CONTAINER(n, struct geo_conn, hnode);
        if (c->id == id)
            return c;
    }
    return NULL;
}

/* The entry of a connection, created if absent. RT_NOMEM. Loop thread. */
rt_status geo__conn_get(struct geo *g, uint64_t id, struct geo_conn **out)
{
    *out = geo__conn_find(g, id);
    if (*out)
        return RT_OK;
    if (rt_htab_reserve(&g->conns) != RT_OK)
        return RT_NOMEM;
    struct geo_conn *c = calloc(1, sizeof(*c));
    if (!c)
        return RT_NOMEM;
    c->id = id;
    c->hnode.hash = rt_hash_u64(id);
    rt_htab_insert(&g->conns, &c->hnode);
    *out = c;
    return RT_OK;
}

/* Frees the entry if the connection owns nothing any more. Loop thread. */
void geo__conn_release(struct geo *g, struct geo_conn *c)
{
    if (!c || c->members || c->watches)
        return;
    rt_htab_remove(&g->conns, &c->hnode);
    free(c);
}

/* ------------------------------------------------------------------------ */
/* Cells                                                                      */

struct geo_cell *geo__cell_find(const struct geo_space *sp, uint64_t code)
{
    uint64_t h = rt_hash_u64_keyed(code);
    for (struct rt_hnode *n = rt_htab_chain(&sp->cells, h); n; n = n->next) {
        struct geo_cell *c = GEO__CONTAINER(n, struct geo_cell, hnode);
        if (c->code == code)
            return c;
    }
    return NULL;
}

static rt_status cell_get(struct geo *g, struct geo_space *sp, uint64_t code, struct geo_cell **out)
{
    *out = geo__cell_find(sp, code);
    if (*out)
        return RT_OK;
    if (rt_htab_reserve(&sp->cells) != RT_OK)
        return RT_NOMEM;
    struct geo_cell *c = calloc(1, sizeof(*c));
    if (!c)
        return RT_NOMEM;
    c->code = code;
    geo__deinterleave(code, g->precision, &c->row, &c->col);
    c->hnode.hash = rt_hash_u64_keyed(code);
    rt_htab_insert(&sp->cells, &c->hnode);
    sp->tree = geo__tree_insert(sp->tree, c);
    g->st.cells++;
    *out = c;
    return RT_OK;
}

static void cell_release(struct geo *g, struct geo_space *sp, struct geo_cell *c)
{
    if (!c || c->head)
        return;
    rt_htab_remove(&sp->cells, &c->hnode);
    sp->tree = geo__tree_remove(sp->tree, c);
    g->st.cells--;
    free(c);
}

/* ------------------------------------------------------------------------ */
/* Members                                                                    */

static struct geo_member *member_find(const struct geo_space *sp, const char *client, size_t len)
{
    uint64_t h = rt_hash_bytes(client, len);
    for (struct rt_hnode *n = rt_htab_chain(&sp->members, h); n; n = n->next) {
        struct geo_member *m = GEO__CONTAINER(n, struct geo_member, hnode);
        if (n->hash == h && m->client_len == len && memcmp(m->strs, client, len) == 0)
            return m;
    }
    return NULL;
}

/* Fills a view that points into m. Loop thread. */
void geo__member_view(const struct geo_member *m, struct geo_member_view *v)
{
    v->space = m->space->name;
    v->space_len = m->space->name_len;
    v->client = m->strs;
    v->client_len = m->client_len;
    v->user = m->strs + m->client_len + 1;
    v->user_len = m->user_len;
    v->conn = m->conn->id;
    v->lat = m->lat;
    v->lon = m->lon;
    v->meta = m->meta;
    v->meta_len = m->meta_len;
    v->meta_enc = m->meta_enc;
    v->version = m->version;
}

/* A new unlinked member block holding the strings of `in`. */
static struct geo_member *member_alloc(const struct geo_member_in *in)
{
    struct geo_member *m = calloc(1, sizeof(*m) + in->client_len + in->user_len + 2);
    if (!m)
        return NULL;
    memcpy(m->strs, in->client, in->client_len);
    if (in->user_len)
        memcpy(m->strs + in->client_len + 1, in->user, in->user_len);
    m->client_len = (uint16_t)in->client_len;
    m->user_len = (uint16_t)in->user_len;
    m->hnode.hash = rt_hash_bytes(in->client, in->client_len);
    return m;
}

static void cell_link(struct geo_cell *c, struct geo_member *m)
{
    m->cell = c;
    m->cell_prev = NULL;
    m->cell_next = c->head;
    if (c->head)
        c->head->cell_prev = m;
    c->head = m;
    c->count++;
}

static void cell_unlink(struct geo_member *m)
{
    struct geo_cell *c = m->cell;
    if (m->cell_prev)
        m->cell_prev->cell_next = m->cell_next;
    else
        c->head = m->cell_next;
    if (m->cell_next)
        m->cell_next->cell_prev = m->cell_prev;
    c->count--;
}

static void conn_link(struct geo_conn *c, struct geo_member *m)
{
    m->conn = c;
    m->conn_prev = NULL;
    m->conn_next = c->members;
    if (c->members)
        c->members->conn_prev = m;
    c->members = m;
}

static void conn_unlink(struct geo_member *m)
{
    if (m->conn_prev)
        m->conn_prev->conn_next = m->conn_next;
    else
        m->conn->members = m->conn_next;
    if (m->conn_next)
        m->conn_next->conn_prev = m->conn_prev;
}

/* Links a member (strings set) into its space, cell and connection. */
static void member_link(struct geo *g, struct geo_space *sp, struct geo_cell *cell,
                        struct geo_conn *conn, struct geo_member *m)
{
    m->space = sp;
    rt_htab_insert(&sp->members, &m->hnode);
    cell_link(cell, m);
    conn_link(conn, m);
    sp->nmembers++;
    g->st.members++;
}

static void member_unlink(struct geo *g, struct geo_member *m)
{
    rt_htab_remove(&m->space->members, &m->hnode);
    cell_unlink(m);
    conn_unlink(m);
    m->space->nmembers--;
    g->st.members--;
}

/* Unlinks and frees a member, then its cell and space if they are empty. */
static void member_free(struct geo *g, struct geo_member *m)
{
    struct geo_space *sp = m->space;
    struct geo_cell *cell = m->cell;
    member_unlink(g, m);
    free(m->meta);
    free(m);
    cell_release(g, sp, cell);
    geo__space_release(g, sp);
}

/* ------------------------------------------------------------------------ */
/* geo_set                                                                    */

static rt_status check_member_in(const struct geo_member_in *in)
{
    if (!in || !geo__space_name_ok(in->space, in->space_len) || !in->client || in->client_len < 1 ||
        in->client_len > GEO_CLIENT_MAX || in->user_len > GEO_USER_MAX ||
        (in->user_len && !in->user) || !geo__coord_ok(in->lat, in->lon) ||
        (in->meta_len && !in->meta))
        return RT_INVAL;
    if (in->meta_len > GEO_META_MAX)
        return RT_TOO_BIG;
    return RT_OK;
}

/* What geo_set needs, allocated up front so that the change cannot fail. */
struct set_plan {
    struct geo_space *sp;
    struct geo_member *old;   /* the member as it is, or NULL */
    struct geo_member *fresh; /* a new block: new member, or the user changed */
    struct geo_conn *conn;
    struct geo_cell *cell;
    uint8_t *meta;
    uint64_t code;
};

static bool user_differs(const struct geo_member *m, const struct geo_member_in *in)
{
    return m->user_len != in->user_len ||
           (in->user_len && memcmp(m->strs + m->client_len + 1, in->user, in->user_len) != 0);
}

/* Gives back what a failed plan took. */
static void plan_undo(struct geo *g, struct set_plan *pl)
{
    free(pl->fresh);
    free(pl->meta);
    if (pl->sp)
        cell_release(g, pl->sp, pl->cell);
    geo__conn_release(g, pl->conn);
    geo__space_release(g, pl->sp);
}

static rt_status plan_alloc(struct geo *g, const struct geo_member_in *in, struct set_plan *pl)
{
    if (in->meta_len) {
        pl->meta = malloc(in->meta_len);
        if (!pl->meta)
            return RT_NOMEM;
        memcpy(pl->meta, in->meta, in->meta_len);
    }
    rt_status st = geo__conn_get(g, in->conn, &pl->conn);
    if (st == RT_OK)
        st = cell_get(g, pl->sp, pl->code, &pl->cell);
    if (st == RT_OK && (!pl->old || user_differs(pl->old, in))) {
        if (rt_htab_reserve(&pl->sp->members) != RT_OK)
            return RT_NOMEM;
        pl->fresh = member_alloc(in);
        if (!pl->fresh)
            return RT_NOMEM;
    }
    return st;
}

static rt_status plan_make(struct geo *g, const struct geo_member_in *in, struct set_plan *pl)
{
    memset(pl, 0, sizeof(*pl));
    pl->code = geo__code(in->lat, in->lon, g->precision);
    rt_status st = geo__space_get(g, in->space, in->space_len, &pl->sp);
    if (st != RT_OK)
        return st;
    pl->old = member_find(pl->sp, in->client, in->client_len);
    if (!pl->old && g->max_members && g->st.members >= g->max_members)
        st = RT_LIMIT;
    if (st == RT_OK)
        st = plan_alloc(g, in, pl);
    if (st != RT_OK)
        plan_undo(g, pl);
    return st;
}

/* Moves the member m into the plan's cell and connection; nothing fails. */
static struct geo_member *plan_apply(struct geo *g, const struct geo_member_in *in,
                                     struct set_plan *pl)
{
    struct geo_member *m = pl->old;
    if (pl->fresh) {
        if (m) {
            member_unlink(g, m);
            free(m->meta);
            free(m);
        }
        m = pl->fresh;
        member_link(g, pl->sp, pl->cell, pl->conn, m);
    } else {
        if (m->cell != pl->cell) {
            cell_unlink(m);
            cell_link(pl->cell, m);
        }
        if (m->conn != pl->conn) {
            conn_unlink(m);
            conn_link(pl->conn, m);
        }
        free(m->meta);
    }
    m->lat = in->lat;
    m->lon = in->lon;
    m->meta = pl->meta;
    m->meta_len = (uint32_t)in->meta_len;
    m->meta_enc = (int32_t)in->meta_enc;
    m->version = in->version;
    return m;
}

/* Inserts or moves a member (see geo.h). Loop thread. */
rt_status geo_set(struct geo *g, const struct geo_member_in *in, char cell[GEO_CELL_BUF])
{
    if (cell)
        cell[0] = '\0';
    rt_status st = check_member_in(in);
    if (st != RT_OK)
        return st;
    if (g->busy)
        return RT_AGAIN;
    struct set_plan pl;
    st = plan_make(g, in, &pl);
    if (st != RT_OK)
        return st;
    bool had_old = pl.old != NULL;
    double old_lat = had_old ? pl.old->lat : 0.0, old_lon = had_old ? pl.old->lon : 0.0;
    uint64_t old_code = had_old ? pl.old->cell->code : 0;
    struct geo_cell *old_cell = had_old ? pl.old->cell : NULL;
    struct geo_conn *old_conn = had_old ? pl.old->conn : NULL;
    struct geo_member *m = plan_apply(g, in, &pl);
    g->st.sets++;
    geo__emit(g, m, had_old, old_lat, old_lon, old_code, true);
    cell_release(g, pl.sp, old_cell);
    geo__conn_release(g, old_conn);
    if (cell)
        geo__code_str(pl.code, g->precision, cell);
    return RT_OK;
}

/* ------------------------------------------------------------------------ */
/* Clear, get, remove by connection                                           */

/* Emits the leave events of m, then frees it (not its connection entry). */
static void member_remove(struct geo *g, struct geo_member *m)
{
    geo__emit(g, m, true, m->lat, m->lon, m->cell->code, false);
    member_free(g, m);
}

/* The member (space, client) into *out: RT_INVAL, RT_NOT_FOUND. */
static rt_status member_lookup(const struct geo *g, const char *space, size_t space_len,
                               const char *client, size_t client_len, struct geo_member **out)
{
    if (!geo__space_name_ok(space, space_len) || !client || client_len < 1 ||
        client_len > GEO_CLIENT_MAX)
        return RT_INVAL;
    struct geo_space *sp = geo__space_find(g, space, space_len);
    *out = sp ? member_find(sp, client, client_len) : NULL;
    return *out ? RT_OK : RT_NOT_FOUND;
}

/* Removes one member (see geo.h). Loop thread. */
rt_status geo_clear(struct geo *g, const char *space, size_t space_len, const char *client,
                    size_t client_len)
{
    struct geo_member *m;
    rt_status st = member_lookup(g, space, space_len, client, client_len, &m);
    if (st == RT_INVAL)
        return st;
    if (g->busy)
        return RT_AGAIN;
    if (st != RT_OK)
        return st;
    struct geo_conn *conn = m->conn;
    member_remove(g, m);
    geo__conn_release(g, conn);
    return RT_OK;
}

/* Looks up a member (see geo.h). Loop thread. */
rt_status geo_get(const struct geo *g, const char *space, size_t space_len, const char *client,
                  size_t client_len, struct geo_member_view *v)
{
    struct geo_member *m;
    rt_status st = member_lookup(g, space, space_len, client, client_len, &m);
    if (st == RT_OK)
        geo__member_view(m, v);
    return st;
}

/* Changes a member's version only (see geo.h). Loop thread. */
rt_status geo_set_version(struct geo *g, const char *space, size_t space_len, const char *client,
                          size_t client_len, uint64_t version)
{
    struct geo_member *m;
    rt_status st = member_lookup(g, space, space_len, client, client_len, &m);
    if (st == RT_OK)
        m->version = version;
    return st;
}

/* Drops a connection's watches and members (see geo.h). Loop thread. */
rt_status geo_remove_conn(struct geo *g, uint64_t conn, geo_member_fn fn, void *arg,
                          size_t *n_members, size_t *n_watches)
{
    size_t nm = 0, nw = 0;
    if (n_members)
        *n_members = 0;
    if (n_watches)
        *n_watches = 0;
    if (g->busy)
        return RT_AGAIN;
    struct geo_conn *c = geo__conn_find(g, conn);
    if (!c)
        return RT_OK;
    /* Watches first: a closing connection gets no events about its own members. */
    for (; c->watches; nw++)
        geo__watch_free(g, c->watches);
    for (; c->members; nm++) {
        struct geo_member *m = c->members;
        if (fn) {
            struct geo_member_view v;
            geo__member_view(m, &v);
            g->busy = true;
            fn(arg, &v);
            g->busy = false;
        }
        member_remove(g, m);
    }
    geo__conn_release(g, c);
    if (n_members)
        *n_members = nm;
    if (n_watches)
        *n_watches = nw;
    return RT_OK;
}

/* ------------------------------------------------------------------------ */
/* Members by cell prefix                                                     */

struct prefix_walk {
    geo_member_fn fn;
    void *arg;
    size_t n;
};

static void prefix_visit(struct geo_cell *c, void *arg)
{
    struct prefix_walk *pw = arg;
    for (struct geo_member *m = c->head; m; m = m->cell_next) {
        struct geo_member_view v;
        geo__member_view(m, &v);
        pw->fn(pw->arg, &v);
        pw->n++;
    }
}

/* Reports the members whose cell starts with `prefix` (see geo.h). Loop thread. */
rt_status geo_each_prefix(struct geo *g, const char *space, size_t space_len, const char *prefix,
                          size_t prefix_len, geo_member_fn fn, void *arg, size_t *n)
{
    if (n)
        *n = 0;
    uint64_t code = 0;
    if (!geo__space_name_ok(space, space_len) || prefix_len > (size_t)g->precision || !fn ||
        (prefix_len && !geo__parse_cell(prefix, prefix_len, &code)))
        return RT_INVAL;
    if (g->busy)
        return RT_AGAIN;
    struct geo_space *sp = geo__space_find(g, space, space_len);
    if (!sp)
        return RT_OK;
    unsigned shift = 5u * (unsigned)(g->precision - (int)prefix_len);
    struct prefix_walk pw = {fn, arg, 0};
    g->busy = true;
    geo__tree_range(sp->tree, code << shift, (code + 1) << shift, prefix_visit, &pw);
    g->busy = false;
    if (n)
        *n = pw.n;
    return RT_OK;
}
