#!/usr/bin/env bash
# One reference configuration: make a model, train 1 and 10 steps with --dump-grads, and
# check the loss, every adapter gradient (at step 1, B = 0, and at step 10) and the losses
# of 10 optimizer steps against the PyTorch reference (torch_llama.py), and that the step-1
# adapter is the Philox initialisation (--check-init). LoRA dropout masks are reproduced
# with the reference's own Philox (philox.py).
# usage: run_case.sh SHARDLORA_BINARY WORK_DIR CASE
set -euo pipefail
SL="$1"; CASE="$3"; W="$2/$CASE"
# shellcheck source=tests/reference/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

MM=(--layers 2 --hidden 64 --ffn 96 --heads 4 --vocab 300 --seed 7)
TRAIN=(--no-shuffle --no-pack --seq-len 24 --micro-batch 2 --lora-r 4 --lora-alpha 8 --lr 5e-3 --seed 11 --log-every 5)
DATA=plain
INIT=default
case "$CASE" in
  mha) ;;
  gqa) MM+=(--kv-heads 2) ;;
  qwen2-bias) MM+=(--arch qwen2 --kv-heads 2) ;;
  llama-attention-bias) MM+=(--qkv-bias) ;;
  tied) MM+=(--tie) ;;
  llama3-rope) MM+=(--rope-scaling llama3 --rope-theta 500000 --rope-factor 8 \
                    --rope-low-freq-factor 1 --rope-high-freq-factor 4 --rope-original-max-pos 16) ;;
  bf16) MM+=(--dtype BF16) ;;
  sharded) MM+=(--shards 3) ;;
  head-dim) MM+=(--head-dim 24 --kv-heads 2) ;;   # 4 heads x 24 = 96 != hidden 64
  packed) DATA=packed ;;
  rslora-subset) TRAIN+=(--use-rslora --target-modules q_proj,v_proj,down_proj --lora-init gaussian)
                 INIT=gaussian ;;
  adamw-decay) TRAIN+=(--weight-decay 0.1 --beta1 0.8 --beta2 0.95 --eps 1e-6) ;;
  sgd) TRAIN+=(--optimizer sgd --momentum 0.9 --nesterov --weight-decay 0.01 --lr 0.5) ;;
  dropout) TRAIN+=(--lora-dropout 0.1) ;;
  dropout-gqa) MM+=(--kv-heads 2)
               TRAIN+=(--lora-dropout 0.3 --target-modules q_proj,k_proj,v_proj,o_proj,down_proj) ;;
  recompute) MM=(--layers 3 --hidden 64 --ffn 96 --heads 4 --kv-heads 2 --vocab 300 --seed 7)
             TRAIN+=(--lora-dropout 0.2 --recompute layer) ;;  # layers 0 and 1 recomputed
  *) echo "run_case.sh: unknown case $CASE" >&2; exit 2 ;;
esac

# Deterministic data: varied lengths (truncated and padded rows), masked prompt tokens;
# 'packed' rows hold several documents with position_ids restarting at 0.
if [ "$DATA" = packed ]; then
  make_data "$W/data.jsonl" --seed 5 --rows 8 --vocab 300 --packed
else
  make_data "$W/data.jsonl" --seed 5 --rows 8 --vocab 300 --mask all:0:5
fi

"$SL" make-model --out "$W/model" "${MM[@]}"
train_dumps 1 10
"$PY" "$REF/check_grads.py" --model "$W/model" --dump "$W/dump1.safetensors" \
  --check-init --init-kind "$INIT"
"$PY" "$REF/check_grads.py" --model "$W/model" --dump "$W/dump10.safetensors"
"$PY" "$REF/check_steps.py" --model "$W/model" --dump "$W/dump1.safetensors" \
  --data "$W/data.jsonl" --metrics "$W/run10/metrics.jsonl" --steps 10
echo "reference case $CASE: OK"
