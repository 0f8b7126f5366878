/*
 * cover.c: which cells cover a circle. Pure functions.
 *
 * A circle of angular radius d around latitude φ spans latitudes φ ± d and,
 * when it contains no pole, longitudes λ ± asin(sin d / cos φ) (the exact
 * extent of a spherical cap). The box is padded by GEO__PAD degrees so that
 * rounding never drops a point that the haversine puts inside: the cover is
 * a superset, and near() filters by exact distance anyway. A box that runs
 * past ±180 wraps; one that reaches a pole takes every longitude.
 */
#include "geo_int.h"

#include <math.h>

#define GEO__PAD 1e-7 /* degrees, about 1 cm; rounding errors are < 1e-11 */

bool geo__circle_ok(double lat, double lon, double radius_m)
{
    return geo__coord_ok(lat, lon) && radius_m >= 0.0 && radius_m <= GEO_RADIUS_MAX_M;
}

/* The padded bounding box of a valid circle (see geo__circle). Pure. */
void geo__circle_init(struct geo__circle *c, double lat, double lon, double radius_m)
{
    double d = radius_m / GEO_EARTH_RADIUS_M; /* radians */
    double d_deg = d / GEO__DEG;
    c->lat = lat;
    c->lon = lon;
    c->radius_m = radius_m;
    c->lat_min = lat - d_deg - GEO__PAD;
    c->lat_max = lat + d_deg + GEO__PAD;
    c->lon_min = -180.0;
    c->lon_max = 180.0;
    c->all_lon = true;
    if (c->lat_max >= 90.0 || c->lat_min <= -90.0) {
        c->lat_min = fmax(c->lat_min, -90.0);
        c->lat_max = fmin(c->lat_max, 90.0);
        return; /* a pole is inside (or within the pad) */
    }
    double ratio = sin(d) / cos(lat * GEO__DEG);
    if (ratio >= 1.0 - 1e-6)
        return; /* asin is ill-conditioned there; take every longitude */
    double d_lon = asin(ratio) / GEO__DEG;
    c->lon_min = lon - d_lon - GEO__PAD;
    c->lon_max = lon + d_lon + GEO__PAD;
    c->all_lon = false;
}

static uint32_t clamp_index(double x, uint64_t n)
{
    double f = floor(x);
    if (f < 0.0)
        return 0;
    if (f >= (double)n)
        return (uint32_t)(n - 1);
    return (uint32_t)f;
}

/* The rows and columns of precision p that cover the circle's box. Pure. */
void geo__span_at(const struct geo__circle *c, int p, struct geo__span *s)
{
    uint64_t rows = 1ull << GEO__LAT_BITS(p);
    uint64_t cols = 1ull << GEO__LON_BITS(p);
    double h = 180.0 / (double)rows, w = 360.0 / (double)cols;
    s->p = p;
    s->cols = cols;
    s->row0 = clamp_index((c->lat_min + 90.0) / h, rows);
    s->row1 = clamp_index((c->lat_max + 90.0) / h, rows);
    s->col0 = 0;
    s->ncols = cols;
    if (c->all_lon)
        return;
    /* Columns counted from lon -180, unwrapped: may be negative or >= cols. */
    int64_t c0 = (int64_t)floor((c->lon_min + 180.0) / w);
    int64_t c1 = (int64_t)floor((c->lon_max + 180.0) / w);
    if (c1 - c0 + 1 >= (int64_t)cols)
        return;
    int64_t m = c0 % (int64_t)cols;
    s->col0 = (uint32_t)(m < 0 ? m + (int64_t)cols : m);
    s->ncols = (uint64_t)(c1 - c0 + 1);
}

/* Cells in the span (rows x columns). Pure. */
uint64_t geo__span_count(const struct geo__span *s)
{
    return (uint64_t)(s->row1 - s->row0 + 1) * s->ncols;
}

/* The code of the i-th cell of the span, row by row. Pure. */
uint64_t geo__span_code(const struct geo__span *s, uint64_t i)
{
    uint32_t row = s->row0 + (uint32_t)(i / s->ncols);
    uint32_t col = (uint32_t)((s->col0 + i % s->ncols) % s->cols);
    return geo__interleave(row, col, s->p);
}

/* Whether the cell at (row, col) of the span's precision is in it. Pure. */
bool geo__span_has(const struct geo__span *s, uint32_t row, uint32_t col)
{
    if (row < s->row0 || row > s->row1)
        return false;
    uint64_t east = (col + s->cols - s->col0) % s->cols; /* columns east of col0 */
    return east < s->ncols;
}

/* The finest precision <= max_p whose span has <= max_cells cells, else 1. Pure. */
int geo__choose_precision(const struct geo__circle *c, int max_p, size_t max_cells)
{
    for (int p = max_p; p > 1; p--) {
        struct geo__span s;
        geo__span_at(c, p, &s);
        if (geo__span_count(&s) <= max_cells)
            return p;
    }
    return 1;
}

/*
 * Picks the precision of a circle's cover. Pure; any thread. RT_INVAL for a
 * bad circle or max_precision.
 */
rt_status geo_cover_precision(double lat, double lon, double radius_m, int max_precision,
                              size_t max_cells, int *precision, size_t *count)
{
    if (!geo__circle_ok(lat, lon, radius_m) || max_precision < 1 ||
        max_precision > GEO_PRECISION_MAX)
        return RT_INVAL;
    struct geo__circle c;
    geo__circle_init(&c, lat, lon, radius_m);
    *precision = geo__choose_precision(&c, max_precision, max_cells);
    if (count) {
        struct geo__span s;
        geo__span_at(&c, *precision, &s);
        uint64_t k = geo__span_count(&s);
        *count = k > SIZE_MAX ? SIZE_MAX : (size_t)k;
    }
    return RT_OK;
}

/*
 * Lists the cells of one precision that cover a circle. Pure; any thread.
 * RT_INVAL, RT_TOO_BIG (more than cap cells; *n says how many).
 */
rt_status geo_cover(double lat, double lon, double radius_m, int precision,
                    char (*cells)[GEO_CELL_BUF], size_t cap, size_t *n)
{
    *n = 0;
    if (!geo__circle_ok(lat, lon, radius_m) || precision < 1 || precision > GEO_PRECISION_MAX)
        return RT_INVAL;
    struct geo__circle c;
    struct geo__span s;
    geo__circle_init(&c, lat, lon, radius_m);
    geo__span_at(&c, precision, &s);
    uint64_t k = geo__span_count(&s);
    *n = k > SIZE_MAX ? SIZE_MAX : (size_t)k;
    if (k > cap)
        return RT_TOO_BIG;
    for (uint64_t i = 0; i < k; i++)
        geo__code_str(geo__span_code(&s, i), precision, cells[i]);
    return RT_OK;
}
