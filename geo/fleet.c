/*
 * fleet.c: presence across nodes (fleet.h; docs/presence.md has the wire
 * format). Loop thread; no I/O of its own.
 *
 * Pieces:
 *   - nodes: the other nodes heard from, each with the owner id its members
 *     carry in the index; dropped (with their members) after ttl_ms of
 *     silence;
 *   - follows: the (space, cell prefix) pairs this node follows, each with
 *     its bus subscription and, while one is awaited, its snapshot (who was
 *     asked, who answered with which watermark, which members they named);
 *   - wants: near queries waiting for follows to become ready, and watches
 *     holding follows;
 *   - owners: the connections charged with follows (the one that started a
 *     follow, or its last holder), each with its count, so that one client
 *     cannot take the whole max_follows;
 *   - dirty: local members changed since the last flush, published then, one
 *     bus message per (space, cell) at most (split when large).
 */
#include "fleet.h"
#include "geo_int.h"
#include "protocol.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SUBJ_HB       "rtgate.geo.hb"
#define SUBJ_SNAP     "rtgate.geo.s"
#define SUBJ_REPLY    "rtgate.geo.r."
#define SUBJ_DELTA    "rtgate.geo.d."
#define CHUNK_BYTES   (256u * 1024u) /* a bus message is split beyond this */
#define CHUNK_ENTRIES 2000u
#define MSG_MAX_BYTES (8u << 20) /* larger bus messages are dropped unread */
#define MSG_MAX_ELEMS (1u << 20)
#define WANT_CELLS    16u /* cells a want follows at most (a coarser prefix beyond) */
#define COVER_CAP     32u /* cells geo_cover may return at precision 1 */
#define WARMUP_MS     300u
#define HELLO_GAP_MS  100u /* answer hellos at most this often */
#define RESYNC_GAP_MS 1000u
#define NODES_MAX     4096u /* other nodes tracked; ids beyond are ignored (a flood of made-up ids) */

/* ------------------------------------------------------------------------ */
/* Types                                                                      */

struct fnode {
    struct rt_hnode h; /* by id */
    struct fnode *prev, *next;
    uint64_t token; /* owner id of its members in the index */
    uint64_t last_seen;
    uint64_t gen; /* its bus generation, from heartbeats */
    size_t id_len;
    char id[GEO_FLEET_NODE_MAX + 1];
};

struct fpeer {
    uint64_t token;
    uint64_t watermark; /* its v when it answered */
    bool answered;      /* first chunk in */
    bool done;          /* last chunk in, or the node is gone */
};

/* A client id named by a snapshot reply. */
struct fseen {
    struct rt_hnode h;
    size_t len;
    char client[];
};

struct fsnap {
    uint64_t req;
    uint64_t deadline;
    struct fpeer *peers;
    uint32_t n_peers, cap_peers;
    struct rt_htab seen;
};

/*
 * A connection charged with follows. In the table while it is live and
 * charged with at least one; freed with its last follow (a forgotten owner
 * lives on, out of the table, until then: bounded by the follows).
 */
struct fowner {
    struct rt_hnode h; /* by id */
    uint64_t id;
    uint32_t follows; /* charged to it */
    bool gone;        /* forgotten: out of the table */
};

struct ffollow {
    struct rt_hnode h; /* by space NUL prefix */
    struct ffollow *prev, *next;
    void *sub;
    struct fowner *owner; /* charged with it, or NULL */
    uint32_t holds;
    uint64_t last_used;
    bool ready;
    struct fsnap *snap;
    uint64_t *waiters; /* tickets of wants waiting for it */
    uint32_t n_waiters, cap_waiters;
    size_t space_len, prefix_len;
    char space[GEO_SPACE_MAX + 1];
    char prefix[GEO_CELL_BUF];
};

struct fwant {
    struct rt_hnode h; /* by ticket */
    uint64_t ticket;
    uint32_t remaining;
    bool hold, partial, reported;
    uint32_t n_follows;
    struct ffollow *follows[COVER_CAP]; /* held (hold only) */
};

/* A local member changed since the last flush. */
struct fdirty {
    struct rt_hnode h; /* by space NUL client */
    struct fdirty *next;
    char old_cell[GEO_CELL_BUF]; /* share cell at the last flush, "" if absent then */
    size_t space_len, client_len;
    char strs[]; /* space NUL client NUL */
};

struct fready {
    uint64_t ticket;
    bool partial;
};

struct geo_fleet {
    struct geo *geo;
    struct geo_fleet_bus bus;
    geo_fleet_ready_fn on_ready;
    void *arg;
    int share_p;
    uint32_t ttl_ms, hb_ms, linger_ms, wait_ms, max_follows, max_owner, resync_ms;
    char node[GEO_FLEET_NODE_MAX + 1];
    size_t node_len;
    char reply_subject[GEO_FLEET_SUBJECT_MAX];

    struct rt_htab nodes;
    struct fnode *node_list;
    uint64_t node_serial;
    struct rt_htab follows;
    struct ffollow *follow_list;
    struct rt_htab wants;
    struct rt_htab owners;
    uint64_t next_ticket;
    struct rt_htab dirty;
    struct fdirty *dirty_head, *dirty_tail;

    uint64_t v;        /* changes published so far */
    uint64_t next_req; /* snapshot requests */
    uint64_t now, warm_until, last_hb, last_hello_answer, last_resync;
    uint64_t bus_gen;
    uint64_t lost_out; /* own publishes that failed: part of the generation others see */
    bool bus_gen_known, resync_wanted;

    void *sub_hb, *sub_snap, *sub_snap_me, *sub_reply;
    struct proto_buf out;

    struct fready *readyq;
    uint32_t n_ready, cap_ready;
    struct geo_fleet_stats st;
};

/* ------------------------------------------------------------------------ */
/* Small helpers                                                              */

static bool token_ok(const char *s, size_t len, size_t max)
{
    if (len < 1 || len > max)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-'))
            return false;
    }
    return true;
}

static bool grow(void **v, uint32_t *cap, uint32_t need, size_t size)
{
    if (need <= *cap)
        return true;
    uint32_t ncap = *cap ? *cap * 2 : 8;
    while (ncap < need)
        ncap *= 2;
    void *nv = realloc(*v, (size_t)ncap * size);
    if (!nv)
        return false;
    *v = nv;
    *cap = ncap;
    return true;
}

static uint64_t key_hash(const char *a, size_t alen, const char *b, size_t blen)
{
    char buf[GEO_SPACE_MAX + GEO_CLIENT_MAX + 2];
    memcpy(buf, a, alen);
    buf[alen] = '\0';
    memcpy(buf + alen + 1, b, blen);
    return rt_hash_bytes(buf, alen + 1 + blen);
}

static void publish(struct geo_fleet *f, const char *subject, const char *reply,
                    const struct proto_buf *b)
{
    f->st.messages_out++;
    if (f->bus.publish(f->bus.ctx, subject, reply, b->data, b->len) != RT_OK) {
        f->st.publish_failures++;
        f->lost_out++; /* the next heartbeat says so: the others resync from this node */
    }
}

/* Starts a bus message: a map with this node's id first. */
static void msg_begin(struct geo_fleet *f, struct proto_writer *w)
{
    proto_buf_reset(&f->out);
    proto_writer_init(w, PROTO_MSGPACK, &f->out);
    proto_w_map(w);
    proto_w_kstr(w, "n", f->node, f->node_len);
}

/* One member as an entry of a delta or a snapshot reply. */
static void write_entry(struct proto_writer *w, uint64_t v, const struct geo_member_view *m)
{
    proto_w_map(w);
    proto_w_kuint(w, "v", v);
    proto_w_kstr(w, "c", m->client, m->client_len);
    proto_w_kuint(w, "o", 1);
    proto_w_kstr(w, "u", m->user, m->user_len);
    proto_w_kdouble(w, "la", m->lat);
    proto_w_kdouble(w, "lo", m->lon);
    if (m->meta_len) {
        proto_w_kint(w, "me", m->meta_enc);
        struct proto_payload p = {PROTO_PAYLOAD_BINARY, m->meta, m->meta_len, false};
        proto_w_payload(w, "m", &p);
    }
    proto_w_end(w);
}

static void write_clear(struct proto_writer *w, uint64_t v, const char *client, size_t len)
{
    proto_w_map(w);
    proto_w_kuint(w, "v", v);
    proto_w_kstr(w, "c", client, len);
    proto_w_kuint(w, "o", 0);
    proto_w_end(w);
}

/* ------------------------------------------------------------------------ */
/* Reading bus messages                                                       */

struct fentry {
    uint64_t v;
    const char *client;
    size_t client_len;
    int op; /* 1 set, 0 clear */
    const char *user;
    size_t user_len;
    double lat, lon;
    bool has_lat, has_lon;
    int meta_enc;
    const uint8_t *meta;
    size_t meta_len;
};

struct fmsg {
    const char *node, *space, *prefix;
    size_t node_len, space_len, prefix_len;
    uint64_t v, req, gen, watermark;
    bool hello, end;
    const uint8_t *p; /* the message */
    size_t len;
    size_t entries_off; /* at the "e" array's header, 0 if none */
};

static bool key_is(const struct proto_mp_item *k, const char *name)
{
    size_t n = strlen(name);
    return k->n == n && memcmp(k->ptr, name, n) == 0;
}

static bool item_u64(const struct proto_mp_item *it, uint64_t *out)
{
    if (it->kind == PROTO_MP_UINT)
        *out = it->u;
    else if (it->kind == PROTO_MP_INT && it->i >= 0)
        *out = (uint64_t)it->i;
    else
        return false;
    return true;
}

static bool item_double(const struct proto_mp_item *it, double *out)
{
    if (it->kind == PROTO_MP_FLOAT)
        *out = it->d;
    else if (it->kind == PROTO_MP_INT)
        *out = (double)it->i;
    else
        return false;
    return true;
}

static bool item_str(const struct proto_mp_item *it, const char **s, size_t *len)
{
    if (it->kind != PROTO_MP_STR)
        return false;
    *s = (const char *)it->ptr;
    *len = it->n;
    return true;
}

/* Skips the value at *off (the message was scanned whole before). */
static bool skip_value(const uint8_t *p, size_t len, size_t *off)
{
    struct proto_mp_scan sc;
    proto_mp_scan(p + *off, len - *off, 16, MSG_MAX_ELEMS, 0, &sc);
    if (sc.structural)
        return false;
    *off += sc.end;
    return true;
}

/* Reads a message's top-level map; entries are read later (read_entries). */
static bool read_msg(const uint8_t *p, size_t len, struct fmsg *m)
{
    memset(m, 0, sizeof(*m));
    m->p = p;
    m->len = len;
    if (!p || len == 0 || len > MSG_MAX_BYTES)
        return false;
    struct proto_mp_scan sc;
    proto_mp_scan(p, len, 16, MSG_MAX_ELEMS, PROTO_MP_REJECT_NONSTR_K, &sc);
    if (sc.structural || sc.content || sc.end != len)
        return false;
    size_t off = 0;
    struct proto_mp_item it, k;
    if (!proto_mp_read(p, len, &off, &it) || it.kind != PROTO_MP_MAP)
        return false;
    for (size_t i = 0; i < it.n; i++) {
        if (!proto_mp_read(p, len, &off, &k))
            return false;
        size_t voff = off;
        struct proto_mp_item v;
        if (!proto_mp_read(p, len, &off, &v))
            return false;
        bool ok = true;
        if (key_is(&k, "n"))
            ok = item_str(&v, &m->node, &m->node_len);
        else if (key_is(&k, "s"))
            ok = item_str(&v, &m->space, &m->space_len);
        else if (key_is(&k, "p"))
            ok = item_str(&v, &m->prefix, &m->prefix_len);
        else if (key_is(&k, "v"))
            ok = item_u64(&v, &m->v);
        else if (key_is(&k, "r"))
            ok = item_u64(&v, &m->req);
        else if (key_is(&k, "g"))
            ok = item_u64(&v, &m->gen);
        else if (key_is(&k, "w"))
            ok = item_u64(&v, &m->watermark);
        else if (key_is(&k, "hello"))
            m->hello = v.kind == PROTO_MP_BOOL && v.b;
        else if (key_is(&k, "end"))
            m->end = v.kind == PROTO_MP_BOOL && v.b;
        else if (key_is(&k, "e"))
            ok = v.kind == PROTO_MP_ARRAY && (m->entries_off = voff, true);
        if (!ok)
            return false;
        off = voff;
        if (!skip_value(p, len, &off))
            return false;
    }
    return token_ok(m->node, m->node_len, GEO_FLEET_NODE_MAX);
}

/* Reads one entry map at *off. */
static bool read_entry(const uint8_t *p, size_t len, size_t *off, struct fentry *e)
{
    memset(e, 0, sizeof(*e));
    e->op = -1;
    struct proto_mp_item it, k, v;
    if (!proto_mp_read(p, len, off, &it) || it.kind != PROTO_MP_MAP)
        return false;
    for (size_t i = 0; i < it.n; i++) {
        if (!proto_mp_read(p, len, off, &k))
            return false;
        size_t voff = *off;
        if (!proto_mp_read(p, len, off, &v))
            return false;
        bool ok = true;
        uint64_t u = 0;
        if (key_is(&k, "v"))
            ok = item_u64(&v, &e->v);
        else if (key_is(&k, "c"))
            ok = item_str(&v, &e->client, &e->client_len);
        else if (key_is(&k, "o"))
            ok = item_u64(&v, &u) && u <= 1 && (e->op = (int)u, true);
        else if (key_is(&k, "u"))
            ok = item_str(&v, &e->user, &e->user_len);
        else if (key_is(&k, "la"))
            ok = (e->has_lat = item_double(&v, &e->lat));
        else if (key_is(&k, "lo"))
            ok = (e->has_lon = item_double(&v, &e->lon));
        else if (key_is(&k, "me"))
            ok = item_u64(&v, &u) && u >= PROTO_PAYLOAD_JSON && u <= PROTO_PAYLOAD_BINARY &&
                 (e->meta_enc = (int)u, true);
        else if (key_is(&k, "m"))
            ok = v.kind == PROTO_MP_BIN && (e->meta = v.ptr, e->meta_len = v.n, true);
        if (!ok)
            return false;
        *off = voff;
        if (!skip_value(p, len, off))
            return false;
    }
    if (!e->client || e->op < 0)
        return false;
    if (e->op == 1 && (!e->has_lat || !e->has_lon || (e->meta_len && !e->meta_enc)))
        return false;
    return true;
}

/* Calls fn on every entry of m; false if one was malformed (those before it were applied). */
static bool each_entry(const struct fmsg *m, bool (*fn)(void *arg, const struct fentry *e),
                       void *arg)
{
    if (!m->entries_off)
        return true;
    size_t off = m->entries_off;
    struct proto_mp_item arr;
    if (!proto_mp_read(m->p, m->len, &off, &arr) || arr.kind != PROTO_MP_ARRAY)
        return false;
    for (size_t i = 0; i < arr.n; i++) {
        struct fentry e;
        if (!read_entry(m->p, m->len, &off, &e))
            return false;
        if (!fn(arg, &e))
            return false;
    }
    return true;
}

/* ------------------------------------------------------------------------ */
/* Nodes                                                                      */

static struct fnode *node_find(const struct geo_fleet *f, const char *id, size_t len)
{
    uint64_t h = rt_hash_bytes(id, len);
    for (struct rt_hnode *n = rt_htab_chain(&f->nodes, h); n; n = n->next) {
        struct fnode *nd = RT_CONTAINER(n, struct fnode, h);
        if (n->hash == h && nd->id_len == len && memcmp(nd->id, id, len) == 0)
            return nd;
    }
    return NULL;
}

static struct fnode *node_get(struct geo_fleet *f, const char *id, size_t len, bool *created)
{
    *created = false;
    struct fnode *nd = node_find(f, id, len);
    if (nd || !token_ok(id, len, GEO_FLEET_NODE_MAX) || rt_htab_count(&f->nodes) >= NODES_MAX)
        return nd;
    if (rt_htab_reserve(&f->nodes) != RT_OK || !(nd = calloc(1, sizeof(*nd))))
        return NULL;
    memcpy(nd->id, id, len);
    nd->id_len = len;
    nd->token = GEO_FLEET_CONN_BIT | ++f->node_serial;
    nd->last_seen = f->now;
    nd->h.hash = rt_hash_bytes(id, len);
    rt_htab_insert(&f->nodes, &nd->h);
    nd->next = f->node_list;
    if (f->node_list)
        f->node_list->prev = nd;
    f->node_list = nd;
    *created = true;
    return nd;
}

static struct fpeer *peer_find(struct fsnap *s, uint64_t token)
{
    for (uint32_t i = 0; i < s->n_peers; i++)
        if (s->peers[i].token == token)
            return &s->peers[i];
    return NULL;
}

/* A node went silent: its members leave, snapshots stop waiting for it. */
static void node_drop(struct geo_fleet *f, struct fnode *nd)
{
    size_t n = 0;
    geo_remove_conn(f->geo, nd->token, NULL, NULL, &n, NULL);
    f->st.remote_members -= n < f->st.remote_members ? n : f->st.remote_members;
    for (struct ffollow *fo = f->follow_list; fo; fo = fo->next) {
        struct fpeer *p = fo->snap ? peer_find(fo->snap, nd->token) : NULL;
        if (p && !p->done) {
            p->done = true;
            p->answered = false; /* nothing of it to keep or sweep */
        }
    }
    rt_htab_remove(&f->nodes, &nd->h);
    if (nd->prev)
        nd->prev->next = nd->next;
    else
        f->node_list = nd->next;
    if (nd->next)
        nd->next->prev = nd->prev;
    free(nd);
}

/* ------------------------------------------------------------------------ */
/* Owners                                                                     */

static struct fowner *owner_find(const struct geo_fleet *f, uint64_t id)
{
    uint64_t h = rt_hash_u64(id);
    for (struct rt_hnode *n = rt_htab_chain(&f->owners, h); n; n = n->next) {
        struct fowner *o = RT_CONTAINER(n, struct fowner, h);
        if (o->id == id)
            return o;
    }
    return NULL;
}

static struct fowner *owner_new(struct geo_fleet *f, uint64_t id)
{
    struct fowner *o = calloc(1, sizeof(*o));
    if (!o || rt_htab_reserve(&f->owners) != RT_OK) {
        free(o);
        return NULL;
    }
    o->id = id;
    o->h.hash = rt_hash_u64(id);
    rt_htab_insert(&f->owners, &o->h);
    return o;
}

/* Frees o once it is charged with nothing. */
static void owner_trim(struct geo_fleet *f, struct fowner *o)
{
    if (!o || o->follows)
        return;
    if (!o->gone)
        rt_htab_remove(&f->owners, &o->h);
    free(o);
}

static void uncharge(struct geo_fleet *f, struct ffollow *fo)
{
    struct fowner *o = fo->owner;
    if (!o)
        return;
    fo->owner = NULL;
    o->follows--;
    owner_trim(f, o);
}

/* fo's charge goes to o (not NULL). */
static void charge(struct geo_fleet *f, struct ffollow *fo, struct fowner *o)
{
    if (fo->owner == o)
        return;
    uncharge(f, fo);
    fo->owner = o;
    o->follows++;
}

void geo_fleet_forget(struct geo_fleet *f, uint64_t owner)
{
    struct fowner *o = owner ? owner_find(f, owner) : NULL;
    if (!o)
        return;
    rt_htab_remove(&f->owners, &o->h);
    o->gone = true; /* freed with its last follow */
}

uint32_t geo_fleet_owner_follows(const struct geo_fleet *f, uint64_t owner)
{
    const struct fowner *o = owner ? owner_find(f, owner) : NULL;
    return o ? o->follows : 0;
}

/* ------------------------------------------------------------------------ */
/* Follows                                                                    */

static struct ffollow *follow_find(const struct geo_fleet *f, const char *space, size_t slen,
                                   const char *prefix, size_t plen)
{
    uint64_t h = key_hash(space, slen, prefix, plen);
    for (struct rt_hnode *n = rt_htab_chain(&f->follows, h); n; n = n->next) {
        struct ffollow *fo = RT_CONTAINER(n, struct ffollow, h);
        if (n->hash == h && fo->space_len == slen && fo->prefix_len == plen &&
            memcmp(fo->space, space, slen) == 0 && memcmp(fo->prefix, prefix, plen) == 0)
            return fo;
    }
    return NULL;
}

/* The follow (any prefix length: there is at most one) that covers `cell`. */
static struct ffollow *covering(const struct geo_fleet *f, const char *space, size_t slen,
                                const char *cell, size_t clen)
{
    for (size_t k = 1; k <= clen; k++) {
        struct ffollow *fo = follow_find(f, space, slen, cell, k);
        if (fo)
            return fo;
    }
    return NULL;
}

static void subject_of(const struct geo_fleet *f, char *buf, size_t cap, const char *space,
                       size_t slen, const char *cell, size_t clen)
{
    size_t n = (size_t)snprintf(buf, cap, SUBJ_DELTA "%.*s", (int)slen, space);
    for (size_t i = 0; i < clen && n + 3 < cap; i++) {
        buf[n++] = '.';
        buf[n++] = cell[i];
    }
    if ((int)clen < f->share_p && n + 3 < cap) {
        buf[n++] = '.';
        buf[n++] = '>';
    }
    buf[n] = '\0';
}

static void free_seen_cb(struct rt_hnode *n, void *arg)
{
    (void)arg;
    free(RT_CONTAINER(n, struct fseen, h));
}

static void snap_free(struct fsnap *s)
{
    if (!s)
        return;
    free(s->peers);
    rt_htab_each(&s->seen, free_seen_cb, NULL);
    rt_htab_free(&s->seen);
    free(s);
}

static void seen_clear(struct fsnap *s)
{
    rt_htab_each(&s->seen, free_seen_cb, NULL);
    rt_htab_free(&s->seen);
    rt_htab_init(&s->seen);
}

static bool seen_has(const struct fsnap *s, const char *client, size_t len)
{
    uint64_t h = rt_hash_bytes(client, len);
    for (struct rt_hnode *n = rt_htab_chain(&s->seen, h); n; n = n->next) {
        struct fseen *e = RT_CONTAINER(n, struct fseen, h);
        if (n->hash == h && e->len == len && memcmp(e->client, client, len) == 0)
            return true;
    }
    return false;
}

static void seen_add(struct fsnap *s, const char *client, size_t len)
{
    if (seen_has(s, client, len) || rt_htab_reserve(&s->seen) != RT_OK)
        return;
    struct fseen *e = malloc(sizeof(*e) + len);
    if (!e)
        return;
    e->len = len;
    memcpy(e->client, client, len);
    e->h.hash = rt_hash_bytes(client, len);
    rt_htab_insert(&s->seen, &e->h);
}

static struct fpeer *peer_add(struct fsnap *s, uint64_t token)
{
    struct fpeer *p = peer_find(s, token);
    if (p)
        return p;
    if (!grow((void **)&s->peers, &s->cap_peers, s->n_peers + 1, sizeof(*s->peers)))
        return NULL;
    p = &s->peers[s->n_peers++];
    memset(p, 0, sizeof(*p));
    p->token = token;
    return p;
}

/* Sends a snapshot request for fo (to one node, or to all when nd is NULL). */
static void snap_send(struct geo_fleet *f, struct ffollow *fo, const struct fnode *nd)
{
    char subject[GEO_FLEET_SUBJECT_MAX];
    if (nd)
        snprintf(subject, sizeof(subject), SUBJ_SNAP ".%s", nd->id);
    else
        snprintf(subject, sizeof(subject), SUBJ_SNAP);
    struct proto_writer w;
    msg_begin(f, &w);
    proto_w_kuint(&w, "r", fo->snap->req);
    proto_w_kstr(&w, "s", fo->space, fo->space_len);
    proto_w_kstr(&w, "p", fo->prefix, fo->prefix_len);
    proto_w_end(&w);
    f->st.snapshots++;
    publish(f, subject, f->reply_subject, &f->out);
}

/*
 * Asks for a snapshot of fo: from every node (nd NULL: a new follow or a
 * resync; a snapshot already awaited starts over), or
 * from one more node into the snapshot awaited (or a new one).
 */
static rt_status snap_start(struct geo_fleet *f, struct ffollow *fo, struct fnode *nd)
{
    struct fsnap *s = fo->snap;
    if (!s) {
        if (!(s = calloc(1, sizeof(*s))))
            return RT_NOMEM;
        rt_htab_init(&s->seen);
        fo->snap = s;
        s->req = ++f->next_req;
    } else if (!nd) {
        s->req = ++f->next_req;
        s->n_peers = 0;
        seen_clear(s);
    }
    s->deadline = f->now + f->wait_ms;
    if (nd) {
        struct fpeer *p = peer_add(s, nd->token);
        if (p)
            p->answered = p->done = false;
        snap_send(f, fo, nd);
        return RT_OK;
    }
    for (struct fnode *n = f->node_list; n; n = n->next)
        peer_add(s, n->token);
    snap_send(f, fo, NULL);
    return RT_OK;
}

static void ready_push(struct geo_fleet *f, uint64_t ticket, bool partial)
{
    if (!grow((void **)&f->readyq, &f->cap_ready, f->n_ready + 1, sizeof(*f->readyq)))
        return; /* the want stays pending; its owner times out */
    f->readyq[f->n_ready++] = (struct fready){ticket, partial};
}

static struct fwant *want_find(const struct geo_fleet *f, uint64_t ticket)
{
    uint64_t h = rt_hash_u64(ticket);
    for (struct rt_hnode *n = rt_htab_chain(&f->wants, h); n; n = n->next) {
        struct fwant *w = RT_CONTAINER(n, struct fwant, h);
        if (w->ticket == ticket)
            return w;
    }
    return NULL;
}

static void want_free(struct geo_fleet *f, struct fwant *w)
{
    rt_htab_remove(&f->wants, &w->h);
    free(w);
}

/* ------------------------------------------------------------------------ */
/* Applying remote changes                                                    */

struct apply_ctx {
    struct geo_fleet *f;
    struct fnode *nd;
    const char *space;
    size_t space_len;
    struct fsnap *seen; /* snapshot replies: record the clients named */
};

static bool owned_remote(uint64_t conn)
{
    return (conn & GEO_FLEET_CONN_BIT) != 0;
}

static void apply_clear(struct geo_fleet *f, uint64_t token, const char *space, size_t slen,
                        const char *client, size_t clen)
{
    struct geo_member_view cur;
    if (geo_get(f->geo, space, slen, client, clen, &cur) != RT_OK || cur.conn != token)
        return;
    if (geo_clear(f->geo, space, slen, client, clen) == RT_OK && f->st.remote_members)
        f->st.remote_members--;
}

static bool same_member(const struct geo_member_view *cur, uint64_t token, const struct fentry *e)
{
    return cur->conn == token && cur->lat == e->lat && cur->lon == e->lon &&
           cur->user_len == e->user_len &&
           (!e->user_len || memcmp(cur->user, e->user, e->user_len) == 0) &&
           cur->meta_len == e->meta_len && (!e->meta_len || cur->meta_enc == e->meta_enc) &&
           (!e->meta_len || memcmp(cur->meta, e->meta, e->meta_len) == 0);
}

/*
 * One change of node a->nd. Versions order everything: a member keeps the v
 * of the state it holds (a delta's v, or a snapshot's watermark), and only a
 * higher v of the same owner replaces it; a node's messages arrive in the
 * order it sent them, so nothing older comes after a clear.
 */
static bool apply_entry(void *arg, const struct fentry *e)
{
    struct apply_ctx *a = arg;
    struct geo_fleet *f = a->f;
    if (a->seen)
        seen_add(a->seen, e->client, e->client_len);
    uint64_t token = a->nd->token;
    struct geo_member_view cur;
    bool present = geo_get(f->geo, a->space, a->space_len, e->client, e->client_len, &cur) == RT_OK;
    if (present && !owned_remote(cur.conn))
        return true; /* a local member's id: never overwritten from outside */
    bool mine = present && cur.conn == token;
    if (mine && e->v <= cur.version)
        return true; /* known already, or older */
    f->st.deltas_in++;
    if (e->op == 0) {
        if (mine)
            apply_clear(f, token, a->space, a->space_len, e->client, e->client_len);
        return true;
    }
    char cell[GEO_CELL_BUF];
    if (geo_encode(e->lat, e->lon, f->share_p, cell) != RT_OK)
        return false;
    if (!covering(f, a->space, a->space_len, cell, (size_t)f->share_p)) {
        /* Moved where this node does not follow: it can no longer be kept current. */
        if (present)
            apply_clear(f, cur.conn, a->space, a->space_len, e->client, e->client_len);
        return true;
    }
    if (mine && same_member(&cur, token, e)) {
        geo_set_version(f->geo, a->space, a->space_len, e->client, e->client_len, e->v);
        return true;
    }
    struct geo_member_in in = {
        .space = a->space,
        .space_len = a->space_len,
        .client = e->client,
        .client_len = e->client_len,
        .user = e->user,
        .user_len = e->user_len,
        .conn = token,
        .lat = e->lat,
        .lon = e->lon,
        .meta = e->meta,
        .meta_len = e->meta_len,
        .meta_enc = e->meta_enc,
        .version = e->v,
    };
    rt_status st = geo_set(f->geo, &in, NULL);
    if (st == RT_INVAL || st == RT_TOO_BIG)
        return false;
    if (st == RT_OK && !present)
        f->st.remote_members++;
    return true;
}

static bool space_of(const struct fmsg *m)
{
    return m->space && geo__space_name_ok(m->space, m->space_len);
}

/* Applies a delta message. */
static void apply_delta(struct geo_fleet *f, struct fnode *nd, const struct fmsg *m)
{
    struct apply_ctx a = {f, nd, m->space, m->space_len, NULL};
    if (!each_entry(m, apply_entry, &a))
        f->st.bad_messages++;
}

/* ------------------------------------------------------------------------ */
/* Snapshot completion                                                        */

struct sweep_ctx {
    struct geo_fleet *f;
    struct fsnap *s;
    const struct ffollow *skip; /* unfollow: members still covered by others stay */
    char (*clients)[GEO_CLIENT_MAX + 1];
    uint64_t *owners;
    uint32_t n, cap;
    bool failed;
};

static void sweep_visit(void *arg, const struct geo_member_view *m)
{
    struct sweep_ctx *c = arg;
    if (!owned_remote(m->conn))
        return;
    if (c->s) {
        struct fpeer *p = peer_find(c->s, m->conn);
        if (!p || !p->answered || m->version > p->watermark ||
            seen_has(c->s, m->client, m->client_len))
            return; /* named, or changed since the answer, or its node did not answer */
    } else {
        char cell[GEO_CELL_BUF];
        if (geo_encode(m->lat, m->lon, c->f->share_p, cell) == RT_OK &&
            covering(c->f, m->space, m->space_len, cell, (size_t)c->f->share_p))
            return;
    }
    if (!grow((void **)&c->clients, &c->cap, c->n + 1, sizeof(*c->clients)) ||
        !(c->owners = realloc(c->owners, (size_t)c->cap * sizeof(*c->owners)))) {
        c->failed = true;
        return;
    }
    memcpy(c->clients[c->n], m->client, m->client_len + 1);
    c->owners[c->n++] = m->conn;
}

/*
 * Drops the remote members in fo's prefix that its snapshot's answers did
 * not name (snap), or that no other follow covers (unfollow, snap NULL).
 */
static void sweep(struct geo_fleet *f, struct ffollow *fo, struct fsnap *snap)
{
    struct sweep_ctx c = {f, snap, fo, NULL, NULL, 0, 0, false};
    geo_each_prefix(f->geo, fo->space, fo->space_len, fo->prefix, fo->prefix_len, sweep_visit, &c,
                    NULL);
    for (uint32_t i = 0; i < c.n; i++)
        apply_clear(f, c.owners[i], fo->space, fo->space_len, c.clients[i], strlen(c.clients[i]));
    free(c.clients);
    free(c.owners);
}

static void follow_waiters_done(struct geo_fleet *f, struct ffollow *fo, bool partial)
{
    for (uint32_t i = 0; i < fo->n_waiters; i++) {
        struct fwant *w = want_find(f, fo->waiters[i]);
        if (!w || w->reported)
            continue;
        w->partial = w->partial || partial;
        if (w->remaining && --w->remaining == 0) {
            w->reported = true;
            ready_push(f, w->ticket, w->partial);
            if (!w->hold)
                want_free(f, w);
        }
    }
    fo->n_waiters = 0;
}

static void snap_finish(struct geo_fleet *f, struct ffollow *fo)
{
    struct fsnap *s = fo->snap;
    bool partial = false;
    for (uint32_t i = 0; i < s->n_peers; i++)
        partial = partial || !s->peers[i].done;
    if (partial)
        f->st.snapshots_partial++;
    sweep(f, fo, s);
    fo->snap = NULL;
    snap_free(s);
    fo->ready = true;
    follow_waiters_done(f, fo, partial);
}

static void snap_check(struct geo_fleet *f, struct ffollow *fo)
{
    struct fsnap *s = fo->snap;
    if (!s)
        return;
    bool all = true;
    for (uint32_t i = 0; i < s->n_peers && all; i++)
        all = s->peers[i].done;
    if ((all && f->now >= f->warm_until) || f->now >= s->deadline)
        snap_finish(f, fo);
}

static void report_ready(struct geo_fleet *f)
{
    for (uint32_t i = 0; i < f->n_ready; i++) {
        struct fready r = f->readyq[i];
        if (f->on_ready)
            f->on_ready(f->arg, r.ticket, r.partial);
    }
    f->n_ready = 0;
}

/* ------------------------------------------------------------------------ */
/* Follow / unfollow                                                          */

static void follow_absorb(struct geo_fleet *f, struct ffollow *nf);
static void follow_unlink(struct geo_fleet *f, struct ffollow *fo);

static rt_status follow_new(struct geo_fleet *f, const char *space, size_t slen, const char *prefix,
                            size_t plen, struct ffollow **out)
{
    if (rt_htab_count(&f->follows) >= f->max_follows)
        return RT_LIMIT;
    struct ffollow *fo = calloc(1, sizeof(*fo));
    if (!fo || rt_htab_reserve(&f->follows) != RT_OK) {
        free(fo);
        return RT_NOMEM;
    }
    memcpy(fo->space, space, slen);
    memcpy(fo->prefix, prefix, plen);
    fo->space_len = slen;
    fo->prefix_len = plen;
    char subject[GEO_FLEET_SUBJECT_MAX];
    subject_of(f, subject, sizeof(subject), space, slen, prefix, plen);
    fo->sub = f->bus.subscribe(f->bus.ctx, subject);
    if (!fo->sub) {
        free(fo);
        return RT_UNAVAILABLE;
    }
    fo->h.hash = key_hash(space, slen, prefix, plen);
    rt_htab_insert(&f->follows, &fo->h);
    fo->next = f->follow_list;
    if (f->follow_list)
        f->follow_list->prev = fo;
    f->follow_list = fo;
    fo->last_used = f->now;
    if (snap_start(f, fo, NULL) != RT_OK) {
        fo->ready = true; /* deltas still come; the next resync fills it */
        f->resync_wanted = true;
    }
    follow_absorb(f, fo);
    *out = fo;
    return RT_OK;
}

struct remap {
    struct ffollow *from, *to;
};

static void remap_want(struct rt_hnode *n, void *arg)
{
    struct remap *r = arg;
    struct fwant *w = RT_CONTAINER(n, struct fwant, h);
    for (uint32_t i = 0; i < w->n_follows; i++)
        if (w->follows[i] == r->from)
            w->follows[i] = r->to;
}

/*
 * fo (a finer prefix) is inside nf: nf takes over its holds and waiters, and
 * fo goes without a sweep (nf's snapshot covers its members). So no two
 * follows overlap and no delta comes twice.
 */
static void follow_merge(struct geo_fleet *f, struct ffollow *nf, struct ffollow *fo)
{
    nf->holds += fo->holds;
    nf->last_used = nf->last_used > fo->last_used ? nf->last_used : fo->last_used;
    for (uint32_t i = 0; i < fo->n_waiters; i++)
        if (grow((void **)&nf->waiters, &nf->cap_waiters, nf->n_waiters + 1, sizeof(*nf->waiters)))
            nf->waiters[nf->n_waiters++] = fo->waiters[i];
    struct remap r = {fo, nf};
    rt_htab_each(&f->wants, remap_want, &r);
    f->bus.unsubscribe(f->bus.ctx, fo->sub);
    follow_unlink(f, fo);
    uncharge(f, fo);
    snap_free(fo->snap);
    free(fo->waiters);
    free(fo);
}

/* Folds the follows of finer prefixes inside nf into it. */
static void follow_absorb(struct geo_fleet *f, struct ffollow *nf)
{
    for (struct ffollow *fo = f->follow_list, *next; fo; fo = next) {
        next = fo->next;
        if (fo != nf && fo->prefix_len > nf->prefix_len && fo->space_len == nf->space_len &&
            memcmp(fo->space, nf->space, nf->space_len) == 0 &&
            memcmp(fo->prefix, nf->prefix, nf->prefix_len) == 0)
            follow_merge(f, nf, fo);
    }
}

static void follow_unlink(struct geo_fleet *f, struct ffollow *fo)
{
    rt_htab_remove(&f->follows, &fo->h);
    if (fo->prev)
        fo->prev->next = fo->next;
    else
        f->follow_list = fo->next;
    if (fo->next)
        fo->next->prev = fo->prev;
}

static void follow_drop(struct geo_fleet *f, struct ffollow *fo)
{
    f->bus.unsubscribe(f->bus.ctx, fo->sub);
    follow_unlink(f, fo);
    sweep(f, fo, NULL); /* fo is out of the table: only others cover now */
    uncharge(f, fo);
    snap_free(fo->snap);
    free(fo->waiters);
    free(fo);
}

/* Asks every followed cell again (own bus reconnected, or lost messages). */
static void resync_all(struct geo_fleet *f)
{
    f->st.resyncs++;
    f->last_resync = f->now;
    f->resync_wanted = false;
    for (struct ffollow *fo = f->follow_list; fo; fo = fo->next)
        snap_start(f, fo, NULL);
}

/* Another node appeared or reconnected: ask it for every followed cell. */
static void resync_node(struct geo_fleet *f, struct fnode *nd)
{
    if (!f->follow_list)
        return;
    f->st.resyncs++;
    for (struct ffollow *fo = f->follow_list; fo; fo = fo->next)
        snap_start(f, fo, nd);
}

/* ------------------------------------------------------------------------ */
/* Receiving                                                                  */

static void send_heartbeat(struct geo_fleet *f, bool hello)
{
    struct proto_writer w;
    msg_begin(f, &w);
    proto_w_kuint(&w, "v", f->v);
    proto_w_kuint(&w, "g", f->bus_gen + f->lost_out);
    proto_w_kuint(&w, "t", f->ttl_ms);
    if (hello)
        proto_w_kbool(&w, "hello", true);
    proto_w_end(&w);
    f->last_hb = f->now;
    publish(f, SUBJ_HB, NULL, &f->out);
}

static void on_heartbeat(struct geo_fleet *f, const struct fmsg *m)
{
    bool created;
    struct fnode *nd = node_get(f, m->node, m->node_len, &created);
    if (!nd) {
        f->st.bad_messages++;
        return;
    }
    nd->last_seen = f->now;
    bool changed = !created && nd->gen != m->gen;
    nd->gen = m->gen;
    if ((created && m->v > 0) || changed)
        resync_node(f, nd); /* it may have published what this node never saw */
    if (m->hello && f->now - f->last_hello_answer >= HELLO_GAP_MS) {
        f->last_hello_answer = f->now;
        send_heartbeat(f, false);
    }
}

static void on_delta(struct geo_fleet *f, const struct fmsg *m, const char *cell, size_t clen)
{
    if (!space_of(m) || clen != (size_t)f->share_p) {
        f->st.bad_messages++;
        return;
    }
    bool created;
    struct fnode *nd = node_get(f, m->node, m->node_len, &created);
    if (!nd) {
        f->st.bad_messages++;
        return;
    }
    nd->last_seen = f->now;
    if (created)
        resync_node(f, nd);
    if (covering(f, m->space, m->space_len, cell, clen))
        apply_delta(f, nd, m); /* else no longer followed */
}

static void on_reply(struct geo_fleet *f, const struct fmsg *m)
{
    if (!space_of(m) || !m->prefix) {
        f->st.bad_messages++;
        return;
    }
    struct ffollow *fo = follow_find(f, m->space, m->space_len, m->prefix, m->prefix_len);
    if (!fo || !fo->snap || fo->snap->req != m->req)
        return; /* an answer to an earlier request */
    bool created;
    struct fnode *nd = node_get(f, m->node, m->node_len, &created);
    struct fpeer *p = nd ? peer_add(fo->snap, nd->token) : NULL;
    if (!p || p->done)
        return;
    nd->last_seen = f->now;
    if (!p->answered) {
        p->answered = true;
        p->watermark = m->watermark;
    }
    struct apply_ctx a = {f, nd, m->space, m->space_len, fo->snap};
    if (!each_entry(m, apply_entry, &a))
        f->st.bad_messages++;
    if (m->end)
        p->done = true;
    snap_check(f, fo);
}

struct answer_ctx {
    struct geo_fleet *f;
    const struct fmsg *req;
    const char *reply;
    struct proto_writer w;
    uint32_t n;
};

static void answer_begin(struct answer_ctx *c)
{
    msg_begin(c->f, &c->w);
    proto_w_kuint(&c->w, "r", c->req->req);
    proto_w_kuint(&c->w, "w", c->f->v);
    proto_w_kstr(&c->w, "s", c->req->space, c->req->space_len);
    proto_w_kstr(&c->w, "p", c->req->prefix, c->req->prefix_len);
    proto_w_key(&c->w, "e");
    proto_w_array(&c->w);
    c->n = 0;
}

static void answer_end(struct answer_ctx *c, bool last)
{
    proto_w_end(&c->w);
    proto_w_kbool(&c->w, "end", last);
    proto_w_end(&c->w);
    if (proto_writer_status(&c->w) == RT_OK)
        publish(c->f, c->reply, NULL, &c->f->out);
    else
        c->f->st.publish_failures++;
}

static void answer_visit(void *arg, const struct geo_member_view *m)
{
    struct answer_ctx *c = arg;
    if (owned_remote(m->conn))
        return; /* only this node's own members: nothing comes back from the dead */
    if (c->n >= CHUNK_ENTRIES || c->f->out.len >= CHUNK_BYTES) {
        answer_end(c, false);
        answer_begin(c);
    }
    write_entry(&c->w, c->f->v, m); /* its state as of the watermark */
    c->n++;
}

static void on_snap_request(struct geo_fleet *f, const struct fmsg *m, const char *reply)
{
    uint64_t code;
    if (!space_of(m) || !m->prefix || m->prefix_len < 1 || m->prefix_len > (size_t)f->share_p ||
        !geo__parse_cell(m->prefix, m->prefix_len, &code) || !reply ||
        strncmp(reply, SUBJ_REPLY, sizeof(SUBJ_REPLY) - 1) != 0) {
        f->st.bad_messages++;
        return;
    }
    char prefix[GEO_CELL_BUF];
    for (size_t i = 0; i < m->prefix_len; i++)
        prefix[i] = (char)(m->prefix[i] >= 'A' && m->prefix[i] <= 'Z' ? m->prefix[i] - 'A' + 'a'
                                                                      : m->prefix[i]);
    struct answer_ctx c = {.f = f, .req = m, .reply = reply};
    answer_begin(&c);
    geo_each_prefix(f->geo, m->space, m->space_len, prefix, m->prefix_len, answer_visit, &c, NULL);
    answer_end(&c, true);
    f->st.snapshots_answered++;
}

/* "rtgate.geo.d.<space>.<c>.<c>..." -> the cell's characters. */
static size_t delta_cell(const char *subject, char cell[GEO_CELL_BUF])
{
    const char *p = subject + sizeof(SUBJ_DELTA) - 1;
    p = strchr(p, '.');
    size_t n = 0;
    while (p && *p == '.' && p[1] && (p[2] == '.' || p[2] == '\0') && n < GEO_PRECISION_MAX) {
        cell[n++] = p[1];
        p += 2;
    }
    cell[n] = '\0';
    return p && *p == '\0' ? n : 0;
}

void geo_fleet_receive(struct geo_fleet *f, const char *subject, const char *reply,
                       const uint8_t *data, size_t len, uint64_t now_ms)
{
    if (now_ms > f->now)
        f->now = now_ms;
    struct fmsg m;
    if (!subject || !read_msg(data, len, &m)) {
        f->st.bad_messages++;
        return;
    }
    if (m.node_len == f->node_len && memcmp(m.node, f->node, f->node_len) == 0)
        return; /* our own, echoed */
    if (strcmp(subject, SUBJ_HB) == 0)
        on_heartbeat(f, &m);
    else if (strncmp(subject, SUBJ_DELTA, sizeof(SUBJ_DELTA) - 1) == 0) {
        char cell[GEO_CELL_BUF];
        size_t clen = delta_cell(subject, cell);
        on_delta(f, &m, cell, clen);
    } else if (strncmp(subject, SUBJ_REPLY, sizeof(SUBJ_REPLY) - 1) == 0)
        on_reply(f, &m);
    else if (strncmp(subject, SUBJ_SNAP, sizeof(SUBJ_SNAP) - 1) == 0)
        on_snap_request(f, &m, reply);
    else
        f->st.bad_messages++;
    report_ready(f);
}

/* ------------------------------------------------------------------------ */
/* Local changes                                                              */

static struct fdirty *dirty_find(const struct geo_fleet *f, const char *space, size_t slen,
                                 const char *client, size_t clen, uint64_t h)
{
    for (struct rt_hnode *n = rt_htab_chain(&f->dirty, h); n; n = n->next) {
        struct fdirty *d = RT_CONTAINER(n, struct fdirty, h);
        if (n->hash == h && d->space_len == slen && d->client_len == clen &&
            memcmp(d->strs, space, slen) == 0 && memcmp(d->strs + slen + 1, client, clen) == 0)
            return d;
    }
    return NULL;
}

/* Notes that a local member changed; old_cell is its share cell before (or ""). */
static void dirty_touch(struct geo_fleet *f, const char *space, size_t slen, const char *client,
                        size_t clen, const char *old_cell)
{
    uint64_t h = key_hash(space, slen, client, clen);
    if (dirty_find(f, space, slen, client, clen, h))
        return; /* keeps the cell of the last flush */
    struct fdirty *d = calloc(1, sizeof(*d) + slen + clen + 2);
    if (!d || rt_htab_reserve(&f->dirty) != RT_OK) {
        free(d);
        f->resync_wanted = true; /* cannot publish it: others may miss it; they resync */
        return;
    }
    memcpy(d->strs, space, slen);
    memcpy(d->strs + slen + 1, client, clen);
    d->space_len = slen;
    d->client_len = clen;
    snprintf(d->old_cell, sizeof(d->old_cell), "%s", old_cell);
    d->h.hash = h;
    rt_htab_insert(&f->dirty, &d->h);
    if (f->dirty_tail)
        f->dirty_tail->next = d;
    else
        f->dirty_head = d;
    f->dirty_tail = d;
}

static void share_cell(const struct geo_fleet *f, const struct geo_member_view *m,
                       char cell[GEO_CELL_BUF])
{
    if (geo_encode(m->lat, m->lon, f->share_p, cell) != RT_OK)
        cell[0] = '\0';
}

rt_status geo_fleet_set(struct geo_fleet *f, const struct geo_member_in *in,
                        char cell[GEO_CELL_BUF])
{
    if (owned_remote(in->conn))
        return RT_INVAL;
    char old[GEO_CELL_BUF] = "";
    struct geo_member_view cur;
    bool present =
        geo_get(f->geo, in->space, in->space_len, in->client, in->client_len, &cur) == RT_OK;
    if (present)
        share_cell(f, &cur, old);
    rt_status st = geo_set(f->geo, in, cell);
    if (st != RT_OK)
        return st;
    if (present && owned_remote(cur.conn) && f->st.remote_members)
        f->st.remote_members--; /* a local member took the id over */
    dirty_touch(f, in->space, in->space_len, in->client, in->client_len,
                present && !owned_remote(cur.conn) ? old : "");
    return RT_OK;
}

rt_status geo_fleet_clear(struct geo_fleet *f, const char *space, size_t space_len,
                          const char *client, size_t client_len)
{
    struct geo_member_view cur;
    rt_status st = geo_get(f->geo, space, space_len, client, client_len, &cur);
    if (st != RT_OK)
        return st;
    if (owned_remote(cur.conn))
        return RT_NOT_FOUND;
    char old[GEO_CELL_BUF];
    share_cell(f, &cur, old);
    st = geo_clear(f->geo, space, space_len, client, client_len);
    if (st == RT_OK)
        dirty_touch(f, space, space_len, client, client_len, old);
    return st;
}

static void removed_member(void *arg, const struct geo_member_view *m)
{
    struct geo_fleet *f = arg;
    char old[GEO_CELL_BUF];
    share_cell(f, m, old);
    dirty_touch(f, m->space, m->space_len, m->client, m->client_len, old);
}

rt_status geo_fleet_remove_conn(struct geo_fleet *f, uint64_t conn)
{
    if (owned_remote(conn))
        return RT_INVAL;
    return geo_remove_conn(f->geo, conn, removed_member, f, NULL, NULL);
}

/* One bus message being filled during a flush: (space, cell) -> entries. */
struct fbatch {
    struct rt_hnode h;
    struct fbatch *next;
    struct proto_buf buf;
    struct proto_writer w;
    uint32_t n;
    size_t space_len;
    char space[GEO_SPACE_MAX + 1];
    char cell[GEO_CELL_BUF];
};

static void batch_open(struct geo_fleet *f, struct fbatch *b)
{
    proto_buf_reset(&b->buf);
    proto_writer_init(&b->w, PROTO_MSGPACK, &b->buf);
    proto_w_map(&b->w);
    proto_w_kstr(&b->w, "n", f->node, f->node_len);
    proto_w_kstr(&b->w, "s", b->space, b->space_len);
    proto_w_kcstr(&b->w, "c", b->cell);
    proto_w_key(&b->w, "e");
    proto_w_array(&b->w);
    b->n = 0;
}

static void batch_send(struct geo_fleet *f, struct fbatch *b)
{
    proto_w_end(&b->w);
    proto_w_end(&b->w);
    char subject[GEO_FLEET_SUBJECT_MAX];
    subject_of(f, subject, sizeof(subject), b->space, b->space_len, b->cell, strlen(b->cell));
    if (proto_writer_status(&b->w) == RT_OK)
        publish(f, subject, NULL, &b->buf);
    else
        f->st.publish_failures++;
}

static struct fbatch *batch_get(struct geo_fleet *f, struct rt_htab *t, struct fbatch **list,
                                const char *space, size_t slen, const char *cell)
{
    size_t clen = strlen(cell);
    uint64_t h = key_hash(space, slen, cell, clen);
    for (struct rt_hnode *n = rt_htab_chain(t, h); n; n = n->next) {
        struct fbatch *b = RT_CONTAINER(n, struct fbatch, h);
        if (n->hash == h && b->space_len == slen && memcmp(b->space, space, slen) == 0 &&
            strcmp(b->cell, cell) == 0)
            return b;
    }
    struct fbatch *b = calloc(1, sizeof(*b));
    if (!b || rt_htab_reserve(t) != RT_OK) {
        free(b);
        return NULL;
    }
    memcpy(b->space, space, slen);
    b->space_len = slen;
    snprintf(b->cell, sizeof(b->cell), "%s", cell);
    proto_buf_init(&b->buf, 0);
    b->h.hash = h;
    rt_htab_insert(t, &b->h);
    b->next = *list;
    *list = b;
    batch_open(f, b);
    return b;
}

/* Appends one change to the batch of (space, cell), sending the batch when full. */
static void batch_add(struct geo_fleet *f, struct rt_htab *t, struct fbatch **list,
                      const struct fdirty *d, const char *cell, uint64_t v,
                      const struct geo_member_view *m)
{
    struct fbatch *b = batch_get(f, t, list, d->strs, d->space_len, cell);
    if (!b) {
        f->resync_wanted = true;
        return;
    }
    if (m)
        write_entry(&b->w, v, m);
    else
        write_clear(&b->w, v, d->strs + d->space_len + 1, d->client_len);
    f->st.deltas_out++;
    if (++b->n >= CHUNK_ENTRIES || b->buf.len >= CHUNK_BYTES) {
        batch_send(f, b);
        batch_open(f, b);
    }
}

bool geo_fleet_pending(const struct geo_fleet *f)
{
    return f->dirty_head != NULL;
}

void geo_fleet_flush(struct geo_fleet *f)
{
    if (!f->dirty_head)
        return;
    struct rt_htab batches;
    rt_htab_init(&batches);
    struct fbatch *list = NULL;
    for (struct fdirty *d = f->dirty_head, *next; d; d = next) {
        next = d->next;
        const char *client = d->strs + d->space_len + 1;
        struct geo_member_view cur;
        bool present =
            geo_get(f->geo, d->strs, d->space_len, client, d->client_len, &cur) == RT_OK &&
            !owned_remote(cur.conn);
        char now_cell[GEO_CELL_BUF] = "";
        if (present)
            share_cell(f, &cur, now_cell);
        uint64_t v = ++f->v;
        if (d->old_cell[0] && strcmp(d->old_cell, now_cell) != 0)
            batch_add(f, &batches, &list, d, d->old_cell, v, present ? &cur : NULL);
        if (present && now_cell[0])
            batch_add(f, &batches, &list, d, now_cell, v, &cur);
        rt_htab_remove(&f->dirty, &d->h);
        free(d);
    }
    f->dirty_head = f->dirty_tail = NULL;
    for (struct fbatch *b = list, *next; b; b = next) {
        next = b->next;
        if (b->n)
            batch_send(f, b);
        proto_buf_free(&b->buf);
        free(b);
    }
    rt_htab_free(&batches);
}

/* ------------------------------------------------------------------------ */
/* Wants                                                                      */

rt_status geo_fleet_want(struct geo_fleet *f, uint64_t owner, const char *space, size_t space_len,
                         double lat, double lon, double radius_m, bool hold, uint64_t now_ms,
                         uint64_t *ticket, bool *ready)
{
    if (now_ms > f->now)
        f->now = now_ms;
    *ticket = 0;
    *ready = false;
    if (!geo__space_name_ok(space, space_len))
        return RT_INVAL;
    int p = 0;
    size_t count = 0;
    rt_status st = geo_cover_precision(lat, lon, radius_m, f->share_p, WANT_CELLS, &p, &count);
    char cells[COVER_CAP][GEO_CELL_BUF];
    size_t n = 0;
    if (st == RT_OK)
        st = geo_cover(lat, lon, radius_m, p, cells, COVER_CAP, &n);
    if (st != RT_OK)
        return st == RT_TOO_BIG ? RT_INVAL : st;
    /* The cells not followed yet: one new follow each (at most 16 lookups of up to p). */
    uint32_t need = 0;
    for (size_t i = 0; i < n; i++)
        need += covering(f, space, space_len, cells[i], (size_t)p) ? 0 : 1;
    struct fowner *o = owner ? owner_find(f, owner) : NULL;
    if (need && o && o->follows && o->follows + need > f->max_owner) {
        f->st.refused_share++;
        return RT_AGAIN;
    }
    if (need && rt_htab_count(&f->follows) + need > f->max_follows) {
        f->st.refused_limit++;
        return RT_LIMIT;
    }
    if (owner && !o && (need || hold) && !(o = owner_new(f, owner)))
        return RT_NOMEM;
    struct fwant *w = calloc(1, sizeof(*w));
    if (!w || rt_htab_reserve(&f->wants) != RT_OK) {
        free(w);
        owner_trim(f, o);
        return RT_NOMEM;
    }
    w->ticket = ++f->next_ticket;
    w->hold = hold;
    struct ffollow *touched[COVER_CAP];
    uint32_t nt = 0;
    for (size_t i = 0; i < n && st == RT_OK; i++) {
        struct ffollow *fo = covering(f, space, space_len, cells[i], (size_t)p);
        if (!fo) {
            st = follow_new(f, space, space_len, cells[i], (size_t)p, &fo);
            if (st == RT_OK && o)
                charge(f, fo, o);
        }
        if (st != RT_OK)
            break;
        bool dup = false;
        for (uint32_t j = 0; j < nt && !dup; j++)
            dup = touched[j] == fo;
        if (dup)
            continue;
        touched[nt++] = fo;
        fo->last_used = f->now;
        if (!fo->ready) {
            if (!grow((void **)&fo->waiters, &fo->cap_waiters, fo->n_waiters + 1,
                      sizeof(*fo->waiters))) {
                st = RT_NOMEM;
                break;
            }
            fo->waiters[fo->n_waiters++] = w->ticket;
            w->remaining++;
        }
    }
    if (st != RT_OK) {
        free(w); /* follows made stay and linger; waiters of this ticket are ignored */
        owner_trim(f, o);
        return st;
    }
    if (hold) {
        for (uint32_t j = 0; j < nt; j++) {
            touched[j]->holds++;
            w->follows[w->n_follows++] = touched[j];
            if (o)
                charge(f, touched[j], o); /* the last holder pays */
        }
    }
    owner_trim(f, o);
    *ticket = w->ticket;
    *ready = w->remaining == 0;
    if (*ready && !hold) {
        free(w);
        return RT_OK;
    }
    w->reported = *ready;
    w->h.hash = rt_hash_u64(w->ticket);
    rt_htab_insert(&f->wants, &w->h);
    return RT_OK;
}

void geo_fleet_release(struct geo_fleet *f, uint64_t ticket)
{
    struct fwant *w = want_find(f, ticket);
    if (!w)
        return;
    for (uint32_t i = 0; i < w->n_follows; i++) {
        w->follows[i]->holds--;
        w->follows[i]->last_used = f->now;
    }
    want_free(f, w);
}

/* ------------------------------------------------------------------------ */
/* Time                                                                       */

void geo_fleet_tick(struct geo_fleet *f, uint64_t now_ms, uint64_t bus_gen)
{
    if (now_ms > f->now)
        f->now = now_ms;
    if (!f->bus_gen_known) {
        f->bus_gen_known = true;
        f->bus_gen = bus_gen;
    } else if (bus_gen != f->bus_gen) {
        f->bus_gen = bus_gen;
        f->resync_wanted = true;
        send_heartbeat(f, true); /* say we are back; others resync from us */
    }
    if ((f->resync_wanted && f->now - f->last_resync >= RESYNC_GAP_MS) ||
        f->now - f->last_resync >= f->resync_ms)
        resync_all(f);
    if (f->now - f->last_hb >= f->hb_ms)
        send_heartbeat(f, false);
    for (struct fnode *nd = f->node_list, *next; nd; nd = next) {
        next = nd->next;
        if (f->now - nd->last_seen >= f->ttl_ms) {
            f->st.nodes_expired++;
            node_drop(f, nd);
        }
    }
    for (struct ffollow *fo = f->follow_list, *next; fo; fo = next) {
        next = fo->next;
        if (fo->snap)
            snap_check(f, fo);
        else if (!fo->holds && !fo->n_waiters && f->now - fo->last_used >= f->linger_ms)
            follow_drop(f, fo);
    }
    report_ready(f);
}

/* ------------------------------------------------------------------------ */
/* Create / destroy                                                           */

rt_status geo_fleet_create(const struct geo_fleet_config *cfg, uint64_t now_ms,
                           struct geo_fleet **out)
{
    *out = NULL;
    size_t nlen = cfg->node ? strlen(cfg->node) : 0;
    int ip = cfg->geo ? geo_precision(cfg->geo) : 0;
    int sp = cfg->share_precision ? cfg->share_precision : (ip < 5 ? ip : 5);
    if (!cfg->geo || !token_ok(cfg->node, nlen, GEO_FLEET_NODE_MAX) || sp < 1 || sp > ip ||
        !cfg->bus.publish || !cfg->bus.subscribe || !cfg->bus.unsubscribe)
        return RT_INVAL;
    struct geo_fleet *f = calloc(1, sizeof(*f));
    if (!f)
        return RT_NOMEM;
    f->geo = cfg->geo;
    f->bus = cfg->bus;
    f->on_ready = cfg->on_ready;
    f->arg = cfg->arg;
    f->share_p = sp;
    f->ttl_ms = cfg->ttl_ms ? cfg->ttl_ms : 30000;
    f->hb_ms = cfg->heartbeat_ms ? cfg->heartbeat_ms : f->ttl_ms / 3;
    f->hb_ms = f->hb_ms ? f->hb_ms : 1;
    f->linger_ms = cfg->linger_ms ? cfg->linger_ms : 30000;
    f->wait_ms = cfg->snapshot_wait_ms ? cfg->snapshot_wait_ms : 1000;
    f->max_follows = cfg->max_follows ? cfg->max_follows : 10000;
    f->max_owner = cfg->max_owner_follows ? cfg->max_owner_follows
                                          : (f->max_follows / 16 > 64 ? f->max_follows / 16 : 64);
    f->resync_ms = cfg->resync_ms ? cfg->resync_ms : 300000;
    memcpy(f->node, cfg->node, nlen);
    f->node_len = nlen;
    snprintf(f->reply_subject, sizeof(f->reply_subject), SUBJ_REPLY "%s", f->node);
    rt_htab_init(&f->nodes);
    rt_htab_init(&f->follows);
    rt_htab_init(&f->wants);
    rt_htab_init(&f->owners);
    rt_htab_init(&f->dirty);
    proto_buf_init(&f->out, 0);
    f->now = now_ms;
    f->last_resync = now_ms;
    f->warm_until = now_ms + (f->wait_ms < WARMUP_MS ? f->wait_ms : WARMUP_MS);
    char me[GEO_FLEET_SUBJECT_MAX];
    snprintf(me, sizeof(me), SUBJ_SNAP ".%s", f->node);
    f->sub_hb = f->bus.subscribe(f->bus.ctx, SUBJ_HB);
    f->sub_snap = f->bus.subscribe(f->bus.ctx, SUBJ_SNAP);
    f->sub_snap_me = f->bus.subscribe(f->bus.ctx, me);
    f->sub_reply = f->bus.subscribe(f->bus.ctx, f->reply_subject);
    if (!f->sub_hb || !f->sub_snap || !f->sub_snap_me || !f->sub_reply) {
        geo_fleet_destroy(f);
        return RT_UNAVAILABLE;
    }
    send_heartbeat(f, true);
    *out = f;
    return RT_OK;
}

static void free_node_cb(struct rt_hnode *n, void *arg)
{
    (void)arg;
    free(RT_CONTAINER(n, struct fnode, h));
}

static void free_want_cb(struct rt_hnode *n, void *arg)
{
    (void)arg;
    free(RT_CONTAINER(n, struct fwant, h));
}

void geo_fleet_destroy(struct geo_fleet *f)
{
    if (!f)
        return;
    while (f->follow_list) {
        struct ffollow *fo = f->follow_list;
        f->bus.unsubscribe(f->bus.ctx, fo->sub);
        follow_unlink(f, fo);
        uncharge(f, fo); /* the last one frees its owner */
        snap_free(fo->snap);
        free(fo->waiters);
        free(fo);
    }
    void *subs[] = {f->sub_hb, f->sub_snap, f->sub_snap_me, f->sub_reply};
    for (size_t i = 0; i < sizeof(subs) / sizeof(subs[0]); i++)
        if (subs[i])
            f->bus.unsubscribe(f->bus.ctx, subs[i]);
    rt_htab_each(&f->nodes, free_node_cb, NULL);
    rt_htab_each(&f->wants, free_want_cb, NULL);
    for (struct fdirty *d = f->dirty_head, *next; d; d = next) {
        next = d->next;
        free(d);
    }
    rt_htab_free(&f->nodes);
    rt_htab_free(&f->follows);
    rt_htab_free(&f->wants);
    rt_htab_free(&f->owners);
    rt_htab_free(&f->dirty);
    proto_buf_free(&f->out);
    free(f->readyq);
    free(f);
}

void geo_fleet_get_stats(const struct geo_fleet *f, struct geo_fleet_stats *st)
{
    *st = f->st;
    st->follows = rt_htab_count(&f->follows);
    st->nodes = rt_htab_count(&f->nodes);
    st->wants_pending = 0;
    st->follows_pending = 0;
    for (const struct ffollow *fo = f->follow_list; fo; fo = fo->next)
        st->follows_pending += fo->ready ? 0 : 1;
    st->wants_pending = rt_htab_count(&f->wants);
    st->owners = rt_htab_count(&f->owners);
}
