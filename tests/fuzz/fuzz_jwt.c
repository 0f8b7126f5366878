/*
 * fuzz_jwt.c: the `connect` token verifier (auth/), fed what a client could
 * put in `token`. Keys: an HS256 secret and RS256 / ES256 public keys made
 * at start (their private halves are thrown away).
 *
 * The first byte picks the mode. Even: the rest is a token, checked against
 * all three keys: shape, base64url, header, alg pinning and signatures; a
 * token can never verify against the RS256 or ES256 key, whose private
 * halves nobody has. Odd: the rest is "header JSON\nclaims JSON", encoded
 * and signed here with the HS256 secret, so the claims parser behind the
 * signature is reached too; an accepted token must have said alg HS256
 * and carry a sub within the rules.
 */
#define _GNU_SOURCE /* memmem */
#include "auth.h"
#include "fuzz.h"
#include "protocol.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <string.h>

#define NOW_MS 1765000000000 /* a fixed clock: exp and nbf behave the same every run */

static const uint8_t secret[] = "fuzz-secret-0123456789abcdef-0123456789abcdef";
static struct auth_key *hs, *rs, *es;

/* The public half of a fresh key pair of `type`, as a verifier key. */
static struct auth_key *public_key(EVP_PKEY *pk, enum auth_alg alg)
{
    BIO *bio = BIO_new(BIO_s_mem());
    char *pem = NULL;
    FUZZ_CHECK(pk && bio && PEM_write_bio_PUBKEY(bio, pk) == 1);
    long n = BIO_get_mem_data(bio, &pem);
    char err[128];
    struct auth_key *key = NULL;
    FUZZ_CHECK(auth_key_create((const uint8_t *)pem, (size_t)n, alg, err, sizeof err, &key) ==
               RT_OK);
    BIO_free(bio);
    EVP_PKEY_free(pk);
    return key;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    char err[128];
    FUZZ_CHECK(auth_key_create(secret, sizeof secret - 1, AUTH_HS256, err, sizeof err, &hs) ==
               RT_OK);
    rs = public_key(EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048), AUTH_RS256);
    es = public_key(EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256"), AUTH_ES256);
    return 0;
}

static size_t b64url(const uint8_t *in, size_t n, char *out)
{
    static const char a[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    size_t o = 0, i = 0;
    for (; i + 2 < n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        out[o++] = a[v >> 18];
        out[o++] = a[(v >> 12) & 63];
        out[o++] = a[(v >> 6) & 63];
        out[o++] = a[v & 63];
    }
    if (n - i == 1) {
        out[o++] = a[in[i] >> 2];
        out[o++] = a[(in[i] & 3) << 4];
    } else if (n - i == 2) {
        uint32_t v = (uint32_t)in[i] << 8 | in[i + 1];
        out[o++] = a[v >> 10];
        out[o++] = a[(v >> 4) & 63];
        out[o++] = a[(v & 15) << 2];
    }
    return o;
}

static enum auth_result verify(const struct auth_key *key, const char *tok, size_t len)
{
    struct auth_claims *c = NULL;
    enum auth_result r = auth_verify(key, tok, len, NOW_MS, 5000, &c);
    FUZZ_CHECK((r == AUTH_OK) == (c != NULL));
    if (c) {
        size_t sub = strlen(c->sub);
        FUZZ_CHECK(sub >= 1 && sub <= AUTH_SUB_MAX);
        FUZZ_CHECK(strncmp(c->sub, AUTH_ANON_PREFIX, strlen(AUTH_ANON_PREFIX)) != 0);
        FUZZ_CHECK(!c->has_exp || NOW_MS < c->exp_ms + 5000);
        FUZZ_CHECK(c->sub_allow.n <= AUTH_PATTERNS_MAX && c->pub_allow.n <= AUTH_PATTERNS_MAX);
        for (size_t i = 0; i < c->sub_allow.n; i++)
            FUZZ_CHECK(proto_pattern_valid(c->sub_allow.pat[i], strlen(c->sub_allow.pat[i])));
        auth_claims_destroy(c);
    }
    return r;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 3 * AUTH_TOKEN_MAX)
        return 0;
    const uint8_t *in = data + 1;
    size_t n = size - 1;
    if ((data[0] & 1) == 0) {
        char *tok = malloc(n ? n : 1); /* exact size: ASan sees an over-read */
        FUZZ_CHECK(tok);
        memcpy(tok, in, n);
        verify(hs, tok, n);
        FUZZ_CHECK(verify(rs, tok, n) != AUTH_OK); /* a forged RS256 signature */
        FUZZ_CHECK(verify(es, tok, n) != AUTH_OK); /* a forged ES256 signature */
        free(tok);
        return 0;
    }
    const uint8_t *nl = memchr(in, '\n', n);
    size_t hlen = nl ? (size_t)(nl - in) : n, clen = nl ? n - hlen - 1 : 0;
    char *tok = malloc(2 * n + 64);
    FUZZ_CHECK(tok);
    size_t o = b64url(in, hlen, tok);
    tok[o++] = '.';
    o += b64url(in + hlen + (nl ? 1 : 0), clen, tok + o);
    uint8_t mac[EVP_MAX_MD_SIZE];
    unsigned mac_len = 0;
    FUZZ_CHECK(HMAC(EVP_sha256(), secret, (int)(sizeof secret - 1), (const uint8_t *)tok, o, mac,
                    &mac_len) != NULL);
    tok[o++] = '.';
    o += b64url(mac, mac_len, tok + o);
    if (verify(hs, tok, o) == AUTH_OK) /* then the header said HS256, and no crit */
        FUZZ_CHECK(memmem(in, hlen, "HS256", 5) != NULL);
    free(tok);
    return 0;
}
