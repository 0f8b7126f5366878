/*
 * fleet_local.c: this node's own members (fleet_int.h). A change goes to
 * the index at once and is noted (once per member until the next flush,
 * with the share cell it was in at the last flush); geo_fleet_flush
 * publishes the noted members as they are then, one bus message per
 * (space, share cell), split when large; a member that changed cells goes
 * out on both, so the old cell's followers see it leave. Loop thread.
 */
#include "fleet_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void fleet__entry_of(const struct geo_member_view *m, uint64_t v, struct fleet_wire_entry *e)
{
    *e = (struct fleet_wire_entry){
        .v = v,
        .client = m->client,
        .client_len = m->client_len,
        .set = true,
        .user = m->user,
        .user_len = m->user_len,
        .lat = m->lat,
        .lon = m->lon,
        .meta_enc = m->meta_len ? m->meta_enc : 0,
        .meta = m->meta,
        .meta_len = m->meta_len,
    };
}

/* ------------------------------------------------------------------------ */
/* Noting changes                                                             */

static struct dirty_member *dirty_find(const struct geo_fleet *f, const char *space, size_t slen,
                                       const char *client, size_t clen, uint64_t h)
{
    for (struct rt_hnode *n = rt_htab_chain(&f->dirty, h); n; n = n->next) {
        struct dirty_member *d = RT_CONTAINER(n, struct dirty_member, h);
        if (n->hash == h && d->space_len == slen && d->client_len == clen &&
            memcmp(d->strs, space, slen) == 0 && memcmp(d->strs + slen + 1, client, clen) == 0)
            return d;
    }
    return NULL;
}

/* Notes that a local member changed; old_cell is its share cell before (or ""). */
static void dirty_touch(struct geo_fleet *f, const char *space, size_t slen, const char *client,
                        size_t clen, const char *old_cell)
{
    uint64_t h = fleet__key_hash(space, slen, client, clen);
    if (dirty_find(f, space, slen, client, clen, h))
        return; /* keeps the cell of the last flush */
    struct dirty_member *d = calloc(1, sizeof(*d) + slen + clen + 2);
    if (!d || rt_htab_reserve(&f->dirty) != RT_OK) {
        free(d);
        f->resync_wanted = true; /* cannot publish it: others may miss it; they resync */
        return;
    }
    memcpy(d->strs, space, slen);
    memcpy(d->strs + slen + 1, client, clen);
    d->space_len = slen;
    d->client_len = clen;
    snprintf(d->old_cell, sizeof(d->old_cell), "%s", old_cell);
    d->h.hash = h;
    rt_htab_insert(&f->dirty, &d->h);
    if (f->dirty_tail)
        f->dirty_tail->next = d;
    else
        f->dirty_head = d;
    f->dirty_tail = d;
}

static void share_cell(const struct geo_fleet *f, const struct geo_member_view *m,
                       char cell[GEO_CELL_BUF])
{
    if (geo_encode(m->lat, m->lon, f->share_p, cell) != RT_OK)
        cell[0] = '\0';
}

rt_status geo_fleet_set(struct geo_fleet *f, const struct geo_member_in *in,
                        char cell[GEO_CELL_BUF])
{
    if (fleet__remote(in->conn))
        return RT_INVAL;
    char old[GEO_CELL_BUF] = "";
    struct geo_member_view cur;
    bool present =
        geo_get(f->geo, in->space, in->space_len, in->client, in->client_len, &cur) == RT_OK;
    if (present)
        share_cell(f, &cur, old);
    rt_status st = geo_set(f->geo, in, cell);
    if (st != RT_OK)
        return st;
    if (present && fleet__remote(cur.conn) && f->st.remote_members)
        f->st.remote_members--; /* a local member took the id over */
    dirty_touch(f, in->space, in->space_len, in->client, in->client_len,
                present && !fleet__remote(cur.conn) ? old : "");
    return RT_OK;
}

rt_status geo_fleet_clear(struct geo_fleet *f, const char *space, size_t space_len,
                          const char *client, size_t client_len)
{
    struct geo_member_view cur;
    rt_status st = geo_get(f->geo, space, space_len, client, client_len, &cur);
    if (st != RT_OK)
        return st;
    if (fleet__remote(cur.conn))
        return RT_NOT_FOUND;
    char old[GEO_CELL_BUF];
    share_cell(f, &cur, old);
    st = geo_clear(f->geo, space, space_len, client, client_len);
    if (st == RT_OK)
        dirty_touch(f, space, space_len, client, client_len, old);
    return st;
}

static void removed_member(void *arg, const struct geo_member_view *m)
{
    struct geo_fleet *f = arg;
    char old[GEO_CELL_BUF];
    share_cell(f, m, old);
    dirty_touch(f, m->space, m->space_len, m->client, m->client_len, old);
}

rt_status geo_fleet_remove_conn(struct geo_fleet *f, uint64_t conn)
{
    if (fleet__remote(conn))
        return RT_INVAL;
    return geo_remove_conn(f->geo, conn, removed_member, f, NULL, NULL);
}

void fleet__free_dirty(struct geo_fleet *f)
{
    for (struct dirty_member *d = f->dirty_head, *next; d; d = next) {
        next = d->next;
        free(d);
    }
    f->dirty_head = f->dirty_tail = NULL;
    rt_htab_free(&f->dirty);
}

/* ------------------------------------------------------------------------ */
/* Publishing                                                                 */

/* One bus message being filled during a flush: (space, cell) -> entries. */
struct delta_batch {
    struct rt_hnode h;
    struct delta_batch *next;
    struct proto_buf buf;
    struct fleet_wire_writer w;
    size_t space_len;
    char space[GEO_SPACE_MAX + 1];
    char cell[GEO_CELL_BUF];
};

/* The batches of one flush. */
struct flush_ctx {
    struct rt_htab batches;
    struct delta_batch *list;
};

static void batch_open(struct geo_fleet *f, struct delta_batch *b)
{
    fleet_wire_delta_begin(&b->w, &b->buf, f->node, f->node_len, b->space, b->space_len, b->cell);
}

static void batch_send(struct geo_fleet *f, struct delta_batch *b)
{
    char subject[GEO_FLEET_SUBJECT_MAX];
    fleet_wire_delta_subject(subject, sizeof(subject), b->space, b->space_len, b->cell,
                             strlen(b->cell), f->share_p);
    if (fleet_wire_end(&b->w, true) == RT_OK)
        fleet__publish(f, subject, NULL, &b->buf);
    else
        f->st.publish_failures++;
}

static struct delta_batch *batch_get(struct geo_fleet *f, struct flush_ctx *fc, const char *space,
                                     size_t slen, const char *cell)
{
    size_t clen = strlen(cell);
    uint64_t h = fleet__key_hash(space, slen, cell, clen);
    for (struct rt_hnode *n = rt_htab_chain(&fc->batches, h); n; n = n->next) {
        struct delta_batch *b = RT_CONTAINER(n, struct delta_batch, h);
        if (n->hash == h && b->space_len == slen && memcmp(b->space, space, slen) == 0 &&
            strcmp(b->cell, cell) == 0)
            return b;
    }
    struct delta_batch *b = calloc(1, sizeof(*b));
    if (!b || rt_htab_reserve(&fc->batches) != RT_OK) {
        free(b);
        return NULL;
    }
    memcpy(b->space, space, slen);
    b->space_len = slen;
    snprintf(b->cell, sizeof(b->cell), "%s", cell);
    proto_buf_init(&b->buf, 0);
    b->h.hash = h;
    rt_htab_insert(&fc->batches, &b->h);
    b->next = fc->list;
    fc->list = b;
    batch_open(f, b);
    return b;
}

/* Appends one change to the batch of (space, cell), sending the batch when full. */
static void batch_add(struct geo_fleet *f, struct flush_ctx *fc, const struct dirty_member *d,
                      const char *cell, uint64_t v, const struct geo_member_view *m)
{
    struct delta_batch *b = batch_get(f, fc, d->strs, d->space_len, cell);
    if (!b) {
        f->resync_wanted = true;
        return;
    }
    struct fleet_wire_entry e = {
        .v = v, .client = d->strs + d->space_len + 1, .client_len = d->client_len};
    if (m)
        fleet__entry_of(m, v, &e);
    fleet_wire_put(&b->w, &e);
    f->st.deltas_out++;
    if (b->w.entries >= FLEET_CHUNK_ENTRIES || b->buf.len >= FLEET_CHUNK_BYTES) {
        batch_send(f, b);
        batch_open(f, b);
    }
}

bool geo_fleet_pending(const struct geo_fleet *f)
{
    return f->dirty_head != NULL;
}

void geo_fleet_flush(struct geo_fleet *f)
{
    if (!f->dirty_head)
        return;
    struct flush_ctx fc = {.list = NULL};
    rt_htab_init(&fc.batches);
    for (struct dirty_member *d = f->dirty_head, *next; d; d = next) {
        next = d->next;
        const char *client = d->strs + d->space_len + 1;
        struct geo_member_view cur;
        bool present =
            geo_get(f->geo, d->strs, d->space_len, client, d->client_len, &cur) == RT_OK &&
            !fleet__remote(cur.conn);
        char now_cell[GEO_CELL_BUF] = "";
        if (present)
            share_cell(f, &cur, now_cell);
        uint64_t v = ++f->v;
        if (d->old_cell[0] && strcmp(d->old_cell, now_cell) != 0)
            batch_add(f, &fc, d, d->old_cell, v, present ? &cur : NULL);
        if (present && now_cell[0])
            batch_add(f, &fc, d, now_cell, v, &cur);
        rt_htab_remove(&f->dirty, &d->h);
        free(d);
    }
    f->dirty_head = f->dirty_tail = NULL;
    for (struct delta_batch *b = fc.list, *next; b; b = next) {
        next = b->next;
        if (b->w.entries)
            batch_send(f, b);
        proto_buf_free(&b->buf);
        free(b);
    }
    rt_htab_free(&fc.batches);
}
