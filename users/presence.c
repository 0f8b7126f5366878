/*
 * presence.c: channel presence as the gateway uses it (users.h): wants (a
 * connection about to enter a channel whose members this node does not know
 * yet waits for them), entering and leaving (the local holder of the user
 * changes, the others are told, the connection starts or stops watching),
 * and the view a reply is written from. chans.c follows the channels,
 * members.c keeps their tables. Loop thread.
 */
#include "users_int.h"

#include <stdlib.h>
#include <string.h>

static bool ready_push(struct users *u, uint64_t ticket, bool partial)
{
    if (!rt_grow((void **)&u->readyq, &u->cap_ready, u->n_ready + 1, sizeof(*u->readyq)))
        return false;
    u->readyq[u->n_ready++] = (struct ready_report){ticket, partial};
    return true;
}

static struct presence_want *want_find(const struct users *u, uint64_t ticket)
{
    uint64_t h = rt_hash_u64(ticket);
    for (struct rt_hnode *n = rt_htab_chain(&u->wants, h); n; n = n->next) {
        struct presence_want *w = RT_CONTAINER(n, struct presence_want, h);
        if (w->ticket == ticket)
            return w;
    }
    return NULL;
}

void users__wants_ready(struct users *u, struct users_chan *ch)
{
    for (uint32_t i = 0; i < ch->n_waiters; i++) {
        struct presence_want *w = want_find(u, ch->waiters[i]);
        if (!w)
            continue;
        if (ready_push(u, w->ticket, ch->partial)) {
            rt_htab_remove(&u->wants, &w->h);
            free(w);
        }
    }
    ch->n_waiters = 0;
}

rt_status users_presence_want(struct users *u, const char *channel, size_t len, uint64_t now_ms,
                              uint64_t *ticket, bool *ready)
{
    if (now_ms > u->now)
        u->now = now_ms;
    *ticket = 0;
    *ready = false;
    struct users_chan *ch;
    rt_status st = users__chan_follow(u, channel, len, &ch);
    if (st != RT_OK)
        return st;
    ch->last_used = u->now;
    if (ch->ready) {
        *ready = true;
        return RT_OK;
    }
    struct presence_want *w = calloc(1, sizeof(*w));
    if (!w || rt_htab_reserve(&u->wants) != RT_OK ||
        !rt_grow((void **)&ch->waiters, &ch->cap_waiters, ch->n_waiters + 1,
                 sizeof(*ch->waiters))) {
        free(w);
        return RT_NOMEM;
    }
    w->ticket = ++u->next_ticket;
    w->chan = ch;
    w->h.hash = rt_hash_u64(w->ticket);
    rt_htab_insert(&u->wants, &w->h);
    ch->waiters[ch->n_waiters++] = w->ticket;
    *ticket = w->ticket;
    return RT_OK;
}

void users_presence_release(struct users *u, uint64_t ticket)
{
    struct presence_want *w = want_find(u, ticket);
    if (!w)
        return;
    struct users_chan *ch = w->chan;
    for (uint32_t i = 0; i < ch->n_waiters; i++)
        if (ch->waiters[i] == ticket) {
            ch->waiters[i] = ch->waiters[--ch->n_waiters];
            break;
        }
    ch->last_used = u->now;
    rt_htab_remove(&u->wants, &w->h);
    free(w);
}

void users__report_ready(struct users *u)
{
    while (u->n_ready) {
        struct ready_report *q = u->readyq;
        uint32_t n = u->n_ready;
        u->readyq = NULL;
        u->n_ready = u->cap_ready = 0;
        for (uint32_t i = 0; i < n; i++)
            if (u->on_ready)
                u->on_ready(u->arg, q[i].ticket, q[i].partial);
        free(q);
    }
}

static struct holder *local_holder(struct users_chan *ch, const struct users_user *usr)
{
    struct chan_member *m = users__member_find(ch, usr->name, usr->name_len);
    for (uint32_t i = 0; m && i < m->n_holders; i++)
        if (m->holders[i].node == USERS_LOCAL)
            return &m->holders[i];
    return NULL;
}

rt_status users_presence_enter(struct users *u, uint64_t conn, const char *channel, size_t len)
{
    struct users_conn *c = users__conn_find(u, conn);
    if (!c)
        return RT_NOT_FOUND;
    for (uint32_t i = 0; i < c->n_chans; i++)
        if (c->chans[i]->name_len == len && memcmp(c->chans[i]->name, channel, len) == 0)
            return RT_CONFLICT;
    struct users_chan *ch;
    rt_status st = users__chan_follow(u, channel, len, &ch);
    if (st != RT_OK)
        return st;
    if (!rt_grow((void **)&c->chans, &c->cap_chans, c->n_chans + 1, sizeof(*c->chans)) ||
        !rt_grow((void **)&ch->watchers, &ch->cap_watchers, ch->n_watchers + 1,
                 sizeof(*ch->watchers)))
        return RT_NOMEM;
    struct users_user *usr = c->user;
    const struct holder *h = local_holder(ch, usr);
    const char *info = h ? h->info : c->info;
    size_t info_len = h ? h->info_len : c->info_len;
    /* The others are told first: this connection's own view is its reply. */
    if (!users__member_set(u, ch, USERS_LOCAL, usr->name, usr->name_len, (h ? h->clients : 0) + 1,
                           0, 0, info, info_len))
        return RT_NOMEM;
    users__mark_dirty(u, ch, usr->name, usr->name_len);
    users__members_mode(u, ch);
    ch->watchers[ch->n_watchers++] = conn;
    c->chans[c->n_chans++] = ch;
    ch->last_used = u->now;
    return RT_OK;
}

rt_status users_presence_leave(struct users *u, uint64_t conn, const char *channel, size_t len)
{
    struct users_conn *c = users__conn_find(u, conn);
    uint32_t at = 0;
    while (c && at < c->n_chans &&
           !(c->chans[at]->name_len == len && memcmp(c->chans[at]->name, channel, len) == 0))
        at++;
    if (!c || at == c->n_chans)
        return RT_NOT_FOUND;
    struct users_chan *ch = c->chans[at];
    c->chans[at] = c->chans[--c->n_chans];
    for (uint32_t i = 0; i < ch->n_watchers; i++)
        if (ch->watchers[i] == conn) {
            ch->watchers[i] = ch->watchers[--ch->n_watchers];
            break;
        }
    struct users_user *usr = c->user;
    const struct holder *h = local_holder(ch, usr);
    uint32_t left = h && h->clients ? h->clients - 1 : 0;
    if (h)
        users__member_set(u, ch, USERS_LOCAL, usr->name, usr->name_len, left, 0, 0, h->info,
                          h->info_len);
    users__mark_dirty(u, ch, usr->name, usr->name_len);
    users__members_mode(u, ch);
    ch->last_used = u->now;
    return RT_OK;
}

struct view_ctx {
    void (*fn)(void *arg, const struct users_member_view *m);
    void *arg;
};

static void view_cb(struct rt_hnode *n, void *arg)
{
    struct view_ctx *v = arg;
    const struct chan_member *m = RT_CONTAINER(n, struct chan_member, h);
    struct users_member_view mv = {.user = m->user, .user_len = m->user_len, .clients = m->clients};
    mv.info = users__member_info(m, &mv.info_len);
    v->fn(v->arg, &mv);
}

rt_status users_presence_view(struct users *u, const char *channel, size_t len,
                              struct users_presence_view *out,
                              void (*fn)(void *arg, const struct users_member_view *m), void *arg)
{
    memset(out, 0, sizeof(*out));
    struct users_chan *ch = users__chan_find(u, channel, len);
    if (!ch)
        return RT_NOT_FOUND;
    out->count = rt_htab_count(&ch->members);
    out->counting = ch->counting;
    out->partial = !ch->ready || ch->partial;
    if (fn && !ch->counting) {
        struct view_ctx v = {fn, arg};
        rt_htab_each(&ch->members, view_cb, &v);
    }
    return RT_OK;
}

static void free_want_cb(struct rt_hnode *n, void *arg)
{
    (void)arg;
    free(RT_CONTAINER(n, struct presence_want, h));
}

void users__free_wants(struct users *u)
{
    rt_htab_each(&u->wants, free_want_cb, NULL);
    rt_htab_free(&u->wants);
}
