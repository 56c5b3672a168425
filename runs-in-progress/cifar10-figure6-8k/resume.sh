#!/usr/bin/env bash
# Resume the Figure 6 study where snapshot.sh left it: a clone of main at the training commit in
# /work/runs/fig6 (the MLflow store records that path as its artifact location), the snapshot copied in,
# then `dvc repro` in the background (log: /work/runs/fig6.log) at the lowest CPU priority. prepare and
# ffcv run again first (about a minute; the same bytes, so the finished nets stay up to date), and the
# net in progress says "Resumed from checkpoint at iteration N". Needs main's .venv (scripts/setup.sh).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
main=$(cd "$here/../.." && pwd)
commit=79bb947
run=/work/runs/fig6
if [ -e "$run" ]; then
  # The same machine as the last session: its project is the one snapshot.sh copied from, or newer.
  [ "$(git -C "$run" rev-parse --short=7 HEAD 2>/dev/null)" = "$commit" ] \
    || { echo "$run exists and is not a clone at $commit: remove it first" >&2; exit 1; }
  echo "resuming $run in place (the machine kept it)"
else
  git clone -q "$main" "$run" && git -C "$run" checkout -q "$commit"
  cp -r "$here/project/." "$run/"
fi
cd "$run"
export PYTHONPATH=$run/src DVC_NO_ANALYTICS=1 MLFLOW_DISABLE_TELEMETRY=true NO_ALBUMENTATIONS_UPDATE=1
source "$main/.venv/bin/activate"
nohup nice -n 19 dvc repro >> /work/runs/fig6.log 2>&1 &  # appended: each segment's log stays
echo "resumed in $run; log /work/runs/fig6.log"
