#!/usr/bin/env bash
# kill -9 one rank of a 4-rank run after some checkpoints exist: mpiexec must end non-zero
# within 20 s (no hang); relaunching the same command (--resume auto) completes and its final
# adapter is byte-identical to an uninterrupted run's.
#   kill_rank.sh SHARDLORA_BINARY WORK_DIR         tp=2 dp=2: rank 2 is killed
#   kill_rank.sh SHARDLORA_BINARY WORK_DIR pp      tp=2 pp=2 (stages [0,1) and [1,2)): rank 1
#       (stage 0, which the other stage waits on) is killed, the relaunch resumes, then rank 2
#       (the last stage) is killed in that relaunch, and a second relaunch finishes the run
source "$(dirname "$0")/common.sh"
MODE="${3:-dp}"
fault_setup "kill_rank_$MODE" "$2" 256
STEPS=200
ARGS=(--model "$W/model" --data "$W/data.jsonl" --tp 2 --micro-batch 2 --global-batch 4 --seq-len 64
      --steps $STEPS --threads 1 --ckpt-every 10 --lora-dropout 0.1 --log-every 100)
VICTIMS=(2)
LAYOUT="tp=2 dp=2"
if [ "$MODE" = pp ]; then
  ARGS=(--model "$W/model" --data "$W/data.jsonl" --tp 2 --pp 2 --micro-batch 1 --global-batch 4
        --seq-len 64 --steps $STEPS --threads 1 --ckpt-every 10 --lora-dropout 0.1 --log-every 100)
  VICTIMS=(1 2)
  LAYOUT="tp=2 pp=2"
fi

t=$(date +%s.%N)
train_ref 4 "${ARGS[@]}"
ok "uninterrupted run: $STEPS steps at $LAYOUT in $(since "$t") s"

# kill_one VICTIM LOG MINSTEP: launches the run (resuming whatever is there), kills rank
# VICTIM once latest >= MINSTEP, checks mpiexec ends non-zero within 20 s; sets $left
kill_one() {
  local victim_rank="$1" log="$2" min="$3"
  "${MPI[@]}" -n 4 "$SL" train "${ARGS[@]}" --out "$W/run" > "$log" 2>&1 &
  local mpid=$! victim="" p
  wait_ckpt "$W/run" "$min" 60 "$mpid"
  for p in $(rank_pids "$mpid"); do [ "$(rank_of "$p")" = "$victim_rank" ] && victim=$p; done
  [ -n "$victim" ] || fail "cannot find the pid of rank $victim_rank (ranks: $(rank_pids "$mpid"))"
  local at tk rc=0 dt
  at=$(latest_step "$W/run")
  kill -9 "$victim"
  tk=$(date +%s.%N)
  # wait for mpiexec at most 20 s
  while kill -0 "$mpid" 2>/dev/null; do
    awk -v a="$(since "$tk")" 'BEGIN { exit !(a > 20) }' && { kill -9 "$mpid" $(rank_pids "$mpid"); fail "mpiexec still running 20 s after rank $victim_rank was killed (hang)"; }
    sleep 0.05
  done
  wait "$mpid" || rc=$?
  dt=$(since "$tk")
  [ "$rc" != 0 ] || fail "mpiexec exited 0 after a rank was killed"
  ok "kill -9 rank $victim_rank (pid $victim) when latest was step $at: mpiexec exited $rc after $dt s"
  left=$(latest_step "$W/run")
  [ "$left" -lt $STEPS ] || fail "the run reached step $STEPS before the kill landed (make it longer)"
  [ ! -e "$W/run/adapter/adapter_model.safetensors" ] || fail "the killed run wrote a final adapter"
  inspect_ok "$W/run/checkpoints/latest" "after the kill"
  ok "after the kill: latest -> step $left, inspect 0, no final adapter"
}

kill_one "${VICTIMS[0]}" "$W/run1.log" 30
if [ "${#VICTIMS[@]}" -gt 1 ]; then
  first=$left
  kill_one "${VICTIMS[1]}" "$W/run1b.log" $((first + 20))
  grep -q "resumed from .*step-0*$first (step $first" "$W/run1b.log" || { grep resumed "$W/run1b.log"; fail "the first relaunch did not resume from step $first"; }
fi

t=$(date +%s.%N)
train 4 "${ARGS[@]}" --out "$W/run" > "$W/run2.log" 2>&1 || { tail "$W/run2.log"; fail "the relaunch failed"; }
grep -q "resumed from .*step-0*$left (step $left" "$W/run2.log" || { grep resumed "$W/run2.log"; fail "the relaunch did not resume from step $left"; }
ok "relaunch with --resume auto resumed from step $left and finished in $(since "$t") s"
same_adapter "$W/ref" "$W/run" "kill -9 one rank + resume ($LAYOUT)"
finish
