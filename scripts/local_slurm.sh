#!/usr/bin/env bash
# A one-node SLURM cluster on this machine, for trying `hydra/launcher=slurm` (and for the tests) without
# a real cluster. Debian/Ubuntu, as root.
#
#   sudo scripts/local_slurm.sh up       # install slurmctld slurmd slurm-client munge if missing, start
#   scripts/local_slurm.sh status        # daemons and sinfo (exit status 0 only when jobs can run)
#   sudo scripts/local_slurm.sh down     # stop the daemons this script started
#
# `up` and `down` are idempotent. Everything lives in LOCAL_SLURM_DIR (default /var/lib/local-slurm):
# its own munge key and munged (on a socket of its own, so a system munged is left alone), slurm.conf
# (this host's name, CPU count and memory as `slurmd -C` reports them; one partition, LOCAL_SLURM_PARTITION,
# default `debug`), the controller's state, the daemons' spool, pid and log files. The only file outside
# it is the symlink /etc/slurm/slurm.conf -> LOCAL_SLURM_DIR/slurm.conf that lets sbatch, squeue and
# scancel find the cluster; it is made only where no slurm.conf exists, and `down` removes it only if it
# is still that symlink. Accounting is off (no slurmdbd), so `sacct` answers "accounting storage is
# disabled"; the repository's launcher (hydra_plugins/slurm_queue_launcher/) follows jobs with squeue instead.
#
# A CPU-only partition has no GPUs, so submit with SLURM_GPUS_PER_NODE=0, e.g.
#   SLURM_PARTITION=debug SLURM_GPUS_PER_NODE=0 python representation_dynamics_terminal.py -m \
#       +experiment=fig1 hydra/launcher=slurm hydra.launcher.cpus_per_task=1 hydra.launcher.mem_gb=2
#
# A bash script; `sh scripts/local_slurm.sh ...` works too: under another shell (dash) the lines below,
# plain POSIX sh, run it again with bash before any bash syntax is read.
if [ -z "${BASH_VERSION:-}" ]; then
    if ! command -v bash > /dev/null 2>&1; then
        echo "local_slurm: this script needs bash, which is not on PATH" >&2
        exit 2
    fi
    exec bash "$0" "$@"
fi
set -euo pipefail

STATE=${LOCAL_SLURM_DIR:-/var/lib/local-slurm}
PARTITION=${LOCAL_SLURM_PARTITION:-debug}
CONF=$STATE/slurm.conf
SYSTEM_CONF=/etc/slurm/slurm.conf
MARKER=$STATE/.made-by-local_slurm.sh
PACKAGES="slurmctld slurmd slurm-client munge"

say() { printf 'local_slurm: %s\n' "$*"; }
die() { printf 'local_slurm: %s\n' "$*" >&2; exit 1; }

need_root() { [ "$(id -u)" = 0 ] || die "$1 needs root (try: sudo $0 $1)"; }

# pid from a pid file if that process is alive and is the named program, else nothing.
live_pid() {  # live_pid PIDFILE PROGRAM
    local pid
    [ -s "$1" ] || return 0
    pid=$(tr -dc 0-9 < "$1")
    [ -n "$pid" ] && [ -r "/proc/$pid/comm" ] && [ "$(cat "/proc/$pid/comm")" = "$2" ] && echo "$pid"
    return 0
}

slurm_client() { SLURM_CONF=$CONF "$@"; }

install_packages() {
    local missing=""
    for program in slurmctld slurmd sbatch munged; do
        command -v "$program" > /dev/null 2>&1 || missing=yes
    done
    [ -z "$missing" ] && return 0
    command -v apt-get > /dev/null 2>&1 || die "slurm is not installed and there is no apt-get to install it"
    say "installing $PACKAGES"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq --no-install-recommends $PACKAGES > /dev/null 2>&1 \
        || { apt-get update -qq && apt-get install -y -qq --no-install-recommends $PACKAGES > /dev/null; } \
        || die "apt-get install $PACKAGES failed"
}

make_state() {
    if [ -e "$STATE" ] && [ ! -e "$MARKER" ]; then
        die "$STATE exists and was not made by this script; set LOCAL_SLURM_DIR to another folder"
    fi
    mkdir -p "$STATE"
    touch "$MARKER"
    chmod 755 "$STATE"
    mkdir -p "$STATE/munge" "$STATE/ctld" "$STATE/spool" "$STATE/log" "$STATE/run"
    chmod 700 "$STATE/munge" "$STATE/ctld"
    if [ ! -s "$STATE/munge.key" ]; then
        (umask 077; dd if=/dev/urandom of="$STATE/munge.key" bs=1024 count=1 status=none)
    fi
    chmod 400 "$STATE/munge.key"
}

write_conf() {
    local node host
    node=$(slurmd -C | head -n 1)                  # NodeName=<host> CPUs=... RealMemory=...
    host=${node#NodeName=}
    host=${host%% *}
    cat > "$CONF.new" <<EOF
# Written by scripts/local_slurm.sh: a one-node cluster on $host for trying the SLURM launcher.
ClusterName=local
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$STATE/munge/munge.socket
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/spool
SlurmctldPidFile=$STATE/run/slurmctld.pid
SlurmdPidFile=$STATE/run/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
# scancel: SIGTERM, then SIGKILL after KillWait seconds
KillWait=5
$node NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=$PARTITION Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
    mv "$CONF.new" "$CONF"
}

link_conf() {
    if [ -L "$SYSTEM_CONF" ] && [ "$(readlink "$SYSTEM_CONF")" = "$CONF" ]; then
        return 0
    fi
    if [ -e "$SYSTEM_CONF" ] || [ -L "$SYSTEM_CONF" ]; then
        say "$SYSTEM_CONF exists and is not ours: left alone; use the cluster with SLURM_CONF=$CONF"
        return 0
    fi
    mkdir -p "$(dirname "$SYSTEM_CONF")"
    ln -s "$CONF" "$SYSTEM_CONF"
}

wait_until_idle() {
    local state=""
    for _ in $(seq 1 60); do
        state=$(slurm_client sinfo -h -p "$PARTITION" -o %T 2> /dev/null || true)
        case "$state" in
            idle*|mixed*|allocated*) return 0 ;;
            down*|drain*) slurm_client scontrol update nodename=ALL state=resume > /dev/null 2>&1 || true ;;
        esac
        sleep 0.5
    done
    die "the node did not become ready (sinfo: ${state:-no answer}); see $STATE/log/"
}

up() {
    need_root up
    install_packages
    make_state
    local started=""
    if [ -z "$(live_pid "$STATE/munge/munged.pid" munged)" ]; then
        munged --key-file="$STATE/munge.key" --socket="$STATE/munge/munge.socket" \
            --pid-file="$STATE/munge/munged.pid" --log-file="$STATE/log/munged.log" \
            --seed-file="$STATE/munge/munged.seed" --force \
            || die "munged did not start; see $STATE/log/munged.log"
        started="$started munged"
    fi
    local ctld slurmd_pid
    ctld=$(live_pid "$STATE/run/slurmctld.pid" slurmctld)
    slurmd_pid=$(live_pid "$STATE/run/slurmd.pid" slurmd)
    if [ -z "$ctld" ] && [ -z "$slurmd_pid" ]; then
        write_conf          # only while neither daemon runs, so a running cluster keeps its config
    fi
    link_conf
    if [ -z "$ctld" ]; then
        slurmctld -f "$CONF" || die "slurmctld did not start; see $STATE/log/slurmctld.log"
        started="$started slurmctld"
    fi
    if [ -z "$slurmd_pid" ]; then
        slurmd -f "$CONF" || die "slurmd did not start; see $STATE/log/slurmd.log"
        started="$started slurmd"
    fi
    wait_until_idle
    say "up (${started:+started$started; }partition $PARTITION; state in $STATE)"
}

down() {
    need_root down
    local pid stopped=""
    if [ ! -e "$MARKER" ]; then
        say "down (no cluster of this script in $STATE: nothing to stop)"
        return 0
    fi
    for daemon in slurmd:run/slurmd.pid slurmctld:run/slurmctld.pid munged:munge/munged.pid; do
        pid=$(live_pid "$STATE/${daemon#*:}" "${daemon%%:*}")
        [ -n "$pid" ] || continue
        kill "$pid"
        for _ in $(seq 1 100); do
            [ -d "/proc/$pid" ] || break
            sleep 0.1
        done
        [ -d "/proc/$pid" ] && kill -9 "$pid"
        stopped="$stopped ${daemon%%:*}"
    done
    if [ -L "$SYSTEM_CONF" ] && [ "$(readlink "$SYSTEM_CONF")" = "$CONF" ]; then
        rm "$SYSTEM_CONF"
    fi
    say "down (${stopped:+stopped$stopped; }state kept in $STATE)"
}

status() {
    local pid running=0
    for daemon in munged:munge/munged.pid slurmctld:run/slurmctld.pid slurmd:run/slurmd.pid; do
        pid=$(live_pid "$STATE/${daemon#*:}" "${daemon%%:*}")
        if [ -n "$pid" ]; then
            say "${daemon%%:*} running (pid $pid)"
            running=$((running + 1))
        else
            say "${daemon%%:*} not running"
        fi
    done
    [ "$running" = 3 ] || return 3
    slurm_client sinfo
    slurm_client sinfo -h -p "$PARTITION" -o %T | grep -Eq '^(idle|mixed|allocated)' || return 3
}

case "${1:-}" in
    up) up ;;
    down) down ;;
    status) status ;;
    *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
