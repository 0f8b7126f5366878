/*
 * helpers.h: shared by the auth tests. A token signer of its own (OpenSSL's
 * signing side, its own base64url encoder, DER to r || s for ES256), so the
 * verifier is checked against code that does not share its parsing; keys
 * are made by the test process itself.
 */
#ifndef TEST_AUTH_HELPERS_H
#define TEST_AUTH_HELPERS_H

#include "auth.h"

#include <openssl/evp.h>
#include <stddef.h>
#include <stdint.h>

/* Keys made once per test process: the signing pairs and a second pair of
 * each kind for "wrong key" tokens. */
EVP_PKEY *tk_rsa(void);
EVP_PKEY *tk_rsa_other(void);
EVP_PKEY *tk_ec(void);
EVP_PKEY *tk_ec_other(void);
/* A fresh key: RSA of `bits`, or EC on the named curve. Caller frees. */
EVP_PKEY *tk_new_rsa(int bits);
EVP_PKEY *tk_new_ec(const char *curve);

/* The HS256 test secret (48 bytes) and another one. */
extern const uint8_t TK_SECRET[48];
extern const uint8_t TK_SECRET_OTHER[48];

/* PEM text of a key's public half (or of the private key). Caller frees. */
char *tk_pem_public(EVP_PKEY *pk);
char *tk_pem_private(EVP_PKEY *pk);

/* The verifier's key for alg, made from the public PEM of tk_rsa/tk_ec or
 * from TK_SECRET; asserts that it loads. */
struct auth_key *tk_key(enum auth_alg alg);

/* base64url without padding of n bytes. Caller frees. */
char *tk_b64url(const void *p, size_t n);

/*
 * A token: the header and claims JSON texts encoded as given, signed with
 * `alg` ("HS256", "RS256", "ES256"; anything else: empty signature) using
 * pk (RSA/EC) or secret (HMAC). Caller frees.
 */
char *tk_sign(const char *alg, EVP_PKEY *pk, const uint8_t *secret, size_t secret_len,
              const char *header_json, const char *claims_json);
/* The base64url signature of a raw signing input (any text). Caller frees. */
char *tk_sign_input(const char *alg, EVP_PKEY *pk, const uint8_t *secret, size_t secret_len,
                    const char *input);
/* tk_sign with header {"alg":alg,"typ":"JWT"} and the default key of alg. */
char *tk_token(enum auth_alg alg, const char *claims_json);

/* auth_verify on a NUL-terminated token; destroys the claims unless out is given. */
enum auth_result tk_verify(const struct auth_key *key, const char *token, int64_t now_ms,
                           uint32_t leeway_ms, struct auth_claims **out);

#endif
