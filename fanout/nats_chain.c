/*
 * nats_chain.c: a durable channel's chain on this node, and filling its
 * holes. Live messages (Nats-Sequence, Nats-Last-Sequence) are dispatched in
 * seq order, each once: a Last-Sequence above what was dispatched means a
 * message was missed, which is read back (FILL job) while the later ones are
 * held; a channel quiet after a live message is probed for a lost last one
 * (READ_PROBE, within a budget). The newest dispatched messages and the last
 * batch read back are cached for catch-up (nats__fetch), a miss is read on a
 * worker (FETCH). Loop thread.
 */
#include "nats_int.h"

#include <stdlib.h>
#include <string.h>

/* -------------------------------------------------------------------- */
/* Rings                                                                  */

static struct chain_entry *ring_at(const struct chain_ring *r, uint32_t i)
{
    return &r->v[(r->head + i) % r->cap];
}

/* Appends e; RT_NOMEM when the ring would grow past max. */
static rt_status ring_push(struct chain_ring *r, struct chain_entry e, uint32_t max)
{
    if (r->len == r->cap) {
        uint32_t cap = r->cap ? r->cap * 2 : 16;
        if (cap > max)
            cap = max;
        if (cap <= r->cap)
            return RT_NOMEM;
        struct chain_entry *v = malloc(cap * sizeof(*v));
        if (!v)
            return RT_NOMEM;
        for (uint32_t i = 0; i < r->len; i++)
            v[i] = *ring_at(r, i);
        free(r->v);
        r->v = v;
        r->cap = cap;
        r->head = 0;
    }
    *ring_at(r, r->len) = e;
    r->len++;
    return RT_OK;
}

static struct chain_entry ring_pop(struct chain_ring *r)
{
    struct chain_entry e = r->v[r->head];
    r->head = (r->head + 1) % r->cap;
    r->len--;
    return e;
}

/* See nats_int.h. Loop thread. */
void nats__ring_free(struct chain_ring *r)
{
    while (r->len > 0)
        fo_msg_release(ring_pop(r).msg);
    free(r->v);
    memset(r, 0, sizeof(*r));
}

/* Index of the first entry with seq > c (entries are increasing), or len. */
static uint32_t ring_after(const struct chain_ring *r, uint64_t c)
{
    uint32_t lo = 0, hi = r->len;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (ring_at(r, mid)->seq <= c)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* -------------------------------------------------------------------- */
/* Channels: chain, dispatch and hole fill (loop thread)                  */

static void stats_cache(struct nats_engine *e, const struct fo_msg *m, bool add)
{
    if (!m)
        return;
    struct fo_stats *s = &e->fo->stats;
    if (add) {
        s->history_messages++;
        s->history_bytes += fo__msg_bytes(m);
    } else {
        s->history_messages--;
        s->history_bytes -= fo__msg_bytes(m);
    }
}

static void replay_drop(struct nats_engine *e, struct chan_state *cs)
{
    if (!cs->replay)
        return;
    for (uint32_t i = 0; i < cs->replay->n; i++)
        stats_cache(e, cs->replay->v[i].msg, false);
    nats__job_free(cs->replay);
    cs->replay = NULL;
}

static void tail_drop(struct nats_engine *e, struct chan_state *cs)
{
    for (uint32_t i = 0; i < cs->tail.len; i++)
        stats_cache(e, ring_at(&cs->tail, i)->msg, false);
    nats__ring_free(&cs->tail);
}

/*
 * Appends a dispatched message to the tail cache (m may be NULL: invalid).
 * Never more than the configured history: a reader further behind gets the
 * same gap from here as from JetStream.
 */
static void tail_push(struct nats_engine *e, struct chan_state *cs, uint64_t seq, struct fo_msg *m)
{
    uint32_t max = e->fo->cfg.history_max < TAIL_MAX ? (uint32_t)e->fo->cfg.history_max : TAIL_MAX;
    if (cs->tail.len >= max) {
        struct chain_entry old = ring_pop(&cs->tail);
        stats_cache(e, old.msg, false);
        fo_msg_release(old.msg);
        cs->tail_lo = old.seq;
    }
    struct chain_entry en = {seq, 0, fo_msg_retain(m)};
    if (ring_push(&cs->tail, en, max) != RT_OK) {
        fo_msg_release(m);
        tail_drop(e, cs); /* no memory: the cache starts again after seq */
        cs->tail_lo = seq;
        return;
    }
    stats_cache(e, m, true);
}

/* Forgets everything about a durable channel's history (interest gone). Loop thread. */
void nats__chan_forget(struct nats_engine *e, struct chan_state *cs)
{
    tail_drop(e, cs);
    replay_drop(e, cs);
    nats__ring_free(&cs->held);
    cs->fill_busy = cs->fetch_busy = cs->probe_busy = false;
    cs->probe_wanted = cs->fetch_failed = false;
    cs->dispatched = cs->latest_known = cs->trimmed_through = cs->fill_target = 0;
    cs->tail_lo = cs->last_live = 0;
    cs->quiet_probed = false;
    cs->gen = ++e->next_gen; /* results of jobs still running are dropped */
}

/* The next message of a durable channel in seq order: cache it and dispatch. */
static void accept_msg(struct nats_engine *e, struct fo_chan *ch, struct chan_state *cs,
                       uint64_t seq, struct fo_msg *m)
{
    cs->dispatched = seq;
    if (cs->latest_known < seq)
        cs->latest_known = seq;
    bool valid = m && m->payload.enc != PROTO_PAYLOAD_NONE;
    tail_push(e, cs, seq, valid ? m : NULL);
    if (valid)
        fo__dispatch(e->fo, ch, m);
}

/* Reads back (dispatched, target] on a worker, unless one is running. Loop thread. */
void nats__fill_start(struct nats_engine *e, struct chan_state *cs, uint64_t target)
{
    if (cs->fill_target < target)
        cs->fill_target = target;
    if (cs->fill_busy || cs->fill_target <= cs->dispatched || !subscribed(cs) || !synced(cs))
        return; /* not synced yet: the fill starts from the sync point */
    struct js_job *j = nats__job_new(JOB_FILL, cs);
    if (!j) {
        cs->retry_at = rt_mono_ms() + RETRY_MS;
        return;
    }
    j->after = cs->dispatched;
    j->until = cs->fill_target;
    cs->fill_busy = true;
    nats__job_submit(e, j);
}

static void held_push(struct nats_engine *e, struct chan_state *cs, struct chain_entry en)
{
    if (ring_push(&cs->held, en, HELD_MAX) == RT_OK)
        return;
    /* Too much behind one hole (or the sync point): read this one back from
     * JetStream too, once the chain has reached it. */
    fo_msg_release(en.msg);
    nats__fill_start(e, cs, en.seq);
}

/*
 * Dispatches the held live messages that now continue the chain; stops at
 * the next hole (and starts filling it). Interest may go while dispatching.
 * Loop thread.
 */
void nats__held_drain(struct nats_engine *e, struct fo_chan *ch, struct chan_state *cs)
{
    while (subscribed(cs) && cs->held.len > 0 && !cs->fill_busy) {
        struct chain_entry *h = ring_at(&cs->held, 0);
        if (h->seq > cs->dispatched && h->prev > cs->dispatched) {
            nats__fill_start(e, cs, h->prev);
            return;
        }
        struct chain_entry en = ring_pop(&cs->held);
        if (en.seq > cs->dispatched)
            accept_msg(e, ch, cs, en.seq, en.msg);
        fo_msg_release(en.msg);
    }
}

/*
 * A live message of a durable channel (takes m). It continues the chain when
 * its Last-Sequence is at or below what was dispatched; a higher one means
 * messages were missed: they are read back first, this one waits. While the
 * channel's sync point is being read every live message waits: the ones at
 * or below it are dropped then, the others continue the chain from it.
 * Loop thread.
 */
void nats__durable_live(struct nats_engine *e, struct fo_chan *ch, struct chan_state *cs,
                        uint64_t seq, uint64_t prev, struct fo_msg *m)
{
    cs->last_live = rt_mono_ms();
    cs->quiet_probed = false;
    if (cs->ready == CHAN_CONFIRMING || cs->ready == CHAN_SYNCING) {
        held_push(e, cs, (struct chain_entry){seq, prev, m});
        return;
    }
    if (!synced(cs) || seq <= cs->dispatched) {
        fo_msg_release(m);
        return;
    }
    if (cs->fill_busy || cs->held.len > 0 || prev > cs->dispatched) {
        held_push(e, cs, (struct chain_entry){seq, prev, m});
        nats__held_drain(e, ch, cs);
        return;
    }
    accept_msg(e, ch, cs, seq, m);
    fo_msg_release(m);
}

/* -------------------------------------------------------------------- */
/* Job results (loop thread)                                              */

static void fill_done(struct nats_engine *e, struct fo_chan *ch, struct chan_state *cs,
                      struct js_job *j)
{
    cs->fill_busy = false;
    if (j->st != RT_OK) {
        cs->retry_at = rt_mono_ms() + RETRY_MS;
        return;
    }
    e->fo->stats.upstream_fetched += j->n;
    for (uint32_t i = 0; i < j->n && subscribed(cs); i++) {
        if (j->v[i].seq > cs->dispatched)
            accept_msg(e, ch, cs, j->v[i].seq, j->v[i].msg);
    }
    if (!subscribed(cs))
        return;
    if (j->reached_end && cs->dispatched < cs->fill_target) {
        /* Nothing more of this channel up to the target: the target was the
         * stream's last seq (an empty channel), or messages were trimmed. */
        rt_log(RT_LOG_DEBUG, "nats_fill_short", "channel=%s from=%llu to=%llu", ch->name,
               (unsigned long long)cs->dispatched + 1, (unsigned long long)cs->fill_target);
        cs->dispatched = cs->fill_target;
    }
    nats__fill_start(e, cs, cs->fill_target);
    nats__held_drain(e, ch, cs);
}

static void fetch_done(struct nats_engine *e, struct fo_chan *ch, struct chan_state *cs,
                       struct js_job *j)
{
    cs->fetch_busy = false;
    if (j->st != RT_OK) {
        cs->fetch_failed = true;
        cs->retry_at = rt_mono_ms() + RETRY_MS;
        nats__job_free(j);
        return;
    }
    e->fo->stats.upstream_fetched += j->n;
    if (j->reached_end && j->n == 0)
        j->gap_to = j->until; /* nothing retained after `after` up to the cached part */
    replay_drop(e, cs);
    for (uint32_t i = 0; i < j->n; i++)
        stats_cache(e, j->v[i].msg, true);
    cs->replay = j;
    fo__chan_repump(e->fo, ch);
}

/* See nats_int.h. Loop thread. */
void nats__probe_done(struct nats_engine *e, struct chan_state *cs, rt_status st, uint64_t latest)
{
    cs->probe_busy = false;
    if (st != RT_OK) {
        cs->probe_wanted = true;
        cs->retry_at = rt_mono_ms() + RETRY_MS;
        return;
    }
    if (cs->latest_known < latest)
        cs->latest_known = latest;
    nats__fill_start(e, cs, latest);
}

/* The channel's latest seq from JetStream; what is newer is read back. Loop thread. */
void nats__probe_start(struct nats_engine *e, struct chan_state *cs)
{
    if (cs->probe_busy || !synced(cs)) {
        cs->probe_wanted = !cs->probe_busy && synced(cs);
        return;
    }
    if (e->probes_out >= PROBES_MAX || nats__read_start(e, cs, READ_PROBE, 0, 0) != RT_OK) {
        cs->probe_wanted = true; /* the tick tries again */
        return;
    }
    e->probes_out++;
    cs->probe_busy = true;
    cs->probe_wanted = false;
}

/* Every durable channel with interest: look for messages missed while away. Loop thread. */
void nats__resync_all(struct nats_engine *e)
{
    for (struct chan_state *cs = e->with_sub[1]; cs; cs = cs->next)
        nats__probe_start(e, cs);
}

/* See nats_int.h. Loop thread. */
void nats__job_done(struct nats_engine *e, struct js_job *j)
{
    if (j->kind == JOB_STREAM) {
        nats__stream_done(e, j);
        nats__job_free(j);
        return;
    }
    struct fo_chan *ch = nats__chan_find(e, j->name, j->name_len);
    struct chan_state *cs = ch ? ch->eng : NULL;
    if (!cs || cs->gen != j->gen || !subscribed(cs)) {
        nats__job_free(j);
        return;
    }
    ch->pins++;
    if (j->kind == JOB_FETCH) {
        fetch_done(e, ch, cs, j); /* keeps j as the replay cache */
    } else {
        fill_done(e, ch, cs, j);
        nats__job_free(j);
    }
    ch->pins--;
    fo__chan_check_idle(e->fo, ch);
}

/* Where the cached chains continue after cursor c: 0 none, 1 found (*en, *gap_to). */
static bool cache_find(const struct chan_state *cs, uint64_t c, const struct chain_entry **en,
                       uint64_t *gap_to)
{
    *gap_to = 0;
    const struct chain_ring *t = &cs->tail;
    if (t->len > 0 && c >= cs->tail_lo && c < ring_at(t, t->len - 1)->seq) {
        *en = ring_at(t, ring_after(t, c));
        return true;
    }
    const struct js_job *r = cs->replay;
    if (!r || c < r->after)
        return false;
    if (r->gap_to && c < r->gap_to) {
        *gap_to = r->gap_to;
        *en = r->n ? &r->v[0] : NULL;
        return true;
    }
    if (r->n == 0 || c >= r->v[r->n - 1].seq)
        return false;
    uint32_t lo = 0, hi = r->n;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (r->v[mid].seq <= c)
            lo = mid + 1;
        else
            hi = mid;
    }
    *en = &r->v[lo];
    return true;
}

static rt_status fetch_start(struct nats_engine *e, struct chan_state *cs, uint64_t after)
{
    if (cs->fetch_busy || cs->fetch_failed)
        return RT_AGAIN;
    struct js_job *j = nats__job_new(JOB_FETCH, cs);
    if (!j)
        return RT_AGAIN;
    j->after = after;
    j->until = cs->tail.len ? cs->tail_lo : cs->dispatched; /* covered from there on */
    if (j->until <= after)
        j->until = after + 1;
    cs->fetch_busy = true;
    nats__job_submit(e, j);
    return RT_AGAIN;
}

/*
 * History after `after` from the caches; messages dropped as invalid are
 * skipped. A miss starts a read on a worker (RT_AGAIN; the result re-pumps).
 * Everything after `dispatched` comes by dispatch, so a reader there is live.
 * Loop thread.
 */
rt_status nats__fetch(void *eng, struct fo_chan *ch, uint64_t after, struct fo_fetch *out)
{
    struct nats_engine *e = eng;
    struct chan_state *cs = ch->eng;
    memset(out, 0, sizeof(*out));
    if (!ch->durable || !synced(cs))
        return RT_OK;
    uint64_t c = after;
    while (c < cs->dispatched) {
        const struct chain_entry *en = NULL;
        uint64_t gap_to = 0;
        if (!cache_find(cs, c, &en, &gap_to))
            break;
        if (gap_to) {
            out->gap_from = after + 1;
            out->gap_to = gap_to;
        }
        if (en && en->msg) {
            out->msg = fo_msg_retain(en->msg);
            return RT_OK;
        }
        c = en ? en->seq : gap_to; /* an invalid message, or nothing after the gap */
    }
    if (c >= cs->dispatched && !out->gap_to)
        return RT_OK; /* caught up: the rest comes by dispatch */
    if (c == after)
        return fetch_start(e, cs, after);
    /* Moved past a gap or past invalid messages: the reader resumes from c. */
    out->gap_from = after + 1;
    out->gap_to = c;
    return RT_OK;
}

/*
 * Once a tick: retries failed probes, fills and fetches, and probes quiet
 * channels. Loop thread.
 */
void nats__chain_tick(struct nats_engine *e, uint64_t now)
{
    /*
     * A lost last message has no successor to reveal it, so a channel quiet
     * for QUIET_MS is probed once (a JetStream read). With thousands of
     * channels that each go quiet between messages that was one read per
     * message, half of the CPU of a many-durable-channels load: the probes
     * share a budget of QUIET_RATE a second, drawn at random among the
     * channels due, so every quiet channel is still probed, later.
     */
    double refill = (double)(now - e->quiet_refill_ms) * QUIET_RATE / 1000.0;
    e->quiet_refill_ms = now;
    e->quiet_tokens = e->quiet_tokens + refill > QUIET_RATE ? QUIET_RATE : e->quiet_tokens + refill;
    uint64_t due = 0;
    for (struct chan_state *cs = e->with_sub[1]; cs; cs = cs->next)
        due += !cs->quiet_probed && cs->last_live && now - cs->last_live >= QUIET_MS &&
               now >= cs->retry_at;
    fo__busy_enter(e->fo); /* a re-pump frees nothing while the list is walked */
    for (struct chan_state *cs = e->with_sub[1]; cs; cs = cs->next) {
        if (!cs->ch->durable || now < cs->retry_at)
            continue;
        if (cs->probe_wanted)
            nats__probe_start(e, cs);
        if (cs->fill_target > cs->dispatched)
            nats__fill_start(e, cs, cs->fill_target);
        if (!cs->quiet_probed && cs->last_live && now - cs->last_live >= QUIET_MS &&
            e->quiet_tokens >= 1.0 &&
            (double)due * ((double)rand() / ((double)RAND_MAX + 1.0)) < e->quiet_tokens) {
            e->quiet_tokens -= 1.0;
            e->fo->stats.upstream_quiet_probes++;
            cs->quiet_probed = true;
            nats__probe_start(e, cs);
        }
        if (cs->fetch_failed) {
            cs->fetch_failed = false;
            fo__chan_repump(e->fo, cs->ch);
        }
    }
    fo__busy_leave(e->fo);
}
