"""resnet-repro: Deep Residual Learning for Image Recognition (He et al., 2015) as a DVC + MLflow pipeline."""

__version__ = "0.1.0"


def load_registered(ref: str, tracking_uri: str | None = None, device: str = "cpu"):
    """The registered model `ref` (e.g. ``"cifar10-resnet20@champion"``) as an ``nn.Module`` in eval mode.

    `tracking_uri` None means ``MLFLOW_TRACKING_URI`` (else MLflow's default). The module carries
    ``class_names`` and ``mean_image`` (for ``resnet_repro.data.normalize.normalize``).
    """
    from resnet_repro.tracking.registry import load_registered as _load

    return _load(ref, tracking_uri=tracking_uri, device=device)


__all__ = ["__version__", "load_registered"]
