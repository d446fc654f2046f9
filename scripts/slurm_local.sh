#!/usr/bin/env bash
# A single-node SLURM cluster on this machine, for CI and for trying hydra/launcher=slurm without a cluster.
#   bash scripts/slurm_local.sh up       # install (Debian/Ubuntu, root) if needed, start, wait for an idle node
#   bash scripts/slurm_local.sh down     # stop everything it started (by PID file)
#   bash scripts/slurm_local.sh status
# No systemd needed: munged (as the munge user), MariaDB (mysqld_safe) with the accounting database, slurmdbd,
# slurmctld, then `slurmd -N localhost`. Accounting is not optional: without it sacct cannot tell a cancelled job
# from a running one. One partition, `debug`, holds the node `localhost` with this machine's CPUs and ~90 % of its
# memory. Writes /etc/slurm/slurm.conf and slurmdbd.conf (refusing to replace files it did not write); state,
# logs and PID files go to $BEFT_SLURM_DIR (default /var/tmp/beft-slurm).
set -euo pipefail
STATE=${BEFT_SLURM_DIR:-/var/tmp/beft-slurm}
CONF=/etc/slurm/slurm.conf
DBD_CONF=/etc/slurm/slurmdbd.conf
MARK="# written by beft scripts/slurm_local.sh"
DB_PASS=beft-local-slurm     # the accounting database listens on this machine only

say() { echo "slurm_local: $*" >&2; }
die() { say "$*"; exit 1; }

wait_for() {   # wait_for SECONDS DESCRIPTION COMMAND...: poll until COMMAND succeeds
    local limit=$1 what=$2; shift 2
    for _ in $(seq "$((limit * 2))"); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.5
    done
    die "$what did not come up within ${limit}s (logs: $STATE/*.log, $STATE/mysql/mysqld.log)"
}

install() {
    local missing=()
    for tool in slurmctld slurmd slurmdbd sbatch munged mysqld_safe; do
        command -v "$tool" >/dev/null || missing+=("$tool")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    local packages="slurm-wlm munge slurmdbd mariadb-server"
    [ "$(id -u)" -eq 0 ] || die "not installed (${missing[*]}); run as root to install, or install $packages"
    command -v apt-get >/dev/null || die "needs apt-get (Debian/Ubuntu) to install $packages"
    say "installing $packages"
    apt-get update -q >/dev/null
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $packages >/dev/null
}

write_conf() {   # write_conf PATH MODE OWNER < text: refuse to replace a file this script did not write
    local path=$1 mode=$2 owner=$3
    if [ -e "$path" ] && ! grep -qxF "$MARK" "$path"; then
        die "$path exists and was not written by this script; move it away first"
    fi
    mkdir -p "$(dirname "$path")"
    { echo "$MARK"; cat; } >"$path.tmp"
    chmod "$mode" "$path.tmp"; chown "$owner" "$path.tmp"; mv "$path.tmp" "$path"
}

configure() {
    local cpus mem_mb
    cpus=$(nproc)
    mem_mb=$(awk '/^MemTotal:/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)
    mkdir -p "$STATE/ctld" "$STATE/d"
    chown slurm:slurm "$STATE/ctld"
    write_conf "$CONF" 644 root:root <<EOF
ClusterName=beft
SlurmctldHost=localhost
SlurmUser=slurm
AuthType=auth/munge
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/d
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/slurmctld.log
SlurmdLogFile=$STATE/slurmd.log
# No cgroups (containers, no systemd): processes tracked through /proc, no task binding.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
JobAcctGatherType=jobacct_gather/linux
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
JobCompType=jobcomp/none
# A cancelled job gets SIGTERM, then SIGKILL this many seconds later.
KillWait=10
SchedulerType=sched/backfill
NodeName=localhost CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
    write_conf "$DBD_CONF" 600 slurm:slurm <<EOF
AuthType=auth/munge
DbdHost=localhost
SlurmUser=slurm
PidFile=$STATE/slurmdbd.pid
LogFile=$STATE/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=$DB_PASS
StorageLoc=slurm_acct_db
EOF
}

running() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

start_munge() {
    running /run/munge/munged.pid && return 0
    [ -s /etc/munge/munge.key ] || { dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 2>/dev/null;
                                     chown munge:munge /etc/munge/munge.key; chmod 400 /etc/munge/munge.key; }
    mkdir -p /run/munge /var/log/munge /var/lib/munge
    chown munge:munge /run/munge /var/log/munge /var/lib/munge
    su -s /bin/sh munge -c /usr/sbin/munged
    wait_for 20 munged sh -c 'munge -n | unmunge'
}

start_mariadb() {
    if ! running "$STATE/mysqld_safe.pid"; then
        mkdir -p /run/mysqld "$STATE/mysql" && chown mysql:mysql /run/mysqld "$STATE/mysql"
        nohup mysqld_safe --user=mysql --skip-syslog --log-error="$STATE/mysql/mysqld.log" \
            --pid-file="$STATE/mysql/mysqld.pid" >/dev/null 2>&1 &
        echo $! >"$STATE/mysqld_safe.pid"
    fi
    wait_for 60 MariaDB mysqladmin ping
    mysql -u root <<EOF
CREATE DATABASE IF NOT EXISTS slurm_acct_db;
CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$DB_PASS';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
FLUSH PRIVILEGES;
EOF
}

start_slurm() {
    running "$STATE/slurmdbd.pid" || slurmdbd
    wait_for 60 slurmdbd sacctmgr -n list cluster
    sacctmgr -i -Q add cluster beft >/dev/null 2>&1 || true   # "already exists" on a second start
    running "$STATE/slurmctld.pid" || slurmctld
    wait_for 60 slurmctld scontrol ping
    running "$STATE/slurmd.pid" || slurmd -N localhost
    wait_for 60 "the node localhost" sh -c 'sinfo -h -n localhost -o %T | grep -Eq "^(idle|mixed|allocated)"'
}

up() {
    install
    mkdir -p "$STATE"
    configure
    start_munge
    start_mariadb
    start_slurm
    say "up: $(sinfo -h -o '%P %D nodes, %c CPUs, %m MB, %T')"
}

stop() {   # stop PIDFILE NAME: TERM, then KILL after 15 s
    local pidfile=$1 name=$2 pid
    running "$pidfile" || return 0
    pid=$(cat "$pidfile")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || { rm -f "$pidfile"; return 0; }; sleep 0.5; done
    say "$name ($pid) ignored SIGTERM; killing it"
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$pidfile"
}

down() {
    stop "$STATE/slurmd.pid" slurmd
    stop "$STATE/slurmctld.pid" slurmctld
    stop "$STATE/slurmdbd.pid" slurmdbd
    stop "$STATE/mysql/mysqld.pid" mysqld        # a clean shutdown: mysqld_safe then exits without restarting it
    stop "$STATE/mysqld_safe.pid" mysqld_safe
    stop /run/munge/munged.pid munged
    say "down"
}

case "${1:-}" in
    up) up ;;
    down) down ;;
    status) sinfo && squeue ;;
    *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
