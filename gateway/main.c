/*
 * main.c: rtgate's entry point. Reads the configuration, runs the gateway on
 * a libuv loop it owns (epoll), samples the loop's busy time and readiness
 * for /metrics and the log, drains on SIGTERM/SIGINT (drain.c) and exits 0.
 * SIGHUP reloads the TLS files (tls.c) and the JWT key (authz.c).
 */
#include "gw.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

struct app {
    struct gw_config cfg;
    struct gw_server srv;
    uv_loop_t loop;
    uv_signal_t sigterm, sigint;
    uv_timer_t tick;
    uv_timer_t drain;
    bool backend_ready;      /* fo_ready at the last tick, for the log */
    uint64_t busy_sample_ns; /* gw_metrics_loop_busy_ns at the last ratio sample */
    uint64_t busy_sample_at; /* uv_hrtime of that sample */
};

#define BUSY_SAMPLE_NS 1000000000ull

/*
 * The loop's busy fraction over the last second, for a gauge beside the
 * rtgate_loop_busy_seconds_total counter (whose rate() gives the same over
 * any interval).
 */
static void sample_busy(struct app *app)
{
    uint64_t now = uv_hrtime();
    uint64_t span = now - app->busy_sample_at;
    if (span < BUSY_SAMPLE_NS)
        return;
    uint64_t total = gw_metrics_loop_busy_ns(&app->srv);
    uint64_t busy = total - app->busy_sample_ns;
    app->srv.m.loop_busy_ratio = busy >= span ? 1.0 : (double)busy / (double)span;
    app->busy_sample_ns = total;
    app->busy_sample_at = now;
}

/* Logs the backend's readiness when it changes (NATS lost, back, stream ready). */
static void note_readiness(struct app *app)
{
    bool ready = fo_ready(app->srv.fo);
    if (ready == app->backend_ready)
        return;
    app->backend_ready = ready;
    rt_log(ready ? RT_LOG_INFO : RT_LOG_WARN, "backend_ready", "ready=%d connections=%llu",
           ready ? 1 : 0, (unsigned long long)app->srv.m.connections);
}

static void on_tick(uv_timer_t *t)
{
    struct app *app = t->data;
    fo_tick(app->srv.fo, rt_wall_ms());
    sample_busy(app);
    note_readiness(app);
}

static void on_drain_step(uv_timer_t *t)
{
    struct app *app = t->data;
    if (gw_drain_step(&app->srv, rt_mono_ms()))
        uv_stop(&app->loop);
}

static void on_signal(uv_signal_t *h, int signum)
{
    struct app *app = h->data;
    rt_log(RT_LOG_INFO, "signal", "signum=%d", signum);
    if (app->srv.draining) {
        uv_stop(&app->loop); /* a second signal: stop now */
        return;
    }
    gw_drain_begin(&app->srv);
    uv_timer_start(&app->drain, on_drain_step, 0, GW_DRAIN_STEP_MS);
}

static void close_handle(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

static int run(struct app *app)
{
    if (gw_server_start(&app->srv, &app->cfg, &app->loop) != RT_OK) {
        while (uv_run(&app->loop, UV_RUN_NOWAIT)) /* the closes it started */
            ;
        return 1;
    }
    gw_config_warn_env();
    app->srv.m.loop_since_ns = app->busy_sample_at = uv_hrtime();
    app->srv.m.loop_idle_at_start_ns = uv_metrics_idle_time(&app->loop);
    app->backend_ready = false; /* logged once it is ready, and at every change after */
    uv_signal_init(&app->loop, &app->sigterm);
    uv_signal_init(&app->loop, &app->sigint);
    uv_timer_init(&app->loop, &app->tick);
    uv_timer_init(&app->loop, &app->drain);
    app->sigterm.data = app->sigint.data = app->tick.data = app->drain.data = app;
    uv_signal_start(&app->sigterm, on_signal, SIGTERM);
    uv_signal_start(&app->sigint, on_signal, SIGINT);
    uv_timer_start(&app->tick, on_tick, 200, 200);
    bool v6 = strchr(app->cfg.listen_host, ':') != NULL;
    rt_log(RT_LOG_INFO, "listening",
           "addr=%s%s%s:%d path=%s node=%s engine=%s max_connections=%u conn_rate=%u",
           v6 ? "[" : "", app->cfg.listen_host, v6 ? "]" : "", app->cfg.listen_port,
           app->cfg.ws_path, app->cfg.node_id, app->cfg.nats_url[0] ? "nats" : "memory",
           app->cfg.max_connections, app->cfg.conn_bucket.rate);
    uv_run(&app->loop, UV_RUN_DEFAULT);

    uv_signal_stop(&app->sigterm);
    uv_signal_stop(&app->sigint);
    uv_timer_stop(&app->tick);
    uv_timer_stop(&app->drain);
    uv_close((uv_handle_t *)&app->sigterm, NULL);
    uv_close((uv_handle_t *)&app->sigint, NULL);
    uv_close((uv_handle_t *)&app->tick, NULL);
    uv_close((uv_handle_t *)&app->drain, NULL);
    gw_server_stop(&app->srv);
    while (uv_run(&app->loop, UV_RUN_NOWAIT))
        ;
    gw_server_free(&app->srv);
    uv_walk(&app->loop, close_handle, NULL);
    while (uv_run(&app->loop, UV_RUN_NOWAIT))
        ;
    int rc = uv_loop_close(&app->loop);
    rt_log(RT_LOG_INFO, "exit", "loop_close=%d", rc);
    return 0;
}

/* ---- --workers N: N gateway processes share the port (SO_REUSEPORT) ---- */

static volatile sig_atomic_t supervisor_signal;

static void on_supervisor_signal(int signum)
{
    supervisor_signal = signum;
}

/* Waits for the workers, forwarding SIGTERM/SIGINT (drain) and SIGHUP (key and
 * certificate reload) to them. 0 if all exited 0. */
static int supervise(pid_t *pids, unsigned n)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_supervisor_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    int rc = 0;
    for (unsigned alive = n; alive > 0;) {
        if (supervisor_signal) {
            for (unsigned i = 0; i < n; i++)
                if (pids[i] > 0)
                    kill(pids[i], supervisor_signal);
            supervisor_signal = 0;
        }
        int status = 0;
        pid_t p = waitpid(-1, &status, WNOHANG);
        if (p <= 0) {
            if (p < 0 && errno == ECHILD)
                break;
            nanosleep(&(struct timespec){0, 50 * 1000 * 1000}, NULL);
            continue;
        }
        for (unsigned i = 0; i < n; i++)
            if (pids[i] == p)
                pids[i] = 0;
        alive--;
        bool ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
        rt_log(ok ? RT_LOG_INFO : RT_LOG_ERROR, "worker_exit", "pid=%d status=%d", (int)p, status);
        rc = ok ? rc : 1;
    }
    return rc;
}

/*
 * Forks the workers before any loop or connection exists. Returns in each
 * child (-1, with its own node id "<node>-w<i>"), or the supervisor's exit
 * code in the parent.
 */
static int fork_workers(struct gw_config *cfg)
{
    pid_t pids[64];
    unsigned n = cfg->workers;
    for (unsigned i = 0; i < n; i++) {
        pid_t p = fork();
        if (p == 0) {
            size_t len = strlen(cfg->node_id);
            snprintf(cfg->node_id + len, sizeof cfg->node_id - len, "-w%u", i);
            return -1;
        }
        if (p < 0) {
            rt_log(RT_LOG_ERROR, "fork_failed", "errno=%d", errno);
            for (unsigned j = 0; j < i; j++)
                kill(pids[j], SIGTERM);
            n = i;
            break;
        }
        pids[i] = p;
    }
    rt_log(RT_LOG_INFO, "workers", "count=%u supervisor=%d", n, (int)getpid());
    return supervise(pids, n) ? 1 : 0;
}

int main(int argc, char **argv)
{
    static struct app app;
    rt_status st = gw_config_load(&app.cfg, argc, argv);
    if (st == RT_AGAIN)
        return 0;
    if (st != RT_OK || gw_tls_check_files(&app.cfg) != RT_OK) {
        gw_config_free(&app.cfg);
        return 2;
    }
    rt_log_set_level(app.cfg.log_level);
    if (app.cfg.workers > 1) {
        int rc = fork_workers(&app.cfg);
        if (rc >= 0) {
            gw_config_free(&app.cfg);
            return rc;
        }
    }
    srand((unsigned)(rt_wall_ms() ^ (uint64_t)getpid()));
    signal(SIGPIPE, SIG_IGN);
    if (uv_loop_init(&app.loop) != 0)
        return 1;
    int rc = run(&app);
    gw_config_free(&app.cfg);
    return rc;
}
