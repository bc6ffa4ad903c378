"""Fast scores, ranking strategies, the reward API and out-of-memory back-off."""

import numpy as np
import pytest
import torch
from PIL import Image
from samples import noise_image

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
    digits, _ = backend._digit_ids()
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


def grey(value):
    return Image.new("RGB", (56, 56), (value, value, value))


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


@pytest.mark.parametrize("strategy", ["tournament", "hybrid"])
def test_position_bias_counts_for_nothing(strategy):
    """A judge that always says "Image A" ranks exactly like one that finds every pair similar."""
    images = [grey(v) for v in LEVELS]
    always_a = QualityJudge(ScriptedBackend(lambda c, i: brightness_answer(c, i) if len(i) == 1
                                            else "<answer>Image A</answer>"))
    no_opinion = QualityJudge(ScriptedBackend(lambda c, i: brightness_answer(c, i) if len(i) == 1
                                              else "<answer>Similar</answer>"))
    biased = always_a.rank(images, strategy=strategy)
    assert biased.order == no_opinion.rank(images, strategy=strategy).order
    assert biased.best == (0 if strategy == "tournament" else 1)


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


# -- batching and out-of-memory back-off ------------------------------------------------------------


def test_out_of_memory_halves_the_batch_without_losing_or_repeating_images():
    seen = []

    def tight_memory(conversation, images):
        return brightness_answer(conversation, images)

    backend = ScriptedBackend(tight_memory)
    original = backend.generate

    def generate(batch, decoding):
        conversations, images = batch.inputs
        if len(conversations) > 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        seen.extend(int(np.asarray(g[0]).mean()) for g in images)
        return original(batch, decoding)

    backend.generate = generate
    judge = QualityJudge(backend, batch_size=8)
    levels = [10, 40, 70, 100, 130, 160, 190, 220, 250]
    results = judge.score([grey(v) for v in levels])
    assert [r.score for r in results] == pytest.approx([1 + 4 * v / 255 for v in levels], abs=0.01)
    assert sorted(seen) == levels  # each image judged exactly once
    assert judge._memory_cap == 2


def test_batches_group_similar_sizes_within_the_token_budget():
    backend = ScriptedBackend(brightness_answer)
    judge = QualityJudge(backend, batch_size=4, max_batch_tokens=40)
    sizes = [(56, 56), (448, 56), (56, 56), (448, 56), (56, 56)]  # 4 and 32 image tokens
    judge.score([Image.new("RGB", s, (99, 99, 99)) for s in sizes])
    assert backend.calls == [3, 1, 1]  # the small ones together; two large ones would exceed 40 tokens
