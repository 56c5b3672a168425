"""prepare: the CIFAR-10 archive -> train/val/test splits, class names and image statistics."""

from _stage import run_stage

from resnet_repro.data.stage import prepare_cifar10

if __name__ == "__main__":
    run_stage("prepare", prepare_cifar10)
