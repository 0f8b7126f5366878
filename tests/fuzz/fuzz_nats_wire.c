/*
 * fuzz_nats_wire.c: the NATS wire scanner of the loop reader
 * (fanout/nats_wire.c), fed what a hostile or broken server could send.
 *
 * The input is scanned op by op as nats_live.c does. Properties: an op
 * uses at least one byte and no more than it was given; MSG pointers stay
 * inside the input and the payload within max_payload; the scan of any
 * shorter prefix of a complete op says "read more" (a read split anywhere
 * changes nothing); headers of an HMSG can be searched.
 */
#include "fuzz.h"
#include "nats_wire.h"

#include <string.h>

#define MAX_PAYLOAD 4096

static bool inside(const void *p, size_t n, const uint8_t *base, size_t size)
{
    const uint8_t *b = p;
    return b >= base && n <= size && b - base <= (ptrdiff_t)(size - n);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* An exact-size copy: a read past the end is an ASan report. */
    uint8_t *buf = malloc(size ? size : 1);
    FUZZ_CHECK(buf);
    memcpy(buf, data, size);
    size_t off = 0;
    for (int ops = 0; ops < 1000 && off < size; ops++) {
        const uint8_t *p = buf + off;
        size_t n = size - off, used = 0, arg_len = 0;
        struct nw_msg m;
        const char *arg = NULL;
        enum nw_op op = nw_scan(p, n, MAX_PAYLOAD, &used, &m, &arg, &arg_len);
        if (op == NW_MORE || op == NW_BAD)
            break;
        FUZZ_CHECK(used >= 1 && used <= n);
        if (op == NW_INFO || op == NW_ERR)
            FUZZ_CHECK(arg && inside(arg, arg_len, p, used));
        if (op == NW_MSG) {
            FUZZ_CHECK(inside(m.subject, m.subject_len, p, used) && m.subject_len > 0);
            FUZZ_CHECK(!m.reply || inside(m.reply, m.reply_len, p, used));
            FUZZ_CHECK(inside(m.data, m.data_len, p, used) && m.data_len <= MAX_PAYLOAD);
            if (m.hdr) {
                FUZZ_CHECK(inside(m.hdr, m.hdr_len, p, used) && m.hdr + m.hdr_len == m.data);
                const char *v = NULL;
                size_t vlen = 0;
                if (nw_hdr_get(m.hdr, m.hdr_len, "Rtgate-Channel", &v, &vlen))
                    FUZZ_CHECK(inside(v, vlen, m.hdr, m.hdr_len));
                if (nw_hdr_get(m.hdr, m.hdr_len, "nats-msg-id", &v, &vlen))
                    FUZZ_CHECK(inside(v, vlen, m.hdr, m.hdr_len));
            }
        }
        /* The same op cut short anywhere: never a different answer. */
        size_t cuts[3] = {used - 1, used / 2, used > 2 ? used - 2 : 0};
        for (int i = 0; i < 3; i++) {
            size_t u2 = 0;
            struct nw_msg m2;
            FUZZ_CHECK(nw_scan(p, cuts[i], MAX_PAYLOAD, &u2, &m2, NULL, NULL) == NW_MORE);
        }
        off += used;
    }
    free(buf);
    return 0;
}
