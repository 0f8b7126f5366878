/*
 * Randomized model test: random publishes, subscribes (plain and resumed),
 * unsubscribes, acks, pumps, reconnects, clock jumps and full outboxes on
 * several clients and channels, checked after every step against a model:
 *
 *   - on a durable subscription every event continues exactly where the
 *     last one ended: a msg is seq covered+1, a gap starts at covered+1
 *     (so each seq arrives at most once, in increasing order, and nothing
 *     is skipped without a gap);
 *   - fo_client_unacked equals the model's count and never exceeds the
 *     window;
 *   - at the end, with room everywhere and everything acked, every active
 *     durable subscription has covered its channel's latest seq.
 */
#include "helpers.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define N_CLIENTS   6
#define N_CHANNELS  4 /* m0..m2 durable, eph.0 ephemeral */
#define WINDOW      5
#define UNACKED_MAX 64
#define MAX_SUBS    3

static const char *const chan_names[N_CHANNELS] = {"m0", "m1", "m2", "eph.0"};
static const char *const eph_patterns[] = {"eph.>"};

struct msub {
    bool active;
    uint64_t covered;              /* last seq delivered or gapped */
    uint64_t unacked[UNACKED_MAX]; /* delivered, not acked, increasing */
    size_t n_unacked;
    /* What the client remembers across subscriptions, for since/epoch. */
    bool has_memory;
    uint64_t memory_seq;
    char memory_epoch[PROTO_EPOCH_MAX + 1];
};

struct model {
    struct tf_sink s;
    struct fo *fo;
    struct fo_client *c[N_CLIENTS];
    struct msub sub[N_CLIENTS][N_CHANNELS];
    /* Each channel as last seen with state: a freed one goes on from there. */
    struct fo_chan_info last[N_CHANNELS];
    bool has_last[N_CHANNELS];
    size_t seen; /* events of s already checked */
    uint64_t rng;
    unsigned seed;
    long step;
};

static uint32_t rnd(struct model *m, uint32_t n)
{
    m->rng ^= m->rng << 13;
    m->rng ^= m->rng >> 7;
    m->rng ^= m->rng << 17;
    return (uint32_t)(m->rng % n);
}

static int chan_index(const char *name)
{
    for (int i = 0; i < N_CHANNELS; i++) {
        if (strcmp(chan_names[i], name) == 0)
            return i;
    }
    cr_assert_fail("unknown channel %s", name);
    return -1;
}

static bool durable(int ch)
{
    return ch < 3;
}

static void check_msg(struct model *m, struct msub *ms, const struct tf_event *e)
{
    cr_assert_eq(e->seq, ms->covered + 1, "seed %u step %ld: conn %llu %s got seq %llu after %llu",
                 m->seed, m->step, (unsigned long long)e->conn, e->channel,
                 (unsigned long long)e->seq, (unsigned long long)ms->covered);
    ms->covered = e->seq;
    ms->memory_seq = e->seq;
    cr_assert_lt(ms->n_unacked, UNACKED_MAX);
    ms->unacked[ms->n_unacked++] = e->seq;
}

static void check_gap(struct model *m, struct msub *ms, const struct tf_event *e)
{
    cr_assert_eq(e->from, ms->covered + 1, "seed %u step %ld: gap from %llu after %llu", m->seed,
                 m->step, (unsigned long long)e->from, (unsigned long long)ms->covered);
    cr_assert_geq(e->to, e->from);
    ms->covered = e->to;
    ms->memory_seq = e->to;
}

/* Checks the events of the last step against the model. */
static void check_events(struct model *m)
{
    for (; m->seen < m->s.n; m->seen++) {
        const struct tf_event *e = &m->s.ev[m->seen];
        int ch = chan_index(e->channel);
        struct msub *ms = &m->sub[e->conn][ch];
        cr_assert(ms->active, "seed %u step %ld: event for conn %llu on %s, not subscribed",
                  m->seed, m->step, (unsigned long long)e->conn, e->channel);
        if (!durable(ch)) {
            cr_assert_eq(e->kind, TF_MSG);
            continue;
        }
        if (e->kind == TF_MSG)
            check_msg(m, ms, e);
        else
            check_gap(m, ms, e);
    }
}

static void check_window(struct model *m)
{
    for (int i = 0; i < N_CLIENTS; i++) {
        size_t want = 0;
        for (int ch = 0; ch < N_CHANNELS; ch++)
            want += m->sub[i][ch].active ? m->sub[i][ch].n_unacked : 0;
        uint32_t got = fo_client_unacked(m->c[i]);
        cr_assert_eq(got, want, "seed %u step %ld: conn %d unacked %u, model %zu", m->seed, m->step,
                     i, got, want);
        cr_assert_leq(got, WINDOW);
    }
}

static void op_publish(struct model *m)
{
    int ch = (int)rnd(m, N_CHANNELS);
    char id[16];
    bool with_id = rnd(m, 3) == 0;
    snprintf(id, sizeof(id), "id%u", rnd(m, 8));
    struct fo_pub_result r = tf_pub(m->fo, chan_names[ch], with_id ? id : NULL, "{}");
    cr_assert_eq(r.error, 0);
    cr_assert_eq(r.durable, durable(ch));
    if (!durable(ch))
        cr_assert_eq(r.seq, 0);
}

/* The engine's view of channel ch; false if the channel has no state. */
static bool info_of(struct model *m, int ch, struct fo_chan_info *info)
{
    struct fo_hnode *n = fo__htab_find(&m->fo->chans, chan_names[ch], strlen(chan_names[ch]));
    if (!n)
        return false;
    m->fo->ops->chan_info(m->fo->eng, FO__CONTAINER(n, struct fo_chan, node), info);
    return true;
}

static uint64_t latest_of(struct model *m, int ch)
{
    struct fo_chan_info info;
    return info_of(m, ch, &info) ? info.latest : 0;
}

/* What PROTOCOL.md says the reply's `recovered` must be. */
static bool expect_recovered(struct model *m, int ch, const struct msub *ms, const char *epoch)
{
    struct fo_chan_info info;
    if (!info_of(m, ch, &info)) {
        /* Freed (no subscriber, history or dedup entry): it comes back in the
         * same epoch at the same seq, with nothing left to replay. */
        if (!m->has_last[ch])
            return false;
        return strcmp(epoch, m->last[ch].epoch) == 0 && ms->memory_seq >= m->last[ch].latest;
    }
    return strcmp(epoch, info.epoch) == 0 && ms->memory_seq >= info.trimmed_through;
}

/* A resume that was answered recovered:true must replay without a gap. */
static void check_no_gap_since(struct model *m, size_t from, int i, int ch)
{
    for (size_t k = from; k < m->s.n; k++) {
        const struct tf_event *e = &m->s.ev[k];
        cr_assert(!(e->kind == TF_GAP && e->conn == (uint64_t)i &&
                    strcmp(e->channel, chan_names[ch]) == 0),
                  "seed %u step %ld: gap right after recovered:true", m->seed, m->step);
    }
}

static int active_subs(const struct model *m, int i)
{
    int n = 0;
    for (int ch = 0; ch < N_CHANNELS; ch++)
        n += m->sub[i][ch].active;
    return n;
}

static void op_subscribe(struct model *m, int i, int ch)
{
    struct msub *ms = &m->sub[i][ch];
    if (ms->active) {
        cr_assert_eq(tf_sub(m->c[i], chan_names[ch]).error, 409);
        return;
    }
    bool resume = durable(ch) && ms->has_memory && rnd(m, 4) != 0;
    bool bad_epoch = resume && rnd(m, 8) == 0;
    const char *epoch = bad_epoch ? "zzzzzzzz" : ms->memory_epoch;
    bool want_recovered = resume && expect_recovered(m, ch, ms, epoch);
    struct fo_sub_result r = resume ? tf_sub_since(m->c[i], chan_names[ch], ms->memory_seq, epoch)
                                    : tf_sub(m->c[i], chan_names[ch]);
    /* No 400: a since the client got in this epoch is never above latest,
     * and a new incarnation of the channel has a new epoch. */
    if (active_subs(m, i) >= MAX_SUBS) {
        cr_assert_eq(r.error, 403, "seed %u step %ld", m->seed, m->step);
        return;
    }
    cr_assert_eq(r.error, 0, "seed %u step %ld: error %d", m->seed, m->step, r.error);
    ms->active = true;
    ms->n_unacked = 0;
    if (!durable(ch))
        return;
    ms->covered = resume && r.recovered ? ms->memory_seq : r.seq;
    if (resume && r.recovered)
        cr_assert_leq(ms->memory_seq, r.seq);
    cr_assert_eq(r.recovered, want_recovered, "seed %u step %ld: recovered %d", m->seed, m->step,
                 r.recovered);
    ms->has_memory = true;
    ms->memory_seq = ms->covered;
    memcpy(ms->memory_epoch, r.epoch, sizeof(r.epoch));
    size_t mark = m->s.n;
    fo_client_pump(m->c[i]);
    if (r.recovered)
        check_no_gap_since(m, mark, i, ch);
}

static void op_unsubscribe(struct model *m, int i, int ch)
{
    struct msub *ms = &m->sub[i][ch];
    rt_status st = tf_unsub(m->c[i], chan_names[ch]);
    cr_assert_eq(st, ms->active ? RT_OK : RT_NOT_FOUND);
    check_events(m); /* the unsub may pump other channels */
    ms->active = false;
    ms->n_unacked = 0;
}

static void model_ack(struct msub *ms, uint64_t seq)
{
    size_t k = 0;
    while (k < ms->n_unacked && ms->unacked[k] <= seq)
        k++;
    memmove(ms->unacked, ms->unacked + k, (ms->n_unacked - k) * sizeof(uint64_t));
    ms->n_unacked -= k;
}

static void op_ack(struct model *m, int i, int ch)
{
    struct msub *ms = &m->sub[i][ch];
    if (!ms->active || !durable(ch) || ms->n_unacked == 0)
        return;
    uint64_t seq = ms->unacked[rnd(m, (uint32_t)ms->n_unacked)];
    model_ack(ms, seq); /* before: the ack may deliver more right away */
    cr_assert_eq(tf_ack(m->c[i], chan_names[ch], seq), RT_OK);
}

static void op_reconnect(struct model *m, int i)
{
    fo_client_destroy(m->c[i]);
    m->c[i] = tf_client(m->fo, (uint64_t)i);
    for (int ch = 0; ch < N_CHANNELS; ch++) {
        m->sub[i][ch].active = false;
        m->sub[i][ch].n_unacked = 0;
    }
}

static void op_outbox(struct model *m, int i)
{
    switch (rnd(m, 3)) {
    case 0:
        m->s.full[i] = !m->s.full[i];
        break;
    case 1:
        m->s.room[i] = (long)rnd(m, 4);
        break;
    default:
        m->s.full[i] = false;
        m->s.room[i] = -1;
        break;
    }
}

static void step(struct model *m)
{
    int i = (int)rnd(m, N_CLIENTS);
    int ch = (int)rnd(m, N_CHANNELS);
    uint32_t r = rnd(m, 100);
    if (r < 35)
        op_publish(m);
    else if (r < 50)
        op_subscribe(m, i, ch);
    else if (r < 57)
        op_unsubscribe(m, i, ch);
    else if (r < 77)
        op_ack(m, i, ch);
    else if (r < 87)
        fo_client_pump(m->c[i]);
    else if (r < 94)
        op_outbox(m, i);
    else if (r < 96)
        op_reconnect(m, i);
    else {
        tf_now += rnd(m, 400);
        fo_tick(m->fo, tf_now);
    }
    check_events(m);
    check_window(m);
}

/* Room everywhere, ack all, pump until nothing moves. */
static void settle(struct model *m)
{
    for (int i = 0; i < N_CLIENTS; i++) {
        m->s.full[i] = false;
        m->s.room[i] = -1;
    }
    size_t before;
    do {
        before = m->s.n;
        for (int i = 0; i < N_CLIENTS; i++) {
            for (int ch = 0; ch < 3; ch++) {
                struct msub *ms = &m->sub[i][ch];
                if (ms->active && ms->n_unacked) {
                    uint64_t last = ms->unacked[ms->n_unacked - 1];
                    model_ack(ms, last);
                    tf_ack(m->c[i], chan_names[ch], last);
                    check_events(m);
                }
            }
            fo_client_pump(m->c[i]);
            check_events(m);
        }
    } while (m->s.n != before);
}

static void check_complete(struct model *m)
{
    for (int i = 0; i < N_CLIENTS; i++) {
        for (int ch = 0; ch < 3; ch++) {
            const struct msub *ms = &m->sub[i][ch];
            if (!ms->active)
                continue;
            cr_assert_eq(ms->covered, latest_of(m, ch),
                         "seed %u: conn %d on %s covered %llu of %llu", m->seed, i, chan_names[ch],
                         (unsigned long long)ms->covered, (unsigned long long)latest_of(m, ch));
        }
    }
}

static void run(unsigned seed, long steps)
{
    struct model *m = calloc(1, sizeof(*m));
    m->seed = seed;
    m->rng = 0x9e3779b97f4a7c15ull ^ ((uint64_t)seed * 0x2545f4914f6cdd1dull);
    struct fo_config cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.ephemeral = eph_patterns;
    cfg.n_ephemeral = 1;
    cfg.max_unacked = WINDOW;
    cfg.history_max = 8;
    cfg.history_max_age_ms = 20000;
    cfg.dedup_window_ms = 3000;
    cfg.dedup_max_entries = 16;
    cfg.max_subs = MAX_SUBS;
    tf_sink_init(&m->s);
    m->fo = tf_fo(&cfg, &m->s);
    for (int i = 0; i < N_CLIENTS; i++)
        m->c[i] = tf_client(m->fo, (uint64_t)i);
    for (m->step = 0; m->step < steps; m->step++) {
        step(m);
        for (int ch = 0; ch < N_CHANNELS; ch++)
            if (durable(ch) && info_of(m, ch, &m->last[ch]))
                m->has_last[ch] = true;
        if (m->step % 5000 == 4999) {
            /* Keep the recording small: checked events can go. */
            tf_sink_free(&m->s);
            m->seen = 0;
        }
    }
    settle(m);
    check_complete(m);
    for (int i = 0; i < N_CLIENTS; i++)
        fo_client_destroy(m->c[i]);
    struct fo_stats st;
    fo_get_stats(m->fo, &st);
    cr_assert_eq(st.subscriptions, 0);
    tf_sink_free(&m->s);
    fo_destroy(m->fo);
    free(m);
}

Test(model, random_operations_keep_the_invariants, .timeout = 120)
{
    for (unsigned seed = 1; seed <= 40; seed++)
        run(seed, 25000);
}
