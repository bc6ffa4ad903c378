"""The training config: YAML, presets, checks that name the field, and the shipped config files."""

import dataclasses

import pytest
import yaml

from qinsight_sdk.cli import main
from qinsight_sdk.train import ConfigError, TrainConfig, config_template
from qinsight_sdk.train.config import PAPER_MAX_PIXELS


def test_defaults_are_the_paper_recipe():
    config = TrainConfig()
    assert (config.num_generations, config.beta, config.learning_rate, config.lr_scheduler) == (8, 1e-3, 1e-6, "linear")
    assert (config.temperature, config.max_completion_length, config.finetune) == (1.0, 256, "full")
    assert config.max_pixels == PAPER_MAX_PIXELS == 12_845_056 and config.min_pixels == 3136
    assert config.score_epsilon == 0.35 and config.strict_parsing and config.report_to == []
    assert (config.top_k, config.top_p, config.kl_bias_correction) == (50, 1.0, False)  # issue 11
    # issue 26: as run_qinsight_score_and_dist.sh: from the instruct model, 8 per device x 2 accumulation
    assert (config.model, config.subfolder, config.epochs) == ("Qwen/Qwen2.5-VL-7B-Instruct", None, 10)
    assert (config.per_device_batch_size, config.gradient_accumulation_steps) == (8, 2)
    assert TrainConfig.from_dict({}) == config == TrainConfig.from_dict({"preset": "paper"})


def test_the_comparison_stage_preset():
    """As run_qinsight_comparison.sh: from the score and degradation model, 2 per device x 2, 10 epochs."""
    config = TrainConfig.from_dict({"preset": "paper-comparison"})
    assert (config.model, config.subfolder, config.epochs, config.finetune, config.beta) == (
        "ByteDance/Q-Insight",
        "score_degradation",
        10,
        "full",
        1e-3,
    )
    assert (config.per_device_batch_size, config.gradient_accumulation_steps) == (2, 2)


@pytest.mark.parametrize("preset", ["lora", "qlora"])
def test_the_one_gpu_presets_adapt_the_released_judge(preset):
    assert TrainConfig.from_dict({"preset": preset}).model == "ByteDance/Q-Insight"


def test_the_qlora_preset_fits_groups_of_eight_in_steps_like_the_lora_presets():
    config = TrainConfig.from_dict({"preset": "qlora"})
    lora = TrainConfig.from_dict({"preset": "lora"})
    assert (config.finetune, config.learning_rate, config.gradient_checkpointing) == ("qlora", lora.learning_rate, True)
    completions = config.per_device_batch_size * config.gradient_accumulation_steps
    assert completions % config.num_generations == 0
    assert completions == lora.per_device_batch_size * lora.gradient_accumulation_steps == 32
    assert config.per_device_batch_size < lora.per_device_batch_size and config.max_pixels < lora.max_pixels
    assert TrainConfig(finetune="qlora").finetune == "qlora"  # accepted without the preset too


def test_yaml_with_preset_overrides_and_relative_paths(tmp_path):
    (tmp_path / "cfg").mkdir()
    path = tmp_path / "cfg" / "run.yaml"
    path.write_text(
        "preset: lora\nlearning_rate: 3.0e-5\nreport_to: tensorboard\noutput_dir: out\n"
        "data:\n  - path: data/train.jsonl\n    image_root: ../images\n    weight: 2\n"
    )
    config = TrainConfig.from_yaml(path)
    assert config.finetune == "lora" and config.gradient_accumulation_steps == 4  # from the preset
    assert config.learning_rate == 3e-5 and config.report_to == ["tensorboard"]  # from the file
    source = config.data[0]
    assert source.path == str(tmp_path / "cfg" / "data" / "train.jsonl")
    assert source.image_root == str(tmp_path / "images") and source.weight == 2
    assert config.output_dir == str(tmp_path / "cfg" / "out")


@pytest.mark.parametrize(
    "text, named",
    [
        ("learning_rat: 1.0e-5\n", "learning_rat"),
        ("finetune: dora\n", "finetune"),
        ("score_reward: l1\n", "score_reward"),
        ("preset: fast\n", "preset"),
        ("num_generations: 1\n", "num_generations"),
        ("min_pixels: 10\n", "min_pixels"),
        ("data:\n  - path: a.jsonl\n    format: parquet\n", "format"),
        ("data:\n  - path: a.jsonl\n    weigth: 2\n", "weigth"),
        ("data:\n  - image_root: x\n", "data[0]"),
        ("- just\n- a list\n", "mapping"),
        ("score_reward: ranking\ngradient_accumulation_steps: 1\n", "score_reward ranking"),  # 8: one image, no order
    ],
)
def test_bad_config_names_the_field(tmp_path, text, named):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=named.replace("[", r"\[").replace("]", r"\]")):
        TrainConfig.from_yaml(path)


def test_example_config_has_every_field_with_its_default():
    values = yaml.safe_load(config_template("example"))
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    assert set(values) - {"preset"} == fields
    defaults = TrainConfig().to_dict()
    for name in fields - {"data"}:
        assert values[name] == defaults[name], name
    TrainConfig.from_dict(values)  # and it is a valid config


def test_zero3_config_is_one_accelerate_reads(tmp_path):
    from accelerate.commands.config.config_args import ClusterConfig

    path = tmp_path / "zero3.yaml"
    path.write_text(config_template("zero3"))
    config = ClusterConfig.from_yaml_file(str(path))
    assert config.distributed_type.value == "DEEPSPEED" and config.deepspeed_config["zero_stage"] == 3
    assert config.mixed_precision == "bf16"


def test_cli_prints_the_shipped_configs(capsys):
    assert main(["train", "--example-config"]) == 0
    assert capsys.readouterr().out == config_template("example")
    assert main(["train", "--accelerate-config"]) == 0
    assert "zero_stage: 3" in capsys.readouterr().out


def test_cli_reports_a_bad_config_without_a_traceback(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text("epochs: [1\n")
    assert main(["train", "--config", str(path)]) == 2
    assert "cannot read config" in capsys.readouterr().err


def test_the_docs_explain_every_field():
    from pathlib import Path

    page = (Path(__file__).resolve().parents[2] / "docs" / "training.md").read_text(encoding="utf-8")
    section = page[page.index("## The config file") : page.index("## Running it")]
    missing = [f.name for f in dataclasses.fields(TrainConfig) if f"`{f.name}`" not in section]
    assert not missing
