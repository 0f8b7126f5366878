/*
 * subscribe.c: subscribe and unsubscribe. The checks PROTOCOL.md asks for
 * (409, 403, 400), the plan of a durable subscription (since, epoch,
 * recovered), attaching it to its channel, and the subscribes that wait for
 * the engine.
 *
 * A subscribe asks the engine to get ready for it (sub_prepare). The memory
 * engine always is; the nats engine may first need a round trip (the first
 * subscriber's confirmation and sync point, a resume's reads). Then the
 * request becomes a waiting operation (struct fo_sub_op) that holds interest
 * in its channel, counts against the client's max_subs and against the
 * bounds on waiting subscribes (per client: 429, per node: 503), and is
 * answered through sink->sub_done when the engine calls fo__sub_ready, or
 * with a 503 once sub_timeout_ms have passed (fo_tick). Nothing here waits.
 *
 * Interest: a channel's engine interest is held while it has subscriptions
 * or waiting subscribes (n_subs + n_waiting > 0), so a subscribe waiting for
 * its sync point keeps the upstream subscription it is waiting on.
 *
 * Threads: the loop thread only.
 */
#include "fanout_int.h"

#include <stdlib.h>
#include <string.h>

#define RETRY_AFTER_MS         1000u /* 503: the engine, or the node's bound */
#define RETRY_AFTER_PENDING_MS 100u  /* 429: this client's own waiting subscribes */

/* -------------------------------------------------------------------- */
/* Interest and the client's list                                        */

/* A new party for ch: the first one adds the engine's interest. */
static rt_status interest_hold(struct fo *fo, struct fo_chan *ch)
{
    if (ch->n_subs == 0 && ch->n_waiting == 0) {
        rt_status st = fo->ops->interest_add(fo->eng, ch);
        if (st != RT_OK)
            return st;
    }
    ch->n_waiting++;
    return RT_OK;
}

/* A party of ch went: the last one removes the engine's interest. */
static void interest_drop_if_none(struct fo *fo, struct fo_chan *ch)
{
    if (ch->n_subs == 0 && ch->n_waiting == 0)
        fo->ops->interest_remove(fo->eng, ch);
}

static void client_link(struct fo_client *c, struct fo_sub *s)
{
    s->prev = c->tail;
    s->next = NULL;
    if (c->tail)
        c->tail->next = s;
    else
        c->head = s;
    c->tail = s;
    c->n_subs++;
}

/* Unlinks s; s->next stays as it was, so an iterator holding s can go on. */
static void client_unlink(struct fo_client *c, struct fo_sub *s)
{
    if (s->prev)
        s->prev->next = s->next;
    else
        c->head = s->next;
    if (s->next)
        s->next->prev = s->prev;
    else
        c->tail = s->prev;
    c->n_subs--;
}

/* See fanout_int.h. Loop thread. */
uint32_t fo__sub_detach(struct fo *fo, struct fo_sub *s)
{
    struct fo_client *c = s->client;
    struct fo_chan *ch = s->chan;
    uint32_t held = s->ua_len;
    c->unacked -= held;
    s->ua_len = 0;
    if (s->durable && !s->live)
        c->n_paused--;
    fo__chan_remove_slot(ch, s);
    ch->n_subs--;
    interest_drop_if_none(fo, ch);
    client_unlink(c, s);
    fo->stats.subscriptions--;
    s->dead = true;
    fo__sub_bury(fo, s);
    return held;
}

/* -------------------------------------------------------------------- */
/* Checks and the plan                                                   */

/* Where a new subscription starts. */
struct sub_plan {
    uint64_t cursor;
    bool live;
};

static rt_status sub_refuse(struct fo_sub_result *out, int code, const char *why,
                            uint32_t retry_after_ms)
{
    out->error = code;
    out->error_message = why;
    out->retry_after_ms = retry_after_ms;
    return RT_OK;
}

static bool op_waits_on(const struct fo_client *c, const char *channel, size_t len)
{
    for (const struct fo_sub_op *op = c->ops; op; op = op->cnext)
        if (op->chan->name_len == len && memcmp(op->chan->name, channel, len) == 0)
            return true;
    return false;
}

/* Checks that need no channel state: 409, 400 (since on ephemeral), 403, 429, 503. */
static int sub_precheck(const struct fo_client *c, const struct fo_sub_req *req, bool durable,
                        const char **why)
{
    const struct fo *fo = c->fo;
    if (req->channel_len == 0 || req->channel_len > PROTO_CHANNEL_MAX) {
        *why = "invalid channel";
        return RT_E_BAD_REQUEST;
    }
    if (fo__find_sub(c, req->channel, req->channel_len) ||
        op_waits_on(c, req->channel, req->channel_len)) {
        *why = "already subscribed";
        return RT_E_CONFLICT;
    }
    if (!durable && req->has_since) {
        *why = "since on an ephemeral channel";
        return RT_E_BAD_REQUEST;
    }
    if (req->epoch && (req->epoch_len == 0 || req->epoch_len > PROTO_EPOCH_MAX)) {
        *why = "invalid epoch";
        return RT_E_BAD_REQUEST;
    }
    if (c->n_subs + c->n_pending >= fo->cfg.max_subs) {
        *why = "too many subscriptions";
        return RT_E_FORBIDDEN;
    }
    /* The bounds on waiting subscribes are checked before asking the
     * engine, which may make this one wait too. */
    if (c->n_pending >= fo->cfg.max_pending_subs_per_client) {
        *why = "too many subscribes waiting for the backend";
        return RT_E_RATE_LIMITED;
    }
    if (fo->sub_ops.count >= fo->cfg.max_pending_subs) {
        *why = "too many subscribes waiting for the backend on this node";
        return RT_E_UNAVAILABLE;
    }
    return 0;
}

static bool epoch_matches(const char *epoch, size_t epoch_len, const struct fo_chan_info *info)
{
    return epoch && epoch_len == strlen(info->epoch) && memcmp(epoch, info->epoch, epoch_len) == 0;
}

/*
 * PROTOCOL.md section 3 for a durable sub, once the engine is ready for it:
 * fills seq/epoch/recovered and the plan. Returns 0 or 400 (since above
 * latest in the same epoch).
 */
static int sub_plan_durable(struct fo *fo, struct fo_chan *ch, bool has_since, uint64_t since,
                            const char *epoch, size_t epoch_len, struct fo_sub_result *out,
                            struct sub_plan *plan)
{
    struct fo_chan_info info;
    fo->ops->chan_info(fo->eng, ch, &info);
    out->seq = info.latest;
    memcpy(out->epoch, info.epoch, sizeof(out->epoch));
    plan->cursor = info.latest;
    plan->live = true;
    if (!has_since)
        return 0;
    out->has_recovered = true;
    if (!epoch_matches(epoch, epoch_len, &info))
        return 0; /* other numbering: recovered false, live from now */
    if (since > info.latest)
        return RT_E_BAD_REQUEST;
    if (since < info.trimmed_through)
        return 0; /* messages after since are gone: recovered false */
    out->recovered = true;
    plan->cursor = since;
    plan->live = since == info.latest;
    return 0;
}

/* Creates and links the subscription; it takes over one of ch's waiting holds. */
static rt_status sub_attach(struct fo_client *c, struct fo_chan *ch, const struct sub_plan *plan)
{
    struct fo *fo = c->fo;
    struct fo_sub *s = calloc(1, sizeof(*s));
    if (!s)
        return RT_NOMEM;
    if (fo__chan_add_slot(ch, s) != RT_OK) {
        free(s);
        return RT_NOMEM;
    }
    ch->n_waiting--;
    ch->n_subs++;
    s->conn_id = c->conn_id;
    s->client = c;
    s->chan = ch;
    s->durable = ch->durable;
    s->cursor = plan->cursor;
    s->live = !ch->durable || plan->live;
    if (!s->live)
        c->n_paused++;
    client_link(c, s);
    fo->stats.subscriptions++;
    return RT_OK;
}

/*
 * The engine is ready for a subscribe that holds interest in ch: plan and
 * attach it, or refuse it (400, 503) and give the hold back. Fills *out.
 */
static void sub_finish(struct fo_client *c, struct fo_chan *ch, bool has_since, uint64_t since,
                       const char *epoch, size_t epoch_len, struct fo_sub_result *out)
{
    struct fo *fo = c->fo;
    struct sub_plan plan = {0, true};
    int code = 0;
    if (ch->durable)
        code = sub_plan_durable(fo, ch, has_since, since, epoch, epoch_len, out, &plan);
    if (code == 0 && sub_attach(c, ch, &plan) == RT_OK)
        return;
    ch->n_waiting--;
    interest_drop_if_none(fo, ch);
    fo__chan_release(fo, ch);
    if (code)
        sub_refuse(out, RT_E_BAD_REQUEST, "since is above the channel's latest seq", 0);
    else
        sub_refuse(out, RT_E_UNAVAILABLE, "subscription unavailable", RETRY_AFTER_MS);
}

/* -------------------------------------------------------------------- */
/* Waiting subscribes                                                    */

static struct fo_sub_op *op_find(struct fo *fo, uint64_t id)
{
    struct fo_hnode *n = fo__htab_find(&fo->sub_ops, (const char *)&id, sizeof(id));
    return n ? FO__CONTAINER(n, struct fo_sub_op, node) : NULL;
}

/* Makes the subscribe wait for the engine's fo__sub_ready(id). */
static rt_status op_start(struct fo_client *c, struct fo_chan *ch, const struct fo_sub_req *req,
                          uint64_t id)
{
    struct fo *fo = c->fo;
    struct fo_sub_op *op = calloc(1, sizeof(*op));
    if (!op)
        return RT_NOMEM;
    op->id = id;
    op->node.key = (const char *)&op->id;
    op->node.key_len = sizeof(op->id);
    if (fo__htab_insert(&fo->sub_ops, &op->node) != RT_OK) {
        free(op);
        return RT_NOMEM;
    }
    op->client = c;
    op->chan = ch;
    op->req_id = req->req_id;
    op->has_since = req->has_since;
    op->since = req->since;
    if (req->epoch) {
        op->epoch_len = req->epoch_len;
        memcpy(op->epoch, req->epoch, req->epoch_len);
    }
    op->deadline_ms = fo__now(fo) + fo->cfg.sub_timeout_ms;
    op->cnext = c->ops;
    if (c->ops)
        c->ops->cprev = op;
    c->ops = op;
    c->n_pending++;
    op->older = fo->ops_newest;
    if (fo->ops_newest)
        fo->ops_newest->newer = op;
    else
        fo->ops_oldest = op;
    fo->ops_newest = op;
    return RT_OK;
}

/* Takes op out of every list; its hold on the channel stays for the caller. */
static void op_unlink(struct fo *fo, struct fo_sub_op *op)
{
    rt_htab_remove(&fo->sub_ops, &op->node.h);
    struct fo_client *c = op->client;
    if (op->cprev)
        op->cprev->cnext = op->cnext;
    else
        c->ops = op->cnext;
    if (op->cnext)
        op->cnext->cprev = op->cprev;
    c->n_pending--;
    if (op->older)
        op->older->newer = op->newer;
    else
        fo->ops_oldest = op->newer;
    if (op->newer)
        op->newer->older = op->older;
    else
        fo->ops_newest = op->older;
}

/* Gives the op's hold on its channel back, unanswered. */
static void op_drop(struct fo *fo, struct fo_sub_op *op)
{
    struct fo_chan *ch = op->chan;
    op_unlink(fo, op);
    ch->n_waiting--;
    interest_drop_if_none(fo, ch);
    fo__chan_release(fo, ch);
    free(op);
}

/* Answers op (st RT_OK: the engine is ready; else 503) and frees it. */
static void op_answer(struct fo *fo, struct fo_sub_op *op, rt_status st, const char *why)
{
    struct fo_client *c = op->client;
    struct fo_chan *ch = op->chan;
    struct fo_sub_result res;
    memset(&res, 0, sizeof(res));
    res.durable = ch->durable;
    op_unlink(fo, op);
    fo->stats.subs_waited++;
    if (st == RT_OK) {
        sub_finish(c, ch, op->has_since, op->since, op->epoch_len ? op->epoch : NULL, op->epoch_len,
                   &res);
    } else {
        ch->n_waiting--;
        interest_drop_if_none(fo, ch);
        fo__chan_release(fo, ch);
        sub_refuse(&res, RT_E_UNAVAILABLE, why, RETRY_AFTER_MS);
    }
    if (fo->sink.sub_done)
        fo->sink.sub_done(fo->sink.ctx, c->conn_id, op->req_id, &res);
    free(op);
    /* Replay (when recovered) goes out after the reply. */
    if (res.error == 0 && !c->dead)
        fo_client_pump(c);
}

/* See fanout_int.h. Loop thread. */
void fo__sub_ready(struct fo *fo, uint64_t id, rt_status st)
{
    struct fo_sub_op *op = op_find(fo, id);
    if (!op)
        return; /* answered already (timed out), or its client is gone */
    fo__busy_enter(fo);
    op_answer(fo, op, st, "channel state unavailable");
    fo__busy_leave(fo);
}

/* See fanout_int.h. Loop thread. */
void fo__sub_expire(struct fo *fo, uint64_t now_ms)
{
    if (!fo->ops_oldest || fo->ops_oldest->deadline_ms > now_ms)
        return;
    fo__busy_enter(fo);
    while (fo->ops_oldest && fo->ops_oldest->deadline_ms <= now_ms) {
        fo->stats.sub_timeouts++;
        op_answer(fo, fo->ops_oldest, RT_UNAVAILABLE, "the backend did not answer in time");
    }
    fo__busy_leave(fo);
}

/* See fanout_int.h. Loop thread. */
void fo__client_drop_ops(struct fo_client *c)
{
    while (c->ops)
        op_drop(c->fo, c->ops);
}

/* See fanout_int.h. Loop thread. */
void fo__sub_ops_free(struct fo *fo)
{
    while (fo->ops_oldest)
        op_drop(fo, fo->ops_oldest);
}

/* -------------------------------------------------------------------- */
/* Interface                                                             */

/*
 * Subscribes c to req->channel (PROTOCOL.md section 3; fanout.h says when
 * the answer comes now and when through sink->sub_done). RT_INVAL for a
 * NULL or destroyed client. Loop thread.
 */
rt_status fo_subscribe(struct fo_client *c, const struct fo_sub_req *req, struct fo_sub_result *out)
{
    memset(out, 0, sizeof(*out));
    if (!c || c->dead || !req || !req->channel)
        return RT_INVAL;
    struct fo *fo = c->fo;
    bool durable = fo_channel_durable(fo, req->channel, req->channel_len);
    out->durable = durable;
    const char *why = NULL;
    int code = sub_precheck(c, req, durable, &why);
    if (code == RT_E_RATE_LIMITED || code == RT_E_UNAVAILABLE)
        fo->stats.subs_refused_pending++;
    if (code)
        return sub_refuse(out, code, why,
                          code == RT_E_RATE_LIMITED  ? RETRY_AFTER_PENDING_MS
                          : code == RT_E_UNAVAILABLE ? RETRY_AFTER_MS
                                                     : 0);
    struct fo_chan *ch = NULL;
    if (fo__chan_lookup(fo, req->channel, req->channel_len, true, &ch) != RT_OK)
        return sub_refuse(out, RT_E_UNAVAILABLE, "too many channels", RETRY_AFTER_MS);
    if (interest_hold(fo, ch) != RT_OK) {
        fo__chan_release(fo, ch);
        return sub_refuse(out, RT_E_UNAVAILABLE, "subscription unavailable", RETRY_AFTER_MS);
    }
    uint64_t id = fo->next_op_id++;
    rt_status st = fo->ops->sub_prepare ? fo->ops->sub_prepare(fo->eng, ch, req, id) : RT_OK;
    if (st == RT_AGAIN && op_start(c, ch, req, id) == RT_OK)
        return RT_AGAIN; /* the engine calls fo__sub_ready(id) */
    if (st != RT_OK) {
        /* Refused, or no memory to wait: the engine's later call for id is ignored. */
        ch->n_waiting--;
        interest_drop_if_none(fo, ch);
        fo__chan_release(fo, ch);
        return sub_refuse(out, RT_E_UNAVAILABLE, "channel state unavailable", RETRY_AFTER_MS);
    }
    sub_finish(c, ch, req->has_since, req->since, req->epoch, req->epoch_len, out);
    return RT_OK;
}

/*
 * Unsubscribes. If that freed window space another paused subscription of
 * this client was waiting for, delivers it (as fo_client_pump). Returns
 * RT_NOT_FOUND if not subscribed (a subscribe still waiting for the engine
 * is not a subscription yet). Loop thread.
 */
rt_status fo_unsubscribe(struct fo_client *c, const char *channel, size_t len)
{
    if (!c || c->dead)
        return RT_INVAL;
    struct fo_sub *s = fo__find_sub(c, channel, len);
    if (!s)
        return RT_NOT_FOUND;
    struct fo_chan *ch = s->chan;
    uint32_t freed = fo__sub_detach(c->fo, s);
    fo__chan_release(c->fo, ch);
    if (freed && c->n_paused)
        fo_client_pump(c);
    return RT_OK;
}
