#include "rt.h"

#include <criterion/criterion.h>

static const struct rt_bucket_cfg cfg = {.rate = 20, .burst = 40};

Test(bucket, starts_full_and_allows_burst_then_refuses)
{
    struct rt_bucket b;
    rt_bucket_init(&b, &cfg, 1000);
    for (int i = 0; i < 40; i++)
        cr_assert(rt_bucket_take(&b, &cfg, 1000, NULL), "take %d", i);
    uint32_t retry = 0;
    cr_assert_not(rt_bucket_take(&b, &cfg, 1000, &retry));
    /* 20 tokens/s: one token every 50 ms. */
    cr_assert_eq(retry, 50);
}

Test(bucket, retry_after_is_exact)
{
    struct rt_bucket b;
    rt_bucket_init(&b, &cfg, 0);
    for (int i = 0; i < 40; i++)
        rt_bucket_take(&b, &cfg, 0, NULL);
    uint32_t retry = 0;
    cr_assert_not(rt_bucket_take(&b, &cfg, 10, &retry));
    cr_assert_eq(retry, 40, "10 ms already refilled 0.2 tokens, 40 ms to go; got %u", retry);
    cr_assert_not(rt_bucket_take(&b, &cfg, 10 + retry - 1, NULL), "one ms early must fail");
    cr_assert(rt_bucket_take(&b, &cfg, 10 + retry, NULL), "on time must succeed");
}

Test(bucket, refill_saturates_at_burst)
{
    struct rt_bucket b;
    rt_bucket_init(&b, &cfg, 0);
    rt_bucket_take(&b, &cfg, 0, NULL);
    /* A day later the bucket holds burst tokens, not more. */
    uint64_t later = 86400000ull;
    int taken = 0;
    while (rt_bucket_take(&b, &cfg, later, NULL))
        taken++;
    cr_assert_eq(taken, 40);
}

Test(bucket, clock_going_backwards_refills_nothing)
{
    struct rt_bucket b;
    rt_bucket_init(&b, &cfg, 5000);
    for (int i = 0; i < 40; i++)
        rt_bucket_take(&b, &cfg, 5000, NULL);
    cr_assert_not(rt_bucket_take(&b, &cfg, 1000, NULL));
    cr_assert_not(rt_bucket_take(&b, &cfg, 5000, NULL));
    cr_assert(rt_bucket_take(&b, &cfg, 5050, NULL));
}

Test(bucket, rate_zero_is_unlimited)
{
    const struct rt_bucket_cfg off = {.rate = 0, .burst = 1};
    struct rt_bucket b;
    rt_bucket_init(&b, &off, 0);
    for (int i = 0; i < 10000; i++)
        cr_assert(rt_bucket_take(&b, &off, 0, NULL));
}

Test(bucket, slow_rate_rounds_retry_up)
{
    const struct rt_bucket_cfg slow = {.rate = 3, .burst = 1};
    struct rt_bucket b;
    rt_bucket_init(&b, &slow, 0);
    cr_assert(rt_bucket_take(&b, &slow, 0, NULL));
    uint32_t retry = 0;
    cr_assert_not(rt_bucket_take(&b, &slow, 0, &retry));
    cr_assert_eq(retry, 334, "1000/3 rounded up, got %u", retry);
    cr_assert(rt_bucket_take(&b, &slow, retry, NULL));
}

Test(errors, table_gives_reasons)
{
    cr_assert_str_eq(rt_error_reason(429), "rate_limited");
    cr_assert_str_eq(rt_error_reason(413), "too_large");
    cr_assert_str_eq(rt_error_reason(999), "error");
    cr_assert_eq(rt_error_index(400), 0);
    cr_assert_eq(rt_error_index(503), RT_N_ERRORS - 1);
}
