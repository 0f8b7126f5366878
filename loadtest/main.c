/*
 * main.c: rtgate-load's entry (the command line is options.c's) and the
 * parent process of the delivery scenarios. The parent
 * forks the workers, steps them through the run's phases (all connected ->
 * start -> publishing done -> expected counts -> results -> finish),
 * samples the server from /proc between phases, merges the workers'
 * counters and histograms and prints the one JSON line.
 */
#include "load.h"

#include <errno.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#define START_LEAD_NS   (200 * LT_NS_PER_MS)
#define ABORT_GRACE_NS  (3 * LT_NS_PER_S) /* workers' time to report after a timeout */
#define WORKER_GRACE_NS (6 * LT_NS_PER_S) /* workers stop by themselves this long after */

/* ------------------------------------------------------------------ */
/* The parent */

struct child {
    pid_t pid;
    int up;   /* read end: worker -> parent */
    int down; /* write end: parent -> worker */
    struct lt_slice slice;
    uint8_t *buf;
    size_t len, cap;
    bool ready, pubdone, result, eof;
};

struct run {
    struct lt_config *cfg;
    struct child *ch;
    uint32_t n;
    uint32_t n_ready, n_pubdone, n_result;
    bool started, measure_sampled, expect_sent, finished, aborting;
    uint64_t ready_conns, planned_conns; /* from READY, for the progress line */
    struct lt_start times;
    uint64_t *accepted; /* per stream, summed */
    uint64_t *unique;   /* per stream, summed */
    uint64_t *ready_on; /* per channel: subscribers that got ready */
    struct lt_result res;
    uint64_t t_fork;
};

static volatile sig_atomic_t parent_signal;

static void on_parent_signal(int sig)
{
    (void)sig;
    parent_signal = 1;
}

static bool raise_fd_limit(uint32_t need)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return false;
    if (rl.rlim_cur >= need)
        return true;
    if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < need)
        rl.rlim_cur = rl.rlim_max;
    else
        rl.rlim_cur = need;
    return setrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur >= need;
}

static bool spawn(struct run *r, uint64_t hard_deadline)
{
    for (uint32_t i = 0; i < r->n; i++) {
        int up[2], down[2];
        if (pipe(up) != 0 || pipe(down) != 0) {
            perror("rtgate-load: pipe");
            return false;
        }
        struct child *c = &r->ch[i];
        lt_slice_of(r->cfg, i, r->n, &c->slice);
        fflush(NULL);
        pid_t pid = fork();
        if (pid < 0) {
            perror("rtgate-load: fork");
            return false;
        }
        if (pid == 0) {
            close(up[0]);
            close(down[1]);
            for (uint32_t j = 0; j < i; j++) {
                close(r->ch[j].up);
                close(r->ch[j].down);
            }
            int rc =
                lt_worker_main(r->cfg, &c->slice, up[1], down[0], hard_deadline + WORKER_GRACE_NS);
            _exit(rc);
        }
        close(up[1]);
        close(down[0]);
        c->pid = pid;
        c->up = up[0];
        c->down = down[1];
    }
    return true;
}

static void broadcast(struct run *r, uint32_t type, const void *body, size_t len)
{
    for (uint32_t i = 0; i < r->n; i++)
        if (!r->ch[i].eof)
            lt_pipe_send(r->ch[i].down, type, body, len);
}

/* Tells every worker what was accepted per channel; each counts its own expected deliveries. */
static void send_expected(struct run *r)
{
    const struct lt_config *cfg = r->cfg;
    uint64_t *per_channel = calloc(cfg->channels, sizeof *per_channel);
    if (!per_channel)
        return;
    for (uint32_t p = 0; p < cfg->publishers; p++)
        for (uint32_t c = 0; c < cfg->channels; c++)
            per_channel[c] += r->accepted[(size_t)p * cfg->channels + c];
    broadcast(r, LT_P_EXPECT, per_channel, (size_t)cfg->channels * sizeof *per_channel);
    free(per_channel);
}

static void start_run(struct run *r)
{
    const struct lt_config *cfg = r->cfg;
    lt_proc_sample(cfg, &r->res.after_setup);
    r->res.time_to_connect_s = (double)(lt_now_ns() - r->t_fork) / 1e9;
    uint64_t t0 = lt_now_ns() + START_LEAD_NS;
    r->times.t0 = t0;
    if (r->ready_conns == 0) { /* nothing to measure: skip to the end */
        r->times.t_measure = r->times.t_end = r->times.t_drain = t0;
    } else if (cfg->scenario == LT_SC_IDLE) {
        r->times.t_measure = t0;
        r->times.t_end = t0 + (uint64_t)(cfg->hold_s * 1e9);
        r->times.t_drain = r->times.t_end;
    } else {
        r->times.t_measure = t0 + (uint64_t)(cfg->warmup_s * 1e9);
        r->times.t_end = r->times.t_measure + (uint64_t)(cfg->duration_s * 1e9);
        r->times.t_drain = r->times.t_end + (uint64_t)(cfg->drain_s * 1e9);
    }
    if (cfg->verbose >= 0)
        fprintf(stderr, "rtgate-load: %llu/%llu connections ready in %.2f s; running\n",
                (unsigned long long)r->ready_conns, (unsigned long long)r->planned_conns,
                r->res.time_to_connect_s);
    broadcast(r, LT_P_START, &r->times, sizeof r->times);
    r->started = true;
    r->measure_sampled = cfg->scenario == LT_SC_IDLE; /* idle has no measured window */
}

static void on_result(struct run *r, const uint8_t *body, size_t len)
{
    size_t ns = lt_nstreams(r->cfg);
    size_t want = sizeof(struct lt_stats) + 2 * sizeof(struct lt_hist) + ns * sizeof(uint64_t);
    if (len != want)
        return;
    struct lt_stats st;
    memcpy(&st, body, sizeof st);
    lt_stats_add(&r->res.st, &st);
    body += sizeof st;
    struct lt_hist *h = malloc(sizeof *h);
    if (!h)
        return;
    memcpy(h, body, sizeof *h);
    lt_hist_merge(&r->res.lat, h);
    body += sizeof *h;
    memcpy(h, body, sizeof *h);
    lt_hist_merge(&r->res.setup, h);
    body += sizeof *h;
    free(h);
    for (size_t i = 0; i < ns; i++) {
        uint64_t v;
        memcpy(&v, body + i * sizeof v, sizeof v);
        r->unique[i] += v;
    }
}

/* Handles one complete message from a worker. */
static void on_child_msg(struct run *r, struct child *c, uint32_t type, const uint8_t *body,
                         size_t len)
{
    size_t ns = lt_nstreams(r->cfg);
    switch (type) {
    case LT_P_READY:
        if (!c->ready && len >= sizeof(struct lt_stats)) {
            c->ready = true;
            r->n_ready++;
            struct lt_stats st;
            memcpy(&st, body, sizeof st);
            r->ready_conns += st.conns_ready;
            r->planned_conns += st.conns_planned;
            if (len == sizeof st + (size_t)r->cfg->channels * sizeof(uint32_t)) {
                for (uint32_t i = 0; i < r->cfg->channels; i++) {
                    uint32_t v;
                    memcpy(&v, body + sizeof st + i * sizeof v, sizeof v);
                    r->ready_on[i] += v;
                }
            } else {
                r->res.workers_failed++; /* could not say which subscribers are there */
            }
        }
        break;
    case LT_P_PUBDONE:
        if (!c->pubdone && len == ns * sizeof(uint64_t)) {
            c->pubdone = true;
            r->n_pubdone++;
            for (size_t i = 0; i < ns; i++) {
                uint64_t v;
                memcpy(&v, body + i * sizeof v, sizeof v);
                r->accepted[i] += v;
            }
        }
        break;
    case LT_P_RESULT:
        if (!c->result) {
            c->result = true;
            r->n_result++;
            on_result(r, body, len);
        }
        break;
    default:
        break;
    }
}

/* A worker that died counts as having passed every phase, with nothing to add. */
static void child_gone(struct run *r, struct child *c)
{
    if (c->eof)
        return;
    c->eof = true;
    if (!c->result)
        r->res.workers_failed++;
    if (!c->ready) {
        c->ready = true;
        r->n_ready++;
    }
    if (!c->pubdone) {
        c->pubdone = true;
        r->n_pubdone++;
    }
    if (!c->result) {
        c->result = true;
        r->n_result++;
    }
}

static void read_child(struct run *r, struct child *c)
{
    if (c->cap - c->len < 65536) {
        size_t ncap = c->cap ? c->cap * 2 : 131072;
        uint8_t *nb = realloc(c->buf, ncap);
        if (!nb) {
            child_gone(r, c);
            return;
        }
        c->buf = nb;
        c->cap = ncap;
    }
    ssize_t n = read(c->up, c->buf + c->len, c->cap - c->len);
    if (n <= 0) {
        if (n < 0 && errno == EINTR)
            return;
        child_gone(r, c);
        return;
    }
    c->len += (size_t)n;
    size_t off = 0;
    while (c->len - off >= sizeof(struct lt_pipe_hdr)) {
        struct lt_pipe_hdr h;
        memcpy(&h, c->buf + off, sizeof h);
        if (h.len > (256u << 20)) {
            child_gone(r, c);
            return;
        }
        if (c->len - off - sizeof h < h.len)
            break;
        on_child_msg(r, c, h.type, c->buf + off + sizeof h, (size_t)h.len);
        off += sizeof h + (size_t)h.len;
    }
    memmove(c->buf, c->buf + off, c->len - off);
    c->len -= off;
}

static void parent_loop(struct run *r, uint64_t hard_deadline)
{
    struct pollfd *pfd = calloc(r->n, sizeof *pfd);
    if (!pfd)
        return;
    uint64_t next_progress = lt_now_ns() + LT_NS_PER_S;
    while (!r->finished) {
        uint64_t now = lt_now_ns();
        if ((now >= hard_deadline || parent_signal) && !r->aborting) {
            /* Ask the workers for what they have; they get a few seconds. */
            r->res.timed_out = true;
            r->aborting = true;
            broadcast(r, LT_P_ABORT, NULL, 0);
            hard_deadline = now + ABORT_GRACE_NS;
            parent_signal = 0;
        } else if (r->aborting && (now >= hard_deadline || parent_signal)) {
            break;
        }
        if (!r->started && r->n_ready == r->n && !r->aborting)
            start_run(r);
        if (r->started && !r->measure_sampled && r->cfg->scenario != LT_SC_IDLE &&
            now >= r->times.t_measure) {
            lt_proc_sample(r->cfg, &r->res.measure_start);
            r->measure_sampled = true;
        }
        if (r->n_pubdone == r->n && !r->expect_sent) {
            send_expected(r);
            r->expect_sent = true;
        }
        if (r->n_result == r->n) {
            lt_proc_sample(r->cfg, &r->res.end);
            if (!r->aborting)
                broadcast(r, LT_P_FINISH, NULL, 0);
            r->finished = true;
            break;
        }
        uint64_t until = hard_deadline;
        if (r->started && !r->measure_sampled && r->times.t_measure < until)
            until = r->times.t_measure;
        if (next_progress < until)
            until = next_progress;
        int tmo = until > now ? (int)((until - now + LT_NS_PER_MS - 1) / LT_NS_PER_MS) : 0;
        nfds_t np = 0;
        for (uint32_t i = 0; i < r->n; i++)
            if (!r->ch[i].eof) {
                pfd[np].fd = r->ch[i].up;
                pfd[np].events = POLLIN;
                pfd[np].revents = 0;
                np++;
            }
        int n = poll(pfd, np, tmo);
        if (n < 0 && errno != EINTR)
            break;
        for (nfds_t k = 0; n > 0 && k < np; k++) {
            if (!pfd[k].revents)
                continue;
            for (uint32_t i = 0; i < r->n; i++)
                if (r->ch[i].up == pfd[k].fd && !r->ch[i].eof)
                    read_child(r, &r->ch[i]);
        }
        now = lt_now_ns();
        if (now >= next_progress) {
            next_progress = now + LT_NS_PER_S;
            if (r->cfg->verbose > 0)
                fprintf(stderr, "rtgate-load: ready %u/%u, pubdone %u, results %u\n", r->n_ready,
                        r->n, r->n_pubdone, r->n_result);
        }
    }
    free(pfd);
}

/*
 * Lost and unexpected per stream: accepted x subscribers that got ready on
 * that channel, against the unique deliveries seen. Subscribers that never
 * got ready are setup errors, not losses; ones the server closed later do
 * count their missing deliveries as lost.
 */
static void finish_counts(struct run *r)
{
    const struct lt_config *cfg = r->cfg;
    struct lt_result *res = &r->res;
    res->expected = 0;
    res->lost = 0;
    res->unexpected = 0;
    for (uint32_t p = 0; p < cfg->publishers; p++)
        for (uint32_t c = 0; c < cfg->channels; c++) {
            size_t k = (size_t)p * cfg->channels + c;
            uint64_t exp = r->accepted[k] * r->ready_on[c];
            res->expected += exp;
            if (exp > r->unique[k])
                res->lost += exp - r->unique[k];
            else
                res->unexpected += r->unique[k] - exp;
        }
    const struct lt_stats *st = &res->st;
    res->errors = st->connect_errors + st->handshake_failures + st->setup_errors +
                  st->server_closes + st->protocol_errors + st->error_msgs + st->pub_errors +
                  st->pub_no_reply + st->foreign_msgs + st->seq_violations + res->unexpected +
                  (uint64_t)res->workers_failed + (res->timed_out ? 1 : 0);
    if (cfg->scenario == LT_SC_IDLE)
        res->ok = res->errors == 0 && st->conns_ready == st->conns_planned;
    else
        res->ok =
            res->lost == 0 && st->dup == 0 && st->ooo == 0 && res->errors == 0 && res->expected > 0;
}

static double cpu_seconds(void)
{
    struct rusage self, kids;
    getrusage(RUSAGE_SELF, &self);
    getrusage(RUSAGE_CHILDREN, &kids);
    return (double)(self.ru_utime.tv_sec + self.ru_stime.tv_sec + kids.ru_utime.tv_sec +
                    kids.ru_stime.tv_sec) +
           (double)(self.ru_utime.tv_usec + self.ru_stime.tv_usec + kids.ru_utime.tv_usec +
                    kids.ru_stime.tv_usec) /
               1e6;
}

static void summary(const struct lt_config *cfg, const struct lt_result *r)
{
    const struct lt_stats *st = &r->st;
    fprintf(stderr,
            "rtgate-load: %s: %llu/%llu connected (%.2f s); published %llu (ok %llu, 429 %llu); "
            "delivered %llu of %llu expected; lost %llu dup %llu ooo %llu errors %llu\n",
            lt_scenario_name(cfg->scenario), (unsigned long long)st->conns_ready,
            (unsigned long long)st->conns_planned, r->time_to_connect_s,
            (unsigned long long)st->published, (unsigned long long)st->pub_ok,
            (unsigned long long)st->rate_limited, (unsigned long long)st->unique,
            (unsigned long long)r->expected, (unsigned long long)r->lost,
            (unsigned long long)st->dup, (unsigned long long)st->ooo,
            (unsigned long long)r->errors);
    if (cfg->scenario != LT_SC_IDLE) {
        char p50[32], p99[32], p999[32], pmax[32];
        lt_fmt_latency(lt_hist_percentile(&r->lat, 50), p50, sizeof p50);
        lt_fmt_latency(lt_hist_percentile(&r->lat, 99), p99, sizeof p99);
        lt_fmt_latency(lt_hist_percentile(&r->lat, 99.9), p999, sizeof p999);
        lt_fmt_latency(r->lat.max, pmax, sizeof pmax);
        fprintf(stderr, "rtgate-load: latency p50 %s, p99 %s, p99.9 %s, max %s (%llu samples)\n",
                p50, p99, p999, pmax, (unsigned long long)r->lat.total);
    }
    if (st->rate_limited)
        fprintf(stderr,
                "rtgate-load: warning: %llu publishes were rate limited: raise the "
                "gateway's --pub-rate/--pub-burst/--msg-rate or add --publishers\n",
                (unsigned long long)st->rate_limited);
    if (st->skipped_stalled)
        fprintf(stderr,
                "rtgate-load: warning: %llu publish slots skipped (publisher backlogged or "
                "not connected)\n",
                (unsigned long long)st->skipped_stalled);
    if (st->drain_timeouts && r->lost)
        fprintf(stderr,
                "rtgate-load: the drain ended by the clock (--drain %.1f s): some of the %llu "
                "lost may only have been late\n",
                cfg->drain_s, (unsigned long long)r->lost);
    if (cfg->scenario != LT_SC_IDLE && r->expected == 0)
        fprintf(stderr, "rtgate-load: nothing was accepted for delivery: not ok\n");
}

static int run(struct lt_config *cfg)
{
    signal(SIGPIPE, SIG_IGN);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_parent_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    uint32_t per_worker = lt_total_conns(cfg) / cfg->workers + cfg->publishers + 64;
    if (!raise_fd_limit(per_worker)) {
        fprintf(stderr, "rtgate-load: the fd limit is below %u; use more --workers\n", per_worker);
        return LT_ARGS_USAGE;
    }
    struct run *r = calloc(1, sizeof *r);
    size_t ns = lt_nstreams(cfg);
    if (!r)
        return 1;
    r->cfg = cfg;
    r->n = cfg->workers;
    r->ch = calloc(r->n, sizeof *r->ch);
    r->accepted = calloc(ns ? ns : 1, sizeof *r->accepted);
    r->unique = calloc(ns ? ns : 1, sizeof *r->unique);
    r->ready_on = calloc(cfg->channels, sizeof *r->ready_on);
    if (!r->ch || !r->accepted || !r->unique || !r->ready_on)
        return 1;
    lt_hist_init(&r->res.lat);
    lt_hist_init(&r->res.setup);

    lt_proc_sample(cfg, &r->res.before);
    if (cfg->n_server_pids && !r->res.before.ok)
        fprintf(stderr, "rtgate-load: warning: cannot read /proc for --server-pid\n");
    uint64_t hard_deadline = lt_now_ns() + (uint64_t)(cfg->timeout_s * 1e9);
    r->t_fork = lt_now_ns();
    bool spawned = spawn(r, hard_deadline);
    if (spawned)
        parent_loop(r, hard_deadline);
    /* Workers exit on FINISH; after a timeout or a failure they are killed. */
    uint64_t reap_until = lt_now_ns() + 10 * LT_NS_PER_S;
    for (uint32_t i = 0; i < r->n; i++) {
        struct child *c = &r->ch[i];
        if (c->pid <= 0)
            continue;
        if (!r->finished || !spawned)
            kill(c->pid, SIGKILL);
        int status = 0;
        while (waitpid(c->pid, &status, WNOHANG) == 0) {
            if (lt_now_ns() > reap_until) {
                kill(c->pid, SIGKILL);
                waitpid(c->pid, &status, 0);
                break;
            }
            usleep(2000);
        }
        if (WIFSIGNALED(status) || (WIFEXITED(status) && WEXITSTATUS(status) != 0)) {
            if (c->result && r->finished)
                r->res.workers_failed++;
        }
        close(c->up);
        close(c->down);
        free(c->buf);
    }
    if (!spawned)
        r->res.workers_failed = (int)r->n;
    if (!r->res.end.at_ns)
        lt_proc_sample(cfg, &r->res.end);
    finish_counts(r);
    r->res.client_cpu_s = cpu_seconds();

    lt_report_json(stdout, cfg, &r->res);
    fflush(stdout);
    if (cfg->json_path) {
        FILE *f = fopen(cfg->json_path, "a");
        if (f) {
            lt_report_json(f, cfg, &r->res);
            fclose(f);
        } else {
            fprintf(stderr, "rtgate-load: cannot append to %s: %s\n", cfg->json_path,
                    strerror(errno));
        }
    }
    if (cfg->svg_path && !lt_report_svg(cfg->svg_path, cfg, &r->res))
        fprintf(stderr, "rtgate-load: cannot write %s\n", cfg->svg_path);
    if (cfg->verbose >= 0)
        summary(cfg, &r->res);
    int rc = r->res.ok ? 0 : 1;
    free(r->ch);
    free(r->accepted);
    free(r->unique);
    free(r->ready_on);
    free(r);
    return rc;
}

int main(int argc, char **argv)
{
    struct lt_config *cfg = malloc(sizeof *cfg);
    if (!cfg)
        return 1;
    int rc = lt_parse_args(cfg, argc, argv);
    switch (rc) {
    case LT_ARGS_HELP:
        lt_usage(stdout);
        rc = 0;
        break;
    case LT_ARGS_HELP_MARKDOWN:
        lt_usage_markdown(stdout);
        rc = 0;
        break;
    case LT_ARGS_SELFTEST:
        rc = lt_selftest();
        break;
    case LT_ARGS_RUN:
        rc = lt_scen_own(cfg->scenario) ? lt_scen_run(cfg) : run(cfg);
        break;
    default:
        break;
    }
    for (uint32_t i = 0; i < cfg->n_tokens; i++)
        free(cfg->tokens[i]);
    free(cfg->tokens);
    free(cfg);
    return rc;
}
