/*
 * fuzz.h: what every libFuzzer target in tests/fuzz shares. A target is one
 * short C file defining LLVMFuzzerTestOneInput (and, if it needs state,
 * LLVMFuzzerInitialize); tests/fuzz/CMakeLists.txt builds it with
 * -fsanitize=fuzzer,address,undefined. See README.md.
 */
#ifndef RT_FUZZ_H
#define RT_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

/*
 * A property the code under test must hold for every input. A failure is a
 * crash for libFuzzer: it saves the input as crash-<sha1> and stops. Not
 * assert(): it stays on under -DNDEBUG.
 */
#define FUZZ_CHECK(cond)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: fuzz check failed: %s\n", __FILE__, __LINE__, #cond);          \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

#endif
