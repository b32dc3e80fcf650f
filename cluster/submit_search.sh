#!/usr/bin/env bash
# Submit a search to a running Ray cluster as a Ray job (the driver runs on the head node).
# Usage: cluster/submit_search.sh SPACE.yaml [extra `blemore search` options...]
#   RAY_ADDRESS (default http://127.0.0.1:8265, the dashboard's job API), MLFLOW_TRACKING_URI (default
#   http://127.0.0.1:5000, see start_mlflow.sh) and RAY_AUTH_TOKEN (token auth) are read from the environment.
set -euo pipefail
SPACE="${1:?usage: submit_search.sh SPACE.yaml [options]}"; shift
export RAY_AUTH_MODE=token  # the job client authenticates with the cluster token
export RAY_ADDRESS="${RAY_ADDRESS:-http://127.0.0.1:8265}"
TRACKING="${MLFLOW_TRACKING_URI:-http://127.0.0.1:5000}"
HERE="$(cd "$(dirname "$0")/.." && pwd)"
exec ray job submit --working-dir "$HERE" \
    --runtime-env-json '{"excludes": ["mlruns", "ray_results", "mlflow.db", ".git"]}' \
    -- python -m search.cli search "$SPACE" --address auto --tracking-uri "$TRACKING" "$@"
