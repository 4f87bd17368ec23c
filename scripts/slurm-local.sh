#!/usr/bin/env bash
# A real single-node SLURM on this machine, for the SLURM tests and for trying campaigns by hand.
#
#   scripts/slurm-local.sh start    install (Debian packages, once), configure, start, wait for idle
#   scripts/slurm-local.sh stop     stop every daemon this script started
#   scripts/slurm-local.sh status   exit 0 and print the node state when the cluster answers
#
# Installs Debian's slurmctld slurmd slurm-client munge, plus slurmdbd and mariadb-server for
# accounting: without accounting `sacct` fails and submitit never learns that a job was cancelled.
# There is no systemd here, so the daemons are started by hand as root. Everything the cluster
# writes (configuration, state, spool, logs, the database) lives under $JOULEBENCH_SLURM_DIR
# (default /tmp/joulebench-slurm); commands find it through SLURM_CONF=$DIR/slurm.conf, which
# `start` also records in $DIR/env for `source`. Needs root (or passwordless sudo is NOT tried:
# slurmd must run as root) and apt-get; without them `start` says why and exits 3, and the SLURM
# tests skip with that reason.
#
# The node declares max(nproc, 4) CPUs (SlurmdParameters=config_overrides), so that two 2-rank
# array tasks share a 2-core machine at once, as they would share a real node; SLURM then
# oversubscribes the cores, which only makes those tests slower.
set -uo pipefail
DIR=${JOULEBENCH_SLURM_DIR:-/tmp/joulebench-slurm}
CLUSTER=joulebench
DB_PORT=${JOULEBENCH_SLURM_DB_PORT:-3307}
export SLURM_CONF="$DIR/slurm.conf"

log() { echo "slurm-local: $*" >&2; }

can_install() {
  if [ "$(id -u)" != "0" ]; then log "not root: cannot run slurmd/munged"; return 1; fi
  if ! command -v apt-get >/dev/null 2>&1 && ! [ -x /usr/sbin/slurmctld ]; then
    log "no apt-get and no SLURM installed"; return 1
  fi
}

install() {
  local need=()
  for pkg in slurmctld slurmd slurm-client munge slurmdbd mariadb-server; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
  done
  [ ${#need[@]} -eq 0 ] && return 0
  log "installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null 2>&1
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null 2>&1 || {
    log "apt-get install ${need[*]} failed"; return 1; }
}

write_config() {
  mkdir -p "$DIR"/{state,spool,log,db,run}
  local host cpus mem
  host=$(hostname -s)
  cpus=$(nproc); [ "$cpus" -lt 4 ] && cpus=4
  mem=$(awk '/MemTotal/ {print int($2 / 1024 * 0.8)}' /proc/meminfo)
  cat > "$DIR/slurm.conf" <<EOF
ClusterName=$CLUSTER
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool/%n
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
SlurmdParameters=config_overrides
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1
MinJobAge=300
KillWait=5
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
  cat > "$DIR/slurmdbd.conf" <<EOF
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
PidFile=$DIR/run/slurmdbd.pid
LogFile=$DIR/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=slurm
StorageLoc=slurm_acct_db
EOF
  chmod 600 "$DIR/slurmdbd.conf"
  echo "export SLURM_CONF=$DIR/slurm.conf" > "$DIR/env"
}

wait_for() {  # wait_for SECONDS COMMAND...: poll until the command succeeds
  local deadline=$((SECONDS + $1)); shift
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -ge $deadline ] && return 1
    sleep 0.3
  done
}

start_db() {
  if [ ! -d "$DIR/db/mysql" ]; then
    mariadb-install-db --user=root --datadir="$DIR/db" --auth-root-authentication-method=socket \
      >"$DIR/log/mariadb-install.log" 2>&1 || { log "mariadb-install-db failed (see $DIR/log)"; return 1; }
  fi
  if ! [ -S "$DIR/run/mysqld.sock" ]; then
    mariadbd --user=root --datadir="$DIR/db" --socket="$DIR/run/mysqld.sock" --port="$DB_PORT" \
      --bind-address=127.0.0.1 --pid-file="$DIR/run/mariadbd.pid" --skip-log-bin \
      >"$DIR/log/mariadbd.log" 2>&1 &
    wait_for 30 mariadb --socket="$DIR/run/mysqld.sock" -e "SELECT 1" || { log "mariadbd did not start"; return 1; }
  fi
  mariadb --socket="$DIR/run/mysqld.sock" -e "CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurm';
    GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1'; FLUSH PRIVILEGES;"
}

running() { [ -f "$DIR/run/$1.pid" ] && kill -0 "$(cat "$DIR/run/$1.pid")" 2>/dev/null; }

cmd_start() {
  local t0=$SECONDS
  can_install || exit 3
  install || exit 3
  if cmd_status >/dev/null 2>&1; then log "already running ($SLURM_CONF)"; return 0; fi
  write_config
  if ! pgrep -x munged >/dev/null; then
    mkdir -p /run/munge && chown munge:munge /run/munge
    runuser -u munge -- /usr/sbin/munged || { log "munged did not start"; exit 1; }
    touch "$DIR/run/munged.ours"
    wait_for 10 test -S /run/munge/munge.socket.2 || { log "munged gave no socket"; exit 1; }
  fi
  start_db || exit 1
  if ! running slurmdbd; then
    slurmdbd || { log "slurmdbd did not start (see $DIR/log)"; exit 1; }
  fi
  wait_for 30 sacctmgr -n list cluster || { log "slurmdbd does not answer"; exit 1; }
  sacctmgr -n list cluster format=cluster | grep -qw "$CLUSTER" || sacctmgr -i add cluster "$CLUSTER" >/dev/null
  running slurmctld || slurmctld -i -f "$SLURM_CONF" || { log "slurmctld did not start"; exit 1; }
  running slurmd || slurmd -f "$SLURM_CONF" || { log "slurmd did not start"; exit 1; }
  wait_for 60 node_idle || { log "node not idle after 60 s: $(sinfo -h -o %T 2>&1)"; exit 1; }
  log "up in $((SECONDS - t0)) s: $(sinfo -h -o '%N %T %c CPUs') (SLURM_CONF=$SLURM_CONF)"
}

node_idle() { [ "$(sinfo -h -o %T 2>/dev/null | head -1)" = "idle" ]; }

cmd_status() {
  [ -f "$SLURM_CONF" ] || { echo "not configured"; return 1; }
  local state
  state=$(timeout 5 sinfo -h -o %T 2>/dev/null | head -1)
  [ -n "$state" ] || { echo "not running"; return 1; }
  echo "$state SLURM_CONF=$SLURM_CONF"
}

stop_pid() {  # stop_pid NAME: TERM the daemon whose pid file we wrote, wait for it to go
  local f="$DIR/run/$1.pid"
  [ -f "$f" ] || return 0
  local pid; pid=$(cat "$f")
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid"
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
  fi
  rm -f "$f"
}

cmd_stop() {
  [ -f "$SLURM_CONF" ] && timeout 10 scancel --full -u root >/dev/null 2>&1
  for d in slurmd slurmctld slurmdbd mariadbd; do stop_pid "$d"; done
  rm -f "$DIR/run/mysqld.sock"
  if [ -f "$DIR/run/munged.ours" ] && [ -f /run/munge/munged.pid ]; then
    kill "$(cat /run/munge/munged.pid)" 2>/dev/null; rm -f "$DIR/run/munged.ours"
  fi
  log "stopped (state kept in $DIR)"
}

case "${1:-}" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
