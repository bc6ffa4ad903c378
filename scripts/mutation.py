"""Mutation testing of the code whose answers users rely on: would the tests notice a wrong answer?

    pip install -e '.[dev,train,mutation]'
    python scripts/mutation.py                   # every module in scope; resumes where the last run stopped
    python scripts/mutation.py parsing rewards   # some of them
    python scripts/mutation.py --fresh metrics   # forget earlier verdicts for these modules first
    python scripts/mutation.py --named           # only the wrong answers once let through, by hand

mutmut (configured in pyproject.toml's ``[tool.mutmut]``) copies the package to ``mutants/``, changes
one small thing at a time in one function (a mutant: ``<`` for ``<=``, ``[-1]`` for ``[0]``, a string
emptied), and runs the quick tests that reach that function (no tiny model, no ComfyUI: ``-m "not model
and not comfyui"``). A mutant is killed when a test fails. The score is killed / mutants run: a survivor,
a timeout, a crash and a mutant that no quick test reaches all count as not killed. Mutants that no test
could ever tell from the original (equivalent mutants) are listed in ``EQUIVALENT`` with the reason and
left out of the count; nothing else is.

Modules run one at a time, and a run resumes: it reruns only the mutants that were not killed (after new
tests, the survivors) and those of functions whose source changed since; ``--fresh`` reruns all of them
and first forgets which tests reach which function (do that after weakening or deleting tests, and after
adding functions: mutmut's record of that can miss a new function and run too few tests on it). Not part of CI: a module takes 2 to 20 minutes here.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MUTANTS = ROOT / "mutants"
MUTMUT = str(Path(sys.executable).with_name("mutmut"))


def _module(name: str, *patterns: str) -> tuple[str, list[str]]:
    """A module's source file (a package's ``__init__.py``) and its mutants' names: all of them, or those
    matching ``patterns`` after the module's name."""
    path = name.replace(".", "/")
    source = f"{path}/__init__.py" if (ROOT / path).is_dir() else f"{path}.py"
    return source, [f"{name}.{pattern}" for pattern in patterns or ("*",)]


# module name -> (source file, mutant-name patterns). Only what decides an answer is in scope: loading a
# checkpoint (QualityJudge.from_pretrained, loading.py) and the model plumbing of qwen_vl.py are tested with
# the tiny model instead, outside the quick loop.
SCOPE: dict[str, tuple[str, list[str]]] = {
    "parsing": _module("qinsight_sdk.judging.parsing"),
    "images": _module("qinsight_sdk.io.images"),
    "video_sampling": _module("qinsight_sdk.io.video_sampling"),
    "videos": _module("qinsight_sdk.io.videos"),
    "positions": _module("qinsight_sdk.backends.qwen2_5_vl.positions"),
    "decoding": _module("qinsight_sdk.judging.decoding"),
    "judge": _module("qinsight_sdk.judging.judge"),
    "batching": _module("qinsight_sdk.judging.batching"),
    "tasks": _module("qinsight_sdk.judging.tasks"),
    "profiles": _module("qinsight_sdk.judging.profiles"),
    "fast-mode": _module("qinsight_sdk.backends.base", "xǁRatingDistributionǁ*", "xǁTwoDigitDistributionǁ*"),
    "fast-mode digits": _module("qinsight_sdk.backends.qwen2_5_vl.backend", "x__probabilities__*"),
    "selection": _module("qinsight_sdk.judging.selection"),
    "records": _module("qinsight_sdk.io.records"),
    "metrics": _module("qinsight_sdk.evaluation.metrics"),
    "quantization": _module("qinsight_sdk.backends.quantization"),
    **{
        f"service {part}": _module(f"qinsight_sdk.service.{part}")
        for part in ("settings", "requests", "admission", "judging", "app")
    },
    "image_metadata": _module("qinsight_sdk.io.image_metadata"),
    "video labels": _module(
        "qinsight_sdk.evaluation.data",
        "x__read_konvid*",
        "x__read_lsvq*",
        "x__read_live_vqc*",
        "x__read_dimensions*",
        "x__video_name*",
        "x__finite_number*",
        "x_csv_format*",
    ),
    "label scale": _module("qinsight_sdk.evaluation.runner", "x_on_label_scale*"),
    "annotation": _module("qinsight_sdk.io.annotation"),
    "compatibility": _module("qinsight_sdk.backends.compatibility"),
    "rewards": _module("qinsight_sdk.train.rewards"),
    "generator rewards": _module("qinsight_sdk.rl.rewards"),
    "image statistics": _module("qinsight_sdk.rl.image_statistics"),
    "monitor": _module("qinsight_sdk.rl.monitor"),
    "backends registry": _module("qinsight_sdk.backends", "x_*", "xǁ*"),
    "judge_config": _module("qinsight_sdk.judging.judge_config"),
    **{f"rali {part}": _module(f"qinsight_sdk.backends.rali.{part}") for part in ("files", "model", "backend")},
    "rali family": _module("qinsight_sdk.backends.rali", "x_*"),
}
OUT_OF_SCOPE = [
    "qinsight_sdk.judging.judge.xǁQualityJudgeǁfrom_pretrained__*",
    # the Ray Serve deployment: tested against a real service (tests/unit/test_service.py, marked ray)
    "qinsight_sdk.service.app.x_build_app__*",
    "qinsight_sdk.io.records.x__try_lock_on_windows__*",
]  # runs only on Windows; no Windows machine here

# Equivalent mutants: no input can tell them from the original. Each with its reason.
_LAST_AXIS = "dim=+1 is dim=-1 here: the tensor is 2-D, so axis 1 is the last"
_PROMOTED = "arange(1, 6) without dtype is int64; adding the float64 decimal means promotes it: same values"
EQUIVALENT: dict[str, str] = {
    **{
        f"qinsight_sdk.evaluation.data.{name}": "the scale is always given (the data set's 0-100, or --mos-range): "
        "the file's own range is never read"
        for name in ("x__read_live_vqc__mutmut_80", "x__read_lsvq__mutmut_55")
    },
    **{
        f"qinsight_sdk.evaluation.data.{name}": "_whole_rows does not read the path it is given"
        for name in ("x__read_konvid__mutmut_29", "x__read_dimensions__mutmut_33", "x__read_lsvq__mutmut_24")
    },
    **{
        f"qinsight_sdk.io.videos.x__is_animation__mutmut_{n}": "reading 17 bytes, or the whole file, instead of 16: "
        "only the first 12 are looked at"
        for n in (8, 9, 11)
    },
    **{
        f"qinsight_sdk.io.videos.x__open_container__mutmut_{n}": "mode None, or no mode, is PyAV's default: 'r'"
        for n in (4, 7)
    },
    "qinsight_sdk.io.videos.x__open_container__mutmut_10": "PyAV opens a Path as it opens the Path's str",
    **{
        f"qinsight_sdk.io.videos.x__from_animation__mutmut_{n}": "every Pillow plugin that reads GIF, PNG and WebP "
        "sets n_frames: the default is never used"
        for n in (6, 9, 12)
    },
    **{
        f"qinsight_sdk.io.videos.x__from_animation__mutmut_{n}": "to_rgb names an image only for integer and float "
        "modes; an animation frame converted to RGBA is neither"
        for n in (65, 67)
    },
    "qinsight_sdk.io.videos.x__from_animation__mutmut_68": "convert() with no mode gives RGB, or RGBA where a "
    "palette has transparency: to_rgb composites either over white into the pixels RGBA gives",
    **{
        f"qinsight_sdk.io.videos.{name}": "a header count of 0 read as 1: both are under any frame limit"
        for name in ("x_check_video_header__mutmut_12", "x__from_container__mutmut_18")
    },
    "qinsight_sdk.io.videos.x__from_container__mutmut_27": "a header counting 1 frame: its packets count 1 again, "
    "and the rate stays the header's",
    "qinsight_sdk.io.videos.x__count_packets__mutmut_5": "PyAV yields an empty packet only as the demuxed stream's "
    "last (its flush packet): stopping there or skipping it ends the count the same",
    **{
        f"qinsight_sdk.service.judging.x__judge_group__mutmut_{n}": "both_orders None instead of False: compare_pairs "
        "reads it as a truth value"
        for n in (28, 30)
    },
    **{
        f"qinsight_sdk.service.judging.x__stop_when_cancelled__mutmut_{n}": "the check ignores the index it is "
        "given: any value asks the same"
        for n in (2, 5, 6)
    },
    "qinsight_sdk.service.requests.x__multipart_fields__mutmut_17": "Starlette's Headers match names without "
    "regard to case",
    "qinsight_sdk.service.requests.x__pixels__mutmut_4": "the only warning Image.open raises is the "
    "DecompressionBombWarning: ignoring all ignores the same one",
    "qinsight_sdk.service.admission.xǁHoldǁgrow_to__mutmut_3": "growing by 0 bytes adds 0 to the budget, which is "
    "never over its limit: the same as returning",
    **{
        f"qinsight_sdk.service.app.xǁGatewayǁ__call____mutmut_{n}": "HTTP header names are case-insensitive; "
        "Starlette sends them lower-cased whatever their case here"
        for n in (26, 27)
    },
    "qinsight_sdk.service.app.xǁGatewayǁ__init____mutmut_8": "draining None instead of False: only its truth is read",
    "qinsight_sdk.service.requests.x__typed__mutmut_22": "lstrip strips a set of characters: 'XX-XX' is {'X', '-'}, and "
    "the text was lower-cased, so only '-' can be stripped",
    "qinsight_sdk.service.requests.x_check_token__mutmut_9": "a missing header as 'XXXX' instead of '': neither is a token",
    **{
        f"qinsight_sdk.service.judging.x_judge_calls__mutmut_{n}": "the options unsorted in the group key: no task "
        "that is grouped takes two options, so no two orders can differ"
        for n in (7, 9, 10)
    },
    **{
        f"qinsight_sdk.service.judging.x_judge_calls__mutmut_{n}": "another constant than -1 for calls that are not "
        "rankings: a ranking's key has its own task, so the keys never meet"
        for n in (21, 22)
    },
    **{
        f"qinsight_sdk.backends.quantization.x_quantization_name__mutmut_{n}": "getattr's default None instead of False: both are false, and the default is all it is used for"
        for n in (3, 14)
    },
    "qinsight_sdk.backends.base.xǁRatingDistributionǁexpected__mutmut_12": _LAST_AXIS,
    "qinsight_sdk.backends.base.xǁRatingDistributionǁexpected__mutmut_20": _LAST_AXIS,
    "qinsight_sdk.backends.base.xǁRatingDistributionǁexpected__mutmut_28": _PROMOTED,
    "qinsight_sdk.backends.base.xǁRatingDistributionǁexpected__mutmut_31": _PROMOTED,
    "qinsight_sdk.backends.qwen2_5_vl.backend.x__probabilities__mutmut_5": _LAST_AXIS,
    **{
        f"qinsight_sdk.io.images.x_to_rgb__mutmut_{n}": "seek(0) on an image with a single frame changes nothing, "
        "so asking also when n_frames is 1 (or missing) is the same"
        for n in (9, 10)
    },
    **{
        f"qinsight_sdk.io.images.x_to_rgb__mutmut_{n}": "exif_transpose of an image with no orientation tag (or "
        "tag 1) returns the same pixels, so calling it for those too is the same"
        for n in (15, 16, 17, 19)
    },
    **{
        f"qinsight_sdk.io.images.x_to_rgb__mutmut_{n}": "convert('RGB') of an RGB image is a copy with the same pixels"
        for n in (92, 97, 98)
    },
    "qinsight_sdk.io.images.x_to_rgb__mutmut_85": "Pillow clips the fill value 256 to 255: the same opaque white",
    **{
        f"qinsight_sdk.io.images.x__open_file__mutmut_{n}": "the only warning Image.open raises is the "
        "DecompressionBombWarning, so ignoring every warning there ignores the same one"
        for n in (2, 4)
    },
    "qinsight_sdk.io.images.x__normalised__mutmut_17": "channels_first=None is falsy like False: the same branch",
    **{
        f"qinsight_sdk.judging.batching.xǁBatchRunnerǁrun__mutmut_{n}": "the next batch is prepared only after the "
        "last one was taken, so one helper thread is all that ever runs; its name is for debuggers"
        for n in range(26, 33)
    },
    "qinsight_sdk.judging.batching.xǁBatchRunnerǁrun__mutmut_21": "an empty batch (a window of unreadable inputs) is "
    "never run, so preparing it or not changes nothing",
    "qinsight_sdk.judging.batching.xǁBatchRunnerǁ__init____mutmut_3": "'' and None are both falsy: no cap yet",
    **{
        f"qinsight_sdk.judging.tasks.x__majority__mutmut_{n}": "most_common(None) and most_common(2) start with the same "
        "most common verdict as most_common(1)"
        for n in (2, 5)
    },
    "qinsight_sdk.judging.selection.x__round_robin__mutmut_20": "every finalist starts with the same count of wins, "
    "and only their differences order them",
    **{
        f"qinsight_sdk.judging.judge.xǁQualityJudgeǁreward__mutmut_{n}": "torch.tensor of Python floats is float32 "
        "already"
        for n in (36, 38)
    },
    "qinsight_sdk.evaluation.metrics.x_correlation__mutmut_1": "x constant and y not: scipy returns NaN, which _finite "
    "turns into the same None",
    "qinsight_sdk.evaluation.metrics.x_score_metrics__mutmut_106": "the mean of no items is NaN, which _finite turns into "
    "the same None",
    **{
        f"qinsight_sdk.evaluation.metrics.x__bootstrap_interval__mutmut_{n}": "scipy infers vectorized=False from the "
        "statistic's signature, its confidence level defaults to 0.95 and it reads the method in any case"
        for n in (54, 61, 63, 70)
    },
    **{
        f"qinsight_sdk.evaluation.metrics.x__bootstrap_interval__mutmut_{n}": "with the installed scipy (1.15 and newer) "
        "bootstrap takes the generator as rng and as random_state alike: the same resamples either way"
        for n in (16, 17, 21, 22, 23)
    },
    "qinsight_sdk.judging.parsing.x__answer_or_tail__mutmut_13": "'</THINK>' under re.IGNORECASE matches what '</think>' does",
    "qinsight_sdk.judging.parsing.x_parse_comparison__mutmut_32": "an upper-case pattern under re.I matches what the original does",
    "qinsight_sdk.judging.parsing.x__normalise_label__mutmut_13": "also stripping a capital X from the ends: no label, class or severity begins or ends with one, and what "
    "is left either way names the same verdict",
    "qinsight_sdk.judging.decoding.xǁPaddingBlindRepetitionPenaltyǁ__call____mutmut_16": "seen <= 0 for seen < 0: at exactly 0, 0 * penalty and 0 / penalty are both 0",
    "qinsight_sdk.judging.decoding.xǁDecodingOptionsǁgeneration_config__mutmut_3": "copy for deepcopy: the copy only has attributes assigned, never a shared value changed in place",
}

# rali/files.py (issue 28): library defaults spelt out, and names used only in messages a file never reaches
_RALI = "qinsight_sdk.backends.rali.files"
_WEIGHTS_ONLY = (
    "weights_only left to torch's default: True from torch 2.6, and below it the pickle scan before "
    "the load refuses every import outside the allowlist first; no file tells the two apart here"
)
_MMAP = "mmap off or left out: the same tensors, read into memory instead of mapped"
_JOBLIB_NAME = (
    "the file name joblib is given: used for memory-mapped and pre-0.10 split files, which a "
    "loaded-in-memory read with the allowlist never reaches, so only for messages nobody sees"
)
EQUIVALENT.update(
    {
        **{f"{_RALI}.x_read_checkpoint__mutmut_{n}": _WEIGHTS_ONLY for n in (5, 9)},
        **{f"{_RALI}.x_read_checkpoint__mutmut_{n}": _MMAP for n in (6, 10, 14)},
        **{
            f"{_RALI}.x_read_basis__mutmut_{n}": "allow_pickle None or left out: numpy's default is False, and None is "
            "as false"
            for n in (2, 4)
        },
        **{
            f"{_RALI}.x_read_pca__mutmut_{n}": "the head read to tell joblib from a plain pickle: only its first bytes "
            "are compared, so 3 bytes or all of them decide the same"
            for n in (8, 9)
        },
        f"{_RALI}.x_read_pca__mutmut_14": "a plain pickle read by joblib: joblib's unpickler, with the same allowlist, "
        "reads a plain pickle as the plain reader does",
        **{f"{_RALI}.x__read_joblib__mutmut_{n}": _JOBLIB_NAME for n in (34, 36, 37, 38, 45)},
        f"{_RALI}.x__read_joblib__mutmut_13": "BUILD always has an object and its state on the stack: never fewer "
        "than 2, so > 1 and >= 1 agree",
        f"{_RALI}.x__read_joblib__mutmut_20": "a wrapper whose state is not a dict is refused either way (the "
        "AttributeError is reported as an unreadable PCA)",
        f"{_RALI}.x__pickle_globals__mutmut_47": "GLOBAL's argument is 'module name' with one space (names have "
        "none): partition and rpartition split it alike",
    }
)

# rali/model.py (issue 28)
_RALI_MODEL = "qinsight_sdk.backends.rali.model"
_LOCAL_FOLDER = (
    "local_files_only on a local folder: from_pretrained of a directory reads it and never asks "
    "the hub, whatever the flag"
)
EQUIVALENT.update(
    {
        **{f"{_RALI_MODEL}.xǁRaliScorerǁforward__mutmut_{n}": _LAST_AXIS for n in (12, 18, 27)},
        **{
            f"{_RALI_MODEL}.xǁRaliScorerǁforward__mutmut_{n}": "F.normalize's default dim is 1, the last axis of these "
            "2-D tensors"
            for n in (11, 17)
        },
        f"{_RALI_MODEL}.xǁRaliScorerǁforward__mutmut_3": "pixels cast to the scorer's dtype or left as they are: RALI's "
        "processor gives fp32 and the scorer is fp32, always",
        **{f"{_RALI_MODEL}.x_load_scorer__mutmut_{n}": _LOCAL_FOLDER for n in (28, 30, 32)},
        **{f"qinsight_sdk.backends.rali.backend.x__image_processor__mutmut_{n}": _LOCAL_FOLDER for n in (12, 14, 15)},
        **{
            f"qinsight_sdk.backends.rali.backend.xǁRaliBackendǁ__init____mutmut_{n}": "a crop key that is missing read "
            "as None instead of 0: both are false, so the next choice is taken alike"
            for n in (18, 20, 25, 27)
        },
        f"{_RALI_MODEL}.x_load_scorer__mutmut_50": "strict left to load_state_dict's default, which is True",
        "qinsight_sdk.backends.rali.backend.xǁRaliBackendǁencode__mutmut_1": "the answer prefix's default: RALI writes "
        "nothing, so encode never reads it",
    }
)

# video_sampling.py (issue 30)
_VS = "qinsight_sdk.io.video_sampling"
_READ_ONLY = (
    "frames made writable and contiguous or taken as they are: the same pixels resize alike; only torch's "
    "warning about a read-only array (given once per process) tells them apart"
)
EQUIVALENT.update(
    {
        f"{_VS}.x_frame_count__mutmut_32": "the total dropped from the minimum: the most (an even count of at most "
        "16, and of at most the total) is never above the total",
        **{f"{_VS}.x_resize_frames__mutmut_{n}": _READ_ONLY for n in (16, 18)},
        **{f"{_VS}.x_resize_frames__mutmut_{n}": "numpy reads require()'s flags in either case" for n in (20, 22)},
        **{
            f"{_VS}.x_resize_frames__mutmut_{n}": "align_corners None is False for bicubic interpolation"
            for n in (31, 36)
        },
    }
)

# selection.py's round robin (issue 28's rerun): only the order of the wins is returned
EQUIVALENT["qinsight_sdk.judging.selection.x__round_robin__mutmut_20"] = (
    "every finalist's wins starting at 1 instead of 0: the same offset for all, and only their order is returned"
)

# parsing.py: the reasoning-only check's case and its placeholder
_IGNORED_CASE = "the pattern's case does not matter: the search ignores case"
EQUIVALENT.update(
    {
        "qinsight_sdk.judging.parsing.x__answer_or_tail__mutmut_13": _IGNORED_CASE,
        "qinsight_sdk.judging.parsing.x__answer_or_tail__mutmut_24": _IGNORED_CASE,
        "qinsight_sdk.judging.parsing.x__answer_or_tail__mutmut_25": "an answer that is all reasoning reads as no answer "
        "whether its body is empty or 'XXXX': no rating, "
        "class or verdict is found in either",
    }
)

# image_metadata.py, annotation.py, compatibility.py (issue 14)
EQUIVALENT.update(
    {
        **{
            f"qinsight_sdk.io.image_metadata.x__chunk__mutmut_{n}": "the filter only silences Pillow's warning about a "
            "large image; what is read is the same"
            for n in (16, 18)
        },
        **{
            f"qinsight_sdk.io.image_metadata.x__chunk__mutmut_{n}": "the chunks before the pixels are read again, with the "
            "rest, from image.text: the same rows, only slower"
            for n in (22, 23)
        },
        **{
            f"qinsight_sdk.io.image_metadata.{name}": "codec names are case-insensitive: 'UTF-8' is 'utf-8'"
            for name in ("x__saved_rows__mutmut_18", "x_write_sidecar__mutmut_27")
        },
        **{
            f"qinsight_sdk.io.annotation.x__drawable__mutmut_{n}": "codec names are case-insensitive: 'LATIN-1' is "
            "'latin-1'"
            for n in (13, 17)
        },
        **{
            f"qinsight_sdk.io.annotation.x_annotate__mutmut_{n}": "the box is pasted at (0, 0), which is also where "
            "paste puts it without a position"
            for n in (68, 70)
        },
        **{
            f"qinsight_sdk.io.annotation.x_annotate__mutmut_{n}": "Pillow's default ink on an RGB image is white, the "
            "colour given"
            for n in (90, 94)
        },
        **{
            f"qinsight_sdk.io.annotation.x_annotate__mutmut_{n}": "Pillow clips an ink channel of 256 to 255"
            for n in (97, 98, 99)
        },
        "qinsight_sdk.backends.compatibility.x_problems__mutmut_17": "None is as falsy as False where the argument is only "
        "tested for truth",
    }
)

# records.py: spellings and falsy values that no input can tell apart
_CODEC = "codec names are case-insensitive: 'UTF-8' is 'utf-8'"
_FALSY = "None is as falsy as False where the argument is only tested for truth"
EQUIVALENT.update(
    {
        **{
            f"qinsight_sdk.io.records.{name}": _CODEC
            for name in (
                "x__decode_lines__mutmut_3",
                "x__rewrite__mutmut_36",
                "x_row_text__mutmut_12",
                "xǁRecordStoreǁwrite__mutmut_21",
            )
        },
        **{
            f"qinsight_sdk.io.records.{name}": _FALSY
            for name in (
                "x_row_text__mutmut_3",
                "x_row_text__mutmut_4",
                "x_read_store__mutmut_14",
                "x_read_store__mutmut_24",
                "x_read_store__mutmut_44",
            )
        },
        "qinsight_sdk.io.records.x__rewrite__mutmut_42": "the temporary file always exists when it is removed: missing_ok "
        "never matters",
        "qinsight_sdk.io.records.x__rewrite__mutmut_43": "the temporary file always exists when it is removed: missing_ok "
        "never matters",
        "qinsight_sdk.io.records.x__try_lock__mutmut_1": "reached only where fcntl is missing (Windows)",
    }
)

# profiles.py: spellings and falsy defaults that no profile file can tell apart; parsing.py's empty answer
EQUIVALENT.update(
    {
        **{
            f"qinsight_sdk.judging.profiles.{name}": _CODEC
            for name in ("x_load_profile_file__mutmut_7", "xǁJudgeProfileǁsave__mutmut_19")
        },
        "qinsight_sdk.judging.profiles.xǁJudgeProfileǁsave__mutmut_11": "ensure_ascii=None is as falsy as False: json.dumps "
        "only tests it for truth, so the same text",
        **{
            f"qinsight_sdk.judging.profiles.x_profile_from_dict__mutmut_{n}": "a missing compares_with_reference read as None "
            "instead of False: bool() of either is False"
            for n in (128, 130)
        },
        "qinsight_sdk.judging.parsing.x_parse_comparison__mutmut_9": "an empty answer is looked up as '' or as 'XXXX': "
        "neither is a label, so both name no verdict",
    }
)

# Small wrong changes the suite once let through (issue 16), applied by hand with --named: each must fail a test.
NAMED: list[tuple[str, str, str, str]] = [
    (
        "the parser takes the first rating",
        "qinsight_sdk/judging/parsing.py",
        "rating, error = _to_rating(match[-1], rating_range)",
        "rating, error = _to_rating(match[0], rating_range)",
    ),
    ("the parser takes the first JSON object", "qinsight_sdk/judging/parsing.py", "return found[::-1]", "return found"),
    (
        "the reward is squared",
        "qinsight_sdk/judging/judge.py",
        "(result.score - 1.0) / 4.0)",
        "((result.score - 1.0) / 4.0) ** 2)",
    ),
    (
        "later batches ignore the size that fitted",
        "qinsight_sdk/judging/batching.py",
        "cap = min(batch_size, self.memory_cap or batch_size)",
        "cap = batch_size",
    ),
    (
        "both orders ignore the (B, A) verdict",
        "qinsight_sdk/judging/tasks.py",
        "winner=forward.winner or back_winner",
        "winner=forward.winner",
    ),
    ("the 4PL multiplies by |b4|", "qinsight_sdk/evaluation/metrics.py", "/ abs(b4)", "* abs(b4)"),
    (
        "the spread leaves out the decimals' variance",
        "qinsight_sdk/backends/base.py",
        "(within_var + (means - mean) ** 2)",
        "((means - mean) ** 2)",
    ),
    ("uint16 is scaled by 256", "qinsight_sdk/io/images.py", "np.rint(array / 257.0)", "np.rint(array / 256.0)"),
]

KILLED = {1, 3}  # pytest's exit codes for failed tests and internal errors
STATUS = {
    0: "survived",
    33: "no tests",
    5: "no tests",
    36: "timeout",
    24: "timeout",
    -24: "timeout",
    152: "timeout",
    255: "timeout",
    None: "not run",
}


def _matches(name: str, patterns: list[str]) -> bool:
    from fnmatch import fnmatchcase

    return any(fnmatchcase(name, p) for p in patterns) and not any(fnmatchcase(name, p) for p in OUT_OF_SCOPE)


def _meta(module: str) -> Path:
    return MUTANTS / (SCOPE[module][0] + ".meta")


def _verdicts(module: str) -> dict[str, int | None] | None:
    """mutant name -> mutmut's exit code (None: not run), from its meta file; None if never run."""
    if not _meta(module).exists():
        return None
    codes = json.loads(_meta(module).read_text())["exit_code_by_key"]
    return {name: code for name, code in codes.items() if _matches(name, SCOPE[module][1])}


def _mutmut(names: list[str]) -> None:
    if not names:
        return
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    subprocess.run(
        [MUTMUT, "run", *names], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False
    )


def run_module(module: str, fresh: bool) -> dict[str, int | None]:
    """Run what has no verdict yet, or was not killed. mutmut regenerates the mutants of functions whose
    source changed (their verdicts reset) and keeps the rest, so a second pass runs what the first reset."""
    verdicts = _verdicts(module)
    if verdicts is None or fresh or not verdicts:
        if fresh:  # mutmut's record of which tests reach which function can miss functions added since
            (MUTANTS / "mutmut-stats.json").unlink(missing_ok=True)
        _mutmut(SCOPE[module][1])
    else:
        todo = [name for name, code in verdicts.items() if code not in KILLED and name not in EQUIVALENT]
        changed = (ROOT / SCOPE[module][0]).stat().st_mtime > _meta(module).stat().st_mtime
        _mutmut(todo or (SCOPE[module][1] if changed else []))
        reset = [name for name, code in (_verdicts(module) or {}).items() if code is None]
        if reset:
            _mutmut(reset)
    found = _verdicts(module)
    if not found:
        raise SystemExit(f"mutmut left no results for {module}; run `mutmut run` by hand to see why")
    return found


def _status(code: int | None) -> str:
    return "killed" if code in KILLED else STATUS.get(code, "crashed")


def summarise(module: str, verdicts: dict[str, int | None]) -> dict[str, object]:
    counted = {name: _status(code) for name, code in verdicts.items() if name not in EQUIVALENT}
    tally = {
        status: sum(s == status for s in counted.values())
        for status in ("killed", "survived", "timeout", "crashed", "no tests", "not run")
    }
    score = tally["killed"] / len(counted) if counted else None
    return {
        "module": module,
        **tally,
        "equivalent": len(verdicts) - len(counted),
        "score": score,
        "not_killed": sorted(name for name, status in counted.items() if status != "killed"),
    }


def check_named() -> int:
    """Apply each NAMED change to a copy of the checkout and run the quick tests; 1 if any passes them."""
    import shutil
    import tempfile

    escaped = 0
    with tempfile.TemporaryDirectory(prefix="qinsight-named-") as scratch:
        copy = Path(scratch) / "repo"
        shutil.copytree(ROOT, copy, ignore=shutil.ignore_patterns("mutants", ".git", "__pycache__", "*.egg-info"))
        for name, path, old, new in NAMED:
            source = (copy / path).read_text()
            if source.count(old) != 1:
                raise SystemExit(f"{name}: the line to change is not in {path} once; update NAMED")
            (copy / path).write_text(source.replace(old, new))
            done = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "pytest",
                    "-q",
                    "-x",
                    "-p",
                    "no:cacheprovider",
                    "-m",
                    "not model and not comfyui",
                ],
                cwd=copy,
                capture_output=True,
                text=True,
                env=dict(os.environ, PYTHONPATH=str(copy), HF_HUB_OFFLINE="1"),
            )
            (copy / path).write_text(source)
            failed = next((line for line in done.stdout.splitlines() if line.startswith("FAILED")), None)
            escaped += failed is None
            caught = failed.removeprefix("FAILED ").split(" - ")[0] if failed else None
            print(f"{name}: {'caught by ' + caught if caught else 'NOT CAUGHT'}", flush=True)
    return 1 if escaped else 0


def _changed_line(name: str) -> str:
    shown = subprocess.run([MUTMUT, "show", name], cwd=ROOT, capture_output=True, text=True).stdout
    added = [line[1:].strip() for line in shown.splitlines() if line.startswith("+") and not line.startswith("+++")]
    return added[0] if added else "?"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("modules", nargs="*", metavar="MODULE", help=f"any of: {', '.join(SCOPE)} (default: all)")
    parser.add_argument("--fresh", action="store_true", help="rerun every mutant, not only those not killed")
    parser.add_argument("--report-only", action="store_true", help="print the last results, run nothing")
    parser.add_argument("--named", action="store_true", help="check only the NAMED wrong answers, by hand")
    args = parser.parse_args(argv)
    if args.named:
        return check_named()
    unknown = [m for m in args.modules if m not in SCOPE]
    if unknown:
        parser.error(f"unknown module {', '.join(unknown)}; choose from {', '.join(SCOPE)}")
    rows = []
    for module in args.modules or list(SCOPE):
        verdicts = _verdicts(module) if args.report_only else run_module(module, args.fresh)
        if verdicts is None:
            print(f"{module}: not run yet")
            continue
        rows.append(summarise(module, verdicts))
        print(_table_line(rows[-1]), flush=True)
    print()
    print("| module | killed | survived | timed out | crashed | no tests | equivalent | score |")
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        print(_table_line(row))
    for row in rows:
        for name in row["not_killed"]:
            print(f"not killed: {name}: {_changed_line(name)}")
    return 0


def _table_line(row: dict[str, object]) -> str:
    score = "n/a" if row["score"] is None else f"{100 * row['score']:.1f}%"
    cells = [
        row["module"],
        row["killed"],
        row["survived"],
        row["timeout"],
        row["crashed"],
        row["no tests"] + row["not run"],
        row["equivalent"],
        score,
    ]
    return "| " + " | ".join(str(c) for c in cells) + " |"


if __name__ == "__main__":
    raise SystemExit(main())
