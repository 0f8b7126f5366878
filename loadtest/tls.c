/*
 * tls.c: the TLS client under wss:// URLs (OpenSSL), for net.c. Each
 * handshake is a full one: the client keeps no session cache, so a load of
 * new connections costs the server what first visits cost it. The server's
 * certificate is checked against --tls-ca when given; without it it is not
 * (the tool only targets loopback). Non-blocking throughout: the calls below
 * map OpenSSL's WANT_READ / WANT_WRITE to EAGAIN like recv() and send().
 */
#include "load.h"

#include <errno.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <string.h>

void *lt_tls_ctx_create(const char *cafile, char *err, size_t err_cap)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx) {
        snprintf(err, err_cap, "cannot create a TLS context");
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
    /* Write retries come from the write queue, whose buffer moves. */
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                              SSL_MODE_RELEASE_BUFFERS);
    if (cafile) {
        if (SSL_CTX_load_verify_locations(ctx, cafile, NULL) != 1) {
            snprintf(err, err_cap, "--tls-ca %s: cannot be read as PEM certificates", cafile);
            SSL_CTX_free(ctx);
            return NULL;
        }
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    }
    return ctx;
}

void lt_tls_ctx_free(void *ctx)
{
    SSL_CTX_free(ctx);
}

void *lt_tls_new(void *ctx, int fd, const char *server_name)
{
    SSL *ssl = SSL_new(ctx);
    if (!ssl)
        return NULL;
    if (SSL_set_fd(ssl, fd) != 1) {
        SSL_free(ssl);
        return NULL;
    }
    /* SNI is for names only; verification checks the name or the IP. */
    bool ip = strchr(server_name, ':') || strspn(server_name, "0123456789.") == strlen(server_name);
    if (!ip)
        SSL_set_tlsext_host_name(ssl, server_name);
    if (ip ? !X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), server_name)
           : !SSL_set1_host(ssl, server_name)) {
        SSL_free(ssl);
        return NULL;
    }
    SSL_set_connect_state(ssl);
    return ssl;
}

void lt_tls_free(void *ssl)
{
    SSL_free(ssl);
}

/* errno for an OpenSSL result r of call on ssl: EAGAIN to wait, else an error. */
static int map_error(SSL *ssl, int r, bool *want_write)
{
    int e = SSL_get_error(ssl, r);
    ERR_clear_error();
    if (want_write)
        *want_write = e == SSL_ERROR_WANT_WRITE;
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
        return EAGAIN;
    if (e == SSL_ERROR_ZERO_RETURN)
        return 0;
    if (e == SSL_ERROR_SYSCALL && errno)
        return errno;
    return EPROTO;
}

int lt_tls_handshake(void *ssl, bool *want_write)
{
    int r = SSL_do_handshake(ssl);
    if (r == 1)
        return 0;
    int e = map_error(ssl, r, want_write);
    return e ? e : EPROTO;
}

ssize_t lt_tls_recv(void *ssl, void *buf, size_t cap)
{
    size_t got = 0;
    int r = SSL_read_ex(ssl, buf, cap, &got);
    if (r == 1)
        return (ssize_t)got;
    int e = map_error(ssl, r, NULL);
    if (e == 0)
        return 0; /* close_notify */
    errno = e;
    return -1;
}

ssize_t lt_tls_send(void *ssl, const void *p, size_t n)
{
    size_t sent = 0;
    int r = SSL_write_ex(ssl, p, n, &sent);
    if (r == 1)
        return (ssize_t)sent;
    int e = map_error(ssl, r, NULL);
    errno = e ? e : EPIPE;
    return -1;
}

bool lt_tls_pending(void *ssl)
{
    return SSL_pending(ssl) > 0;
}
