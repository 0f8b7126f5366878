/*
 * protocol_int.h: internals shared by the files of protocol/. Not part of
 * the module's interface; nothing outside protocol/ includes it.
 */
#ifndef PROTOCOL_INT_H
#define PROTOCOL_INT_H

#include "protocol.h"

#include <jansson.h>

/* -------------------------------------------------------------------- */
/* Low-level emitters (emit.c): append one value to a buffer.            */

rt_status proto__put(struct proto_buf *b, const void *p, size_t n);
rt_status proto__put_byte(struct proto_buf *b, uint8_t c);

/* JSON text: a string with quotes and escapes (bytes must be UTF-8), numbers. */
rt_status proto__js_str(struct proto_buf *b, const char *s, size_t len);
rt_status proto__js_int(struct proto_buf *b, int64_t v);
rt_status proto__js_uint(struct proto_buf *b, uint64_t v);
/* Shortest text that reads back as the same double, always with '.' or 'e'
 * so it stays a real; non-finite values are written as null. */
rt_status proto__js_double(struct proto_buf *b, double v);

/* Msgpack, smallest encoding for each value. */
rt_status proto__mp_nil(struct proto_buf *b);
rt_status proto__mp_bool(struct proto_buf *b, bool v);
rt_status proto__mp_int(struct proto_buf *b, int64_t v);
rt_status proto__mp_uint(struct proto_buf *b, uint64_t v);
rt_status proto__mp_double(struct proto_buf *b, double v);
rt_status proto__mp_str(struct proto_buf *b, const char *s, size_t len);
rt_status proto__mp_bin(struct proto_buf *b, const uint8_t *p, size_t len);
rt_status proto__mp_array_hdr(struct proto_buf *b, size_t n);
rt_status proto__mp_map_hdr(struct proto_buf *b, size_t n);

/* -------------------------------------------------------------------- */
/* Transcoding (transcode.c).                                            */

/* Compact JSON text of a jansson value. */
rt_status proto__json_dump(const json_t *v, struct proto_buf *out);
/* Msgpack of a jansson value. */
rt_status proto__json_to_mp(const json_t *v, struct proto_buf *out);
/* Writes a key (with an optional suffix) in the writer's codec. */
void proto__w_key2(struct proto_writer *w, const char *key, const char *suffix);
/* Marks a raw value about to be appended by the caller; false after an error. */
bool proto__w_raw_begin(struct proto_writer *w);
void proto__w_fail(struct proto_writer *w, rt_status st);

/* -------------------------------------------------------------------- */
/* Decoder internals (decode.c, fields.c).                               */

/* A value found under a top-level key, codec-neutral. */
enum proto_fv_kind {
    PROTO_FV_ABSENT = 0,
    PROTO_FV_NULL,
    PROTO_FV_BOOL, /* i: 0 or 1 */
    PROTO_FV_INT,  /* i */
    PROTO_FV_UINT, /* u, above INT64_MAX */
    PROTO_FV_REAL, /* d */
    PROTO_FV_STR,  /* s/len, NUL-terminated, in decoder memory */
    PROTO_FV_OTHER,
};

struct proto_fv {
    enum proto_fv_kind kind;
    int64_t i;
    uint64_t u;
    double d;
    const char *s;
    size_t len;
};

/* The top-level fields the protocol knows, as found in one message. */
struct proto_fields {
    struct proto_fv type, id, token, name, channel, epoch, since, msg_id, seq;
    struct proto_fv space, watch, lat, lon, radius_m, limit, data_b64, meta_b64, presence;
    struct proto_payload data, meta;
    int error; /* set while reading fields (e.g. bad data), 0 otherwise */
    const char *error_message;
};

/* Field names, indexed by proto__field_index(). */
enum proto_field_id {
    PROTO_F_TYPE,
    PROTO_F_ID,
    PROTO_F_TOKEN,
    PROTO_F_NAME,
    PROTO_F_CHANNEL,
    PROTO_F_EPOCH,
    PROTO_F_SINCE,
    PROTO_F_MSG_ID,
    PROTO_F_SEQ,
    PROTO_F_SPACE,
    PROTO_F_WATCH,
    PROTO_F_LAT,
    PROTO_F_LON,
    PROTO_F_RADIUS_M,
    PROTO_F_LIMIT,
    PROTO_F_DATA_B64,
    PROTO_F_META_B64,
    PROTO_F_PRESENCE,
    PROTO_F_DATA,
    PROTO_F_META,
    PROTO_F_UNKNOWN,
};

enum proto_field_id proto__field_index(const char *key, size_t len);
/* The scalar slot of a field (NULL for data/meta/unknown). */
struct proto_fv *proto__field_slot(struct proto_fields *f, enum proto_field_id id);

/* Decoder-owned memory: a list of blocks, so earlier pointers stay valid
 * while later allocations are made; reset once per proto_decode call. */
struct proto_arena_block;
struct proto_arena {
    struct proto_arena_block *head;
    size_t total; /* bytes in all blocks */
    size_t hint;  /* size of the next first block: what the last frame needed */
};

void *proto__arena_alloc(struct proto_arena *a, size_t n);
char *proto__arena_strdup(struct proto_arena *a, const char *s, size_t len);
void proto__arena_reset(struct proto_arena *a);
void proto__arena_free(struct proto_arena *a);

/* Checks the fields against the rules of the message's type and fills msg.
 * Base64 payloads are decoded (through scratch) into the arena. Returns
 * RT_OK or RT_NOMEM; a bad message is RT_OK with msg->error set. */
rt_status proto__build_msg(struct proto_arena *a, struct proto_buf *scratch,
                           const struct proto_fields *f, struct proto_msg *msg);

#endif
