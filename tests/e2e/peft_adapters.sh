#!/usr/bin/env bash
# PEFT adapters in and out (issue 8), end to end through the binary, checked by an
# independent Python reader of the PEFT files that rebuilds the adapted model by PEFT's
# formula W + s B A on the base weights (tests/reference/peft_check.py, on the reference
# model tests/reference/torch_llama.py).
# usage: peft_adapters.sh SHARDLORA_BINARY WORK_DIR TEST
#   export: a trained adapter (tp=1 and tp=2) read by the Python reader gives shardlora eval's
#           logits (--dump-logits) and eval loss; `shardlora export CKPT` writes the same
#           three files, byte for byte, as the end of the same run
#   import: Python-written adapters (rank_pattern / alpha_pattern / rsLoRA, a subset of modules
#           with layers_to_transform in BF16, modules named in full, a regex target with an
#           excluded module) evaluated at tp=1 and tp=2 give the PEFT formula's logits;
#           export -> import -> export is byte-identical (imported at tp=2, re-imported at
#           tp=1); training from --init-adapter starts from the file's values with the formula's
#           loss, and an interrupted run resumes to the uninterrupted run's adapter
#   bad:    a missing file, another peft_type, a lora_A of the wrong shape, a tensor of no
#           module, DoRA: one clear line, exit 3, no hang, at 1 and 2 ranks (eval and train)
# Every check runs; exit 1 if any failed. The Python checks run in batches (peft_check.py batch):
# one torch import for many checks.
# Open MPI refuses root unless told (CI runs as root); the test machine has 2 cores.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
set -uo pipefail
SL="$1"; TEST="$3"; W="$2/peft/$TEST"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PY=/usr/bin/python3
PC=("$PY" "$HERE/../reference/peft_check.py")
RUN_TIMEOUT=120    # seconds for one launch: a hang fails the check, not the CTest timeout
REFUSE_TIMEOUT=60  # seconds a bad adapter may take to be refused at 2 ranks
LOGIT_TOL=1e-4     # logits and eval loss vs the PEFT formula (relative; the issue's bound)
LAYOUT_TOL=1e-5    # the same eval at tp=1 and tp=2
T=32               # tokens per row
FAILS=()
rm -rf "$W"; mkdir -p "$W"

fail() { FAILS+=("$1"); echo "FAIL: $1"; }
check() { local name="$1"; shift; echo "== $name"; "$@" || fail "$name"; }
mpi2() { timeout "$RUN_TIMEOUT" mpiexec -n 2 "$@"; }
one() { timeout "$RUN_TIMEOUT" "$@"; }

"$SL" make-model --out "$W/model" --layers 2 --hidden 64 --ffn 128 --heads 4 --kv-heads 2 --vocab 259 --seed 3 \
  > /dev/null || { echo "FAIL: make-model"; exit 1; }
# pre-tokenised rows of varied length, some with masked prompts (every row fits in T)
"$PY" - > "$W/data.jsonl" <<'PY'
import json, random
rng = random.Random(8)
for i in range(10):
    n = rng.randint(12, 32)
    ids = [rng.randrange(259) for _ in range(n)]
    row = {"input_ids": ids}
    if i % 3 == 1:
        k = rng.randint(1, 6)
        row["labels"] = [-100] * k + ids[k:]
    print(json.dumps(row))
PY
NROWS=10
EVAL=(eval --model "$W/model" --data "$W/data.jsonl" --seq-len $T --no-pack --threads 1 --log-level warn
      --cache-dir "$W/cache")
TRAIN=(train --model "$W/model" --data "$W/data.jsonl" --seq-len $T --threads 1 --log-level warn --log-every 100)

# later CMD ARGS...: one peft_check.py command for the next run_later (quoted for its batch)
LATER=()
later() { LATER+=("$(printf '%q ' "$@")"); }
# run_later: the commands given to later, in one process; every one runs; status 1 if any failed
run_later() {
  local rc=0
  printf '%s\n' "${LATER[@]}" | "${PC[@]}" batch - || rc=1
  LATER=()
  return $rc
}

# evaluate NAME ADAPTER: eval at tp=1 (one micro-batch of every row: dump + JSON) and tp=2;
# queued for run_later: the rows, the Python formula against each dump and loss, tp=1 against tp=2
evaluate() {
  local name="$1" ad="$2"
  one "$SL" "${EVAL[@]}" --adapter "$ad" --micro-batch $NROWS --dump-logits "$W/$name-tp1.st" \
    --out "$W/$name-tp1.json" > "$W/$name-tp1.log" 2>&1 || { echo "eval tp=1 failed: $(tail -2 "$W/$name-tp1.log")"; return 1; }
  mpi2 "$SL" "${EVAL[@]}" --adapter "$ad" --tp 2 --micro-batch $NROWS --dump-logits "$W/$name-tp2.st" \
    --out "$W/$name-tp2.json" > "$W/$name-tp2.log" 2>&1 || { echo "eval tp=2 failed: $(tail -2 "$W/$name-tp2.log")"; return 1; }
  later check-rows --dump "$W/$name-tp1.st" --data "$W/data.jsonl"
  later check-logits --model "$W/model" --adapter "$ad" --dump "$W/$name-tp1.st" \
    --eval-json "$W/$name-tp1.json" --tol $LOGIT_TOL
  later check-logits --model "$W/model" --adapter "$ad" --dump "$W/$name-tp2.st" \
    --eval-json "$W/$name-tp2.json" --tol $LOGIT_TOL
  later compare-dumps "$W/$name-tp1.st" "$W/$name-tp2.st" --tol $LAYOUT_TOL
}

# same_files A B: the three files of two adapter directories are byte-identical
same_files() {
  local ok=0 f
  for f in adapter_model.safetensors adapter_config.json README.md; do
    if cmp -s "$1/$f" "$2/$f"; then echo "  $f: identical ($(stat -c %s "$1/$f") bytes)"; else echo "  $f differs"; ok=1; fi
  done
  return $ok
}

# same_peft A B: the PEFT files (not the model card, which names the run) are identical
same_peft() {
  local ok=0 f
  for f in adapter_model.safetensors adapter_config.json; do
    if cmp -s "$1/$f" "$2/$f"; then echo "  $f: identical ($(stat -c %s "$1/$f") bytes)"; else echo "  $f differs"; ok=1; fi
  done
  return $ok
}

case "$TEST" in
export)
  # a) adapters trained at tp=1 (all modules) and at tp=2 (rsLoRA, a subset), then read by
  # the Python reader; lr high enough that B is far from 0
  check "train tp=1" one "$SL" "${TRAIN[@]}" --out "$W/run1" --steps 6 --micro-batch 2 --lr 2e-2 \
    --lora-r 4 --lora-alpha 8
  check "train tp=2" mpi2 "$SL" "${TRAIN[@]}" --out "$W/run2" --tp 2 --steps 6 --micro-batch 2 --lr 2e-2 \
    --lora-r 6 --lora-alpha 3 --use-rslora --target-modules q_proj,k_proj,o_proj,up_proj,down_proj
  check "a) tp=1 adapter: eval at tp=1 and tp=2" evaluate run1 "$W/run1/adapter"
  check "a) tp=2 adapter: eval at tp=1 and tp=2" evaluate run2 "$W/run2/adapter"
  check "a) tp=1 and tp=2 adapters: PEFT formula = eval logits and loss" run_later
  # c) export of the final checkpoint = the adapter the run wrote at its end
  check "c) export run1/checkpoints/latest" one "$SL" export "$W/run1/checkpoints/latest" --out "$W/exp1"
  check "c) tp=1: export CKPT = end-of-run adapter" same_files "$W/exp1" "$W/run1/adapter"
  check "c) export run2 (its newest checkpoint)" one "$SL" export "$W/run2" --out "$W/exp2"
  check "c) tp=2: export CKPT = end-of-run adapter" same_files "$W/exp2" "$W/run2/adapter"
  # the adapter_config.json keys PEFT's LoraConfig needs, and the model card
  check "adapter_config.json keys and model card" "$PY" - "$W/run2/adapter" <<'PY'
import json, sys
d = sys.argv[1]
c = json.load(open(d + "/adapter_config.json"))
need = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "bias": "none", "fan_in_fan_out": False,
        "use_dora": False, "use_rslora": True, "modules_to_save": None, "layers_to_transform": None,
        "layers_pattern": None, "revision": None, "inference_mode": True, "rank_pattern": {},
        "alpha_pattern": {}, "r": 6, "lora_alpha": 3, "lora_dropout": 0.0, "init_lora_weights": True}
bad = [f"{k}={c.get(k, '<missing>')!r} (want {v!r})" for k, v in need.items() if c.get(k, "<missing>") != v]
if sorted(c["target_modules"]) != sorted(["q_proj", "k_proj", "o_proj", "up_proj", "down_proj"]):
    bad.append(f"target_modules {c['target_modules']}")
if not c.get("base_model_name_or_path"):
    bad.append("base_model_name_or_path empty")
card = open(d + "/README.md").read()
for want in ("library_name: peft", "## Training configuration", "seq_len", "lr_schedule",
             "optimizer", "tp=2", "## Training data", "## Framework versions"):
    if want not in card:
        bad.append(f"README.md lacks {want!r}")
if "base_model:" in card:  # the model is a local directory: not a Hub id
    bad.append("README.md names a local path as base_model")
print("adapter_config.json: " + (", ".join(bad) if bad else f"all {len(need) + 2} keys as PEFT writes them; "
      f"README.md model card with the training configuration ({len(card)} bytes)"))
sys.exit(1 if bad else 0)
PY
  # export refuses what is not a checkpoint, with one line
  out=$("$SL" export "$W/nothing" --out "$W/exp-bad" 2>&1); rc=$?
  check "export of a missing checkpoint: exit 3, one line" test "$rc" = 3 -a "$(echo "$out" | wc -l)" = 1
  echo "  $out"
  ;;
import)
  for c in patterns layers fullnames regex; do later make-adapter --model "$W/model" --out "$W/ad-$c" --case "$c"; done
  run_later || fail "make-adapter patterns, layers, fullnames, regex"
  for c in patterns layers fullnames regex; do
    check "b) import $c: eval at tp=1 and tp=2" evaluate "ad-$c" "$W/ad-$c"
  done
  check "b) imports patterns, layers, fullnames, regex at tp=1 and tp=2 = PEFT formula" run_later
  # export -> import -> export: imported at tp=2 (2 ranks), written by the run's end (lr 0:
  # the values stay), re-imported at tp=1 and written again
  check "b) import patterns at tp=2, export" mpi2 "$SL" "${TRAIN[@]}" --out "$W/rt1" --tp 2 --steps 1 --lr 0 \
    --init-adapter "$W/ad-patterns"
  later same-adapter "$W/ad-patterns" "$W/rt1/adapter"   # the export holds the imported adapter
  check "b) re-import at tp=1, export" one "$SL" "${TRAIN[@]}" --out "$W/rt2" --steps 1 --lr 0 \
    --init-adapter "$W/rt1/adapter"
  check "b) export -> import -> export is byte-identical" same_peft "$W/rt1/adapter" "$W/rt2/adapter"
  check "b) rank_pattern / alpha_pattern written back" "$PY" - "$W/rt1/adapter/adapter_config.json" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
ok = (c["rank_pattern"] == {"down_proj": 2, "model.layers.1.self_attn.q_proj": 6}
      and c["alpha_pattern"] == {"model.layers.0.mlp.gate_proj": 12, "o_proj": 3.5} and c["use_rslora"] is True)
print(f"rank_pattern {c['rank_pattern']}, alpha_pattern {c['alpha_pattern']}: {'ok' if ok else 'FAIL'}")
sys.exit(0 if ok else 1)
PY
  check "b) layers_to_transform round trip" one "$SL" "${TRAIN[@]}" --out "$W/rt3" --steps 1 --lr 0 \
    --init-adapter "$W/ad-layers"
  later same-adapter "$W/ad-layers" "$W/rt3/adapter"     # layers export holds the imported adapter
  check "b) re-import of the layers export" mpi2 "$SL" "${TRAIN[@]}" --out "$W/rt4" --tp 2 --steps 1 --lr 0 \
    --init-adapter "$W/rt3/adapter"
  check "b) layers: export -> import -> export is byte-identical" same_peft "$W/rt3/adapter" "$W/rt4/adapter"
  # training from --init-adapter: step 1 starts from the file (2 ranks at tp=2, flags that the
  # adapter overrides named in a warning), with the formula's loss on the step's batch
  mpi2 "$SL" "${TRAIN[@]}" --out "$W/init" --tp 2 --steps 1 --micro-batch 4 --init-adapter "$W/ad-fullnames" \
    --lora-r 16 --dump-grads "$W/init.st" > "$W/init.log" 2>&1 || fail "train --init-adapter fullnames"
  check "b) --lora-r named as overridden" grep -q "warning: --lora-r ignored: --init-adapter" "$W/init.log"
  later check-init --model "$W/model" --adapter "$W/ad-fullnames" --dump "$W/init.st"
  check "b) the exports hold the imported adapters (patterns, layers); --init-adapter: step 1 starts from the adapter, loss = PEFT formula" \
    run_later
  # an interrupted run from --init-adapter resumes to the uninterrupted run's adapter
  R=(--init-adapter "$W/ad-patterns" --micro-batch 2 --lr 1e-2 --lr-schedule constant --ckpt-every 2)
  check "b) --init-adapter run, 4 steps" one "$SL" "${TRAIN[@]}" "${R[@]}" --out "$W/full" --steps 4
  check "b) the same run stopped after 2 steps" one "$SL" "${TRAIN[@]}" "${R[@]}" --out "$W/part" --steps 2
  one "$SL" "${TRAIN[@]}" "${R[@]}" --out "$W/part" --steps 4 --log-level info > "$W/resume.log" 2>&1 \
    || fail "resumed run"
  check "b) the rerun resumed from step 2" grep -q "resumed from .*step 2" "$W/resume.log"
  check "b) resumed = uninterrupted (bit for bit)" same_files "$W/part/adapter" "$W/full/adapter"
  ;;
bad)
  for c in missing-file missing-config peft-type bad-shape unknown-key dora; do
    later make-adapter --model "$W/model" --out "$W/bad-$c" --case "$c"
  done
  run_later > "$W/make-adapter.log" || { cat "$W/make-adapter.log"; fail "make-adapter (bad cases)"; }
  # refused CASE WANT LAUNCH...: exit 3, exactly one "shardlora" line on stderr containing WANT
  refused() {
    local c="$1" want="$2"; shift 2
    local t0=$SECONDS rc
    timeout "$REFUSE_TIMEOUT" "$@" > "$W/out.txt" 2> "$W/err.txt"; rc=$?
    local lines; lines=$(grep -c "shardlora" "$W/err.txt")
    echo "  exit $rc in $((SECONDS - t0)) s: $(grep shardlora "$W/err.txt" | head -2)"
    [ "$rc" = 3 ] && [ "$lines" = 1 ] && grep -q -- "$want" "$W/err.txt"
  }
  declare -A WANT=(
    [missing-file]="adapter_model.safetensors: missing"
    [missing-config]="adapter_config.json: cannot read the adapter"
    [peft-type]='peft_type "LOHA" is not supported'
    [bad-shape]="has shape \[4, 65\] but adapter_config.json (r = 4) and the model imply \[4, 64\]"
    [unknown-key]="tensor 'base_model.model.lm_head.lora_A.weight' names no module of this model"
    [dora]="lora_magnitude_vector' has shape"
  )
  for c in missing-file missing-config peft-type bad-shape unknown-key dora; do
    check "d) $c: eval, 1 rank" refused "$c" "${WANT[$c]}" "$SL" "${EVAL[@]}" --adapter "$W/bad-$c"
    check "d) $c: eval, 2 ranks tp=2" refused "$c" "${WANT[$c]}" mpiexec -n 2 "$SL" "${EVAL[@]}" --tp 2 \
      --adapter "$W/bad-$c"
    check "d) $c: train --init-adapter, 2 ranks dp=2" refused "$c" "${WANT[$c]}" mpiexec -n 2 "$SL" \
      "${TRAIN[@]}" --out "$W/run-$c" --steps 1 --init-adapter "$W/bad-$c"
    [ ! -e "$W/run-$c" ] || fail "d) $c: the refused run created its output directory"
  done
  ;;
*) echo "peft_adapters.sh: unknown test $TEST" >&2; exit 2 ;;
esac

echo
if [ ${#FAILS[@]} -gt 0 ]; then
  echo "peft $TEST: ${#FAILS[@]} check(s) FAILED:"; printf '  %s\n' "${FAILS[@]}"; exit 1
fi
echo "peft $TEST: all checks passed ($((SECONDS)) s)"
