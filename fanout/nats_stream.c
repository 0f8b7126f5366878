/*
 * nats_stream.c: the JetStream stream of the durable channels (subjects
 * rtgate.dur.>, direct get, republish to rtgate.live.>) and the ephemeral
 * msg_id bucket: created, or checked and updated to the flags, on a worker
 * (JOB_STREAM) after start and after every reconnect. A failure is retried
 * from the loop with backoff and logged once until it works; /readyz says
 * false meanwhile. The stream's creation time is the channels' epoch.
 */
#include "nats_int.h"

#include <stdio.h>
#include <string.h>

static void epoch_of(int64_t created, char out[PROTO_EPOCH_MAX + 1])
{
    static const char digits[] = "0123456789abcdefghijklmnopqrstuvwxyz";
    char tmp[32];
    size_t n = 0;
    uint64_t v = created > 0 ? (uint64_t)created : 1;
    while (v && n < sizeof(tmp)) {
        tmp[n++] = digits[v % 36];
        v /= 36;
    }
    for (size_t i = 0; i < n; i++)
        out[i] = tmp[n - 1 - i];
    out[n] = '\0';
}

static void stream_config(const struct nats_engine *e, jsStreamConfig *c, const char **subjects,
                          jsRePublish *rp)
{
    const struct fo_config *fc = &e->fo->cfg;
    jsStreamConfig_Init(c);
    subjects[0] = NW_SUBJ_DUR ">";
    rp->Source = NW_SUBJ_DUR ">";
    rp->Destination = NW_SUBJ_LIVE ">";
    rp->HeadersOnly = false;
    c->Name = e->stream;
    c->Subjects = subjects;
    c->SubjectsLen = 1;
    c->Storage = js_FileStorage;
    c->Replicas = e->replicas;
    c->MaxMsgsPerSubject = (int64_t)fc->history_max;
    c->MaxAge = (int64_t)fc->history_max_age_ms * 1000000;
    uint64_t dup_ms =
        fc->dedup_window_ms < fc->history_max_age_ms ? fc->dedup_window_ms : fc->history_max_age_ms;
    c->Duplicates = (int64_t)dup_ms * 1000000;
    c->AllowDirect = true;
    c->RePublish = rp;
}

/* The parts of an existing stream this engine cannot work without. */
static bool stream_usable(const jsStreamConfig *c)
{
    bool subj = false;
    for (int i = 0; i < c->SubjectsLen; i++)
        subj = subj || strcmp(c->Subjects[i], NW_SUBJ_DUR ">") == 0;
    return subj && c->AllowDirect && c->RePublish && c->RePublish->Source &&
           c->RePublish->Destination && !strcmp(c->RePublish->Source, NW_SUBJ_DUR ">") &&
           !strcmp(c->RePublish->Destination, NW_SUBJ_LIVE ">") && !c->RePublish->HeadersOnly;
}

static bool stream_limits_differ(const jsStreamConfig *have, const jsStreamConfig *want)
{
    return have->MaxMsgsPerSubject != want->MaxMsgsPerSubject || have->MaxAge != want->MaxAge ||
           have->Duplicates != want->Duplicates || have->Replicas != want->Replicas;
}

/* Updates an existing stream to the configured limits; it must stay usable. */
static rt_status stream_update(struct nats_engine *e, jsStreamInfo **si, jsStreamConfig *want)
{
    if (!stream_limits_differ((*si)->Config, want) && stream_usable((*si)->Config))
        return RT_OK;
    jsOptions o;
    nats__js_opts(&o, REQ_WAIT_MS);
    jsStreamInfo *up = NULL;
    jsErrCode ec = 0;
    natsStatus s = js_UpdateStream(&up, e->js, want, &o, &ec);
    if (s == NATS_OK) {
        rt_log(RT_LOG_INFO, "nats_stream_updated", "stream=%s", e->stream);
        jsStreamInfo_Destroy(*si);
        *si = up;
        return RT_OK;
    }
    rt_log(RT_LOG_WARN, "nats_stream_update_failed", "stream=%s error=\"%s\" code=%d", e->stream,
           natsStatus_GetText(s), (int)ec);
    return stream_usable((*si)->Config) ? RT_OK : RT_INVAL;
}

/* The ephemeral msg_id bucket (TTL = dedup window); an existing one is kept. */
static void bucket_setup(struct nats_engine *e)
{
    jsOptions o;
    nats__js_opts(&o, REQ_WAIT_MS);
    jsStreamInfo *si = NULL;
    jsErrCode ec = 0;
    if (js_GetStreamInfo(&si, e->js, "KV_" NW_KV_BUCKET, &o, &ec) == NATS_OK) {
        jsStreamInfo_Destroy(si);
        return;
    }
    kvConfig kc;
    kvConfig_Init(&kc);
    kc.Bucket = NW_KV_BUCKET;
    kc.History = 1;
    kc.TTL = (int64_t)e->fo->cfg.dedup_window_ms * 1000000;
    kc.Replicas = (int)e->replicas;
    kvStore *kv = NULL;
    natsStatus s = js_CreateKeyValue(&kv, e->js, &kc);
    if (s != NATS_OK)
        rt_log(RT_LOG_WARN, "nats_bucket_failed", "bucket=%s error=\"%s\"", NW_KV_BUCKET,
               natsStatus_GetText(s));
    kvStore_Destroy(kv);
}

/*
 * Creates the stream, or checks (and updates) an existing one. *created: its
 * birth. RT_UNAVAILABLE (JetStream did not answer) or RT_INVAL (a stream this
 * engine cannot use) with the reason in why; the caller logs it. Worker
 * thread (JOB_STREAM).
 */
rt_status nats__stream_setup(struct nats_engine *e, int64_t *created, char *why, size_t why_cap)
{
    const char *subjects[1];
    jsRePublish rp;
    jsStreamConfig want;
    stream_config(e, &want, subjects, &rp);
    jsOptions o;
    nats__js_opts(&o, REQ_WAIT_MS);
    jsStreamInfo *si = NULL;
    jsErrCode ec = 0;
    natsStatus s = js_GetStreamInfo(&si, e->js, e->stream, &o, &ec);
    rt_status st = RT_OK;
    if (s == NATS_NOT_FOUND || ec == JSStreamNotFoundErr) {
        s = js_AddStream(&si, e->js, &want, &o, &ec);
        if (s == NATS_OK)
            rt_log(RT_LOG_INFO, "nats_stream_created", "stream=%s replicas=%u", e->stream,
                   e->replicas);
    } else if (s == NATS_OK) {
        st = stream_update(e, &si, &want);
    }
    if (s != NATS_OK) {
        snprintf(why, why_cap, "%s (code %d)", natsStatus_GetText(s), (int)ec);
        st = RT_UNAVAILABLE;
    } else if (st != RT_OK) {
        snprintf(why, why_cap, "needs subjects %s>, allow_direct and republish %s> -> %s>",
                 NW_SUBJ_DUR, NW_SUBJ_DUR, NW_SUBJ_LIVE);
    }
    if (st == RT_OK)
        *created = si->Created;
    jsStreamInfo_Destroy(si);
    if (st == RT_OK)
        bucket_setup(e);
    return st;
}

/*
 * The stream check finished. A failure (JetStream unavailable or slow, a
 * stream this engine cannot use) is retried with backoff, 500 ms doubling up
 * to 10 s, and logged once until it works; /readyz says false meanwhile.
 * Loop thread.
 */
void nats__stream_done(struct nats_engine *e, struct js_job *j)
{
    e->stream_busy = false;
    if (j->st != RT_OK) {
        uint64_t b = e->stream_backoff_ms ? e->stream_backoff_ms * 2 : RETRY_MS;
        e->stream_backoff_ms = b > STREAM_RETRY_MAX_MS ? STREAM_RETRY_MAX_MS : b;
        e->stream_retry_at = rt_mono_ms() + e->stream_backoff_ms;
        if (!e->js_down_logged)
            rt_log(j->st == RT_INVAL ? RT_LOG_ERROR : RT_LOG_WARN,
                   j->st == RT_INVAL ? "nats_stream_unusable" : "nats_jetstream_unavailable",
                   "stream=%s why=\"%s\" retrying=backoff_up_to_%ums", e->stream, j->why,
                   STREAM_RETRY_MAX_MS);
        e->js_down_logged = true;
        e->stream_ok = false;
        return;
    }
    e->stream_backoff_ms = 0;
    e->js_down_logged = false;
    if (e->created && j->created != e->created)
        rt_log(RT_LOG_ERROR, "nats_stream_recreated",
               "stream=%s why=\"epoch changed; restart the gateways so that cursors follow\"",
               e->stream);
    e->created = j->created;
    epoch_of(e->created, e->epoch);
    if (!e->stream_ok)
        rt_log(RT_LOG_INFO, "nats_stream_ready", "stream=%s epoch=%s replicas=%u", e->stream,
               e->epoch, e->replicas);
    e->stream_ok = true;
}

/* Retries failed reads, probes and the stream check. */
/* Checks (or creates) the stream on a worker, unless a check is under way. Loop thread. */
void nats__stream_check(struct nats_engine *e)
{
    if (e->stream_busy)
        return;
    struct js_job *j = nats__job_new(JOB_STREAM, NULL);
    if (j) {
        e->stream_busy = true;
        nats__job_submit(e, j);
    }
}
