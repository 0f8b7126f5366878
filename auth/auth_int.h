/*
 * auth_int.h: what the files of auth/ share and nothing outside needs.
 */
#ifndef AUTH_INT_H
#define AUTH_INT_H

#include "auth.h"
#include "protocol.h"

#include <jansson.h>
#include <openssl/evp.h>

struct auth_key {
    enum auth_alg alg;
    size_t sig_len;    /* the only signature length accepted */
    EVP_PKEY *pkey;    /* RS256, ES256 */
    EVP_MAC_CTX *hmac; /* HS256: keyed once, duplicated per token */
    char *audience;    /* auth_key_set_audience; NULL: tokens with an aud are refused */
};

/* sig.c: keys the HMAC context with the secret (copied by OpenSSL). */
rt_status auth__hmac_init(struct auth_key *key, const uint8_t *secret, size_t len);
void auth__hmac_free(struct auth_key *key);

/* sig.c: true if sig is key's signature of data (constant time for HMAC). */
bool auth__sig_ok(const struct auth_key *key, const uint8_t *data, size_t len, const uint8_t *sig,
                  size_t sig_len);

/* claims.c: fills a new claims object from the verified claims object.
 * Checks types, times (now_ms, leeway_ms), aud (audience: auth_key_set_audience),
 * sub, permissions and info. */
enum auth_result auth__claims_from_json(const json_t *obj, const char *audience, int64_t now_ms,
                                        uint32_t leeway_ms, struct auth_claims **out);

/* token.c: parses one JSON object of len bytes: depth at most
 * AUTH_JSON_DEPTH_MAX, no duplicate keys. NULL when it is anything else. */
json_t *auth__json_object(const uint8_t *text, size_t len);

#endif
