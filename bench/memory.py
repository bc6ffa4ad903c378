"""Memory of a judge in full precision, 8-bit and 4-bit, and how far quantized fast scores move.

    python bench/memory.py                     # CPU: the trained tiny judge (built and cached on first use)
    python bench/memory.py --seven-b           # CUDA: a random-weight model of the real 7B shape
    python bench/memory.py --seven-b --dry-run # the same code path on the CPU with the tiny shape (a check)

For each mode (full; 8bit, our LLM.int8 without the outlier split; 8bit-outlier, LLM.int8 with
bitsandbytes' default threshold 6, the alternative we did not choose; 4bit, NF4 with double quantization;
4bit-all, which also quantizes the vision tower and lm_head, the other alternative):

- load footprint: the weights as stored (quantization constants included), and what loading added to the
  GPU's allocated memory (CUDA) or to the process's resident memory (CPU; after a warm-up load, so the
  first row does not carry the libraries' own start-up);
- peak memory above the loaded weights of a fast-mode batch of 8 images at 1024x768, and of a reason-mode
  batch of the same 8 (at most --new-tokens tokens each);
- agreement with full precision: Spearman's rho of fast scores over a fixed set of 16 images (brightness
  levels, which the tiny judge is trained to rate), and the largest score difference;
- batch invariance: the largest change of a fast score between batch sizes 8 and 1.

Then the weights of the real 7B shape per mode, worked out from its parameter counts (a model on the meta
device: nothing is allocated) and the formats' sizes: an estimate. The same arithmetic is printed for the
tiny model beside its measured footprint, which checks it.
"""

from __future__ import annotations

import gc
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from common import benchmark_config, cuda_missing, device_name, make_images, random_model, script_parser
from scipy.stats import spearmanr

from qinsight_sdk import DecodingOptions, QualityJudge
from qinsight_sdk.backends.quantization import UNQUANTIZED_MODULES, quantization_config
from qinsight_sdk.testing import brightness_image, cached_tiny_judge

MODES = ("full", "8bit", "8bit-outlier", "4bit", "4bit-all")
EVERYTHING = ["(none: every linear layer is quantized)"]  # a skip list that matches no module
GIB = 2**30


def parse_args(argv: list[str] | None = None) -> Any:
    parser = script_parser(__doc__)
    parser.add_argument("--seven-b", action="store_true", help="a random model of the 7B shape, on CUDA")
    parser.add_argument("--dry-run", action="store_true", help="with --seven-b: the tiny shape on the CPU")
    parser.add_argument("--size", default="1024x768", help="the batch's image size")
    parser.add_argument("--new-tokens", type=int, default=64, help="reason mode's longest answer")
    parser.add_argument(
        "--cache",
        default=str(Path(tempfile.gettempdir()) / "qinsight-bench-cache"),
        help="where the trained tiny judge is kept",
    )
    return parser.parse_args(argv)


def quantization(mode: str, dtype: torch.dtype) -> Any:
    if mode == "8bit-outlier":
        config = quantization_config("8bit", dtype)
        config.llm_int8_threshold = 6.0
        return config
    if mode == "4bit-all":
        config = quantization_config("4bit", dtype)
        config.llm_int8_skip_modules = EVERYTHING
        return config
    return quantization_config(mode, dtype)


class MemoryProbe:
    """Memory in use now and the peak since ``reset``: CUDA's allocator counters, or on the CPU the
    process's resident memory sampled every millisecond by a thread (torch's CPU allocations are not
    traced)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._peak = 0
        self._sampling = False

    def now(self) -> int:
        if self.device.type == "cuda":
            return torch.cuda.memory_allocated(self.device)
        import psutil

        return psutil.Process().memory_info().rss

    def peak_during(self, run: Callable[[], Any]) -> int:
        """The peak above the memory in use before ``run``."""
        gc.collect()
        before = self.now()
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            run()
            torch.cuda.synchronize(self.device)
            return torch.cuda.max_memory_allocated(self.device) - before
        self._peak, self._sampling = before, True
        sampler = threading.Thread(target=self._sample, daemon=True)
        sampler.start()
        try:
            run()
        finally:
            self._sampling = False
            sampler.join()
        return self._peak - before

    def _sample(self) -> None:
        while self._sampling:
            self._peak = max(self._peak, self.now())
            time.sleep(0.001)


def measure(
    folder: Path, mode: str, device: torch.device, batch: list[Any], agreement_set: list[Any], new_tokens: int
) -> dict[str, Any]:
    probe = MemoryProbe(device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    before = probe.now()
    judge = QualityJudge.from_pretrained(
        folder,
        device=device,
        dtype=dtype,
        local_files_only=True,
        quantization=quantization(mode, dtype),
        decoding=DecodingOptions(max_new_tokens=new_tokens),
    )
    row = {"mode": mode, "footprint": stored_bytes(judge.backend.model), "loaded": probe.now() - before}
    row["fast_peak"] = probe.peak_during(lambda: judge.score(batch, mode="fast", batch_size=8))
    row["reason_peak"] = probe.peak_during(lambda: judge.score(batch, batch_size=8))
    row["scores"] = [r.score for r in judge.score(agreement_set, mode="fast", batch_size=8)]
    alone = [r.score for r in judge.score(agreement_set, mode="fast", batch_size=1)]
    row["batch_change"] = max(abs(a - b) for a, b in zip(row["scores"], alone))
    return row  # the judge goes with this frame; the next measurement collects it first


def stored_bytes(model: torch.nn.Module) -> int:
    """The weights as stored, quantization constants included (what ComfyUI counts as a model's size)."""
    return sum(t.numel() * t.element_size() for t in model.state_dict().values())


def weight_bytes(config: dict[str, Any], element: int = 2, kept: list[str] = UNQUANTIZED_MODULES) -> dict[str, float]:
    """Bytes of the weights per mode for a model of this configuration, from its parameter counts.

    ``element`` bytes a value in full precision (2: bf16); quantized, the language model's linear layers
    take 1 byte a weight plus a float32 scale per output row (8-bit), or half a byte plus NF4's
    double-quantized block scales (one byte per 64 weights, a float32 per 256 blocks: 4-bit); every other
    tensor stays as in full precision.
    """
    from transformers import AutoConfig, Qwen2_5_VLForConditionalGeneration

    with tempfile.TemporaryDirectory() as folder:
        import json

        (Path(folder) / "config.json").write_text(json.dumps(config))
        shape = AutoConfig.from_pretrained(folder, local_files_only=True)
    with torch.device("meta"):
        model = Qwen2_5_VLForConditionalGeneration(shape)
    quantized_weights = quantized_rows = 0
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and not any(skip in name for skip in kept):
            quantized_weights += module.weight.numel()
            quantized_rows += module.out_features
    total = sum(p.numel() for p in model.parameters())
    rest = element * (total - quantized_weights)
    blocks = quantized_weights / 64
    return {
        "full": element * total,
        "8bit": quantized_weights + 4 * quantized_rows + rest,
        "4bit": quantized_weights / 2 + blocks + 4 * blocks / 256 + rest,
    }


def seven_b_folder(dry_run: bool) -> Path:
    """A random model of the 7B shape (the tiny one for a dry run) saved where from_pretrained loads it."""
    folder = Path(tempfile.mkdtemp(prefix="qinsight-memory-bench-"))
    model, _ = random_model(folder, dry_run)
    model.save_pretrained(folder, safe_serialization=True)
    del model
    gc.collect()
    torch.cuda.empty_cache() if torch.cuda.is_available() else None
    return folder


def print_rows(rows: list[dict[str, Any]], device: torch.device) -> None:
    where = "GPU allocated" if device.type == "cuda" else "process RSS"
    print(
        f"{'mode':<13} {'weights':>9} {'load (' + where + ')':>22} {'fast batch 8':>13} {'reason batch 8':>15} "
        f"{'rho vs full':>12} {'max |diff|':>11} {'batch 8 vs 1':>13}"
    )
    full = rows[0]["scores"]
    for row in rows:
        rho = spearmanr(full, row["scores"])[0]
        diff = max(abs(a - b) for a, b in zip(full, row["scores"]))
        print(
            f"{row['mode']:<13} {size(row['footprint']):>9} {size(row['loaded']):>22} {size(row['fast_peak']):>13} "
            f"{size(row['reason_peak']):>15} {rho:>12.4f} {diff:>11.2e} {row['batch_change']:>13.1e}"
        )


def size(value: float) -> str:
    return f"{value / GIB:.2f} GiB" if abs(value) >= GIB / 10 else f"{value / 2**20:.1f} MiB"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.seven_b and cuda_missing(args.dry_run, "bench/memory.py --seven-b"):
        return 1
    device = torch.device("cuda" if args.seven_b and not args.dry_run else "cpu")
    folder = seven_b_folder(args.dry_run) if args.seven_b else cached_tiny_judge(args.cache)
    batch = make_images(8, args.size)
    agreement_set = [brightness_image(level / 15, 70_000 + i, size=112) for i, level in enumerate(range(16))]
    model = (
        ("random tiny shape (dry run)" if args.dry_run else "random 7B shape") if args.seven_b else "trained tiny judge"
    )
    print(
        f"qinsight memory benchmark: {model} on {device_name(device.type == 'cpu')}, batch of 8 at {args.size}, "
        f"reason mode up to {args.new_tokens} tokens, torch {torch.__version__}"
    )
    try:
        measure(folder, "full", device, batch[:1], agreement_set[:2], 1)  # warm-up: libraries' own start-up
        rows = [measure(folder, mode, device, batch, agreement_set, args.new_tokens) for mode in MODES]
    finally:
        if args.seven_b:
            shutil.rmtree(folder, ignore_errors=True)
    print_rows(rows, device)
    tiny = weight_bytes(benchmark_config(seven_b=False), element=2 if device.type == "cuda" else 4)
    measured = {row["mode"]: row["footprint"] for row in rows}
    print("\nweights worked out from parameter counts (an estimate) | measured, this run")
    print("  tiny shape: " + ", ".join(f"{m} {size(tiny[m])} | {size(measured[m])}" for m in ("full", "8bit", "4bit")))
    seven = weight_bytes(benchmark_config(seven_b=True))
    everything = weight_bytes(benchmark_config(seven_b=True), kept=EVERYTHING)
    print(
        "  7B shape:   "
        + ", ".join(f"{m} {seven[m] / 1e9:.1f} GB" for m in ("full", "8bit", "4bit"))
        + f", 4bit-all {everything['4bit'] / 1e9:.1f} GB"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
