/*
 * nats_subs.c: channels' subscriptions on the loop reader, getting them
 * ready for subscribers, and the live messages they bring.
 *
 * A channel's first party (nats_interest_add) sends its SUB; the
 * subscribes of the channel wait (nats_sub_prepare answers RT_AGAIN) until
 * the server confirmed it (lr_confirm: one PING in flight for every SUB sent
 * before it, the channels subscribed meanwhile in the next batch) and, for a
 * durable channel, its sync point is read (READ_SYNC): then they are
 * answered through fo__sub_ready. A resume also reads the channel's oldest
 * retained seq (READ_RESUME_*). Nothing here waits on the loop. Loop thread.
 */
#include "nats_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void on_confirmed(void *arg, rt_status st);

/* -------------------------------------------------------------------- */
/* The loop reader's messages (loop thread)                               */

/* The channel name of rtgate.eph.X / rtgate.live.X, or NULL. */
static const char *live_channel(const struct nw_msg *m, bool *durable, size_t *len)
{
    size_t el = sizeof(NW_SUBJ_EPH) - 1, ll = sizeof(NW_SUBJ_LIVE) - 1;
    *durable = m->subject_len > ll && memcmp(m->subject, NW_SUBJ_LIVE, ll) == 0;
    size_t pl = *durable ? ll : el;
    if (m->subject_len <= pl || m->subject_len - pl > PROTO_CHANNEL_MAX ||
        (!*durable && memcmp(m->subject, NW_SUBJ_EPH, el) != 0))
        return NULL;
    *len = m->subject_len - pl;
    return m->subject + pl;
}

/*
 * rtgate.eph.X or rtgate.live.X from the loop reader: dispatched at once, no
 * hand-over. A durable one goes through the chain checks (durable_live): a
 * missing seq is read back from JetStream. Loop thread (the reader's hook).
 */
void nats__on_live_msg(void *ctx, const struct nw_msg *m)
{
    struct nats_engine *e = ctx;
    bool durable = false;
    size_t len = 0;
    const char *name = live_channel(m, &durable, &len);
    struct fo_chan *ch = name ? nats__chan_find(e, name, len) : NULL;
    struct chan_state *cs = ch ? ch->eng : NULL;
    if (!cs || !cs->lsid || cs->lsid != m->sid || ch->durable != durable)
        return; /* gone, or an older subscription's message */
    struct msg_headers h = {NULL, m->hdr, m->hdr_len};
    uint64_t seq = 0, prev = 0;
    if (durable && !(nats__hget_u64(&h, NW_H_SEQ, &seq) &&
                     nats__hget_u64(&h, NW_H_LAST_SEQ, &prev) && seq > prev)) {
        e->fo->stats.upstream_invalid++;
        return;
    }
    if (durable && e->drop_every && ++e->live_drop_count % e->drop_every == 0)
        return; /* test hook: lost on the way, silently */
    bool invalid = false;
    struct fo_msg *msg =
        nats__msg_make(e, &h, m->data, m->data_len, name, len, durable, seq, &invalid);
    if (!msg || invalid)
        e->fo->stats.upstream_invalid++;
    if (!msg || (invalid && !durable)) { /* a durable one keeps its seq in the chain */
        fo_msg_release(msg);
        return;
    }
    ch->pins++;
    if (durable) {
        nats__durable_live(e, ch, cs, seq, prev, msg);
    } else {
        fo__dispatch(e->fo, ch, msg);
        fo_msg_release(msg);
    }
    ch->pins--;
    fo__chan_check_idle(e->fo, ch);
}

/* After the loop reader (re)connects: every channel's subscription again. Loop thread. */
void nats__on_live_replay(void *ctx, struct lr *lr)
{
    struct nats_engine *e = ctx;
    char subj[SUBJECT_MAX];
    for (int d = 0; d < 2; d++) {
        for (struct chan_state *cs = e->with_sub[d]; cs; cs = cs->next) {
            if (!cs->lsid)
                continue;
            snprintf(subj, sizeof(subj), "%s%s", d ? NW_SUBJ_LIVE : NW_SUBJ_EPH, cs->ch->name);
            lr_resub(lr, subj, cs->lsid);
        }
    }
    nats__resync_all(e); /* durable messages stored while the reader was away are read back */
}

/* -------------------------------------------------------------------- */
/* Subscriptions and getting them ready (loop thread)                     */

/* The SUB of the channel's live subject, now or at the reader's next connect. Loop thread. */
void nats__chan_subscribe(struct nats_engine *e, struct chan_state *cs)
{
    char subj[SUBJECT_MAX];
    const struct fo_chan *ch = cs->ch;
    snprintf(subj, sizeof(subj), "%s%s", ch->durable ? NW_SUBJ_LIVE : NW_SUBJ_EPH, ch->name);
    cs->lsid = lr_sub(e->lr, subj);
    struct chan_state **head = &e->with_sub[ch->durable];
    cs->prev = NULL;
    cs->next = *head;
    if (*head)
        (*head)->prev = cs;
    *head = cs;
    e->fo->stats.upstream_subscriptions++;
}

static struct chan_state **confirm_head(struct nats_engine *e, enum confirm_list which)
{
    return which == CONFIRM_QUEUE ? &e->confirm_queue : &e->confirm_batch;
}

static void confirm_list_add(struct nats_engine *e, struct chan_state *cs, enum confirm_list which)
{
    struct chan_state **head = confirm_head(e, which);
    cs->on_list = which;
    cs->cprev = NULL;
    cs->cnext = *head;
    if (*head)
        (*head)->cprev = cs;
    *head = cs;
}

static void confirm_list_remove(struct nats_engine *e, struct chan_state *cs)
{
    if (cs->on_list == CONFIRM_NONE)
        return;
    if (cs->cprev)
        cs->cprev->cnext = cs->cnext;
    else
        *confirm_head(e, cs->on_list) = cs->cnext;
    if (cs->cnext)
        cs->cnext->cprev = cs->cprev;
    cs->cprev = cs->cnext = NULL;
    cs->on_list = CONFIRM_NONE;
}

/* See nats_int.h. Loop thread. */
void nats__chan_unsubscribe(struct nats_engine *e, struct chan_state *cs)
{
    confirm_list_remove(e, cs);
    cs->ready = CHAN_UNCONFIRMED;
    cs->n_waiting = 0; /* the registry forgot them: its interest is gone */
    if (!subscribed(cs))
        return;
    lr_unsub(e->lr, cs->lsid);
    cs->lsid = 0;
    if (cs->prev)
        cs->prev->next = cs->next;
    else
        e->with_sub[cs->ch->durable] = cs->next;
    if (cs->next)
        cs->next->prev = cs->prev;
    cs->prev = cs->next = NULL;
    e->fo->stats.upstream_subscriptions--;
    if (cs->ch->durable)
        nats__chan_forget(e, cs);
    else
        cs->gen = ++e->next_gen; /* a confirmation under way is not for the next interest */
}

/*
 * One PING in flight at a time confirms every SUB sent before it (a batch);
 * the channels subscribed meanwhile wait on the queue for the next one. More
 * than one would make the reader's keepalive (two PINGs unanswered: drop)
 * misread a slow server. A reader that is down leaves the queue to the tick.
 * Loop thread.
 */
void nats__confirm_kick(struct nats_engine *e)
{
    if (e->confirm_busy || !e->confirm_queue || lr_confirm(e->lr, on_confirmed, e) != RT_OK)
        return;
    e->confirm_busy = true;
    while (e->confirm_queue) {
        struct chan_state *cs = e->confirm_queue;
        confirm_list_remove(e, cs);
        confirm_list_add(e, cs, CONFIRM_BATCH);
    }
}

/* Remembers a subscribe that waits for cs to be ready. Loop thread. */
rt_status nats__wait_add(struct chan_state *cs, uint64_t op, const struct fo_sub_req *req)
{
    if (cs->n_waiting == cs->cap_waiting) {
        uint32_t cap = cs->cap_waiting ? cs->cap_waiting * 2 : 4;
        struct ready_wait *w = realloc(cs->waiting, cap * sizeof(*w));
        if (!w)
            return RT_NOMEM;
        cs->waiting = w;
        cs->cap_waiting = cap;
    }
    cs->waiting[cs->n_waiting++] = (struct ready_wait){op, req->has_since, req->since};
    return RT_OK;
}

/*
 * A resume (since) on a synced channel: RT_OK if nothing needs reading (the
 * client has this node's latest: nothing to replay, recovered), else the
 * reads start (RT_AGAIN; fo__sub_ready follows): the channel's latest when
 * since is past what this node has seen (the client saw a newer message on
 * another node), then its oldest retained seq, which decides `recovered`.
 * Loop thread.
 */
rt_status nats__resume_start(struct nats_engine *e, struct chan_state *cs, uint64_t op,
                             uint64_t since)
{
    uint64_t latest = cs->latest_known > cs->dispatched ? cs->latest_known : cs->dispatched;
    if (since == latest)
        return RT_OK;
    if (!conn_up(e))
        return RT_UNAVAILABLE;
    enum js_read_kind kind = since > cs->latest_known ? READ_RESUME_LATEST : READ_RESUME_OLDEST;
    return nats__read_start(e, cs, kind, op, since) == RT_OK ? RT_AGAIN : RT_UNAVAILABLE;
}

/*
 * Answers the subscribes waiting for cs: st RT_OK means cs is ready (a
 * waiting resume then starts its own reads). The list is taken first:
 * answering may remove the channel's interest.
 */
static void waiting_answer(struct nats_engine *e, struct chan_state *cs, rt_status st)
{
    uint32_t n = cs->n_waiting;
    struct ready_wait *w = cs->waiting;
    cs->waiting = NULL;
    cs->n_waiting = cs->cap_waiting = 0;
    uint64_t gen = cs->gen;
    for (uint32_t i = 0; i < n; i++) {
        rt_status r = st;
        if (r == RT_OK && w[i].has_since && cs->gen == gen && synced(cs))
            r = nats__resume_start(e, cs, w[i].op, w[i].since);
        if (r != RT_AGAIN)
            fo__sub_ready(e->fo, w[i].op, r == RT_OK ? RT_OK : RT_UNAVAILABLE);
    }
    free(w);
}

/* A durable channel could not be made ready: its waiting subscribes get 503. */
static void sync_failed(struct nats_engine *e, struct chan_state *cs)
{
    cs->ready = CHAN_UNCONFIRMED;
    nats__ring_free(&cs->held);
    cs->fill_target = 0;
    waiting_answer(e, cs, RT_UNAVAILABLE);
}

/* The reader's SUB for cs is confirmed (or the reader went down first). */
static void confirm_one(struct nats_engine *e, struct chan_state *cs, rt_status st)
{
    if (!cs->ch->durable) {
        /* Lost before the server confirmed it: the subscribes that waited get
         * 503 (a retry finds the reader down and is answered at once). */
        cs->ready = st == RT_OK ? CHAN_READY : CHAN_UNCONFIRMED;
        waiting_answer(e, cs, st == RT_OK ? RT_OK : RT_UNAVAILABLE);
        return;
    }
    /* The subscription is in place: everything stored after the seq read now
     * arrives live, everything up to it is history. */
    if (st != RT_OK || !e->stream_ok || nats__read_start(e, cs, READ_SYNC, 0, 0) != RT_OK) {
        sync_failed(e, cs);
        return;
    }
    cs->ready = CHAN_SYNCING;
}

/*
 * Answers the channels on a confirmation list: the batch when its PONG came
 * (or the reader went down), the queue when the reader is down. Loop thread.
 */
void nats__confirm_answer(struct nats_engine *e, enum confirm_list which, rt_status st)
{
    struct chan_state **head = confirm_head(e, which);
    uint32_t n = 0;
    for (struct chan_state *cs = *head; cs; cs = cs->cnext)
        n++;
    if (n > e->cap_confirmed) {
        void *v = realloc(e->confirmed, n * sizeof(*e->confirmed));
        if (!v) { /* confirm them again with the next PING */
            while (*head) {
                struct chan_state *cs = *head;
                confirm_list_remove(e, cs);
                confirm_list_add(e, cs, CONFIRM_QUEUE);
            }
            return;
        }
        e->confirmed = v;
        e->cap_confirmed = n;
    }
    /* A copy with generations: answering may unsubscribe (and subscribe again)
     * channels of the list; none is freed before busy_leave. */
    n = 0;
    while (*head) {
        struct chan_state *cs = *head;
        confirm_list_remove(e, cs);
        e->confirmed[n].cs = cs;
        e->confirmed[n++].gen = cs->gen;
    }
    fo__busy_enter(e->fo);
    for (uint32_t i = 0; i < n; i++) {
        struct chan_state *cs = e->confirmed[i].cs;
        if (cs->gen == e->confirmed[i].gen && cs->ready == CHAN_CONFIRMING)
            confirm_one(e, cs, st);
    }
    fo__busy_leave(e->fo);
}

/* lr_confirm's answer for the batch (loop thread, from the reader's callbacks). */
static void on_confirmed(void *arg, rt_status st)
{
    struct nats_engine *e = arg;
    e->confirm_busy = false;
    nats__confirm_answer(e, CONFIRM_BATCH, st);
    nats__confirm_kick(e);
}

/*
 * Starts making cs ready for subscribers after its SUB: the confirmation,
 * then (durable) the sync point. With the reader down an ephemeral channel
 * is ready at once (the SUB goes out on reconnect); a durable one is not.
 * Loop thread.
 */
void nats__ready_start(struct nats_engine *e, struct chan_state *cs)
{
    bool durable = cs->ch->durable;
    if (!lr_up(e->lr) || (durable && (!conn_up(e) || !e->stream_ok))) {
        cs->ready = durable ? CHAN_UNCONFIRMED : CHAN_READY;
        return;
    }
    cs->ready = CHAN_CONFIRMING;
    confirm_list_add(e, cs, CONFIRM_QUEUE);
    nats__confirm_kick(e);
}

/* READ_SYNC answered: the channel's chain starts at latest. Loop thread. */
void nats__sync_done(struct nats_engine *e, struct fo_chan *ch, struct chan_state *cs, rt_status st,
                     uint64_t latest)
{
    if (cs->ready != CHAN_SYNCING)
        return;
    if (st != RT_OK) {
        sync_failed(e, cs);
        return;
    }
    cs->ready = CHAN_READY;
    cs->dispatched = cs->latest_known = cs->tail_lo = cs->trimmed_through = latest;
    /* Live messages that came while syncing: the ones after latest go on. */
    if (cs->fill_target > latest)
        nats__fill_start(e, cs, cs->fill_target);
    else
        cs->fill_target = 0;
    nats__held_drain(e, ch, cs);
    waiting_answer(e, cs, RT_OK);
}

/* A resume's read answered (READ_RESUME_*): the next read, or the answer. Loop thread. */
void nats__resume_done(struct nats_engine *e, struct chan_state *cs, struct js_read *q,
                       rt_status st, uint64_t seq)
{
    if (q->kind == READ_RESUME_LATEST) {
        if (st == RT_OK) {
            if (cs->latest_known < seq)
                cs->latest_known = seq;
            nats__fill_start(e, cs, seq);
            st = nats__read_start(e, cs, READ_RESUME_OLDEST, q->op, q->since) == RT_OK
                     ? RT_AGAIN
                     : RT_UNAVAILABLE;
        }
        if (st != RT_AGAIN)
            fo__sub_ready(e->fo, q->op, RT_UNAVAILABLE);
        return;
    }
    /* JetStream trims oldest first: a since at or past oldest - 1 lost nothing. */
    if (st == RT_OK)
        cs->trimmed_through = seq - 1;
    else if (st == RT_NOT_FOUND)
        cs->trimmed_through = cs->latest_known > cs->dispatched ? cs->latest_known : cs->dispatched;
    fo__sub_ready(e->fo, q->op, st == RT_OK || st == RT_NOT_FOUND ? RT_OK : RT_UNAVAILABLE);
}
