#!/usr/bin/env bash
# A throwaway single-node SLURM cluster on localhost, built from Debian's packages (Debian 12:
# Slurm 22.05, munge, MariaDB), for trying `harness sweep` on one machine and for the SLURM tests.
#
#   bash slurm/local-cluster.sh start    # installs the packages if missing (needs root), starts it
#   . /tmp/harness-slurm/env.sh          # exports SLURM_CONF for sinfo, sbatch, sacct, harness ...
#   bash slurm/local-cluster.sh status
#   bash slurm/local-cluster.sh stop     # stops the daemons through their pid files
#
# Everything lives under one scratch directory ($HARNESS_SLURM_DIR, default /tmp/harness-slurm):
# configuration, munge key and socket, MariaDB data, daemon state, logs and pid files. Nothing in
# /etc is touched and no system service is started. Delete the directory after `stop` to forget
# all jobs. Settings: HARNESS_SLURM_PORT (first of four TCP ports, default 16817: slurmctld,
# slurmd, slurmdbd, MariaDB), HARNESS_SLURM_CPUS (CPUs the node declares, default 8, even on a
# smaller machine, so that several array tasks run at once).
#
# No cgroups (proctrack/linuxproc, task/none), so it runs in containers. Accounting goes through
# slurmdbd + MariaDB because submitit polls `sacct` for job states. `start` is idempotent: it
# starts only the daemons that are not running.
set -euo pipefail

SCRATCH=${HARNESS_SLURM_DIR:-/tmp/harness-slurm}
PORT=${HARNESS_SLURM_PORT:-16817}
CPUS=${HARNESS_SLURM_CPUS:-8}
CLUSTER=harness
PACKAGES=(slurmctld slurmd slurm-client slurmdbd munge mariadb-server)
COMMANDS=(slurmctld slurmd sinfo sacctmgr slurmdbd munged mungekey mariadbd mariadb-install-db mariadb-admin)
export PATH="$PATH:/usr/sbin:/sbin"

ETC=$SCRATCH/etc RUN=$SCRATCH/run LOG=$SCRATCH/log STATE=$SCRATCH/state
MUNGE=$SCRATCH/munge DB=$SCRATCH/mariadb
SOCKET=$MUNGE/munge.socket
CTLD_PORT=$PORT SLURMD_PORT=$((PORT + 1)) DBD_PORT=$((PORT + 2)) DB_PORT=$((PORT + 3))
ME=$(id -un)
SUDO=() POLICY_GUARD=""
export SLURM_CONF=$ETC/slurm.conf

say() { printf 'local-cluster: %s\n' "$*"; }
die() { printf 'local-cluster: error: %s\n' "$*" >&2; exit 1; }

# ------------------------------------------------------------------------------------ packages

install_packages() {
    local missing=() cmd log=${TMPDIR:-/tmp}/harness-slurm-apt.log
    for cmd in "${COMMANDS[@]}"; do command -v "$cmd" >/dev/null || missing+=("$cmd"); done
    [[ ${#missing[@]} -eq 0 ]] && return
    command -v apt-get >/dev/null || die "missing ${missing[*]} and no apt-get: install ${PACKAGES[*]} yourself"
    if [[ $(id -u) -ne 0 ]]; then
        command -v sudo >/dev/null || die "missing ${missing[*]}; run this once as root to install ${PACKAGES[*]}"
        SUDO=(sudo)
    fi
    say "installing ${PACKAGES[*]} (missing: ${missing[*]}); log: $log"
    # Keep the packages' maintainer scripts from starting system-wide services.
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        POLICY_GUARD=/usr/sbin/policy-rc.d
        trap remove_policy_guard EXIT
        printf '#!/bin/sh\nexit 101\n' | "${SUDO[@]}" tee "$POLICY_GUARD" >/dev/null
        "${SUDO[@]}" chmod +x "$POLICY_GUARD"
    fi
    { "${SUDO[@]}" apt-get update -qq &&
      "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}"
    } >"$log" 2>&1 || { tail -20 "$log" >&2; die "installing the packages failed (log above)"; }
    remove_policy_guard
    trap - EXIT
    for cmd in "${COMMANDS[@]}"; do command -v "$cmd" >/dev/null || die "$cmd still missing after installing"; done
}

remove_policy_guard() {
    [[ -n $POLICY_GUARD ]] && "${SUDO[@]}" rm -f "$POLICY_GUARD"
    POLICY_GUARD=""
}

# ------------------------------------------------------------------------------------ daemons

# alive PIDFILE NAME: the pid file names a running (not zombie) process called NAME.
alive() {
    local pid stat
    # The daemon deletes its pid file as it exits, so the file may vanish between test and read.
    pid=$(cat -- "$1" 2>/dev/null) || return 1
    [[ $pid =~ ^[0-9]+$ ]] && [[ -r /proc/$pid/stat ]] || return 1
    stat=$(cat "/proc/$pid/stat" 2>/dev/null) || return 1
    [[ $stat == "$pid ($2) "* ]] && [[ ${stat#"$pid ($2) "} != Z* ]]
}

# wait_for SECONDS WHAT COMMAND...: retry COMMAND every half second.
wait_for() {
    local seconds=$1 what=$2 tries
    shift 2
    for ((tries = 0; tries < seconds * 2; tries++)); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.5
    done
    die "$what did not come up within ${seconds}s; see the logs in $LOG and $DB"
}

write_configs() {
    mkdir -p "$ETC" "$RUN" "$LOG" "$STATE/ctld" "$STATE/d" "$MUNGE" "$DB"
    chmod 755 "$SCRATCH" "$MUNGE"
    local memory
    memory=$(awk '/^MemTotal:/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)
    cat >"$ETC/slurm.conf" <<EOF
# Written by slurm/local-cluster.sh: a single-node cluster on localhost.
ClusterName=$CLUSTER
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=$ME
SlurmdUser=$ME
AuthType=auth/munge
CredType=cred/munge
# cred_expire also delays the restart of a requeued job (default 120 s).
AuthInfo=socket=$SOCKET,cred_expire=10
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=$DBD_PORT
AccountingStoragePass=$SOCKET
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2,bf_interval=2
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SlurmdParameters=config_overrides
ReturnToService=2
JobRequeue=1
KillWait=2
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/d
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd.pid
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=$LOG/slurmd.log
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$memory State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
    cat >"$ETC/slurmdbd.conf" <<EOF
# Written by slurm/local-cluster.sh.
AuthType=auth/munge
AuthInfo=socket=$SOCKET
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=$DBD_PORT
SlurmUser=$ME
PidFile=$RUN/slurmdbd.pid
LogFile=$LOG/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=harness-local
StorageLoc=harness_acct_db
EOF
    chmod 600 "$ETC/slurmdbd.conf"
    printf '# source this file: clients (sinfo, sbatch, sacct, harness sweep) find the local cluster\nexport SLURM_CONF=%s\n' \
        "$SLURM_CONF" >"$SCRATCH/env.sh"
}

start_munge() {
    alive "$MUNGE/munged.pid" munged && return
    if [[ ! -s $MUNGE/munge.key ]]; then
        mungekey --create --keyfile="$MUNGE/munge.key" >/dev/null
    fi
    chmod 600 "$MUNGE/munge.key"
    rm -f "$SOCKET" "$SOCKET.lock"
    munged --force --socket="$SOCKET" --key-file="$MUNGE/munge.key" --pid-file="$MUNGE/munged.pid" \
        --log-file="$MUNGE/munged.log" --seed-file="$MUNGE/munged.seed" </dev/null >>"$LOG/munged.out" 2>&1
    wait_for 10 munged test -S "$SOCKET"
}

db() { mariadb --no-defaults --socket="$DB/mysqld.sock" --user="$ME" "$@"; }

start_mariadb() {
    alive "$DB/mysqld.pid" mariadbd && return
    if [[ ! -d $DB/data/mysql ]]; then
        mariadb-install-db --no-defaults --datadir="$DB/data" --user="$ME" --skip-test-db \
            >"$LOG/mariadb-install.log" 2>&1 || { tail -20 "$LOG/mariadb-install.log" >&2; die "mariadb-install-db failed"; }
    fi
    setsid mariadbd --no-defaults --datadir="$DB/data" --user="$ME" --bind-address=127.0.0.1 --port="$DB_PORT" \
        --socket="$DB/mysqld.sock" --pid-file="$DB/mysqld.pid" --log-error="$LOG/mariadb.log" \
        --skip-name-resolve --innodb-buffer-pool-size=64M </dev/null >>"$LOG/mariadb.out" 2>&1 &
    wait_for 30 MariaDB mariadb-admin --no-defaults --socket="$DB/mysqld.sock" --user="$ME" ping
    db -e "CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'harness-local';
           GRANT ALL ON harness_acct_db.* TO 'slurm'@'127.0.0.1';"
}

start_slurm() {
    if ! alive "$RUN/slurmdbd.pid" slurmdbd; then
        slurmdbd </dev/null >>"$LOG/slurmdbd.out" 2>&1
        wait_for 30 slurmdbd sacctmgr --noheader list cluster
    fi
    if ! sacctmgr --noheader --parsable2 list cluster format=cluster | grep -qx "$CLUSTER"; then
        sacctmgr --immediate add cluster "$CLUSTER" >/dev/null
    fi
    if ! alive "$RUN/slurmctld.pid" slurmctld; then
        slurmctld </dev/null >>"$LOG/slurmctld.out" 2>&1
        wait_for 30 slurmctld scontrol ping
    fi
    if ! alive "$RUN/slurmd.pid" slurmd; then
        slurmd -N localhost </dev/null >>"$LOG/slurmd.out" 2>&1
    fi
    wait_for 30 "node localhost (idle)" node_ready
}

node_ready() { [[ $(sinfo --noheader --nodes=localhost --format=%T 2>/dev/null) =~ ^(idle|mixed|allocated)$ ]]; }

start() {
    install_packages
    write_configs
    start_munge
    start_mariadb
    start_slurm
    say "cluster '$CLUSTER' is up: node localhost, $CPUS CPUs, partition debug (scratch $SCRATCH)"
    say "clients need: export SLURM_CONF=$SLURM_CONF   (or: . $SCRATCH/env.sh)"
}

# stop_daemon PIDFILE NAME: TERM, then KILL after 20 s, only the process the pid file names. A daemon
# that exits on its own meanwhile (its pid file gone, or kill finding no process) counts as stopped.
stop_daemon() {
    local pidfile=$1 name=$2 pid tries
    if ! alive "$pidfile" "$name" || ! pid=$(cat -- "$pidfile" 2>/dev/null) || ! kill -TERM "$pid" 2>/dev/null; then
        rm -f "$pidfile"
        return
    fi
    for ((tries = 0; tries < 40; tries++)); do
        alive "$pidfile" "$name" || break
        sleep 0.5
    done
    if alive "$pidfile" "$name"; then
        say "$name (pid $pid) ignored TERM for 20 s; killing it"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$pidfile"
    say "stopped $name"
}

stop() {
    stop_daemon "$RUN/slurmd.pid" slurmd
    stop_daemon "$RUN/slurmctld.pid" slurmctld
    stop_daemon "$RUN/slurmdbd.pid" slurmdbd
    stop_daemon "$DB/mysqld.pid" mariadbd
    stop_daemon "$MUNGE/munged.pid" munged
}

status() {
    local down=0 entry pidfile name
    for entry in "$MUNGE/munged.pid:munged" "$DB/mysqld.pid:mariadbd" "$RUN/slurmdbd.pid:slurmdbd" \
                 "$RUN/slurmctld.pid:slurmctld" "$RUN/slurmd.pid:slurmd"; do
        pidfile=${entry%:*} name=${entry##*:}
        if alive "$pidfile" "$name"; then
            printf '%-10s running (pid %s)\n' "$name" "$(<"$pidfile")"
        else
            printf '%-10s stopped\n' "$name"
            down=1
        fi
    done
    if [[ $down -eq 0 ]]; then
        sinfo
        say "clients need: export SLURM_CONF=$SLURM_CONF   (or: . $SCRATCH/env.sh)"
    fi
    return $down
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) status ;;
    *) die "usage: $0 start|stop|status  (scratch directory: \$HARNESS_SLURM_DIR, default /tmp/harness-slurm)" ;;
esac
