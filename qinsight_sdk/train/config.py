"""What a training run is: one dataclass, read from a YAML file, with the paper's settings as a preset.

Every field has a default; a config file sets only what differs. ``preset`` picks a set of defaults
first (``paper``: Q-Insight's published recipe; ``lora``: the same GRPO settings on one GPU with LoRA;
``qlora``: LoRA on a 4-bit base, sized for one 24 GB GPU), then the file's own fields override it.
Unknown fields are errors, so a typo never silently trains with a default.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..backends.checkpoints import DEFAULT_MODEL
from ..errors import QInsightError
from ..evaluation.data import FORMATS
from ..io.images import PAPER_MAX_PIXELS, PAPER_MIN_PIXELS, ImageBounds
from .rewards import SCORE_EPSILON

PAPER_BASE_MODEL = "Qwen/Qwen2.5-VL-7B-Instruct"  # where run_qinsight_score_and_dist.sh starts

SCORE_REWARDS = ("threshold", "gaussian", "ranking")
FINETUNES = ("full", "lora", "qlora")


class ConfigError(QInsightError):
    """A training configuration that cannot be used; the message names the field."""


@dataclass
class DataSource:
    """One data file: its format, where its image paths are relative to, and its mixing weight."""

    path: str
    image_root: str | None = None  # default: the data file's folder
    format: str = "qinsight"  # qinsight | deqa | qinsight-comparison | csv
    weight: float = 1.0  # how often each sample appears on average (0.5: a random half)
    mos_range: list[float] | None = None  # csv only: the MOS scale, default the file's own min and max


@dataclass
class TrainConfig:
    """A GRPO fine-tuning run. Defaults are Q-Insight's settings (the ``paper`` preset)."""

    model: str = PAPER_BASE_MODEL  # hub id or local folder to start from
    subfolder: str | None = None  # default: score_degradation for ByteDance/Q-Insight
    revision: str | None = None
    output_dir: str = "qinsight-run"
    data: list[DataSource] = field(default_factory=list)
    skip_bad_rows: bool = False  # leave out rows whose image is missing/unreadable (and say how many)

    # what is trained
    finetune: str = "full"  # full | lora | qlora (LoRA on a 4-bit base; the [quant] extra)
    lora_r: int = 64
    lora_alpha: int = 128
    lora_dropout: float = 0.05
    lora_targets: str = "language"  # language | all | a regular expression over module names

    # rewards (each applies to the samples of its task; the total is their sum, as in the paper)
    format_reward: bool = True
    score_reward: str = "threshold"  # threshold (paper) | gaussian | ranking (VisualQuality-R1)
    score_epsilon: float = SCORE_EPSILON
    score_sigma: float = 0.5  # gaussian only
    strict_parsing: bool = True  # read answers exactly as the paper's rewards did

    # GRPO
    num_generations: int = 8  # completions per prompt (the group)
    beta: float = 1e-3  # KL weight against the starting model
    loss_type: str = "grpo"
    clip_epsilon: float = 0.2
    temperature: float = 1.0
    top_k: int = 50  # the official generation's (transformers' default); TRL's is 0
    top_p: float = 1.0
    kl_bias_correction: bool = False  # TRL's importance-weighted KL (its default); the paper had none
    max_completion_length: int = 256
    min_pixels: int = PAPER_MIN_PIXELS
    max_pixels: int = PAPER_MAX_PIXELS

    # optimisation
    learning_rate: float = 1e-6
    lr_scheduler: str = "linear"
    warmup_steps: int = 0
    # completions per device per step; per_device_batch_size x devices x gradient_accumulation_steps
    # must be a multiple of num_generations (a group may span devices and steps)
    per_device_batch_size: int = 8
    gradient_accumulation_steps: int = 2
    epochs: float = 10
    max_steps: int = -1  # > 0 overrides epochs
    max_grad_norm: float = 1.0
    seed: int = 0

    # machinery
    device: str = "auto"  # auto | cuda | cpu (accelerate launch decides across GPUs)
    precision: str = "auto"  # auto (bf16 on GPU, fp32 on CPU) | bf16 | fp32
    gradient_checkpointing: bool = True
    attn_implementation: str | None = None  # default: flash_attention_2 if installed on GPU, else sdpa
    use_vllm: bool = False  # generate with vLLM (GPU, vLLM installed)
    vllm_mode: str = "colocate"  # colocate | server
    save_steps: int = 100
    save_total_limit: int | None = 2
    logging_steps: int = 1
    report_to: list[str] = field(default_factory=list)  # e.g. [tensorboard] or [wandb]; none by default
    trust_remote_code: bool = False

    def __post_init__(self) -> None:
        self.data = [
            source if isinstance(source, DataSource) else _data_source(source, i) for i, source in enumerate(self.data)
        ]
        self.validate()

    def validate(self) -> None:
        _choice("finetune", self.finetune, FINETUNES)
        _choice("score_reward", self.score_reward, SCORE_REWARDS)
        _choice("precision", self.precision, ("auto", "bf16", "fp32"))
        _choice("vllm_mode", self.vllm_mode, ("colocate", "server"))
        for source in self.data:
            _choice("data[].format", source.format, FORMATS)
            if source.weight < 0:
                raise ConfigError(f"data[].weight must not be negative, got {source.weight} for {source.path}")
        if self.num_generations < 2:
            raise ConfigError(f"num_generations must be at least 2 (GRPO compares a group), got {self.num_generations}")
        try:
            self.image_bounds()
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        per_generation = self.per_device_batch_size * self.gradient_accumulation_steps
        if self.score_reward == "ranking" and per_generation < 2 * self.num_generations:
            raise ConfigError(
                "score_reward ranking compares the images of one device's batch: "
                "per_device_batch_size x gradient_accumulation_steps must be at least "
                f"2 x num_generations ({2 * self.num_generations}), got {per_generation}"
            )
        if self.max_completion_length < 1:
            raise ConfigError("max_completion_length must be positive")
        if isinstance(self.report_to, str):
            self.report_to = [] if self.report_to == "none" else [self.report_to]

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        values = dict(values)
        preset = values.pop("preset", "paper")
        if preset not in PRESETS:
            raise ConfigError(f"preset must be one of {', '.join(PRESETS)}, got {preset!r}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown config field(s): {', '.join(unknown)}")
        return cls(**{**PRESETS[preset], **values})

    @classmethod
    def from_yaml(cls, path: str | Path) -> TrainConfig:
        """Read a config file; relative paths (data, output_dir, a local model) are from the file's folder."""
        import yaml

        path = Path(path)
        try:
            values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"cannot read config {path}: {exc}") from None
        if not isinstance(values, dict):
            raise ConfigError(f"config {path} must be a mapping of field: value")
        here = path.parent
        for source in values.get("data") or []:
            if isinstance(source, dict):
                for key in ("path", "image_root"):
                    if source.get(key) is not None:
                        source[key] = str((here / source[key]).resolve())
        if values.get("output_dir") is not None:
            values["output_dir"] = str((here / values["output_dir"]).resolve())
        if isinstance(values.get("model"), str) and (here / values["model"]).exists():  # a local folder
            values["model"] = str((here / values["model"]).resolve())
        return cls.from_dict(values)

    def image_bounds(self) -> ImageBounds:
        """Training images are fitted into these bounds whole: image tokens are never cut from a prompt."""
        return ImageBounds(self.min_pixels, self.max_pixels)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _data_source(values: Any, index: int) -> DataSource:
    if not isinstance(values, dict) or "path" not in values:
        raise ConfigError(f"data[{index}] must be a mapping with at least a path")
    known = {f.name for f in dataclasses.fields(DataSource)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"data[{index}]: unknown field(s) {', '.join(unknown)}")
    return DataSource(**values)


def _choice(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")


PRESETS: dict[str, dict[str, Any]] = {
    # Q-Insight, as run_qinsight_score_and_dist.sh ran it: full fine-tuning of Qwen2.5-VL-7B-Instruct, G=8,
    # beta 1e-3, AdamW 1e-6 decaying linearly, temperature 1.0, 256 new tokens, up to 16384 image tokens,
    # 10 epochs, 8 completions per device x 2 accumulation steps (x 16 GPUs: 256 completions per step).
    "paper": {},
    # The same GRPO recipe on one GPU, adapting the released judge: LoRA on the language model, a learning
    # rate LoRA needs, 32 completions (4 groups) per step.
    "lora": {"model": DEFAULT_MODEL, "finetune": "lora", "learning_rate": 1e-5, "gradient_accumulation_steps": 4},
    # The lora preset on one 24 GB GPU: the same 32 completions (4 groups) per step and learning rate, with
    # the base model 4-bit. An estimate for a 7B judge, not a measurement: the base ~7 GB (language linear
    # layers in NF4 ~3.4 GB; the vision tower, embeddings and lm_head kept in bf16 ~3.5 GB); LoRA r=64
    # (~160 M parameters) in fp32, its gradients and 8-bit AdamW states ~1.6 GB; activations, with gradient
    # checkpointing, ~1 GB per completion of ~1.6 k tokens, so 4 per micro-batch; generating the 32
    # completions of a step at once, ~3 GB of KV cache: ~13-16 GB in all, the rest headroom. Images up to
    # 1280 image tokens (KonIQ's 1024x768 and smaller pass unchanged): the paper's bound, 16384, would make
    # one completion's activations over 10x larger.
    "qlora": {
        "model": DEFAULT_MODEL,
        "finetune": "qlora",
        "learning_rate": 1e-5,
        "per_device_batch_size": 4,
        "gradient_accumulation_steps": 8,
        "gradient_checkpointing": True,
        "max_pixels": 1280 * 28 * 28,
    },
    # Q-Insight's second stage, reference-based comparison, as run_qinsight_comparison.sh ran it: from the
    # score and degradation model, 10 epochs over DiffIQA pairs (data format qinsight-comparison),
    # 2 completions per device x 2 accumulation steps.
    "paper-comparison": {
        "model": DEFAULT_MODEL,
        "subfolder": "score_degradation",
        "epochs": 10,
        "per_device_batch_size": 2,
        "gradient_accumulation_steps": 2,
    },
}
