#!/usr/bin/env bash
# MLflow tracking server in the background: SQLite backend, artifacts stored and served by the server (clients
# upload through it, so no node needs the artifact store's credentials or disk), bound to BIND_IP (127.0.0.1).
# Usage: cluster/start_mlflow.sh [--port PORT] [--dir DIR]      (defaults: 5000, ./mlflow_server)
#   then: blemore search SPACE --tracking-uri http://127.0.0.1:PORT. Stop with cluster/stop_cluster.sh.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
source "$HERE/_common.sh"
PORT=5000
DIR=./mlflow_server
while [ $# -gt 0 ]; do
  case "$1" in
    --port) PORT="$2"; shift 2 ;;
    --dir) DIR="$2"; shift 2 ;;
    *) echo "usage: start_mlflow.sh [--port PORT] [--dir DIR]" >&2; exit 2 ;;
  esac
done
DIR="$(realpath -m "$DIR")"
mkdir -p "$DIR/artifacts"
if [ -f "$RUN_DIR/mlflow.pid" ] && kill -0 "$(cat "$RUN_DIR/mlflow.pid")" 2>/dev/null; then
  echo "error: MLflow server already running (pid $(cat "$RUN_DIR/mlflow.pid"))" >&2; exit 1
fi
setsid nohup mlflow server --backend-store-uri "sqlite:///$DIR/mlflow.db" \
    --artifacts-destination "$DIR/artifacts" --serve-artifacts \
    --host "$BIND_IP" --port "$PORT" --workers "${MLFLOW_WORKERS:-1}" > "$RUN_DIR/mlflow.log" 2>&1 < /dev/null &
echo $! > "$RUN_DIR/mlflow.pid"
for _ in $(seq 1 240); do
  if python3 -c "import sys,urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)" \
       "http://$BIND_IP:$PORT/health" 2>/dev/null; then
    echo "MLflow server at http://$BIND_IP:$PORT (pid $(cat "$RUN_DIR/mlflow.pid"), store $DIR)"; exit 0
  fi
  kill -0 "$(cat "$RUN_DIR/mlflow.pid")" 2>/dev/null || { echo "error: mlflow server exited; see $RUN_DIR/mlflow.log" >&2; tail -20 "$RUN_DIR/mlflow.log" >&2; exit 1; }
  sleep 0.5
done
echo "error: MLflow server did not answer on http://$BIND_IP:$PORT/health within 120 s; see $RUN_DIR/mlflow.log" >&2
exit 1
