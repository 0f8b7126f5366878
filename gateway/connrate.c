/*
 * connrate.c: the node-wide handshake rate (--conn-rate, --conn-burst).
 *
 * When a node dies, its clients reconnect through the load balancer to the
 * nodes left, all within a second or two. Each new session costs the loop a
 * handshake, a `connect`, and a `sub` with `since` (a replay, and for a
 * channel new to this node a NATS round trip). Admitting them all at once
 * starves the sessions the node already has. One token bucket paces the
 * admissions; a refused handshake gets 503 with Retry-After, and the client
 * retries with its jittered backoff (or the load balancer tries another
 * node).
 *
 * Retry-After is spread: a fixed value would send every refused client back
 * in the same second, a second storm. The refusals of the last second tell
 * how many are waiting; they are told to come back at random within the
 * time the bucket needs to admit that many (at least 1 s, at most 30 s).
 * Loop thread.
 */
#include "gw.h"

#include <stdlib.h>

#define BACKLOG_WINDOW_MS   1000
#define RETRY_MIN_MS        1000
#define RETRY_MAX_SPREAD_MS 30000

struct gw_connrate {
    struct rt_bucket_cfg cfg;
    struct rt_bucket bucket;
    uint64_t window_start_ms; /* the refusal counting window */
    uint32_t refused_prev;    /* refusals in the previous window */
    uint32_t refused_now;     /* ... and in this one so far */
};

rt_status gw_connrate_create(const struct rt_bucket_cfg *cfg, struct gw_connrate **out)
{
    struct gw_connrate *cr = calloc(1, sizeof *cr);
    if (!cr)
        return RT_NOMEM;
    cr->cfg = *cfg;
    rt_bucket_init(&cr->bucket, &cr->cfg, rt_mono_ms());
    *out = cr;
    return RT_OK;
}

void gw_connrate_destroy(struct gw_connrate *cr)
{
    free(cr);
}

/* How long the refusals of about the last second take to admit, in ms. */
static uint32_t backlog_ms(const struct gw_connrate *cr)
{
    uint64_t waiting = (uint64_t)cr->refused_prev + cr->refused_now;
    uint64_t ms = waiting * 1000 / cr->cfg.rate;
    return ms > RETRY_MAX_SPREAD_MS ? RETRY_MAX_SPREAD_MS : (uint32_t)ms;
}

bool gw_connrate_take(struct gw_connrate *cr, uint64_t now_ms, uint32_t *retry_after_ms)
{
    if (cr->cfg.rate == 0)
        return true;
    if (now_ms - cr->window_start_ms >= BACKLOG_WINDOW_MS) {
        bool adjacent = now_ms - cr->window_start_ms < 2 * BACKLOG_WINDOW_MS;
        cr->refused_prev = adjacent ? cr->refused_now : 0;
        cr->refused_now = 0;
        cr->window_start_ms = now_ms;
    }
    uint32_t bucket_ms = 0;
    if (rt_bucket_take(&cr->bucket, &cr->cfg, now_ms, &bucket_ms))
        return true;
    cr->refused_now++;
    uint32_t spread = backlog_ms(cr);
    uint32_t base = bucket_ms > RETRY_MIN_MS ? bucket_ms : RETRY_MIN_MS;
    *retry_after_ms = base + (spread ? (uint32_t)rand() % spread : 0);
    return false;
}
