/*
 * nats.c: the client side of NATS's text protocol, enough for the load
 * generator: a scanner for what a server sends (INFO, MSG, HMSG, PING, PONG,
 * +OK, -ERR) and encoders for what a client sends (CONNECT, SUB, PUB, PING,
 * PONG). The same bytes travel over plain TCP (the NATS publisher) and inside
 * WebSocket frames (the nats-ws target); in both cases the caller hands a
 * byte stream to the scanner and keeps what LT_AGAIN leaves over, because a
 * frame (or a read) may end in the middle of an operation.
 */
#include "load.h"

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

static char upper(char c)
{
    return c >= 'a' && c <= 'z' ? (char)(c - 'a' + 'A') : c;
}

static bool op_is(const char *s, size_t n, const char *want)
{
    size_t wl = strlen(want);
    if (n != wl)
        return false;
    for (size_t i = 0; i < n; i++)
        if (upper(s[i]) != want[i])
            return false;
    return true;
}

static bool is_space(char c)
{
    return c == ' ' || c == '\t';
}

/* Splits args[0..n) at spaces and tabs into at most max tokens; returns the count (max+1: too
 * many). */
static size_t split(const char *a, size_t n, const char **tok, size_t *tl, size_t max)
{
    size_t k = 0, i = 0;
    while (i < n) {
        while (i < n && is_space(a[i]))
            i++;
        if (i == n)
            break;
        size_t start = i;
        while (i < n && !is_space(a[i]))
            i++;
        if (k == max)
            return max + 1;
        tok[k] = a + start;
        tl[k] = i - start;
        k++;
    }
    return k;
}

static bool parse_num(const char *s, size_t n, uint64_t *v)
{
    if (n == 0 || n > 19)
        return false;
    uint64_t x = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        x = x * 10 + (uint64_t)(s[i] - '0');
    }
    *v = x;
    return true;
}

lt_status lt_nats_scan(const uint8_t *buf, size_t len, size_t *pos, struct lt_nmsg *m)
{
    size_t start = *pos;
    if (start >= len)
        return LT_AGAIN;
    size_t avail = len - start;
    const uint8_t *nl =
        memchr(buf + start, '\n', avail > LT_NATS_MAX_LINE ? LT_NATS_MAX_LINE : avail);
    if (!nl)
        return avail >= LT_NATS_MAX_LINE ? LT_ERR : LT_AGAIN;
    const char *line = (const char *)buf + start;
    size_t ll = (size_t)(nl - (buf + start)); /* without the \n */
    size_t after_line = start + ll + 1;
    if (ll && line[ll - 1] == '\r')
        ll--;
    size_t ol = 0;
    while (ol < ll && !is_space(line[ol]))
        ol++;
    const char *args = line + ol;
    size_t al = ll - ol;
    while (al && is_space(*args)) {
        args++;
        al--;
    }
    memset(m, 0, sizeof *m);
    if (op_is(line, ol, "MSG") || op_is(line, ol, "HMSG")) {
        bool h = ol == 4;
        const char *tok[5];
        size_t tl[5];
        size_t want = h ? 4 : 3;
        size_t k = split(args, al, tok, tl, want + 1);
        if (k != want && k != want + 1)
            return LT_ERR;
        uint64_t total, hdr = 0;
        if (!parse_num(tok[1], tl[1], &m->sid) || !parse_num(tok[k - 1], tl[k - 1], &total))
            return LT_ERR;
        if (h && (!parse_num(tok[k - 2], tl[k - 2], &hdr) || hdr > total))
            return LT_ERR;
        if (total > LT_NATS_MAX_PAYLOAD || tl[0] == 0 || tl[0] > LT_NATS_SUBJECT_MAX)
            return LT_ERR;
        m->op = LT_N_MSG;
        m->subject = tok[0];
        m->subject_len = tl[0];
        if (k == want + 1) {
            m->reply = tok[2];
            m->reply_len = tl[2];
        }
        /* payload, then CRLF */
        if (len - after_line < total + 2)
            return LT_AGAIN;
        const uint8_t *pl = buf + after_line;
        if (pl[total] != '\r' || pl[total + 1] != '\n')
            return LT_ERR;
        m->header_len = (size_t)hdr;
        m->payload = pl + hdr;
        m->payload_len = (size_t)(total - hdr);
        *pos = after_line + (size_t)total + 2;
        return LT_OK;
    }
    if (op_is(line, ol, "PING"))
        m->op = LT_N_PING;
    else if (op_is(line, ol, "PONG"))
        m->op = LT_N_PONG;
    else if (op_is(line, ol, "+OK"))
        m->op = LT_N_OK;
    else if (op_is(line, ol, "-ERR"))
        m->op = LT_N_ERR;
    else if (op_is(line, ol, "INFO"))
        m->op = LT_N_INFO;
    else
        return LT_ERR;
    m->payload = (const uint8_t *)args;
    m->payload_len = al;
    *pos = after_line;
    return LT_OK;
}
