"""``python -m qinsight_sdk.testing DIR``: write a tiny checkpoint (see :mod:`qinsight_sdk.testing`)."""

from __future__ import annotations

import argparse
import sys

from ..backends.qwen2_5_vl.tiny import build_tiny_checkpoint
from .samples import write_sample_images


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m qinsight_sdk.testing",
        description="Write a tiny Qwen2.5-VL checkpoint or judge, or a tiny RALI.",
    )
    parser.add_argument("folder", help="where to write the checkpoint")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sample-images", metavar="DIR", help="also write a few test images here")
    parser.add_argument(
        "--trained",
        action="store_true",
        help="train it (about a minute on a CPU) to answer in Q-Insight's format about a "
        "visible property of synthetic images (qinsight_sdk.backends.qwen2_5_vl.tiny_judge); with --rali, "
        "fit RALI to rate brightness (seconds)",
    )
    parser.add_argument(
        "--video",
        action="store_true",
        help="with --trained, a tiny video judge instead: it answers VQ-Insight's three video tasks about "
        "synthetic videos (brightness, flicker, the brighter of two; a minute or two on a CPU)",
    )
    parser.add_argument(
        "--rali",
        action="store_true",
        help="write a tiny RALI in the released file layout instead (ckpt.pt, pca.pkl, basis.npz, best/; needs joblib)",
    )
    args = parser.parse_args(argv)
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # its weight loading and saving bars say nothing here
    if args.rali:
        from ..backends.rali.tiny import build_tiny_rali

        path = build_tiny_rali(args.folder, seed=args.seed, trained=args.trained)
        kind = "tiny RALI fitted to rate brightness" if args.trained else "tiny RALI with random weights"
    elif args.video:
        if not args.trained:
            parser.error("--video needs --trained: the random checkpoint takes videos as it is")
        from ..backends.qwen2_5_vl.tiny_video_judge import build_tiny_video_judge

        print("training a tiny video judge: a minute or two on a free CPU core", file=sys.stderr, flush=True)
        path = build_tiny_video_judge(args.folder, progress=sys.stderr.isatty())
        kind = "tiny Qwen2.5-VL video judge trained to answer"
    elif args.trained:
        from ..backends.qwen2_5_vl.tiny_judge import build_tiny_judge

        print("training a tiny judge: about a minute on a free CPU core", file=sys.stderr, flush=True)
        path = build_tiny_judge(args.folder, progress=sys.stderr.isatty())
        kind = "tiny Qwen2.5-VL judge trained to answer"
    else:
        path, kind = build_tiny_checkpoint(args.folder, seed=args.seed), "tiny Qwen2.5-VL checkpoint"
    size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    print(f"wrote a {kind} to {path} ({size / 1e6:.1f} MB)")
    if args.sample_images:
        images = write_sample_images(args.sample_images, seed=args.seed)
        print(f"wrote {len(images)} sample images to {args.sample_images}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
