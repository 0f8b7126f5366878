/*
 * presence.c: geo.set / geo.clear / geo.near / geo.watch / geo.unwatch
 * (PROTOCOL.md section 4) on this node's presence index, and the watch
 * events it reports. With --nats the index also holds the members of the
 * other nodes in the cells this node follows (geo/fleet.h): a near or watch
 * on cells not followed yet waits for their snapshot (at most
 * --geo-snapshot-wait-ms) and is answered then. Loop thread.
 */
#include "fleet.h"
#include "gw.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

/* See gw.h. */
void gw_presence_write_member(struct proto_writer *w, const struct geo_member_view *m,
                              bool with_dist, double dist_m, bool with_local)
{
    proto_w_map(w);
    proto_w_kstr(w, "client", m->client, m->client_len);
    proto_w_kstr(w, "user", m->user, m->user_len);
    proto_w_kdouble(w, "lat", m->lat);
    proto_w_kdouble(w, "lon", m->lon);
    if (with_dist)
        proto_w_kdouble(w, "dist_m", (double)(int64_t)(dist_m * 10.0 + 0.5) / 10.0);
    if (m->meta_len) {
        struct proto_payload p = {(enum proto_payload_enc)m->meta_enc, m->meta, m->meta_len, false};
        proto_w_payload(w, "meta", &p);
    }
    if (with_local)
        proto_w_kbool(w, "local", !(m->conn & GEO_FLEET_CONN_BIT));
    proto_w_end(w);
}

static int status_code(rt_status st)
{
    switch (st) {
    case RT_INVAL:
        return RT_E_BAD_REQUEST;
    case RT_TOO_BIG:
        return RT_E_TOO_LARGE;
    case RT_NOT_FOUND:
        return RT_E_NOT_FOUND;
    case RT_LIMIT:
        return RT_E_FORBIDDEN;
    default:
        return RT_E_UNAVAILABLE;
    }
}

static void refuse(struct gw_session *s, const struct proto_msg *m, rt_status st,
                   const char *message)
{
    int code = status_code(st);
    gw_session_reply_error(s, m, code, message, code == RT_E_UNAVAILABLE ? 1000 : 0);
}

static void on_set(struct gw_session *s, const struct proto_msg *m)
{
    struct gw_server *srv = s->srv;
    uint32_t retry = 0;
    if (!rt_bucket_take(&s->geo_bucket, &srv->cfg->geo_bucket, rt_mono_ms(), &retry)) {
        gw_session_reply_error(s, m, RT_E_RATE_LIMITED, "geo.set rate exceeded", retry);
        return;
    }
    struct geo_member_view old;
    bool present = geo_get(srv->geo, m->space.ptr, m->space.len, s->client_id, strlen(s->client_id),
                           &old) == RT_OK;
    if (!present && s->geo_spaces >= srv->cfg->geo_max_spaces) {
        gw_session_reply_error(s, m, RT_E_FORBIDDEN, "present in too many spaces", 0);
        return;
    }
    char cell[GEO_CELL_BUF];
    const char *user = gw_session_user(s);
    struct geo_member_in in = {
        .space = m->space.ptr,
        .space_len = m->space.len,
        .client = s->client_id,
        .client_len = strlen(s->client_id),
        .user = user,
        .user_len = strlen(user),
        .conn = s->conn_id,
        .lat = m->lat,
        .lon = m->lon,
        .meta = m->meta.ptr,
        .meta_len = m->meta.len,
        .meta_enc = (int)m->meta.enc,
    };
    rt_status st = srv->fleet ? geo_fleet_set(srv->fleet, &in, cell) : geo_set(srv->geo, &in, cell);
    if (st != RT_OK) {
        refuse(s, m, st, "position not stored");
        return;
    }
    if (!present)
        s->geo_spaces++;
    struct proto_writer w;
    gw_session_begin_reply(s, &w, m->id);
    proto_w_kcstr(&w, "cell", cell);
    gw_session_finish_reply(s, &w);
}

static void on_clear(struct gw_session *s, const struct proto_msg *m)
{
    struct gw_server *srv = s->srv;
    rt_status st = srv->fleet ? geo_fleet_clear(srv->fleet, m->space.ptr, m->space.len,
                                                s->client_id, strlen(s->client_id))
                              : geo_clear(srv->geo, m->space.ptr, m->space.len, s->client_id,
                                          strlen(s->client_id));
    if (st == RT_OK)
        s->geo_spaces--;
    struct proto_writer w;
    gw_session_begin_reply(s, &w, m->id);
    gw_session_finish_reply(s, &w);
}

/* A circle query: what a near or watch needs once the fleet is ready. */
struct circle {
    const char *space;
    size_t space_len;
    double lat, lon, radius_m;
    size_t limit;
};

/* Appends "members":[...] for the circle, nearest first. */
static rt_status write_near(struct gw_session *s, struct proto_writer *w, const struct circle *c)
{
    struct gw_server *srv = s->srv;
    size_t n = 0;
    rt_status st = geo_near(srv->geo, c->space, c->space_len, c->lat, c->lon, c->radius_m,
                            srv->geo_hits, c->limit, &n);
    if (st != RT_OK)
        return st;
    proto_w_key(w, "members");
    proto_w_array(w);
    for (size_t i = 0; i < n; i++)
        gw_presence_write_member(w, &srv->geo_hits[i].member, true, srv->geo_hits[i].dist_m, false);
    proto_w_end(w);
    return RT_OK;
}

static size_t limit_of(const struct proto_msg *m)
{
    size_t limit = m->has_limit ? m->limit : PROTO_NEAR_LIMIT_DEFAULT;
    return limit > PROTO_NEAR_LIMIT_MAX ? PROTO_NEAR_LIMIT_MAX : limit;
}

static struct circle circle_of(const struct proto_msg *m, bool watch)
{
    return (struct circle){
        m->space.ptr, m->space.len, m->lat,
        m->lon,       m->radius_m,  watch && !m->has_limit ? PROTO_NEAR_LIMIT_MAX : limit_of(m)};
}

/* ---------------------------------------------------------------------- */
/* Requests that wait for the fleet, and watch holds                        */

/*
 * A near or watch whose cells the fleet is still fetching (ready false), or
 * an established watch holding its cells (watch_id set). In the server's
 * table by fleet ticket and in its session's list.
 */
struct gw_geo_req {
    struct rt_hnode h;
    struct gw_geo_req *next; /* the session's list */
    uint64_t ticket;
    uint64_t conn_id;
    int64_t id; /* the request's id, for the reply */
    bool watch;
    bool ready;
    uint64_t watch_id;
    struct circle c;
    char space[GEO_SPACE_MAX + 1];
};

static struct gw_geo_req *req_find(const struct gw_server *srv, uint64_t ticket)
{
    uint64_t h = rt_hash_u64(ticket);
    for (struct rt_hnode *n = rt_htab_chain(&srv->geo_reqs, h); n; n = n->next) {
        struct gw_geo_req *r = RT_CONTAINER(n, struct gw_geo_req, h);
        if (r->ticket == ticket)
            return r;
    }
    return NULL;
}

static struct gw_geo_req *req_new(struct gw_session *s, uint64_t ticket, const struct proto_msg *m,
                                  bool watch)
{
    struct gw_server *srv = s->srv;
    struct gw_geo_req *r = calloc(1, sizeof *r);
    if (!r || rt_htab_reserve(&srv->geo_reqs) != RT_OK) {
        free(r);
        return NULL;
    }
    r->ticket = ticket;
    r->conn_id = s->conn_id;
    r->id = m->id;
    r->watch = watch;
    r->c = circle_of(m, watch);
    memcpy(r->space, m->space.ptr, m->space.len);
    r->c.space = r->space;
    r->h.hash = rt_hash_u64(ticket);
    rt_htab_insert(&srv->geo_reqs, &r->h);
    r->next = s->geo_reqs;
    s->geo_reqs = r;
    return r;
}

/* Unlinks and frees r; the fleet forgets its ticket. */
static void req_free(struct gw_server *srv, struct gw_session *s, struct gw_geo_req *r)
{
    if (s) {
        for (struct gw_geo_req **pp = &s->geo_reqs; *pp; pp = &(*pp)->next)
            if (*pp == r) {
                *pp = r->next;
                break;
            }
    }
    rt_htab_remove(&srv->geo_reqs, &r->h);
    geo_fleet_release(srv->fleet, r->ticket);
    free(r);
}

static void reply_near(struct gw_session *s, int64_t id, const struct circle *c, bool partial)
{
    struct proto_writer w;
    gw_session_begin_reply(s, &w, id);
    if (partial)
        proto_w_kbool(&w, "partial", true);
    rt_status st = write_near(s, &w, c);
    if (st != RT_OK) {
        proto_buf_reset(&s->srv->reply);
        int code = status_code(st);
        struct proto_msg m = {.id = id, .has_id = true};
        gw_session_reply_error(s, &m, code, "near query failed",
                               code == RT_E_UNAVAILABLE ? 1000 : 0);
        return;
    }
    gw_session_finish_reply(s, &w);
}

/* Adds the index watch and answers with its id and the members inside. */
static rt_status watch_start(struct gw_session *s, int64_t id, const struct circle *c, bool partial,
                             uint64_t *watch_id)
{
    struct gw_server *srv = s->srv;
    rt_status st = geo_watch_add(srv->geo, c->space, c->space_len, c->lat, c->lon, c->radius_m,
                                 s->conn_id, watch_id);
    if (st != RT_OK)
        return st;
    char name[24];
    snprintf(name, sizeof name, "w%" PRIu64, *watch_id);
    struct proto_writer w;
    gw_session_begin_reply(s, &w, id);
    proto_w_kcstr(&w, "watch", name);
    if (partial)
        proto_w_kbool(&w, "partial", true);
    if (write_near(s, &w, c) != RT_OK) {
        proto_w_key(&w, "members");
        proto_w_array(&w);
        proto_w_end(&w);
    }
    gw_session_finish_reply(s, &w);
    return RT_OK;
}

/* The fleet has the cells of ticket: answer the near, or start the watch. */
static void on_fleet_ready(void *arg, uint64_t ticket, bool partial)
{
    struct gw_server *srv = arg;
    struct gw_geo_req *r = req_find(srv, ticket);
    if (!r || r->ready)
        return;
    struct gw_session *s = gw_conns_get(&srv->conns, r->conn_id);
    if (partial)
        srv->geo_partial++;
    if (!s || s->closing) {
        req_free(srv, s, r);
        return;
    }
    s->geo_waiting--;
    if (!r->watch) {
        reply_near(s, r->id, &r->c, partial);
        req_free(srv, s, r);
        return;
    }
    rt_status st = watch_start(s, r->id, &r->c, partial, &r->watch_id);
    if (st != RT_OK) {
        struct proto_msg m = {.id = r->id, .has_id = true};
        s->geo_watches--;
        req_free(srv, s, r);
        refuse(s, &m, st, "watch not added");
        return;
    }
    r->ready = true;
}

/*
 * Asks the fleet for the circle's cells, charging the ones it starts to
 * follow to this connection. *r is NULL when it can answer now. RT_AGAIN
 * with *share false: too many queries waiting; with *share true: the
 * connection is over its share of followed cells (--geo-max-follows-per-conn).
 */
static rt_status fleet_want(struct gw_session *s, const struct proto_msg *m, bool watch,
                            struct gw_geo_req **r, bool *share)
{
    struct gw_server *srv = s->srv;
    *r = NULL;
    *share = false;
    if (s->geo_waiting >= GW_GEO_WAITING_MAX)
        return RT_AGAIN;
    uint64_t ticket = 0;
    bool ready = false;
    rt_status st = geo_fleet_want(srv->fleet, s->conn_id, m->space.ptr, m->space.len, m->lat,
                                  m->lon, m->radius_m, watch, rt_mono_ms(), &ticket, &ready);
    *share = st == RT_AGAIN;
    if (st != RT_OK)
        return st;
    if (ready && !watch)
        return RT_OK;
    *r = req_new(s, ticket, m, watch);
    if (!*r) {
        geo_fleet_release(srv->fleet, ticket);
        return RT_NOMEM;
    }
    (*r)->ready = ready;
    if (!ready)
        s->geo_waiting++;
    return RT_OK;
}

static void refuse_want(struct gw_session *s, const struct proto_msg *m, rt_status st, bool share)
{
    if (st == RT_AGAIN && share) /* its cells lapse within the linger time if it stops */
        gw_session_reply_error(s, m, RT_E_RATE_LIMITED,
                               "too many new presence areas for this connection",
                               s->srv->cfg->geo_follow_linger_ms);
    else if (st == RT_AGAIN)
        gw_session_reply_error(s, m, RT_E_RATE_LIMITED, "too many presence queries waiting", 100);
    else if (st == RT_LIMIT)
        gw_session_reply_error(s, m, RT_E_UNAVAILABLE, "presence interest limit reached", 1000);
    else
        refuse(s, m, st, "presence query failed");
}

static void on_near(struct gw_session *s, const struct proto_msg *m)
{
    struct circle c = circle_of(m, false);
    if (s->srv->fleet) {
        struct gw_geo_req *r;
        bool share;
        rt_status st = fleet_want(s, m, false, &r, &share);
        if (st != RT_OK) {
            refuse_want(s, m, st, share);
            return;
        }
        if (r)
            return; /* answered when the fleet is ready */
    }
    reply_near(s, m->id, &c, false);
}

static void on_watch(struct gw_session *s, const struct proto_msg *m)
{
    struct gw_server *srv = s->srv;
    if (s->geo_watches >= srv->cfg->geo_max_watches) {
        gw_session_reply_error(s, m, RT_E_FORBIDDEN, "too many watches", 0);
        return;
    }
    struct circle c = circle_of(m, true);
    struct gw_geo_req *r = NULL;
    if (srv->fleet) {
        bool share;
        rt_status st = fleet_want(s, m, true, &r, &share);
        if (st != RT_OK) {
            refuse_want(s, m, st, share);
            return;
        }
        s->geo_watches++;
        if (!r->ready)
            return; /* started when the fleet is ready */
    } else {
        s->geo_watches++;
    }
    uint64_t id = 0;
    rt_status st = watch_start(s, m->id, &c, false, &id);
    if (st != RT_OK) {
        s->geo_watches--;
        if (r)
            req_free(srv, s, r);
        refuse(s, m, st, "watch not added");
        return;
    }
    if (r)
        r->watch_id = id;
}

static void on_unwatch(struct gw_session *s, const struct proto_msg *m)
{
    const char *p = m->watch.ptr;
    char *end = NULL;
    uint64_t id = 0;
    if (p && p[0] == 'w' && p[1] >= '0' && p[1] <= '9')
        id = strtoull(p + 1, &end, 10);
    if (!id || !end || *end || geo_watch_remove(s->srv->geo, id, s->conn_id) != RT_OK) {
        gw_session_reply_error(s, m, RT_E_NOT_FOUND, "no such watch on this connection", 0);
        return;
    }
    s->geo_watches--;
    for (struct gw_geo_req *r = s->geo_reqs; r; r = r->next)
        if (r->watch && r->ready && r->watch_id == id) {
            req_free(s->srv, s, r); /* its cells may go after the linger time */
            break;
        }
    struct proto_writer w;
    gw_session_begin_reply(s, &w, m->id);
    gw_session_finish_reply(s, &w);
}

void gw_presence_handle(struct gw_session *s, const struct proto_msg *m)
{
    /* Clearing one's own presence or ending one's own watch is always allowed. */
    bool names_space =
        m->type == PROTO_T_GEO_SET || m->type == PROTO_T_GEO_NEAR || m->type == PROTO_T_GEO_WATCH;
    if (names_space && !gw_authz_may_geo(s, m))
        return;
    switch (m->type) {
    case PROTO_T_GEO_SET:
        on_set(s, m);
        break;
    case PROTO_T_GEO_CLEAR:
        on_clear(s, m);
        break;
    case PROTO_T_GEO_NEAR:
        on_near(s, m);
        break;
    case PROTO_T_GEO_WATCH:
        on_watch(s, m);
        break;
    case PROTO_T_GEO_UNWATCH:
        on_unwatch(s, m);
        break;
    default:
        break;
    }
}

void gw_presence_closed(struct gw_session *s)
{
    struct gw_server *srv = s->srv;
    while (s->geo_reqs)
        req_free(srv, s, s->geo_reqs);
    if (srv->fleet)
        geo_fleet_forget(srv->fleet, s->conn_id); /* its lingering cells count for nobody now */
    if (s->geo_spaces || s->geo_watches) {
        if (srv->fleet)
            geo_fleet_remove_conn(srv->fleet, s->conn_id);
        else
            geo_remove_conn(srv->geo, s->conn_id, NULL, NULL, NULL, NULL);
    }
    s->geo_spaces = 0;
    s->geo_watches = 0;
    s->geo_waiting = 0;
}

/* The index reports a watch event: encode it for the watch's owner. */
static void on_geo_event(void *arg, uint64_t watch_id, uint64_t watch_conn, enum geo_event ev,
                         const struct geo_member_view *member)
{
    struct gw_server *srv = arg;
    struct gw_session *s = gw_conns_get(&srv->conns, watch_conn);
    if (!s || s->closing)
        return;
    char name[24];
    snprintf(name, sizeof name, "w%" PRIu64, watch_id);
    struct proto_writer w;
    proto_writer_init(&w, (enum proto_codec)s->codec, &srv->reply);
    proto_w_map(&w);
    proto_w_kcstr(&w, "type", "geo");
    proto_w_kcstr(&w, "watch", name);
    proto_w_kcstr(&w, "event", geo_event_name(ev));
    proto_w_key(&w, "member");
    gw_presence_write_member(&w, member, false, 0, false);
    srv->geo_events++;
    gw_session_finish_reply(s, &w);
}

static rt_status fleet_create(struct gw_server *srv)
{
    const struct gw_config *cfg = srv->cfg;
    uint8_t rnd[8];
    uv_random(NULL, NULL, rnd, sizeof rnd, 0, NULL);
    size_t n = 0;
    for (size_t i = 0; i < sizeof rnd; i++)
        n += (size_t)snprintf(srv->fleet_node + n, sizeof srv->fleet_node - n, "%02x", rnd[i]);
    struct geo_fleet_config fc = {
        .geo = srv->geo,
        .node = srv->fleet_node,
        .share_precision = (int)cfg->geo_share_precision,
        .ttl_ms = cfg->presence_ttl_ms,
        .linger_ms = cfg->geo_follow_linger_ms,
        .snapshot_wait_ms = cfg->geo_snapshot_wait_ms,
        .max_follows = cfg->geo_max_follows,
        .max_owner_follows = cfg->geo_max_follows_per_conn,
        .bus = {gw_bus_publish, gw_bus_subscribe, gw_bus_unsubscribe, srv->fo},
        .on_ready = on_fleet_ready,
        .arg = srv,
    };
    if (!gw_bus_open(srv))
        return RT_OK; /* the memory engine: one node, no fleet */
    rt_status st = geo_fleet_create(&fc, rt_mono_ms(), &srv->fleet);
    uv_timer_t *t = st == RT_OK ? malloc(sizeof *t) : NULL;
    if (t && uv_timer_init(srv->loop, t) == 0) {
        t->data = srv;
        srv->geo_timer = t;
    } else {
        free(t); /* without the timer every iteration publishes */
    }
    if (st == RT_OK)
        rt_log(RT_LOG_INFO, "presence_fleet", "node=%s share_precision=%u ttl_ms=%u",
               srv->fleet_node, cfg->geo_share_precision, cfg->presence_ttl_ms);
    return st;
}

void gw_presence_tick(struct gw_server *srv, uint64_t now_ms)
{
    if (srv->fleet)
        geo_fleet_tick(srv->fleet, now_ms, fo_bus_generation(srv->fo));
}

static void publish_now(struct gw_server *srv)
{
    geo_fleet_flush(srv->fleet);
    srv->geo_flushed_ms = rt_mono_ms();
}

static void on_geo_timer(uv_timer_t *t)
{
    publish_now(t->data);
}

/*
 * Publishes this iteration's presence changes, batched per cell; with
 * --geo-publish-ms, no more often than that: a busy node then sends one bus
 * message per cell per interval instead of one per set (the held changes go
 * out from a timer).
 */
void gw_presence_flush(struct gw_server *srv)
{
    if (!srv->fleet || !geo_fleet_pending(srv->fleet))
        return;
    uint64_t every = srv->cfg->geo_publish_ms, since = rt_mono_ms() - srv->geo_flushed_ms;
    if (!every || since >= every || !srv->geo_timer) {
        publish_now(srv);
        return;
    }
    if (!uv_is_active(srv->geo_timer))
        uv_timer_start(srv->geo_timer, on_geo_timer, every - since, 0);
}

rt_status gw_presence_create(struct gw_server *srv)
{
    struct geo_config gc = {
        .precision = (int)srv->cfg->geo_precision,
        .max_members = srv->cfg->geo_max_members,
        .max_watches = srv->cfg->geo_max_members,
        .on_event = on_geo_event,
        .arg = srv,
    };
    rt_htab_init(&srv->geo_reqs);
    srv->geo_hits = malloc(sizeof *srv->geo_hits * PROTO_NEAR_LIMIT_MAX);
    if (!srv->geo_hits)
        return RT_NOMEM;
    rt_status st = geo_create(&gc, &srv->geo);
    return st == RT_OK ? fleet_create(srv) : st;
}

static void free_req_cb(struct rt_hnode *n, void *arg)
{
    (void)arg;
    free(RT_CONTAINER(n, struct gw_geo_req, h));
}

static void geo_timer_closed(uv_handle_t *h)
{
    free(h);
}

void gw_presence_destroy(struct gw_server *srv)
{
    if (srv->geo_timer) {
        uv_timer_stop(srv->geo_timer);
        uv_close(srv->geo_timer, geo_timer_closed);
        srv->geo_timer = NULL;
    }
    if (srv->fleet)
        geo_fleet_flush(srv->fleet); /* the leaves of the connections closed last */
    geo_fleet_destroy(srv->fleet);
    srv->fleet = NULL;
    rt_htab_each(&srv->geo_reqs, free_req_cb, NULL);
    rt_htab_free(&srv->geo_reqs);
    geo_destroy(srv->geo);
    srv->geo = NULL;
    free(srv->geo_hits);
    srv->geo_hits = NULL;
}
