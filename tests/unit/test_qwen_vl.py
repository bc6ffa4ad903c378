"""QwenVLBackend on the tiny model; also RatingDistribution.expected, backend.py's value type read from its digits."""

import math
import re

import numpy as np
import pytest
import torch
from samples import noise_image

from qinsight_sdk import DecodingOptions, QualityJudge
from qinsight_sdk.backends.base import RatingDistribution
from qinsight_sdk.io.images import load_image
from qinsight_sdk.judging import prompts
from qinsight_sdk.judging.profiles import QINSIGHT

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
    conversation = QINSIGHT.messages("score")
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
    from qinsight_sdk.backends.qwen2_5_vl.backend import _probabilities

    logits = torch.tensor([[0.0, 1.0, 2.0, 9.0], [3.0, 0.0, 0.0, -9.0]], dtype=torch.float16)
    found = _probabilities(logits, [2, 0])
    expected = torch.tensor([[math.e**2, 1.0], [1.0, math.e**3]], dtype=torch.float64)
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
    decimals = torch.full((5, 10), 0.1, dtype=torch.float64)  # x uniform over 0..9
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
    from qinsight_sdk.io.images import load_image

    backend = tiny_judge.backend
    assert backend.encodes_directly  # the probe at load time accepted it
    conversations = [
        QINSIGHT.messages("score"),
        QINSIGHT.messages("comparison", with_reference=False),
        QINSIGHT.messages("degradation"),
    ]
    groups = [
        [load_image(noise_image(1, 300, 200))],
        [load_image(noise_image(2)), load_image(noise_image(3, 90))],
        [load_image(noise_image(4, 64, 500))],
    ]
    ours = backend.encode(conversations, groups).inputs
    texts = [backend.render(c) for c in conversations]
    expected = backend.processor(text=texts, images=[i for g in groups for i in g], padding=True, return_tensors="pt")
    assert set(ours) == set(expected)
    for key in expected:
        assert torch.allclose(ours[key].float(), expected[key].float(), atol=1e-5), key


def test_sampling_really_samples_with_the_requested_settings(tiny_judge):
    """Guards against transformers swapping in the checkpoint's near-greedy defaults (top_k 1)."""
    from qinsight_sdk.io.images import load_image

    options = DecodingOptions(do_sample=True, max_new_tokens=12, num_samples=4)
    batch = tiny_judge.backend.encode([QINSIGHT.messages("score")], [[load_image(noise_image(5))]])
    (answers,) = tiny_judge.backend.generate(batch, options)
    assert len({a.text for a in answers}) > 1


class ForcedAnswer(DecodingOptions):
    """Greedy decoding made to write ``FORCED`` token by token after a prompt of ``PROMPT`` tokens (a
    test's stand-in for a trained judge): every other token is set to -inf after the model has scored
    them, so the probabilities the judge records are still the model's own."""

    FORCED: list[int] = []
    PROMPT = 0

    def generation_config(self, base):
        from transformers import LogitsProcessor

        config, processors = super().generation_config(base)
        forced, prompt = self.FORCED, self.PROMPT

        class Force(LogitsProcessor):
            def __call__(self, input_ids, scores):
                chosen = torch.full_like(scores, -math.inf)
                chosen[:, forced[min(input_ids.shape[1] - prompt, len(forced) - 1)]] = 0.0
                return chosen

        processors.append(Force())
        return config, processors


def brute_force_expectation(backend, conversation, image, prefix):
    """The expected two-decimal rating "d.ef" after ``prefix``, by forcing every digit token by token: one
    uncached forward over prompt + prefix + "d.e" for each of the 50 (d, e), probabilities over digit
    tokens only (the first digit over 1-5), as qinsight defines the expected score."""
    digits, dot = backend.rating_token_ids()
    text = backend.render(conversation) + prefix
    inputs = dict(backend.processor(text=[text], images=[image], return_tensors="pt"))
    length = inputs["input_ids"].shape[1]
    branches = [(d, e) for d in range(1, 6) for e in range(10)]
    tails = torch.tensor([[digits[d], dot, digits[e]] for d, e in branches])
    count = len(branches)
    batch = {
        "pixel_values": inputs["pixel_values"].repeat(count, 1),
        "image_grid_thw": inputs["image_grid_thw"].repeat(count, 1),
    }
    for name, value in inputs.items():  # per-token inputs (transformers 5 adds token types) grow too
        if value.dim() == 2 and value.shape == (1, length):
            tail = tails if name == "input_ids" else torch.full((count, 3), int(name == "attention_mask"))
            batch[name] = torch.cat([value.expand(count, -1), tail.to(value.dtype)], dim=1)
    with torch.inference_mode():
        logits = backend.model(**batch).logits.double()
    first = torch.softmax(logits[0, length - 1, digits[1:6]], -1)
    total = 0.0
    for k, (d, e) in enumerate(branches):
        tenth = torch.softmax(logits[k, length + 1, digits], -1)[e]
        hundredth = torch.softmax(logits[k, length + 2, digits], -1)
        total += float(first[d - 1] * tenth * (hundredth * (d + e / 10 + torch.arange(10) / 100)).sum())
    return total


SIZES = [(56, 56), (84, 84), (112, 112), (70, 70)]  # padded together in one batch


# In float64 the two computations agree to about 1e-7 (generate() hands logits on in float32); a wrong
# branch, position or decimal shows as 1e-3 or more. In float32 (the default) batching, padding and the
# cache move the logits' last bits: up to about 2e-6 seen at transformers 4.51.3.
TOLERANCE = {torch.float64: 1e-6, torch.float32: 1e-5}


@pytest.fixture(scope="module", params=[torch.float64, torch.float32], ids=["float64", "float32"])
def trained_judge(tiny_judge_model, request):
    return QualityJudge.from_pretrained(
        tiny_judge_model, device="cpu", dtype=request.param, decoding=DecodingOptions(max_new_tokens=40)
    )


def test_the_expected_score_is_the_brute_force_expectation_in_reason_mode(trained_judge):
    """Issue 26: the expected score is a true expectation over two-decimal ratings: each first digit with
    its own decimals and each first decimal with its own second decimal, read by continuing the
    generation's cache. Checked, in a padded batch of images of several sizes, against forcing every digit
    token by token with uncached forwards, to 1e-6 in float64."""
    from qinsight_sdk.testing import brightness_image

    images = [
        brightness_image(level, 500 + i).resize(size)
        for i, (level, size) in enumerate(zip((0.2, 0.45, 0.7, 0.9), SIZES))
    ]
    results = trained_judge.score(images, batch_size=4)
    conversation = QINSIGHT.messages("score")
    for image, result in zip(images, results):
        assert result.ok, result.error
        cut = list(re.finditer(r'"rating": (?=[1-5])', result.raw))[-1]
        answer_prefix = result.raw[: cut.end()]
        expected = brute_force_expectation(
            trained_judge.backend, conversation, trained_judge.load_image(image), answer_prefix
        )
        assert result.expected_score == pytest.approx(expected, abs=TOLERANCE[trained_judge.backend.dtype])


def test_the_fast_score_is_the_brute_force_expectation(trained_judge):
    from qinsight_sdk.testing import brightness_image

    images = [
        brightness_image(level, 600 + i).resize(size)
        for i, (level, size) in enumerate(zip((0.1, 0.35, 0.6, 0.95), SIZES))
    ]
    results = trained_judge.score(images, batch_size=4, mode="fast")
    conversation = QINSIGHT.messages("score", fast=True)
    for image, result in zip(images, results):
        expected = brute_force_expectation(
            trained_judge.backend, conversation, trained_judge.load_image(image), QINSIGHT.fast_prefix()
        )
        assert result.score == pytest.approx(expected, abs=TOLERANCE[trained_judge.backend.dtype])


def test_each_first_digit_has_its_own_decimals():
    """The issue's example: p(3) = 0.6, p(4) = 0.4, "3.9" likely after 3 and "4.0" after 4 is about 3.94, not
    the 4.30 that reusing the written digit's decimals for both gave."""
    first = torch.tensor([0, 0, 0.6, 0.4, 0], dtype=torch.float64)
    decimals = torch.zeros(5, 10, dtype=torch.float64)
    decimals[2, 9], decimals[3, 0] = 1.0, 1.0
    decimals[[0, 1, 4], 0] = 1.0
    hundredths = torch.zeros(5, 10, 10, dtype=torch.float64)
    hundredths[..., 0] = 1.0
    hundredths[2, 9] = torch.tensor([0.5, 0.5] + [0.0] * 8, dtype=torch.float64)
    mean, std = RatingDistribution(first, decimals, hundredths).expected()
    assert mean == pytest.approx(0.6 * 3.905 + 0.4 * 4.0)
    values = torch.tensor([3.9, 3.91, 4.0], dtype=torch.float64)
    weights = torch.tensor([0.3, 0.3, 0.4], dtype=torch.float64)
    assert std == pytest.approx(float((weights * (values - mean) ** 2).sum().sqrt()))
    assert RatingDistribution(first, decimals).expected()[0] == pytest.approx(0.6 * 3.9 + 0.4 * 4.0)


def test_no_rating_written_no_expected_score(tiny_judge):
    result = tiny_judge.score(IMAGES[0], decoding=DecodingOptions(max_new_tokens=6))
    assert result.score is None and result.expected_score is None and result.expected_std is None
