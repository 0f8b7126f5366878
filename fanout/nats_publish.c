/*
 * nats_publish.c: client publishes. A durable one goes to JetStream and is
 * answered on its acknowledgement (seq, dup); an ephemeral one with a msg_id
 * first claims the id in the msg_id bucket (a JetStream publish expecting no
 * previous message) and is published once the id is new; one without is a
 * core publish. All of them go out through the sender thread and are
 * answered through fo__pub_done. Loop thread.
 */
#include "nats_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static rt_status pub_core(struct nats_engine *e, struct pending_pub *p, natsMsg *m);

/* -------------------------------------------------------------------- */
/* Publishing (loop thread)                                               */

static void pub_answer_error(struct fo_pub_result *res, bool durable, const char *why)
{
    memset(res, 0, sizeof(*res));
    res->error = RT_E_UNAVAILABLE;
    res->error_message = why;
    res->retry_after_ms = 1000;
    res->durable = durable;
}

/*
 * A client publish's stage is over (acknowledged, failed, or sent): answer
 * it, or, for a new ephemeral msg_id, publish the message now. Loop thread.
 */
void nats__pub_done(struct nats_engine *e, struct pending_pub *p)
{
    struct fo_pub_result res;
    memset(&res, 0, sizeof(res));
    res.durable = p->stage == PUB_DURABLE;
    if (p->stage == PUB_DURABLE && p->status == NATS_OK) {
        res.seq = p->seq;
        res.dup = p->dup;
    } else if (p->stage == PUB_CLAIM && p->status == NATS_OK) {
        natsMsg *m = p->eph;
        p->eph = NULL;
        if (pub_core(e, p, m) == RT_AGAIN)
            return; /* answered once it is sent */
        pub_answer_error(&res, false, "NATS unavailable");
    } else if (p->stage == PUB_CLAIM && p->err_code == JSStreamWrongLastSequenceErr) {
        res.dup = true;
    } else if (p->stage == PUB_CORE) {
        if (p->status != NATS_OK)
            pub_answer_error(&res, false, "NATS unavailable");
    } else {
        pub_answer_error(&res, p->stage == PUB_DURABLE, "JetStream did not acknowledge");
    }
    fo__pub_done(e->fo, p->conn_id, p->req_id, &res);
    natsMsg_Destroy(p->eph);
    free(p);
}

/*
 * Queues m's core publish for the sender; its outcome answers p (pub_done,
 * stage CORE). RT_AGAIN, or an error with m destroyed (p stays the caller's).
 */
static rt_status pub_core(struct nats_engine *e, struct pending_pub *p, natsMsg *m)
{
    struct send_call *s = calloc(1, sizeof(*s));
    p->stage = PUB_CORE;
    if (s) {
        s->kind = SEND_CORE;
        s->msg = m;
        s->pub = p;
        if (nats__send_push(e, s) == RT_OK)
            return RT_AGAIN;
    }
    free(s);
    natsMsg_Destroy(m);
    return RT_UNAVAILABLE;
}

/*
 * A client publish through JetStream (stage DURABLE, or CLAIM with the
 * message to publish after it in eph): registered by m's pointer, which the
 * acknowledgement (on_pub_ack) names, and queued for the sender. Takes m and
 * eph. RT_AGAIN, or an error (nothing queued).
 */
static rt_status pub_js(struct nats_engine *e, natsMsg *m, natsMsg *eph, enum pub_stage stage,
                        const struct fo_pub_req *req)
{
    struct pending_pub *p = calloc(1, sizeof(*p));
    struct send_call *s = calloc(1, sizeof(*s));
    if (!p || !s) {
        free(p);
        free(s);
        natsMsg_Destroy(m);
        natsMsg_Destroy(eph);
        return RT_NOMEM;
    }
    p->key = m;
    p->node.key = (const char *)&p->key;
    p->node.key_len = sizeof(p->key);
    p->stage = stage;
    p->eph = eph;
    p->conn_id = req->conn_id;
    p->req_id = req->req_id;
    s->kind = SEND_JS;
    s->msg = m;
    s->pub = p;
    pthread_mutex_lock(&e->lock);
    rt_status st = fo__htab_insert(&e->inflight, &p->node);
    pthread_mutex_unlock(&e->lock);
    if (st == RT_OK && nats__send_push(e, s) == RT_OK)
        return RT_AGAIN;
    pthread_mutex_lock(&e->lock);
    if (st == RT_OK)
        rt_htab_remove(&e->inflight, &p->node.h);
    pthread_mutex_unlock(&e->lock);
    natsMsg_Destroy(m);
    natsMsg_Destroy(eph);
    free(p);
    free(s);
    return RT_UNAVAILABLE;
}

static size_t inflight_count(struct nats_engine *e)
{
    pthread_mutex_lock(&e->lock);
    size_t n = e->inflight.count;
    pthread_mutex_unlock(&e->lock);
    return n;
}

/* See nats_int.h. Loop thread. */
rt_status nats__publish(void *eng, struct fo_chan *ch, const struct fo_pub_req *req,
                        struct fo_pub_result *res, struct fo_msg **out)
{
    struct nats_engine *e = eng;
    *out = NULL;
    bool needs_js = ch->durable || req->msg_id;
    if (!conn_up(e) || (needs_js && !e->stream_ok) || inflight_count(e) >= INFLIGHT_MAX)
        return RT_UNAVAILABLE;
    natsMsg *m = nats__client_msg(ch, req);
    if (!m)
        return RT_NOMEM;
    (void)res; /* every answer comes through pub_done */
    if (ch->durable)
        return pub_js(e, m, NULL, PUB_DURABLE, req);
    if (req->msg_id) {
        natsMsg *claim = nats__claim_msg(ch, req);
        if (!claim) {
            natsMsg_Destroy(m);
            return RT_NOMEM;
        }
        return pub_js(e, claim, m, PUB_CLAIM, req);
    }
    struct pending_pub *p = calloc(1, sizeof(*p));
    if (!p) {
        natsMsg_Destroy(m);
        return RT_NOMEM;
    }
    p->conn_id = req->conn_id;
    p->req_id = req->req_id;
    rt_status st = pub_core(e, p, m);
    if (st != RT_AGAIN)
        free(p);
    return st;
}
