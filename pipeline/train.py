"""train@<variant>: train one net with one seed, resuming from its checkpoint if interrupted."""

from _stage import run_stage

from resnet_repro.train.stage import train_variant

if __name__ == "__main__":
    run_stage("train", train_variant, per_variant=True)
