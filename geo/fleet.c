/*
 * fleet.c: presence across nodes (fleet.h), the hub: the fleet made and
 * freed, each bus message handed to the file of its concern, the clock's
 * work (heartbeats, resyncs, expiry, lingering) and the stats. The other
 * concerns are in the fleet_*.c files (fleet_int.h lists them). Loop thread;
 * no I/O of its own.
 */
#include "fleet_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------ */
/* Shared helpers                                                             */

uint64_t fleet__key_hash(const char *a, size_t alen, const char *b, size_t blen)
{
    char buf[GEO_SPACE_MAX + GEO_CLIENT_MAX + 2];
    memcpy(buf, a, alen);
    buf[alen] = '\0';
    memcpy(buf + alen + 1, b, blen);
    return rt_hash_bytes(buf, alen + 1 + blen);
}

void fleet__publish(struct geo_fleet *f, const char *subject, const char *reply,
                    const struct proto_buf *b)
{
    f->st.messages_out++;
    if (f->bus.publish(f->bus.ctx, subject, reply, b->data, b->len) != RT_OK) {
        f->st.publish_failures++;
        f->lost_out++; /* the next heartbeat says so: the others resync from this node */
    }
}

bool fleet__space_ok(const struct fleet_wire_msg *m)
{
    return m->space && geo__space_name_ok(m->space, m->space_len);
}

/* ------------------------------------------------------------------------ */
/* Receiving                                                                  */

void geo_fleet_receive(struct geo_fleet *f, const char *subject, const char *reply,
                       const uint8_t *data, size_t len, uint64_t now_ms)
{
    if (now_ms > f->now)
        f->now = now_ms;
    struct fleet_wire_msg m;
    if (!subject || !fleet_wire_decode(data, len, &m)) {
        f->st.bad_messages++;
        return;
    }
    if (m.node_len == f->node_len && memcmp(m.node, f->node, f->node_len) == 0)
        return; /* our own, echoed */
    char cell[GEO_CELL_BUF];
    size_t clen;
    switch (fleet_wire_kind_of(subject, cell, &clen)) {
    case FLEET_WIRE_HEARTBEAT:
        fleet__on_heartbeat(f, &m);
        break;
    case FLEET_WIRE_DELTA:
        fleet__on_delta(f, &m, cell, clen);
        break;
    case FLEET_WIRE_SNAPSHOT_ANSWER:
        fleet__on_snapshot_answer(f, &m);
        break;
    case FLEET_WIRE_SNAPSHOT_ASK:
        fleet__on_snapshot_ask(f, &m, reply);
        break;
    case FLEET_WIRE_OTHER:
        f->st.bad_messages++;
        break;
    }
    fleet__report_ready(f);
}

/* ------------------------------------------------------------------------ */
/* Time                                                                       */

void geo_fleet_tick(struct geo_fleet *f, uint64_t now_ms, uint64_t bus_gen)
{
    if (now_ms > f->now)
        f->now = now_ms;
    if (!f->bus_gen_known) {
        f->bus_gen_known = true;
        f->bus_gen = bus_gen;
    } else if (bus_gen != f->bus_gen) {
        f->bus_gen = bus_gen;
        f->resync_wanted = true;
        fleet__send_heartbeat(f, true); /* say we are back; others resync from us */
    }
    if ((f->resync_wanted && f->now - f->last_resync >= FLEET_RESYNC_GAP_MS) ||
        f->now - f->last_resync >= f->resync_ms)
        fleet__resync_all(f);
    if (f->now - f->last_hb >= f->hb_ms)
        fleet__send_heartbeat(f, false);
    fleet__expire_nodes(f);
    fleet__tick_follows(f);
    fleet__report_ready(f);
}

/* ------------------------------------------------------------------------ */
/* Create / destroy                                                           */

/* The configuration with its defaults; false when it is not usable. */
static bool configure(struct geo_fleet *f, const struct geo_fleet_config *cfg)
{
    size_t nlen = cfg->node ? strlen(cfg->node) : 0;
    int ip = cfg->geo ? geo_precision(cfg->geo) : 0;
    int sp = cfg->share_precision ? cfg->share_precision : (ip < 5 ? ip : 5);
    if (!cfg->geo || !fleet_wire_token_ok(cfg->node, nlen, GEO_FLEET_NODE_MAX) || sp < 1 ||
        sp > ip || !cfg->bus.publish || !cfg->bus.subscribe || !cfg->bus.unsubscribe)
        return false;
    f->geo = cfg->geo;
    f->bus = cfg->bus;
    f->on_ready = cfg->on_ready;
    f->arg = cfg->arg;
    f->share_p = sp;
    f->ttl_ms = cfg->ttl_ms ? cfg->ttl_ms : 30000;
    f->hb_ms = cfg->heartbeat_ms ? cfg->heartbeat_ms : f->ttl_ms / 3;
    f->hb_ms = f->hb_ms ? f->hb_ms : 1;
    f->linger_ms = cfg->linger_ms ? cfg->linger_ms : 30000;
    f->wait_ms = cfg->snapshot_wait_ms ? cfg->snapshot_wait_ms : 1000;
    f->max_follows = cfg->max_follows ? cfg->max_follows : 10000;
    f->max_owner = cfg->max_owner_follows ? cfg->max_owner_follows
                                          : (f->max_follows / 16 > 64 ? f->max_follows / 16 : 64);
    f->resync_ms = cfg->resync_ms ? cfg->resync_ms : 300000;
    memcpy(f->node, cfg->node, nlen);
    f->node_len = nlen;
    snprintf(f->reply_subject, sizeof(f->reply_subject), FLEET_WIRE_SUBJ_REPLY "%s", f->node);
    return true;
}

rt_status geo_fleet_create(const struct geo_fleet_config *cfg, uint64_t now_ms,
                           struct geo_fleet **out)
{
    *out = NULL;
    struct geo_fleet *f = calloc(1, sizeof(*f));
    if (!f)
        return RT_NOMEM;
    if (!configure(f, cfg)) {
        free(f);
        return RT_INVAL;
    }
    rt_htab_init(&f->nodes);
    rt_htab_init(&f->follows);
    rt_htab_init(&f->wants);
    rt_htab_init(&f->owners);
    rt_htab_init(&f->dirty);
    proto_buf_init(&f->out, 0);
    f->now = now_ms;
    f->last_resync = now_ms;
    f->warm_until = now_ms + (f->wait_ms < FLEET_WARMUP_MS ? f->wait_ms : FLEET_WARMUP_MS);
    char me[GEO_FLEET_SUBJECT_MAX];
    snprintf(me, sizeof(me), FLEET_WIRE_SUBJ_SNAPSHOT ".%s", f->node);
    f->sub_hb = f->bus.subscribe(f->bus.ctx, FLEET_WIRE_SUBJ_HEARTBEAT);
    f->sub_snap = f->bus.subscribe(f->bus.ctx, FLEET_WIRE_SUBJ_SNAPSHOT);
    f->sub_snap_me = f->bus.subscribe(f->bus.ctx, me);
    f->sub_reply = f->bus.subscribe(f->bus.ctx, f->reply_subject);
    if (!f->sub_hb || !f->sub_snap || !f->sub_snap_me || !f->sub_reply) {
        geo_fleet_destroy(f);
        return RT_UNAVAILABLE;
    }
    fleet__send_heartbeat(f, true);
    *out = f;
    return RT_OK;
}

void geo_fleet_destroy(struct geo_fleet *f)
{
    if (!f)
        return;
    fleet__free_follows(f); /* before the owners they are charged to */
    void *subs[] = {f->sub_hb, f->sub_snap, f->sub_snap_me, f->sub_reply};
    for (size_t i = 0; i < sizeof(subs) / sizeof(subs[0]); i++)
        if (subs[i])
            f->bus.unsubscribe(f->bus.ctx, subs[i]);
    fleet__free_nodes(f);
    fleet__free_wants(f);
    fleet__free_dirty(f);
    rt_htab_free(&f->follows);
    rt_htab_free(&f->owners);
    proto_buf_free(&f->out);
    free(f->readyq);
    free(f);
}

void geo_fleet_get_stats(const struct geo_fleet *f, struct geo_fleet_stats *st)
{
    *st = f->st;
    st->follows = rt_htab_count(&f->follows);
    st->nodes = rt_htab_count(&f->nodes);
    st->follows_pending = 0;
    for (const struct fleet_follow *fo = f->follow_list; fo; fo = fo->next)
        st->follows_pending += fo->ready ? 0 : 1;
    st->wants_pending = rt_htab_count(&f->wants);
    st->owners = rt_htab_count(&f->owners);
}
