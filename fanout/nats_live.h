/*
 * nats_live.h: a core-NATS subscriber that runs on the gateway's libuv loop
 * (nats_live.c), for the nats engine's live channel subjects.
 *
 * Why: nats.c reads its socket on one thread and calls subscription
 * callbacks on another, so every message woke three threads (nats.c's
 * reader, its delivery thread, then the loop through uv_async) before it
 * reached a socket. On the loop, a message costs one wake-up of the thread
 * that writes it out, and a burst costs one wake-up for all of it.
 *
 * It holds its own TCP connection to the same servers as nats.c (nats:// or
 * tls:// URLs, user:pass@ or token@ in the URL), answers PINGs, sends its
 * own every 5 s (two unanswered: reconnect), and reconnects to the next
 * server 250 ms after a loss, subscribing again to everything (replay hook).
 * The configured servers are tried in a random order, then the ones the
 * cluster announces in INFO (connect_urls). TLS (nats_tls.h: a memory-buffer
 * session over the same non-blocking socket) when a URL is tls://, a CA or
 * client certificate is given, or the server requires it; the server's
 * certificate must name the host. A .creds file or an NKey seed
 * (nats_creds.h) signs the server's nonce in CONNECT.
 * lr_confirm tells, without waiting, when the server has seen every SUB so
 * far: it sends a PING and calls back once its PONG is read.
 *
 * Read window: while reads come less than window_ms apart, the socket is
 * read on a timer every window_ms instead of on readiness, so a stream of
 * messages costs one wake-up per window instead of one per message; when a
 * timed read finds nothing, it goes back to reading on readiness. 0: always
 * on readiness.
 */
#ifndef NATS_LIVE_H
#define NATS_LIVE_H

#include "fanout.h"
#include "nats_wire.h"
#include "rt.h"

struct lr;

struct lr_hooks {
    void *ctx;
    /* A message on one of the subscriptions (sid), on the loop thread. */
    void (*msg)(void *ctx, const struct nw_msg *m);
    /* After each (re)connect: call lr_resub for every subscription to keep. */
    void (*replay)(void *ctx, struct lr *lr);
};

struct lr_stats {
    uint64_t msgs, bytes;      /* MSG / HMSG received, payload bytes */
    uint64_t wakeups;          /* reads on readiness or on the window timer */
    uint64_t connects;         /* handshakes completed */
    uint64_t bad;              /* connections dropped for a protocol error */
    uint64_t confirm_failures; /* lr_confirm answered RT_UNAVAILABLE (connection lost) */
};

/*
 * urls: "(nats|tls)://[user:pass@|token@]host[:port][,...]" (the --nats
 * value); security: TLS and credential files (NULL: none), read here, once.
 * RT_INVAL for a URL it cannot use (ws://, no host): the nats engine then
 * does not start (it has no other path for live messages); RT_INVAL too for
 * a security file it cannot
 * use, after a log line (nats_security_invalid) that names it. Starts
 * connecting at once. Loop thread, like every function here.
 */
rt_status lr_create(void *uv_loop, const char *urls, const char *name, uint32_t window_ms,
                    const struct fo_nats_security *security, const struct lr_hooks *hooks,
                    struct lr **out);
/* Closes the connection; the memory goes once the loop has run the close callbacks. */
void lr_destroy(struct lr *lr);

/* A new subscription (SUB now if connected, else at the next connect); its sid. */
uint64_t lr_sub(struct lr *lr, const char *subject);
/* In the replay hook: subscribe again with the same sid. */
void lr_resub(struct lr *lr, const char *subject, uint64_t sid);
void lr_unsub(struct lr *lr, uint64_t sid);
/* The answer to lr_confirm: RT_OK, or RT_UNAVAILABLE when the connection was lost first. */
typedef void (*lr_confirm_fn)(void *arg, rt_status st);
/*
 * Sends a PING and returns at once; fn(arg, RT_OK) runs on the loop once the
 * server has answered it, i.e. has handled everything sent before it (SUBs
 * included). If the connection is lost first, fn(arg, RT_UNAVAILABLE) runs
 * from the loop's retry timer. fn is never called from inside lr_confirm;
 * it may call lr_* functions. Waiters are answered in the order they came.
 * RT_UNAVAILABLE (fn not called) when not connected; RT_NOMEM. There is no
 * timeout of its own: a server that stops answering is dropped by the
 * keepalive (two PINGs 5 s apart), which fails the waiters.
 */
rt_status lr_confirm(struct lr *lr, lr_confirm_fn fn, void *arg);
bool lr_up(const struct lr *lr);
void lr_get_stats(const struct lr *lr, struct lr_stats *out);

#endif
