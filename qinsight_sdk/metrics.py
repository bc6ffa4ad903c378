"""Agreement between a judge's predictions and human labels, as IQA papers report it.

Correlations, the logistic fit and the bootstrap come from scipy (the ``[eval]`` extra). Every
function takes plain sequences of matched predictions and labels (failed items already left out) and
returns a JSON-ready dict; a value that cannot be computed (too few items, constant predictions) is None.
"""

from __future__ import annotations

import inspect
import math
import warnings
from typing import Any, Sequence

import numpy as np

from .errors import MissingDependencyError, UsageError
from .prompts import COMPARISON_ANSWERS, DISTORTION_CLASSES, NO_DISTORTION, SEVERITY_LEVELS

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
    """Least-squares parameters mapping predictions onto the MOS scale, or None if the fit fails."""
    x, y = np.asarray(predicted, float), np.asarray(mos, float)
    spread = float(np.std(x)) or 1.0
    start = (float(np.max(y)), float(np.min(y)), float(np.mean(x)), spread)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            params, _ = require_scipy().optimize.curve_fit(logistic4, x, y, p0=start, maxfev=20000)
    except (RuntimeError, ValueError):
        return None
    return tuple(float(p) for p in params) if np.all(np.isfinite(params)) else None


def _correlation(name: str, x: np.ndarray, y: np.ndarray) -> float | None:
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return None
    stats = require_scipy().stats
    function = {"srcc": stats.spearmanr, "plcc": stats.pearsonr, "krcc": stats.kendalltau}[name]
    return _finite(function(x, y)[0])


def _bootstrap_interval(name: str, x: np.ndarray, y: np.ndarray, resamples: int,
                        seed: int) -> list[float] | None:
    """A 95% percentile bootstrap interval over items (pairs resampled together)."""
    if len(x) < 5 or np.ptp(x) == 0 or np.ptp(y) == 0 or resamples < 1:
        return None
    stats = require_scipy().stats
    seeded = ({"rng": np.random.default_rng(seed)} if "rng" in inspect.signature(stats.bootstrap).parameters
              else {"random_state": np.random.default_rng(seed)})
    function = {"srcc": stats.spearmanr, "plcc": stats.pearsonr}[name]

    def statistic(a: np.ndarray, b: np.ndarray) -> float:
        if np.ptp(a) == 0 or np.ptp(b) == 0:
            return 0.0
        return float(function(a, b)[0])

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = stats.bootstrap((x, y), statistic, paired=True, vectorized=False, n_resamples=resamples,
                                 confidence_level=0.95, method="percentile", **seeded)
    low, high = result.confidence_interval
    return [float(low), float(high)] if math.isfinite(low) and math.isfinite(high) else None


def score_metrics(predicted: Sequence[float], mos: Sequence[float], resamples: int = 1000,
                  seed: int = 0) -> dict[str, Any]:
    """SRCC, KRCC, PLCC (raw, and after the logistic fit), RMSE (raw, and after the fit), 95% CIs.

    ``plcc`` correlates the predictions as they are; ``plcc_logistic`` correlates the fitted logistic of
    the predictions, as DeQA-Score's evaluator and most IQA papers do. ``rmse`` is on the label scale
    (meaningful when the MOS is normalised to 1-5 like the predictions); ``rmse_logistic`` after the fit.
    """
    x, y = np.asarray(predicted, float), np.asarray(mos, float)
    if x.shape != y.shape:
        raise UsageError(f"{len(x)} predictions for {len(y)} labels")
    params = fit_logistic(x, y) if len(x) >= 5 else None
    fitted = logistic4(x, *params) if params else None
    return {
        "n": int(len(x)),
        "srcc": _correlation("srcc", x, y),
        "srcc_ci95": _bootstrap_interval("srcc", x, y, resamples, seed),
        "plcc": _correlation("plcc", x, y),
        "plcc_ci95": _bootstrap_interval("plcc", x, y, resamples, seed),
        "plcc_logistic": _correlation("plcc", fitted, y) if fitted is not None else None,
        "krcc": _correlation("krcc", x, y),
        "rmse": _finite(float(np.sqrt(np.mean((x - y) ** 2)))) if len(x) else None,
        "rmse_logistic": _finite(float(np.sqrt(np.mean((fitted - y) ** 2)))) if fitted is not None else None,
        "logistic_params": list(params) if params else None,
    }


def degradation_metrics(predicted_class: Sequence[str], predicted_severity: Sequence[str],
                        true_class: Sequence[str], true_severity: Sequence[str]) -> dict[str, Any]:
    """Per true class: class accuracy, and severity accuracy (the severity right, whatever the class),
    as in Q-Insight's Table 2; their ``mean`` as the paper takes it (class accuracy over every class,
    "null" included: its 0.928; severity accuracy over the four distortion classes only, as "null" has no
    severity: its 0.480); their mean over items (``overall``); and the confusion matrix of classes (rows:
    truth, columns: prediction, in ``labels`` order). "null" = no distortion."""
    labels = list(DEGRADATION_LABELS)
    confusion = np.zeros((len(labels), len(labels)), dtype=int)
    per_class: dict[str, dict[str, Any]] = {}
    for label in labels:
        chosen = [i for i, t in enumerate(true_class) if t == label]
        if not chosen:
            continue
        per_class[label] = {
            "n": len(chosen),
            "class_accuracy": sum(predicted_class[i] == label for i in chosen) / len(chosen),
            "severity_accuracy": sum(predicted_severity[i] == true_severity[i] for i in chosen) / len(chosen),
        }
    for truth, guess in zip(true_class, predicted_class):
        confusion[labels.index(truth), labels.index(guess)] += 1
    n = len(true_class)

    def mean_of(key: str, classes: Sequence[str]) -> float | None:
        values = [row[key] for label, row in per_class.items() if label in classes]
        return sum(values) / len(values) if values else None

    return {
        "n": n, "per_class": per_class,
        "mean": {"class_accuracy": mean_of("class_accuracy", labels),
                 "severity_accuracy": mean_of("severity_accuracy", DISTORTION_CLASSES)},
        "overall": {
            "class_accuracy": sum(p == t for p, t in zip(predicted_class, true_class)) / n if n else None,
            "severity_accuracy": sum(p == t for p, t in zip(predicted_severity, true_severity)) / n if n else None,
        },
        "labels": labels, "confusion": confusion.tolist(),
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
    return {"n": n, "accuracy": sum(p == t for p, t in zip(predicted, truth)) / n if n else None,
            "per_label": per_label}
