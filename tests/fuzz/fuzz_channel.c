/*
 * fuzz_channel.c: channel names and patterns (protocol/channel.c). The
 * input is "pattern\nchannel"; without a newline, the whole input is both.
 *
 * Properties: a valid name is a valid pattern; a valid name matches itself
 * and ">"; pattern_match agrees with a plain token-by-token reference
 * matcher written here for every valid pair; and no input, valid or not,
 * makes any of them read outside its bytes (ASan).
 */
#include "fuzz.h"
#include "protocol.h"

#include <string.h>

#define TOKENS_MAX (PROTO_CHANNEL_MAX / 2 + 1)

struct span {
    const char *p;
    size_t n;
};

static size_t tokens(const char *s, size_t len, struct span *t)
{
    size_t k = 0, start = 0;
    for (size_t i = 0; i <= len; i++) {
        if (i == len || s[i] == '.') {
            t[k++] = (struct span){s + start, i - start};
            start = i + 1;
        }
    }
    return k;
}

/* NATS subject matching, spelled out: `*` one token, a last `>` one or more. */
static bool reference_match(const char *pat, size_t plen, const char *ch, size_t clen)
{
    struct span pt[TOKENS_MAX], ct[TOKENS_MAX];
    size_t np = tokens(pat, plen, pt), nc = tokens(ch, clen, ct);
    for (size_t i = 0; i < np; i++) {
        bool last = i + 1 == np;
        if (last && pt[i].n == 1 && pt[i].p[0] == '>')
            return nc > i;
        if (i >= nc)
            return false;
        bool star = pt[i].n == 1 && pt[i].p[0] == '*';
        if (!star && (pt[i].n != ct[i].n || memcmp(pt[i].p, ct[i].p, ct[i].n) != 0))
            return false;
    }
    return np == nc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 4 * PROTO_CHANNEL_MAX)
        return 0;
    const char *s = (const char *)data;
    const char *nl = memchr(s, '\n', size);
    size_t plen = nl ? (size_t)(nl - s) : size;
    const char *ch = nl ? nl + 1 : s;
    size_t clen = nl ? size - plen - 1 : size;

    /* Exact-size copies: ASan sees any read past the end. pattern_match
     * wants its pattern NUL-terminated. */
    char *pat = malloc(plen + 1), *chan = malloc(clen ? clen : 1);
    FUZZ_CHECK(pat && chan);
    memcpy(pat, s, plen);
    pat[plen] = '\0';
    memcpy(chan, ch, clen);

    bool pvalid = proto_pattern_valid(pat, plen);
    bool cvalid = proto_channel_valid(chan, clen);
    if (cvalid) {
        FUZZ_CHECK(proto_pattern_valid(chan, clen));
        FUZZ_CHECK(clen >= 1 && clen <= PROTO_CHANNEL_MAX);
        FUZZ_CHECK(proto_pattern_match(">", chan, clen));
        char *self = malloc(clen + 1);
        FUZZ_CHECK(self);
        memcpy(self, chan, clen);
        self[clen] = '\0';
        FUZZ_CHECK(proto_pattern_match(self, chan, clen));
        free(self);
    }
    if (pvalid && cvalid && memchr(pat, '\0', plen) == NULL)
        FUZZ_CHECK(proto_pattern_match(pat, chan, clen) == reference_match(pat, plen, chan, clen));
    /* Whatever the input: no crash, no read out of bounds. */
    (void)proto_pattern_match(pat, chan, clen);
    free(pat);
    free(chan);
    return 0;
}
