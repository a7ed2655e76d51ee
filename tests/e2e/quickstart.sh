#!/usr/bin/env bash
# The README's first command, run twice as a user would: each run trains from scratch (no
# stale resume), prints the progress, the loss falls, and the adapter is written.
# usage: quickstart.sh BUILD_DIR WORK_DIR
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
W="$2/quickstart"
rm -rf "$W"; mkdir -p "$W"
for run in 1 2; do
  BUILD="$1" WORK="$W/out" STEPS=20 "$ROOT/launch/quickstart.sh" > "$W/run$run.log" 2>&1 \
    || { tail -20 "$W/run$run.log"; echo "FAIL: quickstart run $run exited non-zero"; exit 1; }
  grep -q "resumed\|nothing to do" "$W/run$run.log" && { echo "FAIL: run $run resumed a previous demo instead of training"; exit 1; }
  first=$(sed -nE 's/.*step 5\/20 \| loss ([0-9.]+).*/\1/p' "$W/run$run.log")
  last=$(sed -nE 's/.*step 20\/20 \| loss ([0-9.]+).*/\1/p' "$W/run$run.log")
  [ -n "$first" ] && [ -n "$last" ] || { tail -20 "$W/run$run.log"; echo "FAIL: run $run printed no progress lines"; exit 1; }
  awk -v a="$first" -v b="$last" 'BEGIN { exit !(b < a - 0.3) }' || { echo "FAIL: run $run: loss $first -> $last did not fall"; exit 1; }
  [ -s "$W/out/run/adapter/adapter_model.safetensors" ] || { echo "FAIL: run $run wrote no adapter"; exit 1; }
  echo "PASS run $run: loss at step 5 $first -> step 20 $last, adapter written"
done
echo "quickstart: 2 passed, 0 failed"
