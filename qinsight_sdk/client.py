"""``RemoteJudge``: a ``qinsight serve`` service used like a ``QualityJudge``, from any environment;
``RemoteReward``: the same service as a generator's reward, in RL trainers' convention (over JSON, no pickle).

Standard library only (no torch, transformers or Pillow needed), so a trainer whose environment pins
other versions can use the judge as a reward:

    from qinsight_sdk.client import RemoteJudge
    judge = RemoteJudge("http://127.0.0.1:8000", token=os.environ.get("QINSIGHT_TOKEN"))
    rewards = judge.reward(["a.png", "b.png"])        # a tensor when torch is importable, else floats

Images are sent as bytes: a path is read here, ``bytes`` are sent as they are, and a PIL image, a
numpy array (HWC, uint8) or a torch tensor (CHW or HWC, 0..1; a batch is iterated) is encoded as PNG
(needing Pillow, where those came from anyway). Results are the SDK's own
types; an image the service could not judge has its ``error``, as with a local judge. A refused request
raises ``RemoteError`` with the service's message and HTTP status.

Every request is safe to repeat, so a request the service could not answer for a while (it could not be
reached, its connection broke, or it answered 502 or 503: full, stopping, or a judge replica died) is sent
again, ``retries`` times at most, after ``backoff_s``, then twice that, and so on (or the ``Retry-After`` the
service asked for); anything else is raised at once. ``timeout`` bounds each attempt: the time to connect and
then between two reads of the answer (so a request the service judges for longer than ``timeout`` fails,
and is not repeated: the service's own deadline, 300 s by default, is the one to set).
"""

from __future__ import annotations

import base64
import http.client
import io
import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import Any

from .errors import QInsightError
from .judging.results import result_from
from .service import check_token_value

Image = Any  # a path, bytes, a PIL image or a numpy array


class RemoteError(QInsightError):
    """The service refused a request or could not be reached; ``status`` is the HTTP status (0: none)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{message} (HTTP {status})" if status else message)
        self.status = status


class ServiceConnection:
    """A ``qinsight serve`` service's address and how to talk to it: the bearer token, each attempt's
    timeout, and the bounded retries of requests it could not answer for a while (the module's docstring)."""

    def __init__(
        self, url: str, token: str | None = None, timeout: float = 600.0, retries: int = 3, backoff_s: float = 0.5
    ) -> None:
        """
        Args:
            url: the service, ``http://host:port``.
            token: its bearer token, if it has one.
            timeout: seconds each attempt may wait to connect, and then between two reads of the answer.
            retries: how many times a request the service could not answer for a while is sent again.
            backoff_s: the first wait before sending it again; each further wait doubles.
        """
        check_token_value(token, f"{type(self).__name__}'s token")
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout
        self.retries = retries
        self.backoff_s = backoff_s

    def health(self) -> bool:
        """True when the service answers that a judge replica is up; False while it starts or stops, or
        when it cannot be reached. Asked once: a health check reports, it does not wait."""
        try:
            return self._attempt("GET", "health", None).get("status") == "ok"
        except (RemoteError, _Unanswered):
            return False

    def _post(self, task: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._request("POST", task, json.dumps(body).encode())

    def _request(self, method: str, task: str, data: bytes | None = None) -> dict[str, Any]:
        for attempt in range(self.retries):
            try:
                return self._attempt(method, task, data)
            except _Unanswered as exc:
                time.sleep(exc.retry_after if exc.retry_after is not None else self.backoff_s * 2**attempt)
        try:
            return self._attempt(method, task, data)
        except _Unanswered as exc:  # retries spent: what the last attempt met
            raise exc.error from None

    def _attempt(self, method: str, task: str, data: bytes | None) -> dict[str, Any]:
        headers = {"Content-Type": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        request = urllib.request.Request(f"{self.url}/{task}", data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            error = RemoteError(exc.code, _message(exc.read()))
            if exc.code in RETRIED_STATUSES:
                raise _Unanswered(error, _retry_after(exc.headers.get("Retry-After"))) from None
            raise error from None
        except TimeoutError as exc:  # the service is slow, not gone: sending it again doubles its work
            raise RemoteError(
                0, f"no answer from the judge service at {self.url} within {self.timeout:g} s ({exc})"
            ) from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            raise _Unanswered(RemoteError(0, f"cannot reach the judge service at {self.url}: {exc}")) from None


class RemoteJudge(ServiceConnection):
    """The methods of ``QualityJudge`` that judge images, answered by a service at ``url``."""

    def score(self, images: Image | Sequence[Image], mode: str | None = None) -> Any:
        """Scores as ``QualityJudge.score`` gives them; ``mode`` None: the served judge's default."""
        return self._each("score", images, {} if mode is None else {"mode": mode})

    def degradation(self, images: Image | Sequence[Image]) -> Any:
        return self._each("degradation", images, {})

    def compare(self, image_a: Image, image_b: Image, reference: Image | None = None, both_orders: bool = False) -> Any:
        body = {"image_a": _encoded(image_a), "image_b": _encoded(image_b), "both_orders": both_orders}
        if reference is not None:
            body["reference"] = _encoded(reference)
        return result_from("comparison", self._post("compare", body)["result"])

    def rank(
        self, images: Sequence[Image], strategy: str = "score", top_k: int | None = None, pool: int | None = None
    ) -> Any:
        options = {k: v for k, v in {"strategy": strategy, "top_k": top_k, "pool": pool}.items() if v is not None}
        answer = self._post("rank", {"images": [_encoded(i) for i in images], **options})
        return result_from("rank", answer["ranking"])

    def reward(self, images: Sequence[Image]) -> Any:
        """Rewards in [0, 1], one per image: a float32 tensor when torch is importable, else a list.
        A batch tensor ``(B, C, H, W)`` or ``(B, H, W, C)`` in 0..1 is taken as it is."""
        values = self._post("reward", {"images": [_encoded(i) for i in images]})["rewards"]
        try:
            import torch
        except ImportError:
            return values
        return torch.tensor(values, dtype=torch.float32)

    def _each(self, task: str, images: Any, options: dict[str, Any]) -> Any:
        single = not isinstance(images, (list, tuple))
        batch = [images] if single else list(images)
        answer = self._post(task, {"images": [_encoded(i) for i in batch], **options})
        results = [result_from(task, values) for values in answer["results"]]
        return results[0] if single else results


class RemoteReward(ServiceConnection):
    """A served judge as a generator's reward, over JSON both ways: the few lines that replace a pickle
    reward server's client (Flow-GRPO's, DDPO's). It sends Flow-Factory's ``/compute`` request (base64 PNG
    images, or each video's frames as base64 PNGs), so it also talks to Flow-Factory reward servers.

        reward_fn = RemoteReward("http://127.0.0.1:8000", token=os.environ["QINSIGHT_TOKEN"])
        rewards, info = reward_fn(images, prompts, metadata)   # Flow-GRPO's, DiffusionNFT's, DDPO's convention

    An input the service could not judge gets reward 0.0 and its error in ``info["errors"]``; it is never
    a failed request to repeat. Frames are sent losslessly (PNG): a judge of quality must not see JPEG's.
    """

    def __init__(
        self,
        url: str,
        token: str | None = None,
        timeout: float = 120.0,
        retries: int = 3,
        backoff_s: float = 0.5,
        batch_size: int = 16,
        fps: float | None = None,
    ) -> None:
        """
        Args:
            url: the service, ``http://host:port``.
            token: its bearer token, if it has one.
            timeout: seconds each attempt may wait to connect, and then between two reads of the answer.
            retries: how many times a request the service could not answer for a while is sent again.
            backoff_s: the first wait before sending it again; each further wait doubles.
            batch_size: images or videos per request (the service takes 64 at most, by default).
            fps: the frame rate of videos sent as frames (default: the service's assumption).
        """
        super().__init__(url, token, timeout, retries, backoff_s)
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, not {batch_size}")
        self.batch_size = batch_size
        self.fps = fps

    def compute(self, samples: Any) -> dict[str, list[Any]]:
        """The service's verdict on each input, ``batch_size`` inputs per request.

        Args:
            samples: images (a ``(B, C, H, W)`` or ``(B, H, W, C)`` batch, or a list of images: paths, bytes,
                PIL images, arrays, tensors) or videos (a ``(B, T, C, H, W)`` batch, or a list of frame lists
                or ``(T, C, H, W)`` arrays or tensors).

        Returns:
            ``rewards``, ``scores`` and ``errors``, one per input.
        """
        items = list(samples)
        video = getattr(samples, "ndim", None) == 5 or any(_is_video(item) for item in items)
        answer: dict[str, list[Any]] = {"rewards": [], "scores": [], "errors": []}
        for start in range(0, len(items), self.batch_size):
            chunk = items[start : start + self.batch_size]
            media = [[_base64(frame) for frame in item] for item in chunk] if video else [_base64(i) for i in chunk]
            body: dict[str, Any] = {"video" if video else "image": media}
            if self.fps is not None:
                body["fps"] = self.fps
            reply = self._post("compute", body)
            for key in answer:
                answer[key].extend(reply.get(key) or [None] * len(chunk))
        return answer

    def __call__(self, images: Any, prompts: Any = None, metadata: Any = None, **options: Any) -> tuple[Any, dict]:
        """Flow-GRPO's, DiffusionNFT's and DDPO's convention: ``(rewards, info)``, the rewards a float32
        numpy array where numpy is importable (else a list), the info the scores and errors.

        Args:
            images: the batch, as :meth:`compute` takes it.
            prompts: the prompts (taken for the convention; judges rate quality without them).
            metadata: per-prompt metadata (likewise).
            **options: Flow-GRPO's ``only_strict`` (taken; nothing else is).
        """
        unknown = sorted(set(options) - {"only_strict"})
        if unknown:
            raise TypeError(f"RemoteReward takes no option {', '.join(unknown)}")
        answer = self.compute(images)
        rewards = answer.pop("rewards")
        try:
            import numpy as np
        except ImportError:
            return rewards, answer
        return np.asarray(rewards, dtype=np.float32), answer


def _is_video(item: Any) -> bool:
    """A list of frames, or a 4-D array or tensor of them."""
    return isinstance(item, (list, tuple)) or getattr(item, "ndim", None) == 4


def _base64(image: Image) -> str:
    return base64.b64encode(_image_bytes(image)).decode("ascii")


RETRIED_STATUSES = (502, 503)
MAX_RETRY_AFTER_S = 30.0  # a longer wait asked for is cut to this: the caller's loop should not hang


class _Unanswered(Exception):
    """An attempt the service could not answer for a while; ``error`` is raised when retries run out."""

    def __init__(self, error: RemoteError, retry_after: float | None = None) -> None:
        self.error = error
        self.retry_after = retry_after


def _retry_after(value: str | None) -> float | None:
    """A ``Retry-After`` of seconds (the service sends no dates), bounded; ``None`` if absent or unreadable."""
    try:
        seconds = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return min(seconds, MAX_RETRY_AFTER_S) if seconds >= 0 else None  # NaN and negatives: none given


def _message(body: bytes) -> str:
    try:
        return str(json.loads(body)["error"])
    except (ValueError, KeyError, TypeError):
        return body.decode("utf-8", "replace")[:500]


def _encoded(image: Image) -> dict[str, str]:
    return {"base64": _base64(image)}


def _image_bytes(image: Image) -> bytes:
    if isinstance(image, (bytes, bytearray)):
        return bytes(image)
    if isinstance(image, (str, os.PathLike)):
        with open(image, "rb") as handle:
            return handle.read()
    if hasattr(image, "detach"):  # a torch tensor, CHW or HWC, in 0..1
        pixels = image.detach().float().cpu().clamp(0, 1).mul(255).round().byte()
        if pixels.ndim == 3 and pixels.shape[0] in (1, 3) and pixels.shape[-1] not in (1, 3):
            pixels = pixels.permute(1, 2, 0)
        return _image_bytes(pixels.squeeze(-1).numpy() if pixels.shape[-1] == 1 else pixels.numpy())
    if hasattr(image, "save"):  # a PIL image
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        return buffer.getvalue()
    if hasattr(image, "__array__"):  # a numpy array (HWC, uint8)
        from PIL import Image as PILImage

        return _image_bytes(PILImage.fromarray(image))
    raise TypeError(
        f"RemoteJudge sends images as bytes: give a path, bytes, a PIL image, an array or a tensor, "
        f"not {type(image).__name__}"
    )
