"""The prompts must equal the strings the released weights were trained on, byte for byte."""

from qinsight_sdk import prompts
from qinsight_sdk.backend import load_processor

# Copied independently from the Q-Insight interface (shared/reference/q-insight.md, section 1).
EXPECTED_SYSTEM = "A conversation between User and Assistant. The user asks a question, and the Assistant solves it. The assistant first thinks about the reasoning process in the mind and then provides the user with the answer. The reasoning process and answer are enclosed within <think> </think> and <answer> </answer> tags, respectively, i.e., <think> reasoning process here </think><answer> answer here </answer>"  # noqa: E501
EXPECTED_SCORE = 'What is your overall rating on the quality of this picture? The rating should be a float between 1 and 5, rounded to two decimal places, with 1 representing very poor quality and 5 representing excellent quality. Return the final answer in JSON format with the following keys: "rating": The score.'  # noqa: E501
EXPECTED_DEGRADATION = 'Analyze the given image and determine if it contains any of the following distortions: "noise", "compression", "blur", or "darken". If a distortion is present, classify its severity as "slight", "moderate", "obvious", "serious", or "catastrophic". Return the result in JSON format with the following keys: "distortion_class": The detected distortion (or "null" if none). and "severity": The severity level (or "null" if none).'  # noqa: E501
EXPECTED_REFERENCE_INTRO = "Given a low-quality reference image and two enhanced outputs. Reference Image:"
EXPECTED_REFERENCE_QUESTION = "Decide which enhanced image is superior or if they are comparable. Evaluate based on: 1) fidelity and consistency with the reference image; 2) overall perceptual quality. Return **exactly one** of: Image A, Image B, or Similar."  # noqa: E501
EXPECTED_NO_REFERENCE = 'Given Image A: <image A> and Image B: <image B>, assess the visual quality of both the Image A and the Image B, explain and justify which one is better considering composition and degradation. Your answer should be "Image A" or "Image B".'  # noqa: E501

VISION = "<|vision_start|><|image_pad|><|vision_end|>"


def test_strings_are_byte_identical():
    assert prompts.SYSTEM_PROMPT == EXPECTED_SYSTEM
    assert prompts.SCORE_QUESTION == EXPECTED_SCORE
    assert prompts.DEGRADATION_QUESTION == EXPECTED_DEGRADATION
    assert prompts.REFERENCE_COMPARISON_INTRO == EXPECTED_REFERENCE_INTRO
    assert prompts.REFERENCE_COMPARISON_QUESTION == EXPECTED_REFERENCE_QUESTION
    assert prompts.NO_REFERENCE_COMPARISON_QUESTION == EXPECTED_NO_REFERENCE
    assert not prompts.SYSTEM_PROMPT.endswith(".")


def _render(tiny_model, conversation):
    return load_processor(tiny_model).apply_chat_template(conversation, tokenize=False,
                                                           add_generation_prompt=True)


def test_score_prompt_renders_image_first_as_trained(tiny_model):
    rendered = _render(tiny_model, prompts.score_messages())
    assert rendered == (f"<|im_start|>system\n{EXPECTED_SYSTEM}<|im_end|>\n"
                        f"<|im_start|>user\n{VISION}{EXPECTED_SCORE}<|im_end|>\n<|im_start|>assistant\n")


def test_demo_order_puts_text_first(tiny_model):
    rendered = _render(tiny_model, prompts.degradation_messages("text_first"))
    assert f"<|im_start|>user\n{EXPECTED_DEGRADATION}{VISION}<|im_end|>" in rendered


def test_reference_comparison_interleaves_labels_and_images(tiny_model):
    rendered = _render(tiny_model, prompts.comparison_messages(with_reference=True))
    user = rendered.split("<|im_start|>user\n")[1].split("<|im_end|>")[0]
    assert user == (f"{EXPECTED_REFERENCE_INTRO}{VISION}Image A:{VISION}Image B:{VISION}"
                    f"{EXPECTED_REFERENCE_QUESTION}")


def test_no_reference_comparison_has_two_images_then_question(tiny_model):
    rendered = _render(tiny_model, prompts.comparison_messages(with_reference=False))
    user = rendered.split("<|im_start|>user\n")[1].split("<|im_end|>")[0]
    assert user == f"{VISION}{VISION}{EXPECTED_NO_REFERENCE}"
