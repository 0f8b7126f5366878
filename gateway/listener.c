/*
 * listener.c: the gateway's own listen socket. lws 4.1 sets SO_REUSEPORT
 * only when it runs several service threads (Debian builds it with one), so
 * rtgate binds the port itself (SO_REUSEPORT: several worker processes share
 * it and the kernel spreads connections), accepts on the libuv loop and hands
 * each socket to lws with lws_adopt_socket_vhost (which starts TLS when the
 * vhost has a certificate). A bind failure is reported and fatal instead of
 * lws logging and carrying on.
 *
 * Each accepted connection's address is recorded (peer.c). With
 * --proxy-protocol v2 a connection from outside --trusted-proxy is closed at
 * once, and the others must first send a PROXY v2 header: it is read here,
 * non-blocking, exactly to its end (so lws, and OpenSSL reading the socket
 * itself, get the client's bytes untouched), within --handshake-timeout-ms
 * and EDGE_PROXY_V2_MAX bytes. Loop thread.
 */
#define _GNU_SOURCE /* accept4 */
#include "gw.h"

#include <errno.h>
#include <fcntl.h>
#include <libwebsockets.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#define ACCEPT_BATCH    64
#define LISTEN_BACKLOG  4096
#define EMFILE_PAUSE_MS 100

/* A connection whose PROXY header is still arriving. */
struct proxy_wait {
    uv_poll_t poll; /* initialised only once a read would block */
    bool polling;
    struct gw_listener *l;
    struct proxy_wait *prev, *next; /* the listener's waiting list, oldest first */
    uint64_t deadline_ms;
    int fd;
    struct edge_addr peer;
    size_t have;
    uint8_t buf[EDGE_PROXY_V2_MAX];
};

struct gw_listener {
    uv_poll_t poll;
    uv_timer_t resume;
    uv_timer_t proxy_deadline; /* fires for the oldest waiting PROXY header */
    struct proxy_wait *waiting_head, *waiting_tail;
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

/* Hands a connection to lws, its client address recorded. Takes fd. */
static void adopt(struct gw_listener *l, int fd, const struct edge_addr *from)
{
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct lws_vhost *vh = lws_get_vhost_by_name(l->srv->ctx, "default");
    if (!vh || gw_peer_record(l->srv, fd, from) != RT_OK) {
        close(fd);
        return;
    }
    /* On failure lws has closed fd itself: closing it again could close a
     * descriptor another thread (nats.c) just opened under the same number. */
    if (!lws_adopt_socket_vhost(vh, fd))
        rt_log(RT_LOG_ERROR, "adopt_failed", "fd=%d", fd);
}

/* A connection refused before lws saw it (--proxy-protocol). Takes fd. */
static void refuse_connection(struct gw_listener *l, int fd, const struct edge_addr *peer,
                              const char *why)
{
    char text[EDGE_ADDR_TEXT];
    edge_addr_format(peer, text);
    l->srv->m.handshakes_refused[GW_REFUSE_PROXY]++;
    if (gw_refusal_log_take(l->srv))
        rt_log(RT_LOG_INFO, "connection_refused", "peer=%s why=\"%s\"", text, why);
    close(fd);
}

static void proxy_wait_closed(uv_handle_t *h)
{
    free(h->data);
}

/*
 * Ends a wait: with a why the connection is refused, without one it goes to
 * lws under the header's source address (or its own, for LOCAL). Frees w
 * once the loop has closed its poll handle; uv_close takes the fd out of
 * epoll at once, so lws may watch the same fd right after.
 */
static void proxy_wait_end(struct proxy_wait *w, const struct edge_proxy_result *r, const char *why)
{
    struct gw_listener *l = w->l;
    int fd = w->fd;
    struct edge_addr from = r && r->has_src ? r->src : w->peer, peer = w->peer;
    if (w->prev)
        w->prev->next = w->next;
    else if (l->waiting_head == w)
        l->waiting_head = w->next;
    if (w->next)
        w->next->prev = w->prev;
    else if (l->waiting_tail == w)
        l->waiting_tail = w->prev;
    if (w->polling)
        uv_close((uv_handle_t *)&w->poll, proxy_wait_closed);
    else
        free(w);
    if (why)
        refuse_connection(l, fd, &peer, why);
    else
        adopt(l, fd, &from);
}

/* Reads what has arrived of the header, never past its end. 1: complete in
 * *r; 0: would block; -1: refuse for *why. */
static int proxy_read(struct proxy_wait *w, struct edge_proxy_result *r, const char **why)
{
    for (;;) {
        enum edge_proxy_status st = edge_proxy_v2_parse(w->buf, w->have, r);
        if (st == EDGE_PROXY_OK)
            return 1;
        if (st == EDGE_PROXY_INVALID) {
            *why = r->why;
            return -1;
        }
        ssize_t n = recv(w->fd, w->buf + w->have, r->need - w->have, 0);
        if (n > 0) {
            w->have += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return 0;
        *why = n == 0 ? "closed before the end of the PROXY header" : "read error";
        return -1;
    }
}

static void on_proxy_readable(uv_poll_t *h, int status, int events)
{
    struct proxy_wait *w = h->data;
    (void)events;
    struct edge_proxy_result r;
    const char *why = NULL;
    int rc = status < 0 ? -1 : proxy_read(w, &r, &why);
    if (status < 0)
        why = "socket error";
    if (rc != 0)
        proxy_wait_end(w, rc > 0 ? &r : NULL, rc > 0 ? NULL : why);
}

static void on_proxy_deadline(uv_timer_t *t)
{
    struct gw_listener *l = t->data;
    uint64_t now = rt_mono_ms();
    while (l->waiting_head && l->waiting_head->deadline_ms <= now)
        proxy_wait_end(l->waiting_head, NULL, "no complete PROXY header in time");
    if (l->waiting_head)
        uv_timer_start(&l->proxy_deadline, on_proxy_deadline, l->waiting_head->deadline_ms - now,
                       0);
}

/* --proxy-protocol v2: the header first, from a trusted proxy only. Takes fd. */
static void proxy_start(struct gw_listener *l, int fd, const struct edge_addr *peer)
{
    const struct gw_config *cfg = l->srv->cfg;
    if (!edge_cidr_match_any(cfg->trusted_proxy, cfg->n_trusted_proxy, peer)) {
        refuse_connection(l, fd, peer, "not a trusted proxy (--proxy-protocol v2)");
        return;
    }
    struct proxy_wait *w = malloc(sizeof *w);
    if (!w) {
        close(fd);
        return;
    }
    memset(w, 0, offsetof(struct proxy_wait, buf));
    w->l = l;
    w->fd = fd;
    w->peer = *peer;
    struct edge_proxy_result r;
    const char *why = NULL;
    int rc = proxy_read(w, &r, &why); /* haproxy sends it with the connection: often here */
    if (rc != 0) {
        proxy_wait_end(w, rc > 0 ? &r : NULL, rc > 0 ? NULL : why);
        return;
    }
    if (uv_poll_init(l->srv->loop, &w->poll, fd) != 0) {
        proxy_wait_end(w, NULL, "out of resources");
        return;
    }
    w->polling = true;
    w->poll.data = w;
    uv_poll_start(&w->poll, UV_READABLE, on_proxy_readable);
    w->deadline_ms = rt_mono_ms() + cfg->handshake_timeout_ms;
    w->prev = l->waiting_tail;
    if (l->waiting_tail)
        l->waiting_tail->next = w;
    else
        l->waiting_head = w;
    l->waiting_tail = w;
    if (l->waiting_head == w) /* same timeout for all: the oldest is due first */
        uv_timer_start(&l->proxy_deadline, on_proxy_deadline, cfg->handshake_timeout_ms, 0);
}

static void on_readable(uv_poll_t *h, int status, int events)
{
    struct gw_listener *l = h->data;
    (void)events;
    if (status < 0)
        return;
    for (int i = 0; i < ACCEPT_BATCH; i++) {
        struct sockaddr_storage sa;
        socklen_t salen = sizeof sa;
        int fd = accept4(l->fd, (struct sockaddr *)&sa, &salen, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd >= 0) {
            struct edge_addr peer = {0};
            edge_addr_from_sockaddr(&sa, salen, &peer);
            if (l->srv->cfg->proxy_v2)
                proxy_start(l, fd, &peer);
            else
                adopt(l, fd, &peer);
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
    uv_timer_init(srv->loop, &l->proxy_deadline);
    l->poll.data = l->resume.data = l->proxy_deadline.data = l;
    uv_poll_start(&l->poll, UV_READABLE, on_readable);
    srv->listener = l;
    return RT_OK;
}

static void listener_closed(uv_handle_t *h)
{
    struct gw_listener *l = h->data;
    if (++l->closed == 3) {
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
    uv_timer_stop(&l->proxy_deadline);
    while (l->waiting_head) { /* never handed to lws: closed here */
        struct proxy_wait *w = l->waiting_head;
        l->waiting_head = w->next;
        uv_close((uv_handle_t *)&w->poll, proxy_wait_closed);
        close(w->fd);
    }
    l->waiting_tail = NULL;
    uv_close((uv_handle_t *)&l->poll, listener_closed);
    uv_close((uv_handle_t *)&l->resume, listener_closed);
    uv_close((uv_handle_t *)&l->proxy_deadline, listener_closed);
    srv->listener = NULL;
}
