/*
 * load.h: internals of rtgate-load, the load generator (docs/loadtest.md).
 *
 * Layout, leaves first:
 *   sha1.c     SHA-1 and base64 (the WebSocket accept check)
 *   hist.c     log-linear latency histogram, HdrHistogram-like
 *   ws.c       client side of RFC 6455: upgrade request/response, frames
 *   codec.c    rtgate messages: encode requests, scan server messages (JSON, msgpack)
 *   nats.c     NATS's text protocol (the nats-ws target, the NATS publisher)
 *   track.c    per-stream sequence tracking (lost / dup / out of order)
 *   wq.c       a connection's queue of bytes the socket did not take yet
 *   config.c   URLs, source addresses, channel names, worker slices, pipe messages
 *   net.c      the connection engine: sockets, upgrade, frames, retries (net.h)
 *   worker.c   the delivery scenarios' driver: a slice of the connections, phases
 *   scen*.c    the single-process scenarios (presence, churn, storm; scen.h)
 *   report.c   /proc sampling, the JSON line, the SVG plot
 *   options.c  the command line: one table of every option, presets, checks
 *   main.c     fork of the workers, the run's phases, merge
 *   selftest.c `--self-test`: checks of the leaves without a server
 *
 * Every process is single-threaded. The parent only coordinates; workers
 * talk to it over two pipes with fixed-layout messages (struct lt_pipe_hdr).
 */
#ifndef LT_LOAD_H
#define LT_LOAD_H

#include "nats_wire.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/socket.h>
#include <sys/types.h>

/* ------------------------------------------------------------------ */
/* Results, clocks, small helpers. */

typedef enum {
    LT_OK = 0,
    LT_ERR = -1,   /* malformed input or protocol violation */
    LT_AGAIN = -2, /* need more bytes */
    LT_NOMEM = -3,
} lt_status;

#define LT_NS_PER_S  1000000000ull
#define LT_NS_PER_MS 1000000ull

/* CLOCK_MONOTONIC in ns: the `t` carried by every payload (one clock for all processes). */
uint64_t lt_now_ns(void);

/* ------------------------------------------------------------------ */
/* sha1.c */

#define LT_SHA1_LEN 20

void lt_sha1(const void *data, size_t len, uint8_t out[LT_SHA1_LEN]);
/* Writes base64 of in (with padding) and a NUL to out; returns the length. */
size_t lt_base64(const uint8_t *in, size_t len, char *out, size_t out_cap);
/* The Sec-WebSocket-Accept value for a key: base64(SHA-1(key + GUID)), 28 chars + NUL. */
void lt_ws_accept(const char *key, char out[29]);

/* ------------------------------------------------------------------ */
/* hist.c: counts of values in ns from 0 to LT_HIST_MAX_NS with a relative
 * error below 1% (256 sub-buckets per power of two, HdrHistogram's layout).
 * Larger values are clamped into the last bucket; max stays exact. */

#define LT_HIST_SUB_BITS 8               /* 2^8 sub-buckets: two significant digits */
#define LT_HIST_MAX_NS   100000000000ull /* 100 s */
#define LT_HIST_BUCKETS  30              /* covers 2^(8+29) ns > 100 s */
#define LT_HIST_COUNTS   ((LT_HIST_BUCKETS + 1) << (LT_HIST_SUB_BITS - 1))

struct lt_hist {
    uint64_t total;
    uint64_t min; /* exact; UINT64_MAX when empty */
    uint64_t max; /* exact */
    double sum;   /* for the mean */
    uint64_t counts[LT_HIST_COUNTS];
};

void lt_hist_init(struct lt_hist *h);
void lt_hist_record(struct lt_hist *h, uint64_t value_ns);
void lt_hist_merge(struct lt_hist *into, const struct lt_hist *from);
/* The value at percentile q (0..100): the highest value equivalent to that bucket. */
uint64_t lt_hist_percentile(const struct lt_hist *h, double q);
double lt_hist_mean(const struct lt_hist *h);
/* Bucket helpers used by the SVG writer and the tests. */
size_t lt_hist_index(uint64_t value);
uint64_t lt_hist_lowest_equivalent(size_t index);
uint64_t lt_hist_highest_equivalent(size_t index);

/* ------------------------------------------------------------------ */
/* ws.c: client side of RFC 6455. */

enum {
    LT_WS_CONT = 0x0,
    LT_WS_TEXT = 0x1,
    LT_WS_BINARY = 0x2,
    LT_WS_CLOSE = 0x8,
    LT_WS_PING = 0x9,
    LT_WS_PONG = 0xA,
};

/* Largest server frame accepted; anything bigger is a protocol error. */
#define LT_WS_MAX_FRAME (16u << 20)
/* A connection's bytes the socket did not take yet (wq.c). */
enum lt_wq {
    LT_WQ_EMPTY,   /* everything went out: stop waiting for EPOLLOUT */
    LT_WQ_PENDING, /* bytes wait: wait for EPOLLOUT */
    LT_WQ_FAILED,  /* the connection is lost (errno says why) */
};
/* Sends p now when nothing waits, queues what the socket did not take (all
 * queued bytes at most max). tls: the connection's TLS state (tls.c), or NULL. */
enum lt_wq lt_wq_write(int fd, void *tls, uint8_t **buf, uint32_t *len, const uint8_t *p, size_t n,
                       size_t max);
/* Sends what waits; frees the buffer once it is empty. */
enum lt_wq lt_wq_flush(int fd, void *tls, uint8_t **buf, uint32_t *len);

/*
 * tls.c: the TLS client of wss:// (OpenSSL), full handshakes only (no session
 * reuse). The I/O calls behave like recv()/send() on a non-blocking socket:
 * -1 with errno EAGAIN means wait.
 */
/* A client context; the server certificate is verified against cafile when given. */
void *lt_tls_ctx_create(const char *cafile, char *err, size_t err_cap);
void lt_tls_ctx_free(void *ctx);
/* TLS over a connected socket, for server_name (a host name or an IP literal). */
void *lt_tls_new(void *ctx, int fd, const char *server_name);
void lt_tls_free(void *ssl);
/* One step of the handshake: 0 when done, EAGAIN to wait (*want_write: for
 * EPOLLOUT rather than EPOLLIN), another errno when it failed. */
int lt_tls_handshake(void *ssl, bool *want_write);
ssize_t lt_tls_recv(void *ssl, void *buf, size_t cap);
ssize_t lt_tls_send(void *ssl, const void *p, size_t n);
/* Decrypted bytes wait inside OpenSSL: epoll will not say so. */
bool lt_tls_pending(void *ssl);

/* Header room to leave before a payload that lt_ws_frame_in_place frames. */
#define LT_WS_HEADROOM 14

/*
 * Writes the HTTP/1.1 upgrade request to out (NUL-terminated). `key` is the
 * 24-char Sec-WebSocket-Key; subprotocol may be NULL (offer none). Returns
 * the length, or 0 when out_cap is too small.
 */
size_t lt_ws_request(char *out, size_t out_cap, const char *host_header, const char *path,
                     const char *key, const char *subprotocol);

/* What the upgrade response said. */
struct lt_ws_response {
    int status;             /* HTTP status code */
    uint32_t retry_after_s; /* Retry-After, 0 when absent */
    size_t header_len;      /* bytes up to and including the blank line */
};

/*
 * Parses the response in buf[0..len). LT_AGAIN until the blank line is
 * there. LT_OK when it is a 101 with the right Sec-WebSocket-Accept for key,
 * Upgrade/Connection headers and exactly the offered subprotocol (or none
 * when none was offered). LT_ERR otherwise, with r->status set when a
 * status line was read (429/503 tell the caller to retry later).
 */
lt_status lt_ws_parse_response(const char *buf, size_t len, const char *key,
                               const char *subprotocol, struct lt_ws_response *r);

/* One server frame, pointing into the caller's buffer. */
struct lt_ws_frame {
    bool fin;
    uint8_t opcode;
    const uint8_t *payload;
    size_t payload_len;
    size_t frame_len; /* header + payload */
};

/*
 * Parses one frame at buf[0..len). LT_AGAIN when incomplete; LT_ERR on a
 * protocol error (reserved bits, unknown opcode, fragmented or oversized
 * control frame, frame over LT_WS_MAX_FRAME). Masked frames are unmasked
 * in place (a server must not mask, but this is also the tests' decoder).
 */
lt_status lt_ws_parse_frame(uint8_t *buf, size_t len, struct lt_ws_frame *f);

/*
 * Reassembles a data message from a TEXT, BINARY or CONT frame (RFC 6455
 * 5.4): *buf / *len hold the fragments so far, *opcode is the message's
 * opcode (0: none in progress). LT_OK: the whole message is *msg / *mlen;
 * if *owned is set afterwards the caller frees it once done (the state is
 * already reset, so the message may close the connection). LT_AGAIN: more
 * fragments are due. LT_ERR: a protocol violation, or a message over
 * LT_WS_MAX_FRAME.
 */
/* Appends p[0..n) to *buf / *len; false past LT_WS_MAX_FRAME or out of memory. */
bool lt_ws_buf_append(uint8_t **buf, uint32_t *len, const uint8_t *p, size_t n);
lt_status lt_ws_reassemble(uint8_t **buf, uint32_t *len, uint8_t *opcode,
                           const struct lt_ws_frame *f, const uint8_t **msg, size_t *mlen,
                           uint8_t **owned);

/*
 * Frames a payload that sits at buf + LT_WS_HEADROOM (len bytes): writes the
 * header right before it, masks it with mask_key, and returns a pointer to
 * the frame's first byte; *frame_len gets the frame's length.
 */
uint8_t *lt_ws_frame_in_place(uint8_t *buf, size_t len, uint8_t opcode, bool fin, uint32_t mask_key,
                              size_t *frame_len);

/* XORs data with the 4-byte key (in wire order), starting at key offset 0. */
void lt_ws_mask(uint8_t *data, size_t len, uint32_t mask_key);

/* ------------------------------------------------------------------ */
/* codec.c: rtgate requests out, server messages in. */

enum lt_codec { LT_CODEC_JSON = 0, LT_CODEC_MSGPACK = 1 };

#define LT_SUBPROTOCOL_JSON    "rtgate.v1.json"
#define LT_SUBPROTOCOL_MSGPACK "rtgate.v1.msgpack"

enum lt_mtype {
    LT_M_OTHER = 0,
    LT_M_CONNECTED,
    LT_M_REPLY,
    LT_M_MSG,
    LT_M_ERROR,
    LT_M_DISCONNECT,
    LT_M_PONG,
    LT_M_GAP,
};

/* A server message, the fields the load generator looks at. */
struct lt_smsg {
    enum lt_mtype type;
    bool has_id;
    int64_t id;
    int ok;              /* -1 absent, 0 false, 1 true */
    const char *channel; /* not NUL-terminated */
    size_t channel_len;
    bool has_seq;
    uint64_t seq;
    int error_code;         /* 0 when absent */
    int64_t retry_after_ms; /* -1 when absent */
    int64_t heartbeat_ms;   /* connected: -1 when absent */
    int64_t max_unacked;    /* connected: limits.max_unacked, -1 when absent */
    int64_t close_code;     /* disconnect: code, -1 when absent */
    uint64_t gap_from, gap_to;
    bool has_data; /* data is an object with the load fields below */
    bool has_s, has_p, has_t;
    uint64_t s, p, t;
};

/*
 * Scans the next message of a frame payload starting at *pos. Returns LT_OK
 * with *m filled and *pos advanced, LT_AGAIN when only whitespace is left
 * (the frame is done), LT_ERR when the bytes are not a well-formed message.
 */
lt_status lt_scan_json(const uint8_t *buf, size_t len, size_t *pos, struct lt_smsg *m);
lt_status lt_scan_msgpack(const uint8_t *buf, size_t len, size_t *pos, struct lt_smsg *m);

/* Output buffer for requests: callers give enough room (checked, never overrun). */
struct lt_out {
    uint8_t *p;
    size_t len;
    size_t cap;
    bool overflow;
};

/* One message each; JSON messages end with '\n' so several can share a frame. */
void lt_enc_connect(struct lt_out *o, enum lt_codec c, int64_t id, const char *name,
                    const char *token); /* token: a JWT ([A-Za-z0-9_.-]) or "" for none */
struct lt_config;
/* The `connect` (id 1) every rtgate connection of the tool opens with, as the run's options
 * say: the one place both drivers (worker.c, scen.c) take their greeting from. */
void lt_enc_hello(struct lt_out *o, const struct lt_config *cfg, uint32_t index);
/* presence: "presence":true, the connection takes part in the channel's presence. */
void lt_enc_sub(struct lt_out *o, enum lt_codec c, int64_t id, const char *channel,
                bool presence);
void lt_enc_ack(struct lt_out *o, enum lt_codec c, const char *channel, uint64_t seq);
/*
 * A pub whose data is {"s":s,"p":p,"t":t,"pad":"xx.."}, padded so the
 * encoded `data` value is `payload` bytes long (or its minimum size when
 * that is more).
 */
void lt_enc_pub(struct lt_out *o, enum lt_codec c, int64_t id, const char *channel, uint64_t s,
                uint64_t p, uint64_t t, uint32_t payload);
/* Encoded size of the data value alone without padding (for --help and checks). */
size_t lt_data_min_size(enum lt_codec c, uint64_t s, uint64_t p, uint64_t t);
/* The JSON data value alone, {"s":s,"p":p,"t":t,"pad":"xx.."}, `payload` bytes (or its minimum). */
void lt_enc_data_json(struct lt_out *o, uint64_t s, uint64_t p, uint64_t t, uint32_t payload);
/* Its length, without writing it. */
size_t lt_data_json_len(uint64_t s, uint64_t p, uint64_t t, uint32_t payload);
/*
 * Scans a bare JSON data value (the payload of a NATS message) into the load
 * fields of m (type LT_M_MSG, has_data when s, p and t are all there).
 * LT_ERR when buf is not one JSON object (whitespace around it is fine).
 */
lt_status lt_scan_data_json(const uint8_t *buf, size_t len, struct lt_smsg *m);

/* ------------------------------------------------------------------ */
/* nats.c: NATS's client protocol
 * (https://docs.nats.io/reference/reference-protocols/nats-protocol), over TCP or inside WebSocket
 * frames (where one frame may hold several operations or part of one: the caller keeps what is left
 * over). */

enum lt_nop {
    LT_N_INFO = 1,
    LT_N_MSG, /* MSG and HMSG */
    LT_N_PING,
    LT_N_PONG,
    LT_N_OK,  /* +OK */
    LT_N_ERR, /* -ERR */
};

/* One server operation, pointing into the caller's buffer. */
struct lt_nmsg {
    enum lt_nop op;
    const char *subject; /* MSG */
    size_t subject_len;
    const char *reply; /* MSG, NULL when absent */
    size_t reply_len;
    uint64_t sid;
    const uint8_t *payload; /* MSG: the payload after any headers; -ERR, INFO: the argument text */
    size_t payload_len;
    size_t header_len; /* HMSG: header bytes before payload */
};

#define LT_NATS_MAX_LINE    (64u * 1024) /* = NW_LINE_MAX: longest control line (INFO) */
#define LT_NATS_MAX_PAYLOAD (64u << 20)  /* a bigger MSG is a protocol error */
#define LT_NATS_SUBJECT_MAX 256

/*
 * Scans the next operation at buf[*pos..len). LT_OK: *m filled, *pos moved
 * past it. LT_AGAIN: the operation is not complete yet (*pos unchanged; keep
 * the bytes from *pos and call again with more). LT_ERR: not NATS protocol.
 * Operation names are matched case-insensitively; CRLF ends lines (a bare LF
 * is accepted too).
 */
lt_status lt_nats_scan(const uint8_t *buf, size_t len, size_t *pos, struct lt_nmsg *m);

/* CONNECT {"verbose":false,...}\r\n */
void lt_nats_enc_connect(struct lt_out *o);
void lt_nats_enc_sub(struct lt_out *o, const char *subject, uint64_t sid);
void lt_nats_enc_ping(struct lt_out *o);
void lt_nats_enc_pong(struct lt_out *o);
/* PUB subject [reply] n\r\n<JSON data value of `payload` bytes>\r\n */
void lt_nats_enc_pub(struct lt_out *o, const char *subject, const char *reply, uint64_t s,
                     uint64_t p, uint64_t t, uint32_t payload);

/* ------------------------------------------------------------------ */
/* track.c: one (subscriber, publisher stream) sequence window. */

struct lt_track {
    uint64_t next;   /* highest seq seen + 1; 0 = nothing yet */
    uint64_t window; /* bit i: seq next-1-i was seen */
};

enum lt_track_result { LT_TR_NEW = 0, LT_TR_LATE = 1, LT_TR_DUP = 2 };

/*
 * Records seq s. NEW: in order or after a gap (gaps are not counted here:
 * the end-of-run count of unique deliveries against accepted publishes
 * decides what was lost). LATE: below the highest seen and not seen before
 * (out of order; also counted unique). DUP: seen before. Sequences more than
 * 64 below the highest are taken as LATE (dups that far back go unnoticed).
 */
enum lt_track_result lt_track_seen(struct lt_track *t, uint64_t s);

/* ------------------------------------------------------------------ */
/* Configuration. */

enum lt_scenario {
    LT_SC_FANOUT = 0,
    LT_SC_CHANNELS,
    LT_SC_IDLE,
    /* Single-process scenarios of scen*.c (their own loop, no workers): */
    LT_SC_PRESENCE, /* geo.set random walks, geo.near queries, geo.watch events */
    LT_SC_CHURN,    /* connections opened, connected, subscribed and closed at a fixed rate */
    LT_SC_STORM,    /* N connections dropped at once, all reconnect */
};

/* What the subscribers (and idle connections) speak. */
enum lt_target {
    LT_TGT_RTGATE = 0, /* rtgate's protocol over WebSocket */
    LT_TGT_NATS_WS,    /* NATS's protocol over nats-server's WebSocket listener */
};

/* How messages are published. */
enum lt_pubvia {
    LT_PV_WS = 0, /* `pub` over rtgate WebSocket connections */
    LT_PV_NATS,   /* PUB over plain NATS TCP connections (as a backend would) */
};

/* rtgate's subjects: the gateway's own spelling (fanout/nats_wire.h). */
#define LT_SUBJ_EPH NW_SUBJ_EPH
#define LT_SUBJ_DUR NW_SUBJ_DUR

/* Options of the scen*.c scenarios (presence, churn, storm); 0 = the preset. */
struct lt_scen_config {
    char url2[256]; /* presence: queriers and watchers connect here (another node) */
    char host_header2[128];
    char path2[128];
    char host2[64];
    bool tls2;
    struct sockaddr_storage dst2;
    socklen_t dst2_len;
    uint32_t setters;      /* presence: connections doing geo.set */
    double set_rate;       /* geo.set per second, all setters together */
    uint32_t queriers;     /* connections doing geo.near */
    double query_rate;     /* geo.near per second, all queriers together */
    uint32_t watchers;     /* connections holding one geo.watch each */
    double radius_m;       /* geo.near radius */
    uint32_t near_limit;   /* geo.near limit */
    double watch_radius_m; /* geo.watch radius */
    double area_km;        /* side of the square the members walk in */
    double center_lat, center_lon;
    double step_m; /* random-walk step per geo.set */
    char space[65];
    double reconnect_rate; /* storm: reconnects per second, 0 = as fast as possible */
    double hold_s;         /* storm: connections stay up this long before the drop */
};

#define LT_MAX_SRC   64
#define LT_TOKEN_MAX 8192 /* rtgate's own bound on a token */
#define LT_MAX_PIDS  16

struct lt_config {
    enum lt_scenario scenario;
    char url[256];
    char host[64];         /* as written in the URL, without brackets */
    char host_header[128]; /* Host: value */
    char path[128];
    uint16_t port;
    bool tls; /* wss:// */
    struct sockaddr_storage dst;
    socklen_t dst_len;
    const char *tls_ca; /* --tls-ca: verify the server's certificate against it */
    enum lt_codec codec;
    enum lt_target target;
    enum lt_pubvia pub_via;
    bool durable_nats; /* NATS publisher: JetStream publish to rtgate.dur.<channel>, acks counted */
    char nats_url[256];
    struct sockaddr_storage nats_dst;
    socklen_t nats_dst_len;
    uint32_t subs;
    uint32_t channels;
    uint32_t publishers;
    double rate;       /* messages per second, all publishers together */
    double duration_s; /* measured window */
    double warmup_s;
    double drain_s; /* longest wait for in-flight messages after publishing */
    double timeout_s;
    double hold_s; /* idle: how long connections stay open */
    uint32_t payload;
    char channel_prefix[64];
    struct sockaddr_storage src[LT_MAX_SRC];
    socklen_t src_len[LT_MAX_SRC];
    char src_text[LT_MAX_SRC][48];
    size_t n_src;
    pid_t server_pids[LT_MAX_PIDS];
    size_t n_server_pids;
    pid_t broker_pids[LT_MAX_PIDS]; /* sampled and reported apart (the NATS server behind rtgate) */
    size_t n_broker_pids;
    double connect_rate;      /* connections per second, all workers */
    uint32_t max_handshaking; /* per worker: connections set up concurrently */
    double setup_timeout_s;   /* one connection's time to get ready */
    uint32_t workers;
    bool idle_sub;
    bool ack;                /* ack durable deliveries */
    uint32_t ack_every;      /* ack after this many deliveries (0: the server's max_unacked / 4) */
    uint32_t ack_delay_ms;   /* ... or when the oldest unacked delivery is about this old */
    uint32_t max_backlog;    /* publisher: bytes queued before slots are skipped */
    uint32_t rx_coalesce_us; /* least time between two reads (trades latency resolution for CPU) */
    const char *label;       /* --label: copied into the JSON line */
    char token[LT_TOKEN_MAX + 1]; /* --token / --token-file: sent in every connect; "" = none */
    char **tokens;     /* --token-file of several lines: connection i sends tokens[i % n] */
    uint32_t n_tokens; /* 0: token for everyone */
    bool presence;     /* --presence: subscribers take part in their channel's presence */
    struct lt_scen_config sc;
    const char *json_path;
    const char *svg_path;
    int verbose;
    /* Options read once all are in (options.c): as typed on the command line. */
    struct {
        const char *url, *nats, *sources, *server_pids, *broker_pids;
    } arg;
    uint64_t given[2]; /* options on the command line, a bit per row of options.c's table */
};

/* ------------------------------------------------------------------ */
/* options.c: the command line, from one table of the options. */

enum lt_args_result {
    LT_ARGS_RUN = 0,
    LT_ARGS_USAGE = 2, /* a usage error, said on stderr: the exit code */
    LT_ARGS_HELP = 3,
    LT_ARGS_SELFTEST = 4,
    LT_ARGS_HELP_MARKDOWN = 5,
};

/*
 * Parses argv into cfg: defaults, the options, then each scenario's presets
 * and the checks between options. Returns what to do (enum lt_args_result).
 */
int lt_parse_args(struct lt_config *cfg, int argc, char **argv);
/* The defaults of every option (all zero but what the table's help says). */
void lt_config_defaults(struct lt_config *cfg);

enum lt_option_result { LT_OPTION_SET = 0, LT_OPTION_UNKNOWN, LT_OPTION_BAD };
/* Sets one option as the command line would: name as typed ("--subs"), value NULL for flags. */
enum lt_option_result lt_option_set(struct lt_config *cfg, const char *name, const char *value);
/* Whether the option was given (lt_parse_args or lt_option_set), under any of its names. */
bool lt_option_given(const struct lt_config *cfg, const char *name);
/* --help, and --help-markdown: the option tables of docs/loadtest.md. */
void lt_usage(FILE *out);
void lt_usage_markdown(FILE *out);

/* Channel name of channel index c into out (NUL-terminated). */
void lt_channel_name(const struct lt_config *cfg, uint32_t c, char *out, size_t cap);
/* The NATS subject rtgate uses for channel index c: rtgate.eph.<name> (rtgate.dur. with
 * --durable-nats). */
void lt_nats_subject(const struct lt_config *cfg, uint32_t c, char *out, size_t cap);
/* The subject prefix of lt_nats_subject. */
const char *lt_nats_prefix(const struct lt_config *cfg);
/* Parses nats://HOST:PORT (loopback only) into cfg->nats_url / nats_dst. */
bool lt_parse_nats_url(struct lt_config *cfg, const char *url, char *err, size_t err_cap);
/* The scenario's name ("fanout", ...). */
const char *lt_scenario_name(enum lt_scenario s);
/* Total connections: subscribers (or idle connections) plus publishers. */
uint32_t lt_total_conns(const struct lt_config *cfg);
/* Streams tracked: one per (publisher, channel). */
static inline size_t lt_nstreams(const struct lt_config *cfg)
{
    return (size_t)cfg->publishers * cfg->channels;
}

/*
 * Parses a ws:// URL into cfg (host, port, path, dst). Refuses hosts outside
 * loopback. Returns false with a reason in err.
 */
bool lt_parse_url(struct lt_config *cfg, const char *url, char *err, size_t err_cap);
/* Parses one loopback source address (IPv4 or IPv6) into cfg->src[n_src]. */
bool lt_add_source(struct lt_config *cfg, const char *text, char *err, size_t err_cap);

/* ------------------------------------------------------------------ */
/* Counters: each worker fills one; the parent sums them. */

#define LT_ERR_CODES 9 /* 400 401 403 404 409 413 429 503 other */

struct lt_stats {
    /* setup */
    uint64_t conns_planned;
    uint64_t conns_ready;
    uint64_t connect_errors;     /* socket/connect failed */
    uint64_t handshake_failures; /* HTTP upgrade refused or wrong */
    uint64_t handshake_retries;  /* 429/503 at the handshake, retried */
    uint64_t setup_errors;       /* connect/sub answered with an error, or timed out */
    uint64_t setup_timeouts;
    uint64_t setup_first_ns; /* first connection started */
    uint64_t setup_last_ns;  /* last connection ready */
    /* while running */
    uint64_t server_closes;      /* connections the server closed or reset */
    uint64_t server_disconnects; /* `disconnect` messages */
    uint64_t protocol_errors;    /* frames or messages the tool could not read */
    uint64_t error_msgs;         /* `error` messages */
    /* publishing */
    uint64_t published; /* pubs written */
    uint64_t pub_ok;
    uint64_t pub_errors; /* error replies other than 429 */
    uint64_t rate_limited;
    uint64_t pub_no_reply;
    uint64_t skipped_backoff; /* slots not published while backing off after 429 */
    uint64_t skipped_stalled; /* slots not published: socket backlog or reply window full */
    uint64_t pub_lag_max_ns;  /* longest a publish was written after its slot (client overload) */
    /* delivery */
    uint64_t delivered; /* msg deliveries with load data */
    uint64_t delivered_measured;
    uint64_t unique;
    uint64_t dup;
    uint64_t ooo;
    uint64_t foreign_msgs;   /* msgs without load data or on the wrong channel */
    uint64_t seq_violations; /* durable seq not increasing */
    uint64_t gap_msgs;
    uint64_t gap_seqs;
    uint64_t acks_sent;
    uint64_t frames_in;
    uint64_t msgs_in;
    uint64_t bytes_in;
    uint64_t error_codes[LT_ERR_CODES];
    uint64_t nats_pings;     /* NATS publisher: PINGs sent to confirm what was published */
    uint64_t nats_errs;      /* -ERR from a NATS server */
    uint64_t drain_timeouts; /* workers whose drain ended by the clock, not complete */
    uint64_t cpu_ns_setup;   /* the worker's own CPU time when it was ready */
    uint64_t cpu_ns_total;   /* ... and when it sent its result */
};

void lt_stats_add(struct lt_stats *into, const struct lt_stats *from);
int lt_error_code_index(int code);

/* ------------------------------------------------------------------ */
/* Parent <-> worker pipe messages. */

enum lt_pipe_type {
    LT_P_READY = 1, /* worker: setup done; struct lt_stats, uint32_t ready_subs[channels] */
    LT_P_START,     /* parent: body struct lt_start */
    LT_P_PUBDONE,   /* worker: body uint64_t accepted[nstreams] */
    LT_P_EXPECT,    /* parent: uint64_t accepted[channels], all publishers together */
    LT_P_RESULT, /* worker: lt_stats, lt_hist latency, lt_hist setup, uint64_t unique[nstreams] */
    LT_P_FINISH, /* parent: close everything and exit */
    LT_P_ABORT,  /* parent: the run is cut short; send RESULT now, then exit */
};

struct lt_pipe_hdr {
    uint32_t type;
    uint32_t pad;
    uint64_t len; /* body bytes */
};

struct lt_start {
    uint64_t t0;        /* first publish slot */
    uint64_t t_measure; /* warmup ends: latencies recorded from here */
    uint64_t t_end;     /* publishing (or holding idle) ends */
    uint64_t t_drain;   /* latest end of the drain */
};

/* Writes a whole message (blocking). */
bool lt_pipe_send(int fd, uint32_t type, const void *body, size_t len);
bool lt_pipe_send2(int fd, uint32_t type, const void *a, size_t alen, const void *b, size_t blen);

/* ------------------------------------------------------------------ */
/* worker.c */

/* Which connections a worker owns: subscribers [sub_lo, sub_hi), publishers p % nworkers == id. */
struct lt_slice {
    uint32_t id;
    uint32_t nworkers;
    uint32_t sub_lo, sub_hi;
};

void lt_slice_of(const struct lt_config *cfg, uint32_t id, uint32_t nworkers, struct lt_slice *s);

/* Runs one worker to the end of the run; returns the process exit code. */
int lt_worker_main(const struct lt_config *cfg, const struct lt_slice *slice, int up_fd,
                   int down_fd, uint64_t hard_deadline_ns);

/* ------------------------------------------------------------------ */
/* report.c */

struct lt_proc_sample {
    bool ok;
    uint64_t cpu_ticks; /* utime + stime, all pids */
    uint64_t rss_kb;    /* VmRSS, all pids */
    bool broker_ok;
    uint64_t broker_cpu_ticks; /* the same for --broker-pid */
    uint64_t broker_rss_kb;
    uint64_t machine_busy_ticks; /* /proc/stat: all CPUs, not idle or iowait */
    uint64_t at_ns;
};

void lt_proc_sample(const struct lt_config *cfg, struct lt_proc_sample *s);
double lt_ticks_to_us(uint64_t ticks);

/* Everything the end-of-run report needs. */
struct lt_result {
    struct lt_stats st;
    struct lt_hist lat;
    struct lt_hist setup;
    uint64_t expected;
    uint64_t lost;
    uint64_t unexpected; /* deliveries beyond what was accepted on a stream */
    uint64_t errors;
    double measured_s;
    double time_to_connect_s;
    struct lt_proc_sample before, after_setup, measure_start, end;
    double client_cpu_s;
    bool timed_out;
    int workers_failed;
    bool ok;
};

/* Formats ns as "850 us", "12.3 ms" or "4.52 s". */
void lt_fmt_latency(uint64_t ns, char *out, size_t cap);
/* Writes the JSON line (with trailing '\n') to f. */
void lt_report_json(FILE *f, const struct lt_config *cfg, const struct lt_result *r);
/* Writes the SVG percentile plot; false on an I/O error. */
bool lt_report_svg(const char *path, const struct lt_config *cfg, const struct lt_result *r);

/* ------------------------------------------------------------------ */
/* scen.c: the single-process scenarios (presence, churn, storm) */

/* True for the scenarios scen*.c runs (no workers, no delivery check). */
bool lt_scen_own(enum lt_scenario s);
/* Fills the presets and checks the options; false after printing why (a usage error). */
bool lt_scen_check(struct lt_config *cfg);
/* Runs the scenario, prints the JSON line; returns the exit code (0 ok, 1 not ok). */
int lt_scen_run(const struct lt_config *cfg);
/* The self-test's checks of scen*.c; returns the failures, adds to *checks. */
int lt_scen_selftest(int *checks);

/* ------------------------------------------------------------------ */
/* selftest.c */

/* Runs the checks, prints one line per failure and a summary; returns the exit code. */
int lt_selftest(void);

#endif
