# Shared by the training-step benchmarks (variants.sh, dropout.sh); source it, then call
# bench_setup: installs the dependencies, builds shardlora into $BUILD, makes the benchmark
# model under $WORK once (LAYERS, HIDDEN, FFN, HEADS, KV_HEADS, VOCAB) and 64 rows of SEQ_LEN
# random ids. Sets SL (the binary), MODEL (its directory) and DATA (the JSONL file).
bench_setup() {
  "$ROOT/launch/install-deps.sh"
  cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release >/dev/null
  cmake --build "$BUILD" -j "$(nproc)" --target shardlora >/dev/null
  SL="$BUILD/shardlora"
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
