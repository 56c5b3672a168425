#!/usr/bin/env bash
# Start or resume the study cifar-figure6 (issue 38) in the background, as any user's study: a clone of
# main at the training commit in /work/runs/fig6-64k (the MLflow store records that path as its artifact
# location), the snapshot of ./project copied in if there is one, then `dvc repro` one net at a time in
# the issue's order (ResNet-56, ResNet-20, plain-56, plain-20; each trained and evaluated before the
# next starts), and a last `dvc repro` for the registry and the report. Log: /work/runs/fig6-64k.log.
# A checkpoint resumes only under the code that wrote it (train/state.py refuses any other), hence the
# pinned commit. Needs main's .venv (scripts/setup.sh).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
main=$(cd "$here/../.." && pwd)
commit=$(cat "$here/COMMIT")
run=/work/runs/fig6-64k
archive=${CIFAR10_ARCHIVE:-$(cd "$main/.." && pwd)/shared/data/cifar10/cifar-10-python.tar.gz}
if [ -e "$run" ]; then
  # The same machine as the last session: its project is the one snapshot.sh copied from, or newer.
  [ "$(git -C "$run" rev-parse HEAD)" = "$(git -C "$main" rev-parse "$commit")" ] \
    || { echo "$run exists and is not a clone at $commit: remove it first" >&2; exit 1; }
  echo "resuming $run in place (the machine kept it)"
else
  mkdir -p "$(dirname "$run")"
  git clone -q "$main" "$run" && git -C "$run" checkout -q "$commit"
  if [ -d "$here/project" ]; then
    cp -r "$here/project/." "$run/"
  else  # the first start: the study as a user selects it, on the local archive, in bf16 throughout
    (cd "$run" && "$main/.venv/bin/resnet-repro" study select cifar-figure6 \
      && "$main/.venv/bin/python" - "$archive" <<'PY'
import sys
from pathlib import Path
from resnet_repro.config import update_params_file
# bf16 rather than auto: the four nets train across sessions on whatever machine each session gets,
# and one precision must hold for all of them (a CPU without bf16 units emulates it, slower).
update_params_file(Path("params.yaml"), {"data.archive": sys.argv[1], "train.precision": "bf16"})
PY
    )
  fi
fi
cd "$run"
export PYTHONPATH=$run/src DVC_NO_ANALYTICS=1 MLFLOW_DISABLE_TELEMETRY=true NO_ALBUMENTATIONS_UPDATE=1
source "$main/.venv/bin/activate"
nohup nice -n 19 bash -c 'for net in resnet56 resnet20 plain56 plain20; do dvc repro "evaluate@$net-0" || exit 1; done; dvc repro' \
  >> /work/runs/fig6-64k.log 2>&1 &  # appended: each segment's log stays
echo "started in $run (pid $!); log /work/runs/fig6-64k.log"
