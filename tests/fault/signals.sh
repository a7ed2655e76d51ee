#!/usr/bin/env bash
# SIGUSR1 sent to mpiexec mid-run (4 ranks, tp=2 dp=2): exit status 75, a checkpoint newer
# than the last periodic one exists and is intact, --resume auto completes with the
# uninterrupted run's exact adapter. The same with SIGTERM sent directly to every rank
# process: "checkpoint written", intact, and the resume is exact.
# usage: signals.sh SHARDLORA_BINARY WORK_DIR
source "$(dirname "$0")/common.sh"
fault_setup signals "$2" 256
STEPS=120
EVERY=30
ARGS=(--model "$W/model" --data "$W/data.jsonl" --tp 2 --micro-batch 2 --global-batch 4 --seq-len 64
      --steps $STEPS --threads 1 --ckpt-every $EVERY --lora-dropout 0.1 --log-every 1000)

t=$(date +%s.%N)
train_ref 4 "${ARGS[@]}"
ok "uninterrupted run: $STEPS steps at tp=2 dp=2 in $(since "$t") s"

# wait_exit PID SECONDS: waits for mpiexec; sets rc to its status; fails on a hang
wait_exit() {
  local t0=$SECONDS
  while kill -0 "$1" 2>/dev/null; do
    [ $((SECONDS - t0)) -lt "$2" ] || { kill -9 "$1" $(rank_pids "$1"); fail "mpiexec still running $2 s after the signal"; }
    sleep 0.05
  done
  rc=0; wait "$1" || rc=$?
}

for sig in USR1 TERM; do
  O="$W/run-$sig"
  "${MPI[@]}" -n 4 "$SL" train "${ARGS[@]}" --out "$O" > "$W/$sig.log" 2>&1 &
  mpid=$!
  wait_ckpt "$O" $EVERY 120 "$mpid"
  sleep 0.1
  P=$(latest_step "$O")
  if [ $sig = USR1 ]; then
    kill -USR1 "$mpid"
    target="mpiexec"
  else
    pids=$(rank_pids "$mpid")
    [ "$(echo $pids | wc -w)" = 4 ] || fail "found $(echo $pids | wc -w) rank processes, expected 4"
    kill -TERM $pids
    target="the 4 rank processes"
  fi
  wait_exit "$mpid" 60
  N=$(latest_step "$O")
  signum=$([ $sig = USR1 ] && echo 10 || echo 15)
  grep -q "signal $signum: checkpoint written" "$W/$sig.log" || { tail "$W/$sig.log"; fail "SIG$sig: no 'signal $signum: checkpoint written' in the log"; }
  if [ $sig = USR1 ]; then
    [ "$rc" = 75 ] || { tail "$W/$sig.log"; fail "SIGUSR1: mpiexec exited $rc, expected 75"; }
  fi
  [ "$N" -gt "$P" ] && [ "$N" -lt $STEPS ] || fail "SIG$sig: latest is step $N; expected newer than the periodic step $P and before $STEPS"
  grep -q "checkpoint: step $N written" "$W/$sig.log" || fail "SIG$sig: the log does not report writing step $N"
  inspect_ok "$O/checkpoints/latest" "SIG$sig"
  [ ! -e "$O/adapter/adapter_model.safetensors" ] || fail "SIG$sig: a final adapter was written by the stopped run"
  kind=$([ $((N % EVERY)) = 0 ] && echo "a periodic step as well" || echo "not a periodic step")
  ok "SIG$sig to $target when latest was step $P: exit status $rc, checkpoint of step $N written ($kind), inspect 0"
  train 4 "${ARGS[@]}" --out "$O" > "$W/$sig.resume.log" 2>&1 || { tail "$W/$sig.resume.log"; fail "SIG$sig: the resumed run failed"; }
  grep -q "resumed from .*step-0*$N (step $N," "$W/$sig.resume.log" || fail "SIG$sig: the resumed run did not start from step $N"
  same_adapter "$W/ref" "$O" "SIG$sig + --resume auto from step $N"
done
finish
