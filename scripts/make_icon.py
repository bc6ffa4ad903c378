"""Draw the pack's icon for the Comfy Registry and ComfyUI-Manager: docs/icon.png.

    python scripts/make_icon.py                 # writes docs/icon.png
    python scripts/make_icon.py /tmp/icon.png   # anywhere else

A "Q" with a gold star (a score) on a rounded square, 400x400 (the Registry's largest size). Drawn from
shapes only, no font, so it comes out the same on every machine; drawn 4x larger and scaled down for
smooth edges.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

from PIL import Image, ImageDraw

SIZE = 400
SCALE = 4
BACKGROUND = (32, 44, 84, 255)
LETTER = (245, 247, 250, 255)
STAR = (247, 185, 40, 255)
OUTPUT = Path(__file__).resolve().parents[1] / "docs" / "icon.png"


def draw_icon() -> Image.Image:
    """The icon as an RGBA image, transparent outside the rounded square."""
    canvas = Image.new("RGBA", (SIZE * SCALE, SIZE * SCALE), (0, 0, 0, 0))
    draw = ImageDraw.Draw(canvas)
    draw.rounded_rectangle(_box(8, 8, 392, 392), radius=72 * SCALE, fill=BACKGROUND)
    draw.ellipse(_box(68, 82, 300, 314), outline=LETTER, width=36 * SCALE)
    draw.line(_box(228, 244, 306, 322), fill=LETTER, width=38 * SCALE)
    draw.ellipse(_box(287, 303, 325, 341), fill=LETTER)  # the tail's rounded end
    draw.polygon(_star(centre=(318, 92), outer=46, inner=19), fill=STAR)
    return canvas.resize((SIZE, SIZE), Image.Resampling.LANCZOS)


def _box(*coordinates: float) -> list[float]:
    return [value * SCALE for value in coordinates]


def _star(centre: tuple[float, float], outer: float, inner: float) -> list[tuple[float, float]]:
    """A five-pointed star, one point up, as polygon corners on the enlarged canvas."""
    corners = []
    for index in range(10):
        radius = outer if index % 2 == 0 else inner
        angle = -math.pi / 2 + index * math.pi / 5
        corners.append(((centre[0] + radius * math.cos(angle)) * SCALE, (centre[1] + radius * math.sin(angle)) * SCALE))
    return corners


def main(argv: list[str]) -> int:
    target = Path(argv[0]) if argv else OUTPUT
    target.parent.mkdir(parents=True, exist_ok=True)
    draw_icon().save(target, optimize=True)
    print(target)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
