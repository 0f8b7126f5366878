#include "edge.h"

#include <criterion/criterion.h>
#include <string.h>

static const char *norm(const char *in)
{
    static char out[EDGE_ORIGIN_MAX];
    return edge_origin_normalize(in, strlen(in), out, sizeof out) ? out : NULL;
}

Test(origin, browsers_form_is_kept)
{
    cr_assert_str_eq(norm("https://app.example.com"), "https://app.example.com");
    cr_assert_str_eq(norm("http://localhost:8080"), "http://localhost:8080");
    cr_assert_str_eq(norm("http://[::1]:3000"), "http://[::1]:3000");
    cr_assert_str_eq(norm("chrome-extension://abcdefghijkl"), "chrome-extension://abcdefghijkl");
}

Test(origin, case_default_ports_and_one_trailing_slash)
{
    cr_assert_str_eq(norm("HTTPS://App.Example.COM:443/"), "https://app.example.com");
    cr_assert_str_eq(norm("http://example.com:80"), "http://example.com");
    cr_assert_str_eq(norm("https://example.com:80"), "https://example.com:80");
    cr_assert_str_eq(norm("http://example.com:0080"), "http://example.com");
    cr_assert_str_eq(norm("wss://example.com:443"), "wss://example.com");
}

Test(origin, refuses_what_a_browser_never_sends)
{
    static const char *bad[] = {"null",
                                "",
                                "https://",
                                "example.com",
                                "//example.com",
                                "https://example.com/path",
                                "https://example.com//",
                                "https://example.com?x=1",
                                "https://user@example.com",
                                "https://exa mple.com",
                                "https://example.com:",
                                "https://example.com:0",
                                "https://example.com:65536",
                                "https://example.com:123456",
                                "https://[::1",
                                "https://[]",
                                "1https://example.com",
                                "https://example.com\r\n"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        cr_assert_null(norm(bad[i]), "'%s' was accepted", bad[i]);
}

Test(origin, too_long_for_the_buffer_is_refused)
{
    char in[400] = "https://";
    memset(in + 8, 'a', 300);
    in[308] = '\0';
    char out[EDGE_ORIGIN_MAX];
    cr_assert_not(edge_origin_normalize(in, strlen(in), out, sizeof out));
}
