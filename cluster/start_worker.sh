#!/usr/bin/env bash
# Join a Ray worker node (its own raylet and resources) to a head, in the background; several may run on one
# machine (each gets its own ports), which is how multi-node behaviour is tested on one machine.
# Usage: cluster/start_worker.sh [HEAD_ADDR] [NUM_CPUS] [NUM_GPUS]
#   env: NODE_NAME (pid/log file names, default worker1), RUN_DIR, BIND_IP (default 127.0.0.1), NODE_TEMP_DIR
#   (Ray's session files of this node, default ${RAY_TEMP_DIR:-/tmp/ray}/NODE_NAME).
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
source "$HERE/_common.sh"
HEAD="${1:-127.0.0.1:6379}"
NUM_CPUS="${2:-$(nproc)}"
NUM_GPUS="${3:-0}"
NAME="${NODE_NAME:-worker1}"
NODE_TEMP_DIR="${NODE_TEMP_DIR:-${RAY_TEMP_DIR:-/tmp/ray}/$NAME}"  # its own, also when it shares the machine
start_ray "$NAME" --address "$HEAD" --node-ip-address "${NODE_IP:-$BIND_IP}" \
    --num-cpus "$NUM_CPUS" --num-gpus "$NUM_GPUS" \
    --dashboard-agent-listen-port "$(free_port)" --metrics-export-port "$(free_port)"
echo "worker $NAME joined $HEAD with $NUM_CPUS CPU, $NUM_GPUS GPU (pids in $RUN_DIR/$NAME.pid, $NAME.raylet.pid)"
