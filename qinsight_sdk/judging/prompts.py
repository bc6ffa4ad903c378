"""The exact prompt texts the released judges were trained or published with.

This module is the single source of truth for every string a built-in judge sees, at inference and in
training; the judge profiles (:mod:`qinsight_sdk.judging.profiles`) put them into conversations. Changing one
silently degrades the weights, so tests pin each against a fixture (tests/fixtures/prompts.json) that says
where it comes from. Two kinds of source:

- byte-checked against released code: ``SYSTEM_PROMPT``, ``SCORE_QUESTION``, ``DEGRADATION_QUESTION``,
  ``REFERENCE_COMPARISON_INTRO`` and ``REFERENCE_COMPARISON_QUESTION`` (Q-Insight's training code, odd
  punctuation included), ``VQ_R1_*_QUESTION`` (VisualQuality-R1's README code);
- taken from the paper, as no code asks it: ``NO_REFERENCE_COMPARISON_QUESTION``, Q-Insight's zero-shot
  comparison template, whose ``<image A>`` and ``<image B>`` mark where the images go
  (``NO_REFERENCE_COMPARISON_PARTS``: the same text with the images inline).
"""

from __future__ import annotations

from enum import Enum
from typing import Any

SYSTEM_PROMPT = (
    "A conversation between User and Assistant. The user asks a question, and the Assistant solves it. "
    "The assistant first thinks about the reasoning process in the mind and then provides the user with "
    "the answer. The reasoning process and answer are enclosed within <think> </think> and <answer> "
    "</answer> tags, respectively, i.e., <think> reasoning process here </think><answer> answer here "
    "</answer>"
)

SCORE_QUESTION = (
    "What is your overall rating on the quality of this picture? The rating should be a float between 1 "
    "and 5, rounded to two decimal places, with 1 representing very poor quality and 5 representing "
    'excellent quality. Return the final answer in JSON format with the following keys: "rating": The '
    "score."
)

DEGRADATION_QUESTION = (
    'Analyze the given image and determine if it contains any of the following distortions: "noise", '
    '"compression", "blur", or "darken". If a distortion is present, classify its severity as "slight", '
    '"moderate", "obvious", "serious", or "catastrophic". Return the result in JSON format with the '
    'following keys: "distortion_class": The detected distortion (or "null" if none). and "severity": The '
    'severity level (or "null" if none).'
)

REFERENCE_COMPARISON_INTRO = "Given a low-quality reference image and two enhanced outputs. Reference Image:"
REFERENCE_COMPARISON_QUESTION = (
    "Decide which enhanced image is superior or if they are comparable. Evaluate based on: 1) fidelity and "
    "consistency with the reference image; 2) overall perceptual quality. Return **exactly one** of: "
    "Image A, Image B, or Similar."
)

NO_REFERENCE_COMPARISON_QUESTION = (
    "Given Image A: <image A> and Image B: <image B>, assess the visual quality of both the Image A and the "
    "Image B, explain and justify which one is better considering composition and degradation. Your answer "
    'should be "Image A" or "Image B".'
)
IMAGE_MARKS = ("<image A>", "<image B>")  # where the paper's template places each image


def _split_at_marks(template: str, marks: tuple[str, ...]) -> tuple[str, ...]:
    """The template's text between the image marks: text, (image), text, (image), text."""
    parts, rest = [], template
    for mark in marks:
        before, rest = rest.split(mark, 1)
        parts.append(before)
    return (*parts, rest)


# "Given Image A: ", image A, " and Image B: ", image B, ", assess the visual quality ...": the paper's text
# byte for byte, each image where the text names it
NO_REFERENCE_COMPARISON_PARTS = _split_at_marks(NO_REFERENCE_COMPARISON_QUESTION, IMAGE_MARKS)

# Fast scores force the answer up to where the rating's digits start (an empty reasoning block), then
# read the digits' probabilities instead of generating text.
FAST_SCORE_ANSWER_PREFIX = '<think>\n\n</think>\n<answer>\n{"rating": '

# VisualQuality-R1 (github TianheWu/VisualQuality-R1, README "Quick Start"): one question, asked with its
# "thinking" template, or its "non-thinking" one (recommended there for rewards: the score alone).
VQ_R1_QUESTION = (
    "You are doing the image quality assessment task. Here is the question: What is your overall rating on "
    "the quality of this picture? The rating should be a float between 1 and 5, rounded to two decimal "
    "places, with 1 representing very poor quality and 5 representing excellent quality."
)
VQ_R1_THINKING_QUESTION = (
    VQ_R1_QUESTION + " First output the thinking process in <think> </think> tags and then output the final "
    "answer with only one score in <answer> </answer> tags."
)
VQ_R1_NON_THINKING_QUESTION = (
    VQ_R1_QUESTION + " Please only output the final answer with only one score in <answer> </answer> tags."
)
VQ_R1_FAST_SCORE_ANSWER_PREFIX = "<answer>"  # its non-thinking answer, up to the rating
VQ_R1_RATING_KEY = r"<answer>\s*"  # its rating is the first number of its answer block

# VQ-Insight's video judges (Q-Insight's repository, src/eval/demo_vqinsight_score.py and _comp.py, the same
# in VQ-Insight's demo folder): a system prompt for the two scorers, one question each, and the comparison
# judge's own system prompt and question. Note "video.Rate": the AIGC question has no space there.
VQ_SCORE_SYSTEM_PROMPT = (
    "A conversation between User and Assistant. The user asks a question, and the Assistant solves it. The "
    "assistant first thinks about the reasoning process in the mind and then provides the answer. The reasoning "
    "process and answer are enclosed within <think></think> and <answer></answer> tags."
)
VQ_NATURAL_QUESTION = "Please rate the quality of this video. The range of quality score is between 0 and 100."
VQ_AIGC_QUESTION = (
    "This is an AIGC-generated video.Rate this video from three dimensions including spatial quality, temporal "
    "quality, and text-video alignment quality. Return the result in JSON format with the following keys: "
    '"spatial", "temporal", and "consistency". Each score should be a float between 0 and 100, rounded to two '
    "decimal places."
)
VQ_AIGC_DIMENSIONS = ("spatial", "temporal", "consistency")
VQ_COMPARISON_SYSTEM_PROMPT = (
    "A conversation between User and Assistant. The user asks a question, and the Assistant solves it. The "
    "Assistant should provide the final answer within <answer></answer> tags."
)
VQ_COMPARISON_QUESTION = (
    "Video A and Video B are results from two AIGC-generated methods.\n"
    "Explain and justify whether Video A or Video B is better.\n"
    "You should consider the following aspects:\n"
    "(1) Visual quality,\n"
    "(2) Temporal consistency,\n"
    "(3) Dynamic degree,\n"
    "(4) Video authenticity.\n"
    "Your final answer should be either 'Video A' or 'Video B'.\n"
    "Please provide only the single option letter (e.g., A, B, C, D, etc.) within the <answer> </answer> tags."
)
# Fast video scores force an empty reasoning block and open the answer, where the score's digits start.
VQ_FAST_SCORE_ANSWER_PREFIX = "<think>\n\n</think>\n<answer>"

DISTORTION_CLASSES = ("noise", "compression", "blur", "darken")
SEVERITY_LEVELS = ("slight", "moderate", "obvious", "serious", "catastrophic")
NO_DISTORTION = "null"  # the degradation prompt's word for "none", as class and as severity
COMPARISON_ANSWERS = ("Image A", "Image B", "Similar")


class PromptOrder(str, Enum):
    """Where the image goes relative to the question in single-image prompts.

    Training put the image first; the official demo scripts put the text first.
    """

    IMAGE_FIRST = "image_first"
    TEXT_FIRST = "text_first"


Message = dict[str, Any]
IMAGE = "<image>"  # an image's place in a profile's prompt (:mod:`qinsight_sdk.judging.profiles`)
IMAGE_SLOT: dict[str, str] = {"type": "image"}
VIDEO = "<video>"  # a video's place in a video judge's prompt
VIDEO_SLOT: dict[str, str] = {"type": "video"}
