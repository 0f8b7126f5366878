#include "edge.h"

#include <criterion/criterion.h>
#include <string.h>

static const uint8_t sig[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};

/* Builds a header: command, family/transport byte, then body bytes. */
static size_t header(uint8_t *out, uint8_t ver_cmd, uint8_t fam, const uint8_t *body,
                     size_t body_len)
{
    memcpy(out, sig, 12);
    out[12] = ver_cmd;
    out[13] = fam;
    out[14] = (uint8_t)(body_len >> 8);
    out[15] = (uint8_t)body_len;
    if (body_len)
        memcpy(out + 16, body, body_len);
    return 16 + body_len;
}

static const uint8_t tcp4_body[12] = {203, 0, 113, 7, 10, 0, 0, 1, 0x12, 0x34, 0x01, 0xbb};

static void assert_src(const struct edge_proxy_result *r, const char *want)
{
    char text[EDGE_ADDR_TEXT];
    cr_assert(r->has_src);
    edge_addr_format(&r->src, text);
    cr_assert_str_eq(text, want);
}

Test(proxy_v2, tcp4_gives_the_source)
{
    uint8_t buf[64];
    size_t n = header(buf, 0x21, 0x11, tcp4_body, sizeof tcp4_body);
    struct edge_proxy_result r;
    cr_assert_eq(edge_proxy_v2_parse(buf, n, &r), EDGE_PROXY_OK, "%s", r.why);
    cr_assert_eq(r.consumed, 28);
    assert_src(&r, "203.0.113.7");
    cr_assert_eq(r.src_port, 0x1234);
    cr_assert_eq(r.dst_port, 443);
}

Test(proxy_v2, bytes_after_the_header_are_not_consumed)
{
    uint8_t buf[64];
    size_t n = header(buf, 0x21, 0x11, tcp4_body, sizeof tcp4_body);
    memcpy(buf + n, "\x16\x03\x01", 3); /* a TLS ClientHello begins */
    struct edge_proxy_result r;
    cr_assert_eq(edge_proxy_v2_parse(buf, n + 3, &r), EDGE_PROXY_OK);
    cr_assert_eq(r.consumed, n);
}

Test(proxy_v2, tcp6_and_mapped_sources)
{
    uint8_t body[36] = {0x20, 0x01, 0x0d, 0xb8, [15] = 0x05, [16] = 0x20, [17] = 0x01};
    uint8_t buf[64];
    size_t n = header(buf, 0x21, 0x21, body, sizeof body);
    struct edge_proxy_result r;
    cr_assert_eq(edge_proxy_v2_parse(buf, n, &r), EDGE_PROXY_OK);
    assert_src(&r, "2001:db8::5");
    uint8_t mapped[36] = {[10] = 0xff, [11] = 0xff, [12] = 198, [13] = 51, [14] = 100, [15] = 9};
    n = header(buf, 0x21, 0x21, mapped, sizeof mapped);
    cr_assert_eq(edge_proxy_v2_parse(buf, n, &r), EDGE_PROXY_OK);
    assert_src(&r, "198.51.100.9");
}

Test(proxy_v2, local_and_unspec_keep_the_connection_address)
{
    uint8_t buf[64];
    size_t n = header(buf, 0x20, 0x00, NULL, 0);
    struct edge_proxy_result r;
    cr_assert_eq(edge_proxy_v2_parse(buf, n, &r), EDGE_PROXY_OK);
    cr_assert_not(r.has_src);
    cr_assert_eq(r.consumed, 16);
    n = header(buf, 0x20, 0x11, tcp4_body, sizeof tcp4_body); /* LOCAL ignores addresses */
    cr_assert_eq(edge_proxy_v2_parse(buf, n, &r), EDGE_PROXY_OK);
    cr_assert_not(r.has_src);
    n = header(buf, 0x21, 0x00, NULL, 0);
    cr_assert_eq(edge_proxy_v2_parse(buf, n, &r), EDGE_PROXY_OK);
    cr_assert_not(r.has_src);
}

Test(proxy_v2, tlvs_must_tile_the_rest)
{
    uint8_t body[12 + 8];
    memcpy(body, tcp4_body, 12);
    const uint8_t tlvs[8] = {0x04, 0x00, 0x01, 0xAA, 0x05, 0x00, 0x01, 0xBB}; /* NOOP, UNIQUE_ID */
    memcpy(body + 12, tlvs, 8);
    uint8_t buf[64];
    size_t n = header(buf, 0x21, 0x11, body, sizeof body);
    struct edge_proxy_result r;
    cr_assert_eq(edge_proxy_v2_parse(buf, n, &r), EDGE_PROXY_OK, "%s", r.why);
    body[12 + 2] = 0x06; /* first TLV now claims 6 bytes: runs past the end */
    n = header(buf, 0x21, 0x11, body, sizeof body);
    cr_assert_eq(edge_proxy_v2_parse(buf, n, &r), EDGE_PROXY_INVALID);
    n = header(buf, 0x21, 0x11, body, 14); /* 2 stray bytes: not a TLV */
    cr_assert_eq(edge_proxy_v2_parse(buf, n, &r), EDGE_PROXY_INVALID);
}

Test(proxy_v2, every_prefix_of_a_valid_header_needs_more)
{
    uint8_t buf[64];
    size_t n = header(buf, 0x21, 0x11, tcp4_body, sizeof tcp4_body);
    for (size_t len = 0; len < n; len++) {
        struct edge_proxy_result r;
        cr_assert_eq(edge_proxy_v2_parse(buf, len, &r), EDGE_PROXY_NEED_MORE, "len %zu: %s", len,
                     r.why);
        cr_assert_eq(r.need, len < 16 ? 16 : n);
    }
}

Test(proxy_v2, refuses_at_the_first_wrong_byte)
{
    struct edge_proxy_result r;
    cr_assert_eq(edge_proxy_v2_parse((const uint8_t *)"G", 1, &r), EDGE_PROXY_INVALID);
    cr_assert_eq(edge_proxy_v2_parse((const uint8_t *)"\x16\x03\x01", 3, &r), EDGE_PROXY_INVALID);
    cr_assert_eq(edge_proxy_v2_parse((const uint8_t *)"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n", 32, &r),
                 EDGE_PROXY_INVALID);
    cr_assert(strstr(r.why, "v1"), "%s", r.why);
}

Test(proxy_v2, refuses_bad_version_command_family_transport_and_length)
{
    uint8_t buf[64];
    struct edge_proxy_result r;
    size_t n = header(buf, 0x11, 0x11, tcp4_body, 12); /* version 1 */
    cr_assert_eq(edge_proxy_v2_parse(buf, 13, &r), EDGE_PROXY_INVALID);
    n = header(buf, 0x22, 0x11, tcp4_body, 12); /* command 2 */
    cr_assert_eq(edge_proxy_v2_parse(buf, n, &r), EDGE_PROXY_INVALID);
    n = header(buf, 0x21, 0x41, tcp4_body, 12); /* family 4 */
    cr_assert_eq(edge_proxy_v2_parse(buf, n, &r), EDGE_PROXY_INVALID);
    n = header(buf, 0x21, 0x12, tcp4_body, 12); /* DGRAM */
    cr_assert_eq(edge_proxy_v2_parse(buf, n, &r), EDGE_PROXY_INVALID);
    n = header(buf, 0x21, 0x11, tcp4_body, 8); /* too short for INET */
    cr_assert_eq(edge_proxy_v2_parse(buf, n, &r), EDGE_PROXY_INVALID);
    n = header(buf, 0x21, 0x21, tcp4_body, 12); /* too short for INET6 */
    cr_assert_eq(edge_proxy_v2_parse(buf, n, &r), EDGE_PROXY_INVALID);
}

Test(proxy_v2, refuses_a_header_longer_than_accepted)
{
    uint8_t buf[16];
    header(buf, 0x21, 0x11, NULL, 0);
    size_t body = EDGE_PROXY_V2_MAX - 16 + 1;
    buf[14] = (uint8_t)(body >> 8);
    buf[15] = (uint8_t)body;
    struct edge_proxy_result r;
    cr_assert_eq(edge_proxy_v2_parse(buf, 16, &r), EDGE_PROXY_INVALID);
    body--;
    buf[14] = (uint8_t)(body >> 8);
    buf[15] = (uint8_t)body;
    cr_assert_eq(edge_proxy_v2_parse(buf, 16, &r), EDGE_PROXY_NEED_MORE);
    cr_assert_eq(r.need, EDGE_PROXY_V2_MAX);
}
