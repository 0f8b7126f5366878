/*
 * nats_jobs.c: blocking JetStream work on the engine's worker threads:
 * catch-up reads after a cursor (FETCH), hole fills of a durable channel's
 * chain (FILL), both sequential DirectGets (next_by_subj), and the stream
 * check (STREAM, nats_stream.c). The loop submits a job; its result comes
 * back whole through the hand-off, and a result for a channel whose interest
 * went meanwhile (its generation changed) is dropped.
 */
#include "nats_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* See nats_int.h. Any thread. */
void nats__js_opts(jsOptions *o, int64_t wait_ms)
{
    jsOptions_Init(o);
    o->Wait = wait_ms;
}

static void dur_subject(char *buf, size_t cap, const char *channel)
{
    snprintf(buf, cap, "%s%s", NW_SUBJ_DUR, channel);
}

static rt_status status_of(natsStatus s)
{
    if (s == NATS_OK)
        return RT_OK;
    return s == NATS_NOT_FOUND ? RT_NOT_FOUND : RT_UNAVAILABLE;
}

/* The first message of channel with seq >= from. RT_NOT_FOUND if none. */
static rt_status direct_next(struct nats_engine *e, const char *channel, uint64_t from,
                             int64_t wait, natsMsg **out)
{
    char subj[SUBJECT_MAX];
    dur_subject(subj, sizeof(subj), channel);
    jsOptions o;
    nats__js_opts(&o, wait);
    jsDirectGetMsgOptions d;
    jsDirectGetMsgOptions_Init(&d);
    d.Sequence = from;
    d.NextBySubject = subj;
    *out = NULL;
    return status_of(js_DirectGetMsg(out, e->js, e->stream, &o, &d));
}

/* A read-back message as a chain entry. */
static rt_status entry_of(struct nats_engine *e, natsMsg *m, const char *channel, size_t len,
                          struct chain_entry *out)
{
    if (!nats__hdr_u64(m, NW_H_SEQ, &out->seq))
        return RT_UNAVAILABLE;
    bool invalid = false;
    out->prev = 0;
    out->msg = nats__msg_from_nats(e, m, channel, len, out->seq, &invalid);
    if (!out->msg)
        return RT_NOMEM;
    if (invalid) {
        fo_msg_release(out->msg);
        out->msg = NULL;
    }
    return RT_OK;
}

/* Frees j and the messages it read. NULL is a no-op. Any thread that owns j. */
void nats__job_free(struct js_job *j)
{
    if (!j)
        return;
    for (uint32_t i = 0; i < j->n; i++)
        fo_msg_release(j->v[i].msg);
    free(j->v);
    free(j);
}

/* Appends m's entry to j; false to stop (error, full, or `until` reached). */
static bool job_take(struct nats_engine *e, struct js_job *j, natsMsg *m, uint32_t max)
{
    struct chain_entry en;
    j->st = entry_of(e, m, j->name, j->name_len, &en);
    natsMsg_Destroy(m);
    if (j->st != RT_OK)
        return false;
    j->v[j->n++] = en;
    return j->n < max && en.seq < j->until;
}

/* Walks the channel from seq `from` on, appending to j until job_take says stop. */
static void job_walk(struct nats_engine *e, struct js_job *j, uint64_t from, uint32_t max)
{
    natsMsg *m = NULL;
    for (;;) {
        rt_status st = direct_next(e, j->name, from, REQ_WAIT_MS, &m);
        if (st == RT_NOT_FOUND) {
            j->reached_end = true;
            j->st = RT_OK;
            return;
        }
        if (st != RT_OK) {
            j->st = st;
            return;
        }
        if (!job_take(e, j, m, max))
            return;
        from = j->v[j->n - 1].seq + 1;
    }
}

/*
 * FETCH: the messages after j->after, for catch-up. If j->after itself is
 * no longer retained, what lay between it and the next retained message may
 * have been trimmed: that is reported as a gap (trimming is oldest first, so
 * a retained `after` proves nothing after it was lost).
 */
static void job_fetch(struct nats_engine *e, struct js_job *j)
{
    natsMsg *m = NULL;
    j->st = direct_next(e, j->name, j->after, REQ_WAIT_MS, &m);
    if (j->st == RT_NOT_FOUND) {
        j->st = RT_OK;
        j->reached_end = true;
        return;
    }
    if (j->st != RT_OK)
        return;
    uint64_t seq = 0;
    if (!nats__hdr_u64(m, NW_H_SEQ, &seq)) {
        natsMsg_Destroy(m);
        j->st = RT_UNAVAILABLE;
        return;
    }
    if (seq == j->after && j->after > 0) {
        natsMsg_Destroy(m);
        job_walk(e, j, j->after + 1, FETCH_BATCH);
        return;
    }
    if (seq > j->after + 1)
        j->gap_to = seq - 1;
    if (job_take(e, j, m, FETCH_BATCH))
        job_walk(e, j, seq + 1, FETCH_BATCH);
}

static void job_run(struct nats_engine *e, struct js_job *j)
{
    uint32_t max = j->kind == JOB_FILL ? FILL_BATCH : FETCH_BATCH;
    if (j->kind == JOB_FETCH || j->kind == JOB_FILL) {
        j->v = malloc(max * sizeof(*j->v));
        if (!j->v) {
            j->st = RT_NOMEM;
            return;
        }
    }
    switch (j->kind) {
    case JOB_FETCH:
        job_fetch(e, j);
        break;
    case JOB_FILL:
        job_walk(e, j, j->after + 1, max);
        break;
    case JOB_STREAM:
        j->st = nats__stream_setup(e, &j->created, j->why, sizeof(j->why));
        break;
    }
}

/* A worker thread: runs jobs in order, hands each back to the loop. */
static void *worker_main(void *arg)
{
    struct nats_engine *e = arg;
    for (;;) {
        pthread_mutex_lock(&e->jobs_lock);
        while (!e->jobs && !e->stopping)
            pthread_cond_wait(&e->jobs_cond, &e->jobs_lock);
        struct js_job *j = e->stopping ? NULL : e->jobs;
        if (j) {
            e->jobs = j->next;
            if (!e->jobs)
                e->jobs_tail = NULL;
        }
        pthread_mutex_unlock(&e->jobs_lock);
        if (!j)
            return NULL;
        j->next = NULL;
        if (conn_up(e)) {
            job_run(e, j);
        } else {
            j->st = RT_UNAVAILABLE;
            snprintf(j->why, sizeof(j->why), "not connected to NATS");
        }
        nats__handoff_job(e, j);
    }
}

/* See nats_int.h. Engine creation, before the loop runs. */
rt_status nats__workers_start(struct nats_engine *e)
{
    for (; e->n_workers < N_WORKERS; e->n_workers++)
        if (pthread_create(&e->workers[e->n_workers], NULL, worker_main, e) != 0)
            return RT_UNAVAILABLE;
    return RT_OK;
}

/* See nats_int.h. Loop thread. */
void nats__job_submit(struct nats_engine *e, struct js_job *j)
{
    pthread_mutex_lock(&e->jobs_lock);
    NATS_LIST_APPEND(e->jobs, e->jobs_tail, j);
    pthread_cond_signal(&e->jobs_cond);
    pthread_mutex_unlock(&e->jobs_lock);
}

/* See nats_int.h. Loop thread. */
struct js_job *nats__job_new(enum js_job_kind kind, const struct chan_state *cs)
{
    size_t len = cs ? cs->ch->name_len : 0;
    struct js_job *j = calloc(1, sizeof(*j) + len + 1);
    if (!j)
        return NULL;
    j->kind = kind;
    if (cs) {
        memcpy(j->name, cs->ch->name, len);
        j->name_len = len;
        j->gen = cs->gen;
    }
    return j;
}

/* See nats_int.h. Engine end, on the loop thread. */
void nats__workers_stop(struct nats_engine *e)
{
    pthread_mutex_lock(&e->jobs_lock);
    e->stopping = true;
    pthread_cond_broadcast(&e->jobs_cond);
    pthread_mutex_unlock(&e->jobs_lock);
    for (int i = 0; i < e->n_workers; i++)
        pthread_join(e->workers[i], NULL);
    while (e->jobs) {
        struct js_job *j = e->jobs;
        e->jobs = j->next;
        nats__job_free(j);
    }
}
