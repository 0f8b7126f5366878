#include "rt.h"

void rt_bucket_init(struct rt_bucket *b, const struct rt_bucket_cfg *cfg, uint64_t now_ms)
{
    b->milli = (int64_t)(cfg->burst ? cfg->burst : 1) * 1000;
    b->last_ms = now_ms;
}

bool rt_bucket_take(struct rt_bucket *b, const struct rt_bucket_cfg *cfg, uint64_t now_ms,
                    uint32_t *retry_after_ms)
{
    if (cfg->rate == 0)
        return true;
    int64_t cap = (int64_t)(cfg->burst ? cfg->burst : 1) * 1000;
    if (now_ms > b->last_ms) {
        uint64_t elapsed = now_ms - b->last_ms;
        /* Refill, saturating at the burst; the cap keeps the product small. */
        uint64_t gain = elapsed > (uint64_t)cap ? (uint64_t)cap * cfg->rate : elapsed * cfg->rate;
        b->milli = (uint64_t)(cap - b->milli) <= gain ? cap : b->milli + (int64_t)gain;
        b->last_ms = now_ms;
    }
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
