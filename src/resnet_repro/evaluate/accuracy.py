"""Top-k classification error over a loader that yields every image exactly once."""

import torch

from resnet_repro.train.device import autocast


@torch.no_grad()
def top_k_errors(model: torch.nn.Module, loader, *, device: torch.device,
                 dtype: torch.dtype | None = None, ks: tuple[int, ...] = (1, 5)) -> dict[str, float]:
    """Returns {"top1_error": ..., "top5_error": ..., "num_images": N} as fractions in [0, 1]."""
    was_training = model.training
    model.eval()
    wrong = torch.zeros(len(ks), dtype=torch.long, device=device)
    seen = 0
    for images, labels in loader:
        with autocast(device, dtype):
            logits = model(images)
        top = logits.topk(max(ks), dim=1).indices
        hits = top == labels[:, None]
        for i, k in enumerate(ks):
            wrong[i] += labels.numel() - hits[:, :k].any(dim=1).sum()
        seen += labels.numel()
    model.train(was_training)
    if seen == 0:
        raise ValueError("the evaluation loader yielded no images")
    errors = {f"top{k}_error": wrong[i].item() / seen for i, k in enumerate(ks)}
    return {**errors, "num_images": seen}
