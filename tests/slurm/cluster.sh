#!/bin/bash
# A one-node Slurm cluster on this machine, for lth's sweep tests and for trying
# `lth sweep run --executor slurm` without a lab cluster: Debian's slurm-wlm and munge,
# slurmctld and slurmd started as root with a minimal slurm.conf (one node with this machine's
# CPUs and memory, one partition `lth`), state, spool, logs and pids under one folder.
# Usage: bash tests/slurm/cluster.sh start|stop|status   [LTH_SLURM_DIR, default /tmp/lth-slurm]
# `start` installs the packages when they are missing (as root), does nothing when the cluster
# already answers, and prints the line to export: SLURM_CONF=<dir>/slurm.conf.
# `stop` ends the daemons it started (by the pids it recorded).
set -euo pipefail
dir=${LTH_SLURM_DIR:-/tmp/lth-slurm}
conf=$dir/slurm.conf
export SLURM_CONF=$conf

answers() {
  [ -f "$conf" ] && timeout 10 sinfo -h -o '%T' 2>/dev/null | grep -Eq '^(idle|mixed|allocated)'
}

start() {
  # One start at a time (tests may call it together).
  mkdir -p "$dir"
  # The daemons started below get the lock's descriptor closed (`9>&-`): they outlive this
  # script, and a descriptor they inherited would hold the lock for as long as they run.
  exec 9>"$dir.start-lock"
  flock -w 120 9 || { echo "error: another start of the Slurm test cluster held $dir.start-lock for 2 minutes" >&2; exit 1; }
  if answers; then
    echo "SLURM_CONF=$conf"
    return
  fi
  mkdir -p "$dir"
  if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
    if [ "$(id -u)" != 0 ]; then
      echo "error: slurm-wlm and munge are not installed and this is not root: apt-get install slurm-wlm munge" >&2
      exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q slurm-wlm munge >"$dir.apt.log" 2>&1 ||
      { apt-get update -q >>"$dir.apt.log" 2>&1 &&
        apt-get install -y -q slurm-wlm munge >>"$dir.apt.log" 2>&1; } ||
      { echo "error: apt-get install slurm-wlm munge failed (see $dir.apt.log)" >&2; exit 1; }
  fi
  mkdir -p "$dir/state" "$dir/spool" "$dir/munge"
  # munge: a key of our own, its socket where Slurm looks by default.
  # A live munged answers `munge -n` (a defunct one left by another start does not).
  if ! munge -n >/dev/null 2>&1; then
    mkdir -p /run/munge /etc/munge
    [ -s /etc/munge/munge.key ] || dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none
    chown -R munge:munge /etc/munge /run/munge 2>/dev/null || true
    chmod 0400 /etc/munge/munge.key
    rm -f /run/munge/munged.pid
    runuser -u munge -- /usr/sbin/munged 9>&-
    # The pid of the munged started here, from its own pid file (written once it runs).
    for _ in $(seq 50); do [ -s /run/munge/munged.pid ] && break; sleep 0.1; done
    cp /run/munge/munged.pid "$dir/munged.pid"
  fi
  local host cpus mem
  host=$(hostname -s)
  cpus=$(nproc)
  mem=$(awk '/MemTotal/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)
  cat >"$conf" <<CONF
ClusterName=lth
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
# Job credentials last 10 s, not 120: a requeued job waits that long before it may start
# again (the preemption test); starting it earlier fails it ("Job credential revoked").
AuthInfo=cred_expire=10
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
MpiDefault=none
ReturnToService=2
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
SchedulerParameters=sched_interval=1
DefMemPerCPU=$((mem / cpus))
NodeName=$host CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=lth Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
  /usr/sbin/slurmctld -f "$conf" 9>&-
  /usr/sbin/slurmd -f "$conf" 9>&-
  for _ in $(seq 60); do
    if answers; then
      echo "SLURM_CONF=$conf"
      return
    fi
    sleep 0.5
  done
  echo "error: the Slurm node did not come up within 30 s (see $dir/slurmctld.log, $dir/slurmd.log)" >&2
  exit 1
}

stop() {
  for name in slurmd slurmctld munged; do
    if [ -f "$dir/$name.pid" ]; then
      kill "$(cat "$dir/$name.pid")" 2>/dev/null || true
      rm -f "$dir/$name.pid"
    fi
  done
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) answers && sinfo || { echo "not running"; exit 1; } ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
