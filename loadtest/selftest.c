/*
 * selftest.c: `rtgate-load --self-test`, the checks of the pieces that do
 * not need a server (ctest runs it as loadtest_selftest). Each check prints
 * a line only when it fails; the summary line says how many ran.
 */
#include "load.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static int checks, failures;

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        checks++;                                                                                  \
        if (!(cond)) {                                                                             \
            failures++;                                                                            \
            fprintf(stderr, "self-test: %s:%d: %s\n", __FILE__, __LINE__, #cond);                  \
        }                                                                                          \
    } while (0)

static void hex(const uint8_t *d, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++)
        snprintf(out + 2 * i, 3, "%02x", d[i]);
}

static bool sha1_is(const void *data, size_t len, const char *want)
{
    uint8_t d[LT_SHA1_LEN];
    char h[2 * LT_SHA1_LEN + 1];
    lt_sha1(data, len, d);
    hex(d, sizeof d, h);
    return strcmp(h, want) == 0;
}

static void test_sha1_base64(void)
{
    CHECK(sha1_is("", 0, "da39a3ee5e6b4b0d3255bfef95601890afd80709"));
    CHECK(sha1_is("abc", 3, "a9993e364706816aba3e25717850c26c9cd0d89d"));
    const char *two = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    CHECK(sha1_is(two, strlen(two), "84983e441c3bd26ebaae4aa1f95129e5e54670f1"));
    static const struct {
        size_t n;
        const char *want;
    } as[] = {
        {55, "c1c8bbdc22796e28c0e15163d20899b65621d65a"},
        {56, "c2db330f6083854c99d4b5bfb6e8f29f201be699"},
        {63, "03f09f5b158a7a8cdad920bddc29b81c18a551f5"},
        {64, "0098ba824b5c16427bd7a1122a5a442a25ec644d"},
        {65, "11655326c708d70319be2610e8a57d9a5b959d3b"},
        {119, "ee971065aaa017e0632a8ca6c77bb3bf8b1dfc56"},
        {120, "f34c1488385346a55709ba056ddd08280dd4c6d6"},
        {1000000, "34aa973cd4c4daa4f61eeb2bdbad27316534016f"},
    };
    char *a = malloc(1000000);
    if (!a)
        return;
    memset(a, 'a', 1000000);
    for (size_t i = 0; i < sizeof as / sizeof as[0]; i++)
        CHECK(sha1_is(a, as[i].n, as[i].want));
    free(a);

    char out[64];
    static const char *const b64[][2] = {{"", ""},
                                         {"f", "Zg=="},
                                         {"fo", "Zm8="},
                                         {"foo", "Zm9v"},
                                         {"foob", "Zm9vYg=="},
                                         {"fooba", "Zm9vYmE="},
                                         {"foobar", "Zm9vYmFy"}};
    for (size_t i = 0; i < sizeof b64 / sizeof b64[0]; i++) {
        size_t n = lt_base64((const uint8_t *)b64[i][0], strlen(b64[i][0]), out, sizeof out);
        CHECK(n == strlen(b64[i][1]) && strcmp(out, b64[i][1]) == 0);
    }
    CHECK(lt_base64((const uint8_t *)"foobar", 6, out, 8) == 0);
    char acc[29];
    lt_ws_accept("dGhlIHNhbXBsZSBub25jZQ==", acc); /* RFC 6455 section 1.3 */
    CHECK(strcmp(acc, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=") == 0);
}

static void test_handshake(void)
{
    const char *key = "dGhlIHNhbXBsZSBub25jZQ==";
    const char *sp = LT_SUBPROTOCOL_JSON;
    char req[1024];
    size_t n = lt_ws_request(req, sizeof req, "127.0.0.1:8080", "/ws", key, sp);
    CHECK(n > 0 && strstr(req, "GET /ws HTTP/1.1\r\n") == req);
    CHECK(strstr(req, "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n") != NULL);
    CHECK(strstr(req, "Sec-WebSocket-Protocol: rtgate.v1.json\r\n") != NULL);
    CHECK(strstr(req, "Host: 127.0.0.1:8080\r\n") != NULL);
    CHECK(n >= 4 && memcmp(req + n - 4, "\r\n\r\n", 4) == 0);
    CHECK(lt_ws_request(req, 10, "h", "/", key, sp) == 0);

    struct lt_ws_response r;
    const char *good =
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
        "Sec-WebSocket-Protocol: rtgate.v1.json\r\n\r\n\x81\x02{}";
    CHECK(lt_ws_parse_response(good, strlen(good), key, sp, &r) == LT_OK);
    CHECK(r.status == 101 && r.header_len == strlen(good) - 4);
    for (size_t cut = 0; cut < strlen(good) - 4; cut++)
        CHECK(lt_ws_parse_response(good, cut, key, sp, &r) == LT_AGAIN);
    const char *lower =
        "HTTP/1.1 101 x\r\nupgrade: WebSocket\r\nconnection: keep-alive, upgrade\r\n"
        "sec-websocket-accept:s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
        "sec-websocket-protocol: rtgate.v1.json\r\n\r\n";
    CHECK(lt_ws_parse_response(lower, strlen(lower), key, sp, &r) == LT_OK);
    const char *bad_accept = "HTTP/1.1 101 x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                             "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOO=\r\n"
                             "Sec-WebSocket-Protocol: rtgate.v1.json\r\n\r\n";
    CHECK(lt_ws_parse_response(bad_accept, strlen(bad_accept), key, sp, &r) == LT_ERR);
    const char *no_proto = "HTTP/1.1 101 x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                           "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";
    CHECK(lt_ws_parse_response(no_proto, strlen(no_proto), key, sp, &r) == LT_ERR);
    CHECK(lt_ws_parse_response(no_proto, strlen(no_proto), key, NULL, &r) == LT_OK);
    CHECK(lt_ws_parse_response(good, strlen(good), key, LT_SUBPROTOCOL_MSGPACK, &r) == LT_ERR);
    const char *no_upgrade = "HTTP/1.1 101 x\r\nConnection: Upgrade\r\n"
                             "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
                             "Sec-WebSocket-Protocol: rtgate.v1.json\r\n\r\n";
    CHECK(lt_ws_parse_response(no_upgrade, strlen(no_upgrade), key, sp, &r) == LT_ERR);
    const char *busy = "HTTP/1.1 429 Too Many Requests\r\nRetry-After: 2\r\n"
                       "Content-Length: 0\r\n\r\n";
    CHECK(lt_ws_parse_response(busy, strlen(busy), key, sp, &r) == LT_ERR);
    CHECK(r.status == 429 && r.retry_after_s == 2);
    const char *bad400 = "HTTP/1.1 400 Bad Request\r\n\r\n";
    CHECK(lt_ws_parse_response(bad400, strlen(bad400), key, sp, &r) == LT_ERR && r.status == 400);
    const char *garbage = "SSH-2.0-OpenSSH\r\n\r\n";
    CHECK(lt_ws_parse_response(garbage, strlen(garbage), key, sp, &r) == LT_ERR);
}

static void test_frames(void)
{
    static const size_t lens[] = {0, 1, 7, 125, 126, 127, 1000, 65535, 65536, 200000};
    uint8_t *buf = malloc(LT_WS_HEADROOM + 200000);
    uint8_t *orig = malloc(200000);
    if (!buf || !orig)
        return;
    for (size_t i = 0; i < 200000; i++)
        orig[i] = (uint8_t)(i * 31 + 7);
    for (size_t k = 0; k < sizeof lens / sizeof lens[0]; k++) {
        size_t n = lens[k];
        memcpy(buf + LT_WS_HEADROOM, orig, n);
        size_t flen;
        uint8_t *f = lt_ws_frame_in_place(buf, n, LT_WS_TEXT, true, 0xA1B2C3D4u, &flen);
        size_t hl = n < 126 ? 6 : n <= 0xFFFF ? 8 : 14;
        CHECK(flen == hl + n && f == buf + LT_WS_HEADROOM - hl);
        CHECK(f[0] == 0x81 && (f[1] & 0x80));
        CHECK(n < 8 || memcmp(f + hl, orig, n) != 0); /* it is masked */
        struct lt_ws_frame fr;
        for (size_t cut = 0; cut < hl; cut++)
            CHECK(lt_ws_parse_frame(f, cut, &fr) == LT_AGAIN);
        if (n)
            CHECK(lt_ws_parse_frame(f, flen - 1, &fr) == LT_AGAIN);
        CHECK(lt_ws_parse_frame(f, flen, &fr) == LT_OK); /* unmasks in place */
        CHECK(fr.fin && fr.opcode == LT_WS_TEXT && fr.payload_len == n && fr.frame_len == flen);
        CHECK(memcmp(fr.payload, orig, n) == 0);
    }
    /* masking at every length and key against the byte-by-byte definition */
    for (size_t n = 0; n < 40; n++) {
        uint8_t a[40], b[40];
        memcpy(a, orig, n);
        memcpy(b, orig, n);
        lt_ws_mask(a, n, 0x01020304u);
        for (size_t i = 0; i < n; i++)
            b[i] ^= (uint8_t)(0x01020304u >> (24 - 8 * (i & 3)));
        CHECK(memcmp(a, b, n) == 0);
    }
    free(buf);
    free(orig);

    /* server frames: unmasked, fragmented, control, invalid */
    struct lt_ws_frame fr;
    uint8_t text[] = {0x81, 0x03, 'a', 'b', 'c'};
    CHECK(lt_ws_parse_frame(text, sizeof text, &fr) == LT_OK && fr.payload_len == 3 &&
          memcmp(fr.payload, "abc", 3) == 0);
    uint8_t first[] = {0x01, 0x02, 'a', 'b'};
    CHECK(lt_ws_parse_frame(first, sizeof first, &fr) == LT_OK && !fr.fin &&
          fr.opcode == LT_WS_TEXT);
    uint8_t cont[] = {0x80, 0x01, 'c'};
    CHECK(lt_ws_parse_frame(cont, sizeof cont, &fr) == LT_OK && fr.fin && fr.opcode == LT_WS_CONT);
    uint8_t ping[] = {0x89, 0x02, 'h', 'i'};
    CHECK(lt_ws_parse_frame(ping, sizeof ping, &fr) == LT_OK && fr.opcode == LT_WS_PING);
    uint8_t ext16[4 + 300];
    ext16[0] = 0x82;
    ext16[1] = 126;
    ext16[2] = 0x01;
    ext16[3] = 0x2C;
    memset(ext16 + 4, 0, 300);
    CHECK(lt_ws_parse_frame(ext16, sizeof ext16, &fr) == LT_OK && fr.payload_len == 300);
    uint8_t rsv[] = {0xC1, 0x00};
    CHECK(lt_ws_parse_frame(rsv, sizeof rsv, &fr) == LT_ERR);

    /* reassembly: TEXT (not fin) + CONT (fin) -> one message; misuse -> LT_ERR */
    {
        uint8_t *rb = NULL, rop = 0, *owned = NULL;
        uint32_t rl = 0;
        const uint8_t *msg = NULL;
        size_t ml = 0;
        struct lt_ws_frame a1 = {false, LT_WS_TEXT, (const uint8_t *)"ab", 2, 0};
        struct lt_ws_frame a2 = {true, LT_WS_CONT, (const uint8_t *)"c", 1, 0};
        struct lt_ws_frame whole = {true, LT_WS_BINARY, (const uint8_t *)"xyz", 3, 0};
        CHECK(lt_ws_reassemble(&rb, &rl, &rop, &a1, &msg, &ml, &owned) == LT_AGAIN && rop);
        CHECK(lt_ws_reassemble(&rb, &rl, &rop, &whole, &msg, &ml, &owned) == LT_ERR);
        CHECK(lt_ws_reassemble(&rb, &rl, &rop, &a2, &msg, &ml, &owned) == LT_OK && ml == 3 &&
              memcmp(msg, "abc", 3) == 0 && owned == msg && !rb && !rl && !rop);
        free(owned);
        CHECK(lt_ws_reassemble(&rb, &rl, &rop, &a2, &msg, &ml, &owned) == LT_ERR);
        CHECK(lt_ws_reassemble(&rb, &rl, &rop, &whole, &msg, &ml, &owned) == LT_OK && ml == 3 &&
              !owned && msg == whole.payload);
        static uint8_t big[1 << 20];
        struct lt_ws_frame b1 = {false, LT_WS_TEXT, big, sizeof big, 0};
        struct lt_ws_frame b2 = {false, LT_WS_CONT, big, sizeof big, 0};
        lt_status st = lt_ws_reassemble(&rb, &rl, &rop, &b1, &msg, &ml, &owned);
        for (int i = 0; i < 20 && st == LT_AGAIN; i++)
            st = lt_ws_reassemble(&rb, &rl, &rop, &b2, &msg, &ml, &owned);
        CHECK(st == LT_ERR && rl <= LT_WS_MAX_FRAME); /* over 16 MiB: refused */
        free(rb);
    }
    uint8_t frag_ping[] = {0x09, 0x00};
    CHECK(lt_ws_parse_frame(frag_ping, sizeof frag_ping, &fr) == LT_ERR);
    uint8_t long_close[] = {0x88, 126, 0x00, 0x80};
    CHECK(lt_ws_parse_frame(long_close, sizeof long_close, &fr) == LT_ERR);
    uint8_t opcode3[] = {0x83, 0x00};
    CHECK(lt_ws_parse_frame(opcode3, sizeof opcode3, &fr) == LT_ERR);
    uint8_t huge[] = {0x82, 127, 0, 0, 0, 0, 0x10, 0, 0, 0};
    CHECK(lt_ws_parse_frame(huge, sizeof huge, &fr) == LT_ERR);
}

static lt_status scan1(const char *s, struct lt_smsg *m)
{
    size_t pos = 0;
    return lt_scan_json((const uint8_t *)s, strlen(s), &pos, m);
}

static void test_json(void)
{
    struct lt_smsg m;
    const char *msg =
        "{\"type\":\"msg\",\"channel\":\"load.fanout\",\"seq\":17,\"msg_id\":\"a\\\"b\","
        "\"data\":{\"s\":42,\"p\":3,\"t\":123456789012345,\"pad\":\"xxxx\"},"
        "\"ts\":1764283000123}";
    CHECK(scan1(msg, &m) == LT_OK);
    CHECK(m.type == LT_M_MSG && m.has_data && m.s == 42 && m.p == 3 && m.t == 123456789012345ull);
    CHECK(m.channel_len == 11 && memcmp(m.channel, "load.fanout", 11) == 0);
    CHECK(m.has_seq && m.seq == 17);
    const char *reordered = " { \"data\" : { \"pad\":\"}\" , \"t\" : 9, \"p\":0,\"s\":1 } ,"
                            " \"extra\":[1,{\"a\":[true,null]},-2.5e3],\"channel\":\"x\","
                            "\"type\":\"msg\" } ";
    CHECK(scan1(reordered, &m) == LT_OK && m.type == LT_M_MSG && m.has_data && m.s == 1 &&
          m.t == 9 && !m.has_seq);
    const char *nodata = "{\"type\":\"msg\",\"channel\":\"x\",\"data\":{\"text\":\"hi\"}}";
    CHECK(scan1(nodata, &m) == LT_OK && m.type == LT_M_MSG && !m.has_data);
    CHECK(scan1("{\"type\":\"reply\",\"id\":4,\"ok\":true,\"seq\":124,\"dup\":false}", &m) ==
              LT_OK &&
          m.type == LT_M_REPLY && m.has_id && m.id == 4 && m.ok == 1);
    CHECK(scan1("{\"type\":\"reply\",\"id\":5,\"ok\":false,\"error\":{\"code\":429,"
                "\"reason\":\"rate_limited\",\"retry_after_ms\":350}}",
                &m) == LT_OK &&
          m.ok == 0 && m.error_code == 429 && m.retry_after_ms == 350);
    CHECK(scan1("{\"type\":\"connected\",\"id\":1,\"client\":\"c1\",\"heartbeat_ms\":25000,"
                "\"limits\":{\"pub_rate\":20,\"max_unacked\":1024}}",
                &m) == LT_OK &&
          m.type == LT_M_CONNECTED && m.heartbeat_ms == 25000 && m.max_unacked == 1024);
    CHECK(scan1("{\"type\":\"disconnect\",\"code\":1001,\"reason\":\"draining\"}", &m) == LT_OK &&
          m.type == LT_M_DISCONNECT && m.close_code == 1001);
    CHECK(scan1("{\"type\":\"gap\",\"channel\":\"c\",\"from\":5,\"to\":9}", &m) == LT_OK &&
          m.type == LT_M_GAP && m.gap_from == 5 && m.gap_to == 9);
    CHECK(scan1("{\"type\":\"error\",\"error\":{\"code\":400,\"reason\":\"bad_request\"}}", &m) ==
              LT_OK &&
          m.type == LT_M_ERROR && m.error_code == 400 && !m.has_id);
    CHECK(scan1("{\"type\":\"whatever\"}", &m) == LT_OK && m.type == LT_M_OTHER);
    /* several per frame, newline separated or back to back */
    const char *many = "{\"type\":\"pong\"}\n{\"type\":\"reply\",\"id\":1,\"ok\":true}"
                       "{\"type\":\"reply\",\"id\":2,\"ok\":true}\n\n";
    size_t pos = 0, count = 0;
    lt_status st;
    while ((st = lt_scan_json((const uint8_t *)many, strlen(many), &pos, &m)) == LT_OK)
        count++;
    CHECK(st == LT_AGAIN && count == 3 && pos == strlen(many));
    static const char *const bad[] = {
        "{",          "{\"type\"}", "{\"type\":}",
        "{\"a\":1,}", "[1]",        "{\"a\":\"unterminated}",
        "{\"a\" 1}",  "x",          "{\"a\":{\"b\":1}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        CHECK(scan1(bad[i], &m) == LT_ERR);
    /* nesting past the depth limit is refused, not recursed into without bound */
    char deep[200];
    memset(deep, '[', sizeof deep);
    memcpy(deep, "{\"a\":", 5);
    deep[sizeof deep - 1] = '\0';
    CHECK(scan1(deep, &m) == LT_ERR);
}

static void test_encoders(void)
{
    uint8_t buf[4096];
    for (int codec = 0; codec < 2; codec++) {
        enum lt_codec c = (enum lt_codec)codec;
        static const uint32_t payloads[] = {0, 10, 40, 64, 128, 300, 1000, 3000};
        for (size_t i = 0; i < sizeof payloads / sizeof payloads[0]; i++) {
            struct lt_out o = {.p = buf, .len = 0, .cap = sizeof buf};
            uint64_t t = 987654321012ull;
            lt_enc_pub(&o, c, 77, "load.c12", 5, 2, t, payloads[i]);
            CHECK(!o.overflow);
            struct lt_smsg m;
            size_t pos = 0;
            lt_status st = c == LT_CODEC_JSON ? lt_scan_json(buf, o.len, &pos, &m)
                                              : lt_scan_msgpack(buf, o.len, &pos, &m);
            CHECK(st == LT_OK && (pos == o.len || (pos + 1 == o.len && buf[pos] == '\n')));
            CHECK(m.has_id && m.id == 77 && m.has_data && m.s == 5 && m.p == 2 && m.t == t);
            CHECK(m.channel_len == 8 && memcmp(m.channel, "load.c12", 8) == 0);
            /* `data` is exactly the asked size when that is reachable */
            size_t min = lt_data_min_size(c, 5, 2, t);
            size_t data_len;
            if (c == LT_CODEC_JSON) {
                const char *d = strstr((const char *)buf, "\"data\":");
                data_len = o.len - (size_t)(d + 7 - (const char *)buf) - 2; /* "}\n" */
            } else {
                /* data is the last value: after "data" key (fixstr a4 'data') */
                const uint8_t *d = NULL;
                for (size_t k = 0; k + 5 <= o.len; k++)
                    if (memcmp(buf + k,
                               "\xa4"
                               "data",
                               5) == 0)
                        d = buf + k + 5;
                data_len = d ? o.len - (size_t)(d - buf) : 0;
            }
            size_t want = payloads[i] > min ? payloads[i] : min;
            if (c == LT_CODEC_JSON)
                CHECK(data_len == want);
            else
                CHECK(data_len <= want && data_len + 2 >= want);
        }
        struct lt_out o = {.p = buf, .len = 0, .cap = sizeof buf};
        lt_enc_connect(&o, c, 1, "rtgate-load", "");
        lt_enc_connect(&o, c, 3, "rtgate-load", "eyJhbGciOiJIUzI1NiJ9.e30.c2ln");
        lt_enc_sub(&o, c, 2, "load.fanout", false);
        lt_enc_sub(&o, c, 4, "load.room", true);
        lt_enc_ack(&o, c, "load.fanout", 99);
        CHECK(!o.overflow);
        size_t pos = 0;
        struct lt_smsg m;
        lt_status (*scan)(const uint8_t *, size_t, size_t *, struct lt_smsg *) =
            c == LT_CODEC_JSON ? lt_scan_json : lt_scan_msgpack;
        CHECK(scan(buf, o.len, &pos, &m) == LT_OK && m.has_id && m.id == 1);
        CHECK(scan(buf, o.len, &pos, &m) == LT_OK && m.has_id && m.id == 3);
        CHECK(scan(buf, o.len, &pos, &m) == LT_OK && m.id == 2 && m.channel_len == 11);
        CHECK(scan(buf, o.len, &pos, &m) == LT_OK && m.id == 4 && m.channel_len == 9);
        CHECK(scan(buf, o.len, &pos, &m) == LT_OK && m.has_seq && m.seq == 99);
        CHECK(scan(buf, o.len, &pos, &m) == LT_AGAIN);
        if (c == LT_CODEC_JSON) {
            uint8_t t[128];
            struct lt_out to = {.p = t, .len = 0, .cap = sizeof t - 1};
            lt_enc_connect(&to, c, 7, "n", "a.b.c");
            t[to.len] = '\0';
            CHECK(!strcmp((char *)t,
                          "{\"type\":\"connect\",\"id\":7,\"name\":\"n\",\"token\":\"a.b.c\"}\n"));
            to.len = 0;
            lt_enc_sub(&to, c, 5, "r", true);
            t[to.len] = '\0';
            CHECK(!strcmp((char *)t,
                          "{\"type\":\"sub\",\"id\":5,\"channel\":\"r\",\"presence\":true}\n"));
        }
        /* a too-small buffer overflows cleanly */
        struct lt_out small = {.p = buf, .len = 0, .cap = 20};
        lt_enc_pub(&small, c, 1, "load.fanout", 1, 1, 1, 100);
        CHECK(small.overflow && small.len <= 20);
    }
}

/* msgpack bytes as a server would write them */
static size_t mp_fixstr(uint8_t *p, const char *s)
{
    size_t n = strlen(s);
    p[0] = (uint8_t)(0xA0 | n);
    memcpy(p + 1, s, n);
    return n + 1;
}

static void test_msgpack(void)
{
    uint8_t b[256];
    size_t n = 0;
    b[n++] = 0x85;
    n += mp_fixstr(b + n, "type");
    n += mp_fixstr(b + n, "msg");
    n += mp_fixstr(b + n, "channel");
    n += mp_fixstr(b + n, "load.fanout");
    n += mp_fixstr(b + n, "ts");
    b[n++] = 0xCF;
    for (int i = 0; i < 8; i++)
        b[n++] = (uint8_t)(0x01 + i);
    n += mp_fixstr(b + n, "meta");
    b[n++] = 0x92; /* [nil, bin8 3] */
    b[n++] = 0xC0;
    b[n++] = 0xC4;
    b[n++] = 3;
    b[n++] = 1;
    b[n++] = 2;
    b[n++] = 3;
    n += mp_fixstr(b + n, "data");
    b[n++] = 0x84;
    n += mp_fixstr(b + n, "s");
    b[n++] = 0xCD;
    b[n++] = 0x01;
    b[n++] = 0x00; /* 256 */
    n += mp_fixstr(b + n, "p");
    b[n++] = 0x00;
    n += mp_fixstr(b + n, "t");
    b[n++] = 0xCE;
    b[n++] = 0x12;
    b[n++] = 0x34;
    b[n++] = 0x56;
    b[n++] = 0x78;
    n += mp_fixstr(b + n, "pad");
    n += mp_fixstr(b + n, "xx");
    size_t first = n;
    b[n++] = 0x83; /* a reply right behind it */
    n += mp_fixstr(b + n, "type");
    n += mp_fixstr(b + n, "reply");
    n += mp_fixstr(b + n, "id");
    b[n++] = 0x07;
    n += mp_fixstr(b + n, "ok");
    b[n++] = 0xC3;
    struct lt_smsg m;
    size_t pos = 0;
    CHECK(lt_scan_msgpack(b, n, &pos, &m) == LT_OK && pos == first);
    CHECK(m.type == LT_M_MSG && m.has_data && m.s == 256 && m.p == 0 && m.t == 0x12345678u);
    CHECK(m.channel_len == 11 && memcmp(m.channel, "load.fanout", 11) == 0);
    CHECK(lt_scan_msgpack(b, n, &pos, &m) == LT_OK && m.type == LT_M_REPLY && m.id == 7 &&
          m.ok == 1);
    CHECK(lt_scan_msgpack(b, n, &pos, &m) == LT_AGAIN);
    for (size_t cut = 1; cut < first; cut++) {
        pos = 0;
        CHECK(lt_scan_msgpack(b, cut, &pos, &m) == LT_ERR);
    }
    /* huge container counts are refused before any work */
    static const uint8_t bomb1[] = {0xDD, 0x05, 0xF5, 0xE1, 0x00};
    static const uint8_t bomb2[] = {0x81, 0xA1, 'a', 0xDF, 0x7F, 0xFF, 0xFF, 0xFF};
    pos = 0;
    CHECK(lt_scan_msgpack(bomb1, sizeof bomb1, &pos, &m) == LT_ERR);
    pos = 0;
    CHECK(lt_scan_msgpack(bomb2, sizeof bomb2, &pos, &m) == LT_ERR);
}

static void test_hist(void)
{
    struct lt_hist *h = malloc(sizeof *h), *h2 = malloc(sizeof *h2);
    if (!h || !h2)
        return;
    lt_hist_init(h);
    CHECK(lt_hist_percentile(h, 50) == 0);
    for (uint64_t v = 1; v <= 1000000; v++)
        lt_hist_record(h, v);
    CHECK(h->total == 1000000 && h->min == 1 && h->max == 1000000);
    CHECK(fabs(lt_hist_mean(h) - 500000.5) < 1e-3);
    static const double qs[] = {1, 10, 50, 90, 99, 99.9, 99.99};
    for (size_t i = 0; i < sizeof qs / sizeof qs[0]; i++) {
        double want = qs[i] / 100.0 * 1e6;
        double got = (double)lt_hist_percentile(h, qs[i]);
        CHECK(fabs(got - want) / want < 0.01);
    }
    CHECK(lt_hist_percentile(h, 100) == 1000000);
    /* bucket bounds hold every value within 1/128 */
    uint64_t v = 1;
    for (int i = 0; i < 2000; i++) {
        size_t idx = lt_hist_index(v);
        uint64_t lo = lt_hist_lowest_equivalent(idx), hi = lt_hist_highest_equivalent(idx);
        CHECK(idx < LT_HIST_COUNTS && lo <= v && v <= hi);
        CHECK(v < 256 ? lo == hi : (double)(hi - lo + 1) / (double)lo <= 1.0 / 128 + 1e-12);
        v = v + v / 97 + 1;
        if (v > LT_HIST_MAX_NS)
            break;
    }
    CHECK(lt_hist_index(LT_HIST_MAX_NS * 10) == lt_hist_index(LT_HIST_MAX_NS));
    CHECK(lt_hist_index(UINT64_MAX) < LT_HIST_COUNTS);
    /* contiguous indexes cover contiguous value ranges */
    for (size_t i = 1; i < LT_HIST_COUNTS; i++)
        CHECK(lt_hist_lowest_equivalent(i) == lt_hist_highest_equivalent(i - 1) + 1);
    lt_hist_init(h2);
    lt_hist_record(h2, 5000000000ull);
    lt_hist_merge(h2, h);
    CHECK(h2->total == 1000001 && h2->max == 5000000000ull && h2->min == 1);
    CHECK(lt_hist_percentile(h2, 100) == 5000000000ull);
    free(h);
    free(h2);
}

static void test_track(void)
{
    struct lt_track t = {0, 0};
    CHECK(lt_track_seen(&t, 0) == LT_TR_NEW);
    CHECK(lt_track_seen(&t, 1) == LT_TR_NEW);
    CHECK(lt_track_seen(&t, 1) == LT_TR_DUP);
    CHECK(lt_track_seen(&t, 5) == LT_TR_NEW); /* 2..4 missing for now */
    CHECK(lt_track_seen(&t, 3) == LT_TR_LATE);
    CHECK(lt_track_seen(&t, 3) == LT_TR_DUP);
    CHECK(lt_track_seen(&t, 0) == LT_TR_DUP);
    CHECK(lt_track_seen(&t, 200) == LT_TR_NEW);
    CHECK(lt_track_seen(&t, 199) == LT_TR_LATE);
    CHECK(lt_track_seen(&t, 199) == LT_TR_DUP);
    CHECK(lt_track_seen(&t, 200) == LT_TR_DUP);
    CHECK(lt_track_seen(&t, 4) == LT_TR_LATE); /* beyond the window: taken as late */
    struct lt_track u = {0, 0};
    CHECK(lt_track_seen(&u, 7) == LT_TR_NEW); /* joined late: 0..6 never seen */
    CHECK(lt_track_seen(&u, 6) == LT_TR_LATE);
    CHECK(lt_track_seen(&u, 7) == LT_TR_DUP);
}

static void test_config(void)
{
    struct lt_config *cfg = calloc(1, sizeof *cfg);
    if (!cfg)
        return;
    char err[256];
    CHECK(lt_parse_url(cfg, "ws://127.0.0.1:8080/ws", err, sizeof err));
    CHECK(cfg->port == 8080 && strcmp(cfg->path, "/ws") == 0 &&
          strcmp(cfg->host_header, "127.0.0.1:8080") == 0);
    CHECK(lt_parse_url(cfg, "ws://localhost:9000", err, sizeof err) && strcmp(cfg->path, "/") == 0);
    CHECK(lt_parse_url(cfg, "ws://127.9.8.7/x/y", err, sizeof err) && cfg->port == 80);
    CHECK(lt_parse_url(cfg, "ws://[::1]:8080/ws", err, sizeof err) &&
          strcmp(cfg->host_header, "[::1]:8080") == 0 && !cfg->tls);
    CHECK(lt_parse_url(cfg, "wss://127.0.0.1/ws", err, sizeof err) && cfg->tls &&
          cfg->port == 443 && strcmp(cfg->host, "127.0.0.1") == 0);
    CHECK(lt_parse_url(cfg, "wss://localhost:8443/ws", err, sizeof err) && cfg->tls &&
          cfg->port == 8443 && strcmp(cfg->path, "/ws") == 0);
    static const char *const refused[] = {
        "ws://10.0.0.1:8080/ws", "ws://example.com/ws",   "wss://10.0.0.1/ws",
        "http://127.0.0.1/ws",   "ws://0.0.0.0:80/ws",    "ws://[2001:db8::1]:80/",
        "ws://127.0.0.1:0/ws",   "ws://127.0.0.1:99999/", "ws://:80/ws",
    };
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++)
        CHECK(!lt_parse_url(cfg, refused[i], err, sizeof err));
    CHECK(lt_parse_url(cfg, "ws://127.0.0.1:8080/ws", err, sizeof err));
    CHECK(lt_add_source(cfg, "127.0.0.2", err, sizeof err) && cfg->n_src == 1);
    CHECK(!lt_add_source(cfg, "192.168.1.1", err, sizeof err));
    CHECK(!lt_add_source(cfg, "::1", err, sizeof err)); /* not the URL's family */
    strcpy(cfg->channel_prefix, "load");
    char name[64];
    cfg->scenario = LT_SC_FANOUT;
    lt_channel_name(cfg, 5, name, sizeof name);
    CHECK(strcmp(name, "load.fanout") == 0);
    cfg->scenario = LT_SC_CHANNELS;
    lt_channel_name(cfg, 5, name, sizeof name);
    CHECK(strcmp(name, "load.c5") == 0);
    cfg->subs = 10;
    struct lt_slice s;
    uint32_t covered = 0;
    for (uint32_t w = 0; w < 3; w++) {
        lt_slice_of(cfg, w, 3, &s);
        CHECK(s.sub_lo == covered);
        covered = s.sub_hi;
    }
    CHECK(covered == 10);
    struct lt_stats a, b;
    memset(&a, 0, sizeof a);
    memset(&b, 0, sizeof b);
    a.delivered = 3;
    a.setup_first_ns = 50;
    a.setup_last_ns = 70;
    b.delivered = 4;
    b.setup_first_ns = 40;
    b.setup_last_ns = 60;
    lt_stats_add(&a, &b);
    CHECK(a.delivered == 7 && a.setup_first_ns == 40 && a.setup_last_ns == 70);
    cfg->scenario = LT_SC_FANOUT;
    lt_nats_subject(cfg, 5, name, sizeof name);
    CHECK(strcmp(name, "rtgate.eph.load.fanout") == 0);
    cfg->scenario = LT_SC_CHANNELS;
    cfg->durable_nats = true;
    lt_nats_subject(cfg, 5, name, sizeof name);
    CHECK(strcmp(name, "rtgate.dur.load.c5") == 0);
    cfg->durable_nats = false;
    CHECK(lt_parse_nats_url(cfg, "nats://127.0.0.1:4222", err, sizeof err));
    CHECK(lt_parse_nats_url(cfg, "nats://localhost", err, sizeof err));
    CHECK(lt_parse_nats_url(cfg, "nats://[::1]:4222", err, sizeof err));
    static const char *const nats_refused[] = {"nats://10.1.2.3:4222", "tls://127.0.0.1:4222",
                                               "nats://127.0.0.1:0", "nats://example.com:4222",
                                               "nats://127.0.0.1:4222x"};
    for (size_t i = 0; i < sizeof nats_refused / sizeof nats_refused[0]; i++)
        CHECK(!lt_parse_nats_url(cfg, nats_refused[i], err, sizeof err));
    CHECK(lt_error_code_index(429) == 6 && lt_error_code_index(999) == LT_ERR_CODES - 1);
    free(cfg);
}

/* Scans every operation of buf fed in pieces of `step` bytes, the way frames or reads cut it. */
static size_t nats_scan_pieces(const uint8_t *buf, size_t len, size_t step, struct lt_nmsg *out,
                               size_t max, bool *err)
{
    uint8_t acc[4096];
    size_t have = 0, n = 0;
    *err = false;
    for (size_t off = 0; off < len; off += step) {
        size_t k = len - off < step ? len - off : step;
        memcpy(acc + have, buf + off, k);
        have += k;
        size_t pos = 0;
        struct lt_nmsg m;
        lt_status st;
        while ((st = lt_nats_scan(acc, have, &pos, &m)) == LT_OK) {
            if (n < max) {
                /* keep the fields checked below; the pointers die with acc */
                out[n] = m;
                out[n].subject = NULL;
                out[n].payload = NULL;
                out[n].reply = m.reply ? "" : NULL;
            }
            n++;
        }
        if (st == LT_ERR) {
            *err = true;
            return n;
        }
        memmove(acc, acc + pos, have - pos);
        have -= pos;
    }
    if (have)
        *err = true; /* something was left unfinished */
    return n;
}

static void test_nats(void)
{
    struct lt_nmsg m;
    size_t pos = 0;
    const char *msg = "MSG rtgate.eph.load.fanout 1 5\r\nhello\r\n";
    CHECK(lt_nats_scan((const uint8_t *)msg, strlen(msg), &pos, &m) == LT_OK);
    CHECK(m.op == LT_N_MSG && m.sid == 1 && m.reply == NULL && m.payload_len == 5 &&
          memcmp(m.payload, "hello", 5) == 0 && pos == strlen(msg));
    CHECK(m.subject_len == 22 && memcmp(m.subject, "rtgate.eph.load.fanout", 22) == 0);
    /* every cut of an incomplete op asks for more and leaves pos alone */
    for (size_t cut = 0; cut < strlen(msg); cut++) {
        pos = 0;
        CHECK(lt_nats_scan((const uint8_t *)msg, cut, &pos, &m) == LT_AGAIN && pos == 0);
    }
    pos = 0;
    const char *rep = "msg a.b 7 _INBOX.x.12 0\r\n\r\n";
    CHECK(lt_nats_scan((const uint8_t *)rep, strlen(rep), &pos, &m) == LT_OK && m.op == LT_N_MSG &&
          m.sid == 7 && m.reply_len == 11 && memcmp(m.reply, "_INBOX.x.12", 11) == 0 &&
          m.payload_len == 0);
    pos = 0;
    const char *hmsg = "HMSG s 2 12 14\r\nNATS/1.0\r\n\r\nhi\r\n";
    CHECK(lt_nats_scan((const uint8_t *)hmsg, strlen(hmsg), &pos, &m) == LT_OK &&
          m.op == LT_N_MSG && m.header_len == 12 && m.payload_len == 2 &&
          memcmp(m.payload, "hi", 2) == 0 && pos == strlen(hmsg));
    /* a stream of operations, cut at every size: the same operations come out */
    const char *stream = "INFO {\"server_id\":\"X\",\"max_payload\":1048576}\r\n"
                         "PING\r\n+OK\r\nPONG\r\n"
                         "MSG rtgate.eph.load.c3 1 13\r\n{\"s\":1,\"p\":0}\r\n"
                         "MSG rtgate.eph.load.c3 1 reply.to 3\r\nabc\r\n"
                         "-ERR 'Slow Consumer'\r\nping\n";
    static const enum lt_nop want[] = {LT_N_INFO, LT_N_PING, LT_N_OK,  LT_N_PONG,
                                       LT_N_MSG,  LT_N_MSG,  LT_N_ERR, LT_N_PING};
    size_t nwant = sizeof want / sizeof want[0];
    for (size_t step = 1; step <= strlen(stream); step++) {
        struct lt_nmsg got[16];
        bool err;
        size_t n = nats_scan_pieces((const uint8_t *)stream, strlen(stream), step, got, 16, &err);
        bool same = !err && n == nwant;
        for (size_t i = 0; same && i < n; i++)
            same = got[i].op == want[i];
        CHECK(same);
        CHECK(n == nwant && got[4].payload_len == 13 && got[5].reply != NULL && got[5].sid == 1);
    }
    static const char *const bad[] = {
        "FOO bar\r\n",       "MSG subj\r\n",     "MSG subj 1 x\r\n",        "MSG s 1 3\r\nabcd\r\n",
        "MSG s 1 2 3 4\r\n", "HMSG s 1 5 3\r\n", "MSG s 1 99999999999\r\n",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        pos = 0;
        CHECK(lt_nats_scan((const uint8_t *)bad[i], strlen(bad[i]), &pos, &m) == LT_ERR);
    }
    /* a line that never ends is refused once it is longer than any real one */
    uint8_t *longline = malloc(LT_NATS_MAX_LINE + 8);
    if (longline) {
        memset(longline, 'A', LT_NATS_MAX_LINE + 8);
        pos = 0;
        CHECK(lt_nats_scan(longline, LT_NATS_MAX_LINE + 8, &pos, &m) == LT_ERR);
        pos = 0;
        CHECK(lt_nats_scan(longline, 100, &pos, &m) == LT_AGAIN);
        free(longline);
    }

    /* encoders: PUB carries the JSON data of exactly `payload` bytes, readable back */
    uint8_t buf[4096];
    static const uint32_t payloads[] = {0, 40, 128, 1000};
    for (size_t i = 0; i < sizeof payloads / sizeof payloads[0]; i++) {
        for (int r = 0; r < 2; r++) {
            struct lt_out o = {.p = buf, .len = 0, .cap = sizeof buf};
            uint64_t t = 123456789012345ull;
            lt_nats_enc_pub(&o, "rtgate.eph.load.c7", r ? "_INBOX.a.5" : NULL, 9, 3, t,
                            payloads[i]);
            CHECK(!o.overflow);
            pos = 0;
            CHECK(lt_nats_scan(buf, o.len, &pos, &m) == LT_ERR); /* PUB is not a server op */
            /* read it as the server would: turn PUB into MSG with a sid */
            char line[256];
            const char *nl = memchr(buf, '\n', o.len);
            CHECK(nl != NULL);
            if (!nl)
                continue;
            size_t hl = (size_t)(nl - (const char *)buf) + 1;
            size_t plen = o.len - hl - 2;
            snprintf(line, sizeof line, "MSG rtgate.eph.load.c7 1 %zu\r\n", plen);
            uint8_t as_msg[4096];
            size_t ml = strlen(line);
            memcpy(as_msg, line, ml);
            memcpy(as_msg + ml, buf + hl, o.len - hl);
            pos = 0;
            CHECK(lt_nats_scan(as_msg, ml + o.len - hl, &pos, &m) == LT_OK &&
                  pos == ml + o.len - hl);
            size_t min = lt_data_min_size(LT_CODEC_JSON, 9, 3, t);
            CHECK(m.payload_len == (payloads[i] > min ? payloads[i] : min));
            CHECK(m.payload_len == lt_data_json_len(9, 3, t, payloads[i]));
            struct lt_smsg d;
            CHECK(lt_scan_data_json(m.payload, m.payload_len, &d) == LT_OK && d.has_data &&
                  d.s == 9 && d.p == 3 && d.t == t && d.type == LT_M_MSG);
            char head[256];
            size_t hc = hl < sizeof head ? hl : sizeof head - 1;
            memcpy(head, buf, hc);
            head[hc] = '\0';
            CHECK(r == 0 || strstr(head, " _INBOX.a.5 ") != NULL);
        }
    }
    struct lt_smsg d;
    CHECK(lt_scan_data_json((const uint8_t *)" {\"s\":1,\"p\":2} ", 15, &d) == LT_OK &&
          !d.has_data);
    CHECK(lt_scan_data_json((const uint8_t *)"{\"s\":1}{", 8, &d) == LT_ERR);
    CHECK(lt_scan_data_json((const uint8_t *)"hello", 5, &d) == LT_ERR);
    struct lt_out o = {.p = buf, .len = 0, .cap = sizeof buf};
    lt_nats_enc_connect(&o);
    lt_nats_enc_sub(&o, "rtgate.eph.load.fanout", 1);
    lt_nats_enc_ping(&o);
    lt_nats_enc_pong(&o);
    CHECK(!o.overflow);
    buf[o.len] = '\0';
    static const char connect[] = "CONNECT {\"verbose\":false,\"pedantic\":false,";
    CHECK(strncmp((const char *)buf, connect, strlen(connect)) == 0);
    CHECK(strstr((const char *)buf, "\r\nSUB rtgate.eph.load.fanout 1\r\nPING\r\nPONG\r\n") !=
          NULL);
    struct lt_out small = {.p = buf, .len = 0, .cap = 30};
    lt_nats_enc_pub(&small, "rtgate.eph.load.fanout", NULL, 1, 1, 1, 100);
    CHECK(small.overflow && small.len <= 30);
}

/* lt_parse_args on a NULL-terminated list of arguments (argv[0] added). */
static int parse(struct lt_config *cfg, const char *const *args)
{
    static char prog[] = "rtgate-load";
    char *argv[32] = {prog};
    int argc = 1;
    for (; args[argc - 1] && argc < 32; argc++)
        argv[argc] = (char *)(uintptr_t)args[argc - 1];
    return lt_parse_args(cfg, argc, argv);
}

/* The text f printed into memory (the caller frees it). */
static char *printed(void (*fn)(FILE *))
{
    char *buf = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&buf, &len);
    if (!m)
        return NULL;
    fn(m);
    fclose(m);
    return buf;
}

static void test_options(void)
{
    struct lt_config *cfg = calloc(1, sizeof *cfg);
    if (!cfg)
        return;
#define URL "--url", "ws://127.0.0.1:9/ws"
    CHECK(parse(cfg, (const char *[]){URL, "--subs=20", "--rate", "50", "-q", NULL}) ==
          LT_ARGS_RUN);
    CHECK(cfg->subs == 20 && cfg->rate == 50 && cfg->verbose == -1 && cfg->channels == 1 &&
          cfg->publishers == 1 && cfg->workers == 1 && cfg->scenario == LT_SC_FANOUT);
    CHECK(lt_option_given(cfg, "--subs") && lt_option_given(cfg, "--conns") &&
          !lt_option_given(cfg, "--channels"));
    CHECK(parse(cfg, (const char *[]){URL, "--conns", "5", "-v", "-vv", NULL}) == LT_ARGS_RUN &&
          cfg->subs == 5 && cfg->verbose == 3 && cfg->rate == 200);
    CHECK(parse(cfg, (const char *[]){URL, "--scenario", "channels", "--subs", "100", NULL}) ==
              LT_ARGS_RUN &&
          cfg->channels == 100 && cfg->rate == 2000);
    CHECK(parse(cfg, (const char *[]){URL, "--scenario", "idle", "--no-ack", "--idle-sub", NULL}) ==
              LT_ARGS_RUN &&
          cfg->publishers == 0 && !cfg->ack && cfg->idle_sub && cfg->hold_s == 10);
    CHECK(parse(cfg, (const char *[]){URL, "--subprotocol", "msgpack", NULL}) == LT_ARGS_RUN &&
          cfg->codec == LT_CODEC_MSGPACK);
    CHECK(parse(cfg, (const char *[]){URL, "--target", "nats-ws", "--nats", "nats://127.0.0.1:4222",
                                      NULL}) == LT_ARGS_RUN &&
          cfg->pub_via == LT_PV_NATS);
    CHECK(parse(cfg, (const char *[]){URL, "--server-pid", "7,8", "--label", "x", NULL}) ==
              LT_ARGS_RUN &&
          cfg->n_server_pids == 2 && cfg->server_pids[1] == 8 && strcmp(cfg->label, "x") == 0);
    CHECK(parse(cfg, (const char *[]){URL, "--scenario", "presence", "--queriers", "0",
                                      "--query-rate", "0", NULL}) == LT_ARGS_RUN &&
          cfg->sc.setters == 1000 && cfg->sc.queriers == 0 && cfg->sc.query_rate == 0);
    /* Usage errors, and the actions that win over them. */
    char long_label[129];
    memset(long_label, 'x', 128);
    long_label[128] = '\0';
    const char *const *const bad[] = {
        (const char *[]){"--subs", "5", NULL},               /* no --url */
        (const char *[]){URL, "--subs", NULL},               /* no value */
        (const char *[]){URL, "--subs", "-1", NULL},         /* out of range */
        (const char *[]){URL, "--rate", "0", NULL},          /* out of range */
        (const char *[]){URL, "--no-ack=1", NULL},           /* a flag with a value */
        (const char *[]){URL, "--bogus", "1", NULL},         /* unknown */
        (const char *[]){URL, "stray", NULL},                /* not an option */
        (const char *[]){URL, "--subprotocol", "xml", NULL}, /* not a choice */
        (const char *[]){URL, "--channel-prefix", "a..b", NULL},
        (const char *[]){URL, "--target", "nats-ws", NULL}, /* needs --nats */
        (const char *[]){URL, "--durable-nats", NULL},      /* needs --publish-via nats */
        (const char *[]){URL, "--channels", "3", NULL},     /* fanout has one */
        (const char *[]){URL, "--scenario", "idle", "--publishers", "1", NULL},
        (const char *[]){URL, "--label", long_label, NULL}, /* 128 characters */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        CHECK(parse(cfg, bad[i]) == LT_ARGS_USAGE);
    CHECK(parse(cfg, (const char *[]){"--bogus", "-h", NULL}) == LT_ARGS_HELP);
    CHECK(parse(cfg, (const char *[]){URL, "--self-test", NULL}) == LT_ARGS_SELFTEST);
    CHECK(parse(cfg, (const char *[]){"--help-markdown", NULL}) == LT_ARGS_HELP_MARKDOWN);
#undef URL
    /* --help and the markdown name every option the parser takes. */
    char *help = printed(lt_usage), *md = printed(lt_usage_markdown);
    static const char *const names[] = {"--subs",           "--conns",      "--url2",
                                        "--hold",           "--center",     "--self-test",
                                        "--rx-coalesce-us", "-v, --verbose"};
    for (size_t i = 0; help && md && i < sizeof names / sizeof names[0]; i++)
        CHECK(strstr(help, names[i]) && strstr(md, names[i]));
    CHECK(help && md && strstr(md, "| `--scenario NAME` |") && strstr(md, "\\<prefix\\>"));
    free(help);
    free(md);
    free(cfg);
}

int lt_selftest(void)
{
    test_sha1_base64();
    test_handshake();
    test_frames();
    test_json();
    test_encoders();
    test_msgpack();
    test_hist();
    test_track();
    test_config();
    test_nats();
    test_options();
    failures += lt_scen_selftest(&checks);
    printf("self-test: %d checks, %d failed\n", checks, failures);
    return failures ? 1 : 0;
}
