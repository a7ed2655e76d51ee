#!/usr/bin/env bash
# Quick start: installs the dependencies, builds shardlora, makes a small Llama-style model
# with synthetic weights and trains LoRA adapters on byte-level tokens of a real text,
# printing the loss as it goes. Every setting is a variable below; override from the
# environment, e.g.  STEPS=200 launch/quickstart.sh
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD="${BUILD:-$ROOT/build}"
WORK="${WORK:-$ROOT/out/quickstart}"
TEXT="${TEXT:-/usr/share/common-licenses/GPL-3}"   # a real text shipped by Debian (base-files)
LAYERS="${LAYERS:-4}"
HIDDEN="${HIDDEN:-256}"
FFN="${FFN:-688}"
HEADS="${HEADS:-8}"
KV_HEADS="${KV_HEADS:-4}"
VOCAB="${VOCAB:-259}"                              # byte-level tokenizer: 256 bytes + 3 specials
SEQ_LEN="${SEQ_LEN:-128}"
MICRO_BATCH="${MICRO_BATCH:-4}"
STEPS="${STEPS:-60}"
LR="${LR:-2e-3}"
LORA_R="${LORA_R:-16}"
LORA_ALPHA="${LORA_ALPHA:-32}"
SEED="${SEED:-42}"

"$ROOT/launch/install-deps.sh"
cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$BUILD" -j "$(nproc)" --target shardlora
SL="$BUILD/shardlora"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1

mkdir -p "$WORK"
"$SL" make-model --out "$WORK/model" --force --layers "$LAYERS" --hidden "$HIDDEN" --ffn "$FFN" \
  --heads "$HEADS" --kv-heads "$KV_HEADS" --vocab "$VOCAB" --seed "$SEED"

# Byte-level tokens of the text, one JSONL row per SEQ_LEN bytes (ids = byte values).
/usr/bin/python3 - "$TEXT" "$SEQ_LEN" > "$WORK/data.jsonl" <<'PY'
import json, sys
data = open(sys.argv[1], 'rb').read()
n = int(sys.argv[2])
for i in range(0, len(data) - n + 1, n):
    print(json.dumps({"input_ids": list(data[i:i + n])}))
PY
echo "quickstart: $(wc -l < "$WORK/data.jsonl") sequences of $SEQ_LEN byte tokens from $TEXT"

# A fresh demo every time (a kept run directory would be resumed from its last checkpoint).
rm -rf "$WORK/run"
"$SL" train --model "$WORK/model" --data "$WORK/data.jsonl" --out "$WORK/run" \
  --seq-len "$SEQ_LEN" --micro-batch "$MICRO_BATCH" --steps "$STEPS" --lr "$LR" \
  --lora-r "$LORA_R" --lora-alpha "$LORA_ALPHA" --seed "$SEED" --log-every 5
echo "quickstart: adapter in $WORK/run/adapter, per-step metrics in $WORK/run/metrics.jsonl"
