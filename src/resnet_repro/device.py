"""Where and in which precision to run: CUDA when present, else CPU, through the same code path."""

import contextlib
import functools
import os
from pathlib import Path

import torch


def resolve_device(requested: str = "auto") -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(requested)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"train.device = {requested!r}, but CUDA is not available on this machine")
    return device


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for `precision` ("auto", "bf16", "fp16", "fp32"); None means plain fp32.

    "auto" picks bf16 where the hardware runs it natively (Ampere and newer GPUs; CPUs with AVX512-BF16
    or AMX, which run these nets about twice as fast as fp32), fp16 on older GPUs, else fp32.
    """
    if precision == "fp32":
        return None
    if precision == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if cuda_has_native_bf16() else torch.float16
        # oneDNN emulates bf16 on CPUs without bf16 instructions, at half the speed of fp32.
        return torch.bfloat16 if cpu_has_native_bf16() else None
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def cuda_has_native_bf16() -> bool:
    """True where the current GPU has bf16 units (compute capability 8.0, Ampere, and newer). torch's
    `is_bf16_supported()` says True by default also where a bf16 tensor can merely be made (a V100 or a
    T4, which then emulate bf16 arithmetic, slower than fp16): not what `auto` should choose."""
    return torch.cuda.is_bf16_supported(including_emulation=False)


@functools.cache
def cpu_has_native_bf16(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """True when the CPU has bf16 instructions (AVX512-BF16 or AMX), as Linux's `cpuinfo` lists them;
    False where there is no such file."""
    try:
        flags = Path(cpuinfo).read_text().split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def configure_determinism(deterministic: bool, cudnn_benchmark: bool) -> None:
    """Deterministic mode: the same inputs give bit-identical results, so a resumed run ends exactly
    where an uninterrupted one does. It costs speed on GPUs (no cuDNN autotuning, deterministic kernels);
    cuDNN's autotuner is otherwise on where asked, since CIFAR and ImageNet crops keep one input shape."""
    if deterministic:
        # cuBLAS needs a fixed workspace to be deterministic; it reads this when CUDA initialises.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(deterministic)
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = cudnn_benchmark and not deterministic


def resolve_compile(requested: str | bool, device: torch.device) -> bool:
    """"auto" compiles on CUDA only. On a CPU, inductor's compilation costs minutes of CPU time in every
    process (each stage, each test, each CI run), more than the short CPU trainings this project runs
    there last; set train.compile: true for a long CPU training."""
    if requested == "auto":
        return device.type == "cuda"
    return bool(requested)
