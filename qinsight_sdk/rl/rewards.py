"""Rewards for generators: a judge's verdict on generated images or videos, in the shapes RL trainers call.

A :class:`JudgeReward` wraps one judge (Q-Insight's fast score, RALI, VisualQuality-R1, a VQ-Insight video
judge, any judge of yours) and is called the way each framework calls its rewards, without importing them:

- Flow-GRPO, DiffusionNFT, DDPO (and TRL's DDPOTrainer): ``reward(images, prompts, metadata) -> (rewards,
  info)``, images as a ``(B, C, H, W)`` float tensor in [0, 1] or a ``(B, H, W, C)`` uint8 array, videos as
  ``(B, T, C, H, W)``;
- Flow-Factory: :meth:`JudgeReward.pointwise` (a batch) and :meth:`JudgeReward.groupwise` (one prompt's
  group, ranked together), taking PIL images or ``(C, H, W)`` tensors, and videos as lists of frames or
  ``(T, C, H, W)`` tensors;
- loops of your own (DanceGRPO's style: one sample or file at a time): :meth:`JudgeReward.compute`.

:class:`CombinedReward` weighs several (``{"q-insight": 1.0, "rali": 0.5}``) and reports each part and the
weighted sum, as Flow-GRPO's ``multi_score`` does. Rewards that name the same checkpoint with the same
options share one loaded judge, and one lock: trainers call rewards from thread pools, and a judge answers
one batch at a time. Every form has an ``async`` twin that runs it in a worker thread.

A reward is the judge's own (:meth:`~qinsight_sdk.judging.judge.QualityJudge.reward`): the fast score
mapped onto [0, 1], deterministic and independent of the batch; an input that cannot be judged gets 0.0
and its error in the info, never an exception that stops the trainer.
"""

from __future__ import annotations

import asyncio
import os
import threading
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..backends.checkpoints import DEFAULT_MODEL
from ..errors import UsageError
from ..io.images import split_inputs
from ..io.videos import Video, split_videos
from ..judging.judge import QualityJudge
from ..judging.profiles import PROFILES
from ..judging.results import Ranking, ResultCallback, ScoreResult

_SHARED: dict[tuple[str, str | None, str], QualityJudge] = {}  # loaded judges, by checkpoint and options
_LOADING = threading.Lock()
_LOCKS: weakref.WeakKeyDictionary[QualityJudge, threading.Lock] = weakref.WeakKeyDictionary()


@dataclass
class RewardScores:
    """One reward's verdict on a batch.

    Attributes:
        rewards: float32, one per input in [0, 1] (0.0 where it could not be judged).
        scores: each input's score on the judge's own scale (1-5, 0-100 for video judges), None on error.
        errors: why each input could not be judged, else None.
    """

    rewards: np.ndarray
    scores: list[float | None]
    errors: list[str | None]

    def info(self) -> dict[str, Any]:
        """What a trainer may log beside the rewards: the scores and the errors, one per input."""
        return {"scores": self.scores, "errors": self.errors}


@dataclass
class RewardOutput:
    """Flow-Factory's reward model output, field for field: ``rewards`` one per input, ``extra_info`` a dict."""

    rewards: np.ndarray
    extra_info: dict[str, Any] = field(default_factory=dict)


def judge_source(name: str | Path) -> tuple[str, str | None]:
    """Where a judge's weights are: a built-in judge's name (a profile: ``q-insight``, ``rali``,
    ``visualquality-r1``, ``vqinsight-naturalvideo``, ...) gives its Hugging Face id and subfolder; a folder or
    any other id is taken as it is.

    Args:
        name: a judge's name, a local folder or a Hugging Face id.

    Returns:
        ``(model, subfolder)`` for :meth:`QualityJudge.from_pretrained`.
    """
    text = str(name)
    profile = PROFILES.get(text)
    if profile is None or os.path.exists(text):
        return text, None
    if profile.subfolder is not None:
        return DEFAULT_MODEL, profile.subfolder
    if profile.hub_ids:
        return profile.hub_ids[0], None
    raise UsageError(f"the judge {text!r} has no released weights: give its folder or Hugging Face id")


def shared_judge(judge: str | Path | QualityJudge = "q-insight", **options: Any) -> QualityJudge:
    """A judge loaded once per process: every call naming the same weights with the same options gets the
    same object (a loaded judge passed in is returned as it is).

    Args:
        judge: a built-in judge's name, a folder, a Hugging Face id, or a loaded judge.
        **options: :meth:`QualityJudge.from_pretrained`'s (``subfolder``, ``device``, ``dtype``, ...).

    Returns:
        The loaded judge.
    """
    if isinstance(judge, QualityJudge):
        return judge
    model, subfolder = judge_source(judge)
    subfolder = options.pop("subfolder", subfolder)
    key = (model, subfolder, repr(sorted(options.items())))
    with _LOADING:
        if key not in _SHARED:
            _SHARED[key] = QualityJudge.from_pretrained(model, subfolder, **options)
        return _SHARED[key]


def _lock_of(judge: QualityJudge) -> threading.Lock:
    with _LOADING:
        return _LOCKS.setdefault(judge, threading.Lock())


class JudgeReward:
    """A judge as a reward for generators; see the module's docstring for the conventions it answers in.

    Args:
        judge: a built-in judge's name (default ``"q-insight"``), a folder, a Hugging Face id, or a loaded
            :class:`QualityJudge`; named ones are loaded once per process (:func:`shared_judge`).
        dimension: for VQ-Insight's AIGC judge, the dimension rewarded (``spatial``, ``temporal`` or
            ``consistency``; default: their mean).
        fps: the frame rate of videos given as frames (tensors, arrays, lists), which carry none
            (default: the judge's assumption for frames without a rate).
        batch_size: inputs per batch (default: the judge's).
        name: what reports call it (default: the judge's name as given, else its profile's).
        **load_options: :meth:`QualityJudge.from_pretrained`'s, for a judge given by name.
    """

    def __init__(
        self,
        judge: str | Path | QualityJudge = "q-insight",
        *,
        dimension: str | None = None,
        fps: float | None = None,
        batch_size: int | None = None,
        name: str | None = None,
        **load_options: Any,
    ) -> None:
        self.judge = shared_judge(judge, **load_options)
        known = self.judge.profile.dimensions
        if dimension is not None and dimension not in known:
            raise UsageError(
                f"{self.judge.profile.name!r} scores no dimension {dimension!r} (its dimensions: "
                f"{', '.join(known) or 'none'})"
            )
        if fps is not None and not (np.isfinite(fps) and fps > 0):
            raise UsageError(f"fps must be a positive number, not {fps!r}")
        self.dimension = dimension
        self.fps = fps
        self.batch_size = batch_size
        given = str(judge) if isinstance(judge, str) and judge in PROFILES else self.judge.profile.name
        self.name = name or (given if dimension is None else f"{given}/{dimension}")
        self._lock = _lock_of(self.judge)

    def compute(self, samples: Any, on_result: ResultCallback | None = None) -> RewardScores:
        """The reward of each input: the core every convention calls.

        Args:
            samples: images (a ``(B, C, H, W)`` or ``(B, H, W, C)`` batch, a list of PIL images, arrays,
                tensors, paths or bytes) for an image judge; videos (a ``(B, T, C, H, W)`` batch, a list of
                files, frame lists or ``(T, C, H, W)`` tensors) for a video judge.
            on_result: called as ``on_result(index, score_result)`` once per input, as the judge's methods do.

        Returns:
            The rewards, scores and errors, one per input, in order.

        Raises:
            UsageError: videos given to an image judge.
        """
        return self.scores_of(self.results(samples, on_result))

    def scores_of(self, results: Sequence[ScoreResult]) -> RewardScores:
        """This reward's verdict from the judge's score results (its dimension's, where it has one)."""
        scores = [
            r.score if self.dimension is None or r.dimensions is None else r.dimensions[self.dimension] for r in results
        ]
        return RewardScores(
            np.array([self.judge.reward_of(r, self.dimension) for r in results], dtype=np.float32),
            scores,
            [r.error for r in results],
        )

    def results(self, samples: Any, on_result: ResultCallback | None = None) -> list[ScoreResult]:
        """The judge's score results for the inputs, judged as :meth:`QualityJudge.reward` judges them,
        one batch at a time per judge however many threads call."""
        items = self._items(samples)
        found: dict[int, ScoreResult] = {}

        def keep(index: int, result: ScoreResult) -> None:
            found[index] = result
            if on_result is not None:
                on_result(index, result)

        with self._lock:
            self.judge.reward(items, batch_size=self.batch_size, on_result=keep)
        return [found[i] for i in range(len(items))]

    def __call__(
        self, images: Any, prompts: Sequence[str] | None = None, metadata: Any = None, **options: Any
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Flow-GRPO's, DiffusionNFT's and DDPO's convention: ``(rewards, info)``.

        Args:
            images: the batch, as :meth:`compute` takes it.
            prompts: the prompts (judges rate quality without them; taken for the convention).
            metadata: per-prompt metadata (likewise).
            **options: Flow-GRPO's ``only_strict`` is taken; ``ref_images`` is refused (these judges
                score without a reference).

        Returns:
            float32 rewards, one per input, and the info (``scores``, ``errors``).
        """
        _check_options(options)
        scores = self.compute(images)
        return scores.rewards, scores.info()

    def pointwise(self, prompt: Any = None, image: Any = None, video: Any = None, **inputs: Any) -> RewardOutput:
        """Flow-Factory's pointwise reward model: a batch in, one reward per input.

        Args:
            prompt: the prompts (taken for the convention).
            image: the images (for an image judge).
            video: the videos (for a video judge).
            **inputs: Flow-Factory's other inputs (``audio``, ``condition_images``, ...), not judged.

        Returns:
            The rewards and, as ``extra_info``, the scores and errors.
        """
        scores = self.compute(self._media(image, video))
        return RewardOutput(scores.rewards, scores.info())

    def groupwise(
        self,
        prompt: Any = None,
        image: Any = None,
        video: Any = None,
        strategy: str = "tournament",
        pool: int | None = None,
        **inputs: Any,
    ) -> RewardOutput:
        """Flow-Factory's groupwise reward model: one prompt's group ranked together, as
        :meth:`QualityJudge.rank` ranks it, the best rewarded 1 and the worst 0 (evenly between; an input
        that could not be judged 0).

        Args:
            prompt: the group's prompt (taken for the convention).
            image: the group's images (for an image judge).
            video: the group's videos (for a video judge).
            strategy: ``tournament``, ``hybrid`` or ``score``, as for :meth:`QualityJudge.rank`.
            pool: the finalists a hybrid ranking compares pairwise (default: the judge's).
            **inputs: Flow-Factory's other inputs, not judged.

        Returns:
            The rewards and, as ``extra_info``, the order (best first), the comparisons asked and the errors.
        """
        items = self._items(self._media(image, video))
        options: dict[str, Any] = {} if pool is None else {"pool": pool}
        with self._lock:
            ranking = self.judge.rank(items, strategy=strategy, batch_size=self.batch_size, **options)
        return RewardOutput(
            rank_rewards(ranking, len(items)),
            {
                "order": ranking.order,
                "comparisons": ranking.comparisons,
                "errors": [ranking.errors.get(i) for i in range(len(items))],
            },
        )

    async def acompute(self, samples: Any) -> RewardScores:
        """:meth:`compute` in a worker thread, for trainers that await their rewards."""
        return await asyncio.to_thread(self.compute, samples)

    async def acall(self, *args: Any, **options: Any) -> Any:
        """:meth:`__call__` in a worker thread, given the same arguments."""
        return await asyncio.to_thread(self.__call__, *args, **options)

    def _media(self, image: Any, video: Any) -> Any:
        """The input this judge takes, of Flow-Factory's ``image`` and ``video``."""
        wanted, other = (video, image) if self.judge.judges_video else (image, video)
        if wanted is None:
            media = self.judge.profile.media
            given = "videos" if other is not None and media == "image" else "images" if other is not None else "nothing"
            raise UsageError(f"the reward {self.name!r} judges {media}s, and was given {given}")
        return wanted

    def _items(self, samples: Any) -> list[Any]:
        """The inputs one by one, as the judge takes them (videos given as frames with this reward's fps)."""
        if not self.judge.judges_video:
            if getattr(samples, "ndim", None) == 5:
                raise UsageError(
                    f"the reward {self.name!r} judges images, and was given a batch of videos "
                    f"{tuple(samples.shape)}: use a video judge (vqinsight-naturalvideo, say)"
                )
            return split_inputs(samples)[0]
        videos = split_videos(samples)[0]
        if self.fps is None:
            return videos
        return [v if isinstance(v, (str, os.PathLike, bytes, Video)) else Video(v, self.fps) for v in videos]


def rank_rewards(ranking: Ranking, count: int) -> np.ndarray:
    """Rewards from a ranking: the best 1, the worst 0, evenly between; one alone 1; unjudged ones 0. In a
    tournament, images knocked out in the same round are tied, and share their places' mean reward.

    Args:
        ranking: the group's ranking (:meth:`QualityJudge.rank`).
        count: how many inputs there were.

    Returns:
        float32 rewards, one per input.
    """
    rewards = np.zeros(count, dtype=np.float32)
    judged = [(i, s) for i, s in zip(ranking.order, ranking.scores) if i not in ranking.errors]
    places = {
        index: 1.0 if len(judged) == 1 else 1.0 - place / (len(judged) - 1) for place, (index, _) in enumerate(judged)
    }
    for index, score in judged:
        tied = [places[i] for i, s in judged if s == score] if ranking.strategy == "tournament" else [places[index]]
        rewards[index] = np.mean(tied)
    return rewards


@dataclass
class CombinedScores:
    """A combined reward's verdict: each part's and the weighted sum.

    Attributes:
        parts: each part's verdict, by name.
        weights: each part's weight, by name.
        total: float32, the weighted sum of the parts' rewards, one per input.
    """

    parts: dict[str, RewardScores]
    weights: dict[str, float]
    total: np.ndarray


class CombinedReward:
    """A weighted sum of rewards, each part reported: ``CombinedReward({"q-insight": 1.0, "rali": 0.5})``.

    Parts naming the same weights with the same options share one loaded judge; parts that differ only in
    the AIGC judge's dimension are judged once.

    Args:
        weights: part -> weight; a part is a built-in judge's name, a folder, an id, or a :class:`JudgeReward`.
        **options: :class:`JudgeReward`'s (``fps``, ``batch_size``) and ``from_pretrained``'s (``device``, ...)
            for the parts given by name.

    Raises:
        UsageError: no parts, a weight that is not a finite number, or two parts of one name.
    """

    def __init__(self, weights: Mapping[str | JudgeReward, float], **options: Any) -> None:
        if not weights:
            raise UsageError("a combined reward needs at least one part")
        self.parts: dict[str, JudgeReward] = {}
        self.weights: dict[str, float] = {}
        for part, weight in weights.items():
            reward = part if isinstance(part, JudgeReward) else JudgeReward(part, **options)
            if reward.name in self.parts:
                raise UsageError(f"two parts are named {reward.name!r}: give one a name (JudgeReward(..., name=))")
            if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not np.isfinite(weight):
                raise UsageError(f"the weight of {reward.name!r} must be a finite number, not {weight!r}")
            self.parts[reward.name], self.weights[reward.name] = reward, float(weight)

    def compute(self, samples: Any) -> CombinedScores:
        """Each part's verdict on the inputs and the weighted sum.

        Args:
            samples: the inputs, as :meth:`JudgeReward.compute` takes them.

        Returns:
            The parts, their weights and the total.
        """
        judged: dict[tuple[int, float | None, int | None], list[ScoreResult]] = {}
        parts = {}
        for name, reward in self.parts.items():
            key = (id(reward.judge), reward.fps, reward.batch_size)  # the same judgement: judged once
            if key not in judged:
                judged[key] = reward.results(samples)
            parts[name] = reward.scores_of(judged[key])
        total = np.sum([self.weights[name] * part.rewards for name, part in parts.items()], axis=0)
        return CombinedScores(parts, dict(self.weights), total)

    def __call__(
        self, images: Any, prompts: Sequence[str] | None = None, metadata: Any = None, **options: Any
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Flow-GRPO's ``multi_score`` convention: ``({part: rewards, ..., "avg": weighted sum}, info)``
        (``avg`` is the name Flow-GRPO's trainers read the weighted sum by).

        Args:
            images: the batch, as :meth:`JudgeReward.compute` takes it.
            prompts: the prompts (taken for the convention).
            metadata: per-prompt metadata (likewise).
            **options: as for :meth:`JudgeReward.__call__`.

        Returns:
            Each part's rewards and the weighted sum, and the info: each part's scores and errors.
        """
        _check_options(options)
        combined = self.compute(images)
        rewards = {name: part.rewards for name, part in combined.parts.items()}
        return {**rewards, "avg": combined.total}, {name: part.info() for name, part in combined.parts.items()}

    def pointwise(self, prompt: Any = None, image: Any = None, video: Any = None, **inputs: Any) -> RewardOutput:
        """Flow-Factory's pointwise convention: the weighted sum, each part's rewards in ``extra_info``."""
        first = next(iter(self.parts.values()))
        combined = self.compute(first._media(image, video))
        return RewardOutput(combined.total, {name: part.rewards.tolist() for name, part in combined.parts.items()})

    async def acompute(self, samples: Any) -> CombinedScores:
        """:meth:`compute` in a worker thread."""
        return await asyncio.to_thread(self.compute, samples)

    async def acall(self, *args: Any, **options: Any) -> Any:
        """:meth:`__call__` in a worker thread, given the same arguments."""
        return await asyncio.to_thread(self.__call__, *args, **options)


def _check_options(options: Mapping[str, Any]) -> None:
    """Flow-GRPO's extra keywords: ``only_strict`` is taken, a reference is refused, anything else named."""
    if options.get("ref_images") is not None:
        raise UsageError("these rewards judge without a reference image: ref_images cannot be used")
    unknown = sorted(set(options) - {"only_strict", "ref_images"})
    if unknown:
        raise UsageError(f"a reward takes no option {', '.join(unknown)}")
