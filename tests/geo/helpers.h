/* Shared by the geo tests: a seeded generator, positions that stress the
 * index (antimeridian, poles, cell borders, a dense city), and an event log. */
#ifndef TESTS_GEO_HELPERS_H
#define TESTS_GEO_HELPERS_H

#include "geo.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct tg_rng {
    uint64_t s;
};

uint64_t tg_next(struct tg_rng *r);
double tg_unit(struct tg_rng *r);                      /* [0, 1) */
double tg_range(struct tg_rng *r, double a, double b); /* [a, b) */
size_t tg_below(struct tg_rng *r, size_t n);           /* [0, n) */

/* Kinds of positions; tg_point picks one at random when kind is TG_ANY. */
enum tg_kind { TG_ANY, TG_UNIFORM, TG_ANTIMERIDIAN, TG_NORTH, TG_SOUTH, TG_BORDER, TG_CITY };
void tg_point(struct tg_rng *r, enum tg_kind kind, double *lat, double *lon);
/* A point up to `metres` away (roughly), clamped into the valid range. */
void tg_nudge(struct tg_rng *r, double metres, double *lat, double *lon);
/* A radius from 1 m to 50 km, log-uniform, sometimes exactly 0 or 50 km. */
double tg_radius(struct tg_rng *r);

struct tg_event {
    uint64_t watch, watch_conn;
    enum geo_event ev;
    char client[GEO_CLIENT_MAX + 1];
    char space[GEO_SPACE_MAX + 1];
    double lat, lon;
};

struct tg_log {
    struct tg_event *ev;
    size_t n, cap;
};

/* A geo_event_fn that appends to the tg_log in arg. */
void tg_log_event(void *arg, uint64_t watch_id, uint64_t watch_conn, enum geo_event ev,
                  const struct geo_member_view *m);
void tg_log_push(struct tg_log *log, const struct tg_event *e);
void tg_log_sort(struct tg_log *log); /* by watch id, then client */
void tg_log_free(struct tg_log *log);

/*
 * Mutates the len bytes at buf as a hostile or broken sender would: 1 to
 * max_edits edits, each a byte changed, a bit flipped, a count or length
 * one off, the message cut short, or a byte inserted (while len < cap).
 */
void tg_mutate(struct tg_rng *r, uint8_t *buf, size_t *len, size_t cap, unsigned max_edits);

/* A set with a NUL-terminated space / client / user. */
rt_status tg_set(struct geo *g, const char *space, const char *client, uint64_t conn, double lat,
                 double lon, char cell[GEO_CELL_BUF]);

#endif
