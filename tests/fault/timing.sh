#!/usr/bin/env bash
# Time-based checkpoints and the second SIGTERM:
# 1. --ckpt-every-minutes: with no step interval, checkpoints still appear while training
#    (by the clock), besides the one at the end.
# 2. A second SIGTERM exits at once (status 143) without waiting for the step boundary, and
#    leaves the committed checkpoints intact.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
setup_work timing "$2"
make_data "$W/data.jsonl"
make_model "$W/m" 256

# 1. 0.002 minutes = 0.12 s; a run of a few seconds must commit several by time.
O="$W/minutes"
train 1 --model "$W/m" --data "$W/data.jsonl" --out "$O" --seq-len 64 --micro-batch 2 --threads 1 \
  --steps 400 --ckpt-every-minutes 0.002 --keep-checkpoints 0 --log-every 1000 > "$W/minutes.log" 2>&1 \
  || { tail "$W/minutes.log"; fail "the --ckpt-every-minutes run failed"; }
n=$(grep -c "checkpoint: step" "$W/minutes.log")
last=$(grep -c "checkpoint: step 400 " "$W/minutes.log")
[ "$n" -ge 3 ] && [ "$last" = 1 ] || fail "--ckpt-every-minutes 0.002 over $(since "$T_START") s: $n checkpoints ($last at step 400), expected >= 3 incl. the final one"
ok "--ckpt-every-minutes 0.002: $n checkpoints written ($(grep "checkpoint: step" "$W/minutes.log" | sed -nE 's/.*step ([0-9]+) .*/\1/p' | tr '\n' ' '))"

# 2. Two SIGTERMs in a row to a single rank whose steps take much longer than the gap.
O="$W/term2"
"$SL" train --model "$W/m" --data "$W/data.jsonl" --out "$O" --seq-len 512 --micro-batch 32 --threads 1 \
  --steps 100000 --ckpt-every 2 --log-every 1 > "$W/term2.log" 2>&1 &
pid=$!
for _ in $(seq 1 300); do [ "$(latest_step "$O")" -ge 2 ] && break; sleep 0.1; done
[ "$(latest_step "$O")" -ge 2 ] || { kill -9 $pid; fail "no checkpoint appeared"; }
before=$(latest_step "$O")
t0=$(date +%s.%N)
kill -TERM $pid; sleep 0.02; kill -TERM $pid  # apart: two pending SIGTERMs would merge into one
wait $pid; rc=$?
dt=$(since "$t0")
[ "$rc" = 143 ] || fail "two SIGTERMs: exit status $rc, expected 143 (128 + SIGTERM)"
grep -q "signal 15: checkpoint written" "$W/term2.log" && fail "two SIGTERMs: it waited for the step boundary and checkpointed"
awk -v d="$dt" 'BEGIN { exit !(d < 2) }' || fail "two SIGTERMs: it took $dt s to exit"
inspect_ok "$O/checkpoints/latest" "after two SIGTERMs"
ok "two SIGTERMs: exit 143 after $dt s, no boundary checkpoint, latest (step $(latest_step "$O"), was $before) intact"
finish
