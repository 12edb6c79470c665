#!/usr/bin/env bash
# Stop the single-node SLURM that cluster/ci/slurm-up.sh started: slurmd, slurmctld and munged,
# by the process ids it recorded. Daemons that are already gone are fine. Jobs still running are
# cancelled first, so no worker outlives the cluster.
set -euo pipefail

if [[ ${EUID} -ne 0 ]]; then
    command -v sudo >/dev/null || { echo "$0: needs root (or sudo)" >&2; exit 1; }
    exec sudo --preserve-env=SCIP_SLURM_STATE bash "$0" "$@"
fi

STATE=${SCIP_SLURM_STATE:-/tmp/scip-slurm}
PIDS="$STATE/pids"

log() { echo "[slurm-down] $*" >&2; }

if [[ ! -s "$PIDS" ]]; then
    log "no $PIDS: nothing started by slurm-up.sh"
    exit 0
fi

# cancel leftover jobs while the controller is still there
if command -v scancel >/dev/null 2>&1 && scontrol ping >/dev/null 2>&1; then
    jobs=$(squeue -h -o %i 2>/dev/null || true)
    if [[ -n "$jobs" ]]; then
        log "cancelling jobs: $(echo $jobs)"
        # shellcheck disable=SC2086
        scancel $jobs >/dev/null 2>&1 || true
        for _ in $(seq 1 30); do
            [[ -z "$(squeue -h -o %i 2>/dev/null || true)" ]] && break
            sleep 0.5
        done
    fi
fi

stop() {
    local name=$1 pid
    pid=$(awk -v n="$name" '$1 == n {print $2}' "$PIDS" | tail -n1)
    if [[ -z "$pid" ]]; then
        return 0
    fi
    # only if that pid is still the daemon (not a reused pid)
    if [[ ! -r /proc/$pid/comm || "$(cat "/proc/$pid/comm" 2>/dev/null)" != "$name" ]]; then
        log "$name ($pid) already stopped"
        return 0
    fi
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 150); do
        kill -0 "$pid" 2>/dev/null || { log "stopped $name ($pid)"; return 0; }
        sleep 0.1
    done
    log "$name ($pid) did not stop in 15 s: SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
}

stop slurmd
stop slurmctld
stop munged
rm -f "$PIDS"
