"""The core of the first-GPU check: the training step on CUDA in each precision, channels_last and
compiled, and a checkpoint resumed bit for bit, on synthetic batches.

    PYTHONPATH=src python -m resnet_repro.train.cuda_check     # in a checkout; torch and torchvision suffice

It runs the training's own pieces: the net (models), the step (train.step: autocast, the fp16 gradient
scaler, channels_last, torch.compile), SGD (train.optimizer), deterministic mode (device) and the
checkpoint (train.state: TrainingState, its file and the RNG states). Those modules import torch and
nothing else, so this runs on a GPU node that comes with its own torch, before scripts/setup.sh; what
it leaves out is the loop around the step (train.loop: progress bar, logging, params.yaml's schema),
which the CPU tests cover. `scripts/first-gpu.sh` runs it first, then what needs the whole set-up.

Without CUDA it stops at once, saying what torch found, and exits with status 1. The functions take a
device, so that tests/test_cuda_check.py runs the same checks on the CPU.
"""

import argparse
import contextlib
import sys
import tempfile
import traceback
from dataclasses import dataclass
from pathlib import Path

import torch

from resnet_repro import models
from resnet_repro.device import autocast_dtype, configure_determinism, cuda_has_native_bf16
from resnet_repro.train.optimizer import optimizer_for
from resnet_repro.train.state import TrainingState
from resnet_repro.train.step import TrainingStep

PRECISIONS = ("fp32", "bf16", "fp16")
LR = 0.1  # the recipe's, constant


class CheckFailed(AssertionError):
    """The step ran but did not do what the training needs; the message says what."""


@dataclass(frozen=True)
class CheckSettings:
    """What train.step and train.optimizer take from params.yaml's train section (the recipe's SGD at a
    constant lr), without params.yaml's schema and its pydantic."""

    precision: str
    compile: bool = True
    channels_last: bool = True
    lr: float = LR
    momentum: float = 0.9
    weight_decay: float = 1e-4
    no_weight_decay_on_bn_and_bias: bool = False


@dataclass(frozen=True)
class Batches:
    """The synthetic data: batch i is a fixed function of i, so two runs see the same batches."""

    size: int = 64
    image_size: int = 32  # CIFAR-10's
    classes: int = 10

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        generator = torch.Generator().manual_seed(index)
        return (torch.randn(self.size, 3, self.image_size, self.image_size, generator=generator),
                torch.randint(0, self.classes, (self.size,), generator=generator))


class _ConstantLr:
    """The schedule a TrainingState captures: a constant lr has no state."""

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


def no_cuda_line() -> str | None:
    """None where torch sees a CUDA device; else the one line that says what it found instead."""
    if torch.cuda.is_available():
        return None
    build = f"CUDA {torch.version.cuda} build" if torch.version.cuda else "cpu build"
    return f"no CUDA device: torch {torch.__version__} ({build}) sees none; nothing run"


def describe_cuda() -> str:
    """The GPUs torch sees, in one line."""
    name = torch.cuda.get_device_name()
    major, minor = torch.cuda.get_device_capability()
    count = torch.cuda.device_count()
    return (f"CUDA: {count} device{'s' if count > 1 else ''}, cuda:{torch.cuda.current_device()} is {name} "
            f"(compute capability {major}.{minor}); torch {torch.__version__}, CUDA {torch.version.cuda}")


def skipped_on_cuda() -> dict[str, str]:
    """The precisions this GPU cannot train in natively, each with the reason."""
    if cuda_has_native_bf16():
        return {}
    major, minor = torch.cuda.get_device_capability()
    return {"bf16": f"{torch.cuda.get_device_name()} (compute capability {major}.{minor}) has no bf16 units "
                    f"(8.0, Ampere, and newer have); `precision: auto` trains in fp16 there"}


@contextlib.contextmanager
def deterministic():
    """The project's deterministic mode (train.deterministic: true, what makes a resume bitwise), put back
    as it was afterwards: a test process goes on with its own settings."""
    before = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.deterministic,
              torch.backends.cudnn.benchmark)
    configure_determinism(True, cudnn_benchmark=False)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = before[1:]


def check_precision(precision: str, device: torch.device, *, compile: bool = True, net: str = "resnet20",
                    batches: Batches = Batches(), steps: int = 8, checkpoint_at: int = 4) -> str:
    """Train `net` for `steps` steps in `precision` on `device` (channels_last, compiled if `compile`),
    with a checkpoint file written after `checkpoint_at` steps; then a fresh net, optimizer and step
    resume from that file and train the remaining steps. Returns a line saying what was checked; raises
    CheckFailed unless the step computed in `precision`, every loss was finite, the weights stayed float32
    and channels_last and moved, and the resumed run ended bit for bit where the uninterrupted one did."""
    if not 0 < checkpoint_at < steps:
        raise ValueError(f"checkpoint_at = {checkpoint_at}: must be between 0 and steps = {steps}")
    settings = CheckSettings(precision, compile=compile)
    with deterministic(), tempfile.TemporaryDirectory(prefix="cuda-check-") as directory:
        checkpoint = Path(directory) / "checkpoint.pt"
        initial, run = _Run.start(net, settings, device)
        losses, logits_dtypes = run.train(batches, 0, steps, checkpoint=(checkpoint_at, checkpoint))
        _, resumed = _Run.start(net, settings, device)
        TrainingState.load(checkpoint).restore(resumed.step.model, resumed.step.optimizer, _ConstantLr(),
                                               resumed.step.scaler)
        resumed.train(batches, checkpoint_at, steps)

        problems = []
        expected = autocast_dtype(precision, device) or torch.float32
        if logits_dtypes != {expected}:
            problems.append(f"the step computed in {_names(logits_dtypes)}, not {_names({expected})}")
        if not all(torch.isfinite(loss) for loss in losses):
            problems.append(f"losses {[round(loss.item(), 4) for loss in losses]} are not all finite")
        trained = run.step.model.state_dict()
        problems += _kept_float32_and_layout(run.step.model, settings.channels_last)
        if all(torch.equal(initial[name], parameter) for name, parameter in run.step.model.named_parameters()):
            problems.append(f"no weight moved in {steps} steps")
        differing = [name for name, tensor in resumed.step.model.state_dict().items()
                     if not torch.equal(tensor, trained[name])]
        if differing:
            problems.append(f"the run resumed from the checkpoint at step {checkpoint_at} ended with other values "
                            f"of {len(differing)} tensors than the uninterrupted run ({', '.join(differing[:3])}...)")
        if resumed.step.scaler.state_dict() != run.step.scaler.state_dict():
            problems.append("the resumed run's gradient scaler ended in another state than the uninterrupted one's")
        if problems:
            raise CheckFailed(f"{precision} on {device}: " + "; ".join(problems))

    scaler = run.step.scaler
    scale = f", gradient scale {scaler.get_scale():g}" if scaler.is_enabled() else ""
    return (f"{precision}: {steps} steps of {net} (batch {batches.size}, {batches.image_size}x{batches.image_size}, "
            f"channels_last, {'compiled' if compile else 'eager'}) on {device}, loss "
            f"{losses[0].item():.3f} -> {losses[-1].item():.3f}{scale}; resumed from the checkpoint at step "
            f"{checkpoint_at}: bit for bit")


class _Run:
    """A net, its SGD and its step on `device`, as the train stage builds them."""

    def __init__(self, step: TrainingStep):
        self.step = step

    @classmethod
    def start(cls, net: str, settings: CheckSettings, device: torch.device) -> tuple[dict, "_Run"]:
        """A fresh run from the same initial weights, and a copy of those weights."""
        torch.manual_seed(0)
        memory_format = torch.channels_last if settings.channels_last else torch.contiguous_format
        model = models.build(net).to(device).to(memory_format=memory_format)
        initial = {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}
        if settings.compile:
            # A fresh compilation, as in a process of its own: dynamo's caches would otherwise carry the
            # previous runs' graphs, up to its recompile limit, past which it runs the step eagerly.
            torch.compiler.reset()
        return initial, cls(TrainingStep(model, optimizer_for(model, settings), settings, device))

    def train(self, batches: Batches, first: int, last: int, *,
              checkpoint: tuple[int, Path] | None = None) -> tuple[list[torch.Tensor], set[torch.dtype]]:
        """Steps `first` to `last` - 1, and a `checkpoint` (after step, file) if given; the losses, and the
        dtypes the logits came in."""
        losses, dtypes = [], set()
        self.step.model.train()
        for index in range(first, last):
            images, labels = batches[index]
            loss, logits = self.step(images.to(self.step.device), labels.to(self.step.device), LR)
            losses.append(loss)
            dtypes.add(logits.dtype)
            if checkpoint is not None and index + 1 == checkpoint[0]:
                state = TrainingState(fingerprint="cuda check", iteration=index + 1)
                state.capture(self.step.model, self.step.optimizer, _ConstantLr(), self.step.scaler)
                state.save(checkpoint[1])  # now: the captured state dicts share the live tensors
        return losses, dtypes


def _kept_float32_and_layout(model: torch.nn.Module, channels_last: bool) -> list[str]:
    problems = []
    not_float32 = [name for name, parameter in model.named_parameters() if parameter.dtype != torch.float32]
    if not_float32:
        problems.append(f"weights left float32: {', '.join(not_float32[:3])}")
    if channels_last:
        lost = [name for name, parameter in model.named_parameters()
                if parameter.ndim == 4 and not parameter.is_contiguous(memory_format=torch.channels_last)]
        if lost:
            problems.append(f"convolution weights left channels_last: {', '.join(lost[:3])}")
    return problems


def _names(dtypes: set[torch.dtype]) -> str:
    return ", ".join(sorted(str(dtype).removeprefix("torch.") for dtype in dtypes))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m resnet_repro.train.cuda_check",
        description="The training step on CUDA in fp32, bf16 (where the GPU has it) and fp16, channels_last and "
                    "compiled, and a checkpoint resumed bit for bit, on synthetic batches. Needs only torch.")
    parser.parse_args(argv)
    missing = no_cuda_line()
    if missing:
        print(missing, file=sys.stderr)
        return 1
    print(describe_cuda(), flush=True)
    skipped = skipped_on_cuda()
    failed = []
    for precision in PRECISIONS:
        if precision in skipped:
            print(f"{precision}: skipped: {skipped[precision]}", flush=True)
            continue
        try:
            print(check_precision(precision, torch.device("cuda")), flush=True)
        except Exception as error:  # each precision is checked, whatever happened to the one before
            traceback.print_exc()
            print(f"{precision}: FAILED: {error}", flush=True)
            failed.append(precision)
    run = [precision for precision in PRECISIONS if precision not in skipped]
    if failed:
        print(f"cuda check: FAILED in {', '.join(failed)} (of {', '.join(run)})", flush=True)
        return 1
    print(f"cuda check: passed in {', '.join(run)}" + (f"; skipped {', '.join(skipped)}" if skipped else ""),
          flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
