/*
 * protocol.h: rtgate wire protocol v1 (PROTOCOL.md) in both subprotocols,
 * rtgate.v1.json and rtgate.v1.msgpack, behind one interface.
 *
 * Pure: bytes in, message structs out; frames built into caller buffers.
 * No sockets, no clock, no lws, no NATS. Everything here runs on whichever
 * thread calls it; a decoder or writer is used by one thread at a time.
 */
#ifndef PROTOCOL_H
#define PROTOCOL_H

#include "rt.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum proto_codec { PROTO_JSON = 0, PROTO_MSGPACK = 1, PROTO_NCODECS = 2 };

#define PROTO_SUBPROTOCOL_JSON    "rtgate.v1.json"
#define PROTO_SUBPROTOCOL_MSGPACK "rtgate.v1.msgpack"

/* Fixed limits of PROTOCOL.md. */
#define PROTO_CHANNEL_MAX        128
#define PROTO_MSG_ID_MAX         64
#define PROTO_EPOCH_MAX          64
#define PROTO_SPACE_MAX          64
#define PROTO_META_MAX           1024 /* encoded bytes, else 413 */
#define PROTO_RADIUS_MAX_M       50000.0
#define PROTO_NEAR_LIMIT_MAX     1000
#define PROTO_NEAR_LIMIT_DEFAULT 50
#define PROTO_NAME_MAX           128

enum proto_type {
    PROTO_T_UNKNOWN = 0,
    PROTO_T_CONNECT,
    PROTO_T_SUB,
    PROTO_T_UNSUB,
    PROTO_T_PUB,
    PROTO_T_ACK,
    PROTO_T_PING,
    PROTO_T_GEO_SET,
    PROTO_T_GEO_CLEAR,
    PROTO_T_GEO_NEAR,
    PROTO_T_GEO_WATCH,
    PROTO_T_GEO_UNWATCH,
    PROTO_T_REFRESH, /* docs/protocol.md: a new token for a connected session */
};

/* A string inside a decoded frame; NUL-terminated, `len` excludes the NUL. */
struct proto_str {
    const char *ptr; /* NULL when absent */
    size_t len;
};

/* How a payload's bytes are encoded. */
enum proto_payload_enc {
    PROTO_PAYLOAD_NONE = 0, /* absent */
    PROTO_PAYLOAD_JSON,     /* one JSON value, compact text */
    PROTO_PAYLOAD_MSGPACK,  /* one msgpack object */
    PROTO_PAYLOAD_BINARY,   /* raw bytes (msgpack bin / data_b64 / backend binary) */
};

/* An opaque application value (`data`, `meta`); the bytes are not owned. */
struct proto_payload {
    enum proto_payload_enc enc;
    const uint8_t *ptr;
    size_t len;
    /*
     * JSON only: the text is already what proto_payload_convert to JSON
     * makes of it (jansson's compact dump, which is idempotent), so a JSON
     * frame copies it as it is instead of parsing and dumping it again.
     * Set by the decoder and by whoever converted it; false is always safe.
     */
    bool canonical;
};

/*
 * One decoded client message. Fields a type does not use stay zero/absent.
 * `error` is 0 when the message is well formed; otherwise it is the
 * protocol code to answer (400 or 413) with `error_message` saying why, and
 * the other fields may be partly filled. `has_id` says whether a usable
 * integer `id` was found (even when `error` is set), so the answer is a
 * `reply` with that id, or an `error` without one.
 */
struct proto_msg {
    enum proto_type type;
    int error;
    const char *error_message; /* static string */

    bool has_id;
    int64_t id;

    struct proto_str token;   /* connect, refresh: any length (the gateway bounds it) */
    struct proto_str name;    /* connect */
    struct proto_str channel; /* sub, unsub, pub, ack: validated name */
    struct proto_str epoch;   /* sub */
    bool has_since;           /* sub */
    uint64_t since;
    bool presence;             /* sub: take part in the channel's presence (docs/protocol.md) */
    struct proto_str msg_id;   /* pub */
    struct proto_payload data; /* pub: `data` or `data_b64` (decoded to BINARY) */
    bool has_seq;              /* ack */
    uint64_t seq;

    struct proto_str space; /* geo.* */
    struct proto_str watch; /* geo.unwatch */
    bool has_lat, has_lon, has_radius, has_limit;
    double lat, lon, radius_m;
    uint32_t limit;            /* geo.near; PROTO_NEAR_LIMIT_DEFAULT when absent */
    struct proto_payload meta; /* geo.set */
};

/* Limits applied while decoding one frame. Zero fields take the defaults. */
struct proto_limits {
    size_t max_frame_bytes; /* default 65536 */
    size_t max_messages;    /* per frame, default 100 */
    size_t max_depth;       /* nesting of any value, default 32 */
    size_t max_elements;    /* array items + map pairs per message, default 4096 */
};

struct proto_decoder;

rt_status proto_decoder_create(const struct proto_limits *limits, struct proto_decoder **out);
void proto_decoder_destroy(struct proto_decoder *dec); /* NULL is a no-op */

/*
 * Decodes every message of one WebSocket frame. On RT_OK, *msgs points to
 * *count messages (at least 1), each checked on its own: see proto_msg.error.
 * If the frame cannot be split into messages (not JSON / msgpack, truncated,
 * a message that is not an object/map, too many messages, too deep), the
 * messages before the bad one are returned and one more entry is appended
 * with type PROTO_T_UNKNOWN, has_id false, error 400: decoding stops there.
 * The frame bytes must stay alive and unchanged while the messages are used;
 * messages and strings stay valid until the next call on this decoder.
 * Returns RT_NOMEM on allocation failure, RT_TOO_BIG when len is over
 * max_frame_bytes (nothing decoded).
 */
rt_status proto_decode(struct proto_decoder *dec, enum proto_codec codec, const uint8_t *frame,
                       size_t len, struct proto_msg **msgs, size_t *count);

/* True if `name` is a valid channel: 1-128 bytes of [A-Za-z0-9_:.-], dot-separated non-empty
 * tokens. */
bool proto_channel_valid(const char *name, size_t len);
/* True if `pattern` is a valid channel pattern (tokens may be `*`, the last may be `>`). */
bool proto_pattern_valid(const char *pattern, size_t len);
/* True if `channel` matches `pattern` as NATS subjects do. */
bool proto_pattern_match(const char *pattern, const char *channel, size_t channel_len);

/* -------------------------------------------------------------------- */
/* Encoding                                                              */

/*
 * A growable output buffer. `headroom` bytes are reserved before data[0]
 * (for the transport's frame header, LWS_PRE in the gateway): the allocation
 * starts at data - headroom.
 */
struct proto_buf {
    uint8_t *data;
    size_t len;
    size_t cap;      /* bytes usable from data */
    size_t headroom; /* set before first use; may not change after */
};

void proto_buf_init(struct proto_buf *b, size_t headroom);
rt_status proto_buf_reserve(struct proto_buf *b, size_t extra);
void proto_buf_reset(struct proto_buf *b); /* len = 0, keeps memory */
rt_status proto_buf_append(struct proto_buf *b, const void *p, size_t n);
void proto_buf_free(struct proto_buf *b);
/* Hands the allocation to the caller (free(data - headroom)); b is re-initialised. */
uint8_t *proto_buf_take(struct proto_buf *b, size_t *len);

#define PROTO_WRITER_MAX_DEPTH 16

/*
 * Codec-neutral writer of messages: the gateway says what to write once and
 * gets JSON (compact, one message per line) or msgpack. Calls after an error
 * do nothing; proto_writer_status() reports the first error. A JSON top-level
 * message ends with '\n'. Msgpack maps/arrays get their count patched at
 * proto_w_end (16-bit headers).
 */
struct proto_writer {
    enum proto_codec codec;
    struct proto_buf *buf;
    rt_status status;
    int depth;
    uint32_t count[PROTO_WRITER_MAX_DEPTH]; /* items written at each level */
    size_t hdr_pos[PROTO_WRITER_MAX_DEPTH]; /* where the msgpack header sits */
    bool is_map[PROTO_WRITER_MAX_DEPTH];
    bool after_key;
};

void proto_writer_init(struct proto_writer *w, enum proto_codec codec, struct proto_buf *buf);
rt_status proto_writer_status(const struct proto_writer *w);
void proto_w_map(struct proto_writer *w);
void proto_w_array(struct proto_writer *w);
void proto_w_end(struct proto_writer *w);
void proto_w_key(struct proto_writer *w, const char *key);
void proto_w_str(struct proto_writer *w, const char *s, size_t len); /* must be UTF-8 */
void proto_w_cstr(struct proto_writer *w, const char *s);
void proto_w_int(struct proto_writer *w, int64_t v);
void proto_w_uint(struct proto_writer *w, uint64_t v);
void proto_w_double(struct proto_writer *w, double v); /* non-finite -> null */
void proto_w_bool(struct proto_writer *w, bool v);
void proto_w_null(struct proto_writer *w);
/*
 * Writes key `key` with the payload as value, transcoding if needed. A BINARY
 * payload goes to JSON as key `<key>_b64` with a base64 string; a msgpack
 * payload whose top-level is `bin` likewise. Nested msgpack bin values become
 * base64 strings in JSON. NONE writes nothing. A payload that cannot be
 * transcoded (invalid bytes) sets the writer's status to RT_INVAL.
 */
void proto_w_payload(struct proto_writer *w, const char *key, const struct proto_payload *p);
/* Convenience: key + value in one call. */
void proto_w_kstr(struct proto_writer *w, const char *key, const char *s, size_t len);
void proto_w_kcstr(struct proto_writer *w, const char *key, const char *s);
void proto_w_kint(struct proto_writer *w, const char *key, int64_t v);
void proto_w_kuint(struct proto_writer *w, const char *key, uint64_t v);
void proto_w_kdouble(struct proto_writer *w, const char *key, double v);
void proto_w_kbool(struct proto_writer *w, const char *key, bool v);

/* Whole messages, each appended to buf as one complete message. */

/* {"type":"msg","channel":..,"seq":..(has_seq),"msg_id":..(if),"data"|"data_b64":..,"ts":..} */
rt_status proto_encode_msg(struct proto_buf *buf, enum proto_codec codec, const char *channel,
                           size_t channel_len, bool has_seq, uint64_t seq, const char *msg_id,
                           size_t msg_id_len, const struct proto_payload *data, uint64_t ts_ms);
/* {"type":"reply","id":id,"ok":false,"error":{"code":..,"reason":..,"message"?:..,"retry_after_ms"?:..}}
 * or, when has_id is false, {"type":"error","error":{...}}. retry_after_ms is
 * written when code is 429 or 503 (PROTOCOL.md requires it there). */
rt_status proto_encode_error(struct proto_buf *buf, enum proto_codec codec, bool has_id, int64_t id,
                             int code, const char *message, uint32_t retry_after_ms);
/* {"type":"gap","channel":..,"from":..,"to":..} */
rt_status proto_encode_gap(struct proto_buf *buf, enum proto_codec codec, const char *channel,
                           uint64_t from, uint64_t to);
/* {"type":"pong"} */
rt_status proto_encode_pong(struct proto_buf *buf, enum proto_codec codec);
/* {"type":"disconnect","code":..,"reason":..,"reconnect":..,"after_ms":..} */
rt_status proto_encode_disconnect(struct proto_buf *buf, enum proto_codec codec, int code,
                                  const char *reason, bool reconnect, uint32_t after_ms);

/*
 * Converts a payload to `want` (JSON or MSGPACK) into out (appended). BINARY
 * to JSON is not a JSON value: callers use proto_w_payload for that; asking
 * for it returns RT_INVAL. Used to pass backend payloads along.
 */
rt_status proto_payload_convert(const struct proto_payload *p, enum proto_payload_enc want,
                                struct proto_buf *out);

/* Base64 (RFC 4648, with padding). decode returns RT_INVAL on bad input. */
rt_status proto_base64_encode(const uint8_t *in, size_t len, struct proto_buf *out);
rt_status proto_base64_decode(const char *in, size_t len, struct proto_buf *out);
/* Base64url without padding (RFC 4648 section 5): URL- and header-safe text.
 * decode is strict (zero trailing bits, no '=') and returns RT_INVAL on bad
 * input, leaving out's length unchanged. */
rt_status proto_base64url_encode(const uint8_t *in, size_t len, struct proto_buf *out);
rt_status proto_base64url_decode(const char *in, size_t len, struct proto_buf *out);

/*
 * The header-safe form of a msg_id (NATS header Rtgate-Msg-Id, docs/nats.md):
 * bytes outside '!'..'~', and '%' itself, become %XX. Writes a NUL-terminated
 * string into out (stops early rather than overflow cap).
 */
void proto_pct_encode(const char *in, size_t len, char *out, size_t cap);

/* -------------------------------------------------------------------- */
/* Resume positions of a Server-Sent Events stream (resume.c): the text   */
/* of its `id:` lines and of the Last-Event-ID a reconnect sends back.    */

#define PROTO_RESUME_MAX_CHANNELS 16 /* positions one id carries */
/* Bytes before base64url: version, epochs (distinct, <= 16 of <= 64 bytes), positions. */
#define PROTO_RESUME_RAW_MAX (3 + PROTO_RESUME_MAX_CHANNELS * (1 + PROTO_EPOCH_MAX + 4 + 1 + 10))
/* The longest id text: the bound documented in docs/protocol.md. */
#define PROTO_RESUME_TEXT_MAX ((PROTO_RESUME_RAW_MAX * 4 + 2) / 3)

/* One durable channel's position: the last seq the client has, in an epoch. */
struct proto_resume_pos {
    uint32_t channel_hash; /* proto_resume_hash of the channel's name */
    uint64_t seq;
    const char *epoch; /* 1..64 bytes of '!'..'~' */
    size_t epoch_len;
};

/* The hash that names a channel in an id (32-bit FNV-1a of its name). */
uint32_t proto_resume_hash(const char *channel, size_t len);
/* Appends the id text of n positions (n <= PROTO_RESUME_MAX_CHANNELS). RT_INVAL
 * for too many positions or a bad epoch. */
rt_status proto_resume_encode(const struct proto_resume_pos *pos, size_t n, struct proto_buf *out);
/*
 * Reads an id text (hostile: a client's Last-Event-ID) into pos[0..*n), n at
 * most PROTO_RESUME_MAX_CHANNELS. The epochs point into scratch, where the
 * decoded bytes are appended: they stay valid while scratch is not written
 * again. RT_INVAL for anything but an id this codec made.
 */
rt_status proto_resume_decode(const char *text, size_t len, struct proto_resume_pos *pos, size_t *n,
                              struct proto_buf *scratch);

/* True if the bytes are valid UTF-8 (no overlongs, no surrogates, <= U+10FFFF). */
bool proto_utf8_valid(const char *s, size_t len);

/* -------------------------------------------------------------------- */
/* Msgpack reader (mpread.c): a bounded, allocation-free scanner, also    */
/* used for the fleet's own bus messages (peers/peers_wire.c).           */

#define PROTO_MP_REJECT_EXT      0x1u /* ext values are content errors */
#define PROTO_MP_REJECT_NONSTR_K 0x2u /* map keys that are not str are content errors */

/* The most nesting any scan accepts, whatever the limits say. */
#define PROTO_MP_DEPTH_CAP 256

/*
 * Result of scanning one msgpack object. `structural` errors (truncated,
 * a count larger than the bytes left, too deep, too many elements, the
 * reserved byte 0xc1) mean the end of the object is unknown. `content`
 * errors (invalid UTF-8, and what `flags` rejects) leave `end` valid, so a
 * caller can skip the object and go on.
 */
struct proto_mp_scan {
    size_t end;             /* offset just past the object */
    const char *structural; /* static reason, or NULL */
    const char *content;    /* first content problem, or NULL */
};

/* Scans one object at p[0..len). max_depth counts the top-level container
 * as 1 and is capped at PROTO_MP_DEPTH_CAP; max_elements counts array items
 * plus map pairs. Never allocates. */
void proto_mp_scan(const uint8_t *p, size_t len, size_t max_depth, size_t max_elements,
                   unsigned flags, struct proto_mp_scan *out);

/* One decoded msgpack item header. For containers `n` is the count
 * (pairs for maps); for str/bin/ext `ptr`/`n` are the body. */
enum proto_mp_kind {
    PROTO_MP_NIL,
    PROTO_MP_BOOL,
    PROTO_MP_INT,  /* fits int64: i */
    PROTO_MP_UINT, /* above INT64_MAX: u */
    PROTO_MP_FLOAT,
    PROTO_MP_STR,
    PROTO_MP_BIN,
    PROTO_MP_ARRAY,
    PROTO_MP_MAP,
    PROTO_MP_EXT,
};

struct proto_mp_item {
    enum proto_mp_kind kind;
    bool b;
    int64_t i;
    uint64_t u;
    double d;
    const uint8_t *ptr;
    size_t n;
    int8_t ext_type;
};

/* Reads the item header at p[*off..len) and advances *off past the header
 * (and past the body for str/bin/ext). Returns false when truncated or on
 * the reserved byte. Containers' elements follow at *off. */
bool proto_mp_read(const uint8_t *p, size_t len, size_t *off, struct proto_mp_item *it);

#endif
