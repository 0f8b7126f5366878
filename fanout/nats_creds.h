/*
 * nats_creds.h: NATS user credentials for the loop reader's CONNECT
 * (nats_creds.c): a .creds file (the user JWT and its NKey seed) or a bare
 * NKey seed file, read once, and the signature of a server's nonce.
 *
 * The files are parsed as nats.c parses them, so one file works for both
 * connections: a value sits between two dash lines ("-----BEGIN NATS USER
 * JWT-----" ... "------END NATS USER JWT------"), the JWT in the first
 * block and the seed in the second; a seed file without blocks holds the
 * seed on a line of its own ("SU..."). Secrets stay in memory only (wiped
 * when freed) and never in an error text. Any thread; the files are read at
 * start (ncreds_load blocks on the file system).
 */
#ifndef NATS_CREDS_H
#define NATS_CREDS_H

#include "nkey.h"
#include "rt.h"

#include <jansson.h>

#define NCREDS_FILE_MAX ((size_t)64 << 10) /* a larger file is not credentials */

struct ncreds;

/*
 * Loads a .creds file or an NKey seed file (at most one of the two may be
 * set; both empty or NULL: *out = NULL and RT_OK). RT_INVAL with a reason
 * in err (the file's name and what is wrong with it, never its content).
 */
rt_status ncreds_load(const char *creds_file, const char *nkey_file, char *err, size_t err_cap,
                      struct ncreds **out);
void ncreds_free(struct ncreds *c);

/* The user's public NKey ("U..."), as nats.c's natsOptions_SetNKeyFromSeed wants it. */
rt_status ncreds_public_key(const struct ncreds *c, char out[NKEY_PUBLIC_CHARS + 1]);

/* True for a .creds file (CONNECT carries the JWT), false for a bare NKey. */
bool ncreds_has_jwt(const struct ncreds *c);

/*
 * Adds what proves the identity to a CONNECT object: "jwt" (or "nkey", the
 * public key) and "sig", the nonce signed with the seed (base64url).
 * RT_INVAL without a nonce (the server does not take NKeys), RT_NOMEM/RT_ERR.
 */
rt_status ncreds_connect_fields(const struct ncreds *c, const char *nonce, size_t nonce_len,
                                json_t *connect);

/*
 * Parses a file's text (exposed for the unit tests): the JWT (NULL when
 * want_jwt is false) and the seed. RT_INVAL with a reason in err.
 */
rt_status ncreds_parse(const char *text, size_t len, bool want_jwt, char **jwt, struct nkey *seed,
                       char *err, size_t err_cap);

#endif
