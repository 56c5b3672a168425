#!/usr/bin/env bash
# Stop the study cifar-figure6 in its project (default /work/runs/fig6-64k) and copy its resumable state
# into ./project: the net in training gets SIGTERM (it saves its checkpoint and marks its MLflow run
# KILLED, and `dvc repro` stops after it), then dvc.lock, params.yaml, the finished nets' outputs, the
# checkpoint and the MLflow store are copied. resume.sh puts them back in a clone of the training commit.
set -euo pipefail
run=${RUN:-/work/runs/fig6-64k}
dest=$(cd "$(dirname "$0")" && pwd)

pids_in_run() {  # the processes matching $1 whose working directory is the run's project
  for pid in $(pgrep -f "$1" || true); do
    if [ "$(readlink "/proc/$pid/cwd" 2>/dev/null)" = "$run" ]; then echo "$pid"; fi
  done
}
for pid in $(pids_in_run "for net in resnet56"); do kill -TERM "$pid"; done  # no next net after this one
for pid in $(pids_in_run "pipeline/train.py --variant"); do kill -CONT "$pid"; kill -TERM "$pid"; done
while [ -n "$(pids_in_run 'pipeline/|dvc repro')" ]; do sleep 1; done

rm -rf "$dest/project.tmp" && mkdir -p "$dest/project.tmp"
cd "$run"
tar -cf - dvc.lock params.yaml $(ls -d models metrics checkpoints 2>/dev/null) | tar -xf - -C "$dest/project.tmp"
python3 -c "import sqlite3; s=sqlite3.connect('file:$run/mlflow.db?mode=ro', uri=True); d=sqlite3.connect('$dest/project.tmp/mlflow.db'); s.backup(d); d.close()"
find "$dest/project.tmp" -name .gitignore -delete
rm -rf "$dest/project" && mv "$dest/project.tmp" "$dest/project"
find "$dest/project" -type f | sort
