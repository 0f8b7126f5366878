/*
 * certs.c: throwaway CA and server certificates for tests (certs.h).
 */
#include "certs.h"

#include <criterion/criterion.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <stdio.h>

static EVP_PKEY *new_key(void)
{
    EVP_PKEY *k = EVP_EC_gen("P-256");
    cr_assert(k, "EC key");
    return k;
}

static void add_ext(X509 *cert, X509 *issuer, int nid, const char *value)
{
    X509V3_CTX ctx;
    X509V3_set_ctx_nodb(&ctx);
    X509V3_set_ctx(&ctx, issuer, cert, NULL, NULL, 0);
    X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
    cr_assert(ext, "extension %d=%s", nid, value);
    X509_add_ext(cert, ext, -1);
    X509_EXTENSION_free(ext);
}

/* Unsigned yet: issued by `issuer`, or by itself when NULL. */
static X509 *new_cert(EVP_PKEY *key, const char *cn, X509 *issuer, long serial)
{
    X509 *c = X509_new();
    X509_set_version(c, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(c), serial);
    X509_gmtime_adj(X509_getm_notBefore(c), -3600);
    X509_gmtime_adj(X509_getm_notAfter(c), 86400);
    X509_set_pubkey(c, key);
    X509_NAME *name = X509_get_subject_name(c);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
    X509_set_issuer_name(c, issuer ? X509_get_subject_name(issuer) : name);
    return c;
}

void test_ca_make(struct test_ca *ca, const char *dir, const char *name)
{
    static long serial = 1;
    ca->key = new_key();
    ca->cert = new_cert(ca->key, name, NULL, serial++);
    add_ext(ca->cert, ca->cert, NID_basic_constraints, "critical,CA:TRUE");
    add_ext(ca->cert, ca->cert, NID_key_usage, "critical,keyCertSign,cRLSign");
    cr_assert(X509_sign(ca->cert, ca->key, EVP_sha256()) > 0);
    snprintf(ca->pem_path, sizeof(ca->pem_path), "%s/%s.pem", dir, name);
    FILE *f = fopen(ca->pem_path, "w");
    cr_assert(f);
    PEM_write_X509(f, ca->cert);
    fclose(f);
}

void test_ca_free(struct test_ca *ca)
{
    X509_free(ca->cert);
    EVP_PKEY_free(ca->key);
}

SSL_CTX *test_server_ctx(const struct test_ca *ca, const char *san)
{
    static long serial = 1000;
    EVP_PKEY *key = new_key();
    X509 *c = new_cert(key, "nats test server", ca->cert, serial++);
    add_ext(c, ca->cert, NID_subject_alt_name, san);
    add_ext(c, ca->cert, NID_ext_key_usage, "serverAuth");
    cr_assert(X509_sign(c, ca->key, EVP_sha256()) > 0);
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    cr_assert(ctx);
    cr_assert(SSL_CTX_use_certificate(ctx, c) == 1);
    cr_assert(SSL_CTX_use_PrivateKey(ctx, key) == 1);
    X509_free(c);
    EVP_PKEY_free(key);
    return ctx;
}
