/*
 * test_hash.c: the keyed hashes of common/hash.c. SipHash against the
 * published vectors of its reference implementation, a key that differs
 * between processes, and the point of it all: keys chosen to collide under
 * the old unkeyed hash (FNV-1a + splitmix64) no longer pile up on one chain.
 */
#include "rt.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* SipHash-2-4, key 00 01 .. 0f, message 00 01 .. (i-1) for i = 0..63: the
 * vectors of the reference implementation (github.com/veorq/SipHash). */
static const uint64_t sip24_vectors[64] = {
    0x726fdb47dd0e0e31ull, 0x74f839c593dc67fdull, 0x0d6c8009d9a94f5aull, 0x85676696d7fb7e2dull,
    0xcf2794e0277187b7ull, 0x18765564cd99a68dull, 0xcbc9466e58fee3ceull, 0xab0200f58b01d137ull,
    0x93f5f5799a932462ull, 0x9e0082df0ba9e4b0ull, 0x7a5dbbc594ddb9f3ull, 0xf4b32f46226bada7ull,
    0x751e8fbc860ee5fbull, 0x14ea5627c0843d90ull, 0xf723ca908e7af2eeull, 0xa129ca6149be45e5ull,
    0x3f2acc7f57c29bdbull, 0x699ae9f52cbe4794ull, 0x4bc1b3f0968dd39cull, 0xbb6dc91da77961bdull,
    0xbed65cf21aa2ee98ull, 0xd0f2cbb02e3b67c7ull, 0x93536795e3a33e88ull, 0xa80c038ccd5ccec8ull,
    0xb8ad50c6f649af94ull, 0xbce192de8a85b8eaull, 0x17d835b85bbb15f3ull, 0x2f2e6163076bcfadull,
    0xde4daaaca71dc9a5ull, 0xa6a2506687956571ull, 0xad87a3535c49ef28ull, 0x32d892fad841c342ull,
    0x7127512f72f27cceull, 0xa7f32346f95978e3ull, 0x12e0b01abb051238ull, 0x15e034d40fa197aeull,
    0x314dffbe0815a3b4ull, 0x027990f029623981ull, 0xcadcd4e59ef40c4dull, 0x9abfd8766a33735cull,
    0x0e3ea96b5304a7d0ull, 0xad0c42d6fc585992ull, 0x187306c89bc215a9ull, 0xd4a60abcf3792b95ull,
    0xf935451de4f21df2ull, 0xa9538f0419755787ull, 0xdb9acddff56ca510ull, 0xd06c98cd5c0975ebull,
    0xe612a3cb9ecba951ull, 0xc766e62cfcadaf96ull, 0xee64435a9752fe72ull, 0xa192d576b245165aull,
    0x0a8787bf8ecb74b2ull, 0x81b3e73d20b49b6full, 0x7fa8220ba3b2eceaull, 0x245731c13ca42499ull,
    0xb78dbfaf3a8d83bdull, 0xea1ad565322a1a0bull, 0x60e61c23a3795013ull, 0x6606d7e446282b93ull,
    0x6ca4ecb15c5f91e1ull, 0x9f626da15c9625f3ull, 0xe51b38608ef25f57ull, 0x958a324ceb064572ull,
};

/* SipHash-1-3 of the same messages under the all-zero key, from the
 * reference implementation (as OCaml's and Rust's test suites quote them):
 * every block boundary and tail length is among them. */
static const struct {
    size_t len;
    uint64_t hash;
} sip13_vectors[] = {
    {0, 0xd1fba762150c532cull},  {1, 0x68a914128e01e473ull},  {2, 0x010bac45c41e3669ull},
    {3, 0x4d4c9a4a8ef6e0adull},  {7, 0x2f098ab0c751325aull},  {8, 0xead411e67ebe2eeaull},
    {9, 0x75927f9d95124362ull},  {15, 0xf30eb725bb91c9eaull}, {16, 0x8972188433a5c5b7ull},
    {17, 0x4883c49a2c009c1dull}, {19, 0x091f4a3329f87d19ull}, {20, 0x639e355ae68c0100ull},
    {31, 0x169739443111d49bull}, {32, 0x31ef8061c910629bull}, {33, 0x7fb71d24dfa4c9f6ull},
};

Test(hash, siphash24_matches_the_reference_vectors)
{
    uint8_t kb[16], msg[64];
    for (int i = 0; i < 16; i++)
        kb[i] = (uint8_t)i;
    for (int i = 0; i < 64; i++)
        msg[i] = (uint8_t)i;
    struct rt_hash_key key;
    rt_hash_key_from_bytes(kb, &key);
    cr_assert_eq(key.k0, 0x0706050403020100ull);
    cr_assert_eq(key.k1, 0x0f0e0d0c0b0a0908ull);
    for (size_t len = 0; len < 64; len++)
        cr_assert_eq(rt_siphash24(&key, msg, len), sip24_vectors[len],
                     "SipHash-2-4 of %zu bytes: %016llx", len,
                     (unsigned long long)rt_siphash24(&key, msg, len));
}

Test(hash, siphash13_matches_the_reference_vectors)
{
    uint8_t msg[64];
    for (int i = 0; i < 64; i++)
        msg[i] = (uint8_t)i;
    struct rt_hash_key zero = {0, 0};
    for (size_t i = 0; i < sizeof sip13_vectors / sizeof sip13_vectors[0]; i++)
        cr_assert_eq(rt_siphash13(&zero, msg, sip13_vectors[i].len), sip13_vectors[i].hash,
                     "SipHash-1-3 of %zu bytes: %016llx", sip13_vectors[i].len,
                     (unsigned long long)rt_siphash13(&zero, msg, sip13_vectors[i].len));
}

Test(hash, table_hashes_are_siphash13_under_the_process_key)
{
    const struct rt_hash_key *k = rt_hash_process_key();
    cr_assert(k->k0 != 0 || k->k1 != 0);
    cr_assert_eq(k, rt_hash_process_key(), "one key per process");
    const char *s = "chat.room1";
    cr_assert_eq(rt_hash_bytes(s, strlen(s)), rt_siphash13(k, s, strlen(s)));
    cr_assert_eq(rt_hash_bytes(s, strlen(s)), rt_hash_bytes(s, strlen(s)));
    uint8_t le[8] = {0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11};
    cr_assert_eq(rt_hash_u64_keyed(0x1122334455667788ull), rt_siphash13(k, le, 8));
    cr_assert_neq(rt_hash_bytes("ab", 2), rt_hash_bytes("ba", 2));
}

/* Runs in a fresh child: the hash of one channel name under that child's key. */
static uint64_t hash_in_child(void)
{
    int fds[2];
    cr_assert_eq(pipe(fds), 0);
    pid_t pid = fork();
    cr_assert(pid >= 0);
    if (pid == 0) {
        uint64_t h = rt_hash_bytes("chat.room1", 10);
        _exit(write(fds[1], &h, sizeof h) == (ssize_t)sizeof h ? 0 : 1);
    }
    close(fds[1]);
    uint64_t h = 0;
    cr_assert_eq(read(fds[0], &h, sizeof h), (ssize_t)sizeof h);
    close(fds[0]);
    int status = 0;
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    return h;
}

/* Criterion runs each test in a process of its own, and nothing here hashed
 * before the forks: each child draws its own key on first use, as a worker
 * forked by --workers does. */
Test(hash, two_processes_hash_differently)
{
    uint64_t a = hash_in_child(), b = hash_in_child(), c = hash_in_child();
    /* Three independent 64-bit keys: equal outputs have probability 2^-63. */
    cr_assert(a != b || b != c, "three processes hashed alike: %016llx", (unsigned long long)a);
    cr_assert(a != b && a != c && b != c);
}

/* What rt_hash_bytes was before it was keyed: FNV-1a, then splitmix64. An
 * attacker can compute it, so it stands for "any unkeyed hash" here. */
static uint64_t old_hash(const char *s, size_t len)
{
    uint64_t h = 14695981039346656037ull;
    for (size_t i = 0; i < len; i++) {
        h ^= (uint8_t)s[i];
        h *= 1099511628211ull;
    }
    return rt_hash_u64(h);
}

struct named {
    struct rt_hnode node;
    char name[32];
};

#define FLOOD_KEYS 2000
#define FLOOD_BITS 12 /* every key shares its low 12 hash bits: one bucket up to 4096 buckets */

/*
 * The flood an attacker prepares offline against an unkeyed hash: channel
 * names whose hash has the same low bits, so they all land in one bucket of
 * any table up to 2^FLOOD_BITS buckets. Brute force, FLOOD_KEYS * 2^12 tries.
 */
static struct named *flood_keys(void)
{
    struct named *v = calloc(FLOOD_KEYS, sizeof *v);
    cr_assert_not_null(v);
    const uint64_t mask = (1u << FLOOD_BITS) - 1;
    size_t n = 0;
    for (uint64_t i = 0; n < FLOOD_KEYS; i++) {
        char name[32];
        int len = snprintf(name, sizeof name, "chat.r%llu", (unsigned long long)i);
        if ((old_hash(name, (size_t)len) & mask) == 0)
            memcpy(v[n++].name, name, (size_t)len + 1);
    }
    return v;
}

static size_t longest_chain(struct named *v, uint64_t (*hash)(const void *, size_t))
{
    struct rt_htab t;
    rt_htab_init(&t);
    for (size_t i = 0; i < FLOOD_KEYS; i++) {
        cr_assert_eq(rt_htab_reserve(&t), RT_OK);
        v[i].node.hash = hash(v[i].name, strlen(v[i].name));
        rt_htab_insert(&t, &v[i].node);
    }
    cr_assert_eq(rt_htab_count(&t), FLOOD_KEYS);
    cr_assert_leq(t.nbuckets, (size_t)1 << FLOOD_BITS);
    size_t longest = rt_htab_max_chain(&t);
    rt_htab_free(&t);
    return longest;
}

static uint64_t old_hash_fn(const void *s, size_t len)
{
    return old_hash(s, len);
}

Test(hash, keys_colliding_under_an_unkeyed_hash_spread_under_the_keyed_one)
{
    struct named *v = flood_keys();
    /* The attack works on the old hash: every key on one chain, so each
     * lookup walks 2000 nodes... */
    cr_assert_eq(longest_chain(v, old_hash_fn), FLOOD_KEYS);
    /* ...and does nothing to the keyed one: 2000 keys in 2048 buckets, the
     * longest chain of a random hash is about 6-7; 16 is already
     * astronomically unlikely (< 1e-9). */
    size_t keyed = longest_chain(v, rt_hash_bytes);
    cr_assert_leq(keyed, 16, "longest chain %zu of %d flooded keys", keyed, FLOOD_KEYS);
    free(v);
}
