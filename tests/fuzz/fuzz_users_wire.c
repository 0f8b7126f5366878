/*
 * fuzz_users_wire.c: the users' bus codec (users/users_wire.c), fed what
 * another node, or anyone who can publish on rtgate.users.*, could send.
 *
 * Properties: an accepted message has a valid node id and, when it names a
 * channel, a valid one; its strings, entries, connections and infos lie
 * inside the input and pass their own checks; it is taken whole (every entry
 * and connection it counted reads). Written back with the encoders (a
 * heartbeat, a snapshot ask, a connections report, a presence delta or a
 * snapshot answer, whichever its fields fit), it reads back to the same
 * fields. Seeds:
 * corpus/fuzz_users_wire/ (make_seeds.py).
 */
#include "fuzz.h"
#include "users_wire.h"

#include <string.h>

#define MAX_ENTRIES 64 /* re-encoded and compared; more are only read */
#define MAX_CONNS   64 /* connections of an entry kept for the comparison */

static bool inside(const void *p, size_t n, const uint8_t *base, size_t size)
{
    const uint8_t *b = p;
    return n == 0 || (b >= base && n <= size && (size_t)(b - base) <= size - n);
}

static bool same_bytes(const void *a, size_t al, const void *b, size_t bl)
{
    return al == bl && (al == 0 || memcmp(a, b, al) == 0);
}

struct entry {
    struct users_wire_entry e;
    uint32_t n_conns;
    struct users_wire_conn conns[MAX_CONNS];
};

/* Reads and checks one accepted entry's connections (those past MAX_CONNS are only read). */
static void read_conns(const struct users_wire_msg *m, struct entry *x, const uint8_t *buf,
                       size_t size)
{
    struct users_wire_cursor c = {0};
    struct users_wire_conn conn;
    x->n_conns = 0;
    uint32_t n = 0;
    while (users_wire_next_conn(m, &x->e, &c, &conn)) {
        FUZZ_CHECK(inside(conn.client, conn.client_len, buf, size));
        FUZZ_CHECK(users_wire_client_ok(conn.client, conn.client_len));
        if (n < MAX_CONNS)
            x->conns[n] = conn;
        n++;
    }
    FUZZ_CHECK(n == (x->e.has_conns ? x->e.n_conns : 0));
    x->n_conns = n;
}

/* What each entry kind carries: a connections report has no presence fields, and back. */
static bool is_conns_entry(const struct users_wire_entry *e)
{
    return !e->v && !e->clients && !e->info;
}

static bool is_member_entry(const struct users_wire_entry *e)
{
    return !e->has_conns && !e->pubs;
}

static void check_same_entry(const struct users_wire_msg *back, const struct users_wire_entry *got,
                             const struct entry *want, bool member)
{
    FUZZ_CHECK(same_bytes(got->user, got->user_len, want->e.user, want->e.user_len));
    if (member) {
        FUZZ_CHECK(got->v == want->e.v && got->clients == want->e.clients);
        FUZZ_CHECK(same_bytes(got->info, got->info_len, want->e.info, want->e.info_len));
        return;
    }
    FUZZ_CHECK(got->has_conns == want->e.has_conns && got->pubs == want->e.pubs);
    FUZZ_CHECK(!got->has_conns || got->n_conns == want->n_conns);
    struct users_wire_cursor c = {0};
    struct users_wire_conn conn;
    for (uint32_t i = 0; i < want->n_conns; i++) {
        FUZZ_CHECK(users_wire_next_conn(back, got, &c, &conn));
        FUZZ_CHECK(conn.ts == want->conns[i].ts);
        FUZZ_CHECK(same_bytes(conn.client, conn.client_len, want->conns[i].client,
                              want->conns[i].client_len));
    }
}

/* Writes m back with the encoder its fields fit (if any) and reads it again. */
static void round_trip(const struct users_wire_msg *m, const struct entry *x, uint32_t n)
{
    bool conns = true, members = true;
    for (uint32_t i = 0; i < n; i++) {
        conns = conns && is_conns_entry(&x[i].e) && x[i].n_conns <= MAX_CONNS;
        members = members && is_member_entry(&x[i].e);
    }
    bool no_snapshot = !m->req && !m->watermark && !m->end;
    bool no_report = !m->full_start && !m->full_end;
    bool no_heartbeat = !m->gen && !m->hello && !m->bye;
    bool heartbeat = !m->entries_off && !m->channel && no_snapshot && no_report;
    bool report = m->entries_off && conns && !m->channel && no_snapshot && no_heartbeat;
    bool answer = m->entries_off && members && m->channel && no_report && no_heartbeat;
    bool ask =
        !m->entries_off && m->channel && !m->watermark && !m->end && no_report && no_heartbeat;
    struct proto_buf out;
    proto_buf_init(&out, 0);
    struct users_wire_writer w;
    rt_status st = RT_INVAL;
    if (heartbeat) {
        users_wire_heartbeat(&out, m->node, m->node_len, m->gen, m->hello, m->bye);
        st = out.len ? RT_OK : RT_NOMEM;
    } else if (ask) {
        users_wire_ask(&out, m->node, m->node_len, m->req, m->channel, m->channel_len);
        st = out.len ? RT_OK : RT_NOMEM;
    } else if (report) {
        users_wire_conns_begin(&w, &out, m->node, m->node_len, m->full_start);
        for (uint32_t i = 0; i < n; i++)
            users_wire_put_user(&w, x[i].e.user, x[i].e.user_len, x[i].e.has_conns, x[i].conns,
                                x[i].n_conns, x[i].e.pubs);
        st = users_wire_end(&w, m->full_end);
    } else if (answer) {
        bool as_answer = m->req || m->watermark || m->end;
        if (as_answer)
            users_wire_answer_begin(&w, &out, m->node, m->node_len, m->req, m->watermark,
                                    m->channel, m->channel_len);
        else
            users_wire_delta_begin(&w, &out, m->node, m->node_len, m->channel, m->channel_len);
        for (uint32_t i = 0; i < n; i++)
            users_wire_put_member(&w, x[i].e.v, x[i].e.user, x[i].e.user_len, x[i].e.clients,
                                  x[i].e.info, x[i].e.info_len);
        st = users_wire_end(&w, m->end);
    }
    if (st == RT_OK) {
        struct users_wire_msg back;
        FUZZ_CHECK(users_wire_decode(out.data, out.len, &back));
        FUZZ_CHECK(same_bytes(back.node, back.node_len, m->node, m->node_len));
        FUZZ_CHECK(same_bytes(back.channel, back.channel_len, m->channel, m->channel_len));
        FUZZ_CHECK(back.gen == m->gen && back.hello == m->hello && back.bye == m->bye);
        FUZZ_CHECK(back.req == m->req && back.watermark == m->watermark && back.end == m->end);
        FUZZ_CHECK(back.full_start == m->full_start && back.full_end == m->full_end);
        FUZZ_CHECK(back.n_entries == n);
        struct users_wire_cursor c = {0};
        struct users_wire_entry got;
        for (uint32_t i = 0; i < n; i++) {
            FUZZ_CHECK(users_wire_next_entry(&back, &c, &got));
            check_same_entry(&back, &got, &x[i], answer);
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
    struct users_wire_msg m;
    if (users_wire_decode(buf, size, &m)) {
        FUZZ_CHECK(m.bytes == buf && m.len == size);
        FUZZ_CHECK(inside(m.node, m.node_len, buf, size) && users_wire_node_ok(m.node, m.node_len));
        FUZZ_CHECK(!m.channel || (inside(m.channel, m.channel_len, buf, size) &&
                                  proto_channel_valid(m.channel, m.channel_len)));
        static struct entry x[MAX_ENTRIES];
        struct entry one;
        struct users_wire_cursor c = {0};
        uint32_t n = 0;
        for (;;) {
            struct entry *e = n < MAX_ENTRIES ? &x[n] : &one;
            if (!users_wire_next_entry(&m, &c, &e->e))
                break;
            FUZZ_CHECK(inside(e->e.user, e->e.user_len, buf, size));
            FUZZ_CHECK(users_wire_user_ok(e->e.user, e->e.user_len));
            FUZZ_CHECK(!e->e.info || (inside(e->e.info, e->e.info_len, buf, size) &&
                                      e->e.info_len <= USERS_WIRE_INFO_MAX));
            FUZZ_CHECK(!e->e.has_conns || e->e.n_conns <= USERS_WIRE_CONNS_MAX);
            FUZZ_CHECK(e->e.clients <= UINT32_MAX);
            read_conns(&m, e, buf, size);
            n++;
        }
        FUZZ_CHECK(n == m.n_entries);
        if (n <= MAX_ENTRIES)
            round_trip(&m, x, n);
    } else {
        FUZZ_CHECK(!m.node && !m.channel && !m.entries_off && !m.n_entries);
    }
    free(buf);
    return 0;
}
