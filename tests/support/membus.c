/*
 * membus.c: the tests' in-memory bus (membus.h): per-publisher rings,
 * subscriptions matched as NATS matches them, delivery when the test says.
 */
#include "membus.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void membus_init(struct membus *b, int n_ports, membus_below_fn below, void *rng)
{
    cr_assert(n_ports > 0 && n_ports <= MEMBUS_PORTS);
    memset(b, 0, sizeof(*b));
    b->n_ports = n_ports;
    b->below = below;
    b->rng = rng;
}

static void queue_clear(struct membus_queue *q)
{
    for (size_t k = 0; k < q->n; k++)
        free(q->v[(q->head + k) % q->cap].data);
    q->n = 0;
}

void membus_free(struct membus *b)
{
    for (int i = 0; i < MEMBUS_PORTS; i++) {
        queue_clear(&b->q[i]);
        free(b->q[i].v);
        b->q[i].v = NULL;
        b->q[i].cap = 0;
    }
    for (size_t k = 0; k < b->n_subs; k++)
        free(b->subs[k]);
    b->n_subs = 0;
}

void membus_attach(struct membus *b, struct membus_port *p, int idx, membus_receive_fn receive)
{
    cr_assert(idx >= 0 && idx < b->n_ports);
    p->bus = b;
    p->idx = idx;
    p->up = true;
    p->fail_publish = false;
    p->gen = 0;
    p->receive = receive;
}

void membus_drop_queue(struct membus_port *p)
{
    queue_clear(&p->bus->q[p->idx]);
}

rt_status membus_publish(void *port, const char *subject, const char *reply, const uint8_t *data,
                         size_t len)
{
    struct membus_port *p = port;
    if (!p->up)
        return RT_OK; /* cut off: lost on the way */
    if (p->fail_publish)
        return RT_UNAVAILABLE;
    struct membus_queue *q = &p->bus->q[p->idx];
    if (q->n == q->cap) {
        size_t ncap = q->cap ? q->cap * 2 : 64;
        struct membus_msg *v = calloc(ncap, sizeof(*v));
        cr_assert_not_null(v);
        for (size_t i = 0; i < q->n; i++)
            v[i] = q->v[(q->head + i) % q->cap];
        free(q->v);
        q->v = v;
        q->head = 0;
        q->cap = ncap;
    }
    struct membus_msg *m = &q->v[(q->head + q->n++) % q->cap];
    snprintf(m->subject, sizeof(m->subject), "%s", subject);
    snprintf(m->reply, sizeof(m->reply), "%s", reply ? reply : "");
    m->data = malloc(len ? len : 1);
    cr_assert_not_null(m->data);
    memcpy(m->data, data, len);
    m->len = len;
    return RT_OK;
}

void *membus_subscribe(void *port, const char *subject)
{
    struct membus_port *p = port;
    struct membus *b = p->bus;
    cr_assert_lt(b->n_subs, MEMBUS_SUBS);
    struct membus_sub *s = calloc(1, sizeof(*s));
    cr_assert_not_null(s);
    s->port = p;
    s->live = true;
    snprintf(s->subject, sizeof(s->subject), "%s", subject);
    b->subs[b->n_subs++] = s;
    return s;
}

void membus_unsubscribe(void *port, void *sub)
{
    (void)port;
    ((struct membus_sub *)sub)->live = false;
}

bool membus_match(const char *pattern, const char *subject)
{
    while (*pattern && *subject) {
        const char *pe = strchr(pattern, '.'), *se = strchr(subject, '.');
        size_t pl = pe ? (size_t)(pe - pattern) : strlen(pattern);
        size_t sl = se ? (size_t)(se - subject) : strlen(subject);
        if (pl == 1 && pattern[0] == '>')
            return true;
        if (!(pl == 1 && pattern[0] == '*') && (pl != sl || memcmp(pattern, subject, pl) != 0))
            return false;
        pattern += pl + (pe ? 1 : 0);
        subject += sl + (se ? 1 : 0);
        if (!pe || !se)
            return !pe && !se;
    }
    return !*pattern && !*subject;
}

bool membus_deliver_one(struct membus *b, int i)
{
    struct membus_queue *q = &b->q[i];
    if (!q->n)
        return false;
    struct membus_msg m = q->v[q->head];
    q->head = (q->head + 1) % q->cap;
    q->n--;
    for (size_t k = 0; k < b->n_subs; k++) {
        struct membus_sub *s = b->subs[k];
        struct membus_port *to = s->port;
        if (!s->live || !to->up || !to->receive || !membus_match(s->subject, m.subject))
            continue;
        if (b->drop_pct && to->idx == b->drop_port && b->below(b->rng, 100) < b->drop_pct) {
            to->gen++; /* the receiver learns it lost something (slow consumer) */
            b->dropped++;
            continue;
        }
        b->delivered++;
        to->receive(to, m.subject, m.reply[0] ? m.reply : NULL, m.data, m.len);
    }
    free(m.data);
    return true;
}

size_t membus_copy_queued(const struct membus *b, struct membus_msg *out, size_t cap)
{
    size_t n = 0;
    for (int i = 0; i < MEMBUS_PORTS; i++) {
        const struct membus_queue *q = &b->q[i];
        for (size_t k = 0; k < q->n && n < cap; k++) {
            const struct membus_msg *m = &q->v[(q->head + k) % q->cap];
            out[n] = *m;
            out[n].data = malloc(m->len ? m->len : 1);
            cr_assert_not_null(out[n].data);
            memcpy(out[n++].data, m->data, m->len);
        }
    }
    return n;
}

size_t membus_pending(const struct membus *b)
{
    size_t n = 0;
    for (int i = 0; i < MEMBUS_PORTS; i++)
        n += b->q[i].n;
    return n;
}

void membus_pump(struct membus *b)
{
    for (long guard = 0; membus_pending(b) && guard < 10000000; guard++)
        membus_deliver_one(b, (int)b->below(b->rng, (size_t)b->n_ports));
    cr_assert_eq(membus_pending(b), 0);
}
