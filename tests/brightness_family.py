"""A model family that is not qinsight's: a brightness meter, whole, in about 50 lines.

Tests register it in their own process (``register_family(FAMILY)``) and install it as a plugin for
others (an entry point of group ``qinsight.model_families`` naming ``brightness_family:FAMILY``), so that
the command line, Ray workers and ComfyUI take it with no edit of theirs.
"""

import contextlib
from dataclasses import dataclass

import numpy as np
import torch

from qinsight_sdk.backends import ModelFamily
from qinsight_sdk.backends.base import EncodedBatch
from qinsight_sdk.errors import ModelLoadError
from qinsight_sdk.judging.profiles import JudgeProfile, TaskPrompt
from qinsight_sdk.judging.prompts import IMAGE

MARKER = "brightness.json"


@dataclass(frozen=True)
class Level:
    level: float

    def expected(self):
        return self.level, 0.0


class BrightnessBackend:
    writes_text = False
    quantization = None

    def __init__(self, device="cpu"):
        self.device, self.dtype = torch.device("cpu" if device == "auto" else device), torch.float32

    def encode(self, conversations, images, answer_prefix="", template_options=None):
        return EncodedBatch([float(np.asarray(row[0]).mean() / 255) for row in images], [1] * len(images))

    def rating_distributions(self, batch):
        return [Level(level) for level in batch.inputs]

    def generate(self, batch, decoding, rating_key=None):
        raise AssertionError("a brightness meter writes nothing")

    def reusing_images(self):
        return contextlib.nullcontext()

    def memory_footprint(self):
        return 0

    def to(self, device):
        self.device = torch.device(device)
        return self


def _validate(folder):
    if not (folder / MARKER).is_file():
        raise ModelLoadError(f"{folder} has no {MARKER}")


PROFILE = JudgeProfile(
    "brightness",
    {"score": TaskPrompt((IMAGE,))},
    rating_range=(0.0, 1.0),
    reasons=False,
    fast_score_prefix="",
    model_type="brightness",
)
FAMILY = ModelFamily(
    "brightness",
    lambda folder: (folder / MARKER).is_file(),
    _validate,
    lambda folder, **options: BrightnessBackend(options.get("device", "cpu")),
    (MARKER,),
    "brightness",
    dtype=lambda requested, device: torch.float32,
    writes_text=False,
    profiles=(PROFILE,),
)

IMPOSTOR = ModelFamily(
    "qwen2_5_vl", FAMILY.holds, _validate, FAMILY.load, (MARKER,), "brightness", dtype=FAMILY.dtype, writes_text=False
)  # a plugin may not take over a built-in family


def install_as_plugin(folder, **entries):
    """Make ``folder`` an installed distribution naming ``entries`` (default: this family) in the
    ``qinsight.model_families`` group; returns the environment a process needs to see it (this module too)."""
    import os
    from pathlib import Path

    entries = entries or {"brightness": "brightness_family:FAMILY"}
    info = Path(folder) / "qinsight_brightness-1.0.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: qinsight-brightness\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[qinsight.model_families]\n" + "".join(f"{name} = {value}\n" for name, value in entries.items())
    )
    here = str(Path(__file__).resolve().parent)
    path = os.pathsep.join([str(folder), here] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else []))
    return dict(os.environ, PYTHONPATH=path, HF_HUB_OFFLINE="1")
