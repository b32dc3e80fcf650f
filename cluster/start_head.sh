#!/usr/bin/env bash
# Start a Ray head node (its own raylet, GCS and dashboard) bound to BIND_IP (default 127.0.0.1), in the background.
# Usage: cluster/start_head.sh [NUM_CPUS] [NUM_GPUS]
#   env: RUN_DIR (pid files and logs, default ./cluster_run), RAY_PORT (6379), RAY_DASHBOARD_PORT (8265, also the
#   job API of `ray job submit`), RAY_CLIENT_PORT (10001), RAY_AGENT_PORT (the head's dashboard agent, which runs
#   the submitted jobs; default a free port, so several clusters can share a machine), BIND_IP. Stop with cluster/stop_cluster.sh.
# Then: cluster/start_worker.sh 127.0.0.1:6379 ...; blemore search SPACE --address auto; or cluster/submit_search.sh.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
source "$HERE/_common.sh"
NUM_CPUS="${1:-$(nproc)}"
NUM_GPUS="${2:-0}"
PORT="${RAY_PORT:-6379}"
[ -n "${RAY_AUTH_TOKEN:-}" ] || ray get-auth-token --generate >/dev/null
# The dashboard serves the job API and Ray's State API (Ray Train's PlacementGroupCleaner needs it).
start_ray head --head --node-ip-address "$BIND_IP" --port "$PORT" \
    --dashboard-host "$BIND_IP" --dashboard-port "${RAY_DASHBOARD_PORT:-8265}" \
    --ray-client-server-port "${RAY_CLIENT_PORT:-10001}" \
    --num-cpus "$NUM_CPUS" --num-gpus "$NUM_GPUS" \
    --dashboard-agent-listen-port "${RAY_AGENT_PORT:-$(free_port)}" --metrics-export-port "$(free_port)"
echo "head at $BIND_IP:$PORT (pids in $RUN_DIR/head.pid, head.raylet.pid); dashboard/job API http://$BIND_IP:${RAY_DASHBOARD_PORT:-8265}"
echo "join workers with: cluster/start_worker.sh $BIND_IP:$PORT [NUM_CPUS] [NUM_GPUS]"
