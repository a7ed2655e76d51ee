#!/usr/bin/env bash
# LoRA-FA and LoRA+ (issue 9) over the process grid: 3 steps at (tp, dp) in (1,1) (2,1) (4,1)
# (2,2) give the same loss, gradients and adapter, every target module adapted (so LoRA-FA's
# B-gradient projection runs on row-parallel o_proj / down_proj with A sharded, A A^T summed
# over TP); each layout's losses also replay against the PyTorch reference with PEFT's
# LoRA-FA rule (reference/variants_check.py steps); a resumed run ends bit-exact with an
# uninterrupted one; LoRA-FA keeps half the optimizer memory of LoRA when in = out; the
# exported adapter is plain PEFT LoRA (use_rslora kept) and imports back with its scale.
# usage: variants_layouts.sh SHARDLORA_BINARY WORK_DIR
set -uo pipefail
SL="$1"; W="$2/mpi/variants"
# shellcheck source=tests/mpi/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"
TOL=1e-4               # loss, gradients and adapter at step 3, relative per tensor (the issue's
                       # bound; layouts.sh's LATE_GRAD_TOL: measured <= 1.9e-5, fp32 sum order)
LAYOUTS="1x1 2x1 4x1 2x2"   # tp x dp
MM=(--layers 2 --hidden 64 --ffn 128 --heads 4 --kv-heads 2 --vocab 259)
TRAIN=(--threads 1 --no-shuffle --no-pack --seq-len 16 --micro-batch 1 --global-batch 4 --lora-r 4
       --lora-alpha 8 --seed 3 --log-every 1 --optimizer sgd --momentum 0.9 --lr 0.3
       --adapter lora-fa --loraplus-ratio 8 --use-rslora)

"$SL" make-model --out "$W/model" "${MM[@]}" --seed 5 >/dev/null || { echo "make-model failed"; exit 1; }
make_data "$W/data.jsonl" --seed 9 --rows 16 --len 8 20 --vocab 259

train() {  # train NP OUT args...
  local np="$1" out="$2"; shift 2
  timeout "$RUN_TIMEOUT" mpiexec --oversubscribe -n "$np" "$SL" train --model "$W/model" --data "$W/data.jsonl" \
    --out "$out" "${TRAIN[@]}" "$@" > "$out.log" 2>&1 || { fail "train $out (see $out.log)"; tail -5 "$out.log"; }
}

# 1. layouts
for lay in $LAYOUTS; do
  tp=${lay%x*}; dp=${lay#*x}
  train $((tp * dp)) "$W/run-$lay" --tp "$tp" --steps 3 --target-modules all --dump-grads "$W/dump-$lay.safetensors"
done
"$PY" "$MPI_DIR/variants_layouts_check.py" layouts "$W" "$TOL" $LAYOUTS || fail "layouts"
# the step-1 dump (initial adapter and batch, the same at every layout) for the replays
train 1 "$W/run-step1" --steps 1 --target-modules all --dump-grads "$W/dump-step1.safetensors"
for lay in $LAYOUTS; do
  out=$("$PY" "$REF/variants_check.py" steps --model "$W/model" --dump "$W/dump-step1.safetensors" \
        --data "$W/data.jsonl" --metrics "$W/run-$lay/metrics.jsonl" --steps 3 2>&1)
  rc=$?
  echo "$out" | grep -E "FAIL|error" ; echo "$(echo "$out" | tail -1) [$lay]"
  [ $rc -eq 0 ] || fail "reference replay of layout $lay"
done

# 2. checkpoint / resume: 4 steps straight vs 2 steps, checkpoint, resume to 4 (at tp=2)
train 2 "$W/straight" --tp 2 --steps 4
train 2 "$W/half" --tp 2 --steps 4 --ckpt-every 2
mkdir -p "$W/resumed/checkpoints"
cp -r "$W/half/checkpoints/step-000000002" "$W/resumed/checkpoints/" 2>/dev/null \
  || fail "no step-2 checkpoint in $W/half/checkpoints ($(ls "$W/half/checkpoints" 2>&1))"
train 2 "$W/resumed" --tp 2 --steps 4 --resume "$W/resumed/checkpoints/step-000000002"
if cmp "$W/straight/adapter/adapter_model.safetensors" "$W/resumed/adapter/adapter_model.safetensors"; then
  echo "ok   resume: the adapter after 4 steps is bit-exact with the resumed run (tp=2)"
else
  fail "resume: adapters differ"
fi

# 3. memory: LoRA vs LoRA-FA on q_proj,o_proj (in = out = 64): optimizer state halves
for k in lora lora-fa; do
  train 1 "$W/mem-$k" --steps 1 --target-modules q_proj,o_proj --adapter "$k"
done
"$PY" "$MPI_DIR/variants_layouts_check.py" memory "$W/mem-lora" "$W/mem-lora-fa" || fail "memory"

# 4. export / import: plain PEFT LoRA with use_rslora; imported back with the rsLoRA scale
"$PY" "$MPI_DIR/variants_layouts_check.py" export "$W/run-1x1/adapter" "$W/dump-1x1.safetensors" || fail "export"
train 2 "$W/import" --tp 2 --steps 1 --adapter lora --loraplus-ratio 0 --init-adapter "$W/run-1x1/adapter" \
  --dump-grads "$W/dump-import.safetensors"
"$PY" "$MPI_DIR/variants_layouts_check.py" import "$W/run-1x1/adapter" "$W/dump-import.safetensors" || fail "import"
"$PY" "$REF/check_grads.py" --model "$W/model" --dump "$W/dump-import.safetensors" | tail -1 || fail "import reference"

mpi_finish variants_layouts
