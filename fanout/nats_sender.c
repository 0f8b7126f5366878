/*
 * nats_sender.c: the sender thread, which makes every call into nats.c's
 * connection the loop wants, in order: client publishes (core and
 * JetStream), the JetStream reads published on the inbox, the bus's
 * publishes and subscriptions.
 *
 * nats.c takes its connection's lock for every publish, subscribe and
 * status query, and holds it while it tries a server after a loss: a TCP
 * connect and the wait for INFO, up to the 2 s connect timeout. A loop that
 * called nats.c stalled that long each time a dead server was tried (a ping
 * took 1991 ms with NATS black-holed). So the loop only queues (SENDS_MAX
 * at most), and a client publish's outcome comes back through the hand-off
 * like a JetStream acknowledgement.
 */
#include "nats_int.h"

#include <stdlib.h>
#include <string.h>

/* See nats_int.h. Loop thread. */
rt_status nats__send_push(struct nats_engine *e, struct send_call *s)
{
    pthread_mutex_lock(&e->send_lock);
    if (e->n_sends >= SENDS_MAX && s->kind != SEND_UNSUB) {
        pthread_mutex_unlock(&e->send_lock);
        return RT_LIMIT;
    }
    NATS_LIST_APPEND(e->sends, e->sends_tail, s);
    e->n_sends++;
    pthread_cond_signal(&e->send_cond);
    pthread_mutex_unlock(&e->send_lock);
    return RT_OK;
}

/* See nats_int.h: one allocation for the call and its bytes. Loop thread. */
rt_status nats__send_raw(struct nats_engine *e, const char *subject, const char *reply,
                         const uint8_t *data, size_t len)
{
    size_t sl = strlen(subject) + 1, rl = reply ? strlen(reply) + 1 : 0;
    struct send_call *s = malloc(sizeof(*s) + sl + rl + len);
    if (!s)
        return RT_NOMEM;
    memset(s, 0, sizeof(*s));
    char *at = (char *)(s + 1);
    s->kind = SEND_RAW;
    s->subject = memcpy(at, subject, sl);
    s->reply = reply ? memcpy(at + sl, reply, rl) : NULL;
    s->data = memcpy(at + sl + rl, data, len);
    s->len = len;
    rt_status st = nats__send_push(e, s);
    if (st != RT_OK)
        free(s);
    return st;
}

/* Sender thread: hands a client publish to JetStream; a refusal is answered at once. */
static void send_js(struct nats_engine *e, struct send_call *s)
{
    struct pending_pub *p = s->pub;
    jsPubOptions po;
    jsPubOptions_Init(&po);
    po.MaxWait = PUB_WAIT_MS;
    po.ExpectNoMessage = p->stage == PUB_CLAIM;
    natsMsg *m = s->msg;
    natsStatus st = js_PublishMsgAsync(e->js, &m, &po);
    if (st == NATS_OK)
        return; /* on_pub_ack answers */
    natsMsg_Destroy(m);
    pthread_mutex_lock(&e->lock);
    bool ours = fo__htab_find(&e->inflight, (const char *)&p->key, sizeof(p->key)) != NULL;
    if (ours)
        rt_htab_remove(&e->inflight, &p->node.h);
    pthread_mutex_unlock(&e->lock);
    if (ours) /* else the ack handler has it (a failure reported both ways) */
        nats__handoff_pub(e, p, st);
}

/* Sender thread: runs one call. Frees s unless it is part of a subscription. */
static void send_run(struct nats_engine *e, struct send_call *s)
{
    struct bus_sub *b = s->bus;
    natsStatus st = NATS_OK;
    switch (s->kind) {
    case SEND_CORE:
        st = natsConnection_PublishMsg(e->conn, s->msg);
        natsMsg_Destroy(s->msg);
        nats__handoff_pub(e, s->pub, st);
        break;
    case SEND_JS:
        send_js(e, s);
        break;
    case SEND_RAW:
        /* A lost request times out; a lost bus message is the bus's to resync. */
        if (s->reply)
            natsConnection_PublishRequest(e->conn, s->subject, s->reply, s->data, (int)s->len);
        else
            natsConnection_Publish(e->conn, s->subject, s->data, (int)s->len);
        break;
    case SEND_SUB:
        st = natsConnection_Subscribe(&b->sub, e->conn, b->subject, nats__on_bus_msg, e);
        if (st != NATS_OK)
            rt_log(RT_LOG_WARN, "nats_bus_subscribe_failed", "subject=%s error=\"%s\"", b->subject,
                   natsStatus_GetText(st));
        break;
    case SEND_UNSUB:
        if (b->sub) {
            natsSubscription_Unsubscribe(b->sub);
            natsSubscription_Destroy(b->sub);
        }
        free(b); /* s is part of b */
        return;
    }
    if (!s->embedded)
        free(s);
}

/* The sender thread: runs the queue in order; at stop, after what is queued. */
static void *sender_main(void *arg)
{
    struct nats_engine *e = arg;
    for (;;) {
        pthread_mutex_lock(&e->send_lock);
        while (!e->sends && !e->send_stop)
            pthread_cond_wait(&e->send_cond, &e->send_lock);
        struct send_call *batch = e->sends;
        e->sends = e->sends_tail = NULL;
        e->n_sends = 0;
        bool stop = e->send_stop;
        pthread_mutex_unlock(&e->send_lock);
        while (batch) {
            struct send_call *s = batch;
            batch = s->next;
            send_run(e, s);
        }
        if (stop)
            return NULL;
    }
}

/* See nats_int.h. Engine creation, before the loop runs. */
rt_status nats__sender_start(struct nats_engine *e)
{
    if (pthread_create(&e->sender, NULL, sender_main, e) != 0)
        return RT_UNAVAILABLE;
    e->sender_started = true;
    return RT_OK;
}

/*
 * Runs what is queued for the sender, then stops it; frees what it never
 * took (when it never started). Engine end, on the loop thread.
 */
void nats__sender_stop(struct nats_engine *e)
{
    pthread_mutex_lock(&e->send_lock);
    e->send_stop = true;
    pthread_cond_signal(&e->send_cond);
    pthread_mutex_unlock(&e->send_lock);
    if (e->sender_started)
        pthread_join(e->sender, NULL);
    while (e->sends) { /* only if it never started */
        struct send_call *s = e->sends;
        e->sends = s->next;
        natsMsg_Destroy(s->msg);
        if (s->kind == SEND_CORE)
            free(s->pub); /* JS: in inflight, freed with it */
        if (s->kind == SEND_UNSUB)
            free(s->bus);
        else if (!s->embedded)
            free(s);
    }
}
