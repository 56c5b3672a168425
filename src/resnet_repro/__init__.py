"""resnet-repro: Deep Residual Learning for Image Recognition (He et al., 2015) as a DVC + MLflow pipeline."""

__version__ = "0.1.0"


def load_registered(ref: str, device: str = "cpu"):
    """Return the registered model `ref` (e.g. ``"cifar10-resnet20@champion"``) as an ``nn.Module`` in eval mode."""
    from resnet_repro.tracking.registry import load_registered as _load

    return _load(ref, device=device)


__all__ = ["__version__", "load_registered"]
