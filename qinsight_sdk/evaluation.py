"""Evaluate a judge on labelled images, resumably: predictions are kept, metrics recomputed from them.

``evaluate`` reads a data file (CSV, our JSONL schema, DeQA-Score meta JSON, Q-Insight comparison JSON),
appends one prediction row per item to a JSONL file as results arrive (flushed, so an interrupted run
leaves a valid file), runs the model only on items that file does not already hold (and loads no
model at all when it holds every item), then computes the task's metrics over the items that were
judged, listing the failed ones by path.

Prediction rows: ``{"key", "task", "error", "raw", ...}`` plus ``score``, or ``distortion`` and
``severity``, or ``winner`` ("Image A", "Image B", "Similar"). ``key`` is the item's image path as the
data file gives it (pairs: ``[reference|]image_a|image_b``), so predictions made elsewhere can be used.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from tqdm.auto import tqdm

from .data import DataError, Sample, read_source
from .errors import UsageError
from .metrics import require_scipy
from .records import whole_lines
from .tasks import TASKS


@dataclass(frozen=True)
class EvalItem:
    key: str
    sample: Sample


def guess_format(path: str | Path) -> str:
    """The data format from the file: .csv, .jsonl (ours), or a .json list (DeQA-Score or Q-Insight pairs)."""
    path = Path(path)
    if path.suffix.lower() == ".csv":
        return "csv"
    if path.suffix.lower() == ".jsonl":
        return "qinsight"
    try:
        first = json.loads(path.read_text(encoding="utf-8"))[0]
    except (OSError, ValueError, IndexError, KeyError, TypeError) as exc:
        raise DataError(f"{path}: not a CSV, a .jsonl file or a JSON list of items ({exc})") from None
    if isinstance(first, dict) and "ImageA" in first:
        return "qinsight-comparison"
    if isinstance(first, dict) and "gt_score_norm" in first:
        return "deqa"
    raise DataError(f"{path}: a JSON list, but neither DeQA-Score (gt_score_norm) nor Q-Insight pairs (ImageA)")


def load_items(data: str | Path, image_root: str | Path | None = None, task: str | None = None,
               mos_range: Sequence[float] | None = None) -> list[EvalItem]:
    """The data file's items of one task; images are not opened here (a bad one is a failed item).

    A CSV's MOS values are taken as they are, or normalised from ``mos_range`` to [1, 5] when given;
    never stretched to the file's own min and max, which would change the RMSE being measured.
    """
    root = Path(image_root) if image_root is not None else Path(data).parent
    samples = read_source(data, guess_format(data), root, mos_range, check_images=False, file_range=False)
    tasks = sorted({s.task for s in samples})
    if task is None:
        if len(tasks) != 1:
            raise DataError(f"{data} holds several tasks ({', '.join(tasks)}): choose one with --task")
        task = tasks[0]
    if task not in TASKS:
        raise UsageError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
    items = [EvalItem(_key(s, root), s) for s in samples if s.task == task]
    if not items:
        raise DataError(f"{data} holds no {task} items")
    return items


def _key(sample: Sample, root: Path) -> str:
    def relative(path: Path) -> str:
        try:
            return path.relative_to(root).as_posix()
        except ValueError:
            return str(path)

    return "|".join(relative(p) for p in sample.images)


# -- the predictions file ----------------------------------------------------------------------------

def read_predictions(path: str | Path, task: str) -> dict[str, dict[str, Any]]:
    """The task's rows by key (the last row of a key wins; rows without a task count as this task's).

    A line cut off by a kill is dropped from the file, so appending keeps it valid JSON lines."""
    path = Path(path)
    if not path.exists():
        return {}
    rows: dict[str, dict[str, Any]] = {}
    for number, line in enumerate(whole_lines(path), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            if row.get("task", task) == task:
                rows[str(row["key"])] = row
        except (ValueError, KeyError, TypeError) as exc:
            raise DataError(f"{path}:{number}: not a prediction row ({exc})") from None
    return rows


def predict(judge: Any, items: Sequence[EvalItem], task: str, sink: Callable[[dict[str, Any]], None],
            mode: str = "reason", batch_size: int = 8) -> None:
    """Run the judge over items, handing each row to ``sink`` as soon as it is ready, in order."""
    spec = TASKS[task]

    def deliver(index: int, result: Any) -> None:
        sink({"key": items[index].key, "task": task, **spec.row(result), "error": result.error, "raw": result.raw})

    spec.ask(judge, [i.sample for i in items], mode=mode, batch_size=batch_size, on_result=deliver)


# -- the whole evaluation ----------------------------------------------------------------------------

def evaluate(data: str | Path, predictions: str | Path, load_judge: Callable[[], Any] | None = None,
             image_root: str | Path | None = None, task: str | None = None, mode: str = "reason",
             batch_size: int = 8, retry_failed: bool = False, resamples: int = 1000,
             progress: bool = True, plot: str | Path | None = None,
             mos_range: Sequence[float] | None = None) -> dict[str, Any]:
    """Predict what ``predictions`` lacks (loading the judge only then), and report the task's metrics.

    Without ``load_judge`` nothing is predicted: items missing from ``predictions`` count as failed.

    ``retry_failed`` runs the model again on items whose row carries an error. Ctrl-C stops after the
    rows already written; a rerun continues from there. ``plot`` writes a PNG: score against MOS with
    the fitted curve, or the degradation confusion matrix. ``mos_range`` as for :func:`load_items`.
    """
    items = load_items(data, image_root, task, mos_range)
    task = items[0].sample.task
    if mode not in TASKS[task].modes:
        raise UsageError(f"mode {mode!r} applies to scores only; {task} is always judged with reasoning")
    if plot is not None and TASKS[task].plot is None:
        raise UsageError("--plot draws score and degradation evaluations; comparisons have no figure")
    require_scipy()   # a missing scipy (or matplotlib, for a plot) is reported now, not after a long run
    if plot is not None:
        from .plots import pyplot

        pyplot()
    predictions = Path(predictions)
    known = read_predictions(predictions, task)
    todo = [i for i in items if i.key not in known or (retry_failed and known[i.key].get("error"))]
    todo = list({i.key: i for i in todo}.values())   # an image listed twice is judged once
    if todo and load_judge is not None:
        judge = load_judge()
        predictions.parent.mkdir(parents=True, exist_ok=True)
        with predictions.open("a", encoding="utf-8") as handle, \
                tqdm(total=len(todo), unit="image", file=sys.stderr, disable=not progress) as bar:  # images/s, ETA
            def sink(row: dict[str, Any]) -> None:
                handle.write(json.dumps(row) + "\n")
                handle.flush()
                known[row["key"]] = row
                bar.update(1)

            predict(judge, todo, task, sink, mode=mode, batch_size=batch_size)
    return report(items, known, task, resamples, plot, data=str(data), predictions=str(predictions),
                  predicted_now=len(todo) if load_judge is not None else 0)


def report(items: Sequence[EvalItem], rows: dict[str, dict[str, Any]], task: str, resamples: int = 1000,
           plot: str | Path | None = None, **about: Any) -> dict[str, Any]:
    """The metrics over judged items, and the failed ones (missing prediction or error) with reasons;
    ``plot`` also draws them."""
    spec = TASKS[task]
    judged, failed = [], []
    for item in items:
        row = rows.get(item.key)
        problem = "no prediction" if row is None else row.get("error") or spec.row_problem(row)
        if problem:
            failed.append({"item": item.key, "error": problem})
        else:
            judged.append((item.sample, row))
    samples, judged_rows = [s for s, _ in judged], [r for _, r in judged]
    metrics = spec.metrics(samples, judged_rows, resamples)
    result = {"task": task, **about, "items": len(items), "judged": len(judged), "failed": failed,
              "metrics": metrics}
    if plot is not None and spec.plot is not None:
        spec.plot(samples, judged_rows, metrics, Path(plot), Path(result.get("data", "")).name)
    return result


def summary_lines(result: dict[str, Any]) -> Iterator[str]:
    """The report as a few readable lines (the JSON report has everything)."""
    yield f"{result['task']}: {result['judged']} of {result['items']} items judged, {len(result['failed'])} failed"
    yield from TASKS[result["task"]].summary(result["metrics"])
    for failure in result["failed"][:5]:
        yield f"failed: {failure['item']}: {failure['error']}"
    if len(result["failed"]) > 5:
        yield f"... and {len(result['failed']) - 5} more failed items (see the report)"
