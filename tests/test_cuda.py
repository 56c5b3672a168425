"""The paths only a GPU takes: the CUDA device and its precision, NCCL between processes, the CUDA RNG
state in a checkpoint, pinned memory and non-blocking copies in both loaders.

They run where CUDA is available and are skipped, with the reason, everywhere else: every other test runs
the same code on the CPU, and none needs a GPU. The trainings are ResNet-8 on a few 8x8 images, as in
test_precision.py; the data is the real CIFAR-10.
"""

import json
import math
import subprocess
import sys

import pytest
import torch
from test_loop import FixedBatches, train_params

from projects import committed_file, params_with
from resnet_repro.config import parse_params
from resnet_repro.data.augment import Augmentation, augmentation_for
from resnet_repro.data.stats import image_stats, mean_image_tensor
from resnet_repro.data.torch_loader import ArrayImages, TorchLoader
from resnet_repro.device import autocast_dtype, resolve_device
from resnet_repro.stages.train import build_net
from resnet_repro.train.loop import TrainingStep, fit
from resnet_repro.train.optimizer import optimizer_for
from resnet_repro.train.recipe import PaperSchedule
from resnet_repro.train.state import TrainingState

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="CUDA-only path: torch.cuda.is_available() is False on this machine")
needs_two_gpus = pytest.mark.skipif(torch.cuda.device_count() < 2,
                                    reason="NCCL between two processes needs two CUDA GPUs")
CPU, CUDA = torch.device("cpu"), torch.device("cuda")


def test_auto_trains_on_the_gpu_in_its_native_precision_and_channels_last():
    device = resolve_device("auto")
    assert device.type == "cuda"
    native = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    assert autocast_dtype("auto", device) is native
    params = train_params(8, precision="auto")
    model = build_net("resnet8", 10, 0, params, device)
    conv_dtypes = set()
    for module in model.modules():
        if isinstance(module, torch.nn.Conv2d):
            module.register_forward_hook(lambda module, inputs, output: conv_dtypes.add(output.dtype))
    loader = FixedBatches(image_size=8)
    loader.batches = [(images.to(device), labels.to(device)) for images, labels in loader.batches]  # as loaders do
    step = TrainingStep(model, optimizer_for(model, params), params, device)
    result = fit(step, PaperSchedule(params, depth=8), loader, params)
    assert conv_dtypes == {native}
    assert math.isfinite(result.final_loss)
    assert all(parameter.device.type == "cuda" for parameter in model.parameters())
    assert model.get_parameter("conv1.weight").is_contiguous(memory_format=torch.channels_last)


def test_a_checkpoint_holds_and_restores_the_cuda_rng_state(tmp_path):
    params = train_params(8)
    model = build_net("resnet8", 10, 0, params, CUDA)
    optimizer, schedule = optimizer_for(model, params), PaperSchedule(params, depth=8)
    scaler = torch.amp.GradScaler("cuda", enabled=False)
    torch.cuda.manual_seed_all(1)
    state = TrainingState(fingerprint="")
    state.capture(model, optimizer, schedule, scaler)
    assert state.rng is not None and len(state.rng["cuda"]) == torch.cuda.device_count()
    expected = torch.rand(8, device=CUDA)  # the next draw after the checkpoint
    torch.rand(1000, device=CUDA)  # the generator moves on, as the training would
    state.save(tmp_path / "checkpoint.pt")
    TrainingState.load(tmp_path / "checkpoint.pt").restore(model, optimizer, schedule, scaler)
    assert torch.equal(torch.rand(8, device=CUDA), expected)


def test_the_torch_loader_collates_into_pinned_memory_and_copies_the_same_batches_to_the_gpu(cifar10):
    images, labels = cifar10.train_images[:64], cifar10.train_labels[:64]
    stats = image_stats(images)
    augmentation = augmentation_for("cifar10", parse_params(params_with({})).augment, stats)

    def loader(device: torch.device) -> TorchLoader:
        return TorchLoader(ArrayImages(images, labels, augmentation, train=True), batch_size=16, train=True,
                           mean_image=mean_image_tensor(stats), device=device, num_workers=1, seed=0)

    on_gpu = loader(CUDA)
    collated, _ = next(iter(on_gpu._loader))  # what the DataLoader hands over, before the copy
    assert collated.is_pinned()
    for (gpu_images, gpu_labels), (cpu_images, cpu_labels) in zip(on_gpu, loader(CPU), strict=True):
        assert gpu_images.device.type == gpu_labels.device.type == "cuda"
        torch.testing.assert_close(gpu_images.cpu(), cpu_images, rtol=0, atol=1e-6)
        assert torch.equal(gpu_labels.cpu(), cpu_labels)


def test_the_ffcv_loader_copies_the_same_batches_to_the_gpu(tmp_path, cifar10):
    from resnet_repro.data.ffcv_io import make_loader, write_beton

    write_beton(tmp_path / "test.beton", cifar10.test_images[:100], cifar10.test_labels[:100])

    def batches(device: torch.device) -> list:
        loader = make_loader(tmp_path / "test.beton", augmentation=Augmentation(crop_size=32, crop_padding=4),
                             batch_size=50, train=False, mean_image=torch.zeros(3, 32, 32), device=device,
                             num_workers=1)
        return [(images.cpu(), labels.cpu(), images.device.type) for images, labels in loader]

    on_gpu, on_cpu = batches(CUDA), batches(CPU)
    assert [device for _, _, device in on_gpu] == ["cuda", "cuda"]
    for (gpu_images, gpu_labels, _), (cpu_images, cpu_labels, _) in zip(on_gpu, on_cpu, strict=True):
        torch.testing.assert_close(gpu_images, cpu_images, rtol=0, atol=1e-6)
        assert torch.equal(gpu_labels, cpu_labels)


# Each process of a torchrun world: the device and process group Processes sets up, one DDP step on its
# own batch, then every rank's parameter checksum and a sum over the ranks, as one JSON line.
_RANK_PROCESS = """
import json, sys
import torch
import torch.distributed as dist
from resnet_repro.config import load_params
from resnet_repro.train.distributed import Processes
from resnet_repro.stages.train import build_net
from resnet_repro.train.loop import TrainingStep
from resnet_repro.train.optimizer import optimizer_for

params_path, device_type = sys.argv[1:]
train = load_params(params_path).train.model_copy(update={"precision": "fp32", "compile": False})
processes = Processes.from_environment()
device = processes.device(torch.device(device_type))
processes.start(device)
model = build_net("resnet8", 10, 0, train, device)
step = TrainingStep(model, optimizer_for(model, train), train, device, processes)
generator = torch.Generator().manual_seed(processes.rank)  # each rank its own batch
step(torch.randn(8, 3, 8, 8, generator=generator).to(device),
     torch.randint(0, 10, (8,), generator=generator).to(device), 0.1)
checksum = torch.cat([parameter.detach().flatten() for parameter in model.parameters()]).double().sum().view(1)
checksums = [torch.zeros_like(checksum) for _ in range(processes.world_size)]
dist.all_gather(checksums, checksum)
print(json.dumps({"rank": processes.rank, "device": str(device), "backend": dist.get_backend(),
                  "current_device": torch.cuda.current_device() if device.type == "cuda" else None,
                  "checksums": [value.item() for value in checksums],
                  "ranks": processes.sum(torch.ones(1, device=device)).item()}), flush=True)
processes.stop()
"""


def run_ranks(tmp_path, device_type: str, processes: int = 2) -> list[dict]:
    """_RANK_PROCESS under torchrun in `processes` processes; each rank's report, by rank."""
    script = tmp_path / "rank.py"
    script.write_text(_RANK_PROCESS)
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                             f"--nproc_per_node={processes}", str(script), str(committed_file("params.yaml")),
                             device_type], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    reports = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    return sorted(reports, key=lambda report: report["rank"])


@needs_two_gpus
def test_two_processes_each_take_their_own_gpu_and_agree_through_nccl(tmp_path):
    reports = run_ranks(tmp_path, "cuda")
    assert [(report["rank"], report["device"], report["current_device"]) for report in reports] == \
        [(0, "cuda:0", 0), (1, "cuda:1", 1)]
    assert {report["backend"] for report in reports} == {"nccl"}
    assert all(report["ranks"] == 2 for report in reports)
    # Different batches, one set of weights: DDP averaged the gradients over NCCL.
    checksums = reports[0]["checksums"]
    assert checksums[0] == checksums[1] and all(report["checksums"] == checksums for report in reports)
