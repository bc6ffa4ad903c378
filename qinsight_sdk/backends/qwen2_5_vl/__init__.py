"""Qwen2.5-VL, the model family of Q-Insight and VisualQuality-R1: the backend (:mod:`.backend`), its
faster vision path (:mod:`.vision`) and loading across transformers releases (:mod:`.loading`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .. import ModelFamily, register_family
from ..checkpoints import DOWNLOAD_PATTERNS, QWEN25_VL, validate_checkpoint


def _holds(folder: Path) -> bool:
    try:
        return json.loads((folder / "config.json").read_text(encoding="utf-8")).get("model_type") == QWEN25_VL
    except (OSError, ValueError, AttributeError):
        return False


def _dtype(requested: Any, device: Any) -> Any:
    from ..devices import choose_dtype

    return choose_dtype(requested, device)


def _load(folder: Path, **options: Any) -> Any:
    from .backend import QwenVLBackend

    return QwenVLBackend.load(folder, **options)


FAMILY = register_family(
    ModelFamily(
        QWEN25_VL,
        _holds,
        lambda folder: validate_checkpoint(folder, QWEN25_VL),
        _load,
        DOWNLOAD_PATTERNS,
        default_profile="q-insight",
        dtype=_dtype,
    )
)
