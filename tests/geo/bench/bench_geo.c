/*
 * bench_geo: near() latency, memory per member and set() rate of the geo
 * index, printed as one JSON object. Not run by ctest; build it in a Release
 * tree (no sanitizers) and run it by hand:
 *
 *   cmake -S . -B build-rel -DCMAKE_BUILD_TYPE=Release
 *   cmake --build build-rel --target bench_geo
 *   ./build-rel/geo/bench_geo [max_members [cover_max_cells]]
 *
 * For 10k, 100k and 1M members in one space, placed uniformly over a 50 km x
 * 50 km city and over the whole sphere: bytes per member (glibc's malloc
 * accounting, so allocator overhead included; 16 bytes of meta each), near()
 * p50 / p99 at 1 km and 50 km with limit 50 around random members, and
 * set() rates for inserts and for moves of up to 50 m, the latter also with
 * 1000 watches of 1 km (events counted, no callback work).
 */
#include "geo.h"

#include <malloc.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define QUERIES 2000
#define MOVES   1000000
#define WATCHES 1000

static uint64_t rng_state = 0x1234567;

static double unit(void)
{
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    return (double)(z >> 11) / 9007199254740992.0;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static size_t heap_bytes(void)
{
    struct mallinfo2 mi = mallinfo2();
    return mi.uordblks + mi.hblkhd;
}

static void place(bool city, double *lat, double *lon)
{
    if (city) {
        *lat = 52.52 + (unit() - 0.5) * 0.4497; /* 50 km */
        *lon = 13.405 + (unit() - 0.5) * 0.7384;
    } else {
        *lat = asin(unit() * 2.0 - 1.0) * 180.0 / M_PI;
        *lon = unit() * 360.0 - 180.0;
    }
}

struct pos {
    double lat, lon;
};

static void set_member(struct geo *g, size_t i, double lat, double lon)
{
    char client[24], user[24];
    static const uint8_t meta[] = "{\"car\":\"B-1234\"}";
    struct geo_member_in in = {.space = "drivers",
                               .space_len = 7,
                               .conn = i,
                               .lat = lat,
                               .lon = lon,
                               .meta = meta,
                               .meta_len = 16,
                               .meta_enc = 1};
    in.client_len = (size_t)snprintf(client, sizeof(client), "c%08zx", i * 2654435761u);
    in.user_len = (size_t)snprintf(user, sizeof(user), "u%zu", i);
    in.client = client;
    in.user = user;
    if (geo_set(g, &in, NULL) != RT_OK) {
        fprintf(stderr, "geo_set failed\n");
        exit(1);
    }
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* p50 / p99 of near() in microseconds, and the mean number of hits. */
static void bench_near(struct geo *g, const struct pos *p, size_t n, double radius, double *p50,
                       double *p99, double *hits_mean)
{
    static struct geo_hit hits[50];
    static double lat_us[QUERIES];
    double total = 0;
    for (size_t q = 0; q < QUERIES; q++) {
        const struct pos *c = &p[(size_t)(unit() * (double)n)];
        size_t got;
        double t0 = now_s();
        geo_near(g, "drivers", 7, c->lat, c->lon, radius, hits, 50, &got);
        lat_us[q] = (now_s() - t0) * 1e6;
        total += (double)got;
    }
    qsort(lat_us, QUERIES, sizeof(double), cmp_double);
    *p50 = lat_us[QUERIES / 2];
    *p99 = lat_us[QUERIES * 99 / 100];
    *hits_mean = total / QUERIES;
}

static double bench_moves(struct geo *g, struct pos *p, size_t n)
{
    double t0 = now_s();
    for (size_t k = 0; k < MOVES; k++) {
        size_t i = (size_t)(unit() * (double)n);
        double lat = p[i].lat + (unit() - 0.5) * 0.0009; /* up to ~50 m */
        double lon = p[i].lon + (unit() - 0.5) * 0.0009;
        if (lat > 90 || lat < -90 || lon > 180 || lon < -180)
            continue;
        set_member(g, i, lat, lon);
        p[i].lat = lat;
        p[i].lon = lon;
    }
    return MOVES / (now_s() - t0);
}

static struct geo_config config;

static void run(size_t n, bool city, bool first)
{
    struct pos *p = malloc(n * sizeof(*p));
    struct geo *g;
    size_t before = heap_bytes();
    if (!p || geo_create(&config, &g) != RT_OK)
        exit(1);
    double t0 = now_s();
    for (size_t i = 0; i < n; i++) {
        place(city, &p[i].lat, &p[i].lon);
        set_member(g, i, p[i].lat, p[i].lon);
    }
    double insert_rate = (double)n / (now_s() - t0);
    double bytes = (double)(heap_bytes() - before) / (double)n;
    double a50, a99, ah, b50, b99, bh;
    bench_near(g, p, n, 1000.0, &a50, &a99, &ah);
    bench_near(g, p, n, 50000.0, &b50, &b99, &bh);
    double move_rate = bench_moves(g, p, n);
    struct geo_stats st;
    geo_get_stats(g, &st);
    uint64_t cells = st.cells, events_before = st.events;
    /* The same moves with 1000 watches of 1 km around random members. */
    for (size_t w = 0; w < WATCHES; w++) {
        const struct pos *c = &p[(size_t)(unit() * (double)n)];
        uint64_t id;
        if (geo_watch_add(g, "drivers", 7, c->lat, c->lon, 1000.0, w, &id) != RT_OK)
            exit(1);
    }
    double watched_rate = bench_moves(g, p, n);
    geo_get_stats(g, &st);
    double events_per_move = (double)(st.events - events_before) / MOVES;
    printf(
        "%s    {\"members\": %zu, \"area\": \"%s\", \"cells\": %llu, "
        "\"bytes_per_member\": %.0f,\n"
        "     \"near_1km_limit50\": {\"p50_us\": %.1f, \"p99_us\": %.1f, \"hits_mean\": %.1f},\n"
        "     \"near_50km_limit50\": {\"p50_us\": %.1f, \"p99_us\": %.1f, \"hits_mean\": %.1f},\n"
        "     \"set_inserts_per_s\": %.0f, \"set_moves_per_s\": %.0f,\n"
        "     \"set_moves_per_s_1000_watches\": %.0f, \"events_per_move\": %.3f}",
        first ? "" : ",\n", n, city ? "city_50km" : "world", (unsigned long long)cells, bytes, a50,
        a99, ah, b50, b99, bh, insert_rate, move_rate, watched_rate, events_per_move);
    fflush(stdout);
    geo_destroy(g);
    free(p);
}

int main(int argc, char **argv)
{
    size_t max = argc > 1 ? (size_t)strtoull(argv[1], NULL, 10) : 1000000;
    config.cover_max_cells = argc > 2 ? (size_t)strtoull(argv[2], NULL, 10) : GEO_COVER_CELLS;
    printf("{\"precision\": %d, \"cover_max_cells\": %zu, \"queries\": %d, \"moves\": %d,\n"
           " \"runs\": [\n",
           GEO_PRECISION_DEFAULT, config.cover_max_cells, QUERIES, MOVES);
    bool first = true;
    for (size_t n = 10000; n <= max; n *= 10) {
        run(n, true, first);
        run(n, false, false);
        first = false;
    }
    printf("\n ]}\n");
    return 0;
}
