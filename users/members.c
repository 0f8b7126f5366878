/*
 * members.c: the members of a followed channel (users_int.h). A member is a
 * user; each node that has connections of it in the channel is one holder
 * with their count. The member joins when its first holder appears and
 * leaves with its last, and the local watchers are told right then, from
 * this table: what a watcher got in its reply plus the events since is the
 * table. Past max_members the channel counts instead (no list, no join or
 * leave, a count event at most every USERS_COUNT_EVERY_MS), and lists again
 * (a sync event) once it is back under half of it. Loop thread.
 */
#include "users_int.h"

#include <stdlib.h>
#include <string.h>

struct chan_member *users__member_find(const struct users_chan *ch, const char *user, size_t len)
{
    uint64_t h = rt_hash_bytes(user, len);
    for (struct rt_hnode *n = rt_htab_chain(&ch->members, h); n; n = n->next) {
        struct chan_member *m = RT_CONTAINER(n, struct chan_member, h);
        if (n->hash == h && m->user_len == len && memcmp(m->user, user, len) == 0)
            return m;
    }
    return NULL;
}

static struct holder *holder_find(struct chan_member *m, uint64_t node)
{
    for (uint32_t i = 0; i < m->n_holders; i++)
        if (m->holders[i].node == node)
            return &m->holders[i];
    return NULL;
}

static void holder_remove(struct chan_member *m, struct holder *h)
{
    m->clients -= h->clients;
    free(h->info);
    *h = m->holders[--m->n_holders];
}

const char *users__member_info(const struct chan_member *m, size_t *len)
{
    const struct holder *best = NULL;
    for (uint32_t i = 0; i < m->n_holders; i++) {
        const struct holder *h = &m->holders[i];
        if (h->info && (!best || h->node == USERS_LOCAL))
            best = h;
    }
    *len = best ? best->info_len : 0;
    return best ? best->info : NULL;
}

static void member_free(struct users_chan *ch, struct chan_member *m)
{
    rt_htab_remove(&ch->members, &m->h);
    for (uint32_t i = 0; i < m->n_holders; i++)
        free(m->holders[i].info);
    free(m->holders);
    free(m);
}

void users__emit(struct users *u, struct users_chan *ch, enum users_event_kind kind,
                 const struct chan_member *m, uint64_t count)
{
    if (!ch->n_watchers || !u->on_event)
        return;
    struct users_event ev = {
        .kind = kind,
        .channel = ch->name,
        .channel_len = ch->name_len,
        .count = count,
        .watchers = ch->watchers,
        .n_watchers = ch->n_watchers,
    };
    if (m) {
        ev.user = m->user;
        ev.user_len = m->user_len;
        ev.clients = m->clients;
        ev.info = users__member_info(m, &ev.info_len);
    }
    u->st.events++;
    u->on_event(u->arg, &ev);
}

/* Sets holder h's info to (info, len), copied; false when out of memory. */
static bool holder_info(struct holder *h, const char *info, size_t len)
{
    if (h->info_len == len && (!len || memcmp(h->info, info, len) == 0))
        return true;
    char *copy = len ? malloc(len) : NULL;
    if (len && !copy)
        return false;
    if (len)
        memcpy(copy, info, len);
    free(h->info);
    h->info = copy;
    h->info_len = (uint32_t)len;
    return true;
}

static struct chan_member *member_new(struct users_chan *ch, const char *user, size_t len)
{
    struct chan_member *m = calloc(1, sizeof(*m) + len + 1);
    if (!m || rt_htab_reserve(&ch->members) != RT_OK) {
        free(m);
        return NULL;
    }
    memcpy(m->user, user, len);
    m->user_len = len;
    m->h.hash = rt_hash_bytes(user, len);
    rt_htab_insert(&ch->members, &m->h);
    return m;
}

bool users__member_set(struct users *u, struct users_chan *ch, uint64_t node, const char *user,
                       size_t user_len, uint32_t clients, uint64_t v, uint64_t named,
                       const char *info, size_t info_len)
{
    struct chan_member *m = users__member_find(ch, user, user_len);
    if (!m && !clients)
        return true;
    bool fresh = !m;
    if (fresh && !(m = member_new(ch, user, user_len)))
        return false;
    uint32_t before = m->clients;
    struct holder *h = holder_find(m, node);
    if (!clients) {
        if (h)
            holder_remove(m, h);
    } else {
        if (!h) {
            if (!rt_grow((void **)&m->holders, &m->cap_holders, m->n_holders + 1,
                         sizeof(*m->holders))) {
                if (fresh)
                    member_free(ch, m);
                return false;
            }
            h = &m->holders[m->n_holders++];
            memset(h, 0, sizeof(*h));
            h->node = node;
        }
        holder_info(h, info, info_len); /* out of memory: the old info is shown */
        m->clients = m->clients - h->clients + clients;
        h->clients = clients;
        h->v = v;
        if (named)
            h->named = named;
    }
    uint64_t count = rt_htab_count(&ch->members);
    if (!before && m->clients && !ch->counting)
        users__emit(u, ch, USERS_EV_JOIN, m, count);
    if (!m->clients) {
        if (before && !ch->counting)
            users__emit(u, ch, USERS_EV_LEAVE, m, count - 1);
        member_free(ch, m);
    }
    return true;
}

void users__members_mode(struct users *u, struct users_chan *ch)
{
    uint64_t count = rt_htab_count(&ch->members);
    if (!ch->counting && count > u->max_members) {
        ch->counting = true;
        ch->count_told = count;
        ch->count_at = u->now;
        users__emit(u, ch, USERS_EV_COUNT, NULL, count);
    } else if (ch->counting && count <= u->max_members / 2) {
        ch->counting = false;
        users__emit(u, ch, USERS_EV_SYNC, NULL, count);
    }
}

void users__members_tick(struct users *u, struct users_chan *ch)
{
    uint64_t count = rt_htab_count(&ch->members);
    if (ch->counting && count != ch->count_told && u->now - ch->count_at >= USERS_COUNT_EVERY_MS) {
        ch->count_told = count;
        ch->count_at = u->now;
        users__emit(u, ch, USERS_EV_COUNT, NULL, count);
    }
}

struct drop_members_ctx {
    uint64_t node;
    bool sweep; /* a snapshot's end: only holders it did not name, not changed since */
    uint64_t req, watermark;
    struct chan_member **found;
    uint32_t n, cap;
};

static void find_holders_cb(struct rt_hnode *n, void *arg)
{
    struct drop_members_ctx *d = arg;
    struct chan_member *m = RT_CONTAINER(n, struct chan_member, h);
    struct holder *h = holder_find(m, d->node);
    if (!h || (d->sweep && (h->named == d->req || h->v > d->watermark)))
        return;
    if (rt_grow((void **)&d->found, &d->cap, d->n + 1, sizeof(*d->found)))
        d->found[d->n++] = m; /* out of memory: kept, the next resync tries again */
}

void users__members_drop_node(struct users *u, struct users_chan *ch, uint64_t node,
                              uint64_t keep_req, uint64_t watermark)
{
    struct drop_members_ctx d = {node, keep_req != 0, keep_req, watermark, NULL, 0, 0};
    rt_htab_each(&ch->members, find_holders_cb, &d);
    /* Each found member is changed (and maybe freed) once; no other is touched meanwhile. */
    for (uint32_t i = 0; i < d.n; i++) {
        struct chan_member *m = d.found[i];
        users__member_set(u, ch, node, m->user, m->user_len, 0, 0, 0, NULL, 0);
    }
    free(d.found);
    users__members_mode(u, ch);
}

void users__mark_dirty(struct users *u, struct users_chan *ch, const char *user, size_t len)
{
    if (!u->has_bus)
        return;
    uint64_t hash = rt_hash_bytes(user, len);
    for (struct rt_hnode *n = rt_htab_chain(&ch->dirty, hash); n; n = n->next) {
        struct chan_dirty *d = RT_CONTAINER(n, struct chan_dirty, h);
        if (n->hash == hash && d->len == len && memcmp(d->user, user, len) == 0)
            return;
    }
    struct chan_dirty *d = malloc(sizeof(*d) + len);
    if (!d || rt_htab_reserve(&ch->dirty) != RT_OK) {
        free(d); /* the next resync's snapshot answer carries it */
        return;
    }
    memcpy(d->user, user, len);
    d->len = len;
    d->h.hash = hash;
    rt_htab_insert(&ch->dirty, &d->h);
    d->next = ch->dirty_head;
    ch->dirty_head = d;
    if (!ch->dirty_listed) {
        ch->dirty_listed = true;
        ch->dirty_next = u->dirty_chans;
        u->dirty_chans = ch;
    }
}

static void free_member_cb(struct rt_hnode *n, void *arg)
{
    (void)arg;
    struct chan_member *m = RT_CONTAINER(n, struct chan_member, h);
    for (uint32_t i = 0; i < m->n_holders; i++)
        free(m->holders[i].info);
    free(m->holders);
    free(m);
}

void users__free_members(struct users_chan *ch)
{
    rt_htab_each(&ch->members, free_member_cb, NULL);
    rt_htab_free(&ch->members);
    while (ch->dirty_head) {
        struct chan_dirty *d = ch->dirty_head;
        ch->dirty_head = d->next;
        free(d);
    }
    rt_htab_free(&ch->dirty);
}
