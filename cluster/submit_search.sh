#!/usr/bin/env bash
# Submit a search (or its resumption) to a running Ray cluster as a Ray job; the driver runs on the head node and
# the repository is shipped as the job's working directory (so every node imports the same code).
# Usage: cluster/submit_search.sh SPACE.yaml [extra `blemore search` options...]
#        cluster/submit_search.sh resume NAME [extra `blemore resume` options, e.g. --storage URI]
#   env: RAY_ADDRESS (default http://127.0.0.1:8265, the dashboard's job API), MLFLOW_TRACKING_URI (default
#   http://127.0.0.1:5000, see start_mlflow.sh), RAY_AUTH_TOKEN (token auth), SUBMIT_ARGS (extra `ray job submit`
#   options, e.g. "--no-wait --submission-id my-search"). For an S3-compatible storage, AWS_ENDPOINT_URL and the
#   region are forwarded by the driver; credentials must be in the nodes' environment (see README).
set -euo pipefail
FIRST="${1:?usage: submit_search.sh SPACE.yaml [options] | submit_search.sh resume NAME [options]}"; shift
export RAY_AUTH_MODE=token  # the job client authenticates with the cluster token
export RAY_ADDRESS="${RAY_ADDRESS:-http://127.0.0.1:8265}"
TRACKING="${MLFLOW_TRACKING_URI:-http://127.0.0.1:5000}"
HERE="$(cd "$(dirname "$0")/.." && pwd)"
if [ "$FIRST" = "resume" ]; then
  NAME="${1:?usage: submit_search.sh resume NAME [options]}"; shift
  CMD=(python3 -m search.cli resume "$NAME" --address auto "$@")
else
  CMD=(python3 -m search.cli search "$FIRST" --address auto --tracking-uri "$TRACKING" "$@")
fi
LOG="$(mktemp)"; trap 'rm -f "$LOG"' EXIT
# A head that has just started may not have its job agent yet ("No available agent to submit job"): nothing was
# submitted then, so retry for up to 2 minutes.
for _ in $(seq 1 24); do
  set +e
  # shellcheck disable=SC2086
  ray job submit --working-dir "$HERE" ${SUBMIT_ARGS:-} \
      --runtime-env-json '{"excludes": ["mlruns", "ray_results", "mlflow.db", ".git", "cluster_run", "mlflow_server", "**/__pycache__", ".pytest_cache", ".ruff_cache", "tests/screenshots"]}' \
      -- "${CMD[@]}" 2>&1 | tee "$LOG"
  rc=${PIPESTATUS[0]}
  set -e
  if [ "$rc" -ne 0 ] && grep -q "No available agent to submit job" "$LOG"; then sleep 5; continue; fi
  exit "$rc"
done
exit 1
