/*
 * sig.c: JWS signatures (RFC 7518 section 3) through OpenSSL's EVP layer.
 * HS256: HMAC-SHA256, compared in constant time. RS256: RSASSA-PKCS1-v1_5
 * with SHA-256. ES256: ECDSA P-256 with SHA-256, whose JWS form is the raw
 * 64 bytes r || s; OpenSSL wants DER, so it is converted, and any other
 * length is refused before OpenSSL sees it.
 */
#include "auth_int.h"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/params.h>
#include <string.h>

#define SHA256_LEN 32
#define ES256_HALF 32

rt_status auth__hmac_init(struct auth_key *key, const uint8_t *secret, size_t len)
{
    EVP_MAC *mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    if (!mac)
        return RT_ERR;
    key->hmac = EVP_MAC_CTX_new(mac);
    EVP_MAC_free(mac); /* the context keeps its own reference */
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)(uintptr_t) "SHA256", 0),
        OSSL_PARAM_construct_end(),
    };
    if (!key->hmac || !EVP_MAC_init(key->hmac, secret, len, params)) {
        ERR_clear_error();
        return RT_ERR;
    }
    return RT_OK;
}

void auth__hmac_free(struct auth_key *key)
{
    EVP_MAC_CTX_free(key->hmac);
    key->hmac = NULL;
}

static bool hmac_ok(const struct auth_key *key, const uint8_t *data, size_t len, const uint8_t *sig)
{
    uint8_t mac[SHA256_LEN];
    size_t mac_len = 0;
    /* A copy of the keyed context: the key schedule is not redone per token. */
    EVP_MAC_CTX *ctx = EVP_MAC_CTX_dup(key->hmac);
    bool ok = ctx && EVP_MAC_update(ctx, data, len) &&
              EVP_MAC_final(ctx, mac, &mac_len, sizeof mac) && mac_len == SHA256_LEN &&
              CRYPTO_memcmp(mac, sig, SHA256_LEN) == 0;
    EVP_MAC_CTX_free(ctx);
    OPENSSL_cleanse(mac, sizeof mac);
    return ok;
}

rt_status auth_key_derive(const struct auth_key *key, const char *label, uint8_t out[32])
{
    if (!key || !key->hmac)
        return RT_INVAL;
    size_t mac_len = 0;
    EVP_MAC_CTX *ctx = EVP_MAC_CTX_dup(key->hmac);
    bool ok = ctx && EVP_MAC_update(ctx, (const uint8_t *)label, strlen(label)) &&
              EVP_MAC_final(ctx, out, &mac_len, SHA256_LEN) && mac_len == SHA256_LEN;
    EVP_MAC_CTX_free(ctx);
    if (!ok)
        ERR_clear_error();
    return ok ? RT_OK : RT_ERR;
}

static bool evp_verify(EVP_PKEY *pkey, const uint8_t *data, size_t len, const uint8_t *sig,
                       size_t sig_len)
{
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    bool ok = ctx && EVP_DigestVerifyInit(ctx, NULL, EVP_sha256(), NULL, pkey) == 1 &&
              EVP_DigestVerify(ctx, sig, sig_len, data, len) == 1;
    EVP_MD_CTX_free(ctx);
    return ok;
}

/* r || s (32 + 32 bytes, big-endian) as a DER ECDSA-Sig-Value. */
static bool es256_ok(EVP_PKEY *pkey, const uint8_t *data, size_t len, const uint8_t *sig)
{
    ECDSA_SIG *es = ECDSA_SIG_new();
    BIGNUM *r = BN_bin2bn(sig, ES256_HALF, NULL);
    BIGNUM *s = BN_bin2bn(sig + ES256_HALF, ES256_HALF, NULL);
    if (!es || !r || !s || !ECDSA_SIG_set0(es, r, s)) {
        BN_free(r);
        BN_free(s);
        ECDSA_SIG_free(es);
        return false;
    }
    unsigned char *der = NULL;
    int der_len = i2d_ECDSA_SIG(es, &der);
    ECDSA_SIG_free(es); /* frees r and s */
    bool ok = der_len > 0 && evp_verify(pkey, data, len, der, (size_t)der_len);
    OPENSSL_free(der);
    return ok;
}

bool auth__sig_ok(const struct auth_key *key, const uint8_t *data, size_t len, const uint8_t *sig,
                  size_t sig_len)
{
    if (sig_len != key->sig_len)
        return false;
    bool ok;
    switch (key->alg) {
    case AUTH_HS256:
        ok = hmac_ok(key, data, len, sig);
        break;
    case AUTH_RS256:
        ok = evp_verify(key->pkey, data, len, sig, sig_len);
        break;
    case AUTH_ES256:
        ok = es256_ok(key->pkey, data, len, sig);
        break;
    default:
        ok = false;
        break;
    }
    ERR_clear_error(); /* a failed verification leaves errors behind */
    return ok;
}
