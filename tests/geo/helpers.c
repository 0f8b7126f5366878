/* Helpers for the geo tests (see helpers.h). */
#include "helpers.h"

#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

uint64_t tg_next(struct tg_rng *r)
{
    /* splitmix64: seeded, repeatable, good enough for tests. */
    uint64_t z = (r->s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

double tg_unit(struct tg_rng *r)
{
    return (double)(tg_next(r) >> 11) / 9007199254740992.0;
}

double tg_range(struct tg_rng *r, double a, double b)
{
    return a + (b - a) * tg_unit(r);
}

size_t tg_below(struct tg_rng *r, size_t n)
{
    return (size_t)(tg_next(r) % n);
}

static void uniform_on_sphere(struct tg_rng *r, double *lat, double *lon)
{
    *lat = asin(tg_range(r, -1.0, 1.0)) * 180.0 / M_PI;
    *lon = tg_range(r, -180.0, 180.0);
}

static void antimeridian(struct tg_rng *r, double *lat, double *lon)
{
    *lat = tg_range(r, -10.0, 10.0) + (tg_below(r, 2) ? 65.0 : -17.0);
    double off = tg_below(r, 8) == 0 ? 0.0 : tg_range(r, 0.0, 0.6);
    *lon = tg_below(r, 2) ? 180.0 - off : -180.0 + off;
}

static void polar(struct tg_rng *r, double sign, double *lat, double *lon)
{
    *lat = sign * (tg_below(r, 10) == 0 ? 90.0 : 90.0 - tg_range(r, 0.0, 0.8));
    *lon =
        tg_below(r, 10) == 0 ? (double)(tg_below(r, 9)) * 45.0 - 180.0 : tg_range(r, -180.0, 180.0);
}

/* On the grid lines of a random precision 1..8, near the city or anywhere. */
static void border(struct tg_rng *r, double *lat, double *lon)
{
    int p = 1 + (int)tg_below(r, 8);
    double h = 180.0 / (double)(1ull << (5 * p / 2)),
           w = 360.0 / (double)(1ull << ((5 * p + 1) / 2));
    if (tg_below(r, 2))
        tg_point(r, TG_CITY, lat, lon);
    else
        uniform_on_sphere(r, lat, lon);
    unsigned which = (unsigned)tg_below(r, 3);
    if (which != 1)
        *lat = -90.0 + h * floor((*lat + 90.0) / h);
    if (which != 0)
        *lon = -180.0 + w * floor((*lon + 180.0) / w);
}

void tg_point(struct tg_rng *r, enum tg_kind kind, double *lat, double *lon)
{
    if (kind == TG_ANY)
        kind = (enum tg_kind)(1 + tg_below(r, 6));
    switch (kind) {
    case TG_ANTIMERIDIAN:
        antimeridian(r, lat, lon);
        break;
    case TG_NORTH:
        polar(r, 1.0, lat, lon);
        break;
    case TG_SOUTH:
        polar(r, -1.0, lat, lon);
        break;
    case TG_BORDER:
        border(r, lat, lon);
        break;
    case TG_CITY: /* 50 km x 50 km around Berlin */
        *lat = 52.52 + tg_range(r, -0.225, 0.225);
        *lon = 13.405 + tg_range(r, -0.37, 0.37);
        break;
    default:
        uniform_on_sphere(r, lat, lon);
        break;
    }
}

void tg_nudge(struct tg_rng *r, double metres, double *lat, double *lon)
{
    double d = metres / 111195.0;
    *lat = fmax(-90.0, fmin(90.0, *lat + tg_range(r, -d, d)));
    double c = cos(*lat * M_PI / 180.0);
    *lon += tg_range(r, -d, d) / (c > 0.01 ? c : 0.01);
    if (*lon > 180.0)
        *lon -= 360.0;
    if (*lon < -180.0)
        *lon += 360.0;
}

double tg_radius(struct tg_rng *r)
{
    size_t k = tg_below(r, 40);
    if (k == 0)
        return 0.0;
    if (k == 1)
        return GEO_RADIUS_MAX_M;
    return exp(tg_range(r, 0.0, log(GEO_RADIUS_MAX_M)));
}

void tg_log_push(struct tg_log *log, const struct tg_event *e)
{
    if (log->n == log->cap) {
        log->cap = log->cap ? log->cap * 2 : 64;
        log->ev = realloc(log->ev, log->cap * sizeof(*log->ev));
        cr_assert_not_null(log->ev);
    }
    log->ev[log->n++] = *e;
}

void tg_log_event(void *arg, uint64_t watch_id, uint64_t watch_conn, enum geo_event ev,
                  const struct geo_member_view *m)
{
    struct tg_event e;
    memset(&e, 0, sizeof(e));
    e.watch = watch_id;
    e.watch_conn = watch_conn;
    e.ev = ev;
    memcpy(e.client, m->client, m->client_len);
    memcpy(e.space, m->space, m->space_len);
    e.lat = m->lat;
    e.lon = m->lon;
    tg_log_push(arg, &e);
}

static int event_cmp(const void *a, const void *b)
{
    const struct tg_event *x = a, *y = b;
    if (x->watch != y->watch)
        return x->watch < y->watch ? -1 : 1;
    return strcmp(x->client, y->client);
}

void tg_log_sort(struct tg_log *log)
{
    if (log->n > 1)
        qsort(log->ev, log->n, sizeof(*log->ev), event_cmp);
}

void tg_log_free(struct tg_log *log)
{
    free(log->ev);
    memset(log, 0, sizeof(*log));
}

rt_status tg_set(struct geo *g, const char *space, const char *client, uint64_t conn, double lat,
                 double lon, char cell[GEO_CELL_BUF])
{
    struct geo_member_in in;
    memset(&in, 0, sizeof(in));
    in.space = space;
    in.space_len = strlen(space);
    in.client = client;
    in.client_len = strlen(client);
    in.user = "u";
    in.user_len = 1;
    in.conn = conn;
    in.lat = lat;
    in.lon = lon;
    return geo_set(g, &in, cell);
}

void tg_mutate(struct tg_rng *r, uint8_t *buf, size_t *len, size_t cap, unsigned max_edits)
{
    for (int edits = 1 + (int)tg_below(r, max_edits); edits > 0 && *len; edits--) {
        size_t at = tg_below(r, *len);
        switch (tg_below(r, 5)) {
        case 0:
            buf[at] = (uint8_t)tg_next(r);
            break;
        case 1:
            buf[at] ^= (uint8_t)(1u << tg_below(r, 8));
            break;
        case 2:
            buf[at] = (uint8_t)(buf[at] + 1); /* a count or length one off */
            break;
        case 3:
            *len = at + 1; /* cut short */
            break;
        default: /* a byte inserted */
            if (*len < cap) {
                memmove(buf + at + 1, buf + at, *len - at);
                buf[at] = (uint8_t)tg_next(r);
                ++*len;
            }
            break;
        }
    }
}
