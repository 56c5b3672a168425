"""Mixed precision on the CPU: fp16 with its gradient scaler and bf16 train, checkpoint and resume bit for
bit on any host, and `precision: auto` picks what the hardware runs natively (the hardware's answers
stood in for, so that every branch is checked on this machine).

fp16 and bf16 are slow on a CPU (fp16 and, without AVX512-BF16, bf16 are emulated), so the loop tests
train ResNet-8 on 8x8 images: the code path is the one of any net.
"""

import copy
import math

import pytest
import torch
from test_loop import CPU, FixedBatches, train_params

from resnet_repro import device, models
from resnet_repro.device import autocast_dtype, cpu_has_native_bf16, resolve_device
from resnet_repro.train.loop import Hooks, TrainingStep, fit
from resnet_repro.train.optimizer import optimizer_for
from resnet_repro.train.recipe import PaperSchedule
from resnet_repro.train.state import TrainingState, resume_or_start

CUDA = torch.device("cuda")
FIRST_SCALE = 2.0 ** 16  # torch.amp.GradScaler's initial scale


# --- the training loop in fp16 and bf16 ------------------------------------------------------------

def small_batches(overflowing_fp16: bool = False) -> FixedBatches:
    """Four fixed batches of eight 8x8 images. With `overflowing_fp16`, the first batch is nearly constant:
    batch normalisation divides the gradients by that batch's tiny spread, so that at the scaler's first
    scale the stem's fp16 gradients overflow. The scaler then skips the step and halves its scale, as
    it does in the first steps of a real fp16 training. (Epoch e starts at batch e % 4: that batch comes
    at iterations 1 and 8.)"""
    loader = FixedBatches(image_size=8)
    if overflowing_fp16:
        images, labels = loader.batches[0]
        loader.batches[0] = (images * 1e-4, labels)
    return loader


def train(params, loader: FixedBatches, state: TrainingState | None = None) -> tuple[dict, list[TrainingState], set]:
    """ResNet-8 trained from the same initial weights (or from `state`): its final weights, the states it
    handed to on_checkpoint, and the dtypes its convolutions computed in."""
    torch.manual_seed(0)
    model = models.build("resnet8")
    conv_dtypes = set()
    for module in model.modules():
        if isinstance(module, torch.nn.Conv2d):
            module.register_forward_hook(lambda module, inputs, output: conv_dtypes.add(output.dtype))
    checkpoints = []
    fit(TrainingStep(model, optimizer_for(model, params), params, CPU), PaperSchedule(params, depth=8), loader, params,
        state=state, hooks=Hooks(on_checkpoint=lambda saved: checkpoints.append(copy.deepcopy(saved))))
    return model.state_dict(), checkpoints, conv_dtypes


def resumed_from(checkpoint: TrainingState, path, params, loader: FixedBatches) -> tuple[dict, list[TrainingState]]:
    """The training continued from `checkpoint` after a round trip through its file, as after a kill."""
    checkpoint.save(path)
    weights, checkpoints, _ = train(params, loader, state=resume_or_start(path, fingerprint=""))
    return weights, checkpoints


def assert_same_weights(expected: dict, actual: dict) -> None:
    assert expected.keys() == actual.keys()
    for name, tensor in expected.items():
        assert torch.equal(tensor, actual[name]), f"{name} differs from the uninterrupted run"


def test_fp16_trains_through_overflows_and_resumes_bitwise_with_its_gradient_scaler(tmp_path):
    params = train_params(10, precision="fp16")
    weights, checkpoints, conv_dtypes = train(params, small_batches(overflowing_fp16=True))
    assert conv_dtypes == {torch.float16}
    assert all(tensor.dtype == torch.float32 for tensor in weights.values() if tensor.is_floating_point())
    assert all(torch.isfinite(tensor).all() for tensor in weights.values() if tensor.is_floating_point())
    at_6, final = next(state for state in checkpoints if state.iteration == 6), checkpoints[-1]
    # The scaler backed off before the checkpoint the run resumes from, and again after it: its scale and
    # its count of good steps are state that the resumed run must carry on from.
    assert at_6.scaler is not None and final.scaler is not None
    assert at_6.scaler["scale"] < FIRST_SCALE and final.scaler["scale"] < at_6.scaler["scale"]

    resumed_weights, resumed_checkpoints = resumed_from(at_6, tmp_path / "checkpoint.pt", params,
                                                        small_batches(overflowing_fp16=True))
    assert resumed_checkpoints[-1].scaler == final.scaler
    assert_same_weights(weights, resumed_weights)


def test_bf16_trains_on_any_cpu_and_resumes_bitwise(tmp_path):
    """bf16 autocast on any CPU: natively with AVX512-BF16 or AMX, emulated by oneDNN without them."""
    params = train_params(8, precision="bf16")
    weights, checkpoints, conv_dtypes = train(params, small_batches())
    assert conv_dtypes == {torch.bfloat16}
    assert all(tensor.dtype == torch.float32 for tensor in weights.values() if tensor.is_floating_point())
    torch.manual_seed(0)
    assert not torch.equal(models.build("resnet8").fc.weight, weights["fc.weight"])  # it trained
    assert all(math.isfinite(row["loss"]) for row in checkpoints[-1].curves.steps)

    resumed_weights, _ = resumed_from(next(state for state in checkpoints if state.iteration == 3),
                                      tmp_path / "checkpoint.pt", params, small_batches())
    assert_same_weights(weights, resumed_weights)


# --- what `auto` chooses ---------------------------------------------------------------------------

@pytest.mark.parametrize(("bf16_supported", "expected"), [(True, torch.bfloat16), (False, torch.float16)])
def test_auto_on_a_gpu_is_bf16_where_the_gpu_runs_it_else_fp16(monkeypatch, bf16_supported, expected):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: bf16_supported)
    assert autocast_dtype("auto", CUDA) is expected
    assert autocast_dtype("auto", torch.device("cuda", 1)) is expected


@pytest.mark.parametrize(("native_bf16", "expected"), [(True, torch.bfloat16), (False, None)])
def test_auto_on_a_cpu_is_bf16_only_with_bf16_instructions_else_fp32(monkeypatch, native_bf16, expected):
    monkeypatch.setattr(device, "cpu_has_native_bf16", lambda: native_bf16)
    assert autocast_dtype("auto", CPU) is expected


def test_a_precision_given_is_taken_without_asking_the_hardware(monkeypatch):
    def must_not_ask(*args, **kwargs):
        raise AssertionError("the hardware was asked about a precision that was given")

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", must_not_ask)
    monkeypatch.setattr(device, "cpu_has_native_bf16", must_not_ask)
    for target in (CPU, CUDA):
        assert autocast_dtype("fp32", target) is None
        assert autocast_dtype("bf16", target) is torch.bfloat16
        assert autocast_dtype("fp16", target) is torch.float16


@pytest.mark.parametrize(("flags", "native"), [
    ("fpu sse2 avx2 avx512f avx512_bf16 avx512_vnni", True),  # e.g. AMD Zen 4, Intel Cooper Lake
    ("fpu sse2 avx2 avx512f amx_bf16 amx_tile amx_int8", True),  # Intel Sapphire Rapids
    ("fpu sse2 avx2 avx512f avx512_vnni avx512_fp16", False),  # AVX-512 without its bf16 instructions
    ("fpu sse2 avx2", False),
])
def test_native_bf16_is_read_from_the_cpu_flags(tmp_path, flags, native):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nflags\t\t: {flags}\n\nprocessor\t: 1\nflags\t\t: {flags}\n")
    assert cpu_has_native_bf16(cpuinfo) is native


def test_without_a_cpuinfo_file_the_cpu_has_no_native_bf16(tmp_path):
    assert cpu_has_native_bf16(tmp_path / "no-such-file") is False


def test_auto_device_is_cuda_where_cuda_is_available(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == CUDA
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == CPU


def test_a_cuda_device_without_cuda_is_refused_naming_the_value(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(RuntimeError, match=r"^train.device = 'cuda:1', but CUDA is not available on this machine$"):
        resolve_device("cuda:1")
    assert resolve_device("cpu") == CPU
