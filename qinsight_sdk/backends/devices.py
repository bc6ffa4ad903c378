"""Where a model runs and in what precision, chosen the same way for every model family.

Defaults: the device is CUDA, then MPS, then CPU; the dtype bf16 where the GPU has it, fp16 on other GPUs,
fp32 on CPU.
"""

from __future__ import annotations

import torch

from ..errors import ModelLoadError

_DTYPES = {
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
    "fp16": torch.float16,
    "float16": torch.float16,
    "half": torch.float16,
    "fp32": torch.float32,
    "float32": torch.float32,
}


def choose_device(device: str | torch.device = "auto") -> torch.device:
    if str(device) != "auto":
        try:
            chosen = torch.device(device)
        except (RuntimeError, TypeError) as exc:
            raise ModelLoadError(
                f"device {device!r} is not one torch knows: use auto, cpu, cuda, cuda:N or mps ({exc})"
            ) from None
        if chosen.type == "cuda" and not torch.cuda.is_available():
            raise ModelLoadError(f"device {device!r} asked for, but CUDA is not available here")
        if chosen.type == "mps" and not torch.backends.mps.is_available():
            raise ModelLoadError(f"device {device!r} asked for, but MPS is not available here")
        return chosen
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def choose_dtype(dtype: str | torch.dtype, device: torch.device) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype != "auto":
        if dtype not in _DTYPES:
            raise ModelLoadError(f"dtype {dtype!r} is not one of auto, {', '.join(sorted(_DTYPES))}")
        return _DTYPES[dtype]
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "mps":
        return torch.float16
    return torch.float32
