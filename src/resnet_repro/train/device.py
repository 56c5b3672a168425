"""Where and in which precision to run: CUDA when present, else CPU, through the same code path."""

import contextlib

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

    "auto" picks bf16 where the hardware runs it natively (CPUs with bf16 matrix units run these nets
    about twice as fast as fp32; Ampere and newer GPUs), fp16 on older GPUs.
    """
    if precision == "fp32":
        return None
    if precision == "auto":
        if device.type == "cuda" and not torch.cuda.is_bf16_supported():
            return torch.float16
        return torch.bfloat16
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)
