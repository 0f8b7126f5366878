/*
 * sesstoken.c: the session tokens of the HTTP transports. A stream or a
 * first poll opens a session on the node it lands on; the client then POSTs
 * its requests (and polls) with the session's token, to whatever node the
 * load balancer picks. Any node of the fleet checks the token (an HMAC with
 * a key the fleet shares) and knows from it which node holds the session,
 * so it can relay the request there (relay.c) without sticky sessions.
 *
 * A token is unpadded base64url of
 *   u8 version (1) | the holding process's node key (8 random bytes) |
 *   u64 connection id (LE) | u8 length + the session's client id |
 *   the first 16 bytes of HMAC-SHA256(key, "rtgate-session-v1" | all before)
 * It grants what the session was granted at its connect, and nothing once
 * the session is gone: the holder checks the client id (random per process,
 * so a restarted node's tokens find nothing) and the connection id (with its
 * generation, never reused). The key:
 *   --session-secret FILE  HMAC-SHA256(the file's bytes, label): the fleet's
 *   an HS256 --jwt-key     HMAC-SHA256(the JWT secret, label): derived, so
 *                          the JWT secret is not reused as it is (the key in
 *                          force at the first token: a SIGHUP reload of the
 *                          JWT key does not change it, a restart does)
 *   neither                random for this run: shared by the --workers
 *                          processes (made before they fork), not by other
 *                          nodes, whose requests for this node's sessions
 *                          then get 401 (the start-up log says so)
 * The key is derived at the first token, not at start: OpenSSL must be set
 * up by nats.c first.
 * Tokens, keys and secrets never reach a log line.
 */
#include "auth.h"
#include "http.h"

#include <errno.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#define TOKEN_VERSION 1
#define TOKEN_MAC     16
#define TOKEN_LABEL   "rtgate-session-v1"
#define KEY_LABEL     "rtgate session tokens v1"
#define SECRET_MIN    32
#define SECRET_MAX    65536
/* version + node + conn id + client id length + client id + MAC */
#define TOKEN_RAW_MAX (1 + GW_NODE_KEY_BYTES + 8 + 1 + 27 + TOKEN_MAC)

_Static_assert((TOKEN_RAW_MAX * 4 + 2) / 3 <= GW_TOKEN_TEXT_MAX, "a token fits its text");

/* Reads --session-secret: at least SECRET_MIN bytes once a trailing newline is dropped. */
static rt_status read_secret(const char *path, uint8_t **out, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "rtgate: --session-secret %s: %s\n", path, strerror(errno));
        return RT_INVAL;
    }
    uint8_t *buf = malloc(SECRET_MAX + 1);
    size_t n = buf ? fread(buf, 1, SECRET_MAX + 1, f) : 0;
    fclose(f);
    while (n && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
        n--;
    if (!buf || n < SECRET_MIN || n > SECRET_MAX) {
        fprintf(stderr,
                "rtgate: --session-secret %s: the secret must have %d to %d bytes, this one "
                "has %zu\n",
                path, SECRET_MIN, SECRET_MAX, n);
        free(buf);
        return RT_INVAL;
    }
    *out = buf;
    *len = n;
    return RT_OK;
}

rt_status gw_sesstoken_configure(struct gw_config *cfg)
{
    if (cfg->session_secret_file[0]) {
        cfg->session_key_source = GW_SESSION_KEY_SECRET;
        return read_secret(cfg->session_secret_file, &cfg->session_secret,
                           &cfg->session_secret_len);
    }
    if (cfg->jwt_key && auth_key_alg(cfg->jwt_key) == AUTH_HS256) {
        cfg->session_key_source = GW_SESSION_KEY_JWT;
        return RT_OK;
    }
    /* getrandom(2), not OpenSSL's RAND: see gw.h. Made before --workers fork. */
    cfg->session_secret = malloc(32);
    if (!cfg->session_secret || getrandom(cfg->session_secret, 32, 0) != 32) {
        fprintf(stderr, "rtgate: no random bytes for the session tokens' key\n");
        return RT_INVAL;
    }
    cfg->session_secret_len = 32;
    cfg->session_key_source = GW_SESSION_KEY_RANDOM;
    return RT_OK;
}

void gw_sesstoken_config_free(struct gw_config *cfg)
{
    if (cfg->session_secret)
        OPENSSL_cleanse(cfg->session_secret, cfg->session_secret_len);
    free(cfg->session_secret);
    cfg->session_secret = NULL;
    cfg->session_secret_len = 0;
}

/* The MAC key: HMAC-SHA256(material, label), made at the first token (the loop
 * runs); NULL when it cannot be made. */
static const uint8_t *key_of(const struct gw_server *srv)
{
    struct gw_server *w = (struct gw_server *)(uintptr_t)srv; /* a cache of a constant */
    if (w->session_key_ready)
        return w->session_key;
    const struct gw_config *cfg = srv->cfg;
    unsigned out_len = 0;
    bool ok = cfg->session_key_source == GW_SESSION_KEY_JWT
                  ? auth_key_derive(srv->jwt_key, KEY_LABEL, w->session_key) == RT_OK
                  : HMAC(EVP_sha256(), cfg->session_secret, (int)cfg->session_secret_len,
                         (const uint8_t *)KEY_LABEL, strlen(KEY_LABEL), w->session_key,
                         &out_len) != NULL &&
                        out_len == sizeof w->session_key;
    if (!ok) {
        /* Not fatal here: tokens then fail to check (401) rather than the node going
         * down. Not the buffer either: an all-zero key anyone could compute. */
        static bool told; /* once: every request would log it again */
        if (!told)
            rt_log(RT_LOG_ERROR, "session_key_failed", "source=%u", cfg->session_key_source);
        told = true;
        return NULL;
    }
    w->session_key_ready = true;
    return w->session_key;
}

/* False when there is no MAC to give (no key, or HMAC failed): no token checks then. */
static bool mac_of(const struct gw_server *srv, const uint8_t *raw, size_t len,
                   uint8_t out[TOKEN_MAC])
{
    const uint8_t *key = key_of(srv);
    uint8_t data[sizeof TOKEN_LABEL - 1 + TOKEN_RAW_MAX];
    memcpy(data, TOKEN_LABEL, sizeof TOKEN_LABEL - 1);
    memcpy(data + sizeof TOKEN_LABEL - 1, raw, len);
    uint8_t md[EVP_MAX_MD_SIZE];
    unsigned md_len = 0;
    if (!key || !HMAC(EVP_sha256(), key, 32, data, sizeof TOKEN_LABEL - 1 + len, md, &md_len) ||
        md_len < TOKEN_MAC)
        return false;
    memcpy(out, md, TOKEN_MAC);
    return true;
}

void gw_sesstoken_mint(const struct gw_session *s, char out[GW_TOKEN_TEXT_MAX + 1])
{
    uint8_t raw[TOKEN_RAW_MAX];
    size_t len = 0, id_len = strnlen(s->client_id, sizeof s->client_id - 1);
    raw[len++] = TOKEN_VERSION;
    memcpy(raw + len, s->srv->node_key, GW_NODE_KEY_BYTES);
    len += GW_NODE_KEY_BYTES;
    for (int b = 0; b < 8; b++)
        raw[len++] = (uint8_t)(s->conn_id >> (8 * b));
    raw[len++] = (uint8_t)id_len;
    memcpy(raw + len, s->client_id, id_len);
    len += id_len;
    out[0] = '\0';
    if (!mac_of(s->srv, raw, len, raw + len))
        return; /* no token: the client's requests get 401 */
    len += TOKEN_MAC;
    struct proto_buf b;
    proto_buf_init(&b, 0);
    if (proto_base64url_encode(raw, len, &b) == RT_OK && b.len <= GW_TOKEN_TEXT_MAX) {
        memcpy(out, b.data, b.len);
        out[b.len] = '\0';
    }
    proto_buf_free(&b);
}

enum gw_token_check gw_sesstoken_check(const struct gw_server *srv, const char *text, size_t len,
                                       struct gw_sesstoken *out)
{
    if (len == 0 || len > GW_TOKEN_TEXT_MAX)
        return GW_TOKEN_MALFORMED;
    struct proto_buf b;
    proto_buf_init(&b, 0);
    uint8_t raw[GW_TOKEN_TEXT_MAX];
    size_t n = 0;
    if (proto_base64url_decode(text, len, &b) == RT_OK && b.len <= sizeof raw) {
        n = b.len;
        memcpy(raw, b.data, n);
    }
    proto_buf_free(&b);
    size_t head = 1 + GW_NODE_KEY_BYTES + 8 + 1;
    if (n < head + 1 + TOKEN_MAC || raw[0] != TOKEN_VERSION)
        return GW_TOKEN_MALFORMED;
    size_t id_len = raw[head - 1];
    if (id_len < 1 || id_len >= sizeof out->client_id || n != head + id_len + TOKEN_MAC)
        return GW_TOKEN_MALFORMED;
    uint8_t mac[TOKEN_MAC];
    if (!mac_of(srv, raw, head + id_len, mac) ||
        CRYPTO_memcmp(mac, raw + head + id_len, TOKEN_MAC) != 0)
        return GW_TOKEN_FORGED;
    memcpy(out->node, raw + 1, GW_NODE_KEY_BYTES);
    out->conn_id = 0;
    for (int k = 0; k < 8; k++)
        out->conn_id |= (uint64_t)raw[1 + GW_NODE_KEY_BYTES + k] << (8 * k);
    memcpy(out->client_id, raw + head, id_len);
    out->client_id[id_len] = '\0';
    return GW_TOKEN_OK;
}

void gw_sesstoken_describe(struct gw_session *s, struct proto_writer *w)
{
    char token[GW_TOKEN_TEXT_MAX + 1];
    gw_sesstoken_mint(s, token);
    proto_w_kcstr(w, "transport", gw_transport_of(s)->name);
    proto_w_kcstr(w, "session", token);
}
