"""The judge service under load, and beside attackers: throughput and latency as clients grow.

    python bench/service_load.py                          # the trained tiny judge, one replica, this machine
    python bench/service_load.py --clients 1,16,64 --seconds 5 --idle 5000 --slow 40

Prints, all measured in this run against one service on loopback (fast mode, 56-px noise images):
- a table of clients (1..64) x images per request (1 and 8): requests/s, images/s, p50 and p99 latency,
  each client sending its next request when the last is answered, over one persistent connection;
- the throughput of 64 one-image clients as a ratio of 16's (where a limit on requests per replica once
  left the replica idle in gaps, this fell to 11-13%);
- one legitimate client's latency alone, then beside ``--slow`` uploads that send a byte every 3 s (and
  reconnect when cut off) and ``--idle`` connections that send nothing at all.
"""

from __future__ import annotations

import base64
import http.client
import io
import json
import resource
import socket
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from common import make_images, script_parser

from qinsight_sdk.testing import cached_tiny_judge

PORT = 8797


def parse_args(argv: list[str] | None = None) -> Any:
    parser = script_parser(__doc__)
    parser.add_argument("--clients", default="1,4,16,32,48,64", help="comma-separated client counts")
    parser.add_argument("--seconds", type=float, default=6.0, help="measured time per cell of the table")
    parser.add_argument("--slow", type=int, default=40, help="slow-upload attackers")
    parser.add_argument("--idle", type=int, default=5000, help="idle connections")
    parser.add_argument(
        "--attack-seconds",
        type=float,
        default=40.0,
        help="how long the legitimate client is measured beside the attackers (past the 30 s "
        "body deadline, so that cut-off uploads reconnect)",
    )
    parser.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "qinsight-bench-cache"))
    return parser.parse_args(argv)


def request_body(images: list[bytes]) -> bytes:
    return json.dumps({"images": [{"base64": base64.b64encode(i).decode()} for i in images], "mode": "fast"}).encode()


def ask(connection: http.client.HTTPConnection, body: bytes) -> int:
    connection.request("POST", "/score", body, {"Content-Type": "application/json"})
    response = connection.getresponse()
    response.read()
    return response.status


def load(clients: int, body: bytes, seconds: float) -> tuple[int, int, list[float]]:
    """(answered, failed, latencies) of ``clients`` sending requests back to back for ``seconds``."""
    latencies: list[float] = []
    failed = [0]
    stop = time.monotonic() + seconds

    def client() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", PORT, timeout=120)
        while time.monotonic() < stop:
            started = time.monotonic()
            try:
                status = ask(connection, body)
            except (OSError, http.client.HTTPException):
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", PORT, timeout=120)
                status = 0
            if status == 200:
                latencies.append(time.monotonic() - started)
            else:
                failed[0] += 1
        connection.close()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return len(latencies), failed[0], latencies


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else float("nan")


def table(images: list[bytes], counts: list[int], seconds: float) -> dict[tuple[int, int], float]:
    print("| clients | images/request | requests/s | images/s | p50 ms | p99 ms | failed |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    throughput = {}
    for per_request in (1, 8):
        body = request_body(images[:per_request])
        for clients in counts:
            load(clients, body, min(1.0, seconds))  # warm: connections, the batch queue
            answered, failed, latencies = load(clients, body, seconds)
            throughput[clients, per_request] = answered / seconds
            print(
                f"| {clients} | {per_request} | {answered / seconds:.1f} | {answered * per_request / seconds:.1f} | "
                f"{percentile(latencies, 0.5) * 1000:.0f} | {percentile(latencies, 0.99) * 1000:.0f} | {failed} |",
                flush=True,
            )
    return throughput


class Attackers:
    """``slow`` uploads that declare 100,000 bytes and send one every 3 s (reconnecting when cut off), and
    ``idle`` connections that send nothing."""

    HEAD = (
        b"POST /score HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{"
    )

    def __init__(self, slow: int, idle: int) -> None:
        self.idle = [socket.create_connection(("127.0.0.1", PORT)) for _ in range(idle)]
        self.slow = [self._upload() for _ in range(slow)]
        self.reconnects = 0
        self.running = True
        self.thread = threading.Thread(target=self._trickle, daemon=True)
        self.thread.start()

    def _upload(self) -> socket.socket:
        connection = socket.create_connection(("127.0.0.1", PORT))
        connection.sendall(self.HEAD)
        return connection

    def _trickle(self) -> None:
        while self.running:
            time.sleep(3)
            for index, connection in enumerate(self.slow):
                try:
                    connection.recv(65536, socket.MSG_DONTWAIT)  # the service's 408, or its closing
                except BlockingIOError:  # nothing from the service yet: one more byte
                    connection.sendall(b" ")
                    continue
                except OSError:
                    pass
                connection.close()  # cut off at the body deadline: back again, as an attacker would
                self.slow[index] = self._upload()
                self.reconnects += 1

    def close(self) -> None:
        self.running = False
        self.thread.join()
        for connection in self.idle + self.slow:
            connection.close()


def one_client(body: bytes, seconds: float) -> list[float]:
    """Latencies of one client asking one image at a time, on a new connection each time."""
    latencies = []
    stop = time.monotonic() + seconds
    while time.monotonic() < stop:
        connection = http.client.HTTPConnection("127.0.0.1", PORT, timeout=60)
        started = time.monotonic()
        status = ask(connection, body)
        latencies.append(time.monotonic() - started if status == 200 else float("inf"))
        connection.close()
        time.sleep(0.2)
    return latencies


def attacked(images: list[bytes], slow: int, idle: int, seconds: float) -> None:
    body = request_body(images[:1])
    alone = one_client(body, min(seconds, 10.0))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # this process holds the attackers' sockets
    attackers = Attackers(slow, idle)
    try:
        beside = one_client(body, seconds)
    finally:
        attackers.close()
    for name, latencies in (("alone", alone), (f"beside {slow} slow uploads and {idle} idle connections", beside)):
        print(
            f"one client, {name}: {len(latencies)} requests, p50 {percentile(latencies, 0.5) * 1000:.0f} ms, "
            f"p99 {percentile(latencies, 0.99) * 1000:.0f} ms, worst {max(latencies) * 1000:.0f} ms"
        )
    print(
        f"slow uploads cut off at the body deadline and reconnected: {attackers.reconnects}; "
        f"worst beside them / median alone: {max(beside) / statistics.median(alone):.1f}x"
    )


def main(argv: list[str] | None = None) -> int:
    import ray
    from ray import serve

    from qinsight_sdk.service import ServiceSettings, build_app

    args = parse_args(argv)
    model = cached_tiny_judge(args.cache)
    images = []
    for image in make_images(8, "56x56"):
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        images.append(buffer.getvalue())
    ray.init(include_dashboard=False, log_to_driver=False)
    print(
        f"qinsight service load benchmark: trained tiny judge, fast mode, one replica, "
        f"{int(ray.cluster_resources().get('CPU', 0))} CPUs, {args.seconds:g} s per cell"
    )
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": PORT, "keep_alive_timeout_s": 5.0})
        serve.run(
            build_app({"model": str(model), "device": "cpu", "local_files_only": True}, ServiceSettings()),
            route_prefix="/",
            name="qinsight-load",
        )
        counts = [int(c) for c in args.clients.split(",")]
        throughput = table(images, counts, args.seconds)
        if (16, 1) in throughput and (64, 1) in throughput:
            print(f"64 one-image clients: {throughput[64, 1] / throughput[16, 1]:.2f} of the throughput of 16")
        attacked(images, args.slow, args.idle, args.attack_seconds)
    finally:
        serve.shutdown()
        ray.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
