# Shared helpers of the fault tests (sourced). Each test script is run as
#   bash tests/fault/NAME.sh SHARDLORA_BINARY WORK_DIR
# and exits 1 on the first failed check, printing what it checked and the figures.
# Open MPI refuses root unless told (CI runs as root).
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
set -uo pipefail
SL="$(readlink -f "$1")"
FAULT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PY=/usr/bin/python3
T_START=$(date +%s.%N)

fail() { echo "FAIL: $*"; exit 1; }
ok() { echo "ok: $*"; }
# elapsed seconds since $1 (a date +%s.%N stamp)
since() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f", b - a }'; }
finish() { echo "PASS ($(since "$T_START") s)"; exit 0; }

# fresh work dir $W = WORK_DIR/NAME
setup_work() {
  W="$2/$1"
  rm -rf "$W"
  mkdir -p "$W"
}

# byte-level token data of a Debian text, 64 tokens a line
make_data() {
  "$PY" - /usr/share/common-licenses/GPL-3 > "$1" <<'PY' || fail "cannot make data"
import json, sys
b = open(sys.argv[1], 'rb').read()[:32768]
for i in range(0, len(b) - 64, 64):
    print(json.dumps({"input_ids": list(b[i:i + 64])}))
PY
}

# make_model DIR HIDDEN [extra make-model args]
make_model() {
  local d="$1" h="$2"; shift 2
  "$SL" make-model --out "$d" --layers 2 --hidden "$h" --ffn $((2 * h)) --heads 4 --kv-heads 2 \
    --vocab 301 --seed 3 "$@" > /dev/null || fail "make-model $d failed"
}

# fault_setup NAME WORK_DIR HIDDEN: setup_work, make_data into $W/data.jsonl and make_model
# $W/model HIDDEN
fault_setup() {
  setup_work "$1" "$2"
  make_data "$W/data.jsonl"
  make_model "$W/model" "$3"
}

MPI=(mpiexec --oversubscribe)
# train NP ARGS... : runs `mpiexec -n NP shardlora train ARGS` in the foreground
train() {
  local np="$1"; shift
  mpiexec --oversubscribe -n "$np" "$SL" train "$@"
}

# train_ref NP ARGS...: the uninterrupted reference run into $W/ref (log $W/ref.log); fails
# the test if it fails
train_ref() {
  local np="$1"; shift
  train "$np" "$@" --out "$W/ref" > "$W/ref.log" 2>&1 || { tail "$W/ref.log"; fail "the uninterrupted run failed"; }
}

# the pids of the shardlora ranks started by mpiexec pid $1 (Open MPI 4: its children)
rank_pids() { pgrep -P "$1" || true; }
# the MPI world rank of pid $1
rank_of() { tr '\0' '\n' < "/proc/$1/environ" 2>/dev/null | sed -n 's/^OMPI_COMM_WORLD_RANK=//p'; }

# the step `latest` points at in OUT $1 (-1 if none)
latest_step() {
  local t
  t=$(readlink "$1/checkpoints/latest" 2>/dev/null) || { echo -1; return; }
  t=${t#step-}
  echo $((10#$t))
}

# wait_ckpt OUT MINSTEP TIMEOUT_S MPIPID: waits until latest >= MINSTEP; fails on timeout or if
# mpiexec ended first
wait_ckpt() {
  local out="$1" min="$2" tmo="$3" pid="$4" t0
  t0=$(date +%s.%N)
  while [ "$(latest_step "$out")" -lt "$min" ]; do
    kill -0 "$pid" 2>/dev/null || fail "the run ended before a checkpoint of step >= $min existed"
    awk -v a="$(since "$t0")" -v b="$tmo" 'BEGIN { exit !(a > b) }' && fail "no checkpoint of step >= $min after $tmo s"
    sleep 0.02
  done
}

# the listing (path, type, link target, size, mtime) and sha256 of every file under $1
snapshot() {
  (cd "$1" && find . -printf '%p %y %l %s %T@\n' | LC_ALL=C sort && \
     find . -type f -print0 | LC_ALL=C sort -z | xargs -0 -r sha256sum)
}

# inspect_ok CKPT_DIR LABEL: `shardlora inspect` must exit 0
inspect_ok() {
  local rc=0
  "$SL" inspect "$1" > "$W/inspect.out" 2> "$W/inspect.err" || rc=$?
  [ "$rc" = 0 ] || { cat "$W/inspect.err"; fail "$2: inspect $1 exited $rc, expected 0"; }
  grep -q "every chunk's CRC-32C matches" "$W/inspect.out" || fail "$2: inspect printed no verify line"
}

# same_adapter REF_OUT OUT LABEL: the final adapters are byte-identical
same_adapter() {
  local a="$1/adapter/adapter_model.safetensors" b="$2/adapter/adapter_model.safetensors"
  [ -f "$b" ] || fail "$3: no adapter at $b"
  cmp -s "$a" "$b" || { "$PY" "$FAULT_DIR/adapter_diff.py" "$a" "$b" 0 || true; fail "$3: adapter differs from the uninterrupted run's"; }
  ok "$3: adapter byte-identical to the uninterrupted run's ($(stat -c %s "$b") bytes, sha256 $(sha256sum < "$b" | cut -c1-16))"
  # the final checkpoint holds the optimizer state (Adam m and v) too: byte-identical as well
  local ca="$1/checkpoints/latest" cb="$2/checkpoints/latest" f n=0
  [ -f "$cb/manifest.pb" ] || fail "$3: no final checkpoint at $cb"
  for f in "$ca"/manifest.pb "$ca"/shard-*.pb; do
    cmp -s "$f" "$cb/$(basename "$f")" || fail "$3: final checkpoint file $(basename "$f") (adapter + optimizer state) differs from the uninterrupted run's"
    n=$((n + 1))
  done
  ok "$3: final checkpoint (adapter values, Adam exp_avg/exp_avg_sq, manifest) byte-identical: $n files"
}
