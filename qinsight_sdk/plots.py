"""Figures of an evaluation (matplotlib, the optional ``[plot]`` extra), written as PNG files."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .errors import MissingDependencyError
from .metrics import logistic4


def pyplot() -> Any:
    """matplotlib's pyplot, drawing to files only; a clear error when matplotlib is missing."""
    try:
        import matplotlib
    except ImportError:
        raise MissingDependencyError("--plot needs matplotlib: pip install 'qinsight[plot]'") from None
    matplotlib.use("Agg")   # files only, never a window
    import matplotlib.pyplot as plt

    return plt


def score_scatter(predicted: Sequence[float], mos: Sequence[float], metrics: dict[str, Any], path: str | Path,
                  title: str = "") -> None:
    """Predicted score against MOS, with the fitted logistic curve and the correlations in the legend."""
    plt = pyplot()
    figure, axes = plt.subplots(figsize=(5.5, 5), dpi=120)
    axes.scatter(predicted, mos, s=8, alpha=0.5, label=f"{len(mos)} images")
    params = metrics.get("logistic_params")
    if params and len(predicted):
        xs = np.linspace(min(predicted), max(predicted), 200)
        plcc = metrics.get("plcc_logistic")
        axes.plot(xs, logistic4(xs, *params), color="C3",
                  label="4-parameter logistic" + (f" (PLCC {plcc:.3f})" if plcc is not None else ""))
    srcc = metrics.get("srcc")
    axes.set_xlabel("predicted score")
    axes.set_ylabel("MOS")
    axes.set_title(title + (f"  SRCC {srcc:.3f}" if srcc is not None else ""))
    axes.legend(loc="lower right")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def confusion_matrix(metrics: dict[str, Any], path: str | Path, title: str = "") -> None:
    """The degradation classes' confusion matrix, counts in the cells."""
    plt = pyplot()
    labels, counts = metrics["labels"], np.asarray(metrics["confusion"])
    figure, axes = plt.subplots(figsize=(5.5, 5), dpi=120)
    axes.imshow(counts, cmap="Blues")
    axes.set_xticks(range(len(labels)), labels, rotation=30)
    axes.set_yticks(range(len(labels)), labels)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    for row in range(len(labels)):
        for column in range(len(labels)):
            axes.text(column, row, str(counts[row, column]), ha="center", va="center",
                      color="white" if counts[row, column] > counts.max() / 2 else "black")
    axes.set_title(title)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
