#!/usr/bin/env bash
# VeRA / PiSSA at (tp, dp) in {(1,1), (2,1), (4,1), (2,2)} on a model with 2 kv heads (tp=4
# replicates them): each layout's dump against the PyTorch reference, and against tp=1.
# usage: vera_pissa_layouts.sh SHARDLORA_BINARY WORK_DIR vera|pissa
set -uo pipefail
SL="$1"; KIND="$3"; W="$2/mpi/$KIND-layouts"
# shellcheck source=tests/mpi/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"
LAYOUT_TOL=1e-4   # VeRA: gradients after 3 AdamW steps vs tp=1; PiSSA: initial adapters
model model --hidden 64 --ffn 128 --heads 4 --kv-heads 2 --vocab 259
make_data "$W/data.jsonl" --seed 5 --rows 7 --len 8 28 --vocab 259
COMMON=(--model "$W/model" --data "$W/data.jsonl" --no-shuffle --no-pack --seq-len 24 --micro-batch 1
        --global-batch 4 --lora-r 4 --lora-alpha 8 --lr 5e-3 --seed 11 --threads 1 --target-modules all)
# VeRA steps with SGD + momentum: AdamW's first step divides each lambda_b gradient by its own
# size, so an element whose step-1 gradient is rounding noise (lambda_b = 0 at init) moves by a
# noise-driven fraction of lr and the layouts' tensors differ by ~1e-2 there while every
# gradient agrees (mpi_equivalence checks AdamW across layouts by tensor norms).
if [ "$KIND" = vera ]; then COMMON+=(--adapter vera --lora-dropout 0.1 --optimizer sgd --momentum 0.9 --lr 0.5); STEPS=3
else COMMON+=(--init pissa --pissa-iters 40); STEPS=1; fi
for l in "1 1" "2 1" "4 1" "2 2"; do
  set -- $l; tp=$1; dp=$2; n="t${tp}d${dp}"
  train "$n" "$tp" "$dp" --steps $STEPS --dump-grads "$W/$n.safetensors" || continue
  "$PY" "$REF/${KIND}_check.py" --model "$W/model" --dump "$W/$n.safetensors" | tail -1 || fail "reference tp=$tp dp=$dp"
  [ "$n" = t1d1 ] && continue
  "$PY" -c "
import sys; sys.path.insert(0, '$REF'); import torch_llama as tl
a, _ = tl.read_safetensors('$W/t1d1.safetensors'); b, _ = tl.read_safetensors('$W/$n.safetensors')
w = 0.0
for k in a:
    if k in ('input_ids', 'labels', 'position_ids'): continue
    x, y = b[k].double(), a[k].double(); s = float(y.abs().max())
    w = max(w, float((x - y).abs().max()) / (s if s > 1e-12 else 1.0))
print(f'  tp=$tp dp=$dp vs tp=1: every tensor and gradient, max rel diff {w:.3e} (tol $LAYOUT_TOL)')
sys.exit(0 if w <= $LAYOUT_TOL else 1)" || fail "tp=$tp dp=$dp vs tp=1"
done
mpi_finish "$KIND layouts"
