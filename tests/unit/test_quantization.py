"""Quantized judges: bitsandbytes' real 8-bit and 4-bit layers on the CPU, with the trained tiny judge.

transformers 4.51.3 refuses bitsandbytes on the CPU, so the tests that load a quantized model skip there
(saying so), and one test checks the message a user of that release gets instead.
"""

import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType, SimpleNamespace

import pytest
import torch
import transformers
from offline import NO_NETWORK
from packaging.version import Version
from scipy.stats import spearmanr

from qinsight_sdk import DecodingOptions, ModelLoadError, QualityJudge, UsageError
from qinsight_sdk.backends.quantization import (
    _drop_float16_cast_notice,
    import_bitsandbytes,
    quantization_config,
    quantization_name,
)
from qinsight_sdk.cli import main
from qinsight_sdk.errors import MissingDependencyError
from qinsight_sdk.testing import brightness_image, rating_of

LAYERS = {"4bit": "Linear4bit", "8bit": "Linear8bitLt"}
LEVELS = [i / 10 for i in range(11)]


@pytest.fixture(scope="module")
def images():
    return [brightness_image(level, 50_000 + i) for i, level in enumerate(LEVELS)]


@pytest.fixture(scope="module")
def full_scores(tiny_judge_model, images):
    judge = QualityJudge.from_pretrained(tiny_judge_model, device="cpu")
    return [r.score for r in judge.score(images, mode="fast")], judge.backend.memory_footprint()


@pytest.fixture(scope="module", params=["4bit", "8bit"])
def quantized(request, tiny_judge_model, cpu_quantization):
    return request.param, QualityJudge.from_pretrained(
        tiny_judge_model, device="cpu", quantization=request.param, decoding=DecodingOptions(max_new_tokens=40)
    )


def test_only_the_language_models_linear_layers_are_quantized(quantized, full_scores):
    mode, judge = quantized
    model = judge.backend.model
    linear = {
        name: type(module).__name__ for name, module in model.named_modules() if isinstance(module, torch.nn.Linear)
    }
    language = {name: kind for name, kind in linear.items() if ".layers." in name and "visual" not in name}
    kept = {name: kind for name, kind in linear.items() if name not in language}
    assert len(language) >= 7 and set(language.values()) == {LAYERS[mode]}
    assert any("visual" in name for name in kept) and "lm_head" in kept
    assert set(kept.values()) == {"Linear"}
    assert judge.backend.quantization == mode
    assert judge.backend.memory_footprint() < full_scores[1]


def _bf16_4bit_kernel() -> bool:
    """Whether bitsandbytes runs 4-bit layers on this CPU through its bf16 kernel (AVX-512 BF16)."""
    from bitsandbytes.functional import has_avx512bf16

    return bool(has_avx512bf16())


def test_fast_scores_are_deterministic_batch_invariant_and_agree_with_full_precision(quantized, images, full_scores):
    mode, judge = quantized
    by_batch = {size: [r.score for r in judge.score(images, mode="fast", batch_size=size)] for size in (8, 1, 3)}
    assert [r.score for r in judge.score(images, mode="fast", batch_size=8)] == by_batch[8]
    # the bf16 kernel turns float32 noise into whole bf16 steps for a few images (quantization.py): measured
    # up to 1.6e-3 between batch sizes 1 and 8; elsewhere under 1e-6
    tolerance = 5e-3 if mode == "4bit" and _bf16_4bit_kernel() else 1e-4
    for size in (1, 3):
        assert max(abs(a - b) for a, b in zip(by_batch[size], by_batch[8])) < tolerance, size
    # measured: Spearman 1.0 (8-bit) and 0.98 (4-bit) against the same images in full precision
    assert spearmanr(by_batch[8], full_scores[0])[0] > 0.95


def test_a_quantized_judge_stays_where_it_was_quantized(quantized):
    mode, judge = quantized
    assert judge.to("cpu") is judge  # where it is: nothing to move
    with pytest.raises(UsageError, match=f"a {mode} judge cannot move from cpu to meta: load it again there"):
        judge.to("meta")
    assert judge.backend.device == torch.device("cpu")


def test_reason_mode_answers_in_the_judges_format(quantized, images):
    _, judge = quantized
    results = judge.score(images[::5])
    assert all(r.ok and r.reasoning == "ok" for r in results), [r.error for r in results]
    assert results[0].score < results[-1].score  # darkest below brightest


def test_the_modes_are_what_the_module_says():
    pytest.importorskip("bitsandbytes", reason="the configuration needs bitsandbytes to be importable")
    four = quantization_config("4bit", torch.bfloat16)
    assert (
        four.load_in_4bit,
        four.bnb_4bit_quant_type,
        four.bnb_4bit_use_double_quant,
        four.bnb_4bit_compute_dtype,
    ) == (True, "nf4", True, torch.bfloat16)
    eight = quantization_config("8bit", torch.float32)
    assert eight.load_in_8bit and not eight.load_in_4bit and eight.llm_int8_threshold == 0
    for config in (four, eight):
        assert {"visual", "lm_head"} <= set(config.llm_int8_skip_modules)
    assert _drop_float16_cast_notice in logging.getLogger("bitsandbytes.autograd._functions").filters
    assert all(quantization_config(full, torch.float32) is None for full in (None, "none", "full"))
    assert quantization_config(eight, torch.float16) is eight  # a config of one's own is used as given
    with pytest.raises(UsageError, match="quantization must be one of none, 8bit, 4bit.*'3bit'"):
        quantization_config("3bit", torch.float32)


def test_the_mode_of_a_loaded_model_and_the_silenced_notice():
    assert [
        quantization_name(SimpleNamespace(**flags))
        for flags in ({"is_loaded_in_4bit": True}, {"is_loaded_in_8bit": True}, {}, {"is_loaded_in_8bit": False})
    ] == ["4bit", "8bit", None, None]
    notice = logging.LogRecord(
        "bitsandbytes",
        logging.WARNING,
        "",
        0,
        "MatMul8bitLt: inputs will be cast from %s to float16 during quantization",
        (torch.float32,),
        None,
    )
    other = logging.LogRecord("bitsandbytes", logging.WARNING, "", 0, "something else", (), None)
    assert not _drop_float16_cast_notice(notice) and _drop_float16_cast_notice(other)


def test_without_bitsandbytes_asking_for_a_mode_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # what an environment without it imports
    for mode in ("8bit", "4bit"):
        with pytest.raises(
            MissingDependencyError,
            match=r"^quantization \(8-bit and 4-bit judges\) needs bitsandbytes, "
            r"which could not be imported .*pip install 'qinsight\[quant\]'",
        ):
            quantization_config(mode, torch.float32)
    assert quantization_config("none", torch.float32) is None  # full precision needs no bitsandbytes


def test_without_bitsandbytes_the_judge_and_the_command_line_name_the_extra(
    tiny_model, monkeypatch, capsys, image_files
):
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)
    with pytest.raises(MissingDependencyError, match=r"pip install 'qinsight\[quant\]'"):
        QualityJudge.from_pretrained(tiny_model, device="cpu", quantization="4bit")
    assert main(["score", str(image_files[0]), "--model", str(tiny_model), "--quantization", "8bit"]) == 2
    assert "qinsight[quant]" in capsys.readouterr().err


@pytest.mark.skipif(
    Version(transformers.__version__) >= Version("4.57"),
    reason="this transformers quantizes on the CPU; the refusal is 4.51.3's",
)
def test_old_transformers_says_why_it_cannot_quantize_here(tiny_model):
    with pytest.raises(ModelLoadError, match="refuses bitsandbytes on the CPU; 4.57.1 and newer quantize there"):
        QualityJudge.from_pretrained(tiny_model, device="cpu", quantization="4bit")


def test_command_line_records_the_quantization_and_never_mixes_rows(
    tiny_judge_model, cpu_quantization, tmp_path, capsys
):
    for i, level in enumerate(LEVELS[::2]):
        brightness_image(level, 60_000 + i).save(tmp_path / f"b{i}.png")
    rows = tmp_path / "rows.jsonl"
    model = ["--model", str(tiny_judge_model), "--mode", "fast"]
    assert main(["score", str(tmp_path), *model, "--quantization", "4bit", "-o", str(rows)]) == 0
    written = [json.loads(line) for line in rows.read_text().splitlines()]
    assert len(written) == 6 and {r["settings"]["quantization"] for r in written} == {"4bit"}
    assert main(["score", str(tmp_path), *model, "-o", str(rows)]) == 2  # full precision: not mixed in
    assert "quantization: '4bit' there, None now" in capsys.readouterr().err
    (tmp_path / "labels.csv").write_text(
        "image,mos\n" + "".join(f"b{i}.png,{rating_of(level)}\n" for i, level in enumerate(LEVELS[::2]))
    )
    assert (
        main(
            [
                "eval",
                str(tmp_path / "labels.csv"),
                *model,
                "--quantization",
                "8bit",
                "--bootstrap",
                "0",
                "--predictions",
                str(tmp_path / "p.jsonl"),
                "--report",
                str(tmp_path / "r.json"),
            ]
        )
        == 0
    )
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["settings"]["quantization"] == "8bit" and report["metrics"]["srcc"] > 0.8


def test_cuda_and_its_current_index_are_one_device(monkeypatch):
    from qinsight_sdk.backends.qwen2_5_vl.backend import _same_device

    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)
    cuda = torch.device
    assert _same_device(cuda("cuda"), cuda("cuda:1")) and _same_device(cuda("cuda:1"), cuda("cuda"))
    assert not _same_device(cuda("cuda"), cuda("cuda:0")) and not _same_device(cuda("cuda:0"), cuda("cuda:1"))
    assert _same_device(cuda("cpu"), cuda("cpu")) and not _same_device(cuda("cpu"), cuda("cuda:1"))


def test_the_room_a_quantized_checkpoint_needs_is_worked_out_from_its_files(tmp_path):
    from qinsight_sdk.backends.quantization import quantized_size

    (tmp_path / "model-1.safetensors").write_bytes(b"\0" * 600)
    (tmp_path / "model-2.safetensors").write_bytes(b"\0" * 400)
    (tmp_path / "tokenizer.json").write_bytes(b"\0" * 5000)  # not weights
    assert quantized_size(tmp_path, "8bit") == 610 and quantized_size(tmp_path, "4bit") == 420


def test_the_4bit_kernel_computes_each_row_alike_whatever_the_batch(cpu_quantization):
    """Why 4-bit fast scores move with the batch only where float32 noise meets bf16 rounding: bitsandbytes'
    own CPU kernel gives a row the same bits whatever rows are multiplied with it."""
    bnb = pytest.importorskip("bitsandbytes", reason="needs bitsandbytes")
    if not _bf16_4bit_kernel():
        pytest.skip("this CPU has no AVX-512 BF16: 4-bit layers are dequantized to the compute dtype instead")
    torch.manual_seed(0)
    layer = bnb.nn.Linear4bit(256, 128, bias=False, compute_dtype=torch.float32, quant_type="nf4")
    layer.weight = bnb.nn.Params4bit(torch.randn(128, 256) * 0.05, requires_grad=False, quant_type="nf4")
    layer = layer.to("cpu").eval()
    rows = torch.randn(300, 256)
    with torch.inference_mode():
        together = layer(rows)
        assert layer.weight.quant_state.packing_format_for_cpu  # the bf16 kernel's layout: that kernel ran
        for count in (1, 2, 4, 5, 32, 33, 100, 101):
            assert torch.equal(layer(rows[:count]), together[:count]), count


_FAKE_BITSANDBYTES = """
import logging
try:
    from kernels import get_kernel
    looked_up = True
except ImportError as exc:
    looked_up = False
    logging.getLogger("bitsandbytes.backends.cpu.ops").warning(
        "Failed to load CPU gemm_4bit_forward from kernels-community: %s. Please make sure ...", exc)
"""


@pytest.mark.parametrize("kernels_before", ["imported", "not imported", "blocked"])
def test_bitsandbytes_is_imported_without_the_hub_kernel_lookup(tmp_path, monkeypatch, caplog, kernels_before):
    """A bitsandbytes that asks `kernels` at import, as 0.50 does: qinsight's import makes it fall back, drops
    its notice about that, and leaves `kernels` as it found it."""
    (tmp_path / "bitsandbytes").mkdir()
    (tmp_path / "bitsandbytes" / "__init__.py").write_text(_FAKE_BITSANDBYTES)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "bitsandbytes", raising=False)
    kernels = ModuleType("kernels")
    kernels.get_kernel = lambda *args, **kwargs: pytest.fail("the Hub was asked for a kernel")
    before = {"imported": kernels, "blocked": None}.get(kernels_before)
    if kernels_before == "not imported":
        monkeypatch.delitem(sys.modules, "kernels", raising=False)
    else:
        monkeypatch.setitem(sys.modules, "kernels", before)
    with caplog.at_level(logging.WARNING):
        module = import_bitsandbytes()
    assert module.__file__ == str(tmp_path / "bitsandbytes" / "__init__.py") and module.looked_up is False
    assert caplog.records == []
    assert sys.modules.get("kernels", "absent") == ("absent" if kernels_before == "not imported" else before)
    assert import_bitsandbytes() is module  # imported once
    logging.getLogger("bitsandbytes.backends.cpu.ops").warning("Failed to load CPU gemm_4bit_forward: later")
    assert [r.getMessage() for r in caplog.records] == ["Failed to load CPU gemm_4bit_forward: later"]


_LOAD_OFFLINE = (
    NO_NETWORK
    + """
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    from qinsight_sdk import QualityJudge
    QualityJudge.from_pretrained(sys.argv[1], device="cpu", quantization="4bit")
print(json.dumps({"attempts": attempts, "records": records,
                  "warnings": [f"{w.filename}: {w.message}" for w in caught], "modules": sorted(sys.modules)}))
"""
)


def test_a_4bit_judge_loads_without_the_network_and_without_warnings(tiny_model, cpu_quantization, tmp_path):
    """Online settings (no HF_HUB_OFFLINE, an empty Hugging Face cache) and a process whose sockets refuse
    and record: bitsandbytes, imported by the judge, asks nothing of the Hub and nothing is logged about it
    (before, it looked up huggingface.co twice and logged a warning, as a plain `import bitsandbytes` does)."""
    pytest.importorskip("bitsandbytes", reason="needs bitsandbytes")
    env = {key: value for key, value in os.environ.items() if key != "HF_HUB_OFFLINE"}
    env["HF_HOME"] = str(tmp_path / "hf-home")
    done = subprocess.run(
        [sys.executable, "-c", _LOAD_OFFLINE, str(tiny_model)],
        capture_output=True,
        text=True,
        env=env,
        cwd=Path(__file__).resolve().parents[2],
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.splitlines()[-1])
    assert "bitsandbytes" in seen["modules"]
    assert seen["attempts"] == []
    assert [
        r
        for r in seen["records"]
        if r.split(":")[0].startswith(("bitsandbytes", "kernels", "huggingface")) or "kernel" in r.lower()
    ] == []
    assert [w for w in seen["warnings"] if "bitsandbytes" in w or "kernel" in w.lower()] == []
    assert "kernel" not in done.stderr.lower()
