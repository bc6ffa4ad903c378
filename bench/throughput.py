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
language model, transformers' generate() around them (its loop, positions, output head), and our own
code (the rest).

Then, per size, (d) RALI (the tiny random RALI, or --rali DIR) against (c) on the same images, in
interleaved rounds: images/s and the ratio. Then a tournament over 8 images (reason mode, --new-tokens
each): its time, and how many images the vision tower encoded (counted from the patches it embedded).
Last, at real shapes (counted on the meta device, nothing run): parameters and FLOPs per image of RALI
(ViT-L/14 at 224 and 336) and of Q-Insight's fast mode (7B, 448x448).
"""

from __future__ import annotations

import argparse
import sys
import tempfile

import torch
from common import compare_modes, compare_rali, flop_lines, peak_memory, script_parser, stock_pipeline, tournament

from qinsight_sdk import QualityJudge
from qinsight_sdk.backends.checkpoints import default_subfolder, resolve_checkpoint
from qinsight_sdk.backends.rali.tiny import build_tiny_rali
from qinsight_sdk.testing import build_tiny_checkpoint


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = script_parser(__doc__)
    parser.add_argument("--model", help="checkpoint folder or hub id (default: the tiny random model)")
    parser.add_argument("--rali", help="RALI folder (default: the tiny random RALI, built on the fly)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument(
        "--reference-images",
        type=int,
        default=8,
        help="images for the reference loop, which treats each image alike (slow)",
    )
    parser.add_argument("--sizes", default="448x448,small", help="WIDTHxHEIGHT or small, comma-separated")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave as is)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved repetitions")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    model = args.model or build_tiny_checkpoint(tempfile.mkdtemp(prefix="qinsight-bench-"))
    judge = QualityJudge.from_pretrained(model, device=args.device, dtype=args.dtype, batch_size=args.batch_size)
    folder = resolve_checkpoint(str(model), default_subfolder(str(model)))
    stock = stock_pipeline(folder, judge.backend.device, judge.backend.dtype)
    print(
        f"model {model} on {judge.backend.device} ({judge.backend.dtype}), torch threads {torch.get_num_threads()}, "
        f"faster vision path: {getattr(judge.backend, 'fast_vision', False)}"
    )
    rali = QualityJudge.from_pretrained(
        args.rali or build_tiny_rali(tempfile.mkdtemp(prefix="qinsight-bench-")),
        device=args.device,
        batch_size=args.batch_size,
    )
    for size in args.sizes.split(","):
        compare_modes(judge, stock, size, args)
        compare_rali(judge, rali, size, args)
    tournament(judge, args)
    print(peak_memory(judge.backend.device))
    print("--- at real shapes, from parameter counts")
    for line in flop_lines():
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
