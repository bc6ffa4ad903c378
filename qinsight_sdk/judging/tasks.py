"""The three tasks, one spec each: the table every other module looks a task up in.

A ``TaskSpec`` says, for score, degradation or comparison, everything that does not depend on the model:
the result type and how sampled answers are aggregated into one; how a result is spelled in data files
and prediction rows (the winner "A" is "Image A" there, no distortion is "null"); how a labelled record
is read; how the judge is asked for many items; and how predictions are measured against labels. The
model-side half (which prompt, which parser) is a judge profile's (:mod:`qinsight_sdk.judging.profiles`).
"""

from __future__ import annotations

import math
import statistics
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import UsageError
from ..evaluation import metrics
from .parsing import FULL_SCALE
from .prompts import COMPARISON_ANSWERS, DISTORTION_CLASSES, NO_DISTORTION, SEVERITY_LEVELS
from .results import ComparisonResult, DegradationResult, ScoreResult

if TYPE_CHECKING:  # annotations only: the record store and rows saved in images are read without torch
    from ..backends.base import Generation, RatingDistribution, TwoDigitDistribution

Parse = Callable[[str], Any]

# The winners results hold, and the answers data files and the comparison prompt spell them as.
ANSWER_OF_WINNER = dict(zip(("A", "B", "similar"), COMPARISON_ANSWERS))
_SWAPPED = {"A": "B", "B": "A", "similar": "similar", None: None}


def answer_of_winner(winner: str | None) -> str | None:
    """ "Image A", "Image B" or "Similar" for a result's winner; None for none."""
    return ANSWER_OF_WINNER.get(winner)  # type: ignore[arg-type]


def degradation_label(value: str | None) -> str:
    """A result's distortion class or severity as labels spell it: None (no distortion) is "null"."""
    return value or NO_DISTORTION


# -- aggregation: sampled answers to one result ------------------------------------------------------


def _read_all(
    generations: list[Generation], parse: Parse, readable: Callable[[Any], bool]
) -> tuple[list[Any], list[tuple[Generation, Any]]]:
    """Every answer parsed, and the (generation, parsed) pairs that gave a verdict."""
    parsed = [parse(g.text) for g in generations]
    return parsed, [(g, p) for g, p in zip(generations, parsed) if readable(p)]


def _unreadable(parsed: list[Any], generations: list[Generation]) -> str:
    first = generations[0]
    if first.finished:
        return parsed[0].error
    at = "max_new_tokens" if first.tokens is None else f"{first.tokens} tokens (max_new_tokens)"
    return f"{parsed[0].error} (the answer was cut off at {at})"


def _majority(good: list[tuple[Generation, Any]], verdict_of: Callable[[Any], Any]) -> tuple[Generation, Any]:
    """The first answer carrying the most common verdict."""
    verdict = Counter(verdict_of(p) for _, p in good).most_common(1)[0][0]
    return next((g, p) for g, p in good if verdict_of(p) == verdict)


def score_of_distribution(
    distribution: RatingDistribution | TwoDigitDistribution,
    scale: tuple[float, float] = FULL_SCALE,
    keep_scale: bool = False,
) -> ScoreResult:
    """A fast score: the expected rating (1.00 to 5.99: never clamped), with the distribution's spread as
    ``std``. On a judge whose own ``scale`` is not 1-5 (RALI's 0-1) both are mapped linearly onto 1-5, and
    the expectation as the judge gave it is kept as ``raw_score``.

    Probabilities that are not finite (a checkpoint with NaN or infinite weights) are an error, not a
    rating: NaN must never read as a score. ``keep_scale``: the expectation as the judge gave it (a video
    judge's 0-100 scores), not mapped.
    """
    mean, std = distribution.expected()
    if not math.isfinite(mean):  # NaN anywhere spreads to the mean (0 * NaN is NaN), so it is all to check
        return ScoreResult(
            error="the model's rating probabilities are not finite numbers: the checkpoint's "
            "weights or its dtype are broken (NaN or infinite values)"
        )
    low, high = scale
    if keep_scale or (low, high) == FULL_SCALE:
        return ScoreResult(score=mean, std=std)
    stretch = (FULL_SCALE[1] - FULL_SCALE[0]) / (high - low)
    return ScoreResult(score=FULL_SCALE[0] + (mean - low) * stretch, std=std * stretch, raw_score=mean)


def _score_result(generations: list[Generation], parse: Parse) -> ScoreResult:
    parsed, good = _read_all(generations, parse, lambda p: p.score is not None)
    if not good:
        return ScoreResult(
            reasoning=parsed[0].reasoning, raw=generations[0].text, error=_unreadable(parsed, generations)
        )
    scores = [p.score for _, p in good]
    generation, first = good[0]
    several = len(generations) > 1
    dimensions = _mean_dimensions([p.dimensions for _, p in good if p.dimensions])
    expected = [score_of_distribution(g.rating) for g, _ in good if g.rating is not None]
    expected = [e for e in expected if e.ok]
    return ScoreResult(
        score=statistics.fmean(scores),
        reasoning=first.reasoning,
        raw=generation.text,
        std=statistics.pstdev(scores) if several else None,
        samples=scores if several else [],
        expected_score=statistics.fmean(e.score for e in expected) if expected else None,
        expected_std=statistics.fmean(e.std for e in expected) if expected else None,
        dimensions=dimensions,
    )


def _mean_dimensions(found: list[dict[str, float]]) -> dict[str, float] | None:
    """Each dimension's mean over the samples that gave it (one sample: its own values)."""
    if not found:
        return None
    return {key: statistics.fmean(d[key] for d in found if key in d) for key in found[0]}


def _degradation_result(generations: list[Generation], parse: Parse) -> DegradationResult:
    parsed, good = _read_all(generations, parse, lambda p: p.error is None)
    if not good:
        first = parsed[0]
        return DegradationResult(
            first.distortion, first.severity, first.reasoning, generations[0].text, _unreadable(parsed, generations)
        )
    generation, chosen = _majority(good, lambda p: (p.distortion, p.severity))
    return DegradationResult(chosen.distortion, chosen.severity, chosen.reasoning, generation.text)


def _comparison_result(generations: list[Generation], parse: Parse) -> ComparisonResult:
    parsed, good = _read_all(generations, parse, lambda p: p.winner is not None)
    if not good:
        return ComparisonResult(
            reasoning=parsed[0].reasoning, raw=generations[0].text, error=_unreadable(parsed, generations)
        )
    generation, chosen = _majority(good, lambda p: p.winner)
    return ComparisonResult(winner=chosen.winner, reasoning=chosen.reasoning, raw=generation.text)


def reconcile(forward: ComparisonResult, backward: ComparisonResult) -> ComparisonResult:
    """Merge the (A, B) verdict with the (B, A) one, mapped back to the caller's labels."""
    back_winner = _SWAPPED[backward.winner]
    raw = f"[order A, B]\n{forward.raw}\n[order B, A]\n{backward.raw}"
    reasoning = (
        "\n\n".join(
            f"[{label}] {r.reasoning}"
            for label, r in (("order A, B", forward), ("order B, A", backward))
            if r.reasoning
        )
        or None
    )
    if forward.winner is None and back_winner is None:
        return ComparisonResult(
            reasoning=reasoning, raw=raw, error=f"neither order gave a verdict: {forward.error}; {backward.error}"
        )
    if forward.winner is None or back_winner is None:
        return ComparisonResult(winner=forward.winner or back_winner, reasoning=reasoning, raw=raw)
    agree = forward.winner == back_winner
    return ComparisonResult(
        winner=forward.winner if agree else "similar", reasoning=reasoning, raw=raw, consistent=agree
    )


# -- labelled records (data files) -------------------------------------------------------------------


def _score_record(record: dict[str, Any]) -> tuple[list[str], dict[str, Any]]:
    """The image and its MOS on [1, 5]; with ``dimensions`` (a multi-dimension judge's labels, such as
    VQ-Insight's AIGC judge's spatial, temporal and consistency), each on the same scale as the MOS."""
    labels = {"mos": _on_one_to_five(record["mos"], record, "mos")}
    if record.get("dimensions"):
        labels["dimensions"] = tuple(
            (str(name), _on_one_to_five(value, record, str(name))) for name, value in record["dimensions"].items()
        )
    return [record["image"]], labels


def _on_one_to_five(value: Any, record: dict[str, Any], name: str) -> float:
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{name} {number} is not a finite number")
    if "mos_range" in record:
        number = normalise_mos(number, *record["mos_range"])
    if not 1.0 <= number <= 5.0:
        raise ValueError(f"{name} {number} is outside [1, 5]; give mos_range to normalise it")
    return number


def normalise_mos(mos: float, low: float, high: float) -> float:
    """The paper's min-max normalisation onto [1, 5]: 4 * (mos - low) / (high - low) + 1."""
    if not high > low:
        raise UsageError(f"MOS range [{low}, {high}] is empty")
    return 4.0 * (float(mos) - low) / (high - low) + 1.0


def _degradation_record(record: dict[str, Any]) -> tuple[list[str], dict[str, Any]]:
    label, severity = record["distortion_class"], record["severity"]
    if label not in DISTORTION_CLASSES + (NO_DISTORTION,) or severity not in SEVERITY_LEVELS + (NO_DISTORTION,):
        raise ValueError(f"unknown label {label!r} / {severity!r}")
    return [record["image"]], {"distortion_class": label, "severity": severity}


def _comparison_record(record: dict[str, Any]) -> tuple[list[str], dict[str, Any]]:
    if record["answer"] not in COMPARISON_ANSWERS:
        raise ValueError(f"answer must be one of {COMPARISON_ANSWERS}, got {record['answer']!r}")
    names = ([record["reference"]] if record.get("reference") else []) + [record["image_a"], record["image_b"]]
    return names, {"answer": record["answer"]}


# -- asking a judge about labelled samples (images in prompt order: [reference,] A, B) --------------------


def _ask_score(judge: Any, samples: Sequence[Any], **options: Any) -> None:
    judge.score([str(s.images[0]) for s in samples], **options)


def _ask_degradation(judge: Any, samples: Sequence[Any], mode: str, **options: Any) -> None:
    judge.degradation([str(s.images[0]) for s in samples], **options)


def _ask_comparison(judge: Any, samples: Sequence[Any], mode: str, **options: Any) -> None:
    pairs = [(str(s.images[-2]), str(s.images[-1]), str(s.images[0]) if len(s.images) == 3 else None) for s in samples]
    judge.compare_pairs(pairs, **options)


# -- record rows (a result's fields, :mod:`qinsight_sdk.io.records`): what makes one unusable ----------------


def _score_row_problem(row: dict[str, Any]) -> str | None:
    return None if row.get("score") is not None else "the prediction row has no score"


def _degradation_row_problem(row: dict[str, Any]) -> str | None:
    return None if "distortion" in row and "severity" in row else "the prediction row lacks distortion, severity"


def _comparison_row_problem(row: dict[str, Any]) -> str | None:
    winner = row.get("winner")
    return None if winner in ANSWER_OF_WINNER else f"the prediction row's winner is {winner!r}"


# -- metrics over judged samples and their rows, and their summary ----------------------------------------


def _score_metrics(samples: Sequence[Any], rows: Sequence[dict[str, Any]], resamples: int) -> dict[str, Any]:
    """The written scores' metrics; in reason mode also ``expected``: the same metrics for the
    continuous score read at the written rating, over the items that have one."""
    found = metrics.score_metrics([r["score"] for r in rows], [s.mos for s in samples], resamples)
    expected = [(r["expected_score"], s.mos) for s, r in zip(samples, rows) if r.get("expected_score") is not None]
    if expected:
        found["expected"] = metrics.score_metrics([e for e, _ in expected], [m for _, m in expected], resamples)
    dimensions = _dimension_pairs(samples, rows)
    if dimensions:
        found["dimensions"] = {
            name: metrics.score_metrics([p for p, _ in pairs], [m for _, m in pairs], resamples)
            for name, pairs in dimensions.items()
        }
    return found


def _dimension_pairs(samples: Sequence[Any], rows: Sequence[dict[str, Any]]) -> dict[str, list[tuple[float, float]]]:
    """(predicted, label) per dimension the labels name, over the items whose row gives that dimension."""
    pairs: dict[str, list[tuple[float, float]]] = {}
    for sample, row in zip(samples, rows):
        predicted = row.get("dimensions") or {}
        for name, label in getattr(sample, "dimensions", ()) or ():
            if predicted.get(name) is not None:
                pairs.setdefault(name, []).append((float(predicted[name]), label))
    return pairs


def _degradation_metrics(samples: Sequence[Any], rows: Sequence[dict[str, Any]], resamples: int) -> dict[str, Any]:
    return metrics.degradation_metrics(
        [degradation_label(r["distortion"]) for r in rows],
        [degradation_label(r["severity"]) for r in rows],
        [s.distortion_class for s in samples],
        [s.severity for s in samples],
    )


def _comparison_metrics(samples: Sequence[Any], rows: Sequence[dict[str, Any]], resamples: int) -> dict[str, Any]:
    return metrics.comparison_metrics([answer_of_winner(r["winner"]) for r in rows], [s.answer for s in samples])


def _number(value: Any) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _score_summary(found: dict[str, Any]) -> Iterator[str]:
    for name in ("srcc", "plcc"):
        interval = found[f"{name}_ci95"]
        span = f" (95% CI {metrics.format_interval(interval)})" if interval else ""
        yield f"{name.upper()} {_number(found[name])}{span}"
    falls = found.get("logistic_direction") == "decreasing"  # its PLCC is negative: say why
    yield (
        f"PLCC after the 4-parameter logistic fit {_number(found['plcc_logistic'])}"
        + (" (the fit decreases: higher scores go with lower MOS)" if falls else "")
        + "; "
        f"KRCC {_number(found['krcc'])}; RMSE {_number(found['rmse'])} "
        f"(after the fit {_number(found['rmse_logistic'])})"
    )
    for name, each in found.get("dimensions", {}).items():
        yield f"{name} ({each['n']} items): SRCC {_number(each['srcc'])}, PLCC {_number(each['plcc'])}"
    if "expected" in found:
        expected = found["expected"]
        yield (
            f"expected score at the written rating ({expected['n']} items): SRCC {_number(expected['srcc'])}, "
            f"PLCC {_number(expected['plcc'])}, RMSE {_number(expected['rmse'])}"
        )


def _degradation_summary(found: dict[str, Any]) -> Iterator[str]:
    yield "class         n  class acc  severity acc"
    for label, row in found["per_class"].items():
        yield f"{label:<12}{row['n']:>3}  {row['class_accuracy']:>9.3f}  {row['severity_accuracy']:>12.3f}"
    mean = found["mean"]
    yield (
        f"{'mean':<15}  {_number(mean['class_accuracy']):>9}  {_number(mean['severity_accuracy']):>12}  "
        "(as the paper: a severity right only with its class; over the four distortions, null apart)"
    )


def _comparison_summary(found: dict[str, Any]) -> Iterator[str]:
    yield f"accuracy {_number(found['accuracy'])}; " + "; ".join(
        f"{label} {row['accuracy']:.3f} (n={row['n']})" for label, row in found["per_label"].items()
    )


def _score_plot(
    samples: Sequence[Any], rows: Sequence[dict[str, Any]], found: dict[str, Any], path: Path, title: str
) -> None:
    from ..evaluation import plots

    plots.score_scatter([r["score"] for r in rows], [s.mos for s in samples], found, path, title)


def _degradation_plot(
    samples: Sequence[Any], rows: Sequence[dict[str, Any]], found: dict[str, Any], path: Path, title: str
) -> None:
    from ..evaluation import plots

    plots.confusion_matrix(found, path, title)


# -- the table ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TaskSpec:
    """Everything about one task that does not depend on the model; see the module docstring."""

    name: str
    result_type: type
    aggregate: Callable[[list[Generation], Parse], Any]  # sampled answers -> one result
    read_record: Callable[[dict[str, Any]], tuple[list[str], dict[str, Any]]]  # -> image names, label fields
    ask: Callable[..., None]  # (judge, samples, mode=, batch_size=, on_result=)
    row_problem: Callable[[dict[str, Any]], str | None]  # why a row holds no usable prediction
    metrics: Callable[[Sequence[Any], Sequence[dict[str, Any]], int], dict[str, Any]]  # (samples, rows, resamples)
    summary: Callable[[dict[str, Any]], Iterator[str]]  # metrics as readable lines
    plot: Callable[..., None] | None = None  # (samples, rows, metrics, path, title)
    modes: tuple[str, ...] = ("reason",)


TASKS: dict[str, TaskSpec] = {
    spec.name: spec
    for spec in (
        TaskSpec(
            "score",
            ScoreResult,
            _score_result,
            _score_record,
            _ask_score,
            _score_row_problem,
            _score_metrics,
            _score_summary,
            _score_plot,
            modes=("reason", "fast"),
        ),
        TaskSpec(
            "degradation",
            DegradationResult,
            _degradation_result,
            _degradation_record,
            _ask_degradation,
            _degradation_row_problem,
            _degradation_metrics,
            _degradation_summary,
            _degradation_plot,
        ),
        TaskSpec(
            "comparison",
            ComparisonResult,
            _comparison_result,
            _comparison_record,
            _ask_comparison,
            _comparison_row_problem,
            _comparison_metrics,
            _comparison_summary,
        ),
    )
}
TASK_NAMES = tuple(TASKS)
