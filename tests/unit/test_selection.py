"""Ranking (selection.py): the score, tournament and hybrid strategies, ranking_steps and rank's on_result."""

import numpy as np
import pytest
from samples import grey, noise_image
from scripted import brightness_answer

from qinsight_sdk import ComparisonResult, QualityJudge, ScoreResult
from qinsight_sdk.judging.selection import ranking_steps
from qinsight_sdk.testing import ScriptedBackend

IMAGES = [noise_image(i, 40 + 17 * i, 44 + 9 * (i % 3)) for i in range(7)]


# -- the strategies --------------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", ["score", "tournament", "hybrid"])
def test_strategies_on_the_tiny_model_return_a_permutation(tiny_judge, strategy):
    ranking = tiny_judge.rank(IMAGES[:5], strategy=strategy)
    assert sorted(ranking.order) == list(range(5)) and not ranking.errors
    if strategy == "tournament":
        assert ranking.scores == sorted(ranking.scores, reverse=True)
        assert ranking.comparisons == 2 * 4  # N - 1 matches, both orders each
    else:
        fast = tiny_judge.score(IMAGES[:5], mode="fast")
        for index, score in zip(ranking.order, ranking.scores):
            assert score == pytest.approx(fast[index].score, abs=1e-4)
        if strategy == "score":
            assert ranking.scores == sorted(ranking.scores, reverse=True)
        else:
            assert set(ranking.order[:4]) == set(sorted(range(5), key=lambda i: -fast[i].score)[:4])
            assert ranking.comparisons == 2 * 6  # all pairs among the top 4, both orders


LEVELS = [90, 250, 10, 170, 130]  # image 1 is the brightest, then 3, 4, 0, 2


@pytest.mark.parametrize("strategy", ["score", "tournament", "hybrid"])
def test_the_preferred_image_wins(strategy):
    backend = ScriptedBackend(brightness_answer)
    ranking = QualityJudge(backend).rank([grey(v) for v in LEVELS], strategy=strategy, top_k=3)
    assert ranking.best == 1 and len(ranking.order) == 3
    if strategy != "tournament":
        assert ranking.order == [1, 3, 4]


def test_tournament_asks_every_pair_in_both_orders():
    asked = []

    def record(conversation, images):
        asked.append(tuple(int(np.asarray(i).mean()) for i in images))
        return brightness_answer(conversation, images)

    QualityJudge(ScriptedBackend(record)).rank([grey(v) for v in LEVELS], strategy="tournament")
    pairs = {frozenset(p) for p in asked}
    assert len(asked) == 2 * len(pairs) == 8
    assert all((b, a) in asked for a, b in asked)


def position_biased(answer):
    return QualityJudge(
        ScriptedBackend(lambda c, i: brightness_answer(c, i) if len(i) == 1 else f"<answer>{answer}</answer>")
    )


@pytest.mark.parametrize("label", ["Image A", "Image B"])
@pytest.mark.parametrize("strategy", ["tournament", "hybrid"])
def test_position_bias_counts_for_nothing(strategy, label):
    """A judge that always names the same position ranks exactly like one that finds every pair similar.
    (An always-"Image B" judge tells cancelled bias from the tie-break rule, which favours image A.)"""
    images = [grey(v) for v in LEVELS]
    biased = position_biased(label).rank(images, strategy=strategy)
    assert biased.order == position_biased("Similar").rank(images, strategy=strategy).order
    assert biased.order == ([0, 4, 2, 1, 3] if strategy == "tournament" else [1, 3, 4, 0, 2])


def test_ranking_puts_unreadable_images_last():
    judge = QualityJudge(ScriptedBackend(brightness_answer))
    ranking = judge.rank([grey(100), "missing.png", grey(200)], strategy="score")
    assert ranking.order == [2, 0, 1] and ranking.scores[-1] is None and "not found" in ranking.errors[1]


def test_ranking_validates_arguments():
    judge = QualityJudge(ScriptedBackend(brightness_answer))
    with pytest.raises(ValueError, match="strategy"):
        judge.rank([grey(1)], strategy="vibes")
    with pytest.raises(ValueError, match="top_k"):
        judge.rank([grey(1)], top_k=0)


# -- ranking, stated exactly -----------------------------------------------------------------------


def brightness_or_nothing(conversation, images):
    """Like brightness_answer, but an image darker than 30 gets no rating."""
    if len(images) == 1 and np.asarray(images[0]).mean() < 30:
        return "<answer>too dark to say</answer>"
    return brightness_answer(conversation, images)


def test_score_ranking_in_full():
    ranking = QualityJudge(ScriptedBackend(brightness_or_nothing)).rank([grey(v) for v in (90, 10, 250, 170)])
    assert ranking.to_dict() == {
        "order": [2, 3, 0, 1],
        "scores": [4.9, 3.7, 2.4, None],
        "strategy": "score",
        "decided_by": "fast scores",
        "comparisons": 0,
        "errors": {1: "the model failed on this input: ValueError: the scripted answer has no rating"},
        "failed_matches": 0,
        "unjudged": {},
        "stages": [],
    }
    assert ranking.best == 2


def test_an_empty_ranking_has_no_best():
    ranking = QualityJudge(ScriptedBackend(brightness_answer)).rank([])
    assert (ranking.order, ranking.best, ranking.errors) == ([], None, {})


def test_tournament_ranking_in_full():
    images = [grey(v) for v in LEVELS] + ["missing.png"]
    ranking = QualityJudge(ScriptedBackend(brightness_answer)).rank(images, strategy="tournament")
    # round 1: (0, 1) -> 1, (2, 3) -> 3, 4 a bye; round 2: (1, 3) -> 1, 4 a bye; round 3: (1, 4) -> 1
    assert ranking.order == [1, 4, 3, 0, 2, 5] and ranking.scores == [3.0, 2.0, 1.0, 0.0, 0.0, None]
    assert ranking.decided_by == "knockout of 5 images, each pair asked in both orders"
    assert ranking.comparisons == 8 and ranking.errors == {5: "missing.png: file not found"}


def no_verdict_about_the_dark(conversation, images):
    """Like brightness_answer, but a comparison with an image darker than 30 gets no verdict."""
    if len(images) > 1 and min(np.asarray(i).mean() for i in images) < 30:
        return "<answer>cannot tell</answer>"
    return brightness_answer(conversation, images)


NO_VERDICT = (
    "neither order gave a verdict: the answer names none of Image A, Image B, Similar; the answer names "
    "none of Image A, Image B, Similar"
)


def test_matches_without_a_verdict_are_counted_and_their_images_flagged():
    """Issue 10, defect 11: rank counted such matches as ties and said "0 could not be judged"."""
    images = [grey(v) for v in LEVELS]  # image 2 is the dark one
    judge = QualityJudge(ScriptedBackend(no_verdict_about_the_dark))
    ranking = judge.rank(images, strategy="tournament")
    # round 1: (0, 1) -> 1, (2, 3) no verdict -> 2, 4 a bye; round 2: (1, 2) no verdict -> 1; round 3: (1, 4) -> 1
    assert ranking.failed_matches == 2 and ranking.comparisons == 8 and ranking.errors == {}
    assert ranking.unjudged == {
        2: f"no verdict in any of its 2 matches: {NO_VERDICT}",
        3: f"no verdict in its one match: {NO_VERDICT}",
    }
    hybrid = judge.rank(images, strategy="hybrid", pool=5)
    assert hybrid.failed_matches == 4 and list(hybrid.unjudged) == [2] and hybrid.comparisons == 20
    assert judge.rank(images, strategy="hybrid", pool=3).failed_matches == 0  # the dark image is no finalist


def test_hybrid_ranking_in_full():
    images = [grey(v) for v in LEVELS]
    ranking = QualityJudge(ScriptedBackend(brightness_answer)).rank(images, strategy="hybrid", pool=3)
    assert ranking.order == [1, 3, 4, 0, 2] and ranking.comparisons == 6
    assert ranking.scores == pytest.approx([4.9, 3.7, 3.0, 2.4, 1.2])
    assert ranking.decided_by == "fast scores, then all pairs among the top 3 in both orders"


def test_hybrid_pairwise_wins_can_overturn_the_scores():
    """Scores say 1 > 3 > 4; the comparisons prefer the darker image: the pool is reordered by wins."""

    def darker_wins(conversation, images):
        if len(images) == 1:
            return brightness_answer(conversation, images)
        a, b = (np.asarray(i).mean() for i in images[-2:])
        return "<answer>Image A</answer>" if a < b else "<answer>Image B</answer>"

    ranking = QualityJudge(ScriptedBackend(darker_wins)).rank([grey(v) for v in LEVELS], strategy="hybrid", pool=3)
    assert ranking.order == [4, 3, 1, 0, 2]


@pytest.mark.parametrize("pool,finalists", [(0, 1), (1, 1), (2, 2)])
def test_hybrid_pool_of_at_least_one(pool, finalists):
    ranking = QualityJudge(ScriptedBackend(brightness_answer)).rank(
        [grey(v) for v in LEVELS], strategy="hybrid", pool=pool
    )
    assert ranking.comparisons == finalists * (finalists - 1)
    assert ranking.decided_by.endswith(f"the top {finalists} in both orders")


def pairwise_judge(preferred):
    """Fast scores from brightness; each pair's verdict from ``preferred`` (pair of levels -> the better
    level, None for a tie), in whichever order the pair is shown."""

    def scripted(conversation, images):
        if len(images) == 1:
            return brightness_answer(conversation, images)
        a, b = (int(np.asarray(i).mean()) for i in images[-2:])
        winner = preferred[frozenset({a, b})]
        return "<answer>" + ("Similar" if winner is None else "Image A" if winner == a else "Image B") + "</answer>"

    return QualityJudge(ScriptedBackend(scripted))


def test_round_robin_ties_split_the_win():
    """170 beats 250, 130 beats 170, 250 and 130 tie: wins 0.5, 1 and 1.5 (no half-wins: 130 and 170 level)."""
    judge = pairwise_judge({frozenset({250, 170}): 170, frozenset({170, 130}): 130, frozenset({250, 130}): None})
    assert judge.rank([grey(v) for v in LEVELS], strategy="hybrid", pool=3).order == [4, 3, 1, 0, 2]


def test_a_tie_adds_half_a_win_to_the_wins_already_counted():
    """250 beats 170, 130 beats 250, 170 and 130 tie: 130 has 1.5, 250 has 1, 170 has 0.5."""
    judge = pairwise_judge({frozenset({250, 170}): 250, frozenset({250, 130}): 130, frozenset({170, 130}): None})
    levels = [250, 170, 130]
    assert [levels[i] for i in judge.rank([grey(v) for v in levels], strategy="hybrid", pool=3).order] == [
        130,
        250,
        170,
    ]


def test_round_robin_wins_against_ties():
    """Scores rank 1, 3, 4, 0 (250, 170, 130, 90). Verdicts: 250 ties 170 and 130 and loses to 90; 170 and 130
    tie and both beat 90. Wins: 170 and 130 have 2, 250 and 90 have 1 (a win is worth two ties)."""
    judge = pairwise_judge(
        {
            frozenset({250, 170}): None,
            frozenset({250, 130}): None,
            frozenset({250, 90}): 90,
            frozenset({170, 130}): None,
            frozenset({170, 90}): 170,
            frozenset({130, 90}): 130,
        }
    )
    assert judge.rank([grey(v) for v in LEVELS], strategy="hybrid", pool=4).order == [3, 4, 1, 0, 2]


def test_ranking_options():
    judge = QualityJudge(ScriptedBackend(brightness_answer))
    images = [grey(v) for v in LEVELS]
    assert judge.rank(images, strategy="hybrid").comparisons == 12  # pool 4 by default: 6 pairs, both orders
    assert judge.rank(images[:1], strategy="hybrid").decided_by == "fast scores"  # one image: nothing to compare
    assert judge.rank(images[:2], strategy="hybrid").comparisons == 2
    assert judge.rank(images, top_k=1).order == [1]
    with pytest.raises(ValueError, match="strategy must be one of score, tournament, hybrid, got 'vibes'"):
        judge.rank(images, strategy="vibes")
    with pytest.raises(ValueError, match="top_k must be at least 1, got 0"):
        judge.rank(images, top_k=0)


@pytest.mark.parametrize("strategy", ["score", "tournament", "hybrid"])
def test_ranking_uses_the_judges_image_bounds_and_batch_size(strategy):
    from qinsight_sdk.io.images import ImageBounds

    sizes = set()

    def record(conversation, images):
        sizes.update(i.size for i in images)
        return brightness_answer(conversation, images)

    backend = ScriptedBackend(record)
    judge = QualityJudge(backend, image_bounds=ImageBounds(max_pixels=112 * 112), batch_size=8)
    judge.rank([grey(v, (560, 560)) for v in LEVELS], strategy=strategy, batch_size=1)
    assert sizes == {(112, 112)} and set(backend.calls) == {1}


# -- progress: ranking_steps and on_result ---------------------------------------------------------


@pytest.mark.parametrize(
    "count,strategy,pool,steps",
    [
        (0, "score", 4, 0),
        (0, "tournament", 4, 0),
        (0, "hybrid", 4, 0),
        (1, "score", 4, 1),
        (1, "tournament", 4, 0),
        (1, "hybrid", 4, 1),  # one image: nothing to compare
        (5, "score", 4, 5),
        (5, "tournament", 4, 4),
        (5, "hybrid", 4, 5 + 6),  # 4 finalists: 6 pairs
        (2, "hybrid", 4, 2 + 1),
        (3, "hybrid", 10, 3 + 3),  # a pool larger than N: all 3 are finalists, 3 pairs
        (5, "hybrid", 10, 5 + 10),  # 5 finalists, 10 pairs
        (5, "hybrid", 0, 5 + 0),  # a pool of at least one: no pairs
        (5, "hybrid", 2, 5 + 1),
    ],
)
def test_ranking_steps_worked_by_hand(count, strategy, pool, steps):
    assert ranking_steps(count, strategy, pool=pool) == steps


def test_ranking_steps_default_pool_is_four():
    assert ranking_steps(5, "hybrid") == 11 and ranking_steps(9, "hybrid") == 9 + 6


def recorder():
    """``on_result`` that records its calls, and the list it records them in."""
    calls = []
    return calls, lambda step, result: calls.append((step, result))


MIXED_VERDICTS = {
    frozenset({250, 170}): None,
    frozenset({250, 130}): None,
    frozenset({250, 90}): 90,
    frozenset({170, 130}): None,
    frozenset({170, 90}): 170,
    frozenset({130, 90}): 130,
    frozenset({250, 10}): 250,
    frozenset({170, 10}): 170,
    frozenset({130, 10}): 130,
    frozenset({90, 10}): 90,
}


def test_rank_by_score_reports_each_image_once():
    calls, record = recorder()
    ranking = pairwise_judge(MIXED_VERDICTS).rank([grey(v) for v in LEVELS], strategy="score", on_result=record)
    assert [step for step, _ in calls] == list(range(ranking_steps(5, "score"))) == [0, 1, 2, 3, 4]
    assert all(type(result) is ScoreResult and result.ok for _, result in calls)
    assert [result.score for _, result in calls] == pytest.approx([2.4, 4.9, 1.2, 3.7, 3.0])  # in input order
    assert dict(zip(ranking.order, ranking.scores)) == {i: result.score for i, (_, result) in enumerate(calls)}


def test_rank_by_tournament_reports_each_match_once():
    """Round 1: (0, 1) -> A (90 is preferred to 250), (2, 3) -> B, 4 a bye; round 2: (0, 3) -> B, 4 a bye;
    round 3: (3, 4) similar, which goes to the better seed, 3."""
    calls, record = recorder()
    ranking = pairwise_judge(MIXED_VERDICTS).rank([grey(v) for v in LEVELS], strategy="tournament", on_result=record)
    assert [step for step, _ in calls] == list(range(ranking_steps(5, "tournament"))) == [0, 1, 2, 3]
    assert all(type(result) is ComparisonResult for _, result in calls)
    assert [result.winner for _, result in calls] == ["A", "B", "B", "similar"]
    assert all("[order A, B]" in result.raw and "[order B, A]" in result.raw for _, result in calls)  # reconciled
    assert ranking.comparisons == 2 * len(calls) and ranking.order == [3, 4, 0, 1, 2]


def test_rank_hybrid_reports_scores_then_matches():
    """Scores rank 1, 3, 4, 0 (250, 170, 130, 90): the pool of 4 plays (1, 3), (1, 4), (1, 0), (3, 4), (3, 0),
    (4, 0); wins 1, 2, 2, 1 reorder it to 3, 4, 1, 0 (as in test_round_robin_wins_against_ties)."""
    calls, record = recorder()
    ranking = pairwise_judge(MIXED_VERDICTS).rank(
        [grey(v) for v in LEVELS], strategy="hybrid", pool=4, on_result=record
    )
    assert [step for step, _ in calls] == list(range(ranking_steps(5, "hybrid", pool=4))) == list(range(11))
    assert [type(result) for _, result in calls] == [ScoreResult] * 5 + [ComparisonResult] * 6
    scores, matches = [r for _, r in calls[:5]], [r for _, r in calls[5:]]
    assert dict(zip(ranking.order, ranking.scores)) == {i: result.score for i, result in enumerate(scores)}
    assert [result.winner for result in matches] == ["similar", "similar", "B", "similar", "A", "A"]
    assert all("[order A, B]" in result.raw and "[order B, A]" in result.raw for result in matches)
    assert ranking.comparisons == 2 * len(matches) and ranking.order == [3, 4, 1, 0, 2]


@pytest.mark.parametrize("strategy,reports", [("score", 6), ("tournament", 1 + 4), ("hybrid", 6 + 6)])
def test_rank_reports_an_unreadable_image_first(strategy, reports):
    """Image 2 cannot be loaded: it is reported first, as a ScoreResult with its error, in every strategy; then
    the readable five are ranked as if alone. So u unreadable images of N give u + ranking_steps(N - u) calls,
    which is ranking_steps(N) for score and tournament, and for hybrid while N - u >= pool."""
    images = [grey(90), grey(250), "missing.png", grey(10), grey(170), grey(130)]
    calls, record = recorder()
    ranking = pairwise_judge(MIXED_VERDICTS).rank(images, strategy=strategy, pool=4, on_result=record)
    assert [step for step, _ in calls] == list(range(reports))
    assert reports == 1 + ranking_steps(5, strategy, pool=4) == ranking_steps(6, strategy, pool=4)
    first = calls[0][1]
    assert type(first) is ScoreResult and (first.score, first.error) == (None, "missing.png: file not found")
    assert ranking.errors == {2: "missing.png: file not found"} and ranking.order[-1] == 2
    later = [type(result) for _, result in calls[1:]]
    if strategy == "score":
        assert later == [ScoreResult] * 5
    elif strategy == "tournament":
        assert later == [ComparisonResult] * 4 and ranking.comparisons == 8
    else:
        assert later == [ScoreResult] * 5 + [ComparisonResult] * 6 and ranking.comparisons == 12
    if strategy != "tournament":
        readable = [0, 1, 3, 4, 5]
        assert {i: s for i, s in zip(ranking.order, ranking.scores) if i != 2} == {
            i: result.score for i, (_, result) in zip(readable, calls[1:6])
        }


def test_rank_hybrid_with_fewer_readable_images_than_the_pool():
    """4 images, 1 unreadable, pool 4: 1 + 3 scores, then the 3 readable play 3 matches: 7 calls, short of
    ranking_steps(4, "hybrid") = 10, which counts 4 finalists; 1 + ranking_steps(3, "hybrid") = 7."""
    calls, record = recorder()
    ranking = pairwise_judge(MIXED_VERDICTS).rank(
        [grey(90), "missing.png", grey(250), grey(10)], strategy="hybrid", pool=4, on_result=record
    )
    assert [step for step, _ in calls] == list(range(7)) and 7 == 1 + ranking_steps(3, "hybrid", pool=4)
    assert [type(result) for _, result in calls] == [ScoreResult] * 4 + [ComparisonResult] * 3
    assert calls[0][1].error == "missing.png: file not found" and ranking.comparisons == 6


@pytest.mark.parametrize("strategy", ["score", "tournament", "hybrid"])
def test_rank_of_one_image_or_none(strategy):
    calls, record = recorder()
    QualityJudge(ScriptedBackend(brightness_answer)).rank([], strategy=strategy, on_result=record)
    assert calls == []
    QualityJudge(ScriptedBackend(brightness_answer)).rank([grey(90)], strategy=strategy, on_result=record)
    assert [step for step, _ in calls] == list(range(ranking_steps(1, strategy)))
    assert all(type(result) is ScoreResult for _, result in calls)
