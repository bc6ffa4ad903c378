"""How answer tokens are chosen: greedy by default, so the same image always gets the same answer."""

from __future__ import annotations

import copy
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any, Iterator

import torch
from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList

from .errors import UsageError


@dataclass(frozen=True)
class DecodingOptions:
    """Decoding settings. Greedy unless ``do_sample``; sampling is seeded so runs repeat.

    ``repetition_penalty`` None keeps the checkpoint's own (Qwen2.5-VL ships 1.05, and the official
    demos ran with it). ``num_samples`` > 1 draws several answers per image (needs sampling) and the
    judge averages scores or takes the majority verdict. ``min_new_tokens`` forces answers to a length
    (for benchmarks that must compare equal amounts of work).
    """

    max_new_tokens: int = 512
    min_new_tokens: int = 0
    do_sample: bool = False
    temperature: float = 1.0
    top_k: int = 50
    top_p: float = 0.95
    seed: int = 42
    num_samples: int = 1
    repetition_penalty: float | None = None

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise UsageError(f"max_new_tokens must be at least 1, got {self.max_new_tokens}")
        if self.num_samples < 1:
            raise UsageError(f"num_samples must be at least 1, got {self.num_samples}")
        if self.num_samples > 1 and not self.do_sample:
            raise UsageError("num_samples > 1 needs do_sample=True: greedy decoding gives one answer")
        if self.do_sample and not (self.temperature > 0 and 0 < self.top_p <= 1 and self.top_k >= 0):
            raise UsageError("sampling needs temperature > 0, 0 < top_p <= 1 and top_k >= 0")

    @classmethod
    def official_demo(cls, **overrides: Any) -> "DecodingOptions":
        """Exactly what Q-Insight's demo scripts sampled with: ``generate(do_sample=True, temperature=1.0,
        top_k=50, top_p=0.95, max_new_tokens=1024)`` after seeding 42. Keyword arguments win over the
        checkpoint's generation_config.json (temperature 0.1, top-k 1, top-p 0.001), except the one the demo
        did not pass, the repetition penalty: the checkpoint's 1.05 applies. A test checks token for token
        that this gives what the demo's call gives, under each supported transformers release."""
        return replace(cls(do_sample=True, max_new_tokens=1024), **overrides)

    def generation_config(self, base: GenerationConfig) -> tuple[GenerationConfig, LogitsProcessorList]:
        """The checkpoint's generation config with these options applied, plus extra logits processors."""
        config = copy.deepcopy(base)
        config.max_new_tokens = self.max_new_tokens
        config.min_new_tokens = self.min_new_tokens or None
        config.do_sample = self.do_sample
        config.num_return_sequences = self.num_samples
        if self.do_sample:
            config.temperature, config.top_k, config.top_p = self.temperature, self.top_k, self.top_p
        else:
            # neutral values rather than None: transformers 5 fills None from the checkpoint's defaults
            config.temperature, config.top_k, config.top_p = 1.0, 50, 1.0
        penalty = self.repetition_penalty if self.repetition_penalty is not None else \
            (config.repetition_penalty or 1.0)
        config.repetition_penalty = 1.0
        processors = LogitsProcessorList()
        if penalty != 1.0:
            processors.append(PaddingBlindRepetitionPenalty(penalty, config.pad_token_id))
        return config, processors


class PaddingBlindRepetitionPenalty(LogitsProcessor):
    """The usual repetition penalty, except that left-padding tokens do not count as seen.

    The stock processor penalises every id in the row, so a padded row in a batch would see the pad
    token (Qwen's pad is also an end-of-sequence token) as already used, and a batched answer could
    differ from the same image's answer alone. Ignoring the pad id keeps the two identical.
    """

    def __init__(self, penalty: float, pad_token_id: int | None) -> None:
        self.penalty = float(penalty)
        self.pad_token_id = pad_token_id

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        seen = torch.gather(scores, 1, input_ids)
        seen = torch.where(seen < 0, seen * self.penalty, seen / self.penalty)
        penalised = scores.scatter(1, input_ids, seen)
        if self.pad_token_id is not None:
            penalised[:, self.pad_token_id] = scores[:, self.pad_token_id]
        return penalised


@contextmanager
def seeded(seed: int | None, device: torch.device) -> Iterator[None]:
    """Seed torch for one call without disturbing the caller's random state."""
    if seed is None:
        yield
        return
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield
