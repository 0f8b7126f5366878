/*
 * helpers.h: shared by the fanout tests. A fake sink that records every
 * delivery and gap per connection and can play a full outbox, a settable
 * clock, and one-line wrappers around subscribe / publish.
 */
#ifndef TEST_FANOUT_HELPERS_H
#define TEST_FANOUT_HELPERS_H

#include "fanout.h"
#include "fanout_int.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TF_MAX_CONN 256

enum tf_kind { TF_MSG, TF_GAP };

struct tf_event {
    enum tf_kind kind;
    uint64_t conn;
    char channel[PROTO_CHANNEL_MAX + 1];
    uint64_t seq;         /* TF_MSG, durable */
    uint64_t from, to;    /* TF_GAP */
    struct fo_msg *msg;   /* TF_MSG, retained */
    const uint8_t *frame; /* TF_MSG, when the sink builds frames */
    size_t frame_len;
};

/* A sub_done the sink got: the answer, and how many events came before it. */
struct tf_sub_done {
    uint64_t conn;
    int64_t req_id;
    struct fo_sub_result res;
    size_t events_before;
};

#define TF_MAX_SUB_DONE 64

struct tf_sink {
    struct tf_event *ev;
    size_t n, cap;
    bool full[TF_MAX_CONN]; /* outbox full: deliver/gap return RT_AGAIN */
    long room[TF_MAX_CONN]; /* >= 0: accepts that many more, then full */
    bool build_frames;      /* call fo_msg_frame in deliver */
    enum proto_codec codec[TF_MAX_CONN];
    size_t refused; /* RT_AGAIN answers */
    size_t pub_done;
    struct tf_sub_done sub_done[TF_MAX_SUB_DONE];
    size_t n_sub_done;
    /* Runs inside deliver after recording (re-entrancy tests). */
    void (*hook)(struct tf_sink *s, uint64_t conn, struct fo_msg *m);
    void *hook_ctx;
};

extern uint64_t tf_now; /* the injected clock */
uint64_t tf_clock(void *ctx);

void tf_sink_init(struct tf_sink *s);
void tf_sink_free(struct tf_sink *s); /* releases the recorded messages */
struct fo_sink tf_sink_ops(struct tf_sink *s);

/* cfg may be NULL (defaults). Installs tf_clock. */
struct fo *tf_fo(const struct fo_config *cfg, struct tf_sink *s);
struct fo_client *tf_client(struct fo *fo, uint64_t conn);

struct fo_sub_result tf_sub(struct fo_client *c, const char *channel);
struct fo_sub_result tf_sub_since(struct fo_client *c, const char *channel, uint64_t since,
                                  const char *epoch);
struct fo_pub_result tf_pub(struct fo *fo, const char *channel, const char *msg_id,
                            const char *json);
rt_status tf_ack(struct fo_client *c, const char *channel, uint64_t seq);
rt_status tf_unsub(struct fo_client *c, const char *channel);

/* Messages (not gaps) recorded for conn on channel (NULL = any). */
size_t tf_count(const struct tf_sink *s, uint64_t conn, const char *channel);
/* Their seqs in delivery order into out (at most max); returns the count. */
size_t tf_seqs(const struct tf_sink *s, uint64_t conn, const char *channel, uint64_t *out,
               size_t max);
/* Gaps recorded for conn on channel. */
size_t tf_gaps(const struct tf_sink *s, uint64_t conn, const char *channel, struct tf_event **out,
               size_t max);
/* Asserts conn got exactly seqs first..last on channel, in order, and nothing else there. */
void tf_expect_range(const struct tf_sink *s, uint64_t conn, const char *channel, uint64_t first,
                     uint64_t last);

#endif
