/*
 * token.c: the JWS compact serialization (RFC 7515 section 7.1),
 * header.claims.signature in base64url without padding, and auth_verify's
 * order of checks: the cheap refusals (length, shape, header, algorithm)
 * before any cryptography, the signature before any claim is read.
 */
#include "auth_int.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const struct {
    const char *name;
    const char *message;
} RESULTS[] = {
#define X(name, id, message) {id, message},
    AUTH_RESULT_TABLE(X)
#undef X
};

const char *auth_result_name(enum auth_result r)
{
    return (unsigned)r < AUTH_N_RESULTS ? RESULTS[r].name : "unknown";
}

const char *auth_result_message(enum auth_result r)
{
    return (unsigned)r < AUTH_N_RESULTS ? RESULTS[r].message : "token refused";
}

static bool b64url_char(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '_';
}

/*
 * Appends the bytes of unpadded base64url text to out. Strict: only the
 * URL alphabet, no padding, zero padding bits (protocol/'s decoder checks
 * those once the text is translated to its alphabet). RT_INVAL otherwise.
 */
static rt_status b64url_decode(const char *in, size_t len, struct proto_buf *out)
{
    if (len % 4 == 1)
        return RT_INVAL;
    char *std = malloc(len + 3);
    if (!std)
        return RT_NOMEM;
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        if (!b64url_char(in[i])) {
            free(std);
            return RT_INVAL;
        }
        std[n++] = in[i] == '-' ? '+' : in[i] == '_' ? '/' : in[i];
    }
    while (n % 4)
        std[n++] = '=';
    rt_status st = proto_base64_decode(std, n, out);
    free(std);
    return st;
}

/* True if the JSON text nests no deeper than AUTH_JSON_DEPTH_MAX. Checked
 * before parsing, so that a deep token costs a scan, not a tree. */
static bool depth_ok(const uint8_t *p, size_t len)
{
    int depth = 0;
    bool in_string = false;
    for (size_t i = 0; i < len; i++) {
        uint8_t c = p[i];
        if (in_string) {
            if (c == '\\')
                i++;
            else if (c == '"')
                in_string = false;
        } else if (c == '"') {
            in_string = true;
        } else if (c == '{' || c == '[') {
            if (++depth > AUTH_JSON_DEPTH_MAX)
                return false;
        } else if (c == '}' || c == ']') {
            depth--;
        }
    }
    return true;
}

json_t *auth__json_object(const uint8_t *text, size_t len)
{
    if (!depth_ok(text, len))
        return NULL;
    json_error_t jerr;
    json_t *v = json_loadb((const char *)text, len, JSON_REJECT_DUPLICATES, &jerr);
    if (v && !json_is_object(v)) {
        json_decref(v);
        v = NULL;
    }
    return v;
}

/* The three parts of a token, as offsets into it. */
struct parts {
    size_t header_len; /* token[0 .. header_len) */
    size_t claims_off; /* after the first dot */
    size_t claims_len;
    size_t sig_off; /* after the second dot */
    size_t sig_len;
};

static bool split(const char *token, size_t len, struct parts *p)
{
    const char *dot1 = memchr(token, '.', len);
    if (!dot1)
        return false;
    size_t off1 = (size_t)(dot1 - token) + 1;
    const char *dot2 = memchr(token + off1, '.', len - off1);
    if (!dot2)
        return false;
    size_t off2 = (size_t)(dot2 - token) + 1;
    if (memchr(token + off2, '.', len - off2)) /* JWE has five parts: not ours */
        return false;
    *p = (struct parts){off1 - 1, off1, off2 - off1 - 1, off2, len - off2};
    return p->header_len > 0 && p->claims_len > 0;
}

/* The header: a JSON object whose alg is the key's, without crit. */
static enum auth_result check_header(const struct auth_key *key, const uint8_t *text, size_t len)
{
    json_t *h = auth__json_object(text, len);
    if (!h)
        return AUTH_BAD_HEADER;
    enum auth_result r = AUTH_OK;
    const json_t *alg = json_object_get(h, "alg");
    enum auth_alg named;
    if (!json_is_string(alg))
        r = AUTH_BAD_HEADER;
    else if (strcasecmp(json_string_value(alg), "none") == 0)
        r = AUTH_UNSIGNED;
    else if (!auth_alg_parse(json_string_value(alg), &named) || named != key->alg)
        r = AUTH_WRONG_ALG; /* jansson refuses \u0000: the name is the whole string */
    else if (json_object_get(h, "crit"))
        r = AUTH_CRIT;
    json_decref(h);
    return r;
}

/* The steps of auth_verify after the length check; buf holds the decoded parts. */
static enum auth_result verify_parts(const struct auth_key *key, const char *token, size_t len,
                                     int64_t now_ms, uint32_t leeway_ms, struct proto_buf *buf,
                                     struct auth_claims **out)
{
    struct parts p;
    if (!split(token, len, &p))
        return AUTH_MALFORMED;
    rt_status st = b64url_decode(token, p.header_len, buf);
    if (st != RT_OK)
        return st == RT_NOMEM ? AUTH_NOMEM : AUTH_MALFORMED;
    enum auth_result r = check_header(key, buf->data, buf->len);
    if (r != AUTH_OK)
        return r;
    size_t sig_at = buf->len;
    st = b64url_decode(token + p.sig_off, p.sig_len, buf);
    if (st != RT_OK)
        return st == RT_NOMEM ? AUTH_NOMEM : AUTH_MALFORMED;
    /* The signing input is the token's own text up to the second dot. */
    if (!auth__sig_ok(key, (const uint8_t *)token, p.sig_off - 1, buf->data + sig_at,
                      buf->len - sig_at))
        return AUTH_BAD_SIGNATURE;
    size_t claims_at = buf->len;
    st = b64url_decode(token + p.claims_off, p.claims_len, buf);
    if (st != RT_OK)
        return st == RT_NOMEM ? AUTH_NOMEM : AUTH_MALFORMED;
    json_t *claims = auth__json_object(buf->data + claims_at, buf->len - claims_at);
    if (!claims)
        return AUTH_BAD_CLAIMS;
    r = auth__claims_from_json(claims, key->audience, now_ms, leeway_ms, out);
    json_decref(claims);
    return r;
}

enum auth_result auth_verify(const struct auth_key *key, const char *token, size_t len,
                             int64_t now_ms, uint32_t leeway_ms, struct auth_claims **out)
{
    *out = NULL;
    if (!token || len == 0)
        return AUTH_MISSING;
    if (len > AUTH_TOKEN_MAX)
        return AUTH_TOO_LONG;
    struct proto_buf buf;
    proto_buf_init(&buf, 0);
    enum auth_result r = verify_parts(key, token, len, now_ms, leeway_ms, &buf, out);
    if (buf.data)
        memset(buf.data, 0, buf.cap); /* the claims may be personal data */
    proto_buf_free(&buf);
    return r;
}
