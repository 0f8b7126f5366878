/*
 * membus.h: an in-memory bus for the tests that run several fleet nodes in
 * one process (tests/geo/test_fleet.c, tests/users/test_users.c): NATS's
 * subject matching (tokens, `*`, `>`) and its one promise of order (a
 * publisher's messages arrive in the order it sent them), with the
 * interleaving of publishers, lost messages and cut-off nodes chosen by the
 * test. Nothing moves until the test delivers (membus_deliver_one,
 * membus_pump). Single-threaded; failures are Criterion assertions.
 */
#ifndef TESTS_MEMBUS_H
#define TESTS_MEMBUS_H

#include "rt.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MEMBUS_PORTS       8    /* nodes on one bus */
#define MEMBUS_SUBS        4096 /* subscriptions, live or not, on one bus */
#define MEMBUS_SUBJECT_MAX 192

struct membus_port;

/* A message handed to a node. */
typedef void (*membus_receive_fn)(struct membus_port *to, const char *subject, const char *reply,
                                  const uint8_t *data, size_t len);

/* One node's place on the bus; the test's node struct embeds it. */
struct membus_port {
    struct membus *bus;
    int idx;                   /* its publisher queue: 0..MEMBUS_PORTS-1 */
    bool up;                   /* false: cut off, what it sends and what is sent to it is lost */
    bool fail_publish;         /* its publishes fail, and it is told */
    uint64_t gen;              /* moves when a message to it is lost (its bus generation) */
    membus_receive_fn receive; /* NULL: nobody there */
};

struct membus_msg {
    char subject[MEMBUS_SUBJECT_MAX];
    char reply[MEMBUS_SUBJECT_MAX];
    uint8_t *data;
    size_t len;
};

/* One publisher's messages not delivered yet (a ring). */
struct membus_queue {
    struct membus_msg *v;
    size_t head, n, cap;
};

struct membus_sub {
    struct membus_port *port;
    char subject[MEMBUS_SUBJECT_MAX];
    bool live;
};

/* The test's seeded generator: a number in [0, n). */
typedef size_t (*membus_below_fn)(void *rng, size_t n);

struct membus {
    int n_ports; /* queues the pump picks among */
    struct membus_queue q[MEMBUS_PORTS];
    struct membus_sub *subs[MEMBUS_SUBS];
    size_t n_subs;
    membus_below_fn below;
    void *rng;
    unsigned drop_pct; /* of the messages to port drop_port: lost, and its gen moves */
    int drop_port;
    uint64_t delivered, dropped;
};

/* An empty bus of n_ports publishers, choosing with below(rng, n). */
void membus_init(struct membus *b, int n_ports, membus_below_fn below, void *rng);
/* Frees what is queued and the subscriptions (the ports are the test's). */
void membus_free(struct membus *b);
/* Attaches p as publisher idx: up, generation 0, messages go to receive. */
void membus_attach(struct membus *b, struct membus_port *p, int idx, membus_receive_fn receive);
/* What p had not sent yet is lost (its process died). */
void membus_drop_queue(struct membus_port *p);

/* The bus operations a module is given, with the port as their context. */
rt_status membus_publish(void *port, const char *subject, const char *reply, const uint8_t *data,
                         size_t len);
void *membus_subscribe(void *port, const char *subject);
void membus_unsubscribe(void *port, void *sub);

/* NATS's rule: does the subscription subject `pattern` take `subject`? */
bool membus_match(const char *pattern, const char *subject);
/* Delivers the oldest message of publisher i to every live matching subscription of a port that
 * is up; false when that queue was empty. */
bool membus_deliver_one(struct membus *b, int i);
/* Copies the messages not delivered yet (publisher by publisher, each in its order) into out,
 * at most cap of them; their data are the caller's to free. How many. */
size_t membus_copy_queued(const struct membus *b, struct membus_msg *out, size_t cap);
/* Messages not delivered yet, all publishers. */
size_t membus_pending(const struct membus *b);
/* Delivers everything, publishers interleaved at random (asserts it ends). */
void membus_pump(struct membus *b);

#endif
