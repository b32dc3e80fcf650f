#!/usr/bin/env bash
# GPU packing check (run on a CUDA machine): the same small search with each Ray Train worker reserving SHARE of a
# GPU, for each SHARE given; records trials per hour and the GPU memory of every worker process (nvidia-smi, sampled
# every second) into OUT/gpu_packing.json.
# Usage: cluster/gpu_packing_check.sh OUT [SHARE...]        (default shares: 0.2 0.1)
#   env: SPACE (default spaces/rank_aware.yaml), DATA (a release; default: a `full`-profile synthetic release
#   generated under OUT), NUM_SAMPLES (8), MAX_CONCURRENT (default: what the plan allows), CPUS_PER_WORKER (1),
#   FOLD_LAYOUT (packed: SHARE is per trial; workers: set UNIT=fold too, SHARE is per fold worker).
set -euo pipefail
OUT="$(realpath -m "${1:?usage: gpu_packing_check.sh OUT [SHARE...]}")"; shift
SHARES=("$@"); [ ${#SHARES[@]} -gt 0 ] || SHARES=(0.2 0.1)
HERE="$(cd "$(dirname "$0")/.." && pwd)"
cd "$HERE"
export PYTHONPATH="$HERE${PYTHONPATH:+:$PYTHONPATH}"
command -v nvidia-smi >/dev/null || { echo "error: nvidia-smi not found: this check needs a CUDA machine" >&2; exit 2; }
mkdir -p "$OUT"
SPACE="${SPACE:-spaces/rank_aware.yaml}"
if [ -z "${DATA:-}" ]; then
  DATA="$OUT/release_full"
  [ -f "$DATA/train_metadata.csv" ] || python3 -m search.cli synth --out "$DATA" --profile full --quiet
fi
for share in "${SHARES[@]}"; do
  name="gpu_pack_${share/./_}"
  rm -rf "$OUT/$name"; mkdir -p "$OUT/$name"
  nvidia-smi --query-compute-apps=timestamp,pid,used_memory --format=csv,noheader,nounits -lms 1000 \
      > "$OUT/$name/nvidia_smi.csv" 2>/dev/null &
  smi=$!
  t0=$(date +%s.%N)
  set +e
  python3 -m search.cli search "$SPACE" --data "$DATA" --name "$name" --storage "$OUT/$name/ray_results" \
      --tracking-uri "sqlite:///$OUT/$name/mlflow.db" --fold-layout "${FOLD_LAYOUT:-packed}" \
      --gpus-per-${UNIT:-trial} "$share" --cpus-per-${UNIT:-trial} "${CPUS_PER_WORKER:-1}" \
      --num-samples "${NUM_SAMPLES:-8}" ${MAX_CONCURRENT:+--max-concurrent "$MAX_CONCURRENT"} --scheduler none \
      --quiet > "$OUT/$name/search.log" 2>&1
  rc=$?
  set -e
  t1=$(date +%s.%N)
  kill "$smi" 2>/dev/null || true; wait "$smi" 2>/dev/null || true
  python3 - "$OUT/$name" "$share" "$t0" "$t1" "$rc" <<'EOF'
import csv, json, sys
from pathlib import Path
from mlflow.tracking import MlflowClient

d, share, t0, t1, rc = Path(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])
name = d.name
c = MlflowClient(f"sqlite:///{d}/mlflow.db")
exp = c.get_experiment_by_name(name)
runs = c.search_runs([exp.experiment_id], max_results=10000) if exp else []
parents = [r for r in runs if r.data.tags.get("role") == "parent"]
done = [r for r in parents if r.info.status == "FINISHED"]
mem: dict[str, float] = {}
for row in csv.reader(open(d / "nvidia_smi.csv")):
    if len(row) >= 3 and row[2].strip().isdigit():
        mem[row[1].strip()] = max(mem.get(row[1].strip(), 0.0), float(row[2]))
plan = [l for l in (d / "search.log").read_text().splitlines() if l.startswith("plan:")]
hours = (t1 - t0) / 3600
res = {"gpus_per_fold": share, "exit_code": rc, "wall_s": round(t1 - t0, 1), "trials_finished": len(done),
       "trials_per_hour": round(len(done) / hours, 2) if hours > 0 else None,
       "fold_worker_gpu_mem_mib": {"max": max(mem.values(), default=None),
                                    "median": sorted(mem.values())[len(mem) // 2] if mem else None,
                                    "processes": len(mem)},
       "best_score": max((r.data.metrics.get("score", float("nan")) for r in done), default=None),
       "plan": plan[0] if plan else None}
(d / "result.json").write_text(json.dumps(res, indent=2))
print(json.dumps(res))
EOF
done
python3 - "$OUT" "${SHARES[@]}" <<'EOF'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
rows = [json.loads((out / f"gpu_pack_{s.replace('.', '_')}" / "result.json").read_text()) for s in sys.argv[2:]]
(out / "gpu_packing.json").write_text(json.dumps(rows, indent=2))
print(f"wrote {out / 'gpu_packing.json'}")
EOF
