"""The faster vision path gives the stock path's answers, and each image is encoded once per ranking.

Every comparison is against a judge loaded separately with ``stock_vision=True`` (transformers' own
tower, every image encoded anew), on the trained tiny judge, whose greedy answers hold ratings,
distortions and verdicts. These run at each transformers end CI tests.
"""

import numpy as np
import pytest
import torch
from PIL import Image
from samples import noise_image

from qinsight_sdk import DecodingOptions, QualityJudge
from qinsight_sdk.backends.qwen2_5_vl import vision as vision_module
from qinsight_sdk.backends.qwen2_5_vl.backend import QwenVLBackend
from qinsight_sdk.backends.qwen2_5_vl.vision import VisionMemory, install_fast_paths, vision_tower

# 448x448 (windows of one length), odd sizes (windows of several lengths), a small one, a wide one
SIZES = [(448, 448), (252, 168), (140, 84), (56, 56), (392, 112), (200, 64)]
GREEDY = DecodingOptions(max_new_tokens=48)


def images(count: int = len(SIZES), offset: int = 0) -> list[Image.Image]:
    return [noise_image(offset + k, *SIZES[k % len(SIZES)]) for k in range(count)]


@pytest.fixture(scope="module")
def judges(tiny_judge_model):
    fast = QualityJudge(QwenVLBackend.load(tiny_judge_model, device="cpu"), decoding=GREEDY)
    stock = QualityJudge(QwenVLBackend.load(tiny_judge_model, device="cpu", stock_vision=True), decoding=GREEDY)
    assert fast.backend.fast_vision and not stock.backend.fast_vision
    return fast, stock


def encodings(judge: QualityJudge, ask) -> tuple[object, int]:
    before = judge.backend.vision.encoded
    found = ask(judge)
    return found, judge.backend.vision.encoded - before


def test_the_tower_gives_the_stock_features_for_every_size_alone_and_batched(judges):
    fast, stock = judges
    for group in [images()[:1], images()[1:2], images()]:  # one window length, several, a mixed batch
        conversation = [{"role": "user", "content": [{"type": "image"}]}]
        inputs = fast.backend.encode([conversation] * len(group), [[fast.load_image(i)] for i in group]).inputs
        with torch.inference_mode():
            ours = vision_tower(fast.backend.model)(inputs["pixel_values"], grid_thw=inputs["image_grid_thw"])
            theirs = vision_tower(stock.backend.model)(inputs["pixel_values"], grid_thw=inputs["image_grid_thw"])
        ours, theirs = (t if isinstance(t, torch.Tensor) else t.pooler_output for t in (ours, theirs))
        assert ours.shape == theirs.shape  # equal to float32 rounding: the sums run in another order
        assert torch.allclose(ours, theirs, rtol=1e-5, atol=1e-5 * float(theirs.abs().max()))


def test_fast_scores_equal_the_stock_paths(judges):
    fast, stock = judges
    ours = [r.score for r in fast.score(images(12), mode="fast", batch_size=4)]
    theirs = [r.score for r in stock.score(images(12), mode="fast", batch_size=4)]
    assert None not in ours
    assert np.allclose(ours, theirs, rtol=0, atol=1e-5)


def test_greedy_answers_are_the_stock_paths_word_for_word(judges):
    fast, stock = judges
    group = images()
    for task in ("score", "degradation"):
        ours = [r.raw for r in getattr(fast, task)(group, batch_size=3)]
        theirs = [r.raw for r in getattr(stock, task)(group, batch_size=3)]
        assert ours == theirs and all(ours)
    pairs = [(group[0], group[1]), (group[2], group[3], group[4])]
    ours = [(r.winner, r.raw) for r in fast.compare_pairs(pairs, both_orders=True)]
    theirs = [(r.winner, r.raw) for r in stock.compare_pairs(pairs, both_orders=True)]
    assert ours == theirs


@pytest.mark.parametrize("strategy, count, options", [("tournament", 8, {"batch_size": 4}), ("hybrid", 6, {"pool": 4})])
def test_a_ranking_encodes_each_image_once_and_ranks_as_the_stock_path(judges, strategy, count, options):
    """A tournament of 8 asks about 28 images (7 matches, both orders); hybrid asks about each image in
    its fast-score phase and again in its pool's matches."""
    fast, stock = judges
    group = images(count, offset=20)
    ranking, encoded = encodings(fast, lambda judge: judge.rank(group, strategy=strategy, **options))
    assert encoded == count
    expected = stock.rank(group, strategy=strategy, **options)
    assert (ranking.order, ranking.comparisons) == (expected.order, expected.comparisons)
    assert np.allclose(ranking.scores, expected.scores, atol=1e-5)
    assert ranking.comparisons == {"tournament": 14, "hybrid": 12}[strategy]


def test_a_pair_in_both_orders_with_a_reference_encodes_three_images(judges):
    fast, _ = judges
    a, b, reference = images(3, offset=60)
    _, count = encodings(fast, lambda judge: judge.compare(a, b, reference=reference, both_orders=True))
    assert count == 3


def test_an_image_twice_in_one_batch_is_encoded_once_inside_a_block_and_scored_alike(judges):
    fast, _ = judges
    a, b = images(2, offset=70)
    with fast.reusing_images():
        results, count = encodings(fast, lambda judge: judge.score([a, b, a.copy()], mode="fast"))
    assert count == 2
    assert results[0].score == pytest.approx(results[2].score, abs=1e-6)
    _, count = encodings(fast, lambda judge: judge.score([a, b, a.copy()], mode="fast"))
    assert count == 3  # outside a block images are not even hashed: plain scoring pays nothing for it


def test_score_then_degradation_reuse_features_only_inside_the_block(judges):
    fast, stock = judges
    group = images(4, offset=80)

    def both(judge):
        return [r.score for r in judge.score(group, mode="fast")], [r.raw for r in judge.degradation(group)]

    with fast.reusing_images():
        inside, count = encodings(fast, both)
    assert count == 4
    outside, count = encodings(fast, both)
    assert count == 8  # outside a block nothing is kept
    with fast.reusing_images():
        _, count = encodings(fast, both)
    assert count == 4  # a new block starts empty: the last one's features went with it
    expected = both(stock)
    for found in (inside, outside):
        assert np.allclose(found[0], expected[0], atol=1e-5) and found[1] == expected[1]


def test_past_the_memory_budget_the_oldest_features_are_encoded_again(judges, monkeypatch):
    fast, stock = judges
    group = images(4, offset=90)
    monkeypatch.setattr(fast.backend.vision, "budget", 1)  # keeps nothing past each batch
    with fast.reusing_images():
        found, count = encodings(
            fast,
            lambda judge: [
                judge.score(group, mode="fast", batch_size=2),
                judge.score(group, mode="fast", batch_size=2),
            ],
        )
    assert count == 8
    expected = [r.score for r in stock.score(group, mode="fast")]
    assert np.allclose([r.score for r in found[1]], expected, atol=1e-5)


def test_a_fast_path_that_differs_from_the_stock_tower_is_not_installed(tiny_model, monkeypatch):
    backend = QwenVLBackend.load(tiny_model, device="cpu", stock_vision=True)
    tower = vision_tower(backend.model)
    stock_forwards = [tower.patch_embed.forward] + [block.attn.forward for block in tower.blocks]
    wrong = vision_module._patch_embedding

    def off_by_a_little(module):
        right = wrong(module)
        return lambda hidden_states: right(hidden_states) * 1.001

    monkeypatch.setattr(vision_module, "_patch_embedding", off_by_a_little)
    assert install_fast_paths(tower, backend._vision_probe) is False
    assert [tower.patch_embed.forward] + [block.attn.forward for block in tower.blocks] == stock_forwards
    monkeypatch.undo()
    assert install_fast_paths(tower, backend._vision_probe) is True


def test_the_memory_passes_unannounced_calls_through(tiny_model):
    backend = QwenVLBackend.load(tiny_model, device="cpu", stock_vision=True)
    tower = vision_tower(backend.model)
    pixels, grids = backend._vision_probe()
    with torch.inference_mode():
        expected = tower(pixels, grid_thw=grids)
        memory = VisionMemory(tower)
        with memory.expecting(["only one key for two images"]):
            found = tower(pixels, grid_thw=grids)
    assert memory.encoded == 2
    expected, found = (t if isinstance(t, torch.Tensor) else t.pooler_output for t in (expected, found))
    assert torch.equal(found, expected)


def test_the_patch_embedding_equals_the_convolution_for_still_and_for_moving_frames(tiny_model):
    backend = QwenVLBackend.load(tiny_model, device="cpu", stock_vision=True)
    embedding = vision_tower(backend.model).patch_embed
    still = torch.randn(40, 3, 1, 14 * 14).expand(40, 3, 2, 14 * 14).reshape(40, -1)
    moving = torch.randn(40, 3 * 2 * 14 * 14)
    ours = vision_module._patch_embedding(embedding)
    with torch.inference_mode():
        for rows in (still, moving):
            expected = embedding(rows)
            assert torch.allclose(ours(rows), expected, rtol=1e-5, atol=1e-5 * float(expected.abs().max()))


def test_the_patch_embedding_works_on_weights_loaded_in_inference_mode(tiny_model):
    """ComfyUI loads models under torch.inference_mode: such weights have no version counter."""
    from types import SimpleNamespace

    backend = QwenVLBackend.load(tiny_model, device="cpu", stock_vision=True)
    embedding = vision_tower(backend.model).patch_embed
    with torch.inference_mode():
        weights = SimpleNamespace(proj=SimpleNamespace(weight=embedding.proj.weight.clone()))
        still = torch.randn(40, 3, 1, 14 * 14).expand(40, 3, 2, 14 * 14).reshape(40, -1)
        expected = embedding(still)
    found = vision_module._patch_embedding(weights)(still)
    assert torch.allclose(found, expected, rtol=1e-5, atol=1e-5 * float(expected.abs().max()))


def test_past_the_budget_the_earliest_kept_image_goes_first(judges, monkeypatch):
    fast, _ = judges
    a, b, c = (noise_image(100 + k, 448, 448) for k in range(3))
    size = 64 * (448 // 28) ** 2 * 4  # one 448x448 image's features: 256 tokens of 64 floats
    monkeypatch.setattr(fast.backend.vision, "budget", 2 * size)
    with fast.reusing_images():
        _, first = encodings(fast, lambda judge: judge.score([a, b, c], mode="fast", batch_size=1))
        _, again = encodings(fast, lambda judge: judge.score([c, b], mode="fast"))
        _, oldest = encodings(fast, lambda judge: judge.score([a], mode="fast"))
    assert (first, again, oldest) == (3, 0, 1)


def test_eager_attention_keeps_the_stock_tower(tiny_model):
    """Asking for eager attention means asking for transformers' own arithmetic."""
    backend = QwenVLBackend.load(tiny_model, device="cpu", attn_implementation="eager")
    tower = vision_tower(backend.model)
    assert backend.fast_vision is False
    assert "forward" not in vars(tower.patch_embed) and all("forward" not in vars(b.attn) for b in tower.blocks)
