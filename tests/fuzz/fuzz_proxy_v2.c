/*
 * fuzz_proxy_v2.c: the PROXY protocol v2 parser (edge/proxy_v2.c), fed the
 * first bytes of a connection, as a load balancer or anybody else could
 * send them. Seeds: make_edge_seeds.py (corpus/fuzz_proxy_v2/).
 *
 * Properties: a result is consistent (OK: 16 to EDGE_PROXY_V2_MAX bytes
 * consumed, within the input; NEED_MORE: asks for more than it has, never
 * past the limit; INVALID: says why); bytes arriving a few at a time give
 * the same verdict as all at once (every prefix of an accepted header asks
 * for more, no prefix of a refused one is accepted, and a refused prefix
 * stays refused); and what follows a header never changes it.
 */
#include "edge.h"
#include "fuzz.h"

#include <string.h>

static void check(const struct edge_proxy_result *r, size_t len)
{
    switch (r->status) {
    case EDGE_PROXY_OK:
        FUZZ_CHECK(r->consumed >= EDGE_PROXY_V2_FIXED && r->consumed <= len &&
                   r->consumed <= EDGE_PROXY_V2_MAX);
        break;
    case EDGE_PROXY_NEED_MORE:
        FUZZ_CHECK(r->need > len && r->need <= EDGE_PROXY_V2_MAX);
        break;
    case EDGE_PROXY_INVALID:
        FUZZ_CHECK(r->why != NULL && !r->has_src);
        break;
    default:
        FUZZ_CHECK(0);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 2 * EDGE_PROXY_V2_MAX)
        return 0;
    uint8_t *buf = malloc(size ? size : 1); /* exact size: ASan sees an over-read */
    FUZZ_CHECK(buf);
    memcpy(buf, data, size);
    struct edge_proxy_result all;
    edge_proxy_v2_parse(buf, size, &all);
    check(&all, size);
    /* The same bytes arriving in pieces (every length up to the verdict). */
    size_t upto = all.status == EDGE_PROXY_OK ? all.consumed : size;
    for (size_t len = 0; len < upto; len++) {
        struct edge_proxy_result part;
        edge_proxy_v2_parse(buf, len, &part);
        check(&part, len);
        FUZZ_CHECK(part.status != EDGE_PROXY_OK);
        if (part.status == EDGE_PROXY_INVALID)
            FUZZ_CHECK(all.status == EDGE_PROXY_INVALID);
    }
    /* A whole header, with nothing after it: the same result. */
    if (all.status == EDGE_PROXY_OK && all.consumed < size) {
        struct edge_proxy_result head;
        edge_proxy_v2_parse(buf, all.consumed, &head);
        FUZZ_CHECK(head.status == EDGE_PROXY_OK && head.consumed == all.consumed &&
                   head.has_src == all.has_src && head.src_port == all.src_port &&
                   memcmp(&head.src, &all.src, sizeof head.src) == 0);
    }
    free(buf);
    return 0;
}
