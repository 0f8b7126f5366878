/*
 * nats_security.c: the --nats-ca / --nats-tls-* / --nats-creds / --nats-nkey
 * options on a nats.c connection, and secret-free server names for logs
 * (nats_security.h).
 */
#include "nats_security.h"
#include "nats_creds.h"
#include "nats_tls.h"
#include "nats_url.h"

#include <openssl/crypto.h>
#include <stdlib.h>

#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

static bool set(const char *s)
{
    return s && *s;
}

/* One URL of a list, as host[:port]: after the scheme and the last '@', up to a '/'. */
static void host_port(const char *url, size_t n, const char **out, size_t *out_len)
{
    while (n > 0 && (*url == ' ' || *url == '\t')) {
        url++;
        n--;
    }
    for (size_t i = 0; i + 3 <= n; i++)
        if (memcmp(url + i, "://", 3) == 0) {
            url += i + 3;
            n -= i + 3;
            break;
        }
    for (size_t i = n; i > 0; i--)
        if (url[i - 1] == '@') {
            url += i;
            n -= i;
            break;
        }
    size_t k = 0;
    while (k < n && url[k] != '/' && url[k] != ' ')
        k++;
    *out = url;
    *out_len = k;
}

bool nsec_tls_wanted(const struct fo_nats_security *sec, const char *urls)
{
    if (sec && (set(sec->ca_file) || set(sec->cert_file) || set(sec->key_file)))
        return true;
    for (const char *p = urls; p && *p;) {
        while (*p == ' ' || *p == '\t')
            p++;
        if (strncasecmp(p, "tls://", 6) == 0)
            return true;
        const char *comma = strchr(p, ',');
        p = comma ? comma + 1 : NULL;
    }
    return false;
}

const char *nsec_urls_for_log(const char *urls, char *buf, size_t cap)
{
    size_t o = 0;
    buf[0] = 0;
    for (const char *p = urls; p && *p && o + 1 < cap;) {
        const char *comma = strchr(p, ',');
        size_t n = comma ? (size_t)(comma - p) : strlen(p);
        const char *h;
        size_t hl;
        host_port(p, n, &h, &hl);
        int k = snprintf(buf + o, cap - o, "%s%.*s", o ? "," : "", (int)hl, h);
        if (k < 0 || (size_t)k >= cap - o)
            break;
        o += (size_t)k;
        p = comma ? comma + 1 : NULL;
    }
    return buf;
}

const char *nsec_connected_server(natsConnection *nc, char *buf, size_t cap)
{
    char url[1024];
    if (!nc || natsConnection_GetConnectedUrl(nc, url, sizeof(url)) != NATS_OK || !url[0]) {
        snprintf(buf, cap, "none");
        return buf;
    }
    const char *h;
    size_t hl;
    host_port(url, strlen(url), &h, &hl);
    snprintf(buf, cap, "%.*s", (int)hl, h);
    return buf;
}

/*
 * What a server says to a client it will not take: retrying cannot help. A
 * protocol error is one too: the server answered, and dropped the
 * connection (a TLS 1.3 server that wants a client certificate does so
 * after the handshake, and nats.c reports no PONG).
 */
static bool is_refusal(natsStatus s)
{
    return s == NATS_SSL_ERROR || s == NATS_SECURE_CONNECTION_WANTED ||
           s == NATS_SECURE_CONNECTION_REQUIRED || s == NATS_CONNECTION_AUTH_FAILED ||
           s == NATS_NOT_PERMITTED || s == NATS_ERR || s == NATS_PROTOCOL_ERROR;
}

/* What an operator may check when nats.c's words do not say it. */
static const char *refusal_hint(natsStatus s, const struct fo_nats_security *sec, const char *urls)
{
    if (s == NATS_PROTOCOL_ERROR && nsec_tls_wanted(sec, urls) && !(sec && set(sec->cert_file)))
        return " hint=\"the server closed the connection after TLS: does it want a client "
               "certificate (--nats-tls-cert)?\"";
    if (s == NATS_PROTOCOL_ERROR)
        return " hint=\"the server closed the connection: credentials or TLS it wants?\"";
    return "";
}

/* nats.c's last error on this thread, without its "(file.c:123): " prefix; NULL if it
 * could hold a URL (and so a password). */
static const char *last_error_text(void)
{
    const char *t = nats_GetLastError(NULL);
    if (t && t[0] == '(') {
        const char *e = strstr(t, "): ");
        t = e ? e + 3 : t;
    }
    if (!t || !*t || strchr(t, '@') || strstr(t, "://") || strlen(t) > 300)
        return NULL;
    return t;
}

natsStatus nsec_natsc_connect(natsConnection **nc, natsOptions *o, const char *urls,
                              const struct fo_nats_security *sec,
                              natsConnectionHandler connected_cb, void *closure)
{
    natsStatus s = natsOptions_SetRetryOnFailedConnect(o, false, NULL, NULL);
    if (!s)
        s = natsConnection_Connect(nc, o);
    if (s == NATS_OK)
        return natsOptions_SetRetryOnFailedConnect(o, true, connected_cb, closure);
    if (is_refusal(s)) {
        char where[1024];
        const char *text = last_error_text();
        rt_log(RT_LOG_ERROR, "nats_refused", "servers=%s error=\"%s\"%s",
               nsec_urls_for_log(urls, where, sizeof(where)), text ? text : natsStatus_GetText(s),
               refusal_hint(s, sec, urls));
        return s;
    }
    s = natsOptions_SetRetryOnFailedConnect(o, true, connected_cb, closure);
    if (!s)
        s = natsConnection_Connect(nc, o);
    return s;
}

static natsStatus invalid(const char *what)
{
    rt_log(RT_LOG_ERROR, "nats_security_invalid", "why=\"%s\"", what);
    return NATS_INVALID_ARG;
}

/* The TLS files, checked by building the loop reader's context from them. */
static natsStatus check_tls_files(const struct fo_nats_security *sec)
{
    char err[512];
    struct ntls_ctx *ctx = NULL;
    rt_status st =
        ntls_ctx_create(sec->ca_file, sec->cert_file, sec->key_file, err, sizeof(err), &ctx);
    ntls_ctx_destroy(ctx);
    return st == RT_OK ? NATS_OK : invalid(err);
}

static natsStatus tls_options(natsOptions *o, const struct fo_nats_security *sec, bool tls)
{
    natsStatus s = tls ? natsOptions_SetSecure(o, true) : NATS_OK;
    if (!s && set(sec->ca_file))
        s = natsOptions_LoadCATrustedCertificates(o, sec->ca_file);
    if (!s && set(sec->cert_file))
        s = natsOptions_LoadCertificatesChain(o, sec->cert_file, sec->key_file);
    return s;
}

static natsStatus credential_options(natsOptions *o, const struct fo_nats_security *sec)
{
    char err[512], pub[NKEY_PUBLIC_CHARS + 1];
    struct ncreds *c = NULL;
    if (ncreds_load(sec->creds_file, sec->nkey_file, err, sizeof(err), &c) != RT_OK)
        return invalid(err);
    if (!c)
        return NATS_OK;
    natsStatus s = NATS_OK;
    if (set(sec->creds_file))
        s = natsOptions_SetUserCredentialsFromFiles(o, sec->creds_file, NULL);
    else if (ncreds_public_key(c, pub) == RT_OK)
        s = natsOptions_SetNKeyFromSeed(o, pub, sec->nkey_file);
    else
        s = NATS_ERR;
    ncreds_free(c);
    return s;
}

/* The comma-separated list as natsOptions_SetServers wants it: out[i] point into `copy`. */
static int split_urls(char *copy, const char **out, int max)
{
    int n = 0;
    for (char *save = NULL, *t = strtok_r(copy, ",", &save); t && n < max;
         t = strtok_r(NULL, ",", &save))
        out[n++] = t;
    return n;
}

/* list[0..n) as "scheme://host:port" in clean (300 bytes each); false if one does not parse.
 * *cred: the first URL's that has a user or a token. */
static bool strip_userinfo(const char **list, int n, char *clean, struct nats_url *cred)
{
    struct nats_url u;
    size_t off = 0;
    for (int i = 0; i < n; i++) {
        if (!nats_url_parse(list[i], strlen(list[i]), &u)) {
            nats_url_wipe(cred);
            return false;
        }
        if (!cred->user[0] && !cred->token[0] && (u.user[0] || u.token[0]))
            *cred = u;
        char server[280];
        int k = snprintf(clean + off, 300, "%s://%s", u.tls ? "tls" : "nats",
                         nats_url_server(&u, server, sizeof(server)));
        nats_url_wipe(&u);
        list[i] = clean + off;
        off += (size_t)k + 1;
    }
    return true;
}

/*
 * The servers, and the URLs' credentials as options. nats.c 3.4.1 takes a
 * URL's user and password as written (p%40ss stays p%40ss, where the loop
 * reader decodes it) and sends none to the servers a cluster announces. So
 * when every URL parses, nats.c gets them without userinfo, and the first
 * URL's user and password (or token), decoded, become the options' for
 * every server. Else the list goes as it is, as before.
 */
static natsStatus url_options(natsOptions *o, const char *urls)
{
    int n_max = 1;
    for (const char *p = urls; *p; p++)
        n_max += *p == ',';
    char *copy = strdup(urls), *clean = malloc((size_t)n_max * 300);
    const char **list = calloc((size_t)n_max, sizeof(*list));
    struct nats_url cred;
    memset(&cred, 0, sizeof(cred));
    natsStatus s = copy && list && clean ? NATS_OK : NATS_NO_MEMORY;
    int n = s ? 0 : split_urls(copy, list, n_max);
    if (!s && !strip_userinfo(list, n, clean, &cred))
        n = split_urls(strcpy(copy, urls), list, n_max); /* nats.c reads them itself */
    if (!s)
        s = n > 0 ? natsOptions_SetServers(o, list, n) : NATS_INVALID_ARG;
    if (!s && cred.user[0])
        s = natsOptions_SetUserInfo(o, cred.user, cred.pass);
    else if (!s && cred.token[0])
        s = natsOptions_SetToken(o, cred.token);
    nats_url_wipe(&cred);
    if (copy)
        OPENSSL_cleanse(copy, strlen(urls));
    free(copy);
    free(clean);
    free(list);
    return s;
}

natsStatus nsec_natsc_options(natsOptions *o, const struct fo_nats_security *sec, const char *urls)
{
    bool tls = nsec_tls_wanted(sec, urls);
    natsStatus s = url_options(o, urls);
    if (s || !sec)
        return s ? s : tls ? natsOptions_SetSecure(o, true) : NATS_OK;
    s = tls ? check_tls_files(sec) : NATS_OK;
    if (!s)
        s = tls_options(o, sec, tls);
    if (!s)
        s = credential_options(o, sec);
    return s;
}

int nsec_set_flag(struct fo_nats_security *sec, const char *flag, const char *value)
{
    static const struct {
        const char *flag;
        size_t offset;
    } flags[] = {
        {"--nats-ca", offsetof(struct fo_nats_security, ca_file)},
        {"--nats-tls-cert", offsetof(struct fo_nats_security, cert_file)},
        {"--nats-tls-key", offsetof(struct fo_nats_security, key_file)},
        {"--nats-creds", offsetof(struct fo_nats_security, creds_file)},
        {"--nats-nkey", offsetof(struct fo_nats_security, nkey_file)},
    };
    for (size_t i = 0; i < sizeof(flags) / sizeof(flags[0]); i++) {
        if (strcmp(flag, flags[i].flag) != 0)
            continue;
        char *field = (char *)sec + flags[i].offset;
        size_t cap = sizeof(sec->ca_file); /* every field has this size */
        if (!value || !*value || strlen(value) >= cap)
            return -1;
        memcpy(field, value, strlen(value) + 1);
        return 1;
    }
    return 0;
}
