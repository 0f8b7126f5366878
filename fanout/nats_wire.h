/*
 * nats_wire.h: the client side of NATS's core text protocol, as bytes, with
 * no I/O (nats_wire.c), and rtgate's own names on NATS: its subjects and
 * headers. The loop-thread reader of the nats engine (nats_live.c) feeds it
 * what it read and keeps what NW_MORE leaves over; the unit tests feed it
 * hostile bytes; the engine, rtgate-pub and rtgate-load take the names from
 * here.
 *
 * Server to client: INFO {json}, MSG, HMSG, PING, PONG, +OK, -ERR 'text'.
 * Ops are matched without regard to case, lines end in CRLF (a bare LF is
 * taken too), sizes are decimal. Anything else is NW_BAD: the caller drops
 * the connection, as a NATS client must when the stream is out of step.
 */
#ifndef NATS_WIRE_H
#define NATS_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define NW_LINE_MAX ((size_t)64 << 10) /* longest control line (INFO can be long) */

/*
 * rtgate's subjects and headers on NATS (docs/nats.md): the one spelling
 * the engine, rtgate-pub and the load tool share. A channel's subject is the
 * prefix followed by the channel name (a valid NATS subject as it is).
 */
#define NW_SUBJ_EPH       "rtgate.eph."  /* an ephemeral channel: core NATS */
#define NW_SUBJ_DUR       "rtgate.dur."  /* a durable channel: stored in the stream */
#define NW_SUBJ_LIVE      "rtgate.live." /* the stream's republish of a durable channel */
#define NW_STREAM_DEFAULT "RTGATE"       /* the stream of the durable channels */
#define NW_KV_BUCKET      "rtgate_dedup" /* ephemeral msg_id claims */
#define NW_KV_PREFIX      "$KV." NW_KV_BUCKET "."
#define NW_JS_DIRECT_GET  "$JS.API.DIRECT.GET."  /* + stream */
#define NW_JS_STREAM_INFO "$JS.API.STREAM.INFO." /* + stream */

#define NW_H_CHANNEL     "Rtgate-Channel"  /* the channel */
#define NW_H_USER        "Rtgate-User"     /* the publishing user */
#define NW_H_CLIENT      "Rtgate-Client"   /* the publishing connection */
#define NW_H_ENCODING    "Rtgate-Encoding" /* json (default), msgpack, binary */
#define NW_H_MSG_ID      "Rtgate-Msg-Id"   /* the client's msg_id, percent-encoded */
#define NW_H_TS          "Rtgate-Ts"       /* ms since the epoch when a gateway accepted it */
#define NW_H_NATS_MSG_ID "Nats-Msg-Id"     /* JetStream's idempotency key */
#define NW_H_SEQ         "Nats-Sequence"   /* JetStream: the stream seq (republish, direct get) */
#define NW_H_LAST_SEQ    "Nats-Last-Sequence" /* republish: the subject's previous seq */
#define NW_H_TIME        "Nats-Time-Stamp"    /* JetStream: when it was stored */
#define NW_H_STATUS      "Status"             /* a reply's status (404: no such message) */

enum nw_op {
    NW_MORE, /* an incomplete op: read more, scan again from the same byte */
    NW_BAD,  /* malformed, or larger than allowed */
    NW_MSG,  /* MSG or HMSG (m is set) */
    NW_PING,
    NW_PONG,
    NW_INFO, /* arg: the JSON */
    NW_OK,
    NW_ERR, /* arg: the text after -ERR */
};

/* One MSG / HMSG: pointers into the scanned bytes. hdr is NULL for MSG. */
struct nw_msg {
    const char *subject;
    size_t subject_len;
    uint64_t sid;
    const char *reply; /* NULL without one */
    size_t reply_len;
    const uint8_t *hdr; /* "NATS/1.0...\r\n\r\n" */
    size_t hdr_len;
    const uint8_t *data;
    size_t data_len;
};

/*
 * Scans the op at p[0..n). On anything but NW_MORE and NW_BAD, *used is its
 * length (the next op starts at p + *used). A payload over max_payload, or a
 * control line over NW_LINE_MAX, is NW_BAD. arg/arg_len: INFO's and -ERR's
 * text (may be NULL).
 */
enum nw_op nw_scan(const uint8_t *p, size_t n, size_t max_payload, size_t *used, struct nw_msg *m,
                   const char **arg, size_t *arg_len);

/*
 * The first value of header `key` (matched without regard to case) in an
 * HMSG header block, trimmed of blanks; not NUL-terminated. False if absent
 * or if the block is not a NATS/1.0 header block.
 */
bool nw_hdr_get(const uint8_t *hdr, size_t len, const char *key, const char **val, size_t *val_len);

/*
 * The KV subject that claims an ephemeral msg_id:
 * $KV.rtgate_dedup.<channel, ':' as '='>.<msg_id in hex> (':' is not a KV key
 * character). Written into out; its length, or 0 if it does not fit in cap.
 */
size_t nw_claim_subject(char *out, size_t cap, const char *channel, size_t channel_len,
                        const char *msg_id, size_t msg_id_len);

/* Client ops, written into out (at most cap bytes); the length, or 0 if it does not fit. */
size_t nw_enc_sub(char *out, size_t cap, const char *subject, uint64_t sid);
size_t nw_enc_unsub(char *out, size_t cap, uint64_t sid);

#endif
