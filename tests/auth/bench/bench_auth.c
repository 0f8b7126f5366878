/*
 * bench_auth.c: CPU time of one auth_verify, the part of a verified connect
 * that an anonymous one does not pay (bench/auth.sh runs it per algorithm
 * beside a whole-connect measurement). Not run by ctest.
 *
 *   bench_auth KEYFILE ALG TOKENFILE [N]
 *
 * Loads the key as the gateway does, checks that the token verifies, then
 * verifies it N times (default 2000) and prints one JSON line with the
 * process CPU time per verification in microseconds.
 */
#include "auth.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double cpu_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

static char *read_token(const char *path, size_t *len)
{
    static char buf[AUTH_TOKEN_MAX + 2];
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    while (n && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
        n--;
    buf[n] = '\0';
    *len = n;
    return buf;
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: bench_auth KEYFILE HS256|RS256|ES256 TOKENFILE [N]\n");
        return 2;
    }
    enum auth_alg alg;
    long n = argc > 4 ? strtol(argv[4], NULL, 10) : 2000;
    char err[512] = "";
    struct auth_key *key = NULL;
    size_t len = 0;
    char *token = read_token(argv[3], &len);
    if (!auth_alg_parse(argv[2], &alg) || n < 1 || !token ||
        auth_key_load(argv[1], alg, err, sizeof err, &key) != RT_OK) {
        fprintf(stderr, "bench_auth: bad arguments or key: %s\n", err);
        return 2;
    }
    /* Time as of a moment when the token is valid: its exp is in the future. */
    int64_t now_ms = (int64_t)time(NULL) * 1000;
    struct auth_claims *c = NULL;
    enum auth_result r = auth_verify(key, token, len, now_ms, 5000, &c);
    if (r != AUTH_OK) {
        fprintf(stderr, "bench_auth: the token does not verify: %s\n", auth_result_name(r));
        return 1;
    }
    auth_claims_destroy(c);
    double t0 = cpu_us();
    for (long i = 0; i < n; i++) {
        auth_verify(key, token, len, now_ms, 5000, &c);
        auth_claims_destroy(c);
    }
    double per = (cpu_us() - t0) / (double)n;
    printf(
        "{\"alg\":\"%s\",\"token_bytes\":%zu,\"verifications\":%ld,\"cpu_us_per_verify\":%.2f}\n",
        auth_alg_name(alg), len, n, per);
    auth_key_destroy(key);
    return 0;
}
