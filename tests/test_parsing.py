"""The parsers on realistic and broken answers; and a property test that they never raise."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qinsight_sdk.parsing import extract_answer, parse_comparison, parse_degradation, parse_score

TRAINED_SCORE = '<think>\nThe image is sharp with good exposure.\n</think>\n<answer>\n{"rating": 3.85}\n</answer>'

SCORE_CASES = [
    (TRAINED_SCORE, 3.85),
    ('<think> x </think><answer> {"rating": 4.2} </answer>', 4.2),               # one line
    ("<think>ok</think>\n<answer>{'rating': 2.5}</answer>", 2.5),                # single quotes
    ('<answer>{"rating": 3.1,}</answer>', 3.1),                                   # trailing comma
    ('<answer>{"rating": "4.10"}</answer>', 4.1),                                 # quoted number
    ('<answer>{"rating": 7.3}</answer>', 5.0),                                    # clamped high
    ('<answer>{"rating": -2}</answer>', 1.0),                                     # clamped low
    ('<answer>{"rating": 3.0}</answer> <answer>{"rating": 4.5}</answer>', 4.5),  # last answer wins
    ('<think>hmm</think>\n<answer>\n{"rating": 3.75}\n', 3.75),                   # no closing tag
    ('<answer>{"rating": 3.2} The image is decent.</answer>', 3.2),               # trailing text
    ('<answer>\n```json\n{"rating": 2.95}\n```\n</answer>', 2.95),                # fenced JSON
    ('<answer>{"Rating": 4}</answer>', 4.0),                                      # key case
    ('<answer>{rating: 3.3}</answer>', 3.3),                                      # bare key
    ('<answer>rating: 3.6</answer>', 3.6),                                        # no braces
    ("<answer>4.25</answer>", 4.25),                                              # bare number
    ('<think>reason</think> {"rating": 3.4}', 3.4),                               # no answer tag
    ('<answer>{"rating": 2.0} on reflection {"rating": 4.0}</answer>', 4.0),      # the last object wins
    ("<answer>rating: 2.0, on reflection rating: 4.0</answer>", 4.0),             # the last rating wins
    ("<answer>rating = 4.5</answer>", 4.5),                                       # '=' for ':'
    ("<answer> 4.25 </answer>", 4.25),                                            # bare number, padded
    ("<answer>.5e1</answer>", 5.0),                                               # any float literal
]

SCORE_ERRORS = [
    "",
    "The picture looks fine.",
    '<answer>{"rating": "excellent"}</answer>',
    '<answer>{"rating": null}</answer>',
    '<answer>{"rating": NaN}</answer>',
    '<answer>{"rating": Infinity}</answer>',
    '<answer>{"score": 3.5}</answer>',
    "<answer></answer>",
    '<answer>{"rating": true}</answer>',
]


@pytest.mark.parametrize("text,expected", SCORE_CASES)
def test_score_reads_realistic_answers(text, expected):
    parsed = parse_score(text)
    assert parsed.error is None, parsed.error
    assert parsed.score == pytest.approx(expected)


@pytest.mark.parametrize("text", SCORE_ERRORS)
def test_score_reports_what_it_cannot_read(text):
    parsed = parse_score(text)
    assert parsed.score is None
    assert parsed.error


def test_score_reasoning_comes_from_think_block():
    assert parse_score(TRAINED_SCORE).reasoning == "The image is sharp with good exposure."
    assert parse_score('Looks blurry.\n<answer>{"rating": 2}</answer>').reasoning == "Looks blurry."
    assert parse_score('<answer>{"rating": 2}</answer>').reasoning is None


DEGRADATION_CASES = [
    ('<think>grainy</think>\n<answer>\n{"distortion_class": "noise", "severity": "moderate"}\n</answer>',
     "noise", "moderate"),
    ('<answer>{"distortion_class": "JPEG", "severity": "Serious"}</answer>', "compression", "serious"),
    ('<answer>{"distortion_class": "null", "severity": "null"}</answer>', None, None),
    ('<answer>{"distortion_class": null, "severity": null}</answer>', None, None),
    ('<answer>{"distortion_class": "none", "severity": "slight"}</answer>', None, None),
    ("<answer>{'distortion_class': 'blur', 'severity': 'obvious',}</answer>", "blur", "obvious"),
    ('<answer>{"distortion_class": " darken ", "severity": "catastrophic"}', "darken", "catastrophic"),
    ('<answer>distortion_class: blur, severity: slight</answer>', "blur", "slight"),
    ('<answer>{"distortion_class": "noise", "severity": "slight"}</answer>'
     '<answer>{"distortion_class": "blur", "severity": "serious"}</answer>', "blur", "serious"),
]


@pytest.mark.parametrize("text,distortion,severity", DEGRADATION_CASES)
def test_degradation_reads_realistic_answers(text, distortion, severity):
    parsed = parse_degradation(text)
    assert parsed.error is None, parsed.error
    assert (parsed.distortion, parsed.severity) == (distortion, severity)


@pytest.mark.parametrize("text,fragment", [
    ('<answer>{"distortion_class": "rain", "severity": "slight"}</answer>', "unknown distortion class"),
    ('<answer>{"distortion_class": "blur", "severity": "extreme"}</answer>', "unknown severity"),
    ('<answer>{"distortion_class": "blur"}</answer>', "without a severity"),
    ("<answer>It is blurry.</answer>", "no distortion_class"),
    ("garbage", "no distortion_class"),
])
def test_degradation_reports_what_it_cannot_read(text, fragment):
    parsed = parse_degradation(text)
    assert parsed.error and fragment in parsed.error


COMPARISON_CASES = [
    ("<think>A is sharper</think>\n<answer>\nImage A\n</answer>", "A"),
    ("<answer>Image B</answer>", "B"),
    ("<answer> Similar </answer>", "similar"),
    ("<answer>image b.</answer>", "B"),
    ("<answer>Image A is better because it has less noise.</answer>", "A"),
    ('<answer>"Image B"</answer>', "B"),
    ("<answer>ImageA</answer>", "A"),
    ("<answer>Image A</answer><answer>Image B</answer>", "B"),
]


@pytest.mark.parametrize("text,winner", COMPARISON_CASES)
def test_comparison_reads_realistic_answers(text, winner):
    parsed = parse_comparison(text)
    assert parsed.error is None, parsed.error
    assert parsed.winner == winner


@pytest.mark.parametrize("text", ["<answer>Image A and Image B are both fine</answer>",
                                  "<answer>the left one</answer>", "", "Imagery B"])
def test_comparison_reports_ambiguous_or_missing_verdicts(text):
    parsed = parse_comparison(text)
    assert parsed.winner is None and parsed.error


def test_extract_answer_takes_last_block():
    assert extract_answer("<answer>1</answer> x <answer> 2 </answer>") == "2"
    assert extract_answer("no tags") is None


FRAGMENTS = st.sampled_from(["<think>", "</think>", "<answer>", "</answer>", "{", "}", '"rating"', ":",
                             "'", ",", "3.5", "1e309", "nan", '"distortion_class"', '"severity"', "null",
                             "Image A", "Image B", "Similar", "\n", "\\", "\x00", "\ud7ff"])
TEXTS = st.one_of(st.text(max_size=300), st.lists(st.one_of(FRAGMENTS, st.text(max_size=8)), max_size=40)
                  .map("".join))


@settings(max_examples=400, deadline=None)
@given(TEXTS)
def test_parsers_never_raise(text):
    score = parse_score(text)
    assert score.score is None or 1.0 <= score.score <= 5.0
    assert (score.score is None) == (score.error is not None)  # a missing score is always explained
    degradation = parse_degradation(text)
    assert degradation.distortion in (None, "noise", "compression", "blur", "darken")
    comparison = parse_comparison(text)
    assert comparison.winner in (None, "A", "B", "similar")
