/*
 * hsession.c: the sessions of the HTTP transports (SSE, long-polling). A
 * stream or a first poll opens one: the request's credentials (the JWT of
 * its Authorization header or `token` parameter) make its `connect`, run by
 * the same session layer as a WebSocket's, and for SSE the URL's channels
 * its subs (resumed from the Last-Event-ID's positions). Later requests find
 * it by session token. The memory is the gateway's: a session outlives the
 * requests that serve it. It is freed at a safe point (gw_hsession_reap,
 * from the flush and the sweep), never inside the session layer's own
 * call chain. Loop thread.
 */
#include "http.h"

#include <stdlib.h>
#include <string.h>

/* Copies what the session's outbox holds (the refusal's messages), for the HTTP answer. */
static void take_outbox(struct gw_hsession *h, uint8_t **body, size_t *body_len)
{
    struct gw_outbox *ob = &h->s.outbox;
    size_t total = ob->bytes;
    *body = NULL;
    *body_len = 0;
    if (!total || !(*body = malloc(total)))
        return;
    for (uint32_t i = 0; i < ob->count; i++) {
        const struct gw_outbox_item *it = &ob->items[(ob->head + i) & (ob->cap - 1)];
        memcpy(*body + *body_len, it->data, it->len);
        *body_len += it->len;
    }
}

/* The subs of a stream's URL, each resumed from its position when the Last-Event-ID has one. */
static void subscribe_url(struct gw_hsession *h, const struct gw_hsession_params *p)
{
    h->chans = calloc(p->n_channels, sizeof *h->chans);
    if (!h->chans)
        return;
    h->n_chans = (uint8_t)p->n_channels;
    for (size_t i = 0; i < p->n_channels; i++) {
        struct gw_sse_chan *c = &h->chans[i];
        size_t len = strlen(p->channels[i]);
        memcpy(c->name, p->channels[i], len + 1);
        c->hash = proto_resume_hash(c->name, len);
        const struct proto_resume_pos *pos = NULL;
        for (size_t k = 0; k < p->n_resume; k++) {
            if (p->resume[k].channel_hash != c->hash)
                continue;
            pos = pos ? NULL : &p->resume[k]; /* two with one hash: neither is trusted */
            if (!pos)
                break;
        }
        struct proto_msg m = {
            .type = PROTO_T_SUB,
            .has_id = true,
            .id = h->connect_id + 1 + (int64_t)i,
            .channel = {c->name, len},
        };
        char epoch[PROTO_EPOCH_MAX + 1];
        if (pos) {
            memcpy(epoch, pos->epoch, pos->epoch_len);
            epoch[pos->epoch_len] = '\0';
            m.has_since = true;
            m.since = pos->seq;
            m.epoch = (struct proto_str){epoch, pos->epoch_len};
            c->resume = true;
            c->since = pos->seq;
        }
        gw_session_request(&h->s, &m);
    }
}

struct gw_hsession *gw_hsession_create(struct gw_server *srv, const struct gw_hsession_params *p,
                                       unsigned *status, uint8_t **body, size_t *body_len)
{
    *body = NULL;
    *body_len = 0;
    *status = 503;
    struct gw_hsession *h = calloc(1, sizeof *h);
    if (!h)
        return NULL;
    h->connect_id = p->connect_id;
    h->unheld_since_ms = rt_mono_ms();
    if (gw_session_open(srv, &h->s, p->transport, PROTO_JSON, p->peer) != 0) {
        free(h);
        return NULL;
    }
    struct proto_msg m = {
        .type = PROTO_T_CONNECT,
        .has_id = true,
        .id = p->connect_id,
        .token = {p->token, p->token_len},
    };
    gw_session_request(&h->s, &m);
    if (h->s.state != GW_S_READY) {
        /* Refused (a bad token: 401, closing 4001) or no room: the answer says why. */
        *status = h->s.closing && h->s.close_code == 4001 ? 401 : 503;
        take_outbox(h, body, body_len);
        h->s.closing = true;
        gw_hsession_free(h);
        return NULL;
    }
    if (p->n_channels)
        subscribe_url(h, p);
    return h;
}

struct gw_hsession *gw_hsession_find(struct gw_server *srv, const struct gw_sesstoken *t)
{
    if (memcmp(t->node, srv->node_key, GW_NODE_KEY_BYTES) != 0)
        return NULL;
    struct gw_session *s = gw_conns_get(&srv->conns, t->conn_id);
    if (!s || s->transport == GW_TRANSPORT_WS || s->closing ||
        strcmp(s->client_id, t->client_id) != 0)
        return NULL;
    return gw_hsession_of(s);
}

struct gw_hsession *gw_hsession_find_poll(struct gw_server *srv, const struct gw_sesstoken *t)
{
    if (memcmp(t->node, srv->node_key, GW_NODE_KEY_BYTES) != 0)
        return NULL;
    struct gw_session *s = gw_conns_get(&srv->conns, t->conn_id);
    if (!s || s->transport != GW_TRANSPORT_POLL || strcmp(s->client_id, t->client_id) != 0)
        return NULL;
    /* A closing session is found while its last words (the disconnect) wait in
     * its outbox: the next poll gets them. Once they went out, it is gone. */
    if (s->closing && !s->outbox.count)
        return NULL;
    return gw_hsession_of(s);
}

void gw_hsession_free(struct gw_hsession *h)
{
    gw_session_closed(&h->s);
    free(h->chans);
    free(h->retained);
    free(h);
}

void gw_hsession_done(struct gw_hsession *h)
{
    struct gw_server *srv = h->s.srv;
    if (h->s.conn_id == 0)
        return;
    h->s.closing = true; /* nothing more is delivered to it */
    if (srv->n_reap == srv->reap_cap) {
        uint32_t cap = srv->reap_cap ? srv->reap_cap * 2 : 64;
        uint64_t *n = realloc(srv->reap, cap * sizeof *n);
        if (!n)
            return; /* reaped later: its transport's sweep comes back to it */
        srv->reap = n;
        srv->reap_cap = cap;
    }
    srv->reap[srv->n_reap++] = h->s.conn_id;
}

void gw_hsession_reap(struct gw_server *srv)
{
    /* Freeing may answer a held poll, which may mark others: take the list first. */
    while (srv->n_reap) {
        uint64_t id = srv->reap[--srv->n_reap];
        struct gw_session *s = gw_conns_get(&srv->conns, id);
        if (!s || s->transport == GW_TRANSPORT_WS)
            continue; /* reaped twice */
        struct gw_hsession *h = gw_hsession_of(s);
        if (s->transport == GW_TRANSPORT_POLL)
            gw_poll_release(h);
        gw_hsession_free(h);
    }
}

void gw_hsession_free_all(struct gw_server *srv)
{
    gw_hsession_reap(srv);
    for (uint32_t i = 0; i < srv->conns.used; i++) {
        struct gw_session *s = srv->conns.slots[i];
        if (s && s->transport != GW_TRANSPORT_WS) {
            s->closing = true;
            gw_hsession_free(gw_hsession_of(s));
        }
    }
    free(srv->reap);
    srv->reap = NULL;
    srv->n_reap = srv->reap_cap = 0;
}
