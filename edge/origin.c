/*
 * origin.c: browser Origins (RFC 6454 serialisation) for the handshake's
 * allow-list. Configured values and received headers go through the same
 * normalisation, so "HTTPS://App.example.com:443/" in a config file matches
 * the "https://app.example.com" a browser sends. Pure: see edge.h.
 */
#include "edge.h"

#include <string.h>

static char lower(char c)
{
    return c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
}

static bool is_alpha(char c)
{
    c = lower(c);
    return c >= 'a' && c <= 'z';
}

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* Appends n bytes, lower-cased, if they fit (one byte kept for the NUL). */
static bool put(char *out, size_t cap, size_t *at, const char *s, size_t n)
{
    if (*at + n >= cap)
        return false;
    for (size_t i = 0; i < n; i++)
        out[(*at)++] = lower(s[i]);
    out[*at] = '\0';
    return true;
}

static unsigned default_port(const char *scheme, size_t len)
{
    if ((len == 4 && !memcmp(scheme, "http", 4)) || (len == 2 && !memcmp(scheme, "ws", 2)))
        return 80;
    if ((len == 5 && !memcmp(scheme, "https", 5)) || (len == 3 && !memcmp(scheme, "wss", 3)))
        return 443;
    return 0;
}

/* Length of the host at s: a bracketed IPv6 literal or a registered name
 * (letters, digits, '-', '.', '_'; IDNs arrive in punycode). 0 if none. */
static size_t host_length(const char *s, size_t len)
{
    if (len && s[0] == '[') {
        size_t i = 1;
        while (i < len && (is_digit(s[i]) || (lower(s[i]) >= 'a' && lower(s[i]) <= 'f') ||
                           s[i] == ':' || s[i] == '.'))
            i++;
        return i < len && s[i] == ']' && i > 1 ? i + 1 : 0;
    }
    size_t i = 0;
    while (i < len &&
           (is_alpha(s[i]) || is_digit(s[i]) || s[i] == '-' || s[i] == '.' || s[i] == '_'))
        i++;
    return i;
}

bool edge_origin_normalize(const char *in, size_t len, char *out, size_t cap)
{
    size_t at = 0, i = 0;
    if (cap == 0)
        return false;
    out[0] = '\0';
    /* scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ) */
    if (!len || !is_alpha(in[0]))
        return false;
    while (i < len &&
           (is_alpha(in[i]) || is_digit(in[i]) || in[i] == '+' || in[i] == '-' || in[i] == '.'))
        i++;
    size_t scheme_len = i;
    if (len - i < 3 || memcmp(in + i, "://", 3) != 0)
        return false;
    if (!put(out, cap, &at, in, scheme_len + 3))
        return false;
    i += 3;
    size_t host = host_length(in + i, len - i);
    if (!host || !put(out, cap, &at, in + i, host))
        return false;
    i += host;
    if (i < len && in[i] == ':') {
        size_t digits = 0;
        unsigned port = 0;
        while (i + 1 + digits < len && is_digit(in[i + 1 + digits]) && digits < 5)
            port = port * 10 + (unsigned)(in[i + 1 + digits++] - '0');
        if (!digits || port == 0 || port > 65535)
            return false;
        i += 1 + digits;
        if (port != default_port(out, scheme_len)) {
            char text[8];
            size_t n = 0;
            char rev[6];
            for (unsigned p = port; p; p /= 10)
                rev[n++] = (char)('0' + p % 10);
            text[0] = ':';
            for (size_t k = 0; k < n; k++)
                text[1 + k] = rev[n - 1 - k];
            if (!put(out, cap, &at, text, n + 1))
                return false;
        }
    }
    if (i < len && in[i] == '/')
        i++; /* one trailing slash, as a config value may carry */
    return i == len;
}
