/*
 * edge.h: what the gateway decides about a connection from its first bytes
 * and headers, as pure functions: IP addresses and CIDR ranges, the client
 * address behind trusted proxies (X-Forwarded-For), the PROXY protocol v2
 * header, and browser Origins. No I/O, no clock, no allocation, no lws: each
 * function reads only its arguments, so unit tests and fuzzers drive them
 * directly. Any thread.
 */
#ifndef EDGE_H
#define EDGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- addresses and ranges -------------------------------------------- */

enum edge_family { EDGE_AF_NONE = 0, EDGE_AF_V4 = 4, EDGE_AF_V6 = 6 };

/* An IP address. IPv4-mapped IPv6 (::ffff:a.b.c.d) is always stored as IPv4,
 * so one client has one address whatever socket family carried it. */
struct edge_addr {
    uint8_t family; /* enum edge_family */
    uint8_t bytes[16];
};

/* Longest text of an address (INET6_ADDRSTRLEN) and of a limit key ("/64"). */
#define EDGE_ADDR_TEXT 46
#define EDGE_KEY_TEXT  (EDGE_ADDR_TEXT + 4)

/* From 4 (V4) or 16 (V6) network-order bytes. */
void edge_addr_set(struct edge_addr *out, enum edge_family family, const uint8_t *bytes);
/* Parses a bare IPv4 or IPv6 literal of exactly len bytes. */
bool edge_addr_parse(const char *s, size_t len, struct edge_addr *out);
/* From a struct sockaddr (AF_INET or AF_INET6). False for other families. */
bool edge_addr_from_sockaddr(const void *sa, size_t salen, struct edge_addr *out);
/* The canonical text ("10.1.2.3", "2001:db8::1"); "-" for EDGE_AF_NONE. */
void edge_addr_format(const struct edge_addr *a, char out[EDGE_ADDR_TEXT]);
bool edge_addr_equal(const struct edge_addr *a, const struct edge_addr *b);
/*
 * The key per-address limits count under: the address itself for IPv4, its
 * /64 for IPv6 ("2001:db8:1:2::/64"), since one IPv6 host commonly holds a
 * whole /64 and could otherwise walk around any per-address limit.
 */
void edge_addr_limit_key(const struct edge_addr *a, char out[EDGE_KEY_TEXT]);

struct edge_cidr {
    struct edge_addr net; /* host bits cleared */
    uint8_t prefix;       /* 0..32 or 0..128 */
};

/* "10.0.0.0/8", "2001:db8::/32", or a bare address (a single host). Host
 * bits beyond the prefix are cleared. IPv4-mapped ranges become IPv4. */
bool edge_cidr_parse(const char *s, size_t len, struct edge_cidr *out);
bool edge_cidr_contains(const struct edge_cidr *c, const struct edge_addr *a);
bool edge_cidr_match_any(const struct edge_cidr *set, size_t n, const struct edge_addr *a);

/*
 * The client address in an X-Forwarded-For value (entries separated by
 * commas, as lws joins repeated headers), given the trusted proxies: the
 * right-most entry that is not itself a trusted proxy. Each trusted proxy
 * appends the address it saw, so everything right of the first untrusted
 * entry was written by trusted hops and everything left of it may be forged.
 * When every entry is trusted, the left-most one. When an entry that is not
 * an address is reached, the trusted entry right of it if any. False (use
 * the connection's own address) when there is nothing usable. Entries may
 * be "a.b.c.d", "a.b.c.d:port", an IPv6 literal, or "[v6]" / "[v6]:port".
 */
bool edge_xff_pick(const char *xff, size_t len, const struct edge_cidr *trusted, size_t n_trusted,
                   struct edge_addr *out);

/* ---- PROXY protocol version 2 (haproxy's send-proxy-v2) --------------- */

#define EDGE_PROXY_V2_FIXED 16   /* signature, version/command, family, length */
#define EDGE_PROXY_V2_MAX   1040 /* longest header accepted: 1 KiB of addresses and TLVs */

enum edge_proxy_status {
    EDGE_PROXY_NEED_MORE = 0, /* a valid prefix: read up to `need` bytes in total */
    EDGE_PROXY_OK,            /* a whole header of `consumed` bytes */
    EDGE_PROXY_INVALID,       /* not a PROXY v2 header, or a malformed one: `why` */
};

struct edge_proxy_result {
    enum edge_proxy_status status;
    size_t need;     /* NEED_MORE: total bytes to have before calling again */
    size_t consumed; /* OK: header bytes; what follows belongs to the client */
    bool has_src;    /* OK: PROXY over TCP/IPv4 or IPv6; else (LOCAL, UNSPEC,
                        UNIX) the connection's own address stands */
    struct edge_addr src, dst;
    uint16_t src_port, dst_port;
    const char *why; /* INVALID: a static reason for the log */
};

/*
 * Parses the start of a connection (len bytes so far) as a PROXY protocol v2
 * header. Never reads beyond len. A prefix that cannot begin a v2 header is
 * INVALID as soon as one byte shows it (a client sending "GET " is refused
 * at once); a header longer than EDGE_PROXY_V2_MAX is INVALID. TLVs must be
 * well formed but are otherwise ignored. Returns out->status.
 */
enum edge_proxy_status edge_proxy_v2_parse(const uint8_t *buf, size_t len,
                                           struct edge_proxy_result *out);

/* ---- browser Origins ------------------------------------------------- */

#define EDGE_ORIGIN_MAX 256

/*
 * Normalises an Origin the way browsers serialise one (RFC 6454): a
 * scheme, "://", a host and an optional port; scheme and host lower-cased,
 * the scheme's default port dropped (80 for http/ws, 443 for https/wss); one
 * trailing "/" tolerated (for configured values). No path, query, user info
 * or spaces. False for anything else, "null" included.
 */
bool edge_origin_normalize(const char *in, size_t len, char *out, size_t cap);

#endif
