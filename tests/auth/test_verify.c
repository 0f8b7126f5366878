/*
 * test_verify.c: auth_verify against every bad token of issue 15 (forged,
 * wrong key, wrong algorithm, the HS256-with-public-key confusion, alg none,
 * truncated, 60 KB, non-JSON, bad base64), for each algorithm.
 */
#include "helpers.h"

#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NOW_MS 1700000000000LL
#define CLAIMS "{\"sub\":\"alice\",\"exp\":1700000600}"

ParameterizedTestParameters(verify, each_algorithm_accepts_its_own_token)
{
    static enum auth_alg algs[] = {AUTH_HS256, AUTH_RS256, AUTH_ES256};
    return cr_make_param_array(enum auth_alg, algs, 3);
}

ParameterizedTest(enum auth_alg *alg, verify, each_algorithm_accepts_its_own_token)
{
    struct auth_key *k = tk_key(*alg);
    cr_assert_eq(auth_key_alg(k), *alg);
    char *t = tk_token(*alg, CLAIMS);
    struct auth_claims *c = NULL;
    cr_assert_eq(tk_verify(k, t, NOW_MS, 0, &c), AUTH_OK, "%s", auth_alg_name(*alg));
    cr_assert_str_eq(c->sub, "alice");
    cr_assert(c->has_exp);
    cr_assert_eq(c->exp_ms, 1700000600000LL);
    cr_assert_not(c->has_sub_allow || c->has_pub_allow || c->has_geo_allow);
    auth_claims_destroy(c);
    free(t);
    auth_key_destroy(k);
}

ParameterizedTestParameters(verify, forged_claims_fail_the_signature)
{
    static enum auth_alg algs[] = {AUTH_HS256, AUTH_RS256, AUTH_ES256};
    return cr_make_param_array(enum auth_alg, algs, 3);
}

/* A genuine signature on other claims: the forger swaps the middle part. */
ParameterizedTest(enum auth_alg *alg, verify, forged_claims_fail_the_signature)
{
    struct auth_key *k = tk_key(*alg);
    char *t = tk_token(*alg, CLAIMS);
    const char *evil = "{\"sub\":\"admin\",\"exp\":1700000600,\"pub_allow\":[\">\"]}";
    char *evil_b64 = tk_b64url(evil, strlen(evil));
    char *dot1 = strchr(t, '.'), *dot2 = strrchr(t, '.');
    char forged[4096];
    snprintf(forged, sizeof forged, "%.*s.%s%s", (int)(dot1 - t), t, evil_b64, dot2);
    cr_assert_eq(tk_verify(k, forged, NOW_MS, 0, NULL), AUTH_BAD_SIGNATURE);
    /* One bit of the signature flipped. */
    size_t n = strlen(t);
    t[n - 3] = t[n - 3] == 'A' ? 'B' : 'A';
    cr_assert_eq(tk_verify(k, t, NOW_MS, 0, NULL), AUTH_BAD_SIGNATURE);
    free(evil_b64);
    free(t);
    auth_key_destroy(k);
}

Test(verify, a_token_signed_by_another_key_fails)
{
    struct auth_key *hs = tk_key(AUTH_HS256), *rs = tk_key(AUTH_RS256), *es = tk_key(AUTH_ES256);
    const char *h_hs = "{\"alg\":\"HS256\"}", *h_rs = "{\"alg\":\"RS256\"}",
               *h_es = "{\"alg\":\"ES256\"}";
    char *t1 = tk_sign("HS256", NULL, TK_SECRET_OTHER, sizeof TK_SECRET_OTHER, h_hs, CLAIMS);
    char *t2 = tk_sign("RS256", tk_rsa_other(), NULL, 0, h_rs, CLAIMS);
    char *t3 = tk_sign("ES256", tk_ec_other(), NULL, 0, h_es, CLAIMS);
    cr_assert_eq(tk_verify(hs, t1, NOW_MS, 0, NULL), AUTH_BAD_SIGNATURE);
    cr_assert_eq(tk_verify(rs, t2, NOW_MS, 0, NULL), AUTH_BAD_SIGNATURE);
    cr_assert_eq(tk_verify(es, t3, NOW_MS, 0, NULL), AUTH_BAD_SIGNATURE);
    free(t1);
    free(t2);
    free(t3);
    auth_key_destroy(hs);
    auth_key_destroy(rs);
    auth_key_destroy(es);
}

Test(verify, only_the_configured_algorithm_is_accepted)
{
    struct auth_key *keys[] = {tk_key(AUTH_HS256), tk_key(AUTH_RS256), tk_key(AUTH_ES256)};
    enum auth_alg algs[] = {AUTH_HS256, AUTH_RS256, AUTH_ES256};
    for (int k = 0; k < 3; k++)
        for (int a = 0; a < 3; a++) {
            char *t = tk_token(algs[a], CLAIMS);
            enum auth_result want = k == a ? AUTH_OK : AUTH_WRONG_ALG;
            cr_assert_eq(tk_verify(keys[k], t, NOW_MS, 0, NULL), want, "key %s token %s",
                         auth_alg_name(algs[k]), auth_alg_name(algs[a]));
            free(t);
        }
    /* Algorithms we never accept, and case variants of ours. */
    const char *others[] = {"HS384", "HS512", "RS512", "PS256", "ES384", "EdDSA", "hs256", "rs256"};
    for (size_t i = 0; i < sizeof others / sizeof others[0]; i++) {
        char h[64];
        snprintf(h, sizeof h, "{\"alg\":\"%s\"}", others[i]);
        char *t = tk_sign("HS256", NULL, TK_SECRET, sizeof TK_SECRET, h, CLAIMS);
        cr_assert_eq(tk_verify(keys[0], t, NOW_MS, 0, NULL), AUTH_WRONG_ALG, "%s", others[i]);
        free(t);
    }
    for (int k = 0; k < 3; k++)
        auth_key_destroy(keys[k]);
}

/*
 * The libjwt 1.10 confusion: the attacker knows the RSA public key and signs
 * an HS256 token with its PEM text as the HMAC secret. Pinned to RS256, the
 * key refuses the algorithm before any HMAC is computed.
 */
Test(verify, hs256_signed_with_the_public_key_pem_is_refused)
{
    EVP_PKEY *pks[] = {tk_rsa(), tk_ec()};
    enum auth_alg algs[] = {AUTH_RS256, AUTH_ES256};
    for (int i = 0; i < 2; i++) {
        struct auth_key *k = tk_key(algs[i]);
        char *pem = tk_pem_public(pks[i]);
        /* With and without the trailing newline, as an attacker would try. */
        for (size_t cut = 0; cut < 2; cut++) {
            char *t = tk_sign("HS256", NULL, (const uint8_t *)pem, strlen(pem) - cut,
                              "{\"alg\":\"HS256\",\"typ\":\"JWT\"}", CLAIMS);
            cr_assert_eq(tk_verify(k, t, NOW_MS, 0, NULL), AUTH_WRONG_ALG);
            free(t);
        }
        free(pem);
        auth_key_destroy(k);
    }
}

Test(verify, alg_none_is_never_accepted)
{
    struct auth_key *keys[] = {tk_key(AUTH_HS256), tk_key(AUTH_RS256), tk_key(AUTH_ES256)};
    const char *headers[] = {"{\"alg\":\"none\"}", "{\"alg\":\"None\"}", "{\"alg\":\"NONE\"}",
                             "{\"alg\":\"nOnE\",\"typ\":\"JWT\"}"};
    for (int k = 0; k < 3; k++)
        for (size_t h = 0; h < 4; h++) {
            char *t = tk_sign("none", NULL, NULL, 0, headers[h], CLAIMS);
            cr_assert_eq(t[strlen(t) - 1], '.', "unsigned: empty signature part");
            cr_assert_eq(tk_verify(keys[k], t, NOW_MS, 0, NULL), AUTH_UNSIGNED);
            /* ... and with a signature of the right length appended. */
            char *signed_none =
                tk_sign("HS256", NULL, TK_SECRET, sizeof TK_SECRET, headers[h], CLAIMS);
            cr_assert_eq(tk_verify(keys[k], signed_none, NOW_MS, 0, NULL), AUTH_UNSIGNED);
            free(t);
            free(signed_none);
        }
    for (int k = 0; k < 3; k++)
        auth_key_destroy(keys[k]);
}

Test(verify, a_missing_alg_or_a_crit_header_is_refused)
{
    struct auth_key *k = tk_key(AUTH_HS256);
    const char *bad[] = {"{\"typ\":\"JWT\"}", "{\"alg\":256}", "{\"alg\":null}",
                         "{\"alg\":[\"HS256\"]}"};
    for (size_t i = 0; i < 4; i++) {
        char *t = tk_sign("HS256", NULL, TK_SECRET, sizeof TK_SECRET, bad[i], CLAIMS);
        cr_assert_eq(tk_verify(k, t, NOW_MS, 0, NULL), AUTH_BAD_HEADER, "%s", bad[i]);
        free(t);
    }
    char *t = tk_sign("HS256", NULL, TK_SECRET, sizeof TK_SECRET,
                      "{\"alg\":\"HS256\",\"crit\":[\"exp\"]}", CLAIMS);
    cr_assert_eq(tk_verify(k, t, NOW_MS, 0, NULL), AUTH_CRIT);
    free(t);
    auth_key_destroy(k);
}

/* Every proper prefix of a good token is refused, for every algorithm. */
Test(verify, truncated_tokens_are_refused_at_every_length)
{
    enum auth_alg algs[] = {AUTH_HS256, AUTH_RS256, AUTH_ES256};
    for (int a = 0; a < 3; a++) {
        struct auth_key *k = tk_key(algs[a]);
        char *t = tk_token(algs[a], CLAIMS);
        size_t n = strlen(t);
        for (size_t len = 0; len < n; len++) {
            struct auth_claims *c = NULL;
            enum auth_result r = auth_verify(k, t, len, NOW_MS, 0, &c);
            cr_assert_neq(r, AUTH_OK, "%s prefix of %zu bytes accepted", auth_alg_name(algs[a]),
                          len);
            cr_assert_null(c);
        }
        cr_assert_eq(auth_verify(k, t, 0, NOW_MS, 0, &(struct auth_claims *){NULL}), AUTH_MISSING);
        free(t);
        auth_key_destroy(k);
    }
}

Test(verify, a_60kb_token_is_refused_by_its_length)
{
    struct auth_key *k = tk_key(AUTH_RS256);
    size_t n = 60 * 1024;
    char *big = malloc(n + 1);
    memset(big, 'A', n);
    big[100] = big[200] = '.';
    big[n] = '\0';
    cr_assert_eq(tk_verify(k, big, NOW_MS, 0, NULL), AUTH_TOO_LONG);
    /* One byte over the bound, even if otherwise a fine token, is refused; at
     * the bound the token is read (and here fails its signature). */
    char pad[AUTH_TOKEN_MAX + 2];
    memset(pad, 'x', sizeof pad);
    char claims[AUTH_TOKEN_MAX + 64];
    snprintf(claims, sizeof claims, "{\"sub\":\"alice\",\"pad\":\"%.*s\"}", 5900, pad);
    char *t = tk_token(AUTH_RS256, claims);
    size_t tl = strlen(t);
    cr_assert_gt(tl, AUTH_TOKEN_MAX, "the test token must be over the bound (%zu)", tl);
    cr_assert_eq(tk_verify(k, t, NOW_MS, 0, NULL), AUTH_TOO_LONG);
    enum auth_result at_bound =
        auth_verify(k, t, AUTH_TOKEN_MAX, NOW_MS, 0, &(struct auth_claims *){NULL});
    cr_assert(at_bound != AUTH_TOO_LONG && at_bound != AUTH_OK,
              "at the bound the token is read (and its cut signature fails): %s",
              auth_result_name(at_bound));
    free(t);
    free(big);
    auth_key_destroy(k);
}

Test(verify, shape_errors_are_malformed)
{
    struct auth_key *k = tk_key(AUTH_HS256);
    char *good = tk_token(AUTH_HS256, CLAIMS);
    const char *bad[] = {
        "abc",
        "a.b",
        "a.b.c.d",
        "a.b.c.d.e", /* JWE */
        ".eyJ9.sig",
        "eyJhbGciOiJIUzI1NiJ9..sig",
        "eyJhbGciOiJIUzI1NiJ9 .e30.sig",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        cr_assert_eq(tk_verify(k, bad[i], NOW_MS, 0, NULL), AUTH_MALFORMED, "%s", bad[i]);
    free(good);
    auth_key_destroy(k);
}

/* Characters outside base64url, padding, an impossible length, non-zero
 * padding bits: each in the header, the claims and the signature. */
Test(verify, bad_base64url_is_malformed)
{
    struct auth_key *k = tk_key(AUTH_HS256);
    char *good = tk_token(AUTH_HS256, CLAIMS);
    char *d1 = strchr(good, '.'), *d2 = strrchr(good, '.');
    size_t hl = (size_t)(d1 - good), cl = (size_t)(d2 - d1 - 1);
    char h[512], c[512], s[512], t[2048];
    snprintf(h, sizeof h, "%.*s", (int)hl, good);
    snprintf(c, sizeof c, "%.*s", (int)cl, d1 + 1);
    snprintf(s, sizeof s, "%s", d2 + 1);
    const char *edits[] = {"+", "/", "=", "%", "*", "\xc3\xa9"};
    for (int part = 0; part < 3; part++)
        for (size_t e = 0; e < sizeof edits / sizeof edits[0]; e++) {
            char *p[3] = {h, c, s};
            char mod[600];
            snprintf(mod, sizeof mod, "%.4s%s%s", p[part], edits[e], p[part] + 4);
            char input[1200];
            snprintf(input, sizeof input, "%s.%s", part == 0 ? mod : h, part == 1 ? mod : c);
            /* Signed as it stands (claims are read only under a good signature). */
            char *sig = tk_sign_input("HS256", NULL, TK_SECRET, sizeof TK_SECRET, input);
            snprintf(t, sizeof t, "%s.%s", input, part == 2 ? mod : sig);
            free(sig);
            cr_assert_eq(tk_verify(k, t, NOW_MS, 0, NULL), AUTH_MALFORMED, "part %d edit %s", part,
                         edits[e]);
        }
    /* The signature's 43 characters carry 258 bits: the last 2 must be zero. */
    size_t sl = strlen(s);
    cr_assert_eq(sl, 43);
    char last = s[sl - 1];
    s[sl - 1] = (char)(last == 'A' ? 'B' : last + 1);
    snprintf(t, sizeof t, "%s.%s.%s", h, c, s);
    enum auth_result r = tk_verify(k, t, NOW_MS, 0, NULL);
    cr_assert(r == AUTH_MALFORMED || r == AUTH_BAD_SIGNATURE);
    /* A length of 4n+1 characters cannot be base64. */
    snprintf(t, sizeof t, "%s.%s.%sAA", h, c, s); /* 45 characters */
    cr_assert_eq(tk_verify(k, t, NOW_MS, 0, NULL), AUTH_MALFORMED);
    free(good);
    auth_key_destroy(k);
}

Test(verify, non_json_header_and_claims)
{
    struct auth_key *k = tk_key(AUTH_HS256);
    const char *headers[] = {"not json",           "[\"HS256\"]",           "\"HS256\"",
                             "{\"alg\":\"HS256\"", "{\"alg\":\"HS256\"} x", ""};
    for (size_t i = 0; i < sizeof headers / sizeof headers[0]; i++) {
        char *t = tk_sign("HS256", NULL, TK_SECRET, sizeof TK_SECRET, headers[i], CLAIMS);
        enum auth_result r = tk_verify(k, t, NOW_MS, 0, NULL);
        cr_assert(r == AUTH_BAD_HEADER || (headers[i][0] == '\0' && r == AUTH_MALFORMED),
                  "header %s: %s", headers[i], auth_result_name(r));
        free(t);
    }
    /* Claims are read only under a good signature: these are signed. */
    const char *claims[] = {"not json",
                            "[1,2]",
                            "42",
                            "{\"sub\":\"a\"",
                            "{\"sub\":\"a\"} {}",
                            "{\"sub\":\"a\\u0000b\"}"};
    for (size_t i = 0; i < sizeof claims / sizeof claims[0]; i++) {
        char *t =
            tk_sign("HS256", NULL, TK_SECRET, sizeof TK_SECRET, "{\"alg\":\"HS256\"}", claims[i]);
        cr_assert_eq(tk_verify(k, t, NOW_MS, 0, NULL), AUTH_BAD_CLAIMS, "claims %s", claims[i]);
        free(t);
    }
    auth_key_destroy(k);
}

Test(verify, duplicate_keys_are_refused_in_header_and_claims)
{
    struct auth_key *k = tk_key(AUTH_HS256);
    char *t = tk_sign("HS256", NULL, TK_SECRET, sizeof TK_SECRET,
                      "{\"alg\":\"HS256\",\"alg\":\"none\"}", CLAIMS);
    cr_assert_eq(tk_verify(k, t, NOW_MS, 0, NULL), AUTH_BAD_HEADER);
    free(t);
    t = tk_sign("HS256", NULL, TK_SECRET, sizeof TK_SECRET, "{\"alg\":\"HS256\"}",
                "{\"sub\":\"alice\",\"sub\":\"admin\"}");
    cr_assert_eq(tk_verify(k, t, NOW_MS, 0, NULL), AUTH_BAD_CLAIMS);
    free(t);
    auth_key_destroy(k);
}

Test(verify, deep_json_is_refused_before_parsing)
{
    struct auth_key *k = tk_key(AUTH_HS256);
    char claims[256];
    /* depth 8 (the object + 7 arrays) is fine, 9 is not */
    snprintf(claims, sizeof claims, "{\"sub\":\"a\",\"x\":%s1%s}", "[[[[[[[", "]]]]]]]");
    char *t = tk_sign("HS256", NULL, TK_SECRET, sizeof TK_SECRET, "{\"alg\":\"HS256\"}", claims);
    cr_assert_eq(tk_verify(k, t, NOW_MS, 0, NULL), AUTH_OK);
    free(t);
    snprintf(claims, sizeof claims, "{\"sub\":\"a\",\"x\":%s1%s}", "[[[[[[[[", "]]]]]]]]");
    t = tk_sign("HS256", NULL, TK_SECRET, sizeof TK_SECRET, "{\"alg\":\"HS256\"}", claims);
    cr_assert_eq(tk_verify(k, t, NOW_MS, 0, NULL), AUTH_BAD_CLAIMS);
    free(t);
    /* Brackets inside strings do not count. */
    t = tk_sign("HS256", NULL, TK_SECRET, sizeof TK_SECRET, "{\"alg\":\"HS256\"}",
                "{\"sub\":\"a\",\"x\":\"[[[[[[[[[[[[[[[[\\\"[[[[[[[\"}");
    cr_assert_eq(tk_verify(k, t, NOW_MS, 0, NULL), AUTH_OK);
    free(t);
    t = tk_sign("HS256", NULL, TK_SECRET, sizeof TK_SECRET,
                "{\"alg\":\"HS256\",\"x\":[[[[[[[[1]]]]]]]]}", CLAIMS);
    cr_assert_eq(tk_verify(k, t, NOW_MS, 0, NULL), AUTH_BAD_HEADER);
    free(t);
    auth_key_destroy(k);
}

/* ES256 signatures are exactly 64 bytes r || s: the DER form OpenSSL makes,
 * or a padded one, is refused. */
Test(verify, es256_signature_of_another_length_is_refused)
{
    struct auth_key *k = tk_key(AUTH_ES256);
    const char *h = "{\"alg\":\"ES256\"}";
    char *hb = tk_b64url(h, strlen(h)), *cb = tk_b64url(CLAIMS, strlen(CLAIMS));
    char input[1024];
    snprintf(input, sizeof input, "%s.%s", hb, cb);
    uint8_t der[128];
    size_t der_len = sizeof der;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    cr_assert(EVP_DigestSignInit(ctx, NULL, EVP_sha256(), NULL, tk_ec()) == 1);
    cr_assert(EVP_DigestSign(ctx, der, &der_len, (const uint8_t *)input, strlen(input)) == 1);
    EVP_MD_CTX_free(ctx);
    char *sb = tk_b64url(der, der_len);
    char t[2048];
    snprintf(t, sizeof t, "%s.%s", input, sb);
    cr_assert_eq(tk_verify(k, t, NOW_MS, 0, NULL), AUTH_BAD_SIGNATURE);
    uint8_t zeros[64] = {0};
    free(sb);
    sb = tk_b64url(zeros, 64);
    snprintf(t, sizeof t, "%s.%s", input, sb);
    cr_assert_eq(tk_verify(k, t, NOW_MS, 0, NULL), AUTH_BAD_SIGNATURE, "r = s = 0");
    free(sb);
    free(hb);
    free(cb);
    auth_key_destroy(k);
}

Test(verify, verdicts_have_distinct_names_and_messages)
{
    for (int a = 0; a < AUTH_N_RESULTS; a++)
        for (int b = a + 1; b < AUTH_N_RESULTS; b++) {
            cr_assert_str_neq(auth_result_name((enum auth_result)a),
                              auth_result_name((enum auth_result)b));
            cr_assert_str_neq(auth_result_message((enum auth_result)a),
                              auth_result_message((enum auth_result)b));
        }
    cr_assert_str_eq(auth_result_name(AUTH_EXPIRED), "token_expired");
    cr_assert_str_eq(auth_result_name((enum auth_result)999), "unknown");
}
