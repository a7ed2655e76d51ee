#!/usr/bin/env bash
# kill -9 one rank of a 4-rank run (tp=2, dp=2) after some checkpoints exist: mpiexec must end
# non-zero within 20 s (no hang); relaunching the same command (--resume auto) completes and
# its final adapter is byte-identical to an uninterrupted run's.
# usage: kill_rank.sh SHARDLORA_BINARY WORK_DIR
source "$(dirname "$0")/common.sh"
fault_setup kill_rank "$2" 256
STEPS=200
ARGS=(--model "$W/model" --data "$W/data.jsonl" --tp 2 --micro-batch 2 --global-batch 4 --seq-len 64
      --steps $STEPS --threads 1 --ckpt-every 10 --lora-dropout 0.1 --log-every 100)

t=$(date +%s.%N)
train_ref 4 "${ARGS[@]}"
ok "uninterrupted run: $STEPS steps at tp=2 dp=2 in $(since "$t") s"

"${MPI[@]}" -n 4 "$SL" train "${ARGS[@]}" --out "$W/run" > "$W/run1.log" 2>&1 &
mpid=$!
wait_ckpt "$W/run" 30 60 "$mpid"
victim=""
for p in $(rank_pids "$mpid"); do [ "$(rank_of "$p")" = 2 ] && victim=$p; done
[ -n "$victim" ] || fail "cannot find the pid of rank 2 (ranks: $(rank_pids "$mpid"))"
at=$(latest_step "$W/run")
kill -9 "$victim"
tk=$(date +%s.%N)
# wait for mpiexec at most 20 s
while kill -0 "$mpid" 2>/dev/null; do
  awk -v a="$(since "$tk")" 'BEGIN { exit !(a > 20) }' && { kill -9 "$mpid" $(rank_pids "$mpid"); fail "mpiexec still running 20 s after rank 2 was killed (hang)"; }
  sleep 0.05
done
rc=0; wait "$mpid" || rc=$?
dt=$(since "$tk")
[ "$rc" != 0 ] || fail "mpiexec exited 0 after a rank was killed"
ok "kill -9 rank 2 (pid $victim) when latest was step $at: mpiexec exited $rc after $dt s"
left=$(latest_step "$W/run")
[ "$left" -lt $STEPS ] || fail "the run reached step $STEPS before the kill landed (make it longer)"
[ ! -e "$W/run/adapter/adapter_model.safetensors" ] || fail "the killed run wrote a final adapter"
inspect_ok "$W/run/checkpoints/latest" "after the kill"
ok "after the kill: latest -> step $left, inspect 0, no final adapter"

t=$(date +%s.%N)
train 4 "${ARGS[@]}" --out "$W/run" > "$W/run2.log" 2>&1 || { tail "$W/run2.log"; fail "the relaunch failed"; }
grep -q "resumed from .*step-0*$left (step $left" "$W/run2.log" || { grep resumed "$W/run2.log"; fail "the relaunch did not resume from step $left"; }
ok "relaunch with --resume auto resumed from step $left and finished in $(since "$t") s"
same_adapter "$W/ref" "$W/run" "kill -9 one rank + resume"
finish
