"""Killed with SIGKILL and resumed, a run ends exactly as if it had never stopped.

The promise in README ("nothing is lost") is tested the hard way: a real ``qinsight`` process on the tiny
model, killed at five seeded moments (after a seeded number of rows, plus a seeded delay so that some
kills land in the middle of a write), then rerun with the same command until it finishes. The file must
then hold exactly one row per image, every line whole JSON, and the scores of an uninterrupted run.
"""

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest
from samples import noise_image

from qinsight_sdk import cli

IMAGES, KILLS, SEED = 100, 5, 20261130
pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")


@pytest.fixture(scope="module")
def hundred(tmp_path_factory):
    """A hundred small images of a few sizes, and labels for them (MOS from their index)."""
    folder = tmp_path_factory.mktemp("hundred")
    (folder / "images").mkdir()
    for i in range(IMAGES):
        noise_image(i, 32 + (i % 7) * 8, 32 + (i % 5) * 8).save(folder / "images" / f"im{i:03d}.png")
    (folder / "labels.csv").write_text(
        "image,mos\n"
        + "".join(f"images/im{i:03d}.png,{1 + 4 * ((i * 37) % IMAGES) / IMAGES:.3f}\n" for i in range(IMAGES))
    )
    return folder


def kill_moments():
    """(rows written before the kill, extra delay in seconds), seeded, rows increasing."""
    rng = random.Random(SEED)
    rows = sorted(rng.sample(range(3, IMAGES - 10), KILLS))
    return [(count, rng.uniform(0, 0.03)) for count in rows]


def lines_in(path):
    return path.read_bytes().count(b"\n") if path.exists() else 0


def killed_at(argv, output, rows, delay):
    """Start ``qinsight argv``; once ``output`` holds ``rows`` lines (and ``delay`` more seconds), SIGKILL it."""
    process = subprocess.Popen(
        [sys.executable, "-m", "qinsight_sdk", *argv],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    deadline = time.monotonic() + 300
    while lines_in(output) < rows and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    time.sleep(delay)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, process.stderr.read().decode()  # it did not finish first
    return lines_in(output)


def interrupted_then_finished(argv, output):
    seen = [killed_at(argv, output, rows, delay) for rows, delay in kill_moments()]
    assert seen == sorted(seen) and seen[-1] < IMAGES  # each kill left work for the next run
    finished = subprocess.run(
        [sys.executable, "-m", "qinsight_sdk", *argv],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        timeout=300,
    )
    return finished


def read_rows(path):
    raw = path.read_text(encoding="utf-8")
    assert raw.endswith("\n")
    return [json.loads(line) for line in raw.splitlines()]


def test_score_killed_five_times_ends_as_if_never_stopped(tiny_model, hundred, tmp_path, capsys):
    options = ["--model", str(tiny_model), "--mode", "fast", "--batch-size", "1"]
    whole = tmp_path / "whole.jsonl"
    assert cli.main(["score", str(hundred / "images"), *options, "-o", str(whole)]) == 0
    expected = {row["key"]: row["score"] for row in read_rows(whole)}

    output = tmp_path / "killed.jsonl"
    finished = interrupted_then_finished(["score", str(hundred / "images"), *options, "-o", str(output)], output)
    assert finished.returncode == 0, finished.stderr
    rows = read_rows(output)
    assert len(rows) == len({row["key"] for row in rows}) == IMAGES  # exactly one row per image
    assert all(row["error"] is None for row in rows)
    assert {row["key"]: row["score"] for row in rows} == pytest.approx(expected, abs=1e-4)


def test_eval_killed_five_times_ends_as_if_never_stopped(tiny_model, hundred, tmp_path, capsys):
    options = ["--model", str(tiny_model), "--mode", "fast", "--batch-size", "1", "--bootstrap", "0"]
    labels = str(hundred / "labels.csv")
    whole, report = tmp_path / "whole.jsonl", tmp_path / "whole.json"
    assert cli.main(["eval", labels, *options, "--predictions", str(whole), "--report", str(report)]) == 0
    expected = json.loads(report.read_text())

    output, resumed_report = tmp_path / "killed.jsonl", tmp_path / "killed.json"
    argv = ["eval", labels, *options, "--predictions", str(output), "--report", str(resumed_report)]
    finished = interrupted_then_finished(argv, output)
    assert finished.returncode == 0, finished.stderr
    rows = read_rows(output)
    assert len(rows) == len({row["key"] for row in rows}) == IMAGES
    assert {r["key"]: r["score"] for r in rows} == pytest.approx(
        {r["key"]: r["score"] for r in read_rows(whole)}, abs=1e-4
    )
    found = json.loads(resumed_report.read_text())
    assert found["judged"] == expected["judged"] == IMAGES and found["predicted_now"] < IMAGES
    names = ("srcc", "plcc", "krcc", "rmse")
    assert [found["metrics"][n] for n in names] == pytest.approx([expected["metrics"][n] for n in names], abs=1e-4)


def test_a_full_disk_stops_the_run_with_one_line_and_a_rerun_finishes(tiny_model, hundred, tmp_path):
    """A write that fails (here: past a file-size limit, as on a full disk) ends the run with exit code 2
    and a message, never a traceback; the rows before it are kept and a rerun completes the file."""
    import resource

    def limited():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (3000, 3000))

    output = tmp_path / "out.jsonl"
    argv = [
        sys.executable,
        "-m",
        "qinsight_sdk",
        "score",
        str(hundred / "images"),
        "--model",
        str(tiny_model),
        "--mode",
        "fast",
        "-o",
        str(output),
    ]
    stopped = subprocess.run(
        argv, capture_output=True, text=True, preexec_fn=limited, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"}
    )
    assert stopped.returncode == 2 and "Traceback" not in stopped.stderr, stopped.stderr
    assert (
        f"qinsight score: error: cannot write to {output}: File too large; the rows written before are kept"
        in stopped.stderr
    )
    kept = lines_in(output)
    assert 0 < kept < IMAGES
    finished = subprocess.run(
        argv, capture_output=True, text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"}
    )
    assert finished.returncode == 0 and f"{kept} of {IMAGES} images already done" in finished.stderr
    rows = read_rows(output)
    assert len(rows) == len({row["key"] for row in rows}) == IMAGES
