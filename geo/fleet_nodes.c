/*
 * fleet_nodes.c: the other nodes of the fleet (fleet_int.h). Each one heard
 * from gets an owner token its members carry in the index; heartbeats keep
 * it, and say when it restarted or lost messages (a resync from it); one
 * silent for ttl_ms is dropped with all its members. The table is bounded
 * (FLEET_NODES_MAX): a flood of made-up ids cannot grow it. Loop thread.
 */
#include "fleet_int.h"

#include <stdlib.h>
#include <string.h>

struct fleet_node *fleet__node_find(const struct geo_fleet *f, const char *id, size_t len)
{
    uint64_t h = rt_hash_bytes(id, len);
    for (struct rt_hnode *n = rt_htab_chain(&f->nodes, h); n; n = n->next) {
        struct fleet_node *nd = RT_CONTAINER(n, struct fleet_node, h);
        if (n->hash == h && nd->id_len == len && memcmp(nd->id, id, len) == 0)
            return nd;
    }
    return NULL;
}

struct fleet_node *fleet__node_get(struct geo_fleet *f, const char *id, size_t len, bool *created)
{
    *created = false;
    struct fleet_node *nd = fleet__node_find(f, id, len);
    if (nd || !fleet_wire_token_ok(id, len, GEO_FLEET_NODE_MAX) ||
        rt_htab_count(&f->nodes) >= FLEET_NODES_MAX)
        return nd;
    if (rt_htab_reserve(&f->nodes) != RT_OK || !(nd = calloc(1, sizeof(*nd))))
        return NULL;
    memcpy(nd->id, id, len);
    nd->id_len = len;
    nd->token = GEO_FLEET_CONN_BIT | ++f->node_serial;
    nd->last_seen = f->now;
    nd->h.hash = rt_hash_bytes(id, len);
    rt_htab_insert(&f->nodes, &nd->h);
    nd->next = f->node_list;
    if (f->node_list)
        f->node_list->prev = nd;
    f->node_list = nd;
    *created = true;
    return nd;
}

/* A node went silent: its members leave, snapshots stop waiting for it. */
static void node_drop(struct geo_fleet *f, struct fleet_node *nd)
{
    size_t n = 0;
    geo_remove_conn(f->geo, nd->token, NULL, NULL, &n, NULL);
    f->st.remote_members -= n < f->st.remote_members ? n : f->st.remote_members;
    fleet__snapshot_forget_node(f, nd);
    rt_htab_remove(&f->nodes, &nd->h);
    if (nd->prev)
        nd->prev->next = nd->next;
    else
        f->node_list = nd->next;
    if (nd->next)
        nd->next->prev = nd->prev;
    free(nd);
}

void fleet__expire_nodes(struct geo_fleet *f)
{
    for (struct fleet_node *nd = f->node_list, *next; nd; nd = next) {
        next = nd->next;
        if (f->now - nd->last_seen >= f->ttl_ms) {
            f->st.nodes_expired++;
            node_drop(f, nd);
        }
    }
}

void fleet__send_heartbeat(struct geo_fleet *f, bool hello)
{
    fleet_wire_heartbeat(&f->out, f->node, f->node_len, f->v, f->bus_gen + f->lost_out, f->ttl_ms,
                         hello);
    f->last_hb = f->now;
    fleet__publish(f, FLEET_WIRE_SUBJ_HEARTBEAT, NULL, &f->out);
}

struct fleet_node *fleet__heard_from(struct geo_fleet *f, const struct fleet_wire_msg *m,
                                     bool *created)
{
    struct fleet_node *nd = fleet__node_get(f, m->node, m->node_len, created);
    if (!nd) {
        f->st.bad_messages++;
        return NULL;
    }
    nd->last_seen = f->now;
    return nd;
}

void fleet__on_heartbeat(struct geo_fleet *f, const struct fleet_wire_msg *m)
{
    bool created;
    struct fleet_node *nd = fleet__heard_from(f, m, &created);
    if (!nd)
        return;
    bool changed = !created && nd->gen != m->gen;
    nd->gen = m->gen;
    if ((created && m->v > 0) || changed)
        fleet__resync_node(f, nd); /* it may have published what this node never saw */
    if (m->hello && f->now - f->last_hello_answer >= FLEET_HELLO_GAP_MS) {
        f->last_hello_answer = f->now;
        fleet__send_heartbeat(f, false);
    }
}

static void free_node_cb(struct rt_hnode *n, void *arg)
{
    (void)arg;
    free(RT_CONTAINER(n, struct fleet_node, h));
}

void fleet__free_nodes(struct geo_fleet *f)
{
    rt_htab_each(&f->nodes, free_node_cb, NULL);
    rt_htab_free(&f->nodes);
    f->node_list = NULL;
}
