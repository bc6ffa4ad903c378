"""``QualityJudge``: the one entry point for scoring, degradation perception and comparison.

Every task runs the same pipeline: normalise each input (a bad one becomes an error on that item
only), batch the good ones through the model, parse each answer, and aggregate samples. A failure in a
batch is retried image by image, so one item can never take the others down.
"""

from __future__ import annotations

import statistics
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar

import torch
from PIL import Image

from . import prompts
from .backend import Generation, QwenVLBackend
from .checkpoints import default_model, default_subfolder, resolve_checkpoint
from .decoding import DecodingOptions
from .errors import ImageInputError
from .images import ImageBounds, ImageInput, load_image, split_inputs
from .parsing import parse_comparison, parse_degradation, parse_score
from .prompts import Message, PromptOrder
from .results import ComparisonResult, DegradationResult, ScoreResult

R = TypeVar("R")
ResultCallback = Callable[[int, Any], None]


@dataclass
class _Item:
    """One request: its conversation and its images (paths or arrays until loaded)."""

    conversation: list[Message]
    sources: list[ImageInput]
    images: list[Image.Image] | None = None
    error: str | None = None


class QualityJudge:
    """Judges image quality with a Q-Insight checkpoint.

    Build it with :meth:`from_pretrained`. Results never raise for bad images or unreadable answers:
    each carries ``error`` instead, and the rest of the batch is judged as usual.
    """

    def __init__(self, backend: QwenVLBackend, *, decoding: DecodingOptions | None = None,
                 image_bounds: ImageBounds | None = None,
                 prompt_order: PromptOrder | str = PromptOrder.IMAGE_FIRST, batch_size: int = 8) -> None:
        self.backend = backend
        self.decoding = decoding or DecodingOptions()
        self.image_bounds = image_bounds or ImageBounds()
        self.prompt_order = PromptOrder(prompt_order)
        self.batch_size = batch_size

    @classmethod
    def from_pretrained(cls, model: str | Path | None = None, subfolder: str | None = None, *,
                        revision: str | None = None, device: str | torch.device = "auto",
                        dtype: str | torch.dtype = "auto", attn_implementation: str | None = None,
                        trust_remote_code: bool = False, local_files_only: bool = False,
                        cache_dir: str | None = None, **options: Any) -> "QualityJudge":
        """Load a checkpoint: a Hugging Face id (with subfolder and revision) or a local folder.

        ``model`` defaults to ``$QINSIGHT_MODEL``, else ``ByteDance/Q-Insight``, whose subfolder
        defaults to ``score_degradation``. Other keyword options go to the constructor.
        """
        model = str(model) if model is not None else default_model()
        if subfolder is None:
            subfolder = default_subfolder(model)
        folder = resolve_checkpoint(model, subfolder, revision, local_files_only, cache_dir)
        backend = QwenVLBackend.load(folder, device=device, dtype=dtype,
                                     attn_implementation=attn_implementation,
                                     trust_remote_code=trust_remote_code)
        return cls(backend, **options)

    # -- public tasks -------------------------------------------------------------------------------

    def score(self, images: Any, batch_size: int | None = None, decoding: DecodingOptions | None = None,
              on_result: ResultCallback | None = None) -> ScoreResult | list[ScoreResult]:
        """A 1-5 quality rating with reasoning for one image or each of many."""
        conversation = prompts.score_messages(self.prompt_order)
        return self._single_image_task(images, conversation, _score_result, ScoreResult,
                                       batch_size, decoding, on_result)

    def degradation(self, images: Any, batch_size: int | None = None,
                    decoding: DecodingOptions | None = None,
                    on_result: ResultCallback | None = None) -> DegradationResult | list[DegradationResult]:
        """The distortion (noise, compression, blur, darken or None) and its severity, per image."""
        conversation = prompts.degradation_messages(self.prompt_order)
        return self._single_image_task(images, conversation, _degradation_result, DegradationResult,
                                       batch_size, decoding, on_result)

    def compare(self, image_a: ImageInput, image_b: ImageInput, reference: ImageInput | None = None,
                both_orders: bool = False, decoding: DecodingOptions | None = None) -> ComparisonResult:
        """Which image is better: "A", "B" or "similar".

        With a reference (the degraded input of a restoration), the reference-based prompt of the
        comparison weights is used; without, the paper's zero-shot two-image prompt. ``both_orders``
        also asks with A and B swapped and keeps a verdict only if both agree (VLM judges favour a
        position); a disagreement becomes "similar" with ``consistent=False``.
        """
        conversation = prompts.comparison_messages(with_reference=reference is not None)
        prefix = [reference] if reference is not None else []
        items = [_Item(conversation, prefix + [image_a, image_b])]
        if both_orders:
            items.append(_Item(conversation, prefix + [image_b, image_a]))
        generations = self._run(items, len(items), decoding or self.decoding)
        results = [_comparison_result(g) if isinstance(g, list) else ComparisonResult(error=g)
                   for g in generations]
        return _reconcile(results[0], results[1]) if both_orders else results[0]

    # -- pipeline -----------------------------------------------------------------------------------

    def _single_image_task(self, images: Any, conversation: list[Message],
                           aggregate: Callable[[list[Generation]], R], result_type: Callable[..., R],
                           batch_size: int | None, decoding: DecodingOptions | None,
                           on_result: ResultCallback | None) -> R | list[R]:
        sources, single = split_inputs(images)
        items = [_Item(conversation, [source]) for source in sources]

        def finish(index: int, outcome: list[Generation] | str) -> R:
            result = aggregate(outcome) if isinstance(outcome, list) else result_type(error=outcome)
            if on_result is not None:
                on_result(index, result)
            return result

        outcomes = self._run(items, batch_size or self.batch_size, decoding or self.decoding, finish)
        return outcomes[0] if single else outcomes

    def _run(self, items: list[_Item], batch_size: int, decoding: DecodingOptions,
             finish: Callable[[int, list[Generation] | str], Any] | None = None) -> list[Any]:
        """Each item's generations (or its error message), finished in input order batch by batch."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        finish = finish or (lambda index, outcome: outcome)
        results: list[Any] = [None] * len(items)
        for start in range(0, len(items), batch_size):
            batch = list(range(start, min(start + batch_size, len(items))))
            for index in batch:
                self._load_images(items[index])
            ready = [i for i in batch if items[i].error is None]
            outcomes = dict(zip(ready, self._generate(ready, items, decoding)))
            for index in batch:
                items[index].images = None  # decoded pixels are not kept past their batch
                results[index] = finish(index, outcomes.get(index, items[index].error))
        return results

    def _load_images(self, item: _Item) -> None:
        try:
            item.images = [load_image(source, self.image_bounds) for source in item.sources]
        except ImageInputError as exc:
            item.error = str(exc)

    def _generate(self, indices: list[int], items: list[_Item],
                  decoding: DecodingOptions) -> list[list[Generation] | str]:
        if not indices:
            return []
        chosen = [items[i] for i in indices]
        try:
            return self.backend.generate([i.conversation for i in chosen], [i.images for i in chosen], decoding)
        except (RuntimeError, ValueError, IndexError) as exc:
            if len(indices) == 1:
                return [f"the model failed on this input: {type(exc).__name__}: {exc}"]
            return [self._generate([i], items, decoding)[0] for i in indices]


# -- aggregation of parsed answers --------------------------------------------------------------------

def _read_all(generations: list[Generation], parse: Callable[[str], Any],
              readable: Callable[[Any], bool]) -> tuple[list[Any], list[tuple[Generation, Any]]]:
    """Every answer parsed, and the (generation, parsed) pairs that gave a verdict."""
    parsed = [parse(g.text) for g in generations]
    return parsed, [(g, p) for g, p in zip(generations, parsed) if readable(p)]


def _unreadable(parsed: list[Any], generations: list[Generation]) -> str:
    cut = "" if generations[0].finished else " (the answer was cut off at max_new_tokens)"
    return f"{parsed[0].error}{cut}"


def _majority(good: list[tuple[Generation, Any]], verdict_of: Callable[[Any], Any]) -> tuple[Generation, Any]:
    """The first answer carrying the most common verdict."""
    verdict = Counter(verdict_of(p) for _, p in good).most_common(1)[0][0]
    return next((g, p) for g, p in good if verdict_of(p) == verdict)


def _score_result(generations: list[Generation]) -> ScoreResult:
    parsed, good = _read_all(generations, parse_score, lambda p: p.score is not None)
    if not good:
        return ScoreResult(reasoning=parsed[0].reasoning, raw=generations[0].text,
                           error=_unreadable(parsed, generations))
    scores = [p.score for _, p in good]
    generation, first = good[0]
    several = len(generations) > 1
    return ScoreResult(score=statistics.fmean(scores), reasoning=first.reasoning, raw=generation.text,
                       std=statistics.pstdev(scores) if several else None, samples=scores if several else [])


def _degradation_result(generations: list[Generation]) -> DegradationResult:
    parsed, good = _read_all(generations, parse_degradation, lambda p: p.error is None)
    if not good:
        first = parsed[0]
        return DegradationResult(first.distortion, first.severity, first.reasoning, generations[0].text,
                                 _unreadable(parsed, generations))
    generation, chosen = _majority(good, lambda p: (p.distortion, p.severity))
    return DegradationResult(chosen.distortion, chosen.severity, chosen.reasoning, generation.text)


def _comparison_result(generations: list[Generation]) -> ComparisonResult:
    parsed, good = _read_all(generations, parse_comparison, lambda p: p.winner is not None)
    if not good:
        return ComparisonResult(reasoning=parsed[0].reasoning, raw=generations[0].text,
                                error=_unreadable(parsed, generations))
    generation, chosen = _majority(good, lambda p: p.winner)
    return ComparisonResult(winner=chosen.winner, reasoning=chosen.reasoning, raw=generation.text)


_SWAPPED = {"A": "B", "B": "A", "similar": "similar", None: None}


def _reconcile(forward: ComparisonResult, backward: ComparisonResult) -> ComparisonResult:
    """Merge the (A, B) verdict with the (B, A) one, mapped back to the caller's labels."""
    back_winner = _SWAPPED[backward.winner]
    raw = f"[order A, B]\n{forward.raw}\n[order B, A]\n{backward.raw}"
    reasoning = "\n\n".join(f"[{label}] {r.reasoning}" for label, r in
                            (("order A, B", forward), ("order B, A", backward)) if r.reasoning) or None
    if forward.winner is None and back_winner is None:
        return ComparisonResult(reasoning=reasoning, raw=raw,
                                error=f"neither order gave a verdict: {forward.error}; {backward.error}")
    if forward.winner is None or back_winner is None:
        return ComparisonResult(winner=forward.winner or back_winner, reasoning=reasoning, raw=raw)
    agree = forward.winner == back_winner
    return ComparisonResult(winner=forward.winner if agree else "similar", reasoning=reasoning, raw=raw,
                            consistent=agree)
