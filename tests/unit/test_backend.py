"""The Backend protocol: the judge is written against it, and any implementation of it can judge."""

import contextlib
import typing

import pytest
import torch
from samples import grey

from qinsight_sdk import Backend, QualityJudge
from qinsight_sdk.backends.base import EncodedBatch, Generation, RatingDistribution
from qinsight_sdk.backends.qwen2_5_vl.backend import QwenVLBackend
from qinsight_sdk.testing import ScriptedBackend


class BrightnessBackend:
    """A second model written from the protocol alone: it rates an image by its mean brightness and
    prefers the brighter of two, answering in Q-Insight's format. Nothing here comes from the SDK's own
    backends, so the judge can only be using what the protocol promises."""

    def __init__(self):
        self.device, self.dtype, self.moved_to = torch.device("cpu"), torch.float32, []

    def memory_footprint(self):
        return 123

    def reusing_images(self):
        return contextlib.nullcontext()

    def to(self, device):
        self.moved_to.append(str(device))
        self.device = torch.device(device)
        return self

    def encode(self, conversations, images, answer_prefix="", template_options=None):
        brightness = [
            [sum(image.convert("L").getdata()) / (image.width * image.height) for image in group] for group in images
        ]
        return EncodedBatch(brightness, [len(group) for group in images])

    def _answer(self, values):
        if len(values) == 1:
            return f'<think>\nbright\n</think>\n<answer>\n{{"rating": {1 + 4 * values[0] / 255:.2f}}}\n</answer>'
        a, b = values[-2:]
        return "<answer>Image A</answer>" if a > b else "<answer>Image B</answer>"

    def generate(self, batch, decoding, rating_key=None):
        return [[Generation(self._answer(values), True)] * decoding.num_samples for values in batch.inputs]

    def rating_distributions(self, batch):
        found = []
        for (value,) in batch.inputs:
            tenths = min(round(10 * (1 + 4 * value / 255)), 50)
            first, decimals = torch.zeros(5, dtype=torch.float64), torch.zeros(5, 10, dtype=torch.float64)
            first[tenths // 10 - 1], decimals[:, tenths % 10] = 1.0, 1.0
            found.append(RatingDistribution(first, decimals))
        return found


def test_the_judge_is_typed_against_the_protocol():
    hints = typing.get_type_hints(QualityJudge.__init__)
    assert hints["backend"] is Backend


@pytest.mark.parametrize("make", [BrightnessBackend, lambda: ScriptedBackend(lambda c, i: "x")])
def test_implementations_satisfy_the_protocol(make):
    assert isinstance(make(), Backend)


def test_the_qwen_backend_satisfies_the_protocol(tiny_judge):
    backend = tiny_judge.backend
    assert isinstance(backend, QwenVLBackend) and isinstance(backend, Backend)
    tensors = [*backend.model.parameters(), *backend.model.buffers()]
    assert backend.memory_footprint() == sum(t.numel() * t.element_size() for t in tensors)
    assert tiny_judge.to("cpu") is tiny_judge and backend.device == torch.device("cpu")


def test_every_task_runs_on_a_second_implementation():
    backend = BrightnessBackend()
    judge = QualityJudge(backend)
    assert judge.score(grey(255)).score == pytest.approx(5.0)
    assert judge.score(grey(0), mode="fast").score == pytest.approx(1.0)
    assert judge.compare(grey(200), grey(20), both_orders=True).winner == "A"
    assert judge.rank([grey(10), grey(250), grey(120)], strategy="hybrid").order == [1, 2, 0]
    assert judge.reward([grey(255), grey(0)]).tolist() == [1.0, 0.0]
    assert judge.to("meta") is judge and backend.moved_to == ["meta"] and backend.device.type == "meta"
