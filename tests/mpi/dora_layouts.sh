#!/usr/bin/env bash
# DoRA (--adapter dora) at (tp, dp) in {(1,1), (2,1), (4,1), (2,2)} on a GQA model with
# kv-heads 2 < tp = 4 (replicated kv heads: m of k/v has B's PARAM_SYNC_KV class), tied
# embeddings and q/k/v bias: the same loss, gradients (lora_A, lora_B, lora_magnitude_vector)
# and adapter after 5 AdamW steps as (1,1), and (1,1) equals the PyTorch reference
# (tests/reference/dora_check.py); all of it at lora_dropout 0 and 0.1 (PEFT's dropout form:
# a second pass with W on dropout(x), whose row-parallel part is a TP partial sum; the masks
# are keyed by global token and column, so every layout draws the same ones).
# Comparisons: tests/mpi/mpi_check.py (the layouts test's).
# usage: dora_layouts.sh SHARDLORA_BINARY WORK_DIR
set -uo pipefail
SL="$1"; W="$2/mpi/dora"
# shellcheck source=tests/mpi/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"
REF_TOL=1e-4         # (1,1) vs PyTorch; the layouts' tolerances: common.sh

model m --hidden 64 --ffn 128 --heads 4 --kv-heads 2 --vocab 301 --tie --qkv-bias
make_data "$W/data.jsonl" --seed 5 --rows 7 --len 8 28 --vocab 301 --mask odd:1:5
COMMON=(--adapter dora --model "$W/m" --data "$W/data.jsonl" --no-shuffle --no-pack --seq-len 16 --threads 1
        --peak-gflops 1 --lora-r 4 --lora-alpha 8 --lr 5e-3 --seed 11 --log-every 100 --micro-batch 1
        --global-batch 4)

for drop in 0 0.1; do
  ok1=() ok5=() okr=()
  P="$W/d$drop"
  for L in 1x1 2x1 4x1 2x2; do
    tp=${L%x*}; dp=${L#*x}; n="d$drop-tp$tp-dp$dp"
    train "$n-s1" "$tp" "$dp" --lora-dropout "$drop" --steps 1 --dump-grads "$W/$n-s1.safetensors" \
      && ok1+=("$W/$n-s1.safetensors@${tp}x$dp")
    train "$n-s5" "$tp" "$dp" --lora-dropout "$drop" --steps 5 --dump-grads "$W/$n-s5.safetensors" \
      && { ok5+=("$W/$n-s5.safetensors@${tp}x$dp"); okr+=("$W/$n-s5"); }
  done
  if [ -f "$P-tp1-dp1-s1.safetensors" ] && [ -f "$P-tp1-dp1-s5.safetensors" ]; then
    check "dropout $drop: (1,1) step-1 dump vs PyTorch (m = ||W_o||, B = 0)" "$PY" "$REF/dora_check.py" \
      grads --model "$W/m" --dump "$P-tp1-dp1-s1.safetensors" --tol "$REF_TOL" --check-init
    check "dropout $drop: (1,1) step-5 dump vs PyTorch" "$PY" "$REF/dora_check.py" grads \
      --model "$W/m" --dump "$P-tp1-dp1-s5.safetensors" --tol "$REF_TOL"
  else
    fail "dropout $drop: no (1,1) reference run"
  fi
  check_layouts "dropout $drop: " "(1,1)" 5 ok1 ok5 okr
  [ ${#ok1[@]} -eq 4 ] && [ ${#ok5[@]} -eq 4 ] || fail "dropout $drop: only ${#ok1[@]} + ${#ok5[@]} of 4 + 4 runs succeeded"
done

mpi_finish "mpi dora"
