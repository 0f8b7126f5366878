/*
 * authz.c: who may connect, subscribe, publish and be present
 * (docs/protocol.md, Authentication). The token of `connect` and `refresh`
 * is verified by auth/ against the --jwt-key; its sub becomes the session's
 * user, its exp a deadline the sweep enforces (close 4001), its sub_allow /
 * pub_allow / geo_allow the session's permissions. Sessions without those
 * claims, and anonymous ones, get the default policies (--sub-allow ...).
 * The request handlers call the gw_authz_may_* checks first thing.
 *
 * No token, signature, key or claim other than sub is ever logged here.
 * Loop thread, except gw_authz_configure (main thread, before the loop).
 */
#include "auth.h"
#include "gw.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <uv.h>

/* ---- configuration ------------------------------------------------------ */

static rt_status add_open_default(struct gw_policy *p)
{
    if (p->given)
        return RT_OK;
    p->pat[0] = strdup(">");
    if (!p->pat[0])
        return RT_NOMEM;
    p->n = 1;
    return RT_OK;
}

/* The --jwt-key file as a key, with the --jwt-audience its tokens must be for. */
static rt_status load_key(const struct gw_config *cfg, enum auth_alg alg, char *err, size_t err_len,
                          struct auth_key **out)
{
    rt_status st = auth_key_load(cfg->jwt_key_file, alg, err, err_len, out);
    if (st != RT_OK || !cfg->jwt_audience[0])
        return st;
    st = auth_key_set_audience(*out, cfg->jwt_audience);
    if (st != RT_OK) {
        auth_key_destroy(*out);
        *out = NULL;
    }
    return st;
}

/*
 * Without --jwt-key nobody is authenticated and, unless a flag says
 * otherwise, anyone may use any channel and space (PROTOCOL.md section 2's
 * server "with no auth configured"). With a key, nothing is allowed that a
 * token's claims or a --*-allow flag do not allow.
 */
rt_status gw_authz_configure(struct gw_config *cfg)
{
    enum auth_alg alg = AUTH_ALG_AUTO;
    if (cfg->jwt_alg[0] && !auth_alg_parse(cfg->jwt_alg, &alg)) {
        fprintf(stderr, "rtgate: --jwt-alg must be HS256, RS256 or ES256\n");
        return RT_INVAL;
    }
    if ((cfg->jwt_alg[0] || cfg->jwt_audience[0]) && !cfg->jwt_key_file[0]) {
        fprintf(stderr, "rtgate: --jwt-alg and --jwt-audience need --jwt-key\n");
        return RT_INVAL;
    }
    if (cfg->jwt_key_file[0]) {
        char err[512] = "";
        if (load_key(cfg, alg, err, sizeof err, &cfg->jwt_key) != RT_OK) {
            fprintf(stderr, "rtgate: --jwt-key %s: %s\n", cfg->jwt_key_file,
                    err[0] ? err : "out of memory");
            return RT_INVAL;
        }
        return RT_OK;
    }
    if (add_open_default(&cfg->sub_allow) != RT_OK || add_open_default(&cfg->pub_allow) != RT_OK ||
        add_open_default(&cfg->geo_allow) != RT_OK)
        return RT_NOMEM;
    return RT_OK;
}

void gw_authz_config_free(struct gw_config *cfg)
{
    struct gw_policy *ps[] = {&cfg->sub_allow, &cfg->pub_allow, &cfg->geo_allow,
                              &cfg->presence_allow};
    for (size_t i = 0; i < sizeof ps / sizeof *ps; i++) {
        for (size_t j = 0; j < ps[i]->n; j++)
            free(ps[i]->pat[j]);
        ps[i]->n = 0;
    }
    auth_key_destroy(cfg->jwt_key);
    cfg->jwt_key = NULL;
}

/* gw.h: the options (config.c), then the key, then the session tokens' key
 * (sesstoken.c: it may derive from the JWT key). Main thread, before the loop. */
rt_status gw_config_load(struct gw_config *cfg, int argc, char **argv)
{
    rt_status st = gw_config_parse(cfg, argc, argv);
    if (st != RT_OK)
        return st;
    return gw_authz_configure(cfg) == RT_OK && gw_sesstoken_configure(cfg) == RT_OK ? RT_OK
                                                                                    : RT_INVAL;
}

/* gw.h: the options' patterns and the key. */
void gw_config_free(struct gw_config *cfg)
{
    gw_config_free_parsed(cfg);
    gw_authz_config_free(cfg);
    gw_sesstoken_config_free(cfg);
}

/* ---- the key, and its reload on SIGHUP ---------------------------------- */

static void on_sighup(uv_signal_t *h, int signum)
{
    (void)signum;
    struct gw_server *srv = h->data;
    const struct gw_config *cfg = srv->cfg;
    enum auth_alg alg = AUTH_ALG_AUTO;
    if (cfg->jwt_alg[0])
        auth_alg_parse(cfg->jwt_alg, &alg);
    char err[512] = "";
    struct auth_key *key = NULL;
    if (load_key(cfg, alg, err, sizeof err, &key) != RT_OK) {
        /* The old key stays: a bad edit must not lock every client out. */
        rt_log(RT_LOG_ERROR, "jwt_key_reload_failed", "file=%s why=\"%s\"", cfg->jwt_key_file, err);
        return;
    }
    if (srv->jwt_key_owned)
        auth_key_destroy(srv->jwt_key);
    srv->jwt_key = key;
    srv->jwt_key_owned = true;
    rt_log(RT_LOG_INFO, "jwt_key_reloaded", "file=%s alg=%s", cfg->jwt_key_file,
           auth_alg_name(auth_key_alg(key)));
}

static void policy_text(const struct gw_policy *p, char *out, size_t cap)
{
    size_t at = 0;
    out[0] = '\0';
    for (size_t i = 0; i < p->n && at < cap; i++)
        at += (size_t)snprintf(out + at, cap - at, "%s%s", i ? "," : "", p->pat[i]);
    if (!p->n)
        snprintf(out, cap, "(none)");
}

static void log_mode(const struct gw_server *srv)
{
    const struct gw_config *cfg = srv->cfg;
    char sub[256], pub[256], geo[256];
    policy_text(&cfg->sub_allow, sub, sizeof sub);
    policy_text(&cfg->pub_allow, pub, sizeof pub);
    policy_text(&cfg->geo_allow, geo, sizeof geo);
    if (srv->jwt_key)
        rt_log(RT_LOG_INFO, "auth", "tokens=%s alg=%s anonymous=%s leeway_ms=%u audience=%s",
               cfg->jwt_key_file, auth_alg_name(auth_key_alg(srv->jwt_key)),
               cfg->allow_anonymous ? "allowed" : "refused", cfg->jwt_leeway_ms,
               cfg->jwt_audience[0] ? cfg->jwt_audience : "(none: tokens with aud refused)");
    else
        rt_log(RT_LOG_INFO, "auth", "tokens=off (every connect is anonymous)");
    rt_log(RT_LOG_INFO, "auth_default_policy", "sub_allow=%s pub_allow=%s geo_allow=%s", sub, pub,
           geo);
}

rt_status gw_authz_start(struct gw_server *srv)
{
    srv->jwt_key = srv->cfg->jwt_key;
    srv->jwt_key_owned = false;
    log_mode(srv);
    if (!srv->jwt_key)
        return RT_OK;
    uv_signal_t *h = malloc(sizeof *h);
    if (!h || uv_signal_init(srv->loop, h) != 0) {
        free(h);
        return RT_NOMEM;
    }
    h->data = srv;
    uv_signal_start(h, on_sighup, SIGHUP);
    srv->sighup = h;
    return RT_OK;
}

static void sighup_closed(uv_handle_t *h)
{
    free(h);
}

void gw_authz_stop(struct gw_server *srv)
{
    if (srv->sighup) {
        uv_signal_stop(srv->sighup);
        uv_close(srv->sighup, sighup_closed);
        srv->sighup = NULL;
    }
    if (srv->jwt_key_owned)
        auth_key_destroy(srv->jwt_key);
    srv->jwt_key = NULL;
    srv->jwt_key_owned = false;
}

/* ---- sessions ------------------------------------------------------------ */

const char *gw_session_user(const struct gw_session *s)
{
    return s->claims ? s->claims->sub : s->anon_user;
}

/* The monotonic time at which the claims' exp (plus leeway) passes. */
static uint64_t deadline_of(const struct gw_session *s, const struct auth_claims *c)
{
    if (!c->has_exp)
        return 0;
    int64_t left = c->exp_ms + (int64_t)s->srv->cfg->jwt_leeway_ms - (int64_t)rt_wall_ms();
    return rt_mono_ms() + (uint64_t)(left > 1 ? left : 1);
}

static enum auth_result verify(struct gw_session *s, const struct proto_msg *m,
                               struct auth_claims **out)
{
    const struct gw_server *srv = s->srv;
    return auth_verify(srv->jwt_key, m->token.ptr, m->token.len, (int64_t)rt_wall_ms(),
                       srv->cfg->jwt_leeway_ms, out);
}

/* A refused token: 401 with the verdict's message, then close 4001. */
static void refuse_connect(struct gw_session *s, const struct proto_msg *m, enum auth_result r)
{
    rt_log(RT_LOG_INFO, "auth_refused", "conn=%s peer=%s reason=%s token_bytes=%zu", s->client_id,
           s->peer, auth_result_name(r), m->token.len);
    gw_session_reply_error(s, m, RT_E_UNAUTHORIZED, auth_result_message(r), 0);
    s->srv->m.auth_refused++;
    /* token_expired: the client may come back at once with a fresh token. */
    bool expired = r == AUTH_EXPIRED;
    gw_session_close(s, 4001, expired ? "token_expired" : "unauthorized", true, expired, 0);
}

/*
 * Refreshes a connection may make: each costs a signature check (ES256 ~75
 * us, fifteen times a ping), which the message rate alone would let a
 * client ask for 200 times a second. A client refreshes at 80% of a token's
 * life (at least a second apart); a few in a row leave room for retries.
 */
static const struct rt_bucket_cfg REFRESH_BUCKET = {.rate = 1, .burst = 3};

bool gw_authz_connect(struct gw_session *s, const struct proto_msg *m)
{
    bool has_token = m->token.ptr && m->token.len;
    gw_authz_closed(s); /* a connect after one that failed later (503) starts afresh */
    rt_bucket_init(&s->refresh_bucket, &REFRESH_BUCKET, rt_mono_ms());
    if (!s->srv->jwt_key || (!has_token && s->srv->cfg->allow_anonymous)) {
        snprintf(s->anon_user, sizeof s->anon_user, "%s%s", AUTH_ANON_PREFIX, s->client_id);
        return true;
    }
    struct auth_claims *c = NULL;
    enum auth_result r = verify(s, m, &c);
    if (r != AUTH_OK) {
        refuse_connect(s, m, r);
        return false;
    }
    s->claims = c;
    s->token_deadline_ms = deadline_of(s, c);
    rt_log(RT_LOG_DEBUG, "auth_ok", "conn=%s peer=%s user=%s", s->client_id, s->peer, c->sub);
    return true;
}

void gw_authz_write_expiry(const struct gw_session *s, struct proto_writer *w)
{
    if (!s->token_deadline_ms)
        return;
    uint64_t now = rt_mono_ms();
    proto_w_kuint(w, "expires_in_ms", s->token_deadline_ms > now ? s->token_deadline_ms - now : 0);
}

/* True if the refresh may go on to the signature check; answers it otherwise. */
static bool refresh_allowed(struct gw_session *s, const struct proto_msg *m)
{
    uint32_t retry = 0;
    if (!s->claims) {
        /* No token can name an anon- user: refused before any check. */
        gw_session_reply_error(s, m, RT_E_FORBIDDEN,
                               "an anonymous session cannot be refreshed: connect again with a "
                               "token",
                               0);
        return false;
    }
    if (!rt_bucket_take(&s->refresh_bucket, &REFRESH_BUCKET, rt_mono_ms(), &retry)) {
        gw_session_reply_error(s, m, RT_E_RATE_LIMITED, "refresh rate exceeded", retry);
        return false;
    }
    return true;
}

void gw_authz_refresh(struct gw_session *s, const struct proto_msg *m)
{
    if (s->srv->jwt_key) {
        if (!refresh_allowed(s, m))
            return; /* the session goes on as it is */
        struct auth_claims *c = NULL;
        enum auth_result r = verify(s, m, &c);
        if (r != AUTH_OK) {
            /* The session goes on with its current token until that expires. */
            rt_log(RT_LOG_INFO, "refresh_refused", "conn=%s peer=%s reason=%s", s->client_id,
                   s->peer, auth_result_name(r));
            gw_session_reply_error(s, m, RT_E_UNAUTHORIZED, auth_result_message(r), 0);
            return;
        }
        if (strcmp(c->sub, gw_session_user(s)) != 0) {
            rt_log(RT_LOG_INFO, "refresh_refused", "conn=%s peer=%s reason=other_user",
                   s->client_id, s->peer);
            auth_claims_destroy(c);
            gw_session_reply_error(s, m, RT_E_FORBIDDEN,
                                   "the token is for another user than this session's", 0);
            return;
        }
        auth_claims_destroy(s->claims);
        s->claims = c;
        s->token_deadline_ms = deadline_of(s, c);
        rt_log(RT_LOG_DEBUG, "token_refreshed", "conn=%s peer=%s", s->client_id, s->peer);
    }
    /* Without --jwt-key a token is ignored, as in connect. */
    struct proto_writer w;
    gw_session_begin_reply(s, &w, m->id);
    gw_authz_write_expiry(s, &w);
    gw_session_finish_reply(s, &w);
}

bool gw_authz_sweep(struct gw_session *s, uint64_t now_ms)
{
    if (!s->token_deadline_ms || now_ms < s->token_deadline_ms)
        return false;
    s->token_deadline_ms = 0;
    rt_log(RT_LOG_INFO, "token_expired", "conn=%s peer=%s", s->client_id, s->peer);
    s->srv->m.token_expired++;
    gw_session_close(s, 4001, "token_expired", true, true, 0);
    return true;
}

void gw_authz_closed(struct gw_session *s)
{
    auth_claims_destroy(s->claims);
    s->claims = NULL;
    s->token_deadline_ms = 0;
}

/* ---- permissions ---------------------------------------------------------- */

enum what { MAY_SUB, MAY_PUB, MAY_GEO, MAY_PRESENCE };

static bool permitted(const struct gw_session *s, enum what what, const char *name, size_t len)
{
    const struct gw_config *cfg = s->srv->cfg;
    const struct auth_claims *c = s->claims;
    if (what == MAY_PRESENCE) {
        /* Its own claim, else its own flag, else whoever may subscribe may be present. */
        if (c && c->has_presence_allow)
            return auth_patterns_match(&c->presence_allow, name, len);
        if (cfg->presence_allow.given) {
            struct auth_patterns p = {(char **)cfg->presence_allow.pat, cfg->presence_allow.n};
            return auth_patterns_match(&p, name, len);
        }
        what = MAY_SUB;
    }
    const struct gw_policy *dflt = what == MAY_SUB   ? &cfg->sub_allow
                                   : what == MAY_PUB ? &cfg->pub_allow
                                                     : &cfg->geo_allow;
    struct auth_patterns p = {(char **)dflt->pat, dflt->n};
    if (c && what == MAY_SUB && c->has_sub_allow)
        p = c->sub_allow;
    else if (c && what == MAY_PUB && c->has_pub_allow)
        p = c->pub_allow;
    else if (c && what == MAY_GEO && c->has_geo_allow)
        p = c->geo_allow;
    return auth_patterns_match(&p, name, len);
}

/* 403 naming what was refused (a channel or space: validated names). */
static bool refuse(struct gw_session *s, const struct proto_msg *m, const char *verb,
                   const struct proto_str *name)
{
    char message[200];
    snprintf(message, sizeof message, "not allowed to %s %.*s", verb, (int)name->len, name->ptr);
    gw_session_reply_error(s, m, RT_E_FORBIDDEN, message, 0);
    return false;
}

bool gw_authz_may_sub(struct gw_session *s, const struct proto_msg *m)
{
    return permitted(s, MAY_SUB, m->channel.ptr, m->channel.len) ||
           refuse(s, m, "subscribe to", &m->channel);
}

bool gw_authz_may_pub(struct gw_session *s, const struct proto_msg *m)
{
    return permitted(s, MAY_PUB, m->channel.ptr, m->channel.len) ||
           refuse(s, m, "publish to", &m->channel);
}

bool gw_authz_may_geo(struct gw_session *s, const struct proto_msg *m)
{
    return permitted(s, MAY_GEO, m->space.ptr, m->space.len) ||
           refuse(s, m, "use the presence space", &m->space);
}

bool gw_authz_may_presence(struct gw_session *s, const struct proto_msg *m)
{
    return permitted(s, MAY_PRESENCE, m->channel.ptr, m->channel.len) ||
           refuse(s, m, "take part in the presence of", &m->channel);
}
