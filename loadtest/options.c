/*
 * options.c: rtgate-load's command line. One table names every option once
 * (its flag, value, range, where it goes in struct lt_config and its help),
 * so the parser, --help and the option tables of docs/loadtest.md (printed
 * by --help-markdown) cannot disagree. After the table: the presets of each
 * scenario and the checks between options.
 *
 * Adding an option: a field in struct lt_config (load.h), one row here, and
 * the code that uses it. A value the row's kind cannot check goes through a
 * parse function (see valid_prefix); one that depends on others is checked
 * in finish().
 */
#include "scen.h"

#include <errno.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#define CONNS_PER_WORKER 15000u /* default split */
#define MAX_CONNS_WORKER 19500u /* the fd limit is 20000 per process */
#define MAX_WORKERS      64u
#define MAX_STREAMS      (4u << 20)
#define AUTO_SRC_CONNS   5000u
#define HELP_COLUMN      24
#define HELP_WIDTH       79

enum opt_kind {
    OPT_SECTION, /* not an option: a heading and the paragraph under it */
    OPT_ACTION,  /* no value: parsing stops and returns `action` */
    OPT_SET,     /* no value: a bool field becomes true */
    OPT_CLEAR,   /* no value: a bool field becomes false */
    OPT_VERBOSE, /* no value: one more level of progress on stderr */
    OPT_QUIET,   /* no value: no summary on stderr */
    OPT_U32,     /* an integer in [lo, hi] */
    OPT_DOUBLE,  /* a number in [lo, hi] */
    OPT_TEXT,    /* copied into a char[size] (shorter than size, not empty) */
    OPT_ARG,     /* kept as given (a const char *), at most hi characters when hi > 0 */
    OPT_CHOICE,  /* one of `choices`; the field (an enum) gets its index */
    OPT_CUSTOM,  /* parse(cfg, value) checks and stores it */
};

struct opt {
    const char *name;  /* as typed, "--subs"; OPT_SECTION: the heading */
    const char *alias; /* another spelling ("--conns", "-v") or NULL */
    const char *value; /* the value's name in --help ("N"); NULL for kinds without one */
    enum opt_kind kind;
    size_t offset; /* of the field in struct lt_config */
    size_t size;   /* OPT_TEXT: the buffer's size */
    double lo, hi;
    const char *const *choices; /* OPT_CHOICE: NULL-terminated */
    bool (*parse)(struct lt_config *cfg, const char *value);
    int action; /* OPT_ACTION: what lt_parse_args returns */
    const char *help;
};

#define OFF(field)  offsetof(struct lt_config, field)
#define SIZE(field) sizeof(((struct lt_config *)0)->field)
#define SECTION(h, p)                                                                              \
    {                                                                                              \
        .name = h, .kind = OPT_SECTION, .help = p                                                  \
    }

static const char *const scenario_names[] = {"fanout", "channels", "idle", "presence",
                                             "churn",  "storm",    NULL};
static const char *const codec_names[] = {"json", "msgpack", NULL};
static const char *const target_names[] = {"rtgate", "nats-ws", NULL};
static const char *const pub_via_names[] = {"ws", "nats", NULL};

/* The choices' indexes are the enums' values. */
_Static_assert(LT_SC_FANOUT == 0 && LT_SC_CHANNELS == 1 && LT_SC_IDLE == 2 && LT_SC_PRESENCE == 3 &&
                   LT_SC_CHURN == 4 && LT_SC_STORM == 5,
               "scenario_names follows enum lt_scenario");
_Static_assert(LT_CODEC_JSON == 0 && LT_CODEC_MSGPACK == 1, "codec_names follows enum lt_codec");
_Static_assert(LT_TGT_RTGATE == 0 && LT_TGT_NATS_WS == 1, "target_names follows enum lt_target");
_Static_assert(LT_PV_WS == 0 && LT_PV_NATS == 1, "pub_via_names follows enum lt_pubvia");
_Static_assert(sizeof(enum lt_scenario) == sizeof(int) && sizeof(enum lt_codec) == sizeof(int) &&
                   sizeof(enum lt_target) == sizeof(int) && sizeof(enum lt_pubvia) == sizeof(int),
               "OPT_CHOICE stores an int");

static bool valid_prefix(struct lt_config *cfg, const char *s);
static bool set_token(struct lt_config *cfg, const char *s);
static bool read_token_file(struct lt_config *cfg, const char *path);
static bool valid_space(struct lt_config *cfg, const char *s);
static bool parse_center(struct lt_config *cfg, const char *s);

static const struct opt opts[] = {
    SECTION("Scenario", NULL),
    {"--scenario", NULL, "NAME", OPT_CHOICE, OFF(scenario), 0, 0, 0, scenario_names, NULL, 0,
     "fanout (default): all subscribers on <prefix>.fanout; channels: subscriber i on "
     "<prefix>.c<i % C>; idle: N connections send connect and stay idle; presence, churn, "
     "storm: see below (one process, rtgate only)"},
    {"--subs", "--conns", "N", OPT_U32, OFF(subs), 0, 0, 2000000, NULL, NULL, 0,
     "subscribers / idle connections (fanout 1000, channels 10000, idle 10000)"},
    {"--channels", NULL, "C", OPT_U32, OFF(channels), 0, 1, 1000000, NULL, NULL, 0,
     "channels (channels scenario; default = subs)"},
    {"--publishers", NULL, "P", OPT_U32, OFF(publishers), 0, 0, 10000, NULL, NULL, 0,
     "publisher connections (default 1; idle 0)"},
    {"--rate", NULL, "R", OPT_DOUBLE, OFF(rate), 0, 0.001, 1e7, NULL, NULL, 0,
     "messages/s over all publishers, evenly spaced (fanout 200, channels 2000)"},
    {"--duration", NULL, "S", OPT_DOUBLE, OFF(duration_s), 0, 0.1, 86400, NULL, NULL, 0,
     "measured seconds (default 10; idle: hold time)"},
    {"--warmup", NULL, "S", OPT_DOUBLE, OFF(warmup_s), 0, 0, 3600, NULL, NULL, 0,
     "seconds published before measuring (default 2)"},
    {"--drain", NULL, "S", OPT_DOUBLE, OFF(drain_s), 0, 0, 3600, NULL, NULL, 0,
     "longest wait for in-flight messages at the end (default 5)"},
    {"--payload", NULL, "BYTES", OPT_U32, OFF(payload), 0, 0, 1u << 20, NULL, NULL, 0,
     "size of each message's `data` (default 128)"},
    {"--subprotocol", NULL, "P", OPT_CHOICE, OFF(codec), 0, 0, 0, codec_names, NULL, 0,
     "json (default) or msgpack"},
    {"--channel-prefix", NULL, "STR", OPT_CUSTOM, 0, 0, 0, 0, NULL, valid_prefix, 0,
     "channel names start with STR. (default load); the gateway decides by name whether they "
     "are ephemeral or durable"},
    {"--idle-sub", NULL, NULL, OPT_SET, OFF(idle_sub), 0, 0, 0, NULL, NULL, 0,
     "idle: also subscribe connection i to <prefix>.c<i % C>"},
    {"--presence", NULL, NULL, OPT_SET, OFF(presence), 0, 0, 0, NULL, NULL, 0,
     "subscribers send \"presence\":true: they take part in their channel's presence (a "
     "gateway's join storm; the events are read and not counted)"},
    {"--no-ack", NULL, NULL, OPT_CLEAR, OFF(ack), 0, 0, 0, NULL, NULL, 0,
     "do not ack durable deliveries (the server's window fills)"},
    {"--ack-every", NULL, "N", OPT_U32, OFF(ack_every), 0, 1, 1000000, NULL, NULL, 0,
     "ack after N durable deliveries (default: max_unacked / 4)"},
    {"--ack-delay-ms", NULL, "MS", OPT_U32, OFF(ack_delay_ms), 0, 1, 60000, NULL, NULL, 0,
     "... or at most MS after the delivery (default 100)"},

    SECTION("Presence",
            "--scenario presence; rtgate.v1.json; geo.set counts against the gateway's "
            "--geo-rate/--geo-burst per connection and every request against --msg-rate: raise "
            "them, or 429s are counted and backed off."),
    {"--setters", NULL, "N", OPT_U32, OFF(sc.setters), 0, 1, LT_SCEN_MAX_CONNS, NULL, NULL, 0,
     "connections doing geo.set random walks (default 1000)"},
    {"--set-rate", NULL, "R", OPT_DOUBLE, OFF(sc.set_rate), 0, 0.01, 1e6, NULL, NULL, 0,
     "geo.set per second, all setters (default 2000); each carries meta {\"t\":<send slot, ns>}"},
    {"--queriers", NULL, "Q", OPT_U32, OFF(sc.queriers), 0, 0, LT_SCEN_MAX_CONNS, NULL, NULL, 0,
     "connections doing geo.near (default 10)"},
    {"--query-rate", NULL, "R", OPT_DOUBLE, OFF(sc.query_rate), 0, 0, 1e6, NULL, NULL, 0,
     "geo.near per second, all queriers (default 200; 0 = none)"},
    {"--watchers", NULL, "K", OPT_U32, OFF(sc.watchers), 0, 0, LT_SCEN_MAX_CONNS, NULL, NULL, 0,
     "connections holding one geo.watch each (default 0); event latency = arrival - the "
     "member's meta.t"},
    {"--url2", NULL, "URL", OPT_TEXT, OFF(sc.url2), SIZE(sc.url2), 0, 0, NULL, NULL, 0,
     "queriers and watchers connect here (a second gateway on the same NATS): cross-node "
     "presence latency"},
    {"--area-km", NULL, "KM", OPT_DOUBLE, OFF(sc.area_km), 0, 0.01, 1000, NULL, NULL, 0,
     "side of the square walked in (default 20)"},
    {"--center", NULL, "LAT,LON", OPT_CUSTOM, 0, 0, 0, 0, NULL, parse_center, 0,
     "its centre (default 52.52,13.405)"},
    {"--step-m", NULL, "M", OPT_DOUBLE, OFF(sc.step_m), 0, 0, 10000, NULL, NULL, 0,
     "random-walk step per geo.set (default 25)"},
    {"--radius-m", NULL, "M", OPT_DOUBLE, OFF(sc.radius_m), 0, 1, 50000, NULL, NULL, 0,
     "geo.near radius (default 500)"},
    {"--near-limit", NULL, "N", OPT_U32, OFF(sc.near_limit), 0, 1, 1000, NULL, NULL, 0,
     "geo.near limit (default 50)"},
    {"--watch-radius-m", NULL, "M", OPT_DOUBLE, OFF(sc.watch_radius_m), 0, 1, 50000, NULL, NULL, 0,
     "geo.watch radius (default 1000)"},
    {"--space", NULL, "NAME", OPT_CUSTOM, 0, 0, 0, 0, NULL, valid_space, 0,
     "presence space (default load)"},

    SECTION("Connection churn",
            "--scenario churn: --rate cycles/s (default 200) of open, upgrade, connect, sub to "
            "<prefix>.c<k % C> (--channels, default 100), close; at most --max-handshaking in "
            "flight (a due cycle with none free is skipped); handshakes refused with 429/503 "
            "count as failures (start the gateway with --ip-conn-rate 0 or above --rate)."),

    SECTION("Reconnect storm",
            "--scenario storm: --subs N connections (default 1000) connect and subscribe, stay "
            "--hold S seconds, are all closed by the client at once and reconnect."),
    {"--hold", NULL, "S", OPT_DOUBLE, OFF(sc.hold_s), 0, 0, 3600, NULL, NULL, 0,
     "seconds the connections stay up before the drop (default 1)"},
    {"--reconnect-rate", NULL, "R", OPT_DOUBLE, OFF(sc.reconnect_rate), 0, 0, 1e6, NULL, NULL, 0,
     "reconnects per second (default 0: as fast as possible, at most --max-handshaking at "
     "once); 429/503 refusals are retried after Retry-After (or a jittered backoff) within "
     "--setup-timeout"},

    SECTION("Target and publishing", NULL),
    {"--url", NULL, "URL", OPT_ARG, OFF(arg.url), 0, 0, 0, NULL, NULL, 0,
     "ws://HOST:PORT/PATH or wss:// (TLS, a full handshake per connection) to connect to "
     "(required): 127.0.0.0/8, ::1, [::1] or localhost only; anything else exits 2"},
    {"--tls-ca", NULL, "FILE", OPT_ARG, OFF(tls_ca), 0, 0, 0, NULL, NULL, 0,
     "wss://: verify the server's certificate against these PEM certificates (default: no "
     "verification, the target is loopback)"},
    {"--target", NULL, "T", OPT_CHOICE, OFF(target), 0, 0, 0, target_names, NULL, 0,
     "rtgate (default): rtgate's protocol over WebSocket; nats-ws: NATS's protocol over "
     "nats-server's WebSocket listener (--url ws://127.0.0.1:WSPORT/); subscribers SUB to the "
     "subject rtgate uses: rtgate.eph.<channel>"},
    {"--publish-via", NULL, "V", OPT_CHOICE, OFF(pub_via), 0, 0, 0, pub_via_names, NULL, 0,
     "ws (default for rtgate): `pub` over WebSocket; nats (needed for nats-ws): plain NATS TCP "
     "publishers send PUB rtgate.eph.<channel> with the JSON data as payload"},
    {"--nats", NULL, "URL", OPT_ARG, OFF(arg.nats), 0, 0, 0, NULL, NULL, 0,
     "nats://127.0.0.1:PORT, the NATS server to publish to"},
    {"--durable-nats", NULL, NULL, OPT_SET, OFF(durable_nats), 0, 0, 0, NULL, NULL, 0,
     "publish to rtgate.dur.<channel> through JetStream (PUB with a reply inbox; acks counted "
     "as accepted)"},
    {"--broker-pid", NULL, "PID[,PID...]", OPT_ARG, OFF(arg.broker_pids), 0, 0, 0, NULL, NULL, 0,
     "also sample these (the NATS server behind rtgate) and report them apart as `broker`"},

    SECTION("Connections", NULL),
    {"--connect-rate", NULL, "N", OPT_DOUBLE, OFF(connect_rate), 0, 1, 1e6, NULL, NULL, 0,
     "new connections per second (default 2000)"},
    {"--max-handshaking", NULL, "N", OPT_U32, OFF(max_handshaking), 0, 1, 100000, NULL, NULL, 0,
     "connections being set up at once per worker (default 256)"},
    {"--setup-timeout", NULL, "S", OPT_DOUBLE, OFF(setup_timeout_s), 0, 0.1, 3600, NULL, NULL, 0,
     "one connection's limit to get ready, retries included (default 30)"},
    {"--source-addrs", NULL, "LIST", OPT_ARG, OFF(arg.sources), 0, 0, 0, NULL, NULL, 0,
     "bind client sockets round-robin to these loopback addresses (127.0.0.2,127.0.0.3,...); "
     "needed past ~28k connections. Default: above 5000 IPv4 connections, one address per "
     "5000 from 127.0.0.2 up (connect() gets slow as ports fill up)"},
    {"--workers", NULL, "N", OPT_U32, OFF(workers), 0, 1, MAX_WORKERS, NULL, NULL, 0,
     "client processes (default: one per 15000 connections)"},
    {"--token", NULL, "JWT", OPT_CUSTOM, 0, 0, 0, 0, NULL, set_token, 0,
     "send this token in every connection's connect (a gateway with --jwt-key; up to 8192 "
     "characters of base64url and dots). --token-file keeps it out of the process list"},
    {"--token-file", NULL, "FILE", OPT_CUSTOM, 0, 0, 0, 0, NULL, read_token_file, 0,
     "the same, read from FILE: one token, or one per line, and then subscriber i and "
     "publisher i send line i % lines (a user per token: per-user limits)"},
    {"--rx-coalesce-us", NULL, "N", OPT_U32, OFF(rx_coalesce_us), 0, 0, 100000, NULL, NULL, 0,
     "wait at least N us between two reads of the sockets: fewer wakeups and less client CPU, "
     "up to N us more latency (default 0)"},

    SECTION("Measurement and output", NULL),
    {"--server-pid", NULL, "PID[,PID...]", OPT_ARG, OFF(arg.server_pids), 0, 0, 0, NULL, NULL, 0,
     "sample the server's CPU and RSS from /proc"},
    {"--timeout", NULL, "S", OPT_DOUBLE, OFF(timeout_s), 0, 1, 86400 * 2, NULL, NULL, 0,
     "hard stop for the whole run (default: estimated + 60): the workers report what they have "
     "(timed_out: true, not ok) or are killed 3 s later; Ctrl-C does the same"},
    {"--json", NULL, "FILE", OPT_ARG, OFF(json_path), 0, 0, 0, NULL, NULL, 0,
     "also append the JSON line to FILE"},
    {"--label", NULL, "STR", OPT_ARG, OFF(label), 0, 0, 127, NULL, NULL, 0,
     "a name for the run, copied into the JSON line (bench/run.sh names its runs with it)"},
    {"--histogram-svg", NULL, "FILE", OPT_ARG, OFF(svg_path), 0, 0, 0, NULL, NULL, 0,
     "write the latency percentile plot"},
    {"--verbose", "-v", NULL, OPT_VERBOSE, 0, 0, 0, 0, NULL, NULL, 0,
     "progress on stderr (twice, or -vv: socket errors too)"},
    {"--quiet", "-q", NULL, OPT_QUIET, 0, 0, 0, 0, NULL, NULL, 0, "no summary on stderr"},
    {"--self-test", NULL, NULL, OPT_ACTION, 0, 0, 0, 0, NULL, NULL, LT_ARGS_SELFTEST,
     "check SHA-1, base64, framing, codecs, histogram; no server"},
    {"--help", "-h", NULL, OPT_ACTION, 0, 0, 0, 0, NULL, NULL, LT_ARGS_HELP, "print this and exit"},
    {"--help-markdown", NULL, NULL, OPT_ACTION, 0, 0, 0, 0, NULL, NULL, LT_ARGS_HELP_MARKDOWN,
     "print the options as the tables of docs/loadtest.md and exit"},
};

#define N_OPTS (sizeof opts / sizeof opts[0])
_Static_assert(N_OPTS <= 64 * sizeof(((struct lt_config *)0)->given) / sizeof(uint64_t),
               "lt_config.given has a bit per row");

/* ------------------------------------------------------------------ */
/* Values */

static bool parse_double(const char *v, double lo, double hi, double *out)
{
    char *end;
    errno = 0;
    double d = strtod(v, &end);
    if (errno || end == v || *end || !isfinite(d) || d < lo || d > hi)
        return false;
    *out = d;
    return true;
}

static bool parse_u32(const char *v, double lo, double hi, uint32_t *out)
{
    char *end;
    errno = 0;
    if (*v == '-' || *v == '\0')
        return false;
    unsigned long long x = strtoull(v, &end, 10);
    if (errno || *end || (double)x < lo || (double)x > hi)
        return false;
    *out = (uint32_t)x;
    return true;
}

static bool valid_prefix(struct lt_config *cfg, const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 100 || s[0] == '.' || s[n - 1] == '.')
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '_' || c == ':' || c == '-' || c == '.';
        if (!ok || (c == '.' && s[i + 1] == '.'))
            return false;
    }
    strcpy(cfg->channel_prefix, s);
    return true;
}

/* A JWT's characters only, so that it goes into JSON unescaped. */
static bool set_token(struct lt_config *cfg, const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > LT_TOKEN_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-' || c == '.'))
            return false;
    }
    memcpy(cfg->token, s, n + 1);
    return true;
}

/* One more line of a token file: kept (and checked) as cfg->tokens[n_tokens]. */
static bool add_token(struct lt_config *cfg, const char *line)
{
    if (!set_token(cfg, line))
        return false;
    char **t = realloc(cfg->tokens, (cfg->n_tokens + 1) * sizeof *t);
    if (!t)
        return false;
    cfg->tokens = t;
    return (t[cfg->n_tokens++] = strdup(line)) != NULL;
}

static bool read_token_file(struct lt_config *cfg, const char *path)
{
    char line[LT_TOKEN_MAX + 3];
    FILE *f = fopen(path, "r");
    if (!f)
        return false;
    bool ok = true;
    while (ok && fgets(line, sizeof line, f)) {
        size_t n = strlen(line);
        if (n == sizeof line - 1 && line[n - 1] != '\n')
            ok = false; /* longer than any token */
        while (n && (line[n - 1] == '\n' || line[n - 1] == '\r'))
            line[--n] = '\0';
        if (ok && n)
            ok = add_token(cfg, line);
    }
    fclose(f);
    if (ok && cfg->n_tokens == 1) { /* one token: as --token */
        free(cfg->tokens[0]);
        free(cfg->tokens);
        cfg->tokens = NULL;
        cfg->n_tokens = 0;
    }
    return ok && cfg->token[0];
}

static bool valid_space(struct lt_config *cfg, const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n >= sizeof cfg->sc.space)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-'))
            return false;
    }
    strcpy(cfg->sc.space, s);
    return true;
}

static bool parse_center(struct lt_config *cfg, const char *s)
{
    double lat, lon;
    if (sscanf(s, "%lf,%lf", &lat, &lon) != 2 || fabs(lat) > 80 || fabs(lon) > 170)
        return false;
    cfg->sc.center_lat = lat;
    cfg->sc.center_lon = lon;
    return true;
}

/* Stores v as row o says; false when the value is bad. */
static bool set_value(struct lt_config *cfg, const struct opt *o, const char *v)
{
    char *field = (char *)cfg + o->offset;
    switch (o->kind) {
    case OPT_U32:
        return parse_u32(v, o->lo, o->hi, (uint32_t *)(void *)field);
    case OPT_DOUBLE:
        return parse_double(v, o->lo, o->hi, (double *)(void *)field);
    case OPT_TEXT:
        if (!*v || strlen(v) >= o->size)
            return false;
        strcpy(field, v);
        return true;
    case OPT_ARG:
        if (o->hi > 0 && (double)strlen(v) > o->hi)
            return false;
        *(const char **)(void *)field = v;
        return true;
    case OPT_CHOICE:
        for (int i = 0; o->choices[i]; i++)
            if (strcmp(v, o->choices[i]) == 0) {
                *(int *)(void *)field = i;
                return true;
            }
        return false;
    case OPT_CUSTOM:
        return o->parse(cfg, v);
    case OPT_SET:
    case OPT_CLEAR:
        *(bool *)(void *)field = o->kind == OPT_SET;
        return true;
    case OPT_VERBOSE:
        cfg->verbose++;
        return true;
    case OPT_QUIET:
        cfg->verbose = -1;
        return true;
    case OPT_SECTION:
    case OPT_ACTION:
        break;
    }
    return false;
}

static bool takes_value(const struct opt *o)
{
    return o->value != NULL;
}

static const struct opt *find(const char *name, size_t len)
{
    for (size_t i = 0; i < N_OPTS; i++) {
        const struct opt *o = &opts[i];
        if (o->kind == OPT_SECTION)
            continue;
        if ((strlen(o->name) == len && memcmp(o->name, name, len) == 0) ||
            (o->alias && strlen(o->alias) == len && memcmp(o->alias, name, len) == 0))
            return o;
    }
    return NULL;
}

static void mark_given(struct lt_config *cfg, const struct opt *o)
{
    size_t i = (size_t)(o - opts);
    cfg->given[i / 64] |= 1ull << (i % 64);
}

enum lt_option_result lt_option_set(struct lt_config *cfg, const char *name, const char *value)
{
    const struct opt *o = find(name, strlen(name));
    if (!o || o->kind == OPT_ACTION)
        return LT_OPTION_UNKNOWN;
    if (takes_value(o) != (value != NULL) || !set_value(cfg, o, value))
        return LT_OPTION_BAD;
    mark_given(cfg, o);
    return LT_OPTION_SET;
}

bool lt_option_given(const struct lt_config *cfg, const char *name)
{
    const struct opt *o = find(name, strlen(name));
    if (!o)
        return false;
    size_t i = (size_t)(o - opts);
    return (cfg->given[i / 64] >> (i % 64)) & 1;
}

void lt_config_defaults(struct lt_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->scenario = LT_SC_FANOUT;
    cfg->codec = LT_CODEC_JSON;
    cfg->duration_s = 10;
    cfg->warmup_s = 2;
    cfg->drain_s = 5;
    cfg->payload = 128;
    strcpy(cfg->channel_prefix, "load");
    cfg->connect_rate = 2000;
    cfg->max_handshaking = 256;
    cfg->setup_timeout_s = 30;
    cfg->ack = true;
    cfg->ack_delay_ms = 100;
    cfg->max_backlog = 4u << 20;
}

/* ------------------------------------------------------------------ */
/* --help and --help-markdown */

/* Writes words of text from column `col`, wrapping at HELP_WIDTH to column `indent`. */
static void wrap(FILE *out, const char *text, size_t col, size_t indent)
{
    const char *p = text;
    while (*p) {
        size_t word = strcspn(p, " ");
        if (col > indent && col + 1 + word > HELP_WIDTH) {
            fprintf(out, "\n%*s", (int)indent, "");
            col = indent;
        } else if (col > indent) {
            fputc(' ', out);
            col++;
        }
        fwrite(p, 1, word, out);
        col += word;
        p += word;
        while (*p == ' ')
            p++;
    }
    fputc('\n', out);
}

/* "-v, --verbose", "--subs, --conns N": the option as --help shows it. */
static void flag_text(const struct opt *o, char *out, size_t cap)
{
    if (!o->alias)
        snprintf(out, cap, "%s", o->name);
    else if (o->alias[1] != '-') /* the short one first */
        snprintf(out, cap, "%s, %s", o->alias, o->name);
    else
        snprintf(out, cap, "%s, %s", o->name, o->alias);
    if (o->value) {
        size_t n = strlen(out);
        snprintf(out + n, cap - n, " %s", o->value);
    }
}

void lt_usage(FILE *out)
{
    fprintf(out, "Usage: rtgate-load --url ws://127.0.0.1:PORT/ws [options]\n"
                 "       rtgate-load --self-test\n\n"
                 "Load generator for rtgate (docs/loadtest.md). Loopback targets only.\n"
                 "Prints one JSON line on stdout; exit 0 when ok, 1 on loss/dup/ooo/errors, 2 on "
                 "usage errors.\n");
    for (size_t i = 0; i < N_OPTS; i++) {
        const struct opt *o = &opts[i];
        if (o->kind == OPT_SECTION) {
            fprintf(out, "\n%s:\n", o->name);
            if (o->help) {
                fputs("  ", out);
                wrap(out, o->help, 2, 2);
            }
            continue;
        }
        char flag[64];
        flag_text(o, flag, sizeof flag);
        size_t col = 2 + strlen(flag);
        fprintf(out, "  %s", flag);
        if (col + 2 > HELP_COLUMN) {
            fprintf(out, "\n%*s", HELP_COLUMN, "");
        } else {
            fprintf(out, "%*s", (int)(HELP_COLUMN - col), "");
        }
        wrap(out, o->help, HELP_COLUMN, HELP_COLUMN);
    }
}

/* Text for a markdown table cell: | and angle brackets escaped. */
static void md_cell(FILE *out, const char *s)
{
    for (; *s; s++) {
        if (*s == '|' || *s == '<' || *s == '>')
            fputc('\\', out);
        fputc(*s, out);
    }
}

void lt_usage_markdown(FILE *out)
{
    bool table = false;
    for (size_t i = 0; i < N_OPTS; i++) {
        const struct opt *o = &opts[i];
        if (o->kind == OPT_SECTION) {
            fprintf(out, "%s### %s\n\n", i ? "\n" : "", o->name);
            if (o->help) {
                md_cell(out, o->help);
                fputs("\n\n", out);
            }
            table = false;
            continue;
        }
        if (!table)
            fputs("| option | meaning |\n|---|---|\n", out);
        table = true;
        char flag[64];
        flag_text(o, flag, sizeof flag);
        fprintf(out, "| `%s` | ", flag);
        md_cell(out, o->help);
        fputs(" |\n", out);
    }
}

/* ------------------------------------------------------------------ */
/* The command line */

enum list_kind { LIST_SRC, LIST_PIDS, LIST_BROKER };

static bool parse_list(struct lt_config *cfg, const char *list, enum list_kind kind, char *err,
                       size_t err_cap)
{
    char buf[4096];
    if (strlen(list) >= sizeof buf) {
        snprintf(err, err_cap, "list too long");
        return false;
    }
    strcpy(buf, list);
    char *save = NULL;
    for (char *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        if (kind != LIST_SRC) {
            pid_t *to = kind == LIST_PIDS ? cfg->server_pids : cfg->broker_pids;
            size_t *n = kind == LIST_PIDS ? &cfg->n_server_pids : &cfg->n_broker_pids;
            uint32_t pid;
            if (*n >= LT_MAX_PIDS || !parse_u32(tok, 1, 0x7FFFFFFF, &pid)) {
                snprintf(err, err_cap, "bad pid '%s'", tok);
                return false;
            }
            to[(*n)++] = (pid_t)pid;
        } else if (!lt_add_source(cfg, tok, err, err_cap)) {
            return false;
        }
    }
    return true;
}

static int usage_error(const char *msg)
{
    fprintf(stderr, "rtgate-load: %s\n", msg);
    return LT_ARGS_USAGE;
}

/* The options that are read once all are in: the URLs, address and pid lists. */
static int take_args(struct lt_config *cfg)
{
    char err[256] = "";
    if (!cfg->arg.url)
        return usage_error("--url is required (see --help)");
    if (!lt_parse_url(cfg, cfg->arg.url, err, sizeof err) ||
        (cfg->arg.sources && !parse_list(cfg, cfg->arg.sources, LIST_SRC, err, sizeof err)) ||
        (cfg->arg.server_pids &&
         !parse_list(cfg, cfg->arg.server_pids, LIST_PIDS, err, sizeof err)) ||
        (cfg->arg.broker_pids &&
         !parse_list(cfg, cfg->arg.broker_pids, LIST_BROKER, err, sizeof err)))
        return usage_error(err);
    if (cfg->target == LT_TGT_NATS_WS) {
        if (lt_option_given(cfg, "--publish-via") && cfg->pub_via != LT_PV_NATS)
            return usage_error(
                "--target nats-ws publishes via NATS (--publish-via nats --nats URL)");
        cfg->pub_via = LT_PV_NATS;
    }
    if (cfg->arg.nats && !lt_parse_nats_url(cfg, cfg->arg.nats, err, sizeof err))
        return usage_error(err);
    if (cfg->pub_via == LT_PV_NATS && !cfg->arg.nats && cfg->scenario != LT_SC_IDLE)
        return usage_error("publishing via NATS needs --nats nats://127.0.0.1:PORT");
    if (cfg->durable_nats && cfg->pub_via != LT_PV_NATS)
        return usage_error("--durable-nats is for --publish-via nats");
    return LT_ARGS_RUN;
}

/* The delivery scenarios' presets for whatever was not given. */
static int presets(struct lt_config *cfg)
{
    bool subs = lt_option_given(cfg, "--subs"), channels = lt_option_given(cfg, "--channels");
    bool rate = lt_option_given(cfg, "--rate"), pubs = lt_option_given(cfg, "--publishers");
    switch (cfg->scenario) {
    case LT_SC_FANOUT:
        if (!subs)
            cfg->subs = 1000;
        if (channels && cfg->channels != 1)
            return usage_error("fanout uses one channel (use --scenario channels)");
        cfg->channels = 1;
        if (!rate)
            cfg->rate = 200;
        if (!pubs)
            cfg->publishers = 1;
        break;
    case LT_SC_CHANNELS:
        if (!subs)
            cfg->subs = 10000;
        if (!channels)
            cfg->channels = cfg->subs ? cfg->subs : 1;
        if (!rate)
            cfg->rate = 2000;
        if (!pubs)
            cfg->publishers = 1;
        break;
    case LT_SC_IDLE:
        if (!subs)
            cfg->subs = 10000;
        if (pubs && cfg->publishers)
            return usage_error("the idle scenario has no publishers");
        cfg->publishers = 0;
        if (!channels)
            cfg->channels = 1;
        cfg->hold_s = cfg->duration_s;
        cfg->warmup_s = 0;
        break;
    case LT_SC_PRESENCE:
    case LT_SC_CHURN:
    case LT_SC_STORM:
        break; /* scen.c's */
    }
    if (cfg->scenario != LT_SC_IDLE && (cfg->publishers == 0 || cfg->subs == 0))
        return usage_error("a delivery scenario needs --subs and --publishers > 0");
    return LT_ARGS_RUN;
}

/* How the connections split over the workers, and the source addresses big runs need. */
static int split(struct lt_config *cfg)
{
    char err[256] = "";
    uint32_t total = lt_total_conns(cfg);
    if (!lt_option_given(cfg, "--workers"))
        cfg->workers = total ? (total + CONNS_PER_WORKER - 1) / CONNS_PER_WORKER : 1;
    if (cfg->workers < 1)
        cfg->workers = 1;
    if (cfg->workers > MAX_WORKERS) {
        fprintf(stderr, "rtgate-load: more than %u workers needed\n", MAX_WORKERS);
        return LT_ARGS_USAGE;
    }
    for (uint32_t w = 0; w < cfg->workers; w++) {
        struct lt_slice s;
        lt_slice_of(cfg, w, cfg->workers, &s);
        uint32_t n = s.sub_hi - s.sub_lo + (cfg->publishers + cfg->workers - 1) / cfg->workers;
        if (n > MAX_CONNS_WORKER) {
            fprintf(stderr, "rtgate-load: %u connections in one worker; use --workers %u or more\n",
                    n, (total + MAX_CONNS_WORKER - 1) / MAX_CONNS_WORKER);
            return LT_ARGS_USAGE;
        }
    }
    /*
     * One source address holds about 28k connections to one port, and the
     * kernel's search for a free ephemeral port (__inet_hash_connect) grows
     * with how full the range is: at 19k connections from one address it
     * cost the client ~400 us per connect. Spread big runs over 127.0.0.2..
     * by itself, one address per 5000 connections.
     */
    if (cfg->n_src == 0 && total > AUTO_SRC_CONNS && cfg->dst.ss_family == AF_INET) {
        uint32_t need = (total + AUTO_SRC_CONNS - 1) / AUTO_SRC_CONNS;
        for (uint32_t i = 0; i < need && i < LT_MAX_SRC; i++) {
            char a[32];
            snprintf(a, sizeof a, "127.0.0.%u", 2 + i);
            if (!lt_add_source(cfg, a, err, sizeof err))
                return usage_error(err);
        }
    }
    return LT_ARGS_RUN;
}

/* Presets and checks between options, once every option is in. */
static int finish(struct lt_config *cfg)
{
    int rc = take_args(cfg);
    if (rc != LT_ARGS_RUN)
        return rc;
    /* presence, churn and storm run in one process of their own (scen.c). */
    if (lt_scen_own(cfg->scenario))
        return lt_scen_check(cfg) ? LT_ARGS_RUN : LT_ARGS_USAGE;
    rc = presets(cfg);
    if (rc != LT_ARGS_RUN)
        return rc;
    if (lt_nstreams(cfg) > MAX_STREAMS) {
        fprintf(stderr, "rtgate-load: publishers x channels is over %u\n", MAX_STREAMS);
        return LT_ARGS_USAGE;
    }
    size_t pub_len = lt_data_min_size(cfg->codec, UINT32_MAX, cfg->publishers, UINT64_MAX);
    if (cfg->payload > 60000 || pub_len > 60000)
        return usage_error("--payload is at most 60000");
    rc = split(cfg);
    if (rc != LT_ARGS_RUN)
        return rc;
    if (cfg->timeout_s == 0) {
        double setup = (double)lt_total_conns(cfg) / cfg->connect_rate + cfg->setup_timeout_s;
        double run = cfg->scenario == LT_SC_IDLE ? cfg->hold_s
                                                 : cfg->warmup_s + cfg->duration_s + cfg->drain_s;
        cfg->timeout_s = setup + run + 60;
    }
    return LT_ARGS_RUN;
}

int lt_parse_args(struct lt_config *cfg, int argc, char **argv)
{
    lt_config_defaults(cfg);
    for (int i = 1; i < argc; i++) { /* --help and --self-test win over any mistake */
        const struct opt *o = find(argv[i], strlen(argv[i]));
        if (o && o->kind == OPT_ACTION)
            return o->action;
    }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "-vv") == 0) {
            cfg->verbose += 2;
            continue;
        }
        if (a[0] != '-') {
            fprintf(stderr, "rtgate-load: unexpected argument '%s' (see --help)\n", a);
            return LT_ARGS_USAGE;
        }
        const char *eq = strncmp(a, "--", 2) == 0 ? strchr(a, '=') : NULL;
        size_t nl = eq ? (size_t)(eq - a) : strlen(a);
        const struct opt *o = find(a, nl);
        if (!o) {
            fprintf(stderr, "rtgate-load: unknown option '%.*s' (see --help)\n", (int)nl, a);
            return LT_ARGS_USAGE;
        }
        const char *val = NULL;
        if (takes_value(o)) {
            if (eq) {
                val = eq + 1;
            } else if (i + 1 < argc) {
                val = argv[++i];
            } else {
                fprintf(stderr, "rtgate-load: %s needs a value\n", o->name);
                return LT_ARGS_USAGE;
            }
        } else if (eq) {
            fprintf(stderr, "rtgate-load: %s takes no value\n", o->name);
            return LT_ARGS_USAGE;
        }
        if (!set_value(cfg, o, val)) {
            fprintf(stderr, "rtgate-load: bad value for %s: '%s'\n", o->name, val ? val : "");
            return LT_ARGS_USAGE;
        }
        mark_given(cfg, o);
    }
    return finish(cfg);
}
