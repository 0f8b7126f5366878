#include "edge.h"

#include <criterion/criterion.h>
#include <string.h>

static struct edge_addr addr(const char *s)
{
    struct edge_addr a;
    cr_assert(edge_addr_parse(s, strlen(s), &a), "parse %s", s);
    return a;
}

static struct edge_cidr cidr(const char *s)
{
    struct edge_cidr c;
    cr_assert(edge_cidr_parse(s, strlen(s), &c), "parse %s", s);
    return c;
}

static void assert_text(const struct edge_addr *a, const char *want)
{
    char text[EDGE_ADDR_TEXT];
    edge_addr_format(a, text);
    cr_assert_str_eq(text, want);
}

Test(addr, parses_and_prints_canonical_forms)
{
    struct edge_addr a = addr("10.1.2.3");
    cr_assert_eq(a.family, EDGE_AF_V4);
    assert_text(&a, "10.1.2.3");
    a = addr("2001:0DB8:0000::0001");
    cr_assert_eq(a.family, EDGE_AF_V6);
    assert_text(&a, "2001:db8::1");
}

Test(addr, v4_mapped_v6_is_v4)
{
    struct edge_addr a = addr("::ffff:192.0.2.7");
    cr_assert_eq(a.family, EDGE_AF_V4);
    assert_text(&a, "192.0.2.7");
    struct edge_addr b = addr("192.0.2.7");
    cr_assert(edge_addr_equal(&a, &b));
}

Test(addr, refuses_what_is_not_a_literal)
{
    static const char *bad[] = {"",          "1.2.3",     "1.2.3.4.5", "256.1.1.1",
                                "01.2.3.4",  "1.2.3.4 ",  " 1.2.3.4",  "::g",
                                "host.name", "1.2.3.4/8", "[::1]",     "1.2.3.4:80"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        struct edge_addr a;
        cr_assert_not(edge_addr_parse(bad[i], strlen(bad[i]), &a), "'%s' parsed", bad[i]);
    }
    struct edge_addr a;
    cr_assert_not(edge_addr_parse("1.2.3.4\0", 8, &a), "an embedded NUL must not parse");
}

Test(addr, limit_key_groups_an_ipv6_slash_64)
{
    char k1[EDGE_KEY_TEXT], k2[EDGE_KEY_TEXT];
    struct edge_addr a = addr("2001:db8:1:2::17"), b = addr("2001:db8:1:2:ffff::1");
    edge_addr_limit_key(&a, k1);
    edge_addr_limit_key(&b, k2);
    cr_assert_str_eq(k1, "2001:db8:1:2::/64");
    cr_assert_str_eq(k1, k2);
    struct edge_addr c = addr("10.0.0.1");
    edge_addr_limit_key(&c, k1);
    cr_assert_str_eq(k1, "10.0.0.1");
}

Test(cidr, contains_by_prefix)
{
    struct edge_cidr c = cidr("10.0.0.0/8");
    struct edge_addr in = addr("10.255.1.2"), out = addr("11.0.0.1");
    cr_assert(edge_cidr_contains(&c, &in));
    cr_assert_not(edge_cidr_contains(&c, &out));
    c = cidr("192.168.1.128/25");
    struct edge_addr a = addr("192.168.1.200"), b = addr("192.168.1.100");
    cr_assert(edge_cidr_contains(&c, &a));
    cr_assert_not(edge_cidr_contains(&c, &b));
    c = cidr("2001:db8::/32");
    struct edge_addr v6 = addr("2001:db8:ffff::1"), v6out = addr("2001:db9::1");
    cr_assert(edge_cidr_contains(&c, &v6));
    cr_assert_not(edge_cidr_contains(&c, &v6out));
}

Test(cidr, families_never_mix_and_zero_prefix_matches_its_family)
{
    struct edge_cidr all4 = cidr("0.0.0.0/0"), all6 = cidr("::/0");
    struct edge_addr v4 = addr("203.0.113.9"), v6 = addr("2001:db8::1");
    cr_assert(edge_cidr_contains(&all4, &v4));
    cr_assert_not(edge_cidr_contains(&all4, &v6));
    cr_assert(edge_cidr_contains(&all6, &v6));
    cr_assert_not(edge_cidr_contains(&all6, &v4));
}

Test(cidr, bare_address_is_one_host_and_host_bits_are_cleared)
{
    struct edge_cidr c = cidr("127.0.0.2");
    cr_assert_eq(c.prefix, 32);
    struct edge_addr two = addr("127.0.0.2"), three = addr("127.0.0.3");
    cr_assert(edge_cidr_contains(&c, &two));
    cr_assert_not(edge_cidr_contains(&c, &three));
    c = cidr("10.1.2.3/8");
    assert_text(&c.net, "10.0.0.0");
}

Test(cidr, mapped_ranges_become_ipv4)
{
    struct edge_cidr c = cidr("::ffff:10.0.0.0/104");
    cr_assert_eq(c.net.family, EDGE_AF_V4);
    cr_assert_eq(c.prefix, 8);
    struct edge_cidr bad;
    cr_assert_not(edge_cidr_parse("::ffff:10.0.0.0/64", 18, &bad));
}

Test(cidr, refuses_bad_prefixes)
{
    static const char *bad[] = {"10.0.0.0/33", "10.0.0.0/", "10.0.0.0/-1",  "10.0.0.0/8x",
                                "::/129",      "/8",        "10.0.0.0/0008"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        struct edge_cidr c;
        cr_assert_not(edge_cidr_parse(bad[i], strlen(bad[i]), &c), "'%s' parsed", bad[i]);
    }
}

/* The proxies of these tests: a load balancer network and one CDN range. */
static struct edge_cidr trusted[2];

static void setup_trusted(void)
{
    trusted[0] = cidr("10.0.0.0/8");
    trusted[1] = cidr("2001:db8:cd0::/48");
}

static const char *pick(const char *xff)
{
    static char text[EDGE_ADDR_TEXT];
    struct edge_addr a;
    if (!edge_xff_pick(xff, strlen(xff), trusted, 2, &a))
        return NULL;
    edge_addr_format(&a, text);
    return text;
}

Test(xff, rightmost_untrusted_entry_wins, .init = setup_trusted)
{
    cr_assert_str_eq(pick("203.0.113.7"), "203.0.113.7");
    /* The client forged the first entry; the proxy appended the real one. */
    cr_assert_str_eq(pick("1.1.1.1, 203.0.113.7"), "203.0.113.7");
    /* Two trusted hops after the client. */
    cr_assert_str_eq(pick("1.1.1.1, 203.0.113.7, 10.0.0.5, 10.9.9.9"), "203.0.113.7");
    cr_assert_str_eq(pick("198.51.100.1,2001:db8:cd0::7"), "198.51.100.1");
}

Test(xff, all_trusted_gives_the_leftmost, .init = setup_trusted)
{
    cr_assert_str_eq(pick("10.0.0.9, 10.0.0.5"), "10.0.0.9");
}

Test(xff, garbage_stops_the_walk, .init = setup_trusted)
{
    cr_assert_null(pick("garbage"));
    cr_assert_null(pick("203.0.113.7, garbage"));
    /* Behind a trusted hop: that hop is the best known address. */
    cr_assert_str_eq(pick("garbage, 10.0.0.5"), "10.0.0.5");
    cr_assert_null(pick(""));
    cr_assert_null(pick(" , "));
}

Test(xff, ports_brackets_and_spaces, .init = setup_trusted)
{
    cr_assert_str_eq(pick("  203.0.113.7:4711  "), "203.0.113.7");
    cr_assert_str_eq(pick("[2001:db8::5]:443"), "2001:db8::5");
    cr_assert_str_eq(pick("[2001:db8::5]"), "2001:db8::5");
    cr_assert_str_eq(pick("2001:db8::5"), "2001:db8::5");
    cr_assert_str_eq(pick("203.0.113.7,,10.0.0.1"), "203.0.113.7");
    cr_assert_null(pick("203.0.113.7:"));
    cr_assert_null(pick("[2001:db8::5]x"));
    cr_assert_null(pick("[10.0.0.1]"));
}

Test(xff, never_reads_past_len, .init = setup_trusted)
{
    /* Only "9.9.9.9" is inside len: what follows must not be seen. */
    const char buf[] = "9.9.9.9, 10.0.0.1";
    struct edge_addr a;
    cr_assert(edge_xff_pick(buf, 7, trusted, 2, &a));
    assert_text(&a, "9.9.9.9");
}
