"""The parsers on realistic and broken answers; and a property test that they never raise."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qinsight_sdk.judging import parsing
from qinsight_sdk.judging.parsing import (
    ParsedComparison,
    ParsedDegradation,
    ParsedScore,
    extract_answer,
    parse_comparison,
    parse_degradation,
    parse_first_number,
    parse_score,
)

TRAINED_SCORE = '<think>\nThe image is sharp with good exposure.\n</think>\n<answer>\n{"rating": 3.85}\n</answer>'

SCORE_CASES = [
    (TRAINED_SCORE, 3.85),
    ('<think> x </think><answer> {"rating": 4.2} </answer>', 4.2),  # one line
    ("<think>ok</think>\n<answer>{'rating': 2.5}</answer>", 2.5),  # single quotes
    ('<answer>{"rating": 3.1,}</answer>', 3.1),  # trailing comma
    ('<answer>{"rating": "4.10"}</answer>', 4.1),  # quoted number
    ('<answer>{"rating": 5.2}</answer>', 5.2),  # a small overshoot, as written
    ('<answer>{"rating": 0.4}</answer>', 0.4),  # and below
    ('<answer>{"rating": 3.0}</answer> <answer>{"rating": 4.5}</answer>', 4.5),  # last answer wins
    ('<think>hmm</think>\n<answer>\n{"rating": 3.75}\n', 3.75),  # no closing tag
    ('<answer>{"rating": 3.2} The image is decent.</answer>', 3.2),  # trailing text
    ('<answer>\n```json\n{"rating": 2.95}\n```\n</answer>', 2.95),  # fenced JSON
    ('<answer>{"Rating": 4}</answer>', 4.0),  # key case
    ("<answer>{rating: 3.3}</answer>", 3.3),  # bare key
    ("<answer>rating: 3.6</answer>", 3.6),  # no braces
    ("<answer>4.25</answer>", 4.25),  # bare number
    ('<think>reason</think> {"rating": 3.4}', 3.4),  # no answer tag
    ('<answer>{"rating": 2.0} on reflection {"rating": 4.0}</answer>', 4.0),  # the last object wins
    ("<answer>rating: 2.0, on reflection rating: 4.0</answer>", 4.0),  # the last rating wins
    ("<answer>rating = 4.5</answer>", 4.5),  # '=' for ':'
    ("<answer> 4.25 </answer>", 4.25),  # bare number, padded
    ("<answer>.5e1</answer>", 5.0),  # any float literal
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
    '<answer>{"rating": 36}</answer>',  # far outside the scale
    '<answer>{"rating": 7.2}</answer>',
    '<answer>{"rating": -3}</answer>',
    '<answer>{"rating": 6}</answer>',
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
    (
        '<think>grainy</think>\n<answer>\n{"distortion_class": "noise", "severity": "moderate"}\n</answer>',
        "noise",
        "moderate",
    ),
    ('<answer>{"distortion_class": "JPEG", "severity": "Serious"}</answer>', "compression", "serious"),
    ('<answer>{"distortion_class": "null", "severity": "null"}</answer>', None, None),
    ('<answer>{"distortion_class": null, "severity": null}</answer>', None, None),
    ('<answer>{"distortion_class": "none", "severity": "slight"}</answer>', None, "slight"),  # as said
    ('<answer>{"distortion_class": "blur", "severity": "null"}</answer>', "blur", None),  # as said
    ("<answer>{'distortion_class': 'blur', 'severity': 'obvious',}</answer>", "blur", "obvious"),
    ('<answer>{"distortion_class": " darken ", "severity": "catastrophic"}', "darken", "catastrophic"),
    ("<answer>distortion_class: blur, severity: slight</answer>", "blur", "slight"),
    (
        '<answer>{"distortion_class": "noise", "severity": "slight"}</answer>'
        '<answer>{"distortion_class": "blur", "severity": "serious"}</answer>',
        "blur",
        "serious",
    ),
]


@pytest.mark.parametrize("text,distortion,severity", DEGRADATION_CASES)
def test_degradation_reads_realistic_answers(text, distortion, severity):
    parsed = parse_degradation(text)
    assert parsed.error is None, parsed.error
    assert (parsed.distortion, parsed.severity) == (distortion, severity)


@pytest.mark.parametrize(
    "text,fragment",
    [
        ('<answer>{"distortion_class": "rain", "severity": "slight"}</answer>', "unknown distortion class"),
        ('<answer>{"distortion_class": "blur", "severity": "extreme"}</answer>', "unknown severity"),
        ('<answer>{"distortion_class": "blur"}</answer>', "without a severity"),
        ("<answer>It is blurry.</answer>", "no distortion_class"),
        ("garbage", "no distortion_class"),
    ],
)
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


@pytest.mark.parametrize(
    "text", ["<answer>Image A and Image B are both fine</answer>", "<answer>the left one</answer>", "", "Imagery B"]
)
def test_comparison_reports_ambiguous_or_missing_verdicts(text):
    parsed = parse_comparison(text)
    assert parsed.winner is None and parsed.error


def test_extract_answer_takes_last_block():
    assert extract_answer("<answer>1</answer> x <answer> 2 </answer>") == "2"
    assert extract_answer("no tags") is None


FRAGMENTS = st.sampled_from(
    [
        "<think>",
        "</think>",
        "<answer>",
        "</answer>",
        "{",
        "}",
        '"rating"',
        ":",
        "'",
        ",",
        "3.5",
        "1e309",
        "nan",
        '"distortion_class"',
        '"severity"',
        "null",
        "Image A",
        "Image B",
        "Similar",
        "\n",
        "\\",
        "\x00",
        "\ud7ff",
    ]
)
TEXTS = st.one_of(st.text(max_size=300), st.lists(st.one_of(FRAGMENTS, st.text(max_size=8)), max_size=40).map("".join))


@settings(max_examples=400, deadline=None)
@given(TEXTS)
def test_parsers_never_raise(text):
    score = parse_score(text)
    assert score.score is None or 1.0 <= score.score <= 5.0
    assert (score.score is None) == (score.error is not None)  # a missing score is always explained
    degradation = parse_degradation(text)
    assert degradation.distortion in (None, "noise", "compression", "blur", "darken")
    assert degradation.severity in (None, "slight", "moderate", "obvious", "serious", "catastrophic")
    comparison = parse_comparison(text)
    assert comparison.winner in (None, "A", "B", "similar")
    assert (comparison.winner is None) == (comparison.error is not None)  # a missing verdict is explained


# -- whole results, reasoning and error text included: what users and the reward read ----------------


NOTE = " (no <answer> block found)"

EXACT_SCORES = [
    ('<think>fine</think><answer>{"rating": 3.5}</answer>', ParsedScore(3.5, "fine", None)),
    ("<think>fine</think><answer>rating: 3.5</answer>", ParsedScore(3.5, "fine", None)),
    ("<think>fine</think><answer>3.5</answer>", ParsedScore(3.5, "fine", None)),
    ("<think>fine</think> 4.5", ParsedScore(None, "fine", "no rating found in the answer" + NOTE)),
    ("<think>so a rating: 3 fits", ParsedScore(None, "so a rating: 3 fits", "no rating found in the answer" + NOTE)),
    ("<THINK>so rating: 3", ParsedScore(None, "so rating: 3", "no rating found in the answer" + NOTE)),
    ('{"rating": 2.5}', ParsedScore(2.5, None, None)),  # no tags at all: the whole text is the answer
    ("<think>fine</think><answer>good</answer>", ParsedScore(None, "fine", "no rating found in the answer")),
    (
        '<think>fine</think><answer>{"rating": "excellent"}</answer>',
        ParsedScore(None, "fine", "rating 'excellent' is not a number"),
    ),
    ('<answer>{"rating": null}</answer>', ParsedScore(None, None, "rating None is not a number")),
    ("<answer>rating: 1e999</answer>", ParsedScore(None, None, "rating '1e999' is not a finite number")),
    # the JSON object is read before the tolerant fallback, which would take the last "rating:" in the text
    ('<answer>{"rating": 3, "note": "rating: 5"}</answer>', ParsedScore(3.0, None, None)),
    ('<answer>{"rating": 3, "note": "rating: 5"', ParsedScore(3.0, None, None)),  # unclosed
    ("<answer>{'rating': 3, 'note': 'rating: 5'}</answer>", ParsedScore(3.0, None, None)),  # single quotes
    ('<answer>{"rating": 3, "note": "rating: 5",}</answer>', ParsedScore(3.0, None, None)),  # trailing comma
    ('<answer>{Rating: 3, note: "rating: 5"}</answer>', ParsedScore(3.0, None, None)),  # bare keys
    ('<answer>{"Note": "rating: 5", "RATING": 2}</answer>', ParsedScore(2.0, None, None)),
    ('<answer>{"rating": 2} {"rating": 3} {"note": 1}</answer>', ParsedScore(3.0, None, None)),  # last with a rating
    ("<answer>1e999</answer>", ParsedScore(None, None, "rating '1e999' is not a finite number")),
]


@pytest.mark.parametrize("text,expected", EXACT_SCORES)
def test_score_results_exactly(text, expected):
    assert parse_score(text) == expected


EXACT_DEGRADATIONS = [
    (
        '<think>grain</think><answer>{"distortion_class": "noise", "severity": "slight"}</answer>',
        ParsedDegradation("noise", "slight", "grain", None),
    ),
    (
        '<answer>{"distortion": "blur", "severity": "slight", "note": "distortion: noise"}</answer>',
        ParsedDegradation("blur", "slight", None, None),
    ),
    (
        '<answer>{"distortion_class": "\'blur\'.", "severity": "slight."}</answer>',
        ParsedDegradation("blur", "slight", None, None),
    ),
    (
        '<answer>{"distortion_class": "Low\\n  light", "severity": "obvious"}</answer>',
        ParsedDegradation("darken", "obvious", None, None),
    ),
    ("<answer>DISTORTION_CLASS = Blur; SEVERITY = Serious</answer>", ParsedDegradation("blur", "serious", None, None)),
    (
        "<answer>distortion_class: blur</answer>",
        ParsedDegradation("blur", None, None, "distortion 'blur' given without a severity"),
    ),
    (
        '<think>hm</think><answer>{"distortion_class": "rain", "severity": "extreme"}</answer>',
        ParsedDegradation(None, None, "hm", "unknown distortion class 'rain'; unknown severity 'extreme'"),
    ),
    ("<think>hm</think> blurry", ParsedDegradation(None, None, "hm", "no distortion_class found in the answer" + NOTE)),
    ("<answer>blurry</answer>", ParsedDegradation(None, None, None, "no distortion_class found in the answer")),
]


@pytest.mark.parametrize("text,expected", EXACT_DEGRADATIONS)
def test_degradation_results_exactly(text, expected):
    assert parse_degradation(text) == expected


EXACT_COMPARISONS = [
    ("<think>A is sharp</think><answer>Image A</answer>", ParsedComparison("A", "A is sharp", None)),
    (
        "<think>A is sharp</think><answer>Image B is better than image b's twin</answer>",
        ParsedComparison("B", "A is sharp", None),
    ),
    ("<think>Image A looks sharp</THINK> Image B", ParsedComparison("B", "Image A looks sharp", None)),
    ("<answer>Similar.</answer>", ParsedComparison("similar", None, None)),
    ("<answer>B</answer>", ParsedComparison("B", None, None)),  # the bare letter
    ("<answer> a. </answer>", ParsedComparison("A", None, None)),
    (
        "<think>x</think><answer>Image A, or maybe Image B</answer>",
        ParsedComparison(None, "x", "the answer names more than one of Image A, Image B, Similar"),
    ),
    (
        "<think>x</think><answer>the left one</answer>",
        ParsedComparison(None, "x", "the answer names none of Image A, Image B, Similar"),
    ),
    ("the left one", ParsedComparison(None, None, "the answer names none of Image A, Image B, Similar" + NOTE)),
]


@pytest.mark.parametrize("text,expected", EXACT_COMPARISONS)
def test_comparison_results_exactly(text, expected):
    assert parse_comparison(text) == expected


@pytest.mark.parametrize(
    "parse,result",
    [
        (parse_score, ParsedScore(None, None, "could not parse the answer: boom")),
        (parse_degradation, ParsedDegradation(None, None, None, "could not parse the answer: boom")),
        (parse_comparison, ParsedComparison(None, None, "could not parse the answer: boom")),
    ],
)
def test_a_parser_that_fails_inside_returns_an_error(monkeypatch, parse, result):
    def boom(text):
        raise RuntimeError("boom")

    monkeypatch.setattr(parsing, "_answer_or_tail", boom)
    assert parse("<answer>anything</answer>") == result


# -- a judge's own scale, and the readers of judges other than Q-Insight (profiles) ---------------------------

ON_SCALE = [  # (the judge's scale, its rating, the rating on 1-5)
    ((1.0, 5.0), "3.85", 3.85),
    ((0.0, 10.0), "7.5", 4.0),
    ((0.0, 10.0), "0", 1.0),
    ((0.0, 10.0), "10", 5.0),
    ((0.0, 10.0), "12", 5.8),  # a small overshoot: as written, never clamped
    ((0.0, 10.0), "-2", 0.2),  # and below
    ((10.0, 20.0), "15", 3.0),
    ((10.0, 20.0), "12.5", 2.0),
    ((10.0, 20.0), "8", 0.2),
    ((10.0, 20.0), "22", 5.8),
    ((-1.0, 1.0), "0.5", 4.0),
]


@pytest.mark.parametrize("rating_range, rating, expected", ON_SCALE)
def test_a_rating_on_the_judges_scale_is_mapped_onto_one_to_five_as_written(rating_range, rating, expected):
    for parsed in (
        parse_score(f'<answer>{{"rating": {rating}}}</answer>', rating_range),
        parse_score(f"<answer>rating: {rating}</answer>", rating_range),
        parse_score(f"<answer>{rating}</answer>", rating_range),
        parsing.pattern_reader(r"Score: (-?[0-9.]+)", rating_range)(f"Score: {rating}"),
    ):
        assert (parsed.score, parsed.reasoning, parsed.error) == (pytest.approx(expected), None, None)
    if not rating.startswith("-"):  # VisualQuality-R1's number has no sign
        parsed = parse_first_number(f"<answer>{rating}</answer>", rating_range)
        assert (parsed.score, parsed.reasoning, parsed.error) == (pytest.approx(expected), None, None)


EXACT_FIRST_NUMBERS = [
    ("<think>3 birds</think><answer>3.75, or 4</answer>", ParsedScore(3.75, "3 birds", None)),
    ("<answer>Score 4.</answer>", ParsedScore(4.0, None, None)),
    ("<answer>rated 2.5/5</answer>", ParsedScore(2.5, None, None)),
    ("<think>sharp</think> 4.5", ParsedScore(4.5, "sharp", None)),  # after the reasoning
    ("<think>sharp</think> good", ParsedScore(None, "sharp", "no number found in the answer" + NOTE)),
    ("<think>so 3 fits", ParsedScore(None, "so 3 fits", "no number found in the answer" + NOTE)),
    ("<answer>good</answer>", ParsedScore(None, None, "no number found in the answer")),
    ("<answer>1e999</answer>", ParsedScore(1.0, None, None)),  # its pattern reads the 1
    ("<answer>" + "9" * 400 + "</answer>", ParsedScore(None, None, f"rating '{'9' * 400}' is not a finite number")),
]


@pytest.mark.parametrize("text,expected", EXACT_FIRST_NUMBERS)
def test_first_number_results_exactly(text, expected):
    assert parse_first_number(text) == expected


EXACT_PATTERNS = [
    ("<think>fine</think> Score: 2 then Score: 4.5", ParsedScore(4.5, "fine", None)),  # the last match
    ("Score: 3", ParsedScore(3.0, None, None)),
    ("Score: many", ParsedScore(None, None, r"the answer does not match the judge's pattern 'Score: ([0-9.]+)'")),
    ("<think>hm</think>", ParsedScore(None, "hm", r"the answer does not match the judge's pattern 'Score: ([0-9.]+)'")),
    ("Score: 1.2.3", ParsedScore(None, None, "rating '1.2.3' is not a number")),
]


@pytest.mark.parametrize("text,expected", EXACT_PATTERNS)
def test_pattern_results_exactly(text, expected):
    assert parsing.pattern_reader(r"Score: ([0-9.]+)")(text) == expected


def test_a_pattern_reader_that_fails_inside_returns_an_error():
    assert parsing.pattern_reader(r"Score: [0-9]+")("Score: 3") == ParsedScore(
        None, None, "could not parse the answer: no such group"
    )


def test_the_first_number_reader_that_fails_inside_returns_an_error(monkeypatch):
    def boom(text):
        raise RuntimeError("boom")

    monkeypatch.setattr(parsing, "_answer_or_tail", boom)
    assert parse_first_number("<answer>3") == ParsedScore(None, None, "could not parse the answer: boom")


FAR_OUTSIDE = [  # (the judge's scale, its rating, the error): the number is kept, never read as an end of the scale
    ((1.0, 5.0), "36", "rating 36 is far outside the judge's scale 1-5 (more than 1 beyond it): the answer is broken"),
    (
        (1.0, 5.0),
        "7.2",
        "rating 7.2 is far outside the judge's scale 1-5 (more than 1 beyond it): the answer is broken",
    ),
    ((1.0, 5.0), "6", "rating 6 is far outside the judge's scale 1-5 (more than 1 beyond it): the answer is broken"),
    ((1.0, 5.0), "0", "rating 0 is far outside the judge's scale 1-5 (more than 1 beyond it): the answer is broken"),
    (
        (0.0, 10.0),
        "12.5",
        "rating 12.5 is far outside the judge's scale 0-10 (more than 2.5 beyond it): the answer is broken",
    ),
]


@pytest.mark.parametrize("rating_range, rating, error", FAR_OUTSIDE)
def test_a_rating_far_outside_the_scale_is_the_items_error_with_the_number_kept(rating_range, rating, error):
    """Issue 26: {"rating": 36} once read as a confident 5.0."""
    for parsed in (
        parse_score(f'<answer>{{"rating": {rating}}}</answer>', rating_range),
        parse_score(f"<answer>{rating}</answer>", rating_range),
        parse_first_number(f"<answer>{rating}</answer>", rating_range),
        parsing.pattern_reader(r"Score: (-?[0-9.]+)", rating_range)(f"Score: {rating}"),
    ):
        assert (parsed.score, parsed.error) == (None, error)
    assert parse_score('<answer>{"rating": 5.99}</answer>').score == 5.99  # just inside: as written
    assert parse_score('<answer>{"rating": 0.01}</answer>').score == 0.01


def test_visualquality_r1_reads_the_last_closed_answer_block_as_its_code_does():
    """Its code: re.findall(r'<answer>(.*?)</answer>', text, re.DOTALL)[-1]; an unclosed last block is passed over."""
    assert parse_first_number("<answer>3.5</answer> on reflection <answer>4.8") == ParsedScore(3.5, None, None)
    assert parse_first_number("<answer>2</answer><answer>4.25</answer>") == ParsedScore(4.25, None, None)
    assert parse_first_number("<think>a</think><answer>4.1") == ParsedScore(4.1, "a", None)  # none closed: tolerant
