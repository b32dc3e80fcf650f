#!/usr/bin/env bash
# Start a local Ray head bound to loopback (token authentication stays on: Ray 2.60 default).
# Usage: cluster/start_head.sh [NUM_CPUS] [NUM_GPUS]     then: blemore search SPACE --address auto
set -euo pipefail
# Token authentication on (Ray >= 2.59 default for local clusters; explicit here). Every node and client
# uses the same token: ~/.ray/auth_token (generated once below) or RAY_AUTH_TOKEN / RAY_AUTH_TOKEN_PATH.
export RAY_AUTH_MODE=token
NUM_CPUS="${1:-$(nproc)}"
NUM_GPUS="${2:-0}"
PORT="${RAY_PORT:-6379}"
# the search's Ray Train settings (lighter controller, faster polling), inherited by every worker of this node
export RAY_TRAIN_V2_ENABLED=1 RAY_TRAIN_HEALTH_CHECK_INTERVAL_S=0.2 RAY_TRAIN_ENABLE_PREEMPTION_WATCHER=0 \
       RAY_TRAIN_METRICS_ENABLED=0 RAY_TRAIN_ENABLE_STATE_ACTOR_RECONCILIATION=0
ray get-auth-token --generate >/dev/null
ray start --head --node-ip-address 127.0.0.1 --port "$PORT" \
    --dashboard-host 127.0.0.1 --dashboard-port "${RAY_DASHBOARD_PORT:-8265}" \
    --ray-client-server-port "${RAY_CLIENT_PORT:-10001}" \
    --num-cpus "$NUM_CPUS" --num-gpus "$NUM_GPUS" --disable-usage-stats
echo "head at 127.0.0.1:$PORT; join workers with: cluster/start_worker.sh 127.0.0.1:$PORT"
echo "other machines need the same token: copy ~/.ray/auth_token, or export RAY_AUTH_TOKEN=\$(ray get-auth-token)"
