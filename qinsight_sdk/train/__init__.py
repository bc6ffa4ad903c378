"""GRPO fine-tuning with Q-Insight's multi-task rewards (the ``[train]`` extra: TRL, PEFT).

``config`` is what a run is (a dataclass read from YAML), ``rewards`` how answers are judged (plain
functions, importable without TRL), ``grpo`` the run itself on TRL's GRPOTrainer; what a run learns from
is read by the SDK's own ``qinsight_sdk.evaluation.data``, which evaluation shares. ``configs/`` holds the annotated
example config and the DeepSpeed ZeRO-3 accelerate config.
"""

from importlib.resources import files

from ..evaluation.data import DataError, Sample
from .config import ConfigError, DataSource, TrainConfig
from .grpo import TrainingError, train

__all__ = [
    "ConfigError",
    "DataError",
    "DataSource",
    "Sample",
    "TrainConfig",
    "TrainingError",
    "config_template",
    "train",
]


def config_template(name: str) -> str:
    """The text of a shipped config: ``example`` (every field of a run) or ``zero3`` (accelerate)."""
    return files(__package__).joinpath("configs", f"{name}.yaml").read_text(encoding="utf-8")
