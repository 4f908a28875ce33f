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
# Accounting (OSIRE_SLURM_ACCOUNTING=auto, the default; 1 requires it, 0 turns it off): MariaDB and
# slurmdbd (Debian mariadb-server, slurmdbd; installed when missing and we are root) run under the
# same directory, so `sacct` works for real. MariaDB listens on 127.0.0.1:OSIRE_SLURM_DB_PORT (6820)
# only, slurmdbd on 6819. With accounting, MinJobAge=5: a finished job leaves squeue within about a
# minute (slurmctld purges once a minute) and its true end (FAILED with its exit code, TIMEOUT...)
# comes from sacct. Without it, MinJobAge=120 keeps finished jobs visible long enough for a monitor
# to see how they ended; afterwards the backend falls back to the job's exit file.
# `start` rewrites the config only when it changed (then slurmctld restarts: running jobs survive).
# KillWait=5 so cancel and time limits end jobs quickly.
# The node declares OSIRE_SLURM_CPUS (default 8) CPUs whatever the machine has (config_overrides),
# so several test suites' jobs (mostly sleeping) can run side by side on a 2-core machine; the
# 2 fake GPUs stay the scarce resource that makes jobs wait with reason Resources.
#
# Two nodes (OSIRE_SLURM_NODES=2; 3 to 9 are written the same way but untested): a separate test
# cluster for multi-node jobs, never the default one:
#
#   OSIRE_SLURM_NODES=2 scripts/slurm-cluster.sh start|stop|status
#   export SLURM_CONF=/tmp/osire-slurm-2n/etc/slurm.conf      # start and status print this line
#
# Each node (node1, node2) is its own slurmd in its own network namespace (ip netns osire2n-nodeK),
# UTS namespace (hostname nodeK) and mount namespace (a private /etc/hosts naming every node),
# with address OSIRE_SLURM_NET.1K (default 10.77.0.11, 10.77.0.12) on a veth pair plugged into the
# bridge osire2n-br, where the host (slurmctld, munged) has OSIRE_SLURM_NET.1. Nodes reach each
# other and the host over TCP by those addresses; jobs see them as eth0. Everything is under
# OSIRE_SLURM_DIR (default /tmp/osire-slurm-Nn), with its own munge socket, ports (slurmctld 6917,
# slurmd 6918, inside each namespace), no accounting, and no /etc/slurm symlink: use SLURM_CONF.
# 2 fake GPUs per node. Needs root (ip netns, unshare, mount). `stop` ends the daemons, then every
# process left in the namespaces (job steps), then removes the namespaces, links and bridge.
set -euo pipefail

NODES="${OSIRE_SLURM_NODES:-1}"
case "$NODES" in [1-9]) ;; *) echo "slurm-cluster: OSIRE_SLURM_NODES must be 1 to 9" >&2; exit 2 ;; esac
if [ "$NODES" -gt 1 ]; then
    DIR="${OSIRE_SLURM_DIR:-/tmp/osire-slurm-${NODES}n}"
else
    DIR="${OSIRE_SLURM_DIR:-/tmp/osire-slurm}"
fi
CONF="$DIR/etc/slurm.conf"
# multi-node only: the network between the namespaced nodes and the host
NET="${OSIRE_SLURM_NET:-10.77.0}"              # host NET.1, nodeK NET.1K
NS_PREFIX="${OSIRE_SLURM_NS_PREFIX:-osire${NODES}n}"   # netns NS_PREFIX-nodeK, bridge NS_PREFIX-br
BRIDGE="$NS_PREFIX-br"
CTLD_PORT=6817
SLURMD_PORT=6818
[ "$NODES" -gt 1 ] && CTLD_PORT="${OSIRE_SLURM_CTLD_PORT:-6917}" && SLURMD_PORT="${OSIRE_SLURM_SLURMD_PORT:-6918}"
HOST="$(hostname -s)"
CPUS="${OSIRE_SLURM_CPUS:-8}"
PACKAGES=(slurmctld slurmd slurm-client munge)
ACCT_PACKAGES=(mariadb-server slurmdbd)
ACCOUNTING="${OSIRE_SLURM_ACCOUNTING:-auto}"
DB_PORT="${OSIRE_SLURM_DB_PORT:-6820}"
DBD_PORT=6819
USE_ACCT=0

log() { echo "slurm-cluster: $*" >&2; }

missing_packages() {  # missing_packages PKG...: prints those not installed
    local p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || echo "$p"
    done
}

install_packages() {
    local missing
    missing=($(missing_packages "${PACKAGES[@]}"))
    [ ${#missing[@]} -eq 0 ] && return 0
    [ "$(id -u)" -eq 0 ] || { log "missing packages ${missing[*]} (run as root to install)"; exit 1; }
    log "installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

choose_accounting() {  # sets USE_ACCT; installs MariaDB and slurmdbd when missing (root only)
    local missing
    case "$ACCOUNTING" in 0|no|off|false) USE_ACCT=0; return 0 ;; esac
    if [ "$NODES" -gt 1 ]; then   # its ports would clash with the default cluster's slurmdbd
        case "$ACCOUNTING" in 1|yes|on|true) log "no accounting on the multi-node cluster"; exit 1 ;; esac
        USE_ACCT=0; return 0
    fi
    missing=($(missing_packages "${ACCT_PACKAGES[@]}"))
    if [ ${#missing[@]} -gt 0 ] && [ "$(id -u)" -eq 0 ]; then
        log "installing ${missing[*]} (accounting; OSIRE_SLURM_ACCOUNTING=0 skips it)"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null 2>&1 ||
            { apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
                  apt-get install -y -qq "${missing[@]}" >/dev/null 2>&1; } || true
        missing=($(missing_packages "${ACCT_PACKAGES[@]}"))
    fi
    if [ ${#missing[@]} -eq 0 ]; then USE_ACCT=1; return 0; fi
    case "$ACCOUNTING" in
        1|yes|on|true) log "accounting required but ${missing[*]} missing"; exit 1 ;;
    esac
    log "no accounting (missing ${missing[*]}): sacct will say it is disabled"
    USE_ACCT=0
}

pid_alive() {  # pid_alive FILE: the process named in FILE is running
    local pid
    [ -s "$1" ] && pid="$(cat "$1")" && [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null
}

make_dirs() {
    mkdir -p "$DIR"/{etc,munge,state,spool,log,run,gpu}
    chmod 755 "$DIR" "$DIR/etc" "$DIR/munge" "$DIR/gpu"
}

# What the single-node and the multi-node configs share: process tracking, selection, the
# scheduler's settings and the fake GPUs.
select_conf() {
    printf '%s\n' ProctrackType=proctrack/linuxproc TaskPlugin=task/none SelectType=select/cons_tres \
        SelectTypeParameters=CR_Core_Memory DefMemPerCPU=1024 JobAcctGatherType=jobacct_gather/none
}
sched_conf() {
    printf '%s\n' SchedulerType=sched/backfill SchedulerParameters=batch_sched_delay=0 KillWait=5 \
        ReturnToService=2 SlurmdParameters=config_overrides GresTypes=gpu
}

write_config() {  # writes the config; returns 0 if it changed (or is new), 1 if not
    local user hw acct
    user="$(id -un)"
    mem="$(slurmd -C | head -1 | sed -n -e 's/.*RealMemory=\([0-9]*\).*/\1/p')"
    hw="CPUs=$CPUS Boards=1 SocketsPerBoard=1 CoresPerSocket=$CPUS ThreadsPerCore=1 RealMemory=$mem"
    ln -sf /dev/null "$DIR/gpu/nvidia0"
    ln -sf /dev/null "$DIR/gpu/nvidia1"
    if [ "$NODES" -gt 1 ]; then write_config_multi "$user" "$hw"; return; fi
    cat > "$DIR/etc/gres.conf" <<EOF
AutoDetect=off
NodeName=$HOST Name=gpu File=$DIR/gpu/nvidia[0-1]
EOF
    if [ "$USE_ACCT" -eq 1 ]; then
        acct="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=$DBD_PORT
AccountingStoragePass=$DIR/munge/munge.socket
MinJobAge=5"
    else
        acct="AccountingStorageType=accounting_storage/none
MinJobAge=120"
    fi
    cat > "$CONF.new" <<EOF
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
$(select_conf)
$acct
$(sched_conf)
AccountingStorageTRES=gres/gpu
NodeName=$HOST NodeAddr=127.0.0.1 $hw Gres=gpu:2 State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP TRESBillingWeights=CPU=1.0,Mem=0.25G,GRES/gpu=2.0
EOF
    if [ "$(id -u)" -eq 0 ]; then
        mkdir -p /etc/slurm
        ln -sf "$CONF" /etc/slurm/slurm.conf
        ln -sf "$DIR/etc/gres.conf" /etc/slurm/gres.conf
    fi
    if [ -e "$CONF" ] && cmp -s "$CONF.new" "$CONF"; then rm -f "$CONF.new"; return 1; fi
    mv "$CONF.new" "$CONF"
    return 0
}

db_client() {  # db_client SQL: run SQL as the database's admin (unix socket authentication)
    mariadb --no-defaults --socket="$DIR/run/mysqld.sock" -u "$(id -un)" -e "$1"
}

start_mariadb() {
    local i
    pid_alive "$DIR/run/mysqld.pid" && return 0
    mkdir -p "$DIR/mysql"
    if [ ! -d "$DIR/mysql/mysql" ]; then
        mariadb-install-db --no-defaults --user="$(id -un)" --datadir="$DIR/mysql" \
            --auth-root-authentication-method=socket --skip-test-db \
            > "$DIR/log/mariadb-install.log" 2>&1 || { log "mariadb-install-db failed: see $DIR/log"; return 1; }
    fi
    mariadbd --no-defaults --user="$(id -un)" --datadir="$DIR/mysql" \
        --socket="$DIR/run/mysqld.sock" --pid-file="$DIR/run/mysqld.pid" \
        --bind-address=127.0.0.1 --port="$DB_PORT" --skip-name-resolve \
        --log-error="$DIR/log/mysqld.log" --innodb-buffer-pool-size=64M \
        --innodb-lock-wait-timeout=900 < /dev/null > /dev/null 2>&1 9>&- &
    for i in $(seq 300); do
        db_client "SELECT 1" > /dev/null 2>&1 && return 0
        sleep 0.1
    done
    log "MariaDB did not start: see $DIR/log/mysqld.log"
    return 1
}

start_slurmdbd() {
    local pass i
    pid_alive "$DIR/run/slurmdbd.pid" && return 0
    [ -s "$DIR/etc/db.pass" ] || (umask 077; head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n' \
                                  > "$DIR/etc/db.pass")
    pass="$(cat "$DIR/etc/db.pass")"
    db_client "CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '$pass';
               ALTER USER 'slurm'@'127.0.0.1' IDENTIFIED BY '$pass';
               GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';" || return 1
    (umask 077; cat > "$DIR/etc/slurmdbd.conf" <<EOF
AuthType=auth/munge
AuthInfo=socket=$DIR/munge/munge.socket
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=$DBD_PORT
SlurmUser=$(id -un)
PidFile=$DIR/run/slurmdbd.pid
LogFile=$DIR/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=$pass
StorageLoc=slurm_acct_db
EOF
    )
    SLURM_CONF="$CONF" slurmdbd 9>&-   # reads slurmdbd.conf beside slurm.conf
    for i in $(seq 300); do
        (exec 3<>"/dev/tcp/127.0.0.1/$DBD_PORT") 2>/dev/null && return 0
        sleep 0.1
    done
    log "slurmdbd did not come up: see $DIR/log/slurmdbd.log"
    return 1
}

register_cluster() {  # once the config names slurmdbd: the cluster must exist in the database
    [ "$USE_ACCT" -eq 1 ] || return 0
    SLURM_CONF="$CONF" sacctmgr -n -P list cluster format=cluster 2>/dev/null | grep -qx osire ||
        SLURM_CONF="$CONF" sacctmgr -i add cluster osire > /dev/null ||
        log "could not register cluster osire with slurmdbd: jobs will not reach accounting"
}

start_accounting() {
    [ "$USE_ACCT" -eq 1 ] || return 0
    start_mariadb && start_slurmdbd && return 0
    [ "$ACCOUNTING" = auto ] || exit 1
    log "accounting did not start; running without it"
    USE_ACCT=0
}

start_munge() {
    pid_alive "$DIR/run/munged.pid" && return 0
    [ -s "$DIR/munge/munge.key" ] || mungekey -c -k "$DIR/munge/munge.key" >/dev/null
    chmod 700 "$DIR/log" "$DIR/state"
    chmod 600 "$DIR/munge/munge.key"
    munged --force --socket="$DIR/munge/munge.socket" --key-file="$DIR/munge/munge.key" \
        --pid-file="$DIR/run/munged.pid" --log-file="$DIR/log/munged.log" \
        --seed-file="$DIR/munge/munge.seed" 9>&-
}

start_ctld() {
    pid_alive "$DIR/run/slurmctld.pid" && return 0
    slurmctld -f "$CONF" 9>&-
}

start_slurmd() {
    pid_alive "$DIR/run/slurmd.pid" && return 0
    slurmd -f "$CONF" 9>&-
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
    for name in munged mysqld slurmdbd slurmctld slurmd; do
        case "$name" in mysqld|slurmdbd) [ -e "$DIR/run/$name.pid" ] || continue ;; esac
        if pid_alive "$DIR/run/$name.pid"; then echo "$name running (pid $(cat "$DIR/run/$name.pid"))"
        else echo "$name stopped"; rc=3; fi
    done
    [ $rc -eq 0 ] && SLURM_CONF="$CONF" sinfo -N -o "%N %t %G" 2>/dev/null || true
    return $rc
}

node_names() { local k; for k in $(seq "$NODES"); do echo "node$k"; done; }
node_addr() { echo "$NET.1${1#node}"; }   # node_addr nodeK
node_ns() { echo "$NS_PREFIX-$1"; }

write_config_multi() {  # write_config_multi USER HW: the multi-node config (no /etc/slurm links)
    local user="$1" hw="$2" n
    cat > "$DIR/etc/gres.conf" <<EOF
AutoDetect=off
NodeName=node[1-$NODES] Name=gpu File=$DIR/gpu/nvidia[0-1]
EOF
    {
        echo "127.0.0.1 localhost"
        echo "$NET.1 $HOST"
        for n in $(node_names); do echo "$(node_addr "$n") $n"; done
    } > "$DIR/etc/hosts"
    chmod 644 "$DIR/etc/hosts" "$DIR/etc/gres.conf"
    cat > "$CONF.new" <<EOF
ClusterName=osire${NODES}n
SlurmctldHost=$HOST($NET.1)
SlurmUser=$user
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$DIR/munge/munge.socket
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool/slurmd-%n
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd-%n.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd-%n.log
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
$(select_conf)
AccountingStorageType=accounting_storage/none
MinJobAge=120
$(sched_conf)
EOF
    for n in $(node_names); do
        echo "NodeName=$n NodeHostname=$n NodeAddr=$(node_addr "$n") $hw Gres=gpu:2 State=UNKNOWN" >> "$CONF.new"
    done
    echo "PartitionName=debug Nodes=node[1-$NODES] Default=YES MaxTime=INFINITE State=UP" >> "$CONF.new"
    if [ -e "$CONF" ] && cmp -s "$CONF.new" "$CONF"; then rm -f "$CONF.new"; return 1; fi
    mv "$CONF.new" "$CONF"
    return 0
}

need_root_tools() {
    [ "$(id -u)" -eq 0 ] || { log "the multi-node cluster needs root (network namespaces)"; exit 1; }
    local t
    for t in ip unshare nsenter mount; do
        command -v "$t" >/dev/null || { log "missing $t (apt-get install iproute2 util-linux mount)"; exit 1; }
    done
}

start_network() {  # the bridge on the host, one namespace and veth pair per node (idempotent)
    local n ns host_if
    ip link show "$BRIDGE" >/dev/null 2>&1 || ip link add "$BRIDGE" type bridge
    ip -4 addr show dev "$BRIDGE" | grep -q "inet $NET.1/" || ip addr add "$NET.1/24" dev "$BRIDGE"
    ip link set "$BRIDGE" up
    for n in $(node_names); do
        ns="$(node_ns "$n")"; host_if="$NS_PREFIX-v${n#node}"
        ip netns list | grep -qw "^$ns" || ip netns add "$ns"
        if ! ip netns exec "$ns" ip link show eth0 >/dev/null 2>&1; then
            ip link del "$host_if" >/dev/null 2>&1 || true
            ip link add "$host_if" type veth peer name "$host_if-c"
            ip link set "$host_if-c" netns "$ns"
            ip netns exec "$ns" ip link set "$host_if-c" name eth0
        fi
        ip link set "$host_if" master "$BRIDGE"
        ip link set "$host_if" up
        ip netns exec "$ns" sh -c "ip link set lo up; ip link set eth0 up
            ip -4 addr show dev eth0 | grep -q 'inet $(node_addr "$n")/' ||
                ip addr add $(node_addr "$n")/24 dev eth0"
    done
}

HOSTS_MARK="# osire-slurm-${NODES}n"

host_names_multi() {  # the host resolves the nodes too: a Jupyter server here reaches engines on them
    local n kept
    kept="$(grep -v -- "$HOSTS_MARK\$" /etc/hosts || true)"
    { echo "$kept"; for n in $(node_names); do echo "$(node_addr "$n") $n $HOSTS_MARK"; done; } \
        > "$DIR/run/hosts.new"
    cmp -s "$DIR/run/hosts.new" /etc/hosts || cat "$DIR/run/hosts.new" > /etc/hosts   # in place: it may be a mount
}

drop_host_names_multi() {
    local kept
    grep -q -- "$HOSTS_MARK\$" /etc/hosts 2>/dev/null || return 0
    kept="$(grep -v -- "$HOSTS_MARK\$" /etc/hosts || true)"
    echo "$kept" > /etc/hosts
}

start_slurmd_multi() {  # each slurmd in its node's network, UTS and mount namespaces
    local n ns
    for n in $(node_names); do
        pid_alive "$DIR/run/slurmd-$n.pid" && continue
        ns="$(node_ns "$n")"
        mkdir -p "$DIR/spool/slurmd-$n"
        # nsenter, not `ip netns exec`: that remounts /sys, hiding /sys/fs/cgroup from slurmd
        SLURM_CONF="$CONF" nsenter --net="/run/netns/$ns" unshare --uts --mount --propagation slave \
            sh -c 'mount --bind "$1" /etc/hosts && hostname "$2" && exec slurmd -f "$3" -N "$2"' \
            sh "$DIR/etc/hosts" "$n" "$CONF" 9>&- ||
            { log "slurmd on $n did not start: see $DIR/log/slurmd-$n.log"; exit 1; }
    done
}

wait_idle_multi() {
    local i n state all
    for i in $(seq 150); do
        all=1
        for n in $(node_names); do
            state="$(SLURM_CONF="$CONF" sinfo -h -N -n "$n" -o %t 2>/dev/null || true)"
            case "$state" in
                idle*|mix*|alloc*) ;;
                down*|drain*|inval*) all=0; SLURM_CONF="$CONF" scontrol update nodename="$n" \
                                         state=resume >/dev/null 2>&1 || true ;;
                *) all=0 ;;
            esac
        done
        [ $all -eq 1 ] && return 0
        sleep 0.2
    done
    log "nodes did not all become idle; see $DIR/log"
    SLURM_CONF="$CONF" sinfo -N >&2 || true
    exit 1
}

stop_multi() {  # daemons, then what is left in the namespaces (job steps), then the network
    local n ns pid left i
    for n in $(node_names); do stop_pidfile "slurmd-$n"; done
    stop_pidfile slurmctld
    for n in $(node_names); do
        ns="$(node_ns "$n")"
        ip netns list | grep -qw "^$ns" || continue
        for i in 1 2 3; do
            left="$(ip netns pids "$ns" 2>/dev/null || true)"
            [ -n "$left" ] || break
            for pid in $left; do kill "-$([ $i -lt 3 ] && echo TERM || echo KILL)" "$pid" 2>/dev/null || true; done
            sleep 1
        done
        ip netns del "$ns" 2>/dev/null || true
        ip link del "$NS_PREFIX-v${n#node}" >/dev/null 2>&1 || true
    done
    ip link del "$BRIDGE" >/dev/null 2>&1 || true
    drop_host_names_multi
    stop_pidfile munged
}

status_multi() {
    local name rc=0 n
    for name in munged slurmctld $(for n in $(node_names); do echo "slurmd-$n"; done); do
        if pid_alive "$DIR/run/$name.pid"; then echo "$name running (pid $(cat "$DIR/run/$name.pid"))"
        else echo "$name stopped"; rc=3; fi
    done
    if [ $rc -eq 0 ]; then
        SLURM_CONF="$CONF" sinfo -N -o "%N %t %G" 2>/dev/null || true
        echo "export SLURM_CONF=$CONF"
    fi
    return $rc
}

OUTAGE="$DIR/run/ctld-outage"

wait_outage() {  # a fault test has slurmctld stopped on purpose: let it finish
    local i
    for i in $(seq 600); do [ -e "$OUTAGE" ] || return 0; sleep 0.2; done
    log "stale $OUTAGE (older than 120 s), removing it"
    rm -f "$OUTAGE"
}

if [ "$NODES" -gt 1 ]; then
    case "${1:-}" in
        start)
            need_root_tools
            install_packages
            USE_ACCT=0
            make_dirs
            exec 9> "$DIR/run/cluster.lock"
            flock 9
            start_munge
            start_network
            host_names_multi
            if write_config && pid_alive "$DIR/run/slurmctld.pid"; then
                log "configuration changed: restarting slurmctld (running jobs survive)"
                stop_pidfile slurmctld
            fi
            start_ctld
            start_slurmd_multi
            wait_idle_multi
            log "up: $(node_names | tr '\n' ' ')($NET.11...) with 2 fake GPUs each, config $CONF"
            echo "export SLURM_CONF=$CONF"
            ;;
        stop) stop_multi ;;
        restart) "$0" stop; "$0" start ;;
        status) status_multi ;;
        *) echo "usage: OSIRE_SLURM_NODES=$NODES $0 start|stop|status|restart" >&2; exit 2 ;;
    esac
    exit
fi

case "${1:-}" in
    start)
        install_packages
        choose_accounting
        make_dirs
        exec 9> "$DIR/run/cluster.lock"
        flock 9            # concurrent test sessions: one start at a time (daemons get 9>&-)
        wait_outage
        start_munge
        start_accounting
        changed=0
        write_config && changed=1
        register_cluster
        if [ $changed -eq 1 ] && pid_alive "$DIR/run/slurmctld.pid"; then
            log "configuration changed: restarting slurmctld (running jobs survive)"
            stop_pidfile slurmctld
            start_ctld
            SLURM_CONF="$CONF" scontrol reconfigure > /dev/null 2>&1 || true
        fi
        start_ctld
        start_slurmd
        wait_idle
        log "up: $HOST with 2 fake GPUs, accounting $([ "$USE_ACCT" -eq 1 ] && echo on || echo off), config $CONF"
        ;;
    stop)
        stop_pidfile slurmd
        stop_pidfile slurmctld
        stop_pidfile slurmdbd
        stop_pidfile mysqld
        stop_pidfile munged
        ;;
    restart) "$0" stop; "$0" start ;;
    stop-ctld) touch "$OUTAGE"; stop_pidfile slurmctld ;;
    start-ctld) rm -f "$OUTAGE"; start_ctld; wait_idle ;;
    status) status ;;
    *) echo "usage: $0 start|stop|status|restart|stop-ctld|start-ctld" >&2; exit 2 ;;
esac
