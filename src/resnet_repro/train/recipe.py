"""The paper's CIFAR-10 learning-rate recipe (Section 4.2).

lr 0.1, divided by 10 at each milestone (32k and 48k), stop at 64k iterations. The deepest nets
(110 and 1202 layers) first train at 0.01 "until the training error is below 80% (about 400
iterations)" and then go back to 0.1. Because the warm-up ends on a measured condition, not at a fixed
iteration, the schedule is a small object with state that the checkpoint saves and restores.
"""

from dataclasses import asdict, dataclass


@dataclass
class PaperSchedule:
    base_lr: float
    milestones: list[int]
    decay: float
    warmup_lr: float | None = None  # None: no warm-up
    warmup_until_error: float = 0.8
    warmup_max_iterations: int = 4000
    warming_up: bool = False

    def __post_init__(self) -> None:
        self.warming_up = self.warming_up or self.warmup_lr is not None

    def lr(self, iteration: int) -> float:
        if self.warming_up:
            return self.warmup_lr
        passed = sum(iteration >= milestone for milestone in self.milestones)
        return self.base_lr * self.decay**passed

    def observe(self, iteration: int, train_error: float) -> bool:
        """Feed the running training error; returns True at the moment the warm-up ends."""
        if self.warming_up and (train_error < self.warmup_until_error or iteration >= self.warmup_max_iterations):
            self.warming_up = False
            return True
        return False

    def state_dict(self) -> dict:
        return asdict(self)

    def load_state_dict(self, state: dict) -> None:
        for key, value in state.items():
            setattr(self, key, value)


def cifar_schedule(train_params, depth: int) -> PaperSchedule:
    """The schedule of `train_params` (config.TrainParams) for a CIFAR net of `depth` layers."""
    needs_warmup = depth >= train_params.warmup_min_depth and train_params.warmup_max_iterations > 0
    return PaperSchedule(
        base_lr=train_params.lr,
        milestones=list(train_params.milestones),
        decay=train_params.lr_decay,
        warmup_lr=train_params.warmup_lr if needs_warmup else None,
        warmup_until_error=train_params.warmup_until_error,
        warmup_max_iterations=train_params.warmup_max_iterations,
    )
