#include "rt.h"

void rt_bucket_init(struct rt_bucket *b, const struct rt_bucket_cfg *cfg, uint64_t now_ms)
{
    b->milli = (int64_t)(cfg->burst ? cfg->burst : 1) * 1000;
    b->last_ms = now_ms;
}

/* Refills b up to now_ms, saturating at the burst. */
static void refill(struct rt_bucket *b, const struct rt_bucket_cfg *cfg, int64_t cap,
                   uint64_t now_ms)
{
    if (now_ms > b->last_ms) {
        uint64_t elapsed = now_ms - b->last_ms;
        /* The cap keeps the product small. */
        uint64_t gain = elapsed > (uint64_t)cap ? (uint64_t)cap * cfg->rate : elapsed * cfg->rate;
        b->milli = (uint64_t)(cap - b->milli) <= gain ? cap : b->milli + (int64_t)gain;
        b->last_ms = now_ms;
    }
}

bool rt_bucket_take(struct rt_bucket *b, const struct rt_bucket_cfg *cfg, uint64_t now_ms,
                    uint32_t *retry_after_ms)
{
    if (cfg->rate == 0)
        return true;
    int64_t cap = (int64_t)(cfg->burst ? cfg->burst : 1) * 1000;
    refill(b, cfg, cap, now_ms);
    if (b->milli >= 1000) {
        b->milli -= 1000;
        return true;
    }
    if (retry_after_ms) {
        int64_t missing = 1000 - b->milli;
        *retry_after_ms = (uint32_t)((missing + cfg->rate - 1) / cfg->rate);
    }
    return false;
}

void rt_bucket_charge(struct rt_bucket *b, const struct rt_bucket_cfg *cfg, uint64_t now_ms,
                      uint64_t tokens, uint64_t floor_tokens)
{
    if (cfg->rate == 0)
        return;
    int64_t cap = (int64_t)(cfg->burst ? cfg->burst : 1) * 1000;
    refill(b, cfg, cap, now_ms);
    /* Tokens and the floor are bounded well below INT64_MAX / 1000 by the caller's checks. */
    const uint64_t limit = (uint64_t)INT64_MAX / 4000;
    int64_t floor_milli = -(int64_t)(floor_tokens < limit ? floor_tokens : limit) * 1000;
    int64_t take = (int64_t)(tokens < limit ? tokens : limit) * 1000;
    b->milli = b->milli - take < floor_milli ? floor_milli : b->milli - take;
}
