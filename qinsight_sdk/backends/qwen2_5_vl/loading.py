"""Loading a Qwen2.5-VL checkpoint: the device, dtype and attention choices, and the workarounds that
differ between transformers releases, in one place for the judge, training, the nodes and the benchmarks.

Defaults: the device and dtype as :mod:`qinsight_sdk.backends.devices` chooses them; attention
FlashAttention-2 when installed and usable, else SDPA.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import Any

import torch

from ...errors import ModelLoadError
from ..devices import choose_device, choose_dtype
from ..quantization import Quantization, quantization_config

logger = logging.getLogger("qinsight")


def choose_attention(requested: str | None, device: torch.device, dtype: torch.dtype) -> str:
    if requested:
        return requested
    half = dtype in (torch.float16, torch.bfloat16)
    if device.type == "cuda" and half and importlib.util.find_spec("flash_attn") is not None:
        try:
            from transformers.utils import is_flash_attn_2_available

            if is_flash_attn_2_available():
                return "flash_attention_2"
        except ImportError:
            pass
    return "sdpa"


def _torchvision_works() -> bool:
    try:
        import torchvision  # noqa: F401
    except Exception:  # absent, or a build that does not match torch
        return False
    return True


def load_processor(folder: Path, trust_remote_code: bool = False) -> Any:
    """The checkpoint's processor, left-padding for batched generation.

    transformers 5 builds Qwen2.5-VL's video processor with torchvision; where torchvision is missing
    or broken, an image-only processor from the same files is used instead.
    """
    from transformers import AutoProcessor

    if _torchvision_works():
        processor = AutoProcessor.from_pretrained(folder, local_files_only=True, trust_remote_code=trust_remote_code)
    else:
        processor = _image_only_processor_class().from_pretrained(folder, local_files_only=True)
    if not hasattr(processor, "image_processor"):
        raise ModelLoadError(f"{folder} did not give a vision processor (got {type(processor).__name__})")
    processor.tokenizer.padding_side = "left"
    return processor


def _image_only_processor_class() -> type:
    from transformers import Qwen2_5_VLProcessor
    from transformers.processing_utils import ProcessorMixin

    class ImageOnlyQwen2_5_VLProcessor(Qwen2_5_VLProcessor):
        """Qwen2.5-VL's processor without the video modality, which needs torchvision."""

        attributes = ["image_processor", "tokenizer"]  # transformers 4.x checks the parts against this

        def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
            self.image_token = getattr(tokenizer, "image_token", None) or "<|image_pad|>"
            self.video_token = getattr(tokenizer, "video_token", None) or "<|video_pad|>"
            self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
            self.video_token_id = tokenizer.convert_tokens_to_ids(self.video_token)
            ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)

    return ImageOnlyQwen2_5_VLProcessor


def _warn_if_broken_transformers() -> None:
    """pip keeps these releases out; this catches an environment that has one anyway."""
    import transformers
    from packaging.version import Version

    if Version("4.54") <= Version(transformers.__version__) < Version("4.57"):
        logger.warning(
            "transformers %s gives Qwen2.5-VL different answers in padded batches than alone; "
            "use 4.51.3-4.53.x or 4.57.1 and newer",
            transformers.__version__,
        )


def dtype_argument(dtype: torch.dtype) -> dict[str, torch.dtype]:
    import transformers
    from packaging.version import Version

    name = "dtype" if Version(transformers.__version__) >= Version("4.56") else "torch_dtype"
    return {name: dtype}


def load_model(
    folder: Path,
    device: str | torch.device = "auto",
    dtype: str | torch.dtype = "auto",
    attn_implementation: str | None = None,
    trust_remote_code: bool = False,
    quantization: Quantization = None,
) -> tuple[Any, Any, torch.device]:
    """The checkpoint's model (in eval mode, on its device), its processor, and that device.

    Weights load from safetensors only; any failure becomes a ``ModelLoadError`` naming the folder.
    ``quantization`` ("8bit", "4bit"): see :mod:`qinsight_sdk.backends.quantization`; ``dtype`` is then the
    dtype of the unquantized modules and of the computation.
    """
    from transformers import Qwen2_5_VLForConditionalGeneration

    _warn_if_broken_transformers()
    chosen_device = choose_device(device)
    chosen_dtype = choose_dtype(dtype, chosen_device)
    attention = choose_attention(attn_implementation, chosen_device, chosen_dtype)
    quantized = quantization_config(quantization, chosen_dtype)
    # bitsandbytes quantizes while placing the weights: only a device map puts them on their device
    placed = chosen_device.type == "cuda" or quantized is not None
    try:
        processor = load_processor(folder, trust_remote_code)
        model = Qwen2_5_VLForConditionalGeneration.from_pretrained(
            folder,
            local_files_only=True,
            use_safetensors=True,
            trust_remote_code=trust_remote_code,
            attn_implementation=attention,
            low_cpu_mem_usage=True,
            device_map={"": chosen_device} if placed else None,
            quantization_config=quantized,
            **dtype_argument(chosen_dtype),
        )
    except ModelLoadError:
        raise
    except Exception as exc:
        raise ModelLoadError(
            f"could not load the model from {folder}: {type(exc).__name__}: {exc}"
            f"{_quantization_hint(quantized, chosen_device)}"
        ) from exc
    if not placed:
        model.to(chosen_device)
    return model.eval(), processor, chosen_device


def _quantization_hint(quantized: Any, device: torch.device) -> str:
    import transformers
    from packaging.version import Version

    if quantized is not None and device.type == "cpu" and Version(transformers.__version__) < Version("4.57"):
        return (
            f" (transformers {transformers.__version__} refuses bitsandbytes on the CPU; "
            "4.57.1 and newer quantize there)"
        )
    return ""
