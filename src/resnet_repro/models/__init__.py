"""The nets of He et al. 2015 (plain and residual, CIFAR-10 and ImageNet) and 2016 (pre-activation).

    build("resnet56")                  # CIFAR-10, option A shortcuts
    build("resnet50", stride_placement="v1.5", zero_init_residual=True)
    build("resnet20", shortcut="B")    # the same net as build("resnet20-b")
    spec("resnet110-b")                # what a name builds, without building it
    names()                            # the nets of the papers

Names and options: `zoo`. Blocks and the network class: `resnet`. Counting and Figure 7: `audit`.
torchvision weights: `torchvision_keys`.
"""

from resnet_repro.models.audit import count_flops, count_params, describe, layer_responses, response_modules
from resnet_repro.models.resnet import Block, PreActBlock, ResNet
from resnet_repro.models.torchvision_keys import from_torchvision, torchvision_key
from resnet_repro.models.zoo import ModelSpec, build, build_spec, names, spec

__all__ = [
    "Block",
    "ModelSpec",
    "PreActBlock",
    "ResNet",
    "build",
    "build_spec",
    "count_flops",
    "count_params",
    "describe",
    "from_torchvision",
    "layer_responses",
    "names",
    "response_modules",
    "spec",
    "torchvision_key",
]
