"""A model family that is not qinsight's (``brightness_family.py``, about 50 lines) runs through the command
line, the service's judging, evaluation and the cascade with no edit to any of them, registered in this
process or installed as a plugin that every process (a new command, Ray workers, ComfyUI) reads."""

import io
import json
import subprocess
import sys
from importlib.metadata import EntryPoint

import pytest
from brightness_family import FAMILY, IMPOSTOR, MARKER, install_as_plugin
from PIL import Image

from qinsight_sdk import QualityJudge, backends, cli
from qinsight_sdk.backends import ENTRY_POINT_GROUP, FAMILIES, families, family_named, register_family
from qinsight_sdk.errors import ModelLoadError
from qinsight_sdk.evaluation.runner import evaluate
from qinsight_sdk.judging.profiles import PROFILES
from qinsight_sdk.service.judging import judge_calls
from qinsight_sdk.service.settings import Call

LEVELS = [30, 200, 120, 250, 80]


@pytest.fixture
def brightness_family():
    register_family(FAMILY)
    assert PROFILES["brightness"] is FAMILY.profiles[0]  # a family brings its profiles
    yield FAMILY
    FAMILIES.pop("brightness")
    PROFILES.pop("brightness")


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
    assert len(rows.read_text().splitlines()) == len(LEVELS)  # resumed: nothing judged twice
    capsys.readouterr()
    assert cli.main(["rank", str(images), "--model", str(folder)]) == 0
    ranked = [json.loads(line)["image"] for line in capsys.readouterr().out.splitlines()]
    assert ranked[0].endswith("3.png") and ranked[-1].endswith("0.png")
    assert cli.main(["score", str(images), "--model", str(folder), "--mode", "reason"]) == 2


def test_the_service_s_judging_answers_with_it(brightness_family, meter):
    judge = QualityJudge.from_pretrained(meter[0])
    png = io.BytesIO()
    Image.new("RGB", (16, 16), (51,) * 3).save(png, format="PNG")
    score, reward, refused = judge_calls(
        judge,
        [
            Call("score", [png.getvalue()], {}),
            Call("reward", [png.getvalue()]),
            Call("compare", [png.getvalue()] * 2, {}),
        ],
    )
    assert score["results"][0]["score"] == pytest.approx(1.8) and reward["rewards"] == pytest.approx([0.2])
    assert "cannot do comparison" in refused["error"]


def test_evaluation_measures_it(brightness_family, meter):
    folder, images = meter
    (images.parent / "labels.csv").write_text(
        "image,mos\n" + "".join(f"images/{k}.png,{1 + 4 * v / 255}\n" for k, v in enumerate(LEVELS))
    )
    result = evaluate(
        images.parent / "labels.csv",
        images.parent / "p.jsonl",
        lambda: QualityJudge.from_pretrained(folder),
        resamples=0,
        progress=False,
    )
    assert result["metrics"]["srcc"] == pytest.approx(1.0) and result["failed"] == []


def test_it_prefilters_another_judge(brightness_family, meter):
    folder, images = meter
    meter_judge = QualityJudge.from_pretrained(folder)
    ranking = meter_judge.rank(sorted(str(p) for p in images.iterdir()), prefilter=meter_judge, keep=2)
    assert ranking.order[:2] == [3, 1] and ranking.stages[1]["judged"] == [1, 3]


# -- installed as a plugin: read from entry points, in every process ------------------------------------------


@pytest.fixture
def plugins(monkeypatch):
    """``plugins({"name": "module:attr"})``: entry points this process's registry reads as if installed; the
    registry and the profiles are as before afterwards. Returns how many times entry points were listed."""
    saved_families, saved_profiles, listed = dict(FAMILIES), dict(PROFILES), []

    def install(named):
        points = [EntryPoint(name, value, ENTRY_POINT_GROUP) for name, value in named.items()]
        monkeypatch.setattr(backends, "entry_points", lambda group: listed.append(group) or points)
        monkeypatch.setattr(backends, "_plugins_read", False)
        return listed

    yield install
    FAMILIES.clear(), FAMILIES.update(saved_families)
    PROFILES.clear(), PROFILES.update(saved_profiles)


def test_an_installed_family_is_read_on_the_first_look_once(plugins, meter):
    listed = plugins({"brightness": "brightness_family:FAMILY"})
    assert "brightness" not in FAMILIES and listed == []  # importing qinsight reads no plugin
    judge = QualityJudge.from_pretrained(meter[0])
    assert judge.config.family == "brightness" and judge.profile is FAMILY.profiles[0]
    assert FAMILY in families() and listed == [ENTRY_POINT_GROUP]


def test_a_broken_plugin_is_a_warning_naming_it_and_the_others_load(plugins):
    plugins(
        {
            "missing": "no_such_module_here:FAMILY",
            "wrong": "brightness_family:MARKER",
            "impostor": "brightness_family:IMPOSTOR",
            "brightness": "brightness_family:FAMILY",
        }
    )
    with pytest.warns(UserWarning) as caught:
        names = [family.name for family in families()]
    messages = sorted(str(w.message) for w in caught)
    assert len(messages) == 3 and all("was not loaded" in m for m in messages)
    assert "'impostor' (brightness_family:IMPOSTOR)" in messages[0] and "built-in family 'qwen2_5_vl'" in messages[0]
    assert "'missing' (no_such_module_here:FAMILY)" in messages[1] and "no_such_module_here" in messages[1]
    assert (
        "'wrong' (brightness_family:MARKER)" in messages[2]
        and "a str, not a ModelFamily (no name, holds," in messages[2]
    )
    assert sorted(names) == ["brightness", "qwen2_5_vl", "rali"] and family_named("qwen2_5_vl") is not IMPOSTOR
    with pytest.raises(ModelLoadError, match="no model family 'nope' is registered.*brightness"):
        family_named("nope")


def test_a_new_process_finds_the_installed_family_and_only_then(meter, tmp_path):
    """The real discovery: a distribution's entry_points.txt on the path of a fresh ``qinsight score``."""
    folder, images = meter
    rows = tmp_path / "rows.jsonl"
    command = [sys.executable, "-m", "qinsight_sdk", "score", str(images), "--model", str(folder), "-o", str(rows)]
    without = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=300,
        env=install_as_plugin(tmp_path / "other", other="brightness_family:MARKER"),
    )
    assert without.returncode == 2 and "meter has no config.json" in without.stderr  # taken for a Qwen folder
    assert not rows.exists() or rows.read_text() == ""
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=300, env=install_as_plugin(tmp_path / "site")
    )
    assert done.returncode == 0, done.stderr[-2000:]
    written = sorted((json.loads(line) for line in rows.read_text().splitlines()), key=lambda r: r["image"])
    assert [round(r["raw_score"] * 255) for r in written] == LEVELS
    assert {r["settings"]["profile"] for r in written} == {"brightness"}
