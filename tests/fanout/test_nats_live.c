/*
 * The loop reader (fanout/nats_live.c) against a scripted fake NATS server
 * on a loopback socket. The test thread plays the server with non-blocking
 * sockets between steps of the uv loop, so everything is deterministic. The
 * fake server speaks TLS (OpenSSL on its side, certificates from certs.c)
 * once a test starts it after the clear-text INFO, as nats-server does.
 */
#define _GNU_SOURCE /* memmem */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include "certs.h"
#include "nats_live.h"
#include "rt.h"

#include <openssl/err.h>

struct fake {
    int lfd, cfd;
    int port;
    char got[1 << 16]; /* what the reader sent (the tail, if it sent more) */
    size_t got_len;
    bool eof;
    size_t accepts; /* connections accepted so far */
    SSL *ssl;       /* TLS on the current connection (fake_start_tls) */
    bool tls_done;  /* its handshake completed */
    bool tls_failed;
};

struct ctx {
    uv_loop_t loop;
    uv_timer_t alive; /* the reader's handles are unref'd: this keeps uv_run running */
    struct fake fs;
    struct fake fs2; /* a second server, when a test listens on it (fake_listen) */
    struct lr *lr;
    size_t msgs, replays;
    uint64_t last_sid;
    uint64_t sids[8];
    char subjects[8][64];
    size_t n_subs;
    char connect[4096];      /* what the reader sent during the last handshake */
    rt_status confirmed[16]; /* lr_confirm answers, in the order they came */
    int confirm_tag[16];
    size_t n_confirmed;
};

/* An lr_confirm callback: records which confirmation (arg) got which answer. */
struct confirm_arg {
    struct ctx *c;
    int tag;
};

static void on_confirm(void *arg, rt_status st)
{
    struct confirm_arg *a = arg;
    struct ctx *c = a->c;
    cr_assert_lt(c->n_confirmed, 16);
    c->confirm_tag[c->n_confirmed] = a->tag;
    c->confirmed[c->n_confirmed++] = st;
}

static void nonblock(int fd)
{
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
}

static void fake_listen(struct fake *fs, int rcvbuf)
{
    memset(fs, 0, sizeof(*fs));
    fs->cfd = -1;
    fs->lfd = socket(AF_INET, SOCK_STREAM, 0);
    cr_assert(fs->lfd >= 0);
    int one = 1;
    setsockopt(fs->lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (rcvbuf > 0) /* inherited by the accepted socket */
        setsockopt(fs->lfd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    cr_assert(bind(fs->lfd, (struct sockaddr *)&a, sizeof(a)) == 0);
    cr_assert(listen(fs->lfd, 8) == 0);
    socklen_t al = sizeof(a);
    getsockname(fs->lfd, (struct sockaddr *)&a, &al);
    fs->port = ntohs(a.sin_port);
    nonblock(fs->lfd);
}

static void on_msg(void *vctx, const struct nw_msg *m)
{
    struct ctx *c = vctx;
    c->msgs++;
    c->last_sid = m->sid;
}

static void on_replay(void *vctx, struct lr *lr)
{
    struct ctx *c = vctx;
    c->replays++;
    for (size_t i = 0; i < c->n_subs; i++)
        lr_resub(lr, c->subjects[i], c->sids[i]);
}

/* The fake server's side of a step: accept, move its TLS handshake on. */
static void fake_step(struct fake *fs)
{
    if (fs->cfd < 0 && fs->lfd >= 0) {
        int fd = accept(fs->lfd, NULL, NULL);
        if (fd >= 0) {
            nonblock(fd);
            fs->cfd = fd;
            fs->got_len = 0;
            fs->eof = false;
            fs->accepts++;
        }
    }
    if (fs->ssl && !fs->tls_done && !fs->tls_failed) {
        int r = SSL_do_handshake(fs->ssl);
        int e = r == 1 ? SSL_ERROR_NONE : SSL_get_error(fs->ssl, r);
        fs->tls_done = r == 1;
        fs->tls_failed =
            e != SSL_ERROR_NONE && e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE;
        ERR_clear_error();
    }
}

/* One step of the loop, and of the fake servers. */
static void step(struct ctx *c)
{
    uv_run(&c->loop, UV_RUN_NOWAIT);
    fake_step(&c->fs);
    fake_step(&c->fs2);
    usleep(1000);
}

/* The server side of TLS on the current connection, from now on (after INFO). */
static void fake_start_tls(struct fake *fs, SSL_CTX *ctx)
{
    fs->ssl = SSL_new(ctx);
    cr_assert(fs->ssl && fs->cfd >= 0);
    SSL_set_fd(fs->ssl, fs->cfd);
    SSL_set_accept_state(fs->ssl);
    fs->tls_done = fs->tls_failed = false;
}

/* recv(), or SSL_read once TLS is on (-1 with EAGAIN until its handshake is done). */
static ssize_t fake_recv(struct fake *fs, void *buf, size_t cap)
{
    if (!fs->ssl)
        return recv(fs->cfd, buf, cap, 0);
    if (!fs->tls_done) {
        errno = fs->tls_failed ? ECONNRESET : EAGAIN;
        return -1;
    }
    int r = SSL_read(fs->ssl, buf, (int)cap);
    if (r > 0)
        return r;
    int e = SSL_get_error(fs->ssl, r);
    ERR_clear_error();
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
        errno = EAGAIN;
        return -1;
    }
    return 0;
}

static void fake_read(struct fake *fs)
{
    while (fs->cfd >= 0 && !fs->eof) {
        if (fs->got_len == sizeof(fs->got)) { /* keep the tail */
            memmove(fs->got, fs->got + sizeof(fs->got) / 2, sizeof(fs->got) / 2);
            fs->got_len = sizeof(fs->got) / 2;
        }
        ssize_t r = fake_recv(fs, fs->got + fs->got_len, sizeof(fs->got) - fs->got_len);
        if (r > 0)
            fs->got_len += (size_t)r;
        else if (r == 0 || (errno != EAGAIN && errno != EINTR))
            fs->eof = true;
        else
            break;
    }
}

#define RUN_UNTIL(c, cond, ms)                                                                     \
    do {                                                                                           \
        uint64_t dl_ = rt_mono_ms() + (ms);                                                        \
        while (!(cond) && rt_mono_ms() < dl_)                                                      \
            step(c);                                                                               \
    } while (0)

static bool got_has(struct fake *fs, const char *needle)
{
    fake_read(fs);
    return memmem(fs->got, fs->got_len, needle, strlen(needle)) != NULL;
}

static void fake_send(struct fake *fs, const void *p, size_t n)
{
    const char *s = p;
    while (n > 0) {
        ssize_t r;
        if (fs->ssl) {
            cr_assert(fs->tls_done, "TLS handshake not done");
            r = SSL_write(fs->ssl, s, (int)n);
            if (r <= 0) {
                int e = SSL_get_error(fs->ssl, (int)r);
                ERR_clear_error();
                cr_assert(e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ, "SSL_write");
                errno = EAGAIN;
                r = -1;
            }
        } else {
            r = send(fs->cfd, s, n, MSG_NOSIGNAL);
        }
        if (r > 0) {
            s += r;
            n -= (size_t)r;
            continue;
        }
        cr_assert(r < 0 && (errno == EAGAIN || errno == EINTR), "send: %s", strerror(errno));
        struct pollfd pfd = {fs->cfd, POLLOUT, 0};
        poll(&pfd, 1, 10);
    }
}

static void fake_say(struct fake *fs, const char *s)
{
    fake_send(fs, s, strlen(s));
}

/* Drops the server side of the current connection. */
static void fake_hangup(struct fake *fs)
{
    SSL_free(fs->ssl);
    fs->ssl = NULL;
    if (fs->cfd >= 0)
        close(fs->cfd);
    fs->cfd = -1;
}

static void on_alive(uv_timer_t *t)
{
    (void)t;
}

static void start_with(struct ctx *c, const char *url_fmt, uint32_t window_ms, int rcvbuf,
                       const struct fo_nats_security *sec)
{
    memset(c, 0, sizeof(*c));
    c->fs2.lfd = c->fs2.cfd = -1;
    cr_assert(uv_loop_init(&c->loop) == 0);
    uv_timer_init(&c->loop, &c->alive);
    uv_timer_start(&c->alive, on_alive, 1000000, 1000000);
    fake_listen(&c->fs, rcvbuf);
    char url[128];
    snprintf(url, sizeof(url), url_fmt, c->fs.port);
    struct lr_hooks h = {c, on_msg, on_replay};
    cr_assert(lr_create(&c->loop, url, "test", window_ms, sec, &h, &c->lr) == RT_OK);
}

static void start(struct ctx *c, const char *url_fmt, uint32_t window_ms, int rcvbuf)
{
    start_with(c, url_fmt, window_ms, rcvbuf, NULL);
}

/* Keeps what the reader sent so far (its CONNECT) in c->connect. */
static void keep_connect(struct ctx *c)
{
    size_t n = c->fs.got_len < sizeof(c->connect) - 1 ? c->fs.got_len : sizeof(c->connect) - 1;
    memcpy(c->connect, c->fs.got, n);
    c->connect[n] = 0;
}

/*
 * Accepts the reader's connection and completes the handshake: INFO, TLS
 * with the server side of `tls` when not NULL (INFO must ask for it), then
 * CONNECT + PING read and answered.
 */
static void handshake_with(struct ctx *c, const char *info, SSL_CTX *tls)
{
    RUN_UNTIL(c, c->fs.cfd >= 0, 3000);
    cr_assert(c->fs.cfd >= 0, "the reader never connected");
    fake_say(&c->fs, info);
    if (tls)
        fake_start_tls(&c->fs, tls);
    RUN_UNTIL(c, got_has(&c->fs, "PING\r\n"), 5000);
    cr_assert(!tls || c->fs.tls_done, "no TLS handshake");
    cr_assert(got_has(&c->fs, "CONNECT {"), "no CONNECT");
    keep_connect(c);
    fake_say(&c->fs, "PONG\r\n");
    RUN_UNTIL(c, lr_up(c->lr), 3000);
    cr_assert(lr_up(c->lr));
    c->fs.got_len = 0;
}

static const char *INFO = "INFO {\"server_id\":\"x\",\"headers\":true,\"max_payload\":1048576}\r\n";

static void handshake(struct ctx *c)
{
    handshake_with(c, INFO, NULL);
}

static void finish(struct ctx *c)
{
    lr_destroy(c->lr);
    uv_close((uv_handle_t *)&c->alive, NULL);
    fake_hangup(&c->fs);
    fake_hangup(&c->fs2);
    if (c->fs.lfd >= 0)
        close(c->fs.lfd);
    if (c->fs2.lfd >= 0)
        close(c->fs2.lfd);
    uint64_t dl = rt_mono_ms() + 3000; /* a getaddrinfo may still be running */
    while (uv_run(&c->loop, UV_RUN_NOWAIT) && rt_mono_ms() < dl)
        usleep(1000);
    cr_assert(uv_loop_close(&c->loop) == 0, "handles left open");
}

static uint64_t sub(struct ctx *c, const char *subject)
{
    uint64_t sid = lr_sub(c->lr, subject);
    snprintf(c->subjects[c->n_subs], sizeof(c->subjects[0]), "%s", subject);
    c->sids[c->n_subs++] = sid;
    return sid;
}

Test(nats_live, handshake_sub_msg_and_reconnect)
{
    struct ctx c;
    start(&c, "nats://127.0.0.1:%d", 0, 0);
    handshake(&c);
    uint64_t sid = sub(&c, "a.b");
    RUN_UNTIL(&c, got_has(&c.fs, "SUB a.b "), 2000);
    char m[64];
    snprintf(m, sizeof(m), "MSG a.b %llu 5\r\nhello\r\n", (unsigned long long)sid);
    fake_say(&c.fs, m);
    RUN_UNTIL(&c, c.msgs == 1, 2000);
    cr_assert_eq(c.msgs, 1);
    cr_assert_eq(c.last_sid, sid);
    fake_hangup(&c.fs);
    handshake(&c);
    RUN_UNTIL(&c, got_has(&c.fs, "SUB a.b "), 2000);
    cr_assert_eq(c.replays, 2);
    finish(&c);
}

/* A PONG before INFO answers no PING of ours: it must not complete a handshake. */
Test(nats_live, unsolicited_pong_is_not_a_handshake)
{
    struct ctx c;
    start(&c, "nats://127.0.0.1:%d", 0, 0);
    RUN_UNTIL(&c, c.fs.cfd >= 0, 3000);
    fake_say(&c.fs, "PONG\r\n");
    RUN_UNTIL(&c, lr_up(c.lr), 200);
    cr_assert_not(lr_up(c.lr), "up without INFO or CONNECT");
    cr_assert_eq(c.replays, 0);
    fake_say(&c.fs, INFO);
    RUN_UNTIL(&c, got_has(&c.fs, "PING\r\n"), 3000);
    cr_assert(got_has(&c.fs, "CONNECT {"));
    fake_say(&c.fs, "PONG\r\n");
    RUN_UNTIL(&c, lr_up(c.lr), 3000);
    cr_assert(lr_up(c.lr));
    finish(&c);
}

/*
 * A message over 256 KiB grows the input buffer, which is freed once empty;
 * a confirmation after that is answered by the PONG read into a new one.
 */
Test(nats_live, confirm_after_the_buffer_was_freed)
{
    struct ctx c;
    start(&c, "nats://127.0.0.1:%d", 0, 0);
    handshake(&c);
    size_t n = 300000;
    char *m = malloc(n + 64);
    int h = snprintf(m, 64, "MSG a.b 1 %zu\r\n", n);
    memset(m + h, 'x', n);
    memcpy(m + h + n, "\r\n", 2);
    fake_send(&c.fs, m, (size_t)h + n + 2);
    free(m);
    RUN_UNTIL(&c, c.msgs == 1, 3000);
    cr_assert_eq(c.msgs, 1);
    struct confirm_arg a = {&c, 1};
    cr_assert_eq(lr_confirm(c.lr, on_confirm, &a), RT_OK);
    RUN_UNTIL(&c, got_has(&c.fs, "PING\r\n"), 2000);
    RUN_UNTIL(&c, false, 30);
    cr_assert_eq(c.n_confirmed, 0, "answered without a PONG");
    fake_say(&c.fs, "PONG\r\n");
    RUN_UNTIL(&c, c.n_confirmed == 1, 2000);
    cr_assert_eq(c.n_confirmed, 1);
    cr_assert_eq(c.confirmed[0], RT_OK);
    cr_assert(lr_up(c.lr));
    finish(&c);
}

/*
 * Each confirmation is answered by the PONG to its own PING: PONGs come in
 * the order of the PINGs, so a PONG to an earlier one answers nothing newer.
 */
Test(nats_live, confirmations_are_answered_in_order_by_their_own_pong)
{
    struct ctx c;
    start(&c, "nats://127.0.0.1:%d", 0, 0);
    handshake(&c);
    struct confirm_arg a[3] = {{&c, 0}, {&c, 1}, {&c, 2}};
    sub(&c, "a.b");
    cr_assert_eq(lr_confirm(c.lr, on_confirm, &a[0]), RT_OK);
    sub(&c, "c.d");
    cr_assert_eq(lr_confirm(c.lr, on_confirm, &a[1]), RT_OK);
    cr_assert_eq(lr_confirm(c.lr, on_confirm, &a[2]), RT_OK);
    RUN_UNTIL(&c, got_has(&c.fs, "SUB c.d "), 2000);
    /* The SUB goes out before the PING that confirms it. */
    char *sub2 = memmem(c.fs.got, c.fs.got_len, "SUB c.d ", 8);
    cr_assert_not_null(sub2);
    cr_assert_not_null(memmem(sub2, c.fs.got_len - (size_t)(sub2 - c.fs.got), "PING\r\n", 6));
    for (size_t k = 1; k <= 3; k++) {
        fake_say(&c.fs, "PONG\r\n");
        RUN_UNTIL(&c, c.n_confirmed == k, 2000);
        RUN_UNTIL(&c, false, 20);
        cr_assert_eq(c.n_confirmed, k, "one PONG answered %zu confirmations", c.n_confirmed);
        cr_assert_eq(c.confirm_tag[k - 1], (int)k - 1);
        cr_assert_eq(c.confirmed[k - 1], RT_OK);
    }
    finish(&c);
}

/* Not connected: refused at once, and the callback never runs. */
Test(nats_live, confirm_before_the_handshake_is_refused)
{
    struct ctx c;
    start(&c, "nats://127.0.0.1:%d", 0, 0);
    struct confirm_arg a = {&c, 0};
    cr_assert_eq(lr_confirm(c.lr, on_confirm, &a), RT_UNAVAILABLE);
    handshake(&c);
    RUN_UNTIL(&c, false, 30);
    cr_assert_eq(c.n_confirmed, 0);
    finish(&c);
}

/* Writes what the socket takes now; how much. */
static size_t fake_offer(struct fake *fs, const void *p, size_t n)
{
    ssize_t r = send(fs->cfd, p, n, MSG_NOSIGNAL | MSG_DONTWAIT);
    return r > 0 ? (size_t)r : 0;
}

/*
 * A server that sends PINGs and reads nothing: the PONGs cannot all be
 * queued in memory; the reader drops the connection instead of growing
 * its write queue until the keepalive notices (15 s later).
 */
Test(nats_live, ping_flood_from_a_server_that_does_not_read, .timeout = 30)
{
    struct ctx c;
    start(&c, "nats://127.0.0.1:%d", 0, 4096);
    handshake(&c);
    static char pings[1 << 16];
    for (size_t i = 0; i + 6 <= sizeof(pings); i += 6)
        memcpy(pings + i, "PING\r\n", 6);
    size_t sent = 0, part = 0, chunk = sizeof(pings) / 6 * 6;
    uint64_t deadline = rt_mono_ms() + 8000;
    while (lr_up(c.lr) && rt_mono_ms() < deadline) {
        size_t k = fake_offer(&c.fs, pings + part, chunk - part);
        sent += k;
        part = (part + k) % chunk;
        step(&c);
    }
    cr_assert_not(lr_up(c.lr), "still up after %zu bytes of PINGs that were never read", sent);
    finish(&c);
}

/* What parse_url must refuse (lr_create: RT_INVAL), and what it must take. */
Test(nats_live, urls)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct lr_hooks h = {NULL, NULL, NULL};
    const char *bad[] = {
        "ws://h:4222",
        "nats://",
        "nats://:4222",
        "nats://h:0",
        "nats://h:65536",
        "nats://h:12x",
        "nats://ho st:4222",
        "nats://h/x",
        "nats://h\t:1",
        "nats://[::1",
        "nats://[::1]x",
        "nats://[]:4222",
        "nats://h:4222/p",
        "",
        " , ",
        "nats://u\xff:p@h:4222", /* not UTF-8: CONNECT is JSON */
        "nats://tok\xc3@h:4222",
        "nats://h:1,nats://u:\x80@h:2",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct lr *lr = NULL;
        rt_status st = lr_create(&loop, bad[i], "t", 0, NULL, &h, &lr);
        cr_expect_eq(st, RT_INVAL, "accepted \"%s\"", bad[i]);
        if (lr)
            lr_destroy(lr);
    }
    const char *good[] = {
        "nats://127.0.0.1:4222",
        "NATS://u:p@127.0.0.1",
        "tok@127.0.0.1:1",
        "[::1]:4222",
        "nats://[::1]",
        "nats://[::1]:",
        "nats://h:",
        " nats://127.0.0.1:4222/ , nats://127.0.0.1:4223",
        "tls://127.0.0.1:4222",
        "TLS://u:p@h:1,nats://h:2",
    };
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        struct lr *lr = NULL;
        cr_expect_eq(lr_create(&loop, good[i], "t", 0, NULL, &h, &lr), RT_OK, "refused \"%s\"",
                     good[i]);
        lr_destroy(lr);
    }
    for (int i = 0; i < 100 && uv_run(&loop, UV_RUN_NOWAIT); i++)
        usleep(1000);
    cr_assert(uv_loop_close(&loop) == 0);
}

/* A password with an '@' (as Go's net/url takes it: the last '@' ends the userinfo). */
Test(nats_live, password_with_at)
{
    struct ctx c;
    start(&c, "nats://us:p@ss@127.0.0.1:%d", 0, 0);
    handshake(&c);
    cr_assert(strstr(c.connect, "\"user\":\"us\"") && strstr(c.connect, "\"pass\":\"p@ss\""), "%s",
              c.connect);
    finish(&c);
}

/* User and password are percent-decoded, as nats.c does; a bad escape is refused. */
Test(nats_live, percent_encoded_credentials)
{
    struct ctx c;
    start(&c, "nats://u%%40x:p%%3Aw%%25@127.0.0.1:%d", 0, 0);
    handshake(&c);
    cr_assert(strstr(c.connect, "\"user\":\"u@x\"") && strstr(c.connect, "\"pass\":\"p:w%\""), "%s",
              c.connect);
    finish(&c);
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct lr_hooks h = {NULL, NULL, NULL};
    const char *bad[] = {"nats://u%4:p@h:1", "nats://u:p%zz@h:1", "nats://t%00@h:1",
                         "nats://u%@h:1"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct lr *lr = NULL;
        cr_expect_eq(lr_create(&loop, bad[i], "t", 0, NULL, &h, &lr), RT_INVAL, "accepted %s",
                     bad[i]);
        if (lr)
            lr_destroy(lr);
    }
    uv_run(&loop, UV_RUN_NOWAIT);
    cr_assert_eq(uv_loop_close(&loop), 0);
}

/* lr_destroy in every state: the memory goes with the close callbacks (ASan/LSan). */
Test(nats_live, destroy_in_every_state)
{
    struct ctx c;
    start(&c, "nats://localhost:%d", 0, 0); /* resolving */
    finish(&c);
    start(&c, "nats://127.0.0.1:%d", 0, 0); /* connecting */
    finish(&c);
    start(&c, "nats://127.0.0.1:%d", 0, 0); /* connected, no INFO yet */
    RUN_UNTIL(&c, c.fs.cfd >= 0, 3000);
    RUN_UNTIL(&c, false, 20);
    finish(&c);
    start(&c, "nats://127.0.0.1:%d", 0, 0); /* CONNECT sent, no PONG yet */
    RUN_UNTIL(&c, c.fs.cfd >= 0, 3000);
    fake_say(&c.fs, INFO);
    RUN_UNTIL(&c, got_has(&c.fs, "PING\r\n"), 3000);
    finish(&c);
    start(&c, "nats://127.0.0.1:%d", 0, 4096); /* up, writes queued */
    handshake(&c);
    sub(&c, "a.b");
    char subj[64];
    for (int i = 0; i < 20000; i++) {
        snprintf(subj, sizeof(subj), "some.rather.long.subject.name.%d", i);
        lr_sub(c.lr, subj);
    }
    finish(&c);
    start(&c, "nats://127.0.0.1:%d", 0, 0); /* retrying */
    RUN_UNTIL(&c, c.fs.cfd >= 0, 3000);
    fake_hangup(&c.fs);
    RUN_UNTIL(&c, false, 20);
    finish(&c);
}

static void msg_to(struct ctx *c, uint64_t sid, const char *payload)
{
    char m[256];
    snprintf(m, sizeof(m), "MSG a.b %llu %zu\r\n%s\r\n", (unsigned long long)sid, strlen(payload),
             payload);
    fake_say(&c->fs, m);
}

/*
 * Read window: a second read within the window stops reading on readiness;
 * a confirmation meanwhile is answered by the PONG read on the window's
 * timer; messages keep coming and a quiet spell goes back to reading on
 * readiness.
 */
Test(nats_live, window_survives_confirm)
{
    struct ctx c;
    start(&c, "nats://127.0.0.1:%d", 30, 0);
    handshake(&c);
    uint64_t sid = sub(&c, "a.b");
    struct confirm_arg a = {&c, 0};
    for (int round = 0; round < 3; round++) {
        size_t base = c.msgs;
        msg_to(&c, sid, "1");
        RUN_UNTIL(&c, c.msgs == base + 1, 2000);
        msg_to(&c, sid, "2"); /* within the window: windowed from here */
        RUN_UNTIL(&c, c.msgs == base + 2, 2000);
        cr_assert_eq(c.msgs, base + 2);
        cr_assert_eq(lr_confirm(c.lr, on_confirm, &a), RT_OK);
        msg_to(&c, sid, "3");
        fake_say(&c.fs, "PONG\r\n");
        RUN_UNTIL(&c, c.msgs == base + 3 && c.n_confirmed == (size_t)round + 1, 2000);
        cr_assert_eq(c.msgs, base + 3);
        cr_assert_eq(c.n_confirmed, (size_t)round + 1);
        cr_assert_eq(c.confirmed[round], RT_OK);
        RUN_UNTIL(&c, false, 100); /* quiet: back to readiness */
        msg_to(&c, sid, "4");
        RUN_UNTIL(&c, c.msgs == base + 4, 2000);
        cr_assert_eq(c.msgs, base + 4, "round %d", round);
    }
    cr_assert(lr_up(c.lr));
    finish(&c);
}

/* EOF while a confirmation waits, windowed or not: it fails, and the reader reconnects. */
Test(nats_live, confirm_fails_on_eof)
{
    for (uint32_t window = 0; window <= 30; window += 30) {
        struct ctx c;
        start(&c, "nats://127.0.0.1:%d", window, 0);
        handshake(&c);
        uint64_t sid = sub(&c, "a.b");
        msg_to(&c, sid, "1");
        RUN_UNTIL(&c, c.msgs == 1, 2000);
        msg_to(&c, sid, "2");
        RUN_UNTIL(&c, c.msgs == 2, 2000);
        struct confirm_arg a = {&c, 0};
        cr_assert_eq(lr_confirm(c.lr, on_confirm, &a), RT_OK);
        shutdown(c.fs.cfd, SHUT_WR);
        RUN_UNTIL(&c, c.n_confirmed == 1, 2000);
        cr_assert_eq(c.n_confirmed, 1, "window %u: EOF not seen", window);
        cr_assert_eq(c.confirmed[0], RT_UNAVAILABLE);
        cr_assert_not(lr_up(c.lr));
        struct lr_stats st;
        lr_get_stats(c.lr, &st);
        cr_assert_eq(st.confirm_failures, 1);
        fake_hangup(&c.fs);
        handshake(&c);
        cr_assert_eq(c.replays, 2);
        cr_assert_eq(c.n_confirmed, 1, "answered twice");
        finish(&c);
    }
}

/* Junk from the server while a confirmation waits: dropped, and the confirmation fails. */
Test(nats_live, confirm_fails_on_junk)
{
    struct ctx c;
    start(&c, "nats://127.0.0.1:%d", 0, 0);
    handshake(&c);
    struct confirm_arg a = {&c, 0};
    cr_assert_eq(lr_confirm(c.lr, on_confirm, &a), RT_OK);
    fake_say(&c.fs, "HELLO\r\nPONG\r\n");
    RUN_UNTIL(&c, c.n_confirmed == 1, 2000);
    cr_assert_eq(c.n_confirmed, 1);
    cr_assert_eq(c.confirmed[0], RT_UNAVAILABLE, "the PONG after junk must not count");
    cr_assert_not(lr_up(c.lr));
    struct lr_stats st;
    lr_get_stats(c.lr, &st);
    cr_assert_eq(st.bad, 1);
    finish(&c);
}

/* Destroyed with a confirmation waiting: freed, never called (ASan checks both). */
Test(nats_live, destroy_with_a_confirmation_waiting)
{
    struct ctx c;
    start(&c, "nats://127.0.0.1:%d", 0, 0);
    handshake(&c);
    struct confirm_arg a = {&c, 0};
    cr_assert_eq(lr_confirm(c.lr, on_confirm, &a), RT_OK);
    finish(&c);
    cr_assert_eq(c.n_confirmed, 0);
}

/* A server repeating -ERR while up: a few log lines, not one per -ERR. */
Test(nats_live, err_flood_is_not_a_log_flood)
{
    struct ctx c;
    start(&c, "nats://127.0.0.1:%d", 0, 0);
    handshake(&c);
    FILE *tmp = tmpfile();
    cr_assert(tmp);
    fflush(stderr);
    int saved = dup(2);
    dup2(fileno(tmp), 2);
    static char errs[6000 * 16];
    size_t n = 0;
    for (int i = 0; i < 6000; i++)
        n += (size_t)snprintf(errs + n, sizeof(errs) - n, "-ERR 'x\"%d'\r\n", i % 10);
    fake_send(&c.fs, errs, n);
    RUN_UNTIL(&c, false, 300);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    cr_assert(lr_up(c.lr), "a -ERR while up is not fatal by itself");
    rewind(tmp);
    char line[1024];
    int lines = 0;
    while (fgets(line, sizeof(line), tmp))
        if (strstr(line, "event=nats_live_server_error")) {
            lines++;
            cr_assert(strstr(line, "msg=\"'x?"), "%s", line);
        }
    fclose(tmp);
    cr_assert(lines >= 1 && lines <= 3, "%d lines", lines);
    finish(&c);
}

/*
 * Reads on readiness take at most 64 KiB each (libuv reads up to 32 times
 * per readiness): a buffer grown by a large message must not turn one
 * wake-up into megabytes of messages handled while the loop waits.
 */
Test(nats_live, reads_on_readiness_are_64k_at_most, .timeout = 30)
{
    struct ctx c;
    start(&c, "nats://127.0.0.1:%d", 0, 0);
    RUN_UNTIL(&c, c.fs.cfd >= 0, 3000);
    fake_say(&c.fs, "INFO {\"headers\":true,\"max_payload\":16777216}\r\n");
    RUN_UNTIL(&c, got_has(&c.fs, "PING\r\n"), 3000);
    fake_say(&c.fs, "PONG\r\n");
    RUN_UNTIL(&c, lr_up(c.lr), 3000);
    size_t n = (size_t)8 << 20;
    char *m = malloc(n + 64);
    int h = snprintf(m, 64, "MSG a.b 1 %zu\r\n", n);
    memset(m + h, 'x', n);
    memcpy(m + h + n, "\r\n", 2);
    struct lr_stats st0, st1;
    lr_get_stats(c.lr, &st0);
    size_t off = 0, total = (size_t)h + n + 2;
    while (c.msgs == 0) { /* offer it all, step only when the socket is full */
        size_t k = off < total ? fake_offer(&c.fs, m + off, total - off) : 0;
        off += k;
        if (k == 0)
            step(&c);
    }
    free(m);
    lr_get_stats(c.lr, &st1);
    cr_assert_geq(st1.wakeups - st0.wakeups, n / (64 << 10), "%llu reads for 8 MiB",
                  (unsigned long long)(st1.wakeups - st0.wakeups));
    finish(&c);
}

/* -------------------------------------------------------------------- */
/* TLS, credentials, announced servers                                   */

/* What rt_log wrote to stderr between capture_start and capture_end. */
struct capture {
    FILE *tmp;
    int saved;
};

static void capture_start(struct capture *cap)
{
    fflush(stderr);
    cap->tmp = tmpfile();
    cr_assert(cap->tmp);
    cap->saved = dup(2);
    dup2(fileno(cap->tmp), 2);
}

/* The text, NUL-terminated (the caller frees it). */
static char *capture_end(struct capture *cap)
{
    fflush(stderr);
    dup2(cap->saved, 2);
    close(cap->saved);
    long n = ftell(cap->tmp);
    char *text = calloc(1, (size_t)n + 1);
    rewind(cap->tmp);
    size_t got = fread(text, 1, (size_t)n, cap->tmp);
    text[got] = 0;
    fclose(cap->tmp);
    return text;
}

/* A CA the reader trusts, one it does not, and files under a temp dir. */
struct tls_env {
    char dir[64];
    struct test_ca ca, other;
    SSL_CTX *server; /* a certificate from `ca` for 127.0.0.1 unless the test says otherwise */
    struct fo_nats_security sec;
    char files[4][256];
    int n_files;
};

static void tls_env_make(struct tls_env *t, const char *san)
{
    memset(t, 0, sizeof(*t));
    snprintf(t->dir, sizeof(t->dir), "/tmp/rtgate-nl-XXXXXX");
    cr_assert(mkdtemp(t->dir));
    test_ca_make(&t->ca, t->dir, "ca");
    test_ca_make(&t->other, t->dir, "other");
    t->server = test_server_ctx(&t->ca, san ? san : "IP:127.0.0.1,DNS:localhost");
    snprintf(t->sec.ca_file, sizeof(t->sec.ca_file), "%s", t->ca.pem_path);
}

/* A file under the env's dir with this text; its path. */
static const char *tls_env_file(struct tls_env *t, const char *name, const char *text)
{
    char *path = t->files[t->n_files++];
    snprintf(path, sizeof(t->files[0]), "%s/%s", t->dir, name);
    FILE *f = fopen(path, "w");
    cr_assert(f);
    fputs(text, f);
    fclose(f);
    return path;
}

static void tls_env_free(struct tls_env *t)
{
    SSL_CTX_free(t->server);
    unlink(t->ca.pem_path);
    unlink(t->other.pem_path);
    for (int i = 0; i < t->n_files; i++)
        unlink(t->files[i]);
    test_ca_free(&t->ca);
    test_ca_free(&t->other);
    rmdir(t->dir);
}

static const char *INFO_TLS =
    "INFO {\"server_id\":\"x\",\"headers\":true,\"max_payload\":1048576,\"tls_required\":true}\r\n";

/* Accepts, sends INFO with tls_required and starts TLS on the server side. */
static void tls_begin(struct ctx *c, struct tls_env *t)
{
    RUN_UNTIL(c, c->fs.cfd >= 0, 3000);
    cr_assert(c->fs.cfd >= 0, "the reader never connected");
    fake_say(&c->fs, INFO_TLS);
    fake_start_tls(&c->fs, t->server);
}

/* The handshake through TLS. */
static void tls_handshake(struct ctx *c, struct tls_env *t)
{
    handshake_with(c, INFO_TLS, t->server);
}

/*
 * One reader against the fake server with the env's TLS files (and what a
 * test adds to them), its log captured: tls_case_env, then tls_case_start,
 * then tls_case_end for the log.
 */
struct tls_case {
    struct tls_env t;
    struct capture cap;
    struct ctx c;
};

static struct ctx *tls_case_start(struct tls_case *k, const char *url, uint32_t window_ms)
{
    capture_start(&k->cap);
    start_with(&k->c, url, window_ms, 0, &k->t.sec);
    return &k->c;
}

/* Ends the reader; its log (the caller frees it). */
static char *tls_case_end(struct tls_case *k)
{
    finish(&k->c);
    char *log = capture_end(&k->cap);
    tls_env_free(&k->t);
    return log;
}

/* A reader given tls:// and the env's CA, its connection accepted by the fake server. */
static struct ctx *tls_case_accepted(struct tls_case *k)
{
    tls_env_make(&k->t, NULL);
    struct ctx *c = tls_case_start(k, "tls://127.0.0.1:%d", 0);
    RUN_UNTIL(c, c->fs.cfd >= 0, 3000);
    cr_assert(c->fs.cfd >= 0, "the reader never connected");
    return c;
}

/* Asserts that the log holds `needle`, then frees it. */
static void expect_in_log(char *log, const char *needle)
{
    cr_assert(strstr(log, needle), "no \"%s\" in the log:\n%s", needle, log);
    free(log);
}

/* Steps until the reader closed its connection; whether it did. */
static bool run_until_eof(struct ctx *c)
{
    RUN_UNTIL(c, (fake_read(&c->fs), c->fs.eof), 3000);
    return c->fs.eof;
}

/* TLS after the clear INFO, CONNECT through it, SUB and MSG both ways, and again after a loss. */
Test(nats_live, tls_handshake_sub_msg_and_reconnect)
{
    struct tls_case k;
    tls_env_make(&k.t, NULL);
    struct ctx *c = tls_case_start(&k, "tls://127.0.0.1:%d", 0);
    tls_handshake(c, &k.t);
    cr_assert(strstr(c->connect, "\"tls_required\":true"), "%s", c->connect);
    uint64_t sid = sub(c, "a.b");
    RUN_UNTIL(c, got_has(&c->fs, "SUB a.b "), 2000);
    cr_assert(got_has(&c->fs, "SUB a.b "));
    msg_to(c, sid, "hello");
    RUN_UNTIL(c, c->msgs == 1, 2000);
    cr_assert_eq(c->msgs, 1);
    fake_hangup(&c->fs);
    tls_handshake(c, &k.t);
    RUN_UNTIL(c, got_has(&c->fs, "SUB a.b "), 2000);
    cr_assert_eq(c->replays, 2);
    expect_in_log(tls_case_end(&k), "tls=TLSv1.3");
}

/*
 * A confirmation over TLS: its PING is encrypted like any write, and the
 * PONG that answers it is read through the TLS session like any message
 * (never by a raw read of the socket), windowed or not.
 */
Test(nats_live, tls_confirm)
{
    for (uint32_t window = 0; window <= 20; window += 20) {
        struct tls_case k;
        tls_env_make(&k.t, NULL);
        struct ctx *c = tls_case_start(&k, "tls://127.0.0.1:%d", window);
        tls_handshake(c, &k.t);
        uint64_t sid = sub(c, "a.b");
        struct confirm_arg a = {c, 7};
        cr_assert_eq(lr_confirm(c->lr, on_confirm, &a), RT_OK);
        RUN_UNTIL(c, got_has(&c->fs, "PING\r\n"), 2000);
        cr_assert(got_has(&c->fs, "SUB a.b "), "the SUB goes out before its PING");
        msg_to(c, sid, "m");
        RUN_UNTIL(c, c->msgs == 1, 2000);
        cr_assert_eq(c->n_confirmed, 0, "answered without a PONG");
        fake_say(&c->fs, "PONG\r\n");
        RUN_UNTIL(c, c->n_confirmed == 1, 2000);
        cr_assert_eq(c->n_confirmed, 1, "window %u", window);
        cr_assert_eq(c->confirmed[0], RT_OK);
        cr_assert_eq(c->confirm_tag[0], 7);
        cr_assert(lr_up(c->lr));
        free(tls_case_end(&k));
    }
}

/* Reads on the window timer decrypt too (read_now through lr_recv_plain). */
Test(nats_live, tls_with_a_read_window)
{
    struct tls_case k;
    tls_env_make(&k.t, NULL);
    struct ctx *c = tls_case_start(&k, "tls://127.0.0.1:%d", 20);
    tls_handshake(c, &k.t);
    uint64_t sid = sub(c, "a.b");
    RUN_UNTIL(c, got_has(&c->fs, "SUB a.b "), 2000);
    for (int i = 0; i < 200; i++) {
        msg_to(c, sid, "x");
        if (i % 20 == 0)
            step(c);
    }
    RUN_UNTIL(c, c->msgs == 200, 3000);
    cr_assert_eq(c->msgs, 200);
    cr_assert(lr_up(c->lr));
    free(tls_case_end(&k));
}

/* The reader against a server certificate it must refuse: it does, and tries again. */
static void expect_refused(struct tls_case *k, const char *url, const char *why)
{
    struct ctx *c = tls_case_start(k, url, 0);
    tls_begin(c, &k->t);
    RUN_UNTIL(c, c->fs.tls_failed || c->fs.accepts > 1, 5000);
    cr_assert_not(lr_up(c->lr), "up with a certificate it must refuse");
    fake_hangup(&c->fs);
    RUN_UNTIL(c, c->fs.accepts > 1, 5000);
    cr_assert_gt(c->fs.accepts, 1, "no retry");
    expect_in_log(tls_case_end(k), why);
}

Test(nats_live, tls_certificate_from_another_ca_is_refused)
{
    struct tls_case k;
    tls_env_make(&k.t, NULL);
    snprintf(k.t.sec.ca_file, sizeof(k.t.sec.ca_file), "%s", k.t.other.pem_path);
    expect_refused(&k, "tls://127.0.0.1:%d",
                   "why=\"TLS handshake failed: certificate verify failed: unable to get local "
                   "issuer certificate\"");
}

Test(nats_live, tls_certificate_for_another_host_is_refused)
{
    struct tls_case k;
    tls_env_make(&k.t, "DNS:elsewhere.example,IP:10.9.8.7");
    expect_refused(&k, "tls://127.0.0.1:%d", "certificate verify failed: IP address mismatch");
}

/* A server that requires TLS gets it unasked (nats://, no --nats-ca), checked against the
 * system's store, which does not know the test CA. */
Test(nats_live, tls_required_by_the_server_is_used_and_verified)
{
    struct tls_case k;
    tls_env_make(&k.t, NULL);
    k.t.sec.ca_file[0] = 0;
    expect_refused(&k, "nats://127.0.0.1:%d",
                   "certificate verify failed: unable to get local issuer");
}

/*
 * A server that answers INFO and then says nothing to the ClientHello: the
 * loop never waits on it (every uv_run returns at once), and the attempt
 * ends LR_CONNECT_MS later with a line that says where it stalled.
 */
Test(nats_live, tls_handshake_that_stalls, .timeout = 30)
{
    struct tls_case k;
    struct ctx *c = tls_case_accepted(&k);
    fake_say(&c->fs, INFO_TLS); /* and no TLS from here on */
    uint64_t t0 = rt_mono_ms(), slowest = 0;
    while (c->fs.accepts < 2 && rt_mono_ms() - t0 < 8000) {
        uint64_t a = rt_mono_ms();
        uv_run(&c->loop, UV_RUN_NOWAIT);
        uint64_t took = rt_mono_ms() - a;
        slowest = took > slowest ? took : slowest;
        fake_read(&c->fs);
        if (c->fs.eof) /* the reader gave up: the next try is a new connection */
            fake_hangup(&c->fs);
        fake_step(&c->fs);
        usleep(2000);
    }
    uint64_t waited = rt_mono_ms() - t0;
    cr_assert_eq(c->fs.accepts, 2, "no new try after a stalled handshake");
    cr_assert(waited >= 1500 && waited < 6000, "gave up after %llu ms", (unsigned long long)waited);
    cr_assert_lt(slowest, 100, "the loop waited %llu ms", (unsigned long long)slowest);
    expect_in_log(tls_case_end(&k), "why=\"TLS handshake timed out\"");
}

/* Bytes that are not TLS where the ServerHello should be: a quick failure, not a buffer. */
Test(nats_live, tls_garbage_instead_of_a_server_hello)
{
    struct tls_case k;
    struct ctx *c = tls_case_accepted(&k);
    fake_say(&c->fs, INFO_TLS);
    RUN_UNTIL(c, false, 50); /* the ClientHello */
    static char junk[256 << 10];
    memset(junk, 'A', sizeof(junk));
    uint64_t t0 = rt_mono_ms();
    fake_offer(&c->fs, junk, sizeof(junk));
    cr_assert(run_until_eof(c), "still connected after junk");
    cr_assert_lt(rt_mono_ms() - t0, 1000);
    expect_in_log(tls_case_end(&k), "TLS handshake failed");
}

/* tls:// to a server that offers no TLS: refused with the reason, and no CONNECT in clear. */
Test(nats_live, tls_asked_for_and_not_offered)
{
    struct tls_case k;
    struct ctx *c = tls_case_accepted(&k);
    fake_say(&c->fs, INFO);
    cr_assert(run_until_eof(c));
    cr_assert_not(got_has(&c->fs, "CONNECT"), "CONNECT in clear");
    expect_in_log(tls_case_end(&k), "and the server does not offer it");
}

/* Clear bytes after an INFO that starts TLS: the stream is out of step. */
Test(nats_live, tls_bytes_after_info)
{
    struct tls_case k;
    struct ctx *c = tls_case_accepted(&k);
    char both[256];
    snprintf(both, sizeof(both), "%sPING\r\n", INFO_TLS);
    fake_say(&c->fs, both);
    cr_assert(run_until_eof(c));
    expect_in_log(tls_case_end(&k), "bytes after INFO");
}

/* The NATS docs' user seed and public key, and the signature of a nonce made with them
 * (ed25519 is deterministic; the same bytes a Dart and a Python client compute). */
#define SEED_VECTOR   "SUACSSL3UAHUDXKFSNVUZRF5UHPMWZ6BFDTJ7M6USDXIEDNPPQYYYCU3VY"
#define PUBLIC_VECTOR "UDXU4RCSJNZOIQHZNWXHXORDPRTGNJAHAHFRGZNEEJCPQTT2M7NLCNF4"
#define NONCE_VECTOR  "DhXdTMAeiHhLDig"
#define SIG_VECTOR                                                                                 \
    "WosANJXgeyxerXFo0twRiMG-_ZjYp1K_46bFeFax705yFTCTjM18jWl01gGYk4KKbadiHd-hP3WgUQ2iLZUAAA"
#define JWT_VECTOR                                                                                 \
    "eyJ0eXAiOiJKV1QiLCJhbGciOiJlZDI1NTE5LW5rZXkifQ.eyJzdWIiOiJVRFhVNCJ9.c2lnbmF0dXJl"

static const char *INFO_NONCE =
    "INFO {\"server_id\":\"x\",\"headers\":true,\"max_payload\":1048576,"
    "\"auth_required\":true,\"nonce\":\"" NONCE_VECTOR "\"}\r\n";

static const char *CREDS_FILE =
    "-----BEGIN NATS USER JWT-----\n" JWT_VECTOR "\n------END NATS USER JWT------\n\n"
    "************************* IMPORTANT *************************\n"
    "NKEY Seed printed below can be used to sign and prove identity.\n\n"
    "-----BEGIN USER NKEY SEED-----\n" SEED_VECTOR "\n------END USER NKEY SEED------\n";

/* The CONNECT the reader sends to a server whose INFO is `info`, or "" if none came. */
static void connect_after(struct ctx *c, const char *info)
{
    RUN_UNTIL(c, c->fs.cfd >= 0, 3000);
    fake_say(&c->fs, info);
    RUN_UNTIL(c, got_has(&c->fs, "PING\r\n") || c->fs.eof, 3000);
    keep_connect(c);
}

/* A reader given an NKey seed file or a .creds file (no TLS), started. */
static struct ctx *credentials_case(struct tls_case *k, bool creds)
{
    tls_env_make(&k->t, NULL);
    k->t.sec.ca_file[0] = 0;
    char *field = creds ? k->t.sec.creds_file : k->t.sec.nkey_file;
    snprintf(field, sizeof(k->t.sec.creds_file), "%s",
             creds ? tls_env_file(&k->t, "user.creds", CREDS_FILE)
                   : tls_env_file(&k->t, "user.nk", "  " SEED_VECTOR "\r\n"));
    return tls_case_start(k, "nats://127.0.0.1:%d", 0);
}

/* An NKey seed file puts the public key in CONNECT, a .creds file the JWT; both sign the
 * nonce with the seed. */
Test(nats_live, nkey_and_creds_sign_the_nonce)
{
    for (int creds = 0; creds <= 1; creds++) {
        struct tls_case k;
        struct ctx *c = credentials_case(&k, creds);
        connect_after(c, INFO_NONCE);
        const char *id = creds ? "\"jwt\":\"" JWT_VECTOR "\"" : "\"nkey\":\"" PUBLIC_VECTOR "\"";
        cr_assert(strstr(c->connect, id), "%s", c->connect);
        cr_assert(strstr(c->connect, "\"sig\":\"" SIG_VECTOR "\""), "%s", c->connect);
        cr_assert_not(strstr(c->connect, creds ? "\"nkey\"" : "\"jwt\""), "%s", c->connect);
        free(tls_case_end(&k));
    }
}

/* Credentials and a server that sent no nonce: nothing to sign, so no CONNECT, and why. */
Test(nats_live, credentials_need_a_nonce)
{
    struct tls_case k;
    struct ctx *c = credentials_case(&k, true);
    connect_after(c, INFO);
    run_until_eof(c);
    cr_assert_not(strstr(c->connect, "CONNECT"), "%s", c->connect);
    expect_in_log(tls_case_end(&k), "sent no nonce");
}

/* Bad files: lr_create refuses them, and the log names the file and not its content. */
Test(nats_live, bad_security_files_are_refused_by_name)
{
    struct tls_env t;
    tls_env_make(&t, NULL);
    struct {
        const char *field, *text, *expect;
    } cases[] = {
        {"nkey", "SUACSSL3UAHUDXKFSNVUZRF5UHPMWZ6BFDTJ7M6USDXIEDNPPQYYYCU3VZ\n",
         "not a valid NKey"},
        {"nkey", "nothing here\n", "no NKey user seed"},
        {"creds", "-----BEGIN NATS USER JWT-----\nnot a jwt\n------END------\n", "no user JWT"},
        {"ca", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", "CA file"},
    };
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct lr_hooks h = {NULL, NULL, NULL};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct fo_nats_security sec;
        memset(&sec, 0, sizeof(sec));
        char name[32];
        snprintf(name, sizeof(name), "bad%zu", i);
        const char *path = tls_env_file(&t, name, cases[i].text);
        char *field = !strcmp(cases[i].field, "nkey")    ? sec.nkey_file
                      : !strcmp(cases[i].field, "creds") ? sec.creds_file
                                                         : sec.ca_file;
        snprintf(field, sizeof(sec.ca_file), "%s", path);
        struct capture cap;
        capture_start(&cap);
        struct lr *lr = NULL;
        rt_status st = lr_create(&loop, "nats://127.0.0.1:1", "t", 0, &sec, &h, &lr);
        char *log = capture_end(&cap);
        cr_expect_eq(st, RT_INVAL, "case %zu accepted", i);
        cr_expect(strstr(log, "event=nats_security_invalid") && strstr(log, path) &&
                      strstr(log, cases[i].expect),
                  "case %zu: %s", i, log);
        cr_expect_not(strstr(log, "SUACSSL3"), "the seed in the log: %s", log);
        free(log);
        if (lr)
            lr_destroy(lr);
    }
    uv_run(&loop, UV_RUN_NOWAIT);
    cr_assert_eq(uv_loop_close(&loop), 0);
    tls_env_free(&t);
}

/*
 * INFO connect_urls: what parse_url would refuse is skipped, a new server
 * is added with the credentials of the URL that led to it, and after a loss
 * the reader goes there (the configured server is gone).
 */
Test(nats_live, announced_servers_are_tried_with_the_same_credentials)
{
    struct capture cap;
    capture_start(&cap);
    struct ctx c;
    start(&c, "nats://us:pw@127.0.0.1:%d", 0, 0);
    fake_listen(&c.fs2, 0);
    char info[1024];
    snprintf(info, sizeof(info),
             "INFO {\"headers\":true,\"max_payload\":1048576,\"connect_urls\":["
             "\"127.0.0.1:%d\",\"127.0.0.1:%d\",\"x@y:1\",\"nats://h:2\",\"ho st:3\",12,"
             "\"[::1\",\"h:99999\"]}\r\n",
             c.fs.port, c.fs2.port);
    RUN_UNTIL(&c, c.fs.cfd >= 0, 3000);
    fake_say(&c.fs, info);
    RUN_UNTIL(&c, got_has(&c.fs, "PING\r\n"), 3000);
    fake_say(&c.fs, "PONG\r\n");
    RUN_UNTIL(&c, lr_up(c.lr), 3000);
    cr_assert(lr_up(c.lr));
    close(c.fs.lfd); /* the configured server goes away for good */
    c.fs.lfd = -1;
    fake_hangup(&c.fs);
    RUN_UNTIL(&c, c.fs2.cfd >= 0, 5000);
    cr_assert(c.fs2.cfd >= 0, "the announced server was not tried");
    fake_say(&c.fs2, INFO);
    RUN_UNTIL(&c, got_has(&c.fs2, "PING\r\n"), 3000);
    cr_assert(got_has(&c.fs2, "\"user\":\"us\"") && got_has(&c.fs2, "\"pass\":\"pw\""), "%.*s",
              (int)c.fs2.got_len, c.fs2.got);
    fake_say(&c.fs2, "PONG\r\n");
    RUN_UNTIL(&c, lr_up(c.lr), 3000);
    cr_assert(lr_up(c.lr));
    finish(&c);
    char *log = capture_end(&cap);
    char want[128];
    snprintf(want, sizeof(want), "server=127.0.0.1:%d tls=no announced=yes", c.fs2.port);
    cr_assert(strstr(log, "event=nats_live_servers servers=2 announced_new=1"), "%s", log);
    cr_assert(strstr(log, want), "%s", log);
    free(log);
}

/* A flood of announced servers is capped; an update forgets those it no longer lists. */
Test(nats_live, announced_servers_are_bounded_and_forgotten)
{
    rt_log_set_level(RT_LOG_DEBUG);
    struct capture cap;
    capture_start(&cap);
    struct ctx c;
    start(&c, "nats://127.0.0.1:%d", 0, 0);
    size_t cap_bytes = 300 * 24 + 256;
    char *info = malloc(cap_bytes);
    size_t n = (size_t)snprintf(
        info, cap_bytes, "INFO {\"headers\":true,\"max_payload\":1048576,\"connect_urls\":[");
    for (int i = 0; i < 300; i++)
        n += (size_t)snprintf(info + n, cap_bytes - n, "%s\"127.0.0.1:%d\"", i ? "," : "",
                              20000 + i);
    n += (size_t)snprintf(info + n, cap_bytes - n, "]}\r\n");
    RUN_UNTIL(&c, c.fs.cfd >= 0, 3000);
    fake_say(&c.fs, info);
    RUN_UNTIL(&c, got_has(&c.fs, "PING\r\n"), 3000);
    fake_say(&c.fs, "PONG\r\n");
    RUN_UNTIL(&c, lr_up(c.lr), 3000);
    fake_say(&c.fs, "INFO {\"connect_urls\":[\"127.0.0.1:20005\"]}\r\n");
    RUN_UNTIL(&c, false, 100);
    cr_assert(lr_up(c.lr), "an INFO update is not a reason to drop the connection");
    finish(&c);
    free(info);
    char *log = capture_end(&cap);
    cr_assert(strstr(log, "servers=64 announced_new=63 forgotten=0"), "%s", log);
    cr_assert(strstr(log, "servers=2 announced_new=0 forgotten=62"), "%s", log);
    free(log);
}

/*
 * The configured servers are tried in a random order: over 40 readers given
 * three URLs, each server is the first one tried by some of them (the odds
 * that one of three never comes first by chance are 3 * (2/3)^40, 3e-7).
 */
Test(nats_live, first_server_is_random)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct fake fs[3];
    for (int i = 0; i < 3; i++)
        fake_listen(&fs[i], 0);
    char urls[128];
    snprintf(urls, sizeof(urls), "nats://127.0.0.1:%d,nats://127.0.0.1:%d,nats://127.0.0.1:%d",
             fs[0].port, fs[1].port, fs[2].port);
    struct lr_hooks h = {NULL, NULL, NULL};
    int firsts[3] = {0, 0, 0};
    for (int r = 0; r < 40; r++) {
        struct lr *lr = NULL;
        cr_assert_eq(lr_create(&loop, urls, "t", 0, NULL, &h, &lr), RT_OK);
        int hit = -1;
        for (uint64_t dl = rt_mono_ms() + 3000; hit < 0 && rt_mono_ms() < dl;) {
            uv_run(&loop, UV_RUN_NOWAIT);
            for (int i = 0; i < 3 && hit < 0; i++) {
                int fd = accept(fs[i].lfd, NULL, NULL);
                if (fd >= 0) {
                    close(fd);
                    hit = i;
                }
            }
            usleep(500);
        }
        cr_assert_geq(hit, 0, "no connection");
        firsts[hit]++;
        lr_destroy(lr);
        for (int i = 0; i < 50 && uv_run(&loop, UV_RUN_NOWAIT); i++)
            usleep(200);
        for (int i = 0; i < 3; i++) { /* a retry that came meanwhile */
            int fd;
            while ((fd = accept(fs[i].lfd, NULL, NULL)) >= 0)
                close(fd);
        }
    }
    for (int i = 0; i < 3; i++) {
        cr_expect_gt(firsts[i], 0, "server %d never first (%d %d %d)", i, firsts[0], firsts[1],
                     firsts[2]);
        close(fs[i].lfd);
    }
    for (int i = 0; i < 100 && uv_run(&loop, UV_RUN_NOWAIT); i++)
        usleep(1000);
    cr_assert_eq(uv_loop_close(&loop), 0);
}

/*
 * Every secret the reader holds, through a refusal, a connection, an INFO
 * update and a reconnect, with the log at debug level: none of them in it.
 */
Test(nats_live, secrets_never_in_the_log)
{
    rt_log_set_level(RT_LOG_DEBUG);
    struct tls_case k;
    tls_env_make(&k.t, NULL);
    k.t.sec.ca_file[0] = 0;
    snprintf(k.t.sec.creds_file, sizeof(k.t.sec.creds_file), "%s",
             tls_env_file(&k.t, "user.creds", CREDS_FILE));
    struct ctx *c = tls_case_start(&k, "nats://alice:Pa55-w0rd@127.0.0.1:%d", 0);
    connect_after(c, INFO_NONCE);
    fake_say(&c->fs, "-ERR 'Authorization Violation'\r\n");
    run_until_eof(c);
    fake_hangup(&c->fs);
    connect_after(c, INFO_NONCE);
    fake_say(&c->fs, "PONG\r\nINFO {\"connect_urls\":[\"127.0.0.1:1\"]}\r\n");
    RUN_UNTIL(c, lr_up(c->lr), 3000);
    cr_assert(lr_up(c->lr));
    fake_hangup(&c->fs);
    RUN_UNTIL(c, !lr_up(c->lr), 3000);
    char *log = tls_case_end(&k);
    cr_assert(strstr(log, "Authorization Violation"), "the refusal is logged: %s", log);
    const char *secrets[] = {"Pa55-w0rd", "alice",    SEED_VECTOR, "SUACSSL3",
                             JWT_VECTOR,  "eyJ0eXAi", SIG_VECTOR,  "WosANJXg"};
    for (size_t i = 0; i < sizeof(secrets) / sizeof(secrets[0]); i++)
        cr_expect_not(strstr(log, secrets[i]), "\"%s\" in the log:\n%s", secrets[i], log);
    free(log);
}
