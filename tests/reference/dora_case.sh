#!/usr/bin/env bash
# DoRA (--adapter dora, model/dora.c) against the PyTorch reference written from PEFT's formula
# (tests/reference/dora_check.py), one case per CTest test:
#   grads      loss and every gradient (lora_A, lora_B, lora_magnitude_vector) at step 1
#              (m = ||W_o||, B = 0) and step 5 (all trained) on a GQA model with q/k/v bias,
#              relative 1e-4; the same with lora_dropout 0.1 (PEFT's form: the base correction
#              and the LoRA branch on dropout(x)) at tp = 1 and at tp = 2 (column- and
#              row-parallel layers).
#   bf16       the same at step 5 on a BF16 model (||W||, A W^T, and with dropout W Xd and
#              dY W, from BF16 tiles).
#   nf4        the grads case at step 5 with --base-dtype nf4 (hidden 128, ffn 256: whole NF4
#              blocks at tp = 2) against the reference on the model quant_ref.py quantises
#              and dequantises: ||W||, A W^T and the dropout form's W Xd / dY W from NF4 tiles.
#   zero-row   all-zero rows of W in a column-parallel (q_proj) and a row-parallel (o_proj,
#              down_proj) layer: finite loss and gradients, the rows' m stays 0, gradients vs
#              the reference (clamped norm), at tp = 1 and tp = 2; `shardlora merge` keeps
#              the rows at 0 and its eval = the unmerged adapter's.
#   merge      export: adapter_config.json use_dora true, lora_magnitude_vector [out] keys;
#              `shardlora merge` of it: its logits = PyTorch's base + adapter unmerged, and
#              eval of the merged model = `shardlora eval` of the base model with the adapter
#              unmerged (DoRA import; relative 1e-5), at tp = 1 and tp = 2; generate
#              --merge-in-memory: greedy ids = unmerged, logits relative 1e-5 (tp = 1, 2);
#              export -> --init-adapter (lr 0) -> export round trip byte-identical at tp 2, 1.
#   resume     6 steps straight vs 3 steps + resume from the step-3 checkpoint: the adapters
#              are byte-identical (tp = 1 and tp = 2).
# usage: dora_case.sh SHARDLORA_BINARY WORK_DIR CASE
set -euo pipefail
SL="$1"; CASE="$3"; W="$2/dora-$CASE"
# shellcheck source=tests/reference/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"
CHK=("$PY" "$REF/dora_check.py")
TOL=1e-4          # loss and gradients vs PyTorch (issue 9)
EVAL_TOL=1e-5     # merged vs unmerged eval loss (F32)
RUN_TIMEOUT=180

MM=(--layers 2 --hidden 64 --ffn 128 --heads 4 --kv-heads 2 --vocab 259 --qkv-bias --seed 7)
TRAIN=(--adapter dora --no-shuffle --no-pack --seq-len 24 --micro-batch 2 --lora-r 4 --lora-alpha 8
       --lr 5e-3 --seed 11 --log-every 100 --threads 1)
make_data "$W/data.jsonl" --seed 5 --rows 8 --vocab 259 --mask odd:0:5

# run NP OUT ARGS...: shardlora train on NP ranks (log in OUT.log)
run() {
  local np="$1" out="$2"; shift 2
  must "$out.log" "train $(basename "$out")" mpiexec --oversubscribe -n "$np" "$SL" train --data "$W/data.jsonl" \
    --out "$out" "${TRAIN[@]}" "$@"
}

case "$CASE" in
nf4)
  MM=(--layers 2 --hidden 128 --ffn 256 --heads 4 --kv-heads 2 --vocab 259 --qkv-bias --seed 7)
  "$SL" make-model --out "$W/model" "${MM[@]}" > /dev/null
  "$PY" "$REF/quant_ref.py" --dequant-model "$W/model" "$W/deq" nf4
  for tp in 1 2; do
    D="$W/d0.1-tp$tp"
    run "$tp" "$D-s5" --model "$W/model" --base-dtype nf4 --tp "$tp" --lora-dropout 0.1 --steps 5 \
      --dump-grads "$D-s5.safetensors"
    "${CHK[@]}" grads --model "$W/deq" --dump "$D-s5.safetensors" --tol "$TOL"
  done
  ;;
grads|bf16)
  [ "$CASE" = bf16 ] && MM+=(--dtype BF16)
  "$SL" make-model --out "$W/model" "${MM[@]}" > /dev/null
  for drop in 0 0.1; do
    for tp in 1 2; do
      [ "$tp" = 2 ] && [ "$drop" = 0 ] && continue # tp = 2 without dropout: zero-row, mpi_dora
      D="$W/d$drop-tp$tp"
      run "$tp" "$D-s1" --model "$W/model" --tp "$tp" --lora-dropout "$drop" --steps 1 --dump-grads "$D-s1.safetensors"
      run "$tp" "$D-s5" --model "$W/model" --tp "$tp" --lora-dropout "$drop" --steps 5 --dump-grads "$D-s5.safetensors"
      [ "$CASE" = grads ] && "${CHK[@]}" grads --model "$W/model" --dump "$D-s1.safetensors" --tol "$TOL" --check-init
      "${CHK[@]}" grads --model "$W/model" --dump "$D-s5.safetensors" --tol "$TOL"
    done
  done
  ;;
zero-row)
  "$SL" make-model --out "$W/base" "${MM[@]}" > /dev/null
  "${CHK[@]}" zero-row --model "$W/base" --out "$W/z1" --tensor model.layers.0.self_attn.q_proj.weight --row 3 --row 40
  "${CHK[@]}" zero-row --model "$W/z1" --out "$W/z2" --tensor model.layers.1.self_attn.o_proj.weight --row 5
  "${CHK[@]}" zero-row --model "$W/z2" --out "$W/model" --tensor model.layers.0.mlp.down_proj.weight --row 0
  P=base_model.model.model.layers
  for tp in 1 2; do
    run "$tp" "$W/tp$tp" --model "$W/model" --tp "$tp" --steps 4 --dump-grads "$W/tp$tp.safetensors"
    "${CHK[@]}" finite --dump "$W/tp$tp.safetensors" --zero-mag "$P.0.self_attn.q_proj.lora_magnitude_vector" --zero-index 3
    "${CHK[@]}" finite --dump "$W/tp$tp.safetensors" --zero-mag "$P.1.self_attn.o_proj.lora_magnitude_vector" --zero-index 5
    "${CHK[@]}" grads --model "$W/model" --dump "$W/tp$tp.safetensors" --tol "$TOL"
    grep -q '"loss": *\(nan\|null\)' "$W/tp$tp/metrics.jsonl" && { echo "FAIL: non-finite loss in metrics"; exit 1; }
  done
  # `shardlora merge` keeps the zero rows at 0 (norm floored as in training, not PEFT's 0/0)
  # and the merged model's eval = the unmerged adapter's
  must "$W/merge.log" "merge with zero rows" "$SL" merge --model "$W/model" --adapter "$W/tp1/adapter" --out "$W/merged" --threads 1
  EV=(--data "$W/data.jsonl" --seq-len 24 --no-pack --threads 1)
  must "$W/eval-u.log" "eval unmerged" "$SL" eval --model "$W/model" --adapter "$W/tp1/adapter" "${EV[@]}" --out "$W/unmerged.json"
  must "$W/eval-m.log" "eval merged" "$SL" eval --model "$W/merged" "${EV[@]}" --out "$W/merged.json"
  "${CHK[@]}" evals "$W/merged.json" "$W/unmerged.json" --tol 1e-5
  ;;
merge)
  "$SL" make-model --out "$W/model" "${MM[@]}" > /dev/null
  run 1 "$W/run" --model "$W/model" --steps 6 --lr 2e-2
  A="$W/run/adapter"
  "$PY" - "$A" <<'PY'
import json, struct, sys
d = sys.argv[1]
c = json.load(open(f"{d}/adapter_config.json"))
b = open(f"{d}/adapter_model.safetensors", "rb").read()
h = json.loads(b[8:8 + struct.unpack("<Q", b[:8])[0]])
h.pop("__metadata__", None)
mags = {k: v for k, v in h.items() if k.endswith(".lora_magnitude_vector")}
B = {k[:-len(".lora_B.weight")]: v["shape"] for k, v in h.items() if k.endswith(".lora_B.weight")}
bad = [k for k, v in mags.items() if v["shape"] != [B.get(k[:-len(".lora_magnitude_vector")], [0])[0]]]
ok = c.get("use_dora") is True and c.get("peft_type") == "LORA" and len(mags) == len(B) > 0 and not bad
print(f"  {'ok  ' if ok else 'FAIL'} export: use_dora {c.get('use_dora')}, peft_type {c.get('peft_type')}, "
      f"{len(mags)} lora_magnitude_vector [out] for {len(B)} modules{f', bad shapes {bad[:3]}' if bad else ''}")
sys.exit(0 if ok else 1)
PY
  must "$W/merge.log" merge "$SL" merge --model "$W/model" --adapter "$A" --out "$W/merged" --threads 1
  "${CHK[@]}" merged --model "$W/model" --adapter "$A" --merged "$W/merged" --tol "$EVAL_TOL"
  EV=(--data "$W/data.jsonl" --seq-len 24 --no-pack --threads 1)
  for tp in 1 2; do
    must "$W/eval-u$tp.log" "eval unmerged" mpiexec --oversubscribe -n "$tp" "$SL" eval --tp "$tp" --model "$W/model" \
      --adapter "$A" "${EV[@]}" --out "$W/unmerged-tp$tp.json"
    must "$W/eval-m$tp.log" "eval merged" mpiexec --oversubscribe -n "$tp" "$SL" eval --tp "$tp" --model "$W/merged" \
      "${EV[@]}" --out "$W/merged-tp$tp.json"
    "${CHK[@]}" evals "$W/merged-tp$tp.json" "$W/unmerged-tp$tp.json" --tol "$EVAL_TOL"
  done
  # generate --merge-in-memory (llama_merge_adapters -> dora_merge, after step_begin's norms):
  # greedy ids identical and logits equal to the unmerged adapter's, at tp = 1 and tp = 2
  gen_merged_vs_unmerged "$EVAL_TOL" --model "$W/model" --adapter "$A" --max-new-tokens 16 --ignore-eos \
    --batch-size 2 --threads 1
  # export -> train --init-adapter (lr 0; DoRA comes from use_dora, m from the file, not from
  # ||W||) at tp=2 -> export, then back at tp=1: the PEFT files are byte-identical
  for step in "2 $A $W/rt1" "1 $W/rt1/adapter $W/rt2"; do
    set -- $step
    run "$1" "$3" --model "$W/model" --tp "$1" --steps 1 --lr 0 --init-adapter "$2"
    grep -q "adapter: initialised from" "$3.log" || { tail -3 "$3.log"; echo "FAIL: $3 did not start from the adapter"; exit 1; }
  done
  for f in adapter_model.safetensors adapter_config.json; do
    cmp "$A/$f" "$W/rt1/adapter/$f" && cmp "$W/rt1/adapter/$f" "$W/rt2/adapter/$f" \
      || { echo "FAIL: DoRA export -> import -> export: $f differs"; exit 1; }
    echo "  ok   export -> import (tp=2) -> export -> import (tp=1) -> export: $f identical"
  done
  ;;
resume)
  "$SL" make-model --out "$W/model" "${MM[@]}" > /dev/null
  R=(--model "$W/model" --lr-schedule constant --ckpt-every 3 --lora-dropout 0.1)
  for tp in 1 2; do
    run "$tp" "$W/ref$tp" "${R[@]}" --tp "$tp" --steps 6
    run "$tp" "$W/cut$tp" "${R[@]}" --tp "$tp" --steps 3
    run "$tp" "$W/cut$tp" "${R[@]}" --tp "$tp" --steps 6
    grep -q "resumed from .*step-0*3 " "$W/cut$tp.log" || { grep -i resum "$W/cut$tp.log"; echo "FAIL: tp $tp did not resume from step 3"; exit 1; }
    if cmp -s "$W/ref$tp/adapter/adapter_model.safetensors" "$W/cut$tp/adapter/adapter_model.safetensors"; then
      echo "  ok   tp $tp: 6 steps = 3 steps + resume to 6, adapter_model.safetensors byte-identical" \
           "($(stat -c %s "$W/ref$tp/adapter/adapter_model.safetensors") bytes)"
    else
      "$PY" "$REF/../fault/adapter_diff.py" "$W/ref$tp/adapter/adapter_model.safetensors" \
        "$W/cut$tp/adapter/adapter_model.safetensors" 0 || true
      echo "FAIL: tp $tp: resumed adapter differs from the uninterrupted run's"; exit 1
    fi
  done
  ;;
*) echo "dora_case.sh: unknown case $CASE" >&2; exit 2 ;;
esac
echo "dora case $CASE: OK"
