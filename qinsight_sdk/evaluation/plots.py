"""Figures of an evaluation (matplotlib, the optional ``[plot]`` extra), written as PNG files."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import MissingDependencyError
from .metrics import logistic4


def pyplot() -> Any:
    """matplotlib's pyplot, drawing to files only; a clear error when matplotlib is missing."""
    try:
        import matplotlib
    except ImportError:
        raise MissingDependencyError("--plot needs matplotlib: pip install 'qinsight[plot]'") from None
    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    return plt


def score_scatter(
    predicted: Sequence[float], mos: Sequence[float], metrics: dict[str, Any], path: str | Path, title: str = ""
) -> None:
    """Predicted score against MOS, with the fitted logistic curve and the correlations in the legend."""
    plt = pyplot()
    figure, axes = plt.subplots(figsize=(5.5, 5), dpi=120)
    axes.scatter(predicted, mos, s=8, alpha=0.5, label=f"{len(mos)} images")
    params = metrics.get("logistic_params")
    if params and len(predicted):
        xs = np.linspace(min(predicted), max(predicted), 200)
        plcc = metrics.get("plcc_logistic")  # negative for a decreasing fit: the legend says so
        falls = metrics.get("logistic_direction") == "decreasing"
        axes.plot(
            xs,
            logistic4(xs, *params),
            color="C3",
            label="4-parameter logistic"
            + (", decreasing" if falls else "")
            + (f" (PLCC {plcc:.3f})" if plcc is not None else ""),
        )
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
            axes.text(
                column,
                row,
                str(counts[row, column]),
                ha="center",
                va="center",
                color="white" if counts[row, column] > counts.max() / 2 else "black",
            )
    axes.set_title(title)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


JUDGE_METRICS = (("srcc", "SRCC", "C0"), ("plcc", "PLCC", "C1"))


def _bar_with_interval(
    axes: Any, x: float, value: float, interval: Sequence[float] | None, width: float, color: str
) -> None:
    """One bar, its value written past its end, and its interval (when there is one) as an error bar."""
    axes.bar(x, value, width, color=color)
    low, high = interval if interval is not None else (value, value)
    if interval is not None:
        axes.errorbar(x, (low + high) / 2, yerr=(high - low) / 2, fmt="none", ecolor="black", capsize=3, linewidth=1)
    axes.text(
        x,
        max(value, high) if value >= 0 else min(value, low),
        f"{value:.3f}",
        ha="center",
        va="bottom" if value >= 0 else "top",
        fontsize=7,
    )


def judges_chart(rows: Sequence[dict[str, Any]], path: str | Path, title: str = "") -> Any:
    """SRCC and PLCC of several judges on the same labelled images, side by side, with 95% intervals,
    so that a difference can be read against its uncertainty. A value or interval that is None is left
    out (no bar, no error bar). Returns the figure, already written and closed, so that a caller (or a
    test) can read what was drawn."""
    plt = pyplot()
    from matplotlib.patches import Patch

    figure, axes = plt.subplots(figsize=(max(4.5, 1.5 * len(rows) + 2), 4.5), dpi=120)
    width = 0.38
    for offset, (key, _, color) in zip((-width / 2, width / 2), JUDGE_METRICS):
        for position, row in enumerate(rows):
            value = row.get(key)
            if value is None:
                continue
            _bar_with_interval(axes, position + offset, value, row.get(f"{key}_ci95"), width, color)
    axes.set_xticks(range(len(rows)), [f"{row.get('name', '')}\nn={row.get('n', '?')}" for row in rows])
    axes.axhline(0, color="grey", linewidth=0.8)
    axes.set_ylabel("correlation with MOS (95% CI)")
    axes.set_title(title)
    axes.set_ylim(min(0.0, axes.get_ylim()[0]), 1.2)  # correlations end at 1: room above for the legend
    axes.legend(
        handles=[Patch(color=color, label=label) for _, label, color in JUDGE_METRICS], loc="upper left", ncols=2
    )
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return figure
