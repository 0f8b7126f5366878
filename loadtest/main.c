/*
 * main.c: rtgate-load's command line and the parent process. The parent
 * forks the workers, steps them through the run's phases (all connected ->
 * start -> publishing done -> expected counts -> results -> finish),
 * samples the server from /proc between phases, merges the workers'
 * counters and histograms and prints the one JSON line.
 */
#include "load.h"

#include <errno.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#define EXIT_USAGE       2
#define CONNS_PER_WORKER 15000u /* default split */
#define MAX_CONNS_WORKER 19500u /* the fd limit is 20000 per process */
#define MAX_WORKERS      64u
#define MAX_STREAMS      (4u << 20)
#define START_LEAD_NS    (200 * LT_NS_PER_MS)
#define AUTO_SRC_CONNS   5000u
#define ABORT_GRACE_NS   (3 * LT_NS_PER_S) /* workers' time to report after a timeout */
#define WORKER_GRACE_NS  (6 * LT_NS_PER_S) /* workers stop by themselves this long after */

static void usage(FILE *out)
{
    fprintf(out,
            "Usage: rtgate-load --url ws://127.0.0.1:PORT/ws [options]\n"
            "       rtgate-load --self-test\n\n"
            "Load generator for rtgate (docs/loadtest.md). Loopback targets only.\n"
            "Prints one JSON line on stdout; exit 0 when ok, 1 on loss/dup/ooo/errors, 2 on "
            "usage errors.\n\n"
            "Scenario:\n"
            "  --scenario NAME       fanout (default): all subscribers on <prefix>.fanout\n"
            "                        channels: subscriber i on <prefix>.c<i %% C>\n"
            "                        idle: N connections send connect and stay idle\n"
            "                        presence, churn, storm: see below (one process, rtgate only)\n"
            "  --subs N              subscribers / idle connections (fanout 1000, channels "
            "10000, idle 10000)\n"
            "  --channels C          channels (channels scenario; default = subs)\n"
            "  --publishers P        publisher connections (default 1; idle 0)\n"
            "  --rate R              messages/s over all publishers, evenly spaced "
            "(fanout 200, channels 2000)\n"
            "  --duration S          measured seconds (default 10; idle: hold time)\n"
            "  --warmup S            seconds published before measuring (default 2)\n"
            "  --drain S             longest wait for in-flight messages at the end (default 5)\n"
            "  --payload BYTES       size of each message's `data` (default 128)\n"
            "  --subprotocol P       json (default) or msgpack\n"
            "  --channel-prefix STR  channel names start with STR. (default load); the gateway\n"
            "                        decides by name whether they are ephemeral or durable\n"
            "  --idle-sub            idle: also subscribe connection i to <prefix>.c<i %% C>\n"
            "  --no-ack              do not ack durable deliveries (the server's window fills)\n"
            "  --ack-every N         ack after N durable deliveries (default: max_unacked / 4)\n"
            "  --ack-delay-ms MS     ... or at most MS after the delivery (default 100)\n\n");
    /* Split so that no one string literal is over C99's 4095 characters. */
    fprintf(out,
            "Presence (--scenario presence; rtgate.v1.json; geo.set counts against the\n"
            "gateway's --geo-rate/--geo-burst per connection and every request against\n"
            "--msg-rate: raise them, or 429s are counted and backed off):\n"
            "  --setters N           connections doing geo.set random walks (default 1000)\n"
            "  --set-rate R          geo.set per second, all setters (default 2000); each\n"
            "                        carries meta {\"t\":<send slot, ns>}\n"
            "  --queriers Q          connections doing geo.near (default 10)\n"
            "  --query-rate R        geo.near per second, all queriers (default 200; 0 = none)\n"
            "  --watchers K          connections holding one geo.watch each (default 0); event\n"
            "                        latency = arrival - the member's meta.t\n"
            "  --url2 URL            queriers and watchers connect here (a second gateway on\n"
            "                        the same NATS): cross-node presence latency\n"
            "  --area-km KM          side of the square walked in (default 20)\n"
            "  --center LAT,LON      its centre (default 52.52,13.405)\n"
            "  --step-m M            random-walk step per geo.set (default 25)\n"
            "  --radius-m M          geo.near radius (default 500)\n"
            "  --near-limit N        geo.near limit (default 50)\n"
            "  --watch-radius-m M    geo.watch radius (default 1000)\n"
            "  --space NAME          presence space (default load)\n\n"
            "Connection churn (--scenario churn): --rate cycles/s (default 200) of open,\n"
            "upgrade, connect, sub to <prefix>.c<k %% C> (--channels, default 100), close;\n"
            "at most --max-handshaking in flight (a due cycle with none free is skipped);\n"
            "handshakes refused with 429/503 count as failures (start the gateway with\n"
            "--ip-conn-rate 0 or above --rate).\n\n"
            "Reconnect storm (--scenario storm): --subs N connections (default 1000)\n"
            "connect and subscribe, stay --hold S seconds (default 1), are all closed by\n"
            "the client at once and reconnect:\n"
            "  --reconnect-rate R    reconnects per second (default 0: as fast as possible,\n"
            "                        at most --max-handshaking at once); 429/503 refusals\n"
            "                        are retried after Retry-After (or a jittered backoff)\n"
            "                        within --setup-timeout\n\n");
    fprintf(out,
            "Target and publishing:\n"
            "  --target T            rtgate (default): rtgate's protocol over WebSocket\n"
            "                        nats-ws: NATS's protocol over nats-server's WebSocket\n"
            "                        listener (--url ws://127.0.0.1:WSPORT/); subscribers SUB\n"
            "                        to the subject rtgate uses: rtgate.eph.<channel>\n"
            "  --publish-via V       ws (default for rtgate): `pub` over WebSocket\n"
            "                        nats (needed for nats-ws): plain NATS TCP publishers send\n"
            "                        PUB rtgate.eph.<channel> with the JSON data as payload\n"
            "  --nats URL            nats://127.0.0.1:PORT, the NATS server to publish to\n"
            "  --durable-nats        publish to rtgate.dur.<channel> through JetStream (PUB with\n"
            "                        a reply inbox; acks counted as accepted)\n"
            "  --broker-pid PID[,PID...]  also sample these (the NATS server behind rtgate) and\n"
            "                        report them apart as `broker`\n\n"
            "Connections:\n"
            "  --connect-rate N      new connections per second (default 2000)\n"
            "  --max-handshaking N   connections being set up at once per worker (default 256)\n"
            "  --setup-timeout S     one connection's limit to get ready (default 30)\n"
            "  --source-addrs LIST   bind client sockets round-robin to these loopback addresses\n"
            "                        (127.0.0.2,127.0.0.3,...); needed past ~28k connections.\n"
            "                        Default: above 5000 IPv4 connections, one address per 5000\n"
            "                        from 127.0.0.2 up (connect() gets slow as ports fill up)\n"
            "  --workers N           client processes (default: one per 15000 connections)\n"
            "  --rx-coalesce-us N    wait at least N us between two reads of the sockets: fewer\n"
            "                        wakeups and less client CPU, up to N us more latency (default "
            "0)\n\n"
            "Measurement and output:\n"
            "  --server-pid PID[,PID...]  sample the server's CPU and RSS from /proc\n"
            "  --timeout S           hard stop for the whole run (default: estimated + 60)\n"
            "  --json FILE           also append the JSON line to FILE\n"
            "  --label STR           a name for the run, copied into the JSON line\n"
            "  --histogram-svg FILE  write the latency percentile plot\n"
            "  -v, --verbose         progress on stderr (twice: socket errors too)\n"
            "  -q, --quiet           no summary on stderr\n"
            "  --self-test           check SHA-1, base64, framing, codecs, histogram; no server\n");
}

/* ------------------------------------------------------------------ */
/* Options */

struct opts_seen {
    bool subs, channels, publishers, rate, workers, src, pub_via;
};

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

static bool parse_u32(const char *v, uint32_t lo, uint32_t hi, uint32_t *out)
{
    char *end;
    errno = 0;
    if (*v == '-')
        return false;
    unsigned long long x = strtoull(v, &end, 10);
    if (errno || end == v || *end || x < lo || x > hi)
        return false;
    *out = (uint32_t)x;
    return true;
}

static bool valid_prefix(const char *s)
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
    return true;
}

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

static void set_defaults(struct lt_config *cfg)
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

/*
 * Parses argv into cfg. Returns 0 to run, 2 on a usage error (reason
 * printed), 3 for --help, 4 for --self-test.
 */
static int parse_args(struct lt_config *cfg, int argc, char **argv)
{
    set_defaults(cfg);
    struct opts_seen seen = {0};
    const char *url = NULL, *sources = NULL, *pids = NULL, *broker = NULL, *nats = NULL;
    char err[256] = "";
    for (int i = 1; i < argc; i++) {
        char name[64];
        const char *a = argv[i];
        const char *val = NULL;
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0)
            return 3;
        if (strcmp(a, "--self-test") == 0)
            return 4;
        if (strcmp(a, "-v") == 0 || strcmp(a, "--verbose") == 0) {
            cfg->verbose++;
            continue;
        }
        if (strcmp(a, "-vv") == 0) {
            cfg->verbose += 2;
            continue;
        }
        if (strcmp(a, "-q") == 0 || strcmp(a, "--quiet") == 0) {
            cfg->verbose = -1;
            continue;
        }
        if (strcmp(a, "--idle-sub") == 0) {
            cfg->idle_sub = true;
            continue;
        }
        if (strcmp(a, "--no-ack") == 0) {
            cfg->ack = false;
            continue;
        }
        if (strcmp(a, "--durable-nats") == 0) {
            cfg->durable_nats = true;
            continue;
        }
        if (strncmp(a, "--", 2) != 0) {
            fprintf(stderr, "rtgate-load: unexpected argument '%s' (see --help)\n", a);
            return EXIT_USAGE;
        }
        const char *eq = strchr(a, '=');
        size_t nl = eq ? (size_t)(eq - a) : strlen(a);
        if (nl >= sizeof name) {
            fprintf(stderr, "rtgate-load: unknown option '%s'\n", a);
            return EXIT_USAGE;
        }
        memcpy(name, a, nl);
        name[nl] = '\0';
        if (eq) {
            val = eq + 1;
        } else if (i + 1 < argc) {
            val = argv[++i];
        } else {
            fprintf(stderr, "rtgate-load: %s needs a value\n", name);
            return EXIT_USAGE;
        }
        bool ok = true;
        if (strcmp(name, "--url") == 0) {
            url = val;
        } else if (strcmp(name, "--scenario") == 0) {
            if (strcmp(val, "fanout") == 0)
                cfg->scenario = LT_SC_FANOUT;
            else if (strcmp(val, "channels") == 0)
                cfg->scenario = LT_SC_CHANNELS;
            else if (strcmp(val, "idle") == 0)
                cfg->scenario = LT_SC_IDLE;
            else
                ok = lt_scen_from_name(val, &cfg->scenario);
        } else if (strcmp(name, "--subs") == 0 || strcmp(name, "--conns") == 0) {
            ok = parse_u32(val, 0, 2000000, &cfg->subs);
            seen.subs = true;
        } else if (strcmp(name, "--channels") == 0) {
            ok = parse_u32(val, 1, 1000000, &cfg->channels);
            seen.channels = true;
        } else if (strcmp(name, "--publishers") == 0) {
            ok = parse_u32(val, 0, 10000, &cfg->publishers);
            seen.publishers = true;
        } else if (strcmp(name, "--rate") == 0) {
            ok = parse_double(val, 0.001, 1e7, &cfg->rate);
            seen.rate = true;
        } else if (strcmp(name, "--duration") == 0) {
            ok = parse_double(val, 0.1, 86400, &cfg->duration_s);
        } else if (strcmp(name, "--warmup") == 0) {
            ok = parse_double(val, 0, 3600, &cfg->warmup_s);
        } else if (strcmp(name, "--drain") == 0) {
            ok = parse_double(val, 0, 3600, &cfg->drain_s);
        } else if (strcmp(name, "--timeout") == 0) {
            ok = parse_double(val, 1, 86400 * 2, &cfg->timeout_s);
        } else if (strcmp(name, "--payload") == 0) {
            ok = parse_u32(val, 0, 1u << 20, &cfg->payload);
        } else if (strcmp(name, "--subprotocol") == 0) {
            if (strcmp(val, "json") == 0)
                cfg->codec = LT_CODEC_JSON;
            else if (strcmp(val, "msgpack") == 0)
                cfg->codec = LT_CODEC_MSGPACK;
            else
                ok = false;
        } else if (strcmp(name, "--channel-prefix") == 0) {
            ok = valid_prefix(val);
            if (ok)
                strcpy(cfg->channel_prefix, val);
        } else if (strcmp(name, "--source-addrs") == 0) {
            sources = val;
        } else if (strcmp(name, "--server-pid") == 0) {
            pids = val;
        } else if (strcmp(name, "--broker-pid") == 0) {
            broker = val;
        } else if (strcmp(name, "--nats") == 0) {
            nats = val;
        } else if (strcmp(name, "--target") == 0) {
            if (strcmp(val, "rtgate") == 0)
                cfg->target = LT_TGT_RTGATE;
            else if (strcmp(val, "nats-ws") == 0)
                cfg->target = LT_TGT_NATS_WS;
            else
                ok = false;
        } else if (strcmp(name, "--publish-via") == 0) {
            seen.pub_via = true;
            if (strcmp(val, "ws") == 0)
                cfg->pub_via = LT_PV_WS;
            else if (strcmp(val, "nats") == 0)
                cfg->pub_via = LT_PV_NATS;
            else
                ok = false;
        } else if (strcmp(name, "--connect-rate") == 0) {
            ok = parse_double(val, 1, 1e6, &cfg->connect_rate);
        } else if (strcmp(name, "--max-handshaking") == 0) {
            ok = parse_u32(val, 1, 100000, &cfg->max_handshaking);
        } else if (strcmp(name, "--setup-timeout") == 0) {
            ok = parse_double(val, 0.1, 3600, &cfg->setup_timeout_s);
        } else if (strcmp(name, "--ack-every") == 0) {
            ok = parse_u32(val, 1, 1000000, &cfg->ack_every);
        } else if (strcmp(name, "--ack-delay-ms") == 0) {
            ok = parse_u32(val, 1, 60000, &cfg->ack_delay_ms);
        } else if (strcmp(name, "--rx-coalesce-us") == 0) {
            ok = parse_u32(val, 0, 100000, &cfg->rx_coalesce_us);
        } else if (strcmp(name, "--workers") == 0) {
            ok = parse_u32(val, 1, MAX_WORKERS, &cfg->workers);
            seen.workers = true;
        } else if (strcmp(name, "--label") == 0) {
            ok = strlen(val) < 128;
            cfg->label = val;
        } else if (strcmp(name, "--json") == 0) {
            cfg->json_path = val;
        } else if (strcmp(name, "--histogram-svg") == 0) {
            cfg->svg_path = val;
        } else if (lt_scen_option(cfg, name, val, &ok)) {
            /* presence, churn, storm (scen.c) */
        } else {
            fprintf(stderr, "rtgate-load: unknown option '%s' (see --help)\n", name);
            return EXIT_USAGE;
        }
        if (!ok) {
            fprintf(stderr, "rtgate-load: bad value for %s: '%s'\n", name, val);
            return EXIT_USAGE;
        }
    }
    if (!url) {
        fprintf(stderr, "rtgate-load: --url is required (see --help)\n");
        return EXIT_USAGE;
    }
    if (!lt_parse_url(cfg, url, err, sizeof err)) {
        fprintf(stderr, "rtgate-load: %s\n", err);
        return EXIT_USAGE;
    }
    if (sources && !parse_list(cfg, sources, LIST_SRC, err, sizeof err)) {
        fprintf(stderr, "rtgate-load: %s\n", err);
        return EXIT_USAGE;
    }
    if (pids && !parse_list(cfg, pids, LIST_PIDS, err, sizeof err)) {
        fprintf(stderr, "rtgate-load: %s\n", err);
        return EXIT_USAGE;
    }
    if (broker && !parse_list(cfg, broker, LIST_BROKER, err, sizeof err)) {
        fprintf(stderr, "rtgate-load: %s\n", err);
        return EXIT_USAGE;
    }
    if (cfg->target == LT_TGT_NATS_WS) {
        if (seen.pub_via && cfg->pub_via != LT_PV_NATS) {
            fprintf(stderr, "rtgate-load: --target nats-ws publishes via NATS (--publish-via "
                            "nats --nats URL)\n");
            return EXIT_USAGE;
        }
        cfg->pub_via = LT_PV_NATS;
    }
    if (nats && !lt_parse_nats_url(cfg, nats, err, sizeof err)) {
        fprintf(stderr, "rtgate-load: %s\n", err);
        return EXIT_USAGE;
    }
    if (cfg->pub_via == LT_PV_NATS && !nats && cfg->scenario != LT_SC_IDLE) {
        fprintf(stderr, "rtgate-load: publishing via NATS needs --nats nats://127.0.0.1:PORT\n");
        return EXIT_USAGE;
    }
    if (cfg->durable_nats && cfg->pub_via != LT_PV_NATS) {
        fprintf(stderr, "rtgate-load: --durable-nats is for --publish-via nats\n");
        return EXIT_USAGE;
    }

    /* presence, churn and storm run in one process of their own (scen.c). */
    if (lt_scen_own(cfg->scenario))
        return lt_scen_check(cfg) ? 0 : EXIT_USAGE;

    /* Scenario presets for whatever was not given. */
    switch (cfg->scenario) {
    case LT_SC_FANOUT:
        if (!seen.subs)
            cfg->subs = 1000;
        if (seen.channels && cfg->channels != 1) {
            fprintf(stderr, "rtgate-load: fanout uses one channel (use --scenario channels)\n");
            return EXIT_USAGE;
        }
        cfg->channels = 1;
        if (!seen.rate)
            cfg->rate = 200;
        if (!seen.publishers)
            cfg->publishers = 1;
        break;
    case LT_SC_CHANNELS:
        if (!seen.subs)
            cfg->subs = 10000;
        if (!seen.channels)
            cfg->channels = cfg->subs ? cfg->subs : 1;
        if (!seen.rate)
            cfg->rate = 2000;
        if (!seen.publishers)
            cfg->publishers = 1;
        break;
    case LT_SC_IDLE:
        if (!seen.subs)
            cfg->subs = 10000;
        if (seen.publishers && cfg->publishers) {
            fprintf(stderr, "rtgate-load: the idle scenario has no publishers\n");
            return EXIT_USAGE;
        }
        cfg->publishers = 0;
        if (!seen.channels)
            cfg->channels = 1;
        cfg->hold_s = cfg->duration_s;
        cfg->warmup_s = 0;
        break;
    case LT_SC_PRESENCE:
    case LT_SC_CHURN:
    case LT_SC_STORM:
        break; /* handled above */
    }
    if (cfg->scenario != LT_SC_IDLE && (cfg->publishers == 0 || cfg->subs == 0)) {
        fprintf(stderr, "rtgate-load: a delivery scenario needs --subs and --publishers > 0\n");
        return EXIT_USAGE;
    }
    if (lt_nstreams(cfg) > MAX_STREAMS) {
        fprintf(stderr, "rtgate-load: publishers x channels is over %u\n", MAX_STREAMS);
        return EXIT_USAGE;
    }
    size_t pub_len = lt_data_min_size(cfg->codec, UINT32_MAX, cfg->publishers, UINT64_MAX);
    if (cfg->payload > 60000 || pub_len > 60000) {
        fprintf(stderr, "rtgate-load: --payload is at most 60000\n");
        return EXIT_USAGE;
    }

    uint32_t total = lt_total_conns(cfg);
    if (!seen.workers)
        cfg->workers = total ? (total + CONNS_PER_WORKER - 1) / CONNS_PER_WORKER : 1;
    if (cfg->workers < 1)
        cfg->workers = 1;
    if (cfg->workers > MAX_WORKERS) {
        fprintf(stderr, "rtgate-load: more than %u workers needed\n", MAX_WORKERS);
        return EXIT_USAGE;
    }
    for (uint32_t w = 0; w < cfg->workers; w++) {
        struct lt_slice s;
        lt_slice_of(cfg, w, cfg->workers, &s);
        uint32_t n = s.sub_hi - s.sub_lo + (cfg->publishers + cfg->workers - 1) / cfg->workers;
        if (n > MAX_CONNS_WORKER) {
            fprintf(stderr, "rtgate-load: %u connections in one worker; use --workers %u or more\n",
                    n, (total + MAX_CONNS_WORKER - 1) / MAX_CONNS_WORKER);
            return EXIT_USAGE;
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
            if (!lt_add_source(cfg, a, err, sizeof err)) {
                fprintf(stderr, "rtgate-load: %s\n", err);
                return EXIT_USAGE;
            }
        }
    }
    if (cfg->timeout_s == 0) {
        double setup = (double)total / cfg->connect_rate + cfg->setup_timeout_s;
        double run = cfg->scenario == LT_SC_IDLE ? cfg->hold_s
                                                 : cfg->warmup_s + cfg->duration_s + cfg->drain_s;
        cfg->timeout_s = setup + run + 60;
    }
    return 0;
}

/* ------------------------------------------------------------------ */
/* The parent */

struct child {
    pid_t pid;
    int up;   /* read end: worker -> parent */
    int down; /* write end: parent -> worker */
    struct lt_slice slice;
    uint8_t *buf;
    size_t len, cap;
    bool ready, pubdone, result, eof;
};

struct run {
    struct lt_config *cfg;
    struct child *ch;
    uint32_t n;
    uint32_t n_ready, n_pubdone, n_result;
    bool started, measure_sampled, expect_sent, finished, aborting;
    uint64_t ready_conns, planned_conns; /* from READY, for the progress line */
    struct lt_start times;
    uint64_t *accepted; /* per stream, summed */
    uint64_t *unique;   /* per stream, summed */
    uint64_t *ready_on; /* per channel: subscribers that got ready */
    struct lt_result res;
    uint64_t t_fork;
};

static volatile sig_atomic_t parent_signal;

static void on_parent_signal(int sig)
{
    (void)sig;
    parent_signal = 1;
}

static bool raise_fd_limit(uint32_t need)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return false;
    if (rl.rlim_cur >= need)
        return true;
    if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < need)
        rl.rlim_cur = rl.rlim_max;
    else
        rl.rlim_cur = need;
    return setrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur >= need;
}

static bool spawn(struct run *r, uint64_t hard_deadline)
{
    for (uint32_t i = 0; i < r->n; i++) {
        int up[2], down[2];
        if (pipe(up) != 0 || pipe(down) != 0) {
            perror("rtgate-load: pipe");
            return false;
        }
        struct child *c = &r->ch[i];
        lt_slice_of(r->cfg, i, r->n, &c->slice);
        fflush(NULL);
        pid_t pid = fork();
        if (pid < 0) {
            perror("rtgate-load: fork");
            return false;
        }
        if (pid == 0) {
            close(up[0]);
            close(down[1]);
            for (uint32_t j = 0; j < i; j++) {
                close(r->ch[j].up);
                close(r->ch[j].down);
            }
            int rc =
                lt_worker_main(r->cfg, &c->slice, up[1], down[0], hard_deadline + WORKER_GRACE_NS);
            _exit(rc);
        }
        close(up[1]);
        close(down[0]);
        c->pid = pid;
        c->up = up[0];
        c->down = down[1];
    }
    return true;
}

static void broadcast(struct run *r, uint32_t type, const void *body, size_t len)
{
    for (uint32_t i = 0; i < r->n; i++)
        if (!r->ch[i].eof)
            lt_pipe_send(r->ch[i].down, type, body, len);
}

/* Tells every worker what was accepted per channel; each counts its own expected deliveries. */
static void send_expected(struct run *r)
{
    const struct lt_config *cfg = r->cfg;
    uint64_t *per_channel = calloc(cfg->channels, sizeof *per_channel);
    if (!per_channel)
        return;
    for (uint32_t p = 0; p < cfg->publishers; p++)
        for (uint32_t c = 0; c < cfg->channels; c++)
            per_channel[c] += r->accepted[(size_t)p * cfg->channels + c];
    broadcast(r, LT_P_EXPECT, per_channel, (size_t)cfg->channels * sizeof *per_channel);
    free(per_channel);
}

static void start_run(struct run *r)
{
    const struct lt_config *cfg = r->cfg;
    lt_proc_sample(cfg, &r->res.after_setup);
    r->res.time_to_connect_s = (double)(lt_now_ns() - r->t_fork) / 1e9;
    uint64_t t0 = lt_now_ns() + START_LEAD_NS;
    r->times.t0 = t0;
    if (r->ready_conns == 0) { /* nothing to measure: skip to the end */
        r->times.t_measure = r->times.t_end = r->times.t_drain = t0;
    } else if (cfg->scenario == LT_SC_IDLE) {
        r->times.t_measure = t0;
        r->times.t_end = t0 + (uint64_t)(cfg->hold_s * 1e9);
        r->times.t_drain = r->times.t_end;
    } else {
        r->times.t_measure = t0 + (uint64_t)(cfg->warmup_s * 1e9);
        r->times.t_end = r->times.t_measure + (uint64_t)(cfg->duration_s * 1e9);
        r->times.t_drain = r->times.t_end + (uint64_t)(cfg->drain_s * 1e9);
    }
    if (cfg->verbose >= 0)
        fprintf(stderr, "rtgate-load: %llu/%llu connections ready in %.2f s; running\n",
                (unsigned long long)r->ready_conns, (unsigned long long)r->planned_conns,
                r->res.time_to_connect_s);
    broadcast(r, LT_P_START, &r->times, sizeof r->times);
    r->started = true;
    r->measure_sampled = cfg->scenario == LT_SC_IDLE; /* idle has no measured window */
}

static void on_result(struct run *r, const uint8_t *body, size_t len)
{
    size_t ns = lt_nstreams(r->cfg);
    size_t want = sizeof(struct lt_stats) + 2 * sizeof(struct lt_hist) + ns * sizeof(uint64_t);
    if (len != want)
        return;
    struct lt_stats st;
    memcpy(&st, body, sizeof st);
    lt_stats_add(&r->res.st, &st);
    body += sizeof st;
    struct lt_hist *h = malloc(sizeof *h);
    if (!h)
        return;
    memcpy(h, body, sizeof *h);
    lt_hist_merge(&r->res.lat, h);
    body += sizeof *h;
    memcpy(h, body, sizeof *h);
    lt_hist_merge(&r->res.setup, h);
    body += sizeof *h;
    free(h);
    for (size_t i = 0; i < ns; i++) {
        uint64_t v;
        memcpy(&v, body + i * sizeof v, sizeof v);
        r->unique[i] += v;
    }
}

/* Handles one complete message from a worker. */
static void on_child_msg(struct run *r, struct child *c, uint32_t type, const uint8_t *body,
                         size_t len)
{
    size_t ns = lt_nstreams(r->cfg);
    switch (type) {
    case LT_P_READY:
        if (!c->ready && len >= sizeof(struct lt_stats)) {
            c->ready = true;
            r->n_ready++;
            struct lt_stats st;
            memcpy(&st, body, sizeof st);
            r->ready_conns += st.conns_ready;
            r->planned_conns += st.conns_planned;
            if (len == sizeof st + (size_t)r->cfg->channels * sizeof(uint32_t)) {
                for (uint32_t i = 0; i < r->cfg->channels; i++) {
                    uint32_t v;
                    memcpy(&v, body + sizeof st + i * sizeof v, sizeof v);
                    r->ready_on[i] += v;
                }
            } else {
                r->res.workers_failed++; /* could not say which subscribers are there */
            }
        }
        break;
    case LT_P_PUBDONE:
        if (!c->pubdone && len == ns * sizeof(uint64_t)) {
            c->pubdone = true;
            r->n_pubdone++;
            for (size_t i = 0; i < ns; i++) {
                uint64_t v;
                memcpy(&v, body + i * sizeof v, sizeof v);
                r->accepted[i] += v;
            }
        }
        break;
    case LT_P_RESULT:
        if (!c->result) {
            c->result = true;
            r->n_result++;
            on_result(r, body, len);
        }
        break;
    default:
        break;
    }
}

/* A worker that died counts as having passed every phase, with nothing to add. */
static void child_gone(struct run *r, struct child *c)
{
    if (c->eof)
        return;
    c->eof = true;
    if (!c->result)
        r->res.workers_failed++;
    if (!c->ready) {
        c->ready = true;
        r->n_ready++;
    }
    if (!c->pubdone) {
        c->pubdone = true;
        r->n_pubdone++;
    }
    if (!c->result) {
        c->result = true;
        r->n_result++;
    }
}

static void read_child(struct run *r, struct child *c)
{
    if (c->cap - c->len < 65536) {
        size_t ncap = c->cap ? c->cap * 2 : 131072;
        uint8_t *nb = realloc(c->buf, ncap);
        if (!nb) {
            child_gone(r, c);
            return;
        }
        c->buf = nb;
        c->cap = ncap;
    }
    ssize_t n = read(c->up, c->buf + c->len, c->cap - c->len);
    if (n <= 0) {
        if (n < 0 && errno == EINTR)
            return;
        child_gone(r, c);
        return;
    }
    c->len += (size_t)n;
    size_t off = 0;
    while (c->len - off >= sizeof(struct lt_pipe_hdr)) {
        struct lt_pipe_hdr h;
        memcpy(&h, c->buf + off, sizeof h);
        if (h.len > (256u << 20)) {
            child_gone(r, c);
            return;
        }
        if (c->len - off - sizeof h < h.len)
            break;
        on_child_msg(r, c, h.type, c->buf + off + sizeof h, (size_t)h.len);
        off += sizeof h + (size_t)h.len;
    }
    memmove(c->buf, c->buf + off, c->len - off);
    c->len -= off;
}

static void parent_loop(struct run *r, uint64_t hard_deadline)
{
    struct pollfd *pfd = calloc(r->n, sizeof *pfd);
    if (!pfd)
        return;
    uint64_t next_progress = lt_now_ns() + LT_NS_PER_S;
    while (!r->finished) {
        uint64_t now = lt_now_ns();
        if ((now >= hard_deadline || parent_signal) && !r->aborting) {
            /* Ask the workers for what they have; they get a few seconds. */
            r->res.timed_out = true;
            r->aborting = true;
            broadcast(r, LT_P_ABORT, NULL, 0);
            hard_deadline = now + ABORT_GRACE_NS;
            parent_signal = 0;
        } else if (r->aborting && (now >= hard_deadline || parent_signal)) {
            break;
        }
        if (!r->started && r->n_ready == r->n && !r->aborting)
            start_run(r);
        if (r->started && !r->measure_sampled && r->cfg->scenario != LT_SC_IDLE &&
            now >= r->times.t_measure) {
            lt_proc_sample(r->cfg, &r->res.measure_start);
            r->measure_sampled = true;
        }
        if (r->n_pubdone == r->n && !r->expect_sent) {
            send_expected(r);
            r->expect_sent = true;
        }
        if (r->n_result == r->n) {
            lt_proc_sample(r->cfg, &r->res.end);
            if (!r->aborting)
                broadcast(r, LT_P_FINISH, NULL, 0);
            r->finished = true;
            break;
        }
        uint64_t until = hard_deadline;
        if (r->started && !r->measure_sampled && r->times.t_measure < until)
            until = r->times.t_measure;
        if (next_progress < until)
            until = next_progress;
        int tmo = until > now ? (int)((until - now + LT_NS_PER_MS - 1) / LT_NS_PER_MS) : 0;
        nfds_t np = 0;
        for (uint32_t i = 0; i < r->n; i++)
            if (!r->ch[i].eof) {
                pfd[np].fd = r->ch[i].up;
                pfd[np].events = POLLIN;
                pfd[np].revents = 0;
                np++;
            }
        int n = poll(pfd, np, tmo);
        if (n < 0 && errno != EINTR)
            break;
        for (nfds_t k = 0; n > 0 && k < np; k++) {
            if (!pfd[k].revents)
                continue;
            for (uint32_t i = 0; i < r->n; i++)
                if (r->ch[i].up == pfd[k].fd && !r->ch[i].eof)
                    read_child(r, &r->ch[i]);
        }
        now = lt_now_ns();
        if (now >= next_progress) {
            next_progress = now + LT_NS_PER_S;
            if (r->cfg->verbose > 0)
                fprintf(stderr, "rtgate-load: ready %u/%u, pubdone %u, results %u\n", r->n_ready,
                        r->n, r->n_pubdone, r->n_result);
        }
    }
    free(pfd);
}

/*
 * Lost and unexpected per stream: accepted x subscribers that got ready on
 * that channel, against the unique deliveries seen. Subscribers that never
 * got ready are setup errors, not losses; ones the server closed later do
 * count their missing deliveries as lost.
 */
static void finish_counts(struct run *r)
{
    const struct lt_config *cfg = r->cfg;
    struct lt_result *res = &r->res;
    res->expected = 0;
    res->lost = 0;
    res->unexpected = 0;
    for (uint32_t p = 0; p < cfg->publishers; p++)
        for (uint32_t c = 0; c < cfg->channels; c++) {
            size_t k = (size_t)p * cfg->channels + c;
            uint64_t exp = r->accepted[k] * r->ready_on[c];
            res->expected += exp;
            if (exp > r->unique[k])
                res->lost += exp - r->unique[k];
            else
                res->unexpected += r->unique[k] - exp;
        }
    const struct lt_stats *st = &res->st;
    res->errors = st->connect_errors + st->handshake_failures + st->setup_errors +
                  st->server_closes + st->protocol_errors + st->error_msgs + st->pub_errors +
                  st->pub_no_reply + st->foreign_msgs + st->seq_violations + res->unexpected +
                  (uint64_t)res->workers_failed + (res->timed_out ? 1 : 0);
    if (cfg->scenario == LT_SC_IDLE)
        res->ok = res->errors == 0 && st->conns_ready == st->conns_planned;
    else
        res->ok =
            res->lost == 0 && st->dup == 0 && st->ooo == 0 && res->errors == 0 && res->expected > 0;
}

static double cpu_seconds(void)
{
    struct rusage self, kids;
    getrusage(RUSAGE_SELF, &self);
    getrusage(RUSAGE_CHILDREN, &kids);
    return (double)(self.ru_utime.tv_sec + self.ru_stime.tv_sec + kids.ru_utime.tv_sec +
                    kids.ru_stime.tv_sec) +
           (double)(self.ru_utime.tv_usec + self.ru_stime.tv_usec + kids.ru_utime.tv_usec +
                    kids.ru_stime.tv_usec) /
               1e6;
}

static void summary(const struct lt_config *cfg, const struct lt_result *r)
{
    const struct lt_stats *st = &r->st;
    fprintf(stderr,
            "rtgate-load: %s: %llu/%llu connected (%.2f s); published %llu (ok %llu, 429 %llu); "
            "delivered %llu of %llu expected; lost %llu dup %llu ooo %llu errors %llu\n",
            lt_scenario_name(cfg->scenario), (unsigned long long)st->conns_ready,
            (unsigned long long)st->conns_planned, r->time_to_connect_s,
            (unsigned long long)st->published, (unsigned long long)st->pub_ok,
            (unsigned long long)st->rate_limited, (unsigned long long)st->unique,
            (unsigned long long)r->expected, (unsigned long long)r->lost,
            (unsigned long long)st->dup, (unsigned long long)st->ooo,
            (unsigned long long)r->errors);
    if (cfg->scenario != LT_SC_IDLE) {
        char p50[32], p99[32], p999[32], pmax[32];
        lt_fmt_latency(lt_hist_percentile(&r->lat, 50), p50, sizeof p50);
        lt_fmt_latency(lt_hist_percentile(&r->lat, 99), p99, sizeof p99);
        lt_fmt_latency(lt_hist_percentile(&r->lat, 99.9), p999, sizeof p999);
        lt_fmt_latency(r->lat.max, pmax, sizeof pmax);
        fprintf(stderr, "rtgate-load: latency p50 %s, p99 %s, p99.9 %s, max %s (%llu samples)\n",
                p50, p99, p999, pmax, (unsigned long long)r->lat.total);
    }
    if (st->rate_limited)
        fprintf(stderr,
                "rtgate-load: warning: %llu publishes were rate limited: raise the "
                "gateway's --pub-rate/--pub-burst/--msg-rate or add --publishers\n",
                (unsigned long long)st->rate_limited);
    if (st->skipped_stalled)
        fprintf(stderr,
                "rtgate-load: warning: %llu publish slots skipped (publisher backlogged or "
                "not connected)\n",
                (unsigned long long)st->skipped_stalled);
    if (st->drain_timeouts && r->lost)
        fprintf(stderr,
                "rtgate-load: the drain ended by the clock (--drain %.1f s): some of the %llu "
                "lost may only have been late\n",
                cfg->drain_s, (unsigned long long)r->lost);
    if (cfg->scenario != LT_SC_IDLE && r->expected == 0)
        fprintf(stderr, "rtgate-load: nothing was accepted for delivery: not ok\n");
}

static int run(struct lt_config *cfg)
{
    signal(SIGPIPE, SIG_IGN);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_parent_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    uint32_t per_worker = lt_total_conns(cfg) / cfg->workers + cfg->publishers + 64;
    if (!raise_fd_limit(per_worker)) {
        fprintf(stderr, "rtgate-load: the fd limit is below %u; use more --workers\n", per_worker);
        return EXIT_USAGE;
    }
    struct run *r = calloc(1, sizeof *r);
    size_t ns = lt_nstreams(cfg);
    if (!r)
        return 1;
    r->cfg = cfg;
    r->n = cfg->workers;
    r->ch = calloc(r->n, sizeof *r->ch);
    r->accepted = calloc(ns ? ns : 1, sizeof *r->accepted);
    r->unique = calloc(ns ? ns : 1, sizeof *r->unique);
    r->ready_on = calloc(cfg->channels, sizeof *r->ready_on);
    if (!r->ch || !r->accepted || !r->unique || !r->ready_on)
        return 1;
    lt_hist_init(&r->res.lat);
    lt_hist_init(&r->res.setup);

    lt_proc_sample(cfg, &r->res.before);
    if (cfg->n_server_pids && !r->res.before.ok)
        fprintf(stderr, "rtgate-load: warning: cannot read /proc for --server-pid\n");
    uint64_t hard_deadline = lt_now_ns() + (uint64_t)(cfg->timeout_s * 1e9);
    r->t_fork = lt_now_ns();
    bool spawned = spawn(r, hard_deadline);
    if (spawned)
        parent_loop(r, hard_deadline);
    /* Workers exit on FINISH; after a timeout or a failure they are killed. */
    uint64_t reap_until = lt_now_ns() + 10 * LT_NS_PER_S;
    for (uint32_t i = 0; i < r->n; i++) {
        struct child *c = &r->ch[i];
        if (c->pid <= 0)
            continue;
        if (!r->finished || !spawned)
            kill(c->pid, SIGKILL);
        int status = 0;
        while (waitpid(c->pid, &status, WNOHANG) == 0) {
            if (lt_now_ns() > reap_until) {
                kill(c->pid, SIGKILL);
                waitpid(c->pid, &status, 0);
                break;
            }
            usleep(2000);
        }
        if (WIFSIGNALED(status) || (WIFEXITED(status) && WEXITSTATUS(status) != 0)) {
            if (c->result && r->finished)
                r->res.workers_failed++;
        }
        close(c->up);
        close(c->down);
        free(c->buf);
    }
    if (!spawned)
        r->res.workers_failed = (int)r->n;
    if (!r->res.end.at_ns)
        lt_proc_sample(cfg, &r->res.end);
    finish_counts(r);
    r->res.client_cpu_s = cpu_seconds();

    lt_report_json(stdout, cfg, &r->res);
    fflush(stdout);
    if (cfg->json_path) {
        FILE *f = fopen(cfg->json_path, "a");
        if (f) {
            lt_report_json(f, cfg, &r->res);
            fclose(f);
        } else {
            fprintf(stderr, "rtgate-load: cannot append to %s: %s\n", cfg->json_path,
                    strerror(errno));
        }
    }
    if (cfg->svg_path && !lt_report_svg(cfg->svg_path, cfg, &r->res))
        fprintf(stderr, "rtgate-load: cannot write %s\n", cfg->svg_path);
    if (cfg->verbose >= 0)
        summary(cfg, &r->res);
    int rc = r->res.ok ? 0 : 1;
    free(r->ch);
    free(r->accepted);
    free(r->unique);
    free(r->ready_on);
    free(r);
    return rc;
}

int main(int argc, char **argv)
{
    struct lt_config *cfg = malloc(sizeof *cfg);
    if (!cfg)
        return 1;
    int rc = parse_args(cfg, argc, argv);
    if (rc == 3) {
        usage(stdout);
        rc = 0;
    } else if (rc == 4) {
        rc = lt_selftest();
    } else if (rc == 0) {
        rc = lt_scen_own(cfg->scenario) ? lt_scen_run(cfg) : run(cfg);
    }
    free(cfg);
    return rc;
}
