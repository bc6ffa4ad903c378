"""Whether the installed transformers and torch are releases qinsight judges correctly with.

pip keeps unsupported releases out when it installs qinsight, but a ComfyUI user installs the pack into
an environment that already has both, and another pack may change them later. So the ComfyUI entry point
names what is wrong in its log (and still registers the nodes: an import error would hide the whole pack),
and judging refuses to start with the same sentences.

The installed versions are read from package metadata: importing torch or transformers to learn them
would cost seconds, and fails exactly where the answer matters most.
"""

from __future__ import annotations

import logging
import sys
from importlib import metadata

# The same specifiers as pyproject.toml's dependencies (tests/unit/test_packaging.py keeps them equal).
SUPPORTED = {
    "transformers": ">=4.51.3,!=4.54.*,!=4.55.*,!=4.56.*,<6",
    "torch": ">=2.4",
}
_WHY = {"transformers": " (4.54-4.56 give wrong answers in batches)"}
# What the fix for transformers installs: the newest good line (4.57.1 is also the training floor).
TRANSFORMERS_FIX = "transformers>=4.57.1,<6"


def problems() -> list[str]:
    """One sentence for each of transformers and torch that is missing or outside ``SUPPORTED``.

    Each names the installed version, the supported range and a command that fixes it. Pre-releases
    count as their release (a torch nightly is fine), so only the ranges decide: packaging before 25
    rejects every pre-release unless told ``prereleases=True``.
    """
    try:
        from packaging.specifiers import SpecifierSet
        from packaging.version import InvalidVersion, Version
    except ImportError:
        return [
            (
                f'the "packaging" package is not installed, so qinsight cannot check its transformers and '
                f"torch versions. Fix: {_pip('packaging')}"
            )
        ]
    found = []
    for name, required in SUPPORTED.items():
        installed = installed_version(name)
        try:
            fits = installed is not None and SpecifierSet(required).contains(Version(installed), prereleases=True)
        except InvalidVersion:
            fits = False
        if not fits:
            found.append(_sentence(name, installed))
    return found


def installed_version(name: str) -> str | None:
    """The version pip recorded for ``name``, or None where it is not installed."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def warn_if_unsupported(logger: logging.Logger) -> None:
    """Log the problems as one warning line, so ComfyUI's console says why judging will fail."""
    found = problems()
    if found:
        logger.warning("qinsight nodes are loaded, but they cannot judge until this is fixed: %s", "; ".join(found))


def _sentence(name: str, installed: str | None) -> str:
    have = f"{name} {installed} is installed" if installed else f"{name} is not installed"
    return f"{have}, but qinsight needs {name}{SUPPORTED[name]}{_WHY.get(name, '')}. Fix: {_fix(name)}"


def _fix(name: str) -> str:
    if name == "torch":  # it must be a build for the user's GPU, which only pytorch.org's selector knows
        return (
            f"install torch{SUPPORTED['torch']} for your GPU into {_python()} with the command from "
            "https://pytorch.org/get-started/locally/"
        )
    return _pip(TRANSFORMERS_FIX)


def _pip(requirement: str) -> str:
    """A pip command for the running Python: ComfyUI's own, which a bare ``pip`` on PATH often is not.

    The requirement is in double quotes, which bash, cmd.exe and PowerShell all take literally."""
    return f'{_python()} -m pip install "{requirement}"'


def _python() -> str:
    """The running interpreter, quoted only where its path has a space: PowerShell runs a quoted path only
    after ``&``."""
    return f'"{sys.executable}"' if " " in sys.executable else sys.executable
