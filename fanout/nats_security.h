/*
 * nats_security.h: TLS and credentials on nats.c's connections
 * (nats_security.c), from the same flags as the loop reader's (--nats-ca,
 * --nats-tls-cert, --nats-tls-key, --nats-creds, --nats-nkey: struct
 * fo_nats_security), and server names for log lines that carry no secret.
 *
 * Used by the nats engine (its JetStream, publish and presence connection)
 * and by tools/rtgate-pub, so both read the files the same way and refuse a
 * bad one with the same words.
 */
#ifndef NATS_SECURITY_H
#define NATS_SECURITY_H

#include "fanout.h"

#include <nats/nats.h>

/*
 * Whether every connection to `urls` is TLS: one of them is tls://, or a CA
 * file or a client certificate (or key) is given. (A server that requires TLS gets it
 * anyway, from nats.c and from the loop reader alike.)
 */
bool nsec_tls_wanted(const struct fo_nats_security *sec, const char *urls);

/*
 * Sets o's servers from `urls` (comma-separated), the URLs' user and
 * password (or token) as options, percent-decoded as the loop reader takes
 * them (nats.c 3.4.1 does not decode, and sends URL credentials to no
 * announced server), and adds sec's options (NULL: none): TLS (natsOptions_SetSecure when
 * nsec_tls_wanted, the CA file, the client certificate chain and key), and
 * the credentials file or the NKey seed (with its public key, derived here).
 * Every file is read and checked first: on a bad one, a log line
 * `nats_security_invalid` names the file and what is wrong (never its
 * content) and NATS_INVALID_ARG is returned. Any thread; before connecting.
 */
natsStatus nsec_natsc_options(natsOptions *o, const struct fo_nats_security *sec, const char *urls);

/*
 * natsConnection_Connect for a connection whose options retry a failed
 * first connect in the background (connected_cb, closure: the callback the
 * caller gave natsOptions_SetRetryOnFailedConnect; sec: the options given to
 * nsec_natsc_options, for a hint in the log line). A server that refuses
 * the handshake (a certificate that does not verify, wrong credentials) is
 * told apart from one that is not there: nats.c 3.4.1 with that retry on
 * drops the reason and closes the connection for good after such a refusal.
 * So the first try runs without the retry: a refusal is logged
 * (`nats_refused`, nats.c's own words, no URL or secret) and returned; when
 * no server answered, the retry is put back and NATS_NOT_YET_CONNECTED
 * returned as nats.c does. Blocking: the caller's thread, at start.
 */
natsStatus nsec_natsc_connect(natsConnection **nc, natsOptions *o, const char *urls,
                              const struct fo_nats_security *sec,
                              natsConnectionHandler connected_cb, void *closure);

/*
 * The server nc is connected to as "host:port" in buf (no scheme, user,
 * password or token), or "none". Any thread.
 */
const char *nsec_connected_server(natsConnection *nc, char *buf, size_t cap);

/*
 * A URL list ("nats://u:p@h1:4222,tls://h2") as "h1:4222,h2" for a log line:
 * schemes, credentials and paths left out. Returns buf.
 */
const char *nsec_urls_for_log(const char *urls, char *buf, size_t cap);

/*
 * For tools that take the gateway's flags: sets the field of `flag`
 * ("--nats-ca", "--nats-tls-cert", "--nats-tls-key", "--nats-creds",
 * "--nats-nkey"). 1 when set, 0 when flag is not one of them, -1 for an
 * empty or too long value.
 */
int nsec_set_flag(struct fo_nats_security *sec, const char *flag, const char *value);

#endif
