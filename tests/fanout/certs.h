/*
 * certs.h: throwaway certificates for the loop reader's TLS tests
 * (certs.c): a CA, and server certificates it signs for given names, made
 * with libcrypto at test time and written as PEM files into a temp dir.
 */
#ifndef TEST_CERTS_H
#define TEST_CERTS_H

#include <openssl/ssl.h>

struct test_ca {
    EVP_PKEY *key;
    X509 *cert;
    char pem_path[256]; /* the CA certificate, for --nats-ca */
};

/* A self-signed CA, its certificate written under dir (name.pem). */
void test_ca_make(struct test_ca *ca, const char *dir, const char *name);
void test_ca_free(struct test_ca *ca);

/*
 * A server context whose certificate the CA signed for san (an OpenSSL
 * subjectAltName value, e.g. "IP:127.0.0.1,DNS:localhost").
 */
SSL_CTX *test_server_ctx(const struct test_ca *ca, const char *san);

#endif
