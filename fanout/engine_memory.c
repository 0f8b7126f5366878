/*
 * engine_memory.c: the single-node engine, and the reference model for the
 * others. Per durable channel: a seq counter starting at 1, an epoch, and a
 * bounded history (count and age). Ephemeral channels keep no history. Dedup
 * of msg_id per channel for dedup_window_ms, bounded to dedup_max_entries
 * (oldest evicted first). Publishes complete synchronously.
 *
 * A channel's state is freed when it has no subscriber, history or dedup
 * entry left; its epoch and last seq are kept in a bounded table of closed
 * channels (oldest dropped first), so the next incarnation goes on numbering
 * in the same epoch and a client resuming it is told recovered:true or shown
 * the gap. A channel that never had a message needs no entry: it starts at 0
 * in the engine's own epoch. Only one dropped from the table starts over in a
 * new random epoch.
 *
 * Threads: loop thread only.
 */
#include "fanout_int.h"

#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#define EPOCH_LEN 8

struct mem_chan {
    struct fo_chan *ch;
    uint64_t seq; /* latest accepted */
    char epoch[EPOCH_LEN + 1];
    struct fo_msg **ring; /* history, oldest at head, one reference each */
    size_t head, len, cap;
    size_t n_dedup;
    struct mem_chan *hprev, *hnext; /* on mem.with_history while len > 0 */
};

struct mem_dedup {
    struct fo_hnode node; /* key = channel '\0' msg_id */
    struct mem_dedup *older, *newer;
    struct mem_chan *mc;
    uint64_t expires_ms;
    uint64_t seq;
    char key[];
};

/* A freed durable channel's numbering (see the top). */
struct mem_grave {
    struct rt_hnode h; /* by name */
    struct mem_grave *older, *newer;
    uint64_t seq;
    char epoch[EPOCH_LEN + 1];
    size_t len;
    char name[];
};

struct mem {
    struct fo *fo;
    struct rt_htab dedup;
    struct mem_dedup *oldest, *newest;
    struct mem_chan *with_history;
    char epoch[EPOCH_LEN + 1]; /* of channels that start from nothing */
    struct rt_htab graves;
    struct mem_grave *g_oldest, *g_newest;
    bool forgot; /* a closed channel was dropped from the table: unknown ones may be it */
};

/* -------------------------------------------------------------------- */
/* Epochs                                                                 */

static void random_bytes(uint8_t *buf, size_t len)
{
    ssize_t got = getrandom(buf, len, GRND_NONBLOCK);
    if (got == (ssize_t)len)
        return;
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        got = read(fd, buf, len);
        close(fd);
        if (got == (ssize_t)len)
            return;
    }
    /* Last resort: different per call and per process, not secret. */
    static uint64_t x;
    x += rt_mono_ms() ^ (rt_wall_ms() << 20) ^ (uint64_t)getpid() ^ 0x9e3779b97f4a7c15ull;
    for (size_t i = 0; i < len; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        buf[i] = (uint8_t)x;
    }
}

static void new_epoch(char out[EPOCH_LEN + 1])
{
    static const char alphabet[] = "abcdefghijklmnopqrstuvwxyz0123456789";
    uint8_t b[EPOCH_LEN];
    random_bytes(b, sizeof(b));
    for (size_t i = 0; i < EPOCH_LEN; i++)
        out[i] = alphabet[b[i] % (sizeof(alphabet) - 1)];
    out[EPOCH_LEN] = '\0';
}

/* -------------------------------------------------------------------- */
/* Closed channels                                                        */

static struct mem_grave *grave_find(const struct mem *e, const char *name, size_t len)
{
    uint64_t h = rt_hash_bytes(name, len);
    for (struct rt_hnode *n = rt_htab_chain(&e->graves, h); n; n = n->next) {
        struct mem_grave *g = RT_CONTAINER(n, struct mem_grave, h);
        if (n->hash == h && g->len == len && memcmp(g->name, name, len) == 0)
            return g;
    }
    return NULL;
}

static void grave_remove(struct mem *e, struct mem_grave *g)
{
    rt_htab_remove(&e->graves, &g->h);
    if (g->older)
        g->older->newer = g->newer;
    else
        e->g_oldest = g->newer;
    if (g->newer)
        g->newer->older = g->older;
    else
        e->g_newest = g->older;
    free(g);
}

/* Remembers a freed channel's epoch and seq; without memory it starts over later. */
static void grave_add(struct mem *e, const struct fo_chan *ch, const struct mem_chan *mc)
{
    while (rt_htab_count(&e->graves) >= e->fo->cfg.max_closed_channels && e->g_oldest) {
        grave_remove(e, e->g_oldest);
        e->forgot = true;
    }
    struct mem_grave *g = malloc(sizeof(*g) + ch->name_len);
    if (!g || rt_htab_reserve(&e->graves) != RT_OK) {
        free(g);
        e->forgot = true;
        return;
    }
    g->seq = mc->seq;
    memcpy(g->epoch, mc->epoch, sizeof(g->epoch));
    g->len = ch->name_len;
    memcpy(g->name, ch->name, ch->name_len);
    g->h.hash = rt_hash_bytes(ch->name, ch->name_len);
    rt_htab_insert(&e->graves, &g->h);
    g->newer = NULL;
    g->older = e->g_newest;
    if (e->g_newest)
        e->g_newest->newer = g;
    else
        e->g_oldest = g;
    e->g_newest = g;
}

/* -------------------------------------------------------------------- */
/* History                                                                */

static struct fo_msg *hist_at(const struct mem_chan *mc, size_t i)
{
    return mc->ring[(mc->head + i) % mc->cap];
}

static void hist_list_add(struct mem *e, struct mem_chan *mc)
{
    mc->hprev = NULL;
    mc->hnext = e->with_history;
    if (e->with_history)
        e->with_history->hprev = mc;
    e->with_history = mc;
}

static void hist_list_del(struct mem *e, struct mem_chan *mc)
{
    if (mc->hprev)
        mc->hprev->hnext = mc->hnext;
    else
        e->with_history = mc->hnext;
    if (mc->hnext)
        mc->hnext->hprev = mc->hprev;
    mc->hprev = mc->hnext = NULL;
}

static void hist_pop(struct mem *e, struct mem_chan *mc)
{
    struct fo_msg *m = mc->ring[mc->head];
    mc->ring[mc->head] = NULL;
    mc->head = (mc->head + 1) % mc->cap;
    mc->len--;
    e->fo->stats.history_messages--;
    e->fo->stats.history_bytes -= fo__msg_bytes(m);
    fo_msg_release(m);
    if (mc->len == 0)
        hist_list_del(e, mc);
}

/* Drops messages older than history_max_age_ms. True if any was dropped. */
static bool hist_expire(struct mem *e, struct mem_chan *mc, uint64_t now_ms)
{
    uint64_t max_age = e->fo->cfg.history_max_age_ms;
    bool dropped = false;
    while (mc->len > 0) {
        uint64_t ts = mc->ring[mc->head]->ts_ms;
        if (now_ms < ts || now_ms - ts < max_age)
            break;
        hist_pop(e, mc);
        dropped = true;
    }
    return dropped;
}

static rt_status hist_grow(struct mem_chan *mc, size_t max)
{
    size_t cap = mc->cap ? mc->cap * 2 : 16;
    if (cap > max)
        cap = max;
    struct fo_msg **r = malloc(cap * sizeof(*r));
    if (!r)
        return RT_NOMEM;
    for (size_t i = 0; i < mc->len; i++)
        r[i] = hist_at(mc, i);
    free(mc->ring);
    mc->ring = r;
    mc->cap = cap;
    mc->head = 0;
    return RT_OK;
}

/* Appends m (retained), trimming to history_max. */
static rt_status hist_push(struct mem *e, struct mem_chan *mc, struct fo_msg *m)
{
    size_t max = e->fo->cfg.history_max;
    if (mc->len == max)
        hist_pop(e, mc);
    if (mc->len == mc->cap && hist_grow(mc, max) != RT_OK)
        return RT_NOMEM;
    if (mc->len == 0)
        hist_list_add(e, mc);
    mc->ring[(mc->head + mc->len) % mc->cap] = fo_msg_retain(m);
    mc->len++;
    e->fo->stats.history_messages++;
    e->fo->stats.history_bytes += fo__msg_bytes(m);
    return RT_OK;
}

/* -------------------------------------------------------------------- */
/* Dedup                                                                  */

static size_t dedup_key(char *buf, const struct fo_chan *ch, const char *msg_id, size_t id_len)
{
    memcpy(buf, ch->name, ch->name_len);
    buf[ch->name_len] = '\0';
    memcpy(buf + ch->name_len + 1, msg_id, id_len);
    return ch->name_len + 1 + id_len;
}

static void dedup_remove(struct mem *e, struct mem_dedup *d)
{
    rt_htab_remove(&e->dedup, &d->node.h);
    if (d->older)
        d->older->newer = d->newer;
    else
        e->oldest = d->newer;
    if (d->newer)
        d->newer->older = d->older;
    else
        e->newest = d->older;
    if (--d->mc->n_dedup == 0 && d->mc->len == 0)
        fo__chan_check_idle(e->fo, d->mc->ch);
    free(d);
}

/* The live entry for (ch, msg_id), dropping it if it expired. */
static struct mem_dedup *dedup_find(struct mem *e, const struct fo_chan *ch,
                                    const struct fo_pub_req *req, uint64_t now_ms)
{
    char key[PROTO_CHANNEL_MAX + 1 + PROTO_MSG_ID_MAX];
    size_t len = dedup_key(key, ch, req->msg_id, req->msg_id_len);
    struct fo_hnode *n = fo__htab_find(&e->dedup, key, len);
    if (!n)
        return NULL;
    struct mem_dedup *d = FO__CONTAINER(n, struct mem_dedup, node);
    if (now_ms >= d->expires_ms) {
        dedup_remove(e, d);
        return NULL;
    }
    return d;
}

static struct mem_dedup *dedup_alloc(const struct fo_chan *ch, const struct fo_pub_req *req)
{
    size_t len = ch->name_len + 1 + req->msg_id_len;
    struct mem_dedup *d = calloc(1, sizeof(*d) + len);
    if (!d)
        return NULL;
    d->node.key = d->key;
    d->node.key_len = dedup_key(d->key, ch, req->msg_id, req->msg_id_len);
    return d;
}

/* Remembers d (newest); evicts the oldest entries beyond the bound. */
static void dedup_insert(struct mem *e, struct mem_chan *mc, struct mem_dedup *d, uint64_t seq,
                         uint64_t now_ms)
{
    while (e->dedup.count >= e->fo->cfg.dedup_max_entries && e->oldest)
        dedup_remove(e, e->oldest);
    if (fo__htab_insert(&e->dedup, &d->node) != RT_OK) {
        free(d); /* the publish stands; only its retry protection is lost */
        return;
    }
    d->mc = mc;
    d->seq = seq;
    d->expires_ms = now_ms + e->fo->cfg.dedup_window_ms;
    d->older = e->newest;
    d->newer = NULL;
    if (e->newest)
        e->newest->newer = d;
    else
        e->oldest = d;
    e->newest = d;
    mc->n_dedup++;
}

/* -------------------------------------------------------------------- */
/* Engine operations                                                      */

static rt_status mem_create(struct fo *fo, void **out)
{
    struct mem *e = calloc(1, sizeof(*e));
    if (!e)
        return RT_NOMEM;
    e->fo = fo;
    rt_htab_init(&e->dedup);
    rt_htab_init(&e->graves);
    new_epoch(e->epoch);
    *out = e;
    return RT_OK;
}

static void mem_destroy(void *eng)
{
    struct mem *e = eng;
    if (!e)
        return;
    while (e->oldest) {
        struct mem_dedup *d = e->oldest;
        e->oldest = d->newer;
        free(d);
    }
    rt_htab_free(&e->dedup);
    while (e->g_oldest)
        grave_remove(e, e->g_oldest);
    rt_htab_free(&e->graves);
    free(e);
}

static rt_status mem_chan_open(void *eng, struct fo_chan *ch)
{
    struct mem *e = eng;
    struct mem_chan *mc = calloc(1, sizeof(*mc));
    if (!mc)
        return RT_NOMEM;
    mc->ch = ch;
    if (ch->durable) {
        struct mem_grave *g = grave_find(e, ch->name, ch->name_len);
        if (g) {
            mc->seq = g->seq; /* the same numbering goes on */
            memcpy(mc->epoch, g->epoch, sizeof(mc->epoch));
            grave_remove(e, g);
        } else if (!e->forgot) {
            memcpy(mc->epoch, e->epoch, sizeof(mc->epoch)); /* never had a message */
        } else {
            /* Maybe one dropped from the table: cannot tell, so a new epoch. */
            new_epoch(mc->epoch);
        }
    }
    ch->eng = mc;
    return RT_OK;
}

/* Frees the channel's history. Its dedup entries are gone by then, except
 * in fo_destroy, where mem_destroy frees them without looking at mc. */
static void mem_chan_close(void *eng, struct fo_chan *ch)
{
    struct mem *e = eng;
    struct mem_chan *mc = ch->eng;
    if (!mc)
        return;
    while (mc->len > 0)
        hist_pop(e, mc);
    if (ch->durable && mc->seq > 0)
        grave_add(e, ch, mc);
    free(mc->ring);
    free(mc);
    ch->eng = NULL;
}

static bool mem_chan_idle(void *eng, const struct fo_chan *ch)
{
    (void)eng;
    const struct mem_chan *mc = ch->eng;
    return mc->len == 0 && mc->n_dedup == 0;
}

static rt_status mem_interest_add(void *eng, struct fo_chan *ch)
{
    (void)eng;
    (void)ch;
    return RT_OK;
}

static void mem_interest_remove(void *eng, struct fo_chan *ch)
{
    (void)eng;
    (void)ch;
}

static void answer_dup(struct fo_pub_result *res, const struct mem_dedup *d, bool durable)
{
    res->dup = true;
    res->durable = durable;
    res->seq = durable ? d->seq : 0;
}

/* A new message for ch, stored in the history when durable. NULL on NOMEM. */
static struct fo_msg *mem_accept(struct mem *e, struct fo_chan *ch, const struct fo_pub_req *req,
                                 uint64_t now)
{
    struct mem_chan *mc = ch->eng;
    struct fo_msg *m =
        fo__msg_create(ch->name, ch->name_len, req->msg_id, req->msg_id_len, &req->payload,
                       ch->durable, mc->seq + 1, now, e->fo->cfg.frame_headroom);
    if (!m || !ch->durable)
        return m;
    hist_expire(e, mc, now);
    if (hist_push(e, mc, m) != RT_OK) {
        fo_msg_release(m);
        return NULL;
    }
    mc->seq = m->seq;
    return m;
}

static rt_status mem_publish(void *eng, struct fo_chan *ch, const struct fo_pub_req *req,
                             struct fo_pub_result *res, struct fo_msg **out)
{
    struct mem *e = eng;
    uint64_t now = fo__now(e->fo);
    *out = NULL;
    struct mem_dedup *d = NULL;
    if (req->msg_id) {
        struct mem_dedup *found = dedup_find(e, ch, req, now);
        if (found) {
            answer_dup(res, found, ch->durable);
            return RT_OK;
        }
        if (!(d = dedup_alloc(ch, req)))
            return RT_NOMEM;
    }
    struct fo_msg *m = mem_accept(e, ch, req, now);
    if (!m) {
        free(d);
        return RT_NOMEM;
    }
    if (d)
        dedup_insert(e, ch->eng, d, m->seq, now);
    res->durable = ch->durable;
    res->seq = m->seq;
    res->dup = false;
    *out = m;
    return RT_OK;
}

static void mem_chan_info(void *eng, const struct fo_chan *ch, struct fo_chan_info *out)
{
    (void)eng;
    const struct mem_chan *mc = ch->eng;
    memset(out, 0, sizeof(*out));
    out->latest = mc->seq;
    out->oldest = mc->len ? hist_at(mc, 0)->seq : 0;
    out->trimmed_through = mc->len ? out->oldest - 1 : mc->seq;
    memcpy(out->epoch, mc->epoch, sizeof(mc->epoch));
}

/* Seqs are contiguous here: the message after `after` sits at a fixed index. */
static rt_status mem_fetch(void *eng, struct fo_chan *ch, uint64_t after, struct fo_fetch *out)
{
    (void)eng;
    const struct mem_chan *mc = ch->eng;
    memset(out, 0, sizeof(*out));
    if (after >= mc->seq)
        return RT_OK;
    uint64_t oldest = mc->len ? hist_at(mc, 0)->seq : mc->seq + 1;
    uint64_t next = after + 1;
    if (next < oldest) {
        out->gap_from = next;
        out->gap_to = oldest - 1;
        next = oldest;
    }
    if (mc->len)
        out->msg = fo_msg_retain(hist_at(mc, (size_t)(next - oldest)));
    return RT_OK;
}

static void mem_tick(void *eng, uint64_t now_ms)
{
    struct mem *e = eng;
    while (e->oldest && now_ms >= e->oldest->expires_ms)
        dedup_remove(e, e->oldest);
    struct mem_chan *next = NULL;
    for (struct mem_chan *mc = e->with_history; mc; mc = next) {
        next = mc->hnext;
        if (hist_expire(e, mc, now_ms) && mc->len == 0 && mc->n_dedup == 0)
            fo__chan_check_idle(e->fo, mc->ch);
    }
}

const struct fo_engine_ops fo__engine_memory = {
    .name = "memory",
    .create = mem_create,
    .destroy = mem_destroy,
    .chan_open = mem_chan_open,
    .chan_close = mem_chan_close,
    .chan_idle = mem_chan_idle,
    .interest_add = mem_interest_add,
    .interest_remove = mem_interest_remove,
    .publish = mem_publish,
    .chan_info = mem_chan_info,
    .fetch = mem_fetch,
    .tick = mem_tick,
};
