#!/usr/bin/env bash
# Stop what the start scripts recorded in RUN_DIR (default ./cluster_run), by process id only: workers first,
# then the MLflow server, then the head. SIGTERM to the service's process group (each start script runs its
# service in a session of its own), then SIGKILL after 20 s.
# Usage: cluster/stop_cluster.sh [NAME...]    (default: every recorded service)
set -uo pipefail
RUN_DIR="$(realpath -m "${RUN_DIR:-./cluster_run}")"
[ -d "$RUN_DIR" ] || { echo "nothing recorded in $RUN_DIR"; exit 0; }
if [ $# -gt 0 ]; then names=("$@"); else
  names=()
  for f in "$RUN_DIR"/*.pid; do
    [ -e "$f" ] || continue
    n="$(basename "$f" .pid)"; case "$n" in *.raylet|head|mlflow) continue ;; esac; names+=("$n")
  done
  [ -f "$RUN_DIR/mlflow.pid" ] && names+=(mlflow)
  [ -f "$RUN_DIR/head.pid" ] && names+=(head)
fi
for n in "${names[@]}"; do
  pids=()
  for f in "$RUN_DIR/$n.pid" "$RUN_DIR/$n.raylet.pid"; do [ -f "$f" ] && pids+=("$(cat "$f")"); done
  alive=(); for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive+=("$p"); done
  if [ ${#alive[@]} -gt 0 ]; then
    # each service was started in its own session (setsid): its process group id is its recorded pid
    kill -TERM -- "-${pids[0]}" 2>/dev/null || kill -TERM "${alive[0]}" 2>/dev/null
    for _ in $(seq 1 40); do
      still=(); for p in "${alive[@]}"; do kill -0 "$p" 2>/dev/null && still+=("$p"); done
      [ ${#still[@]} -eq 0 ] && break; sleep 0.5
    done
    kill -KILL -- "-${pids[0]}" 2>/dev/null
    for p in "${alive[@]}"; do kill -0 "$p" 2>/dev/null && kill -KILL "$p" 2>/dev/null; done
  fi
  rm -f "$RUN_DIR/$n.pid" "$RUN_DIR/$n.raylet.pid"
  echo "stopped $n"
done
