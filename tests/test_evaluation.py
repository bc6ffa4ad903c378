"""The evaluation harness: metrics against scipy, the logistic fit, resuming, failures, the CLI."""

import json
import math

import numpy as np
import pytest
import scipy.stats
from PIL import Image

from qinsight_sdk import QualityJudge
from qinsight_sdk.cli import main
from qinsight_sdk.errors import QInsightError
from qinsight_sdk.evaluation import evaluate, guess_format, load_items, read_predictions
from qinsight_sdk.metrics import comparison_metrics, degradation_metrics, fit_logistic, logistic4, score_metrics
from qinsight_sdk.testing import ScriptedBackend, write_sample_images

RNG = np.random.default_rng(7)
PREDICTED = RNG.uniform(1, 5, 60)
MOS = np.clip(PREDICTED + RNG.normal(0, 0.6, 60), 1, 5)


def test_score_metrics_equal_scipy():
    found = score_metrics(PREDICTED, MOS, resamples=200)
    assert found["srcc"] == pytest.approx(scipy.stats.spearmanr(PREDICTED, MOS)[0], abs=1e-12)
    assert found["plcc"] == pytest.approx(scipy.stats.pearsonr(PREDICTED, MOS)[0], abs=1e-12)
    assert found["krcc"] == pytest.approx(scipy.stats.kendalltau(PREDICTED, MOS)[0], abs=1e-12)
    assert found["rmse"] == pytest.approx(float(np.sqrt(np.mean((PREDICTED - MOS) ** 2))), abs=1e-12)
    assert found["n"] == 60
    for name in ("srcc", "plcc"):
        low, high = found[f"{name}_ci95"]
        assert low < found[name] < high and high - low < 0.3
    assert score_metrics(PREDICTED, MOS, resamples=200) == found   # seeded: the same report twice


def written_out_logistic(x, b1, b2, b3, b4):
    """VQEG's 4-parameter logistic, written here independently of the code under test."""
    return b2 + (b1 - b2) / (1.0 + np.exp((b3 - x) / abs(b4)))


def test_logistic4_at_points_worked_by_hand():
    b1, b2, b3, b4 = 4.0, 1.5, 6.0, 1.2
    x = np.array([6.0, 6.0 + 1.2 * math.log(3), 6.0 - 1.2 * math.log(3), 1e6, -1e6])
    # centre: halfway; b3 +- b4 ln 3: a quarter of the way from one end; far out: the ends themselves
    expected = [2.75, 1.5 + 0.75 * 2.5, 1.5 + 0.25 * 2.5, 4.0, 1.5]
    assert logistic4(x, b1, b2, b3, b4) == pytest.approx(expected, abs=1e-12)
    assert logistic4(x, b1, b2, b3, -b4) == pytest.approx(expected, abs=1e-12)  # the sign of b4 is ignored


def test_logistic_fit_recovers_the_parameters_of_an_independent_curve():
    x = np.linspace(0, 10, 80)
    truth = (4.0, 1.5, 6.0, 1.2)
    y = written_out_logistic(x, *truth) + RNG.normal(0, 0.01, x.shape)
    params = fit_logistic(x, y)
    assert params[:3] == pytest.approx(truth[:3], abs=0.05) and abs(params[3]) == pytest.approx(1.2, abs=0.05)
    found = score_metrics(x, y, resamples=0)
    assert found["logistic_params"] == pytest.approx(list(params))
    assert found["plcc_logistic"] > 0.999 > found["plcc"]          # the fit straightens the curve
    fitted = written_out_logistic(x, *params)
    assert found["rmse_logistic"] == pytest.approx(float(np.sqrt(np.mean((fitted - y) ** 2))), rel=1e-6)
    assert found["plcc_logistic"] == pytest.approx(scipy.stats.pearsonr(fitted, y)[0], abs=1e-9)
    assert found["rmse_logistic"] < 0.02 and found["srcc"] > 0.99
    assert found["srcc_ci95"] is None                              # resamples=0: no interval


def test_degenerate_scores_give_none_not_nan():
    found = score_metrics([3.0] * 10, list(range(10)), resamples=50)
    assert found["srcc"] is None and found["plcc"] is None and found["srcc_ci95"] is None
    json.dumps(found, allow_nan=False)


def test_degradation_metrics_table():
    truth_class = ["noise", "noise", "blur", "blur", "null", "darken"]
    truth_severity = ["slight", "serious", "moderate", "moderate", "null", "obvious"]
    guess_class = ["noise", "blur", "blur", "blur", "null", "null"]
    guess_severity = ["slight", "serious", "slight", "moderate", "null", "obvious"]
    found = degradation_metrics(guess_class, guess_severity, truth_class, truth_severity)
    assert found["per_class"]["noise"] == {"n": 2, "class_accuracy": 0.5, "severity_accuracy": 1.0}
    assert found["per_class"]["blur"] == {"n": 2, "class_accuracy": 1.0, "severity_accuracy": 0.5}
    assert found["per_class"]["darken"] == {"n": 1, "class_accuracy": 0.0, "severity_accuracy": 1.0}
    assert "compression" not in found["per_class"]
    assert found["mean"]["class_accuracy"] == pytest.approx((0.5 + 1 + 0 + 1) / 4)
    assert found["overall"]["class_accuracy"] == pytest.approx(4 / 6)
    labels = found["labels"]
    assert found["confusion"][labels.index("noise")][labels.index("blur")] == 1
    assert sum(map(sum, found["confusion"])) == 6


def test_comparison_metrics_per_label():
    found = comparison_metrics(["Image A", "Image B", "Image A", "Similar"], ["Image A", "Image A", "Image A", "Similar"])
    assert found["accuracy"] == 0.75
    assert found["per_label"]["Image A"] == {"n": 3, "accuracy": pytest.approx(2 / 3)}
    assert found["per_label"]["Similar"] == {"n": 1, "accuracy": 1.0}


# -- the harness, with a scripted judge whose answers follow the image's brightness ----------------

def brightness_answer(conversation, images):
    return f'<think>\nbright\n</think>\n<answer>\n{{"rating": {1 + 4 * np.asarray(images[-1]).mean() / 255:.2f}}}\n</answer>'


@pytest.fixture
def labelled(tmp_path):
    for i in range(8):
        Image.new("RGB", (64, 48), (30 * i,) * 3).save(tmp_path / f"g{i}.png")
    (tmp_path / "broken.png").write_bytes(b"not an image")
    rows = [f"g{i}.png,{10 + 10 * i + (3 if i == 4 else 0)}" for i in range(8)] + ["broken.png,50", "gone.png,20"]
    (tmp_path / "labels.csv").write_text("image,mos\n" + "\n".join(rows) + "\n")
    return tmp_path


class Counting:
    """Loads a scripted judge and records how many items it was asked for; can stop like Ctrl-C."""

    def __init__(self, stop_after=None):
        self.loaded, self.asked, self.stop_after = 0, 0, stop_after

    def __call__(self):
        self.loaded += 1

        def answer(conversation, images):
            self.asked += 1
            if self.stop_after is not None and self.asked > self.stop_after:
                raise KeyboardInterrupt
            return brightness_answer(conversation, images)

        return QualityJudge(ScriptedBackend(answer))


def test_bad_images_are_reported_and_left_out(labelled):
    result = evaluate(labelled / "labels.csv", labelled / "p.jsonl", Counting(), resamples=100, progress=False)
    assert result["items"] == 10 and result["judged"] == 8
    failed = {f["item"]: f["error"] for f in result["failed"]}
    assert set(failed) == {"broken.png", "gone.png"} and "not found" in failed["gone.png"]
    assert result["metrics"]["srcc"] == pytest.approx(1.0)       # brightness follows the MOS order


def test_interrupted_run_resumes_without_repeating_or_duplicating(labelled):
    predictions = labelled / "p.jsonl"
    first = Counting(stop_after=3)
    with pytest.raises(KeyboardInterrupt):
        evaluate(labelled / "labels.csv", predictions, first, batch_size=1, progress=False)
    kept = predictions.read_text().splitlines()
    assert len(kept) == 3 and all(json.loads(line)["error"] is None for line in kept)
    with predictions.open("a") as handle:
        handle.write('{"key": "g3.png", "task": "sc')          # a kill in the middle of a write
    second = Counting()
    result = evaluate(labelled / "labels.csv", predictions, second, resamples=0, progress=False)
    assert second.asked == 10 - 3 - 2   # missing and broken images never reach the model
    keys = [json.loads(line)["key"] for line in predictions.read_text().splitlines()]
    assert len(keys) == len(set(keys)) == 10 and result["judged"] == 8


def test_complete_predictions_load_no_model(labelled):
    predictions = labelled / "p.jsonl"
    evaluate(labelled / "labels.csv", predictions, Counting(), resamples=0, progress=False)

    def must_not_load():
        raise AssertionError("a model was loaded")

    again = evaluate(labelled / "labels.csv", predictions, must_not_load, resamples=0, progress=False)
    assert again["predicted_now"] == 0 and again["judged"] == 8
    retried = Counting()
    evaluate(labelled / "labels.csv", predictions, retried, retry_failed=True, resamples=0, progress=False)
    assert retried.loaded == 1 and retried.asked == 0   # only the two bad images, which never decode


def test_predictions_made_elsewhere(labelled):
    outside = labelled / "theirs.jsonl"
    outside.write_text("".join(json.dumps({"key": f"g{i}.png", "score": 5 - i / 2}) + "\n" for i in range(8)))
    result = evaluate(labelled / "labels.csv", outside, None, resamples=0, progress=False)
    assert result["judged"] == 8 and result["metrics"]["srcc"] == pytest.approx(-1.0)
    assert {f["item"] for f in result["failed"]} == {"broken.png", "gone.png"}
    assert {f["error"] for f in result["failed"]} == {"no prediction"}   # no model: nothing predicted


def test_rows_of_other_tasks_are_kept_apart(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps({"key": "a.png", "task": "degradation", "distortion": "blur", "severity": "slight"})
                    + "\n" + json.dumps({"key": "a.png", "task": "score", "score": 3.0}) + "\n")
    assert read_predictions(path, "score") == {"a.png": {"key": "a.png", "task": "score", "score": 3.0}}


def test_data_formats_are_recognised(tmp_path):
    (tmp_path / "deqa.json").write_text(json.dumps([{"image": "a.png", "gt_score": 60, "gt_score_norm": 3.4}]))
    (tmp_path / "pairs.json").write_text(json.dumps([{"ref_image": "r.png", "ImageA": "a.png", "ImageB": "b.png",
                                                      "result": "Image B"}]))
    (tmp_path / "deg.csv").write_text("image,distortion_class,severity\na.png,noise,slight\n")
    assert [guess_format(tmp_path / n) for n in ("deqa.json", "pairs.json", "deg.csv")] == \
        ["deqa", "qinsight-comparison", "csv"]
    (pair,) = load_items(tmp_path / "pairs.json")
    assert pair.key == "r.png|a.png|b.png" and pair.sample.answer == "Image B"
    (item,) = load_items(tmp_path / "deg.csv")
    assert item.sample.task == "degradation" and item.key == "a.png"
    (tmp_path / "mixed.jsonl").write_text(json.dumps({"task": "score", "image": "a.png", "mos": 3}) + "\n"
                                          + json.dumps({"task": "degradation", "image": "a.png",
                                                        "distortion_class": "null", "severity": "null"}) + "\n")
    with pytest.raises(QInsightError, match="--task"):
        load_items(tmp_path / "mixed.jsonl")
    assert len(load_items(tmp_path / "mixed.jsonl", task="degradation")) == 1


# -- end to end on the tiny model, through the command line -------------------------------------------

@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval-data")
    names = [p.name for p in write_sample_images(root, count=6, seed=3)]
    (root / "scores.csv").write_text("image,mos\n" + "".join(f"{n},{20 + 9 * i}\n" for i, n in enumerate(names)))
    degradations = ["noise,slight", "blur,moderate", "null,null", "darken,serious", "compression,obvious",
                    "noise,catastrophic"]
    (root / "degradations.csv").write_text("image,distortion_class,severity\n"
                                           + "".join(f"{n},{d}\n" for n, d in zip(names, degradations)))
    (root / "pairs.jsonl").write_text("".join(json.dumps(
        {"task": "comparison", "image_a": names[i], "image_b": names[i + 1], "reference": names[0],
         "answer": ["Image A", "Image B", "Similar"][i % 3]}) + "\n" for i in range(4)))
    return root


def test_eval_command_end_to_end_on_the_tiny_model(tiny_model, synthetic, tmp_path, capsys):
    report, figure = tmp_path / "score.json", tmp_path / "score.png"
    code = main(["eval", str(synthetic / "scores.csv"), "--model", str(tiny_model), "--mode", "fast",
                 "--predictions", str(tmp_path / "score.jsonl"), "--report", str(report), "--plot", str(figure),
                 "--bootstrap", "100"])
    assert code == 0
    found = json.loads(report.read_text())
    assert found["task"] == "score" and found["judged"] == 6 and found["failed"] == []
    assert set(found["metrics"]) >= {"srcc", "plcc", "plcc_logistic", "krcc", "rmse", "srcc_ci95", "plcc_ci95"}
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "SRCC" in capsys.readouterr().out

    code = main(["eval", str(synthetic / "degradations.csv"), "--model", str(tiny_model), "--max-new-tokens", "12",
                 "--predictions", str(tmp_path / "deg.jsonl"), "--report", str(tmp_path / "deg.json"),
                 "--plot", str(tmp_path / "deg.png")])
    found = json.loads((tmp_path / "deg.json").read_text())
    # the random model's answers do not parse: every item fails, is listed, and the run still reports
    assert code == 1 and found["items"] == 6 and found["judged"] == 0
    assert len(found["failed"]) == 6 and all(f["error"] for f in found["failed"])
    assert (tmp_path / "deg.png").stat().st_size > 0

    code = main(["eval", str(synthetic / "pairs.jsonl"), "--model", str(tiny_model), "--max-new-tokens", "8",
                 "--predictions", str(tmp_path / "pairs.jsonl"), "--report", str(tmp_path / "pairs.json")])
    found = json.loads((tmp_path / "pairs.json").read_text())
    assert found["task"] == "comparison" and found["items"] == 4
    rows = [json.loads(line) for line in (tmp_path / "pairs.jsonl").read_text().splitlines()]
    assert [r["key"] for r in rows][0] == "sample_0.png|sample_0.png|sample_1.jpg"


# -- the metrics' edges, stated exactly ------------------------------------------------------------------


def test_degradation_metrics_in_full():
    found = degradation_metrics(["noise", "blur", "null"], ["slight", "slight", "null"],
                                ["noise", "noise", "null"], ["slight", "serious", "null"])
    assert found == {
        "n": 3,
        "per_class": {"noise": {"n": 2, "class_accuracy": 0.5, "severity_accuracy": 0.5},
                      "null": {"n": 1, "class_accuracy": 1.0, "severity_accuracy": 1.0}},
        "mean": {"class_accuracy": 0.75, "severity_accuracy": 0.75},
        "overall": {"class_accuracy": 2 / 3, "severity_accuracy": 2 / 3},
        "labels": ["noise", "compression", "blur", "darken", "null"],
        "confusion": [[1, 0, 1, 0, 0], [0] * 5, [0] * 5, [0] * 5, [0, 0, 0, 0, 1]],
        "severity_levels": ["slight", "moderate", "obvious", "serious", "catastrophic"],
    }
    empty = degradation_metrics([], [], [], [])
    assert empty["mean"] == {"class_accuracy": None, "severity_accuracy": None}
    assert empty["overall"] == {"class_accuracy": None, "severity_accuracy": None} and empty["n"] == 0


def test_comparison_metrics_in_full():
    found = comparison_metrics(["Image B", "Similar", "Image A"], ["Image B", "Image B", "Similar"])
    assert found == {"n": 3, "accuracy": 1 / 3, "per_label": {"Image B": {"n": 2, "accuracy": 0.5},
                                                               "Similar": {"n": 1, "accuracy": 0.0}}}
    assert comparison_metrics([], []) == {"n": 0, "accuracy": None, "per_label": {}}


def test_small_samples():
    three = score_metrics([1.0, 2.0, 4.0], [1.5, 2.5, 3.0], resamples=100)
    assert three["n"] == 3 and three["srcc"] == pytest.approx(1.0) and three["krcc"] == pytest.approx(1.0)
    assert three["plcc"] == pytest.approx(scipy.stats.pearsonr([1, 2, 4], [1.5, 2.5, 3])[0], abs=1e-12)
    assert three["rmse"] == pytest.approx(math.sqrt((0.25 + 0.25 + 1.0) / 3), abs=1e-12)
    assert three["srcc_ci95"] is None and three["logistic_params"] is None and three["plcc_logistic"] is None
    two = score_metrics([1.0, 2.0], [1.0, 3.0], resamples=100)
    assert (two["srcc"], two["plcc"], two["krcc"]) == (None, None, None) and two["rmse"] == pytest.approx(math.sqrt(0.5))
    assert score_metrics([], [], resamples=10)["rmse"] is None
    with pytest.raises(ValueError, match="2 predictions for 3 labels"):
        score_metrics([1.0, 2.0], [1.0, 2.0, 3.0])


def test_constant_labels_give_none():
    found = score_metrics([1.0, 2.0, 3.0, 4.0, 5.0, 6.0], [3.0] * 6, resamples=50)
    assert (found["srcc"], found["plcc"], found["krcc"], found["srcc_ci95"]) == (None, None, None, None)
    assert found["rmse"] == pytest.approx(math.sqrt(np.mean((np.arange(1, 7) - 3.0) ** 2)))


def test_bootstrap_intervals_equal_scipys_percentile_bootstrap():
    found = score_metrics(PREDICTED[:30], MOS[:30], resamples=300, seed=5)
    for name, function in (("srcc", scipy.stats.spearmanr), ("plcc", scipy.stats.pearsonr)):
        expected = scipy.stats.bootstrap((PREDICTED[:30], MOS[:30]), lambda a, b: function(a, b)[0], paired=True,
                                         vectorized=False, n_resamples=300, confidence_level=0.95,
                                         method="percentile", random_state=np.random.default_rng(5))
        assert found[f"{name}_ci95"] == pytest.approx(list(expected.confidence_interval), abs=1e-12)
    assert score_metrics(PREDICTED[:30], MOS[:30], resamples=300, seed=6)["srcc_ci95"] != found["srcc_ci95"]


def test_logistic_fit_that_fails_gives_none():
    assert fit_logistic([1.0, 2.0, 3.0, 4.0, 5.0], [1.0, float("nan"), 3.0, 4.0, 5.0]) is None  # scipy refuses NaN


def test_metric_boundaries():
    five = score_metrics([1.0, 2.0, 3.0, 5.0, 4.0], [1.0, 2.0, 3.0, 4.0, 5.0], resamples=1)
    assert five["logistic_params"] is not None and len(five["srcc_ci95"]) == 2  # five items: fit and interval
    four = score_metrics([1.0, 2.0, 3.0, 4.0], [1.0, 2.0, 4.0, 3.0], resamples=50)
    assert four["srcc_ci95"] is None and four["logistic_params"] is None
    unit = score_metrics([1.0, 1.5, 2.0], [2.0, 2.5, 3.0], resamples=0)  # a spread of exactly 1 is a spread
    assert unit["srcc"] == pytest.approx(1.0) and unit["plcc"] == pytest.approx(1.0)


def test_defaults_are_1000_resamples_and_seed_0():
    x, y = PREDICTED[:20], MOS[:20]
    assert score_metrics(x, y) == score_metrics(x, y, resamples=1000, seed=0)


def test_infinite_predictions_give_none_not_nan():
    x = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, float("inf")]
    found = score_metrics(x, [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0], resamples=50)
    assert found["srcc"] == pytest.approx(1.0) and found["plcc"] is None and found["rmse"] is None
    assert found["plcc_ci95"] is None and len(found["srcc_ci95"]) == 2
    json.dumps(found, allow_nan=False)


def test_a_resample_without_spread_counts_as_no_correlation():
    """With x = [1, 1, 1, 1, 2], a third of resamples hold only 1s: their correlation is taken as 0."""
    x = [1.0, 1.0, 1.0, 1.0, 2.0]
    found = score_metrics(x, x, resamples=200)
    assert found["srcc_ci95"] == [0.0, 1.0] and found["plcc_ci95"] == [0.0, 1.0]


def test_confusion_counts_are_integers():
    found = degradation_metrics(["noise"], ["slight"], ["blur"], ["slight"])
    assert json.dumps(found["confusion"]) == "[[0, 0, 0, 0, 0], [0, 0, 0, 0, 0], [1, 0, 0, 0, 0], [0, 0, 0, 0, 0], " \
                                             "[0, 0, 0, 0, 0]]"


def test_missing_scipy_says_how_to_install_it(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "scipy", None)
    monkeypatch.setitem(sys.modules, "scipy.stats", None)
    monkeypatch.setitem(sys.modules, "scipy.optimize", None)
    with pytest.raises(QInsightError) as refused:
        score_metrics([1.0, 2.0, 3.0], [1.0, 2.0, 3.0])
    assert str(refused.value) == "evaluation needs scipy: pip install 'qinsight[eval]'"


def test_the_fit_starts_from_the_data_so_any_scale_converges():
    x = np.linspace(0, 1000, 60)  # predictions on a 0-1000 scale: a start at b3 = b4 = 1 would not converge
    truth = (4.0, 1.5, 600.0, 80.0)
    params = fit_logistic(x, written_out_logistic(x, *truth))
    assert params == pytest.approx(truth, rel=1e-3)


def test_single_precision_predictions_are_computed_in_double():
    x32 = (PREDICTED[:20] / 3).astype(np.float32)
    assert score_metrics(x32, MOS[:20], resamples=0) == score_metrics(x32.astype(np.float64), MOS[:20], resamples=0)
    assert score_metrics(MOS[:20], x32, resamples=0) == score_metrics(MOS[:20], x32.astype(np.float64), resamples=0)


def test_a_resample_with_one_side_constant_counts_as_no_correlation():
    found = score_metrics([1.0, 1.0, 1.0, 1.0, 2.0], [1.0, 2.0, 3.0, 4.0, 5.0], resamples=200)
    assert found["srcc_ci95"] is not None and found["srcc_ci95"][0] == 0.0
