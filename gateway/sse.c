/*
 * sse.c: the Server-Sent Events transport. A session's stream is one HTTP
 * response (text/event-stream, ended by closing the connection) on which
 * every message the session's outbox holds goes out as one event,
 *
 *     [id: <resume position>]
 *     data: <the message's JSON, as a WebSocket frame carries it>
 *
 * written by the server's flush, batched, straight from the loop (no POLLOUT
 * round trip unless the socket is full). The `id:` line comes with each
 * event that moves the position of one of the stream URL's durable
 * channels (a delivery, a gap, the sub's reply) and carries all of their
 * positions (protocol/resume.c), so an EventSource's Last-Event-ID resumes
 * them all. A quiet stream gets a comment line every --sse-heartbeat-ms;
 * TCP_USER_TIMEOUT ends one whose writes go unacknowledged for
 * --idle-timeout-ms (a half-open stream). Requests come by POST (send.c).
 * The session lives as long as its stream. Loop thread.
 */
#include "http.h"

#include <errno.h>
#include <libwebsockets.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#define SSE_WRITES_MAX  8           /* writes per flush before the socket is waited for */
#define SSE_WRITE_BYTES (64 * 1024) /* events gathered into one write */
#define SSE_START       "retry: 1000\n\n"
#define SSE_HEARTBEAT   ":\n\n"

/* ---- positions ----------------------------------------------------------- */

static struct gw_sse_chan *chan_named(struct gw_hsession *h, const char *name, size_t len)
{
    for (uint8_t i = 0; i < h->n_chans; i++)
        if (strlen(h->chans[i].name) == len && !memcmp(h->chans[i].name, name, len))
            return &h->chans[i];
    return NULL;
}

/* The unsigned number after key in one of our own JSON lines; false when absent. */
static bool json_uint(const char *line, size_t len, const char *key, uint64_t *out)
{
    size_t kl = strlen(key);
    for (size_t i = 0; i + kl < len; i++) {
        if (memcmp(line + i, key, kl) != 0)
            continue;
        size_t j = i + kl;
        if (j >= len || line[j] < '0' || line[j] > '9')
            return false;
        uint64_t v = 0;
        for (; j < len && line[j] >= '0' && line[j] <= '9'; j++)
            v = v * 10 + (uint64_t)(line[j] - '0');
        *out = v;
        return true;
    }
    return false;
}

/* The string after key ("key":") in one of our own JSON lines (channel names and
 * epochs hold no quote or escape); its length, 0 when absent or too long. */
static size_t json_str(const char *line, size_t len, const char *key, char *out, size_t cap)
{
    size_t kl = strlen(key);
    for (size_t i = 0; i + kl < len; i++) {
        if (memcmp(line + i, key, kl) != 0)
            continue;
        size_t j = i + kl, n = 0;
        while (j + n < len && line[j + n] != '"')
            n++;
        if (j + n >= len || n == 0 || n >= cap)
            return 0;
        memcpy(out, line + j, n);
        out[n] = '\0';
        return n;
    }
    return 0;
}

static bool has(const char *line, size_t len, const char *text)
{
    size_t tl = strlen(text);
    for (size_t i = 0; i + tl <= len; i++)
        if (!memcmp(line + i, text, tl))
            return true;
    return false;
}

#define STARTS(line, len, lit) ((len) >= sizeof(lit) - 1 && !memcmp(line, lit, sizeof(lit) - 1))

/*
 * A private line (a reply or an event the session wrote) about to go out:
 * the reply to one of the URL's subs sets that channel's epoch and
 * position; a gap moves it past the gap. True when a position changed.
 */
static bool note_line(struct gw_hsession *h, const char *line, size_t len)
{
    uint64_t v;
    if (STARTS(line, len, "{\"type\":\"reply\",\"id\":")) {
        if (!json_uint(line, len, "\"id\":", &v) || h->connect_id < 0 ||
            v <= (uint64_t)h->connect_id || v > (uint64_t)h->connect_id + h->n_chans)
            return false;
        struct gw_sse_chan *c = &h->chans[v - (uint64_t)h->connect_id - 1];
        uint64_t seq;
        if (!has(line, len, "\"ok\":true") || !has(line, len, "\"durable\":true") ||
            !json_uint(line, len, "\"seq\":", &seq) ||
            !json_str(line, len, "\"epoch\":\"", c->epoch, sizeof c->epoch))
            return false;
        /* Resumed and recovered: the replay brings since+1.. next; otherwise what the
         * client has is the channel's state now (live from here). */
        c->seq = c->resume && has(line, len, "\"recovered\":true") ? c->since : seq;
        c->known = true;
        return true;
    }
    if (STARTS(line, len, "{\"type\":\"gap\",\"channel\":\"")) {
        char name[PROTO_CHANNEL_MAX + 1];
        size_t n = json_str(line, len, "\"channel\":\"", name, sizeof name);
        struct gw_sse_chan *c = n ? chan_named(h, name, n) : NULL;
        if (!c || !c->known || !json_uint(line, len, "\"to\":", &v) || v <= c->seq)
            return false;
        c->seq = v;
        return true;
    }
    return false;
}

/* Events being gathered into one write; failed once an append ran out of memory. */
struct sse_out {
    struct proto_buf *b;
    bool failed;
};

static void put(struct sse_out *o, const void *p, size_t n)
{
    if (proto_buf_append(o->b, p, n) != RT_OK)
        o->failed = true;
}

/* Appends "id: <every known position>\n". */
static void put_id(struct gw_hsession *h, struct sse_out *out)
{
    struct proto_resume_pos pos[GW_SSE_MAX_CHANNELS];
    size_t n = 0;
    for (uint8_t i = 0; i < h->n_chans; i++) {
        struct gw_sse_chan *c = &h->chans[i];
        if (c->known)
            pos[n++] = (struct proto_resume_pos){c->hash, c->seq, c->epoch, strlen(c->epoch)};
    }
    if (!n)
        return;
    put(out, "id: ", 4);
    if (proto_resume_encode(pos, n, out->b) != RT_OK)
        out->failed = true;
    put(out, "\n", 1);
}

/* Appends one message's event; with an id line when it moved a position. */
static void put_event(struct gw_hsession *h, const struct fo_msg *msg, const char *line, size_t len,
                      struct sse_out *out)
{
    bool moved = false;
    if (msg) {
        struct gw_sse_chan *c =
            msg->durable && h->n_chans ? chan_named(h, msg->channel, msg->channel_len) : NULL;
        if (c && c->known && msg->seq > c->seq) {
            c->seq = msg->seq;
            c->ack_due = true;
            moved = true;
        }
    } else if (h->n_chans) {
        moved = note_line(h, line, len);
    }
    if (moved)
        put_id(h, out);
    uint64_t after_ms;
    if (STARTS(line, len, "{\"type\":\"disconnect\"") &&
        json_uint(line, len, "\"after_ms\":", &after_ms) && after_ms > 0) {
        char retry[32];
        int n = snprintf(retry, sizeof retry, "retry: %llu\n", (unsigned long long)after_ms);
        put(out, retry, (size_t)n);
    }
    put(out, "data: ", 6);
    put(out, line, len);
    put(out, "\n\n", 2);
}

/* ---- writing ------------------------------------------------------------- */

/*
 * The URL's channels are acked as their deliveries are written: a plain
 * EventSource cannot ack, and what a broken stream did not deliver comes
 * again through its Last-Event-ID. After the write, not during it: an ack
 * may queue the next deliveries into the outbox being walked.
 */
static void ack_written(struct gw_hsession *h)
{
    for (uint8_t i = 0; i < h->n_chans; i++) {
        struct gw_sse_chan *c = &h->chans[i];
        if (c->ack_due && h->s.fo) {
            c->ack_due = false;
            fo_ack(h->s.fo, c->name, strlen(c->name), c->seq);
        }
    }
}

static int write_raw(struct gw_hsession *h, struct proto_buf *out)
{
    if (lws_write(h->wsi, out->data, out->len, LWS_WRITE_HTTP) < (int)out->len)
        return -1;
    h->last_sent_ms = rt_mono_ms();
    return 0;
}

/*
 * Gathers the events of the outbox's first items (up to SSE_WRITE_BYTES, at
 * least one item) into one write. Returns -1 when the socket failed.
 */
static int write_events(struct gw_hsession *h)
{
    struct gw_session *s = &h->s;
    struct sse_out out = {.b = &s->srv->http_out};
    struct gw_outbox *ob = &s->outbox;
    proto_buf_reset(out.b);
    uint32_t n = 0;
    size_t bytes = 0;
    while (n < ob->count && (n == 0 || out.b->len < SSE_WRITE_BYTES)) {
        const struct gw_outbox_item *it = &ob->items[(ob->head + n) & (ob->cap - 1)];
        const char *p = (const char *)it->data, *end = p + it->len;
        while (p < end) {
            const char *nl = memchr(p, '\n', (size_t)(end - p));
            size_t len = nl ? (size_t)(nl - p) : (size_t)(end - p);
            if (len)
                put_event(h, it->msg, p, len, &out);
            p += len + 1;
        }
        bytes += it->len;
        n++;
    }
    if (!n)
        return 0;
    if (out.failed) /* out of memory: the events are lost, and the stream with them */
        return -1;
    if (write_raw(h, out.b) < 0)
        return -1;
    gw_session_sent(s, n, bytes);
    ack_written(h);
    return 0;
}

static void sse_want_write(struct gw_session *s)
{
    struct gw_hsession *h = gw_hsession_of(s);
    if (h->wsi)
        gw_http_wake(h->wsi);
}

/* Once a closing session's outbox is written, the stream ends (HTTP_WRITEABLE). */
static void end_if_done(struct gw_hsession *h)
{
    if (h->s.closing && !h->s.outbox.count && !h->stream_ending) {
        h->stream_ending = true;
        gw_http_wake(h->wsi);
    }
}

static void sse_flush(struct gw_session *s)
{
    struct gw_hsession *h = gw_hsession_of(s);
    if (!h->wsi || h->stream_ending)
        return;
    for (int i = 0; i < SSE_WRITES_MAX && s->outbox.count; i++) {
        if (lws_partial_buffered(h->wsi))
            break; /* lws holds a remainder: wait for the socket */
        if (write_events(h) < 0) {
            gw_session_cut(s);
            return;
        }
    }
    if (s->outbox.count || lws_partial_buffered(h->wsi))
        gw_http_wake(h->wsi);
    end_if_done(h);
}

int gw_sse_writable(struct gw_hsession *h, struct lws *wsi)
{
    if (h->wsi != wsi)
        return 0;
    if (h->stream_ending)
        return lws_partial_buffered(wsi) && !h->stream_cut ? (lws_callback_on_writable(wsi), 0)
                                                           : -1;
    sse_flush(&h->s);
    return 0;
}

static void sse_close(struct gw_session *s)
{
    struct gw_hsession *h = gw_hsession_of(s);
    if (h->wsi)
        gw_http_wake(h->wsi); /* the flush writes the rest, then the end */
}

/*
 * Ends the stream at once: the socket is shut down (nothing more goes out,
 * whatever lws still buffers), and the WRITEABLE that follows (a shut socket
 * is writable, and a dead one reports an error) closes the connection.
 */
static void sse_cut(struct gw_session *s)
{
    struct gw_hsession *h = gw_hsession_of(s);
    s->closing = true;
    if (h->wsi && !h->stream_cut) {
        h->stream_ending = h->stream_cut = true;
        shutdown(lws_get_socket_fd(h->wsi), SHUT_RDWR);
        gw_http_wake(h->wsi);
    }
}

/* True when the client closed its side: nothing more will ever be read from
 * it, and lws does not read during a response (gw_http_hold turned it off). */
static bool peer_gone(struct lws *wsi)
{
    char c;
    ssize_t n = recv(lws_get_socket_fd(wsi), &c, 1, MSG_PEEK | MSG_DONTWAIT);
    return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK);
}

static void sse_heartbeat(struct gw_session *s, uint64_t now)
{
    struct gw_hsession *h = gw_hsession_of(s);
    if (!h->wsi || h->stream_ending)
        return;
    bool stalled = lws_partial_buffered(h->wsi); /* input on (gw_http_wake): a FIN would spin */
    if (!stalled && now - h->last_sent_ms < s->srv->cfg->sse_heartbeat_ms)
        return;
    if (peer_gone(h->wsi)) {
        gw_session_cut(s); /* its client left: found at most a heartbeat late */
        return;
    }
    if (lws_partial_buffered(h->wsi))
        return;
    struct proto_buf *out = &s->srv->http_out;
    proto_buf_reset(out);
    if (proto_buf_append(out, SSE_HEARTBEAT, sizeof SSE_HEARTBEAT - 1) != RT_OK ||
        write_raw(h, out) < 0)
        gw_session_cut(s);
}

const struct gw_transport gw_sse_transport = {
    .name = "sse",
    .flush = sse_flush,
    .want_write = sse_want_write,
    .close = sse_close,
    .cut = sse_cut,
    .heartbeat = sse_heartbeat,
    .describe = gw_sesstoken_describe,
};

int gw_sse_start(struct gw_hsession *h, struct lws *wsi, struct gw_http_req *r)
{
    h->wsi = wsi;
    r->conn_id = h->s.conn_id;
    uint8_t hdr[LWS_PRE + 1024];
    uint8_t *start = hdr + LWS_PRE, *p = start, *end = hdr + sizeof hdr - 1;
    if (lws_add_http_common_headers(wsi, 200, "text/event-stream", LWS_ILLEGAL_HTTP_CONTENT_LEN, &p,
                                    end) ||
        lws_add_http_header_by_name(
            wsi, (const uint8_t *)"cache-control:", (const uint8_t *)"no-store", 8, &p, end) ||
        lws_add_http_header_by_name(
            wsi, (const uint8_t *)"x-accel-buffering:", (const uint8_t *)"no", 2, &p, end) ||
        (r->origin[0] &&
         (lws_add_http_header_by_name(
              wsi, (const uint8_t *)"access-control-allow-origin:", (const uint8_t *)r->origin,
              (int)strlen(r->origin), &p, end) ||
          lws_add_http_header_by_name(wsi, (const uint8_t *)"vary:", (const uint8_t *)"origin", 6,
                                      &p, end))) ||
        lws_finalize_write_http_header(wsi, start, &p, end))
        return -1;
    /* No lws timeout on the stream (lws arms one once this callback returns: the
     * first WRITEABLE lifts it); a peer that stops acknowledging our writes
     * (heartbeats included) for the idle timeout is dropped by the kernel. */
    gw_http_wait(wsi);
    unsigned user_timeout = h->s.srv->cfg->idle_timeout_ms;
    setsockopt(lws_get_socket_fd(wsi), IPPROTO_TCP, TCP_USER_TIMEOUT, &user_timeout,
               sizeof user_timeout);
    struct proto_buf *out = &h->s.srv->http_out;
    proto_buf_reset(out);
    if (proto_buf_append(out, SSE_START, sizeof SSE_START - 1) != RT_OK || write_raw(h, out) < 0)
        return -1;
    sse_flush(&h->s);
    return 0;
}

void gw_sse_closed(struct gw_hsession *h)
{
    h->wsi = NULL;
    h->s.closing = true;
    gw_hsession_free(h);
}
