#!/usr/bin/env bash
# kill -9 the whole job (mpiexec and every rank at once) while it writes a checkpoint every
# step in many small chunks (--ckpt-every 1 --ckpt-chunk-bytes 256), in several rounds at
# different moments. After each kill `latest` must point at an intact checkpoint (inspect 0),
# and a run resumed from that state must finish with the uninterrupted run's exact adapter.
# The rounds chain: each resumes from the state the previous kill left.
# usage: kill_during_write.sh SHARDLORA_BINARY WORK_DIR
source "$(dirname "$0")/common.sh"
fault_setup kill_during_write "$2" 128
STEPS=60
ARGS=(--model "$W/model" --data "$W/data.jsonl" --tp 2 --micro-batch 2 --global-batch 4 --seq-len 16
      --steps $STEPS --threads 1 --ckpt-every 1 --ckpt-chunk-bytes 256 --lora-r 32 --lora-dropout 0.1 --log-every 1000)

t=$(date +%s.%N)
train_ref 4 "${ARGS[@]}"
ok "uninterrupted run: $STEPS steps, a checkpoint every step ($(du -sk "$W/ref/checkpoints/latest/" | cut -f1) KiB each) in $(since "$t") s"

mid_write=0
prev=0
round=0
# Rounds 1-3 kill as soon as a step-N.tmp directory (a write in progress) is seen, after 0,
# 2 and 6 ms; round 4 kills at a time unrelated to the writes.
for delay in 0 0.002 0.006 0.23; do
  round=$((round + 1))
  "${MPI[@]}" -n 4 "$SL" train "${ARGS[@]}" --out "$W/run" > "$W/run$round.log" 2>&1 &
  mpid=$!
  wait_ckpt "$W/run" $((prev + 3)) 60 "$mpid"
  if [ $round -le 3 ]; then
    # busy-poll with a builtin (no fork) for an unfinished write
    t0=$SECONDS
    until compgen -G "$W/run/checkpoints/step-*.tmp" > /dev/null; do
      [ $((SECONDS - t0)) -lt 30 ] || fail "round $round: no checkpoint write seen in 30 s"
    done
  fi
  [ "$delay" = 0 ] || sleep "$delay"
  kill -0 "$mpid" 2>/dev/null || fail "round $round: the run ended before the kill (make it longer)"
  pids=$(rank_pids "$mpid")
  kill -9 $pids "$mpid" 2>/dev/null
  wait "$mpid" 2>/dev/null
  # the ranks are gone once they are reaped by init; wait for them so nothing writes any more
  for p in $pids; do while kill -0 "$p" 2>/dev/null; do sleep 0.01; done; done
  at=$(latest_step "$W/run")
  tmps=$(cd "$W/run/checkpoints" && ls -d step-*.tmp 2>/dev/null | tr '\n' ' ')
  [ -n "$tmps" ] && mid_write=$((mid_write + 1))
  [ "$at" -lt $STEPS ] || fail "round $round: the run finished before the kill"
  [ "$at" -gt "$prev" ] || fail "round $round: latest did not advance ($at <= $prev)"
  inspect_ok "$W/run/checkpoints/latest" "round $round"
  for d in "$W"/run/checkpoints/step-*[0-9]; do inspect_ok "$d" "round $round (${d##*/})"; done
  when=$([ $round -le 3 ] && echo "$delay s after a write began" || echo "$delay s after checkpoint $((prev + 3))")
  ok "round $round: killed the job $when; latest -> step $at, inspect 0 on it and on $(ls -d "$W"/run/checkpoints/step-*[0-9] | wc -l) committed ones; unfinished writes left: ${tmps:-none}"
  # a resumed run from exactly this state must finish with the exact adapter
  rm -rf "$W/copy"; cp -a "$W/run" "$W/copy"
  train 4 "${ARGS[@]}" --out "$W/copy" > "$W/copy$round.log" 2>&1 || { tail "$W/copy$round.log"; fail "round $round: the resumed run failed"; }
  grep -q "resumed from .* (step $at," "$W/copy$round.log" || fail "round $round: the resumed run did not resume from step $at"
  same_adapter "$W/ref" "$W/copy" "round $round resumed from step $at"
  prev=$at
done
[ "$mid_write" -gt 0 ] || fail "none of the $round kills landed during a checkpoint write (no step-N.tmp left behind)"
ok "$mid_write of $round kills landed during a checkpoint write (a step-N.tmp was left)"
finish
