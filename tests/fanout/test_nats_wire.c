/*
 * NATS's core protocol scanner (fanout/nats_wire.c): what the loop reader
 * trusts from the server's byte stream.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nats_wire.h"

#define MAXP 1024

static enum nw_op scan(const char *s, size_t n, size_t *used, struct nw_msg *m)
{
    return nw_scan((const uint8_t *)s, n, MAXP, used, m, NULL, NULL);
}

static bool eq(const char *p, size_t n, const char *want)
{
    return n == strlen(want) && memcmp(p, want, n) == 0;
}

Test(nats_wire, msg_and_hmsg)
{
    struct nw_msg m;
    size_t used = 0;
    const char *a = "MSG rtgate.eph.x 7 5\r\nhello\r\nPING\r\n";
    cr_assert_eq(scan(a, strlen(a), &used, &m), NW_MSG);
    cr_assert_eq(used, strlen("MSG rtgate.eph.x 7 5\r\nhello\r\n"));
    cr_assert(eq(m.subject, m.subject_len, "rtgate.eph.x"));
    cr_assert_eq(m.sid, 7);
    cr_assert_null(m.reply);
    cr_assert_null(m.hdr);
    cr_assert(eq((const char *)m.data, m.data_len, "hello"));

    const char *b = "msg a.b 12 _INBOX.r 0\r\n\r\n";
    cr_assert_eq(scan(b, strlen(b), &used, &m), NW_MSG);
    cr_assert(eq(m.reply, m.reply_len, "_INBOX.r"));
    cr_assert_eq(m.data_len, 0);
    cr_assert_eq(used, strlen(b));

    const char *hdr = "NATS/1.0\r\nRtgate-Encoding: msgpack\r\nRtgate-Ts:  123 \r\n\r\n";
    char c[256];
    int n = snprintf(c, sizeof(c), "HMSG s.t 3 %zu %zu\r\n%s\x81\xa1x\r\n", strlen(hdr),
                     strlen(hdr) + 3, hdr);
    cr_assert_eq(scan(c, (size_t)n, &used, &m), NW_MSG);
    cr_assert_eq(used, (size_t)n);
    cr_assert_eq(m.hdr_len, strlen(hdr));
    cr_assert_eq(m.data_len, 3);
    cr_assert_eq(m.data[0], 0x81);
    const char *v;
    size_t vl;
    cr_assert(nw_hdr_get(m.hdr, m.hdr_len, "rtgate-encoding", &v, &vl));
    cr_assert(eq(v, vl, "msgpack"));
    cr_assert(nw_hdr_get(m.hdr, m.hdr_len, "Rtgate-Ts", &v, &vl));
    cr_assert(eq(v, vl, "123"));
    cr_assert_not(nw_hdr_get(m.hdr, m.hdr_len, "Rtgate-T", &v, &vl));
    cr_assert_not(nw_hdr_get(m.hdr, m.hdr_len, "Nats-Msg-Id", &v, &vl));
}

Test(nats_wire, control_ops)
{
    size_t used = 0, al = 0;
    const char *arg = NULL;
    struct nw_msg m;
    struct {
        const char *in;
        enum nw_op op;
    } cases[] = {
        {"PING\r\n", NW_PING},
        {"pong\r\n", NW_PONG},
        {"+OK\r\n", NW_OK},
        {"PING\n", NW_PING},
        {"-ERR 'Stale'\r\n", NW_ERR},
        {"INFO {\"a\":1}\r\n", NW_INFO},
        {"PING x\r\n", NW_BAD},
        {"HELLO\r\n", NW_BAD},
        {"INFO\r\n", NW_BAD},
        {"\r\n", NW_BAD},
        {"MSG a 1\r\n", NW_BAD},
        {"MSG a b 1\r\nx\r\n", NW_BAD},
        {"MSG a 1 x y 2\r\n", NW_BAD},
        {"MSG a 1 -1\r\n", NW_BAD},
        {"HMSG a 1 5 4\r\n", NW_BAD},
        {"MSG a 1 2\r\nabXY", NW_BAD},
        {"MSG a 1 2000\r\n", NW_BAD}, /* over max_payload */
        {"MSG a 1 99999999999999999999\r\n", NW_BAD},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        enum nw_op op =
            nw_scan((const uint8_t *)cases[i].in, strlen(cases[i].in), MAXP, &used, &m, &arg, &al);
        cr_assert_eq(op, cases[i].op, "case %zu (%s): %d", i, cases[i].in, op);
    }
    const char *e = "-ERR 'Authorization Violation'\r\n";
    cr_assert_eq(nw_scan((const uint8_t *)e, strlen(e), MAXP, &used, &m, &arg, &al), NW_ERR);
    cr_assert(eq(arg, al, "'Authorization Violation'"));
}

/* Every prefix of a stream is "more", never a wrong op; the whole gives each op in turn. */
Test(nats_wire, split_at_every_byte)
{
    const char *hdr = "NATS/1.0\r\nNats-Sequence: 9\r\n\r\n";
    char s[512];
    int n = snprintf(s, sizeof(s),
                     "INFO {\"max_payload\":1024}\r\nPING\r\nMSG x.y 1 r 3\r\nabc\r\n"
                     "HMSG a 2 %zu %zu\r\n%sdata\r\n+OK\r\n",
                     strlen(hdr), strlen(hdr) + 4, hdr);
    enum nw_op want[] = {NW_INFO, NW_PING, NW_MSG, NW_MSG, NW_OK};
    size_t off = 0;
    for (size_t k = 0; k < sizeof(want) / sizeof(want[0]); k++) {
        size_t used = 0, full = 0;
        struct nw_msg m;
        for (size_t len = 0; off + len <= (size_t)n; len++) {
            enum nw_op op = nw_scan((const uint8_t *)s + off, len, MAXP, &used, &m, NULL, NULL);
            if (op == NW_MORE)
                continue;
            cr_assert_eq(op, want[k], "op %zu at length %zu: %d", k, len, op);
            full = used;
            cr_assert_eq(full, len, "op %zu complete at %zu, used %zu", k, len, full);
            break;
        }
        cr_assert_gt(full, 0, "op %zu never completed", k);
        off += full;
    }
    cr_assert_eq(off, (size_t)n);
}

Test(nats_wire, long_line_is_bad)
{
    size_t n = NW_LINE_MAX + 10, used;
    char *s = malloc(n);
    memset(s, 'A', n);
    memcpy(s, "INFO ", 5);
    struct nw_msg m;
    cr_assert_eq(nw_scan((const uint8_t *)s, NW_LINE_MAX, MAXP, &used, &m, NULL, NULL), NW_MORE);
    cr_assert_eq(nw_scan((const uint8_t *)s, n, MAXP, &used, &m, NULL, NULL), NW_BAD);
    free(s);
}

/* Random and mutated input: no crash, no read past n, used within n. */
Test(nats_wire, garbage)
{
    srand(42);
    const char *seeds[] = {"MSG a.b 1 3\r\nabc\r\n", "HMSG a 1 12 14\r\nNATS/1.0\r\n\r\nhi\r\n",
                           "PING\r\n", "INFO {}\r\n"};
    for (int it = 0; it < 200000; it++) {
        uint8_t buf[64];
        size_t n;
        if (it % 2) {
            n = (size_t)rand() % sizeof(buf);
            for (size_t i = 0; i < n; i++)
                buf[i] = (uint8_t)(rand() % 4 ? "MSGHPINO \r\n0123456789"[rand() % 21] : rand());
        } else {
            const char *sd = seeds[rand() % 4];
            n = strlen(sd);
            memcpy(buf, sd, n);
            for (int k = rand() % 4; k >= 0; k--)
                buf[rand() % n] = (uint8_t)rand();
            n = (size_t)rand() % (n + 1);
        }
        /* A heap copy of exactly n bytes: ASan catches any read past it. */
        uint8_t *p = malloc(n ? n : 1);
        memcpy(p, buf, n);
        size_t used = 0;
        struct nw_msg m;
        enum nw_op op = nw_scan(p, n, MAXP, &used, &m, NULL, NULL);
        if (op != NW_MORE && op != NW_BAD)
            cr_assert_leq(used, n);
        if (op == NW_MSG) {
            cr_assert_leq(m.data + m.data_len, p + n);
            const char *v;
            size_t vl;
            if (m.hdr && nw_hdr_get(m.hdr, m.hdr_len, "x", &v, &vl))
                cr_assert_leq((const uint8_t *)v + vl, m.hdr + m.hdr_len);
        }
        free(p);
    }
}

Test(nats_wire, headers)
{
    const char *v;
    size_t vl;
    const char *h = "NATS/1.0 503\r\nA: 1\r\nA: 2\r\nB:\r\nC :x\r\nD:\t y z \r\n\r\n";
    const uint8_t *u = (const uint8_t *)h;
    size_t n = strlen(h);
    cr_assert(nw_hdr_get(u, n, "a", &v, &vl));
    cr_assert(eq(v, vl, "1"));
    cr_assert(nw_hdr_get(u, n, "B", &v, &vl));
    cr_assert_eq(vl, 0);
    cr_assert_not(nw_hdr_get(u, n, "C", &v, &vl)); /* "C " is not "C" */
    cr_assert(nw_hdr_get(u, n, "D", &v, &vl));
    cr_assert(eq(v, vl, "y z"));
    cr_assert_not(nw_hdr_get((const uint8_t *)"HTTP/1.0\r\nA: 1\r\n\r\n", 19, "A", &v, &vl));
    cr_assert_not(nw_hdr_get(NULL, 0, "A", &v, &vl));
    /* Truncated block: the last line has no newline; still within bounds. */
    cr_assert(nw_hdr_get((const uint8_t *)"NATS/1.0\r\nK: vv", 15, "K", &v, &vl));
    cr_assert(eq(v, vl, "vv"));
}

Test(nats_wire, encoders)
{
    char b[64];
    cr_assert_eq(nw_enc_sub(b, sizeof(b), "rtgate.eph.a", 42), strlen("SUB rtgate.eph.a 42\r\n"));
    cr_assert_str_eq(b, "SUB rtgate.eph.a 42\r\n");
    cr_assert_eq(nw_enc_unsub(b, sizeof(b), 42), 10);
    cr_assert_str_eq(b, "UNSUB 42\r\n");
    cr_assert_eq(nw_enc_sub(b, 8, "rtgate.eph.a", 42), 0);
}

/* The msg_id claim subject the engine and rtgate-pub share (one spelling). */
Test(nats_wire, claim_subject)
{
    char out[128];
    size_t n = nw_claim_subject(out, sizeof(out), "a:b.c", 5, "k\x01", 2);
    cr_assert_str_eq(out, "$KV.rtgate_dedup.a=b.c.6b01", "':' becomes '=', the id is hex");
    cr_assert_eq(n, strlen(out));
    cr_assert_eq(nw_claim_subject(out, 26, "a:b.c", 5, "k\x01", 2), 0, "does not fit");
    cr_assert_eq(nw_claim_subject(out, 28, "a:b.c", 5, "k\x01", 2), 27, "fits with its NUL");
}
