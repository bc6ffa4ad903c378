"""``qinsight serve`` as the process a user runs: every port it opens (Ray's own included) on loopback, and a
SIGTERM under load that lets the requests in flight finish, exits 0 and leaves no Ray process behind."""

import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid

import psutil
import pytest
from comfyui_server import free_port
from PIL import Image

from qinsight_sdk.testing import brightness_image

pytestmark = pytest.mark.ray
TOKEN = "lifecycle-token"
LOOPBACK = ("127.0.0.1", "::1", "::ffff:127.0.0.1")


def processes_of(marker: str) -> list[psutil.Process]:
    """The processes started with this marker in their environment: the service and every Ray process it
    started (they inherit the environment)."""
    found = []
    for process in psutil.process_iter():
        try:
            if process.environ().get("QINSIGHT_SERVE_TEST") == marker:
                found.append(process)
        except (psutil.AccessDenied, psutil.NoSuchProcess, psutil.ZombieProcess):
            pass
    return found


def listening(processes: list[psutil.Process]) -> set[tuple[str, int, str]]:
    """(address, port, process name) of each listening socket of these processes."""
    sockets = set()
    for process in processes:
        try:
            sockets |= {
                (c.laddr.ip, c.laddr.port, process.name())
                for c in process.net_connections(kind="inet")
                if c.status == psutil.CONN_LISTEN
            }
        except (psutil.AccessDenied, psutil.NoSuchProcess, psutil.ZombieProcess):
            pass
    return sockets


def request(url: str, path: str, body: dict | None = None, timeout: float = 60) -> tuple[int, dict]:
    data = json.dumps(body).encode() if body is not None else None
    asked = urllib.request.Request(
        f"{url}/{path}",
        data=data,
        method="POST" if data else "GET",
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(asked, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def busy_request() -> dict:
    """Sixteen 448-px images, reasoned: seconds of the tiny judge's time when eight arrive together."""
    images = []
    for level in range(16):
        buffer = io.BytesIO()
        brightness_image(level / 15, level).resize((448, 448), Image.NEAREST).save(buffer, format="PNG")
        images.append({"base64": __import__("base64").b64encode(buffer.getvalue()).decode()})
    return {"images": images}


def test_serve_listens_on_loopback_only_and_drains_on_sigterm(tiny_judge_model, tmp_path):
    pytest.importorskip("ray.serve", reason="the [ray] extra is not installed")
    marker, port = uuid.uuid4().hex, free_port()
    url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")}
    env.update(QINSIGHT_SERVE_TEST=marker, QINSIGHT_TOKEN=TOKEN, HF_HUB_OFFLINE="1")
    log = open(tmp_path / "serve.log", "w")
    service = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "qinsight_sdk",
            "serve",
            "--model",
            str(tiny_judge_model),
            "--device",
            "cpu",
            "--port",
            str(port),
            "--drain-s",
            "60",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and service.poll() is None:
            try:
                if request(url, "health", timeout=5) == (200, {"status": "ok"}):
                    break
            except (urllib.error.URLError, OSError, ValueError):  # not up yet; Serve's own 404 is plain text
                pass
            time.sleep(1)
        else:
            pytest.fail(f"the service did not start: {(tmp_path / 'serve.log').read_text()[-3000:]}")
        # every port of the service, Ray's own included, on loopback: its HTTP port, Ray's metrics endpoints
        # (the autoscaler's 44217, the dashboard's 44227), its GCS, raylets, workers. The one exception is Ray
        # Serve's: each replica's inter-deployment gRPC server is bound to [::]:0 in Ray's own code (README:
        # "Connecting from another machine" says what to do about it)
        ports = listening(processes_of(marker))
        on_loopback = {port for ip, port, _ in ports if ip in LOOPBACK}
        assert {port, 44217, 44227} <= on_loopback and len(on_loopback) > 5, ports
        assert all(name.startswith("ray::ServeReplica") for ip, _, name in ports if ip not in LOOPBACK), ports

        # SIGTERM while eight requests are being judged: each is answered, then the process exits 0
        body, answers = busy_request(), []
        asking = [
            threading.Thread(target=lambda: answers.append(request(url, "score", body, timeout=120))) for _ in range(8)
        ]
        for thread in asking:
            thread.start()
        time.sleep(1.5)
        service.send_signal(signal.SIGTERM)
        for thread in asking:
            thread.join(timeout=150)
        assert [status for status, _ in answers] == [200] * 8, answers
        assert all(len(answer["results"]) == 16 for _, answer in answers)
        assert service.wait(timeout=120) == 0, (tmp_path / "serve.log").read_text()[-3000:]
        left = time.monotonic() + 10
        while processes_of(marker) and time.monotonic() < left:
            time.sleep(0.5)
        assert [p.name() for p in processes_of(marker)] == []  # no Ray process outlives it
        said = (tmp_path / "serve.log").read_text()
        assert "serve: stopping: requests in flight have 60 s to finish" in said and "Traceback" not in said
    finally:
        if service.poll() is None:
            service.kill()
        for process in processes_of(marker):
            process.kill()
        log.close()
