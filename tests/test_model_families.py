"""A model family registered from this file alone runs through the command line, the service's judging,
evaluation and the cascade, with no edit to any of them: the registry is the only seam."""

import contextlib
import io
import json
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from PIL import Image

from qinsight_sdk import QualityJudge, cli
from qinsight_sdk.backends.base import EncodedBatch
from qinsight_sdk.backends import FAMILIES, ModelFamily, register_family
from qinsight_sdk.errors import ModelLoadError
from qinsight_sdk.evaluation.runner import evaluate
from qinsight_sdk.judging.profiles import PROFILES, JudgeProfile, TaskPrompt, register_profile
from qinsight_sdk.judging.prompts import IMAGE
from qinsight_sdk.service.judging import judge_calls
from qinsight_sdk.service.settings import Call

# -- the whole family: a brightness meter, in about 40 lines ------------------------------------------------

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


@pytest.fixture
def brightness_family():
    family = register_family(ModelFamily(
        "brightness", lambda folder: (folder / MARKER).is_file(), _validate,
        lambda folder, **options: BrightnessBackend(options.get("device", "cpu")), (MARKER,), "brightness",
        dtype=lambda requested, device: torch.float32, writes_text=False))
    register_profile(JudgeProfile("brightness", {"score": TaskPrompt((IMAGE,))}, rating_range=(0.0, 1.0),
                                  reasons=False, fast_score_prefix="", model_type="brightness"))
    yield family
    FAMILIES.pop("brightness")
    PROFILES.pop("brightness")


# -- through everything, unedited ----------------------------------------------------------------------------

LEVELS = [30, 200, 120, 250, 80]


@pytest.fixture
def meter(tmp_path):
    folder = tmp_path / "meter"
    folder.mkdir()
    (folder / MARKER).write_text("{}")
    images = tmp_path / "images"
    images.mkdir()
    for k, level in enumerate(LEVELS):
        Image.new("RGB", (40, 30), (level,) * 3).save(images / f"{k}.png")
    return folder, images


def test_the_judge_loads_it_from_its_files(brightness_family, meter):
    judge = QualityJudge.from_pretrained(meter[0])
    assert judge.profile.name == "brightness" and judge.config.family == "brightness"
    results = judge.score([Image.new("RGB", (8, 8), (255,) * 3), Image.new("RGB", (8, 8), (0,) * 3)])
    assert [r.score for r in results] == [5.0, 1.0] and [r.raw_score for r in results] == [1.0, 0.0]


def test_the_command_line_scores_ranks_and_resumes(brightness_family, meter, capsys):
    folder, images = meter
    rows = images.parent / "rows.jsonl"
    assert cli.main(["score", str(images), "--model", str(folder), "-o", str(rows)]) == 0
    written = [json.loads(line) for line in rows.read_text().splitlines()]
    assert [round(r["raw_score"] * 255) for r in sorted(written, key=lambda r: r["image"])] == LEVELS
    assert {(r["settings"]["profile"], r["settings"]["mode"]) for r in written} == {("brightness", "fast")}
    assert cli.main(["score", str(images), "--model", str(folder), "-o", str(rows)]) == 0
    assert len(rows.read_text().splitlines()) == len(LEVELS)   # resumed: nothing judged twice
    capsys.readouterr()
    assert cli.main(["rank", str(images), "--model", str(folder)]) == 0
    ranked = [json.loads(line)["image"] for line in capsys.readouterr().out.splitlines()]
    assert ranked[0].endswith("3.png") and ranked[-1].endswith("0.png")
    assert cli.main(["score", str(images), "--model", str(folder), "--mode", "reason"]) == 2


def test_the_service_s_judging_answers_with_it(brightness_family, meter):
    judge = QualityJudge.from_pretrained(meter[0])
    png = io.BytesIO()
    Image.new("RGB", (16, 16), (51,) * 3).save(png, format="PNG")
    score, reward, refused = judge_calls(judge, [Call("score", [png.getvalue()], {}), Call("reward", [png.getvalue()]),
                                                  Call("compare", [png.getvalue()] * 2, {})])
    assert score["results"][0]["score"] == pytest.approx(1.8) and reward["rewards"] == pytest.approx([0.2])
    assert "cannot do comparison" in refused["error"]


def test_evaluation_measures_it(brightness_family, meter):
    folder, images = meter
    (images.parent / "labels.csv").write_text("image,mos\n" + "".join(f"images/{k}.png,{1 + 4 * v / 255}\n"
                                                                      for k, v in enumerate(LEVELS)))
    result = evaluate(images.parent / "labels.csv", images.parent / "p.jsonl",
                      lambda: QualityJudge.from_pretrained(folder), resamples=0, progress=False)
    assert result["metrics"]["srcc"] == pytest.approx(1.0) and result["failed"] == []


def test_it_prefilters_another_judge(brightness_family, meter):
    folder, images = meter
    meter_judge = QualityJudge.from_pretrained(folder)
    ranking = meter_judge.rank(sorted(str(p) for p in images.iterdir()), prefilter=meter_judge, keep=2)
    assert ranking.order[:2] == [3, 1] and ranking.stages[1]["judged"] == [1, 3]
