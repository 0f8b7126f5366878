/*
 * test_keys.c: loading the verification key, and the configurations it
 * refuses at start because they would let a forger in.
 */
#include "helpers.h"

#include <criterion/criterion.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static rt_status make(const void *bytes, size_t len, enum auth_alg alg, char *err, size_t n,
                      struct auth_key **out)
{
    return auth_key_create(bytes, len, alg, err, n, out);
}

static void expect_refused(const void *bytes, size_t len, enum auth_alg alg, const char *needle)
{
    char err[512] = "";
    struct auth_key *k = (struct auth_key *)1;
    cr_assert_eq(make(bytes, len, alg, err, sizeof err, &k), RT_INVAL, "alg %s accepted",
                 auth_alg_name(alg));
    cr_assert_null(k);
    cr_assert(strstr(err, needle), "error '%s' should mention '%s'", err, needle);
}

Test(keys, alg_names_parse_exactly)
{
    enum auth_alg a;
    cr_assert(auth_alg_parse("RS256", &a) && a == AUTH_RS256);
    cr_assert(auth_alg_parse("HS256", &a) && a == AUTH_HS256);
    cr_assert(auth_alg_parse("ES256", &a) && a == AUTH_ES256);
    cr_assert_not(auth_alg_parse("none", &a));
    cr_assert_not(auth_alg_parse("rs256", &a));
    cr_assert_not(auth_alg_parse("HS384", &a));
    cr_assert_not(auth_alg_parse("", &a));
}

Test(keys, the_algorithm_is_derived_from_a_pem_public_key)
{
    EVP_PKEY *pks[] = {tk_rsa(), tk_ec()};
    enum auth_alg want[] = {AUTH_RS256, AUTH_ES256};
    for (int i = 0; i < 2; i++) {
        char *pem = tk_pem_public(pks[i]);
        struct auth_key *k = NULL;
        char err[256] = "";
        cr_assert_eq(make(pem, strlen(pem), AUTH_ALG_AUTO, err, sizeof err, &k), RT_OK, "%s", err);
        cr_assert_eq(auth_key_alg(k), want[i]);
        auth_key_destroy(k);
        free(pem);
    }
}

Test(keys, a_secret_needs_its_algorithm_said)
{
    expect_refused(TK_SECRET, sizeof TK_SECRET, AUTH_ALG_AUTO, "--jwt-alg HS256");
}

Test(keys, the_algorithm_must_fit_the_key)
{
    char *rsa = tk_pem_public(tk_rsa()), *ec = tk_pem_public(tk_ec());
    expect_refused(rsa, strlen(rsa), AUTH_ES256, "does not fit");
    expect_refused(ec, strlen(ec), AUTH_RS256, "does not fit");
    expect_refused(TK_SECRET, sizeof TK_SECRET, AUTH_RS256, "PEM public key");
    free(rsa);
    free(ec);
}

/* The configuration side of the confusion: a public key as HMAC secret. */
Test(keys, hs256_refuses_a_public_key_as_its_secret)
{
    char *pem = tk_pem_public(tk_rsa());
    expect_refused(pem, strlen(pem), AUTH_HS256, "PEM key");
    free(pem);
    unsigned char *der = NULL;
    int n = i2d_PUBKEY(tk_ec(), &der);
    cr_assert_gt(n, 0);
    expect_refused(der, (size_t)n, AUTH_HS256, "DER public key");
    OPENSSL_free(der);
}

/* A DER key is binary: one ending in a newline byte is still refused (the
 * secret's trailing newlines are trimmed only after the DER check). */
Test(keys, hs256_refuses_a_der_public_key_ending_in_a_newline_byte)
{
    for (int end = 0; end < 2; end++) {
        unsigned char want = end ? '\r' : '\n';
        unsigned char *der = NULL;
        int n = 0;
        for (int tries = 0; tries < 5000; tries++) {
            EVP_PKEY *pk = tk_new_ec("P-256");
            OPENSSL_free(der);
            der = NULL;
            n = i2d_PUBKEY(pk, &der);
            EVP_PKEY_free(pk);
            if (n > 0 && der[n - 1] == want)
                break;
        }
        cr_assert(n > 0 && der[n - 1] == want, "no key ending in 0x%02x was made", want);
        expect_refused(der, (size_t)n, AUTH_HS256, "DER public key");
        OPENSSL_free(der);
    }
}

Test(keys, short_secrets_are_refused_and_newlines_trimmed)
{
    expect_refused("0123456789012345678901234567890", 31, AUTH_HS256, "at least 32 bytes");
    /* 31 bytes and a newline: still 31 */
    expect_refused("0123456789012345678901234567890\n", 32, AUTH_HS256, "at least 32 bytes");
    struct auth_key *k = NULL;
    char err[256];
    cr_assert_eq(make("01234567890123456789012345678901\r\n", 34, AUTH_HS256, err, sizeof err, &k),
                 RT_OK);
    /* The trimmed secret is the HMAC key: a token signed with those 32 bytes verifies. */
    char *t = tk_sign("HS256", NULL, (const uint8_t *)"01234567890123456789012345678901", 32,
                      "{\"alg\":\"HS256\"}", "{\"sub\":\"u\"}");
    cr_assert_eq(tk_verify(k, t, 0, 0, NULL), AUTH_OK);
    free(t);
    auth_key_destroy(k);
}

Test(keys, private_keys_weak_rsa_and_other_curves_are_refused)
{
    char *priv = tk_pem_private(tk_ec());
    expect_refused(priv, strlen(priv), AUTH_ES256, "private key");
    free(priv);
    EVP_PKEY *small = tk_new_rsa(1024);
    char *pem = tk_pem_public(small);
    expect_refused(pem, strlen(pem), AUTH_RS256, "2048 bits");
    free(pem);
    EVP_PKEY_free(small);
    EVP_PKEY *p384 = tk_new_ec("P-384");
    pem = tk_pem_public(p384);
    expect_refused(pem, strlen(pem), AUTH_ES256, "P-256");
    expect_refused(pem, strlen(pem), AUTH_ALG_AUTO, "P-256");
    free(pem);
    EVP_PKEY_free(p384);
    EVP_PKEY *ed = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
    pem = tk_pem_public(ed);
    expect_refused(pem, strlen(pem), AUTH_ALG_AUTO, "neither RSA");
    free(pem);
    EVP_PKEY_free(ed);
    const char *garbage =
        "-----BEGIN PUBLIC KEY-----\nnot base64 at all\n-----END PUBLIC KEY-----\n";
    expect_refused(garbage, strlen(garbage), AUTH_RS256, "could be read");
}

Test(keys, a_certificate_gives_its_public_key)
{
    X509 *x = X509_new();
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
    X509_gmtime_adj(X509_getm_notBefore(x), 0);
    X509_gmtime_adj(X509_getm_notAfter(x), 3600);
    X509_set_pubkey(x, tk_ec());
    X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
                               (const unsigned char *)"rtgate-test", -1, -1, 0);
    X509_set_issuer_name(x, X509_get_subject_name(x));
    cr_assert_gt(X509_sign(x, tk_ec(), EVP_sha256()), 0);
    BIO *bio = BIO_new(BIO_s_mem());
    PEM_write_bio_X509(bio, x);
    char *data;
    long n = BIO_get_mem_data(bio, &data);
    struct auth_key *k = NULL;
    char err[256] = "";
    cr_assert_eq(make(data, (size_t)n, AUTH_ALG_AUTO, err, sizeof err, &k), RT_OK, "%s", err);
    cr_assert_eq(auth_key_alg(k), AUTH_ES256);
    char *t = tk_token(AUTH_ES256, "{\"sub\":\"u\"}");
    cr_assert_eq(tk_verify(k, t, 0, 0, NULL), AUTH_OK);
    free(t);
    auth_key_destroy(k);
    BIO_free(bio);
    X509_free(x);
}

Test(keys, key_files_are_read_and_bounded)
{
    char err[512] = "";
    struct auth_key *k = NULL;
    cr_assert_eq(auth_key_load("/nonexistent/rtgate.key", AUTH_HS256, err, sizeof err, &k),
                 RT_INVAL);
    cr_assert(strstr(err, "/nonexistent/rtgate.key"), "%s", err);
    char path[] = "/tmp/rtgate-auth-test-XXXXXX";
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    char *pem = tk_pem_public(tk_rsa());
    cr_assert_eq(write(fd, pem, strlen(pem)), (ssize_t)strlen(pem));
    cr_assert_eq(auth_key_load(path, AUTH_RS256, err, sizeof err, &k), RT_OK, "%s", err);
    cr_assert_eq(auth_key_alg(k), AUTH_RS256);
    auth_key_destroy(k);
    /* Past 64 KiB the file is refused unread. */
    char junk[4096];
    memset(junk, '\n', sizeof junk);
    for (int i = 0; i < 17; i++)
        cr_assert_eq(write(fd, junk, sizeof junk), (ssize_t)sizeof junk);
    cr_assert_eq(auth_key_load(path, AUTH_RS256, err, sizeof err, &k), RT_INVAL);
    cr_assert(strstr(err, "larger than"), "%s", err);
    close(fd);
    unlink(path);
    free(pem);
}
