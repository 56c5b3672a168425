"""train@<variant>: train one net with one seed, resuming from its checkpoint if interrupted."""

import sys

from _stage import run_stage

from resnet_repro.train.distributed import launched_by_torchrun, run_under_torchrun
from resnet_repro.train.loop import TrainingInterrupted
from resnet_repro.train.stage import train_variant

# What a shell reports for a process ended by SIGTERM: schedulers read it as "terminated, requeue".
EXIT_TERMINATED = 128 + 15


def train(params, layout, variant: str, seed: int) -> dict:
    if params.train.nproc > 1 and not launched_by_torchrun():
        sys.exit(run_under_torchrun(params.train.nproc))  # which runs this script in each process
    try:
        return train_variant(params, layout, variant, seed)
    except TrainingInterrupted as stopped:
        print(f"train: {stopped}", file=sys.stderr, flush=True)
        sys.exit(EXIT_TERMINATED)


if __name__ == "__main__":
    run_stage("train", train, per_variant=True)
