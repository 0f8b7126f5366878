/*
 * scen_churn.c: `--scenario churn` and `--scenario storm` (docs/loadtest.md),
 * the two connection life-cycle scenarios.
 *
 * churn: at --rate cycles per second a connection is opened, upgraded,
 * `connect`ed, subscribed to "<prefix>.c<k>" and closed by the client as
 * soon as the sub reply is in. At most --max-handshaking cycles are in
 * flight; a due cycle with none free is skipped and counted. A handshake
 * refused with 429/503 is a failure here (not retried): churn measures what
 * the gateway takes at a fixed rate.
 *
 * storm: --subs connections are set up and subscribed, held for --hold
 * seconds, then all closed by the client at once and reconnected as fast as
 * possible (or at --reconnect-rate), refusals retried after Retry-After.
 */
#include "scen.h"

#include <stdlib.h>
#include <string.h>

#define START_LEAD (100 * LT_NS_PER_MS)

/* ------------------------------------------------------------------ */
/* churn */

struct churn {
    const struct lt_config *cfg;
    struct sc_engine e;
    uint32_t *free_list;
    uint32_t n_free;
    uint64_t t0, t_measure, t_end;
    uint64_t slot;
    uint64_t started, started_measured, completed, completed_measured, failed, failed_measured;
    uint64_t skipped_pool, lost;
    uint64_t lag_max_ns;
    struct lt_hist cycle; /* cycle start (slot time) to sub reply, measured cycles */
    struct lt_proc_sample before, measure_start, end;
};

static bool churn_measured(const struct churn *ch, uint64_t t)
{
    return t >= ch->t_measure && t < ch->t_end;
}

static void churn_release(struct churn *ch, struct sc_conn *c)
{
    ch->free_list[ch->n_free++] = c->index;
}

static void churn_ready(struct sc_engine *e, struct sc_conn *c)
{
    struct churn *ch = e->arg;
    ch->completed++;
    if (churn_measured(ch, c->link.cycle_ns)) {
        ch->completed_measured++;
        lt_hist_record(&ch->cycle, e->net.now - c->link.cycle_ns);
    }
    sc_close(e, c);
    churn_release(ch, c);
}

static void churn_failed(struct sc_engine *e, struct sc_conn *c)
{
    struct churn *ch = e->arg;
    ch->failed++;
    if (churn_measured(ch, c->link.cycle_ns))
        ch->failed_measured++;
    churn_release(ch, c);
}

static void churn_lost(struct sc_engine *e, struct sc_conn *c)
{
    struct churn *ch = e->arg;
    ch->lost++;
    churn_release(ch, c);
}

static uint64_t churn_errors(const struct churn *ch)
{
    const struct sc_counts *n = &ch->e.n;
    return ch->failed + ch->lost + n->net.protocol_errors + n->error_msgs;
}

static bool churn_ok(const struct churn *ch)
{
    return churn_errors(ch) == 0 && ch->completed_measured > 0 && ch->skipped_pool == 0;
}

static void churn_report(FILE *f, const void *arg)
{
    const struct churn *ch = arg;
    const struct lt_config *cfg = ch->cfg;
    fprintf(f, "{");
    if (cfg->label)
        fprintf(f, "\"label\":\"%s\",", cfg->label);
    fprintf(f,
            "\"scenario\":\"churn\",\"url\":\"%s\",\"subprotocol\":\"%s\",\"rate_target\":%.1f,"
            "\"channels\":%u,\"max_in_flight\":%u,\"duration_s\":%.3f,\"warmup_s\":%.3f,"
            "\"started\":%llu,\"completed\":%llu,\"failed\":%llu,\"skipped_pool\":%llu,"
            "\"lost\":%llu,\"measured_started\":%llu,\"measured_completed\":%llu,"
            "\"measured_failed\":%llu,\"rate_achieved\":%.1f,\"lag_max_us\":%.1f",
            cfg->url, cfg->codec == LT_CODEC_JSON ? "json" : "msgpack", cfg->rate, cfg->channels,
            cfg->max_handshaking, cfg->duration_s, cfg->warmup_s, (unsigned long long)ch->started,
            (unsigned long long)ch->completed, (unsigned long long)ch->failed,
            (unsigned long long)ch->skipped_pool, (unsigned long long)ch->lost,
            (unsigned long long)ch->started_measured, (unsigned long long)ch->completed_measured,
            (unsigned long long)ch->failed_measured,
            (double)ch->completed_measured / cfg->duration_s, (double)ch->lag_max_ns / 1e3);
    sc_json_hist(f, "setup_latency_us", &ch->cycle);
    sc_json_counts(f, &ch->e.n);
    static const char *const units[] = {"connection"};
    double n_units[] = {(double)ch->completed_measured};
    sc_json_server(f, cfg, &ch->before, &ch->measure_start, &ch->end, units, n_units, 1);
    fprintf(f, ",\"errors\":%llu,\"ok\":%s}", (unsigned long long)churn_errors(ch),
            churn_ok(ch) ? "true" : "false");
}

int lt_scen_churn(const struct lt_config *cfg)
{
    struct churn *ch = calloc(1, sizeof *ch);
    if (!ch)
        return 1;
    ch->cfg = cfg;
    uint32_t pool = cfg->max_handshaking;
    static const struct sc_ops ops = {
        .on_ready = churn_ready, .on_failed = churn_failed, .on_lost = churn_lost};
    ch->free_list = calloc(pool, sizeof *ch->free_list);
    int rc = 1;
    if (!ch->free_list || !sc_init(&ch->e, cfg, pool, &ops, ch, false) ||
        !sc_raise_fd_limit(pool + 64)) {
        fprintf(stderr, "rtgate-load: churn: out of memory or fds\n");
        goto out;
    }
    struct sc_engine *e = &ch->e;
    for (uint32_t i = 0; i < pool; i++) {
        e->conns[i].subscribe = true;
        ch->free_list[ch->n_free++] = pool - 1 - i;
    }
    lt_hist_init(&ch->cycle);
    lt_proc_sample(cfg, &ch->before);
    ch->t0 = lt_now_ns() + START_LEAD;
    ch->t_measure = ch->t0 + (uint64_t)(cfg->warmup_s * 1e9);
    ch->t_end = ch->t_measure + (uint64_t)(cfg->duration_s * 1e9);
    uint64_t t_drain = ch->t_end + (uint64_t)(cfg->drain_s * 1e9);
    uint64_t deadline = lt_now_ns() + (uint64_t)(cfg->timeout_s * 1e9);
    bool sampled = false;
    e->net.now = lt_now_ns();
    while (e->net.now < ch->t_end && e->net.now < deadline) {
        for (;;) {
            uint64_t t = ch->t0 + (uint64_t)((double)ch->slot * 1e9 / cfg->rate);
            if (t > e->net.now || t >= ch->t_end)
                break;
            ch->slot++;
            if (!ch->n_free) {
                ch->skipped_pool++;
                continue;
            }
            if (e->net.now - t > ch->lag_max_ns)
                ch->lag_max_ns = e->net.now - t;
            struct sc_conn *c = &e->conns[ch->free_list[--ch->n_free]];
            sc_open(e, c);
            c->link.cycle_ns = t; /* latency from the slot: a late tool shows, not hides */
            ch->started++;
            if (churn_measured(ch, t))
                ch->started_measured++;
        }
        if (!sampled && e->net.now >= ch->t_measure) {
            lt_proc_sample(cfg, &ch->measure_start);
            sampled = true;
        }
        uint64_t until = ch->t0 + (uint64_t)((double)ch->slot * 1e9 / cfg->rate);
        if (!sampled && ch->t_measure < until)
            until = ch->t_measure;
        if (until > ch->t_end)
            until = ch->t_end;
        sc_poll(e, until);
    }
    if (!sampled)
        lt_proc_sample(cfg, &ch->measure_start);
    while (sc_in_setup(e) && e->net.now < t_drain && e->net.now < deadline)
        sc_poll(e, t_drain);
    lt_proc_sample(cfg, &ch->end);
    sc_emit(cfg, churn_report, ch);
    if (cfg->verbose >= 0) {
        fprintf(stderr,
                "rtgate-load: churn: %.0f of %.0f connections/s set up; p50 %.0f us, p99 %.0f "
                "us; failed %llu (refused %llu), skipped %llu\n",
                (double)ch->completed_measured / cfg->duration_s, cfg->rate, sc_us(&ch->cycle, 50),
                sc_us(&ch->cycle, 99), (unsigned long long)ch->failed,
                (unsigned long long)e->n.net.handshake_refused,
                (unsigned long long)ch->skipped_pool);
        if (e->n.net.handshake_refused)
            fprintf(stderr, "rtgate-load: warning: handshakes were refused (429/503): start the "
                            "gateway with --ip-conn-rate 0 or a rate above --rate\n");
        if (ch->skipped_pool)
            fprintf(stderr,
                    "rtgate-load: warning: cycles skipped with all %u in flight: the "
                    "gateway is slower than --rate (or raise --max-handshaking)\n",
                    pool);
    }
    rc = churn_ok(ch) ? 0 : 1;
out:
    sc_free(&ch->e);
    free(ch->free_list);
    free(ch);
    return rc;
}

/* ------------------------------------------------------------------ */
/* storm */

struct storm {
    const struct lt_config *cfg;
    struct sc_engine e;
    bool stormed; /* the drop happened: callbacks count reconnects */
    uint32_t resolved, ready_initially, dropped, back, failed, lost;
    uint64_t t_drop, t_last_back;
    struct lt_hist reconnect; /* drop to subscribed again, per connection */
    struct lt_hist setup_initial;
    struct sc_counts n_initial;
    double time_to_connect_s;
    struct lt_proc_sample before, at_drop, end;
};

static void storm_ready(struct sc_engine *e, struct sc_conn *c)
{
    struct storm *s = e->arg;
    (void)c;
    s->resolved++;
    if (s->stormed) {
        s->back++;
        s->t_last_back = e->net.now;
        lt_hist_record(&s->reconnect, e->net.now - s->t_drop);
    }
}

static void storm_failed(struct sc_engine *e, struct sc_conn *c)
{
    struct storm *s = e->arg;
    (void)c;
    s->resolved++;
    if (s->stormed)
        s->failed++;
}

static void storm_lost(struct sc_engine *e, struct sc_conn *c)
{
    struct storm *s = e->arg;
    (void)c;
    s->lost++;
}

static uint64_t storm_errors(const struct storm *s)
{
    const struct sc_counts *n = &s->e.n;
    return s->failed + s->lost + n->net.protocol_errors + n->error_msgs +
           (s->ready_initially < s->cfg->subs ? s->cfg->subs - s->ready_initially : 0);
}

static bool storm_ok(const struct storm *s)
{
    return storm_errors(s) == 0 && s->back == s->dropped && s->dropped > 0;
}

static void storm_report(FILE *f, const void *arg)
{
    const struct storm *s = arg;
    const struct lt_config *cfg = s->cfg;
    fprintf(f, "{");
    if (cfg->label)
        fprintf(f, "\"label\":\"%s\",", cfg->label);
    fprintf(f,
            "\"scenario\":\"storm\",\"url\":\"%s\",\"subprotocol\":\"%s\",\"conns\":%u,"
            "\"channels\":%u,\"reconnect_rate\":%.1f,\"max_handshaking\":%u,\"hold_s\":%.3f,"
            "\"ready_initially\":%u,\"time_to_connect_s\":%.3f,\"dropped\":%u,\"back\":%u,"
            "\"failed\":%u,\"lost\":%u",
            cfg->url, cfg->codec == LT_CODEC_JSON ? "json" : "msgpack", cfg->subs, cfg->channels,
            cfg->sc.reconnect_rate, cfg->max_handshaking, cfg->sc.hold_s, s->ready_initially,
            s->time_to_connect_s, s->dropped, s->back, s->failed, s->lost);
    if (s->back == s->dropped && s->dropped)
        fprintf(f, ",\"all_back_s\":%.3f", (double)(s->t_last_back - s->t_drop) / 1e9);
    else
        fprintf(f, ",\"all_back_s\":null");
    fprintf(f, ",\"refused\":%llu,\"retries\":%llu",
            (unsigned long long)s->e.n.net.handshake_refused,
            (unsigned long long)s->e.n.net.handshake_retries);
    sc_json_hist(f, "reconnect_us", &s->reconnect);
    sc_json_hist(f, "attempt_setup_us", &s->e.setup);
    sc_json_hist(f, "initial_setup_us", &s->setup_initial);
    sc_json_counts(f, &s->e.n);
    static const char *const units[] = {"reconnect"};
    double n_units[] = {(double)s->back};
    sc_json_server(f, cfg, &s->before, &s->at_drop, &s->end, units, n_units, 1);
    fprintf(f, ",\"errors\":%llu,\"ok\":%s}", (unsigned long long)storm_errors(s),
            storm_ok(s) ? "true" : "false");
}

int lt_scen_storm(const struct lt_config *cfg)
{
    struct storm *s = calloc(1, sizeof *s);
    if (!s)
        return 1;
    s->cfg = cfg;
    uint32_t n = cfg->subs;
    static const struct sc_ops ops = {
        .on_ready = storm_ready, .on_failed = storm_failed, .on_lost = storm_lost};
    int rc = 1;
    if (!sc_init(&s->e, cfg, n, &ops, s, true) || !sc_raise_fd_limit(n + 64)) {
        fprintf(stderr, "rtgate-load: storm: out of memory or fds\n");
        goto out;
    }
    struct sc_engine *e = &s->e;
    for (uint32_t i = 0; i < n; i++)
        e->conns[i].subscribe = true;
    lt_hist_init(&s->reconnect);
    uint64_t start = lt_now_ns();
    uint64_t deadline = start + (uint64_t)(cfg->timeout_s * 1e9);
    lt_proc_sample(cfg, &s->before);

    /* 1. Everyone connected and subscribed, at --connect-rate. */
    uint32_t opened = 0;
    uint64_t interval = (uint64_t)(1e9 / cfg->connect_rate), next_open = start;
    e->net.now = start;
    while (s->resolved < n && e->net.now < deadline) {
        while (opened < n && e->net.now >= next_open && e->net.setting_up < cfg->max_handshaking) {
            sc_open(e, &e->conns[opened++]);
            next_open += interval;
        }
        sc_poll(e, opened < n ? next_open : e->net.now + 50 * LT_NS_PER_MS);
    }
    s->time_to_connect_s = (double)(e->net.now - start) / 1e9;
    s->ready_initially = (uint32_t)e->n.net.ready;
    if (cfg->verbose >= 0)
        fprintf(stderr, "rtgate-load: storm: %u/%u connected in %.2f s; holding %.1f s\n",
                s->ready_initially, n, s->time_to_connect_s, cfg->sc.hold_s);
    uint64_t hold_end = e->net.now + (uint64_t)(cfg->sc.hold_s * 1e9);
    while (e->net.now < hold_end && e->net.now < deadline)
        sc_poll(e, hold_end);

    /* 2. The drop: every ready connection closed at once by the client. */
    s->setup_initial = e->setup;
    s->n_initial = e->n;
    memset(&e->n, 0, sizeof e->n);
    lt_hist_init(&e->setup);
    lt_proc_sample(cfg, &s->at_drop);
    s->t_drop = lt_now_ns();
    e->net.now = s->t_drop;
    uint32_t *todo = calloc(n ? n : 1, sizeof *todo);
    if (!todo)
        goto out;
    for (uint32_t i = 0; i < n; i++)
        if (e->conns[i].link.state == LT_CONN_READY) {
            sc_close(e, &e->conns[i]);
            todo[s->dropped++] = i;
        }
    s->stormed = true;
    s->resolved = 0;

    /* 3. All back, as fast as allowed. */
    opened = 0;
    double rr = cfg->sc.reconnect_rate;
    uint64_t rinterval = rr > 0 ? (uint64_t)(1e9 / rr) : 0;
    next_open = s->t_drop;
    while (s->resolved < s->dropped && e->net.now < deadline) {
        while (opened < s->dropped && e->net.now >= next_open &&
               e->net.setting_up < cfg->max_handshaking) {
            sc_open(e, &e->conns[todo[opened++]]);
            e->conns[todo[opened - 1]].link.cycle_ns = s->t_drop;
            next_open += rinterval;
        }
        uint64_t until = e->net.now + 50 * LT_NS_PER_MS;
        if (opened < s->dropped && rinterval && next_open < until)
            until = next_open;
        sc_poll(e, until);
    }
    free(todo);
    lt_proc_sample(cfg, &s->end);
    sc_emit(cfg, storm_report, s);
    if (cfg->verbose >= 0) {
        fprintf(stderr,
                "rtgate-load: storm: %u/%u back in %.3f s; reconnect p50 %.1f ms, p99 %.1f ms; "
                "refused %llu, failed %u\n",
                s->back, s->dropped, (double)(s->t_last_back - s->t_drop) / 1e9,
                sc_us(&s->reconnect, 50) / 1e3, sc_us(&s->reconnect, 99) / 1e3,
                (unsigned long long)e->n.net.handshake_refused, s->failed);
    }
    rc = storm_ok(s) ? 0 : 1;
out:
    sc_free(&s->e);
    free(s);
    return rc;
}
