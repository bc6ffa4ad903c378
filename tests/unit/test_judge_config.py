"""One judgement configuration (judge_config.py): resolved before loading, recorded as loaded."""

import dataclasses
import pickle

import pytest
import torch
from brightness_family import FAMILY, MARKER

from qinsight_sdk import DecodingOptions, QualityJudge
from qinsight_sdk.backends import FAMILIES, register_family
from qinsight_sdk.backends.checkpoints import PROFILE_FILE, profile_lookup
from qinsight_sdk.backends.rali.tiny import build_tiny_rali
from qinsight_sdk.errors import ModelLoadError, UsageError
from qinsight_sdk.io.images import ImageBounds
from qinsight_sdk.judging import judge_config as judge_config_module
from qinsight_sdk.judging.judge import load_judge
from qinsight_sdk.judging.judge_config import JudgeConfig, resolve_judge_config
from qinsight_sdk.judging.profiles import PROFILES, QINSIGHT, VISUALQUALITY_R1


@pytest.fixture
def brightness(tmp_path):
    """A folder of the test family of tests/brightness_family.py, registered for the test."""
    register_family(FAMILY)
    folder = tmp_path / "meter"
    folder.mkdir()
    (folder / MARKER).write_text("{}")
    yield folder
    FAMILIES.pop("brightness")
    PROFILES.pop("brightness")


@pytest.fixture(scope="module")
def rali_folder(tmp_path_factory):
    return build_tiny_rali(tmp_path_factory.mktemp("rali") / "RALI")


def test_what_is_recorded_is_what_loads(tiny_model):
    config = resolve_judge_config(tiny_model, device="cpu", image_bounds=ImageBounds(max_pixels=200_000))
    judge = QualityJudge.from_config(config, batch_size=3)
    assert judge.config is config and judge.batch_size == 3 and judge.image_bounds.max_pixels == 200_000
    assert judge.profile == config.profile and judge.backend.dtype == config.dtype == torch.float32
    assert config.settings(mode="fast") == {
        "model": str(tiny_model.resolve()),
        "subfolder": None,
        "revision": None,
        "profile": "q-insight",
        "dtype": "float32",
        "prompt_order": "image_first",
        "max_pixels": 200_000,
        "mode": "fast",
    }
    assert "decoding" in config.settings(mode="reason")
    assert (
        QualityJudge.from_pretrained(tiny_model, device="cpu").config.settings()
        == resolve_judge_config(tiny_model, device="cpu").settings()
    )


def test_a_rali_judge_records_fp32_and_refuses_what_it_cannot_do(rali_folder):
    config = resolve_judge_config(rali_folder, device="cpu")
    assert (config.family, config.profile.name, config.dtype, config.default_mode) == (
        "rali",
        "rali",
        torch.float32,
        "fast",
    )
    assert config.mode(None) == "fast" and config.mode("fast") == "fast"
    with pytest.raises(UsageError, match="writes no text"):
        config.mode("reason")
    with pytest.raises(ModelLoadError, match="RALI runs in fp32"):
        resolve_judge_config(rali_folder, dtype="bf16")
    with pytest.raises(UsageError, match="quantization '4bit' applies to Qwen2.5-VL judges"):
        resolve_judge_config(rali_folder, quantization="4bit")
    # full precision, however it is spelt (the loader node's "full", the command line's "none"), is no quantization
    assert {resolve_judge_config(rali_folder, quantization=q).quantization for q in ("full", "none", None)} == {None}
    with pytest.raises(ModelLoadError, match="'visualquality-r1'.*is for qwen2_5_vl models"):
        resolve_judge_config(rali_folder, profile=VISUALQUALITY_R1)


def test_the_default_mode_of_a_writing_judge_is_reason(tiny_model):
    config = resolve_judge_config(tiny_model, device="cpu")
    assert config.default_mode == "reason" and config.mode(None) == "reason" and config.mode("fast") == "fast"


def test_an_empty_model_is_an_error_not_the_default_download():
    with pytest.raises(UsageError, match="the model is empty"):
        resolve_judge_config("")


def test_a_profile_that_could_not_be_looked_up_is_said_and_checked_after_download(tiny_model, tmp_path, monkeypatch):
    monkeypatch.setattr(judge_config_module, "profile_lookup", lambda *args: (None, False))
    config = resolve_judge_config(tiny_model, device="cpu")
    assert "could not be asked" in config.profile_source and config.profile.name == "q-insight"
    assert QualityJudge.from_config(config).profile.name == "q-insight"  # no file there: nothing differs
    copy = tmp_path / "judge"
    copy.mkdir()
    for path in tiny_model.iterdir():
        (copy / path.name).symlink_to(path)
    VISUALQUALITY_R1.save(copy)
    assert (copy / PROFILE_FILE).is_file()
    with pytest.raises(ModelLoadError, match="brings its own judge profile"):
        QualityJudge.from_config(resolve_judge_config(copy, device="cpu"))
    monkeypatch.undo()
    assert QualityJudge.from_config(resolve_judge_config(copy, device="cpu")).profile.name == "visualquality-r1"


def test_profile_lookup_tells_a_missing_file_from_a_question_not_asked(tiny_model, tmp_path, monkeypatch):
    assert profile_lookup(str(tiny_model)) == (None, True)
    (tmp_path / PROFILE_FILE).write_text("{}")
    assert profile_lookup(str(tmp_path)) == (tmp_path / PROFILE_FILE, True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert profile_lookup("someone/not-cached-anywhere", cache_dir=str(tmp_path / "cache")) == (None, False)
    assert profile_lookup("not a repository id") == (None, True)


def test_a_configuration_travels_to_workers_and_loads_there(tiny_model):
    config = resolve_judge_config(tiny_model, device="cpu")
    travelled = pickle.loads(pickle.dumps(config))
    assert isinstance(travelled, JudgeConfig) and travelled == config
    assert load_judge(travelled).config == config
    judge = load_judge({"model": str(tiny_model), "device": "cpu", "batch_size": 2, "profile": "q-insight"})
    assert judge.batch_size == 2 and judge.config.profile_source == "asked for"


# -- quick: resolving touches no weights, so a folder with a config.json (or a test family) is enough ---------


@pytest.fixture
def qwen_folder(tmp_path):
    """What resolving reads of a Qwen2.5-VL checkpoint: its config.json's model_type (no weights)."""
    folder = tmp_path / "judge"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "qwen2_5_vl"}')
    return folder


def test_every_option_is_resolved_and_kept(qwen_folder):
    decoding = DecodingOptions(max_new_tokens=7)
    config = resolve_judge_config(
        qwen_folder,
        "",
        revision="abc",
        device="cpu",
        dtype="bf16",
        quantization="8bit",
        image_bounds=ImageBounds(max_pixels=300_000),
        prompt_order="text_first",
        decoding=decoding,
        attn_implementation="eager",
        trust_remote_code=True,
        local_files_only=True,
        cache_dir="/c",
    )
    assert config == JudgeConfig(
        str(qwen_folder),
        "",
        "abc",
        QINSIGHT,
        "the default",
        "qwen2_5_vl",
        "cpu",
        torch.bfloat16,
        "8bit",
        ImageBounds(max_pixels=300_000),
        "text_first",
        decoding,
        "eager",
        True,
        True,
        "/c",
    )
    assert config.settings(mode="reason") == {
        "model": str(qwen_folder.resolve()),
        "subfolder": "",
        "revision": "abc",
        "profile": "q-insight",
        "dtype": "bfloat16",
        "prompt_order": "text_first",
        "max_pixels": 300_000,
        "mode": "reason",
        "quantization": "8bit",
        "decoding": dataclasses.asdict(decoding),
    }


def test_the_defaults_are_the_profile_s_and_greedy(qwen_folder):
    config = resolve_judge_config(qwen_folder, device="cpu")
    assert (config.subfolder, config.dtype, config.quantization, config.prompt_order, config.decoding) == (
        None,
        torch.float32,
        None,
        None,
        DecodingOptions(),
    )
    assert config.settings(mode="fast")["prompt_order"] == "image_first"  # Q-Insight's own place for the image
    assert config.settings(mode="fast")["max_pixels"] == ImageBounds().max_pixels


def test_the_released_comparison_weights_are_the_default_for_a_comparison():
    """Offline (as tests run), the hub cannot be asked for a profile file: said, never a silent default."""
    config = resolve_judge_config("ByteDance/Q-Insight", comparison=True, device="cpu")
    assert config.subfolder == "comparison" and config.family == "qwen2_5_vl"
    assert config.profile_source.endswith(
        "could not be asked for its qinsight_judge.json, so it is checked after the download"
    )
    assert resolve_judge_config("ByteDance/Q-Insight", device="cpu").subfolder == "score_degradation"
    assert (
        "could not be asked"
        not in resolve_judge_config("ByteDance/Q-Insight", device="cpu", profile="q-insight").profile_source
    )


def test_loading_passes_every_option_to_the_family_and_checks_what_is_there(brightness, tmp_path, rali_folder):
    loaded = []
    register_family(dataclasses.replace(FAMILY, load=lambda folder, **options: loaded.append((folder, options))))
    config = resolve_judge_config(brightness, device="cpu", attn_implementation="eager", trust_remote_code=True)
    config.load_backend()
    assert loaded == [
        (
            brightness,
            {
                "device": "cpu",
                "dtype": torch.float32,
                "attn_implementation": "eager",
                "trust_remote_code": True,
                "quantization": None,
            },
        )
    ]
    moved = dataclasses.replace(config, model=str(rali_folder))  # the folder changed after resolving
    with pytest.raises(
        ModelLoadError,
        match=rf"{rali_folder} holds a rali model, but judge profile 'brightness' "
        r"\(the default of its model family\) is for brightness models$",
    ):
        moved.load_backend()


def test_a_profile_file_found_after_the_download_must_be_the_one_resolved(brightness, monkeypatch):
    monkeypatch.setattr(judge_config_module, "profile_lookup", lambda *args: (None, False))
    config = resolve_judge_config(brightness, device="cpu")
    config.load_backend()  # no file there: nothing to differ
    dataclasses.replace(FAMILY.profiles[0]).save(brightness)
    config.load_backend()  # the same profile: fine
    dataclasses.replace(FAMILY.profiles[0], rating_range=(0.0, 2.0)).save(brightness)
    with pytest.raises(
        ModelLoadError,
        match=r"brings its own judge profile \(qinsight_judge.json\), which could "
        r"not be read before the download .* with 'brightness'",
    ):
        config.load_backend()
    asked = dataclasses.replace(config, profile_source="asked for")  # looked up before: not checked again
    asked.load_backend()


def test_modes_name_the_family_and_what_to_use(brightness):
    config = resolve_judge_config(brightness, device="cpu")
    with pytest.raises(
        UsageError,
        match="^mode reason: this brightness judge writes no text, so it has no "
        "reasoning to give; use mode fast \\(its default\\)$",
    ):
        config.mode("reason")
    assert config.mode("fast") == "fast" and config.mode(None) == "fast"
