"""What a service accepts and how long it waits: every limit in one place, checked when the service starts."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import UsageError

TOKEN_ENV_VAR = "QINSIGHT_TOKEN"


@dataclass
class ServiceSettings:
    """What a service accepts. The defaults suit a judge on one machine's loopback.

    Every request's cost is bounded: its body (``max_request_bytes``, read within ``body_timeout_s``),
    its images (``max_images``, each at most ``max_image_pixels`` and all together ``max_request_pixels``,
    read from their headers before anything is decoded), a ranking's ``pool`` (``max_pool``), and its
    time (``request_timeout_s``, after which its judging stops and it gets 504). The bodies a replica holds
    at once are bounded too (``max_inflight_bytes``): past it, a request gets 503 with ``Retry-After``.
    """

    token: str | None = None  # a bearer token every request must carry (None: none needed)
    max_request_bytes: int = 64 * 2**20  # a larger body is refused with 413 before it is read
    max_images: int = 64  # images in one request (videos, for /compute)
    max_video_frames: int = 1024  # frames of one video sent as images (/compute); Wan's 81, with room
    allow_paths: str | None = None  # a folder whose files clients may name instead of sending bytes
    max_batch_size: int = 8  # requests judged together
    batch_wait_s: float = 0.05  # how long the first request of a batch waits for company
    max_image_pixels: int = 50_000_000  # width x height of one image (a 50 MP photo; the judge resizes)
    max_request_pixels: int = 400_000_000  # of all the images in one request
    max_pool: int = 8  # a hybrid ranking's finalists: pool x (pool - 1) comparisons
    body_timeout_s: float = 30.0  # the whole body must arrive within this (a slow upload is 408)
    request_timeout_s: float = 300.0  # judging stops after this, and the request gets 504
    max_inflight_bytes: int = 256 * 2**20  # request bodies held at once, all requests together
    keep_alive_s: float = 5.0  # an idle HTTP connection is closed after this
    drain_s: float = 30.0  # on SIGTERM, how long requests in flight may take to finish

    def __post_init__(self) -> None:
        check_token_value(self.token, "the service's token")
        if self.max_inflight_bytes < self.max_request_bytes:
            raise UsageError(
                f"the bytes held at once ({self.max_inflight_bytes}) must be at least one request's "
                f"({self.max_request_bytes})"
            )


def check_token_value(token: str | None, name: str) -> None:
    """Refuse a token no client could send: empty (an unset variable in a script, ``QINSIGHT_TOKEN=""``),
    or with spaces at its ends (HTTP strips them from the header, so every request would be refused)."""
    if token is not None and (not token or token != token.strip()):
        raise UsageError(
            f"{name} is {'empty' if not token.strip() else 'padded with spaces'}: give a token, "
            f"or none (no {TOKEN_ENV_VAR}, no --token) for a service without one"
        )


class RequestError(Exception):
    """A request the service refuses: an HTTP status and a message for the client; ``retry_after`` (seconds)
    where trying again later will work (503)."""

    def __init__(self, status: int, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.retry_after = retry_after


@dataclass
class Call:
    """One request, checked: the task, its images (bytes, a path inside ``allow_paths``, or a video's frames),
    its options.
    ``cancelled`` is set on the replica when the client went away or the deadline passed."""

    task: str
    images: list[bytes | Path | list[bytes]]  # a list of bytes: a video's frames, each an image (/compute)
    options: dict[str, Any] = field(default_factory=dict)
    cancelled: bool = field(default=False, compare=False)
