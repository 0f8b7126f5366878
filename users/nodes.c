/*
 * nodes.c: the other nodes of the fleet (users_int.h), with the heartbeat
 * design of geo presence (docs/presence.md): each node heard from gets a
 * token its connections and members carry; heartbeats keep it and say when
 * it lost messages (a resync from it); one silent for ttl_ms, or that said
 * goodbye, is dropped with everything it held. A hello (a node starting, or
 * one that lost messages) is answered with a heartbeat and this node's full
 * state. The table itself (bounded: USERS_NODES_MAX) is peers/peers_table.c,
 * shared with geo presence; what a node means here is this file's. Loop
 * thread.
 */
#include "users_int.h"

/* A node is gone: its connections free their places, its members leave. */
static void node_gone(void *arg, struct peers_node *peer)
{
    struct users *u = arg;
    users__limits_drop_node(u, peer->token);
    users__chans_drop_node(u, RT_CONTAINER(peer, struct users_node, peer));
}

void users__expire_nodes(struct users *u)
{
    u->st.nodes_expired += peers_expire(&u->nodes, u->now, u->ttl_ms, node_gone, u);
}

void users__send_heartbeat(struct users *u, bool hello, bool bye)
{
    users_wire_heartbeat(&u->out, u->node, u->node_len, u->bus_gen + u->lost_out, hello, bye);
    u->last_hb = u->now;
    users__publish(u, USERS_WIRE_SUBJ_HEARTBEAT, NULL, &u->out);
}

struct users_node *users__heard_from(struct users *u, const struct users_wire_msg *m, bool *created)
{
    struct peers_node *peer = peers_get(&u->nodes, m->node, m->node_len, u->now, created);
    if (!peer) {
        u->st.bad_messages++;
        return NULL;
    }
    peer->last_seen = u->now;
    return RT_CONTAINER(peer, struct users_node, peer);
}

void users__on_heartbeat(struct users *u, const struct users_wire_msg *m)
{
    if (m->bye) {
        struct peers_node *gone = peers_find(&u->nodes, m->node, m->node_len);
        if (gone) {
            node_gone(u, gone);
            peers_remove(&u->nodes, gone);
        }
        return;
    }
    bool created;
    struct users_node *nd = users__heard_from(u, m, &created);
    if (!nd)
        return;
    if (peers_gen_moved(&nd->peer, created, m->gen) || created)
        users__resync_chans(u, nd); /* it may hold members this node never heard of */
    if (m->hello) {
        u->full_wanted = true; /* it knows nothing of this node's connections yet */
        if (u->now - u->last_hello_answer >= USERS_HELLO_GAP_MS) {
            u->last_hello_answer = u->now;
            users__send_heartbeat(u, false, false);
        }
    } else if (created && u->now >= u->warm_until && u->now - u->last_hello >= USERS_HELLO_GAP_MS) {
        /* A node this node knew nothing of (a partition longer than the ttl, say): its
         * full state (and everybody's) comes back after a hello. At start, the answers
         * to this node's own hello are expected. A node whose generation moved sends
         * its own state or hello itself. */
        u->last_hello = u->now;
        users__send_heartbeat(u, true, false);
    }
}
