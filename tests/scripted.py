"""Scripted stand-ins for the model that tests share."""

import numpy as np
import torch

from qinsight_sdk.testing import ScriptedBackend


def brightness_answer(conversation, images):
    """A judge that prefers bright images: one image rated 1 + 4 x its mean level, two compared by level."""
    if len(images) == 1:
        return f'<answer>{{"rating": {1 + 4 * np.asarray(images[0]).mean() / 255:.2f}}}</answer>'
    a, b = (np.asarray(i).mean() for i in images[-2:])
    return "<answer>Image A</answer>" if a > b else "<answer>Image B</answer>"


class TightMemory(ScriptedBackend):
    """A scripted model that holds at most ``fits`` images a batch: a larger batch raises ``error(message)``,
    as a GPU out of memory does, and its size is recorded in ``refused``."""

    def __init__(
        self, answer, fits, message="CUDA out of memory. Tried to allocate 2.00 GiB", error=torch.OutOfMemoryError
    ):
        super().__init__(answer)
        self.fits, self.message, self.error = fits, message, error
        self.refused: list[int] = []

    def generate(self, batch, decoding, rating_key=None):
        size = len(batch.inputs[0])
        if size > self.fits:
            self.refused.append(size)
            raise self.error(self.message)
        return super().generate(batch, decoding, rating_key)
