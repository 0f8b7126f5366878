/*
 * helpers.c: the auth tests' own token signer and keys (see helpers.h).
 */
#include "helpers.h"

#include <criterion/criterion.h>
#include <openssl/bio.h>
#include <openssl/ec.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const uint8_t TK_SECRET[48] = "rtgate-test-secret-0123456789-abcdefghijklmnop!";
const uint8_t TK_SECRET_OTHER[48] = "rtgate-other-secret-0123456789-abcdefghijklmno!";

EVP_PKEY *tk_new_rsa(int bits)
{
    EVP_PKEY *pk = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)bits);
    cr_assert_not_null(pk, "RSA key generation");
    return pk;
}

EVP_PKEY *tk_new_ec(const char *curve)
{
    EVP_PKEY *pk = EVP_PKEY_Q_keygen(NULL, NULL, "EC", curve);
    cr_assert_not_null(pk, "EC key generation");
    return pk;
}

/* Keys live as long as the test process (one test, under Criterion). */
#define LAZY_KEY(fn, make)                                                                         \
    EVP_PKEY *fn(void)                                                                             \
    {                                                                                              \
        static EVP_PKEY *k;                                                                        \
        if (!k)                                                                                    \
            k = make;                                                                              \
        return k;                                                                                  \
    }
LAZY_KEY(tk_rsa, tk_new_rsa(2048))
LAZY_KEY(tk_rsa_other, tk_new_rsa(2048))
LAZY_KEY(tk_ec, tk_new_ec("P-256"))
LAZY_KEY(tk_ec_other, tk_new_ec("P-256"))

static char *bio_text(BIO *bio)
{
    char *data;
    long n = BIO_get_mem_data(bio, &data);
    char *out = malloc((size_t)n + 1);
    memcpy(out, data, (size_t)n);
    out[n] = '\0';
    BIO_free(bio);
    return out;
}

char *tk_pem_public(EVP_PKEY *pk)
{
    BIO *bio = BIO_new(BIO_s_mem());
    cr_assert(PEM_write_bio_PUBKEY(bio, pk) == 1);
    return bio_text(bio);
}

char *tk_pem_private(EVP_PKEY *pk)
{
    BIO *bio = BIO_new(BIO_s_mem());
    cr_assert(PEM_write_bio_PrivateKey(bio, pk, NULL, NULL, 0, NULL, NULL) == 1);
    return bio_text(bio);
}

struct auth_key *tk_key(enum auth_alg alg)
{
    char err[256] = "";
    struct auth_key *k = NULL;
    rt_status st;
    if (alg == AUTH_HS256) {
        st = auth_key_create(TK_SECRET, sizeof TK_SECRET, alg, err, sizeof err, &k);
    } else {
        char *pem = tk_pem_public(alg == AUTH_RS256 ? tk_rsa() : tk_ec());
        st = auth_key_create((const uint8_t *)pem, strlen(pem), alg, err, sizeof err, &k);
        free(pem);
    }
    cr_assert_eq(st, RT_OK, "key for %s: %s", auth_alg_name(alg), err);
    return k;
}

char *tk_b64url(const void *p, size_t n)
{
    static const char A[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    const uint8_t *in = p;
    char *out = malloc(n / 3 * 4 + 5);
    size_t o = 0, i = 0;
    for (; i + 3 <= n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        out[o++] = A[v >> 18];
        out[o++] = A[(v >> 12) & 63];
        out[o++] = A[(v >> 6) & 63];
        out[o++] = A[v & 63];
    }
    if (n - i == 1) {
        uint32_t v = (uint32_t)in[i] << 16;
        out[o++] = A[v >> 18];
        out[o++] = A[(v >> 12) & 63];
    } else if (n - i == 2) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
        out[o++] = A[v >> 18];
        out[o++] = A[(v >> 12) & 63];
        out[o++] = A[(v >> 6) & 63];
    }
    out[o] = '\0';
    return out;
}

/* The DER ECDSA signature as the 64 bytes r || s of JWS. */
static void der_to_raw(const uint8_t *der, size_t len, uint8_t raw[64])
{
    const unsigned char *p = der;
    ECDSA_SIG *sig = d2i_ECDSA_SIG(NULL, &p, (long)len);
    cr_assert_not_null(sig);
    const BIGNUM *r, *s;
    ECDSA_SIG_get0(sig, &r, &s);
    cr_assert(BN_bn2binpad(r, raw, 32) == 32 && BN_bn2binpad(s, raw + 32, 32) == 32);
    ECDSA_SIG_free(sig);
}

char *tk_sign_input(const char *alg, EVP_PKEY *pk, const uint8_t *secret, size_t secret_len,
                    const char *input)
{
    uint8_t sig[1024];
    size_t sig_len = 0;
    if (!strcmp(alg, "HS256")) {
        unsigned int n = 0;
        HMAC(EVP_sha256(), secret, (int)secret_len, (const unsigned char *)input, strlen(input),
             sig, &n);
        sig_len = n;
    } else if (!strcmp(alg, "RS256") || !strcmp(alg, "ES256")) {
        EVP_MD_CTX *ctx = EVP_MD_CTX_new();
        sig_len = sizeof sig;
        cr_assert(EVP_DigestSignInit(ctx, NULL, EVP_sha256(), NULL, pk) == 1);
        cr_assert(EVP_DigestSign(ctx, sig, &sig_len, (const unsigned char *)input, strlen(input)) ==
                  1);
        EVP_MD_CTX_free(ctx);
        if (!strcmp(alg, "ES256")) {
            uint8_t raw[64];
            der_to_raw(sig, sig_len, raw);
            memcpy(sig, raw, 64);
            sig_len = 64;
        }
    }
    return tk_b64url(sig, sig_len);
}

char *tk_sign(const char *alg, EVP_PKEY *pk, const uint8_t *secret, size_t secret_len,
              const char *header_json, const char *claims_json)
{
    char *h = tk_b64url(header_json, strlen(header_json));
    char *c = tk_b64url(claims_json, strlen(claims_json));
    size_t n = strlen(h) + strlen(c) + 2;
    char *input = malloc(n);
    snprintf(input, n, "%s.%s", h, c);
    char *s = tk_sign_input(alg, pk, secret, secret_len, input);
    size_t tn = n + strlen(s) + 1;
    char *token = malloc(tn);
    snprintf(token, tn, "%s.%s", input, s);
    free(h);
    free(c);
    free(input);
    free(s);
    return token;
}

char *tk_token(enum auth_alg alg, const char *claims_json)
{
    char header[64];
    snprintf(header, sizeof header, "{\"alg\":\"%s\",\"typ\":\"JWT\"}", auth_alg_name(alg));
    EVP_PKEY *pk = alg == AUTH_RS256 ? tk_rsa() : alg == AUTH_ES256 ? tk_ec() : NULL;
    return tk_sign(auth_alg_name(alg), pk, TK_SECRET, sizeof TK_SECRET, header, claims_json);
}

enum auth_result tk_verify(const struct auth_key *key, const char *token, int64_t now_ms,
                           uint32_t leeway_ms, struct auth_claims **out)
{
    struct auth_claims *c = NULL;
    enum auth_result r = auth_verify(key, token, strlen(token), now_ms, leeway_ms, &c);
    if (r != AUTH_OK)
        cr_assert_null(c, "claims must be NULL on refusal");
    if (out)
        *out = c;
    else
        auth_claims_destroy(c);
    return r;
}
