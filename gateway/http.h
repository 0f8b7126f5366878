/*
 * http.h: what the HTTP transports share (docs/protocol.md, "Server-Sent
 * Events and long-polling"). A session of these transports outlives any
 * single HTTP request (the stream breaks, polls come and go, POSTs land on
 * any node), so its storage is the gateway's (struct gw_hsession), not
 * lws's; an HTTP request of ours is lws's per-transaction data (struct
 * gw_http_req) and names its session by connection id, never by pointer.
 *
 *   hsession.c  the sessions: created by a stream or a first poll (the
 *               `connect` is the request's), found by session token
 *   httpapi.c   the endpoints: routing, CORS, admission, answers
 *   sse.c       the SSE transport: the stream, event ids, heartbeats
 *   longpoll.c  the long-poll transport: held polls, numbered batches
 *   send.c      POST /send: requests into a session, here or relayed
 *   relay.c     a POST or poll for a session of another node, over NATS
 *   sesstoken.c the session tokens any node of the fleet can check
 *
 * Loop thread, except gw_sesstoken_configure (main thread, before the loop).
 */
#ifndef GW_HTTP_H
#define GW_HTTP_H

#include "gw.h"

#define GW_PATH_SSE  "/sse"
#define GW_PATH_POLL "/poll"
#define GW_PATH_SEND "/send"

#define GW_TOKEN_TEXT_MAX   96 /* a session token's text (base64url) */
#define GW_SSE_MAX_CHANNELS PROTO_RESUME_MAX_CHANNELS
#define GW_POLL_BATCH_MAX                                                                          \
    (64 * 1024) /* bytes of one long-poll answer (more waits for the next)                         \
                 */
#define GW_HTTP_BODIES_MAX (16u * 1024 * 1024) /* POST bodies being read, all together */
#define GW_ORIGIN_ECHO_MAX 128 /* an allowed Origin longer than this gets no CORS headers */

/* ------------------------------------------------------------------ */
/* Session tokens (sesstoken.c). */

/* What a session token names: the node holding the session and the session. */
struct gw_sesstoken {
    uint8_t node[GW_NODE_KEY_BYTES];
    uint64_t conn_id;
    char client_id[28];
};

enum gw_token_check {
    GW_TOKEN_OK,
    GW_TOKEN_MALFORMED, /* not a token of ours: 401 */
    GW_TOKEN_FORGED,    /* well formed, but its MAC does not hold: 401 */
};

/* The session's token (NUL-terminated, at most GW_TOKEN_TEXT_MAX characters). */
void gw_sesstoken_mint(const struct gw_session *s, char out[GW_TOKEN_TEXT_MAX + 1]);
/* The `connected` fields of an HTTP session: its transport and a fresh token
 * (the .describe of the SSE and long-poll transports). */
void gw_sesstoken_describe(struct gw_session *s, struct proto_writer *w);
/* Checks a client's token (hostile text) with this process's key. */
enum gw_token_check gw_sesstoken_check(const struct gw_server *srv, const char *text, size_t len,
                                       struct gw_sesstoken *out);

/* ------------------------------------------------------------------ */
/* Sessions (hsession.c). */

/* A URL channel of an SSE stream and the position its `id:` lines carry. */
struct gw_sse_chan {
    char name[PROTO_CHANNEL_MAX + 1];
    uint32_t hash;                   /* proto_resume_hash(name) */
    bool known;                      /* durable, with an epoch and a seq */
    char epoch[PROTO_EPOCH_MAX + 1]; /* of the subscription */
    uint64_t seq;                    /* the last seq written to the stream */
    bool resume;                     /* subscribed with since (from Last-Event-ID) */
    bool ack_due;                    /* a delivery was written: acked after the write */
    uint64_t since;
};

/* A session of an HTTP transport: gateway-owned (calloc), freed by gw_hsession_free. */
struct gw_hsession {
    struct gw_session s; /* first: the session layer's part */
    struct lws *wsi;     /* the request serving it now: the stream, or the held poll; NULL */
    uint64_t post_seq;   /* the last POST (Rtgate-Seq) handled */
    int64_t connect_id;  /* the id of the request's `connect` */
    /* SSE */
    struct gw_sse_chan *chans; /* the stream URL's channels, n_chans of them */
    uint8_t n_chans;
    bool ids_dirty;        /* a position changed: the next event carries an id */
    bool stream_ending;    /* everything is written: the stream closes */
    bool stream_cut;       /* the socket was shut down: close at the next WRITEABLE */
    uint64_t last_sent_ms; /* the last write to the stream (heartbeats) */
    /* Long-polling */
    uint64_t batch;           /* the number of the last batch answered (0: none yet) */
    uint8_t *retained;        /* that batch, kept until a poll acks it */
    uint32_t retained_len;    /* one batch (64 KiB or one bigger message), outside the outbox */
    uint64_t hold_until_ms;   /* a held poll is answered, empty, at this time */
    uint64_t unheld_since_ms; /* no poll held since then (the idle timeout runs) */
    uint64_t remote_ticket;   /* a poll held for another node (relay.c), 0: none */
    char remote_reply[64];    /* ... and its reply subject */
    bool poll_answer_due;     /* the held poll is answered at the next write */
};

static inline struct gw_hsession *gw_hsession_of(struct gw_session *s)
{
    return (struct gw_hsession *)(void *)s;
}

/* What a stream or a first poll asks for: read from its URL and headers (httpapi.c). */
struct gw_hsession_params {
    enum gw_transport_kind transport;
    char peer[EDGE_ADDR_TEXT];
    const char *token; /* the JWT for `connect`, or NULL */
    size_t token_len;
    const char *name; /* connect's name, or NULL */
    size_t name_len;
    int64_t connect_id;
    const char *channels[GW_SSE_MAX_CHANNELS]; /* SSE: the URL's channels (validated) */
    size_t n_channels;
    struct proto_resume_pos resume[GW_SSE_MAX_CHANNELS]; /* SSE: from Last-Event-ID */
    size_t n_resume;
};

/*
 * Opens a session and runs its `connect` (and, for SSE, the URL's subs,
 * resumed from the positions). Returns the session, READY, with the replies
 * in its outbox; or NULL with *status the HTTP answer (401 refused token,
 * 503 no room) and, when there is one, the refusal's messages in *body
 * (malloc'd, JSON lines, *body_len bytes; the caller frees).
 */
struct gw_hsession *gw_hsession_create(struct gw_server *srv, const struct gw_hsession_params *p,
                                       unsigned *status, uint8_t **body, size_t *body_len);
/* The session of a token, if this node holds it and it is not closing. */
struct gw_hsession *gw_hsession_find(struct gw_server *srv, const struct gw_sesstoken *t);
/* The long-poll session of a token for a poll: as gw_hsession_find, and also a
 * closing one whose disconnect still waits for a poll to carry it. */
struct gw_hsession *gw_hsession_find_poll(struct gw_server *srv, const struct gw_sesstoken *t);
/* Ends a session now: the session layer's close-down, then the memory. */
void gw_hsession_free(struct gw_hsession *h);
/* Marks a session for reaping (its transport is done with it). */
void gw_hsession_done(struct gw_hsession *h);

/* ------------------------------------------------------------------ */
/* HTTP requests of ours (httpapi.c). */

#define GW_HTTP_MAGIC 0x72744854u

enum gw_http_kind {
    GW_HTTP_STREAM = 1, /* GET /sse: the stream of a session */
    GW_HTTP_POLL,       /* GET /poll */
    GW_HTTP_SEND,       /* POST /send */
};

/* lws's per-transaction data of a request of ours (zeroed by lws for each one). */
struct gw_http_req {
    uint32_t magic;
    uint8_t kind;    /* enum gw_http_kind */
    bool deferred;   /* its answer is written from HTTP_WRITEABLE (status, body) */
    bool closes;     /* the connection ends with the answer (a request with a body) */
    bool counted;    /* its body counts in srv->http_body_bytes */
    bool end;        /* POST close=1: the session ends after this body */
    bool reading;    /* POST: its body is being read (body_want bytes) */
    bool refused;    /* POST: its body did not fit GW_HTTP_BODIES_MAX: read, dropped, 503 */
    uint16_t status; /* the deferred answer */
    uint32_t retry_after_ms;
    uint64_t conn_id; /* the session it serves here (stream, held poll) */
    uint64_t ticket;  /* relayed: the answer it waits for (relay.c), 0: none */
    uint64_t deadline_ms;
    uint64_t seq;   /* POST: Rtgate-Seq; poll: the batch it acks */
    uint64_t batch; /* a deferred poll answer's batch number */
    uint8_t *body;  /* the POST body being read, or a deferred answer's body */
    uint32_t body_len, body_cap;
    uint32_t body_want; /* POST: its Content-Length (the memory grows as the body comes) */
    char origin[GW_ORIGIN_ECHO_MAX]; /* the allowed Origin to echo (CORS), "" for none */
    char token[GW_TOKEN_TEXT_MAX + 1];
};

/*
 * A request that waits (a stream, a held poll, a relayed request). lws 4.1
 * reads nothing from an HTTP connection during a response, and with libuv
 * a connection whose input is ready but not read wakes the loop again at
 * once: a client's FIN would spin it. So while such a request has nothing
 * to write its input is off (gw_http_quiet: it cannot spin; a client gone
 * meanwhile shows at the next write, or at a stream's heartbeat, which
 * peeks). To write beyond what the socket takes at once, to answer, or to
 * close, the input goes back on with a WRITEABLE asked for (gw_http_wake);
 * that WRITEABLE, which a shut or broken socket also gets, does the work
 * and turns the input off again. The first one also lifts the request
 * timeout lws arms after LWS_CALLBACK_HTTP: the request's own deadline
 * (the hold, the relay's wait) bounds it instead.
 */
void gw_http_wake(struct lws *wsi);
void gw_http_quiet(struct lws *wsi);
/* The request starts waiting: its headers' storage goes back to lws (read already),
 * then gw_http_wake lifts the request timeout. */
void gw_http_wait(struct lws *wsi);
/* Writes an answer now: status, CORS, no caching, an optional body. lws's convention. */
int gw_http_answer(struct lws *wsi, struct gw_http_req *r, unsigned status, const char *ctype,
                   const uint8_t *body, size_t len, uint32_t retry_after_ms, uint64_t batch);
/* An answer written later, from HTTP_WRITEABLE (the body is taken over). */
void gw_http_defer(struct lws *wsi, struct gw_http_req *r, unsigned status, uint8_t *body,
                   size_t len, uint32_t retry_after_ms, uint64_t batch);
/* A one-line JSON error body: {"type":"error","error":{"code":..,"reason":..,"message":..}} */
int gw_http_error(struct lws *wsi, struct gw_http_req *r, unsigned status, const char *message,
                  uint32_t retry_after_ms);

/* ------------------------------------------------------------------ */
/* The transports. */

/* sse.c: starts the stream on wsi (status line and headers written, then the outbox). */
int gw_sse_start(struct gw_hsession *h, struct lws *wsi, struct gw_http_req *r);
/* HTTP_WRITEABLE of a stream. */
int gw_sse_writable(struct gw_hsession *h, struct lws *wsi);
/* The stream's connection closed. */
void gw_sse_closed(struct gw_hsession *h);

/* longpoll.c: a poll for h, from here (wsi) or relayed (ticket + reply subject). */
int gw_poll_local(struct gw_hsession *h, struct lws *wsi, struct gw_http_req *r, uint64_t ack);
void gw_poll_remote(struct gw_hsession *h, uint64_t ack, uint64_t ticket, const char *reply);
/* The first answer of a new session: its batch 1 (the connect's replies). */
int gw_poll_first(struct gw_hsession *h, struct lws *wsi, struct gw_http_req *r);
/* The held poll's connection closed before its answer. */
void gw_poll_closed(struct gw_hsession *h, struct lws *wsi);
/* The session ends: a held poll is answered 404. */
void gw_poll_release(struct gw_hsession *h);

/* send.c: a POST's requests for a session of this node. The HTTP status to answer
 * (204, 404, 409, 429 with *retry_after_ms). */
unsigned gw_send_apply(struct gw_server *srv, const struct gw_sesstoken *t, uint64_t seq,
                       const uint8_t *body, size_t len, bool end, uint32_t *retry_after_ms);

/* relay.c: the bus between nodes for POSTs and polls (gw.h: start, stop, receive, sweep). */
/* True if this node can reach other nodes (the nats engine's bus is open). */
bool gw_relay_ready(const struct gw_server *srv);
/* Sends a POST or a poll to the node holding the session; the answer comes to wsi later. */
rt_status gw_relay_forward(struct gw_server *srv, struct lws *wsi, struct gw_http_req *r,
                           const struct gw_sesstoken *t, const uint8_t *body, size_t len);
/* The answer of a poll held here for another node. */
void gw_relay_answer(struct gw_server *srv, uint64_t ticket, const char *reply, unsigned status,
                     uint32_t retry_after_ms, uint64_t batch, const uint8_t *body, size_t len);
/* Forgets a forwarded request whose connection closed. */
void gw_relay_forget(struct gw_server *srv, uint64_t ticket);

#endif
