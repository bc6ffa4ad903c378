"""Model families: one folder each, chosen from the checkpoint, all behind the ``Backend`` protocol.

A family says how to recognise its checkpoint folder, which files to download, how to check a folder
before loading it (so a half-written download fails with a message, not a stack trace), how to load it,
and which judge profile its checkpoints get by default. ``QualityJudge.from_pretrained`` asks
:func:`locate` for the folder and its family, and the family for its backend; nothing else names a family.

Built in: ``qwen2_5_vl`` (Q-Insight, VisualQuality-R1: :mod:`.qwen2_5_vl`) and ``rali`` (:mod:`.rali`).
Another family is one :func:`register_family` call, from any module; to reach every process (ComfyUI, Ray
workers, ``qinsight serve`` replicas) a package names its family in an entry point of group
``qinsight.model_families`` (:data:`ENTRY_POINT_GROUP`), read on the first look at the registry.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, fields
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from ..errors import ModelLoadError
from .checkpoints import resolve_checkpoint


@dataclass(frozen=True)
class ModelFamily:
    """One kind of checkpoint and how to load it.

    Attributes:
        name: the family's name, which profiles name as their ``model_type``.
        holds: whether a local folder holds a checkpoint of this family (a cheap look at its files).
        validate: raises ``ModelLoadError`` saying what is missing or broken in a folder of this family.
        load: ``load(folder, device=..., dtype=..., attn_implementation=..., trust_remote_code=...,
            quantization=...)`` -> a ``Backend``; options a family has no use for are ignored.
        files: glob patterns of the files to download from the Hugging Face hub.
        default_profile: the profile its checkpoints get when nothing else names one.
        dtype: ``dtype(requested, device)`` -> the torch dtype it loads in ("auto" or a name requested).
        writes_text: whether it answers in text (reasoning); one that does not scores in fast mode only.
        profiles: judge profiles its checkpoints are read with (``JudgeProfile``), registered with it.
    """

    name: str
    holds: Callable[[Path], bool]
    validate: Callable[[Path], None]
    load: Callable[..., Any]
    files: tuple[str, ...]
    default_profile: str
    dtype: Callable[[Any, Any], Any]
    writes_text: bool = True
    profiles: tuple[Any, ...] = ()


ENTRY_POINT_GROUP = "qinsight.model_families"
FAMILIES: dict[str, ModelFamily] = {}
_BUILT_IN: set[str] = set()
_plugins_read = False


def register_family(family: ModelFamily) -> ModelFamily:
    """Add a model family and its profiles (a later one with the same name replaces the earlier).

    Args:
        family: the family; its ``profiles`` are registered with it.

    Returns:
        ``family``, so that a module can keep it: ``FAMILY = register_family(ModelFamily(...))``.
    """
    if family.profiles:
        from ..judging.profiles import register_profile

        for profile in family.profiles:
            register_profile(profile)
    FAMILIES[family.name] = family
    return family


def families() -> list[ModelFamily]:
    """Every registered family: the built-in ones, those registered in this process, and the first time
    it is asked, those installed packages name in entry points of group ``qinsight.model_families``."""
    _read_plugins()
    return list(FAMILIES.values())


def _read_plugins() -> None:
    """Register each family an installed package names (``name = "package.module:FAMILY"``). A plugin that
    fails to load, names something that is not a family or would replace a built-in one is left out with a
    warning naming it: an installed package must neither stop the judges that work nor take over Q-Insight's."""
    global _plugins_read
    if _plugins_read:
        return
    _plugins_read = True
    for point in entry_points(group=ENTRY_POINT_GROUP):
        try:
            family = point.load()
            missing = [f.name for f in fields(ModelFamily) if not hasattr(family, f.name)]
            if missing:
                raise TypeError(f"it names a {type(family).__name__}, not a ModelFamily (no {', '.join(missing)})")
            if family.name in _BUILT_IN:
                raise ValueError(f"it would replace the built-in family {family.name!r}")
            register_family(family)
        except Exception as error:
            warnings.warn(f"model family plugin {point.name!r} ({point.value}) was not loaded: {error}", stacklevel=3)


def family_named(name: str) -> ModelFamily:
    """The registered family ``name``; an unknown one is a ``ModelLoadError`` listing the known."""
    _read_plugins()
    if name not in FAMILIES:
        raise ModelLoadError(f"no model family {name!r} is registered (known: {', '.join(FAMILIES)})")
    return FAMILIES[name]


def family_of(folder: Path, expected: str) -> ModelFamily:
    """The family whose checkpoint ``folder`` holds, checked complete; ``expected`` (the family the judge
    profile asked for) when the folder is recognised by none, so its check says what is wrong."""
    found = next((f for f in families() if f.holds(folder)), None) or family_named(expected)
    found.validate(folder)
    return found


def expected_family(model: str, subfolder: str | None, expected: str) -> ModelFamily:
    """The family a checkpoint will load as, known before loading (and downloading): a local folder's by
    its files, else ``expected`` (the family of the judge profile asked for, or of a released subfolder)."""
    local = Path(model).expanduser()
    local = local / subfolder if subfolder and local.exists() else local
    if local.is_dir():
        found = next((f for f in families() if f.holds(local)), None)
        if found is not None:
            return found
    return family_named(expected)


def locate(
    model: str,
    subfolder: str | None,
    revision: str | None,
    local_files_only: bool,
    cache_dir: str | None,
    expected: str,
) -> tuple[Path, ModelFamily]:
    """A checkpoint's local folder (downloaded from the hub for an id, with ``expected``'s files) and its
    family, found from its files and checked complete."""
    folder = resolve_checkpoint(
        model, subfolder, revision, local_files_only, cache_dir, model_type=None, patterns=family_named(expected).files
    )
    return folder, family_of(folder, expected)


def _register_builtins() -> None:
    from . import qwen2_5_vl, rali  # noqa: F401 - each registers itself

    _BUILT_IN.update(FAMILIES)


_register_builtins()
