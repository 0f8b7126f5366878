/*
 * outbox.c: the per-connection send queue. Shared deliveries are queued by
 * reference (the fan-out buffer, encoded once); replies are appended into
 * small private buffers. The writer takes as many queued items as fit into
 * one frame, so a backlogged connection gets many messages per write.
 */
#include "gw.h"

#include <stdlib.h>
#include <string.h>

#define OUTBOX_MIN_RING 4
#define PRIVATE_MIN_CAP 256

static struct gw_outbox_item *item_at(struct gw_outbox *ob, uint32_t i)
{
    return &ob->items[(ob->head + i) & (ob->cap - 1)];
}

static rt_status grow(struct gw_outbox *ob)
{
    if (ob->count < ob->cap)
        return RT_OK;
    uint32_t ncap = ob->cap ? ob->cap * 2 : OUTBOX_MIN_RING;
    struct gw_outbox_item *n = malloc(sizeof *n * ncap);
    if (!n)
        return RT_NOMEM;
    for (uint32_t i = 0; i < ob->count; i++)
        n[i] = *item_at(ob, i);
    free(ob->items);
    ob->items = n;
    ob->cap = ncap;
    ob->head = 0;
    return RT_OK;
}

rt_status gw_outbox_push_msg(struct gw_outbox *ob, struct fo_msg *msg, uint8_t *frame, size_t len)
{
    if (grow(ob) != RT_OK)
        return RT_NOMEM;
    struct gw_outbox_item *it = item_at(ob, ob->count++);
    it->msg = fo_msg_retain(msg);
    it->data = frame;
    it->len = (uint32_t)len;
    it->cap = 0;
    ob->bytes += len;
    return RT_OK;
}

rt_status gw_outbox_push_bytes(struct gw_outbox *ob, const uint8_t *data, size_t len,
                               size_t headroom)
{
    if (ob->count) {
        struct gw_outbox_item *tail = item_at(ob, ob->count - 1);
        if (!tail->msg && tail->cap - tail->len >= len) {
            memcpy(tail->data + tail->len, data, len);
            tail->len += (uint32_t)len;
            ob->bytes += len;
            return RT_OK;
        }
    }
    if (grow(ob) != RT_OK)
        return RT_NOMEM;
    size_t cap = len < PRIVATE_MIN_CAP ? PRIVATE_MIN_CAP : len;
    uint8_t *alloc = malloc(headroom + cap);
    if (!alloc)
        return RT_NOMEM;
    struct gw_outbox_item *it = item_at(ob, ob->count++);
    it->msg = NULL;
    it->data = alloc + headroom;
    memcpy(it->data, data, len);
    it->len = (uint32_t)len;
    it->cap = (uint32_t)cap;
    ob->bytes += len;
    return RT_OK;
}

uint32_t gw_outbox_next_frame(struct gw_outbox *ob, uint8_t *scratch, size_t scratch_cap,
                              uint8_t **data, size_t *len)
{
    if (!ob->count) {
        *data = NULL;
        *len = 0;
        return 0;
    }
    struct gw_outbox_item *first = item_at(ob, 0);
    if (ob->count == 1 || (size_t)first->len + item_at(ob, 1)->len > scratch_cap) {
        *data = first->data;
        *len = first->len;
        return 1;
    }
    size_t used = 0;
    uint32_t n = 0;
    while (n < ob->count) {
        struct gw_outbox_item *it = item_at(ob, n);
        if (used + it->len > scratch_cap)
            break;
        memcpy(scratch + used, it->data, it->len);
        used += it->len;
        n++;
    }
    *data = scratch;
    *len = used;
    return n;
}

static void item_free(struct gw_outbox_item *it, size_t headroom)
{
    if (it->msg)
        fo_msg_release(it->msg);
    else
        free(it->data - headroom);
}

void gw_outbox_pop(struct gw_outbox *ob, uint32_t n, size_t headroom)
{
    for (uint32_t i = 0; i < n && ob->count; i++) {
        struct gw_outbox_item *it = item_at(ob, 0);
        ob->bytes -= it->len;
        item_free(it, headroom);
        ob->head = (ob->head + 1) & (ob->cap - 1);
        ob->count--;
    }
    if (!ob->count && ob->cap > OUTBOX_MIN_RING) {
        /* An idle connection gives back what a burst made it grow to. */
        free(ob->items);
        ob->items = NULL;
        ob->cap = 0;
        ob->head = 0;
    }
}

void gw_outbox_clear(struct gw_outbox *ob, size_t headroom)
{
    gw_outbox_pop(ob, ob->count, headroom);
    free(ob->items);
    memset(ob, 0, sizeof *ob);
}
