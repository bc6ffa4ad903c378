"""The judge as an HTTP service on Ray Serve: one loaded judge per replica, many clients batched together.

``POST /score``, ``/degradation``, ``/compare``, ``/rank``, ``/reward`` take images as bytes: a JSON body
``{"images": [{"base64": "..."}], "mode": "fast"}`` (compare: ``image_a``, ``image_b``, optional
``reference``), or ``multipart/form-data`` with file fields of the same names and options as fields.
``GET /health`` answers when the judge is loaded, without the token (for load balancers); ``GET /stats``
counts the batches of each size the replica formed.

Requests that arrive together are judged as one batch (Ray Serve's ``@serve.batch``: up to a maximum
size, waiting at most a set time), so many clients cost little more than one. A bad image is an error in
its own result, as everywhere in qinsight; a bad request is a 4xx with a message naming what is wrong:
401 without the bearer token (when one is set), 413 past the size limits, 403 for a path the server may
not read, 400 for anything else malformed, 404 for an unknown endpoint. The server reads no file a client
names unless started with ``allow_paths``, and then only inside that folder, links resolved.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import json
import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator, Mapping, Sequence

from .errors import UsageError


logger = logging.getLogger("qinsight")

TASKS = ("score", "degradation", "compare", "rank", "reward")
TOKEN_ENV_VAR = "QINSIGHT_TOKEN"
# options each task takes, with their types; anything else in a request is an error naming it
OPTIONS: dict[str, dict[str, type]] = {
    "score": {"mode": str}, "degradation": {}, "reward": {},
    "compare": {"both_orders": bool}, "rank": {"strategy": str, "top_k": int, "pool": int},
}
IMAGE_FIELDS = {"compare": ("image_a", "image_b", "reference")}   # the other tasks: "images", a list
MAX_FORM_FIELDS = 16   # text fields in a multipart request: options (three at most today), with room


@dataclass
class ServiceSettings:
    """What a service accepts. The defaults suit a judge on one machine's loopback."""

    token: str | None = None               # a bearer token every request must carry (None: none needed)
    max_request_bytes: int = 64 * 2**20    # a larger body is refused with 413 before it is read
    max_images: int = 64                   # images in one request
    allow_paths: str | None = None         # a folder whose files clients may name instead of sending bytes
    max_batch_size: int = 8                # requests judged together
    batch_wait_s: float = 0.05             # how long the first request of a batch waits for company

    def __post_init__(self) -> None:
        check_token_value(self.token, "the service's token")


def check_token_value(token: str | None, name: str) -> None:
    """Refuse a token no client could send: empty (an unset variable in a script, ``QINSIGHT_TOKEN=""``),
    or with spaces at its ends (HTTP strips them from the header, so every request would be refused)."""
    if token is not None and (not token or token != token.strip()):
        raise UsageError(f"{name} is {'empty' if not token.strip() else 'padded with spaces'}: give a token, "
                         f"or none (no {TOKEN_ENV_VAR}, no --token) for a service without one")


class RequestError(Exception):
    """A request the service refuses: an HTTP status and a message for the client."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class Call:
    """One request, checked: the task, its images (bytes, or a path inside ``allow_paths``), its options."""

    task: str
    images: list[bytes | Path]
    options: dict[str, Any] = field(default_factory=dict)


def check_token(headers: Mapping[str, str], settings: ServiceSettings) -> None:
    if settings.token is None:
        return
    given = headers.get("authorization", "")
    if not hmac.compare_digest(given.encode(), f"Bearer {settings.token}".encode()):
        raise RequestError(401, "this service needs its bearer token: Authorization: Bearer <token>")


def check_size(headers: Mapping[str, str], settings: ServiceSettings) -> None:
    """Refuse a body the headers say is too large, before reading it."""
    try:
        length = int(headers.get("content-length") or 0)
    except ValueError:
        raise RequestError(400, "Content-Length is not a number") from None
    if length > settings.max_request_bytes:
        raise RequestError(413, f"the request is {length} bytes; this service takes at most "
                                f"{settings.max_request_bytes}")


def check_task(task: str) -> None:
    if task not in TASKS:
        raise RequestError(404, f"no endpoint /{task}: use one of {', '.join('/' + t for t in TASKS)}")


async def read_call(task: str, request: Any, settings: ServiceSettings) -> Call:
    """The checked call an HTTP request makes (a Starlette ``Request``), or a ``RequestError`` saying what
    is wrong with it.

    The body is read as it arrives and refused at the first byte past the size limit; a multipart body is
    parsed as it arrives and refused at the first part past the limits (a body of 50,000 tiny parts is
    not read to its end); JSON, base64 and the checks run in a worker thread, so that a large body does
    not hold up the event loop, and with it every other request of the replica.
    """
    check_task(task)
    check_size(request.headers, settings)
    content_type = request.headers.get("content-type", "")
    body = _limited(request, settings.max_request_bytes)
    if content_type.startswith("multipart/form-data"):
        fields = await _multipart_fields(content_type, body, settings)
    elif content_type.startswith("application/json") or not content_type:
        fields = await asyncio.to_thread(_json_fields, b"".join([chunk async for chunk in body]))
    else:
        raise RequestError(400, f"send application/json or multipart/form-data, not {content_type}")
    return await asyncio.to_thread(_call, task, fields, settings)


def _call(task: str, fields: dict[str, Any], settings: ServiceSettings) -> Call:
    return Call(task, _images(task, fields, settings), _options(task, fields))


async def _limited(request: Any, limit: int) -> AsyncIterator[bytes]:
    """The body's chunks, refused (413) at the first byte over ``limit`` (a chunked upload says no size)."""
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestError(413, f"the request is over {limit} bytes, the most this service takes")
        yield chunk


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


async def _multipart_fields(content_type: str, body: AsyncIterator[bytes], settings: ServiceSettings
                            ) -> dict[str, Any]:
    """Form fields by name: files as ``{"bytes": ...}``, repeated names as lists, text as strings.
    Starlette's streaming parser (python-multipart) counts the parts as they arrive."""
    from starlette.datastructures import Headers, UploadFile
    from starlette.formparsers import MultiPartException, MultiPartParser

    files = max(settings.max_images, len(IMAGE_FIELDS["compare"]))
    parser = MultiPartParser(Headers({"content-type": content_type}), body, max_files=files,
                             max_fields=MAX_FORM_FIELDS)
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        if str(exc).startswith("Too many files"):
            raise RequestError(413, f"more than {files} files in one request; this service takes at most "
                                    f"{settings.max_images} images") from None
        if str(exc).startswith("Too many fields"):
            raise RequestError(400, f"more than {MAX_FORM_FIELDS} text fields: a request takes an endpoint's "
                                    "options, a few at most") from None
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
        raise RequestError(413, f"{len(given)} images in one request; this service takes at most "
                                f"{settings.max_images}")
    return [_image(item, f"images[{i}]", settings) for i, item in enumerate(given)]


def _image(item: Any, name: str, settings: ServiceSettings) -> bytes | Path:
    if isinstance(item, dict) and isinstance(item.get("bytes"), bytes):
        return item["bytes"]
    if isinstance(item, dict) and isinstance(item.get("base64"), str):
        try:
            return base64.b64decode(item["base64"], validate=True)
        except (binascii.Error, ValueError):
            raise RequestError(400, f"{name}: not valid base64") from None
    if isinstance(item, dict) and isinstance(item.get("path"), str):
        return allowed_path(item["path"], name, settings)
    raise RequestError(400, f"{name}: an image is {{\"base64\": ...}} (or {{\"path\": ...}} where the server "
                            "allows paths)")


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
        raise RequestError(400, f"/{task} takes no option {', '.join(unknown)} (it takes: "
                                f"{', '.join(allowed) or 'none'})")
    return {name: _typed(name, value, allowed[name]) for name, value in given.items() if value is not None}


def _typed(name: str, value: Any, kind: type) -> Any:
    """A JSON value as it is, or a multipart field's text, as the option's type."""
    if isinstance(value, str) and kind is not str:
        text = value.strip().lower()
        if kind is bool and text in ("true", "false", "1", "0"):
            return text in ("true", "1")
        if kind is int and text.lstrip("-").isdigit():
            return int(text)
    if kind is int and isinstance(value, bool) or not isinstance(value, kind):
        raise RequestError(400, f"option {name} must be a {kind.__name__}, got {value!r}")
    return value


# -- judging ------------------------------------------------------------------------------------------

def judge_calls(judge: Any, calls: Sequence[Call]) -> list[dict[str, Any]]:
    """The answers to calls judged together: the images of all score, degradation and reward calls with
    the same options in one judge call each, all comparison pairs with the same options in one
    ``compare_pairs``; a ranking is its own.
    A call whose options the judge refuses gets its error; the others are judged."""
    answers: list[dict[str, Any] | None] = [None] * len(calls)
    groups: dict[tuple[str, str, int], list[int]] = {}
    for index, call in enumerate(calls):   # together: the same task with the same options, but not rankings
        options = json.dumps(call.options, sort_keys=True)
        groups.setdefault((call.task, options, index if call.task == "rank" else -1), []).append(index)
    for indices in groups.values():
        chosen = [calls[i] for i in indices]
        try:
            for i, answer in zip(indices, _judge_group(judge, chosen)):
                answers[i] = answer
        except ValueError as exc:   # a UsageError: options the judge refuses (a top_k of 0, say)
            for i in indices:
                answers[i] = {"error": str(exc), "status": 400}
    return answers   # type: ignore[return-value]


def _judge_group(judge: Any, calls: Sequence[Call]) -> list[dict[str, Any]]:
    task, options = calls[0].task, calls[0].options
    if task == "rank":
        return [{"ranking": judge.rank(calls[0].images, **options).to_dict()}]
    if task == "compare":
        pairs = [tuple(call.images) for call in calls]
        results = judge.compare_pairs(pairs, both_orders=options.get("both_orders", False))
        return [{"result": result.to_dict()} for result in results]
    flat = [image for call in calls for image in call.images]
    if task == "reward":
        values = [float(v) for v in judge.reward(flat)]
        return _split(calls, values, "rewards")
    method = judge.score if task == "score" else judge.degradation
    results = method(flat, **({"mode": options["mode"]} if "mode" in options else {}))
    return _split(calls, [r.to_dict() for r in results], "results")


def _split(calls: Sequence[Call], values: list[Any], key: str) -> list[dict[str, Any]]:
    answers, start = [], 0
    for call in calls:
        answers.append({key: values[start:start + len(call.images)]})
        start += len(call.images)
    return answers


# -- on Ray Serve ---------------------------------------------------------------------------------------

def build_app(judge_options: dict[str, Any], settings: ServiceSettings, replicas: int = 1,
              gpus_per_replica: float = 0.0, cpus_per_replica: float = 1.0) -> Any:
    """The Ray Serve application: ``replicas`` copies of the judge, each batching its own requests.

    ``judge_options`` are ``QualityJudge.from_pretrained``'s arguments; each replica loads the judge once.
    Ray places the replicas on the cluster's GPUs (``gpus_per_replica``, fractions allowed) or CPUs.
    """
    from ray import serve

    @serve.deployment(num_replicas=replicas, max_ongoing_requests=4 * settings.max_batch_size,
                      ray_actor_options={"num_gpus": gpus_per_replica, "num_cpus": cpus_per_replica})
    class JudgeService:
        def __init__(self) -> None:
            from qinsight_sdk.judge import QualityJudge

            self.judge = QualityJudge.from_pretrained(**judge_options)
            # how many batches of each size this replica formed: one entry per size, not per batch,
            # so a long-running service's /stats stays small
            self.batch_sizes: Counter[int] = Counter()
            self.judged.set_max_batch_size(settings.max_batch_size)
            self.judged.set_batch_wait_timeout_s(settings.batch_wait_s)

        async def __call__(self, request: Any) -> Any:
            return await respond(self, request, settings)

        @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.05)   # set from settings in __init__
        async def judged(self, calls: list[Call]) -> list[dict[str, Any]]:
            self.batch_sizes[len(calls)] += 1
            return await asyncio.get_running_loop().run_in_executor(None, judge_calls, self.judge, calls)

    return JudgeService.bind()


async def respond(service: Any, request: Any, settings: ServiceSettings) -> Any:
    """One HTTP request (a Starlette ``Request``) answered: refused with a 4xx, or judged in a batch."""
    from starlette.responses import JSONResponse

    task = request.url.path[1:]   # routed exactly: /score, not /x/score or /score/
    if request.method == "GET" and task == "health":   # for load balancers, which carry no token; says nothing
        return JSONResponse({"status": "ok"})
    try:
        check_token(request.headers, settings)
        if request.method == "GET" and task == "stats":
            counts = {str(size): count for size, count in sorted(service.batch_sizes.items())}
            return JSONResponse({"batch_sizes": counts})
        check_task(task)
        if request.method != "POST":
            raise RequestError(405, f"{request.method} /{task}: judging endpoints take POST")
        call = await read_call(task, request, settings)
    except RequestError as exc:
        return JSONResponse({"error": exc.message}, status_code=exc.status)
    try:
        answer = await service.judged(call)
    except Exception as exc:  # noqa: BLE001 - a fault of ours, not the request's: said, and the service goes on
        logger.exception("judging a /%s request failed", task)
        return JSONResponse({"error": f"the judge failed on this request ({type(exc).__name__}: {exc})"},
                            status_code=500)
    return JSONResponse(answer, status_code=answer.pop("status", 200))
