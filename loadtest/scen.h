/*
 * scen.h: the small engine under the single-process scenarios (presence,
 * churn, storm; docs/loadtest.md). These scenarios are about requests and
 * connection life cycles rather than delivery counts, so they do not go
 * through worker.c's phases: one process, one epoll loop, rtgate's protocol
 * only, at most LT_SCEN_MAX_CONNS connections.
 *
 * The engine opens a connection (TCP, upgrade, `connect`, and a `sub` when
 * the scenario asks for one), reports it ready, passes every later server
 * message to the scenario, and closes it when told. Handshakes refused with
 * HTTP 429/503 are retried after Retry-After (or a jittered backoff) when
 * the scenario allows it. Everything runs on the one thread.
 */
#ifndef LT_SCEN_H
#define LT_SCEN_H

#include "load.h"

#define LT_SCEN_MAX_CONNS 19000u /* one process: the fd limit is 20000 */

enum sc_state {
    SC_IDLE = 0,     /* closed, or never opened */
    SC_RETRY,        /* refused at the handshake; opens again at retry_at_ns */
    SC_CONNECTING,   /* TCP connect in progress */
    SC_HANDSHAKE,    /* upgrade request sent */
    SC_CONNECT_SENT, /* `connect` sent (and `sub` behind it) */
    SC_SUB_SENT,     /* `connected` came; waiting for the sub reply */
    SC_READY,
};

struct sc_conn {
    int fd;
    uint8_t state;       /* enum sc_state */
    uint8_t node;        /* 0: --url, 1: --url2 */
    uint8_t attempts;    /* this cycle's attempts */
    uint8_t frag_opcode; /* opcode of a fragmented message being reassembled, 0 = none */
    bool want_out;
    bool subscribe; /* send `sub` to the connection's channel after `connect` */
    uint32_t index;
    uint64_t cycle_ns;   /* when this cycle's first attempt started */
    uint64_t started_ns; /* this attempt */
    uint64_t retry_at_ns;
    uint8_t *rbuf; /* bytes of an incomplete frame or response */
    uint32_t rlen;
    uint32_t flen;
    uint8_t *fbuf; /* fragmented message */
    uint8_t *wbuf; /* bytes the socket did not take yet */
    uint32_t wlen;
    int64_t next_id; /* the scenario's request ids start at 3 (1 connect, 2 sub) */
    char key[25];
};

/* Counters of the engine: set-up problems and what came in. */
struct sc_counts {
    uint64_t attempts;
    uint64_t ready;
    uint64_t connect_errors;    /* socket/connect failed */
    uint64_t handshake_refused; /* HTTP 429/503 at the upgrade (each refusal) */
    uint64_t handshake_retries; /* ... of which were retried */
    uint64_t
        handshake_failures; /* other upgrade failures, or refusals not retried / out of tries */
    uint64_t setup_errors;  /* connect/sub answered with an error */
    uint64_t setup_timeouts;
    uint64_t server_closes; /* ready connections the server closed or reset */
    uint64_t server_disconnects;
    uint64_t protocol_errors;
    uint64_t error_msgs; /* `error` messages */
    uint64_t frames_in, msgs_in, bytes_in;
    uint64_t error_codes[LT_ERR_CODES]; /* set-up refusals and `error` messages, by code */
};

struct sc_engine;

/* What a scenario hears from the engine; every callback is optional. */
struct sc_ops {
    void (*on_ready)(struct sc_engine *e, struct sc_conn *c);
    /* The cycle was given up before ready (error, timeout, refused without retry). */
    void (*on_failed)(struct sc_engine *e, struct sc_conn *c);
    /* A ready connection was closed or reset by the server. */
    void (*on_lost)(struct sc_engine *e, struct sc_conn *c);
    /* Every server message after `connected` (and the sub reply); raw is its bytes (JSON). */
    void (*on_msg)(struct sc_engine *e, struct sc_conn *c, const struct lt_smsg *m,
                   const uint8_t *raw, size_t raw_len);
};

struct sc_engine {
    const struct lt_config *cfg;
    struct sc_ops ops;
    void *arg;
    int ep;
    uint64_t now;
    uint64_t rng;
    struct sc_conn *conns;
    uint32_t nconns;
    uint32_t handshaking; /* in SC_CONNECTING .. SC_SUB_SENT */
    uint32_t retrying;
    bool retry_refused; /* 429/503 at the handshake: retry (storm, set-up) or give up (churn) */
    uint64_t next_housekeep;
    struct sc_counts n;
    struct lt_hist setup; /* successful attempts: TCP connect to ready */
    uint8_t *rx;
    uint8_t *tx; /* LT_WS_HEADROOM + SC_TX_CAP */
};

#define SC_TX_CAP (64 * 1024)

/* Allocates nconns idle connections; false when out of memory (sc_free cleans up). */
bool sc_init(struct sc_engine *e, const struct lt_config *cfg, uint32_t nconns,
             const struct sc_ops *ops, void *arg);
void sc_free(struct sc_engine *e);
/* Raises RLIMIT_NOFILE to at least need; false when it cannot. */
bool sc_raise_fd_limit(uint32_t need);

/* Starts a new cycle on an idle connection: TCP connect to its node. */
void sc_open(struct sc_engine *e, struct sc_conn *c);
/* Client-side close: a close frame when ready, then close(); the connection is idle again. */
void sc_close(struct sc_engine *e, struct sc_conn *c);
/* The buffer a request is encoded into, then sent as one frame by sc_send. */
struct lt_out sc_tx(struct sc_engine *e);
void sc_send(struct sc_engine *e, struct sc_conn *c, size_t len);
/* Waits for events until `until` (CLOCK_MONOTONIC ns) at the latest, handles them and the timers.
 */
void sc_poll(struct sc_engine *e, uint64_t until);
/* Connections in set-up (handshaking or waiting for a retry). */
uint32_t sc_in_setup(const struct sc_engine *e);
uint64_t sc_rand(struct sc_engine *e);
double sc_rand01(struct sc_engine *e);

/* The channel of connection i: "<prefix>.c<i % channels>". */
void sc_channel(const struct lt_config *cfg, uint32_t i, char *out, size_t cap);

/* JSON output helpers: each writes `"key":value` preceded by a comma. */
void sc_json_hist(FILE *f, const char *key, const struct lt_hist *h);
void sc_json_counts(FILE *f, const struct sc_counts *n);
/*
 * "server":{...}: CPU of the window [a, b] as total seconds and µs per unit
 * (units names it, e.g. "set"), RSS at before / a / b. Nothing without --server-pid.
 */
void sc_json_server(FILE *f, const struct lt_config *cfg, const struct lt_proc_sample *before,
                    const struct lt_proc_sample *a, const struct lt_proc_sample *b,
                    const char *const *unit_names, const double *units, size_t n_units);
/* Writes the line (built by fn into memory) to stdout and appends it to --json. */
void sc_emit(const struct lt_config *cfg, void (*fn)(FILE *f, const void *arg), const void *arg);
/* Percentile of h in µs. */
double sc_us(const struct lt_hist *h, double q);

/* The scenarios. */
int lt_scen_presence(const struct lt_config *cfg);
int lt_scen_churn(const struct lt_config *cfg);
int lt_scen_storm(const struct lt_config *cfg);

/* presence's pure pieces, for the self-test. */
/* Finds a `geo` event in one JSON message: its kind (0 join, 1 move, 2 leave) and member.meta.t. */
bool sc_geo_event(const uint8_t *raw, size_t len, int *kind, bool *has_t, uint64_t *t);
/* Members in a geo.near reply (counts "client" keys). */
uint32_t sc_count_members(const uint8_t *raw, size_t len);
/* Encodes a geo.set with meta {"t":t}; JSON. */
void sc_enc_geo_set(struct lt_out *o, int64_t id, const char *space, double lat, double lon,
                    uint64_t t);
/* One random-walk step of step_m metres, reflected at the square's edges. */
void sc_walk(double *lat, double *lon, double angle, double step_m, double lat_lo, double lat_hi,
             double lon_lo, double lon_hi);

#endif
