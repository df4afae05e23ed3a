#!/usr/bin/env bash
# A single-node Slurm cluster on this machine, for trying `--executor slurm` without a
# cluster and for the tests: munged, slurmctld and slurmd on loopback, everything they
# write (configuration, key, state, spool, logs) inside DIR.
#
#   scripts/slurm-local.sh start DIR    # prints the line to export: SLURM_CONF=DIR/slurm.conf
#   scripts/slurm-local.sh status DIR
#   scripts/slurm-local.sh stop DIR
#
# Needs Debian's slurm-wlm and munge packages and root (the daemons run as root). The
# plugins chosen (proctrack/linuxproc, task/none, select/cons_tres) need no cgroups, so it
# runs in a container too.
set -euo pipefail

usage() {
    echo "usage: $0 start|stop|status DIR" >&2
    exit 2
}
[ $# -eq 2 ] || usage
action=$1
dir=$(mkdir -p "$2" && cd "$2" && pwd)
conf=$dir/slurm.conf
export SLURM_CONF=$conf

need() {
    command -v "$1" >/dev/null 2>&1 || {
        echo "$1 not found; install Debian's slurm-wlm and munge (apt-get install -y slurm-wlm munge)" >&2
        exit 1
    }
}

free_port() {
    # a port nothing listens on now; the kernel picks it
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

pid_of() {
    [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null && cat "$1"
}

write_conf() {
    local node cpus mem ctld_port d_port
    node=$(hostname -s)
    # slurmd's own reading of the CPUs and memory, so the node is never refused as having
    # less (nproc would follow OMP_NUM_THREADS)
    cpus=$(slurmd -C | sed -n 's/.*CPUs=\([0-9]*\).*/\1/p')
    mem=$(slurmd -C | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p')
    ctld_port=$(free_port)
    d_port=$(free_port)
    while [ "$d_port" = "$ctld_port" ]; do d_port=$(free_port); done
    mkdir -p "$dir/state" "$dir/spool" "$dir/log"
    cat >"$conf" <<EOF
ClusterName=icckd-local
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$d_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# cred_expire: a requeued job waits this long before it starts again (default 120 s)
AuthInfo=socket=$dir/munge/munge.socket,cred_expire=10
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
# look at the queue every 2 s rather than every 30-60 s: the tests wait on it
SchedulerParameters=bf_interval=2,sched_interval=2
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
JobRequeue=1
ReturnToService=2
MpiDefault=none
MailProg=/bin/true
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
KillWait=5
MinJobAge=300
NodeName=$node NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$node Default=YES MaxTime=INFINITE State=UP
EOF
}

start_munge() {
    mkdir -p "$dir/munge"
    chmod 700 "$dir/munge"
    # its own key: nothing of a munge already running on this machine is used or changed
    [ -s "$dir/munge/munge.key" ] || mungekey --create --keyfile "$dir/munge/munge.key" --bits 1024
    chmod 400 "$dir/munge/munge.key"
    munged --force --key-file "$dir/munge/munge.key" --socket "$dir/munge/munge.socket" \
        --pid-file "$dir/munge/munged.pid" --log-file "$dir/log/munged.log" \
        --seed-file "$dir/munge/munged.seed"
}

wait_idle() {
    for _ in $(seq 1 60); do
        if [ "$(sinfo -h -o %T 2>/dev/null)" = "idle" ]; then
            return 0
        fi
        sleep 1
    done
    echo "the node did not come up idle in 60 s; see $dir/log/slurmctld.log and slurmd.log" >&2
    stop
    exit 1
}

start() {
    need slurmctld
    need slurmd
    need munged
    if pid_of "$dir/slurmctld.pid" >/dev/null; then
        echo "already running in $dir (stop it first)" >&2
        exit 1
    fi
    write_conf
    start_munge
    slurmctld -i -f "$conf"  # -i: a fresh state on every start
    slurmd -f "$conf" -N "$(hostname -s)"
    wait_idle
    echo "export SLURM_CONF=$conf"
}

stop_pid() {
    local pid
    pid=$(pid_of "$1") || return 0
    kill "$pid"
    for _ in $(seq 1 50); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.2
    done
    kill -9 "$pid" 2>/dev/null || true
}

stop() {
    if pid_of "$dir/slurmctld.pid" >/dev/null; then
        # end the jobs first: a job step outlives the daemons otherwise
        squeue -h -o %i 2>/dev/null | xargs -r scancel 2>/dev/null || true
        for _ in $(seq 1 30); do
            [ -z "$(squeue -h 2>/dev/null)" ] && break
            sleep 0.5
        done
    fi
    stop_pid "$dir/slurmd.pid"
    stop_pid "$dir/slurmctld.pid"
    stop_pid "$dir/munge/munged.pid"
}

case $action in
start) start ;;
stop) stop ;;
status)
    if pid_of "$dir/slurmctld.pid" >/dev/null; then
        sinfo
    else
        echo "not running in $dir"
        exit 3
    fi
    ;;
*) usage ;;
esac
