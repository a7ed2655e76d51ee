#!/usr/bin/env bash
# Refusals: training OUT with another --lora-r, another model (a different --hidden), another
# --lora-alpha or another --optimizer exits 2 before anything is written, naming the option
# and both values, and leaves all of OUT as it was (listing with sizes and mtimes, and sha256
# of every file, token cache included). Without OUT/run-state.json (an older shardlora's run,
# or checkpoints copied in), the checkpoint's own checks refuse: exit 3 with "cannot resume",
# OUT/checkpoints untouched.
# usage: refuse.sh SHARDLORA_BINARY WORK_DIR
source "$(dirname "$0")/common.sh"
fault_setup refuse "$2" 64
make_model "$W/model128" 128
COMMON=(--data "$W/data.jsonl" --tp 2 --micro-batch 4 --global-batch 4 --seq-len 16 --threads 1
        --ckpt-every 5 --log-every 1000)
train 2 --model "$W/model" "${COMMON[@]}" --out "$W/run" --steps 10 > "$W/run.log" 2>&1 || { tail "$W/run.log"; fail "the first run failed"; }
snapshot "$W/run" > "$W/before.txt"
ok "a run to step 10 at r=8: $(grep -c ' [df] ' "$W/before.txt") entries in OUT, latest -> step $(latest_step "$W/run")"
# the same checkpoints without the run's record
mkdir -p "$W/bare" && cp -a "$W/run/checkpoints" "$W/bare/"
snapshot "$W/bare/checkpoints" > "$W/bare-before.txt"

for case in "lora-r:--model $W/model --lora-r 4:--lora-r is 8, this one's 4" \
            "model:--model $W/model128:model is \"LlamaForCausalLM hidden=64 .*this one's \"LlamaForCausalLM hidden=128" \
            "lora-alpha:--model $W/model --lora-alpha 32:--lora-alpha is 16.0, this one's 32.0" \
            "optimizer:--model $W/model --optimizer sgd:--optimizer is \"adamw\", this one's \"sgd\""; do
  IFS=: read -r name args want <<< "$case"
  read -r -a extra <<< "$args"
  rc=0
  train 2 "${COMMON[@]}" --out "$W/run" "${extra[@]}" --steps 20 > "$W/$name.log" 2> "$W/$name.err" || rc=$?
  [ "$rc" = 2 ] || { tail "$W/$name.err"; fail "$name: the run exited $rc, expected 2"; }
  grep -q "shardlora: error: .*/run holds another run: its $want" "$W/$name.err" || { cat "$W/$name.err"; fail "$name: no 'holds another run: its $want'"; }
  grep -q -- "add --overwrite" "$W/$name.err" || fail "$name: the refusal names no remedy"
  snapshot "$W/run" > "$W/after.txt"
  diff "$W/before.txt" "$W/after.txt" > /dev/null || { diff "$W/before.txt" "$W/after.txt" | head; fail "$name: OUT changed"; }
  desc="${extra[*]}"; desc=${desc//$W\//}
  ok "another $name ($desc): exit 2, $(grep -m1 "holds another run" "$W/$name.err" | cut -c1-160)...; OUT unchanged"

  rc=0
  train 2 "${COMMON[@]}" --out "$W/bare" "${extra[@]}" --steps 20 > "$W/$name.bare.log" 2> "$W/$name.bare.err" || rc=$?
  [ "$rc" = 3 ] || { tail "$W/$name.bare.err"; fail "$name, no run-state.json: the run exited $rc, expected 3"; }
  grep -q "shardlora: error: cannot resume: " "$W/$name.bare.err" || { cat "$W/$name.bare.err"; fail "$name, no run-state.json: no 'cannot resume' message"; }
  snapshot "$W/bare/checkpoints" > "$W/bare-after.txt"
  diff "$W/bare-before.txt" "$W/bare-after.txt" > /dev/null || { diff "$W/bare-before.txt" "$W/bare-after.txt" | head; fail "$name, no run-state.json: OUT/checkpoints changed"; }
  ok "  and without run-state.json: exit 3, $(grep -m1 "cannot resume" "$W/$name.bare.err" | cut -c1-120)...; OUT/checkpoints unchanged"
done
finish
