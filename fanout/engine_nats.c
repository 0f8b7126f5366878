/*
 * engine_nats.c: the "nats" engine's operations (fanout_int.h's struct
 * fo_engine_ops), its creation and its end. A fleet of gateways shares
 * channels through NATS (docs/nats.md: subjects, headers, design):
 *
 *   - Ephemeral channel X: core NATS subject rtgate.eph.X. The node holds a
 *     subscription while X has local parties; its own publishes come back
 *     through it (echo), so every node dispatches the same way.
 *   - Durable channel X: JetStream stream (RTGATE) subject rtgate.dur.X,
 *     republished on rtgate.live.X with Nats-Sequence and
 *     Nats-Last-Sequence (nats_chain.c keeps each node's dispatch exact).
 *   - Live messages of every channel are read by the loop reader
 *     (nats_live.c) on the gateway's loop; nats.c's connection carries
 *     JetStream, the msg_id claims and the bus, through the sender thread.
 *
 * The files of the engine, one job each: nats_subs.c (subscriptions, getting
 * channels ready), nats_chain.c (durable chains, holes, caches), nats_reads.c
 * (JetStream reads from the loop), nats_jobs.c (blocking JetStream work on
 * workers), nats_stream.c (the stream), nats_publish.c (client publishes),
 * nats_sender.c (the thread that calls nats.c), nats_handoff.c (threads to
 * the loop), nats_bus.c (the bus), nats_msg.c (message conversion); the
 * wire in nats_wire.c, the reader in nats_live.c. nats_int.h holds their
 * types, with the lock of each shared field.
 */
#include "nats_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void nats_destroy(void *eng);

/* See nats_int.h. Loop thread. */
struct fo_chan *nats__chan_find(struct nats_engine *e, const char *name, size_t len)
{
    struct fo_hnode *n = fo__htab_find(&e->fo->chans, name, len);
    return n ? FO__CONTAINER(n, struct fo_chan, node) : NULL;
}

/* -------------------------------------------------------------------- */
/* Engine operations (loop thread)                                        */

static rt_status nats_chan_open(void *eng, struct fo_chan *ch)
{
    struct nats_engine *e = eng;
    struct chan_state *cs = calloc(1, sizeof(*cs));
    if (!cs)
        return RT_NOMEM;
    cs->ch = ch;
    cs->gen = ++e->next_gen;
    ch->eng = cs;
    return RT_OK;
}

static void nats_chan_close(void *eng, struct fo_chan *ch)
{
    struct nats_engine *e = eng;
    struct chan_state *cs = ch->eng;
    if (!cs)
        return;
    nats__chan_unsubscribe(e, cs);
    nats__chan_forget(e, cs);
    free(cs->waiting);
    free(cs);
    ch->eng = NULL;
}

/* Without local subscribers nothing is kept (chan_close unsubscribes). */
static bool nats_chan_idle(void *eng, const struct fo_chan *ch)
{
    (void)eng;
    (void)ch;
    return true;
}

/*
 * The channel's first party: SUB on the loop reader, then (without waiting)
 * its confirmation and, for a durable channel, its sync point.
 */
static rt_status nats_interest_add(void *eng, struct fo_chan *ch)
{
    struct nats_engine *e = eng;
    struct chan_state *cs = ch->eng;
    if (!subscribed(cs))
        nats__chan_subscribe(e, cs);
    nats__ready_start(e, cs);
    return RT_OK;
}

static void nats_interest_remove(void *eng, struct fo_chan *ch)
{
    nats__chan_unsubscribe(eng, ch->eng);
}

/*
 * Ready at once for a channel whose SUB is confirmed (and, durable, synced),
 * but a resume may still need its reads (resume_start). Otherwise the
 * subscribe waits for the confirmation and sync under way (RT_AGAIN). A
 * durable channel needs JetStream: 503 without it, unless the node already
 * follows the channel and no since was given.
 */
static rt_status nats_sub_prepare(void *eng, struct fo_chan *ch, const struct fo_sub_req *req,
                                  uint64_t op)
{
    struct nats_engine *e = eng;
    struct chan_state *cs = ch->eng;
    if (cs->ready == CHAN_READY) {
        if (!ch->durable || !req->has_since)
            return RT_OK;
        return nats__resume_start(e, cs, op, req->since);
    }
    if (ch->durable && (!conn_up(e) || !e->stream_ok))
        return RT_UNAVAILABLE;
    if (cs->ready == CHAN_UNCONFIRMED) {
        nats__ready_start(e, cs); /* after a failed sync: again */
        if (cs->ready == CHAN_UNCONFIRMED)
            return RT_UNAVAILABLE;
        if (cs->ready == CHAN_READY)
            return RT_OK;
    }
    return nats__wait_add(cs, op, req) == RT_OK ? RT_AGAIN : RT_NOMEM;
}

static void nats_chan_info(void *eng, const struct fo_chan *ch, struct fo_chan_info *out)
{
    const struct nats_engine *e = eng;
    const struct chan_state *cs = ch->eng;
    memset(out, 0, sizeof(*out));
    out->latest = cs->latest_known > cs->dispatched ? cs->latest_known : cs->dispatched;
    out->oldest = cs->trimmed_through + 1;
    out->trimmed_through = cs->trimmed_through;
    memcpy(out->epoch, e->epoch, sizeof(out->epoch));
}

/*
 * fo_tick (5 a second): the stream check's retry, JetStream reads past their
 * time, SUBs waiting for a confirmation the reader cannot give, then per
 * durable channel the retries and the quiet probes (nats__chain_tick).
 */
static void nats_tick(void *eng, uint64_t now_ms)
{
    struct nats_engine *e = eng;
    (void)now_ms;
    uint64_t now = rt_mono_ms();
    if (!e->stream_ok && now >= e->stream_retry_at && conn_up(e))
        nats__stream_check(e);
    nats__reads_expire(e, false);
    if (!e->confirm_busy && e->confirm_queue && !lr_up(e->lr))
        nats__confirm_answer(e, CONFIRM_QUEUE, RT_UNAVAILABLE);
    nats__confirm_kick(e);
    nats__chain_tick(e, now);
}

/*
 * Connection state changes seen from the loop, logged once each: connected
 * (to which server, and whether it is a reconnect), disconnected. Requests
 * on a lost connection fail at once; after a reconnect every durable channel
 * is probed (what was stored while away is read back) and the stream checked
 * again.
 */
static void conn_events(struct nats_engine *e, const struct handed_over *h)
{
    if (h->disconnects != e->seen_disconnects) {
        e->seen_disconnects = h->disconnects;
        rt_log(RT_LOG_WARN, "nats_disconnected", "why=\"connection lost, reconnecting\"");
        nats__reads_expire(e, true);
    }
    if (h->reconnects == e->seen_reconnects || !conn_up(e))
        return;
    rt_log(RT_LOG_INFO, "nats_connected", "server=%s reconnect=%s", h->server,
           e->connected_once ? "yes" : "no");
    e->connected_once = true;
    e->seen_reconnects = h->reconnects;
    nats__resync_all(e);
    e->stream_retry_at = 0;
    e->stream_backoff_ms = 0;
    nats__stream_check(e);
}

/* fo_service: runs what the other threads handed over, on the loop thread. */
static void nats_service(void *eng)
{
    struct nats_engine *e = eng;
    struct handed_over h;
    nats__handoff_take(e, &h);
    conn_events(e, &h);
    while (h.pubs) {
        struct pending_pub *p = h.pubs;
        h.pubs = p->next;
        nats__pub_done(e, p);
    }
    while (h.jobs) {
        struct js_job *j = h.jobs;
        h.jobs = j->next;
        nats__job_done(e, j);
    }
    while (h.replies) {
        struct inbox_reply *r = h.replies;
        h.replies = r->next;
        nats__read_reply(e, r->msg);
        natsMsg_Destroy(r->msg);
        free(r);
    }
    nats__bus_deliver(e, h.bus);
}

static bool nats_ready(const void *eng)
{
    const struct nats_engine *e = eng;
    return e->stream_ok && conn_up(e) && lr_up(e->lr);
}

/* -------------------------------------------------------------------- */
/* Create / destroy (loop thread)                                         */

static char *dup_cstr(const char *s)
{
    size_t n = strlen(s) + 1;
    char *p = malloc(n);
    if (p)
        memcpy(p, s, n);
    return p;
}

/* Comma-separated URLs into the options. */
static natsStatus set_servers(natsOptions *o, char *urls)
{
    const char *list[32];
    int n = 0;
    char *save = NULL;
    for (char *t = strtok_r(urls, ",", &save); t && n < 32; t = strtok_r(NULL, ",", &save))
        list[n++] = t;
    return n ? natsOptions_SetServers(o, list, n) : NATS_INVALID_ARG;
}

static natsStatus make_options(struct nats_engine *e, const char *node_id)
{
    char *urls = dup_cstr(e->url);
    char name[128];
    snprintf(name, sizeof(name), "rtgate %s", node_id ? node_id : "");
    natsStatus s = urls ? natsOptions_Create(&e->opts) : NATS_NO_MEMORY;
    if (!s)
        s = set_servers(e->opts, urls);
    free(urls);
    if (!s)
        s = natsOptions_SetName(e->opts, name);
    if (!s)
        s = natsOptions_SetMaxReconnect(e->opts, -1);
    if (!s)
        s = natsOptions_SetReconnectWait(e->opts, 250);
    if (!s)
        s = natsOptions_SetTimeout(e->opts, 2000);
    if (!s)
        s = natsOptions_SetPingInterval(e->opts, 5000);
    if (!s)
        s = natsOptions_SetMaxPingsOut(e->opts, 2);
    if (!s)
        s = natsOptions_UseGlobalMessageDelivery(e->opts, true);
    if (!s)
        s = natsOptions_SetRetryOnFailedConnect(e->opts, true, nats__on_connected, e);
    if (!s)
        s = natsOptions_SetReconnectedCB(e->opts, nats__on_connected, e);
    if (!s)
        s = natsOptions_SetDisconnectedCB(e->opts, nats__on_disconnected, e);
    if (!s)
        s = natsOptions_SetErrorHandler(e->opts, nats__on_nats_error, e);
    if (!s) /* TLS and credentials: the same as the loop reader's */
        s = nsec_natsc_options(e->opts, e->fo->cfg.nats_security, e->url);
    return s;
}

static natsStatus connect_nats(struct nats_engine *e)
{
    /* A refusal (TLS, credentials) fails the start with nats.c's reason; no server: retry. */
    natsStatus s = nsec_natsc_connect(&e->conn, e->opts, e->url, e->fo->cfg.nats_security,
                                      nats__on_connected, e);
    if (s == NATS_NOT_YET_CONNECTED) {
        char where[1024];
        rt_log(RT_LOG_WARN, "nats_not_yet_connected", "servers=%s why=\"retrying in background\"",
               nsec_urls_for_log(e->url, where, sizeof(where)));
        s = NATS_OK;
    }
    if (s)
        return s;
    jsOptions jo;
    nats__js_opts(&jo, REQ_WAIT_MS);
    jo.PublishAsync.AckHandler = nats__on_pub_ack;
    jo.PublishAsync.AckHandlerClosure = e;
    jo.PublishAsync.MaxPending = 4 * INFLIGHT_MAX;
    jo.PublishAsync.StallWait = 1;
    return natsConnection_JetStream(&e->js, e->conn, &jo);
}

static rt_status engine_init(struct nats_engine *e, struct fo *fo)
{
    const struct fo_config *c = &fo->cfg;
    e->fo = fo;
    e->replicas = c->nats_replicas ? c->nats_replicas : 1;
    e->url = dup_cstr(c->nats_url ? c->nats_url : "nats://127.0.0.1:4222");
    e->stream = dup_cstr(c->nats_stream && *c->nats_stream ? c->nats_stream : "RTGATE");
    const char *drop = getenv("RTGATE_NATS_DROP_EVERY"); /* tests only: docs/nats.md */
    e->drop_every = drop ? strtoull(drop, NULL, 10) : 0;
    rt_htab_init(&e->inflight);
    rt_htab_init(&e->reads);
    atomic_init(&e->up, false);
    pthread_mutex_init(&e->send_lock, NULL);
    pthread_cond_init(&e->send_cond, NULL);
    pthread_mutex_init(&e->lock, NULL);
    pthread_mutex_init(&e->jobs_lock, NULL);
    pthread_cond_init(&e->jobs_cond, NULL);
    return e->url && e->stream ? RT_OK : RT_NOMEM;
}

/*
 * The loop reader of every channel's live subject: the only path for live
 * messages, so a URL or a security file it cannot use is an error at start,
 * never a silent fallback.
 */
static rt_status reader_open(struct nats_engine *e, struct fo *fo)
{
    char name[160], where[1024];
    snprintf(name, sizeof(name), "rtgate-live %s", fo->cfg.node_id ? fo->cfg.node_id : "");
    struct lr_hooks hooks = {e, nats__on_live_msg, nats__on_live_replay};
    if (!fo->cfg.uv_loop) {
        rt_log(RT_LOG_ERROR, "nats_no_loop", "why=\"the nats engine needs fo_config.uv_loop\"");
        return RT_INVAL;
    }
    rt_status st = lr_create(fo->cfg.uv_loop, e->url, name, fo->cfg.nats_read_window_ms,
                             fo->cfg.nats_security, &hooks, &e->lr);
    if (st == RT_INVAL)
        rt_log(RT_LOG_ERROR, "nats_url_unsupported",
               "servers=%s why=\"URLs or files the loop reader of live messages cannot use "
               "(nats:// and tls:// URLs; see the line before for a file)\"",
               nsec_urls_for_log(e->url, where, sizeof(where)));
    return st;
}

static rt_status nats_create(struct fo *fo, void **out)
{
    struct nats_engine *e = calloc(1, sizeof(*e));
    if (!e)
        return RT_NOMEM;
    *out = e;
    if (engine_init(e, fo) != RT_OK)
        goto err;
    /* nats.c first (this opens the library), the reader's OpenSSL after: the
     * exit handlers run in reverse, so OpenSSL's cleanup runs before nats.c's
     * and nats.c's finds the compression methods freed, not freed twice
     * (otherwise a tls:// gateway crashes at exit in OPENSSL_cleanup). */
    nats_SetMessageDeliveryPoolSize(2);
    if (reader_open(e, fo) != RT_OK)
        goto err;
    natsStatus s = make_options(e, fo->cfg.node_id);
    if (!s)
        s = connect_nats(e);
    if (!s)
        s = nats__inbox_open(e);
    if (s) {
        char where[1024];
        rt_log(RT_LOG_ERROR, "nats_connect_failed", "servers=%s error=\"%s\"",
               nsec_urls_for_log(e->url, where, sizeof(where)), natsStatus_GetText(s));
        goto err;
    }
    if (nats__workers_start(e) != RT_OK || nats__sender_start(e) != RT_OK)
        goto err;
    /* Before the loop runs, the one time the loop thread asks nats.c. The
     * stream is checked on a worker, retried with backoff until it works: a
     * slow JetStream at start never stops the gateway (/readyz says false
     * meanwhile). */
    if (natsConnection_Status(e->conn) == NATS_CONN_STATUS_CONNECTED) {
        char server[256];
        nsec_connected_server(e->conn, server, sizeof(server));
        atomic_store(&e->up, true);
        rt_log(RT_LOG_INFO, "nats_connected", "server=%s reconnect=no", server);
        e->connected_once = true;
        pthread_mutex_lock(&e->lock);
        e->seen_reconnects = e->reconnects;
        pthread_mutex_unlock(&e->lock);
        nats__stream_check(e);
    }
    return RT_OK;
err:
    nats_destroy(e);
    *out = NULL;
    return RT_UNAVAILABLE;
}

static void inflight_free(struct rt_hnode *n, void *arg)
{
    (void)arg;
    struct pending_pub *p = FO__CONTAINER(n, struct pending_pub, node.h);
    natsMsg_Destroy(p->eph);
    free(p);
}

/* What the other threads left behind, once they are all gone, and the requests. */
static void free_handoff(struct nats_engine *e)
{
    nats__reads_free(e);
    while (e->replies) {
        struct inbox_reply *r = e->replies;
        e->replies = r->next;
        natsMsg_Destroy(r->msg);
        free(r);
    }
    while (e->bus_head) {
        struct bus_msg *b = e->bus_head;
        e->bus_head = b->next;
        free(b);
    }
    while (e->pubs_done) {
        struct pending_pub *p = e->pubs_done;
        e->pubs_done = p->next;
        natsMsg_Destroy(p->eph);
        free(p);
    }
    while (e->jobs_done) {
        struct js_job *j = e->jobs_done;
        e->jobs_done = j->next;
        nats__job_free(j);
    }
    rt_htab_each(&e->inflight, inflight_free, NULL);
    rt_htab_free(&e->inflight);
}

/*
 * After every channel was closed. Stops the workers, closes the connection
 * and waits for nats.c's threads (nats_CloseAndWait), so no callback can run
 * when the engine's memory goes.
 */
static void nats_destroy(void *eng)
{
    struct nats_engine *e = eng;
    if (!e)
        return;
    lr_destroy(e->lr);
    e->lr = NULL;
    nats__workers_stop(e);
    nats__sender_stop(e);
    /* Drain, then close: with the library's delivery pool, messages still
     * queued for subscriptions closed just before (a burst at shutdown) were
     * never freed when nats_CloseAndWait stopped the pool (LeakSanitizer, 2
     * runs in 10 under a flood); a drain lets the pool work through them. */
    if (e->conn && natsConnection_DrainTimeout(e->conn, 2000) == NATS_OK) {
        for (int i = 0; i < 300 && !natsConnection_IsClosed(e->conn); i++)
            nats_Sleep(10);
    }
    if (e->conn)
        natsConnection_Close(e->conn);
    natsSubscription_Destroy(e->inbox_sub);
    jsCtx_Destroy(e->js);
    natsConnection_Destroy(e->conn);
    natsOptions_Destroy(e->opts);
    nats_CloseAndWait(5000);
    free_handoff(e);
    pthread_mutex_destroy(&e->lock);
    pthread_mutex_destroy(&e->jobs_lock);
    pthread_cond_destroy(&e->jobs_cond);
    pthread_mutex_destroy(&e->send_lock);
    pthread_cond_destroy(&e->send_cond);
    free(e->confirmed);
    free(e->inbox);
    free(e->url);
    free(e->stream);
    free(e);
}

static void nats_stats(const void *eng, struct fo_stats *out)
{
    const struct nats_engine *e = eng;
    struct lr_stats ls;
    lr_get_stats(e->lr, &ls);
    out->reader_up = lr_up(e->lr);
    out->reader_connects = ls.connects;
    out->reader_reads = ls.wakeups;
    out->reader_messages = ls.msgs;
    out->reader_bad = ls.bad;
    out->reader_confirm_failures = ls.confirm_failures;
}

const struct fo_engine_ops fo__engine_nats = {
    .name = "nats",
    .create = nats_create,
    .destroy = nats_destroy,
    .chan_open = nats_chan_open,
    .chan_close = nats_chan_close,
    .chan_idle = nats_chan_idle,
    .interest_add = nats_interest_add,
    .interest_remove = nats_interest_remove,
    .publish = nats__publish,
    .chan_info = nats_chan_info,
    .fetch = nats__fetch,
    .tick = nats_tick,
    .sub_prepare = nats_sub_prepare,
    .service = nats_service,
    .ready = nats_ready,
    .bus_subscribe = nats__bus_subscribe,
    .bus_unsubscribe = nats__bus_unsubscribe,
    .bus_publish = nats__bus_publish,
    .bus_generation = nats__bus_generation,
    .stats = nats_stats,
};
