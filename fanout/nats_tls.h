/*
 * nats_tls.h: a TLS client session over memory buffers (nats_tls.c), so the
 * loop reader (nats_live.c) can speak TLS on its non-blocking libuv socket
 * without OpenSSL ever touching the socket or waiting for it.
 *
 * The caller moves the bytes: what it reads from the socket goes in with
 * ntls_put, the records OpenSSL wants sent come out with ntls_take, and
 * plaintext goes through ntls_read / ntls_write. Nothing here blocks or does
 * I/O. The context (trust store, optional client certificate) is built once
 * and shared by every session; it is OpenSSL's SSL_CTX, so libnats's TLS
 * verifies the same way (TLS 1.2 at least, peer verification on).
 *
 * Threads: a session is used by one thread at a time (the loop reader's:
 * the event loop); a context may be shared once built.
 */
#ifndef NATS_TLS_H
#define NATS_TLS_H

#include "rt.h"

#include <stddef.h>
#include <sys/types.h>

struct ntls_ctx;
struct ntls;

/*
 * A client context: trust ca_file (PEM) or, when NULL, the system store;
 * present cert_file + key_file (PEM, both or neither) when the server asks.
 * On failure, a reason naming the file (never its content) in err.
 */
rt_status ntls_ctx_create(const char *ca_file, const char *cert_file, const char *key_file,
                          char *err, size_t err_cap, struct ntls_ctx **out);
void ntls_ctx_destroy(struct ntls_ctx *ctx);

/*
 * A session that will verify the server's certificate against `host` (a DNS
 * name, also sent as SNI, or an IP literal checked against the certificate's
 * IP addresses). The handshake starts at the first ntls_handshake.
 */
rt_status ntls_start(struct ntls_ctx *ctx, const char *host, struct ntls **out);
void ntls_free(struct ntls *t);

/* Bytes read from the socket. RT_NOMEM if they cannot be kept. */
rt_status ntls_put(struct ntls *t, const void *p, size_t n);

/*
 * Drives the handshake: RT_OK once it is done, RT_AGAIN while it waits for
 * the server's bytes (send what ntls_pending shows first), RT_ERR when it
 * failed: why says so (a certificate that does not verify names the check).
 */
rt_status ntls_handshake(struct ntls *t, char *why, size_t why_cap);

/*
 * Plaintext into buf: the bytes decrypted (> 0), 0 when more input is needed,
 * -1 when the session failed or the server closed it (why says which).
 */
ssize_t ntls_read(struct ntls *t, void *buf, size_t cap, char *why, size_t why_cap);

/* Encrypts p[0..n) into the pending output. RT_ERR if the session failed. */
rt_status ntls_write(struct ntls *t, const void *p, size_t n);

/* Bytes waiting to be sent; ntls_take moves up to cap of them into buf. */
size_t ntls_pending(const struct ntls *t);
size_t ntls_take(struct ntls *t, void *buf, size_t cap);

/* "TLSv1.3" and the like, for log lines. */
const char *ntls_version(const struct ntls *t);

#endif
