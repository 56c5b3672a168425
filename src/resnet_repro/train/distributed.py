"""Data-parallel training with torchrun: one process per device, DistributedDataParallel between them.

    torchrun --nproc_per_node 4 pipeline/train.py --variant resnet56 --seed 0    # by hand
    train.nproc: 4 in params.yaml, then dvc repro                                # the stage runs torchrun

torchrun starts the processes and tells each its rank in the environment (RANK, LOCAL_RANK, WORLD_SIZE);
`Processes.from_environment()` reads that, and a process started without torchrun is the single
process of a world of one, for which every method below does nothing. Backends: NCCL between GPUs,
gloo between CPU processes.

The global batch stays `train.batch_size` whatever the number of processes (each takes batch_size /
nproc images of every step), so lr, iterations and milestones keep the paper's values and no scaling
rule applies. Only batch normalisation sees the difference: its statistics come from each process's
share of the batch, as in the paper's multi-GPU ImageNet training (256 images on 8 GPUs, 32 per BN).
Raising batch_size itself is a change of recipe; the paper gives no rule for it (Goyal et al. 2017's
linear rule, lr x batch_size / 256, is the common one, and is left to the user).

Only rank 0 talks to MLflow, writes checkpoints and outputs; every rank reads the checkpoint to resume.
If one process fails, torchrun stops the others and exits with that process's error.
"""

import datetime
import os
import signal
import subprocess
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist

# A rank waits for rank 0 while it alone measures the test error (the whole test set on one device).
_COLLECTIVE_TIMEOUT = datetime.timedelta(minutes=60)


@dataclass(frozen=True)
class Processes:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @classmethod
    def from_environment(cls) -> "Processes":
        """The torchrun environment of this process; a world of one without torchrun."""
        if "WORLD_SIZE" not in os.environ:
            return cls()
        return cls(int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"]), int(os.environ["WORLD_SIZE"]))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def device(self, device: torch.device) -> torch.device:
        """Each process of a multi-GPU node takes its own GPU."""
        if device.type == "cuda" and device.index is None:
            return torch.device("cuda", self.local_rank)
        return device

    def start(self, device: torch.device) -> None:
        if not self.distributed or dist.is_initialized():
            return
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=_COLLECTIVE_TIMEOUT,
                                device_id=device if device.type == "cuda" else None)

    def stop(self) -> None:
        if self.distributed and dist.is_initialized():
            dist.destroy_process_group()

    def share_of(self, batch_size: int) -> int:
        """The images each process takes of a global batch of `batch_size`."""
        if batch_size % self.world_size:
            # Imported here: config needs pydantic, and the step (train.step) imports this module on GPU
            # nodes that have nothing but torch (train.cuda_check).
            from resnet_repro.config import ConfigError

            raise ConfigError(f"train.batch_size = {batch_size} is not divisible by the {self.world_size} "
                             f"processes: each must take an equal share of the global batch")
        return batch_size // self.world_size

    def sum(self, values: torch.Tensor) -> torch.Tensor:
        """`values` summed over all processes (in place; a copy is not needed by the callers)."""
        if self.distributed:
            dist.all_reduce(values)
        return values

    def from_main(self, value: float) -> float:
        """Rank 0's `value` on every rank (e.g. a validation error that only rank 0 measured)."""
        if not self.distributed:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]


def launched_by_torchrun() -> bool:
    return "TORCHELASTIC_RUN_ID" in os.environ or "WORLD_SIZE" in os.environ


def run_under_torchrun(nproc: int) -> int:
    """Run this very command (`python script args...`) in `nproc` processes under torchrun on this node,
    and return its exit status: 0, or that of the first process that failed (torchrun stops the rest)."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               *sys.argv]
    print(f"train.nproc = {nproc}: {' '.join(command[1:])}", flush=True)
    torchrun = subprocess.Popen(command)
    # A scheduler's SIGTERM reaches this process; torchrun passes it on to every training process,
    # which saves a checkpoint and stops.
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: torchrun.send_signal(signum))
    try:
        return torchrun.wait()
    finally:
        signal.signal(signal.SIGTERM, previous)
