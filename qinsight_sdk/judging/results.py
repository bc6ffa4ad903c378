"""What the judge returns: small dataclasses that serialise to plain dicts and JSON."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

# on_result(index, result): called once per finished item by every judge method, for progress and streaming
ResultCallback = Callable[[int, Any], None]


@dataclass
class _Result:
    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        """Strict JSON: a non-finite number is an error here, never a ``NaN`` other parsers reject."""
        return json.dumps(self.to_dict(), ensure_ascii=False, allow_nan=False)

    @property
    def ok(self) -> bool:
        return getattr(self, "error", None) is None


@dataclass
class ScoreResult(_Result):
    """A quality rating: 1-5 from an image judge, 0-100 from a video judge (kept as written, never clamped).

    Attributes:
        score: the rating; with ``num_samples`` > 1 the mean of the samples' ratings; None when there is
            none (see ``error``).
        reasoning: the model's reasoning (reason mode), else None.
        raw: the model's whole answer as written ("" in fast mode).
        error: why there is no score (a bad image, an answer without a rating), else None.
        std: the spread of the samples' ratings, or in fast mode of the model's distribution over ratings.
        samples: each sample's rating, with ``num_samples`` > 1.
        expected_score: in reason mode, the expected two-decimal rating where the model wrote its rating,
            after its own reasoning (as fast mode: each first digit with its own decimals); None when no
            rating was written or the backend cannot tell.
        expected_std: the spread of that expectation.
        raw_score: the judge's own number where its scale is not 1-5 (RALI's prototype-weighted score,
            mapped onto 1-5 by its profile's ``rating_range``); None otherwise.
        dimensions: a multi-dimension judge's scores by name (VQ-Insight's AIGC judge: ``spatial``,
            ``temporal``, ``consistency``, each 0-100; ``score`` is then their mean); None otherwise.

    A video judge's scores stay on its own scale (0-100 for VQ-Insight's), as its profile's
    ``rating_range`` says; image judges' are on 1-5.
    """

    score: float | None = None
    reasoning: str | None = None
    raw: str = ""
    error: str | None = None
    std: float | None = None
    samples: list[float] = field(default_factory=list)
    expected_score: float | None = None
    expected_std: float | None = None
    raw_score: float | None = None
    dimensions: dict[str, float] | None = None


@dataclass
class DegradationResult(_Result):
    """The dominant distortion and its severity.

    Attributes:
        distortion: ``"noise"``, ``"compression"``, ``"blur"`` or ``"darken"``; None when the model found
            none (or see ``error``).
        severity: ``"slight"``, ``"moderate"``, ``"obvious"``, ``"serious"`` or ``"catastrophic"``, else None.
        reasoning: the model's reasoning.
        raw: the model's whole answer as written.
        error: why there is no verdict (a bad image, an answer that does not parse), else None.
    """

    distortion: str | None = None
    severity: str | None = None
    reasoning: str | None = None
    raw: str = ""
    error: str | None = None


@dataclass
class ComparisonResult(_Result):
    """Which of two images is better.

    Attributes:
        winner: ``"A"``, ``"B"`` or ``"similar"``; None when there is no verdict (see ``error``).
        reasoning: the model's reasoning.
        raw: the model's whole answer as written (both answers' when both orders were asked).
        error: why there is no verdict, else None.
        consistent: set when both orders were asked: False means the model changed its mind when the
            images swapped places (position bias), and the verdict was reconciled to "similar".
    """

    winner: str | None = None
    reasoning: str | None = None
    raw: str = ""
    error: str | None = None
    consistent: bool | None = None


@dataclass
class Ranking:
    """Images best first.

    Attributes:
        order: input indices, best first (cut to ``top_k``); images that could not be judged come last.
        scores: aligned with ``order``: what ranked each image, its fast score (``score``, ``hybrid``) or
            the knockout rounds it survived (``tournament``).
        strategy: ``"score"``, ``"tournament"`` or ``"hybrid"``.
        decided_by: what the order rests on, in words.
        comparisons: the questions asked (two per match).
        errors: input index -> why that image could not be judged.
        failed_matches: matches that gave no verdict in either order (counted as ties).
        unjudged: input index -> why none of that image's matches gave a verdict: its place rests on its
            seed (and score) alone.
        stages: for a cascade (``rank(..., prefilter=cheap_judge, keep=k)``), per stage the judge's profile
            and the input indices it judged (the cheap judge all that loaded, the judge the ``keep`` best
            of those). The ``keep`` images come first, ordered by the judge; the rest follow by the cheap
            judge's score, which is then their ``scores`` entry.
    """

    order: list[int]
    scores: list[float | None]
    strategy: str
    decided_by: str
    comparisons: int = 0
    errors: dict[int, str] = field(default_factory=dict)
    failed_matches: int = 0
    unjudged: dict[int, str] = field(default_factory=dict)
    stages: list[dict[str, Any]] = field(default_factory=list)

    @property
    def best(self) -> int | None:
        return self.order[0] if self.order else None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


RESULT_TYPES = {"score": ScoreResult, "degradation": DegradationResult, "comparison": ComparisonResult, "rank": Ranking}


def result_from(task: str, values: dict[str, Any]) -> Any:
    """A task's result rebuilt from its ``to_dict()`` (after JSON, which makes a ranking's keys strings)."""
    if task == "rank":
        values = {
            **values,
            **{name: {int(k): v for k, v in values.get(name, {}).items()} for name in ("errors", "unjudged")},
        }
    return RESULT_TYPES[task](**values)
