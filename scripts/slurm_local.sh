#!/usr/bin/env bash
# A one-node SLURM cluster on this machine, for the SLURM tests (tests/test_slurm.py) and for trying
# `hydra/launcher=slurm` by hand.
#   scripts/slurm_local.sh start    install slurm-wlm + munge if missing (apt-get, root), write a config
#                                   sized from nproc and free memory, start munged, slurmctld, slurmd and
#                                   wait until sinfo shows the node idle (bounded)
#   scripts/slurm_local.sh stop     stop the daemons this script started (by their pid files)
#   scripts/slurm_local.sh status   exit 0 when the node answers and is usable
# Idempotent: start on a running cluster only checks it; stop on a stopped one does nothing.
# Exit codes: 0 ok, 3 cannot run here (not root / no apt-get / install failed / foreign slurm.conf),
# 1 the daemons did not come up (their logs are named).
set -euo pipefail

STATE=${WARMUP_LAB_SLURM_STATE:-/var/lib/warmup-lab-slurm}
CONF=/etc/slurm/slurm.conf
MARK="# written by warmup-lab scripts/slurm_local.sh"
WAIT_S=${WARMUP_LAB_SLURM_WAIT_S:-90}

cannot() { echo "slurm_local: cannot run: $*" >&2; exit 3; }
fail() { echo "slurm_local: $*" >&2; exit 1; }

need_root() {
    [[ $(id -u) -eq 0 ]] || cannot "needs root (installs packages, writes $CONF, starts daemons); run as root, e.g. sudo $0 $1"
}

install() {
    command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null \
        && command -v sbatch >/dev/null && return 0
    command -v apt-get >/dev/null || cannot "slurm-wlm and munge are not installed and there is no apt-get to install them"
    echo "slurm_local: installing slurm-wlm and munge with apt-get" >&2
    export DEBIAN_FRONTEND=noninteractive
    # Debian's maintainer scripts try to start the services; in a container there is no init for that.
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
    local ok=0
    { apt-get update -q && apt-get install -y -q --no-install-recommends slurm-wlm munge; } >"$STATE/apt.log" 2>&1 || ok=$?
    rm -f /usr/sbin/policy-rc.d
    [[ $ok -eq 0 ]] || cannot "apt-get install slurm-wlm munge failed (exit $ok); see $STATE/apt.log"
}

write_config() {
    if [[ -f $CONF ]] && ! grep -qF "$MARK" "$CONF"; then
        cannot "$CONF exists and was not written by this script; refusing to replace a real cluster's config"
    fi
    local host cpus mem_mb
    host=$(hostname -s)
    cpus=$(nproc)
    mem_mb=$(awk '/MemAvailable/ {printf "%d", $2 / 1024 * 0.8}' /proc/meminfo)  # 80% of what is free now
    mkdir -p /etc/slurm "$STATE/ctld" "$STATE/d" "$STATE/log"
    cat >"$CONF" <<EOF
$MARK: one node, $cpus CPUs, $mem_mb MB
ClusterName=warmuplab
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=cred_expire=5
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
SlurmdParameters=config_overrides
ReturnToService=2
MpiDefault=none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
JobRequeue=1
MinJobAge=600
KillWait=10
SchedulerParameters=sched_interval=2
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/d
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
}

alive() { [[ -f $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

start_munge() {
    alive "$STATE/munged.pid" && return 0
    [[ -f /etc/munge/munge.key ]] || { mungekey --create 2>/dev/null || create-munge-key -f; }
    mkdir -p /run/munge /var/log/munge /var/lib/munge
    chown munge:munge /etc/munge/munge.key /run/munge /var/log/munge /var/lib/munge
    chmod 0400 /etc/munge/munge.key
    runuser -u munge -- munged --pid-file=/run/munge/munged.pid
    local end=$((SECONDS + 20))
    until [[ -f /run/munge/munged.pid ]] && munge -n </dev/null | unmunge >/dev/null 2>&1; do
        ((SECONDS < end)) || fail "munged did not come up (see /var/log/munge/munged.log)"
        sleep 0.2
    done
    cp /run/munge/munged.pid "$STATE/munged.pid"
}

node_state() { sinfo -h -N -o '%T' 2>/dev/null | head -1; }

wait_idle() {
    local end=$((SECONDS + WAIT_S)) state=""
    while ((SECONDS < end)); do
        state=$(node_state)
        case $state in
            idle|mixed|allocated) return 0 ;;
            down*|drain*|fail*) scontrol update nodename="$(hostname -s)" state=resume 2>/dev/null || true ;;
        esac
        sleep 0.5
    done
    fail "node not idle after ${WAIT_S}s (state '${state:-no answer}'); logs: $STATE/log/slurmctld.log $STATE/log/slurmd.log"
}

start() {
    need_root start
    mkdir -p "$STATE"
    if alive "$STATE/slurmctld.pid" && alive "$STATE/slurmd.pid" && alive "$STATE/munged.pid"; then
        wait_idle && echo "slurm_local: already running ($(sinfo -h -N -o '%N %c CPUs %m MB %T'))" && return 0
    fi
    install
    write_config
    start_munge
    alive "$STATE/slurmctld.pid" || slurmctld
    alive "$STATE/slurmd.pid" || slurmd
    wait_idle
    echo "slurm_local: up ($(sinfo -h -N -o '%N %c CPUs %m MB %T'))"
}

stop_one() {  # pid file, name: SIGTERM, then wait (bounded) for the process to go
    local pidfile=$1 pid
    alive "$pidfile" || { rm -f "$pidfile"; return 0; }
    pid=$(cat "$pidfile")
    kill "$pid"
    local end=$((SECONDS + 30))
    while kill -0 "$pid" 2>/dev/null; do
        ((SECONDS < end)) || { kill -9 "$pid" 2>/dev/null || true; break; }
        sleep 0.2
    done
    rm -f "$pidfile"
}

stop() {
    need_root stop
    stop_one "$STATE/slurmd.pid"
    stop_one "$STATE/slurmctld.pid"
    stop_one "$STATE/munged.pid"
    echo "slurm_local: stopped"
}

status() {
    alive "$STATE/slurmctld.pid" && alive "$STATE/slurmd.pid" || { echo "slurm_local: not running"; exit 1; }
    echo "slurm_local: $(sinfo -h -N -o '%N %c CPUs %m MB %T')"
}

case ${1:-} in
    start) start ;;
    stop) stop ;;
    status) status ;;
    *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
