/*
 * scen_presence.c: `--scenario presence` (docs/loadtest.md). Setters walk
 * at random in a square of --area-km and send geo.set at a fixed total
 * rate, each with meta {"t":<slot time, ns>}; queriers send geo.near at a
 * fixed total rate from random points; watchers hold one geo.watch each
 * and take the latency of every event from the member's meta.t. With
 * --url2 the queriers and watchers are on the second gateway, so the
 * events measure presence crossing nodes over NATS.
 */
#define _GNU_SOURCE /* memmem */
#include "scen.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define PREQ       16 /* requests outstanding per connection */
#define START_LEAD (100 * LT_NS_PER_MS)
#define M_PER_DEG  111320.0
#define PI         3.14159265358979323846

enum prole { P_SET = 0, P_QUERY, P_WATCH };

struct preq {
    int64_t id; /* 0 = free */
    uint64_t t; /* slot time */
};

struct presence {
    const struct lt_config *cfg;
    struct sc_engine e;
    uint32_t S, Q, K;
    double *lat, *lon; /* per setter */
    uint64_t *backoff_until;
    struct preq *req; /* PREQ per connection */
    double lat_lo, lat_hi, lon_lo, lon_hi;
    uint32_t resolved;
    uint32_t watch_pending;
    bool setup_done;
    uint64_t t0, t_measure, t_end, t_drain;
    uint64_t set_slot, query_slot;
    uint64_t inflight;
    struct lt_proc_sample before, after_setup, measure_start, end;
    double time_to_connect_s;
    /* counters */
    uint64_t sets_sent, sets_ok, sets_ok_measured, sets_429, sets_err;
    uint64_t queries_sent, queries_ok, queries_ok_measured, queries_429, queries_err;
    uint64_t near_members, near_partial;
    uint64_t skipped_backoff, skipped_stalled, skipped_down;
    uint64_t watches_ok, watch_err, watch_initial_members;
    uint64_t events[3], events_measured, events_no_t, events_other;
    uint64_t no_reply, foreign;
    uint64_t lag_max_ns;
    struct lt_hist set_lat, near_lat, event_lat;
};

static enum prole role_of(const struct presence *p, uint32_t i)
{
    return i < p->S ? P_SET : i < p->S + p->Q ? P_QUERY : P_WATCH;
}

/* ------------------------------------------------------------------ */
/* Pure pieces (self-tested) */

static const uint8_t *find(const uint8_t *h, size_t hl, const char *needle)
{
    size_t nl = strlen(needle);
    return nl <= hl ? memmem(h, hl, needle, nl) : NULL;
}

bool sc_geo_event(const uint8_t *raw, size_t len, int *kind, bool *has_t, uint64_t *t)
{
    const uint8_t *p = find(raw, len, "\"type\":\"geo\"");
    if (!p)
        return false;
    const uint8_t *ev = find(raw, len, "\"event\":\"");
    *kind = -1;
    if (ev) {
        size_t off = (size_t)(ev - raw) + 9;
        static const char *kinds[3] = {"join\"", "move\"", "leave\""};
        for (int k = 0; k < 3; k++)
            if (find(raw + off, len - off < 8 ? len - off : 8, kinds[k]) == raw + off)
                *kind = k;
    }
    *has_t = false;
    const uint8_t *m = find(raw, len, "\"meta\":{\"t\":");
    if (m) {
        size_t i = (size_t)(m - raw) + 12;
        uint64_t v = 0;
        size_t digits = 0;
        while (i < len && raw[i] >= '0' && raw[i] <= '9' && digits < 20) {
            v = v * 10 + (uint64_t)(raw[i] - '0');
            i++;
            digits++;
        }
        if (digits) {
            *has_t = true;
            *t = v;
        }
    }
    return *kind >= 0;
}

uint32_t sc_count_members(const uint8_t *raw, size_t len)
{
    uint32_t n = 0;
    const uint8_t *p = raw, *end = raw + len;
    while (p < end) {
        const uint8_t *q = find(p, (size_t)(end - p), "\"client\":");
        if (!q)
            break;
        n++;
        p = q + 9;
    }
    return n;
}

void sc_enc_geo_set(struct lt_out *o, int64_t id, const char *space, double lat, double lon,
                    uint64_t t)
{
    size_t room = o->cap - o->len;
    int n = snprintf((char *)o->p + o->len, room,
                     "{\"type\":\"geo.set\",\"id\":%lld,\"space\":\"%s\",\"lat\":%.6f,"
                     "\"lon\":%.6f,\"meta\":{\"t\":%llu}}\n",
                     (long long)id, space, lat, lon, (unsigned long long)t);
    if (n < 0 || (size_t)n >= room)
        o->overflow = true;
    else
        o->len += (size_t)n;
}

static void enc_circle(struct lt_out *o, const char *type, int64_t id, const char *space,
                       double lat, double lon, double radius_m, uint32_t limit)
{
    size_t room = o->cap - o->len;
    int n = snprintf((char *)o->p + o->len, room,
                     "{\"type\":\"%s\",\"id\":%lld,\"space\":\"%s\",\"lat\":%.6f,\"lon\":%.6f,"
                     "\"radius_m\":%.1f,\"limit\":%u}\n",
                     type, (long long)id, space, lat, lon, radius_m, limit);
    if (n < 0 || (size_t)n >= room)
        o->overflow = true;
    else
        o->len += (size_t)n;
}

static double reflect(double v, double lo, double hi)
{
    if (v < lo)
        v = lo + (lo - v);
    if (v > hi)
        v = hi - (v - hi);
    return v < lo ? lo : v > hi ? hi : v;
}

void sc_walk(double *lat, double *lon, double angle, double step_m, double lat_lo, double lat_hi,
             double lon_lo, double lon_hi)
{
    double dlat = step_m * cos(angle) / M_PER_DEG;
    double dlon = step_m * sin(angle) / (M_PER_DEG * cos(*lat * PI / 180));
    *lat = reflect(*lat + dlat, lat_lo, lat_hi);
    *lon = reflect(*lon + dlon, lon_lo, lon_hi);
}

/* ------------------------------------------------------------------ */
/* Requests */

/* A free request slot for connection i, or NULL (the connection is stalled). */
static struct preq *slot_for(struct presence *p, struct sc_conn *c)
{
    struct preq *r = &p->req[(size_t)c->index * PREQ + (uint64_t)c->next_id % PREQ];
    return r->id ? NULL : r;
}

static void track(struct presence *p, struct sc_conn *c, struct preq *r, uint64_t t)
{
    r->id = c->next_id++;
    r->t = t;
    p->inflight++;
}

static void random_point(struct presence *p, double *lat, double *lon)
{
    *lat = p->lat_lo + (p->lat_hi - p->lat_lo) * sc_rand01(&p->e);
    *lon = p->lon_lo + (p->lon_hi - p->lon_lo) * sc_rand01(&p->e);
}

/* May this connection send a request for slot time t now? Counts why not. */
static struct preq *usable(struct presence *p, struct sc_conn *c)
{
    if (c->link.state != LT_CONN_READY) {
        p->skipped_down++;
        return NULL;
    }
    if (p->backoff_until[c->index] > p->e.net.now) {
        p->skipped_backoff++;
        return NULL;
    }
    struct preq *r = slot_for(p, c);
    if (!r)
        p->skipped_stalled++;
    return r;
}

static void send_set(struct presence *p, uint32_t s, uint64_t t)
{
    struct sc_conn *c = &p->e.conns[s];
    struct preq *r = usable(p, c);
    if (!r)
        return;
    const struct lt_scen_config *sc = &p->cfg->sc;
    sc_walk(&p->lat[s], &p->lon[s], 2 * PI * sc_rand01(&p->e), sc->step_m, p->lat_lo, p->lat_hi,
            p->lon_lo, p->lon_hi);
    struct lt_out o = sc_tx(&p->e);
    sc_enc_geo_set(&o, c->next_id, sc->space, p->lat[s], p->lon[s], t);
    track(p, c, r, t);
    p->sets_sent++;
    sc_send(&p->e, c, o.len);
}

static void send_query(struct presence *p, uint32_t q, uint64_t t)
{
    struct sc_conn *c = &p->e.conns[p->S + q];
    struct preq *r = usable(p, c);
    if (!r)
        return;
    const struct lt_scen_config *sc = &p->cfg->sc;
    double lat, lon;
    random_point(p, &lat, &lon);
    struct lt_out o = sc_tx(&p->e);
    enc_circle(&o, "geo.near", c->next_id, sc->space, lat, lon, sc->radius_m, sc->near_limit);
    track(p, c, r, t);
    p->queries_sent++;
    sc_send(&p->e, c, o.len);
}

static void send_watch(struct presence *p, struct sc_conn *c)
{
    const struct lt_scen_config *sc = &p->cfg->sc;
    struct preq *r = slot_for(p, c);
    if (!r)
        return;
    double lat, lon;
    random_point(p, &lat, &lon);
    struct lt_out o = sc_tx(&p->e);
    /* limit 1000: the initial member list is not what is measured */
    enc_circle(&o, "geo.watch", c->next_id, sc->space, lat, lon, sc->watch_radius_m, 1000);
    track(p, c, r, p->e.net.now);
    p->watch_pending++;
    sc_send(&p->e, c, o.len);
}

/* ------------------------------------------------------------------ */
/* Engine callbacks */

static void on_ready(struct sc_engine *e, struct sc_conn *c)
{
    struct presence *p = e->arg;
    p->resolved++;
    if (role_of(p, c->index) == P_WATCH)
        send_watch(p, c);
}

static void on_failed(struct sc_engine *e, struct sc_conn *c)
{
    struct presence *p = e->arg;
    (void)c;
    p->resolved++;
}

static void on_lost(struct sc_engine *e, struct sc_conn *c)
{
    struct presence *p = e->arg;
    struct preq *r = &p->req[(size_t)c->index * PREQ];
    for (int i = 0; i < PREQ; i++)
        if (r[i].id) {
            r[i].id = 0;
            p->inflight--;
            p->no_reply++;
            if (role_of(p, c->index) == P_WATCH)
                p->watch_pending--;
        }
}

static bool measured(const struct presence *p, uint64_t t)
{
    return t >= p->t_measure && t < p->t_end && p->t_measure;
}

static void on_reply(struct presence *p, struct sc_conn *c, const struct lt_smsg *m,
                     const uint8_t *raw, size_t len)
{
    struct preq *r = m->has_id ? &p->req[(size_t)c->index * PREQ + (uint64_t)m->id % PREQ] : NULL;
    if (!r || r->id != m->id || m->id < 3) {
        p->foreign++;
        return;
    }
    r->id = 0;
    p->inflight--;
    uint64_t lat = p->e.net.now > r->t ? p->e.net.now - r->t : 0;
    enum prole role = role_of(p, c->index);
    if (m->ok != 1) {
        p->e.n.error_codes[lt_error_code_index(m->error_code)]++;
        bool limited = m->error_code == 429;
        if (limited) {
            uint64_t after = m->retry_after_ms > 0 ? (uint64_t)m->retry_after_ms : 100;
            uint64_t until = p->e.net.now + after * LT_NS_PER_MS;
            if (until > p->backoff_until[c->index])
                p->backoff_until[c->index] = until;
        }
        if (role == P_SET)
            *(limited ? &p->sets_429 : &p->sets_err) += 1;
        else if (role == P_QUERY)
            *(limited ? &p->queries_429 : &p->queries_err) += 1;
        else {
            p->watch_err++;
            p->watch_pending--;
        }
        return;
    }
    switch (role) {
    case P_SET:
        p->sets_ok++;
        if (measured(p, r->t)) {
            p->sets_ok_measured++;
            lt_hist_record(&p->set_lat, lat);
        }
        break;
    case P_QUERY:
        p->queries_ok++;
        p->near_members += sc_count_members(raw, len);
        if (find(raw, len, "\"partial\":true"))
            p->near_partial++;
        if (measured(p, r->t)) {
            p->queries_ok_measured++;
            lt_hist_record(&p->near_lat, lat);
        }
        break;
    case P_WATCH:
        p->watches_ok++;
        p->watch_pending--;
        p->watch_initial_members += sc_count_members(raw, len);
        break;
    }
}

static void on_msg(struct sc_engine *e, struct sc_conn *c, const struct lt_smsg *m,
                   const uint8_t *raw, size_t len)
{
    struct presence *p = e->arg;
    if (m->type == LT_M_REPLY) {
        on_reply(p, c, m, raw, len);
        return;
    }
    int kind;
    bool has_t;
    uint64_t t = 0;
    if (m->type == LT_M_OTHER && sc_geo_event(raw, len, &kind, &has_t, &t)) {
        p->events[kind]++;
        if (!has_t)
            p->events_no_t++;
        else if (measured(p, t)) {
            p->events_measured++;
            lt_hist_record(&p->event_lat, e->net.now > t ? e->net.now - t : 0);
        }
        return;
    }
    if (m->type != LT_M_PONG)
        p->events_other++;
}

/* ------------------------------------------------------------------ */
/* The run */

static void schedule(struct presence *p)
{
    const struct lt_scen_config *sc = &p->cfg->sc;
    uint64_t now = p->e.net.now;
    for (;;) {
        uint64_t t = p->t0 + (uint64_t)((double)p->set_slot * 1e9 / sc->set_rate);
        if (t > now || t >= p->t_end)
            break;
        if (now - t > p->lag_max_ns)
            p->lag_max_ns = now - t;
        send_set(p, (uint32_t)(p->set_slot % p->S), t);
        p->set_slot++;
    }
    while (p->Q && sc->query_rate > 0) {
        uint64_t t = p->t0 + (uint64_t)((double)p->query_slot * 1e9 / sc->query_rate);
        if (t > now || t >= p->t_end)
            break;
        if (now - t > p->lag_max_ns)
            p->lag_max_ns = now - t;
        send_query(p, (uint32_t)(p->query_slot % p->Q), t);
        p->query_slot++;
    }
}

static uint64_t next_due(const struct presence *p)
{
    const struct lt_scen_config *sc = &p->cfg->sc;
    uint64_t t = p->t0 + (uint64_t)((double)p->set_slot * 1e9 / sc->set_rate);
    if (p->Q && sc->query_rate > 0) {
        uint64_t q = p->t0 + (uint64_t)((double)p->query_slot * 1e9 / sc->query_rate);
        if (q < t)
            t = q;
    }
    return t < p->t_end ? t : p->t_end;
}

static uint64_t errors_of(const struct presence *p)
{
    const struct sc_counts *n = &p->e.n;
    return n->net.connect_errors + n->net.handshake_failures + sc_setup_errors(n) +
           n->net.server_closes + n->net.protocol_errors + n->error_msgs + p->sets_err +
           p->queries_err + p->watch_err + p->no_reply + p->foreign;
}

static bool verdict(const struct presence *p)
{
    uint32_t total = p->S + p->Q + p->K;
    return errors_of(p) == 0 && p->e.n.net.ready == total && p->sets_ok_measured > 0 &&
           (p->Q == 0 || p->queries_ok_measured > 0) && p->watches_ok == p->K;
}

static void report(FILE *f, const void *arg)
{
    const struct presence *p = arg;
    const struct lt_config *cfg = p->cfg;
    const struct lt_scen_config *sc = &cfg->sc;
    double win = cfg->duration_s;
    fprintf(f, "{");
    if (cfg->label)
        fprintf(f, "\"label\":\"%s\",", cfg->label);
    fprintf(f,
            "\"scenario\":\"presence\",\"url\":\"%s\",\"url2\":%s%s%s,\"space\":\"%s\","
            "\"setters\":%u,\"queriers\":%u,\"watchers\":%u,\"set_rate_target\":%.1f,"
            "\"query_rate_target\":%.1f,\"area_km\":%.2f,\"center\":[%.5f,%.5f],"
            "\"step_m\":%.1f,\"radius_m\":%.1f,\"near_limit\":%u,\"watch_radius_m\":%.1f,"
            "\"duration_s\":%.3f,\"warmup_s\":%.3f,\"connected\":%llu,\"time_to_connect_s\":%.3f",
            cfg->url, sc->url2[0] ? "\"" : "", sc->url2[0] ? sc->url2 : "null",
            sc->url2[0] ? "\"" : "", sc->space, p->S, p->Q, p->K, sc->set_rate, sc->query_rate,
            sc->area_km, sc->center_lat, sc->center_lon, sc->step_m, sc->radius_m, sc->near_limit,
            sc->watch_radius_m, cfg->duration_s, cfg->warmup_s,
            (unsigned long long)p->e.n.net.ready, p->time_to_connect_s);
    fprintf(f,
            ",\"sets\":{\"sent\":%llu,\"ok\":%llu,\"rate_limited\":%llu,\"errors\":%llu,"
            "\"per_s\":%.1f}",
            (unsigned long long)p->sets_sent, (unsigned long long)p->sets_ok,
            (unsigned long long)p->sets_429, (unsigned long long)p->sets_err,
            (double)p->sets_ok_measured / win);
    sc_json_hist(f, "set_latency_us", &p->set_lat);
    fprintf(f,
            ",\"queries\":{\"sent\":%llu,\"ok\":%llu,\"rate_limited\":%llu,\"errors\":%llu,"
            "\"per_s\":%.1f,\"members_mean\":%.2f,\"partial\":%llu}",
            (unsigned long long)p->queries_sent, (unsigned long long)p->queries_ok,
            (unsigned long long)p->queries_429, (unsigned long long)p->queries_err,
            (double)p->queries_ok_measured / win,
            p->queries_ok ? (double)p->near_members / (double)p->queries_ok : 0,
            (unsigned long long)p->near_partial);
    sc_json_hist(f, "near_latency_us", &p->near_lat);
    fprintf(f,
            ",\"watch\":{\"ok\":%llu,\"errors\":%llu,\"initial_members\":%llu,\"join\":%llu,"
            "\"move\":%llu,\"leave\":%llu,\"events_per_s\":%.1f,\"no_meta_t\":%llu,"
            "\"cross_node\":%s}",
            (unsigned long long)p->watches_ok, (unsigned long long)p->watch_err,
            (unsigned long long)p->watch_initial_members, (unsigned long long)p->events[0],
            (unsigned long long)p->events[1], (unsigned long long)p->events[2],
            (double)p->events_measured / win, (unsigned long long)p->events_no_t,
            sc->url2[0] ? "true" : "false");
    sc_json_hist(f, "event_latency_us", &p->event_lat);
    fprintf(f,
            ",\"detail\":{\"skipped_backoff\":%llu,\"skipped_stalled\":%llu,"
            "\"skipped_down\":%llu,\"no_reply\":%llu,\"foreign\":%llu,\"other_msgs\":%llu,"
            "\"lag_max_us\":%.1f}",
            (unsigned long long)p->skipped_backoff, (unsigned long long)p->skipped_stalled,
            (unsigned long long)p->skipped_down, (unsigned long long)p->no_reply,
            (unsigned long long)p->foreign, (unsigned long long)p->events_other,
            (double)p->lag_max_ns / 1e3);
    sc_json_hist(f, "connect_us", &p->e.setup);
    sc_json_counts(f, &p->e.n);
    static const char *const units[] = {"request", "set", "query"};
    double n_units[] = {(double)(p->sets_ok_measured + p->queries_ok_measured),
                        (double)p->sets_ok_measured, (double)p->queries_ok_measured};
    sc_json_server(f, cfg, &p->before, &p->measure_start, &p->end, units, n_units, 3);
    fprintf(f, ",\"errors\":%llu,\"ok\":%s}", (unsigned long long)errors_of(p),
            verdict(p) ? "true" : "false");
}

static void summary(const struct presence *p)
{
    fprintf(stderr,
            "rtgate-load: presence: %llu/%u connected; sets %.0f/s (429: %llu), p50 %.0f us p99 "
            "%.0f us; near %.0f/s, p50 %.0f us p99 %.0f us, %.1f members; watch events %.0f/s, "
            "p50 %.0f us p99 %.0f us; errors %llu\n",
            (unsigned long long)p->e.n.net.ready, p->S + p->Q + p->K,
            (double)p->sets_ok_measured / p->cfg->duration_s, (unsigned long long)p->sets_429,
            sc_us(&p->set_lat, 50), sc_us(&p->set_lat, 99),
            (double)p->queries_ok_measured / p->cfg->duration_s, sc_us(&p->near_lat, 50),
            sc_us(&p->near_lat, 99),
            p->queries_ok ? (double)p->near_members / (double)p->queries_ok : 0,
            (double)p->events_measured / p->cfg->duration_s, sc_us(&p->event_lat, 50),
            sc_us(&p->event_lat, 99), (unsigned long long)errors_of(p));
    if (p->sets_429 || p->queries_429)
        fprintf(stderr,
                "rtgate-load: warning: %llu geo.set and %llu geo.near were rate limited (429): "
                "%.1f sets/s per setter and %.1f queries/s per querier; raise the gateway's "
                "--geo-rate/--geo-burst (sets) and --msg-rate/--msg-burst, or add "
                "--setters/--queriers\n",
                (unsigned long long)p->sets_429, (unsigned long long)p->queries_429,
                p->cfg->sc.set_rate / p->S, p->Q ? p->cfg->sc.query_rate / p->Q : 0.0);
}

static bool presence_init(struct presence *p, const struct lt_config *cfg)
{
    const struct lt_scen_config *sc = &cfg->sc;
    memset(p, 0, sizeof *p);
    p->cfg = cfg;
    p->S = sc->setters;
    p->Q = sc->queriers;
    p->K = sc->watchers;
    uint32_t total = p->S + p->Q + p->K;
    static const struct sc_ops ops = {
        .on_ready = on_ready, .on_failed = on_failed, .on_lost = on_lost, .on_msg = on_msg};
    if (!sc_init(&p->e, cfg, total, &ops, p, true))
        return false;
    p->lat = calloc(p->S, sizeof *p->lat);
    p->lon = calloc(p->S, sizeof *p->lon);
    p->backoff_until = calloc(total, sizeof *p->backoff_until);
    p->req = calloc((size_t)total * PREQ, sizeof *p->req);
    if (!p->lat || !p->lon || !p->backoff_until || !p->req)
        return false;
    double half_lat = sc->area_km * 500 / M_PER_DEG;
    double half_lon = sc->area_km * 500 / (M_PER_DEG * cos(sc->center_lat * PI / 180));
    p->lat_lo = sc->center_lat - half_lat;
    p->lat_hi = sc->center_lat + half_lat;
    p->lon_lo = sc->center_lon - half_lon;
    p->lon_hi = sc->center_lon + half_lon;
    for (uint32_t i = 0; i < p->S; i++)
        random_point(p, &p->lat[i], &p->lon[i]);
    for (uint32_t i = 0; i < total; i++)
        if (sc->url2[0] && role_of(p, i) != P_SET)
            sc_place(&p->e, &p->e.conns[i], 1);
    lt_hist_init(&p->set_lat);
    lt_hist_init(&p->near_lat);
    lt_hist_init(&p->event_lat);
    return true;
}

static void presence_free(struct presence *p)
{
    sc_free(&p->e);
    free(p->lat);
    free(p->lon);
    free(p->backoff_until);
    free(p->req);
}

int lt_scen_presence(const struct lt_config *cfg)
{
    struct presence *p = malloc(sizeof *p);
    if (!p)
        return 1;
    if (!presence_init(p, cfg) || !sc_raise_fd_limit(p->S + p->Q + p->K + 64)) {
        fprintf(stderr, "rtgate-load: presence: out of memory or fds\n");
        presence_free(p);
        free(p);
        return 1;
    }
    struct sc_engine *e = &p->e;
    uint32_t total = p->S + p->Q + p->K;
    uint64_t start = lt_now_ns();
    uint64_t deadline = start + (uint64_t)(cfg->timeout_s * 1e9);
    lt_proc_sample(cfg, &p->before);
    /* Set-up: open at --connect-rate, at most --max-handshaking at once. */
    uint32_t opened = 0;
    uint64_t interval = (uint64_t)(1e9 / cfg->connect_rate);
    uint64_t next_open = start;
    while ((p->resolved < total || p->watch_pending) && e->net.now < deadline) {
        while (opened < total && e->net.now >= next_open && sc_in_setup(e) < cfg->max_handshaking) {
            sc_open(e, &e->conns[opened++]);
            next_open += interval;
        }
        sc_poll(e, opened < total ? next_open : e->net.now + 50 * LT_NS_PER_MS);
    }
    p->time_to_connect_s = (double)(e->net.now - start) / 1e9;
    lt_proc_sample(cfg, &p->after_setup);
    if (cfg->verbose >= 0)
        fprintf(stderr, "rtgate-load: %llu/%u connections ready in %.2f s; running\n",
                (unsigned long long)e->n.net.ready, total, p->time_to_connect_s);
    p->t0 = lt_now_ns() + START_LEAD;
    p->t_measure = p->t0 + (uint64_t)(cfg->warmup_s * 1e9);
    p->t_end = p->t_measure + (uint64_t)(cfg->duration_s * 1e9);
    p->t_drain = p->t_end + (uint64_t)(cfg->drain_s * 1e9);
    bool sampled = false;
    while (e->net.now < p->t_end && e->net.now < deadline) {
        schedule(p);
        if (!sampled && e->net.now >= p->t_measure) {
            lt_proc_sample(cfg, &p->measure_start);
            sampled = true;
        }
        uint64_t until = next_due(p);
        if (!sampled && p->t_measure < until)
            until = p->t_measure;
        sc_poll(e, until);
    }
    if (!sampled)
        lt_proc_sample(cfg, &p->measure_start);
    /* Drain: the replies of the last requests, and events still on their way. */
    uint64_t quiet_until = e->net.now + 200 * LT_NS_PER_MS;
    while ((p->inflight || e->net.now < quiet_until) && e->net.now < p->t_drain &&
           e->net.now < deadline)
        sc_poll(e, p->inflight ? p->t_drain : quiet_until);
    lt_proc_sample(cfg, &p->end);
    p->no_reply += p->inflight;
    p->inflight = 0;
    sc_emit(cfg, report, p);
    if (cfg->verbose >= 0)
        summary(p);
    int rc = verdict(p) ? 0 : 1;
    for (uint32_t i = 0; i < total; i++)
        sc_close(e, &e->conns[i]);
    presence_free(p);
    free(p);
    return rc;
}
