/*
 * net.h: the connection engine under both of rtgate-load's drivers: the
 * workers of the delivery scenarios (worker.c) and the single-process
 * scenarios (scen.c). One epoll loop over the driver's array of
 * connections, and everything between a socket and a message:
 *
 *   - TCP connect, bound round-robin to a --source-addrs address;
 *   - the WebSocket upgrade and its checks; 429/503 at the upgrade retried
 *     after Retry-After (or a jittered backoff) within --setup-timeout;
 *   - frames in (fragments joined, ping answered, close echoed) and out
 *     (masked in place), a bounded queue of what the socket did not take;
 *   - set-up timeouts, and counters of all of the above.
 *
 * What the connection says is the driver's business: the engine reports a
 * connection up (upgraded, or TCP connected), hands over each rtgate
 * message (or, for NATS, the byte stream), and reports a connection gone.
 * A connection goes IDLE -> CONNECTING -> UPGRADING -> HELLO -> READY; the
 * driver moves it from HELLO to READY (lt_net_ready) once its greeting is
 * answered. Single-threaded: every function runs on the process's only
 * thread, and callbacks come from inside lt_net_poll, lt_net_open and the
 * send functions (a write that fails reports the connection gone).
 *
 * TLS (wss://) is a property of an endpoint: the engine runs the handshake
 * (state TLS) between TCP and the upgrade and reads and writes through
 * tls.c; the drivers never touch a socket.
 */
#ifndef LT_NET_H
#define LT_NET_H

#include "load.h"

enum lt_conn_state {
    LT_CONN_IDLE = 0,   /* no socket: not opened yet, closed, or given up */
    LT_CONN_RETRY,      /* refused at the upgrade; opens again at retry_at_ns */
    LT_CONN_CONNECTING, /* TCP connect in progress */
    LT_CONN_TLS,        /* TLS handshake in progress (wss://) */
    LT_CONN_UPGRADING,  /* upgrade request sent */
    LT_CONN_HELLO,      /* transport up: the driver's greeting is under way */
    LT_CONN_READY,      /* the driver said so */
};

/* What runs over an endpoint's connections. */
enum lt_framing {
    LT_FRAMING_RTGATE,     /* WebSocket; each data message holds rtgate messages (cfg->codec) */
    LT_FRAMING_WS_STREAM,  /* WebSocket; data frames carry a byte stream (NATS over WebSocket) */
    LT_FRAMING_TCP_STREAM, /* a plain TCP byte stream (NATS) */
};

/* Where and how a connection connects; the engine keeps a few, connections name one. */
struct lt_endpoint {
    enum lt_framing framing;
    const struct sockaddr_storage *dst;
    socklen_t dst_len;
    const char *host_header; /* WebSocket: the Host header */
    const char *path;        /* WebSocket: the request path */
    const char *subprotocol; /* WebSocket: offered, and required in the answer; NULL = none */
    uint8_t data_opcode;     /* WebSocket: LT_WS_TEXT or LT_WS_BINARY, for lt_net_send */
    bool bind_source;        /* bind to a --source-addrs address when there are some */
    bool tls;                /* wss://: TLS before the upgrade */
    const char *server_name; /* TLS: the name (or IP) the certificate must carry */
    size_t max_pending;      /* unparsed bytes past which the peer is broken (0: one frame) */
};

#define LT_NET_MAX_ENDPOINTS 4
#define LT_NET_NO_SOURCE     0xFF

/* One connection's transport state: the first member of each driver's connection struct. */
struct lt_conn {
    int fd;           /* -1 without a socket */
    void *tls;        /* the TLS state (tls.c) of a wss:// connection, else NULL */
    uint32_t id;      /* index in the driver's array */
    uint32_t gen;     /* bumped whenever the socket goes: a callback that closed it shows */
    uint8_t state;    /* enum lt_conn_state */
    uint8_t endpoint; /* index into the engine's endpoints */
    uint8_t source;   /* --source-addrs slot to bind to, or LT_NET_NO_SOURCE */
    uint8_t attempts; /* this cycle's */
    uint8_t
        hello_step; /* free for the driver: its greeting's step while HELLO (zeroed per attempt) */
    uint8_t frag_opcode; /* opcode of a fragmented message being joined, 0 = none */
    bool want_out;       /* EPOLLOUT is registered */
    bool closing;        /* our close frame went out: the server's close is the answer */
    uint64_t cycle_ns;   /* this cycle's first attempt: retries stop --setup-timeout after it */
    uint64_t started_ns; /* this attempt */
    uint64_t retry_at_ns;
    uint8_t *rbuf; /* bytes of an incomplete frame, response or stream operation */
    uint32_t rlen;
    uint32_t flen;
    uint8_t *fbuf; /* a fragmented message (stream framing: an unfinished operation) */
    uint8_t *wbuf; /* bytes the socket did not take yet */
    uint32_t wlen;
    char key[25]; /* Sec-WebSocket-Key while upgrading */
};

/* What the engine counts; the drivers report them. */
struct lt_net_counts {
    uint64_t attempts;           /* connection attempts, retries included */
    uint64_t ready;              /* lt_net_ready calls */
    uint64_t connect_errors;     /* socket, bind or connect failed */
    uint64_t handshake_refused;  /* HTTP 429/503 at the upgrade (each refusal) */
    uint64_t handshake_retries;  /* ... of which were retried */
    uint64_t handshake_failures; /* other upgrade failures, or refusals not retried */
    uint64_t setup_timeouts;     /* not ready within --setup-timeout */
    uint64_t server_closes;      /* ready connections the server closed or that broke */
    uint64_t protocol_errors;    /* frames or messages that could not be read */
    uint64_t frames_in;
    uint64_t msgs_in; /* rtgate messages (drivers add their stream operations) */
    uint64_t bytes_in;
};

enum lt_down {
    LT_DOWN_FAILED, /* never got ready: connect or upgrade failed, refused, timed out, closed */
    LT_DOWN_LOST,   /* was ready: the server closed it, or the socket broke */
};

struct lt_net;

/* The driver's side; on_up and on_down are required, the rest as the endpoints need. */
struct lt_net_ops {
    /* The transport is up (upgraded, or TCP connected; state HELLO): greet. */
    void (*on_up)(struct lt_net *net, struct lt_conn *c);
    /* One rtgate message (LT_FRAMING_RTGATE); raw is its bytes. */
    void (*on_msg)(struct lt_net *net, struct lt_conn *c, const struct lt_smsg *m,
                   const uint8_t *raw, size_t raw_len);
    /* Stream bytes (the stream framings): returns how many were used (the
     * rest comes again with more), or -1 after closing the connection. */
    long (*on_stream)(struct lt_net *net, struct lt_conn *c, const uint8_t *p, size_t len);
    /* The connection is gone (state IDLE, buffers freed); err is errno, 0 for a close or EOF.
     * Not called for the driver's own lt_net_close. */
    void (*on_down)(struct lt_net *net, struct lt_conn *c, enum lt_down why, int err);
    /* Optional: the upgrade was refused with `status` (429 or 503), before the retry decision. */
    void (*on_refused)(struct lt_net *net, struct lt_conn *c, int status);
    /* Optional: a descriptor given to lt_net_watch is readable; false stops lt_net_poll. */
    bool (*on_fd)(struct lt_net *net, uint32_t tag);
};

struct lt_net_params {
    const struct lt_config *cfg; /* codec, --source-addrs, --setup-timeout, --max-handshaking, -v */
    struct lt_endpoint endpoints[LT_NET_MAX_ENDPOINTS];
    size_t n_endpoints;
    void *conns; /* the driver's array: each element starts with a struct lt_conn */
    size_t stride;
    uint32_t nconns;
    struct lt_net_ops ops;
    void *owner;                  /* the driver, for its callbacks */
    struct lt_net_counts *counts; /* where the engine counts (the driver's) */
    struct lt_hist *setup;        /* attempt start to ready, per connection that got ready */
    size_t tx_cap;                /* largest payload lt_net_send sends at once */
    size_t max_queued;            /* bytes queued for one connection before it counts as lost */
    bool retry_refused;           /* retry 429/503 at the upgrade, or give up at once */
    uint64_t housekeep_ns;        /* how often set-up timeouts and due retries are looked at */
};

struct lt_net {
    struct lt_net_params p;
    int ep;
    uint64_t now;        /* CLOCK_MONOTONIC ns, as of the last event */
    uint32_t setting_up; /* connections in CONNECTING, UPGRADING or HELLO */
    uint32_t retrying;   /* in RETRY */
    uint64_t next_housekeep;
    uint64_t rng;
    bool have_pwait2;
    uint8_t *rx; /* one read, after the leftover of the last */
    size_t rx_cap;
    uint8_t *tx;   /* LT_WS_HEADROOM + tx_cap: payloads are framed in place */
    void *tls_ctx; /* tls.c's client context, when an endpoint is wss:// */
};

/* Sets the engine up over params->conns (all IDLE, fds -1); false when out of
 * memory or without epoll (lt_net_free cleans up either way). */
bool lt_net_init(struct lt_net *net, const struct lt_net_params *params);
/* Closes every socket, frees every buffer; a zeroed or freed engine is fine (the
 * driver's array must still be there). */
void lt_net_free(struct lt_net *net);
/* Also waits for fd to be readable: ops.on_fd(tag) is called when it is. */
bool lt_net_watch(struct lt_net *net, int fd, uint32_t tag);
/*
 * Waits for events until `until` (CLOCK_MONOTONIC ns) at the latest (sooner
 * while connections are being set up, for their timeouts), handles them and
 * the set-up timers. False when epoll failed or on_fd said stop.
 */
bool lt_net_poll(struct lt_net *net, uint64_t until);

/* The driver's connection i. */
static inline struct lt_conn *lt_net_conn(const struct lt_net *net, uint32_t i)
{
    return (struct lt_conn *)(void *)((char *)net->p.conns + (size_t)i * net->p.stride);
}
static inline bool lt_net_in_setup(const struct lt_conn *c)
{
    return c->state >= LT_CONN_CONNECTING && c->state <= LT_CONN_HELLO;
}

/* Points c at endpoints[endpoint], bound (if the endpoint binds) to the --source-addrs address
 * spread % n_src: consecutive spreads go round-robin over the addresses. */
void lt_net_place(struct lt_net *net, struct lt_conn *c, uint8_t endpoint, uint32_t spread);
/* Starts a new cycle on an IDLE connection: a TCP connect to its endpoint. */
void lt_net_open(struct lt_net *net, struct lt_conn *c);
/* The driver's greeting was answered: HELLO -> READY, counted and timed. */
void lt_net_ready(struct lt_net *net, struct lt_conn *c);
/* The client's close: a close frame when ready and nothing waits (WebSocket), then
 * close(). The connection is IDLE again; on_down is not called. */
void lt_net_close(struct lt_net *net, struct lt_conn *c);
/* The driver found the peer broken (a protocol it cannot read) or gives up
 * on its greeting: as if the socket broke, on_down(LOST) when the connection
 * was ready (a server close), else on_down(FAILED). */
void lt_net_abort(struct lt_net *net, struct lt_conn *c, int err);

/* The buffer a message is encoded into, then sent by lt_net_send. */
struct lt_out lt_net_tx(struct lt_net *net);
/* Sends the len bytes at the tx buffer: one data frame of the endpoint's opcode
 * (WebSocket), or as they are (TCP). */
void lt_net_send(struct lt_net *net, struct lt_conn *c, size_t len);
/* A pseudo-random number (masking keys, nonces, jitter, random walks; not secrets). */
uint64_t lt_net_rand(struct lt_net *net);

#endif
