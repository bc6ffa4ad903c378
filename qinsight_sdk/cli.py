"""The ``qinsight`` command: score, degradation, compare and rank, writing JSON lines as results arrive;
eval and train.

Exit codes: 0 when every image got a result, 1 when any row (eval: any item) carries an error, or
(rank) an image got no verdict in any of its matches (all rows are still written), 2 for a usage error
or a model, data or record file that cannot be used (any ``QInsightError``, reported as
``qinsight <command>: error: <message>``; also output that cannot be written: standard output on a full
disk, past a file-size limit or into a closed pipe, or a file named by ``--output``, ``--report``,
``--predictions`` or ``--plot`` that cannot be written, each one line naming what and why), 130 when
interrupted (Ctrl-C: the rows written so far are kept). Any other exception is a bug: it surfaces with
its traceback (Python's exit code 1). With ``--output`` (``eval``: ``--predictions``), rows go to a record file
(:mod:`qinsight_sdk.io.records`) as each item is judged, and a rerun judges only what the file lacks
(``--retry-failed``: also its error rows). ``eval`` writes its JSON report to ``--report``.
``score --from-metadata`` (and ``degradation``) judges nothing: it prints the rows saved in the images
(:mod:`qinsight_sdk.io.image_metadata`). It needs neither torch nor transformers, so the modules that judge
are imported only where a model loads.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import re
import signal
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import __version__
from .backends.checkpoints import (
    COMPARISON_SUBFOLDER,
    DEFAULT_MODEL,
    MODEL_ENV_VAR,
    PROFILE_FILE,
    SCORE_SUBFOLDER,
    checkpoint_file,
    default_model,
    default_subfolder,
)
from .backends.quantization import QUANTIZATIONS
from .errors import QInsightError, UsageError
from .evaluation.data import FORMATS
from .io.image_metadata import MetadataError, read_rows
from .io.images import ImageBounds
from .io.records import RecordStore, check_writable, key_of, make_row, open_store, row_text
from .io.videos import VIDEO_SUFFIXES
from .judging.judge_config import JudgeConfig, resolve_judge_config
from .judging.profiles import PROFILES
from .judging.prompts import PromptOrder
from .judging.results import RESULT_TYPES
from .judging.selection import HYBRID_POOL, STRATEGIES, ranking_steps
from .judging.tasks import TASKS
from .service import TOKEN_ENV_VAR, ServiceSettings

if TYPE_CHECKING:
    from .judging.decoding import DecodingOptions
    from .judging.judge import QualityJudge

logger = logging.getLogger("qinsight")

EXIT_OK, EXIT_ROW_ERRORS, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

# (judge, images, on_result): judges the images, calling on_result(index, result) as each one is done
# (judge, images, write each result, the rows' settings): the settings carry what the judge is asked for (mode)
JudgeImages = Callable[["QualityJudge", list[str], Callable[[int, Any], None], dict[str, Any]], Any]


def _positive(text: str) -> float:
    """argparse type for sizes and durations: a number above 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number above 0, got {text}")
    return value


def _at_least_one(text: str) -> int:
    """argparse type for counts: a whole number of at least 1 (0 was once taken silently)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _named(text: str) -> str:
    """argparse type for a model or profile name: not empty (an unset shell variable would otherwise fall
    back, silently, to downloading the 16 GB default)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("is empty: name a Hugging Face id or a folder")
    return text


def _port(text: str) -> int:
    """argparse type for --port: a TCP port number, 1 to 65535."""
    value = _at_least_one(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"must be at most 65535, got {value}")
    return value


def _max_pixels(text: str) -> int:
    """argparse type for --max-pixels: a preset's pixel count, or a number."""
    try:
        return ImageBounds.preset(text).max_pixels
    except UsageError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


# -- the parser -------------------------------------------------------------------------------------------


class _HelpFormatter(argparse.HelpFormatter):
    """Every flag's help ends with its default where it has one and the text does not already say it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        return help_with_default(action)


def help_with_default(action: argparse.Action) -> str:
    """``action``'s help as ``--help`` shows it (a ``%(default)s`` placeholder left for argparse)."""
    text = action.help or ""
    default = action.default
    if default in (None, False, argparse.SUPPRESS) or action.option_strings == [] or "default" in text:
        return text
    return f"{text} (default: %(default)s)"


def _add_model_options(parser: argparse.ArgumentParser, reference: bool = False) -> None:
    group = parser.add_argument_group("model")
    group.add_argument(
        "--model",
        type=_named,
        help=f"Hugging Face id or local folder (default: ${MODEL_ENV_VAR}, else {DEFAULT_MODEL})",
    )
    with_reference = f", or {COMPARISON_SUBFOLDER} with --reference" if reference else ""
    group.add_argument(
        "--subfolder",
        help=f"subfolder inside the model (default for {DEFAULT_MODEL}: {SCORE_SUBFOLDER}{with_reference})",
    )
    group.add_argument(
        "--judge",
        metavar="NAME|FILE",
        type=_named,
        help=f"the judge profile (prompts, answer format, rating scale): one of "
        f"{', '.join(sorted(PROFILES))}, or a profile file (default: the model's own "
        f"{PROFILE_FILE}, else the profile of a known model id or subfolder, else q-insight)",
    )
    group.add_argument("--revision", help="hub branch, tag or commit")
    group.add_argument("--device", default="auto", help="auto (CUDA, MPS, CPU), cuda, cuda:1, mps or cpu")
    group.add_argument(
        "--dtype",
        default="auto",
        help="auto, bf16, fp16 or fp32 (quantized: of the layers left unquantized, and of the computation)",
    )
    group.add_argument(
        "--quantization",
        choices=("none",) + QUANTIZATIONS,
        default="none",
        help="load the language model's weights 8-bit or 4-bit (bitsandbytes, the [quant] "
        "extra): about 10 or 7 GB of weights for the 7B judge instead of 16.6",
    )
    group.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="allow code shipped with the checkpoint to run (off by default)",
    )
    group = parser.add_argument_group("decoding")
    group.add_argument(
        "--max-new-tokens",
        type=_at_least_one,
        help="the longest answer (default: 512; 1024 with --sample, as the demo)",
    )
    group.add_argument(
        "--sample",
        action="store_true",
        help="decode as the official demo's call did on this checkpoint under transformers 4.51.3 "
        "(up to 1024 tokens; on a checkpoint saved by transformers >= 4.50 that is top-k 1, "
        "i.e. greedy; says which case applies) instead of greedy decoding",
    )
    group.add_argument("--seed", type=int, default=42, help="seed for --sample")
    group.add_argument(
        "--num-samples", type=_at_least_one, default=1, help="answers per image, averaged (implies --sample)"
    )
    group.add_argument(
        "--prompt-order",
        choices=[o.value for o in PromptOrder],
        help="image before the question or after it (default: where the judge's profile puts "
        "it: first for Q-Insight, as trained; its demo put it after)",
    )
    group.add_argument(
        "--max-pixels",
        type=_max_pixels,
        default="official",
        help="official (default: up to 12,845,056 pixels, as the weights were trained and "
        "released), fast (about 1 megapixel: much faster on large images, hides fine "
        "artefacts), or a pixel count; larger images are downscaled",
    )


def _add_output_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--output", "-o", help="write rows to this record file (appending and resuming) instead of to standard output"
    )
    parser.add_argument("--overwrite", action="store_true", help="start --output afresh instead of resuming")


def _add_image_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders of images")
    _add_batch_size(parser)
    parser.add_argument("--recursive", "-r", action="store_true", help="look into subfolders too")


def _add_batch_size(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--batch-size",
        type=_at_least_one,
        default=8,
        help="images judged together (more: faster on a GPU, more memory)",
    )


def _add_command(
    commands: Any, name: str, text: str, handler: Callable[[argparse.Namespace], int], description: str | None = None
) -> argparse.ArgumentParser:
    sub = commands.add_parser(name, help=text, description=description or text, formatter_class=_HelpFormatter)
    sub.set_defaults(func=handler)
    return sub


def _add_row_command(
    commands: Any, name: str, text: str, handler: Callable[[argparse.Namespace], int]
) -> argparse.ArgumentParser:
    sub = _add_command(commands, name, text, handler)
    _add_image_options(sub)
    sub.add_argument("--retry-failed", action="store_true", help="judge again the images whose row has an error")
    sub.add_argument(
        "--from-metadata",
        action="store_true",
        help=f"judge nothing and load no model: print the {name} rows saved in each image (its "
        "'qinsight' PNG text chunk, else its IMAGE.json sidecar), and an error row for an image "
        "without them; standard output only: not with --output (redirect instead) or --ray",
    )
    _add_model_options(sub)
    _add_output_option(sub)
    _add_ray_options(sub)
    return sub


def _add_row_commands(commands: Any) -> None:
    score = _add_row_command(commands, "score", "rate image quality from 1 to 5, with reasoning", _run_score)
    score.add_argument(
        "--mode",
        choices=("reason", "fast"),
        help="reason: generate the reasoning; fast: read the rating's probabilities without "
        "generating text (default: reason, or fast for a judge that writes no text, RALI)",
    )
    _add_row_command(commands, "degradation", "name the distortion and its severity", _run_degradation)


def _add_rank_command(commands: Any) -> None:
    sub = _add_command(commands, "rank", "order images best first (best of N)", _run_rank)
    _add_image_options(sub)
    sub.add_argument(
        "--strategy",
        choices=STRATEGIES,
        default="score",
        help="score: fast scores; tournament: pairwise knockout in both orders; "
        "hybrid: fast scores, then every pair among the top --pool in both orders",
    )
    sub.add_argument("--top-k", type=_at_least_one, help="keep only the best K (default: rank them all)")
    sub.add_argument(
        "--pool",
        type=_at_least_one,
        default=HYBRID_POOL,
        help="finalists for --strategy hybrid, compared pair by pair in both orders",
    )
    sub.add_argument(
        "--prefilter",
        metavar="MODEL",
        type=_named,
        help="a cheaper judge that scores every image first (a model id or folder, or a released "
        "subfolder such as RALI); the judge then ranks only the --keep best",
    )
    sub.add_argument("--keep", type=_at_least_one, default=8, help="images the --prefilter passes on")
    _add_model_options(sub)
    _add_output_option(sub)


def _add_compare_command(commands: Any) -> None:
    sub = _add_command(commands, "compare", "which of two images is better", _run_compare)
    sub.add_argument("image_a", help="the first image (answers call it A)")
    sub.add_argument("image_b", help="the second image (B)")
    sub.add_argument("--reference", help="the degraded input both images were restored from")
    sub.add_argument("--both-orders", action="store_true", help="ask with A and B swapped too and reconcile")
    _add_model_options(sub, reference=True)
    _add_output_option(sub)


def _add_eval_command(commands: Any) -> None:
    sub = _add_command(
        commands,
        "eval",
        "metrics against human labels, resumable (needs the [eval] extra)",
        _run_eval,
        description="Judge labelled images and report the paper's metrics. "
        "Predictions are appended to --predictions as they come; a rerun predicts only what "
        "is missing, and loads no model when nothing is.",
    )
    sub.add_argument(
        "data",
        help="labels: CSV (ours, pyiqa's meta_info, KonIQ-10k's scores), a whitespace list "
        "'image mos [std]', qinsight JSONL, DeQA-Score meta JSON or Q-Insight pairs JSON",
    )
    sub.add_argument("--format", choices=FORMATS, help="the data's format (default: recognised from the file)")
    sub.add_argument(
        "--models",
        nargs="+",
        metavar="MODEL|LIST",
        help="compare judges side by side on scores: each a model (Hugging Face id or folder), or a "
        "file listing one per line as 'MODEL [subfolder=S] [judge=NAME|FILE] [name=LABEL]'; each "
        "runs in turn into its own predictions file, then one table with paired differences",
    )
    sub.add_argument("--image-root", help="folder the data's image paths are relative to (default: its folder)")
    sub.add_argument(
        "--mos-range",
        type=float,
        nargs=2,
        metavar=("LOW", "HIGH"),
        help="the scale of a CSV's MOS, normalised to 1-5 (default: the values as they are, in 1-5)",
    )
    sub.add_argument("--task", choices=TASKS, help="the task to evaluate (needed when the data holds several)")
    sub.add_argument(
        "--predictions",
        help="prediction rows, appended and reused (default: "
        "DATA_NAME.predictions.jsonl in the current folder; with --models, a "
        "folder for DATA_NAME.LABEL.predictions.jsonl, one per judge)",
    )
    sub.add_argument("--report", help="write the report (JSON) here")
    sub.add_argument(
        "--plot",
        help="write a PNG: score against MOS with the fitted curve, the degradation "
        "confusion matrix, or with --models SRCC and PLCC per judge (needs matplotlib)",
    )
    sub.add_argument(
        "--mode",
        choices=("reason", "fast"),
        help="score mode, as for score (default: each judge's own: reason, or fast for RALI)",
    )
    sub.add_argument("--retry-failed", action="store_true", help="predict again the items whose row has an error")
    sub.add_argument("--overwrite", action="store_true", help="start --predictions afresh instead of resuming")
    sub.add_argument(
        "--predictions-only",
        action="store_true",
        help="load no model: metrics from --predictions alone, missing items counted as failed",
    )
    sub.add_argument("--bootstrap", type=int, default=1000, help="resamples for the 95%% intervals (0: none)")
    _add_batch_size(sub)
    _add_model_options(sub)
    _add_ray_options(sub)


def _add_train_command(commands: Any) -> None:
    sub = _add_command(commands, "train", "GRPO fine-tuning from a YAML config (needs the [train] extra)", _run_train)
    source = sub.add_mutually_exclusive_group(required=True)
    source.add_argument("--config", help="the run's YAML config")
    source.add_argument(
        "--example-config", action="store_true", help="print a config with every field, its default and what it does"
    )
    source.add_argument(
        "--accelerate-config", action="store_true", help="print the DeepSpeed ZeRO-3 config for accelerate launch"
    )
    sub.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in output_dir")


def _add_serve_command(commands: Any) -> None:
    sub = _add_command(
        commands,
        "serve",
        "the judge as an HTTP service on Ray Serve (needs the [ray] extra)",
        _run_serve,
        description="Serve the judge over HTTP: POST /score, /degradation, /compare, "
        "/rank, /reward with image bytes (JSON base64 or multipart); requests arriving together "
        "are judged in one batch. qinsight_sdk.client.RemoteJudge is its client.",
    )
    _add_model_options(sub)
    sub.add_argument("--host", default="127.0.0.1", help="the address to listen on (default: loopback only)")
    sub.add_argument("--port", type=_port, default=8000, help="the TCP port to listen on")
    sub.add_argument(
        "--token",
        default=os.environ.get(TOKEN_ENV_VAR),
        help=f"a bearer token every request must carry (default: ${TOKEN_ENV_VAR}; none: open)",
    )
    sub.add_argument(
        "--allow-paths",
        metavar="DIR",
        help="let clients name files inside DIR instead of sending bytes (default: bytes only)",
    )
    sub.add_argument(
        "--replicas", type=_at_least_one, default=1, help="copies of the judge serving requests (one per GPU)"
    )
    sub.add_argument(
        "--gpus-per-replica",
        type=float,
        help="GPUs each replica reserves; fractions share a GPU (default: 1 where CUDA is, else 0)",
    )
    sub.add_argument("--max-batch-size", type=_at_least_one, default=8, help="requests judged together")
    sub.add_argument(
        "--batch-wait-ms", type=float, default=50.0, help="how long a request waits for others to batch with"
    )
    sub.add_argument("--max-request-mb", type=float, default=64.0, help="the largest request body")
    sub.add_argument("--max-images", type=_at_least_one, default=64, help="the most images in one request")
    limits = sub.add_argument_group("limits on each request, and on all of them together")
    default = ServiceSettings()  # the flags' defaults are the service's own, so the two cannot drift
    for flag, kind, value, text in (
        (
            "--max-image-mp",
            _positive,
            default.max_image_pixels / 1e6,
            "megapixels of one image, read from its header before decoding",
        ),
        (
            "--max-request-mp",
            _positive,
            default.max_request_pixels / 1e6,
            "megapixels of all the images of one request",
        ),
        (
            "--max-pool",
            _at_least_one,
            default.max_pool,
            "the largest hybrid ranking pool: pool x (pool - 1) comparisons",
        ),
        (
            "--body-timeout-s",
            _positive,
            default.body_timeout_s,
            "a request's whole body must arrive within this, or it gets 408",
        ),
        (
            "--request-timeout-s",
            _positive,
            default.request_timeout_s,
            "judging a request stops after this, and it gets 504",
        ),
        (
            "--max-inflight-mb",
            _positive,
            default.max_inflight_bytes / 2**20,
            "request bodies held at once; past it a request gets 503 and Retry-After",
        ),
        ("--keep-alive-s", _positive, default.keep_alive_s, "an idle kept-alive connection is closed after this"),
        (
            "--drain-s",
            _positive,
            default.drain_s,
            "on SIGTERM or Ctrl-C, how long requests in flight may take to finish",
        ),
    ):
        limits.add_argument(flag, type=kind, default=value, help=f"{text} (default: {value:g})")
    _add_ray_address(sub)


def _add_ray_address(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    parser.add_argument(
        "--ray-address", default=None, help="a Ray cluster to join (default: $RAY_ADDRESS, else a local one)"
    )


def _add_ray_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("Ray (the [ray] extra)")
    group.add_argument(
        "--ray",
        action="store_true",
        help="judge on a pool of judge actors on a Ray cluster (same rows, keys and resume)",
    )
    group.add_argument("--workers", type=_at_least_one, default=1, help="with --ray: judge actors (one per GPU)")
    group.add_argument(
        "--gpus-per-worker",
        type=float,
        help="with --ray: GPUs each actor reserves; fractions share a GPU (default: 1 where CUDA is, else 0)",
    )
    _add_ray_address(group)


def build_parser() -> argparse.ArgumentParser:
    """Each subcommand's parser sets ``func`` to its handler, so ``main`` needs no table of commands."""
    parser = argparse.ArgumentParser(
        prog="qinsight", description="Judge image quality with Q-Insight.", formatter_class=_HelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    _add_row_commands(commands)
    _add_rank_command(commands)
    _add_compare_command(commands)
    _add_eval_command(commands)
    _add_train_command(commands)
    _add_serve_command(commands)
    return parser


# -- shared by the handlers -------------------------------------------------------------------------------


def expand_paths(paths: Iterable[str], recursive: bool, media: str = "image") -> list[str]:
    """Files as given; folders replaced by the images (``media="video"``: the videos) inside them, sorted."""
    expanded: list[str] = []
    for given in paths:
        if os.path.isdir(given):  # unlike Path.is_dir, never raises (a name too long is an error row)
            found = _files_in(given, recursive, _suffixes(media))
            if not found:
                raise UsageError(f"no {media}s found in folder {given}")
            expanded.extend(found)
        else:
            expanded.append(given)  # missing or unreadable files become error rows
    return expanded


def _suffixes(media: str) -> frozenset[str]:
    """The file extensions a folder scan takes: those Pillow opens ("image"), :data:`VIDEO_SUFFIXES`
    ("video"), or both (saved rows are read from images and videos alike)."""
    from PIL import Image

    Image.init()
    images = frozenset(ext for ext, kind in Image.registered_extensions().items() if kind in Image.OPEN)
    return {"image": images, "video": VIDEO_SUFFIXES}.get(media, images | VIDEO_SUFFIXES)


def _files_in(folder: str, recursive: bool, suffixes: frozenset[str]) -> list[str]:
    """The regular files in ``folder`` (and below) with one of ``suffixes``.

    os.walk does not enter linked folders, so a link loop cannot trap the scan, and only regular files
    are taken, so a FIFO named like an image is never opened (reading it would wait forever).
    """
    found = []
    for root, _, files in os.walk(folder):
        found += [
            os.path.join(root, name)
            for name in files
            if Path(name).suffix.lower() in suffixes and os.path.isfile(os.path.join(root, name))
        ]
        if not recursive:
            break
    return sorted(found)


def _decoding(args: argparse.Namespace, comparison: bool = False, say: bool = False) -> DecodingOptions:
    """Greedy, or with --sample what the official demo sampled with on this checkpoint (``say``: print
    which case of the demo's decoding applied on standard error)."""
    from .judging.decoding import DecodingOptions, official_demo_sampling

    length: dict[str, Any] = {} if args.max_new_tokens is None else {"max_new_tokens": args.max_new_tokens}
    if args.num_samples > 1 or args.sample:
        model, subfolder = _checkpoint(args, comparison)
        config: Path | dict[str, Any] = checkpoint_file(model, "generation_config.json", subfolder, args.revision) or {}
        if say:
            print(f"qinsight {args.command}: --sample: {official_demo_sampling(config)[1]}", file=sys.stderr)
        return DecodingOptions.official_demo(config, seed=args.seed, num_samples=args.num_samples, **length)
    return DecodingOptions(**length)


def _checkpoint(args: argparse.Namespace, comparison: bool) -> tuple[str, str | None]:
    model = args.model or default_model()
    return model, args.subfolder if args.subfolder is not None else default_subfolder(model, comparison)


def _load_judge(args: argparse.Namespace, comparison: bool) -> Any:
    """The judge, or with --ray a pool of judges on a Ray cluster with the same batch methods, built from the
    configuration the rows' settings came from."""
    config = _judge_config(args, comparison)
    if getattr(args, "ray", False):
        from .distributed import DistributedJudge

        return DistributedJudge(
            config,
            workers=args.workers,
            gpus_per_worker=_gpus(args, args.gpus_per_worker),
            batch_size=args.batch_size,
            address=args.ray_address,
        )
    from .judging.judge import QualityJudge

    return QualityJudge.from_config(config)


def _gpus(args: argparse.Namespace, given: float | None) -> float:
    """GPUs per Ray actor: as given, else one where the judge would run on CUDA, else none."""
    if given is not None:
        return given
    return 1.0 if args.device in ("auto", "cuda") and _cuda_available() else 0.0


def _judge_config(args: argparse.Namespace, comparison: bool = False) -> JudgeConfig:
    """The judgement's configuration from the model and decoding options, resolved once per command (and
    said on standard error: which profile, so a user sees which prompts and answer format scores come from)."""
    cached = vars(args).setdefault("_judge_configs", {})
    if comparison not in cached:
        model, subfolder = _checkpoint(args, comparison)
        config = resolve_judge_config(
            model,
            subfolder,
            revision=args.revision,
            profile=args.judge,
            device=args.device,
            dtype=args.dtype,
            quantization=args.quantization,
            image_bounds=ImageBounds(max_pixels=args.max_pixels),
            prompt_order=args.prompt_order,
            decoding=_decoding(args, comparison, say=True),
            trust_remote_code=args.trust_remote_code,
        )
        print(
            f"qinsight {args.command}: judge profile {config.profile.name!r} ({config.profile_source})", file=sys.stderr
        )
        cached[comparison] = config
    return cached[comparison]


def _settings(
    args: argparse.Namespace, asks: Sequence[str], comparison: bool = False, fast: bool = False, **task_settings: Any
) -> dict[str, Any]:
    """The rows' settings, worked out before a model loads (from the same configuration the judge is then
    built from), so that a record file made another way is refused at once, as is a judge that cannot do a
    task it ``asks`` (or a fast score, with mode fast)."""
    config = _judge_config(args, comparison)
    for task in asks:
        config.profile.prompt(task)
    if "mode" in task_settings:  # resolved here once: the judge is then asked for the mode the rows record
        task_settings["mode"] = config.mode(task_settings["mode"])
    if fast or task_settings.get("mode") == "fast":
        config.profile.fast_prefix()
    return config.settings(**task_settings)


@contextmanager
def _record_store(
    args: argparse.Namespace, task: str, settings: dict[str, Any], retry_failed: bool = False
) -> Iterator[RecordStore | None]:
    """The --output record store, opened and locked (None: rows go to standard output)."""
    if args.output is None:
        yield None
        return
    _check_output(args.output, "the rows")
    store = open_store(args.output, task, settings, overwrite=args.overwrite, retry_failed=retry_failed)
    try:
        yield store
    finally:
        store.close()


def _emit(
    store: RecordStore | None, task: str, settings: dict[str, Any], paths: Sequence[str], result: dict[str, Any]
) -> None:
    """One row to the record store, or to standard output in the same schema."""
    if store is not None:
        store.write(paths, result)
    else:
        print(row_text(make_row(task, paths, settings, result)), flush=True)


class OutputError(QInsightError):
    """Output that cannot be written: standard output (a full disk, a file-size limit, a closed pipe) or a
    file the command was told to write (a name too long, a folder that cannot be made, a full disk). The
    message names which, and why; exit code 2."""

    def __init__(self, message: str, stdout: bool = False) -> None:
        super().__init__(message)
        self.stdout = stdout


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc)


def _shown(path: str | os.PathLike[str]) -> str:
    """A path for a one-line message: a name too long to be a file is cut in the middle, with its length."""
    text = str(path)
    return text if len(text) <= 160 else f"{text[:60]}...{text[-60:]} ({len(text)} characters)"


def _check_output(path: str | os.PathLike[str], what: str) -> None:
    """Before a model loads: a file to be written whose name the system refuses (too long, a loop of
    links) is one line, as a folder or a path below a file already is (``records.check_writable``)."""
    try:
        check_writable(path)
    except OSError as exc:
        raise OutputError(f"cannot write {what} to {_shown(path)}: {_reason(exc)}") from None


def _check_outputs(args: argparse.Namespace, predictions: Path | None = None) -> None:
    """eval's files, checked before anything is predicted: the predictions (only read with
    --predictions-only, so nothing is created for them then), the report and the figure."""
    if predictions is not None and args.predictions_only:
        try:
            os.stat(predictions)
        except (FileNotFoundError, NotADirectoryError):
            pass  # no predictions: every item counts as failed, as the report says
        except OSError as exc:
            raise UsageError(f"cannot read the predictions {_shown(predictions)}: {_reason(exc)}") from None
    elif predictions is not None:
        _check_output(predictions, "the predictions")
    if args.report:
        _check_output(args.report, "the report")
    if args.plot:
        _check_output(args.plot, "the figure")


def _write_report(path: str, result: dict[str, Any], predictions: Path) -> None:
    try:
        Path(path).write_text(json.dumps(result, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    except OSError as exc:
        raise OutputError(
            f"cannot write the report to {_shown(path)}: {_reason(exc)}; the predictions are kept in {predictions}"
        ) from None


class _GuardedStdout:
    """Standard output for the length of one command: a write or flush that fails (a full disk, a
    file-size limit, whose SIGXFSZ Python ignores so that it fails with EFBIG, a closed pipe) raises an
    :class:`OutputError` naming standard output. Neither argparse, which drops an OSError while printing
    help, nor a handler's own ``except OSError`` takes it for something else."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except OSError as exc:
            raise _stdout_failed(exc) from None

    def flush(self) -> None:
        try:
            self._stream.flush()
        except OSError as exc:
            raise _stdout_failed(exc) from None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _stdout_failed(exc: OSError) -> OutputError:
    if isinstance(exc, BrokenPipeError):  # the reader went away (`| head -1`)
        return OutputError("the output pipe was closed; later rows were not written", stdout=True)
    return OutputError(f"cannot write to standard output: {_reason(exc)}", stdout=True)


def _discard_stdout(stream: Any) -> None:
    """After standard output failed: what is still buffered goes nowhere, so that Python's flush at exit
    adds no second error (a stream without a descriptor, as under pytest, is left alone)."""
    try:
        descriptor = stream.fileno()
    except (AttributeError, OSError, ValueError):
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, descriptor)
    os.close(devnull)


def _flush_stdout() -> None:
    if sys.stdout is not None:
        sys.stdout.flush()


def _say(line: str) -> None:
    """One line on standard error; if that fails too, there is no one left to tell."""
    try:
        print(line, file=sys.stderr, flush=True)
    except OSError:
        pass


def _distinct(images: list[str]) -> dict[str, str]:
    """Each file once, however it was named (``a.png``, ``./a.png``, an absolute path, a link): its
    record key, and the name it was first given. Keys are worked out once here (each is a few syscalls)."""
    named = {key_of(image): image for image in reversed(images)}
    return dict(reversed(named.items()))


def _write_image_rows(args: argparse.Namespace, task: str, judge_images: JudgeImages, **task_settings: Any) -> int:
    """Score and degradation differ only in the judge's method; rows go out as each batch finishes.
    Everything that can be wrong with the paths or the output file is found before the model loads."""
    if args.from_metadata:
        return _list_saved_rows(args, task)
    media = _judge_config(args).profile.media
    images = _distinct(expand_paths(args.paths, args.recursive, media))
    settings = _settings(args, [task], **task_settings)
    with _record_store(args, task, settings, args.retry_failed) as store:
        pending = [image for key, image in images.items() if store is None or not store.done(key)]
        if store is not None and len(pending) < len(images):
            failed = f", {store.failed()} of them with an error (--retry-failed judges those again)"
            print(
                f"resuming {args.output}: {len(images) - len(pending)} of {len(images)} {media}s already done"
                + (failed if store.failed() else ""),
                file=sys.stderr,
            )
        if not pending:
            return EXIT_ROW_ERRORS if store is not None and store.failed() else EXIT_OK
        judge = _load_judge(args, comparison=False)
        errors = 0
        with _progress(len(pending), rows_on_terminal=store is None, unit=media) as bar:

            def write(index: int, result: Any) -> None:
                nonlocal errors
                errors += result.error is not None
                _emit(store, task, settings, [pending[index]], result.to_dict())
                bar.update()

            judge_images(judge, pending, write, settings)
        earlier = store.failed() - errors if store is not None else 0
    print(f"{args.command}: {len(pending)} {media}s, {errors} with errors", file=sys.stderr)
    return EXIT_ROW_ERRORS if errors or earlier else EXIT_OK


def _progress(total: int, rows_on_terminal: bool, unit: str = "image") -> Any:
    """A progress bar on standard error (count, rate, time left), shown only on a terminal and not over
    rows that standard output is printing to the same terminal meanwhile."""
    from tqdm.auto import tqdm

    quiet = not sys.stderr.isatty() or (rows_on_terminal and sys.stdout.isatty())
    return tqdm(total=total, unit=unit, file=sys.stderr, disable=quiet, dynamic_ncols=True)


def _list_saved_rows(args: argparse.Namespace, task: str) -> int:
    """--from-metadata: the rows saved in the images, printed as judging prints them, so one reader takes
    both. An image without them is an error row naming why, like an image that could not be judged."""
    if args.output is not None:
        raise UsageError(
            "--from-metadata prints the saved rows to standard output only: drop --output and "
            "redirect instead (> rows.jsonl)"
        )
    if args.ray:
        raise UsageError("--from-metadata loads no model, so there is nothing to run on Ray: drop --ray")
    missing = 0
    images = list(_distinct(expand_paths(args.paths, args.recursive, "image or video")).values())
    for image in images:
        try:
            found = read_rows(image, task)
        except MetadataError as exc:
            missing += 1
            found = [make_row(task, [image], None, RESULT_TYPES[task](error=str(exc)).to_dict())]
        for row in found:
            print(row_text(row), flush=True)
    print(f"{args.command}: {len(images)} files, {missing} without qinsight {task} metadata", file=sys.stderr)
    return EXIT_ROW_ERRORS if missing else EXIT_OK


# -- one handler per subcommand ---------------------------------------------------------------------------


def _run_score(args: argparse.Namespace) -> int:
    return _write_image_rows(
        args,
        "score",
        lambda judge, images, write, settings: judge.score(
            images, batch_size=args.batch_size, on_result=write, mode=settings["mode"]
        ),
        mode=args.mode,
    )


def _run_degradation(args: argparse.Namespace) -> int:
    return _write_image_rows(
        args,
        "degradation",
        lambda judge, images, write, settings: judge.degradation(images, batch_size=args.batch_size, on_result=write),
    )


def _run_compare(args: argparse.Namespace) -> int:
    paths = ([args.reference] if args.reference else []) + [args.image_a, args.image_b]
    settings = _settings(args, ["comparison"], comparison=args.reference is not None, both_orders=args.both_orders)
    with _record_store(args, "comparison", settings) as store:
        row = store.rows.get(key_of(*paths)) if store is not None else None
        if row is not None:
            print(f"compare: {args.output} already holds this pair (winner {row.get('winner')})", file=sys.stderr)
            return EXIT_ROW_ERRORS if row.get("error") else EXIT_OK
        judge = _load_judge(args, comparison=args.reference is not None)
        result = judge.compare(args.image_a, args.image_b, reference=args.reference, both_orders=args.both_orders)
        _emit(store, "comparison", settings, paths, result.to_dict())
    return EXIT_ROW_ERRORS if result.error else EXIT_OK


def _run_rank(args: argparse.Namespace) -> int:
    """The order is known only once every image is judged, so rows are written at the end; a rerun
    finds the ranking whole (nothing to do) or judges it all again."""
    distinct = _distinct(expand_paths(args.paths, args.recursive, _judge_config(args).profile.media))
    images = list(distinct.values())
    field = hashlib.sha256(json.dumps(sorted(distinct)).encode()).hexdigest()
    asks = {"score": ["score"], "tournament": ["comparison"]}.get(args.strategy, ["score", "comparison"])
    prefilter = _prefilter_options(args)
    cascade = {} if prefilter is None else {"keep": args.keep, "prefilter": _settings(prefilter, ["score"], fast=True)}
    settings = _settings(
        args,
        asks,
        fast="score" in asks,
        strategy=args.strategy,
        top_k=args.top_k,
        pool=args.pool if args.strategy == "hybrid" else None,
        images=field[:16],
        **cascade,
    )
    with _record_store(args, "rank", settings) as store:
        if store is not None and len(store.rows) == min(args.top_k or len(images), len(images)):
            print(f"rank: {args.output} already holds this ranking", file=sys.stderr)
            flagged = any(row.get("no_verdict") for row in store.rows.values())
            return EXIT_ROW_ERRORS if store.failed() or flagged else EXIT_OK
        if store is not None:
            store.clear()
        judge = _load_judge(args, comparison=False)
        ranked = len(images) if prefilter is None else min(args.keep, len(images))
        steps = ranking_steps(ranked, args.strategy, args.pool) + (0 if prefilter is None else len(images))
        with _progress(steps, rows_on_terminal=False, unit="step") as bar:  # rows come after it
            ranking = judge.rank(
                images,
                strategy=args.strategy,
                top_k=args.top_k,
                pool=args.pool,
                batch_size=args.batch_size,
                keep=args.keep,
                prefilter=None if prefilter is None else _load_judge(prefilter, comparison=False),
                on_result=lambda _step, _result: bar.update(),
            )
        for place, (index, score) in enumerate(zip(ranking.order, ranking.scores), start=1):
            _emit(
                store,
                "rank",
                settings,
                [images[index]],
                {
                    "rank": place,
                    "score": score,
                    "error": ranking.errors.get(index),
                    "no_verdict": ranking.unjudged.get(index),
                },
            )
    print(
        f"rank: {len(images)} images by {ranking.decided_by}; {ranking.comparisons} comparisons, "
        f"{ranking.failed_matches} matches without a verdict; {len(ranking.errors)} images could not be "
        f"judged, {len(ranking.unjudged)} got no verdict in any match",
        file=sys.stderr,
    )
    return EXIT_ROW_ERRORS if ranking.errors or ranking.unjudged else EXIT_OK


def _prefilter_options(args: argparse.Namespace) -> argparse.Namespace | None:
    """The --prefilter judge's options: the judge's own, with its model and the profile its files choose."""
    if args.prefilter is None:
        return None
    if getattr(args, "ray", False):
        raise UsageError("--prefilter runs both judges on this machine: drop --ray")
    entry = _judge_entry(args.prefilter, {}, None, None)
    return _for_judge(args, model=entry.model, subfolder=entry.subfolder, judge=None, quantization="none")


def _for_judge(args: argparse.Namespace, **changes: Any) -> argparse.Namespace:
    """``args`` for another judge: its own options, and none of the configuration resolved for this one."""
    return argparse.Namespace(**{**{k: v for k, v in vars(args).items() if k != "_judge_configs"}, **changes})


def _run_eval(args: argparse.Namespace) -> int:
    """Predictions are appended as they come, so Ctrl-C exits 130 with nothing lost and a rerun resumes."""
    from .evaluation.runner import evaluate, load_items, summary_lines

    items = load_items(args.data, args.image_root, args.task, args.mos_range, args.format)
    if args.models:
        return _run_eval_of_judges(args, items)
    task = items[0].sample.task
    predictions = Path(args.predictions or f"{Path(args.data).stem}.predictions.jsonl")
    with_reference = any(len(i.sample.images) == 3 for i in items)  # only pairs with a reference have three
    _check_outputs(args, predictions)
    task_settings = {"score": {"mode": args.mode}, "comparison": {"both_orders": False}}.get(task, {})
    settings = None if args.predictions_only else _settings(args, [task], comparison=with_reference, **task_settings)
    load = None if args.predictions_only else (lambda: _load_judge(args, comparison=with_reference))
    try:
        mode = settings.get("mode") if settings else args.mode  # as resolved for the rows
        result = evaluate(
            items,
            predictions,
            load,
            mode=mode,
            batch_size=args.batch_size,
            retry_failed=args.retry_failed,
            overwrite=args.overwrite,
            resamples=args.bootstrap,
            plot=args.plot,
            settings=settings,
            image_root=args.image_root or Path(args.data).parent,
        )
    except KeyboardInterrupt:
        print(
            f"eval: interrupted; the predictions so far are in {predictions}: rerun the same command to continue",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    result["data"] = args.data
    result["settings"] = settings  # what the predictions were made with (None: only read, never made)
    if args.report:
        _write_report(args.report, result, predictions)
    for line in summary_lines(result):
        print(line)
    _flush_stdout()  # the metrics written, or their failure said, before the note on where the files are
    print(
        f"eval: predictions in {predictions}"
        + (f", report in {args.report}" if args.report else "")
        + (f", figure in {args.plot}" if args.plot else ""),
        file=sys.stderr,
    )
    return EXIT_ROW_ERRORS if result["failed"] else EXIT_OK


def _run_eval_of_judges(args: argparse.Namespace, items: list[Any]) -> int:
    """``eval --models``: each judge in turn, then the side-by-side table."""
    from .evaluation.runner import JudgeRun, compare_judges, comparison_lines

    if args.model is not None:
        raise UsageError("--model names one judge; with --models list them all there")
    folder = Path(args.predictions or ".")
    try:
        if folder.is_file():
            raise UsageError(
                f"with --models, --predictions is a folder for one predictions file per judge; {folder} is a file"
            )
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot write the predictions to the folder {_shown(folder)}: {_reason(exc)}") from None
    _check_outputs(args)
    runs = []
    for entry in judge_entries(args.models, args.subfolder, args.judge):
        options = _for_judge(args, model=entry.model, subfolder=entry.subfolder, judge=entry.judge)
        settings = None if args.predictions_only else _settings(options, ["score"], mode=args.mode)
        load = None if args.predictions_only else (lambda options=options: _load_judge(options, comparison=False))
        runs.append(
            JudgeRun(
                entry.name, folder / f"{Path(args.data).stem}.{_slug(entry.name)}.predictions.jsonl", load, settings
            )
        )
    try:
        result = compare_judges(
            items,
            runs,
            mode=args.mode,
            batch_size=args.batch_size,
            retry_failed=args.retry_failed,
            overwrite=args.overwrite,
            resamples=args.bootstrap,
            plot=args.plot,
            image_root=args.image_root or Path(args.data).parent,
        )
    except KeyboardInterrupt:
        print(
            f"eval: interrupted; the predictions so far are in {folder}: rerun the same command to continue",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    result["data"] = args.data
    if args.report:
        _write_report(args.report, result, folder)
    for line in comparison_lines(result):
        print(line)
    _flush_stdout()  # the metrics written, or their failure said, before the note on where the files are
    print(
        f"eval: predictions in {', '.join(str(r.predictions) for r in runs)}"
        + (f", report in {args.report}" if args.report else "")
        + (f", figure in {args.plot}" if args.plot else ""),
        file=sys.stderr,
    )
    return EXIT_ROW_ERRORS if any(j["failed"] for j in result["judges"]) else EXIT_OK


@dataclass(frozen=True)
class JudgeEntry:
    """One judge of ``eval --models``: where its weights are, its profile, and its name in the table."""

    model: str
    subfolder: str | None
    judge: str | None
    name: str


# a released subfolder of ByteDance/Q-Insight names its judge on its own (--models RALI, --prefilter RALI)
_RELEASED_SUBFOLDERS = {p.subfolder for p in PROFILES.values() if p.subfolder}


def judge_entries(given: Sequence[str], subfolder: str | None = None, judge: str | None = None) -> list[JudgeEntry]:
    """The judges ``--models`` names: each value a model, or a list file of ``MODEL [key=value ...]`` lines
    (keys subfolder, judge, name; ``#`` starts a comment). ``subfolder`` and ``judge`` are the defaults of
    entries that set none. Names default to the model (and subfolder), made unique."""
    entries: list[JudgeEntry] = []
    for value in given:
        if os.path.isfile(value):
            entries.extend(_listed_judges(Path(value), subfolder, judge))
        else:
            entries.append(_judge_entry(value, {}, subfolder, judge))
    seen: dict[str, int] = {}
    unique = []
    for entry in entries:
        seen[entry.name] = seen.get(entry.name, 0) + 1
        unique.append(entry if seen[entry.name] == 1 else replace(entry, name=f"{entry.name}#{seen[entry.name]}"))
    return unique


def _listed_judges(path: Path, subfolder: str | None, judge: str | None) -> list[JudgeEntry]:
    entries = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        options = dict(word.split("=", 1) for word in words[1:] if "=" in word)
        wrong = [w for w in words[1:] if "=" not in w] + sorted(set(options) - {"subfolder", "judge", "name"})
        if wrong:
            raise UsageError(f"{path}:{number}: expected 'MODEL [subfolder=S] [judge=J] [name=N]', not {wrong[0]!r}")
        entries.append(_judge_entry(words[0], options, subfolder, judge))
    if not entries:
        raise UsageError(f"{path} lists no models")
    return entries


def _judge_entry(model: str, options: dict[str, str], subfolder: str | None, judge: str | None) -> JudgeEntry:
    if not os.path.exists(model) and model in _RELEASED_SUBFOLDERS and "subfolder" not in options:
        model, options = DEFAULT_MODEL, {**options, "subfolder": model}  # "RALI": the released judge of that name
    chosen = options.get("subfolder", subfolder if subfolder is not None else default_subfolder(model))
    name = options.get("name") or (Path(model).name if os.path.isdir(model) else model) + (
        f"/{chosen}" if chosen else ""
    )
    return JudgeEntry(model, chosen, options.get("judge", judge), name)


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "judge"


def _run_train(args: argparse.Namespace) -> int:
    """The training stack is imported only here: printing a config must work without the [train] extra."""
    from .train import config_template

    if args.example_config or args.accelerate_config:
        print(config_template("example" if args.example_config else "zero3"), end="")
        return EXIT_OK
    from .train import TrainConfig, train

    final = train(TrainConfig.from_yaml(args.config), resume=args.resume)
    print(f"train: the trained model is in {final}", file=sys.stderr)
    return EXIT_OK


def _run_serve(args: argparse.Namespace) -> int:
    """Runs until SIGTERM or Ctrl-C, then drains: requests in flight finish (up to ``--drain-s``), new ones
    get 503, and Serve and Ray shut down. Ray is imported only here: the other commands work without it."""
    from .distributed import require_ray
    from .service import build_app

    settings = ServiceSettings(
        token=args.token,
        max_request_bytes=int(args.max_request_mb * 2**20),
        max_images=args.max_images,
        allow_paths=args.allow_paths,
        max_batch_size=args.max_batch_size,
        batch_wait_s=args.batch_wait_ms / 1000,
        max_image_pixels=int(args.max_image_mp * 1e6),
        max_request_pixels=int(args.max_request_mp * 1e6),
        max_pool=args.max_pool,
        body_timeout_s=args.body_timeout_s,
        request_timeout_s=args.request_timeout_s,
        max_inflight_bytes=int(args.max_inflight_mb * 2**20),
        keep_alive_s=args.keep_alive_s,
        drain_s=args.drain_s,
    )
    if not (args.ray_address or os.environ.get("RAY_ADDRESS")):
        # the Ray started here serves this machine alone: all its own ports, metrics included, on loopback
        # (Ray's switch for single-machine clusters; read when Ray is imported)
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    require_ray("serve")
    import ray
    from ray import serve

    if args.host not in ("127.0.0.1", "::1", "localhost") and not args.token:
        logger.warning("serving on %s without a token: anyone who can reach it can use it (--token)", args.host)
    gpus = _gpus(args, args.gpus_per_replica)
    ray.init(address=args.ray_address, include_dashboard=False)
    signal.signal(signal.SIGTERM, _interrupt)  # what systemd and Kubernetes send: stopped as Ctrl-C is
    try:
        serve.start(http_options={"host": args.host, "port": args.port, "keep_alive_timeout_s": settings.keep_alive_s})
        serve.run(build_app(_judge_config(args), settings, args.replicas, gpus), route_prefix="/", name=SERVE_APP)
        print(f"serve: the judge answers at http://{args.host}:{args.port} (Ctrl-C stops it)", file=sys.stderr)
        _wait_for_ctrl_c()
    except KeyboardInterrupt:
        print(f"serve: stopping: requests in flight have {settings.drain_s:g} s to finish", file=sys.stderr)
        _drain(serve.get_app_handle(SERVE_APP), settings.drain_s)
    finally:
        serve.shutdown()
        ray.shutdown()
    print("serve: stopped", file=sys.stderr)
    return EXIT_OK


SERVE_APP = "qinsight"


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _drain(gateway: Any, grace_s: float) -> None:
    """New requests refused from now on; wait for those in flight, up to ``grace_s``."""
    deadline = time.monotonic() + grace_s
    try:
        while gateway.drain.remote().result(timeout_s=grace_s) and time.monotonic() < deadline:
            time.sleep(0.1)
    except Exception as exc:
        logger.warning("serve: could not drain the requests in flight (%s); stopping", exc)


def _wait_for_ctrl_c() -> None:
    while True:
        time.sleep(3600)


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def main(argv: list[str] | None = None) -> int:
    """Errors qinsight raises on purpose (a ``QInsightError``) are the user's to fix: a one-line message
    and exit code 2; so is output that cannot be written (standard output, or a file the command was
    told to write), and any other error of the system about a named file. Anything else is a bug and
    keeps its traceback."""
    stdout = sys.stdout
    if stdout is not None:
        sys.stdout = _GuardedStdout(stdout)
    try:
        return _run(argv, stdout)
    finally:
        sys.stdout = stdout


def _run(argv: list[str] | None, stdout: Any) -> int:
    name = "qinsight"
    try:
        try:
            args = build_parser().parse_args(argv)
        except SystemExit:
            _flush_stdout()  # --help's text is written only now: its failure is an OutputError, not lost
            raise
        name = f"qinsight {args.command}"
        if not getattr(args, "from_metadata", False):  # listing saved rows needs no transformers
            from transformers.utils import logging as transformers_logging

            transformers_logging.disable_progress_bar()  # weight-loading bars would drown the summary
        code = args.func(args)
        _flush_stdout()  # output still buffered fails here, while the exit code can still say so
        return code
    except QInsightError as exc:
        if isinstance(exc, OutputError) and exc.stdout:
            _discard_stdout(stdout)
        _say(f"{name}: error: {exc}")
        return EXIT_USAGE
    except KeyboardInterrupt:
        _say(
            f"{name}: interrupted; the rows written so far are kept (with --output, rerun the same command to continue)"
        )
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # a pipe other than standard output's, which is an OutputError
        _say(f"{name}: error: the output pipe was closed; later rows were not written")
        return EXIT_USAGE
    except OSError as exc:
        if exc.filename is None:
            raise  # nothing to name: not known to be the user's to fix, so it keeps its traceback
        _say(f"{name}: error: {_shown(exc.filename)}: {_reason(exc)}")
        return EXIT_USAGE


if __name__ == "__main__":
    raise SystemExit(main())
