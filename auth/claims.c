/*
 * claims.c: the claims rtgate reads from a verified token (docs/protocol.md,
 * Authentication) and the permission patterns they carry. Every claim has a
 * type and a bound; a claim of the wrong type refuses the whole token rather
 * than being ignored, so that a typo in an issuer never widens access.
 */
#include "auth_int.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* NumericDate bounds: 1970 .. 9999-12-31, so ms fit an int64 with room. */
#define TIME_MAX_S 253402300799.0

void auth_claims_destroy(struct auth_claims *c)
{
    if (!c)
        return;
    struct auth_patterns *lists[] = {&c->sub_allow, &c->pub_allow, &c->geo_allow,
                                     &c->presence_allow};
    for (size_t l = 0; l < sizeof lists / sizeof *lists; l++) {
        for (size_t i = 0; i < lists[l]->n; i++)
            free(lists[l]->pat[i]);
        free(lists[l]->pat);
    }
    free(c->info);
    free(c);
}

bool auth_patterns_match(const struct auth_patterns *p, const char *name, size_t len)
{
    for (size_t i = 0; i < p->n; i++)
        if (proto_pattern_match(p->pat[i], name, len))
            return true;
    return false;
}

/* A NumericDate claim: absent (false, AUTH_OK), or a number in range. */
static enum auth_result time_claim(const json_t *obj, const char *name, bool *has, int64_t *ms)
{
    const json_t *v = json_object_get(obj, name);
    *has = v != NULL;
    if (!v)
        return AUTH_OK;
    if (!json_is_number(v))
        return AUTH_BAD_TIME;
    double s = json_number_value(v);
    if (!isfinite(s) || s < 0 || s > TIME_MAX_S)
        return AUTH_BAD_TIME;
    *ms = json_is_integer(v) ? (int64_t)json_integer_value(v) * 1000 : (int64_t)(s * 1000.0);
    return AUTH_OK;
}

static enum auth_result check_times(struct auth_claims *c, const json_t *obj, int64_t now_ms,
                                    uint32_t leeway_ms)
{
    enum auth_result r;
    if ((r = time_claim(obj, "exp", &c->has_exp, &c->exp_ms)) != AUTH_OK ||
        (r = time_claim(obj, "nbf", &c->has_nbf, &c->nbf_ms)) != AUTH_OK ||
        (r = time_claim(obj, "iat", &c->has_iat, &c->iat_ms)) != AUTH_OK)
        return r;
    int64_t leeway = leeway_ms;
    if (c->has_exp && now_ms >= c->exp_ms + leeway)
        return AUTH_EXPIRED;
    if (c->has_nbf && now_ms + leeway < c->nbf_ms)
        return AUTH_NOT_YET_VALID;
    if (c->has_iat && now_ms + leeway < c->iat_ms)
        return AUTH_ISSUED_IN_FUTURE;
    return AUTH_OK;
}

static bool sub_char(char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           (ch != '\0' && strchr("._:@|+=/~-", ch) != NULL);
}

/* sub: printable, safe in a NATS header and a log line, never an anonymous id. */
static enum auth_result check_sub(struct auth_claims *c, const json_t *obj)
{
    const json_t *v = json_object_get(obj, "sub");
    if (!v)
        return AUTH_NO_SUB;
    if (!json_is_string(v))
        return AUTH_BAD_SUB;
    const char *s = json_string_value(v);
    size_t len = json_string_length(v);
    if (len == 0 || len > AUTH_SUB_MAX ||
        strncmp(s, AUTH_ANON_PREFIX, strlen(AUTH_ANON_PREFIX)) == 0)
        return AUTH_BAD_SUB;
    for (size_t i = 0; i < len; i++)
        if (!sub_char(s[i]))
            return AUTH_BAD_SUB;
    memcpy(c->sub, s, len + 1);
    return AUTH_OK;
}

/* A permission claim: absent, or an array of at most AUTH_PATTERNS_MAX
 * valid patterns (copied into *list). */
static enum auth_result pattern_claim(const json_t *obj, const char *name, bool *has,
                                      struct auth_patterns *list)
{
    const json_t *arr = json_object_get(obj, name);
    *has = arr != NULL;
    if (!arr)
        return AUTH_OK;
    size_t n = json_array_size(arr);
    if (!json_is_array(arr) || n > AUTH_PATTERNS_MAX)
        return AUTH_BAD_PERMISSIONS;
    for (size_t i = 0; i < n; i++) {
        const json_t *v = json_array_get(arr, i);
        if (!json_is_string(v) || !proto_pattern_valid(json_string_value(v), json_string_length(v)))
            return AUTH_BAD_PERMISSIONS;
    }
    if (n == 0)
        return AUTH_OK;
    list->pat = calloc(n, sizeof *list->pat);
    if (!list->pat)
        return AUTH_NOMEM;
    for (size_t i = 0; i < n; i++) {
        list->pat[i] = strdup(json_string_value(json_array_get(arr, i)));
        if (!list->pat[i])
            return AUTH_NOMEM;
        list->n++;
    }
    return AUTH_OK;
}

/* info: an object kept as compact JSON for the gateway to pass along. */
static enum auth_result info_claim(struct auth_claims *c, const json_t *obj)
{
    const json_t *v = json_object_get(obj, "info");
    if (!v)
        return AUTH_OK;
    if (!json_is_object(v))
        return AUTH_BAD_INFO;
    char *text = json_dumps(v, JSON_COMPACT);
    if (!text)
        return AUTH_NOMEM;
    size_t len = strlen(text);
    if (len > AUTH_INFO_MAX) {
        free(text);
        return AUTH_BAD_INFO;
    }
    c->info = text;
    c->info_len = len;
    return AUTH_OK;
}

enum auth_result auth__claims_from_json(const json_t *obj, int64_t now_ms, uint32_t leeway_ms,
                                        struct auth_claims **out)
{
    struct auth_claims *c = calloc(1, sizeof *c);
    if (!c)
        return AUTH_NOMEM;
    enum auth_result r;
    if ((r = check_times(c, obj, now_ms, leeway_ms)) != AUTH_OK ||
        (r = check_sub(c, obj)) != AUTH_OK ||
        (r = pattern_claim(obj, "sub_allow", &c->has_sub_allow, &c->sub_allow)) != AUTH_OK ||
        (r = pattern_claim(obj, "pub_allow", &c->has_pub_allow, &c->pub_allow)) != AUTH_OK ||
        (r = pattern_claim(obj, "geo_allow", &c->has_geo_allow, &c->geo_allow)) != AUTH_OK ||
        (r = pattern_claim(obj, "presence_allow", &c->has_presence_allow, &c->presence_allow)) !=
            AUTH_OK ||
        (r = info_claim(c, obj)) != AUTH_OK) {
        auth_claims_destroy(c);
        return r;
    }
    *out = c;
    return AUTH_OK;
}
