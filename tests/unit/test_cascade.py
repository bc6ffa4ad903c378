"""Cascade ranking: a cheap judge scores all N, the judge ranks only the ``keep`` best (selection.cascade)."""

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from samples import grey
from scripted import brightness_answer

from qinsight_sdk import QualityJudge
from qinsight_sdk.backends.rali.tiny import build_tiny_rali
from qinsight_sdk.errors import UsageError
from qinsight_sdk.testing import ScriptedBackend

LEVELS = [90, 250, 10, 170, 130, 60, 220, 30]  # brightest: 1, then 6, 3, 4, 0, 5, 7, 2


class Counting(ScriptedBackend):
    """A scripted judge that records the mean level of every image it is asked about."""

    def __init__(self, answer):
        super().__init__(answer)
        self.seen = []

    def encode(self, conversations, images, answer_prefix="", template_options=None):
        self.seen += [int(round(np.asarray(i).mean())) for row in images for i in row]
        return super().encode(conversations, images, answer_prefix, template_options)


def judges(prefilter_answer=brightness_answer):
    main, cheap = Counting(brightness_answer), Counting(prefilter_answer)
    return QualityJudge(main), QualityJudge(cheap), main, cheap


@pytest.mark.parametrize("strategy", ["score", "tournament", "hybrid"])
def test_the_judge_sees_only_the_kept_images_and_the_best_wins(strategy):
    judge, prefilter, main, cheap = judges()
    ranking = judge.rank([grey(v) for v in LEVELS], strategy=strategy, prefilter=prefilter, keep=3)
    assert ranking.best == 1 and set(ranking.order[:3]) == {1, 6, 3}
    assert strategy == "tournament" or ranking.order[:3] == [1, 6, 3]  # a knockout's places are rough
    assert ranking.order[3:] == [4, 0, 5, 7, 2]  # the rest by the prefilter's scores
    assert sorted(cheap.seen) == sorted(LEVELS) and set(main.seen) == {250, 220, 170}
    assert ranking.stages == [
        {"judge": "q-insight", "judged": list(range(8))},
        {"judge": "q-insight", "judged": [1, 3, 6]},
    ]
    cheap_scores = [r.score for r in prefilter.score([grey(LEVELS[i]) for i in ranking.order[3:]], mode="fast")]
    assert ranking.scores[3:] == cheap_scores and cheap_scores == sorted(cheap_scores, reverse=True)


def test_the_judge_can_overrule_the_prefilter_among_the_kept():
    """A prefilter that prefers dark images still passes the kept ones on; the judge orders them its way."""

    def darkness(conversation, images):
        return f'<answer>{{"rating": {5 - 4 * np.asarray(images[0]).mean() / 255:.2f}}}</answer>'

    judge, prefilter, main, _ = judges(darkness)
    ranking = judge.rank([grey(v) for v in LEVELS], prefilter=prefilter, keep=3)
    assert ranking.order[:3] == [5, 7, 2]
    assert set(main.seen) == {10, 30, 60}


def test_unreadable_images_go_last_with_their_reason_and_top_k_cuts():
    judge, prefilter, main, _ = judges()
    images = [grey(v) for v in LEVELS[:4]] + ["/no/such/image.png"]
    ranking = judge.rank(images, prefilter=prefilter, keep=2, top_k=3)
    assert ranking.order == [1, 3, 0] and "/no/such/image.png" not in main.seen
    full = judge.rank(images, prefilter=prefilter, keep=2)
    assert full.order[-1] == 4 and full.scores[-1] is None and "not found" in full.errors[4]
    assert full.stages[0]["judged"] == [0, 1, 2, 3]


def test_keep_larger_than_the_field_and_bad_arguments():
    judge, prefilter, _, _ = judges()
    ranking = judge.rank([grey(v) for v in LEVELS[:3]], prefilter=prefilter, keep=10)
    assert ranking.order == [1, 0, 2] and ranking.stages[1]["judged"] == [0, 1, 2]
    judge, prefilter, _, cheap = judges()
    with pytest.raises(UsageError, match="keep must be at least 1, got 0"):
        judge.rank([grey(1)], prefilter=prefilter, keep=0)
    with pytest.raises(UsageError, match="top_k must be at least 1, got 0"):
        judge.rank([grey(1)], prefilter=prefilter, top_k=0)
    with pytest.raises(UsageError, match="strategy must be one of"):
        judge.rank([grey(1)], prefilter=prefilter, strategy="vibes")
    assert cheap.seen == []  # refused before the prefilter judged anything
    assert judge.rank([grey(10), grey(250)], prefilter=prefilter, keep=1, top_k=1).order == [1]  # 1 is enough


def test_progress_counts_the_prefilter_then_the_ranking():
    judge, prefilter, _, _ = judges()
    steps = []
    judge.rank(
        [grey(v) for v in LEVELS],
        strategy="hybrid",
        pool=2,
        prefilter=prefilter,
        keep=3,
        on_result=lambda step, result: steps.append(step),
    )
    assert steps == list(range(8 + 3 + 1))  # 8 prefilter scores, 3 scores, one match among the top 2


def test_the_ranking_says_how_it_was_decided_and_each_stage_keeps_the_batch_size():
    judge, prefilter, main, cheap = judges()
    results = []
    ranking = judge.rank(
        [grey(v) for v in LEVELS],
        strategy="hybrid",
        pool=2,
        prefilter=prefilter,
        keep=3,
        batch_size=2,
        on_result=lambda step, result: results.append(type(result).__name__),
    )
    assert (ranking.strategy, ranking.decided_by) == (
        "hybrid",
        "q-insight fast scores for all, then fast scores, "
        "then all pairs among the top 2 in both orders among the best 3",
    )
    assert (ranking.comparisons, ranking.failed_matches, ranking.unjudged) == (2, 0, {})
    assert cheap.calls == [2, 2, 2, 2] and max(main.calls) == 2  # batch_size reaches both judges
    assert results == ["ScoreResult"] * 11 + ["ComparisonResult"]  # each step passes its result on


class BrightnessMeter:
    """A prefilter that is not a QualityJudge: anything with score(images, batch_size, mode, on_result)."""

    def score(self, images, batch_size=None, mode=None, on_result=None):
        judge = QualityJudge(ScriptedBackend(brightness_answer))
        return judge.score(images, batch_size=batch_size, mode=mode, on_result=on_result)


def test_a_prefilter_without_a_profile_is_named_by_its_type():
    judge, _, _, _ = judges()
    ranking = judge.rank([grey(v) for v in LEVELS[:4]], prefilter=BrightnessMeter(), keep=2)
    assert ranking.stages[0]["judge"] == "BrightnessMeter" and ranking.decided_by.startswith("BrightnessMeter fast")
    assert ranking.order[:2] == [1, 3]


# -- on the trained tiny models ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained_rali(tmp_path_factory):
    return build_tiny_rali(tmp_path_factory.mktemp("rali") / "RALI", trained=True)


def test_best_of_8_with_rali_first_picks_the_brightest_and_reasons_on_keep_only(
    tiny_judge_model, trained_rali, tmp_path
):
    levels = [40, 200, 90, 150, 15, 120, 65, 175]
    paths = []
    for k, level in enumerate(levels):
        path = tmp_path / "images" / f"{k}.png"
        path.parent.mkdir(exist_ok=True)
        pixels = np.clip(level + np.random.default_rng(k).normal(0, 10, (96, 96, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(path)
        paths.append(path)
    judge = QualityJudge.from_pretrained(tiny_judge_model, device="cpu")
    rali = QualityJudge.from_pretrained(trained_rali, device="cpu")
    loaded = []
    original = judge.load
    judge.load = lambda source: loaded.append(source) or original(source)  # what the ranking reads
    ranking = judge.rank([str(p) for p in paths], strategy="hybrid", pool=3, prefilter=rali, keep=3)
    assert ranking.best == 1 and len(loaded) == 3
    assert ranking.stages[1]["judged"] == sorted([1, 7, 3])

    rows = tmp_path / "rank.jsonl"
    command = [
        sys.executable,
        "-m",
        "qinsight_sdk",
        "rank",
        str(tmp_path / "images"),
        "--model",
        str(tiny_judge_model),
        "--prefilter",
        str(trained_rali),
        "--keep",
        "3",
        "-o",
        str(rows),
        "--device",
        "cpu",
    ]
    first = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr
    written = [json.loads(line) for line in rows.read_text().splitlines()]
    assert written[0]["image"].endswith("1.png") and len(written) == 8
    settings = written[0]["settings"]
    assert settings["keep"] == 3 and settings["prefilter"]["profile"] == "rali"
    assert settings["prefilter"]["model"] == str(trained_rali) and settings["profile"] == "q-insight"
    again = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "already holds this ranking" in again.stderr
    assert [json.loads(line) for line in rows.read_text().splitlines()] == written
