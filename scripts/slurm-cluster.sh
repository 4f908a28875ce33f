#!/usr/bin/env bash
# A real single-node Slurm on localhost for tests and demos.
#
#   scripts/slurm-cluster.sh start|stop|status|restart|stop-ctld|start-ctld
#
# Everything (munge key and socket, config, state, logs, pid files) lives under OSIRE_SLURM_DIR
# (default /tmp/osire-slurm); /etc/slurm/slurm.conf is a symlink to the generated config so plain
# sbatch/squeue work for every user. Installs the Debian packages if missing (needs root then).
# The node has 2 fake GPUs (gres files are symlinks to /dev/null). start/stop are idempotent;
# stop-ctld/start-ctld stop and start slurmctld alone (fault tests); while slurmctld is stopped that
# way, a concurrent `start` waits (up to 120 s) instead of restarting it behind the test's back.
#
# MinJobAge=120: finished jobs stay visible to squeue/scontrol for 2-3 minutes (purging runs about
# once a minute), long enough for a monitor to see how they ended; afterwards the backend falls back
# to the job's exit file. KillWait=5 so cancel and time limits end jobs quickly.
# The node declares OSIRE_SLURM_CPUS (default 8) CPUs whatever the machine has (config_overrides),
# so several test suites' jobs (mostly sleeping) can run side by side on a 2-core machine; the
# 2 fake GPUs stay the scarce resource that makes jobs wait with reason Resources.
set -euo pipefail

DIR="${OSIRE_SLURM_DIR:-/tmp/osire-slurm}"
CONF="$DIR/etc/slurm.conf"
HOST="$(hostname -s)"
CPUS="${OSIRE_SLURM_CPUS:-8}"
PACKAGES=(slurmctld slurmd slurm-client munge)

log() { echo "slurm-cluster: $*" >&2; }

install_packages() {
    local missing=()
    for p in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    [ "$(id -u)" -eq 0 ] || { log "missing packages ${missing[*]} (run as root to install)"; exit 1; }
    log "installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

pid_alive() {  # pid_alive FILE: the process named in FILE is running
    local pid
    [ -s "$1" ] && pid="$(cat "$1")" && [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null
}

write_config() {
    local user hw
    user="$(id -un)"
    mem="$(slurmd -C | head -1 | sed -n -e 's/.*RealMemory=\([0-9]*\).*/\1/p')"
    hw="CPUs=$CPUS Boards=1 SocketsPerBoard=1 CoresPerSocket=$CPUS ThreadsPerCore=1 RealMemory=$mem"
    mkdir -p "$DIR"/{etc,munge,state,spool,log,run,gpu}
    chmod 755 "$DIR" "$DIR/etc" "$DIR/munge" "$DIR/gpu"
    ln -sf /dev/null "$DIR/gpu/nvidia0"
    ln -sf /dev/null "$DIR/gpu/nvidia1"
    cat > "$DIR/etc/gres.conf" <<EOF
AutoDetect=off
NodeName=$HOST Name=gpu File=$DIR/gpu/nvidia[0-1]
EOF
    cat > "$CONF" <<EOF
ClusterName=osire
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=$user
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$DIR/munge/munge.socket
CommunicationParameters=NoInAddrAny
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool/slurmd-%n
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
SlurmctldPort=6817
SlurmdPort=6818
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1024
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0
MinJobAge=120
KillWait=5
ReturnToService=2
SlurmdParameters=config_overrides
GresTypes=gpu
NodeName=$HOST NodeAddr=127.0.0.1 $hw Gres=gpu:2 State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF
    if [ "$(id -u)" -eq 0 ]; then
        mkdir -p /etc/slurm
        ln -sf "$CONF" /etc/slurm/slurm.conf
        ln -sf "$DIR/etc/gres.conf" /etc/slurm/gres.conf
    fi
}

start_munge() {
    pid_alive "$DIR/run/munged.pid" && return 0
    [ -s "$DIR/munge/munge.key" ] || mungekey -c -k "$DIR/munge/munge.key" >/dev/null
    chmod 700 "$DIR/log" "$DIR/state"
    chmod 600 "$DIR/munge/munge.key"
    munged --force --socket="$DIR/munge/munge.socket" --key-file="$DIR/munge/munge.key" \
        --pid-file="$DIR/run/munged.pid" --log-file="$DIR/log/munged.log" \
        --seed-file="$DIR/munge/munge.seed"
}

start_ctld() {
    pid_alive "$DIR/run/slurmctld.pid" && return 0
    slurmctld -f "$CONF"
}

start_slurmd() {
    pid_alive "$DIR/run/slurmd.pid" && return 0
    slurmd -f "$CONF"
}

stop_pidfile() {  # stop_pidfile NAME: TERM the daemon, wait, then KILL
    local f="$DIR/run/$1.pid" pid i
    pid_alive "$f" || { rm -f "$f"; return 0; }
    pid="$(cat "$f")"
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
    rm -f "$f"
}

wait_idle() {
    local i state
    for i in $(seq 150); do
        state="$(SLURM_CONF="$CONF" sinfo -h -N -n "$HOST" -o %t 2>/dev/null || true)"
        case "$state" in
            idle*|mix*|alloc*) return 0 ;;
            down*|drain*|inval*) SLURM_CONF="$CONF" scontrol update nodename="$HOST" state=resume \
                                     >/dev/null 2>&1 || true ;;
        esac
        sleep 0.2
    done
    log "node did not become idle (state: ${state:-none}); see $DIR/log"
    exit 1
}

status() {
    local name rc=0
    for name in munged slurmctld slurmd; do
        if pid_alive "$DIR/run/$name.pid"; then echo "$name running (pid $(cat "$DIR/run/$name.pid"))"
        else echo "$name stopped"; rc=3; fi
    done
    [ $rc -eq 0 ] && SLURM_CONF="$CONF" sinfo -N -o "%N %t %G" 2>/dev/null || true
    return $rc
}

OUTAGE="$DIR/run/ctld-outage"

wait_outage() {  # a fault test has slurmctld stopped on purpose: let it finish
    local i
    for i in $(seq 600); do [ -e "$OUTAGE" ] || return 0; sleep 0.2; done
    log "stale $OUTAGE (older than 120 s), removing it"
    rm -f "$OUTAGE"
}

case "${1:-}" in
    start)
        install_packages
        wait_outage
        if ! pid_alive "$DIR/run/slurmctld.pid" || ! pid_alive "$DIR/run/slurmd.pid"; then
            write_config
        fi
        start_munge
        start_ctld
        start_slurmd
        wait_idle
        log "up: $HOST with 2 fake GPUs, config $CONF"
        ;;
    stop)
        stop_pidfile slurmd
        stop_pidfile slurmctld
        stop_pidfile munged
        ;;
    restart) "$0" stop; "$0" start ;;
    stop-ctld) touch "$OUTAGE"; stop_pidfile slurmctld ;;
    start-ctld) rm -f "$OUTAGE"; start_ctld; wait_idle ;;
    status) status ;;
    *) echo "usage: $0 start|stop|status|restart|stop-ctld|start-ctld" >&2; exit 2 ;;
esac
