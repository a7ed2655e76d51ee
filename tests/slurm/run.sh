#!/usr/bin/env bash
# The sbatch template launch/slurm/train-1node.sbatch, unchanged, on a real single-node Slurm
# (munged, slurmctld, slurmd started here, stopped by pid at exit whatever happens):
#  a) an uninterrupted training (2 tasks, tp 2, via launch/shardlora-run and srun) completes
#     with exit code 0:0, the adapter, progress lines and the launcher's plan in its log;
#  b) the same run sent USR1 mid-way (`scancel --signal=USR1 --batch`, what
#     --signal=B:USR1@120 does) writes a checkpoint, exits 75, requeues itself, resumes
#     ("resumed from") and ends with an adapter byte-identical to a)'s.
# Settings reach the template through `sbatch --export=ALL,VAR=...` and command-line options.
# usage: run.sh SHARDLORA_BINARY WORK_DIR   (root: installs packages, starts daemons)
set -uo pipefail
SL="$(readlink -f "$1")"
W="$(mkdir -p "$2" && cd "$2" && pwd)/slurm"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)"
ROOT="$(cd "$HERE/../.." && pwd)"
TEMPLATE="$ROOT/launch/slurm/train-1node.sbatch"
RUN="$ROOT/launch/shardlora-run"
PY=/usr/bin/python3
# Small steps, ~35 a second at tp 2 through srun on 2 cores (measured: 1500 took 40-46 s).
# USR1 is sent once step 20 is logged, within ~0.2 s (job_wait's poll), so 300 steps leave
# seconds of margin; the adapters are compared bytewise whatever the length.
STEPS=300
# Every wait for a job ends by this many seconds after the start, within CTest's 600 s.
BUDGET="${SHARDLORA_SLURM_TEST_BUDGET:-540}"
T_START=$(date +%s.%N)
JOBS=()              # submitted here: cancelled at exit if still there

since() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }
ok() { echo "ok: $*"; }
fail() {
  echo "FAIL: $*"
  local f
  for f in "$W"/*.out; do [ -f "$f" ] && { echo "===== $f (last 40 lines)"; tail -n 40 "$f"; }; done
  [ -n "${SLURM_LOG_DIR:-}" ] && slurm_logs
  exit 1
}

source "$HERE/cluster.sh"

# cleanup: cancel our jobs still known to Slurm (slurmstepd outlives slurmd), stop the daemons
cleanup() {
  local id i
  trap - EXIT
  if [ ${#SLURM_DAEMON_PIDS[@]} -gt 0 ]; then
    for id in "${JOBS[@]}"; do
      case "$(job_field "$id" JobState)" in
        ""|COMPLETED|FAILED|CANCELLED|TIMEOUT) ;;
        *) echo "cancelling job $id"; scancel --full "$id" 2>/dev/null; scancel "$id" 2>/dev/null ;;
      esac
    done
    for i in $(seq 100); do
      [ -z "$(squeue -h -o %i 2>/dev/null)" ] && break
      sleep 0.1
    done
  fi
  slurm_stop
}
trap cleanup EXIT
trap 'echo "interrupted"; exit 1' INT TERM

# left: seconds of the budget left (at least 1)
left() { local l=$((BUDGET - SECONDS)); [ "$l" -gt 0 ] && echo "$l" || echo 1; }

# ---- setup ---------------------------------------------------------------------------------
slurm_install openmpi-bin python3
[ -x "$SL" ] || fail "no shardlora binary at $1"
[ -x "$RUN" ] || fail "no launcher at $RUN"
[ -f "$TEMPLATE" ] || fail "no template at $TEMPLATE"
rm -rf "$W"
mkdir -p "$W"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1   # Open MPI as root (CI)
# A rank waiting in an all-reduce yields its core: on a busy 2-core machine busy-polling
# ranks run ~2x slower. Arithmetic is unchanged (the adapters are still compared bytewise).
export OMPI_MCA_mpi_yield_when_idle=1

"$SL" make-model --out "$W/model" --layers 2 --hidden 64 --ffn 128 --heads 4 --kv-heads 2 \
  --vocab 259 --seed 3 > /dev/null || fail "make-model failed"
# real text: every non-empty line of the GPL-3, one {"text"} example each
"$PY" - /usr/share/common-licenses/GPL-3 > "$W/data.jsonl" <<'PY' || fail "cannot make data"
import json, sys
for line in open(sys.argv[1], encoding="utf-8"):
    if line.strip():
        print(json.dumps({"text": line.strip()}))
PY
# most options through CONFIG, the layout through TRAIN_ARGS: both template paths are used
cat > "$W/train.conf" <<EOF
seq-len = 128
micro-batch = 2
global-batch = 8
steps = $STEPS
lr = 1e-3
lora-dropout = 0.1
seed = 7
log-every = 10
progress = lines
EOF
ok "model, $(wc -l < "$W/data.jsonl") JSONL lines of GPL-3 text, train.conf"

t=$(date +%s.%N)
slurm_start "$W/cluster"
ok "munged, slurmctld, slurmd up, node idle in $(since "$t") s (pids ${SLURM_DAEMON_PIDS[*]})"

# submit NAME: submits the template for OUT=$W/NAME, log $W/NAME.out; sets JOB
submit() {
  JOB=$(sbatch --parsable --cpus-per-task=1 --time=10:00 --job-name="sl-$1" --output="$W/$1.out" \
    --export="ALL,MODEL=$W/model,DATA=$W/data.jsonl,OUT=$W/$1,CONFIG=$W/train.conf,TRAIN_ARGS=--tp 2,SHARDLORA_RUN=$RUN,SHARDLORA_BIN=$SL" \
    "$TEMPLATE") || fail "sbatch of $1 failed"
  JOBS+=("$JOB")
}

# expect_done ID NAME: the job COMPLETED with 0:0
expect_done() {
  [ "$JOB_STATE" = COMPLETED ] && [ "$JOB_EXIT" = 0:0 ] ||
    fail "$2: job $1 ended $JOB_STATE with ExitCode $JOB_EXIT, expected COMPLETED 0:0"
}

# train_times LOG: shardlora's own "N steps in T" of every run in LOG, e.g. "21 steps in 0.4s"
train_times() {
  sed -nE 's/.*summary: ([0-9]+) steps \([0-9]+ skipped\) in ([^ ]+) .*/\1 steps in \2/p' "$1" | paste -sd ',' | sed 's/,/, /g'
}

# has FILE REGEX WHAT: the log has a line matching REGEX
has() { grep -Eq "$2" "$1" || fail "$(basename "$1"): no $3 (/$2/)"; }

# ---- a) uninterrupted run ----------------------------------------------------------------
t=$(date +%s.%N)
submit ref
job_wait "$JOB" "$(left)"
expect_done "$JOB" "uninterrupted run"
L="$W/ref.out"
for f in adapter_model.safetensors adapter_config.json; do
  [ -s "$W/ref/adapter/$f" ] || fail "uninterrupted run: no $W/ref/adapter/$f"
done
has "$L" '^shardlora-run: plan \(launch mode\)' "launcher plan"
has "$L" '^shardlora-run: +np +2 ' "plan line np 2"
has "$L" '^shardlora-run: +tp +2 +\(kept' "plan line tp 2 (kept from --tp)"
has "$L" '^shardlora-run: +launcher +srun ' "plan line launcher srun"
has "$L" '^shardlora-run: +threads/rank +1 +\(SLURM_CPUS_PER_TASK\)' "plan line threads/rank 1 from SLURM_CPUS_PER_TASK"
c0=$(sed -nE 's/.*rank 0: tp_rank 0 .*, cpus ([0-9,-]+),.*/\1/p' "$L")
c1=$(sed -nE 's/.*rank 1: tp_rank 1 .*, cpus ([0-9,-]+),.*/\1/p' "$L")
[ -n "$c0" ] && [ -n "$c1" ] && [ "$c0" != "$c1" ] || fail "ranks 0 and 1 run on cpus '$c0' and '$c1': expected one core each (srun --cpu-bind=cores)"
has "$L" "step 10/$STEPS \| epoch" "first progress line"
has "$L" "step $STEPS/$STEPS \| epoch" "last progress line"
has "$L" "adapter written to $W/ref/adapter" "adapter line"
ok "a) uninterrupted run: job $JOB COMPLETED 0:0 in $(since "$t") s from submission (training: $(train_times "$L")); adapter ($(stat -c %s "$W/ref/adapter/adapter_model.safetensors") bytes), $(grep -Ec "step [0-9]+/$STEPS \|" "$L") progress lines and the launcher's plan in the log; ranks bound to cpus $c0 and $c1"

# ---- b) USR1 mid-way, checkpoint, requeue, resume ----------------------------------------
t=$(date +%s.%N)
submit pre
L="$W/pre.out"
progress() {   # the job runs and its log shows step >= 20
  [ "$JOB_STATE" = RUNNING ] && grep -Eq "step ([2-9][0-9]|[1-9][0-9]{2,})/$STEPS \|" "$L" 2>/dev/null
}
job_wait "$JOB" "$(left)" progress
step_seen=$(grep -Eo "step [0-9]+/$STEPS \|" "$L" | tail -n 1 | grep -Eo '[0-9]+' | head -n 1)
scancel --signal=USR1 --batch "$JOB" || fail "scancel --signal=USR1 --batch $JOB failed"
ok "b) job $JOB at step $step_seen/$STEPS after $(since "$t") s: scancel --signal=USR1 --batch"
t1=$(date +%s.%N)
requeued() { [ "$(job_field "$JOB" Restarts)" -ge 1 ] 2>/dev/null; }
job_wait "$JOB" "$(left)" requeued
ok "b) job $JOB requeued (Restarts=1, $JOB_STATE) $(since "$t1") s after the signal"
job_wait "$JOB" "$(left)"
expect_done "$JOB" "requeued run"
[ "$(job_field "$JOB" Restarts)" = 1 ] || fail "job $JOB: Restarts=$(job_field "$JOB" Restarts), expected 1"
has "$L" "^train-1node: SIGUSR1: forwarded to shardlora-run" "template forwarding USR1"
has "$L" "SIGUSR1: forwarded to srun" "launcher forwarding USR1 to srun"
has "$L" "signal 10: checkpoint written" "checkpoint on SIGUSR1"
N=$(sed -nE 's/.*checkpoint: step ([0-9]+) written.*/\1/p' "$L" | head -n 1)
[ -n "$N" ] && [ "$N" -gt 0 ] && [ "$N" -lt "$STEPS" ] ||
  fail "the first run's checkpoint is at step '${N:-none}', expected between 0 and $STEPS"
has "$L" "exited with status 75" "launcher status 75"
has "$L" "^train-1node: checkpoint written on a signal \(exit status 75\): requeueing job $JOB" "requeue line"
has "$L" "^train-1node: SLURM_RESTART_COUNT=1: requeued run 1 of job $JOB" "restart count line"
has "$L" "resumed from .*step-0*$N \(step $N," "resume from step $N"
has "$L" "step $STEPS/$STEPS \| epoch" "last progress line"
[ "$(grep -c '^shardlora-run: plan (launch mode)' "$L")" = 2 ] || fail "pre.out: expected the launcher's plan twice (both runs appended)"
a="$W/ref/adapter/adapter_model.safetensors"
b="$W/pre/adapter/adapter_model.safetensors"
[ -s "$b" ] || fail "no adapter at $b"
cmp "$a" "$b" || fail "the requeued run's adapter differs from the uninterrupted run's"
ok "b) checkpoint at step $N on USR1, exit 75, requeued, resumed from step $N, COMPLETED 0:0 $(since "$t") s after submission (training: $(train_times "$L")); adapter byte-identical to a)'s ($(stat -c %s "$b") bytes, sha256 $(sha256sum < "$b" | cut -c1-16))"

# ---- c) the eval and merge templates on the adapter of a) ------------------------------------
t=$(date +%s.%N)
JOB=$(sbatch --parsable --cpus-per-task=1 --time=10:00 --job-name=sl-eval --output="$W/eval.out" \
  --export="ALL,MODEL=$W/model,ADAPTER=$W/ref/adapter,DATA=$W/data.jsonl,EVAL_ARGS=--seq-len 128,SHARDLORA_RUN=$RUN,SHARDLORA_BIN=$SL" \
  "$ROOT/launch/slurm/eval.sbatch") || fail "sbatch of eval.sbatch failed"
JOBS+=("$JOB")
job_wait "$JOB" "$(left)"
expect_done "$JOB" "eval template"
has "$W/eval.out" "loss [0-9.]+.*(ppl|perplexity)" "eval loss line"
ok "c) eval.sbatch: job $JOB COMPLETED 0:0 in $(since "$t") s: $(grep -Eo "loss [0-9.]+.*(ppl|perplexity)[^|]*" "$W/eval.out" | tail -n 1)"
t=$(date +%s.%N)
JOB=$(sbatch --parsable --cpus-per-task=1 --time=10:00 --job-name=sl-merge --output="$W/merge.out" \
  --export="ALL,MODEL=$W/model,ADAPTER=$W/ref/adapter,OUT=$W/merged,SHARDLORA_RUN=$RUN,SHARDLORA_BIN=$SL" \
  "$ROOT/launch/slurm/merge.sbatch") || fail "sbatch of merge.sbatch failed"
JOBS+=("$JOB")
job_wait "$JOB" "$(left)"
expect_done "$JOB" "merge template"
for f in config.json tokenizer.json model.safetensors; do
  [ -s "$W/merged/$f" ] || fail "merge.sbatch: no $W/merged/$f"
done
ok "c) merge.sbatch: job $JOB COMPLETED 0:0 in $(since "$t") s; $W/merged has config.json, tokenizer.json, model.safetensors"

echo "PASS ($(since "$T_START") s)"
