"""``ScriptedBackend``: a stand-in for the model, answering what a test scripts."""

from __future__ import annotations

import contextlib
import re
from typing import Any


class ScriptedBackend:
    """A stand-in for the model that answers from a function of the conversation and its images.

    For testing code built on ``QualityJudge`` (nodes, ranking, pipelines) with answers you choose:

        judge = QualityJudge(ScriptedBackend(lambda conversation, images: '<answer>{"rating": 4}</answer>'))

    Raising inside ``answer`` simulates a model failure on that input; fast scores are read from the
    rating in the answer (Q-Insight's JSON, else the answer's last number, for other profiles' formats; a
    video judge's score rounded to two digits).
    """

    def __init__(self, answer: Any) -> None:
        import torch

        self.answer = answer
        self.calls: list[int] = []  # batch sizes seen, for tests of batching
        self.device = torch.device("cpu")
        self.dtype = torch.float32

    def reusing_images(self) -> Any:
        return contextlib.nullcontext()

    def memory_footprint(self) -> int:
        return 0  # no weights

    def to(self, device: Any) -> ScriptedBackend:
        import torch

        self.device = torch.device(device)
        return self

    def encode(self, conversations: Any, images: Any, answer_prefix: str = "", template_options: Any = None) -> Any:
        from ..backends.base import EncodedBatch

        return EncodedBatch((list(conversations), list(images)), [len(group) for group in images])

    def generate(self, batch: Any, decoding: Any, rating_key: str | None = None) -> list[list[Any]]:
        """The scripted answers; a script has no probabilities, so no rating distribution."""
        from ..backends.base import Generation

        conversations, images = batch.inputs
        self.calls.append(len(conversations))
        return [
            [Generation(self.answer(conversation, group), True) for _ in range(decoding.num_samples)]
            for conversation, group in zip(conversations, images)
        ]

    def rating_distributions(self, batch: Any) -> list[Any]:
        """Fast-mode digits certain of the scripted answer's rating, to one decimal."""
        import torch

        from ..backends.base import RatingDistribution
        from ..judging.parsing import parse_score

        conversations, images = batch.inputs
        self.calls.append(len(conversations))
        found = []
        for conversation, group in zip(conversations, images):
            text = self.answer(conversation, group)
            numbers = re.findall(r"\d+(?:\.\d+)?", text)
            rating = parse_score(text).score or (float(numbers[-1]) if numbers else None)
            if rating is None:
                raise ValueError("the scripted answer has no rating")
            tenths = min(round(rating * 10), 59)
            first, decimals = torch.zeros(5, dtype=torch.float64), torch.zeros(5, 10, dtype=torch.float64)
            first[tenths // 10 - 1] = 1.0
            decimals[:, tenths % 10] = 1.0
            found.append(RatingDistribution(first, decimals))
        return found

    def two_digit_distributions(self, batch: Any) -> list[Any]:
        """A video judge's fast-mode digits, certain of the scripted answer's score rounded to a whole number
        from 10 to 99."""
        import torch

        from ..backends.base import TwoDigitDistribution
        from ..judging.parsing import parse_video_score

        conversations, images = batch.inputs
        self.calls.append(len(conversations))
        found = []
        for conversation, group in zip(conversations, images):
            score = parse_video_score(self.answer(conversation, group)).score
            if score is None:
                raise ValueError("the scripted answer has no score")
            rating = min(max(round(score), 10), 99)
            tens, units = torch.zeros(9, dtype=torch.float64), torch.zeros(9, 10, dtype=torch.float64)
            tens[rating // 10 - 1] = 1.0
            units[:, rating % 10] = 1.0
            found.append(TwoDigitDistribution(tens, units))
        return found
