"""Q-Insight's GRPO rewards as plain functions with TRL's reward-function signature.

Each takes ``completions`` (strings, or TRL's conversational form ``[{"role": "assistant", "content":
...}]``) and the dataset's columns as keyword lists, one entry per completion, and returns one float
per completion, or None where the reward does not apply to that sample's task (TRL ignores None).

With ``strict=True`` (the default) every reward is the paper's, parsing included: the text between the
FIRST ``<answer>`` and the next ``</answer>`` (no closing tag: no answer), the digits-and-dots run right
after the ``"rating":`` key, the first ``distortion_class`` / ``severity`` pair, the stripped answer text
for comparisons. ``strict=False`` reads answers with the SDK's tolerant parser instead (the last answer
block, JSON, repairs), for users who want to reward what inference will actually understand.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from ..errors import UsageError
from ..judging.parsing import parse_comparison, parse_degradation, parse_score
from ..judging.tasks import TASKS, answer_of_winner, degradation_label

SCORE_EPSILON = 0.35  # the paper's tolerance on the normalised MOS (strict <)

_FIRST_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
_RATING = re.compile(r'"rating"\s*:\s*([\d.]+)')
_DEGRADATION = re.compile(r'"distortion_class"\s*:\s*"([^"]+)".*?"severity"\s*:\s*"([^"]+)"', re.DOTALL)
_JSON_LAYOUT = re.compile(r"<think>\s*\n.*\n\s*</think>\s*\n<answer>\s*\n\{[^{}]*\}\s*\n\s*</answer>\s*", re.DOTALL)
_TEXT_LAYOUT = re.compile(r"<think>\s*\n.*\n\s*</think>\s*\n<answer>\s*\n.*\n\s*</answer>\s*", re.DOTALL)


def completion_text(completion: Any) -> str:
    """The text of one completion, in either of TRL's shapes."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, Sequence) and completion and isinstance(completion[-1], dict):
        content = completion[-1].get("content", "")
        if isinstance(content, list):  # structured content: the text parts, in order
            return "".join(part.get("text", "") for part in content if isinstance(part, dict))
        return str(content)
    raise TypeError(f"a completion must be a string or a list of messages, got {type(completion).__name__}")


def first_answer(text: str) -> str | None:
    """The paper's answer block: between the first <answer> and the next </answer>, stripped."""
    match = _FIRST_ANSWER.search(text)
    return match.group(1).strip() if match else None


def paper_rating(text: str) -> float | None:
    """The rating as the paper's reward reads it; None when there is none or it is not a number."""
    answer = first_answer(text)
    match = _RATING.search(answer) if answer is not None else None
    if match is None:
        return None
    try:
        return float(match.group(1))
    except ValueError:  # "3.5.2", "."
        return None


def paper_degradation(text: str) -> tuple[str, str] | None:
    """The first (distortion_class, severity) pair of the answer block, values stripped."""
    answer = first_answer(text)
    match = _DEGRADATION.search(answer) if answer is not None else None
    return (match.group(1).strip(), match.group(2).strip()) if match else None


def _check_task(task: str) -> str:
    if task not in TASKS:
        raise UsageError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
    return task


def _per_sample(task: Sequence[str], wanted: str, columns: Sequence[Sequence[Any]], reward: Any) -> list[float | None]:
    """``reward(*row)`` for each sample of the ``wanted`` task, None for the others."""
    return [reward(*row) if _check_task(kind) == wanted else None for kind, *row in zip(task, *columns)]


def format_reward(completions: Sequence[Any], task: Sequence[str], **kwargs: Any) -> list[float]:
    """1.0 exactly when a completion has the trained layout (flat JSON answer; any text for comparison)."""
    rewards = []
    for completion, kind in zip(completions, task):
        layout = _TEXT_LAYOUT if _check_task(kind) == "comparison" else _JSON_LAYOUT
        rewards.append(1.0 if layout.fullmatch(completion_text(completion)) else 0.0)
    return rewards


def score_reward(
    completions: Sequence[Any],
    task: Sequence[str],
    mos: Sequence[float | None],
    epsilon: float = SCORE_EPSILON,
    kind: str = "threshold",
    sigma: float = 0.5,
    strict: bool = True,
    **kwargs: Any,
) -> list[float | None]:
    """How close the rating is to the normalised MOS.

    ``kind="threshold"``: the paper's 1.0 when |rating - mos| < epsilon, else 0.0. ``kind="gaussian"``: a
    continuous exp(-error^2 / (2 sigma^2)), which still rewards near misses.
    """
    if kind not in ("threshold", "gaussian"):
        raise UsageError(f"kind must be 'threshold' or 'gaussian', got {kind!r}")

    def reward(completion: Any, target: float) -> float:
        text = completion_text(completion)
        rating = paper_rating(text) if strict else parse_score(text).score
        if rating is None or not math.isfinite(rating):
            return 0.0
        error = rating - float(target)
        if kind == "threshold":
            return 1.0 if abs(error) < epsilon else 0.0
        return math.exp(-(error**2) / (2 * sigma**2))

    return _per_sample(task, "score", (completions, mos), reward)


def degradation_reward(
    completions: Sequence[Any],
    task: Sequence[str],
    distortion_class: Sequence[str | None],
    severity: Sequence[str | None],
    strict: bool = True,
    **kwargs: Any,
) -> list[float | None]:
    """0.25 for the right distortion class, plus 0.75 when the severity is right too ("null" = none)."""

    def reward(completion: Any, label_class: str, label_severity: str) -> float:
        text = completion_text(completion)
        if strict:
            found = paper_degradation(text)
        else:
            parsed = parse_degradation(text)
            found = None if parsed.error else (degradation_label(parsed.distortion), degradation_label(parsed.severity))
        if found is None or found[0] != label_class:
            return 0.0
        return 1.0 if found[1] == label_severity else 0.25

    return _per_sample(task, "degradation", (completions, distortion_class, severity), reward)


def comparison_reward(
    completions: Sequence[Any], task: Sequence[str], answer: Sequence[str], strict: bool = True, **kwargs: Any
) -> list[float | None]:
    """1.0 when the answer is exactly the label: "Image A", "Image B" or "Similar"."""

    def reward(completion: Any, label: str) -> float:
        text = completion_text(completion)
        given = first_answer(text) if strict else answer_of_winner(parse_comparison(text).winner)
        return 1.0 if given is not None and given == label else 0.0

    return _per_sample(task, "comparison", (completions, answer), reward)


def ranking_reward(
    completions: Sequence[Any],
    task: Sequence[str],
    mos: Sequence[float],
    sample_id: Sequence[Any],
    strict: bool = True,
    **kwargs: Any,
) -> list[float | None]:
    """VisualQuality-R1's ranking reward: is each sampled score ordered right against the other images?

    The completions of one image (same ``sample_id``) give its score mean and variance. For a sampled
    score s_i and each other image j, p = Phi((s_i - mean_j) / sqrt(var_i + var_j)) is the model's
    probability that i beats j, g (1, 0.5 or 0) what the MOS says, and the reward is the mean over j of
    sqrt(p g) + sqrt((1 - p)(1 - g)). Only the order of MOS within a batch matters, so data sets with
    different MOS scales can train together. An unreadable score earns 0.
    """

    def read(completion: Any) -> float | None:
        text = completion_text(completion)
        return paper_rating(text) if strict else parse_score(text).score

    ratings = _per_sample(task, "score", (completions,), read)
    groups: dict[Any, list[float]] = defaultdict(list)
    target: dict[Any, float] = {}
    for rating, key, value, sample_task in zip(ratings, sample_id, mos, task):
        if sample_task == "score":
            target[key] = float(value)
            if rating is not None:
                groups[key].append(rating)
    stats = {key: (sum(v) / len(v), sum((x - sum(v) / len(v)) ** 2 for x in v) / len(v)) for key, v in groups.items()}
    rewards: list[float | None] = []
    for rating, key, sample_task in zip(ratings, sample_id, task):
        if sample_task != "score":
            rewards.append(None)
            continue
        others = [other for other in stats if other != key]
        if rating is None or key not in stats or not others:
            rewards.append(0.0)
            continue
        total = 0.0
        for other in others:
            mean_j, var_j = stats[other]
            spread = math.sqrt(stats[key][1] + var_j) or 1e-6
            p = 0.5 * (1 + math.erf((rating - mean_j) / (spread * math.sqrt(2))))
            g = 1.0 if target[key] > target[other] else 0.5 if target[key] == target[other] else 0.0
            total += math.sqrt(p * g) + math.sqrt((1 - p) * (1 - g))
        rewards.append(total / len(others))
    return rewards
