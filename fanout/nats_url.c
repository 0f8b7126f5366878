/*
 * nats_url.c: NATS server URLs (nats_url.h).
 */
#define _GNU_SOURCE /* memmem, memrchr */
#include "nats_url.h"
#include "protocol.h"

#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static bool copy_part(char *dst, size_t cap, const char *s, size_t n)
{
    if (n >= cap)
        return false;
    memcpy(dst, s, n);
    dst[n] = 0;
    return true;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = (char)(c | 0x20);
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* Undoes %XX in place; false for a '%' without two hex digits, or %00. */
static bool pct_decode_inplace(char *s)
{
    char *d = s;
    for (; *s; s++) {
        if (*s != '%') {
            *d++ = *s;
            continue;
        }
        int hi = hexval(s[1]), lo = hi >= 0 ? hexval(s[2]) : -1;
        if (lo < 0 || (hi | lo) == 0)
            return false;
        *d++ = (char)(hi << 4 | lo);
        s += 2;
    }
    *d = 0;
    return true;
}

/* The URL's parts, before the checks that do not depend on where they are. */
static bool split_url(const char *s, size_t n, struct nats_url *out)
{
    memset(out, 0, sizeof(*out));
    while (n > 0 && (*s == ' ' || *s == '\t')) {
        s++;
        n--;
    }
    const char *scheme = memmem(s, n, "://", 3);
    if (scheme) {
        size_t sl = (size_t)(scheme - s);
        out->tls = sl == 3 && strncasecmp(s, "tls", 3) == 0;
        if (!(sl == 4 && strncasecmp(s, "nats", 4) == 0) && !out->tls)
            return false; /* ws://, wss://: not here */
        n -= sl + 3;
        s = scheme + 3;
    }
    /* The last '@' ends the userinfo (as Go's net/url): a password may hold one. */
    const char *at = memrchr(s, '@', n);
    if (at) {
        const char *colon = memchr(s, ':', (size_t)(at - s));
        if (colon) {
            if (!copy_part(out->user, sizeof(out->user), s, (size_t)(colon - s)) ||
                !copy_part(out->pass, sizeof(out->pass), colon + 1, (size_t)(at - colon - 1)))
                return false;
        } else if (!copy_part(out->token, sizeof(out->token), s, (size_t)(at - s))) {
            return false;
        }
        if (!pct_decode_inplace(out->user) || !pct_decode_inplace(out->pass) ||
            !pct_decode_inplace(out->token))
            return false;
        n -= (size_t)(at - s) + 1;
        s = at + 1;
    }
    while (n > 0 && (s[n - 1] == '/' || s[n - 1] == ' '))
        n--;
    const char *host = s, *port = NULL;
    size_t hl = n;
    if (n > 0 && s[0] == '[') {
        const char *rb = memchr(s, ']', n);
        if (!rb)
            return false;
        host = s + 1;
        hl = (size_t)(rb - s - 1);
        size_t after = (size_t)(rb - s) + 1;
        if (after < n && rb[1] != ':')
            return false; /* "[::1]x": not a port */
        if (after < n)
            port = rb + 2;
    } else {
        const char *colon = memchr(s, ':', n);
        if (colon) {
            hl = (size_t)(colon - s);
            port = colon + 1;
        }
    }
    if (hl == 0 || !copy_part(out->host, sizeof(out->host), host, hl))
        return false;
    for (size_t i = 0; i < hl; i++) /* "ho st", "h/x", "h@x": resolving could only fail, forever */
        if ((unsigned char)host[i] <= ' ' || strchr("/@[]?#,", host[i]))
            return false;
    size_t pl = port ? (size_t)(s + n - port) : 0;
    if (!port || pl == 0) {
        snprintf(out->port, sizeof(out->port), "%d", NATS_URL_PORT_DEFAULT);
        return true;
    }
    if (!copy_part(out->port, sizeof(out->port), port, pl))
        return false;
    for (size_t i = 0; i < pl; i++)
        if (out->port[i] < '0' || out->port[i] > '9')
            return false;
    int p = atoi(out->port);
    return p > 0 && p < 65536;
}

bool nats_url_parse(const char *s, size_t n, struct nats_url *out)
{
    /* CONNECT is JSON: credentials that are not UTF-8 could never be sent. */
    if (split_url(s, n, out) && proto_utf8_valid(out->user, strlen(out->user)) &&
        proto_utf8_valid(out->pass, strlen(out->pass)) &&
        proto_utf8_valid(out->token, strlen(out->token)))
        return true;
    nats_url_wipe(out);
    return false;
}

const char *nats_url_server(const struct nats_url *u, char *buf, size_t cap)
{
    bool v6 = strchr(u->host, ':') != NULL;
    snprintf(buf, cap, "%s%s%s:%s", v6 ? "[" : "", u->host, v6 ? "]" : "", u->port);
    return buf;
}

void nats_url_wipe(struct nats_url *u)
{
    OPENSSL_cleanse(u, sizeof(*u));
}
