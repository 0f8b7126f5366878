/*
 * transcode.c: moves application payloads (`data`, `meta`) between JSON,
 * msgpack and raw binary, and writes them through the writer.
 *
 * Every payload is validated on the way out, even one that needs no
 * conversion: a backend's bytes must not be able to break the framing of
 * the messages around them.
 */
#include "protocol_int.h"

#include <string.h>

/* Compact JSON text of a jansson value; strings may hold NUL (JSON_ALLOW_NUL). */
rt_status proto__json_dump(const json_t *v, struct proto_buf *out)
{
    rt_status st = RT_OK;
    switch (json_typeof(v)) {
    case JSON_OBJECT: {
        const char *key;
        size_t klen;
        json_t *val;
        bool first = true;
        st = proto__put_byte(out, '{');
        json_object_keylen_foreach((json_t *)v, key, klen, val)
        {
            if (st == RT_OK && !first)
                st = proto__put_byte(out, ',');
            first = false;
            if (st == RT_OK)
                st = proto__js_str(out, key, klen);
            if (st == RT_OK)
                st = proto__put_byte(out, ':');
            if (st == RT_OK)
                st = proto__json_dump(val, out);
        }
        return st == RT_OK ? proto__put_byte(out, '}') : st;
    }
    case JSON_ARRAY:
        st = proto__put_byte(out, '[');
        for (size_t i = 0; st == RT_OK && i < json_array_size(v); i++) {
            if (i > 0)
                st = proto__put_byte(out, ',');
            if (st == RT_OK)
                st = proto__json_dump(json_array_get(v, i), out);
        }
        return st == RT_OK ? proto__put_byte(out, ']') : st;
    case JSON_STRING:
        return proto__js_str(out, json_string_value(v), json_string_length(v));
    case JSON_INTEGER:
        return proto__js_int(out, (int64_t)json_integer_value(v));
    case JSON_REAL:
        return proto__js_double(out, json_real_value(v));
    case JSON_TRUE:
        return proto__put(out, "true", 4);
    case JSON_FALSE:
        return proto__put(out, "false", 5);
    case JSON_NULL:
        return proto__put(out, "null", 4);
    }
    return RT_INVAL;
}

/* Msgpack of a jansson value, smallest headers. */
rt_status proto__json_to_mp(const json_t *v, struct proto_buf *out)
{
    rt_status st = RT_OK;
    switch (json_typeof(v)) {
    case JSON_OBJECT: {
        const char *key;
        size_t klen;
        json_t *val;
        st = proto__mp_map_hdr(out, json_object_size(v));
        json_object_keylen_foreach((json_t *)v, key, klen, val)
        {
            if (st == RT_OK)
                st = proto__mp_str(out, key, klen);
            if (st == RT_OK)
                st = proto__json_to_mp(val, out);
        }
        return st;
    }
    case JSON_ARRAY:
        st = proto__mp_array_hdr(out, json_array_size(v));
        for (size_t i = 0; st == RT_OK && i < json_array_size(v); i++)
            st = proto__json_to_mp(json_array_get(v, i), out);
        return st;
    case JSON_STRING:
        return proto__mp_str(out, json_string_value(v), json_string_length(v));
    case JSON_INTEGER:
        return proto__mp_int(out, (int64_t)json_integer_value(v));
    case JSON_REAL:
        return proto__mp_double(out, json_real_value(v));
    case JSON_TRUE:
        return proto__mp_bool(out, true);
    case JSON_FALSE:
        return proto__mp_bool(out, false);
    case JSON_NULL:
        return proto__mp_nil(out);
    }
    return RT_INVAL;
}

/* Parses JSON payload text (exactly one value) and re-emits it. */
static rt_status json_text_to(enum proto_codec codec, const struct proto_payload *p,
                              struct proto_buf *out)
{
    json_error_t err;
    json_t *v = json_loadb((const char *)p->ptr, p->len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &err);
    if (v == NULL)
        return RT_INVAL;
    rt_status st = codec == PROTO_JSON ? proto__json_dump(v, out) : proto__json_to_mp(v, out);
    json_decref(v);
    return st;
}

/* -------------------------------------------------------------------- */
/* msgpack -> JSON, iteratively, after a scan has vouched for the bytes. */

struct mpj_level {
    uint64_t left, total;
    bool is_map;
};

/* Writes the separator owed before the next item of the innermost level. */
static rt_status mpj_separator(struct proto_buf *out, struct mpj_level *lv)
{
    uint64_t done = lv->total - lv->left;
    lv->left--;
    if (done == 0)
        return RT_OK;
    if (lv->is_map && done % 2 == 1)
        return proto__put_byte(out, ':');
    return proto__put_byte(out, ',');
}

static rt_status mpj_bin(struct proto_buf *out, const uint8_t *ptr, size_t n)
{
    rt_status st = proto__put_byte(out, '"');
    if (st == RT_OK)
        st = proto_base64_encode(ptr, n, out);
    return st == RT_OK ? proto__put_byte(out, '"') : st;
}

/* Writes one scalar, or the opening of a container (pushed on lv). */
static rt_status mpj_item(struct proto_buf *out, const struct proto_mp_item *it,
                          struct mpj_level *lv, size_t *depth)
{
    switch (it->kind) {
    case PROTO_MP_NIL:
        return proto__put(out, "null", 4);
    case PROTO_MP_BOOL:
        return it->b ? proto__put(out, "true", 4) : proto__put(out, "false", 5);
    case PROTO_MP_INT:
        return proto__js_int(out, it->i);
    case PROTO_MP_UINT:
        return proto__js_uint(out, it->u);
    case PROTO_MP_FLOAT:
        return proto__js_double(out, it->d);
    case PROTO_MP_STR:
        return proto__js_str(out, (const char *)it->ptr, it->n);
    case PROTO_MP_BIN:
        return mpj_bin(out, it->ptr, it->n);
    case PROTO_MP_ARRAY:
    case PROTO_MP_MAP:
        break;
    case PROTO_MP_EXT:
        return RT_INVAL;
    }
    bool is_map = it->kind == PROTO_MP_MAP;
    if (it->n == 0)
        return is_map ? proto__put(out, "{}", 2) : proto__put(out, "[]", 2);
    lv[*depth].total = lv[*depth].left = is_map ? 2 * (uint64_t)it->n : it->n;
    lv[*depth].is_map = is_map;
    (*depth)++;
    return proto__put_byte(out, is_map ? '{' : '[');
}

/* JSON text of one msgpack object spanning exactly p[0..len). Nested bin
 * values become base64 strings; ext values, non-string keys and invalid
 * UTF-8 make it RT_INVAL. */
static rt_status mp_to_json(const uint8_t *p, size_t len, struct proto_buf *out)
{
    struct proto_mp_scan sc;
    proto_mp_scan(p, len, PROTO_MP_DEPTH_CAP, SIZE_MAX,
                  PROTO_MP_REJECT_EXT | PROTO_MP_REJECT_NONSTR_K, &sc);
    if (sc.structural != NULL || sc.content != NULL || sc.end != len)
        return RT_INVAL;
    struct mpj_level lv[PROTO_MP_DEPTH_CAP];
    size_t depth = 0, off = 0;
    rt_status st = RT_OK;
    do {
        struct proto_mp_item it;
        if (depth > 0)
            st = mpj_separator(out, &lv[depth - 1]);
        if (st == RT_OK)
            st = proto_mp_read(p, len, &off, &it) ? mpj_item(out, &it, lv, &depth) : RT_INVAL;
        while (st == RT_OK && depth > 0 && lv[depth - 1].left == 0) {
            depth--;
            st = proto__put_byte(out, lv[depth].is_map ? '}' : ']');
        }
    } while (st == RT_OK && depth > 0);
    return st;
}

/* -------------------------------------------------------------------- */

/* If p is one msgpack bin and nothing else, its body. */
static bool mp_top_bin(const struct proto_payload *p, const uint8_t **body, size_t *n)
{
    size_t off = 0;
    struct proto_mp_item it;
    if (p->enc != PROTO_PAYLOAD_MSGPACK || !proto_mp_read(p->ptr, p->len, &off, &it) ||
        it.kind != PROTO_MP_BIN || off != p->len)
        return false;
    *body = it.ptr;
    *n = it.n;
    return true;
}

/* Appends p as one value of `codec`. For JSON a binary payload (or a
 * msgpack bin) is written as a base64 string. */
static rt_status payload_value(enum proto_codec codec, const struct proto_payload *p,
                               struct proto_buf *out)
{
    const uint8_t *body;
    size_t n;
    if (p->enc == PROTO_PAYLOAD_JSON && p->canonical && codec == PROTO_JSON)
        return proto__put(out, p->ptr, p->len); /* parsed and dumped once already */
    if (p->enc == PROTO_PAYLOAD_JSON)
        return json_text_to(codec, p, out);
    if (p->enc == PROTO_PAYLOAD_BINARY)
        return codec == PROTO_JSON ? mpj_bin(out, p->ptr, p->len)
                                   : proto__mp_bin(out, p->ptr, p->len);
    if (p->enc != PROTO_PAYLOAD_MSGPACK)
        return RT_INVAL;
    if (codec == PROTO_JSON)
        return mp_top_bin(p, &body, &n) ? mpj_bin(out, body, n) : mp_to_json(p->ptr, p->len, out);
    struct proto_mp_scan sc;
    proto_mp_scan(p->ptr, p->len, PROTO_MP_DEPTH_CAP, SIZE_MAX, 0, &sc);
    if (sc.structural != NULL || sc.content != NULL || sc.end != p->len)
        return RT_INVAL;
    return proto__put(out, p->ptr, p->len);
}

/* Writes `key` and the payload, or `<key>_b64` and base64 text for binary
 * going to JSON. On failure the key is taken back and the status set. */
void proto_w_payload(struct proto_writer *w, const char *key, const struct proto_payload *p)
{
    const uint8_t *body;
    size_t n;
    if (p == NULL || p->enc == PROTO_PAYLOAD_NONE || w->status != RT_OK)
        return;
    bool b64 =
        w->codec == PROTO_JSON && (p->enc == PROTO_PAYLOAD_BINARY || mp_top_bin(p, &body, &n));
    size_t mark = w->buf->len;
    proto__w_key2(w, key, b64 ? "_b64" : "");
    if (!proto__w_raw_begin(w))
        return;
    rt_status st = payload_value(w->codec, p, w->buf);
    if (st != RT_OK) {
        w->buf->len = mark;
        proto__w_fail(w, st);
    }
}

/* Appends p converted to JSON text or msgpack. Binary has no JSON form
 * (RT_INVAL). On failure out is unchanged. */
rt_status proto_payload_convert(const struct proto_payload *p, enum proto_payload_enc want,
                                struct proto_buf *out)
{
    const uint8_t *body;
    size_t n;
    if (want != PROTO_PAYLOAD_JSON && want != PROTO_PAYLOAD_MSGPACK)
        return RT_INVAL;
    if (want == PROTO_PAYLOAD_JSON && (p->enc == PROTO_PAYLOAD_BINARY || mp_top_bin(p, &body, &n)))
        return RT_INVAL;
    size_t mark = out->len;
    rt_status st = payload_value(want == PROTO_PAYLOAD_JSON ? PROTO_JSON : PROTO_MSGPACK, p, out);
    if (st != RT_OK)
        out->len = mark;
    return st;
}
