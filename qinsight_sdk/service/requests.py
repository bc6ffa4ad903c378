"""Reading a request: its token, its size, its body (JSON or multipart, as it streams), its images and
options, each checked against the service's limits, or a ``RequestError`` saying what is wrong.

The body is read as it arrives and refused at the first byte past the size limit; a multipart body is
parsed as it arrives and refused at the first part past the limits (a body of 50,000 tiny parts is not read
to its end); JSON, base64 and the image headers are read in a worker thread, so that a large body does not
hold up the event loop, and with it every other request. An image's size is read from its header before
anything decodes it: a 20 KB PNG of 13,000 x 13,000 pixels is refused at the door.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import io
import json
import os
import warnings
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

from .settings import Call, RequestError, ServiceSettings

TASKS = ("score", "degradation", "compare", "rank", "reward", "compute")
# options each task takes, with their types; anything else in a request is an error naming it
OPTIONS: dict[str, dict[str, type]] = {
    "score": {"mode": str},
    "degradation": {},
    "reward": {},
    "compare": {"both_orders": bool},
    "rank": {"strategy": str, "top_k": int, "pool": int},
    "compute": {"fps": float},
}
IMAGE_FIELDS = {"compare": ("image_a", "image_b", "reference")}  # the other tasks: "images", a list
# /compute answers Flow-Factory's remote reward request: {"prompt", "image": [base64 PNG], "video": [[base64
# PNG per frame]], "condition_images", "condition_videos"}. The prompts and the conditions are taken and not
# judged (these judges rate quality alone); nulls are sent for what a sample lacks
COMPUTE_MEDIA = ("image", "video")
COMPUTE_UNJUDGED = ("prompt", "condition_images", "condition_videos")
MAX_FORM_FIELDS = 16  # text fields in a multipart request: options (three at most today), with room


def check_token(headers: Mapping[str, str], settings: ServiceSettings) -> None:
    if settings.token is None:
        return
    given = headers.get("authorization", "")
    if not hmac.compare_digest(given.encode(), f"Bearer {settings.token}".encode()):
        raise RequestError(401, "this service needs its bearer token: Authorization: Bearer <token>")


def check_size(headers: Mapping[str, str], settings: ServiceSettings) -> int:
    """The body's size as the headers give it (0 where they do not), refused if too large before reading it."""
    try:
        length = int(headers.get("content-length") or 0)
    except ValueError:
        raise RequestError(400, "Content-Length is not a number") from None
    if length > settings.max_request_bytes:
        raise RequestError(
            413, f"the request is {length} bytes; this service takes at most {settings.max_request_bytes}"
        )
    return max(length, 0)


def check_task(task: str) -> None:
    if task not in TASKS:
        raise RequestError(404, f"no endpoint /{task}: use one of {', '.join('/' + t for t in TASKS)}")


async def read_call(
    task: str, request: Any, settings: ServiceSettings, hold: Callable[[int], None] = lambda size: None
) -> Call:
    """The checked call an HTTP request makes (a Starlette ``Request``), or a ``RequestError`` saying what
    is wrong with it. ``hold(size)`` is told the bytes read so far (the size the headers give, first): the
    service's admission control, which refuses a body it has no room for."""
    check_task(task)
    hold(check_size(request.headers, settings))
    content_type = request.headers.get("content-type", "")
    body = _limited(request, settings.max_request_bytes, hold)
    if content_type.startswith("multipart/form-data") and task != "compute":
        fields = await _multipart_fields(content_type, body, settings)
    elif content_type.startswith("application/json") or not content_type:
        fields = await asyncio.to_thread(_json_fields, b"".join([chunk async for chunk in body]))
    else:
        kinds = "application/json" if task == "compute" else "application/json or multipart/form-data"
        raise RequestError(400, f"/{task} takes {kinds}, not {content_type} (nothing here unpickles)")
    return await asyncio.to_thread(_call, task, fields, settings)


def _call(task: str, fields: dict[str, Any], settings: ServiceSettings) -> Call:
    if task == "compute":
        media = {name: fields.pop(name, None) for name in (*COMPUTE_MEDIA, *COMPUTE_UNJUDGED)}
        call = Call(task, _compute_media(media, settings), _options(task, fields))
    else:
        call = Call(task, _images(task, fields, settings), _options(task, fields))
    check_pixels(call, settings)
    pool = call.options.get("pool")
    if pool is not None and pool > settings.max_pool:
        raise RequestError(413, f"pool {pool}: this service compares at most {settings.max_pool} finalists pairwise")
    return call


async def _limited(request: Any, limit: int, hold: Callable[[int], None]) -> AsyncIterator[bytes]:
    """The body's chunks, refused (413) at the first byte over ``limit`` (a chunked upload says no size)."""
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestError(413, f"the request is over {limit} bytes, the most this service takes")
        hold(size)
        yield chunk


def _compute_media(media: dict[str, Any], settings: ServiceSettings) -> list[bytes | Path | list[bytes]]:
    """Flow-Factory's images (base64 strings) or videos (lists of base64 frames), checked and decoded."""
    given = [name for name in COMPUTE_MEDIA if media[name] is not None]
    if len(given) != 1:
        raise RequestError(
            400,
            '/compute needs "image" (a list of base64 images) or "video" (a list of videos, '
            f"each a list of base64 frames){', not both' if given else ''}",
        )
    items = media[given[0]]
    if not isinstance(items, list) or not items:
        raise RequestError(400, f'/compute needs "{given[0]}": a non-empty list')
    if len(items) > settings.max_images:
        raise RequestError(
            413, f"{len(items)} {given[0]}s in one request; this service takes at most {settings.max_images}"
        )
    if given[0] == "image":
        return [_base64(item, f"image[{i}]") for i, item in enumerate(items)]
    return [_frames(video, f"video[{i}]", settings) for i, video in enumerate(items)]


def _frames(video: Any, name: str, settings: ServiceSettings) -> list[bytes]:
    if not isinstance(video, list) or not video:
        raise RequestError(400, f"{name}: a video is a non-empty list of base64 frames")
    if len(video) > settings.max_video_frames:
        raise RequestError(
            413, f"{name} has {len(video)} frames; this service takes at most {settings.max_video_frames}"
        )
    return [_base64(frame, f"{name} frame {j}") for j, frame in enumerate(video)]


def _base64(item: Any, name: str) -> bytes:
    if not isinstance(item, str):
        raise RequestError(400, f"{name}: expected a base64 string, not {type(item).__name__}")
    try:
        return base64.b64decode(item, validate=True)
    except (binascii.Error, ValueError):
        raise RequestError(400, f"{name}: not valid base64") from None


def check_pixels(call: Call, settings: ServiceSettings) -> None:
    """Refuse images too large to decode, read from their headers: each, and all of the call's together
    (a video sent as frames: each frame)."""
    names = IMAGE_FIELDS.get(call.task) or [f"images[{i}]" for i in range(len(call.images))]
    if call.task == "compute":
        frames = [isinstance(item, list) for item in call.images]
        names = [f"{'video' if is_video else 'image'}[{i}]" for i, is_video in enumerate(frames)]
    flat = [
        (f"{name} frame {j}" if isinstance(image, list) else name, frame)
        for name, image in zip(names, call.images)
        for j, frame in enumerate(image if isinstance(image, list) else [image])
    ]
    total = 0
    for name, image in flat:
        pixels = _pixels(image, name, settings)
        if pixels > settings.max_image_pixels:
            raise RequestError(
                413,
                f"{name} has {pixels:,} pixels; this service takes at most "
                f"{settings.max_image_pixels:,} per image (downscale it first)",
            )
        total += pixels
    if total > settings.max_request_pixels:
        raise RequestError(
            413,
            f"the images have {total:,} pixels together; this service takes at most "
            f"{settings.max_request_pixels:,} in one request",
        )


def _pixels(image: bytes | Path, name: str, settings: ServiceSettings) -> int:
    """Width x height from the image's header, nothing decoded; 0 for what is no image (the judge then says
    so in that image's own result, as for any unreadable image)."""
    from PIL import Image  # here: the client imports this package where Pillow may be missing

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(image) if isinstance(image, bytes) else image) as opened:
                width, height = opened.size
    except Image.DecompressionBombError:
        raise RequestError(
            413,
            f"{name} is far over {settings.max_image_pixels:,} pixels (Pillow refuses it as a "
            "possible decompression bomb)",
        ) from None
    except (OSError, ValueError, SyntaxError):  # not an image, truncated, unreadable: the judge says which
        return _video_pixels(image, name)
    return width * height


def _video_pixels(source: bytes | Path, name: str) -> int:
    """0 (a video's cost is its sampled frames, sized by the judge), after refusing a video whose header
    announces more frames or larger frames than a video may have; nothing decoded."""
    from ..errors import ImageInputError
    from ..io.videos import check_video_header

    try:
        check_video_header(source, name)
    except ImageInputError as exc:
        raise RequestError(413, str(exc)) from None
    return 0


def _json_fields(body: bytes) -> dict[str, Any]:
    try:
        fields = json.loads(body or b"{}")
    except (ValueError, UnicodeDecodeError) as exc:
        raise RequestError(400, f"the body is not JSON ({exc})") from None
    except RecursionError:
        raise RequestError(400, "the body's JSON is nested too deeply") from None
    if not isinstance(fields, dict):
        raise RequestError(400, "the body must be a JSON object")
    return fields


async def _multipart_fields(content_type: str, body: AsyncIterator[bytes], settings: ServiceSettings) -> dict[str, Any]:
    """Form fields by name: files as ``{"bytes": ...}``, repeated names as lists, text as strings.
    Starlette's streaming parser (python-multipart) counts the parts as they arrive."""
    from starlette.datastructures import Headers, UploadFile
    from starlette.formparsers import MultiPartException, MultiPartParser

    files = max(settings.max_images, len(IMAGE_FIELDS["compare"]))
    parser = MultiPartParser(Headers({"content-type": content_type}), body, max_files=files, max_fields=MAX_FORM_FIELDS)
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        if str(exc).startswith("Too many files"):
            raise RequestError(
                413, f"more than {files} files in one request; this service takes at most {settings.max_images} images"
            ) from None
        if str(exc).startswith("Too many fields"):
            raise RequestError(
                400, f"more than {MAX_FORM_FIELDS} text fields: a request takes an endpoint's options, a few at most"
            ) from None
        raise RequestError(400, f"the multipart body could not be read ({exc})") from None
    fields: dict[str, Any] = {}
    for name, value in form.multi_items():
        field = {"bytes": await value.read()} if isinstance(value, UploadFile) else value
        if name == "images":
            fields.setdefault(name, []).append(field)
        else:
            fields[name] = field
    await form.close()
    return fields


def _images(task: str, fields: dict[str, Any], settings: ServiceSettings) -> list[bytes | Path]:
    if task in IMAGE_FIELDS:
        names = [n for n in IMAGE_FIELDS[task] if fields.get(n) is not None]
        missing = [n for n in IMAGE_FIELDS[task][:2] if n not in names]
        if missing:
            raise RequestError(400, f"/{task} needs {' and '.join(missing)}")
        return [_image(fields[n], n, settings) for n in names]
    given = fields.get("images")
    if not isinstance(given, list) or not given:
        raise RequestError(400, f"/{task} needs images: a non-empty list")
    if len(given) > settings.max_images:
        raise RequestError(413, f"{len(given)} images in one request; this service takes at most {settings.max_images}")
    return [_image(item, f"images[{i}]", settings) for i, item in enumerate(given)]


def _image(item: Any, name: str, settings: ServiceSettings) -> bytes | Path:
    if isinstance(item, dict) and isinstance(item.get("bytes"), bytes):
        return item["bytes"]
    if isinstance(item, dict) and isinstance(item.get("base64"), str):
        return _base64(item["base64"], name)
    if isinstance(item, dict) and isinstance(item.get("path"), str):
        return allowed_path(item["path"], name, settings)
    raise RequestError(400, f'{name}: an image is {{"base64": ...}} (or {{"path": ...}} where the server allows paths)')


def allowed_path(given: str, name: str, settings: ServiceSettings) -> Path:
    """A file inside ``allow_paths``, links resolved; anything else is refused (403)."""
    if settings.allow_paths is None:
        raise RequestError(403, f"{name}: this service reads no paths (send the image's bytes)")
    if "\x00" in given:
        raise RequestError(400, f"{name}: a path may not contain a NUL byte")
    root = os.path.realpath(settings.allow_paths)
    if ".." in Path(given).parts:
        raise RequestError(403, f"{name}: a path may not contain ..")
    resolved = os.path.realpath(os.path.join(root, given))
    if os.path.commonpath([resolved, root]) != root:
        raise RequestError(403, f"{name}: {given} is outside the folder this service may read")
    return Path(resolved)


def _options(task: str, fields: dict[str, Any]) -> dict[str, Any]:
    allowed = OPTIONS[task]
    given = {k: v for k, v in fields.items() if k != "images" and k not in IMAGE_FIELDS.get(task, ())}
    unknown = sorted(set(given) - set(allowed))
    if unknown:
        raise RequestError(
            400, f"/{task} takes no option {', '.join(unknown)} (it takes: {', '.join(allowed) or 'none'})"
        )
    return {name: _typed(name, value, allowed[name]) for name, value in given.items() if value is not None}


def _typed(name: str, value: Any, kind: type) -> Any:
    """A JSON value as it is, or a multipart field's text, as the option's type."""
    if isinstance(value, str) and kind is not str:
        text = value.strip().lower()
        if kind is bool and text in ("true", "false", "1", "0"):
            return text in ("true", "1")
        if kind is int and text.lstrip("-").isdigit():
            return int(text)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)  # JSON writes 16.0 as 16
    if kind is int and isinstance(value, bool) or not isinstance(value, kind):
        raise RequestError(400, f"option {name} must be a {kind.__name__}, got {value!r}")
    if kind is float and not 0 < value < float("inf"):
        raise RequestError(400, f"option {name} must be a positive number, got {value!r}")
    return value
