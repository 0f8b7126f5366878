/*
 * nats_tls.c: TLS client sessions over memory BIOs (nats_tls.h). One BIO
 * takes what the socket read, the other holds the records to send; the
 * session never sees a file descriptor.
 */
#include "nats_tls.h"

#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct ntls_ctx {
    SSL_CTX *ssl_ctx;
};

struct ntls {
    SSL *ssl;
    BIO *in;  /* from the network; owned by ssl */
    BIO *out; /* to the network; owned by ssl */
};

/* The oldest queued OpenSSL error's text (the queue is emptied). */
static void take_ssl_error(char *buf, size_t cap, const char *fallback)
{
    unsigned long e = ERR_get_error();
    if (e)
        ERR_error_string_n(e, buf, cap);
    else
        snprintf(buf, cap, "%s", fallback);
    ERR_clear_error();
}

rt_status ntls_ctx_create(const char *ca_file, const char *cert_file, const char *key_file,
                          char *err, size_t err_cap, struct ntls_ctx **out)
{
    *out = NULL;
    char why[256];
    if ((cert_file && *cert_file) != (key_file && *key_file)) {
        snprintf(err, err_cap, "a client certificate needs both its file and its key file");
        return RT_INVAL;
    }
    struct ntls_ctx *c = calloc(1, sizeof(*c));
    SSL_CTX *s = c ? SSL_CTX_new(TLS_client_method()) : NULL;
    if (!s) {
        free(c);
        snprintf(err, err_cap, "cannot create a TLS context");
        return RT_NOMEM;
    }
    c->ssl_ctx = s;
    SSL_CTX_set_min_proto_version(s, TLS1_2_VERSION);
    SSL_CTX_set_verify(s, SSL_VERIFY_PEER, NULL);
    SSL_CTX_set_mode(s, SSL_MODE_RELEASE_BUFFERS);
    if (ca_file && *ca_file) {
        if (SSL_CTX_load_verify_locations(s, ca_file, NULL) != 1) {
            take_ssl_error(why, sizeof(why), "unreadable");
            snprintf(err, err_cap, "CA file %s: %s", ca_file, why);
            goto fail;
        }
    } else if (SSL_CTX_set_default_verify_paths(s) != 1) {
        take_ssl_error(why, sizeof(why), "unavailable");
        snprintf(err, err_cap, "the system's trusted certificates: %s", why);
        goto fail;
    }
    if (cert_file && *cert_file) {
        if (SSL_CTX_use_certificate_chain_file(s, cert_file) != 1) {
            take_ssl_error(why, sizeof(why), "unreadable");
            snprintf(err, err_cap, "certificate file %s: %s", cert_file, why);
            goto fail;
        }
        if (SSL_CTX_use_PrivateKey_file(s, key_file, SSL_FILETYPE_PEM) != 1 ||
            SSL_CTX_check_private_key(s) != 1) {
            take_ssl_error(why, sizeof(why), "unreadable");
            snprintf(err, err_cap, "key file %s: %s", key_file, why);
            goto fail;
        }
    }
    *out = c;
    return RT_OK;
fail:
    ntls_ctx_destroy(c);
    return RT_INVAL;
}

void ntls_ctx_destroy(struct ntls_ctx *ctx)
{
    if (!ctx)
        return;
    SSL_CTX_free(ctx->ssl_ctx);
    free(ctx);
}

static bool is_ip_literal(const char *host)
{
    unsigned char buf[sizeof(struct in6_addr)];
    return inet_pton(AF_INET, host, buf) == 1 || inet_pton(AF_INET6, host, buf) == 1;
}

rt_status ntls_start(struct ntls_ctx *ctx, const char *host, struct ntls **out)
{
    *out = NULL;
    struct ntls *t = calloc(1, sizeof(*t));
    if (!t)
        return RT_NOMEM;
    t->ssl = SSL_new(ctx->ssl_ctx);
    t->in = BIO_new(BIO_s_mem());
    t->out = BIO_new(BIO_s_mem());
    if (!t->ssl || !t->in || !t->out) {
        BIO_free(t->in);
        BIO_free(t->out);
        SSL_free(t->ssl);
        free(t);
        ERR_clear_error();
        return RT_NOMEM;
    }
    /* An empty input BIO means "wait for more", not end of stream. */
    BIO_set_mem_eof_return(t->in, -1);
    SSL_set_bio(t->ssl, t->in, t->out);
    SSL_set_connect_state(t->ssl);
    X509_VERIFY_PARAM *param = SSL_get0_param(t->ssl);
    X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    bool named;
    if (is_ip_literal(host)) {
        named = X509_VERIFY_PARAM_set1_ip_asc(param, host) == 1;
    } else {
        named = SSL_set1_host(t->ssl, host) == 1 && SSL_set_tlsext_host_name(t->ssl, host) == 1;
    }
    if (!named) {
        ntls_free(t);
        ERR_clear_error();
        return RT_INVAL;
    }
    *out = t;
    return RT_OK;
}

void ntls_free(struct ntls *t)
{
    if (!t)
        return;
    SSL_free(t->ssl); /* and both BIOs */
    free(t);
}

rt_status ntls_put(struct ntls *t, const void *p, size_t n)
{
    if (n == 0)
        return RT_OK;
    return BIO_write(t->in, p, (int)n) == (int)n ? RT_OK : RT_NOMEM;
}

/* Why a handshake or read failed: the certificate check first, it is the usual cause. */
static void failure_reason(struct ntls *t, int ret, char *why, size_t cap)
{
    long vr = SSL_get_verify_result(t->ssl);
    if (vr != X509_V_OK) {
        snprintf(why, cap, "certificate verify failed: %s", X509_verify_cert_error_string(vr));
        ERR_clear_error();
        return;
    }
    int e = SSL_get_error(t->ssl, ret);
    if (e == SSL_ERROR_ZERO_RETURN)
        snprintf(why, cap, "closed by the server (TLS close_notify)");
    else
        take_ssl_error(why, cap, "TLS failure");
}

rt_status ntls_handshake(struct ntls *t, char *why, size_t why_cap)
{
    int r = SSL_do_handshake(t->ssl);
    if (r == 1)
        return RT_OK;
    int e = SSL_get_error(t->ssl, r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
        return RT_AGAIN;
    failure_reason(t, r, why, why_cap);
    return RT_ERR;
}

ssize_t ntls_read(struct ntls *t, void *buf, size_t cap, char *why, size_t why_cap)
{
    size_t got = 0;
    int r = SSL_read_ex(t->ssl, buf, cap, &got);
    if (r == 1)
        return (ssize_t)got;
    int e = SSL_get_error(t->ssl, r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
        return 0;
    failure_reason(t, r, why, why_cap);
    return -1;
}

rt_status ntls_write(struct ntls *t, const void *p, size_t n)
{
    size_t done = 0;
    if (n == 0)
        return RT_OK;
    /* The output BIO grows as needed, so a write completes in one call. */
    if (SSL_write_ex(t->ssl, p, n, &done) != 1 || done != n) {
        ERR_clear_error();
        return RT_ERR;
    }
    return RT_OK;
}

size_t ntls_pending(const struct ntls *t)
{
    return BIO_ctrl_pending(t->out);
}

size_t ntls_take(struct ntls *t, void *buf, size_t cap)
{
    int r = BIO_read(t->out, buf, (int)(cap > INT32_MAX ? INT32_MAX : cap));
    return r > 0 ? (size_t)r : 0;
}

const char *ntls_version(const struct ntls *t)
{
    return SSL_get_version(t->ssl);
}
