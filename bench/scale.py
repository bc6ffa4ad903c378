"""Scaling out on Ray: judge actors (Ray Data) and the judge as a service (Ray Serve), against one process.

    python bench/scale.py                       # the trained tiny judge on this machine's CPUs
    python bench/scale.py --images 512 --clients 16

Prints, all measured in this run (fast mode, seeded noise images):
- images/s of scoring with 1 and with 2 judge actors, actor start-up included (each run starts its
  actors, as a command does), and their ratio; on a 2-core machine it may be near 1: a figure, not a
  promise. The in-process judge over the same images is the baseline.
- requests/s of the service under concurrent clients, each request one image, against the in-process
  judge asked one image per call (what a trainer's reward loop does without a service) and against the
  in-process judge batching all images at once (the ceiling of batching).
"""

from __future__ import annotations

import io
import tempfile
import threading
from pathlib import Path
from typing import Any

import torch
from common import make_images, script_parser, timed

from qinsight_sdk import QualityJudge
from qinsight_sdk.testing import cached_tiny_judge

CPU = torch.device("cpu")  # the tiny judge runs on the CPU: nothing to synchronise


def parse_args(argv: list[str] | None = None) -> Any:
    parser = script_parser(__doc__)
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--size", default="224x224")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients of the service")
    parser.add_argument("--requests", type=int, default=128, help="requests to the service, in all")
    parser.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "qinsight-bench-cache"))
    return parser.parse_args(argv)


def png_files(images: list[Any], folder: Path) -> list[str]:
    paths = []
    for i, image in enumerate(images):
        path = folder / f"image{i:05d}.png"
        image.save(path)
        paths.append(str(path))
    return paths


def actors(paths: list[str], options: dict[str, Any], local: QualityJudge) -> None:
    from qinsight_sdk.distributed import DistributedJudge

    baseline = timed(lambda: local.score(paths, mode="fast"), CPU)
    seconds = {
        n: timed(lambda n=n: DistributedJudge(options, workers=n, cpus_per_worker=0.5).score(paths, mode="fast"), CPU)
        for n in (1, 2)
    }
    print(
        f"Ray Data, {len(paths)} images: in-process {len(paths) / baseline:.1f} images/s | 1 actor "
        f"{len(paths) / seconds[1]:.1f} | 2 actors {len(paths) / seconds[2]:.1f} images/s | "
        f"2 vs 1 actors: {seconds[1] / seconds[2]:.2f}x (start-up included)"
    )


def service(images: list[Any], options: dict[str, Any], local: QualityJudge, clients: int, requests: int) -> None:
    from ray import serve

    from qinsight_sdk.client import RemoteJudge
    from qinsight_sdk.service import ServiceSettings, build_app

    serve.start(http_options={"host": "127.0.0.1", "port": 8799})
    serve.run(
        build_app(options, ServiceSettings(max_batch_size=clients, batch_wait_s=0.02), cpus_per_replica=0.5),
        route_prefix="/",
        name="qinsight-bench",
    )
    remote = RemoteJudge("http://127.0.0.1:8799")
    encoded = []
    for image in images[:requests]:
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        encoded.append(buffer.getvalue())
    remote.score(encoded[0], mode="fast")  # warm: the replica's first batch

    def client(share: list[bytes]) -> None:
        for data in share:
            remote.score(data, mode="fast")

    def served() -> None:
        threads = [threading.Thread(target=client, args=(encoded[i::clients],)) for i in range(clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    one_by_one = timed(lambda: [local.score(data, mode="fast") for data in encoded], CPU)
    batched = timed(lambda: local.score(encoded, mode="fast"), CPU)
    seconds = timed(served, CPU)
    print(
        f"Ray Serve, {len(encoded)} one-image requests from {clients} clients: {len(encoded) / seconds:.1f} "
        f"requests/s | in-process one call per image {len(encoded) / one_by_one:.1f}/s "
        f"(service {one_by_one / seconds:.2f}x) | in-process one batch {len(encoded) / batched:.1f}/s "
        f"(service {batched / seconds:.2f}x of it)"
    )
    serve.shutdown()


def main(argv: list[str] | None = None) -> int:
    import ray

    args = parse_args(argv)
    model = cached_tiny_judge(args.cache)
    options = {"model": str(model), "device": "cpu", "local_files_only": True}
    local = QualityJudge.from_pretrained(**options)
    images = make_images(args.images, args.size)
    ray.init(include_dashboard=False, log_to_driver=False)
    print(
        f"qinsight scale benchmark: trained tiny judge, fast mode, {args.size} images, "
        f"{int(ray.cluster_resources().get('CPU', 0))} CPUs"
    )
    with tempfile.TemporaryDirectory() as folder:
        actors(png_files(images, Path(folder)), options, local)
    service(images, options, local, args.clients, args.requests)
    ray.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
