"""Checkpoints that survive kill -9: written to a temporary file, flushed, then renamed into place.

A resumable checkpoint holds everything the loop needs to continue (model, optimizer, schedule,
iteration, position in the data order, every RNG state, MLflow run id, the curve so far) plus a fingerprint of what produced it, so a
checkpoint left by a different configuration or different code is never resumed by mistake. It is
read back with ``weights_only=True``: loading never executes code from the file.
"""

import hashlib
import json
import random
from pathlib import Path

import numpy as np
import torch

from resnet_repro.io import atomic_write


def save_checkpoint(path: Path, state: dict) -> None:
    atomic_write(path, lambda temporary: torch.save(state, temporary))


def load_checkpoint(path: Path) -> dict | None:
    """The checkpoint at `path`, or None when there is none. A corrupt file is an error, not a restart."""
    if not path.exists():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for a damaged zip or pickle
        raise RuntimeError(f"{path}: checkpoint cannot be read ({error}); delete it to train from scratch") from error


def fingerprint(*parts) -> str:
    """A stable hash of JSON-serialisable parts (configuration, data statistics, code version)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def source_digest() -> str:
    """Hash of this package's Python sources: a checkpoint written by other code is not resumed."""
    package = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for source in sorted(package.rglob("*.py")):
        digest.update(str(source.relative_to(package)).encode())
        digest.update(source.read_bytes())
    return digest.hexdigest()


def rng_states() -> dict:
    """Every generator a training draws from: torch (CPU, and each CUDA device), numpy's global one and
    Python's. Stored as tensors and plain tuples so that `weights_only=True` can read them back."""
    numpy_state = np.random.get_state(legacy=False)
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"key": torch.from_numpy(numpy_state["state"]["key"].astype(np.int64)),
                  "pos": numpy_state["state"]["pos"], "has_gauss": numpy_state["has_gauss"],
                  "gauss": numpy_state["gauss"]},
        "python": random.getstate(),
    }


def restore_rng_states(states: dict) -> None:
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    numpy_state = states["numpy"]
    np.random.set_state({"bit_generator": "MT19937", "has_gauss": numpy_state["has_gauss"],
                         "gauss": numpy_state["gauss"],
                         "state": {"key": numpy_state["key"].numpy().astype(np.uint32), "pos": numpy_state["pos"]}})
    version, internal, gauss_next = states["python"]
    random.setstate((version, tuple(internal), gauss_next))
