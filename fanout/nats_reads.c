/*
 * nats_reads.c: JetStream reads whose answer the loop needs (a first
 * subscriber's sync point, a resume's latest and oldest seqs, a quiet
 * channel's probe). Each is one DirectGet (or a stream info for a channel
 * with nothing retained) published through the sender with a reply subject
 * on the engine's inbox (_INBOX.<nuid>.<id>, one nats.c subscription); the
 * reply comes back through the hand-off and is matched by id. Nothing waits:
 * a read not answered within REQ_WAIT_MS fails, and all of them fail at once
 * when nats.c's connection is lost. Loop thread, but for the inbox callback.
 */
#include "nats_int.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void read_done(struct nats_engine *e, struct js_read *q, rt_status st, uint64_t seq);

static struct js_read *read_find(struct nats_engine *e, uint64_t id)
{
    struct fo_hnode *n = fo__htab_find(&e->reads, (const char *)&id, sizeof(id));
    return n ? FO__CONTAINER(n, struct js_read, node) : NULL;
}

static void read_unlink(struct nats_engine *e, struct js_read *q)
{
    rt_htab_remove(&e->reads, &q->node.h);
    if (q->older)
        q->older->newer = q->newer;
    else
        e->reads_oldest = q->newer;
    if (q->newer)
        q->newer->older = q->older;
    else
        e->reads_newest = q->older;
}

/*
 * Publishes the read for q: a DirectGet (first or last message of the
 * channel's subject), or the stream's info when q->stream_info. RT_OK: q
 * waits for its reply (read_done frees it). Anything else: q is the caller's.
 */
static rt_status read_send(struct nats_engine *e, struct js_read *q)
{
    char subj[SUBJECT_MAX + 64], reply[128], body[SUBJECT_MAX + 64];
    int blen = 0;
    if (q->stream_info) {
        snprintf(subj, sizeof(subj), "%s%s", NW_JS_STREAM_INFO, e->stream);
    } else {
        snprintf(subj, sizeof(subj), "%s%s", NW_JS_DIRECT_GET, e->stream);
        /* Channel names are [A-Za-z0-9_:.-]: nothing to escape in JSON. */
        blen = snprintf(body, sizeof(body), "{\"%s\":\"%s%.*s\"}",
                        q->kind == READ_RESUME_OLDEST ? "next_by_subj" : "last_by_subj",
                        NW_SUBJ_DUR, (int)q->name_len, q->name);
    }
    q->id = ++e->next_read;
    snprintf(reply, sizeof(reply), "%s.%llu", e->inbox, (unsigned long long)q->id);
    q->node.key = (const char *)&q->id;
    q->node.key_len = sizeof(q->id);
    if (!conn_up(e) || fo__htab_insert(&e->reads, &q->node) != RT_OK)
        return RT_UNAVAILABLE;
    if (nats__send_raw(e, subj, reply, (const uint8_t *)body, (size_t)blen) != RT_OK) {
        rt_htab_remove(&e->reads, &q->node.h);
        return RT_UNAVAILABLE;
    }
    q->deadline_ms = rt_mono_ms() + REQ_WAIT_MS;
    q->newer = NULL;
    q->older = e->reads_newest;
    if (e->reads_newest)
        e->reads_newest->newer = q;
    else
        e->reads_oldest = q;
    e->reads_newest = q;
    return RT_OK;
}

/* See nats_int.h; gen pins the read to the channel's current interest. Loop thread. */
rt_status nats__read_start(struct nats_engine *e, const struct chan_state *cs,
                           enum js_read_kind kind, uint64_t op, uint64_t since)
{
    size_t len = cs->ch->name_len;
    struct js_read *q = calloc(1, sizeof(*q) + len + 1);
    if (!q)
        return RT_NOMEM;
    q->kind = kind;
    q->gen = cs->gen;
    q->op = op;
    q->since = since;
    q->name_len = len;
    memcpy(q->name, cs->ch->name, len);
    rt_status st = read_send(e, q);
    if (st != RT_OK)
        free(q);
    return st;
}

/* The stream's last seq from a STREAM.INFO reply. */
static rt_status stream_info_last(natsMsg *m, uint64_t *out)
{
    int n = natsMsg_GetDataLength(m);
    json_t *o = n > 0 ? json_loadb(natsMsg_GetData(m), (size_t)n, 0, NULL) : NULL;
    json_t *last = json_object_get(json_object_get(o, "state"), "last_seq");
    rt_status st = json_is_integer(last) && json_integer_value(last) >= 0 ? RT_OK : RT_UNAVAILABLE;
    if (st == RT_OK)
        *out = (uint64_t)json_integer_value(last);
    json_decref(o);
    return st;
}

/* A DirectGet reply: the message's seq, RT_NOT_FOUND (404), or RT_UNAVAILABLE. */
static rt_status direct_get_seq(natsMsg *m, uint64_t *out)
{
    const char *status = NULL;
    if (natsMsg_GetDataLength(m) == 0 && natsMsgHeader_Get(m, NW_H_STATUS, &status) == NATS_OK &&
        status)
        return strcmp(status, "404") == 0 ? RT_NOT_FOUND : RT_UNAVAILABLE;
    return nats__hdr_u64(m, NW_H_SEQ, out) ? RT_OK : RT_UNAVAILABLE;
}

/*
 * A reply from the inbox answers its read, if it still waits (matched by the
 * last token of its subject). A 404 for a channel's latest seq asks the
 * stream's last seq instead. Loop thread; m stays the caller's.
 */
void nats__read_reply(struct nats_engine *e, natsMsg *m)
{
    const char *subj = natsMsg_GetSubject(m);
    const char *dot = strrchr(subj, '.');
    uint64_t id = 0;
    struct js_read *q = dot && nats__parse_u64(dot + 1, &id) ? read_find(e, id) : NULL;
    if (!q)
        return; /* timed out already */
    read_unlink(e, q);
    uint64_t seq = 0;
    rt_status st = q->stream_info ? stream_info_last(m, &seq) : direct_get_seq(m, &seq);
    if (st == RT_NOT_FOUND && q->kind != READ_RESUME_OLDEST) {
        /* A channel with nothing retained: its latest is taken to be the
         * stream's last seq, so every seq it ever had is at or below it. */
        q->stream_info = true;
        if (read_send(e, q) == RT_OK)
            return;
        st = RT_UNAVAILABLE;
    }
    read_done(e, q, st, seq);
}

/* Fails the reads whose time is up, or all of them (NATS is gone). Loop thread. */
void nats__reads_expire(struct nats_engine *e, bool all)
{
    uint64_t now = rt_mono_ms();
    while (e->reads_oldest && (all || e->reads_oldest->deadline_ms <= now)) {
        struct js_read *q = e->reads_oldest;
        read_unlink(e, q);
        read_done(e, q, RT_UNAVAILABLE, 0);
    }
}

/* A request from the loop answered, failed or timed out (req_reply, req_expire). Frees q. */
static void read_done(struct nats_engine *e, struct js_read *q, rt_status st, uint64_t seq)
{
    if (q->kind == READ_PROBE)
        e->probes_out--;
    struct fo_chan *ch = nats__chan_find(e, q->name, q->name_len);
    struct chan_state *cs = ch ? ch->eng : NULL;
    bool resume = q->kind == READ_RESUME_LATEST || q->kind == READ_RESUME_OLDEST;
    if (!cs || cs->gen != q->gen || !subscribed(cs)) {
        if (resume)
            fo__sub_ready(e->fo, q->op, RT_UNAVAILABLE); /* ignored if answered already */
        free(q);
        return;
    }
    ch->pins++;
    switch (q->kind) {
    case READ_SYNC:
        nats__sync_done(e, ch, cs, st, seq);
        break;
    case READ_PROBE:
        nats__probe_done(e, cs, st, seq);
        break;
    case READ_RESUME_LATEST:
    case READ_RESUME_OLDEST:
        nats__resume_done(e, cs, q, st, seq);
        break;
    }
    ch->pins--;
    fo__chan_check_idle(e->fo, ch);
    free(q);
}

/* The reply subscription of the reads (inbox.*). At creation, before the loop runs. */
natsStatus nats__inbox_open(struct nats_engine *e)
{
    natsInbox *inbox = NULL;
    natsStatus s = natsInbox_Create(&inbox);
    if (s != NATS_OK)
        return s;
    size_t n = strlen(inbox);
    e->inbox = malloc(n + 3);
    if (!e->inbox) {
        natsInbox_Destroy(inbox);
        return NATS_NO_MEMORY;
    }
    memcpy(e->inbox, inbox, n + 1);
    natsInbox_Destroy(inbox);
    char subj[128];
    snprintf(subj, sizeof(subj), "%s.*", e->inbox);
    return natsConnection_Subscribe(&e->inbox_sub, e->conn, subj, nats__on_inbox_reply, e);
}

/* See nats_int.h. Engine end, on the loop thread. */
void nats__reads_free(struct nats_engine *e)
{
    while (e->reads_oldest) {
        struct js_read *q = e->reads_oldest;
        read_unlink(e, q);
        free(q);
    }
    rt_htab_free(&e->reads);
}
