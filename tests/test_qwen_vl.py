"""QwenVLBackend on the tiny model; also RatingDistribution.expected, backend.py's value type read from its digits."""

import math

import numpy as np
import pytest
import torch
from samples import noise_image

from qinsight_sdk import DecodingOptions, prompts
from qinsight_sdk.backend import RatingDistribution
from qinsight_sdk.images import load_image

IMAGES = [noise_image(i, 40 + 17 * i, 44 + 9 * (i % 3)) for i in range(7)]


# -- fast scores: the rating digits' probabilities -------------------------------------------------


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


def test_rating_digit_probabilities_are_a_softmax_over_the_chosen_tokens():
    from qinsight_sdk.qwen_vl import _probabilities

    logits = torch.tensor([[0.0, 1.0, 2.0, 9.0], [3.0, 0.0, 0.0, -9.0]], dtype=torch.float16)
    found = _probabilities(logits, [2, 0])
    expected = torch.tensor([[math.e ** 2, 1.0], [1.0, math.e ** 3]], dtype=torch.float64)
    assert found.dtype == torch.float64 and found.device.type == "cpu"
    assert torch.allclose(found, expected / expected.sum(-1, keepdim=True), atol=1e-12)


# -- the expected rating of the digits (RatingDistribution, backend.py) ----------------------------


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


# -- encoding and generation -----------------------------------------------------------------------


def test_direct_encoding_equals_the_processor(tiny_judge):
    """The fast encoder must hand the model exactly what the checkpoint's processor would."""
    from qinsight_sdk import prompts
    from qinsight_sdk.images import load_image

    backend = tiny_judge.backend
    assert backend.encodes_directly  # the probe at load time accepted it
    conversations = [prompts.score_messages(), prompts.comparison_messages(with_reference=False),
                     prompts.degradation_messages()]
    groups = [[load_image(noise_image(1, 300, 200))], [load_image(noise_image(2)), load_image(noise_image(3, 90))],
              [load_image(noise_image(4, 64, 500))]]
    ours = backend.encode(conversations, groups).inputs
    texts = [backend.render(c) for c in conversations]
    expected = backend.processor(text=texts, images=[i for g in groups for i in g], padding=True,
                                 return_tensors="pt")
    assert set(ours) == set(expected)
    for key in expected:
        assert torch.allclose(ours[key].float(), expected[key].float(), atol=1e-5), key


def test_sampling_really_samples_with_the_requested_settings(tiny_judge):
    """Guards against transformers swapping in the checkpoint's near-greedy defaults (top_k 1)."""
    from qinsight_sdk import prompts
    from qinsight_sdk.images import load_image

    options = DecodingOptions.official_demo(max_new_tokens=12, num_samples=4)
    batch = tiny_judge.backend.encode([prompts.score_messages()], [[load_image(noise_image(5))]])
    (answers,) = tiny_judge.backend.generate(batch, options)
    assert len({a.text for a in answers}) > 1
