/*
 * nats_bus.c: the bus (fanout.h): plain subjects of nats.c's connection for
 * other modules (the presence fleet). Subscriptions and publishes go
 * through the sender thread; messages are copied for the loop on nats.c's
 * delivery thread (at most BUS_MAX_BYTES waiting: beyond, they are lost and
 * the generation changes so that the receiver resyncs).
 */
#include "nats_int.h"

#include <stdlib.h>
#include <string.h>

/* A bus subscription's message: copied for the loop. nats.c's delivery thread. */
void nats__on_bus_msg(natsConnection *conn, natsSubscription *sub, natsMsg *m, void *closure)
{
    (void)conn;
    (void)sub;
    struct nats_engine *e = closure;
    const char *subj = natsMsg_GetSubject(m), *reply = natsMsg_GetReply(m);
    size_t len = (size_t)natsMsg_GetDataLength(m);
    size_t sl = strlen(subj) + 1, rl = reply ? strlen(reply) + 1 : 0;
    struct bus_msg *b = malloc(sizeof(*b) + len + sl + rl);
    if (b) {
        memcpy(b->data, natsMsg_GetData(m), len);
        memcpy(b->data + len, subj, sl);
        if (reply)
            memcpy(b->data + len + sl, reply, rl);
        b->subject = (const char *)b->data + len;
        b->reply = reply ? (const char *)b->data + len + sl : NULL;
        b->len = len;
    }
    natsMsg_Destroy(m);
    size_t cost = sizeof(*b) + len + sl + rl;
    pthread_mutex_lock(&e->lock);
    if (!b || e->bus_bytes + cost > BUS_MAX_BYTES) {
        e->bus_lost++;
        pthread_mutex_unlock(&e->lock);
        free(b);
        return;
    }
    NATS_LIST_APPEND(e->bus_head, e->bus_tail, b);
    e->bus_bytes += cost;
    nats__unlock_and_wake(e);
}

/* The handle is made here; the sender subscribes (and unsubscribes) in order. Loop thread. */
void *nats__bus_subscribe(void *eng, const char *subject)
{
    struct nats_engine *e = eng;
    size_t n = strlen(subject) + 1;
    struct bus_sub *b = calloc(1, sizeof(*b) + n);
    if (!b)
        return NULL;
    memcpy(b->subject, subject, n);
    b->sub_cmd = (struct send_call){.kind = SEND_SUB, .embedded = true, .bus = b};
    b->unsub_cmd = (struct send_call){.kind = SEND_UNSUB, .embedded = true, .bus = b};
    if (nats__send_push(e, &b->sub_cmd) != RT_OK) {
        free(b);
        return NULL;
    }
    return b;
}

/* Ends the subscription; the sender frees the handle after its subscribe. Loop thread. */
void nats__bus_unsubscribe(void *eng, void *handle)
{
    struct bus_sub *b = handle;
    nats__send_push(eng, &b->unsub_cmd);
}

/* Queued for the sender; nats.c buffers it while it reconnects. Loop thread. */
rt_status nats__bus_publish(void *eng, const char *subject, const char *reply, const uint8_t *data,
                            size_t len)
{
    return nats__send_raw(eng, subject, reply, data, len) == RT_OK ? RT_OK : RT_UNAVAILABLE;
}

/* See nats_int.h. Loop thread. */
uint64_t nats__bus_generation(const void *eng)
{
    struct nats_engine *e = (struct nats_engine *)eng; /* the lock is not part of the value */
    pthread_mutex_lock(&e->lock);
    uint64_t g = e->reconnects + e->bus_lost;
    pthread_mutex_unlock(&e->lock);
    return g;
}

/* See nats_int.h. Loop thread (fo_service). */
void nats__bus_deliver(struct nats_engine *e, struct bus_msg *list)
{
    while (list) {
        struct bus_msg *b = list;
        list = b->next;
        if (e->fo->bus_fn)
            e->fo->bus_fn(e->fo->bus_arg, b->subject, b->reply, b->data, b->len);
        free(b);
    }
}
