/* Channel names and NATS-style permission patterns. */
#include "protocol.h"

#include <criterion/criterion.h>
#include <string.h>

static bool valid(const char *s)
{
    return proto_channel_valid(s, strlen(s));
}

static bool pvalid(const char *s)
{
    return proto_pattern_valid(s, strlen(s));
}

static bool match(const char *pattern, const char *channel)
{
    return proto_pattern_match(pattern, channel, strlen(channel));
}

Test(channel, valid_names)
{
    cr_assert(valid("a"));
    cr_assert(valid("chat.room1"));
    cr_assert(valid("A-b_c:d.0.9"));
    char name[PROTO_CHANNEL_MAX + 2];
    memset(name, 'x', sizeof name);
    cr_assert(proto_channel_valid(name, PROTO_CHANNEL_MAX));
    cr_assert_not(proto_channel_valid(name, PROTO_CHANNEL_MAX + 1));
}

Test(channel, invalid_names)
{
    const char *bad[] = {"", ".", "a.", ".a", "a..b", "a b", "a*", "*", ">", "a.>", "é", "a/b"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        cr_assert_not(valid(bad[i]), "%s", bad[i]);
    cr_assert_not(proto_channel_valid("a\0b", 3));
    cr_assert_not(proto_channel_valid(NULL, 0));
}

Test(channel, pattern_validity)
{
    const char *ok[] = {"a", "*", ">", "a.*", "a.>", "*.b.*", "chat.*.>", "a.b"};
    for (size_t i = 0; i < sizeof ok / sizeof *ok; i++)
        cr_assert(pvalid(ok[i]), "%s", ok[i]);
    const char *bad[] = {"", "a.", ".a", "a..b", ">.a", "a.>.b", "a*", "*a", "a.>>", "a.**", "a b"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        cr_assert_not(pvalid(bad[i]), "%s", bad[i]);
}

Test(channel, pattern_matching_like_nats)
{
    cr_assert(match("chat.room1", "chat.room1"));
    cr_assert_not(match("chat.room1", "chat.room2"));
    cr_assert_not(match("chat.room", "chat.room1"));
    cr_assert_not(match("chat.room1", "chat.room"));
    cr_assert(match("chat.*", "chat.room1"));
    cr_assert_not(match("chat.*", "chat.room1.x"));
    cr_assert_not(match("chat.*", "chat"));
    cr_assert(match("*.room1", "chat.room1"));
    cr_assert(match("*", "chat"));
    cr_assert_not(match("*", "chat.x"));
    cr_assert(match(">", "chat"));
    cr_assert(match(">", "a.b.c"));
    cr_assert(match("chat.>", "chat.a"));
    cr_assert(match("chat.>", "chat.a.b.c"));
    cr_assert_not(match("chat.>", "chat"), "> needs at least one token");
    cr_assert_not(match("chat.>", "chatx.a"));
    cr_assert(match("a.*.c.>", "a.b.c.d.e"));
    cr_assert_not(match("a.*.c.>", "a.b.x.d"));
    cr_assert_not(match("a.b.c", "a.b"));
}
