#!/usr/bin/env bash
# A damaged latest checkpoint: one flipped byte in a shard, a truncated manifest.pb, a deleted
# shard file. For each, `shardlora inspect` on it exits 3 naming the damaged file, and
# --resume auto warns ("falling back"), resumes from the previous checkpoint and finishes with
# the uninterrupted run's exact adapter bytes.
# usage: corrupt.sh SHARDLORA_BINARY WORK_DIR
source "$(dirname "$0")/common.sh"
fault_setup corrupt "$2" 64
ARGS=(--model "$W/model" --data "$W/data.jsonl" --tp 2 --micro-batch 4 --global-batch 4 --seq-len 24
      --threads 1 --ckpt-every 10 --ckpt-chunk-bytes 4096 --lora-dropout 0.1 --log-every 1000
      --lr-schedule constant)  # runs to 40 then 60 steps: a decaying schedule would differ

train_ref 2 "${ARGS[@]}" --steps 60
train 2 "${ARGS[@]}" --steps 40 --out "$W/base" > "$W/base.log" 2>&1 || { tail "$W/base.log"; fail "the 40-step run failed"; }
[ "$(latest_step "$W/base")" = 40 ] || fail "the 40-step run's latest is step $(latest_step "$W/base"), expected 40"
ok "uninterrupted run to step 60; a run stopped at step 40 (checkpoints: $(cd "$W/base/checkpoints" && ls -d step-* | tr '\n' ' '))"

# damage KIND OUT: damages OUT's latest checkpoint; prints the file it damaged
damage() {
  local d="$2/checkpoints/step-000000040"
  case "$1" in
    flip)
      local f="$d/shard-tp1.pb" n off
      n=$(stat -c %s "$f"); off=$((n / 2))
      "$PY" -c "import sys; f=open(sys.argv[1],'r+b'); f.seek(int(sys.argv[2])); b=f.read(1); f.seek(int(sys.argv[2])); f.write(bytes([b[0]^0xff]))" "$f" "$off"
      echo "shard-tp1.pb" "byte $off of $n flipped";;
    truncate)
      local f="$d/manifest.pb" n
      n=$(stat -c %s "$f"); truncate -s $((n / 2)) "$f"
      echo "manifest.pb" "truncated from $n to $((n / 2)) bytes";;
    delete)
      rm "$d/shard-tp0.pb"
      echo "shard-tp0.pb" "deleted";;
  esac
}

for kind in flip truncate delete; do
  O="$W/$kind"
  rm -rf "$O"; cp -a "$W/base" "$O"
  read -r file what < <(damage "$kind" "$O")
  rc=0
  "$SL" inspect "$O/checkpoints/latest" > "$W/$kind.inspect.out" 2> "$W/$kind.inspect.err" || rc=$?
  [ "$rc" = 3 ] || fail "$kind: inspect of the damaged checkpoint exited $rc, expected 3"
  grep -q "$file" "$W/$kind.inspect.err" || { cat "$W/$kind.inspect.err"; fail "$kind: inspect's message does not name $file"; }
  ok "$kind ($file $what): inspect exits 3: $(head -c 200 "$W/$kind.inspect.err")"
  rc=0
  train 2 "${ARGS[@]}" --steps 60 --out "$O" > "$W/$kind.log" 2> "$W/$kind.err" || rc=$?
  [ "$rc" = 0 ] || { tail "$W/$kind.err"; fail "$kind: the resumed run exited $rc"; }
  grep -q "WARNING: .*falling back" "$W/$kind.err" || { cat "$W/$kind.err"; fail "$kind: no 'falling back' warning on stderr"; }
  grep -q "resumed from .*step-000000030 (step 30," "$W/$kind.log" "$W/$kind.err" || fail "$kind: the run did not resume from step 30"
  ok "$kind: warned '$(grep -m1 "falling back" "$W/$kind.err" | cut -c1-160)...' and resumed from step 30"
  same_adapter "$W/ref" "$O" "$kind"
  inspect_ok "$O/checkpoints/latest" "$kind: the new latest"
  [ "$(latest_step "$O")" = 60 ] || fail "$kind: latest is step $(latest_step "$O") after the run, expected 60"
done
finish
