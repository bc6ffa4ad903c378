"""Rewards for generators on the trained tiny judges (which rate brightness): each convention gets the
judge's own fast scores to 1e-6, and 16 threads sharing one loaded model get what sequential calls get."""

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

from qinsight_sdk import QualityJudge
from qinsight_sdk.rl import CombinedReward, HackingMonitor, JudgeReward
from qinsight_sdk.testing import brightness_image, build_tiny_rali, video_frames


@pytest.fixture(scope="module")
def rali_folder(tmp_path_factory):
    return build_tiny_rali(tmp_path_factory.mktemp("rali") / "RALI", trained=True)


def flow_grpo_batch(levels, seed=0):
    """(B, C, H, W) float32 in [0, 1], as Flow-GRPO hands its rewards decoded samples."""
    images = [np.asarray(brightness_image(level, seed + k)) for k, level in enumerate(levels)]
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255


LEVELS = (0.1, 0.85, 0.4, 0.6, 0.25, 0.95)


def test_the_tiny_judge_and_rali_as_rewards_in_every_convention(tiny_judge_model, rali_folder):
    images = flow_grpo_batch(LEVELS)
    for folder in (tiny_judge_model, rali_folder):
        reward = JudgeReward(folder, device="cpu")
        fast = [r.score for r in reward.judge.score(images, mode="fast")]
        low, high = (1.0, 5.0)
        expected = np.clip((np.array(fast) - low) / (high - low), 0, 1)
        rewards, info = reward(images, ["p"] * 6, [{}] * 6, only_strict=True)
        np.testing.assert_allclose(rewards, expected, atol=1e-6)
        assert info["scores"] == fast
        uint8 = (images.permute(0, 2, 3, 1) * 255).round().byte().numpy()
        np.testing.assert_allclose(reward(uint8, None, None)[0], rewards, atol=1e-6)
        np.testing.assert_allclose(reward.pointwise(["p"] * 6, image=list(images)).rewards, rewards, atol=1e-6)
        assert np.corrcoef(rewards, LEVELS)[0, 1] > 0.8  # both rate brightness
        group = reward.groupwise(["p"] * 6, image=list(images), strategy="score")
        assert group.extra_info["order"] == reward.judge.rank(list(images), strategy="score").order
    combined = CombinedReward({str(tiny_judge_model): 1.0, str(rali_folder): 0.5}, device="cpu")
    parts, _ = combined(images, None, None)
    judges = list(combined.parts.values())
    assert judges[0].judge is JudgeReward(tiny_judge_model, device="cpu").judge  # loaded once
    np.testing.assert_allclose(parts["avg"], judges[0](images)[0] + 0.5 * judges[1](images)[0], atol=1e-6)


def test_sixteen_threads_share_one_tiny_judge_and_get_sequential_answers(tiny_judge_model):
    reward = JudgeReward(QualityJudge.from_pretrained(tiny_judge_model, device="cpu", batch_size=3))
    batches = [flow_grpo_batch(np.random.default_rng(k).uniform(0, 1, 4), seed=10 * k) for k in range(16)]
    sequential = [reward(b, None, None)[0] for b in batches]
    with ThreadPoolExecutor(16) as pool:
        concurrent = list(pool.map(lambda b: reward(b, None, None)[0], batches))
    for one, two in zip(sequential, concurrent):
        np.testing.assert_array_equal(one, two)


def test_the_tiny_video_judge_as_a_reward_of_flow_grpo_s_video_batches(tiny_video_judge_model):
    judge = QualityJudge.from_pretrained(tiny_video_judge_model, device="cpu", dtype="fp32")
    frames = np.stack([video_frames(level, k) for k, level in enumerate((0.2, 0.8, 0.5))])
    videos = torch.from_numpy(frames).permute(0, 1, 4, 2, 3).float() / 255  # (B, T, C, H, W) in [0, 1]
    rewards, info = JudgeReward(judge)(videos, None, None)
    fast = [r.score for r in judge.score(list(frames), mode="fast")]
    np.testing.assert_allclose(rewards, np.array(fast) / 100, atol=1e-6)
    assert list(np.argsort(rewards)) == [0, 2, 1]
    monitor = HackingMonitor(window=2)
    report = monitor.update(videos, rewards)
    assert report.stats["qinsight/reward_mean"] == pytest.approx(float(np.mean(rewards)))
    assert report.stats["qinsight/unmeasured"] == 0.0
