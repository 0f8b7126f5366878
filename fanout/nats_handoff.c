/*
 * nats_handoff.c: the hand-off from the engine's other threads to the loop.
 * nats.c's threads (publish acks, inbox replies, connection events, async
 * errors), the workers (jobs) and the sender thread (publishes it made)
 * append to lists under e->lock and wake the loop once per batch
 * (fo_config.wake); the loop takes everything in one go (nats__handoff_take)
 * and runs it in fo_service. Nothing here touches the registry.
 */
#include "nats_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* See nats_int.h: one wake-up per batch; the loop clears wake_pending when it takes. */
void nats__unlock_and_wake(struct nats_engine *e)
{
    bool wake = !e->wake_pending;
    e->wake_pending = true;
    pthread_mutex_unlock(&e->lock);
    if (wake && e->fo->cfg.wake)
        e->fo->cfg.wake(e->fo->cfg.wake_ctx);
}

/* JetStream publish ack or failure: the publish goes to the loop. nats.c's thread. */
void nats__on_pub_ack(jsCtx *js, natsMsg *m, jsPubAck *pa, jsPubAckErr *pae, void *closure)
{
    (void)js;
    struct nats_engine *e = closure;
    pthread_mutex_lock(&e->lock);
    struct fo_hnode *n = fo__htab_find(&e->inflight, (const char *)&m, sizeof(m));
    if (n) {
        struct pending_pub *p = FO__CONTAINER(n, struct pending_pub, node);
        rt_htab_remove(&e->inflight, &n->h);
        p->status = pa ? NATS_OK : (pae && pae->Err != NATS_OK ? pae->Err : NATS_ERR);
        p->err_code = pae ? (int)pae->ErrCode : 0;
        p->seq = pa ? pa->Sequence : 0;
        p->dup = pa && pa->Duplicate;
        NATS_LIST_APPEND(e->pubs_done, e->pubs_done_tail, p);
        nats__unlock_and_wake(e);
    } else {
        pthread_mutex_unlock(&e->lock);
    }
    natsMsg_Destroy(m);
}

/* A reply to a read sent from the loop: for the loop. nats.c's delivery thread. */
void nats__on_inbox_reply(natsConnection *conn, natsSubscription *sub, natsMsg *m, void *closure)
{
    (void)conn;
    (void)sub;
    struct nats_engine *e = closure;
    struct inbox_reply *r = malloc(sizeof(*r));
    if (!r) {
        natsMsg_Destroy(m); /* its request times out */
        return;
    }
    r->msg = m;
    pthread_mutex_lock(&e->lock);
    NATS_LIST_APPEND(e->replies, e->replies_tail, r);
    nats__unlock_and_wake(e);
}

/* Connected or reconnected: the flag, the server, the event. nats.c's thread. */
void nats__on_connected(natsConnection *conn, void *closure)
{
    struct nats_engine *e = closure;
    char server[sizeof(e->server)];
    nsec_connected_server(conn, server, sizeof(server));
    atomic_store(&e->up, true);
    pthread_mutex_lock(&e->lock);
    memcpy(e->server, server, sizeof(server));
    e->reconnects++;
    nats__unlock_and_wake(e);
}

/* The connection is lost: the flag, the event. nats.c's thread. */
void nats__on_disconnected(natsConnection *conn, void *closure)
{
    (void)conn;
    struct nats_engine *e = closure;
    atomic_store(&e->up, false);
    pthread_mutex_lock(&e->lock);
    e->disconnects++;
    nats__unlock_and_wake(e);
}

/* An asynchronous error, logged; a slow consumer lost bus messages. nats.c's thread. */
void nats__on_nats_error(natsConnection *conn, natsSubscription *sub, natsStatus err, void *closure)
{
    (void)conn;
    (void)sub;
    struct nats_engine *e = closure;
    rt_log(RT_LOG_WARN, "nats_async_error", "error=\"%s\"", natsStatus_GetText(err));
    if (err != NATS_SLOW_CONSUMER)
        return;
    pthread_mutex_lock(&e->lock);
    e->bus_lost++; /* the bus's subscribers resync; a lost reply's request times out */
    nats__unlock_and_wake(e);
}

/* See nats_int.h. The sender thread, or nats.c's ack thread. */
void nats__handoff_pub(struct nats_engine *e, struct pending_pub *p, natsStatus status)
{
    pthread_mutex_lock(&e->lock);
    p->status = status;
    NATS_LIST_APPEND(e->pubs_done, e->pubs_done_tail, p);
    nats__unlock_and_wake(e);
}

/* See nats_int.h. Worker threads. */
void nats__handoff_job(struct nats_engine *e, struct js_job *j)
{
    pthread_mutex_lock(&e->lock);
    NATS_LIST_APPEND(e->jobs_done, e->jobs_done_tail, j);
    nats__unlock_and_wake(e);
}

/* See nats_int.h: the wake-up flag is cleared, so the next hand-over wakes again. Loop thread. */
void nats__handoff_take(struct nats_engine *e, struct handed_over *h)
{
    pthread_mutex_lock(&e->lock);
    h->bus = e->bus_head;
    e->bus_head = e->bus_tail = NULL;
    e->bus_bytes = 0;
    e->wake_pending = false;
    h->pubs = e->pubs_done;
    h->jobs = e->jobs_done;
    h->replies = e->replies;
    e->pubs_done = e->pubs_done_tail = NULL;
    e->jobs_done = e->jobs_done_tail = NULL;
    e->replies = e->replies_tail = NULL;
    h->reconnects = e->reconnects;
    h->disconnects = e->disconnects;
    memcpy(h->server, e->server, sizeof(h->server));
    e->fo->stats.upstream_invalid += e->invalid;
    e->invalid = 0;
    pthread_mutex_unlock(&e->lock);
}
