"""Q-Insight's GRPO rewards on completions and labels worked out by hand."""

import math

import pytest

from qinsight_sdk.train.rewards import (
    SCORE_EPSILON,
    comparison_reward,
    completion_text,
    degradation_reward,
    first_answer,
    format_reward,
    paper_degradation,
    paper_rating,
    ranking_reward,
    score_reward,
)

GOOD_SCORE = '<think>\nSharp, well exposed.\n</think>\n<answer>\n{"rating": 3.85}\n</answer>'
GOOD_DEGRADATION = (
    '<think>\nGrainy shadows.\n</think>\n<answer>\n{"distortion_class": "noise", "severity": "moderate"}\n</answer>\n'
)
GOOD_COMPARISON = "<think>\nA keeps the edges.\n</think>\n<answer>\nImage A\n</answer>"


def chat(text):
    return [{"role": "assistant", "content": text}]


@pytest.mark.parametrize(
    "text,task,expected",
    [
        (GOOD_SCORE, "score", 1.0),
        (GOOD_DEGRADATION, "degradation", 1.0),
        (GOOD_COMPARISON, "comparison", 1.0),
        ('<think> x </think><answer> {"rating": 3} </answer>', "score", 0.0),  # the system prompt's one-liner
        (" " + GOOD_SCORE, "score", 0.0),  # text before <think>
        (GOOD_SCORE + "\nThanks!", "score", 0.0),  # text after </answer>
        (GOOD_SCORE + " \n ", "score", 1.0),  # trailing whitespace is fine
        ('<think>\nok\n</think>\n<answer>\n{"rating": {"value": 3}}\n</answer>', "score", 0.0),  # nested braces
        ('<think>\nok\n</think>\n<answer>\n{"rating": 3} {"rating": 4}\n</answer>', "score", 0.0),  # two objects
        ("<think>\nok\n</think>\n<answer>\nImage B\n</answer>", "score", 0.0),  # text where JSON belongs
        ("<think>\nok\n</think>\n<answer>\nImage B\n</answer>", "comparison", 1.0),
        ('<think>\nok\n</think>\n<answer>\n{"rating": 3}\n', "score", 0.0),  # no </answer>
        ('<THINK>\nok\n</THINK>\n<answer>\n{"rating": 3}\n</answer>', "score", 0.0),  # tags are lower case
        ('<think>\nok\n</think>\nnote\n<answer>\n{"rating": 3}\n</answer>', "score", 0.0),  # <answer> not next
    ],
)
def test_format_reward(text, task, expected):
    assert format_reward([text], task=[task]) == [expected]
    assert format_reward([chat(text)], task=[task]) == [expected]


@pytest.mark.parametrize(
    "text,mos,expected",
    [
        (GOOD_SCORE, 4.0, 1.0),  # |3.85 - 4.0| = 0.15
        (GOOD_SCORE, 4.2, 0.0),  # 0.35 is not < 0.35
        (GOOD_SCORE, 4.19, 1.0),
        ('<answer>{"rating":3.5.2}</answer>', 3.5, 0.0),  # not a number
        ('<answer>{"rating": "3.5"}</answer>', 3.5, 0.0),  # quoted value never matches
        ('<answer>{"rating": -3.5}</answer>', -3.5, 0.0),  # a sign never matches
        ('<answer>{"rating": .}</answer>', 1.0, 0.0),
        ('<answer>{"rating": x, "rating": 2.0}</answer>', 2.0, 1.0),  # an occurrence without digits is passed over
        ('<answer>{"rating": 2.0}</answer><answer>{"rating": 4.0}</answer>', 4.0, 0.0),  # the FIRST block counts
        ('<answer>{"rating": 3.0}', 3.0, 0.0),  # no closing tag: no answer
        ("{'rating': 3.0}", 3.0, 0.0),
        ('<answer>\n{"rating" :  3.10}\n</answer>', 3.0, 1.0),
    ],
)
def test_score_reward_strict(text, mos, expected):
    assert score_reward([text, chat(text)], task=["score", "score"], mos=[mos, mos]) == [expected, expected]


def test_paper_rating_reads_the_longest_run():
    assert paper_rating('<answer>{"rating": 4.25}</answer>') == 4.25
    assert paper_rating('<answer>{"rating": 4.25.}</answer>') is None


def test_score_reward_options_and_other_tasks():
    texts = [GOOD_SCORE, GOOD_DEGRADATION, "<answer>{'rating': 3.85}</answer>"]
    tasks = ["score", "degradation", "score"]
    assert score_reward(texts, task=tasks, mos=[3.85, None, 3.85]) == [1.0, None, 0.0]
    assert score_reward(texts, task=tasks, mos=[3.85, None, 3.85], strict=False) == [1.0, None, 1.0]
    gaussian = score_reward([GOOD_SCORE], task=["score"], mos=[4.35], kind="gaussian", sigma=0.5)
    assert gaussian[0] == pytest.approx(math.exp(-0.25 / 0.5))


@pytest.mark.parametrize(
    "text,label,expected",
    [
        (GOOD_DEGRADATION, ("noise", "moderate"), 1.0),
        (GOOD_DEGRADATION, ("noise", "serious"), 0.25),
        (GOOD_DEGRADATION, ("blur", "moderate"), 0.0),
        ('<answer>{"distortion_class": "null", "severity": "null"}</answer>', ("null", "null"), 1.0),
        ('<answer>{"distortion_class": null, "severity": null}</answer>', ("null", "null"), 0.0),  # JSON null
        ('<answer>{"distortion_class": "Noise", "severity": "moderate"}</answer>', ("noise", "moderate"), 0.0),
        ('<answer>{"distortion_class": " blur ",\n "severity": " slight "}</answer>', ("blur", "slight"), 1.0),
        ('<answer>{"severity": "slight", "distortion_class": "blur"}</answer>', ("blur", "slight"), 0.0),
        ('<answer>{"distortion_class": "", "severity": "slight"}</answer>', ("blur", "slight"), 0.0),
        (
            '<answer>{"distortion_class": "blur", "severity": "slight"} {"distortion_class": "noise", '
            '"severity": "serious"}</answer>',
            ("blur", "slight"),
            1.0,
        ),  # the first pair
        ('<answer>{"distortion_class": "JPEG", "severity": "slight"}</answer>', ("compression", "slight"), 0.0),
    ],
)
def test_degradation_reward_strict(text, label, expected):
    result = degradation_reward(
        [text, chat(text)], task=["degradation"] * 2, distortion_class=[label[0]] * 2, severity=[label[1]] * 2
    )
    assert result == [expected, expected]


def test_degradation_reward_tolerant_reads_jpeg_and_json_null():
    texts = [
        '<answer>{"distortion_class": "JPEG", "severity": "slight"}</answer>',
        '<answer>{"distortion_class": null, "severity": null}</answer>',
    ]
    assert degradation_reward(
        texts,
        task=["degradation"] * 2,
        distortion_class=["compression", "null"],
        severity=["slight", "null"],
        strict=False,
    ) == [1.0, 1.0]


@pytest.mark.parametrize(
    "text,label,expected",
    [
        (GOOD_COMPARISON, "Image A", 1.0),
        (GOOD_COMPARISON, "Image B", 0.0),
        ("<answer> Similar </answer>", "Similar", 1.0),
        ("<answer>image a</answer>", "Image A", 0.0),  # exact match only
        ("<answer>Image A.</answer>", "Image A", 0.0),
        ("<answer>Image A</answer><answer>Image B</answer>", "Image A", 1.0),
        ("Image A", "Image A", 0.0),
    ],
)
def test_comparison_reward_strict(text, label, expected):
    assert comparison_reward([text, chat(text)], task=["comparison"] * 2, answer=[label] * 2) == [expected] * 2


def test_rewards_skip_other_tasks_and_accept_structured_content():
    structured = [{"role": "assistant", "content": [{"type": "text", "text": GOOD_COMPARISON}]}]
    assert comparison_reward([structured, GOOD_SCORE], task=["comparison", "score"], answer=["Image A", None]) == [
        1.0,
        None,
    ]
    assert degradation_reward([GOOD_SCORE], task=["score"], distortion_class=[None], severity=[None]) == [None]
    with pytest.raises(ValueError, match="task"):
        format_reward([GOOD_SCORE], task=["caption"])


def rating(value):
    return f'<answer>{{"rating": {value}}}</answer>'


def test_ranking_reward_prefers_the_right_order():
    # two images, two samples each; image "a" has the higher MOS
    right = ranking_reward(
        [rating(4.0), rating(4.2), rating(2.0), rating(2.2)],
        task=["score"] * 4,
        mos=[80, 80, 20, 20],
        sample_id=["a", "a", "b", "b"],
    )
    wrong = ranking_reward(
        [rating(2.0), rating(2.2), rating(4.0), rating(4.2)],
        task=["score"] * 4,
        mos=[80, 80, 20, 20],
        sample_id=["a", "a", "b", "b"],
    )
    assert all(r > 0.99 for r in right) and all(r < 0.01 for r in wrong)
    # hand-worked: s = 3.0 vs image b (mean 3.0, var 0), own var 0.25 -> p = 0.5, g = 1 -> sqrt(0.5)
    worked = ranking_reward(
        [rating(3.0), rating(4.0), rating(3.0), rating(3.0)],
        task=["score"] * 4,
        mos=[5, 5, 1, 1],
        sample_id=["a", "a", "b", "b"],
    )
    assert worked[0] == pytest.approx(math.sqrt(0.5))


def test_ranking_reward_edge_cases():
    lone = ranking_reward([rating(3.0), "garbage"], task=["score", "score"], mos=[3, 3], sample_id=["a", "a"])
    assert lone == [0.0, 0.0]  # no other image to rank against; unreadable earns 0
    mixed = ranking_reward(
        [rating(3.0), GOOD_DEGRADATION], task=["score", "degradation"], mos=[3, None], sample_id=["a", "b"]
    )
    assert mixed == [0.0, None]


# -- the rewards' own rules at interior points and edges ---------------------------------------------------


def test_completion_text_of_every_shape():
    assert completion_text("plain") == "plain"
    assert completion_text([{"role": "user", "content": "q"}, {"role": "assistant", "content": 42}]) == "42"
    parts = [{"type": "image"}, {"type": "text", "text": "a"}, "stray", {"type": "text", "text": "b"}]
    assert completion_text([{"role": "assistant", "content": parts}]) == "ab"
    with pytest.raises(TypeError, match="a completion must be a string or a list of messages, got int"):
        completion_text(3)
    with pytest.raises(TypeError, match="got list"):
        completion_text([])


def test_first_answer_and_paper_degradation():
    assert first_answer("<answer>\n x \n</answer><answer>y</answer>") == "x"
    assert first_answer("<answer>x") is None
    text = '<answer>{"distortion_class": " noise ", "note": 1,\n "severity": "slight "}</answer>'
    assert paper_degradation(text) == ("noise", "slight")
    assert paper_degradation('<answer>{"distortion_class": "noise"}</answer>') is None
    assert paper_degradation('{"distortion_class": "noise", "severity": "slight"}') is None


@pytest.mark.parametrize(
    "distance,expected", [(0.0, 1.0), (0.25, math.exp(-0.125)), (0.5, math.exp(-0.5)), (1.0, math.exp(-2.0))]
)
def test_gaussian_score_reward_at_interior_points(distance, expected):
    found = score_reward([rating(3.0)], task=["score"], mos=[3.0 + distance], kind="gaussian")
    assert found == [pytest.approx(expected, abs=1e-12)]
    assert score_reward([rating(3.0)], task=["score"], mos=[3.0 - distance], kind="gaussian", sigma=0.5) == found


def test_threshold_and_its_epsilon():
    assert SCORE_EPSILON == 0.35
    assert score_reward([rating(3.0)] * 3, task=["score"] * 3, mos=[3.3, 3.36, 2.66]) == [1.0, 0.0, 1.0]
    assert score_reward([rating(3.0)] * 2, task=["score"] * 2, mos=[3.09, 3.1], epsilon=0.1) == [1.0, 0.0]
    with pytest.raises(ValueError, match="kind must be 'threshold' or 'gaussian', got 'linear'"):
        score_reward([rating(3.0)], task=["score"], mos=[3.0], kind="linear")


def test_unknown_task_names_the_choices():
    with pytest.raises(ValueError, match="task must be one of score, degradation, comparison, got 'caption'"):
        score_reward([rating(3.0)], task=["caption"], mos=[3.0])


def test_tolerant_readings():
    texts = ["<answer>{'rating': 3.0}</answer><answer>{'rating': 4.0}</answer>", "<answer>Image B.</answer>"]
    assert score_reward(texts[:1], task=["score"], mos=[4.0], strict=False) == [1.0]
    assert comparison_reward(texts[1:], task=["comparison"], answer=["Image B"], strict=False) == [1.0]
    assert comparison_reward(["<answer>both</answer>"], task=["comparison"], answer=["Image B"], strict=False) == [0.0]
    bad = '<answer>{"distortion_class": "rain", "severity": "slight"}</answer>'
    assert degradation_reward(
        [bad], task=["degradation"], distortion_class=["rain"], severity=["slight"], strict=False
    ) == [0.0]


def test_ranking_reward_by_hand_for_ties_and_three_images():
    # equal MOS: g = 0.5; both images certain of 3.0, so p = 0.5 and the reward is 2 sqrt(0.25) = 1
    tie = ranking_reward([rating(3.0)] * 4, task=["score"] * 4, mos=[2, 2, 2, 2], sample_id=[0, 0, 1, 1])
    assert tie == [pytest.approx(1.0)] * 4
    # three images, certain scores 4, 3, 2 against MOS order 1 > 2 > 3 except that image 2 is rated above 1
    texts = [rating(4.0), rating(4.0), rating(2.0), rating(2.0), rating(3.0), rating(3.0)]
    found = ranking_reward(texts, task=["score"] * 6, mos=[9, 9, 5, 5, 1, 1], sample_id=["x", "x", "y", "y", "z", "z"])
    # x beats y and z, rightly: 1; y is below z though its MOS is higher: half right; z: half right
    assert found == pytest.approx([1.0, 1.0, 0.5, 0.5, 0.5, 0.5])
    spread = ranking_reward(
        [rating(3.0), rating(4.0), rating(3.0)], task=["score"] * 3, mos=[5, 5, 1], sample_id=["a", "a", "b"]
    )
    # a's samples 3 and 4 (variance 0.25) against b's 3: p = Phi(0) and Phi(2) for g = 1
    phi = [0.5 * (1 + math.erf(z / math.sqrt(2))) for z in (0.0, 2.0)]
    assert spread[:2] == pytest.approx([math.sqrt(p) for p in phi])
    # b's 3 against a (mean 3.5, variance 0.25): p = Phi(-1), g = 0
    assert spread[2] == pytest.approx(math.sqrt(1 - 0.5 * (1 + math.erf(-1 / math.sqrt(2)))))


def test_reward_edges():
    assert completion_text([{"role": "assistant"}]) == ""  # a message without content says nothing
    assert score_reward([rating(3.0)], task=["score"], mos=[3.5], epsilon=0.5) == [0.0]  # strictly within
    cut = '<answer>{"distortion_class": "blur"}</answer>'  # no severity: the tolerant parser's error
    assert degradation_reward(
        [cut], task=["degradation"], distortion_class=["blur"], severity=["null"], strict=False
    ) == [0.0]


def test_ranking_reward_reading_and_mixed_batches():
    quoted = "<answer>{'rating': 4.0}</answer>"
    texts = [GOOD_DEGRADATION, quoted, quoted, rating(2.0), rating(2.0)]
    tasks = ["degradation", "score", "score", "score", "score"]
    mos, ids = [None, 5, 5, 1, 1], ["d", "a", "a", "b", "b"]
    assert ranking_reward(texts, task=tasks, mos=mos, sample_id=ids) == [None, 0.0, 0.0, 0.0, 0.0]  # strict
    tolerant = ranking_reward(texts, task=tasks, mos=mos, sample_id=ids, strict=False)
    assert tolerant == [None] + [pytest.approx(1.0)] * 4
    partly = ranking_reward(
        [rating(3.0), "garbage", rating(2.0)], task=["score"] * 3, mos=[5, 5, 1], sample_id=["a", "a", "b"]
    )
    assert partly == [pytest.approx(1.0), 0.0, pytest.approx(1.0)]  # an unreadable sample earns 0, not an error
