"""Test doubles of the service's tests: requests read as the gateway reads them, and a scripted HTTP
server on loopback for the clients."""

import asyncio
import base64
import http.server
import io
import json
import threading

import pytest

from qinsight_sdk.service import Call, RequestError, ServiceSettings, read_call
from qinsight_sdk.testing import brightness_image


def png(level: float = 0.5, seed: int = 0) -> bytes:
    buffer = io.BytesIO()
    brightness_image(level, seed).save(buffer, format="PNG")
    return buffer.getvalue()


def b64(data: bytes) -> dict:
    return {"base64": base64.b64encode(data).decode()}


def parse_call(task: str, content_type: str, body: bytes, settings: ServiceSettings) -> Call:
    """The call a request with this body makes, read as the service reads it (in 64 KiB chunks)."""
    request = FakeRequest("/" + task, body=body, chunk=65536, content_type=content_type)
    return asyncio.run(read_call(task, request, settings))


def refused(status: int, message: str, task: str, body, settings=ServiceSettings(), content_type="application/json"):  # noqa: B008
    """The request is refused with this status and exactly this message (a prefix, where it ends in ...)."""
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    with pytest.raises(RequestError) as caught:
        parse_call(task, content_type, raw, settings)
    assert caught.value.status == status
    if message.endswith("..."):
        assert caught.value.message.startswith(message[:-3]), caught.value.message
    else:
        assert caught.value.message == message, caught.value.message
    assert str(caught.value) == caught.value.message


class FakeRequest:
    """What the gateway reads of a Starlette request; ``pause`` seconds before each chunk of the body."""

    def __init__(
        self, path, method="POST", body=b"", headers=None, chunk=4, content_type="application/json", pause=0.0
    ):
        self.url = type("URL", (), {"path": path})()
        self.method, self.body, self.chunk, self.pause = method, body, chunk, pause
        self.headers = {**({"content-type": content_type} if content_type else {}), **(headers or {})}

    async def stream(self):
        self.read = 0
        for start in range(0, len(self.body), self.chunk):
            await asyncio.sleep(self.pause)
            self.read += len(self.body[start : start + self.chunk])
            yield self.body[start : start + self.chunk]


class ScriptedServer:
    """An HTTP server on 127.0.0.1 answering each POST with the next reply: ``(status, headers)``, "drop" (the
    connection closed unanswered) or ("slow", seconds); the requests it got counted. GETs are answered
    from ``replies_get``: ``(status, JSON body)``."""

    def __init__(self, replies):

        self.replies, self.requests, self.replies_get = list(replies), 0, []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                self.rfile.read(int(self.headers["Content-Length"]))
                server.requests += 1
                reply = server.replies.pop(0)
                if reply == "drop":
                    self.close_connection = True
                    return
                if reply[0] == "slow":
                    threading.Event().wait(reply[1])
                    reply = (200, {})
                status, headers = reply
                body = json.dumps({"rewards": [0.25]} if status == 200 else {"error": f"said {status}"}).encode()
                self.send_response(status)
                for name, value in {**headers, "Content-Length": str(len(body))}.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                status, body = server.replies_get.pop(0)
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.http = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.http.handle_error = lambda request, address: None  # a client that gave up: nothing to report
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}"
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.http.shutdown()
        self.http.server_close()
