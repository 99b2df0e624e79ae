#!/usr/bin/env bash
# A real single-node SLURM cluster on this machine, from Debian's packages, for tests, CI and
# trying pipelines offline. Everything lives in one private directory; daemons are stopped by
# the PIDs in their pid files.
#
#   scripts/local-slurm.sh start [--gpus N] [--cpus N]   install if needed, (re)start, wait idle
#   scripts/local-slurm.sh stop
#   scripts/local-slurm.sh status
#   scripts/local-slurm.sh env          print `export SLURM_CONF=...` for eval
#
#   NERSCHAT_SLURM_DIR  where config, state and logs go (default ~/.cache/nerschat/slurm)
#
# GPUs are fake: character devices declared as gres, so `--gpus-per-node=1` jobs get
# CUDA_VISIBLE_DEVICES=0, 1, ... exactly as on a GPU cluster. CPUs are declared (default 8,
# more than this machine has) so pilots and client jobs can share a small node.
set -euo pipefail

dir="${NERSCHAT_SLURM_DIR:-$HOME/.cache/nerschat/slurm}"
conf="$dir/etc/slurm.conf"
gpus=4
cpus=8

need_packages() {
    if command -v slurmctld >/dev/null && command -v slurmd >/dev/null \
        && command -v sbatch >/dev/null && command -v munged >/dev/null; then
        return
    fi
    echo "installing Debian packages: slurmctld slurmd slurm-client munge" >&2
    if [[ $(id -u) -ne 0 ]]; then
        echo "error: SLURM packages missing and not root: apt-get install slurmctld slurmd slurm-client munge" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends slurmctld slurmd slurm-client munge >/dev/null
}

alive() { [[ -f "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

stop_daemon() {
    local pidfile="$1" pid
    if alive "$pidfile"; then
        pid=$(cat "$pidfile")
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$pidfile"
}

cmd_stop() {
    stop_daemon "$dir/run/slurmd.pid"
    stop_daemon "$dir/run/slurmctld.pid"
    stop_daemon "$dir/run/munged.pid"
    echo "local SLURM stopped"
}

write_config() {
    local host mem
    host=$(hostname -s)
    mem=$(awk '/MemTotal/ {printf "%d", $2 / 1024 * 0.9}' /proc/meminfo)
    mkdir -p "$dir"/{etc,state,spool,run,log,dev,munge-key,munge-run}
    chmod 0700 "$dir/munge-key"
    chmod 0755 "$dir/munge-run" "$dir"
    local gres_line="" gres_types=""
    if (( gpus > 0 )); then
        gres_line="Gres=gpu:$gpus"
        gres_types="GresTypes=gpu"
    fi
    cat > "$conf.new" <<CONF
# Written by scripts/local-slurm.sh: a one-node test cluster.
ClusterName=nerschat-local
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$dir/munge-run/munge.socket
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerParameters=batch_sched_delay=0
SlurmdParameters=config_overrides
MpiDefault=none
ReturnToService=2
MailProg=/bin/true
SlurmctldPort=${NERSCHAT_SLURMCTLD_PORT:-6817}
SlurmdPort=${NERSCHAT_SLURMD_PORT:-6818}
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/run/slurmctld.pid
SlurmdPidFile=$dir/run/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
InactiveLimit=0
KillWait=5
MinJobAge=30
$gres_types
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem $gres_line State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
    : > "$dir/etc/gres.conf.new"
    if (( gpus > 0 )); then
        echo "AutoDetect=off" > "$dir/etc/gres.conf.new"
        for ((i = 0; i < gpus; i++)); do
            [[ -c "$dir/dev/nvidia$i" ]] || mknod "$dir/dev/nvidia$i" c 195 "$i"
            echo "Name=gpu File=$dir/dev/nvidia$i" >> "$dir/etc/gres.conf.new"
        done
    fi
}

wait_idle() {
    local state=""
    for _ in $(seq 150); do
        state=$(SLURM_CONF="$conf" sinfo -h -o %T 2>/dev/null | head -1 || true)
        case "$state" in
            idle|mixed|allocated) return 0 ;;
            down*|drain*) SLURM_CONF="$conf" scontrol update nodename="$(hostname -s)" state=resume 2>/dev/null || true ;;
        esac
        sleep 0.2
    done
    echo "error: node not idle after 30 s (state: ${state:-unknown}); see $dir/log/" >&2
    exit 1
}

cmd_start() {
    need_packages
    write_config
    if alive "$dir/run/slurmctld.pid" && alive "$dir/run/slurmd.pid" \
        && cmp -s "$conf" "$conf.new" && cmp -s "$dir/etc/gres.conf" "$dir/etc/gres.conf.new"; then
        rm -f "$conf.new" "$dir/etc/gres.conf.new"
        wait_idle
        echo "local SLURM already running ($gpus fake GPUs); export SLURM_CONF=$conf"
        return
    fi
    cmd_stop >/dev/null
    mv "$conf.new" "$conf"
    mv "$dir/etc/gres.conf.new" "$dir/etc/gres.conf"
    # A state directory from another configuration makes slurmctld refuse to start.
    rm -rf "$dir/state"/* "$dir/spool"/*
    if [[ ! -s "$dir/munge-key/munge.key" ]]; then
        dd if=/dev/urandom of="$dir/munge-key/munge.key" bs=1024 count=1 status=none
        chmod 0400 "$dir/munge-key/munge.key"
    fi
    munged --force --key-file="$dir/munge-key/munge.key" --socket="$dir/munge-run/munge.socket" \
        --pid-file="$dir/run/munged.pid" --log-file="$dir/log/munged.log" \
        --seed-file="$dir/munge-key/munge.seed"
    export SLURM_CONF="$conf"
    slurmctld -c -f "$conf"
    slurmd -f "$conf"
    wait_idle
    echo "local SLURM started ($gpus fake GPUs, $cpus CPUs); export SLURM_CONF=$conf"
}

cmd_status() {
    if alive "$dir/run/slurmctld.pid" && alive "$dir/run/slurmd.pid"; then
        SLURM_CONF="$conf" sinfo
        SLURM_CONF="$conf" squeue
    else
        echo "local SLURM not running"
        exit 3
    fi
}

action="${1:-status}"
shift || true
while [[ $# -gt 0 ]]; do
    case "$1" in
        --gpus) gpus="$2"; shift 2 ;;
        --cpus) cpus="$2"; shift 2 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done
case "$action" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    env) echo "export SLURM_CONF=$conf" ;;
    *) echo "usage: $0 start|stop|status|env [--gpus N] [--cpus N]" >&2; exit 2 ;;
esac
