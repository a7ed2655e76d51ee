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
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
set -uo pipefail
SL="$1"; W="$2/mpi/dora"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PY=/usr/bin/python3
CHECK=("$PY" "$HERE/mpi_check.py")
RUN_TIMEOUT=120
GRAD_TOL=1e-5        # step-1 loss and gradients vs (1,1) (tests/mpi/layouts.sh)
LATE_GRAD_TOL=1e-4   # step-5 gradients (adapters drifted by rounding)
ADAM_TOL=5e-4        # adapter after 5 AdamW steps, per element (layouts.sh explains the bound)
ADAM_NORM_TOL=1e-4   # ... and as a whole tensor, ||a - b|| / ||b||
REF_TOL=1e-4         # (1,1) vs PyTorch
FAILS=()
rm -rf "$W"; mkdir -p "$W"

fail() { FAILS+=("$1"); echo "FAIL: $1"; }
check() { local name="$1"; shift; echo "== $name"; "$@" || fail "$name"; }

"$SL" make-model --out "$W/m" --layers 2 --seed 3 --hidden 64 --ffn 128 --heads 4 --kv-heads 2 --vocab 301 \
  --tie --qkv-bias > "$W/m.log" 2>&1 || { cat "$W/m.log"; echo "FAIL: make-model"; exit 1; }
"$PY" - > "$W/data.jsonl" <<'PY'
import json, random
rng = random.Random(5)
for i in range(7):
    n = rng.randint(8, 28)
    ids = [rng.randrange(301) for _ in range(n)]
    row = {"input_ids": ids}
    if i % 2:
        k = rng.randint(1, 5)
        row["labels"] = [-100] * k + ids[k:]
    print(json.dumps(row))
PY
COMMON=(--adapter dora --model "$W/m" --data "$W/data.jsonl" --no-shuffle --no-pack --seq-len 16 --threads 1
        --peak-gflops 1 --lora-r 4 --lora-alpha 8 --lr 5e-3 --seed 11 --log-every 100 --micro-batch 1
        --global-batch 4)

train() {
  local name="$1" tp="$2" dp="$3"; shift 3
  local rc=0
  timeout "$RUN_TIMEOUT" mpiexec --oversubscribe -n $((tp * dp)) "$SL" train "${COMMON[@]}" --out "$W/$name" \
    --tp "$tp" "$@" > "$W/$name.log" 2>&1 || rc=$?
  if [ "$rc" -ne 0 ]; then
    fail "run $name (tp $tp, dp $dp) exited $rc"
    grep -i 'shardlora\|error\|assert' "$W/$name.log" | tail -n 4 | sed 's/^/    /'
    return 1
  fi
  echo "run $name (tp $tp, dp $dp): OK"
}

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
    check "dropout $drop: (1,1) step-1 dump vs PyTorch (m = ||W_o||, B = 0)" "$PY" "$HERE/../reference/dora_check.py" \
      grads --model "$W/m" --dump "$P-tp1-dp1-s1.safetensors" --tol "$REF_TOL" --check-init
    check "dropout $drop: (1,1) step-5 dump vs PyTorch" "$PY" "$HERE/../reference/dora_check.py" grads \
      --model "$W/m" --dump "$P-tp1-dp1-s5.safetensors" --tol "$REF_TOL"
  else
    fail "dropout $drop: no (1,1) reference run"
  fi
  [ ${#ok1[@]} -gt 1 ] && check "dropout $drop: step-1 loss and gradients vs (1,1), rel $GRAD_TOL" \
    "${CHECK[@]}" dumps --tol "$GRAD_TOL" "${ok1[0]%@*}" "${ok1[@]:1}"
  [ ${#ok5[@]} -gt 1 ] && check "dropout $drop: step-5 gradients (rel $LATE_GRAD_TOL) and adapter (rel $ADAM_TOL) vs (1,1)" \
    "${CHECK[@]}" dumps --tol "$LATE_GRAD_TOL" --value-tol "$ADAM_TOL" "${ok5[0]%@*}" "${ok5[@]:1}"
  [ ${#okr[@]} -gt 1 ] && check "dropout $drop: adapter after 5 AdamW steps (rel $ADAM_TOL) and per-step metrics vs (1,1)" \
    "${CHECK[@]}" adapters --steps 5 --tol "$ADAM_TOL" --norm-rel-tol "$ADAM_NORM_TOL" "${okr[0]}" "${okr[@]:1}"
  [ ${#ok1[@]} -eq 4 ] && [ ${#ok5[@]} -eq 4 ] || fail "dropout $drop: only ${#ok1[@]} + ${#ok5[@]} of 4 + 4 runs succeeded"
done

if [ ${#FAILS[@]} -gt 0 ]; then
  echo "mpi dora: FAILED ${#FAILS[@]} check(s):"; printf '  %s\n' "${FAILS[@]}"; exit 1
fi
echo "mpi dora: OK"
