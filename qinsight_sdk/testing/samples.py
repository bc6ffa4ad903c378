"""Sample images to try a judge on, seeded, of several sizes and formats."""

from __future__ import annotations

from pathlib import Path


def write_sample_images(folder: str | Path, count: int = 4, seed: int = 0) -> list[Path]:
    """Seeded images of several sizes and formats (smooth gradients with noise) to try the judge on."""
    import numpy as np
    from PIL import Image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for index in range(count):
        width, height = 96 + 40 * index, 72 + 24 * index
        ramp = np.linspace(0, 255, width)[None, :, None] * np.ones((height, 1, 3))
        noisy = ramp + rng.normal(0, 12 * index, (height, width, 3))
        path = folder / f"sample_{index}.{'png' if index % 2 == 0 else 'jpg'}"
        Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(path)
        paths.append(path)
    return paths
