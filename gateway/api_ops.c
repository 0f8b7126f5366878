/*
 * api_ops.c: the server API's operations (docs/api.md), each a request in,
 * a status and a JSON body out; no lws (api.c does the HTTP).
 *
 * A publish goes through the same path as a client's `pub`: each message
 * of the body is re-encoded as {"type":"pub",...} and decoded by the
 * session decoder, so the channel, msg_id, data and size rules and the
 * error codes are the WebSocket ones, then handed to fo_publish, so the
 * dedup window is shared with WebSocket publishes. Loop thread.
 */
#include "api.h"
#include "fleet.h"

#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- JSON bodies ----------------------------------------------------- */

static void begin_ok(struct gw_api_req *r, struct proto_writer *w)
{
    proto_buf_reset(&r->resp);
    proto_writer_init(w, PROTO_JSON, &r->resp);
    proto_w_map(w);
    proto_w_kbool(w, "ok", true);
}

/* Ends the body begun by begin_ok: 200, or 503 if it could not be written. */
static void end_ok(struct gw_api_req *r, struct proto_writer *w)
{
    proto_w_end(w);
    if (proto_writer_status(w) != RT_OK) {
        gw_api_error(r, RT_E_UNAVAILABLE, "response could not be encoded", 1000);
        return;
    }
    r->status = 200;
    r->retry_after_ms = 0;
}

/* The "error" object of PROTOCOL.md section 5, as a value. */
static void write_error(struct proto_writer *w, int code, const char *message,
                        uint32_t retry_after_ms)
{
    proto_w_map(w);
    proto_w_kint(w, "code", code);
    proto_w_kcstr(w, "reason",
                  code == 405   ? "method_not_allowed"
                  : code == 411 ? "length_required"
                                : rt_error_reason(code));
    if (message)
        proto_w_kcstr(w, "message", message);
    if (code == RT_E_RATE_LIMITED || code == RT_E_UNAVAILABLE)
        proto_w_kuint(w, "retry_after_ms", retry_after_ms ? retry_after_ms : 1000);
    proto_w_end(w);
}

void gw_api_error(struct gw_api_req *r, int code, const char *message, uint32_t retry_after_ms)
{
    struct proto_writer w;
    proto_buf_reset(&r->resp);
    proto_writer_init(&w, PROTO_JSON, &r->resp);
    proto_w_map(&w);
    proto_w_kbool(&w, "ok", false);
    proto_w_key(&w, "error");
    write_error(&w, code, message, retry_after_ms);
    proto_w_end(&w);
    r->status = (unsigned)code;
    r->retry_after_ms = code == RT_E_RATE_LIMITED || code == RT_E_UNAVAILABLE
                            ? (retry_after_ms ? retry_after_ms : 1000)
                            : 0;
}

/* The body as a JSON object, or NULL after answering 400. */
static json_t *body_object(struct gw_api_req *r)
{
    json_error_t err;
    json_t *root = json_loadb((const char *)r->body, r->body_len,
                              JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &err);
    if (!root || !json_is_object(root)) {
        json_decref(root);
        gw_api_error(r, RT_E_BAD_REQUEST, root ? "body must be a JSON object" : "invalid JSON", 0);
        return NULL;
    }
    return root;
}

/* ---- publish ----------------------------------------------------------- */

static void fail_item(struct gw_api_req *r, uint32_t i, int code, const char *message,
                      uint32_t retry_after_ms)
{
    r->results[i] = (struct fo_pub_result){
        .error = code, .error_message = message, .retry_after_ms = retry_after_ms};
}

/* One message of the body: checked as a client `pub` is, then published. */
static void publish_item(struct gw_server *srv, struct gw_api_req *r, uint32_t i, json_t *item,
                         struct proto_buf *frame)
{
    if (!json_is_object(item)) {
        fail_item(r, i, RT_E_BAD_REQUEST, "a message must be a JSON object", 0);
        return;
    }
    /* The WebSocket form of the message, for the session decoder. */
    if (json_object_set_new(item, "type", json_string("pub")) ||
        json_object_set_new(item, "id", json_integer((json_int_t)i))) {
        fail_item(r, i, RT_E_UNAVAILABLE, "out of memory", 1000);
        return;
    }
    size_t need = json_dumpb(item, NULL, 0, JSON_COMPACT);
    proto_buf_reset(frame);
    if (need == 0 || proto_buf_reserve(frame, need) != RT_OK) {
        fail_item(r, i, RT_E_UNAVAILABLE, "out of memory", 1000);
        return;
    }
    frame->len = json_dumpb(item, (char *)frame->data, need, JSON_COMPACT);
    struct proto_msg *m;
    size_t n = 0;
    rt_status st = proto_decode(srv->dec, PROTO_JSON, frame->data, frame->len, &m, &n);
    if (st == RT_TOO_BIG) {
        fail_item(r, i, RT_E_TOO_LARGE, "message over --max-message-bytes", 0);
        return;
    }
    if (st != RT_OK || n != 1) {
        fail_item(r, i, RT_E_UNAVAILABLE, "out of memory", 1000);
        return;
    }
    if (m->error) {
        fail_item(r, i, m->error, m->error_message, 0);
        return;
    }
    uint32_t retry = 0;
    if (!gw_api_take_publish(srv, &retry)) {
        fail_item(r, i, RT_E_RATE_LIMITED, "API publish rate exceeded (--api-pub-rate)", retry);
        return;
    }
    struct fo_pub_req req = {
        .channel = m->channel.ptr,
        .channel_len = m->channel.len,
        .msg_id = m->msg_id.ptr,
        .msg_id_len = m->msg_id.len,
        .payload = m->data,
        .conn_id = r->id,
        .req_id = i,
        .user = NULL, /* on NATS: no Rtgate-User / Rtgate-Client (docs/api.md) */
        .client = NULL,
    };
    st = fo_publish(srv->fo, &req, &r->results[i]);
    if (st == RT_AGAIN) {
        r->results[i].error = GW_API_PENDING;
        r->n_waiting++;
    } else if (st != RT_OK) {
        fail_item(r, i, RT_E_UNAVAILABLE, "publish failed", 1000);
    }
}

void gw_api_publish(struct gw_server *srv, struct gw_api_req *r)
{
    json_t *root = body_object(r);
    if (!root)
        return;
    json_t *list = json_object_get(root, "messages");
    r->batch = list != NULL;
    r->n_items = r->batch ? (uint32_t)json_array_size(list) : 1;
    if (r->batch && (!json_is_array(list) || r->n_items == 0 || r->n_items > GW_API_BATCH_MAX)) {
        json_decref(root);
        gw_api_error(r, RT_E_BAD_REQUEST, "messages must be an array of 1 to 100 messages", 0);
        return;
    }
    r->results = calloc(r->n_items, sizeof *r->results);
    if (!r->results) {
        json_decref(root);
        gw_api_error(r, RT_E_UNAVAILABLE, "out of memory", 1000);
        return;
    }
    struct proto_buf frame;
    proto_buf_init(&frame, 0);
    for (uint32_t i = 0; i < r->n_items; i++)
        publish_item(srv, r, i, r->batch ? json_array_get(list, i) : root, &frame);
    proto_buf_free(&frame);
    json_decref(root);
    if (!r->n_waiting)
        gw_api_publish_answer(r);
}

/* One publish's answer: {"ok":true,"seq":..,"dup":..} as a WebSocket reply
 * has it (seq on durable channels), or {"ok":false,"error":{...}}. */
static void write_result(struct proto_writer *w, const struct fo_pub_result *res)
{
    proto_w_map(w);
    proto_w_kbool(w, "ok", res->error == 0);
    if (res->error) {
        proto_w_key(w, "error");
        write_error(w, res->error, res->error_message, res->retry_after_ms);
    } else {
        if (res->durable)
            proto_w_kuint(w, "seq", res->seq);
        proto_w_kbool(w, "dup", res->dup);
    }
    proto_w_end(w);
}

void gw_api_publish_answer(struct gw_api_req *r)
{
    if (!r->batch) {
        const struct fo_pub_result *res = &r->results[0];
        if (res->error) {
            gw_api_error(r, res->error, res->error_message, res->retry_after_ms);
            return;
        }
        proto_buf_reset(&r->resp);
        struct proto_writer w;
        proto_writer_init(&w, PROTO_JSON, &r->resp);
        write_result(&w, res);
        if (proto_writer_status(&w) != RT_OK) {
            gw_api_error(r, RT_E_UNAVAILABLE, "response could not be encoded", 1000);
            return;
        }
        r->status = 200;
        r->retry_after_ms = 0;
        return;
    }
    struct proto_writer w;
    begin_ok(r, &w);
    proto_w_key(&w, "results");
    proto_w_array(&w);
    for (uint32_t i = 0; i < r->n_items; i++)
        write_result(&w, &r->results[i]);
    proto_w_end(&w);
    end_ok(r, &w);
}

/* ---- disconnect -------------------------------------------------------- */

void gw_api_disconnect(struct gw_server *srv, struct gw_api_req *r)
{
    json_t *root = body_object(r);
    if (!root)
        return;
    json_t *user = json_object_get(root, "user"), *client = json_object_get(root, "client");
    json_t *reconnect = json_object_get(root, "reconnect");
    const char *why = NULL;
    if ((user != NULL) == (client != NULL))
        why = "give exactly one of user and client";
    else if (!json_is_string(user ? user : client) ||
             json_string_length(user ? user : client) == 0 ||
             json_string_length(user ? user : client) > GEO_USER_MAX)
        why = "user / client must be a string of 1 to 512 bytes";
    else if (reconnect && !json_is_boolean(reconnect))
        why = "reconnect must be true or false";
    if (why) {
        json_decref(root);
        gw_api_error(r, RT_E_BAD_REQUEST, why, 0);
        return;
    }
    const char *want = json_string_value(user ? user : client);
    size_t want_len = json_string_length(user ? user : client);
    bool again = reconnect && json_is_true(reconnect);
    uint64_t count = 0;
    for (uint32_t i = 0; i < srv->conns.used; i++) {
        struct gw_session *s = srv->conns.slots[i];
        if (!s || s->closing)
            continue;
        const char *name =
            user ? (s->state == GW_S_READY ? gw_session_user(s) : NULL) : s->client_id;
        if (!name || strlen(name) != want_len || memcmp(name, want, want_len) != 0)
            continue;
        /* Kicked: 4003 and no reconnect; asked to come back: 1000 and reconnect. */
        if (again)
            gw_session_close(s, 1000, "disconnected", true, true, 0);
        else
            gw_session_close(s, 4003, "disconnected", true, false, 0);
        count++;
    }
    json_decref(root);
    rt_log(RT_LOG_INFO, "api_disconnect", "by=%s connections=%llu reconnect=%d",
           user ? "user" : "client", (unsigned long long)count, again);
    struct proto_writer w;
    begin_ok(r, &w);
    proto_w_kuint(&w, "disconnected", count);
    end_ok(r, &w);
}

/* ---- GET: channels, presence, node -------------------------------------- */

/* A decimal 1..max (or the default when absent); false when malformed. */
static bool arg_limit(gw_api_arg_fn arg, void *ctx, size_t dflt, size_t max, size_t *out)
{
    char v[16];
    *out = dflt;
    int got = arg(ctx, "limit", v, sizeof v);
    if (got <= 0)
        return got == 0;
    char *end;
    unsigned long x = strtoul(v, &end, 10);
    if (!v[0] || *end || v[0] == '-' || x == 0 || x > max)
        return false;
    *out = x;
    return true;
}

static bool arg_double(gw_api_arg_fn arg, void *ctx, const char *name, double *out, bool *present)
{
    char v[40];
    int got = arg(ctx, name, v, sizeof v);
    *present = got != 0;
    if (got <= 0)
        return got == 0;
    char *end;
    *out = strtod(v, &end);
    return v[0] && !*end && isfinite(*out);
}

/* Characters of channel names and of a name's beginning. */
static bool name_chars(const char *s)
{
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
              *s == '_' || *s == ':' || *s == '-' || *s == '.'))
            return false;
    return true;
}

static void get_channels(struct gw_server *srv, gw_api_arg_fn arg, void *ctx, struct gw_api_req *r)
{
    char prefix[PROTO_CHANNEL_MAX + 1] = "", after[PROTO_CHANNEL_MAX + 1] = "";
    int has_after = arg(ctx, "after", after, sizeof after);
    int has_prefix = arg(ctx, "prefix", prefix, sizeof prefix);
    size_t limit;
    if (has_after < 0 || has_prefix < 0 || !arg_limit(arg, ctx, 100, FO_LIST_MAX, &limit) ||
        !name_chars(prefix) || !name_chars(after)) {
        gw_api_error(r, RT_E_BAD_REQUEST,
                     "limit is 1..1000; prefix and after are parts of channel names", 0);
        return;
    }
    static struct fo_channel_view views[FO_LIST_MAX];
    struct fo_list_req req = {
        .prefix = has_prefix > 0 ? prefix : NULL,
        .prefix_len = strlen(prefix),
        .after = has_after > 0 ? after : NULL,
        .after_len = strlen(after),
        .limit = limit,
    };
    size_t n = 0;
    bool more = false;
    if (fo_channel_list(srv->fo, &req, views, &n, &more) != RT_OK) {
        gw_api_error(r, RT_E_BAD_REQUEST, "bad listing request", 0);
        return;
    }
    struct fo_stats st;
    fo_get_stats(srv->fo, &st);
    struct proto_writer w;
    begin_ok(r, &w);
    proto_w_kuint(&w, "total", st.channels);
    proto_w_key(&w, "channels");
    proto_w_array(&w);
    for (size_t i = 0; i < n; i++) {
        proto_w_map(&w);
        proto_w_kstr(&w, "channel", views[i].name, views[i].name_len);
        proto_w_kbool(&w, "durable", views[i].durable);
        proto_w_kuint(&w, "subscribers", views[i].subscribers);
        proto_w_end(&w);
    }
    proto_w_end(&w);
    proto_w_kbool(&w, "more", more);
    if (more)
        proto_w_kstr(&w, "next", views[n - 1].name, views[n - 1].name_len);
    end_ok(r, &w);
}

static void get_channel(struct gw_server *srv, const char *name, struct gw_api_req *r)
{
    size_t len = strlen(name);
    if (!proto_channel_valid(name, len)) {
        gw_api_error(r, RT_E_BAD_REQUEST, "not a valid channel name", 0);
        return;
    }
    struct fo_channel_view v;
    bool active = fo_channel_get(srv->fo, name, len, &v) == RT_OK;
    struct proto_writer w;
    begin_ok(r, &w);
    proto_w_kstr(&w, "channel", name, len);
    proto_w_kbool(&w, "durable", v.durable);
    proto_w_kbool(&w, "active", active);
    proto_w_kuint(&w, "subscribers", v.subscribers);
    if (active && v.durable) {
        proto_w_kuint(&w, "seq", v.latest);
        proto_w_kuint(&w, "oldest", v.oldest);
        proto_w_kcstr(&w, "epoch", v.epoch);
    }
    end_ok(r, &w);
}

struct member_page {
    struct proto_writer *w;
    size_t limit, seen;
};

static void page_member(void *arg, const struct geo_member_view *m)
{
    struct member_page *pg = arg;
    if (pg->seen++ < pg->limit)
        gw_presence_write_member(pg->w, m, false, 0, true);
}

static bool space_ok(const char *s)
{
    size_t n = strlen(s);
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
              (s[i] >= '0' && s[i] <= '9') || s[i] == '_' || s[i] == '-'))
            return false;
    return n >= 1 && n <= PROTO_SPACE_MAX;
}

static void get_presence(struct gw_server *srv, gw_api_arg_fn arg, void *ctx, struct gw_api_req *r)
{
    char space[PROTO_SPACE_MAX + 1], cell[GEO_CELL_BUF] = "";
    double lat = 0, lon = 0, radius = 0;
    bool has_lat, has_lon, has_radius;
    bool ok = arg(ctx, "space", space, sizeof space) > 0 && space_ok(space) &&
              arg_double(arg, ctx, "lat", &lat, &has_lat) &&
              arg_double(arg, ctx, "lon", &lon, &has_lon) &&
              arg_double(arg, ctx, "radius_m", &radius, &has_radius);
    bool near = ok && (has_lat || has_lon || has_radius);
    size_t limit = 0;
    if (near)
        ok = has_lat && has_lon && has_radius && lat >= -90 && lat <= 90 && lon >= -180 &&
             lon <= 180 && radius >= 0 && radius <= PROTO_RADIUS_MAX_M &&
             arg_limit(arg, ctx, PROTO_NEAR_LIMIT_DEFAULT, PROTO_NEAR_LIMIT_MAX, &limit);
    else if (ok)
        ok = arg_limit(arg, ctx, 100, PROTO_NEAR_LIMIT_MAX, &limit) &&
             arg(ctx, "cell", cell, sizeof cell) >= 0;
    if (!ok) {
        gw_api_error(r, RT_E_BAD_REQUEST,
                     "space (1-64 of [A-Za-z0-9_-]) is required; lat, lon and radius_m "
                     "(<= 50000) go together; limit is 1..1000; cell is a geohash prefix",
                     0);
        return;
    }
    struct proto_writer w;
    begin_ok(r, &w);
    proto_w_kcstr(&w, "space", space);
    proto_w_key(&w, "members");
    proto_w_array(&w);
    rt_status st;
    size_t n = 0;
    bool truncated = false;
    if (near) {
        st = geo_near(srv->geo, space, strlen(space), lat, lon, radius, srv->geo_hits, limit, &n);
        for (size_t i = 0; st == RT_OK && i < n; i++)
            gw_presence_write_member(&w, &srv->geo_hits[i].member, true, srv->geo_hits[i].dist_m,
                                     true);
    } else {
        struct member_page pg = {&w, limit, 0};
        st = geo_each_prefix(srv->geo, space, strlen(space), cell, strlen(cell), page_member, &pg,
                             NULL);
        truncated = pg.seen > limit;
    }
    proto_w_end(&w);
    if (!near)
        proto_w_kbool(&w, "truncated", truncated);
    if (st != RT_OK) {
        gw_api_error(r, RT_E_BAD_REQUEST, "bad space, position or cell", 0);
        return;
    }
    end_ok(r, &w);
}

static void get_node(struct gw_server *srv, struct gw_api_req *r)
{
    struct fo_stats fs;
    struct geo_stats gs;
    fo_get_stats(srv->fo, &fs);
    geo_get_stats(srv->geo, &gs);
    uint64_t requests, in_progress, failed_keys;
    gw_api_counts(srv, &requests, &in_progress, &failed_keys);
    struct proto_writer w;
    begin_ok(r, &w);
    proto_w_kcstr(&w, "node", srv->cfg->node_id);
    proto_w_kcstr(&w, "engine", srv->cfg->nats_url[0] ? "nats" : "memory");
    proto_w_kbool(&w, "ready", fo_ready(srv->fo) && !srv->draining);
    proto_w_kbool(&w, "draining", srv->draining);
    proto_w_kuint(&w, "connections", srv->m.connections);
    proto_w_kuint(&w, "connections_total", gw_metrics_connections_total(&srv->m));
    proto_w_kuint(&w, "channels", fs.channels);
    proto_w_kuint(&w, "subscriptions", fs.subscriptions);
    proto_w_kuint(&w, "published", fs.published);
    proto_w_kuint(&w, "dups", fs.dups);
    proto_w_kuint(&w, "deliveries", fs.deliveries);
    proto_w_kuint(&w, "drops", fs.drops);
    proto_w_kuint(&w, "history_messages", fs.history_messages);
    proto_w_kuint(&w, "outbox_bytes", srv->m.outbox_bytes);
    proto_w_key(&w, "presence");
    proto_w_map(&w);
    proto_w_kuint(&w, "members", gs.members);
    proto_w_kuint(&w, "spaces", gs.spaces);
    proto_w_kuint(&w, "watches", gs.watches);
    if (srv->fleet) {
        struct geo_fleet_stats ff;
        geo_fleet_get_stats(srv->fleet, &ff);
        proto_w_kuint(&w, "nodes", ff.nodes);
        proto_w_kuint(&w, "followed_cells", ff.follows);
        proto_w_kuint(&w, "remote_members", ff.remote_members);
    }
    proto_w_end(&w);
    proto_w_key(&w, "api");
    proto_w_map(&w);
    proto_w_kuint(&w, "requests", requests);
    proto_w_kuint(&w, "in_progress", in_progress);
    proto_w_kuint(&w, "failed_keys", failed_keys);
    proto_w_end(&w);
    end_ok(r, &w);
}

void gw_api_get(struct gw_server *srv, enum gw_api_route route, const char *rest, gw_api_arg_fn arg,
                void *ctx, struct gw_api_req *r)
{
    switch (route) {
    case GW_API_CHANNELS:
        get_channels(srv, arg, ctx, r);
        break;
    case GW_API_CHANNEL:
        get_channel(srv, rest, r);
        break;
    case GW_API_PRESENCE:
        get_presence(srv, arg, ctx, r);
        break;
    case GW_API_NODE:
        get_node(srv, r);
        break;
    default:
        gw_api_error(r, RT_E_NOT_FOUND, "no such API path", 0);
        break;
    }
}
