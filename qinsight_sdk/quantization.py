"""8-bit and 4-bit judges through bitsandbytes, so a 7B judge fits beside a diffusion model on one card.

Only the language model's linear layers are quantized. These stay in the compute dtype, because the
judge's answers depend on them more than their size is worth:

- the vision tower and its merger (``visual``): about 0.68 B of the 8.3 B parameters (1.4 GB in bf16).
  They are what sees noise, blur and compression; an error in their features is read as a degradation.
- ``lm_head``: the fast score is the expected value of the rating digits' probabilities, read straight
  from its logits; transformers keeps it unquantized by default too.
- the token embeddings: bitsandbytes quantizes linear layers only.

4-bit is NF4 with double quantization, computing in the model's dtype (bf16 on a GPU). 8-bit is
LLM.int8 *without* its outlier split (``llm_int8_threshold=0``): the split picks its fp16 columns from the
whole batch's activations, so with the default threshold an image's fast score changes with the images
batched beside it (measured on the tiny judge: by up to 5e-2; with 0, under 2e-7). The split exists to keep
very large models accurate; ``bench/memory.py`` measures how far each mode's fast scores agree with full
precision. Pass a ``BitsAndBytesConfig`` of your own for other choices.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

from .errors import MissingDependencyError, UsageError

QUANTIZATIONS = ("8bit", "4bit")
# the share of a bf16 checkpoint's bytes its weights keep once quantized: bench/memory.py's arithmetic over
# the 7B shape (10.1 and 6.9 of 16.6 GB)
KEPT_SHARE = {"8bit": 0.61, "4bit": 0.42}
INSTALL_HINT = "pip install 'qinsight[quant]' (for the ComfyUI nodes: pip install bitsandbytes, in ComfyUI's Python)"
# matched as a prefix of module names from transformers 4.52 on (model.visual...), as a substring before
UNQUANTIZED_MODULES = ["visual", "model.visual", "lm_head"]

if TYPE_CHECKING:  # annotations only: the command line reads QUANTIZATIONS without importing torch
    import torch

Quantization = Union[str, Any, None]   # "8bit" | "4bit" | a transformers BitsAndBytesConfig | None (full)


def require_bitsandbytes(purpose: str = "quantization (8-bit and 4-bit judges)") -> None:
    """A ``MissingDependencyError`` saying how to install bitsandbytes, unless it imports."""
    try:
        import bitsandbytes  # noqa: F401
    except ImportError as exc:
        raise MissingDependencyError(f"{purpose} needs bitsandbytes, which could not be imported ({exc}): "
                                     f"{INSTALL_HINT}") from None


def quantization_config(quantization: Quantization, compute_dtype: torch.dtype) -> Any:
    """The ``BitsAndBytesConfig`` for a mode name (a config given as such is used as it is); None for full."""
    if quantization is None or quantization in ("none", "full"):
        return None
    require_bitsandbytes()
    from transformers import BitsAndBytesConfig

    if isinstance(quantization, BitsAndBytesConfig):
        return quantization
    if quantization == "4bit":
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                  bnb_4bit_compute_dtype=compute_dtype,
                                  llm_int8_skip_modules=list(UNQUANTIZED_MODULES))
    if quantization == "8bit":
        # bitsandbytes logs on every layer call that LLM.int8 multiplies in float16: by design, not news
        logging.getLogger("bitsandbytes.autograd._functions").addFilter(_drop_float16_cast_notice)
        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_threshold=0.0,
                                  llm_int8_skip_modules=list(UNQUANTIZED_MODULES))
    raise UsageError(f"quantization must be one of none, {', '.join(QUANTIZATIONS)} or a BitsAndBytesConfig, "
                     f"got {quantization!r}")


def quantized_size(folder: Path, quantization: str) -> int:
    """About how many bytes the weights in ``folder`` take once quantized, before loading them: for making
    room on a device first. From the safetensors files' size, as if bf16 (an fp32 checkpoint is
    over-estimated, the safe side for making room)."""
    stored = sum(path.stat().st_size for path in Path(folder).glob("*.safetensors"))
    return int(stored * KEPT_SHARE[quantization])


def quantization_name(model: Any) -> str | None:
    """"8bit" or "4bit" for a model loaded through bitsandbytes, None for one in full precision."""
    if getattr(model, "is_loaded_in_4bit", False):
        return "4bit"
    if getattr(model, "is_loaded_in_8bit", False):
        return "8bit"
    return None


def _drop_float16_cast_notice(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith("MatMul8bitLt: inputs will be cast")
