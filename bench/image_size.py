"""What each image-size preset costs: image tokens, fast-mode speed and peak memory, official against fast.

    python bench/image_size.py                              # the tiny random model, on CPU
    python bench/image_size.py --model DIR --device cuda    # a real checkpoint on a GPU

For each image size (default: 1024x768, 1920x1080, 4000x3000) both presets judge the same seeded images
in fast mode, one image per batch, in interleaved rounds (the machine is shared and noisy; each best
round counts). Printed per size: the image tokens under each preset, images/s under each, and the ratio
fast / official measured in the same run. Peak memory is measured per preset in a separate pass on
CUDA (reset between presets); on CPU the process peak only grows, so it is printed once at the end.
"""

from __future__ import annotations

import sys
import tempfile

import torch
from common import make_images, peak_memory, script_parser, timed

from qinsight_sdk import ImageBounds, QualityJudge
from qinsight_sdk.io.images import PATCH_GRID, fit_to_patch_grid
from qinsight_sdk.testing import build_tiny_checkpoint

PRESETS = ("official", "fast")


def main(argv: list[str] | None = None) -> int:
    parser = script_parser(__doc__)
    parser.add_argument("--model", help="checkpoint folder (default: the tiny random model)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--sizes", default="1024x768,1920x1080,4000x3000")
    parser.add_argument("--images", type=int, default=2, help="images per size")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    model = args.model or build_tiny_checkpoint(tempfile.mkdtemp(prefix="qinsight-bench-"))
    judges = {
        name: QualityJudge.from_pretrained(
            model, device=args.device, dtype=args.dtype, batch_size=1, image_bounds=ImageBounds.preset(name)
        )
        for name in PRESETS
    }
    device = judges["official"].backend.device
    print(f"model {model} on {device}, {args.images} images per size, fast mode, batch 1, best of {args.rounds}")
    print("| size | tokens official | tokens fast | official images/s | fast images/s | fast / official |")
    print("|---|---|---|---|---|---|")
    for size in args.sizes.split(","):
        images = make_images(args.images, size)
        width, height = images[0].size
        tokens = {name: _tokens(width, height, judges[name].image_bounds) for name in PRESETS}
        for judge in judges.values():
            judge.score(images[:1], mode="fast")  # warm-up, not timed
        best = {name: float("inf") for name in PRESETS}
        for _ in range(args.rounds):
            for name in PRESETS:
                best[name] = min(best[name], timed(lambda: judges[name].score(images, mode="fast"), device))  # noqa: B023 (called at once)
        rate = {name: args.images / best[name] for name in PRESETS}
        print(
            f"| {size} | {tokens['official']} | {tokens['fast']} | {rate['official']:.2f} | {rate['fast']:.2f} "
            f"| {rate['fast'] / rate['official']:.1f}x |"
        )
        if device.type == "cuda":
            for name in PRESETS:
                torch.cuda.reset_peak_memory_stats(device)
                judges[name].score(images[:1], mode="fast")
                print(f"  {size} {name}: {peak_memory(device)}")
    if device.type != "cuda":
        print(peak_memory(device))
    return 0


def _tokens(width: int, height: int, bounds: ImageBounds) -> int:
    fitted_width, fitted_height = fit_to_patch_grid(width, height, bounds)
    return fitted_width * fitted_height // PATCH_GRID**2


if __name__ == "__main__":
    sys.exit(main())
