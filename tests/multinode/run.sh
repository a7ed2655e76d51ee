#!/usr/bin/env bash
# Two simulated hosts on one machine (network namespaces joined by a veth pair, as
# shared/MULTI-HOST-LOCAL.md describes), 2 ranks each: tp=2 inside a host (shared memory),
# dp=2 across the hosts over TCP. Checks, with the real programs:
#  1. the bytes that cross the link per step (veth counters, runs of 2 and 12 steps) are within
#     a small factor of the adapter gradient that crosses dp and far below the TP activations;
#  2. kill -9 of one rank on host B ends the whole job (mpirun on A, the ranks on both hosts)
#     non-zero within seconds, and the same command relaunched resumes and completes;
#  3. the same 2-host run started through launch/shardlora-run, ranks per node from the hosts'
#     slots (--hosts A:2,B:2, no --ranks-per-node) and the nodes' CPU facts queried on each
#     host through mpirun (shardlora-run --node-facts, answered under each host's own name);
#  4. pipeline stages across the hosts (issue 19): tp 2 inside each host x pp 2, stage 0 on A
#     and stage 1 on B: the link's bytes per step against the boundary formula
#     2 x micro-batches x tokens x hidden x 4 (within PP_MAX_OVER) and against a TP group
#     spanning the hosts (tp 4, what --allow-tp-across-nodes runs: PP_MAX_FRACTION of it at
#     most); its adapter equals a 1-rank run's within the mpi tests' tolerances; and the
#     launcher picks pp = 2 nodes by itself when told a node's memory is too small for tp 2.
# Needs root (network namespaces); never skipped. Deletes its namespaces and kills what runs
# in them on exit, whatever happens.
# usage: run.sh SHARDLORA_BINARY WORK_DIR
source "$(dirname "$0")/../fault/common.sh"   # fail ok since latest_step rank_of finish
MN_DIR="$(cd "$(dirname "$0")" && pwd)"
LAUNCHER="$MN_DIR/../../launch/shardlora-run"

# ---- settings ----
NSA="mnA$$" NSB="mnB$$"        # namespace = host name; the pid keeps parallel runs apart
VA="mnva$$" VB="mnvb$$"        # the veth pair (names <= 15 characters)
IPA=10.231.0.1 IPB=10.231.0.2 NET=10.231.0.0/24   # test addresses only (MULTI-HOST-LOCAL.md)
RUN_TIMEOUT=240                # s, any one mpirun (generous: the machine is shared)
SHORT_STEPS=2 LONG_STEPS=12    # the traffic runs: (long - short) steps net of start-up and end
MAX_GRAD_FACTOR=4              # link bytes per step <= this x the gradient that crosses dp
MAX_TP_FRACTION=0.2            # link bytes per step < this x the TP activations per step
FAIL_STEPS=150 CKPT_EVERY=5    # the run that loses a rank
KILL_AFTER_CKPT=10             # kill once a checkpoint of this step exists and steps go on
KILL_DEADLINE=20               # s from kill -9 to no process left on either host
LAYERS=2 HIDDEN=64
TRAFFIC_SEQ=256 TRAFFIC_GB=8    # traffic runs: T = (GB / dp 2) x SEQ = 1024 tokens per rank per step
TRAFFIC_MB=2
TRAFFIC_COMMON=(--threads 1 --seq-len "$TRAFFIC_SEQ" --micro-batch "$TRAFFIC_MB" --global-batch "$TRAFFIC_GB"
                --peak-gflops 1 --log-every 1000)
TRAFFIC=(--tp 2 "${TRAFFIC_COMMON[@]}")
TOKENS=$((TRAFFIC_GB / 2 * TRAFFIC_SEQ))
# 4. the pipeline run: m = global batch / (dp 1 x micro-batch) micro-batches of N tokens a step
PP_MICRO=$((TRAFFIC_GB / TRAFFIC_MB)) PP_TOKENS=$((TRAFFIC_MB * TRAFFIC_SEQ))
# link bytes per step <= this x the boundary formula 2 x m x N x C x 4: measured 1.0xx here
# (Ethernet 14 + IP/TCP 52 B per <= 1448-B segment is 4.6% if the veth saw MTU-sized frames;
# with segmentation offload far less; ACKs; Open MPI's fragment headers; the step's control
# collectives, a few small messages): 1.25 leaves room for all of them, and a second copy of
# the activations (a bug) would be 2x
PP_MAX_OVER=1.25
# pp link <= this x the link of a TP group spanning the hosts: per micro-batch the boundary is
# 2 [N, C] each way over all TP ranks, tp 4 all-reduces 4L + 2 [N, C] (L 2 here: measured
# ~0.1; the ratio falls as 1 / (2L + 1) with the layers)
PP_MAX_FRACTION=0.2
# the adapter of a pp run against 1 rank: the mpi tests' model, data and settings
# (tests/mpi/layouts.sh "equivalence": tied embeddings, q/k/v bias, vocab 301; seq 16, r 4,
# lr 5e-3, 4 micro-batches a step, 5 AdamW steps) and tolerances (tests/mpi/common.sh). (On
# the GPL text and the model above, tp 2 itself, with or without pp, is 2.1e-4 off 1 rank by
# norm after 5 such steps: AdamW's m / sqrt(v) magnifies the rounding of small gradients.)
PP_STEPS=5
PPCHECK=(--no-shuffle --no-pack --seq-len 16 --threads 1 --peak-gflops 1 --lora-r 4 --lora-alpha 8
         --lr 5e-3 --seed 11 --log-every 100 --micro-batch 1 --global-batch 4 --steps $PP_STEPS)
ADAM_TOL=$(sed -n 's/^ADAM_TOL=\([0-9.e-]*\).*/\1/p' "$MN_DIR/../mpi/common.sh")
ADAM_NORM_TOL=$(sed -n 's/^ADAM_NORM_TOL=\([0-9.e-]*\).*/\1/p' "$MN_DIR/../mpi/common.sh")
FAILRUN=(--tp 2 --threads 1 --seq-len 64 --micro-batch 1 --global-batch 2 --peak-gflops 1
         --steps "$FAIL_STEPS" --ckpt-every "$CKPT_EVERY" --log-every 50)

[ "$(id -u)" = 0 ] || fail "needs root to create network namespaces"
mkdir -p "$2"
command -v ip > /dev/null || { apt-get install -y iproute2 > "$2/apt-iproute2.log" 2>&1 \
  || { apt-get update > /dev/null 2>&1 && apt-get install -y iproute2 >> "$2/apt-iproute2.log" 2>&1; }; } \
  || fail "ip is missing and iproute2 could not be installed (see $2/apt-iproute2.log)"
command -v unshare > /dev/null || fail "unshare (util-linux) is missing"

# ---- cleanup, whatever happens: kill what runs in the namespaces, delete them; logs on failure
# ns_clear NS: kill -9 every process in namespace NS, then delete it
ns_clear() {
  local p
  for p in $(ip netns pids "$1" 2> /dev/null); do kill -9 "$p" 2> /dev/null; done
  for _ in 1 2 3 4 5 6 7 8 9 10; do [ -z "$(ip netns pids "$1" 2> /dev/null)" ] && break; sleep 0.1; done
  ip netns del "$1" 2> /dev/null
}
cleanup() {
  local rc=$? f
  ns_clear "$NSA"
  ns_clear "$NSB"
  if [ "$rc" != 0 ]; then
    for f in "$W"/*.log; do
      [ -f "$f" ] || continue
      echo "==== $f (last 40 lines but the configuration and memory tables)"
      grep -v -E '^ |^\[shardlora r[0-9]+\]   ' "$f" | tail -n 40
    done
  fi
  exit "$rc"
}
# the namespaces of an earlier run that was killed outright (SIGKILL skips its trap): the pid
# in their name is no longer running
for ns in $(ip netns list 2> /dev/null | awk '{ print $1 }' | grep -E '^mn[AB][0-9]+$'); do
  kill -0 "${ns#mn?}" 2> /dev/null || { ns_clear "$ns"; echo "removed the stale namespace $ns"; }
done
setup_work multinode "$2"   # after that: a stale run can no longer write into it
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- two hosts ----
ip netns add "$NSA" && ip netns add "$NSB" || fail "cannot create network namespaces"
ip link add "$VA" type veth peer name "$VB" || fail "cannot create the veth pair"
ip link set "$VA" netns "$NSA" && ip link set "$VB" netns "$NSB" \
  && ip -n "$NSA" addr add $IPA/24 dev "$VA" && ip -n "$NSB" addr add $IPB/24 dev "$VB" \
  && ip -n "$NSA" link set "$VA" up && ip -n "$NSB" link set "$VB" up \
  && ip -n "$NSA" link set lo up && ip -n "$NSB" link set lo up || fail "cannot configure the veth pair"
ok "hosts $NSA ($IPA, $VA) and $NSB ($IPB, $VB) joined by a veth pair"

# The rsh agent mpirun calls as (options..., HOST, command...): runs the command in HOST's
# namespace under HOST's own host name. The namespaces share /dev/shm, and Open MPI names its
# shared-memory (vader) segments after the host name: under one name the local ranks 0 of
# both hosts would map the same segment (rank 0 dies of SIGSEGV, seen here).
AGENT="$W/rsh-agent"
cat > "$AGENT" <<EOF
#!/bin/sh
# mpirun's rsh agent for the simulated hosts (written by tests/multinode/run.sh)
ns=
while [ \$# -gt 0 ]; do
  case "\$1" in
    $IPA) ns=$NSA; shift; break ;;
    $IPB) ns=$NSB; shift; break ;;
  esac
  shift
done
[ -n "\$ns" ] || { echo "rsh-agent: no known host in the arguments" >&2; exit 255; }
exec ip netns exec "\$ns" unshare --uts /bin/sh -c 'hostname "\$0" && exec /bin/bash -c "\$1"' "\$ns" "\$*"
EOF
chmod +x "$AGENT"

# "${ON_A[@]}" COMMAND...: run COMMAND on host A (its namespace and host name)
ON_A=(ip netns exec "$NSA" unshare --uts /bin/sh -c 'hostname "$0" && exec "$@"' "$NSA")
MCA=(--mca plm_rsh_agent "$AGENT" --mca btl vader,tcp,self
     --mca oob_tcp_if_include "$NET" --mca btl_tcp_if_include "$NET")
MPIRUN=(mpirun --host "$IPA:2,$IPB:2" -np 4 --map-by ppr:2:node --bind-to none "${MCA[@]}")
# mpi_train LOG ARGS...: 4 ranks from host A, 2 per host, in the foreground, with a timeout
mpi_train() {
  local log="$1"; shift
  timeout -k 5 $RUN_TIMEOUT "${ON_A[@]}" "${MPIRUN[@]}" "$SL" train "$@" > "$log" 2>&1
}
# link_bytes: "RX TX" of host A's veth so far
link_bytes() {
  echo "$(ip netns exec "$NSA" cat /sys/class/net/$VA/statistics/rx_bytes)" \
       "$(ip netns exec "$NSA" cat /sys/class/net/$VA/statistics/tx_bytes)"
}
# placed LOG LABEL: ranks 0 and 1 ran on host A, 2 and 3 on host B (the start-up lines)
placed() {
  local r h
  for r in 0 1 2 3; do
    h=$NSA; [ $r -ge 2 ] && h=$NSB
    grep -q "rank $r: tp_rank .* on $h," "$1" || fail "$2: rank $r did not run on host $h"
  done
}
# host_pids NS: pids of the shardlora processes on host NS (by executable: shardlora re-executes
# itself through /proc/self/exe, so its name is "exe")
host_pids() {
  local p
  for p in $(ip netns pids "$1" 2> /dev/null); do
    [ "$(readlink "/proc/$p/exe" 2> /dev/null)" = "$SL" ] && echo "$p"
  done
}
# last_step OUT: the step of the last line of OUT/metrics.jsonl (-1 if none)
last_step() {
  local s
  s=$(tail -n 1 "$1/metrics.jsonl" 2> /dev/null | sed -n 's/.*"step": *\([0-9]*\).*/\1/p')
  echo "${s:--1}"
}

# ---- model and data (the namespaces share the filesystem: one copy serves both hosts) ----
"$SL" make-model --out "$W/model" --layers $LAYERS --hidden $HIDDEN --ffn 128 --heads 4 --kv-heads 2 \
  --vocab 259 > "$W/make-model.log" 2>&1 || fail "make-model failed"
"$PY" - /usr/share/common-licenses/GPL-3 > "$W/data.jsonl" <<'PY' || fail "cannot make the data"
import json, sys
for line in open(sys.argv[1], encoding="utf-8"):
    if line.strip():
        print(json.dumps({"text": line.strip()}))
PY
ok "model (L $LAYERS, C $HIDDEN, byte-level vocabulary 259) and $(wc -l < "$W/data.jsonl") lines of GPL-3 text"

# ---- 1. bytes across the link per step ----
declare -A RUN
for s in $SHORT_STEPS $LONG_STEPS; do
  read -r rx0 tx0 < <(link_bytes)
  t=$(date +%s.%N)
  mpi_train "$W/traffic-$s.log" --model "$W/model" --data "$W/data.jsonl" --out "$W/traffic-$s" \
    "${TRAFFIC[@]}" --steps "$s" || fail "the $s-step run failed (exit $?)"
  read -r rx1 tx1 < <(link_bytes)
  placed "$W/traffic-$s.log" "$s-step run"
  RUN[$s]="$s:$((rx1 - rx0)):$((tx1 - tx0)):$W/traffic-$s"
  ok "$s steps across the hosts in $(since "$t") s: the link carried RX $((rx1 - rx0)) TX $((tx1 - tx0)) bytes"
done
"$PY" "$MN_DIR/figures.py" --short "${RUN[$SHORT_STEPS]}" --long "${RUN[$LONG_STEPS]}" --host-ranks 0,1 \
  --tokens $TOKENS --layers $LAYERS --hidden $HIDDEN --max-grad-factor $MAX_GRAD_FACTOR \
  --max-tp-fraction $MAX_TP_FRACTION || fail "the link's bytes per step are out of bounds"

# ---- 2. kill -9 of a rank on host B ----
OUT="$W/failure"
"${ON_A[@]}" "${MPIRUN[@]}" "$SL" train --model "$W/model" --data "$W/data.jsonl" --out "$OUT" \
  "${FAILRUN[@]}" > "$W/failure-1.log" 2>&1 &
mpid=$!
wait_ckpt "$OUT" $KILL_AFTER_CKPT 90 "$mpid"
at=$(latest_step "$OUT")
t0=$(date +%s.%N)
until [ "$(last_step "$OUT")" -gt "$at" ]; do
  kill -0 "$mpid" 2> /dev/null || fail "the run ended before it went past step $at"
  awk -v a="$(since "$t0")" 'BEGIN { exit !(a > 30) }' && fail "no step after $at within 30 s"
  sleep 0.05
done
victim=
for p in $(host_pids "$NSB"); do [ "$(rank_of "$p")" = 3 ] && victim=$p; done
[ -n "$victim" ] || fail "cannot find rank 3 on host $NSB (shardlora there: $(host_pids "$NSB"))"
step_at_kill=$(last_step "$OUT")
kill -9 "$victim"
tk=$(date +%s.%N)
dt_mpirun="" dt_all=""
while :; do
  [ -z "$dt_mpirun" ] && ! kill -0 "$mpid" 2> /dev/null && dt_mpirun=$(since "$tk")
  if [ -n "$dt_mpirun" ] && [ -z "$(ip netns pids "$NSA")$(ip netns pids "$NSB")" ]; then
    dt_all=$(since "$tk"); break
  fi
  awk -v a="$(since "$tk")" -v b=$KILL_DEADLINE 'BEGIN { exit !(a > b) }' && break
  sleep 0.05
done
rc=0; wait "$mpid" || rc=$?
for ns in "$NSA" "$NSB"; do
  left=$(for p in $(ip netns pids "$ns"); do echo -n "$p:$(cat "/proc/$p/comm" 2> /dev/null) "; done)
  [ -z "$left" ] || fail "$KILL_DEADLINE s after kill -9 of rank 3 (pid $victim), host $ns still runs: $left"
done
[ -n "$dt_mpirun" ] || fail "mpirun still ran $KILL_DEADLINE s after kill -9 of rank 3"
[ "$rc" != 0 ] || fail "mpirun exited 0 after rank 3 was killed"
left=$(latest_step "$OUT")
[ "$left" -lt $FAIL_STEPS ] || fail "the run reached step $FAIL_STEPS before the kill landed (make it longer)"
[ ! -e "$OUT/adapter/adapter_model.safetensors" ] || fail "the killed run wrote a final adapter"
ok "kill -9 rank 3 (pid $victim, host $NSB) at step $step_at_kill: mpirun exited $rc after $dt_mpirun s, no process left on either host after $dt_all s (bound $KILL_DEADLINE s); latest checkpoint step $left"

t=$(date +%s.%N)
mpi_train "$W/failure-2.log" --model "$W/model" --data "$W/data.jsonl" --out "$OUT" "${FAILRUN[@]}" \
  || fail "the relaunch failed (exit $?)"
grep -q "resumed from .*(step $left," "$W/failure-2.log" || { grep -i resum "$W/failure-2.log"; fail "the relaunch did not say it resumed from step $left"; }
[ -f "$OUT/adapter/adapter_model.safetensors" ] || fail "the relaunch wrote no adapter"
[ "$(last_step "$OUT")" = $FAIL_STEPS ] || fail "the relaunch ended at step $(last_step "$OUT"), expected $FAIL_STEPS"
placed "$W/failure-2.log" "relaunch"
ok "the same command relaunched resumed from step $left and completed step $FAIL_STEPS in $(since "$t") s"

# ---- 3. the same through the launcher (it passes no mpirun options: the MCA settings go in the
# environment, which mpirun reads and forwards to the remote daemons) ----
if [ -x "$LAUNCHER" ]; then
  read -r rx0 tx0 < <(link_bytes)
  timeout -k 5 $RUN_TIMEOUT "${ON_A[@]}" env OMPI_MCA_plm_rsh_agent="$AGENT" OMPI_MCA_btl=vader,tcp,self \
    OMPI_MCA_oob_tcp_if_include=$NET OMPI_MCA_btl_tcp_if_include=$NET \
    "$LAUNCHER" --hosts $IPA:2,$IPB:2 --threads 1 --bin "$SL" -- \
    train --model "$W/model" --data "$W/data.jsonl" --out "$W/launcher" --seq-len 64 --global-batch 4 \
    --steps 3 --peak-gflops 1 > "$W/launcher.log" 2>&1 || fail "the launcher's 2-host run failed (exit $?)"
  read -r rx1 tx1 < <(link_bytes)
  placed "$W/launcher.log" "launcher run"
  grep -q '"tp": 2,' "$W/launcher/summary-rank0.json" && grep -q '"dp": 2,' "$W/launcher/summary-rank0.json" \
    || fail "the launcher's run was not tp 2 x dp 2 (tp = ranks per node)"
  grep -q '^shardlora-run:   ranks/node    2   (K from --hosts slots)$' "$W/launcher.log" \
    || fail "the launcher did not take 2 ranks per node from the hosts' slots"
  grep -q '^shardlora-run:   node-facts    queried on each of the 2 nodes (mpirun' "$W/launcher.log" \
    && grep -Eq "^shardlora-run:   cpus/node .*\((on each node, |the smallest node's, ($NSA|$NSB); )queried\)$" "$W/launcher.log" \
    || fail "the launcher did not query the CPU facts on the two hosts"
  [ $((rx1 - rx0 + tx1 - tx0)) -gt 0 ] || fail "the launcher's run sent nothing across the link"
  ok "launch/shardlora-run --hosts $IPA:2,$IPB:2 (K 2 from the slots, node facts queried on both hosts): tp 2 x dp 2, ranks 0-1 on $NSA, 2-3 on $NSB, link RX $((rx1 - rx0)) TX $((tx1 - tx0)) bytes"
else
  fail "$LAUNCHER is missing or not executable"
fi

# ---- 4. pipeline stages across the hosts, against the formula, tp across the hosts, 1 rank ----
[ -n "$ADAM_TOL" ] && [ -n "$ADAM_NORM_TOL" ] || fail "cannot read ADAM_TOL / ADAM_NORM_TOL from tests/mpi/common.sh"
declare -A PPRUN
for lay in pp tpx; do
  for s in $SHORT_STEPS $LONG_STEPS; do
    opts=(--tp 2 --pp 2); [ $lay = tpx ] && opts=(--tp 4)
    read -r rx0 tx0 < <(link_bytes)
    t=$(date +%s.%N)
    mpi_train "$W/$lay-$s.log" --model "$W/model" --data "$W/data.jsonl" --out "$W/$lay-$s" \
      "${opts[@]}" "${TRAFFIC_COMMON[@]}" --steps "$s" || fail "the $lay $s-step run failed (exit $?)"
    read -r rx1 tx1 < <(link_bytes)
    placed "$W/$lay-$s.log" "$lay $s-step run"
    PPRUN[$lay-$s]="$s:$((rx1 - rx0)):$((tx1 - tx0)):$W/$lay-$s"
    ok "$lay (${opts[*]}) $s steps across the hosts in $(since "$t") s: the link carried RX $((rx1 - rx0)) TX $((tx1 - tx0)) bytes"
  done
done
grep -q "pipeline: 2 stages of layers \[0, 1) \[1, 2)" "$W/pp-$LONG_STEPS.log" ||
  fail "the pp run did not split the $LAYERS layers into 2 stages"
"$PY" - "$W/pp-$LONG_STEPS" "$NSA" "$NSB" <<'PY' || fail "the pp run's stages are not one per host"
import json, sys
for r in range(4):
    s = json.load(open(f"{sys.argv[1]}/summary-rank{r}.json"))
    want = (2, 2, 1, r // 2)
    got = (s["tp"], s["pp"], s["dp"], s["pp_rank"])
    assert got == want, f"rank {r}: (tp, pp, dp, stage) {got}, expected {want}"
print(f"ok: ranks 0-1 (host {sys.argv[2]}) are stage 0, ranks 2-3 (host {sys.argv[3]}) stage 1, tp 2 each")
PY
"$PY" "$MN_DIR/pp_figures.py" --pp-short "${PPRUN[pp-$SHORT_STEPS]}" --pp-long "${PPRUN[pp-$LONG_STEPS]}" \
  --tpx-short "${PPRUN[tpx-$SHORT_STEPS]}" --tpx-long "${PPRUN[tpx-$LONG_STEPS]}" \
  --micro-batches $PP_MICRO --tokens $PP_TOKENS --hidden $HIDDEN --host-ranks 0,1 \
  --max-over $PP_MAX_OVER --max-fraction $PP_MAX_FRACTION || fail "the pipeline's link bytes are out of bounds"
"$SL" make-model --out "$W/mpim" --layers 2 --seed 3 --hidden 64 --ffn 128 --heads 4 --kv-heads 2 \
  --vocab 301 --tie --qkv-bias > "$W/make-mpim.log" 2>&1 || fail "make-model (the mpi tests' model) failed"
"$PY" "$MN_DIR/../reference/make_data.py" --seed 5 --rows 7 --len 8 28 --vocab 301 --mask odd:1:5 \
  --zero-and-split > "$W/mpi-data.jsonl" || fail "cannot make the mpi tests' data"
mpi_train "$W/pp-check.log" --model "$W/mpim" --data "$W/mpi-data.jsonl" --out "$W/pp-check" --tp 2 --pp 2 \
  "${PPCHECK[@]}" || fail "the pp run with the mpi tests' settings failed (exit $?)"
placed "$W/pp-check.log" "pp check run"
timeout -k 5 $RUN_TIMEOUT "$SL" train --model "$W/mpim" --data "$W/mpi-data.jsonl" --out "$W/pp-ref" \
  "${PPCHECK[@]}" > "$W/pp-ref.log" 2>&1 || fail "the 1-rank run failed (exit $?)"
"$PY" "$MN_DIR/../mpi/mpi_check.py" adapters --steps $PP_STEPS --tol "$ADAM_TOL" --norm-rel-tol "$ADAM_NORM_TOL" \
  "$W/pp-ref" "$W/pp-check" || fail "the pp run's adapter differs from 1 rank's"
ok "tp 2 x pp 2 across the hosts: adapter after $PP_STEPS AdamW steps equals 1 rank's (rel $ADAM_TOL per element, $ADAM_NORM_TOL per tensor; per-step loss and grad norm rel 1e-5)"

# the launcher's default pp: told a node has 0.0549 GiB (--mem-per-node), 2 ranks may use
# 29.47 MB each; shardlora plan's estimate at tp 2 is 29.57 MB (pp 1) and 29.39 MB (pp 2: its
# stage 0 keeps the saves of 2 micro-batches in flight; the MFU probe's 28.3 MB dominates this
# small model): pp = 2 nodes
timeout -k 5 $RUN_TIMEOUT "${ON_A[@]}" env OMPI_MCA_plm_rsh_agent="$AGENT" OMPI_MCA_btl=vader,tcp,self \
  OMPI_MCA_oob_tcp_if_include=$NET OMPI_MCA_btl_tcp_if_include=$NET \
  "$LAUNCHER" --hosts $IPA:2,$IPB:2 --threads 1 --mem-per-node 0.0549 --bin "$SL" -- \
  train --model "$W/model" --data "$W/data.jsonl" --out "$W/launcher-pp" --seq-len 64 --global-batch 4 \
  --steps 2 --peak-gflops 1 > "$W/launcher-pp.log" 2>&1 || fail "the launcher's pp run failed (exit $?)"
placed "$W/launcher-pp.log" "launcher pp run"
grep -q '^shardlora-run:   pp            2   (the model does not fit one node: pp = 2 nodes; inserted --pp 2)$' \
  "$W/launcher-pp.log" || fail "the launcher did not choose pp 2 from the estimate"
grep -q "pipeline: 2 stages" "$W/launcher-pp.log" && grep -q '"pp": 2,' "$W/launcher-pp/summary-rank0.json" \
  || fail "the launcher's pp run did not run 2 stages"
grep -q "which does not fit either" "$W/launcher-pp.log" && fail "the launcher says pp 2 does not fit 0.0549 GiB"
ok "launch/shardlora-run --mem-per-node 0.0549: $(sed -n 's/^shardlora-run:   memory  *//p' "$W/launcher-pp.log" | sed 's/   (shardlora plan)$//'); chose pp 2, stages one per host"
finish
