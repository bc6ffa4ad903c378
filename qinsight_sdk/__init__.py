"""qinsight: judge image quality with a Q-Insight vision-language model.

    from qinsight_sdk import QualityJudge
    judge = QualityJudge.from_pretrained()          # ByteDance/Q-Insight, subfolder score_degradation
    judge.score("photo.jpg").score                  # 1..5
    video_judge = QualityJudge.from_pretrained(subfolder="vqinsight-naturalvideo")
    video_judge.score("clip.mp4").score             # 0..100

Names are imported on first use, so ``qinsight_sdk.client`` (standard library only) works in an
environment without torch or transformers.
"""

from __future__ import annotations

import re
from importlib import import_module
from pathlib import Path
from typing import Any

_EXPORTS = {
    "QualityJudge": "judging.judge",
    "ScoreResult": "judging.results",
    "DegradationResult": "judging.results",
    "ComparisonResult": "judging.results",
    "Ranking": "judging.results",
    "DecodingOptions": "judging.decoding",
    "ImageBounds": "io.images",
    "Video": "io.videos",
    "VideoClip": "io.videos",
    "PromptOrder": "judging.prompts",
    "Backend": "backends.base",
    "JudgeProfile": "judging.profiles",
    "TaskPrompt": "judging.profiles",
    "PROFILES": "judging.profiles",
    "register_profile": "judging.profiles",
    "load_profile_file": "judging.profiles",
    "QInsightError": "errors",
    "ModelLoadError": "errors",
    "ImageInputError": "errors",
    "UsageError": "errors",
}
__all__ = list(_EXPORTS)


def _version() -> str:
    """The version ``pyproject.toml`` gives, the one place it is written: read from the file beside the
    package where there is one (a checkout, the ComfyUI pack), else from the installed distribution (a
    wheel). Read, not imported from a generated file, so an editable install never reports a stale one."""
    try:
        text = (Path(__file__).resolve().parent.parent / "pyproject.toml").read_text(encoding="utf-8")
    except OSError:
        text = ""
    found = re.search(r'^\[project\]\nname = "qinsight"\nversion = "([^"]+)"$', text, re.MULTILINE)
    if found:
        return found.group(1)
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("qinsight")
    except PackageNotFoundError:  # the package folder alone, copied somewhere
        return "0+unknown"


__version__ = _version()


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
