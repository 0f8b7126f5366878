/*
 * send.c: POST /send, a client's requests for its SSE or long-poll session:
 * the body is one frame of requests, framed as a WebSocket JSON frame (one
 * or many messages), handled by the session layer in order, and the
 * replies go out on the session's stream or in its next poll (never in the
 * POST's answer: they keep their order with the deliveries, as on a
 * WebSocket). A POST names its session by token and is numbered
 * (Rtgate-Seq: 1, 2, ...): one sent again because its answer was lost is
 * answered 204 without being handled twice. The POST itself is answered
 * 204 once its requests are handled (or queued behind the session's pending
 * ones), wherever the session lives (relay.c brings the answer back).
 * `close=1` ends the session once the body is handled (the client's own
 * close, counted as a close 1000 by the client).
 * Loop thread.
 */
#include "http.h"

unsigned gw_send_apply(struct gw_server *srv, const struct gw_sesstoken *t, uint64_t seq,
                       const uint8_t *body, size_t len, bool end, uint32_t *retry_after_ms)
{
    *retry_after_ms = 0;
    struct gw_hsession *h = gw_hsession_find(srv, t);
    if (!h)
        return 404;
    if (seq <= h->post_seq)
        return 204; /* handled already: its answer was lost, not its requests */
    if (seq != h->post_seq + 1)
        return 409;
    /* The session's own message bucket: a flood of POSTs is refused whole,
     * before its body is even decoded. (An empty close=1 is always let
     * through: a client can end its session while rate-limited.) */
    if (len && !gw_session_may_send(&h->s, retry_after_ms))
        return 429;
    h->post_seq = seq;
    h->s.last_rx_ms = rt_mono_ms();
    if (len)
        gw_session_frame(&h->s, body, len);
    if (end && !h->s.closing) {
        /* The client ends its session, as a WebSocket close 1000 from it would. */
        h->s.peer_close_code = 1000;
        gw_session_cut(&h->s);
    }
    return 204;
}
