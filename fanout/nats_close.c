/*
 * nats_close.c: the end of nats.c's connection, in the order that leaves
 * nothing behind.
 *
 * nats.c frees a message through its garbage collector thread, and
 * nats_CloseAndWait tells that thread to stop at the same moment as the
 * delivery pool's threads. Messages the pool still held for a subscription
 * closed at shutdown (a flood on a bus subject the presence fleet had just
 * unsubscribed) were freed after the collector was gone, and leaked
 * (LeakSanitizer, 10044 messages, about one shutdown in 100 under the flood of
 * test_presence_fleet.py); a message the engine itself freed after
 * nats_CloseAndWait crashed in nats.c, whose lock was gone (a msg_id
 * publish in flight at shutdown, test_outage.py). So the engine:
 *
 *   1. drains the connection (bounded), or closes it, and waits for nats.c's
 *      closed callback, which comes once the connection's own threads are
 *      joined: from then on no subscription gets a message;
 *   2. waits until every subscription on the delivery pool has run its
 *      completion callback, which nats.c calls after the last message queued
 *      for it: the pool holds nothing of ours any more;
 *   3. frees what it holds (engine_nats.c), JetStream's context included,
 *      which frees the async publishes never acknowledged,
 *
 * and only then calls nats_CloseAndWait. JetStream's reply subscription is
 * not on the pool (nats.c gives it a thread of its own, which ends at the
 * close): at most the acknowledgement it was handing over when the
 * connection closed can be freed that late.
 */
#include "nats_int.h"

#include <errno.h>
#include <time.h>

#define DRAIN_MS       2000  /* the drain: queued messages delivered, publishes flushed */
#define CLOSED_WAIT_MS 5000  /* then the closed callback, after a close */
#define SUBS_WAIT_MS   10000 /* the pool's last messages (a flood's, with ASan: about 1 s) */

/* See nats_int.h. Engine creation, before any callback can run. */
void nats__close_init(struct nats_engine *e)
{
    pthread_condattr_t a;
    pthread_condattr_init(&a);
    pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
    pthread_cond_init(&e->closing_cond, &a);
    pthread_condattr_destroy(&a);
}

/* nats.c's closed callback (its thread for connection events). */
void nats__on_closed(natsConnection *conn, void *closure)
{
    (void)conn;
    struct nats_engine *e = closure;
    pthread_mutex_lock(&e->lock);
    e->conn_closed = true;
    pthread_cond_broadcast(&e->closing_cond);
    pthread_mutex_unlock(&e->lock);
}

/* A pool subscription's last callback ran (nats.c's delivery thread). */
static void on_sub_complete(void *closure)
{
    struct nats_engine *e = closure;
    pthread_mutex_lock(&e->lock);
    e->subs_open--;
    pthread_cond_broadcast(&e->closing_cond);
    pthread_mutex_unlock(&e->lock);
}

/* See nats_int.h. The thread that subscribed, right after. */
void nats__sub_track(struct nats_engine *e, natsSubscription *sub)
{
    pthread_mutex_lock(&e->lock); /* counted first: the callback may come at once */
    e->subs_open++;
    pthread_mutex_unlock(&e->lock);
    if (natsSubscription_SetOnCompleteCB(sub, on_sub_complete, e) != NATS_OK) {
        pthread_mutex_lock(&e->lock); /* already closed: its completion is not ours to wait */
        e->subs_open--;
        pthread_mutex_unlock(&e->lock);
    }
}

/* Waits (e->lock held) until *flag is true or until a uint32 *count is 0; false on timeout. */
static bool wait_for(struct nats_engine *e, const bool *flag, const uint32_t *count, int64_t ms)
{
    struct timespec at;
    clock_gettime(CLOCK_MONOTONIC, &at);
    at.tv_sec += ms / 1000;
    at.tv_nsec += (ms % 1000) * 1000000L;
    if (at.tv_nsec >= 1000000000L) {
        at.tv_sec++;
        at.tv_nsec -= 1000000000L;
    }
    for (;;) {
        if (flag ? *flag : *count == 0)
            return true;
        if (pthread_cond_timedwait(&e->closing_cond, &e->lock, &at) == ETIMEDOUT)
            return flag ? *flag : *count == 0;
    }
}

/* See nats_int.h. Engine end, on the loop thread, once the sender and workers stopped. */
void nats__close_connection(struct nats_engine *e)
{
    if (!e->conn)
        return;
    /* A drain delivers what the pool holds for the subscriptions still open
     * and flushes the bus's last publishes (the presence fleet's goodbye);
     * it cannot start while nats.c reconnects: then a plain close. */
    bool draining = natsConnection_DrainTimeout(e->conn, DRAIN_MS) == NATS_OK;
    pthread_mutex_lock(&e->lock);
    bool closed = draining && wait_for(e, &e->conn_closed, NULL, DRAIN_MS + 1000);
    pthread_mutex_unlock(&e->lock);
    if (!closed) {
        natsConnection_Close(e->conn);
        pthread_mutex_lock(&e->lock);
        closed = wait_for(e, &e->conn_closed, NULL, CLOSED_WAIT_MS);
        pthread_mutex_unlock(&e->lock);
    }
    pthread_mutex_lock(&e->lock);
    bool subs_done = wait_for(e, NULL, &e->subs_open, SUBS_WAIT_MS);
    uint32_t left = e->subs_open;
    pthread_mutex_unlock(&e->lock);
    if (!closed || !subs_done)
        rt_log(RT_LOG_WARN, "nats_close_slow",
               "closed=%s subscriptions_left=%u why=\"nats.c did not finish in time; "
               "messages it still holds may not be freed\"",
               closed ? "yes" : "no", left);
}
