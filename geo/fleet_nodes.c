/*
 * fleet_nodes.c: the other nodes of the fleet (fleet_int.h). Each one heard
 * from gets an owner token its members carry in the index; heartbeats keep
 * it, and say when it restarted or lost messages (a resync from it); one
 * silent for ttl_ms is dropped with all its members. The table itself
 * (bounded: a flood of made-up ids cannot grow it) is peers/peers_table.c,
 * shared with users/; what a node means here is this file's. Loop thread.
 */
#include "fleet_int.h"

/* A node went silent: its members leave, snapshots stop waiting for it. */
static void node_gone(void *arg, struct peers_node *nd)
{
    struct geo_fleet *f = arg;
    size_t n = 0;
    geo_remove_conn(f->geo, nd->token, NULL, NULL, &n, NULL);
    f->st.remote_members -= n < f->st.remote_members ? n : f->st.remote_members;
    fleet__snapshot_forget_node(f, nd);
}

void fleet__expire_nodes(struct geo_fleet *f)
{
    f->st.nodes_expired += peers_expire(&f->nodes, f->now, f->ttl_ms, node_gone, f);
}

void fleet__send_heartbeat(struct geo_fleet *f, bool hello)
{
    fleet_wire_heartbeat(&f->out, f->node, f->node_len, f->v, f->bus_gen + f->lost_out, f->ttl_ms,
                         hello);
    f->last_hb = f->now;
    fleet__publish(f, FLEET_WIRE_SUBJ_HEARTBEAT, NULL, &f->out);
}

struct peers_node *fleet__heard_from(struct geo_fleet *f, const struct fleet_wire_msg *m,
                                     bool *created)
{
    struct peers_node *nd = peers_get(&f->nodes, m->node, m->node_len, f->now, created);
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
    struct peers_node *nd = fleet__heard_from(f, m, &created);
    if (!nd)
        return;
    if (peers_gen_moved(nd, created, m->gen) || (created && m->v > 0))
        fleet__resync_node(f, nd); /* it may have published what this node never saw */
    if (m->hello && f->now - f->last_hello_answer >= FLEET_HELLO_GAP_MS) {
        f->last_hello_answer = f->now;
        fleet__send_heartbeat(f, false);
    }
}
