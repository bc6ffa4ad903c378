"""How answer tokens are chosen: greedy by default, so the same image always gets the same answer."""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList

from ..errors import ModelLoadError, UsageError

logger = logging.getLogger("qinsight")

# The sampling values the official demos passed in their GenerationConfig object, and transformers 4.51.3's
# library defaults for the same keys (written out: later releases changed some defaults to None).
DEMO_SAMPLING = {"temperature": 1.0, "top_k": 50, "top_p": 0.95, "repetition_penalty": 1.0}
LIBRARY_DEFAULTS_4_51 = {"temperature": 1.0, "top_k": 50, "top_p": 1.0, "repetition_penalty": 1.0}
FIRST_RELEASE_WITH_MODEL_DEFAULTS = (4, 50)  # 4.51.3: "model_base_version >= 4.50.0" swaps defaults


@dataclass(frozen=True)
class DecodingOptions:
    """Decoding settings. Greedy unless ``do_sample``; sampling is seeded so runs repeat.

    Attributes:
        max_new_tokens: the longest answer, in tokens.
        min_new_tokens: forces answers to at least this length (for benchmarks that must compare equal
            amounts of work); 0: none.
        do_sample: sample instead of decoding greedily.
        temperature: the sampling temperature.
        top_k: sample among the ``top_k`` likeliest tokens (0: all).
        top_p: sample within this share of the probability.
        seed: the seed sampling starts from, so runs repeat.
        num_samples: answers drawn per image (needs sampling); the judge averages scores or takes the
            majority verdict.
        repetition_penalty: None keeps the checkpoint's own (Qwen2.5-VL ships 1.05, and the official
            demos ran with it); 1.0 turns it off.

    Raises:
        UsageError: a value that cannot be (fewer than one token or sample, several samples while
            greedy, a sampling value out of range).
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
    def official_demo(
        cls, checkpoint: GenerationConfig | Mapping[str, Any] | str | Path, **overrides: Any
    ) -> DecodingOptions:
        """What Q-Insight's demo scripts really sampled with on ``checkpoint`` (its folder, its
        generation_config.json read as a mapping, or a loaded ``GenerationConfig``), after seeding 42.

        The demos pass an object, ``generate(generation_config=GenerationConfig(do_sample=True,
        temperature=1.0, top_k=50, top_p=0.95, max_new_tokens=1024))``, under transformers 4.51.3, which
        replaces every value of such an object that equals the library's default with the checkpoint's own
        when the checkpoint's generation_config.json was saved by transformers 4.50 or later. On a
        checkpoint saved so with Qwen2.5-VL's values (temperature 0.1, top-k 1, repetition penalty 1.05),
        the demo therefore sampled at top-k 1: the most likely token after the penalty, i.e. our greedy
        answer. On an older save the object's values stand (and no repetition penalty). The values here are
        resolved the way 4.51.3 resolved them, whatever transformers is installed;
        :func:`official_demo_sampling` says which case applied.

        Args:
            checkpoint: the checkpoint's folder, its generation_config.json as a mapping, or a loaded
                ``GenerationConfig``.
            **overrides: fields to set on the result, such as ``num_samples`` or ``max_new_tokens``.

        Returns:
            Sampling options, up to 1024 new tokens unless overridden.
        """
        values, why = official_demo_sampling(checkpoint)
        logger.info("official demo decoding: %s", why)
        return replace(cls(do_sample=True, max_new_tokens=1024, **values), **overrides)

    def generation_config(self, base: GenerationConfig) -> tuple[GenerationConfig, LogitsProcessorList]:
        """The checkpoint's generation config with these options applied, plus extra logits processors.

        Args:
            base: the checkpoint's generation config (not changed: a copy is returned).

        Returns:
            The config to generate with, and the logits processors to pass along (the repetition penalty,
            applied so that left padding does not count as seen).
        """
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
        penalty = self.repetition_penalty if self.repetition_penalty is not None else (config.repetition_penalty or 1.0)
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

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.Tensor:
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


def official_demo_sampling(
    checkpoint: GenerationConfig | Mapping[str, Any] | str | Path,
) -> tuple[dict[str, Any], str]:
    """The sampling values the demo's call resolved to on ``checkpoint`` under transformers 4.51.3, and which
    case applied, in words.

    4.51.3's ``_prepare_generation_config``: when ``generation_config=`` is given and the model's own
    generation config records transformers >= 4.50 (a generation_config.json without a version is read as
    the running 4.51.3), each value of the given object that equals the library default is replaced by the
    model's value where that differs from the default. Otherwise only token ids are filled in."""
    saved, version = _saved_generation_values(checkpoint)
    if version is not None and _release(version) < FIRST_RELEASE_WITH_MODEL_DEFAULTS:
        return dict(DEMO_SAMPLING), (
            f"the checkpoint's generation_config.json was saved by transformers {version} "
            "(before 4.50), so the demo's own values stood: temperature 1.0, top-k 50, "
            "top-p 0.95, no repetition penalty"
        )
    values, replaced = dict(DEMO_SAMPLING), []
    for key, default in LIBRARY_DEFAULTS_4_51.items():
        own = saved.get(key)
        if DEMO_SAMPLING[key] == default and own is not None and own != default:
            values[key] = own
            replaced.append(f"{key.replace('_', ' ')} {default:g} -> {own:g}")
    saved_by = f"saved by transformers {version}" if version else "with no transformers version"
    if not replaced:
        return values, (
            f"the checkpoint's generation_config.json ({saved_by}) sets none of the demo's default "
            "values, so the demo's own values stood: temperature 1.0, top-k 50, top-p 0.95, "
            "no repetition penalty"
        )
    return values, (
        f"the checkpoint's generation_config.json was {saved_by} (4.50 or later), so transformers "
        f"4.51.3 replaced the demo's default values with the checkpoint's: {', '.join(replaced)}; "
        "top-p 0.95 stood"
    )


def _saved_generation_values(
    checkpoint: GenerationConfig | Mapping[str, Any] | str | Path,
) -> tuple[dict[str, Any], str | None]:
    """The sampling values a checkpoint's generation config sets (None where unset) and the transformers
    release that saved it (None: not recorded; no file at all reads as a file setting nothing)."""
    if isinstance(checkpoint, GenerationConfig):
        return {key: getattr(checkpoint, key, None) for key in DEMO_SAMPLING}, checkpoint.transformers_version
    if isinstance(checkpoint, (str, Path)):
        path = Path(checkpoint)
        path = path / "generation_config.json" if path.is_dir() else path
        if not path.exists():
            return {}, None
        try:
            checkpoint = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"{path}: cannot read the generation config: {exc}") from None
        if not isinstance(checkpoint, Mapping):
            raise ModelLoadError(f"{path}: the generation config is not a JSON object")
    return {key: checkpoint.get(key) for key in DEMO_SAMPLING}, checkpoint.get("transformers_version")


def _release(version: str) -> tuple[int, int]:
    from packaging.version import InvalidVersion, Version

    try:
        return Version(str(version)).release[:2]  # type: ignore[return-value]
    except InvalidVersion:
        raise ModelLoadError(f"the generation config's transformers_version {version!r} is not a version") from None
