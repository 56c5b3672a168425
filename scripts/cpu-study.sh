#!/usr/bin/env bash
# The README's main job: the whole pipeline through DVC at CPU scale on the real CIFAR-10 archive,
# ending with registered models in MLflow. About 5-10 minutes on a 2-core CPU.
#
#   CIFAR10_ARCHIVE  the CIFAR-10 python archive (a local path or an URL); default: ../shared/data/...
#   ITERATIONS       training iterations per net (default 300)
#   SUBSET           training images kept, stratified by class (default 4000)
set -euo pipefail
cd "$(dirname "$0")/.."
source .venv/bin/activate
export DVC_NO_ANALYTICS=1 MLFLOW_DISABLE_TELEMETRY=true NO_ALBUMENTATIONS_UPDATE=1

archive="${CIFAR10_ARCHIVE:-../shared/data/cifar10/cifar-10-python.tar.gz}"
# `dvc exp run --set-param` writes these values into params.yaml and records the run as a DVC
# experiment (`dvc exp show`); `git checkout params.yaml` returns to the paper's settings.
dvc exp run \
  --set-param "data.archive=${archive}" \
  --set-param "data.subset=${SUBSET:-4000}" \
  --set-param "data.val_size=1000" \
  --set-param "train.iterations=${ITERATIONS:-300}" \
  --set-param "train.milestones=[$(( ${ITERATIONS:-300} / 2 )),$(( ${ITERATIONS:-300} * 3 / 4 ))]" \
  --set-param "train.checkpoint_every=100" \
  --set-param "train.eval_every=100" \
  --set-param "study.name=cifar-cpu-smoke" \
  --set-param "study.variants=[plain20,resnet20]" \
  --set-param "study.seeds=[0]"

dvc metrics show
echo
echo "Registered models: mlflow ui --backend-store-uri sqlite:///mlflow.db   (then open http://127.0.0.1:5000)"
