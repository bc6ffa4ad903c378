"""The tiny checkpoint builder, the ComfyUI entry point, and what ComfyUI-Manager and the Registry read."""

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from PIL import Image, ImageChops, ImageStat

import qinsight_sdk
from qinsight_sdk.backends import compatibility
from qinsight_sdk.testing import build_tiny_checkpoint

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: pytest depends on tomli there
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_tiny_checkpoint_is_deterministic_small_and_real_shaped(tiny_model, tmp_path):
    again = build_tiny_checkpoint(tmp_path / "again")
    assert digest(again) == digest(tiny_model)
    assert sum(p.stat().st_size for p in tiny_model.iterdir()) < 5_000_000
    names = {p.name for p in tiny_model.iterdir()}
    assert {
        "config.json",
        "generation_config.json",
        "preprocessor_config.json",
        "chat_template.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "model.safetensors.index.json",
    } <= names
    index = json.loads((tiny_model / "model.safetensors.index.json").read_text())
    assert any(k.startswith("visual.") for k in index["weight_map"])  # released tensor names
    assert any(k.startswith("model.layers.") for k in index["weight_map"])
    config = json.loads((tiny_model / "config.json").read_text())
    assert config["model_type"] == "qwen2_5_vl" and config["rope_scaling"]["type"] == "mrope"


def test_tiny_checkpoint_from_the_command_line(tmp_path, tiny_model):
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "qinsight_sdk.testing",
            str(tmp_path / "cli"),
            "--sample-images",
            str(tmp_path / "images"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "it/s" not in done.stderr and "Loading" not in done.stderr  # no bars of other libraries
    assert digest(tmp_path / "cli") == digest(tiny_model)
    images = sorted((tmp_path / "images").iterdir())
    assert [p.suffix for p in images] == [".png", ".jpg", ".png", ".jpg"]
    assert all(Image.open(p).size[0] >= 96 for p in images)


def test_comfyui_entry_point_imports_nothing_heavy():
    code = (
        "import importlib.util, inspect, sys\n"
        f"spec = importlib.util.spec_from_file_location('qinsight_pack', {str(ROOT / '__init__.py')!r},\n"
        f"    submodule_search_locations=[{str(ROOT)!r}])\n"
        "module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module)\n"
        "heavy = [m for m in ('torch', 'transformers', 'qinsight_sdk') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "assert inspect.iscoroutinefunction(module.comfy_entrypoint)\n"
        "assert not hasattr(module, 'NODE_CLASS_MAPPINGS')  # it would make ComfyUI skip the V3 entry\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=dict(os.environ), timeout=120
    )
    assert done.returncode == 0, done.stderr


def test_comfyui_requirements_never_force_torch():
    lines = [line.split("#")[0].strip() for line in (ROOT / "requirements.txt").read_text().splitlines()]
    names = {re.split(r"[<>=!~ ]", line)[0].lower() for line in lines if line}
    assert names and not names & {"torch", "torchvision", "torchaudio"}
    assert "transformers" in names


def requirements(lines: list[str]) -> dict[str, tuple]:
    """Each requirement by its normalised name: its version specifiers, extras and environment marker."""
    parsed = [Requirement(line) for line in lines]
    return {canonicalize_name(r.name): (r.specifier, frozenset(r.extras), str(r.marker)) for r in parsed}


def test_comfyui_requirements_are_pyprojects_less_torch():
    """ComfyUI-Manager and comfy-cli install requirements.txt, pip install pyproject.toml: the two must
    allow the same releases (once requirements.txt let in transformers 4.54-4.56, which answer wrongly)."""
    lines = [line.split("#")[0].strip() for line in (ROOT / "requirements.txt").read_text().splitlines()]
    pack = requirements([line for line in lines if line])
    core = requirements(PYPROJECT["project"]["dependencies"])
    assert "torch" in core
    del core["torch"]
    assert pack == core, (
        f"only in requirements.txt: {sorted(pack.keys() - core.keys())}, only in pyproject.toml: "
        f"{sorted(core.keys() - pack.keys())}, different: "
        f"{sorted(name for name in pack.keys() & core.keys() if pack[name] != core[name])}"
    )


def test_supported_ranges_are_pyprojects():
    core = {canonicalize_name(r.name): r.specifier for r in map(Requirement, PYPROJECT["project"]["dependencies"])}
    assert compatibility.SUPPORTED.keys() == {"transformers", "torch"}
    for name, required in compatibility.SUPPORTED.items():
        assert SpecifierSet(required) == core[name], name
    fix = Requirement(compatibility.TRANSFORMERS_FIX).specifier
    assert all(version in core["transformers"] and version in fix for version in ("4.57.1", "5.9.0"))
    assert "6.0" not in fix


def test_pack_version_is_semver_and_the_sdks():
    """The Registry wants X.Y.Z, which ``comfy node validate`` does not check; the SDK reports the same."""
    assert re.fullmatch(r"\d+\.\d+\.\d+", PYPROJECT["project"]["version"])
    assert qinsight_sdk.__version__ == PYPROJECT["project"]["version"]


def test_the_version_is_read_from_pyproject_not_from_an_install(monkeypatch, tmp_path):
    """pyproject.toml is the one place: a checkout or the pack reads it even where an older install's
    metadata says otherwise; a package without it (a wheel) asks the installed distribution."""
    import importlib.metadata

    monkeypatch.setattr(importlib.metadata, "version", lambda name: "0.0.7")
    assert qinsight_sdk._version() == PYPROJECT["project"]["version"]
    copy = tmp_path / "qinsight_sdk"
    copy.mkdir()
    monkeypatch.setattr(qinsight_sdk, "__file__", str(copy / "__init__.py"))
    assert qinsight_sdk._version() == "0.0.7"


def comfy_node_validate(folder: Path, home: Path) -> subprocess.CompletedProcess:
    """comfy-cli's pre-publishing check, offline and without questions: no telemetry (DO_NOT_TRACK, and
    --no-enable-telemetry should it ask anyway), no update check, its config in a fresh HOME, and the cache
    of the ruff run it makes (its security check) there too rather than in the checkout."""
    env = dict(
        os.environ,
        HOME=str(home),
        USERPROFILE=str(home),
        DO_NOT_TRACK="1",
        COMFY_NO_UPDATE_CHECK="1",
        HF_HUB_OFFLINE="1",
        RUFF_CACHE_DIR=str(home / "ruff-cache"),
    )
    return subprocess.run(
        [sys.executable, "-m", "comfy_cli", "--skip-prompt", "--no-enable-telemetry", "--no-json", "node", "validate"],
        cwd=folder,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_comfy_node_validate_accepts_the_pack(tmp_path):
    done = comfy_node_validate(ROOT, tmp_path)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    # warnings leave fields out of what is published; security warnings (exec, eval) will become errors
    assert "All validation checks passed" in output and "Warning" not in output, output


@pytest.mark.parametrize(
    "good, bad, expected, fails",
    [
        (f'version = "{PYPROJECT["project"]["version"]}"', "version = 1", "project version is empty", True),
        # only a warning (exit code 0), which the test above counts as a failure
        (
            'requires-comfyui = ">=0.3.64"',
            'requires-comfyui = ">=0.3"',
            "Warning: Invalid requires-comfyui format",
            False,
        ),
    ],
)
def test_comfy_node_validate_rejects_broken_metadata(tmp_path, good, bad, expected, fails):
    text = (ROOT / "pyproject.toml").read_text()
    assert text.count(good) == 1
    (tmp_path / "pack").mkdir()
    (tmp_path / "pack" / "pyproject.toml").write_text(text.replace(good, bad))
    done = comfy_node_validate(tmp_path / "pack", tmp_path)
    assert expected in done.stdout + done.stderr
    assert (done.returncode != 0) == fails


def test_registry_icon_is_the_drawn_square_png(tmp_path):
    icon = PYPROJECT["tool"]["comfy"]["Icon"]
    assert icon == "docs/icon.png" or icon.startswith("https://") and icon.endswith("/docs/icon.png")
    with Image.open(ROOT / "docs" / "icon.png") as image:
        assert image.format == "PNG" and image.width == image.height <= 400
        committed = image.convert("RGBA")
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "make_icon.py"), str(tmp_path / "icon.png")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    with Image.open(tmp_path / "icon.png") as drawn:  # another Pillow may smooth edges a little differently
        assert max(ImageStat.Stat(ImageChops.difference(drawn.convert("RGBA"), committed)).mean) < 1


def test_the_declared_license_is_the_one_shipped():
    text = " ".join((ROOT / "LICENSE").read_text().split())
    assert PYPROJECT["project"]["license"] == "Apache-2.0" and PYPROJECT["project"]["license-files"] == ["LICENSE"]
    assert text.startswith("Apache License Version 2.0, January 2004") and "END OF TERMS AND CONDITIONS" in text
    assert hashlib.sha256((ROOT / "LICENSE").read_bytes()).hexdigest() == LICENSE_SHA256  # the text, unedited


LICENSE_SHA256 = "cfc7749b96f63bd31c3c42b5c471bf756814053e847c10f3eb003417bc523d30"
