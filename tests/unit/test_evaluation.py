"""The evaluation harness: predicting what is missing, resuming, failed items, reports and the CLI."""

import json

import numpy as np
import pytest
from PIL import Image

from qinsight_sdk import QualityJudge
from qinsight_sdk.cli import main
from qinsight_sdk.errors import QInsightError, UsageError
from qinsight_sdk.evaluation.data import DataError
from qinsight_sdk.evaluation.runner import evaluate, guess_format, load_items
from qinsight_sdk.io.records import open_store, read_store
from qinsight_sdk.testing import ScriptedBackend, write_sample_images

# -- the harness, with a scripted judge whose answers follow the image's brightness ----------------


def brightness_answer(conversation, images):
    rating = 1 + 4 * np.asarray(images[-1]).mean() / 255
    return f'<think>\nbright\n</think>\n<answer>\n{{"rating": {rating:.2f}}}\n</answer>'


@pytest.fixture
def labelled(tmp_path):
    for i in range(8):
        Image.new("RGB", (64, 48), (30 * i,) * 3).save(tmp_path / f"g{i}.png")
    (tmp_path / "broken.png").write_bytes(b"not an image")
    rows = [f"g{i}.png,{1.4 + 0.4 * i + (0.12 if i == 4 else 0):.2f}" for i in range(8)] + [
        "broken.png,3",
        "gone.png,1.8",
    ]
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
    assert result["metrics"]["srcc"] == pytest.approx(1.0)  # brightness follows the MOS order


def test_interrupted_run_resumes_without_repeating_or_duplicating(labelled):
    predictions = labelled / "p.jsonl"
    first = Counting(stop_after=3)
    with pytest.raises(KeyboardInterrupt):
        evaluate(labelled / "labels.csv", predictions, first, batch_size=1, progress=False)
    kept = predictions.read_text().splitlines()
    assert len(kept) == 3 and all(json.loads(line)["error"] is None for line in kept)
    with predictions.open("a") as handle:
        handle.write('{"key": "g3.png", "task": "sc')  # a kill in the middle of a write
    second = Counting()
    result = evaluate(labelled / "labels.csv", predictions, second, resamples=0, progress=False)
    assert second.asked == 10 - 3 - 2  # missing and broken images never reach the model
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
    assert retried.loaded == 1 and retried.asked == 0  # only the two bad images, which never decode


def test_predictions_made_elsewhere(labelled):
    outside = labelled / "theirs.jsonl"
    outside.write_text("".join(json.dumps({"key": f"g{i}.png", "score": 5 - i / 2}) + "\n" for i in range(8)))
    result = evaluate(labelled / "labels.csv", outside, None, resamples=0, progress=False)
    assert result["judged"] == 8 and result["metrics"]["srcc"] == pytest.approx(-1.0)
    assert {f["item"] for f in result["failed"]} == {"broken.png", "gone.png"}
    assert {f["error"] for f in result["failed"]} == {"no prediction"}  # no model: nothing predicted


def test_reading_takes_the_rows_of_the_task_asked_for(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text(
        json.dumps({"key": "a.png", "task": "score", "score": 3.0})
        + "\n"
        + json.dumps({"key": "a.png", "task": "degradation", "distortion": "blur", "severity": "slight"})
        + "\n"
    )
    rows = read_store(path, "score", legacy_root=tmp_path).rows
    assert [row["score"] for row in rows.values()] == [3.0] and list(rows) == [str(tmp_path / "a.png")]
    with pytest.raises(QInsightError, match="holds degradation rows, not score"):
        open_store(path, "score", {}, legacy_root=tmp_path)  # a file to write to holds one task


def test_data_formats_are_recognised(tmp_path):
    (tmp_path / "deqa.json").write_text(json.dumps([{"image": "a.png", "gt_score": 60, "gt_score_norm": 3.4}]))
    (tmp_path / "pairs.json").write_text(
        json.dumps([{"ref_image": "r.png", "ImageA": "a.png", "ImageB": "b.png", "result": "Image B"}])
    )
    (tmp_path / "deg.csv").write_text("image,distortion_class,severity\na.png,noise,slight\n")
    assert [guess_format(tmp_path / n) for n in ("deqa.json", "pairs.json", "deg.csv")] == [
        "deqa",
        "qinsight-comparison",
        "csv",
    ]
    (pair,) = load_items(tmp_path / "pairs.json")
    assert pair.name == "r.png|a.png|b.png" and pair.sample.answer == "Image B"
    assert pair.key == "|".join(str((tmp_path / n).resolve()) for n in ("r.png", "a.png", "b.png"))
    (item,) = load_items(tmp_path / "deg.csv")
    assert item.sample.task == "degradation" and item.name == "a.png"
    (tmp_path / "mixed.jsonl").write_text(
        json.dumps({"task": "score", "image": "a.png", "mos": 3})
        + "\n"
        + json.dumps({"task": "degradation", "image": "a.png", "distortion_class": "null", "severity": "null"})
        + "\n"
    )
    with pytest.raises(QInsightError, match="--task"):
        load_items(tmp_path / "mixed.jsonl")
    assert len(load_items(tmp_path / "mixed.jsonl", task="degradation")) == 1


def test_label_files_are_recognised_by_header_and_suffix(tmp_path):
    files = {
        "ours.csv": "image,mos\na.png,3.1\n",
        "pairs.csv": "image_a,image_b,answer\na.png,b.png,Image A\n",
        "koniq10k_scores_and_distributions.csv": '"image_name","c1","c2","c3","c4","c5","c_total","MOS","SD",'
        '"MOS_zscore"\n"a.png",0,0,25,73,7,105,3.83,0.53,77.38\n',
        "meta_info_KonIQ10kDataset.csv": "img_name,mos,std,split,c1,c2,c3,c4,c5,c_total\na.png,77.4,0.53,0,0,0,0.2,"
        "0.7,0.1,105\n",
        "meta_info_KADID10kDataset.csv": "ref_name,dist_name,dmos,std\nr.png,a.png,4.57,0.496\n",
        "meta_info_PIPALDataset.csv": "hq_name,dist_name,elo_score\nr.bmp,a.bmp,1520.0648\n",
        "KONIQ-10K_test_all.txt": "a.png 4.48 0.53\n",
        "dehaze_test_all.txt": "r.png a.png 3.35\n",
        "labels": "r.png a.png 3.35 0.2\n",  # no suffix: told by its first line
    }
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    assert [guess_format(tmp_path / name) for name in files] == [
        "csv",
        "csv",
        "koniq",
        "pyiqa",
        "pyiqa",
        "pyiqa",
        "mos-list",
        "mos-list",
        "mos-list",
    ]
    (tmp_path / "strange.csv").write_text("picture,rating\na.png,3\n")
    with pytest.raises(QInsightError, match="name its format with --format .*pyiqa, mos-list, koniq"):
        guess_format(tmp_path / "strange.csv")
    (tmp_path / "notes").write_text("these are not labels at all\n")
    with pytest.raises(QInsightError, match="--format"):
        guess_format(tmp_path / "notes")


def test_a_named_format_overrides_recognition(tmp_path):
    (tmp_path / "labels.txt").write_text("ref_name,dist_name,mos,std\nI01.BMP,I01_01_1.bmp,5.51429,0.13013\n")
    with pytest.raises(QInsightError, match="labels.txt:1: expected 'image mos"):
        load_items(tmp_path / "labels.txt")  # read as a whitespace list, by its suffix
    (item,) = load_items(tmp_path / "labels.txt", format="pyiqa", mos_range=(0, 9))
    assert item.name == "I01_01_1.bmp" and item.sample.mos == pytest.approx(1 + 4 * 5.51429 / 9)
    (tmp_path / "koniq.csv").write_text(
        '"image_name","c1","c2","c3","c4","c5","c_total","MOS","SD","MOS_zscore"\n'
        '"a.png",0,0,25,73,7,105,3.83,0.53,77.38\n'
    )
    assert [i.sample.mos for i in load_items(tmp_path / "koniq.csv")] == [3.83]
    assert [i.sample.mos for i in load_items(tmp_path / "koniq.csv", format="pyiqa")] == [3.83]
    with pytest.raises(QInsightError, match="cannot read .* as csv"):
        load_items(tmp_path / "koniq.csv", format="csv")
    with pytest.raises(
        UsageError,
        match="unknown data format 'meta'; use one of qinsight, deqa, qinsight-comparison, csv, pyiqa, mos-list, koniq",
    ):
        load_items(tmp_path / "koniq.csv", format="meta")


def test_mos_off_the_scale_says_to_pass_mos_range_naming_file_and_row(tmp_path):
    (tmp_path / "meta_info_LIVEChallengeDataset.csv").write_text(
        "img_name,mos,std\nt1.bmp,3.9,18.3\nt2.bmp,25.335306406685238,13.65\nt3.bmp,63.96,18.37\n"
    )
    with pytest.raises(DataError) as error:
        load_items(tmp_path / "meta_info_LIVEChallengeDataset.csv")
    message = str(error.value)
    assert message.startswith(
        "meta_info_LIVEChallengeDataset.csv:3: mos 25.335306406685238 is outside [1, 5] "
        "(2 of the file's 3 MOS values are outside; they run from 3.9 to 63.96)"
    )
    assert "--mos-range LOW HIGH (e.g. --mos-range 0 100" in message
    items = load_items(tmp_path / "meta_info_LIVEChallengeDataset.csv", mos_range=(0, 100))
    assert [i.sample.mos for i in items] == pytest.approx([1.156, 1 + 4 * 0.25335306406685238, 3.5584])
    (tmp_path / "BID_test_all.txt").write_text("a.JPG 3.0\n\nb.JPG 94.54154862145197\n")
    with pytest.raises(
        DataError,
        match=r"^BID_test_all.txt:3: mos 94.54154862145197 is outside \[1, 5\] \(1 of "
        r"the file's 2 MOS values is outside; they run from 3 to 94.5415\)\. "
        r".*--mos-range LOW HIGH",
    ):
        load_items(tmp_path / "BID_test_all.txt")
    with pytest.raises(
        DataError,
        match=r"BID_test_all.txt:3: mos 94.54154862145197 is outside the --mos-range 0 "
        r"10 given .*--mos-range LOW HIGH",
    ):
        load_items(tmp_path / "BID_test_all.txt", mos_range=(0, 10))


def test_eval_judges_the_distorted_image_of_a_reference_list(labelled):
    """A `reference image mos std` list: the item is the image after the reference, never the reference."""
    (labelled / "ref.png").write_bytes(b"not an image either")
    (labelled / "list.txt").write_text("".join(f"ref.png g{i}.png {1.4 + 0.4 * i:.2f} 0.5\n" for i in range(8)))
    result = evaluate(labelled / "list.txt", labelled / "p.jsonl", Counting(), resamples=0, progress=False)
    assert result["items"] == result["judged"] == 8 and result["failed"] == []
    assert result["metrics"]["srcc"] == pytest.approx(1.0)


# -- end to end on the tiny model, through the command line -------------------------------------------


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval-data")
    names = [p.name for p in write_sample_images(root, count=6, seed=3)]
    (root / "scores.csv").write_text("image,mos\n" + "".join(f"{n},{20 + 9 * i}\n" for i, n in enumerate(names)))
    degradations = [
        "noise,slight",
        "blur,moderate",
        "null,null",
        "darken,serious",
        "compression,obvious",
        "noise,catastrophic",
    ]
    (root / "degradations.csv").write_text(
        "image,distortion_class,severity\n" + "".join(f"{n},{d}\n" for n, d in zip(names, degradations))
    )
    (root / "pairs.jsonl").write_text(
        "".join(
            json.dumps(
                {
                    "task": "comparison",
                    "image_a": names[i],
                    "image_b": names[i + 1],
                    "reference": names[0],
                    "answer": ["Image A", "Image B", "Similar"][i % 3],
                }
            )
            + "\n"
            for i in range(4)
        )
    )
    return root


def test_eval_command_end_to_end_on_the_tiny_model(tiny_model, synthetic, tmp_path, capsys):
    report, figure = tmp_path / "score.json", tmp_path / "score.png"
    code = main(
        [
            "eval",
            str(synthetic / "scores.csv"),
            "--model",
            str(tiny_model),
            "--mode",
            "fast",
            "--predictions",
            str(tmp_path / "score.jsonl"),
            "--report",
            str(report),
            "--plot",
            str(figure),
            "--bootstrap",
            "100",
            "--mos-range",
            "0",
            "100",
        ]
    )
    assert code == 0
    found = json.loads(report.read_text())
    assert found["task"] == "score" and found["judged"] == 6 and found["failed"] == []
    assert set(found["metrics"]) >= {"srcc", "plcc", "plcc_logistic", "krcc", "rmse", "srcc_ci95", "plcc_ci95"}
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "SRCC" in capsys.readouterr().out

    code = main(
        [
            "eval",
            str(synthetic / "degradations.csv"),
            "--model",
            str(tiny_model),
            "--max-new-tokens",
            "12",
            "--predictions",
            str(tmp_path / "deg.jsonl"),
            "--report",
            str(tmp_path / "deg.json"),
            "--plot",
            str(tmp_path / "deg.png"),
        ]
    )
    found = json.loads((tmp_path / "deg.json").read_text())
    # the random model's answers do not parse: every item fails, is listed, and the run still reports
    assert code == 1 and found["items"] == 6 and found["judged"] == 0
    assert len(found["failed"]) == 6 and all(f["error"] for f in found["failed"])
    assert (tmp_path / "deg.png").stat().st_size > 0

    code = main(
        [
            "eval",
            str(synthetic / "pairs.jsonl"),
            "--model",
            str(tiny_model),
            "--max-new-tokens",
            "8",
            "--predictions",
            str(tmp_path / "pairs.jsonl"),
            "--report",
            str(tmp_path / "pairs.json"),
        ]
    )
    found = json.loads((tmp_path / "pairs.json").read_text())
    assert found["task"] == "comparison" and found["items"] == 4
    rows = [json.loads(line) for line in (tmp_path / "pairs.jsonl").read_text().splitlines()]
    first = {k: rows[0][k] for k in ("task", "key", "reference", "image_a", "image_b")}
    assert first == {
        "task": "comparison",
        "key": "|".join(str((synthetic / n).resolve()) for n in ("sample_0.png", "sample_0.png", "sample_1.jpg")),
        "reference": str(synthetic / "sample_0.png"),
        "image_a": str(synthetic / "sample_0.png"),
        "image_b": str(synthetic / "sample_1.jpg"),
    }
    assert rows[0]["settings"]["subfolder"] is None and rows[0]["settings"]["both_orders"] is False


# -- the metrics' edges, stated exactly ------------------------------------------------------------------


def test_a_missing_scipy_is_reported_before_any_prediction(labelled, monkeypatch):
    """Issue 10, defect 10: scipy was needed only after every item had been predicted."""
    import sys

    for name in ("scipy", "scipy.stats", "scipy.optimize"):
        monkeypatch.setitem(sys.modules, name, None)
    loader = Counting()
    with pytest.raises(QInsightError, match=r"evaluation needs scipy: pip install 'qinsight\[eval\]'"):
        evaluate(labelled / "labels.csv", labelled / "p.jsonl", loader, resamples=0, progress=False)
    assert loader.loaded == 0 and not (labelled / "p.jsonl").exists()


def test_predictions_torn_inside_a_character_are_repaired(tmp_path):
    """Issue 10, defect 7, for eval's predictions file."""
    path = tmp_path / "p.jsonl"
    torn = json.dumps({"key": "é.png", "task": "score", "score": 2.0}, ensure_ascii=False).encode()
    path.write_bytes(b'{"key": "a.png", "task": "score", "score": 3.0}\n' + torn[: torn.index("é".encode()) + 1])
    store = open_store(path, "score", {}, legacy_root=tmp_path)
    store.close()
    assert list(store.rows) == [str(tmp_path / "a.png")] and b"\xc3" not in path.read_bytes()


def test_eval_takes_csv_mos_as_it_is_unless_given_a_range(tmp_path):
    """Issue 10, defect 4: eval stretched a CSV's MOS to the file's own min and max (2.5-4.1 became 1-5)."""
    (tmp_path / "labels.csv").write_text("image,mos\na.png,2.5\nb.png,4.1\nc.png,3.3\n")
    assert [i.sample.mos for i in load_items(tmp_path / "labels.csv")] == [2.5, 4.1, 3.3]
    (tmp_path / "wide.csv").write_text("image,mos\na.png,25\nb.png,75\n")
    assert [i.sample.mos for i in load_items(tmp_path / "wide.csv", mos_range=(0, 100))] == [2.0, 4.0]
    with pytest.raises(QInsightError, match="mos 25.0 is outside"):
        load_items(tmp_path / "wide.csv")
    (tmp_path / "one.csv").write_text("image,mos\na.png,3.0\n")  # one row, or one constant value: accepted
    assert [i.sample.mos for i in load_items(tmp_path / "one.csv")] == [3.0]


def test_training_keeps_the_papers_per_file_normalisation(tmp_path):
    from qinsight_sdk.evaluation.data import read_source

    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    Image.new("RGB", (8, 8)).save(tmp_path / "b.png")
    (tmp_path / "labels.csv").write_text("image,mos\na.png,2.5\nb.png,4.1\n")
    assert [s.mos for s in read_source(tmp_path / "labels.csv", "csv")] == [1.0, 5.0]
