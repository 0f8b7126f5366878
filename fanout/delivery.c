/*
 * delivery.c: getting messages to subscriptions. Live dispatch of each
 * accepted message, the per-client ack window, and the pump that replays
 * history to durable subscriptions that are not live (after subscribe with
 * since, a full window, or a full outbox) until they are caught up.
 *
 * The cursor rule that makes the seam exact: a durable subscription's
 * cursor is the last seq it got (or that a gap told it it will not get). A
 * message is given to it only if its seq is above the cursor, and a live
 * subscription's cursor is the channel's latest dispatched seq. The pump
 * walks history from the cursor and turns the subscription live only when
 * the engine has nothing after the cursor: from then on every newer message
 * arrives through dispatch, in seq order, each once.
 */
#include "fanout_int.h"

#include <stdlib.h>
#include <string.h>

/* Messages one subscription may take per pump round, so paused
 * subscriptions of one client share the window and the outbox. */
#define PUMP_BATCH 32u
#define RING_MIN   8u
#define RING_KEEP  64u /* an emptied ring larger than this is freed */

/* -------------------------------------------------------------------- */
/* Window: each durable sub's ring of delivered, unacked seqs             */

static bool window_open(const struct fo *fo, const struct fo_client *c)
{
    return c->unacked < fo->cfg.max_unacked;
}

/* Room for one more seq in s's ring (grows up to max_unacked). */
static bool ring_reserve(const struct fo *fo, struct fo_sub *s)
{
    if (s->ua_len < s->ua_cap)
        return true;
    uint32_t cap = s->ua_cap ? s->ua_cap * 2 : RING_MIN;
    if (cap > fo->cfg.max_unacked)
        cap = fo->cfg.max_unacked;
    if (cap <= s->ua_cap)
        return false;
    uint64_t *r = malloc(cap * sizeof(*r));
    if (!r)
        return false;
    for (uint32_t i = 0; i < s->ua_len; i++)
        r[i] = s->unacked[(s->ua_head + i) % s->ua_cap];
    free(s->unacked);
    s->unacked = r;
    s->ua_cap = cap;
    s->ua_head = 0;
    return true;
}

/* Pops every seq <= seq; returns how many. */
static uint32_t ring_pop_through(struct fo_sub *s, uint64_t seq)
{
    uint32_t n = 0;
    while (s->ua_len > 0 && s->unacked[s->ua_head] <= seq) {
        s->ua_head = (s->ua_head + 1) % s->ua_cap;
        s->ua_len--;
        n++;
    }
    if (s->ua_len == 0 && s->ua_cap > RING_KEEP) {
        free(s->unacked);
        s->unacked = NULL;
        s->ua_cap = 0;
        s->ua_head = 0;
    }
    return n;
}

/*
 * Hands durable m to the sink, counted in the window first so that an ack
 * coming back from inside the callback finds it; undone if refused. Needs
 * ring_reserve to have succeeded. True if the sink took it.
 */
static bool deliver_counted(struct fo *fo, struct fo_sub *s, struct fo_msg *m)
{
    uint64_t prev = s->cursor;
    s->cursor = m->seq;
    s->unacked[(s->ua_head + s->ua_len) % s->ua_cap] = m->seq;
    s->ua_len++;
    s->client->unacked++;
    if (fo->sink.deliver(fo->sink.ctx, s->client->conn_id, m) == RT_OK) {
        fo->stats.deliveries++;
        return true;
    }
    if (s->dead) /* sub_detach already gave the window space back */
        return false;
    s->cursor = prev;
    if (s->ua_len > 0 && s->unacked[(s->ua_head + s->ua_len - 1) % s->ua_cap] == m->seq) {
        s->ua_len--;
        s->client->unacked--;
    }
    return false;
}

static void set_live(struct fo_sub *s, bool live)
{
    if (s->live == live)
        return;
    s->live = live;
    if (live)
        s->client->n_paused--;
    else
        s->client->n_paused++;
}

/* -------------------------------------------------------------------- */
/* Live dispatch                                                          */

static void deliver_ephemeral(struct fo *fo, struct fo_sub *s, struct fo_msg *m)
{
    if (fo->sink.deliver(fo->sink.ctx, s->conn_id, m) == RT_OK)
        fo->stats.deliveries++;
    else
        fo->stats.drops++;
}

/* A paused durable sub is skipped: the pump replays from its cursor. */
static void deliver_durable(struct fo *fo, struct fo_sub *s, struct fo_msg *m)
{
    if (!s->live || m->seq <= s->cursor)
        return;
    if (!window_open(fo, s->client) || !ring_reserve(fo, s)) {
        set_live(s, false);
        return;
    }
    if (!deliver_counted(fo, s, m) && !s->dead)
        set_live(s, false);
}

static void dispatch_now(struct fo *fo, struct fo_chan *ch, struct fo_msg *m)
{
    fo__busy_enter(fo);
    ch->iterating++;
    uint32_t n = ch->n_slots; /* subs added meanwhile joined after m */
    for (uint32_t i = 0; i < n; i++) {
        struct fo_sub *s = ch->subs[i];
        if (!s || s->dead)
            continue;
        if (s->durable)
            deliver_durable(fo, s, m);
        else
            deliver_ephemeral(fo, s, m);
    }
    ch->iterating--;
    fo__chan_compact(ch);
    fo__busy_leave(fo);
}

/*
 * Without memory to queue a nested dispatch, live durable subs fall back to
 * the pump (nothing lost); ephemeral ones lose this message.
 */
static void dispatch_fallback(struct fo *fo, struct fo_chan *ch)
{
    for (uint32_t i = 0; i < ch->n_slots; i++) {
        struct fo_sub *s = ch->subs[i];
        if (!s || s->dead)
            continue;
        if (s->durable)
            set_live(s, false);
        else
            fo->stats.drops++;
    }
}

static void queue_pending(struct fo *fo, struct fo_chan *ch, struct fo_msg *m)
{
    struct fo_pending *p = malloc(sizeof(*p));
    if (!p) {
        dispatch_fallback(fo, ch);
        return;
    }
    p->next = NULL;
    p->chan = ch;
    p->msg = fo_msg_retain(m);
    ch->pins++;
    if (fo->pending_tail)
        fo->pending_tail->next = p;
    else
        fo->pending_head = p;
    fo->pending_tail = p;
}

/* See fanout_int.h. Loop thread. */
void fo__dispatch(struct fo *fo, struct fo_chan *ch, struct fo_msg *m)
{
    if (fo->busy)
        queue_pending(fo, ch, m);
    else
        dispatch_now(fo, ch, m);
}

/* -------------------------------------------------------------------- */
/* Pump                                                                   */

enum pump_step {
    STEP_IDLE,     /* nothing to do for this sub now */
    STEP_PROGRESS, /* delivered, skipped a gap, or went live */
    STEP_WINDOW,   /* the client's window is full */
    STEP_BLOCKED,  /* the outbox is full: stop the whole client */
};

static enum pump_step pump_gap(struct fo *fo, struct fo_sub *s, const struct fo_fetch *f)
{
    rt_status st =
        fo->sink.gap(fo->sink.ctx, s->client->conn_id, s->chan->name, f->gap_from, f->gap_to);
    if (st != RT_OK)
        return STEP_BLOCKED;
    fo->stats.gaps++;
    if (!s->dead)
        s->cursor = f->gap_to;
    return STEP_PROGRESS;
}

static enum pump_step pump_msg(struct fo *fo, struct fo_sub *s, struct fo_msg *m)
{
    if (m->seq <= s->cursor) {
        set_live(s, true); /* engine bug; do not loop on it */
        return STEP_IDLE;
    }
    if (!window_open(fo, s->client))
        return STEP_WINDOW;
    if (!ring_reserve(fo, s))
        return STEP_BLOCKED;
    if (deliver_counted(fo, s, m))
        return STEP_PROGRESS;
    return s->dead ? STEP_IDLE : STEP_BLOCKED;
}

/* One history step for a paused durable sub: a gap, a message, or going live. */
static enum pump_step pump_one(struct fo *fo, struct fo_sub *s)
{
    struct fo_fetch f = {NULL, 0, 0};
    if (fo->ops->fetch(fo->eng, s->chan, s->cursor, &f) != RT_OK)
        return STEP_IDLE;
    enum pump_step r = STEP_PROGRESS;
    if (f.gap_to)
        r = pump_gap(fo, s, &f);
    if (r == STEP_PROGRESS && !s->dead) {
        if (f.msg)
            r = pump_msg(fo, s, f.msg);
        else if (!f.gap_to)
            set_live(s, true); /* after a gap alone: ask again from gap_to */
    }
    fo_msg_release(f.msg);
    return r;
}

static enum pump_step pump_sub(struct fo *fo, struct fo_sub *s)
{
    enum pump_step r = STEP_IDLE;
    for (uint32_t i = 0; i < PUMP_BATCH && !s->dead && !s->live; i++) {
        r = pump_one(fo, s);
        if (r != STEP_PROGRESS)
            return r;
    }
    return r;
}

/* Rounds over the client's paused subs until nothing moves. */
static void pump_rounds(struct fo *fo, struct fo_client *c)
{
    bool progress = true;
    while (progress && c->n_paused > 0 && !c->dead) {
        progress = false;
        struct fo_sub *next = NULL;
        for (struct fo_sub *s = c->head; s; s = next) {
            next = s->next; /* s may be removed by a callback, not freed */
            if (s->dead || !s->durable || s->live)
                continue;
            enum pump_step r = pump_sub(fo, s);
            if (r == STEP_BLOCKED || c->dead)
                return;
            progress = progress || r == STEP_PROGRESS;
        }
    }
}

/*
 * Delivers what c's paused durable subscriptions are owed, as far as the
 * window and the outbox allow (fanout.h). Re-entrant: a call from inside a
 * sink callback for the same client makes the running pump go round again.
 * Loop thread.
 */
void fo_client_pump(struct fo_client *c)
{
    if (!c || c->dead)
        return;
    if (c->pumping) {
        c->repump = true;
        return;
    }
    struct fo *fo = c->fo;
    fo__busy_enter(fo);
    c->pumping = true;
    do {
        c->repump = false;
        pump_rounds(fo, c);
    } while (c->repump && !c->dead);
    c->pumping = false;
    fo__busy_leave(fo);
}

/*
 * Cumulative ack (fanout.h): pops every delivered seq <= seq of that
 * subscription from the window and pumps if that made room for a paused
 * one. RT_NOT_FOUND for an unknown or ephemeral channel. Loop thread.
 */
rt_status fo_ack(struct fo_client *c, const char *channel, size_t len, uint64_t seq)
{
    if (!c || c->dead)
        return RT_INVAL;
    struct fo_sub *s = fo__find_sub(c, channel, len);
    if (!s || !s->durable)
        return RT_NOT_FOUND;
    uint32_t n = ring_pop_through(s, seq);
    c->unacked -= n;
    if (n && c->n_paused)
        fo_client_pump(c);
    return RT_OK;
}

/*
 * Pumps the clients of ch's paused durable subscriptions (fanout_int.h).
 * The subscription array is held still meanwhile: a client destroyed from
 * inside a callback leaves holes, compacted at the end. Loop thread.
 */
void fo__chan_repump(struct fo *fo, struct fo_chan *ch)
{
    fo__busy_enter(fo);
    ch->iterating++;
    uint32_t n = ch->n_slots;
    for (uint32_t i = 0; i < n; i++) {
        struct fo_sub *s = ch->subs[i];
        if (s && !s->dead && s->durable && !s->live)
            fo_client_pump(s->client);
    }
    ch->iterating--;
    fo__chan_compact(ch);
    fo__busy_leave(fo);
}

/* Durable messages delivered to c and not acked yet. Loop thread. */
uint32_t fo_client_unacked(const struct fo_client *c)
{
    return c ? c->unacked : 0;
}
