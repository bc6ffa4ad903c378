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

from .data import TASKS, DataError, Sample, read_source
from .errors import UsageError
from .metrics import comparison_metrics, degradation_metrics, score_metrics
from .prompts import ANSWER_OF_WINNER, COMPARISON_ANSWERS, NO_DISTORTION


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


def load_items(data: str | Path, image_root: str | Path | None = None, task: str | None = None) -> list[EvalItem]:
    """The data file's items of one task; images are not opened here (a bad one is a failed item)."""
    root = Path(image_root) if image_root is not None else Path(data).parent
    samples = read_source(data, guess_format(data), root, check_images=False)
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
    text = path.read_text(encoding="utf-8")
    if text and not text.endswith("\n"):  # a write interrupted mid-line: keep the file valid JSONL
        text = text[:text.rfind("\n") + 1]
        path.write_text(text, encoding="utf-8")
    rows: dict[str, dict[str, Any]] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            if row.get("task", task) == task:
                rows[str(row["key"])] = row
        except (ValueError, KeyError, TypeError) as exc:
            raise DataError(f"{path}:{number}: not a prediction row ({exc})") from None
    return rows


def _row(item: EvalItem, task: str, result: Any) -> dict[str, Any]:
    row: dict[str, Any] = {"key": item.key, "task": task}
    if task == "score":
        row["score"] = result.score
    elif task == "degradation":
        row["distortion"], row["severity"] = result.distortion, result.severity
    else:
        row["winner"] = ANSWER_OF_WINNER.get(result.winner) if result.winner else None
    row.update(error=result.error, raw=result.raw)
    return row


def predict(judge: Any, items: Sequence[EvalItem], task: str, sink: Callable[[dict[str, Any]], None],
            mode: str = "reason", batch_size: int = 8) -> None:
    """Run the judge over items, handing each row to ``sink`` as soon as it is ready, in order."""
    def deliver(index: int, result: Any) -> None:
        sink(_row(items[index], task, result))

    if task == "score":
        judge.score([str(i.sample.images[0]) for i in items], batch_size=batch_size, mode=mode, on_result=deliver)
    elif task == "degradation":
        judge.degradation([str(i.sample.images[0]) for i in items], batch_size=batch_size, on_result=deliver)
    else:
        pairs = [(*map(str, i.sample.images[-2:]), str(i.sample.images[0]) if len(i.sample.images) == 3 else None)
                 for i in items]
        judge.compare_pairs(pairs, batch_size=batch_size, on_result=deliver)


# -- the whole evaluation ----------------------------------------------------------------------------

def evaluate(data: str | Path, predictions: str | Path, load_judge: Callable[[], Any] | None = None,
             image_root: str | Path | None = None, task: str | None = None, mode: str = "reason",
             batch_size: int = 8, retry_failed: bool = False, resamples: int = 1000,
             progress: bool = True, plot: str | Path | None = None) -> dict[str, Any]:
    """Predict what ``predictions`` lacks (loading the judge only then), and report the task's metrics.

    Without ``load_judge`` nothing is predicted: items missing from ``predictions`` count as failed.

    ``retry_failed`` runs the model again on items whose row carries an error. Ctrl-C stops after the
    rows already written; a rerun continues from there. ``plot`` writes a PNG: score against MOS with
    the fitted curve, or the degradation confusion matrix.
    """
    items = load_items(data, image_root, task)
    task = items[0].sample.task
    if mode != "reason" and task != "score":
        raise UsageError(f"mode {mode!r} applies to scores only; {task} is always judged with reasoning")
    if plot is not None and task == "comparison":
        raise UsageError("--plot draws score and degradation evaluations; comparisons have no figure")
    if plot is not None:
        from .plots import pyplot

        pyplot()   # a missing matplotlib is reported now, not after a long run
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
    judged, failed = [], []
    for item in items:
        row = rows.get(item.key)
        problem = "no prediction" if row is None else row.get("error") or _missing_value(row, task)
        if problem:
            failed.append({"item": item.key, "error": problem})
        else:
            judged.append((item.sample, row))
    if task == "score":
        metrics = score_metrics([r["score"] for _, r in judged], [s.mos for s, _ in judged], resamples)
    elif task == "degradation":
        metrics = degradation_metrics([r["distortion"] or NO_DISTORTION for _, r in judged],
                                      [r["severity"] or NO_DISTORTION for _, r in judged],
                                      [s.distortion_class for s, _ in judged], [s.severity for s, _ in judged])
    else:
        metrics = comparison_metrics([r["winner"] for _, r in judged], [s.answer for s, _ in judged])
    result = {"task": task, **about, "items": len(items), "judged": len(judged), "failed": failed,
              "metrics": metrics}
    if plot is not None:
        _plot(result, judged, Path(plot))
    return result


def _missing_value(row: dict[str, Any], task: str) -> str | None:
    if task == "score":
        return None if row.get("score") is not None else "the prediction row has no score"
    if task == "comparison":
        winner = row.get("winner")
        return None if winner in COMPARISON_ANSWERS else f"the prediction row's winner is {winner!r}"
    return None if "distortion" in row and "severity" in row else "the prediction row lacks distortion, severity"


def _plot(result: dict[str, Any], judged: Sequence[tuple[Sample, dict[str, Any]]], path: Path) -> None:
    from . import plots

    title = Path(result.get("data", "")).name
    if result["task"] == "score":
        plots.score_scatter([r["score"] for _, r in judged], [s.mos for s, _ in judged], result["metrics"],
                            path, title)
    else:
        plots.confusion_matrix(result["metrics"], path, title)


def summary_lines(result: dict[str, Any]) -> Iterator[str]:
    """The report as a few readable lines (the JSON report has everything)."""
    metrics, task = result["metrics"], result["task"]
    yield f"{task}: {result['judged']} of {result['items']} items judged, {len(result['failed'])} failed"

    def number(value: Any) -> str:
        return "n/a" if value is None else f"{value:.4f}"

    if task == "score":
        for name in ("srcc", "plcc"):
            interval = metrics[f"{name}_ci95"]
            span = f" (95% CI {interval[0]:.4f}-{interval[1]:.4f})" if interval else ""
            yield f"{name.upper()} {number(metrics[name])}{span}"
        yield (f"PLCC after the 4-parameter logistic fit {number(metrics['plcc_logistic'])}; "
               f"KRCC {number(metrics['krcc'])}; RMSE {number(metrics['rmse'])} "
               f"(after the fit {number(metrics['rmse_logistic'])})")
    elif task == "degradation":
        yield "class         n  class acc  severity acc"
        for label, row in metrics["per_class"].items():
            yield f"{label:<12}{row['n']:>3}  {row['class_accuracy']:>9.3f}  {row['severity_accuracy']:>12.3f}"
        mean = metrics["mean"]
        yield f"{'mean':<15}  {number(mean['class_accuracy']):>9}  {number(mean['severity_accuracy']):>12}"
    else:
        yield f"accuracy {number(metrics['accuracy'])}; " + "; ".join(
            f"{label} {row['accuracy']:.3f} (n={row['n']})" for label, row in metrics["per_label"].items())
    for failure in result["failed"][:5]:
        yield f"failed: {failure['item']}: {failure['error']}"
    if len(result["failed"]) > 5:
        yield f"... and {len(result['failed']) - 5} more failed items (see the report)"
