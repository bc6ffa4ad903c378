"""``QualityJudge``: the one entry point for scoring, degradation perception and comparison.

Every task runs the same pipeline: normalise each input (a bad one becomes an error on that item
only), batch the good ones through the model, parse each answer, and aggregate samples. A failure in a
batch is retried image by image, so one item can never take the others down.
"""

from __future__ import annotations

import logging
import statistics
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence, TypeVar

import torch
from PIL import Image

from . import prompts
from .backend import Backend, Generation, RatingDistribution
from .qwen_vl import QwenVLBackend
from .checkpoints import default_model, default_subfolder, resolve_checkpoint
from .decoding import DecodingOptions
from .errors import ImageInputError, UsageError
from .images import PATCH_GRID, ImageBounds, ImageInput, load_image, split_inputs
from .parsing import parse_comparison, parse_degradation, parse_score
from .prompts import Message, PromptOrder
from .results import ComparisonResult, DegradationResult, ScoreResult
from .selection import Ranking, rank_images

R = TypeVar("R")
ResultCallback = Callable[[int, Any], None]


@dataclass(frozen=True)
class _Task:
    """How to run one kind of request: encode a batch (CPU, may run ahead in a thread), then run it."""

    prepare: Callable[[list["_Item"]], Any]
    execute: Callable[[Any], list[Any]]


_WINDOW_BATCHES = 4  # images decoded ahead, in batches, to sort them by size
logger = logging.getLogger("qinsight")


@dataclass
class _Item:
    """One request: its conversation and its images (paths or arrays until loaded)."""

    conversation: list[Message]
    sources: list[ImageInput]
    images: list[Image.Image] | None = None
    error: str | None = None

    @property
    def image_tokens(self) -> int:
        return sum(i.width * i.height for i in self.images or []) // (PATCH_GRID * PATCH_GRID)


class QualityJudge:
    """Judges image quality with a Q-Insight checkpoint.

    Build it with :meth:`from_pretrained`. Results never raise for bad images or unreadable answers:
    each carries ``error`` instead, and the rest of the batch is judged as usual.

    Batching: images are decoded a window at a time, sorted by size so a batch pads little, and packed
    up to ``batch_size`` images and ``max_batch_tokens`` padded image tokens. On out-of-memory the batch
    is halved and retried (and later batches stay at the smaller size); nothing is dropped or judged twice.
    """

    def __init__(self, backend: QwenVLBackend, *, decoding: DecodingOptions | None = None,
                 image_bounds: ImageBounds | None = None,
                 prompt_order: PromptOrder | str = PromptOrder.IMAGE_FIRST, batch_size: int = 8,
                 max_batch_tokens: int = 16384) -> None:
        self.backend = backend
        self.decoding = decoding or DecodingOptions()
        self.image_bounds = image_bounds or ImageBounds()
        self.prompt_order = PromptOrder(prompt_order)
        self.batch_size = batch_size
        self.max_batch_tokens = max_batch_tokens
        self._memory_cap: int | None = None  # batch size that last fitted after an out-of-memory error

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
              on_result: ResultCallback | None = None, mode: str = "reason") -> ScoreResult | list[ScoreResult]:
        """A 1-5 quality rating for one image or each of many.

        ``mode="reason"`` generates the model's reasoning and reads the rating from its answer.
        ``mode="fast"`` generates nothing: the answer is forced up to the rating and the score is the
        expected value of the rating's digits under the model's probabilities (continuous, deterministic,
        one prefill plus a short cached step), with ``std`` the spread of that distribution.
        """
        if mode not in ("reason", "fast"):
            raise UsageError(f"mode must be 'reason' or 'fast', got {mode!r}")
        task, aggregate = ((self._fast_task(), _fast_result) if mode == "fast"
                           else (self._generate_task(decoding), _score_result))
        return self._single_image_task(images, prompts.score_messages(self.prompt_order), task, aggregate,
                                       ScoreResult, batch_size, on_result)

    def degradation(self, images: Any, batch_size: int | None = None,
                    decoding: DecodingOptions | None = None,
                    on_result: ResultCallback | None = None) -> DegradationResult | list[DegradationResult]:
        """The distortion (noise, compression, blur, darken or None) and its severity, per image."""
        conversation = prompts.degradation_messages(self.prompt_order)
        return self._single_image_task(images, conversation, self._generate_task(decoding), _degradation_result,
                                       DegradationResult, batch_size, on_result)

    def compare(self, image_a: ImageInput, image_b: ImageInput, reference: ImageInput | None = None,
                both_orders: bool = False, decoding: DecodingOptions | None = None,
                on_result: ResultCallback | None = None) -> ComparisonResult:
        """Which image is better: "A", "B" or "similar".

        With a reference (the degraded input of a restoration), the reference-based prompt of the
        comparison weights is used; without, the paper's zero-shot two-image prompt. ``both_orders``
        also asks with A and B swapped and keeps a verdict only if both agree (VLM judges favour a
        position); a disagreement becomes "similar" with ``consistent=False``.
        """
        return self.compare_pairs([(image_a, image_b)], reference, both_orders, decoding, on_result=on_result)[0]

    def compare_pairs(self, pairs: Sequence[Sequence[ImageInput]], reference: ImageInput | None = None,
                      both_orders: bool = False, decoding: DecodingOptions | None = None,
                      batch_size: int | None = None,
                      on_result: ResultCallback | None = None) -> list[ComparisonResult]:
        """:meth:`compare` for many pairs, batched.

        Each pair is ``(image_a, image_b)``, or ``(image_a, image_b, reference)`` with its own reference;
        ``reference`` is shared by the pairs that bring none. ``on_result(index, result)`` is called
        in input order as results are ready.
        """
        items = []
        for pair in pairs:
            if len(pair) not in (2, 3):
                raise UsageError(f"a pair is (image_a, image_b) or (image_a, image_b, reference), got {len(pair)} items")
            image_a, image_b = pair[0], pair[1]
            chosen = pair[2] if len(pair) == 3 and pair[2] is not None else reference
            conversation = prompts.comparison_messages(with_reference=chosen is not None)
            prefix = [chosen] if chosen is not None else []
            items.append(_Item(conversation, prefix + [image_a, image_b]))
            if both_orders:
                items.append(_Item(conversation, prefix + [image_b, image_a]))
        forward: dict[int, ComparisonResult] = {}

        def finish(index: int, outcome: Any) -> ComparisonResult:
            result = _comparison_result(outcome) if isinstance(outcome, list) else ComparisonResult(error=outcome)
            if both_orders:
                if index % 2 == 0:
                    forward[index] = result
                    return result
                result = _reconcile(forward.pop(index - 1), result)
                index //= 2
            if on_result is not None:
                on_result(index, result)
            return result

        results = self._run(items, batch_size or self.batch_size, self._generate_task(decoding), finish)
        return results[1::2] if both_orders else results

    def rank(self, images: Sequence[ImageInput], strategy: str = "score", top_k: int | None = None,
             pool: int = 4, batch_size: int | None = None, on_result: ResultCallback | None = None) -> Ranking:
        """Order images best first; see :mod:`qinsight_sdk.selection` for the strategies.

        ``on_result(step, result)`` follows each image scored and each match (a pair in both orders);
        :func:`qinsight_sdk.selection.ranking_steps` says how many there will be.
        """
        return rank_images(self, images, strategy=strategy, top_k=top_k, pool=pool, batch_size=batch_size,
                           on_result=on_result)

    def reward(self, images: Any, batch_size: int | None = None,
               on_result: ResultCallback | None = None) -> torch.Tensor:
        """A reward in [0, 1] per image for training loops: the fast score mapped from [1, 5].

        Deterministic and independent of batch size and order. An image that cannot be judged (NaN
        pixels, say) gets 0.0, the worst reward, and a logged warning, so a loop never breaks on it.
        ``on_result(index, score_result)`` follows each image, as for :meth:`score`.
        """
        results = self.score(images, batch_size=batch_size, mode="fast", on_result=on_result)
        results = results if isinstance(results, list) else [results]
        rewards = []
        for index, result in enumerate(results):
            if result.score is None:
                logger.warning("reward 0.0 for image %d: %s", index, result.error)
            rewards.append(0.0 if result.score is None else (result.score - 1.0) / 4.0)
        return torch.tensor(rewards, dtype=torch.float32)

    def load_image(self, source: ImageInput) -> Image.Image:
        """One input decoded and fitted to this judge's image bounds, as every task does it."""
        return load_image(source, self.image_bounds)

    def to(self, device: str | torch.device) -> "QualityJudge":
        """Move the model to ``device`` (for callers that manage memory, such as ComfyUI); returns self."""
        self.backend.to(device)
        return self

    # -- pipeline -----------------------------------------------------------------------------------

    def _generate_task(self, decoding: DecodingOptions | None) -> _Task:
        options = decoding or self.decoding
        return _Task(self._encoder(""), lambda batch: self.backend.generate(batch, options))

    def _fast_task(self) -> _Task:
        return _Task(self._encoder(prompts.FAST_SCORE_ANSWER_PREFIX), self.backend.rating_distributions)

    def _encoder(self, answer_prefix: str) -> Callable[[list[_Item]], Any]:
        return lambda chosen: self.backend.encode([i.conversation for i in chosen], [i.images for i in chosen],
                                                  answer_prefix)

    def _single_image_task(self, images: Any, conversation: list[Message], task: _Task,
                           aggregate: Callable[[Any], R], result_type: Callable[..., R],
                           batch_size: int | None, on_result: ResultCallback | None) -> R | list[R]:
        sources, single = split_inputs(images)
        items = [_Item(conversation, [source]) for source in sources]

        def finish(index: int, outcome: Any) -> R:
            result = result_type(error=outcome) if isinstance(outcome, str) else aggregate(outcome)
            if on_result is not None:
                on_result(index, result)
            return result

        outcomes = self._run(items, batch_size or self.batch_size, task, finish)
        return outcomes[0] if single else outcomes

    def _run(self, items: list[_Item], batch_size: int, task: _Task,
             finish: Callable[[int, Any], Any]) -> list[Any]:
        """Each item's model output (or its error message), finished in input order as soon as ready.

        A helper thread decodes images and encodes the next batch while the model runs the current
        one. Items are decoded a window at a time and batched by size within the window, so
        ``finish`` runs in input order at most a window behind the model.
        """
        if batch_size < 1:
            raise UsageError(f"batch_size must be at least 1, got {batch_size}")
        outcomes: dict[int, Any] = {}
        results: list[Any] = [None] * len(items)
        done = 0
        batches = self._batches(items, batch_size)

        def prepare_next() -> tuple[list[int], dict[int, str], Any] | None:
            planned = next(batches, None)
            if planned is None:
                return None
            batch, failed = planned
            return batch, failed, self._try_prepare(task, batch, items) if batch else None

        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="qinsight-prepare") as helper:
            ahead = helper.submit(prepare_next)
            while (prepared := ahead.result()) is not None:
                ahead = helper.submit(prepare_next)
                batch, failed, encoded = prepared
                outcomes.update(failed)
                if batch:
                    for index, outcome in zip(batch, self._process(batch, items, task, encoded)):
                        items[index].images = None  # decoded pixels are not kept past their batch
                        outcomes[index] = outcome
                while done in outcomes:
                    results[done] = finish(done, outcomes.pop(done))
                    done += 1
        return results

    def _batches(self, items: list[_Item], batch_size: int) -> Iterator[tuple[list[int], dict[int, str]]]:
        """Batches to run, window by window, each with the window's unreadable inputs on its first."""
        window = batch_size * _WINDOW_BATCHES
        for start in range(0, len(items), window):
            indices = range(start, min(start + window, len(items)))
            for index in indices:
                self._load_images(items[index])
            failed = {i: items[i].error for i in indices if items[i].error is not None}
            planned = self._plan_batches([i for i in indices if i not in failed], items, batch_size) or [[]]
            for batch in planned:
                yield batch, failed
                failed = {}

    def _plan_batches(self, indices: list[int], items: list[_Item], batch_size: int) -> list[list[int]]:
        """Similar sizes together, each batch within the image and padded-token budgets."""
        cap = min(batch_size, self._memory_cap or batch_size)
        batches: list[list[int]] = []
        for index in sorted(indices, key=lambda i: (items[i].image_tokens, i)):
            current = batches[-1] if batches else None
            padded = (len(current) + 1) * items[index].image_tokens if current else 0
            if current is None or len(current) >= cap or padded > self.max_batch_tokens:
                batches.append([index])
            else:
                current.append(index)
        return batches

    def _load_images(self, item: _Item) -> None:
        try:
            item.images = [load_image(source, self.image_bounds) for source in item.sources]
        except ImageInputError as exc:
            item.error = str(exc)

    @staticmethod
    def _try_prepare(task: _Task, indices: list[int], items: list[_Item]) -> Any:
        try:
            return task.prepare([items[i] for i in indices])
        except Exception as exc:  # noqa: BLE001 - surfaces in _process, per item
            return exc

    def _process(self, indices: list[int], items: list[_Item], task: _Task, prepared: Any) -> list[Any]:
        """Run a prepared batch; halve it on out-of-memory, and isolate any other failure per item."""
        try:
            if isinstance(prepared, Exception):
                raise prepared
            return task.execute(prepared)
        except Exception as exc:  # noqa: BLE001 - one input must never take the batch down
            return self._recover(indices, items, task, exc)

    def _recover(self, indices: list[int], items: list[_Item], task: _Task, exc: Exception) -> list[Any]:
        def again(part: list[int]) -> list[Any]:
            return self._process(part, items, task, self._try_prepare(task, part, items))

        if _is_out_of_memory(exc):
            _release_memory()
            if len(indices) > 1:
                half = len(indices) // 2
                self._memory_cap = half
                logger.warning("out of memory with %d images per batch; retrying with %d", len(indices), half)
                return again(indices[:half]) + again(indices[half:])
            return [f"out of memory even alone ({exc}); lower max_pixels or use a larger device"]
        if len(indices) == 1:
            return [f"the model failed on this input: {type(exc).__name__}: {exc}"]
        return [again([i])[0] for i in indices]


def _is_out_of_memory(exc: BaseException) -> bool:
    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()


def _release_memory() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


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


def _fast_result(distribution: RatingDistribution) -> ScoreResult:
    mean, std = distribution.expected()
    return ScoreResult(score=min(5.0, max(1.0, mean)), std=std)


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
