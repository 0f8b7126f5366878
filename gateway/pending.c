/*
 * pending.c: a connection's requests that wait behind its own subscribes
 * still waiting for NATS (fo_subscribe answered RT_AGAIN).
 *
 * A subscribe that needs a round trip to NATS (a channel new to this node, a
 * resume) is answered later, through the sink's sub_done; the loop goes on
 * serving everybody meanwhile. A later request of the same connection on the
 * same channel must not overtake it: a `pub` right behind its `sub` must
 * reach the new subscription, an `unsub` must find it, a second `sub` must
 * get its 409. Such requests are copied out of the decoder's buffers and
 * queued here, in order, and run once the channel's subscribe is answered
 * (from the session's flush, never from inside the fan-out's callback).
 * Requests on other channels, presence, acks and pings do not wait: their
 * replies may overtake the waiting subscribe's, as a `pub`'s reply already
 * may overtake a later request's (docs/protocol.md).
 *
 * Bounds: GW_PENDING_MAX_REQS requests and max_outbox_bytes of their bytes
 * per connection; past them the request is answered 429 with
 * retry_after_ms. The subscribes waiting are bounded by the fan-out (per
 * connection and per node).
 *
 * Loop thread only.
 */
#include "gw.h"

#include <stdlib.h>
#include <string.h>

#define GW_PENDING_MAX_REQS 256
#define GW_PENDING_RETRY_MS 100u

/* A subscribe of this connection waiting for NATS. */
struct pending_sub {
    int64_t req_id;
    size_t len;
    char channel[PROTO_CHANNEL_MAX];
};

/* A request waiting behind one: the message and copies of its bytes. */
struct waiting_req {
    struct waiting_req *next;
    size_t bytes;
    struct proto_msg m; /* its strings point into data */
    char data[];
};

struct gw_pending {
    struct pending_sub *subs;
    uint32_t n_subs, cap_subs;
    struct waiting_req *head, *tail;
    uint32_t n_reqs;
    size_t bytes;
    bool runnable; /* a subscribe was answered: queued requests may run */
};

static bool channel_is(const char *a, size_t alen, const char *b, size_t blen)
{
    return alen == blen && memcmp(a, b, alen) == 0;
}

static bool sub_waits(const struct gw_pending *p, const char *channel, size_t len)
{
    for (uint32_t i = 0; i < p->n_subs; i++)
        if (channel_is(p->subs[i].channel, p->subs[i].len, channel, len))
            return true;
    return false;
}

static bool req_queued(const struct gw_pending *p, const char *channel, size_t len)
{
    for (const struct waiting_req *w = p->head; w; w = w->next)
        if (channel_is(w->m.channel.ptr, w->m.channel.len, channel, len))
            return true;
    return false;
}

/* The requests whose order matters against a subscribe of the same channel. */
static bool channel_bound(const struct proto_msg *m)
{
    return (m->type == PROTO_T_SUB || m->type == PROTO_T_UNSUB || m->type == PROTO_T_PUB) &&
           m->channel.ptr;
}

static size_t str_bytes(struct proto_str s)
{
    return s.ptr ? s.len + 1 : 0;
}

/* Copies s into *at (NUL-terminated) and points d at it. */
static void str_copy(struct proto_str *d, struct proto_str s, char **at)
{
    if (!s.ptr)
        return;
    memcpy(*at, s.ptr, s.len);
    (*at)[s.len] = 0;
    d->ptr = *at;
    *at += s.len + 1;
}

static void payload_copy(struct proto_payload *d, const struct proto_payload *s, char **at)
{
    if (!s->ptr)
        return;
    memcpy(*at, s->ptr, s->len);
    d->ptr = (const uint8_t *)*at;
    *at += s->len;
}

/* A copy of m that owns its bytes, or NULL. */
static struct waiting_req *req_copy(const struct proto_msg *m)
{
    size_t n = str_bytes(m->token) + str_bytes(m->name) + str_bytes(m->channel) +
               str_bytes(m->epoch) + str_bytes(m->msg_id) + str_bytes(m->space) +
               str_bytes(m->watch) + (m->data.ptr ? m->data.len : 0) +
               (m->meta.ptr ? m->meta.len : 0);
    struct waiting_req *w = malloc(sizeof(*w) + n);
    if (!w)
        return NULL;
    w->next = NULL;
    w->bytes = sizeof(*w) + n;
    w->m = *m;
    char *at = w->data;
    str_copy(&w->m.token, m->token, &at);
    str_copy(&w->m.name, m->name, &at);
    str_copy(&w->m.channel, m->channel, &at);
    str_copy(&w->m.epoch, m->epoch, &at);
    str_copy(&w->m.msg_id, m->msg_id, &at);
    str_copy(&w->m.space, m->space, &at);
    str_copy(&w->m.watch, m->watch, &at);
    payload_copy(&w->m.data, &m->data, &at);
    payload_copy(&w->m.meta, &m->meta, &at);
    return w;
}

static struct gw_pending *pending_of(struct gw_session *s)
{
    if (!s->pending)
        s->pending = calloc(1, sizeof(*s->pending));
    return s->pending;
}

/*
 * True if m was taken: queued behind a waiting subscribe of its channel, or
 * answered 429 because this connection's queue is full. False: handle it now.
 */
bool gw_pending_defer(struct gw_session *s, const struct proto_msg *m)
{
    struct gw_pending *p = s->pending;
    if (!p || !channel_bound(m) ||
        (!sub_waits(p, m->channel.ptr, m->channel.len) &&
         !req_queued(p, m->channel.ptr, m->channel.len)))
        return false;
    struct waiting_req *w = NULL;
    if (p->n_reqs < GW_PENDING_MAX_REQS && p->bytes < s->srv->cfg->max_outbox_bytes)
        w = req_copy(m);
    if (!w) {
        gw_session_reply_error(s, m, RT_E_RATE_LIMITED,
                               "too many requests waiting behind a subscribe", GW_PENDING_RETRY_MS);
        return true;
    }
    if (p->tail)
        p->tail->next = w;
    else
        p->head = w;
    p->tail = w;
    p->n_reqs++;
    p->bytes += w->bytes;
    return true;
}

/* A subscribe of s waits for NATS: later requests on its channel wait for it. */
void gw_pending_sub_started(struct gw_session *s, int64_t req_id, const char *channel, size_t len)
{
    struct gw_pending *p = pending_of(s);
    if (p && p->n_subs == p->cap_subs) {
        uint32_t cap = p->cap_subs ? p->cap_subs * 2 : 4;
        struct pending_sub *v = realloc(p->subs, cap * sizeof(*v));
        if (v) {
            p->subs = v;
            p->cap_subs = cap;
        }
    }
    if (!p || p->n_subs == p->cap_subs || len > PROTO_CHANNEL_MAX) {
        /* No memory to remember it: requests behind it are not held back. */
        rt_log(RT_LOG_ERROR, "pending_nomem", "conn=%s", s->client_id);
        return;
    }
    struct pending_sub *ps = &p->subs[p->n_subs++];
    ps->req_id = req_id;
    ps->len = len;
    memcpy(ps->channel, channel, len);
}

/* True while the subscribe req_id of s waits for its answer (sink_sub_done). */
bool gw_pending_sub_waiting(const struct gw_session *s, int64_t req_id)
{
    const struct gw_pending *p = s->pending;
    for (uint32_t i = 0; p && i < p->n_subs; i++)
        if (p->subs[i].req_id == req_id)
            return true;
    return false;
}

/* The subscribe req_id of s was answered: what waited behind it runs at the next flush. */
void gw_pending_sub_done(struct gw_session *s, int64_t req_id)
{
    struct gw_pending *p = s->pending;
    if (!p)
        return;
    for (uint32_t i = 0; i < p->n_subs; i++) {
        if (p->subs[i].req_id != req_id)
            continue;
        p->subs[i] = p->subs[--p->n_subs];
        p->runnable = p->head != NULL;
        return;
    }
}

/*
 * Runs, in order, the queued requests whose channel no longer has a
 * subscribe waiting (one of them may start a new wait on its channel: the
 * ones behind it keep waiting). From the session's flush.
 */
void gw_pending_run(struct gw_session *s)
{
    struct gw_pending *p = s->pending;
    if (!p || !p->runnable)
        return;
    p->runnable = false;
    /* Dispatching never touches the queue (only gw_pending_defer adds to it,
     * before dispatch), so the links stay valid while it runs. */
    struct waiting_req **link = &p->head;
    while (*link && !s->closing) {
        struct waiting_req *w = *link;
        if (sub_waits(p, w->m.channel.ptr, w->m.channel.len)) {
            link = &w->next;
            continue;
        }
        *link = w->next;
        p->n_reqs--;
        p->bytes -= w->bytes;
        gw_session_dispatch(s, &w->m);
        free(w);
    }
    p->tail = NULL;
    for (struct waiting_req *w = p->head; w; w = w->next)
        p->tail = w;
}

/* The connection is gone: its queue is dropped unanswered. */
void gw_pending_free(struct gw_session *s)
{
    struct gw_pending *p = s->pending;
    if (!p)
        return;
    while (p->head) {
        struct waiting_req *w = p->head;
        p->head = w->next;
        free(w);
    }
    free(p->subs);
    free(p);
    s->pending = NULL;
}
