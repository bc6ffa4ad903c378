"""Several judges side by side (``qinsight eval DATA --models A B``): each in turn into its own predictions
file, one in memory at a time, then one table with the paired difference of every pair."""

import gc
import json
import weakref

import numpy as np
import pytest
from PIL import Image

from qinsight_sdk import QualityJudge
from qinsight_sdk.cli import JudgeEntry, judge_entries, main
from qinsight_sdk.errors import UsageError
from qinsight_sdk.evaluation.metrics import paired_difference
from qinsight_sdk.evaluation.runner import JudgeRun, compare_judges, comparison_lines, load_items
from qinsight_sdk.testing import ScriptedBackend, build_tiny_checkpoint


def rating(noise):
    """A scripted judge: brightness onto 1-5, plus a fixed error per image (``noise`` scales it)."""

    def answer(conversation, images):
        pixels = np.asarray(images[-1], float)
        error = noise * np.sin(pixels[0, 0, 1] * 7.3)  # each image's green value (made distinct) sets it
        return f'<answer>{{"rating": {1 + 4 * pixels.mean() / 255 + error:.3f}}}</answer>'

    return answer


@pytest.fixture
def labelled(tmp_path):
    rng = np.random.default_rng(3)
    rows = []
    for i in range(24):
        level = int(rng.integers(0, 256))
        Image.new("RGB", (32, 32), (level, i * 10, level)).save(tmp_path / f"i{i}.png")
        rows.append(f"i{i}.png {1 + 4 * level / 255:.3f}")
    (tmp_path / "labels.txt").write_text("\n".join(rows) + "\n")
    return load_items(tmp_path / "labels.txt")


def run_of(name, noise, folder, loads):
    def load():
        loads.append(name)
        return QualityJudge(ScriptedBackend(rating(noise)))

    return JudgeRun(name, folder / f"{name}.jsonl", load, {"model": name})


def test_each_judge_is_measured_and_every_pair_compared_on_the_items_both_judged(labelled, tmp_path):
    loads = []
    runs = [
        run_of("sharp", 0.05, tmp_path, loads),
        run_of("blurry", 1.2, tmp_path, loads),
        run_of("middling", 0.5, tmp_path, loads),
    ]
    result = compare_judges(labelled, runs, resamples=200, progress=False)
    assert loads == ["sharp", "blurry", "middling"]
    assert [j["name"] for j in result["judges"]] == ["sharp", "blurry", "middling"]
    srcc = [j["metrics"]["srcc"] for j in result["judges"]]
    assert srcc[0] > srcc[2] > srcc[1]
    assert [(p["a"], p["b"]) for p in result["pairs"]] == [
        ("sharp", "blurry"),
        ("sharp", "middling"),
        ("blurry", "middling"),
    ]
    scores = {
        run.name: [json.loads(line)["score"] for line in run.predictions.read_text().splitlines()] for run in runs
    }
    mos = [item.sample.mos for item in labelled]
    order = {json.loads(line)["key"]: k for k, line in enumerate(runs[0].predictions.read_text().splitlines())}
    assert sorted(order.values()) == list(range(24))
    for pair in result["pairs"]:
        a = [scores[pair["a"]][order[i.key]] for i in labelled]
        b = [scores[pair["b"]][order[i.key]] for i in labelled]
        assert {k: pair[k] for k in ("n", "srcc", "plcc")} == paired_difference(a, b, mos, resamples=200)
    assert result["pairs"][0]["srcc"]["verdict"] == "A" and result["pairs"][2]["srcc"]["verdict"] == "B"


def test_a_rerun_loads_no_judge_and_a_new_judge_only_itself(labelled, tmp_path):
    loads = []
    compare_judges(
        labelled, [run_of("a", 0.1, tmp_path, loads), run_of("b", 0.9, tmp_path, loads)], resamples=0, progress=False
    )
    again = compare_judges(
        labelled,
        [run_of("a", 0.1, tmp_path, loads), run_of("b", 0.9, tmp_path, loads), run_of("c", 0.3, tmp_path, loads)],
        resamples=0,
        progress=False,
    )
    assert loads == ["a", "b", "c"] and len(again["pairs"]) == 3


def test_only_one_judge_is_in_memory_at_a_time(labelled, tmp_path):
    alive = []

    def load(name):
        def make():
            assert all(ref() is None for ref in alive), "the previous judge was still in memory"
            judge = QualityJudge(ScriptedBackend(rating(0.2)))
            alive.append(weakref.ref(judge))
            return judge

        return JudgeRun(name, tmp_path / f"{name}.jsonl", make, {})

    compare_judges(labelled, [load("first"), load("second"), load("third")], resamples=0, progress=False)
    gc.collect()
    assert len(alive) == 3 and all(ref() is None for ref in alive)


def test_the_table_names_each_judge_and_says_which_is_better(labelled, tmp_path):
    result = compare_judges(
        labelled,
        [run_of("sharp", 0.05, tmp_path, []), run_of("blurry", 1.2, tmp_path, [])],
        resamples=200,
        progress=False,
        plot=tmp_path / "judges.png",
    )
    lines = list(comparison_lines(result))
    assert lines[0].split() == ["judge", "judged", "SRCC", "(95%", "CI)", "PLCC", "(95%", "CI)"]
    sharp = result["judges"][0]["metrics"]
    assert lines[1].startswith("sharp   24/24 ")
    assert f"{sharp['srcc']:.4f} ({sharp['srcc_ci95'][0]:.3f} to {sharp['srcc_ci95'][1]:.3f})" in lines[1]
    assert lines[3] == "sharp vs blurry on the 24 items both judged:"
    pair = result["pairs"][0]["srcc"]
    assert lines[4] == (
        f"  SRCC difference {pair['difference']:+.4f} ({pair['ci95'][0]:+.3f} to "
        f"{pair['ci95'][1]:+.3f}): sharp is better"
    )
    assert (tmp_path / "judges.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_only_scores_are_compared_and_names_must_differ(tmp_path, labelled):
    (tmp_path / "d.csv").write_text("image,distortion_class,severity\ni0.png,blur,slight\n")
    degradation = load_items(tmp_path / "d.csv")
    with pytest.raises(UsageError, match="comparing judges measures scores"):
        compare_judges(degradation, [run_of("a", 0, tmp_path, []), run_of("b", 0, tmp_path, [])])
    with pytest.raises(UsageError, match=r"at least two, each with its own name; got \['a', 'a'\]"):
        compare_judges(labelled, [run_of("a", 0, tmp_path, []), run_of("a", 1, tmp_path, [])])


def test_models_are_named_from_the_command_line_and_from_a_list_file(tmp_path):
    model = tmp_path / "my-judge"
    model.mkdir()
    listed = tmp_path / "judges.txt"
    listed.write_text(
        f"# judges to compare\n{model} judge=visualquality-r1 name=mine\n\n"
        f"ByteDance/Q-Insight subfolder=comparison   # the comparison weights\n{model}\n"
    )
    entries = judge_entries(["ByteDance/Q-Insight", str(listed), str(model)], judge="q-insight")
    assert entries == [
        JudgeEntry("ByteDance/Q-Insight", "score_degradation", "q-insight", "ByteDance/Q-Insight/score_degradation"),
        JudgeEntry(str(model), None, "visualquality-r1", "mine"),
        JudgeEntry("ByteDance/Q-Insight", "comparison", "q-insight", "ByteDance/Q-Insight/comparison"),
        JudgeEntry(str(model), None, "q-insight", "my-judge"),
        JudgeEntry(str(model), None, "q-insight", "my-judge#2"),
    ]
    listed.write_text("a/b\nc/d colour=red\n")
    with pytest.raises(
        UsageError,
        match=r"judges.txt:2: expected 'MODEL \[subfolder=S\] \[judge=J\] \[name=N\]', "
        r"not 'colour'",
    ):
        judge_entries([str(listed)])
    listed.write_text("# nothing\n")
    with pytest.raises(UsageError, match="lists no models"):
        judge_entries([str(listed)])


@pytest.fixture(scope="module")
def two_tiny_judges(tmp_path_factory):
    root = tmp_path_factory.mktemp("two-judges")
    return build_tiny_checkpoint(root / "seed0", seed=0), build_tiny_checkpoint(root / "seed1", seed=1)


@pytest.mark.model
def test_eval_of_two_tiny_judges_prints_the_table_with_the_paired_comparison(two_tiny_judges, tmp_path, capsys):
    for i in range(8):
        Image.new("RGB", (56, 56), (30 * i, 20 + 25 * i, 200 - 20 * i)).save(tmp_path / f"g{i}.png")
    (tmp_path / "labels.txt").write_text("".join(f"g{i}.png {1 + i / 2:.1f} 0.3\n" for i in range(8)))
    first, second = two_tiny_judges
    argv = [
        "eval",
        str(tmp_path / "labels.txt"),
        "--models",
        str(first),
        str(second),
        "--mode",
        "fast",
        "--predictions",
        str(tmp_path / "predictions"),
        "--report",
        str(tmp_path / "report.json"),
        "--plot",
        str(tmp_path / "judges.png"),
        "--bootstrap",
        "100",
    ]
    assert main(argv) == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert lines[0].startswith("judge ") and lines[1].startswith("seed0 ") and lines[2].startswith("seed1 ")
    assert lines[3] == "seed0 vs seed1 on the 8 items both judged:"
    assert lines[4].startswith("  SRCC difference ") and lines[5].startswith("  PLCC difference ")
    report = json.loads((tmp_path / "report.json").read_text())
    assert [j["predictions"] for j in report["judges"]] == [
        str(tmp_path / "predictions" / f"labels.{name}.predictions.jsonl") for name in ("seed0", "seed1")
    ]
    seed0, seed1 = ([json.loads(line)["score"] for line in open(j["predictions"])] for j in report["judges"])
    assert seed0 != pytest.approx(seed1, abs=1e-6)  # two different judges, two different beliefs
    assert report["pairs"][0]["srcc"]["difference"] == pytest.approx(
        report["judges"][0]["metrics"]["srcc"] - report["judges"][1]["metrics"]["srcc"], abs=1e-12
    )
    assert err.count("judge profile 'q-insight' (the default)") == 2
    assert main(argv) == 0  # a rerun judges nothing again
    assert capsys.readouterr().out == out
