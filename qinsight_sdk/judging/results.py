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
    """A 1-5 quality rating (a rating a little beyond the scale is kept as written, never clamped). With
    ``num_samples`` > 1, ``score`` is the mean and ``std`` the spread.

    In reason mode ``expected_score`` is the expected two-decimal rating where the model wrote its rating,
    after its own reasoning (as fast mode: each first digit with its own decimals), with ``expected_std``
    its spread; None when no rating was written or the backend cannot tell.

    ``raw_score`` is the judge's own number where its scale is not 1-5 (RALI's prototype-weighted score,
    mapped onto 1-5 by its profile's ``rating_range``); None otherwise.
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


@dataclass
class DegradationResult(_Result):
    """The dominant distortion (None: none found) and its severity."""

    distortion: str | None = None
    severity: str | None = None
    reasoning: str | None = None
    raw: str = ""
    error: str | None = None


@dataclass
class ComparisonResult(_Result):
    """Which of two images is better: "A", "B" or "similar".

    ``consistent`` is set when both orders were asked: False means the model changed its mind when the
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

    ``order`` holds input indices (cut to ``top_k``); ``scores`` is aligned with it and holds what
    ranked each image: its fast score (``score``, ``hybrid``) or the knockout rounds it survived
    (``tournament``). Images that could not be judged come last, with their reasons in ``errors``.
    ``comparisons`` counts the questions asked (two per match); ``failed_matches`` the matches that gave
    no verdict in either order (counted as ties); ``unjudged`` the images whose every match was such,
    with the reason: their place rests on their seed (and score) alone.

    A cascade (``rank(..., prefilter=cheap_judge, keep=k)``) has ``stages``: per stage, the judge's profile
    and the input indices it judged (the cheap judge all that loaded, the judge the ``keep`` best of those).
    The ``keep`` images come first, ordered by the judge; the rest follow by the cheap judge's score, which
    is then their ``scores`` entry.
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
