"""Publishing: scripts/release.py fills the public addresses from one place, and the workflows are valid."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("release", ROOT / "scripts" / "release.py")
release = importlib.util.module_from_spec(spec)
spec.loader.exec_module(release)
COMMITTED = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
VERSION = tomllib.loads(COMMITTED)["project"]["version"]
REPOSITORY = "https://github.com/someone/qinsight"
WORKFLOWS = ROOT / ".github" / "workflows"


def test_the_release_fills_the_addresses_and_changes_nothing_else():
    before = tomllib.loads(COMMITTED)
    after = tomllib.loads(release.prepare(COMMITTED, REPOSITORY + "/", f"v{VERSION}"))
    assert after["project"].pop("urls") == {
        "Repository": REPOSITORY,
        "Documentation": f"{REPOSITORY}/blob/v{VERSION}/docs/index.md",
        "Changelog": f"{REPOSITORY}/blob/v{VERSION}/CHANGELOG.md",
    }
    assert (
        after["tool"]["comfy"].pop("Icon")
        == f"https://raw.githubusercontent.com/someone/qinsight/v{VERSION}/docs/icon.png"
    )
    assert before["tool"]["comfy"].pop("Icon") == "docs/icon.png"
    assert after == before


@pytest.mark.parametrize(
    "repository, tag, text, message",
    [
        (REPOSITORY, "v0.0.0", COMMITTED, "is not v + the version in pyproject.toml"),
        (REPOSITORY, VERSION, COMMITTED, "is not v + the version"),
        ("http://github.com/someone/qinsight", None, COMMITTED, "must be https://github.com/OWNER/NAME"),
        ("https://gitlab.com/someone/qinsight", None, COMMITTED, "must be https://github.com/OWNER/NAME"),
        (REPOSITORY, None, COMMITTED.replace('name = "qinsight"', 'name = "other"'), "has no [project] version"),
        (REPOSITORY, None, COMMITTED.replace('Icon = "docs/icon.png"', 'Icon = "x.png"'), "has no [tool.comfy] Icon"),
        (REPOSITORY, None, None, "already has [project.urls]"),
    ],
)
def test_the_release_refuses_what_would_publish_wrong_metadata(repository, tag, text, message):
    tag = tag or f"v{VERSION}"
    text = text if text is not None else release.prepare(COMMITTED, REPOSITORY, f"v{VERSION}")  # a second run
    with pytest.raises(release.ReleaseError, match=message.replace("[", r"\[").replace("+", r"\+")):
        release.prepare(text, repository, tag)


def test_the_release_command_writes_the_file_or_says_why_not(tmp_path, capsys):
    path = tmp_path / "pyproject.toml"
    path.write_text(COMMITTED, encoding="utf-8")
    assert release.main(["--repository", REPOSITORY, "--tag", "v9.9.9", "--pyproject", str(path)]) == 1
    assert "release: tag 'v9.9.9' is not v + the version" in capsys.readouterr().err
    assert path.read_text(encoding="utf-8") == COMMITTED
    assert release.main(["--repository", REPOSITORY, "--tag", f"v{VERSION}", "--pyproject", str(path)]) == 0
    assert tomllib.loads(path.read_text(encoding="utf-8"))["project"]["urls"]["Repository"] == REPOSITORY


def test_the_workflows_are_valid_github_actions():
    files = sorted(WORKFLOWS.glob("*.yml"))
    assert [f.name for f in files] == ["release.yml", "windows-macos.yml"]
    done = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.github-workflows", *map(str, files)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_workflows_do_what_they_say():
    import yaml

    published = yaml.safe_load((WORKFLOWS / "release.yml").read_text(encoding="utf-8"))
    steps = [step for job in published["jobs"].values() for step in job["steps"]]
    runs = " ".join(step.get("run", "") for step in steps)
    uses = {step.get("uses", "").split("@")[0] for step in steps}
    assert published[True]["push"]["tags"] == ["v*"]  # YAML reads the key "on" as True
    assert runs.count("python scripts/release.py") == 2 and "twine check --strict" in runs
    assert {"pypa/gh-action-pypi-publish", "Comfy-Org/publish-node-action"} <= uses
    platforms = yaml.safe_load((WORKFLOWS / "windows-macos.yml").read_text(encoding="utf-8"))
    job = platforms["jobs"]["tests"]
    assert job["strategy"]["matrix"]["os"] == ["windows-latest", "macos-latest"]
    assert any("pytest tests/unit" in step.get("run", "") for step in job["steps"])
