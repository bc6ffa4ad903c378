"""Fast scores, ranking strategies, the reward API and out-of-memory back-off."""

import math

import numpy as np
import pytest
import torch
from PIL import Image
from samples import grey, noise_image
from scripted import TightMemory

from qinsight_sdk import QualityJudge, prompts
from qinsight_sdk.backend import RatingDistribution
from qinsight_sdk.images import load_image
from qinsight_sdk.testing import ScriptedBackend

IMAGES = [noise_image(i, 40 + 17 * i, 44 + 9 * (i % 3)) for i in range(7)]

# -- fast scores on the tiny model -----------------------------------------------------------------


def test_fast_scores_in_range_and_repeatable(tiny_judge):
    first = tiny_judge.score(IMAGES, mode="fast")
    again = tiny_judge.score(IMAGES, mode="fast")
    assert all(1 <= r.score <= 5 and r.error is None and r.std > 0 for r in first)
    assert [r.score for r in first] == [r.score for r in again]
    assert len({round(r.score, 6) for r in first}) == len(IMAGES)  # they depend on the image


@pytest.mark.parametrize("batch_size", [1, 3, 7])
def test_fast_scores_independent_of_batch_size_and_order(tiny_judge, batch_size):
    reference = [r.score for r in tiny_judge.score(IMAGES, mode="fast", batch_size=7)]
    permutation = [3, 6, 0, 5, 1, 4, 2]
    shuffled = tiny_judge.score([IMAGES[i] for i in permutation], mode="fast", batch_size=batch_size)
    for position, index in enumerate(permutation):
        assert shuffled[position].score == pytest.approx(reference[index], abs=1e-4)


def test_cached_digit_step_equals_a_full_forward(tiny_judge):
    """The cached two-token step must place tokens exactly as a forward over the whole text would."""
    backend = tiny_judge.backend
    conversation = prompts.score_messages()
    images = [load_image(IMAGES[1]), load_image(IMAGES[4])]
    batch = backend.encode([conversation] * 2, [[i] for i in images], prompts.FAST_SCORE_ANSWER_PREFIX)
    distributions = backend.rating_distributions(batch)
    digits, _ = backend.rating_token_ids()
    for row, image in enumerate(images):
        for first in (1, 4):
            text = backend.render(conversation) + prompts.FAST_SCORE_ANSWER_PREFIX + f"{first}."
            inputs = backend.processor(text=[text], images=[image], return_tensors="pt")
            with torch.inference_mode():
                logits = backend.model(**inputs).logits[0, -1]
            expected = torch.softmax(logits[digits].double(), dim=-1)
            assert torch.allclose(distributions[row].decimals[first - 1], expected, atol=1e-5)


def test_fast_mode_reports_bad_images_per_item(tiny_judge):
    results = tiny_judge.score([IMAGES[0], np.full((20, 20, 3), np.nan), IMAGES[1]], mode="fast")
    assert results[0].score and results[2].score and "NaN" in results[1].error


def test_expected_rating_arithmetic():
    first = torch.tensor([0, 0, 0.5, 0.5, 0], dtype=torch.float64)
    decimals = torch.zeros(5, 10, dtype=torch.float64)
    decimals[:, 5] = 1.0  # x.5 for sure
    mean, std = RatingDistribution(first, decimals).expected()
    assert mean == pytest.approx(4.0) and std == pytest.approx(0.5)


def test_expected_rating_spread_includes_the_decimals_own_variance():
    first = torch.tensor([0, 0, 1.0, 0, 0], dtype=torch.float64)  # surely 3.x
    decimals = torch.full((5, 10), 0.1, dtype=torch.float64)      # x uniform over 0..9
    mean, std = RatingDistribution(first, decimals).expected()
    assert mean == pytest.approx(3.45) and std == pytest.approx(math.sqrt(0.0825))  # var of k/10, k uniform


@pytest.mark.parametrize("seed", range(5))
def test_expected_rating_equals_enumerating_every_rating(seed):
    """Mean and spread over the 50 ratings "d.k", each with probability first[d] * decimals[d, k]."""
    rng = np.random.default_rng(seed)
    first = rng.dirichlet(np.ones(5))
    decimals = rng.dirichlet(np.ones(10), size=5)
    outcomes = [(d + 1 + k / 10, first[d] * decimals[d, k]) for d in range(5) for k in range(10)]
    mean = sum(value * p for value, p in outcomes)
    std = math.sqrt(sum(p * (value - mean) ** 2 for value, p in outcomes))
    found = RatingDistribution(torch.tensor(first), torch.tensor(decimals)).expected()
    assert found == pytest.approx((mean, std), abs=1e-12)


def test_rating_digit_probabilities_are_a_softmax_over_the_chosen_tokens():
    from qinsight_sdk.qwen_vl import _probabilities

    logits = torch.tensor([[0.0, 1.0, 2.0, 9.0], [3.0, 0.0, 0.0, -9.0]], dtype=torch.float16)
    found = _probabilities(logits, [2, 0])
    expected = torch.tensor([[math.e ** 2, 1.0], [1.0, math.e ** 3]], dtype=torch.float64)
    assert found.dtype == torch.float64 and found.device.type == "cpu"
    assert torch.allclose(found, expected / expected.sum(-1, keepdim=True), atol=1e-12)


def test_unknown_mode_is_refused(tiny_judge):
    with pytest.raises(ValueError, match="mode"):
        tiny_judge.score(IMAGES[0], mode="quick")


# -- ranking -----------------------------------------------------------------------------------------


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


def brightness_answer(conversation, images):
    if len(images) == 1:
        return f'<answer>{{"rating": {1 + 4 * np.asarray(images[0]).mean() / 255:.2f}}}</answer>'
    a, b = (np.asarray(i).mean() for i in images[-2:])
    return "<answer>Image A</answer>" if a > b else "<answer>Image B</answer>"


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
    return QualityJudge(ScriptedBackend(lambda c, i: brightness_answer(c, i) if len(i) == 1
                                        else f"<answer>{answer}</answer>"))


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


# -- reward --------------------------------------------------------------------------------------------


def test_reward_shape_range_and_batch_independence(tiny_judge):
    batch = torch.rand(6, 48, 64, 3)
    rewards = tiny_judge.reward(batch, batch_size=6)
    assert rewards.shape == (6,) and rewards.dtype == torch.float32
    assert bool(((rewards >= 0) & (rewards <= 1)).all())
    for batch_size in (1, 4):
        assert torch.allclose(tiny_judge.reward(batch, batch_size=batch_size), rewards, atol=1e-4)
    assert torch.equal(tiny_judge.reward(batch, batch_size=6), rewards)


def test_reward_maps_scores_and_gives_zero_to_broken_images():
    judge = QualityJudge(ScriptedBackend(brightness_answer))
    rewards = judge.reward([grey(0), grey(255), np.full((8, 8, 3), np.nan, np.float32)])
    assert rewards.tolist() == pytest.approx([0.0, 1.0, 0.0])


@pytest.mark.parametrize("value,reward", [(64, 0.25), (128, 0.5), (191, 0.75)])
def test_reward_is_linear_in_the_score_between_the_ends(value, reward):
    """Fast scores 2.0, 3.0, 4.0 (the scripted judge's 1 + 4 * brightness, to one decimal) map to 1/4, 1/2, 3/4."""
    judge = QualityJudge(ScriptedBackend(brightness_answer))
    assert judge.reward(grey(value)).tolist() == pytest.approx([reward], abs=1e-6)


def test_reward_of_an_unjudgeable_image_is_logged(caplog):
    judge = QualityJudge(ScriptedBackend(brightness_answer))
    with caplog.at_level("WARNING", logger="qinsight"):
        judge.reward([grey(0), np.full((8, 8, 3), np.nan, np.float32)])
    assert "reward 0.0 for image 1" in caplog.text and "NaN" in caplog.text


# -- batching and out-of-memory back-off ------------------------------------------------------------


def test_out_of_memory_halves_the_batch_without_losing_or_repeating_images():
    seen = []

    def recorded(conversation, images):  # called only for the images of batches that fitted
        seen.append(int(np.asarray(images[0]).mean()))
        return brightness_answer(conversation, images)

    judge = QualityJudge(TightMemory(recorded, fits=2), batch_size=8)
    levels = [10, 40, 70, 100, 130, 160, 190, 220, 250]
    results = judge.score([grey(v) for v in levels])
    assert [r.score for r in results] == pytest.approx([1 + 4 * v / 255 for v in levels], abs=0.01)
    assert sorted(seen) == levels  # each image judged exactly once


def test_after_out_of_memory_later_batches_keep_the_size_that_fitted():
    backend = TightMemory(brightness_answer, fits=2)
    judge = QualityJudge(backend, batch_size=4)
    images = [grey(v) for v in range(0, 240, 6)]  # 40 images, decoded and planned 16 at a time
    assert all(r.ok for r in judge.score(images))
    assert backend.refused == [4, 4, 4, 4]  # the first window's batches, planned before the error; none after
    backend.refused.clear()
    backend.calls.clear()
    assert all(r.ok for r in judge.score(images[:8]))  # and the next call starts at the size that fitted
    assert backend.refused == [] and backend.calls == [2, 2, 2, 2]


def test_out_of_memory_on_a_single_image_is_that_images_error():
    backend = TightMemory(brightness_answer, fits=0, message="CUDA error: out of memory", error=RuntimeError)
    results = QualityJudge(backend).score([grey(1), grey(2)])
    assert all(r.score is None and r.error.startswith("out of memory even alone") for r in results)


def test_batches_group_similar_sizes_within_the_token_budget():
    backend = ScriptedBackend(brightness_answer)
    judge = QualityJudge(backend, batch_size=4, max_batch_tokens=40)
    sizes = [(56, 56), (448, 56), (56, 56), (448, 56), (56, 56)]  # 4 and 32 image tokens
    judge.score([Image.new("RGB", s, (99, 99, 99)) for s in sizes])
    assert backend.calls == [3, 1, 1]  # the small ones together; two large ones would exceed 40 tokens


# -- ranking, stated exactly ----------------------------------------------------------------------------


def brightness_or_nothing(conversation, images):
    """Like brightness_answer, but an image darker than 30 gets no rating."""
    if len(images) == 1 and np.asarray(images[0]).mean() < 30:
        return "<answer>too dark to say</answer>"
    return brightness_answer(conversation, images)


def test_score_ranking_in_full():
    ranking = QualityJudge(ScriptedBackend(brightness_or_nothing)).rank([grey(v) for v in (90, 10, 250, 170)])
    assert ranking.to_dict() == {
        "order": [2, 3, 0, 1], "scores": [4.9, 3.7, 2.4, None], "strategy": "score", "decided_by": "fast scores",
        "comparisons": 0, "errors": {1: "the model failed on this input: ValueError: the scripted answer has no rating"}}
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
    ranking = QualityJudge(ScriptedBackend(brightness_answer)).rank([grey(v) for v in LEVELS], strategy="hybrid",
                                                                    pool=pool)
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


def test_round_robin_wins_against_ties():
    """Scores rank 1, 3, 4, 0 (250, 170, 130, 90). Verdicts: 250 ties 170 and 130 and loses to 90; 170 and 130
    tie and both beat 90. Wins: 170 and 130 have 2, 250 and 90 have 1 (a win is worth two ties)."""
    judge = pairwise_judge({frozenset({250, 170}): None, frozenset({250, 130}): None, frozenset({250, 90}): 90,
                            frozenset({170, 130}): None, frozenset({170, 90}): 170, frozenset({130, 90}): 130})
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
    from qinsight_sdk.images import ImageBounds

    sizes = set()

    def record(conversation, images):
        sizes.update(i.size for i in images)
        return brightness_answer(conversation, images)

    backend = ScriptedBackend(record)
    judge = QualityJudge(backend, image_bounds=ImageBounds(max_pixels=112 * 112), batch_size=8)
    judge.rank([grey(v, (560, 560)) for v in LEVELS], strategy=strategy, batch_size=1)
    assert sizes == {(112, 112)} and set(backend.calls) == {1}
