#!/usr/bin/env bash
# LoRA-FA and LoRA+ (issue 9) against the PyTorch reference: train 1 and 10 steps with
# --dump-grads, check the loss and every (raw, unprojected) gradient (step 1 and 10) and 10
# replayed optimizer steps (variants_check.py: LoRA-FA as PEFT's LoraFAOptimizer, lora_A frozen
# and lora_B's gradient projected by (1/s^2) pinv(A A^T + 1e-8 I) / LoRA+: lora_B's lr x
# ratio), and for LoRA-FA that no lora_A moved in 10 steps.
# usage: variants_case.sh SHARDLORA_BINARY WORK_DIR CASE
set -euo pipefail
SL="$1"; CASE="$3"; W="$2/variants-$CASE"
# shellcheck source=tests/reference/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

MM=(--layers 2 --hidden 64 --ffn 96 --heads 4 --kv-heads 2 --vocab 300 --seed 7)
TRAIN=(--no-shuffle --no-pack --seq-len 24 --micro-batch 2 --lora-r 4 --lora-alpha 8 --lr 5e-3 --seed 11 --log-every 5)
case "$CASE" in
  lorafa) TRAIN+=(--adapter lora-fa) ;;
  # PEFT's create_lorafa_optimizer as it runs: its AdamW (transformers') with its eps 1e-6
  lorafa-peft) TRAIN+=(--adapter lora-fa --optimizer adamw-hf --eps 1e-6 --weight-decay 0.1) ;;
  loraplus) TRAIN+=(--loraplus-ratio 16 --weight-decay 0.05) ;;
  lorafa-loraplus-sgd) TRAIN+=(--adapter lora-fa --loraplus-ratio 4 --optimizer sgd --momentum 0.9 --lr 0.2
                               --use-rslora --max-grad-norm 0.5) ;;
  *) echo "variants_case.sh: unknown case $CASE" >&2; exit 2 ;;
esac

make_data "$W/data.jsonl" --seed 5 --rows 8 --vocab 300 --mask all:0:5
"$SL" make-model --out "$W/model" "${MM[@]}"
train_dumps 1 10
"$PY" "$REF/variants_check.py" grads --model "$W/model" --dump "$W/dump1.safetensors"
"$PY" "$REF/variants_check.py" grads --model "$W/model" --dump "$W/dump10.safetensors"
"$PY" "$REF/variants_check.py" steps --model "$W/model" --dump "$W/dump1.safetensors" \
  --data "$W/data.jsonl" --metrics "$W/run10/metrics.jsonl" --steps 10
case "$CASE" in
  lorafa*) "$PY" "$REF/variants_check.py" frozen "$W/dump1.safetensors" "$W/dump10.safetensors" ;;
esac
echo "variants case $CASE: OK"
