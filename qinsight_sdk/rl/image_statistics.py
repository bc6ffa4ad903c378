"""What reward hacking does to pixels, measured: colour, saturation, sharpness, 8x8 blocks and grids.

Generators trained against a quality reward are known to drift in a few ways: over-saturated colour,
over-sharpened or collapsing (blurred, flat) detail, and grid patterns on the VAE's 8-pixel lattice. Each
statistic here measures one of those on one image (on 0-255 values where the literature does), so that
:class:`~qinsight_sdk.rl.monitor.HackingMonitor` can follow them batch by batch:

- ``colourfulness``: Hasler and Suesstrunk's (2003) colourfulness: the spread plus 0.3 x the mean of the
  opponent channels ``R - G`` and ``(R + G) / 2 - B``;
- ``saturation``: the mean HSV saturation, ``(max - min) / max`` per pixel (0 for black), in [0, 1];
- ``sharpness``: the variance of the 4-neighbour Laplacian of the luminance;
- ``blockiness``: the mean absolute luminance step across the 8x8 block boundaries over that within blocks
  (about 1 for an image without blocks; larger for JPEG blocks and 8-pixel grids);
- ``grid_energy``: the share of the luminance's spectral power (DC left out) on the odd harmonics of an
  8-pixel period, over the share those frequencies hold in white noise (about 1 for noise; larger for a
  periodic 8-pixel pattern). Odd ones only: the even harmonics are those of 4- and 2-pixel periods too,
  which fine texture and a network's own 2x up-sampling produce without any 8-pixel grid.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ..errors import ImageInputError
from ..io.images import split_inputs
from ..io.videos import split_videos

BLOCK = 8  # the JPEG block and the latent VAEs' stride: where blocks and grids appear
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float64)  # ITU-R BT.601, as JPEG's luminance
FRAMES_PER_VIDEO = 4  # a video's statistics are its frames', at most this many, evenly spread


def colourfulness(pixels: np.ndarray) -> float:
    """Hasler and Suesstrunk's colourfulness of one ``(H, W, 3)`` image in 0-255."""
    red, green, blue = (np.asarray(pixels[..., c], dtype=np.float64) for c in range(3))  # no uint8 wrap-around
    rg, yb = red - green, 0.5 * (red + green) - blue
    spread = np.hypot(rg.std(), yb.std())
    mean = np.hypot(rg.mean(), yb.mean())
    return float(spread + 0.3 * mean)


def saturation(pixels: np.ndarray) -> float:
    """The mean HSV saturation of one ``(H, W, 3)`` image, in [0, 1]."""
    values = np.asarray(pixels, dtype=np.float64)
    high, low = values.max(axis=-1), values.min(axis=-1)
    per_pixel = np.divide(high - low, high, out=np.zeros_like(high), where=high > 0)
    return float(per_pixel.mean())


def luminance(pixels: np.ndarray) -> np.ndarray:
    """The BT.601 luminance of an ``(H, W, 3)`` image, on its own scale."""
    return pixels @ LUMA  # float64, whatever the pixels' type


def sharpness(pixels: np.ndarray) -> float:
    """The variance of the Laplacian of the luminance (0 for a flat image; an image at least 3x3)."""
    y = luminance(pixels)
    laplacian = y[:-2, 1:-1] + y[2:, 1:-1] + y[1:-1, :-2] + y[1:-1, 2:] - 4 * y[1:-1, 1:-1]
    return float(laplacian.var()) if laplacian.size else 0.0


def blockiness(pixels: np.ndarray) -> float:
    """Steps across 8x8 block boundaries over steps within blocks, both directions together (1.0 where
    there is nothing to compare: an image under two blocks, or without any step)."""
    y = luminance(pixels)
    across, within = [], []
    for steps in (np.abs(np.diff(y)), np.abs(np.diff(y, axis=0)).T):  # along rows, then along columns
        boundary = (np.arange(steps.shape[1]) + 1) % BLOCK == 0  # the step from column 7 to 8, 15 to 16, ...
        across.append(steps[:, boundary].ravel())
        within.append(steps[:, ~boundary].ravel())
    boundary_steps, inner_steps = np.concatenate(across), np.concatenate(within)
    if not boundary_steps.size or not inner_steps.size or inner_steps.mean() == 0:
        return 1.0
    return float(boundary_steps.mean() / inner_steps.mean())


def grid_energy(pixels: np.ndarray) -> float:
    """The excess of spectral power on the odd harmonics of an 8-pixel period, over white noise's (1.0 for
    a flat image, which has no power to share)."""
    y = luminance(pixels)
    power = np.abs(np.fft.fft2(y - y.mean())) ** 2
    height, width = power.shape
    on_grid = np.zeros_like(power, dtype=bool)
    on_grid[:, _harmonics(width)] = True
    on_grid[_harmonics(height), :] = True
    total = power.sum()
    if total == 0 or not on_grid.any():
        return 1.0
    return float((power[on_grid].sum() / total) / (on_grid.sum() / (power.size - 1)))


def _harmonics(size: int) -> np.ndarray:
    """The frequency bins of a period of 8 pixels and its odd harmonics along a side of ``size`` pixels."""
    bins = {round(k * size / BLOCK) % size for k in range(1, BLOCK, 2)}
    return np.array(sorted(bins - {0}), dtype=int)


STATISTICS: dict[str, Callable[[np.ndarray], float]] = {
    "colourfulness": colourfulness,
    "saturation": saturation,
    "sharpness": sharpness,
    "blockiness": blockiness,
    "grid_energy": grid_energy,
}


def image_statistics(images: Any, video: bool = False) -> dict[str, np.ndarray]:
    """Every statistic of every image (or video: the mean over up to 4 of its frames).

    Args:
        images: a ``(B, C, H, W)`` or ``(B, H, W, C)`` batch (floats in 0..1 or uint8), or a list of
            images (PIL, arrays, tensors); with ``video``, a ``(B, T, ...)`` batch or a list of videos.
        video: whether the inputs are videos.

    Returns:
        Statistic name -> float64 values, one per input (NaN where an input holds no valid pixels).
    """
    items = split_videos(images)[0] if video else split_inputs(images)[0]
    values = {name: np.full(len(items), np.nan) for name in STATISTICS}
    for index, item in enumerate(items):
        try:
            frames = _video_frames(item) if video else [pixels_of(item)]
        except ImageInputError:
            continue
        if not frames:  # a video without frames: nothing to measure
            continue
        for name, statistic in STATISTICS.items():
            values[name][index] = float(np.mean([statistic(frame) for frame in frames]))
    return values


def _video_frames(video: Any) -> list[np.ndarray]:
    frames = list(video)
    chosen = np.linspace(0, len(frames) - 1, min(FRAMES_PER_VIDEO, len(frames))).round().astype(int)
    return [pixels_of(frames[i]) for i in chosen]


def pixels_of(image: Any) -> np.ndarray:
    """One image as ``(H, W, 3)`` float64 in 0-255: a PIL image, a ``(C, H, W)`` or ``(H, W, C)`` array or
    tensor, floats in 0..1 or uint8 (grey is spread to three channels, alpha dropped).

    Raises:
        ImageInputError: not an image, or non-finite pixels.
    """
    if hasattr(image, "detach"):
        image = image.detach().float().cpu().numpy()
    elif hasattr(image, "convert"):  # PIL
        image = np.asarray(image.convert("RGB"))
    array = np.asarray(image)
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3:
        raise ImageInputError(f"an image of shape {array.shape}: expected (H, W, C) or (C, H, W)")
    if array.shape[0] in (1, 3, 4) and array.shape[-1] not in (1, 3, 4):
        array = np.moveaxis(array, 0, -1)
    if array.shape[-1] not in (1, 3, 4):
        raise ImageInputError(f"an image of shape {array.shape}: expected 1, 3 or 4 channels")
    pixels = array[..., :3].astype(np.float64)
    if pixels.shape[-1] == 1:
        pixels = np.repeat(pixels, 3, axis=-1)
    if not np.isfinite(pixels).all():
        raise ImageInputError("an image with non-finite pixels")
    return pixels if array.dtype == np.uint8 else np.clip(pixels, 0.0, 1.0) * 255.0
