/*
 * rtgate-pub: publishes one message to an rtgate channel through NATS, the
 * way a backend does (docs/nats.md).
 *
 *   rtgate-pub [--config FILE] [--nats URL] [--msg-id ID]
 *              [--encoding json|msgpack|binary] [--ephemeral | --durable]
 *              [--nats-ca FILE] [--nats-tls-cert FILE --nats-tls-key FILE]
 *              [--nats-creds FILE | --nats-nkey FILE] CHANNEL [DATA]
 *
 * DATA (or stdin when absent) is the raw payload. A durable channel goes
 * through JetStream (subject rtgate.dur.CHANNEL) and prints `seq=N dup=B`;
 * an ephemeral one is published with core NATS on rtgate.eph.CHANNEL and
 * prints `dup=B` (an --msg-id is claimed in the rtgate_dedup bucket first, as
 * the gateways do). The headers are the gateways' own, so a msg_id is
 * deduplicated against client publishes of the same id on that channel.
 *
 * Which kind a channel is comes from the gateways' own config file
 * (--config: its `ephemeral` patterns, read by the gateway's parser,
 * gateway/config.c), so that a publish cannot go to the subject of the other
 * kind, where no gateway would ever deliver it; --ephemeral / --durable
 * then only confirm it (a contradiction is an error). Without --config the
 * channel is durable unless --ephemeral. The URL: --nats, else $NATS_URL,
 * else the file's `nats`. The TLS and credential flags are the gateway's
 * (nats_security.h), from the command line, else from the file.
 *
 * Exit status: 0 published (or duplicate), 1 failed, 2 bad usage.
 */
#include "gw.h"
#include "nats_security.h"
#include "nats_wire.h"
#include "protocol.h"

#include <nats/nats.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_DATA (64u << 20)

struct args {
    const char *url, *msg_id, *encoding, *channel, *data, *config;
    bool ephemeral, durable; /* as asked on the command line */
    struct fo_nats_security sec;
};

static int usage(const char *why)
{
    if (why)
        fprintf(stderr, "rtgate-pub: %s\n", why);
    fprintf(stderr,
            "usage: rtgate-pub [--config FILE] [--nats URL] [--msg-id ID]\n"
            "                  [--encoding json|msgpack|binary] [--ephemeral | --durable]\n"
            "                  [--nats-ca FILE] [--nats-tls-cert FILE --nats-tls-key FILE]\n"
            "                  [--nats-creds FILE | --nats-nkey FILE] CHANNEL [DATA]\n"
            "DATA is read from stdin when absent. Durable channels print seq=N dup=B.\n"
            "FILE: the gateways' config; its ephemeral patterns decide the channel's kind.\n"
            "URL: --nats, else $NATS_URL, else the file's nats.\n");
    return 2;
}

static int parse_args(int argc, char **argv, struct args *a)
{
    memset(a, 0, sizeof(*a));
    a->encoding = "json";
    int i = 1;
    for (; i < argc && !strncmp(argv[i], "--", 2); i++) {
        const char *o = argv[i];
        if (!strcmp(o, "--ephemeral") || !strcmp(o, "--durable")) {
            a->ephemeral = a->ephemeral || !strcmp(o, "--ephemeral");
            a->durable = a->durable || !strcmp(o, "--durable");
            continue;
        }
        if (!strcmp(o, "--help"))
            return usage(NULL);
        if (i + 1 >= argc)
            return usage("an option is missing its value");
        const char *v = argv[++i];
        if (!strcmp(o, "--nats"))
            a->url = v;
        else if (!strcmp(o, "--msg-id"))
            a->msg_id = v;
        else if (!strcmp(o, "--encoding"))
            a->encoding = v;
        else if (!strcmp(o, "--config"))
            a->config = v;
        else if (nsec_set_flag(&a->sec, o, v) <= 0)
            return usage("unknown option, or a file name that is empty or too long");
    }
    if (i >= argc || argc - i > 2)
        return usage("give CHANNEL and at most one DATA");
    a->channel = argv[i];
    a->data = i + 1 < argc ? argv[i + 1] : NULL;
    if (a->ephemeral && a->durable)
        return usage("--ephemeral and --durable contradict each other");
    return 0;
}

/*
 * With --config: the URL (when neither --nats nor $NATS_URL gave one) and
 * the channel's kind, from the gateways' file, read by the gateway's own
 * parser. A kind asked on the command line that the file contradicts is a
 * usage error: that publish would never reach a client.
 */
static int apply_config(struct args *a, char *url, size_t url_cap)
{
    if (!a->config)
        return 0;
    struct gw_config cfg;
    char prog[] = "rtgate-pub", flag[] = "--config";
    char *argv[] = {prog, flag, (char *)(uintptr_t)a->config, NULL};
    if (gw_config_parse(&cfg, 3, argv) != RT_OK) {
        gw_config_free_parsed(&cfg);
        return usage("the config file cannot be used (see above)");
    }
    bool ephemeral = false;
    for (size_t i = 0; i < cfg.n_ephemeral && !ephemeral; i++)
        ephemeral = proto_pattern_match(cfg.ephemeral[i], a->channel, strlen(a->channel));
    if (!a->url && cfg.nats_url[0]) {
        snprintf(url, url_cap, "%s", cfg.nats_url);
        a->url = url;
    }
    struct fo_nats_security none;
    memset(&none, 0, sizeof(none));
    if (!memcmp(&a->sec, &none, sizeof(none))) /* no --nats-* flag: the file's, if any */
        a->sec = cfg.nats_security;
    gw_config_free_parsed(&cfg);
    if ((a->ephemeral && !ephemeral) || (a->durable && ephemeral)) {
        fprintf(stderr, "rtgate-pub: %s is %s under %s's ephemeral patterns\n", a->channel,
                ephemeral ? "ephemeral" : "durable", a->config);
        return 2;
    }
    a->ephemeral = ephemeral;
    return 0;
}

static enum proto_payload_enc encoding_of(const char *name)
{
    if (!strcmp(name, "json"))
        return PROTO_PAYLOAD_JSON;
    if (!strcmp(name, "msgpack"))
        return PROTO_PAYLOAD_MSGPACK;
    if (!strcmp(name, "binary"))
        return PROTO_PAYLOAD_BINARY;
    return PROTO_PAYLOAD_NONE;
}

/* All of stdin, up to MAX_DATA. */
static char *read_stdin(size_t *len)
{
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    while (buf) {
        size_t got = fread(buf + n, 1, cap - n, stdin);
        n += got;
        if (got == 0)
            break;
        if (n == cap) {
            char *nb = cap < MAX_DATA ? realloc(buf, cap * 2) : NULL;
            if (!nb) {
                free(buf);
                return NULL;
            }
            buf = nb;
            cap *= 2;
        }
    }
    *len = n;
    return buf;
}

static natsStatus set_headers(natsMsg *m, const struct args *a, bool durable)
{
    char id[3 * PROTO_MSG_ID_MAX + 1], scoped[PROTO_CHANNEL_MAX + sizeof(id) + 2];
    natsStatus s = natsMsgHeader_Set(m, NW_H_ENCODING, a->encoding);
    if (!s)
        s = natsMsgHeader_Set(m, NW_H_CHANNEL, a->channel);
    if (!s && a->msg_id) {
        proto_pct_encode(a->msg_id, strlen(a->msg_id), id, sizeof(id));
        snprintf(scoped, sizeof(scoped), "%s:%s", a->channel, id);
        s = natsMsgHeader_Set(m, NW_H_MSG_ID, id);
        if (!s && durable)
            s = natsMsgHeader_Set(m, NW_H_NATS_MSG_ID, scoped);
    }
    return s;
}

static int publish_durable(natsConnection *nc, jsCtx *js, natsMsg *m)
{
    (void)nc;
    jsPubAck *pa = NULL;
    jsErrCode ec = 0;
    natsStatus s = js_PublishMsg(&pa, js, m, NULL, &ec);
    if (s != NATS_OK) {
        fprintf(stderr, "rtgate-pub: JetStream publish failed: %s (code %d)\n",
                natsStatus_GetText(s), (int)ec);
        return 1;
    }
    printf("seq=%llu dup=%s\n", (unsigned long long)pa->Sequence, pa->Duplicate ? "true" : "false");
    jsPubAck_Destroy(pa);
    return 0;
}

/* Claims the msg_id like a gateway does; 1 new, 0 duplicate, -1 failed. */
static int claim_id(jsCtx *js, const struct args *a)
{
    char subj[512];
    if (!nw_claim_subject(subj, sizeof(subj), a->channel, strlen(a->channel), a->msg_id,
                          strlen(a->msg_id)))
        return -1;
    jsPubOptions po;
    jsPubOptions_Init(&po);
    po.ExpectNoMessage = true;
    jsErrCode ec = 0;
    jsPubAck *pa = NULL;
    natsStatus s = js_Publish(&pa, js, subj, NULL, 0, &po, &ec);
    jsPubAck_Destroy(pa);
    if (s == NATS_OK)
        return 1;
    if (ec == JSStreamWrongLastSequenceErr)
        return 0;
    fprintf(stderr, "rtgate-pub: msg_id claim failed: %s (code %d)\n", natsStatus_GetText(s),
            (int)ec);
    return -1;
}

static int publish_ephemeral(natsConnection *nc, jsCtx *js, natsMsg *m, const struct args *a)
{
    if (a->msg_id) {
        int c = claim_id(js, a);
        if (c <= 0) {
            if (c == 0)
                printf("dup=true\n");
            return c == 0 ? 0 : 1;
        }
    }
    natsStatus s = natsConnection_PublishMsg(nc, m);
    if (!s)
        s = natsConnection_FlushTimeout(nc, 5000);
    if (s != NATS_OK) {
        fprintf(stderr, "rtgate-pub: publish failed: %s\n", natsStatus_GetText(s));
        return 1;
    }
    printf("dup=false\n");
    return 0;
}

static int publish(const struct args *a, const char *data, size_t len)
{
    natsConnection *nc = NULL;
    jsCtx *js = NULL;
    natsMsg *m = NULL;
    char subj[PROTO_CHANNEL_MAX + 32];
    snprintf(subj, sizeof(subj), "%s%s", a->ephemeral ? NW_SUBJ_EPH : NW_SUBJ_DUR, a->channel);
    int rc = 1;
    natsOptions *o = NULL;
    char where[1024];
    natsStatus s = natsOptions_Create(&o);
    if (!s) /* the servers, TLS and credentials, as the gateways take them */
        s = nsec_natsc_options(o, &a->sec, a->url);
    if (!s)
        s = natsConnection_Connect(&nc, o);
    if (!s)
        s = natsConnection_JetStream(&js, nc, NULL);
    if (!s)
        s = natsMsg_Create(&m, subj, NULL, data, (int)len);
    if (!s)
        s = set_headers(m, a, !a->ephemeral);
    if (s)
        fprintf(stderr, "rtgate-pub: %s: %s\n", nsec_urls_for_log(a->url, where, sizeof(where)),
                natsStatus_GetText(s));
    else
        rc = a->ephemeral ? publish_ephemeral(nc, js, m, a) : publish_durable(nc, js, m);
    natsMsg_Destroy(m);
    jsCtx_Destroy(js);
    natsConnection_Destroy(nc);
    natsOptions_Destroy(o);
    nats_Close();
    return rc;
}

/* Checks what the gateways would drop anyway, so the operator hears of it. */
static int check_input(const struct args *a, const char *data, size_t len)
{
    if (!proto_channel_valid(a->channel, strlen(a->channel)))
        return usage("invalid channel name (1-128 bytes of [A-Za-z0-9_:.-], dot-separated)");
    if (a->msg_id && (!*a->msg_id || strlen(a->msg_id) > PROTO_MSG_ID_MAX))
        return usage("--msg-id must be 1-64 bytes");
    enum proto_payload_enc enc = encoding_of(a->encoding);
    if (enc == PROTO_PAYLOAD_NONE)
        return usage("--encoding must be json, msgpack or binary");
    struct proto_payload p = {enc, (const uint8_t *)data, len, false};
    struct proto_buf b;
    proto_buf_init(&b, 0);
    rt_status st = enc == PROTO_PAYLOAD_BINARY ? RT_OK : proto_payload_convert(&p, enc, &b);
    proto_buf_free(&b);
    if (st != RT_OK)
        return usage("DATA is not one valid value of that encoding");
    return 0;
}

int main(int argc, char **argv)
{
    struct args a;
    char url[sizeof(((struct gw_config *)0)->nats_url)];
    int rc = parse_args(argc, argv, &a);
    if (!rc && !a.url && getenv("NATS_URL") && *getenv("NATS_URL"))
        a.url = getenv("NATS_URL");
    if (!rc)
        rc = apply_config(&a, url, sizeof(url));
    if (!rc && !a.url)
        rc = usage("no NATS URL: give --nats URL, set NATS_URL, or a --config with nats");
    if (rc)
        return rc;
    size_t len = a.data ? strlen(a.data) : 0;
    char *in = a.data ? NULL : read_stdin(&len);
    if (!a.data && !in) {
        fprintf(stderr, "rtgate-pub: cannot read stdin\n");
        return 1;
    }
    const char *data = a.data ? a.data : in;
    rc = check_input(&a, data, len);
    if (!rc)
        rc = publish(&a, data, len);
    free(in);
    return rc;
}
