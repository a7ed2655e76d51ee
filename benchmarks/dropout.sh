#!/usr/bin/env bash
# LoRA dropout's cost in one run: step time of LoRA at --lora-dropout 0 and $DROPOUT, and of
# DoRA and VeRA at 0 and $DROPOUT, relative to LoRA without dropout, on the step benchmark's model
# (benchmarks/variants.sh), same threads, same data, same r. The masks are Philox draws
# (model/adapter.c adapter_dropout_forward / _backward). Prints a Markdown table.
# Every setting is a variable; override from the environment, e.g. LAYERS=4 STEPS=3 (the
# model's, LORA_R, THREADS and BUILD are set in benchmarks/lib.sh).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WORK="${WORK:-$ROOT/out/bench-dropout}"
# shellcheck source=benchmarks/lib.sh
. "$ROOT/benchmarks/lib.sh"
DROPOUT="${DROPOUT:-0.1}"
STEPS="${STEPS:-4}"          # timed steps (after one warm-up step)
REPEATS="${REPEATS:-3}"      # interleaved rounds over all runs; the table takes each run's best
# name | extra train flags (the first is the baseline)
RUNS=(
  "lora, dropout 0|--lora-dropout 0"
  "lora, dropout $DROPOUT|--lora-dropout $DROPOUT"
  "dora, dropout 0|--adapter dora --lora-dropout 0"
  "dora, dropout $DROPOUT|--adapter dora --lora-dropout $DROPOUT"
  "vera (r 256), dropout 0|--adapter vera --lora-r 256 --lora-dropout 0"
  "vera (r 256), dropout $DROPOUT|--adapter vera --lora-r 256 --lora-dropout $DROPOUT"
)

bench_setup

# Interleaved rounds, so a load change on the machine hits every run alike.
rows=()
for rep in $(seq 1 "$REPEATS"); do
  for v in "${RUNS[@]}"; do
    bench_run "$v" "$rep"
  done
done

/usr/bin/python3 - "${rows[@]}" <<'PY'
import json, sys
sec = {}   # name -> best mean seconds per token over the repeats
order, tokens = [], 0
for arg in sys.argv[1:]:
    name, out = arg.split("|", 1)
    m = [json.loads(l) for l in open(out + "/metrics.jsonl") if '"loss"' in l][1:]
    s = sum(1.0 / r["tokens_per_s"] for r in m) / len(m)
    tokens = m[0]["tokens"]
    if name not in sec:
        order.append(name)
    sec[name] = min(sec.get(name, s), s)
base = sec[order[0]]
print(f"| run | step time vs {order[0]} | ms per step ({tokens} tokens) |")
print("|---|---|---|")
for name in order:
    print(f"| {name} | {sec[name] / base:.2f}x | {sec[name] * tokens * 1e3:.0f} |")
PY
