/*
 * nats.c: the client side of NATS's text protocol, enough for the load
 * generator: a scanner for what a server sends (INFO, MSG, HMSG, PING, PONG,
 * +OK, -ERR: the gateway's fanout/nats_wire.c) and encoders for what a client
 * sends (CONNECT, SUB, PUB, PING, PONG). The same bytes travel over plain TCP (the NATS publisher)
 * and inside WebSocket frames (the nats-ws target); in both cases the caller hands a byte stream to
 * the scanner and keeps what LT_AGAIN leaves over, because a frame (or a read) may end in the
 * middle of an operation.
 */
#include "load.h"
#include "nats_wire.h"

#include <string.h>

/* ------------------------------------------------------------------ */
/* Output */

static void put(struct lt_out *o, const void *p, size_t n)
{
    if (o->overflow || o->cap - o->len < n) {
        o->overflow = true;
        return;
    }
    memcpy(o->p + o->len, p, n);
    o->len += n;
}

static void puts_(struct lt_out *o, const char *s)
{
    put(o, s, strlen(s));
}

static void put_u64(struct lt_out *o, uint64_t v)
{
    char tmp[24];
    size_t n = 0;
    do {
        tmp[sizeof tmp - 1 - n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    put(o, tmp + sizeof tmp - n, n);
}

void lt_nats_enc_connect(struct lt_out *o)
{
    puts_(o, "CONNECT {\"verbose\":false,\"pedantic\":false,\"protocol\":1,\"headers\":false,"
             "\"no_responders\":false,\"name\":\"rtgate-load\",\"lang\":\"c\"}\r\n");
}

void lt_nats_enc_sub(struct lt_out *o, const char *subject, uint64_t sid)
{
    puts_(o, "SUB ");
    puts_(o, subject);
    put(o, " ", 1);
    put_u64(o, sid);
    put(o, "\r\n", 2);
}

void lt_nats_enc_ping(struct lt_out *o)
{
    put(o, "PING\r\n", 6);
}

void lt_nats_enc_pong(struct lt_out *o)
{
    put(o, "PONG\r\n", 6);
}

void lt_nats_enc_pub(struct lt_out *o, const char *subject, const char *reply, uint64_t s,
                     uint64_t p, uint64_t t, uint32_t payload)
{
    puts_(o, "PUB ");
    puts_(o, subject);
    put(o, " ", 1);
    if (reply) {
        puts_(o, reply);
        put(o, " ", 1);
    }
    put_u64(o, lt_data_json_len(s, p, t, payload));
    put(o, "\r\n", 2);
    lt_enc_data_json(o, s, p, t, payload);
    put(o, "\r\n", 2);
}

/* ------------------------------------------------------------------ */
/* Scanner */

/* The scanner is the gateway's own (fanout/nats_wire.c), with the tool's limits. */
lt_status lt_nats_scan(const uint8_t *buf, size_t len, size_t *pos, struct lt_nmsg *m)
{
    if (*pos >= len)
        return LT_AGAIN;
    size_t used = 0, al = 0;
    struct nw_msg w;
    const char *arg = NULL;
    enum nw_op op = nw_scan(buf + *pos, len - *pos, LT_NATS_MAX_PAYLOAD, &used, &w, &arg, &al);
    memset(m, 0, sizeof *m);
    switch (op) {
    case NW_MORE:
        return LT_AGAIN;
    case NW_MSG:
        if (w.subject_len > LT_NATS_SUBJECT_MAX)
            return LT_ERR;
        m->op = LT_N_MSG;
        m->subject = w.subject;
        m->subject_len = w.subject_len;
        m->reply = w.reply;
        m->reply_len = w.reply_len;
        m->sid = w.sid;
        m->header_len = w.hdr_len;
        m->payload = w.data;
        m->payload_len = w.data_len;
        break;
    case NW_PING:
        m->op = LT_N_PING;
        break;
    case NW_PONG:
        m->op = LT_N_PONG;
        break;
    case NW_OK:
        m->op = LT_N_OK;
        break;
    case NW_INFO:
    case NW_ERR:
        m->op = op == NW_INFO ? LT_N_INFO : LT_N_ERR;
        m->payload = (const uint8_t *)arg;
        m->payload_len = al;
        break;
    default:
        return LT_ERR;
    }
    *pos += used;
    return LT_OK;
}
