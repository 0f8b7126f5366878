/*
 * config.c: what the parent and the workers share about a run: the target
 * URL (loopback only), source addresses, channel names, how connections
 * are split over workers; plus the clock and the pipe messages.
 */
#include "load.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

uint64_t lt_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * LT_NS_PER_S + (uint64_t)ts.tv_nsec;
}

const char *lt_scenario_name(enum lt_scenario s)
{
    switch (s) {
    case LT_SC_FANOUT:
        return "fanout";
    case LT_SC_CHANNELS:
        return "channels";
    case LT_SC_IDLE:
        return "idle";
    case LT_SC_PRESENCE:
        return "presence";
    case LT_SC_CHURN:
        return "churn";
    case LT_SC_STORM:
        return "storm";
    }
    return "?";
}

void lt_channel_name(const struct lt_config *cfg, uint32_t c, char *out, size_t cap)
{
    if (cfg->scenario == LT_SC_FANOUT)
        snprintf(out, cap, "%s.fanout", cfg->channel_prefix);
    else
        snprintf(out, cap, "%s.c%u", cfg->channel_prefix, c);
}

const char *lt_nats_prefix(const struct lt_config *cfg)
{
    return cfg->durable_nats ? LT_SUBJ_DUR : LT_SUBJ_EPH;
}

void lt_nats_subject(const struct lt_config *cfg, uint32_t c, char *out, size_t cap)
{
    if (cfg->scenario == LT_SC_FANOUT)
        snprintf(out, cap, "%s%s.fanout", lt_nats_prefix(cfg), cfg->channel_prefix);
    else
        snprintf(out, cap, "%s%s.c%u", lt_nats_prefix(cfg), cfg->channel_prefix, c);
}

uint32_t lt_total_conns(const struct lt_config *cfg)
{
    return cfg->subs + cfg->publishers;
}

void lt_slice_of(const struct lt_config *cfg, uint32_t id, uint32_t nworkers, struct lt_slice *s)
{
    s->id = id;
    s->nworkers = nworkers;
    s->sub_lo = (uint32_t)((uint64_t)cfg->subs * id / nworkers);
    s->sub_hi = (uint32_t)((uint64_t)cfg->subs * (id + 1) / nworkers);
}

/* True for 127.0.0.0/8, ::1 and ::ffff:127.0.0.0/104. */
static bool is_loopback(const struct sockaddr_storage *ss)
{
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)ss;
        return (ntohl(a->sin_addr.s_addr) >> 24) == 127;
    }
    if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)ss;
        static const uint8_t v4mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF};
        if (IN6_IS_ADDR_LOOPBACK(&a->sin6_addr))
            return true;
        return memcmp(a->sin6_addr.s6_addr, v4mapped, 12) == 0 && a->sin6_addr.s6_addr[12] == 127;
    }
    return false;
}

/* Parses a numeric address (no name lookups except "localhost"). */
static bool parse_addr(const char *host, uint16_t port, struct sockaddr_storage *ss, socklen_t *len)
{
    memset(ss, 0, sizeof *ss);
    if (strcmp(host, "localhost") == 0)
        host = "127.0.0.1";
    struct sockaddr_in *a4 = (struct sockaddr_in *)ss;
    if (inet_pton(AF_INET, host, &a4->sin_addr) == 1) {
        a4->sin_family = AF_INET;
        a4->sin_port = htons(port);
        *len = sizeof *a4;
        return true;
    }
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)ss;
    if (inet_pton(AF_INET6, host, &a6->sin6_addr) == 1) {
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons(port);
        *len = sizeof *a6;
        return true;
    }
    return false;
}

bool lt_parse_url(struct lt_config *cfg, const char *url, char *err, size_t err_cap)
{
    if (strlen(url) >= sizeof cfg->url) {
        snprintf(err, err_cap, "URL too long");
        return false;
    }
    strcpy(cfg->url, url);
    cfg->tls = strncmp(url, "wss://", 6) == 0;
    if (strncmp(url, "ws://", 5) != 0 && !cfg->tls) {
        snprintf(err, err_cap, "only ws:// and wss:// URLs are supported: %s", url);
        return false;
    }
    const char *h = url + (cfg->tls ? 6 : 5);
    const char *host_end;
    const char *after;
    if (*h == '[') {
        host_end = strchr(h, ']');
        if (!host_end) {
            snprintf(err, err_cap, "bad IPv6 host in %s", url);
            return false;
        }
        h++;
        after = host_end + 1;
    } else {
        host_end = h + strcspn(h, ":/");
        after = host_end;
    }
    size_t hl = (size_t)(host_end - h);
    if (hl == 0 || hl >= sizeof cfg->host) {
        snprintf(err, err_cap, "bad host in %s", url);
        return false;
    }
    memcpy(cfg->host, h, hl);
    cfg->host[hl] = '\0';
    unsigned long port = cfg->tls ? 443 : 80;
    if (*after == ':') {
        char *end;
        errno = 0;
        port = strtoul(after + 1, &end, 10);
        if (errno || end == after + 1 || port == 0 || port > 65535 || (*end && *end != '/')) {
            snprintf(err, err_cap, "bad port in %s", url);
            return false;
        }
        after = end;
    }
    cfg->port = (uint16_t)port;
    const char *path = *after == '/' ? after : "/";
    if (strlen(path) >= sizeof cfg->path) {
        snprintf(err, err_cap, "path too long in %s", url);
        return false;
    }
    strcpy(cfg->path, path);
    if (!parse_addr(cfg->host, cfg->port, &cfg->dst, &cfg->dst_len) || !is_loopback(&cfg->dst)) {
        snprintf(err, err_cap,
                 "refusing host '%s': rtgate-load only targets loopback "
                 "(127.0.0.0/8, ::1, localhost)",
                 cfg->host);
        return false;
    }
    if (cfg->dst.ss_family == AF_INET6)
        snprintf(cfg->host_header, sizeof cfg->host_header, "[%s]:%u", cfg->host, cfg->port);
    else
        snprintf(cfg->host_header, sizeof cfg->host_header, "%s:%u", cfg->host, cfg->port);
    return true;
}

bool lt_parse_nats_url(struct lt_config *cfg, const char *url, char *err, size_t err_cap)
{
    if (strlen(url) >= sizeof cfg->nats_url || strncmp(url, "nats://", 7) != 0) {
        snprintf(err, err_cap, "--nats wants nats://HOST:PORT: %s", url);
        return false;
    }
    strcpy(cfg->nats_url, url);
    const char *h = url + 7;
    const char *host_end, *after;
    if (*h == '[') {
        host_end = strchr(h, ']');
        if (!host_end) {
            snprintf(err, err_cap, "bad IPv6 host in %s", url);
            return false;
        }
        h++;
        after = host_end + 1;
    } else {
        host_end = h + strcspn(h, ":/");
        after = host_end;
    }
    char host[64];
    size_t hl = (size_t)(host_end - h);
    if (hl == 0 || hl >= sizeof host) {
        snprintf(err, err_cap, "bad host in %s", url);
        return false;
    }
    memcpy(host, h, hl);
    host[hl] = '\0';
    unsigned long port = 4222;
    if (*after == ':') {
        char *end;
        errno = 0;
        port = strtoul(after + 1, &end, 10);
        if (errno || end == after + 1 || port == 0 || port > 65535 || (*end && *end != '/')) {
            snprintf(err, err_cap, "bad port in %s", url);
            return false;
        }
    } else if (*after && *after != '/') {
        snprintf(err, err_cap, "bad URL %s", url);
        return false;
    }
    if (!parse_addr(host, (uint16_t)port, &cfg->nats_dst, &cfg->nats_dst_len) ||
        !is_loopback(&cfg->nats_dst)) {
        snprintf(err, err_cap,
                 "refusing NATS host '%s': rtgate-load only targets loopback "
                 "(127.0.0.0/8, ::1, localhost)",
                 host);
        return false;
    }
    return true;
}

bool lt_add_source(struct lt_config *cfg, const char *text, char *err, size_t err_cap)
{
    if (cfg->n_src >= LT_MAX_SRC) {
        snprintf(err, err_cap, "at most %d source addresses", LT_MAX_SRC);
        return false;
    }
    size_t i = cfg->n_src;
    if (strlen(text) >= sizeof cfg->src_text[i] ||
        !parse_addr(text, 0, &cfg->src[i], &cfg->src_len[i]) || !is_loopback(&cfg->src[i])) {
        snprintf(err, err_cap, "source address '%s' is not a loopback address", text);
        return false;
    }
    if (cfg->src[i].ss_family != cfg->dst.ss_family) {
        snprintf(err, err_cap, "source address '%s' is not of the URL's address family", text);
        return false;
    }
    strcpy(cfg->src_text[i], text);
    cfg->n_src++;
    return true;
}

int lt_error_code_index(int code)
{
    static const int codes[LT_ERR_CODES - 1] = {400, 401, 403, 404, 409, 413, 429, 503};
    for (int i = 0; i < LT_ERR_CODES - 1; i++)
        if (codes[i] == code)
            return i;
    return LT_ERR_CODES - 1;
}

void lt_stats_add(struct lt_stats *into, const struct lt_stats *from)
{
    /* Every field is a counter except the setup time bounds. */
    uint64_t first = into->setup_first_ns, last = into->setup_last_ns;
    uint64_t pub_last = into->pub_lag_max_ns;
    const uint64_t *f = (const uint64_t *)(const void *)from;
    uint64_t *t = (uint64_t *)(void *)into;
    for (size_t i = 0; i < sizeof *into / sizeof(uint64_t); i++)
        t[i] += f[i];
    into->setup_first_ns = first == 0 ? from->setup_first_ns
                           : from->setup_first_ns && from->setup_first_ns < first
                               ? from->setup_first_ns
                               : first;
    into->setup_last_ns = from->setup_last_ns > last ? from->setup_last_ns : last;
    into->pub_lag_max_ns = from->pub_lag_max_ns > pub_last ? from->pub_lag_max_ns : pub_last;
}

static bool write_all(int fd, const void *p, size_t len)
{
    const uint8_t *b = p;
    while (len) {
        ssize_t n = write(fd, b, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return false;
        }
        b += n;
        len -= (size_t)n;
    }
    return true;
}

bool lt_pipe_send2(int fd, uint32_t type, const void *a, size_t alen, const void *b, size_t blen)
{
    struct lt_pipe_hdr h = {.type = type, .pad = 0, .len = alen + blen};
    /* Small messages go out in one write so they arrive whole (PIPE_BUF). */
    uint8_t small[256];
    if (sizeof h + alen + blen <= sizeof small) {
        memcpy(small, &h, sizeof h);
        if (alen)
            memcpy(small + sizeof h, a, alen);
        if (blen)
            memcpy(small + sizeof h + alen, b, blen);
        return write_all(fd, small, sizeof h + alen + blen);
    }
    return write_all(fd, &h, sizeof h) && (!alen || write_all(fd, a, alen)) &&
           (!blen || write_all(fd, b, blen));
}

bool lt_pipe_send(int fd, uint32_t type, const void *body, size_t len)
{
    return lt_pipe_send2(fd, type, body, len, NULL, 0);
}
