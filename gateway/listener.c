/*
 * listener.c: the gateway's own listen socket. lws 4.1 sets SO_REUSEPORT
 * only when it runs several service threads (Debian builds it with one), so
 * rtgate binds the port itself (SO_REUSEPORT: several worker processes share
 * it and the kernel spreads connections), accepts on the libuv loop and hands
 * each socket to lws with lws_adopt_socket_vhost. A bind failure is reported
 * and fatal instead of lws logging and carrying on. Loop thread.
 */
#define _GNU_SOURCE /* accept4 */
#include "gw.h"

#include <errno.h>
#include <fcntl.h>
#include <libwebsockets.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#define ACCEPT_BATCH    64
#define LISTEN_BACKLOG  4096
#define EMFILE_PAUSE_MS 100

struct gw_listener {
    uv_poll_t poll;
    uv_timer_t resume;
    struct gw_server *srv;
    int fd;
    int closed;
};

static int open_socket(const char *host, int port, bool share)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *res = NULL;
    char service[8];
    snprintf(service, sizeof service, "%d", port);
    if (getaddrinfo(strcmp(host, "0.0.0.0") ? host : NULL, service, &hints, &res) != 0)
        return -1;
    int fd = -1;
    for (struct addrinfo *ai = res; ai && fd < 0; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0)
            continue;
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        /* Only workers share the port: a second rtgate started by mistake on
         * a busy port must fail, not silently take half the connections. */
        if (share)
            setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
        if (bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 || listen(fd, LISTEN_BACKLOG) != 0) {
            int e = errno;
            close(fd);
            fd = -1;
            errno = e;
        }
    }
    freeaddrinfo(res);
    return fd;
}

static void on_readable(uv_poll_t *h, int status, int events);

static void on_resume(uv_timer_t *t)
{
    struct gw_listener *l = t->data;
    uv_poll_start(&l->poll, UV_READABLE, on_readable);
}

/* Out of descriptors: stop accepting for a moment (the backlog holds them). */
static void pause_accepting(struct gw_listener *l)
{
    rt_log(RT_LOG_WARN, "accept_paused", "why=\"%s\" connections=%llu", strerror(errno),
           (unsigned long long)l->srv->m.connections);
    uv_poll_stop(&l->poll);
    uv_timer_start(&l->resume, on_resume, EMFILE_PAUSE_MS, 0);
}

static void adopt(struct gw_listener *l, int fd)
{
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct lws_vhost *vh = lws_get_vhost_by_name(l->srv->ctx, "default");
    if (!vh) {
        close(fd);
        return;
    }
    /* On failure lws has closed fd itself: closing it again could close a
     * descriptor another thread (nats.c) just opened under the same number. */
    if (!lws_adopt_socket_vhost(vh, fd))
        rt_log(RT_LOG_ERROR, "adopt_failed", "fd=%d", fd);
}

static void on_readable(uv_poll_t *h, int status, int events)
{
    struct gw_listener *l = h->data;
    (void)events;
    if (status < 0)
        return;
    for (int i = 0; i < ACCEPT_BATCH; i++) {
        int fd = accept4(l->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd >= 0) {
            adopt(l, fd);
            continue;
        }
        if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM)
            pause_accepting(l);
        return; /* EAGAIN: drained; other errors (ECONNABORTED...): next wakeup */
    }
}

rt_status gw_listener_start(struct gw_server *srv)
{
    const struct gw_config *cfg = srv->cfg;
    struct gw_listener *l = calloc(1, sizeof *l);
    if (!l)
        return RT_NOMEM;
    l->srv = srv;
    l->fd = open_socket(cfg->listen_host, cfg->listen_port, cfg->workers > 1);
    if (l->fd < 0) {
        rt_log(RT_LOG_ERROR, "listen_failed", "addr=%s:%d why=\"%s\"", cfg->listen_host,
               cfg->listen_port, strerror(errno));
        free(l);
        return RT_ERR;
    }
    uv_poll_init(srv->loop, &l->poll, l->fd);
    uv_timer_init(srv->loop, &l->resume);
    l->poll.data = l->resume.data = l;
    uv_poll_start(&l->poll, UV_READABLE, on_readable);
    srv->listener = l;
    return RT_OK;
}

static void listener_closed(uv_handle_t *h)
{
    struct gw_listener *l = h->data;
    if (++l->closed == 2) {
        close(l->fd);
        free(l);
    }
}

void gw_listener_stop(struct gw_server *srv)
{
    struct gw_listener *l = srv->listener;
    if (!l)
        return;
    uv_poll_stop(&l->poll);
    uv_timer_stop(&l->resume);
    uv_close((uv_handle_t *)&l->poll, listener_closed);
    uv_close((uv_handle_t *)&l->resume, listener_closed);
    srv->listener = NULL;
}
