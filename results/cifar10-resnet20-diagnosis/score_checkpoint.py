"""Test error of a project checkpoint, scored by the referee: its model, its reading of each archive, its
per-pixel mean of that archive's training split.

    python score_checkpoint.py CHECKPOINT ARCHIVE [ARCHIVE ...]
"""

import sys
from pathlib import Path

import torch
from common import referee, referee_model

torch.set_num_threads(1)
checkpoint = torch.load(sys.argv[1], map_location="cpu", weights_only=True)
model = referee_model(checkpoint)
for archive in sys.argv[2:]:
    data = referee.read_archive(Path(archive))
    train_images = torch.from_numpy(data["train"][0])
    test_images, test_labels = (torch.from_numpy(a) for a in data["test"])
    error = referee.error(model, test_images, test_labels, train_images.float().mean(0))
    print(f"iteration {checkpoint['iteration']}, {archive}: test error {error:.4f}")
