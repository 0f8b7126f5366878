/*
 * drain.c: what SIGTERM does, in three steps, so that a node leaves a load
 * balanced fleet without its clients seeing an error.
 *
 * 1. Readiness turns false at once: /readyz answers 503 and new handshakes
 *    get 503 with Retry-After (a load balancer that still sends some, before
 *    its health check has failed often enough, retries them on another node:
 *    docker/haproxy.cfg's `retry-on 503`). Sessions stay up and keep being
 *    served for --drain-grace-ms, which the recipe sizes to the balancer's
 *    check interval times its fall count, plus one interval: by then the
 *    balancer sends nothing here, so no reconnect lands on this node.
 * 2. Then the sessions are told to go (`disconnect` 1001 `draining`, then the
 *    close) in slices over --drain-ms, one slice every GW_DRAIN_STEP_MS, each
 *    told an after_ms jittered within its slice. The nodes left see the
 *    reconnects spread over the window even from clients that ignore
 *    after_ms.
 * 3. The process may exit once no connection is left, or --drain-timeout-ms
 *    after the signal.
 *
 * Loop thread.
 */
#include "gw.h"

#include <stdlib.h>

void gw_drain_begin(struct gw_server *srv)
{
    if (srv->draining)
        return;
    srv->draining = true;
    srv->drain_started_ms = rt_mono_ms();
    srv->drain_cursor = 0;
    rt_log(RT_LOG_INFO, "drain_start", "connections=%llu grace_ms=%u drain_ms=%u timeout_ms=%u",
           (unsigned long long)srv->m.connections, srv->cfg->drain_grace_ms, srv->cfg->drain_ms,
           srv->cfg->drain_timeout_ms);
}

/* Tells the sessions in slots [drain_cursor, upto) to go. */
static void close_slice(struct gw_server *srv, uint32_t upto, uint32_t slice_ms)
{
    for (uint32_t i = srv->drain_cursor; i < upto; i++) {
        struct gw_session *s = srv->conns.slots[i];
        if (!s)
            continue;
        uint32_t after = slice_ms ? (uint32_t)rand() % slice_ms : 0;
        gw_session_close(s, 1001, "draining", true, true, after);
    }
    srv->drain_cursor = upto;
}

bool gw_drain_step(struct gw_server *srv, uint64_t now_ms)
{
    const struct gw_config *cfg = srv->cfg;
    if (!srv->draining)
        return false;
    uint64_t waited = now_ms - srv->drain_started_ms;
    if (srv->m.connections == 0 || waited >= cfg->drain_timeout_ms) {
        rt_log(RT_LOG_INFO, "drain_done", "connections_left=%llu waited_ms=%llu",
               (unsigned long long)srv->m.connections, (unsigned long long)waited);
        return true;
    }
    if (waited < cfg->drain_grace_ms)
        return false;
    if (srv->drain_cursor == 0)
        rt_log(RT_LOG_INFO, "drain_closing", "connections=%llu drain_ms=%u",
               (unsigned long long)srv->m.connections, cfg->drain_ms);
    /* The share of the window that has begun, slices rounded up: the first
     * step closes the first slice, the step at drain_ms the last. */
    uint64_t into = waited - cfg->drain_grace_ms + GW_DRAIN_STEP_MS;
    uint32_t used = srv->conns.used;
    uint32_t upto =
        into >= cfg->drain_ms ? used : (uint32_t)((uint64_t)used * into / cfg->drain_ms);
    uint32_t slice_ms = cfg->drain_ms < GW_DRAIN_STEP_MS ? cfg->drain_ms : GW_DRAIN_STEP_MS;
    if (upto > srv->drain_cursor)
        close_slice(srv, upto, slice_ms);
    return false;
}
