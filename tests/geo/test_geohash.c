/* Geohash encode / decode / neighbours: known vectors and edge cases. */
#include "geo.h"

#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

struct vector {
    double lat, lon;
    int precision;
    const char *hash;
};

/* Published vectors (Wikipedia, geohash.org, common test suites). */
static const struct vector vectors[] = {
    {52.5200, 13.4050, 6, "u33dc0"},         /* PROTOCOL.md: Berlin */
    {42.6, -5.6, 5, "ezs42"},                /* Wikipedia */
    {57.64911, 10.40744, 11, "u4pruydqqvj"}, /* Wikipedia / geohash.org */
    {37.8324, 112.5584, 9, "ww8p1r4t8"},
    {-25.382708, -49.265506, 12, "6gkzwgjzn820"},
    {40.7128, -74.0060, 6, "dr5reg"}, /* New York */
    {51.5074, -0.1278, 6, "gcpvj0"},  /* London */
    {-33.8688, 151.2093, 5, "r3gx2"}, /* Sydney */
    {0.0, 0.0, 1, "s"},               /* on both borders: north-east wins */
    {0.0, 0.0, 12, "s00000000000"},
    {-90.0, -180.0, 12, "000000000000"},
    {90.0, 180.0, 12, "zzzzzzzzzzzz"}, /* the last row / column */
    {-0.000001, -0.000001, 3, "7zz"},
    {90.0, -180.0, 4, "bpbp"},
    {-90.0, 180.0, 4, "pbpb"},
};

Test(geohash, encodes_known_vectors)
{
    for (size_t i = 0; i < sizeof(vectors) / sizeof(vectors[0]); i++) {
        char out[GEO_CELL_BUF];
        const struct vector *v = &vectors[i];
        cr_assert_eq(geo_encode(v->lat, v->lon, v->precision, out), RT_OK);
        cr_assert_str_eq(out, v->hash, "%g,%g p%d", v->lat, v->lon, v->precision);
    }
}

Test(geohash, decode_contains_the_point_and_prefixes_nest)
{
    for (size_t i = 0; i < sizeof(vectors) / sizeof(vectors[0]); i++) {
        const struct vector *v = &vectors[i];
        struct geo_box b;
        cr_assert_eq(geo_decode(v->hash, strlen(v->hash), &b), RT_OK);
        cr_assert(v->lat >= b.lat_min && v->lat <= b.lat_max, "%s", v->hash);
        cr_assert(v->lon >= b.lon_min && v->lon <= b.lon_max, "%s", v->hash);
        cr_assert_float_eq(b.lat, (b.lat_min + b.lat_max) / 2, 1e-12);
        for (size_t k = 1; k < strlen(v->hash); k++) {
            struct geo_box outer;
            cr_assert_eq(geo_decode(v->hash, k, &outer), RT_OK);
            cr_assert(outer.lat_min <= b.lat_min && outer.lat_max >= b.lat_max);
            cr_assert(outer.lon_min <= b.lon_min && outer.lon_max >= b.lon_max);
        }
    }
}

Test(geohash, ezs42_decodes_to_the_wikipedia_box)
{
    struct geo_box b;
    cr_assert_eq(geo_decode("ezs42", 5, &b), RT_OK);
    cr_assert_float_eq(b.lat, 42.605, 0.0001);
    cr_assert_float_eq(b.lon, -5.603, 0.001);
    cr_assert_float_eq(b.lat_max - b.lat_min, 180.0 / 4096, 1e-12);
    cr_assert_float_eq(b.lon_max - b.lon_min, 360.0 / 8192, 1e-12);
    cr_assert_eq(geo_decode("EZS42", 5, &b), RT_OK, "upper case is accepted");
}

Test(geohash, decode_then_encode_centre_round_trips_at_every_precision)
{
    unsigned seed = 12345;
    for (int i = 0; i < 5000; i++) {
        seed = seed * 1103515245u + 12345u;
        double lat = -90.0 + 180.0 * (double)(seed % 1000003u) / 1000003.0;
        seed = seed * 1103515245u + 12345u;
        double lon = -180.0 + 360.0 * (double)(seed % 1000003u) / 1000003.0;
        int p = 1 + i % GEO_PRECISION_MAX;
        char h[GEO_CELL_BUF], again[GEO_CELL_BUF];
        struct geo_box b;
        cr_assert_eq(geo_encode(lat, lon, p, h), RT_OK);
        cr_assert_eq(strlen(h), (size_t)p);
        cr_assert_eq(geo_decode(h, (size_t)p, &b), RT_OK);
        cr_assert(lat >= b.lat_min && lat < b.lat_max + 1e-12);
        cr_assert(lon >= b.lon_min && lon < b.lon_max + 1e-12);
        cr_assert_eq(geo_encode(b.lat, b.lon, p, again), RT_OK);
        cr_assert_str_eq(again, h);
        /* Each corner's lower-left belongs to the cell itself. */
        cr_assert_eq(geo_encode(b.lat_min, b.lon_min, p, again), RT_OK);
        cr_assert_str_eq(again, h);
    }
}

Test(geohash, equator_and_prime_meridian_borders_go_north_and_east)
{
    char h[GEO_CELL_BUF];
    cr_assert_eq(geo_encode(0.0, 0.0, 6, h), RT_OK);
    cr_assert_str_eq(h, "s00000");
    cr_assert_eq(geo_encode(-1e-12, 0.0, 6, h), RT_OK);
    cr_assert_str_eq(h, "kpbpbp");
    cr_assert_eq(geo_encode(0.0, -1e-12, 6, h), RT_OK);
    cr_assert_str_eq(h, "ebpbpb");
    cr_assert_eq(geo_encode(-1e-12, -1e-12, 6, h), RT_OK);
    cr_assert_str_eq(h, "7zzzzz");
    cr_assert_eq(geo_encode(-0.0, -0.0, 2, h), RT_OK, "negative zero is zero");
    cr_assert_str_eq(h, "s0");
}

static bool has(char n[8][GEO_CELL_BUF], size_t count, const char *h)
{
    for (size_t i = 0; i < count; i++)
        if (strcmp(n[i], h) == 0)
            return true;
    return false;
}

Test(geohash, neighbours_in_order_n_ne_e_se_s_sw_w_nw)
{
    char n[8][GEO_CELL_BUF];
    size_t count;
    cr_assert_eq(geo_neighbours("ezs42", 5, n, &count), RT_OK);
    cr_assert_eq(count, 8);
    const char *want[8] = {"ezs48", "ezs49", "ezs43", "ezs41", "ezs40", "ezefp", "ezefr", "ezefx"};
    for (int i = 0; i < 8; i++)
        cr_assert_str_eq(n[i], want[i], "direction %d", i);
}

Test(geohash, neighbours_across_the_equator_and_prime_meridian)
{
    char n[8][GEO_CELL_BUF];
    size_t count;
    cr_assert_eq(geo_neighbours("s00000", 6, n, &count), RT_OK);
    cr_assert_eq(count, 8);
    cr_assert(has(n, count, "kpbpbp"), "south of the equator");
    cr_assert(has(n, count, "ebpbpb"), "west of the meridian");
    cr_assert(has(n, count, "7zzzzz"), "south-west");
}

Test(geohash, neighbours_wrap_across_the_antimeridian)
{
    char h[GEO_CELL_BUF], west[GEO_CELL_BUF], n[8][GEO_CELL_BUF];
    size_t count;
    cr_assert_eq(geo_encode(10.0, 179.999, 5, h), RT_OK);
    cr_assert_eq(geo_encode(10.0, -179.999, 5, west), RT_OK);
    cr_assert_eq(geo_neighbours(h, 5, n, &count), RT_OK);
    cr_assert_eq(count, 8);
    cr_assert_str_eq(n[2], west, "east of +180 is -180");
    /* And back again. */
    cr_assert_eq(geo_neighbours(west, 5, n, &count), RT_OK);
    cr_assert_str_eq(n[6], h);
    /* Every neighbour's box touches the cell's (modulo 360). */
    struct geo_box b, nb;
    geo_decode(h, 5, &b);
    geo_neighbours(h, 5, n, &count);
    for (size_t i = 0; i < count; i++) {
        geo_decode(n[i], 5, &nb);
        bool lon_touch = nb.lon_max == b.lon_min || nb.lon_min == b.lon_max ||
                         nb.lon_min == b.lon_min || nb.lon_min == -180.0;
        cr_assert(lon_touch, "%s", n[i]);
    }
}

Test(geohash, cells_at_the_poles_have_five_neighbours)
{
    char n[8][GEO_CELL_BUF];
    size_t count;
    cr_assert_eq(geo_neighbours("zzzzzz", 6, n, &count), RT_OK, "north-east corner of the world");
    cr_assert_eq(count, 5);
    cr_assert(has(n, count, "bpbpbp"), "east wraps to lon -180 at the pole");
    cr_assert_eq(geo_neighbours("000000", 6, n, &count), RT_OK);
    cr_assert_eq(count, 5);
    cr_assert(has(n, count, "pbpbpb"), "west wraps to lon +180 at the south pole");
    cr_assert_eq(geo_neighbours("b", 1, n, &count), RT_OK);
    cr_assert_eq(count, 5);
    /* One row below the top: all eight. */
    cr_assert_eq(geo_neighbours("s", 1, n, &count), RT_OK);
    cr_assert_eq(count, 8);
    for (size_t i = 0; i < count; i++)
        for (size_t j = i + 1; j < count; j++)
            cr_assert_str_neq(n[i], n[j]);
}

Test(geohash, bad_input_is_rejected_not_crashed_on)
{
    char h[GEO_CELL_BUF], n[8][GEO_CELL_BUF];
    size_t count = 99;
    struct geo_box b;
    const double bad[] = {NAN, INFINITY, -INFINITY, 90.0000001, -90.0000001, 1e308, -1e308};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        cr_assert_eq(geo_encode(bad[i], 0.0, 6, h), RT_INVAL);
        cr_assert_str_eq(h, "");
    }
    cr_assert_eq(geo_encode(0.0, 180.0000001, 6, h), RT_INVAL);
    cr_assert_eq(geo_encode(0.0, NAN, 6, h), RT_INVAL);
    cr_assert_eq(geo_encode(0.0, 0.0, 0, h), RT_INVAL);
    cr_assert_eq(geo_encode(0.0, 0.0, 13, h), RT_INVAL);
    cr_assert_eq(geo_decode("", 0, &b), RT_INVAL);
    cr_assert_eq(geo_decode("u33a", 4, &b), RT_INVAL, "'a' is not in the alphabet");
    cr_assert_eq(geo_decode("u33i", 4, &b), RT_INVAL);
    cr_assert_eq(geo_decode("u3\0d", 4, &b), RT_INVAL);
    cr_assert_eq(geo_decode("0123456789bcd", 13, &b), RT_INVAL);
    cr_assert_eq(geo_decode(NULL, 3, &b), RT_INVAL);
    cr_assert_eq(geo_neighbours("!", 1, n, &count), RT_INVAL);
    cr_assert_eq(count, 0);
}
