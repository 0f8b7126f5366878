/*
 * registry.c: who is subscribed to what on this node. The channel table,
 * clients, publish, and the re-entrancy rules every other file relies on:
 *
 *   - fo->busy counts sink callbacks in progress (dispatch, pump). While it
 *     is non-zero nothing is freed: removed subscriptions and destroyed
 *     clients go to a graveyard, channels that may be idle to a check list,
 *     and dispatches asked for from inside a callback are queued. All of it
 *     is settled, in order, when the outermost callback region ends.
 *   - A channel's subscription array is never reordered while a dispatch
 *     iterates it: removed entries become NULL and are compacted afterwards.
 *
 * Subscribe and unsubscribe are in subscribe.c, delivery itself (dispatch,
 * window, pump, ack) in delivery.c.
 */
#include "fanout_int.h"

#include <stdlib.h>
#include <string.h>

#define FO_RETRY_AFTER_MS 1000u

/* -------------------------------------------------------------------- */
/* Configuration                                                          */

static void config_defaults(struct fo_config *c)
{
    if (!c->engine)
        c->engine = "memory";
    if (!c->history_max)
        c->history_max = 1000;
    if (!c->history_max_age_ms)
        c->history_max_age_ms = 3600000;
    if (!c->dedup_window_ms)
        c->dedup_window_ms = 120000;
    if (!c->dedup_max_entries)
        c->dedup_max_entries = 1000000;
    if (!c->max_channels)
        c->max_channels = 100000;
    if (!c->max_closed_channels)
        c->max_closed_channels = 100000;
    if (!c->max_unacked)
        c->max_unacked = 1024;
    if (!c->max_subs)
        c->max_subs = 256;
    if (!c->max_pending_subs)
        c->max_pending_subs = 4096;
    if (!c->max_pending_subs_per_client)
        c->max_pending_subs_per_client = c->max_subs;
    if (!c->sub_timeout_ms)
        c->sub_timeout_ms = 5000;
}

static char *dup_str(const char *s)
{
    size_t n = strlen(s) + 1;
    char *p = malloc(n);
    if (p)
        memcpy(p, s, n);
    return p;
}

/* Copies the pattern strings so the caller's config need not outlive fo. */
static rt_status copy_patterns(struct fo *fo, const struct fo_config *cfg)
{
    if (cfg->n_ephemeral == 0)
        return RT_OK;
    fo->ephemeral = calloc(cfg->n_ephemeral, sizeof(char *));
    if (!fo->ephemeral)
        return RT_NOMEM;
    for (size_t i = 0; i < cfg->n_ephemeral; i++) {
        const char *pat = cfg->ephemeral[i];
        if (!pat || !proto_pattern_valid(pat, strlen(pat)))
            return RT_INVAL;
        fo->ephemeral[i] = dup_str(cfg->ephemeral[i]);
        if (!fo->ephemeral[i])
            return RT_NOMEM;
    }
    fo->cfg.ephemeral = (const char *const *)fo->ephemeral;
    return RT_OK;
}

static const struct fo_engine_ops *engine_by_name(const char *name)
{
    if (strcmp(name, fo__engine_memory.name) == 0)
        return &fo__engine_memory;
    if (strcmp(name, fo__engine_nats.name) == 0)
        return &fo__engine_nats;
    return NULL;
}

static uint64_t default_clock(void *ctx)
{
    (void)ctx;
    return rt_wall_ms();
}

/*
 * Creates the fan-out and its engine (cfg->engine, "memory" by default;
 * RT_INVAL for an unknown one). Zero config fields take their defaults.
 * Loop thread.
 */
rt_status fo_create(const struct fo_config *cfg, const struct fo_sink *sink, struct fo **out)
{
    *out = NULL;
    const struct fo_engine_ops *ops =
        cfg ? engine_by_name(cfg->engine ? cfg->engine : "memory") : NULL;
    if (!ops)
        return RT_INVAL;
    return fo__create_with(cfg, sink, ops, out);
}

/* See fanout_int.h. Loop thread. */
rt_status fo__create_with(const struct fo_config *cfg, const struct fo_sink *sink,
                          const struct fo_engine_ops *ops, struct fo **out)
{
    *out = NULL;
    if (!cfg || !sink || !sink->deliver || !sink->gap || !ops)
        return RT_INVAL;
    struct fo *fo = calloc(1, sizeof(*fo));
    if (!fo)
        return RT_NOMEM;
    fo->cfg = *cfg;
    fo->cfg.ephemeral = NULL;
    fo->sink = *sink;
    fo->clock = default_clock;
    config_defaults(&fo->cfg);
    rt_htab_init(&fo->chans);
    rt_htab_init(&fo->sub_ops);
    fo->next_op_id = 1;
    rt_status st = copy_patterns(fo, cfg);
    if (st != RT_OK)
        goto err;
    fo->ops = ops;
    fo->cfg.engine = fo->ops->name;
    st = fo->ops->create(fo, &fo->eng);
    /* The engine copied what it keeps; the caller's strings may go now. */
    fo->cfg.node_id = NULL;
    fo->cfg.nats_url = NULL;
    fo->cfg.nats_stream = NULL;
    if (st != RT_OK)
        goto err;
    *out = fo;
    return RT_OK;
err:
    fo->ops = NULL;
    fo_destroy(fo);
    return st;
}

/* Now in ms on fo's clock (rt_wall_ms unless a test injected one). */
uint64_t fo__now(const struct fo *fo)
{
    return fo->clock(fo->clock_ctx);
}

/* Test hook (fanout_int.h). Loop thread. */
void fo__set_clock(struct fo *fo, uint64_t (*clock)(void *ctx), void *ctx)
{
    fo->clock = clock ? clock : default_clock;
    fo->clock_ctx = clock ? ctx : NULL;
}

/*
 * True unless an ephemeral pattern of the config matches the channel.
 * Any thread (reads the immutable config only).
 */
bool fo_channel_durable(const struct fo *fo, const char *channel, size_t len)
{
    for (size_t i = 0; i < fo->cfg.n_ephemeral; i++) {
        if (proto_pattern_match(fo->ephemeral[i], channel, len))
            return false;
    }
    return true;
}

/* -------------------------------------------------------------------- */
/* Channels                                                               */

static bool chan_is_idle(struct fo *fo, struct fo_chan *ch)
{
    return ch->n_subs == 0 && ch->n_waiting == 0 && ch->pins == 0 && ch->iterating == 0 &&
           fo->ops->chan_idle(fo->eng, ch);
}

static void chan_free(struct fo *fo, struct fo_chan *ch)
{
    rt_htab_remove(&fo->chans, &ch->node.h);
    fo->ops->chan_close(fo->eng, ch);
    free(ch->subs);
    free(ch);
}

/* Queues ch for an idle check at the next settle (see fo__settle). */
void fo__chan_check_idle(struct fo *fo, struct fo_chan *ch)
{
    if (ch->idle_queued)
        return;
    ch->idle_queued = true;
    ch->idle_next = fo->idle_chans;
    fo->idle_chans = ch;
}

/*
 * Frees the queued channels that hold nothing any more. The only place a
 * channel is freed (besides fo_destroy), so a queued pointer never dangles.
 */
static void settle_idle_chans(struct fo *fo)
{
    while (fo->idle_chans) {
        struct fo_chan *ch = fo->idle_chans;
        fo->idle_chans = ch->idle_next;
        ch->idle_queued = false;
        if (chan_is_idle(fo, ch))
            chan_free(fo, ch);
    }
}

/* Checks ch now, or at the end of the current callback region (fanout_int.h). */
void fo__chan_release(struct fo *fo, struct fo_chan *ch)
{
    fo__chan_check_idle(fo, ch);
    if (fo->busy == 0 && !fo->draining)
        settle_idle_chans(fo);
}

static rt_status chan_new(struct fo *fo, const char *name, size_t len, struct fo_chan **out)
{
    if (fo->chans.count >= fo->cfg.max_channels)
        return RT_LIMIT;
    struct fo_chan *ch = calloc(1, sizeof(*ch) + len + 1);
    if (!ch)
        return RT_NOMEM;
    memcpy(ch->name, name, len);
    ch->name_len = len;
    ch->node.key = ch->name;
    ch->node.key_len = len;
    ch->durable = fo_channel_durable(fo, name, len);
    if (fo->ops->chan_open(fo->eng, ch) != RT_OK) {
        free(ch);
        return RT_NOMEM;
    }
    if (fo__htab_insert(&fo->chans, &ch->node) != RT_OK) {
        fo->ops->chan_close(fo->eng, ch);
        free(ch);
        return RT_NOMEM;
    }
    *out = ch;
    return RT_OK;
}

/* The channel's state, created when `create` (RT_LIMIT past max_channels). */
rt_status fo__chan_lookup(struct fo *fo, const char *name, size_t len, bool create,
                          struct fo_chan **out)
{
    struct fo_hnode *n = fo__htab_find(&fo->chans, name, len);
    if (n) {
        *out = FO__CONTAINER(n, struct fo_chan, node);
        return RT_OK;
    }
    *out = NULL;
    return create ? chan_new(fo, name, len, out) : RT_NOT_FOUND;
}

/* Appends s to ch's subscriptions. */
rt_status fo__chan_add_slot(struct fo_chan *ch, struct fo_sub *s)
{
    if (ch->n_slots == ch->cap) {
        uint32_t cap = ch->cap ? ch->cap * 2 : 4;
        struct fo_sub **subs = realloc(ch->subs, cap * sizeof(*subs));
        if (!subs)
            return RT_NOMEM;
        ch->subs = subs;
        ch->cap = cap;
    }
    s->slot = ch->n_slots;
    ch->subs[ch->n_slots++] = s;
    return RT_OK;
}

/* Swap-remove, or leave a hole while a dispatch iterates the array. */
void fo__chan_remove_slot(struct fo_chan *ch, struct fo_sub *s)
{
    if (ch->iterating) {
        ch->subs[s->slot] = NULL;
        ch->holes++;
        return;
    }
    struct fo_sub *last = ch->subs[--ch->n_slots];
    ch->subs[s->slot] = last;
    last->slot = s->slot;
}

/* Removes the holes left during a dispatch. Not while iterating. */
void fo__chan_compact(struct fo_chan *ch)
{
    if (ch->iterating || ch->holes == 0)
        return;
    uint32_t j = 0;
    for (uint32_t i = 0; i < ch->n_slots; i++) {
        if (!ch->subs[i])
            continue;
        ch->subs[j] = ch->subs[i];
        ch->subs[j]->slot = j;
        j++;
    }
    ch->n_slots = j;
    ch->holes = 0;
}

/* -------------------------------------------------------------------- */
/* Busy regions                                                           */

static void sub_free(struct fo_sub *s)
{
    free(s->unacked);
    free(s);
}

/* Frees a removed subscription, or queues it while callbacks run (fanout_int.h). */
void fo__sub_bury(struct fo *fo, struct fo_sub *s)
{
    if (fo->busy || fo->draining) {
        s->grave_next = fo->grave_subs;
        fo->grave_subs = s;
    } else {
        sub_free(s);
    }
}

static void reap(struct fo *fo)
{
    while (fo->grave_subs) {
        struct fo_sub *s = fo->grave_subs;
        fo->grave_subs = s->grave_next;
        sub_free(s);
    }
    while (fo->grave_clients) {
        struct fo_client *c = fo->grave_clients;
        fo->grave_clients = c->grave_next;
        free(c);
    }
}

/* Starts a region that calls into the sink (see the top of this file). */
void fo__busy_enter(struct fo *fo)
{
    fo->busy++;
}

/*
 * Ends a callback region. The outermost one runs the queued dispatches (in
 * the order they were asked for; each may queue more), then frees what was
 * removed meanwhile.
 */
void fo__busy_leave(struct fo *fo)
{
    if (--fo->busy > 0 || fo->draining)
        return;
    fo->draining = true;
    while (fo->pending_head) {
        struct fo_pending *p = fo->pending_head;
        fo->pending_head = p->next;
        if (!fo->pending_head)
            fo->pending_tail = NULL;
        fo__dispatch(fo, p->chan, p->msg);
        fo_msg_release(p->msg);
        p->chan->pins--;
        fo__chan_check_idle(fo, p->chan);
        free(p);
    }
    reap(fo);
    settle_idle_chans(fo);
    fo->draining = false;
}

/* -------------------------------------------------------------------- */
/* Clients                                                                */

/*
 * Per-connection state. The registry refers to the connection only by
 * conn_id (in sink calls). Loop thread.
 */
rt_status fo_client_create(struct fo *fo, uint64_t conn_id, struct fo_client **out)
{
    *out = NULL;
    struct fo_client *c = calloc(1, sizeof(*c));
    if (!c)
        return RT_NOMEM;
    c->fo = fo;
    c->conn_id = conn_id;
    *out = c;
    return RT_OK;
}

/* The client's live subscription on channel, or NULL. */
struct fo_sub *fo__find_sub(const struct fo_client *c, const char *channel, size_t len)
{
    struct fo_chan *ch = NULL;
    if (fo__chan_lookup(c->fo, channel, len, false, &ch) != RT_OK)
        return NULL;
    for (struct fo_sub *s = c->head; s; s = s->next) {
        if (s->chan == ch && !s->dead)
            return s;
    }
    return NULL;
}

/*
 * Unsubscribes from everything and frees the client (after the current
 * callback region if called from inside one). NULL is a no-op. Loop thread.
 */
void fo_client_destroy(struct fo_client *c)
{
    if (!c || c->dead)
        return;
    struct fo *fo = c->fo;
    fo__client_drop_ops(c);
    while (c->head) {
        struct fo_chan *ch = c->head->chan;
        fo__sub_detach(fo, c->head);
        fo__chan_release(fo, ch);
    }
    c->dead = true;
    if (fo->busy || fo->draining) {
        c->grave_next = fo->grave_clients;
        fo->grave_clients = c;
    } else {
        free(c);
    }
}

/* -------------------------------------------------------------------- */
/* Publish                                                                */

static void pub_refuse(struct fo_pub_result *out, int code, const char *why)
{
    out->error = code;
    out->error_message = why;
    out->retry_after_ms = code == RT_E_UNAVAILABLE ? FO_RETRY_AFTER_MS : 0;
}

static bool pub_req_valid(const struct fo_pub_req *req, const char **why)
{
    *why = "invalid channel";
    if (!req->channel || req->channel_len == 0 || req->channel_len > PROTO_CHANNEL_MAX)
        return false;
    *why = "invalid msg_id";
    if (req->msg_id && (req->msg_id_len == 0 || req->msg_id_len > PROTO_MSG_ID_MAX))
        return false;
    *why = "data is required";
    return req->payload.ptr || req->payload.len == 0;
}

static void pub_count(struct fo *fo, const struct fo_pub_result *res)
{
    if (res->error)
        return;
    if (res->dup)
        fo->stats.dups++;
    else
        fo->stats.published++;
}

/*
 * Publishes through the engine and, once accepted, dispatches to the local
 * subscribers (the publisher included). RT_OK: *out is the answer (an
 * engine failure or max_channels is a 503 with retry_after_ms). RT_AGAIN:
 * the answer comes through sink->pub_done. Loop thread.
 */
rt_status fo_publish(struct fo *fo, const struct fo_pub_req *req, struct fo_pub_result *out)
{
    memset(out, 0, sizeof(*out));
    const char *why = NULL;
    if (!pub_req_valid(req, &why)) {
        pub_refuse(out, RT_E_BAD_REQUEST, why);
        return RT_OK;
    }
    out->durable = fo_channel_durable(fo, req->channel, req->channel_len);
    struct fo_chan *ch = NULL;
    if (fo__chan_lookup(fo, req->channel, req->channel_len, true, &ch) != RT_OK) {
        pub_refuse(out, RT_E_UNAVAILABLE, "too many channels");
        return RT_OK;
    }
    ch->pins++;
    struct fo_msg *m = NULL;
    rt_status st = fo->ops->publish(fo->eng, ch, req, out, &m);
    if (st == RT_OK && m)
        fo__dispatch(fo, ch, m);
    fo_msg_release(m);
    if (st != RT_OK && st != RT_AGAIN) {
        pub_refuse(out, RT_E_UNAVAILABLE, "publish failed");
        st = RT_OK;
    }
    if (st == RT_OK)
        pub_count(fo, out);
    ch->pins--;
    fo__chan_release(fo, ch);
    return st;
}

/* Completion of an engine's async publish. Loop thread. */
void fo__pub_done(struct fo *fo, uint64_t conn_id, int64_t req_id, const struct fo_pub_result *res)
{
    pub_count(fo, res);
    if (fo->sink.pub_done)
        fo->sink.pub_done(fo->sink.ctx, conn_id, req_id, res);
}

/* -------------------------------------------------------------------- */
/* Stats, tick, destroy                                                   */

/* Counters since fo_create; channels and subscriptions are current. Loop thread. */
void fo_get_stats(const struct fo *fo, struct fo_stats *out)
{
    *out = fo->stats;
    out->channels = fo->chans.count;
    out->subs_pending = fo->sub_ops.count;
    if (fo->ops->stats)
        fo->ops->stats(fo->eng, out);
}

/*
 * Drops expired history and dedup entries and frees channels left with
 * nothing. Ages are measured on fo's clock, the one message timestamps come
 * from: a caller passing rt_mono_ms would otherwise never expire anything.
 * Loop thread.
 */
void fo_tick(struct fo *fo, uint64_t now_ms)
{
    (void)now_ms;
    uint64_t now = fo__now(fo);
    fo->ops->tick(fo->eng, now);
    fo__sub_expire(fo, now);
    if (fo->ops->service)
        fo->ops->service(fo->eng);
    if (fo->busy == 0 && !fo->draining)
        settle_idle_chans(fo);
}

/* See fanout.h. Loop thread, outside any sink callback. */
void fo_service(struct fo *fo)
{
    if (!fo || !fo->ops->service)
        return;
    fo->ops->service(fo->eng);
    if (fo->busy == 0 && !fo->draining)
        settle_idle_chans(fo);
}

/* See fanout.h. Loop thread. */
bool fo_ready(const struct fo *fo)
{
    return fo && (!fo->ops->ready || fo->ops->ready(fo->eng));
}

static void chan_free_cb(struct rt_hnode *n, void *arg)
{
    struct fo *fo = arg;
    struct fo_chan *ch = FO__CONTAINER(n, struct fo_chan, node.h);
    chan_free(fo, ch);
}

static void drop_pending(struct fo *fo)
{
    while (fo->pending_head) {
        struct fo_pending *p = fo->pending_head;
        fo->pending_head = p->next;
        fo_msg_release(p->msg);
        free(p);
    }
    fo->pending_tail = NULL;
}

/*
 * Frees the registry and the engine. Destroy every client first: their
 * subscriptions point into the channels freed here. NULL is a no-op.
 * Loop thread, outside any sink callback.
 */
void fo_destroy(struct fo *fo)
{
    if (!fo)
        return;
    drop_pending(fo);
    fo__sub_ops_free(fo);
    reap(fo);
    if (fo->ops) {
        rt_htab_each(&fo->chans, chan_free_cb, fo);
        fo->ops->destroy(fo->eng);
    }
    rt_htab_free(&fo->chans);
    rt_htab_free(&fo->sub_ops);
    for (size_t i = 0; fo->ephemeral && i < fo->cfg.n_ephemeral; i++)
        free(fo->ephemeral[i]);
    free(fo->ephemeral);
    free(fo);
}

/* ------------------------------------------------------------------------ */
/* The bus (fanout.h): a thin pass-through to the engine                      */

rt_status fo_bus_open(struct fo *fo, fo_bus_fn fn, void *arg)
{
    if (!fo->ops->bus_subscribe)
        return RT_INVAL;
    fo->bus_fn = fn;
    fo->bus_arg = arg;
    return RT_OK;
}

void *fo_bus_subscribe(struct fo *fo, const char *subject)
{
    return fo->ops->bus_subscribe ? fo->ops->bus_subscribe(fo->eng, subject) : NULL;
}

void fo_bus_unsubscribe(struct fo *fo, void *handle)
{
    if (fo->ops->bus_unsubscribe && handle)
        fo->ops->bus_unsubscribe(fo->eng, handle);
}

rt_status fo_bus_publish(struct fo *fo, const char *subject, const char *reply, const uint8_t *data,
                         size_t len)
{
    if (!fo->ops->bus_publish)
        return RT_INVAL;
    return fo->ops->bus_publish(fo->eng, subject, reply, data, len);
}

uint64_t fo_bus_generation(const struct fo *fo)
{
    return fo->ops->bus_generation ? fo->ops->bus_generation(fo->eng) : 0;
}
