#!/usr/bin/env bash
# VeRA (model/vera.c) against the PyTorch reference written from PEFT's formula
# (tests/reference/vera_check.py): loss and every lambda gradient at step 1 (the init:
# lambda_d = 0.1, lambda_b = 0) and step 10, with Philox dropout; the PEFT VERA export
# (projections saved, equal to PEFT's for projection_prng_key = the run seed); checkpoint /
# resume bit-exact; import of the export (eval at tp=1 / tp=2 = the run's own eval,
# byte-identical round trip, edited projections refused). PEFT-made adapters, merge and
# generate --merge-in-memory: vera_peft_case.sh.
# usage: vera_case.sh SHARDLORA_BINARY WORK_DIR
set -euo pipefail
SL="$1"; W="$2/vera"
# shellcheck source=tests/reference/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"
SEED=11
make_data "$W/data.jsonl" --seed 5 --rows 8 --vocab 259 --mask fixed:3
"$SL" make-model --out "$W/model" --layers 2 --hidden 64 --ffn 128 --heads 4 --kv-heads 2 --vocab 259 --seed 7
TRAIN=(--adapter vera --no-shuffle --no-pack --seq-len 24 --micro-batch 2 --lora-r 8 --lr 5e-3
       --lr-schedule constant --seed $SEED --threads 1 --target-modules all --lora-dropout 0.1)
train_dumps 1 10
"$PY" "$REF/vera_check.py" --model "$W/model" --dump "$W/dump1.safetensors" --check-init
"$PY" "$REF/vera_check.py" --model "$W/model" --dump "$W/dump10.safetensors"
# export: after 10 steps; the dump of step 11 holds the adapter after 10 updates
export_step10
"$PY" "$REF/vera_check.py" --model "$W/model" --export "$W/export10" --seed $SEED --dump "$W/dump11.safetensors"
# resume: 5 steps, then the same command to 10 steps resumes; the step-10 dump must be
# bit-identical to the uninterrupted run's
check_resume 10

# import (PEFT's VERA format read back): the run's own final evaluation (--eval-data) equals
# `shardlora eval --adapter` of its exported adapter at tp=1 and tp=2 (relative EVAL_TOL);
# export -> train --init-adapter (lr 0, another run seed: the projections keep the file's
# projection_prng_key) -> export is byte-identical, through tp=2 and back to tp=1; an adapter
# whose projections are not those of its key (one value of vera_A changed) is refused with
# exit 3, and train leaves no output directory; one that does not save them (save_projection
# false) evaluates as the one that does.
EVAL_TOL=1e-6
EV=(--no-pack --seq-len 24 --micro-batch 2 --threads 1 --log-level warn)
train_with_eval
"$SL" eval --model "$W/model" --adapter "$W/ev/adapter" --data "$W/data.jsonl" "${EV[@]}" --out "$W/eval-tp1.json"
mpiexec -n 2 "$SL" eval --model "$W/model" --adapter "$W/ev/adapter" --data "$W/data.jsonl" "${EV[@]}" --tp 2 \
  --out "$W/eval-tp2.json"
check_train_eval "$EVAL_TOL" "vera import" "$W/eval-tp1.json" "$W/eval-tp2.json"
RT=(--no-shuffle --no-pack --seq-len 24 --micro-batch 2 --lr 0 --lr-schedule constant --seed 3 --threads 1 --steps 1
    --log-level warn)
mpiexec -n 2 "$SL" train --model "$W/model" --data "$W/data.jsonl" --out "$W/rt1" "${RT[@]}" --tp 2 \
  --init-adapter "$W/ev/adapter" > "$W/rt1.log"
"$SL" train --model "$W/model" --data "$W/data.jsonl" --out "$W/rt2" "${RT[@]}" --init-adapter "$W/rt1/adapter" \
  > "$W/rt2.log"
for f in adapter_model.safetensors adapter_config.json; do
  cmp "$W/ev/adapter/$f" "$W/rt1/adapter/$f"
  cmp "$W/rt1/adapter/$f" "$W/rt2/adapter/$f"
  echo "vera import: export -> import (tp=2) -> export -> import (tp=1) -> export: $f identical ($(stat -c %s "$W/rt2/adapter/$f") bytes)"
done
cp -r "$W/ev/adapter" "$W/tampered"
st_scale "$W/tampered/adapter_model.safetensors" base_model.vera_A 5
WANT="VeRA projections are not those of its projection_prng_key $SEED"
expect_refused eval-tampered "$WANT" "$SL" eval --model "$W/model" --adapter "$W/tampered" --data "$W/data.jsonl" "${EV[@]}"
expect_refused train-tampered "$WANT" "$SL" train --model "$W/model" --data "$W/data.jsonl" --out "$W/rt-bad" "${RT[@]}" \
  --init-adapter "$W/tampered"
[ ! -e "$W/rt-bad" ] || { echo "FAIL: a refused --init-adapter left $W/rt-bad"; exit 1; }
echo '{"input_ids": [1, 2, 3]}' > "$W/prompts.jsonl"
expect_refused generate-tampered "$WANT" "$SL" generate --model "$W/model" --adapter "$W/tampered" \
  --prompts "$W/prompts.jsonl" --max-new-tokens 2 --threads 1 --log-level warn
cp -r "$W/ev/adapter" "$W/nosave"
sed -i 's/"save_projection": true/"save_projection": false/' "$W/nosave/adapter_config.json"
st_drop "$W/nosave/adapter_model.safetensors" base_model.vera_
"$SL" eval --model "$W/model" --adapter "$W/nosave" --data "$W/data.jsonl" "${EV[@]}" --out "$W/eval-nosave.json"
cmp <("$PY" -c "import json; print(json.load(open('$W/eval-nosave.json'))['loss'])") \
    <("$PY" -c "import json; print(json.load(open('$W/eval-tp1.json'))['loss'])")
echo "vera import: save_projection false (projections regenerated from the key): the same eval loss"
echo "vera_case: OK"
