/*
 * users.c: users across the fleet in the gateway (docs/users.md): the
 * users/ module made with the configuration and connected to the nats
 * engine's bus (or to nothing on the memory engine: one node), the
 * per-user limits applied at `connect` (--user-max-conns: 429, then close
 * 4029) and on every `pub` (--user-pub-rate: 429), the connections it
 * evicts closed with 4029, and its changes published at most every
 * --user-sync-ms. Channel presence, the other half of the module, is
 * chan_presence.c. Loop thread.
 */
#include "auth.h"
#include "gw.h"
#include "users.h"

#include <stdlib.h>
#include <string.h>
#include <uv.h>

#define CLOSE_TOO_MANY 4029

/* Closes a connection over its user's connection limit, telling it when to come back. */
static void close_too_many(struct gw_session *s, uint32_t after_ms)
{
    gw_session_close(s, CLOSE_TOO_MANY, "too_many_connections", true, true, after_ms);
}

/* The module found one of our connections beyond its user's limit (two nodes took the last
 * places at once): the newest ones go. */
static void on_evict(void *arg, uint64_t conn)
{
    struct gw_server *srv = arg;
    struct gw_session *s = gw_conns_get(&srv->conns, conn);
    if (!s || s->closing)
        return;
    rt_log(RT_LOG_INFO, "user_conn_evicted", "conn=%s user=%s", s->client_id, gw_session_user(s));
    close_too_many(s, 5000);
}

bool gw_users_connect(struct gw_session *s, const struct proto_msg *m)
{
    struct gw_server *srv = s->srv;
    if (!srv->users)
        return true;
    users_conn_close(srv->users, s->conn_id); /* a connect after one that failed later (503) */
    const char *user = gw_session_user(s);
    struct users_conn_in in = {
        .conn = s->conn_id,
        .user = user,
        .user_len = strlen(user),
        .client = s->client_id,
        .client_len = strlen(s->client_id),
        .info = s->claims ? s->claims->info : NULL,
        .info_len = s->claims ? s->claims->info_len : 0,
        .anonymous = !s->claims,
        .wall_ms = rt_wall_ms(),
    };
    uint32_t retry = 0;
    rt_status st = users_conn_open(srv->users, &in, rt_mono_ms(), &retry);
    if (st == RT_OK)
        return true;
    if (st == RT_LIMIT) {
        rt_log(RT_LOG_INFO, "user_conn_refused", "conn=%s user=%s max=%u", s->client_id, user,
               srv->cfg->user_max_conns);
        gw_session_reply_error(s, m, RT_E_RATE_LIMITED, "too many connections for this user",
                               retry);
        close_too_many(s, retry);
        return false;
    }
    gw_session_reply_error(s, m, RT_E_UNAVAILABLE, "out of memory", 1000);
    return false;
}

void gw_users_write_limits(const struct gw_session *s, struct proto_writer *w)
{
    const struct gw_config *cfg = s->srv->cfg;
    const struct rt_bucket_cfg *b = &cfg->user_pub_bucket;
    if (b->rate) {
        proto_w_kuint(w, "user_pub_rate", b->rate);
        proto_w_kuint(w, "user_pub_burst", b->burst ? b->burst : b->rate);
    }
    if (cfg->user_max_conns)
        proto_w_kuint(w, "user_max_conns", cfg->user_max_conns);
}

bool gw_users_may_pub(struct gw_session *s, const struct proto_msg *m)
{
    uint32_t retry = 0;
    if (!s->srv->users || users_pub_take(s->srv->users, s->conn_id, rt_mono_ms(), &retry))
        return true;
    gw_session_reply_error(s, m, RT_E_RATE_LIMITED, "user publish rate exceeded", retry);
    return false;
}

void gw_users_closed(struct gw_session *s)
{
    gw_chan_presence_closed(s);
    if (s->srv->users)
        users_conn_close(s->srv->users, s->conn_id);
}

void gw_users_tick(struct gw_server *srv, uint64_t now_ms)
{
    if (srv->users)
        users_tick(srv->users, now_ms, srv->bus_open ? fo_bus_generation(srv->fo) : 0);
}

static void publish_now(struct gw_server *srv)
{
    users_flush(srv->users);
    srv->users_flushed_ms = rt_mono_ms();
}

static void on_users_timer(uv_timer_t *t)
{
    publish_now(t->data);
}

/*
 * Publishes the users' changes of this iteration (connections, publishes,
 * presence), at most every --user-sync-ms: a busy node sends one report per
 * interval, whatever its publish rate; what the interval holds back goes out
 * from a timer.
 */
void gw_users_flush(struct gw_server *srv)
{
    if (!srv->users || !users_pending(srv->users))
        return;
    uint64_t every = srv->cfg->user_sync_ms, since = rt_mono_ms() - srv->users_flushed_ms;
    if (since >= every || !srv->users_timer) {
        publish_now(srv);
        return;
    }
    if (!uv_is_active(srv->users_timer))
        uv_timer_start(srv->users_timer, on_users_timer, every - since, 0);
}

rt_status gw_users_create(struct gw_server *srv)
{
    const struct gw_config *cfg = srv->cfg;
    rt_htab_init(&srv->presence_reqs);
    struct users_config uc = {
        .node = srv->fleet_node, /* made at this start by presence.c: its own subjects */
        .pub_rate = cfg->user_pub_bucket.rate,
        .pub_burst = cfg->user_pub_bucket.burst,
        .max_conns = cfg->user_max_conns,
        .ttl_ms = cfg->presence_ttl_ms,
        .snapshot_wait_ms = cfg->geo_snapshot_wait_ms,
        .max_members = cfg->presence_max_members,
        .on_event = gw_chan_presence_event,
        .on_ready = gw_chan_presence_ready,
        .on_evict = on_evict,
        .arg = srv,
    };
    if (gw_bus_open(srv))
        uc.bus = (struct users_bus){gw_bus_publish, gw_bus_subscribe, gw_bus_unsubscribe, srv->fo};
    rt_status st = users_create(&uc, rt_mono_ms(), &srv->users);
    if (st != RT_OK)
        return st;
    uv_timer_t *t = malloc(sizeof *t);
    if (t && uv_timer_init(srv->loop, t) == 0) {
        t->data = srv;
        srv->users_timer = t;
    } else {
        free(t); /* without the timer every iteration publishes */
    }
    rt_log(RT_LOG_INFO, "users",
           "node=%s fleet=%s user_pub_rate=%u user_pub_burst=%u "
           "user_max_conns=%u presence_max_members=%u",
           srv->fleet_node, srv->bus_open ? "nats" : "off", cfg->user_pub_bucket.rate,
           cfg->user_pub_bucket.burst ? cfg->user_pub_bucket.burst : cfg->user_pub_bucket.rate,
           cfg->user_max_conns, cfg->presence_max_members);
    return RT_OK;
}

static void users_timer_closed(uv_handle_t *h)
{
    free(h);
}

void gw_users_destroy(struct gw_server *srv)
{
    if (srv->users_timer) {
        uv_timer_stop(srv->users_timer);
        uv_close(srv->users_timer, users_timer_closed);
        srv->users_timer = NULL;
    }
    gw_chan_presence_free(srv);
    if (srv->users)
        users_flush(srv->users); /* the leaves of the connections closed last */
    users_destroy(srv->users);   /* says goodbye: the others drop this node at once */
    srv->users = NULL;
}
