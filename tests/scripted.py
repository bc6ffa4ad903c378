"""Scripted stand-ins for the model that tests share."""

import torch

from qinsight_sdk.testing import ScriptedBackend


class TightMemory(ScriptedBackend):
    """A scripted model that holds at most ``fits`` images a batch: a larger batch raises ``error(message)``,
    as a GPU out of memory does, and its size is recorded in ``refused``."""

    def __init__(self, answer, fits, message="CUDA out of memory. Tried to allocate 2.00 GiB",
                 error=torch.OutOfMemoryError):
        super().__init__(answer)
        self.fits, self.message, self.error = fits, message, error
        self.refused: list[int] = []

    def generate(self, batch, decoding, rating_key=None):
        size = len(batch.inputs[0])
        if size > self.fits:
            self.refused.append(size)
            raise self.error(self.message)
        return super().generate(batch, decoding, rating_key)
