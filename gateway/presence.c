/*
 * presence.c: geo.set / geo.clear / geo.near / geo.watch / geo.unwatch
 * (PROTOCOL.md section 4) on this node's presence index, and the watch
 * events it reports. Loop thread.
 */
#include "gw.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

/* Writes one member ({"client","user","lat","lon"[,"dist_m"][,"meta"]}). */
static void write_member(struct proto_writer *w, const struct geo_member_view *m, bool with_dist,
                         double dist_m)
{
    proto_w_map(w);
    proto_w_kstr(w, "client", m->client, m->client_len);
    proto_w_kstr(w, "user", m->user, m->user_len);
    proto_w_kdouble(w, "lat", m->lat);
    proto_w_kdouble(w, "lon", m->lon);
    if (with_dist)
        proto_w_kdouble(w, "dist_m", (double)(int64_t)(dist_m * 10.0 + 0.5) / 10.0);
    if (m->meta_len) {
        struct proto_payload p = {(enum proto_payload_enc)m->meta_enc, m->meta, m->meta_len};
        proto_w_payload(w, "meta", &p);
    }
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

static void user_of(const struct gw_session *s, char *buf, size_t len)
{
    snprintf(buf, len, "anon-%s", s->client_id);
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
    char user[40], cell[GEO_CELL_BUF];
    user_of(s, user, sizeof user);
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
    rt_status st = geo_set(srv->geo, &in, cell);
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
    if (geo_clear(s->srv->geo, m->space.ptr, m->space.len, s->client_id, strlen(s->client_id)) ==
        RT_OK)
        s->geo_spaces--;
    struct proto_writer w;
    gw_session_begin_reply(s, &w, m->id);
    gw_session_finish_reply(s, &w);
}

/* Appends "members":[...] for the circle, nearest first. */
static rt_status write_near(struct gw_session *s, struct proto_writer *w, const struct proto_msg *m,
                            size_t limit)
{
    struct gw_server *srv = s->srv;
    size_t n = 0;
    rt_status st = geo_near(srv->geo, m->space.ptr, m->space.len, m->lat, m->lon, m->radius_m,
                            srv->geo_hits, limit, &n);
    if (st != RT_OK)
        return st;
    proto_w_key(w, "members");
    proto_w_array(w);
    for (size_t i = 0; i < n; i++)
        write_member(w, &srv->geo_hits[i].member, true, srv->geo_hits[i].dist_m);
    proto_w_end(w);
    return RT_OK;
}

static size_t limit_of(const struct proto_msg *m)
{
    size_t limit = m->has_limit ? m->limit : PROTO_NEAR_LIMIT_DEFAULT;
    return limit > PROTO_NEAR_LIMIT_MAX ? PROTO_NEAR_LIMIT_MAX : limit;
}

static void on_near(struct gw_session *s, const struct proto_msg *m)
{
    struct proto_writer w;
    gw_session_begin_reply(s, &w, m->id);
    rt_status st = write_near(s, &w, m, limit_of(m));
    if (st != RT_OK) {
        proto_buf_reset(&s->srv->reply);
        refuse(s, m, st, "near query failed");
        return;
    }
    gw_session_finish_reply(s, &w);
}

static void on_watch(struct gw_session *s, const struct proto_msg *m)
{
    struct gw_server *srv = s->srv;
    if (s->geo_watches >= srv->cfg->geo_max_watches) {
        gw_session_reply_error(s, m, RT_E_FORBIDDEN, "too many watches", 0);
        return;
    }
    uint64_t id = 0;
    rt_status st = geo_watch_add(srv->geo, m->space.ptr, m->space.len, m->lat, m->lon, m->radius_m,
                                 s->conn_id, &id);
    if (st != RT_OK) {
        refuse(s, m, st, "watch not added");
        return;
    }
    s->geo_watches++;
    char name[24];
    snprintf(name, sizeof name, "w%" PRIu64, id);
    struct proto_writer w;
    gw_session_begin_reply(s, &w, m->id);
    proto_w_kcstr(&w, "watch", name);
    if (write_near(s, &w, m, m->has_limit ? limit_of(m) : PROTO_NEAR_LIMIT_MAX) != RT_OK) {
        proto_w_key(&w, "members");
        proto_w_array(&w);
        proto_w_end(&w);
    }
    gw_session_finish_reply(s, &w);
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
    struct proto_writer w;
    gw_session_begin_reply(s, &w, m->id);
    gw_session_finish_reply(s, &w);
}

void gw_presence_handle(struct gw_session *s, const struct proto_msg *m)
{
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
    if (s->geo_spaces || s->geo_watches)
        geo_remove_conn(s->srv->geo, s->conn_id, NULL, NULL, NULL, NULL);
    s->geo_spaces = 0;
    s->geo_watches = 0;
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
    write_member(&w, member, false, 0);
    srv->geo_events++;
    gw_session_finish_reply(s, &w);
}

rt_status gw_presence_create(struct gw_server *srv)
{
    struct geo_config gc = {
        .precision = srv->cfg->geo_precision,
        .max_members = srv->cfg->geo_max_members,
        .max_watches = srv->cfg->geo_max_members,
        .on_event = on_geo_event,
        .arg = srv,
    };
    srv->geo_hits = malloc(sizeof *srv->geo_hits * PROTO_NEAR_LIMIT_MAX);
    if (!srv->geo_hits)
        return RT_NOMEM;
    return geo_create(&gc, &srv->geo);
}

void gw_presence_destroy(struct gw_server *srv)
{
    geo_destroy(srv->geo);
    srv->geo = NULL;
    free(srv->geo_hits);
    srv->geo_hits = NULL;
}
