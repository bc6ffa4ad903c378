"""qinsight: judge image quality with a Q-Insight vision-language model.

    from qinsight_sdk import QualityJudge
    judge = QualityJudge.from_pretrained()          # ByteDance/Q-Insight, subfolder score_degradation
    judge.score("photo.jpg").score                  # 1..5
"""

from .decoding import DecodingOptions
from .errors import ImageInputError, ModelLoadError, QInsightError
from .images import ImageBounds
from .judge import QualityJudge
from .prompts import PromptOrder
from .results import ComparisonResult, DegradationResult, ScoreResult

__all__ = [
    "QualityJudge", "ScoreResult", "DegradationResult", "ComparisonResult", "DecodingOptions",
    "ImageBounds", "PromptOrder", "QInsightError", "ModelLoadError", "ImageInputError",
]
__version__ = "0.1.0"
