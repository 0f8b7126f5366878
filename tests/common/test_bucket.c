#include "rt.h"

#include <criterion/criterion.h>
#include <stdlib.h>

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

Test(bucket, a_charge_refills_first_then_goes_into_debt_down_to_the_floor)
{
    const struct rt_bucket_cfg c10 = {.rate = 10, .burst = 5};
    struct rt_bucket b;
    rt_bucket_init(&b, &c10, 0);
    for (int i = 0; i < 5; i++)
        cr_assert(rt_bucket_take(&b, &c10, 0, NULL));
    /* 1 s later the bucket is full again (5): a charge of 3 spent elsewhere leaves 2. */
    rt_bucket_charge(&b, &c10, 1000, 3, 100);
    cr_assert(rt_bucket_take(&b, &c10, 1000, NULL));
    cr_assert(rt_bucket_take(&b, &c10, 1000, NULL));
    cr_assert_not(rt_bucket_take(&b, &c10, 1000, NULL));
    /* Into debt: 7 more make -7; the next token comes after 8 tokens of refill. */
    rt_bucket_charge(&b, &c10, 1000, 7, 100);
    uint32_t retry = 0;
    cr_assert_not(rt_bucket_take(&b, &c10, 1000, &retry));
    cr_assert_eq(retry, 800);
    cr_assert_not(rt_bucket_take(&b, &c10, 1799, NULL));
    cr_assert(rt_bucket_take(&b, &c10, 1800, NULL));
    /* The floor bounds the debt, whatever is charged. */
    rt_bucket_charge(&b, &c10, 1800, UINT64_MAX, 20);
    cr_assert_not(rt_bucket_take(&b, &c10, 1800, &retry));
    cr_assert_eq(retry, 2100);
    rt_bucket_charge(&b, &c10, 1800, 1, 20);
    cr_assert_not(rt_bucket_take(&b, &c10, 1800, &retry));
    cr_assert_eq(retry, 2100, "still at the floor");
    /* rate 0: no bucket, nothing to charge. */
    const struct rt_bucket_cfg off = {.rate = 0, .burst = 1};
    rt_bucket_charge(&b, &off, 0, 1000, 1000);
}

Test(grow, doubles_from_four_until_it_holds_what_is_needed)
{
    int *v = NULL;
    uint32_t cap = 0;
    cr_assert(rt_grow((void **)&v, &cap, 1, sizeof(*v)));
    cr_assert_eq(cap, 4);
    cr_assert(rt_grow((void **)&v, &cap, 4, sizeof(*v)));
    cr_assert_eq(cap, 4, "room enough: nothing moves");
    cr_assert(rt_grow((void **)&v, &cap, 33, sizeof(*v)));
    cr_assert_eq(cap, 64);
    v[32] = 7;
    cr_assert_not(rt_grow((void **)&v, &cap, UINT32_MAX / 2 + 1, sizeof(*v)),
                  "past what doubling can reach: false, the array as it was");
    cr_assert(cap == 64 && v[32] == 7);
    free(v);
}

Test(errors, table_gives_reasons)
{
    cr_assert_str_eq(rt_error_reason(429), "rate_limited");
    cr_assert_str_eq(rt_error_reason(413), "too_large");
    cr_assert_str_eq(rt_error_reason(999), "error");
    cr_assert_eq(rt_error_index(400), 0);
    cr_assert_eq(rt_error_index(503), RT_N_ERRORS - 1);
}
