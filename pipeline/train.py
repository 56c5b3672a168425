"""train@<variant>: train one net with one seed, resuming from its checkpoint if interrupted."""

import sys

from _stage import run_stage

from resnet_repro.stages.train import train_variant
from resnet_repro.train.distributed import launched_by_torchrun, run_under_torchrun
from resnet_repro.train.errors import TrainingInterrupted


def train(params, layout, variant: str, seed: int) -> dict:
    if params.train.nproc > 1 and not launched_by_torchrun():
        sys.exit(run_under_torchrun(params.train.nproc))  # which runs this script in each process
    try:
        return train_variant(params, layout, variant, seed)
    except TrainingInterrupted as stopped:
        print(f"train: {stopped}", file=sys.stderr, flush=True)
        # What a shell reports for a process ended by the signal (143 for SIGTERM, 130 for Ctrl-C):
        # schedulers read 143 as "terminated, requeue".
        sys.exit(128 + stopped.signal)


if __name__ == "__main__":
    run_stage("train", train, per_variant=True)
