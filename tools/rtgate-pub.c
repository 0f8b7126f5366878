/*
 * rtgate-pub: publishes one message to an rtgate channel through NATS, the
 * way a backend does (docs/nats.md).
 *
 *   rtgate-pub --nats URL [--msg-id ID] [--encoding json|msgpack|binary]
 *              [--ephemeral] [--nats-ca FILE] [--nats-tls-cert FILE --nats-tls-key FILE]
 *              [--nats-creds FILE | --nats-nkey FILE] CHANNEL [DATA]
 *
 * DATA (or stdin when absent) is the raw payload. A durable channel goes
 * through JetStream (subject rtgate.dur.CHANNEL) and prints `seq=N dup=B`;
 * --ephemeral publishes with core NATS on rtgate.eph.CHANNEL and prints
 * `dup=B` (an --msg-id is claimed in the rtgate_dedup bucket first, as the
 * gateways do). The headers are the gateways' own, so a msg_id is
 * deduplicated against client publishes of the same id on that channel.
 * The TLS and credential flags are the gateway's (nats_security.h).
 * Exit status: 0 published (or duplicate), 1 failed, 2 bad usage.
 */
#include "nats_security.h"
#include "protocol.h"

#include <nats/nats.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_DATA (64u << 20)

struct args {
    const char *url, *msg_id, *encoding, *channel, *data;
    bool ephemeral;
    struct fo_nats_security sec;
};

static int usage(const char *why)
{
    if (why)
        fprintf(stderr, "rtgate-pub: %s\n", why);
    fprintf(stderr,
            "usage: rtgate-pub --nats URL [--msg-id ID] [--encoding json|msgpack|binary]\n"
            "                  [--ephemeral] [--nats-ca FILE] [--nats-tls-cert FILE\n"
            "                  --nats-tls-key FILE] [--nats-creds FILE | --nats-nkey FILE]\n"
            "                  CHANNEL [DATA]\n"
            "DATA is read from stdin when absent. Durable channels print seq=N dup=B.\n");
    return 2;
}

static int parse_args(int argc, char **argv, struct args *a)
{
    memset(a, 0, sizeof(*a));
    a->encoding = "json";
    int i = 1;
    for (; i < argc && !strncmp(argv[i], "--", 2); i++) {
        const char *o = argv[i];
        if (!strcmp(o, "--ephemeral")) {
            a->ephemeral = true;
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
        else if (nsec_set_flag(&a->sec, o, v) <= 0)
            return usage("unknown option, or a file name that is empty or too long");
    }
    if (i >= argc || argc - i > 2)
        return usage("give CHANNEL and at most one DATA");
    a->channel = argv[i];
    a->data = i + 1 < argc ? argv[i + 1] : NULL;
    if (!a->url)
        return usage("--nats URL is required");
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
    natsStatus s = natsMsgHeader_Set(m, "Rtgate-Encoding", a->encoding);
    if (!s)
        s = natsMsgHeader_Set(m, "Rtgate-Channel", a->channel);
    if (!s && a->msg_id) {
        proto_pct_encode(a->msg_id, strlen(a->msg_id), id, sizeof(id));
        snprintf(scoped, sizeof(scoped), "%s:%s", a->channel, id);
        s = natsMsgHeader_Set(m, "Rtgate-Msg-Id", id);
        if (!s && durable)
            s = natsMsgHeader_Set(m, "Nats-Msg-Id", scoped);
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
    int o = snprintf(subj, sizeof(subj), "$KV.rtgate_dedup.%s.", a->channel);
    for (char *p = subj + sizeof("$KV.rtgate_dedup.") - 1; *p; p++)
        *p = *p == ':' ? '=' : *p;
    for (const char *p = a->msg_id; *p && o + 3 < (int)sizeof(subj); p++)
        o += snprintf(subj + o, sizeof(subj) - (size_t)o, "%02x", (unsigned char)*p);
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
    snprintf(subj, sizeof(subj), "%s%s", a->ephemeral ? "rtgate.eph." : "rtgate.dur.", a->channel);
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
    int rc = parse_args(argc, argv, &a);
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
