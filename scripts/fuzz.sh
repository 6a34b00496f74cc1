#!/bin/sh
# Long fuzz runs: builds the tests/fuzz targets with clang, libFuzzer, ASan and UBSan in
# build-fuzz/ and runs each for N seconds (default 30).
#   scripts/fuzz.sh [SECONDS] [TARGET...]      targets: request_parser response_parser path proxy_protocol
#                                              key_source config (default: all)
# New inputs go to build-fuzz/fuzz-corpus/<target>/ (the seed corpus in tests/fuzz/corpus
# is only read); crashing inputs to build-fuzz/fuzz-artifacts/<target>/. Exits 1 when any
# target found a crash. FUZZ_BUILD changes the build directory, JOBS the ninja jobs.
set -eu

root=$(cd "$(dirname "$0")/.." && pwd)
seconds=${1:-30}
[ $# -gt 0 ] && shift
targets=${*:-request_parser response_parser path key_source config proxy_protocol}
build=${FUZZ_BUILD:-$root/build-fuzz}

if [ ! -f "$build/build.ninja" ]; then
  # fuzzer-no-link instruments the libraries under test for coverage; the targets
  # themselves link libFuzzer (-Dfuzz=true). UBSan must abort so libFuzzer sees it.
  flags="-fsanitize=fuzzer-no-link -fno-sanitize-recover=undefined"
  CC=clang CXX=clang++ meson setup "$build" "$root" -Dbuildtype=debugoptimized -Dtests=true -Dfuzz=true \
    -Db_sanitize=address,undefined -Db_lundef=false -Dc_args="$flags" -Dcpp_args="$flags"
fi
exes=""
for t in $targets; do exes="$exes tests/fuzz/fuzz_$t"; done
# shellcheck disable=SC2086
ninja -C "$build" -j"${JOBS:-2}" $exes

failed=""
for t in $targets; do
  work="$build/fuzz-corpus/$t"
  artifacts="$build/fuzz-artifacts/$t"
  mkdir -p "$work" "$artifacts"
  echo "== $t: ${seconds}s"
  if ! ASAN_OPTIONS=abort_on_error=1:detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
      "$build/tests/fuzz/fuzz_$t" -max_total_time="$seconds" -max_len=8192 -timeout=10 \
      -artifact_prefix="$artifacts/" -print_final_stats=1 "$work" "$root/tests/fuzz/corpus/$t"; then
    failed="$failed $t"
  fi
done

if [ -n "$failed" ]; then
  echo "crashes found in:$failed (inputs under $build/fuzz-artifacts/)" >&2
  exit 1
fi
echo "no crash in: $targets"
