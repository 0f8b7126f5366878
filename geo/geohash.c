/*
 * geohash.c: geohash strings, their integer codes, rows and columns, and the
 * great-circle distance. Pure functions.
 *
 * A geohash of precision p is 5p bits taken alternately from the longitude
 * (first) and the latitude, each bit halving the interval ([-180, 180] and
 * [-90, 90]). The interval ends and midpoints are dyadic fractions of 180
 * and 360, exact in a double, so the bisection below classifies points on a
 * border exactly (into the upper half), with no rounding.
 */
#include "geo_int.h"

#include <math.h>
#include <string.h>

static const char base32[] = "0123456789bcdefghjkmnpqrstuvwxyz";

/* A finite latitude in [-90, 90] and longitude in [-180, 180]. Pure. */
bool geo__coord_ok(double lat, double lon)
{
    /* NaN fails every comparison, infinities fail the range. */
    return lat >= -90.0 && lat <= 90.0 && lon >= -180.0 && lon <= 180.0;
}

static uint32_t bisect(double v, double lo, double hi, unsigned bits)
{
    uint32_t idx = 0;
    for (unsigned i = 0; i < bits; i++) {
        double mid = (lo + hi) / 2.0;
        idx <<= 1;
        if (v >= mid) {
            idx |= 1u;
            lo = mid;
        } else {
            hi = mid;
        }
    }
    return idx;
}

/* Row and column of a valid point at precision p, by exact bisection. Pure. */
void geo__rowcol(double lat, double lon, int p, uint32_t *row, uint32_t *col)
{
    *row = bisect(lat, -90.0, 90.0, GEO__LAT_BITS(p));
    *col = bisect(lon, -180.0, 180.0, GEO__LON_BITS(p));
}

/* The code of (row, col) at precision p: bits alternate, longitude first. Pure. */
uint64_t geo__interleave(uint32_t row, uint32_t col, int p)
{
    unsigned lat_left = GEO__LAT_BITS(p), lon_left = GEO__LON_BITS(p);
    uint64_t code = 0;
    for (int k = 0; k < 5 * p; k++) {
        code <<= 1;
        if (k % 2 == 0)
            code |= (col >> --lon_left) & 1u;
        else
            code |= (row >> --lat_left) & 1u;
    }
    return code;
}

/* The row and column of a code of precision p. Pure. */
void geo__deinterleave(uint64_t code, int p, uint32_t *row, uint32_t *col)
{
    uint32_t r = 0, c = 0;
    for (int k = 0; k < 5 * p; k++) {
        uint32_t bit = (uint32_t)(code >> (5 * p - 1 - k)) & 1u;
        if (k % 2 == 0)
            c = (c << 1) | bit;
        else
            r = (r << 1) | bit;
    }
    *row = r;
    *col = c;
}

/* The code of a valid point at precision p. Pure. */
uint64_t geo__code(double lat, double lon, int p)
{
    uint32_t row, col;
    geo__rowcol(lat, lon, p, &row, &col);
    return geo__interleave(row, col, p);
}

/* The geohash string of a code (p characters and a NUL). Pure. */
void geo__code_str(uint64_t code, int p, char out[GEO_CELL_BUF])
{
    for (int i = 0; i < p; i++)
        out[i] = base32[(code >> (5 * (p - 1 - i))) & 31u];
    out[p] = '\0';
}

/* The code of a cell string, or false if it is not one. */
bool geo__parse_cell(const char *cell, size_t len, uint64_t *code)
{
    if (!cell || len < 1 || len > GEO_PRECISION_MAX)
        return false;
    uint64_t c = 0;
    for (size_t i = 0; i < len; i++) {
        char ch = cell[i];
        if (ch >= 'A' && ch <= 'Z')
            ch = (char)(ch - 'A' + 'a');
        const char *hit = ch ? strchr(base32, ch) : NULL;
        if (!hit)
            return false;
        c = (c << 5) | (uint64_t)(hit - base32);
    }
    *code = c;
    return true;
}

/*
 * Encodes a point as a geohash string. Pure; any thread. RT_INVAL for a bad
 * coordinate or precision.
 */
rt_status geo_encode(double lat, double lon, int precision, char out[GEO_CELL_BUF])
{
    out[0] = '\0';
    if (!geo__coord_ok(lat, lon) || precision < 1 || precision > GEO_PRECISION_MAX)
        return RT_INVAL;
    geo__code_str(geo__code(lat, lon, precision), precision, out);
    return RT_OK;
}

/* The box of a row / column at precision p. */
void geo__rowcol_box(uint32_t row, uint32_t col, int p, struct geo_box *box)
{
    double h = 180.0 / (double)(1ull << GEO__LAT_BITS(p));
    double w = 360.0 / (double)(1ull << GEO__LON_BITS(p));
    box->lat_min = -90.0 + h * row;
    box->lat_max = box->lat_min + h;
    box->lon_min = -180.0 + w * col;
    box->lon_max = box->lon_min + w;
    box->lat = box->lat_min + h / 2.0;
    box->lon = box->lon_min + w / 2.0;
}

/* Decodes a geohash string into its box. Pure; any thread. RT_INVAL. */
rt_status geo_decode(const char *cell, size_t len, struct geo_box *box)
{
    uint64_t code;
    if (!geo__parse_cell(cell, len, &code))
        return RT_INVAL;
    int p = (int)len;
    uint32_t row, col;
    geo__deinterleave(code, p, &row, &col);
    geo__rowcol_box(row, col, p, box);
    return RT_OK;
}

/*
 * The existing neighbours of a cell, N first and clockwise. Pure; any
 * thread. RT_INVAL for a bad cell.
 */
rt_status geo_neighbours(const char *cell, size_t len, char out[8][GEO_CELL_BUF], size_t *n)
{
    static const int d_row[8] = {1, 1, 0, -1, -1, -1, 0, 1};
    static const int d_col[8] = {0, 1, 1, 1, 0, -1, -1, -1};
    uint64_t code;
    *n = 0;
    if (!geo__parse_cell(cell, len, &code))
        return RT_INVAL;
    int p = (int)len;
    uint32_t row, col;
    geo__deinterleave(code, p, &row, &col);
    int64_t rows = (int64_t)1 << GEO__LAT_BITS(p), cols = (int64_t)1 << GEO__LON_BITS(p);
    for (int i = 0; i < 8; i++) {
        int64_t r = (int64_t)row + d_row[i];
        if (r < 0 || r >= rows)
            continue; /* beyond a pole */
        int64_t c = ((int64_t)col + d_col[i] + cols) % cols;
        geo__code_str(geo__interleave((uint32_t)r, (uint32_t)c, p), p, out[(*n)++]);
    }
    return RT_OK;
}

/* Great-circle distance in metres of two valid points, without checks. Pure. */
double geo__haversine(double lat1, double lon1, double lat2, double lon2)
{
    double s_lat = sin((lat2 - lat1) * GEO__DEG / 2.0);
    double s_lon = sin((lon2 - lon1) * GEO__DEG / 2.0);
    double a = s_lat * s_lat + cos(lat1 * GEO__DEG) * cos(lat2 * GEO__DEG) * s_lon * s_lon;
    if (a > 1.0)
        a = 1.0;
    return 2.0 * GEO_EARTH_RADIUS_M * asin(sqrt(a));
}

/* Haversine distance in metres. Pure; any thread. RT_INVAL for a bad point. */
rt_status geo_distance(double lat1, double lon1, double lat2, double lon2, double *metres)
{
    if (!geo__coord_ok(lat1, lon1) || !geo__coord_ok(lat2, lon2)) {
        *metres = 0.0;
        return RT_INVAL;
    }
    *metres = geo__haversine(lat1, lon1, lat2, lon2);
    return RT_OK;
}

/* "join", "move", "leave". */
const char *geo_event_name(enum geo_event ev)
{
    switch (ev) {
    case GEO_EV_JOIN:
        return "join";
    case GEO_EV_MOVE:
        return "move";
    case GEO_EV_LEAVE:
        return "leave";
    }
    return "unknown";
}
