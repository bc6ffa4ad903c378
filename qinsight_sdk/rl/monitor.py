"""A reward-hacking monitor: what each scored batch looked like, and a warning when the reward rises the way
hacking makes it rise.

A generator that learns to please one judge can get worse by every other measure: over-saturated colour,
grids on the VAE's 8-pixel lattice, collapsing detail. The monitor follows, batch by batch, the reward's
distribution, the image statistics of :mod:`qinsight_sdk.rl.image_statistics`, and optionally a second judge
(RALI against Q-Insight, say) and its rank agreement with the reward. It compares the latest ``window``
batches with the first ``baseline`` ones, each quantity's change measured in its own spread across the
early images (an effect size: 1.0 is one standard deviation of the early batches' images). A change counts
when it is that large and also unlikely by chance (Welch's t-test, p < ``alpha``: a few images per batch
do not raise alarms). It warns when the reward rose by at least ``rise`` while

- an image statistic moved at least ``drift`` the way hacking moves it (saturation, blockiness and grid
  energy up; sharpness either way: over-sharpened or collapsing; colourfulness, which grows with brightness,
  is reported only), or
- the second judge did not follow: its own change is under ``follow`` times the reward's, or the two
  judges' rank agreement over the window fell under ``min_agreement``.

Every batch gives a :class:`MonitorReport`: ``stats``, a flat dict of floats named for TensorBoard and wandb
(``qinsight/reward_mean``, ``qinsight/saturation``, ``qinsight/drift_saturation``, ...; log it as it is),
and ``warnings``, which are also logged when they first appear.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import MissingDependencyError, UsageError
from .image_statistics import STATISTICS, image_statistics
from .rewards import JudgeReward

logger = logging.getLogger("qinsight")

SMALLEST_SPREAD = 1e-9  # a constant baseline: any change is a large one
# the way hacking moves each statistic warned on: +1 up, 0 either way (sharpness: over-sharpened, or
# collapsed). Colourfulness is reported, not warned on: it grows with brightness (its opponent channels are
# differences of values), so a generator that honestly learns brighter images raises it; saturation, a
# ratio, is the colour signal that brightness leaves alone
HACKING_DIRECTION = {"saturation": 1, "sharpness": 0, "blockiness": 1, "grid_energy": 1}


@dataclass
class MonitorReport:
    """One batch's report.

    Attributes:
        step: the batch's number, from 0.
        stats: name -> value, ready for ``wandb.log`` or TensorBoard's ``add_scalar`` (no NaN: a value
            that cannot be measured yet is left out).
        warnings: why hacking is suspected, in words; empty when nothing is.
    """

    step: int
    stats: dict[str, float]
    warnings: list[str] = field(default_factory=list)


class HackingMonitor:
    """Follows scored batches and warns when the reward rises as hacking makes it rise (module docstring).

    Args:
        second: a second judge (a :class:`JudgeReward`, or a judge's name or folder for one) scored on every
            batch; None: none, only the image statistics.
        window: batches the latest state is pooled over.
        baseline: the first batches everything is compared with (default: ``window``).
        rise: how far the reward must rise, in its early spread, before anything is suspected.
        drift: how far a statistic must move the hacking way, in its early spread, to be suspected.
        follow: the least share of the reward's rise the second judge must show.
        min_agreement: the least rank correlation (SRCC) of reward and second judge over the window.
        alpha: the chance a change must be unlikely by (Welch's t-test) to count.
        prefix: the stats' name prefix (``"qinsight/"``).
        **second_options: :class:`JudgeReward`'s, for a second judge given by name.

    Raises:
        UsageError: a window or baseline under 2 batches.
        MissingDependencyError: no scipy (its tests and correlations are scipy's).
    """

    def __init__(
        self,
        second: JudgeReward | str | None = None,
        *,
        window: int = 8,
        baseline: int | None = None,
        rise: float = 0.5,
        drift: float = 1.0,
        follow: float = 0.25,
        min_agreement: float = 0.2,
        alpha: float = 0.01,
        prefix: str = "qinsight/",
        **second_options: Any,
    ) -> None:
        baseline = window if baseline is None else baseline
        if window < 2 or baseline < 2:
            raise UsageError(f"the window and the baseline are at least 2 batches, not {window} and {baseline}")
        try:
            import scipy.stats  # noqa: F401
        except ImportError:
            raise MissingDependencyError("the monitor needs scipy: pip install 'qinsight[eval]'") from None
        if second is not None and not isinstance(second, JudgeReward):
            second = JudgeReward(second, **second_options)
        self.second = second
        self.window, self.baseline = window, baseline
        self.rise, self.drift, self.follow, self.min_agreement = rise, drift, follow, min_agreement
        self.alpha = alpha
        self.prefix = prefix
        self.step = 0
        self._early: dict[str, list[np.ndarray]] = {}  # the first batches' per-input values
        self._recent: deque[dict[str, np.ndarray]] = deque(maxlen=window)
        self._warned: set[str] = set()

    def update(self, images: Any, rewards: Any, second_rewards: Any = None, video: bool = False) -> MonitorReport:
        """Take one scored batch and report on it.

        Args:
            images: the batch the rewards were given for (as the rewards take it).
            rewards: one reward per input (a tensor, array or list).
            second_rewards: the second judge's rewards for these inputs, if you computed them already
                (default: the monitor's second judge scores them; none without one).
            video: whether the inputs are videos (a ``(B, T, ...)`` batch always is).

        Returns:
            The batch's report.
        """
        values = image_statistics(images, video=video or getattr(images, "ndim", None) == 5)
        values["reward"] = _floats(rewards, "rewards")
        if second_rewards is None and self.second is not None:
            second_rewards = self.second.compute(images).rewards
        if second_rewards is not None:
            values["second"] = _floats(second_rewards, "second_rewards")
        counts = {len(v) for v in values.values()}
        if len(counts) != 1:
            raise UsageError(f"{len(values['reward'])} rewards for {len(values['colourfulness'])} inputs")
        report = MonitorReport(self.step, self._batch_stats(values))
        if self.step < self.baseline:
            for name, value in values.items():
                self._early.setdefault(name, []).append(value)
        self._recent.append(values)
        if self.step >= self.baseline + self.window - 1:  # the window holds no early batch
            found = self._compare(report.stats)
            report.warnings = list(found.values())
            self._log(report.step, found)
        report.stats[self.prefix + "hacking_warning"] = float(bool(report.warnings))
        self.step += 1
        return report

    def _batch_stats(self, values: dict[str, np.ndarray]) -> dict[str, float]:
        """The batch's means (and the reward's spread and range), of what could be measured only."""
        stats: dict[str, float] = {}
        reward = _finite(values["reward"])
        if reward.size:
            for name, function in (("mean", np.mean), ("std", np.std), ("min", np.min), ("max", np.max)):
                stats[f"{self.prefix}reward_{name}"] = float(function(reward))
        for name in (*STATISTICS, "second"):
            measured = _finite(values.get(name, np.zeros(0)))
            if measured.size:
                stats[self.prefix + ("second_mean" if name == "second" else name)] = float(measured.mean())
        stats[self.prefix + "unmeasured"] = float(np.sum(~np.isfinite(values["colourfulness"])))
        return stats

    def _compare(self, stats: dict[str, float]) -> dict[str, str]:
        """The warnings of the latest window against the baseline, by what raised them; each change put
        in ``stats``."""
        samples = {name: self._samples(name) for name in self._early}
        measured = {name: pair for name, pair in samples.items() if min(map(len, pair)) >= 2}
        moved = {name: _change(*pair) for name, pair in measured.items()}
        for name, change in moved.items():
            stats[f"{self.prefix}drift_{name}"] = change
        reward_rise = moved.get("reward", np.nan)  # NaN where too little was measured: nothing compares
        if not (reward_rise >= self.rise and self._beyond_chance(measured["reward"], 1)):
            return {}
        warnings = {}
        for name, direction in HACKING_DIRECTION.items():
            change = moved.get(name, np.nan)
            large = (change if direction > 0 else abs(change)) >= self.drift
            if large and self._beyond_chance(measured[name], direction):
                warnings[name] = (
                    f"{name} moved {change:+.2f} (in its early spread) while the reward rose {reward_rise:+.2f}: "
                    f"{_HACK_SIGNS[name]}"
                )
        if "second" in moved:
            agreement = self._agreement()
            if agreement is not None:
                stats[self.prefix + "agreement_srcc"] = agreement
            if not moved["second"] >= self.follow * reward_rise:
                warnings["second"] = (
                    f"the second judge ({self.second.name if self.second else 'given'}) moved "
                    f"{moved['second']:+.2f} while the reward rose {reward_rise:+.2f}: it does not see the gain"
                )
            if agreement is not None and agreement < self.min_agreement:
                warnings["agreement"] = (
                    f"the reward and the second judge agree at SRCC {agreement:.2f} over the last {self.window} "
                    f"batches (under {self.min_agreement:g}): the reward orders images as the second judge does not"
                )
        return warnings

    def _samples(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """The baseline's and the latest window's measured values of one quantity."""
        early = _finite(np.concatenate(self._early[name]))
        return early, _finite(np.concatenate([batch[name] for batch in self._recent]))

    def _beyond_chance(self, samples: tuple[np.ndarray, np.ndarray], direction: int) -> bool:
        """Whether the window's values differ from the baseline's (``samples``: both), up (``direction`` 1)
        or either way (0), by more than chance would make them: Welch's t-test at ``alpha``."""
        from scipy.stats import ttest_ind

        early, recent = samples
        test = ttest_ind(recent, early, equal_var=False, alternative="greater" if direction > 0 else "two-sided")
        return bool(test.pvalue < self.alpha)

    def _agreement(self) -> float | None:
        from ..evaluation.metrics import correlation

        reward = np.concatenate([batch["reward"] for batch in self._recent])
        second = np.concatenate([batch["second"] for batch in self._recent])
        both = np.isfinite(reward) & np.isfinite(second)
        return correlation("srcc", reward[both], second[both])

    def _log(self, step: int, found: dict[str, str]) -> None:
        """Log the warnings that were not there the batch before (a warning that holds is logged once)."""
        for kind, warning in found.items():
            if kind not in self._warned:
                logger.warning("possible reward hacking at batch %d: %s", step, warning)
        self._warned = set(found)


_HACK_SIGNS = {
    "saturation": "over-saturated colour is a known reward hack",
    "sharpness": "over-sharpened texture or collapsing detail is a known reward hack",
    "blockiness": "8x8 blocks or grids are a known reward hack",
    "grid_energy": "a periodic 8-pixel grid is a known reward hack",
}


def _floats(values: Any, name: str) -> np.ndarray:
    if hasattr(values, "detach"):  # a tensor, perhaps on a GPU or in a graph
        values = values.detach().cpu()
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1:
        raise UsageError(f"{name} must be one value per input, not of shape {array.shape}")
    return array


def _change(early: np.ndarray, recent: np.ndarray) -> float:
    """The latest window's mean less the baseline's, in the baseline's spread across its inputs."""
    spread = max(float(early.std()), SMALLEST_SPREAD)
    return float((recent.mean() - early.mean()) / spread)


def _finite(values: np.ndarray) -> np.ndarray:
    return values[np.isfinite(values)]
