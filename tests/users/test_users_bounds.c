/*
 * What another node on the bus can make this node keep (users/): a hostile
 * or broken node sends well-formed reports and presence deltas naming as
 * many users, connections and members as it likes. The tables they feed stay
 * within the module's bounds (max_users for each kind of remote entry, and a
 * user's connections on one node past the limit are not kept: they could
 * never change a decision).
 */
#include "users.h"
#include "users_wire.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

static uint64_t now_ms = 5000000;

static rt_status publish_nothing(void *ctx, const char *subject, const char *reply,
                                 const uint8_t *data, size_t len)
{
    (void)ctx, (void)subject, (void)reply, (void)data, (void)len;
    return RT_OK;
}

static int handles;

static void *subscribe_any(void *ctx, const char *subject)
{
    (void)ctx, (void)subject;
    return &handles;
}

static void unsubscribe_any(void *ctx, void *handle)
{
    (void)ctx, (void)handle;
}

static struct users *node(uint32_t max_conns, uint32_t max_users)
{
    struct users_config cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.node = "here";
    cfg.bus = (struct users_bus){publish_nothing, subscribe_any, unsubscribe_any, NULL};
    cfg.max_conns = max_conns;
    cfg.max_users = max_users;
    struct users *u = NULL;
    cr_assert_eq(users_create(&cfg, now_ms, &u), RT_OK);
    return u;
}

static void receive(struct users *u, const char *subject, const struct proto_buf *b)
{
    users_receive(u, subject, NULL, b->data, b->len, now_ms);
}

static struct users_stats stats(const struct users *u)
{
    struct users_stats st;
    users_get_stats(u, &st);
    return st;
}

/* A presence delta from node `from` for channel: n users, one connection each. */
static void delta(struct users *u, const char *from, const char *channel, int first, int n)
{
    struct proto_buf b;
    proto_buf_init(&b, 0);
    struct users_wire_writer w;
    users_wire_delta_begin(&w, &b, from, strlen(from), channel, strlen(channel));
    static const char info[] = "{\"k\":1}";
    for (int i = first; i < first + n; i++) {
        char user[32];
        int len = snprintf(user, sizeof(user), "user%d", i);
        users_wire_put_member(&w, (uint64_t)i + 1, user, (size_t)len, 1, (const uint8_t *)info,
                              sizeof(info) - 1);
    }
    cr_assert_eq(users_wire_end(&w, false), RT_OK);
    char subject[USERS_WIRE_SUBJECT_MAX];
    users_wire_presence_subject(subject, sizeof(subject), channel, strlen(channel));
    receive(u, subject, &b);
    proto_buf_free(&b);
}

Test(users_bounds, members_held_by_other_nodes_are_bounded)
{
    struct users *u = node(0, 100);
    uint64_t ticket = 0;
    bool ready = false;
    cr_assert_eq(users_presence_want(u, "room", 4, now_ms, &ticket, &ready), RT_OK);
    delta(u, "evil", "room", 0, 1000);
    cr_assert_leq(stats(u).members, 100, "members kept: %llu",
                  (unsigned long long)stats(u).members);
    cr_assert_geq(stats(u).members_untracked, 900);
    delta(u, "evil2", "room", 0, 1000); /* the same users, held by another node */
    cr_assert_leq(stats(u).members, 100);
    /* Leaves free the places: another node's members are taken again. */
    struct proto_buf b;
    proto_buf_init(&b, 0);
    struct users_wire_writer w;
    users_wire_delta_begin(&w, &b, "evil", 4, "room", 4);
    for (int i = 0; i < 1000; i++) {
        char user[32];
        int len = snprintf(user, sizeof(user), "user%d", i);
        users_wire_put_member(&w, 5000, user, (size_t)len, 0, NULL, 0);
    }
    cr_assert_eq(users_wire_end(&w, false), RT_OK);
    char subject[USERS_WIRE_SUBJECT_MAX];
    users_wire_presence_subject(subject, sizeof(subject), "room", 4);
    receive(u, subject, &b);
    proto_buf_free(&b);
    delta(u, "honest", "room", 2000, 50);
    cr_assert_geq(stats(u).members, 50, "a place given back is usable again");
    users_destroy(u);
}

/* A connections report from `from`: users first..first+n-1, k connections each. */
static void report(struct users *u, const char *from, int first, int n, int k)
{
    struct users_wire_conn *conns = calloc((size_t)k, sizeof(*conns));
    char(*ids)[16] = calloc((size_t)k, sizeof(*ids));
    cr_assert(conns && ids);
    for (int j = 0; j < k; j++) {
        int len = snprintf(ids[j], sizeof(ids[j]), "c%d", j);
        conns[j] = (struct users_wire_conn){1764000000000ull + (uint64_t)j, ids[j], (size_t)len};
    }
    struct proto_buf b;
    proto_buf_init(&b, 0);
    struct users_wire_writer w;
    users_wire_conns_begin(&w, &b, from, strlen(from), false);
    for (int i = first; i < first + n; i++) {
        char user[32];
        int len = snprintf(user, sizeof(user), "user%d", i);
        users_wire_put_user(&w, user, (size_t)len, true, conns, (size_t)k, 0);
    }
    cr_assert_eq(users_wire_end(&w, false), RT_OK);
    receive(u, USERS_WIRE_SUBJ_CONNS, &b);
    proto_buf_free(&b);
    free(conns);
    free(ids);
}

Test(users_bounds, other_nodes_connections_are_bounded)
{
    struct users *u = node(2, 100);
    report(u, "evil", 0, 1, 4096); /* one user, 4096 connections: two could matter here */
    cr_assert_leq(stats(u).remote_conns, 2, "kept: %llu",
                  (unsigned long long)stats(u).remote_conns);
    report(u, "evil", 1, 99, 2);
    report(u, "evil2", 0, 100, 2);
    cr_assert_leq(stats(u).remote_conns, 100, "kept: %llu",
                  (unsigned long long)stats(u).remote_conns);
    /* The limit still holds for a user whose places are known. */
    struct users_conn_in in = {1, "user0", 5, "mine", 4, NULL, 0, false, 1764000000000ull};
    uint32_t retry = 0;
    cr_assert_eq(users_conn_open(u, &in, now_ms, &retry), RT_LIMIT);
    users_destroy(u);

    u = node(0, 100); /* no connection limit: nobody's list is kept */
    report(u, "evil", 0, 50, 10);
    cr_assert_eq(stats(u).remote_conns, 0);
    users_destroy(u);
}
