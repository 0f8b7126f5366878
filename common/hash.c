/*
 * hash.c: the hashes rtgate's tables use. Keys that clients choose (channel
 * names, msg_ids, spaces, client ids, cell codes, addresses) go through
 * SipHash-1-3 under a key drawn at random once per process, so nobody
 * outside the process can pick keys that collide in a table (hash flooding:
 * thousands of keys on one chain turn every lookup into a list walk).
 * SipHash-2-4, the reference strength, is here for its published test
 * vectors and for whoever needs a MAC-grade PRF. Ids the server makes up
 * itself (connection ids, tickets) keep the cheaper unkeyed mixer.
 *
 * Nothing here must hash alike in two processes: no table is shared between
 * processes, and NATS subjects, cells and epochs are spelled out, never
 * derived from a hash. Something that ever needs that must get its own
 * unkeyed function, not this one.
 */
#include "rt.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#define ROTL(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))

#define SIPROUND(v0, v1, v2, v3)                                                                   \
    do {                                                                                           \
        v0 += v1;                                                                                  \
        v1 = ROTL(v1, 13);                                                                         \
        v1 ^= v0;                                                                                  \
        v0 = ROTL(v0, 32);                                                                         \
        v2 += v3;                                                                                  \
        v3 = ROTL(v3, 16);                                                                         \
        v3 ^= v2;                                                                                  \
        v0 += v3;                                                                                  \
        v3 = ROTL(v3, 21);                                                                         \
        v3 ^= v0;                                                                                  \
        v2 += v1;                                                                                  \
        v1 = ROTL(v1, 17);                                                                         \
        v1 ^= v2;                                                                                  \
        v2 = ROTL(v2, 32);                                                                         \
    } while (0)

static uint64_t load_le64(const uint8_t *p)
{
    return (uint64_t)p[0] | (uint64_t)p[1] << 8 | (uint64_t)p[2] << 16 | (uint64_t)p[3] << 24 |
           (uint64_t)p[4] << 32 | (uint64_t)p[5] << 40 | (uint64_t)p[6] << 48 |
           (uint64_t)p[7] << 56;
}

/*
 * SipHash with c compression and d finalisation rounds (the paper's
 * SipHash-c-d). Inlined into the two callers, so the round counts are
 * constants and the loops unroll.
 */
static inline uint64_t siphash(const struct rt_hash_key *key, const void *data, size_t len,
                               int c_rounds, int d_rounds)
{
    const uint8_t *p = data;
    uint64_t v0 = key->k0 ^ 0x736f6d6570736575ull;
    uint64_t v1 = key->k1 ^ 0x646f72616e646f6dull;
    uint64_t v2 = key->k0 ^ 0x6c7967656e657261ull;
    uint64_t v3 = key->k1 ^ 0x7465646279746573ull;
    const uint8_t *end = p + (len & ~(size_t)7);
    for (; p != end; p += 8) {
        uint64_t m = load_le64(p);
        v3 ^= m;
        for (int i = 0; i < c_rounds; i++)
            SIPROUND(v0, v1, v2, v3);
        v0 ^= m;
    }
    /* The last block: the bytes left over, and the length's low byte on top. */
    uint64_t b = (uint64_t)len << 56;
    switch (len & 7) {
    case 7:
        b |= (uint64_t)p[6] << 48; /* fall through */
    case 6:
        b |= (uint64_t)p[5] << 40; /* fall through */
    case 5:
        b |= (uint64_t)p[4] << 32; /* fall through */
    case 4:
        b |= (uint64_t)p[3] << 24; /* fall through */
    case 3:
        b |= (uint64_t)p[2] << 16; /* fall through */
    case 2:
        b |= (uint64_t)p[1] << 8; /* fall through */
    case 1:
        b |= (uint64_t)p[0];
        break;
    default:
        break;
    }
    v3 ^= b;
    for (int i = 0; i < c_rounds; i++)
        SIPROUND(v0, v1, v2, v3);
    v0 ^= b;
    v2 ^= 0xff;
    for (int i = 0; i < d_rounds; i++)
        SIPROUND(v0, v1, v2, v3);
    return v0 ^ v1 ^ v2 ^ v3;
}

uint64_t rt_siphash24(const struct rt_hash_key *key, const void *data, size_t len)
{
    return siphash(key, data, len, 2, 4);
}

uint64_t rt_siphash13(const struct rt_hash_key *key, const void *data, size_t len)
{
    return siphash(key, data, len, 1, 3);
}

void rt_hash_key_from_bytes(const uint8_t bytes[16], struct rt_hash_key *key)
{
    key->k0 = load_le64(bytes);
    key->k1 = load_le64(bytes + 8);
}

/* ---- the process key --------------------------------------------------- */

static struct rt_hash_key process_key;
static pthread_once_t process_key_once = PTHREAD_ONCE_INIT;

/* Fills buf from the kernel's CSPRNG; false if neither getrandom nor
 * /dev/urandom could. */
static bool kernel_random(uint8_t *buf, size_t len)
{
    size_t got = 0;
    while (got < len) {
        ssize_t n = getrandom(buf + got, len - got, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    if (got == len)
        return true;
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return false;
    got = 0;
    while (got < len) {
        ssize_t n = read(fd, buf + got, len - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    close(fd);
    return got == len;
}

static void process_key_init(void)
{
    uint8_t bytes[16];
    if (!kernel_random(bytes, sizeof bytes)) {
        /* No kernel randomness at all (a broken sandbox): a key nobody
         * outside can read off the process is still better than a fixed one. */
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        uint64_t a = (uint64_t)ts.tv_nsec ^ (uint64_t)ts.tv_sec << 30 ^ (uint64_t)getpid() << 48;
        uint64_t b = (uint64_t)(uintptr_t)&ts ^ (uint64_t)(uintptr_t)&process_key << 7;
        memcpy(bytes, &a, 8);
        memcpy(bytes + 8, &b, 8);
    }
    rt_hash_key_from_bytes(bytes, &process_key);
}

const struct rt_hash_key *rt_hash_process_key(void)
{
    pthread_once(&process_key_once, process_key_init);
    return &process_key;
}

uint64_t rt_hash_bytes(const void *key, size_t len)
{
    return rt_siphash13(rt_hash_process_key(), key, len);
}

uint64_t rt_hash_u64_keyed(uint64_t x)
{
    uint8_t b[8];
    for (int i = 0; i < 8; i++)
        b[i] = (uint8_t)(x >> (8 * i));
    return rt_siphash13(rt_hash_process_key(), b, sizeof b);
}

/* The splitmix64 finaliser: keys that differ in a few bits spread evenly. */
uint64_t rt_hash_u64(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    x ^= x >> 31;
    return x;
}
