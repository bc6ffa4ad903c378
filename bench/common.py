"""What the benchmark scripts share, so that each figure they print is measured the same way and the
random 7B model is built in one place. Not shipped: plugin developers get ``qinsight_sdk.testing``.

The scripts run as ``python bench/NAME.py``, which puts this folder on ``sys.path``. Heavy libraries
are imported inside the functions, so bench/comfyui_memory.py (a client of a server) stays light.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import resource
import statistics
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing is downloaded; fail fast instead of waiting

ROOT = Path(__file__).resolve().parents[1]

# Qwen2.5-VL-7B-Instruct's sizes (the base of Q-Insight), over the tiny config's other keys
SEVEN_B_SIZES = {
    "hidden_size": 3584,
    "intermediate_size": 18944,
    "max_position_embeddings": 128000,
    "max_window_layers": 28,
    "num_attention_heads": 28,
    "num_hidden_layers": 28,
    "num_key_value_heads": 4,
    "sliding_window": 32768,
    "torch_dtype": "bfloat16",
    "vocab_size": 152064,
    "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]},
}
SEVEN_B_VISION_SIZES = {
    "depth": 32,
    "hidden_size": 1280,
    "intermediate_size": 3420,
    "num_heads": 16,
    "out_hidden_size": 3584,
    "fullatt_block_indexes": [7, 15, 23, 31],
}


def script_parser(doc: str | None) -> argparse.ArgumentParser:
    """A parser whose --help shows the script's docstring as written (usage lines included)."""
    return argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)


def benchmark_config(seven_b: bool = True) -> dict[str, Any]:
    """The 7B shape (or the tiny one) with the tiny tokenizer's token ids: random-weight models sit behind
    the tiny checkpoint's tokenizer and processor files, whose prompt token counts are realistic."""
    from qinsight_sdk.testing import tiny_config

    config = tiny_config()
    if seven_b:
        config.update(copy.deepcopy(SEVEN_B_SIZES))
        config["vision_config"].update(copy.deepcopy(SEVEN_B_VISION_SIZES))
    return config


def random_model(folder: Path, dry_run: bool) -> tuple[Any, dict[str, Any]]:
    """The tiny checkpoint's files in ``folder`` and a random model of the 7B shape (bf16, on CUDA) to go
    with them, or of the tiny shape on CPU for a dry run: no download, and the real model's code path.
    The tiny weights are removed so the folder can hold the random model's."""
    import torch
    from transformers import AutoConfig, GenerationConfig, Qwen2_5_VLForConditionalGeneration

    from qinsight_sdk.backends.qwen2_5_vl.loading import choose_attention
    from qinsight_sdk.testing import build_tiny_checkpoint

    build_tiny_checkpoint(folder)
    for old in folder.glob("model*.safetensors*"):
        old.unlink()
    shape = benchmark_config(seven_b=not dry_run)
    (folder / "config.json").write_text(json.dumps(shape))
    config = AutoConfig.from_pretrained(folder, local_files_only=True)
    device = torch.device("cpu" if dry_run else "cuda")
    dtype = torch.float32 if dry_run else torch.bfloat16
    config._attn_implementation = choose_attention(None, device, dtype)
    torch.manual_seed(0)
    with torch.device(device):
        torch.set_default_dtype(dtype)
        model = Qwen2_5_VLForConditionalGeneration(config).eval()
        torch.set_default_dtype(torch.float32)
    model.generation_config = GenerationConfig(
        eos_token_id=[shape["eos_token_id"], shape["bos_token_id"]], pad_token_id=shape["bos_token_id"]
    )  # the released stop tokens
    return model, shape


def cuda_missing(dry_run: bool, script: str) -> bool:
    """True, after saying so, when a GPU benchmark finds no CUDA: its figures would mean nothing on CPU."""
    import torch

    if dry_run or torch.cuda.is_available():
        return False
    print(f"{script} needs CUDA (or --dry-run)", file=sys.stderr)
    return True


def device_name(dry_run: bool) -> str:
    import torch

    return "cpu" if dry_run else torch.cuda.get_device_name()


def spread(completions: Any, **columns: Any) -> list[float]:
    """A GRPO reward that spreads the completions of a group apart (distinct characters / 50). A random
    model earns nothing from the paper's rewards, so its weights would not move; with this they do."""
    from qinsight_sdk.train.rewards import completion_text

    return [len(set(completion_text(c))) / 50 for c in completions]


def read_metrics(run_folder: Path) -> list[dict[str, Any]]:
    """The rows a training run logged, one per step or summary, as the trainer wrote them."""
    from qinsight_sdk.train.grpo import METRICS_FILE

    return [json.loads(line) for line in (run_folder / METRICS_FILE).read_text().splitlines()]


SMALL_SIZES = [(64, 200), (96, 96), (128, 80), (160, 160), (200, 64), (112, 144), (80, 128), (144, 112)]


def make_images(count: int, size: str, seed: int = 0) -> list[Any]:
    """Seeded noise: every image costs the model the same, so timings do not depend on content.
    ``size`` is WIDTHxHEIGHT, or "small": a mix from 64x200 to 160x160 (thumbnails, icons, crops)."""
    import numpy as np
    from PIL import Image

    sizes = SMALL_SIZES if size == "small" else [tuple(int(v) for v in size.lower().split("x"))]
    rng = np.random.default_rng(seed)
    return [
        Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
        for width, height in (sizes[k % len(sizes)] for k in range(count))
    ]


def synchronise(device: Any) -> None:
    """CUDA calls return before the work is done; timings must wait for it."""
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(run: Any, device: Any) -> float:
    synchronise(device)
    start = time.perf_counter()
    run()
    synchronise(device)
    return time.perf_counter() - start


def model_parts(model: Any) -> tuple[Any, Any]:
    """The vision tower and the language model: ``model.model.visual`` / ``.language_model`` from
    transformers 4.52 on, ``model.visual`` / ``model.model`` before. Looked up here rather than through
    ``qinsight_sdk.backends.qwen2_5_vl.vision.vision_tower`` so the script also measures commits from before
    that module."""
    inner = model.model
    return getattr(inner, "visual", None) or model.visual, getattr(inner, "language_model", inner)


@contextmanager
def time_shares(model: Any, totals: dict[str, float], device: Any) -> Iterator[None]:
    """Adds to ``totals`` the seconds spent in the vision tower ("vision"), in the language model
    ("language"), in transformers' ``generate`` outside both ("loop": its loop, the rotary positions, the
    output head), and the image patches the tower embedded ("patches": encodings, counted where they
    happen). What remains of a mode's time is ours:
    reading images, encoding prompts, batching, parsing. Each wrapper replaces an instance's attribute and
    calls what was there, so whatever the judge installed is timed too, and is put back after."""
    tower, language = model_parts(model)
    for name in ("vision", "language", "loop", "patches"):
        totals.setdefault(name, 0.0)

    def timing(name: str, call: Any) -> Any:
        def timed_call(*args: Any, **kwargs: Any) -> Any:
            synchronise(device)
            start, inside = time.perf_counter(), totals["vision"] + totals["language"]
            try:
                return call(*args, **kwargs)
            finally:
                synchronise(device)
                seconds = time.perf_counter() - start
                totals[name] += seconds - (totals["vision"] + totals["language"] - inside if name == "loop" else 0)

        return timed_call

    def counting(call: Any) -> Any:
        def embed(hidden_states: Any) -> Any:
            totals["patches"] += hidden_states.shape[0]
            return call(hidden_states)

        return embed

    wrapped = [
        (tower, "forward", timing("vision", tower.forward)),
        (language, "forward", timing("language", language.forward)),
        (model, "generate", timing("loop", model.generate)),
        (tower.patch_embed, "forward", counting(tower.patch_embed.forward)),
    ]
    before = [(owner, name, owner.__dict__.get(name)) for owner, name, _ in wrapped]
    for owner, name, replacement in wrapped:
        setattr(owner, name, replacement)
    try:
        yield
    finally:
        for owner, name, previous in before:
            if previous is None:
                delattr(owner, name)
            else:
                setattr(owner, name, previous)


def share_line(totals: dict[str, float], seconds: float) -> str:
    """Where a mode's time went, as shares of it."""
    ours = seconds - totals["vision"] - totals["language"] - totals["loop"]
    parts = {
        "vision tower": totals["vision"],
        "language model": totals["language"],
        "generate() around them (loop, positions, output head)": totals["loop"],
        "qinsight's own code": ours,
    }
    return ", ".join(f"{name} {100 * part / seconds:.0f}%" for name, part in parts.items())


def stock_pipeline(folder: Any, device: Any, dtype: Any) -> tuple[Any, Any]:
    """A second copy of the checkpoint, loaded by plain transformers and never given to a judge: the
    baseline of every ratio, which no change of ours can speed up."""
    from qinsight_sdk.backends.qwen2_5_vl.loading import load_model

    model, processor, _ = load_model(folder, device=device, dtype=dtype)
    return model, processor


def reference_loop(model: Any, processor: Any, images: list[Any], new_tokens: int) -> None:
    """The official demo, the baseline of every ratio: one image per call, sampled, plain transformers."""
    import torch

    from qinsight_sdk.judging.profiles import QINSIGHT

    conversation = QINSIGHT.messages("score", "text_first")
    text = processor.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)
    torch.manual_seed(42)
    for image in images:
        inputs = processor(text=[text], images=[image], return_tensors="pt").to(model.device)
        with torch.inference_mode():
            model.generate(
                **inputs,
                do_sample=True,
                temperature=1.0,
                top_k=50,
                top_p=0.95,
                max_new_tokens=new_tokens,
                min_new_tokens=new_tokens,
            )


def spread_line(ratios: list[float]) -> str:
    """A ratio over interleaved rounds: the lowest (what a target is held to), the median and the highest."""
    ordered = sorted(ratios)
    return (
        f"lowest {ordered[0]:.1f}x, median {ordered[len(ordered) // 2]:.1f}x, highest {ordered[-1]:.1f}x "
        f"over {len(ordered)} rounds"
    )


MODES = ("reference", "reason", "fast")


def flops_per_image(shape: dict, image_tokens: int, patches: int, text_tokens: int) -> float:
    """Matrix-multiply FLOPs of one fast-mode prefill (2 per multiply-add; attention scores included)."""
    hidden, layers, inter = shape["hidden_size"], shape["num_hidden_layers"], shape["intermediate_size"]
    kv = hidden * shape["num_key_value_heads"] // shape["num_attention_heads"]
    tokens = image_tokens + text_tokens
    per_token_lm = layers * (2 * hidden * (hidden + 2 * kv) + 2 * hidden * hidden + 6 * hidden * inter)
    lm = tokens * per_token_lm + layers * 4 * tokens * tokens * hidden
    vision = shape["vision_config"]
    vh, vi, depth = vision["hidden_size"], vision["intermediate_size"], vision["depth"]
    per_patch = depth * (8 * vh * vh + 6 * vh * vi) + 2 * 1176 * vh
    full_blocks = len(vision["fullatt_block_indexes"])
    window = (vision["window_size"] // 14) ** 2
    attention = 4 * vh * patches * (full_blocks * patches + (depth - full_blocks) * window)
    merger = image_tokens * 2 * (4 * vh * 4 * vh + 4 * vh * hidden)
    return lm + patches * per_patch + attention + merger


# RALI's vision tower, ViT-L/14 (its best/config.json: CLIP, projection 768); the demo's 336x336 dummy image
# suggests the 336-pixel variant, unverified, so both sizes are counted
RALI_VISION = {
    "hidden_size": 1024,
    "intermediate_size": 4096,
    "num_hidden_layers": 24,
    "num_attention_heads": 16,
    "patch_size": 14,
    "projection_dim": 768,
}


def rali_flops(side: int) -> float:
    """Matrix-multiply FLOPs of RALI's forward on one image cropped to ``side`` (2 per multiply-add): the
    patch embedding, each layer's attention (projections and scores) and MLP, the projection; the PCA and
    prototype head (a few 768-wide products) are negligible and left out."""
    hidden, inter, layers = (
        RALI_VISION["hidden_size"],
        RALI_VISION["intermediate_size"],
        RALI_VISION["num_hidden_layers"],
    )
    patches = (side // RALI_VISION["patch_size"]) ** 2
    tokens = patches + 1
    per_layer = tokens * (8 * hidden * hidden + 4 * hidden * inter) + 4 * tokens * tokens * hidden
    return (
        2 * patches * 3 * RALI_VISION["patch_size"] ** 2 * hidden
        + layers * per_layer
        + 2 * hidden * RALI_VISION["projection_dim"]
    )


def rali_clip_config(side: int = 336) -> dict[str, Any]:
    """A CLIPModel config with RALI's vision tower (ViT-L/14 at ``side``) and a toy text tower, which RALI's
    scoring never runs: random weights of the real shape, for timing."""
    from qinsight_sdk.backends.rali.tiny import tiny_clip_config

    config = tiny_clip_config()
    config["projection_dim"] = config["text_config"]["projection_dim"] = RALI_VISION["projection_dim"]
    config["vision_config"] = {**RALI_VISION, "image_size": side, "hidden_act": "quick_gelu"}
    return config


def parameter_counts() -> dict[str, int]:
    """Parameters of Q-Insight's model (the 7B shape) and of RALI's CLIP vision tower, counted on the meta
    device (no memory, no download)."""
    import torch
    from transformers import (
        CLIPVisionConfig,
        CLIPVisionModelWithProjection,
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
    )

    with torch.device("meta"):
        qinsight = Qwen2_5_VLForConditionalGeneration(Qwen2_5_VLConfig(**benchmark_config(seven_b=True)))
        rali = CLIPVisionModelWithProjection(CLIPVisionConfig(**RALI_VISION, image_size=336))
    return {
        "q-insight": sum(p.numel() for p in qinsight.parameters()),
        "rali": sum(p.numel() for p in rali.parameters()),
    }


def flop_lines(size: str = "448x448", text_tokens: int = 180) -> list[str]:
    """RALI against Q-Insight's fast mode at real shapes: parameters and FLOPs per image, and their ratios."""
    width, height = (int(v) for v in size.split("x"))
    patches = (width // 14) * (height // 14)
    fast = flops_per_image(benchmark_config(seven_b=True), patches // 4, patches, text_tokens)
    counts = parameter_counts()
    lines = [
        f"parameters: Q-Insight {counts['q-insight'] / 1e9:.2f} B, RALI's vision tower "
        f"{counts['rali'] / 1e6:.0f} M ({100 * counts['rali'] / counts['q-insight']:.1f}%)"
    ]
    for side in (224, 336):
        rali = rali_flops(side)
        lines.append(
            f"FLOPs per image: RALI at {side}x{side} {rali / 1e9:.1f} G, Q-Insight fast mode at {size} "
            f"{fast / 1e9:.0f} G: RALI is {100 * rali / fast:.2f}% ({fast / rali:.0f}x fewer)"
        )
    return lines


def compare_rali(judge: Any, rali: Any, size: str, args: Any) -> None:
    """RALI's images/s against ``judge``'s fast mode on the same images, in interleaved rounds."""
    images = make_images(args.images, size)
    judge.score(images[: args.batch_size], mode="fast")  # warm-up, not timed
    rali.score(images[: args.batch_size])
    seconds: dict[str, list[float]] = {"fast": [], "rali": []}
    for _ in range(args.rounds):
        seconds["fast"].append(timed(lambda: judge.score(images, mode="fast"), judge.backend.device))
        seconds["rali"].append(timed(lambda: rali.score(images), rali.backend.device))
    for name, label in (("fast", "(c) fast mode"), ("rali", "(d) RALI")):
        rates = [args.images / s for s in seconds[name]]
        print(
            f"{label}, batch {args.batch_size}: {statistics.median(rates):.2f} images/s median "
            f"({min(rates):.2f}-{max(rates):.2f})"
        )
    print(f"ratio RALI / fast mode: {spread_line([f / r for f, r in zip(seconds['fast'], seconds['rali'])])}")


def compare_modes(judge: Any, stock: tuple[Any, Any], size: str, args: Any) -> dict[str, list[float]]:
    """Times (a), (b) and (c) of bench/throughput.py in interleaved rounds on ``args.images`` images of
    ``size``; prints rates, ratios with their spread and where the time went; returns each mode's seconds."""
    from qinsight_sdk import DecodingOptions

    device = judge.backend.device
    images = make_images(args.images, size)
    fitted = [judge.load_image(image) for image in images]  # the reference gets what the judge's resizing gives
    forced = DecodingOptions(max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens)
    count = min(args.reference_images, args.images)
    runs = {
        "reference": lambda: reference_loop(*stock, fitted[:count], args.new_tokens),
        "reason": lambda: judge.score(images, decoding=forced),
        "fast": lambda: judge.score(images, mode="fast"),
    }
    reference_loop(*stock, fitted[:1], 4)  # warm-up (kernels, caches, lazy imports), not timed
    judge.score(images[: args.batch_size], decoding=DecodingOptions(max_new_tokens=4))
    judge.score(images[: args.batch_size], mode="fast")
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
    print(
        f"--- {size}: {args.images} images ({pixels} pixels each on average after fitting), batch "
        f"{args.batch_size}, {args.new_tokens} new tokens in (a) and (b), {args.rounds} rounds"
    )
    names = {
        "reference": "(a) reference loop (demo: batch 1, sampling, stock model)",
        "reason": f"(b) reason mode, batch {args.batch_size}",
        "fast": f"(c) fast mode, batch {args.batch_size}",
    }
    for mode in MODES:
        rates = [args.images / s for s in seconds[mode]]
        print(f"{names[mode]}: {statistics.median(rates):.2f} images/s median ({min(rates):.2f}-{max(rates):.2f})")
    for mode in ("reason", "fast"):
        ratios = [reference / own for reference, own in zip(seconds["reference"], seconds[mode])]
        print(f"ratio {mode} / reference: {spread_line(ratios)}")
        print(f"  {mode} time: {share_line(*shares[mode])}")
    return seconds


def tournament(judge: Any, args: Any) -> None:
    """A tournament over 8 images of 448x448: its best time, and how many images the tower encoded."""
    from qinsight_sdk import DecodingOptions

    images = make_images(8, "448x448", seed=1)
    fitted = judge.load_image(images[0])
    patches_per_image = fitted.width * fitted.height // 14**2
    judge.decoding = DecodingOptions(max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens)
    best, encoded = float("inf"), 0.0
    for _ in range(args.rounds):
        totals: dict[str, float] = {}
        with time_shares(judge.backend.model, totals, judge.backend.device):
            took = timed(
                lambda: judge.rank(images, strategy="tournament", batch_size=args.batch_size), judge.backend.device
            )
        best, encoded = min(best, took), totals["patches"] / patches_per_image
    print(
        f"--- tournament over 8 images of 448x448 (7 matches, both orders: 28 images asked about), "
        f"{args.new_tokens} new tokens: best {best:.2f} s of {args.rounds}; the vision tower encoded "
        f"{encoded:.0f} images"
    )


def peak_memory(device: Any) -> str:
    import torch

    if device.type == "cuda":
        return f"peak GPU memory {torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB"
    return f"peak process memory {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB"
