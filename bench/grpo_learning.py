"""Does our GRPO pipeline learn? Mean reward early in a run against late, on the tiny model, on CPU.

The task is one a random policy sometimes solves, so GRPO has a signal from the first step: pairwise
comparisons whose label is always "Similar", read with the tolerant parser (``strict_parsing: false``),
so a completion that names "Similar" and neither image earns 1. A random tiny model does that by chance
in a few percent of its completions; a learning run does it far more often by the end.

    python bench/grpo_learning.py [--steps 40] [--window 8]

Prints the mean reward of the first and of the last ``window`` steps, and the number of steps.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from common import read_metrics, script_parser

from qinsight_sdk.testing import build_tiny_checkpoint, write_sample_images
from qinsight_sdk.train.config import TrainConfig
from qinsight_sdk.train.grpo import train


def main(argv: list[str] | None = None) -> int:
    parser = script_parser(__doc__)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--window", type=int, default=8, help="steps averaged at each end")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="qinsight-grpo-bench-") as tmp:
        work = Path(tmp)
        model = build_tiny_checkpoint(work / "tiny")
        images = write_sample_images(work / "images", count=4, seed=args.seed)
        rows = [
            {"task": "comparison", "image_a": a.name, "image_b": b.name, "answer": "Similar"}
            for a, b in zip(images, images[1:] + images[:1])
        ]
        (work / "images" / "pairs.jsonl").write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
        config = TrainConfig(
            model=str(model),
            output_dir=str(work / "run"),
            device="cpu",
            seed=args.seed,
            data=[{"path": str(work / "images" / "pairs.jsonl")}],
            format_reward=False,
            strict_parsing=False,
            num_generations=8,
            per_device_batch_size=16,
            max_completion_length=32,
            learning_rate=5e-3,
            lr_scheduler="constant",
            beta=0.0,
            epochs=1000,
            max_steps=args.steps,
            save_steps=10**6,
            gradient_checkpointing=False,
        )
        started = time.perf_counter()
        train(config)
        elapsed = time.perf_counter() - started
        rewards = [row["reward"] for row in read_metrics(work / "run") if "reward" in row]

    first, last = rewards[: args.window], rewards[-args.window :]
    print(f"steps: {len(rewards)} (group 8, 2 prompts per step, 32 new tokens), {elapsed:.0f} s on this CPU")
    print(f"mean reward, first {len(first)} steps: {statistics.mean(first):.3f}")
    print(f"mean reward, last {len(last)} steps:  {statistics.mean(last):.3f}")
    print("per step:", " ".join(f"{r:.2f}" for r in rewards))
    return 0 if statistics.mean(last) > statistics.mean(first) else 1


if __name__ == "__main__":
    sys.exit(main())
