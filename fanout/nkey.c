/*
 * nkey.c: NATS NKeys: seeds decoded, public keys encoded, nonces signed
 * (nkey.h). ed25519 and base64 come from libcrypto; base32 and the CRC are
 * here because NATS's NKey framing is its own.
 */
#include "nkey.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <string.h>

#define PREFIX_SEED (18 << 3) /* 'S' */
#define SEED_RAW    (2 + 32 + 2)
#define PUBLIC_RAW  (1 + 32 + 2)

static const char B32[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

uint16_t nkey_crc16(const uint8_t *p, size_t n)
{
    uint16_t crc = 0;
    for (size_t i = 0; i < n; i++) {
        crc ^= (uint16_t)(p[i] << 8);
        for (int b = 0; b < 8; b++)
            crc = (uint16_t)(crc & 0x8000 ? (crc << 1) ^ 0x1021 : crc << 1);
    }
    return crc;
}

static int b32_value(char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= '2' && c <= '7')
        return c - '2' + 26;
    return -1;
}

/* Exactly `cap` bytes from `len` base32 characters; the leftover bits must be zero. */
static bool b32_decode(const char *s, size_t len, uint8_t *out, size_t cap)
{
    if (len * 5 / 8 != cap)
        return false;
    uint32_t acc = 0;
    int bits = 0;
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        int v = b32_value(s[i]);
        if (v < 0)
            return false;
        acc = (acc << 5) | (uint32_t)v;
        bits += 5;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (uint8_t)(acc >> bits);
        }
    }
    return (acc & ((1u << bits) - 1)) == 0;
}

/* base32 of in[0..n), NUL-terminated; out holds ceil(n * 8 / 5) + 1 bytes. */
static void b32_encode(const uint8_t *in, size_t n, char *out)
{
    uint32_t acc = 0;
    int bits = 0;
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        acc = (acc << 8) | in[i];
        bits += 8;
        while (bits >= 5) {
            bits -= 5;
            out[o++] = B32[(acc >> bits) & 31];
        }
    }
    if (bits > 0)
        out[o++] = B32[(acc << (5 - bits)) & 31];
    out[o] = 0;
}

static bool known_type(int t)
{
    return t == NKEY_OPERATOR || t == NKEY_SERVER || t == NKEY_CLUSTER || t == NKEY_ACCOUNT ||
           t == NKEY_USER;
}

rt_status nkey_parse_seed(const char *text, size_t len, struct nkey *out)
{
    uint8_t raw[SEED_RAW];
    rt_status st = RT_INVAL;
    if (len != NKEY_SEED_CHARS || !b32_decode(text, len, raw, sizeof(raw)))
        goto out;
    uint16_t crc = (uint16_t)(raw[SEED_RAW - 2] | raw[SEED_RAW - 1] << 8);
    if (nkey_crc16(raw, SEED_RAW - 2) != crc || (raw[0] & 0xf8) != PREFIX_SEED)
        goto out;
    int type = (raw[0] & 7) << 5 | (raw[1] & 0xf8) >> 3;
    if ((raw[1] & 7) != 0 || !known_type(type))
        goto out;
    out->type = (enum nkey_type)type;
    memcpy(out->seed, raw + 2, 32);
    st = RT_OK;
out:
    OPENSSL_cleanse(raw, sizeof(raw));
    return st;
}

static EVP_PKEY *pkey_of(const struct nkey *k)
{
    return EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, NULL, k->seed, sizeof(k->seed));
}

rt_status nkey_public(const struct nkey *k, char out[NKEY_PUBLIC_CHARS + 1])
{
    EVP_PKEY *pk = pkey_of(k);
    uint8_t raw[PUBLIC_RAW];
    size_t n = 32;
    raw[0] = (uint8_t)k->type;
    if (!pk || EVP_PKEY_get_raw_public_key(pk, raw + 1, &n) != 1 || n != 32) {
        EVP_PKEY_free(pk);
        return RT_ERR;
    }
    EVP_PKEY_free(pk);
    uint16_t crc = nkey_crc16(raw, 33);
    raw[33] = (uint8_t)(crc & 0xff);
    raw[34] = (uint8_t)(crc >> 8);
    b32_encode(raw, sizeof(raw), out);
    return RT_OK;
}

rt_status nkey_sign(const struct nkey *k, const void *msg, size_t len, uint8_t sig[NKEY_SIG_BYTES])
{
    EVP_PKEY *pk = pkey_of(k);
    EVP_MD_CTX *md = pk ? EVP_MD_CTX_new() : NULL;
    size_t n = NKEY_SIG_BYTES;
    bool ok = md && EVP_DigestSignInit(md, NULL, NULL, NULL, pk) == 1 &&
              EVP_DigestSign(md, sig, &n, msg, len) == 1 && n == NKEY_SIG_BYTES;
    EVP_MD_CTX_free(md);
    EVP_PKEY_free(pk);
    return ok ? RT_OK : RT_ERR;
}

void nkey_wipe(struct nkey *k)
{
    OPENSSL_cleanse(k, sizeof(*k));
}

size_t nkey_base64url(const uint8_t *in, size_t n, char *out)
{
    int m = EVP_EncodeBlock((unsigned char *)out, in, (int)n);
    size_t len = m > 0 ? (size_t)m : 0;
    while (len > 0 && out[len - 1] == '=')
        len--;
    for (size_t i = 0; i < len; i++)
        out[i] = out[i] == '+' ? '-' : out[i] == '/' ? '_' : out[i];
    out[len] = 0;
    return len;
}
