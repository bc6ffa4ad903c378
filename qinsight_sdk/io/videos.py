"""Turning whatever a user hands a video judge into the frames the judge sees (a :class:`VideoClip`).

Inputs: video files and their bytes (mp4, webm, mkv, mov, ... through PyAV, the ``[video]`` extra; GIF,
APNG and animated WebP through Pillow), a list of frames (PIL images, arrays or tensors), one
``(T, H, W, C)`` or ``(T, C, H, W)`` array or tensor (uint8, or float in 0..1, as ComfyUI's ``IMAGE``
batches are), and :class:`Video` for frames with their frame rate. Frames that carry no rate are taken
as already sampled at the judges' 2 frames per second (so up to 16 of them are used, evenly spread).

Files are streamed: the frame count and rate come from the container (or from one pass over its packets,
which decodes nothing), then frames are decoded in order and only the sampled ones are kept, each resized
at once; memory does not grow with the video's length. Which frames and what size follow the family's
rules (:mod:`qinsight_sdk.io.video_sampling`). Every problem is an ``ImageInputError`` naming the input,
which the judge records on that item alone.
"""

from __future__ import annotations

import functools
import hashlib
import io
import math
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..errors import ImageInputError, MissingDependencyError
from . import video_sampling as sampling
from .images import PATCH_GRID, _is_tensor, frame_to_rgb, to_rgb

MAX_FRAMES = 36_000  # 20 minutes at 30 frames per second: a header announcing more is refused
MAX_SIDE = 8192  # 8K video is 7680 wide: a header announcing a wider or taller frame is refused
FRAMES_WITHOUT_RATE_FPS = sampling.FRAMES_PER_SECOND  # frames given without a rate count as already sampled
# what a folder scan takes for a video judge: containers PyAV reads, and the animations Pillow reads
VIDEO_SUFFIXES = frozenset(
    ".mp4 .m4v .mov .mkv .webm .avi .flv .wmv .mpg .mpeg .ts .mts .m2ts .3gp .ogv .gif .apng .webp".split()
)
_PILLOW_SIGNATURES = (b"GIF87a", b"GIF89a", b"\x89PNG\r\n\x1a\n")  # and RIFF....WEBP: animations Pillow reads


@dataclass(frozen=True)
class Video:
    """Frames with their frame rate, for inputs that do not carry one (an ``IMAGE`` batch and its fps).

    Attributes:
        frames: a list of frames (PIL images, arrays or tensors), or one ``(T, H, W, C)`` / ``(T, C, H, W)``
            array or tensor.
        fps: frames per second of the video they make.
    """

    frames: Any
    fps: float = FRAMES_WITHOUT_RATE_FPS


@dataclass(frozen=True, eq=False)
class VideoClip:
    """A video as a judge sees it: the sampled frames, resized, and where they came from.

    Attributes:
        frames: uint8 ``(n, height, width, 3)``, n even, 2 to 16.
        fps: the source's average frame rate.
        total_frames: how many frames the source has.
        indices: which of them were sampled.
    """

    frames: np.ndarray
    fps: float
    total_frames: int
    indices: tuple[int, ...]

    @property
    def height(self) -> int:
        return int(self.frames.shape[1])

    @property
    def width(self) -> int:
        return int(self.frames.shape[2])

    @property
    def tokens(self) -> int:
        """The language-model tokens it takes: one per 28x28 cell of every pair of frames."""
        cells = (self.height // PATCH_GRID) * (self.width // PATCH_GRID)
        return len(self.frames) // sampling.FRAME_FACTOR * cells

    @functools.cached_property
    def key(self) -> str:
        """A digest of its frames, so that a clip asked about twice is encoded once."""
        return hashlib.sha256(np.ascontiguousarray(self.frames).tobytes()).hexdigest()


def is_frame(value: Any) -> bool:
    """Whether ``value`` is one frame (a PIL image, or a 3-D array or tensor) rather than a video."""
    return isinstance(value, Image.Image) or (getattr(value, "ndim", None) == 3 and not isinstance(value, Video))


def split_videos(videos: Any) -> tuple[list[Any], bool]:
    """The list of single videos in ``videos`` and whether the caller passed just one.

    One video: a path, bytes, a :class:`Video`, a 4-D array or tensor (its frames), or a list of frames.
    Many: a 5-D ``(B, T, ...)`` array or tensor (as reward loops pass them), or a list or tuple of videos.
    """
    if isinstance(videos, (list, tuple)):
        if videos and all(is_frame(v) for v in videos):
            return [list(videos)], True
        return list(videos), False
    if getattr(videos, "ndim", None) == 5:
        return [videos[i] for i in range(videos.shape[0])], False
    return [videos], True


def load_video(source: Any) -> VideoClip:
    """Decode, sample and resize one video as the VQ-Insight judges saw videos; raises ``ImageInputError``.

    Any failure while reading (a truncated file, a codec error, a meta-device tensor), whatever its
    exception type, is this input's error, so it never takes other inputs down with it.

    Args:
        source: a path, file bytes, a :class:`Video`, a list of frames, or a 4-D array or tensor (or a
            clip already loaded, returned as it is).

    Returns:
        The clip.

    Raises:
        ImageInputError: the input is missing, not a video, broken, too large, or too short.
        MissingDependencyError: a video file needs PyAV, which is not installed.
    """
    name = described(source)
    try:
        return _loaded(source, name)
    except (ImageInputError, MissingDependencyError):
        raise
    except Exception as exc:
        raise ImageInputError(f"{name} cannot be read as a video ({type(exc).__name__}: {exc})") from None


def described(source: Any) -> str:
    """How an error names a video input: its path as given, or what kind of object it is."""
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    if isinstance(source, (bytes, bytearray)):
        return f"the video bytes ({len(source)} bytes)"
    if isinstance(source, Video):
        return "the Video's frames"
    if isinstance(source, VideoClip):
        return "the video clip"
    if isinstance(source, (list, tuple)):
        return f"the list of {len(source)} frames"
    if type(source) is np.ndarray:
        return f"the array of shape {tuple(source.shape)}"
    return f"the tensor of shape {tuple(source.shape)}" if _is_tensor(source) else f"the {type(source).__name__}"


def _loaded(source: Any, name: str) -> VideoClip:
    if isinstance(source, VideoClip):  # already as a judge sees it: judged as it is
        return source
    if isinstance(source, (str, os.PathLike)):
        return _from_file(_checked_path(source, name), name)
    if isinstance(source, (bytes, bytearray)):
        if not source:
            raise ImageInputError("empty bytes hold no video")
        return _from_file(io.BytesIO(bytes(source)), name)
    if isinstance(source, Video):
        return _from_frames(source.frames, float(source.fps), name)
    if isinstance(source, (list, tuple)) or getattr(source, "ndim", None) == 4:
        return _from_frames(source, FRAMES_WITHOUT_RATE_FPS, name)
    if isinstance(source, Image.Image) or getattr(source, "ndim", None) is not None:
        raise ImageInputError(
            f"{name} is one image, not a video: pass its frames as a list, a (T, H, W, C) array, or a video file"
        )
    raise ImageInputError(
        f"unsupported video input of type {type(source).__name__}; pass a path, video file bytes, a list of "
        "frames, a (T, H, W, C) or (T, C, H, W) array or tensor, or qinsight_sdk.Video(frames, fps)"
    )


def _checked_path(source: str | os.PathLike, name: str) -> Path:
    if not name:
        raise ImageInputError("an empty path names no video file")
    try:
        kind = os.stat(source).st_mode
    except FileNotFoundError:
        hint = " (URLs are not downloaded: save the video first)" if "://" in name else ""
        raise ImageInputError(f"{name}: file not found{hint}") from None
    except OSError as exc:
        raise ImageInputError(f"{name}: cannot be read ({exc.strerror or exc})") from None
    if stat.S_ISDIR(kind):
        raise ImageInputError(f"{name}: is a directory, not a video file")
    if not stat.S_ISREG(kind):
        raise ImageInputError(f"{name}: not a regular file (a FIFO, socket or device), not a video file")
    return Path(source)


# -- in-memory frames ---------------------------------------------------------------------------------------


def _from_frames(frames: Any, fps: float, name: str) -> VideoClip:
    """Frames already decoded: only the sampled ones are converted (a 5 s 720p float batch is 1.3 GB)."""
    if isinstance(frames, (list, tuple)):
        sizes = {_frame_shape(frame, f"frame {k} of {name}") for k, frame in enumerate(frames)}
        if len(sizes) > 1:
            raise ImageInputError(f"{name}: its frames differ in size ({', '.join(sorted(map(str, sizes)))})")
        total = len(frames)
    elif getattr(frames, "ndim", None) == 4:
        total = int(frames.shape[0])
        if min(frames.shape) == 0:
            raise ImageInputError(f"{name} is empty")
    else:
        raise ImageInputError(f"{name}: a video's frames are a list or a (T, H, W, C) / (T, C, H, W) array or tensor")
    indices = sampling.frame_indices(total, sampling.frame_count(total, fps, name))
    chosen = np.stack([frame_to_rgb(frames[i], f"frame {i} of {name}") for i in indices])
    size = sampling.frame_size(chosen.shape[1], chosen.shape[2], name)
    return VideoClip(sampling.resize_frames(chosen, size), fps, total, tuple(indices))


def _frame_shape(frame: Any, name: str) -> tuple[int, ...]:
    if isinstance(frame, Image.Image):
        return frame.size[::-1]
    shape = getattr(frame, "shape", None)
    if shape is None or len(shape) not in (2, 3):
        raise ImageInputError(f"{name} is not a frame: expected a PIL image or an HxW(xC) array or tensor")
    return tuple(int(s) for s in shape)


# -- files --------------------------------------------------------------------------------------------------


def _from_file(source: Path | io.BytesIO, name: str) -> VideoClip:
    if _is_animation(source):
        return _from_animation(source, name)
    return _from_container(source, name)


def _is_animation(source: Path | io.BytesIO) -> bool:
    """GIF, PNG (APNG) and WebP files are read by Pillow, which knows their frame timings."""
    if isinstance(source, Path):
        with open(source, "rb") as file:
            head = file.read(16)
    else:
        head = source.getvalue()[:16]
    return head.startswith(_PILLOW_SIGNATURES) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP")


def _from_animation(source: Path | io.BytesIO, name: str) -> VideoClip:
    with Image.open(source) as image:
        total = int(getattr(image, "n_frames", 1))
        _check_header(total, image.width, image.height, name)
        durations = []
        for index in range(total):
            image.seek(index)
            durations.append(float(image.info.get("duration") or 0))
        # a frame without a duration shows for 100 ms in browsers; the average rate is what decoders report
        seconds = sum(d if d > 0 else 100.0 for d in durations) / 1000
        fps = total / seconds
        indices = sampling.frame_indices(total, sampling.frame_count(total, fps, name))
        size = sampling.frame_size(image.height, image.width, name)
        frames = []
        for index in indices:
            image.seek(index)
            pixels = np.asarray(to_rgb(image.convert("RGBA"), name))
            frames.append(sampling.resize_frames(pixels[None], size)[0])
    return VideoClip(np.stack(frames), fps, total, tuple(indices))


def _av() -> Any:
    try:
        import av
    except ImportError:
        raise MissingDependencyError(
            "reading video files needs PyAV: pip install 'qinsight[video]' (or pass decoded frames)"
        ) from None
    return av


def _open_container(source: Path | io.BytesIO) -> Any:
    if isinstance(source, io.BytesIO):
        source.seek(0)
    return _av().open(source if isinstance(source, io.BytesIO) else str(source), mode="r", metadata_errors="ignore")


def check_video_header(source: bytes | Path, name: str) -> bool:
    """Whether ``source`` (file bytes or a path) is a video PyAV opens, after refusing one whose header announces more
    frames than :data:`MAX_FRAMES` or a side over :data:`MAX_SIDE`; nothing is decoded. For a service's
    door: what is no video (or cannot be read) is left for the judge to name as that input's error.

    Raises:
        ImageInputError: the header announces a video too large.
    """
    try:
        with _open_container(io.BytesIO(source) if isinstance(source, bytes) else source) as container:
            if not container.streams.video:
                return False
            stream = container.streams.video[0]
            total, width, height = int(stream.frames or 0), stream.codec_context.width, stream.codec_context.height
    except Exception:  # no PyAV, or no container it can open: not for the door to say
        return False
    _check_header(total, width, height, name)
    return True


def _from_container(source: Path | io.BytesIO, name: str) -> VideoClip:
    av = _av()
    try:
        with _open_container(source) as container:
            stream = _video_stream(container, name)
            _check_header(int(stream.frames or 0), stream.codec_context.width, stream.codec_context.height, name)
            total = int(stream.frames or 0)
            fps = _rate(stream.average_rate)
            if total <= 0 or fps is None:  # webm and mkv carry neither: count the packets (nothing decoded)
                total, seconds = _count_packets(container, stream, name)
                fps = fps or (total / seconds if seconds > 0 else None)
        if fps is None:
            raise ImageInputError(f"{name}: neither its header nor its timestamps give a frame rate")
        indices = sampling.frame_indices(total, sampling.frame_count(total, fps, name))
        with _open_container(source) as container:
            frames = _decoded_frames(container, _video_stream(container, name), indices, total, name)
    except av.FFmpegError as exc:
        raise ImageInputError(f"{name}: not a readable video ({exc})") from None
    return VideoClip(frames, fps, total, tuple(indices))


def _video_stream(container: Any, name: str) -> Any:
    if not container.streams.video:
        raise ImageInputError(f"{name} has no video stream")
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"  # frame-parallel decoding: the same frames, sooner
    return stream


def _rate(rate: Fraction | None) -> float | None:
    value = float(rate) if rate else 0.0
    return value if value > 0 and math.isfinite(value) else None


def _check_header(total: int, width: int, height: int, name: str) -> None:
    """Refuse what would take the machine down before anything is decoded."""
    if total > MAX_FRAMES:
        raise ImageInputError(f"{name} announces {total:,} frames, more than the {MAX_FRAMES:,} a video may have")
    if max(width, height) > MAX_SIDE:
        raise ImageInputError(
            f"{name} has frames of {width}x{height}, larger than {MAX_SIDE} pixels on a side; downscale it first"
        )


def _count_packets(container: Any, stream: Any, name: str) -> tuple[int, float]:
    """The stream's frame count and its duration in seconds, from its packets alone."""
    count, first, last = 0, None, None
    for packet in container.demux(stream):
        if not packet.size:
            continue
        count += 1
        if count > MAX_FRAMES:
            raise ImageInputError(f"{name} has more than {MAX_FRAMES:,} frames")
        if packet.pts is not None and packet.time_base is not None:
            seconds = float(packet.pts * packet.time_base)
            first = seconds if first is None else min(first, seconds)
            last = seconds if last is None else max(last, seconds)
    # the span from the first frame to the last, plus the last frame's own share of it
    span = (last - first) * count / (count - 1) if count > 1 and first is not None and last is not None else 0.0
    return count, span


def _decoded_frames(container: Any, stream: Any, indices: list[int], total: int, name: str) -> np.ndarray:
    """Decode in order, keeping (and resizing at once) only the sampled frames."""
    wanted: dict[int, list[int]] = {}
    for slot, index in enumerate(indices):
        wanted.setdefault(index, []).append(slot)
    size = sampling.frame_size(stream.codec_context.height, stream.codec_context.width, name)
    frames = np.empty((len(indices), *size, 3), dtype=np.uint8)
    position = 0
    for frame in _frames(container, stream):
        if position in wanted:
            pixels = frame.to_ndarray(format="rgb24")
            if pixels.shape[:2] != (stream.codec_context.height, stream.codec_context.width):
                raise ImageInputError(f"{name}: frame {position} changes size to {pixels.shape[1]}x{pixels.shape[0]}")
            frames[wanted[position]] = sampling.resize_frames(pixels[None], size)[0]
        position += 1
        if position > indices[-1]:
            return frames
    raise ImageInputError(
        f"{name} is truncated or corrupt: only {position} of its {total} frames decode (frame {indices[-1]} is needed)"
    )


def _frames(container: Any, stream: Any) -> Iterator[Any]:
    yield from container.decode(stream)
