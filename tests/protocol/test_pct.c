#include "protocol.h"

#include <criterion/criterion.h>
#include <string.h>

Test(pct, printable_ascii_stays_and_the_rest_is_escaped)
{
    char out[64];
    proto_pct_encode("ab-1:Z~", 7, out, sizeof out);
    cr_assert_str_eq(out, "ab-1:Z~");
    const char in[] = {'a', ' ', '%', '\x00', (char)0xc3, (char)0xa9};
    proto_pct_encode(in, sizeof in, out, sizeof out);
    cr_assert_str_eq(out, "a%20%25%00%C3%A9");
}

Test(pct, never_overflows_the_output)
{
    char out[8];
    memset(out, 'X', sizeof out);
    proto_pct_encode("%%%%%%", 6, out, sizeof out);
    /* Each step needs room for a whole escape and the NUL: 2 escapes fit in 8. */
    cr_assert_str_eq(out, "%25%25", "got %s", out);
    cr_assert_eq(out[7], (char)0x58, "the byte after the NUL is untouched");
}
