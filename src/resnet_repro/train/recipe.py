"""The paper's training recipes, as data, and the learning-rate schedule they drive.

CIFAR-10 (Section 4.2): batch 128, lr 0.1, divided by 10 at 32k and 48k iterations, stop at 64k. The
deepest nets (110 and 1202 layers) first train at 0.01 "until the training error is below 80% (about
400 iterations)" and then go back to 0.1.
ImageNet (Section 3.4): batch 256, lr 0.1, "divided by 10 when the error plateaus", up to 60e4
iterations, weight decay 1e-4, momentum 0.9.

`resnet-repro recipe select NAME` writes one into params.yaml's train section, where every value then
lives (and `dvc exp run -S train.lr=0.05` changes one). The paper does not say how a plateau is detected: here
the validation error, measured every eval_every iterations, has plateaued when it has not improved by
`plateau_threshold` for `plateau_patience` measurements in a row. Not the paper's: an optional linear
ramp of the lr over the first `linear_warmup_iterations` (Goyal et al. 2017's gradual warm-up), which
short CPU-scale runs of deep nets need (README, "The degradation effect on a CPU"). Because the
warm-up and the plateau decays end on measured conditions, not at fixed iterations, the schedule is a
small object with state that the checkpoint saves and restores.
"""

import math
from dataclasses import asdict, dataclass

# Every key of params.yaml's train section that a recipe decides. `resnet-repro recipe select NAME`
# (and `resnet-repro study select`) writes them into params.yaml; from then on the file is the truth.
RECIPES: dict[str, dict] = {
    "cifar": {"iterations": 64_000, "batch_size": 128, "lr": 0.1, "momentum": 0.9, "weight_decay": 1e-4,
              "schedule": "steps", "milestones": [32_000, 48_000], "lr_decay": 0.1, "eval_every": 2000,
              # ResNet-110 (and deeper) first trains at 0.01 until the training error is below 80%.
              "warmup_min_depth": 110, "warmup_lr": 0.01, "warmup_until_error": 0.8, "warmup_max_iterations": 4000,
              "linear_warmup_iterations": 0, "plateau_patience": 5, "plateau_threshold": 0.002},
    # About one evaluation per epoch of ImageNet's 1.28M images; no warm-up.
    "imagenet": {"iterations": 600_000, "batch_size": 256, "lr": 0.1, "momentum": 0.9, "weight_decay": 1e-4,
                 "schedule": "plateau", "milestones": [], "lr_decay": 0.1, "eval_every": 5000,
                 "warmup_min_depth": 110, "warmup_lr": 0.01, "warmup_until_error": 0.8, "warmup_max_iterations": 0,
                 "linear_warmup_iterations": 0, "plateau_patience": 5, "plateau_threshold": 0.002},
}


def recipe_settings(name: str) -> dict:
    """The recipe as dotted params keys ({"train.lr": 0.1, ...}), ready for config.update_params_file."""
    if name not in RECIPES:
        raise LookupError(f"no recipe named {name!r}; the recipes are: {', '.join(RECIPES)}")
    return {f"train.{key}": value for key, value in RECIPES[name].items()}


@dataclass
class PaperSchedule:
    base_lr: float
    milestones: list[int]
    decay: float
    warmup_lr: float | None = None  # None: no warm-up
    warmup_until_error: float = 0.8
    warmup_max_iterations: int = 4000
    linear_warmup_iterations: int = 0  # 0: none (the paper)
    warming_up: bool = False
    plateau: bool = False  # also divide by 1/decay when the validation error plateaus
    plateau_patience: int = 5
    plateau_threshold: float = 0.002
    best_error: float = math.inf
    measurements_since_best: int = 0
    plateau_decays: int = 0

    def __post_init__(self) -> None:
        self.warming_up = self.warming_up or self.warmup_lr is not None

    def lr(self, iteration: int) -> float:
        if self.warming_up:
            return self.warmup_lr
        passed = sum(iteration >= milestone for milestone in self.milestones)
        lr = self.base_lr * self.decay ** (passed + self.plateau_decays)
        if iteration < self.linear_warmup_iterations:
            lr *= (iteration + 1) / self.linear_warmup_iterations
        return lr

    def observe(self, iteration: int, train_error: float) -> bool:
        """Feed the running training error; returns True at the moment the warm-up ends."""
        if self.warming_up and (train_error < self.warmup_until_error or iteration >= self.warmup_max_iterations):
            self.warming_up = False
            return True
        return False

    def observe_validation(self, iteration: int, error: float) -> bool:
        """Feed the validation error (every eval_every); returns True when it decays the lr on a plateau."""
        if not self.plateau:
            return False
        if error < self.best_error - self.plateau_threshold:
            self.best_error, self.measurements_since_best = error, 0
            return False
        self.measurements_since_best += 1
        if self.measurements_since_best < self.plateau_patience:
            return False
        # The new lr gets `patience` measurements of its own before it can be judged a plateau.
        self.plateau_decays += 1
        self.best_error, self.measurements_since_best = error, 0
        return True

    def state_dict(self) -> dict:
        return asdict(self)

    def load_state_dict(self, state: dict) -> None:
        for key, value in state.items():
            setattr(self, key, value)


def schedule_for(train_params, depth: int) -> PaperSchedule:
    """The schedule of `train_params` (config.TrainParams) for a net of `depth` layers."""
    needs_warmup = depth >= train_params.warmup_min_depth and train_params.warmup_max_iterations > 0
    return PaperSchedule(
        base_lr=train_params.lr,
        milestones=list(train_params.milestones),
        decay=train_params.lr_decay,
        warmup_lr=train_params.warmup_lr if needs_warmup else None,
        warmup_until_error=train_params.warmup_until_error,
        warmup_max_iterations=train_params.warmup_max_iterations,
        linear_warmup_iterations=train_params.linear_warmup_iterations,
        plateau=train_params.schedule == "plateau",
        plateau_patience=train_params.plateau_patience,
        plateau_threshold=train_params.plateau_threshold,
    )
