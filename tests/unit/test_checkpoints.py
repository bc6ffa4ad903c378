"""Missing, half-written and unsafe checkpoints fail early with advice, never deep in transformers."""

import json
import shutil

import pytest

from qinsight_sdk import ModelLoadError, QualityJudge
from qinsight_sdk.backends.checkpoints import default_model, default_subfolder, resolve_checkpoint


@pytest.fixture
def model_copy(tiny_model, tmp_path):
    return shutil.copytree(tiny_model, tmp_path / "model")


def test_tiny_model_resolves(tiny_model):
    assert resolve_checkpoint(str(tiny_model)) == tiny_model


def test_missing_folder(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        QualityJudge.from_pretrained(str(tmp_path / "nowhere"))


def test_parent_folder_suggests_a_subfolder(model_copy, tmp_path):
    root = tmp_path / "repo"
    shutil.move(model_copy, root / "score_degradation")
    with pytest.raises(ModelLoadError, match=r"subfolders \['score_degradation'\]"):
        resolve_checkpoint(str(root))
    assert resolve_checkpoint(str(root), "score_degradation") == root / "score_degradation"


def test_half_written_config(model_copy):
    (model_copy / "config.json").write_text('{"model_type": "qwen2_5_vl", "hid')
    with pytest.raises(ModelLoadError, match="half-written"):
        resolve_checkpoint(str(model_copy))


def test_wrong_architecture(model_copy):
    (model_copy / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(ModelLoadError, match="holds a .llama. model.*model_type .qwen2_5_vl."):
        resolve_checkpoint(str(model_copy))


def test_truncated_shard(model_copy):
    shard = next(model_copy.glob("model-*.safetensors"))
    shard.write_bytes(shard.read_bytes()[:-1000])
    with pytest.raises(ModelLoadError, match="truncated"):
        resolve_checkpoint(str(model_copy))


def test_garbage_shard(model_copy):
    next(model_copy.glob("model-*.safetensors")).write_bytes(b"\xff" * 100)
    with pytest.raises(ModelLoadError, match="corrupt|truncated"):
        resolve_checkpoint(str(model_copy))


def test_missing_shard(model_copy):
    next(model_copy.glob("model-*.safetensors")).unlink()
    with pytest.raises(ModelLoadError, match="incomplete"):
        resolve_checkpoint(str(model_copy))


def test_pickle_weights_are_refused(model_copy):
    for path in model_copy.glob("model*"):
        path.unlink()
    (model_copy / "pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(ModelLoadError, match="safetensors only"):
        resolve_checkpoint(str(model_copy))


def test_missing_tokenizer(model_copy):
    for name in ("tokenizer.json", "vocab.json"):
        (model_copy / name).unlink()
    with pytest.raises(ModelLoadError, match="tokenizer.json"):
        resolve_checkpoint(str(model_copy))


def test_offline_hub_id_not_cached_says_what_to_do(tmp_path):
    with pytest.raises(ModelLoadError, match="hf download ByteDance/Q-Insight --include 'score_degradation/"):
        resolve_checkpoint("ByteDance/Q-Insight", "score_degradation", cache_dir=str(tmp_path))


def test_subfolder_cannot_escape_the_model(tiny_model):
    with pytest.raises(ModelLoadError, match="relative path inside"):
        resolve_checkpoint(str(tiny_model), "../..")


def test_defaults(monkeypatch):
    monkeypatch.delenv("QINSIGHT_MODEL", raising=False)
    assert default_model() == "ByteDance/Q-Insight"
    assert default_subfolder("ByteDance/Q-Insight") == "score_degradation"
    assert default_subfolder("ByteDance/Q-Insight", comparison=True) == "comparison"
    assert default_subfolder("/my/folder") is None
    monkeypatch.setenv("QINSIGHT_MODEL", "/my/folder")
    assert default_model() == "/my/folder"


def test_bad_device_and_dtype(tiny_model, monkeypatch):
    with pytest.raises(ModelLoadError, match="dtype"):
        QualityJudge.from_pretrained(tiny_model, dtype="int3")
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    with pytest.raises(ModelLoadError, match="CUDA is not available"):
        QualityJudge.from_pretrained(tiny_model, device="cuda")
