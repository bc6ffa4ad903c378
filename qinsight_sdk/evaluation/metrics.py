"""Agreement between a judge's predictions and human labels, as IQA papers report it.

Correlations, the logistic fit and the bootstrap come from scipy (the ``[eval]`` extra). Every
function takes plain sequences of matched predictions and labels (failed items already left out) and
returns a JSON-ready dict; a value that cannot be computed (too few items, constant predictions) is None.
"""

from __future__ import annotations

import inspect
import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..errors import MissingDependencyError, UsageError
from ..judging.prompts import COMPARISON_ANSWERS, DISTORTION_CLASSES, NO_DISTORTION, SEVERITY_LEVELS

DEGRADATION_LABELS = DISTORTION_CLASSES + (NO_DISTORTION,)


def require_scipy() -> Any:
    """scipy, or a MissingDependencyError saying how to install it."""
    try:
        import scipy.optimize
        import scipy.special
        import scipy.stats
    except ImportError:
        raise MissingDependencyError("evaluation needs scipy: pip install 'qinsight[eval]'") from None
    return scipy


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def logistic4(x: np.ndarray, b1: float, b2: float, b3: float, b4: float) -> np.ndarray:
    """The 4-parameter logistic of IQA papers (VQEG): from b2 (low end) to b1 (high end), centred on b3.
    Written with scipy's expit, which saturates where 1 / (1 + exp(-z)) would overflow and warn."""
    return (b1 - b2) * require_scipy().special.expit((x - b3) / abs(b4)) + b2


def fit_logistic(predicted: Sequence[float], mos: Sequence[float]) -> tuple[float, float, float, float] | None:
    """Least-squares parameters mapping predictions onto the MOS scale, or None if the fit fails (or the
    predictions are all equal: no curve runs through one x).

    The fit starts where DeQA-Score's evaluator starts it (``fit_curve`` in its
    src/evaluate/cal_plcc_srcc.py): b1 = max(MOS), b2 = min(MOS), b3 = mean(predictions),
    b4 = std(predictions) / 4, so that its numbers and ours come from the same optimum."""
    x, y = np.asarray(predicted, float), np.asarray(mos, float)
    spread = float(np.std(x)) / 4
    if not spread > 0:
        return None
    start = (float(np.max(y)), float(np.min(y)), float(np.mean(x)), spread)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            params, _ = require_scipy().optimize.curve_fit(logistic4, x, y, p0=start, maxfev=20000)
    except (RuntimeError, ValueError):
        return None
    return tuple(float(p) for p in params) if np.all(np.isfinite(params)) else None


def logistic_direction(params: Sequence[float] | None) -> str | None:
    """Which way a fitted logistic runs: "increasing" (higher predictions, higher MOS: b1 above b2),
    "decreasing" (an anti-correlated judge), "flat", or None without a fit."""
    if not params:
        return None
    b1, b2 = params[0], params[1]
    return "increasing" if b1 > b2 else "decreasing" if b1 < b2 else "flat"


def format_interval(interval: Sequence[float] | None, sign: bool = False) -> str:
    """A 95% interval as printed everywhere: "0.610 to 0.800" ("+0.010 to +0.080" with ``sign``), never
    two numbers joined by a hyphen that reads as a minus sign; "" without one."""
    if interval is None:
        return ""
    form = "+.3f" if sign else ".3f"
    return f"{interval[0]:{form}} to {interval[1]:{form}}"


def correlation(name: str, x: np.ndarray, y: np.ndarray) -> float | None:
    """SRCC, PLCC or KRCC of ``x`` and ``y``; None for fewer than 3 pairs, a constant side or no number."""
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return None
    stats = require_scipy().stats
    function = {"srcc": stats.spearmanr, "plcc": stats.pearsonr, "krcc": stats.kendalltau}[name]
    return _finite(function(x, y)[0])


def _resample_correlation(name: str, x: np.ndarray, y: np.ndarray) -> float:
    """A correlation inside the bootstrap: a resample without spread counts as no correlation (0.0)."""
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return 0.0
    stats = require_scipy().stats
    return float({"srcc": stats.spearmanr, "plcc": stats.pearsonr}[name](x, y)[0])


def _percentile_bootstrap(
    data: tuple[np.ndarray, ...], statistic: Callable[..., float], resamples: int, seed: int
) -> list[float] | None:
    """A seeded 95% percentile bootstrap over items: one resample of indices applies to every array in
    ``data`` (paired), so an item's prediction(s) and label stay together."""
    if len(data[0]) < 5 or any(np.ptp(values) == 0 for values in data) or resamples < 1:
        return None
    stats = require_scipy().stats
    seeded = (
        {"rng": np.random.default_rng(seed)}
        if "rng" in inspect.signature(stats.bootstrap).parameters
        else {"random_state": np.random.default_rng(seed)}
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = stats.bootstrap(
            data,
            statistic,
            paired=True,
            vectorized=False,
            n_resamples=resamples,
            confidence_level=0.95,
            method="percentile",
            **seeded,
        )
    low, high = result.confidence_interval
    return [float(low), float(high)] if math.isfinite(low) and math.isfinite(high) else None


def _bootstrap_interval(name: str, x: np.ndarray, y: np.ndarray, resamples: int, seed: int) -> list[float] | None:
    """A 95% percentile bootstrap interval of one correlation over items (pairs resampled together)."""
    return _percentile_bootstrap((x, y), lambda a, b: _resample_correlation(name, a, b), resamples, seed)


def score_metrics(
    predicted: Sequence[float], mos: Sequence[float], resamples: int = 1000, seed: int = 0
) -> dict[str, Any]:
    """SRCC, KRCC, PLCC (raw, and after the logistic fit), RMSE (raw, and after the fit), 95% CIs.

    ``plcc`` correlates the predictions as they are; ``plcc_logistic`` correlates the fitted logistic of
    the predictions with the MOS, as DeQA-Score's evaluator and most IQA papers do, signed by the fit's
    ``logistic_direction``: a least-squares curve correlates positively with the MOS whichever way it
    runs, so a decreasing fit (higher predictions, lower MOS: an anti-correlated judge) gets the negative
    of that correlation, the same sign as its SRCC, and never a positive PLCC that hides it. ``rmse`` is
    on the label scale (meaningful when the MOS is normalised to 1-5 like the predictions);
    ``rmse_logistic`` after the fit, whichever way it runs.
    """
    x, y = np.asarray(predicted, float), np.asarray(mos, float)
    if x.shape != y.shape:
        raise UsageError(f"{len(x)} predictions for {len(y)} labels")
    params = fit_logistic(x, y) if len(x) >= 5 else None
    fitted = logistic4(x, *params) if params else None
    direction = logistic_direction(params)
    plcc_fitted = correlation("plcc", fitted, y) if fitted is not None else None
    if plcc_fitted is not None and direction == "decreasing":
        plcc_fitted = -plcc_fitted
    return {
        "n": int(len(x)),
        "srcc": correlation("srcc", x, y),
        "srcc_ci95": _bootstrap_interval("srcc", x, y, resamples, seed),
        "plcc": correlation("plcc", x, y),
        "plcc_ci95": _bootstrap_interval("plcc", x, y, resamples, seed),
        "plcc_logistic": plcc_fitted,
        "krcc": correlation("krcc", x, y),
        "rmse": _finite(float(np.sqrt(np.mean((x - y) ** 2)))) if len(x) else None,
        "rmse_logistic": _finite(float(np.sqrt(np.mean((fitted - y) ** 2)))) if fitted is not None else None,
        "logistic_params": list(params) if params else None,
        "logistic_direction": direction,
    }


def degradation_metrics(
    predicted_class: Sequence[str],
    predicted_severity: Sequence[str],
    true_class: Sequence[str],
    true_severity: Sequence[str],
) -> dict[str, Any]:
    """Per true class: class accuracy, and severity accuracy, as in Q-Insight's Table 2; their ``mean`` as
    the paper takes it (class accuracy over every class, "null" included: its 0.928; severity accuracy
    over the four distortion classes only, as "null" has no severity: its 0.480); their mean over items
    (``overall``); and the confusion matrix of classes (rows: truth, columns: prediction, in ``labels``
    order). "null" = no distortion.

    A severity counts as right only together with the right class, as Q-Insight's training reward
    credits it (``score_reward`` in src/open-r1-multimodal/src/open_r1/qinsight_multi_task.py: +0.25 for
    the class, and the +0.75 for the severity only inside the class match): "serious" is no right answer
    about a blurred image that the judge called noisy. So severity accuracy never exceeds class accuracy."""
    labels = list(DEGRADATION_LABELS)
    confusion = np.zeros((len(labels), len(labels)), dtype=int)
    per_class: dict[str, dict[str, Any]] = {}

    def both_right(i: int) -> bool:
        return predicted_class[i] == true_class[i] and predicted_severity[i] == true_severity[i]

    for label in labels:
        chosen = [i for i, t in enumerate(true_class) if t == label]
        if not chosen:
            continue
        per_class[label] = {
            "n": len(chosen),
            "class_accuracy": sum(predicted_class[i] == label for i in chosen) / len(chosen),
            "severity_accuracy": sum(both_right(i) for i in chosen) / len(chosen),
        }
    for truth, guess in zip(true_class, predicted_class):
        confusion[labels.index(truth), labels.index(guess)] += 1
    n = len(true_class)

    def mean_of(key: str, classes: Sequence[str]) -> float | None:
        values = [row[key] for label, row in per_class.items() if label in classes]
        return sum(values) / len(values) if values else None

    return {
        "n": n,
        "per_class": per_class,
        "mean": {
            "class_accuracy": mean_of("class_accuracy", labels),
            "severity_accuracy": mean_of("severity_accuracy", DISTORTION_CLASSES),
        },
        "overall": {
            "class_accuracy": sum(p == t for p, t in zip(predicted_class, true_class)) / n if n else None,
            "severity_accuracy": sum(both_right(i) for i in range(n)) / n if n else None,
        },
        "labels": labels,
        "confusion": confusion.tolist(),
        "severity_levels": list(SEVERITY_LEVELS),
    }


def comparison_metrics(predicted: Sequence[str], truth: Sequence[str]) -> dict[str, Any]:
    """Accuracy over all pairs and per label ("Image A", "Image B", "Similar")."""
    n = len(truth)
    per_label = {}
    for label in COMPARISON_ANSWERS:
        chosen = [i for i, t in enumerate(truth) if t == label]
        if chosen:
            per_label[label] = {"n": len(chosen), "accuracy": sum(predicted[i] == label for i in chosen) / len(chosen)}
    return {
        "n": n,
        "accuracy": sum(p == t for p, t in zip(predicted, truth)) / n if n else None,
        "per_label": per_label,
    }


def _verdict(interval: list[float] | None) -> str | None:
    if interval is None:
        return None
    return "A" if interval[0] > 0 else "B" if interval[1] < 0 else "neither"


def _paired_metric(name: str, a: np.ndarray, b: np.ndarray, y: np.ndarray, resamples: int, seed: int) -> dict[str, Any]:
    """One metric's A-minus-B difference, its paired interval and the verdict it supports."""
    of_a, of_b = correlation(name, a, y), correlation(name, b, y)

    def statistic(ra: np.ndarray, rb: np.ndarray, ry: np.ndarray) -> float:
        return _resample_correlation(name, ra, ry) - _resample_correlation(name, rb, ry)

    interval = _percentile_bootstrap((a, b, y), statistic, resamples, seed)
    return {
        "difference": _finite(of_a - of_b) if of_a is not None and of_b is not None else None,
        "ci95": interval,
        "verdict": _verdict(interval),
    }


def paired_difference(
    predicted_a: Sequence[float],
    predicted_b: Sequence[float],
    mos: Sequence[float],
    resamples: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """SRCC and PLCC of judge A minus judge B on the same items, with a paired 95% bootstrap interval.

    Paired because both judges scored the same images: their errors are correlated (an image hard for one
    is often hard for the other), so each resample of items is applied to A, B and the MOS together.
    Two separate intervals, one per judge, ignore that correlation and often overlap where the paired
    difference is clearly away from 0. ``verdict``: "A" when the interval lies above 0, "B" when below,
    "neither" when it holds 0, None when there is no interval (under 5 items, constant input, resamples < 1).
    """
    a, b, y = (np.asarray(values, float) for values in (predicted_a, predicted_b, mos))
    if not a.shape == b.shape == y.shape:
        raise UsageError(f"{len(a)} and {len(b)} predictions for {len(y)} labels")
    return {
        "n": int(len(y)),
        "srcc": _paired_metric("srcc", a, b, y, resamples, seed),
        "plcc": _paired_metric("plcc", a, b, y, resamples, seed),
    }
