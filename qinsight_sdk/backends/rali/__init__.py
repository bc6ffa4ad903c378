"""RALI, the Q-Insight family's CLIP-based scorer: its files read safely (:mod:`.files`), the scorer
(:mod:`.model`) and the backend (:mod:`.backend`). Facts: the official ``demo_rali_score.py``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ...errors import ModelLoadError
from .. import ModelFamily, register_family

CHECKPOINT, PCA, BASIS, CLIP_FOLDER = "ckpt.pt", "pca.pkl", "basis.npz", "best"  # the released layout

RALI = "rali"
SUBFOLDER = "RALI"  # where ByteDance/Q-Insight keeps it
# best/ holds CLIP's config and processor; its weights are not fetched, since ckpt.pt holds them all
FILES = (CHECKPOINT, PCA, BASIS, f"{CLIP_FOLDER}/*.json", f"{CLIP_FOLDER}/*.txt")


def is_rali_folder(folder: Path) -> bool:
    """Whether ``folder`` has RALI's layout (the two pickles and the CLIP folder); a cheap look, no reading."""
    return all((folder / name).exists() for name in (CHECKPOINT, PCA, CLIP_FOLDER))


def validate(folder: Path) -> None:
    """Refuse a folder without RALI's files, naming the missing ones."""
    needed = (CHECKPOINT, PCA, f"{CLIP_FOLDER}/config.json", f"{CLIP_FOLDER}/preprocessor_config.json")
    missing = [name for name in needed if not (folder / name).is_file()]
    if missing:
        raise ModelLoadError(
            f"{folder}: not a complete RALI checkpoint: {', '.join(missing)} missing; download "
            f"it again (hf download ByteDance/Q-Insight --include '{SUBFOLDER}/*')"
        )


def _dtype(requested: Any, device: Any) -> Any:
    """fp32, as the official demo runs it; asking for another is refused rather than ignored."""
    import torch

    if str(requested) not in ("auto", "fp32", "float32", "torch.float32"):
        raise ModelLoadError(
            f"dtype {requested}: RALI runs in fp32, as its official demo does (its forward is "
            "checked in fp32); leave dtype at auto"
        )
    return torch.float32


def _load(folder: Path, **options: Any) -> Any:
    from .backend import RaliBackend

    return RaliBackend.load(folder, **options)


FAMILY = register_family(
    ModelFamily(RALI, is_rali_folder, validate, _load, FILES, default_profile="rali", dtype=_dtype, writes_text=False)
)
