"""The nets of He et al. 2015 (plain and residual, CIFAR-10 and ImageNet) and 2016 (pre-activation).

    build("resnet56")                  # CIFAR-10, option A shortcuts
    build("resnet50", stride_placement="v1.5", zero_init_residual=True)
    build("resnet20", shortcut="B")    # the same net as build("resnet20-b")
    build("resnet18-cifar")            # ImageNet's ResNet-18 with a 3x3 stem, for 32x32 images
    build("resnet20", weights="cifar10")  # trained by this project, published in results/
    spec("resnet110-b")                # what a name builds, without building it
    ResNet(spec("resnet110-b"))        # what build("resnet110-b") does
    names()                            # the nets of the papers, and resnet18-cifar with its plain twin

Module names are torchvision's: `build("resnet50", stride_placement="v1.5")` loads the state dict of
`torchvision.models.resnet50()` as it is.

Names and options: `zoo`. `ModelSpec`, the blocks and the network class: `resnet`. Counting and
Figure 7's layers: `audit`. Published weights: `weights`.
"""

from resnet_repro.models.audit import count_flops, count_params, describe, response_modules
from resnet_repro.models.resnet import Block, ModelSpec, PadShortcut, PreActBlock, ResNet
from resnet_repro.models.zoo import build, counterpart, names, spec

__all__ = [
    "Block",
    "ModelSpec",
    "PadShortcut",
    "PreActBlock",
    "ResNet",
    "build",
    "count_flops",
    "count_params",
    "counterpart",
    "describe",
    "names",
    "response_modules",
    "spec",
]
