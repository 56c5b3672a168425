"""Everything a training needs to continue, and the checkpoint file that holds it.

    state = resume_or_start(checkpoint_path, fingerprint(params.train.model_dump(), variant, seed))
    ...  # fit() restores the model, optimizer, schedule and scaler from it, and keeps it up to date
    state.save(checkpoint_path)

A `TrainingState` is the one owner of the checkpoint's contents: where the training is (iteration,
seconds, images, the half-filled logging window, the curves so far), the state dicts of the model,
optimizer, schedule and gradient scaler, every RNG state, the id of its tracking run, a fingerprint of
the configuration that produced it and the version of the code that wrote it. A checkpoint of another
configuration is trained over (DVC re-runs the stage because its params changed); one written by other
code is refused, naming both commits, since a training continued under other code is neither the old
code's run nor the new one's. Files survive kill -9 (written under a temporary name, flushed, renamed) and
are read back with ``weights_only=True``: loading never executes code from the file.
"""

import functools
import hashlib
import json
import random
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from resnet_repro.gitinfo import changed_files, git_commit
from resnet_repro.io import atomic_write
from resnet_repro.train.errors import CheckpointError


@dataclass
class Curves:
    """What the stage writes as DVC plots, and the report reads: a row per log step and a row per
    evaluation, with these columns."""

    STEP_COLUMNS: ClassVar[tuple[str, ...]] = ("step", "loss", "train_error", "lr", "images_per_second")
    ERROR_COLUMNS: ClassVar[tuple[str, ...]] = ("step", "train_error", "test_error")

    steps: list[dict] = field(default_factory=list)
    errors: list[dict] = field(default_factory=list)


@dataclass
class TrainingState:
    fingerprint: str  # of the configuration (`fingerprint`): params, variant, seed, data statistics
    code: dict | None = None  # `code_version()` of the code that wrote it
    run_id: str | None = None  # the tracking run the training logs to, continued on resume
    iteration: int = 0  # steps taken; also the position in the data order
    complete: bool = False  # a complete training is never resumed: the stage re-runs because inputs changed
    seconds: float = 0.0  # training time, evaluations excluded
    images_trained: int = 0
    curves: Curves = field(default_factory=Curves)
    window: dict | None = None  # the loop's logging window since the last row, so rows match an uninterrupted run
    model: dict | None = None  # the state dicts below are filled by `capture` and emptied by `restore`
    optimizer: dict | None = None
    schedule: dict | None = None
    scaler: dict | None = None
    rng: dict | None = None

    @property
    def started(self) -> bool:
        """Whether this state holds a training to continue, rather than a fresh start."""
        return self.model is not None

    def capture(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, schedule, scaler) -> None:
        """Take the state dicts of the training's objects and the RNG states, ready to save."""
        self.model, self.optimizer = model.state_dict(), optimizer.state_dict()
        self.schedule, self.scaler = schedule.state_dict(), scaler.state_dict()
        self.rng = _rng_states()

    def restore(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, schedule, scaler) -> None:
        """Load the captured state dicts into the training's objects and put the RNGs back. The state
        then lets go of its copies (the objects hold them now), which would otherwise cost a model's
        and an optimizer's worth of memory for the whole training."""
        assert self.model is not None and self.optimizer is not None and self.rng is not None, "nothing captured"
        model.load_state_dict(self.model)
        optimizer.load_state_dict(self.optimizer)
        schedule.load_state_dict(self.schedule)
        scaler.load_state_dict(self.scaler)
        _restore_rng_states(self.rng)
        self.model = self.optimizer = self.schedule = self.scaler = self.rng = None

    def save(self, path: Path) -> None:
        contents = {f.name: getattr(self, f.name) for f in fields(self)}
        contents["curves"] = {"steps": self.curves.steps, "errors": self.curves.errors}
        atomic_write(Path(path), lambda temporary: torch.save(contents, temporary))

    @classmethod
    def load(cls, path: Path, *, mmap: bool = False) -> "TrainingState":
        """The state saved at `path`; with `mmap`, its tensors stay on disk until used (to see where a
        checkpoint stands without reading a model's and an optimizer's worth of memory)."""
        return cls._from_contents(path, _read(path, mmap=mmap))

    @classmethod
    def _from_contents(cls, path: Path, contents: dict) -> "TrainingState":
        missing = {f.name for f in fields(cls)} - contents.keys() - {"code"}  # no code: written before it was recorded
        if missing:
            raise CheckpointError(f"{path}: not a training checkpoint (no {', '.join(sorted(missing))}); "
                                  f"delete it to train from scratch")
        curves = Curves(**contents["curves"])
        values: dict[str, Any] = {f.name: contents.get(f.name) for f in fields(cls)}
        return cls(**{**values, "curves": curves})


def resume_or_start(path: Path, fingerprint: str, *, quiet: bool = False) -> TrainingState:
    """The unfinished training that `path` holds, if the same configuration (`fingerprint`) wrote it;
    else a fresh state. Says which, unless `quiet` (the processes of a distributed training but one).
    A file that cannot be read, or an unfinished training written by other code, is an error, not a
    silent restart: the message names the commit that wrote it and this one."""
    path = Path(path)
    code = code_version()
    if not path.exists():
        return TrainingState(fingerprint, code=code)
    contents = _read(path)
    if contents.get("complete"):
        if not quiet:
            print(f"{path} is finished: training from scratch", flush=True)
        return TrainingState(fingerprint, code=code)
    written_by = contents.get("code")
    if not isinstance(written_by, dict) or written_by.get("sources") != code["sources"]:
        raise CheckpointError(
            f"{path}: this unfinished training was written by the code of {_describe(written_by)}, and this is "
            f"the code of {_describe(code)}; a checkpoint resumes only under the code that wrote it: check out "
            f"that commit to finish it, or delete the file to train from scratch")
    if contents["fingerprint"] != fingerprint:
        if not quiet:
            print(f"{path} was written by another configuration: training from scratch", flush=True)
        return TrainingState(fingerprint, code=code)
    state = TrainingState._from_contents(path, contents)
    if not quiet:
        print(f"Resumed from checkpoint at iteration {state.iteration}: {path}", flush=True)
    return state


def _read(path: Path, mmap: bool = False) -> dict:
    """The contents of a checkpoint file: a dict with a fingerprint, whatever code wrote it."""
    try:
        contents = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as error:  # torch raises several types for a damaged zip or pickle
        raise CheckpointError(f"{path}: checkpoint cannot be read ({error}); "
                              f"delete it to train from scratch") from error
    if not isinstance(contents, dict) or not isinstance(contents.get("fingerprint"), str):
        raise CheckpointError(f"{path}: not a training checkpoint (it has no fingerprint); "
                              f"delete it to train from scratch")
    return contents


def fingerprint(*parts) -> str:
    """A stable hash of JSON-serialisable `parts` (configuration, data statistics, ...)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


@functools.cache
def code_version() -> dict:
    """What identifies the code running now: `sources`, a hash of this package's Python sources (what
    decides whether a checkpoint may be resumed), and `commit`, the git commit they were checked out at
    ("+" where the package's files differ from it), or None outside a git checkout (an installed wheel)."""
    package = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for source in sorted(package.rglob("*.py")):
        digest.update(str(source.relative_to(package)).encode())
        digest.update(source.read_bytes())
    return {"sources": digest.hexdigest(), "commit": _git_commit(package)}


def _git_commit(folder: Path) -> str | None:
    commit = git_commit(folder)
    if commit is None:  # an installed wheel: no second git call to fail
        return None
    changed = changed_files(folder, inside_folder=True)
    if changed is None:
        return None
    return commit[:12] + ("+" if changed else "")


def _describe(code: dict | None) -> str:
    """A code version in words, for messages."""
    if not isinstance(code, dict):
        return "a version of this package older than the commit records (no code version in the file)"
    sources = f"sources {str(code.get('sources'))[:12]}"
    commit = code.get("commit")
    if commit is None:
        return f"an installed package ({sources})"
    if commit.endswith("+"):
        return f"commit {commit[:-1]} with uncommitted changes ({sources})"
    return f"commit {commit} ({sources})"


def seed_everything(seed: int) -> None:
    """Seed every generator a training draws from outside the loaders: Python's, numpy's and torch's."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _rng_states() -> dict:
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


def _restore_rng_states(states: dict) -> None:
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    numpy_state = states["numpy"]
    np.random.set_state({"bit_generator": "MT19937", "has_gauss": numpy_state["has_gauss"],
                         "gauss": numpy_state["gauss"],
                         "state": {"key": numpy_state["key"].numpy().astype(np.uint32), "pos": numpy_state["pos"]}})
    version, internal, gauss_next = states["python"]
    random.setstate((version, tuple(internal), gauss_next))
