#!/usr/bin/env bash
# The README's first command, run twice as a user would: each run trains from scratch (no
# stale resume) on 2 MPI ranks at tp=2 with real text, the loss falls, evaluation runs,
# metrics.jsonl parses, the plot is a valid SVG and the adapter files exist.
# usage: quickstart.sh BUILD_DIR WORK_DIR
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
W="$2/quickstart"
rm -rf "$W"; mkdir -p "$W"
for run in 1 2; do
  BUILD="$1" WORK="$W/out" STEPS=30 EVAL_EVERY=10 "$ROOT/launch/quickstart.sh" > "$W/run$run.log" 2>&1 \
    || { tail -20 "$W/run$run.log"; echo "FAIL: quickstart run $run exited non-zero"; exit 1; }
  grep -q "resumed\|nothing to do" "$W/run$run.log" && { echo "FAIL: run $run resumed a previous demo instead of training"; exit 1; }
  R="$W/out/run"
  for f in adapter/adapter_model.safetensors adapter/adapter_config.json run.json summary.json loss.svg; do
    [ -s "$R/$f" ] || { echo "FAIL: run $run wrote no $f"; exit 1; }
  done
  /usr/bin/python3 - "$R" <<'PY' || { echo "FAIL: run $run: outputs do not check out"; exit 1; }
import json, sys, xml.etree.ElementTree as ET
out = sys.argv[1]
rows = [json.loads(l) for l in open(f"{out}/metrics.jsonl")]
train = [r for r in rows if "loss" in r]
evals = [r for r in rows if "eval_loss" in r]
assert [r["step"] for r in train] == list(range(1, 31)), "one train line per step"
assert [r["step"] for r in evals] == [10, 20, 30], f"evals at {[r['step'] for r in evals]}"
assert evals[-1]["eval_loss"] < evals[0]["eval_loss"], "eval loss did not fall"
for k in ("epoch", "lr", "grad_norm", "tokens", "tokens_per_s", "mfu"):
    assert all(k in r for r in train), f"train lines lack {k}"
root = ET.parse(f"{out}/loss.svg").getroot()
assert root.tag == "{http://www.w3.org/2000/svg}svg", root.tag
run = json.load(open(f"{out}/run.json"))
res = run["resolved"]
assert res["world"] == 2 and res["dp"] == 1 and res["tp"] == 2, f"not 2 ranks at tp=2: {res}"
assert run["config"]["eval-split"] == 0.05, run["config"]
first, last = train[4]["loss"], train[29]["loss"]
assert last < first - 0.3, f"loss {first} at step 5 -> {last} at step 30 did not fall"
summary = json.load(open(f"{out}/summary.json"))
assert summary["steps"] == 30 and summary["skipped_steps"] == 0, summary
best = min(r["eval_loss"] for r in evals)
assert abs(summary["best_eval_loss"] - best) <= 1e-6 * best, (summary["best_eval_loss"], best)
assert run["versions"]["mpi"] and run["model_fingerprint"]
cfg = json.load(open(f"{out}/adapter/adapter_config.json"))
assert cfg["peft_type"] == "LORA" and cfg["r"] == 16, cfg
print(f"PASS: loss at step 5 {first:.4f} -> step 30 {last:.4f}; {len(train)} steps, "
      f"eval {evals[0]['eval_loss']:.3f} -> {evals[-1]['eval_loss']:.3f}; SVG, run.json, summary.json, adapter OK")
PY
  echo "PASS run $run"
done
echo "quickstart: 2 passed, 0 failed"
