/*
 * scen_selftest.c: the --self-test checks of the presence/churn/storm
 * pieces that need no server: the geo event and near reply readers, the
 * geo.set encoder, the random walk, and the options with their presets.
 */
#include "scen.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static int n_checks, n_failures;

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        n_checks++;                                                                                \
        if (!(cond)) {                                                                             \
            n_failures++;                                                                          \
            fprintf(stderr, "self-test: %s:%d: %s\n", __FILE__, __LINE__, #cond);                  \
        }                                                                                          \
    } while (0)

static bool event_of(const char *s, int *kind, bool *has_t, uint64_t *t)
{
    return sc_geo_event((const uint8_t *)s, strlen(s), kind, has_t, t);
}

static void test_geo_reading(void)
{
    int kind = -9;
    bool has_t = false;
    uint64_t t = 0;
    CHECK(event_of("{\"type\":\"geo\",\"watch\":\"w1\",\"event\":\"move\",\"member\":{\"client\":"
                   "\"c1\",\"user\":\"u\",\"lat\":52.5,\"lon\":13.4,\"meta\":{\"t\":"
                   "18446744073709551615}}}",
                   &kind, &has_t, &t));
    CHECK(kind == 1 && has_t && t == UINT64_MAX);
    CHECK(event_of("{\"type\":\"geo\",\"event\":\"join\",\"member\":{\"meta\":{\"t\":7}}}", &kind,
                   &has_t, &t));
    CHECK(kind == 0 && has_t && t == 7);
    CHECK(event_of("{\"type\":\"geo\",\"event\":\"leave\",\"member\":{\"client\":\"c\"}}", &kind,
                   &has_t, &t));
    CHECK(kind == 2 && !has_t);
    /* not an event: a reply, another type, an unknown event kind, meta without digits */
    CHECK(!event_of("{\"type\":\"reply\",\"id\":3,\"ok\":true}", &kind, &has_t, &t));
    CHECK(!event_of("{\"type\":\"geox\",\"event\":\"join\"}", &kind, &has_t, &t));
    CHECK(!event_of("{\"type\":\"geo\",\"event\":\"jump\"}", &kind, &has_t, &t));
    CHECK(event_of("{\"type\":\"geo\",\"event\":\"move\",\"member\":{\"meta\":{\"t\":\"x\"}}}",
                   &kind, &has_t, &t) &&
          !has_t);
    /* truncated right after the key */
    CHECK(event_of("{\"type\":\"geo\",\"event\":\"move\",\"meta\":{\"t\":", &kind, &has_t, &t) &&
          !has_t);
    const char *near = "{\"type\":\"reply\",\"id\":4,\"ok\":true,\"members\":[{\"client\":\"a\"},"
                       "{\"client\":\"b\"},{\"client\":\"c\",\"meta\":{\"t\":1}}]}";
    CHECK(sc_count_members((const uint8_t *)near, strlen(near)) == 3);
    const char *none = "{\"type\":\"reply\",\"id\":4,\"ok\":true,\"members\":[]}";
    CHECK(sc_count_members((const uint8_t *)none, strlen(none)) == 0);
}

static void test_geo_set_encoding(void)
{
    uint8_t buf[256];
    struct lt_out o = {.p = buf, .len = 0, .cap = sizeof buf - 1};
    sc_enc_geo_set(&o, 42, "drivers", 52.52, -13.405, 123456789012345ull);
    buf[o.len] = 0;
    CHECK(!o.overflow);
    CHECK(strcmp((char *)buf,
                 "{\"type\":\"geo.set\",\"id\":42,\"space\":\"drivers\",\"lat\":"
                 "52.520000,\"lon\":-13.405000,\"meta\":{\"t\":123456789012345}}\n") == 0);
    size_t pos = 0;
    struct lt_smsg m;
    CHECK(lt_scan_json(buf, o.len, &pos, &m) == LT_OK && m.has_id && m.id == 42 && pos > 0);
    struct lt_out small = {.p = buf, .len = 0, .cap = 20};
    sc_enc_geo_set(&small, 1, "s", 0, 0, 0);
    CHECK(small.overflow && small.len == 0);
}

static void test_walk(void)
{
    double lat = 52.52, lon = 13.405;
    const double lo_lat = 52.5, hi_lat = 52.54, lo_lon = 13.37, hi_lon = 13.44;
    bool inside = true, step_ok = true;
    uint64_t x = 88172645463325252ull;
    for (int i = 0; i < 20000; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        double a = (double)(x % 100000) / 100000.0 * 6.283185307179586;
        double plat = lat, plon = lon;
        sc_walk(&lat, &lon, a, 50, lo_lat, hi_lat, lo_lon, hi_lon);
        if (lat < lo_lat || lat > hi_lat || lon < lo_lon || lon > hi_lon)
            inside = false;
        double dy = (lat - plat) * 111320.0;
        double dx = (lon - plon) * 111320.0 * cos(plat * 3.14159265358979 / 180);
        if (sqrt(dx * dx + dy * dy) > 50.5) /* a reflection only shortens the step */
            step_ok = false;
    }
    CHECK(inside);
    CHECK(step_ok);
}

static void test_options(void)
{
    struct lt_config *cfg = calloc(1, sizeof *cfg);
    char err[256];
    if (!cfg)
        return;
    cfg->connect_rate = 2000;
    cfg->setup_timeout_s = 30;
    cfg->duration_s = 10;
    cfg->max_handshaking = 256;
    CHECK(lt_parse_url(cfg, "ws://127.0.0.1:9/ws", err, sizeof err));
    CHECK(lt_option_set(cfg, "--scenario", "presence") == LT_OPTION_SET &&
          cfg->scenario == LT_SC_PRESENCE && lt_scen_own(cfg->scenario));
    CHECK(lt_scen_own(LT_SC_STORM) && !lt_scen_own(LT_SC_FANOUT));
    CHECK(lt_option_set(cfg, "--setters", "30") == LT_OPTION_SET && cfg->sc.setters == 30);
    CHECK(lt_option_set(cfg, "--setters", "1.5") == LT_OPTION_BAD);
    CHECK(lt_option_set(cfg, "--setters", "0") == LT_OPTION_BAD);
    CHECK(lt_option_set(cfg, "--center", "52.5,13.4") == LT_OPTION_SET);
    CHECK(lt_option_set(cfg, "--center", "91,0") == LT_OPTION_BAD);
    CHECK(lt_option_set(cfg, "--space", "bad space") == LT_OPTION_BAD);
    CHECK(lt_option_set(cfg, "--radius-m", "60000") == LT_OPTION_BAD);
    CHECK(lt_option_set(cfg, "--no-such-option", "1") == LT_OPTION_UNKNOWN);
    CHECK(lt_option_set(cfg, "--url2", "ws://127.0.0.1:10/x") == LT_OPTION_SET);
    CHECK(lt_scen_check(cfg));
    CHECK(cfg->sc.queriers == 10 && cfg->sc.query_rate == 200 && cfg->sc.radius_m == 500 &&
          cfg->sc.near_limit == 50 && strcmp(cfg->sc.space, "load") == 0 &&
          strcmp(cfg->sc.path2, "/x") == 0 && cfg->sc.dst2_len > 0);
    CHECK(lt_option_set(cfg, "--query-rate", "0") == LT_OPTION_SET);
    cfg->sc.queriers = 0;
    CHECK(lt_scen_check(cfg) && cfg->sc.queriers == 0 && cfg->sc.query_rate == 0);
    CHECK(lt_option_set(cfg, "--url2", "ws://10.0.0.1:10/x") == LT_OPTION_SET);
    CHECK(!lt_scen_check(cfg)); /* loopback only, as --url */
    cfg->sc.url2[0] = 0;
    cfg->codec = LT_CODEC_MSGPACK;
    CHECK(!lt_scen_check(cfg));
    cfg->codec = LT_CODEC_JSON;
    cfg->scenario = LT_SC_STORM;
    cfg->subs = 0;
    CHECK(lt_scen_check(cfg) && cfg->subs == 1000 && cfg->sc.hold_s == 1);
    cfg->subs = LT_SCEN_MAX_CONNS + 1;
    CHECK(!lt_scen_check(cfg));
    free(cfg);
}

int lt_scen_selftest(int *checks)
{
    n_checks = n_failures = 0;
    test_geo_reading();
    test_geo_set_encoding();
    test_walk();
    test_options();
    *checks += n_checks;
    return n_failures;
}
