"""The prompts must equal the strings the released weights were trained on, byte for byte."""

import json
from pathlib import Path

import pytest

from qinsight_sdk.backends.qwen2_5_vl.loading import load_processor
from qinsight_sdk.judging import prompts
from qinsight_sdk.judging.profiles import QINSIGHT

# The expected strings live in a fixture that records where each comes from (the official code or the
# paper, as quoted in shared/reference/q-insight.md), not in the code under test.
FIXTURE = json.loads((Path(__file__).parents[1] / "fixtures" / "prompts.json").read_text(encoding="utf-8"))
EXPECTED = {name: entry["text"] for name, entry in FIXTURE.items() if not name.startswith("_")}
EXPECTED_SYSTEM = EXPECTED["SYSTEM_PROMPT"]
EXPECTED_SCORE = EXPECTED["SCORE_QUESTION"]
EXPECTED_DEGRADATION = EXPECTED["DEGRADATION_QUESTION"]
EXPECTED_REFERENCE_INTRO = EXPECTED["REFERENCE_COMPARISON_INTRO"]
EXPECTED_REFERENCE_QUESTION = EXPECTED["REFERENCE_COMPARISON_QUESTION"]
EXPECTED_NO_REFERENCE = EXPECTED["NO_REFERENCE_COMPARISON_QUESTION"]

VISION = "<|vision_start|><|image_pad|><|vision_end|>"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_strings_are_byte_identical(name):
    assert FIXTURE[name]["source"]  # every expected string says where it comes from
    assert getattr(prompts, name) == EXPECTED[name]


def test_system_prompt_has_no_trailing_period():
    assert not prompts.SYSTEM_PROMPT.endswith(".")


def _render(tiny_model, conversation):
    return load_processor(tiny_model).apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)


def test_score_prompt_renders_image_first_as_trained(tiny_model):
    rendered = _render(tiny_model, QINSIGHT.messages("score"))
    assert rendered == (
        f"<|im_start|>system\n{EXPECTED_SYSTEM}<|im_end|>\n"
        f"<|im_start|>user\n{VISION}{EXPECTED_SCORE}<|im_end|>\n<|im_start|>assistant\n"
    )


def test_demo_order_puts_text_first(tiny_model):
    rendered = _render(tiny_model, QINSIGHT.messages("degradation", "text_first"))
    assert f"<|im_start|>user\n{EXPECTED_DEGRADATION}{VISION}<|im_end|>" in rendered


def test_reference_comparison_interleaves_labels_and_images(tiny_model):
    rendered = _render(tiny_model, QINSIGHT.messages("comparison", with_reference=True))
    user = rendered.split("<|im_start|>user\n")[1].split("<|im_end|>")[0]
    assert user == (f"{EXPECTED_REFERENCE_INTRO}{VISION}Image A:{VISION}Image B:{VISION}{EXPECTED_REFERENCE_QUESTION}")


def test_no_reference_comparison_puts_each_image_where_the_papers_template_names_it(tiny_model):
    """The paper's template, "Given Image A: <image A> and Image B: <image B>, assess ...", with the images
    inline: no literal "<image A>" reaches the model."""
    rendered = _render(tiny_model, QINSIGHT.messages("comparison", with_reference=False))
    user = rendered.split("<|im_start|>user\n")[1].split("<|im_end|>")[0]
    assert user == EXPECTED_NO_REFERENCE.replace("<image A>", VISION).replace("<image B>", VISION)
    assert user.startswith(f"Given Image A: {VISION} and Image B: {VISION}, assess the visual quality")
    assert "<image" not in user


VIDEO = "<|vision_start|><|video_pad|><|vision_end|>"


@pytest.mark.parametrize(
    "name, task, system, user",
    [
        ("vqinsight-naturalvideo", "score", "VQ_SCORE_SYSTEM_PROMPT", f"{VIDEO}{EXPECTED['VQ_NATURAL_QUESTION']}"),
        ("vqinsight-aigcvideo", "score", "VQ_SCORE_SYSTEM_PROMPT", f"{VIDEO}{EXPECTED['VQ_AIGC_QUESTION']}"),
        (
            "vqinsight-comp",
            "comparison",
            "VQ_COMPARISON_SYSTEM_PROMPT",
            f"Video A:{VIDEO}Video B:{VIDEO}{EXPECTED['VQ_COMPARISON_QUESTION']}",
        ),
    ],
)
def test_video_judges_render_as_their_demos(tiny_model, name, task, system, user):
    """The demos' conversations through the chat template: the system prompt, the video first (the
    comparison's "Video A:", video, "Video B:", video, question), byte for byte."""
    from qinsight_sdk.judging.profiles import PROFILES

    rendered = _render(tiny_model, PROFILES[name].messages(task))
    assert rendered == (
        f"<|im_start|>system\n{EXPECTED[system]}<|im_end|>\n<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n"
    )


def test_the_aigc_question_keeps_its_missing_space():
    assert "AIGC-generated video.Rate this video" in prompts.VQ_AIGC_QUESTION
