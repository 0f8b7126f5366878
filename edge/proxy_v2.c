/*
 * proxy_v2.c: the PROXY protocol version 2 header a load balancer (haproxy's
 * send-proxy-v2, AWS NLB, ...) sends before the client's bytes, as specified
 * in haproxy's doc/proxy-protocol.txt, section 2.2. Pure: see edge.h.
 *
 *   12 bytes  signature \r\n\r\n\0\r\nQUIT\n
 *    1 byte   version (high nibble, 2) and command (low: 0 LOCAL, 1 PROXY)
 *    1 byte   family (high: 0 UNSPEC, 1 INET, 2 INET6, 3 UNIX) and
 *             transport (low: 0 UNSPEC, 1 STREAM, 2 DGRAM)
 *    2 bytes  length of what follows, big-endian
 *    then     addresses (12, 36 or 216 bytes by family) and TLVs
 */
#include "edge.h"

#include <string.h>

static const uint8_t signature[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                      0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};

enum { CMD_LOCAL = 0, CMD_PROXY = 1 };
enum { FAM_UNSPEC = 0, FAM_INET = 1, FAM_INET6 = 2, FAM_UNIX = 3 };
enum { TRANSPORT_UNSPEC = 0, TRANSPORT_STREAM = 1 };

static enum edge_proxy_status invalid(struct edge_proxy_result *out, const char *why)
{
    memset(out, 0, sizeof *out);
    out->status = EDGE_PROXY_INVALID;
    out->why = why;
    return out->status;
}

static uint16_t be16(const uint8_t *p)
{
    return (uint16_t)((p[0] << 8) | p[1]);
}

/* The TLVs after the addresses must tile the rest exactly. */
static bool tlvs_well_formed(const uint8_t *p, size_t len)
{
    while (len) {
        if (len < 3)
            return false;
        size_t tlv = 3u + be16(p + 1);
        if (tlv > len)
            return false;
        p += tlv;
        len -= tlv;
    }
    return true;
}

/* Reads the addresses of a PROXY command over TCP; `body` has body_len bytes. */
static enum edge_proxy_status parse_addresses(const uint8_t *body, size_t body_len, unsigned family,
                                              struct edge_proxy_result *out)
{
    size_t addr_len = family == FAM_INET ? 12 : family == FAM_INET6 ? 36 : 216;
    if (body_len < addr_len)
        return invalid(out, "address block shorter than its family");
    if (family == FAM_INET) {
        edge_addr_set(&out->src, EDGE_AF_V4, body);
        edge_addr_set(&out->dst, EDGE_AF_V4, body + 4);
        out->src_port = be16(body + 8);
        out->dst_port = be16(body + 10);
        out->has_src = true;
    } else if (family == FAM_INET6) {
        edge_addr_set(&out->src, EDGE_AF_V6, body);
        edge_addr_set(&out->dst, EDGE_AF_V6, body + 16);
        out->src_port = be16(body + 32);
        out->dst_port = be16(body + 34);
        out->has_src = true;
    } /* FAM_UNIX: paths, no IP: the connection's own address stands */
    if (!tlvs_well_formed(body + addr_len, body_len - addr_len))
        return invalid(out, "malformed TLV");
    out->status = EDGE_PROXY_OK;
    return out->status;
}

enum edge_proxy_status edge_proxy_v2_parse(const uint8_t *buf, size_t len,
                                           struct edge_proxy_result *out)
{
    memset(out, 0, sizeof *out);
    if (len == 0) {
        out->status = EDGE_PROXY_NEED_MORE;
        out->need = EDGE_PROXY_V2_FIXED;
        return out->status;
    }
    size_t sig_seen = len < sizeof signature ? len : sizeof signature;
    if (memcmp(buf, signature, sig_seen) != 0) {
        if (len >= 5 && memcmp(buf, "PROXY", 5) == 0)
            return invalid(out, "PROXY protocol v1 (text) header; send-proxy-v2 expected");
        return invalid(out, "no PROXY v2 signature");
    }
    if (len > 12 && (buf[12] >> 4) != 2)
        return invalid(out, "PROXY protocol version is not 2");
    if (len > 12 && (buf[12] & 0x0F) > CMD_PROXY)
        return invalid(out, "unknown PROXY v2 command");
    if (len > 13 && ((buf[13] >> 4) > FAM_UNIX || (buf[13] & 0x0F) > 2))
        return invalid(out, "unknown PROXY v2 address family or transport");
    if (len < EDGE_PROXY_V2_FIXED) {
        out->status = EDGE_PROXY_NEED_MORE;
        out->need = EDGE_PROXY_V2_FIXED;
        return out->status;
    }
    size_t total = EDGE_PROXY_V2_FIXED + be16(buf + 14);
    if (total > EDGE_PROXY_V2_MAX)
        return invalid(out, "PROXY v2 header longer than accepted");
    if (len < total) {
        out->status = EDGE_PROXY_NEED_MORE;
        out->need = total;
        return out->status;
    }
    out->consumed = total;
    unsigned command = buf[12] & 0x0F, family = buf[13] >> 4, transport = buf[13] & 0x0F;
    const uint8_t *body = buf + EDGE_PROXY_V2_FIXED;
    size_t body_len = total - EDGE_PROXY_V2_FIXED;
    if (command == CMD_LOCAL || family == FAM_UNSPEC) {
        /* A health check from the proxy itself, or a protocol it cannot
         * describe: the spec says to use the connection's own addresses.
         * Whatever follows is skipped unread. */
        out->status = EDGE_PROXY_OK;
        return out->status;
    }
    if (transport != TRANSPORT_STREAM)
        return invalid(out, "PROXY v2 transport is not STREAM on a TCP listener");
    return parse_addresses(body, body_len, family, out);
}
