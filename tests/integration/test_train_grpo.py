"""GRPO runs on the tiny model on CPU: every task and a mix, full, LoRA and QLoRA, checkpoints, resume, export.

Training needs transformers 4.57.1 (TRL's floor is 4.56.2; 4.54-4.56 are excluded): at CI's inference
floor (4.51.3) these tests report themselves skipped with that reason; the training floor (4.57.1) and
the newest releases run them all.
"""

import json
import logging
import math
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from offline import NO_NETWORK
from safetensors.torch import load_file

from qinsight_sdk import QualityJudge, ScoreResult
from qinsight_sdk.cli import main
from qinsight_sdk.evaluation.data import Sample
from qinsight_sdk.judging.profiles import (
    PROFILE_FILE,
    QINSIGHT,
    QINSIGHT_COMPARISON,
    VISUALQUALITY_R1,
    load_profile_file,
)
from qinsight_sdk.judging.prompts import SCORE_QUESTION
from qinsight_sdk.testing import write_sample_images
from qinsight_sdk.train import DataError, TrainConfig, TrainingError, grpo, train
from qinsight_sdk.train.grpo import (
    METRICS_FILE,
    build_dataset,
    check_training_stack,
    grpo_arguments,
    load_training_samples,
)
from qinsight_sdk.train.rewards import completion_text

try:
    check_training_stack()
    STACK_PROBLEM = None
except TrainingError as exc:
    STACK_PROBLEM = str(exc)

pytestmark = pytest.mark.skipif(STACK_PROBLEM is not None, reason=f"{STACK_PROBLEM}")
NO_BITSANDBYTES = "finetune: qlora needs bitsandbytes (the [quant] extra), which is not installed"


def spread(completions, **columns):
    """The tiny random model earns nothing from the paper's rewards, so without a reward that tells a
    group's completions apart its weights would not move and these tests could not see training."""
    return [len(set(completion_text(c))) / 50 for c in completions]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("train-data")
    a, b, c, d = (p.name for p in write_sample_images(root, count=4))
    rows = {
        "score": [
            {"task": "score", "image": a, "mos": 3.2},
            {"task": "score", "image": b, "mos": 61.5, "mos_range": [0, 100]},
        ],
        "degradation": [
            {"task": "degradation", "image": c, "distortion_class": "blur", "severity": "moderate"},
            {"task": "degradation", "image": d, "distortion_class": "null", "severity": "null"},
        ],
        "comparison": [
            {"task": "comparison", "image_a": a, "image_b": b, "answer": "Image A"},
            {"task": "comparison", "image_a": c, "image_b": d, "reference": a, "answer": "Similar"},
        ],
    }
    files = {}
    for task, records in rows.items():
        files[task] = root / f"{task}.jsonl"
        files[task].write_text("\n".join(json.dumps(r) for r in records) + "\n")
    return files


def config_for(tiny_model, output, sources, **overrides):
    values = dict(
        model=str(tiny_model),
        output_dir=str(output),
        device="cpu",
        data=[{"path": str(p)} for p in sources],
        num_generations=4,
        per_device_batch_size=4,
        max_completion_length=12,
        learning_rate=1e-3,
        max_steps=2,
        save_steps=1,
        lora_r=4,
        lora_alpha=8,
        gradient_accumulation_steps=1,
    )
    return TrainConfig(**{**values, **overrides})


def steps_logged(output):
    rows = [json.loads(line) for line in (output / METRICS_FILE).read_text().splitlines()]
    return [row for row in rows if "loss" in row]


def changed_tensors(base, final):
    before = {}
    for shard in base.glob("*.safetensors"):
        before.update(load_file(shard))
    after = load_file(final / "model.safetensors")
    assert len(after) == len(before)  # the whole model, under transformers' current names
    return sum(
        1
        for name, tensor in after.items()
        if not (tensor.shape == before[_legacy(name, before)].shape and tensor.equal(before[_legacy(name, before)]))
    )


def _legacy(name, before):
    """The base checkpoint keeps the released (pre-4.52) tensor names; map a saved name onto them."""
    if name in before:
        return name
    for new, old in (("model.language_model.", "model."), ("model.visual.", "visual."), ("lm_head.", "lm_head.")):
        if name.startswith(new) and old + name[len(new) :] in before:
            return old + name[len(new) :]
    raise KeyError(name)


def assert_scores_an_image(final, image, with_reference=False):
    """The exported judge reloads with the profile it was trained with, written beside its weights (the
    comparison profile when a training pair had a reference)."""
    judge = QualityJudge.from_pretrained(final, device="cpu")
    assert judge.profile_source == f"from the checkpoint's {PROFILE_FILE}"
    assert judge.profile == (QINSIGHT_COMPARISON if with_reference else QINSIGHT)
    assert judge.profile.settings_name() == judge.profile.name  # a built-in's rows, resumable as such
    assert json.loads((final / PROFILE_FILE).read_text())["tasks"]["score"]["content"] == ["<image>", SCORE_QUESTION]
    result = judge.score(image)
    assert isinstance(result, ScoreResult) and isinstance(result.raw, str)


def test_the_export_writes_the_trained_interface_over_a_base_judges_own_profile(tmp_path):
    """A base with its own profile file (VisualQuality-R1's, say) is trained on Q-Insight's prompts, so the
    exported judge's file must say so, not carry the base's file along with the processor files."""
    base, output = tmp_path / "base", tmp_path / "out"
    base.mkdir()
    (base / "tokenizer.json").write_text("{}")
    VISUALQUALITY_R1.save(base)

    class Trainer:
        accelerator = type("Accelerator", (), {"wait_for_everyone": staticmethod(lambda: None)})

        def save_model(self, folder):
            Path(folder).mkdir(parents=True)
            (Path(folder) / "model.safetensors").write_bytes(b"weights")

        def is_world_process_zero(self):
            return True

    samples = [Sample("comparison", (base / "r.png", base / "a.png", base / "b.png"), answer="Image A")]
    config = SimpleNamespace(output_dir=str(output), finetune="full")
    final = grpo._export(Trainer(), config, base, grpo.trained_profile(samples, base))
    assert (final / "tokenizer.json").is_file() and (final / "model.safetensors").read_bytes() == b"weights"
    written = load_profile_file(final / PROFILE_FILE)
    assert written == QINSIGHT_COMPARISON and "fine-tuned with qinsight train from base" in written.description
    assert grpo.trained_profile([Sample("score", (base / "a.png",), mos=3.0)], base) == QINSIGHT


@pytest.mark.parametrize("task", ["score", "degradation", "comparison"])
def test_two_full_finetuning_steps_per_task(tiny_model, data, tmp_path, task):
    output = tmp_path / "run"
    final = train(config_for(tiny_model, output, [data[task]]), extra_rewards=[spread])
    steps = steps_logged(output)
    assert [row["step"] for row in steps] == [1, 2]
    assert all(math.isfinite(row["loss"]) for row in steps)
    assert all(f"rewards/{name}/mean" in row for row in steps for name in ("format", task, "spread"))
    assert all("kl" in row and "completions/mean_length" in row for row in steps)
    assert (output / "checkpoint-2" / "model.safetensors").is_file()
    assert changed_tensors(tiny_model, final) > 10
    assert_scores_an_image(final, data[task].parent / "sample_0.png", with_reference=task == "comparison")


def test_lora_on_mixed_data_checkpoints_resumes_and_merges(tiny_model, data, tmp_path, caplog):
    output = tmp_path / "run"
    sources = [data["score"], data["degradation"], data["comparison"]]
    train(config_for(tiny_model, output, sources, finetune="lora"), extra_rewards=[spread])
    assert (output / "checkpoint-2" / "adapter_model.safetensors").is_file()
    with pytest.raises(TrainingError, match="--resume"):  # never silently restarts over a run
        train(config_for(tiny_model, output, sources, finetune="lora"))

    final = train(
        config_for(tiny_model, output, sources, finetune="lora", max_steps=3, learning_rate=2e-3),
        resume=True,
        extra_rewards=[spread],
    )
    warned = [r.getMessage() for r in caplog.records if "differ from the run's start" in r.getMessage()]
    assert len(warned) == 1 and "learning_rate" in warned[0] and "max_steps" not in warned[0]
    assert [row["step"] for row in steps_logged(output)] == [1, 2, 3]  # continued, not restarted
    assert (output / "checkpoint-3").is_dir()
    assert (output / "adapter" / "adapter_model.safetensors").is_file()
    assert changed_tensors(tiny_model, final) > 0  # the adapter is merged into the saved weights
    assert not (final / "adapter_config.json").exists()
    assert_scores_an_image(final, data["score"].parent / "sample_1.jpg", with_reference=True)


def test_qlora_trains_adapters_on_a_4bit_base_and_exports_the_base_unquantized(
    tiny_model, data, tmp_path, monkeypatch, caplog
):
    bnb = pytest.importorskip("bitsandbytes", reason=NO_BITSANDBYTES)
    import torch

    kept = {}
    export = grpo._export

    def keep_trainer(trainer, config, base, profile):
        kept["trainer"] = trainer
        return export(trainer, config, base, profile)

    monkeypatch.setattr(grpo, "_export", keep_trainer)
    caplog.set_level(logging.INFO, logger="qinsight")
    output = tmp_path / "run"
    # r 32: the largest adapter matrices reach the 4096 values from which bitsandbytes keeps 8-bit states
    config = config_for(tiny_model, output, [data["score"]], finetune="qlora", lora_r=32, lora_alpha=64)
    # on the CPU bitsandbytes runs the paged 8-bit AdamW unpaged, and says so
    with pytest.warns(UserWarning, match="Paged optimizers are not supported on CPU"):
        final = train(config, extra_rewards=[spread])

    trainer = kept["trainer"]
    quantized = [m for m in trainer.model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert len(quantized) == 14  # the tiny language model's 2 layers x 7 projections; not visual, lm_head
    assert all(m.weight.dtype == torch.uint8 for m in quantized)  # packed 4-bit weights, not a float copy
    lora_b = [p for name, p in trainer.model.named_parameters() if "lora_B" in name]
    assert len(lora_b) == 14 and all(p.abs().sum() > 0 for p in lora_b)  # they start at zero: trained
    # fp32, not the bf16 TRL casts them to, which would round learning-rate-sized steps of lora_A away
    assert {p.dtype for p in trainer.model.parameters() if p.requires_grad} == {torch.float32}
    optimizer = trainer.optimizer.optimizer  # inside accelerate's wrapper
    assert type(optimizer) is bnb.optim.AdamW and optimizer.is_paged and optimizer.args.optim_bits == 8
    assert torch.uint8 in {state["state1"].dtype for state in optimizer.state.values()}

    saved = load_file(output / "adapter" / "adapter_model.safetensors")
    assert all(tensor.abs().sum() > 0 for name, tensor in saved.items() if "lora_B" in name)
    assert changed_tensors(tiny_model, final) > 0  # merged, and the same tensors as the base: full size
    assert "quantization_config" not in json.loads((final / "config.json").read_text())
    assert any("unquantized copy" in r.getMessage() for r in caplog.records)
    judge = QualityJudge.from_pretrained(str(final), local_files_only=True)
    modules = dict(judge.backend.model.named_modules())
    assert not any(isinstance(m, bnb.nn.Linear4bit) for m in modules.values())
    assert sum(type(m) is torch.nn.Linear for name, m in modules.items() if "language_model" in name) == 14
    result = judge.score(data["score"].parent / "sample_0.png", mode="fast")
    assert isinstance(result, ScoreResult) and 1 <= result.score <= 5


def test_qlora_arguments_load_the_base_4bit_on_the_training_device():
    pytest.importorskip("bitsandbytes", reason=NO_BITSANDBYTES)
    qlora = grpo_arguments(TrainConfig(output_dir="unused", finetune="qlora", device="cpu"))
    loading = qlora.model_init_kwargs
    assert loading["quantization_config"].load_in_4bit and loading["device_map"] == {"": "cpu"}
    assert qlora.optim == "paged_adamw_8bit"
    lora = grpo_arguments(TrainConfig(output_dir="unused", finetune="lora", device="cpu"))
    assert "quantization_config" not in lora.model_init_kwargs and lora.optim != "paged_adamw_8bit"


def test_qlora_without_bitsandbytes_fails_before_anything_is_loaded(data, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # importing it now fails
    # no such model: a check made after the base is resolved would fail on that instead
    config = config_for(tmp_path / "no-model", tmp_path / "run", [data["score"]], finetune="qlora")
    with pytest.raises(TrainingError, match=r"qlora .*pip install 'qinsight\[quant\]'"):
        train(config)
    assert not (tmp_path / "run").exists()


def test_command_line_run(tiny_model, data, tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text(
        f"model: {tiny_model}\noutput_dir: run\ndevice: cpu\nmax_steps: 1\n"
        "num_generations: 2\nper_device_batch_size: 2\nmax_completion_length: 8\n"
        f"data:\n  - path: {data['degradation']}\n"
    )
    assert main(["train", "--config", str(config)]) == 0
    # output_dir is relative to the config file, like the data paths
    assert (tmp_path / "run" / "final" / "model.safetensors").is_file()
    assert [row["step"] for row in steps_logged(tmp_path / "run")] == [1]


def test_data_smaller_than_one_step_is_refused_not_trained_for_zero_steps(tiny_model, data, tmp_path):
    # 4 x 1 process x 2 / 2 generations = 4 prompts a step; the file holds 2
    config = config_for(tiny_model, tmp_path / "run", [data["score"]], num_generations=2, gradient_accumulation_steps=2)
    with pytest.raises(TrainingError, match="one optimizer step takes 4 prompts .* the data holds 2"):
        train(config)
    train(
        config_for(
            tiny_model,
            tmp_path / "fits",
            [data["score"]],
            num_generations=4,
            gradient_accumulation_steps=2,
            max_steps=1,
        )
    )  # exactly 2: one step
    assert [row["step"] for row in steps_logged(tmp_path / "fits")] == [1]


def test_resume_needs_a_checkpoint(tiny_model, data, tmp_path):
    with pytest.raises(TrainingError, match="nothing to resume"):
        train(config_for(tiny_model, tmp_path / "empty", [data["score"]]), resume=True)


def test_bad_rows_are_reported_with_their_row_before_training(tiny_model, data, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(data["score"].read_text() + json.dumps({"task": "score", "image": "gone.png", "mos": 3}) + "\n")
    config = config_for(
        tiny_model, tmp_path / "run", [bad], data=[{"path": str(bad), "image_root": str(data["score"].parent)}]
    )
    with pytest.raises(DataError, match=r"bad.jsonl:3: .*gone.png not found"):
        train(config)
    assert not (tmp_path / "run").exists()  # nothing started
    skipping = config_for(
        tiny_model,
        tmp_path / "run",
        [],
        skip_bad_rows=True,
        data=[{"path": str(bad), "image_root": str(data["score"].parent)}],
    )
    assert len(load_training_samples(skipping)) == 2


def test_training_images_are_fitted_whole_into_the_bounds(data):
    config = TrainConfig(data=[{"path": str(data["comparison"])}], min_pixels=56 * 56, max_pixels=112 * 112)
    samples = load_training_samples(config)
    row = build_dataset(samples, config.image_bounds())[1]
    assert len(row["images"]) == 3 and row["answer"] == "Similar"  # reference, A, B
    for image in row["images"]:
        assert image.width % 28 == 0 and image.height % 28 == 0
        assert 56 * 56 <= image.width * image.height <= 112 * 112
    roles = [m["role"] for m in row["prompt"]]
    assert roles == ["system", "user"]
    assert sum(part.get("type") == "image" for part in row["prompt"][1]["content"]) == 3


def test_ranking_and_gaussian_score_rewards_run(tiny_model, data, tmp_path):
    for kind, width in (("ranking", 8), ("gaussian", 4)):
        output = tmp_path / kind
        train(
            config_for(
                tiny_model,
                output,
                [data["score"]],
                score_reward=kind,
                per_device_batch_size=width,
                max_steps=1,
                strict_parsing=False,
            )
        )
        (step,) = steps_logged(output)
        assert f"rewards/{'ranking' if kind == 'ranking' else 'score'}/mean" in step and math.isfinite(step["loss"])


def test_two_processes_share_the_run(tiny_model, data, tmp_path):
    """Several processes (torchrun; accelerate launch does the same) split each step's prompts, and one of
    them logs and exports: the CPU stand-in for a multi-GPU run (gloo instead of NCCL, no DeepSpeed)."""
    import os
    import subprocess
    import sys

    config = tmp_path / "run.yaml"
    config.write_text(
        f"model: {tiny_model}\noutput_dir: run\ndevice: cpu\nmax_steps: 2\nsave_steps: 1\n"
        "finetune: lora\nlora_r: 4\nlora_alpha: 8\nnum_generations: 4\nper_device_batch_size: 4\n"
        "gradient_accumulation_steps: 1\n"
        f"max_completion_length: 8\ndata:\n  - path: {data['score']}\n"
    )
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            "-m",
            "qinsight_sdk",
            "train",
            "--config",
            str(config),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    steps = steps_logged(tmp_path / "run")
    assert [row["step"] for row in steps] == [1, 2]  # logged once, not once per process
    assert steps[0]["epoch"] == 1.0  # both prompts in one step: 2 processes x 1
    assert (tmp_path / "run" / "final" / "model.safetensors").is_file()
    assert_scores_an_image(tmp_path / "run" / "final", data["score"].parent / "sample_0.png")


def test_trl_gets_the_papers_sampling_and_kl():
    """Issue 11: TRL samples with top-k 0 and an importance-weighted KL by default; the paper did neither."""
    from qinsight_sdk.train.grpo import grpo_arguments

    arguments = grpo_arguments(TrainConfig(output_dir="unused"))
    assert (arguments.top_k, arguments.top_p, arguments.temperature, arguments.beta) == (50, 1.0, 1.0, 1e-3)
    assert getattr(arguments, "use_bias_correction_kl", False) is False


_TRAIN_OFFLINE = (
    NO_NETWORK
    + """
from qinsight_sdk.train.grpo import check_training_stack
check_training_stack()
print(json.dumps({"attempts": attempts, "records": records, "modules": sorted(sys.modules)}))
"""
)


def test_the_training_stack_imports_bitsandbytes_without_the_hub(tmp_path):
    """Issue 26: peft imports bitsandbytes, which (transformers 5 installs `kernels`) looked up a CPU kernel on
    the Hub at import and warned before every `qinsight train`. Online settings, sockets that refuse and record."""
    import os
    import subprocess
    import sys

    pytest.importorskip("bitsandbytes", reason="needs bitsandbytes")
    env = {key: value for key, value in os.environ.items() if key != "HF_HUB_OFFLINE"}
    env["HF_HOME"] = str(tmp_path / "hf-home")
    done = subprocess.run(
        [sys.executable, "-c", _TRAIN_OFFLINE],
        capture_output=True,
        text=True,
        env=env,
        cwd=Path(__file__).resolve().parents[2],
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.splitlines()[-1])
    assert "bitsandbytes" in seen["modules"] and "trl" in seen["modules"]
    assert seen["attempts"] == []
    assert [r for r in seen["records"] if "kernel" in r.lower() or r.startswith(("bitsandbytes", "huggingface"))] == []
    assert "kernel" not in done.stderr.lower()
