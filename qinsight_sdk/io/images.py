"""Turning whatever a user hands us into the RGB image the model was trained to see.

Every input kind (paths, PIL images, numpy arrays, torch tensors including ComfyUI's BHWC float
batches) ends as an 8-bit RGB PIL image whose sides are multiples of the model's 28-pixel patch grid and
whose area lies within the pixel bounds, so the processor never resizes again and no image token is
ever cut. Problems become an ``ImageInputError`` naming the input and the cause, which the judge records
on that one item without stopping the batch.
"""

from __future__ import annotations

import functools
import io
import logging
import math
import os
import stat
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import ImageInputError, UsageError

logger = logging.getLogger("qinsight")

PATCH_GRID = 28  # 14-pixel patches merged 2x2: the unit of one image token
MAX_ASPECT_RATIO = 200  # Qwen2.5-VL's image processor refuses more elongated images
_FLOAT_TOLERANCE = 0.01  # resampling overshoot accepted on float inputs before they count as out of range
_SIXTEEN_BIT_FROM = 512  # an I, I;16 or F image with a value this high is 16-bit data (see _high_bit_depth_to_l)
_BACKGROUND = (255, 255, 255)
PAPER_MIN_PIXELS = 56 * 56  # Q-Insight's training and inference bounds (qwen_vl_utils')
PAPER_MAX_PIXELS = 16384 * PATCH_GRID * PATCH_GRID  # 12,845,056: up to 16,384 image tokens
FAST_MAX_PIXELS = 1280 * PATCH_GRID * PATCH_GRID  # 1,003,520: a 1024x768 image stays native, larger shrink

ImageInput = str | os.PathLike | bytes | Image.Image | np.ndarray | Any  # Any: torch.Tensor, imported lazily


@dataclass(frozen=True)
class ImageBounds:
    """Pixel-count bounds an image is fitted into before tokenisation.

    The default is what the released weights saw in training and in the official inference code
    (:meth:`official`): native resolution from 3,136 up to 12,845,056 pixels, so noise, blur and
    compression artefacts reach the model as they are. :meth:`fast` caps at about 1 megapixel (a
    1024x768 image is unchanged; a 4000x3000 photo gets 1,230 image tokens instead of 15,301): much
    faster and lighter on large images, at the cost of hiding fine artefacts.

    Attributes:
        min_pixels: smaller images are upscaled to at least this many pixels (784 at least: one token).
        max_pixels: larger images are downscaled to at most this many (12,845,056 at most: what the
            model's image processor takes).

    Raises:
        UsageError: bounds out of that range, or ``min_pixels`` above ``max_pixels``.
    """

    min_pixels: int = PAPER_MIN_PIXELS
    max_pixels: int = PAPER_MAX_PIXELS

    def __post_init__(self) -> None:
        if not PATCH_GRID * PATCH_GRID <= self.min_pixels <= self.max_pixels:
            raise UsageError(
                f"need {PATCH_GRID**2} <= min_pixels <= max_pixels, got "
                f"min_pixels={self.min_pixels}, max_pixels={self.max_pixels}"
            )
        # past the processor's own ceiling the judge sees images it never saw in training, and one image's
        # tokens (16,384 here) already take the 7B model to tens of GB of attention activations
        if self.max_pixels > PAPER_MAX_PIXELS:
            raise UsageError(
                f"max_pixels={self.max_pixels:,} is above {PAPER_MAX_PIXELS:,}, the most the "
                "model's image processor takes (16,384 image tokens, as the weights were trained)"
            )

    @classmethod
    def official(cls) -> ImageBounds:
        """What the weights were trained and released with: 3,136 to 12,845,056 pixels."""
        return cls(PAPER_MIN_PIXELS, PAPER_MAX_PIXELS)

    @classmethod
    def fast(cls) -> ImageBounds:
        """Up to 1,003,520 pixels (about 1 megapixel): faster on large images, hides fine artefacts."""
        return cls(PAPER_MIN_PIXELS, FAST_MAX_PIXELS)

    @classmethod
    def preset(cls, size: str | int) -> ImageBounds:
        """Bounds by name, as the command line and the nodes take them.

        Args:
            size: ``"official"``, ``"fast"``, or a pixel count (as a number or its digits) for
                ``max_pixels``.

        Returns:
            The bounds.

        Raises:
            UsageError: any other name, or a pixel count out of range.
        """
        if size in IMAGE_SIZES:
            return IMAGE_SIZES[str(size)]()
        try:
            pixels = int(size)
        except ValueError:
            raise UsageError(f"image size must be {', '.join(IMAGE_SIZES)} or a pixel count, got {size!r}") from None
        return cls(max_pixels=pixels)


IMAGE_SIZES: dict[str, Any] = {"official": ImageBounds.official, "fast": ImageBounds.fast}


def fit_to_patch_grid(width: int, height: int, bounds: ImageBounds, name: str = "image") -> tuple[int, int]:
    """The (width, height) nearest the original that is a multiple of the patch grid within bounds.

    ``name`` is how a refusal names the image (``load_image`` passes the input's path or kind).
    """
    if min(width, height) < 1:
        raise ImageInputError(f"{name} is {width}x{height}: it has no pixels")
    if max(width, height) / min(width, height) > MAX_ASPECT_RATIO:
        raise ImageInputError(
            f"{name} is {width}x{height}: aspect ratio above {MAX_ASPECT_RATIO}:1, "
            "which the model cannot take; crop it first"
        )
    return snap_to_grid(width, height, bounds.min_pixels, bounds.max_pixels)


def snap_to_grid(width: int, height: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """qwen-vl-utils' ``smart_resize``: each side rounded to the patch grid, then, past a bound, the size
    scaled to it with the aspect ratio kept (floored when shrinking, ceiled when growing: so a shrunk size
    can land a little below ``min_pixels``, a grown one a little above ``max_pixels``). Images and video
    frames alike, each with their own bounds; the caller has refused empty and too elongated sizes.
    """
    w = max(PATCH_GRID, round(width / PATCH_GRID) * PATCH_GRID)
    h = max(PATCH_GRID, round(height / PATCH_GRID) * PATCH_GRID)
    if w * h > max_pixels:
        shrink = math.sqrt(width * height / max_pixels)
        w = max(PATCH_GRID, math.floor(width / shrink / PATCH_GRID) * PATCH_GRID)
        h = max(PATCH_GRID, math.floor(height / shrink / PATCH_GRID) * PATCH_GRID)
    elif w * h < min_pixels:
        grow = math.sqrt(min_pixels / (width * height))
        w = math.ceil(width * grow / PATCH_GRID) * PATCH_GRID
        h = math.ceil(height * grow / PATCH_GRID) * PATCH_GRID
    return w, h


def fit_within(width: int, height: int, max_pixels: int, name: str = "image") -> tuple[int, int]:
    """(width, height) as it is, or shrunk with its aspect ratio kept to at most ``max_pixels`` (for a
    model whose own processor resizes, so only memory needs a bound)."""
    if min(width, height) < 1:
        raise ImageInputError(f"{name} is {width}x{height}: it has no pixels")
    if width * height <= max_pixels:
        return width, height
    shrink = math.sqrt(width * height / max_pixels)
    return max(1, math.floor(width / shrink)), max(1, math.floor(height / shrink))


class ImageGeometry(Protocol):
    """How a model family takes images: the size an image is fitted to, and what it costs in a batch."""

    def fit(self, width: int, height: int, bounds: ImageBounds, name: str = "image") -> tuple[int, int]:
        """The size to resize a ``width`` x ``height`` image to (``name`` names it in a refusal)."""

    def tokens(self, width: int, height: int) -> int:
        """The image's cost in a batch, in the unit of ``max_batch_tokens``."""


class PatchGrid:
    """Qwen2-VL's geometry: sides on the 28-pixel grid within the bounds, a token per grid cell."""

    def fit(self, width: int, height: int, bounds: ImageBounds, name: str = "image") -> tuple[int, int]:
        return fit_to_patch_grid(width, height, bounds, name)

    def tokens(self, width: int, height: int) -> int:
        return width * height // (PATCH_GRID * PATCH_GRID)


PATCH_GRID_GEOMETRY = PatchGrid()


def split_inputs(images: Any) -> tuple[list[Any], bool]:
    """The list of single images in ``images`` and whether the caller passed just one.

    A list or tuple is many images; a 4-D array or tensor is a batch (ComfyUI's BHWC, or BCHW).
    """
    if isinstance(images, (list, tuple)):
        return list(images), False
    if getattr(images, "ndim", None) == 4:
        return [images[i] for i in range(images.shape[0])], False
    return [images], True


def load_image(
    source: ImageInput, bounds: ImageBounds = ImageBounds(), geometry: ImageGeometry = PATCH_GRID_GEOMETRY
) -> Image.Image:
    """Decode and normalise one image to RGB, sized as ``geometry`` fits it (default: Qwen2-VL's patch
    grid) within ``bounds``; raises ``ImageInputError``.

    Any failure while reading or converting the input, whatever its exception type (a PNG chunk past
    Pillow's limits, a closed image, a meta-device tensor), is this input's error, so it never takes
    other inputs down with it.
    """
    try:
        return _normalised(source, bounds, geometry)
    except ImageInputError:
        raise
    except Exception as exc:
        raise ImageInputError(f"{_described(source)} cannot be read ({type(exc).__name__}: {exc})") from None


def _described(source: Any) -> str:
    """How an error names an input: its path as given, or what kind of object it is."""
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    if isinstance(source, Image.Image):
        return "the PIL image"
    if isinstance(source, (bytes, bytearray)):
        return f"the image bytes ({len(source)} bytes)"
    if type(source) is np.ndarray:
        return "the array"
    return "the tensor" if _is_tensor(source) else f"the {type(source).__name__}"


def _normalised(source: ImageInput, bounds: ImageBounds, geometry: ImageGeometry) -> Image.Image:
    if isinstance(source, (str, os.PathLike)):
        image = _open_file(source, bounds, geometry)
    elif isinstance(source, (bytes, bytearray)):
        if not source:
            raise ImageInputError("empty bytes hold no image")
        image = _decoded(io.BytesIO(source), _described(source), bounds, geometry)
    elif isinstance(source, Image.Image):
        image = _loaded(source, "the PIL image")
    elif isinstance(source, np.ndarray):
        image = _array_to_pil(source, False, f"array of shape {tuple(source.shape)} and dtype {source.dtype}")
    elif _is_tensor(source):
        dtype = str(source.dtype).removeprefix("torch.")  # the tensor's own, not the numpy copy's
        described = f"tensor of shape {tuple(source.shape)} and dtype {dtype}"
        image = _array_to_pil(_tensor_to_numpy(source), True, described)
    else:
        raise ImageInputError(
            f"unsupported image input of type {type(source).__name__}; pass a path, "
            "image file bytes, a PIL image, a numpy array or a torch tensor"
        )
    rgb = to_rgb(image, _described(source))
    size = geometry.fit(rgb.width, rgb.height, bounds, _described(source))
    if size != rgb.size:
        rgb = rgb.resize(size, Image.Resampling.BICUBIC, reducing_gap=3.0)
    return rgb


def frame_to_rgb(source: Any, name: str) -> np.ndarray:
    """One in-memory frame (a PIL image, or an HxWxC / CxHxW array or tensor) as 8-bit RGB pixels
    ``(H, W, 3)``, read as :func:`load_image` reads images but never resized (video frames are sized
    by the video rules, :mod:`qinsight_sdk.io.video_sampling`).

    Args:
        source: the frame.
        name: how a refusal names it ("frame 3 of the array", say).

    Returns:
        The pixels.

    Raises:
        ImageInputError: not a frame, or values that are not pixels.
    """
    if isinstance(source, Image.Image):
        image = _loaded(source, name)
    elif isinstance(source, np.ndarray):
        image = _array_to_pil(source, False, f"{name} (shape {tuple(source.shape)}, dtype {source.dtype})")
    elif _is_tensor(source):
        dtype = str(source.dtype).removeprefix("torch.")
        image = _array_to_pil(_tensor_to_numpy(source), True, f"{name} (shape {tuple(source.shape)}, dtype {dtype})")
    else:
        raise ImageInputError(f"{name} is a {type(source).__name__}: a frame is a PIL image, an array or a tensor")
    return np.asarray(to_rgb(image, name))


def _loaded(image: Image.Image, name: str) -> Image.Image:
    try:
        image.load()
    except OSError as exc:  # truncated or corrupt data only shows up on decode
        raise ImageInputError(f"{name} is truncated or corrupt ({exc})") from None
    return image


def _open_file(source: str | os.PathLike, bounds: ImageBounds, geometry: ImageGeometry) -> Image.Image:
    """Open a file; errors name the path as it was given (not as ``Path`` normalises it)."""
    name = str(source)
    if not name:
        raise ImageInputError("an empty path names no image file")
    try:
        kind = os.stat(source).st_mode  # follows links: a link to an image is that image
    except FileNotFoundError:
        hint = " (URLs are not downloaded: save the image first)" if "://" in name else ""
        raise ImageInputError(f"{name}: file not found{hint}") from None
    except OSError as exc:  # permission denied, a link loop, a name too long: the reason, without the path again
        raise ImageInputError(f"{name}: cannot be read ({exc.strerror or exc})") from None
    if stat.S_ISDIR(kind):
        raise ImageInputError(f"{name}: is a directory, not an image file")
    if not stat.S_ISREG(kind):  # reading a FIFO waits for a writer forever; a device never ends
        raise ImageInputError(f"{name}: not a regular file (a FIFO, socket or device), not an image file")
    return _decoded(Path(source), name, bounds, geometry)


def _decoded(source: Path | io.BytesIO, name: str, bounds: ImageBounds, geometry: ImageGeometry) -> Image.Image:
    """Pillow's decoding of a file or of bytes, with its failures as this input's errors."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(source)
    except UnidentifiedImageError:
        raise ImageInputError(f"{name}: not a recognised image file") from None
    except Image.DecompressionBombError as exc:
        raise ImageInputError(
            f"{name}: refused as a possible decompression bomb ({exc}); downscale it before judging"
        ) from None
    except OSError as exc:  # permission denied while reading, say: the reason, without the path again
        raise ImageInputError(f"{name}: cannot be read ({exc.strerror or exc})") from None
    if image.format == "JPEG":  # decode huge JPEGs at a reduced scale: fast and memory-safe
        image.draft(image.mode, _draft_size(image.size, bounds, geometry))
    return _loaded(image, name)


def _draft_size(size: tuple[int, int], bounds: ImageBounds, geometry: ImageGeometry) -> tuple[int, int]:
    try:
        return geometry.fit(*size, bounds)
    except ImageInputError:  # refused once decoded, with the reason
        return size


def to_rgb(image: Image.Image, name: str = "the image") -> Image.Image:
    """8-bit RGB with EXIF orientation applied and transparency composited over white.

    Integer and float images are read as :func:`_high_bit_depth_to_l` says; ``name`` is how its
    refusal names the image."""
    if getattr(image, "n_frames", 1) > 1:
        image.seek(0)  # animations and multi-page files: judge the first frame
    if image.getexif().get(0x0112, 1) != 1:
        image = ImageOps.exif_transpose(image)
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        image = _high_bit_depth_to_l(image, name)
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode == "CMYK":
        image = _cmyk_to_rgb(image)
    if image.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, _BACKGROUND + (255,))
        image = Image.alpha_composite(background, rgba)
    return image.convert("RGB") if image.mode != "RGB" else image


def _high_bit_depth_to_l(image: Image.Image, name: str) -> Image.Image:
    """An integer or float image (modes I, I;16*, F) as 8-bit grayscale, its range read from its values.

    Pillow's own conversions take these modes as 0..255 data: ``convert("F")``, ``convert("I")`` and
    ``convert("I;16")`` of an 8-bit image keep its values, and converting back to L or RGB clips to
    0..255 (values below 0 become 0, above 255 become 255). So does this, with two readings Pillow lacks:

    - a float (F) image whose values all lie within 0..1 (with the float arrays' tolerance) is 0..1
      data, scaled by 255 like a float array (a Pillow-made F image whose every pixel is 0 or 1 out of
      255, black to the eye, is read that way too);
    - an image whose values reach ``_SIXTEEN_BIT_FROM`` (512) or more is 16-bit data (a 16-bit PNG
      or TIFF, which Pillow opens as I;16 or I) and is scaled from 0..65535, clipping outside it:
      Pillow's clipping would turn such an image white. Values of 256-511 are still read as 0..255 and
      clipped, so 8-bit data that overshot in resampling stays as bright as it was; a 16-bit image whose
      brightest pixel is below 512 (2 in 8 bits) is black either way.

    The rounding is to nearest (Pillow truncates F), so an RGB image converted to I or I;16 gives the
    same pixels as converting it to L directly, and converted to F the same within 1 (F keeps the luma
    unrounded). NaN or infinite values are refused, as in float arrays. A debug log says which reading
    an image got.
    """
    values = np.asarray(image, dtype=np.float64)
    if image.mode == "F" and values.size and not np.isfinite(values).all():
        raise ImageInputError(f"{name} is a float (F) image with NaN or infinite values")
    high = float(values.max()) if values.size else 0.0
    if image.mode == "F" and high <= 1.0 + _FLOAT_TOLERANCE:
        scale, read_as = 255.0, "0..1"
    elif high < _SIXTEEN_BIT_FROM:
        scale, read_as = 1.0, "0..255"
    else:
        scale, read_as = 255.0 / 65535.0, "0..65535"
    logger.debug(
        "a mode-%s image with values in [%g, %g] is read as %s data",
        image.mode,
        float(values.min()) if values.size else 0.0,
        high,
        read_as,
    )
    return Image.fromarray(np.clip(np.rint(values * scale), 0, 255).astype(np.uint8))


def _cmyk_to_rgb(image: Image.Image) -> Image.Image:
    profile = image.info.get("icc_profile")
    if profile:
        try:
            from PIL import ImageCms

            source = ImageCms.ImageCmsProfile(io.BytesIO(profile))
            converted = ImageCms.profileToProfile(image, source, ImageCms.createProfile("sRGB"), outputMode="RGB")
            if converted is not None:  # None only when converting in place, which this does not ask for
                return converted
        except Exception:  # a broken embedded profile: fall back to the plain conversion
            pass
    return image.convert("RGB")


def _is_tensor(obj: Any) -> bool:
    return type(obj).__module__.startswith("torch") and hasattr(obj, "detach")


def _tensor_to_numpy(tensor: Any) -> np.ndarray:
    import torch

    tensor = tensor.detach().to("cpu")
    if tensor.is_floating_point():
        tensor = tensor.to(torch.float32)  # bf16/fp16 have no numpy twin
    return tensor.numpy()


def _array_to_pil(array: np.ndarray, channels_first: bool, described: str) -> Image.Image:
    """``described``: how errors name the input ("array of shape (50, 70, 3) and dtype float32")."""
    if array.ndim == 4 and array.shape[0] == 1:
        array = array[0]
    if array.size == 0:
        raise ImageInputError(f"{described} is empty")
    if array.ndim == 3:
        array = _to_hwc(array, channels_first, described)
        if array.shape[2] == 1:
            array = array[:, :, 0]
    elif array.ndim != 2:
        raise ImageInputError(f"{described} is not an image: expected HxW, HxWxC, CxHxW or a batch")
    # Pillow names the mode from the shape: HxW is L, and 2, 3 or 4 channels are LA, RGB or RGBA
    return Image.fromarray(np.ascontiguousarray(_to_uint8(array, described)))


def _to_hwc(array: np.ndarray, channels_first: bool, described: str) -> np.ndarray:
    first, last = array.shape[0] in (1, 2, 3, 4), array.shape[2] in (1, 2, 3, 4)
    if first and (channels_first or not last):
        return np.moveaxis(array, 0, -1)
    if last:
        return array
    raise ImageInputError(f"{described} has no channel axis of size 1, 2, 3 or 4")


def _to_uint8(array: np.ndarray, described: str) -> np.ndarray:
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.bool_:
        return array.astype(np.uint8) * 255
    if array.dtype == np.uint16:
        return np.rint(array / 257.0).astype(np.uint8)
    if np.issubdtype(array.dtype, np.integer):
        low, high = int(array.min()), int(array.max())
        if low < 0 or high > 255:
            raise ImageInputError(f"{described} has integer values in [{low}, {high}]; expected 0..255")
        return array.astype(np.uint8)
    if np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all():
            raise ImageInputError(f"{described} contains NaN or infinite values")
        lowest, highest = float(array.min()), float(array.max())
        if lowest < -_FLOAT_TOLERANCE or highest > 1 + _FLOAT_TOLERANCE:
            raise ImageInputError(
                f"{described} has float values in [{lowest:.3g}, {highest:.3g}]; expected 0..1 "
                "(divide 0..255 data by 255)"
            )
        return np.rint(np.clip(array, 0.0, 1.0) * 255.0).astype(np.uint8)
    raise ImageInputError(f"{described} has an unsupported dtype")


@dataclass(frozen=True)
class PatchSpec:
    """How a Qwen2-VL image processor turns pixels into patch vectors (read from the checkpoint)."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    rescale: float = 1 / 255
    patch: int = 14
    temporal: int = 2
    merge: int = 2


def to_patches(
    image: Image.Image, spec: PatchSpec, out: np.ndarray | None = None
) -> tuple[np.ndarray, tuple[int, int, int]]:
    """The model's pixel input for one RGB image already on the patch grid, and its (t, h, w) grid.

    The same arithmetic as Qwen2-VL's image processor (rescale, normalise, repeat the frame over the
    temporal patch, group patches by 2x2 merge blocks), done as one gather of the 8-bit pixels and a
    table lookup per channel written straight into the float output: several times faster, and checked
    against the checkpoint's own processor when the model loads. ``out``, if given, receives the
    patches (a slice of the batch's buffer, saving a copy).

    NumPy, not torch: this runs in the helper thread that prepares the next batch, and a torch
    operation there starts a second OpenMP team, after which every small operation of the model's
    thread pays for threads that no longer fit the cores (generation ran at half speed on 2 cores).
    """
    pixels = np.asarray(image)
    height, width, channels = pixels.shape
    grid_h, grid_w = height // spec.patch, width // spec.patch
    # the 8-bit pixels gathered patch by patch, in merge-block order, each patch channel-major
    frame = np.ascontiguousarray(
        pixels.reshape(
            grid_h // spec.merge,
            spec.merge,
            spec.patch,
            grid_w // spec.merge,
            spec.merge,
            spec.patch,
            channels,
        ).transpose(0, 3, 1, 4, 6, 2, 5)
    ).reshape(grid_h * grid_w, channels, 1, spec.patch**2)
    return _normalised_into(frame, spec, out), (1, grid_h, grid_w)


def to_video_patches(
    frames: np.ndarray, spec: PatchSpec, out: np.ndarray | None = None
) -> tuple[np.ndarray, tuple[int, int, int]]:
    """The model's pixel input for one video's frames (uint8 ``(n, H, W, 3)``, n a multiple of the temporal
    patch, sides on the patch grid) and its (t, h, w) grid: :func:`to_patches` with each patch's temporal
    slots holding consecutive frames instead of one frame repeated, as Qwen2-VL's processors do it."""
    count, height, width, channels = frames.shape
    grid_t, grid_h, grid_w = count // spec.temporal, height // spec.patch, width // spec.patch
    gathered = np.ascontiguousarray(
        frames.reshape(
            grid_t,
            spec.temporal,
            grid_h // spec.merge,
            spec.merge,
            spec.patch,
            grid_w // spec.merge,
            spec.merge,
            spec.patch,
            channels,
        ).transpose(0, 2, 5, 3, 6, 8, 1, 4, 7)
    ).reshape(grid_t * grid_h * grid_w, channels, spec.temporal, spec.patch**2)
    return _normalised_into(gathered, spec, out), (grid_t, grid_h, grid_w)


def _normalised_into(gathered: np.ndarray, spec: PatchSpec, out: np.ndarray | None) -> np.ndarray:
    """8-bit patches ``(patches, channels, frames, patch**2)`` rescaled and normalised by a table lookup
    per channel, written straight into ``out`` (made if None) as ``(patches, channels * temporal *
    patch**2)``; one frame (an image) is written into every temporal slot."""
    rows, channels = gathered.shape[:2]
    if out is None:
        out = np.empty((rows, channels * spec.temporal * spec.patch**2), dtype=np.float32)
    shaped = out.view()
    shaped.shape = (rows, channels, spec.temporal, spec.patch**2)  # a view, or an error: never a copy
    table = _normalising_table(spec)
    for channel in range(channels):
        shaped[:, channel] = table[channel].take(gathered[:, channel])
    return out


def video_patch_count(frames: np.ndarray, spec: PatchSpec) -> int:
    return (len(frames) // spec.temporal) * (frames.shape[1] // spec.patch) * (frames.shape[2] // spec.patch)


@functools.lru_cache(maxsize=8)
def _normalising_table(spec: PatchSpec) -> np.ndarray:
    levels = np.arange(256, dtype=np.float64) * spec.rescale
    return np.stack([((levels - mean) / std).astype(np.float32) for mean, std in zip(spec.mean, spec.std)])


def patch_count(image: Image.Image, spec: PatchSpec) -> int:
    return (image.height // spec.patch) * (image.width // spec.patch)
