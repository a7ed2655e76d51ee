#!/usr/bin/env bash
# The launcher with the real programs on this machine: `shardlora-run --ranks-per-node 2
# --oversubscribe train ...` starts 2 ranks with mpirun (the launcher alone sets what Open MPI
# needs as root), trains at tp=2 and exits 0; then a longer run sent SIGUSR1 (to the launcher,
# after the first step line) writes a checkpoint and the launcher exits 75. Paths have spaces.
# usage: real_run.sh SHARDLORA_BINARY WORK_DIR   (exits 1 on the first failed check)
set -uo pipefail

SL="$(readlink -f "$1")"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
RUN="$ROOT/launch/shardlora-run"
W="$2/launcher-real/work dir"
T0=$SECONDS
rm -rf "$2/launcher-real"
mkdir -p "$W"

fail() { echo "FAIL: $*"; exit 1; }
pass() { echo "PASS: $*"; }

# The launcher must set OMPI_ALLOW_RUN_AS_ROOT* itself: run it without them.
launcher() { env -u OMPI_ALLOW_RUN_AS_ROOT -u OMPI_ALLOW_RUN_AS_ROOT_CONFIRM "$RUN" "$@"; }

LAUNCHER_PID=""
# Whatever happens, stop what this script started: the launcher, mpirun and the ranks.
cleanup() {
    [ -n "$LAUNCHER_PID" ] || return 0
    local p kids
    kids="$(pgrep -P "$LAUNCHER_PID")"
    for p in $kids; do kids="$kids $(pgrep -P "$p")"; done
    # shellcheck disable=SC2086  # a list of pids
    kill -9 "$LAUNCHER_PID" $kids 2>/dev/null
    return 0
}
trap cleanup EXIT

"$SL" make-model --out "$W/model dir" --layers 1 --hidden 32 --ffn 64 --heads 2 --kv-heads 1 \
    --vocab 259 >/dev/null || fail "make-model failed"
for i in 1 2 3 4 5 6 7 8; do
    echo "{\"text\": \"Line $i: the launcher starts two ranks, one tensor-parallel group of two.\"}"
done >"$W/data file.jsonl"

# ---- a short run at tp = ranks per node = 2 ----------------------------------------------
O="$W/out short"
launcher --bin "$SL" --ranks-per-node 2 --oversubscribe train --model "$W/model dir" \
    --data "$W/data file.jsonl" --out "$O" --steps 2 --seq-len 32 >"$W/short.log" 2>&1
rc=$?
[ "$rc" = 0 ] || { tail -n 20 "$W/short.log"; fail "the 2-step run exited $rc, expected 0"; }
grep -q '^shardlora-run:   tp            2   (ranks per node; inserted --tp 2)' "$W/short.log" ||
    { head -n 20 "$W/short.log"; fail "the plan does not show tp 2 inserted"; }
grep -q 'grid: world=2 = dp 1 x pp 1 x tp 2' "$W/short.log" || { tail -n 20 "$W/short.log"; fail "no 'grid: world=2 = dp 1 x pp 1 x tp 2' in the log"; }
grep -q 'step 2/2' "$W/short.log" || fail "no 'step 2/2' line in the log"
[ -s "$O/adapter/adapter_model.safetensors" ] || fail "no adapter in $O/adapter"
pass "2 ranks through the launcher (mpirun, tp 2 inserted): grid world=2 = dp 1 x tp 2, 2 steps, adapter written, exit 0"

# ---- SIGUSR1 to the launcher mid-run: checkpoint and exit 75 -----------------------------
O="$W/out signal"
LOG="$W/signal.log"
# not through the function: $! must be the launcher itself
env -u OMPI_ALLOW_RUN_AS_ROOT -u OMPI_ALLOW_RUN_AS_ROOT_CONFIRM "$RUN" --bin "$SL" --ranks-per-node 2 \
    --oversubscribe train --model "$W/model dir" --data "$W/data file.jsonl" --out "$O" --steps 20000 --seq-len 32 --log-every 1 \
    --progress lines >"$LOG" 2>&1 &
LAUNCHER_PID=$!
t=$SECONDS
until grep -q '\] step [0-9]' "$LOG"; do
    kill -0 "$LAUNCHER_PID" 2>/dev/null || { tail -n 20 "$LOG"; fail "the run ended before its first step line"; }
    [ $((SECONDS - t)) -lt 120 ] || fail "no step line after 120 s"
    sleep 0.05
done
kill -USR1 "$LAUNCHER_PID"
t=$SECONDS
while kill -0 "$LAUNCHER_PID" 2>/dev/null; do
    [ $((SECONDS - t)) -lt 60 ] || { tail -n 20 "$LOG"; fail "the launcher still runs 60 s after SIGUSR1"; }
    sleep 0.05
done
rc=0
wait "$LAUNCHER_PID" || rc=$?
LAUNCHER_PID=""
[ "$rc" = 75 ] || { tail -n 20 "$LOG"; fail "after SIGUSR1 the launcher exited $rc, expected 75"; }
grep -q 'shardlora-run: SIGUSR1: forwarded to mpirun' "$LOG" || fail "the launcher did not report forwarding SIGUSR1"
grep -q 'signal 10: checkpoint written' "$LOG" || { tail -n 20 "$LOG"; fail "shardlora did not report 'signal 10: checkpoint written'"; }
latest="$(readlink "$O/checkpoints/latest")" || fail "no $O/checkpoints/latest"
[ -d "$O/checkpoints/$latest" ] || fail "checkpoints/latest points at a missing $latest"
step=$((10#${latest#step-}))
if [ "$step" -lt 1 ] || [ "$step" -ge 20000 ]; then fail "the checkpoint is of step $step, expected one mid-run"; fi
"$SL" inspect "$O/checkpoints/latest" >"$W/inspect.log" 2>&1 || { tail "$W/inspect.log"; fail "shardlora inspect of the checkpoint failed"; }
[ ! -e "$O/adapter/adapter_model.safetensors" ] || fail "the stopped run wrote a final adapter"
pass "SIGUSR1 to the launcher after the first step line: forwarded, checkpoint of step $step written and intact, exit 75"
echo "PASS ($((SECONDS - T0)) s)"
