#!/usr/bin/env bash
# Quantised frozen base (issue 18, --base-dtype int8 | nf4 | bf16) against PyTorch: quant_ref.py
# quantises the model's weights by the same published rules (written independently of our C)
# and dequantises them into an F32 model; shardlora trained with --base-dtype FORMAT on the
# original model must give the loss, every adapter gradient (steps 1 and 10) and 10 steps'
# losses of the reference on that dequantised model (fp32 compute, tolerance 1e-4 as every
# reference case). The same at tp=2 and at dp=2 (each layout's dump checked against the same
# reference), for int8 and nf4; bf16 and a tied-embedding nf4 model at step 1 on one rank.
# usage: quant_case.sh SHARDLORA_BINARY WORK_DIR CASE   (CASE: int8 | nf4 | bf16 | nf4-tied)
set -euo pipefail
SL="$1"; CASE="$3"; W="$2/quant-$CASE"
# shellcheck source=tests/reference/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"
RUN_TIMEOUT=300

# hidden 128, ffn 256, 4 heads: every projection's rows are whole NF4 blocks of 64, also at
# tp=2 (o_proj / down_proj then hold 64 / 128 columns of each row)
MM=(--layers 2 --hidden 128 --ffn 256 --heads 4 --kv-heads 2 --vocab 300 --seed 7)
TRAIN=(--no-shuffle --no-pack --seq-len 24 --micro-batch 2 --lora-r 4 --lora-alpha 8 --lr 5e-3
       --seed 11 --log-every 5 --compute-dtype fp32)
FMT="$CASE"
FULL=1   # steps 1 and 10, 10 steps' losses and the tp=2 / dp=2 layouts; else step 1 at tp=1
case "$CASE" in
  int8|nf4) ;;
  bf16) FULL=0 ;;
  nf4-tied) FMT=nf4; MM+=(--tie); FULL=0 ;;
  *) echo "quant_case.sh: unknown case $CASE" >&2; exit 2 ;;
esac
TRAIN+=(--base-dtype "$FMT")

make_data "$W/data.jsonl" --seed 5 --rows 8 --vocab 300 --mask all:0:5
"$SL" make-model --out "$W/model" "${MM[@]}" > /dev/null
"$PY" "$REF/quant_ref.py" --dequant-model "$W/model" "$W/deq" "$FMT"

if [ "$FULL" = 1 ]; then train_dumps 1 10; else train_dumps 1; fi
# what the run says it held: run.json's resolved base dtype, the summary's bytes per dtype
"$PY" - "$W/run1" "${FMT^^}" <<'PY'
import json, sys
run, fmt = sys.argv[1], sys.argv[2]
got = json.load(open(f"{run}/run.json"))["resolved"]["base_dtype"]
by = json.load(open(f"{run}/summary-rank0.json"))["frozen_bytes_by_dtype"]
assert got == fmt, f"run.json base_dtype {got}, expected {fmt}"
assert set(by) == {"F32", fmt} and by[fmt] > 50 * by["F32"], f"frozen_bytes_by_dtype {by}"
print(f"  ok   run.json base_dtype {got}; frozen bytes by dtype {by}")
PY
"$PY" "$REF/check_grads.py" --model "$W/deq" --dump "$W/dump1.safetensors"
if [ "$FULL" = 1 ]; then
"$PY" "$REF/check_grads.py" --model "$W/deq" --dump "$W/dump10.safetensors"
"$PY" "$REF/check_steps.py" --model "$W/deq" --dump "$W/dump1.safetensors" \
  --data "$W/data.jsonl" --metrics "$W/run10/metrics.jsonl" --steps 10
fi

# the layouts: tp=2 (INT8 scales over whole rows though each rank holds half of o/down's
# columns), dp=2 (the dump holds the global batch)
for lay in "--tp 2" "--tp 1"; do
  [ "$FULL" = 1 ] || break
  tag=${lay// /}
  must "$W/mpi$tag.log" "$CASE at $lay" mpiexec -n 2 "$SL" train --model "$W/model" \
    --data "$W/data.jsonl" --out "$W/run$tag" "${TRAIN[@]}" --global-batch 4 $lay --steps 2 \
    --dump-grads "$W/dump$tag.safetensors"
  "$PY" "$REF/check_grads.py" --model "$W/deq" --dump "$W/dump$tag.safetensors"
done

# the dequantised model is not the original: the check would pass on it by accident only if
# quantisation changed nothing, so the original must disagree with the dump (format != bf16
# on an F32 model changes every weight)
if "$PY" "$REF/check_grads.py" --model "$W/model" --dump "$W/dump1.safetensors" > "$W/orig.log" 2>&1; then
  cat "$W/orig.log"; echo "FAIL: the unquantised model matches the $FMT run's gradients"; exit 1
fi
echo "reference quant case $CASE: OK"
