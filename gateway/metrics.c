/*
 * metrics.c: /metrics in the Prometheus text format, and the measurements
 * that are more than a counter: the latency histograms (delivery: publish
 * accept to write; publish: request to reply), closes by code, build info,
 * the loop's busy time and readiness.
 */
#include "api.h"
#include "fleet.h"
#include "gw.h"
#include "users.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#ifndef RTGATE_VERSION
#define RTGATE_VERSION "unknown"
#endif
#ifndef RTGATE_COMMIT
#define RTGATE_COMMIT "unknown"
#endif

#define PUB_UNIT_US    100  /* pub_latency counts in units of 100 us */
#define PUBTIMES_SLOTS 4096 /* publishes in flight whose start time is kept */

/* The close codes counted by name; anything else is "other". */
static const uint16_t close_codes[GW_CLOSE_CODES - 1] = {1000, 1001, 1002, 1003, 1005, 1006,
                                                         1007, 1008, 1009, 1011, 4001};

struct out {
    char *buf;
    size_t len, cap;
    bool failed;
};

static void emit(struct out *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void emit(struct out *o, const char *fmt, ...)
{
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(o->buf + o->len, o->cap - o->len, fmt, ap);
        va_end(ap);
        if (n < 0) {
            o->failed = true;
            return;
        }
        if ((size_t)n < o->cap - o->len) {
            o->len += (size_t)n;
            return;
        }
        char *nb = realloc(o->buf, o->cap * 2 + (size_t)n);
        if (!nb) {
            o->failed = true;
            return;
        }
        o->buf = nb;
        o->cap = o->cap * 2 + (size_t)n;
    }
}

static void metric(struct out *o, const char *name, const char *type, const char *help, uint64_t v)
{
    emit(o, "# HELP rtgate_%s %s\n# TYPE rtgate_%s %s\nrtgate_%s %llu\n", name, help, name, type,
         name, (unsigned long long)v);
}

static void refused(struct out *o, const struct gw_metrics *m)
{
    static const char *const causes[GW_REFUSE_N] = {
        "rate", "capacity", "bad_request", "draining", "origin", "not_tls", "proxy", "node_rate"};
    emit(o, "# HELP rtgate_handshakes_refused_total WebSocket handshakes refused, by cause\n"
            "# TYPE rtgate_handshakes_refused_total counter\n");
    for (int i = 0; i < GW_REFUSE_N; i++)
        emit(o, "rtgate_handshakes_refused_total{cause=\"%s\"} %llu\n", causes[i],
             (unsigned long long)m->handshakes_refused[i]);
}

static void errors(struct out *o, const struct gw_metrics *m)
{
    static const int codes[RT_N_ERRORS] = {
#define X(c, name, reason) c,
        RT_ERROR_TABLE(X)
#undef X
    };
    emit(o, "# HELP rtgate_errors_total Error replies sent, by code\n"
            "# TYPE rtgate_errors_total counter\n");
    for (int i = 0; i < RT_N_ERRORS; i++)
        emit(o, "rtgate_errors_total{code=\"%d\",reason=\"%s\"} %llu\n", codes[i],
             rt_error_reason(codes[i]), (unsigned long long)m->errors[i]);
}

/* A histogram whose bucket i holds values <= 2^i units of unit_s seconds. */
static void histogram(struct out *o, const char *name, const char *help,
                      const struct gw_histogram *h, double unit_s)
{
    emit(o, "# HELP rtgate_%s %s\n# TYPE rtgate_%s histogram\n", name, help, name);
    uint64_t cum = 0;
    for (int i = 0; i < GW_HIST_BUCKETS; i++) {
        cum += h->buckets[i];
        emit(o, "rtgate_%s_bucket{le=\"%g\"} %llu\n", name, unit_s * (double)(1ull << i),
             (unsigned long long)cum);
    }
    cum += h->buckets[GW_HIST_BUCKETS];
    emit(o, "rtgate_%s_bucket{le=\"+Inf\"} %llu\n", name, (unsigned long long)cum);
    emit(o, "rtgate_%s_sum %.6f\nrtgate_%s_count %llu\n", name, (double)h->sum * unit_s, name,
         (unsigned long long)cum);
}

static void closes(struct out *o, const struct gw_metrics *m)
{
    static const char *const by[2] = {"server", "client"};
    emit(o, "# HELP rtgate_closes_total Sessions ended, by transport, close code and by who ended "
            "them (1006: no close frame, e.g. a cut or a vanished peer)\n"
            "# TYPE rtgate_closes_total counter\n");
    for (int t = 0; t < GW_TRANSPORT_N; t++)
        for (int b = 0; b < 2; b++)
            for (int i = 0; i < GW_CLOSE_CODES; i++) {
                const char *tn = gw_transports[t]->name;
                unsigned long long v = m->transport[t].closes[b][i];
                if (i < GW_CLOSE_CODES - 1)
                    emit(o, "rtgate_closes_total{transport=\"%s\",code=\"%u\",by=\"%s\"} %llu\n",
                         tn, close_codes[i], by[b], v);
                else
                    emit(o, "rtgate_closes_total{transport=\"%s\",code=\"other\",by=\"%s\"} %llu\n",
                         tn, by[b], v);
            }
}

/* One counter or gauge per transport: rtgate_<name>{transport="..."}. */
static void per_transport(struct out *o, const struct gw_metrics *m, const char *name,
                          const char *type, const char *help, size_t field)
{
    emit(o, "# HELP rtgate_%s %s, by transport\n# TYPE rtgate_%s %s\n", name, help, name, type);
    for (int t = 0; t < GW_TRANSPORT_N; t++) {
        const uint64_t *v =
            (const uint64_t *)(const void *)((const char *)&m->transport[t] + field);
        emit(o, "rtgate_%s{transport=\"%s\"} %llu\n", name, gw_transports[t]->name,
             (unsigned long long)*v);
    }
}

static void loop_and_state(struct out *o, const struct gw_server *srv)
{
    const struct gw_metrics *m = &srv->m;
    bool backend = fo_ready(srv->fo);
    emit(o,
         "# HELP rtgate_build_info The running build (value 1)\n"
         "# TYPE rtgate_build_info gauge\n"
         "rtgate_build_info{version=\"%s\",commit=\"%s\",engine=\"%s\",protocol=\"1\"} 1\n",
         RTGATE_VERSION, RTGATE_COMMIT, srv->cfg->nats_url[0] ? "nats" : "memory");
    emit(o,
         "# HELP rtgate_loop_busy_seconds_total Time the event loop spent working, not "
         "waiting for I/O (rate() of it is the busy fraction)\n"
         "# TYPE rtgate_loop_busy_seconds_total counter\n"
         "rtgate_loop_busy_seconds_total %.6f\n",
         (double)gw_metrics_loop_busy_ns(srv) / 1e9);
    emit(o,
         "# HELP rtgate_loop_busy_ratio Fraction of the last second the event loop was busy\n"
         "# TYPE rtgate_loop_busy_ratio gauge\nrtgate_loop_busy_ratio %.4f\n",
         m->loop_busy_ratio);
    metric(o, "backend_ready", "gauge",
           "1 while the engine can serve (nats: connected and the stream checked; memory: always)",
           backend);
    metric(o, "ready", "gauge", "1 while /readyz answers 200 (backend ready and not draining)",
           backend && !srv->draining);
}

static uint64_t outbox_bytes(const struct gw_server *srv)
{
    uint64_t sum = 0;
    for (uint32_t i = 0; i < srv->conns.used; i++)
        if (srv->conns.slots[i])
            sum += srv->conns.slots[i]->outbox.bytes;
    return sum;
}

/* Per-user limits and channel presence (users.c, chan_presence.c; docs/users.md). */
static void users_metrics(struct out *o, const struct gw_server *srv)
{
    struct users_stats us = {0};
    if (srv->users)
        users_get_stats(srv->users, &us);
    metric(o, "users", "gauge", "Users known to this node (its own and other nodes')", us.users);
    metric(o, "user_remote_conns", "gauge", "Connections of other nodes known (--user-max-conns)",
           us.remote_conns);
    metric(o, "user_conns_refused_total", "counter",
           "Connects refused over --user-max-conns (429, close 4029)", us.conns_refused);
    metric(o, "user_conns_evicted_total", "counter",
           "Connections closed 4029 after two nodes took a user's last places at once",
           us.conns_evicted);
    metric(o, "user_pubs_refused_total", "counter", "Publishes refused over --user-pub-rate (429)",
           us.pubs_refused);
    metric(o, "users_nodes", "gauge", "Other gateway nodes heard from on rtgate.users.*", us.nodes);
    metric(o, "presence_channels", "gauge", "Channels whose presence this node follows",
           us.channels);
    metric(o, "presence_members", "gauge", "Members of those channels, all nodes", us.members);
    metric(o, "presence_events_total", "counter", "Channel presence events made", us.events);
    metric(o, "users_bus_messages_out_total", "counter", "rtgate.users.* messages published",
           us.messages_out);
    metric(o, "users_bus_messages_in_total", "counter", "rtgate.users.* messages applied",
           us.messages_in);
    metric(o, "presence_snapshots_total", "counter", "Channel presence snapshot requests sent",
           us.snapshots);
    metric(o, "presence_snapshots_partial_total", "counter",
           "Channel presence snapshots completed without every node's answer",
           us.snapshots_partial);
    metric(o, "users_full_states_total", "counter", "Full connection states published",
           us.full_states);
    metric(o, "users_resyncs_total", "counter", "Resyncs after lost bus messages", us.resyncs);
    metric(o, "users_nodes_expired_total", "counter",
           "Nodes dropped after presence-ttl-ms of silence (users)", us.nodes_expired);
    metric(o, "users_bus_bad_total", "counter", "Malformed rtgate.users.* messages dropped",
           us.bad_messages);
}

char *gw_metrics_render(const struct gw_server *srv, size_t *len)
{
    const struct gw_metrics *m = &srv->m;
    struct fo_stats fs;
    fo_get_stats(srv->fo, &fs);
    struct out o = {.buf = malloc(4096), .cap = 4096};
    if (!o.buf)
        return NULL;
#define TM(f) offsetof(struct gw_transport_metrics, f)
    per_transport(&o, m, "connections", "gauge", "Open sessions", TM(connections));
    per_transport(&o, m, "connections_total", "counter", "Sessions accepted",
                  TM(connections_total));
    refused(&o, m);
    per_transport(&o, m, "messages_in_total", "counter", "Messages received from clients",
                  TM(messages_in));
    per_transport(&o, m, "messages_out_total", "counter", "Messages queued to clients",
                  TM(messages_out));
    metric(&o, "frames_in_total", "counter", "WebSocket frames received", m->frames_in);
    metric(&o, "frames_out_total", "counter", "WebSocket frames sent", m->frames_out);
    per_transport(&o, m, "bytes_in_total", "counter", "Payload bytes received", TM(bytes_in));
    per_transport(&o, m, "bytes_out_total", "counter", "Payload bytes sent", TM(bytes_out));
#undef TM
    errors(&o, m);
    metric(&o, "rate_limited_total", "counter", "Replies with 429", m->errors[rt_error_index(429)]);
    metric(&o, "closes_policy_total", "counter", "Connections closed with 1008", m->closes_1008);
    metric(&o, "closes_too_big_total", "counter", "Connections closed with 1009", m->closes_1009);
    metric(&o, "closes_connect_timeout_total", "counter", "Connections closed with 4001",
           m->closes_4001);
    metric(&o, "auth_refused_total", "counter",
           "Connects refused for their token (401, then close 4001)", m->auth_refused);
    metric(&o, "closes_token_expired_total", "counter",
           "Sessions closed with 4001 when their token expired", m->token_expired);
    metric(&o, "closes_idle_total", "counter",
           "Connections closed after idle-timeout-ms of silence", m->closes_idle);
    metric(&o, "slow_consumer_closes_total", "counter", "Connections cut for not reading",
           m->slow_consumer_closes);
    metric(&o, "outbox_bytes", "gauge", "Bytes queued in all send queues", outbox_bytes(srv));
    metric(&o, "channels", "gauge", "Channels with state on this node", fs.channels);
    metric(&o, "subscriptions", "gauge", "Local subscriptions", fs.subscriptions);
    metric(&o, "published_total", "counter", "Publishes accepted", fs.published);
    metric(&o, "dups_total", "counter", "Publishes answered as duplicates", fs.dups);
    metric(&o, "deliveries_total", "counter", "Messages fanned out to connections", fs.deliveries);
    metric(&o, "drops_total", "counter", "Ephemeral deliveries dropped on full send queues",
           fs.drops);
    metric(&o, "gaps_total", "counter", "Gap messages sent", fs.gaps);
    metric(&o, "history_messages", "gauge", "Messages retained in history", fs.history_messages);
    metric(&o, "history_bytes", "gauge", "Bytes retained in history", fs.history_bytes);
    metric(&o, "upstream_subscriptions", "gauge",
           "NATS subscriptions held for local interest (nats engine)", fs.upstream_subscriptions);
    metric(&o, "upstream_invalid_total", "counter", "NATS messages dropped for an invalid payload",
           fs.upstream_invalid);
    metric(&o, "upstream_fetched_total", "counter", "Durable messages read back from JetStream",
           fs.upstream_fetched);
    metric(&o, "upstream_quiet_probes_total", "counter",
           "Quiet durable channels probed for a lost last message (at most 100 a second)",
           fs.upstream_quiet_probes);
    metric(&o, "upstream_reader_up", "gauge",
           "1 while the loop reader of channels' live subjects is connected to NATS", fs.reader_up);
    metric(&o, "upstream_reader_connects_total", "counter",
           "Connections of the loop reader to NATS (handshakes completed)", fs.reader_connects);
    metric(&o, "upstream_reader_reads_total", "counter",
           "NATS socket reads by the loop reader (event-loop wake-ups)", fs.reader_reads);
    metric(&o, "upstream_reader_messages_total", "counter", "Messages the loop reader read",
           fs.reader_messages);
    metric(&o, "upstream_reader_bad_total", "counter",
           "Loop reader connections dropped for a protocol error from the server", fs.reader_bad);
    metric(&o, "upstream_reader_confirm_failures_total", "counter",
           "Subscriptions the loop reader could not confirm with the server (connection lost)",
           fs.reader_confirm_failures);
    metric(&o, "subs_pending", "gauge", "Subscribes waiting for the backend (nats engine)",
           fs.subs_pending);
    metric(&o, "subs_waited_total", "counter", "Subscribes answered after waiting for the backend",
           fs.subs_waited);
    metric(&o, "sub_timeouts_total", "counter",
           "Subscribes answered 503 because the backend did not answer in time", fs.sub_timeouts);
    metric(&o, "subs_refused_pending_total", "counter",
           "Subscribes refused because too many waited for the backend (429 per connection, "
           "503 per node)",
           fs.subs_refused_pending);
    struct geo_stats gs;
    geo_get_stats(srv->geo, &gs);
    struct geo_fleet_stats fl = {0};
    if (srv->fleet)
        geo_fleet_get_stats(srv->fleet, &fl);
    metric(&o, "geo_members", "gauge",
           "Presence members in this node's index (its own and, with --nats, those of other "
           "nodes in the cells it follows)",
           gs.members);
    metric(&o, "geo_remote_members", "gauge", "Of them, members of other nodes", fl.remote_members);
    metric(&o, "geo_cells_followed", "gauge", "Cells (prefixes) followed on the bus (--nats)",
           fl.follows);
    metric(&o, "geo_follow_conns", "gauge",
           "Connections charged with followed cells (--geo-max-follows-per-conn)", fl.owners);
    metric(&o, "geo_follows_refused_share_total", "counter",
           "Queries refused (429): the connection was over --geo-max-follows-per-conn",
           fl.refused_share);
    metric(&o, "geo_follows_refused_limit_total", "counter",
           "Queries refused (503): the node was at --geo-max-follows", fl.refused_limit);
    metric(&o, "geo_cells_pending", "gauge", "Followed cells waiting for a snapshot",
           fl.follows_pending);
    metric(&o, "geo_nodes", "gauge", "Other gateway nodes heard from", fl.nodes);
    metric(&o, "geo_deltas_out_total", "counter", "Own presence changes published", fl.deltas_out);
    metric(&o, "geo_bus_messages_out_total", "counter", "Presence bus messages published",
           fl.messages_out);
    metric(&o, "geo_deltas_in_total", "counter", "Presence changes of other nodes applied",
           fl.deltas_in);
    metric(&o, "geo_snapshots_total", "counter", "Snapshot requests sent", fl.snapshots);
    metric(&o, "geo_snapshots_partial_total", "counter",
           "Snapshots completed without every node's answer", fl.snapshots_partial);
    metric(&o, "geo_snapshots_answered_total", "counter", "Snapshot requests answered",
           fl.snapshots_answered);
    metric(&o, "geo_resyncs_total", "counter", "Resyncs after lost bus messages or a node's return",
           fl.resyncs);
    metric(&o, "geo_nodes_expired_total", "counter",
           "Nodes dropped after presence-ttl-ms of silence", fl.nodes_expired);
    metric(&o, "geo_bus_bad_total", "counter", "Malformed presence bus messages dropped",
           fl.bad_messages);
    metric(&o, "geo_partial_replies_total", "counter", "near / watch replies marked partial",
           srv->geo_partial);
    metric(&o, "geo_spaces", "gauge", "Presence spaces with members or watches", gs.spaces);
    metric(&o, "geo_cells", "gauge", "Occupied presence cells", gs.cells);
    metric(&o, "geo_watches", "gauge", "Active geo.watch circles", gs.watches);
    metric(&o, "geo_queries_total", "counter", "geo.near queries answered", gs.queries);
    metric(&o, "geo_sets_total", "counter", "geo.set updates stored", gs.sets);
    metric(&o, "geo_events_total", "counter", "Watch events (join, move, leave) reported",
           gs.events);
    uint64_t api_requests, api_in_progress, api_failed_keys;
    gw_api_counts(srv, &api_requests, &api_in_progress, &api_failed_keys);
    metric(&o, "api_requests_total", "counter", "Server API requests (--api-key-file)",
           api_requests);
    metric(&o, "api_in_progress", "gauge",
           "Server API requests reading a body or waiting for the engine", api_in_progress);
    metric(&o, "api_failed_keys_total", "counter",
           "Server API requests with a missing or wrong key", api_failed_keys);
    users_metrics(&o, srv);
    metric(&o, "draining", "gauge", "1 while draining", srv->draining);
    closes(&o, m);
    histogram(&o, "delivery_latency_seconds",
              "From the publish's acceptance (its ts) to the write of the message to a client; "
              "replays after a resume count their whole wait",
              &m->delivery_latency, 0.001);
    histogram(&o, "publish_latency_seconds", "From a pub's arrival to its reply (ok or error)",
              &m->pub_latency, PUB_UNIT_US / 1e6);
    loop_and_state(&o, srv);
    if (o.failed) {
        free(o.buf);
        return NULL;
    }
    *len = o.len;
    return o.buf;
}

void gw_metrics_delivered(struct gw_metrics *m, const struct gw_outbox *ob, uint32_t n,
                          uint64_t now_ms)
{
    for (uint32_t i = 0; i < n; i++) {
        const struct gw_outbox_item *it = &ob->items[(ob->head + i) & (ob->cap - 1)];
        if (it->msg) /* a message: replies and events are private bytes */
            gw_hist_observe(&m->delivery_latency,
                            now_ms > it->msg->ts_ms ? now_ms - it->msg->ts_ms : 0);
    }
}

void gw_metrics_closed(struct gw_metrics *m, const struct gw_session *s)
{
    int by = GW_BY_CLIENT;
    uint16_t code = 1006; /* no close frame either way */
    if (s->close_code) {
        by = GW_BY_SERVER;
        code = s->close_code;
    } else if (s->peer_close_code) {
        code = s->peer_close_code;
    } else if (s->closing) {
        by = GW_BY_SERVER; /* cut without a close frame (idle) */
    }
    int i = 0;
    while (i < GW_CLOSE_CODES - 1 && close_codes[i] != code)
        i++;
    m->transport[s->transport].closes[by][i]++;
}

/* ---- publish reply latency ------------------------------------------- */

struct pubtime {
    uint64_t conn_id; /* 0: free */
    int64_t req_id;
    uint64_t start_us;
};

struct gw_pubtimes {
    struct pubtime slots[PUBTIMES_SLOTS];
};

rt_status gw_pubtimes_create(struct gw_pubtimes **out)
{
    *out = calloc(1, sizeof **out);
    return *out ? RT_OK : RT_NOMEM;
}

void gw_pubtimes_destroy(struct gw_pubtimes *pt)
{
    free(pt);
}

static struct pubtime *pubtime_slot(struct gw_pubtimes *pt, uint64_t conn_id, int64_t req_id)
{
    uint64_t h = conn_id * 0x9E3779B97F4A7C15ull ^ (uint64_t)req_id * 0xC2B2AE3D27D4EB4Full;
    return &pt->slots[(h >> 32) % PUBTIMES_SLOTS];
}

void gw_pubtimes_start(struct gw_pubtimes *pt, uint64_t conn_id, int64_t req_id, uint64_t start_us)
{
    *pubtime_slot(pt, conn_id, req_id) =
        (struct pubtime){.conn_id = conn_id, .req_id = req_id, .start_us = start_us};
}

void gw_pubtimes_done(struct gw_server *srv, uint64_t conn_id, int64_t req_id)
{
    struct pubtime *p = pubtime_slot(srv->pubtimes, conn_id, req_id);
    if (p->conn_id != conn_id || p->req_id != req_id)
        return; /* its slot was taken by a later publish: no sample */
    gw_pubtimes_observe(&srv->m, p->start_us, gw_now_us());
    p->conn_id = 0;
}

void gw_pubtimes_observe(struct gw_metrics *m, uint64_t start_us, uint64_t now_us)
{
    uint64_t us = now_us > start_us ? now_us - start_us : 0;
    gw_hist_observe(&m->pub_latency, (us + PUB_UNIT_US - 1) / PUB_UNIT_US);
}

uint64_t gw_metrics_loop_busy_ns(const struct gw_server *srv)
{
    const struct gw_metrics *m = &srv->m;
    uint64_t wall = uv_hrtime() - m->loop_since_ns;
    uint64_t idle = uv_metrics_idle_time(srv->loop) - m->loop_idle_at_start_ns;
    return wall > idle ? wall - idle : 0;
}
