"""A tiny video judge: the tiny checkpoint taught, on the CPU in a few minutes, to answer each VQ-Insight
task about visible properties of synthetic videos, in the judges' formats and with their prompts.

- ``vqinsight-naturalvideo``: the score follows the video's mean brightness (10 + 85 x level, a whole
  number, so fast mode's two digits read it);
- ``vqinsight-aigcvideo``: ``{"spatial": ..., "temporal": ..., "consistency": ...}``, spatial and consistency
  following brightness, temporal falling with flicker (frames alternating brighter and darker);
- ``vqinsight-comp``: "A" or "B", the brighter video (asked in both orders).

The videos are small frame arrays at 2 frames per second, 4 to 10 frames, sized by the family's video rules
like any input (:mod:`qinsight_sdk.io.video_sampling`). For end-to-end tests of video judging:

    python -m qinsight_sdk.testing DIR --trained --video

Training is seeded and the videos fixed, so a build repeats; a built judge is reused from a cache folder
keyed by the recipe's code, the prompts it teaches and the torch and transformers versions.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from ...judging.profiles import VQ_INSIGHT_AIGC, VQ_INSIGHT_COMPARISON, VQ_INSIGHT_NATURAL
from . import tiny_judge
from .tiny_judge import THINK, TRAINING_SEEDS

STEPS, SEED = 450, 0
STEP_TOKENS = 2400  # a batch's rows x its longest row, roughly
PROMPT_TOKENS = 160
TASKS = ("natural", "comparison", "natural", "aigc", "natural", "aigc")
COMPARISON_GAP = 0.15  # the least brightness difference of a taught comparison
MARKER = "qinsight-tiny-video-judge.json"


def video_frames(
    level: float, seed: int, size: tuple[int, int] = (64, 48), count: int = 8, flicker: float = 0.0
) -> Any:
    """uint8 frames ``(count, height, width, 3)`` of mean brightness ``level`` (0..1) with a little texture;
    with ``flicker`` (0..1), every other frame brighter and the others darker by up to a third of the range.
    ``size``: (width, height)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    width, height = size
    swing = np.where(np.arange(count) % 2 == 0, 1.0, -1.0)[:, None, None, None] * flicker * 85
    texture = rng.integers(-10, 11, (count, height, width, 3))
    return np.clip(texture + round(level * 255) + swing, 0, 255).astype(np.uint8)


def natural_score(level: float) -> int:
    """The score the tiny judge learns for a video of mean brightness ``level``."""
    return round(10 + 85 * level)


def temporal_score(flicker: float) -> int:
    """The temporal score it learns for a video with ``flicker`` (0: steady, 1: strong)."""
    return round(90 - 80 * flicker)


def _clip(level: float, seed: int, rng: random.Random, flicker: float = 0.0) -> Any:
    from ...io.videos import Video, load_video

    size = (rng.randint(28, 160), rng.randint(28, 160))
    return load_video(Video(video_frames(level, seed, size, rng.choice((4, 6, 8, 10)), flicker), fps=2.0))


def _example(kind: str, rng: random.Random, seed: int) -> list[tuple[list[dict[str, Any]], list[Any], str]]:
    if kind == "natural":
        level = rng.uniform(0.02, 0.98)
        return [(VQ_INSIGHT_NATURAL.messages("score"), [_clip(level, seed, rng)], str(natural_score(level)))]
    if kind == "aigc":
        level, flicker = rng.uniform(0.1, 0.9), rng.uniform(0.0, 1.0)
        spatial, temporal = natural_score(level), temporal_score(flicker)
        answer = f'{{"spatial": {spatial:.2f}, "temporal": {temporal:.2f}, "consistency": {spatial:.2f}}}'
        return [(VQ_INSIGHT_AIGC.messages("score"), [_clip(level, seed, rng, flicker)], answer)]
    first, second = rng.uniform(0.03, 0.97), rng.uniform(0.03, 0.97)
    if abs(first - second) < COMPARISON_GAP:
        second = (first + 0.5) % 1.0
    clips = [_clip(first, seed, rng), _clip(second, seed + 1, rng)]
    conversation = VQ_INSIGHT_COMPARISON.messages("comparison")
    better = "A" if first > second else "B"
    return [(conversation, clips, better), (conversation, clips[::-1], "B" if better == "A" else "A")]


def _examples(step: int) -> list[tuple[list[dict[str, Any]], list[Any], str]]:
    """One training batch, seeded: examples in turn from a seeded start, as many as fit :data:`STEP_TOKENS`."""
    rng = random.Random(SEED * 1_000_003 + step)
    batch: list[tuple[list[dict[str, Any]], list[Any], str]] = []
    longest, start = 0, rng.randrange(len(TASKS))
    for index in range(16):
        seed = TRAINING_SEEDS + (step * 16 + index) * 3  # videos of seeds the tests never use
        group = _example(TASKS[(start + index) % len(TASKS)], rng, seed)
        longest = max(longest, PROMPT_TOKENS + sum(clip.tokens for clip in group[0][1]))
        if batch and longest * (len(batch) + len(group)) > STEP_TOKENS:
            break
        batch.extend(group)
    return [(conversation, clips, f"{THINK}<answer>{answer}</answer>") for conversation, clips, answer in batch]


def recipe_files() -> tuple[Path, ...]:
    """The code that makes the judge: this module, the image judge's training loop, the random checkpoint
    and the video rules its inputs follow."""
    from ...io import video_sampling, videos

    return (Path(__file__), *tiny_judge.recipe_files(), Path(video_sampling.__file__), Path(videos.__file__))


def cache_key() -> str:
    """The recipe's code, the conversations it teaches and the versions."""
    return tiny_judge.recipe_key(
        recipe_files(),
        [
            VQ_INSIGHT_NATURAL.messages("score"),
            VQ_INSIGHT_AIGC.messages("score"),
            VQ_INSIGHT_COMPARISON.messages("comparison"),
        ],
    )


def build_tiny_video_judge(folder: str | Path, progress: bool = False) -> Path:
    """Write the trained tiny video judge into ``folder`` (created if needed) and return its path. Its
    profile file names the natural-video judge; ask the others by name (``profile="vqinsight-comp"``).

    Args:
        folder: where to write it.
        progress: show a progress bar of the training steps on standard error.

    Returns:
        ``folder``, as a path.
    """
    from .tiny import build_tiny_checkpoint

    folder = Path(folder)
    build_tiny_checkpoint(folder, seed=SEED)
    tiny_judge._train(folder, progress, _examples, STEPS, "the tiny video judge")
    VQ_INSIGHT_NATURAL.save(folder)
    (folder / MARKER).write_text(json.dumps({"key": cache_key()}) + "\n", encoding="utf-8")
    return folder


def cached_tiny_video_judge(cache: str | Path) -> Path:
    """The trained tiny video judge in ``cache``, built there first if this recipe and these versions have none."""
    return tiny_judge.cached_build(Path(cache) / f"tiny-video-judge-{cache_key()}", MARKER, build_tiny_video_judge)
