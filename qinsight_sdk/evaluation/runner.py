"""Evaluate a judge on labelled images, resumably: predictions are kept, metrics recomputed from them.

``evaluate`` reads a data file in any of :data:`~qinsight_sdk.evaluation.data.FORMATS` (our CSV and JSONL schema,
DeQA-Score meta JSON, Q-Insight comparison JSON, pyiqa meta_info CSV, a whitespace ``image mos`` list,
KonIQ-10k's scores CSV), recognised from the file or named,
appends one row per item to a record file (:mod:`qinsight_sdk.io.records`: the same rows ``qinsight
score -o``, ``degradation -o`` and ``compare -o`` write, so their output can be evaluated directly) as
results arrive, runs the model only on items that file does not already hold (and loads no model at all
when it holds every item), then computes the task's metrics over the items that were judged, listing
the failed ones by path.
"""

from __future__ import annotations

import csv
import gc
import json
import logging
import math
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from itertools import combinations
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from ..errors import UsageError
from ..io.records import check_writable, key_of, open_store, read_store
from ..judging.profiles import PROFILES
from ..judging.tasks import TASKS
from .data import FORMATS, DataError, Sample, check_mos_range, csv_format, load_records, mos_list_line, read_records
from .metrics import paired_difference, require_scipy

logger = logging.getLogger("qinsight")


@dataclass(frozen=True)
class EvalItem:
    """A labelled item: ``name`` as the data file gives its paths, ``key`` its record key."""

    name: str
    sample: Sample

    @cached_property
    def key(self) -> str:
        """Resolved once: evaluation looks each item up several times, and resolving costs syscalls."""
        return key_of(*self.sample.images)


def guess_format(path: str | Path) -> str:
    """The data format from the file: a .csv by its header (ours, pyiqa's meta_info, KonIQ-10k's scores),
    .jsonl (ours), .txt (a whitespace MOS list), or else a JSON list (DeQA-Score or Q-Insight pairs) or a
    text file whose first line reads as ``[reference] image mos [std]``."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".csv":
        try:
            found = csv_format(path)
        except (OSError, ValueError, csv.Error) as exc:
            raise DataError(f"{path}: cannot read its header ({exc})") from None
        if found is None and not path.read_text(encoding="utf-8-sig", errors="replace").strip():
            raise DataError(f"{path}: empty, no header and no labels")
        if found is None:
            raise DataError(
                f"{path}: a CSV whose header is none that qinsight knows: ours (image,mos; "
                "image,distortion_class,severity; image_a,image_b,answer), pyiqa's meta_info (an image "
                "column such as img_name or dist_name and a score column such as mos), or KonIQ-10k's "
                f"scores (image_name,...,MOS); name its format with --format ({', '.join(FORMATS)})"
            )
        return found
    if suffix == ".jsonl":
        return "qinsight"
    if suffix == ".mat":
        return "live-vqc"
    if suffix == ".txt":
        return "mos-list"
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot read it ({exc})") from None
    if not text.strip():
        raise DataError(f"{path}: empty, no labels in it")
    try:
        first = json.loads(text)[0]
    except IndexError:
        raise DataError(f"{path}: empty, no labels in it") from None  # an empty JSON list
    except (ValueError, KeyError, TypeError) as exc:
        line = next((line for line in text.splitlines() if line.strip()), "")
        if mos_list_line(line) is not None:
            return "mos-list"
        raise DataError(
            f"{path}: not a CSV, a .jsonl file, a JSON list of items or an 'image mos' list ({exc}); "
            f"name its format with --format ({', '.join(FORMATS)})"
        ) from None
    if isinstance(first, dict) and "ImageA" in first:
        return "qinsight-comparison"
    if isinstance(first, dict) and "gt_score_norm" in first:
        return "deqa"
    raise DataError(f"{path}: a JSON list, but neither DeQA-Score (gt_score_norm) nor Q-Insight pairs (ImageA)")


def load_items(
    data: str | Path,
    image_root: str | Path | None = None,
    task: str | None = None,
    mos_range: Sequence[float] | None = None,
    format: str | None = None,
) -> list[EvalItem]:
    """The data file's items of one task; images are not opened here (a bad one is a failed item).

    ``format`` (one of :data:`~qinsight_sdk.evaluation.data.FORMATS`) overrides :func:`guess_format`. MOS values are
    taken as they are, or normalised from ``mos_range`` to [1, 5] when given; never stretched to the
    file's own min and max, which would change the RMSE being measured. MOS outside [1, 5] (or outside
    the ``mos_range`` given) is an error naming the file and line and saying to pass ``--mos-range``.
    An item listed twice with two labels is an error naming both lines; listed twice with one label, it is
    counted once, with a warning.
    """
    if format is not None and format not in FORMATS:
        raise UsageError(f"unknown data format {format!r}; use one of {', '.join(FORMATS)}")
    check_mos_range(mos_range)
    root = Path(image_root) if image_root is not None else Path(data).parent
    records = read_records(data, format or guess_format(data), mos_range, file_range=False)
    _check_scale(records, mos_range)
    samples = load_records(records, root, check_images=False)
    tasks = sorted({s.task for s in samples})
    if task is None:
        if len(tasks) != 1:
            raise DataError(f"{data} holds several tasks ({', '.join(tasks)}): choose one with --task")
        task = tasks[0]
    if task not in TASKS:
        raise UsageError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
    items = [EvalItem(_name(s, root), s) for s in samples if s.task == task]
    if not items:
        raise DataError(f"{data} holds no {task} items")
    return _listed_once(items)


def _check_scale(records: Sequence[tuple[str, dict[str, Any]]], mos_range: Sequence[float] | None) -> None:
    """MOS off the scale it is read on is one error, naming its first row and the way out, rather than a
    "bad row" for each of a data set's thousands of 0-100 scores. A record is on the ``mos_range`` given
    when an importer put it there, on [1, 5] when it has none; one with a scale of its own (our JSONL's
    mos_range) is checked on that when loaded."""
    given = [float(v) for v in mos_range] if mos_range is not None else None
    values, outside = [], []
    for origin, record in records:
        if not isinstance(record, dict) or record.get("task") != "score":
            continue
        own = record.get("mos_range")
        try:
            scale = [1.0, 5.0] if own is None else [float(v) for v in own]
            value = float(record["mos"])
        except (KeyError, TypeError, ValueError, OverflowError):
            continue  # reported when loaded, with its line
        if not math.isfinite(value):
            continue  # likewise: not a number, rather than off the scale
        if own is not None and scale != given:
            continue
        values.append(value)
        if not scale[0] <= value <= scale[1]:
            outside.append((origin, value, scale))
    if not outside:
        return
    origin, value, (low, high) = outside[0]
    verb = "is" if len(outside) == 1 else "are"
    extent = (
        f"{len(outside)} of the file's {len(values)} MOS values {verb} outside; they run from "
        f"{min(values):g} to {max(values):g}"
        if len(values) > 1
        else "the file's only MOS value"
    )
    if mos_range is None:
        raise DataError(
            f"{origin}: mos {value} is outside [1, 5] ({extent}). Give the scale this file's MOS is on "
            "with --mos-range LOW HIGH (e.g. --mos-range 0 100; mos_range=(0, 100) in Python): it is "
            "then normalised to [1, 5]."
        )
    raise DataError(
        f"{origin}: mos {value} is outside the --mos-range {low:g} {high:g} given ({extent}). Give the "
        "scale this file's MOS is on with --mos-range LOW HIGH."
    )


def _listed_once(items: list[EvalItem]) -> list[EvalItem]:
    """Each item once. An item the file lists twice (its images the same files, however named) with two labels
    cannot be measured against either: an error naming both lines. With the same label it would only weigh
    twice in the metrics: kept once, with a warning."""
    first: dict[str, EvalItem] = {}
    again: list[tuple[EvalItem, EvalItem]] = []
    for item in items:
        earlier = first.setdefault(item.key, item)
        if earlier is item:
            continue
        if _label(item.sample) != _label(earlier.sample):
            what = "pair" if item.sample.task == "comparison" else "image"
            raise DataError(
                f"{item.sample.origin}: {item.name} is labelled {_label(item.sample)}, but "
                f"{earlier.sample.origin} labels the same {what} {_label(earlier.sample)}: keep one "
                "of the two"
            )
        again.append((item, earlier))
    if again:
        item, earlier = again[0]
        logger.warning(
            f"{item.sample.origin}: {item.name} is listed again, with the same label as "
            f"{earlier.sample.origin}; it is counted once"
            if len(again) == 1
            else f"{len(again)} items are listed again with the same label (the first: {item.sample.origin}, "
            f"as {earlier.sample.origin}); each is counted once"
        )
    return list(first.values())


def _label(sample: Sample) -> str:
    """A sample's label as a data file says it."""
    if sample.task == "score":
        return f"mos {sample.mos:g}"
    if sample.task == "degradation":
        return f"{sample.distortion_class}/{sample.severity}"
    return str(sample.answer)


def _name(sample: Sample, root: Path) -> str:
    def relative(path: Path) -> str:
        try:
            return path.relative_to(root).as_posix()
        except ValueError:
            return str(path)

    return "|".join(relative(p) for p in sample.images)


# -- the whole evaluation ----------------------------------------------------------------------------


def evaluate(
    data: str | Path | Sequence[EvalItem],
    predictions: str | Path,
    load_judge: Callable[[], Any] | None = None,
    image_root: str | Path | None = None,
    task: str | None = None,
    mode: str | None = None,
    batch_size: int = 8,
    retry_failed: bool = False,
    overwrite: bool = False,
    resamples: int = 1000,
    progress: bool = True,
    plot: str | Path | None = None,
    mos_range: Sequence[float] | None = None,
    settings: dict[str, Any] | None = None,
    format: str | None = None,
) -> dict[str, Any]:
    """Predict what ``predictions`` lacks (loading the judge only then), and report the task's metrics.

    ``data`` is a data file, or its items as :func:`load_items` read them (``image_root``, ``task``,
    ``mos_range`` and ``format`` are then not needed). Without ``load_judge`` nothing is predicted: items missing from
    ``predictions`` count as failed, and rows made with any settings are read. With it, ``settings``
    says what the judge's answers depend on (as the CLI records them): rows made with other settings
    are an error, never mixed in.

    ``retry_failed`` runs the model again on items whose row carries an error; ``overwrite`` starts
    ``predictions`` afresh. Ctrl-C stops after the
    rows already written; a rerun continues from there. ``plot`` writes a PNG: score against MOS with
    the fitted curve, or the degradation confusion matrix.
    """
    items = (
        data
        if isinstance(data, Sequence) and not isinstance(data, str)
        else load_items(data, image_root, task, mos_range, format)
    )
    task = items[0].sample.task
    spec = TASKS[task]
    _check_mode(task, mode)
    if plot is not None and spec.plot is None:
        raise UsageError("--plot draws score and degradation evaluations; comparisons have no figure")
    require_scipy()  # a missing scipy (or matplotlib, for a plot) is reported now, not after a long run
    if plot is not None:
        from .plots import pyplot

        pyplot()
        check_writable(plot)
    legacy_root = (
        image_root if image_root is not None else (Path(data).parent if isinstance(data, (str, Path)) else ".")
    )
    rows, predicted_now = _predict(
        items, predictions, load_judge, settings, mode, batch_size, retry_failed, overwrite, progress, legacy_root
    )
    return report(
        items,
        rows,
        task,
        resamples,
        plot,
        data=str(data) if isinstance(data, (str, Path)) else None,
        predictions=str(predictions),
        predicted_now=predicted_now,
    )


def _check_mode(task: str, mode: str | None) -> None:
    if mode is not None and mode not in TASKS[task].modes:
        raise UsageError(f"mode {mode!r} applies to scores only; {task} is always judged with reasoning")


def _predict(
    items: Sequence[EvalItem],
    predictions: str | Path,
    load_judge: Callable[[], Any] | None,
    settings: dict[str, Any] | None,
    mode: str,
    batch_size: int,
    retry_failed: bool,
    overwrite: bool,
    progress: bool,
    legacy_root: str | Path,
) -> tuple[dict[str, dict[str, Any]], int]:
    """The rows of ``predictions`` once what they lack is predicted (only with ``load_judge``, and loading
    the judge only then), and how many items were sent to the model."""
    task = items[0].sample.task
    if load_judge is None:
        store = read_store(predictions, task, legacy_root)
    else:
        store = open_store(
            predictions, task, settings or {}, retry_failed=retry_failed, overwrite=overwrite, legacy_root=legacy_root
        )
    try:
        todo = list({i.key: i for i in items if not store.done(i.key)}.values())  # listed twice: judged once
        if todo and load_judge is not None:
            judge = load_judge()
            unit = getattr(getattr(judge, "profile", None), "media", "image")  # images/s (videos/s), ETA
            with tqdm(total=len(todo), unit=unit, file=sys.stderr, disable=not progress) as bar:

                def write(index: int, result: Any) -> None:
                    store.write([str(p) for p in todo[index].sample.images], result.to_dict())
                    bar.update(1)

                TASKS[task].ask(judge, [i.sample for i in todo], mode=mode, batch_size=batch_size, on_result=write)
    finally:
        store.close()
    return store.rows, len(todo) if load_judge is not None else 0


def report(
    items: Sequence[EvalItem],
    rows: dict[str, dict[str, Any]],
    task: str,
    resamples: int = 1000,
    plot: str | Path | None = None,
    **about: Any,
) -> dict[str, Any]:
    """The metrics over judged items, and the failed ones (missing prediction or error) with reasons;
    ``plot`` also draws them."""
    judged, failed = [], []
    for item in items:
        row = rows.get(item.key)
        problem = "no prediction" if row is None else row_problem(row, task)
        if problem:
            failed.append({"item": item.name, "error": problem})
        else:
            judged.append((item.sample, row))
    spec = TASKS[task]
    samples, judged_rows = [s for s, _ in judged], [on_label_scale(r) for _, r in judged]
    metrics = spec.metrics(samples, judged_rows, resamples)
    result = {"task": task, **about, "items": len(items), "judged": len(judged), "failed": failed, "metrics": metrics}
    if plot is not None and spec.plot is not None:
        spec.plot(samples, judged_rows, metrics, Path(plot), Path(result.get("data") or result["predictions"]).name)
    return result


def on_label_scale(row: dict[str, Any]) -> dict[str, Any]:
    """A prediction row as the metrics compare it with labels (on [1, 5]): a video judge's score, kept on
    its own scale in the row (0-100 for VQ-Insight's), mapped linearly onto [1, 5], so that RMSE means the
    same for every judge; image judges' scores are on [1, 5] already. Correlations do not change."""
    profile = PROFILES.get(str((row.get("settings") or {}).get("profile")))
    if profile is None or profile.media != "video" or row.get("score") is None:
        return row
    low, high = profile.rating_range

    def mapped(value: float) -> float:
        return 1 + 4 * (value - low) / (high - low)

    found = {k: mapped(row[k]) for k in ("score", "expected_score") if row.get(k) is not None}
    if row.get("dimensions"):
        found["dimensions"] = {k: None if v is None else mapped(v) for k, v in row["dimensions"].items()}
    return {**row, **found}


# A score no quality scale reaches (1-5, 0-1, 0-100, Elo's ~1500 all lie far inside): a row beyond it is
# corrupt, not a judge's opinion, and its square (RMSE, PLCC) would overflow to inf and poison every metric.
SCORE_BOUND = 1e6


def row_problem(row: dict[str, Any], task: str) -> str | None:
    """Why a prediction row gives no usable prediction (its error, a field missing, a score that is not a
    finite number within ``SCORE_BOUND``), or None. Rows from elsewhere (``--predictions-only``) may hold
    anything JSON can: NaN and Infinity included."""
    problem = row.get("error") or TASKS[task].row_problem(row)
    if problem or task != "score":
        return problem
    return _number_problem("score", row["score"]) or (
        None if row.get("expected_score") is None else _number_problem("expected_score", row["expected_score"])
    )


def _number_problem(field: str, value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"the prediction's {field} {value!r} is not a number"
    try:
        number = float(value)
    except OverflowError:
        return f"the prediction's {field} is an integer of {value.bit_length()} bits, outside any quality scale"
    if not math.isfinite(number):
        spelled = "NaN" if math.isnan(number) else "Infinity" if number > 0 else "-Infinity"  # as JSON writes it
        return f"the prediction's {field} {spelled} is not a finite number"
    if abs(number) > SCORE_BOUND:
        return f"the prediction's {field} {number:g} is outside any quality scale (beyond ±{SCORE_BOUND:g})"
    return None


def summary_lines(result: dict[str, Any]) -> Iterator[str]:
    """The report as a few readable lines (the JSON report has everything)."""
    yield f"{result['task']}: {result['judged']} of {result['items']} items judged, {len(result['failed'])} failed"
    yield from TASKS[result["task"]].summary(result["metrics"])
    for failure in result["failed"][:5]:
        yield f"failed: {failure['item']}: {failure['error']}"
    if len(result["failed"]) > 5:
        yield f"... and {len(result['failed']) - 5} more failed items (see the report)"


# -- several judges on the same items --------------------------------------------------------------------


@dataclass(frozen=True)
class JudgeRun:
    """One judge of a side-by-side evaluation: its name in the table, its own predictions file, how to load
    it (None: read its predictions only) and the settings its rows must carry."""

    name: str
    predictions: Path
    load: Callable[[], Any] | None = None
    settings: dict[str, Any] | None = None


def compare_judges(
    items: Sequence[EvalItem],
    runs: Sequence[JudgeRun],
    mode: str | None = None,
    batch_size: int = 8,
    retry_failed: bool = False,
    overwrite: bool = False,
    resamples: int = 1000,
    progress: bool = True,
    plot: str | Path | None = None,
    image_root: str | Path = ".",
) -> dict[str, Any]:
    """Evaluate each judge in turn on the same scored items (one in memory at a time, each resumable in its
    own predictions file), then compare every pair on the items both judged: the SRCC and PLCC difference
    with a paired bootstrap interval (:func:`~qinsight_sdk.evaluation.metrics.paired_difference`), so that a user sees
    whether one judge is really better on their images or only by chance. ``plot``: a bar chart of SRCC
    and PLCC per judge with their intervals."""
    if items[0].sample.task != "score":
        raise UsageError(
            f"comparing judges measures scores (SRCC, PLCC); this data holds {items[0].sample.task} "
            "items: evaluate those one model at a time"
        )
    names = [run.name for run in runs]
    if len(runs) < 2 or len(set(names)) != len(names):
        raise UsageError(f"comparing judges needs at least two, each with its own name; got {names}")
    require_scipy()
    if plot is not None:
        from .plots import pyplot

        pyplot()
        check_writable(plot)
    _check_mode("score", mode)
    judges, scores = [], {}
    for run in runs:
        rows, predicted_now = _predict(
            items,
            run.predictions,
            run.load,
            run.settings,
            mode,
            batch_size,
            retry_failed,
            overwrite,
            progress,
            image_root,
        )
        _release_memory()  # the judge just used is unreferenced now: free it before the next one loads
        found = report(
            items, rows, "score", resamples, data=None, predictions=str(run.predictions), predicted_now=predicted_now
        )
        judges.append({"name": run.name, **found, "settings": run.settings})
        scores[run.name] = {key: row["score"] for key, row in rows.items() if row_problem(row, "score") is None}
    pairs = [_paired(a, b, items, scores, resamples) for a, b in combinations(names, 2)]
    if plot is not None:
        from .plots import judges_chart

        judges_chart(
            [{"name": j["name"], "n": j["judged"], **{k: j["metrics"][k] for k in JUDGE_COLUMNS}} for j in judges],
            plot,
            "judges compared",
        )
    return {"task": "score", "items": len(items), "judges": judges, "pairs": pairs}


JUDGE_COLUMNS = ("srcc", "srcc_ci95", "plcc", "plcc_ci95")


def _paired(
    a: str, b: str, items: Sequence[EvalItem], scores: dict[str, dict[str, float]], resamples: int
) -> dict[str, Any]:
    both = [i for i in items if i.key in scores[a] and i.key in scores[b]]
    found = paired_difference(
        [scores[a][i.key] for i in both], [scores[b][i.key] for i in both], [i.sample.mos for i in both], resamples
    )
    return {"a": a, "b": b, **found}


def _release_memory() -> None:
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


def comparison_lines(result: dict[str, Any]) -> Iterator[str]:
    """The side-by-side table, then one line per pair of judges (the JSON report has everything)."""
    width = max(len(j["name"]) for j in result["judges"])
    yield f"{'judge':<{width}}  {'judged':<9}  {'SRCC (95% CI)':<27}  PLCC (95% CI)"
    for judge in result["judges"]:
        metrics = judge["metrics"]
        yield (
            f"{judge['name']:<{width}}  {str(judge['judged']) + '/' + str(judge['items']):<9}  "
            f"{_with_interval(metrics['srcc'], metrics['srcc_ci95']):<27}  "
            f"{_with_interval(metrics['plcc'], metrics['plcc_ci95'])}"
        )
    for pair in result["pairs"]:
        yield f"{pair['a']} vs {pair['b']} on the {pair['n']} items both judged:"
        for name in ("srcc", "plcc"):
            found = pair[name]
            yield (
                f"  {name.upper()} difference {_with_interval(found['difference'], found['ci95'], sign=True)}: "
                + _verdict_words(found["verdict"], pair["a"], pair["b"])
            )


def _with_interval(value: float | None, interval: Sequence[float] | None, sign: bool = False) -> str:
    if value is None:
        return "n/a"
    form = "+.3f" if sign else ".3f"
    text = f"{value:+.4f}" if sign else f"{value:.4f}"
    return text + (f" ({interval[0]:{form}} to {interval[1]:{form}})" if interval else "")


def _verdict_words(verdict: str | None, a: str, b: str) -> str:
    return {"A": f"{a} is better", "B": f"{b} is better", "neither": "no clear difference (the interval holds 0)"}.get(
        verdict or "", "too few items to tell"
    )
