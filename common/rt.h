/*
 * rt.h: what every rtgate module shares. The status enum, the protocol
 * error table (PROTOCOL.md section 5), clocks, the token bucket, keyed
 * hashes, the intrusive hash table and the key=value logger. A leaf: no I/O
 * beyond stderr (and the kernel's random bytes), no other module.
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

/*
 * Takes `tokens` spent elsewhere (another replica of the same bucket, on
 * another node): the bucket is refilled up to now_ms first, then goes down
 * by them, into debt if it must, but not below -floor_tokens. A take
 * succeeds again once the refill has paid the debt. rate 0: nothing.
 */
void rt_bucket_charge(struct rt_bucket *b, const struct rt_bucket_cfg *cfg, uint64_t now_ms,
                      uint64_t tokens, uint64_t floor_tokens);

/*
 * Makes the array *v (of *cap elements of size bytes) hold at least need
 * elements: doubles its capacity (from 4) until it does, moving it with
 * realloc. False when out of memory, or for more than UINT32_MAX / 2
 * elements (the array is left as it was).
 */
bool rt_grow(void **v, uint32_t *cap, uint32_t need, size_t size);

/* -------------------------------------------------------------------- */
/* Hashes (hash.c)                                                        */

/*
 * A 128-bit SipHash key. rt_hash_key_from_bytes reads it the way the
 * SipHash paper does: k0 is bytes 0..7 little-endian, k1 bytes 8..15.
 */
struct rt_hash_key {
    uint64_t k0, k1;
};
void rt_hash_key_from_bytes(const uint8_t bytes[16], struct rt_hash_key *key);

/* SipHash-2-4 and SipHash-1-3 of the len bytes at data under key. Any thread. */
uint64_t rt_siphash24(const struct rt_hash_key *key, const void *data, size_t len);
uint64_t rt_siphash13(const struct rt_hash_key *key, const void *data, size_t len);

/*
 * This process's hash key: random (getrandom), drawn on first use, so a
 * process forked before any hashing (--workers) draws its own. Any thread.
 */
const struct rt_hash_key *rt_hash_process_key(void);

/*
 * SipHash-1-3 of the len bytes at key under the process key. For every
 * table whose keys a client (or another node) can choose: nobody outside
 * the process can compute which keys collide. Differs between processes
 * and runs: never store it or send it anywhere. Any thread.
 */
uint64_t rt_hash_bytes(const void *key, size_t len);
/* The same for an integer key a client can choose (e.g. a cell code). */
uint64_t rt_hash_u64_keyed(uint64_t x);
/*
 * The splitmix64 finaliser of x, unkeyed: integer keys that differ in a few
 * bits (ids, tickets) get unrelated hashes. A bijection; 0 maps to 0. Only
 * for keys the server makes up itself: anyone can invert it.
 */
uint64_t rt_hash_u64(uint64_t x);

/* -------------------------------------------------------------------- */
/* Intrusive hash table (htab.c)                                          */

/*
 * A chained hash table of nodes the owner embeds in its own structs. The
 * table never looks at keys: the owner sets n->hash before inserting and,
 * to look a key up, walks rt_htab_chain(t, hash) along ->next comparing
 * hashes and keys itself. Equal hashes are allowed; they share a chain.
 * Buckets (a power of two, 8 bytes each) double when the load reaches 1
 * and never shrink. Not thread-safe: the owner serialises all calls.
 */
struct rt_hnode {
    struct rt_hnode *next;
    uint64_t hash;
};

struct rt_htab {
    struct rt_hnode **buckets;
    size_t nbuckets; /* 0 or a power of two */
    size_t count;
};

/* The struct of type `type` whose member `member` is at ptr. */
#define RT_CONTAINER(ptr, type, member) ((type *)(void *)((char *)(ptr)-offsetof(type, member)))

/* Makes t an empty table. Allocates nothing: the first reserve does. */
void rt_htab_init(struct rt_htab *t);
/*
 * Frees the bucket array and leaves t empty (as after rt_htab_init). The
 * nodes belong to the owner and are neither touched nor freed: free them
 * first (rt_htab_each) if the table owned them.
 */
void rt_htab_free(struct rt_htab *t);
/*
 * The first node of the chain that holds every node with this hash, or NULL
 * when the chain (or the table) is empty. The chain also holds nodes with
 * other hashes: the caller follows ->next comparing hash and key.
 */
struct rt_hnode *rt_htab_chain(const struct rt_htab *t, uint64_t hash);
/*
 * Makes room for one more rt_htab_insert, growing the bucket array when the
 * load has reached 1. Returns RT_OK, or RT_NOMEM only while the table has no
 * bucket array at all; a failed growth of an existing array is not an error
 * (the chains get longer, lookups stay correct).
 */
rt_status rt_htab_reserve(struct rt_htab *t);
/*
 * Links n, whose hash the caller has set, into t. Must follow a successful
 * rt_htab_reserve with no other insert in between; never allocates, never
 * fails. n must not already be in a table; no duplicate check is made.
 */
void rt_htab_insert(struct rt_htab *t, struct rt_hnode *n);
/*
 * Unlinks n from t. n must have been inserted in t with the same hash; a
 * node that is not in t is left alone. Never frees anything.
 */
void rt_htab_remove(struct rt_htab *t, struct rt_hnode *n);
/*
 * Calls fn(n, arg) once on every node of t, in no particular order. fn may
 * remove the node it is given from t and free it, but must not insert
 * nodes or remove any other node.
 */
void rt_htab_each(struct rt_htab *t, void (*fn)(struct rt_hnode *n, void *arg), void *arg);
/* The number of nodes in t. */
size_t rt_htab_count(const struct rt_htab *t);
/* The length of the longest chain: O(nodes), for tests and diagnostics. */
size_t rt_htab_max_chain(const struct rt_htab *t);

/* Logging: one line per event, `ts=... level=... event=... key=value ...`. */
enum rt_log_level { RT_LOG_DEBUG, RT_LOG_INFO, RT_LOG_WARN, RT_LOG_ERROR };
void rt_log_set_level(enum rt_log_level level);
bool rt_log_enabled(enum rt_log_level level);
/* `fmt` continues the line after "event=<event> " and is printf-style. */
void rt_log(enum rt_log_level level, const char *event, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
