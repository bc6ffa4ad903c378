"""Judging on a local Ray cluster (CPU workers, the trained tiny judge): the same rows as one process, a
worker killed mid-run losing and repeating nothing, and a killed driver's rerun resuming."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from qinsight_sdk import QualityJudge
from qinsight_sdk.cli import main
from qinsight_sdk.testing import brightness_image

pytestmark = pytest.mark.ray  # Ray clusters: once in CI, at the newest transformers
ACTOR_CLASS = "MapWorker(MapBatches(_JudgeActor))"


def images_in(folder: Path, count: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        brightness_image(i / max(count - 1, 1), 600 + i).save(folder / f"b{i:02d}.png")
    return folder


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_killed_driver_leaves_its_rows_and_the_rerun_resumes(tiny_judge_model, tmp_path):
    """The driver (with its own local cluster) is killed once rows are on disk; the same command again
    judges the rest: one row per image, none lost, none twice. Runs before the module's own cluster."""
    folder = images_in(tmp_path / "images", 10)
    output = tmp_path / "rows.jsonl"
    command = [
        sys.executable,
        "-m",
        "qinsight_sdk",
        "score",
        str(folder),
        "--model",
        str(tiny_judge_model),
        "--mode",
        "fast",
        "-o",
        str(output),
        "--ray",
        "--workers",
        "1",
        "--batch-size",
        "1",
    ]
    driver = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and driver.poll() is None:
        if output.exists() and len(output.read_text().splitlines()) >= 3:
            break
        time.sleep(0.05)
    killed_with = len(output.read_text().splitlines()) if output.exists() else 0
    os.killpg(driver.pid, signal.SIGKILL)  # the driver and what it started
    driver.wait(timeout=60)
    assert 3 <= killed_with < 10, f"the driver was to be killed mid-run, with {killed_with} rows"
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    written = rows(output)
    assert sorted(r["image"] for r in written) == sorted(str(p) for p in folder.iterdir())  # once each
    assert all(r["error"] is None for r in written)
    assert f"resuming {output}: " in done.stderr


def test_ray_workers_take_a_family_installed_as_a_plugin(tmp_path):
    """Workers are other processes: a model family reaches them as an installed plugin (an entry point),
    with no edit of ours. Runs before the module's own cluster, as the driver starts its own."""
    from brightness_family import MARKER, install_as_plugin

    folder = tmp_path / "meter"
    folder.mkdir()
    (folder / MARKER).write_text("{}")
    images = images_in(tmp_path / "images", 4)
    output = tmp_path / "rows.jsonl"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "qinsight_sdk",
            "score",
            str(images),
            "--model",
            str(folder),
            "-o",
            str(output),
            "--ray",
            "--workers",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=install_as_plugin(tmp_path / "site"),
    )
    assert done.returncode == 0, done.stderr[-2000:]
    written = sorted(rows(output), key=lambda r: r["image"])
    assert [r["error"] for r in written] == [None] * 4 and {r["settings"]["profile"] for r in written} == {"brightness"}
    assert [r["score"] for r in written] == sorted(r["score"] for r in written) and written[0]["score"] < written[-1][
        "score"
    ]


@pytest.fixture(scope="module")
def ray_cluster():
    import ray

    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_the_ray_path_writes_the_rows_one_process_writes(ray_cluster, tiny_judge_model, tmp_path, capsys):
    folder = images_in(tmp_path / "images", 9)
    model = ["--model", str(tiny_judge_model), "--batch-size", "2"]
    for task, options in (("score", ["--mode", "fast"]), ("degradation", ["--max-new-tokens", "40"])):
        local, distributed = tmp_path / f"{task}-local.jsonl", tmp_path / f"{task}-ray.jsonl"
        assert main([task, str(folder), *model, *options, "-o", str(local)]) == 0
        assert main([task, str(folder), *model, *options, "-o", str(distributed), "--ray", "--workers", "2"]) == 0
        one, many = ({r["key"]: r for r in rows(path)} for path in (local, distributed))
        assert one.keys() == many.keys() and len(one) == 9
        for key, row in one.items():
            other = many[key]
            assert other["settings"] == row["settings"]  # so either path resumes the other's file
            if task == "score":
                assert other["score"] == pytest.approx(row["score"], abs=1e-4)
            else:
                assert (other["distortion"], other["severity"], other["raw"]) == (
                    row["distortion"],
                    row["severity"],
                    row["raw"],
                )
    # and resuming a single-process file with --ray judges only what is missing
    local = tmp_path / "score-local.jsonl"
    kept = local.read_text().splitlines()[:4]
    local.write_text("\n".join(kept) + "\n")
    assert main(["score", str(folder), *model, "--mode", "fast", "-o", str(local), "--ray", "--workers", "2"]) == 0
    assert "4 of 9 images already done" in capsys.readouterr().err and len(rows(local)) == 9
    # eval predicts through the same pool, into the same prediction rows
    (folder / "labels.csv").write_text("image,mos\n" + "".join(f"b{i:02d}.png,{1 + i / 2}\n" for i in range(9)))
    reports = []
    for extra in ([], ["--ray", "--workers", "2"]):
        report = tmp_path / f"report{len(reports)}.json"
        assert (
            main(
                [
                    "eval",
                    str(folder / "labels.csv"),
                    *model,
                    "--mode",
                    "fast",
                    "--bootstrap",
                    "0",
                    "--predictions",
                    str(tmp_path / f"p{len(reports)}.jsonl"),
                    "--report",
                    str(report),
                    *extra,
                ]
            )
            == 0
        )
        reports.append(json.loads(report.read_text()))
    assert reports[1]["metrics"]["srcc"] == pytest.approx(reports[0]["metrics"]["srcc"], abs=1e-6)
    assert reports[1]["judged"] == reports[0]["judged"] == 9


def test_a_worker_killed_mid_run_loses_and_repeats_nothing(ray_cluster, tiny_judge_model, tmp_path):
    import psutil

    from qinsight_sdk.distributed import DistributedJudge

    images = [str(p) for p in sorted(images_in(tmp_path / "images", 24).iterdir())]
    judge = DistributedJudge(
        {"model": str(tiny_judge_model), "device": "cpu", "local_files_only": True},
        workers=2,
        batch_size=1,
        cpus_per_worker=0.5,
    )
    seen, killed = [], []

    def on_result(index, result):
        seen.append(index)
        if len(seen) == 3 and not killed:  # Ray titles an actor's process after its class
            actors = [p for p in psutil.process_iter(["cmdline"]) if ACTOR_CLASS in " ".join(p.info["cmdline"] or [])]
            actors[0].kill()
            killed.append(actors[0].pid)

    results = judge.score(images, mode="fast", on_result=on_result)
    assert killed, "no judge actor was found to kill"
    assert sorted(seen) == list(range(24))  # each image reported once
    assert all(r is not None and r.error is None for r in results)
    alone = QualityJudge.from_pretrained(tiny_judge_model, device="cpu").score(images, mode="fast")
    assert [r.score for r in results] == pytest.approx([r.score for r in alone], abs=1e-4)


def test_a_ray_dataset_of_paths_or_image_bytes_is_judged_into_a_dataset(ray_cluster, tiny_judge_model, tmp_path):
    import ray

    from qinsight_sdk.distributed import judge_dataset

    folder = images_in(tmp_path / "images", 6)
    paths = sorted(str(p) for p in folder.iterdir())
    alone = {
        p: r.score
        for p, r in zip(paths, QualityJudge.from_pretrained(tiny_judge_model, device="cpu").score(paths, mode="fast"))
    }
    options = {"model": str(tiny_judge_model), "device": "cpu", "local_files_only": True}
    by_path = judge_dataset(
        ray.data.from_items([{"path": p, "id": i} for i, p in enumerate(paths)]),
        options,
        column="path",
        workers=2,
        cpus_per_worker=0.5,
        batch_size=2,
    ).take_all()
    as_bytes = judge_dataset(
        ray.data.read_binary_files(str(folder), include_paths=True), options, column="bytes", cpus_per_worker=0.5
    ).take_all()
    assert sorted(row["id"] for row in by_path) == list(range(6))  # the dataset's own columns pass through
    for row in by_path + as_bytes:
        assert json.loads(row["result"])["score"] == pytest.approx(alone[row["path"]], abs=1e-4)
    assert "_qinsight_item" not in by_path[0] and len(as_bytes) == 6
    with pytest.raises(Exception, match="the dataset has no column 'image'"):
        judge_dataset(ray.data.from_items([{"path": paths[0]}]), options, column="image").take_all()


def test_videos_on_ray_give_the_rows_one_process_gives(ray_cluster, tiny_video_judge_model, tmp_path):
    """``qinsight score FOLDER --ray`` with a video judge: the folder's videos (a broken one too) judged by
    Ray actors, each row as one process writes it."""
    from samples import write_video

    from qinsight_sdk.testing import video_frames

    folder = tmp_path / "videos"
    folder.mkdir()
    for k in range(5):
        write_video(folder / f"v{k}.mp4", video_frames(0.15 + 0.18 * k, k, (64, 48), 8), fps=4)
    (folder / "broken.webm").write_bytes(b"\x1aE\xdf\xa3" + bytes(40))
    model = ["--model", str(tiny_video_judge_model), "--batch-size", "2", "--mode", "fast"]
    local, distributed = tmp_path / "local.jsonl", tmp_path / "ray.jsonl"
    assert main(["score", str(folder), *model, "-o", str(local)]) == 1  # 1: a row holds an error
    assert main(["score", str(folder), *model, "-o", str(distributed), "--ray", "--workers", "2"]) == 1
    one, many = ({r["key"]: r for r in rows(path)} for path in (local, distributed))
    assert one.keys() == many.keys() and len(one) == 6
    for key, row in one.items():
        assert many[key]["settings"] == row["settings"] and (many[key]["error"] is None) == (row["error"] is None)
        if row["error"] is None:
            assert many[key]["score"] == pytest.approx(row["score"], abs=1e-4)
    scores = [one[key]["score"] for key in sorted(one) if one[key]["error"] is None]
    assert scores == sorted(scores) and scores[-1] > 50 > scores[0]  # brighter, better, on 0-100
