/*
 * bench_users: the CPU the users/ module itself spends, printed as one JSON
 * object. Not run by ctest; build it in a Release tree and run it by hand:
 *
 *   cmake --build build-rel --target bench_users
 *   ./build-rel/users/bench_users [publishes [members]]
 *
 * 1. Publishes: U users (one connection each on node A) publish P times in
 *    turn; every 20 ms of their schedule (3000 publishes a second) node A
 *    flushes its report and nodes B and C apply it (decode, charge their
 *    replicas): the fleet-wide limiter's whole CPU per publish, next to
 *    rt_bucket_take alone (the per-connection bucket) on the same schedule.
 * 2. Join storm: M members enter one channel on one node, each a watcher,
 *    with the events counted (not encoded): listed (cap M) and counting
 *    (the default cap, 1000).
 * Everything runs on one thread with an in-memory bus, so the numbers are
 * the module's own work: no sockets, no NATS, no encoding for clients.
 */
#include "users.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define USERS_N 100
#define NODES   3
#define QCAP    4096

struct qmsg {
    char subject[192];
    uint8_t *data;
    size_t len;
};

struct node {
    struct users *u;
    char id[16];
};

static struct node nodes[NODES];
static struct qmsg queue[QCAP];
static size_t queued;
static uint64_t events, deliveries;

static double cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static rt_status bus_publish(void *ctx, const char *subject, const char *reply, const uint8_t *data,
                             size_t len)
{
    (void)ctx;
    (void)reply;
    if (queued == QCAP)
        return RT_UNAVAILABLE;
    struct qmsg *m = &queue[queued++];
    snprintf(m->subject, sizeof(m->subject), "%s", subject);
    m->data = malloc(len);
    memcpy(m->data, data, len);
    m->len = len;
    return RT_OK;
}

static void *bus_subscribe(void *ctx, const char *subject)
{
    (void)subject;
    return ctx;
}

static void bus_unsubscribe(void *ctx, void *handle)
{
    (void)ctx;
    (void)handle;
}

/* Delivers what node `from` published to every other node (reports are broadcast). */
static void deliver(int from, uint64_t now)
{
    for (size_t i = 0; i < queued; i++) {
        for (int n = 0; n < NODES; n++)
            if (n != from && nodes[n].u)
                users_receive(nodes[n].u, queue[i].subject, NULL, queue[i].data, queue[i].len, now);
        free(queue[i].data);
    }
    queued = 0;
}

static void on_event(void *arg, const struct users_event *ev)
{
    (void)arg;
    events++;
    deliveries += ev->n_watchers;
}

static struct users *make(int i, bool bus, uint32_t rate, uint32_t max_members, uint64_t now)
{
    struct users_config cfg;
    memset(&cfg, 0, sizeof(cfg));
    snprintf(nodes[i].id, sizeof(nodes[i].id), "node%d", i);
    cfg.node = nodes[i].id;
    if (bus)
        cfg.bus = (struct users_bus){bus_publish, bus_subscribe, bus_unsubscribe, &nodes[i]};
    cfg.pub_rate = rate;
    cfg.pub_burst = rate;
    cfg.max_members = max_members;
    cfg.on_event = on_event;
    struct users *u = NULL;
    if (users_create(&cfg, now, &u) != RT_OK) {
        fprintf(stderr, "bench_users: users_create failed\n");
        exit(1);
    }
    return u;
}

static void open_conn(struct users *u, uint64_t id, uint64_t now)
{
    char user[16], client[16];
    snprintf(user, sizeof(user), "u%llu", (unsigned long long)id);
    snprintf(client, sizeof(client), "c%llu", (unsigned long long)id);
    struct users_conn_in in = {id, user, strlen(user), client, strlen(client), NULL, 0, false, now};
    uint32_t retry;
    if (users_conn_open(u, &in, now, &retry) != RT_OK) {
        fprintf(stderr, "bench_users: conn_open failed\n");
        exit(1);
    }
}

/* Per publish: node A's take and report plus B and C applying it, 3000 publishes a second. */
static double limiter_us(uint64_t publishes)
{
    uint64_t now = 1000000;
    for (int i = 0; i < NODES; i++)
        nodes[i].u = make(i, true, 1000000, 0, now);
    for (uint64_t c = 1; c <= USERS_N; c++)
        open_conn(nodes[0].u, c, now);
    for (int i = 0; i < NODES; i++)
        users_flush(nodes[i].u);
    deliver(0, now);
    const uint64_t per_flush = 60; /* 3000/s in 20 ms */
    uint32_t retry;
    uint64_t refused = 0;
    double t0 = cpu_s();
    for (uint64_t p = 0; p < publishes; p++) {
        refused += !users_pub_take(nodes[0].u, 1 + p % USERS_N, now, &retry);
        if (p % per_flush == per_flush - 1) {
            now += 20;
            users_flush(nodes[0].u);
            deliver(0, now);
        }
    }
    double t = cpu_s() - t0;
    if (refused)
        fprintf(stderr, "bench_users: %llu refused\n", (unsigned long long)refused);
    for (int i = 0; i < NODES; i++) {
        users_destroy(nodes[i].u);
        nodes[i].u = NULL;
    }
    queued = 0;
    return t * 1e6 / (double)publishes;
}

/* Per publish: the per-connection bucket alone, on the same schedule. */
static double bucket_us(uint64_t publishes)
{
    struct rt_bucket_cfg cfg = {1000000, 1000000};
    static struct rt_bucket b[USERS_N];
    uint64_t now = 1000000, ok = 0;
    for (int i = 0; i < USERS_N; i++)
        rt_bucket_init(&b[i], &cfg, now);
    uint32_t retry;
    double t0 = cpu_s();
    for (uint64_t p = 0; p < publishes; p++) {
        ok += rt_bucket_take(&b[p % USERS_N], &cfg, now, &retry);
        if (p % 60 == 59)
            now += 20;
    }
    double t = cpu_s() - t0;
    if (ok != publishes)
        fprintf(stderr, "bench_users: bucket refused\n");
    return t * 1e6 / (double)publishes;
}

/* M members join one channel on one node, each watching: seconds of CPU, events, deliveries. */
static void storm(uint32_t members, uint32_t cap, double *secs, uint64_t *ev, uint64_t *dl)
{
    uint64_t now = 1000000;
    struct users *u = make(0, false, 0, cap, now);
    for (uint64_t c = 1; c <= members; c++)
        open_conn(u, c, now);
    events = deliveries = 0;
    double t0 = cpu_s();
    for (uint64_t c = 1; c <= members; c++) {
        uint64_t ticket;
        bool ready;
        users_presence_want(u, "room", 4, now, &ticket, &ready);
        users_presence_enter(u, c, "room", 4);
    }
    *secs = cpu_s() - t0;
    *ev = events;
    *dl = deliveries;
    users_destroy(u);
}

int main(int argc, char **argv)
{
    uint64_t publishes = argc > 1 ? strtoull(argv[1], NULL, 10) : 3000000;
    uint32_t members = argc > 2 ? (uint32_t)strtoul(argv[2], NULL, 10) : 10000;
    double lim = limiter_us(publishes), bucket = bucket_us(publishes);
    double listed_s, counted_s;
    uint64_t listed_ev, listed_dl, counted_ev, counted_dl;
    storm(members, members, &listed_s, &listed_ev, &listed_dl);
    storm(members, 1000, &counted_s, &counted_ev, &counted_dl);
    printf("{\"publishes\":%llu,\"users\":%d,\"nodes\":%d,\"limiter_us_per_publish\":%.3f,"
           "\"bucket_us_per_publish\":%.4f,\"members\":%u,\"storm_listed_s\":%.3f,"
           "\"storm_listed_events\":%llu,\"storm_listed_deliveries\":%llu,"
           "\"storm_counted_s\":%.3f,\"storm_counted_events\":%llu,"
           "\"storm_counted_deliveries\":%llu}\n",
           (unsigned long long)publishes, USERS_N, NODES, lim, bucket, members, listed_s,
           (unsigned long long)listed_ev, (unsigned long long)listed_dl, counted_s,
           (unsigned long long)counted_ev, (unsigned long long)counted_dl);
    return 0;
}
