#!/usr/bin/env bash
# MLflow tracking server: SQLite backend, local artifact root, loopback only.
# Usage: cluster/start_mlflow.sh [DIR] [PORT]    then: blemore search SPACE --tracking-uri http://127.0.0.1:PORT
set -euo pipefail
DIR="$(realpath -m "${1:-./mlflow_server}")"
PORT="${2:-5000}"
mkdir -p "$DIR/artifacts"
exec mlflow server --backend-store-uri "sqlite:///$DIR/mlflow.db" \
    --artifacts-destination "$DIR/artifacts" --serve-artifacts \
    --host 127.0.0.1 --port "$PORT"
