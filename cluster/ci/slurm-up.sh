#!/usr/bin/env bash
# Bring up a real single-node SLURM cluster on this machine, for CI integration tests
# (dask-jobqueue SLURMCluster whose workers are real sbatch jobs).
#
#   cluster/ci/slurm-up.sh      # install (if needed), configure, start, wait for the node to be idle
#   ... tests ...
#   cluster/ci/slurm-down.sh    # stop the daemons this script started
#
# Idempotent: when SLURM is already up with the same configuration it only prints the status.
# Runs as root, or re-executes itself through sudo.
#
# Environment knobs (all optional):
#   SCIP_SLURM_STATE    directory for pids, daemon output, fake GPU files (default /tmp/scip-slurm)
#   SCIP_SLURM_PARTITION name of the single default partition    (default debug)
#   SCIP_SLURM_GPUS     fake GPUs to advertise as GRES gpu       (default 1; 0 = no GRES)
#   SCIP_SLURM_TIMEOUT  seconds to wait for the node to be idle  (default 60)
#   SCIP_SLURM_CPUS     CPUs to advertise (default nproc; more than nproc oversubscribes the cores,
#                       e.g. to run 2 CPU workers and a GPU worker at once on a 2-core machine)
set -euo pipefail

if [[ ${EUID} -ne 0 ]]; then
    command -v sudo >/dev/null || { echo "$0: needs root (or sudo)" >&2; exit 1; }
    exec sudo --preserve-env=SCIP_SLURM_STATE,SCIP_SLURM_PARTITION,SCIP_SLURM_GPUS,SCIP_SLURM_TIMEOUT,SCIP_SLURM_CPUS \
        bash "$0" "$@"
fi

STATE=${SCIP_SLURM_STATE:-/tmp/scip-slurm}
PARTITION=${SCIP_SLURM_PARTITION:-debug}
NGPUS=${SCIP_SLURM_GPUS:-1}
TIMEOUT=${SCIP_SLURM_TIMEOUT:-60}
PIDS="$STATE/pids"
LOGDIR=/var/log/slurm
CONF=/etc/slurm/slurm.conf
GRESCONF=/etc/slurm/gres.conf
FAKEGPU_DIR="$STATE/fake-gpu"

log() { echo "[slurm-up] $*" >&2; }

t0=$(date +%s)

# ---------------------------------------------------------------- install
if ! command -v slurmctld >/dev/null 2>&1 || ! command -v munged >/dev/null 2>&1; then
    log "installing slurm-wlm and munge with apt-get"
    ti=$(date +%s)
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null
    # On hosts with systemd the packages start their own services (slurmd/slurmctld fail
    # without a config); this script runs the daemons itself.
    if [[ -d /run/systemd/system ]] && command -v systemctl >/dev/null 2>&1; then
        systemctl stop slurmctld slurmd >/dev/null 2>&1 || true
    fi
    log "installed in $(( $(date +%s) - ti )) s"
fi

mkdir -p "$STATE" "$LOGDIR" /var/spool/slurmctld /var/spool/slurmd /etc/slurm "$FAKEGPU_DIR"
touch "$PIDS"

# Record "name pid" in $PIDS (replacing an older entry of that name).
record_pid() {
    local name=$1 pid=$2
    { grep -v "^$name " "$PIDS" || true; } >"$PIDS.tmp"
    echo "$name $pid" >>"$PIDS.tmp"
    mv "$PIDS.tmp" "$PIDS"
}

# ---------------------------------------------------------------- munge
if [[ ! -s /etc/munge/munge.key ]]; then
    log "creating /etc/munge/munge.key"
    install -d -o munge -g munge -m 700 /etc/munge
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
fi
chown munge:munge /etc/munge/munge.key
chmod 400 /etc/munge/munge.key
install -d -o munge -g munge -m 755 /run/munge
install -d -o munge -g munge -m 700 /var/lib/munge /var/log/munge

munge_ok() { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }
if ! munge_ok; then
    # a stale socket/pid from an unclean stop makes munged refuse to start
    if ! pgrep -x munged >/dev/null; then
        rm -f /run/munge/munge.socket.2 /run/munge/munge.socket.2.lock /run/munge/munged.pid
    fi
    log "starting munged"
    runuser -u munge -- /usr/sbin/munged --force
    for _ in $(seq 1 50); do munge_ok && break; sleep 0.1; done
    munge_ok || { log "munged does not answer"; tail -n 20 /var/log/munge/munged.log >&2 || true; exit 1; }
    [[ -s /run/munge/munged.pid ]] && record_pid munged "$(cat /run/munge/munged.pid)"
fi

# ---------------------------------------------------------------- slurm.conf
# slurmd finds its node by `hostname -s`; the controller must resolve to this machine.
HOST=$(hostname -s 2>/dev/null || hostname)
HOST=${HOST%%.*}
if ! getent hosts "$HOST" >/dev/null 2>&1; then
    log "adding '$HOST' to /etc/hosts (it does not resolve)"
    echo "127.0.0.1 $HOST" >>/etc/hosts
fi
CPUS=${SCIP_SLURM_CPUS:-$(nproc)}
OVERRIDES=""
# slurmd drains a node configured with more CPUs than it finds, unless told to trust the config
[[ "$CPUS" -gt "$(nproc)" ]] && OVERRIDES="SlurmdParameters=config_overrides"
MEMTOTAL_MB=$(( $(awk '/^MemTotal:/ {print $2}' /proc/meminfo) / 1024 ))
# leave ~5% (at least 512 MB) for the OS and the daemons; slurmd drains a node whose
# RealMemory is above what it finds
REALMEM=$(( MEMTOTAL_MB - (MEMTOTAL_MB / 20 > 512 ? MEMTOTAL_MB / 20 : 512) ))
# a job that does not ask for memory gets this much per CPU (without it, it would get the whole
# node under CR_Core_Memory and jobs would run one at a time)
DEFMEM=$(( REALMEM / CPUS < 2048 ? REALMEM / CPUS : 2048 ))

GRES_NODE=""
GRES_TYPES=""
if [[ "$NGPUS" -gt 0 ]]; then
    GRES_TYPES="GresTypes=gpu"
    GRES_NODE="Gres=gpu:$NGPUS"
fi

new_conf=$(grep -v "^$" <<EOF
# Written by cluster/ci/slurm-up.sh: single-node SLURM for CI. Do not edit by hand.
ClusterName=scip-ci
SlurmctldHost=$HOST
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CryptoType=crypto/munge
MpiDefault=none
SwitchType=switch/none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MailProg=/bin/true
JobCompType=jobcomp/filetxt
JobCompLoc=$LOGDIR/jobcomp.log
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=$DEFMEM
ReturnToService=2
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$LOGDIR/slurmctld.log
SlurmdLogFile=$LOGDIR/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
SlurmctldTimeout=120
SlurmdTimeout=300
InactiveLimit=0
KillWait=30
MinJobAge=300
Waittime=0
$GRES_TYPES
$OVERRIDES
NodeName=$HOST NodeAddr=$HOST CPUs=$CPUS RealMemory=$REALMEM $GRES_NODE State=UNKNOWN
PartitionName=$PARTITION Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF
)
# A fake GPU: slurm needs a device file per GPU to set CUDA_VISIBLE_DEVICES; any character
# device will do, so point it at /dev/null under a name ending with the GPU index.
new_gres=""
if [[ "$NGPUS" -gt 0 ]]; then
    new_gres="# Written by cluster/ci/slurm-up.sh: fake GPUs (no hardware behind them)."
    for ((i = 0; i < NGPUS; i++)); do
        ln -sfn /dev/null "$FAKEGPU_DIR/gpu$i"
        new_gres+=$'\n'"NodeName=$HOST Name=gpu File=$FAKEGPU_DIR/gpu$i"
    done
fi

changed=0
if [[ "$(cat "$CONF" 2>/dev/null || true)" != "$new_conf" ]]; then
    printf '%s\n' "$new_conf" >"$CONF"
    changed=1
fi
if [[ -n "$new_gres" ]]; then
    if [[ "$(cat "$GRESCONF" 2>/dev/null || true)" != "$new_gres" ]]; then
        printf '%s\n' "$new_gres" >"$GRESCONF"
        changed=1
    fi
elif [[ -e "$GRESCONF" ]]; then
    rm -f "$GRESCONF"
    changed=1
fi
chmod 644 "$CONF"

# ---------------------------------------------------------------- daemons
status_line() {
    local st
    st=$(sinfo -h -N -n "$HOST" -o '%N %T cpus=%c mem=%mMB gres=%G partition=%P' 2>/dev/null | head -n1)
    echo "SLURM up: ${st:-unknown} (controller $HOST, conf $CONF, pids $PIDS, logs $LOGDIR)"
}
node_state() { sinfo -h -N -n "$HOST" -o %T 2>/dev/null | head -n1; }
is_up_state() { [[ "$1" =~ ^(idle|mixed|allocated|completing)$ ]]; }
# slurmd has registered with the controller since time $1 (the node state alone can be an old
# one that slurmctld recovered from its state files)
registered_since() {
    local t
    t=$(scontrol show node "$HOST" 2>/dev/null | sed -n 's/.*SlurmdStartTime=\([^ ]*\).*/\1/p')
    [[ -n "$t" && "$t" != None ]] || return 1
    (( $(date -d "$t" +%s) >= $1 - 1 ))
}

dump_logs() {
    for f in "$LOGDIR/slurmctld.log" "$LOGDIR/slurmd.log" "$STATE/slurmctld.out" "$STATE/slurmd.out" \
             /var/log/munge/munged.log; do
        [[ -s "$f" ]] || continue
        echo "----- tail $f" >&2
        tail -n 30 "$f" >&2
    done
    sinfo -N -l >&2 2>&1 || true
    scontrol show node "$HOST" >&2 2>&1 || true
}

running() { pgrep -x "$1" >/dev/null; }

# pid of a daemon from our pids file, if it is still that daemon
recorded_pid() {
    local name=$1 pid
    pid=$(awk -v n="$name" '$1 == n {print $2}' "$PIDS" 2>/dev/null | tail -n1)
    [[ -n "$pid" && -r /proc/$pid/comm && "$(cat /proc/$pid/comm)" == "$name" ]] && echo "$pid"
    return 0
}

stop_daemon() {
    local name=$1 pid
    pid=$(recorded_pid "$name")
    [[ -z "$pid" && -s "$STATE/$name.pid" ]] && pid=$(cat "$STATE/$name.pid")
    [[ -n "$pid" ]] || return 0
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
}

if [[ $changed -eq 0 ]] && running slurmctld && running slurmd && is_up_state "$(node_state)"; then
    status_line
    exit 0
fi

if [[ $changed -eq 1 ]] && { running slurmctld || running slurmd; }; then
    log "configuration changed: restarting slurmctld and slurmd"
    stop_daemon slurmd
    stop_daemon slurmctld
fi

ts=$(date +%s)
# Foreground mode (-D) in a new session, so the pid is known exactly and the daemon
# outlives this script.
if ! running slurmctld; then
    log "starting slurmctld"
    setsid /usr/sbin/slurmctld -D -i >"$STATE/slurmctld.out" 2>&1 </dev/null &
    record_pid slurmctld $!
fi
for _ in $(seq 1 50); do
    running slurmctld || break
    scontrol ping >/dev/null 2>&1 && break
    sleep 0.2
done
if ! running slurmctld; then
    log "FAILED: slurmctld exited at startup"
    dump_logs
    exit 1
fi
slurmd_started=0
if ! running slurmd; then
    log "starting slurmd"
    slurmd_started=$(date +%s)
    setsid /usr/sbin/slurmd -D >"$STATE/slurmd.out" 2>&1 </dev/null &
    record_pid slurmd $!
fi

state=""
deadline=$(( $(date +%s) + TIMEOUT ))
resumed=0
while (( $(date +%s) < deadline )); do
    state=$(node_state || true)
    if is_up_state "$state" && registered_since "$slurmd_started"; then break; fi
    # left down/drained by an earlier run: put it back in service once slurmd has registered
    if [[ $resumed -eq 0 && "$state" =~ ^(down|drained|draining)$ ]] && running slurmd; then
        sleep 2
        scontrol update NodeName="$HOST" State=RESUME >/dev/null 2>&1 || true
        resumed=1
    fi
    running slurmctld && running slurmd || break
    sleep 0.5
done

if ! is_up_state "$state" || ! registered_since "$slurmd_started"; then
    log "FAILED: node $HOST is '${state:-unknown}' after $(( $(date +%s) - ts )) s" \
        "(slurmctld $(running slurmctld && echo running || echo dead)," \
        "slurmd $(running slurmd && echo running || echo dead))"
    dump_logs
    exit 1
fi
log "daemons started, node $state in $(( $(date +%s) - ts )) s (script total $(( $(date +%s) - t0 )) s)"
status_line
