"""As a user meets the package: README's first run, the wheel and sdist as PyPI would get them, and the
wheel installed where nothing else of qinsight is.

The wheel goes into a fresh virtual environment whose only package is qinsight; its dependencies (torch,
transformers, ...) come from this environment's site-packages on PYTHONPATH, which Python reads without its
``.pth`` files, so the editable install of this checkout cannot fill in for a file the wheel lacks.
"""

import json
import os
import re
import shlex
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

import qinsight_sdk

pytestmark = [pytest.mark.model, pytest.mark.install]  # each builds a tiny checkpoint as a user would
ROOT = Path(__file__).resolve().parents[2]
VERSION = qinsight_sdk.__version__


@pytest.fixture(scope="module")
def dist(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    done = subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=out,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def installed(dist, tmp_path_factory):
    """(python, qinsight command, environment) of a new virtual environment holding only the wheel."""
    venv = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = venv / ("Scripts" if os.name == "nt" else "bin") / "python"
    done = subprocess.run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-index",
            str(dist / f"qinsight-{VERSION}-py3-none-any.whl"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    dependencies = [sysconfig.get_paths()["purelib"]] + [
        p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p
    ]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(dependencies), HF_HUB_OFFLINE="1")
    return python, python.parent / "qinsight", env


def test_twine_accepts_the_wheel_and_the_sdist(dist):
    files = sorted(p.name for p in dist.iterdir())
    assert files == [f"qinsight-{VERSION}-py3-none-any.whl", f"qinsight-{VERSION}.tar.gz"]
    done = subprocess.run(
        [sys.executable, "-m", "twine", "check", "--strict", *map(str, dist.iterdir())],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0 and done.stdout.count("PASSED") == 2, done.stdout + done.stderr


def test_the_wheel_carries_the_package_its_data_and_license_only(dist):
    names = zipfile.ZipFile(dist / f"qinsight-{VERSION}-py3-none-any.whl").namelist()
    info = f"qinsight-{VERSION}.dist-info"
    assert {name.split("/")[0] for name in names} == {"qinsight_sdk", info}
    sources = {
        p.relative_to(ROOT).as_posix()
        for p in (ROOT / "qinsight_sdk").rglob("*")
        if p.suffix in (".py", ".yaml") and "__pycache__" not in p.parts
    }
    assert sources <= set(names), sorted(sources - set(names))
    assert not [name for name in names if "__pycache__" in name or name.endswith(".pyc")]
    assert f"{info}/licenses/LICENSE" in names
    entry_points = zipfile.ZipFile(dist / f"qinsight-{VERSION}-py3-none-any.whl").read(f"{info}/entry_points.txt")
    assert b"qinsight = qinsight_sdk.cli:main" in entry_points


def test_the_installed_wheel_runs_its_command_builds_a_judge_and_scores(installed, tmp_path):
    python, qinsight, env = installed
    where = subprocess.run(
        [str(python), "-c", "import qinsight_sdk; print(qinsight_sdk.__file__)"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    assert Path(where.stdout.strip()).is_relative_to(python.parent.parent), where.stdout + where.stderr
    version = subprocess.run([str(qinsight), "--version"], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert version.stdout == f"qinsight {VERSION}\n", version.stderr
    shown = subprocess.run(
        [str(qinsight), "--help"], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120
    )
    assert shown.returncode == 0 and "score" in shown.stdout and "serve" in shown.stdout, shown.stderr
    built = subprocess.run(
        [
            str(python),
            "-m",
            "qinsight_sdk.testing",
            str(tmp_path / "tiny"),
            "--sample-images",
            str(tmp_path / "images"),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=600,
    )
    assert built.returncode == 0, built.stderr[-3000:]
    scored = subprocess.run(
        [
            str(qinsight),
            "score",
            str(tmp_path / "images"),
            "--model",
            str(tmp_path / "tiny"),
            "--mode",
            "fast",
            "--device",
            "cpu",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=600,
    )
    assert scored.returncode == 0, scored.stderr[-3000:]
    rows = [json.loads(line) for line in scored.stdout.splitlines()]
    assert len(rows) == 4 and all(1 <= row["score"] <= 5 and row["error"] is None for row in rows)


def readme_first_run() -> list[str]:
    """The commands of README's offline first run, after its set-up (venv, pip install)."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    start = readme.index("The same on a machine without the weights or a network")
    block = re.search(r"```bash\n(.+?)\n```", readme[start:], re.DOTALL).group(1)
    steps = [step.strip() for step in block.split("&&")]
    assert steps[:3] == ["python3 -m venv .venv", ". .venv/bin/activate", "pip install -e ."], steps
    return steps[3:]


def test_readmes_first_run_scores_with_reasoning_and_exits_zero(tmp_path):
    """What a newcomer without the weights sees: a score and reasoning per sample image, no error, exit 0."""
    env = dict(
        os.environ, HF_HUB_OFFLINE="1", PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]])
    )
    for step in readme_first_run():
        step = step.replace("/tmp/qinsight-tiny", str(tmp_path / "tiny")).replace(
            "/tmp/qinsight-images", str(tmp_path / "images")
        )
        argv = shlex.split(step)
        argv[0] = sys.executable if argv[0] == "python" else argv[0]
        done = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=900)
        assert done.returncode == 0, f"{step}: {done.stderr[-3000:]}"
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(rows) == 4 and all(
        row["error"] is None and 1 <= row["score"] <= 5 and row["reasoning"] for row in rows
    ), rows
    assert "it/s" not in done.stderr  # no library's progress bars (and none of ours: not a terminal)
