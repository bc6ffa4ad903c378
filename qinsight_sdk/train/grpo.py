"""GRPO fine-tuning on TRL's GRPOTrainer, with Q-Insight's multi-task rewards.

``train(config)`` checks the data, builds a dataset whose prompts come from ``qinsight_sdk.judging.prompts``
(the strings the SDK uses at inference) and whose images are loaded on access, fitted whole into the
configured pixel bounds (TRL keeps every prompt token: no image token is ever cut, unlike the official
code), runs GRPOTrainer, and writes a model folder that ``QualityJudge.from_pretrained`` loads: LoRA
adapters are merged into it (the adapter alone is kept beside it).

``finetune: qlora`` trains the same LoRA adapters on a base loaded 4-bit (NF4, the vision tower and lm_head
unquantized: ``qinsight_sdk.backends.quantization``) with paged 8-bit AdamW, so a 7B judge trains on one 24 GB GPU.
Its export is not quantized: the adapters are merged into a full-precision copy of the base, a full-size
folder like a lora run's, which ``QualityJudge.from_pretrained(..., quantization="4bit")`` loads 4-bit again.

Needs the ``[train]`` extra (TRL, PEFT) and transformers >= 4.57.1; qlora also the ``[quant]`` extra.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import shutil
from collections.abc import Callable, Sequence
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

from ..backends.checkpoints import default_subfolder, resolve_checkpoint
from ..backends.quantization import import_bitsandbytes, quantization_config, require_bitsandbytes
from ..errors import MissingDependencyError, QInsightError
from ..evaluation.data import DataError, Sample, mix, read_source
from ..io.images import ImageBounds, load_image
from ..judging.profiles import QINSIGHT, QINSIGHT_COMPARISON, JudgeProfile
from . import rewards as reward_functions
from .config import ConfigError, TrainConfig

log = logging.getLogger("qinsight")

MIN_TRANSFORMERS = "4.57.1"  # TRL's floor is 4.56.2; 4.54-4.56 generate wrongly in padded batches
FINAL_FOLDER = "final"  # the trained model, loadable by QualityJudge
ADAPTER_FOLDER = "adapter"  # LoRA and QLoRA runs: the adapter alone
ADAPTER_FINETUNES = ("lora", "qlora")  # runs that train LoRA adapters, exported merged into the base
# bitsandbytes' paged 8-bit AdamW: optimizer states in 8 bits, paged to CPU memory when the GPU runs short.
# On the CPU bitsandbytes keeps the 8-bit states but not the paging, with a warning.
QLORA_OPTIMIZER = "paged_adamw_8bit"
METRICS_FILE = "metrics.jsonl"
CONFIG_FILE = "train_config.json"
_WEIGHT_FILES = ("*.safetensors", "model.safetensors.index.json", "config.json", "generation_config.json")
_LORA_TARGETS = {
    "language": r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)$",
    "all": r".*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj|qkv|attn\.proj)$",
}

RewardFunction = Callable[..., list]


class TrainingError(QInsightError):
    """A run that cannot start or finish; the message says what to change."""


def check_training_stack(finetune: str = "full") -> None:
    """Raise with install advice unless TRL, PEFT and a new enough transformers are importable (and, for
    qlora, bitsandbytes): before any model, data or output folder is touched."""
    import transformers
    from packaging.version import Version

    if Version(transformers.__version__) < Version(MIN_TRANSFORMERS):
        raise TrainingError(
            f"training needs transformers>={MIN_TRANSFORMERS}; this environment "
            f"has {transformers.__version__}: pip install -U 'qinsight[train]'"
        )
    try:
        with contextlib.suppress(ImportError):  # peft imports bitsandbytes: first without its hub lookup
            import_bitsandbytes()
        import peft  # noqa: F401
        import trl  # noqa: F401
    except ImportError as exc:
        raise TrainingError(f"training needs the [train] extra ({exc}): pip install 'qinsight[train]'") from None
    if finetune == "qlora":
        try:
            require_bitsandbytes("finetune: qlora (LoRA on a base loaded 4-bit)")
        except MissingDependencyError as exc:
            raise TrainingError(str(exc)) from None


def load_training_samples(config: TrainConfig) -> list[Sample]:
    """Every data source read and checked (all problems reported at once), then mixed by weight."""
    if not config.data:
        raise ConfigError("data: give at least one data file")
    sources, problems = [], []
    for source in config.data:
        try:
            samples = read_source(source.path, source.format, source.image_root, source.mos_range, config.skip_bad_rows)
        except DataError as exc:
            problems.append(str(exc))
            continue
        sources.append((samples, source.weight))
    if problems:
        raise DataError("\n".join(problems))
    samples = mix(sources, seed=config.seed)
    if not samples:
        raise DataError("no training samples left")
    return samples


def build_dataset(samples: Sequence[Sample], bounds: ImageBounds) -> Any:
    """A datasets.Dataset of label columns; prompt and images are made when a row is read."""
    from datasets import Dataset

    # sample_id: the row, unique even where mixing repeats a sample (the ranking reward groups by it)
    dataset = Dataset.from_list([{**sample.columns(), "sample_id": i} for i, sample in enumerate(samples)])

    def with_prompt_and_images(batch: dict[str, list]) -> dict[str, list]:
        chosen = [samples[i] for i in batch["sample_id"]]
        return {
            **batch,
            "prompt": [s.conversation() for s in chosen],
            "images": [[_training_image(path, bounds, s.origin) for path in s.images] for s in chosen],
        }

    dataset.set_transform(with_prompt_and_images)
    return dataset


def _training_image(path: Path, bounds: ImageBounds, origin: str) -> Any:
    try:
        return load_image(path, bounds)
    except QInsightError as exc:  # checked before training; this is a file changed since
        raise DataError(f"{origin}: {exc}") from None


def build_rewards(config: TrainConfig, tasks: set[str]) -> list[RewardFunction]:
    """The rewards that apply to the data's tasks, each named as it is logged (rewards/<name>/mean)."""
    strict = {"strict": config.strict_parsing}
    chosen = []
    if config.format_reward:
        chosen.append(_named("format", reward_functions.format_reward))
    if "score" in tasks:
        if config.score_reward == "ranking":
            chosen.append(_named("ranking", reward_functions.ranking_reward, **strict))
        else:
            chosen.append(
                _named(
                    "score",
                    reward_functions.score_reward,
                    kind=config.score_reward,
                    epsilon=config.score_epsilon,
                    sigma=config.score_sigma,
                    **strict,
                )
            )
    if "degradation" in tasks:
        chosen.append(_named("degradation", reward_functions.degradation_reward, **strict))
    if "comparison" in tasks:
        chosen.append(_named("comparison", reward_functions.comparison_reward, **strict))
    return chosen


def _named(name: str, function: RewardFunction, **options: Any) -> RewardFunction:
    def reward(completions: Sequence[Any], **columns: Any) -> list:
        return function(completions, **columns, **options)

    reward.__name__ = name
    return reward


def _on_gpu(config: TrainConfig) -> bool:
    import torch

    return config.device != "cpu" and torch.cuda.is_available()


def grpo_arguments(config: TrainConfig) -> Any:
    """TRL's GRPOConfig for this run. Made before the model, as DeepSpeed ZeRO-3 needs."""
    import torch
    from trl import GRPOConfig

    from ..backends.qwen2_5_vl.loading import choose_attention

    gpu = _on_gpu(config)
    bf16 = config.precision == "bf16" or (config.precision == "auto" and gpu)
    dtype = torch.bfloat16 if bf16 else torch.float32
    attention = choose_attention(config.attn_implementation, torch.device("cuda" if gpu else "cpu"), dtype)
    known = {f.name for f in fields(GRPOConfig)}
    # TRL releases that cut prompts to a maximum length would cut image tokens: never let them
    uncut = {"max_prompt_length": None} if "max_prompt_length" in known else {}
    # releases with an importance-weighted KL: as the config says (the paper's loss had none)
    kl = {"use_bias_correction_kl": config.kl_bias_correction} if "use_bias_correction_kl" in known else {}
    optimizer = {"optim": QLORA_OPTIMIZER} if config.finetune == "qlora" else {}
    return GRPOConfig(
        **uncut,
        **kl,
        **optimizer,
        top_k=config.top_k,
        top_p=config.top_p,
        output_dir=config.output_dir,
        use_cpu=not gpu,
        bf16=bf16,
        seed=config.seed,
        per_device_train_batch_size=config.per_device_batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        num_generations=config.num_generations,
        beta=config.beta,
        loss_type=config.loss_type,
        epsilon=config.clip_epsilon,
        temperature=config.temperature,
        max_completion_length=config.max_completion_length,
        learning_rate=config.learning_rate,
        lr_scheduler_type=config.lr_scheduler,
        warmup_steps=config.warmup_steps,
        num_train_epochs=config.epochs,
        max_steps=config.max_steps,
        max_grad_norm=config.max_grad_norm,
        gradient_checkpointing=config.gradient_checkpointing,
        use_vllm=config.use_vllm,
        vllm_mode=config.vllm_mode,
        save_strategy="steps",
        save_steps=config.save_steps,
        save_total_limit=config.save_total_limit,
        logging_steps=config.logging_steps,
        report_to=config.report_to or "none",
        remove_unused_columns=False,  # the reward functions read the label columns
        trust_remote_code=config.trust_remote_code,
        model_init_kwargs=_model_init_kwargs(config, dtype, attention, gpu),
    )


def _model_init_kwargs(config: TrainConfig, dtype: Any, attention: str, gpu: bool) -> dict[str, Any]:
    """How GRPOTrainer loads the model it is given by path; for qlora, 4-bit on the training device.

    The device map is explicit because bitsandbytes' loader otherwise picks the GPU whenever one is
    visible, even for a run with device: cpu. Under several processes TRL replaces it with None, which
    then means each process's own GPU.
    """
    kwargs = {"dtype": dtype, "attn_implementation": attention, "use_safetensors": True}
    if config.finetune == "qlora":
        import torch

        device = torch.cuda.current_device() if gpu else "cpu"
        kwargs.update(quantization_config=quantization_config("4bit", dtype), device_map={"": device})
    return kwargs


def lora_config(config: TrainConfig) -> Any:
    from peft import LoraConfig

    return LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=_LORA_TARGETS.get(config.lora_targets, config.lora_targets),
        task_type="CAUSAL_LM",
    )


def train(config: TrainConfig, resume: bool = False, extra_rewards: Sequence[RewardFunction] = ()) -> Path:
    """Run GRPO and return the folder of the trained model (``<output_dir>/final``).

    ``resume`` continues from the newest checkpoint in ``output_dir``; without it, a folder that
    already holds checkpoints is refused rather than overwritten. ``extra_rewards`` are added to the
    paper's, with TRL's reward-function signature.
    """
    check_training_stack(config.finetune)
    from transformers.trainer_utils import get_last_checkpoint
    from trl import GRPOTrainer

    from ..backends.qwen2_5_vl.loading import load_processor

    output = Path(config.output_dir)
    last = get_last_checkpoint(str(output)) if output.is_dir() else None
    if resume and last is None:
        raise TrainingError(f"nothing to resume: {output} holds no checkpoint-* folder")
    if not resume and last is not None:
        raise TrainingError(
            f"{output} already holds {Path(last).name}: pass --resume to continue that run, "
            "or choose another output_dir"
        )
    if resume:
        _warn_about_changes(config, output / CONFIG_FILE)
    base = _resolve_base(config)
    samples = load_training_samples(config)
    args = grpo_arguments(config)
    _check_one_step_fits(len(samples), config, args.world_size)
    processor = load_processor(base, config.trust_remote_code)
    _set_pixel_bounds(processor, config.image_bounds())
    # qlora: TRL readies the 4-bit base itself (input gradients for checkpointing; adapters in bf16, which
    # _keep_adapters_in_fp32 undoes). PEFT's prepare_model_for_kbit_training would also upcast the unquantized
    # vision tower, embeddings and lm_head to fp32, ~3.5 GB more on a 7B, for the stability of fp16 training,
    # which bf16 does not need.
    trainer = GRPOTrainer(
        model=str(base),
        args=args,
        processing_class=processor,
        reward_funcs=build_rewards(config, {s.task for s in samples}) + list(extra_rewards),
        train_dataset=build_dataset(samples, config.image_bounds()),
        peft_config=lora_config(config) if config.finetune in ADAPTER_FINETUNES else None,
    )
    if config.finetune == "qlora":
        _keep_adapters_in_fp32(trainer.model)
    _use_progress_log(trainer, output / METRICS_FILE)
    if trainer.is_world_process_zero():
        output.mkdir(parents=True, exist_ok=True)
        (output / CONFIG_FILE).write_text(json.dumps(config.to_dict(), indent=2), encoding="utf-8")
        log.info("training on %d samples (%s)", len(samples), _task_counts(samples))
    trainer.train(resume_from_checkpoint=last if resume else None)
    return _export(trainer, config, base, trained_profile(samples, base))


def _check_one_step_fits(prompts: int, config: TrainConfig, processes: int) -> None:
    """Refuse data smaller than one optimizer step: the trainer would finish at step 0 and save an unchanged
    model without a word."""
    completions = config.per_device_batch_size * processes * config.gradient_accumulation_steps
    needed = completions // config.num_generations
    if prompts < needed:
        raise TrainingError(
            f"one optimizer step takes {needed} prompts (per_device_batch_size {config.per_device_batch_size} x "
            f"{processes} process(es) x gradient_accumulation_steps {config.gradient_accumulation_steps} / "
            f"num_generations {config.num_generations}) but the data holds {prompts}: add data or lower "
            "per_device_batch_size or gradient_accumulation_steps"
        )


def _keep_adapters_in_fp32(model: Any) -> None:
    """Undo TRL's cast of a 4-bit base's LoRA adapters to bf16 (before train() builds the optimizer).

    bf16 is the QLoRA paper's choice, at its 1e-4 learning rates. At GRPO's 1e-5 an AdamW step is under
    half a bf16 step for most lora_A weights (|w| up to 1/sqrt(hidden size), 0.017 on a 7B): rounded away,
    so they would never change. In fp32 they train as a lora run's do (computed in bf16 under autocast on
    a GPU), for ~0.6 GB more on a 7B at r 64.
    """
    for parameter in model.parameters():
        if parameter.requires_grad:
            parameter.data = parameter.data.float()


_CHANGEABLE_ON_RESUME = {"max_steps", "epochs", "save_steps", "save_total_limit", "logging_steps", "report_to"}


def _warn_about_changes(config: TrainConfig, saved: Path) -> None:
    """A resumed run should be the same run: say which settings differ from the ones it started with."""
    try:
        before = json.loads(saved.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    now = json.loads(json.dumps(config.to_dict()))  # the same JSON types as the saved copy
    changed = sorted(k for k in now if k not in _CHANGEABLE_ON_RESUME and before.get(k) != now[k])
    if changed:
        log.warning(
            "resuming with settings that differ from the run's start: %s (was %s)",
            ", ".join(changed),
            ", ".join(repr(before.get(k)) for k in changed),
        )


def _resolve_base(config: TrainConfig) -> Path:
    subfolder = config.subfolder if config.subfolder is not None else default_subfolder(config.model)
    return resolve_checkpoint(config.model, subfolder, config.revision)


def _set_pixel_bounds(processor: Any, bounds: ImageBounds) -> None:
    """Make the processor's own resize agree with ours, so it never shrinks an image we fitted."""
    image_processor = processor.image_processor
    image_processor.size = {"shortest_edge": bounds.min_pixels, "longest_edge": bounds.max_pixels}
    for name in ("min_pixels", "max_pixels"):  # older releases read these, newer warn when they are set
        if getattr(image_processor, name, None) is not None:
            setattr(image_processor, name, getattr(bounds, name))


def _task_counts(samples: Sequence[Sample]) -> str:
    counts: dict[str, int] = {}
    for sample in samples:
        counts[sample.task] = counts.get(sample.task, 0) + 1
    return ", ".join(f"{task} {n}" for task, n in sorted(counts.items()))


def trained_profile(samples: Sequence[Sample], base: Path) -> JudgeProfile:
    """The interface the trained judge learned: Q-Insight's prompts and answer format, which training asks
    (:meth:`Sample.conversation`) whatever the base judge was; its comparison profile if any training pair
    had a reference."""
    with_reference = any(s.task == "comparison" and len(s.images) == 3 for s in samples)
    return replace(
        QINSIGHT_COMPARISON if with_reference else QINSIGHT,
        description=f"fine-tuned with qinsight train from {base.name}, on Q-Insight's prompts",
    )


def _export(trainer: Any, config: TrainConfig, base: Path, profile: JudgeProfile) -> Path:
    """Write the final model folder: weights in safetensors, the base checkpoint's processor files, and the
    judge profile it was trained with (so it loads with its own interface wherever it goes)."""
    output = Path(config.output_dir)
    final = output / FINAL_FOLDER
    if config.finetune in ADAPTER_FINETUNES:
        trainer.save_model(str(output / ADAPTER_FOLDER))
        if trainer.is_world_process_zero():
            _merge_adapter(base, output / ADAPTER_FOLDER, final)
            if config.finetune == "qlora":
                log.info(
                    "merged the LoRA adapters trained on the 4-bit base into an unquantized copy of it: "
                    "%s is full size; QualityJudge.from_pretrained(..., quantization='4bit') loads it "
                    "4-bit again",
                    final,
                )
    else:
        trainer.save_model(str(final))
    trainer.accelerator.wait_for_everyone()
    if trainer.is_world_process_zero():
        _copy_processor_files(base, final)
        profile.save(final)  # after the copy: a base judge's own profile file is not this judge's
    return final


def _merge_adapter(base: Path, adapter: Path, final: Path) -> None:
    """Merge a LoRA adapter into a fresh CPU copy of the base model, never quantized: the same after
    multi-GPU runs, and after QLoRA a full-precision model rather than a 4-bit one's rounded weights."""
    from peft import PeftModel
    from transformers import Qwen2_5_VLForConditionalGeneration

    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(base, dtype="auto", use_safetensors=True)
    merged = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    merged.save_pretrained(final)


def _copy_processor_files(base: Path, final: Path) -> None:
    """Replace whatever processor/tokenizer files the save wrote with the base checkpoint's own.

    Training does not change them, and the processor in memory may be our image-only stand-in, whose
    saved class name other machines could not load.
    """

    def is_weights(path: Path) -> bool:
        return any(path.match(pattern) for pattern in _WEIGHT_FILES)

    for path in final.iterdir():
        if path.is_file() and not is_weights(path):
            path.unlink()
    for path in base.iterdir():
        if path.is_file() and not is_weights(path):
            shutil.copy2(path, final / path.name)


# -- logging --------------------------------------------------------------------------------------

_SHOWN = (("loss", "loss"), ("reward", "reward"), ("kl", "kl"), ("completions/mean_length", "length"))


def format_step(logs: dict[str, float], step: int) -> str:
    """One console line per logged step: the loss, the total and each reward's mean, KL, length."""
    parts = [f"step {step}"]
    for key, label in _SHOWN:
        if key in logs:
            parts.append(f"{label} {logs[key]:.4g}")
    for key, value in logs.items():
        if key.startswith("rewards/") and key.endswith("/mean"):
            name = key[len("rewards/") : -len("/mean")]
            label = "format pass" if name == "format" else name
            parts.append(f"{label} {value:.3f}")
    return " | ".join(parts)


def _use_progress_log(trainer: Any, metrics_path: Path) -> None:
    """Console: a progress bar and one line per step. Disk: every logged value, appended as JSON lines."""
    from transformers.trainer_callback import ProgressCallback

    class ProgressLog(ProgressCallback):
        def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None, **kwargs: Any) -> None:
            if not state.is_world_process_zero or not logs:
                return
            values = {k: v for k, v in logs.items() if isinstance(v, (int, float)) and math.isfinite(v)}
            if self.training_bar is not None and "loss" in logs:
                self.training_bar.write(format_step(values, state.global_step))
            metrics_path.parent.mkdir(parents=True, exist_ok=True)
            with metrics_path.open("a", encoding="utf-8") as handle:
                handle.write(json.dumps({"step": state.global_step, **values}) + "\n")

    trainer.remove_callback(ProgressCallback)
    trainer.add_callback(ProgressLog())
