"""A judge that ComfyUI's model management loads, offloads and frees like its own models.

The loader node returns a ``JudgeHandle``; each run ``acquire``s the judge, which registers its weights
with ComfyUI through a ``ModelPatcher`` and ``load_models_gpu`` (so diffusion models and the judge evict
each other as VRAM requires, and "free memory" unloads it), then ``release``s it by the user's choice.
"""

from __future__ import annotations

import gc
import weakref
from dataclasses import dataclass
from typing import Any

import torch

from ..qinsight_sdk import QualityJudge
from ..qinsight_sdk.loading import choose_dtype

AFTER_RUN = ("keep on GPU", "offload to CPU", "unload")
_HANDLES: "weakref.WeakSet[JudgeHandle]" = weakref.WeakSet()


class _Weights(torch.nn.Module):
    """Holds the transformers model for ModelPatcher, which needs a settable ``device`` attribute."""

    def __init__(self, model: torch.nn.Module, device: torch.device) -> None:
        super().__init__()
        self.model = model
        self.device = device


@dataclass
class JudgeSpec:
    model: str
    subfolder: str | None
    device: str
    dtype: str
    after_run: str
    allow_download: bool


class JudgeHandle:
    """The custom QINSIGHT_JUDGE value: what to load, and the loaded judge while it is loaded."""

    def __init__(self, spec: JudgeSpec) -> None:
        self.spec = spec
        self.judge: QualityJudge | None = None
        self.patcher: Any = None
        _HANDLES.add(self)

    def acquire(self) -> QualityJudge:
        """The judge with its weights on the device, loaded and registered on first use."""
        import comfy.model_management as mm
        import comfy.model_patcher

        load_device = mm.get_torch_device() if self.spec.device == "auto" else torch.device(self.spec.device)
        if self.judge is None:
            offload_device = torch.device("cpu")
            judge = QualityJudge.from_pretrained(
                self.spec.model, self.spec.subfolder or None, device=offload_device,
                dtype=choose_dtype(self.spec.dtype, load_device), local_files_only=not self.spec.allow_download)
            weights = _Weights(judge.backend.model, offload_device)
            self.patcher = comfy.model_patcher.ModelPatcher(weights, load_device=load_device,
                                                            offload_device=offload_device)
            self.judge = judge
        # all or nothing: a transformers model cannot run with some layers left on the offload device
        mm.load_models_gpu([self.patcher], force_full_load=True)
        self.judge.backend.device = self.patcher.load_device
        return self.judge

    def release(self) -> None:
        """Apply the user's after-run choice: keep, offload to the CPU, or free the weights."""
        if self.spec.after_run == "keep on GPU" or self.judge is None:
            return
        self.unregister()
        self.judge.backend.device = self.patcher.offload_device
        if self.spec.after_run == "unload":
            self.judge = self.patcher = None
            gc.collect()
        import comfy.model_management as mm

        mm.soft_empty_cache()

    def unregister(self) -> None:
        """Take the judge out of ComfyUI's loaded models, moving its weights to the offload device."""
        import comfy.model_management as mm

        for index in range(len(mm.current_loaded_models) - 1, -1, -1):
            if mm.current_loaded_models[index].model is self.patcher:
                mm.current_loaded_models.pop(index).model_unload()

    def status(self) -> dict[str, Any]:
        import comfy.model_management as mm

        registered = any(m.model is self.patcher for m in mm.current_loaded_models) if self.patcher else False
        devices = sorted({str(p.device) for p in self.judge.backend.model.parameters()}) if self.judge else []
        # what ComfyUI counts as loaded on its load device (0 once it has unloaded the judge), which tells
        # a free from a no-op even where load and offload device are both the CPU
        loaded_bytes = int(self.patcher.loaded_size()) if self.patcher is not None else 0
        return {"model": self.spec.model, "subfolder": self.spec.subfolder, "loaded": self.judge is not None,
                "registered_with_comfyui": registered, "weight_devices": devices,
                "comfyui_loaded_bytes": loaded_bytes}


def all_status() -> dict[str, Any]:
    """What qinsight holds: each judge handle, and how many judges ComfyUI's model manager has loaded."""
    import comfy.model_management as mm

    registered = sum(isinstance(getattr(m.model, "model", None), _Weights) for m in mm.current_loaded_models)
    allocated = torch.cuda.memory_allocated() if torch.cuda.is_available() else 0
    return {"judges": [handle.status() for handle in list(_HANDLES)], "registered_with_comfyui": registered,
            "cuda_bytes_allocated": allocated}
