"""Training data: the JSONL schema, importers, checks with row numbers, and weighted mixing."""

import json

import pytest
from samples import noise_image

from qinsight_sdk.data import (DataError, from_csv, from_deqa, from_qinsight_comparison, load_records,
                                     mix, read_jsonl)


@pytest.fixture
def root(tmp_path):
    for name in ("a.png", "b.png", "c.png"):
        noise_image(len(name)).save(tmp_path / name)
    (tmp_path / "broken.png").write_bytes(b"not an image")
    return tmp_path


def write_jsonl(path, records):
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    return path


def test_jsonl_schema_for_every_task(root):
    path = write_jsonl(root / "data.jsonl", [
        {"task": "score", "image": "a.png", "mos": 75, "mos_range": [0, 100]},
        {"task": "score", "image": "b.png", "mos": 4.2},
        {"task": "degradation", "image": "c.png", "distortion_class": "null", "severity": "null"},
        {"task": "comparison", "image_a": "a.png", "image_b": "b.png", "reference": "c.png", "answer": "Similar"},
        {"task": "comparison", "image_a": "a.png", "image_b": "b.png", "answer": "Image B"}])
    samples = read_jsonl(path, root)
    assert [s.task for s in samples] == ["score", "score", "degradation", "comparison", "comparison"]
    assert samples[0].mos == 4.0 and samples[1].mos == 4.2
    assert samples[3].images == (root / "c.png", root / "a.png", root / "b.png")
    assert "Reference Image:" in json.dumps(samples[3].conversation())
    assert "Reference Image:" not in json.dumps(samples[4].conversation())
    assert samples[2].columns()["distortion_class"] == "null" and samples[0].columns()["sample_id"] == "data.jsonl:1"


def test_problems_are_reported_with_row_numbers(root):
    path = write_jsonl(root / "bad.jsonl", [
        {"task": "score", "image": "a.png", "mos": 3.0},
        {"task": "score", "image": "missing.png", "mos": 3.0},
        {"task": "score", "image": "broken.png", "mos": 3.0},
        {"task": "score", "image": "a.png", "mos": 70},
        {"task": "degradation", "image": "a.png", "distortion_class": "rain", "severity": "slight"},
        {"task": "caption", "image": "a.png"},
        {"task": "comparison", "image_a": "a.png", "answer": "Image A"}])
    with pytest.raises(DataError) as error:
        read_jsonl(path, root)
    message = str(error.value)
    assert "6 bad rows" in message
    for row, fragment in [(2, "missing.png not found"), (3, "broken.png unreadable"), (4, "outside [1, 5]"),
                          (5, "unknown label"), (6, "task must be"), (7, "missing field 'image_b'")]:
        assert f"bad.jsonl:{row}: " in message and fragment in message
    kept = read_jsonl(path, root, skip_bad=True)
    assert [s.origin for s in kept] == ["bad.jsonl:1"]


def test_importers(root):
    deqa = root / "train_koniq_7k.json"
    deqa.write_text(json.dumps([{"image": "a.png", "gt_score": 80.1, "gt_score_norm": 4.1, "std": 0.3}]))
    comparison = root / "diffiqa.json"
    comparison.write_text(json.dumps([{"ref_image": "c.png", "ImageA": "a.png", "ImageB": "b.png",
                                       "result": "Image B"}]))
    table = root / "scores.csv"
    table.write_text("image,mos\na.png,10\nb.png,30\nc.png,20\n")
    records = from_deqa(deqa) + from_qinsight_comparison(comparison) + from_csv(table)
    samples = load_records([(f"row {i}", r) for i, r in enumerate(records)], root)
    assert samples[0].mos == 4.1
    assert samples[1].answer == "Image B" and samples[1].images[0] == root / "c.png"
    assert [s.mos for s in samples[2:]] == [1.0, 5.0, 3.0]  # min-max over the file
    assert [s.mos for s in load_records([("r", r) for r in from_csv(table, mos_range=(0, 40))], root)] == \
        [2.0, 4.0, 3.0]


def test_mixing(root):
    samples = read_jsonl(write_jsonl(root / "d.jsonl", [
        {"task": "score", "image": "a.png", "mos": 1 + i / 10} for i in range(10)]), root)
    mixed = mix([(samples[:4], 2.0), (samples[4:], 0.5)], seed=3)
    assert len(mixed) == 8 + 3
    assert sum(s in samples[:4] for s in mixed) == 8
    assert mix([(samples[:4], 2.0), (samples[4:], 0.5)], seed=3) == mixed  # seeded
    with pytest.raises(ValueError):
        mix([(samples, -1.0)])
