/*
 * The session tokens of the HTTP transports (gateway/sesstoken.c), checked
 * as hostile text: one made by this process verifies, one with a byte of
 * its MAC changed does not, and when the MAC key cannot be made the tokens
 * fail closed (none verifies), never open under a key anyone could compute.
 */
#include "http.h"

#include <criterion/criterion.h>
#include <openssl/hmac.h>
#include <string.h>

/* sesstoken.c's describe names the transport; the table is session.c's. */
const struct gw_transport *const gw_transports[GW_TRANSPORT_N];

static uint8_t secret[32] = "a fleet secret of 32 bytes here!";

static void setup(struct gw_server *srv, struct gw_config *cfg, struct gw_session *s,
                  enum gw_session_key_source source)
{
    memset(srv, 0, sizeof *srv);
    memset(cfg, 0, sizeof *cfg);
    memset(s, 0, sizeof *s);
    cfg->session_key_source = (uint8_t)source;
    cfg->session_secret = secret;
    cfg->session_secret_len = sizeof secret;
    srv->cfg = cfg;
    memcpy(srv->node_key, "node-key", GW_NODE_KEY_BYTES);
    s->srv = srv;
    s->conn_id = 0x100000002ull;
    strcpy(s->client_id, "c1-2a");
}

/* A token of s whose MAC is made with `key` (32 bytes), as an attacker would. */
static void token_under(const struct gw_session *s, const uint8_t *key, char *out, size_t cap)
{
    uint8_t raw[128];
    size_t len = 0, id_len = strlen(s->client_id);
    memcpy(raw, "rtgate-session-v1", 17);
    len = 17;
    raw[len++] = 1;
    memcpy(raw + len, s->srv->node_key, GW_NODE_KEY_BYTES);
    len += GW_NODE_KEY_BYTES;
    for (int b = 0; b < 8; b++)
        raw[len++] = (uint8_t)(s->conn_id >> (8 * b));
    raw[len++] = (uint8_t)id_len;
    memcpy(raw + len, s->client_id, id_len);
    len += id_len;
    uint8_t md[32];
    unsigned md_len = 0;
    cr_assert(HMAC(EVP_sha256(), key, 32, raw, len, md, &md_len));
    memcpy(raw + len, md, 16);
    len += 16;
    struct proto_buf b;
    proto_buf_init(&b, 0);
    cr_assert_eq(proto_base64url_encode(raw + 17, len - 17, &b), RT_OK);
    cr_assert_lt(b.len, cap);
    memcpy(out, b.data, b.len);
    out[b.len] = '\0';
    proto_buf_free(&b);
}

Test(sesstoken, a_minted_token_verifies_and_a_changed_mac_does_not)
{
    struct gw_server srv;
    struct gw_config cfg;
    struct gw_session s;
    setup(&srv, &cfg, &s, GW_SESSION_KEY_SECRET);
    char tok[GW_TOKEN_TEXT_MAX + 1];
    gw_sesstoken_mint(&s, tok);
    struct gw_sesstoken t;
    cr_assert_eq(gw_sesstoken_check(&srv, tok, strlen(tok), &t), GW_TOKEN_OK);
    cr_assert_eq(t.conn_id, s.conn_id);
    cr_assert_str_eq(t.client_id, s.client_id);
    size_t last = strlen(tok) - 3; /* inside the MAC */
    tok[last] = tok[last] == 'A' ? 'B' : 'A';
    cr_assert_eq(gw_sesstoken_check(&srv, tok, strlen(tok), &t), GW_TOKEN_FORGED);
}

Test(sesstoken, no_key_no_token_verifies)
{
    /* The key comes from an HS256 JWT key that is not there (here: none), so
     * it cannot be derived: the process must refuse every token, not make and
     * accept tokens under an all-zero key that anyone can compute. */
    struct gw_server srv;
    struct gw_config cfg;
    struct gw_session s;
    setup(&srv, &cfg, &s, GW_SESSION_KEY_JWT);
    static const uint8_t zero[32];
    char forged[GW_TOKEN_TEXT_MAX + 1], minted[GW_TOKEN_TEXT_MAX + 1];
    token_under(&s, zero, forged, sizeof forged);
    struct gw_sesstoken t;
    cr_assert_neq(gw_sesstoken_check(&srv, forged, strlen(forged), &t), GW_TOKEN_OK,
                  "a token under the all-zero key verified");
    gw_sesstoken_mint(&s, minted);
    cr_assert_neq(gw_sesstoken_check(&srv, minted, strlen(minted), &t), GW_TOKEN_OK);
}
