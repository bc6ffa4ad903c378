"""qinsight: judge image quality with a Q-Insight vision-language model.

    from qinsight_sdk import QualityJudge
    judge = QualityJudge.from_pretrained()          # ByteDance/Q-Insight, subfolder score_degradation
    judge.score("photo.jpg").score                  # 1..5
"""

from .backend import Backend
from .decoding import DecodingOptions
from .errors import ImageInputError, ModelLoadError, QInsightError, UsageError
from .images import ImageBounds
from .judge import QualityJudge
from .profiles import PROFILES, JudgeProfile, TaskPrompt, register_profile
from .prompts import PromptOrder
from .results import ComparisonResult, DegradationResult, ScoreResult
from .selection import Ranking

__all__ = [
    "QualityJudge", "ScoreResult", "DegradationResult", "ComparisonResult", "Ranking", "DecodingOptions",
    "ImageBounds", "PromptOrder", "Backend", "JudgeProfile", "TaskPrompt", "PROFILES", "register_profile",
    "QInsightError", "ModelLoadError", "ImageInputError", "UsageError",
]
__version__ = "0.1.0"
