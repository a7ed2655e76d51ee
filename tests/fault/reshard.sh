#!/usr/bin/env bash
# Resharding: a run at (tp,dp) = (2,2) stopped at step 15 is resumed at (4,1), (1,1) and
# (1,2) to step 30 (same global batch of 4); each final adapter equals the uninterrupted (2,2)
# run's within relative 1e-4 (max |a - b| / max |ref| per tensor; the max error is printed).
# usage: reshard.sh SHARDLORA_BINARY WORK_DIR
source "$(dirname "$0")/common.sh"
fault_setup reshard "$2" 64
ARGS=(--model "$W/model" --data "$W/data.jsonl" --global-batch 4 --seq-len 24 --threads 1
      --ckpt-every 5 --lora-dropout 0.1 --lr 3e-3 --log-every 1000
      --lr-schedule constant)  # runs to 15 then 30 steps: a decaying schedule would differ

train 4 "${ARGS[@]}" --tp 2 --micro-batch 2 --steps 30 --out "$W/ref" > "$W/ref.log" 2>&1 || { tail "$W/ref.log"; fail "the uninterrupted (2,2) run failed"; }
train 4 "${ARGS[@]}" --tp 2 --micro-batch 2 --steps 15 --out "$W/base" > "$W/base.log" 2>&1 || { tail "$W/base.log"; fail "the (2,2) run to step 15 failed"; }
[ "$(latest_step "$W/base")" = 15 ] || fail "the stopped run's latest is step $(latest_step "$W/base")"
ok "uninterrupted (2,2) run to step 30; (2,2) run stopped at step 15"

# name np tp micro-batch
for layout in "4x1 4 4 4" "1x1 1 1 4" "1x2 2 1 2" "4x1-accum 4 4 2"; do
  read -r name np tp mb <<< "$layout"
  O="$W/r$name"
  rm -rf "$O"; cp -a "$W/base" "$O"
  train "$np" "${ARGS[@]}" --tp "$tp" --micro-batch "$mb" --steps 30 --out "$O" > "$W/$name.log" 2>&1 || { tail "$W/$name.log"; fail "resume at $name failed"; }
  grep -q "resumed from .*step-000000015 (step 15, written at tp=2 pp=1 dp=2; now tp=$tp pp=1 dp=$((np / tp)))" "$W/$name.log" || { grep resumed "$W/$name.log"; fail "$name: not resumed from step 15 of the (2,2) run"; }
  res=$("$PY" "$FAULT_DIR/adapter_diff.py" "$W/ref/adapter/adapter_model.safetensors" "$O/adapter/adapter_model.safetensors" 1e-4) \
    || fail "resumed at (tp,dp)=($tp,$((np / tp))) micro-batch $mb: $res"
  ok "resumed at (tp,dp)=($tp,$((np / tp))) micro-batch $mb from step 15 to 30: $res"
done
finish
