"""What a judge needs from a model: the ``Backend`` protocol, and the values that cross it.

``QualityJudge`` is written against this protocol alone, so a quantized model, a remote server or a
scripted stand-in (``testing.ScriptedBackend``) can sit behind it. A backend turns conversations with
images into encoded batches (on the CPU, possibly in a helper thread), and encoded batches into answers
(``generate``) or into the probabilities of a rating's digits (``rating_distributions``, fast scores).

Optional, where a backend has them: ``module`` (its weights as one ``torch.nn.Module``, which ComfyUI's
model management holds), ``geometry`` (an :class:`~qinsight_sdk.io.images.ImageGeometry`; default Qwen2-VL's
patch grid), ``writes_text`` (False: it scores in fast mode only) and ``quantization``. A remote or
engine-managed backend leaves them out rather than faking them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch
from PIL import Image

from ..judging.decoding import DecodingOptions
from ..judging.prompts import Message


@dataclass(frozen=True)
class EncodedBatch:
    """Model inputs for one batch, prepared on the CPU (possibly while the model runs another)."""

    inputs: Any  # for QwenVLBackend a BatchFeature: input_ids, attention_mask, pixel_values, ...
    images_per_row: list[int]
    image_keys: tuple[str, ...] = ()  # each image's pixels' digest, for a backend that encodes an image once


@dataclass(frozen=True)
class RatingDistribution:
    """The model's belief about a rating "d.ef", read where the rating starts.

    ``first[i]`` is the probability that the rating starts with the digit ``i + 1`` (1..5, renormalised
    over those five); ``decimals[i, k]`` that the first decimal is ``k`` given that first digit;
    ``hundredths[i, k, m]`` that the second decimal is ``m`` given both (None: not read, counted as 0).
    Each is a distribution over digit tokens only, as if the model wrote a rating with two decimals, as
    the prompt asks.
    """

    first: torch.Tensor  # (5,) float64
    decimals: torch.Tensor  # (5, 10) float64
    hundredths: torch.Tensor | None = None  # (5, 10, 10) float64

    def expected(self) -> tuple[float, float]:
        """Mean and standard deviation of the rating d + e/10 + f/100 under this distribution: the exact
        expectation over all 500 two-decimal ratings (each first digit with its own decimals)."""
        digits = torch.arange(10, dtype=torch.float64)
        values = (
            torch.arange(1, 6, dtype=torch.float64)[:, None, None]
            + digits[None, :, None] / 10
            + digits[None, None, :] / 100
        )
        hundredths = (
            self.hundredths
            if self.hundredths is not None
            else torch.nn.functional.one_hot(torch.zeros(5, 10, dtype=torch.long), 10).double()
        )
        joint = self.first[:, None, None] * self.decimals[:, :, None] * hundredths
        mean = (joint * values).sum()
        variance = (joint * (values - mean) ** 2).sum()
        return float(mean), float(variance.clamp_min(0).sqrt())


@dataclass(frozen=True)
class TwoDigitDistribution:
    """The model's belief about a two-digit rating "de" (10 to 99) on a 0-100 scale, read where it starts.

    ``tens[i]`` is the probability that the rating starts with the digit ``i + 1`` (1..9, renormalised over
    those nine); ``units[i, k]`` that the next digit is ``k`` given that first digit. As if the model wrote a
    whole number from 10 to 99, which is where the video judges' scores lie (their decimals, a rating below
    10 or of 100 are outside this reading).
    """

    tens: torch.Tensor  # (9,) float64
    units: torch.Tensor  # (9, 10) float64

    def expected(self) -> tuple[float, float]:
        """Mean and standard deviation of the rating 10 d + e under this distribution (all 90 ratings)."""
        values = 10 * torch.arange(1, 10, dtype=torch.float64)[:, None] + torch.arange(10, dtype=torch.float64)
        joint = self.tens[:, None] * self.units
        mean = (joint * values).sum()
        variance = (joint * (values - mean) ** 2).sum()
        return float(mean), float(variance.clamp_min(0).sqrt())


@dataclass(frozen=True)
class Generation:
    """One answer: its text, whether the model ended it (False: cut at ``max_new_tokens``), how many
    tokens it took (None where a backend does not count), and, when asked, the model's probabilities at
    the rating it wrote (None where it wrote none, or a backend cannot tell)."""

    text: str
    finished: bool
    tokens: int | None = None
    rating: RatingDistribution | None = None


@runtime_checkable
class Backend(Protocol):
    """A model a ``QualityJudge`` can ask questions about images."""

    @property
    def device(self) -> torch.device:
        """Where the model runs."""

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of the model's weights."""

    def encode(
        self,
        conversations: Sequence[Sequence[Message]],
        images: Sequence[Sequence[Image.Image]],
        answer_prefix: str,
        template_options: Mapping[str, Any] | None = None,
    ) -> EncodedBatch:
        """One batch's inputs, prepared on the CPU; safe off the main thread.

        Args:
            conversations: per row, the chat messages (with image placeholders).
            images: per row, its images, in placeholder order.
            answer_prefix: text that starts each answer, forced (fast scores force it up to the rating).
            template_options: keyword arguments for the chat template (a judge profile's, such as
                ``add_vision_id``).

        Returns:
            The batch, ready for :meth:`generate` or :meth:`rating_distributions`.
        """

    def generate(
        self, batch: EncodedBatch, decoding: DecodingOptions, rating_key: str | None = None
    ) -> list[list[Generation]]:
        """The model's answers.

        Args:
            batch: from :meth:`encode`.
            decoding: how to decode.
            rating_key: a regular expression the answer matches just before its rating's first digit; each
                answer's ``rating`` then holds the model's probabilities at the digits it wrote there.

        Returns:
            Per row, in order, ``decoding.num_samples`` answers.
        """

    def rating_distributions(self, batch: EncodedBatch) -> list[RatingDistribution]:
        """The rating's digit probabilities after the forced prefix (fast scores).

        Args:
            batch: from :meth:`encode`, with the answer forced up to the rating.

        Returns:
            One distribution per row, in order.
        """

    def reusing_images(self) -> AbstractContextManager[None]:
        """A block within which an image's encoding may be reused by later batches (a ranking asks about
        the same images many times); a backend that cannot returns ``contextlib.nullcontext()``."""

    def memory_footprint(self) -> int:
        """Bytes the weights take on their device."""

    def to(self, device: str | torch.device) -> Backend:
        """Move the weights, and where inputs go.

        Args:
            device: where to move them.

        Returns:
            The backend itself.
        """
