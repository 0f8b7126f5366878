/*
 * introspect.c: what the server API (gateway/api.c) shows of the registry:
 * the channels with state on this node, a page at a time in name order,
 * and one channel's subscribers, seq and epoch. Reads only; loop thread.
 */
#include "fanout_int.h"

#include <string.h>

/* Byte order of names, a shorter name first when one is a prefix of the other. */
static int name_cmp(const char *a, size_t alen, const char *b, size_t blen)
{
    int c = memcmp(a, b, alen < blen ? alen : blen);
    if (c != 0)
        return c;
    return alen < blen ? -1 : alen > blen ? 1 : 0;
}

static void view_of(const struct fo *fo, const struct fo_chan *ch, struct fo_channel_view *out)
{
    memset(out, 0, sizeof *out);
    out->name = ch->name;
    out->name_len = ch->name_len;
    out->durable = ch->durable;
    out->active = true;
    out->subscribers = ch->n_subs;
    if (ch->durable) {
        struct fo_chan_info info;
        fo->ops->chan_info(fo->eng, ch, &info);
        out->latest = info.latest;
        out->oldest = info.oldest;
        memcpy(out->epoch, info.epoch, sizeof out->epoch);
    }
}

/* See fanout.h. */
rt_status fo_channel_get(const struct fo *fo, const char *name, size_t len,
                         struct fo_channel_view *out)
{
    struct fo_hnode *n = fo__htab_find(&fo->chans, name, len);
    if (!n) {
        memset(out, 0, sizeof *out);
        out->name = name;
        out->name_len = len;
        out->durable = fo_channel_durable(fo, name, len);
        return RT_NOT_FOUND;
    }
    view_of(fo, FO__CONTAINER(n, struct fo_chan, node), out);
    return RT_OK;
}

/* The page being collected: a max-heap on name of at most cap channels. */
struct page {
    const struct fo_chan **heap;
    size_t n, cap;
};

static bool later(const struct fo_chan *a, const struct fo_chan *b)
{
    return name_cmp(a->name, a->name_len, b->name, b->name_len) > 0;
}

static void sift_down(struct page *pg, size_t i)
{
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, top = i;
        if (l < pg->n && later(pg->heap[l], pg->heap[top]))
            top = l;
        if (r < pg->n && later(pg->heap[r], pg->heap[top]))
            top = r;
        if (top == i)
            return;
        const struct fo_chan *t = pg->heap[i];
        pg->heap[i] = pg->heap[top];
        pg->heap[top] = t;
        i = top;
    }
}

/* Keeps the cap first names seen so far; O(log cap). */
static void page_offer(struct page *pg, const struct fo_chan *ch)
{
    if (pg->n < pg->cap) {
        size_t i = pg->n++;
        pg->heap[i] = ch;
        while (i > 0 && later(pg->heap[i], pg->heap[(i - 1) / 2])) {
            const struct fo_chan *t = pg->heap[i];
            pg->heap[i] = pg->heap[(i - 1) / 2];
            pg->heap[(i - 1) / 2] = t;
            i = (i - 1) / 2;
        }
    } else if (later(pg->heap[0], ch)) {
        pg->heap[0] = ch;
        sift_down(pg, 0);
    }
}

/* See fanout.h. One pass over the table, O(channels x log limit). */
rt_status fo_channel_list(const struct fo *fo, const struct fo_list_req *req,
                          struct fo_channel_view *out, size_t *n, bool *more)
{
    *n = 0;
    *more = false;
    if (req->limit == 0 || req->limit > FO_LIST_MAX)
        return RT_INVAL;
    const struct fo_chan *heap[FO_LIST_MAX];
    struct page pg = {heap, 0, req->limit};
    size_t matched = 0;
    const struct rt_htab *t = &fo->chans;
    for (size_t b = 0; b < t->nbuckets; b++) {
        for (const struct rt_hnode *h = t->buckets[b]; h; h = h->next) {
            const struct fo_chan *ch = FO__CONTAINER(h, struct fo_chan, node.h);
            if (req->prefix_len && (ch->name_len < req->prefix_len ||
                                    memcmp(ch->name, req->prefix, req->prefix_len) != 0))
                continue;
            if (req->after && name_cmp(ch->name, ch->name_len, req->after, req->after_len) <= 0)
                continue;
            matched++;
            page_offer(&pg, ch);
        }
    }
    *more = matched > pg.n;
    /* Heap order to name order: pop the latest to the back. */
    const struct fo_chan *sorted[FO_LIST_MAX];
    size_t count = pg.n;
    while (pg.n > 0) {
        sorted[pg.n - 1] = pg.heap[0];
        pg.heap[0] = pg.heap[--pg.n];
        sift_down(&pg, 0);
    }
    for (size_t i = 0; i < count; i++)
        view_of(fo, sorted[i], &out[i]);
    *n = count;
    return RT_OK;
}
