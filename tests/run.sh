#!/usr/bin/env bash
# Installs what the tests need, builds shardlora with warnings as errors, and runs the whole
# CTest suite (labels: unit, reference, e2e, ...), then the fuzz harnesses for a bounded time
# (tests/fuzz/run.sh: FUZZ_SECONDS per harness, $JOBS at a time, default 20; 0 runs only the
# committed crash inputs; FUZZ_SECONDS=skip leaves fuzzing out). The fuzz step is skipped when
# ctest is given arguments (a subset was asked for). Usage: tests/run.sh [extra ctest args]
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD="${SHARDLORA_BUILD_DIR:-$ROOT/build}"
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

FUZZ_SECONDS="${FUZZ_SECONDS:-20}"
if [ $# -eq 0 ] && [ "$FUZZ_SECONDS" != skip ]; then
  FUZZ_JOBS="$JOBS" "$ROOT/tests/fuzz/run.sh" "$FUZZ_SECONDS"
fi
