"""One qinsight SDK per process: the node pack's copy and a pip-installed ``qinsight_sdk`` never both load.

Each case runs in a fresh interpreter with two distinct copies on disk, as a user has them: the SDK installed
in site-packages (here a folder on PYTHONPATH, with another version number) and the pack cloned into
ComfyUI's ``custom_nodes``, loaded the way ComfyUI loads a pack (by file location, under a name of its own).
"""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from brightness_family import install_as_plugin

ROOT = Path(__file__).resolve().parents[2]
IGNORE = shutil.ignore_patterns("__pycache__")

PROCESS = r"""
import importlib, importlib.util, json, logging, sys
from pathlib import Path
pack, order = sys.argv[1:]
logging.basicConfig(level=logging.WARNING, format="%(message)s")
if order == "sdk-first":
    import qinsight_sdk
    from qinsight_sdk.backends import families
    families()
name = "custom_nodes_x_qinsight"                   # ComfyUI names a pack module after its folder's path
spec = importlib.util.spec_from_file_location(name, pack + "/__init__.py", submodule_search_locations=[pack])
sys.modules[name] = importlib.util.module_from_spec(spec)
spec.loader.exec_module(sys.modules[name])
adapters = importlib.import_module(name + ".nodes.adapters")
import qinsight_sdk
from qinsight_sdk.backends import families
from qinsight_sdk.judging.profiles import PROFILES
sdk_modules = {n: m for n, m in sys.modules.items() if n.split(".")[0] == "qinsight_sdk"}
print(json.dumps({
    "roots": sorted({str(Path(m.__file__).resolve()).split("/qinsight_sdk")[0] for m in sdk_modules.values()
                     if getattr(m, "__file__", None)}),
    "second_copies": sorted(n for n in sys.modules if "qinsight_sdk" in n and n.split(".")[0] != "qinsight_sdk"),
    "nodes_see_the_registry": adapters.families is families,
    "plugin_family": "brightness" in [family.name for family in adapters.families()],
    "plugin_profile": "brightness" in PROFILES,
    "version": qinsight_sdk.__version__,
}))
"""


@pytest.fixture(scope="module")
def installs(tmp_path_factory):
    """A site folder with the SDK installed as version 0.0.1 (its dist-info says so, as pip writes it) and a
    plugin family, and a cloned pack (the repository's files, its pyproject.toml with its version)."""
    top = tmp_path_factory.mktemp("installs")
    site, pack = top / "site", top / "custom_nodes" / "qinsight"
    shutil.copytree(ROOT / "qinsight_sdk", site / "qinsight_sdk", ignore=IGNORE)
    (site / "qinsight-0.0.1.dist-info").mkdir()
    (site / "qinsight-0.0.1.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: qinsight\nVersion: 0.0.1\n"
    )
    shutil.copytree(ROOT / "qinsight_sdk", pack / "qinsight_sdk", ignore=IGNORE)
    shutil.copytree(ROOT / "nodes", pack / "nodes", ignore=IGNORE)
    for name in ("__init__.py", "pyproject.toml"):
        shutil.copy(ROOT / name, pack / name)
    return site.resolve(), pack.resolve(), install_as_plugin(site)


def pack_version():
    import qinsight_sdk

    return qinsight_sdk.__version__


def run(installs, order):
    site, pack, env = installs
    done = subprocess.run(
        [sys.executable, "-c", PROCESS, str(pack), order],
        capture_output=True,
        text=True,
        env=env,
        cwd=site.parent,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.splitlines()[-1]), done.stderr


def test_pack_loaded_first_binds_its_copy_for_everyone(installs):
    """The nodes, a plugin imported later and user code get the pack's copy, though one is installed."""
    site, pack, _ = installs
    found, log = run(installs, "pack-first")
    assert found["roots"] == [str(pack)] and found["second_copies"] == []
    assert found["version"] == pack_version()
    assert found["nodes_see_the_registry"] and found["plugin_family"] and found["plugin_profile"]
    assert "imported before the pack" not in log


def test_sdk_imported_first_is_the_one_the_nodes_use(installs):
    """A qinsight_sdk already imported (say by a plugin at start-up) stays; the version mismatch is told."""
    site, pack, _ = installs
    found, log = run(installs, "sdk-first")
    assert found["roots"] == [str(site)] and found["second_copies"] == []
    assert found["version"] == "0.0.1"
    assert found["nodes_see_the_registry"] and found["plugin_family"] and found["plugin_profile"]
    assert f"qinsight_sdk 0.0.1 from {site / 'qinsight_sdk'}" in log and f"own {pack_version()}" in log


def test_a_pack_copy_that_fails_to_import_is_not_left_as_the_sdk(tmp_path):
    """The next attempt (ComfyUI retries, a test) imports afresh instead of finding a half-run module."""
    pack = tmp_path / "qinsight"
    shutil.copytree(ROOT / "nodes", pack / "nodes", ignore=IGNORE)
    (pack / "qinsight_sdk").mkdir()
    (pack / "qinsight_sdk" / "__init__.py").write_text('raise RuntimeError("half written")\n')
    (pack / "pyproject.toml").write_text('[project]\nname = "qinsight"\nversion = "9.0.0"\n')
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('sdk_binding', {str(pack / 'nodes' / 'sdk.py')!r})\n"
        "binding = importlib.util.module_from_spec(spec); spec.loader.exec_module(binding)\n"
        "for attempt in range(2):\n"
        "    try:\n        binding.bind_sdk()\n    except RuntimeError as error:\n        print(error)\n"
        "print('qinsight_sdk' in sys.modules, binding.pack_version())\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert done.stdout.splitlines() == ["half written", "half written", "False 9.0.0"], done.stderr
