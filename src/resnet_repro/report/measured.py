"""Reading what the train and evaluate stages wrote for one run (variant, seed), and averaging over seeds.

Every file the report needs is checked on reading: a missing file raises FileNotFoundError and a
malformed one DataError, each naming the file (and the key or column) so that the user knows which
stage to re-run.
"""

import csv
import io
import json
import math
import statistics
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from resnet_repro import models
from resnet_repro.data.errors import DataError
from resnet_repro.layout import ERROR_CURVE, EVALUATION, RESPONSES, STEP_CURVE, TRAIN_SUMMARY, Layout
from resnet_repro.train.state import Curves

# The keys the report needs of what the train and evaluate stages write (stages/train.py, stages/evaluate.py).
TRAIN_KEYS = ("iterations", "final_train_error")
RESPONSE_KEYS = ("layer", "std")

# Evaluation views an eval.json may hold, as key infixes: `<split>_<infix>top1_error`.
VIEWS = {"1-crop": "", "10-crop": "ten_crop_", "multi-scale": "multi_scale_"}


@dataclass(frozen=True)
class Run:
    variant: str
    seed: int
    evaluation: dict  # eval.json
    training: dict  # train.json
    curve: dict[str, np.ndarray]  # curve.tsv (layout.STEP_CURVE), one array per column (fractions)
    errors: dict[str, np.ndarray]  # errors.tsv (layout.ERROR_CURVE)
    responses: list[dict]  # responses.json

    @property
    def split(self) -> str:
        """The held-out split evaluated: CIFAR's test set, or an image folder's val/."""
        return "test" if "test_top1_error" in self.evaluation else "val"

    def error(self, view: str, k: int) -> float | None:
        """Top-k error in percent for one view, None if the evaluation did not measure that view."""
        value = self.evaluation.get(f"{self.split}_{VIEWS[view]}top{k}_error")
        return None if value is None else 100 * float(value)


def _missing(path: Path, variant: str, seed: int, stage: str) -> FileNotFoundError:
    return FileNotFoundError(f"{path}: no such file; the report needs it for {variant} seed {seed} "
                             f"(run `dvc repro {stage}@{variant}-{seed}`)")


def read_json(path: Path, variant: str, seed: int, stage: str):
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise _missing(path, variant, seed, stage) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise DataError(f"{path}: not valid JSON ({error})") from None


def _require_keys(path: Path, mapping, keys: tuple[str, ...], where: str = "") -> None:
    if not isinstance(mapping, dict):
        raise DataError(f"{path}{where}: expected a JSON object, got {type(mapping).__name__}")
    for key in keys:
        if key not in mapping:
            raise DataError(f"{path}{where}: key {key!r} is missing")


def read_tsv(path: Path, columns: tuple[str, ...], variant: str, seed: int) -> dict[str, np.ndarray]:
    """The numeric columns of a tab-separated file with a header row; empty cells are NaN."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise _missing(path, variant, seed, "train") from None
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter="\t")
    header = reader.fieldnames or []
    for column in columns:
        if column not in header:
            raise DataError(f"{path}: column {column!r} is missing (header: {header})")
    values: dict[str, list[float]] = {column: [] for column in header}
    for line, row in enumerate(reader, start=2):
        for column in header:
            cell = row.get(column)
            try:
                values[column].append(float(cell) if cell not in (None, "") else math.nan)
            except ValueError:
                raise DataError(f"{path}: line {line}, column {column!r}: {cell!r} is not a number") from None
    return {column: np.asarray(cells, dtype=float) for column, cells in values.items()}


def read_run(layout: Layout, variant: str, seed: int) -> Run:
    directory = layout.metrics_dir(variant, seed)
    evaluation = read_json(directory / EVALUATION, variant, seed, "evaluate")
    _require_keys(directory / EVALUATION, evaluation, ())
    if "test_top1_error" not in evaluation and "val_top1_error" not in evaluation:
        raise DataError(f"{directory / EVALUATION}: neither 'test_top1_error' nor 'val_top1_error' is present")
    training = read_json(directory / TRAIN_SUMMARY, variant, seed, "train")
    _require_keys(directory / TRAIN_SUMMARY, training, TRAIN_KEYS)
    responses = read_json(directory / RESPONSES, variant, seed, "evaluate")
    if not isinstance(responses, list) or not responses:
        raise DataError(f"{directory / RESPONSES}: expected a non-empty list of layers")
    for index, row in enumerate(responses):
        _require_keys(directory / RESPONSES, row, RESPONSE_KEYS, f" [{index}]")
    return Run(variant=variant, seed=seed, evaluation=evaluation, training=training,
               curve=read_tsv(directory / STEP_CURVE, Curves.STEP_COLUMNS, variant, seed),
               errors=read_tsv(directory / ERROR_CURVE, Curves.ERROR_COLUMNS, variant, seed),
               responses=sorted(responses, key=lambda row: row["layer"]))


# --- averaging over seeds ----------------------------------------------------------------------------

def mean_std(values: list[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (n - 1); the std is None for a single seed."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None


def mean_curve(curves: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """The mean over seeds of (step, value) curves, on the steps every seed logged.

    Seeds log the same steps except where a timed checkpoint added one; should they share fewer than
    two steps (different logging settings), each is interpolated onto the first seed's steps.
    """
    curves = [(steps[np.isfinite(values)], values[np.isfinite(values)]) for steps, values in curves]
    common = curves[0][0]
    for steps, _ in curves[1:]:
        common = np.intersect1d(common, steps)
    if len(common) < 2 and len(curves) > 1 and all(len(steps) for steps, _ in curves):
        low = max(steps.min() for steps, _ in curves)
        high = min(steps.max() for steps, _ in curves)
        common = curves[0][0][(curves[0][0] >= low) & (curves[0][0] <= high)]
    if not len(common) or not all(len(steps) for steps, _ in curves):
        return np.asarray([], dtype=float), np.asarray([], dtype=float)
    return common, np.mean([np.interp(common, steps, values) for steps, values in curves], axis=0)


def mean_responses(runs: list[Run]) -> np.ndarray:
    """Std of each layer's responses, averaged over seeds (every seed has the same layers)."""
    lengths = {len(run.responses) for run in runs}
    if len(lengths) > 1:
        raise DataError(f"responses.json of {runs[0].variant} lists {sorted(lengths)} layers across seeds")
    return np.mean([[float(row["std"]) for row in run.responses] for run in runs], axis=0)


# --- names --------------------------------------------------------------------------------------------

def label(variant: str) -> str:
    """The paper's spelling of a net: plain-20, ResNet-20, ResNet-34 C, pre-act ResNet-110; and for an
    ImageNet net with the CIFAR stem (`resnet18-cifar`, not in the paper), ResNet-18 (CIFAR stem)."""
    s = models.spec(variant)
    cifar_stem = s.dataset == "cifar10" and s.imagenet_stages
    stem = " (CIFAR stem)" if cifar_stem else ""
    if s.family == "plain":
        return f"plain-{s.depth}{stem}"
    prefix = "pre-act ResNet" if s.family == "preact" else "ResNet"
    # The canonical name carries a suffix exactly when the shortcut is not the default one.
    name = s.name.removesuffix("-cifar") if cifar_stem else s.name
    suffix = f" {s.shortcut}" if name[-2:] in ("-a", "-b", "-c") else ""
    return f"{prefix}-{s.depth}{suffix}{stem}"


def sort_key(variant: str) -> tuple:
    s = models.spec(variant)
    return ({"plain": 0, "residual": 1, "preact": 2}[s.family], s.depth, s.shortcut or "")
