/*
 * gw.h: internals of the gateway executable. The only module that includes
 * libwebsockets.h (in server.c, ws.c and the files of the HTTP listener;
 * never session.c, which knows no transport). Everything here runs on the
 * loop thread unless a comment says otherwise.
 */
#ifndef GW_H
#define GW_H

#include "edge.h"
#include "fanout.h"
#include "flush_window.h"
#include "geo.h"
#include "protocol.h"
#include "rt.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define GW_MAX_EPHEMERAL       64
#define GW_MAX_ALLOW           64 /* patterns of one default policy (--sub-allow ...) */
#define GW_GEO_WAITING_MAX     16 /* near / watch requests of one connection waiting for the fleet */
#define GW_MAX_ORIGINS         64
#define GW_MAX_TRUSTED_PROXIES 64
#define GW_NODE_KEY_BYTES      8 /* names one gateway process in session tokens and subjects */

/* Presence subs of one connection waiting for the channel's members (chan_presence.c). */
#define GW_PRESENCE_WAITING_MAX 16

struct auth_key;
struct auth_claims;

/* A default permission policy: channel patterns (authz.c). */
struct gw_policy {
    char *pat[GW_MAX_ALLOW];
    size_t n;
    bool given; /* by a flag; otherwise authz.c fills the default */
};

/* Configuration: defaults, then the config file, then flags. */
struct gw_config {
    char listen_host[64];
    int listen_port;
    char ws_path[64];
    char node_id[64];
    const char *ephemeral[GW_MAX_EPHEMERAL];
    size_t n_ephemeral;
    size_t history;
    uint64_t history_age_ms;
    uint64_t dedup_window_ms;
    struct rt_bucket_cfg pub_bucket;  /* publishes per connection */
    struct rt_bucket_cfg msg_bucket;  /* every inbound message per connection */
    struct rt_bucket_cfg ip_bucket;   /* handshakes per remote IP */
    struct rt_bucket_cfg conn_bucket; /* handshakes of the whole node (connrate.c); rate 0 = off */
    uint32_t max_unacked;
    uint32_t max_subs;
    size_t max_message_bytes;
    size_t max_outbox_bytes;
    uint32_t max_connections;
    uint32_t connect_timeout_ms;
    uint32_t ping_interval_ms;
    uint32_t idle_timeout_ms;
    uint32_t abuse_limit;     /* refused messages ... */
    uint32_t abuse_window_ms; /* ... within this window close with 1008 */
    uint32_t abuse_block_ms;  /* after_ms told to a client closed for abuse */
    uint32_t drain_grace_ms;  /* drain: sessions stay this long after readiness turns false */
    uint32_t drain_ms;        /* then their closes are spread over this window */
    uint32_t drain_timeout_ms;
    struct rt_bucket_cfg geo_bucket; /* geo.set per connection */
    uint32_t geo_precision;
    uint32_t geo_max_members;          /* node-wide */
    uint32_t geo_max_spaces;           /* spaces one connection is present in */
    uint32_t geo_max_watches;          /* watches per connection */
    uint32_t presence_ttl_ms;          /* fleet (--nats): a silent node's members go */
    uint32_t geo_share_precision;      /* fleet: cells of the bus subjects */
    uint32_t geo_follow_linger_ms;     /* fleet: near-only cells followed this long */
    uint32_t geo_snapshot_wait_ms;     /* fleet: longest wait for snapshot answers */
    uint32_t geo_max_follows;          /* fleet: cells followed at once */
    uint32_t geo_max_follows_per_conn; /* fleet: of them, charged to one connection; 0 = auto */
    uint32_t geo_publish_ms;           /* fleet: presence changes go out at most this often */
    uint32_t workers;                  /* processes sharing the port */
    uint32_t flush_window_ms;     /* least time between two writes to one connection; 0 = none */
    uint32_t flush_window_max_ms; /* the window grows up to this while the loop is saturated */
    size_t rx_buffer;
    enum rt_log_level log_level;
    char nats_url[1024];  /* --nats: non-empty selects the nats engine */
    char nats_stream[64]; /* JetStream stream of durable channels (default RTGATE) */
    uint32_t nats_replicas;
    uint32_t nats_read_window_ms;       /* the loop reader's read window */
    uint32_t sub_timeout_ms;            /* a sub waiting for NATS gets 503 after this */
    uint32_t max_pending_subs;          /* subs waiting for NATS on the node (503 past it) */
    uint32_t max_pending_subs_per_conn; /* of them, per connection (429); 0: max_subs */
    /* Tokens and permissions (authz.c, docs/protocol.md "Authentication"). */
    char jwt_key_file[1024]; /* --jwt-key: non-empty turns authentication on */
    char jwt_alg[8];         /* "" = derived from a PEM public key */
    uint32_t jwt_leeway_ms;
    char jwt_audience[256];   /* --jwt-audience: what a token's aud must hold; "" = no aud */
    uint32_t allow_anonymous; /* 1: a connect without a token is anonymous */
    struct gw_policy sub_allow, pub_allow, geo_allow;
    struct auth_key *jwt_key; /* loaded from jwt_key_file at start; NULL = no auth */
    char static_dir[1024];    /* --static: a folder served over HTTP from memory */
    size_t static_max_bytes;  /* its size limit, checked at start */
    /* The edge: who may connect and who they are (server.c's handshake,
     * listener.c, tls.c, edge.h). */
    const char *allow_origin[GW_MAX_ORIGINS]; /* normalised; none = any Origin */
    size_t n_allow_origin;
    char tls_cert[512]; /* PEM chain, leaf first; with tls_key: wss:// and https:// */
    char tls_key[512];
    uint32_t handshake_timeout_ms; /* each stage: PROXY header, TLS, HTTP headers */
    char proxy_protocol[8];        /* "v2": a PROXY v2 header precedes each connection */
    struct edge_cidr trusted_proxy[GW_MAX_TRUSTED_PROXIES];
    size_t n_trusted_proxy;
    bool proxy_v2; /* derived: proxy_protocol is "v2" */
    /* --nats-ca, --nats-tls-cert, --nats-tls-key, --nats-creds, --nats-nkey */
    struct fo_nats_security nats_security;
    /* The HTTP transports: SSE, long-polling, POST (http.h, docs/protocol.md). */
    uint32_t http_transports;       /* 1: /sse, /poll and /send are served */
    char session_secret_file[1024]; /* --session-secret: the fleet's key for session tokens */
    uint32_t sse_heartbeat_ms;      /* a comment on a quiet stream this often */
    uint32_t poll_hold_ms;          /* a poll with nothing to answer is held this long */
    uint8_t *session_secret;    /* sesstoken.c: the key's material, read before the workers fork */
    size_t session_secret_len;  /* (the secret file's bytes, or this run's random bytes) */
    uint8_t session_key_source; /* enum gw_session_key_source */
    char api_key_file[1024];    /* --api-key-file: "" = the server API is off */
    size_t api_max_body_bytes;  /* largest API request body (413 past it) */
    struct rt_bucket_cfg api_pub_bucket;  /* API publishes, node-wide */
    struct rt_bucket_cfg api_auth_bucket; /* failed API keys per remote address */

    /* Users across the fleet (users.c, chan_presence.c; docs/users.md). */
    struct rt_bucket_cfg user_pub_bucket; /* publishes per user, fleet-wide (rate 0: off) */
    uint32_t user_max_conns;              /* connections per user, fleet-wide (0: off) */
    uint32_t user_sync_ms;                /* users' changes go out at most this often */
    uint32_t presence_max_members;        /* members listed per channel, then a count */
    struct gw_policy presence_allow;      /* not given: the sub rule decides */
};

/* Where the key of the session tokens came from (sesstoken.c). */
enum gw_session_key_source {
    GW_SESSION_KEY_SECRET, /* --session-secret */
    GW_SESSION_KEY_JWT,    /* derived from an HS256 --jwt-key */
    GW_SESSION_KEY_RANDOM, /* this run's own: checked by its processes only */
};

/* Main thread, before the loop and any fork: the session tokens' key material. RT_INVAL
 * after printing why (a --session-secret that cannot serve). No OpenSSL call: nats.c must
 * set OpenSSL up first (a tls:// engine crashes at exit otherwise). */
rt_status gw_sesstoken_configure(struct gw_config *cfg);
void gw_sesstoken_config_free(struct gw_config *cfg);

/*
 * Fills cfg from defaults, the file named by --config (if any) and the flags.
 * Returns RT_OK, RT_AGAIN when --help/--version was printed (exit 0), or
 * RT_INVAL after printing why to stderr (exit 2).
 */
rt_status gw_config_load(struct gw_config *cfg, int argc, char **argv);
void gw_config_free(struct gw_config *cfg);
/* gw_config_load without the key (no authz.c): the file's and flags' values, checked. */
rt_status gw_config_parse(struct gw_config *cfg, int argc, char **argv);
void gw_config_free_parsed(struct gw_config *cfg);
/*
 * Logs every RTGATE_* environment variable that is no option: a misspelt one
 * would be ignored in silence. Called once the gateway has started, so that a
 * start that fails prints its one error line only.
 */
void gw_config_warn_env(void);
void gw_config_usage(FILE *out);

/* ------------------------------------------------------------------ */
/* Metrics: plain counters, the loop thread is the only writer. */

/* Why a connection was refused before it became a WebSocket (metrics.c's labels). */
enum {
    GW_REFUSE_RATE,        /* 429: handshakes per client address */
    GW_REFUSE_CAPACITY,    /* 503: --max-connections */
    GW_REFUSE_SUBPROTOCOL, /* 400 (bad subprotocol) or 404 (wrong path) */
    GW_REFUSE_DRAINING,    /* 503 */
    GW_REFUSE_ORIGIN,      /* 403: --allow-origin */
    GW_REFUSE_NOT_TLS,     /* 400: plain HTTP on a TLS port */
    GW_REFUSE_PROXY,       /* closed: untrusted peer or bad PROXY header (--proxy-protocol) */
    GW_REFUSE_NODE_RATE,   /* 503: --conn-rate */
    GW_REFUSE_N
};

/* Who ended a connection: rtgate (its close frame or a cut) or the client. */
enum { GW_BY_SERVER, GW_BY_CLIENT };
/* The close codes counted one by one (metrics.c's table); others go to "other". */
#define GW_CLOSE_CODES 12

/*
 * A latency histogram with power-of-two bucket bounds: bucket i counts values
 * <= 2^i units, so an observation costs a count-leading-zeros and an
 * increment (no search, no clock read of its own).
 */
#define GW_HIST_BUCKETS 18 /* 2^0 .. 2^17 units, then +Inf */
struct gw_histogram {
    uint64_t buckets[GW_HIST_BUCKETS + 1]; /* not cumulative; the last is +Inf; their sum is
                                            * the count */
    uint64_t sum;                          /* in units */
};

/* Counts one value (in the histogram's units). */
static inline void gw_hist_observe(struct gw_histogram *h, uint64_t v)
{
    unsigned i = v <= 1 ? 0 : 64 - (unsigned)__builtin_clzll(v - 1);
    h->buckets[i < GW_HIST_BUCKETS ? i : GW_HIST_BUCKETS]++;
    h->sum += v;
}

/* The transports a session can have (struct gw_transport below): the label on the metrics. */
enum gw_transport_kind {
    GW_TRANSPORT_WS = 0, /* WebSocket: the session is lws's per-connection data (ws.c) */
    GW_TRANSPORT_SSE,    /* Server-Sent Events + POST (sse.c, http.h) */
    GW_TRANSPORT_POLL,   /* long-polling + POST (longpoll.c, http.h) */
    GW_TRANSPORT_N
};

/* What is counted per transport (rtgate_*{transport="..."}). */
struct gw_transport_metrics {
    uint64_t connections;       /* open sessions (gauge) */
    uint64_t connections_total; /* accepted */
    uint64_t messages_in;
    uint64_t messages_out;
    uint64_t bytes_in;
    uint64_t bytes_out;
    uint64_t closes[2][GW_CLOSE_CODES]; /* ended sessions by [initiator][close code] */
};

struct gw_metrics {
    uint64_t connections;                     /* open sessions of every transport (gauge) */
    uint64_t handshakes_refused[GW_REFUSE_N]; /* by cause (enum above) */
    struct gw_transport_metrics transport[GW_TRANSPORT_N];
    uint64_t frames_in;           /* WebSocket frames */
    uint64_t frames_out;          /* WebSocket frames */
    uint64_t errors[RT_N_ERRORS]; /* replies with an error, by code */
    uint64_t closes_1008;
    uint64_t closes_1009;
    uint64_t closes_4001;   /* connect timeout */
    uint64_t auth_refused;  /* connects refused for their token (401, then close 4001) */
    uint64_t token_expired; /* sessions closed 4001 when their token expired */
    uint64_t closes_idle;
    uint64_t slow_consumer_closes;
    uint64_t outbox_bytes;                /* gauge: bytes queued in all outboxes */
    struct gw_histogram delivery_latency; /* publish accept (fo_msg.ts_ms) to write, in ms */
    struct gw_histogram pub_latency;      /* pub received to its reply, in 100 us units */
    double loop_busy_ratio;               /* the loop's busy fraction over the last second */
    uint64_t loop_since_ns;               /* uv_hrtime when the busy accounting began */
    uint64_t loop_idle_at_start_ns;       /* uv_metrics_idle_time then */
};

/* Sessions accepted since the start, every transport together. */
static inline uint64_t gw_metrics_connections_total(const struct gw_metrics *m)
{
    uint64_t n = 0;
    for (int t = 0; t < GW_TRANSPORT_N; t++)
        n += m->transport[t].connections_total;
    return n;
}

/* ------------------------------------------------------------------ */
/* Outbox: the bounded per-connection send queue. */

struct gw_outbox_item {
    struct fo_msg *msg; /* retained shared delivery, or NULL for private bytes */
    uint8_t *data;      /* frame bytes; writable headroom precedes them */
    uint32_t len;       /* bytes used */
    uint32_t cap;       /* private: capacity after the headroom */
};

struct gw_outbox {
    struct gw_outbox_item *items; /* ring, NULL until first use */
    uint32_t cap;                 /* ring capacity (power of 2) */
    uint32_t head;
    uint32_t count;
    size_t bytes;
};

/* Appends a shared message's frame (retains msg). RT_NOMEM on failure. */
rt_status gw_outbox_push_msg(struct gw_outbox *ob, struct fo_msg *msg, uint8_t *frame, size_t len);
/*
 * Appends private bytes (replies): into the tail item when it is private and
 * has room, else into a new item with `headroom` bytes reserved before it.
 */
rt_status gw_outbox_push_bytes(struct gw_outbox *ob, const uint8_t *data, size_t len,
                               size_t headroom);
/*
 * The next frame to write. A head item that is alone or does not fit with
 * the next one is pointed at in place; otherwise items are copied from the
 * head into scratch (scratch_cap bytes usable) while they fit, so many
 * messages go out in one frame and one write. Returns the items covered.
 */
uint32_t gw_outbox_next_frame(struct gw_outbox *ob, uint8_t *scratch, size_t scratch_cap,
                              uint8_t **data, size_t *len);
/* Removes n items from the head (releases shared ones, frees private ones). */
void gw_outbox_pop(struct gw_outbox *ob, uint32_t n, size_t headroom);
/* Empties the queue and frees the ring. */
void gw_outbox_clear(struct gw_outbox *ob, size_t headroom);

/* ------------------------------------------------------------------ */
/* Per-IP handshake rate limit: a fixed table, bounded memory. */

struct gw_iplimit;
rt_status gw_iplimit_create(const struct rt_bucket_cfg *cfg, size_t slots, struct gw_iplimit **out);
void gw_iplimit_destroy(struct gw_iplimit *ipl);
/* Takes a token for `ip`; false with *retry_after_ms when over the rate. */
bool gw_iplimit_take(struct gw_iplimit *ipl, const char *ip, uint64_t now_ms,
                     uint32_t *retry_after_ms);
/* True (with *retry_after_ms) when `ip` has no token left; takes nothing. */
bool gw_iplimit_blocked(struct gw_iplimit *ipl, const char *ip, uint64_t now_ms,
                        uint32_t *retry_after_ms);

/* ------------------------------------------------------------------ */
/* Connections and the server. */

enum gw_state {
    GW_S_AWAIT_CONNECT = 0, /* socket open, no `connect` yet */
    GW_S_READY,             /* connected */
};

struct gw_server;
struct gw_session;
struct gw_api;
struct gw_geo_req;
struct gw_presence_req;
struct geo_fleet;
struct users;
struct users_event;
struct lws;

/*
 * How a session's bytes travel (ws.c, and the HTTP transports). The session
 * layer (session.c) knows nothing of sockets: it queues replies and
 * deliveries in the outbox and calls these; the transport drains the outbox
 * and reports what it wrote (gw_session_sent). Loop thread.
 */
struct gw_transport {
    const char *name; /* the label on the metrics: "websocket", ... */
    /* The server's flush: writes what the outbox holds, as far as the connection takes it
     * now; the rest waits for the connection (want_write). */
    void (*flush)(struct gw_session *s);
    /* A write outside the flush: closes, heartbeats, or a full flush list. */
    void (*want_write)(struct gw_session *s);
    /* The session is closing (s->close_code, s->close_reason): what the outbox holds goes
     * out, then the connection ends with that code. */
    void (*close)(struct gw_session *s);
    /* Ends the connection at once, nothing more written: the peer is presumed dead. */
    void (*cut)(struct gw_session *s);
    /* The sweep's part for a session that is not closing: the transport's liveness and
     * keep-alive (WebSocket: the idle timeout and pings). */
    void (*heartbeat)(struct gw_session *s, uint64_t now_ms);
    /* Optional: adds the transport's fields to the `connected` reply being written. */
    void (*describe)(struct gw_session *s, struct proto_writer *w);
};

extern const struct gw_transport gw_ws_transport;
extern const struct gw_transport gw_sse_transport;  /* sse.c */
extern const struct gw_transport gw_poll_transport; /* longpoll.c */

/*
 * Bytes every outbox item and fan-out frame keeps free before its data: a
 * transport may write its own frame header there (lws needs LWS_PRE, which
 * ws.c checks is not more).
 */
#define GW_FRAME_HEADROOM 16

/* A session, whatever its transport: each transport's connection struct begins with one. */
struct gw_session {
    /* The fan-out's per-delivery path (sink_deliver, want_write) reads only
     * the fields up to the flags: kept together, first. */
    struct gw_server *srv;
    uint64_t conn_id;
    struct gw_outbox outbox;
    uint8_t codec;          /* enum proto_codec */
    uint8_t state;          /* enum gw_state */
    uint8_t transport;      /* enum gw_transport_kind */
    bool fo_stalled;        /* fan-out was refused for a full outbox: pump when drained */
    bool closing;           /* close after the outbox is flushed */
    bool dirty;             /* on the server's flush list or held by the flush window */
    bool held;              /* dirty and waiting on the server's held list */
    bool reply_queued;      /* a reply is queued: flush now, not after the window */
    uint64_t last_write_us; /* monotonic (gw_now_us): the flush window starts here */
    struct fo_client *fo;
    struct rt_bucket pub_bucket;
    struct rt_bucket msg_bucket;
    struct rt_bucket geo_bucket;
    uint16_t geo_spaces;         /* spaces this connection is present in */
    uint16_t geo_watches;        /* its watches */
    uint16_t geo_waiting;        /* near / watch requests waiting for the fleet */
    struct gw_geo_req *geo_reqs; /* presence.c: its waiting requests and watch holds */
    /* chan_presence.c: its presence subs in progress; of them, those waiting for members. */
    struct gw_presence_req *presence_reqs;
    uint16_t presence_waiting;
    uint64_t abuse_window_start;
    uint64_t opened_ms;  /* monotonic */
    uint64_t last_rx_ms; /* monotonic: anything from the client (a frame, a pong, a request) */
    uint64_t closing_since_ms;
    uint32_t abuse_count;
    uint16_t close_code;
    const char *close_reason;
    struct gw_pending *pending; /* pending.c: requests behind subs waiting for NATS */
    uint16_t peer_close_code;   /* the code of the client's close frame, 0 before one */
    char client_id[28];
    struct auth_claims *claims; /* authz.c: the session's token, NULL when anonymous */
    uint64_t token_deadline_ms; /* monotonic: past it the session closes 4001 (0: never) */
    char anon_user[40];         /* "anon-<client_id>": the user of an anonymous session */
    char peer[EDGE_ADDR_TEXT];  /* the client's address (peer.c), for log lines */

    struct rt_bucket refresh_bucket; /* authz.c: refreshes (each a signature check) */
};

/* Every transport, by enum gw_transport_kind (session.c). */
extern const struct gw_transport *const gw_transports[GW_TRANSPORT_N];

/* The transport of a session. */
static inline const struct gw_transport *gw_transport_of(const struct gw_session *s)
{
    return gw_transports[s->transport];
}

/* The connection table: ids stay valid after the session is gone (generation). */
struct gw_conns {
    struct gw_session **slots;
    uint32_t *gens;
    uint32_t *free_list;
    uint32_t n_free;
    uint32_t cap;
    uint32_t used; /* slots at or above this were never used: walks stop here */
};

rt_status gw_conns_init(struct gw_conns *t, uint32_t cap);
void gw_conns_free(struct gw_conns *t);
/* Registers a session, returns its id (0 when the table is full). */
uint64_t gw_conns_add(struct gw_conns *t, struct gw_session *s);
void gw_conns_remove(struct gw_conns *t, uint64_t id);
struct gw_session *gw_conns_get(const struct gw_conns *t, uint64_t id);

struct gw_server {
    const struct gw_config *cfg;
    struct lws_context *ctx;
    void *loop; /* uv_loop_t */
    struct fo *fo;
    struct proto_decoder *dec;
    struct gw_iplimit *iplimit;
    struct gw_conns conns;
    struct gw_metrics m;
    uint8_t *scratch; /* frame assembly, LWS_PRE headroom before scratch */
    size_t scratch_cap;
    struct proto_buf reply;   /* reply encoding, reused */
    struct geo *geo;          /* presence index */
    struct geo_hit *geo_hits; /* near() results, PROTO_NEAR_LIMIT_MAX */
    uint64_t geo_events;
    struct geo_fleet *fleet; /* presence across nodes (--nats), else NULL */
    struct rt_htab geo_reqs; /* struct gw_geo_req by fleet ticket */
    uint64_t geo_partial;    /* replies that said partial */
    char fleet_node[24];
    void *geo_timer;         /* uv_timer_t: publishes what the interval held back */
    uint64_t geo_flushed_ms; /* last publish of presence changes */
    bool draining;
    uint64_t drain_started_ms;
    uint32_t drain_cursor;        /* drain.c: sessions in slots below it have been told to go */
    struct gw_connrate *connrate; /* node-wide handshake bucket (connrate.c) */
    struct gw_pubtimes *pubtimes; /* start times of publishes answered later (metrics.c) */
    void *sweep_timer;            /* uv_timer_t: timeouts and heartbeats, see gw_server_sweep */
    struct gw_listener *listener; /* our own listen socket (listener.c) */
    void *flush_handles;          /* uv_prepare_t + uv_check_t running gw_server_flush */
    uint64_t *dirty;              /* ids of sessions with output to write this iteration */
    uint32_t n_dirty, dirty_cap;
    uint64_t *held; /* ids of dirty sessions waiting for their flush window */
    uint32_t n_held, held_cap;
    void *hold_timer;     /* uv_timer_t: fires when the earliest held window ends */
    uint64_t hold_due_us; /* when hold_timer fires (0: not armed) */
    uint64_t window_us;   /* the flush window now: flush_window_ms, grown while behind */
    struct gw_flush_window flush_window; /* decides window_us (flush_window.c) */
    uint64_t
        flush_wall_ms; /* wall clock of the flush running now (one read for its writes), or 0 */
    uint64_t busy_at_us, idle_at_ns;    /* the last busy sample (adapt_window) */
    uint32_t timers_timed, timers_late; /* timer firings this sweep period, and late ones */
    uint64_t sweep_due_us;              /* when the sweep timer should fire next */
    uint64_t client_seq;
    char client_prefix[12];
    struct auth_key *jwt_key; /* cfg->jwt_key, or the one SIGHUP reloaded (then owned) */
    bool jwt_key_owned;
    void *sighup;              /* uv_signal_t: reloads the key (authz.c) */
    struct gw_static *statics; /* static.c: the --static folder, or NULL */
    struct gw_peer *peers;     /* peer.c: who each connection is from, by fd */
    uint32_t peers_cap;
    struct gw_tls *tls; /* tls.c: NULL without --tls-cert */
    /* The HTTP transports (http.h). */
    uint8_t node_key[GW_NODE_KEY_BYTES]; /* random per process: session tokens, relay subjects */
    char node_key_hex[2 * GW_NODE_KEY_BYTES + 1];
    uint64_t *reap; /* ids of HTTP sessions to free at the next safe point (hsession.c) */
    uint32_t n_reap, reap_cap;
    size_t http_body_bytes;    /* POST bodies being read, all requests together */
    struct gw_relay *relay;    /* relay.c: POSTs and polls across nodes; NULL without a bus */
    uint64_t http_refused;     /* HTTP transport requests refused before reaching a session */
    struct proto_buf http_out; /* sse.c: the events of one write (GW_FRAME_HEADROOM before) */
    uint8_t session_key[32];   /* sesstoken.c: derived at the first token, once OpenSSL is up */
    bool session_key_ready;
    struct gw_api *api; /* the server API (api.h), NULL when off */

    /* bus.c, users.c, chan_presence.c: the engine's bus, users across the fleet. */
    bool bus_open;                /* the engine's bus (nats) delivers to bus.c */
    struct users *users;          /* per-user limits and channel presence */
    void *users_timer;            /* uv_timer_t: what --user-sync-ms held back */
    uint64_t users_flushed_ms;    /* last publish of users' changes */
    struct rt_htab presence_reqs; /* struct gw_presence_req waiting, by ticket */
    uint64_t presence_resuming;   /* conn whose waiting sub runs again now */

    struct rt_log_budget refusal_log; /* refused handshakes' lines (gw_refusal_log_take) */
};

/*
 * session.c: the session layer, the same under every transport: connect,
 * requests, limits, replies and deliveries through the outbox, closes.
 * Called by the transports (ws.c, ...).
 */
/* Sets a new session up (the transport's struct zeroed but for its own
 * fields); peer is the client's address as text. -1 when the connection
 * table is full. */
int gw_session_open(struct gw_server *srv, struct gw_session *s, enum gw_transport_kind transport,
                    enum proto_codec codec, const char *peer);
/* Decodes one frame of requests (a WebSocket message, a POST body) and handles them in order. */
void gw_session_frame(struct gw_session *s, const uint8_t *frame, size_t len);
/* Handles one request made by a transport (the `connect` and subs an SSE URL asks for). */
void gw_session_request(struct gw_session *s, const struct proto_msg *m);
/* True if the session's message bucket has a token now (taking none); else *retry_after_ms. */
bool gw_session_may_send(struct gw_session *s, uint32_t *retry_after_ms);
/* Takes a token from the session's message bucket for work a transport does on a client's
 * request that is no message (a long-poll batch sent again); false with *retry_after_ms. */
bool gw_session_take_token(struct gw_session *s, uint32_t *retry_after_ms);
/* The transport wrote the first n items of the outbox (bytes of them): pops them, counts them,
 * and lets the fan-out go on when the outbox has room again. */
void gw_session_sent(struct gw_session *s, uint32_t n, size_t bytes);
/* The connection is gone: the session's state is freed (not the transport's struct). */
void gw_session_closed(struct gw_session *s);
/* Asks the session to close with code after flushing (optionally telling it first). */
void gw_session_close(struct gw_session *s, uint16_t code, const char *reason, bool tell,
                      bool reconnect, uint32_t after_ms);
/* A transport found the client silent past its deadline (half-open): counted, logged, cut. */
void gw_session_idle_cut(struct gw_session *s, uint64_t silent_ms);
/* Replies, for the other request handlers (presence.c). */
void gw_session_reply_error(struct gw_session *s, const struct proto_msg *m, int code,
                            const char *message, uint32_t retry_after_ms);
void gw_session_begin_reply(struct gw_session *s, struct proto_writer *w, int64_t id);
/* Ends the message begun on srv->reply and queues it (also for events). */
void gw_session_finish_reply(struct gw_session *s, struct proto_writer *w);

/* Runs one request of a connected session (the switch behind handle_msg). */
void gw_session_dispatch(struct gw_session *s, const struct proto_msg *m);

/* pending.c: requests that wait behind this connection's subs waiting for NATS. */
struct gw_pending;
/* True if m was taken (queued behind a sub of its channel, or answered 429). */
bool gw_pending_defer(struct gw_session *s, const struct proto_msg *m);
void gw_pending_sub_started(struct gw_session *s, int64_t req_id, const char *channel, size_t len);
void gw_pending_sub_done(struct gw_session *s, int64_t req_id);
bool gw_pending_sub_waiting(const struct gw_session *s, int64_t req_id);
/* Runs what may run now (from gw_session_flush). */
void gw_pending_run(struct gw_session *s);
void gw_pending_free(struct gw_session *s);

/*
 * authz.c: tokens and permissions (docs/protocol.md, Authentication).
 * Loop thread, except gw_authz_configure (main thread, before the loop).
 */
/* Loads --jwt-key and fills the default policies. RT_INVAL after printing why. */
rt_status gw_authz_configure(struct gw_config *cfg);
void gw_authz_config_free(struct gw_config *cfg);
/* Arms the SIGHUP key reload (with --jwt-key); stop closes it and frees a reloaded key. */
rt_status gw_authz_start(struct gw_server *srv);
void gw_authz_stop(struct gw_server *srv);
/*
 * The token of a `connect`: true if the session may go on (as the token's
 * user or anonymous). False when refused: answered 401, and the session is
 * closing with 4001.
 */
bool gw_authz_connect(struct gw_session *s, const struct proto_msg *m);
/* Answers a `refresh`: a new token for the same user replaces the old one. */
void gw_authz_refresh(struct gw_session *s, const struct proto_msg *m);
/* May the session sub / pub on m->channel, or use m->space? False: answered 403. */
bool gw_authz_may_sub(struct gw_session *s, const struct proto_msg *m);
bool gw_authz_may_pub(struct gw_session *s, const struct proto_msg *m);
bool gw_authz_may_geo(struct gw_session *s, const struct proto_msg *m);
/* May the session take part in m->channel's presence? False: answered 403. */
bool gw_authz_may_presence(struct gw_session *s, const struct proto_msg *m);
/* Writes "expires_in_ms" into a reply when the session's token expires. */
void gw_authz_write_expiry(const struct gw_session *s, struct proto_writer *w);
/* The sweep: true if the token expired and the session is now closing (4001). */
bool gw_authz_sweep(struct gw_session *s, uint64_t now_ms);
void gw_authz_closed(struct gw_session *s);
/* The session's user: the token's sub, or its anonymous id. */
const char *gw_session_user(const struct gw_session *s);

/* presence.c: geo.* requests and watch events. */
rt_status gw_presence_create(struct gw_server *srv);
void gw_presence_destroy(struct gw_server *srv);
void gw_presence_handle(struct gw_session *s, const struct proto_msg *m);
/* The connection is gone: its members leave (watchers are told), its watches end. */
void gw_presence_closed(struct gw_session *s);
/* Fleet heartbeats, expiry and deadlines (the sweep timer); publishing (each loop iteration). */
void gw_presence_tick(struct gw_server *srv, uint64_t now_ms);
void gw_presence_flush(struct gw_server *srv);
/* Writes one member as geo.near answers it ({"client","user","lat","lon"
 * [,"dist_m"][,"meta"]}), with "local" (on this node, not another's) for
 * the server API. */
void gw_presence_write_member(struct proto_writer *w, const struct geo_member_view *m,
                              bool with_dist, double dist_m, bool with_local);

/* bus.c: the nats engine's bus (fanout.h), shared by presence.c and users.c. */
/* Makes the bus deliver to bus.c (once); false on the memory engine (no bus). */
bool gw_bus_open(struct gw_server *srv);
/* The bus's operations, for geo_fleet_bus and users_bus (ctx: srv->fo). */
rt_status gw_bus_publish(void *ctx, const char *subject, const char *reply, const uint8_t *data,
                         size_t len);
void *gw_bus_subscribe(void *ctx, const char *subject);
void gw_bus_unsubscribe(void *ctx, void *handle);

/* users.c: per-user limits across the fleet (docs/users.md). */
rt_status gw_users_create(struct gw_server *srv);
void gw_users_destroy(struct gw_server *srv);
/* The connect of a user: false when over its connection limit (answered 429, closing 4029). */
bool gw_users_connect(struct gw_session *s, const struct proto_msg *m);
/* The user limits in force, into connected's "limits" (when set). */
void gw_users_write_limits(const struct gw_session *s, struct proto_writer *w);
/* A publish of the session's user: false when over its rate (answered 429). */
bool gw_users_may_pub(struct gw_session *s, const struct proto_msg *m);
/* The session is gone: its presence ends, its place is free. */
void gw_users_closed(struct gw_session *s);
/* Heartbeats and expiry (the sweep); publishing (each loop iteration, at most every
 * --user-sync-ms). */
void gw_users_tick(struct gw_server *srv, uint64_t now_ms);
void gw_users_flush(struct gw_server *srv);

/* chan_presence.c: channel presence on `sub` (docs/protocol.md, Channel presence). */
/*
 * Before a sub with "presence":true runs: true when it was answered (403,
 * 409, 429, 503) or waits for the channel's members (it runs again then,
 * through gw_session_resume_sub).
 */
bool gw_chan_presence_sub(struct gw_session *s, const struct proto_msg *m);
/* The sub with id is answered: w (the ok reply being written) gets "presence" and the
 * connection enters the channel; w NULL: it failed. */
void gw_chan_presence_reply(struct gw_session *s, int64_t id, struct proto_writer *w);
/* The connection unsubscribed from the channel: it leaves its presence. */
void gw_chan_presence_unsub(struct gw_session *s, const struct proto_msg *m);
/* The session is gone: its waiting subs are dropped. */
void gw_chan_presence_closed(struct gw_session *s);
void gw_chan_presence_event(void *arg, const struct users_event *ev);
void gw_chan_presence_ready(void *arg, uint64_t ticket, bool partial);
void gw_chan_presence_free(struct gw_server *srv);
/* session.c: runs a sub again (one that waited in chan_presence.c). */
void gw_session_resume_sub(struct gw_session *s, const struct proto_msg *m);

/* The fan-out sink, bound to the server. */
struct fo_sink gw_session_sink(struct gw_server *srv);

/* server.c */
rt_status gw_server_start(struct gw_server *srv, const struct gw_config *cfg, void *uv_loop);
/* Destroys the lws context (sessions close); run the loop after it, then free. */
void gw_server_stop(struct gw_server *srv);
/* Frees everything else (after the loop has run the closes). */
void gw_server_free(struct gw_server *srv);
/*
 * drain.c: the SIGTERM drain. gw_drain_begin turns readiness false (/readyz
 * and new handshakes answer 503) and leaves every session up for
 * --drain-grace-ms; gw_drain_step, called every DRAIN_STEP_MS from then on,
 * closes the sessions (disconnect 1001) in slices spread over --drain-ms.
 * gw_drain_step returns true once the process may exit: no connection left,
 * or --drain-timeout-ms since gw_drain_begin.
 */
#define GW_DRAIN_STEP_MS 50
void gw_drain_begin(struct gw_server *srv);
bool gw_drain_step(struct gw_server *srv, uint64_t now_ms);

/*
 * connrate.c: a node-wide token bucket on new WebSocket handshakes
 * (--conn-rate, --conn-burst), so that a reconnect storm (the clients of a
 * dead peer arriving at once) is admitted at a pace the loop can take while
 * it keeps serving the clients it has. Refused handshakes get 503 with a
 * Retry-After spread over the backlog seen in the last second.
 */
struct gw_connrate;
rt_status gw_connrate_create(const struct rt_bucket_cfg *cfg, struct gw_connrate **out);
void gw_connrate_destroy(struct gw_connrate *cr);
/* Takes a token; false with *retry_after_ms (jittered) when over the rate. */
bool gw_connrate_take(struct gw_connrate *cr, uint64_t now_ms, uint32_t *retry_after_ms);
/*
 * Visits every session: connect timeout (4001), idle timeout, and pings for
 * the quiet ones. Our own sweep instead of lws per-connection timers, whose
 * sorted list costs O(connections) per insert in lws 4.1.
 */
void gw_server_sweep(struct gw_server *srv, uint64_t now_ms);
/* True if a refused handshake or connection may be logged now (at most 20 lines a
 * second; a later line counts the others). Loop thread. */
bool gw_refusal_log_take(struct gw_server *srv);
/* Why a new session is refused before it starts (gw_server_admit). */
struct gw_refusal {
    int cause;           /* GW_REFUSE_*, for the metrics */
    unsigned status;     /* HTTP: 429 or 503 */
    const char *message; /* one line, ending with a newline */
    uint32_t retry_after_ms;
};
/* The admission of a new session, whatever its transport: draining, the client address's
 * handshake rate, --max-connections, --conn-rate. False with *out saying why. */
bool gw_server_admit(struct gw_server *srv, struct lws *wsi, const struct edge_addr *client,
                     struct gw_refusal *out);
/* True when the request has no Origin (not a browser), no --allow-origin is set, or its
 * normalised Origin is on the list. */
bool gw_server_origin_allowed(struct gw_server *srv, struct lws *wsi);
/* Takes a token from the client address's handshake bucket; false with *retry_after_ms. */
bool gw_server_address_rate_ok(struct gw_server *srv, struct lws *wsi, uint32_t *retry_after_ms);

/* httpapi.c: the endpoints of the HTTP transports (/sse, /poll, /send), for server.c.
 * route: false when uri is none of them (or they are off); else *rc is lws's return. */
bool gw_httpapi_route(struct gw_server *srv, struct lws *wsi, const char *uri, void *user, int *rc);
/* True when the transaction's user data is one of httpapi.c's requests. */
bool gw_httpapi_owns(void *user);
int gw_httpapi_body(struct gw_server *srv, struct lws *wsi, void *user, const void *in, size_t len);
int gw_httpapi_body_done(struct gw_server *srv, struct lws *wsi, void *user);
/* HTTP_WRITEABLE: false when the transaction is not ours (static.c's then). */
bool gw_httpapi_writable(struct gw_server *srv, struct lws *wsi, void *user, int *rc);
void gw_httpapi_closed(struct gw_server *srv, struct lws *wsi, void *user);

/* The HTTP transports' parts the rest of the server calls (http.h has the others). */
/* relay.c: true if the bus message is the relay's (rtgate.sess.*); then it was handled. */
bool gw_relay_receive(struct gw_server *srv, const char *subject, const char *reply,
                      const uint8_t *data, size_t len);
rt_status gw_relay_start(struct gw_server *srv);
void gw_relay_stop(struct gw_server *srv);
void gw_relay_sweep(struct gw_server *srv, uint64_t now_ms);
/* hsession.c: frees the HTTP sessions that are done; at shutdown, all of them. */
void gw_hsession_reap(struct gw_server *srv);
void gw_hsession_free_all(struct gw_server *srv);

/* listener.c: binds --listen (SO_REUSEPORT) and hands accepted sockets to lws. */
struct gw_listener;
rt_status gw_listener_start(struct gw_server *srv);
/* Stops accepting (drain); the socket is closed by the loop. */
void gw_listener_stop(struct gw_server *srv);

/* peer.c: the client address of each connection. */
struct gw_peer;
/* The listener records where a new connection comes from (TCP peer or PROXY source). */
rt_status gw_peer_record(struct gw_server *srv, int fd, const struct edge_addr *from);
/* At a handshake: the client address, X-Forwarded-For applied when the connection comes
 * from a trusted proxy. Stored for later lookups. NULL if the listener did not record it. */
const struct edge_addr *gw_peer_resolve(struct gw_server *srv, struct lws *wsi);
/* The client address as resolved last, as text ("-" if unknown). */
void gw_peer_text(struct gw_server *srv, struct lws *wsi, char out[EDGE_ADDR_TEXT]);
void gw_peer_free(struct gw_server *srv);

/* tls.c: wss:// and https:// on the listener, the files reloaded on SIGHUP. */
struct gw_tls;
/* Before start (and before forking workers): reads and checks --tls-cert and --tls-key;
 * prints why to stderr and returns RT_INVAL when they cannot serve. */
rt_status gw_tls_check_files(const struct gw_config *cfg);
/* Loads the files and starts the SIGHUP handler; *out stays NULL without --tls-cert. */
rt_status gw_tls_create(struct gw_server *srv, struct gw_tls **out);
/* lws created the vhost's SSL_CTX (LWS_CALLBACK_OPENSSL_LOAD_EXTRA_SERVER_VERIFY_CERTS):
 * installs the certificate and the hook that serves a reloaded one. 0 or -1 (lws's). */
int gw_tls_attach(struct gw_server *srv, void *ssl_ctx);
/* Reads the files again; on any error keeps serving the old ones and logs why. */
void gw_tls_reload(struct gw_tls *t);
/* Stops the SIGHUP handler; frees once the loop has closed it. NULL is a no-op. */
void gw_tls_destroy(struct gw_tls *t);

/* Monotonic microseconds (the loop's clock source, not cached). Any thread. */
uint64_t gw_now_us(void);
/* Puts a session on the flush list; false when out of memory. */
bool gw_server_mark_dirty(struct gw_server *srv, uint64_t conn_id);
/* Writes the output of every session on the flush list (before the loop blocks
 * and after it handled I/O): many messages per write, no POLLOUT round trip.
 * A session that wrote less than flush_window_ms ago is held until its window
 * ends, so a busy connection gets many messages per frame and per write. */
void gw_server_flush(struct gw_server *srv);
/* One session's part of the flush (its transport writes). Outside lws's service. */
void gw_session_flush(struct gw_session *s);
/* Ends the session's connection at once (its transport's cut). */
void gw_session_cut(struct gw_session *s);
/* One session's part of the sweep. */
void gw_session_sweep(struct gw_session *s, uint64_t now_ms);
/* The session has output: on the flush list, or straight to its transport when urgent. */
void gw_session_want_write(struct gw_session *s);

/*
 * ws.c: the WebSocket transport, called by the lws callback in server.c.
 * The session lives in lws's per-connection data (gw_ws_session_size bytes).
 */
size_t gw_ws_session_size(void);
int gw_ws_open(struct gw_server *srv, void *user, struct lws *wsi, enum proto_codec codec);
int gw_ws_rx(void *user, const uint8_t *in, size_t len, bool final, size_t remaining);
int gw_ws_writable(void *user);
/* The connection's lws timer fired; non-zero asks lws to close politely. */
int gw_ws_timer(void *user);
void gw_ws_pong(void *user);
/* The client sent a close frame (payload: its code, big-endian, and reason). */
void gw_ws_peer_close(void *user, const uint8_t *payload, size_t len);
void gw_ws_closed(void *user);

/* static.c: the --static folder, in memory, answered on the listener (GET, HEAD). */
struct gw_static;
/* Reads cfg->static_dir whole (*out NULL when none). Before the loop runs;
 * RT_TOO_BIG past --static-max-bytes (logged with the reason). */
rt_status gw_static_create(const struct gw_config *cfg, struct gw_static **out);
void gw_static_destroy(struct gw_static *st);
/* Answers an HTTP request for uri from memory (lws's return convention). */
int gw_static_serve(struct gw_static *st, struct lws *wsi, const char *uri);
/* LWS_CALLBACK_HTTP_WRITEABLE: the next chunk of a body being served. */
int gw_static_writable(struct gw_static *st, struct lws *wsi, void *user);

/* metrics.c: the Prometheus text for /metrics, malloc'd. */
char *gw_metrics_render(const struct gw_server *srv, size_t *len);
/*
 * The first n items of ob are being written at wall-clock now_ms: each shared
 * message among them counts its age (now_ms - ts_ms) in delivery_latency.
 * One clock read per write serves every message of the frame.
 */
void gw_metrics_delivered(struct gw_metrics *m, const struct gw_outbox *ob, uint32_t n,
                          uint64_t now_ms);
/* The loop's busy time since loop_since_ns: wall time minus libuv's idle time. */
uint64_t gw_metrics_loop_busy_ns(const struct gw_server *srv);
/* A connection ended: counts it in closes by initiator and code. */
void gw_metrics_closed(struct gw_metrics *m, const struct gw_session *s);
/*
 * Publish reply latency. A publish answered at once is observed directly; one
 * answered later (fo_publish RT_AGAIN) has its start time kept in a fixed
 * table (gw_pubtimes_start) until its pub_done (gw_pubtimes_done). The table
 * is bounded: a slot taken by a newer publish loses the older sample.
 */
rt_status gw_pubtimes_create(struct gw_pubtimes **out);
void gw_pubtimes_destroy(struct gw_pubtimes *pt);
void gw_pubtimes_start(struct gw_pubtimes *pt, uint64_t conn_id, int64_t req_id, uint64_t start_us);
void gw_pubtimes_done(struct gw_server *srv, uint64_t conn_id, int64_t req_id);
void gw_pubtimes_observe(struct gw_metrics *m, uint64_t start_us, uint64_t now_us);

#endif
