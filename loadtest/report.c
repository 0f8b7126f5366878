/*
 * report.c: the server's CPU and RSS from /proc, the one-line JSON result
 * and the SVG latency plot.
 */
#include "load.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* utime + stime (fields 14 and 15) of /proc/PID/stat, in clock ticks. */
static bool read_cpu(pid_t pid, uint64_t *ticks)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return false;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *p = strrchr(buf, ')'); /* the command name may hold spaces */
    if (!p)
        return false;
    p++;
    /* Fields after ')': 3 state, 4 ppid, ... 14 utime, 15 stime. */
    unsigned long long v[13];
    char state;
    if (sscanf(p, " %c %llu %llu %llu %llu %llu %llu %llu %llu %llu %llu %llu %llu", &state, &v[0],
               &v[1], &v[2], &v[3], &v[4], &v[5], &v[6], &v[7], &v[8], &v[9], &v[10], &v[11]) != 13)
        return false;
    *ticks = (uint64_t)v[10] + (uint64_t)v[11];
    return true;
}

static bool read_rss(pid_t pid, uint64_t *kb)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return false;
    bool ok = false;
    while (fgets(line, sizeof line, f)) {
        unsigned long long v;
        if (sscanf(line, "VmRSS: %llu kB", &v) == 1) {
            *kb = (uint64_t)v;
            ok = true;
            break;
        }
    }
    fclose(f);
    return ok;
}

/* Busy ticks of the whole machine (first line of /proc/stat, without idle and iowait). */
static uint64_t machine_busy(void)
{
    FILE *f = fopen("/proc/stat", "r");
    if (!f)
        return 0;
    unsigned long long v[8] = {0};
    int n = fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3],
                   &v[4], &v[5], &v[6], &v[7]);
    fclose(f);
    if (n < 5)
        return 0;
    return (uint64_t)(v[0] + v[1] + v[2] + v[5] + v[6] + v[7]);
}

void lt_proc_sample(const struct lt_config *cfg, struct lt_proc_sample *s)
{
    memset(s, 0, sizeof *s);
    s->at_ns = lt_now_ns();
    s->machine_busy_ticks = machine_busy();
    if (cfg->n_server_pids) {
        s->ok = true;
        for (size_t i = 0; i < cfg->n_server_pids; i++) {
            uint64_t t = 0, r = 0;
            if (!read_cpu(cfg->server_pids[i], &t) || !read_rss(cfg->server_pids[i], &r))
                s->ok = false;
            s->cpu_ticks += t;
            s->rss_kb += r;
        }
    }
    if (cfg->n_broker_pids) {
        s->broker_ok = true;
        for (size_t i = 0; i < cfg->n_broker_pids; i++) {
            uint64_t t = 0, r = 0;
            if (!read_cpu(cfg->broker_pids[i], &t) || !read_rss(cfg->broker_pids[i], &r))
                s->broker_ok = false;
            s->broker_cpu_ticks += t;
            s->broker_rss_kb += r;
        }
    }
}

double lt_ticks_to_us(uint64_t ticks)
{
    long hz = sysconf(_SC_CLK_TCK);
    return (double)ticks * 1e6 / (double)(hz > 0 ? hz : 100);
}

/* ------------------------------------------------------------------ */
/* JSON */

/* Numbers JSON can hold: non-finite values become null. */
static void jnum(FILE *f, const char *key, double v, int decimals)
{
    if (isfinite(v))
        fprintf(f, "\"%s\":%.*f", key, decimals, v);
    else
        fprintf(f, "\"%s\":null", key);
}

static void jstr(FILE *f, const char *key, const char *v)
{
    fprintf(f, "\"%s\":\"", key);
    for (const char *p = v; *p; p++) {
        if (*p == '"' || *p == '\\')
            fprintf(f, "\\%c", *p);
        else if ((unsigned char)*p < 0x20)
            fprintf(f, "\\u%04x", (unsigned)*p);
        else
            fputc(*p, f);
    }
    fputc('"', f);
}

static void ju(FILE *f, const char *key, uint64_t v)
{
    fprintf(f, "\"%s\":%llu", key, (unsigned long long)v);
}

static double us(uint64_t ns)
{
    return (double)ns / 1000.0;
}

static void latency_json(FILE *f, const char *key, const struct lt_hist *h, double scale,
                         int decimals)
{
    fprintf(f, "\"%s\":{", key);
    jnum(f, "p50", us(lt_hist_percentile(h, 50)) / scale, decimals);
    fputc(',', f);
    jnum(f, "p90", us(lt_hist_percentile(h, 90)) / scale, decimals);
    fputc(',', f);
    jnum(f, "p99", us(lt_hist_percentile(h, 99)) / scale, decimals);
    fputc(',', f);
    jnum(f, "p999", us(lt_hist_percentile(h, 99.9)) / scale, decimals);
    fputc(',', f);
    jnum(f, "max", us(h->total ? h->max : 0) / scale, decimals);
    fputc(',', f);
    jnum(f, "mean", lt_hist_mean(h) / 1000.0 / scale, decimals);
    fputc(',', f);
    ju(f, "count", h->total);
    fputc('}', f);
}

/* CPU time between two samples in us; NaN unless both were read (a process that is gone). */
static double cpu_delta_us(bool ok_a, uint64_t a, bool ok_b, uint64_t b)
{
    return ok_a && ok_b && b >= a ? lt_ticks_to_us(b - a) : NAN;
}

static void server_json(FILE *f, const struct lt_config *cfg, const struct lt_result *r)
{
    const struct lt_stats *st = &r->st;
    fputs(",\"server\":{\"pids\":[", f);
    for (size_t i = 0; i < cfg->n_server_pids; i++)
        fprintf(f, "%s%d", i ? "," : "", (int)cfg->server_pids[i]);
    fputs("],", f);
    bool ok = r->before.ok && r->after_setup.ok && r->end.ok;
    fprintf(f, "\"sampled\":%s,", ok ? "true" : "false");
    double setup_us = cpu_delta_us(r->before.ok, r->before.cpu_ticks, r->after_setup.ok,
                                   r->after_setup.cpu_ticks);
    double conns = (double)st->conns_ready;
    jnum(f, "cpu_s_setup", setup_us / 1e6, 3);
    fputc(',', f);
    jnum(f, "cpu_us_per_connection", conns > 0 ? setup_us / conns : NAN, 1);
    fputc(',', f);
    if (cfg->scenario != LT_SC_IDLE && r->measure_start.ok) {
        double run_us = cpu_delta_us(true, r->measure_start.cpu_ticks, r->end.ok, r->end.cpu_ticks);
        double window_s = (double)(r->end.at_ns - r->measure_start.at_ns) / 1e9;
        jnum(f, "cpu_s_measured", run_us / 1e6, 3);
        fputc(',', f);
        jnum(f, "cpu_window_s", window_s, 3);
        fputc(',', f);
        jnum(f, "cpu_util", window_s > 0 ? run_us / 1e6 / window_s : NAN, 3);
        fputc(',', f);
        jnum(f, "cpu_us_per_delivery",
             st->delivered_measured ? run_us / (double)st->delivered_measured : NAN, 3);
        fputc(',', f);
    } else {
        double hold_us =
            cpu_delta_us(r->after_setup.ok, r->after_setup.cpu_ticks, r->end.ok, r->end.cpu_ticks);
        jnum(f, "cpu_s_hold", hold_us / 1e6, 3);
        fputc(',', f);
    }
    ju(f, "rss_kb_before", r->before.rss_kb);
    fputc(',', f);
    ju(f, "rss_kb_after_setup", r->after_setup.rss_kb);
    fputc(',', f);
    ju(f, "rss_kb_after", r->end.rss_kb);
    fputc(',', f);
    double rss_delta = r->before.ok && r->end.ok
                           ? ((double)r->end.rss_kb - (double)r->before.rss_kb) * 1024.0
                           : NAN;
    jnum(f, "rss_bytes_per_conn", conns > 0 ? rss_delta / conns : NAN, 0);
    fputc('}', f);
}

/* The NATS server behind rtgate (--broker-pid): its share of the same windows. */
static void broker_json(FILE *f, const struct lt_config *cfg, const struct lt_result *r)
{
    const struct lt_stats *st = &r->st;
    fputs(",\"broker\":{\"pids\":[", f);
    for (size_t i = 0; i < cfg->n_broker_pids; i++)
        fprintf(f, "%s%d", i ? "," : "", (int)cfg->broker_pids[i]);
    fputs("],", f);
    bool ok = r->before.broker_ok && r->after_setup.broker_ok && r->end.broker_ok;
    fprintf(f, "\"sampled\":%s,", ok ? "true" : "false");
    double setup_us = cpu_delta_us(r->before.broker_ok, r->before.broker_cpu_ticks,
                                   r->after_setup.broker_ok, r->after_setup.broker_cpu_ticks);
    jnum(f, "cpu_s_setup", setup_us / 1e6, 3);
    fputc(',', f);
    if (cfg->scenario != LT_SC_IDLE && r->measure_start.broker_ok) {
        double run_us = cpu_delta_us(true, r->measure_start.broker_cpu_ticks, r->end.broker_ok,
                                     r->end.broker_cpu_ticks);
        double window_s = (double)(r->end.at_ns - r->measure_start.at_ns) / 1e9;
        jnum(f, "cpu_s_measured", run_us / 1e6, 3);
        fputc(',', f);
        jnum(f, "cpu_util", window_s > 0 ? run_us / 1e6 / window_s : NAN, 3);
        fputc(',', f);
        jnum(f, "cpu_us_per_delivery",
             st->delivered_measured ? run_us / (double)st->delivered_measured : NAN, 3);
        fputc(',', f);
    }
    ju(f, "rss_kb_before", r->before.broker_rss_kb);
    fputc(',', f);
    ju(f, "rss_kb_after", r->end.broker_rss_kb);
    fputc('}', f);
}

void lt_report_json(FILE *f, const struct lt_config *cfg, const struct lt_result *r)
{
    const struct lt_stats *st = &r->st;
    fputc('{', f);
    if (cfg->label) {
        jstr(f, "label", cfg->label);
        fputc(',', f);
    }
    jstr(f, "scenario", lt_scenario_name(cfg->scenario));
    fputc(',', f);
    jstr(f, "url", cfg->url);
    fputc(',', f);
    jstr(f, "target", cfg->target == LT_TGT_NATS_WS ? "nats-ws" : "rtgate");
    fputc(',', f);
    jstr(f, "publish_via", cfg->pub_via == LT_PV_NATS ? "nats" : "ws");
    if (cfg->pub_via == LT_PV_NATS && cfg->nats_url[0]) {
        fputc(',', f);
        jstr(f, "nats", cfg->nats_url);
        fprintf(f, ",\"durable_nats\":%s", cfg->durable_nats ? "true" : "false");
    }
    fputc(',', f);
    jstr(f, "subprotocol",
         cfg->target == LT_TGT_NATS_WS ? "nats"
         : cfg->codec == LT_CODEC_JSON ? "json"
                                       : "msgpack");
    fprintf(f, ",\"subs\":%u,\"channels\":%u,\"publishers\":%u,\"workers\":%u,", cfg->subs,
            cfg->channels, cfg->publishers, cfg->workers);
    jnum(f, "rate_target", cfg->scenario == LT_SC_IDLE ? 0 : cfg->rate, 1);
    fputc(',', f);
    jnum(f, "duration_s", cfg->scenario == LT_SC_IDLE ? cfg->hold_s : cfg->duration_s, 3);
    fputc(',', f);
    jnum(f, "warmup_s", cfg->scenario == LT_SC_IDLE ? 0 : cfg->warmup_s, 3);
    fprintf(f, ",\"payload\":%u,\"source_addrs\":%zu,", cfg->payload, cfg->n_src);

    ju(f, "connections", st->conns_planned);
    fputc(',', f);
    ju(f, "connected", st->conns_ready);
    fputc(',', f);
    ju(f, "connect_errors", st->connect_errors);
    fputc(',', f);
    ju(f, "handshake_failures", st->handshake_failures);
    fputc(',', f);
    ju(f, "handshake_retries", st->handshake_retries);
    fputc(',', f);
    ju(f, "setup_errors", st->setup_errors);
    fputc(',', f);
    jnum(f, "time_to_connect_s", r->time_to_connect_s, 3);
    fputc(',', f);
    latency_json(f, "connect_ms", &r->setup, 1000.0, 3);
    fputc(',', f);

    ju(f, "published", st->published);
    fputc(',', f);
    ju(f, "pub_ok", st->pub_ok);
    fputc(',', f);
    ju(f, "delivered", st->delivered);
    fputc(',', f);
    ju(f, "expected", r->expected);
    fputc(',', f);
    ju(f, "lost", r->lost);
    fprintf(f, ",\"drain_complete\":%s,", st->drain_timeouts ? "false" : "true");
    ju(f, "dup", st->dup);
    fputc(',', f);
    ju(f, "ooo", st->ooo);
    fputc(',', f);
    ju(f, "errors", r->errors);
    fputc(',', f);
    ju(f, "rate_limited", st->rate_limited);
    fputc(',', f);
    jnum(f, "deliveries_per_s",
         cfg->duration_s > 0 ? (double)st->delivered_measured / cfg->duration_s : 0, 1);
    fputc(',', f);
    ju(f, "measured_deliveries", st->delivered_measured);
    fputc(',', f);
    latency_json(f, "latency_us", &r->lat, 1.0, 1);
    /* The distribution in a few points (percentile, us), for plots of several runs together. */
    static const double qs[] = {0, 10, 25, 50, 75, 90, 95, 99, 99.5, 99.9, 99.95, 99.99, 100};
    fputs(",\"latency_pct\":[", f);
    for (size_t i = 0; i < sizeof qs / sizeof qs[0]; i++) {
        double v = qs[i] == 0     ? (r->lat.total ? (double)r->lat.min : 0)
                   : qs[i] == 100 ? (double)(r->lat.total ? r->lat.max : 0)
                                  : (double)lt_hist_percentile(&r->lat, qs[i]);
        fprintf(f, "%s[%g,%.1f]", i ? "," : "", qs[i], v / 1000.0);
    }
    fputc(']', f);

    fputs(",\"detail\":{", f);
    ju(f, "pub_errors", st->pub_errors);
    fputc(',', f);
    ju(f, "pub_no_reply", st->pub_no_reply);
    fputc(',', f);
    ju(f, "skipped_backoff", st->skipped_backoff);
    fputc(',', f);
    ju(f, "skipped_stalled", st->skipped_stalled);
    fputc(',', f);
    jnum(f, "publish_lag_max_us", (double)st->pub_lag_max_ns / 1e3, 1);
    fputc(',', f);
    ju(f, "unexpected", r->unexpected);
    fputc(',', f);
    ju(f, "foreign_msgs", st->foreign_msgs);
    fputc(',', f);
    ju(f, "seq_violations", st->seq_violations);
    fputc(',', f);
    ju(f, "gap_msgs", st->gap_msgs);
    fputc(',', f);
    ju(f, "gap_seqs", st->gap_seqs);
    fputc(',', f);
    ju(f, "acks_sent", st->acks_sent);
    fputc(',', f);
    ju(f, "server_closes", st->server_closes);
    fputc(',', f);
    ju(f, "server_disconnects", st->server_disconnects);
    fputc(',', f);
    ju(f, "protocol_errors", st->protocol_errors);
    fputc(',', f);
    ju(f, "error_msgs", st->error_msgs);
    fputc(',', f);
    ju(f, "setup_timeouts", st->setup_timeouts);
    fputc(',', f);
    ju(f, "frames_in", st->frames_in);
    fputc(',', f);
    ju(f, "msgs_in", st->msgs_in);
    fputc(',', f);
    ju(f, "bytes_in", st->bytes_in);
    fputc(',', f);
    ju(f, "workers_failed", (uint64_t)r->workers_failed);
    fputc(',', f);
    ju(f, "nats_pings", st->nats_pings);
    fputc(',', f);
    ju(f, "nats_errs", st->nats_errs);
    fputs(",\"error_codes\":{", f);
    static const char *const names[LT_ERR_CODES] = {"400", "401", "403", "404",  "409",
                                                    "413", "429", "503", "other"};
    bool first = true;
    for (int i = 0; i < LT_ERR_CODES; i++) {
        if (!st->error_codes[i])
            continue;
        fprintf(f, "%s\"%s\":%llu", first ? "" : ",", names[i],
                (unsigned long long)st->error_codes[i]);
        first = false;
    }
    fputs("}}", f);

    if (cfg->n_server_pids)
        server_json(f, cfg, r);
    if (cfg->n_broker_pids)
        broker_json(f, cfg, r);
    {
        /* How busy the whole machine was (other jobs show up here): the measured window, or the
         * idle hold. */
        const struct lt_proc_sample *a = cfg->scenario == LT_SC_IDLE || !r->measure_start.at_ns
                                             ? &r->after_setup
                                             : &r->measure_start;
        double win = (double)(r->end.at_ns - a->at_ns) / 1e9;
        double busy = lt_ticks_to_us(r->end.machine_busy_ticks - a->machine_busy_ticks) / 1e6;
        long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
        fprintf(f, ",\"machine\":{\"cpus\":%ld,", ncpu);
        jnum(f, "busy_cores", win > 0 && a->machine_busy_ticks ? busy / win : NAN, 3);
        fputc('}', f);
    }
    fputc(',', f);
    jnum(f, "client_cpu_s", r->client_cpu_s, 3);
    fputc(',', f);
    double run_s = (double)(st->cpu_ns_total - st->cpu_ns_setup) / 1e9;
    jnum(f, "client_cpu_s_setup", (double)st->cpu_ns_setup / 1e9, 3);
    fputc(',', f);
    jnum(f, "client_cpu_s_run", run_s, 3);
    if (cfg->scenario != LT_SC_IDLE) {
        fputc(',', f);
        jnum(f, "client_cpu_us_per_delivery",
             st->delivered ? run_s * 1e6 / (double)st->delivered : NAN, 3);
    }
    fprintf(f, ",\"timed_out\":%s,\"ok\":%s}\n", r->timed_out ? "true" : "false",
            r->ok ? "true" : "false");
}

/* ------------------------------------------------------------------ */
/* SVG: latency by percentile, the percentile axis logarithmic in 1/(1-q). */

#define SVG_W  900.0
#define SVG_H  520.0
#define PLOT_L 80.0
#define PLOT_R 30.0
#define PLOT_T 60.0
#define PLOT_B 60.0

/* A round axis maximum at or above v (1, 1.5, 2, ... 8 x 10^k). */
static double nice_ceil(double v)
{
    if (v <= 0)
        return 1;
    double e = pow(10, floor(log10(v)));
    static const double steps[] = {1, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10};
    for (size_t i = 0; i < sizeof steps / sizeof steps[0]; i++)
        if (steps[i] * e >= v)
            return steps[i] * e;
    return 10 * e;
}

/* "850 us", "12.3 ms", "4.52 s": three significant figures in a readable unit. */
void lt_fmt_latency(uint64_t ns, char *out, size_t cap)
{
    double v = (double)ns;
    if (v < 1e6)
        snprintf(out, cap, "%.3g us", v / 1e3);
    else if (v < 1e9)
        snprintf(out, cap, "%.3g ms", v / 1e6);
    else
        snprintf(out, cap, "%.3g s", v / 1e9);
}

bool lt_report_svg(const char *path, const struct lt_config *cfg, const struct lt_result *r)
{
    FILE *f = fopen(path, "w");
    if (!f)
        return false;
    const struct lt_hist *h = &r->lat;
    double pw = SVG_W - PLOT_L - PLOT_R, ph = SVG_H - PLOT_T - PLOT_B;
    /* x in "nines": 0 = 0%, 1 = 90%, 2 = 99% ... up to what the sample count supports. */
    double xmax = h->total > 1 ? ceil(log10((double)h->total)) : 2;
    if (xmax < 2)
        xmax = 2;
    if (xmax > 6)
        xmax = 6;
    double max_ms = (double)h->max / 1e6;
    double ymax = nice_ceil(max_ms * 1.05);
    bool in_us = ymax < 1.0;
    double unit = in_us ? 1e3 : 1e6; /* ns per axis unit */
    ymax = nice_ceil((double)h->max / unit * 1.05);

    fprintf(f,
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" "
            "viewBox=\"0 0 %.0f %.0f\" font-family=\"sans-serif\" font-size=\"12\">\n",
            SVG_W, SVG_H, SVG_W, SVG_H);
    fprintf(f, "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n");
    fprintf(f,
            "<text x=\"%.0f\" y=\"24\" font-size=\"16\">rtgate-load %s on %s: %u subscriber%s, "
            "%u channel%s, %u publisher%s via %s, %.0f msg/s, %s, %u B</text>\n",
            PLOT_L, lt_scenario_name(cfg->scenario),
            cfg->target == LT_TGT_NATS_WS ? "nats-server ws" : "rtgate", cfg->subs,
            cfg->subs == 1 ? "" : "s", cfg->channels, cfg->channels == 1 ? "" : "s",
            cfg->publishers, cfg->publishers == 1 ? "" : "s",
            cfg->pub_via == LT_PV_NATS ? "NATS" : "WebSocket", cfg->rate,
            cfg->target == LT_TGT_NATS_WS ? "nats"
            : cfg->codec == LT_CODEC_JSON ? "json"
                                          : "msgpack",
            cfg->payload);
    char p50[32], p99[32], p999[32], pmax[32];
    lt_fmt_latency(lt_hist_percentile(h, 50), p50, sizeof p50);
    lt_fmt_latency(lt_hist_percentile(h, 99), p99, sizeof p99);
    lt_fmt_latency(lt_hist_percentile(h, 99.9), p999, sizeof p999);
    lt_fmt_latency(h->total ? h->max : 0, pmax, sizeof pmax);
    fprintf(f,
            "<text x=\"%.0f\" y=\"44\" fill=\"#444\">%llu samples; p50 %s, p99 %s, p99.9 %s, "
            "max %s; lost %llu, dup %llu, ooo %llu</text>\n",
            PLOT_L, (unsigned long long)h->total, p50, p99, p999, pmax, (unsigned long long)r->lost,
            (unsigned long long)r->st.dup, (unsigned long long)r->st.ooo);
    /* grid and axes */
    for (int i = 0; i <= (int)xmax; i++) {
        double x = PLOT_L + pw * i / xmax;
        static const char *const labels[] = {"0%",     "90%",     "99%",     "99.9%",
                                             "99.99%", "99.999%", "99.9999%"};
        fprintf(f,
                "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/>\n"
                "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%s</text>\n",
                x, PLOT_T, x, PLOT_T + ph, x, PLOT_T + ph + 18, labels[i]);
    }
    for (int i = 0; i <= 5; i++) {
        double y = PLOT_T + ph - ph * i / 5.0;
        fprintf(f,
                "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/>\n"
                "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">%g</text>\n",
                PLOT_L, y, PLOT_L + pw, y, PLOT_L - 6, y + 4, ymax * i / 5.0);
    }
    fprintf(f,
            "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"none\" "
            "stroke=\"#333\"/>\n",
            PLOT_L, PLOT_T, pw, ph);
    fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">percentile</text>\n",
            PLOT_L + pw / 2, SVG_H - 16);
    fprintf(f,
            "<text transform=\"translate(20 %.1f) rotate(-90)\" text-anchor=\"middle\">"
            "latency (%s)</text>\n",
            PLOT_T + ph / 2, in_us ? "us" : "ms");
    /* the step curve: value v holds for percentiles (before, after] of its bucket */
    if (h->total) {
        fprintf(f, "<polyline fill=\"none\" stroke=\"#1f77b4\" stroke-width=\"2\" points=\"");
        uint64_t cum = 0;
        double last_y = -1;
        for (size_t i = 0; i < LT_HIST_COUNTS; i++) {
            if (!h->counts[i])
                continue;
            double q0 = (double)cum / (double)h->total;
            cum += h->counts[i];
            double q1 = (double)cum / (double)h->total;
            uint64_t v = lt_hist_highest_equivalent(i);
            if (v > h->max)
                v = h->max;
            double y = PLOT_T + ph - ph * ((double)v / unit) / ymax;
            double x0 = q0 >= 1 ? xmax : -log10(1 - q0);
            double x1 = q1 >= 1 ? xmax : -log10(1 - q1);
            if (x0 > xmax)
                x0 = xmax;
            if (x1 > xmax)
                x1 = xmax;
            if (last_y >= 0)
                fprintf(f, "%.1f,%.1f ", PLOT_L + pw * x0 / xmax, last_y);
            fprintf(f, "%.1f,%.1f %.1f,%.1f ", PLOT_L + pw * x0 / xmax, y, PLOT_L + pw * x1 / xmax,
                    y);
            last_y = y;
        }
        fprintf(f, "\"/>\n");
    }
    fprintf(f, "</svg>\n");
    return fclose(f) == 0;
}
