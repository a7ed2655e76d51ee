# A real single-node Slurm on this machine, for the slurm-label tests (sourced; needs root).
# Follows ../shared/SLURM-LOCAL.md: munged as the munge user, slurmctld and slurmd in the
# foreground under setsid, each stopped by the pid this shell got when it started it.
#   slurm_install            apt-get the packages if missing
#   slurm_start DIR          slurm.conf + state/log dirs in DIR, daemons up, node idle
#   slurm_stop               TERM every daemon this shell started, by pid; wait; KILL stragglers
#   slurm_logs               print the daemons' logs (on failure)
#   job_field ID KEY         one field of `scontrol show job -o ID`
#   job_wait ID TIMEOUT_S [PRED]  poll every 0.2 s until the job ends (or PRED succeeds)
# The caller defines fail() (print, exit 1) and installs `trap slurm_stop EXIT`.

SLURM_PACKAGES=(slurm-wlm slurm-wlm-basic-plugins munge)
SLURM_DAEMON_PIDS=()   # slurmctld, slurmd: started here, stopped by pid
SLURM_MUNGED_OURS=0    # 1 when munged was started here (an already running one is left alone)

# slurm_install [EXTRA_PACKAGES...]: installs whatever of the packages is missing
slurm_install() {
  local p missing=()
  for p in "${SLURM_PACKAGES[@]}" "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  [ "$(id -u)" = 0 ] || fail "missing packages ${missing[*]} and not root"
  echo "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq --no-install-recommends "${missing[@]}" > /dev/null 2>&1 || {
    apt-get update -qq > /dev/null 2>&1
    apt-get install -y -qq --no-install-recommends "${missing[@]}" > /dev/null
  } || fail "apt-get install ${missing[*]} failed"
}

# slurm_conf DIR HOST: the minimal configuration of SLURM-LOCAL.md, CPUs = this machine's,
# with three changes: TaskPlugin=task/affinity (binds tasks with sched_setaffinity, no
# cgroups needed; under task/none srun cannot bind, and OMP_PROC_BIND=close from the launcher
# then pins every rank to CPU 0); cred_expire=5 (a requeued job waits cred_expire + 1 s
# before it may start again: 121 s by default); sched_interval=1,bf_interval=1 (else the
# requeued job waits for the next backfill pass, up to 30 s).
slurm_conf() {
  local d="$1" h="$2" cpus
  cpus=$(nproc --all)
  cat > "$d/slurm.conf" <<EOF
ClusterName=ci
SlurmctldHost=$h(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=$d/state/ctld
SlurmdSpoolDir=$d/state/d
SlurmctldPidFile=$d/run/slurmctld.pid
SlurmdPidFile=$d/run/slurmd.pid
SlurmctldLogFile=$d/log/slurmctld.log
SlurmdLogFile=$d/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/affinity
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=pmix
MailProg=/bin/true
ReturnToService=2
AuthInfo=cred_expire=5
SchedulerParameters=sched_interval=1,bf_interval=1
NodeName=$h NodeAddr=127.0.0.1 CPUs=$cpus Sockets=1 CoresPerSocket=$cpus ThreadsPerCore=1 RealMemory=1000 State=UNKNOWN
PartitionName=debug Nodes=$h Default=YES MaxTime=INFINITE State=UP
EOF
}

slurm_munge_start() {
  if munge -n 2>/dev/null | unmunge > /dev/null 2>&1; then
    echo "munged already running: used, left alone"
    return 0
  fi
  if [ ! -s /etc/munge/munge.key ]; then
    mungekey --create > /dev/null || fail "mungekey --create failed"
    chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
  fi
  install -d -o munge -g munge -m 755 /run/munge
  runuser -u munge -- /usr/sbin/munged --pid-file=/run/munge/munged.pid \
    || fail "munged did not start"
  SLURM_MUNGED_OURS=1
  local i
  for i in $(seq 50); do
    munge -n 2>/dev/null | unmunge > /dev/null 2>&1 && return 0
    sleep 0.1
  done
  fail "munge -n | unmunge fails after munged started"
}

# slurm_start DIR: daemons up with DIR/slurm.conf; exports SLURM_CONF; waits for `idle`
slurm_start() {
  local d="$1" h i st
  h=$(hostname -s)
  rm -rf "$d"
  mkdir -p "$d/state/ctld" "$d/state/d" "$d/run" "$d/log"
  slurm_conf "$d" "$h"
  export SLURM_CONF="$d/slurm.conf"
  SLURM_LOG_DIR="$d/log"
  slurm_munge_start
  setsid slurmctld -D -f "$SLURM_CONF" > "$d/log/slurmctld.stdout" 2>&1 &
  SLURM_DAEMON_PIDS+=($!)
  setsid slurmd -D -f "$SLURM_CONF" > "$d/log/slurmd.stdout" 2>&1 &
  SLURM_DAEMON_PIDS+=($!)
  for i in $(seq 300); do
    st=$(sinfo -h -N -o %T 2>/dev/null || true)
    [ "$st" = idle ] && return 0
    for p in "${SLURM_DAEMON_PIDS[@]}"; do
      kill -0 "$p" 2>/dev/null || { slurm_logs; fail "a Slurm daemon (pid $p) exited at start-up"; }
    done
    sleep 0.1
  done
  slurm_logs
  fail "the node is not idle 30 s after the daemons started (sinfo: '${st:-nothing}')"
}

# slurm_stop: every daemon started here, by pid (TERM, up to 10 s, then KILL); then munged
slurm_stop() {
  local p i alive
  for p in "${SLURM_DAEMON_PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for i in $(seq 100); do
    alive=0
    for p in "${SLURM_DAEMON_PIDS[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ $alive = 0 ] && break
    sleep 0.1
  done
  for p in "${SLURM_DAEMON_PIDS[@]}"; do
    if kill -0 "$p" 2>/dev/null; then
      echo "slurm daemon pid $p ignored TERM for 10 s: KILL"
      kill -KILL "$p" 2>/dev/null || true
    fi
    wait "$p" 2>/dev/null || true
  done
  SLURM_DAEMON_PIDS=()
  if [ "$SLURM_MUNGED_OURS" = 1 ] && [ -s /run/munge/munged.pid ]; then
    p=$(cat /run/munge/munged.pid)
    kill -TERM "$p" 2>/dev/null || true
    for i in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    SLURM_MUNGED_OURS=0
  fi
}

slurm_logs() {
  local f
  for f in "$SLURM_LOG_DIR"/*; do
    [ -f "$f" ] || continue
    echo "===== $f (last 60 lines)"
    tail -n 60 "$f"
  done
}

# job_field ID KEY: the value of KEY= in `scontrol show job -o ID` (empty if unknown)
job_field() {
  scontrol show job -o "$1" 2>/dev/null | tr ' ' '\n' | sed -n "s/^$2=//p" | head -n 1
}

# job_wait ID TIMEOUT_S [PRED...]: polls every 0.2 s until JobState is a final state (sets
# JOB_STATE, JOB_EXIT) or, when PRED is given, until the command PRED succeeds (failing at once
# if the job ends first); fails on timeout
job_wait() {
  local id="$1" tmo="$2" t0=$SECONDS
  shift 2
  while :; do
    JOB_STATE=$(job_field "$id" JobState)
    JOB_EXIT=$(job_field "$id" ExitCode)
    if [ $# -gt 0 ]; then
      "$@" && return 0
      case "$JOB_STATE" in # ended before PRED held: waiting longer cannot help
        COMPLETED|FAILED|CANCELLED|TIMEOUT|NODE_FAIL|OUT_OF_MEMORY|PREEMPTED|BOOT_FAIL|DEADLINE)
          fail "job $id: $JOB_STATE ($JOB_EXIT) before ${*}" ;;
      esac
    else
      case "$JOB_STATE" in
        COMPLETED|FAILED|CANCELLED|TIMEOUT|NODE_FAIL|OUT_OF_MEMORY|PREEMPTED|BOOT_FAIL|DEADLINE) return 0 ;;
      esac
    fi
    [ $((SECONDS - t0)) -lt "$tmo" ] || fail "job $id: still $JOB_STATE after $tmo s (waiting for ${*:-its end})"
    sleep 0.2
  done
}
