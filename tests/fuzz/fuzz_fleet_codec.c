/*
 * fuzz_fleet_codec.c: the fleet's bus codec (geo/fleet_wire.c), fed what
 * another node, or anyone who can publish on the bus, could send.
 *
 * Properties: an accepted message has a valid node id, its strings and
 * entries lie inside the input, every entry it counted reads, a clear
 * carries nothing but its name; and written back with the encoders, an
 * accepted message reads back to the same fields and entries. Seeds:
 * corpus/fleet_codec/ (the unit test test_fleet_wire.c keeps them equal to
 * what the encoders write).
 */
#include "fleet_wire.h"
#include "fuzz.h"

#include <math.h>
#include <string.h>

#define MAX_ENTRIES 64 /* re-encoded and compared; more are only read */

static bool inside(const void *p, size_t n, const uint8_t *base, size_t size)
{
    const uint8_t *b = p;
    return n == 0 || (b >= base && n <= size && (size_t)(b - base) <= size - n);
}

static bool same_str(const char *a, size_t al, const char *b, size_t bl)
{
    return al == bl && (al == 0 || memcmp(a, b, al) == 0);
}

static bool same_entry(const struct fleet_wire_entry *a, const struct fleet_wire_entry *b)
{
    return a->v == b->v && a->set == b->set &&
           same_str(a->client, a->client_len, b->client, b->client_len) &&
           same_str(a->user, a->user_len, b->user, b->user_len) && a->lat == b->lat &&
           a->lon == b->lon && a->meta_len == b->meta_len &&
           (!a->meta_len ||
            (a->meta_enc == b->meta_enc && memcmp(a->meta, b->meta, a->meta_len) == 0));
}

/* Writes m back (as an answer when it has r or w, else as a delta) and reads it again. */
static void round_trip(const struct fleet_wire_msg *m, const struct fleet_wire_entry *e, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++)
        if (e[i].set && (!isfinite(e[i].lat) || !isfinite(e[i].lon)))
            return; /* a non-finite coordinate is written as null: not a round trip */
    struct proto_buf out;
    proto_buf_init(&out, 0);
    struct fleet_wire_writer w;
    bool answer = m->req || m->watermark || m->prefix;
    if (answer)
        fleet_wire_answer_begin(&w, &out, m->node, m->node_len, m->req, m->watermark,
                                m->space ? m->space : "", m->space_len, m->prefix ? m->prefix : "",
                                m->prefix_len);
    else
        fleet_wire_delta_begin(&w, &out, m->node, m->node_len, m->space ? m->space : "",
                               m->space_len, "");
    for (uint32_t i = 0; i < n; i++)
        fleet_wire_put(&w, &e[i]);
    if (fleet_wire_end(&w, m->end) == RT_OK) {
        struct fleet_wire_msg back;
        FUZZ_CHECK(fleet_wire_decode(out.data, out.len, &back));
        FUZZ_CHECK(same_str(back.node, back.node_len, m->node, m->node_len));
        FUZZ_CHECK(same_str(back.space, back.space_len, m->space, m->space_len));
        FUZZ_CHECK(back.n_entries == n);
        if (answer)
            FUZZ_CHECK(back.req == m->req && back.watermark == m->watermark && back.end == m->end &&
                       same_str(back.prefix, back.prefix_len, m->prefix, m->prefix_len));
        struct fleet_wire_cursor c = {0};
        struct fleet_wire_entry again;
        for (uint32_t i = 0; i < n; i++) {
            FUZZ_CHECK(fleet_wire_next_entry(&back, &c, &again));
            FUZZ_CHECK(same_entry(&again, &e[i]));
        }
    }
    proto_buf_free(&out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* An exact-size copy: a read past the end is an ASan report. */
    uint8_t *buf = malloc(size ? size : 1);
    FUZZ_CHECK(buf);
    memcpy(buf, data, size);
    struct fleet_wire_msg m;
    if (fleet_wire_decode(buf, size, &m)) {
        FUZZ_CHECK(fleet_wire_token_ok(m.node, m.node_len, FLEET_WIRE_NODE_MAX));
        FUZZ_CHECK(inside(m.node, m.node_len, buf, size));
        FUZZ_CHECK(!m.space || inside(m.space, m.space_len, buf, size));
        FUZZ_CHECK(!m.prefix || inside(m.prefix, m.prefix_len, buf, size));
        FUZZ_CHECK(!m.cell || inside(m.cell, m.cell_len, buf, size));
        struct fleet_wire_entry e[MAX_ENTRIES], one;
        struct fleet_wire_cursor c = {0};
        uint32_t n = 0;
        while (fleet_wire_next_entry(&m, &c, n < MAX_ENTRIES ? &e[n] : &one)) {
            const struct fleet_wire_entry *x = n < MAX_ENTRIES ? &e[n] : &one;
            FUZZ_CHECK(x->client && inside(x->client, x->client_len, buf, size));
            FUZZ_CHECK(!x->user_len || inside(x->user, x->user_len, buf, size));
            FUZZ_CHECK(!x->meta_len || inside(x->meta, x->meta_len, buf, size));
            FUZZ_CHECK(x->set || (!x->user_len && !x->meta_len));
            n++;
        }
        FUZZ_CHECK(n == m.n_entries);
        if (n <= MAX_ENTRIES)
            round_trip(&m, e, n);
    }
    free(buf);
    return 0;
}
