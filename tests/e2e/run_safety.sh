#!/usr/bin/env bash
# A run directory belongs to one run (train/rundir): each case compares the sha256 of every
# file under OUT (and the list of its entries) before and after.
#   restart   --resume none on a run's OUT: exit 2, OUT unchanged, the line names --overwrite
#   other     another run's settings (other data, --lora-r): exit 2 before tokenising (the
#             token cache unchanged too), naming the option, both values and the remedies;
#             another run's checkpoint by --resume CKPT into a new OUT: exit 3, no OUT left
#   done      re-running a finished run (and as 2 ranks, and by --epochs as a requeue does):
#             exit 0, OUT unchanged, "nothing to do" with the best eval loss
#   overwrite --overwrite removes shardlora's files (each logged), keeps the user's, trains
#   ranks     summary-rank1.json of a 2-rank run does not outlive a 1-rank run (--overwrite
#             or a resume)
# usage: run_safety.sh SHARDLORA_BINARY WORK_DIR
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
set -uo pipefail
SL="$(readlink -f "$1")"; W="$2/run_safety"
PY=/usr/bin/python3
rm -rf "$W"; mkdir -p "$W"
FAILS=()
fail() { FAILS+=("$1"); echo "FAIL: $1"; }
pass() { echo "PASS: $1"; }
COMMON=(--threads 1 --peak-gflops 1 --log-every 100 --seq-len 64 --model "$W/m")
# run NAME ARGS...: shardlora train on one rank, log in $W/NAME.log; returns its exit status
run() { local n="$1"; shift; timeout 120 "$SL" train "${COMMON[@]}" "$@" > "$W/$n.log" 2>&1; }
run2() { local n="$1"; shift; timeout 120 mpiexec --oversubscribe -np 2 "$SL" train "${COMMON[@]}" "$@" > "$W/$n.log" 2>&1; }
# snap DIR: every entry under DIR and the sha256 of every file
snap() { (cd "$1" && find . | sort && find . -type f | sort | xargs sha256sum); }
# same NAME DIR BEFORE: DIR's snapshot equals BEFORE
same() { if snap "$2" | cmp -s - "$3"; then pass "$1: OUT unchanged"; else fail "$1: OUT changed"; snap "$2" | diff "$3" - | head -8; fi; }
# says NAME PATTERN: the log of NAME matches PATTERN
says() { grep -q -- "$2" "$W/$1.log" && pass "$1: says '$2'" || { fail "$1: no '$2'"; tail -3 "$W/$1.log"; }; }
status() { [ "$2" -eq "$3" ] && pass "$1: exit $2" || { fail "$1: exit $2 (want $3)"; tail -3 "$W/$1.log"; }; }

. "$(dirname "${BASH_SOURCE[0]}")/common.sh"
e2e_model_and_data "$SL" "$PY" "$W"
D=(--data "$W/data.jsonl")
O="$W/run"
run2 first "${D[@]}" --out "$O" --steps 4 --eval-split 0.1 || { fail "the first (2-rank) run failed"; tail "$W/first.log"; }
[ -f "$O/run-state.json" ] && [ -f "$O/summary-rank1.json" ] && [ -d "$O/cache/train" ] \
  || fail "the first run did not write run-state.json, summary-rank1.json and its token cache"
snap "$O" > "$W/before"

# ---- restart: --resume none on a run's OUT ------------------------------------------------
run restart "${D[@]}" --out "$O" --steps 4 --eval-split 0.1 --resume none; status restart $? 2
says restart "--resume none would start over"
says restart "add --overwrite"
same restart "$O" "$W/before"

# ---- other: another run's settings, refused before tokenising -----------------------------
run other-data --data "$W/other.jsonl" --out "$O" --steps 4 --eval-split 0.1; status other-data $? 2
says other-data "holds another run: its --data is"
says other-data "other.jsonl"
says other-data "add --overwrite"
grep -q "token cache\|tokeniz" "$W/other-data.log" && fail "other-data: tokenised before refusing"
run other-r "${D[@]}" --out "$O" --steps 4 --eval-split 0.1 --lora-r 4; status other-r $? 2
says other-r "its --lora-r is 8, this one's 4"
says other-r "or give --lora-r as it was"
[ "$(grep -c "error" "$W/other-r.log")" -eq 1 ] && pass "other-r: one error line" || fail "other-r: not one error line"
same other "$O" "$W/before"
run other-ckpt "${D[@]}" --out "$W/fresh" --steps 6 --seed 7 --resume "$O/checkpoints/step-000000004"; status other-ckpt $? 3
says other-ckpt "cannot resume: .*seed 42; this run's is 7"
[ ! -e "$W/fresh" ] && pass "other-ckpt: a refused --resume CKPT leaves no new OUT" || fail "other-ckpt: left $W/fresh behind"
same other-ckpt "$O" "$W/before"

# ---- done: a finished run re-run, on 1 and 2 ranks, and by --epochs -----------------------
run done1 "${D[@]}" --out "$O" --steps 4 --eval-split 0.1; status done1 $? 0
says done1 "already holds this finished run (step 4 of 4; best eval loss [0-9.]* at step 4): nothing to do"
run2 done2 "${D[@]}" --out "$O" --steps 4 --eval-split 0.1; status done2 $? 0
says done2 "nothing to do"
run done-less "${D[@]}" --out "$O" --steps 2 --eval-split 0.1; status done-less $? 0
says done-less "--steps 2 is not beyond it"
same done "$O" "$W/before"
E="$W/epochs"
run ep1 "${D[@]}" --out "$E" --epochs 0.25 || fail "the --epochs run failed"
snap "$E" > "$W/ep.before"
run ep2 "${D[@]}" --out "$E" --epochs 0.25; status "done-epochs (a requeue after completion)" $? 0
says ep2 "nothing to do"
same done-epochs "$E" "$W/ep.before"
run ep3 "${D[@]}" --out "$E" --epochs 0.5 && grep -q "resumed from" "$W/ep3.log" \
  && pass "more --epochs resumes the finished run" || fail "more --epochs did not resume"

# ---- overwrite: shardlora's files go, the user's stay -------------------------------------
echo "my notes" > "$O/notes.txt"
mkdir -p "$O/mine" && echo x > "$O/mine/keep.txt"
echo extra > "$O/adapter/extra.txt"
run ow-inside "${D[@]}" --out "$O" --steps 3 --overwrite --resume "$O/checkpoints/step-000000004"; status ow-inside $? 2
says ow-inside "which --overwrite clears"
run ow "${D[@]}" --out "$O" --steps 3 --lora-r 4 --overwrite; status overwrite $? 0
for p in checkpoints/step-000000004 adapter/adapter_model.safetensors cache/train metrics.jsonl run.json \
         run-state.json summary.json summary-rank0.json summary-rank1.json; do
  grep -q -- "--overwrite: removed $O/$p" "$W/ow.log" || fail "overwrite: $p not listed as removed"
done
grep -q -- "--overwrite: kept $O/adapter" "$W/ow.log" && pass "overwrite: says it kept adapter/ (a user file in it)" \
  || fail "overwrite: adapter/ with a user file not reported as kept"
[ "$(cat "$O/notes.txt")" = "my notes" ] && [ -f "$O/mine/keep.txt" ] && [ -f "$O/adapter/extra.txt" ] \
  && pass "overwrite: the user's files stay" || fail "overwrite: a user file went"
"$PY" - "$O" <<'PY' && pass "overwrite: a new run of 3 steps at r=4 completed" || fail "overwrite: the new run"
import json, os, sys
o = sys.argv[1]
s = json.load(open(f"{o}/run-state.json"))
rows = [json.loads(l) for l in open(f"{o}/metrics.jsonl")]
ck = sorted(os.listdir(f"{o}/checkpoints"))
print("finished", s["finished"], "identity r", s["identity"]["--lora-r"], "checkpoints", ck, "steps", [r["step"] for r in rows])
assert s["finished"]["step"] == 3 and s["identity"]["--lora-r"] == 4
assert ck == ["latest", "step-000000003"] and [r["step"] for r in rows] == [1, 2, 3]
assert json.load(open(f"{o}/adapter/adapter_config.json"))["r"] == 4
PY

# ---- ranks: summary-rank1.json of an earlier 2-rank layout --------------------------------
[ ! -e "$O/summary-rank1.json" ] && pass "ranks: no summary-rank1.json after a 1-rank --overwrite run" \
  || fail "ranks: summary-rank1.json survived a 1-rank --overwrite run"
R="$W/ranks"
run2 rk1 "${D[@]}" --out "$R" --steps 2 || fail "the 2-rank run failed"
run rk2 "${D[@]}" --out "$R" --steps 3 || fail "the 1-rank resume failed"
[ -f "$R/summary-rank0.json" ] && [ ! -e "$R/summary-rank1.json" ] \
  && pass "ranks: a 1-rank resume of a 2-rank run removes summary-rank1.json" \
  || fail "ranks: summary-rank1.json survived a 1-rank resume"

echo "run_safety: ${#FAILS[@]} failed"
[ ${#FAILS[@]} -eq 0 ]
