#!/usr/bin/env bash
# Installs what the tests need, builds shardlora with warnings as errors, and runs the whole
# CTest suite (labels: unit, reference, e2e, ...); then builds a second tree with ASan + UBSan
# (build-san/, -DSHARDLORA_SANITIZE=ON) and runs the tests labelled sanitize in it; then the
# fuzz harnesses for a bounded time (tests/fuzz/run.sh: FUZZ_SECONDS per harness, $JOBS at a
# time, default 10; 0 runs only the committed crash inputs; FUZZ_SECONDS=skip leaves fuzzing
# out). Usage: tests/run.sh [extra ctest args]. The sanitized pass and the fuzz step run when
# no ctest arguments are given (the whole suite, as CI runs it); SHARDLORA_SANITIZE_PASS=1
# runs the sanitized pass anyway (with the same arguments, e.g. -R test_tokenizer), =0 skips it.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD="${SHARDLORA_BUILD_DIR:-$ROOT/build}"
SAN_BUILD="${SHARDLORA_SAN_BUILD_DIR:-$ROOT/build-san}"
SAN_PASS="${SHARDLORA_SANITIZE_PASS:-$([ $# -eq 0 ] && echo 1 || echo 0)}"
JOBS="${JOBS:-$(nproc)}"

"$ROOT/launch/install-deps.sh"

# Open MPI refuses to run as root unless told (CI and containers run as root).
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# Oversubscription is expected on a small test machine.
export OMPI_MCA_rmaps_base_oversubscribe=1

cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DSHARDLORA_WERROR=ON
cmake --build "$BUILD" -j "$JOBS"
cd "$BUILD"
# Tests run $JOBS at a time (those that need the whole machine are marked RUN_SERIAL).
ctest --output-on-failure --timeout 900 -j "$JOBS" "$@"

if [ "$SAN_PASS" = 1 ]; then
  # The sanitized pass: -O1 -g, ASan (with LeakSanitizer at exit) and UBSan, any report fatal.
  # Which tests carry the label and why the others do not: tests/README.md.
  cmake -S "$ROOT" -B "$SAN_BUILD" -DCMAKE_BUILD_TYPE=Release -DSHARDLORA_WERROR=ON \
    -DSHARDLORA_SANITIZE=ON -DSHARDLORA_BUILD_BENCHMARKS=OFF
  cmake --build "$SAN_BUILD" -j "$JOBS"
  (
    # shellcheck source=tests/sanitize/env.sh
    . "$ROOT/tests/sanitize/env.sh"
    cd "$SAN_BUILD"
    ctest --output-on-failure --timeout 900 -j "$JOBS" -L sanitize "$@"
  )
fi

FUZZ_SECONDS="${FUZZ_SECONDS:-10}"
if [ $# -eq 0 ] && [ "$FUZZ_SECONDS" != skip ]; then
  FUZZ_JOBS="$JOBS" "$ROOT/tests/fuzz/run.sh" "$FUZZ_SECONDS"
fi
