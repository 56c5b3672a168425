"""What the diagnostics share: the referee (scripts/referee_cifar.py, no code of the package) as a module,
and a project checkpoint's weights in the referee's own model."""

import importlib.util
import re
from pathlib import Path

import torch

_REFEREE = Path(__file__).resolve().parents[2] / "scripts" / "referee_cifar.py"
_spec = importlib.util.spec_from_file_location("referee_cifar", _REFEREE)
referee = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(referee)

DEPTH, BLOCKS_PER_STAGE = 20, 3


def referee_model(checkpoint: dict) -> torch.nn.Module:
    """The checkpoint's ResNet-20 weights, renamed from torchvision's layerS.B.* to the referee's blocks.K.*."""
    renamed = {}
    for key, value in checkpoint["model"].items():
        block = re.match(r"layer(\d)\.(\d+)\.(.*)", key)
        if block:
            key = f"blocks.{(int(block[1]) - 1) * BLOCKS_PER_STAGE + int(block[2])}.{block[3]}"
        renamed[key] = value
    model = referee.CifarResNet(DEPTH).to(memory_format=torch.channels_last)
    model.load_state_dict(renamed, strict=True)
    return model
