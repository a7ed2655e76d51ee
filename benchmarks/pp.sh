#!/usr/bin/env bash
# Pipeline parallelism against tensor and data parallelism on 2 ranks, side by side in one run
# (issue 19): the step benchmark's model (benchmarks/lib.sh: 8 layers, so pp=2 has 2 stages
# of several layers) trained with the same global batch and micro-batch size at
#   dp=2 (tp=1 pp=1), tp=2 (pp=1) and pp=2 (tp=1), GLOBAL_BATCH / MICRO_BATCH micro-batches
#   per step; pp=2 again with MORE_MICRO micro-batches per step (a bigger global batch); and
#   pp=2 with the layers split evenly (--pp-layers; EVEN=0 leaves it out) beside the default
#   split by modelled cost;
# 1 thread per rank. Per layout: tokens/s after WARMUP steps, the bytes per step by category
# (comm_bytes of summary-rank*.json over the steps, summed over the 2 ranks: what crosses the
# one link, both ways), and per rank the frozen bytes, the peak RSS (/usr/bin/time) and, for
# the stages, the measured bubble (idle_fraction) beside the 1F1B figure (P-1)/(m+P-1).
# Prints Markdown tables and writes them to $WORK/results.md. Every setting is a variable
# (the model's, LORA_R and BUILD are set in benchmarks/lib.sh), e.g. SEQ_LEN=512 STEPS=4.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WORK="${WORK:-$ROOT/out/bench-pp}"
# shorter than the step benchmark's 512, so that the five runs fit in ~10 minutes on 2 cores
SEQ_LEN="${SEQ_LEN:-256}"
MICRO_BATCH="${MICRO_BATCH:-1}"
GLOBAL_BATCH="${GLOBAL_BATCH:-8}"   # 8 micro-batches per step at pp=2 and tp=2, 4 per rank at dp=2
MORE_MICRO="${MORE_MICRO:-16}"      # the second pp=2 run: micro-batches per step
WARMUP="${WARMUP:-1}"               # steps left out of tokens/s
STEPS="${STEPS:-2}"                 # timed steps
EVEN="${EVEN:-1}"                   # also pp=2 with --pp-layers L/2,L-L/2
# shellcheck source=benchmarks/lib.sh
. "$ROOT/benchmarks/lib.sh"

bench_setup
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1

flags=$(grep -m1 '^flags' /proc/cpuinfo | tr ' ' '\n' |
  grep -xE 'avx2|avx512f|avx512_bf16|amx_bf16' | tr '\n' ' ' || true)
echo "== machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(nproc) cores;" \
  "ISA: ${flags:-no AVX2}; load average $(cut -d' ' -f1-3 /proc/loadavg)"

# One 2-rank training run: NAME TP PP GLOBAL_BATCH [EXTRA FLAGS]. Each rank runs under
# /usr/bin/time (its peak RSS in OUT.time-rankR); OUT.load is the load average at the end (the
# machine may be shared: other jobs' load shows in tokens/s).
rows=()
pp_run() {
  local name=$1 tp=$2 pp=$3 gb=$4 extra=${5:-} out="$WORK/run-$1"
  rm -rf "$out" "$out".time-rank*
  echo "== $name: mpiexec -n 2 shardlora train --tp $tp --pp $pp --global-batch $gb" \
    "--micro-batch $MICRO_BATCH --seq-len $SEQ_LEN --threads 1 $extra($WARMUP warm-up + $STEPS timed steps)"
  # shellcheck disable=SC2016,SC2086  # $0, $@ and the rank: the inner shell's; $extra: words
  mpiexec --oversubscribe -n 2 sh -c 'exec /usr/bin/time -v -o "$0.time-rank$OMPI_COMM_WORLD_RANK" "$@"' \
    "$out" "$SL" train --model "$MODEL" --data "$DATA" --out "$out" --seq-len "$SEQ_LEN" \
    --tp "$tp" --pp "$pp" --micro-batch "$MICRO_BATCH" --global-batch "$gb" \
    --steps $((WARMUP + STEPS)) --lora-r "$LORA_R" --lora-alpha $((2 * LORA_R)) --threads 1 \
    --peak-gflops 1 --lr-schedule constant --no-shuffle --log-every 1 $extra > "$out.log" 2>&1 ||
    { tail -3 "$out.log"; exit 1; }
  grep -E 'pipeline: ' "$out.log" | head -1 || true
  cut -d' ' -f1 /proc/loadavg > "$out.load"
  rows+=("$name|$out")
}
pp_run dp2 1 1 "$GLOBAL_BATCH"
pp_run tp2 2 1 "$GLOBAL_BATCH"
pp_run pp2 1 2 "$GLOBAL_BATCH"
pp_run "pp2-m$MORE_MICRO" 1 2 $((MORE_MICRO * MICRO_BATCH))
[ "$EVEN" != 1 ] || pp_run pp2-even 1 2 "$GLOBAL_BATCH" "--pp-layers $((LAYERS / 2)),$((LAYERS - LAYERS / 2)) "

/usr/bin/python3 - "$WARMUP" "$SEQ_LEN" "$MICRO_BATCH" "$HIDDEN" "$LAYERS" "${rows[@]}" <<'PY' | tee "$WORK/results.md"
import json, re, sys
warmup, T, B, C, L = map(int, sys.argv[1:6])
N = B * T                                                        # tokens per micro-batch
res = {}
for arg in sys.argv[6:]:
    name, out = arg.split("|", 1)
    m = [json.loads(l) for l in open(out + "/metrics.jsonl") if '"loss"' in l][warmup:]
    tps = len(m) / sum(1.0 / r["tokens_per_s"] for r in m)     # harmonic mean: tokens / time
    ranks = []
    for r in range(2):
        s = json.load(open(f"{out}/summary-rank{r}.json"))
        t = open(f"{out}.time-rank{r}").read()
        s["rss"] = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", t)[1]) * 1024
        ranks.append(s)
    res[name] = (tps, ranks, json.load(open(out + "/run.json")), open(out + ".load").read().strip())
run = next(iter(res.values()))[2]
print(f"\nBLAS {run['versions']['blas']} (per rank), oneDNN ISA {run['versions']['onednn_isa']}; "
      f"model L{L} C{C}, seq {T}, micro-batch {B}; 1 thread per rank\n")

def per_step(ranks, *cats):   # MB per step over the link: both ranks' counts summed
    return sum(s["comm_bytes"][c] / s["steps"] for s in ranks for c in cats) / 1e6

print("| layout | micro-batches per step | tokens/s | vs dp=2 | tp MB/step | grad sync MB/step | pp MB/step "
      "| link MB/step | vs dp=2 | bubble stage 0 / 1 (expected) | load |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
base_tps, base = res["dp2"][0], per_step(res["dp2"][1], "tp", "dp", "world", "kv", "pp")
for name, (tps, ranks, run, load) in res.items():
    lay = run["resolved"]
    micro = lay["global_batch"] // (B * lay["dp"])
    tot = per_step(ranks, "tp", "dp", "world", "kv", "pp")
    pipe = [s.get("pipeline") for s in ranks]
    bub = "-" if not pipe[0] else (" / ".join(f"{100 * p['idle_fraction']:.1f}%" for p in pipe)
                                   + f" ({100 * pipe[0]['expected_bubble']:.1f}%)")
    print(f"| {name} (tp={lay['tp']} pp={lay['pp']} dp={lay['dp']}) | {micro} per {'rank' if lay['dp'] > 1 else 'pipeline'} "
          f"| {tps:.1f} | {tps / base_tps:.2f}x | {per_step(ranks, 'tp'):.2f} "
          f"| {per_step(ranks, 'dp', 'world', 'kv'):.2f} | {per_step(ranks, 'pp'):.2f} | {tot:.2f} "
          f"| {tot / base:.2f}x | {bub} | {load} |")

print("\n| layout | rank | holds | frozen MiB | peak RSS MiB | busy s | idle s |")
print("|---|---|---|---|---|---|---|")
for name, (tps, ranks, run, load) in res.items():
    for s in ranks:
        p = s.get("pipeline")
        holds = (f"stage {p['stage']}: layers [{p['layers'][0]}, {p['layers'][1]})" if p
                 else f"tp rank {s['tp_rank']}" if s["tp"] > 1 else f"dp rank {s['dp_rank']}")
        busy = f"{p['busy_s']:.1f} | {p['idle_s']:.1f}" if p else "- | -"
        print(f"| {name} | {s['rank']} | {holds} | {s['frozen_bytes'] / 2**20:.1f} | "
              f"{s['rss'] / 2**20:.0f} | {busy} |")

print()
for name, (tps, ranks, run, load) in res.items():
    lay = run["resolved"]
    m = lay["global_batch"] // (B * lay["dp"])
    if lay["pp"] > 1:
        print(f"{name}: stage links carry 2 x m x N x C x 4 B = 2 x {m} x {N} x {C} x 4 = "
              f"{2 * m * N * C * 4 / 1e6:.2f} MB per step; measured {per_step(ranks, 'pp'):.2f} MB")
    if lay["tp"] > 1:
        print(f"{name}: 4 all-reduces of N x C x 4 B per layer and micro-batch, both ranks: "
              f"2 x m x 4 x L x N x C x 4 = {2 * m * 4 * L * N * C * 4 / 1e6:.2f} MB per step "
              f"(+ vocab-parallel embedding and loss); measured {per_step(ranks, 'tp'):.2f} MB")
print("(bubble: each stage's idle_s / (busy_s + idle_s) over all steps, warm-up included; "
      "expected 1F1B (P-1)/(m+P-1); load: 1-minute load average at the end of the run. "
      "Other scalar collectives, comm_bytes.other, not shown.)")
PY
