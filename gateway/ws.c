/*
 * ws.c: the WebSocket transport. A session over lws: its storage is lws's
 * per-connection data (struct gw_ws, allocated and freed by lws, a few
 * hundred bytes, nothing else per idle connection), its input is lws's
 * RECEIVE callbacks joined into whole messages, its output the outbox
 * written in place (the outbox and the fan-out keep LWS_PRE bytes free before
 * every frame), batched by the server's flush with no POLLOUT round trip;
 * pings, closes and the writes a full socket left over go through lws's
 * WRITEABLE callback. Called by the thin lws callback in server.c. Loop
 * thread.
 */
#include "gw.h"

#include <libwebsockets.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

_Static_assert(LWS_PRE <= GW_FRAME_HEADROOM, "outbox items keep room for lws's frame header");

/* lws's per-connection data of a WebSocket: the session first. */
struct gw_ws {
    struct gw_session s;
    struct lws *wsi;
    uint8_t *rx_buf; /* reassembly of a message split over callbacks */
    size_t rx_len;
    uint64_t last_ping_ms;
    bool write_pending; /* a WRITEABLE callback is already asked for */
    bool close_now;     /* flushed: the close frame goes out from the timer */
    bool ping_due;      /* the sweep asked for a WebSocket ping */
    bool cut;           /* the socket was shut down under lws */
};

_Static_assert(offsetof(struct gw_ws, s) == 0, "a gw_ws is its session");

static struct gw_ws *ws_of(struct gw_session *s)
{
    return (struct gw_ws *)(void *)s;
}

size_t gw_ws_session_size(void)
{
    return sizeof(struct gw_ws);
}

/* Asks lws for a WRITEABLE callback (epoll POLLOUT round trip). */
static void request_writable(struct gw_ws *c)
{
    if (!c->write_pending) {
        c->write_pending = true;
        lws_callback_on_writable(c->wsi);
    }
}

static void ws_want_write(struct gw_session *s)
{
    request_writable(ws_of(s));
}

/* Writes the next frame of the outbox. Returns -1 when the socket failed. */
static int write_frame(struct gw_ws *c)
{
    struct gw_session *s = &c->s;
    struct gw_server *srv = s->srv;
    uint8_t *data;
    size_t len;
    uint32_t n = gw_outbox_next_frame(&s->outbox, srv->scratch, srv->scratch_cap, &data, &len);
    if (!n)
        return 0;
    enum lws_write_protocol kind = s->codec == PROTO_JSON ? LWS_WRITE_TEXT : LWS_WRITE_BINARY;
    if (lws_write(c->wsi, data, len, kind) < (int)len)
        return -1;
    srv->m.frames_out++;
    gw_session_sent(s, n, len);
    return 0;
}

#define FLUSH_FRAMES_MAX 8

static void ws_flush(struct gw_session *s)
{
    struct gw_ws *c = ws_of(s);
    for (int i = 0; i < FLUSH_FRAMES_MAX && s->outbox.count; i++) {
        /* lws holds an unsent remainder: wait for POLLOUT, keep our bound. */
        if (s->closing || c->ping_due || c->write_pending || c->cut || lws_partial_buffered(c->wsi))
            break;
        if (write_frame(c) < 0) {
            gw_session_cut(s);
            return;
        }
    }
    if (s->outbox.count || s->closing || c->ping_due)
        request_writable(c);
}

int gw_ws_writable(void *user)
{
    struct gw_ws *c = user;
    struct gw_session *s = &c->s;
    c->write_pending = false;
    if (c->ping_due) {
        /* One write per callback: the ping now, the queue on the next one. */
        c->ping_due = false;
        /* Not empty: lws reports only pongs with a payload (RECEIVE_PONG). */
        uint8_t ping[LWS_PRE + 1] = {[LWS_PRE] = 'h'};
        if (lws_write(c->wsi, ping + LWS_PRE, 1, LWS_WRITE_PING) < 0)
            return -1;
        if (s->outbox.count || s->closing)
            request_writable(c);
        return 0;
    }
    if (s->outbox.count) {
        if (write_frame(c) < 0)
            return -1;
        if (s->outbox.count || s->closing)
            request_writable(c);
        return 0;
    }
    if (s->closing && !c->close_now) {
        /*
         * Everything is flushed: close with our code. Not by returning -1
         * here: lws treats a failing WRITEABLE as a dead socket and sends no
         * close frame. A failing TIMER callback takes the polite path.
         */
        lws_close_reason(c->wsi, (enum lws_close_status)s->close_code,
                         (unsigned char *)(uintptr_t)s->close_reason, strlen(s->close_reason));
        c->close_now = true;
        lws_set_timer_usecs(c->wsi, 1);
    }
    return 0;
}

int gw_ws_timer(void *user)
{
    struct gw_ws *c = user;
    /* Only armed by gw_ws_writable once a close is flushed. */
    return c->close_now ? -1 : 0; /* lws then sends the prepared close frame */
}

static void ws_close(struct gw_session *s)
{
    request_writable(ws_of(s));
}

/*
 * Cuts the TCP connection under lws: epoll then reports the hang-up and lws
 * closes the wsi through its normal path. Neither lws_set_timeout(KILL_ASYNC)
 * nor KILL_SYNC does it here: from outside lws's service the first queues a
 * timer that lws may not re-arm its loop timer for, and the second waits for
 * buffered output to flush, which a peer that does not read never allows.
 */
static void ws_cut(struct gw_session *s)
{
    struct gw_ws *c = ws_of(s);
    if (c->cut)
        return;
    c->cut = true;
    shutdown(lws_get_socket_fd(c->wsi), SHUT_RDWR);
}

static void ws_heartbeat(struct gw_session *s, uint64_t now)
{
    struct gw_ws *c = ws_of(s);
    const struct gw_config *cfg = s->srv->cfg;
    if (now - s->last_rx_ms >= cfg->idle_timeout_ms) {
        /* Silent past the timeout: presumed dead (half-open), so no close
         * handshake that would wait for it; the socket is cut. */
        gw_session_idle_cut(s, now - s->last_rx_ms);
    } else if (now - s->last_rx_ms >= cfg->ping_interval_ms &&
               now - c->last_ping_ms >= cfg->ping_interval_ms) {
        c->last_ping_ms = now;
        c->ping_due = true;
        request_writable(c);
    }
}

const struct gw_transport gw_ws_transport = {
    .name = "websocket",
    .flush = ws_flush,
    .want_write = ws_want_write,
    .close = ws_close,
    .cut = ws_cut,
    .heartbeat = ws_heartbeat,
};

int gw_ws_open(struct gw_server *srv, void *user, struct lws *wsi, enum proto_codec codec)
{
    struct gw_ws *c = user;
    memset(c, 0, sizeof *c);
    c->wsi = wsi;
    char peer[EDGE_ADDR_TEXT];
    gw_peer_text(srv, wsi, peer); /* resolved at the handshake */
    if (gw_session_open(srv, &c->s, GW_TRANSPORT_WS, codec, peer) != 0)
        return -1;
    c->last_ping_ms = c->s.opened_ms;
    return 0;
}

int gw_ws_rx(void *user, const uint8_t *in, size_t len, bool final, size_t remaining)
{
    struct gw_ws *c = user;
    struct gw_session *s = &c->s;
    const struct gw_config *cfg = s->srv->cfg;
    s->last_rx_ms = rt_mono_ms();
    if (s->closing)
        return 0; /* input after a close decision is ignored */
    if (c->rx_len + len + remaining > cfg->max_message_bytes) {
        rt_log(RT_LOG_WARN, "message_too_big", "conn=%s peer=%s bytes_at_least=%zu limit=%zu",
               s->client_id, s->peer, c->rx_len + len + remaining, cfg->max_message_bytes);
        s->srv->m.closes_1009++;
        free(c->rx_buf);
        c->rx_buf = NULL;
        c->rx_len = 0;
        gw_session_close(s, 1009, "message_too_big", true, true, 0);
        return 0;
    }
    if (final)
        s->srv->m.frames_in++;
    if (final && !c->rx_len) {
        gw_session_frame(s, in, len);
        return 0;
    }
    uint8_t *nb = realloc(c->rx_buf, c->rx_len + len + 1);
    if (!nb)
        return -1;
    c->rx_buf = nb;
    memcpy(c->rx_buf + c->rx_len, in, len);
    c->rx_len += len;
    if (final) {
        gw_session_frame(s, c->rx_buf, c->rx_len);
        free(c->rx_buf);
        c->rx_buf = NULL;
        c->rx_len = 0;
    }
    return 0;
}

void gw_ws_pong(void *user)
{
    struct gw_ws *c = user;
    c->s.last_rx_ms = rt_mono_ms();
}

void gw_ws_peer_close(void *user, const uint8_t *payload, size_t len)
{
    struct gw_ws *c = user;
    /* 1005: a close frame without a code (RFC 6455 7.1.5). */
    c->s.peer_close_code =
        len >= 2 ? (uint16_t)((unsigned)payload[0] << 8 | payload[1]) : (uint16_t)1005;
}

void gw_ws_closed(void *user)
{
    struct gw_ws *c = user;
    gw_session_closed(&c->s);
    free(c->rx_buf);
    c->rx_buf = NULL;
    c->rx_len = 0;
}
