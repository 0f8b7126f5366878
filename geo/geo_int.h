/*
 * geo_int.h: internals shared by the files of geo/ (and its unit tests). The
 * gateway includes geo.h only.
 *
 * Pieces:
 *   - cell codes: a geohash of precision p as an integer of 5p bits (the
 *     interleaved lon/lat bits, longitude first), and its row / column
 *     (geohash.c);
 *   - circles and spans: the bounding box of a circle and the rectangle of
 *     rows x columns that covers it at one precision (cover.c);
 *   - an AVL tree of cells (tree.c; the hash tables are rt_htab from
 *     common/rt.h);
 *   - the index types (index.c, near.c, watch.c).
 *
 * Threads: the math is pure; the index runs on the loop thread.
 */
#ifndef GEO_INT_H
#define GEO_INT_H

#include "geo.h"

#define GEO__DEG (3.14159265358979323846 / 180.0)

/* ------------------------------------------------------------------------ */
/* Cell codes (geohash.c)                                                    */

/* Bits of latitude / longitude in a geohash of precision p. */
#define GEO__LAT_BITS(p) ((unsigned)(5 * (p)) / 2u)
#define GEO__LON_BITS(p) ((unsigned)(5 * (p) + 1) / 2u)

/* A finite latitude in [-90, 90] and longitude in [-180, 180]. */
bool geo__coord_ok(double lat, double lon);
/* Row (from the south) and column (from lon -180) of a valid point at precision p. */
void geo__rowcol(double lat, double lon, int p, uint32_t *row, uint32_t *col);
uint64_t geo__interleave(uint32_t row, uint32_t col, int p);
void geo__deinterleave(uint64_t code, int p, uint32_t *row, uint32_t *col);
/* The code of a valid point at precision p. */
uint64_t geo__code(double lat, double lon, int p);
/* The box of a row / column at precision p. */
void geo__rowcol_box(uint32_t row, uint32_t col, int p, struct geo_box *box);
/* The code of a cell string (1..12 characters, upper case accepted), or false. */
bool geo__parse_cell(const char *cell, size_t len, uint64_t *code);
/* The string of a code into out (p characters and a NUL). */
void geo__code_str(uint64_t code, int p, char out[GEO_CELL_BUF]);
/* Haversine without checks (the index's inputs are already valid). */
double geo__haversine(double lat1, double lon1, double lat2, double lon2);

/* ------------------------------------------------------------------------ */
/* Circles and spans (cover.c)                                               */

/* A circle and a bounding box that contains it, padded against rounding. */
struct geo__circle {
    double lat, lon, radius_m;
    double lat_min, lat_max; /* clamped to [-90, 90] */
    double lon_min, lon_max; /* may pass -180 / 180: the box wraps */
    bool all_lon;            /* contains a pole, or nearly: every longitude */
};

/* The cells of one precision that cover a circle: rows x (wrapping) columns. */
struct geo__span {
    int p;
    uint32_t row0, row1; /* inclusive */
    uint32_t col0;       /* first column; the span runs east, wrapping */
    uint64_t ncols;      /* columns in the span, 1..cols */
    uint64_t cols;       /* columns at this precision */
};

/* True for a valid centre and 0 <= radius_m <= GEO_RADIUS_MAX_M. */
bool geo__circle_ok(double lat, double lon, double radius_m);
void geo__circle_init(struct geo__circle *c, double lat, double lon, double radius_m);
void geo__span_at(const struct geo__circle *c, int p, struct geo__span *s);
uint64_t geo__span_count(const struct geo__span *s);
/* The i-th cell of the span (0 <= i < count), south to north, west to east. */
uint64_t geo__span_code(const struct geo__span *s, uint64_t i);
bool geo__span_has(const struct geo__span *s, uint32_t row, uint32_t col);
/* The finest precision <= max_p with at most max_cells cells, else 1. */
int geo__choose_precision(const struct geo__circle *c, int max_p, size_t max_cells);

/* The hash tables are rt_htabs (common/rt.h): the owner compares keys. */
#define GEO__CONTAINER(ptr, type, member) RT_CONTAINER(ptr, type, member)

/* ------------------------------------------------------------------------ */
/* Index types                                                               */

struct geo_member;

/* An occupied cell at the index precision; in its space's hash and tree. */
struct geo_cell {
    struct rt_hnode hnode;
    struct geo_cell *left, *right; /* AVL, by code */
    uint64_t code;
    uint32_t row, col;
    struct geo_member *head; /* members, doubly linked */
    int32_t height;
    uint32_t count;
};

/* A connection that owns members or watches. */
struct geo_conn {
    struct rt_hnode hnode;
    uint64_t id;
    struct geo_member *members;
    struct geo_watch *watches;
};

struct geo_member {
    struct rt_hnode hnode; /* in space->members, by client */
    struct geo_member *cell_prev, *cell_next;
    struct geo_member *conn_prev, *conn_next;
    struct geo_space *space;
    struct geo_cell *cell;
    struct geo_conn *conn;
    double lat, lon;
    uint64_t version;
    uint8_t *meta; /* NULL when meta_len is 0 */
    uint32_t meta_len;
    int32_t meta_enc;
    uint16_t client_len, user_len;
    char strs[]; /* client NUL user NUL */
};

/* Cells holding watch registrations: key = code | precision << 60. */
struct geo_wcell {
    struct rt_hnode hnode;
    uint64_t key;
    struct geo_wreg *head;
};

/* One watch registered in one cell. */
struct geo_wreg {
    struct geo_wreg *prev, *next;
    struct geo_wcell *wcell;
    struct geo_watch *watch;
};

struct geo_watch {
    struct rt_hnode hnode; /* in geo->watches, by id */
    struct geo_watch *conn_prev, *conn_next;
    struct geo_space *space;
    struct geo_conn *conn;
    uint64_t id;
    uint64_t stamp; /* last event pass that looked at it */
    double lat, lon, radius_m;
    int p; /* precision of its cells */
    size_t nregs;
    struct geo_wreg regs[];
};

struct geo_space {
    struct rt_hnode hnode;  /* in geo->spaces, by name */
    struct rt_htab members; /* by client id */
    struct rt_htab cells;   /* by code */
    struct geo_cell *tree;  /* the same cells, ordered */
    struct rt_htab wcells;  /* by key */
    size_t nmembers, nwatches;
    size_t wregs_at[GEO_PRECISION_MAX + 1]; /* registrations per precision */
    size_t name_len;
    char name[GEO_SPACE_MAX + 1];
};

struct geo {
    int precision;
    size_t cover_max_cells;
    size_t max_members, max_watches, max_spaces;
    geo_event_fn on_event;
    void *arg;
    struct rt_htab spaces, conns, watches;
    uint64_t next_watch_id;
    uint64_t stamp;
    bool busy; /* a callback is running: no changes */
    struct geo_stats st;
};

/* AVL tree of cells (tree.c). Both return the new root. */
struct geo_cell *geo__tree_insert(struct geo_cell *root, struct geo_cell *n);
struct geo_cell *geo__tree_remove(struct geo_cell *root, struct geo_cell *n);
/* The cell with the smallest code >= key, or NULL. */
const struct geo_cell *geo__tree_ceil(const struct geo_cell *root, uint64_t key);
/* Calls fn on every cell with lo <= code < hi, in order. */
void geo__tree_range(struct geo_cell *root, uint64_t lo, uint64_t hi,
                     void (*fn)(struct geo_cell *c, void *arg), void *arg);

/* index.c */
struct geo_space *geo__space_find(const struct geo *g, const char *name, size_t len);
rt_status geo__space_get(struct geo *g, const char *name, size_t len, struct geo_space **out);
/* Frees the space if it holds neither members nor watches. */
void geo__space_release(struct geo *g, struct geo_space *sp);
rt_status geo__conn_get(struct geo *g, uint64_t id, struct geo_conn **out);
struct geo_conn *geo__conn_find(const struct geo *g, uint64_t id);
void geo__conn_release(struct geo *g, struct geo_conn *c);
struct geo_cell *geo__cell_find(const struct geo_space *sp, uint64_t code);
void geo__member_view(const struct geo_member *m, struct geo_member_view *v);
bool geo__space_name_ok(const char *name, size_t len);

/* watch.c */
/*
 * Reports the events of one member change: it was at (old) if had_old, and
 * is at (new) if has_new. Codes are at the index precision.
 */
void geo__emit(struct geo *g, struct geo_member *m, bool had_old, double old_lat, double old_lon,
               uint64_t old_code, bool has_new);
/* Frees a watch without events. */
void geo__watch_free(struct geo *g, struct geo_watch *w);

#endif
