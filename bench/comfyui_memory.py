"""On a CUDA machine: does ComfyUI's "free memory" take the judge's weights off the GPU?

    python bench/comfyui_memory.py

Starts a real ComfyUI on the GPU (as tests/test_comfyui.py does on the CPU) with the tiny checkpoint,
scores two images with the judge kept on the GPU, asks ComfyUI to free memory, and prints the judge's
weight devices and the CUDA bytes the server has allocated, before and after. Exit code 0 when the
weights left the GPU.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, script_parser

sys.path.insert(0, str(ROOT / "tests"))

from comfyui_server import ComfyUI  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    script_parser(__doc__).parse_args(argv)  # no options; --help without starting a server
    server = ComfyUI(Path(tempfile.mkdtemp(prefix="qinsight-comfy-gpu-")), cpu=False)
    server.prepare()
    server.start()
    try:
        graph = {"1": {"class_type": "QInsightLoadJudge",
                       "inputs": {"model": "tiny-qinsight", "hf_id": "", "allow_download": False, "device": "auto",
                                  "dtype": "auto", "after_run": "keep on GPU"}},
                 "2": {"class_type": "LoadImage", "inputs": {"image": "sample_0.png"}},
                 "3": {"class_type": "LoadImage", "inputs": {"image": "sample_1.png"}},
                 "4": {"class_type": "ImageBatch", "inputs": {"image1": ["2", 0], "image2": ["3", 0]}},
                 "5": {"class_type": "QInsightScore", "inputs": {"judge": ["1", 0], "images": ["4", 0],
                                                                 "mode": "fast"}}}
        entry = server.run(graph)
        print("run:", entry["status"]["status_str"], entry["outputs"].get("5", {}).get("text"))
        print("after the run:", server.get("/qinsight/status"))
        server.post("/free", {"unload_models": True})
        time.sleep(2)
        after = server.get("/qinsight/status")
        print("after /free:", after)
        off_gpu = all(d == "cpu" for judge in after["judges"] for d in judge["weight_devices"])
        print("weights off the GPU:", off_gpu, "| registered with ComfyUI:", after["registered_with_comfyui"])
        return 0 if off_gpu and after["registered_with_comfyui"] == 0 else 1
    finally:
        server.stop()


if __name__ == "__main__":
    sys.exit(main())
