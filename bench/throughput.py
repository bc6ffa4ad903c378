"""Images per second: the official demo's loop against qinsight's batched reason and fast modes, and a
tournament's image encodings.

    python bench/throughput.py                    # the tiny random model, built on the fly, on CPU
    python bench/throughput.py --model DIR --device cuda --images 32 --sizes 1024x768

For each image size (default: 448x448, and "small", a mix from 64x200 to 160x160), in interleaved rounds:
  (a) reference: what the official demo does, one image per generate call, sampling (temperature 1.0,
      top-k 50, top-p 0.95), text before image, on a second copy of the weights loaded by plain
      transformers and never given to the judge (so nothing of ours can speed it up); it treats every
      image alike, so it is timed on the first --reference-images only;
  (b) reason mode, batched, greedy;
  (c) fast mode, batched (no text generated).
(a) and (b) are forced to the same number of new tokens (min = max = --new-tokens), so the comparison
measures the pipeline, not where a random model happens to stop. Each round gives each mode's ratio to
(a) in that round; the lowest, median and highest over the rounds are printed (the machine is shared
and noisy; a target is held to the lowest), with where each mode's time went: the vision tower, the
language model, transformers' generation loop outside both, and our own code (the rest).

Then a tournament over 8 images (reason mode, --new-tokens each): its time, and how many images the
vision tower encoded (counted from the patches it embedded).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile

from common import (make_images, peak_memory, reference_loop, script_parser, share_line, spread_line,
                    stock_pipeline, time_shares, timed)

import torch

from qinsight_sdk import DecodingOptions, QualityJudge
from qinsight_sdk.checkpoints import default_subfolder, resolve_checkpoint
from qinsight_sdk.testing import build_tiny_checkpoint

MODES = ("reference", "reason", "fast")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = script_parser(__doc__)
    parser.add_argument("--model", help="checkpoint folder or hub id (default: the tiny random model)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--reference-images", type=int, default=8,
                        help="images for the reference loop, which treats each image alike (slow)")
    parser.add_argument("--sizes", default="448x448,small", help="WIDTHxHEIGHT or small, comma-separated")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave as is)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved repetitions")
    return parser.parse_args(argv)


def bench_size(judge: QualityJudge, stock: tuple, size: str, args: argparse.Namespace) -> None:
    device = judge.backend.device
    images = make_images(args.images, size)
    fitted = [judge.load_image(image) for image in images]  # the reference gets what the judge's resizing gives
    forced = DecodingOptions(max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens)
    count = min(args.reference_images, args.images)
    runs = {"reference": lambda: reference_loop(*stock, fitted[:count], args.new_tokens),
            "reason": lambda: judge.score(images, decoding=forced),
            "fast": lambda: judge.score(images, mode="fast")}
    reference_loop(*stock, fitted[:1], 4)  # warm-up (kernels, caches, lazy imports), not timed
    judge.score(images[:args.batch_size], decoding=DecodingOptions(max_new_tokens=4))
    judge.score(images[:args.batch_size], mode="fast")
    seconds: dict[str, list[float]] = {mode: [] for mode in MODES}
    shares: dict[str, tuple[dict[str, float], float]] = {}
    for _ in range(args.rounds):
        for mode in MODES:
            totals: dict[str, float] = {}
            with time_shares(judge.backend.model, totals, device):
                took = timed(runs[mode], device) * (args.images / count if mode == "reference" else 1)
            seconds[mode].append(took)
            if mode != "reference" and took <= min(seconds[mode]):
                shares[mode] = (totals, took)
    pixels = sum(image.width * image.height for image in fitted) // len(fitted)
    print(f"--- {size}: {args.images} images ({pixels} pixels each on average after fitting), batch "
          f"{args.batch_size}, {args.new_tokens} new tokens in (a) and (b), {args.rounds} rounds")
    names = {"reference": "(a) reference loop (demo: batch 1, sampling, stock model)",
             "reason": f"(b) reason mode, batch {args.batch_size}", "fast": f"(c) fast mode, batch {args.batch_size}"}
    for mode in MODES:
        rates = [args.images / s for s in seconds[mode]]
        print(f"{names[mode]}: {statistics.median(rates):.2f} images/s median ({min(rates):.2f}-{max(rates):.2f})")
    for mode in ("reason", "fast"):
        ratios = [reference / own for reference, own in zip(seconds["reference"], seconds[mode])]
        print(f"ratio {mode} / reference: {spread_line(ratios)}")
        print(f"  {mode} time: {share_line(*shares[mode])}")


def bench_tournament(judge: QualityJudge, args: argparse.Namespace) -> None:
    images = make_images(8, "448x448", seed=1)
    patches_per_image = judge.load_image(images[0]).width * judge.load_image(images[0]).height // 14 ** 2
    judge.decoding = DecodingOptions(max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens)
    best, encoded = float("inf"), 0.0
    for _ in range(args.rounds):
        totals: dict[str, float] = {}
        with time_shares(judge.backend.model, totals, judge.backend.device):
            took = timed(lambda: judge.rank(images, strategy="tournament", batch_size=args.batch_size),
                         judge.backend.device)
        best, encoded = min(best, took), totals["patches"] / patches_per_image
    print(f"--- tournament over 8 images of 448x448 (7 matches, both orders: 28 images asked about), "
          f"{args.new_tokens} new tokens: best {best:.2f} s of {args.rounds}; the vision tower encoded "
          f"{encoded:.0f} images")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    model = args.model or build_tiny_checkpoint(tempfile.mkdtemp(prefix="qinsight-bench-"))
    judge = QualityJudge.from_pretrained(model, device=args.device, dtype=args.dtype, batch_size=args.batch_size)
    folder = resolve_checkpoint(str(model), default_subfolder(str(model)))
    stock = stock_pipeline(folder, judge.backend.device, judge.backend.dtype)
    print(f"model {model} on {judge.backend.device} ({judge.backend.dtype}), torch threads {torch.get_num_threads()}, "
          f"faster vision path: {getattr(judge.backend, 'fast_vision', False)}")
    for size in args.sizes.split(","):
        bench_size(judge, stock, size, args)
    bench_tournament(judge, args)
    print(peak_memory(judge.backend.device))
    return 0


if __name__ == "__main__":
    sys.exit(main())
