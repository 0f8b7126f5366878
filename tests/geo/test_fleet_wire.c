/*
 * The fleet's bus codec (geo/fleet_wire.c) alone: every kind of message
 * encoded and decoded back, every truncation refused, hostile shapes
 * refused, random mutations survived (this suite runs under ASan and
 * UBSan), subjects; and the seed corpus of the fuzz target
 * (tests/fuzz/corpus/fleet_codec/) is what the encoders write today.
 */
#include "fleet_wire.h"
#include "helpers.h"

#include <criterion/criterion.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef RT_FLEET_CORPUS
#define RT_FLEET_CORPUS "tests/fuzz/corpus/fleet_codec"
#endif

static const uint8_t META_JSON[] = "{\"k\":[1,2,3]}";
static const uint8_t META_MP[] = {0x81, 0xa1, 'k', 0x01};

static const struct fleet_wire_entry ENTRIES[] = {
    {.v = 7,
     .client = "car-1",
     .client_len = 5,
     .set = true,
     .user = "alice",
     .user_len = 5,
     .lat = 52.52,
     .lon = 13.405,
     .meta_enc = PROTO_PAYLOAD_JSON,
     .meta = META_JSON,
     .meta_len = sizeof(META_JSON) - 1},
    {.v = 8, .client = "q", .client_len = 1, .set = true, .user = "", .lat = -90, .lon = 180},
    {.v = UINT64_MAX,
     .client = "m-2",
     .client_len = 3,
     .set = true,
     .user = "u",
     .user_len = 1,
     .lat = 0.000001,
     .lon = -179.999999,
     .meta_enc = PROTO_PAYLOAD_MSGPACK,
     .meta = META_MP,
     .meta_len = sizeof(META_MP)},
    {.v = 9, .client = "car-2", .client_len = 5, .set = false},
};
#define N_ENTRIES (sizeof(ENTRIES) / sizeof(ENTRIES[0]))

/* A message the encoders write, and what it must decode to. */
struct sample {
    const char *name;
    struct proto_buf buf;
    struct fleet_wire_msg want; /* the fields to compare (not the byte positions) */
    size_t first, n;            /* its entries: ENTRIES[first .. first + n) */
};

#define N_SAMPLES 7

static void make_samples(struct sample s[N_SAMPLES])
{
    for (int i = 0; i < N_SAMPLES; i++) {
        memset(&s[i], 0, sizeof(s[i]));
        proto_buf_init(&s[i].buf, 0);
    }
    struct fleet_wire_writer w;
    s[0].name = "heartbeat-hello";
    fleet_wire_heartbeat(&s[0].buf, "nodeA", 5, 0, 0, 30000, true);
    s[0].want = (struct fleet_wire_msg){.v = 0, .gen = 0, .ttl_ms = 30000, .hello = true};
    s[1].name = "heartbeat";
    fleet_wire_heartbeat(&s[1].buf, "node_B-2", 8, 123456789012ull, 5, 1, false);
    s[1].want = (struct fleet_wire_msg){.v = 123456789012ull, .gen = 5, .ttl_ms = 1};
    s[2].name = "snapshot-ask";
    fleet_wire_snapshot_ask(&s[2].buf, "nodeA", 5, 42, "drivers", 7, "u33dc", 5);
    s[2].want = (struct fleet_wire_msg){.req = 42, .space = "drivers", .prefix = "u33dc"};
    s[3].name = "snapshot-answer";
    fleet_wire_answer_begin(&w, &s[3].buf, "nodeB", 5, 42, 77, "drivers", 7, "u33dc", 5);
    for (size_t i = 0; i < N_ENTRIES; i++)
        fleet_wire_put(&w, &ENTRIES[i]);
    cr_assert_eq(fleet_wire_end(&w, true), RT_OK);
    s[3].want = (struct fleet_wire_msg){
        .req = 42, .watermark = 77, .space = "drivers", .prefix = "u33dc", .end = true};
    s[3].n = N_ENTRIES;
    s[4].name = "snapshot-answer-chunk-empty";
    fleet_wire_answer_begin(&w, &s[4].buf, "nodeB", 5, 1, 0, "x", 1, "u", 1);
    cr_assert_eq(fleet_wire_end(&w, false), RT_OK);
    s[4].want = (struct fleet_wire_msg){.req = 1, .space = "x", .prefix = "u"};
    s[5].name = "delta";
    fleet_wire_delta_begin(&w, &s[5].buf, "nodeA", 5, "drivers", 7, "u33dc");
    fleet_wire_put(&w, &ENTRIES[2]);
    fleet_wire_put(&w, &ENTRIES[3]);
    cr_assert_eq(fleet_wire_end(&w, true), RT_OK);
    s[5].want = (struct fleet_wire_msg){.space = "drivers", .cell = "u33dc"};
    s[5].first = 2;
    s[5].n = 2;
    s[6].name = "delta-one-bare";
    fleet_wire_delta_begin(&w, &s[6].buf, "n", 1, "s_p-ace", 7, "7zzzz");
    fleet_wire_put(&w, &ENTRIES[1]);
    cr_assert_eq(fleet_wire_end(&w, true), RT_OK);
    s[6].want = (struct fleet_wire_msg){.space = "s_p-ace", .cell = "7zzzz"};
    s[6].first = 1;
    s[6].n = 1;
}

static void free_samples(struct sample s[N_SAMPLES])
{
    for (int i = 0; i < N_SAMPLES; i++)
        proto_buf_free(&s[i].buf);
}

static void assert_str(const char *got, size_t got_len, const char *want)
{
    if (!want) {
        cr_assert_null(got);
        cr_assert_eq(got_len, 0);
        return;
    }
    cr_assert_not_null(got);
    cr_assert_eq(got_len, strlen(want), "%.*s vs %s", (int)got_len, got, want);
    cr_assert_eq(memcmp(got, want, got_len), 0);
}

static void assert_entry(const struct fleet_wire_entry *got, const struct fleet_wire_entry *want)
{
    cr_assert_eq(got->v, want->v);
    assert_str(got->client, got->client_len, want->client);
    cr_assert_eq(got->set, want->set);
    if (!want->set) {
        cr_assert_eq(got->user_len, 0);
        cr_assert_eq(got->meta_len, 0);
        return;
    }
    assert_str(got->user, got->user_len, want->user);
    cr_assert_eq(got->lat, want->lat);
    cr_assert_eq(got->lon, want->lon);
    cr_assert_eq(got->meta_len, want->meta_len);
    if (want->meta_len) {
        cr_assert_eq(got->meta_enc, want->meta_enc);
        cr_assert_eq(memcmp(got->meta, want->meta, want->meta_len), 0);
    }
}

Test(fleet_wire, every_kind_of_message_decodes_to_what_was_encoded)
{
    struct sample s[N_SAMPLES];
    make_samples(s);
    static const char *nodes[N_SAMPLES] = {"nodeA", "node_B-2", "nodeA", "nodeB",
                                           "nodeB", "nodeA",    "n"};
    for (int i = 0; i < N_SAMPLES; i++) {
        struct fleet_wire_msg m;
        cr_assert(fleet_wire_decode(s[i].buf.data, s[i].buf.len, &m), "%s", s[i].name);
        const struct fleet_wire_msg *x = &s[i].want;
        assert_str(m.node, m.node_len, nodes[i]);
        assert_str(m.space, m.space_len, x->space);
        assert_str(m.prefix, m.prefix_len, x->prefix);
        assert_str(m.cell, m.cell_len, x->cell);
        cr_assert_eq(m.v, x->v, "%s", s[i].name);
        cr_assert_eq(m.req, x->req);
        cr_assert_eq(m.gen, x->gen);
        cr_assert_eq(m.watermark, x->watermark);
        cr_assert_eq(m.ttl_ms, x->ttl_ms);
        cr_assert_eq(m.hello, x->hello);
        cr_assert_eq(m.end, x->end, "%s", s[i].name);
        cr_assert_eq(m.n_entries, s[i].n, "%s", s[i].name);
        struct fleet_wire_cursor c = {0};
        struct fleet_wire_entry e;
        size_t k = 0;
        while (fleet_wire_next_entry(&m, &c, &e)) {
            cr_assert_lt(k, s[i].n);
            assert_entry(&e, &ENTRIES[s[i].first + k]);
            k++;
        }
        cr_assert_eq(k, s[i].n, "%s", s[i].name);
    }
    free_samples(s);
}

Test(fleet_wire, every_truncation_is_refused)
{
    struct sample s[N_SAMPLES];
    make_samples(s);
    for (int i = 0; i < N_SAMPLES; i++) {
        /* A copy of exactly the length given: a read past it is an ASan report. */
        for (size_t len = 0; len < s[i].buf.len; len++) {
            uint8_t *cut = malloc(len ? len : 1);
            memcpy(cut, s[i].buf.data, len);
            struct fleet_wire_msg m;
            cr_assert(!fleet_wire_decode(cut, len, &m), "%s cut to %zu", s[i].name, len);
            cr_assert_eq(m.n_entries, 0);
            cr_assert_null(m.node);
            free(cut);
        }
    }
    free_samples(s);
}

/* A decoded message's strings and entries lie inside the bytes decoded. */
static bool inside(const void *p, size_t n, const uint8_t *base, size_t size)
{
    const uint8_t *b = p;
    return n == 0 || (b >= base && n <= size && (size_t)(b - base) <= size - n);
}

static void assert_sane(const struct fleet_wire_msg *m, const uint8_t *buf, size_t len)
{
    cr_assert(fleet_wire_token_ok(m->node, m->node_len, FLEET_WIRE_NODE_MAX));
    cr_assert(inside(m->node, m->node_len, buf, len));
    cr_assert(!m->space || inside(m->space, m->space_len, buf, len));
    cr_assert(!m->prefix || inside(m->prefix, m->prefix_len, buf, len));
    struct fleet_wire_cursor c = {0};
    struct fleet_wire_entry e;
    uint32_t n = 0;
    while (fleet_wire_next_entry(m, &c, &e)) {
        cr_assert_not_null(e.client);
        cr_assert(inside(e.client, e.client_len, buf, len));
        cr_assert(!e.user_len || inside(e.user, e.user_len, buf, len));
        cr_assert(!e.meta_len || (inside(e.meta, e.meta_len, buf, len) && e.meta_enc >= 1 &&
                                  e.meta_enc <= PROTO_PAYLOAD_BINARY));
        cr_assert(e.set || (!e.user_len && !e.meta_len));
        n++;
    }
    cr_assert_eq(n, m->n_entries, "an accepted message reads whole");
}

Test(fleet_wire, random_mutations_are_refused_or_read_within_bounds)
{
    struct sample s[N_SAMPLES];
    make_samples(s);
    struct tg_rng r = {2024};
    unsigned accepted = 0, refused = 0;
    for (int i = 0; i < N_SAMPLES; i++) {
        for (int round = 0; round < 3000; round++) {
            size_t len = s[i].buf.len;
            uint8_t *buf = malloc(len + 8);
            memcpy(buf, s[i].buf.data, len);
            tg_mutate(&r, buf, &len, s[i].buf.len + 8, 4);
            uint8_t *exact = malloc(len ? len : 1); /* ASan sees any read past len */
            memcpy(exact, buf, len);
            struct fleet_wire_msg m;
            if (fleet_wire_decode(exact, len, &m)) {
                accepted++;
                assert_sane(&m, exact, len);
            } else {
                refused++;
            }
            free(exact);
            free(buf);
        }
    }
    cr_assert_gt(refused, 1000);
    cr_assert_gt(accepted, 100, "some mutations (a changed value) still read");
    free_samples(s);
}

/* msgpack by hand, for shapes the encoders never write. */
struct mp {
    uint8_t b[512];
    size_t n;
};

static void mp_raw(struct mp *m, const void *p, size_t n)
{
    memcpy(m->b + m->n, p, n);
    m->n += n;
}
static void mp_byte(struct mp *m, uint8_t x)
{
    m->b[m->n++] = x;
}
static void mp_str(struct mp *m, const char *s)
{
    size_t n = strlen(s);
    mp_byte(m, (uint8_t)(0xa0 | n));
    mp_raw(m, s, n);
}
static void mp_f64(struct mp *m, double d)
{
    uint64_t u;
    memcpy(&u, &d, sizeof(u));
    mp_byte(m, 0xcb);
    for (int i = 0; i < 8; i++)
        mp_byte(m, (uint8_t)(u >> (56 - 8 * i)));
}

static bool decodes(const struct mp *m)
{
    struct fleet_wire_msg msg;
    return fleet_wire_decode(m->b, m->n, &msg);
}

/* {"n":node, "e":[entry]} with the entry's map built by fn. */
static void with_entry(struct mp *m, const char *node, void (*fn)(struct mp *))
{
    m->n = 0;
    mp_byte(m, 0x82);
    mp_str(m, "n");
    mp_str(m, node);
    mp_str(m, "e");
    mp_byte(m, 0x91);
    fn(m);
}

/* An entry map of `pairs` pairs that opens with "v":1, "c":"q" and, when op >= 0, "o":op. */
static void entry_head(struct mp *m, unsigned pairs, int op)
{
    mp_byte(m, (uint8_t)(0x80 | pairs));
    mp_str(m, "v");
    mp_byte(m, 0x01);
    mp_str(m, "c");
    mp_str(m, "q");
    if (op >= 0) {
        mp_str(m, "o");
        mp_byte(m, (uint8_t)op);
    }
}

static void entry_ok(struct mp *m)
{
    entry_head(m, 5, 1);
    mp_str(m, "la");
    mp_f64(m, 1.5);
    mp_str(m, "lo");
    mp_byte(m, 0x02); /* an integer coordinate reads as a double */
}
static void entry_no_op(struct mp *m)
{
    entry_head(m, 2, -1);
}
static void entry_set_without_lon(struct mp *m)
{
    entry_head(m, 4, 1);
    mp_str(m, "la");
    mp_f64(m, 1.5);
}
static void entry_op_two(struct mp *m)
{
    entry_head(m, 3, 2);
}
static void entry_meta_without_encoding(struct mp *m)
{
    entry_head(m, 6, 1);
    mp_str(m, "la");
    mp_byte(m, 0x01);
    mp_str(m, "lo");
    mp_byte(m, 0x01);
    mp_str(m, "m");
    mp_byte(m, 0xc4); /* bin 8 */
    mp_byte(m, 0x01);
    mp_byte(m, 0x7b);
}
static void entry_negative_version(struct mp *m)
{
    mp_byte(m, 0x83);
    mp_str(m, "v");
    mp_byte(m, 0xff); /* -1 */
    mp_str(m, "c");
    mp_str(m, "q");
    mp_str(m, "o");
    mp_byte(m, 0x00);
}
static void entry_not_a_map(struct mp *m)
{
    mp_str(m, "q");
}
static void entry_clear_with_extras(struct mp *m)
{
    entry_head(m, 5, 0);
    mp_str(m, "u");
    mp_str(m, "who");
    mp_str(m, "zz"); /* unknown: skipped */
    mp_byte(m, 0x90);
}

Test(fleet_wire, hostile_shapes_are_refused_and_unknown_keys_skipped)
{
    struct mp m;
    with_entry(&m, "z9", entry_ok);
    cr_assert(decodes(&m));
    with_entry(&m, "z9", entry_clear_with_extras);
    cr_assert(decodes(&m));
    struct fleet_wire_msg msg;
    cr_assert(fleet_wire_decode(m.b, m.n, &msg));
    struct fleet_wire_cursor c = {0};
    struct fleet_wire_entry e;
    cr_assert(fleet_wire_next_entry(&msg, &c, &e));
    cr_assert(!e.set && e.user_len == 0, "a clear carries nothing but its name");
    void (*bad_entries[])(struct mp *) = {entry_no_op,
                                          entry_set_without_lon,
                                          entry_op_two,
                                          entry_meta_without_encoding,
                                          entry_negative_version,
                                          entry_not_a_map};
    for (size_t i = 0; i < sizeof(bad_entries) / sizeof(bad_entries[0]); i++) {
        with_entry(&m, "z9", bad_entries[i]);
        cr_assert(!decodes(&m), "bad entry %zu", i);
    }
    /* Node ids: missing, empty, too long, outside [A-Za-z0-9_-], not a string. */
    with_entry(&m, "", entry_ok);
    cr_assert(!decodes(&m));
    with_entry(&m, "a.b", entry_ok);
    cr_assert(!decodes(&m));
    with_entry(&m, "0123456789abcdef0123456789abcdefX", entry_ok); /* 33 */
    cr_assert(!decodes(&m));
    m.n = 0;
    mp_byte(&m, 0x81);
    mp_str(&m, "v");
    mp_byte(&m, 0x01);
    cr_assert(!decodes(&m), "no node");
    m.n = 0;
    mp_byte(&m, 0x81);
    mp_str(&m, "n");
    mp_byte(&m, 0x07);
    cr_assert(!decodes(&m), "a node that is a number");
    /* Known keys of the wrong type; a key that is not a string; not a map; trailing bytes. */
    static const char *const typed[] = {"v", "r", "g", "w", "t", "s", "p", "c", "e"};
    for (size_t i = 0; i < sizeof(typed) / sizeof(typed[0]); i++) {
        m.n = 0;
        mp_byte(&m, 0x82);
        mp_str(&m, "n");
        mp_str(&m, "z9");
        mp_str(&m, typed[i]);
        mp_byte(&m, strchr("spc", typed[i][0]) ? 0x01 : 0xa1); /* a number / a string */
        if (!strchr("spc", typed[i][0]))
            mp_byte(&m, 'x');
        cr_assert(!decodes(&m), "%s of the wrong type", typed[i]);
    }
    m.n = 0;
    mp_byte(&m, 0x82);
    mp_str(&m, "n");
    mp_str(&m, "z9");
    mp_byte(&m, 0x01); /* key 1 */
    mp_byte(&m, 0x01);
    cr_assert(!decodes(&m));
    m.n = 0;
    mp_byte(&m, 0x91);
    mp_str(&m, "z9");
    cr_assert(!decodes(&m), "an array");
    with_entry(&m, "z9", entry_ok);
    mp_byte(&m, 0xc0);
    cr_assert(!decodes(&m), "trailing bytes");
    /* A count far beyond the bytes there (an allocation bomb elsewhere): refused, nothing
     * allocated. */
    m.n = 0;
    mp_byte(&m, 0x82);
    mp_str(&m, "n");
    mp_str(&m, "z9");
    mp_str(&m, "e");
    mp_raw(&m, "\xdd\x05\xf5\xe1\x00", 5); /* array32 of 100 million */
    cr_assert(!decodes(&m));
    /* Nesting deeper than 16 under an unknown key. */
    m.n = 0;
    mp_byte(&m, 0x82);
    mp_str(&m, "n");
    mp_str(&m, "z9");
    mp_str(&m, "x");
    for (int i = 0; i < 20; i++)
        mp_byte(&m, 0x91);
    mp_byte(&m, 0xc0);
    cr_assert(!decodes(&m));
    /* Too big to read at all. */
    uint8_t *big = calloc(1, FLEET_WIRE_MAX_BYTES + 1);
    big[0] = 0x80;
    struct fleet_wire_msg bm;
    cr_assert(!fleet_wire_decode(big, FLEET_WIRE_MAX_BYTES + 1, &bm));
    free(big);
    cr_assert(!fleet_wire_decode(NULL, 0, &bm));
}

Test(fleet_wire, subjects_name_their_kind_and_cell)
{
    char cell[GEO_CELL_BUF];
    size_t n;
    cr_assert_eq(fleet_wire_kind_of("rtgate.geo.hb", NULL, NULL), FLEET_WIRE_HEARTBEAT);
    cr_assert_eq(fleet_wire_kind_of("rtgate.geo.s", NULL, NULL), FLEET_WIRE_SNAPSHOT_ASK);
    cr_assert_eq(fleet_wire_kind_of("rtgate.geo.s.nodeA", NULL, NULL), FLEET_WIRE_SNAPSHOT_ASK);
    cr_assert_eq(fleet_wire_kind_of("rtgate.geo.r.nodeA", NULL, NULL), FLEET_WIRE_SNAPSHOT_ANSWER);
    cr_assert_eq(fleet_wire_kind_of("rtgate.geo.zz", NULL, NULL), FLEET_WIRE_OTHER);
    cr_assert_eq(fleet_wire_kind_of(NULL, NULL, NULL), FLEET_WIRE_OTHER);
    cr_assert_eq(fleet_wire_kind_of("rtgate.geo.d.drivers.u.3.3.d.c", cell, &n), FLEET_WIRE_DELTA);
    cr_assert_eq(n, 5);
    cr_assert_str_eq(cell, "u33dc");
    static const char *const broken[] = {"rtgate.geo.d.drivers", "rtgate.geo.d.drivers.u3.3",
                                         "rtgate.geo.d.drivers.u.3.", "rtgate.geo.d.x",
                                         "rtgate.geo.d.s.1.2.3.4.5.6.7.8.9.0.1.2.3"};
    for (size_t i = 0; i < sizeof(broken) / sizeof(broken[0]); i++) {
        cr_assert_eq(fleet_wire_kind_of(broken[i], cell, &n), FLEET_WIRE_DELTA);
        cr_assert_eq(n, 0, "%s", broken[i]);
    }
    char subject[FLEET_WIRE_SUBJECT_MAX];
    fleet_wire_delta_subject(subject, sizeof(subject), "drivers", 7, "u33dc", 5, 5);
    cr_assert_str_eq(subject, "rtgate.geo.d.drivers.u.3.3.d.c");
    fleet_wire_delta_subject(subject, sizeof(subject), "drivers", 7, "u3", 2, 5);
    cr_assert_str_eq(subject, "rtgate.geo.d.drivers.u.3.>");
    cr_assert_eq(fleet_wire_kind_of(subject, cell, &n), FLEET_WIRE_DELTA);
    char tiny[20];
    fleet_wire_delta_subject(tiny, sizeof(tiny), "drivers", 7, "u33dc", 5, 5);
    cr_assert_lt(strlen(tiny), sizeof(tiny), "cut, never overrun");
}

Test(fleet_wire, tokens)
{
    cr_assert(fleet_wire_token_ok("a-B_9", 5, 32));
    cr_assert(!fleet_wire_token_ok("a b", 3, 32));
    cr_assert(!fleet_wire_token_ok("", 0, 32));
    cr_assert(!fleet_wire_token_ok(NULL, 0, 32));
    cr_assert(!fleet_wire_token_ok("abc", 3, 2));
}

/*
 * The fuzz target's seeds are the samples above, byte for byte, so they are
 * valid messages of today's wire. RTGATE_WRITE_FLEET_CORPUS=DIR writes them
 * there instead (to refresh the corpus after a wire change).
 */
Test(fleet_wire, the_fuzz_seed_corpus_is_what_the_encoders_write)
{
    struct sample s[N_SAMPLES];
    make_samples(s);
    const char *out = getenv("RTGATE_WRITE_FLEET_CORPUS");
    for (int i = 0; i < N_SAMPLES; i++) {
        char path[512];
        snprintf(path, sizeof(path), "%s/%s.bin", out ? out : RT_FLEET_CORPUS, s[i].name);
        if (out) {
            FILE *f = fopen(path, "wb");
            cr_assert_not_null(f, "%s", path);
            cr_assert_eq(fwrite(s[i].buf.data, 1, s[i].buf.len, f), s[i].buf.len);
            fclose(f);
            continue;
        }
        FILE *f = fopen(path, "rb");
        cr_assert_not_null(f, "%s is missing", path);
        uint8_t buf[4096];
        size_t n = fread(buf, 1, sizeof(buf), f);
        fclose(f);
        cr_assert_eq(n, s[i].buf.len, "%s", path);
        cr_assert_eq(memcmp(buf, s[i].buf.data, n), 0, "%s differs from the encoder", path);
        struct fleet_wire_msg m;
        cr_assert(fleet_wire_decode(buf, n, &m));
    }
    free_samples(s);
}
