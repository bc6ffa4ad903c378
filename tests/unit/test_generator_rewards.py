"""Rewards for generators (qinsight_sdk.rl.rewards), on scripted judges: each framework's convention with
the shapes and dtypes it passes, the judge's own rewards to 1e-6, groups ranked as judge.rank ranks them,
weighted combinations, threads. The tiny trained judges take the same calls in test_generator_rewards_models."""

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from PIL import Image
from samples import grey
from scripted import brightness_answer

from qinsight_sdk import QualityJudge, Video
from qinsight_sdk.errors import UsageError
from qinsight_sdk.rl import CombinedReward, JudgeReward, RewardOutput, judge_source, rank_rewards, shared_judge
from qinsight_sdk.rl import rewards as rewards_module
from qinsight_sdk.testing import ScriptedBackend, video_frames

LEVELS = (0.12, 0.91, 0.47, 0.3, 0.76, 0.05)


def image_judge():
    return QualityJudge(ScriptedBackend(brightness_answer))


def video_answer(conversation, clips):
    """A natural-video judge whose score is 100 x the mean level, less the frames it saw (so a wrong fps,
    which changes how many frames are sampled, changes the score)."""
    return f"<answer>{100 * float(clips[0].frames.mean()) / 255 - len(clips[0].frames):.2f}</answer>"


def aigc_answer(conversation, clips):
    level = 100 * float(clips[0].frames.mean()) / 255
    return f'<answer>{{"spatial": {level:.2f}, "temporal": {100 - level:.2f}, "consistency": 40.00}}</answer>'


def batch(levels=LEVELS, side=24, seed=0):
    """Flow-GRPO's images: (B, C, H, W) float32 in [0, 1], textured so sizes and levels matter."""
    rng = np.random.default_rng(seed)
    noise = rng.uniform(-0.1, 0.1, (len(levels), 3, side, side + 8))
    return torch.from_numpy(np.clip(np.array(levels)[:, None, None, None] + noise, 0, 1)).float()


def expected(judge, images):
    """The judge's fast scores, and the rewards its own reward() gives."""
    results = judge.score(images, mode="fast")
    return [r.score for r in results], judge.reward(images).numpy()


# -- Flow-GRPO, DiffusionNFT, DDPO: fn(images, prompts, metadata) -> (rewards, info) --------------------------


def test_flow_grpo_s_tensor_and_uint8_batches_get_the_judge_s_fast_scores():
    judge = image_judge()
    reward = JudgeReward(judge)
    images = batch()
    scores, own = expected(judge, images)
    rewards, info = reward(images, ["a prompt"] * 6, [{}] * 6, only_strict=True)
    assert rewards.dtype == np.float32 and rewards.shape == (6,)
    np.testing.assert_allclose(rewards, own, atol=1e-6)
    np.testing.assert_allclose(rewards, (np.array(scores) - 1) / 4, atol=1e-6)
    assert info == {"scores": scores, "errors": [None] * 6}
    assert np.argmax(rewards) == 1 and np.argmin(rewards) == 5
    uint8 = (images.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)  # DDPO's NHWC arrays
    np.testing.assert_allclose(reward(uint8, None, None)[0], rewards, atol=1e-6)
    on_gpu_layout = images.permute(0, 2, 3, 1).contiguous()  # (B, H, W, C) floats, ComfyUI's layout
    np.testing.assert_allclose(reward(on_gpu_layout, None, None)[0], rewards, atol=1e-6)


def test_an_image_that_cannot_be_judged_is_zero_and_its_error_and_the_rest_are_judged():
    reward = JudgeReward(image_judge())
    images = batch()
    images[2, 0, 3, 3] = float("nan")
    rewards, info = reward(images, None, None)
    assert rewards[2] == 0.0 and info["scores"][2] is None and "NaN" in info["errors"][2]
    clean = reward(batch(), None, None)[0]
    np.testing.assert_allclose(np.delete(rewards, 2), np.delete(clean, 2), atol=1e-6)
    assert [e is None for e in info["errors"]] == [True, True, False, True, True, True]


def test_flow_grpo_s_keywords_are_taken_and_a_reference_or_anything_else_refused():
    reward = JudgeReward(image_judge())
    assert reward(batch(), ["p"] * 6, [{}] * 6, only_strict=False)[0].shape == (6,)
    assert reward(batch(), ["p"] * 6, [{}] * 6, ref_images=None)[0].shape == (6,)
    with pytest.raises(UsageError, match="^these rewards judge without a reference image: ref_images cannot be used$"):
        reward(batch(), None, None, ref_images=batch())
    with pytest.raises(UsageError, match="^a reward takes no option temperature, top_k$"):
        reward(batch(), None, None, top_k=1, temperature=0.5)


def test_videos_in_flow_grpo_s_five_dimensional_batch_with_their_frame_rate():
    judge = QualityJudge(ScriptedBackend(video_answer), profile="vqinsight-naturalvideo")
    frames = [video_frames(level, k) for k, level in enumerate((0.2, 0.8, 0.5))]  # (T, H, W, 3) uint8
    videos = torch.from_numpy(np.stack(frames)).permute(0, 1, 4, 2, 3).float() / 255  # (B, T, C, H, W) in [0, 1]
    reward = JudgeReward(judge, fps=8.0)
    rewards, info = reward(videos, None, None)
    own = judge.reward([Video(video, 8.0) for video in videos]).numpy()
    np.testing.assert_allclose(rewards, own, atol=1e-6)
    assert list(np.argsort(rewards)) == [0, 2, 1]
    assert info["scores"] == [r.score for r in judge.score([Video(v, 8.0) for v in videos], mode="fast")]
    default_rate = JudgeReward(judge)(videos, None, None)[0]
    np.testing.assert_allclose(default_rate, judge.reward(videos).numpy(), atol=1e-6)
    assert not np.allclose(default_rate, rewards)  # the rate given decides how many frames the judge sees


def test_an_image_judge_refuses_videos_naming_the_shape_and_a_video_judge_s_fps_must_be_a_rate():
    with pytest.raises(UsageError, match=r"judges images, and was given a batch of videos \(2, 4, 3, 8, 8\)"):
        JudgeReward(image_judge())(torch.zeros(2, 4, 3, 8, 8), None, None)
    judge = QualityJudge(ScriptedBackend(video_answer), profile="vqinsight-naturalvideo")
    for fps in (0, -2.0, float("nan"), float("inf")):
        with pytest.raises(UsageError, match="fps must be a positive number"):
            JudgeReward(judge, fps=fps)
    assert JudgeReward(judge, fps=0.5).fps == 0.5  # a slow video is a video


def test_files_are_judged_as_files_whatever_rate_is_given_for_frames(tmp_path):
    judge = QualityJudge(ScriptedBackend(video_answer), profile="vqinsight-naturalvideo")
    scores = JudgeReward(judge, fps=8.0).compute([str(tmp_path / "missing.mp4"), video_frames(0.5, 1)])
    assert scores.errors[0] == f"{tmp_path / 'missing.mp4'}: file not found" and scores.errors[1] is None


def test_the_aigc_judge_rewards_one_dimension_or_their_mean():
    judge = QualityJudge(ScriptedBackend(aigc_answer), profile="vqinsight-aigcvideo")
    videos = [video_frames(level, k) for k, level in enumerate((0.25, 0.75))]
    spatial = JudgeReward(judge, dimension="spatial")
    temporal = JudgeReward(judge, dimension="temporal")
    mean = JudgeReward(judge)
    results = judge.score(videos)
    assert spatial.name == "vqinsight-aigcvideo/spatial"
    np.testing.assert_allclose(
        spatial.compute(videos).rewards, [r.dimensions["spatial"] / 100 for r in results], atol=1e-6
    )
    np.testing.assert_allclose(
        temporal.compute(videos).rewards, [r.dimensions["temporal"] / 100 for r in results], atol=1e-6
    )
    assert temporal.compute(videos).scores == [r.dimensions["temporal"] for r in results]
    np.testing.assert_allclose(mean.compute(videos).rewards, [r.score / 100 for r in results], atol=1e-6)
    np.testing.assert_allclose(judge.reward(videos, dimension="spatial").numpy(), spatial.compute(videos).rewards)
    with pytest.raises(
        UsageError,
        match=r"^'vqinsight-aigcvideo' scores no dimension 'color' \(its dimensions: spatial, temporal, consistency\)$",
    ):
        JudgeReward(judge, dimension="color")
    with pytest.raises(UsageError, match=r"^'q-insight' scores no dimension 'spatial' \(its dimensions: none\)$"):
        JudgeReward(image_judge(), dimension="spatial")
    with pytest.raises(UsageError, match=r"'q-insight' scores no dimension 'spatial' \(its dimensions: none\)"):
        image_judge().reward([grey(100)], dimension="spatial")


# -- Flow-Factory: pointwise and groupwise -------------------------------------------------------------------


def test_flow_factory_s_pil_and_tensor_inputs_get_the_same_rewards():
    judge = image_judge()
    reward = JudgeReward(judge)
    tensors = list(batch())  # use_tensor_inputs: a list of (C, H, W) in [0, 1]
    pils = [Image.fromarray((t.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)) for t in tensors]
    out = reward.pointwise(["p"] * 6, image=pils, video=None, audio=None, condition_images=None)
    assert isinstance(out, RewardOutput) and out.extra_info["errors"] == [None] * 6
    np.testing.assert_allclose(out.rewards, judge.reward(pils).numpy(), atol=1e-6)
    np.testing.assert_allclose(reward.pointwise(["p"] * 6, image=tensors).rewards, out.rewards, atol=1e-6)


def test_flow_factory_s_videos_as_frame_lists_or_tensors():
    judge = QualityJudge(ScriptedBackend(video_answer), profile="vqinsight-naturalvideo")
    frames = [video_frames(level, k) for k, level in enumerate((0.6, 0.3))]
    as_pil = [[Image.fromarray(f) for f in video] for video in frames]  # List[List[PIL]]
    as_tensors = [torch.from_numpy(video).permute(0, 3, 1, 2).float() / 255 for video in frames]  # List[(T,C,H,W)]
    reward = JudgeReward(judge)
    expected_rewards = judge.reward(frames).numpy()
    np.testing.assert_allclose(reward.pointwise(["p", "p"], video=as_pil).rewards, expected_rewards, atol=1e-6)
    np.testing.assert_allclose(reward.pointwise(["p", "p"], video=as_tensors).rewards, expected_rewards, atol=1e-6)
    with pytest.raises(UsageError, match="^the reward 'vqinsight-naturalvideo' judges videos, and was given images$"):
        reward.pointwise(["p"], image=[grey(10)])
    with pytest.raises(UsageError, match="^the reward 'q-insight' judges images, and was given videos$"):
        JudgeReward(image_judge()).pointwise(["p"], video=as_pil)
    with pytest.raises(UsageError, match="^the reward 'q-insight' judges images, and was given nothing$"):
        JudgeReward(image_judge()).pointwise(["p"])


@pytest.mark.parametrize("strategy", ["tournament", "hybrid", "score"])
def test_a_group_is_ranked_as_judge_rank_ranks_it(strategy):
    judge = image_judge()
    group = [grey(round(255 * level)) for level in LEVELS]
    out = JudgeReward(judge).groupwise(["the prompt"] * 6, image=group, strategy=strategy)
    ranking = judge.rank(group, strategy=strategy)
    assert out.extra_info["order"] == ranking.order
    assert out.rewards.dtype == np.float32 and out.rewards.max() == 1.0 and out.rewards[1] == 1.0
    np.testing.assert_allclose(out.rewards, rank_rewards(ranking, 6))
    places = [ranking.order.index(i) for i in range(6)]  # better placed, never less rewarded
    for a in range(6):
        for b in range(6):
            if places[a] < places[b]:
                assert out.rewards[a] >= out.rewards[b]
    if strategy != "tournament":  # a strict order: the best 1, then evenly down to 0
        np.testing.assert_allclose(sorted(out.rewards), np.linspace(0, 1, 6), atol=1e-6)
        assert out.rewards[1] == 1.0 and out.rewards[5] == 0.0


def test_rank_rewards_share_tournament_ties_and_give_unjudged_inputs_nothing():
    from qinsight_sdk import Ranking

    knocked_out = Ranking(order=[3, 0, 1, 2], scores=[2.0, 1.0, 0.0, 0.0], strategy="tournament", decided_by="")
    np.testing.assert_allclose(rank_rewards(knocked_out, 4), [2 / 3, 1 / 6, 1 / 6, 1.0])
    scored = Ranking(order=[3, 0, 1, 2], scores=[4.0, 3.0, 3.0, 2.0], strategy="score", decided_by="")
    np.testing.assert_allclose(rank_rewards(scored, 4), [2 / 3, 1 / 3, 0.0, 1.0])  # no ties outside tournaments
    failed = Ranking(order=[1, 2, 0], scores=[3.0, 2.0, None], strategy="score", decided_by="", errors={0: "bad"})
    np.testing.assert_allclose(rank_rewards(failed, 3), [0.0, 1.0, 0.0])
    alone = Ranking(order=[0], scores=[3.0], strategy="score", decided_by="")
    assert rank_rewards(alone, 1).tolist() == [1.0]


def test_a_group_with_an_input_that_cannot_be_judged():
    images = [grey(200), np.full((8, 8, 3), np.nan, dtype=np.float32), grey(40)]
    out = JudgeReward(image_judge()).groupwise(["p"] * 3, image=images, strategy="score")
    assert out.rewards.tolist() == [1.0, 0.0, 0.0]
    assert out.extra_info["errors"][0] is None and "NaN" in out.extra_info["errors"][1]


# -- combinations --------------------------------------------------------------------------------------------


def darkness_answer(conversation, images):
    return f'<answer>{{"rating": {5 - 4 * np.asarray(images[0]).mean() / 255:.2f}}}</answer>'


def test_a_weighted_combination_reports_each_part_and_the_sum_as_flow_grpo_s_multi_score():
    bright, dark = image_judge(), QualityJudge(ScriptedBackend(darkness_answer))
    combined = CombinedReward({JudgeReward(bright, name="bright"): 1.0, JudgeReward(dark, name="dark"): 0.25})
    images = batch()
    rewards, info = combined(images, ["p"] * 6, [{}] * 6, only_strict=True)
    assert list(rewards) == ["bright", "dark", "avg"]
    np.testing.assert_allclose(rewards["bright"], bright.reward(images).numpy(), atol=1e-6)
    np.testing.assert_allclose(rewards["dark"], dark.reward(images).numpy(), atol=1e-6)
    np.testing.assert_allclose(rewards["avg"], rewards["bright"] + 0.25 * rewards["dark"], atol=1e-6)
    assert rewards["avg"].dtype == np.float32 and rewards["dark"].dtype == np.float32
    assert set(info) == {"bright", "dark"} and len(info["dark"]["scores"]) == 6
    out = combined.pointwise(["p"] * 6, image=list(images))
    np.testing.assert_allclose(out.rewards, rewards["avg"], atol=1e-6)
    assert out.extra_info["dark"] == pytest.approx(rewards["dark"].tolist())
    scores = combined.compute(images)
    assert scores.weights == {"bright": 1.0, "dark": 0.25}


def test_parts_of_one_judge_are_judged_once():
    backend = ScriptedBackend(aigc_answer)
    judge = QualityJudge(backend, profile="vqinsight-aigcvideo")
    combined = CombinedReward(
        {JudgeReward(judge, dimension="spatial"): 1.0, JudgeReward(judge, dimension="temporal"): 2.0}
    )
    videos = [video_frames(0.25, 1), video_frames(0.5, 2)]
    backend.calls.clear()
    scores = combined.compute(videos)
    assert sum(backend.calls) == 2  # two videos, judged once for both dimensions
    np.testing.assert_allclose(scores.parts["vqinsight-aigcvideo/spatial"].rewards, [0.25, 0.5], atol=0.01)
    np.testing.assert_allclose(scores.total, [0.25 + 2 * 0.75, 0.5 + 2 * 0.5], atol=0.02)


def test_combinations_refuse_no_parts_bad_weights_and_two_parts_of_one_name():
    reward = JudgeReward(image_judge())
    with pytest.raises(UsageError, match="^a combined reward needs at least one part$"):
        CombinedReward({})
    for weight in (float("nan"), float("inf"), True, "1"):
        with pytest.raises(UsageError, match="the weight of 'q-insight' must be a finite number"):
            CombinedReward({reward: weight})
    with pytest.raises(UsageError, match="two parts are named 'q-insight'"):
        CombinedReward({reward: 1.0, JudgeReward(image_judge()): 1.0})


# -- loading once, threads, async ----------------------------------------------------------------------------


def test_judges_are_found_by_name_and_loaded_once_per_weights_and_options(monkeypatch):
    assert judge_source("q-insight") == ("ByteDance/Q-Insight", "score_degradation")
    assert judge_source("rali") == ("ByteDance/Q-Insight", "RALI")
    assert judge_source("vqinsight-aigcvideo") == ("ByteDance/Q-Insight", "vqinsight-aigcvideo")
    assert judge_source("visualquality-r1") == ("TianheWu/VisualQuality-R1-7B", None)
    assert judge_source("someone/their-judge") == ("someone/their-judge", None)
    loads = []

    def load(cls, model, subfolder, **options):
        loads.append((model, subfolder, options))
        return image_judge()

    monkeypatch.setattr(QualityJudge, "from_pretrained", classmethod(load))
    monkeypatch.setattr(rewards_module, "_SHARED", {})
    default = JudgeReward()
    assert default.name == "q-insight" and shared_judge() is default.judge
    mine = JudgeReward("someone/their-judge", subfolder="v2")
    assert mine.name == "q-insight"  # named by the loaded judge's profile, not by where it came from
    a = JudgeReward("rali", device="cpu")
    b = JudgeReward("rali", device="cpu", dimension=None)
    c = JudgeReward("rali", device="cuda")
    combined = CombinedReward({"rali": 1.0, "q-insight": 0.5}, device="cpu")
    assert a.judge is b.judge is combined.parts["rali"].judge and c.judge is not a.judge
    assert loads == [
        ("ByteDance/Q-Insight", "score_degradation", {}),
        ("someone/their-judge", "v2", {}),
        ("ByteDance/Q-Insight", "RALI", {"device": "cpu"}),
        ("ByteDance/Q-Insight", "RALI", {"device": "cuda"}),
        ("ByteDance/Q-Insight", "score_degradation", {"device": "cpu"}),
    ]
    assert a.name == "rali" and combined.parts["q-insight"].name == "q-insight"
    assert shared_judge("q-insight", device="cpu") is combined.parts["q-insight"].judge
    loaded = image_judge()
    assert shared_judge(loaded) is loaded
    from qinsight_sdk.judging.profiles import JudgeProfile, TaskPrompt
    from qinsight_sdk.judging.prompts import IMAGE

    monkeypatch.setitem(
        rewards_module.PROFILES, "unreleased", JudgeProfile("unreleased", {"score": TaskPrompt((IMAGE,))})
    )
    with pytest.raises(
        UsageError, match="^the judge 'unreleased' has no released weights: give its folder or Hugging Face id$"
    ):
        judge_source("unreleased")


class Overlapping(ScriptedBackend):
    """A model that notices two batches running at once (as two threads in one model would)."""

    def __init__(self, answer):
        super().__init__(answer)
        self.running, self.overlaps = 0, 0
        self.guard = threading.Lock()

    def rating_distributions(self, batch):
        with self.guard:
            self.running += 1
            self.overlaps += self.running > 1
        try:
            threading.Event().wait(0.002)
            return super().rating_distributions(batch)
        finally:
            with self.guard:
                self.running -= 1


def test_sixteen_threads_get_what_sequential_calls_get_one_batch_at_a_time():
    backend = Overlapping(brightness_answer)
    judge = QualityJudge(backend, batch_size=3)
    reward, other = JudgeReward(judge), JudgeReward(judge, name="same judge")  # one judge: one lock
    batches = [batch(np.random.default_rng(k).uniform(0, 1, 5), seed=k) for k in range(32)]
    sequential = [reward(b, None, None)[0] for b in batches]
    with ThreadPoolExecutor(16) as pool:
        futures = [pool.submit(r, b, None, None) for k, b in enumerate(batches) for r in [(reward, other)[k % 2]]]
        concurrent = [f.result()[0] for f in futures]
    for one, two in zip(sequential, concurrent):
        np.testing.assert_array_equal(one, two)
    assert backend.overlaps == 0


def test_the_async_forms_answer_as_the_others():
    reward = JudgeReward(image_judge())
    combined = CombinedReward({reward: 2.0})
    images = batch()

    async def main():
        return await asyncio.gather(
            reward.acall(images, None, None), reward.acompute(images), combined.acall(images), combined.acompute(images)
        )

    called, computed, combined_called, combined_computed = asyncio.run(main())
    with pytest.raises(UsageError, match="ref_images cannot be used"):
        asyncio.run(reward.acall(images, None, None, ref_images=images))
    with pytest.raises(UsageError, match="ref_images cannot be used"):
        asyncio.run(combined.acall(images, ref_images=images))
    np.testing.assert_array_equal(called[0], reward(images, None, None)[0])
    np.testing.assert_array_equal(computed.rewards, called[0])
    np.testing.assert_allclose(combined_called[0]["avg"], 2 * called[0], atol=1e-6)
    np.testing.assert_allclose(combined_computed.total, 2 * called[0], atol=1e-6)


def test_a_combination_of_video_judges_and_a_group_of_videos():
    judge = QualityJudge(ScriptedBackend(video_answer), profile="vqinsight-naturalvideo")
    videos = [video_frames(level, k) for k, level in enumerate((0.6, 0.3, 0.8))]
    combined = CombinedReward({JudgeReward(judge): 0.5})
    np.testing.assert_allclose(
        combined.pointwise(["p"] * 3, video=videos).rewards, 0.5 * judge.reward(videos).numpy(), atol=1e-6
    )
    group = JudgeReward(judge).groupwise(["p"] * 3, video=videos, strategy="score")
    assert group.extra_info["order"] == [2, 0, 1] and group.rewards.tolist() == [0.5, 0.0, 1.0]


def test_groupwise_defaults_to_a_tournament_and_passes_its_pool():
    judge = image_judge()
    group = [grey(round(255 * level)) for level in LEVELS]
    default = JudgeReward(judge).groupwise(["p"] * 6, image=group)
    tournament = judge.rank(group, strategy="tournament")
    assert default.extra_info["order"] == tournament.order
    assert default.extra_info["comparisons"] == tournament.comparisons
    small_pool = JudgeReward(judge).groupwise(["p"] * 6, image=group, strategy="hybrid", pool=2)
    assert small_pool.extra_info["comparisons"] == judge.rank(group, strategy="hybrid", pool=2).comparisons
    assert small_pool.extra_info["comparisons"] < judge.rank(group, strategy="hybrid").comparisons


def test_a_reward_s_batch_size_is_the_judge_s_batch_and_each_result_is_reported():
    backend = ScriptedBackend(brightness_answer)
    judge = QualityJudge(backend, batch_size=8)
    reward = JudgeReward(judge, batch_size=2)
    seen = []
    scores = reward.compute(batch(), on_result=lambda index, result: seen.append((index, result.score)))
    assert backend.calls == [2, 2, 2]
    assert sorted(seen) == [(i, s) for i, s in enumerate(scores.scores)]
    backend.calls.clear()
    reward.groupwise(["p"] * 6, image=list(batch()), strategy="score")
    assert backend.calls == [2, 2, 2]
