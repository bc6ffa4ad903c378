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

On a CPU with AVX-512 BF16, bitsandbytes runs a 4-bit layer at inference through its own kernel, in bf16
whatever the compute dtype: the layer's input is rounded to bf16. That kernel computes every row alike,
whatever the batch; the float32 parts before it do not quite: PyTorch's matrix products differ in the last
bits with the number of rows (first in the vision merger's MLP: 6e-6 between one image's 4 rows and 8
images' 32), and where such a difference straddles a bf16 rounding boundary, the layer's input moves by a
whole bf16 step (0.4%). So on such CPUs a few images' 4-bit fast scores depend on the batch size: on the
tiny judge 3 of 64 images moved by 1.2e-3 to 1.3e-3 between batch sizes 1 and 8, the others by under 3e-6
(the most seen: 1.6e-3); the tests allow 5e-3. Elsewhere (4-bit layers dequantized to the compute dtype),
and in full precision and 8-bit, fast scores stay within 2e-6 of each other across batch sizes. Keeping
bitsandbytes' float32 path on such CPUs would give that too, but it dequantizes the whole weight at each
call: one generated token through a 7B-shaped 4-bit MLP layer took 288 ms instead of 12 (2-core CPU), so
the bf16 kernel stays.
"""

from __future__ import annotations

import logging
import sys
import threading
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from ..errors import MissingDependencyError, UsageError

QUANTIZATIONS = ("8bit", "4bit")
# the share of a bf16 checkpoint's bytes its weights keep once quantized: bench/memory.py's arithmetic over
# the 7B shape (10.1 and 6.9 of 16.6 GB)
KEPT_SHARE = {"8bit": 0.61, "4bit": 0.42}
INSTALL_HINT = "pip install 'qinsight[quant]' (for the ComfyUI nodes: pip install bitsandbytes, in ComfyUI's Python)"
# matched as a prefix of module names from transformers 4.52 on (model.visual...), as a substring before
UNQUANTIZED_MODULES = ["visual", "model.visual", "lm_head"]

if TYPE_CHECKING:  # annotations only: the command line reads QUANTIZATIONS without importing torch
    import torch

Quantization = str | Any | None  # "8bit" | "4bit" | a transformers BitsAndBytesConfig | None (full)


# bitsandbytes' CPU backend asks the `kernels` package for this kernel when it is imported (see import_bitsandbytes)
_HUB_KERNEL_LOGGER = "bitsandbytes.backends.cpu.ops"
_HUB_KERNEL_NOTICE = "Failed to load CPU gemm_4bit_forward from kernels-community"
_importing = threading.Lock()
_ABSENT = object()


def import_bitsandbytes() -> ModuleType:
    """bitsandbytes, imported without fetching a CPU kernel from the Hugging Face Hub; ``ImportError`` if absent.

    On a CPU with AVX-512 BF16 (also the host CPU of many GPU machines), bitsandbytes (0.50.2, say) asks
    the ``kernels`` package, when it is installed (transformers 5 installs it), for
    ``kernels-community/quantization-bitsandbytes`` while being imported: a network round trip on every
    import (the publisher check; a download the first time), and a logged warning whenever that fails,
    offline or with ``HF_HUB_OFFLINE=1``. qinsight keeps runs offline and quiet: during its own import of
    bitsandbytes, ``kernels`` cannot be imported, so bitsandbytes falls back to the 4-bit kernel it ships,
    and its notice about that fallback is dropped. Nothing else changes: ``kernels`` imports as before
    afterwards, and ``HF_HUB_OFFLINE`` is not touched.

    The shipped kernel computes each row of a batch on its own (a test checks it bitwise from 1 to 300
    rows); the Hub's switches arithmetic with the number of rows (above 4 rows, and above 100), so with it
    a fast score would depend on the batch size more. A bitsandbytes already imported (by your own code,
    say) is returned as it is, with whichever kernel it chose.
    """
    with _importing:
        if sys.modules.get("bitsandbytes") is not None:
            return sys.modules["bitsandbytes"]
        kernels = sys.modules.get("kernels", _ABSENT)
        sys.modules["kernels"] = None  # `from kernels import get_kernel` raises ImportError: no Hub lookup
        notice = logging.getLogger(_HUB_KERNEL_LOGGER)
        notice.addFilter(_drop_hub_kernel_notice)
        try:
            import bitsandbytes
        finally:
            notice.removeFilter(_drop_hub_kernel_notice)
            if kernels is _ABSENT:
                del sys.modules["kernels"]
            else:
                sys.modules["kernels"] = kernels
        return bitsandbytes


def require_bitsandbytes(purpose: str = "quantization (8-bit and 4-bit judges)") -> None:
    """A ``MissingDependencyError`` saying how to install bitsandbytes, unless it imports (as
    :func:`import_bitsandbytes` does: offline and quiet)."""
    try:
        import_bitsandbytes()
    except ImportError as exc:
        raise MissingDependencyError(
            f"{purpose} needs bitsandbytes, which could not be imported ({exc}): {INSTALL_HINT}"
        ) from None


def quantization_config(quantization: Quantization, compute_dtype: torch.dtype) -> Any:
    """The ``BitsAndBytesConfig`` for a mode name (a config given as such is used as it is); None for full."""
    if quantization is None or quantization in ("none", "full"):
        return None
    require_bitsandbytes()
    from transformers import BitsAndBytesConfig

    if isinstance(quantization, BitsAndBytesConfig):
        return quantization
    if quantization == "4bit":
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=compute_dtype,
            llm_int8_skip_modules=list(UNQUANTIZED_MODULES),
        )
    if quantization == "8bit":
        # bitsandbytes logs on every layer call that LLM.int8 multiplies in float16: by design, not news
        logging.getLogger("bitsandbytes.autograd._functions").addFilter(_drop_float16_cast_notice)
        return BitsAndBytesConfig(
            load_in_8bit=True, llm_int8_threshold=0.0, llm_int8_skip_modules=list(UNQUANTIZED_MODULES)
        )
    raise UsageError(
        f"quantization must be one of none, {', '.join(QUANTIZATIONS)} or a BitsAndBytesConfig, got {quantization!r}"
    )


def quantized_size(folder: Path, quantization: str) -> int:
    """About how many bytes the weights in ``folder`` take once quantized, before loading them: for making
    room on a device first. From the safetensors files' size, as if bf16 (an fp32 checkpoint is
    over-estimated, the safe side for making room)."""
    stored = sum(path.stat().st_size for path in Path(folder).glob("*.safetensors"))
    return int(stored * KEPT_SHARE[quantization])


def quantization_name(model: Any) -> str | None:
    """ "8bit" or "4bit" for a model loaded through bitsandbytes, None for one in full precision."""
    if getattr(model, "is_loaded_in_4bit", False):
        return "4bit"
    if getattr(model, "is_loaded_in_8bit", False):
        return "8bit"
    return None


def _drop_float16_cast_notice(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith("MatMul8bitLt: inputs will be cast")


def _drop_hub_kernel_notice(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith(_HUB_KERNEL_NOTICE)
