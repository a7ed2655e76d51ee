#!/usr/bin/env bash
# LoRA variants side by side in one run (issue: LoRA variants): step time and memory of each
# variant relative to plain LoRA, on the step benchmark's model (benchmarks/run.sh), same
# threads, same data, same r. Prints a Markdown table (the README carries one).
# Every setting is a variable; override from the environment, e.g. LAYERS=4 STEPS=3.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD="${BUILD:-$ROOT/build}"
WORK="${WORK:-$ROOT/out/bench-variants}"
LAYERS="${LAYERS:-8}"
HIDDEN="${HIDDEN:-1024}"
FFN="${FFN:-2816}"
HEADS="${HEADS:-16}"
KV_HEADS="${KV_HEADS:-16}"
VOCAB="${VOCAB:-32000}"
SEQ_LEN="${SEQ_LEN:-512}"
LORA_R="${LORA_R:-16}"
STEPS="${STEPS:-4}"          # timed steps (after one warm-up step)
THREADS="${THREADS:-$(nproc)}"
# name | extra train flags
VARIANTS=(
  "lora|"
  "rslora|--use-rslora"
  "lora+ (ratio 16)|--loraplus-ratio 16"
  "lora-fa|--adapter lora-fa"
  "dora|--adapter dora"
  "vera (r 256)|--adapter vera --lora-r 256"
  "pissa init|--init pissa --pissa-iters 4"
)

# shellcheck source=benchmarks/lib.sh
. "$ROOT/benchmarks/lib.sh"
bench_setup

rows=()
for v in "${VARIANTS[@]}"; do
  name="${v%%|*}"; flags="${v#*|}"
  out="$WORK/run-${name//[^a-z0-9]/_}"
  rm -rf "$out"
  echo "== $name: shardlora train $flags"
  # shellcheck disable=SC2086
  "$SL" train --model "$MODEL" --data "$DATA" --out "$out" --seq-len "$SEQ_LEN" \
    --steps $((STEPS + 1)) --lora-r "$LORA_R" --lora-alpha $((2 * LORA_R)) --threads "$THREADS" \
    --peak-gflops 1 --lr-schedule constant --no-shuffle $flags > "$out.log" 2>&1 || { tail -3 "$out.log"; exit 1; }
  rows+=("$name|$out")
done

/usr/bin/python3 - "${rows[@]}" <<'PY'
import json, sys
res = []
for arg in sys.argv[1:]:
    name, out = arg.split("|", 1)
    m = [json.loads(l) for l in open(out + "/metrics.jsonl") if '"loss"' in l][1:]
    sec = sum(1.0 / r["tokens_per_s"] for r in m) / len(m)   # seconds per token
    s = json.load(open(out + "/summary.json"))
    mem = s["peak_memory_bytes_rank0"]
    res.append((name, sec, mem.get("adapter", 0), mem.get("optimizer", 0), mem.get("activation", 0)))
base = res[0]
print("| variant | step time vs LoRA | trainable + grads (MiB) | optimizer (MiB) | activations (MiB) |")
print("|---|---|---|---|---|")
for name, sec, ad, op, ac in res:
    print(f"| {name} | {sec / base[1]:.2f}x | {ad / 2**20:.1f} | {op / 2**20:.1f} | {ac / 2**20:.1f} |")
PY
