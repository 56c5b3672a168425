"""prepare: the CIFAR-10 archive or an image folder -> splits, class names and image statistics."""

from _stage import run_stage

from resnet_repro.stages.prepare import prepare

if __name__ == "__main__":
    run_stage("prepare", prepare)
