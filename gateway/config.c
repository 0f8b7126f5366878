/*
 * config.c: defaults, the config file, the environment and the command line.
 * One table names every option once, so the file, the environment, the flags
 * and --help cannot disagree. Later sources win: defaults < the --config file
 * (or RTGATE_CONFIG) < RTGATE_* variables < flags.
 */
#include "gw.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

enum opt_kind {
    OPT_U32,
    OPT_U64,
    OPT_SIZE,
    OPT_STR,
    OPT_LISTEN,
    OPT_PATTERN,
    OPT_LOGLEVEL,
    OPT_ORIGIN, /* repeatable, or comma-separated */
    OPT_CIDR,   /* repeatable, or comma-separated */
    OPT_FLAG,   /* uint32_t set to 1 by the bare flag; `name = 0|1` in the file */
    OPT_POLICY, /* struct gw_policy: one pattern per use, "" allows nothing */
};

struct opt {
    const char *name;
    enum opt_kind kind;
    size_t offset;
    size_t size; /* OPT_STR: buffer size */
    const char *help;
};

#ifndef RTGATE_VERSION
#define RTGATE_VERSION "unknown"
#endif

#define OFF(field) offsetof(struct gw_config, field)

static const struct opt opts[] = {
    {"listen", OPT_LISTEN, 0, 0,
     "HOST:PORT or [IPV6]:PORT to listen on, e.g. [::]:8080 for every address (default "
     "0.0.0.0:8080)"},
    {"ws-path", OPT_STR, OFF(ws_path), sizeof(((struct gw_config *)0)->ws_path),
     "WebSocket path (default /ws)"},
    {"node-id", OPT_STR, OFF(node_id), sizeof(((struct gw_config *)0)->node_id),
     "this gateway's id in replies and logs (default: hostname-pid)"},
    {"ephemeral", OPT_PATTERN, 0, 0,
     "channel pattern (NATS-style * and >) whose channels are ephemeral; repeatable. "
     "Every other channel is durable"},
    {"history", OPT_SIZE, OFF(history), 0, "messages kept per durable channel (default 1000)"},
    {"history-age-ms", OPT_U64, OFF(history_age_ms), 0,
     "max age of retained messages (default 3600000)"},
    {"dedup-window-ms", OPT_U64, OFF(dedup_window_ms), 0,
     "how long a msg_id is remembered (default 120000)"},
    {"pub-rate", OPT_U32, OFF(pub_bucket.rate), 0,
     "publishes per second per connection (default 20)"},
    {"pub-burst", OPT_U32, OFF(pub_bucket.burst), 0, "publish burst per connection (default 40)"},
    {"msg-rate", OPT_U32, OFF(msg_bucket.rate), 0,
     "inbound messages per second per connection, any type (default 200)"},
    {"msg-burst", OPT_U32, OFF(msg_bucket.burst), 0, "inbound message burst (default 400)"},
    {"ip-conn-rate", OPT_U32, OFF(ip_bucket.rate), 0,
     "WebSocket handshakes per second per remote IP, 0 = off (default 200)"},
    {"ip-conn-burst", OPT_U32, OFF(ip_bucket.burst), 0, "handshake burst per IP (default 400)"},
    {"conn-rate", OPT_U32, OFF(conn_bucket.rate), 0,
     "WebSocket handshakes per second for the whole node; over it 503 with Retry-After, so a "
     "reconnect storm is admitted at a pace the node can take (0 = off, the default; "
     "docs/operations.md sizes it)"},
    {"conn-burst", OPT_U32, OFF(conn_bucket.burst), 0,
     "handshake burst for the whole node (default 1000)"},
    {"max-unacked", OPT_U32, OFF(max_unacked), 0,
     "durable messages delivered but not acked, per connection (default 1024)"},
    {"max-subs", OPT_U32, OFF(max_subs), 0, "subscriptions per connection (default 256)"},
    {"max-message-bytes", OPT_SIZE, OFF(max_message_bytes), 0,
     "largest inbound message; bigger closes with 1009 (default 65536)"},
    {"max-outbox-bytes", OPT_SIZE, OFF(max_outbox_bytes), 0,
     "send queue per connection before deliveries are held back (default 1048576)"},
    {"max-connections", OPT_U32, OFF(max_connections), 0,
     "WebSocket connections before handshakes get 503 (default: fd limit - 256)"},
    {"connect-timeout-ms", OPT_U32, OFF(connect_timeout_ms), 0,
     "time to send `connect` before close 4001 (default 10000)"},
    {"ping-interval-ms", OPT_U32, OFF(ping_interval_ms), 0,
     "WebSocket ping after this much silence (default 25000)"},
    {"idle-timeout-ms", OPT_U32, OFF(idle_timeout_ms), 0,
     "close a connection silent this long (default 60000)"},
    {"abuse-limit", OPT_U32, OFF(abuse_limit), 0,
     "refused messages within abuse-window-ms that close with 1008 (default 200)"},
    {"abuse-window-ms", OPT_U32, OFF(abuse_window_ms), 0, "(default 10000)"},
    {"abuse-block-ms", OPT_U32, OFF(abuse_block_ms), 0,
     "after_ms told to a client closed for abuse (default 60000)"},
    {"drain-grace-ms", OPT_U32, OFF(drain_grace_ms), 0,
     "on SIGTERM, /readyz and new handshakes answer 503 at once, but sessions stay this long "
     "before they are told to go, so a load balancer sees the node leave first (default 0)"},
    {"drain-ms", OPT_U32, OFF(drain_ms), 0,
     "on SIGTERM, after the grace, sessions are closed (disconnect 1001) in slices spread over "
     "this window (default 5000)"},
    {"drain-timeout-ms", OPT_U32, OFF(drain_timeout_ms), 0,
     "on SIGTERM, exit after this even if clients linger; at least drain-grace-ms + drain-ms "
     "(default 10000)"},
    {"geo-rate", OPT_U32, OFF(geo_bucket.rate), 0,
     "geo.set per second per connection (default 10)"},
    {"geo-burst", OPT_U32, OFF(geo_bucket.burst), 0, "geo.set burst per connection (default 20)"},
    {"geo-precision", OPT_U32, OFF(geo_precision), 0,
     "geohash length of presence cells, 1..12 (default 6)"},
    {"geo-max-members", OPT_U32, OFF(geo_max_members), 0,
     "presence members on this node, all spaces (default 1000000)"},
    {"geo-max-spaces", OPT_U32, OFF(geo_max_spaces), 0,
     "spaces one connection may be present in (default 16)"},
    {"geo-max-watches", OPT_U32, OFF(geo_max_watches), 0, "geo.watch per connection (default 16)"},
    {"presence-ttl-ms", OPT_U32, OFF(presence_ttl_ms), 0,
     "with --nats: a silent node's members are dropped after this (default 30000); "
     "heartbeats every third of it"},
    {"geo-share-precision", OPT_U32, OFF(geo_share_precision), 0,
     "with --nats: geohash length of the cells presence travels by, 1..geo-precision "
     "(default 5, about 5 x 5 km)"},
    {"geo-follow-linger-ms", OPT_U32, OFF(geo_follow_linger_ms), 0,
     "with --nats: cells followed for geo.near stay followed this long after the last "
     "query (default 30000)"},
    {"geo-snapshot-wait-ms", OPT_U32, OFF(geo_snapshot_wait_ms), 0,
     "with --nats: longest wait for other nodes' members when a cell is first followed; "
     "later answers say partial (default 1000)"},
    {"geo-publish-ms", OPT_U32, OFF(geo_publish_ms), 0,
     "with --nats: presence changes are published at most this often, batched per cell "
     "(0 = every loop iteration; default 10)"},
    {"geo-max-follows", OPT_U32, OFF(geo_max_follows), 0,
     "with --nats: cells followed at once; past it a query on new cells gets 503 "
     "(default 10000)"},
    {"geo-max-follows-per-conn", OPT_U32, OFF(geo_max_follows_per_conn), 0,
     "with --nats: cells one connection may have started following (or hold by its "
     "watches) that are still followed; past it its queries on new cells get 429, other "
     "connections' do not (0 = the default, max(64, geo-max-follows / 16))"},
    {"user-pub-rate", OPT_U32, OFF(user_pub_bucket.rate), 0,
     "publishes per second per user (token sub), all its connections on every node together; "
     "0 = no such limit (default 0; docs/users.md)"},
    {"user-pub-burst", OPT_U32, OFF(user_pub_bucket.burst), 0,
     "publish burst per user (default: user-pub-rate)"},
    {"user-max-conns", OPT_U32, OFF(user_max_conns), 0,
     "connections per user on all nodes together; past it connect gets 429 and close 4029; "
     "0 = no limit, at most 4096 (default 0)"},
    {"user-sync-ms", OPT_U32, OFF(user_sync_ms), 0,
     "with --nats: users' publishes, connections and channel presence go to the other nodes at "
     "most this often, batched (1..1000, default 20)"},
    {"presence-max-members", OPT_U32, OFF(presence_max_members), 0,
     "members of one channel's presence listed in replies and join/leave events; past it the "
     "channel only counts them (1..10000, default 1000)"},
    {"presence-allow", OPT_POLICY, OFF(presence_allow), 0,
     "PATTERN: channels whose presence sessions without a presence_allow claim may take part "
     "in (sub with presence:true); repeatable; \"\" allows none. Default: the sub rule"},
    {"workers", OPT_U32, OFF(workers), 0,
     "gateway processes sharing the listen port (SO_REUSEPORT); more than 1 needs --nats, "
     "since each process is its own node (default 1)"},
    {"flush-window-ms", OPT_U32, OFF(flush_window_ms), 0,
     "least time between two writes to one connection: output for a connection that wrote "
     "less than this ago waits until then, so a busy connection gets many messages per frame "
     "and per write; adds up to this much latency to busy connections only; 0 = write at once "
     "(default 20)"},
    {"flush-window-max-ms", OPT_U32, OFF(flush_window_max_ms), 0,
     "while the event loop falls behind (most of its timers late by over half the window, "
     "sweep after sweep, at least 50% busy) the window doubles, up to this; busy but on time "
     "it stays; it halves back at once below 45% busy, else after 2 s on time (longer after a "
     "try that fell behind again); set it to flush-window-ms to turn this off (default 500)"},
    {"rx-buffer", OPT_SIZE, OFF(rx_buffer), 0,
     "per-connection receive buffer in bytes (default 1024)"},
    {"log-level", OPT_LOGLEVEL, 0, 0, "debug, info, warn or error (default info)"},
    {"nats", OPT_STR, OFF(nats_url), sizeof(((struct gw_config *)0)->nats_url),
     "URL[,URL...] of a NATS cluster with JetStream: selects the nats engine (docs/nats.md); "
     "default: the single-node memory engine"},
    {"nats-stream", OPT_STR, OFF(nats_stream), sizeof(((struct gw_config *)0)->nats_stream),
     "JetStream stream holding the durable channels (default RTGATE)"},
    {"nats-replicas", OPT_U32, OFF(nats_replicas), 0,
     "replicas of that stream, created or updated at start (default 1)"},
    {"nats-read-window-ms", OPT_U32, OFF(nats_read_window_ms), 0,
     "with --nats: while NATS reads of live messages come this close together, read every this "
     "many ms instead of on each arrival (fewer wake-ups for a stream, up to this much "
     "latency); 0 = always at once (default 1)"},
    {"sub-timeout-ms", OPT_U32, OFF(sub_timeout_ms), 0,
     "with --nats: a sub waiting for NATS (a new channel's confirmation and sync point, a "
     "resume's reads) is answered 503 after this (default 5000)"},
    {"max-pending-subs", OPT_U32, OFF(max_pending_subs), 0,
     "with --nats: subs waiting for NATS on this node; past it a sub that would wait gets 503 "
     "(default 4096)"},
    {"max-pending-subs-per-conn", OPT_U32, OFF(max_pending_subs_per_conn), 0,
     "with --nats: subs one connection may have waiting for NATS; past it 429 (default: "
     "max-subs)"},
    {"jwt-key", OPT_STR, OFF(jwt_key_file), sizeof(((struct gw_config *)0)->jwt_key_file),
     "FILE: connect needs a JWT verified with this key: an HS256 shared secret or a PEM public "
     "key (RS256, ES256); re-read on SIGHUP. Default: no tokens, every connect is anonymous"},
    {"jwt-alg", OPT_STR, OFF(jwt_alg), sizeof(((struct gw_config *)0)->jwt_alg),
     "HS256, RS256 or ES256: the only algorithm accepted (needed for a shared secret; "
     "default: from the PEM key's type)"},
    {"jwt-leeway-ms", OPT_U32, OFF(jwt_leeway_ms), 0,
     "clock skew allowed on the tokens' exp, nbf and iat (default 5000)"},
    {"jwt-audience", OPT_STR, OFF(jwt_audience), sizeof(((struct gw_config *)0)->jwt_audience),
     "AUD: tokens must be for this audience (their aud claim holds it). Default: tokens "
     "with an aud claim (made for some other service) are refused"},
    {"allow-anonymous", OPT_FLAG, OFF(allow_anonymous), 0,
     "with --jwt-key: a connect without a token is anonymous (a bad token is still refused)"},
    {"sub-allow", OPT_POLICY, OFF(sub_allow), 0,
     "PATTERN: channels that sessions without a sub_allow claim (and anonymous ones) may "
     "subscribe to; repeatable; \"\" allows none. Default: > without --jwt-key, none with it"},
    {"pub-allow", OPT_POLICY, OFF(pub_allow), 0,
     "PATTERN: the same for publishing (pub_allow claim). Default: > without --jwt-key, none "
     "with it"},
    {"geo-allow", OPT_POLICY, OFF(geo_allow), 0,
     "PATTERN: presence spaces for geo.set / near / watch (geo_allow claim). Default: > "
     "without --jwt-key, none with it"},
    {"static", OPT_STR, OFF(static_dir), sizeof(((struct gw_config *)0)->static_dir),
     "serve the files of DIR over HTTP on the same listener (GET/HEAD, / is index.html), "
     "read into memory at start; dot-files and symlinks out of DIR are left out"},
    {"static-max-bytes", OPT_SIZE, OFF(static_max_bytes), 0,
     "largest total size of the --static folder; rtgate refuses to start past it "
     "(default 16777216)"},
    {"allow-origin", OPT_ORIGIN, 0, 0,
     "browser Origin allowed to open a WebSocket (scheme://host[:port]); repeatable or "
     "comma-separated. Others get 403; requests without Origin (non-browser clients) are "
     "allowed. Default: any Origin"},
    {"tls-cert", OPT_STR, OFF(tls_cert), sizeof(((struct gw_config *)0)->tls_cert),
     "PEM certificate chain (leaf first): the port then speaks only wss:// and https://; "
     "reloaded with --tls-key on SIGHUP"},
    {"tls-key", OPT_STR, OFF(tls_key), sizeof(((struct gw_config *)0)->tls_key),
     "PEM private key of --tls-cert (unencrypted)"},
    {"handshake-timeout-ms", OPT_U32, OFF(handshake_timeout_ms), 0,
     "time allowed for each stage of a connection's set-up (PROXY header, TLS handshake, "
     "HTTP upgrade request); lws counts whole seconds, rounded up (default 10000)"},
    {"trusted-proxy", OPT_CIDR, 0, 0,
     "CIDR (or address) of a load balancer; repeatable or comma-separated. Only connections "
     "from these have their client address taken from X-Forwarded-For or a PROXY header"},
    {"proxy-protocol", OPT_STR, OFF(proxy_protocol),
     sizeof(((struct gw_config *)0)->proxy_protocol),
     "v2: every connection starts with a PROXY protocol v2 header (haproxy send-proxy-v2); "
     "connections from outside --trusted-proxy are refused. off: none (default)"},
    {"nats-ca", OPT_STR, OFF(nats_security.ca_file),
     sizeof(((struct gw_config *)0)->nats_security.ca_file),
     "PEM file of the CAs that sign the NATS servers' certificates: TLS on every NATS connection "
     "(as tls:// URLs do; default: the system's trusted CAs)"},
    {"nats-tls-cert", OPT_STR, OFF(nats_security.cert_file),
     sizeof(((struct gw_config *)0)->nats_security.cert_file),
     "client certificate (PEM) for NATS servers that verify clients; with --nats-tls-key"},
    {"nats-tls-key", OPT_STR, OFF(nats_security.key_file),
     sizeof(((struct gw_config *)0)->nats_security.key_file),
     "private key (PEM) of --nats-tls-cert"},
    {"nats-creds", OPT_STR, OFF(nats_security.creds_file),
     sizeof(((struct gw_config *)0)->nats_security.creds_file),
     "NATS user credentials file (.creds: user JWT and NKey seed)"},
    {"nats-nkey", OPT_STR, OFF(nats_security.nkey_file),
     sizeof(((struct gw_config *)0)->nats_security.nkey_file),
     "file holding an NKey user seed (SU...) to sign in with"},
    {"http-transports", OPT_U32, OFF(http_transports), 0,
     "1 (default): Server-Sent Events (GET /sse), long-polling (GET /poll) and their "
     "requests (POST /send) for clients that cannot use WebSocket; 0: not served (404)"},
    {"session-secret", OPT_STR, OFF(session_secret_file),
     sizeof(((struct gw_config *)0)->session_secret_file),
     "file with the fleet's secret (32+ bytes) for the session tokens of SSE and "
     "long-polling, so any node can check them; default: derived from an HS256 --jwt-key, "
     "else random per run (tokens then work on this node only)"},
    {"sse-heartbeat-ms", OPT_U32, OFF(sse_heartbeat_ms), 0,
     "a comment line on an SSE stream quiet this long, under load balancers' idle timeouts "
     "(default 15000)"},
    {"poll-hold-ms", OPT_U32, OFF(poll_hold_ms), 0,
     "a long-poll with nothing to answer is held this long, then answered empty "
     "(default 20000)"},
    {"api-key-file", OPT_STR, OFF(api_key_file), sizeof(((struct gw_config *)0)->api_key_file),
     "turns the server API on (docs/api.md): /api/v1/... on this port, for requests with "
     "`Authorization: Bearer <the key in FILE>`; without it every /api/ path is a 404"},
    {"api-max-body-bytes", OPT_SIZE, OFF(api_max_body_bytes), 0,
     "largest API request body, 1024..67108864 (default 1048576)"},
    {"api-pub-rate", OPT_U32, OFF(api_pub_bucket.rate), 0,
     "messages per second published through the API, whole node, 0 = unlimited "
     "(default 10000)"},
    {"api-pub-burst", OPT_U32, OFF(api_pub_bucket.burst), 0, "API publish burst (default 20000)"},
    {"api-auth-fail-rate", OPT_U32, OFF(api_auth_bucket.rate), 0,
     "failed API keys per second per remote address before its requests get 429 "
     "(default 1)"},
    {"api-auth-fail-burst", OPT_U32, OFF(api_auth_bucket.burst), 0,
     "failed API key burst per address (default 10)"},
};

#define N_OPTS (sizeof opts / sizeof opts[0])

static void set_defaults(struct gw_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    strcpy(cfg->listen_host, "0.0.0.0");
    cfg->listen_port = 8080;
    strcpy(cfg->ws_path, "/ws");
    cfg->history = 1000;
    cfg->history_age_ms = 3600000;
    cfg->dedup_window_ms = 120000;
    cfg->pub_bucket = (struct rt_bucket_cfg){.rate = 20, .burst = 40};
    cfg->msg_bucket = (struct rt_bucket_cfg){.rate = 200, .burst = 400};
    cfg->ip_bucket = (struct rt_bucket_cfg){.rate = 200, .burst = 400};
    cfg->conn_bucket = (struct rt_bucket_cfg){.rate = 0, .burst = 1000};
    cfg->max_unacked = 1024;
    cfg->max_subs = 256;
    cfg->max_message_bytes = 65536;
    cfg->max_outbox_bytes = 1u << 20;
    cfg->connect_timeout_ms = 10000;
    cfg->ping_interval_ms = 25000;
    cfg->idle_timeout_ms = 60000;
    cfg->abuse_limit = 200;
    cfg->abuse_window_ms = 10000;
    cfg->abuse_block_ms = 60000;
    cfg->drain_ms = 5000;
    cfg->workers = 1;
    cfg->flush_window_ms = 20;
    cfg->flush_window_max_ms = 500;
    cfg->geo_bucket = (struct rt_bucket_cfg){.rate = 10, .burst = 20};
    cfg->geo_precision = 6;
    cfg->geo_max_members = 1000000;
    cfg->geo_max_spaces = 16;
    cfg->geo_max_watches = 16;
    cfg->presence_ttl_ms = 30000;
    cfg->geo_share_precision = 5;
    cfg->geo_follow_linger_ms = 30000;
    cfg->geo_snapshot_wait_ms = 1000;
    cfg->geo_max_follows = 10000;
    cfg->geo_publish_ms = 10;
    cfg->user_sync_ms = 20;
    cfg->presence_max_members = 1000;
    cfg->drain_timeout_ms = 10000;
    cfg->rx_buffer = 1024;
    cfg->log_level = RT_LOG_INFO;
    strcpy(cfg->nats_stream, "RTGATE");
    cfg->nats_replicas = 1;
    cfg->sub_timeout_ms = 5000;
    cfg->max_pending_subs = 4096;
    cfg->nats_read_window_ms = 1;
    cfg->jwt_leeway_ms = 5000;
    cfg->static_max_bytes = 16u << 20;
    cfg->handshake_timeout_ms = 10000;
    cfg->http_transports = 1;
    cfg->sse_heartbeat_ms = 15000;
    cfg->poll_hold_ms = 20000;
    cfg->api_max_body_bytes = 1u << 20;
    cfg->api_pub_bucket = (struct rt_bucket_cfg){.rate = 10000, .burst = 20000};
    cfg->api_auth_bucket = (struct rt_bucket_cfg){.rate = 1, .burst = 10};
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur > 512)
        cfg->max_connections = (uint32_t)(rl.rlim_cur > 1000000 ? 1000000 : rl.rlim_cur - 256);
    else
        cfg->max_connections = 256;
}

static const struct opt *find_opt(const char *name, size_t len)
{
    for (size_t i = 0; i < N_OPTS; i++)
        if (strlen(opts[i].name) == len && memcmp(opts[i].name, name, len) == 0)
            return &opts[i];
    return NULL;
}

static bool parse_u64(const char *v, uint64_t max, uint64_t *out)
{
    if (!*v || *v == '-')
        return false;
    errno = 0;
    char *end;
    unsigned long long x = strtoull(v, &end, 10);
    if (errno || *end || x > max)
        return false;
    *out = x;
    return true;
}

/* HOST:PORT, :PORT, or [IPV6]:PORT (the brackets are not kept). */
static bool parse_listen(struct gw_config *cfg, const char *v)
{
    const char *colon = strrchr(v, ':');
    uint64_t port;
    if (!colon || !parse_u64(colon + 1, 65535, &port))
        return false;
    const char *host = v;
    size_t hl = (size_t)(colon - v);
    if (hl && v[0] == '[') {
        if (hl < 3 || v[hl - 1] != ']')
            return false;
        host = v + 1;
        hl -= 2;
    } else if (memchr(v, ':', hl) || memchr(v, ']', hl)) {
        return false; /* an IPv6 address needs its brackets: [::1]:8080 */
    }
    if (hl >= sizeof cfg->listen_host)
        return false;
    if (hl == 0) {
        strcpy(cfg->listen_host, "0.0.0.0");
    } else {
        memcpy(cfg->listen_host, host, hl);
        cfg->listen_host[hl] = '\0';
    }
    cfg->listen_port = (int)port;
    return true;
}

/*
 * One source of options (the file, the environment, the flags) being read.
 * A repeatable option (--ephemeral, --sub-allow, --trusted-proxy...) given by a source
 * replaces the list an earlier source gave, as any other option does; within
 * a source each use adds to the list.
 */
struct source {
    struct gw_config *cfg;
    bool lists_begun[N_OPTS]; /* this source has given that list option already */
};

static void clear_patterns(struct gw_config *cfg)
{
    for (size_t i = 0; i < cfg->n_ephemeral; i++)
        free((void *)cfg->ephemeral[i]);
    cfg->n_ephemeral = 0;
}

static void clear_origins(struct gw_config *cfg)
{
    for (size_t i = 0; i < cfg->n_allow_origin; i++)
        free((void *)cfg->allow_origin[i]);
    cfg->n_allow_origin = 0;
}

static void clear_policy(struct gw_policy *p)
{
    for (size_t i = 0; i < p->n; i++)
        free(p->pat[i]);
    p->n = 0;
    p->given = false;
}

/* The first use of a list option by this source drops what earlier sources gave. */
static void begin_list(struct source *src, const struct opt *o)
{
    size_t i = (size_t)(o - opts);
    if (src->lists_begun[i])
        return;
    src->lists_begun[i] = true;
    struct gw_config *cfg = src->cfg;
    if (o->kind == OPT_PATTERN) {
        clear_patterns(cfg);
    } else if (o->kind == OPT_POLICY) {
        clear_policy((struct gw_policy *)((char *)cfg + o->offset));
    } else if (o->kind == OPT_ORIGIN) {
        clear_origins(cfg);
    } else if (o->kind == OPT_CIDR) {
        cfg->n_trusted_proxy = 0;
    }
}

static bool set_pattern(struct gw_config *cfg, const char *v)
{
    if (cfg->n_ephemeral >= GW_MAX_EPHEMERAL || !proto_pattern_valid(v, strlen(v)))
        return false;
    char *copy = strdup(v);
    if (!copy)
        return false;
    cfg->ephemeral[cfg->n_ephemeral++] = copy;
    return true;
}

/* One more pattern of a default policy; "" only marks it given (allows nothing). */
static bool set_policy(struct gw_policy *p, const char *v)
{
    p->given = true;
    if (!*v)
        return true;
    if (p->n >= GW_MAX_ALLOW || !proto_pattern_valid(v, strlen(v)))
        return false;
    p->pat[p->n] = strdup(v);
    return p->pat[p->n++] != NULL;
}

static bool set_flag(uint32_t *flag, const char *v)
{
    if (!strcmp(v, "1") || !strcmp(v, "true") || !strcmp(v, "yes")) {
        *flag = 1;
        return true;
    }
    if (!strcmp(v, "0") || !strcmp(v, "false") || !strcmp(v, "no")) {
        *flag = 0;
        return true;
    }
    return false;
}

/* Calls add(cfg, item, len) for each comma-separated item of v. */
static bool each_item(struct gw_config *cfg, const char *v,
                      bool (*add)(struct gw_config *cfg, const char *item, size_t len))
{
    for (;;) {
        const char *comma = strchr(v, ',');
        size_t len = comma ? (size_t)(comma - v) : strlen(v);
        while (len && (*v == ' ' || *v == '\t'))
            v++, len--;
        while (len && (v[len - 1] == ' ' || v[len - 1] == '\t'))
            len--;
        if (!add(cfg, v, len))
            return false;
        if (!comma)
            return true;
        v = comma + 1;
    }
}

static bool add_origin(struct gw_config *cfg, const char *v, size_t len)
{
    char norm[EDGE_ORIGIN_MAX];
    if (cfg->n_allow_origin >= GW_MAX_ORIGINS ||
        !edge_origin_normalize(v, len, norm, sizeof norm)) {
        fprintf(stderr,
                "rtgate: --allow-origin '%.*s': not an origin (scheme://host[:port]) "
                "or more than %d of them\n",
                (int)len, v, GW_MAX_ORIGINS);
        return false;
    }
    char *copy = strdup(norm);
    if (!copy)
        return false;
    cfg->allow_origin[cfg->n_allow_origin++] = copy;
    return true;
}

static bool add_cidr(struct gw_config *cfg, const char *v, size_t len)
{
    if (cfg->n_trusted_proxy >= GW_MAX_TRUSTED_PROXIES ||
        !edge_cidr_parse(v, len, &cfg->trusted_proxy[cfg->n_trusted_proxy])) {
        fprintf(stderr,
                "rtgate: --trusted-proxy '%.*s': not an address or CIDR range "
                "or more than %d of them\n",
                (int)len, v, GW_MAX_TRUSTED_PROXIES);
        return false;
    }
    if (cfg->trusted_proxy[cfg->n_trusted_proxy].prefix == 0) {
        /* Every client's X-Forwarded-For and PROXY header believed: any client
         * names any address, past every per-address limit, into every log line. */
        fprintf(stderr,
                "rtgate: --trusted-proxy '%.*s' trusts every address: list the load "
                "balancers' addresses only\n",
                (int)len, v);
        return false;
    }
    cfg->n_trusted_proxy++;
    return true;
}

static bool set_loglevel(struct gw_config *cfg, const char *v)
{
    static const char *const names[] = {"debug", "info", "warn", "error"};
    for (int i = 0; i < 4; i++)
        if (strcmp(v, names[i]) == 0) {
            cfg->log_level = (enum rt_log_level)i;
            return true;
        }
    return false;
}

static bool set_opt(struct source *src, const struct opt *o, const char *v)
{
    struct gw_config *cfg = src->cfg;
    char *base = (char *)cfg;
    uint64_t x;
    switch (o->kind) {
    case OPT_U32:
        if (!parse_u64(v, UINT32_MAX, &x))
            return false;
        *(uint32_t *)(base + o->offset) = (uint32_t)x;
        return true;
    case OPT_U64:
        if (!parse_u64(v, UINT64_MAX, &x))
            return false;
        *(uint64_t *)(base + o->offset) = x;
        return true;
    case OPT_SIZE:
        if (!parse_u64(v, SIZE_MAX, &x))
            return false;
        *(size_t *)(base + o->offset) = (size_t)x;
        return true;
    case OPT_STR:
        if (!*v || strlen(v) >= o->size)
            return false;
        strcpy(base + o->offset, v);
        return true;
    case OPT_LISTEN:
        return parse_listen(cfg, v);
    case OPT_PATTERN:
        begin_list(src, o);
        return set_pattern(cfg, v);
    case OPT_LOGLEVEL:
        return set_loglevel(cfg, v);
    case OPT_ORIGIN:
        begin_list(src, o);
        return each_item(cfg, v, add_origin);
    case OPT_CIDR:
        begin_list(src, o);
        return each_item(cfg, v, add_cidr);
    case OPT_FLAG:
        return set_flag((uint32_t *)(base + o->offset), v);
    case OPT_POLICY:
        begin_list(src, o);
        return set_policy((struct gw_policy *)(base + o->offset), v);
    }
    return false;
}

static char *trim(char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    char *e = s + strlen(s);
    while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\n' || e[-1] == '\r'))
        *--e = '\0';
    return s;
}

/* The file has `name = value` lines with the flags' names; # starts a comment. */
static bool load_file(struct gw_config *cfg, const char *path)
{
    struct source src = {.cfg = cfg};
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "rtgate: cannot open config file %s: %s\n", path, strerror(errno));
        return false;
    }
    char line[1024];
    int lineno = 0;
    bool ok = true;
    while (ok && fgets(line, sizeof line, f)) {
        lineno++;
        char *hash = strchr(line, '#');
        if (hash)
            *hash = '\0';
        char *s = trim(line);
        if (!*s)
            continue;
        char *eq = strchr(s, '=');
        const struct opt *o = NULL;
        if (eq) {
            *eq = '\0';
            char *name = trim(s);
            o = find_opt(name, strlen(name));
        }
        if (!o || !set_opt(&src, o, trim(eq + 1))) {
            fprintf(stderr, "rtgate: %s:%d: bad line\n", path, lineno);
            ok = false;
        }
    }
    fclose(f);
    return ok;
}

/* RTGATE_ and the option's name in upper case, '-' as '_': max-subs is RTGATE_MAX_SUBS. */
static void env_name(const char *opt, char *out, size_t cap)
{
    size_t n = (size_t)snprintf(out, cap, "RTGATE_%s", opt);
    for (size_t i = 7; i < n && i < cap; i++)
        out[i] = out[i] == '-' ? '_' : (char)toupper((unsigned char)out[i]);
}

/* Sets a list option (patterns) from a comma- or blank-separated list. */
static bool set_list(struct source *src, const struct opt *o, const char *list)
{
    char buf[2048];
    if (strlen(list) >= sizeof buf)
        return false;
    strcpy(buf, list);
    char *save = NULL;
    bool any = false;
    for (char *p = strtok_r(buf, ", \t\n", &save); p; p = strtok_r(NULL, ", \t\n", &save)) {
        if (!set_opt(src, o, p))
            return false;
        any = true;
    }
    return any;
}

extern char **environ;

void gw_config_warn_env(void)
{
    for (char **e = environ; *e; e++) {
        if (strncmp(*e, "RTGATE_", 7) != 0 || !strncmp(*e, "RTGATE_CONFIG=", 14))
            continue;
        size_t len = strcspn(*e, "=");
        bool known = false;
        for (size_t i = 0; i < N_OPTS && !known; i++) {
            char name[64];
            env_name(opts[i].name, name, sizeof name);
            known = strlen(name) == len && !memcmp(name, *e, len);
        }
        if (!known)
            rt_log(RT_LOG_WARN, "env_ignored", "name=%.*s why=\"no such option\"",
                   (int)(len > 64 ? 64 : len), *e);
    }
}

/*
 * Reads an RTGATE_<NAME> variable for every option; an empty variable counts
 * as unset (compose files often pass `VAR: ${VAR:-}`). RTGATE_EPHEMERAL and
 * the RTGATE_*_ALLOW policies hold comma-separated lists of patterns. Other RTGATE_* variables are
 * not options: they are named on stderr and left alone (the test scripts' RTGATE_BIN, for one).
 */
static bool load_env(struct gw_config *cfg)
{
    struct source src = {.cfg = cfg};
    for (size_t i = 0; i < N_OPTS; i++) {
        char name[64];
        env_name(opts[i].name, name, sizeof name);
        const char *v = getenv(name);
        if (!v || !*v)
            continue;
        bool list = opts[i].kind == OPT_PATTERN || opts[i].kind == OPT_POLICY;
        bool ok = list ? set_list(&src, &opts[i], v) : set_opt(&src, &opts[i], v);
        if (!ok) {
            fprintf(stderr, "rtgate: bad value in the environment variable %s (see --help)\n",
                    name);
            return false;
        }
    }
    return true;
}

void gw_config_usage(FILE *out)
{
    fprintf(out, "Usage: rtgate [--config FILE] [--OPTION VALUE]...\n\n"
                 "rtgate is a WebSocket realtime gateway: clients connect at ws://HOST:PORT/ws,\n"
                 "subscribe to channels and publish; see README.md and docs/protocol.md.\n"
                 "HTTP on the same port: /healthz, /readyz, /metrics (Prometheus), and the\n"
                 "server API /api/v1/... with --api-key-file (docs/api.md).\n\n"
                 "Options: also `name = value` lines in the --config file, and environment\n"
                 "variables RTGATE_<NAME> (--max-subs is RTGATE_MAX_SUBS; RTGATE_EPHEMERAL is a\n"
                 "comma-separated list). Precedence: defaults < file < environment < flags.\n");
    fprintf(out, "  --%-20s %s\n", "config FILE",
            "read options from FILE first (default: $RTGATE_CONFIG when set)");
    for (size_t i = 0; i < N_OPTS; i++)
        fprintf(out, "  --%-20s %s\n", opts[i].name, opts[i].help);
    fprintf(out, "  --%-20s %s\n", "help", "print this and exit");
    fprintf(out, "  --%-20s %s\n", "version", "print the version and exit");
    fprintf(out, "\nSignals: SIGTERM/SIGINT drain (clients are told to reconnect, exit 0); "
                 "SIGHUP re-reads --jwt-key, --tls-cert and --tls-key.\n");
}

/* The edge options, each refusal with its own message. */
static rt_status check_edge(struct gw_config *cfg)
{
    if (!cfg->tls_cert[0] != !cfg->tls_key[0]) {
        fprintf(stderr, "rtgate: --tls-cert and --tls-key go together\n");
        return RT_INVAL;
    }
    if (cfg->handshake_timeout_ms < 1000 || cfg->handshake_timeout_ms > 600000) {
        fprintf(stderr, "rtgate: --handshake-timeout-ms must be 1000..600000\n");
        return RT_INVAL;
    }
    cfg->proxy_v2 = !strcmp(cfg->proxy_protocol, "v2");
    if (!cfg->proxy_v2 && cfg->proxy_protocol[0] && strcmp(cfg->proxy_protocol, "off") != 0) {
        fprintf(stderr, "rtgate: --proxy-protocol is v2 or off\n");
        return RT_INVAL;
    }
    if (cfg->proxy_v2 && !cfg->n_trusted_proxy) {
        fprintf(stderr, "rtgate: --proxy-protocol v2 needs --trusted-proxy: only the load "
                        "balancer may send the header, every other connection is refused\n");
        return RT_INVAL;
    }
    return RT_OK;
}

static rt_status check(struct gw_config *cfg)
{
    if (check_edge(cfg) != RT_OK)
        return RT_INVAL;
    if (cfg->pub_bucket.burst == 0 || cfg->msg_bucket.burst == 0 || cfg->geo_bucket.burst == 0 ||
        cfg->geo_precision < 1 || cfg->geo_precision > 12 || cfg->workers == 0 ||
        cfg->workers > 64 || cfg->flush_window_ms > 1000 || cfg->flush_window_max_ms > 1000 ||
        (cfg->workers > 1 && !cfg->nats_url[0]) || cfg->ip_bucket.burst == 0 ||
        cfg->max_message_bytes < 64 || cfg->max_outbox_bytes < 4096 || cfg->rx_buffer < 128 ||
        cfg->max_unacked == 0 || cfg->history == 0 || cfg->ping_interval_ms < 1000 ||
        cfg->idle_timeout_ms <= cfg->ping_interval_ms || cfg->ws_path[0] != '/' ||
        cfg->nats_replicas == 0 || cfg->presence_ttl_ms < 300 || cfg->geo_share_precision < 1 ||
        cfg->geo_share_precision > cfg->geo_precision || cfg->geo_snapshot_wait_ms == 0 ||
        cfg->geo_max_follows == 0 || cfg->geo_publish_ms > 1000 || cfg->nats_read_window_ms > 100 ||
        cfg->sub_timeout_ms < 100 || cfg->max_pending_subs == 0 || cfg->conn_bucket.burst == 0 ||
        cfg->api_max_body_bytes < 1024 || cfg->api_max_body_bytes > (64u << 20) ||
        cfg->api_pub_bucket.burst == 0 || cfg->api_auth_bucket.rate == 0 ||
        cfg->api_auth_bucket.burst == 0 ||
        (uint64_t)cfg->drain_timeout_ms < (uint64_t)cfg->drain_grace_ms + cfg->drain_ms ||
        cfg->user_sync_ms == 0 || cfg->user_sync_ms > 1000 || cfg->presence_max_members == 0 ||
        cfg->presence_max_members > 10000 || cfg->user_max_conns > 4096 ||
        cfg->http_transports > 1 || cfg->sse_heartbeat_ms < 100 || cfg->sse_heartbeat_ms > 300000 ||
        cfg->poll_hold_ms < 100 || cfg->poll_hold_ms > 300000) {
        fprintf(stderr,
                "rtgate: inconsistent options (bursts >= 1, max-message-bytes >= 64, "
                "history >= 1, idle-timeout-ms > ping-interval-ms >= 1000, "
                "flush-window-ms and -max-ms <= 1000, workers 1..64 and > 1 only with --nats, "
                "ws-path starting with /, nats-replicas >= 1, presence-ttl-ms >= 300, "
                "geo-share-precision 1..geo-precision, geo-publish-ms <= 1000, "
                "nats-read-window-ms <= 100, sub-timeout-ms >= 100, max-pending-subs >= 1, "
                "drain-timeout-ms >= drain-grace-ms + drain-ms, api-max-body-bytes 1024..67108864, "
                "api bursts and api-auth-fail-rate >= 1, user-sync-ms 1..1000, "
                "presence-max-members 1..10000, user-max-conns <= 4096, http-transports 0 or 1, "
                "sse-heartbeat-ms and poll-hold-ms 100..300000)\n");
        return RT_INVAL;
    }
    return RT_OK;
}

/* The --config FILE (or --config=FILE) of the command line, else $RTGATE_CONFIG, or NULL. */
static const char *config_path(int argc, char **argv)
{
    const char *path = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--config") && i + 1 < argc)
            path = argv[++i];
        else if (!strncmp(argv[i], "--config=", 9))
            path = argv[i] + 9;
    }
    if (!path) {
        const char *env = getenv("RTGATE_CONFIG");
        path = env && *env ? env : NULL;
    }
    return path;
}

/*
 * Defaults, the --config file, the RTGATE_* variables and the flags,
 * checked; no key is loaded (gw_config_load, in authz.c, does that).
 * rtgate-pub reads the gateways' file with it.
 */
rt_status gw_config_parse(struct gw_config *cfg, int argc, char **argv)
{
    set_defaults(cfg);
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            gw_config_usage(stdout);
            return RT_AGAIN;
        }
        if (!strcmp(argv[i], "--version")) {
            printf("rtgate %s (protocol v1)\n", RTGATE_VERSION);
            return RT_AGAIN;
        }
    }
    const char *path = config_path(argc, argv);
    if ((path && !load_file(cfg, path)) || !load_env(cfg))
        return RT_INVAL;
    struct source flags = {.cfg = cfg};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strncmp(a, "--", 2) != 0)
            goto bad;
        a += 2;
        const char *eq = strchr(a, '=');
        size_t nl = eq ? (size_t)(eq - a) : strlen(a);
        const struct opt *o = find_opt(a, nl);
        const char *v = eq                           ? eq + 1
                        : (o && o->kind == OPT_FLAG) ? "1"
                                                     : (i + 1 < argc ? argv[++i] : NULL);
        if (nl == 6 && !memcmp(a, "config", 6))
            continue;
        if (!o || !v || !set_opt(&flags, o, v))
            goto bad;
        continue;
    bad:
        fprintf(stderr, "rtgate: bad option or value near '%s' (see --help)\n", argv[i]);
        return RT_INVAL;
    }
    if (!cfg->node_id[0]) {
        char host[40] = "rtgate";
        gethostname(host, sizeof host - 1);
        host[sizeof host - 1] = '\0';
        snprintf(cfg->node_id, sizeof cfg->node_id, "%s-%d", host, (int)getpid());
    }
    return check(cfg);
}

/* Frees the lists gw_config_parse (and authz.c's defaults) allocated. */
void gw_config_free_parsed(struct gw_config *cfg)
{
    clear_patterns(cfg);
    clear_origins(cfg);
    struct gw_policy *ps[] = {&cfg->sub_allow, &cfg->pub_allow, &cfg->geo_allow};
    for (size_t i = 0; i < 3; i++) {
        for (size_t j = 0; j < ps[i]->n; j++)
            free(ps[i]->pat[j]);
        ps[i]->n = 0;
    }
}
