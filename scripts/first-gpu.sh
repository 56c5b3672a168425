#!/usr/bin/env bash
# The first command on a machine with a GPU, after scripts/setup.sh (docs/engine.md, "The first GPU"):
# the code written for CUDA, run on CUDA. It stops at the first part that fails.
#   1. the core, which needs torch alone (python -m resnet_repro.train.cuda_check): the training step in
#      fp32, bf16 and fp16, channels_last and compiled, and a checkpoint resumed bit for bit. Without
#      CUDA it stops there, with one line that says what torch found.
#   2. the CUDA tests (tests/test_cuda.py)
#   3. a small study through DVC on CUDA, in a temporary clone of the committed project: plain-20 and
#      ResNet-20, 200 iterations on 2,000 images, in bf16 (fp16 on a GPU without bf16), channels_last,
#      compiled
#   4. the same study on two GPUs (train.nproc=2: torchrun, DDP over NCCL), where there are two
#   5. images/s per precision on the GPU beside the same net on the CPU (resnet-repro bench precisions)
#
#   CIFAR10_ARCHIVE  the CIFAR-10 python archive, a local file; default: ../shared/data/cifar10/...
set -euo pipefail
cd "$(dirname "$0")/.."
export DVC_NO_ANALYTICS=1 MLFLOW_DISABLE_TELEMETRY=true NO_ALBUMENTATIONS_UPDATE=1

if [ ! -x .venv/bin/python ]; then
  echo "first-gpu: no .venv here: run bash scripts/setup.sh first (with torch alone, the core runs as" \
       "PYTHONPATH=src python -m resnet_repro.train.cuda_check)" >&2
  exit 1
fi
# shellcheck source=/dev/null
source .venv/bin/activate
repository="$PWD"
skipped=()

python -m resnet_repro.train.cuda_check

archive="${CIFAR10_ARCHIVE:-../shared/data/cifar10/cifar-10-python.tar.gz}"
if [ ! -f "$archive" ]; then
  echo "first-gpu: the CIFAR-10 archive is not at $archive: set CIFAR10_ARCHIVE to the file" \
       "(https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz)" >&2
  exit 1
fi
archive="$(realpath "$archive")"  # the study runs in another directory
gpus="$(python -c 'import torch; print(torch.cuda.device_count())')"
precision="$(python -c 'from resnet_repro.device import cuda_has_native_bf16; print("bf16" if cuda_has_native_bf16() else "fp16")')"
if [ "$precision" = fp16 ]; then
  skipped+=("bf16 (the GPU has no bf16 units)")
fi

echo
echo "== the CUDA tests: tests/test_cuda.py"
CIFAR10_ARCHIVE="$archive" python -m pytest -q -rs -p no:cacheprovider tests/test_cuda.py

echo
echo "== a small study through DVC on CUDA: $precision, channels_last, compiled"
project="$(mktemp -d -t first-gpu-XXXXXX)"
# Kept where a part failed, for a look at its outputs and logs.
clean_up() {
  if [ "$1" -eq 0 ]; then rm -rf "$project"; else echo "first-gpu: the study is in $project" >&2; fi
}
trap 'clean_up $?' EXIT
git clone --quiet "$repository" "$project"
ln -s "$repository/.venv" "$project/.venv"
cd "$project"
echo "commit $(git rev-parse --short HEAD) of $repository, cloned to $project"
study=(--set-param "data.archive=$archive" --set-param data.subset=2000
       --set-param "study.variants=[plain20,resnet20]" --set-param "study.seeds=[0]"
       --set-param train.iterations=200 --set-param "train.milestones=[100,150]"
       --set-param train.eval_every=100 --set-param train.checkpoint_every=100 --set-param train.log_every=20
       --set-param train.device=cuda --set-param "train.precision=$precision"
       --set-param train.channels_last=true --set-param train.compile=true
       --set-param mlflow.experiment=first-gpu)
dvc exp run --name first-gpu "${study[@]}"
dvc metrics show

echo
if [ "$gpus" -ge 2 ]; then
  echo "== the same study on two GPUs: train.nproc=2 (torchrun, DDP over NCCL)"
  dvc exp run --name first-gpu-ddp "${study[@]}" --set-param train.nproc=2
  dvc metrics show
else
  echo "== two GPUs under DDP: skipped, torch sees $gpus GPU"
  skipped+=("DDP (one GPU)")
fi
cd "$repository"

echo
echo "== images/s per precision: resnet-repro bench precisions"
resnet-repro bench precisions --archive "$archive" --workers "$(( $(nproc) < 8 ? $(nproc) : 8 ))"

echo
summary="first-gpu: passed"
if [ ${#skipped[@]} -gt 0 ]; then
  printf -v list '%s, ' "${skipped[@]}"
  summary+="; skipped: ${list%, }"
fi
echo "$summary"
