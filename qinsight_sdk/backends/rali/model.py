"""RALI's scorer: CLIP image features, whitened and projected by a PCA, compared with learned prototypes.

The official forward (``demo_rali_score.py`` in ByteDance's Q-Insight repository), in fp32:

- f = ``visual_projection(post_layernorm(CLS))``, CLIP's unnormalised image features;
- z = ((f - mean) / |scale|) C^T, the PCA's mean and the checkpoint's ``pca_scale`` and ``pca_components`` C;
- w = softmax(logit_scale * cos(z, p_i)), cosine similarity to each prototype p_i, ``logit_scale`` clamped
  at 1e-6 from below;
- score = sum_i w_i s_i, the prototypes' scores s_i weighted.

The vision tower is called directly (``vision_model`` then ``visual_projection``): transformers 5 returns an
output object from ``get_image_features`` where 4.x returns a tensor. The text tower is never built.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from ...errors import ModelLoadError
from . import BASIS, CHECKPOINT, CLIP_FOLDER, PCA
from .files import read_basis, read_checkpoint, read_pca_mean

logger = logging.getLogger("qinsight")

SCORER_KEYS = ("pca_scale", "pca_components", "prototypes", "proto_scores", "logit_scale")


@dataclass(frozen=True)
class PrototypeDistribution:
    """What RALI believes about one image: a weight per prototype, and the prototypes' scores.

    Its expectation is RALI's score; its spread says how much the near prototypes disagree.
    """

    weights: torch.Tensor  # (K,) float64, summing to 1
    scores: torch.Tensor  # (K,) float64

    def expected(self) -> tuple[float, float]:
        """Mean and standard deviation of the prototype scores under the weights."""
        mean = (self.weights * self.scores).sum()
        variance = (self.weights * (self.scores - mean) ** 2).sum()
        return float(mean), float(variance.clamp_min(0).sqrt())


class RaliScorer(torch.nn.Module):
    """CLIP's vision tower and RALI's prototype head, as one module (what a memory manager holds)."""

    def __init__(self, vision: Any, mean: torch.Tensor, head: dict[str, torch.Tensor]) -> None:
        super().__init__()
        self.vision = vision
        self.register_buffer("pca_mean", mean)
        for name in SCORER_KEYS:
            self.register_buffer(name, head[name])

    def features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """CLIP's unnormalised image features f, one row per image."""
        pooled = self.vision.vision_model(pixel_values=pixel_values).pooler_output
        return self.vision.visual_projection(pooled)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The prototype weights w, one row per image (the score is ``w @ proto_scores``)."""
        f = self.features(pixel_values.to(self.pca_mean.dtype))
        z = ((f - self.pca_mean) / self.pca_scale.abs()) @ self.pca_components.T
        similarity = F.normalize(z, dim=-1) @ F.normalize(self.prototypes, dim=-1).T
        return torch.softmax(self.logit_scale.clamp_min(1e-6) * similarity, dim=-1)


def load_scorer(folder: Path) -> RaliScorer:
    """RALI's scorer from a folder in the released layout, every pickle read by an allowlist.

    Returns:
        The scorer in fp32 on the CPU, in eval mode.
    """
    from transformers import CLIPConfig, CLIPVisionModelWithProjection

    missing = [name for name in (CHECKPOINT, PCA, f"{CLIP_FOLDER}/config.json") if not (folder / name).is_file()]
    if missing:
        raise ModelLoadError(
            f"{folder}: not a complete RALI checkpoint: {', '.join(missing)} missing "
            f"(it needs {CHECKPOINT}, {PCA} and {CLIP_FOLDER}/ with CLIP's config and processor)"
        )
    state = read_checkpoint(folder / CHECKPOINT)
    head = _scorer_head(state, folder / CHECKPOINT)
    mean = torch.from_numpy(read_pca_mean(folder / PCA))
    _check_sizes(folder, head, mean)
    config = CLIPConfig.from_pretrained(folder / CLIP_FOLDER, local_files_only=True)
    vision_config = config.vision_config
    vision_config.projection_dim = config.projection_dim
    vision = CLIPVisionModelWithProjection(vision_config)
    tower = {
        key.removeprefix("clip."): value
        for key, value in state.items()
        if key.startswith(("clip.vision_model.", "clip.visual_projection."))
    }
    try:
        vision.load_state_dict(tower, strict=True)
    except RuntimeError as exc:
        raise ModelLoadError(
            f"{folder / CHECKPOINT}: its CLIP vision weights do not fit {CLIP_FOLDER}/config.json ({_first_line(exc)})"
        ) from None
    scorer = RaliScorer(vision, mean, head).float().eval()
    scores = head["proto_scores"]
    logger.info(
        "RALI: %d prototypes in %d PCA dimensions, prototype scores %.4g to %.4g",
        scores.numel(),
        head["pca_components"].shape[0],
        float(scores.min()),
        float(scores.max()),
    )
    return scorer


def _scorer_head(state: dict[str, Any], path: Path) -> dict[str, torch.Tensor]:
    head = {}
    for name in SCORER_KEYS:
        value = state.get(f"scorer.{name}")
        if not isinstance(value, torch.Tensor) or not value.is_floating_point():
            raise ModelLoadError(f"{path}: 'scorer.{name}' is missing or not a float tensor")
        head[name] = value.float().clone()
    if not all(bool(torch.isfinite(v).all()) for v in head.values()):
        raise ModelLoadError(f"{path}: the scorer's values are not all finite numbers (NaN or infinite)")
    return head


def _check_sizes(folder: Path, head: dict[str, torch.Tensor], mean: torch.Tensor) -> None:
    """The shapes the official strict load would insist on, checked with names (k PCA dims, K prototypes)."""
    components, prototypes = head["pca_components"], head["prototypes"]
    k, width = components.shape if components.ndim == 2 else (0, 0)
    problems = []
    if head["pca_scale"].shape != (width,) or mean.shape != (width,):
        problems.append(
            f"pca_scale {tuple(head['pca_scale'].shape)} and the PCA's mean {tuple(mean.shape)} "
            f"should be ({width},) like the components' rows"
        )
    if prototypes.ndim != 2 or prototypes.shape[1] != k:
        problems.append(f"prototypes {tuple(prototypes.shape)} should be (K, {k})")
    if head["proto_scores"].shape != prototypes.shape[:1] or head["logit_scale"].numel() != 1:
        problems.append(
            f"proto_scores {tuple(head['proto_scores'].shape)} should be ({prototypes.shape[0]},) "
            "and logit_scale one number"
        )
    if (folder / BASIS).is_file():
        scores = read_basis(folder / BASIS).get("scores")
        if scores is not None and np.shape(scores) != tuple(prototypes.shape[:1]):
            problems.append(
                f"{BASIS} holds prototype scores of shape {np.shape(scores)}, {CHECKPOINT} "
                f"{prototypes.shape[0]} prototypes"
            )
    if problems:
        raise ModelLoadError(f"{folder}: RALI's files do not fit together: " + "; ".join(problems))


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
