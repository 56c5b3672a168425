#!/usr/bin/env bash
# The degradation study at CPU scale (README, "The degradation effect on a CPU"): plain-20, plain-56,
# ResNet-20 and ResNet-56 on the real CIFAR-10 (45k/5k split, full 10k test set), 2,000 iterations of
# batch 128 each, through DVC; then the report (reports/study.md, reports/figures/) and a check of
# the study's runs in the MLflow UI's compare view (headless Chromium, reports/mlflow-compare.png).
#
#   CIFAR10_ARCHIVE  the CIFAR-10 python archive (a local path or an URL); default: ../shared/data/...
#   ITERATIONS       a smoke-scale run: this many iterations per net instead of the study's 2,000 (lr
#                    drops at 1/2 and 3/4, linear warm-up over the first tenth, test error every quarter)
#   SUBSET           training images kept, stratified by class (default: all 45,000)
set -euo pipefail
cd "$(dirname "$0")/.."
source .venv/bin/activate
export DVC_NO_ANALYTICS=1 MLFLOW_DISABLE_TELEMETRY=true NO_ALBUMENTATIONS_UPDATE=1

archive="${CIFAR10_ARCHIVE:-../shared/data/cifar10/cifar-10-python.tar.gz}"
overrides=(--set-param "data.archive=${archive}")
if [ -n "${ITERATIONS:-}" ]; then
  overrides+=(--set-param "train.iterations=${ITERATIONS}"
              --set-param "train.milestones=[$(( ITERATIONS / 2 )),$(( ITERATIONS * 3 / 4 ))]"
              --set-param "train.linear_warmup_iterations=$(( ITERATIONS / 10 ))"
              --set-param "train.eval_every=$(( ITERATIONS / 4 ))")
fi
if [ -n "${SUBSET:-}" ]; then
  overrides+=(--set-param "data.subset=${SUBSET}")
fi
# The study's nets and scale go into params.yaml (`git checkout params.yaml` undoes it); the archive
# (and a smoke scale) is set for this run only, as a DVC experiment (`dvc exp show`).
resnet-repro study select cifar-degradation-cpu
dvc exp run "${overrides[@]}"

cat reports/study.md
python scripts/check_mlflow_ui.py --study cifar-degradation-cpu --experiment resnet-repro-cifar10-cpu \
  --screenshot reports/mlflow-compare.png
