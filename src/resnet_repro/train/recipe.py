"""The paper's training recipes, as data, and the learning-rate schedule they drive.

CIFAR-10 (Section 4.2): batch 128, lr 0.1, divided by 10 at 32k and 48k iterations, stop at 64k. The
deepest nets (110 and 1202 layers) first train at 0.01 "until the training error is below 80% (about
400 iterations)" and then go back to 0.1.
ImageNet (Section 3.4): batch 256, lr 0.1, "divided by 10 when the error plateaus", up to 60e4
iterations, weight decay 1e-4, momentum 0.9.
Not the paper's, `cifar-cosine`: the recipe PyTorch users train `resnet18-cifar` with (models.zoo):
batch 128, lr 0.1, momentum 0.9, weight decay 5e-4, the lr falling from 0.1 to 0 along half a cosine
over 200 epochs of the 50k training images (390 whole batches each), no warm-up. Like the paper's
CIFAR recipe it trains with augment's crop (4-pixel padding) and flip, which the recipe leaves as
params.yaml has them.

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

from resnet_repro.config import TrainParams

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
    # 200 epochs of 390 batches; the test error every 5 epochs. The plateau and warm-up keys are unused.
    "cifar-cosine": {"iterations": 78_000, "batch_size": 128, "lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4,
                     "schedule": "cosine", "milestones": [], "lr_decay": 0.1, "eval_every": 1950,
                     "warmup_min_depth": 110, "warmup_lr": 0.01, "warmup_until_error": 0.8, "warmup_max_iterations": 0,
                     "linear_warmup_iterations": 0, "plateau_patience": 5, "plateau_threshold": 0.002},
}


def recipe_settings(name: str) -> dict:
    """The recipe as dotted params keys ({"train.lr": 0.1, ...}), ready for config.update_params_file."""
    if name not in RECIPES:
        raise LookupError(f"no recipe named {name!r}; the recipes are: {', '.join(RECIPES)}")
    return {f"train.{key}": value for key, value in RECIPES[name].items()}


class PaperSchedule:
    """The learning rate of each iteration under the recipe of `train` (config.TrainParams), for a net of
    `depth` layers: milestones, the constant warm-up of the deepest nets, an optional linear ramp, and
    the plateau decays; or, for `schedule: cosine`, half a cosine from lr to 0 instead of the milestones
    and plateaus. What it has measured so far (warm-up over, plateau count) is its state; the cosine
    depends on the iteration alone."""

    def __init__(self, train: TrainParams, depth: int):
        self.train = train
        self.warming_up = depth >= train.warmup_min_depth and train.warmup_max_iterations > 0
        self.best_error = math.inf  # the plateau's: the best validation error so far,
        self.measurements_since_best = 0  # how many measurements since it improved by plateau_threshold,
        self.plateau_decays = 0  # and how many times the lr has been divided for a plateau

    def lr(self, iteration: int) -> float:
        train = self.train
        if self.warming_up:
            return train.warmup_lr
        if train.schedule == "cosine":
            # 0 would be reached at `iterations`, one step after the last: every step trains.
            lr = train.lr * 0.5 * (1 + math.cos(math.pi * iteration / train.iterations))
        else:
            passed = sum(iteration >= milestone for milestone in train.milestones)
            lr = train.lr * train.lr_decay ** (passed + self.plateau_decays)
        if iteration < train.linear_warmup_iterations:
            lr *= (iteration + 1) / train.linear_warmup_iterations
        return lr

    def observe(self, iteration: int, train_error: float) -> bool:
        """Feed the running training error; returns True at the moment the warm-up ends."""
        if self.warming_up and (train_error < self.train.warmup_until_error
                                or iteration >= self.train.warmup_max_iterations):
            self.warming_up = False
            return True
        return False

    def observe_validation(self, iteration: int, error: float) -> bool:
        """Feed the validation error (every eval_every); returns True when it decays the lr on a plateau."""
        if self.train.schedule != "plateau":
            return False
        if error < self.best_error - self.train.plateau_threshold:
            self.best_error, self.measurements_since_best = error, 0
            return False
        self.measurements_since_best += 1
        if self.measurements_since_best < self.train.plateau_patience:
            return False
        # The new lr gets `patience` measurements of its own before it can be judged a plateau.
        self.plateau_decays += 1
        self.best_error, self.measurements_since_best = error, 0
        return True

    def state_dict(self) -> dict:
        return {"warming_up": self.warming_up, "best_error": self.best_error,
                "measurements_since_best": self.measurements_since_best, "plateau_decays": self.plateau_decays}

    def load_state_dict(self, state: dict) -> None:
        self.warming_up, self.best_error = state["warming_up"], state["best_error"]
        self.measurements_since_best, self.plateau_decays = state["measurements_since_best"], state["plateau_decays"]
