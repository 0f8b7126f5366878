/*
 * The loop reader (fanout/nats_live.c) against a scripted fake NATS server
 * on a loopback socket. The test thread plays the server with non-blocking
 * sockets between steps of the uv loop, so everything is deterministic; a
 * reply lr_flush waits for is written before lr_flush is called.
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

#include "nats_live.h"
#include "rt.h"

struct fake {
    int lfd, cfd;
    int port;
    char got[1 << 16]; /* what the reader sent (the tail, if it sent more) */
    size_t got_len;
    bool eof;
};

struct ctx {
    uv_loop_t loop;
    uv_timer_t alive; /* the reader's handles are unref'd: this keeps uv_run running */
    struct fake fs;
    struct lr *lr;
    size_t msgs, replays;
    uint64_t last_sid;
    uint64_t sids[8];
    char subjects[8][64];
    size_t n_subs;
    char connect[4096]; /* what the reader sent during the last handshake */
};

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

/* One step of the loop, and of the fake server: accept, read what came. */
static void step(struct ctx *c)
{
    uv_run(&c->loop, UV_RUN_NOWAIT);
    struct fake *fs = &c->fs;
    if (fs->cfd < 0) {
        int fd = accept(fs->lfd, NULL, NULL);
        if (fd >= 0) {
            nonblock(fd);
            fs->cfd = fd;
            fs->got_len = 0;
            fs->eof = false;
        }
    }
    usleep(1000);
}

static void fake_read(struct fake *fs)
{
    while (fs->cfd >= 0 && !fs->eof) {
        if (fs->got_len == sizeof(fs->got)) { /* keep the tail */
            memmove(fs->got, fs->got + sizeof(fs->got) / 2, sizeof(fs->got) / 2);
            fs->got_len = sizeof(fs->got) / 2;
        }
        ssize_t r = recv(fs->cfd, fs->got + fs->got_len, sizeof(fs->got) - fs->got_len, 0);
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
        ssize_t r = send(fs->cfd, s, n, MSG_NOSIGNAL);
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
    if (fs->cfd >= 0)
        close(fs->cfd);
    fs->cfd = -1;
}

static const char *INFO = "INFO {\"server_id\":\"x\",\"headers\":true,\"max_payload\":1048576}\r\n";

static void on_alive(uv_timer_t *t)
{
    (void)t;
}

static void start(struct ctx *c, const char *url_fmt, uint32_t window_ms, int rcvbuf)
{
    memset(c, 0, sizeof(*c));
    cr_assert(uv_loop_init(&c->loop) == 0);
    uv_timer_init(&c->loop, &c->alive);
    uv_timer_start(&c->alive, on_alive, 1000000, 1000000);
    fake_listen(&c->fs, rcvbuf);
    char url[128];
    snprintf(url, sizeof(url), url_fmt, c->fs.port);
    struct lr_hooks h = {c, on_msg, on_replay};
    cr_assert(lr_create(&c->loop, url, "test", window_ms, NULL, &h, &c->lr) == RT_OK);
}

/* Accepts the reader's connection and completes the handshake. */
static void handshake(struct ctx *c)
{
    RUN_UNTIL(c, c->fs.cfd >= 0, 3000);
    cr_assert(c->fs.cfd >= 0, "the reader never connected");
    fake_say(&c->fs, INFO);
    RUN_UNTIL(c, got_has(&c->fs, "PING\r\n"), 3000);
    cr_assert(got_has(&c->fs, "CONNECT {"), "no CONNECT");
    size_t n = c->fs.got_len < sizeof(c->connect) - 1 ? c->fs.got_len : sizeof(c->connect) - 1;
    memcpy(c->connect, c->fs.got, n);
    c->connect[n] = 0;
    fake_say(&c->fs, "PONG\r\n");
    RUN_UNTIL(c, lr_up(c->lr), 3000);
    cr_assert(lr_up(c->lr));
    c->fs.got_len = 0;
}

static void finish(struct ctx *c)
{
    lr_destroy(c->lr);
    uv_close((uv_handle_t *)&c->alive, NULL);
    fake_hangup(&c->fs);
    close(c->fs.lfd);
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
 * a flush that times out then kicks the io timer, which handles the (empty,
 * NULL) buffer.
 */
Test(nats_live, flush_timeout_after_the_buffer_was_freed)
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
    cr_assert_eq(lr_flush(c.lr, 50), RT_UNAVAILABLE); /* no PONG */
    RUN_UNTIL(&c, false, 50);
    fake_say(&c.fs, "PONG\r\n");
    RUN_UNTIL(&c, false, 50);
    cr_assert(lr_up(c.lr));
    struct lr_stats st;
    lr_get_stats(c.lr, &st);
    cr_assert_eq(st.flush_timeouts, 1);
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
 * a flush meanwhile reads the socket itself; whatever happens, messages
 * keep coming and a quiet spell goes back to reading on readiness.
 */
Test(nats_live, window_survives_flush)
{
    struct ctx c;
    start(&c, "nats://127.0.0.1:%d", 30, 0);
    handshake(&c);
    uint64_t sid = sub(&c, "a.b");
    for (int round = 0; round < 3; round++) {
        size_t base = c.msgs;
        msg_to(&c, sid, "1");
        RUN_UNTIL(&c, c.msgs == base + 1, 2000);
        msg_to(&c, sid, "2"); /* within the window: windowed from here */
        RUN_UNTIL(&c, c.msgs == base + 2, 2000);
        cr_assert_eq(c.msgs, base + 2);
        msg_to(&c, sid, "3");
        fake_say(&c.fs, "PONG\r\n"); /* answers the flush below */
        usleep(2000);
        cr_assert_eq(lr_flush(c.lr, 1000), RT_OK);
        RUN_UNTIL(&c, c.msgs == base + 3, 2000);
        cr_assert_eq(c.msgs, base + 3);
        RUN_UNTIL(&c, false, 100); /* quiet: back to readiness */
        msg_to(&c, sid, "4");
        RUN_UNTIL(&c, c.msgs == base + 4, 2000);
        cr_assert_eq(c.msgs, base + 4, "round %d", round);
    }
    cr_assert(lr_up(c.lr));
    finish(&c);
}

/* A flush that reads EOF, windowed or not: the reader reconnects. */
Test(nats_live, flush_reads_eof)
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
        shutdown(c.fs.cfd, SHUT_WR);
        usleep(2000);
        cr_assert_eq(lr_flush(c.lr, 1000), RT_UNAVAILABLE);
        RUN_UNTIL(&c, !lr_up(c.lr), 2000);
        cr_assert_not(lr_up(c.lr), "window %u: EOF not seen", window);
        fake_hangup(&c.fs);
        handshake(&c);
        cr_assert_eq(c.replays, 2);
        finish(&c);
    }
}

/* Junk read during a flush: the flush gives up at once instead of blocking the loop 1 s. */
Test(nats_live, flush_stops_at_junk)
{
    struct ctx c;
    start(&c, "nats://127.0.0.1:%d", 0, 0);
    handshake(&c);
    fake_say(&c.fs, "HELLO\r\nPONG\r\n");
    usleep(2000);
    uint64_t t0 = rt_mono_ms();
    cr_assert_eq(lr_flush(c.lr, 1000), RT_UNAVAILABLE);
    cr_assert_lt(rt_mono_ms() - t0, 500);
    RUN_UNTIL(&c, !lr_up(c.lr), 2000);
    cr_assert_not(lr_up(c.lr));
    struct lr_stats st;
    lr_get_stats(c.lr, &st);
    cr_assert_eq(st.bad, 1);
    finish(&c);
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
