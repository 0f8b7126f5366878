/*
 * decode.c: splits one WebSocket frame into messages and reads each one's
 * known fields, for both codecs. The rules per type are in fields.c.
 *
 * JSON goes through jansson, one object at a time (JSON_DISABLE_EOF_CHECK
 * makes it stop after the object; error.position is then the number of
 * bytes it consumed). Msgpack goes through mpread.c's bounded scanner,
 * which also gives the exact byte span of `data`, so msgpack payloads are
 * passed on without a copy.
 */
#include "protocol_int.h"

#include <stdlib.h>
#include <string.h>

struct proto_decoder {
    struct proto_limits lim;
    struct proto_msg *msgs; /* max_messages + 1 (room for the frame error) */
    size_t count;
    struct proto_arena arena;
    struct proto_buf scratch;
};

#define DEFAULT_MAX_FRAME    65536
#define DEFAULT_MAX_MESSAGES 100
#define DEFAULT_MAX_DEPTH    32
#define DEFAULT_MAX_ELEMENTS 4096

/* Makes a decoder with `limits` (NULL or zero fields: defaults). */
rt_status proto_decoder_create(const struct proto_limits *limits, struct proto_decoder **out)
{
    struct proto_decoder *dec = calloc(1, sizeof *dec);
    if (dec == NULL)
        return RT_NOMEM;
    if (limits != NULL)
        dec->lim = *limits;
    if (dec->lim.max_frame_bytes == 0)
        dec->lim.max_frame_bytes = DEFAULT_MAX_FRAME;
    if (dec->lim.max_messages == 0)
        dec->lim.max_messages = DEFAULT_MAX_MESSAGES;
    if (dec->lim.max_depth == 0)
        dec->lim.max_depth = DEFAULT_MAX_DEPTH;
    if (dec->lim.max_depth > PROTO_MP_DEPTH_CAP)
        dec->lim.max_depth = PROTO_MP_DEPTH_CAP;
    if (dec->lim.max_elements == 0)
        dec->lim.max_elements = DEFAULT_MAX_ELEMENTS;
    proto_buf_init(&dec->scratch, 0);
    if (dec->lim.max_messages < SIZE_MAX / sizeof *dec->msgs - 1)
        dec->msgs = calloc(dec->lim.max_messages + 1, sizeof *dec->msgs);
    if (dec->msgs == NULL)
        goto err;
    *out = dec;
    return RT_OK;
err:
    proto_decoder_destroy(dec);
    return RT_NOMEM;
}

void proto_decoder_destroy(struct proto_decoder *dec)
{
    if (dec == NULL)
        return;
    free(dec->msgs);
    proto__arena_free(&dec->arena);
    proto_buf_free(&dec->scratch);
    free(dec);
}

/* Ends decoding with an entry saying why the rest of the frame was lost. */
static void frame_error(struct proto_decoder *dec, const char *why)
{
    struct proto_msg *m = &dec->msgs[dec->count++];
    memset(m, 0, sizeof *m);
    m->type = PROTO_T_UNKNOWN;
    m->error = RT_E_BAD_REQUEST;
    m->error_message = why;
}

/* Sets a per-message problem found while reading fields (first one wins). */
static void field_error(struct proto_fields *f, int code, const char *why)
{
    if (f->error == 0) {
        f->error = code;
        f->error_message = why;
    }
}

/* Copies payload bytes produced in scratch into the arena. */
static rt_status keep_scratch(struct proto_decoder *dec, enum proto_payload_enc enc,
                              struct proto_payload *out)
{
    uint8_t *p = proto__arena_alloc(&dec->arena, dec->scratch.len);
    if (p == NULL)
        return RT_NOMEM;
    if (dec->scratch.len > 0)
        memcpy(p, dec->scratch.data, dec->scratch.len);
    /* JSON here is proto__json_dump's output: canonical. */
    *out = (struct proto_payload){enc, p, dec->scratch.len, enc == PROTO_PAYLOAD_JSON};
    return RT_OK;
}

/* -------------------------------------------------------------------- */
/* JSON                                                                  */

/* True if v nests at most max_depth containers deep (v at `depth`) and the
 * message stays within max_elements items + pairs. Recursion stops at the
 * limit, so it is bounded by max_depth, not by the input. */
static bool json_within(const json_t *v, size_t depth, const struct proto_limits *lim,
                        size_t *elements)
{
    if (!json_is_object(v) && !json_is_array(v))
        return true;
    if (depth > lim->max_depth)
        return false;
    size_t n = json_is_object(v) ? json_object_size(v) : json_array_size(v);
    if (n > lim->max_elements - *elements)
        return false;
    *elements += n;
    if (json_is_array(v)) {
        for (size_t i = 0; i < n; i++)
            if (!json_within(json_array_get(v, i), depth + 1, lim, elements))
                return false;
        return true;
    }
    const char *key;
    json_t *val;
    json_object_foreach((json_t *)v, key, val)
    {
        if (!json_within(val, depth + 1, lim, elements))
            return false;
    }
    return true;
}

/* A jansson scalar as a field value; strings are copied into the arena. */
static rt_status json_fv(struct proto_decoder *dec, const json_t *v, struct proto_fv *fv)
{
    switch (json_typeof(v)) {
    case JSON_STRING:
        fv->kind = PROTO_FV_STR;
        fv->len = json_string_length(v);
        fv->s = proto__arena_strdup(&dec->arena, json_string_value(v), fv->len);
        return fv->s != NULL ? RT_OK : RT_NOMEM;
    case JSON_INTEGER:
        fv->kind = PROTO_FV_INT;
        fv->i = (int64_t)json_integer_value(v);
        break;
    case JSON_REAL:
        fv->kind = PROTO_FV_REAL;
        fv->d = json_real_value(v);
        break;
    case JSON_TRUE:
    case JSON_FALSE:
        fv->kind = PROTO_FV_BOOL;
        fv->i = json_is_true(v);
        break;
    case JSON_NULL:
        fv->kind = PROTO_FV_NULL;
        break;
    default:
        fv->kind = PROTO_FV_OTHER;
        break;
    }
    return RT_OK;
}

/* `data` / `meta` of a JSON message: re-emitted compactly into the arena. */
static rt_status json_payload(struct proto_decoder *dec, const json_t *v, struct proto_payload *p)
{
    proto_buf_reset(&dec->scratch);
    rt_status st = proto__json_dump(v, &dec->scratch);
    return st != RT_OK ? st : keep_scratch(dec, PROTO_PAYLOAD_JSON, p);
}

static rt_status json_fields(struct proto_decoder *dec, const json_t *root, struct proto_fields *f)
{
    const char *key;
    size_t klen;
    json_t *val;
    rt_status st = RT_OK;
    json_object_keylen_foreach((json_t *)root, key, klen, val)
    {
        enum proto_field_id id = proto__field_index(key, klen);
        if (st != RT_OK || id == PROTO_F_UNKNOWN)
            continue;
        if (id == PROTO_F_DATA)
            st = json_payload(dec, val, &f->data);
        else if (id == PROTO_F_META)
            st = json_payload(dec, val, &f->meta);
        else
            st = json_fv(dec, val, proto__field_slot(f, id));
    }
    return st;
}

/* Decodes the message at frame[*pos..len) and advances *pos. Returns false
 * (after adding the frame error) when the rest of the frame is lost. */
static bool json_one(struct proto_decoder *dec, const uint8_t *frame, size_t len, size_t *pos,
                     rt_status *st)
{
    json_error_t err;
    json_t *root =
        json_loadb((const char *)frame + *pos, len - *pos,
                   JSON_DISABLE_EOF_CHECK | JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &err);
    if (root == NULL) {
        frame_error(dec, "invalid JSON");
        return false;
    }
    size_t elements = 0;
    bool ok = json_is_object(root) && json_within(root, 1, &dec->lim, &elements);
    if (!ok) {
        frame_error(dec, json_is_object(root) ? "message too deep or too many elements"
                                              : "message is not a JSON object");
    } else {
        struct proto_fields f;
        memset(&f, 0, sizeof f);
        *st = json_fields(dec, root, &f);
        if (*st == RT_OK)
            *st = proto__build_msg(&dec->arena, &dec->scratch, &f, &dec->msgs[dec->count++]);
        *pos += (size_t)err.position;
    }
    json_decref(root);
    return ok && *st == RT_OK;
}

static rt_status decode_json(struct proto_decoder *dec, const uint8_t *frame, size_t len)
{
    size_t pos = 0;
    rt_status st = RT_OK;
    for (;;) {
        while (pos < len && (frame[pos] == ' ' || frame[pos] == '\t' || frame[pos] == '\n' ||
                             frame[pos] == '\r'))
            pos++;
        if (pos == len)
            return RT_OK;
        if (dec->count == dec->lim.max_messages) {
            frame_error(dec, "too many messages in one frame");
            return RT_OK;
        }
        if (!json_one(dec, frame, len, &pos, &st))
            return st;
    }
}

/* -------------------------------------------------------------------- */
/* msgpack                                                               */

/* End of the (already vetted) object at p[off..len). */
static size_t mp_skip(const uint8_t *p, size_t len, size_t off)
{
    struct proto_mp_scan sc;
    proto_mp_scan(p + off, len - off, PROTO_MP_DEPTH_CAP, SIZE_MAX, 0, &sc);
    return off + sc.end;
}

/* `data` / `meta`: the exact bytes of the value, or a bin's body. */
static void mp_payload(const uint8_t *p, size_t len, struct proto_fields *f,
                       struct proto_payload *out)
{
    struct proto_mp_item it;
    size_t off = 0;
    if (proto_mp_read(p, len, &off, &it) && it.kind == PROTO_MP_BIN && off == len) {
        *out = (struct proto_payload){PROTO_PAYLOAD_BINARY, it.ptr, it.n, false};
        return;
    }
    struct proto_mp_scan sc;
    proto_mp_scan(p, len, PROTO_MP_DEPTH_CAP, SIZE_MAX,
                  PROTO_MP_REJECT_EXT | PROTO_MP_REJECT_NONSTR_K, &sc);
    if (sc.content != NULL)
        field_error(f, RT_E_BAD_REQUEST, sc.content);
    *out = (struct proto_payload){PROTO_PAYLOAD_MSGPACK, p, len, false};
}

/* A msgpack scalar as a field value; strings are copied (NUL-terminated). */
static rt_status mp_fv(struct proto_decoder *dec, const uint8_t *p, size_t len, struct proto_fv *fv)
{
    struct proto_mp_item it;
    size_t off = 0;
    if (!proto_mp_read(p, len, &off, &it))
        return RT_INVAL; /* cannot happen after the scan */
    switch (it.kind) {
    case PROTO_MP_NIL:
        fv->kind = PROTO_FV_NULL;
        break;
    case PROTO_MP_BOOL:
        fv->kind = PROTO_FV_BOOL;
        fv->i = it.b;
        break;
    case PROTO_MP_INT:
        fv->kind = PROTO_FV_INT;
        fv->i = it.i;
        break;
    case PROTO_MP_UINT:
        fv->kind = PROTO_FV_UINT;
        fv->u = it.u;
        break;
    case PROTO_MP_FLOAT:
        fv->kind = PROTO_FV_REAL;
        fv->d = it.d;
        break;
    case PROTO_MP_STR:
        fv->kind = PROTO_FV_STR;
        fv->len = it.n;
        fv->s = proto__arena_strdup(&dec->arena, (const char *)it.ptr, it.n);
        return fv->s != NULL ? RT_OK : RT_NOMEM;
    default:
        fv->kind = PROTO_FV_OTHER;
        break;
    }
    return RT_OK;
}

/* One key/value pair of the top-level map; `seen` catches duplicate keys. */
static rt_status mp_pair(struct proto_decoder *dec, const uint8_t *p, size_t len, size_t *off,
                         uint32_t *seen, struct proto_fields *f)
{
    struct proto_mp_item key;
    size_t kstart = *off, voff = mp_skip(p, len, kstart);
    size_t vend = mp_skip(p, len, voff);
    *off = vend;
    size_t koff = kstart;
    if (!proto_mp_read(p, len, &koff, &key) || key.kind != PROTO_MP_STR) {
        field_error(f, RT_E_BAD_REQUEST, "map keys must be strings");
        return RT_OK;
    }
    enum proto_field_id id = proto__field_index((const char *)key.ptr, key.n);
    if (id == PROTO_F_UNKNOWN)
        return RT_OK;
    if (*seen & (1u << id)) {
        field_error(f, RT_E_BAD_REQUEST, "duplicate key");
        return RT_OK;
    }
    *seen |= 1u << id;
    if (id == PROTO_F_DATA || id == PROTO_F_META) {
        mp_payload(p + voff, vend - voff, f, id == PROTO_F_DATA ? &f->data : &f->meta);
        return RT_OK;
    }
    return mp_fv(dec, p + voff, vend - voff, proto__field_slot(f, id));
}

/* Reads the fields of one vetted message p[0..len) and builds it. */
static rt_status mp_message(struct proto_decoder *dec, const uint8_t *p, size_t len,
                            const char *content_error)
{
    struct proto_fields f;
    struct proto_mp_item map;
    size_t off = 0;
    uint32_t seen = 0;
    rt_status st = RT_OK;
    memset(&f, 0, sizeof f);
    proto_mp_read(p, len, &off, &map);
    for (size_t i = 0; st == RT_OK && i < map.n; i++)
        st = mp_pair(dec, p, len, &off, &seen, &f);
    if (st != RT_OK)
        return st;
    struct proto_msg *m = &dec->msgs[dec->count++];
    st = proto__build_msg(&dec->arena, &dec->scratch, &f, m);
    if (content_error != NULL) {
        m->error = RT_E_BAD_REQUEST;
        m->error_message = content_error;
    }
    return st;
}

static rt_status decode_mp(struct proto_decoder *dec, const uint8_t *frame, size_t len)
{
    size_t pos = 0;
    while (pos < len) {
        if (dec->count == dec->lim.max_messages) {
            frame_error(dec, "too many messages in one frame");
            return RT_OK;
        }
        uint8_t c = frame[pos];
        if ((c & 0xf0) != 0x80 && c != 0xde && c != 0xdf) {
            frame_error(dec, "message is not a msgpack map");
            return RT_OK;
        }
        struct proto_mp_scan sc;
        proto_mp_scan(frame + pos, len - pos, dec->lim.max_depth, dec->lim.max_elements, 0, &sc);
        if (sc.structural != NULL) {
            frame_error(dec, sc.structural);
            return RT_OK;
        }
        rt_status st = mp_message(dec, frame + pos, sc.end, sc.content);
        if (st != RT_OK)
            return st;
        pos += sc.end;
    }
    return RT_OK;
}

/* -------------------------------------------------------------------- */

/* Splits and decodes one frame; see protocol.h for the contract. */
rt_status proto_decode(struct proto_decoder *dec, enum proto_codec codec, const uint8_t *frame,
                       size_t len, struct proto_msg **msgs, size_t *count)
{
    *msgs = NULL;
    *count = 0;
    if (dec == NULL || (frame == NULL && len > 0) ||
        (codec != PROTO_JSON && codec != PROTO_MSGPACK))
        return RT_INVAL;
    if (len > dec->lim.max_frame_bytes)
        return RT_TOO_BIG;
    proto__arena_reset(&dec->arena);
    dec->count = 0;
    rt_status st = codec == PROTO_JSON ? decode_json(dec, frame, len) : decode_mp(dec, frame, len);
    if (st != RT_OK)
        return st;
    if (dec->count == 0)
        frame_error(dec, "empty frame");
    *msgs = dec->msgs;
    *count = dec->count;
    return RT_OK;
}
