"""Judge profiles: the model-side half of the task table. A new judge is one entry here.

A profile says which checkpoint family a judge loads, how it asks each task it can do (the conversation)
and how it reads the answers (the parser), and where its answer is forced for a fast score. Q-Insight's
two released models are the first entries; both were trained on the same prompts, so they share them
and differ in the subfolder of the released repository that holds them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from . import prompts
from .checkpoints import COMPARISON_SUBFOLDER, QWEN25_VL, SCORE_SUBFOLDER
from .errors import UsageError
from .parsing import parse_comparison, parse_degradation, parse_score
from .prompts import Message, PromptOrder


@dataclass(frozen=True)
class TaskPrompt:
    """How a profile asks one task, and reads the answer into the task's parsed type (never raising)."""

    messages: Callable[[PromptOrder, bool], list[Message]]  # (image order, with a reference) -> conversation
    parse: Callable[[str], Any]


@dataclass(frozen=True)
class JudgeProfile:
    """One judge: its checkpoint family, its prompts and parsers per task, and its fast-score prefix."""

    name: str
    tasks: Mapping[str, TaskPrompt]
    model_type: str = QWEN25_VL                 # the checkpoint's config.json model_type
    fast_score_prefix: str | None = None        # the answer up to a rating's digits; None: no fast scores
    subfolder: str | None = None                # where the released repository keeps these weights
    compares_with_reference: bool = False       # trained to compare two images against a reference
    rating_key: str | None = None               # regex an answer matches just before its rating's digits
    description: str = field(default="", compare=False)

    def prompt(self, task: str) -> TaskPrompt:
        if task not in self.tasks:
            raise UsageError(f"judge profile {self.name!r} cannot do {task} (it does {', '.join(self.tasks)})")
        return self.tasks[task]

    def fast_prefix(self) -> str:
        if self.fast_score_prefix is None:
            raise UsageError(f"judge profile {self.name!r} has no fast score mode; use mode='reason'")
        return self.fast_score_prefix


_QINSIGHT_TASKS = {
    "score": TaskPrompt(lambda order, _: prompts.score_messages(order), parse_score),
    "degradation": TaskPrompt(lambda order, _: prompts.degradation_messages(order), parse_degradation),
    "comparison": TaskPrompt(lambda _, with_reference: prompts.comparison_messages(with_reference),
                             parse_comparison),
}

PROFILES: dict[str, JudgeProfile] = {}


QINSIGHT_RATING_KEY = r"""["']?rating["']?\s*[:=]\s*"""   # {"rating": 3.85}, as trained


def register_profile(profile: JudgeProfile) -> JudgeProfile:
    """Add a profile to the table (a later entry with the same name replaces the earlier one)."""
    PROFILES[profile.name] = profile
    return profile


QINSIGHT = register_profile(JudgeProfile(
    "q-insight", _QINSIGHT_TASKS, fast_score_prefix=prompts.FAST_SCORE_ANSWER_PREFIX, subfolder=SCORE_SUBFOLDER,
    rating_key=QINSIGHT_RATING_KEY,
    description="Q-Insight's score and degradation model (also the paper's zero-shot comparisons)"))
QINSIGHT_COMPARISON = register_profile(JudgeProfile(
    "q-insight-comparison", _QINSIGHT_TASKS, fast_score_prefix=prompts.FAST_SCORE_ANSWER_PREFIX,
    subfolder=COMPARISON_SUBFOLDER, compares_with_reference=True, rating_key=QINSIGHT_RATING_KEY,
    description="Q-Insight's reference-based comparison model"))


def find_profile(name: str | JudgeProfile | None = None, subfolder: str | None = None) -> JudgeProfile:
    """A profile by name; without one, the profile whose released subfolder is ``subfolder``, else Q-Insight."""
    if isinstance(name, JudgeProfile):
        return name
    if name is not None:
        if name not in PROFILES:
            raise UsageError(f"unknown judge profile {name!r}; known: {', '.join(PROFILES)}")
        return PROFILES[name]
    return next((p for p in PROFILES.values() if subfolder and p.subfolder == subfolder), QINSIGHT)
