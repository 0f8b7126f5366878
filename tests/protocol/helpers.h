/*
 * helpers.h: shared by the protocol tests. Independent readers (jansson,
 * msgpack-c) check what rtgate writes, and a tiny msgpack builder makes
 * hostile frames byte by byte.
 */
#ifndef TEST_PROTOCOL_HELPERS_H
#define TEST_PROTOCOL_HELPERS_H

#include "protocol.h"

#include <jansson.h>
#include <msgpack.h>
#include <stddef.h>
#include <stdint.h>

/* Parses one JSON value (whole input); NULL if invalid. Caller decrefs. */
json_t *th_json(const uint8_t *p, size_t len);
/* Parses one msgpack object spanning exactly p[0..len) with msgpack-c and
 * converts it to jansson (bin -> {"$bin": base64}); NULL if invalid. */
json_t *th_mp_to_json(const uint8_t *p, size_t len);
/* Packs a JSON text with msgpack-c (independent of rtgate's packer). The
 * result is malloc'ed into *out. */
void th_json_text_to_mp(const char *json, uint8_t **out, size_t *len);

/* Byte builder for hand-made msgpack. */
struct th_bytes {
    uint8_t *p;
    size_t len, cap;
};
void th_put(struct th_bytes *b, const void *p, size_t n);
void th_byte(struct th_bytes *b, uint8_t c);
void th_be(struct th_bytes *b, uint8_t tag, uint64_t v, int nbytes);
void th_str(struct th_bytes *b, const char *s);
void th_strn(struct th_bytes *b, const char *s, size_t n);
void th_free(struct th_bytes *b);

/* Decodes with default limits into a fresh decoder stored in *dec. */
rt_status th_decode(struct proto_decoder **dec, enum proto_codec codec, const void *p, size_t len,
                    struct proto_msg **msgs, size_t *count);
/* Decodes one JSON text message; asserts exactly one message came back. */
struct proto_msg th_decode_one_json(struct proto_decoder **dec, const char *json);
/* Same message packed with msgpack-c and decoded as msgpack. */
struct proto_msg th_decode_one_mp(struct proto_decoder **dec, const char *json);

#endif
