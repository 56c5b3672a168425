#!/usr/bin/env bash
# Once `dvc repro train@resnet20-0 && dvc repro evaluate@resnet20-0` has finished in /work/runs/r20:
# the segments table, then the results folder, written by main's scripts/publish_result.py.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
main=$(cd "$here/../.." && pwd)
run=${RUN:-/work/runs/r20}
run_id=$(python3 -c "import json; print(json.load(open('$run/metrics/resnet20/seed0/train.json'))['mlflow_run_id'])")
mapfile -t segments < <(grep -v '^#' "$here/segments.txt")
python3 "$here/segment_times.py" "$run/mlflow.db" "$run_id" "${segments[@]}" > "$run/segments.tsv"
cd "$main"
env -u PYTHONPATH .venv/bin/python scripts/publish_result.py --project "$run" --variant resnet20 --seed 0 \
  --out results/cifar10-resnet20 --segments "$run/segments.tsv"
