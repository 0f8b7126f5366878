/*
 * nodes.c: the other nodes of the fleet (users_int.h), with the heartbeat
 * design of geo presence (docs/presence.md): each node heard from gets a
 * token its connections and members carry; heartbeats keep it and say when
 * it lost messages (a resync from it); one silent for ttl_ms, or that said
 * goodbye, is dropped with everything it held. A hello (a node starting, or
 * one that lost messages) is answered with a heartbeat and this node's full
 * state. The table is bounded (USERS_NODES_MAX). Loop thread.
 */
#include "users_int.h"

#include <stdlib.h>
#include <string.h>

struct users_node *users__node_find(const struct users *u, const char *id, size_t len)
{
    uint64_t h = rt_hash_bytes(id, len);
    for (struct rt_hnode *n = rt_htab_chain(&u->nodes, h); n; n = n->next) {
        struct users_node *nd = RT_CONTAINER(n, struct users_node, h);
        if (n->hash == h && nd->id_len == len && memcmp(nd->id, id, len) == 0)
            return nd;
    }
    return NULL;
}

struct users_node *users__node_get(struct users *u, const char *id, size_t len, bool *created)
{
    *created = false;
    struct users_node *nd = users__node_find(u, id, len);
    if (nd || !users_wire_node_ok(id, len) || rt_htab_count(&u->nodes) >= USERS_NODES_MAX)
        return nd;
    if (rt_htab_reserve(&u->nodes) != RT_OK || !(nd = calloc(1, sizeof(*nd))))
        return NULL;
    memcpy(nd->id, id, len);
    nd->id_len = len;
    nd->token = ++u->node_serial;
    nd->last_seen = u->now;
    nd->h.hash = rt_hash_bytes(id, len);
    rt_htab_insert(&u->nodes, &nd->h);
    nd->next = u->node_list;
    if (u->node_list)
        u->node_list->prev = nd;
    u->node_list = nd;
    *created = true;
    return nd;
}

/* A node is gone: its connections free their places, its members leave. */
static void node_drop(struct users *u, struct users_node *nd)
{
    users__limits_drop_node(u, nd->token);
    users__chans_drop_node(u, nd);
    rt_htab_remove(&u->nodes, &nd->h);
    if (nd->prev)
        nd->prev->next = nd->next;
    else
        u->node_list = nd->next;
    if (nd->next)
        nd->next->prev = nd->prev;
    free(nd);
}

void users__expire_nodes(struct users *u)
{
    for (struct users_node *nd = u->node_list, *next; nd; nd = next) {
        next = nd->next;
        if (u->now - nd->last_seen >= u->ttl_ms) {
            u->st.nodes_expired++;
            node_drop(u, nd);
        }
    }
}

void users__send_heartbeat(struct users *u, bool hello, bool bye)
{
    users_wire_heartbeat(&u->out, u->node, u->node_len, u->bus_gen + u->lost_out, hello, bye);
    u->last_hb = u->now;
    users__publish(u, USERS_WIRE_SUBJ_HEARTBEAT, NULL, &u->out);
}

struct users_node *users__heard_from(struct users *u, const struct users_wire_msg *m, bool *created)
{
    struct users_node *nd = users__node_get(u, m->node, m->node_len, created);
    if (!nd) {
        u->st.bad_messages++;
        return NULL;
    }
    nd->last_seen = u->now;
    return nd;
}

void users__on_heartbeat(struct users *u, const struct users_wire_msg *m)
{
    if (m->bye) {
        struct users_node *gone = users__node_find(u, m->node, m->node_len);
        if (gone)
            node_drop(u, gone);
        return;
    }
    bool created;
    struct users_node *nd = users__heard_from(u, m, &created);
    if (!nd)
        return;
    bool changed = !created && nd->gen != m->gen;
    nd->gen = m->gen;
    if (created || changed)
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

static void free_node_cb(struct rt_hnode *n, void *arg)
{
    (void)arg;
    free(RT_CONTAINER(n, struct users_node, h));
}

void users__free_nodes(struct users *u)
{
    rt_htab_each(&u->nodes, free_node_cb, NULL);
    rt_htab_free(&u->nodes);
    u->node_list = NULL;
}
