/*
 * key.c: the verification key, pinned to one algorithm. An HS256 secret, or
 * a PEM public key (RSA for RS256, P-256 for ES256). The checks here refuse,
 * at start, the configurations that would let a forger in: a short secret,
 * a public key used as an HMAC secret, a private key on the gateway, a weak
 * RSA key, a curve the algorithm does not name.
 */
#include "auth_int.h"

#include <errno.h>
#include <openssl/bio.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const ALG_NAMES[] = {"auto", "HS256", "RS256", "ES256"};

const char *auth_alg_name(enum auth_alg alg)
{
    return (unsigned)alg < sizeof ALG_NAMES / sizeof ALG_NAMES[0] ? ALG_NAMES[alg] : "auto";
}

bool auth_alg_parse(const char *name, enum auth_alg *out)
{
    for (int a = AUTH_HS256; a <= AUTH_ES256; a++)
        if (strcmp(name, ALG_NAMES[a]) == 0) {
            *out = (enum auth_alg)a;
            return true;
        }
    return false;
}

enum auth_alg auth_key_alg(const struct auth_key *key)
{
    return key->alg;
}

static rt_status fail(char *err, size_t err_len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Writes the reason, clears OpenSSL's error queue, returns RT_INVAL. */
static rt_status fail(char *err, size_t err_len, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (err && err_len)
        vsnprintf(err, err_len, fmt, ap);
    va_end(ap);
    ERR_clear_error();
    return RT_INVAL;
}

static bool contains(const uint8_t *bytes, size_t len, const char *needle)
{
    size_t n = strlen(needle);
    for (size_t i = 0; i + n <= len; i++)
        if (memcmp(bytes + i, needle, n) == 0)
            return true;
    return false;
}

/* True if the bytes are a DER public key or certificate: as an HMAC secret,
 * a key anyone may read. */
static bool is_der_public(const uint8_t *bytes, size_t len)
{
    const unsigned char *p = bytes;
    EVP_PKEY *pk = d2i_PUBKEY(NULL, &p, (long)len);
    if (pk) {
        EVP_PKEY_free(pk);
        return true;
    }
    p = bytes;
    X509 *x = d2i_X509(NULL, &p, (long)len);
    if (x) {
        X509_free(x);
        return true;
    }
    ERR_clear_error();
    return false;
}

static rt_status make_hmac(struct auth_key *k, const uint8_t *bytes, size_t len, char *err,
                           size_t err_len)
{
    /* The DER check sees the bytes as they are: a binary key may well end in
     * 0x0a or 0x0d, and trimming it first would hide it from d2i. */
    bool der = is_der_public(bytes, len);
    while (len && (bytes[len - 1] == '\n' || bytes[len - 1] == '\r'))
        len--;
    if (contains(bytes, len, "-----BEGIN"))
        return fail(err, err_len,
                    "HS256 needs a shared secret, and this file holds a PEM key: a public key "
                    "used as an HMAC secret lets anyone sign tokens (use --jwt-alg RS256 or "
                    "ES256 for a public key)");
    if (der || is_der_public(bytes, len))
        return fail(err, err_len,
                    "HS256 needs a shared secret, and this file holds a DER public key or "
                    "certificate: anyone could sign tokens with it");
    if (len < AUTH_HMAC_KEY_MIN)
        return fail(err, err_len, "an HS256 secret must have at least %d bytes, this one has %zu",
                    AUTH_HMAC_KEY_MIN, len);
    return auth__hmac_init(k, bytes, len) == RT_OK
               ? RT_OK
               : fail(err, err_len, "OpenSSL could not set up HMAC-SHA256");
}

/* A PEM "PUBLIC KEY", or the key of a PEM "CERTIFICATE". */
static EVP_PKEY *read_public_pem(const uint8_t *bytes, size_t len)
{
    BIO *bio = BIO_new_mem_buf(bytes, (int)len);
    if (!bio)
        return NULL;
    EVP_PKEY *pk = PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL);
    if (!pk && BIO_reset(bio) == 1) {
        X509 *x = PEM_read_bio_X509(bio, NULL, NULL, NULL);
        if (x) {
            pk = X509_get_pubkey(x);
            X509_free(x);
        }
    }
    BIO_free(bio);
    ERR_clear_error();
    return pk;
}

static bool is_p256(EVP_PKEY *pk)
{
    char group[64];
    size_t glen = 0;
    if (!EVP_PKEY_get_utf8_string_param(pk, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof group, &glen))
        return false;
    return strcmp(group, "prime256v1") == 0 || strcmp(group, "P-256") == 0;
}

static rt_status make_public(struct auth_key *k, const uint8_t *bytes, size_t len,
                             enum auth_alg alg, char *err, size_t err_len)
{
    if (contains(bytes, len, "PRIVATE KEY"))
        return fail(err, err_len,
                    "this file holds a private key: give the gateway the public key only "
                    "(openssl pkey -in KEY -pubout -out KEY.pub)");
    if (!contains(bytes, len, "-----BEGIN") && alg == AUTH_ALG_AUTO)
        return fail(err, err_len, "not a PEM public key: a shared secret needs --jwt-alg HS256");
    if (!contains(bytes, len, "-----BEGIN"))
        return fail(err, err_len, "%s needs a PEM public key (\"PUBLIC KEY\" or \"CERTIFICATE\")",
                    auth_alg_name(alg));
    EVP_PKEY *pk = read_public_pem(bytes, len);
    if (!pk)
        return fail(err, err_len,
                    "no PEM \"PUBLIC KEY\" or \"CERTIFICATE\" could be read from this file");
    k->pkey = pk;
    enum auth_alg type = EVP_PKEY_is_a(pk, "RSA")  ? AUTH_RS256
                         : EVP_PKEY_is_a(pk, "EC") ? AUTH_ES256
                                                   : AUTH_ALG_AUTO;
    if (type == AUTH_ALG_AUTO)
        return fail(err, err_len, "the public key is neither RSA (RS256) nor EC (ES256)");
    if (alg == AUTH_ALG_AUTO)
        alg = type;
    if (alg != type)
        return fail(err, err_len, "--jwt-alg %s does not fit this %s public key",
                    auth_alg_name(alg), type == AUTH_RS256 ? "RSA" : "EC");
    if (type == AUTH_RS256 && EVP_PKEY_get_bits(pk) < AUTH_RSA_BITS_MIN)
        return fail(err, err_len, "RSA keys of fewer than %d bits are refused (this one: %d)",
                    AUTH_RSA_BITS_MIN, EVP_PKEY_get_bits(pk));
    if (type == AUTH_ES256 && !is_p256(pk))
        return fail(err, err_len, "ES256 needs a key on the P-256 curve (prime256v1)");
    k->alg = alg;
    k->sig_len = alg == AUTH_ES256 ? 64 : (size_t)EVP_PKEY_get_size(pk);
    return RT_OK;
}

rt_status auth_key_create(const uint8_t *bytes, size_t len, enum auth_alg alg, char *err,
                          size_t err_len, struct auth_key **out)
{
    *out = NULL;
    struct auth_key *k = calloc(1, sizeof *k);
    if (!k)
        return RT_NOMEM;
    rt_status st;
    if (alg == AUTH_HS256) {
        k->alg = AUTH_HS256;
        k->sig_len = 32;
        st = make_hmac(k, bytes, len, err, err_len);
    } else {
        st = make_public(k, bytes, len, alg, err, err_len);
    }
    if (st != RT_OK) {
        auth_key_destroy(k);
        return st;
    }
    *out = k;
    return RT_OK;
}

rt_status auth_key_load(const char *path, enum auth_alg alg, char *err, size_t err_len,
                        struct auth_key **out)
{
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f)
        return fail(err, err_len, "cannot open %s: %s", path, strerror(errno));
    uint8_t *buf = malloc(AUTH_KEY_FILE_MAX + 1);
    if (!buf) {
        fclose(f);
        return RT_NOMEM;
    }
    size_t len = fread(buf, 1, AUTH_KEY_FILE_MAX + 1, f);
    bool read_err = ferror(f);
    fclose(f);
    rt_status st;
    if (read_err)
        st = fail(err, err_len, "cannot read %s", path);
    else if (len > AUTH_KEY_FILE_MAX)
        st = fail(err, err_len, "%s is larger than %d bytes", path, AUTH_KEY_FILE_MAX);
    else
        st = auth_key_create(buf, len, alg, err, err_len, out);
    OPENSSL_cleanse(buf, AUTH_KEY_FILE_MAX + 1); /* it may have held a secret */
    free(buf);
    return st;
}

void auth_key_destroy(struct auth_key *key)
{
    if (!key)
        return;
    auth__hmac_free(key);
    EVP_PKEY_free(key->pkey);
    free(key);
}
