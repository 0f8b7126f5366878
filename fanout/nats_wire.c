/*
 * nats_wire.c: NATS's core protocol as bytes (nats_wire.h). Pure: no I/O,
 * no allocation.
 */
#include "nats_wire.h"

#include <stdio.h>
#include <string.h>

#define NW_ARGS_MAX 6

struct tok {
    const char *p;
    size_t n;
};

static char lower(char c)
{
    return c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
}

static bool same_ci(const char *a, size_t n, const char *lit)
{
    size_t l = strlen(lit);
    if (n != l)
        return false;
    for (size_t i = 0; i < n; i++)
        if (lower(a[i]) != lit[i])
            return false;
    return true;
}

static bool blank(char c)
{
    return c == ' ' || c == '\t';
}

/* Splits line into blank-separated tokens; false if there are more than max. */
static bool split(const char *s, size_t n, struct tok *t, size_t max, size_t *count)
{
    size_t k = 0, i = 0;
    while (i < n) {
        while (i < n && blank(s[i]))
            i++;
        if (i == n)
            break;
        size_t start = i;
        while (i < n && !blank(s[i]))
            i++;
        if (k == max)
            return false;
        t[k].p = s + start;
        t[k].n = i - start;
        k++;
    }
    *count = k;
    return true;
}

/* A decimal of at most 19 digits (no overflow), nothing else. */
static bool dec(const struct tok *t, uint64_t *out)
{
    if (t->n == 0 || t->n > 19)
        return false;
    uint64_t v = 0;
    for (size_t i = 0; i < t->n; i++) {
        if (t->p[i] < '0' || t->p[i] > '9')
            return false;
        v = v * 10 + (uint64_t)(t->p[i] - '0');
    }
    *out = v;
    return true;
}

/* MSG subject sid [reply] size | HMSG subject sid [reply] hsize size */
static enum nw_op scan_msg(const uint8_t *p, size_t n, size_t line_len, const struct tok *t,
                           size_t k, bool hmsg, size_t max_payload, size_t *used, struct nw_msg *m)
{
    size_t fixed = hmsg ? 4 : 3; /* op subject sid [hsize] size, without reply */
    if (k != fixed + 1 && k != fixed + 2)
        return NW_BAD;
    bool has_reply = k == fixed + 2;
    uint64_t sid = 0, hsize = 0, size = 0;
    if (!dec(&t[2], &sid) || !dec(&t[k - 1], &size))
        return NW_BAD;
    if (hmsg && (!dec(&t[k - 2], &hsize) || hsize > size))
        return NW_BAD;
    if (size > max_payload)
        return NW_BAD;
    if (n - line_len < size + 2)
        return NW_MORE;
    const uint8_t *body = p + line_len;
    if (body[size] != '\r' || body[size + 1] != '\n')
        return NW_BAD;
    memset(m, 0, sizeof(*m));
    m->subject = t[1].p;
    m->subject_len = t[1].n;
    m->sid = sid;
    if (has_reply) {
        m->reply = t[3].p;
        m->reply_len = t[3].n;
    }
    if (hmsg) {
        m->hdr = body;
        m->hdr_len = (size_t)hsize;
    }
    m->data = body + hsize;
    m->data_len = (size_t)(size - hsize);
    *used = line_len + (size_t)size + 2;
    return NW_MSG;
}

enum nw_op nw_scan(const uint8_t *p, size_t n, size_t max_payload, size_t *used, struct nw_msg *m,
                   const char **arg, size_t *arg_len)
{
    size_t look = n < NW_LINE_MAX + 1 ? n : NW_LINE_MAX + 1;
    const uint8_t *nl = memchr(p, '\n', look);
    if (!nl)
        return n > NW_LINE_MAX ? NW_BAD : NW_MORE;
    size_t line_len = (size_t)(nl - p) + 1;
    size_t text = line_len - 1;
    if (text > 0 && p[text - 1] == '\r')
        text--;
    const char *s = (const char *)p;
    size_t op_len = 0;
    while (op_len < text && !blank(s[op_len]))
        op_len++;
    size_t rest = op_len;
    while (rest < text && blank(s[rest]))
        rest++;
    if (arg) {
        *arg = s + rest;
        *arg_len = text - rest;
    }
    *used = line_len;
    if (same_ci(s, op_len, "msg") || same_ci(s, op_len, "hmsg")) {
        struct tok t[NW_ARGS_MAX];
        size_t k = 0;
        if (!split(s, text, t, NW_ARGS_MAX, &k))
            return NW_BAD;
        return scan_msg(p, n, line_len, t, k, op_len == 4, max_payload, used, m);
    }
    bool bare = rest == text;
    if (same_ci(s, op_len, "ping") && bare)
        return NW_PING;
    if (same_ci(s, op_len, "pong") && bare)
        return NW_PONG;
    if (same_ci(s, op_len, "+ok") && bare)
        return NW_OK;
    if (same_ci(s, op_len, "info") && !bare)
        return NW_INFO;
    if (same_ci(s, op_len, "-err"))
        return NW_ERR;
    return NW_BAD;
}

bool nw_hdr_get(const uint8_t *hdr, size_t len, const char *key, const char **val, size_t *val_len)
{
    static const char ver[] = "NATS/1.0";
    const char *s = (const char *)hdr;
    if (!hdr || len < sizeof(ver) - 1 || memcmp(s, ver, sizeof(ver) - 1) != 0)
        return false;
    size_t klen = strlen(key);
    const char *end = s + len;
    const char *line = memchr(s, '\n', len); /* the status line */
    while (line && ++line < end) {
        const char *eol = memchr(line, '\n', (size_t)(end - line));
        const char *stop = eol ? eol : end;
        if (stop > line && stop[-1] == '\r')
            stop--;
        const char *colon = memchr(line, ':', (size_t)(stop - line));
        if (colon && (size_t)(colon - line) == klen) {
            bool match = true;
            for (size_t i = 0; i < klen && match; i++)
                match = lower(line[i]) == lower(key[i]);
            if (match) {
                const char *v = colon + 1;
                while (v < stop && blank(*v))
                    v++;
                const char *ve = stop;
                while (ve > v && blank(ve[-1]))
                    ve--;
                *val = v;
                *val_len = (size_t)(ve - v);
                return true;
            }
        }
        line = eol;
    }
    return false;
}

size_t nw_claim_subject(char *out, size_t cap, const char *channel, size_t channel_len,
                        const char *msg_id, size_t msg_id_len)
{
    static const char hex[] = "0123456789abcdef";
    size_t pl = sizeof(NW_KV_PREFIX) - 1;
    size_t need = pl + channel_len + 1 + 2 * msg_id_len;
    if (need >= cap)
        return 0;
    memcpy(out, NW_KV_PREFIX, pl);
    for (size_t i = 0; i < channel_len; i++)
        out[pl + i] = channel[i] == ':' ? '=' : channel[i];
    size_t o = pl + channel_len;
    out[o++] = '.';
    for (size_t i = 0; i < msg_id_len; i++) {
        out[o++] = hex[(unsigned char)msg_id[i] >> 4];
        out[o++] = hex[(unsigned char)msg_id[i] & 15];
    }
    out[o] = 0;
    return o;
}

size_t nw_enc_sub(char *out, size_t cap, const char *subject, uint64_t sid)
{
    int n = snprintf(out, cap, "SUB %s %llu\r\n", subject, (unsigned long long)sid);
    return n > 0 && (size_t)n < cap ? (size_t)n : 0;
}

size_t nw_enc_unsub(char *out, size_t cap, uint64_t sid)
{
    int n = snprintf(out, cap, "UNSUB %llu\r\n", (unsigned long long)sid);
    return n > 0 && (size_t)n < cap ? (size_t)n : 0;
}
