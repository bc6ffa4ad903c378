"""The qinsight command: rows, exit codes, folders, resuming, and the installed entry point."""

import argparse
import io
import json
import os
import subprocess
import sys

import pytest

import qinsight_sdk
from qinsight_sdk import QualityJudge, cli
from qinsight_sdk.testing import ScriptedBackend


def rows(text):
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def run(argv, capsys):
    code = cli.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_score_on_tiny_model_writes_a_row_per_image(tiny_model, image_files, capsys):
    code, out, err = run(
        [
            "score",
            *map(str, image_files[:3]),
            "--model",
            str(tiny_model),
            "--max-new-tokens",
            "16",
            "--batch-size",
            "2",
        ],
        capsys,
    )
    found = rows(out)
    assert [r["image"] for r in found] == [str(p) for p in image_files[:3]]
    assert all({"image", "score", "reasoning", "error"} <= set(r) for r in found)
    assert code == (1 if any(r["error"] for r in found) else 0)


def test_folder_argument_and_bad_file(tiny_model, image_files, capsys):
    folder = image_files[0].parent
    (folder / "notes.txt").write_text("not an image, and skipped in folders")
    (folder / "broken.png").write_bytes(b"garbage")
    code, out, _ = run(["degradation", str(folder), "--model", str(tiny_model), "--max-new-tokens", "8"], capsys)
    found = rows(out)
    assert len(found) == 6 and code == 1
    broken = next(r for r in found if r["image"].endswith("broken.png"))
    assert "not a recognised image" in broken["error"]
    assert {"distortion", "severity", "reasoning"} <= set(broken)


def test_compare_row(tiny_model, image_files, capsys):
    code, out, _ = run(
        [
            "compare",
            str(image_files[0]),
            str(image_files[1]),
            "--reference",
            str(image_files[2]),
            "--model",
            str(tiny_model),
            "--max-new-tokens",
            "8",
        ],
        capsys,
    )
    (row,) = rows(out)
    assert row["image_a"] == str(image_files[0]) and row["image_b"] == str(image_files[1])
    # the random tiny model writes no verdict: the row says why, and the exit code reports a failed item
    assert row["winner"] is None and "names none" in row["error"] and row["raw"] and code == 1


@pytest.fixture
def scripted(monkeypatch):
    """The CLI with a judge that rates every image 4.2, counting how many images it was asked about."""
    asked = []

    def answer(conversation, images):
        asked.append(1)
        return '<think>\nfine\n</think>\n<answer>\n{"rating": 4.2}\n</answer>'

    monkeypatch.setattr(QualityJudge, "from_config", classmethod(lambda cls, *a, **k: cls(ScriptedBackend(answer))))
    return asked


def test_exit_code_zero_when_every_image_is_scored(scripted, image_files, capsys):
    code, out, _ = run(["score", *map(str, image_files)], capsys)
    assert code == 0 and [r["score"] for r in rows(out)] == [4.2] * 5


def test_exit_code_one_when_any_row_has_an_error(scripted, image_files, tmp_path, capsys):
    code, out, _ = run(["score", str(image_files[0]), str(tmp_path / "missing.png")], capsys)
    assert code == 1 and rows(out)[1]["error"].endswith("file not found")


def test_usage_errors_exit_two(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert run(["score", str(empty)], capsys)[0] == 2
    code, _, err = run(["score", "x.png", "--model", str(tmp_path / "no-model")], capsys)
    assert code == 2 and "does not exist" in err
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["score"])
    assert exit_info.value.code == 2


def test_a_bug_is_not_reported_as_a_usage_error(scripted, image_files, monkeypatch):
    """A plain ValueError from inside a handler keeps its traceback instead of becoming exit code 2."""

    def broken(self, *args, **kwargs):
        raise ValueError("bug")

    monkeypatch.setattr(QualityJudge, "score", broken)
    with pytest.raises(ValueError, match="bug") as raised:
        cli.main(["score", str(image_files[0])])
    assert type(raised.value) is ValueError


def test_an_sdk_usage_error_exits_two_with_its_message(scripted, image_files, capsys):
    code, out, err = run(["score", *map(str, image_files[:2]), "--dtype", "fp8"], capsys)
    assert code == 2 and out == ""
    [error] = err.splitlines()  # found while the settings are resolved, before a profile is named
    assert error.startswith("qinsight score: error: dtype 'fp8' is not one of auto, ")


@pytest.mark.parametrize(
    "given, message",
    [
        ("10", "need 784 <= min_pixels <= max_pixels, got min_pixels=3136, max_pixels=10"),
        ("huge", "image size must be official, fast or a pixel count, got 'huge'"),
    ],
)
def test_an_image_size_that_cannot_be_is_a_usage_error(given, message, capsys):
    with pytest.raises(SystemExit) as stopped:
        cli.main(["score", "x.png", "--max-pixels", given])
    assert stopped.value.code == 2 and f"argument --max-pixels: {message}" in capsys.readouterr().err


def test_eval_writes_its_report_to_report_and_has_no_output_option(image_files, tmp_path, capsys):
    data = tmp_path / "labels.csv"
    data.write_text("image,mos\n" + "".join(f"{p.name},{1 + i}\n" for i, p in enumerate(image_files)))
    predictions = tmp_path / "predictions.jsonl"
    predictions.write_text(
        "".join(json.dumps({"key": p.name, "score": 1.5 + i}) + "\n" for i, p in enumerate(image_files))
    )
    report = tmp_path / "reports" / "r.json"
    code, out, err = run(
        [
            "eval",
            str(data),
            "--predictions",
            str(predictions),
            "--predictions-only",
            "--bootstrap",
            "0",
            "--report",
            str(report),
        ],
        capsys,
    )
    found = json.loads(report.read_text())
    assert code == 0 and found["judged"] == 5 and found["failed"] == []
    assert f"report in {report}" in err and "SRCC" in out
    for option in ("--output", "-o"):
        with pytest.raises(SystemExit) as exit_info:
            cli.main(["eval", str(data), "--predictions-only", option, str(tmp_path / "x.json")])
        assert exit_info.value.code == 2
    assert not (tmp_path / "x.json").exists()


def test_every_subcommand_has_its_own_handler():
    (commands,) = [a for a in cli.build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    handlers = {name: sub.get_default("func") for name, sub in commands.choices.items()}
    assert set(handlers) == {"score", "degradation", "compare", "rank", "eval", "train", "serve"}
    assert all(callable(handler) for handler in handlers.values())
    assert len(set(handlers.values())) == len(handlers)


def test_output_file_resumes(scripted, image_files, tmp_path, capsys):
    output = tmp_path / "out" / "scores.jsonl"
    first = [str(p) for p in image_files[:2]] + [str(tmp_path / "late.png")]
    assert run(["score", *first, "-o", str(output)], capsys)[0] == 1
    assert len(scripted) == 2
    with output.open("a") as handle:
        handle.write('{"image": "half-writ')  # an interrupted run's last line
    from samples import noise_image

    noise_image(9).save(tmp_path / "late.png")
    code, _, err = run(["score", *first, str(image_files[2]), "-o", str(output)], capsys)
    assert code == 1 and "3 of 4 images already done, 1 of them with an error" in err
    assert len(scripted) == 3  # only the new image: a failed one waits for --retry-failed
    code, _, err = run(["score", *first, str(image_files[2]), "-o", str(output), "--retry-failed"], capsys)
    assert code == 0 and "3 of 4 images already done\n" in err
    assert len(scripted) == 4  # the failed image, judged again
    final = rows(output.read_text())
    assert sorted(r["image"] for r in final) == sorted(first + [str(image_files[2])])
    assert all(r["error"] is None for r in final)
    run(["score", *first, "-o", str(output), "--overwrite"], capsys)
    assert len(rows(output.read_text())) == 3


def test_installed_entry_point(tiny_model, image_files):
    """The console script users run, as a separate process with the hub switched off."""
    script = os.path.join(os.path.dirname(sys.executable), "qinsight")
    env = dict(os.environ, HF_HUB_OFFLINE="1", QINSIGHT_MODEL=str(tiny_model))
    done = subprocess.run(
        [script, "score", str(image_files[0]), "--max-new-tokens", "8"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 1, done.stderr  # the random tiny model writes no rating
    (row,) = rows(done.stdout)
    assert row["image"] == str(image_files[0]) and row["raw"] and "no rating found" in row["error"]


def test_fast_score_and_rank_commands(tiny_model, image_files, capsys):
    paths = list(map(str, image_files))
    code, out, _ = run(["score", *paths, "--mode", "fast", "--model", str(tiny_model)], capsys)
    fast = rows(out)
    assert code == 0 and all(1 <= r["score"] <= 5 and r["std"] > 0 and r["error"] is None for r in fast)
    code, out, err = run(
        [
            "rank",
            *paths,
            "--top-k",
            "3",
            "--strategy",
            "hybrid",
            "--pool",
            "3",
            "--model",
            str(tiny_model),
            "--max-new-tokens",
            "8",
        ],
        capsys,
    )
    ranked = rows(out)
    assert [r["rank"] for r in ranked] == [1, 2, 3]
    by_fast = sorted(fast, key=lambda r: -r["score"])[:3]
    assert {r["image"] for r in ranked} == {r["image"] for r in by_fast}
    assert "top 3 in both orders" in err
    # a random model's comparisons give no verdict: each is counted, each finalist flagged, and it shows
    assert "6 comparisons, 3 matches without a verdict; 0 images could not be judged, 3 got no verdict" in err
    assert code == 1 and all(r["no_verdict"].startswith("no verdict in any of its 2 matches") for r in ranked)


def test_folder_scans_take_every_format_pillow_opens_and_only_regular_files(tmp_path):
    """Issue 10, defect 9: .avif and .jfif were skipped; a scan must not follow links into loops or FIFOs."""
    from PIL import Image

    folder = tmp_path / "images"
    (folder / "sub").mkdir(parents=True)
    image = Image.new("RGB", (16, 16), (120, 60, 30))
    image.save(folder / "a.jfif", "JPEG")
    image.save(folder / "b.avif", "AVIF")
    image.save(folder / "sub" / "c.png")
    (folder / "notes.txt").write_text("not an image")
    (folder / "d.pdf").write_bytes(b"%PDF-1.4")  # Pillow writes PDFs but cannot open them
    os.mkfifo(folder / "e.png")  # reading it would block forever
    (folder / "sub" / "loop").symlink_to(folder, target_is_directory=True)
    flat = cli.expand_paths([str(folder)], recursive=False)
    assert flat == [str(folder / "a.jfif"), str(folder / "b.avif")]
    deep = cli.expand_paths([str(folder)], recursive=True)
    assert deep == [str(folder / "a.jfif"), str(folder / "b.avif"), str(folder / "sub" / "c.png")]


@pytest.mark.parametrize(
    "argv",
    [
        ["score", "x.png", "--num-samples", "0"],
        ["score", "x.png", "--max-new-tokens", "0"],
        ["rank", "x.png", "--pool", "0"],
        ["rank", "x.png", "--batch-size", "0"],
        ["rank", "x.png", "--top-k", "0"],
        ["eval", "d.csv", "--batch-size", "0"],
        ["degradation", "x.png", "--batch-size", "two"],
    ],
)
def test_counts_below_one_are_usage_errors(argv, capsys):
    """Issue 10, defect 12: --num-samples 0, --pool 0 and --batch-size 0 for rank and eval were taken silently."""
    with pytest.raises(SystemExit) as stopped:
        cli.main(argv)
    err = capsys.readouterr().err
    assert stopped.value.code == 2 and f"argument {argv[2]}:" in err
    assert "must be at least 1, got 0" in err or "'two' is not a whole number" in err


def test_a_last_line_torn_inside_a_character_is_repaired_on_resume(scripted, image_files, tmp_path, capsys):
    """Issue 10, defect 7: a kill in the middle of a multi-byte character blocked every resume."""
    output = tmp_path / "out.jsonl"
    good = json.dumps({"image": str(image_files[0]), "score": 4.2, "error": None}, ensure_ascii=False)
    torn = json.dumps({"image": "café.png", "score": 1.0, "error": None}, ensure_ascii=False).encode()
    output.write_bytes(good.encode() + b"\n" + torn[: torn.index("é".encode()) + 1])  # cut after 1 of 2 bytes
    code, _, err = run(["score", *map(str, image_files[:2]), "-o", str(output)], capsys)
    assert code == 0 and "1 of 2 images already done" in err
    assert [r["image"] for r in rows(output.read_text(encoding="utf-8"))] == [str(p) for p in image_files[:2]]


@pytest.mark.parametrize(
    "where, message",
    [("folder", "is a folder; name a file to write to"), ("under-a-file/out.jsonl", "cannot create the folder for")],
)
def test_an_output_that_cannot_be_a_file_is_a_usage_error(scripted, image_files, tmp_path, capsys, where, message):
    """Issue 10, defect 8: a folder, or a path below a file, as --output gave a traceback."""
    (tmp_path / "folder").mkdir()
    (tmp_path / "under-a-file").write_text("a file")
    code, out, err = run(["score", str(image_files[0]), "-o", str(tmp_path / where)], capsys)
    assert code == 2 and out == "" and message in err and "Traceback" not in err


def test_an_unknown_device_is_a_usage_error(tiny_model, image_files, capsys):
    code, _, err = run(["score", str(image_files[0]), "--model", str(tiny_model), "--device", "tpu"], capsys)
    assert code == 2 and "device 'tpu' is not one torch knows" in err


def test_ctrl_c_during_score_keeps_the_rows_and_exits_130(monkeypatch, image_files, tmp_path, capsys):
    calls = []

    def answer(conversation, images):
        calls.append(1)
        if len(calls) > 2:
            raise KeyboardInterrupt
        return '<answer>{"rating": 3}</answer>'

    monkeypatch.setattr(QualityJudge, "from_config", classmethod(lambda cls, *a, **k: cls(ScriptedBackend(answer))))
    output = tmp_path / "out.jsonl"
    code, _, err = run(["score", *map(str, image_files), "-o", str(output), "--batch-size", "1"], capsys)
    assert code == 130 and "interrupted; the rows written so far are kept" in err
    assert [r["image"] for r in rows(output.read_text())] == [str(p) for p in image_files[:2]]


def test_a_closed_output_pipe_is_one_line_not_a_traceback(tiny_model, image_files):
    command = (
        f"{sys.executable} -m qinsight_sdk score {' '.join(map(str, image_files))} --model {tiny_model} "
        "--mode fast | true"
    )
    done = subprocess.run(
        ["bash", "-c", command], capture_output=True, text=True, timeout=300, env=dict(os.environ, HF_HUB_OFFLINE="1")
    )
    assert "Traceback" not in done.stderr
    assert "qinsight score: error: the output pipe was closed; later rows were not written" in done.stderr


def test_an_unreadable_weight_file_is_a_model_error(tiny_model, monkeypatch):
    """As root every file is readable, so the refusal is simulated where the shard is opened."""
    from pathlib import Path

    from qinsight_sdk.backends.checkpoints import validate_checkpoint
    from qinsight_sdk.errors import ModelLoadError

    opened = Path.open

    def refuse(self, *args, **kwargs):
        if self.suffix == ".safetensors":
            raise PermissionError(13, "Permission denied", str(self))
        return opened(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", refuse)
    with pytest.raises(ModelLoadError, match="model-00001-of-00002.safetensors cannot be read: Permission denied"):
        validate_checkpoint(tiny_model)


def test_the_tiny_checkpoint_is_readable_by_others(tiny_model):
    """Its shards were written owner-only (0600), so a model built by one user failed for another."""
    import stat

    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in tiny_model.glob("*.safetensors")}
    assert modes and all(mode & 0o044 == 0o044 for mode in modes.values()), modes


def test_a_file_name_that_is_not_utf8_round_trips_and_resumes(scripted, image_files, tmp_path, capsys):
    """Issue 10, defect 1: such a name stopped score --output for good ("surrogates not allowed")."""
    import shutil

    folder = tmp_path / "images"
    folder.mkdir()
    shutil.copy(image_files[0], folder / "good.png")
    odd = os.path.join(os.fsdecode(bytes(folder)), os.fsdecode(b"bad_\xff.png"))
    shutil.copy(image_files[1], odd)
    output = tmp_path / "out.jsonl"
    code, _, _ = run(["score", str(folder), "-o", str(output)], capsys)
    written = rows(output.read_text(encoding="utf-8"))
    assert code == 0 and sorted(r["image"] for r in written) == sorted([odd, str(folder / "good.png")])
    assert os.fsencode(next(r["image"] for r in written if r["image"] == odd)).endswith(b"bad_\xff.png")
    code, _, err = run(["score", str(folder), "-o", str(output)], capsys)
    assert code == 0 and "2 of 2 images already done" in err


def test_a_rerun_made_another_way_is_refused_before_a_model_loads(scripted, image_files, tmp_path, capsys):
    """Issue 10, defect 5: a reason-mode rerun on a fast-mode file said "already done" and kept the fast
    rows; now the settings that change an answer are part of every row, and a mismatch is refused."""
    output, images = tmp_path / "out.jsonl", [str(p) for p in image_files[:2]]
    assert run(["score", *images, "--mode", "fast", "-o", str(output)], capsys)[0] == 0
    before, asked = output.read_bytes(), len(scripted)
    code, _, err = run(["score", *images, "-o", str(output)], capsys)
    assert code == 2 and "other settings (mode: 'fast' there, 'reason' now" in err
    code, _, err = run(["degradation", *images, "-o", str(output)], capsys)
    assert code == 2 and "holds score rows, not degradation" in err
    code, _, err = run(["score", *images, "--mode", "fast", "--max-pixels", "4096", "-o", str(output)], capsys)
    assert code == 2 and "(max_pixels: 12845056 there, 4096 now)" in err
    assert output.read_bytes() == before and len(scripted) == asked
    code, _, err = run(["score", *images, "--mode", "fast", "--max-new-tokens", "7", "-o", str(output)], capsys)
    assert code == 0 and "2 of 2 images already done" in err  # fast scores generate no text
    code, _, _ = run(["score", *images, "-o", str(output), "--overwrite"], capsys)
    assert code == 0 and [r["settings"]["mode"] for r in rows(output.read_text())] == ["reason", "reason"]


def test_an_image_named_two_ways_is_one_row(scripted, image_files, tmp_path, capsys, monkeypatch):
    """Issue 10, defect 5: the folder given as an absolute path and then a relative one appended duplicates."""
    monkeypatch.chdir(tmp_path)
    os.symlink(image_files[0], tmp_path / "link.png")
    code, _, _ = run(["score", str(tmp_path), str(image_files[1]), "-o", "out.jsonl"], capsys)
    assert code == 0 and len(scripted) == 5  # link.png is img0.png, and img1.png was given twice
    code, _, err = run(["score", ".", "./link.png", "-o", "out.jsonl"], capsys)
    assert code == 0 and "5 of 5 images already done" in err and len(scripted) == 5
    assert len(rows((tmp_path / "out.jsonl").read_text())) == 5


SLOW_WRITER = """import sys, time
from qinsight_sdk import QualityJudge, cli
from qinsight_sdk.testing import ScriptedBackend

def answer(conversation, images):
    time.sleep(1.0)
    return '<answer>{"rating": 3}</answer>'

QualityJudge.from_config = classmethod(lambda cls, *a, **k: cls(ScriptedBackend(answer)))
sys.exit(cli.main(["score", *sys.argv[1:], "--batch-size", "1"]))
"""


def test_a_second_writer_stops_with_a_message_and_the_first_loses_nothing(scripted, image_files, tmp_path, capsys):
    """Issue 10, defect 6: two runs on one --output lost rows silently."""
    import time

    output = tmp_path / "out.jsonl"
    first = subprocess.Popen(
        [sys.executable, "-c", SLOW_WRITER, *map(str, image_files), "-o", str(output)],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not (output.exists() and output.read_text()) and time.monotonic() < deadline:
            time.sleep(0.05)  # the first run is writing: it has its first row out
        code, _, err = run(["score", *map(str, image_files), "-o", str(output)], capsys)
        assert code == 2 and "is being written by another qinsight run; wait for it to finish" in err
        assert len(scripted) == 0
        assert first.wait(timeout=120) == 0, first.stderr.read()
    finally:
        first.kill()
    assert sorted(r["image"] for r in rows(output.read_text())) == sorted(map(str, image_files))


def test_eval_reads_what_score_wrote(scripted, image_files, tmp_path, capsys):
    """One record store: `qinsight eval labels.csv --predictions scores.jsonl` failed ("not a prediction row")."""
    labels = tmp_path / "labels.csv"
    labels.write_text("image,mos\n" + "".join(f"{p.name},{1 + i}\n" for i, p in enumerate(image_files)))
    scores = tmp_path / "scores.jsonl"
    assert run(["score", str(tmp_path), "-o", str(scores)], capsys)[0] == 0
    asked = len(scripted)
    code, out, err = run(["eval", str(labels), "--predictions", str(scores), "--bootstrap", "0"], capsys)
    assert code == 0 and "score: 5 of 5 items judged, 0 failed" in out and len(scripted) == asked
    code, out, err = run(["eval", str(labels), "--predictions", str(scores), "--mode", "fast"], capsys)
    assert code == 2 and "mode: 'reason' there, 'fast' now" in err
    code, out, _ = run(
        ["eval", str(labels), "--predictions", str(scores), "--predictions-only", "--bootstrap", "0"], capsys
    )
    assert code == 0 and "5 of 5 items judged" in out


def test_rank_and_compare_write_the_same_record_files(scripted, image_files, tmp_path, capsys):
    paths = list(map(str, image_files))
    output = tmp_path / "rank.jsonl"
    assert run(["rank", *paths, "-o", str(output)], capsys)[0] == 0
    written, asked = rows(output.read_text()), len(scripted)
    assert [r["rank"] for r in written] == [1, 2, 3, 4, 5] and {r["task"] for r in written} == {"rank"}
    code, _, err = run(["rank", *reversed(paths), "-o", str(output)], capsys)
    assert code == 0 and "already holds this ranking" in err and len(scripted) == asked
    code, _, err = run(["rank", *paths[:3], "-o", str(output)], capsys)
    assert code == 2 and "images: " in err  # a ranking of other images is not mixed in
    output.write_text("".join(json.dumps(r) + "\n" for r in written[:2]))  # a run killed while writing
    assert run(["rank", *paths, "-o", str(output)], capsys)[0] == 0
    assert rows(output.read_text()) == written and len(scripted) == 2 * asked
    pairs = tmp_path / "pairs.jsonl"
    assert run(["compare", paths[0], paths[1], "-o", str(pairs)], capsys)[0] == 1  # "rating" is no verdict
    code, _, err = run(["compare", paths[0], paths[1], "-o", str(pairs)], capsys)
    assert code == 1 and "already holds this pair" in err
    (row,) = rows(pairs.read_text())
    assert row["task"] == "comparison" and row["image_a"] == paths[0] and row["error"]


def test_eval_reads_what_degradation_and_compare_wrote(monkeypatch, image_files, tmp_path, capsys):
    def answer(conversation, images):
        if len(images) > 1:
            return "<answer>Image A</answer>"
        return '<answer>{"distortion_class": "blur", "severity": "slight"}</answer>'

    monkeypatch.setattr(QualityJudge, "from_config", classmethod(lambda cls, *a, **k: cls(ScriptedBackend(answer))))
    monkeypatch.chdir(tmp_path)
    names = [p.name for p in image_files]
    assert run(["degradation", *names[:3], "-o", "deg.jsonl"], capsys)[0] == 0
    (tmp_path / "deg.csv").write_text(
        "image,distortion_class,severity\n"
        + "".join(f"{n},blur,{s}\n" for n, s in zip(names, ("slight", "slight", "serious")))
    )
    code, out, _ = run(["eval", "deg.csv", "--predictions", "deg.jsonl", "--predictions-only"], capsys)
    assert code == 0 and "degradation: 3 of 3 items judged" in out
    for a, b in ((names[0], names[1]), (names[2], names[3])):
        assert run(["compare", a, b, "-o", "pairs.jsonl"], capsys)[0] == 0
    (tmp_path / "pairs.csv").write_text(
        f"image_a,image_b,answer\n{names[0]},{names[1]},Image A\n{names[2]},{names[3]},Image B\n"
    )
    code, out, _ = run(["eval", "pairs.csv", "--predictions", "pairs.jsonl", "--bootstrap", "0"], capsys)
    assert code == 0 and "comparison: 2 of 2 items judged" in out and "accuracy 0.5000" in out


@pytest.mark.parametrize(
    "argv, length, sampled",
    [
        ([], 512, False),
        (["--sample"], 1024, True),
        (["--sample", "--max-new-tokens", "64"], 64, True),
        (["--num-samples", "3"], 1024, True),
    ],
)
def test_sampling_on_the_command_line_is_the_demos(argv, length, sampled):
    args = cli.build_parser().parse_args(["score", "x.png", *argv])
    options = cli._decoding(args)
    assert (options.max_new_tokens, options.do_sample) == (length, sampled)


# -- --from-metadata: the rows saved in images, listed without a model -----------------------------------


def save_with_rows(path, image, rows):
    from PIL.PngImagePlugin import PngInfo

    from qinsight_sdk.io.image_metadata import embed

    info = PngInfo()
    info.add_text("prompt", "{}")
    embed(info, rows)
    image.save(path, pnginfo=info)


@pytest.fixture
def no_model(monkeypatch):
    """Loading a judge is a failure: listing saved rows must never do it."""

    def refuse(cls, *args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(QualityJudge, "from_config", classmethod(refuse))


def test_from_metadata_prints_the_rows_judging_printed(scripted, image_files, tmp_path, capsys, monkeypatch):
    """Judge, save each image's rows in it, list them again: the same lines, and no model loaded."""
    from PIL import Image

    paths = [str(tmp_path / f"saved{i}.png") for i in range(2)]
    for source, path in zip(image_files, paths):
        Image.open(source).save(path)
    judged = {}
    for task in ("score", "degradation"):
        code, out, _ = run([task, *paths], capsys)
        judged[task] = out.splitlines()
    for index, path in enumerate(paths):
        save_with_rows(path, Image.open(path), [json.loads(judged[task][index]) for task in ("score", "degradation")])
    monkeypatch.setattr(QualityJudge, "from_config", classmethod(lambda cls, *a, **k: 1 / 0))
    code, out, err = run(["score", "--from-metadata", *paths], capsys)
    assert code == 0 and out.splitlines() == judged["score"] and json.loads(judged["score"][0])["score"] == 4.2
    assert err == "score: 2 files, 0 without qinsight score metadata\n"
    code, out, err = run(["degradation", "--from-metadata", *paths], capsys)
    assert code == 0 and out.splitlines() == judged["degradation"]
    assert [r["task"] for r in rows(out)] == ["degradation", "degradation"]


def test_from_metadata_lists_a_folder_with_an_error_row_for_an_image_without(no_model, tmp_path, capsys):
    from samples import noise_image

    from qinsight_sdk.io.records import key_of, make_row

    folder = tmp_path / "renders"
    (folder / "sub").mkdir(parents=True)
    for name, score in (("a.png", 4.5), ("c.png", 2.0), ("sub/d.png", 3.0)):
        save_with_rows(
            folder / name,
            noise_image(1),
            [
                make_row("score", [str(tmp_path / "old" / name)], {"mode": "fast"}, {"score": score, "error": None}),
                make_row("degradation", [str(folder / name)], {}, {"distortion": "blur", "error": None}),
            ],
        )
    noise_image(2).save(folder / "b.png")  # never judged
    (folder / "notes.txt").write_text("skipped: not an image")
    code, out, err = run(["score", "--from-metadata", str(folder)], capsys)
    found = rows(out)
    assert code == 1 and err == "score: 3 files, 1 without qinsight score metadata\n"
    assert [r["image"] for r in found] == [str(folder / n) for n in ("a.png", "b.png", "c.png")]
    assert [r["score"] for r in found] == [4.5, None, 2.0] and {r["task"] for r in found} == {"score"}
    assert [r["key"] for r in found] == [key_of(r["image"]) for r in found]  # where the file is now
    missing = found[1]
    assert missing["error"] == (
        f"{folder / 'b.png'}: no qinsight metadata (no 'qinsight' text chunk, and no sidecar b.png.json)"
    )
    assert missing["settings"] is None and {"reasoning", "std", "samples", "raw"} <= set(missing)
    code, out, err = run(["score", "--from-metadata", str(folder), "--recursive"], capsys)
    assert code == 1 and [r["score"] for r in rows(out)] == [4.5, None, 2.0, 3.0]
    assert err == "score: 4 files, 1 without qinsight score metadata\n"
    code, out, _ = run(["degradation", "--from-metadata", str(folder / "a.png"), str(folder / "c.png")], capsys)
    assert code == 0 and [(r["task"], r["distortion"]) for r in rows(out)] == [("degradation", "blur")] * 2


def test_from_metadata_of_a_task_not_judged_is_an_error_row(no_model, tmp_path, capsys):
    from samples import noise_image

    from qinsight_sdk.io.records import make_row

    path = tmp_path / "a.png"
    save_with_rows(path, noise_image(1), [make_row("score", [str(path)], {}, {"score": 4.0, "error": None})])
    code, out, err = run(["degradation", "--from-metadata", str(path), str(tmp_path / "gone.png")], capsys)
    found = rows(out)
    assert code == 1 and err == "degradation: 2 files, 2 without qinsight degradation metadata\n"
    assert found[0]["error"] == f"{path}: its qinsight metadata holds no degradation row (only score)"
    assert found[1]["error"] == f"{tmp_path / 'gone.png'}: file not found"
    assert all(r["distortion"] is None and r["task"] == "degradation" for r in found)


TO_STDOUT_ONLY = (
    "--from-metadata prints the saved rows to standard output only: drop --output and redirect instead (> rows.jsonl)"
)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--output", "rows.jsonl"], TO_STDOUT_ONLY),
        (["-o", "rows.jsonl", "--overwrite"], TO_STDOUT_ONLY),
        (["--ray"], "--from-metadata loads no model, so there is nothing to run on Ray: drop --ray"),
    ],
)
def test_from_metadata_with_output_or_ray_is_a_usage_error(
    no_model, image_files, tmp_path, capsys, monkeypatch, extra, message
):
    monkeypatch.chdir(tmp_path)
    code, out, err = run(["degradation", "--from-metadata", str(image_files[0]), *extra], capsys)
    assert code == 2 and out == "" and err == f"qinsight degradation: error: {message}\n"
    assert not (tmp_path / "rows.jsonl").exists()


def test_from_metadata_is_in_the_help(capsys):
    for command in ("score", "degradation"):
        with pytest.raises(SystemExit):
            cli.main([command, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        assert (
            f"--from-metadata judge nothing and load no model: print the {command} rows saved in each image "
            "(its 'qinsight' PNG text chunk, else its IMAGE.json sidecar)"
        ) in text
        assert "standard output only: not with --output (redirect instead) or --ray" in text


NO_TORCH = """import sys
class Blocked:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('torch', 'transformers'):
            raise ImportError(name + ' is not installed here')
sys.meta_path.insert(0, Blocked())
from qinsight_sdk import cli
code = cli.main(sys.argv[1:])
print('loaded:', [m for m in ('torch', 'transformers') if m in sys.modules], file=sys.stderr)
sys.exit(code)
"""


def test_from_metadata_needs_neither_torch_nor_transformers(tmp_path):
    from pathlib import Path

    from samples import noise_image

    from qinsight_sdk.io.records import make_row

    path = tmp_path / "a.png"
    save_with_rows(path, noise_image(1), [make_row("score", [str(path)], {}, {"score": 3.5, "error": None})])
    noise_image(2).save(tmp_path / "b.jpg")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    done = subprocess.run(
        [sys.executable, "-c", NO_TORCH, "score", "--from-metadata", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert done.returncode == 1, done.stderr  # b.jpg has no rows: an error row, not a crash
    assert [(r["image"], r["score"]) for r in rows(done.stdout)] == [(str(path), 3.5), (str(tmp_path / "b.jpg"), None)]
    assert done.stderr.endswith("score: 2 files, 1 without qinsight score metadata\nloaded: []\n")
    judging = subprocess.run(
        [sys.executable, "-c", NO_TORCH, "score", str(path)], capture_output=True, text=True, timeout=120, env=env
    )
    assert judging.returncode == 1 and "transformers is not installed here" in judging.stderr  # the block is real


# -- issue 26, item 8: what eval prints, and output that cannot be written ----------------------------------


def backwards_judge(tmp_path, image_files):
    """Labels with MOS 1 to 5, and the predictions of a judge that scores them backwards."""
    from qinsight_sdk.io.records import make_row, row_text

    labels = tmp_path / "labels.csv"
    labels.write_text("image,mos\n" + "".join(f"{p.name},{1 + i}\n" for i, p in enumerate(image_files)))
    predictions = tmp_path / "predictions.jsonl"
    predictions.write_text(
        "".join(
            row_text(make_row("score", [str(p)], {"mode": "reason"}, {"score": s, "error": None})) + "\n"
            for p, s in zip(image_files, (4.6, 4.1, 2.9, 2.2, 1.4))
        )
    )
    return labels, predictions


def test_an_anti_correlated_judge_is_shown_as_one(image_files, tmp_path, capsys):
    """It was shown "PLCC after the 4-parameter logistic fit 0.99" beside SRCC -1, and its intervals as
    "(95% CI -1.0000--0.9721)"."""
    import re

    labels, predictions = backwards_judge(tmp_path, image_files)
    report = tmp_path / "report.json"
    code, out, _ = run(
        [
            "eval",
            str(labels),
            "--predictions",
            str(predictions),
            "--predictions-only",
            "--bootstrap",
            "200",
            "--report",
            str(report),
        ],
        capsys,
    )
    found = json.loads(report.read_text())["metrics"]
    assert code == 0 and found["logistic_direction"] == "decreasing" and found["plcc_logistic"] < -0.9
    lines = out.splitlines()
    assert lines[1] == f"SRCC -1.0000 (95% CI {found['srcc_ci95'][0]:.3f} to {found['srcc_ci95'][1]:.3f})"
    assert lines[2] == f"PLCC {found['plcc']:.4f} (95% CI {found['plcc_ci95'][0]:.3f} to {found['plcc_ci95'][1]:.3f})"
    assert lines[3].startswith(
        f"PLCC after the 4-parameter logistic fit {found['plcc_logistic']:.4f} (the fit "
        "decreases: higher scores go with lower MOS); KRCC -1.0000"
    )
    assert not re.search(r"\d-\d", out)  # no interval written as two numbers joined by a hyphen


def qinsight(argv, **options):
    return subprocess.run(
        [sys.executable, "-m", "qinsight_sdk", *map(str, argv)],
        stderr=subprocess.PIPE,
        text=True,
        timeout=300,
        env=dict(os.environ, HF_HUB_OFFLINE="1", PYTHONDONTWRITEBYTECODE="1"),
        check=False,
        **options,
    )


def one_error_line(done, line):
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.splitlines()[-1] == line and done.stderr.count("error") == 1, done.stderr


def commands_without_a_model(tmp_path, image_files):
    labels, predictions = backwards_judge(tmp_path, image_files)
    return {
        "eval": ["eval", labels, "--predictions", predictions, "--predictions-only", "--bootstrap", "0"],
        "score": ["score", "--from-metadata", image_files[0]],
        "train": ["train", "--example-config"],
        "": ["--help"],
    }


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux)")
@pytest.mark.parametrize("command", ["eval", "score", "train", ""])
def test_standard_output_on_a_full_disk_is_one_line_and_exit_two(image_files, tmp_path, command):
    """`qinsight ... > /dev/full` ended in a traceback and exit code 1 (--help: exit code 0, its text lost)."""
    with open("/dev/full", "w") as full:
        done = qinsight(commands_without_a_model(tmp_path, image_files)[command], stdout=full)
    one_error_line(
        done,
        f"qinsight{' ' + command if command else ''}: error: cannot write to standard output: No space left on device",
    )


def test_standard_output_past_a_file_size_limit_is_one_line_and_exit_two(image_files, tmp_path):
    import resource
    import signal

    def limited():
        resource.setrlimit(resource.RLIMIT_FSIZE, (100, 100))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)

    with open(tmp_path / "out.txt", "w") as out:
        done = qinsight(commands_without_a_model(tmp_path, image_files)["eval"], stdout=out, preexec_fn=limited)
    one_error_line(done, "qinsight eval: error: cannot write to standard output: File too large")
    assert (tmp_path / "out.txt").stat().st_size == 100


def test_a_closed_pipe_without_a_model_is_one_line(image_files, tmp_path):
    reader = subprocess.Popen(
        [sys.executable, "-m", "qinsight_sdk", *map(str, commands_without_a_model(tmp_path, image_files)["eval"])],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    reader.stdout.close()  # before the command writes a byte: it starts in seconds
    _, err = reader.communicate(timeout=300)
    one_error_line(
        subprocess.CompletedProcess([], reader.returncode, None, err),
        "qinsight eval: error: the output pipe was closed; later rows were not written",
    )


LONG = "x" * 300  # longer than a file name may be (255 bytes on Linux filesystems)


@pytest.mark.parametrize(
    "option, what",
    [("--report", "write the report to"), ("--plot", "write the figure to"), ("--predictions", "read the predictions")],
)
def test_a_file_name_too_long_for_eval_is_one_line(image_files, tmp_path, capsys, option, what):
    labels, predictions = backwards_judge(tmp_path, image_files)
    argv = ["eval", str(labels), "--predictions", str(predictions), "--predictions-only", "--bootstrap", "0"]
    code, out, err = run(argv + [option, str(tmp_path / f"{LONG}.out")], capsys)
    assert code == 2 and out == ""
    (line,) = err.splitlines()
    assert line.startswith(f"qinsight eval: error: cannot {what} {str(tmp_path)[:40]}")
    assert line.endswith(f"x.out ({len(str(tmp_path / LONG)) + 4} characters): File name too long")


def test_a_file_name_too_long_for_rows_or_predictions_being_written_is_one_line(
    scripted, image_files, tmp_path, capsys
):
    too_long = str(tmp_path / f"{LONG}.jsonl")
    code, out, err = run(["score", str(image_files[0]), "-o", too_long], capsys)
    assert (
        code == 2 and out == "" and err.splitlines()[-1].startswith("qinsight score: error: cannot write the rows to ")
    )
    assert err.endswith("characters): File name too long\n") and len(scripted) == 0
    labels, _ = backwards_judge(tmp_path, image_files)
    code, out, err = run(["eval", str(labels), "--predictions", too_long], capsys)
    assert code == 2 and err.splitlines()[-1].startswith("qinsight eval: error: cannot write the predictions to ")
    code, out, err = run(["eval", str(labels), "--models", "a", "b", "--predictions", too_long], capsys)
    assert code == 2 and err.splitlines()[-1].startswith(
        "qinsight eval: error: cannot write the predictions to the folder "
    )
    assert err.endswith("characters): File name too long\n") and len(scripted) == 0


def test_a_report_that_cannot_be_written_keeps_the_predictions_and_says_so(image_files, tmp_path, capsys, monkeypatch):
    from pathlib import Path

    labels, predictions = backwards_judge(tmp_path, image_files)
    written = Path.write_text

    def full(self, *args, **kwargs):
        if self.suffix == ".json":
            raise OSError(28, "No space left on device", str(self))
        return written(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", full)
    code, out, err = run(
        [
            "eval",
            str(labels),
            "--predictions",
            str(predictions),
            "--predictions-only",
            "--bootstrap",
            "0",
            "--report",
            str(tmp_path / "r.json"),
        ],
        capsys,
    )
    assert (
        code == 2
        and out == ""
        and err
        == (
            f"qinsight eval: error: cannot write the report to {tmp_path / 'r.json'}: "
            f"No space left on device; the predictions are kept in {predictions}\n"
        )
    )


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux)")
def test_scores_to_a_full_disk_are_one_line(tiny_model, image_files):
    with open("/dev/full", "w") as full:
        done = qinsight(["score", image_files[0], "--model", tiny_model, "--mode", "fast"], stdout=full)
    one_error_line(done, "qinsight score: error: cannot write to standard output: No space left on device")


def test_an_error_of_the_system_about_a_named_file_is_one_line(monkeypatch, capsys):
    """Wherever it comes from, it names the file and why; one that names no file keeps its traceback."""
    import errno

    def refused(args):
        raise OSError(errno.EROFS, "Read-only file system", "/data/out.yaml")

    monkeypatch.setattr(cli, "_run_train", refused)
    code, out, err = run(["train", "--example-config"], capsys)
    assert (code, out, err) == (2, "", "qinsight train: error: /data/out.yaml: Read-only file system\n")

    def unnamed(args):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(cli, "_run_train", unnamed)
    with pytest.raises(OSError, match="Input/output error"):
        cli.main(["train", "--example-config"])


def parsers(parser):
    """``parser`` and every subcommand's parser below it."""
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from parsers(sub)


def test_every_flag_of_every_command_says_what_it_does_and_shows_its_default():
    walked = list(parsers(cli.build_parser()))
    assert {p.prog.split()[-1] for p in walked} >= {"score", "degradation", "rank", "compare", "eval", "train", "serve"}
    for parser in walked:
        shown = " ".join(parser.format_help().split())  # a stray % in a help text raises here
        for action in parser._actions:
            if isinstance(action, (argparse._HelpAction, argparse._VersionAction, argparse._SubParsersAction)):
                continue
            name = f"{parser.prog} {'/'.join(action.option_strings) or action.dest}"
            assert action.help and len(action.help) > 10, f"{name} has no help text"
            if action.option_strings and action.default not in (None, False) and "default" not in action.help:
                assert f"(default: {action.default})" in shown, f"{name} does not show its default"


def test_help_shows_the_defaults_users_asked_for_and_never_a_token(monkeypatch):
    monkeypatch.setenv("QINSIGHT_TOKEN", "s3cret-token")
    walked = {p.prog.split()[-1]: " ".join(p.format_help().split()) for p in parsers(cli.build_parser())}
    assert "images judged together (more: faster on a GPU, more memory) (default: 8)" in walked["score"]
    assert "the TCP port to listen on (default: 8000)" in walked["serve"]
    assert f"compared pair by pair in both orders (default: {cli.HYBRID_POOL})" in walked["rank"]
    assert "(one per GPU) (default: 1)" in walked["serve"]
    assert "--reference" not in walked["score"] and "or comparison with --reference" in walked["compare"]
    assert all("s3cret-token" not in text for text in walked.values())


def test_version(capsys):
    with pytest.raises(SystemExit) as stopped:
        cli.main(["--version"])
    assert stopped.value.code == 0 and capsys.readouterr().out == f"qinsight {qinsight_sdk.__version__}\n"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["score", "x.png", "--model", ""], "argument --model: is empty: name a Hugging Face id or a folder"),
        (["score", "x.png", "--model", "  "], "argument --model: is empty"),
        (["rank", "x.png", "--prefilter", ""], "argument --prefilter: is empty"),
        (["serve", "--port", "0"], "argument --port: must be at least 1, got 0"),
        (["serve", "--port", "65536"], "argument --port: must be at most 65535, got 65536"),
        (["serve", "--port", "http"], "argument --port: 'http' is not a whole number"),
        (
            ["score", "x.png", "--max-pixels", "12845057"],
            "argument --max-pixels: max_pixels=12,845,057 is above 12,845,056, the most the model's image processor",
        ),
    ],
)
def test_flags_refuse_what_cannot_be_meant(argv, message, capsys):
    with pytest.raises(SystemExit) as stopped:
        cli.main(argv)
    assert stopped.value.code == 2 and message in capsys.readouterr().err


class Terminal(io.StringIO):
    def isatty(self):
        return True


@pytest.mark.parametrize(
    "stderr_is_terminal, output, shown",
    [
        (True, "file", True),  # score -o on a terminal: the bar
        (True, "terminal", False),  # rows printed to the same terminal: no bar over them
        (True, "pipe", True),  # rows piped on, the bar on the terminal
        (False, "file", False),
    ],
)  # a log file or CI: no bar
def test_a_progress_bar_only_on_a_terminal_and_never_over_rows(
    scripted, image_files, tmp_path, monkeypatch, stderr_is_terminal, output, shown
):
    err = Terminal() if stderr_is_terminal else io.StringIO()
    out = Terminal() if output == "terminal" else io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    monkeypatch.setattr(sys, "stdout", out)
    argv = ["score", *map(str, image_files)] + (["-o", str(tmp_path / "rows.jsonl")] if output == "file" else [])
    assert cli.main(argv) == 0
    assert ("5/5" in err.getvalue() and "image/s" in err.getvalue()) is shown, err.getvalue()
    assert err.getvalue().endswith("score: 5 images, 0 with errors\n")


@pytest.mark.parametrize("strategy, steps", [("score", 5), ("tournament", 4), ("hybrid", 5 + 3)])
def test_rank_shows_its_steps_on_a_terminal(scripted, image_files, monkeypatch, strategy, steps):
    """One step per image scored and per match, as ranking_steps counts them; the rows come after the bar."""
    err, out = Terminal(), Terminal()
    monkeypatch.setattr(sys, "stderr", err)
    monkeypatch.setattr(sys, "stdout", out)
    cli.main(["rank", *map(str, image_files), "--strategy", strategy, "--pool", "3"])
    assert f"{steps}/{steps}" in err.getvalue() and "step/s" in err.getvalue(), err.getvalue()
    assert len(rows(out.getvalue())) == 5
