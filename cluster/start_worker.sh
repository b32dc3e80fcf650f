#!/usr/bin/env bash
# Join a Ray worker node to a head (loopback by default). Usage: cluster/start_worker.sh [HEAD_ADDR] [NUM_CPUS] [NUM_GPUS]
set -euo pipefail
# Token authentication on (Ray >= 2.59 default for local clusters; explicit here). Every node and client
# uses the same token: ~/.ray/auth_token (generated once below) or RAY_AUTH_TOKEN / RAY_AUTH_TOKEN_PATH.
export RAY_AUTH_MODE=token
HEAD="${1:-127.0.0.1:6379}"
NUM_CPUS="${2:-$(nproc)}"
NUM_GPUS="${3:-0}"
export RAY_TRAIN_V2_ENABLED=1 RAY_TRAIN_HEALTH_CHECK_INTERVAL_S=0.2 RAY_TRAIN_ENABLE_PREEMPTION_WATCHER=0 \
       RAY_TRAIN_METRICS_ENABLED=0 RAY_TRAIN_ENABLE_STATE_ACTOR_RECONCILIATION=0
ray start --address "$HEAD" --node-ip-address "${NODE_IP:-127.0.0.1}" \
    --num-cpus "$NUM_CPUS" --num-gpus "$NUM_GPUS" --disable-usage-stats
