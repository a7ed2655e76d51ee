#!/usr/bin/env bash
# Installs what the tests need, builds shardlora with warnings as errors, and runs the whole
# CTest suite (labels: unit, reference, e2e, ...). Usage: tests/run.sh [extra ctest args]
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
