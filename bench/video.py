"""Videos per second: the official demo's loop against qinsight's batched video scoring, where the time goes,
and the memory of scoring a long 1080p file.

    python bench/video.py                       # the tiny random model, built on the fly, on CPU
    python bench/video.py --model DIR --device cuda --videos 16

The videos are files written on the fly (H.264 in mp4, 24 fps, --seconds long, --size), judged with the
natural-video profile. In interleaved rounds:
  (a) reference: what the VQ-Insight demo does, one video per generate call: every frame decoded into one
      array first (as torchvision.io.read_video does, which the demo's fallback decoder is), its frames
      sampled and resized by the family's rules, the processor, then greedy generation, on a second copy of
      the weights loaded by plain transformers and never given to the judge;
  (b) reason mode, batched, frames sampled while decoding;
  (c) fast mode, batched (no text generated).
(a) and (b) are forced to the same number of new tokens (--new-tokens). Each round gives each mode's ratio to
(a); the lowest, median and highest over the rounds are printed, with where (c)'s time went: decoding,
resizing and the model (the rest: prompts, batching, results).

Then memory: in a fresh process each, a 2-second and a 60-second 1080p file are scored (fast mode); the
peak resident memory of each and their difference are printed (streaming keeps it flat: only the sampled
frames are kept).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from common import script_parser, spread_line, stock_pipeline, synchronise

from qinsight_sdk import QualityJudge
from qinsight_sdk.backends.checkpoints import default_subfolder, resolve_checkpoint
from qinsight_sdk.io import video_sampling
from qinsight_sdk.judging.decoding import DecodingOptions
from qinsight_sdk.judging.profiles import VQ_INSIGHT_NATURAL
from qinsight_sdk.testing import build_tiny_checkpoint


def parse_args(argv: list[str] | None = None) -> Any:
    parser = script_parser(__doc__)
    parser.add_argument("--model", help="checkpoint folder or hub id (default: the tiny random model)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--videos", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=4.0, help="length of each timed video")
    parser.add_argument("--size", default="640x360", help="WIDTHxHEIGHT of the timed videos")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved repetitions")
    parser.add_argument("--no-memory", action="store_true", help="skip the 60-second 1080p memory check")
    parser.add_argument("--memory-child", nargs=2, metavar=("MODEL", "VIDEO"), help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def write_video(path: Path, seconds: float, width: int, height: int, fps: int = 24) -> Path:
    """A drifting gradient with a little noise, H.264 (ultrafast) in mp4."""
    import av

    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 200, width, dtype=np.float32)[None, :, None]
    noise = rng.integers(0, 24, (height, width, 3), dtype=np.uint8)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps, options={"preset": "ultrafast"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for k in range(round(seconds * fps)):
            frame = (np.roll(ramp, k * 4, axis=1) + noise).clip(0, 255).astype(np.uint8)
            frame = np.broadcast_to(frame, (height, width, 3))
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def read_whole(path: Path) -> tuple[np.ndarray, float]:
    """Every frame in one array and the average rate: torchvision.io.read_video's result."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(stream)])
        return frames, float(stream.average_rate)


def reference_loop(model: Any, processor: Any, paths: list[Path], new_tokens: int) -> None:
    """The demo: decode whole, sample and resize by the rules, one video per greedy generate call."""
    import transformers

    text = processor.apply_chat_template(
        VQ_INSIGHT_NATURAL.messages("score"), tokenize=False, add_generation_prompt=True
    )
    for path in paths:
        frames, fps = read_whole(path)
        indices = video_sampling.frame_indices(len(frames), video_sampling.frame_count(len(frames), fps))
        chosen = frames[indices]
        chosen = video_sampling.resize_frames(chosen, video_sampling.frame_size(*chosen.shape[1:3]))
        extra = {}
        if int(transformers.__version__.split(".")[0]) >= 5:  # the rate the judges were trained with
            extra = {"video_metadata": [{"total_num_frames": len(chosen), "fps": 2.0}], "do_sample_frames": False}
        pixels = torch.from_numpy(chosen).permute(0, 3, 1, 2).float()
        inputs = processor(text=[text], videos=[pixels], return_tensors="pt", **extra).to(model.device)
        with torch.inference_mode():
            model.generate(**inputs, do_sample=False, max_new_tokens=new_tokens, min_new_tokens=new_tokens)


class Shares:
    """Seconds spent resizing (wrapped in place while fast mode runs), and loading (added by
    :func:`timed_loading`): decoding is loading less resizing."""

    def __init__(self) -> None:
        self.load = self.resize = 0.0
        self.active = False  # counting only while fast mode runs
        self._resize = video_sampling.resize_frames

    def __enter__(self) -> Shares:
        def resize(*args: Any) -> Any:
            start = time.perf_counter()
            try:
                return self._resize(*args)
            finally:
                self.resize += time.perf_counter() - start

        video_sampling.resize_frames = resize
        self.active = True
        return self

    def __exit__(self, *_: Any) -> None:
        video_sampling.resize_frames = self._resize
        self.active = False


def timed_loading(judge: QualityJudge, shares: Shares) -> None:
    original = judge.load_video

    def load(source: Any) -> Any:
        start = time.perf_counter()
        try:
            return original(source)
        finally:
            if shares.active:
                shares.load += time.perf_counter() - start

    judge.load_video = load  # type: ignore[method-assign]


def compare(judge: QualityJudge, stock: tuple[Any, Any], paths: list[Path], args: Any) -> None:
    device = judge.backend.device
    forced = DecodingOptions(max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens)
    runs = {
        "reference": lambda: reference_loop(*stock, paths, args.new_tokens),
        "reason": lambda: judge.score(paths, batch_size=args.batch_size, decoding=forced),
        "fast": lambda: judge.score(paths, batch_size=args.batch_size, mode="fast"),
    }
    ratios: dict[str, list[float]] = {"reason": [], "fast": []}
    rates: dict[str, list[float]] = {name: [] for name in runs}
    shares = Shares()
    timed_loading(judge, shares)
    fast_seconds = 0.0
    runs["fast"]()  # warm-up: the first call pays for lazy imports and allocations
    for _ in range(args.rounds):
        seconds = {}
        for name, run in runs.items():
            synchronise(device)
            start = time.perf_counter()
            if name == "fast":
                with shares:
                    run()
            else:
                run()
            synchronise(device)
            seconds[name] = time.perf_counter() - start
            rates[name].append(len(paths) / seconds[name])
        fast_seconds += seconds["fast"]
        for name in ratios:
            ratios[name].append(seconds["reference"] / seconds[name])
    for name, values in rates.items():
        print(f"  {name}: {np.median(values):.2f} videos/s (median over {args.rounds} rounds)")
    for name, values in ratios.items():
        print(f"  {name} / reference: {spread_line(values)}")
    decoding = shares.load - shares.resize
    model = fast_seconds - shares.load
    print(
        f"  fast mode's time: decoding {100 * decoding / fast_seconds:.0f}%, resizing "
        f"{100 * shares.resize / fast_seconds:.0f}%, the model and the rest {100 * model / fast_seconds:.0f}%"
    )


def memory_child(model: str, video: str) -> int:
    judge = QualityJudge.from_pretrained(model, profile="vqinsight-naturalvideo", device="cpu", dtype="fp32")
    judge.score(Path(video).with_suffix(".warm.mp4"), mode="fast")  # everything loaded and allocated once
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result = judge.score(video, mode="fast")
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"peak_mib": after / 1024, "growth_mib": (after - before) / 1024, "ok": result.ok}))
    return 0


def memory(model: str, folder: Path) -> None:
    print("memory: scoring one 1080p file in a fresh process (fast mode, CPU)")
    found = {}
    for seconds in (2, 60):
        path = write_video(folder / f"{seconds}s.mp4", seconds, 1920, 1080)
        write_video(path.with_suffix(".warm.mp4"), 1, 320, 180)
        done = subprocess.run(
            [sys.executable, __file__, "--memory-child", model, str(path)], capture_output=True, text=True, check=True
        )
        found[seconds] = json.loads(done.stdout.strip().splitlines()[-1])
        size = path.stat().st_size / 2**20
        peak, judged = found[seconds]["peak_mib"], found[seconds]["ok"]
        print(f"  {seconds:>2} s ({size:.1f} MiB): peak {peak:.0f} MiB, judged {judged}")
    print(f"  60 s less 2 s: {found[60]['peak_mib'] - found[2]['peak_mib']:+.0f} MiB of peak memory")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.memory_child:
        return memory_child(*args.memory_child)
    folder = Path(tempfile.mkdtemp(prefix="qinsight-bench-video-"))
    model = args.model or str(build_tiny_checkpoint(folder / "model"))
    judge = QualityJudge.from_pretrained(
        model, profile="vqinsight-naturalvideo", device=args.device, dtype=args.dtype, batch_size=args.batch_size
    )
    stock = stock_pipeline(
        resolve_checkpoint(model, default_subfolder(model)), judge.backend.device, judge.backend.dtype
    )
    width, height = (int(v) for v in args.size.split("x"))
    paths = [write_video(folder / f"v{k}.mp4", args.seconds, width, height) for k in range(args.videos)]
    print(
        f"model {model} on {judge.backend.device} ({judge.backend.dtype}), torch threads {torch.get_num_threads()}; "
        f"{args.videos} videos of {args.seconds:g} s at {args.size}, 24 fps"
    )
    compare(judge, stock, paths, args)
    if not args.no_memory:
        memory(model, folder)
    return 0


if __name__ == "__main__":
    sys.exit(main())
