"""Unsupported transformers or torch: named with a fix, logged once by the ComfyUI entry point, refused
by judging nodes, and never a reason for the pack to fail to load."""

import importlib
import importlib.metadata
import importlib.util
import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from qinsight_sdk.backends import compatibility

ROOT = Path(__file__).resolve().parents[2]
GOOD = {"transformers": "4.57.1", "torch": "2.6.0+cu124"}


@pytest.fixture
def installed(monkeypatch):
    """Set what importlib.metadata reports for transformers and torch (None: not installed)."""
    versions = dict(GOOD)
    real = importlib.metadata.version

    def version(name: str) -> str:
        if name not in versions:
            return real(name)
        if versions[name] is None:
            raise importlib.metadata.PackageNotFoundError(name)
        return versions[name]

    monkeypatch.setattr(importlib.metadata, "version", version)
    return versions


@pytest.mark.parametrize(
    "name, version",
    [
        ("transformers", "4.51.3"),
        ("transformers", "4.53.3"),
        ("transformers", "4.57.1"),
        ("transformers", "5.24.0"),
        ("transformers", "5.0.0rc1"),
        ("torch", "2.4.0"),
        ("torch", "2.14.1"),
        ("torch", "2.9.0.dev20250801+cu128"),
    ],
)
def test_supported_releases_raise_no_problem(installed, name, version):
    installed[name] = version
    assert compatibility.problems() == []


@pytest.mark.parametrize("version", ["4.54.0", "4.55.2", "4.56.2", "4.40.0", "6.0.0", "6.0.0.dev0", "not-a-version"])
def test_unsupported_transformers_is_named_with_range_and_fix(installed, version):
    installed["transformers"] = version
    assert compatibility.problems() == [
        (
            f"transformers {version} is installed, but qinsight needs "
            "transformers>=4.51.3,!=4.54.*,!=4.55.*,!=4.56.*,<6 "
            f'(4.54-4.56 give wrong answers in batches). Fix: {sys.executable} -m pip install "transformers>=4.57.1,<6"'
        )
    ]


def test_missing_packages_are_named(installed):
    installed.update(transformers=None, torch=None)
    found = compatibility.problems()
    assert [sentence.split(",")[0] for sentence in found] == ["transformers is not installed", "torch is not installed"]
    assert "pytorch.org" in found[1] and sys.executable in found[1]


def test_old_torch_points_at_pytorch_org(installed):
    installed["torch"] = "2.3.1"
    assert compatibility.problems() == [
        (
            f"torch 2.3.1 is installed, but qinsight needs torch>=2.4. Fix: install torch>=2.4 for your GPU into "
            f"{sys.executable} with the command from https://pytorch.org/get-started/locally/"
        )
    ]


def test_a_python_path_with_a_space_is_quoted(installed, monkeypatch):
    installed["transformers"] = "4.55.2"
    monkeypatch.setattr(sys, "executable", r"C:\ComfyUI portable\python_embeded\python.exe")
    assert compatibility.problems()[0].endswith(
        r'Fix: "C:\ComfyUI portable\python_embeded\python.exe" -m pip install "transformers>=4.57.1,<6"'
    )


def test_without_packaging_the_check_says_so(installed, monkeypatch):
    for name in ["packaging", *(name for name in sys.modules if name.startswith("packaging."))]:
        monkeypatch.setitem(sys.modules, name, None)
    found = compatibility.problems()
    assert len(found) == 1 and found[0].startswith('the "packaging" package is not installed')
    assert found[0].endswith(f'{sys.executable} -m pip install "packaging"')


def test_the_warning_is_one_line_naming_every_problem(installed, caplog):
    logger = logging.getLogger("qinsight")
    with caplog.at_level(logging.INFO, logger="qinsight"):
        compatibility.warn_if_unsupported(logger)
        assert caplog.records == []
        installed.update(transformers="4.55.2", torch="2.3.1")
        compatibility.warn_if_unsupported(logger)
    [record] = caplog.records
    assert record.levelno == logging.WARNING and "\n" not in record.getMessage()
    message = record.getMessage()
    assert message.startswith(
        "qinsight nodes are loaded, but they cannot judge until this is fixed: transformers 4.55.2 is installed"
    )
    assert "; torch 2.3.1 is installed" in message


@pytest.fixture(scope="module")
def memory():
    """nodes/memory.py inside the pack, imported as ComfyUI does (under the pack's own name)."""
    name = "qinsight_pack_compat"
    spec = importlib.util.spec_from_file_location(name, ROOT / "__init__.py", submodule_search_locations=[str(ROOT)])
    sys.modules[name] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sys.modules[name])
    yield importlib.import_module(f"{name}.nodes.memory")
    for loaded in [loaded for loaded in sys.modules if loaded == name or loaded.startswith(name + ".")]:
        del sys.modules[loaded]


def test_judging_refuses_unsupported_versions_before_loading(installed, memory):
    handle = memory.JudgeHandle(
        memory.JudgeSpec(
            model="unused", subfolder=None, device="cpu", dtype="auto", after_run="unload", allow_download=False
        )
    )
    installed["transformers"] = "4.55.2"
    with pytest.raises(
        RuntimeError,
        match=r"^qinsight cannot judge: transformers 4\.55\.2 is installed, .*"
        r'Fix: .* -m pip install "transformers>=4\.57\.1,<6"$',
    ):
        handle.acquire()
    assert handle.judge is None
    installed["transformers"] = GOOD["transformers"]
    with pytest.raises(ModuleNotFoundError, match="comfy"):  # past the check, on to ComfyUI's model management
        handle.acquire()


ENTRY_POINT = """
import asyncio, importlib.metadata, importlib.util, json, logging, sys
tree, root, block = sys.argv[1:]
sys.path.insert(0, tree)
sys.argv[1:] = ["--cpu"]
import comfy.options
comfy.options.enable_args_parsing()
if block == "block":
    sys.modules["transformers"] = None
real = importlib.metadata.version
importlib.metadata.version = lambda name: "4.55.2" if name == "transformers" else real(name)
records = []
handler = logging.Handler()
handler.emit = records.append
logging.getLogger().addHandler(handler)
logging.getLogger().setLevel(logging.INFO)
spec = importlib.util.spec_from_file_location("qinsight_pack", root + "/__init__.py", submodule_search_locations=[root])
module = importlib.util.module_from_spec(spec)
sys.modules["qinsight_pack"] = module
spec.loader.exec_module(module)
extension = asyncio.run(module.comfy_entrypoint())
nodes = asyncio.run(extension.get_node_list())
print(json.dumps({"nodes": [node.__name__ for node in nodes],
                  "logged": [r.getMessage() for r in records if r.name == "qinsight"]}))
"""


@pytest.mark.comfyui
@pytest.mark.parametrize("transformers", ["importable", "block"])
def test_comfyui_entry_point_registers_the_nodes_and_logs_one_line(transformers):
    """As ComfyUI loads the pack (its real comfy_api), with transformers 4.55.2 installed."""
    from comfyui_server import comfyui_tree

    done = subprocess.run(
        [sys.executable, "-c", ENTRY_POINT, str(comfyui_tree()), str(ROOT), transformers],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.splitlines()[-1])
    assert "ScoreImageQuality" in result["nodes"] and "LoadQualityJudge" in result["nodes"]
    [line] = result["logged"]
    assert line.startswith("qinsight nodes are loaded, but they cannot judge until this is fixed: transformers 4.55.2")
