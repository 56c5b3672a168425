"""The paper's ImageNet testing on image folders: 10-crop, and multi-scale fully-convolutional.

    ten_crop_scores(model, samples, ...)     softmax averaged over the 10 crops (the paper, Section 3.4 and Tables 2-4)
    multi_scale_scores(model, samples, ...)  softmax averaged over the whole image at several shorter
                                             sides, the net applied fully-convolutionally
    errors_of(scores)                        their top-1/top-5 error

The score functions yield (averaged softmax (N, classes), labels (N,)) batches in file order.

Both decode the original files (the .beton caps images at data.max_resolution, below the largest
test scale), in DataLoader workers. A 10-crop view has the training crop's size, so it is normalised
with the per-pixel mean image like training batches; a whole image at another size is normalised with
the per-channel mean (the mean image's spatial average), as per-pixel means exist only at one size.
"""

from collections.abc import Callable, Iterable, Iterator, Sequence
from functools import partial

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from resnet_repro.data.imagefolder import Sample, load_rgb
from resnet_repro.data.normalize import normalize
from resnet_repro.data.views import multi_scale_views, ten_crop
from resnet_repro.evaluate.accuracy import TopKCounter


class _Views(Dataset):
    """(views of one image as (V, 3, H, W) uint8 tensors, label); `make_views` maps HWC to VHWC."""

    def __init__(self, samples: list[Sample], make_views: Callable[[np.ndarray], np.ndarray | list[np.ndarray]]):
        self.samples, self.make_views = samples, make_views

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        sample = self.samples[index]
        views = self.make_views(load_rgb(sample.path))
        if isinstance(views, list):  # multi-scale: one view per size, each its own tensor
            return [torch.from_numpy(np.ascontiguousarray(v.transpose(2, 0, 1))) for v in views], sample.label
        return torch.from_numpy(np.ascontiguousarray(views.transpose(0, 3, 1, 2))), sample.label


def _single(batch: list):
    """Collate for batch_size=1 of differently-sized views: the item itself."""
    (item,) = batch
    return item


def errors_of(scores: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> dict[str, float]:
    counter = TopKCounter()
    for probabilities, labels in scores:
        counter.add(probabilities, labels)
    return counter.errors()


Scores = Iterator[tuple[torch.Tensor, torch.Tensor]]


@torch.no_grad()
def ten_crop_scores(model: torch.nn.Module, samples: list[Sample], *, crop_size: int, resize: int,
                    mean_image: torch.Tensor, device: torch.device, batch_size: int,
                    num_workers: int) -> Scores:
    """Each image's softmax averaged over its 10 crops, `batch_size` crops (rounded to whole images)
    per forward pass."""
    if mean_image.shape[-2:] != (crop_size, crop_size):
        raise ValueError(f"the mean image is {tuple(mean_image.shape[-2:])}, the crops {crop_size}x{crop_size}")
    loader = DataLoader(_Views(samples, partial(ten_crop, crop_size=crop_size, resize=resize)),
                        batch_size=max(1, batch_size // 10), num_workers=num_workers,
                        pin_memory=device.type == "cuda")
    model.eval()
    mean_image = mean_image.to(device)
    for views, labels in tqdm(loader, desc="10-crop", unit="batch", mininterval=1.0):
        images, crops = views.flatten(0, 1).to(device, non_blocking=True), views.shape[1]
        probabilities = model(normalize(images, mean_image)).softmax(dim=1)
        yield probabilities.unflatten(0, (-1, crops)).mean(dim=1), labels.to(device)


@torch.no_grad()
def multi_scale_scores(model: torch.nn.Module, samples: list[Sample], *, scales: Sequence[int],
                       mean_image: torch.Tensor, device: torch.device, num_workers: int) -> Scores:
    """Each image's softmax averaged over the whole image at each shorter side in `scales`; one image
    at a time, as aspect ratios differ."""
    loader = DataLoader(_Views(samples, partial(multi_scale_views, sides=scales)), batch_size=1,
                        num_workers=num_workers, collate_fn=_single)
    model.eval()
    channel_mean = mean_image.to(device).mean(dim=(1, 2), keepdim=True)
    for views, label in tqdm(loader, desc="multi-scale", unit="image", mininterval=1.0):
        probabilities = torch.stack([
            model(normalize(view[None].to(device, non_blocking=True), channel_mean)).softmax(dim=1)[0]
            for view in views])
        yield probabilities.mean(dim=0, keepdim=True), torch.tensor([label], device=device)
