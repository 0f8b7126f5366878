/*
 * addr.c: IP addresses, CIDR ranges and the client address behind trusted
 * proxies (X-Forwarded-For). Pure: see edge.h.
 */
#include "edge.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

static const uint8_t v4_mapped_prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

void edge_addr_set(struct edge_addr *out, enum edge_family family, const uint8_t *bytes)
{
    memset(out, 0, sizeof *out);
    if (family == EDGE_AF_V6 && memcmp(bytes, v4_mapped_prefix, 12) == 0) {
        out->family = EDGE_AF_V4;
        memcpy(out->bytes, bytes + 12, 4);
    } else {
        out->family = (uint8_t)family;
        memcpy(out->bytes, bytes, family == EDGE_AF_V4 ? 4 : 16);
    }
}

bool edge_addr_parse(const char *s, size_t len, struct edge_addr *out)
{
    char text[EDGE_ADDR_TEXT];
    if (len == 0 || len >= sizeof text || memchr(s, '\0', len))
        return false;
    memcpy(text, s, len);
    text[len] = '\0';
    uint8_t bytes[16];
    if (inet_pton(AF_INET, text, bytes) == 1) {
        edge_addr_set(out, EDGE_AF_V4, bytes);
        return true;
    }
    if (inet_pton(AF_INET6, text, bytes) == 1) {
        edge_addr_set(out, EDGE_AF_V6, bytes);
        return true;
    }
    return false;
}

bool edge_addr_from_sockaddr(const void *sa, size_t salen, struct edge_addr *out)
{
    sa_family_t family;
    if (salen < sizeof family)
        return false;
    memcpy(&family, (const uint8_t *)sa + offsetof(struct sockaddr, sa_family), sizeof family);
    if (family == AF_INET && salen >= sizeof(struct sockaddr_in)) {
        struct sockaddr_in in;
        memcpy(&in, sa, sizeof in);
        edge_addr_set(out, EDGE_AF_V4, (const uint8_t *)&in.sin_addr);
        return true;
    }
    if (family == AF_INET6 && salen >= sizeof(struct sockaddr_in6)) {
        struct sockaddr_in6 in6;
        memcpy(&in6, sa, sizeof in6);
        edge_addr_set(out, EDGE_AF_V6, in6.sin6_addr.s6_addr);
        return true;
    }
    return false;
}

void edge_addr_format(const struct edge_addr *a, char out[EDGE_ADDR_TEXT])
{
    int af = a->family == EDGE_AF_V4 ? AF_INET : a->family == EDGE_AF_V6 ? AF_INET6 : 0;
    if (!af || !inet_ntop(af, a->bytes, out, EDGE_ADDR_TEXT))
        snprintf(out, EDGE_ADDR_TEXT, "-");
}

bool edge_addr_equal(const struct edge_addr *a, const struct edge_addr *b)
{
    size_t n = a->family == EDGE_AF_V4 ? 4 : 16;
    return a->family == b->family && memcmp(a->bytes, b->bytes, n) == 0;
}

void edge_addr_limit_key(const struct edge_addr *a, char out[EDGE_KEY_TEXT])
{
    if (a->family != EDGE_AF_V6) {
        edge_addr_format(a, out);
        return;
    }
    struct edge_addr net = *a;
    memset(net.bytes + 8, 0, 8);
    char text[EDGE_ADDR_TEXT];
    edge_addr_format(&net, text);
    snprintf(out, EDGE_KEY_TEXT, "%s/64", text);
}

/* Clears every bit of a beyond the first prefix bits. */
static void mask_to(struct edge_addr *a, unsigned prefix)
{
    unsigned total = a->family == EDGE_AF_V4 ? 32 : 128;
    for (unsigned bit = prefix; bit < total; bit++)
        a->bytes[bit / 8] &= (uint8_t) ~(0x80u >> (bit % 8));
}

bool edge_cidr_parse(const char *s, size_t len, struct edge_cidr *out)
{
    const char *slash = memchr(s, '/', len);
    size_t addr_len = slash ? (size_t)(slash - s) : len;
    struct edge_addr a;
    if (!edge_addr_parse(s, addr_len, &a))
        return false;
    /* A mapped IPv6 range was stored as IPv4: its prefix counts from bit 96. */
    bool mapped = a.family == EDGE_AF_V4 && memchr(s, ':', addr_len);
    unsigned max = a.family == EDGE_AF_V4 ? 32 : 128;
    unsigned prefix = mapped ? 128 : max;
    if (slash) {
        const char *p = slash + 1, *end = s + len;
        if (p == end || end - p > 3)
            return false;
        prefix = 0;
        for (; p < end; p++) {
            if (*p < '0' || *p > '9')
                return false;
            prefix = prefix * 10 + (unsigned)(*p - '0');
        }
    }
    if (mapped) {
        if (prefix < 96 || prefix > 128)
            return false; /* wider than the mapped block: not an IPv4 range */
        prefix -= 96;
    }
    if (prefix > max)
        return false;
    mask_to(&a, prefix);
    out->net = a;
    out->prefix = (uint8_t)prefix;
    return true;
}

bool edge_cidr_contains(const struct edge_cidr *c, const struct edge_addr *a)
{
    if (c->net.family != a->family)
        return false;
    struct edge_addr masked = *a;
    mask_to(&masked, c->prefix);
    return edge_addr_equal(&masked, &c->net);
}

bool edge_cidr_match_any(const struct edge_cidr *set, size_t n, const struct edge_addr *a)
{
    for (size_t i = 0; i < n; i++)
        if (edge_cidr_contains(&set[i], a))
            return true;
    return false;
}

static bool all_in(const char *s, size_t len, const char *set)
{
    for (size_t i = 0; i < len; i++)
        if (!s[i] || !strchr(set, s[i]))
            return false;
    return true;
}

/* One X-Forwarded-For entry, spaces trimmed: "v4", "v4:port", "v6", "[v6]",
 * "[v6]:port". */
static bool parse_xff_entry(const char *s, size_t len, struct edge_addr *out)
{
    while (len && (*s == ' ' || *s == '\t'))
        s++, len--;
    while (len && (s[len - 1] == ' ' || s[len - 1] == '\t'))
        len--;
    if (len && s[0] == '[') {
        const char *close = memchr(s, ']', len);
        if (!close)
            return false;
        size_t rest = len - (size_t)(close - s) - 1;
        const char *port = close + 1;
        if (rest &&
            (port[0] != ':' || rest < 2 || rest > 6 || !all_in(port + 1, rest - 1, "0123456789")))
            return false;
        struct edge_addr a;
        if (!edge_addr_parse(s + 1, (size_t)(close - s) - 1, &a) || a.family != EDGE_AF_V6)
            return false;
        *out = a;
        return true;
    }
    const char *colon = memchr(s, ':', len);
    if (colon && !memchr(colon + 1, ':', len - (size_t)(colon - s) - 1)) {
        /* Exactly one colon: IPv4 with a port. */
        size_t port_len = len - (size_t)(colon - s) - 1;
        if (port_len < 1 || port_len > 5 || !all_in(colon + 1, port_len, "0123456789"))
            return false;
        struct edge_addr a;
        if (!edge_addr_parse(s, (size_t)(colon - s), &a) || a.family != EDGE_AF_V4)
            return false;
        *out = a;
        return true;
    }
    return edge_addr_parse(s, len, out);
}

bool edge_xff_pick(const char *xff, size_t len, const struct edge_cidr *trusted, size_t n_trusted,
                   struct edge_addr *out)
{
    bool have_trusted = false;
    struct edge_addr last_trusted = {0};
    size_t end = len;
    for (;;) {
        size_t start = end;
        while (start > 0 && xff[start - 1] != ',')
            start--;
        struct edge_addr a;
        if (!parse_xff_entry(xff + start, end - start, &a)) {
            /* Empty entries (", ,") carry nothing; anything else stops the walk. */
            if (!all_in(xff + start, end - start, " \t"))
                break;
        } else if (!edge_cidr_match_any(trusted, n_trusted, &a)) {
            *out = a;
            return true;
        } else {
            have_trusted = true;
            last_trusted = a;
        }
        if (start == 0)
            break;
        end = start - 1;
    }
    if (have_trusted)
        *out = last_trusted;
    return have_trusted;
}
