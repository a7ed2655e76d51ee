#!/usr/bin/env bash
# Disk full during a checkpoint write: the model, data and OUT live on a small tmpfs sized so
# that two checkpoints fit and the third does not (steps 10 and 20 fit, 30 and 40 do not). The run must report the failure of that
# checkpoint clearly (stderr names the step and "No space left on device"), the previous
# checkpoint must stay intact (inspect 0) and `latest` must point at it. Needs root to mount
# (a loop-mounted ext4 image is tried if tmpfs cannot be mounted); never skipped.
# usage: disk_full.sh SHARDLORA_BINARY WORK_DIR
source "$(dirname "$0")/common.sh"
FS="$2/disk_full/fs"
mountpoint -q "$FS" 2>/dev/null && umount "$FS"
setup_work disk_full "$2"
cleanup() { mountpoint -q "$FS" 2>/dev/null && umount "$FS"; }
trap cleanup EXIT

make_data "$W/data.jsonl"
make_model "$W/model" 64
ARGS=(--data "$FS/data.jsonl" --tp 2 --micro-batch 4 --global-batch 4 --seq-len 24 --threads 1
      --ckpt-every 10 --keep-checkpoints 0 --log-every 1000
      --cache-dir "$W/token-cache")  # only the checkpoints go to the small filesystem
# probe on the ordinary disk: the size of one checkpoint
train 2 "${ARGS[@]/$FS/$W}" --model "$W/model" --steps 10 --out "$W/probe" > "$W/probe.log" 2>&1 || { tail "$W/probe.log"; fail "the probe run failed"; }
C=$(du -sk "$W/probe/checkpoints/step-000000010" | cut -f1)
M=$(du -sk "$W/model" | cut -f1)
D=$(du -sk "$W/data.jsonl" | cut -f1)
SIZE=$((M + D + 2 * C + C / 2 + 48))
ok "one checkpoint takes $C KiB, the model $M KiB, the data $D KiB: a filesystem of $SIZE KiB"

mkdir -p "$FS"
if mount -t tmpfs -o size=${SIZE}k tmpfs "$FS" 2> "$W/mount.err"; then
  ok "mounted a ${SIZE} KiB tmpfs on $FS"
else
  echo "tmpfs mount failed: $(cat "$W/mount.err"); trying a loop-mounted ext4 image"
  truncate -s $((SIZE + 1024))k "$W/fs.img" && mkfs.ext4 -q -m 0 "$W/fs.img" && mount -o loop "$W/fs.img" "$FS" \
    || fail "cannot mount a small filesystem (tmpfs or loop ext4) at $FS: the disk-full test needs root and mount"
  ok "mounted a loop ext4 image on $FS"
fi
cp -r "$W/model" "$FS/model" && cp "$W/data.jsonl" "$FS/data.jsonl" || fail "the model and data do not fit the filesystem"
ok "model and data copied to it: $(df -k --output=used,avail "$FS" | tail -1 | awk '{print $1 " KiB used, " $2 " KiB free"}')"

rc=0
train 2 "${ARGS[@]}" --model "$FS/model" --steps 40 --out "$FS/run" > "$W/run.log" 2> "$W/run.err" || rc=$?
echo "--- stderr of the run (exit status $rc):"; grep -v "^\[shardlora" "$W/run.err" | head -20; echo "---"
ls -la "$FS/run/checkpoints" > "$W/ls.txt" 2>&1
grep -q "checkpoint of step 30 failed" "$W/run.err" || { cat "$W/ls.txt"; fail "no 'checkpoint of step 30 failed' on stderr"; }
grep "checkpoint of step 30 failed" "$W/run.err" | grep -q "No space left on device" || fail "the failure message does not say 'No space left on device'"
ok "the run reported: $(grep -m1 "checkpoint of step 30 failed" "$W/run.err" | cut -c1-220)"
grep -q "step 40/40" "$W/run.log" "$W/run.err" || fail "training did not continue to step 40 after the failed checkpoint of step 30"
ok "training continued after the failed periodic checkpoint to step 40 (whose checkpoint failed too: $(grep -c "checkpoint of step 40 failed" "$W/run.err") message(s))"
[ "$rc" != 0 ] || fail "the run exited 0 although its checkpoints and outputs could not be written"
ok "the run exited $rc"
[ "$(latest_step "$FS/run")" = 20 ] || { cat "$W/ls.txt"; fail "latest is step $(latest_step "$FS/run"), expected 20"; }
inspect_ok "$FS/run/checkpoints/latest" "after disk full"
inspect_ok "$FS/run/checkpoints/step-000000010" "after disk full"
for s in 30 40; do [ ! -e "$FS/run/checkpoints/step-0000000$s" ] || fail "a step-0000000$s directory looks committed"; done
ok "latest -> step 20, inspect 0 on it and on step 10; no committed step 30 or 40"

# The same run configured to stop at a failed checkpoint: exit 4 at step 30, step 20 intact.
rm -rf "$FS/run"
rc=0
train 2 "${ARGS[@]}" --model "$FS/model" --steps 40 --on-ckpt-failure stop --out "$FS/run2" > "$W/run2.log" 2> "$W/run2.err" || rc=$?
[ "$rc" = 4 ] || { tail -5 "$W/run2.err"; fail "--on-ckpt-failure stop: exit status $rc, expected 4"; }
grep -q "stopping (--on-ckpt-failure stop)" "$W/run2.err" || fail "--on-ckpt-failure stop: no 'stopping' message"
! grep -q "step 3[1-9]/40\|step 40/40" "$W/run2.log" "$W/run2.err" || fail "--on-ckpt-failure stop: training went on after the failed checkpoint"
[ "$(latest_step "$FS/run2")" = 20 ] || fail "--on-ckpt-failure stop: latest is step $(latest_step "$FS/run2"), expected 20"
inspect_ok "$FS/run2/checkpoints/latest" "after a stop on disk full"
[ -z "$(ls -d "$FS/run2/checkpoints/"*.tmp 2>/dev/null)" ] || fail "the failed checkpoint's .tmp directory was left behind"
ok "--on-ckpt-failure stop: exit 4 at step 30, latest -> step 20 intact, no .tmp left behind"
finish
