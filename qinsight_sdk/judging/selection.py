"""Ranking and best-of-N: which images are best, decided by scores, by pairwise comparisons, or both.

Strategies:
- ``score``: fast scores for all images in one batched pass, best first.
- ``tournament``: a knockout of pairwise comparisons, each pair asked in both orders to cancel the
  judge's position bias; N - 1 matches. A tie (both orders disagree, or no verdict) goes to the better
  seed (the earlier image), so the result is deterministic. The winner is the knockout's; the places
  below it follow the round each image went out in, which is only a rough order.
- ``hybrid``: fast scores for all, then every pair among the ``pool`` best compared in both orders;
  the pool is ordered by wins, ties by score. Best for best-of-N: cheap for all, careful at the top.

Any strategy can follow a cheaper judge (:func:`cascade`): RALI scores all N, and the judge ranks only
the ``keep`` best of them, so its reasoning or comparisons are spent where the choice is made.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from ..errors import ImageInputError, UsageError
from ..io.images import ImageInput
from .results import ComparisonResult, Ranking, ResultCallback, ScoreResult

STRATEGIES = ("score", "tournament", "hybrid")
HYBRID_POOL = 4  # the default number of best fast scores that the hybrid strategy compares pairwise


class RankingJudge(Protocol):
    """What ranking needs of a judge (``QualityJudge`` has it): its input loading (images, or a video
    judge's videos), fast scores, comparisons."""

    def load(self, source: Any) -> Any: ...

    def score(
        self, images: Any, *, batch_size: int | None, mode: str, on_result: ResultCallback | None
    ) -> ScoreResult | list[ScoreResult]: ...  # a list for the lists ranking passes

    def compare_pairs(
        self,
        pairs: Sequence[Sequence[ImageInput]],
        *,
        both_orders: bool,
        batch_size: int | None,
        on_result: ResultCallback | None,
    ) -> list[ComparisonResult]: ...


def ranking_steps(count: int, strategy: str, pool: int = HYBRID_POOL) -> int:
    """How many times ranking ``count`` images calls ``on_result`` when every image loads: once per
    image scored, once per match (a pair asked in both orders). For sizing a progress bar."""
    if strategy == "score":
        return count
    if strategy == "tournament":
        return max(count - 1, 0)
    finalists = min(max(pool, 1), count)
    return count + finalists * (finalists - 1) // 2


class _Matches:
    """The verdicts of every match so far: which gave none, and which images never got one."""

    def __init__(self) -> None:
        self.asked, self.failed = 0, 0
        self.played: dict[int, int] = {}
        self.reasons: dict[int, list[str]] = {}

    def record(self, pairs: list[tuple[int, int]], verdicts: list[ComparisonResult]) -> None:
        self.asked += 2 * len(pairs)  # each pair in both orders
        for pair, verdict in zip(pairs, verdicts):
            self.failed += verdict.error is not None
            for index in pair:
                self.played[index] = self.played.get(index, 0) + 1
                if verdict.error is not None:
                    self.reasons.setdefault(index, []).append(verdict.error)

    def unjudged(self) -> dict[int, str]:
        def matches(count: int) -> str:
            return "its one match" if count == 1 else f"any of its {count} matches"

        return {
            index: f"no verdict in {matches(self.played[index])}: {reasons[-1]}"
            for index, reasons in sorted(self.reasons.items())
            if len(reasons) == self.played[index]
        }


class _Steps:
    """Numbers the calls of a ranking's phases one after another, for a caller's ``on_result``."""

    def __init__(self, on_result: ResultCallback | None) -> None:
        self.on_result, self.done = on_result, 0

    def __call__(self, _index: int, result: Any) -> None:
        """As an ``on_result`` of the judge's: its index is its phase's, so it is renumbered."""
        self.report(result)

    def report(self, result: Any) -> None:
        if self.on_result is not None:
            self.on_result(self.done, result)
        self.done += 1


def rank_images(
    judge: RankingJudge,
    images: Sequence[Any],
    *,
    strategy: str,
    top_k: int | None,
    pool: int,
    batch_size: int | None,
    on_result: ResultCallback | None,
) -> Ranking:
    """Rank ``images`` with ``judge``; see the module docstring for the strategies.

    ``on_result(step, result)`` is called once per unreadable image (first, with its error), once per
    image scored and once per match, ``step`` counting from 0 across phases: with u unreadable images
    of N, ``u + ranking_steps(N - u, strategy, pool)`` calls in all.
    """
    _check_request(strategy, top_k)
    steps = _Steps(on_result)
    loaded, errors = _load_all(judge, images)
    for index in sorted(errors):  # reported first, so progress still reaches its total
        steps.report(ScoreResult(error=errors[index]))
    valid = [i for i in range(len(images)) if i in loaded]
    matches = _Matches()
    if strategy == "tournament":
        order, rounds = _knockout(judge, loaded, valid, batch_size, steps, matches)
        key = {i: float(rounds[i]) for i in order}
        decided_by = f"knockout of {len(valid)} images, each pair asked in both orders"
    else:
        results = _fast_scores(judge, loaded, valid, batch_size, steps)
        key = {}
        for index, result in results.items():
            if result.ok:
                key[index] = result.score
            else:
                errors[index] = result.error
        order = sorted(key, key=lambda i: (-key[i], i))
        decided_by = "fast scores"
        if strategy == "hybrid" and len(order) > 1:
            finalists = order[: max(pool, 1)]
            reordered = _round_robin(judge, loaded, finalists, batch_size, steps, matches)
            order = reordered + order[len(finalists) :]
            decided_by = f"fast scores, then all pairs among the top {len(finalists)} in both orders"
    order += sorted(errors)
    scores = [key.get(i) for i in order]
    if top_k is not None:
        order, scores = order[:top_k], scores[:top_k]
    return Ranking(
        order,
        scores,
        strategy,
        decided_by,
        matches.asked,
        dict(sorted(errors.items())),
        matches.failed,
        matches.unjudged(),
    )


def cascade(
    judge: RankingJudge,
    prefilter: Any,
    images: Sequence[Any],
    *,
    keep: int,
    strategy: str,
    top_k: int | None,
    pool: int,
    batch_size: int | None,
    on_result: ResultCallback | None,
) -> Ranking:
    """Rank ``images`` in two stages: ``prefilter`` (a cheaper judge) scores them all, ``judge`` ranks the
    ``keep`` best by ``strategy``; the rest follow in the prefilter's order, unreadable images last.

    ``on_result(step, result)`` follows each image the prefilter scores, then each step of the ranking.
    """
    _check_request(strategy, top_k, keep=keep)  # before the prefilter's work, not after it
    steps = _Steps(on_result)
    first = prefilter.score(list(images), batch_size=batch_size, mode="fast", on_result=steps)
    scores = {i: r.score for i, r in enumerate(first) if r.ok}
    errors = {i: r.error for i, r in enumerate(first) if not r.ok}
    by_prefilter = sorted(scores, key=lambda i: (-scores[i], i))
    kept = by_prefilter[:keep]
    inner = rank_images(
        judge,
        [images[i] for i in kept],
        strategy=strategy,
        top_k=None,
        pool=pool,
        batch_size=batch_size,
        on_result=lambda _index, result: steps.report(result),
    )
    judged = [(kept[i], score) for i, score in zip(inner.order, inner.scores) if i not in inner.errors]
    order = [i for i, _ in judged] + by_prefilter[keep:]
    ranked = [score for _, score in judged] + [scores[i] for i in by_prefilter[keep:]]
    errors.update({kept[i]: message for i, message in inner.errors.items()})
    order += sorted(errors)
    ranked += [None] * len(errors)
    if top_k is not None:
        order, ranked = order[:top_k], ranked[:top_k]
    stages = [
        {"judge": _profile_name(prefilter), "judged": sorted(scores)},
        {"judge": _profile_name(judge), "judged": sorted(kept)},
    ]
    return Ranking(
        order,
        ranked,
        strategy,
        f"{_profile_name(prefilter)} fast scores for all, then {inner.decided_by} among the best {len(kept)}",
        inner.comparisons,
        dict(sorted(errors.items())),
        inner.failed_matches,
        {kept[i]: why for i, why in inner.unjudged.items()},
        stages,
    )


def _check_request(strategy: str, top_k: int | None, **counts: int) -> None:
    """A ``UsageError`` for a strategy there is not, or a ``top_k`` (or other count) below 1."""
    if strategy not in STRATEGIES:
        raise UsageError(f"strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
    for name, value in {"top_k": top_k, **counts}.items():
        if value is not None and value < 1:
            raise UsageError(f"{name} must be at least 1, got {value}")


def _profile_name(judge: Any) -> str:
    profile = getattr(judge, "profile", None)
    return getattr(profile, "name", type(judge).__name__)


def _load_all(judge: RankingJudge, images: Sequence[Any]) -> tuple[dict[int, Any], dict[int, str]]:
    """Decode every image once (rankings compare images several times)."""
    loaded, errors = {}, {}
    for index, source in enumerate(images):
        try:
            loaded[index] = judge.load(source)
        except ImageInputError as exc:
            errors[index] = str(exc)
    return loaded, errors


def _fast_scores(
    judge: RankingJudge, loaded: dict[int, Any], valid: list[int], batch_size: int | None, steps: _Steps
) -> dict[int, ScoreResult]:
    """Each loaded image's fast score, by input index (``valid``: the loaded indices, in order)."""
    results = judge.score([loaded[i] for i in valid], batch_size=batch_size, mode="fast", on_result=steps)
    return dict(zip(valid, results))


def _knockout(
    judge: RankingJudge,
    loaded: dict[int, Any],
    seeds: list[int],
    batch_size: int | None,
    steps: _Steps,
    matches: _Matches,
) -> tuple[list[int], dict[int, int]]:
    """Order ``seeds`` by a knockout: rounds survived, then seed. Returns the order and the rounds."""
    rounds = {i: 0 for i in seeds}
    alive = list(seeds)
    for _ in seeds:  # each round at least halves the field, so this bound is never reached
        if len(alive) < 2:
            break
        pairs = [(alive[k], alive[k + 1]) for k in range(0, len(alive) - 1, 2)]
        verdicts = judge.compare_pairs(
            [(loaded[a], loaded[b]) for a, b in pairs], both_orders=True, batch_size=batch_size, on_result=steps
        )
        matches.record(pairs, verdicts)
        survivors = [b if verdict.winner == "B" else a for (a, b), verdict in zip(pairs, verdicts)]
        if len(alive) % 2:
            survivors.append(alive[-1])  # a bye
        for index in survivors:
            rounds[index] += 1
        alive = survivors
    position = {index: k for k, index in enumerate(seeds)}
    return sorted(seeds, key=lambda i: (-rounds[i], position[i])), rounds


def _round_robin(
    judge: RankingJudge,
    loaded: dict[int, Any],
    seeds: list[int],
    batch_size: int | None,
    steps: _Steps,
    matches: _Matches,
) -> list[int]:
    """Order ``seeds`` by pairwise wins over each other (a tie is half a win each), then by seed."""
    pairs = [(a, b) for k, a in enumerate(seeds) for b in seeds[k + 1 :]]
    verdicts = judge.compare_pairs(
        [(loaded[a], loaded[b]) for a, b in pairs], both_orders=True, batch_size=batch_size, on_result=steps
    )
    matches.record(pairs, verdicts)
    wins = {i: 0.0 for i in seeds}
    for (a, b), verdict in zip(pairs, verdicts):
        if verdict.winner in ("A", "B"):
            wins[a if verdict.winner == "A" else b] += 1.0
        else:
            wins[a] += 0.5
            wins[b] += 0.5
    position = {index: k for k, index in enumerate(seeds)}
    return sorted(seeds, key=lambda i: (-wins[i], position[i]))
