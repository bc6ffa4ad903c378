"""The task table: spellings, records, prediction rows, aggregation, and what each task promises."""

from pathlib import Path

import pytest

from qinsight_sdk.backends.base import Generation
from qinsight_sdk.evaluation import plots
from qinsight_sdk.judging.parsing import ParsedDegradation, parse_comparison, parse_degradation, parse_score
from qinsight_sdk.judging.results import ComparisonResult, DegradationResult, ScoreResult
from qinsight_sdk.judging.tasks import TASK_NAMES, TASKS, answer_of_winner, degradation_label, normalise_mos, reconcile


def test_the_table_holds_the_three_tasks_with_their_result_types_and_modes():
    assert TASK_NAMES == ("score", "degradation", "comparison")
    assert [TASKS[t].result_type for t in TASK_NAMES] == [ScoreResult, DegradationResult, ComparisonResult]
    assert [TASKS[t].modes for t in TASK_NAMES] == [("reason", "fast"), ("reason",), ("reason",)]
    assert [TASKS[t].plot is None for t in TASK_NAMES] == [False, False, True]
    assert all(TASKS[name].name == name for name in TASK_NAMES)


def test_spellings_between_results_and_labels():
    assert [answer_of_winner(w) for w in ("A", "B", "similar", None)] == ["Image A", "Image B", "Similar", None]
    assert [degradation_label(v) for v in ("blur", "slight", None)] == ["blur", "slight", "null"]


def test_mos_is_normalised_as_the_paper_did():
    assert normalise_mos(50, 0, 100) == 3.0
    assert normalise_mos(0, 0, 100) == 1.0 and normalise_mos(100, 0, 100) == 5.0
    assert normalise_mos(7, 2, 12) == pytest.approx(3.0)
    with pytest.raises(ValueError, match=r"MOS range \[2, 2\] is empty"):
        normalise_mos(1, 2, 2)


def test_records_give_image_names_in_prompt_order_and_checked_labels():
    read = {name: TASKS[name].read_record for name in TASK_NAMES}
    assert read["score"]({"image": "a.png", "mos": 60, "mos_range": [0, 100]}) == (["a.png"], {"mos": 3.4})
    assert read["score"]({"image": "a.png", "mos": "4.5"}) == (["a.png"], {"mos": 4.5})
    assert read["degradation"]({"image": "b.png", "distortion_class": "null", "severity": "null"}) == (
        ["b.png"],
        {"distortion_class": "null", "severity": "null"},
    )
    assert read["comparison"]({"image_a": "x", "image_b": "y", "reference": "r", "answer": "Similar"}) == (
        ["r", "x", "y"],
        {"answer": "Similar"},
    )
    assert read["comparison"]({"image_a": "x", "image_b": "y", "reference": None, "answer": "Image B"}) == (
        ["x", "y"],
        {"answer": "Image B"},
    )
    with pytest.raises(ValueError, match="mos 5.5 is outside"):
        read["score"]({"image": "a.png", "mos": 5.5})
    with pytest.raises(ValueError, match="unknown label 'blurry' / 'slight'"):
        read["degradation"]({"image": "b.png", "distortion_class": "blurry", "severity": "slight"})
    with pytest.raises(ValueError, match="unknown label 'blur' / 'mild'"):
        read["degradation"]({"image": "b.png", "distortion_class": "blur", "severity": "mild"})
    with pytest.raises(ValueError, match="answer must be one of"):
        read["comparison"]({"image_a": "x", "image_b": "y", "answer": "A"})


def test_a_row_without_a_usable_prediction_says_why():
    problem = {name: TASKS[name].row_problem for name in TASK_NAMES}
    assert problem["score"]({"score": 1.0}) is None
    assert problem["score"]({"score": None}) == problem["score"]({}) == "the prediction row has no score"
    assert problem["degradation"]({"distortion": None, "severity": None}) is None
    assert problem["degradation"]({"distortion": "blur"}) == "the prediction row lacks distortion, severity"
    assert problem["comparison"]({"winner": "similar"}) is None and problem["comparison"]({"winner": "B"}) is None
    assert problem["comparison"]({"winner": "Image A"}) == "the prediction row's winner is 'Image A'"


class Labelled:
    def __init__(self, **labels):
        self.__dict__.update(labels)


def test_metrics_read_each_tasks_rows_and_labels():
    samples = [Labelled(mos=m) for m in (1.0, 2.0, 3.0, 4.0, 5.0)]
    found = TASKS["score"].metrics(samples, [{"score": s} for s in (1.5, 2.0, 2.5, 4.5, 5.0)], 0)
    assert found["n"] == 5 and found["srcc"] == pytest.approx(1.0) and found["srcc_ci95"] is None
    samples = [
        Labelled(distortion_class="null", severity="null"),
        Labelled(distortion_class="blur", severity="slight"),
        Labelled(distortion_class="blur", severity="serious"),
    ]
    rows = [
        {"distortion": None, "severity": None},
        {"distortion": "blur", "severity": "slight"},
        {"distortion": "blur", "severity": "obvious"},
    ]
    found = TASKS["degradation"].metrics(samples, rows, 0)
    assert found["per_class"]["null"] == {"n": 1, "class_accuracy": 1.0, "severity_accuracy": 1.0}
    assert found["per_class"]["blur"] == {"n": 2, "class_accuracy": 1.0, "severity_accuracy": 0.5}
    found = TASKS["comparison"].metrics(
        [Labelled(answer="Image A"), Labelled(answer="Similar")], [{"winner": "A"}, {"winner": "B"}], 0
    )
    assert found["accuracy"] == 0.5


def test_summaries_are_readable_lines():
    score = {
        "srcc": 0.91234,
        "srcc_ci95": [0.8, 0.95],
        "plcc": None,
        "plcc_ci95": None,
        "plcc_logistic": 0.5,
        "krcc": 0.7,
        "rmse": 0.25,
        "rmse_logistic": 0.125,
    }
    assert list(TASKS["score"].summary(score)) == [
        "SRCC 0.9123 (95% CI 0.800 to 0.950)",
        "PLCC n/a",
        "PLCC after the 4-parameter logistic fit 0.5000; KRCC 0.7000; RMSE 0.2500 (after the fit 0.1250)",
    ]
    score.update(rmse_logistic=None)
    assert list(TASKS["score"].summary(score))[-1].endswith("(after the fit n/a)")
    degradation = {
        "per_class": {"blur": {"n": 4, "class_accuracy": 0.75, "severity_accuracy": 0.5}},
        "mean": {"class_accuracy": 0.75, "severity_accuracy": 0.5},
    }
    assert list(TASKS["degradation"].summary(degradation)) == [
        "class         n  class acc  severity acc",
        "blur          4      0.750         0.500",
        "mean                0.7500        0.5000  "
        "(as the paper: a severity right only with its class; over the four distortions, null apart)",
    ]
    degradation["mean"] = {"class_accuracy": None, "severity_accuracy": None}
    assert (
        list(TASKS["degradation"].summary(degradation))[-1] == "mean                   n/a           n/a  "
        "(as the paper: a severity right only with its class; over the four distortions, null apart)"
    )
    comparison = {
        "accuracy": 0.5,
        "per_label": {"Image A": {"n": 2, "accuracy": 1.0}, "Similar": {"n": 2, "accuracy": 0.0}},
    }
    assert list(TASKS["comparison"].summary(comparison)) == [
        "accuracy 0.5000; Image A 1.000 (n=2); Similar 0.000 (n=2)"
    ]


def answers(*texts, finished=True):
    return [Generation(text, finished) for text in texts]


def test_aggregation_of_sampled_answers():
    score = TASKS["score"].aggregate(
        answers('<answer>{"rating": 2}</answer>', "junk", '<answer>{"rating": 4}</answer>'), parse_score
    )
    assert (score.score, score.samples, score.std) == (3.0, [2.0, 4.0], 1.0)
    kinds = [
        f'<answer>{{"distortion_class": "{k}", "severity": "slight"}}</answer>' for k in ("blur", "noise", "noise")
    ]
    assert TASKS["degradation"].aggregate(answers(*kinds), parse_degradation).distortion == "noise"
    verdict = TASKS["comparison"].aggregate(answers("<answer>Image B</answer>"), parse_comparison)
    assert (verdict.winner, verdict.raw, verdict.error) == ("B", "<answer>Image B</answer>", None)
    cut = TASKS["comparison"].aggregate(answers("Image", finished=False), parse_comparison)
    assert cut.winner is None and cut.error.endswith("(the answer was cut off at max_new_tokens)")
    counted = TASKS["score"].aggregate([Generation("<think>rating: 3", False, 512)], parse_score)
    assert counted.score is None and counted.error == (
        "no rating found in the answer (no <answer> block found) "
        "(the answer was cut off at 512 tokens (max_new_tokens))"
    )


def test_reconciling_both_orders_maps_the_swapped_verdict_back():
    forward, backward = ComparisonResult(winner="A", raw="f"), ComparisonResult(winner="B", raw="b")
    agreed = reconcile(forward, backward)
    assert (agreed.winner, agreed.consistent, agreed.raw) == ("A", True, "[order A, B]\nf\n[order B, A]\nb")
    disagreed = reconcile(forward, ComparisonResult(winner="A", reasoning="r"))
    assert (disagreed.winner, disagreed.consistent, disagreed.reasoning) == ("similar", False, "[order B, A] r")


def test_an_unreadable_answer_keeps_what_the_parser_did_read():
    def unsure(text):
        return ParsedDegradation("blur", "slight", "looks soft", "not sure of the severity")

    result = TASKS["degradation"].aggregate(answers("anything"), unsure)
    assert (result.distortion, result.severity, result.reasoning, result.raw) == (
        "blur",
        "slight",
        "looks soft",
        "anything",
    )
    assert result.error == "not sure of the severity"


def test_one_order_without_a_verdict_keeps_both_reasonings():
    forward = ComparisonResult(reasoning="cannot tell", raw="f", error="no verdict")
    merged = reconcile(forward, ComparisonResult(winner="B", reasoning="B is sharper", raw="b"))
    assert (merged.winner, merged.consistent, merged.error) == ("A", None, None)
    assert merged.reasoning == "[order A, B] cannot tell\n\n[order B, A] B is sharper"


class Asked:
    """A judge that records how each task asked it."""

    def __init__(self):
        self.calls = []

    def score(self, images, **options):
        self.calls.append(("score", images, options))

    def degradation(self, images, **options):
        self.calls.append(("degradation", images, options))

    def compare_pairs(self, pairs, **options):
        self.calls.append(("compare_pairs", pairs, options))


def test_each_task_asks_the_judge_for_its_samples_images():
    judge, options = Asked(), {"batch_size": 3, "on_result": print}
    TASKS["score"].ask(judge, [Labelled(images=(Path("a.png"),))], mode="fast", **options)
    TASKS["degradation"].ask(judge, [Labelled(images=(Path("b.png"),))], mode="reason", **options)
    TASKS["comparison"].ask(
        judge,
        [Labelled(images=(Path("x"), Path("y"))), Labelled(images=(Path("r"), Path("x"), Path("y")))],
        mode="reason",
        **options,
    )
    assert judge.calls == [
        ("score", ["a.png"], {"mode": "fast", **options}),
        ("degradation", ["b.png"], options),
        ("compare_pairs", [("x", "y", None), ("x", "y", "r")], options),
    ]


def test_figures_are_drawn_from_the_judged_rows(monkeypatch, tmp_path):
    drawn = []
    monkeypatch.setattr(plots, "score_scatter", lambda *args: drawn.append(("scatter", *args)))
    monkeypatch.setattr(plots, "confusion_matrix", lambda *args: drawn.append(("confusion", *args)))
    TASKS["score"].plot(
        [Labelled(mos=2.0), Labelled(mos=4.0)],
        [{"score": 2.5}, {"score": 3.5}],
        {"n": 2},
        tmp_path / "s.png",
        "labels.csv",
    )
    TASKS["degradation"].plot([], [], {"n": 0}, tmp_path / "d.png", "deg.jsonl")
    assert drawn == [
        ("scatter", [2.5, 3.5], [2.0, 4.0], {"n": 2}, tmp_path / "s.png", "labels.csv"),
        ("confusion", {"n": 0}, tmp_path / "d.png", "deg.jsonl"),
    ]


def test_reason_mode_metrics_cover_the_expected_score_too():
    """Issue 11: eval --mode reason reports the written and the expected score."""
    samples = [Labelled(mos=m) for m in (1.0, 2.0, 3.0, 4.0, 5.0)]
    rows = [{"score": s, "expected_score": e} for s, e in ((2.0, 1.4), (2.0, 2.1), (3.0, 2.9), (4.0, 4.2), (5.0, None))]
    found = TASKS["score"].metrics(samples, rows, 0)
    assert found["n"] == 5 and found["expected"]["n"] == 4 and found["expected"]["srcc"] == pytest.approx(1.0)
    assert found["srcc"] < 1.0  # the written scores tie where the expected ones do not
    lines = list(TASKS["score"].summary(found))
    assert lines[-1] == "expected score at the written rating (4 items): SRCC 1.0000, PLCC 0.9886, RMSE 0.2345"
    assert "expected" not in TASKS["score"].metrics(samples, [{"score": 1.0 + i} for i in range(5)], 0)
