/*
 * nkey.h: NATS NKeys (nkey.c), the text form of the ed25519 keys NATS
 * authenticates with, and the signature of a server's nonce.
 *
 * An NKey is base32 (RFC 4648 alphabet, no padding) of a prefix, the key
 * bytes and a CRC-16 (XMODEM: polynomial 0x1021, initial value 0, stored
 * little-endian). A seed ("SU...": a user's private key) is two prefix bytes
 * (the seed prefix and the key type) and the 32-byte ed25519 seed; a public
 * key ("U...") is one type byte and the 32-byte public key. Signatures are
 * ed25519 through OpenSSL's libcrypto. No I/O, no allocation that outlives a
 * call; a seed is wiped by nkey_wipe. Any thread: nothing is shared.
 */
#ifndef NKEY_H
#define NKEY_H

#include "rt.h"

#include <stddef.h>
#include <stdint.h>

#define NKEY_SEED_CHARS   58 /* a seed's text form */
#define NKEY_PUBLIC_CHARS 56 /* a public key's text form */
#define NKEY_SIG_BYTES    64

/* Key types (the first letter of a public key). */
enum nkey_type {
    NKEY_OPERATOR = 14 << 3, /* 'O' */
    NKEY_SERVER = 13 << 3,   /* 'N' */
    NKEY_CLUSTER = 2 << 3,   /* 'C' */
    NKEY_ACCOUNT = 0,        /* 'A' */
    NKEY_USER = 20 << 3,     /* 'U' */
};

struct nkey {
    enum nkey_type type;
    uint8_t seed[32];
};

/* CRC-16/XMODEM of p[0..n), the NKey checksum. */
uint16_t nkey_crc16(const uint8_t *p, size_t n);

/*
 * Decodes a seed's text ("SU..." for a user; surrounding blanks are not
 * taken). RT_INVAL for anything that is not one: wrong length, a byte
 * outside the base32 alphabet, a bad checksum, not the seed prefix, an
 * unknown key type. Nothing is kept on failure.
 */
rt_status nkey_parse_seed(const char *text, size_t len, struct nkey *out);

/* The public key's text form, NUL-terminated (NKEY_PUBLIC_CHARS + 1 bytes). */
rt_status nkey_public(const struct nkey *k, char out[NKEY_PUBLIC_CHARS + 1]);

/* The ed25519 signature of msg[0..len) with the key. RT_ERR if libcrypto fails. */
rt_status nkey_sign(const struct nkey *k, const void *msg, size_t len, uint8_t sig[NKEY_SIG_BYTES]);

/* Overwrites the seed (the memory stays the caller's). */
void nkey_wipe(struct nkey *k);

/*
 * base64url without padding (RFC 4648 §5), as NATS wants the signature in
 * CONNECT: out must hold 4 * ceil(n / 3) + 1 bytes; returns the length.
 */
size_t nkey_base64url(const uint8_t *in, size_t n, char *out);

#endif
