/*
 * iplimit.c: handshakes per remote IP. A fixed table of buckets indexed by a
 * keyed hash of the address: memory does not grow with the number of addresses
 * seen. A slot held by another address is taken over once that address has
 * been quiet for a minute; until then the two share it (stricter, never
 * looser).
 */
#include "gw.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define IP_KEY_MAX  46
#define TAKEOVER_MS 60000

struct ip_slot {
    char ip[IP_KEY_MAX];
    struct rt_bucket bucket;
};

struct gw_iplimit {
    struct rt_bucket_cfg cfg;
    size_t n;
    struct ip_slot *slots;
};

rt_status gw_iplimit_create(const struct rt_bucket_cfg *cfg, size_t slots, struct gw_iplimit **out)
{
    struct gw_iplimit *ipl = calloc(1, sizeof *ipl);
    if (!ipl)
        return RT_NOMEM;
    ipl->slots = calloc(slots, sizeof *ipl->slots);
    if (!ipl->slots) {
        free(ipl);
        return RT_NOMEM;
    }
    ipl->cfg = *cfg;
    ipl->n = slots;
    *out = ipl;
    return RT_OK;
}

void gw_iplimit_destroy(struct gw_iplimit *ipl)
{
    if (!ipl)
        return;
    free(ipl->slots);
    free(ipl);
}

/* The slot of ip, taken over (full bucket) if another address held it and
 * has been quiet long enough. */
static struct ip_slot *slot_of(struct gw_iplimit *ipl, const char *ip, uint64_t now_ms)
{
    /* Keyed: an unkeyed hash would let a client pick addresses (an IPv6
     * /64 holds plenty) that share a victim's slot and spend its budget. */
    struct ip_slot *s = &ipl->slots[rt_hash_bytes(ip, strlen(ip)) % ipl->n];
    if (strncmp(s->ip, ip, IP_KEY_MAX - 1) != 0 &&
        (!s->ip[0] || now_ms - s->bucket.last_ms > TAKEOVER_MS)) {
        snprintf(s->ip, sizeof s->ip, "%s", ip);
        rt_bucket_init(&s->bucket, &ipl->cfg, now_ms);
    }
    return s;
}

bool gw_iplimit_take(struct gw_iplimit *ipl, const char *ip, uint64_t now_ms,
                     uint32_t *retry_after_ms)
{
    if (!ipl->cfg.rate)
        return true;
    return rt_bucket_take(&slot_of(ipl, ip, now_ms)->bucket, &ipl->cfg, now_ms, retry_after_ms);
}

bool gw_iplimit_blocked(struct gw_iplimit *ipl, const char *ip, uint64_t now_ms,
                        uint32_t *retry_after_ms)
{
    if (!ipl->cfg.rate)
        return false;
    struct rt_bucket probe = slot_of(ipl, ip, now_ms)->bucket; /* a copy: nothing is taken */
    return !rt_bucket_take(&probe, &ipl->cfg, now_ms, retry_after_ms);
}
