#!/usr/bin/env bash
# Unit tests of launch/shardlora-run: the plan and command line it derives from sample
# environments (Slurm allocations, Open MPI and PMIx ranks, a plain machine described by a
# fake sysfs tree and cpuinfo, --hosts/--hostfile with and without slots), the query of the
# nodes' own facts (stand-in mpirun/srun that answer for each host from its own fake sysfs),
# its refusals (exit 2 and one line), rank mode's exec, and signal forwarding to a stand-in
# launcher. Prints PASS/FAIL per case.
# The default pp (from shardlora plan's memory estimate) runs the real binary in --dry-run.
# usage: plan.sh WORK_DIR SHARDLORA_BINARY   (exits 1 if any case fails)
set -uo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
FIX="$HERE/fixtures"
RUN="$ROOT/launch/shardlora-run"
WORK="${1:-$(mktemp -d)}/launcher-plan"
SLBIN="$(readlink -f "${2:-}")"
[ -x "$SLBIN" ] || { echo "FAIL: the shardlora binary '${2:-}' (second argument) is missing"; exit 1; }
rm -rf "$WORK"
mkdir -p "$WORK"
# Stand-in mpirun and srun first on PATH: no case reaches a real launcher.
QUERY_DIR="$WORK/query-bin"
BASE_PATH="$QUERY_DIR:/usr/local/bin:/usr/bin:/bin"
QUERY_LOG="$WORK/query.log"

# A stand-in shardlora in a directory with a space: prints its pid, arguments and thread/BLAS
# environment, one per line.
FAKE_DIR="$WORK/bin dir"
FAKE="$FAKE_DIR/shardlora"
mkdir -p "$FAKE_DIR"
cat >"$FAKE" <<'EOF'
#!/usr/bin/env bash
echo "fake pid $$"
for a in "$@"; do echo "fake arg <$a>"; done
env | grep -E '^(OMP_|OPENBLAS_|SHARDLORA_BLAS_CORE|OMPI_ALLOW)' | sort | sed 's/^/fake env /'
exit "${FAKE_EXIT:-0}"
EOF
chmod +x "$FAKE"

# Stand-in mpirun / srun for the launcher's query of the nodes (PROG --node-facts, once a
# node): logs its command line to FAKE_QUERY_LOG, takes the hosts from --host / --hostfile
# (else node1..nodeN from --nodes / -np) and runs PROG --node-facts for each as that host: its
# sysfs from FAKE_NODES ("host=DIR ..."), else FAKE_NODE_SYSFS; its cpuinfo FAKE_NODE_CPUINFO.
# FAKE_QUERY_FAIL=N: exits N as an unreachable host would. Anything but a query: exits 97.
mkdir -p "$QUERY_DIR"
cat >"$QUERY_DIR/mpirun" <<'EOF'
#!/usr/bin/env bash
echo "$(basename "$0") $*" >>"${FAKE_QUERY_LOG:-/dev/null}"
[ "${!#}" = --node-facts ] || { echo "stand-in $(basename "$0"): only the node query is expected" >&2; exit 97; }
[ -z "${FAKE_QUERY_FAIL:-}" ] || { echo "stand-in: cannot reach the hosts" >&2; exit "$FAKE_QUERY_FAIL"; }
prog="${*: -2:1}"
hosts=()
n=0
while [ $# -gt 0 ]; do
    case "$1" in
        --host) IFS=, read -ra list <<<"$2"; for h in "${list[@]}"; do hosts+=("${h%%:*}"); done; shift 2 ;;
        --hostfile) while read -r h _; do [[ -z "$h" || "$h" == \#* ]] || hosts+=("$h"); done <"$2"; shift 2 ;;
        --nodes | -np) n="$2"; shift 2 ;;
        *) shift ;;
    esac
done
[ "${#hosts[@]}" -gt 0 ] || for ((i = 1; i <= n; i++)); do hosts+=("node$i"); done
for h in "${hosts[@]}"; do
    sys="$FAKE_NODE_SYSFS"
    for m in ${FAKE_NODES:-}; do [ "${m%%=*}" = "$h" ] && sys="${m#*=}"; done
    SHARDLORA_RUN_SYSFS="$sys" SHARDLORA_RUN_CPUINFO="$FAKE_NODE_CPUINFO" SHARDLORA_RUN_HOSTNAME="$h" \
        "$prog" --node-facts || exit
done
EOF
chmod +x "$QUERY_DIR/mpirun"
cp "$QUERY_DIR/mpirun" "$QUERY_DIR/srun"

IS_ROOT=0
[ "$(id -u)" = 0 ] && IS_ROOT=1
NFAIL=0
NCASES=0
CASE=""
ERRS=()
OUT=""
RC=0

# plan [VAR=VALUE...] -- ARGS...: runs the launcher under `env -i` with a fake sysfs (2 NUMA
# domains, 8 CPUs), 64 GiB MemAvailable, no cgroup and an AVX-512 cpuinfo for this machine, and for the nodes the stand-in
# query answers for, the same sysfs and a cpuinfo without AVX-512, unless VARs replace them;
# sets OUT and RC; the query's command lines go to QUERY_LOG (emptied first).
plan() {
    local -a vars=()
    while [ "$1" != -- ]; do vars+=("$1"); shift; done
    shift
    : >"$QUERY_LOG"
    OUT="$(env -i PATH="$BASE_PATH" HOME="$WORK" SHARDLORA_RUN_SYSFS="$FIX/sysfs-2numa" \
        SHARDLORA_RUN_CPUINFO="$FIX/cpuinfo-avx512" FAKE_QUERY_LOG="$QUERY_LOG" \
        SHARDLORA_RUN_MEMINFO="$FIX/meminfo-64g" SHARDLORA_RUN_PROC_CGROUP=/nonexistent \
        FAKE_NODE_SYSFS="$FIX/sysfs-2numa" FAKE_NODE_CPUINFO="$FIX/cpuinfo-noavx512" \
        "${vars[@]}" "$RUN" "$@" 2>&1)"
    RC=$?
}

# SLURM_2X2: an sbatch allocation of 2 nodes x 2 tasks on 8-CPU nodes
SLURM_2X2=(SLURM_JOB_ID=4242 SLURM_NNODES=2 SLURM_JOB_NUM_NODES=2 SLURM_NTASKS=4 SLURM_NPROCS=4
    "SLURM_TASKS_PER_NODE=2(x2)" SLURM_CPUS_ON_NODE=8 SLURM_PROCID=0 SLURM_JOB_NODELIST=n[1-2])

case_start() { CASE="$1"; ERRS=(); NCASES=$((NCASES + 1)); }
case_end() {
    if [ "${#ERRS[@]}" = 0 ]; then
        echo "PASS $CASE"
    else
        echo "FAIL $CASE"
        printf '  - %s\n' "${ERRS[@]}"
        echo "  output was:"
        printf '%s\n' "$OUT" | sed 's/^/    | /'
        NFAIL=$((NFAIL + 1))
    fi
}
err() { ERRS+=("$*"); }

# field KEY: the value of a plan line ("shardlora-run:   KEY   VALUE   (source)")
field() {
    printf '%s\n' "$OUT" | sed -n "s|^shardlora-run:   $1  *||p" | head -n 1 | sed 's/   (.*)$//'
}
source_of() { printf '%s\n' "$OUT" | sed -n "s|^shardlora-run:   $1  *.*   (\(.*\))$|\1|p" | head -n 1; }

expect_rc() { [ "$RC" = "$1" ] || err "exit status $RC, expected $1"; }
expect_field() {
    local got
    got="$(field "$1")"
    [ "$got" = "$2" ] || err "$1 is '$got', expected '$2'"
}
expect_source() {
    local got
    got="$(source_of "$1")"
    [[ "$got" == *"$2"* ]] || err "source of $1 is '$got', expected it to contain '$2'"
}
# expect_in STRING [KEY]: STRING occurs in the output (or in plan field KEY)
expect_in() {
    local hay="$OUT"
    [ -z "${2:-}" ] || hay="$(field "$2")"
    [[ "$hay" == *"$1"* ]] || err "${2:-output} lacks: $1"
}
expect_not_in() {
    local hay="$OUT"
    [ -z "${2:-}" ] || hay="$(field "$2")"
    [[ "$hay" != *"$1"* ]] || err "${2:-output} should not contain: $1"
}
# expect_count N STRING KEY: STRING occurs N times in field KEY
expect_count() {
    local hay n
    hay="$(field "$3")"
    n="$(grep -oF -- "$2" <<<"$hay" | wc -l)"
    [ "$n" = "$1" ] || err "$3 contains '$2' $n times, expected $1"
}
# expect_refused MESSAGE_PART: exit 2, one error line naming the problem, nothing started
expect_refused() {
    expect_rc 2
    local n
    n="$(printf '%s\n' "$OUT" | grep -c '^shardlora-run: error: ')"
    [ "$n" = 1 ] || err "expected one 'shardlora-run: error:' line, got $n"
    expect_in "$1"
    expect_not_in "fake pid"
    expect_not_in "shardlora-run:   command"
}
ROOT_ENV="OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1"
# launch mode sets no OpenBLAS core: shardlora decides it on each rank's node
ENV_4="OMP_NUM_THREADS=4 OPENBLAS_NUM_THREADS=4 OMP_WAIT_POLICY=PASSIVE"
X_VARS="-x OMP_NUM_THREADS -x OPENBLAS_NUM_THREADS -x OMP_WAIT_POLICY"
# query_log_has STRING: the stand-in query was run with STRING in its command line
query_log_has() { grep -qF -- "$1" "$QUERY_LOG" || err "the node query lacks: $1 (log: $(cat "$QUERY_LOG"))"; }
query_log_empty() { [ ! -s "$QUERY_LOG" ] || err "the nodes were queried: $(cat "$QUERY_LOG")"; }
# q WORD: WORD as the launcher prints it in a command line (single-quoted unless plain)
q() { if [[ "$1" =~ ^[A-Za-z0-9_@%+=:,./-]+$ ]]; then echo "$1"; else echo "'$1'"; fi; }
FQ="$(q "$FAKE")"

# ---- Slurm allocations (launch mode) -------------------------------------------------------

case_start "slurm sbatch 2 nodes x 2 tasks, 8 CPUs a node: srun, tp 2 x dp 2, 4 threads"
plan "${SLURM_2X2[@]}" -- --dry-run --bin "$FAKE" train --model /m --out "/runs/out 1"
expect_rc 0
expect_field nodes 2; expect_source nodes SLURM_NNODES
expect_field ranks/node 2; expect_source ranks/node "SLURM_TASKS_PER_NODE=2(x2)"
expect_field np 4
expect_field threads/rank 4; expect_source threads/rank "8 CPUs per node / 2 ranks"
expect_field tp 2; expect_field dp 2
expect_field launcher srun
expect_field env "$ENV_4"
expect_field command "srun --mpi=pmix --nodes 2 -n 4 --ntasks-per-node 2 --cpus-per-task 4 --cpu-bind=cores $FQ train --tp 2 --threads 4 --model /m --out '/runs/out 1'"
expect_not_in OMPI_ALLOW_RUN_AS_ROOT
expect_not_in "fake pid"
case_end

case_start "slurm SLURM_CPUS_PER_TASK given: threads from it, not CPUs / ranks"
plan "${SLURM_2X2[@]}" SLURM_CPUS_PER_TASK=3 -- --dry-run --bin "$FAKE" train
expect_rc 0
expect_field threads/rank 3; expect_source threads/rank SLURM_CPUS_PER_TASK
expect_in "--cpus-per-task 3 --cpu-bind=cores" command
expect_in "train --tp 2 --threads 3" command
expect_in "OMP_NUM_THREADS=3 OPENBLAS_NUM_THREADS=3" env
case_end

case_start "slurm SLURM_NTASKS_PER_NODE=4 on one 16-CPU node: 4 ranks, tp 4"
plan SLURM_JOB_ID=7 SLURM_NNODES=1 SLURM_NTASKS=4 SLURM_NTASKS_PER_NODE=4 SLURM_TASKS_PER_NODE=4 \
    SLURM_CPUS_ON_NODE=16 -- --dry-run --bin "$FAKE" train
expect_rc 0
expect_field ranks/node 4; expect_source ranks/node SLURM_NTASKS_PER_NODE
expect_field np 4; expect_field threads/rank 4; expect_field tp 4; expect_field dp 1
expect_in "srun --mpi=pmix --nodes 1 -n 4 --ntasks-per-node 4 --cpus-per-task 4" command
case_end

case_start "slurm SLURM_TASKS_PER_NODE=2(x3) with SLURM_CPUS_PER_TASK=8: np 6, tp 2 x dp 3"
plan SLURM_JOB_ID=8 SLURM_NNODES=3 SLURM_NTASKS=6 "SLURM_TASKS_PER_NODE=2(x3)" SLURM_CPUS_ON_NODE=16 \
    SLURM_CPUS_PER_TASK=8 -- --dry-run --bin "$FAKE" train
expect_rc 0
expect_field nodes 3; expect_field ranks/node 2; expect_field np 6
expect_field threads/rank 8; expect_field tp 2; expect_field dp 3
expect_in "srun --mpi=pmix --nodes 3 -n 6 --ntasks-per-node 2 --cpus-per-task 8" command
case_end

case_start "slurm allocation given nodes only (1(x2)): one rank per NUMA domain of the nodes (srun query), not of this machine"
plan SLURM_JOB_ID=9 SLURM_NNODES=2 "SLURM_TASKS_PER_NODE=1(x2)" SLURM_CPUS_ON_NODE=8 \
    SHARDLORA_RUN_SYSFS="$FIX/sysfs-4numa" -- --dry-run --bin "$FAKE" train
expect_rc 0
expect_field ranks/node 2; expect_source ranks/node "one per NUMA domain: 2 on each of the 2 nodes, queried"
expect_field np 4; expect_field threads/rank 4; expect_field tp 2
expect_field cpus/node 8; expect_source cpus/node SLURM_CPUS_ON_NODE
expect_in "queried on each of the 2 nodes (srun" node-facts
query_log_has "srun --nodes 2 --ntasks 2 --ntasks-per-node 1 --cpu-bind=none $RUN --node-facts"
case_end

case_start "slurm one-node job, this script on that node (SLURMD_NODENAME): its own NUMA domains, no query"
plan SLURM_JOB_ID=9 SLURM_NNODES=1 SLURM_TASKS_PER_NODE=1 SLURM_CPUS_ON_NODE=16 SLURMD_NODENAME=n1 \
    SHARDLORA_RUN_SYSFS="$FIX/sysfs-4numa" -- --dry-run --bin "$FAKE" train
expect_rc 0
expect_field ranks/node 4; expect_source ranks/node "NUMA domain (4 in $FIX/sysfs-4numa"
expect_in "read on this machine, the only node" node-facts
query_log_empty
case_end

case_start "slurm with --launcher mpirun: mpirun maps ppr:2:node:PE=4 inside the allocation"
plan "${SLURM_2X2[@]}" -- --dry-run --launcher mpirun --bin "$FAKE" train
expect_rc 0
expect_field launcher mpirun
expect_field command "mpirun -np 4 --map-by ppr:2:node:PE=4 --bind-to core $X_VARS $FQ train --tp 2 --threads 4"
if [ "$IS_ROOT" = 1 ]; then expect_field launcher-env "$ROOT_ENV"; else expect_not_in OMPI_ALLOW_RUN_AS_ROOT; fi
case_end

case_start "slurm --ranks-per-node 1 overrides the allocation's 2 tasks a node: 8 threads, tp 1"
plan "${SLURM_2X2[@]}" -- --dry-run --ranks-per-node 1 --bin "$FAKE" train
expect_rc 0
expect_field ranks/node 1; expect_field np 2; expect_field threads/rank 8; expect_field tp 1; expect_field dp 2
case_end

case_start "user --tp 1 is kept (not inserted again): tp 1 x dp 4"
plan "${SLURM_2X2[@]}" -- --dry-run --bin "$FAKE" train --tp 1 --steps 3
expect_rc 0
expect_field tp 1; expect_field dp 4; expect_source tp "kept: --tp"
expect_count 1 "--tp" command
expect_in "train --threads 4 --tp 1 --steps 3" command
case_end

case_start "user --tp=2 (= form) is kept"
plan "${SLURM_2X2[@]}" -- --dry-run --bin "$FAKE" train --tp=2
expect_rc 0
expect_field tp 2; expect_count 1 "--tp" command; expect_in "--tp=2" command
case_end

case_start "tp in a --config file (key = value lines) is kept, not overridden by an inserted --tp"
plan "${SLURM_2X2[@]}" -- --dry-run --bin "$FAKE" train --config "$FIX/run.conf"
expect_rc 0
expect_field tp 1; expect_field dp 4; expect_source tp "tp in --config"
expect_count 0 "--tp" command
case_end

case_start "tp and threads in a JSON --config file are kept"
plan "${SLURM_2X2[@]}" -- --dry-run --bin "$FAKE" train --config="$FIX/run.json"
expect_rc 0
expect_field tp 1; expect_field threads/rank 2; expect_source threads/rank "threads in --config"
expect_count 0 "--tp" command; expect_count 0 "--threads" command
expect_in "--cpus-per-task 2" command
case_end

case_start "refused: --tp 4 does not divide 2 ranks a node (a TP group would span nodes)"
plan "${SLURM_2X2[@]}" -- --dry-run --bin "$FAKE" train --tp 4
expect_refused "tp 4 does not divide the 2 ranks per node, so a TP group would span nodes; add --allow-tp-across-nodes"
case_end

case_start "--allow-tp-across-nodes accepts --tp 4 on 2 x 2"
plan "${SLURM_2X2[@]}" -- --dry-run --allow-tp-across-nodes --bin "$FAKE" train --tp 4
expect_rc 0
expect_field tp 4; expect_field dp 1
case_end

case_start "refused: --tp 3 does not divide np 4"
plan "${SLURM_2X2[@]}" -- --dry-run --allow-tp-across-nodes --bin "$FAKE" train --tp 3
expect_refused "tp 3 does not divide np 4"
case_end

case_start "refused: uneven Slurm tasks 2,1 (np 3 not a multiple of the ranks per node)"
plan SLURM_JOB_ID=5 SLURM_NNODES=2 SLURM_NTASKS=3 SLURM_TASKS_PER_NODE=2,1 SLURM_CPUS_ON_NODE=8 -- --dry-run --bin "$FAKE" train
expect_refused "np 3 (SLURM_TASKS_PER_NODE=2,1) is not a multiple of the ranks per node"
case_end

case_start "refused: SLURM_NTASKS=5 is not nodes x ranks per node"
plan SLURM_JOB_ID=5 SLURM_NNODES=2 SLURM_NTASKS=5 SLURM_NTASKS_PER_NODE=2 "SLURM_TASKS_PER_NODE=2(x2)" \
    SLURM_CPUS_ON_NODE=8 -- --dry-run --bin "$FAKE" train
expect_refused "np 5 (SLURM_NTASKS) is not a multiple of 2 ranks per node"
case_end

case_start "refused: --ranks-per-node 16 on 8 CPUs a node (SLURM_CPUS_ON_NODE)"
plan "${SLURM_2X2[@]}" -- --dry-run --ranks-per-node 16 --bin "$FAKE" train
expect_refused "--ranks-per-node 16 is larger than the 8 CPUs of a node (SLURM_CPUS_ON_NODE); add --oversubscribe"
case_end

case_start "refused: --hosts with srun"
plan "${SLURM_2X2[@]}" -- --dry-run --launcher srun --hosts a,b --bin "$FAKE" train
expect_refused "--hosts/--hostfile are for mpirun"
case_end

# ---- a plain machine (fake sysfs and cpuinfo) ----------------------------------------------

case_start "plain machine, 2 NUMA domains, 8 CPUs, avx512f: mpirun np 2, PE=4, SkylakeX"
plan -- --dry-run --bin "$FAKE" train --steps 5
expect_rc 0
expect_field nodes 1; expect_field ranks/node 2; expect_source ranks/node "NUMA domain (2 in $FIX/sysfs-2numa"
expect_field np 2; expect_field threads/rank 4; expect_field cpus/node 8
expect_field tp 2; expect_field dp 1
expect_field launcher mpirun; expect_source launcher "no Slurm allocation"
expect_field env "$ENV_4"
expect_field command "mpirun -np 2 --map-by ppr:2:node:PE=4 --bind-to core $X_VARS $FQ train --tp 2 --threads 4 --steps 5"
expect_in "shardlora decides on each rank's node: SkylakeX where the CPU has avx512f (avx512f in $FIX/cpuinfo-avx512)" blas
expect_in "read on this machine, the only node" node-facts
query_log_empty
if [ "$IS_ROOT" = 1 ]; then expect_field launcher-env "$ROOT_ENV"; else expect_not_in OMPI_ALLOW_RUN_AS_ROOT; fi
case_end

case_start "plain machine without avx512f: OPENBLAS_CORETYPE neither set nor exported"
plan SHARDLORA_RUN_CPUINFO="$FIX/cpuinfo-noavx512" -- --dry-run --bin "$FAKE" train
expect_rc 0
expect_not_in OPENBLAS_CORETYPE env
expect_not_in OPENBLAS_CORETYPE command
expect_in "no avx512f" blas
case_end

case_start "OPENBLAS_CORETYPE=Haswell preset in this shell: not passed on (shardlora picks per node)"
plan OPENBLAS_CORETYPE=Haswell -- --dry-run --bin "$FAKE" train
expect_rc 0
expect_not_in OPENBLAS_CORETYPE env
expect_not_in "-x OPENBLAS_CORETYPE" command
expect_in "this shell's OPENBLAS_CORETYPE=Haswell is not passed on" blas
case_end

case_start "SHARDLORA_BLAS_CORE=keep with OPENBLAS_CORETYPE=Cooperlake: both passed on"
plan SHARDLORA_BLAS_CORE=keep OPENBLAS_CORETYPE=Cooperlake -- --dry-run --bin "$FAKE" train
expect_rc 0
expect_in "SHARDLORA_BLAS_CORE=keep OPENBLAS_CORETYPE=Cooperlake" env
expect_in "-x SHARDLORA_BLAS_CORE -x OPENBLAS_CORETYPE" command
case_end

case_start "SHARDLORA_BLAS_CORE=keep: no OPENBLAS_CORETYPE, the setting passed on"
plan SHARDLORA_BLAS_CORE=keep -- --dry-run --bin "$FAKE" train
expect_rc 0
expect_not_in OPENBLAS_CORETYPE env
expect_in "SHARDLORA_BLAS_CORE=keep" env
expect_in "-x SHARDLORA_BLAS_CORE" command
case_end

case_start "plain machine without NUMA nodes: one rank per socket (2 sockets, 4 CPUs)"
plan SHARDLORA_RUN_SYSFS="$FIX/sysfs-2sockets" -- --dry-run --bin "$FAKE" train
expect_rc 0
expect_field ranks/node 2; expect_source ranks/node "socket (2 in"
expect_field threads/rank 2; expect_field cpus/node 4
case_end

case_start "plain machine, neither NUMA nor sockets: 1 rank, online list 0-3,8,10-11 = 7 CPUs"
plan SHARDLORA_RUN_SYSFS="$FIX/sysfs-flat" -- --dry-run --bin "$FAKE" train
expect_rc 0
expect_field ranks/node 1; expect_field cpus/node 7; expect_field threads/rank 7; expect_field tp 1
expect_in "mpirun -np 1 --map-by ppr:1:node:PE=7 --bind-to core" command
case_end

case_start "--ranks-per-node 4 --threads 2 on 8 CPUs: tp 4, PE=2"
plan -- --dry-run --ranks-per-node 4 --threads 2 --bin "$FAKE" train
expect_rc 0
expect_field np 4; expect_field threads/rank 2; expect_source threads/rank "--threads"; expect_field tp 4
expect_in "mpirun -np 4 --map-by ppr:4:node:PE=2 --bind-to core -x" command
expect_in "train --tp 4 --threads 2" command
case_end

case_start "shardlora's own --threads 3 sets the plan's threads and is not repeated"
plan -- --dry-run --bin "$FAKE" train --threads 3
expect_rc 0
expect_field threads/rank 3; expect_source threads/rank "shardlora's --threads"
expect_count 1 "--threads" command
expect_in "PE=3" command
case_end

case_start "refused: launcher --threads 2 and shardlora --threads 3 disagree"
plan -- --dry-run --threads 2 --bin "$FAKE" train --threads 3
expect_refused "--threads 2 and shardlora's --threads 3 disagree"
case_end

case_start "refused: 2 ranks x 8 threads on 8 CPUs"
plan -- --dry-run --threads 8 --bin "$FAKE" train
expect_refused "2 ranks x 8 threads need 16 CPUs per node, a node has 8"
case_end

case_start "refused: --ranks-per-node 16 on 8 CPUs; accepted with --oversubscribe (overload-allowed)"
plan -- --dry-run --ranks-per-node 16 --bin "$FAKE" train
expect_refused "--ranks-per-node 16 is larger than the 8 CPUs of a node"
case_end
case_start "--ranks-per-node 16 --oversubscribe: 1 thread, --bind-to core:overload-allowed"
plan -- --dry-run --ranks-per-node 16 --oversubscribe --bin "$FAKE" train
expect_rc 0
expect_field threads/rank 1
expect_in "mpirun -np 16 --map-by ppr:16:node:PE=1 --bind-to core:overload-allowed --oversubscribe -x" command
case_end

case_start "merge takes --threads but no --tp: only --threads inserted"
plan -- --dry-run --bin "$FAKE" merge --adapter /a --out /m
expect_rc 0
expect_field tp "-"; expect_field dp "-"
expect_in "$FQ merge --threads 4 --adapter /a --out /m" command
case_end

case_start "a command without --tp (make-model): nothing inserted, tp not applicable"
plan -- --dry-run --bin "$FAKE" make-model --out /tmp/m
expect_rc 0
expect_field tp "-"
expect_not_in "--tp" command; expect_not_in "--threads" command
expect_in "$FQ make-model --out /tmp/m" command
case_end

# ---- hosts --------------------------------------------------------------------------------

case_start "--hosts a:2,b:2: 2 nodes x 2 ranks, mpirun --host a:2,b:2, tp 2 x dp 2"
plan -- --dry-run --hosts a:2,b:2 --bin "$FAKE" train
expect_rc 0
expect_field nodes 2; expect_source nodes "--hosts"
expect_field ranks/node 2; expect_field np 4; expect_field threads/rank 4; expect_field tp 2; expect_field dp 2
expect_field command "mpirun -np 4 --map-by ppr:2:node:PE=4 --bind-to core --host a:2,b:2 $X_VARS $FQ train --tp 2 --threads 4"
case_end

case_start "--hosts a,b without slots: ranks per node become the slots"
plan -- --dry-run --hosts=a,b --ranks-per-node 3 --bin "$FAKE" train
expect_rc 0
expect_field np 6; expect_field tp 3; expect_in "--host a:3,b:3" command
case_end

case_start "--hosts inside a Slurm allocation with auto launcher: mpirun on the given hosts, K from their slots"
plan "${SLURM_2X2[@]}" -- --dry-run --hosts x:4,y:4,z:4 --bin "$FAKE" train
expect_rc 0
expect_field launcher mpirun; expect_field nodes 3; expect_field ranks/node 4; expect_field np 12
expect_source ranks/node "K from --hosts slots"
expect_field threads/rank 2; expect_source cpus/node "queried"
expect_in "--host x:4,y:4,z:4" command
case_end

case_start "--hosts a:2,b:2 on a start machine with 4 NUMA domains and 16 CPUs: K 2 from the slots, CPUs from the nodes"
plan SHARDLORA_RUN_SYSFS="$FIX/sysfs-4numa" -- --dry-run --hosts a:2,b:2 --bin "$FAKE" train
expect_rc 0
expect_field ranks/node 2; expect_source ranks/node "K from --hosts slots"
expect_field np 4; expect_field tp 2; expect_field dp 2
expect_field cpus/node 8; expect_source cpus/node "on each node, queried"
expect_field threads/rank 4
expect_in "queried on each of the 2 nodes (mpirun" node-facts
query_log_has "mpirun -np 2 --map-by ppr:1:node --bind-to none --host a:1,b:1 $RUN --node-facts"
expect_in "--host a:2,b:2" command
case_end

case_start "refused: --hosts a:2,b:4 (slots differ): one line naming the slots and the fixes"
plan -- --dry-run --hosts a:2,b:4 --bin "$FAKE" train
expect_refused "--hosts: the hosts' slots differ (a:2, b:4), and every node must run the same number of ranks (tensor-parallel groups stay inside a node): give --ranks-per-node K (K ranks on each host), or the same slots on every host"
query_log_empty
case_end

case_start "--hosts a:2,b:4 --ranks-per-node 2: the flag wins over the slots (they are a maximum)"
plan -- --dry-run --hosts a:2,b:4 --ranks-per-node 2 --bin "$FAKE" train
expect_rc 0
expect_field ranks/node 2; expect_source ranks/node "--ranks-per-node"
expect_field np 4; expect_in "--host a:2,b:4" command
case_end

case_start "refused: --hosts a:1,b:1 --ranks-per-node 2: fewer slots than ranks a node"
plan -- --dry-run --hosts a:1,b:1 --ranks-per-node 2 --bin "$FAKE" train
expect_refused "host a has 1 slots, fewer than 2 ranks per node; add --oversubscribe"
case_end

case_start "--hosts a,b without slots: one rank per NUMA domain of the nodes (2), not of this machine (4)"
plan SHARDLORA_RUN_SYSFS="$FIX/sysfs-4numa" -- --dry-run --hosts a,b --bin "$FAKE" train
expect_rc 0
expect_field ranks/node 2; expect_source ranks/node "one per NUMA domain: 2 on each of the 2 nodes, queried"
expect_field cpus/node 8; expect_field threads/rank 4; expect_field np 4
expect_in "--host a:2,b:2" command
# the nodes have no avx512f (this machine has): no core forced, the plan says where it is decided
expect_not_in OPENBLAS_CORETYPE env
expect_in "avx512f on 0 of 2 nodes" blas
case_end

case_start "refused: --hosts a,b whose NUMA domains differ (2 and 4), K from them"
plan FAKE_NODES="b=$FIX/sysfs-4numa" -- --dry-run --hosts a,b --bin "$FAKE" train
expect_refused "the nodes differ in NUMA domains (a: 2, b: 4), so one rank per domain gives no common ranks per node: give --ranks-per-node"
case_end

case_start "--hosts a:2,b:2 with nodes of 8 and 16 CPUs: threads from the smallest node"
plan FAKE_NODES="b=$FIX/sysfs-4numa" SHARDLORA_RUN_SYSFS="$FIX/sysfs-4numa" -- --dry-run --hosts b:2,a:2 --bin "$FAKE" train
expect_rc 0
expect_field cpus/node 8; expect_source cpus/node "the smallest node's, a; queried"
expect_field threads/rank 4
case_end

case_start "the query fails: this machine's facts, and the plan says so"
plan FAKE_QUERY_FAIL=3 SHARDLORA_RUN_SYSFS="$FIX/sysfs-4numa" -- --dry-run --hosts a,b --bin "$FAKE" train
expect_rc 0
expect_field ranks/node 4; expect_source ranks/node "NUMA domain (4 in $FIX/sysfs-4numa"
expect_field cpus/node 16
expect_in "read on this machine, not on the nodes: querying them failed (mpirun exited with status 3)" node-facts
case_end

case_start "--no-node-query: no query, this machine's facts, the plan says so"
plan SHARDLORA_RUN_SYSFS="$FIX/sysfs-4numa" -- --dry-run --no-node-query --hosts a,b --bin "$FAKE" train
expect_rc 0
expect_field ranks/node 4
expect_in "read on this machine, not on the nodes (--no-node-query)" node-facts
query_log_empty
case_end

case_start "--node-facts prints this machine's facts, also inside an mpirun rank (OMPI_COMM_WORLD_RANK set)"
plan OMPI_COMM_WORLD_RANK=1 SHARDLORA_RUN_HOSTNAME=h7 -- --node-facts
expect_rc 0
[ "$OUT" = "shardlora-run-facts: host=h7 domains=2 kind=numa cpus=8 avx512f=1 mem=68719476736" ] || err "unexpected --node-facts line"
plan SHARDLORA_RUN_SYSFS="$FIX/sysfs-2sockets" SHARDLORA_RUN_CPUINFO="$FIX/cpuinfo-noavx512" SHARDLORA_RUN_HOSTNAME=h8 -- --node-facts
[ "$OUT" = "shardlora-run-facts: host=h8 domains=2 kind=socket cpus=4 avx512f=0 mem=68719476736" ] || err "unexpected --node-facts line (sockets)"
case_end

case_start "--hostfile (path with spaces): 3 hosts, comments and blank lines skipped"
mkdir -p "$WORK/my hosts"
cp "$FIX/hostfile" "$WORK/my hosts/host file"
plan SHARDLORA_RUN_SYSFS="$FIX/sysfs-4numa" -- --dry-run --hostfile "$WORK/my hosts/host file" --bin "$FAKE" train
expect_rc 0
expect_field nodes 3; expect_field np 6; expect_field tp 2; expect_field dp 3
expect_field ranks/node 2; expect_source ranks/node "K from --hostfile slots"
expect_in "--hostfile $(q "$WORK/my hosts/host file")" command
query_log_has "mpirun -np 3 --map-by ppr:1:node --bind-to none --hostfile $WORK/my hosts/host file"
case_end

case_start "refused: a hostfile whose slots differ (2 and 3)"
printf 'x slots=2\ny slots=3 max_slots=4\n' >"$WORK/uneven-hosts"
plan -- --dry-run --hostfile "$WORK/uneven-hosts" --bin "$FAKE" train
expect_refused "--hostfile: the hosts' slots differ (x:2, y:3)"
case_end

case_start "refused: --hosts and --hostfile together; unreadable hostfile"
plan -- --dry-run --hosts a --hostfile "$FIX/hostfile" --bin "$FAKE" train
expect_refused "give --hosts or --hostfile, not both"
case_end
case_start "refused: unreadable hostfile"
plan -- --dry-run --hostfile "$WORK/none" --bin "$FAKE" train
expect_refused "cannot read it"
case_end

# ---- option checks ------------------------------------------------------------------------

for bad in "--ranks-per-node 0 train|--ranks-per-node '0': expected an integer > 0" \
    "--ranks-per-node=two train|--ranks-per-node 'two': expected an integer > 0" \
    "--threads -1 train|--threads '-1': expected an integer > 0" \
    "--threads train|--threads 'train': expected an integer > 0" \
    "--launcher slurm train|--launcher 'slurm': expected auto, mpirun or srun" \
    "--np 4 train|unknown option '--np'" \
    "-n 4 train|unknown option '-n'" \
    "--hosts a:x train|slots 'x' of a: expected an integer > 0" \
    "--ranks-per-node|--ranks-per-node needs a value"; do
    opt="${bad%%|*}"
    msg="${bad#*|}"
    case_start "refused: $opt"
    # shellcheck disable=SC2086  # the words of the case
    plan -- --dry-run $opt
    expect_refused "$msg"
    case_end
done

case_start "refused: no COMMAND"
plan -- --dry-run --ranks-per-node 2
expect_refused "no COMMAND given"
case_end

case_start "refused: srun outside a Slurm allocation"
plan -- --dry-run --launcher srun --bin "$FAKE" train
expect_refused "--launcher srun needs a Slurm allocation"
case_end

case_start "refused: a missing binary when not dry-running (nothing started)"
plan -- --bin "$WORK/no such/shardlora" train
expect_refused "is not an executable file"
case_end

case_start "-- ends the launcher options; --help lists every option with its default"
plan -- --dry-run --bin "$FAKE" -- train --dry-run
expect_rc 0
expect_in "$FQ train --tp 2 --threads 4 --dry-run" command
plan -- --help
expect_rc 0
for o in --ranks-per-node --threads --hosts --hostfile --launcher --oversubscribe --allow-tp-across-nodes --bin --no-node-query --dry-run --node-facts --help; do
    expect_in " $o "
done
expect_in "[auto:"; expect_in "[off]"; expect_in "SHARDLORA_RUN_DRY"
case_end

case_start "binary: SHARDLORA_BIN, then ../build/shardlora next to the script (in a path with spaces)"
plan SHARDLORA_BIN="$FAKE" -- --dry-run train
expect_rc 0
expect_field binary "$FAKE"; expect_source binary SHARDLORA_BIN
mkdir -p "$WORK/a checkout/launch" "$WORK/a checkout/build"
cp "$RUN" "$WORK/a checkout/launch/shardlora-run"
cp "$FAKE" "$WORK/a checkout/build/shardlora"
OUT="$(env -i PATH="$BASE_PATH" SHARDLORA_RUN_SYSFS="$FIX/sysfs-2numa" SHARDLORA_RUN_CPUINFO="$FIX/cpuinfo-avx512" \
    "$WORK/a checkout/launch/shardlora-run" --dry-run train 2>&1)"
RC=$?
expect_rc 0
expect_field binary "$WORK/a checkout/build/shardlora"; expect_source binary "next to this script"
expect_in "$(q "$WORK/a checkout/build/shardlora") train" command
case_end

# ---- rank mode ----------------------------------------------------------------------------

OMPI_RANK0=(OMPI_COMM_WORLD_RANK=0 OMPI_COMM_WORLD_SIZE=4 OMPI_COMM_WORLD_LOCAL_RANK=0
    OMPI_COMM_WORLD_LOCAL_SIZE=2 SLURM_PROCID=0 SLURM_JOB_ID=4242 SLURM_NNODES=2 SLURM_NTASKS=4)

case_start "rank mode (Open MPI rank, SHARDLORA_RUN_DRY=1): env and exec line, no launcher, no --tp"
plan "${OMPI_RANK0[@]}" SLURM_CPUS_PER_TASK=3 SHARDLORA_RUN_DRY=1 -- --bin "$FAKE" train --out "/o 1"
expect_rc 0
expect_in "shardlora-run: rank mode (dry run"
expect_field rank "0 of 4"; expect_source rank OMPI_COMM_WORLD_RANK
expect_field threads/rank 3; expect_source threads/rank SLURM_CPUS_PER_TASK
expect_field env "OMP_NUM_THREADS=3 OPENBLAS_NUM_THREADS=3 OMP_WAIT_POLICY=PASSIVE OPENBLAS_CORETYPE=SkylakeX"
expect_field exec "$FQ train --threads 3 --out '/o 1'"
expect_not_in "mpirun"; expect_not_in "srun"; expect_not_in "--tp"
case_end

case_start "rank mode: rank from OMPI_COMM_WORLD_RANK, not SLURM_PROCID (0 on every rank under mpirun)"
plan OMPI_COMM_WORLD_RANK=3 OMPI_COMM_WORLD_SIZE=4 OMPI_COMM_WORLD_LOCAL_SIZE=2 SLURM_PROCID=0 \
    SHARDLORA_RUN_CPUINFO="$FIX/cpuinfo-noavx512" -- --dry-run --threads 2 --bin "$FAKE" train --tp 2
expect_rc 0
expect_field rank "3 of 4"
expect_field exec "$FQ train --threads 2 --tp 2"
expect_not_in OPENBLAS_CORETYPE env
case_end

case_start "rank mode: --pp passed on as --pp unless shardlora's options have it"
plan OMPI_COMM_WORLD_RANK=1 OMPI_COMM_WORLD_SIZE=4 OMPI_COMM_WORLD_LOCAL_SIZE=2 -- --dry-run --threads 2 --pp 2 --bin "$FAKE" train --tp 2
expect_rc 0
expect_field exec "$FQ train --pp 2 --threads 2 --tp 2"
plan OMPI_COMM_WORLD_RANK=1 OMPI_COMM_WORLD_SIZE=4 OMPI_COMM_WORLD_LOCAL_SIZE=2 -- --dry-run --threads 2 --pp 2 --bin "$FAKE" train --pp=2
expect_rc 0
expect_field exec "$FQ train --threads 2 --pp=2"
case_end

case_start "rank mode, threads derived: bound ranks use their CPUs, unbound share the node's"
# The fake sysfs says 8 online CPUs; this process may use $(nproc) of them.
plan OMPI_COMM_WORLD_RANK=1 OMPI_COMM_WORLD_SIZE=2 OMPI_COMM_WORLD_LOCAL_SIZE=2 -- --dry-run --bin "$FAKE" train
expect_rc 0
aff="$(nproc)"
if [ "$aff" -lt 8 ]; then expect_field threads/rank "$aff"; else expect_field threads/rank 4; fi
# pinned to one CPU (as mpirun --bind-to core does), whatever the machine
OUT="$(env -i PATH="$BASE_PATH" SHARDLORA_RUN_SYSFS="$FIX/sysfs-2numa" SHARDLORA_RUN_CPUINFO="$FIX/cpuinfo-avx512" \
    OMPI_COMM_WORLD_RANK=1 OMPI_COMM_WORLD_SIZE=2 OMPI_COMM_WORLD_LOCAL_SIZE=2 \
    taskset -c 0 "$RUN" --dry-run --bin "$FAKE" train 2>&1)"
RC=$?
expect_rc 0
expect_field threads/rank 1; expect_source threads/rank "bound to"
case_end

case_start "rank mode from PMIX_RANK only (srun --mpi=pmix): local size from SLURM_STEP_TASKS_PER_NODE"
plan PMIX_RANK=2 SLURM_STEP_NUM_TASKS=4 "SLURM_STEP_TASKS_PER_NODE=2(x2)" SLURM_NODEID=1 SLURM_PROCID=2 \
    SHARDLORA_RUN_SYSFS="$FIX/sysfs-flat" -- --dry-run --bin "$FAKE" train
expect_rc 0
expect_field rank "2 of 4"; expect_source rank PMIX_RANK
# 7 online CPUs in the fake tree; bound if this process may use fewer, else 7 / 2 ranks
aff="$(nproc)"
if [ "$aff" -lt 7 ]; then expect_field threads/rank "$aff"; else expect_field threads/rank 3; fi
case_end

case_start "rank mode exec: same process, the rank's environment, the arguments intact"
# shellcheck disable=SC2016  # $$ and $0 belong to the inner shell
OUT="$(env -i PATH="$BASE_PATH" SHARDLORA_RUN_SYSFS="$FIX/sysfs-2numa" SHARDLORA_RUN_CPUINFO="$FIX/cpuinfo-avx512" \
    OMPI_COMM_WORLD_RANK=0 OMPI_COMM_WORLD_SIZE=1 OMPI_COMM_WORLD_LOCAL_SIZE=1 FAKE_EXIT=75 \
    bash -c 'echo "shell pid $$"; exec "$0" "$@"' "$RUN" --threads 2 --bin "$FAKE" train --out "a  b" "" 2>&1)"
RC=$?
expect_rc 75
shell_pid="$(sed -n 's/^shell pid //p' <<<"$OUT")"
expect_in "fake pid $shell_pid"
expect_in "fake arg <train>
fake arg <--threads>
fake arg <2>
fake arg <--out>
fake arg <a  b>
fake arg <>"
for kv in OMP_NUM_THREADS=2 OPENBLAS_NUM_THREADS=2 OPENBLAS_CORETYPE=SkylakeX; do
    expect_in "fake env $kv"
done
expect_not_in "fake env OMPI_ALLOW"
case_end

# ---- launch mode with a stand-in launcher: status and signal forwarding -------------------

# A stand-in mpirun: records its arguments and environment, exits FAKE_EXIT, or on SIGUSR1 /
# SIGTERM (after writing "ready") exits 75 / 143 like shardlora under mpirun.
FAKE_MPIRUN="$WORK/bin dir/mpirun"
cat >"$FAKE_MPIRUN" <<'EOF'
#!/usr/bin/env bash
for a in "$@"; do echo "mpirun arg <$a>"; done
env | grep -E '^(OMP_NUM_THREADS|OPENBLAS_CORETYPE|OMPI_ALLOW_RUN_AS_ROOT)=' | sort | sed 's/^/mpirun env /'
[ -n "${FAKE_WAIT:-}" ] || exit "${FAKE_EXIT:-0}"
trap 'echo "mpirun got USR1"; exit 75' USR1
trap 'echo "mpirun got TERM"; exit 143' TERM
: > "$FAKE_WAIT"
for _ in $(seq 600); do sleep 0.05; done   # at most 30 s: never left behind if the test fails
exit 99
EOF
chmod +x "$FAKE_MPIRUN"

case_start "launch mode: starts the launcher with the plan's environment (not this shell's OpenBLAS core), exits with its status (75)"
plan SHARDLORA_RUN_MPIRUN="$FAKE_MPIRUN" FAKE_EXIT=75 OPENBLAS_CORETYPE=SkylakeX -- --bin "$FAKE" train --out "x y"
expect_rc 75
expect_in "mpirun arg <--map-by>
mpirun arg <ppr:2:node:PE=4>"
expect_in "mpirun arg <x y>"
expect_in "mpirun env OMP_NUM_THREADS=4"
expect_not_in "mpirun env OPENBLAS_CORETYPE"
[ "$IS_ROOT" = 0 ] || expect_in "mpirun env OMPI_ALLOW_RUN_AS_ROOT=1"
expect_in "stopped after a checkpoint: requeue"
case_end

# ---- pipeline stages (--pp) and the default pp from the memory estimate -----------------------

case_start "--pp 2 on 2 hosts x 2 slots: tp 2 in a node, stage 0 on node 0, stage 1 on node 1, --pp inserted"
plan -- --dry-run --hosts n1:2,n2:2 --pp 2 --bin "$FAKE" train --model /m
expect_rc 0
expect_field tp 2; expect_field pp 2; expect_source pp "--pp; inserted --pp 2"; expect_field dp 1
expect_in "TP groups inside a node; stages across nodes (pipeline 0: stage 0 on node 0, stage 1 on node 1)" placement
expect_in "$FQ train --tp 2 --pp 2 --threads 4 --model /m" command
expect_count 1 "--pp" command
case_end

case_start "--pp 2 on one node of 2 ranks: tp 1 (the largest divisor of K leaving room), stages inside the node"
plan -- --dry-run --pp 2 --bin "$FAKE" eval --model /m
expect_rc 0
expect_field tp 1; expect_field pp 2; expect_field dp 1
expect_source tp "the largest divisor of 2 ranks per node"
expect_in "stages inside a node (pipeline 0: stage 0 on node 0, stage 1 on node 0)" placement
expect_in "$FQ eval --tp 1 --pp 2 --threads 4 --model /m" command
case_end

case_start "shardlora's --pp 2 and --pp-layers kept (not inserted again); --tp 2 x --pp 2 on 2 x 4 ranks: dp 2"
plan -- --dry-run --hosts n1:4,n2:4 --bin "$FAKE" train --pp 2 --tp 2 --model /m
expect_rc 0
expect_field tp 2; expect_field pp 2; expect_field dp 2; expect_source pp "kept: --pp"
expect_count 1 "--pp" command
expect_in "stages inside a node (pipeline 0: stage 0 on node 0, stage 1 on node 0)" placement
plan -- --dry-run --hosts n1:2,n2:2 --bin "$FAKE" train --pp-layers 20,12 --model /m
expect_rc 0
expect_field pp 2; expect_source pp "kept: --pp-layers (its count)"; expect_count 0 " --pp " command
case_end

case_start "--pp refusals: disagreeing with shardlora's, not dividing np, for generate, not a count"
plan -- --dry-run --hosts n1:2,n2:2 --pp 4 --bin "$FAKE" train --pp 2 --model /m
expect_refused "--pp 4 and shardlora's --pp 2 disagree"
plan -- --dry-run --hosts n1:2,n2:2 --pp 3 --bin "$FAKE" train --model /m
expect_refused "pp 3 does not divide np 4"
plan -- --dry-run --hosts n1:2,n2:2 --bin "$FAKE" train --tp 2 --pp 4 --model /m
expect_refused "tp 2 x pp 4 does not divide np 4"
plan -- --dry-run --pp 2 --bin "$FAKE" generate --model /m
expect_refused "--pp: generate runs no pipeline stages"
plan -- --dry-run --pp x --bin "$FAKE" train
expect_refused "--pp 'x': expected an integer > 0"
plan -- --dry-run --mem-per-node -3 --bin "$FAKE" train
expect_refused "--mem-per-node '-3': expected a positive number of GiB"
case_end

# The default pp from the estimate needs the real binary (shardlora plan) and a config.json:
# the 7B shape with float16 weights (held as F32): 4 x 6.74e9 parameters, 12.55 GiB per rank
# at tp 2 for the frozen weights alone, so 2 ranks fit a node of 64 GiB (32 per rank) and not
# one of 24 GiB (12 per rank), whatever the activations.
M7="$FIX/llama7b"
case_start "default pp: the model does not fit one node of 24 GiB (queried MemAvailable): pp = 2 nodes, printed"
plan SHARDLORA_RUN_MEMINFO="$FIX/meminfo-24g" -- --dry-run --hosts n1:2,n2:2 --bin "$SLBIN" train --model "$M7" --out /o
expect_rc 0
expect_field tp 2; expect_field pp 2; expect_field dp 1
expect_source pp "the model does not fit one node: pp = 2 nodes; inserted --pp 2"
expect_in "tp 2 x pp 1 needs 1" memory
expect_in "a rank may use 12 GiB = 24.000 GiB per node / 2 ranks (memory: the smallest node's" memory
expect_in "; tp 2 x pp 2 needs " memory
expect_in "train --tp 2 --pp 2 --threads 4 --model $M7" command
query_log_has "--node-facts"
case_end

case_start "default pp: the model fits one node of 64 GiB: pp 1, nothing inserted"
plan -- --dry-run --hosts n1:2,n2:2 --bin "$SLBIN" train --model "$M7" --out /o
expect_rc 0
expect_field pp 1; expect_source pp "the model fits one node"; expect_field dp 2
expect_count 0 "--pp" command
case_end

case_start "default pp: one host's cgroup allows 20 GiB (MemAvailable 64): the smallest node decides, pp 2"
plan SHARDLORA_RUN_PROC_CGROUP="$FIX/proc-cgroup-v2" FAKE_NODES="n2=$FIX/sysfs-2numa-cg20g" -- \
    --dry-run --hosts n1:2,n2:2 --bin "$SLBIN" train --model "$M7"
expect_rc 0
expect_field pp 2; expect_in "20.000 GiB per node / 2 ranks (memory: the smallest node's, n2" memory
case_end

case_start "default pp: --mem-per-node, SLURM_MEM_PER_NODE and --memory-limit say the memory (no query for it)"
plan -- --dry-run --hosts n1:2,n2:2 --ranks-per-node 2 --threads 4 --mem-per-node 24 --bin "$SLBIN" train --model "$M7"
expect_rc 0
expect_field pp 2; expect_in "24 GiB per node / 2 ranks (memory: --mem-per-node)" memory
plan "${SLURM_2X2[@]}" SLURM_MEM_PER_NODE=24576 -- --dry-run --bin "$SLBIN" train --model "$M7"
expect_rc 0
expect_field pp 2; expect_in "(memory: SLURM_MEM_PER_NODE=24576 MB)" memory
expect_in "srun --mpi=pmix --nodes 2 -n 4 --ntasks-per-node 2 --cpus-per-task 4 --cpu-bind=cores $(q "$SLBIN") train --tp 2 --pp 2 --threads 4" command
query_log_empty
plan "${SLURM_2X2[@]}" -- --dry-run --bin "$SLBIN" train --model "$M7" --memory-limit 40
expect_rc 0
expect_field pp 1; expect_in "(memory: shardlora's --memory-limit x 2 ranks)" memory
query_log_empty
case_end

case_start "train-nnodes.sbatch: PP=2 becomes --pp 2; MEM_PER_NODE=24 lets the launcher choose pp 2 (dry run)"
echo '{"text": "x"}' >"$WORK/data.jsonl"
sbatch_dry() {
    OUT="$(cd "$WORK" && env -i PATH="$BASE_PATH" HOME="$WORK" "${SLURM_2X2[@]}" SLURM_SUBMIT_DIR="$ROOT" \
        SHARDLORA_RUN_SYSFS="$FIX/sysfs-2numa" SHARDLORA_RUN_CPUINFO="$FIX/cpuinfo-avx512" \
        SHARDLORA_RUN_MEMINFO="$FIX/meminfo-64g" SHARDLORA_RUN_PROC_CGROUP=/nonexistent SHARDLORA_RUN_DRY=1 \
        MODEL="$M7" DATA="$WORK/data.jsonl" OUT="$WORK/sbatch-out" "$@" \
        bash "$ROOT/launch/slurm/train-nnodes.sbatch" 2>&1)"
    RC=$?
}
sbatch_dry PP=2 SHARDLORA_BIN="$FAKE"
expect_rc 0
expect_field pp 2; expect_source pp "--pp; inserted --pp 2"
expect_in "$FQ train --tp 2 --pp 2 --threads 4 --model $M7 --out $WORK/sbatch-out --data $WORK/data.jsonl" command
sbatch_dry MEM_PER_NODE=24 SHARDLORA_BIN="$SLBIN"
expect_rc 0
expect_field pp 2; expect_in "(memory: --mem-per-node)" memory
sbatch_dry SHARDLORA_BIN="$SLBIN"
expect_rc 0
expect_field pp 1; expect_field dp 2
case_end

case_start "default pp: explicit --tp / --pp win; one node, no config.json, no binary: pp 1 without an estimate"
plan SHARDLORA_RUN_MEMINFO="$FIX/meminfo-24g" -- --dry-run --hosts n1:2,n2:2 --pp 1 --bin "$SLBIN" train --model "$M7"
expect_rc 0
expect_field pp 1; expect_source pp "--pp; inserted --pp 1"; expect_not_in "shardlora-run:   memory"
plan SHARDLORA_RUN_MEMINFO="$FIX/meminfo-24g" -- --dry-run --hosts n1:2,n2:2 --bin "$SLBIN" train --model "$M7" --tp 1 --allow-tp-across-nodes
expect_rc 0
expect_field tp 1; expect_field pp 2; expect_field dp 2; expect_in "tp 1 x pp 1 needs" memory
plan SHARDLORA_RUN_MEMINFO="$FIX/meminfo-24g" -- --dry-run --bin "$SLBIN" train --model "$M7"
expect_rc 0
expect_field pp 1; expect_source pp "one node"
plan SHARDLORA_RUN_MEMINFO="$FIX/meminfo-24g" -- --dry-run --hosts n1:2,n2:2 --bin "$SLBIN" train --model /nonexistent
expect_rc 0
expect_field pp 1; expect_source pp "not estimated: no config.json"
case_end

for sig in USR1 TERM; do
    case_start "launch mode: SIG$sig to the launcher is forwarded to its child and its status returned"
    ready="$WORK/ready-$sig"
    rm -f "$ready"
    env -i PATH="$BASE_PATH" SHARDLORA_RUN_SYSFS="$FIX/sysfs-2numa" SHARDLORA_RUN_CPUINFO="$FIX/cpuinfo-avx512" \
        SHARDLORA_RUN_MPIRUN="$FAKE_MPIRUN" FAKE_WAIT="$ready" "$RUN" --bin "$FAKE" train >"$WORK/sig-$sig.log" 2>&1 &
    pid=$!
    for _ in $(seq 200); do [ -e "$ready" ] && break; sleep 0.05; done
    [ -e "$ready" ] || err "the stand-in mpirun did not start"
    kill -"$sig" "$pid"
    RC=0
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
    if kill -0 "$pid" 2>/dev/null; then
        err "the launcher still runs 5 s after SIG$sig"
        kill -9 "$pid"
    fi
    wait "$pid" || RC=$?
    OUT="$(cat "$WORK/sig-$sig.log")"
    expect_rc "$([ "$sig" = USR1 ] && echo 75 || echo 143)"
    expect_in "SIG$sig: forwarded to mpirun"
    expect_in "mpirun got $sig"
    case_end
done

echo "$((NCASES - NFAIL)) of $NCASES cases passed"
[ "$NFAIL" = 0 ] || exit 1
