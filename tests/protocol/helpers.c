#include "helpers.h"

#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

json_t *th_json(const uint8_t *p, size_t len)
{
    json_error_t err;
    return json_loadb((const char *)p, len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &err);
}

static json_t *obj_to_json(const msgpack_object *o);

static json_t *map_to_json(const msgpack_object_map *m)
{
    json_t *j = json_object();
    for (uint32_t i = 0; i < m->size; i++) {
        const msgpack_object *k = &m->ptr[i].key;
        if (k->type != MSGPACK_OBJECT_STR) {
            json_decref(j);
            return NULL;
        }
        json_t *v = obj_to_json(&m->ptr[i].val);
        if (v == NULL) {
            json_decref(j);
            return NULL;
        }
        json_object_setn_new(j, k->via.str.ptr, k->via.str.size, v);
    }
    return j;
}

static json_t *obj_to_json(const msgpack_object *o)
{
    switch (o->type) {
    case MSGPACK_OBJECT_NIL:
        return json_null();
    case MSGPACK_OBJECT_BOOLEAN:
        return json_boolean(o->via.boolean);
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        if (o->via.u64 > INT64_MAX)
            return json_real((double)o->via.u64);
        return json_integer((json_int_t)o->via.u64);
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
        return json_integer((json_int_t)o->via.i64);
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64:
        return json_real(o->via.f64);
    case MSGPACK_OBJECT_STR:
        return json_stringn(o->via.str.ptr, o->via.str.size);
    case MSGPACK_OBJECT_BIN: {
        struct proto_buf b;
        proto_buf_init(&b, 0);
        proto_base64_encode((const uint8_t *)o->via.bin.ptr, o->via.bin.size, &b);
        json_t *j = json_pack("{s:s%}", "$bin", b.data ? (char *)b.data : "", b.len);
        proto_buf_free(&b);
        return j;
    }
    case MSGPACK_OBJECT_ARRAY: {
        json_t *a = json_array();
        for (uint32_t i = 0; i < o->via.array.size; i++) {
            json_t *v = obj_to_json(&o->via.array.ptr[i]);
            if (v == NULL) {
                json_decref(a);
                return NULL;
            }
            json_array_append_new(a, v);
        }
        return a;
    }
    case MSGPACK_OBJECT_MAP:
        return map_to_json(&o->via.map);
    default:
        return NULL;
    }
}

json_t *th_mp_to_json(const uint8_t *p, size_t len)
{
    msgpack_unpacked u;
    size_t off = 0;
    msgpack_unpacked_init(&u);
    json_t *j = NULL;
    if (msgpack_unpack_next(&u, (const char *)p, len, &off) == MSGPACK_UNPACK_SUCCESS && off == len)
        j = obj_to_json(&u.data);
    msgpack_unpacked_destroy(&u);
    return j;
}

static void pack_json(msgpack_packer *pk, const json_t *v)
{
    const char *key;
    size_t klen;
    json_t *val;
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        msgpack_pack_map(pk, json_object_size(v));
        json_object_keylen_foreach((json_t *)v, key, klen, val)
        {
            msgpack_pack_str(pk, klen);
            msgpack_pack_str_body(pk, key, klen);
            pack_json(pk, val);
        }
        break;
    case JSON_ARRAY:
        msgpack_pack_array(pk, json_array_size(v));
        for (size_t i = 0; i < json_array_size(v); i++)
            pack_json(pk, json_array_get(v, i));
        break;
    case JSON_STRING:
        msgpack_pack_str(pk, json_string_length(v));
        msgpack_pack_str_body(pk, json_string_value(v), json_string_length(v));
        break;
    case JSON_INTEGER:
        msgpack_pack_int64(pk, json_integer_value(v));
        break;
    case JSON_REAL:
        msgpack_pack_double(pk, json_real_value(v));
        break;
    case JSON_TRUE:
        msgpack_pack_true(pk);
        break;
    case JSON_FALSE:
        msgpack_pack_false(pk);
        break;
    case JSON_NULL:
        msgpack_pack_nil(pk);
        break;
    }
}

void th_json_text_to_mp(const char *json, uint8_t **out, size_t *len)
{
    json_error_t err;
    json_t *v = json_loads(json, JSON_DECODE_ANY | JSON_ALLOW_NUL, &err);
    cr_assert_not_null(v, "test JSON invalid: %s: %s", json, err.text);
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    pack_json(&pk, v);
    json_decref(v);
    *out = malloc(sb.size);
    memcpy(*out, sb.data, sb.size);
    *len = sb.size;
    msgpack_sbuffer_destroy(&sb);
}

void th_put(struct th_bytes *b, const void *p, size_t n)
{
    if (b->len + n > b->cap) {
        b->cap = (b->len + n) * 2 + 16;
        b->p = realloc(b->p, b->cap);
    }
    if (n > 0)
        memcpy(b->p + b->len, p, n);
    b->len += n;
}

void th_byte(struct th_bytes *b, uint8_t c)
{
    th_put(b, &c, 1);
}

void th_be(struct th_bytes *b, uint8_t tag, uint64_t v, int nbytes)
{
    th_byte(b, tag);
    for (int k = nbytes - 1; k >= 0; k--)
        th_byte(b, (uint8_t)(v >> (8 * k)));
}

void th_strn(struct th_bytes *b, const char *s, size_t n)
{
    if (n <= 31)
        th_byte(b, (uint8_t)(0xa0 | n));
    else if (n <= 255)
        th_be(b, 0xd9, n, 1);
    else
        th_be(b, 0xda, n, 2);
    th_put(b, s, n);
}

void th_str(struct th_bytes *b, const char *s)
{
    th_strn(b, s, strlen(s));
}

void th_free(struct th_bytes *b)
{
    free(b->p);
    memset(b, 0, sizeof *b);
}

rt_status th_decode(struct proto_decoder **dec, enum proto_codec codec, const void *p, size_t len,
                    struct proto_msg **msgs, size_t *count)
{
    if (*dec == NULL)
        cr_assert_eq(proto_decoder_create(NULL, dec), RT_OK);
    return proto_decode(*dec, codec, p, len, msgs, count);
}

struct proto_msg th_decode_one_json(struct proto_decoder **dec, const char *json)
{
    struct proto_msg *msgs;
    size_t count;
    cr_assert_eq(th_decode(dec, PROTO_JSON, json, strlen(json), &msgs, &count), RT_OK);
    cr_assert_eq(count, 1, "%s: %zu messages", json, count);
    return msgs[0];
}

/* The msgpack bytes live in a static buffer so the message's zero-copy
 * pointers stay valid until the next call. */
struct proto_msg th_decode_one_mp(struct proto_decoder **dec, const char *json)
{
    static uint8_t *mp;
    size_t len;
    free(mp);
    th_json_text_to_mp(json, &mp, &len);
    struct proto_msg *msgs;
    size_t count;
    cr_assert_eq(th_decode(dec, PROTO_MSGPACK, mp, len, &msgs, &count), RT_OK);
    cr_assert_eq(count, 1, "%s: %zu messages", json, count);
    return msgs[0];
}
