#!/usr/bin/env bash
# Quick start: installs the dependencies, builds shardlora, makes a small Llama-style model
# (synthetic weights, the byte-level tokenizer's vocabulary), turns real public-domain text
# (Debian's `fortunes` quotes, one {"text"} example per quote) into JSONL, and trains LoRA
# adapters on 2 MPI ranks with tensor parallelism (tp = 2): packed sequences, a held-out
# eval split, the loss as it goes, a loss plot and the adapter at the end. About a minute on
# 2 cores once installed and built. Every setting is a variable below; override from the
# environment, e.g.
#   STEPS=300 launch/quickstart.sh
# To train a real model instead, run the same `mpirun ... shardlora train` line with
# --model YOUR_HF_MODEL_DIR --data YOUR.jsonl (see README "Training").
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD="${BUILD:-$ROOT/build}"
WORK="${WORK:-$ROOT/out/quickstart}"
TEXTS="${TEXTS:-literature wisdom science people}"  # files of /usr/share/games/fortunes
NP="${NP:-2}"                                      # MPI ranks
TP="${TP:-2}"                                      # tensor-parallel size (dp = NP / TP)
LAYERS="${LAYERS:-4}"
HIDDEN="${HIDDEN:-256}"
FFN="${FFN:-688}"
HEADS="${HEADS:-8}"
KV_HEADS="${KV_HEADS:-4}"
SEQ_LEN="${SEQ_LEN:-512}"
GLOBAL_BATCH="${GLOBAL_BATCH:-8}"
MICRO_BATCH="${MICRO_BATCH:-4}"
STEPS="${STEPS:-200}"                             # about 2 epochs of these quotes
EVAL_EVERY="${EVAL_EVERY:-25}"
LR="${LR:-3e-3}"
WARMUP="${WARMUP:-5}"
LORA_R="${LORA_R:-16}"
LORA_ALPHA="${LORA_ALPHA:-32}"
SEED="${SEED:-42}"

"$ROOT/launch/install-deps.sh"
cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$BUILD" -j "$(nproc)" --target shardlora
SL="$BUILD/shardlora"
# Open MPI refuses root unless told (containers run as root); a 2-core machine needs
# oversubscription when NP exceeds its cores.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1

mkdir -p "$WORK"
"$SL" make-model --out "$WORK/model" --force --layers "$LAYERS" --hidden "$HIDDEN" --ffn "$FFN" \
  --heads "$HEADS" --kv-heads "$KV_HEADS" --vocab 259 --seed "$SEED"

# The quotes of each fortunes file are separated by lines holding only "%".
/usr/bin/python3 - $TEXTS > "$WORK/data.jsonl" <<'PY'
import json, sys
for name in sys.argv[1:]:
    text = open(f"/usr/share/games/fortunes/{name}", encoding="utf-8", errors="replace").read()
    for quote in text.split("\n%\n"):
        quote = quote.strip("%\n")
        if quote.strip():
            print(json.dumps({"text": quote}))
PY
echo "quickstart: $(wc -l < "$WORK/data.jsonl") quotes ($(du -k "$WORK/data.jsonl" | cut -f1) KiB of JSONL) from fortunes: $TEXTS"

# A fresh demo every time (a kept run directory would be resumed from its last checkpoint).
rm -rf "$WORK/run"
mpirun -np "$NP" "$SL" train --model "$WORK/model" --data "$WORK/data.jsonl" --out "$WORK/run" \
  --tp "$TP" --threads 1 --seq-len "$SEQ_LEN" --global-batch "$GLOBAL_BATCH" --micro-batch "$MICRO_BATCH" \
  --steps "$STEPS" --lr "$LR" --lr-schedule cosine --warmup-steps "$WARMUP" \
  --lora-r "$LORA_R" --lora-alpha "$LORA_ALPHA" --eval-split 0.05 --eval-every "$EVAL_EVERY" \
  --seed "$SEED" --log-every 5
"$SL" plot "$WORK/run"
echo "quickstart: adapter in $WORK/run/adapter, metrics in $WORK/run/metrics.jsonl, loss curve in $WORK/run/loss.svg"
