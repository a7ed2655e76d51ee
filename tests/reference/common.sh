# shellcheck shell=bash
# Shared by the reference (tests/reference/*_case.sh) and MPI (tests/mpi/*.sh) test scripts.
# Source it after setting W (the test's work directory); it empties W and sets
#   REF  this directory (the PyTorch checkers), PY  the Python with torch
# Open MPI refuses root unless told (CI runs as root); the test machine has 2 cores.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
REF="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PY=/usr/bin/python3
rm -rf "$W"; mkdir -p "$W"

# make_data OUT make_data.py-options...: deterministic pre-tokenised rows (make_data.py)
make_data() {
  local out="$1"; shift
  "$PY" "$REF/make_data.py" "$@" > "$out"
}

# train_dumps N...: for each N, N steps of shardlora train on $W/model and $W/data.jsonl with the
# options in the array TRAIN, into $W/runN, gradients dumped to $W/dumpN.safetensors
train_dumps() {
  local n
  for n in "$@"; do
    "$SL" train --model "$W/model" --data "$W/data.jsonl" --out "$W/run$n" "${TRAIN[@]}" \
      --steps "$n" --dump-grads "$W/dump$n.safetensors"
  done
}

# must LOG WHAT CMD...: runs CMD (at most RUN_TIMEOUT s) with its output in LOG; when it fails,
# prints LOG's tail and "FAIL: WHAT" and exits 1
must() {
  local log="$1" what="$2"; shift 2
  timeout "$RUN_TIMEOUT" "$@" > "$log" 2>&1 || { tail "$log"; echo "FAIL: $what"; exit 1; }
}

# expect_refused NAME WANT CMD...: CMD must exit 3 with WANT in its output ($W/NAME.log) and,
# with ONE_LINE=1 in the environment, exactly one line saying "error"
expect_refused() {
  local name="$1" want="$2" rc=0; shift 2
  "$@" > "$W/$name.log" 2>&1 || rc=$?
  if [ "$rc" != 3 ] || ! grep -q -- "$want" "$W/$name.log" \
     || { [ "${ONE_LINE:-0}" = 1 ] && [ "$(grep -c error "$W/$name.log")" != 1 ]; }; then
    cat "$W/$name.log"; echo "FAIL: $name: exit $rc, expected 3 with '$want'"; exit 1
  fi
  echo "  ok   $name refused (exit 3): $(grep -o -- "$want.*" "$W/$name.log" | head -1 | cut -c1-150)"
}

# st_scale FILE KEY INDEX: multiplies element INDEX of F32 tensor KEY of a safetensors file by 1.5
st_scale() {
  "$PY" - "$@" <<'PY'
import json, struct, sys
p, key, i = sys.argv[1], sys.argv[2], int(sys.argv[3])
b = bytearray(open(p, "rb").read())
n = struct.unpack("<Q", b[:8])[0]
o = 8 + n + json.loads(b[8:8 + n])[key]["data_offsets"][0] + 4 * i
b[o:o + 4] = struct.pack("<f", struct.unpack("<f", b[o:o + 4])[0] * 1.5)
open(p, "wb").write(b)
PY
}

# st_drop FILE TEXT: removes the tensors whose names contain TEXT from a safetensors file
st_drop() {
  "$PY" - "$1" "$2" "$REF" <<'PY'
import sys
sys.path.insert(0, sys.argv[3])
import torch_llama as tl
t, meta = tl.read_safetensors(sys.argv[1])
tl.write_safetensors(sys.argv[1], {k: v for k, v in t.items() if sys.argv[2] not in k}, meta)
PY
}

# gen_merged_vs_unmerged TOL GEN-ARGS...: generate with the adapter of GEN-ARGS unmerged and
# --merge-in-memory at tp = 1 and 2 on three prompts: the merged run says it merged, its greedy
# ids are the unmerged run's and its logits equal them (relative TOL)
gen_merged_vs_unmerged() {
  local tol="$1" tp how; shift
  printf '%s\n' '{"input_ids": [1, 2, 3, 4, 5]}' '{"input_ids": [100, 200, 50, 7, 8, 9, 250, 33, 12]}' \
    '{"input_ids": [42]}' > "$W/prompts.jsonl"
  for tp in 1 2; do
    for how in unmerged merged; do
      local extra=(); [ "$how" = merged ] && extra=(--merge-in-memory)
      must "$W/gen-$how-tp$tp.log" "generate $how tp $tp" mpiexec --oversubscribe -n "$tp" "$SL" generate --tp "$tp" \
        --prompts "$W/prompts.jsonl" "$@" "${extra[@]}" --out "$W/gen-$how-tp$tp.jsonl" --dump-logits "$W/gen-$how-tp$tp.st"
    done
    grep -q "(merged in memory)" "$W/gen-merged-tp$tp.log" || { tail "$W/gen-merged-tp$tp.log"; echo "FAIL: tp $tp did not merge in memory"; exit 1; }
    "$PY" "$REF/generate_check.py" --same-results "$W/gen-unmerged-tp$tp.jsonl" "$W/gen-merged-tp$tp.jsonl"
    "$PY" "$REF/generate_check.py" --dump "$W/gen-merged-tp$tp.st" --compare "$W/gen-unmerged-tp$tp.st" --tol "$tol"
  done
}

# export_step10: 11 steps of train_dumps' run with a checkpoint at step 10, into $W/run11 (its
# dump of step 11 holds the adapter after 10 updates), and `shardlora export` of that
# checkpoint into $W/export10
export_step10() {
  "$SL" train --model "$W/model" --data "$W/data.jsonl" --out "$W/run11" "${TRAIN[@]}" --steps 11 \
    --ckpt-every 10 --dump-grads "$W/dump11.safetensors"
  "$SL" export "$W/run11/checkpoints/step-000000010" --out "$W/export10"
}

# check_resume N: 5 steps, then the same command to N steps resumes; its step-N dump must be
# byte-identical to the uninterrupted run's $W/dumpN.safetensors
check_resume() {
  local n="$1"
  "$SL" train --model "$W/model" --data "$W/data.jsonl" --out "$W/res" "${TRAIN[@]}" --steps 5
  "$SL" train --model "$W/model" --data "$W/data.jsonl" --out "$W/res" "${TRAIN[@]}" --steps "$n" \
    --dump-grads "$W/dump${n}r.safetensors"
  cmp "$W/dump$n.safetensors" "$W/dump${n}r.safetensors"
  echo "resume bit-exact (dump of step $n identical)"
}

# train_with_eval: 6 steps of train_dumps' run with its own final evaluation (--eval-data, the
# training rows) into $W/ev, and `shardlora eval` of the base model alone (options in the array
# EV) into $W/eval-base.json: what check_train_eval compares
train_with_eval() {
  "$SL" train --model "$W/model" --data "$W/data.jsonl" --out "$W/ev" "${TRAIN[@]}" --steps 6 \
    --eval-data "$W/data.jsonl" --log-level warn > "$W/ev.log"
  "$SL" eval --model "$W/model" --data "$W/data.jsonl" "${EV[@]}" --out "$W/eval-base.json"
}

# check_train_eval TOL LABEL EVAL.json... : the last eval line of $W/ev/metrics.jsonl (a run's own
# final evaluation) against each `shardlora eval --out` file: relative loss difference <= TOL and
# the same token count; and $W/eval-base.json (the base model alone) must differ from the run's
# and from each file's loss by > 1e-4 (the adapter changes the loss)
check_train_eval() {
  "$PY" - "$W" "$@" <<'PY'
import json, sys
w, tol, label = sys.argv[1], float(sys.argv[2]), sys.argv[3]
train = [json.loads(l) for l in open(f"{w}/ev/metrics.jsonl") if "eval_loss" in l][-1]
base = json.load(open(f"{w}/eval-base.json"))["loss"]
ok = True
for path in sys.argv[4:]:
    e = json.load(open(path))
    rel = abs(e["loss"] - train["eval_loss"]) / abs(train["eval_loss"])
    good = rel <= tol and e["tokens"] == train["eval_tokens"]
    ok &= good
    print(f"{label}: eval {path.rsplit('/', 1)[-1]} {e['loss']:.9f} vs the run's eval at step {train['step']} "
          f"{train['eval_loss']:.9f} (relative {rel:.2e}, tol {tol:g}) {'ok' if good else 'FAIL'}")
moved = all(abs(base - x) > 1e-4 for x in [train["eval_loss"]] + [json.load(open(p))["loss"] for p in sys.argv[4:]])
print(f"{label}: base model without adapter {base:.9f} (the adapter changes the loss: {'ok' if moved else 'FAIL'})")
sys.exit(0 if ok and moved else 1)
PY
}
