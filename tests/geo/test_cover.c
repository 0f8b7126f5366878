/* Great-circle distance and circle covers. */
#include "geo.h"

#include <criterion/criterion.h>
#include <math.h>
#include <string.h>

struct pair {
    const char *what;
    double lat1, lon1, lat2, lon2;
    double km; /* published great-circle distance */
};

static const struct pair pairs[] = {
    /* Wikipedia "Great-circle distance": BNA to LAX. */
    {"Nashville-Los Angeles", 36.12, -86.67, 33.94, -118.40, 2886.44},
    {"Paris-London", 48.8566, 2.3522, 51.5074, -0.1278, 343.5},
    {"New York-Los Angeles", 40.7128, -74.0060, 34.0522, -118.2437, 3935.7},
    {"Berlin-Munich", 52.5200, 13.4050, 48.1351, 11.5820, 504.4},
    {"Sydney-Melbourne", -33.8688, 151.2093, -37.8136, 144.9631, 713.4},
    {"Tokyo-San Francisco", 35.6762, 139.6503, 37.7749, -122.4194, 8270.0},
    {"quarter meridian", 0.0, 0.0, 90.0, 0.0, 10007.5},
    {"across the antimeridian", 0.0, 179.5, 0.0, -179.5, 111.2},
};

Test(distance, known_city_pairs_within_half_a_percent)
{
    for (size_t i = 0; i < sizeof(pairs) / sizeof(pairs[0]); i++) {
        const struct pair *p = &pairs[i];
        double d, back;
        cr_assert_eq(geo_distance(p->lat1, p->lon1, p->lat2, p->lon2, &d), RT_OK);
        cr_assert_eq(geo_distance(p->lat2, p->lon2, p->lat1, p->lon1, &back), RT_OK);
        cr_assert(fabs(d / 1000.0 - p->km) <= p->km * 0.005, "%s: %.1f km", p->what, d / 1000);
        cr_assert_float_eq(d, back, 1e-6);
    }
}

Test(distance, degenerate_points)
{
    double d;
    cr_assert_eq(geo_distance(10, 20, 10, 20, &d), RT_OK);
    cr_assert_eq(d, 0.0);
    cr_assert_eq(geo_distance(0, 180, 0, -180, &d), RT_OK);
    cr_assert(d < 1e-6, "the antimeridian is one line: %g", d);
    cr_assert_eq(geo_distance(90, 0, 90, 123, &d), RT_OK);
    cr_assert(d < 1e-6, "the pole is one point: %g", d);
    cr_assert_eq(geo_distance(0, 0, 0, 180, &d), RT_OK);
    cr_assert_float_eq(d, M_PI * GEO_EARTH_RADIUS_M, 1e-3, "antipodes");
    cr_assert_eq(geo_distance(NAN, 0, 0, 0, &d), RT_INVAL);
    cr_assert_eq(geo_distance(0, 0, 0, INFINITY, &d), RT_INVAL);
    cr_assert_eq(geo_distance(0, 0, -91, 0, &d), RT_INVAL);
}

/* Every point of the circle's rim (and centre) is in one of the cells. */
static void assert_rim_covered(double lat, double lon, double radius_m, int p,
                               char (*cells)[GEO_CELL_BUF], size_t n)
{
    for (int k = 0; k <= 360; k++) {
        double d = radius_m / GEO_EARTH_RADIUS_M, b = k * M_PI / 180.0;
        double la1 = lat * M_PI / 180.0, lo1 = lon * M_PI / 180.0;
        double la2 = asin(sin(la1) * cos(d) + cos(la1) * sin(d) * cos(b));
        double lo2 = lo1 + atan2(sin(b) * sin(d) * cos(la1), cos(d) - sin(la1) * sin(la2));
        double plat = la2 * 180.0 / M_PI, plon = fmod(lo2 * 180.0 / M_PI + 540.0, 360.0) - 180.0;
        if (k == 360) {
            plat = lat;
            plon = lon;
        }
        char h[GEO_CELL_BUF];
        cr_assert_eq(geo_encode(plat, plon, p, h), RT_OK, "%g %g", plat, plon);
        bool found = false;
        for (size_t i = 0; i < n && !found; i++)
            found = strcmp(cells[i], h) == 0;
        cr_assert(found, "rim point %g,%g (%s) not covered", plat, plon, h);
    }
}

Test(cover, small_circle_in_berlin_uses_index_precision)
{
    int p;
    size_t count;
    cr_assert_eq(geo_cover_precision(52.52, 13.405, 300, 6, 16, &p, &count), RT_OK);
    cr_assert_eq(p, 6);
    cr_assert(count >= 1 && count <= 16);
    char cells[16][GEO_CELL_BUF];
    size_t n;
    cr_assert_eq(geo_cover(52.52, 13.405, 300, 6, cells, 16, &n), RT_OK);
    cr_assert_eq(n, count);
    bool has_centre = false;
    for (size_t i = 0; i < n; i++)
        has_centre |= strcmp(cells[i], "u33dc0") == 0;
    cr_assert(has_centre);
    assert_rim_covered(52.52, 13.405, 300, 6, cells, n);
}

Test(cover, large_circle_goes_coarser_to_stay_within_the_cell_budget)
{
    int p;
    size_t count;
    cr_assert_eq(geo_cover_precision(52.52, 13.405, 50000, 6, 16, &p, &count), RT_OK);
    cr_assert(p < 6 && p >= 2, "p=%d", p);
    cr_assert(count <= 16);
    char cells[16][GEO_CELL_BUF];
    size_t n;
    cr_assert_eq(geo_cover(52.52, 13.405, 50000, p, cells, 16, &n), RT_OK);
    assert_rim_covered(52.52, 13.405, 50000, p, cells, n);
    /* The same circle at the index precision needs many more cells. */
    cr_assert_eq(geo_cover(52.52, 13.405, 50000, 6, cells, 16, &n), RT_TOO_BIG);
    cr_assert(n > 1000, "n=%zu", n);
}

Test(cover, circle_across_the_antimeridian_has_cells_on_both_sides)
{
    char cells[64][GEO_CELL_BUF];
    size_t n;
    int p;
    cr_assert_eq(geo_cover_precision(-16.5, 179.99, 20000, 6, 16, &p, NULL), RT_OK);
    cr_assert_eq(geo_cover(-16.5, 179.99, 20000, p, cells, 64, &n), RT_OK);
    bool east = false, west = false;
    for (size_t i = 0; i < n; i++) {
        struct geo_box b;
        geo_decode(cells[i], strlen(cells[i]), &b);
        east |= b.lon_max == 180.0;
        west |= b.lon_min == -180.0;
    }
    cr_assert(east && west);
    assert_rim_covered(-16.5, 179.99, 20000, p, cells, n);
    /* Centred exactly on +180 / -180, radius 0: both sides. */
    cr_assert_eq(geo_cover(10.0, 180.0, 0.0, 6, cells, 64, &n), RT_OK);
    cr_assert_eq(n, 2);
    cr_assert_eq(geo_cover(10.0, -180.0, 0.0, 6, cells, 64, &n), RT_OK);
    cr_assert_eq(n, 2);
}

Test(cover, circle_around_a_pole_covers_every_longitude)
{
    for (int pole = -1; pole <= 1; pole += 2) {
        double lat = pole * 89.9; /* 11 km from the pole, radius 30 km */
        int p;
        size_t count;
        cr_assert_eq(geo_cover_precision(lat, 45.0, 30000, 6, 16, &p, &count), RT_OK);
        char cells[64][GEO_CELL_BUF];
        size_t n;
        cr_assert_eq(geo_cover(lat, 45.0, 30000, p, cells, 64, &n), RT_OK);
        cr_assert_eq(n, count);
        double lon_total = 0;
        for (size_t i = 0; i < n; i++) {
            struct geo_box b;
            geo_decode(cells[i], strlen(cells[i]), &b);
            if (b.lat_max == 90.0 || b.lat_min == -90.0)
                lon_total += b.lon_max - b.lon_min;
        }
        cr_assert_float_eq(lon_total, 360.0, 1e-9, "pole %d", pole);
        assert_rim_covered(lat, 45.0, 30000, p, cells, n);
        /* Exactly on the pole. */
        cr_assert_eq(geo_cover(pole * 90.0, 0.0, 1000, 2, cells, 64, &n), RT_OK);
        cr_assert_eq(n, 32, "every column of the polar row at precision 2");
    }
}

Test(cover, rim_covered_for_random_circles_everywhere)
{
    unsigned seed = 7;
    static char cells[4096][GEO_CELL_BUF];
    for (int i = 0; i < 300; i++) {
        seed = seed * 1103515245u + 12345u;
        double lat = -90.0 + 180.0 * (double)(seed % 100003u) / 100003.0;
        seed = seed * 1103515245u + 12345u;
        double lon = -180.0 + 360.0 * (double)(seed % 100003u) / 100003.0;
        seed = seed * 1103515245u + 12345u;
        double r = exp(log(50000.0) * (double)(seed % 10007u) / 10007.0);
        int p;
        cr_assert_eq(geo_cover_precision(lat, lon, r, 1 + i % 8, 16, &p, NULL), RT_OK);
        size_t n;
        cr_assert_eq(geo_cover(lat, lon, r, p, cells, 4096, &n), RT_OK);
        cr_assert(n <= 16 || p == 1, "n=%zu p=%d", n, p);
        assert_rim_covered(lat, lon, r, p, cells, n);
    }
}

Test(cover, bad_circles_are_rejected)
{
    int p;
    size_t n;
    char cells[4][GEO_CELL_BUF];
    cr_assert_eq(geo_cover_precision(0, 0, -1, 6, 16, &p, &n), RT_INVAL);
    cr_assert_eq(geo_cover_precision(0, 0, NAN, 6, 16, &p, &n), RT_INVAL);
    cr_assert_eq(geo_cover_precision(0, 0, 50000.001, 6, 16, &p, &n), RT_INVAL);
    cr_assert_eq(geo_cover_precision(0, 0, INFINITY, 6, 16, &p, &n), RT_INVAL);
    cr_assert_eq(geo_cover_precision(NAN, 0, 10, 6, 16, &p, &n), RT_INVAL);
    cr_assert_eq(geo_cover_precision(0, 0, 10, 13, 16, &p, &n), RT_INVAL);
    cr_assert_eq(geo_cover(0, 181, 10, 6, cells, 4, &n), RT_INVAL);
    cr_assert_eq(geo_cover(0, 0, 10, 0, cells, 4, &n), RT_INVAL);
}
