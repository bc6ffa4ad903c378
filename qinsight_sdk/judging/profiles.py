"""Judge profiles: the model-side half of the task table. A new judge is one entry here, or one file.

A profile says how a judge is asked each task it can do (the conversation, image slots included, and
the chat template's options), how its answer is read (a named reader, or a pattern), the scale it
rates on, and where its answer is forced for a fast score. It is data, not code, so that a fine-tuned
judge can carry its own as a small JSON file beside its weights (:data:`PROFILE_FILE`, written by
``qinsight train``) and a user can write one for a judge qinsight has never seen.

Which profile a checkpoint gets (:func:`choose_profile`): the one asked for (a name or a file), else the
file beside the weights, else the profile of a known Hugging Face id or released subfolder, else
Q-Insight's.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

from ..backends.checkpoints import COMPARISON_SUBFOLDER, PROFILE_FILE, QWEN25_VL, SCORE_SUBFOLDER
from ..errors import UsageError
from . import prompts
from .parsing import (
    FULL_SCALE,
    parse_comparison,
    parse_degradation,
    parse_first_number,
    parse_score,
    parse_video_comparison,
    parse_video_dimensions,
    parse_video_score,
    pattern_reader,
)
from .prompts import IMAGE, VIDEO, Message, PromptOrder

FILE_FORMAT = 1  # the version of that file's layout
IMAGES_PER_PROMPT = {"score": 1, "degradation": 1, "comparison": 2}

# Answer readers by task and name; a score may also be read by a pattern (``answer_pattern``).
ANSWER_READERS: dict[str, dict[str, Callable[..., Any]]] = {
    "score": {
        "q-insight": parse_score,
        "last-answer-first-number": parse_first_number,
        "vq-insight-number": parse_video_score,
        "vq-insight-dimensions": parse_video_dimensions,
    },
    "degradation": {"q-insight": parse_degradation},
    "comparison": {"q-insight": parse_comparison, "vq-insight": parse_video_comparison},
}
MEDIA = ("image", "video")  # what a judge looks at; a video judge's prompts hold VIDEO slots
# How fast scores read a rating's digits: "d.dd" a 1-5 rating with two decimals (Q-Insight, VisualQuality-R1),
# "dd" a two-digit rating from 10 to 99 (VQ-Insight's 0-100 scores)
FAST_RATINGS = {"d.dd": FULL_SCALE, "dd": (0.0, 100.0)}


@dataclass(frozen=True)
class TaskPrompt:
    """How a profile asks one task, and how the answer is read.

    Attributes:
        content: the user turn: texts and :data:`IMAGE` slots (:data:`VIDEO` for a video judge), in order.
        answer: the reader of the answer, named in :data:`ANSWER_READERS` (``"q-insight"``: Q-Insight's
            formats; for scores also ``"last-answer-first-number"``).
        answer_pattern: for scores, a regular expression whose first group is the rating (its last match
            in the answer counts), instead of ``answer``.
        with_reference: for comparison against a reference, its own user turn.
    """

    content: tuple[str, ...]
    answer: str = "q-insight"
    answer_pattern: str | None = None
    with_reference: tuple[str, ...] | None = None

    def turn(self, with_reference: bool) -> tuple[str, ...]:
        """The user turn to ask.

        Args:
            with_reference: whether a reference image comes first (comparison against a reference).

        Returns:
            ``with_reference``'s turn where asked and given, else ``content``.
        """
        return self.with_reference if with_reference and self.with_reference else self.content


@dataclass(frozen=True)
class JudgeProfile:
    """One judge: how it is asked and read per task, its rating scale, and its fast-score prefix.

    Attributes:
        name: how it is chosen (``--judge``, ``profile=``) and recorded.
        tasks: task (``"score"``, ``"degradation"``, ``"comparison"``) -> how it is asked.
        system_prompt: the system turn; None: the chat template's own (Qwen's "helpful assistant").
        chat_template_options: keyword arguments for the chat template, such as ``add_vision_id``.
        rating_range: the scale it rates on; image results are mapped onto 1-5, video results keep it.
        reasons: whether its answers hold reasoning.
        fast_score: what fast scores ask (default: the score prompt).
        fast_score_prefix: the answer up to a rating's digits, forced in fast mode; None: no fast scores.
        rating_key: a regular expression an answer matches just before its rating's digits (for the
            expected score of reason mode).
        compares_with_reference: trained to compare two images against a reference.
        model_type: the checkpoint's config.json ``model_type`` (its model family).
        media: ``"image"`` or ``"video"``: what it judges (a video judge takes videos wherever an image
            judge takes images).
        fast_rating: how fast scores read its rating's digits: ``"d.dd"`` (1-5 with two decimals) or
            ``"dd"`` (two digits, 10 to 99, on a 0-100 scale).
        subfolder: where a released repository keeps it.
        hub_ids: Hugging Face ids that hold this judge.
        description: one line about it, for lists.

    Raises:
        UsageError: a profile that could not work (an empty task list, a bad scale or pattern).
    """

    name: str
    tasks: Mapping[str, TaskPrompt]
    system_prompt: str | None = None
    chat_template_options: Mapping[str, Any] = field(default_factory=dict)
    rating_range: tuple[float, float] = FULL_SCALE
    reasons: bool = True
    fast_score: TaskPrompt | None = None
    fast_score_prefix: str | None = None
    rating_key: str | None = None
    compares_with_reference: bool = False
    model_type: str = QWEN25_VL
    media: str = "image"
    fast_rating: str = "d.dd"
    subfolder: str | None = field(default=None, compare=False)
    hub_ids: tuple[str, ...] = field(default=(), compare=False)
    description: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        _check_profile(self)

    def prompt(self, task: str) -> TaskPrompt:
        """How ``task`` is asked.

        Args:
            task: ``"score"``, ``"degradation"`` or ``"comparison"``.

        Returns:
            Its prompt.

        Raises:
            UsageError: this judge does not do ``task``.
        """
        if task not in self.tasks:
            raise UsageError(f"judge profile {self.name!r} cannot do {task} (it does {', '.join(self.tasks)})")
        return self.tasks[task]

    def fast_prefix(self) -> str:
        """The answer forced up to the rating in fast mode; a ``UsageError`` for a judge without one."""
        if self.fast_score_prefix is None:
            raise UsageError(f"judge profile {self.name!r} has no fast score mode; use mode='reason'")
        return self.fast_score_prefix

    def messages(
        self, task: str, order: PromptOrder | str | None = None, with_reference: bool = False, fast: bool = False
    ) -> list[Message]:
        """The conversation asking ``task``.

        Args:
            task: ``"score"``, ``"degradation"`` or ``"comparison"``.
            order: moves a single image before or after the text (the official Q-Insight demo put it
                after); None keeps the profile's own place.
            with_reference: ask the comparison against a reference image (which comes first).
            fast: ask what fast scores ask.

        Returns:
            The chat messages, with image slots where the images go.
        """
        prompt = (self.fast_score or self.prompt("score")) if fast else self.prompt(task)
        turn = list(prompt.turn(with_reference))
        if order is not None and IMAGES_PER_PROMPT[task] == 1 and self.media == "image":
            texts = [part for part in turn if part != IMAGE]
            turn = [IMAGE, *texts] if PromptOrder(order) is PromptOrder.IMAGE_FIRST else [*texts, IMAGE]
        user = {
            "role": "user",
            "content": [_part(part) for part in turn],
        }
        system = [] if self.system_prompt is None else [{"role": "system", "content": self.system_prompt}]
        return [*system, user]

    @property
    def slot(self) -> str:
        """The placeholder its prompts hold where the judged media go: :data:`IMAGE` or :data:`VIDEO`."""
        return VIDEO if self.media == "video" else IMAGE

    @property
    def dimensions(self) -> tuple[str, ...]:
        """The dimensions its score answer names (VQ-Insight's AIGC judge's three), else none."""
        score = self.tasks.get("score")
        return prompts.VQ_AIGC_DIMENSIONS if score is not None and score.answer == "vq-insight-dimensions" else ()

    def own_order(self) -> PromptOrder:
        """Where the profile's score (else first) prompt puts its image."""
        prompt = self.tasks.get("score") or next(iter(self.tasks.values()))
        return PromptOrder.IMAGE_FIRST if prompt.content[0] == IMAGE else PromptOrder.TEXT_FIRST

    def parser(self, task: str) -> Callable[[str], Any]:
        """The task's answer reader, on this profile's rating scale.

        A judge that does not reason reports no reasoning: text around its answer is not an explanation of it.

        Args:
            task: ``"score"``, ``"degradation"`` or ``"comparison"``.

        Returns:
            A function from the answer's text to its result, which never raises (a result's ``error`` says
            what could not be read).
        """
        prompt = self.prompt(task)
        if prompt.answer_pattern is not None:
            reader = pattern_reader(prompt.answer_pattern, self.rating_range)
        elif task == "score":
            reader = partial(ANSWER_READERS[task][prompt.answer], rating_range=self.rating_range)
        else:
            reader = ANSWER_READERS[task][prompt.answer]
        return reader if self.reasons else lambda text: replace(reader(text), reasoning=None)

    # -- as a file ------------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The profile as :data:`PROFILE_FILE` holds it."""
        data: dict[str, Any] = {
            "qinsight_judge_profile": FILE_FORMAT,
            "name": self.name,
            "description": self.description,
            "system_prompt": self.system_prompt,
            "chat_template_options": dict(self.chat_template_options),
            "rating_range": list(self.rating_range),
            "reasons": self.reasons,
            "tasks": {task: _prompt_dict(p) for task, p in self.tasks.items()},
        }
        optional = {
            "fast_score": _prompt_dict(self.fast_score) if self.fast_score else None,
            "fast_score_prefix": self.fast_score_prefix,
            "rating_key": self.rating_key,
            "compares_with_reference": self.compares_with_reference or None,
            "model_type": self.model_type if self.model_type != QWEN25_VL else None,
            "media": self.media if self.media != "image" else None,
            "fast_rating": self.fast_rating if self.fast_rating != "d.dd" else None,
        }
        return {**data, **{key: value for key, value in optional.items() if value is not None}}

    def fingerprint(self) -> str:
        """A short hash of everything that changes an answer (not the description)."""
        data = {k: v for k, v in self.to_dict().items() if k != "description"}
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:12]

    def settings_name(self) -> str:
        """The name rows record: a built-in profile's name, else the name and its fingerprint, so that rows
        asked with an edited profile file are never mixed with older ones."""
        return self.name if PROFILES.get(self.name) == self else f"{self.name}@{self.fingerprint()}"

    def save(self, folder: str | Path) -> Path:
        """Write the profile as :data:`PROFILE_FILE` into a model folder, where loading finds it.

        Args:
            folder: the model folder.

        Returns:
            The file's path.
        """
        path = Path(folder) / PROFILE_FILE
        path.write_text(json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        return path


def _part(part: str) -> dict[str, str]:
    """One piece of a user turn as a chat message holds it: a media slot, or a text."""
    if part == IMAGE:
        return dict(prompts.IMAGE_SLOT)
    return dict(prompts.VIDEO_SLOT) if part == VIDEO else {"type": "text", "text": part}


# -- reading and checking a profile file ------------------------------------------------------------------

_PROFILE_KEYS = {
    "qinsight_judge_profile",
    "name",
    "description",
    "system_prompt",
    "chat_template_options",
    "rating_range",
    "reasons",
    "tasks",
    "fast_score",
    "fast_score_prefix",
    "rating_key",
    "compares_with_reference",
    "model_type",
    "media",
    "fast_rating",
}
_PROMPT_KEYS = {"content", "answer", "answer_pattern", "with_reference"}


def _prompt_dict(prompt: TaskPrompt) -> dict[str, Any]:
    reader = {"answer": prompt.answer} if prompt.answer_pattern is None else {"answer_pattern": prompt.answer_pattern}
    data: dict[str, Any] = {"content": list(prompt.content), **reader}
    if prompt.with_reference is not None:
        data["with_reference"] = list(prompt.with_reference)
    return data


def _prompt_of(data: Any, where: str) -> TaskPrompt:
    if not isinstance(data, dict):
        raise UsageError(f"{where} must be an object with {', '.join(sorted(_PROMPT_KEYS))}")
    _no_unknown_keys(data, _PROMPT_KEYS, where)
    content, reference = data.get("content"), data.get("with_reference")
    for key, value in (("content", content), ("with_reference", reference)):
        if value is not None and not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
            raise UsageError(f"{where}.{key} must be a list of texts and {IMAGE!r} slots")
    if content is None:
        raise UsageError(f"{where} has no content")
    return TaskPrompt(
        tuple(content),
        data.get("answer", "q-insight"),
        data.get("answer_pattern"),
        tuple(reference) if reference is not None else None,
    )


def _no_unknown_keys(data: dict[str, Any], known: set[str], where: str) -> None:
    unknown = sorted(set(data) - known)
    if unknown:
        raise UsageError(f"{where}: unknown keys {unknown}; known: {', '.join(sorted(known))}")


def profile_from_dict(data: Any, source: str = "profile") -> JudgeProfile:
    """A profile from :data:`PROFILE_FILE`'s contents; every mistake is a ``UsageError`` naming ``source``."""
    if not isinstance(data, dict):
        raise UsageError(f"{source}: a judge profile is a JSON object")
    _no_unknown_keys(data, _PROFILE_KEYS, source)
    if data.get("qinsight_judge_profile", FILE_FORMAT) != FILE_FORMAT:
        raise UsageError(
            f"{source}: profile format {data['qinsight_judge_profile']!r} is newer than this "
            f"qinsight reads ({FILE_FORMAT}): upgrade qinsight"
        )
    tasks = data.get("tasks")
    if not isinstance(tasks, dict) or not tasks:
        raise UsageError(f"{source}: 'tasks' must map at least one of {', '.join(IMAGES_PER_PROMPT)} to a prompt")
    if not isinstance(data.get("name"), str) or not data["name"].strip():
        raise UsageError(f"{source}: 'name' must be a non-empty text")
    scale = data.get("rating_range", list(FULL_SCALE))
    if not (isinstance(scale, list) and len(scale) == 2 and all(_is_number(v) for v in scale)):
        raise UsageError(f"{source}: rating_range must be two numbers [low, high], got {scale!r}")
    options = data.get("chat_template_options", {})
    if not isinstance(options, dict):
        raise UsageError(f"{source}: chat_template_options must be an object")
    prompts_by_task = {task: _prompt_of(p, f"{source}: tasks.{task}") for task, p in tasks.items()}
    fast_score = _prompt_of(data["fast_score"], f"{source}: fast_score") if "fast_score" in data else None
    try:  # what the profile itself refuses (_check_profile) does not name the file yet
        return JudgeProfile(
            data["name"],
            prompts_by_task,
            system_prompt=data.get("system_prompt"),
            chat_template_options=options,
            rating_range=(float(scale[0]), float(scale[1])),
            reasons=bool(data.get("reasons", True)),
            fast_score=fast_score,
            fast_score_prefix=data.get("fast_score_prefix"),
            rating_key=data.get("rating_key"),
            compares_with_reference=bool(data.get("compares_with_reference", False)),
            model_type=data.get("model_type", QWEN25_VL),
            media=data.get("media", "image"),
            fast_rating=data.get("fast_rating", "d.dd"),
            description=str(data.get("description", "")),
        )
    except UsageError as exc:
        raise UsageError(f"{source}: {exc}") from None


def load_profile_file(path: str | Path) -> JudgeProfile:
    """A profile file (JSON), checked.

    Args:
        path: the file.

    Returns:
        The profile it describes.

    Raises:
        UsageError: the file cannot be read, is not JSON, or does not describe a profile that could work.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UsageError(f"judge profile {path} cannot be read: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise UsageError(f"judge profile {path} is not valid JSON: {exc}") from None
    return profile_from_dict(data, str(path))


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_profile(profile: JudgeProfile) -> None:
    """Refuse a profile that could not work, when it is made rather than on the first image."""
    low, high = profile.rating_range
    if not low < high:
        raise UsageError(f"judge profile {profile.name!r}: rating_range [{low}, {high}] is empty")
    if profile.media not in MEDIA:
        raise UsageError(
            f"judge profile {profile.name!r}: media must be one of {', '.join(MEDIA)}, got {profile.media!r}"
        )
    if profile.fast_rating not in FAST_RATINGS:
        raise UsageError(
            f"judge profile {profile.name!r}: fast_rating must be one of {', '.join(FAST_RATINGS)}, "
            f"got {profile.fast_rating!r}"
        )
    # an empty prefix: a judge with its own distribution over scores (RALI), not one whose digits are read
    scale = FAST_RATINGS[profile.fast_rating]
    if profile.fast_score_prefix and tuple(profile.rating_range) != scale:
        raise UsageError(
            f"judge profile {profile.name!r}: fast scores of fast_rating {profile.fast_rating!r} read the digits "
            f"of a rating from {scale[0]:g} to {scale[1]:g}, so they need rating_range [{scale[0]:g}, {scale[1]:g}]"
        )
    if profile.rating_key is not None and tuple(profile.rating_range) != FULL_SCALE:
        raise UsageError(
            f"judge profile {profile.name!r}: rating_key reads the digits of a rating from 1 to 5, so it "
            "needs rating_range [1, 5]"
        )
    prompts_to_check = list(profile.tasks.items())
    if profile.fast_score is not None:
        prompts_to_check.append(("score", profile.fast_score))
    for task, prompt in prompts_to_check:
        _check_prompt(profile.name, task, prompt, profile.slot)
    if profile.rating_key is not None:
        _compiled(profile.rating_key, f"judge profile {profile.name!r}: rating_key")


def _check_prompt(name: str, task: str, prompt: TaskPrompt, slot: str = IMAGE) -> None:
    where = f"judge profile {name!r}, task {task}"
    if task not in IMAGES_PER_PROMPT:
        raise UsageError(f"{where}: unknown task; tasks are {', '.join(IMAGES_PER_PROMPT)}")
    turns = [(prompt.content, IMAGES_PER_PROMPT[task])]
    if prompt.with_reference is not None:
        if task != "comparison":
            raise UsageError(f"{where}: only comparison has a with_reference prompt")
        turns.append((prompt.with_reference, 3))
    for turn, images in turns:
        if sum(part == slot for part in turn) != images:
            raise UsageError(f"{where}: the prompt needs exactly {images} {slot!r} slot(s), got {list(turn)!r}")
        other = VIDEO if slot == IMAGE else IMAGE
        if other in turn:
            raise UsageError(f"{where}: a judge of {'videos' if slot == VIDEO else 'images'} has no {other!r} slots")
    if prompt.answer_pattern is not None:
        if task != "score":
            raise UsageError(f"{where}: answer_pattern reads ratings; {task} answers use a named reader")
        if _compiled(prompt.answer_pattern, f"{where}: answer_pattern").groups < 1:
            raise UsageError(f"{where}: answer_pattern needs a group around the rating, e.g. 'Score: ([0-9.]+)'")
    elif prompt.answer not in ANSWER_READERS[task]:
        raise UsageError(
            f"{where}: unknown answer reader {prompt.answer!r}; {task} answers are read by "
            f"{', '.join(ANSWER_READERS[task])}" + (" or an answer_pattern" if task == "score" else "")
        )


def _compiled(pattern: str, where: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except (re.error, TypeError) as exc:
        raise UsageError(f"{where} is not a valid regular expression: {exc}") from None


# -- the built-in judges ----------------------------------------------------------------------------------

PROFILES: dict[str, JudgeProfile] = {}


def register_profile(profile: JudgeProfile) -> JudgeProfile:
    """Add a profile to :data:`PROFILES`, where names are looked up.

    Args:
        profile: the profile; a later one with the same name replaces the earlier.

    Returns:
        ``profile``, so that a module can define and register it in one statement.
    """
    PROFILES[profile.name] = profile
    return profile


QINSIGHT_RATING_KEY = r"""["']?rating["']?\s*[:=]\s*"""  # {"rating": 3.85}, as trained


def _with_images(texts: tuple[str, ...]) -> tuple[str, ...]:
    """Texts with an image slot between each two: the paper's comparison template with its images inline."""
    return tuple(part for k, text in enumerate(texts) for part in ((IMAGE, text) if k else (text,)))


_QINSIGHT_TASKS = {
    "score": TaskPrompt((IMAGE, prompts.SCORE_QUESTION)),
    "degradation": TaskPrompt((IMAGE, prompts.DEGRADATION_QUESTION)),
    "comparison": TaskPrompt(
        _with_images(prompts.NO_REFERENCE_COMPARISON_PARTS),
        with_reference=(
            prompts.REFERENCE_COMPARISON_INTRO,
            IMAGE,
            "Image A:",
            IMAGE,
            "Image B:",
            IMAGE,
            prompts.REFERENCE_COMPARISON_QUESTION,
        ),
    ),
}

QINSIGHT = register_profile(
    JudgeProfile(
        "q-insight",
        _QINSIGHT_TASKS,
        system_prompt=prompts.SYSTEM_PROMPT,
        fast_score_prefix=prompts.FAST_SCORE_ANSWER_PREFIX,
        rating_key=QINSIGHT_RATING_KEY,
        subfolder=SCORE_SUBFOLDER,
        description="Q-Insight's score and degradation model (also the paper's zero-shot comparisons)",
    )
)
QINSIGHT_COMPARISON = register_profile(
    replace(
        QINSIGHT,
        name="q-insight-comparison",
        compares_with_reference=True,
        subfolder=COMPARISON_SUBFOLDER,
        description="Q-Insight's reference-based comparison model",
    )
)

_VQ_R1_THINKING = TaskPrompt((IMAGE, prompts.VQ_R1_THINKING_QUESTION), answer="last-answer-first-number")
_VQ_R1_NON_THINKING = TaskPrompt((IMAGE, prompts.VQ_R1_NON_THINKING_QUESTION), answer="last-answer-first-number")
_VQ_R1_IDS = ("TianheWu/VisualQuality-R1-7B", "TianheWu/VisualQuality-R1-7B-preview")

VISUALQUALITY_R1 = register_profile(
    JudgeProfile(
        "visualquality-r1",
        {"score": _VQ_R1_THINKING},
        chat_template_options={"add_vision_id": True},
        fast_score=_VQ_R1_NON_THINKING,
        fast_score_prefix=prompts.VQ_R1_FAST_SCORE_ANSWER_PREFIX,
        rating_key=prompts.VQ_R1_RATING_KEY,
        hub_ids=_VQ_R1_IDS,
        description="VisualQuality-R1-7B: scores only, reasoning first (its thinking prompt)",
    )
)
VISUALQUALITY_R1_NON_THINKING = register_profile(
    replace(
        VISUALQUALITY_R1,
        name="visualquality-r1-non-thinking",
        tasks={"score": _VQ_R1_NON_THINKING},
        reasons=False,
        hub_ids=(),
        description="VisualQuality-R1-7B asked for the score alone (its non-thinking prompt, recommended for rewards)",
    )
)


# VQ-Insight (AAAI 2026): three Qwen2.5-VL-7B video judges in Q-Insight's repository, asked as its demos ask
# (src/eval/demo_vqinsight_score.py and _comp.py): the video first, then the question; the comparison judge
# "Video A:", video, "Video B:", video, question. Scores stay on their 0-100 scale.
VQ_INSIGHT_NATURAL = register_profile(
    JudgeProfile(
        "vqinsight-naturalvideo",
        {"score": TaskPrompt((VIDEO, prompts.VQ_NATURAL_QUESTION), answer="vq-insight-number")},
        system_prompt=prompts.VQ_SCORE_SYSTEM_PROMPT,
        rating_range=(0.0, 100.0),
        fast_score_prefix=prompts.VQ_FAST_SCORE_ANSWER_PREFIX,
        media="video",
        fast_rating="dd",
        subfolder="vqinsight-naturalvideo",
        description="VQ-Insight's natural-video judge: a 0-100 quality score with reasoning",
    )
)
VQ_INSIGHT_AIGC = register_profile(
    JudgeProfile(
        "vqinsight-aigcvideo",
        {"score": TaskPrompt((VIDEO, prompts.VQ_AIGC_QUESTION), answer="vq-insight-dimensions")},
        system_prompt=prompts.VQ_SCORE_SYSTEM_PROMPT,
        rating_range=(0.0, 100.0),
        media="video",
        fast_rating="dd",
        subfolder="vqinsight-aigcvideo",
        description="VQ-Insight's AIGC-video judge: spatial, temporal and text-video consistency, each 0-100",
    )
)
VQ_INSIGHT_COMPARISON = register_profile(
    JudgeProfile(
        "vqinsight-comp",
        {
            "comparison": TaskPrompt(
                ("Video A:", VIDEO, "Video B:", VIDEO, prompts.VQ_COMPARISON_QUESTION), answer="vq-insight"
            )
        },
        system_prompt=prompts.VQ_COMPARISON_SYSTEM_PROMPT,
        rating_range=(0.0, 100.0),
        media="video",
        fast_rating="dd",
        subfolder="vqinsight-comp",
        description="VQ-Insight's AIGC-video comparison judge: which of two videos is better",
    )
)

# RALI writes no text: one image in, a number out. Its prototype scores are taken to be on 0-1 (their
# initialisation is U(0.3, 0.7), a normalised MOS); the range is logged at load, and a profile file with
# another rating_range maps differently.
RALI = register_profile(
    JudgeProfile(
        "rali",
        {"score": TaskPrompt((IMAGE,))},
        system_prompt=None,
        rating_range=(0.0, 1.0),
        reasons=False,
        fast_score_prefix="",
        model_type="rali",
        subfolder="RALI",
        description="RALI: a CLIP-based scorer from the Q-Insight family, at metric speed (scores only, no text)",
    )
)


# -- choosing a checkpoint's profile ------------------------------------------------------------------------


def find_profile(
    name: str | Path | JudgeProfile | None = None, subfolder: str | None = None, model: str | None = None
) -> JudgeProfile:
    """The profile asked for (a name, a profile file, or a profile); without one, the profile of a known
    Hugging Face ``model`` id or released ``subfolder``, else Q-Insight's. See :func:`choose_profile`."""
    return choose_profile(name, model, subfolder)[0]


def choose_profile(
    judge: str | Path | JudgeProfile | None = None,
    model: str | None = None,
    subfolder: str | None = None,
    profile_file: Path | None = None,
    family_default: str | None = None,
) -> tuple[JudgeProfile, str]:
    """The profile for a checkpoint, and why it was chosen (for the message that says which is used).

    In order: ``judge`` (a profile, a built-in name, or the path of a profile file); the checkpoint's own
    ``profile_file``; the one whose released subfolder is ``subfolder`` (Q-Insight's repository holds two
    judges); the profile whose Hugging Face ids hold ``model``, or whose name a local copy bears; the model
    family's ``family_default`` (RALI's for a RALI folder); Q-Insight's.
    """
    if isinstance(judge, JudgeProfile):
        return judge, "given"
    if judge is not None:
        if str(judge) in PROFILES:
            return PROFILES[str(judge)], "asked for"
        if Path(judge).expanduser().is_file():
            return load_profile_file(Path(judge).expanduser()), f"from {judge}"
        raise UsageError(f"unknown judge {str(judge)!r}: neither a profile file nor one of {', '.join(PROFILES)}")
    if profile_file is not None and profile_file.is_file():
        return load_profile_file(profile_file), f"from the checkpoint's {PROFILE_FILE}"
    # a local copy of the released repository (hf download ByteDance/Q-Insight --local-dir ...) is named by
    # its folder: Q-Insight/vqinsight-comp holds the comparison judge
    local = model is not None and subfolder is None and Path(model).expanduser().is_dir()
    released = Path(model).name if local and model is not None else subfolder
    by_folder = next((p for p in PROFILES.values() if released and p.subfolder == released), None)
    if by_folder is not None:
        return by_folder, f"the released subfolder {released}"
    known = _by_hub_id(model) if model else None
    if known is not None:
        return known
    if family_default is not None and family_default != QINSIGHT.name:
        return PROFILES[family_default], "the default of its model family"
    return QINSIGHT, "the default"


def _by_hub_id(model: str) -> tuple[JudgeProfile, str] | None:
    """The profile whose Hugging Face ids hold ``model``: the id itself, or a local copy of it, named as the
    hub names it (``hf download ID --local-dir .../NAME``, or the hub cache's ``models--OWNER--NAME``)."""
    wanted = model.strip("/").lower()
    parts = [part.lower() for part in Path(model).expanduser().parts]
    for profile in PROFILES.values():
        for hub_id in profile.hub_ids:
            if wanted == hub_id.lower():
                return profile, f"the known profile of {model}"
            owner, name = hub_id.lower().split("/")
            if Path(model).expanduser().is_dir() and (parts[-1:] == [name] or f"models--{owner}--{name}" in parts):
                return profile, f"its folder is named like {hub_id}"
    return None
