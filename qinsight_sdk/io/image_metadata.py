"""Scores people can keep: the rows of a judged image saved with the image itself, so that a folder of
renders can be sorted or filtered later (``qinsight score --from-metadata``) without loading a model.

What is saved is a JSON list of record rows (:func:`qinsight_sdk.io.records.make_row`), one per task the
image was judged for (``score``, and ``degradation`` when it was asked), in strict JSON:

- in a PNG, as an iTXt text chunk with the keyword :data:`METADATA_KEY` (UTF-8, so any reasoning and
  any file name fit), beside ComfyUI's own ``prompt`` and ``workflow`` chunks;
- for formats without text chunks, in a sidecar file named after the whole image file name
  (``a_00001_.jpg.json``) holding ``{"qinsight": [rows]}``: an object, so that other tools' sidecars of
  the same name (photo exports write them) are told apart from ours instead of misread.

Files are moved and renamed after they are saved, so the rows read back name the file as it is now: their
``key`` and ``image`` are those of the path that was read, not of the path that was written.
"""

from __future__ import annotations

import json
import os
import threading
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError
from PIL.PngImagePlugin import PngInfo

from ..errors import QInsightError
from .records import key_of, row_text
from .videos import VIDEO_SUFFIXES

METADATA_KEY = "qinsight"
Row = dict[str, Any]


class MetadataError(QInsightError):
    """Rows that cannot be saved in or read from an image; the message names the file and the reason."""


def embed(info: PngInfo, rows: Sequence[Row]) -> None:
    """Add the rows to ``info`` as the ``qinsight`` chunk of the PNG it will be saved with; the chunks
    already there (ComfyUI's prompt and workflow) are kept as they are."""
    info.add_itxt(METADATA_KEY, _rows_text(rows, "the rows to embed"))


def video_tags(rows: Sequence[Row]) -> dict[str, Any]:
    """The rows as the ``qinsight`` tag of a video container, as checked plain objects: ComfyUI's
    ``VideoInput.save_to`` writes each tag's value as JSON (MP4 with ``movflags=use_metadata_tags``), and
    :func:`read_rows` reads it back."""
    return {METADATA_KEY: json.loads(_rows_text(rows, "the rows to tag the video with"))}


def sidecar_path(image_path: str | os.PathLike[str]) -> Path:
    """Where the rows of an image without text chunks go: ``<image file name>.json`` beside it."""
    path = Path(image_path)
    return path.with_name(path.name + ".json")


def write_sidecar(image_path: str | os.PathLike[str], rows: Sequence[Row]) -> Path:
    """Write the rows to the image's sidecar, replacing it whole: a reader never sees half a file. The
    temporary file is opened as any file is (not owner-only, as tempfile's are), so others can read it."""
    target = sidecar_path(image_path)
    text = '{"' + METADATA_KEY + '": ' + _rows_text(rows, str(target)) + "}\n"
    temporary = target.with_name(f".{target.name}.{os.getpid()}-{threading.get_ident()}.tmp")
    try:
        with open(temporary, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, target)
    except OSError as exc:
        temporary.unlink(missing_ok=True)
        raise MetadataError(f"cannot write {target}: {exc.strerror or exc}") from None
    return target


def read_rows(path: str | os.PathLike[str], task: str | None = None) -> list[Row]:
    """The rows saved with the image at ``path`` (its PNG chunk, else its sidecar), only those of ``task``
    when given, each naming ``path`` as its image."""
    rows, source = _saved_rows(path)
    _check_rows(rows, source)
    if task is not None:
        held = sorted({row["task"] for row in rows})
        rows = [row for row in rows if row["task"] == task]
        if not rows:
            raise MetadataError(
                f"{os.fspath(path)}: its qinsight metadata holds no {task} row"
                + (f" (only {', '.join(held)})" if held else " (no rows at all)")
            )
    return [{**row, "key": key_of(path), "image": os.fspath(path)} for row in rows]


def _rows_text(rows: Sequence[Row], target: str) -> str:
    """The rows as one strict JSON list, each spelled as the record store spells it."""
    _check_rows(rows, target)
    try:
        return "[" + ", ".join(map(row_text, rows)) + "]"
    except ValueError as exc:
        raise MetadataError(
            f"{target}: a row holds a number that is not finite (NaN or infinity), which "
            f"strict JSON cannot carry ({exc})"
        ) from None


def _check_rows(rows: Any, source: str) -> None:
    if not isinstance(rows, (list, tuple)) or not all(
        isinstance(row, dict) and isinstance(row.get("task"), str) for row in rows
    ):
        raise MetadataError(f'{source}: the qinsight metadata is not a list of rows (objects with a "task")')


def _saved_rows(path: str | os.PathLike[str]) -> tuple[Any, str]:
    """What was saved, as parsed, and where it was found (for errors to name): the PNG chunk, else the
    ``qinsight`` entry of the sidecar."""
    name = os.fspath(path)
    text = _chunk(path)
    if text is not None:
        source = f"{name} (its {METADATA_KEY} text chunk)"
        return _strict_json(text, source), source
    sidecar = sidecar_path(path)
    if not sidecar.is_file():
        raise MetadataError(
            f"{name}: no qinsight metadata (no {METADATA_KEY!r} text chunk, and no sidecar {sidecar.name})"
        )
    try:
        text = sidecar.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise MetadataError(f"{sidecar}: cannot be read ({getattr(exc, 'strerror', None) or exc})") from None
    content = _strict_json(text, str(sidecar))
    if not isinstance(content, dict) or METADATA_KEY not in content:
        raise MetadataError(
            f"{name}: no qinsight metadata (no {METADATA_KEY!r} text chunk, and its sidecar "
            f"{sidecar.name} has no {METADATA_KEY!r} entry)"
        )
    return content[METADATA_KEY], str(sidecar)


def _chunk(path: str | os.PathLike[str]) -> str | None:
    """The image's ``qinsight`` text chunk, if it has one; a file that is no image is an error. Only
    regular files are opened: reading a FIFO would wait for a writer forever."""
    name = os.fspath(path)
    if not os.path.isfile(path):
        raise MetadataError(
            f"{name}: "
            + (
                "not a regular file (a folder, FIFO or device), not an image file"
                if os.path.exists(path)
                else "file not found"
            )
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                found = image.info.get(METADATA_KEY)  # chunks before the pixels, read without decoding them
                if found is None and image.format == "PNG":
                    found = image.text.get(METADATA_KEY)  # a chunk after the pixels: decodes the image
    except UnidentifiedImageError:
        if Path(name).suffix.lower() not in VIDEO_SUFFIXES:
            raise MetadataError(f"{name}: not a recognised image file") from None
        return _container_tag(path)
    except (OSError, Image.DecompressionBombError) as exc:
        raise MetadataError(f"{name}: cannot be read ({getattr(exc, 'strerror', None) or exc})") from None
    return None if found is None else str(found)


def _container_tag(path: str | os.PathLike[str]) -> str | None:
    """A video file's ``qinsight`` container tag (:func:`video_tags`); one PyAV cannot open is an error."""
    name = os.fspath(path)
    try:
        import av
    except ImportError:
        raise MetadataError(f"{name}: not a recognised image file (videos need PyAV: pip install av)") from None
    try:
        with av.open(name) as container:
            # Matroska (WebM, MKV) keeps its tags' names in capitals
            found = next((v for k, v in container.metadata.items() if k.lower() == METADATA_KEY), None)
    except Exception:  # PyAV raises its own error per FFmpeg failure: any of them means not a video
        raise MetadataError(f"{name}: not a recognised image or video file") from None
    return None if found is None else str(found)


def _strict_json(text: str, source: str) -> Any:
    """JSON as qinsight writes it: ``NaN`` and ``Infinity`` are refused, as no row may hold them."""

    def refuse(constant: str) -> Any:
        raise ValueError(f"{constant} is not strict JSON")

    try:
        return json.loads(text, parse_constant=refuse)
    except ValueError as exc:
        raise MetadataError(f"{source}: the qinsight metadata is not valid JSON ({exc})") from None
