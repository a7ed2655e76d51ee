# shellcheck shell=bash
# Shared by the benchmarks (run.sh, variants.sh, dropout.sh, tokenizer_bench.sh). Set ROOT and
# WORK, then source it: it sets the defaults below for every setting left unset (override from
# the environment, e.g. LAYERS=4 THREADS=2) and defines
#   bench_build TARGET...   builds TARGETs into $BUILD (Release); sets SL (the shardlora binary)
#   bench_setup [TARGET...] installs the dependencies, builds shardlora (and TARGETs), makes the
#                           benchmark model under $WORK once and 64 rows of SEQ_LEN random ids;
#                           sets SL, MODEL (its directory) and DATA (the JSONL file)
#   bench_run ENTRY [REP]   one timed training run (STEPS + 1 steps) of ENTRY, "name|extra train
#                           flags", into $WORK/run-NAME[-REP] (log beside it, printed and exit 1
#                           on failure); appends "name|out" to the array rows (REP of REPEATS)
BUILD="${BUILD:-$ROOT/build}"
# The step benchmark's model: a Llama shape (L layers, C hidden, F ffn, H heads, KV heads, V vocab).
LAYERS="${LAYERS:-8}"
HIDDEN="${HIDDEN:-1024}"
FFN="${FFN:-2816}"
HEADS="${HEADS:-16}"
KV_HEADS="${KV_HEADS:-16}"
VOCAB="${VOCAB:-32000}"
SEQ_LEN="${SEQ_LEN:-512}"
LORA_R="${LORA_R:-16}"
THREADS="${THREADS:-$(nproc)}"

bench_build() {
  cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release >/dev/null
  cmake --build "$BUILD" -j "$(nproc)" --target "$@" >/dev/null
  SL="$BUILD/shardlora"
}

bench_setup() {
  "$ROOT/launch/install-deps.sh"
  bench_build shardlora "$@"
  mkdir -p "$WORK"
  MODEL="$WORK/model-L${LAYERS}-C${HIDDEN}-F${FFN}-H${HEADS}-KV${KV_HEADS}-V${VOCAB}"
  [ -f "$MODEL/config.json" ] || "$SL" make-model --out "$MODEL" --layers "$LAYERS" --hidden "$HIDDEN" \
    --ffn "$FFN" --heads "$HEADS" --kv-heads "$KV_HEADS" --vocab "$VOCAB" --seed 1 > /dev/null
  DATA="$WORK/data.jsonl"
  /usr/bin/python3 - "$VOCAB" "$SEQ_LEN" > "$DATA" <<'PY'
import json, random, sys
r = random.Random(0); V = int(sys.argv[1]); T = int(sys.argv[2])
for i in range(64):
    print(json.dumps({"input_ids": [r.randrange(V) for _ in range(T)]}))
PY
}

# Constant learning rate and no shuffling, so every run trains on the same rows alike;
# alpha = 2r; --peak-gflops 1 (the MFU is not read).
bench_run() {
  local name="${1%%|*}" flags="${1#*|}" out
  out="$WORK/run-${name//[^a-z0-9]/_}${2:+-$2}"
  rm -rf "$out"
  echo "== ${2:+[$2/$REPEATS] }$name: shardlora train $flags"
  # shellcheck disable=SC2086
  "$SL" train --model "$MODEL" --data "$DATA" --out "$out" --seq-len "$SEQ_LEN" \
    --steps $((STEPS + 1)) --lora-r "$LORA_R" --lora-alpha $((2 * LORA_R)) --threads "$THREADS" \
    --peak-gflops 1 --lr-schedule constant --no-shuffle $flags > "$out.log" 2>&1 || { tail -3 "$out.log"; exit 1; }
  rows+=("$name|$out")
}
