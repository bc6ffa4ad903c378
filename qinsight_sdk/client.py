"""``RemoteJudge``: a ``qinsight serve`` service used like a ``QualityJudge``, from any environment.

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
"""

from __future__ import annotations

import base64
import io
import json
import os
import urllib.error
import urllib.request
from typing import Any, Sequence

from .errors import QInsightError
from .results import result_from
from .service import check_token_value

Image = Any   # a path, bytes, a PIL image or a numpy array


class RemoteError(QInsightError):
    """The service refused a request or could not be reached; ``status`` is the HTTP status (0: none)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{message} (HTTP {status})" if status else message)
        self.status = status


class RemoteJudge:
    """The methods of ``QualityJudge`` that judge images, answered by a service at ``url``."""

    def __init__(self, url: str, token: str | None = None, timeout: float = 600.0) -> None:
        check_token_value(token, "RemoteJudge's token")
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout

    def score(self, images: Image | Sequence[Image], mode: str = "reason") -> Any:
        return self._each("score", images, {"mode": mode})

    def degradation(self, images: Image | Sequence[Image]) -> Any:
        return self._each("degradation", images, {})

    def compare(self, image_a: Image, image_b: Image, reference: Image | None = None,
                both_orders: bool = False) -> Any:
        body = {"image_a": _encoded(image_a), "image_b": _encoded(image_b), "both_orders": both_orders}
        if reference is not None:
            body["reference"] = _encoded(reference)
        return result_from("comparison", self._post("compare", body)["result"])

    def rank(self, images: Sequence[Image], strategy: str = "score", top_k: int | None = None,
             pool: int | None = None) -> Any:
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

    def health(self) -> bool:
        return self._request("GET", "health").get("status") == "ok"

    def _each(self, task: str, images: Any, options: dict[str, Any]) -> Any:
        single = not isinstance(images, (list, tuple))
        batch = [images] if single else list(images)
        answer = self._post(task, {"images": [_encoded(i) for i in batch], **options})
        results = [result_from(task, values) for values in answer["results"]]
        return results[0] if single else results

    def _post(self, task: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._request("POST", task, json.dumps(body).encode())

    def _request(self, method: str, task: str, data: bytes | None = None) -> dict[str, Any]:
        headers = {"Content-Type": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        request = urllib.request.Request(f"{self.url}/{task}", data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            raise RemoteError(exc.code, _message(exc.read())) from None
        except (urllib.error.URLError, OSError) as exc:
            raise RemoteError(0, f"cannot reach the judge service at {self.url}: {exc}") from None


def _message(body: bytes) -> str:
    try:
        return str(json.loads(body)["error"])
    except (ValueError, KeyError, TypeError):
        return body.decode("utf-8", "replace")[:500]


def _encoded(image: Image) -> dict[str, str]:
    return {"base64": base64.b64encode(_image_bytes(image)).decode("ascii")}


def _image_bytes(image: Image) -> bytes:
    if isinstance(image, (bytes, bytearray)):
        return bytes(image)
    if isinstance(image, (str, os.PathLike)):
        with open(image, "rb") as handle:
            return handle.read()
    if hasattr(image, "detach"):          # a torch tensor, CHW or HWC, in 0..1
        pixels = image.detach().float().cpu().clamp(0, 1).mul(255).round().byte()
        if pixels.ndim == 3 and pixels.shape[0] in (1, 3) and pixels.shape[-1] not in (1, 3):
            pixels = pixels.permute(1, 2, 0)
        return _image_bytes(pixels.squeeze(-1).numpy() if pixels.shape[-1] == 1 else pixels.numpy())
    if hasattr(image, "save"):            # a PIL image
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        return buffer.getvalue()
    if hasattr(image, "__array__"):       # a numpy array (HWC, uint8)
        from PIL import Image as PILImage

        return _image_bytes(PILImage.fromarray(image))
    raise TypeError(f"RemoteJudge sends images as bytes: give a path, bytes, a PIL image, an array or a tensor, "
                    f"not {type(image).__name__}")
