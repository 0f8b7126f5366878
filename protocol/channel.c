/*
 * channel.c: channel names and permission patterns (PROTOCOL.md section 3).
 * Names are dot-separated tokens; patterns use `*` for one token and `>`
 * (last only) for one or more remaining tokens, as NATS subjects do.
 */
#include "protocol_int.h"

#include <string.h>

static bool name_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == ':' || c == '-';
}

/* True for 1-128 bytes of [A-Za-z0-9_:.-] with no empty token. */
bool proto_channel_valid(const char *name, size_t len)
{
    if (name == NULL || len == 0 || len > PROTO_CHANNEL_MAX)
        return false;
    if (name[0] == '.' || name[len - 1] == '.')
        return false;
    for (size_t i = 0; i < len; i++) {
        if (name[i] == '.') {
            if (name[i + 1] == '.')
                return false;
        } else if (!name_char(name[i])) {
            return false;
        }
    }
    return true;
}

/* True for a channel name whose tokens may also be `*`, and whose last
 * token may be `>`. */
bool proto_pattern_valid(const char *pattern, size_t len)
{
    if (pattern == NULL || len == 0 || len > PROTO_CHANNEL_MAX)
        return false;
    size_t start = 0;
    while (start <= len) {
        const char *dot = memchr(pattern + start, '.', len - start);
        size_t end = dot != NULL ? (size_t)(dot - pattern) : len;
        size_t n = end - start;
        const char *tok = pattern + start;
        if (n == 0)
            return false;
        bool wild = n == 1 && (tok[0] == '*' || tok[0] == '>');
        if (wild && tok[0] == '>' && end != len)
            return false;
        for (size_t i = 0; !wild && i < n; i++)
            if (!name_char(tok[i]))
                return false;
        start = end + 1;
    }
    return true;
}

/* True if channel[0..channel_len) matches the NUL-terminated pattern. */
bool proto_pattern_match(const char *pattern, const char *channel, size_t channel_len)
{
    const char *p = pattern;
    size_t c = 0;
    if (pattern == NULL || channel == NULL || channel_len == 0)
        return false;
    for (;;) {
        size_t plen = strcspn(p, ".");
        const char *dot = memchr(channel + c, '.', channel_len - c);
        size_t cend = dot != NULL ? (size_t)(dot - channel) : channel_len;
        if (plen == 1 && p[0] == '>' && p[1] == '\0')
            return true; /* at least the current channel token remains */
        bool same =
            (plen == 1 && p[0] == '*') || (plen == cend - c && memcmp(p, channel + c, plen) == 0);
        if (!same)
            return false;
        bool p_last = p[plen] == '\0', c_last = cend == channel_len;
        if (p_last || c_last)
            return p_last && c_last;
        p += plen + 1;
        c = cend + 1;
    }
}
