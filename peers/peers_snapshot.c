/*
 * peers_snapshot.c: the nodes a snapshot was asked of (peers.h), and how
 * far each one's answer got: asked, first chunk in (with the node's change
 * number then, the watermark), last chunk in or gone. When the snapshot is
 * over and what its end drops (what the answers did not name) is the
 * owner's. The owner's thread.
 */
#include "peers.h"

#include <stdlib.h>
#include <string.h>

void peers_snapshot_clear(struct peers_snapshot *s)
{
    free(s->answers);
    s->answers = NULL;
    s->n_answers = s->cap_answers = 0;
}

void peers_snapshot_renew(struct peers_snapshot *s, uint64_t req)
{
    s->req = req;
    s->n_answers = 0;
}

struct peers_answer *peers_snapshot_find(const struct peers_snapshot *s, uint64_t token)
{
    for (uint32_t i = 0; i < s->n_answers; i++)
        if (s->answers[i].token == token)
            return &s->answers[i];
    return NULL;
}

/* token's entry, made (not answered, not done) when it has none. */
static struct peers_answer *entry_of(struct peers_snapshot *s, uint64_t token)
{
    struct peers_answer *a = peers_snapshot_find(s, token);
    if (a)
        return a;
    if (!rt_grow((void **)&s->answers, &s->cap_answers, s->n_answers + 1, sizeof(*s->answers)))
        return NULL;
    a = &s->answers[s->n_answers++];
    memset(a, 0, sizeof(*a));
    a->token = token;
    return a;
}

void peers_snapshot_ask(struct peers_snapshot *s, const struct peers_table *t,
                        const struct peers_node *one, uint64_t deadline)
{
    s->deadline = deadline;
    if (one) {
        struct peers_answer *a = entry_of(s, one->token);
        if (a)
            a->answered = a->done = false;
        return;
    }
    for (const struct peers_node *nd = t->list; nd; nd = nd->next)
        entry_of(s, nd->token);
}

struct peers_answer *peers_snapshot_answer(struct peers_snapshot *s, uint64_t token,
                                           uint64_t watermark)
{
    struct peers_answer *a = entry_of(s, token);
    if (!a || a->done)
        return NULL;
    if (!a->answered) {
        a->answered = true;
        a->watermark = watermark;
    }
    return a;
}

void peers_snapshot_forget(struct peers_snapshot *s, uint64_t token)
{
    struct peers_answer *a = peers_snapshot_find(s, token);
    if (a && !a->done) {
        a->done = true;
        a->answered = false; /* nothing of it to keep or sweep */
    }
}

bool peers_snapshot_partial(const struct peers_snapshot *s)
{
    for (uint32_t i = 0; i < s->n_answers; i++)
        if (!s->answers[i].done)
            return true;
    return false;
}

bool peers_snapshot_over(const struct peers_snapshot *s, uint64_t now, uint64_t warm_until)
{
    return (!peers_snapshot_partial(s) && now >= warm_until) || now >= s->deadline;
}
