"""Publish one trained net of a project as a results folder: weights, metrics, curves, a figure, a README.

    python scripts/publish_result.py --project . --variant resnet20 --seed 0 --out results/cifar10-resnet20

PROJECT is a directory where `dvc repro train@VARIANT-SEED evaluate@VARIANT-SEED` ran. The folder gets
model.safetensors, preprocess.safetensors and model.json (as the train stage wrote them), train.json,
eval.json, curve.tsv, errors.tsv and responses.json, first1000.json (the error on the first 1,000 test
images, which tests/test_published.py checks the published weights against), errors.png (training and test error against
iterations, as Figure 6 draws them) and README.md: the command, the commit, the machine, the wall time,
images/s, the test error beside the paper's and the iterations at which it first fell below 10% and 9%.
The folder is written under a temporary name and swapped in whole. Printed: the sha256 of each weights
file and the folder's entry for PUBLISHED in `src/resnet_repro/models/weights.py` (`--weights NAME`, by
default the dataset's name, is what `build(VARIANT, weights=NAME)` will say): add that line there, and the
net loads by name from a checkout and, once the folder is pushed, from an installed package.

A run that went on over several sessions (resumed from its checkpoint, perhaps on other machines or in
another precision, perhaps paused) gives its segments with --segments FILE: a tab-separated table with
the header `machine precision first_iteration last_iteration seconds`, one row per segment, `seconds`
the time it trained (not paused), taken from its logs. The README then gives each segment's machine,
precision and images/s, and their sum as the wall time, in place of train.json's (which counts
paused time). The table is kept in the folder as segments.tsv.

--note FILE adds a Markdown paragraph (what a reader should know about the result, such as why it misses
the paper) after the README's first paragraph; the folder keeps it as note.md. Re-publishing a folder
with the same result passes both back: `--segments OUT/segments.tsv --note OUT/note.md`.
"""

import argparse
import csv
import json
import os
import platform
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from resnet_repro import models
from resnet_repro.artifacts import load_trained
from resnet_repro.config import ConfigError, load_params
from resnet_repro.data import cifar10
from resnet_repro.data.normalize import normalize
from resnet_repro.io import file_sha256, staged_directory, write_json
from resnet_repro.layout import Layout
from resnet_repro.report.figures import training_curves
from resnet_repro.report.measured import read_run
from resnet_repro.report.paper import CIFAR10

MODEL_FILES = ("model.safetensors", "preprocess.safetensors", "model.json")
REPOSITORY_RESULTS = Path(__file__).resolve().parents[1] / "results"
METRICS_FILES = ("train.json", "eval.json", "curve.tsv", "errors.tsv", "responses.json")
THRESHOLDS = (0.10, 0.09)
CHECK_IMAGES = 1000


def error_on_first_test_images(model_dir: Path, archive: Path, count: int) -> float:
    """Top-1 error of the saved net on the first `count` test images of the archive, float32 on the CPU."""
    import torch

    trained = load_trained(model_dir, "cpu")
    arrays = cifar10.load_archive(archive)
    images = torch.from_numpy(arrays.test_images[:count]).permute(0, 3, 1, 2)
    with torch.no_grad():
        predicted = trained.module(normalize(images, trained.mean_image)).argmax(dim=1).numpy()
    return float((predicted != arrays.test_labels[:count]).mean())


def first_step_below(steps: np.ndarray, errors: np.ndarray, threshold: float) -> int | None:
    below = np.flatnonzero(errors < threshold)
    return int(steps[below[0]]) if len(below) else None


def machine() -> str:
    import torch

    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name()} (CUDA)"
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        text = cpuinfo.read_text()
        names = [line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")]
        cpu = names[0] if names else cpu
        flags = set(text.split())
        units = [name for flag, name in (("avx512_bf16", "AVX512-BF16"), ("amx_bf16", "AMX")) if flag in flags]
        cpu += f", {'with ' + ' and '.join(units) if units else 'no bf16 units'}"
    return f"{os.cpu_count()}-core {cpu}, no GPU"


@dataclass(frozen=True)
class Segment:
    machine: str
    precision: str
    first_iteration: int
    last_iteration: int
    seconds: float

    def images_per_second(self, batch_size: int) -> float:
        return (self.last_iteration - self.first_iteration) * batch_size / self.seconds


SEGMENT_COLUMNS = ["machine", "precision", "first_iteration", "last_iteration", "seconds"]


def read_segments(path: Path, iterations: int) -> list[Segment]:
    """The segments of --segments, which must cover iterations 0 to `iterations` end to end."""
    with open(path, newline="") as file:
        rows = list(csv.reader(file, delimiter="\t"))
    if not rows or rows[0] != SEGMENT_COLUMNS:
        raise ValueError(f"{path}: the first line must be the tab-separated header {' '.join(SEGMENT_COLUMNS)}")
    segments, reached = [], 0
    for line, row in enumerate(rows[1:], start=2):
        try:
            machine, precision, first, last, seconds = row
            segment = Segment(machine, precision, int(first), int(last), float(seconds))
        except ValueError:
            raise ValueError(f"{path}, line {line}: expected {len(SEGMENT_COLUMNS)} tab-separated fields "
                             f"({', '.join(SEGMENT_COLUMNS)}), integers and seconds; got {row}") from None
        if segment.first_iteration != reached or segment.last_iteration <= reached or segment.seconds <= 0:
            raise ValueError(f"{path}, line {line}: the segment must start at iteration {reached}, where the last "
                             f"one ended, end after it and take a positive time; got {row}")
        segments.append(segment)
        reached = segment.last_iteration
    if reached != iterations:
        raise ValueError(f"{path}: the segments end at iteration {reached}, but the run trained {iterations}")
    return segments


def timing_lines(training: dict, batch_size: int, segments: list[Segment] | None) -> list[str]:
    """The README's machine, precision, wall time and images/s: one run's, or each segment's."""
    if not segments:
        return [f"| machine | {machine()} |",
                f"| wall time | {training['train_seconds'] / 3600:.2f} h of training |",
                f"| images/s | {training['images_per_second']:.0f} (training, mean) |"]
    rows = [f"{s.first_iteration:,} to {s.last_iteration:,}: {s.machine}, {s.precision}, "
            f"{s.images_per_second(batch_size):.0f} images/s, {s.seconds / 3600:.2f} h" for s in segments]
    total = sum(s.seconds for s in segments)
    return [f"| segments (resumed from the checkpoint) | {'<br>'.join(rows)} |",
            f"| wall time | {total / 3600:.2f} h of training (the segments' sum; pauses not counted) |",
            f"| images/s | {training['iterations'] * batch_size / total:.0f} (training, mean over the segments) |"]


def mlflow_run_id(layout: Layout, variant: str, seed: int, training: dict) -> str:
    """The training's MLflow run: run.json holds it; projects trained before run.json existed (the Figure 6
    study at 8k iterations was trained by such code) kept it in train.json."""
    path = layout.metrics_dir(variant, seed) / "run.json"
    return json.loads(path.read_text())["mlflow_run_id"] if path.exists() else training["mlflow_run_id"]


def training_run(project: Path, run_id: str) -> tuple[dict, dict]:
    """The params and tags of the MLflow run that trained the net (precision, device, git commit)."""
    from mlflow import MlflowClient

    database = project / "mlflow.db"
    if not database.exists():
        return {}, {}
    found = MlflowClient(f"sqlite:///{database}").get_run(run_id)
    return found.data.params, found.data.tags


def readme(variant: str, seed: int, training: dict, evaluation: dict, steps: dict[float, int | None],
           params: dict, tags: dict, sha256: dict[str, str], batch_size: int, segments: list[Segment] | None,
           note: str | None) -> str:
    test_error = 100 * evaluation["test_top1_error"]
    paper = CIFAR10.get(models.spec(variant).depth)
    precision = tags.get("precision") or params.get("precision") or "not recorded"
    below = " and ".join(f"first fell below {100 * t:.0f}% at iteration {s:,}" if s is not None
                         else f"never fell below {100 * t:.0f}%" for t, s in steps.items())
    lines = [
        f"# CIFAR-10 {variant}, seed {seed}, at full length", "",
        f"Test error **{test_error:.2f}%** on the 10,000 test images (one view each, float32), "
        + (f"against the paper's {paper.resnet_test_error}% (Table 6). " if paper and paper.resnet_test_error else "")
        + f"The test error, measured every `train.eval_every` iterations, {below}.", "",
        *([note.strip(), ""] if note else []),
        "| | |", "|---|---|",
        f"| command | `dvc repro train@{variant}-{seed} evaluate@{variant}-{seed}` |",
        f"| commit | `{tags.get('git_commit', 'not recorded')}` |",
        f"| iterations | {training['iterations']:,} (batch {batch_size}) |",
        f"| precision | {precision} (`train.precision: {params.get('train.precision', '?')}`) |",
        *timing_lines(training, batch_size, segments),
        f"| final training error | {100 * training['final_train_error']:.2f}% |", "",
        ("Files: `model.safetensors`, `preprocess.safetensors` (the per-pixel mean the net subtracts) and "
        "`model.json` load with `resnet_repro.artifacts.load_trained(this_folder)`; `train.json`, `eval.json`, "
        "`curve.tsv` (loss and training error), `errors.tsv` (test error every `train.eval_every` iterations), "
        "`responses.json` (Figure 7) are the stages' own outputs; `errors.png` draws the curves as Figure 6 does."), "",
        "sha256:", "",
        *[f"- `{name}`: `{digest}`" for name, digest in sha256.items()], "",
    ]
    return "\n".join(lines)


def weights_entry(model: str, name: str, folder: str, recipe: str, commit: str, directory: Path) -> str:
    """The entry of `resnet_repro.models.weights.PUBLISHED` for the net published in `directory`: Python lines
    to paste there as they are (indented as the entries are)."""
    evaluation = json.loads((directory / "eval.json").read_text())
    training = json.loads((directory / "train.json").read_text())
    return (f'    Weights("{model}", "{name}", "{folder}", recipe="{recipe}", commit="{commit}",\n'
            f'            test_top1_error={evaluation["test_top1_error"]!r}, parameters={training["parameters"]},\n'
            f'            sha256="{file_sha256(directory / "model.json")}"),\n')


def results_folder(out: Path) -> str:
    """`out`'s path under the repository's results/ (which the weights' URLs follow), else its name."""
    try:
        return out.resolve().relative_to(REPOSITORY_RESULTS).as_posix()
    except ValueError:
        return out.name


def read_note(path: Path) -> str:
    note = path.read_text()
    if not note.strip():
        raise ValueError(f"{path}: the note is empty; leave out --note for a README without one")
    return note


def publish(project: Path, variant: str, seed: int, out: Path, segments_file: Path | None = None,
            note_file: Path | None = None, weights_name: str | None = None) -> dict:
    """Write the folder; returns the sha256 of its model files and its entry for models.weights.PUBLISHED."""
    layout = Layout(project)
    model_dir, metrics_dir = layout.model_dir(variant, seed), layout.metrics_dir(variant, seed)
    sources = [model_dir / name for name in MODEL_FILES] + [metrics_dir / name for name in METRICS_FILES]
    missing = [str(path) for path in sources if not path.exists()]
    if missing:
        raise FileNotFoundError(f"not found: {', '.join(missing)}; run `dvc repro train@{variant}-{seed} "
                                f"evaluate@{variant}-{seed}` in {project} first")
    try:
        params = load_params(project / "params.yaml")
    except ConfigError as error:
        if "required key is missing" not in str(error):
            raise
        # Keys are added as the project grows (study.seed_spread came after the 8k study had trained).
        raise ConfigError(f"{error}: the project was written by an older version of resnet-repro; add the "
                          f"missing key with its value in this repository's params.yaml and run again") from None
    run = read_run(layout, variant, seed)
    segments = read_segments(segments_file, run.training["iterations"]) if segments_file else None
    note = read_note(note_file) if note_file else None
    archive = cifar10.fetch_archive(params.data.archive, layout.raw_dir)
    # Loading refuses weights this code cannot rebuild, before anything is written.
    first_images_error = error_on_first_test_images(model_dir, archive, CHECK_IMAGES)
    steps = {t: first_step_below(run.errors["step"], run.errors["test_error"], t) for t in THRESHOLDS}
    run_params, tags = training_run(project, mlflow_run_id(layout, variant, seed, run.training))
    with staged_directory(out) as directory:
        for source in sources:
            shutil.copy2(source, directory / source.name)
        sha256 = {name: file_sha256(directory / name) for name in MODEL_FILES}
        write_json(directory / "first1000.json", {"test_images": f"the first {CHECK_IMAGES}",
                                                   "test_top1_error": first_images_error})
        training_curves({variant: [run]}, "cifar10", directory / "errors.png")
        # staged_directory swaps `out` only at the end, so these may be the files of the folder being replaced.
        if segments_file:
            shutil.copy2(segments_file, directory / "segments.tsv")
        if note:
            (directory / "note.md").write_text(note)
        (directory / "README.md").write_text(readme(variant, seed, run.training, run.evaluation, steps, run_params,
                                                    tags, sha256, params.train.batch_size, segments, note))
        entry = weights_entry(models.spec(variant).name, weights_name or params.data.dataset, results_folder(out),
                              params.study.name, tags["git_commit"][:12] if tags.get("git_commit") else "not recorded",
                              directory)
    return {"sha256": sha256, "weights_entry": entry}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--project", type=Path, default=Path("."), help="where the stages ran (default: .)")
    parser.add_argument("--variant", required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True, help="the results folder to write")
    parser.add_argument("--segments", type=Path, metavar="FILE",
                        help="a run trained in several segments: their machines, precisions and times (see above)")
    parser.add_argument("--note", type=Path, metavar="FILE",
                        help="a Markdown paragraph for the README, after its first paragraph (see above)")
    parser.add_argument("--weights", metavar="NAME",
                        help="what build(VARIANT, weights=NAME) will call it (default: the dataset's name)")
    args = parser.parse_args()
    try:
        published = publish(args.project.resolve(), args.variant, args.seed, args.out, args.segments, args.note,
                            args.weights)
    except (FileNotFoundError, ValueError) as error:
        sys.exit(f"publish_result: error: {error}")
    print(json.dumps({"out": str(args.out), **published}, indent=2))
    print(f"Add to PUBLISHED in src/resnet_repro/models/weights.py:\n{published['weights_entry']}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
