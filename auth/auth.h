/*
 * auth.h: JSON Web Tokens (RFC 7519) for rtgate's `connect` and `refresh`
 * (docs/protocol.md, Authentication): the compact serialization, one key
 * pinned to one algorithm (HS256, RS256 or ES256), the claims rtgate uses,
 * and the permission patterns they carry.
 *
 * Pure: no sockets, no clock (the caller passes the time), no lws, no NATS.
 * OpenSSL's libcrypto checks signatures, jansson parses the JSON, protocol/
 * matches channel patterns. Nothing here logs: a token, a signature or a key
 * never leaves this module except as a verdict.
 *
 * Threads: a key is immutable once loaded and may be used by several threads
 * at once; claims belong to the caller of auth_verify.
 */
#ifndef AUTH_H
#define AUTH_H

#include "rt.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Bounds on everything a client sends. */
#define AUTH_TOKEN_MAX      8192  /* bytes of a token: longer ones are refused unread */
#define AUTH_SUB_MAX        128   /* bytes of the sub claim */
#define AUTH_PATTERNS_MAX   64    /* patterns in one permission claim */
#define AUTH_INFO_MAX       1024  /* bytes of the info claim, as compact JSON */
#define AUTH_JSON_DEPTH_MAX 8     /* nesting in the header and the claims; the top object is 1 */
#define AUTH_HMAC_KEY_MIN   32    /* bytes of an HS256 secret (RFC 7518 section 3.2) */
#define AUTH_KEY_FILE_MAX   65536 /* bytes of a key file */
#define AUTH_RSA_BITS_MIN   2048
/* Prefix of the gateway's anonymous user ids: no token may claim it. */
#define AUTH_ANON_PREFIX "anon-"

/* AUTH_ALG_AUTO: derived from a PEM public key when loading (never a token's alg). */
enum auth_alg { AUTH_ALG_AUTO = 0, AUTH_HS256, AUTH_RS256, AUTH_ES256 };

/* "HS256", "RS256", "ES256" (or "auto"). */
const char *auth_alg_name(enum auth_alg alg);
/* The algorithm named exactly `name`; false for anything else ("none" included). */
bool auth_alg_parse(const char *name, enum auth_alg *out);

/*
 * Why a token was refused. Each verdict has a stable name (for logs and
 * metrics) and a message for the client's error reply; neither ever quotes
 * the token.
 */
#define AUTH_RESULT_TABLE(X)                                                                       \
    X(OK, "ok", "token accepted")                                                                  \
    X(MISSING, "token_missing", "a token is required")                                             \
    X(TOO_LONG, "token_too_long", "token longer than 8192 bytes")                                  \
    X(MALFORMED, "token_malformed",                                                                \
      "token is not three base64url parts (header.claims.signature)")                              \
    X(BAD_HEADER, "bad_header",                                                                    \
      "token header is not a JSON object with a string alg (duplicate keys, depth over 8)")        \
    X(UNSIGNED, "alg_none", "unsigned tokens (alg none) are never accepted")                       \
    X(WRONG_ALG, "wrong_alg", "token algorithm is not the one this server is configured with")     \
    X(CRIT, "crit_header", "token header has crit extensions; none are supported")                 \
    X(BAD_SIGNATURE, "bad_signature", "token signature does not verify")                           \
    X(BAD_CLAIMS, "bad_claims",                                                                    \
      "token claims are not a JSON object (duplicate keys, depth over 8)")                         \
    X(BAD_TIME, "bad_time_claim", "exp, nbf and iat must be numbers of seconds since 1970")        \
    X(EXPIRED, "token_expired", "token expired")                                                   \
    X(NOT_YET_VALID, "token_not_yet_valid", "token not yet valid (nbf)")                           \
    X(ISSUED_IN_FUTURE, "issued_in_future", "token issued in the future (iat)")                    \
    X(NO_SUB, "no_sub", "token has no sub claim")                                                  \
    X(BAD_SUB, "bad_sub",                                                                          \
      "sub must be 1-128 bytes of [A-Za-z0-9._:@|+=/~-] and not start with anon-")                 \
    X(BAD_PERMISSIONS, "bad_permissions",                                                          \
      "sub_allow, pub_allow, geo_allow and presence_allow must be arrays of at most 64 channel "   \
      "patterns")                                                                                  \
    X(BAD_INFO, "bad_info", "info must be a JSON object of at most 1024 bytes")                    \
    X(BAD_AUD, "bad_aud", "aud must be a string or an array of at most 64 strings")                \
    X(WRONG_AUD, "wrong_aud", "token is not for this server (aud)")                                \
    X(NOMEM, "nomem", "out of memory while checking the token")

enum auth_result {
#define X(name, id, message) AUTH_##name,
    AUTH_RESULT_TABLE(X)
#undef X
        AUTH_N_RESULTS
};

/* The verdict's stable name ("token_expired"); "unknown" out of range. */
const char *auth_result_name(enum auth_result r);
/* The verdict's message for the client ("token expired"). */
const char *auth_result_message(enum auth_result r);

/* ------------------------------------------------------------------ */
/* Keys                                                                 */

struct auth_key;

/*
 * Makes a key from the bytes of a key file. HS256: the bytes are the shared
 * secret (trailing CR/LF removed), at least AUTH_HMAC_KEY_MIN bytes, and must
 * not be a public key (PEM, DER, base64 DER, JWK): an HMAC secret the world knows
 * would let anyone sign. RS256 / ES256: a PEM public key ("PUBLIC KEY") or
 * certificate, RSA of at least 2048 bits / EC on P-256; private keys are
 * refused (the gateway only verifies). alg AUTH_ALG_AUTO derives RS256 or
 * ES256 from a PEM public key's type, and refuses anything else: a shared
 * secret needs its algorithm said. Returns RT_OK, RT_NOMEM, or RT_INVAL with
 * the reason in err (never the key's bytes).
 */
rt_status auth_key_create(const uint8_t *bytes, size_t len, enum auth_alg alg, char *err,
                          size_t err_len, struct auth_key **out);
/* auth_key_create on the contents of a file (at most AUTH_KEY_FILE_MAX bytes). */
rt_status auth_key_load(const char *path, enum auth_alg alg, char *err, size_t err_len,
                        struct auth_key **out);
void auth_key_destroy(struct auth_key *key); /* NULL is a no-op */
/* The one algorithm this key accepts. */
enum auth_alg auth_key_alg(const struct auth_key *key);
/*
 * The audience tokens must be for (RFC 7519 section 4.1.3), copied: with
 * one, a token's aud (a string, or an array of strings) must hold it
 * exactly; without one (NULL, the default), a token that has an aud is
 * for some other service and is refused. AUTH_WRONG_AUD either way.
 * Not thread-safe against auth_verify on the same key: set it before use.
 */
rt_status auth_key_set_audience(struct auth_key *key, const char *audience);
/*
 * A 32-byte key for another use, derived from an HS256 secret:
 * HMAC-SHA256(secret, label), so the secret itself is never reused and
 * different labels give unrelated keys. RT_INVAL for a public key (RS256,
 * ES256: nothing secret to derive from).
 */
rt_status auth_key_derive(const struct auth_key *key, const char *label, uint8_t out[32]);

/* ------------------------------------------------------------------ */
/* Claims and permissions                                               */

/* A list of valid channel patterns (protocol.h: `*` one token, `>` the rest). */
struct auth_patterns {
    char **pat; /* n NUL-terminated patterns */
    size_t n;
};

/* True if `name` (a channel, or a presence space: one token) matches one of
 * the patterns. An empty list matches nothing. */
bool auth_patterns_match(const struct auth_patterns *p, const char *name, size_t len);

/* What a verified token says. Times are ms since the Unix epoch. */
struct auth_claims {
    char sub[AUTH_SUB_MAX + 1];
    bool has_exp, has_nbf, has_iat;
    int64_t exp_ms, nbf_ms, iat_ms;
    /* Absent claims (has_* false) mean "the server's default policy";
     * a present empty array allows nothing. */
    bool has_sub_allow, has_pub_allow, has_geo_allow, has_presence_allow;
    struct auth_patterns sub_allow, pub_allow, geo_allow, presence_allow;
    char *info; /* the info object as compact JSON, NULL when absent */
    size_t info_len;
};

void auth_claims_destroy(struct auth_claims *c); /* NULL is a no-op */

/*
 * Verifies a token of len bytes at wall-clock time now_ms with leeway_ms of
 * clock skew allowed on exp, nbf and iat. Cheap refusals come first (length,
 * shape, header, algorithm), then the signature, then the claims: nothing
 * in the claims is looked at before the signature holds. On AUTH_OK *out is
 * a new claims object the caller destroys; otherwise *out is NULL.
 * A token expires at exp: it is refused when now_ms >= exp_ms + leeway_ms.
 */
enum auth_result auth_verify(const struct auth_key *key, const char *token, size_t len,
                             int64_t now_ms, uint32_t leeway_ms, struct auth_claims **out);

#endif
