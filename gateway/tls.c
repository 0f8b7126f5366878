/*
 * tls.c: wss:// and https:// on the gateway's one listener. lws does the TLS
 * (the adopted sockets of listener.c go through SSL_accept because the vhost
 * has an SSL_CTX); this file owns what that SSL_CTX serves. The certificate
 * chain and key are read here, bounded, parsed and checked against each other
 * before anything uses them: at start (a clear error and exit 2 when they
 * cannot serve) and on SIGHUP, when a bad new file leaves the old pair in
 * service and the log says why. A reload changes what new handshakes get
 * through OpenSSL's certificate callback; open connections keep theirs. The
 * files are read on the loop thread: a few KiB, once per SIGHUP, never on a
 * connection's path. Loop thread.
 */
#include "gw.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

#define PEM_FILE_MAX (1024 * 1024) /* a chain of a dozen certificates is ~20 KiB */

/* A certificate chain and its key, checked to belong together. */
struct tls_pair {
    X509 *leaf;
    STACK_OF(X509) * chain; /* intermediates, may be empty */
    EVP_PKEY *key;
};

struct gw_tls {
    struct gw_server *srv;
    uv_signal_t sighup;
    SSL_CTX *ctx;           /* lws's, for the vhost; NULL until attached */
    struct tls_pair served; /* what new handshakes get */
    unsigned generation;    /* 0: the pair installed in ctx at start; n: the n-th reload */
};

static void pair_free(struct tls_pair *p)
{
    X509_free(p->leaf);
    sk_X509_pop_free(p->chain, X509_free);
    EVP_PKEY_free(p->key);
    memset(p, 0, sizeof *p);
}

/* The reason of OpenSSL's latest error, or fallback. */
static void openssl_why(char *why, size_t cap, const char *fallback)
{
    unsigned long e = ERR_peek_last_error();
    if (e)
        ERR_error_string_n(e, why, cap);
    else
        snprintf(why, cap, "%s", fallback);
    ERR_clear_error();
}

/* Reads a whole regular file of at most PEM_FILE_MAX bytes into a memory BIO. */
static BIO *read_bounded(const char *path, char *why, size_t cap)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0) {
        snprintf(why, cap, "%s: %s", path, strerror(errno));
        return NULL;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size > PEM_FILE_MAX) {
        snprintf(why, cap, "%s: not a regular file of at most %d bytes", path, PEM_FILE_MAX);
        close(fd);
        return NULL;
    }
    char *data = malloc((size_t)st.st_size + 1);
    size_t have = 0;
    while (data && have < (size_t)st.st_size) {
        ssize_t n = read(fd, data + have, (size_t)st.st_size - have);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        have += (size_t)n;
    }
    close(fd);
    if (!data || have != (size_t)st.st_size) {
        snprintf(why, cap, "%s: could not be read whole", path);
        if (data)
            OPENSSL_cleanse(data, have);
        free(data);
        return NULL;
    }
    BIO *bio = BIO_new(BIO_s_mem());
    if (!bio || BIO_write(bio, data, (int)have) != (int)have) {
        snprintf(why, cap, "%s: out of memory", path);
        BIO_free(bio);
        bio = NULL;
    }
    OPENSSL_cleanse(data, have); /* the key file: the BIO's copy is cleared when freed */
    free(data);
    return bio;
}

/* An encrypted key would make OpenSSL ask a terminal for a passphrase: refuse. */
static int no_passphrase(char *buf, int size, int rwflag, void *u)
{
    (void)buf, (void)size, (void)rwflag, (void)u;
    return -1;
}

static bool read_chain(BIO *bio, const char *path, struct tls_pair *p, char *why, size_t cap)
{
    p->leaf = PEM_read_bio_X509_AUX(bio, NULL, no_passphrase, NULL);
    if (!p->leaf) {
        char ossl[160];
        openssl_why(ossl, sizeof ossl, "no certificate");
        snprintf(why, cap, "%s: no PEM certificate (%s)", path, ossl);
        return false;
    }
    p->chain = sk_X509_new_null();
    if (!p->chain) {
        snprintf(why, cap, "out of memory");
        return false;
    }
    X509 *x;
    while ((x = PEM_read_bio_X509(bio, NULL, no_passphrase, NULL)))
        if (!sk_X509_push(p->chain, x)) {
            X509_free(x);
            snprintf(why, cap, "out of memory");
            return false;
        }
    unsigned long e = ERR_peek_last_error();
    if (ERR_GET_LIB(e) == ERR_LIB_PEM && ERR_GET_REASON(e) == PEM_R_NO_START_LINE) {
        ERR_clear_error(); /* the normal end of the file */
        return true;
    }
    char ossl[160];
    openssl_why(ossl, sizeof ossl, "bad certificate");
    snprintf(why, cap, "%s: a certificate after the first cannot be read (%s)", path, ossl);
    return false;
}

/* Loads and checks the configured pair into *p. False with why filled. */
static bool pair_load(const struct gw_config *cfg, struct tls_pair *p, char *why, size_t cap)
{
    memset(p, 0, sizeof *p);
    ERR_clear_error();
    BIO *bio = read_bounded(cfg->tls_cert, why, cap);
    if (!bio)
        return false;
    bool ok = read_chain(bio, cfg->tls_cert, p, why, cap);
    BIO_free(bio);
    if (ok && !(bio = read_bounded(cfg->tls_key, why, cap)))
        ok = false;
    if (ok) {
        p->key = PEM_read_bio_PrivateKey(bio, NULL, no_passphrase, NULL);
        BIO_free(bio);
        if (!p->key) {
            char ossl[160];
            openssl_why(ossl, sizeof ossl, "no key");
            snprintf(why, cap, "%s: no unencrypted PEM private key (%s)", cfg->tls_key, ossl);
            ok = false;
        }
    }
    if (ok && X509_check_private_key(p->leaf, p->key) != 1) {
        ERR_clear_error();
        snprintf(why, cap, "%s does not hold the private key of %s's first certificate",
                 cfg->tls_key, cfg->tls_cert);
        ok = false;
    }
    if (!ok)
        pair_free(p);
    return ok;
}

/* Logs what a pair is: its subject and expiry (never key material). */
static void log_pair(const char *event, const struct tls_pair *p, unsigned generation)
{
    char subject[256] = "", not_after[64] = "";
    X509_NAME_oneline(X509_get_subject_name(p->leaf), subject, sizeof subject);
    BIO *b = BIO_new(BIO_s_mem());
    if (b && ASN1_TIME_print(b, X509_get0_notAfter(p->leaf))) {
        int n = BIO_read(b, not_after, sizeof not_after - 1);
        not_after[n > 0 ? n : 0] = '\0';
    }
    BIO_free(b);
    int days = 0, secs = 0;
    bool expired =
        ASN1_TIME_diff(&days, &secs, NULL, X509_get0_notAfter(p->leaf)) && (days < 0 || secs < 0);
    rt_log(expired ? RT_LOG_WARN : RT_LOG_INFO, event,
           "subject=\"%s\" not_after=\"%s\" chain=%d generation=%u%s", subject, not_after,
           sk_X509_num(p->chain), generation, expired ? " expired=true" : "");
}

rt_status gw_tls_check_files(const struct gw_config *cfg)
{
    if (!cfg->tls_cert[0])
        return RT_OK;
    struct tls_pair p;
    char why[512];
    if (!pair_load(cfg, &p, why, sizeof why)) {
        fprintf(stderr, "rtgate: TLS: %s\n", why);
        return RT_INVAL;
    }
    pair_free(&p);
    return RT_OK;
}

/*
 * OpenSSL's certificate callback, for each handshake before the certificate
 * is chosen. After a reload the SSL's copy of the context's certificates is
 * replaced: cleared first, since a pair of another key type (RSA to ECDSA)
 * would otherwise sit beside the old one and could still be chosen.
 */
static int on_cert(SSL *ssl, void *arg)
{
    struct gw_tls *t = arg;
    if (!t->generation)
        return 1;
    SSL_certs_clear(ssl);
    return SSL_use_cert_and_key(ssl, t->served.leaf, t->served.key, t->served.chain, 1) == 1;
}

int gw_tls_attach(struct gw_server *srv, void *ssl_ctx)
{
    struct gw_tls *t = srv->tls;
    SSL_CTX *ctx = ssl_ctx;
    if (!t || !ctx)
        return 0;
    t->ctx = ctx;
    /* No renegotiation (a client could make the server redo handshakes);
     * TLS 1.2 at least, as browsers require. */
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION);
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    if (SSL_CTX_use_cert_and_key(ctx, t->served.leaf, t->served.key, t->served.chain, 1) != 1) {
        char why[160];
        openssl_why(why, sizeof why, "refused");
        rt_log(RT_LOG_ERROR, "tls_failed", "why=\"%s\"", why);
        return -1;
    }
    SSL_CTX_set_cert_cb(ctx, on_cert, t);
    return 0;
}

void gw_tls_reload(struct gw_tls *t)
{
    struct tls_pair fresh;
    char why[512];
    if (!pair_load(t->srv->cfg, &fresh, why, sizeof why)) {
        rt_log(RT_LOG_ERROR, "tls_reload_failed", "why=\"%s\" kept_generation=%u", why,
               t->generation);
        return;
    }
    pair_free(&t->served); /* handshakes in progress hold their own references */
    t->served = fresh;
    t->generation++;
    log_pair("tls_reloaded", &t->served, t->generation);
}

static void on_sighup(uv_signal_t *h, int signum)
{
    (void)signum;
    gw_tls_reload(h->data);
}

rt_status gw_tls_create(struct gw_server *srv, struct gw_tls **out)
{
    *out = NULL;
    if (!srv->cfg->tls_cert[0])
        return RT_OK;
    struct gw_tls *t = calloc(1, sizeof *t);
    if (!t)
        return RT_NOMEM;
    char why[512];
    if (!pair_load(srv->cfg, &t->served, why, sizeof why)) {
        rt_log(RT_LOG_ERROR, "tls_failed", "why=\"%s\"", why);
        free(t);
        return RT_INVAL;
    }
    t->srv = srv;
    uv_signal_init(srv->loop, &t->sighup);
    t->sighup.data = t;
    uv_signal_start(&t->sighup, on_sighup, SIGHUP);
    uv_unref((uv_handle_t *)&t->sighup); /* does not keep the loop alive at shutdown */
    log_pair("tls_loaded", &t->served, 0);
    *out = t;
    return RT_OK;
}

static void tls_closed(uv_handle_t *h)
{
    struct gw_tls *t = h->data;
    pair_free(&t->served);
    free(t);
}

void gw_tls_destroy(struct gw_tls *t)
{
    if (!t)
        return;
    uv_signal_stop(&t->sighup);
    uv_close((uv_handle_t *)&t->sighup, tls_closed);
}
