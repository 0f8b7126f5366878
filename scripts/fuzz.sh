#!/usr/bin/env bash
# The libFuzzer targets of tests/fuzz (tests/fuzz/README.md), built with clang,
# ASan and UBSan in build-fuzz.
#
#   scripts/fuzz.sh --smoke [CTEST ARGS]   every target briefly (what scripts/test.sh runs)
#   scripts/fuzz.sh TARGET [SECONDS]       one target for SECONDS (default 600)
#   scripts/fuzz.sh --list                 the targets
#
# A long run keeps what it finds in build-fuzz/tests/fuzz/work/TARGET (fed back
# to the next run) and a crashing input in build-fuzz/tests/fuzz/artifacts/.
# Copy an input worth keeping into tests/fuzz/corpus/TARGET/.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BUILD=$ROOT/build-fuzz

build() {
    if [ ! -f "$BUILD/CMakeCache.txt" ]; then
        CC=clang cmake -S . -B "$BUILD" -DRTGATE_FUZZ=ON -DCMAKE_C_COMPILER=clang \
            -DCMAKE_BUILD_TYPE=RelWithDebInfo > /dev/null
    fi
    cmake --build "$BUILD" -j"$(nproc)" "$@" > /dev/null
}

case "${1:-}" in
--smoke)
    shift
    build
    cd "$BUILD"
    exec ctest --output-on-failure "$@"
    ;;
--list)
    grep -o '^rt_fuzz_target([a-z_0-9]*' tests/fuzz/CMakeLists.txt | cut -d'(' -f2
    ;;
"" | -h | --help)
    sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'
    ;;
*)
    target=$1
    seconds=${2:-600}
    build --target "$target"
    work=$BUILD/tests/fuzz/work/$target
    art=$BUILD/tests/fuzz/artifacts
    mkdir -p "$work" "$art"
    dict=()
    [ -f "tests/fuzz/$target.dict" ] && dict=(-dict="tests/fuzz/$target.dict")
    seeds=tests/fuzz/corpus/$target
    [ -d "$seeds" ] || seeds=tests/fuzz/corpus/${target#fuzz_} # fleet_codec
    ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
        "$BUILD/tests/fuzz/$target" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 -artifact_prefix="$art/$target-" "${dict[@]}" \
        "$work" "$seeds"
    ;;
esac
