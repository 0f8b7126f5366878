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

#include "net.h"

#define LT_SCEN_MAX_CONNS 19000u /* one process: the fd limit is 20000 */

/* The greeting's steps while the engine says HELLO (lt_conn.hello_step). */
enum sc_step {
    SC_STEP_NONE = 0,
    SC_STEP_CONNECT_SENT, /* `connect` sent (and `sub` behind it) */
    SC_STEP_SUB_SENT,     /* `connected` came; waiting for the sub reply */
};

struct sc_conn {
    struct lt_conn link; /* the engine's part: first. link.endpoint 0: --url, 1: --url2 */
    bool subscribe;      /* send `sub` to the connection's channel after `connect` */
    uint32_t index;
    int64_t next_id; /* the scenario's request ids start at 3 (1 connect, 2 sub) */
};

/* Counters: the engine's (set-up and transport), and what this layer adds. */
struct sc_counts {
    struct lt_net_counts net;
    uint64_t setup_refused; /* connect/sub answered with an error */
    uint64_t server_disconnects;
    uint64_t error_msgs;                /* `error` messages */
    uint64_t error_codes[LT_ERR_CODES]; /* set-up refusals and `error` messages, by code */
};

/* `setup_errors` in the JSON: refusals of the greeting and set-up timeouts. */
static inline uint64_t sc_setup_errors(const struct sc_counts *n)
{
    return n->setup_refused + n->net.setup_timeouts;
}

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
    struct lt_net net; /* its `now` is the scenario's clock */
    struct sc_conn *conns;
    uint32_t nconns;
    struct sc_counts n;
    struct lt_hist setup; /* successful attempts: TCP connect to ready */
};

#define SC_TX_CAP (64 * 1024)

/*
 * Allocates nconns idle connections to --url (sc_place moves one to
 * --url2); retry_refused: 429/503 at the upgrade are retried (storm,
 * presence) or count as failures (churn). False when out of memory
 * (sc_free cleans up).
 */
bool sc_init(struct sc_engine *e, const struct lt_config *cfg, uint32_t nconns,
             const struct sc_ops *ops, void *arg, bool retry_refused);
void sc_free(struct sc_engine *e);
/* Connection c connects to --url (node 0) or --url2 (node 1). */
void sc_place(struct sc_engine *e, struct sc_conn *c, uint8_t node);
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
