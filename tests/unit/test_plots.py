"""The judges' comparison chart: a readable PNG, and bars as tall as the values they stand for."""

import pytest
from PIL import Image

from qinsight_sdk.evaluation.plots import judges_chart

pytest.importorskip("matplotlib")  # the optional [plot] extra

ROWS = [
    {"name": "q-insight", "srcc": 0.81, "srcc_ci95": [0.76, 0.85], "plcc": 0.84, "plcc_ci95": [0.80, 0.88], "n": 60},
    {"name": "baseline", "srcc": 0.62, "srcc_ci95": [0.50, 0.71], "plcc": 0.58, "plcc_ci95": [0.47, 0.69], "n": 60},
    {"name": "untrained", "srcc": -0.05, "srcc_ci95": None, "plcc": None, "plcc_ci95": None, "n": 60},
]


def drawn_bars(figure):
    """(x centre, height, colour) of every bar in the chart, left to right."""
    bars = [(p.get_x() + p.get_width() / 2, p.get_height(), p.get_facecolor()) for p in figure.axes[0].patches]
    return sorted(bars)


@pytest.mark.parametrize("count", [2, 3])
def test_judges_chart_writes_a_readable_png(tmp_path, count):
    path = tmp_path / "judges.png"
    judges_chart(ROWS[:count], path, "KonIQ test")
    with Image.open(path) as image:
        assert image.format == "PNG" and 400 <= image.width <= 2000 and 300 <= image.height <= 1200
        image.load()  # the whole file decodes
    assert 5_000 < path.stat().st_size < 1_000_000


def test_bar_heights_are_the_values_and_none_draws_nothing(tmp_path):
    figure = judges_chart(ROWS, tmp_path / "judges.png", "")
    heights = [height for _, height, _ in drawn_bars(figure)]
    assert heights == pytest.approx([0.81, 0.84, 0.62, 0.58, -0.05])  # SRCC then PLCC per judge; no PLCC bar
    srcc_colour, plcc_colour = drawn_bars(figure)[0][2], drawn_bars(figure)[1][2]
    assert srcc_colour != plcc_colour and drawn_bars(figure)[2][2] == srcc_colour
    labels = [label.get_text() for label in figure.axes[0].get_xticklabels()]
    assert labels == ["q-insight\nn=60", "baseline\nn=60", "untrained\nn=60"]


def test_error_bars_span_the_intervals(tmp_path):
    figure = judges_chart(ROWS[:2], tmp_path / "judges.png")
    spans = []
    for container in figure.axes[0].containers:
        if hasattr(container, "has_yerr") and container.has_yerr:
            for segment in container.lines[2][0].get_segments():
                spans.append(sorted(round(y, 9) for _, y in segment))
    assert sorted(spans) == sorted([[0.76, 0.85], [0.80, 0.88], [0.50, 0.71], [0.47, 0.69]])


def test_a_chart_of_nothing_still_writes(tmp_path):
    judges_chart(
        [{"name": "empty", "srcc": None, "srcc_ci95": None, "plcc": None, "plcc_ci95": None, "n": 0}],
        tmp_path / "none.png",
    )
    judges_chart([], tmp_path / "zero.png")
    assert (tmp_path / "none.png").stat().st_size > 1000 and (tmp_path / "zero.png").stat().st_size > 1000
