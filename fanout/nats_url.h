/*
 * nats_url.h: one NATS server URL, parsed once for every connection rtgate
 * opens (nats_url.c): the loop reader's servers, the credentials nats.c's
 * options get, and the host:port that log lines show. Pure: no I/O.
 *
 * Form: [nats|tls://][user:pass@|token@]host[:port][/], with [v6] hosts.
 * The last '@' ends the userinfo (as Go's net/url), so a password may hold
 * one; user, password and token are percent-decoded (%40 is '@'), and must
 * be UTF-8 (CONNECT is JSON). The port defaults to 4222. Any thread.
 */
#ifndef NATS_URL_H
#define NATS_URL_H

#include <stdbool.h>
#include <stddef.h>

#define NATS_URL_PORT_DEFAULT 4222

struct nats_url {
    char host[256]; /* without brackets */
    char port[8];
    char user[256], pass[256], token[256]; /* "" when absent */
    bool tls;                              /* tls:// */
};

/*
 * Parses s[0..n) (blanks before it are skipped). False for anything it
 * cannot use: another scheme, no host, a host with blanks or '/', '@',
 * '[', ']', '?', '#', ',', a port outside 1..65535, a bad %-escape (or
 * %00), credentials that are not UTF-8 or too long.
 */
bool nats_url_parse(const char *s, size_t n, struct nats_url *out);

/* "host:port" ("[v6]:port") for a log line: never the credentials. Returns buf. */
const char *nats_url_server(const struct nats_url *u, char *buf, size_t cap);

/* Overwrites the credentials (and the rest). */
void nats_url_wipe(struct nats_url *u);

#endif
