#!/usr/bin/env bash
# A private two-node Slurm cluster on this host, with accounting: for the `slurm` tests and for trying
# the suite's Slurm path on a laptop (`make slurm-up`, `make slurm-down`).
#
#   tests/slurm/cluster.sh up       start it (installs Debian's packages when root and they are missing);
#                                   a no-op when it is already up
#   tests/slurm/cluster.sh down     stop what `up` started, remove its files
#   tests/slurm/cluster.sh status   exit 0 when up
#   tests/slurm/cluster.sh env      the line to source: export SLURM_CONF=...
#
# Everything lives in $WALT_SLURM_DIR (default /tmp/walt-slurm): configs, spool, logs, a MariaDB for
# slurmdbd. Nodes n1 and n2 both run on 127.0.0.1 (Debian's slurmd is built with multiple-slurmd), partition
# `debug`, no GPUs. Ports are Slurm's defaults + 10000 so that a system cluster is left alone; the system's
# munged is reused when one answers. /etc/slurm/slurm.conf is linked to ours only when absent (plain
# `sbatch` then finds the cluster) and unlinked by `down`.
set -euo pipefail

STATE=${WALT_SLURM_DIR:-/tmp/walt-slurm}
CONF=$STATE/etc/slurm.conf
CTLD_PORT=16817 DBD_PORT=16819 DB_PORT=16306 NODE_PORTS=(17001 17002)
PACKAGES=(slurm-wlm slurmctld slurmd slurm-client slurmdbd munge mariadb-server)
export SLURM_CONF=$CONF

log() { echo "slurm-cluster: $*" >&2; }
die() { log "$*"; exit 1; }
alive() { [[ -s $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }
wait_for() {  # seconds, description, command...
    local t=$1 what=$2; shift 2
    for _ in $(seq $((t * 5))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
    die "$what did not come up within ${t}s (logs: $STATE/log)"
}
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

is_up() {
    alive "$STATE/run/slurmctld.pid" && timeout 5 sinfo -h >/dev/null 2>&1
}

install_packages() {
    local missing=()
    for tool in slurmctld slurmd sbatch slurmdbd munged mariadbd mariadb-install-db; do
        command -v "$tool" >/dev/null || missing+=("$tool")
    done
    [[ ${#missing[@]} -eq 0 ]] && return 0
    [[ $(id -u) -eq 0 ]] || die "not root and missing ${missing[*]}: install ${PACKAGES[*]}"
    command -v apt-get >/dev/null || die "missing ${missing[*]} and no apt-get to install ${PACKAGES[*]}"
    log "installing ${PACKAGES[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q --no-install-recommends "${PACKAGES[@]}" >"$STATE/log/apt.log" 2>&1 \
        || { apt-get update -q >>"$STATE/log/apt.log" 2>&1 &&
             apt-get install -y -q --no-install-recommends "${PACKAGES[@]}" >>"$STATE/log/apt.log" 2>&1; } \
        || die "apt-get install failed: $STATE/log/apt.log"
}

write_configs() {
    local cpus mem host
    cpus=$(slurmd -C | sed -n 's/.* CPUs=\([0-9]*\).*/\1/p')
    mem=$(slurmd -C | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p')
    host=$(hostname)
    cat >"$CONF" <<EOF
ClusterName=walt
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=cred_expire=10
CredType=cred/munge
MpiDefault=none
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
SchedulerParameters=batch_sched_delay=0,sched_interval=2,bf_interval=1
KillWait=5
MinJobAge=600
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/spool/%n
SlurmctldPidFile=$STATE/run/slurmctld.pid
SlurmdPidFile=$STATE/run/slurmd-%n.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd-%n.log
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=$DBD_PORT
JobAcctGatherType=jobacct_gather/none
NodeName=n1 NodeHostname=$host NodeAddr=127.0.0.1 Port=${NODE_PORTS[0]} CPUs=$cpus RealMemory=$mem State=UNKNOWN
NodeName=n2 NodeHostname=$host NodeAddr=127.0.0.1 Port=${NODE_PORTS[1]} CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=n1,n2 Default=YES MaxTime=INFINITE State=UP
EOF
    cat >"$STATE/etc/slurmdbd.conf" <<EOF
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=$DBD_PORT
SlurmUser=root
PidFile=$STATE/run/slurmdbd.pid
LogFile=$STATE/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=root
StorageLoc=slurm_acct_db
EOF
    chmod 600 "$STATE/etc/slurmdbd.conf"
}

start_munge() {
    if timeout 5 munge -n 2>/dev/null | timeout 5 unmunge >/dev/null 2>&1; then return 0; fi
    mkdir -p /run/munge && chown munge:munge /run/munge
    runuser -u munge -- munged --force
    wait_for 10 munged bash -c 'munge -n | unmunge'
    cp /run/munge/munged.pid "$STATE/run/munged.pid"   # ours to stop
}

start_database() {
    if [[ ! -d $STATE/db/mysql ]]; then
        mariadb-install-db --no-defaults --datadir="$STATE/db" --user=root --auth-root-authentication-method=normal \
            >"$STATE/log/mariadb-install.log" 2>&1 || die "mariadb-install-db failed: $STATE/log/mariadb-install.log"
    fi
    mariadbd --no-defaults --datadir="$STATE/db" --socket="$STATE/run/mariadb.sock" --port=$DB_PORT \
        --bind-address=127.0.0.1 --skip-grant-tables --user=root --pid-file="$STATE/run/mariadb.pid" \
        --log-error="$STATE/log/mariadb.log" >/dev/null 2>&1 &
    wait_for 30 MariaDB port_open $DB_PORT
    slurmdbd
    wait_for 30 slurmdbd port_open $DBD_PORT
    wait_for 30 "the accounting cluster" bash -c \
        'sacctmgr -n list cluster walt format=cluster | grep -q walt || sacctmgr -i add cluster walt'
}

up() {
    if is_up; then log "already up ($CONF)"; return 0; fi
    mkdir -p "$STATE"/{etc,run,log,ctld,spool/n1,spool/n2}
    install_packages
    write_configs
    start_munge
    start_database
    slurmctld -i
    wait_for 30 slurmctld scontrol ping
    slurmd -N n1 && slurmd -N n2
    wait_for 30 "nodes n1 and n2" bash -c '[[ $(sinfo -h -N -o %T | grep -c idle) -eq 2 ]]'
    if [[ ! -e /etc/slurm/slurm.conf && -w /etc/slurm ]]; then
        ln -s "$CONF" /etc/slurm/slurm.conf && touch "$STATE/run/linked-etc"
    fi
    log "up: nodes n1 n2, partition debug ($CONF)"
}

stop_pid() {  # pid file: TERM, wait, KILL
    local f=$1 pid
    [[ -s $f ]] || return 0
    pid=$(cat "$f")
    if kill -0 "$pid" 2>/dev/null; then
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
        kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$f"
}

down() {
    [[ -d $STATE ]] || { log "not up"; return 0; }
    timeout 10 scancel --full --quiet -u root 2>/dev/null || true
    for f in "$STATE"/run/slurmd-*.pid "$STATE/run/slurmctld.pid" "$STATE/run/slurmdbd.pid" \
             "$STATE/run/mariadb.pid" "$STATE/run/munged.pid"; do
        stop_pid "$f"
    done
    if [[ -e $STATE/run/linked-etc && -L /etc/slurm/slurm.conf ]]; then rm -f /etc/slurm/slurm.conf; fi
    rm -rf "$STATE"
    log "down"
}

case ${1:-} in
    up) up ;;
    down) down ;;
    status) is_up ;;
    env) echo "export SLURM_CONF=$CONF" ;;
    *) echo "usage: $0 up|down|status|env" >&2; exit 2 ;;
esac
