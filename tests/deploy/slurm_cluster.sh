#!/usr/bin/env bash
# A private single-node Slurm cluster for the tests, everything under one folder:
#   slurm_cluster.sh start DIR [--cpu-only]   munged (as the munge user), slurmctld and slurmd
#                                on loopback ports; prints the SLURM_CONF to export
#   slurm_cluster.sh stop DIR    stops them by their pid files (bounded wait, then SIGKILL)
# The node has two fake GPUs (character devices made with mknod) so jobs can ask --gres=gpu:1;
# with --cpu-only it has none and knows no GPU resource at all, as a CPU cluster.
set -euo pipefail
cmd=${1:?start or stop}
dir=$(realpath -m "${2:?folder}")
cpu_only=${3:-}

free_port() {
  /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_for() {  # seconds, description, command...
  local limit=$1 what=$2; shift 2
  for _ in $(seq $((limit * 10))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "slurm_cluster: $what did not come up within ${limit}s" >&2
  return 1
}

start_munge() {
  mkdir -p "$dir/munge"
  dd if=/dev/urandom of="$dir/munge/munge.key" bs=1024 count=1 status=none
  chown -R munge: "$dir/munge"
  chmod 700 "$dir/munge" && chmod 400 "$dir/munge/munge.key"
  runuser -u munge -- /usr/sbin/munged --force --socket="$dir/munge/munge.socket" \
    --key-file="$dir/munge/munge.key" --pid-file="$dir/munge/munged.pid" \
    --log-file="$dir/munge/munged.log" --seed-file="$dir/munge/munged.seed"
  wait_for 10 munged test -S "$dir/munge/munge.socket"
}

write_conf() {
  local node cpus mem
  node=$(hostname -s)
  cpus=$(nproc)
  mem=$(($(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 / 2))
  mkdir -p "$dir/state" "$dir/spool" "$dir/log" "$dir/gpu"
  local gres_types="GresTypes=gpu" node_gres="Gres=gpu:2"
  if [ "$cpu_only" = --cpu-only ]; then
    gres_types="" node_gres=""
  else
    for i in 0 1; do [ -c "$dir/gpu/nvidia$i" ] || mknod "$dir/gpu/nvidia$i" c 195 "$i"; done
    printf 'AutoDetect=off\nName=gpu File=%s/gpu/nvidia[0-1]\n' "$dir" >"$dir/gres.conf"
  fi
  cat >"$dir/slurm.conf" <<CONF
ClusterName=indimtest
SlurmctldHost=$node(127.0.0.1)
SlurmctldPort=$(free_port)
SlurmdPort=$(free_port)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$dir/munge/munge.socket
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
$gres_types
MinJobAge=600
NodeName=$node NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem $node_gres State=UNKNOWN
PartitionName=debug Nodes=$node Default=YES MaxTime=INFINITE State=UP
CONF
}

stop_pid() {  # pid file
  [ -f "$1" ] || return 0
  local pid
  pid=$(cat "$1")
  kill "$pid" 2>/dev/null || return 0
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
}

case "$cmd" in
  start)
    mkdir -p "$dir"
    chmod 755 "$dir"
    start_munge
    write_conf
    export SLURM_CONF="$dir/slurm.conf"
    slurmctld -f "$SLURM_CONF"
    wait_for 20 slurmctld scontrol ping
    slurmd -f "$SLURM_CONF"
    wait_for 30 "the node" sh -c "sinfo -h -o %T | grep -qx idle"
    echo "$SLURM_CONF"
    ;;
  stop)
    stop_pid "$dir/slurmd.pid"
    stop_pid "$dir/slurmctld.pid"
    stop_pid "$dir/munge/munged.pid"
    ;;
  *) echo "usage: $0 start|stop DIR" >&2; exit 1 ;;
esac
