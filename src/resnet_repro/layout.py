"""Where each stage reads and writes: the one home of the pipeline's paths and file names, which
dvc.yaml spells too.

    layout.prepared_dir / STATS              # data/prepared/cifar10/stats.json
    layout.metrics_dir("resnet20", 0) / EVALUATION   # metrics/resnet20/seed0/eval.json

A stage that fills a directory at once (io.staged_directory) writes the same names into its temporary one.
"""

import os
from pathlib import Path

import yaml

CHECKPOINTS_ENV = "RESNET_REPRO_CHECKPOINTS"

# prepare, in prepared_dir: the statistics of the training split, what was prepared (class names, split
# sizes), and an image folder's unreadable files. (The splits' own files are data.prepared's and
# data.imagefolder's to name.)
STATS, META, SKIPPED = "stats.json", "meta.json", "skipped.json"
# train, in metrics_dir: its summary (numbers only), a row per log step and a row per evaluation (DVC plots).
TRAIN_SUMMARY, STEP_CURVE, ERROR_CURVE = "train.json", "curve.tsv", "errors.tsv"
# Which net and which MLflow run a training was (not a DVC metric: names and ids).
TRAINING_RUN = "run.json"
# evaluate, in metrics_dir: the held-out errors (numbers only; reports/metrics.json gathers them), Figure 7's layer responses (a DVC plot).
EVALUATION, RESPONSES = "eval.json", "responses.json"
# register, in metrics_dir: the registered model version.
REGISTRATION = "registry.json"
# report, in reports_dir: the study's tables, the same as JSON, its numbers alone (a DVC metric), its figures.
STUDY_TABLE, STUDY_JSON, STUDY_METRICS, FIGURES = "study.md", "study.json", "metrics.json", "figures"
# report, in reports_dir/FIGURES: Figure 6's curves and Figure 7's layer responses.
TRAINING_CURVES, LAYER_RESPONSES = "training_curves.png", "layer_responses.png"
# The trained net's own files (model.json, the weights, the mean image) are named by models/weights.py,
# which the published nets share; artifacts.py writes them into model_dir.


def beton(split: str) -> str:
    """The ffcv stage's file of `split`, in ffcv_dir."""
    return f"{split}.beton"


class Layout:
    """Where each stage reads and writes, relative to the project root (the directory of params.yaml).

    dvc.yaml spells the same paths; tests/test_config.py checks the two agree.
    """

    def __init__(self, root: Path | str = ".", dataset: str = "cifar10"):
        self.root = Path(root).resolve()
        self.dataset = dataset

    @property
    def raw_dir(self) -> Path:
        return self.root / "data" / "raw"

    @property
    def prepared_dir(self) -> Path:
        return self.root / "data" / "prepared" / self.dataset

    @property
    def ffcv_dir(self) -> Path:
        return self.root / "data" / "ffcv" / self.dataset

    def run_name(self, variant: str, seed: int) -> str:
        return f"{variant}/seed{seed}"

    def model_dir(self, variant: str, seed: int) -> Path:
        return self.root / "models" / self.run_name(variant, seed)

    @property
    def checkpoints_dir(self) -> Path:
        """Not a DVC output (DVC keeps no run-cache entry for a stage with a persisted output): a
        preempted training finds its checkpoint here. RESNET_REPRO_CHECKPOINTS moves it, e.g. to storage
        that every node of a cluster shares (`resnet-repro study run`)."""
        return Path(os.environ.get(CHECKPOINTS_ENV) or self.root / "checkpoints")

    def checkpoint_path(self, variant: str, seed: int) -> Path:
        return self.checkpoints_dir / self.run_name(variant, seed) / "checkpoint.pt"

    def metrics_dir(self, variant: str, seed: int) -> Path:
        return self.root / "metrics" / self.run_name(variant, seed)

    @property
    def reports_dir(self) -> Path:
        return self.root / "reports"

    def data_version(self) -> str | None:
        """DVC's hash of the FFCV datasets (from dvc.lock), the data version models are tagged with."""
        lock = self.root / "dvc.lock"
        if not lock.exists():
            return None
        stages = (yaml.safe_load(lock.read_text()) or {}).get("stages", {})
        outs = stages.get("ffcv", {}).get("outs", [])
        return outs[0].get("md5") if outs else None
