"""On a CUDA machine: does ComfyUI's "free memory" take each kind of judge's weights off the GPU?

    python bench/comfyui_memory.py                      # full precision, 8-bit and 4-bit judges
    python bench/comfyui_memory.py --modes full         # one kind
    python bench/comfyui_memory.py --dry-run            # a CPU ComfyUI, to check the script (no CUDA bytes)

Starts a real ComfyUI on the GPU (as tests/integration/test_comfyui.py does on the CPU) with the tiny checkpoint.
For each kind it scores two images with the judge kept on the GPU, asks ComfyUI to free memory, and
prints the judge's state and the CUDA bytes the server has allocated, before and after; then scores
again. A full-precision judge must end on the CPU; a quantized one (bitsandbytes, which must be
installed) freed, its CUDA bytes released, and loaded again by the second run with the same scores.
Exit code 0 when every kind did.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import ROOT, script_parser

sys.path.insert(0, str(ROOT / "tests"))

from comfyui_server import ComfyUI


def graph(quantization: str, images: int) -> dict[str, Any]:
    nodes = {
        "1": {
            "class_type": "QInsightLoadJudge",
            "inputs": {
                "model": "tiny-qinsight",
                "hf_id": "",
                "allow_download": False,
                "device": "auto",
                "dtype": "auto",
                "after_run": "keep on GPU",
                "quantization": quantization,
            },
        },
        "2": {"class_type": "LoadImage", "inputs": {"image": "sample_0.png"}},
        "3": {"class_type": "LoadImage", "inputs": {"image": "sample_1.png"}},
        "4": {"class_type": "ImageBatch", "inputs": {"image1": ["2", 0], "image2": ["3", 0]}},
        "5": {"class_type": "QInsightScore", "inputs": {"judge": ["1", 0], "images": ["4", 0], "mode": "fast"}},
    }
    if images == 1:  # a different batch, so ComfyUI runs the scorer again instead of reusing its output
        nodes["5"]["inputs"]["images"] = ["2", 0]
        del nodes["3"], nodes["4"]
    return nodes


def scores(server: ComfyUI, quantization: str, images: int) -> list[float]:
    entry = server.run(graph(quantization, images))
    print(f"  run ({images} images):", entry["status"]["status_str"], entry["outputs"].get("5", {}).get("text"))
    return entry["outputs"].get("5", {}).get("qinsight_scores", [])


def check(server: ComfyUI, quantization: str, cuda: bool) -> bool:
    print(f"{quantization}:")
    first = scores(server, quantization, 2)
    during = server.get("/qinsight/status")
    print("  after the run:", during)
    server.post("/free", {"unload_models": True})
    time.sleep(2)
    after = server.get("/qinsight/status")
    print("  after /free:", after)
    judges = [j for j in after["judges"] if (j["quantization"] or "full") == quantization or not j["loaded"]]
    if quantization == "full":
        freed = all(d == "cpu" for judge in judges for d in judge["weight_devices"])
    else:
        freed = not any(j["loaded"] for j in judges)
    released = after["cuda_bytes_allocated"] < during["cuda_bytes_allocated"] or not cuda
    again = scores(server, quantization, 1)
    same = bool(first) and bool(again) and abs(first[0] - again[0]) < 1e-4
    ok = freed and released and same and after["registered_with_comfyui"] == 0
    print(
        f"  off the GPU: {freed} | CUDA bytes {during['cuda_bytes_allocated']} -> {after['cuda_bytes_allocated']} "
        f"| reloaded with the same score: {same} | {'ok' if ok else 'FAILED'}"
    )
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = script_parser(__doc__)
    parser.add_argument("--modes", default="full,8bit,4bit", help="comma-separated: full, 8bit, 4bit")
    parser.add_argument("--dry-run", action="store_true", help="a CPU ComfyUI: checks the script, not the GPU")
    args = parser.parse_args(argv)
    server = ComfyUI(Path(tempfile.mkdtemp(prefix="qinsight-comfy-gpu-")), cpu=args.dry_run)
    server.prepare()
    server.start()
    try:
        results = [check(server, mode, cuda=not args.dry_run) for mode in args.modes.split(",")]
    finally:
        server.stop()
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
