"""One qinsight SDK per process, whether it came with the node pack or from pip.

The pack carries its own copy of ``qinsight_sdk``. Imported relatively (``<pack>.qinsight_sdk``) it would be a
second module beside a pip-installed ``qinsight_sdk``: two profile registries, two family registries (a plugin
family registers in one, the nodes look in the other), two caches of loaded judges. So the nodes import the
absolute name, and this module decides once what that name is: a ``qinsight_sdk`` already imported stays
(replacing a module in use would make the second copy this avoids); otherwise the pack's copy is loaded
under that name, because the nodes were written against it, and anything imported later (plugins, user
code in ComfyUI's process) shares it.
"""

from __future__ import annotations

import importlib.util
import logging
import re
import sys
from pathlib import Path
from types import ModuleType

NAME = "qinsight_sdk"
PACK_COPY = Path(__file__).resolve().parent.parent / NAME
_VERSION = re.compile(r'^\[project\]\nname = "qinsight"\nversion = "([^"]+)"$', re.MULTILINE)
log = logging.getLogger("qinsight")


def bind_sdk() -> ModuleType:
    """The one ``qinsight_sdk`` module of this process, the pack's copy unless one was imported first.

    Returns:
        The module registered in ``sys.modules`` as ``qinsight_sdk``.
    """
    module = sys.modules.get(NAME)
    if module is None:
        module = _load_pack_copy()
    elif not _is_pack_copy(module):
        _warn_if_versions_differ(module)
    return module


def _load_pack_copy() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        NAME, PACK_COPY / "__init__.py", submodule_search_locations=[str(PACK_COPY)]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[NAME] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[NAME]  # a half-run module must not pass for the SDK on the next try
        raise
    return module


def _is_pack_copy(module: ModuleType) -> bool:
    return Path(module.__file__ or "").resolve().parent == PACK_COPY


def pack_version() -> str | None:
    """The version the pack declares in its ``pyproject.toml`` (the Registry's), as its own copy of the SDK
    reports it (read, not imported: importing that copy would make the second module this avoids)."""
    try:
        found = _VERSION.search((PACK_COPY.parent / "pyproject.toml").read_text(encoding="utf-8"))
    except OSError:
        return None
    return found.group(1) if found else None


def _warn_if_versions_differ(module: ModuleType) -> None:
    theirs, ours = getattr(module, "__version__", None), pack_version()
    if theirs != ours:
        log.warning(
            "qinsight: the nodes use qinsight_sdk %s from %s, imported before the pack, not the pack's "
            "own %s; install the same version (pip install -U qinsight) or remove one of them",
            theirs,
            Path(module.__file__ or "?").parent,
            ours,
        )
