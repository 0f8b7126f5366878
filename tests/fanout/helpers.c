#include "helpers.h"

#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

uint64_t tf_now = 1000000;

uint64_t tf_clock(void *ctx)
{
    (void)ctx;
    return tf_now;
}

void tf_sink_init(struct tf_sink *s)
{
    memset(s, 0, sizeof(*s));
    for (size_t i = 0; i < TF_MAX_CONN; i++)
        s->room[i] = -1;
}

void tf_sink_free(struct tf_sink *s)
{
    for (size_t i = 0; i < s->n; i++)
        fo_msg_release(s->ev[i].msg);
    free(s->ev);
    s->ev = NULL;
    s->n = s->cap = 0;
}

static struct tf_event *push_event(struct tf_sink *s)
{
    if (s->n == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 64;
        s->ev = realloc(s->ev, s->cap * sizeof(*s->ev));
        cr_assert_not_null(s->ev);
    }
    struct tf_event *e = &s->ev[s->n++];
    memset(e, 0, sizeof(*e));
    return e;
}

/* The outbox of conn takes one more frame, or says RT_AGAIN. */
static bool take_room(struct tf_sink *s, uint64_t conn)
{
    cr_assert_lt(conn, TF_MAX_CONN);
    if (s->full[conn] || s->room[conn] == 0) {
        s->refused++;
        return false;
    }
    if (s->room[conn] > 0)
        s->room[conn]--;
    return true;
}

static rt_status tf_deliver(void *ctx, uint64_t conn, struct fo_msg *m)
{
    struct tf_sink *s = ctx;
    if (!take_room(s, conn))
        return RT_AGAIN;
    struct tf_event *e = push_event(s);
    e->kind = TF_MSG;
    e->conn = conn;
    memcpy(e->channel, m->channel, m->channel_len + 1);
    e->seq = m->seq;
    e->msg = fo_msg_retain(m);
    if (s->build_frames) {
        uint8_t *data = NULL;
        cr_assert_eq(fo_msg_frame(m, s->codec[conn], &data, &e->frame_len), RT_OK);
        e->frame = data;
    }
    if (s->hook)
        s->hook(s, conn, m);
    return RT_OK;
}

static rt_status tf_gap(void *ctx, uint64_t conn, const char *channel, uint64_t from, uint64_t to)
{
    struct tf_sink *s = ctx;
    if (!take_room(s, conn))
        return RT_AGAIN;
    struct tf_event *e = push_event(s);
    e->kind = TF_GAP;
    e->conn = conn;
    strncpy(e->channel, channel, PROTO_CHANNEL_MAX);
    e->from = from;
    e->to = to;
    return RT_OK;
}

static void tf_pub_done(void *ctx, uint64_t conn, int64_t req_id, const struct fo_pub_result *res)
{
    (void)conn;
    (void)req_id;
    (void)res;
    ((struct tf_sink *)ctx)->pub_done++;
}

static void tf_sub_done(void *ctx, uint64_t conn, int64_t req_id, const struct fo_sub_result *res)
{
    struct tf_sink *s = ctx;
    cr_assert_lt(s->n_sub_done, TF_MAX_SUB_DONE);
    struct tf_sub_done *d = &s->sub_done[s->n_sub_done++];
    d->conn = conn;
    d->req_id = req_id;
    d->res = *res;
    d->events_before = s->n;
}

struct fo_sink tf_sink_ops(struct tf_sink *s)
{
    struct fo_sink k = {.ctx = s,
                        .deliver = tf_deliver,
                        .gap = tf_gap,
                        .pub_done = tf_pub_done,
                        .sub_done = tf_sub_done};
    return k;
}

struct fo *tf_fo(const struct fo_config *cfg, struct tf_sink *s)
{
    struct fo_config def;
    memset(&def, 0, sizeof(def));
    struct fo_sink sink = tf_sink_ops(s);
    struct fo *fo = NULL;
    cr_assert_eq(fo_create(cfg ? cfg : &def, &sink, &fo), RT_OK);
    fo__set_clock(fo, tf_clock, NULL);
    return fo;
}

struct fo_client *tf_client(struct fo *fo, uint64_t conn)
{
    struct fo_client *c = NULL;
    cr_assert_eq(fo_client_create(fo, conn, &c), RT_OK);
    return c;
}

struct fo_sub_result tf_sub(struct fo_client *c, const char *channel)
{
    struct fo_sub_req req = {.channel = channel, .channel_len = strlen(channel)};
    struct fo_sub_result r;
    cr_assert_eq(fo_subscribe(c, &req, &r), RT_OK);
    return r;
}

struct fo_sub_result tf_sub_since(struct fo_client *c, const char *channel, uint64_t since,
                                  const char *epoch)
{
    struct fo_sub_req req = {.channel = channel,
                             .channel_len = strlen(channel),
                             .has_since = true,
                             .since = since,
                             .epoch = epoch,
                             .epoch_len = epoch ? strlen(epoch) : 0};
    struct fo_sub_result r;
    cr_assert_eq(fo_subscribe(c, &req, &r), RT_OK);
    return r;
}

struct fo_pub_result tf_pub(struct fo *fo, const char *channel, const char *msg_id,
                            const char *json)
{
    struct fo_pub_req req = {.channel = channel,
                             .channel_len = strlen(channel),
                             .msg_id = msg_id,
                             .msg_id_len = msg_id ? strlen(msg_id) : 0,
                             .payload = {PROTO_PAYLOAD_JSON, (const uint8_t *)json, strlen(json)}};
    struct fo_pub_result r;
    cr_assert_eq(fo_publish(fo, &req, &r), RT_OK);
    return r;
}

rt_status tf_ack(struct fo_client *c, const char *channel, uint64_t seq)
{
    return fo_ack(c, channel, strlen(channel), seq);
}

rt_status tf_unsub(struct fo_client *c, const char *channel)
{
    return fo_unsubscribe(c, channel, strlen(channel));
}

static bool ev_match(const struct tf_event *e, enum tf_kind kind, uint64_t conn,
                     const char *channel)
{
    return e->kind == kind && e->conn == conn && (!channel || strcmp(e->channel, channel) == 0);
}

size_t tf_count(const struct tf_sink *s, uint64_t conn, const char *channel)
{
    size_t n = 0;
    for (size_t i = 0; i < s->n; i++)
        n += ev_match(&s->ev[i], TF_MSG, conn, channel);
    return n;
}

size_t tf_seqs(const struct tf_sink *s, uint64_t conn, const char *channel, uint64_t *out,
               size_t max)
{
    size_t n = 0;
    for (size_t i = 0; i < s->n; i++) {
        if (ev_match(&s->ev[i], TF_MSG, conn, channel) && n < max)
            out[n++] = s->ev[i].seq;
    }
    return n;
}

size_t tf_gaps(const struct tf_sink *s, uint64_t conn, const char *channel, struct tf_event **out,
               size_t max)
{
    size_t n = 0;
    for (size_t i = 0; i < s->n; i++) {
        if (ev_match(&s->ev[i], TF_GAP, conn, channel) && n < max)
            out[n++] = &s->ev[i];
    }
    return n;
}

void tf_expect_range(const struct tf_sink *s, uint64_t conn, const char *channel, uint64_t first,
                     uint64_t last)
{
    size_t want = last >= first ? (size_t)(last - first + 1) : 0;
    uint64_t *seqs = calloc(want + 1, sizeof(*seqs));
    size_t n = tf_seqs(s, conn, channel, seqs, want + 1);
    cr_assert_eq(n, want, "conn %llu on %s: got %zu messages, want %zu (%llu..%llu)",
                 (unsigned long long)conn, channel, n, want, (unsigned long long)first,
                 (unsigned long long)last);
    for (size_t i = 0; i < n; i++)
        cr_assert_eq(seqs[i], first + i, "conn %llu on %s: message %zu is seq %llu, want %llu",
                     (unsigned long long)conn, channel, i, (unsigned long long)seqs[i],
                     (unsigned long long)(first + i));
    free(seqs);
}
