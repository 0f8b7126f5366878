/*
 * fleet_remote.c: other nodes' members in this node's index (fleet_int.h).
 * Deltas and snapshot answers are applied entry by entry under one rule:
 * a member keeps the version (v) of the state it holds and only a higher v
 * of the same node replaces it, so answers and deltas apply as they come,
 * in any mix. A local member's id is never taken over from outside, and a
 * member that moves where this node does not follow is dropped. Loop thread.
 */
#include "fleet_int.h"

#include <string.h>

/* What one message's entries are applied with. */
struct apply_ctx {
    struct geo_fleet *f;
    struct peers_node *nd;
    const char *space;
    size_t space_len;
    struct fleet_snapshot *named; /* snapshot answers: the clients named are recorded */
};

void fleet__remote_clear(struct geo_fleet *f, uint64_t owner, const char *space, size_t slen,
                         const char *client, size_t clen)
{
    struct geo_member_view cur;
    if (geo_get(f->geo, space, slen, client, clen, &cur) != RT_OK || cur.conn != owner)
        return;
    if (geo_clear(f->geo, space, slen, client, clen) == RT_OK && f->st.remote_members)
        f->st.remote_members--;
}

static bool same_member(const struct geo_member_view *cur, uint64_t token,
                        const struct fleet_wire_entry *e)
{
    return cur->conn == token && cur->lat == e->lat && cur->lon == e->lon &&
           cur->user_len == e->user_len &&
           (!e->user_len || memcmp(cur->user, e->user, e->user_len) == 0) &&
           cur->meta_len == e->meta_len && (!e->meta_len || cur->meta_enc == e->meta_enc) &&
           (!e->meta_len || memcmp(cur->meta, e->meta, e->meta_len) == 0);
}

/* Puts a set entry into the index; false when the index refuses it as malformed. */
static bool store(struct apply_ctx *a, const struct fleet_wire_entry *e, bool present)
{
    struct geo_member_in in = {
        .space = a->space,
        .space_len = a->space_len,
        .client = e->client,
        .client_len = e->client_len,
        .user = e->user,
        .user_len = e->user_len,
        .conn = a->nd->token,
        .lat = e->lat,
        .lon = e->lon,
        .meta = e->meta,
        .meta_len = e->meta_len,
        .meta_enc = e->meta_enc,
        .version = e->v,
    };
    rt_status st = geo_set(a->f->geo, &in, NULL);
    if (st == RT_INVAL || st == RT_TOO_BIG)
        return false;
    if (st == RT_OK && !present)
        a->f->st.remote_members++;
    return true;
}

/*
 * One change of node a->nd. A node's messages arrive in the order it sent
 * them, so nothing older comes after a clear. False when the entry is
 * malformed for the index (a bad position, an oversized field).
 */
static bool apply_entry(struct apply_ctx *a, const struct fleet_wire_entry *e)
{
    struct geo_fleet *f = a->f;
    if (a->named)
        fleet__snapshot_name(a->named, e->client, e->client_len);
    uint64_t token = a->nd->token;
    struct geo_member_view cur;
    bool present = geo_get(f->geo, a->space, a->space_len, e->client, e->client_len, &cur) == RT_OK;
    if (present && !fleet__remote(cur.conn))
        return true; /* a local member's id: never overwritten from outside */
    bool mine = present && cur.conn == token;
    if (mine && e->v <= cur.version)
        return true; /* known already, or older */
    f->st.deltas_in++;
    if (!e->set) {
        if (mine)
            fleet__remote_clear(f, token, a->space, a->space_len, e->client, e->client_len);
        return true;
    }
    char cell[GEO_CELL_BUF];
    if (geo_encode(e->lat, e->lon, f->share_p, cell) != RT_OK)
        return false;
    if (!fleet__covering(f, a->space, a->space_len, cell, (size_t)f->share_p)) {
        /* Moved where this node does not follow: it can no longer be kept current. */
        if (present)
            fleet__remote_clear(f, cur.conn, a->space, a->space_len, e->client, e->client_len);
        return true;
    }
    if (mine && same_member(&cur, token, e)) {
        geo_set_version(f->geo, a->space, a->space_len, e->client, e->client_len, e->v);
        return true;
    }
    return store(a, e, present);
}

void fleet__apply(struct geo_fleet *f, struct peers_node *nd, const struct fleet_wire_msg *m,
                  struct fleet_snapshot *named)
{
    struct apply_ctx a = {f, nd, m->space, m->space_len, named};
    struct fleet_wire_cursor c = {0};
    struct fleet_wire_entry e;
    while (fleet_wire_next_entry(m, &c, &e))
        if (!apply_entry(&a, &e)) {
            f->st.bad_messages++; /* the entries before it stay applied */
            return;
        }
}

void fleet__on_delta(struct geo_fleet *f, const struct fleet_wire_msg *m, const char *cell,
                     size_t clen)
{
    if (!fleet__space_ok(m) || clen != (size_t)f->share_p) {
        f->st.bad_messages++;
        return;
    }
    bool created;
    struct peers_node *nd = fleet__heard_from(f, m, &created);
    if (!nd)
        return;
    if (created)
        fleet__resync_node(f, nd);
    if (fleet__covering(f, m->space, m->space_len, cell, clen))
        fleet__apply(f, nd, m, NULL); /* else no longer followed */
}
