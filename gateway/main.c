/*
 * main.c: rtgate's entry point. Reads the configuration, runs the gateway on
 * a libuv loop it owns (epoll), drains on SIGTERM/SIGINT and exits 0.
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
    bool stopping;
};

static void on_tick(uv_timer_t *t)
{
    struct app *app = t->data;
    struct gw_server *srv = &app->srv;
    fo_tick(srv->fo, rt_wall_ms());
    if (!srv->draining)
        return;
    uint64_t waited = rt_mono_ms() - srv->drain_started_ms;
    if (srv->m.connections == 0 || waited >= app->cfg.drain_timeout_ms) {
        rt_log(RT_LOG_INFO, "drain_done", "connections_left=%llu waited_ms=%llu",
               (unsigned long long)srv->m.connections, (unsigned long long)waited);
        uv_stop(&app->loop);
    }
}

static void on_signal(uv_signal_t *h, int signum)
{
    struct app *app = h->data;
    rt_log(RT_LOG_INFO, "signal", "signum=%d", signum);
    if (app->srv.draining) {
        uv_stop(&app->loop); /* a second signal: stop now */
        return;
    }
    gw_server_drain(&app->srv);
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
    uv_signal_init(&app->loop, &app->sigterm);
    uv_signal_init(&app->loop, &app->sigint);
    uv_timer_init(&app->loop, &app->tick);
    app->sigterm.data = app->sigint.data = app->tick.data = app;
    uv_signal_start(&app->sigterm, on_signal, SIGTERM);
    uv_signal_start(&app->sigint, on_signal, SIGINT);
    uv_timer_start(&app->tick, on_tick, 200, 200);
    rt_log(RT_LOG_INFO, "listening", "addr=%s:%d path=%s node=%s engine=%s max_connections=%u",
           app->cfg.listen_host, app->cfg.listen_port, app->cfg.ws_path, app->cfg.node_id,
           app->cfg.nats_url[0] ? "nats" : "memory", app->cfg.max_connections);
    uv_run(&app->loop, UV_RUN_DEFAULT);

    uv_signal_stop(&app->sigterm);
    uv_signal_stop(&app->sigint);
    uv_timer_stop(&app->tick);
    uv_close((uv_handle_t *)&app->sigterm, NULL);
    uv_close((uv_handle_t *)&app->sigint, NULL);
    uv_close((uv_handle_t *)&app->tick, NULL);
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
