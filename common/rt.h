/*
 * rt.h: what every rtgate module shares. The status enum, the protocol
 * error table (PROTOCOL.md section 5), clocks, the token bucket and the
 * key=value logger. A leaf: no I/O beyond stderr, no other module.
 */
#ifndef RT_H
#define RT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Results of rtgate functions; details go through out-params. */
typedef enum {
    RT_OK = 0,
    RT_ERR = -1,         /* generic failure */
    RT_AGAIN = -2,       /* would block / result arrives later */
    RT_NOMEM = -3,       /* allocation failed or a configured memory bound was hit */
    RT_INVAL = -4,       /* bad input */
    RT_TOO_BIG = -5,     /* input over a size limit */
    RT_NOT_FOUND = -6,   /* no such thing */
    RT_CONFLICT = -7,    /* already exists */
    RT_LIMIT = -8,       /* a count or rate limit refused it */
    RT_UNAVAILABLE = -9, /* the backend cannot take it now */
} rt_status;

const char *rt_status_str(rt_status st);

/* Protocol error codes and their reasons, from one table. */
#define RT_ERROR_TABLE(X)                                                                          \
    X(400, BAD_REQUEST, "bad_request")                                                             \
    X(401, UNAUTHORIZED, "unauthorized")                                                           \
    X(403, FORBIDDEN, "forbidden")                                                                 \
    X(404, NOT_FOUND, "not_found")                                                                 \
    X(409, CONFLICT, "conflict")                                                                   \
    X(413, TOO_LARGE, "too_large")                                                                 \
    X(429, RATE_LIMITED, "rate_limited")                                                           \
    X(503, UNAVAILABLE, "unavailable")

enum rt_error_code {
#define X(code, name, reason) RT_E_##name = code,
    RT_ERROR_TABLE(X)
#undef X
};

/* The reason string of a protocol error code ("bad_request"), or "error". */
const char *rt_error_reason(int code);
/* Index of a known code in the table (0..RT_N_ERRORS-1), or -1. For metrics. */
int rt_error_index(int code);
#define RT_N_ERRORS 8

/* Milliseconds: monotonic for timers and buckets, wall clock for `ts`. */
uint64_t rt_mono_ms(void);
uint64_t rt_wall_ms(void);

/*
 * Token bucket with exact integer arithmetic: tokens are kept in
 * thousandths, the clock in ms, so `rate` tokens per second refill `rate`
 * thousandths per ms. The configuration is shared (one per kind of bucket),
 * the state is 16 bytes per bucket.
 */
struct rt_bucket_cfg {
    uint32_t rate;  /* tokens per second; 0 = unlimited */
    uint32_t burst; /* bucket size in tokens (at least 1) */
};

struct rt_bucket {
    int64_t milli; /* tokens x 1000 */
    uint64_t last_ms;
};

/* Fills the bucket to its burst at time now_ms. */
void rt_bucket_init(struct rt_bucket *b, const struct rt_bucket_cfg *cfg, uint64_t now_ms);

/*
 * Takes one token at now_ms. Returns true if it was there. Otherwise returns
 * false and sets *retry_after_ms (if not NULL) to the time after which one
 * token will be there: a take at now_ms + *retry_after_ms succeeds if nothing
 * else took from the bucket meanwhile. A clock going backwards refills
 * nothing.
 */
bool rt_bucket_take(struct rt_bucket *b, const struct rt_bucket_cfg *cfg, uint64_t now_ms,
                    uint32_t *retry_after_ms);

/* Logging: one line per event, `ts=... level=... event=... key=value ...`. */
enum rt_log_level { RT_LOG_DEBUG, RT_LOG_INFO, RT_LOG_WARN, RT_LOG_ERROR };
void rt_log_set_level(enum rt_log_level level);
bool rt_log_enabled(enum rt_log_level level);
/* `fmt` continues the line after "event=<event> " and is printf-style. */
void rt_log(enum rt_log_level level, const char *event, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
