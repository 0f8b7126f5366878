/* What the server API shows of the registry (introspect.c): pages of
 * channels in name order, and one channel's subscribers, seq and epoch. */
#include "helpers.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

static const char *const pats[] = {"eph.>"};

static struct fo *make(struct tf_sink *s)
{
    struct fo_config cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.ephemeral = pats;
    cfg.n_ephemeral = 1;
    tf_sink_init(s);
    return tf_fo(&cfg, s);
}

static void expect_name(const struct fo_channel_view *v, const char *name)
{
    cr_assert_eq(v->name_len, strlen(name), "%.*s != %s", (int)v->name_len, v->name, name);
    cr_assert_eq(memcmp(v->name, name, v->name_len), 0);
}

Test(introspect, one_channel_shows_subscribers_seq_and_epoch)
{
    struct tf_sink s;
    struct fo *fo = make(&s);
    struct fo_client *a = tf_client(fo, 1), *b = tf_client(fo, 2);
    tf_sub(a, "chat.room1");
    struct fo_sub_result sr = tf_sub(b, "chat.room1");
    tf_pub(fo, "chat.room1", NULL, "1");
    tf_pub(fo, "chat.room1", NULL, "2");
    tf_sub(a, "eph.x");

    struct fo_channel_view v;
    cr_assert_eq(fo_channel_get(fo, "chat.room1", 10, &v), RT_OK);
    cr_assert(v.active && v.durable);
    cr_assert_eq(v.subscribers, 2);
    cr_assert_eq(v.latest, 2);
    cr_assert_eq(v.oldest, 1);
    cr_assert_str_eq(v.epoch, sr.epoch);

    cr_assert_eq(fo_channel_get(fo, "eph.x", 5, &v), RT_OK);
    cr_assert(v.active && !v.durable);
    cr_assert_eq(v.subscribers, 1);
    cr_assert_eq(v.latest, 0);

    /* Unknown: not found, but durable is still said by the patterns. */
    cr_assert_eq(fo_channel_get(fo, "eph.none", 8, &v), RT_NOT_FOUND);
    cr_assert(!v.active && !v.durable);
    cr_assert_eq(fo_channel_get(fo, "none", 4, &v), RT_NOT_FOUND);
    cr_assert(!v.active && v.durable);

    /* An unsubscribe is seen at once. */
    tf_unsub(b, "chat.room1");
    cr_assert_eq(fo_channel_get(fo, "chat.room1", 10, &v), RT_OK);
    cr_assert_eq(v.subscribers, 1);
    fo_client_destroy(a);
    fo_client_destroy(b);
    tf_sink_free(&s);
    fo_destroy(fo);
}

Test(introspect, pages_cover_every_channel_once_in_name_order)
{
    struct tf_sink s;
    struct fo *fo = make(&s);
    struct fo_client *c = tf_client(fo, 1);
    char name[32];
    /* 250 channels inserted out of order, plus some outside the prefix. */
    for (int i = 0; i < 250; i++) {
        snprintf(name, sizeof name, "eph.c%03d", (i * 37) % 250);
        tf_sub(c, name);
    }
    tf_sub(c, "eph");
    tf_sub(c, "zzz");
    tf_sub(c, "eph_other");

    struct fo_channel_view v[FO_LIST_MAX];
    struct fo_list_req req = {.prefix = "eph.", .prefix_len = 4, .limit = 100};
    size_t n = 0, seen = 0;
    bool more = true;
    char last[32] = "";
    for (int page = 0; more; page++) {
        cr_assert_lt(page, 3);
        cr_assert_eq(fo_channel_list(fo, &req, v, &n, &more), RT_OK);
        cr_assert_eq(n, page < 2 ? 100 : 50);
        for (size_t i = 0; i < n; i++) {
            snprintf(name, sizeof name, "eph.c%03zu", seen++);
            expect_name(&v[i], name);
            cr_assert_eq(v[i].subscribers, 1);
            cr_assert(v[i].active && !v[i].durable);
        }
        snprintf(last, sizeof last, "%.*s", (int)v[n - 1].name_len, v[n - 1].name);
        req.after = last;
        req.after_len = strlen(last);
    }
    cr_assert_eq(seen, 250);

    /* No prefix: everything, "eph" before "eph.c000" before "eph_other" before "zzz". */
    struct fo_list_req all = {.limit = FO_LIST_MAX};
    cr_assert_eq(fo_channel_list(fo, &all, v, &n, &more), RT_OK);
    cr_assert_eq(n, 253);
    cr_assert_not(more);
    expect_name(&v[0], "eph");
    expect_name(&v[1], "eph.c000");
    expect_name(&v[251], "eph_other");
    expect_name(&v[252], "zzz");

    struct fo_list_req bad = {.limit = 0};
    cr_assert_eq(fo_channel_list(fo, &bad, v, &n, &more), RT_INVAL);
    bad.limit = FO_LIST_MAX + 1;
    cr_assert_eq(fo_channel_list(fo, &bad, v, &n, &more), RT_INVAL);
    fo_client_destroy(c);
    tf_sink_free(&s);
    fo_destroy(fo);
}
