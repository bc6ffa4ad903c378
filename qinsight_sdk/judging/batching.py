"""The batching engine: requests in, each request's model output (or its ``Failure``) out, in input order.

Why it is shaped this way:
- Images are decoded a window at a time in a helper thread, which also encodes the next batch while the
  model runs the current one on an accelerator, so it rarely waits for the CPU. A model on the CPU
  already uses every core: there, a helper would compete with it (32 images took 0.41 s instead of
  0.37 s on 2 cores), so the same work runs in turn in the calling thread.
- Within a window, requests are sorted by size, so a batch pads little, and packed up to a number of
  requests and of padded image tokens.
- A failure never spreads: an unreadable input fails alone, an out-of-memory batch is halved and retried
  (and later batches stay at the size that fitted), any other error is retried request by request.
- Results are handed to ``finish`` in input order as soon as they are ready, at most a window behind.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import torch

from ..errors import ImageInputError, UsageError
from ..io.images import PATCH_GRID_GEOMETRY, ImageInput
from .prompts import Message

R = TypeVar("R")
logger = logging.getLogger("qinsight")
WINDOW_BATCHES = 4  # batches' worth of images decoded ahead, to sort them by size


@dataclass(frozen=True)
class Failure:
    """Why a request has no model output; the message a result's ``error`` carries."""

    message: str


Outcome = Any | Failure  # a step's output for one request, or why there is none


@dataclass
class Request:
    """One question to the model: its conversation and its images or videos (paths or arrays until loaded)."""

    conversation: list[Message]
    sources: list[ImageInput]
    images: list[Any] | None = None  # PIL images, or a video judge's clips
    failure: Failure | None = None


@dataclass(frozen=True)
class Step:
    """How to run a batch: ``prepare`` (CPU, may run in the helper thread), then ``execute`` (one output
    per request, in order)."""

    prepare: Callable[[list[Request]], Any]
    execute: Callable[[Any], list[Any]]


class BatchRunner:
    """Runs requests through a ``Step`` in batches; see the module docstring.

    ``memory_cap`` is the batch size that last fitted after an out-of-memory error (None: none yet); it
    bounds every later batch of this runner.
    """

    def __init__(
        self,
        load: Callable[[ImageInput], Any],
        max_batch_tokens: int,
        overlap: Callable[[], bool] = lambda: True,
        cost: Callable[[Any], int] = lambda image: PATCH_GRID_GEOMETRY.tokens(image.width, image.height),
    ) -> None:
        self.load = load
        self.cost = cost  # a loaded image's or video's cost, in the unit of max_batch_tokens
        self.max_batch_tokens = max_batch_tokens
        self.overlap = overlap  # asked per run: whether to prepare the next batch in a helper thread
        self.memory_cap: int | None = None

    def run(self, requests: list[Request], batch_size: int, step: Step, finish: Callable[[int, Outcome], R]) -> list[R]:
        """``finish(index, outcome)`` for every request, in input order; the list of what it returned."""
        if batch_size < 1:
            raise UsageError(f"batch_size must be at least 1, got {batch_size}")
        outcomes: dict[int, Outcome] = {}
        results: list[Any] = [None] * len(requests)
        done = 0
        batches = self._batches(requests, batch_size)

        def prepare_next() -> tuple[list[int], dict[int, Failure], Any] | None:
            planned = next(batches, None)
            if planned is None:
                return None
            batch, failed = planned
            return batch, failed, self._try_prepare(step, [requests[i] for i in batch]) if batch else None

        preparer = (
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="qinsight-prepare") if self.overlap() else _InTurn()
        )
        with preparer as helper:
            ahead = helper.submit(prepare_next)
            while (prepared := ahead.result()) is not None:
                ahead = helper.submit(prepare_next)
                batch, failed, encoded = prepared
                outcomes.update(failed)
                if batch:
                    for index, outcome in zip(batch, self._execute(batch, requests, step, encoded)):
                        requests[index].images = None  # decoded pixels are not kept past their batch
                        outcomes[index] = outcome
                while done in outcomes:
                    results[done] = finish(done, outcomes.pop(done))
                    done += 1
        return results

    def _batches(self, requests: list[Request], batch_size: int) -> Iterator[tuple[list[int], dict[int, Failure]]]:
        """Batches to run, window by window, each with the window's unreadable inputs on its first."""
        window = batch_size * WINDOW_BATCHES
        for start in range(0, len(requests), window):
            indices = range(start, min(start + window, len(requests)))
            for index in indices:
                self._load_images(requests[index])
            failed = {i: requests[i].failure for i in indices if requests[i].failure is not None}
            planned = self._plan([i for i in indices if i not in failed], requests, batch_size) or [[]]
            for batch in planned:
                yield batch, failed
                failed = {}

    def _plan(self, indices: list[int], requests: list[Request], batch_size: int) -> list[list[int]]:
        """Similar sizes together, each batch within the request and padded-token budgets."""
        cap = min(batch_size, self.memory_cap or batch_size)
        batches: list[list[int]] = []
        cost = {i: sum(self.cost(item) for item in requests[i].images or []) for i in indices}
        for index in sorted(indices, key=lambda i: (cost[i], i)):
            current = batches[-1] if batches else None
            if current is None or len(current) >= cap or (len(current) + 1) * cost[index] > self.max_batch_tokens:
                batches.append([index])
            else:
                current.append(index)
        return batches

    def _load_images(self, request: Request) -> None:
        try:
            request.images = [self.load(source) for source in request.sources]
        except ImageInputError as exc:
            request.failure = Failure(str(exc))

    @staticmethod
    def _try_prepare(step: Step, chosen: list[Request]) -> Any:
        try:
            return step.prepare(chosen)
        except Exception as exc:
            return exc

    def _execute(self, indices: list[int], requests: list[Request], step: Step, prepared: Any) -> list[Outcome]:
        """Run a prepared batch; halve it on out-of-memory, and isolate any other failure per request."""
        try:
            if isinstance(prepared, Exception):
                raise prepared
            return step.execute(prepared)
        except Exception as exc:
            return self._recover(indices, requests, step, exc)

    def _recover(self, indices: list[int], requests: list[Request], step: Step, exc: Exception) -> list[Outcome]:
        def again(part: list[int]) -> list[Outcome]:
            return self._execute(part, requests, step, self._try_prepare(step, [requests[i] for i in part]))

        if _is_out_of_memory(exc):
            _release_memory()
            if len(indices) > 1:
                half = len(indices) // 2
                self.memory_cap = half
                logger.warning("out of memory with %d images per batch; retrying with %d", len(indices), half)
                return again(indices[:half]) + again(indices[half:])
            return [
                Failure(
                    f"out of memory even alone ({exc}); use the fast image size (--max-pixels fast, "
                    "ImageBounds.fast()) or a larger device"
                )
            ]
        if len(indices) == 1:
            return [Failure(f"the model failed on this input: {type(exc).__name__}: {exc}")]
        return [again([i])[0] for i in indices]


class _InTurn:
    """An executor that runs each call when it is submitted, in the calling thread."""

    def __enter__(self) -> _InTurn:
        return self

    def __exit__(self, *_: Any) -> None:
        return None

    def submit(self, call: Callable[[], Any]) -> Future:
        done: Future = Future()
        done.set_result(call())
        return done


def _is_out_of_memory(exc: BaseException) -> bool:
    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()


def _release_memory() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
