/*
 * nats_msg.c: rtgate's messages to and from NATS messages. A NATS message's
 * headers (nats.c's, or an HMSG's raw block read by the loop reader), its
 * msg_id, ts and payload encoding into a fo_msg (payloads parsed and
 * validated once here), and a client publish or an ephemeral msg_id claim
 * into a natsMsg with the headers backends read (docs/nats.md). Any thread:
 * nothing here is shared until the caller hands it over.
 */
#include "nats_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define HVAL_MAX (3 * PROTO_MSG_ID_MAX + 1) /* a pct-encoded msg_id is the longest */

/* See nats_int.h. Any thread. */
bool nats__parse_u64(const char *s, uint64_t *out)
{
    if (!s || *s < '0' || *s > '9')
        return false;
    char *end = NULL;
    unsigned long long v = strtoull(s, &end, 10);
    if (*end)
        return false;
    *out = v;
    return true;
}

/* 1: found (copied into buf), 0: absent, -1: longer than buf. */
static int hget(const struct msg_headers *h, const char *key, char *buf, size_t cap)
{
    const char *v = NULL;
    size_t n = 0;
    if (h->m) {
        if (natsMsgHeader_Get(h->m, key, &v) != NATS_OK || !v)
            return 0;
        n = strlen(v);
    } else if (!nw_hdr_get(h->raw, h->raw_len, key, &v, &n)) {
        return 0;
    }
    if (n >= cap)
        return -1;
    memcpy(buf, v, n);
    buf[n] = 0;
    return 1;
}

/* See nats_int.h. Any thread. */
bool nats__hget_u64(const struct msg_headers *h, const char *key, uint64_t *out)
{
    char v[32];
    return hget(h, key, v, sizeof(v)) > 0 && nats__parse_u64(v, out);
}

/* See nats_int.h. Any thread. */
bool nats__hdr_u64(natsMsg *m, const char *key, uint64_t *out)
{
    struct msg_headers h = {m, NULL, 0};
    return nats__hget_u64(&h, key, out);
}

/* Rtgate-Encoding: json (default), msgpack or binary; anything else is invalid. */
static enum proto_payload_enc hdr_encoding(const struct msg_headers *h)
{
    char v[16];
    int r = hget(h, NW_H_ENCODING, v, sizeof(v));
    if (r < 0)
        return PROTO_PAYLOAD_NONE;
    if (r == 0 || !strcmp(v, "json"))
        return PROTO_PAYLOAD_JSON;
    if (!strcmp(v, "msgpack"))
        return PROTO_PAYLOAD_MSGPACK;
    if (!strcmp(v, "binary"))
        return PROTO_PAYLOAD_BINARY;
    return PROTO_PAYLOAD_NONE;
}

static const char *encoding_name(enum proto_payload_enc enc)
{
    switch (enc) {
    case PROTO_PAYLOAD_MSGPACK:
        return "msgpack";
    case PROTO_PAYLOAD_BINARY:
        return "binary";
    default:
        return "json";
    }
}

static int hex_val(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/* Inverse of proto_pct_encode; false if the result is not a usable msg_id. */
static bool pct_decode(const char *in, char *out, size_t *len)
{
    size_t o = 0;
    for (size_t i = 0; in[i]; i++) {
        if (o == PROTO_MSG_ID_MAX)
            return false;
        int hi = in[i] == '%' ? hex_val(in[i + 1]) : -1;
        int lo = hi >= 0 ? hex_val(in[i + 2]) : -1;
        if (lo >= 0) {
            out[o++] = (char)(hi << 4 | lo);
            i += 2;
        } else {
            out[o++] = in[i];
        }
    }
    *len = o;
    return o > 0 && proto_utf8_valid(out, o);
}

/* The message's msg_id: Rtgate-Msg-Id (ours), else Nats-Msg-Id (a backend's). */
static size_t msg_id_of(const struct msg_headers *h, char out[PROTO_MSG_ID_MAX + 1])
{
    char v[HVAL_MAX];
    size_t len = 0;
    if (hget(h, NW_H_MSG_ID, v, sizeof(v)) > 0 && pct_decode(v, out, &len))
        return len;
    if (hget(h, NW_H_NATS_MSG_ID, v, sizeof(v)) <= 0)
        return 0;
    len = strlen(v);
    if (len == 0 || len > PROTO_MSG_ID_MAX || !proto_utf8_valid(v, len))
        return 0;
    memcpy(out, v, len);
    return len;
}

/* Nats-Time-Stamp (RFC 3339, UTC) in ms, or 0. */
static uint64_t parse_stamp(const char *s)
{
    struct tm tm;
    memset(&tm, 0, sizeof(tm));
    int ms = 0;
    if (!s || sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d.%3d", &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
                     &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &ms) < 6)
        return 0;
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    time_t t = timegm(&tm);
    return t < 0 ? 0 : (uint64_t)t * 1000u + (uint64_t)ms;
}

/* When the message was accepted: Rtgate-Ts, else the stream's time, else now. */
static uint64_t ts_of(const struct msg_headers *h)
{
    uint64_t ts = 0;
    char v[64];
    if (nats__hget_u64(h, NW_H_TS, &ts) && ts)
        return ts;
    if (hget(h, NW_H_TIME, v, sizeof(v)) > 0 && (ts = parse_stamp(v)) != 0)
        return ts;
    return rt_wall_ms();
}

/*
 * A fan-out message for a NATS message of channel (live or read back). JSON
 * and msgpack payloads are parsed once here; JSON is kept in its canonical
 * form (proto_payload.canonical), so JSON frames copy it without parsing it
 * again. An invalid payload gives a message with payload NONE (counted by
 * the caller), so a durable chain keeps its seq. NULL on NOMEM. Any thread:
 * the message is not shared until the loop takes it.
 */
struct fo_msg *nats__msg_make(struct nats_engine *e, const struct msg_headers *h,
                              const uint8_t *data, size_t data_len, const char *channel, size_t len,
                              bool durable, uint64_t seq, bool *invalid)
{
    char id[PROTO_MSG_ID_MAX + 1];
    size_t id_len = msg_id_of(h, id);
    struct proto_payload p = {hdr_encoding(h), data, data_len, false};
    struct proto_buf b;
    proto_buf_init(&b, 0);
    bool ok = p.enc == PROTO_PAYLOAD_BINARY;
    if (p.enc == PROTO_PAYLOAD_JSON || p.enc == PROTO_PAYLOAD_MSGPACK)
        ok = proto_payload_convert(&p, p.enc, &b) == RT_OK;
    if (ok && p.enc == PROTO_PAYLOAD_JSON)
        p = (struct proto_payload){PROTO_PAYLOAD_JSON, b.data, b.len, true};
    *invalid = !ok;
    if (!ok)
        p = (struct proto_payload){PROTO_PAYLOAD_NONE, NULL, 0, false};
    struct fo_msg *m = fo__msg_create(channel, len, id_len ? id : NULL, id_len, &p, durable, seq,
                                      ts_of(h), e->fo->cfg.frame_headroom);
    proto_buf_free(&b);
    return m;
}

/* A message read back from JetStream (a worker's DirectGet). Any thread. */
struct fo_msg *nats__msg_from_nats(struct nats_engine *e, natsMsg *m, const char *channel,
                                   size_t len, uint64_t seq, bool *invalid)
{
    struct msg_headers h = {m, NULL, 0};
    int n = natsMsg_GetDataLength(m);
    return nats__msg_make(e, &h, (const uint8_t *)natsMsg_GetData(m), n > 0 ? (size_t)n : 0,
                          channel, len, true, seq, invalid);
}

/*
 * The NATS message of a client publish, with the headers backends read. A
 * durable one's Nats-Msg-Id is scoped to its channel (<channel>:<msg_id>):
 * JetStream deduplicates per stream, PROTOCOL.md per channel. Any thread.
 */
natsMsg *nats__client_msg(const struct fo_chan *ch, const struct fo_pub_req *req)
{
    char subj[SUBJECT_MAX], id[3 * PROTO_MSG_ID_MAX + 1], scoped[SUBJECT_MAX], ts[24];
    snprintf(subj, sizeof(subj), "%s%s", ch->durable ? NW_SUBJ_DUR : NW_SUBJ_EPH, ch->name);
    natsMsg *m = NULL;
    if (natsMsg_Create(&m, subj, NULL, (const char *)req->payload.ptr, (int)req->payload.len))
        return NULL;
    snprintf(ts, sizeof(ts), "%llu", (unsigned long long)rt_wall_ms());
    natsStatus s = natsMsgHeader_Set(m, NW_H_CHANNEL, ch->name);
    if (!s && req->user)
        s = natsMsgHeader_Set(m, NW_H_USER, req->user);
    if (!s && req->client)
        s = natsMsgHeader_Set(m, NW_H_CLIENT, req->client);
    if (!s)
        s = natsMsgHeader_Set(m, NW_H_ENCODING, encoding_name(req->payload.enc));
    if (!s)
        s = natsMsgHeader_Set(m, NW_H_TS, ts);
    if (!s && req->msg_id) {
        proto_pct_encode(req->msg_id, req->msg_id_len, id, sizeof(id));
        snprintf(scoped, sizeof(scoped), "%s:%s", ch->name, id);
        s = natsMsgHeader_Set(m, NW_H_MSG_ID, id);
        if (!s && ch->durable)
            s = natsMsgHeader_Set(m, NW_H_NATS_MSG_ID, scoped); /* JetStream dedups per stream */
    }
    if (s) {
        natsMsg_Destroy(m);
        return NULL;
    }
    return m;
}

/* The KV record that claims an ephemeral msg_id (nw_claim_subject). Any thread. */
natsMsg *nats__claim_msg(const struct fo_chan *ch, const struct fo_pub_req *req)
{
    char subj[SUBJECT_MAX];
    if (!nw_claim_subject(subj, sizeof(subj), ch->name, ch->name_len, req->msg_id, req->msg_id_len))
        return NULL;
    natsMsg *m = NULL;
    return natsMsg_Create(&m, subj, NULL, NULL, 0) == NATS_OK ? m : NULL;
}
