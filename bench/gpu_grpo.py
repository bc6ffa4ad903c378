"""GRPO on a GPU with a random-weight model of the real Qwen2.5-VL-7B shape: memory and time per step.

    python bench/gpu_grpo.py                    # CUDA, bf16, LoRA, group 8, 448x448 images
    python bench/gpu_grpo.py --finetune full    # full fine-tuning (needs more memory than one GPU has)
    python bench/gpu_grpo.py --dry-run          # the same code path on CPU with the tiny shape (a check)

No download: the 7B configuration is written with random bf16 weights (about 16 GB of disk) behind the
tiny checkpoint's tokenizer and processor files, then trained through ``qinsight_sdk.train.train`` as a
user's run would be. Prints the seconds per step, the peak GPU memory, and whether the weights changed;
these are the measured figures the memory estimates in docs/speed.md should be replaced by.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch
from common import cuda_missing, device_name, random_model, read_metrics, script_parser, spread

from qinsight_sdk.train import TrainConfig, train


def random_checkpoint(folder: Path, dry_run: bool) -> Path:
    """Training loads its model from a folder, as a user's run does; the random weights are freed after."""
    model, _ = random_model(folder, dry_run)
    model.save_pretrained(folder)
    del model
    if not dry_run:
        torch.cuda.empty_cache()
    return folder


def main(argv: list[str] | None = None) -> int:
    parser = script_parser(__doc__)
    parser.add_argument("--finetune", choices=("lora", "full"), default="lora")
    parser.add_argument("--size", default="448x448")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--dry-run", action="store_true", help="tiny shape on CPU, to check the script")
    args = parser.parse_args(argv)
    if cuda_missing(args.dry_run, "bench/gpu_grpo.py"):
        return 2
    from PIL import Image

    work = Path(tempfile.mkdtemp(prefix="qinsight-gpu-grpo-"))
    started = time.perf_counter()
    model = random_checkpoint(work / "model", args.dry_run)
    width, height = map(int, args.size.split("x"))
    rows = []
    for i in range(8):
        Image.new("RGB", (width, height), (30 * i, 100, 200 - 20 * i)).save(work / f"{i}.png")
        rows.append({"task": "score", "image": f"{i}.png", "mos": 1 + i / 2})
    (work / "data.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    print(f"checkpoint written in {time.perf_counter() - started:.0f} s")
    config = TrainConfig(
        model=str(model),
        output_dir=str(work / "run"),
        data=[{"path": str(work / "data.jsonl")}],
        finetune=args.finetune,
        device="cpu" if args.dry_run else "auto",
        num_generations=8,
        per_device_batch_size=8,
        max_completion_length=args.new_tokens,
        max_steps=args.steps,
        save_steps=10**6,
        learning_rate=1e-5,
        lora_r=64,
        lora_alpha=128,
    )
    if not args.dry_run:
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    final = train(config, extra_rewards=[spread])
    elapsed = time.perf_counter() - started
    steps = read_metrics(work / "run")
    times = [row["step_time"] for row in steps if "step_time" in row]
    name = device_name(args.dry_run)
    peak = 0.0 if args.dry_run else torch.cuda.max_memory_allocated() / 2**30
    print(f"device {name}: {args.finetune}, group 8 x {args.new_tokens} new tokens, {args.size} images")
    print(f"steps {len(times)}, seconds per step {', '.join(f'{t:.1f}' for t in times)}; whole run {elapsed:.0f} s")
    losses = ", ".join(f"{r['loss']:.3g}" for r in steps if "loss" in r)
    print(f"peak GPU memory {peak:.1f} GiB; losses {losses}")
    print(f"final model folder: {sum(p.stat().st_size for p in final.iterdir()) / 2**30:.1f} GiB")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
