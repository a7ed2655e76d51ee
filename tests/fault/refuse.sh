#!/usr/bin/env bash
# Refusals: resuming OUT with another --lora-r, another model (a different --hidden), another
# --lora-alpha or another --optimizer exits 3 with "cannot resume" and leaves
# OUT/checkpoints untouched (listing with sizes and mtimes, and sha256 of every file).
# usage: refuse.sh SHARDLORA_BINARY WORK_DIR
source "$(dirname "$0")/common.sh"
fault_setup refuse "$2" 64
make_model "$W/model128" 128
COMMON=(--data "$W/data.jsonl" --tp 2 --micro-batch 4 --global-batch 4 --seq-len 16 --threads 1
        --ckpt-every 5 --log-every 1000 --out "$W/run")
train 2 --model "$W/model" "${COMMON[@]}" --steps 10 > "$W/run.log" 2>&1 || { tail "$W/run.log"; fail "the first run failed"; }
snapshot "$W/run/checkpoints" > "$W/before.txt"
ok "a run to step 10 at r=8: $(grep -c ' [df] ' "$W/before.txt") entries in OUT/checkpoints, latest -> step $(latest_step "$W/run")"

for case in "lora-r:--model $W/model --lora-r 4" "model:--model $W/model128" \
            "lora-alpha:--model $W/model --lora-alpha 32" "optimizer:--model $W/model --optimizer sgd"; do
  name=${case%%:*}
  read -r -a extra <<< "${case#*:}"
  rc=0
  train 2 "${COMMON[@]}" "${extra[@]}" --steps 20 > "$W/$name.log" 2> "$W/$name.err" || rc=$?
  [ "$rc" = 3 ] || { tail "$W/$name.err"; fail "$name: the run exited $rc, expected 3"; }
  grep -q "shardlora: error: cannot resume: " "$W/$name.err" || { cat "$W/$name.err"; fail "$name: no 'cannot resume' message"; }
  snapshot "$W/run/checkpoints" > "$W/after.txt"
  diff "$W/before.txt" "$W/after.txt" > /dev/null || { diff "$W/before.txt" "$W/after.txt" | head; fail "$name: OUT/checkpoints changed"; }
  desc="${extra[*]}"; desc=${desc//$W\//}
  ok "another $name ($desc): exit 3, $(grep -m1 "cannot resume" "$W/$name.err" | cut -c1-200)...; OUT/checkpoints unchanged"
done
finish
