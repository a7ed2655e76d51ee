#!/usr/bin/env bash
# The adapter's model card (OUT/adapter/README.md): the best eval loss and perplexity with
# their step (as summary.json has them), the data files with their sizes and counts, the
# framework versions (shardlora, MPI, BLAS), and a Hub-valid `base_model` in the front matter:
# --base-model-name, else config.json's _name_or_path when it is an owner/name id, else no
# base_model line (a local path is not valid there). `shardlora export` of the final
# checkpoint writes the same card, byte for byte (2 data-parallel ranks here).
# usage: model_card.sh SHARDLORA_BINARY WORK_DIR
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
set -uo pipefail
SL="$1"; W="$2/model_card"
PY=/usr/bin/python3
rm -rf "$W"; mkdir -p "$W"
fails=0
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }
ok() { echo "ok: $*"; }

"$SL" make-model --out "$W/m" --layers 2 --hidden 64 --ffn 128 --heads 4 --kv-heads 2 --vocab 259 \
  --seed 3 2> /dev/null || { echo "FAIL: make-model"; exit 1; }
# name_or_path DIR VALUE: a copy of the model whose config.json says _name_or_path VALUE
name_or_path() {
  cp -r "$W/m" "$1"
  "$PY" - "$1/config.json" "$2" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
c["_name_or_path"] = sys.argv[2]
json.dump(c, open(sys.argv[1], "w"), indent=2)
PY
}
name_or_path "$W/hub" "acme-labs/tiny-llama_2L.v1"
name_or_path "$W/local" "/home/someone/models/tiny-llama"
"$PY" - /usr/share/common-licenses/GPL-3 "$W/train.jsonl" "$W/eval.jsonl" <<'PY'
import json, sys
b = open(sys.argv[1], 'rb').read()[:12288]
rows = [json.dumps({"input_ids": list(b[i:i + 64])}) for i in range(0, len(b) - 64, 64)]
open(sys.argv[2], "w").write("\n".join(rows[:150]) + "\n")
open(sys.argv[3], "w").write("\n".join(rows[150:]) + "\n")
PY
R=(--data "$W/train.jsonl" --seq-len 64 --threads 1 --peak-gflops 1 --log-every 100)
T=("${R[@]}" --steps 6 --lr 2e-2)

# --- a run on 2 ranks with --eval-data: every section, and export = the run's card ---------
timeout 120 mpiexec --oversubscribe -n 2 "$SL" train --model "$W/hub" "${T[@]}" --micro-batch 2 \
  --eval-data "$W/eval.jsonl" --eval-every 2 --out "$W/run" > "$W/run.log" 2>&1 \
  || { tail -5 "$W/run.log"; fail "train (2 ranks) exited non-zero"; }
"$PY" - "$W/run" "$W/train.jsonl" "$W/eval.jsonl" <<'PY' && ok "card: base_model from _name_or_path, data, best eval, versions" || fail "the card of the 2-rank run"
import json, math, os, re, sys
out, tr, ev = sys.argv[1:]
card = open(out + "/adapter/README.md").read()
summ = json.load(open(out + "/summary.json"))
bad = []
front = card.split("---\n")[1]
if "base_model: acme-labs/tiny-llama_2L.v1\n" not in front:
    bad.append(f"front matter: {front!r}")
if 'from_pretrained("acme-labs/tiny-llama_2L.v1")' not in card:
    bad.append("the usage snippet does not load the Hub id")
for path in (tr, ev):
    want = f"`{os.path.basename(path)}` ({os.path.getsize(path)} bytes)"
    if want not in card:
        bad.append(f"no {want}")
m = re.search(r"^- train: .*; (\d+) documents -> (\d+) rows, (\d+) tokens", card, re.M)
if not m or int(m.group(1)) != 150:
    bad.append(f"train data line: {m and m.group(0)}")
loss, step = summ["best_eval_loss"], summ["best_eval_step"]
if f"| best eval loss | {loss:.4f} (step {step}) |" not in card:
    bad.append(f"best eval loss {loss:.4f} at step {step} not in the card")
if f"| eval perplexity | {math.exp(loss):.3f} |" not in card:
    bad.append(f"eval perplexity {math.exp(loss):.3f} not in the card")
for v in ("- shardlora: ", "- MPI: ", "- BLAS: "):
    if v not in card:
        bad.append(f"no '{v}' line")
print("\n".join(bad) or f"best eval loss {loss:.4f} (step {step}), ppl {math.exp(loss):.3f}")
sys.exit(1 if bad else 0)
PY
"$SL" export "$W/run/checkpoints/latest" --out "$W/exp" 2> "$W/exp.err" || fail "export exited non-zero"
cmp -s "$W/exp/README.md" "$W/run/adapter/README.md" \
  && ok "export of the final checkpoint writes the same card ($(stat -c %s "$W/exp/README.md") bytes)" \
  || { fail "export's card differs from the run's"; diff "$W/exp/README.md" "$W/run/adapter/README.md" | head; }
"$SL" export "$W/run" --out "$W/exp-hub" --base-model other-org/renamed 2> /dev/null || fail "export --base-model"
grep -q '^base_model: other-org/renamed$' "$W/exp-hub/README.md" \
  && ok "export --base-model (a Hub id) names the card's base_model" || fail "export --base-model: $(grep -m1 base_model "$W/exp-hub/README.md")"

# --- a resumed run (to step 8 on the same layout, lr 0: its evaluations equal the last one,
# never better) keeps the best evaluation of the run it resumed
cp -r "$W/run" "$W/resumed"
timeout 120 mpiexec --oversubscribe -n 2 "$SL" train --model "$W/hub" "${R[@]}" --steps 8 --micro-batch 2 --lr 0 --eval-data "$W/eval.jsonl" \
  --eval-every 2 --out "$W/resumed" > "$W/resumed.log" 2>&1 || { tail -5 "$W/resumed.log"; fail "the resumed run exited non-zero"; }
"$PY" - "$W/resumed" <<'PY' && ok "a resumed run's card: the best evaluation over both runs" || fail "the resumed run's best evaluation"
import json, sys
out = sys.argv[1]
ev = [json.loads(l) for l in open(out + "/metrics.jsonl") if "eval_loss" in l]
best = min(ev, key=lambda e: (e["eval_loss"], e["step"]))
summ = json.load(open(out + "/summary.json"))
card = open(out + "/adapter/README.md").read()
want = f"| best eval loss | {best['eval_loss']:.4f} (step {best['step']}) |"
print(f"evaluations at steps {[e['step'] for e in ev]}; best {best['eval_loss']:.4f} at step {best['step']}; "
      f"summary.json: step {summ['best_eval_step']}")
assert ev[-1]["step"] == 8 and best["step"] <= 6 and want in card and summ["best_eval_step"] == best["step"], want
PY

# --- base_model: --base-model-name wins; a local _name_or_path gives none ----------------
timeout 120 "$SL" train --model "$W/local" "${T[@]}" --out "$W/named" --base-model-name my-org/my-model \
  > "$W/named.log" 2>&1 || fail "train --base-model-name exited non-zero"
grep -q '^base_model: my-org/my-model$' "$W/named/adapter/README.md" \
  && ok "--base-model-name my-org/my-model is the card's base_model" || fail "--base-model-name: $(grep -m1 base_model "$W/named/adapter/README.md")"
grep -q '"base_model_name_or_path": ' "$W/named/adapter/adapter_config.json" || fail "adapter_config.json lost base_model_name_or_path"
timeout 120 "$SL" train --model "$W/local" "${T[@]}" --out "$W/local-run" > "$W/local.log" 2>&1 \
  || fail "train (local _name_or_path) exited non-zero"
if grep -q '^base_model:' "$W/local-run/adapter/README.md"; then
  fail "a local _name_or_path became base_model: $(grep -m1 '^base_model:' "$W/local-run/adapter/README.md")"
else ok "a local _name_or_path: no base_model line"; fi
grep -q '## Evaluation' "$W/local-run/adapter/README.md" && fail "an evaluation section without evaluation" \
  || ok "no evaluation section when the run did not evaluate"
timeout 60 "$SL" train --model "$W/m" "${T[@]}" --out "$W/badname" --base-model-name "not a/hub/id" \
  > /dev/null 2> "$W/badname.err"; rc=$?
[ $rc -eq 2 ] && grep -q -- "--base-model-name 'not a/hub/id': not a Hugging Face Hub id" "$W/badname.err" \
  && [ ! -e "$W/badname" ] && ok "--base-model-name that is not a Hub id: exit 2" || fail "bad --base-model-name: exit $rc, $(head -1 "$W/badname.err")"

if [ $fails -ne 0 ]; then echo "model_card: $fails failures"; exit 1; fi
echo "model_card: OK"
