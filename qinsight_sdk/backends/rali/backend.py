"""The RALI backend: CLIP's image processor from ``best/``, then the scorer, a batch at a time.

RALI answers one question, how good an image is, with a number and no text: its fast score is the
expectation of its prototype distribution (:class:`~.model.PrototypeDistribution`). Asking it to write
(reasoning, degradation, comparison) is refused with what to use instead.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from ...errors import ModelLoadError, UsageError
from ...io.images import ImageBounds, fit_within
from ...judging.decoding import DecodingOptions
from ...judging.prompts import Message
from ..base import EncodedBatch, Generation
from ..devices import choose_device
from . import CLIP_FOLDER
from .model import PrototypeDistribution, RaliScorer, load_scorer


class NativeSize:
    """How RALI takes an image: as it is (its processor resizes and crops), shrunk only beyond the
    bounds' pixel count so that a huge image cannot exhaust memory; each costs the same to judge."""

    def __init__(self, side: int) -> None:
        self.side = side

    def fit(self, width: int, height: int, bounds: ImageBounds, name: str = "image") -> tuple[int, int]:
        return fit_within(width, height, bounds.max_pixels, name)

    def tokens(self, width: int, height: int) -> int:
        return self.side * self.side // (14 * 14)  # about a ViT-L/14 sequence; only relative cost matters


class RaliBackend:
    """A loaded RALI scorer and its CLIP image processor."""

    writes_text = False

    def __init__(self, model: RaliScorer, processor: Any, device: torch.device) -> None:
        self.model = model
        self.processor = processor
        self.device = device
        crop = getattr(processor, "crop_size", None) or {}
        side = int(crop.get("height", 0) or crop.get("shortest_edge", 0) or 224)
        self.geometry = NativeSize(side)

    @classmethod
    def load(cls, folder: Path, device: str | torch.device = "auto", **_ignored: Any) -> RaliBackend:
        """RALI from ``folder`` (the released layout), on ``device``, in fp32 as the official demo runs it.

        Options for a generating model (dtype, attention, quantization) do not apply and are ignored."""
        device = choose_device(device)
        model = load_scorer(folder).to(device)
        return cls(model, _image_processor(folder / CLIP_FOLDER), device)

    @property
    def dtype(self) -> torch.dtype:
        return torch.float32

    @property
    def module(self) -> torch.nn.Module:
        """The weights as one module, for a memory manager (ComfyUI's) to move, offload and free."""
        return self.model

    @property
    def quantization(self) -> str | None:
        return None

    def memory_footprint(self) -> int:
        return sum(t.numel() * t.element_size() for t in [*self.model.parameters(), *self.model.buffers()])

    def to(self, device: str | torch.device) -> RaliBackend:
        self.device = torch.device(device)
        self.model.to(self.device)
        return self

    def reusing_images(self) -> Any:
        return contextlib.nullcontext()  # one pass per image already: nothing to reuse

    def encode(
        self,
        conversations: Sequence[Sequence[Message]],
        images: Sequence[Sequence[Image.Image]],
        answer_prefix: str = "",
        template_options: Mapping[str, Any] | None = None,
    ) -> EncodedBatch:
        """The processor's pixel values for each row's one image (the conversation is not read)."""
        if any(len(row) != 1 for row in images):
            raise UsageError("RALI judges one image at a time; it cannot compare images")
        pixels = self.processor(images=[row[0] for row in images], return_tensors="pt")["pixel_values"]
        return EncodedBatch(pixels, [1] * len(images))

    def rating_distributions(self, batch: EncodedBatch) -> list[PrototypeDistribution]:
        """Per image, the prototype weights and scores, whose expectation is RALI's score."""
        with torch.inference_mode():
            weights = self.model(batch.inputs.to(self.device)).double().cpu()
        scores = self.model.proto_scores.double().cpu()
        return [PrototypeDistribution(row, scores) for row in weights]

    def generate(
        self, batch: EncodedBatch, decoding: DecodingOptions, rating_key: str | None = None
    ) -> list[list[Generation]]:
        raise UsageError(
            "RALI scores images without writing text: use mode='fast' for scores (there is no "
            "reasoning, degradation or comparison); load a Q-Insight checkpoint for those"
        )


def _image_processor(folder: Path) -> Any:
    """CLIP's image processor as the official demo ran it (transformers 4.51's PIL-based one): under
    transformers 5 its PIL backend, not the torchvision default, whose resize differs."""
    import transformers

    kind = getattr(transformers, "CLIPImageProcessorPil", None) or transformers.CLIPImageProcessor
    try:
        return kind.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{folder}: CLIP's image processor cannot be read ({exc})") from None
