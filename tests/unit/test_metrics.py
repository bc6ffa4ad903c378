"""Metrics against scipy and against values worked by hand: correlations, the logistic fit, intervals."""

import json
import math

import numpy as np
import pytest
import scipy.stats

from qinsight_sdk.errors import QInsightError, UsageError
from qinsight_sdk.evaluation.metrics import (
    comparison_metrics,
    degradation_metrics,
    fit_logistic,
    format_interval,
    logistic4,
    logistic_direction,
    paired_difference,
    score_metrics,
)

RNG = np.random.default_rng(7)
PREDICTED = RNG.uniform(1, 5, 60)
MOS = np.clip(PREDICTED + RNG.normal(0, 0.6, 60), 1, 5)


def written_out_logistic(x, b1, b2, b3, b4):
    """VQEG's 4-parameter logistic, written here independently of the code under test."""
    return b2 + (b1 - b2) / (1.0 + np.exp((b3 - x) / abs(b4)))


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
    assert score_metrics(PREDICTED, MOS, resamples=200) == found  # seeded: the same report twice


def test_logistic4_at_points_worked_by_hand():
    b1, b2, b3, b4 = 4.0, 1.5, 6.0, 1.2
    x = np.array([6.0, 6.0 + 1.2 * math.log(3), 6.0 - 1.2 * math.log(3), 1e6, -1e6])
    # centre: halfway; b3 +- b4 ln 3: a quarter of the way from one end; far out: the ends themselves
    expected = [2.75, 1.5 + 0.75 * 2.5, 1.5 + 0.25 * 2.5, 4.0, 1.5]
    assert logistic4(x, b1, b2, b3, b4) == pytest.approx(expected, abs=1e-12)
    assert logistic4(x, b1, b2, b3, -b4) == pytest.approx(expected, abs=1e-12)  # the sign of b4 is ignored


def test_the_logistic_far_out_warns_of_nothing():
    """Issue 10, defect 12: a numpy overflow warning appeared during eval (exp of a huge argument)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert logistic4(np.array([-1e6, 1e6]), 4.0, 1.5, 0.0, 1e-6).tolist() == [1.5, 4.0]


def test_logistic_fit_recovers_the_parameters_of_an_independent_curve():
    x = np.linspace(0, 10, 80)
    truth = (4.0, 1.5, 6.0, 1.2)
    y = written_out_logistic(x, *truth) + RNG.normal(0, 0.01, x.shape)
    params = fit_logistic(x, y)
    assert params[:3] == pytest.approx(truth[:3], abs=0.05) and abs(params[3]) == pytest.approx(1.2, abs=0.05)
    found = score_metrics(x, y, resamples=0)
    assert found["logistic_params"] == pytest.approx(list(params))
    assert found["plcc_logistic"] > 0.999 > found["plcc"]  # the fit straightens the curve
    fitted = written_out_logistic(x, *params)
    assert found["rmse_logistic"] == pytest.approx(float(np.sqrt(np.mean((fitted - y) ** 2))), rel=1e-6)
    assert found["plcc_logistic"] == pytest.approx(scipy.stats.pearsonr(fitted, y)[0], abs=1e-9)
    assert found["rmse_logistic"] < 0.02 and found["srcc"] > 0.99
    assert found["srcc_ci95"] is None  # resamples=0: no interval


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
    # a severity is right only with its class (noise's "serious" came with "blur"; darken's with "null")
    assert found["per_class"]["noise"] == {"n": 2, "class_accuracy": 0.5, "severity_accuracy": 0.5}
    assert found["per_class"]["blur"] == {"n": 2, "class_accuracy": 1.0, "severity_accuracy": 0.5}
    assert found["per_class"]["darken"] == {"n": 1, "class_accuracy": 0.0, "severity_accuracy": 0.0}
    assert "compression" not in found["per_class"]
    assert found["mean"]["class_accuracy"] == pytest.approx((0.5 + 1 + 0 + 1) / 4)
    assert found["overall"]["class_accuracy"] == pytest.approx(4 / 6)
    assert found["overall"]["severity_accuracy"] == pytest.approx(3 / 6)
    labels = found["labels"]
    assert found["confusion"][labels.index("noise")][labels.index("blur")] == 1
    assert sum(map(sum, found["confusion"])) == 6


def test_a_severity_counts_only_with_its_class():
    """Issue 26, item 6: Q-Insight's reward credits the severity only inside a class match (+0.25 for the
    class, +0.75 more only if class and severity both match), and Table 2's severity accuracy stays below
    its class accuracy; a right severity named with the wrong class was counted as right."""
    truth_class = ["blur"] * 4 + ["noise"] * 2 + ["null"] * 2
    truth_severity = ["serious"] * 4 + ["slight"] * 2 + ["null"] * 2
    guess_class = ["noise", "noise", "blur", "blur", "noise", "darken", "null", "null"]
    guess_severity = ["serious", "serious", "serious", "slight", "slight", "slight", "null", "slight"]
    found = degradation_metrics(guess_class, guess_severity, truth_class, truth_severity)
    assert found["per_class"]["blur"] == {"n": 4, "class_accuracy": 0.5, "severity_accuracy": 0.25}
    assert found["per_class"]["noise"] == {"n": 2, "class_accuracy": 0.5, "severity_accuracy": 0.5}
    assert found["per_class"]["null"] == {"n": 2, "class_accuracy": 1.0, "severity_accuracy": 0.5}
    assert found["overall"] == {"class_accuracy": 5 / 8, "severity_accuracy": 3 / 8}
    assert found["mean"]["severity_accuracy"] == pytest.approx((0.25 + 0.5) / 2)  # null apart, as the paper
    for row in found["per_class"].values():
        assert row["severity_accuracy"] <= row["class_accuracy"]


def test_comparison_metrics_per_label():
    found = comparison_metrics(
        ["Image A", "Image B", "Image A", "Similar"], ["Image A", "Image A", "Image A", "Similar"]
    )
    assert found["accuracy"] == 0.75
    assert found["per_label"]["Image A"] == {"n": 3, "accuracy": pytest.approx(2 / 3)}
    assert found["per_label"]["Similar"] == {"n": 1, "accuracy": 1.0}


def test_degradation_means_are_the_papers():
    """Table 2 of the paper: class accuracy noise 1.000, blur 0.976, JPEG 1.000, darken 0.903, null 0.760,
    mean 0.928 (over all five); the severity mean is over the four distortion classes (issue 11)."""
    truth, guess, severity_truth, severity_guess = [], [], [], []
    for label, right, severity_right in (
        ("noise", 1000, 600),
        ("blur", 976, 400),
        ("compression", 1000, 500),
        ("darken", 903, 420),
        ("null", 760, 1000),
    ):
        for i in range(1000):
            truth.append(label)
            guess.append(label if i < right else ("null" if label != "null" else "blur"))
            severity = "null" if label == "null" else "slight"
            severity_truth.append(severity)
            severity_guess.append(severity if i < severity_right else "catastrophic")
    found = degradation_metrics(guess, severity_guess, truth, severity_truth)
    assert found["mean"]["class_accuracy"] == pytest.approx(0.9278)
    assert found["mean"]["severity_accuracy"] == pytest.approx((0.6 + 0.4 + 0.5 + 0.42) / 4)
    # shown apart, in its own row; its "null" severity is right only where the class was (0.760)
    assert found["per_class"]["null"]["severity_accuracy"] == pytest.approx(0.76)


def test_degradation_metrics_in_full():
    found = degradation_metrics(
        ["noise", "blur", "null"],
        ["slight", "slight", "null"],
        ["noise", "noise", "null"],
        ["slight", "serious", "null"],
    )
    assert found == {
        "n": 3,
        "per_class": {
            "noise": {"n": 2, "class_accuracy": 0.5, "severity_accuracy": 0.5},
            "null": {"n": 1, "class_accuracy": 1.0, "severity_accuracy": 1.0},
        },
        "mean": {"class_accuracy": 0.75, "severity_accuracy": 0.5},  # severity: null left out, as the paper
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
    assert found == {
        "n": 3,
        "accuracy": 1 / 3,
        "per_label": {"Image B": {"n": 2, "accuracy": 0.5}, "Similar": {"n": 1, "accuracy": 0.0}},
    }
    assert comparison_metrics([], []) == {"n": 0, "accuracy": None, "per_label": {}}


def test_small_samples():
    three = score_metrics([1.0, 2.0, 4.0], [1.5, 2.5, 3.0], resamples=100)
    assert three["n"] == 3 and three["srcc"] == pytest.approx(1.0) and three["krcc"] == pytest.approx(1.0)
    assert three["plcc"] == pytest.approx(scipy.stats.pearsonr([1, 2, 4], [1.5, 2.5, 3])[0], abs=1e-12)
    assert three["rmse"] == pytest.approx(math.sqrt((0.25 + 0.25 + 1.0) / 3), abs=1e-12)
    assert three["srcc_ci95"] is None and three["logistic_params"] is None and three["plcc_logistic"] is None
    two = score_metrics([1.0, 2.0], [1.0, 3.0], resamples=100)
    assert (two["srcc"], two["plcc"], two["krcc"]) == (None, None, None) and two["rmse"] == pytest.approx(
        math.sqrt(0.5)
    )
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
        expected = scipy.stats.bootstrap(
            (PREDICTED[:30], MOS[:30]),
            lambda a, b: function(a, b)[0],  # noqa: B023 (called at once)
            paired=True,
            vectorized=False,
            n_resamples=300,
            confidence_level=0.95,
            method="percentile",
            random_state=np.random.default_rng(5),
        )
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
    assert (
        json.dumps(found["confusion"]) == "[[0, 0, 0, 0, 0], [0, 0, 0, 0, 0], [1, 0, 0, 0, 0], [0, 0, 0, 0, 0], "
        "[0, 0, 0, 0, 0]]"
    )


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


def deqa_scores_fit(x, y):
    """DeQA-Score's evaluator, as its src/evaluate/cal_plcc_srcc.py describes it (written here from that
    description): its logistic with b4 taken as it is, its start (max y, min y, mean x, std x / 4) and
    10,000 evaluations; the fitted values."""

    def curve(t, b1, b2, b3, b4):
        return (b1 - b2) / (1 + np.exp(-(t - b3) / b4)) + b2

    start = [np.max(y), np.min(y), np.mean(x), np.std(x) / 4]
    with np.errstate(over="ignore"):
        params, _ = scipy.optimize.curve_fit(curve, x, y, p0=start, maxfev=10000)
        return curve(x, *params)


def test_the_fit_starts_where_deqa_scores_starts(monkeypatch):
    """Issue 26, item 6: the fit started at b4 = std(x) where DeQA-Score starts at std(x) / 4; on these
    twelve items the two starts end in different optima (PLCC 0.897 against DeQA-Score's 0.910)."""
    import scipy.optimize

    rng = np.random.default_rng(25)
    x = rng.uniform(1, 5, 12)
    y = np.clip(x + rng.normal(0, 1.0, 12), 1, 5)
    expected = scipy.stats.pearsonr(deqa_scores_fit(x, y), y)[0]
    assert score_metrics(x, y, resamples=0)["plcc_logistic"] == pytest.approx(expected, abs=1e-4)

    starts = []
    fit = scipy.optimize.curve_fit

    def recording(*args, **kwargs):
        starts.append(kwargs["p0"])
        return fit(*args, **kwargs)

    monkeypatch.setattr(scipy.optimize, "curve_fit", recording)
    fit_logistic(x, y)
    assert starts == [pytest.approx((y.max(), y.min(), x.mean(), x.std() / 4), abs=1e-12)]
    assert fit_logistic([2.0] * 6, [1.0, 2.0, 3.0, 4.0, 5.0, 3.0]) is None  # no curve through one x
    assert len(starts) == 1  # and no fit tried


def test_an_anti_correlated_judge_gets_a_negative_fitted_plcc():
    """Issue 26, item 8: a judge whose scores fall as the MOS rises was shown "PLCC after the logistic fit
    0.86" beside SRCC -0.54: a decreasing fit correlates positively with the MOS. Its PLCC now carries
    the fit's direction."""
    backwards = 6.0 - PREDICTED
    found = score_metrics(backwards, MOS, resamples=0)
    fitted = logistic4(backwards, *found["logistic_params"])
    assert found["logistic_direction"] == "decreasing" and found["srcc"] < -0.8
    assert found["plcc_logistic"] == pytest.approx(-scipy.stats.pearsonr(fitted, MOS)[0], abs=1e-12)
    assert found["plcc_logistic"] < -0.8
    forwards = score_metrics(PREDICTED, MOS, resamples=0)
    assert forwards["logistic_direction"] == "increasing"
    assert forwards["plcc_logistic"] == pytest.approx(-found["plcc_logistic"], abs=1e-6)  # a mirror image
    assert (
        logistic_direction([4.0, 1.0, 3.0, 0.5]),
        logistic_direction([1.0, 4.0, 3.0, 0.5]),
        logistic_direction([2.0, 2.0, 3.0, 0.5]),
        logistic_direction(None),
    ) == ("increasing", "decreasing", "flat", None)


def test_intervals_read_low_to_high_never_joined_by_a_hyphen():
    """Issue 26, item 8: "-1.0000-0.8002" read as a range from -1 to 0.8, or as one to minus 0.8."""
    assert format_interval([-1.0, -0.80024]) == "-1.000 to -0.800"
    assert format_interval([0.61, 0.8]) == "0.610 to 0.800"
    assert format_interval([-0.05, 0.125], sign=True) == "-0.050 to +0.125"
    assert format_interval(None) == ""


def test_single_precision_predictions_are_computed_in_double():
    x32 = (PREDICTED[:20] / 3).astype(np.float32)
    assert score_metrics(x32, MOS[:20], resamples=0) == score_metrics(x32.astype(np.float64), MOS[:20], resamples=0)
    assert score_metrics(MOS[:20], x32, resamples=0) == score_metrics(MOS[:20], x32.astype(np.float64), resamples=0)


def test_a_resample_with_one_side_constant_counts_as_no_correlation():
    found = score_metrics([1.0, 1.0, 1.0, 1.0, 2.0], [1.0, 2.0, 3.0, 4.0, 5.0], resamples=200)
    assert found["srcc_ci95"] is not None and found["srcc_ci95"][0] == 0.0


# Paired comparison of two judges on the same items.
JUDGE_B = np.clip(MOS + RNG.normal(0, 0.9, 60), 1, 5)  # a noisier judge than PREDICTED


def test_paired_difference_equals_scipys_paired_bootstrap():
    a, b, y = PREDICTED[:40], JUDGE_B[:40], MOS[:40]
    found = paired_difference(a, b, y, resamples=300, seed=3)
    for name, function in (("srcc", scipy.stats.spearmanr), ("plcc", scipy.stats.pearsonr)):
        expected = scipy.stats.bootstrap(
            (a, b, y),
            lambda ra, rb, ry: function(ra, ry)[0] - function(rb, ry)[0],  # noqa: B023
            paired=True,
            vectorized=False,
            n_resamples=300,
            confidence_level=0.95,
            method="percentile",
            random_state=np.random.default_rng(3),
        )
        assert found[name]["ci95"] == pytest.approx(list(expected.confidence_interval), abs=1e-12)
        assert found[name]["difference"] == function(a, y)[0] - function(b, y)[0]  # exactly, not approximately
    assert found["n"] == 40 and found["srcc"]["verdict"] in ("A", "B", "neither")
    json.dumps(found, allow_nan=False)


def test_paired_difference_resamples_the_same_items_for_both_judges():
    """Written out by hand: one draw of indices (as scipy draws them) indexes a, b and the MOS alike."""
    a, b, y = PREDICTED[:40], JUDGE_B[:40], MOS[:40]
    indices = np.random.default_rng(3).integers(0, 40, (300, 40))
    spread = [scipy.stats.spearmanr(a[i], y[i])[0] - scipy.stats.spearmanr(b[i], y[i])[0] for i in indices]
    expected = np.percentile(spread, [2.5, 97.5])
    assert paired_difference(a, b, y, resamples=300, seed=3)["srcc"]["ci95"] == pytest.approx(expected, abs=1e-12)


def test_a_judge_equal_to_the_mos_beats_a_noisy_one():
    y = MOS[:40]
    found = paired_difference(y, JUDGE_B[:40], y, resamples=300)
    for name in ("srcc", "plcc"):
        low, high = found[name]["ci95"]
        assert found[name]["difference"] > 0 and 0 < low <= found[name]["difference"] <= high
        assert found[name]["verdict"] == "A"
    assert paired_difference(JUDGE_B[:40], y, y, resamples=300)["srcc"]["verdict"] == "B"


def test_swapping_the_judges_negates_the_difference_and_flips_the_interval():
    forward = paired_difference(PREDICTED, JUDGE_B, MOS, resamples=200)
    backward = paired_difference(JUDGE_B, PREDICTED, MOS, resamples=200)
    for name in ("srcc", "plcc"):
        assert forward[name]["difference"] > 0  # PREDICTED is the closer judge
        assert backward[name]["difference"] == pytest.approx(-forward[name]["difference"], abs=1e-15)
        low, high = forward[name]["ci95"]
        assert backward[name]["ci95"] == pytest.approx([-high, -low], abs=1e-12)
        assert {forward[name]["verdict"], backward[name]["verdict"]} == {"A", "B"}


def test_near_identical_judges_are_neither():
    twin = PREDICTED + np.random.default_rng(1).normal(0, 0.01, 60)
    found = paired_difference(PREDICTED, twin, MOS, resamples=300)
    for name in ("srcc", "plcc"):
        low, high = found[name]["ci95"]
        assert low <= 0 <= high and high - low < 0.02 and found[name]["verdict"] == "neither"


def test_pairing_finds_a_difference_that_separate_intervals_hide():
    """Both judges share most of their error (the same images are hard for both); A adds none of its own,
    B a little. Each judge's own interval overlaps the other's, the paired difference lies clear of 0."""
    rng = np.random.default_rng(0)
    y = rng.uniform(1, 5, 150)
    shared = y + rng.normal(0, 0.8, 150)
    a, b = shared, shared + rng.normal(0, 0.5, 150)
    found = paired_difference(a, b, y, resamples=500)
    alone_a, alone_b = score_metrics(a, y, resamples=500), score_metrics(b, y, resamples=500)
    for name in ("srcc", "plcc"):
        assert alone_a[f"{name}_ci95"][0] < alone_b[f"{name}_ci95"][1]  # the separate intervals overlap
        assert found[name]["ci95"][0] > 0.02 and found[name]["verdict"] == "A"


def test_paired_difference_without_an_interval_gives_none():
    four = paired_difference([1.0, 2.0, 3.0, 4.0], [1.0, 3.0, 2.0, 4.0], [1.0, 2.0, 3.0, 4.0], resamples=100)
    assert four["n"] == 4 and four["srcc"]["difference"] == pytest.approx(0.2)  # 1 - 0.8: still computable
    assert (four["srcc"]["ci95"], four["srcc"]["verdict"], four["plcc"]["ci95"]) == (None, None, None)
    two = paired_difference([1.0, 2.0], [2.0, 1.0], [1.0, 2.0])
    assert two == {
        "n": 2,
        "srcc": {"difference": None, "ci95": None, "verdict": None},
        "plcc": {"difference": None, "ci95": None, "verdict": None},
    }
    constant = paired_difference([3.0] * 10, PREDICTED[:10], MOS[:10], resamples=50)
    assert constant["srcc"] == {"difference": None, "ci95": None, "verdict": None}
    unresampled = paired_difference(PREDICTED, JUDGE_B, MOS, resamples=0)
    assert unresampled["srcc"]["difference"] > 0 and unresampled["srcc"]["ci95"] is None
    assert unresampled["srcc"]["verdict"] is None
    json.dumps([four, two, constant, unresampled], allow_nan=False)


def test_paired_difference_refuses_mismatched_lengths():
    with pytest.raises(UsageError, match="3 and 2 predictions for 3 labels"):
        paired_difference([1.0, 2.0, 3.0], [1.0, 2.0], [1.0, 2.0, 3.0])


def test_paired_difference_is_seeded_with_1000_resamples_by_default():
    a, b, y = PREDICTED[:20], JUDGE_B[:20], MOS[:20]
    assert paired_difference(a, b, y) == paired_difference(a, b, y, resamples=1000, seed=0)
    assert paired_difference(a, b, y, seed=1)["srcc"]["ci95"] != paired_difference(a, b, y)["srcc"]["ci95"]
