#!/usr/bin/env bash
# Builds the libFuzzer harnesses (clang, ASan + UBSan + fuzzer, in build-fuzz/), runs every
# committed regression input once, then fuzzes each harness for SECONDS over its seed corpus.
# Fails on any crash, leak, sanitizer report, timeout or out-of-memory; the failing input is
# left in build-fuzz/fuzz-work/<harness>/ (commit it to tests/fuzz/regressions/<harness>/).
# Usage: tests/fuzz/run.sh [SECONDS]     (default 30; 0 runs the regression inputs only)
set -euo pipefail

SECONDS_EACH="${1:-30}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BUILD="${SHARDLORA_FUZZ_BUILD_DIR:-$ROOT/build-fuzz}"
JOBS="${FUZZ_JOBS:-2}"            # harnesses fuzzed at the same time
HARNESS_FILTER="${FUZZ_ONLY:-}"   # e.g. FUZZ_ONLY="fuzz_peft fuzz_chat": only these
RSS_LIMIT_MB=2048                 # libFuzzer's out-of-memory limit per harness
TIMEOUT_S=10                      # one input running longer is a failure
CC_FUZZ="${CC_FUZZ:-clang}"
FUZZ_DIR="$ROOT/tests/fuzz"
WORK="$BUILD/fuzz-work"

# The build's output (clang's remarks on vectorisation hints included) is shown on failure.
mkdir -p "$BUILD"
if ! { CC="$CC_FUZZ" cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
         -DSHARDLORA_FUZZ=ON -DSHARDLORA_BUILD_TESTS=OFF -DSHARDLORA_BUILD_BENCHMARKS=OFF &&
       cmake --build "$BUILD" --target fuzz_all -j "$JOBS"; } >"$BUILD/fuzz-build.log" 2>&1; then
  cat "$BUILD/fuzz-build.log" >&2
  echo "fuzz: the fuzz build failed (is clang with libFuzzer installed? launch/install-deps.sh)" >&2
  exit 1
fi

harnesses=()
for src in "$FUZZ_DIR"/fuzz_*.c; do
  h="$(basename "$src" .c)"
  [ "$h" = fuzz_common ] && continue
  [ -n "$HARNESS_FILTER" ] && [[ " $HARNESS_FILTER " != *" $h "* ]] && continue
  harnesses+=("$h")
done
rm -rf "$WORK"
mkdir -p "$WORK"

# Each committed crash input, once.
fail=0
for h in "${harnesses[@]}"; do
  reg="$FUZZ_DIR/regressions/$h"
  [ -d "$reg" ] || continue
  mapfile -t inputs < <(find "$reg" -type f | sort)
  [ ${#inputs[@]} -gt 0 ] || continue
  if "$BUILD/tests/fuzz/$h" -rss_limit_mb=$RSS_LIMIT_MB -timeout=$TIMEOUT_S "${inputs[@]}" \
      >"$WORK/$h.regressions.log" 2>&1; then
    echo "fuzz: $h: ${#inputs[@]} regression input(s) pass"
  else
    echo "fuzz: $h: a regression input fails again:" >&2
    grep -E "ERROR|SUMMARY|runtime error|Running:" "$WORK/$h.regressions.log" | tail -5 >&2
    fail=1
  fi
done
[ "$SECONDS_EACH" -gt 0 ] || exit $fail

# One harness: fuzz into a scratch copy of the corpus (the committed seeds are only read).
fuzz_one() {
  local h="$1" dir="$WORK/$1"
  mkdir -p "$dir/corpus"
  if "$BUILD/tests/fuzz/$h" -max_total_time="$SECONDS_EACH" -rss_limit_mb=$RSS_LIMIT_MB \
      -timeout=$TIMEOUT_S -print_final_stats=1 -artifact_prefix="$dir/" \
      "$dir/corpus" "$FUZZ_DIR/corpus/$h" >"$dir/log" 2>&1; then
    echo ok >"$dir/status"
  else
    echo failed >"$dir/status"
  fi
}

for h in "${harnesses[@]}"; do
  while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do wait -n || true; done
  fuzz_one "$h" &
done
wait

printf '%-18s %10s %8s %6s %7s %s\n' harness execs exec/s cov ft result
for h in "${harnesses[@]}"; do
  log="$WORK/$h/log"
  execs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")"
  rate="$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")"
  last="$(grep -E '^#[0-9]+' "$log" | tail -1)"
  cov="$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")"
  ft="$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")"
  status="$(cat "$WORK/$h/status")"
  printf '%-18s %10s %8s %6s %7s %s\n' "$h" "${execs:--}" "${rate:--}" "${cov:--}" "${ft:--}" \
    "$status"
  if [ "$status" != ok ]; then
    fail=1
    grep -E "ERROR|SUMMARY|runtime error|Test unit written" "$log" | tail -6 >&2 || true
  fi
done
if [ $fail -ne 0 ]; then
  echo "fuzz: FAILED (logs and failing inputs under $WORK)" >&2
fi
exit $fail
