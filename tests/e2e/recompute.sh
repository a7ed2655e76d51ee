#!/usr/bin/env bash
# --recompute layer (activation checkpointing per decoder layer) against --recompute none on a
# small made model (3 layers, sequences of 128): the trained adapter and the --dump-grads
# file (loss, batch, adapter, synchronised gradients) are byte-identical (cmp) at tp=1, at
# tp=2 (mpiexec -n 2) and at tp=2 x dp=2, for LoRA with dropout (the recomputed forward must
# draw the same masks), DoRA without dropout (its out_scale form) and DoRA with dropout, over
# 3 steps of 2 micro-batches; the activation memory (summary.json's peak, rank 0) is smaller with layer,
# and the start-up estimate matches that peak; run.json records the choice
# (--gradient-checkpointing is --recompute layer); a run checkpointed with none resumes with
# layer to the adapter of an uninterrupted run; a bad value and a run too big for the node
# are refused in one line, the latter suggesting --recompute layer.
# usage: recompute.sh SHARDLORA_BINARY WORK_DIR
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
set -uo pipefail
SL="$(readlink -f "$1")"; W="$2/recompute"
PY=/usr/bin/python3
rm -rf "$W"; mkdir -p "$W"
fails=0
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }
ok() { echo "ok: $*"; }

"$SL" make-model --out "$W/m" --layers 3 --hidden 64 --ffn 128 --heads 4 --kv-heads 2 \
  --vocab 259 --seed 3 > /dev/null || { echo "FAIL: make-model"; exit 1; }
"$PY" - /usr/share/common-licenses/GPL-3 > "$W/d.jsonl" <<'PY'
import json, sys
b = open(sys.argv[1], 'rb').read()[:8192]
for i in range(0, len(b) - 128, 128):
    print(json.dumps({"input_ids": list(b[i:i + 128])}))
PY
COMMON=(--model "$W/m" --data "$W/d.jsonl" --seq-len 128 --micro-batch 2 --global-batch 4
        --steps 3 --lr 1e-2 --peak-gflops 5 --log-every 100)

# train NAME NP ARGS...: one run into $W/NAME (log $W/NAME.log, gradients $W/NAME.grads)
train() {
  local name="$1" np="$2"; shift 2
  local pre=()
  [ "$np" -gt 1 ] && pre=(mpiexec -n "$np")
  timeout 180 "${pre[@]}" "$SL" train "${COMMON[@]}" --out "$W/$name" --dump-grads "$W/$name.grads" \
    "$@" > "$W/$name.log" 2>&1 || { tail -5 "$W/$name.log"; fail "$name: the run failed"; return 1; }
}

# same NAME NP ARGS...: the pair none / layer, compared
same() {
  local name="$1" np="$2"; shift 2
  train "$name-none" "$np" --recompute none "$@" || return
  train "$name-layer" "$np" --recompute layer "$@" || return
  if cmp "$W/$name-none.grads" "$W/$name-layer.grads" &&
     cmp "$W/$name-none/adapter/adapter_model.safetensors" "$W/$name-layer/adapter/adapter_model.safetensors"; then
    ok "$name: --dump-grads and the adapter byte-identical with --recompute layer and none"
  else
    fail "$name: --recompute layer differs from none"
  fi
  "$PY" - "$W/$name-none" "$W/$name-layer" "$name" <<'PY' || fail "$name: activation memory or estimate"
import json, re, sys
def peak(d): return json.load(open(d + "/summary.json"))["peak_memory_bytes_rank0"]["activation"]
none, layer = peak(sys.argv[1]), peak(sys.argv[2])
cfg = json.load(open(sys.argv[2] + "/run.json"))["config"]
assert cfg["recompute"] == "layer", f"run.json config recompute = {cfg['recompute']!r}"
# the start-up estimate against the measured peak (the memory tables of the log)
t = open(sys.argv[2] + ".log").read().splitlines()
i = next(k for k, l in enumerate(t) if "memory estimate per rank" in l)
est = next(float(m[1]) for m in (re.search(r"\]\s+activation\s+([\d.]+) MiB", l) for l in t[i + 1:i + 7]) if m)
print(f"ok: {sys.argv[3]}: activation peak {none / 2**20:.2f} MiB with none, {layer / 2**20:.2f} MiB "
      f"with layer (estimate {est} MiB)")
assert layer < 0.8 * none, "recompute layer did not shrink the activations by a fifth"
assert abs(est - layer / 2**20) <= max(0.1, 0.1 * layer / 2**20), "the estimate is off"
PY
}

same lora-tp1 1 --threads 2 --lora-dropout 0.1
same dora-tp1 1 --threads 2 --adapter dora
same lora-tp2 2 --threads 1 --tp 2 --lora-dropout 0.1
same dora-tp2 2 --threads 1 --tp 2 --adapter dora --lora-dropout 0.1
# tp 2 x dp 2: the gradient sync of finished layers runs while later layers are recomputed
same dora-tp2-dp2 4 --threads 1 --tp 2 --adapter dora --lora-dropout 0.1 --micro-batch 1

# the Hugging Face spelling
train hf 1 --threads 2 --gradient-checkpointing --steps 1 &&
  "$PY" -c 'import json, sys; c = json.load(open(sys.argv[1]))["config"]; assert c["recompute"] == "layer", c' \
    "$W/hf/run.json" && grep -q "activations: recompute=layer" "$W/hf.log" \
  && ok "--gradient-checkpointing = --recompute layer (run.json, start-up line)" \
  || fail "--gradient-checkpointing"

# resume: 2 steps with none (a checkpoint at the end), then on to 3 with layer, against 3
# steps with none in one go (a constant lr: the schedule does not bend on resume)
R=(--threads 2 --lora-dropout 0.1 --lr-schedule constant)
train whole 1 "${R[@]}" --recompute none &&
  train resumed 1 "${R[@]}" --recompute none --steps 2 &&
  train resumed 1 "${R[@]}" --recompute layer &&
  grep -q "resumed from .*step-0*2 " "$W/resumed.log" &&
  cmp "$W/whole/adapter/adapter_model.safetensors" "$W/resumed/adapter/adapter_model.safetensors" \
  && ok "a run checkpointed with --recompute none resumes with layer to the same adapter" \
  || fail "resume with another --recompute"

# refusals: exit 2 and one line
err=$("$SL" train "${COMMON[@]}" --out "$W/bad" --recompute some 2>&1 >/dev/null); rc=$?
[ $rc = 2 ] && [ "$(printf '%s\n' "$err" | wc -l)" = 1 ] && grep -q -- "--recompute 'some': expected none or layer" <<<"$err" \
  && ok "bad value: $err" || fail "bad value: exit $rc: $err"
err=$("$SL" train "${COMMON[@]}" --out "$W/big" --micro-batch 100000 --global-batch 100000 2>&1 >/dev/null); rc=$?
[ $rc = 2 ] && grep -q -- "use --recompute layer (activations ~.* GiB), lower --micro-batch or --seq-len" <<<"$(grep '^shardlora' <<<"$err")" \
  && ok "memory refusal: $(grep '^shardlora' <<<"$err" | cut -c1-220)" || fail "memory refusal: exit $rc: $err"

[ $fails = 0 ] || { echo "$fails failure(s)"; exit 1; }
echo "all recompute checks passed"
