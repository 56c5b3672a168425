"""Top-k classification error over a loader that yields every image exactly once."""

import torch

from resnet_repro.device import autocast


class TopKCounter:
    """Counts top-k mistakes of score batches; `errors()` gives them as fractions in [0, 1]."""

    def __init__(self, ks: tuple[int, ...] = (1, 5)):
        self.ks = ks
        self.wrong = [0] * len(ks)
        self.seen = 0

    def add(self, scores: torch.Tensor, labels: torch.Tensor) -> None:
        """scores (N, classes), labels (N,); the device's counts are read back once per batch."""
        top = scores.topk(min(max(self.ks), scores.shape[1]), dim=1).indices
        hits = top == labels[:, None]
        for i, k in enumerate(self.ks):
            self.wrong[i] += labels.numel() - int(hits[:, :k].any(dim=1).sum())
        self.seen += labels.numel()

    def errors(self) -> dict[str, float]:
        """{"top1_error": ..., "top5_error": ..., "num_images": N}."""
        if self.seen == 0:
            raise ValueError("the evaluation loader yielded no images")
        return {**{f"top{k}_error": wrong / self.seen for k, wrong in zip(self.ks, self.wrong)},
                "num_images": self.seen}


@torch.no_grad()
def top_k_errors(model: torch.nn.Module, loader, *, device: torch.device,
                 dtype: torch.dtype | None = None, ks: tuple[int, ...] = (1, 5)) -> dict[str, float]:
    """Returns {"top1_error": ..., "top5_error": ..., "num_images": N} as fractions in [0, 1]."""
    was_training = model.training
    model.eval()
    counter = TopKCounter(ks)
    for images, labels in loader:
        with autocast(device, dtype):
            logits = model(images)
        counter.add(logits, labels)
    model.train(was_training)
    return counter.errors()
