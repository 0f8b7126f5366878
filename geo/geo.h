/*
 * geo.h: presence via geocells (PROTOCOL.md section 4), the part that lives on
 * one node.
 *
 * Two layers:
 *
 *   1. Pure math: geohash encode / decode, neighbours, great-circle distance
 *      and the cells that cover a circle. No I/O, no allocation, no state;
 *      callable from any thread.
 *
 *   2. The per-node index (struct geo): spaces -> members keyed by (space,
 *      client id), each with its position, owner connection id, user, meta
 *      bytes (an opaque copy) and cell at the index precision. Per space the
 *      members sit in cells (a hash for lookups plus an ordered tree, so a
 *      coarser cell is a range scan); `near` reads only the cells that cover
 *      the circle. Watches register in the cells that cover their circle, so
 *      a set, clear or removal looks only at the watches of the member's old
 *      and new cells and reports join / move / leave through one callback.
 *      Allocates, never does I/O; single-threaded: the gateway's loop thread.
 *
 * Coordinates are degrees (latitude [-90, 90], longitude [-180, 180]),
 * distances metres on a sphere of the mean Earth radius. Every function
 * accepts any double: NaN, infinities and out-of-range values give RT_INVAL.
 * The protocol's own limits (radius, limit, meta size) are the gateway's to
 * answer with 400 / 413; the library enforces the same bounds as a backstop.
 */
#ifndef GEO_H
#define GEO_H

#include "rt.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define GEO_PRECISION_MAX     12        /* geohash characters */
#define GEO_PRECISION_DEFAULT 6         /* index cell precision (PROTOCOL.md section 4) */
#define GEO_CELL_BUF          13        /* a cell string plus its NUL */
#define GEO_EARTH_RADIUS_M    6371008.8 /* mean Earth radius (IUGG) */
#define GEO_RADIUS_MAX_M      50000.0   /* largest circle for near / watch / cover */
#define GEO_SPACE_MAX         64        /* bytes of a space name */
#define GEO_CLIENT_MAX        128       /* bytes of a client id */
#define GEO_USER_MAX          512       /* bytes of a user id */
#define GEO_META_MAX          1024      /* bytes of meta */
#define GEO_COVER_CELLS       16        /* default cover_max_cells */

/* ------------------------------------------------------------------------ */
/* Layer 1: pure math                                                         */

/* A cell's bounding box and centre, degrees. */
struct geo_box {
    double lat_min, lat_max;
    double lon_min, lon_max;
    double lat, lon; /* centre */
};

/*
 * The geohash of (lat, lon) with `precision` characters (1..12) into out,
 * NUL-terminated. Points on a cell border belong to the cell north / east of
 * it, except at lat 90 and lon 180, which belong to the last row / column
 * (so lon 180 and lon -180 are in different cells). RT_INVAL for a bad
 * coordinate or precision (out is then "").
 */
rt_status geo_encode(double lat, double lon, int precision, char out[GEO_CELL_BUF]);

/*
 * The bounding box and centre of a cell of len 1..12 characters of the
 * geohash alphabet (upper case accepted). RT_INVAL otherwise.
 */
rt_status geo_decode(const char *cell, size_t len, struct geo_box *box);

/*
 * The cells adjacent to `cell` at the same precision, in the order N, NE, E,
 * SE, S, SW, W, NW, skipping the ones that do not exist. East and west wrap
 * across the antimeridian; a cell in the first or last row has no neighbours
 * beyond the pole, so *n is 8 or 5. RT_INVAL for a bad cell (*n = 0).
 */
rt_status geo_neighbours(const char *cell, size_t len, char out[8][GEO_CELL_BUF], size_t *n);

/*
 * Great-circle (haversine) distance in metres between two points, into
 * *metres. RT_INVAL for a bad coordinate. Symmetric up to rounding; the index
 * always computes it as geo_distance(centre, member), as tests should.
 */
rt_status geo_distance(double lat1, double lon1, double lat2, double lon2, double *metres);

/*
 * Picks the precision for covering the circle (lat, lon, radius_m): the
 * finest precision <= max_precision at which at most max_cells cells cover
 * it, else 1. *count (may be NULL) gets the number of cells at that
 * precision. A circle crossing the antimeridian wraps; one containing a pole
 * covers every longitude near it. radius_m is 0..GEO_RADIUS_MAX_M. RT_INVAL
 * for bad input.
 */
rt_status geo_cover_precision(double lat, double lon, double radius_m, int max_precision,
                              size_t max_cells, int *precision, size_t *count);

/*
 * The cells of `precision` whose union contains the circle (a superset of
 * the cells it touches, by its bounding box), row by row from the south,
 * west to east, into cells[0..cap). *n gets the number of cells; if that is
 * more than cap nothing is written and RT_TOO_BIG is returned. RT_INVAL for
 * bad input.
 */
rt_status geo_cover(double lat, double lon, double radius_m, int precision,
                    char (*cells)[GEO_CELL_BUF], size_t cap, size_t *n);

/* ------------------------------------------------------------------------ */
/* Layer 2: the per-node index                                                */

struct geo;

enum geo_event {
    GEO_EV_JOIN = 1, /* entered the circle (or appeared inside it) */
    GEO_EV_MOVE,     /* set again and still inside (position or meta may have changed) */
    GEO_EV_LEAVE,    /* left the circle, cleared, or its connection went away */
};

/* "join", "move", "leave". */
const char *geo_event_name(enum geo_event ev);

/*
 * A member as the index holds it. The pointers are into the index: valid
 * during the callback that received the view, or until the next call that
 * changes the index (set, clear, remove, watch add/remove, destroy).
 */
struct geo_member_view {
    const char *space; /* NUL-terminated */
    size_t space_len;
    const char *client; /* NUL-terminated */
    size_t client_len;
    const char *user; /* NUL-terminated, may be "" */
    size_t user_len;
    uint64_t conn; /* owner connection id */
    double lat, lon;
    const uint8_t *meta; /* NULL when meta_len is 0 */
    size_t meta_len;
    int meta_enc; /* as given to geo_set (the gateway's payload encoding) */
    uint64_t version; /* as given to geo_set / geo_set_version */
};

/*
 * Reports one watch event: watch `watch_id`, owned by connection `watch_conn`,
 * sees member `m`. m holds the member as it is now: for a leave caused by a
 * move, the new position (outside the circle); for a clear or a removed
 * connection, the last position. Runs inside
 * geo_set / geo_clear / geo_remove_conn on the loop thread; it may read the
 * index (geo_near, geo_get, stats), but calls that change it return
 * RT_AGAIN while it runs.
 */
typedef void (*geo_event_fn)(void *arg, uint64_t watch_id, uint64_t watch_conn, enum geo_event ev,
                             const struct geo_member_view *m);

/* Reports one member removed by geo_remove_conn, before its leave events. */
typedef void (*geo_member_fn)(void *arg, const struct geo_member_view *m);

struct geo_config {
    int precision;          /* index cell precision 1..12; 0 = GEO_PRECISION_DEFAULT */
    size_t cover_max_cells; /* cells per near / watch cover; 0 = GEO_COVER_CELLS */
    size_t max_members;     /* over all spaces; 0 = unlimited, else RT_LIMIT */
    size_t max_watches;     /* 0 = unlimited, else RT_LIMIT */
    size_t max_spaces;      /* 0 = unlimited, else RT_LIMIT */
    geo_event_fn on_event;  /* may be NULL: no events */
    void *arg;              /* passed to on_event */
};

/*
 * Creates an empty index with *cfg (NULL = all defaults) into *out. RT_INVAL
 * for a precision outside 0..12, RT_NOMEM. Loop thread.
 */
rt_status geo_create(const struct geo_config *cfg, struct geo **out);

/* Frees the index and everything in it, without events. NULL is a no-op. */
void geo_destroy(struct geo *g);

/* The index cell precision (1..12). */
int geo_precision(const struct geo *g);

/* What geo_set takes. Strings need not be NUL-terminated; all are copied. */
struct geo_member_in {
    const char *space; /* 1..GEO_SPACE_MAX bytes */
    size_t space_len;
    const char *client; /* 1..GEO_CLIENT_MAX bytes, unique within the space */
    size_t client_len;
    const char *user; /* 0..GEO_USER_MAX bytes; NULL = "" */
    size_t user_len;
    uint64_t conn; /* owner connection id */
    double lat, lon;
    const uint8_t *meta; /* 0..GEO_META_MAX bytes; replaces the previous meta */
    size_t meta_len;
    int meta_enc;
    uint64_t version; /* opaque to the index, kept with the member (fleet.h) */
};

/*
 * Inserts the member or moves it (position, meta, user and owner are all
 * replaced), and writes its cell at the index precision into cell (may be
 * NULL). Reports the watch events the change causes. Returns RT_INVAL (bad
 * coordinate or string length), RT_TOO_BIG (meta over GEO_META_MAX), RT_LIMIT
 * (max_members / max_spaces), RT_NOMEM (the index is unchanged), RT_AGAIN
 * (called from a callback). Loop thread.
 */
rt_status geo_set(struct geo *g, const struct geo_member_in *in, char cell[GEO_CELL_BUF]);

/*
 * Changes only a member's version (no events). RT_NOT_FOUND, RT_INVAL. Loop
 * thread.
 */
rt_status geo_set_version(struct geo *g, const char *space, size_t space_len, const char *client,
                          size_t client_len, uint64_t version);

/*
 * Removes one member, reporting leave to the watches it was inside.
 * RT_NOT_FOUND if it was not there, RT_INVAL, RT_AGAIN. Loop thread.
 */
rt_status geo_clear(struct geo *g, const char *space, size_t space_len, const char *client,
                    size_t client_len);

/*
 * On disconnect: removes every watch owned by `conn` (silently), then every
 * member it owns; each member is first reported to fn (may be NULL), then its
 * leave events go to the remaining watches. *n_members / *n_watches (may be
 * NULL) get the counts removed. RT_AGAIN from a callback. Loop thread.
 */
rt_status geo_remove_conn(struct geo *g, uint64_t conn, geo_member_fn fn, void *arg,
                          size_t *n_members, size_t *n_watches);

/*
 * Looks up one member; *m is valid until the index changes. RT_NOT_FOUND,
 * RT_INVAL.
 */
rt_status geo_get(const struct geo *g, const char *space, size_t space_len, const char *client,
                  size_t client_len, struct geo_member_view *m);

/* One result of geo_near. */
struct geo_hit {
    struct geo_member_view member;
    double dist_m;
};

/*
 * The members of `space` within radius_m (0..GEO_RADIUS_MAX_M) of (lat,
 * lon), nearest first, at most `limit`, into out[0..limit); *n gets how many.
 * Equal distances are ordered by client id (bytewise, then shorter first),
 * so the order is total and repeatable. An unknown space gives *n = 0.
 * Reads only occupied cells that cover the circle, nearest first, and stops
 * once `limit` hits are nearer than any cell left: the cost grows with the
 * members in those cells (with a small limit, in the nearest of them), not
 * with the population. Never allocates (about 16 KiB of stack). The views
 * are valid until the index changes. RT_INVAL for bad input. Loop thread.
 */
rt_status geo_near(struct geo *g, const char *space, size_t space_len, double lat, double lon,
                   double radius_m, struct geo_hit *out, size_t limit, size_t *n);

/*
 * Adds a watch on the circle (lat, lon, radius_m) in `space` for connection
 * `conn`, and its id (>= 1, never reused) into *watch_id. From then on every
 * set / clear / removal of a member whose old or new position is inside the
 * circle is reported to on_event. The members already inside are not
 * reported: take them with geo_near for the reply. RT_INVAL, RT_LIMIT
 * (max_watches / max_spaces), RT_NOMEM, RT_AGAIN. Loop thread.
 */
rt_status geo_watch_add(struct geo *g, const char *space, size_t space_len, double lat, double lon,
                        double radius_m, uint64_t conn, uint64_t *watch_id);

/*
 * Removes watch `watch_id` if connection `conn` owns it, else RT_NOT_FOUND
 * (so a client cannot drop another's watch). RT_AGAIN from a callback.
 */
rt_status geo_watch_remove(struct geo *g, uint64_t watch_id, uint64_t conn);

/*
 * Reports to fn every member of `space` whose cell (at the index precision)
 * starts with `prefix` (0..precision characters; "" is the whole space), in
 * cell order; *n (may be NULL) gets how many. fn must not change the index
 * (calls that would return RT_AGAIN). RT_INVAL for a bad space or prefix.
 * Loop thread.
 */
rt_status geo_each_prefix(struct geo *g, const char *space, size_t space_len, const char *prefix,
                          size_t prefix_len, geo_member_fn fn, void *arg, size_t *n);

struct geo_stats {
    uint64_t members;
    uint64_t spaces;
    uint64_t cells; /* occupied cells at the index precision, all spaces */
    uint64_t watches;
    uint64_t watch_cells; /* cells that hold at least one watch registration */
    uint64_t queries;     /* geo_near calls answered */
    uint64_t sets;        /* geo_set calls that succeeded */
    uint64_t events;      /* watch events reported */
};

/* A snapshot of the counters. Loop thread. */
void geo_get_stats(const struct geo *g, struct geo_stats *st);

#endif
