#!/usr/bin/env bash
# PiSSA (--init pissa, model/pissa.c) against PEFT's definition (tests/reference/pissa_check.py):
# the initial s B A equals the top-r SVD product of W, A A^T = B^T B = S_r / s, the loss at
# step 1 equals the original model's and loss + gradients equal the reference on the residual
# model; the rank-2r PEFT export applied to the ORIGINAL base gives the trained model's logits;
# checkpoint / resume bit-exact. The made model's spectrum is flat (random weights), so the
# randomized SVD needs many power iterations (PISSA_ITERS) to separate the top r.
# usage: pissa_case.sh SHARDLORA_BINARY WORK_DIR [rslora]
set -euo pipefail
SL="$1"; CASE="${3:-plain}"; W="$2/pissa-$CASE"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PY=/usr/bin/python3
PISSA_ITERS=40
rm -rf "$W"; mkdir -p "$W"
"$PY" - > "$W/data.jsonl" <<'PY'
import json, random
rng = random.Random(9)
for i in range(8):
    n = rng.randint(10, 30)
    print(json.dumps({"input_ids": [rng.randrange(259) for _ in range(n)]}))
PY
"$SL" make-model --out "$W/model" --layers 2 --hidden 64 --ffn 128 --heads 4 --kv-heads 2 --vocab 259 --seed 7
TRAIN=(--init pissa --pissa-iters $PISSA_ITERS --no-shuffle --no-pack --seq-len 24 --micro-batch 2
       --lora-r 4 --lora-alpha 8 --lr 5e-3 --lr-schedule constant --seed 11 --threads 1 --target-modules all)
[ "$CASE" = rslora ] && TRAIN+=(--use-rslora)
"$SL" train --model "$W/model" --data "$W/data.jsonl" --out "$W/run1" "${TRAIN[@]}" --steps 1 \
  --dump-grads "$W/dump1.safetensors"
"$PY" "$HERE/pissa_check.py" --model "$W/model" --dump "$W/dump1.safetensors"
"$SL" train --model "$W/model" --data "$W/data.jsonl" --out "$W/run11" "${TRAIN[@]}" --steps 11 \
  --ckpt-every 10 --dump-grads "$W/dump11.safetensors"
"$SL" export "$W/run11/checkpoints/step-000000010" --out "$W/export10"
"$PY" "$HERE/pissa_check.py" --model "$W/model" --dump "$W/dump1.safetensors" \
  --export "$W/export10" --trained "$W/dump11.safetensors"
"$SL" train --model "$W/model" --data "$W/data.jsonl" --out "$W/res" "${TRAIN[@]}" --steps 5
"$SL" train --model "$W/model" --data "$W/data.jsonl" --out "$W/res" "${TRAIN[@]}" --steps 11 \
  --dump-grads "$W/dump11r.safetensors"
cmp "$W/dump11.safetensors" "$W/dump11r.safetensors"
echo "pissa_case $CASE: resume bit-exact (dump of step 11 identical)"
# the run's own final evaluation (--eval-data, on the residual base) equals `shardlora eval
# --adapter` of its converted rank-2r export on the ORIGINAL model (relative EVAL_TOL)
EVAL_TOL=1e-5
"$SL" train --model "$W/model" --data "$W/data.jsonl" --out "$W/ev" "${TRAIN[@]}" --steps 6 \
  --eval-data "$W/data.jsonl" --log-level warn > "$W/ev.log"
EV=(--no-pack --seq-len 24 --micro-batch 2 --threads 1 --log-level warn)
"$SL" eval --model "$W/model" --adapter "$W/ev/adapter" --data "$W/data.jsonl" "${EV[@]}" --out "$W/eval.json"
"$SL" eval --model "$W/model" --data "$W/data.jsonl" "${EV[@]}" --out "$W/eval-base.json"
"$PY" - "$W" "$EVAL_TOL" <<'PY'
import json, sys
w, tol = sys.argv[1], float(sys.argv[2])
train = [json.loads(l) for l in open(f"{w}/ev/metrics.jsonl") if "eval_loss" in l][-1]
cfg = json.load(open(f"{w}/ev/adapter/adapter_config.json"))
e = json.load(open(f"{w}/eval.json"))
base = json.load(open(f"{w}/eval-base.json"))["loss"]
rel = abs(e["loss"] - train["eval_loss"]) / abs(train["eval_loss"])
ok = rel <= tol and e["tokens"] == train["eval_tokens"] and abs(base - e["loss"]) > 1e-4
print(f"pissa: eval of the rank-{cfg['r']} export on the original model {e['loss']:.9f} vs the run's eval at step "
      f"{train['step']} {train['eval_loss']:.9f} (relative {rel:.2e}, tol {tol:g}; base alone {base:.9f}) "
      f"{'ok' if ok else 'FAIL'}")
sys.exit(0 if ok else 1)
PY
echo "pissa_case $CASE: OK"
