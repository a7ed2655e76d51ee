#!/usr/bin/env bash
# Frozen-base dtypes and BF16 compute side by side in one run (issue 18):
#   1. bench_gemm: the machine's sgemm peak and its best BF16 product rate (native oneDNN, or
#      the emulation where the CPU has no native BF16: then the bf16 rows are skipped below);
#   2. shardlora train on the step benchmark's model held as F32, BF16, INT8 and NF4
#      (--base-dtype), each with --compute-dtype fp32 and, where native, bf16: tokens/s, MFU
#      against the matching peak (sgemm for fp32 compute, BF16 for bf16), frozen bytes per rank
#      and the ratios the issue targets (bf16 / fp32 compute; nf4 / fp32 bytes; nf4 / bf16-base
#      step);
#   3. with BIG=1 (default 1): a Llama-2-7B-shaped model (hidden 4096, 32 layers, ffn 11008,
#      vocab 32000, 32 heads, BF16 weights from make-model: 13.5 GB on disk under $WORK)
#      trained BIG_STEPS steps with --base-dtype nf4 --recompute layer: peak RSS and tokens/s.
# Prints Markdown tables (the README carries them). Every setting is a variable (the model's,
# LORA_R, THREADS and BUILD are set in benchmarks/lib.sh).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WORK="${WORK:-$ROOT/out/bench-dtypes}"
STEPS="${STEPS:-3}"            # timed steps (after one warm-up step)
BIG="${BIG:-1}"
BIG_STEPS="${BIG_STEPS:-3}"
BIG_SEQ="${BIG_SEQ:-256}"
# shellcheck source=benchmarks/lib.sh
. "$ROOT/benchmarks/lib.sh"

bench_setup bench_gemm
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1

echo "== GEMM peaks (bench_gemm, $THREADS threads)"
"$BUILD/benchmarks/bench_gemm" | tee "$WORK/gemm.txt"
PEAK=$(sed -nE "s/^sgemm_peak_gflops.*threads=${THREADS} ([0-9.]+).*/\1/p" "$WORK/gemm.txt")
read -r BF16_PEAK BF16_HOW < <(sed -nE 's/^bf16_peak_gflops threads=[0-9]+ ([0-9.]+) (.*)/\1 \2/p' "$WORK/gemm.txt")
echo "sgemm peak $PEAK GFLOP/s; BF16 products $BF16_PEAK GFLOP/s ($BF16_HOW)"

# the step benchmark's model, stored BF16 (what a Hub model is)
MODEL="$MODEL-BF16"
[ -f "$MODEL/config.json" ] || "$SL" make-model --out "$MODEL" --layers "$LAYERS" --hidden "$HIDDEN" \
  --ffn "$FFN" --heads "$HEADS" --kv-heads "$KV_HEADS" --vocab "$VOCAB" --seed 1 --dtype BF16 > /dev/null

# name | extra train flags (bench_run adds --peak-gflops 1: replaced by the matching peak)
RUNS=("fp32 base, fp32|--base-dtype fp32 --compute-dtype fp32 --peak-gflops $PEAK"
      "bf16 base, fp32|--base-dtype bf16 --compute-dtype fp32 --peak-gflops $PEAK"
      "int8 base, fp32|--base-dtype int8 --compute-dtype fp32 --peak-gflops $PEAK"
      "nf4 base, fp32|--base-dtype nf4 --compute-dtype fp32 --peak-gflops $PEAK")
if [ "$BF16_HOW" = native ]; then
  RUNS+=("fp32 base, bf16|--base-dtype fp32 --compute-dtype bf16 --peak-gflops $BF16_PEAK"
         "bf16 base, bf16|--base-dtype bf16 --compute-dtype bf16 --peak-gflops $BF16_PEAK"
         "int8 base, bf16|--base-dtype int8 --compute-dtype bf16 --peak-gflops $BF16_PEAK"
         "nf4 base, bf16|--base-dtype nf4 --compute-dtype bf16 --peak-gflops $BF16_PEAK")
else
  echo "(this CPU has no native BF16 ($BF16_HOW): the bf16-compute rows are left out)"
fi
rows=()
for r in "${RUNS[@]}"; do
  bench_run "$r"
done

/usr/bin/python3 - "${rows[@]}" <<'PY'
import json, sys
res = {}
for arg in sys.argv[1:]:
    name, out = arg.split("|", 1)
    m = [json.loads(l) for l in open(out + "/metrics.jsonl") if '"loss"' in l][1:]
    tps = len(m) / sum(1.0 / r["tokens_per_s"] for r in m)   # harmonic mean: tokens / time
    mfu = len(m) / sum(1.0 / r["mfu"] for r in m)
    run = json.load(open(out + "/run.json"))
    s = json.load(open(out + "/summary-rank0.json"))
    res[name] = (tps, mfu, s["frozen_bytes"], run["resolved"]["compute"])
print("| base, compute | tokens/s | MFU (matching peak) | frozen MiB/rank | bytes vs fp32 | what ran |")
print("|---|---|---|---|---|---|")
f32 = res["fp32 base, fp32"][2]
for name, (tps, mfu, fb, why) in res.items():
    print(f"| {name} | {tps:.1f} | {100 * mfu:.1f}% | {fb / 2**20:.1f} | {fb / f32:.3f}x | {why} |")
def ratio(a, b, what):
    if a in res and b in res:
        print(f"{what}: {res[a][0] / res[b][0]:.2f}x")
ratio("bf16 base, bf16", "bf16 base, fp32", "bf16 compute / fp32 compute (bf16 base), step throughput")
ratio("fp32 base, bf16", "fp32 base, fp32", "bf16 compute / fp32 compute (fp32 base), step throughput")
ratio("nf4 base, fp32", "bf16 base, fp32", "nf4 base / bf16 base step (fp32 compute)")
ratio("nf4 base, bf16", "bf16 base, bf16", "nf4 base / bf16 base step (bf16 compute)")
print(f"nf4 frozen bytes / fp32: {res['nf4 base, fp32'][2] / f32:.4f}x")
PY

[ "$BIG" = 1 ] || exit 0
BIGM="$WORK/model-7b-shape-BF16"
echo "== Llama-2-7B-shaped model (BF16, ~13.5 GB): $BIGM"
[ -f "$BIGM/config.json" ] || "$SL" make-model --out "$BIGM" --layers 32 --hidden 4096 --ffn 11008 \
  --heads 32 --kv-heads 32 --vocab 32000 --seed 1 --dtype BF16 --shards 4
BIGD="$WORK/data-7b.jsonl"
/usr/bin/python3 - "$BIG_SEQ" > "$BIGD" <<'PY'
import json, random, sys
r = random.Random(0); T = int(sys.argv[1])
for i in range(16):
    print(json.dumps({"input_ids": [r.randrange(32000) for _ in range(T)]}))
PY
rm -rf "$WORK/run-7b"
# peak RSS of the process (ru_maxrss of the child), the run's own tokens/s
/usr/bin/python3 - "$SL" "$BIGM" "$BIGD" "$WORK/run-7b" "$BIG_SEQ" "$BIG_STEPS" "$THREADS" <<'PY'
import json, resource, subprocess, sys, time
sl, model, data, out, seq, steps, threads = sys.argv[1:]
cmd = [sl, "train", "--model", model, "--data", data, "--out", out, "--seq-len", seq,
       "--steps", steps, "--threads", threads, "--base-dtype", "nf4", "--recompute", "layer",
       "--lora-r", "16", "--lr-schedule", "constant", "--no-shuffle", "--log-every", "1"]
print(" ".join(cmd), flush=True)
t0 = time.time()
with open(out + ".log", "w") as log:
    rc = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT)
wall = time.time() - t0
rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
if rc:
    print(open(out + ".log").read()[-3000:]); sys.exit(rc)
m = [json.loads(l) for l in open(out + "/metrics.jsonl") if '"loss"' in l]
s = json.load(open(out + "/summary-rank0.json"))
timed = m[1:] or m
tps = len(timed) / sum(1.0 / r["tokens_per_s"] for r in timed)
print("| model | base | recompute | seq | frozen GiB | peak RSS GiB | tokens/s | wall s |")
print("|---|---|---|---|---|---|---|---|")
print(f"| 7B-shaped (L32 C4096 F11008 V32000) | nf4 | layer | {seq} | {s['frozen_bytes'] / 2**30:.2f} | "
      f"{rss / 2**30:.2f} | {tps:.2f} | {wall:.0f} |")
PY
