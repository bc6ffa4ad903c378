"""Conversions between ComfyUI's data and the SDK's, kept free of ComfyUI imports so they test anywhere.

IMAGE is a float (B, H, W, C) tensor in 0..1, MASK (B, H, W) or (H, W), LATENT a dict whose "samples" is
(B, C, H, W). Inputs may be fp16/bf16 or on any device, so everything is converted defensively.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from qinsight_sdk.backends import families
from qinsight_sdk.io.annotation import annotate, score_label, short_reasoning
from qinsight_sdk.io.records import answer_settings

# What ComfyUI shows where a result holds None: "none" when the model found no distortion, "unknown" when
# it gave no readable verdict (data files and the model say "null" for the first: qinsight_sdk.judging.tasks).
SHOWN_NONE, SHOWN_UNKNOWN = "none", "unknown"


def as_image_batch(images: torch.Tensor) -> torch.Tensor:
    """A float32 CPU (B, H, W, C) batch in 0..1, whatever dtype, device or single-image shape came in.

    Values are clamped to 0..1: ComfyUI's bicubic and lanczos scaling overshoot a little at edges
    (-0.01 to 1.12 seen), and its own Save Image clips them the same way. NaN stays NaN, for the SDK to
    name as the image's error."""
    if not isinstance(images, torch.Tensor):
        raise ValueError(f"expected an IMAGE tensor, got {type(images).__name__}")
    batch = images.detach().to("cpu", torch.float32)
    if batch.ndim == 3:
        batch = batch.unsqueeze(0)
    if batch.ndim != 4 or batch.shape[0] == 0:
        raise ValueError(f"expected an IMAGE batch of shape (B, H, W, C), got {tuple(images.shape)}")
    return batch.clamp(0.0, 1.0)


def take(images: torch.Tensor, indices: Sequence[int]) -> torch.Tensor:
    """The images at ``indices``, in that order, on the input's own device and dtype."""
    return images[torch.as_tensor(list(indices), dtype=torch.long, device=images.device)]


def take_mask(mask: torch.Tensor | None, indices: Sequence[int], batch_size: int) -> torch.Tensor | None:
    """A mask reordered like its images; a single mask shared by the whole batch is kept as it is."""
    if mask is None:
        return None
    if mask.ndim == 2 or mask.shape[0] == 1 and batch_size > 1:
        return mask
    return take(mask, indices)


def take_latent(latent: dict | None, indices: Sequence[int]) -> dict | None:
    """A LATENT dict with its samples (and per-sample noise mask and batch index) reordered."""
    if latent is None:
        return None
    samples = latent["samples"]
    chosen = dict(latent)
    chosen["samples"] = take(samples, indices)
    mask = latent.get("noise_mask")
    if isinstance(mask, torch.Tensor) and mask.ndim >= 3 and mask.shape[0] == samples.shape[0]:
        chosen["noise_mask"] = take(mask, indices)
    if "batch_index" in latent:
        chosen["batch_index"] = [latent["batch_index"][i] for i in indices]
    return chosen


def check_batch_sizes(images: torch.Tensor, latent: dict | None, mask: torch.Tensor | None) -> None:
    size = images.shape[0]
    if latent is not None and latent["samples"].shape[0] != size:
        raise ValueError(f"the latent batch has {latent['samples'].shape[0]} samples but there are {size} images")
    if mask is not None and mask.ndim == 3 and mask.shape[0] not in (1, size):
        raise ValueError(f"the mask batch has {mask.shape[0]} masks but there are {size} images")


def split_by_threshold(scores: Sequence[float], threshold: float) -> tuple[list[int], list[int]]:
    """Indices of images scoring at least ``threshold``, and of the others, each in input order."""
    passed = [i for i, s in enumerate(scores) if s >= threshold]
    return passed, [i for i in range(len(scores)) if i not in set(passed)]


def shown_label(value: str | None, error: str | None) -> str:
    """A distortion class, severity or winner as a node outputs it; see SHOWN_NONE."""
    return value or (SHOWN_UNKNOWN if error else SHOWN_NONE)


def errors_of(results: Sequence[Any]) -> dict[int, str]:
    return {i: r.error for i, r in enumerate(results) if r.error is not None}


def raise_for_errors(errors: dict[int, str], total: int, what: str, item: str = "image") -> None:
    """One clear error naming every ``item`` (by its index or number) that could not be judged, and why."""
    if errors:
        details = "; ".join(f"{item} {i}: {message}" for i, message in sorted(errors.items()))
        raise ValueError(f"{what} failed for {len(errors)} of {total} {item}s; {details}")


@dataclass
class JudgedBatch:
    """The QINSIGHT_SCORES value: each image's ScoreResult and the settings they were made with, so that
    Quality Gate can filter by them and Save Image with Quality can keep them as record rows."""

    results: list[Any]
    settings: dict[str, Any]

    @property
    def scores(self) -> list[float]:
        return [r.score for r in self.results]


def record_settings(model: str, subfolder: str | None, judge: Any, **task: Any) -> dict[str, Any]:
    """The record rows' settings of answers the loaded ``judge`` gave, as the command line writes them: from
    the configuration it was loaded with, else (a judge built from a backend) from the judge itself."""
    if getattr(judge, "config", None) is not None:
        return judge.config.settings(**task)
    return answer_settings(
        model,
        subfolder,
        None,
        judge.profile.settings_name(),
        judge.backend.dtype,
        judge.prompt_order.value,
        judge.image_bounds.max_pixels,
        judge.backend.quantization,
        judge.decoding,
        **task,
    )


def describe_scores(results: Sequence[Any]) -> list[str]:
    """One line per image for the node's report: score, spread, and the reasoning cut short."""
    lines = []
    for index, result in enumerate(results):
        line = f"image {index}: " + score_label(result.score, result.std, error=result.error)
        lines.append(line + (f" — {short_reasoning(result.reasoning)}" if result.reasoning else ""))
    return lines


def to_pil(batch: torch.Tensor) -> list[Image.Image]:
    """RGB images from a batch as ``as_image_batch`` gives it (float, CPU, 0..1)."""
    pixels = (batch * 255).round().to(torch.uint8).numpy()
    return [
        Image.fromarray(image[..., :3] if image.shape[-1] >= 3 else image[..., 0]).convert("RGB") for image in pixels
    ]


def from_pil(images: Sequence[Image.Image]) -> torch.Tensor:
    """A float (B, H, W, 3) batch in 0..1 from same-sized images."""
    return torch.from_numpy(np.stack([np.asarray(i.convert("RGB"), dtype=np.float32) / 255 for i in images]))


def annotated(batch: torch.Tensor, labels: Sequence[str]) -> torch.Tensor:
    """The images with their labels drawn on them, for Preview Image."""
    return from_pil([annotate(image, [label]) for image, label in zip(to_pil(batch), labels)])


def model_folders(roots: Iterable[str | Path]) -> list[str]:
    """Checkpoint folders up to two levels below each root, as relative names: those a model family
    recognises (RALI's layout, say), and those holding a config.json (so a broken one is listed, and its
    load says what is wrong) unless they sit inside a recognised one (RALI's own CLIP folder)."""
    found = set()
    for root in roots:
        root = Path(root)
        if not root.is_dir():
            continue
        for folder in sorted(list(root.glob("*/")) + list(root.glob("*/*/"))):
            held = any(family.holds(folder) for family in families())
            inside = any(family.holds(folder.parent) for family in families())
            if held or ((folder / "config.json").is_file() and not inside):
                found.add(folder.relative_to(root).as_posix())
    return sorted(found)


def parse_hub_id(text: str) -> tuple[str, str | None]:
    """("owner/name", subfolder or None) from "owner/name" or "owner/name/sub/folder"."""
    parts = [p for p in text.strip().split("/") if p]
    if len(parts) < 2 or any(p in (".", "..") for p in parts):
        raise ValueError(f"hf_id {text!r} is not a Hugging Face id like owner/name or owner/name/subfolder")
    return "/".join(parts[:2]), "/".join(parts[2:]) or None


def resolve_model_choice(
    choice: str, roots: Iterable[str | Path], hub_choices: Sequence[str]
) -> tuple[str, str | None]:
    """(model, subfolder) for a choice of the loader's list: a local folder, or one of ``hub_choices``."""
    if choice in hub_choices:
        return parse_hub_id(choice)
    for root in roots:
        if choice in model_folders([root]):  # the list's own rule: what is listed loads, RALI's layout too
            return str(Path(root) / choice), None
    raise ValueError(f"model {choice!r} is neither a Hugging Face choice nor a folder in the model folders")


# -- videos -------------------------------------------------------------------------------------------------


class ClampedFrames:
    """An IMAGE batch seen as a video's frames, each read as a float32 CPU frame clamped to 0..1.

    The SDK converts only the frames it samples (16 at most), so the batch is never copied whole: 5 s of
    720p float frames is 1.3 GB. Clamped for the reason :func:`as_image_batch` gives."""

    def __init__(self, images: torch.Tensor) -> None:
        if images.ndim != 4 or images.shape[0] == 0:
            raise ValueError(f"expected an IMAGE batch of frames (T, H, W, C), got {tuple(images.shape)}")
        self.images = images
        self.shape = tuple(images.shape)
        self.ndim = 4

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.images[index].detach().to("cpu", torch.float32).clamp(0.0, 1.0)


def frame_rate(fps: float | int | None, video_info: dict | None) -> float:
    """The rate of an IMAGE batch's frames: VideoHelperSuite's ``loaded_fps`` where a VHS_VIDEOINFO is
    connected (it knows what its loader kept), else the ``fps`` input."""
    rate = (video_info or {}).get("loaded_fps", fps)
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 < rate < float("inf"):
        raise ValueError(f"the frames' fps must be a positive number, got {rate!r}")
    return float(rate)


def as_video(value: Any, fps: float | int | None, video_info: dict | None, file_backed: bool) -> Any:
    """What the SDK takes for a node's video input: a ComfyUI VIDEO or an IMAGE batch of frames.

    Args:
        value: a VIDEO (a ComfyUI ``VideoInput``) or an IMAGE tensor ``(T, H, W, C)``.
        fps: the frames' rate (only for an IMAGE batch).
        video_info: VideoHelperSuite's VHS_VIDEOINFO dict, if connected (its ``loaded_fps`` wins).
        file_backed: whether the VIDEO reads from a file or file bytes (Load Video's): then it is
            streamed from them, decoding only the sampled frames; other VIDEOs hold decoded frames.

    Returns:
        A path, file bytes, or :class:`qinsight_sdk.Video`.
    """
    from qinsight_sdk import Video

    if isinstance(value, torch.Tensor):
        return Video(ClampedFrames(value), frame_rate(fps, video_info))
    if file_backed:
        source = value.get_stream_source()
        return source if isinstance(source, str) else source.getvalue()
    if hasattr(value, "get_components"):
        components = value.get_components()
        return Video(ClampedFrames(components.images), float(components.frame_rate))
    raise ValueError(f"expected a VIDEO or an IMAGE batch of frames, got {type(value).__name__}")


def annotated_frames(frames: np.ndarray, label: str) -> torch.Tensor:
    """A clip's sampled frames (uint8 ``(n, H, W, 3)``) with ``label`` drawn on each, as an IMAGE batch."""
    return from_pil([annotate(Image.fromarray(frame), [label]) for frame in frames])


def video_score_text(result: Any) -> str:
    """A video's score line: the 0-100 score, and each dimension where the judge gives them."""
    if result.score is None:
        return f"no score ({result.error})"
    parts = [f"{result.score:.1f}/100"]
    parts += [f"{name} {value:.0f}" for name, value in (result.dimensions or {}).items()]
    return ", ".join(parts)
