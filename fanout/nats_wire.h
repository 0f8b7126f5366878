/*
 * nats_wire.h: the client side of NATS's core text protocol, as bytes, with
 * no I/O (nats_wire.c). The loop-thread reader of the nats engine
 * (nats_live.c) feeds it what it read and keeps what NW_MORE leaves over;
 * the unit tests feed it hostile bytes.
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

/* Client ops, written into out (at most cap bytes); the length, or 0 if it does not fit. */
size_t nw_enc_sub(char *out, size_t cap, const char *subject, uint64_t sid);
size_t nw_enc_unsub(char *out, size_t cap, uint64_t sid);

#endif
