/*
 * fields.c: the per-message rules of PROTOCOL.md, shared by both codecs.
 * The codec readers collect the known top-level fields into proto_fields;
 * this file checks them for the message's type and fills proto_msg.
 * Fields a type does not use are ignored, as are unknown fields.
 */
#include "protocol_int.h"

#include <math.h>
#include <string.h>

static const char *const FIELD_NAMES[] = {
    [PROTO_F_TYPE] = "type",         [PROTO_F_ID] = "id",
    [PROTO_F_TOKEN] = "token",       [PROTO_F_NAME] = "name",
    [PROTO_F_CHANNEL] = "channel",   [PROTO_F_EPOCH] = "epoch",
    [PROTO_F_SINCE] = "since",       [PROTO_F_MSG_ID] = "msg_id",
    [PROTO_F_SEQ] = "seq",           [PROTO_F_SPACE] = "space",
    [PROTO_F_WATCH] = "watch",       [PROTO_F_LAT] = "lat",
    [PROTO_F_LON] = "lon",           [PROTO_F_RADIUS_M] = "radius_m",
    [PROTO_F_LIMIT] = "limit",       [PROTO_F_DATA_B64] = "data_b64",
    [PROTO_F_META_B64] = "meta_b64", [PROTO_F_DATA] = "data",
    [PROTO_F_META] = "meta",         [PROTO_F_PRESENCE] = "presence",
};

/* Which known field a key names (PROTO_F_UNKNOWN if none). */
enum proto_field_id proto__field_index(const char *key, size_t len)
{
    for (int i = 0; i < PROTO_F_UNKNOWN; i++)
        if (strlen(FIELD_NAMES[i]) == len && memcmp(FIELD_NAMES[i], key, len) == 0)
            return (enum proto_field_id)i;
    return PROTO_F_UNKNOWN;
}

struct proto_fv *proto__field_slot(struct proto_fields *f, enum proto_field_id id)
{
    struct proto_fv *slots[] = {
        [PROTO_F_TYPE] = &f->type,
        [PROTO_F_ID] = &f->id,
        [PROTO_F_TOKEN] = &f->token,
        [PROTO_F_NAME] = &f->name,
        [PROTO_F_CHANNEL] = &f->channel,
        [PROTO_F_EPOCH] = &f->epoch,
        [PROTO_F_SINCE] = &f->since,
        [PROTO_F_MSG_ID] = &f->msg_id,
        [PROTO_F_SEQ] = &f->seq,
        [PROTO_F_SPACE] = &f->space,
        [PROTO_F_WATCH] = &f->watch,
        [PROTO_F_LAT] = &f->lat,
        [PROTO_F_LON] = &f->lon,
        [PROTO_F_RADIUS_M] = &f->radius_m,
        [PROTO_F_LIMIT] = &f->limit,
        [PROTO_F_DATA_B64] = &f->data_b64,
        [PROTO_F_META_B64] = &f->meta_b64,
        [PROTO_F_PRESENCE] = &f->presence,
        [PROTO_F_DATA] = NULL,
        [PROTO_F_META] = NULL,
    };
    return id < PROTO_F_UNKNOWN ? slots[id] : NULL;
}

/* -------------------------------------------------------------------- */

static const struct {
    const char *name;
    enum proto_type type;
} TYPES[] = {
    {"connect", PROTO_T_CONNECT},
    {"sub", PROTO_T_SUB},
    {"unsub", PROTO_T_UNSUB},
    {"pub", PROTO_T_PUB},
    {"ack", PROTO_T_ACK},
    {"ping", PROTO_T_PING},
    {"geo.set", PROTO_T_GEO_SET},
    {"geo.clear", PROTO_T_GEO_CLEAR},
    {"geo.near", PROTO_T_GEO_NEAR},
    {"geo.watch", PROTO_T_GEO_WATCH},
    {"geo.unwatch", PROTO_T_GEO_UNWATCH},
    {"refresh", PROTO_T_REFRESH},
};

static enum proto_type type_of(const struct proto_fv *v)
{
    for (size_t i = 0; i < sizeof TYPES / sizeof *TYPES; i++)
        if (strlen(TYPES[i].name) == v->len && memcmp(TYPES[i].name, v->s, v->len) == 0)
            return TYPES[i].type;
    return PROTO_T_UNKNOWN;
}

/* Records the first problem; always returns false so callers can `return bad(...)`. */
static bool bad(struct proto_msg *m, int code, const char *why)
{
    if (m->error == 0) {
        m->error = code;
        m->error_message = why;
    }
    return false;
}

/* A string field of min..max bytes, no NUL inside. `over` is the code for
 * a string that is too long (400, or 413 for fields with a size limit). */
static bool str_field(struct proto_msg *m, const struct proto_fv *v, bool required, size_t min,
                      size_t max, int over, const char *why, struct proto_str *out)
{
    if (v->kind == PROTO_FV_ABSENT)
        return required ? bad(m, RT_E_BAD_REQUEST, why) : true;
    if (v->kind != PROTO_FV_STR || v->len < min || memchr(v->s, '\0', v->len) != NULL)
        return bad(m, RT_E_BAD_REQUEST, why);
    if (v->len > max)
        return bad(m, over, why);
    out->ptr = v->s;
    out->len = v->len;
    return true;
}

/* A non-negative integer (uint64 range). */
static bool uint_field(const struct proto_fv *v, uint64_t *out)
{
    if (v->kind == PROTO_FV_INT && v->i >= 0) {
        *out = (uint64_t)v->i;
        return true;
    }
    if (v->kind == PROTO_FV_UINT) {
        *out = v->u;
        return true;
    }
    return false;
}

/* A number (integer or real) within [lo, hi]; NaN never is. */
static bool num_field(const struct proto_fv *v, double lo, double hi, double *out)
{
    double d;
    if (v->kind == PROTO_FV_INT)
        d = (double)v->i;
    else if (v->kind == PROTO_FV_UINT)
        d = (double)v->u;
    else if (v->kind == PROTO_FV_REAL)
        d = v->d;
    else
        return false;
    if (!(d >= lo && d <= hi))
        return false;
    *out = d;
    return true;
}

static bool channel_field(struct proto_msg *m, const struct proto_fields *f)
{
    if (f->channel.kind == PROTO_FV_ABSENT)
        return bad(m, RT_E_BAD_REQUEST, "missing channel");
    if (f->channel.kind != PROTO_FV_STR || !proto_channel_valid(f->channel.s, f->channel.len))
        return bad(m, RT_E_BAD_REQUEST, "invalid channel");
    m->channel.ptr = f->channel.s;
    m->channel.len = f->channel.len;
    return true;
}

static bool space_field(struct proto_msg *m, const struct proto_fields *f)
{
    const char *why = "space must be 1-64 bytes of [A-Za-z0-9_-]";
    if (!str_field(m, &f->space, true, 1, PROTO_SPACE_MAX, RT_E_BAD_REQUEST, why, &m->space))
        return false;
    for (size_t i = 0; i < m->space.len; i++) {
        char c = m->space.ptr[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-'))
            return bad(m, RT_E_BAD_REQUEST, why);
    }
    return true;
}

/* -------------------------------------------------------------------- */

/* `data` or `data_b64` (exactly one) into *out; base64 decoded to BINARY. */
static rt_status payload_field(struct proto_arena *a, struct proto_buf *scratch,
                               const struct proto_payload *value, const struct proto_fv *b64,
                               struct proto_msg *m, struct proto_payload *out, const char *why)
{
    if (value->enc != PROTO_PAYLOAD_NONE && b64->kind != PROTO_FV_ABSENT) {
        bad(m, RT_E_BAD_REQUEST, why);
        return RT_OK;
    }
    if (b64->kind == PROTO_FV_ABSENT) {
        *out = *value;
        return RT_OK;
    }
    if (b64->kind != PROTO_FV_STR) {
        bad(m, RT_E_BAD_REQUEST, "base64 payload must be a string");
        return RT_OK;
    }
    proto_buf_reset(scratch);
    rt_status st = proto_base64_decode(b64->s, b64->len, scratch);
    if (st == RT_INVAL) {
        bad(m, RT_E_BAD_REQUEST, "invalid base64");
        return RT_OK;
    }
    if (st != RT_OK)
        return st;
    uint8_t *p = proto__arena_alloc(a, scratch->len);
    if (p == NULL)
        return RT_NOMEM;
    if (scratch->len > 0)
        memcpy(p, scratch->data, scratch->len);
    *out = (struct proto_payload){PROTO_PAYLOAD_BINARY, p, scratch->len, false};
    return RT_OK;
}

/* connect and refresh. The token is bounded only by the frame here: its
 * own bound belongs to the gateway's auth, which answers 401 past it. */
static void check_connect(struct proto_msg *m, const struct proto_fields *f)
{
    if (str_field(m, &f->token, false, 0, SIZE_MAX, RT_E_TOO_LARGE, "token must be a string",
                  &m->token))
        str_field(m, &f->name, false, 0, PROTO_NAME_MAX, RT_E_TOO_LARGE,
                  "name must be a string of at most 128 bytes", &m->name);
}

static void check_sub(struct proto_msg *m, const struct proto_fields *f)
{
    if (!channel_field(m, f))
        return;
    if (f->since.kind != PROTO_FV_ABSENT) {
        if (!uint_field(&f->since, &m->since)) {
            bad(m, RT_E_BAD_REQUEST, "since must be a non-negative integer");
            return;
        }
        m->has_since = true;
    }
    if (!str_field(m, &f->epoch, false, 1, PROTO_EPOCH_MAX, RT_E_BAD_REQUEST,
                   "epoch must be a string of 1-64 bytes", &m->epoch))
        return;
    if (f->presence.kind != PROTO_FV_ABSENT && f->presence.kind != PROTO_FV_BOOL) {
        bad(m, RT_E_BAD_REQUEST, "presence must be true or false");
        return;
    }
    m->presence = f->presence.kind == PROTO_FV_BOOL && f->presence.i;
}

static rt_status check_pub(struct proto_arena *a, struct proto_buf *scratch, struct proto_msg *m,
                           const struct proto_fields *f)
{
    if (!channel_field(m, f) ||
        !str_field(m, &f->msg_id, false, 1, PROTO_MSG_ID_MAX, RT_E_BAD_REQUEST,
                   "msg_id must be a string of 1-64 bytes", &m->msg_id))
        return RT_OK;
    if (f->data.enc == PROTO_PAYLOAD_NONE && f->data_b64.kind == PROTO_FV_ABSENT) {
        bad(m, RT_E_BAD_REQUEST, "pub needs data or data_b64");
        return RT_OK;
    }
    return payload_field(a, scratch, &f->data, &f->data_b64, m, &m->data,
                         "pub takes data or data_b64, not both");
}

static void check_ack(struct proto_msg *m, const struct proto_fields *f)
{
    if (!channel_field(m, f))
        return;
    if (!uint_field(&f->seq, &m->seq)) {
        bad(m, RT_E_BAD_REQUEST, "ack needs seq, a non-negative integer");
        return;
    }
    m->has_seq = true;
}

/* lat and lon, both required. */
static bool check_point(struct proto_msg *m, const struct proto_fields *f)
{
    if (!num_field(&f->lat, -90.0, 90.0, &m->lat))
        return bad(m, RT_E_BAD_REQUEST, "lat must be a number in [-90, 90]");
    if (!num_field(&f->lon, -180.0, 180.0, &m->lon))
        return bad(m, RT_E_BAD_REQUEST, "lon must be a number in [-180, 180]");
    m->has_lat = m->has_lon = true;
    return true;
}

static rt_status check_geo_set(struct proto_arena *a, struct proto_buf *scratch,
                               struct proto_msg *m, const struct proto_fields *f)
{
    if (!space_field(m, f) || !check_point(m, f))
        return RT_OK;
    size_t size = f->meta_b64.kind == PROTO_FV_STR ? f->meta_b64.len : f->meta.len;
    if (size > PROTO_META_MAX) {
        bad(m, RT_E_TOO_LARGE, "meta is over 1024 bytes");
        return RT_OK;
    }
    return payload_field(a, scratch, &f->meta, &f->meta_b64, m, &m->meta,
                         "geo.set takes meta or meta_b64, not both");
}

static void check_geo_near(struct proto_msg *m, const struct proto_fields *f)
{
    if (!space_field(m, f) || !check_point(m, f))
        return;
    double r;
    if (!num_field(&f->radius_m, 0.0, PROTO_RADIUS_MAX_M, &r) || r == 0.0) {
        bad(m, RT_E_BAD_REQUEST, "radius_m must be a number in (0, 50000]");
        return;
    }
    m->radius_m = r;
    m->has_radius = true;
    if (f->limit.kind == PROTO_FV_ABSENT)
        return;
    if (f->limit.kind != PROTO_FV_INT || f->limit.i < 1 || f->limit.i > PROTO_NEAR_LIMIT_MAX) {
        bad(m, RT_E_BAD_REQUEST, "limit must be an integer in [1, 1000]");
        return;
    }
    m->limit = (uint32_t)f->limit.i;
    m->has_limit = true;
}

/* The type's own rules; returns RT_NOMEM only. */
static rt_status check_type(struct proto_arena *a, struct proto_buf *scratch, struct proto_msg *m,
                            const struct proto_fields *f)
{
    switch (m->type) {
    case PROTO_T_CONNECT:
    case PROTO_T_REFRESH:
        check_connect(m, f);
        break;
    case PROTO_T_SUB:
        check_sub(m, f);
        break;
    case PROTO_T_UNSUB:
        channel_field(m, f);
        break;
    case PROTO_T_PUB:
        return check_pub(a, scratch, m, f);
    case PROTO_T_ACK:
        check_ack(m, f);
        break;
    case PROTO_T_GEO_SET:
        return check_geo_set(a, scratch, m, f);
    case PROTO_T_GEO_CLEAR:
        space_field(m, f);
        break;
    case PROTO_T_GEO_NEAR:
    case PROTO_T_GEO_WATCH:
        check_geo_near(m, f);
        break;
    case PROTO_T_GEO_UNWATCH:
        str_field(m, &f->watch, true, 1, 64, RT_E_BAD_REQUEST,
                  "watch must be a string of 1-64 bytes", &m->watch);
        break;
    case PROTO_T_PING:
    case PROTO_T_UNKNOWN:
        break;
    }
    return RT_OK;
}

/* Fills msg from the fields: the id first (so even a bad message can be
 * answered with a reply), then the type, then the type's rules. */
rt_status proto__build_msg(struct proto_arena *a, struct proto_buf *scratch,
                           const struct proto_fields *f, struct proto_msg *msg)
{
    memset(msg, 0, sizeof *msg);
    if (f->id.kind == PROTO_FV_INT) {
        msg->has_id = true;
        msg->id = f->id.i;
    }
    if (f->type.kind != PROTO_FV_STR) {
        bad(msg, RT_E_BAD_REQUEST,
            f->type.kind == PROTO_FV_ABSENT ? "missing type" : "type must be a string");
        return RT_OK;
    }
    msg->type = type_of(&f->type);
    if (msg->type == PROTO_T_UNKNOWN) {
        bad(msg, RT_E_BAD_REQUEST, "unknown type");
        return RT_OK;
    }
    if (msg->type == PROTO_T_GEO_NEAR || msg->type == PROTO_T_GEO_WATCH)
        msg->limit = PROTO_NEAR_LIMIT_DEFAULT;
    bool needs_id = msg->type != PROTO_T_ACK && msg->type != PROTO_T_PING;
    if (needs_id && !msg->has_id) {
        bad(msg, RT_E_BAD_REQUEST, "missing or invalid id (an integer is required)");
        return RT_OK;
    }
    if (f->error != 0) {
        bad(msg, f->error, f->error_message);
        return RT_OK;
    }
    return check_type(a, scratch, msg, f);
}
