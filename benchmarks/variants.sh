#!/usr/bin/env bash
# LoRA variants side by side in one run (issue: LoRA variants): step time and memory of each
# variant relative to plain LoRA, on the step benchmark's model (benchmarks/run.sh), same
# threads, same data, same r. Prints a Markdown table (the README carries one).
# Every setting is a variable; override from the environment, e.g. LAYERS=4 STEPS=3 (the
# model's, LORA_R, THREADS and BUILD are set in benchmarks/lib.sh).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WORK="${WORK:-$ROOT/out/bench-variants}"
STEPS="${STEPS:-4}"          # timed steps (after one warm-up step)
# shellcheck source=benchmarks/lib.sh
. "$ROOT/benchmarks/lib.sh"
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

bench_setup

rows=()
for v in "${VARIANTS[@]}"; do
  bench_run "$v"
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
