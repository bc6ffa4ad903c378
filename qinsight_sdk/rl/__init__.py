"""Judges as rewards for training generators with RL, and a monitor for reward hacking.

    from qinsight_sdk.rl import CombinedReward, HackingMonitor, JudgeReward
    reward_fn = CombinedReward({"q-insight": 1.0, "rali": 0.5}, device="cuda")  # Flow-GRPO's multi_score
    rewards, info = reward_fn(images, prompts, metadata)      # {"q-insight": ..., "rali": ..., "avg": ...}
    monitor = HackingMonitor(second="rali", device="cuda")
    report = monitor.update(images, rewards["avg"])           # report.stats: log it; report.warnings

- :mod:`.rewards`: :class:`JudgeReward` and :class:`CombinedReward` in each framework's convention;
- :mod:`.image_statistics`: colourfulness, saturation, sharpness, blockiness, grid energy;
- :mod:`.monitor`: :class:`HackingMonitor`.

A trainer in another environment uses a served judge without pickle: ``qinsight_sdk.client.RemoteReward``.
(Not :mod:`qinsight_sdk.train.rewards`: those reward a judge's own answers while fine-tuning it.)
"""

from .image_statistics import STATISTICS, image_statistics
from .monitor import HackingMonitor, MonitorReport
from .rewards import (
    CombinedReward,
    CombinedScores,
    JudgeReward,
    RewardOutput,
    RewardScores,
    judge_source,
    rank_rewards,
    shared_judge,
)

__all__ = [
    "STATISTICS",
    "CombinedReward",
    "CombinedScores",
    "HackingMonitor",
    "JudgeReward",
    "MonitorReport",
    "RewardOutput",
    "RewardScores",
    "image_statistics",
    "judge_source",
    "rank_rewards",
    "shared_judge",
]
