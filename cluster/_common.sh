# Shared helpers of the cluster scripts (sourced, not run).
# RUN_DIR (default ./cluster_run) holds each service's log and the process ids the stop script uses.
RUN_DIR="$(realpath -m "${RUN_DIR:-./cluster_run}")"
mkdir -p "$RUN_DIR"
# Token authentication on (Ray >= 2.59 default for local clusters; explicit here). Every node and client uses
# the same token: RAY_AUTH_TOKEN, else ~/.ray/auth_token (generated once by start_head.sh).
export RAY_AUTH_MODE=token
# the search's Ray Train settings (lighter controller, faster polling), inherited by every worker of a node
export RAY_TRAIN_V2_ENABLED=1 RAY_TRAIN_HEALTH_CHECK_INTERVAL_S=0.2 RAY_TRAIN_ENABLE_PREEMPTION_WATCHER=0 \
       RAY_TRAIN_METRICS_ENABLED=0 RAY_TRAIN_ENABLE_STATE_ACTOR_RECONCILIATION=0
# Address every service binds to. Loopback by default: only this machine can reach it. To expose a cluster on a
# private network set BIND_IP to this machine's private address (never a public one): Ray's ports accept any
# client holding the token, and MLflow has no authentication at all.
BIND_IP="${BIND_IP:-127.0.0.1}"
# A cluster, never the single-machine switch: `blemore search` without --address sets
# RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 in its own process (loopback-only local Ray), and a shell or test process
# that inherited it would make `ray start --address` refuse to join ("not supported on Windows and OSX").
unset RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER

free_port() {  # a TCP port free on BIND_IP right now
  python3 -c "import socket,sys; s=socket.socket(); s.bind((sys.argv[1], 0)); print(s.getsockname()[1])" "$BIND_IP"
}

# start_ray NAME ARGS...: `ray start ARGS --block` in the background; records NAME.pid (the blocking `ray start`,
# which stops its node's processes when terminated) and NAME.raylet.pid; waits until the raylet runs.
start_ray() {
  local name="$1"; shift
  if [ -f "$RUN_DIR/$name.pid" ] && kill -0 "$(cat "$RUN_DIR/$name.pid")" 2>/dev/null; then
    echo "error: $name already running (pid $(cat "$RUN_DIR/$name.pid"), $RUN_DIR/$name.pid)" >&2; return 1
  fi
  # NODE_TEMP_DIR / RAY_TEMP_DIR: Ray's session files (default /tmp/ray, where `ray.init(address="auto")` finds
  # the cluster). Raylets sharing a machine need their own: each node garbage-collects its runtime-env packages
  # (the job's working directory among them) under it.
  local tmp="${NODE_TEMP_DIR:-${RAY_TEMP_DIR:-}}"
  setsid nohup ray start "$@" ${tmp:+--temp-dir "$tmp"} --block --disable-usage-stats > "$RUN_DIR/$name.log" 2>&1 < /dev/null &
  local pid=$!
  echo "$pid" > "$RUN_DIR/$name.pid"
  local raylet=""
  for _ in $(seq 1 240); do
    raylet="$(pgrep -P "$pid" -x raylet || true)"
    [ -n "$raylet" ] && break
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "error: $name: ray start exited; see $RUN_DIR/$name.log:" >&2; tail -20 "$RUN_DIR/$name.log" >&2; return 1
    fi
    sleep 0.5
  done
  [ -n "$raylet" ] || { echo "error: $name: no raylet after 120 s; see $RUN_DIR/$name.log" >&2; return 1; }
  echo "$raylet" > "$RUN_DIR/$name.raylet.pid"
}
