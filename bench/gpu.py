"""The throughput comparison on a GPU with a random-weight model of the real Qwen2.5-VL-7B shape.

    python bench/gpu.py                       # CUDA, bf16, 448x448 and 1024x768 images
    python bench/gpu.py --dry-run             # the same code path on CPU with the tiny shape (a check)

No download: the 7B configuration is built in memory with random bf16 weights (about 16 GB of GPU
memory) behind the tiny checkpoint's processor files, whose prompt token counts are realistic. For each
image size it prints, as bench/throughput.py does, images/s of (a) the official demo's loop (on a second
copy of the weights that no judge touches), (b) reason mode batched and (c) fast mode batched, the
ratios to (a) with their spread over rounds, where each mode's time went, peak memory, and fast-mode
images/s as a fraction of the GPU's bf16 FLOP bound (dense tensor-core peak; --peak-tflops to
override); then (d) RALI at its real shape (ViT-L/14 at 336x336, random weights, fp32 as it runs)
against (c) on the same images, with the ratio; then a tournament's time and image encodings.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
from common import (
    compare_modes,
    compare_rali,
    cuda_missing,
    device_name,
    flops_per_image,
    make_images,
    peak_memory,
    rali_clip_config,
    random_model,
    script_parser,
    tournament,
)

from qinsight_sdk import QualityJudge
from qinsight_sdk.backends.qwen2_5_vl.backend import QwenVLBackend
from qinsight_sdk.backends.qwen2_5_vl.loading import load_processor
from qinsight_sdk.backends.rali.tiny import build_tiny_rali

# dense bf16 tensor-core peaks, TFLOP/s (vendor data sheets, without sparsity)
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0, "A10": 125.0}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = script_parser(__doc__)
    parser.add_argument("--sizes", default="448x448,1024x768")
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--reference-images", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved repetitions")
    parser.add_argument("--peak-tflops", type=float, help="bf16 peak of this GPU, if not in the table")
    parser.add_argument("--dry-run", action="store_true", help="tiny shape on CPU, to check the script")
    return parser.parse_args(argv)


def random_judge(dry_run: bool) -> tuple[QualityJudge, tuple, dict]:
    """The judge on a random 7B-shaped model, and a second copy of the same weights (same seed) for the
    baseline, loaded apart and never given to a judge."""
    folder = Path(tempfile.mkdtemp(prefix="qinsight-gpu-bench-"))
    model, shape = random_model(folder, dry_run)
    processor = load_processor(folder)
    stock_model, _ = random_model(Path(tempfile.mkdtemp(prefix="qinsight-gpu-stock-")), dry_run)
    return QualityJudge(QwenVLBackend(model, processor, model.device)), (stock_model, processor), shape


def random_rali(device: torch.device, dry_run: bool) -> QualityJudge:
    """RALI with random weights: the real shape on a GPU, the tiny one for --dry-run."""
    folder = Path(tempfile.mkdtemp(prefix="qinsight-gpu-rali-"))
    build_tiny_rali(folder, clip_config=None if dry_run else rali_clip_config())
    return QualityJudge.from_pretrained(folder, device=device)


def bench_size(
    judge: QualityJudge, stock: tuple, shape: dict, size: str, args: argparse.Namespace, peak: float | None
) -> None:
    device = judge.backend.device
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    seconds = compare_modes(judge, stock, size, args)
    print(peak_memory(device))
    fitted = judge.load_image(make_images(1, size)[0])
    patches = fitted.width * fitted.height // (14 * 14)
    text_tokens = 180  # the score prompt's text tokens with this tokenizer, answer prefix included
    if peak:
        bound = peak * 1e12 / flops_per_image(shape, patches // 4, patches, text_tokens)
        fast = args.images / min(seconds["fast"])
        print(
            f"fast mode at {100 * fast / bound:.1f}% of the bf16 FLOP bound ({bound:.1f} images/s at "
            f"{peak:.0f} TFLOP/s; {patches // 4} image tokens)"
        )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if cuda_missing(args.dry_run, "bench/gpu.py"):
        return 2
    start = time.perf_counter()
    judge, stock, shape = random_judge(args.dry_run)
    name = device_name(args.dry_run)
    peak = args.peak_tflops or next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)
    print(
        f"device {name}, {sum(p.numel() for p in judge.backend.model.parameters()) / 1e9:.2f} B parameters "
        f"({judge.backend.dtype}), attention {judge.backend.model.config._attn_implementation}, "
        f"built in {time.perf_counter() - start:.0f} s"
    )
    for size in args.sizes.split(","):
        bench_size(judge, stock, shape, size, args, peak)
    rali = random_rali(judge.backend.device, args.dry_run)
    for size in args.sizes.split(","):
        print(f"-- RALI against fast mode at {size}")
        compare_rali(judge, rali, size, args)
    tournament(judge, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
