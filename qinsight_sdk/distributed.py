"""Judging past one process: a pool of judge actors on a Ray cluster, fed by Ray Data.

``DistributedJudge`` has the batch methods of ``QualityJudge`` (``score``, ``degradation``,
``compare_pairs``) with the same results and ``on_result(index, result)`` callbacks, so the command line's
record files, resume and evaluation work unchanged on it (``--ray``). ``judge_dataset`` judges a Ray
Dataset (Parquet, CSV, JSON Lines of paths or image bytes, local or in object storage, read by Ray's own
readers) into a Dataset of results, for pipelines that stay in Ray.

Each actor loads the judge once and judges whole batches; Ray places actors on GPUs (fractions allowed
for small models) or CPUs, on one machine or many. Ray Data restarts an actor that dies (killed, out of
memory) and runs its unfinished batch again elsewhere: a result reaches the driver once, and the record
store writes each key once. If the driver itself dies, what it wrote stays; a rerun judges the rest.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from .errors import MissingDependencyError, UsageError
from .judging.judge_config import JudgeConfig
from .judging.results import ResultCallback, result_from

TASK_RESULTS = {"score": "score", "degradation": "degradation", "compare_pairs": "comparison"}
ITEM = "_qinsight_item"  # the column the actors judge (dropped from what they return)


def require_ray(part: str = "data") -> None:
    """Ray and its ``part`` (data, serve) importable, or an error naming the extra to install."""
    try:
        import ray  # noqa: F401

        __import__(f"ray.{part}")
    except ImportError as exc:
        raise MissingDependencyError(
            f"this needs Ray {part.capitalize()} ({exc}): pip install 'qinsight[ray]'"
        ) from None


def connect(address: str | None = None) -> None:
    """Join the cluster at ``address`` (else ``$RAY_ADDRESS``, else a new local one), once per process."""
    import ray

    require_ray()
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False)


class _JudgeActor:
    """One judge, loaded once per actor, judging the batches Ray Data hands it."""

    def __init__(self, judge_options: JudgeConfig | dict[str, Any], method: str, options: dict[str, Any]) -> None:
        from .judging.judge import load_judge

        self.judge = load_judge(judge_options)
        self.method, self.options = method, options

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        items = [_plain(item) for item in batch[ITEM]]
        results = getattr(self.judge, self.method)(items, **self.options)
        return {**{k: v for k, v in batch.items() if k != ITEM}, "result": [json.dumps(r.to_dict()) for r in results]}


def _plain(item: Any) -> Any:
    """A value as the judge takes it: Ray Data gives list columns back as arrays."""
    return [_plain(part) for part in item] if hasattr(item, "tolist") else item


class DistributedJudge:
    """``QualityJudge``'s batch methods on a pool of ``workers`` judge actors.

    ``judge_options``: a resolved ``JudgeConfig`` (:mod:`qinsight_sdk.judging.judge_config`), or
    ``QualityJudge.from_pretrained``'s arguments; each actor loads the judge once.
    Results come back as the actors finish batches, in any order; ``on_result`` sees each once.
    """

    def __init__(
        self,
        judge_options: JudgeConfig | dict[str, Any],
        workers: int = 1,
        gpus_per_worker: float = 0.0,
        cpus_per_worker: float = 1.0,
        batch_size: int = 8,
        address: str | None = None,
    ) -> None:
        if workers < 1 or batch_size < 1:
            raise UsageError(f"workers and batch_size must be at least 1, got {workers} and {batch_size}")
        self.judge_options = judge_options if isinstance(judge_options, JudgeConfig) else dict(judge_options)
        self.workers, self.gpus_per_worker, self.cpus_per_worker = workers, gpus_per_worker, cpus_per_worker
        self.batch_size = batch_size
        connect(address)

    def score(
        self,
        images: Sequence[Any],
        batch_size: int | None = None,
        mode: str | None = None,
        on_result: ResultCallback | None = None,
    ) -> list[Any]:
        return self._judged("score", list(images), {"mode": mode}, batch_size, on_result)

    def degradation(
        self, images: Sequence[Any], batch_size: int | None = None, on_result: ResultCallback | None = None
    ) -> list[Any]:
        return self._judged("degradation", list(images), {}, batch_size, on_result)

    def compare_pairs(
        self,
        pairs: Sequence[Sequence[Any]],
        both_orders: bool = False,
        batch_size: int | None = None,
        on_result: ResultCallback | None = None,
    ) -> list[Any]:
        return self._judged(
            "compare_pairs", [list(p) for p in pairs], {"both_orders": both_orders}, batch_size, on_result
        )

    def _judged(
        self,
        method: str,
        items: list[Any],
        options: dict[str, Any],
        batch_size: int | None,
        on_result: ResultCallback | None,
    ) -> list[Any]:
        import ray.data

        results: list[Any] = [None] * len(items)
        if not items:
            return results
        dataset = ray.data.from_items([{"index": i, ITEM: item} for i, item in enumerate(items)])
        for batch in self._mapped(dataset, method, options, batch_size).iter_batches(batch_size=None):
            for index, text in zip(batch["index"], batch["result"]):
                index = int(index)
                if results[index] is not None:
                    continue  # a batch judged twice (its actor died after answering): written once
                results[index] = result_from(TASK_RESULTS[method], json.loads(text))
                if on_result is not None:
                    on_result(index, results[index])
        return results

    def _mapped(self, dataset: Any, method: str, options: dict[str, Any], batch_size: int | None) -> Any:
        import ray.data

        return dataset.map_batches(
            _JudgeActor,
            fn_constructor_kwargs={"judge_options": self.judge_options, "method": method, "options": options},
            compute=ray.data.ActorPoolStrategy(size=self.workers),
            batch_size=batch_size or self.batch_size,
            num_gpus=self.gpus_per_worker,
            num_cpus=self.cpus_per_worker,
        )


def judge_dataset(
    dataset: Any,
    judge_options: JudgeConfig | dict[str, Any],
    column: str,
    task: str = "score",
    mode: str = "fast",
    workers: int = 1,
    gpus_per_worker: float = 0.0,
    cpus_per_worker: float = 1.0,
    batch_size: int = 8,
) -> Any:
    """A Ray Dataset with a ``result`` column (each row's result as JSON) added to ``dataset``'s rows.

    ``column`` holds each row's image: a path the workers can read, or the image file's bytes (as
    ``ray.data.read_parquet`` or ``read_binary_files`` give them). Lazy, like every Ray Dataset: write it
    with Ray's writers (``write_parquet``, ``write_json``), or iterate it.
    """
    if task not in ("score", "degradation"):
        raise UsageError(f"judge_dataset judges score or degradation, not {task!r}")
    judge = DistributedJudge(judge_options, workers, gpus_per_worker, cpus_per_worker, batch_size)
    options = {"mode": mode} if task == "score" else {}
    return judge._mapped(dataset.map_batches(_column_as_item(column), batch_format="numpy"), task, options, None)


def _column_as_item(column: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    def copied(batch: dict[str, Any]) -> dict[str, Any]:
        if column not in batch:
            raise UsageError(f"the dataset has no column {column!r} (it has: {', '.join(batch)})")
        return {**batch, ITEM: batch[column]}

    return copied
