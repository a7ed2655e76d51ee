#!/usr/bin/env bash
# What --recompute layer (activation checkpointing per decoder layer) saves and costs on long
# sequences, where the activations dominate a rank's memory: peak RSS of the process
# (/usr/bin/time), the activation peak of summary.json, the start-up estimate, and the step
# time, with --recompute none and layer on the same model, data and threads. Prints a Markdown
# table. Every setting is a variable; override from the environment, e.g. SEQ_LEN=8192
# (BUILD is set in benchmarks/lib.sh).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WORK="${WORK:-$ROOT/out/bench-recompute}"
# a small Llama shape with long sequences: the activations, not the weights, are the memory
LAYERS="${LAYERS:-8}"
HIDDEN="${HIDDEN:-256}"
FFN="${FFN:-704}"
HEADS="${HEADS:-4}"
KV_HEADS="${KV_HEADS:-4}"
VOCAB="${VOCAB:-1000}"
SEQ_LEN="${SEQ_LEN:-4096}"
MICRO_BATCH="${MICRO_BATCH:-1}"
LORA_R="${LORA_R:-16}"
STEPS="${STEPS:-3}"           # timed steps (after one warm-up step)
REPEATS="${REPEATS:-2}"       # interleaved rounds (none, layer, none, ...); the best step time
# shellcheck source=benchmarks/lib.sh
. "$ROOT/benchmarks/lib.sh"   # THREADS (default: nproc), BUILD, bench_build

"$ROOT/launch/install-deps.sh"
bench_build shardlora
mkdir -p "$WORK"
MODEL="$WORK/model-L${LAYERS}-C${HIDDEN}-F${FFN}-H${HEADS}-KV${KV_HEADS}-V${VOCAB}"
[ -f "$MODEL/config.json" ] || "$SL" make-model --out "$MODEL" --layers "$LAYERS" --hidden "$HIDDEN" \
  --ffn "$FFN" --heads "$HEADS" --kv-heads "$KV_HEADS" --vocab "$VOCAB" --seed 1 > /dev/null
DATA="$WORK/data-$SEQ_LEN.jsonl"
/usr/bin/python3 - "$VOCAB" "$SEQ_LEN" > "$DATA" <<'PY'
import json, random, sys
r = random.Random(0); V = int(sys.argv[1]); T = int(sys.argv[2])
for i in range(16):
    print(json.dumps({"input_ids": [r.randrange(V) for _ in range(T)]}))
PY

# Interleaved rounds, so a load change on the machine hits both alike.
rows=()
for rep in $(seq 1 "$REPEATS"); do for rc in none layer; do
  out="$WORK/run-$rc-$rep"
  rm -rf "$out"
  echo "== [$rep/$REPEATS] --recompute $rc: shardlora train --seq-len $SEQ_LEN --micro-batch $MICRO_BATCH --threads $THREADS"
  /usr/bin/time -v -o "$out.time" "$SL" train --model "$MODEL" --data "$DATA" --out "$out" \
    --seq-len "$SEQ_LEN" --micro-batch "$MICRO_BATCH" --steps $((STEPS + 1)) --lora-r "$LORA_R" \
    --lora-alpha $((2 * LORA_R)) --threads "$THREADS" --peak-gflops 1 --lr-schedule constant \
    --no-shuffle --log-every 1 --recompute "$rc" > "$out.log" 2>&1 || { tail -3 "$out.log"; exit 1; }
  rows+=("$rc|$out")
done; done

/usr/bin/python3 - "${rows[@]}" <<'PY'
import json, re, sys
best, order = {}, []
for arg in sys.argv[1:]:
    rc, out = arg.split("|", 1)
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", open(out + ".time").read())[1]) / 1024
    act = json.load(open(out + "/summary.json"))["peak_memory_bytes_rank0"]["activation"] / 2**20
    est = float(re.search(r"memory estimate per rank.*\n(?:.*\n)*?.*\]\s+activation\s+([\d.]+) MiB",
                          open(out + ".log").read())[1])
    m = [json.loads(l) for l in open(out + "/metrics.jsonl") if '"loss"' in l][1:]   # after warm-up
    s = sum(r["tokens"] / r["tokens_per_s"] for r in m) / len(m)
    if rc not in best:
        order.append(rc)
        best[rc] = (s, rss, act, est, m[0]["tokens"])
    b = best[rc]
    best[rc] = (min(b[0], s), max(b[1], rss), act, est, b[4])
print("| --recompute | peak RSS | activations (peak / estimate) | s per step (best) | tokens/s |")
print("|---|---|---|---|---|")
base = best[order[0]][0]
for rc in order:
    s, rss, act, est, tok = best[rc]
    print(f"| {rc} | {rss:.0f} MiB | {act:.0f} / {est:.0f} MiB | {s:.2f} ({s / base:.2f}x) | {tok / s:.0f} |")
PY
