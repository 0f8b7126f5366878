/*
 * test_claims.c: the claims of a verified token: times and their leeway
 * edges, sub's bounds and charset, permission claims, info, and pattern
 * matching of permissions.
 */
#include "helpers.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define T0_S  1700000000LL
#define T0_MS (T0_S * 1000)

/* Verifies claims under HS256 at now_ms with leeway_ms. */
static enum auth_result check(const char *claims, int64_t now_ms, uint32_t leeway_ms,
                              struct auth_claims **out)
{
    struct auth_key *k = tk_key(AUTH_HS256);
    char *t = tk_token(AUTH_HS256, claims);
    enum auth_result r = tk_verify(k, t, now_ms, leeway_ms, out);
    free(t);
    auth_key_destroy(k);
    return r;
}

static enum auth_result verdict(const char *claims)
{
    return check(claims, T0_MS, 0, NULL);
}

Test(claims, exp_with_leeway_edges)
{
    char claims[128];
    snprintf(claims, sizeof claims, "{\"sub\":\"u\",\"exp\":%lld}", T0_S);
    /* Without leeway the token is dead at exp itself (RFC 7519 4.1.4). */
    cr_assert_eq(check(claims, T0_MS - 1, 0, NULL), AUTH_OK);
    cr_assert_eq(check(claims, T0_MS, 0, NULL), AUTH_EXPIRED);
    /* 5 s of leeway: good until exp + 5 s - 1 ms. */
    cr_assert_eq(check(claims, T0_MS + 4999, 5000, NULL), AUTH_OK);
    cr_assert_eq(check(claims, T0_MS + 5000, 5000, NULL), AUTH_EXPIRED);
    cr_assert_eq(check(claims, T0_MS + 3600 * 1000, 5000, NULL), AUTH_EXPIRED);
}

Test(claims, nbf_with_leeway_edges)
{
    char claims[128];
    snprintf(claims, sizeof claims, "{\"sub\":\"u\",\"nbf\":%lld}", T0_S);
    cr_assert_eq(check(claims, T0_MS, 0, NULL), AUTH_OK);
    cr_assert_eq(check(claims, T0_MS - 1, 0, NULL), AUTH_NOT_YET_VALID);
    cr_assert_eq(check(claims, T0_MS - 5000, 5000, NULL), AUTH_OK);
    cr_assert_eq(check(claims, T0_MS - 5001, 5000, NULL), AUTH_NOT_YET_VALID);
}

Test(claims, iat_in_the_future_beyond_leeway_is_refused)
{
    char claims[128];
    snprintf(claims, sizeof claims, "{\"sub\":\"u\",\"iat\":%lld}", T0_S);
    cr_assert_eq(check(claims, T0_MS, 0, NULL), AUTH_OK);
    cr_assert_eq(check(claims, T0_MS - 2000, 1000, NULL), AUTH_ISSUED_IN_FUTURE);
    cr_assert_eq(check(claims, T0_MS - 1000, 1000, NULL), AUTH_OK);
}

Test(claims, times_may_be_fractional_and_must_be_numbers)
{
    struct auth_claims *c = NULL;
    cr_assert_eq(check("{\"sub\":\"u\",\"exp\":1700000000.5}", T0_MS, 0, &c), AUTH_OK);
    cr_assert_eq(c->exp_ms, T0_MS + 500);
    auth_claims_destroy(c);
    cr_assert_eq(check("{\"sub\":\"u\",\"exp\":1700000000.5}", T0_MS + 500, 0, NULL), AUTH_EXPIRED);
    const char *bad[] = {
        "{\"sub\":\"u\",\"exp\":\"1800000000\"}",
        "{\"sub\":\"u\",\"exp\":true}",
        "{\"sub\":\"u\",\"exp\":null}",
        "{\"sub\":\"u\",\"exp\":-1}",
        "{\"sub\":\"u\",\"nbf\":[1]}",
        "{\"sub\":\"u\",\"iat\":{}}",
        "{\"sub\":\"u\",\"exp\":1e300}",
        "{\"sub\":\"u\",\"exp\":9223372036854775807}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        cr_assert_eq(verdict(bad[i]), AUTH_BAD_TIME, "%s", bad[i]);
}

Test(claims, no_exp_means_no_expiry)
{
    struct auth_claims *c = NULL;
    cr_assert_eq(check("{\"sub\":\"u\"}", T0_MS, 0, &c), AUTH_OK);
    cr_assert_not(c->has_exp || c->has_nbf || c->has_iat);
    cr_assert_null(c->info);
    auth_claims_destroy(c);
}

Test(claims, sub_is_required_bounded_and_plain)
{
    cr_assert_eq(verdict("{\"exp\":1800000000}"), AUTH_NO_SUB);
    struct auth_claims *c = NULL;
    cr_assert_eq(check("{\"sub\":\"auth0|5f7c8ec7.c3:3c=6c+004/b~a@x-y_z\"}", T0_MS, 0, &c),
                 AUTH_OK);
    cr_assert_str_eq(c->sub, "auth0|5f7c8ec7.c3:3c=6c+004/b~a@x-y_z");
    auth_claims_destroy(c);
    char longest[200], too_long[200];
    snprintf(longest, sizeof longest, "{\"sub\":\"%0128d\"}", 7);
    snprintf(too_long, sizeof too_long, "{\"sub\":\"%0129d\"}", 7);
    cr_assert_eq(verdict(longest), AUTH_OK);
    cr_assert_eq(verdict(too_long), AUTH_BAD_SUB);
    const char *bad[] = {
        "{\"sub\":\"\"}",          "{\"sub\":42}",
        "{\"sub\":null}",          "{\"sub\":[\"u\"]}",
        "{\"sub\":\"a b\"}",       "{\"sub\":\"a\\nlevel=error\"}",
        "{\"sub\":\"a\\\"b\"}",    "{\"sub\":\"caf\\u00e9\"}",
        "{\"sub\":\"anon-c1a2\"}", "{\"sub\":\"a\\r\\nRtgate-Channel: x\"}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        cr_assert_eq(verdict(bad[i]), AUTH_BAD_SUB, "%s", bad[i]);
}

Test(claims, permission_claims_are_read)
{
    struct auth_claims *c = NULL;
    cr_assert_eq(check("{\"sub\":\"u\",\"sub_allow\":[\"chat.*\",\"news.>\"],\"pub_allow\":[],"
                       "\"geo_allow\":[\"drivers\"]}",
                       T0_MS, 0, &c),
                 AUTH_OK);
    cr_assert(c->has_sub_allow && c->has_pub_allow && c->has_geo_allow);
    cr_assert_eq(c->sub_allow.n, 2);
    cr_assert_str_eq(c->sub_allow.pat[1], "news.>");
    cr_assert_eq(c->pub_allow.n, 0, "present and empty: nothing allowed");
    cr_assert(auth_patterns_match(&c->sub_allow, "chat.room1", 10));
    cr_assert_not(auth_patterns_match(&c->sub_allow, "chat.room1.x", 12));
    cr_assert(auth_patterns_match(&c->sub_allow, "news.a.b.c", 10));
    cr_assert_not(auth_patterns_match(&c->sub_allow, "news", 4));
    cr_assert_not(auth_patterns_match(&c->pub_allow, "chat.room1", 10));
    cr_assert(auth_patterns_match(&c->geo_allow, "drivers", 7));
    cr_assert_not(auth_patterns_match(&c->geo_allow, "riders", 6));
    auth_claims_destroy(c);
}

Test(claims, presence_allow_is_a_permission_claim_of_its_own)
{
    struct auth_claims *c = NULL;
    cr_assert_eq(check("{\"sub\":\"u\",\"presence_allow\":[\"chat.*\"]}", T0_MS, 0, &c), AUTH_OK);
    cr_assert(c->has_presence_allow && !c->has_sub_allow);
    cr_assert(auth_patterns_match(&c->presence_allow, "chat.room1", 10));
    cr_assert_not(auth_patterns_match(&c->presence_allow, "news.a", 6));
    auth_claims_destroy(c);
    cr_assert_eq(check("{\"sub\":\"u\"}", T0_MS, 0, &c), AUTH_OK);
    cr_assert_not(c->has_presence_allow, "absent: the server's default");
    auth_claims_destroy(c);
    cr_assert_eq(verdict("{\"sub\":\"u\",\"presence_allow\":\"chat.>\"}"), AUTH_BAD_PERMISSIONS);
    cr_assert_eq(verdict("{\"sub\":\"u\",\"presence_allow\":[\"a..b\"]}"), AUTH_BAD_PERMISSIONS);
}

Test(claims, bad_permission_claims_refuse_the_token)
{
    char many[2048] = "{\"sub\":\"u\",\"sub_allow\":[";
    for (int i = 0; i < AUTH_PATTERNS_MAX + 1; i++)
        snprintf(many + strlen(many), sizeof many - strlen(many), "%s\"c%d\"", i ? "," : "", i);
    strcat(many, "]}");
    const char *bad[] = {
        "{\"sub\":\"u\",\"sub_allow\":\"chat.>\"}",   "{\"sub\":\"u\",\"pub_allow\":[1]}",
        "{\"sub\":\"u\",\"pub_allow\":[\"a..b\"]}",   "{\"sub\":\"u\",\"sub_allow\":[\"a.>.b\"]}",
        "{\"sub\":\"u\",\"geo_allow\":[\"sp ace\"]}", "{\"sub\":\"u\",\"sub_allow\":[\"\"]}",
        "{\"sub\":\"u\",\"sub_allow\":null}",         "{\"sub\":\"u\",\"geo_allow\":{}}",
        "{\"sub\":\"u\",\"pub_allow\":[\"ch*t\"]}",   many,
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        cr_assert_eq(verdict(bad[i]), AUTH_BAD_PERMISSIONS, "%.80s", bad[i]);
    /* 64 patterns are fine. */
    char ok[2048] = "{\"sub\":\"u\",\"sub_allow\":[";
    for (int i = 0; i < AUTH_PATTERNS_MAX; i++)
        snprintf(ok + strlen(ok), sizeof ok - strlen(ok), "%s\"c%d\"", i ? "," : "", i);
    strcat(ok, "]}");
    cr_assert_eq(verdict(ok), AUTH_OK);
}

Test(claims, info_is_an_object_of_bounded_size)
{
    struct auth_claims *c = NULL;
    cr_assert_eq(
        check("{\"sub\":\"u\",\"info\":{ \"name\" : \"Ann\", \"n\": [1, 2]}}", T0_MS, 0, &c),
        AUTH_OK);
    cr_assert_str_eq(c->info, "{\"name\":\"Ann\",\"n\":[1,2]}");
    cr_assert_eq(c->info_len, strlen(c->info));
    auth_claims_destroy(c);
    cr_assert_eq(verdict("{\"sub\":\"u\",\"info\":[1]}"), AUTH_BAD_INFO);
    cr_assert_eq(verdict("{\"sub\":\"u\",\"info\":\"x\"}"), AUTH_BAD_INFO);
    char big[1200];
    char pad[1100];
    memset(pad, 'x', sizeof pad - 1);
    pad[sizeof pad - 1] = '\0';
    snprintf(big, sizeof big, "{\"sub\":\"u\",\"info\":{\"p\":\"%.*s\"}}", 1016, pad);
    cr_assert_eq(verdict(big), AUTH_OK, "exactly 1024 bytes of info");
    snprintf(big, sizeof big, "{\"sub\":\"u\",\"info\":{\"p\":\"%.*s\"}}", 1017, pad);
    cr_assert_eq(verdict(big), AUTH_BAD_INFO);
}

Test(claims, unknown_claims_are_ignored)
{
    cr_assert_eq(verdict("{\"sub\":\"u\",\"aud\":\"x\",\"iss\":\"y\",\"jti\":\"z\",\"custom\":"
                         "{\"a\":[1]}}"),
                 AUTH_OK);
}

Test(claims, patterns_match_like_nats_subjects)
{
    char p1[] = "a.*.c", p2[] = "x.>", p3[] = "solo";
    char *pats[] = {p1, p2, p3};
    struct auth_patterns p = {pats, 3};
    struct {
        const char *name;
        bool ok;
    } cases[] = {
        {"a.b.c", true}, {"a.bb.c", true}, {"a.b", false},   {"a.b.c.d", false},
        {"x.y", true},   {"x.y.z", true},  {"x", false},     {"solo", true},
        {"sol", false},  {"soloo", false}, {"b.b.c", false},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        cr_assert_eq(auth_patterns_match(&p, cases[i].name, strlen(cases[i].name)), cases[i].ok,
                     "%s", cases[i].name);
    struct auth_patterns none = {NULL, 0};
    cr_assert_not(auth_patterns_match(&none, "a", 1));
    char gt[] = ">";
    char *all[] = {gt};
    struct auth_patterns every = {all, 1};
    cr_assert(auth_patterns_match(&every, "drivers", 7));
    cr_assert(auth_patterns_match(&every, "a.b.c", 5));
}
