"""Issue 26, item 8: label and prediction files that gave a silent wrong result or a wrong exit code.

Each input here once went through ``qinsight eval`` without a word (or with the wrong one); each now
fails the item it spoils, naming it, or stops with one message naming the file, the line and the value.
"""

import json
import logging

import pytest

from qinsight_sdk import cli
from qinsight_sdk.errors import UsageError
from qinsight_sdk.evaluation.data import DataError, read_records
from qinsight_sdk.evaluation.runner import JudgeRun, compare_judges, evaluate, load_items
from qinsight_sdk.io.records import RecordFileError, key_of, make_row, open_store, read_store, row_text


def run(argv, capsys):
    code = cli.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def labels(tmp_path):
    """Five scored items (the images need not exist: predictions are only read)."""
    path = tmp_path / "labels.csv"
    path.write_text("image,mos\n" + "".join(f"g{i}.png,{1.5 + i * 0.7:.1f}\n" for i in range(5)))
    return path


def predictions(tmp_path, scores, name="p.jsonl"):
    """A predictions file as another tool writes it: ``scores`` are JSON texts, written as they are."""
    path = tmp_path / name
    path.write_text("".join(f'{{"key": "g{i}.png", "score": {s}}}\n' for i, s in enumerate(scores)))
    return path


# -- 1. a prediction that is not a finite score on a plausible scale ----------------------------------------


@pytest.mark.parametrize(
    "written, said",
    [
        ("NaN", "score NaN is not a finite number"),
        ("Infinity", "score Infinity is not a finite number"),
        ("-Infinity", "score -Infinity is not a finite number"),
        ("1e999", "score Infinity is not a finite number"),  # JSON reads it as infinity
        ("1e308", "score 1e+308 is outside any quality scale"),
        ("-3e7", "score -3e+07 is outside any quality scale"),
        ('"3.5"', "score '3.5' is not a number"),
        ("true", "score True is not a number"),
    ],
)
def test_a_prediction_that_is_not_a_finite_score_is_that_items_failure(labels, tmp_path, capsys, written, said):
    path = predictions(tmp_path, ["1.2", "2.0", written, "3.9", "4.4"])
    code, out, err = run(
        ["eval", str(labels), "--predictions", str(path), "--predictions-only", "--bootstrap", "0"], capsys
    )
    assert code == 1, (out, err)
    assert "score: 4 of 5 items judged, 1 failed" in out
    assert f"failed: g2.png: the prediction's {said}" in out
    assert "SRCC 1.0000" in out and "PLCC n/a" not in out  # metrics over the other four


def test_a_non_finite_expected_score_fails_the_item_too(labels, tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text(
        "".join(
            json.dumps({"key": f"g{i}.png", "score": 1.0 + i})[:-1]
            + (', "expected_score": NaN}' if i == 1 else f', "expected_score": {1.1 + i}}}')
            + "\n"
            for i in range(5)
        )
    )
    result = evaluate(labels, path, None, resamples=0, progress=False)
    assert result["judged"] == 4
    assert result["failed"] == [
        {"item": "g1.png", "error": "the prediction's expected_score NaN is not a finite number"}
    ]
    assert result["metrics"]["expected"]["srcc"] == pytest.approx(1.0)


def test_judges_compared_leave_out_a_non_finite_score(labels, tmp_path):
    first = predictions(tmp_path, ["1.2", "2.0", "NaN", "3.9", "4.4"], "a.jsonl")
    second = predictions(tmp_path, ["1.0", "2.2", "3.0", "3.5", "4.9"], "b.jsonl")
    items = load_items(labels)
    result = compare_judges(
        items, [JudgeRun("a", first), JudgeRun("b", second)], resamples=0, progress=False, image_root=tmp_path
    )
    (a, b) = result["judges"]
    assert (a["judged"], b["judged"]) == (4, 5) and a["metrics"]["srcc"] == pytest.approx(1.0)
    assert result["pairs"][0]["n"] == 4  # the pair is compared on the items both judged


# -- 2. label CSVs whose rows do not say one thing ------------------------------------------------------


def test_an_unquoted_decimal_comma_is_refused_naming_the_line(tmp_path):
    path = tmp_path / "labels.csv"
    path.write_text("image,mos\ng0.png,1,2\ng1.png,3.5\ng2.png\n")
    with pytest.raises(DataError) as error:
        load_items(path)
    message = str(error.value)
    assert "labels.csv:2: 3 fields, but the header (line 1) has 2: an unquoted comma" in message
    assert "labels.csv:4: 1 field, but the header (line 1) has 2" in message
    assert "labels.csv:3" not in message


def test_a_row_may_end_early_only_past_the_columns_read(tmp_path):
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("image_a,image_b,answer,reference\na.png,b.png,Image A\nc.png,d.png,Image B,r.png\n")
    assert [(i.name, i.sample.answer) for i in load_items(pairs)] == [
        ("a.png|b.png", "Image A"),
        ("r.png|c.png|d.png", "Image B"),
    ]
    scores = tmp_path / "scores.csv"
    scores.write_text("image,mos\na.png,3.5,\nb.png,2.5\n")  # an empty field at the end shifts nothing
    assert [i.sample.mos for i in load_items(scores)] == [3.5, 2.5]
    degradations = tmp_path / "deg.csv"
    degradations.write_text("image,distortion_class,severity\na.png,blur\n")
    with pytest.raises(DataError, match=r"deg.csv:2: 2 fields, but the header \(line 1\) has 3$"):
        load_items(degradations)


def test_the_same_column_twice_is_refused(tmp_path):
    path = tmp_path / "labels.csv"
    path.write_text("image,mos,mos\ng0.png,1.5,4.5\n")
    with pytest.raises(DataError, match=r"labels.csv:1: the header names 'mos' twice \(columns 2 and 3\)"):
        load_items(path)
    pyiqa = tmp_path / "meta_info_LIVEChallengeDataset.csv"
    pyiqa.write_text("img_name,mos,std,MOS\nt1.bmp,60,18,3\n")
    with pytest.raises(
        DataError,
        match=r"meta_info_LIVEChallengeDataset.csv:1: the header names 'mos' twice "
        r"\(columns 2 and 4\)",
    ):
        load_items(pyiqa, mos_range=(0, 100))


def test_an_image_listed_twice_with_two_mos_values_is_refused_naming_both_lines(tmp_path):
    path = tmp_path / "labels.csv"
    path.write_text("image,mos\ng0.png,1.5\ng1.png,2.5\n./g0.png,4.5\n")
    with pytest.raises(DataError) as error:
        load_items(path)
    assert str(error.value) == (
        "labels.csv:4: g0.png is labelled mos 4.5, but labels.csv:2 labels the same image mos 1.5: keep one of the two"
    )  # ./g0.png is g0.png


def test_an_image_listed_twice_with_one_mos_value_is_counted_once_with_a_warning(tmp_path, caplog):
    path = tmp_path / "labels.csv"
    path.write_text("image,mos\ng0.png,1.5\ng1.png,2.5\ng0.png,1.5\n")
    with caplog.at_level(logging.WARNING, logger="qinsight"):
        items = load_items(path)
    assert [i.name for i in items] == ["g0.png", "g1.png"]
    assert caplog.messages == [
        "labels.csv:4: g0.png is listed again, with the same label as labels.csv:2; it is counted once"
    ]


# -- 3. a complete last row without a newline -------------------------------------------------------------


def test_a_complete_last_row_without_a_newline_is_kept(tmp_path):
    path = tmp_path / "out.jsonl"
    rows = [
        row_text(make_row("score", [n], {"mode": "fast"}, {"score": s, "error": None}))
        for n, s in (("a.png", 1.0), ("b.png", 2.0))
    ]
    path.write_text(rows[0] + "\n" + rows[1])  # an editor, or another tool, left no newline
    assert set(read_store(path, "score").rows) == {key_of("a.png"), key_of("b.png")}
    store = open_store(path, "score", {"mode": "fast"})
    assert store.done(key_of("b.png"))
    store.write(["c.png"], {"score": 3.0, "error": None})
    store.close()
    assert [json.loads(line)["image"] for line in path.read_text().splitlines()] == ["a.png", "b.png", "c.png"]


def test_eval_does_not_judge_again_a_last_row_without_a_newline(labels, tmp_path, capsys):
    path = tmp_path / "p.jsonl"
    path.write_text("\n".join(f'{{"key": "g{i}.png", "score": {1.0 + i}}}' for i in range(5)))
    code, out, _ = run(
        ["eval", str(labels), "--predictions", str(path), "--predictions-only", "--bootstrap", "0"], capsys
    )
    assert code == 0 and "score: 5 of 5 items judged, 0 failed" in out


# -- 4. --predictions-only with no such file --------------------------------------------------------------


def test_predictions_only_with_a_file_that_is_not_there_is_a_usage_error(labels, tmp_path, capsys):
    missing = tmp_path / "predictons.jsonl"
    code, out, err = run(["eval", str(labels), "--predictions", str(missing), "--predictions-only"], capsys)
    assert code == 2 and out == ""
    assert err == (
        f"qinsight eval: error: {missing}: no such predictions file (--predictions-only reads "
        "predictions, it makes none)\n"
    )
    with pytest.raises(RecordFileError, match="no such predictions file"):
        read_store(missing, "score")
    assert not missing.exists()


# -- 5. an empty label file, a MOS that is not a number, a scale that is empty ----------------------------


@pytest.mark.parametrize(
    "name, text, said",
    [
        ("labels.csv", "image,mos\n", "a header (line 1) and no rows of labels"),
        ("labels.csv", "image,mos\n\n\n", "a header (line 1) and no rows of labels"),
        ("meta_info_KonIQ10kDataset.csv", "img_name,mos,std\n", "a header (line 1) and no rows of labels"),
        ("labels.csv", "", "empty, no header and no labels"),
        ("labels.jsonl", "\n", "empty, no labels in it"),
        ("labels.txt", "", "empty, no labels in it"),
        ("labels.json", "[]", "empty, no labels in it"),
    ],
)
def test_a_label_file_without_labels_says_so(tmp_path, name, text, said):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(DataError) as error:
        load_items(path)
    assert str(error.value) == f"{path}: {said}"


@pytest.mark.parametrize(
    "cell, said",
    [
        ("nan", "mos 'nan' is not a number"),
        ("", "mos '' is not a number"),
        ("inf", "mos 'inf' is not a number"),
        ("3,5", "mos '3,5' is not a number"),
    ],
)
def test_a_mos_that_is_not_a_number_is_named_with_its_line(tmp_path, cell, said):
    path = tmp_path / "labels.csv"
    path.write_text(f'image,mos\ng0.png,2.5\ng1.png,"{cell}"\n')
    with pytest.raises(DataError) as error:
        load_items(path)
    assert str(error.value) == f"{path}: 1 bad rows:\nlabels.csv:3: {said}"


def test_a_non_finite_mos_in_jsonl_is_named_with_its_line(tmp_path):
    path = tmp_path / "labels.jsonl"
    path.write_text('{"task": "score", "image": "a.png", "mos": 3}\n{"task": "score", "image": "b.png", "mos": NaN}\n')
    with pytest.raises(DataError, match=r"labels.jsonl:2: mos nan is not a finite number"):
        load_items(path)


@pytest.mark.parametrize("given", [(100, 0), (50, 50), (0, float("nan")), (float("-inf"), 100)])
def test_an_empty_or_reversed_mos_range_is_a_usage_error(labels, given):
    with pytest.raises(UsageError) as error:
        load_items(labels, mos_range=given)
    assert str(error.value) == (
        f"--mos-range {given[0]:g} {given[1]:g}: LOW must be a number below HIGH (the "
        "scale the labels' MOS is on, e.g. --mos-range 0 100)"
    )
    with pytest.raises(UsageError):
        read_records(labels, "csv", mos_range=given)  # training reads the same files


def test_a_reversed_mos_range_on_the_command_line_exits_two(labels, tmp_path, capsys):
    code, out, err = run(
        [
            "eval",
            str(labels),
            "--mos-range",
            "100",
            "0",
            "--predictions-only",
            "--predictions",
            str(tmp_path / "p.jsonl"),
        ],
        capsys,
    )
    assert (
        code == 2
        and out == ""
        and err.startswith("qinsight eval: error: --mos-range 100 0: LOW must be a number below HIGH")
    )


# -- 6. label errors name file lines, the header counted ------------------------------------------------------


def test_label_errors_name_the_file_line_counting_the_header(tmp_path):
    path = tmp_path / "meta_info_LIVEChallengeDataset.csv"
    path.write_text("img_name,mos,std\nt1.bmp,3.9,18.3\n\nt2.bmp,63.96,18.37\n")
    with pytest.raises(DataError, match=r"^meta_info_LIVEChallengeDataset.csv:4: mos 63.96 is outside \[1, 5\]"):
        load_items(path)
    ours = tmp_path / "labels.csv"
    ours.write_text('image,mos\n"a\nb.png",2.0\nc.png,7\n')  # a quoted name over two lines
    with pytest.raises(DataError, match=r"^labels.csv:4: mos 7.0 is outside \[1, 5\]"):
        load_items(ours)
    degradations = tmp_path / "deg.csv"
    degradations.write_text("image,distortion_class,severity\na.png,blur,slight\nb.png,rain,slight\n")
    with pytest.raises(DataError, match=r"deg.csv:3: unknown label 'rain'"):
        load_items(degradations)
    assert [origin for origin, _ in read_records(ours, "csv", mos_range=(0, 10))] == ["labels.csv:2", "labels.csv:4"]
