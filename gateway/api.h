/*
 * api.h: the server API for backends (docs/api.md), HTTP on the WebSocket
 * listener. api.c owns the HTTP side (routing, the key check, request
 * bodies, deferred answers, hang-ups); api_ops.c the operations, each of
 * which turns a request into a JSON body and a status, with no lws.
 * Everything runs on the loop thread.
 *
 * Request ids: a publish that completes later is matched to its request by
 * the conn_id of fo_pub_req. Connection ids always have a slot number >= 1
 * in their low 32 bits (conns.c); API request ids have 0 there, so neither
 * can be taken for the other, and a request that is gone (the client hung
 * up, the deadline passed) is simply not found when its answer arrives.
 */
#ifndef GW_API_H
#define GW_API_H

#include "gw.h"

struct lws;
struct gw_api;

#define GW_API_PREFIX       "/api/"
#define GW_API_BATCH_MAX    100   /* messages in one publish request */
#define GW_API_REQUESTS_MAX 64    /* requests reading a body or waiting for answers */
#define GW_API_DEADLINE_MS  30000 /* a body or an engine answer later than this: given up */
#define GW_API_KEY_MAX      1024  /* bytes of the key file */
#define GW_API_KEY_MIN      16
#define GW_API_PENDING      (-1) /* fo_pub_result.error of a message the engine has not answered */

/* Starts the API when --api-key-file is set (reads the key), else leaves
 * srv->api NULL: every /api/ path is then a 404. RT_INVAL (logged) for an
 * unreadable or unfit key file. */
rt_status gw_api_create(struct gw_server *srv);
/* Frees the API and every request (at shutdown, after lws closed them). */
void gw_api_destroy(struct gw_server *srv);

/*
 * True if the request brings a body (POST, Content-Length or
 * Transfer-Encoding). Its connection must end with its answer: lws 4.1
 * loops forever (100% CPU, deaf to signals) on a request body followed by
 * a pipelined request in the same packet, so keeping such a connection
 * alive let one packet from anyone hang the gateway.
 */
bool gw_http_has_body(struct lws *wsi);

/* True for a path the API answers (when it is on; off, they are unknown paths: 404). */
bool gw_api_path(const char *uri);

/* The lws callback's cases for API requests; lws's return convention.
 * gw_api_http only with the API on; the others find no request when off. */
int gw_api_http(struct gw_server *srv, struct lws *wsi, const char *uri);
int gw_api_body(struct gw_server *srv, struct lws *wsi, const void *in, size_t len);
int gw_api_body_done(struct gw_server *srv, struct lws *wsi);
int gw_api_writable(struct gw_server *srv, struct lws *wsi);
/* The HTTP connection closed: its request, if any, is forgotten (a publish
 * already handed to the engine still completes, unanswered). */
void gw_api_closed(struct gw_server *srv, struct lws *wsi);

/* True if conn_id names an API request rather than a connection. */
bool gw_api_is_request(uint64_t conn_id);
/* The engine's answer to message `index` of API request `id` (sink pub_done). */
void gw_api_pub_done(struct gw_server *srv, uint64_t id, int64_t index,
                     const struct fo_pub_result *res);
/* Gives up requests past GW_API_DEADLINE_MS (the server's sweep). */
void gw_api_sweep(struct gw_server *srv, uint64_t now_ms);

/* ---- between api.c and api_ops.c --------------------------------------- */

enum gw_api_route {
    GW_API_PUBLISH,
    GW_API_DISCONNECT,
    GW_API_CHANNELS, /* the list */
    GW_API_CHANNEL,  /* one: /api/v1/channels/NAME */
    GW_API_PRESENCE,
    GW_API_NODE,
};

/*
 * One HTTP request in progress: a body route (publish, disconnect) from the
 * request line until its response is written. At most GW_API_REQUESTS_MAX,
 * on the API's list (a list: lookups by connection or id walk at most that
 * many).
 */
struct gw_api_req {
    struct gw_api_req *prev, *next;
    uint64_t id;
    struct lws *wsi; /* NULL once the client hung up */
    uint8_t route;   /* enum gw_api_route */
    bool body_done;  /* the body is in and the operation ran */
    bool answered;   /* the response is in resp, waiting for WRITEABLE */
    uint64_t started_ms;
    uint8_t *body;
    size_t body_len, body_cap;
    /* Publish: one result per message, n_waiting of them still with the engine
     * (their error is GW_API_PENDING meanwhile). */
    bool batch;
    uint32_t n_items, n_waiting;
    struct fo_pub_result *results;
    /* The response. */
    unsigned status;
    uint32_t retry_after_ms;
    struct proto_buf resp;
};

/* What a GET route reads from the query string: the value of `name` into
 * buf (URL-decoded, NUL-terminated). 1 when there, 0 when absent, -1 when
 * longer than cap - 1 bytes. */
typedef int (*gw_api_arg_fn)(void *ctx, const char *name, char *buf, size_t cap);

/* api_ops.c. Each fills r->status, r->retry_after_ms and r->resp. */
/* Publishes the message(s) of the body; r->n_waiting > 0 when answers are due
 * from the engine (then gw_api_publish_answer once they are in). */
void gw_api_publish(struct gw_server *srv, struct gw_api_req *r);
void gw_api_publish_answer(struct gw_api_req *r);
void gw_api_disconnect(struct gw_server *srv, struct gw_api_req *r);
/* GET routes; `rest` is the path after the route's prefix (a channel name). */
void gw_api_get(struct gw_server *srv, enum gw_api_route route, const char *rest, gw_api_arg_fn arg,
                void *ctx, struct gw_api_req *r);
/* {"ok":false,"error":{...}} with the protocol's codes and reasons. */
void gw_api_error(struct gw_api_req *r, int code, const char *message, uint32_t retry_after_ms);
/* Takes a token of the node-wide API publish bucket (--api-pub-rate). */
bool gw_api_take_publish(struct gw_server *srv, uint32_t *retry_after_ms);
/* API request id counter value, requests in progress, answered: for /api/v1/node. */
void gw_api_counts(const struct gw_server *srv, uint64_t *requests, uint64_t *in_progress,
                   uint64_t *auth_failures);

#endif
