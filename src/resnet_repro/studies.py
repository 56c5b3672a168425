"""The paper's studies as data: which nets each trains, on what data, with which recipe.

    resnet-repro study list
    resnet-repro study select cifar-depth      # writes study.* (and the study's settings) into params.yaml
    dvc repro                                  # the DVC matrix reads study.variants: exactly those nets

A study's `settings` are the params it needs beyond its variants (the CIFAR studies restore the paper's
recipe, the CPU study sets its small scale, the ImageNet studies switch to an image folder), so a
selection never inherits the scale of the study selected before it. Seeds are the user's choice and are
kept unless `--seeds` is given.
"""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from resnet_repro.config import load_params, update_params_file
from resnet_repro.train.recipe import recipe_settings

# A study's claims are judged against the spread between seeds at its own scale (report/claims.py); a
# study that sets none measures it with several seeds, or leaves its claims untested with one.
_NOT_QUOTED: dict[str, Any] = {"source": None, "iterations": None, "test_error_std": {}}
_NO_SEED_SPREAD: dict[str, Any] = {"study.seed_spread": {"iterations": None, "subset": None, "seeds": None, "margins": {},
                                         "quoted": _NOT_QUOTED}}
# Each net's std of test error over five runs of the paper's CIFAR-10 recipe (64k iterations, all 50k
# training images) by a public reproduction, quoted (docs/studies.md, "Quoted spreads"): where no spread
# was measured, a one-seed study at that length judges its test-error claims against it.
_QUOTED: dict[str, Any] = {
    "source": "a public reproduction of the CIFAR-10 recipe of the paper, five runs per net, each scored once at the end",
    "iterations": 64000,
    "test_error_std": {"plain20": 0.13, "plain56": 0.22, "resnet20": 0.22, "resnet56": 0.27, "resnet110": 0.20}}
_QUOTED_CIFAR_SPREAD: dict[str, Any] = {"study.seed_spread": {
    "iterations": None, "subset": None, "seeds": None, "margins": {}, "quoted": _QUOTED}}

# The paper's CIFAR-10 setting (Section 4.2): the cifar recipe (64k iterations, lr /10 at 32k and 48k,
# warm-up for 110 layers). The paper chose that schedule on a 45k/5k split, then trained the nets of
# Table 6 on all 50k training images; so do we (data.val_size 0), and test on the 10k test images.
_CIFAR_PAPER = {
    **recipe_settings("cifar"), "data.dataset": "cifar10", "data.subset": None, "data.val_size": 0,
    "evaluate.views": ["center"], "train.checkpoint_every": 500, "train.log_every": 20,
    "train.linear_warmup_iterations": 0, "mlflow.experiment": "resnet-repro-cifar10", **_QUOTED_CIFAR_SPREAD,
}
# Not the paper's: the recipe PyTorch users train ImageNet's ResNet-18 with a CIFAR stem with (train/recipe.py's
# cifar-cosine: 200 epochs, cosine lr, weight decay 5e-4), on the paper's data and augmentation.
_CIFAR_COSINE = {**_CIFAR_PAPER, **recipe_settings("cifar-cosine"), "augment.crop_padding": 4, "augment.flip": True,
                 **_NO_SEED_SPREAD}
# The paper's ImageNet setting (Section 3.4) on an image folder (data.root): the imagenet recipe
# (batch 256, lr 0.1 /10 on plateaus of the validation error, 60e4 iterations), scale augmentation,
# PCA lighting, 10-crop and multi-scale testing.
_IMAGENET_PAPER = {
    **recipe_settings("imagenet"), "data.dataset": "imagefolder", "data.val_size": 0, "data.subset": None,
    "augment.crop_size": 224, "augment.scale_range": [256, 480], "augment.eval_resize": 256,
    "augment.lighting_std": 0.1, "evaluate.views": ["center", "ten_crop", "multi_scale"],
    "train.linear_warmup_iterations": 0, "mlflow.experiment": "resnet-repro-imagenet", **_NO_SEED_SPREAD,
}


@dataclass(frozen=True)
class Study:
    name: str
    description: str  # what it reproduces, and where in the paper
    variants: list[str]
    settings: dict[str, Any] = field(default_factory=dict)  # dotted params key -> value


STUDIES = {study.name: study for study in [
    Study("cifar-paper", "Figure 6 and Table 6: plain-20/32/44/56 against ResNet-20/32/44/56/110 (the default)",
          ["plain20", "plain32", "plain44", "plain56", "resnet20", "resnet32", "resnet44", "resnet56", "resnet110"],
          _CIFAR_PAPER),
    Study("cifar-depth", "Table 6: ResNet-20/32/44/56/110 on CIFAR-10",
          ["resnet20", "resnet32", "resnet44", "resnet56", "resnet110"], _CIFAR_PAPER),
    Study("cifar-plain-vs-residual", "Figure 6: plain and residual nets of 20-56 layers, and plain-110 (fails)",
          ["plain20", "plain32", "plain44", "plain56", "plain110", "resnet20", "resnet32", "resnet44", "resnet56"],
          _CIFAR_PAPER),
    Study("cifar-1202", "Table 6 and Figure 6 (right): ResNet-1202, which overfits", ["resnet1202"], _CIFAR_PAPER),
    Study("cifar-degradation-cpu",
          "The README's main job: degradation and its cure at CPU scale (plain-20/56, ResNet-20/56, 400 iterations)",
          ["plain20", "plain56", "resnet20", "resnet56"],
          # An eighth of an epoch per 50 iterations: 400 iterations of batch 128 are one pass over the 50k
          # training images. Every net's lr ramps up linearly over the first 40: at 0.1 from the first step
          # ResNet-56 sits at chance for about 175 iterations (as the public reproduction's own ResNet-56 does
          # on the same batches), which at this length would hide the cure. The lr drops at 1/2 and 3/4.
          {**_CIFAR_PAPER, "train.iterations": 400, "train.milestones": [200, 300], "train.eval_every": 100,
           "train.linear_warmup_iterations": 40, "train.checkpoint_every": 100, "train.log_every": 10,
           "mlflow.experiment": "resnet-repro-cifar10-cpu",
           # Measured on 2026-12-06 (2-core AMD EPYC, bf16) at commit 228e7fb: this study with seeds 0, 1
           # and 2 (`dvc exp run -S 'study.seeds=[0,1,2]'` after the main job), reports/study.json's spread of
           # each claim's per-seed margins. The main job's one seed is judged against it.
           "study.seed_spread": {"iterations": 400, "subset": None, "seeds": 3,
                                 "margins": {"C1": 4.77, "C2": 3.57, "C3": 5.31, "C4": 4.20, "C5": 0.88},
                                 # Inert at 400 iterations; kept so that the main job's experiment changes
                                 # only the params of its scale (dvc params diff, dvc exp show).
                                 "quoted": _QUOTED}}),
    Study("cifar-figure6-8k",
          "Figure 6 at an eighth of the schedule: plain-20/56 and ResNet-20/56, 8k iterations (lr /10 at 4k and 6k)",
          ["plain20", "plain56", "resnet20", "resnet56"],
          # The paper's recipe and data (all 50k training images), the schedule divided by eight; the test
          # error every 250 iterations draws curves as dense as Figure 6's.
          {**_CIFAR_PAPER, "train.iterations": 8000, "train.milestones": [4000, 6000], "train.eval_every": 250,
           **_NO_SEED_SPREAD}),
    Study("cifar-figure6",
          "Figure 6 and Table 6's depth claim at the paper's length: plain-20/56 and ResNet-20/56, 64k iterations",
          ["plain20", "plain56", "resnet20", "resnet56"],
          # The paper's recipe and data, as cifar-paper trains them, for the four nets Figure 6's claims
          # compare; the test error every 1,000 iterations draws curves as dense as Figure 6's.
          {**_CIFAR_PAPER, "train.eval_every": 1000}),
    Study("cifar-resnet18",
          "Not in the paper: ImageNet's ResNet-18 with a 3x3 stem, as PyTorch users train it on CIFAR-10 (cosine lr, "
          "200 epochs), and its plain twin", ["plain18-cifar", "resnet18-cifar"], _CIFAR_COSINE),
    Study("imagenet-plain-vs-residual", "Table 2 and Figure 4: plain-18/34 against ResNet-18/34 (option A)",
          ["plain18", "plain34", "resnet18-a", "resnet34-a"], _IMAGENET_PAPER),
    Study("imagenet-shortcuts", "Table 3: ResNet-34 with shortcut options A, B and C",
          ["resnet34-a", "resnet34", "resnet34-c"], _IMAGENET_PAPER),
    Study("imagenet-depth", "Tables 3 and 4: bottleneck ResNet-50/101/152", ["resnet50", "resnet101", "resnet152"],
          _IMAGENET_PAPER),
]}


def lookup(name: str) -> Study:
    if name not in STUDIES:
        raise LookupError(f"no study named {name!r}; the studies are: {', '.join(STUDIES)}")
    return STUDIES[name]


def select(name: str, params_path: Path, seeds: list[int] | None = None, root: Path | None = None) -> dict[str, Any]:
    """Write the study's name, variants and settings (and `seeds`, and for image folders `root`, if
    given) into `params_path`; returns the values set, dotted key -> value. The file is validated before
    it is replaced, so a refused selection leaves it as it was."""
    study = lookup(name)
    changes = {"study.name": study.name, "study.variants": study.variants, **study.settings}
    if seeds is not None:
        changes["study.seeds"] = seeds
    if root is not None:
        changes["data.root"] = str(root)
    elif study.settings.get("data.dataset") == "imagefolder" and load_params(params_path).data.root is None:
        raise ValueError(f"study {name!r} trains on an ImageNet-style folder and {params_path} has no data.root: "
                         f"pass --root DIR (DIR/train/<wnid>/*, DIR/val/<wnid>/*)")
    update_params_file(params_path, changes)
    return changes
