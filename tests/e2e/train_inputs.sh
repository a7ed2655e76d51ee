#!/usr/bin/env bash
# What `shardlora train` accepts, refuses and writes at its edges:
#   epochs    an --epochs run resumed on another number of ranks (another global batch)
#             ends after exactly its epochs, with one warning
#   resume    OUT's run with another row stream (seq-len, seed, data, shuffle) is refused
#             with one line, exit 2, OUT untouched (token cache included); the same data
#             copied elsewhere resumes
#   metrics   --skip-nonfinite writes null for a non-finite loss (every line is strict JSON);
#             tokens_trained counts only the applied steps
#   flags     non-finite or out-of-range --epochs, --lr, --loraplus-ratio, --max-grad-norm,
#             --beta1, --beta2, --eps; --adapter vera with --init gaussian; --config edge cases
#   paths     a model directory named m"q keeps run_config valid JSON (export reads it)
#   cleanup   data refused after the token cache was written leaves no OUT; a user-made OUT stays
# usage: train_inputs.sh SHARDLORA_BINARY WORK_DIR
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
set -uo pipefail
SL="$(readlink -f "$1")"; W="$2/train_inputs"
PY=/usr/bin/python3
rm -rf "$W"; mkdir -p "$W"
FAILS=()
fail() { FAILS+=("$1"); echo "FAIL: $1"; }
pass() { echo "PASS: $1"; }
COMMON=(--threads 1 --peak-gflops 1 --log-every 100 --seq-len 64)
# run NAME ARGS...: shardlora train, log in $W/NAME.log; returns its exit status
run() { local n="$1"; shift; timeout 120 "$SL" train "${COMMON[@]}" "$@" > "$W/$n.log" 2>&1; }
# refused NAME CODE PATTERN ARGS...: the run exits CODE with one error line matching PATTERN
refused() {
  local n="$1" code="$2" pat="$3"; shift 3
  run "$n" "$@"; local rc=$?
  local lines; lines=$(grep -ci "error\|shardlora train:" "$W/$n.log")
  if [ $rc -eq "$code" ] && grep -q -- "$pat" "$W/$n.log" && [ "$lines" -eq 1 ]; then pass "$n: exit $code, one line"
  else fail "$n: exit $rc (want $code), $lines error lines, pattern '$pat'"; tail -3 "$W/$n.log"; fi
}

. "$(dirname "${BASH_SOURCE[0]}")/common.sh"
e2e_model_and_data "$SL" "$PY" "$W"
D=(--model "$W/m" --data "$W/data.jsonl")

# ---- epochs: dp=2 (global batch 4) to 0.5 epochs, resumed at dp=1 (global batch 2) to 1 epoch
mpiexec --oversubscribe -n 2 "$SL" train "${COMMON[@]}" "${D[@]}" --out "$W/ep" --micro-batch 2 --epochs 0.5 \
  > "$W/ep1.log" 2>&1 || fail "the dp=2 run to 0.5 epochs failed"
run ep2 "${D[@]}" --out "$W/ep" --micro-batch 2 --epochs 1 || fail "the dp=1 resume to 1 epoch failed"
"$PY" - "$W" <<'PY' && pass "an --epochs resume at another global batch ends at its epochs" || fail "epochs resume"
import json, math, sys
w = sys.argv[1]
run = json.load(open(f"{w}/ep/run.json"))
n = run["data"]["train_rows_per_epoch"]
rows = [json.loads(l) for l in open(f"{w}/ep/metrics.jsonl")]
done = math.ceil(0.5 * n / 4)                 # steps of the dp=2 run
want = done + math.ceil((n - 4 * done) / 2)   # the rest of the epoch at global batch 2
last = rows[-1]
print(f"rows/epoch {n}: {len(rows)} steps, last step {last['step']} at epoch {last['epoch']} (want {want}, 1.0); "
      f"resolved total_steps {run['resolved']['total_steps']}")
assert last["step"] == want and abs(last["epoch"] - 1.0) < 1e-9 and run["resolved"]["total_steps"] == want
PY
[ "$(grep -c "warning: global batch 2, the checkpoint's was 4" "$W/ep2.log")" -eq 1 ] \
  && pass "one warning names the changed global batch" || fail "no global-batch warning"

# ---- resume: another row stream is refused, OUT untouched -------------------------------
snap() { (cd "$W/ep" && find . -type f | sort | xargs sha256sum; readlink checkpoints/latest); }
snap > "$W/snap.before"
refused rs-seqlen 2 "its --seq-len is 64, this one's 32" "${D[@]}" --out "$W/ep" --micro-batch 2 --epochs 2 --seq-len 32
refused rs-seed 2 "its --seed is 42, this one's 7" "${D[@]}" --out "$W/ep" --micro-batch 2 --epochs 2 --seed 7
refused rs-shuffle 2 "its --shuffle is true, this one's false" "${D[@]}" --out "$W/ep" --micro-batch 2 --epochs 2 --no-shuffle
refused rs-data 2 "other.jsonl" --model "$W/m" --data "$W/other.jsonl" --out "$W/ep" --micro-batch 2 --epochs 2
snap > "$W/snap.after"
cmp -s "$W/snap.before" "$W/snap.after" && pass "refused resumes leave OUT's files alone" || fail "a refused resume changed OUT"
cp "$W/data.jsonl" "$W/copy.jsonl"
cp -a "$W/ep" "$W/ep-copy"
run rs-copy --model "$W/m" --data "$W/copy.jsonl" --out "$W/ep-copy" --micro-batch 2 --steps 22; rc=$?
[ $rc -eq 0 ] && grep -q "same rows and tokens: resuming" "$W/rs-copy.log" && grep -q "resumed from" "$W/rs-copy.log" \
  && pass "the same data under another name resumes (with a warning)" || fail "resume with copied data (exit $rc)"

# ---- metrics: --skip-nonfinite writes strict JSON ---------------------------------------
run nf "${D[@]}" --out "$W/nf" --steps 4 --optimizer sgd --lr 1e30 --lr-schedule constant --skip-nonfinite \
  || fail "--skip-nonfinite run failed"
"$PY" - "$W" <<'PY' && pass "metrics.jsonl is strict JSON; tokens_trained counts applied steps" || fail "nonfinite metrics"
import json, sys
w = sys.argv[1]
def strict(c): raise ValueError(f"non-JSON constant {c}")
rows = [json.loads(l, parse_constant=strict) for l in open(f"{w}/nf/metrics.jsonl")]
skipped = [r for r in rows if r.get("skipped")]
assert skipped and all(r["loss"] is None or r["grad_norm"] is None for r in skipped), skipped
s = json.load(open(f"{w}/nf/summary.json"))
want = sum(r["tokens"] for r in rows if not r.get("skipped"))
print(f"{len(skipped)} of {len(rows)} steps skipped; tokens_trained {s['tokens_trained']} (want {want})")
assert s["tokens_trained"] == want and s["skipped_steps"] == len(skipped)
PY

# ---- flags: one line naming the flag, exit 2 --------------------------------------------
for e in inf nan 1e300 1e-12; do
  refused "epochs-$e" 2 "--epochs" "${D[@]}" --out "$W/e-$e" --epochs "$e"
  [ -e "$W/e-$e" ] && fail "--epochs $e left $W/e-$e behind"
done
refused lr-nan 2 "--lr must be" "${D[@]}" --out "$W/x" --lr nan
refused lr-neg 2 "--lr must be" "${D[@]}" --out "$W/x" --lr -1
refused loraplus-inf 2 "--loraplus-ratio must be" "${D[@]}" --out "$W/x" --loraplus-ratio inf
refused maxnorm-nan 2 "--max-grad-norm must be" "${D[@]}" --out "$W/x" --max-grad-norm nan
refused beta1-1 2 "--beta1 must be" "${D[@]}" --out "$W/x" --beta1 1
refused beta2-neg 2 "--beta2 must be" "${D[@]}" --out "$W/x" --beta2 -0.1
refused eps-0 2 "--eps must be" "${D[@]}" --out "$W/x" --eps 0
refused eps-inf 2 "--eps must be" "${D[@]}" --out "$W/x" --eps inf
refused vera-gaussian 2 "--init gaussian does not apply to --adapter vera" "${D[@]}" --out "$W/x" --adapter vera --init gaussian
refused config-last 2 "--config needs a value" "${D[@]}" --out "$W/x" --config
mkdir -p "$W/cfgdir"
refused config-dir 2 "cfgdir: not a regular file (a directory)" "${D[@]}" --out "$W/x" --config "$W/cfgdir"
printf 'lr = [1e-3, 2e-3]\n' > "$W/list.cfg"
refused config-list 2 "list.cfg:1: a list is only allowed for repeatable options" "${D[@]}" --out "$W/x" --config "$W/list.cfg"
[ -e "$W/x" ] && fail "a refused flag left $W/x behind"

# ---- paths: a model directory with a quote in its name ----------------------------------
Q="$W/m\"q"
cp -r "$W/m" "$Q"
run quote --model "$Q" --data "$W/data.jsonl" --out "$W/q" --steps 2 || fail "training with model $Q failed"
timeout 60 "$SL" export "$W/q" --out "$W/q-export" > "$W/q-export.log" 2>&1 || fail "export of the m\"q run failed"
"$PY" - "$W" "$Q" <<'PY' && pass "run_config stays JSON with a quote in the model path" || fail "model path with a quote"
import json, sys
w, q = sys.argv[1], sys.argv[2]
for d in ("q/adapter", "q-export"):
    got = json.load(open(f"{w}/{d}/adapter_config.json"))["base_model_name_or_path"]
    print(f"{d}: base_model_name_or_path {got!r}")
    assert got == q, (got, q)
PY

# ---- cleanup: refused data -----------------------------------------------------------------
run drop "${D[@]}" --out "$W/drop" --seq-len 16 --long-examples drop; rc=$?
[ $rc -eq 3 ] && [ ! -e "$W/drop" ] && pass "data refused after its cache was written leaves no OUT" \
  || { fail "refused data (exit $rc) left: $(find "$W/drop" 2>/dev/null | head -5 | tr '\n' ' ')"; }
mkdir -p "$W/mine"
printf '{"input_ids": [1, 2, 3]}\nnot json\n' > "$W/bad.jsonl"
run mine --model "$W/m" --data "$W/bad.jsonl" --out "$W/mine"; rc=$?
[ $rc -eq 3 ] && [ -d "$W/mine" ] && pass "a refused run keeps the --out directory the user made" \
  || fail "refused data with a user-made OUT (exit $rc, exists: $([ -d "$W/mine" ] && echo yes || echo no))"

echo "train_inputs: ${#FAILS[@]} failed"
[ ${#FAILS[@]} -eq 0 ]
