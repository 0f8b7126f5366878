/*
 * peer.c: who each connection is from, kept by descriptor. The listener
 * records the address a connection comes from (the TCP peer, or the source a
 * trusted load balancer's PROXY header names). At each WebSocket handshake,
 * when that address is one of --trusted-proxy, X-Forwarded-For may name the
 * client behind it (edge_xff_pick); otherwise the header is ignored. Per-IP
 * limits and log lines use the result. A table indexed by fd: no allocation
 * per connection, and an entry cannot outlive its connection because the
 * descriptor number is not reused before lws closes it. Loop thread.
 */
#include "gw.h"

#include <libwebsockets.h>
#include <stdlib.h>
#include <string.h>

#define XFF_MAX 4096 /* lws keeps at most 4 KiB of headers (max_http_header_data) */

struct gw_peer {
    struct edge_addr from;   /* the TCP peer, or the source in a PROXY header */
    struct edge_addr client; /* from, or the X-Forwarded-For client behind it */
};

rt_status gw_peer_record(struct gw_server *srv, int fd, const struct edge_addr *from)
{
    if (fd < 0)
        return RT_INVAL;
    if ((uint32_t)fd >= srv->peers_cap) {
        uint32_t cap = srv->peers_cap ? srv->peers_cap : 1024;
        while (cap <= (uint32_t)fd)
            cap *= 2;
        struct gw_peer *grown = realloc(srv->peers, sizeof *grown * cap);
        if (!grown)
            return RT_NOMEM;
        memset(grown + srv->peers_cap, 0, sizeof *grown * (cap - srv->peers_cap));
        srv->peers = grown;
        srv->peers_cap = cap;
    }
    srv->peers[fd].from = *from;
    srv->peers[fd].client = *from;
    return RT_OK;
}

void gw_peer_free(struct gw_server *srv)
{
    free(srv->peers);
    srv->peers = NULL;
    srv->peers_cap = 0;
}

/* The entry of the connection, or NULL if the listener did not record it. */
static struct gw_peer *entry(struct gw_server *srv, struct lws *wsi)
{
    int fd = (int)lws_get_socket_fd(wsi);
    if (fd < 0 || (uint32_t)fd >= srv->peers_cap || !srv->peers[fd].from.family)
        return NULL;
    return &srv->peers[fd];
}

const struct edge_addr *gw_peer_resolve(struct gw_server *srv, struct lws *wsi)
{
    const struct gw_config *cfg = srv->cfg;
    struct gw_peer *p = entry(srv, wsi);
    if (!p)
        return NULL;
    p->client = p->from;
    if (!cfg->n_trusted_proxy ||
        !edge_cidr_match_any(cfg->trusted_proxy, cfg->n_trusted_proxy, &p->from))
        return &p->client;
    char xff[XFF_MAX + 1];
    int n = lws_hdr_copy(wsi, xff, sizeof xff, WSI_TOKEN_X_FORWARDED_FOR);
    struct edge_addr picked;
    if (n > 0 && edge_xff_pick(xff, (size_t)n, cfg->trusted_proxy, cfg->n_trusted_proxy, &picked))
        p->client = picked;
    return &p->client;
}

void gw_peer_text(struct gw_server *srv, struct lws *wsi, char out[EDGE_ADDR_TEXT])
{
    struct gw_peer *p = entry(srv, wsi);
    if (p) {
        edge_addr_format(&p->client, out);
        return;
    }
    out[0] = '\0';
    lws_get_peer_simple(wsi, out, EDGE_ADDR_TEXT);
    if (!out[0])
        strcpy(out, "-");
}
