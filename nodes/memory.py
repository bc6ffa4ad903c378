"""A judge that ComfyUI's model management loads, offloads and frees like its own models.

The loader node returns a ``JudgeHandle``; each run ``acquire``s the judge, which registers its weights
with ComfyUI through a ``ModelPatcher`` and ``load_models_gpu`` (so diffusion models and the judge evict
each other as VRAM requires, and "free memory" unloads it), then ``release``s it by the user's choice.

A quantized judge never moves between devices: it is quantized straight onto ComfyUI's device, and
wherever ComfyUI would move it off (offload, eviction, "free memory") its weights are freed instead and
loaded again from disk on next use. bitsandbytes' moves cannot be relied on: transformers 4.57 refuses
to move an 8-bit model at all, and 4-bit weights that once ran on a CPU with AVX-512 BF16 are repacked
for that CPU, which only ``.cuda()`` undoes, not the ``.to()`` ComfyUI moves models with. ComfyUI counts
its real, quantized size (the weights' bytes as stored, quantization constants included).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from qinsight_sdk.backends import compatibility
from qinsight_sdk.backends.checkpoints import default_subfolder, resolve_checkpoint
from qinsight_sdk.backends.devices import choose_dtype
from qinsight_sdk.backends.quantization import quantized_size
from qinsight_sdk.io.images import ImageBounds

if TYPE_CHECKING:  # imports transformers: loaded when a judge loads, so that the pack registers without it
    from qinsight_sdk import QualityJudge

AFTER_RUN = ("keep on GPU", "offload to CPU", "unload")
QUANTIZATION = ("full", "8bit", "4bit")
_HANDLES: weakref.WeakSet[JudgeHandle] = weakref.WeakSet()


class _Weights(torch.nn.Module):
    """Holds the transformers model for ModelPatcher, which needs a settable ``device`` attribute."""

    def __init__(self, model: torch.nn.Module, device: torch.device) -> None:
        super().__init__()
        self.model = model
        self.device = device


def comfy_dtype(choice: str, device: torch.device) -> torch.dtype:
    """The weights' dtype: an explicit choice as given; for "auto", ComfyUI's policy for ``device``.

    ``should_use_bf16``/``should_use_fp16`` are the hardware policy ComfyUI's own dtype choices rest on
    (they honour --force-fp32/--force-fp16, --cpu, MPS, XPU, old NVIDIA cards). ``text_encoder_dtype`` does
    not fit: it gives fp16 on every device, CPU included, because ComfyUI's text encoders compute through
    comfy.ops casts, which a plain transformers model lacks (and Qwen2.5-VL overflows in fp16).
    ``unet_dtype`` would apply the --*-unet flags meant for diffusion models. So bf16 where ComfyUI says
    the device has it, else fp16 where it allows that, else fp32.
    """
    if choice != "auto":
        return choose_dtype(choice, device)
    import comfy.model_management as mm

    if mm.should_use_bf16(device):
        return torch.bfloat16
    return torch.float16 if mm.should_use_fp16(device) else torch.float32


@dataclass
class JudgeSpec:
    model: str
    subfolder: str | None
    device: str
    dtype: str
    after_run: str
    allow_download: bool
    image_size: str = "official"
    quantization: str = "full"
    judge: str = "auto"  # a profile name, or auto: the one the checkpoint brings or is known by

    @property
    def quantized(self) -> bool:
        return self.quantization != "full"


def _module_of(judge: QualityJudge) -> torch.nn.Module | None:
    """The judge's weights as one module, which ComfyUI's model management holds; None for a backend that
    holds none for it to manage (a remote or engine-managed model, a metric), which the handle keeps as is."""
    return getattr(judge.backend, "module", None)


class JudgeHandle:
    """The custom QINSIGHT_JUDGE value: what to load, and the loaded judge while it is loaded."""

    def __init__(self, spec: JudgeSpec) -> None:
        self.spec = spec
        self.judge: QualityJudge | None = None
        self.patcher: Any = None
        _HANDLES.add(self)

    def acquire(self) -> QualityJudge:
        """The judge with its weights on the device, loaded and registered on first use.

        Refuses first where transformers or torch is unsupported: the pack still loaded (see ``__init__``),
        so this is where the user learns what to fix."""
        found = compatibility.problems()
        if found:
            raise RuntimeError("qinsight cannot judge: " + "; ".join(found))
        import comfy.model_management as mm

        load_device = mm.get_torch_device() if self.spec.device == "auto" else torch.device(self.spec.device)
        if self.judge is None:
            self._load(load_device)
        if self.patcher is None:  # nothing for ComfyUI to manage: the backend keeps its own memory
            return self._moved(load_device)
        # all or nothing: a transformers model cannot run with some layers left on the offload device
        mm.load_models_gpu([self.patcher], force_full_load=True)
        if self.spec.quantized:
            return self.judge
        # ComfyUI moved the weights; the judge must send its inputs to where they now are
        return self.judge.to(self.patcher.load_device)

    def _load(self, load_device: torch.device) -> None:
        """Full precision: loaded on the CPU, for ComfyUI to move. Quantized: onto ``load_device`` for good."""
        import comfy.model_patcher
        from comfy.patcher_extension import CallbacksMP

        from qinsight_sdk import QualityJudge

        offload_device = load_device if self.spec.quantized else torch.device("cpu")
        if self.spec.quantized:
            self._make_room(load_device)
        judge = QualityJudge.from_pretrained(
            self.spec.model,
            self.spec.subfolder or None,
            device=offload_device,
            dtype=comfy_dtype(self.spec.dtype, load_device),
            local_files_only=not self.spec.allow_download,
            image_bounds=ImageBounds.preset(self.spec.image_size),
            quantization=self.spec.quantization,
            profile=None if self.spec.judge == "auto" else self.spec.judge,
        )
        module = _module_of(judge)
        if module is None:
            self.judge = judge
            return
        weights = _Weights(module, offload_device)
        self.patcher = comfy.model_patcher.ModelPatcher(weights, load_device=load_device, offload_device=offload_device)
        if self.spec.quantized:
            self.patcher.add_callback(CallbacksMP.ON_DETACH, self._on_detach)
        self.judge = judge  # only now: a judge without its patcher would pass for one ComfyUI does not manage

    def _moved(self, device: torch.device | str) -> QualityJudge:
        """A judge ComfyUI does not manage, moved to ``device`` where its backend can move (a remote one
        cannot)."""
        return self.judge.to(device) if hasattr(self.judge.backend, "to") else self.judge

    def _make_room(self, device: torch.device) -> None:
        """Have ComfyUI free what a quantized judge will take on ``device`` before it is quantized there:
        ComfyUI frees room for its own models before moving them, but this one is placed as it loads."""
        import comfy.model_management as mm

        if device.type == "cpu":
            return
        model = self.spec.model
        folder = resolve_checkpoint(
            model, self.spec.subfolder or default_subfolder(model), local_files_only=not self.spec.allow_download
        )
        mm.free_memory(quantized_size(folder, self.spec.quantization) + mm.minimum_inference_memory(), device)

    def _on_detach(self, patcher: Any, unpatch_all: bool) -> None:
        """ComfyUI has "moved" a quantized judge to its offload device, which is where it already is: free it
        (a detach that unpatches nothing, as when ComfyUI registers the same model again, moves nothing).
        The patcher is kept until the next load: dropping it inside ComfyUI's unloading loop would run
        ComfyUI's cleanup of dead models in the middle of that loop."""
        if unpatch_all and patcher is self.patcher:
            self._free()

    def _free(self) -> None:
        """Free the weights' memory now, for a reload on next use.

        A transformers model sits in reference cycles (bitsandbytes' layers add their own), which only a
        later garbage collection would free, while a diffusion model may be waiting for that memory: so
        every module lets go of its tensors, which frees them at once.
        """
        weights = _module_of(self.judge) if self.judge is not None else None
        if weights is not None:
            for module in list(weights.modules()):
                module._parameters.clear()
                module._buffers.clear()
        self.judge = None
        import comfy.model_management as mm

        mm.soft_empty_cache()

    def release(self) -> None:
        """Apply the user's after-run choice: keep, offload to the CPU, or free the weights."""
        if self.spec.after_run == "keep on GPU" or self.judge is None:
            return
        self.unregister()
        if self.judge is None:  # a quantized judge, freed by its detach callback
            return
        if self.spec.after_run == "unload":
            self._free()
            return
        if self.patcher is None:
            self._moved("cpu")
            return
        self.judge.to(self.patcher.offload_device)
        import comfy.model_management as mm

        mm.soft_empty_cache()

    def registered(self) -> bool:
        """Whether ComfyUI counts the judge among its loaded models (it may have evicted it since)."""
        import comfy.model_management as mm

        return self.patcher is not None and any(p is self.patcher for p in mm.loaded_models())

    def unregister(self) -> None:
        """Take the judge out of ComfyUI's loaded models, moving its weights to the offload device.

        ComfyUI v0.3.75 has no call that unloads one given model (``unload_all_models`` is
        ``free_memory(1e30, device)``). ``free_memory`` is its one path that unloads a ``LoadedModel``
        (``model_unload``: the patcher detaches and moves the weights) and drops it from its list, so
        it is asked to free everything on the judge's device while keeping every other model loaded.
        """
        import comfy.model_management as mm

        if not self.registered():
            return  # ComfyUI evicted it already
        others = [loaded for loaded in mm.current_loaded_models if loaded.model is not self.patcher]
        mm.free_memory(1e30, self.patcher.load_device, keep_loaded=others)

    def status(self) -> dict[str, Any]:
        weights = _module_of(self.judge) if self.judge else None
        devices = (
            sorted({str(p.device) for p in weights.parameters()})
            if weights is not None
            else [str(self.judge.backend.device)]
            if self.judge
            else []
        )
        dtype = str(self.judge.backend.dtype).removeprefix("torch.") if self.judge else None
        # what ComfyUI counts as loaded on its load device (0 once it has unloaded the judge), which tells
        # a free from a no-op even where load and offload device are both the CPU
        loaded_bytes = int(self.patcher.loaded_size()) if self.patcher is not None else 0
        return {
            "model": self.spec.model,
            "subfolder": self.spec.subfolder,
            "loaded": self.judge is not None,
            "quantization": self.judge.backend.quantization if self.judge else None,
            "registered_with_comfyui": self.registered(),
            "weight_devices": devices,
            "dtype": dtype,
            "comfyui_loaded_bytes": loaded_bytes,
            "images_encoded": self.images_encoded(),
        }

    def images_encoded(self) -> int | None:
        """How many images this judge's vision tower has encoded (a ranking or the saver's score and
        degradation encode each image once); None before it loads."""
        vision = getattr(self.judge.backend, "vision", None) if self.judge else None
        return vision.encoded if vision is not None else None


def all_status() -> dict[str, Any]:
    """What qinsight holds: each judge handle, and how many judges ComfyUI's model manager has loaded."""
    import comfy.model_management as mm

    registered = sum(isinstance(getattr(patcher, "model", None), _Weights) for patcher in mm.loaded_models())
    allocated = torch.cuda.memory_allocated() if torch.cuda.is_available() else 0
    return {
        "judges": [handle.status() for handle in list(_HANDLES)],
        "registered_with_comfyui": registered,
        "cuda_bytes_allocated": allocated,
    }
