#!/usr/bin/env bash
# Sizes a user can type or a config.json can hold are refused before they size an allocation:
# each oversized flag ends with exit 2 and each oversized config.json field with exit 3, in one
# line naming the flag or the file and key, within seconds, never with 70 (an internal fault)
# and with no rank left waiting (some cases under mpiexec -np 2). The memory estimate printed
# before allocating refuses a micro-batch the node cannot hold (exit 2 naming --micro-batch),
# matches the memory table measured at the end of real runs, and can be overridden. A full
# disk (a small tmpfs, so this needs root and mount, as tests/fault/disk_full.sh) leaves
# metrics.jsonl and metrics.csv ending with a whole line, with one warning, and plot reads them.
# usage: sizes.sh SHARDLORA_BINARY WORK_DIR
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
set -uo pipefail
SL="$(readlink -f "$1")"; W="$2/sizes"
PY=/usr/bin/python3
FS="$W/fs"
mountpoint -q "$FS" 2>/dev/null && umount "$FS"
rm -rf "$W"; mkdir -p "$W"
cleanup() { mountpoint -q "$FS" 2>/dev/null && umount "$FS"; }
trap cleanup EXIT
fail() { echo "FAIL: $*"; exit 1; }
ok() { echo "ok: $*"; }

"$SL" make-model --out "$W/model" --layers 2 --hidden 64 --ffn 128 --heads 4 --kv-heads 2 \
  --vocab 259 --seed 3 > /dev/null || fail "make-model"
"$SL" make-model --out "$W/model2" --layers 2 --hidden 128 --ffn 256 --heads 4 --kv-heads 2 \
  --vocab 259 --seed 3 > /dev/null || fail "make-model"
"$PY" - /usr/share/common-licenses/GPL-3 > "$W/data.jsonl" <<'PY'
import json, sys
b = open(sys.argv[1], 'rb').read()[:1500]
for i in range(0, len(b) - 64, 64):
    print(json.dumps({"input_ids": list(b[i:i + 64])}))
PY
[ "$(wc -l < "$W/data.jsonl")" = 23 ] || fail "expected 23 data rows"

# refused NAME NP WANT_RC PATTERN CMD ARGS...: runs `shardlora CMD ARGS` (under mpiexec when
# NP > 1) with a 30 s timeout; the exit status must be WANT_RC and stderr must hold exactly one
# "shardlora ..." line, matching PATTERN.
refused() {
  local name="$1" np="$2" want="$3" pat="$4"; shift 4
  local t0=$(date +%s.%N) rc=0
  if [ "$np" -gt 1 ]; then
    timeout 30 mpiexec --oversubscribe -n "$np" "$SL" "$@" > "$W/$name.out" 2> "$W/$name.err" || rc=$?
  else
    timeout 30 "$SL" "$@" > "$W/$name.out" 2> "$W/$name.err" || rc=$?
  fi
  local secs=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
  [ "$rc" != 124 ] || fail "$name: still running after 30 s (a hang, or growing memory)"
  [ "$rc" != 70 ] || { tail -3 "$W/$name.err"; fail "$name: exit 70, an internal fault"; }
  [ "$rc" = "$want" ] || { tail -3 "$W/$name.err"; fail "$name: exit $rc, expected $want"; }
  local n=$(grep -c "^shardlora" "$W/$name.err")
  [ "$n" = 1 ] || { cat "$W/$name.err" | grep -v "^\[shardlora\|^  "; fail "$name: $n error lines, expected 1"; }
  grep "^shardlora" "$W/$name.err" | grep -q -- "$pat" || { grep "^shardlora" "$W/$name.err"; fail "$name: the line does not name '$pat'"; }
  ok "$name: exit $rc in ${secs}s: $(grep "^shardlora" "$W/$name.err" | cut -c1-200)"
}

M=(--model "$W/model" --data "$W/data.jsonl")
# the flags of the issue
refused lora_r 1 2 "--lora-r" train "${M[@]}" --out "$W/o1" --lora-r 100000000
refused seq_len 1 2 "--seq-len" train "${M[@]}" --out "$W/o2" --seq-len 2000000000
refused micro_2_31 1 2 "--micro-batch" train "${M[@]}" --out "$W/o3" --micro-batch 2147483648
refused micro_1e12 2 2 "--micro-batch" train "${M[@]}" --out "$W/o4" --micro-batch 1000000000000
refused micro_x_seq 2 2 "--micro-batch" train "${M[@]}" --out "$W/o5" --micro-batch 1000000 --seq-len 4096
refused threads 1 2 "--threads" train "${M[@]}" --out "$W/o6" --threads -3
refused steps 1 2 "--steps" train "${M[@]}" --out "$W/o7" --steps 9000000000000000000
refused steps_x_batch 1 2 "--steps 1099511627776 x --global-batch 1073741824" train "${M[@]}" --out "$W/o9" --steps 1099511627776 --global-batch 1073741824
refused epochs 1 2 "--epochs 2e+18" train "${M[@]}" --out "$W/o10" --epochs 2e18
refused eval_micro 2 2 "--micro-batch" eval "${M[@]}" --micro-batch 2147483648
refused max_new 1 2 "--max-new-tokens" generate --model "$W/model" --prompt hi --max-new-tokens 100000000000
refused gen_threads 1 2 "--threads" generate --model "$W/model" --prompt hi --threads -3
refused merge_threads 1 2 "--threads" merge --model "$W/model" --adapter "$W/none" --out "$W/o8" --threads -3

refused gen_dump 2 2 "--dump-logits at dp 2" generate --model "$W/model" --prompt hi --max-new-tokens 3000000 --dump-logits "$W/logits.st"
refused mm_layers 1 2 "field 'num_hidden_layers'" make-model --out "$W/mm1" --layers 2147483648
refused mm_vocab 1 2 "field 'vocab_size'" make-model --out "$W/mm2" --vocab 9223372036854775807

# config.json sizes: the file and the key
for kv in num_hidden_layers:2147483648 vocab_size:9223372036854775807 hidden_size:4294967296 \
          intermediate_size:1099511627776 num_attention_heads:2147483648; do
  key=${kv%%:*}; val=${kv#*:}
  rm -rf "$W/bad-$key"; cp -r "$W/model" "$W/bad-$key"
  "$PY" - "$W/bad-$key/config.json" "$key" "$val" <<'PY'
import json, sys
p, k, v = sys.argv[1], sys.argv[2], int(sys.argv[3])
c = json.load(open(p)); c[k] = v
if k == "num_attention_heads": c["num_key_value_heads"] = v
json.dump(c, open(p, "w"))
PY
  refused "cfg_$key" 2 3 "config.json: field '$key'" train --model "$W/bad-$key" --data "$W/data.jsonl" --out "$W/o-$key"
done
refused cfg_gen 1 3 "config.json: field 'vocab_size'" generate --model "$W/bad-vocab_size" --prompt hi

# the memory estimate: a micro-batch of a million rows on 23 rows of data is refused at once,
# naming --micro-batch, on every rank, and nothing is left in OUT
refused mem_train 1 2 "needs ~.* GiB per rank (activations .* from --micro-batch 1000000 x --seq-len" \
  train "${M[@]}" --out "$W/mem1" --micro-batch 1000000 --global-batch 1000000 --seq-len 64
[ ! -e "$W/mem1" ] || fail "mem_train: the refused run left $W/mem1 behind"
refused mem_train_np2 2 2 "lower --micro-batch or --seq-len" \
  train "${M[@]}" --out "$W/mem2" --micro-batch 1000000 --global-batch 2000000 --seq-len 64
refused mem_eval 2 2 "from --micro-batch 1000000" eval "${M[@]}" --micro-batch 1000000 --seq-len 64
refused mem_gen 1 2 "KV cache" generate --model "$W/model" --prompt hi --max-new-tokens 16000000
refused mem_limit 1 2 "(--memory-limit)" train "${M[@]}" --out "$W/mem3" --micro-batch 4 --seq-len 64 --memory-limit 0.001
# a model the node cannot hold is refused before it is read (here: the limit is below the
# 0.4 MiB of frozen weights)
refused mem_frozen 2 2 "the frozen weights of .* need ~.* GiB per rank at --tp 2.*raise --tp" \
  train "${M[@]}" --out "$W/mem5" --tp 2 --memory-limit 0.0001
refused mem_frozen_gen 1 2 "the frozen weights" generate --model "$W/model" --prompt hi --memory-limit 0.0001
timeout 60 "$SL" train "${M[@]}" --out "$W/mem4" --micro-batch 4 --seq-len 64 --steps 1 --memory-limit 0.001 \
  --no-memory-check > "$W/mem4.log" 2>&1 || { tail -3 "$W/mem4.log"; fail "--no-memory-check: the run failed"; }
ok "--no-memory-check: the run goes on past a --memory-limit it exceeds"

# the node's share comes from the cgroup too: in a memory cgroup of 256 MiB, a run whose
# activations need about 1.4 GiB is refused, naming a limit below 0.25 GiB (v1 hierarchy, else
# v2; needs root, as the disk-full case)
CG=""
V1=$(sed -n 's/^[0-9]*:memory://p' /proc/self/cgroup)
if [ -n "$V1" ] && mkdir "/sys/fs/cgroup/memory${V1%/}/sl_sizes_$$" 2> /dev/null; then
  CG="/sys/fs/cgroup/memory${V1%/}/sl_sizes_$$"; echo $((256 << 20)) > "$CG/memory.limit_in_bytes"
elif V2=$(sed -n 's/^0:://p' /proc/self/cgroup) && mkdir "/sys/fs/cgroup${V2%/}/sl_sizes_$$" 2> /dev/null; then
  CG="/sys/fs/cgroup${V2%/}/sl_sizes_$$"; echo $((256 << 20)) > "$CG/memory.max"
fi
[ -n "$CG" ] || fail "cannot make a memory cgroup (needs root and a writable cgroup hierarchy)"
rc=0
timeout 30 bash -c 'echo $$ > "$1/cgroup.procs" && shift && exec "$@"' _ "$CG" "$SL" train "${M[@]}" \
  --out "$W/cg" --micro-batch 64 --seq-len 2048 > "$W/cg.out" 2> "$W/cg.err" || rc=$?
for i in $(seq 1 100); do rmdir "$CG" 2> /dev/null && break; sleep 0.1; done  # once its last process is gone
[ "$rc" = 2 ] || { tail -3 "$W/cg.err"; fail "cgroup: exit $rc, expected 2"; }
grep "^shardlora" "$W/cg.err" | grep -q "this node allows 0\.[0-2][0-9]* GiB per rank" \
  || { grep "^shardlora" "$W/cg.err"; fail "cgroup: the refusal does not name the cgroup's limit"; }
ok "cgroup of 256 MiB: $(grep "^shardlora" "$W/cg.err" | cut -c1-170)"

# the estimate against the memory table measured at the end (peak per category), on a few
# layouts and adapter kinds: within 10% (or 0.1 MiB) per category and in total
measure() {
  local name="$1" np="$2"; shift 2
  timeout 120 mpiexec --oversubscribe -n "$np" "$SL" train --model "$W/model2" --data "$W/data.jsonl" \
    --out "$W/$name" --steps 2 --threads 1 "$@" > "$W/$name.log" 2>&1 || { tail -3 "$W/$name.log"; fail "$name: the run failed"; }
  "$PY" - "$W/$name.log" "$name" <<'PY' || fail "$name: the estimate is off"
import re, sys
t = open(sys.argv[1]).read().splitlines()
i = next(k for k, l in enumerate(t) if "memory estimate per rank" in l)
j = next(k for k, l in enumerate(t) if "at the end (rank 0)" in l)
est = {m[1]: float(m[2]) for m in (re.search(r"\]\s+(\w+)\s+([\d.]+) MiB", l) for l in t[i + 1:i + 7])}
peak = {m[1]: float(m[3]) for m in (re.search(r"\]\s+(\w+)\s+([\d.]+)\s+([\d.]+)", l) for l in t[j + 2:j + 8])}
bad = [c for c in est if abs(est[c] - peak[c]) > max(0.1, 0.1 * peak[c])]
te, tp = sum(est.values()), sum(peak.values())
print(f"ok: {sys.argv[2]}: estimate {te:.1f} MiB, measured peak {tp:.1f} MiB; " +
      ", ".join(f"{c} {est[c]}/{peak[c]}" for c in est))
if bad or abs(te - tp) > max(0.2, 0.1 * tp):
    print("categories off by more than 10%:", bad); sys.exit(1)
PY
}
measure est_lora_tp2 2 --tp 2 --micro-batch 2 --seq-len 128 --lora-r 16 --lora-dropout 0.1
measure est_dora_dp2 2 --micro-batch 2 --seq-len 64 --adapter dora --peak-gflops 5
measure est_vera 1 --micro-batch 8 --seq-len 64 --adapter vera --lora-r 32 --optimizer sgd --peak-gflops 5

# a full disk while training: OUT on a 2 MiB tmpfs that is filled once metrics.jsonl has 5
# lines; the run goes on, warns once per file, and the files end with whole lines. The disk is
# full within a few dozen steps (24 lines seen): FULL_STEPS leaves a wide margin, and the run
# goes on for all of them after the warnings.
FULL_STEPS=1000
mkdir -p "$FS"
mount -t tmpfs -o size=2m tmpfs "$FS" 2> "$W/mount.err" || fail "cannot mount a tmpfs on $FS (needs root): $(cat "$W/mount.err")"
( timeout 120 "$SL" train "${M[@]}" --out "$FS/run" --cache-dir "$W/cache" --seq-len 32 --micro-batch 1 \
    --steps $FULL_STEPS --lora-r 2 --log-every 1000 --ckpt-every-minutes 0 --peak-gflops 10 \
    > "$W/full.log" 2> "$W/full.err"; echo $? > "$W/full.rc" ) &
for i in $(seq 1 1500); do
  [ -f "$FS/run/metrics.jsonl" ] && [ "$(wc -l < "$FS/run/metrics.jsonl")" -ge 5 ] && break
  sleep 0.02
done
dd if=/dev/zero of="$FS/fill" bs=4k > /dev/null 2>&1
wait
rc=$(cat "$W/full.rc")
[ "$rc" != 70 ] && [ "$rc" != 124 ] || fail "full disk: exit $rc"
lines=$(wc -l < "$FS/run/metrics.jsonl")
[ "$lines" -lt $FULL_STEPS ] || fail "full disk: the disk never filled ($lines lines)"
n=$(grep -c "metrics.jsonl: cannot write: No space left on device" "$W/full.err")
[ "$n" = 1 ] || { grep -i warn "$W/full.err"; fail "full disk: $n warnings about metrics.jsonl, expected 1"; }
[ "$(grep -c "metrics.csv: cannot write: No space left on device" "$W/full.err")" = 1 ] || fail "full disk: no single warning about metrics.csv"
[ "$(tail -c 1 "$FS/run/metrics.jsonl" | od -An -c | tr -d ' ')" = '\n' ] || fail "full disk: metrics.jsonl ends mid-line"
[ "$(tail -c 1 "$FS/run/metrics.csv" | od -An -c | tr -d ' ')" = '\n' ] || fail "full disk: metrics.csv ends mid-row"
"$PY" -c "import json, sys; [json.loads(l) for l in open(sys.argv[1])]" "$FS/run/metrics.jsonl" || fail "full disk: metrics.jsonl does not parse"
ok "full disk (exit $rc): metrics.jsonl stops at a whole line after $lines lines, one warning per file: $(grep -m1 "metrics.jsonl: cannot" "$W/full.err" | cut -c1-160)"
rm -f "$FS/fill"
"$SL" plot "$FS/run" > "$W/plot.log" 2>&1 || { cat "$W/plot.log"; fail "plot cannot read the metrics a full disk left"; }
ok "plot reads them: $(tail -1 "$W/plot.log")"
echo PASS
