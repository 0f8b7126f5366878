/*
 * nats_creds.c: .creds and NKey seed files, and the CONNECT fields that
 * prove the user's identity (nats_creds.h).
 */
#include "nats_creds.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define JWT_MAX ((size_t)16 << 10)

struct ncreds {
    char *jwt; /* NULL for a bare NKey */
    struct nkey seed;
};

struct line {
    const char *p;
    size_t n;
};

/* The next line of [*cur, end) without its blanks and CR; false at the end. */
static bool next_line(const char **cur, const char *end, struct line *l)
{
    if (*cur >= end)
        return false;
    const char *s = *cur;
    const char *nl = memchr(s, '\n', (size_t)(end - s));
    const char *e = nl ? nl : end;
    *cur = nl ? nl + 1 : end;
    while (s < e && (*s == ' ' || *s == '\t'))
        s++;
    while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r'))
        e--;
    l->p = s;
    l->n = (size_t)(e - s);
    return true;
}

/* "-----BEGIN NATS USER JWT-----" and the like: dashes at both ends. */
static bool is_marker(const struct line *l)
{
    return l->n >= 6 && memcmp(l->p, "---", 3) == 0 && memcmp(l->p + l->n - 3, "---", 3) == 0;
}

static bool next_nonempty(const char **cur, const char *end, struct line *l)
{
    while (next_line(cur, end, l))
        if (l->n > 0)
            return true;
    return false;
}

/* The values between dash lines, in order (at most max of them). */
static size_t block_values(const char *text, size_t len, struct line *vals, size_t max)
{
    const char *cur = text, *end = text + len;
    struct line open, value, close;
    size_t found = 0;
    while (found < max && next_line(&cur, end, &open)) {
        if (!is_marker(&open))
            continue;
        if (!next_nonempty(&cur, end, &value))
            break;
        if (is_marker(&value)) { /* an empty block: this marker may open the next */
            cur = value.p;
            continue;
        }
        if (!next_nonempty(&cur, end, &close))
            break;
        if (is_marker(&close))
            vals[found++] = value;
    }
    return found;
}

/* A line starting with "SU", as nats.c takes from a seed file without blocks. */
static bool seed_line(const char *text, size_t len, struct line *out)
{
    const char *cur = text, *end = text + len;
    struct line l;
    while (next_line(&cur, end, &l))
        if (l.n >= 2 && l.p[0] == 'S' && l.p[1] == 'U') {
            *out = l;
            return true;
        }
    return false;
}

static bool looks_like_jwt(const struct line *l)
{
    size_t dots = 0;
    if (l->n == 0 || l->n > JWT_MAX)
        return false;
    for (size_t i = 0; i < l->n; i++) {
        char c = l->p[i];
        if (c == '.')
            dots++;
        else if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                   c == '-' || c == '_'))
            return false;
    }
    return dots == 2;
}

rt_status ncreds_parse(const char *text, size_t len, bool want_jwt, char **jwt, struct nkey *seed,
                       char *err, size_t err_cap)
{
    struct line vals[2], s;
    size_t n = block_values(text, len, vals, 2);
    if (jwt)
        *jwt = NULL;
    if (want_jwt) {
        if (n < 1 || !looks_like_jwt(&vals[0])) {
            snprintf(err, err_cap, "no user JWT between -----BEGIN NATS USER JWT----- lines");
            return RT_INVAL;
        }
    }
    size_t seed_at = want_jwt ? 1 : 0;
    if (n > seed_at)
        s = vals[seed_at];
    else if (!seed_line(text, len, &s)) {
        snprintf(err, err_cap, "no NKey user seed (a line starting with SU)");
        return RT_INVAL;
    }
    if (nkey_parse_seed(s.p, s.n, seed) != RT_OK) {
        snprintf(err, err_cap, "the seed is not a valid NKey seed (length, alphabet or checksum)");
        return RT_INVAL;
    }
    if (seed->type != NKEY_USER) {
        nkey_wipe(seed);
        snprintf(err, err_cap, "the seed is not a user seed (SU...)");
        return RT_INVAL;
    }
    if (want_jwt) {
        *jwt = strndup(vals[0].p, vals[0].n);
        if (!*jwt) {
            nkey_wipe(seed);
            snprintf(err, err_cap, "out of memory");
            return RT_NOMEM;
        }
    }
    return RT_OK;
}

/* The whole file, NUL-terminated, if it is a regular file under NCREDS_FILE_MAX. */
static char *read_small_file(const char *path, size_t *len, char *err, size_t err_cap)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) {
        snprintf(err, err_cap, "%s: %s", path, strerror(errno));
        if (fd >= 0)
            close(fd);
        return NULL;
    }
    if (!S_ISREG(st.st_mode) || (size_t)st.st_size > NCREDS_FILE_MAX) {
        snprintf(err, err_cap, "%s: not a regular file of at most %zu bytes", path,
                 NCREDS_FILE_MAX);
        close(fd);
        return NULL;
    }
    size_t cap = (size_t)st.st_size + 1, got = 0;
    char *buf = malloc(cap);
    while (buf && got < cap - 1) {
        ssize_t r = read(fd, buf + got, cap - 1 - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    close(fd);
    if (!buf)
        snprintf(err, err_cap, "%s: out of memory", path);
    else
        buf[got] = 0;
    *len = got;
    return buf;
}

rt_status ncreds_load(const char *creds_file, const char *nkey_file, char *err, size_t err_cap,
                      struct ncreds **out)
{
    *out = NULL;
    bool creds = creds_file && *creds_file, nkey = nkey_file && *nkey_file;
    if (!creds && !nkey)
        return RT_OK;
    if (creds && nkey) {
        snprintf(err, err_cap, "give a credentials file or an NKey seed file, not both");
        return RT_INVAL;
    }
    const char *path = creds ? creds_file : nkey_file;
    size_t len = 0;
    char *text = read_small_file(path, &len, err, err_cap);
    if (!text)
        return RT_INVAL;
    struct ncreds *c = calloc(1, sizeof(*c));
    char why[160];
    rt_status st =
        c ? ncreds_parse(text, len, creds, &c->jwt, &c->seed, why, sizeof(why)) : RT_NOMEM;
    OPENSSL_cleanse(text, len);
    free(text);
    if (st != RT_OK) {
        snprintf(err, err_cap, "%s: %s", path, c ? why : "out of memory");
        free(c);
        return st;
    }
    *out = c;
    return RT_OK;
}

void ncreds_free(struct ncreds *c)
{
    if (!c)
        return;
    if (c->jwt) {
        OPENSSL_cleanse(c->jwt, strlen(c->jwt));
        free(c->jwt);
    }
    nkey_wipe(&c->seed);
    free(c);
}

rt_status ncreds_public_key(const struct ncreds *c, char out[NKEY_PUBLIC_CHARS + 1])
{
    return nkey_public(&c->seed, out);
}

bool ncreds_has_jwt(const struct ncreds *c)
{
    return c->jwt != NULL;
}

rt_status ncreds_connect_fields(const struct ncreds *c, const char *nonce, size_t nonce_len,
                                json_t *connect)
{
    if (!nonce || nonce_len == 0)
        return RT_INVAL;
    uint8_t sig[NKEY_SIG_BYTES];
    char sig64[4 * (NKEY_SIG_BYTES + 2) / 3 + 1];
    char pub[NKEY_PUBLIC_CHARS + 1];
    if (nkey_sign(&c->seed, nonce, nonce_len, sig) != RT_OK)
        return RT_ERR;
    nkey_base64url(sig, sizeof(sig), sig64);
    int bad = json_object_set_new(connect, "sig", json_string(sig64));
    if (c->jwt)
        bad |= json_object_set_new(connect, "jwt", json_string(c->jwt));
    else if (ncreds_public_key(c, pub) == RT_OK)
        bad |= json_object_set_new(connect, "nkey", json_string(pub));
    else
        bad = 1;
    return bad ? RT_NOMEM : RT_OK;
}
