# shellcheck shell=bash disable=SC2034  # the tolerances are read by the scripts sourcing it
# Shared by the MPI layout tests (tests/mpi/*.sh): source it after setting SL and W. Every check
# runs (a failed run or comparison does not stop the others); mpi_finish exits 1 if any failed.
# Also sources tests/reference/common.sh (REF, PY, make_data, must, ...).
# shellcheck source=tests/reference/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/../reference/common.sh"
MPI_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CHECK=("$PY" "$MPI_DIR/mpi_check.py")
RUN_TIMEOUT=120        # seconds for one training launch (a hang fails, not the CTest timeout)
# Tolerances (relative, max|a - b| / max|b| per tensor; absolute 1e-9 where the reference ~ 0):
GRAD_TOL=1e-5          # loss and gradients of one step from the same adapter
LATE_GRAD_TOL=1e-4     # gradients at step 3-5 (the adapters have drifted by rounding)
SGD_TOL=1e-5           # adapter after N SGD steps: the update is linear in the gradient
# Adapter after N AdamW steps. The issue's bound, relative 1e-4, is asserted on each tensor
# as a whole: ||a - b|| / ||b|| <= ADAM_NORM_TOL (measured <= 1.2e-5 across the layouts).
# Element by element, m / sqrt(v) divides the rounding noise of a small gradient element by
# that element's own size, so fp32 summation order alone moves single entries by up to ~2e-4
# of the tensor's max: the same (1,1) layout with --kernels reference vs fast differs by
# 1.2e-4 after 5 steps, B=4 vs 4 x B=1 by 8.3e-5, while SGD at tp=2 vs tp=1 differs by
# 9.6e-7. That bound (ADAM_TOL) stays too, above the printed noise floor, far below a bug.
ADAM_NORM_TOL=1e-4
ADAM_TOL=5e-4
FAILS=()
START=$SECONDS

fail() { FAILS+=("$1"); echo "FAIL: $1"; }
# check NAME CMD...: runs a checker, records a failure under NAME
check() { local name="$1"; shift; echo "== $name"; "$@" || fail "$name"; }

# model NAME make-model-options...: a tiny synthetic model in $W/NAME (exit 1 if it fails)
model() {
  local name="$1"; shift
  "$SL" make-model --out "$W/$name" --layers 2 --seed 3 "$@" > "$W/$name.log" 2>&1 \
    || { cat "$W/$name.log"; echo "FAIL: make-model $name"; exit 1; }
}

# train NAME TP DP [train options...]: one launch of world = TP x DP ranks into $W/NAME/ with
# the options in the array COMMON (log in $W/NAME.log). Returns non-zero (and records a
# failure) when it does not succeed.
COMMON=()
train() {
  local name="$1" tp="$2" dp="$3"; shift 3
  local world=$((tp * dp)) t0=$SECONDS rc=0
  timeout "$RUN_TIMEOUT" mpiexec --oversubscribe -n "$world" "$SL" train "${COMMON[@]}" \
    --out "$W/$name" --tp "$tp" "$@" > "$W/$name.log" 2>&1 || rc=$?
  if [ "$rc" -ne 0 ]; then
    fail "run $name (tp $tp, dp $dp) exited $rc$([ "$rc" -eq 124 ] && echo " (timed out after ${RUN_TIMEOUT}s)")"
    grep -i 'shardlora\|error\|assert\|signal\|MPI_ABORT' "$W/$name.log" | grep -v '^mpiexec' | tail -n 4 | sed 's/^/    /'
    return 1
  fi
  echo "run $name (tp $tp, dp $dp): OK in $((SECONDS - t0)) s"
}

# check_layouts WHAT REFNAME N S1 SN RUNS: S1, SN and RUNS name arrays of the step-1 dumps
# (FILE@TPxDP), step-N dumps and step-N run directories that succeeded, the reference layout
# REFNAME first; each other layout against it: step-1 loss and gradients (GRAD_TOL), step-N
# gradients (LATE_GRAD_TOL) and adapter (ADAM_TOL), adapter after N AdamW steps (ADAM_TOL per
# element, ADAM_NORM_TOL as a tensor) and per-step metrics. WHAT prefixes the check names.
check_layouts() {
  local what="$1" ref="$2" n="$3"
  local -n s1_="$4" sn_="$5" runs_="$6"
  [ ${#s1_[@]} -gt 1 ] && check "${what}step-1 loss and gradients vs $ref, rel $GRAD_TOL" \
    "${CHECK[@]}" dumps --tol "$GRAD_TOL" "${s1_[0]%@*}" "${s1_[@]:1}"
  [ ${#sn_[@]} -gt 1 ] && check "${what}step-$n gradients (rel $LATE_GRAD_TOL) and adapter (rel $ADAM_TOL) vs $ref" \
    "${CHECK[@]}" dumps --tol "$LATE_GRAD_TOL" --value-tol "$ADAM_TOL" "${sn_[0]%@*}" "${sn_[@]:1}"
  [ ${#runs_[@]} -gt 1 ] && check "${what}adapter after $n AdamW steps (rel $ADAM_TOL) and per-step metrics vs $ref" \
    "${CHECK[@]}" adapters --steps "$n" --tol "$ADAM_TOL" --norm-rel-tol "$ADAM_NORM_TOL" "${runs_[0]}" "${runs_[@]:1}"
  return 0
}

# mpi_finish NAME: the list of failed checks and exit 1, or "NAME: OK"
mpi_finish() {
  echo
  if [ ${#FAILS[@]} -gt 0 ]; then
    echo "$1: FAILED ${#FAILS[@]} check(s) in $((SECONDS - START)) s:"
    printf '  - %s\n' "${FAILS[@]}"
    exit 1
  fi
  echo "$1: OK in $((SECONDS - START)) s"
}
