#!/usr/bin/env bash
# VeRA (model/vera.c) against the PyTorch reference written from PEFT's formula
# (tests/reference/vera_check.py): loss and every lambda gradient at step 1 (the init:
# lambda_d = 0.1, lambda_b = 0) and step 10, with Philox dropout; the PEFT VERA export
# (projections saved, equal to Philox's); checkpoint / resume bit-exact.
# usage: vera_case.sh SHARDLORA_BINARY WORK_DIR
set -euo pipefail
SL="$1"; W="$2/vera"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PY=/usr/bin/python3
SEED=11
rm -rf "$W"; mkdir -p "$W"
"$PY" - > "$W/data.jsonl" <<'PY'
import json, random
rng = random.Random(5)
for i in range(8):
    n = rng.randint(10, 30)
    ids = [rng.randrange(259) for _ in range(n)]
    row = {"input_ids": ids}
    if i % 2:
        row["labels"] = [-100] * 3 + ids[3:]
    print(json.dumps(row))
PY
"$SL" make-model --out "$W/model" --layers 2 --hidden 64 --ffn 128 --heads 4 --kv-heads 2 --vocab 259 --seed 7
TRAIN=(--adapter vera --no-shuffle --no-pack --seq-len 24 --micro-batch 2 --lora-r 8 --lr 5e-3
       --lr-schedule constant --seed $SEED --threads 1 --target-modules all --lora-dropout 0.1)
"$SL" train --model "$W/model" --data "$W/data.jsonl" --out "$W/run1" "${TRAIN[@]}" --steps 1 \
  --dump-grads "$W/dump1.safetensors"
"$SL" train --model "$W/model" --data "$W/data.jsonl" --out "$W/run10" "${TRAIN[@]}" --steps 10 \
  --dump-grads "$W/dump10.safetensors"
"$PY" "$HERE/vera_check.py" --model "$W/model" --dump "$W/dump1.safetensors" --check-init
"$PY" "$HERE/vera_check.py" --model "$W/model" --dump "$W/dump10.safetensors"
# export: after 10 steps; the dump of step 11 holds the adapter after 10 updates
"$SL" train --model "$W/model" --data "$W/data.jsonl" --out "$W/run11" "${TRAIN[@]}" --steps 11 \
  --ckpt-every 10 --dump-grads "$W/dump11.safetensors"
"$SL" export "$W/run11/checkpoints/step-000000010" --out "$W/export10"
"$PY" "$HERE/vera_check.py" --model "$W/model" --export "$W/export10" --seed $SEED --dump "$W/dump11.safetensors"
# resume: 5 steps, then the same command to 10 steps resumes; the step-10 dump must be
# bit-identical to the uninterrupted run's
"$SL" train --model "$W/model" --data "$W/data.jsonl" --out "$W/res" "${TRAIN[@]}" --steps 5
"$SL" train --model "$W/model" --data "$W/data.jsonl" --out "$W/res" "${TRAIN[@]}" --steps 10 \
  --dump-grads "$W/dump10r.safetensors"
cmp "$W/dump10.safetensors" "$W/dump10r.safetensors"
echo "vera_case: resume bit-exact (dump of step 10 identical)"
echo "vera_case: OK"
