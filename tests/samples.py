"""Images the tests generate themselves."""

import numpy as np
from PIL import Image


def noise_image(seed: int, width: int = 64, height: int = 48) -> Image.Image:
    """Seeded RGB noise: different seeds give different images, so model answers differ too."""
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), "RGB")


def grey(value: int, size: tuple[int, int] = (56, 56)) -> Image.Image:
    """A flat grey image: its brightness is what scripted judges read."""
    return Image.new("RGB", size, (value, value, value))
