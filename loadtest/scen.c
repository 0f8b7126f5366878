/*
 * scen.c: the single-process scenarios' layer over the connection engine
 * (scen.h, net.h): the greeting (`connect`, then `sub` when asked), the
 * messages every scenario treats alike, their options and the JSON helpers
 * they share. The scenarios themselves are in scen_presence.c and
 * scen_churn.c (churn and storm).
 */
#include "scen.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#define HOUSEKEEP_NS (10 * LT_NS_PER_MS)

/* ------------------------------------------------------------------ */
/* Small helpers */

uint64_t sc_rand(struct sc_engine *e)
{
    return lt_net_rand(&e->net);
}

double sc_rand01(struct sc_engine *e)
{
    return (double)(sc_rand(e) >> 11) / 9007199254740992.0;
}

void sc_channel(const struct lt_config *cfg, uint32_t i, char *out, size_t cap)
{
    snprintf(out, cap, "%s.c%u", cfg->channel_prefix, i % (cfg->channels ? cfg->channels : 1));
}

bool sc_raise_fd_limit(uint32_t need)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return false;
    if (rl.rlim_cur >= need)
        return true;
    rl.rlim_cur = rl.rlim_max != RLIM_INFINITY && rl.rlim_max < need ? rl.rlim_max : need;
    return setrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur >= need;
}

static void count_code(struct sc_engine *e, int code)
{
    e->n.error_codes[lt_error_code_index(code)]++;
}

static struct sc_conn *conn_of(struct lt_conn *link)
{
    return (struct sc_conn *)(void *)link; /* the link is the first member */
}

/* ------------------------------------------------------------------ */
/* The engine, as the scenarios see it */

struct lt_out sc_tx(struct sc_engine *e)
{
    return lt_net_tx(&e->net);
}

void sc_send(struct sc_engine *e, struct sc_conn *c, size_t len)
{
    lt_net_send(&e->net, &c->link, len);
}

uint32_t sc_in_setup(const struct sc_engine *e)
{
    return e->net.setting_up + e->net.retrying;
}

void sc_open(struct sc_engine *e, struct sc_conn *c)
{
    if (c->link.state != LT_CONN_IDLE)
        return;
    c->next_id = 3;
    lt_net_open(&e->net, &c->link);
}

void sc_close(struct sc_engine *e, struct sc_conn *c)
{
    lt_net_close(&e->net, &c->link);
}

void sc_poll(struct sc_engine *e, uint64_t until)
{
    lt_net_poll(&e->net, until);
}

void sc_place(struct sc_engine *e, struct sc_conn *c, uint8_t node)
{
    lt_net_place(&e->net, &c->link, node, c->index);
}

/* ------------------------------------------------------------------ */
/* The greeting and the messages every scenario treats alike */

/* The upgrade is done: `connect`, and `sub` right behind it (PROTOCOL.md 2.1 allows that). */
static void net_on_up(struct lt_net *net, struct lt_conn *link)
{
    struct sc_engine *e = net->p.owner;
    struct sc_conn *c = conn_of(link);
    struct lt_out o = sc_tx(e);
    lt_enc_hello(&o, e->cfg, c->index);
    if (c->subscribe) {
        char ch[160];
        sc_channel(e->cfg, c->index, ch, sizeof ch);
        lt_enc_sub(&o, e->cfg->codec, 2, ch, false);
    }
    link->hello_step = SC_STEP_CONNECT_SENT;
    /* msgpack maps and JSON lines may share a frame (PROTOCOL.md 1). */
    sc_send(e, c, o.len);
}

static void conn_ready(struct sc_engine *e, struct sc_conn *c)
{
    lt_net_ready(&e->net, &c->link);
    if (e->ops.on_ready)
        e->ops.on_ready(e, c);
}

/* A reply or error to the greeting: the set-up is over, one way or the other. */
static void on_greeting_answer(struct sc_engine *e, struct sc_conn *c, const struct lt_smsg *m)
{
    uint8_t step = c->link.hello_step;
    if (m->type == LT_M_CONNECTED && step == SC_STEP_CONNECT_SENT) {
        if (c->subscribe)
            c->link.hello_step = SC_STEP_SUB_SENT;
        else
            conn_ready(e, c);
    } else if (m->type == LT_M_REPLY && m->has_id && m->id == 2 && m->ok == 1 &&
               step == SC_STEP_SUB_SENT) {
        conn_ready(e, c);
    } else if (m->type == LT_M_REPLY || m->type == LT_M_ERROR) {
        if (e->cfg->verbose > 0)
            fprintf(stderr, "rtgate-load: set-up refused: code %d\n", m->error_code);
        count_code(e, m->error_code);
        e->n.setup_refused++;
        lt_net_abort(&e->net, &c->link, 0);
    }
}

static void net_on_msg(struct lt_net *net, struct lt_conn *link, const struct lt_smsg *m,
                       const uint8_t *raw, size_t raw_len)
{
    struct sc_engine *e = net->p.owner;
    struct sc_conn *c = conn_of(link);
    if (link->state == LT_CONN_HELLO) {
        on_greeting_answer(e, c, m);
        return;
    }
    if (m->type == LT_M_ERROR) {
        count_code(e, m->error_code);
        e->n.error_msgs++;
        return;
    }
    if (m->type == LT_M_DISCONNECT) {
        e->n.server_disconnects++;
        return;
    }
    if (e->ops.on_msg)
        e->ops.on_msg(e, c, m, raw, raw_len);
}

static void net_on_down(struct lt_net *net, struct lt_conn *link, enum lt_down why, int err)
{
    struct sc_engine *e = net->p.owner;
    (void)err;
    void (*cb)(struct sc_engine *, struct sc_conn *) =
        why == LT_DOWN_LOST ? e->ops.on_lost : e->ops.on_failed;
    if (cb)
        cb(e, conn_of(link));
}

static void net_on_refused(struct lt_net *net, struct lt_conn *link, int status)
{
    (void)link;
    count_code(net->p.owner, status);
}

bool sc_init(struct sc_engine *e, const struct lt_config *cfg, uint32_t nconns,
             const struct sc_ops *ops, void *arg, bool retry_refused)
{
    memset(e, 0, sizeof *e);
    e->cfg = cfg;
    e->ops = *ops;
    e->arg = arg;
    e->nconns = nconns;
    e->conns = calloc(nconns ? nconns : 1, sizeof *e->conns);
    if (!e->conns)
        return false;
    const char *subprotocol =
        cfg->codec == LT_CODEC_JSON ? LT_SUBPROTOCOL_JSON : LT_SUBPROTOCOL_MSGPACK;
    uint8_t opcode = cfg->codec == LT_CODEC_JSON ? LT_WS_TEXT : LT_WS_BINARY;
    struct lt_net_params np = {
        .cfg = cfg,
        .endpoints =
            {
                {.framing = LT_FRAMING_RTGATE,
                 .dst = &cfg->dst,
                 .dst_len = cfg->dst_len,
                 .host_header = cfg->host_header,
                 .path = cfg->path,
                 .subprotocol = subprotocol,
                 .data_opcode = opcode,
                 .bind_source = true,
                 .tls = cfg->tls,
                 .server_name = cfg->host},
                {.framing = LT_FRAMING_RTGATE,
                 .dst = &cfg->sc.dst2,
                 .dst_len = cfg->sc.dst2_len,
                 .host_header = cfg->sc.host_header2,
                 .path = cfg->sc.path2,
                 .subprotocol = subprotocol,
                 .data_opcode = opcode,
                 .bind_source = true,
                 .tls = cfg->sc.tls2,
                 .server_name = cfg->sc.host2},
            },
        .n_endpoints = 2,
        .conns = e->conns,
        .stride = sizeof *e->conns,
        .nconns = nconns,
        .ops = {.on_up = net_on_up,
                .on_msg = net_on_msg,
                .on_down = net_on_down,
                .on_refused = net_on_refused},
        .owner = e,
        .counts = &e->n.net,
        .setup = &e->setup,
        .tx_cap = SC_TX_CAP,
        .max_queued = 64u << 20,
        .retry_refused = retry_refused,
        .housekeep_ns = HOUSEKEEP_NS,
    };
    if (!lt_net_init(&e->net, &np))
        return false;
    for (uint32_t i = 0; i < nconns; i++) {
        e->conns[i].index = i;
        sc_place(e, &e->conns[i], 0);
    }
    lt_hist_init(&e->setup);
    return true;
}

void sc_free(struct sc_engine *e)
{
    if (e->conns)
        lt_net_free(&e->net);
    free(e->conns);
    e->conns = NULL;
}

/* ------------------------------------------------------------------ */
/* JSON */

double sc_us(const struct lt_hist *h, double q)
{
    return h->total ? (double)lt_hist_percentile(h, q) / 1e3 : 0;
}

void sc_json_hist(FILE *f, const char *key, const struct lt_hist *h)
{
    fprintf(f,
            ",\"%s\":{\"p50\":%.1f,\"p90\":%.1f,\"p99\":%.1f,\"p999\":%.1f,\"max\":%.1f,"
            "\"mean\":%.1f,\"count\":%llu}",
            key, sc_us(h, 50), sc_us(h, 90), sc_us(h, 99), sc_us(h, 99.9),
            h->total ? (double)h->max / 1e3 : 0, h->total ? lt_hist_mean(h) / 1e3 : 0,
            (unsigned long long)h->total);
}

void sc_json_counts(FILE *f, const struct sc_counts *n)
{
    static const char *names[LT_ERR_CODES] = {"400", "401", "403", "404",  "409",
                                              "413", "429", "503", "other"};
    const struct lt_net_counts *t = &n->net;
    fprintf(f,
            ",\"conn\":{\"attempts\":%llu,\"ready\":%llu,\"connect_errors\":%llu,"
            "\"handshake_refused\":%llu,\"handshake_retries\":%llu,\"handshake_failures\":%llu,"
            "\"setup_errors\":%llu,\"setup_timeouts\":%llu,\"server_closes\":%llu,"
            "\"server_disconnects\":%llu,\"protocol_errors\":%llu,\"error_msgs\":%llu,"
            "\"frames_in\":%llu,\"msgs_in\":%llu,\"bytes_in\":%llu,\"error_codes\":{",
            (unsigned long long)t->attempts, (unsigned long long)t->ready,
            (unsigned long long)t->connect_errors, (unsigned long long)t->handshake_refused,
            (unsigned long long)t->handshake_retries, (unsigned long long)t->handshake_failures,
            (unsigned long long)sc_setup_errors(n), (unsigned long long)t->setup_timeouts,
            (unsigned long long)t->server_closes, (unsigned long long)n->server_disconnects,
            (unsigned long long)t->protocol_errors, (unsigned long long)n->error_msgs,
            (unsigned long long)t->frames_in, (unsigned long long)t->msgs_in,
            (unsigned long long)t->bytes_in);
    bool first = true;
    for (int i = 0; i < LT_ERR_CODES; i++)
        if (n->error_codes[i]) {
            fprintf(f, "%s\"%s\":%llu", first ? "" : ",", names[i],
                    (unsigned long long)n->error_codes[i]);
            first = false;
        }
    fprintf(f, "}}");
}

void sc_json_server(FILE *f, const struct lt_config *cfg, const struct lt_proc_sample *before,
                    const struct lt_proc_sample *a, const struct lt_proc_sample *b,
                    const char *const *unit_names, const double *units, size_t n_units)
{
    if (cfg->n_server_pids) {
        fprintf(f, ",\"server\":{\"pids\":[");
        for (size_t i = 0; i < cfg->n_server_pids; i++)
            fprintf(f, "%s%d", i ? "," : "", (int)cfg->server_pids[i]);
        bool ok = before->ok && a->ok && b->ok;
        double cpu_s = ok ? lt_ticks_to_us(b->cpu_ticks - a->cpu_ticks) / 1e6 : 0;
        double wall = (double)(b->at_ns - a->at_ns) / 1e9;
        fprintf(f, "],\"sampled\":%s,\"cpu_s\":%.3f,\"window_s\":%.3f,\"cpu_util\":%.3f",
                ok ? "true" : "false", cpu_s, wall, wall > 0 ? cpu_s / wall : 0);
        for (size_t i = 0; i < n_units; i++) {
            if (units[i] > 0)
                fprintf(f, ",\"cpu_us_per_%s\":%.1f", unit_names[i], cpu_s * 1e6 / units[i]);
            else
                fprintf(f, ",\"cpu_us_per_%s\":null", unit_names[i]);
        }
        fprintf(f, ",\"rss_kb_before\":%llu,\"rss_kb_start\":%llu,\"rss_kb_end\":%llu}",
                (unsigned long long)before->rss_kb, (unsigned long long)a->rss_kb,
                (unsigned long long)b->rss_kb);
    }
    if (cfg->n_broker_pids) {
        bool ok = a->broker_ok && b->broker_ok;
        double cpu_s = ok ? lt_ticks_to_us(b->broker_cpu_ticks - a->broker_cpu_ticks) / 1e6 : 0;
        fprintf(f, ",\"broker\":{\"sampled\":%s,\"cpu_s\":%.3f,\"rss_kb_end\":%llu}",
                ok ? "true" : "false", cpu_s, (unsigned long long)b->broker_rss_kb);
    }
    double wall = (double)(b->at_ns - a->at_ns) / 1e9;
    long hz = sysconf(_SC_CLK_TCK);
    fprintf(f, ",\"machine\":{\"busy_cores\":%.2f}",
            wall > 0 ? (double)(b->machine_busy_ticks - a->machine_busy_ticks) /
                           (double)(hz > 0 ? hz : 100) / wall
                     : 0.0);
}

void sc_emit(const struct lt_config *cfg, void (*fn)(FILE *f, const void *arg), const void *arg)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&buf, &len);
    if (!m)
        return;
    fn(m, arg);
    fputc('\n', m);
    fclose(m);
    fwrite(buf, 1, len, stdout);
    fflush(stdout);
    if (cfg->json_path) {
        FILE *f = fopen(cfg->json_path, "a");
        if (f) {
            fwrite(buf, 1, len, f);
            fclose(f);
        } else {
            fprintf(stderr, "rtgate-load: cannot append to %s: %s\n", cfg->json_path,
                    strerror(errno));
        }
    }
    free(buf);
}

/* ------------------------------------------------------------------ */
/* The scenarios' presets and checks (their options are in options.c's table) */

bool lt_scen_own(enum lt_scenario s)
{
    return s == LT_SC_PRESENCE || s == LT_SC_CHURN || s == LT_SC_STORM;
}

bool lt_scen_check(struct lt_config *cfg)
{
    struct lt_scen_config *sc = &cfg->sc;
    uint32_t total = 0;
    if (cfg->publishers || cfg->target != LT_TGT_RTGATE || cfg->pub_via != LT_PV_WS) {
        fprintf(stderr, "rtgate-load: %s speaks rtgate's protocol and has no publishers\n",
                lt_scenario_name(cfg->scenario));
        return false;
    }
    if (sc->url2[0]) {
        if (cfg->scenario != LT_SC_PRESENCE) {
            fprintf(stderr, "rtgate-load: --url2 is for --scenario presence\n");
            return false;
        }
        /* lt_parse_url fills the main target's fields: parse into a copy. */
        struct lt_config *tmp = malloc(sizeof *tmp);
        char err[256];
        if (!tmp)
            return false;
        *tmp = *cfg;
        bool ok = lt_parse_url(tmp, sc->url2, err, sizeof err);
        if (ok) {
            memcpy(&sc->dst2, &tmp->dst, sizeof sc->dst2);
            sc->dst2_len = tmp->dst_len;
            strcpy(sc->host_header2, tmp->host_header);
            strcpy(sc->path2, tmp->path);
            strcpy(sc->host2, tmp->host);
            sc->tls2 = tmp->tls;
        } else {
            fprintf(stderr, "rtgate-load: --url2: %s\n", err);
        }
        free(tmp);
        if (!ok)
            return false;
    }
    switch (cfg->scenario) {
    case LT_SC_PRESENCE:
        if (cfg->codec != LT_CODEC_JSON) {
            fprintf(stderr, "rtgate-load: presence speaks rtgate.v1.json only\n");
            return false;
        }
        if (!sc->setters)
            sc->setters = cfg->subs ? cfg->subs : 1000;
        if (sc->set_rate == 0)
            sc->set_rate = cfg->rate > 0 ? cfg->rate : 2000;
        bool queriers_given = lt_option_given(cfg, "--queriers");
        bool query_rate_given = lt_option_given(cfg, "--query-rate");
        if (!queriers_given)
            sc->queriers = query_rate_given && sc->query_rate == 0 ? 0 : 10;
        if (!query_rate_given)
            sc->query_rate = sc->queriers ? 200 : 0;
        if (sc->query_rate > 0 && sc->queriers == 0) {
            fprintf(stderr, "rtgate-load: --query-rate needs --queriers > 0\n");
            return false;
        }
        if (sc->radius_m == 0)
            sc->radius_m = 500;
        if (sc->near_limit == 0)
            sc->near_limit = 50;
        if (sc->watch_radius_m == 0)
            sc->watch_radius_m = 1000;
        if (sc->area_km == 0)
            sc->area_km = 20;
        if (sc->center_lat == 0 && sc->center_lon == 0) {
            sc->center_lat = 52.52;
            sc->center_lon = 13.405;
        }
        if (sc->step_m == 0)
            sc->step_m = 25;
        if (!sc->space[0])
            strcpy(sc->space, "load");
        total = sc->setters + sc->queriers + sc->watchers;
        break;
    case LT_SC_CHURN:
        if (cfg->rate == 0)
            cfg->rate = 200;
        if (!cfg->channels)
            cfg->channels = 100;
        total = cfg->max_handshaking; /* the pool of connections in flight */
        break;
    case LT_SC_STORM:
        if (!cfg->subs)
            cfg->subs = 1000;
        if (!cfg->channels)
            cfg->channels = 100;
        if (sc->hold_s == 0)
            sc->hold_s = 1;
        total = cfg->subs;
        break;
    default:
        return false;
    }
    if (total > LT_SCEN_MAX_CONNS) {
        fprintf(stderr, "rtgate-load: %s runs in one process: at most %u connections\n",
                lt_scenario_name(cfg->scenario), LT_SCEN_MAX_CONNS);
        return false;
    }
    if (cfg->timeout_s == 0)
        cfg->timeout_s = (double)total / cfg->connect_rate + cfg->setup_timeout_s + cfg->warmup_s +
                         cfg->duration_s + cfg->drain_s + 60;
    return true;
}

int lt_scen_run(const struct lt_config *cfg)
{
    switch (cfg->scenario) {
    case LT_SC_PRESENCE:
        return lt_scen_presence(cfg);
    case LT_SC_CHURN:
        return lt_scen_churn(cfg);
    case LT_SC_STORM:
        return lt_scen_storm(cfg);
    default:
        return 2;
    }
}
