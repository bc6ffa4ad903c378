"""The exact prompt interface the Q-Insight weights were trained on.

This module is the single source of truth for every string the model sees, at inference and in
training. The strings are byte-for-byte those of the released model (including its odd punctuation);
changing one silently degrades the weights, so tests pin them.
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

REFERENCE_COMPARISON_INTRO = (
    "Given a low-quality reference image and two enhanced outputs. Reference Image:"
)
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

# Fast scores force the answer up to where the rating's digits start (an empty reasoning block), then
# read the digits' probabilities instead of generating text.
FAST_SCORE_ANSWER_PREFIX = '<think>\n\n</think>\n<answer>\n{"rating": '

DISTORTION_CLASSES = ("noise", "compression", "blur", "darken")
SEVERITY_LEVELS = ("slight", "moderate", "obvious", "serious", "catastrophic")
NO_DISTORTION = "null"   # the degradation prompt's word for "none", as class and as severity
COMPARISON_ANSWERS = ("Image A", "Image B", "Similar")


class PromptOrder(str, Enum):
    """Where the image goes relative to the question in single-image prompts.

    Training put the image first; the official demo scripts put the text first.
    """

    IMAGE_FIRST = "image_first"
    TEXT_FIRST = "text_first"


Message = dict[str, Any]
IMAGE_SLOT: dict[str, str] = {"type": "image"}


def _text(text: str) -> dict[str, str]:
    return {"type": "text", "text": text}


def _conversation(user_content: list[dict[str, str]]) -> list[Message]:
    return [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": user_content},
    ]


def _single_image(question: str, order: PromptOrder | str) -> list[Message]:
    if PromptOrder(order) is PromptOrder.IMAGE_FIRST:
        return _conversation([IMAGE_SLOT, _text(question)])
    return _conversation([_text(question), IMAGE_SLOT])


def score_messages(order: PromptOrder | str = PromptOrder.IMAGE_FIRST) -> list[Message]:
    """Conversation asking for a 1-5 rating of one image."""
    return _single_image(SCORE_QUESTION, order)


def degradation_messages(order: PromptOrder | str = PromptOrder.IMAGE_FIRST) -> list[Message]:
    """Conversation asking for the distortion class and severity of one image."""
    return _single_image(DEGRADATION_QUESTION, order)


def comparison_messages(with_reference: bool) -> list[Message]:
    """Conversation comparing two images (images in the order: [reference,] A, B).

    The no-reference prompt names the images only in its text (the paper's zero-shot setting), so the
    two images come first, A then B. The reference prompt interleaves labels and images exactly as the
    comparison weights were trained.
    """
    if with_reference:
        return _conversation([
            _text(REFERENCE_COMPARISON_INTRO), IMAGE_SLOT,
            _text("Image A:"), IMAGE_SLOT,
            _text("Image B:"), IMAGE_SLOT,
            _text(REFERENCE_COMPARISON_QUESTION),
        ])
    return _conversation([IMAGE_SLOT, IMAGE_SLOT, _text(NO_REFERENCE_COMPARISON_QUESTION)])
