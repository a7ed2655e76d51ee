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
# shellcheck source=tests/reference/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"
PISSA_ITERS=40
make_data "$W/data.jsonl" --seed 9 --rows 8 --vocab 259
"$SL" make-model --out "$W/model" --layers 2 --hidden 64 --ffn 128 --heads 4 --kv-heads 2 --vocab 259 --seed 7
TRAIN=(--init pissa --pissa-iters $PISSA_ITERS --no-shuffle --no-pack --seq-len 24 --micro-batch 2
       --lora-r 4 --lora-alpha 8 --lr 5e-3 --lr-schedule constant --seed 11 --threads 1 --target-modules all)
[ "$CASE" = rslora ] && TRAIN+=(--use-rslora)
train_dumps 1
"$PY" "$REF/pissa_check.py" --model "$W/model" --dump "$W/dump1.safetensors"
export_step10
"$PY" "$REF/pissa_check.py" --model "$W/model" --dump "$W/dump1.safetensors" \
  --export "$W/export10" --trained "$W/dump11.safetensors"
check_resume 11
# the run's own final evaluation (--eval-data, on the residual base) equals `shardlora eval
# --adapter` of its converted rank-2r export on the ORIGINAL model (relative EVAL_TOL)
EVAL_TOL=1e-5
EV=(--no-pack --seq-len 24 --micro-batch 2 --threads 1 --log-level warn)
train_with_eval
"$SL" eval --model "$W/model" --adapter "$W/ev/adapter" --data "$W/data.jsonl" "${EV[@]}" --out "$W/eval.json"
check_train_eval "$EVAL_TOL" "pissa: rank-2r export on the original model" "$W/eval.json"
echo "pissa_case $CASE: OK"
