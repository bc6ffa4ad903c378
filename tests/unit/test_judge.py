"""QualityJudge's public API (score, degradation, compare, reward, on_result) on the tiny model and scripted answers."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from samples import grey, noise_image
from scripted import TightMemory, brightness_answer

from qinsight_sdk import ComparisonResult, DecodingOptions, DegradationResult, QualityJudge, ScoreResult
from qinsight_sdk.backends.base import Generation, RatingDistribution
from qinsight_sdk.errors import ModelLoadError
from qinsight_sdk.judging.profiles import QINSIGHT
from qinsight_sdk.testing import ScriptedBackend

IMAGES = [noise_image(i, 40 + 17 * i, 44 + 9 * (i % 3)) for i in range(7)]


# -- the real pipeline on the tiny random model ----------------------------------------------------


def test_score_single_and_list(tiny_judge, image_files):
    single = tiny_judge.score(image_files[0])
    assert isinstance(single, ScoreResult)
    assert single.raw  # the model generated text
    many = tiny_judge.score(image_files[:2])
    assert isinstance(many, list) and len(many) == 2
    # the random model rarely writes a valid answer; whatever it wrote, the verdict is the parser's
    for result in many:
        assert (result.score is None) == (result.error is not None)
        assert result.score is None or 1 <= result.score <= 5
    json.dumps([r.to_dict() for r in many])


def test_batched_equals_one_by_one_under_greedy(tiny_judge, image_files):
    batched = tiny_judge.score(image_files, batch_size=5)
    alone = [tiny_judge.score(path, batch_size=1) for path in image_files]
    assert [r.raw for r in batched] == [r.raw for r in alone]
    assert len({r.raw for r in batched}) > 1  # answers depend on the image, so the check has teeth


def test_greedy_is_deterministic(tiny_judge, image_files):
    assert tiny_judge.degradation(image_files[1]).raw == tiny_judge.degradation(image_files[1]).raw


def test_one_bad_file_in_five(tiny_judge, image_files):
    image_files[2].write_bytes(b"this is not a PNG")
    results = tiny_judge.score(image_files, batch_size=5)
    assert len(results) == 5
    assert "not a recognised image" in results[2].error and results[2].raw == ""
    assert all(r.raw for i, r in enumerate(results) if i != 2)
    good = tiny_judge.score([p for i, p in enumerate(image_files) if i != 2], batch_size=4)
    assert [r.raw for i, r in enumerate(results) if i != 2] == [r.raw for r in good]


def test_comfyui_style_batch(tiny_judge):
    batch = torch.rand(3, 48, 64, 3, dtype=torch.float16)
    batch[1, 0, 0, 0] = float("nan")
    results = tiny_judge.degradation(batch)
    assert [isinstance(r, DegradationResult) for r in results] == [True] * 3
    assert "NaN" in results[1].error and results[0].raw and results[2].raw


def test_compare_with_and_without_reference(tiny_judge):
    a, b, ref = noise_image(1), noise_image(2), noise_image(3)
    plain = tiny_judge.compare(a, b)
    with_ref = tiny_judge.compare(a, b, reference=ref)
    assert isinstance(plain, ComparisonResult) and plain.raw
    assert with_ref.raw and with_ref.raw != plain.raw  # different prompt, different images
    both = tiny_judge.compare(a, b, both_orders=True)
    assert "[order A, B]" in both.raw and "[order B, A]" in both.raw


def test_compare_bad_image_is_an_error_not_an_exception(tiny_judge):
    result = tiny_judge.compare(noise_image(1), np.zeros((0, 3)))
    assert result.winner is None and "empty" in result.error


def test_seeded_sampling_repeats_and_num_samples_aggregates(tiny_judge, image_files):
    options = DecodingOptions(do_sample=True, max_new_tokens=12, num_samples=3)
    first = tiny_judge.score(image_files[0], decoding=options)
    again = tiny_judge.score(image_files[0], decoding=options)
    assert first.to_dict() == again.to_dict()
    other_seed = tiny_judge.score(
        image_files[0], decoding=DecodingOptions(do_sample=True, max_new_tokens=12, num_samples=3, seed=7)
    )
    assert other_seed.raw != first.raw or other_seed.error != first.error


def test_fast_mode_reports_bad_images_per_item(tiny_judge):
    results = tiny_judge.score([IMAGES[0], np.full((20, 20, 3), np.nan), IMAGES[1]], mode="fast")
    assert results[0].score and results[2].score and "NaN" in results[1].error


def test_unknown_mode_is_refused(tiny_judge):
    with pytest.raises(ValueError, match="mode"):
        tiny_judge.score(IMAGES[0], mode="quick")


def test_compare_pairs_with_their_own_references_and_a_callback(tiny_judge, image_files):
    a, b, c, d, e = map(str, image_files)
    seen = []
    results = tiny_judge.compare_pairs(
        [(a, b, c), (a, b), (d, e, "missing.png")], reference=None, on_result=lambda i, r: seen.append(i)
    )
    assert seen == [0, 1, 2] and len(results) == 3
    assert results[0].raw == tiny_judge.compare(a, b, reference=c).raw  # its own reference used
    assert results[1].raw == tiny_judge.compare(a, b).raw  # none: the two-image prompt
    assert "missing.png" in results[2].error
    both = tiny_judge.compare_pairs([(a, b, c), (d, e)], both_orders=True, on_result=lambda i, r: seen.append(i))
    assert seen[3:] == [0, 1] and len(both) == 2
    with pytest.raises(ValueError, match="a pair is"):
        tiny_judge.compare_pairs([(a,)])


# -- aggregation and robustness, with answers we choose --------------------------------------------


def brightness_rating(conversation, images):
    """Scores an image by its mean brightness: 1 for black, 5 for white."""
    mean = float(np.asarray(images[-1]).mean()) / 255
    return f'<think>\nbrightness {mean:.2f}\n</think>\n<answer>\n{{"rating": {1 + 4 * mean:.2f}}}\n</answer>'


def test_scripted_scores_follow_the_answers():
    judge = QualityJudge(ScriptedBackend(brightness_rating))
    results = judge.score([Image.new("RGB", (56, 56), (v, v, v)) for v in (0, 255, 128)])
    assert [r.score for r in results] == pytest.approx([1.0, 5.0, 3.01], abs=0.01)
    assert results[0].reasoning == "brightness 0.00" and results[0].error is None


def test_batches_respect_batch_size_and_report_as_they_go():
    backend = ScriptedBackend(brightness_rating)
    judge = QualityJudge(backend, batch_size=2)
    seen = []
    judge.score([noise_image(i) for i in range(5)], on_result=lambda i, r: seen.append(i))
    assert backend.calls == [2, 2, 1] and seen == [0, 1, 2, 3, 4]


def test_a_model_failure_on_one_image_spares_the_batch():
    def fragile(conversation, images):
        if images[0].getpixel((0, 0)) == (13, 13, 13):
            raise RuntimeError("kernel exploded")
        return brightness_rating(conversation, images)

    images = [Image.new("RGB", (56, 56), (v, v, v)) for v in (0, 13, 255)]
    results = QualityJudge(ScriptedBackend(fragile)).score(images)
    assert results[0].score == 1.0 and results[2].score == 5.0
    assert "kernel exploded" in results[1].error


def test_num_samples_average_and_spread():
    answers = iter(['<answer>{"rating": 2}</answer>', '<answer>{"rating": 4}</answer>', "garbage"])
    judge = QualityJudge(ScriptedBackend(lambda c, i: next(answers)))
    result = judge.score(noise_image(0), decoding=DecodingOptions(do_sample=True, num_samples=3))
    assert result.score == 3.0 and result.std == 1.0 and result.samples == [2.0, 4.0]


def test_degradation_majority_vote():
    answers = iter(
        [
            '<answer>{"distortion_class": "blur", "severity": "slight"}</answer>',
            '<answer>{"distortion_class": "noise", "severity": "serious"}</answer>',
            '<answer>{"distortion_class": "noise", "severity": "serious"}</answer>',
        ]
    )
    judge = QualityJudge(ScriptedBackend(lambda c, i: next(answers)))
    result = judge.degradation(noise_image(0), decoding=DecodingOptions(do_sample=True, num_samples=3))
    assert (result.distortion, result.severity) == ("noise", "serious")


def brighter_wins(conversation, images):
    """Prefers the brighter of the last two images, whatever position it is in."""
    a, b = (float(np.asarray(i).mean()) for i in images[-2:])
    return "<answer>Image A</answer>" if a > b else "<answer>Image B</answer>"


def always(label):
    return lambda conversation, images: f"<think>position bias</think><answer>{label}</answer>"


def test_compare_both_orders_reconciles():
    dark, bright = Image.new("RGB", (56, 56), (20, 20, 20)), Image.new("RGB", (56, 56), (220, 220, 220))
    fair = QualityJudge(ScriptedBackend(brighter_wins))
    result = fair.compare(dark, bright, both_orders=True)
    assert (result.winner, result.consistent, result.error) == ("B", True, None)
    assert result.raw == "[order A, B]\n<answer>Image B</answer>\n[order B, A]\n<answer>Image A</answer>"
    result = fair.compare(bright, dark, both_orders=True)
    assert (result.winner, result.consistent) == ("A", True)


@pytest.mark.parametrize("label", ["Image A", "Image B"])
def test_compare_both_orders_cancels_a_position_bias(label):
    dark, bright = Image.new("RGB", (56, 56), (20, 20, 20)), Image.new("RGB", (56, 56), (220, 220, 220))
    biased = QualityJudge(ScriptedBackend(always(label))).compare(dark, bright, both_orders=True)
    assert (biased.winner, biased.consistent, biased.error) == ("similar", False, None)
    assert biased.reasoning == "[order A, B] position bias\n\n[order B, A] position bias"


def only_when_bright_comes_first(conversation, images):
    """A verdict only in one order: "Image A" when the brighter image is shown first, else no answer."""
    a, b = (float(np.asarray(i).mean()) for i in images[-2:])
    return "<answer>Image A</answer>" if a > b else "<answer>no idea</answer>"


@pytest.mark.parametrize("first,second,winner", [("bright", "dark", "A"), ("dark", "bright", "B")])
def test_compare_both_orders_keeps_the_only_verdict_given(first, second, winner):
    images = {"dark": Image.new("RGB", (56, 56), (20, 20, 20)), "bright": Image.new("RGB", (56, 56), (220, 220, 220))}
    judge = QualityJudge(ScriptedBackend(only_when_bright_comes_first))
    result = judge.compare(images[first], images[second], both_orders=True)
    assert (result.winner, result.consistent, result.error, result.reasoning) == (winner, None, None, None)
    assert result.raw.startswith("[order A, B]\n<answer>") and "\n[order B, A]\n<answer>" in result.raw


def test_compare_both_orders_without_any_verdict_is_an_error():
    judge = QualityJudge(ScriptedBackend(lambda c, i: "<think>hm</think><answer>no idea</answer>"))
    result = judge.compare(Image.new("RGB", (56, 56)), Image.new("RGB", (56, 56), (9, 9, 9)), both_orders=True)
    assert result.winner is None and result.error.startswith("neither order gave a verdict: the answer names none")
    assert result.reasoning == "[order A, B] hm\n\n[order B, A] hm"
    assert (
        result.raw == "[order A, B]\n<think>hm</think><answer>no idea</answer>\n[order B, A]\n"
        "<think>hm</think><answer>no idea</answer>"
    )


def test_compare_uses_reference_prompt_and_image_order():
    seen = {}

    def spy(conversation, images):
        seen["text"] = json.dumps(conversation)
        seen["sizes"] = [i.size for i in images]
        return "<answer>Similar</answer>"

    judge = QualityJudge(ScriptedBackend(spy))
    ref, a, b = (Image.new("RGB", (56 * k, 56)) for k in (1, 2, 3))
    assert judge.compare(a, b, reference=ref).winner == "similar"
    assert "Reference Image:" in seen["text"] and seen["sizes"] == [(56, 56), (112, 56), (168, 56)]


# -- the judge's own rules, stated exactly ---------------------------------------------------------


class CutOffBackend(ScriptedBackend):
    """Answers that ran out of tokens (``finished`` False)."""

    def generate(self, batch, decoding, rating_key=None):
        return [[Generation(g.text, False) for g in row] for row in super().generate(batch, decoding, rating_key)]


def test_defaults():
    backend = ScriptedBackend(brightness_rating)
    judge = QualityJudge(backend)
    assert judge.decoding == DecodingOptions() and judge.prompt_order.value == "image_first"
    assert judge.batching.max_batch_tokens == 16384 and judge.batching.memory_cap is None
    judge.score([grey(v) for v in range(10)])
    assert backend.calls == [8, 2]  # batch_size 8
    backend.calls.clear()
    from qinsight_sdk.io.images import ImageBounds

    big = QualityJudge(backend, image_bounds=ImageBounds(max_pixels=1792 * 1792))
    big.score([grey(v, (1792, 1792)) for v in range(5)])  # 4096 tokens each: 16384 holds exactly four
    assert backend.calls == [4, 1]


def test_token_budget_is_inclusive():
    backend = ScriptedBackend(brightness_rating)
    QualityJudge(backend, max_batch_tokens=8).score([grey(v) for v in range(5)])  # 4 tokens each
    assert backend.calls == [2, 2, 1]


def test_batch_size_must_be_positive():
    judge = QualityJudge(ScriptedBackend(brightness_rating), batch_size=0)
    with pytest.raises(ValueError, match="batch_size must be at least 1, got 0"):
        judge.score(grey(1))


def test_an_explicit_batch_size_overrides_the_judges():
    backend = ScriptedBackend(brightness_rating)
    QualityJudge(backend, batch_size=8).score([grey(v) for v in range(5)], batch_size=2)
    assert backend.calls == [2, 2, 1]


def test_unreadable_inputs_are_reported_in_order_with_their_reasons():
    backend = ScriptedBackend(brightness_rating)
    seen = []
    results = QualityJudge(backend, batch_size=1).score(
        [grey(0), "missing.png", grey(255), np.zeros((0, 3)), grey(128)], on_result=lambda i, r: seen.append((i, r))
    )
    assert seen == list(enumerate(results))
    assert [r.score for r in results] == pytest.approx([1.0, None, 5.0, None, 3.01])
    assert results[1].error == "missing.png: file not found" and "is empty" in results[3].error
    assert backend.calls == [1, 1, 1]


def test_a_failure_inside_the_model_names_its_type_and_message():
    def fragile(conversation, images):
        if np.asarray(images[0]).mean() == 13:
            raise RuntimeError("kernel exploded")
        return brightness_rating(conversation, images)

    results = QualityJudge(ScriptedBackend(fragile)).score(grey(13))
    assert results.error == "the model failed on this input: RuntimeError: kernel exploded"


def test_a_failure_while_encoding_is_retried_per_item():
    class FragileEncoder(ScriptedBackend):
        def encode(self, conversations, images, answer_prefix="", template_options=None):
            if any(np.asarray(g[0]).mean() == 13 for g in images):
                raise ValueError("cannot encode")
            return super().encode(conversations, images, answer_prefix, template_options)

    results = QualityJudge(FragileEncoder(brightness_rating)).score([grey(0), grey(13), grey(255)])
    assert [r.score for r in results] == [1.0, None, 5.0]
    assert results[1].error == "the model failed on this input: ValueError: cannot encode"


@pytest.mark.parametrize("message", ["CUDA out of memory. Tried to allocate", "MPS backend Out Of Memory"])
def test_out_of_memory_is_recognised_by_its_message(message):
    backend = TightMemory(brightness_rating, fits=1, message=message, error=RuntimeError)
    results = QualityJudge(backend).score([grey(0), grey(255), grey(128)])
    assert [r.score for r in results] == pytest.approx([1.0, 5.0, 3.01])


def test_a_cut_off_answer_says_so():
    result = QualityJudge(CutOffBackend(lambda c, i: "<think>still thinking")).score(grey(1))
    assert (
        result.error == "no rating found in the answer (no <answer> block found) "
        "(the answer was cut off at max_new_tokens)"
    )
    assert result.raw == "<think>still thinking" and result.reasoning == "still thinking"
    finished = QualityJudge(ScriptedBackend(lambda c, i: "<answer>meh</answer>")).score(grey(1))
    assert finished.error == "no rating found in the answer"


def test_a_rating_in_reasoning_cut_off_before_the_answer_is_no_score():
    """Issue 11: an answer cut off before <answer> whose reasoning said "rating: 3" scored 3.0, no error."""
    result = QualityJudge(CutOffBackend(lambda c, i: "<think>I would give it a rating: 3 since")).score(grey(1))
    assert result.score is None and result.raw == "<think>I would give it a rating: 3 since"
    assert (
        result.error == "no rating found in the answer (no <answer> block found) "
        "(the answer was cut off at max_new_tokens)"
    )


def test_the_tiny_model_says_at_how_many_tokens_it_was_cut_off(tiny_model):
    judge = QualityJudge.from_pretrained(tiny_model, device="cpu", decoding=DecodingOptions(max_new_tokens=7))
    result = judge.score(grey(100))
    assert result.score is None and result.error.endswith("(the answer was cut off at 7 tokens (max_new_tokens))")


def test_one_sample_has_no_spread_and_reasoning_comes_with_the_score():
    result = QualityJudge(ScriptedBackend(brightness_rating)).score(grey(255))
    assert (result.score, result.std, result.samples, result.reasoning) == (5.0, None, [], "brightness 1.00")
    assert result.raw == brightness_rating(None, [grey(255)])


def test_samples_keep_the_first_readable_answers_reasoning():
    answers = iter(
        [
            "garbage",
            '<think>two</think><answer>{"rating": 2}</answer>',
            '<think>four</think><answer>{"rating": 4}</answer>',
        ]
    )
    judge = QualityJudge(ScriptedBackend(lambda c, i: next(answers)))
    result = judge.score(grey(1), decoding=DecodingOptions(do_sample=True, num_samples=3))
    assert (result.reasoning, result.raw) == ("two", '<think>two</think><answer>{"rating": 2}</answer>')


def test_fast_scores_are_never_clamped():
    result = QualityJudge(ScriptedBackend(lambda c, i: '<answer>{"rating": 5.9}</answer>')).score(grey(1), mode="fast")
    assert (result.score, result.std, result.error) == (pytest.approx(5.9), 0.0, None)
    with pytest.raises(ValueError, match="mode must be 'reason' or 'fast', got 'quick'"):
        QualityJudge(ScriptedBackend(brightness_rating)).score(grey(1), mode="quick")


def test_degradation_ties_go_to_the_first_answer_and_unreadable_answers_explain():
    answers = iter(
        [
            '<think>b</think><answer>{"distortion_class": "blur", "severity": "slight"}</answer>',
            '<answer>{"distortion_class": "noise", "severity": "serious"}</answer>',
        ]
    )
    judge = QualityJudge(ScriptedBackend(lambda c, i: next(answers)))
    result = judge.degradation(grey(1), decoding=DecodingOptions(do_sample=True, num_samples=2))
    assert (result.distortion, result.severity, result.reasoning, result.error) == ("blur", "slight", "b", None)
    assert result.raw.startswith("<think>b</think>")
    bad = QualityJudge(ScriptedBackend(lambda c, i: '<think>t</think><answer>{"distortion_class": "blur"}</answer>'))
    result = bad.degradation(grey(1))
    assert (result.distortion, result.severity, result.reasoning) == ("blur", None, "t")
    assert result.error == "distortion 'blur' given without a severity" and result.raw


def test_comparison_majority_and_unreadable_verdicts():
    answers = iter(
        [
            "<answer>Image B</answer>",
            "<think>a</think><answer>Image A</answer>",
            "<think>a2</think><answer>Image A</answer>",
        ]
    )
    judge = QualityJudge(ScriptedBackend(lambda c, i: next(answers)))
    result = judge.compare(grey(1), grey(2), decoding=DecodingOptions(do_sample=True, num_samples=3))
    assert (result.winner, result.reasoning, result.raw) == ("A", "a", "<think>a</think><answer>Image A</answer>")
    bad = QualityJudge(ScriptedBackend(lambda c, i: "<think>t</think><answer>both</answer>")).compare(grey(1), grey(2))
    assert (bad.winner, bad.reasoning, bad.raw) == (None, "t", "<think>t</think><answer>both</answer>")
    assert bad.error == "the answer names none of Image A, Image B, Similar"


def test_compare_pairs_reports_each_pair_once_in_order():
    seen = []
    judge = QualityJudge(ScriptedBackend(brighter_wins), batch_size=3)
    results = judge.compare_pairs(
        [(grey(9), grey(200)), (grey(200), grey(9)), (grey(5), "missing.png")],
        both_orders=True,
        on_result=lambda i, r: seen.append((i, r.winner)),
    )
    assert seen == [(0, "B"), (1, "A"), (2, None)] and [r.winner for r in results] == ["B", "A", None]
    assert results[2].error.startswith("neither order gave a verdict: missing.png: file not found")


def test_rank_passes_its_options_on():
    backend = ScriptedBackend(lambda c, i: brightness_rating(c, i) if len(i) == 1 else brighter_wins(c, i))
    ranking = QualityJudge(backend).rank(
        [grey(v) for v in (10, 200, 90, 150)], strategy="hybrid", top_k=2, pool=3, batch_size=1
    )
    assert ranking.order == [1, 3] and ranking.comparisons == 6 and set(backend.calls) == {1}


def test_two_samples_have_a_spread():
    answers = iter(['<answer>{"rating": 2}</answer>', '<answer>{"rating": 3}</answer>'])
    judge = QualityJudge(ScriptedBackend(lambda c, i: next(answers)))
    result = judge.score(grey(1), decoding=DecodingOptions(do_sample=True, num_samples=2))
    assert (result.score, result.std, result.samples) == (2.5, 0.5, [2.0, 3.0])


def test_unreadable_samples_report_the_first_answer():
    answers = iter(["<think>one</think>nothing", "<think>two</think>nothing either"])
    judge = QualityJudge(ScriptedBackend(lambda c, i: next(answers)))
    result = judge.score(grey(1), decoding=DecodingOptions(do_sample=True, num_samples=2))
    assert (result.score, result.reasoning, result.raw) == (None, "one", "<think>one</think>nothing")
    assert result.error == "no rating found in the answer (no <answer> block found)"


def test_compare_pairs_asks_one_order_by_default_and_checks_its_pairs():
    seen = []

    def spy(conversation, images):
        seen.append((json.dumps(conversation), [int(np.asarray(i).mean()) for i in images]))
        return "<answer>Image A</answer>"

    judge = QualityJudge(ScriptedBackend(spy))
    results = judge.compare_pairs(
        [(grey(1), grey(2), grey(3)), (grey(4), grey(5), None), (grey(6), grey(7))], reference=grey(9)
    )
    assert [s[1] for s in seen] == [[3, 1, 2], [9, 4, 5], [9, 6, 7]]  # own reference, else the shared one
    assert all("Reference Image:" in s[0] for s in seen) and [r.winner for r in results] == ["A"] * 3
    seen.clear()
    judge.compare_pairs([(grey(1), grey(2))], reference=grey(9), both_orders=True)
    assert [s[1] for s in seen] == [[9, 1, 2], [9, 2, 1]] and seen[0][0] == seen[1][0]
    for bad in [(grey(1),), (grey(1), grey(2), grey(3), grey(4))]:
        with pytest.raises(
            ValueError,
            match=f"a pair is \\(image_a, image_b\\) or \\(image_a, image_b, reference\\), got {len(bad)} items",
        ):
            judge.compare_pairs([bad])


def test_each_task_sends_its_own_prompt_and_answer_prefix():
    from qinsight_sdk.judging import prompts

    seen = []

    class Spy(ScriptedBackend):
        def encode(self, conversations, images, answer_prefix="", template_options=None):
            seen.append((json.dumps(conversations[0]), answer_prefix))
            return super().encode(conversations, images, answer_prefix, template_options)

    judge = QualityJudge(Spy(brightness_rating))
    judge.score(grey(1))
    judge.score(grey(1), mode="fast")
    judge.degradation(grey(1))
    assert seen == [
        (json.dumps(QINSIGHT.messages("score")), ""),
        (json.dumps(QINSIGHT.messages("score")), prompts.FAST_SCORE_ANSWER_PREFIX),
        (json.dumps(QINSIGHT.messages("degradation")), ""),
    ]


def test_degradation_takes_batch_size_and_reports_progress():
    backend = ScriptedBackend(lambda c, i: '<answer>{"distortion_class": "blur", "severity": "slight"}</answer>')
    seen = []
    results = QualityJudge(backend).degradation(
        [grey(1), "missing.png", grey(2)], batch_size=1, on_result=lambda i, r: seen.append(i)
    )
    assert seen == [0, 1, 2] and backend.calls == [1, 1]
    assert isinstance(results[1], DegradationResult) and results[1].error == "missing.png: file not found"


def test_reward_takes_batch_size_and_logs_exactly(caplog):
    backend = ScriptedBackend(brightness_rating)
    with caplog.at_level("WARNING", logger="qinsight"):
        rewards = QualityJudge(backend).reward([grey(0), "missing.png", grey(255)], batch_size=1)
    assert rewards.tolist() == [0.0, 0.0, 1.0] and backend.calls == [1, 1]
    assert [r.getMessage() for r in caplog.records] == ["reward 0.0 for image 1: missing.png: file not found"]


def test_out_of_memory_is_logged_with_the_sizes(caplog):
    with caplog.at_level("WARNING", logger="qinsight"):
        QualityJudge(TightMemory(brightness_rating, fits=2)).score([grey(v) for v in range(4)])
    assert [r.getMessage() for r in caplog.records] == ["out of memory with 4 images per batch; retrying with 2"]


def test_fast_scores_above_the_scale_are_kept_and_their_reward_is_bounded():
    class Overconfident(ScriptedBackend):
        def rating_distributions(self, batch):
            decimals = torch.zeros(5, 10, dtype=torch.float64)
            decimals[:, 9] = 1.0
            return [
                RatingDistribution(torch.tensor([0, 0, 0, 0, 1.0], dtype=torch.float64), decimals)
                for _ in batch.inputs[0]
            ]  # surely 5.9

    judge = QualityJudge(Overconfident(brightness_rating))
    result = judge.score(grey(1), mode="fast")
    assert (result.score, result.std) == (pytest.approx(5.9), pytest.approx(0.0))
    assert judge.reward([grey(1)]).tolist() == [1.0]


# -- reward ----------------------------------------------------------------------------------------


def test_reward_shape_range_and_batch_independence(tiny_judge):
    batch = torch.rand(6, 48, 64, 3)
    rewards = tiny_judge.reward(batch, batch_size=6)
    assert rewards.shape == (6,) and rewards.dtype == torch.float32
    assert bool(((rewards >= 0) & (rewards <= 1)).all())
    for batch_size in (1, 4):
        assert torch.allclose(tiny_judge.reward(batch, batch_size=batch_size), rewards, atol=1e-4)
    assert torch.equal(tiny_judge.reward(batch, batch_size=6), rewards)


def test_reward_maps_scores_and_gives_zero_to_broken_images():
    judge = QualityJudge(ScriptedBackend(brightness_answer))
    rewards = judge.reward([grey(0), grey(255), np.full((8, 8, 3), np.nan, np.float32)])
    assert rewards.tolist() == pytest.approx([0.0, 1.0, 0.0])


@pytest.mark.parametrize("value,reward", [(64, 0.25), (128, 0.5), (191, 0.75)])
def test_reward_is_linear_in_the_score_between_the_ends(value, reward):
    """Fast scores 2.0, 3.0, 4.0 (the scripted judge's 1 + 4 * brightness, to one decimal) map to 1/4, 1/2, 3/4."""
    judge = QualityJudge(ScriptedBackend(brightness_answer))
    assert judge.reward(grey(value)).tolist() == pytest.approx([reward], abs=1e-6)


def test_reward_of_an_unjudgeable_image_is_logged(caplog):
    judge = QualityJudge(ScriptedBackend(brightness_answer))
    with caplog.at_level("WARNING", logger="qinsight"):
        judge.reward([grey(0), np.full((8, 8, 3), np.nan, np.float32)])
    assert "reward 0.0 for image 1" in caplog.text and "NaN" in caplog.text


# -- batching and out-of-memory back-off -----------------------------------------------------------


def test_out_of_memory_halves_the_batch_without_losing_or_repeating_images():
    seen = []

    def recorded(conversation, images):  # called only for the images of batches that fitted
        seen.append(int(np.asarray(images[0]).mean()))
        return brightness_answer(conversation, images)

    judge = QualityJudge(TightMemory(recorded, fits=2), batch_size=8)
    levels = [10, 40, 70, 100, 130, 160, 190, 220, 250]
    results = judge.score([grey(v) for v in levels])
    assert [r.score for r in results] == pytest.approx([1 + 4 * v / 255 for v in levels], abs=0.01)
    assert sorted(seen) == levels  # each image judged exactly once


def test_after_out_of_memory_later_batches_keep_the_size_that_fitted():
    backend = TightMemory(brightness_answer, fits=2)
    judge = QualityJudge(backend, batch_size=4)
    images = [grey(v) for v in range(0, 240, 6)]  # 40 images, decoded and planned 16 at a time
    assert all(r.ok for r in judge.score(images))
    assert backend.refused == [4, 4, 4, 4]  # the first window's batches, planned before the error; none after
    backend.refused.clear()
    backend.calls.clear()
    assert all(r.ok for r in judge.score(images[:8]))  # and the next call starts at the size that fitted
    assert backend.refused == [] and backend.calls == [2, 2, 2, 2]


def test_out_of_memory_on_a_single_image_is_that_images_error():
    backend = TightMemory(brightness_answer, fits=0, message="CUDA error: out of memory", error=RuntimeError)
    results = QualityJudge(backend).score([grey(1), grey(2)])
    assert all(r.score is None and r.error.startswith("out of memory even alone") for r in results)


def test_batches_group_similar_sizes_within_the_token_budget():
    backend = ScriptedBackend(brightness_answer)
    judge = QualityJudge(backend, batch_size=4, max_batch_tokens=40)
    sizes = [(56, 56), (448, 56), (56, 56), (448, 56), (56, 56)]  # 4 and 32 image tokens
    judge.score([Image.new("RGB", s, (99, 99, 99)) for s in sizes])
    assert backend.calls == [3, 1, 1]  # the small ones together; two large ones would exceed 40 tokens


# -- progress: on_result ---------------------------------------------------------------------------


@pytest.mark.parametrize("both_orders", [False, True])
@pytest.mark.parametrize("b,winner", [(220, "B"), (20, "A"), ("missing.png", None)])
def test_compare_reports_its_one_result_at_index_0(both_orders, b, winner):
    seen = []
    judge = QualityJudge(ScriptedBackend(brighter_wins))
    result = judge.compare(
        grey(100),
        grey(b) if isinstance(b, int) else b,
        both_orders=both_orders,
        on_result=lambda i, r: seen.append((i, r)),
    )
    assert len(seen) == 1 and seen[0][0] == 0 and seen[0][1] is result
    assert type(result) is ComparisonResult and result.winner == winner
    assert (result.error is None) == (winner is not None)


def test_compare_with_a_reference_reports_once():
    seen = []
    judge = QualityJudge(ScriptedBackend(brighter_wins))
    result = judge.compare(
        grey(10), grey(200), reference=grey(50), both_orders=True, on_result=lambda i, r: seen.append((i, r))
    )
    assert seen == [(0, result)] and seen[0][1] is result and result.winner == "B"


def test_reward_reports_each_image_in_input_order():
    seen = []
    judge = QualityJudge(ScriptedBackend(brightness_answer), batch_size=2)
    images = [grey(0), "missing.png", grey(255), np.full((8, 8, 3), np.nan, np.float32), grey(128)]
    rewards = judge.reward(images, on_result=lambda i, r: seen.append((i, r)))
    assert [i for i, _ in seen] == [0, 1, 2, 3, 4]
    assert all(type(r) is ScoreResult for _, r in seen)
    assert [r.score for _, r in seen] == pytest.approx([1.0, None, 5.0, None, 3.0])
    assert seen[1][1].error == "missing.png: file not found" and "NaN" in seen[3][1].error
    assert rewards.tolist() == pytest.approx([0.0 if r.score is None else (r.score - 1) / 4 for _, r in seen])


def test_reward_of_a_tensor_batch_or_one_image_reports_each():
    seen = []
    judge = QualityJudge(ScriptedBackend(brightness_answer))
    batch = torch.stack([torch.full((24, 32, 3), v) for v in (1.0, 0.0, 0.5)])  # ComfyUI's (B, H, W, C)
    rewards = judge.reward(batch, on_result=lambda i, r: seen.append((i, r)))
    assert [i for i, _ in seen] == [0, 1, 2] and all(type(r) is ScoreResult for _, r in seen)
    assert rewards.tolist() == pytest.approx([(r.score - 1) / 4 for _, r in seen])
    assert rewards[0] > rewards[2] > rewards[1]
    seen.clear()
    single = judge.reward(grey(255), on_result=lambda i, r: seen.append((i, r)))
    assert [i for i, _ in seen] == [0] and seen[0][1].score == 5.0 and single.tolist() == [1.0]


def test_inputs_that_fail_in_unusual_ways_fail_alone_in_every_method():
    """Issue 10, defect 2: a closed PIL image or a meta-device tensor raised out of score, reward, rank, compare."""
    closed = Image.new("RGB", (8, 8))
    closed.close()
    meta = torch.rand(3, 56, 56, device="meta")
    judge = QualityJudge(ScriptedBackend(brightness_rating))
    results = judge.score([grey(200), closed, meta])
    assert results[0].ok and "the PIL image cannot be read" in results[1].error
    assert "the tensor cannot be read" in results[2].error
    assert judge.reward([grey(255), meta]).tolist() == [1.0, 0.0]
    assert judge.rank([meta, grey(10), grey(250)]).order == [2, 1, 0]
    assert "the tensor cannot be read" in judge.compare(grey(1), meta).error


class NaNWeights(ScriptedBackend):
    """A model whose weights are NaN: every probability it gives is NaN."""

    def rating_distributions(self, batch):
        found = super().rating_distributions(batch)
        return [RatingDistribution(d.first * float("nan"), d.decimals) for d in found]


def test_non_finite_rating_probabilities_are_an_error_not_the_worst_score(caplog):
    """Issue 10, defect 3: a model with NaN weights scored 1.0 with no error, and the reward said nothing."""
    judge = QualityJudge(NaNWeights(brightness_rating))
    result = judge.score(grey(200), mode="fast")
    assert result.score is None and result.std is None
    assert result.error == (
        "the model's rating probabilities are not finite numbers: the checkpoint's weights or "
        "its dtype are broken (NaN or infinite values)"
    )
    result.to_json()  # strict JSON
    with caplog.at_level("WARNING", logger="qinsight"):
        assert judge.reward([grey(200)]).tolist() == [0.0]
    assert "reward 0.0 for image 0: the model's rating probabilities are not finite" in caplog.text


def test_results_serialise_as_strict_json():
    with pytest.raises(ValueError, match="Out of range float values are not JSON compliant"):
        ScoreResult(score=float("nan")).to_json()


def test_a_checkpoint_with_nan_weights_is_refused_at_load(tiny_model, tmp_path):
    """Issue 10, defect 3: such a model loaded and then scored everything 1.0 (now: each an error); the
    load-time probe says so before any image is judged."""
    import shutil

    from safetensors.torch import load_file, save_file

    broken = tmp_path / "broken"
    shutil.copytree(tiny_model, broken)
    for shard in broken.glob("*.safetensors"):
        weights = load_file(shard)
        save_file(
            {
                name: w.fill_(float("nan")) if name.endswith("lm_head.weight") or "layers.0." in name else w
                for name, w in weights.items()
            },
            shard,
            metadata={"format": "pt"},
        )
    with pytest.raises(
        ModelLoadError,
        match=r"broken: the model's logits on a probe input are not finite numbers: "
        r"its weights are broken \(NaN or infinite values\)$",
    ):
        QualityJudge.from_pretrained(broken, device="cpu")


def test_a_checkpoint_with_nan_weights_gives_errors(tiny_model):
    judge = QualityJudge.from_pretrained(tiny_model, device="cpu")
    with torch.no_grad():
        for parameter in judge.backend.model.parameters():
            parameter.fill_(float("nan"))
    results = judge.score([grey(90), noise_image(1)], mode="fast")
    assert all(r.score is None and "not finite" in r.error for r in results)


def test_a_reference_on_weights_not_trained_for_it_warns_once(caplog):
    """Issue 11: compare(reference=...) on the score_degradation weights ran the zero-shot setting silently."""
    answer = lambda conversation, images: "<answer>Image A</answer>"  # noqa: E731
    judge = QualityJudge(ScriptedBackend(answer))
    with caplog.at_level("WARNING", logger="qinsight"):
        judge.compare(grey(10), grey(20))
        assert caplog.messages == []  # no reference: the paper's two-image prompt, as trained
        judge.compare(grey(10), grey(20), reference=grey(15))
        judge.compare_pairs([(grey(1), grey(2), grey(3))])
    assert caplog.messages == [
        "comparing with a reference on weights not trained for it (profile 'q-insight'): this is the paper's "
        "zero-shot setting (75.5% accuracy vs 82.8% with the comparison weights); load subfolder 'comparison' of "
        "ByteDance/Q-Insight, or pass profile='q-insight-comparison' if these weights were trained for it"
    ]
    caplog.clear()
    with caplog.at_level("WARNING", logger="qinsight"):
        QualityJudge(ScriptedBackend(answer), profile="q-insight-comparison").compare(
            grey(1), grey(2), reference=grey(3)
        )
    assert caplog.messages == []
