#!/usr/bin/env bash
# Training-step benchmark, side by side in one run (DESIGN.md §9):
#   1. the machine's sgemm peak (bench_gemm, same threads),
#   2. shardlora train on a made model (tokens/s, MFU against that peak),
#   3. the PyTorch baseline on the same model, LoRA config and threads, configured fairly
#      (same OpenBLAS core, OPENBLAS_NUM_THREADS = OMP_NUM_THREADS = threads).
# Prints ratios. Every setting is a variable; override from the environment (the model's,
# LORA_R, THREADS and BUILD are set in benchmarks/lib.sh).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WORK="${WORK:-$ROOT/out/bench}"
# shellcheck source=benchmarks/lib.sh
. "$ROOT/benchmarks/lib.sh"
MICRO_BATCH="${MICRO_BATCH:-1}"
LORA_ALPHA="${LORA_ALPHA:-32}"
STEPS="${STEPS:-5}"          # timed steps (after one warm-up step)
CORE="${CORE:-SkylakeX}"     # OpenBLAS core for both sides (shardlora picks it itself on AVX-512)
SKIP_TORCH="${SKIP_TORCH:-0}"

bench_setup bench_gemm
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1

echo "== sgemm peak (bench_gemm, OPENBLAS_CORETYPE chosen by shardlora)"
"$BUILD/benchmarks/bench_gemm" | tee "$WORK/gemm.txt"
PEAK=$(grep -E '^sgemm_peak_gflops' "$WORK/gemm.txt" | sed -E "s/.*threads=${THREADS} ([0-9.]+).*/\1/")

echo "== shardlora train ($STEPS timed steps + 1 warm-up, $THREADS threads)"
rm -rf "$WORK/run"
"$SL" train --model "$MODEL" --data "$DATA" --out "$WORK/run" --seq-len "$SEQ_LEN" \
  --micro-batch "$MICRO_BATCH" --steps $((STEPS + 1)) --lora-r "$LORA_R" --lora-alpha "$LORA_ALPHA" \
  --threads "$THREADS" --peak-gflops "$PEAK" 2>&1 | grep -E "step |MFU =|grid:"
read -r OURS_TPS OURS_MFU < <(/usr/bin/python3 - "$WORK/run/metrics.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if '"step"' in l][1:]
tps = len(rows) / sum(1.0 / r["tokens_per_s"] for r in rows)       # harmonic mean = total tokens / total time
mfu = len(rows) / sum(1.0 / r["mfu"] for r in rows)
print(f"{tps:.2f} {mfu:.4f}")
PY
)

TORCH_TPS=""
if [ "$SKIP_TORCH" != 1 ]; then
  echo "== PyTorch baseline (OPENBLAS_CORETYPE=$CORE OPENBLAS_NUM_THREADS=OMP_NUM_THREADS=$THREADS)"
  TORCH_TPS=$(OPENBLAS_CORETYPE="$CORE" OPENBLAS_NUM_THREADS="$THREADS" OMP_NUM_THREADS="$THREADS" \
    /usr/bin/python3 "$ROOT/benchmarks/torch_baseline.py" --model "$MODEL" --threads "$THREADS" \
      --seq "$SEQ_LEN" --micro-batch "$MICRO_BATCH" --lora-r "$LORA_R" --lora-alpha "$LORA_ALPHA" \
      --warmup 1 --steps "$STEPS" | tee "$WORK/torch.txt" >&2; \
    sed -nE 's/^torch_baseline tokens_per_s=([0-9.]+).*/\1/p' "$WORK/torch.txt")
fi

/usr/bin/python3 - "$OURS_TPS" "$OURS_MFU" "${TORCH_TPS:-0}" "$PEAK" "$THREADS" <<'PY'
import sys
ours, mfu, torch_tps, peak, threads = float(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
print("== summary (threads=%s, sgemm peak %.1f GFLOP/s measured in this run)" % (threads, peak))
print("shardlora : %8.1f tokens/s   MFU %5.1f%% of the sgemm peak" % (ours, 100 * mfu))
if torch_tps > 0:
    print("PyTorch   : %8.1f tokens/s   MFU %5.1f%%" % (torch_tps, 100 * mfu * torch_tps / ours))
    print("ratio     : shardlora / PyTorch = %.2fx" % (ours / torch_tps))
print("bench_summary ours_tokens_per_s=%.2f ours_mfu=%.4f torch_tokens_per_s=%.2f peak_gflops=%.1f"
      % (ours, mfu, torch_tps, peak))
PY

# ---- 2 ranks: tensor parallel (tp=2) and data parallel (dp=2), 1 thread per rank ----------
if [ "${SKIP_MPI:-0}" != 1 ]; then
  PEAK1=$(grep -E '^sgemm_peak_gflops' "$WORK/gemm.txt" | sed -E "s/.*threads=1 ([0-9.]+).*/\1/")
  for TPN in 2 1; do
    echo "== mpiexec -n 2 shardlora train --tp $TPN (1 thread per rank, $STEPS timed steps + 1 warm-up)"
    rm -rf "$WORK/run-2r-tp$TPN"
    mpiexec --oversubscribe -n 2 "$SL" train --model "$MODEL" --data "$DATA" \
      --out "$WORK/run-2r-tp$TPN" --tp "$TPN" --seq-len "$SEQ_LEN" --micro-batch "$MICRO_BATCH" \
      --global-batch $((MICRO_BATCH * 2 / TPN)) --steps $((STEPS + 1)) --lora-r "$LORA_R" \
      --lora-alpha "$LORA_ALPHA" --threads 1 --peak-gflops "$PEAK1" 2>&1 | grep -E "step |communication"
  done
  /usr/bin/python3 - "$WORK" "$LAYERS" "$HIDDEN" "$SEQ_LEN" "$MICRO_BATCH" "$VOCAB" <<'PY'
import json, sys
w, L, C, T, B, V = sys.argv[1], *map(int, sys.argv[2:])
def run(tp):
    rows = [json.loads(l) for l in open(f"{w}/run-2r-tp{tp}/metrics.jsonl")][1:]
    tps = len(rows) / sum(1.0 / r["tokens_per_s"] for r in rows)
    mfu = len(rows) / sum(1.0 / r["mfu"] for r in rows)
    s = json.load(open(f"{w}/run-2r-tp{tp}/summary-rank0.json"))
    return tps, mfu, s
for tp in (2, 1):
    tps, mfu, s = run(tp)
    n = s["steps"]; cb = s["comm_bytes"]
    grad = (cb["dp"] + cb["world"] + cb["kv"]) / n
    print(f"2 ranks tp={tp} dp={2 // tp}: {tps:8.1f} tokens/s, MFU {100 * mfu:5.1f}% of 2 x the 1-thread sgemm peak")
    print(f"   per step on rank 0: tp activations {cb['tp'] / n / 1e6:8.3f} MB, gradients {grad / 1e6:7.3f} MB "
          f"(adapter buffer {s['adapter_bytes'] / 1e6:.3f} MB, frozen weights {s['frozen_bytes'] / 1e6:.1f} MB)")
    if tp > 1:
        N = B * T
        formula = 2 * 2 * N * C * 4 * L
        vocab = (2 * N * C + 3 * N) * 4  # embedding + final-norm input grad + CE max/sum/target
        print(f"   formula 2 x 2 x T x C x 4 B x L = {formula / 1e6:.3f} MB (+ vocab-parallel "
              f"embedding/loss {vocab / 1e6:.3f} MB = {(formula + vocab) / 1e6:.3f} MB); measured {cb['tp'] / n / 1e6:.3f} MB")
PY
fi
