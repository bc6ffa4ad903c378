"""Scores people can see: text drawn onto a copy of the judged image, so that a workflow's Preview Image
shows each image with its score without another node, and a saved copy keeps it in its pixels.

The text sits in the top-left corner on a darkened box, sized to the image (about a fourteenth of its
shorter side, at least 10 pixels), so it stays legible on thumbnails and on large renders alike. Lines
too wide for the image end in an ellipsis; what does not fit at all on a tiny image is left out rather
than refused, because an annotation must never be the reason a workflow stops.
"""

from __future__ import annotations

from collections.abc import Sequence

from PIL import Image, ImageDraw, ImageFont

from ..errors import UsageError
from .images import to_rgb

FONT_SHARE = 1 / 14  # text height as a share of the image's shorter side
MIN_FONT_PX = 10  # smaller text is unreadable whatever the image
BOX_OPACITY = 0.6  # how far the box darkens what lies under it: legible text, image still visible
ERROR_CHARS = 48  # the most of an error message a label shows
Font = ImageFont.FreeTypeFont | ImageFont.ImageFont


def annotate(image: Image.Image, lines: Sequence[str]) -> Image.Image:
    """A new RGB image of the same size (the upright one, if EXIF says to rotate it) with ``lines`` drawn
    in its top-left corner; ``image`` itself is left as it was."""
    annotated = to_rgb(image)
    if annotated is image:
        annotated = image.copy()
    size = max(MIN_FONT_PX, round(min(annotated.size) * FONT_SHARE))
    font, pad = _font(size), max(2, size // 4)
    fitted = [_fit(line, font, annotated.width - 2 * pad) for line in lines]
    if not any(fitted):
        return annotated
    step = font.getbbox("Ag")[3] + pad // 2
    box = (
        0,
        0,
        min(annotated.width, 2 * pad + _widest(fitted, font)),
        min(annotated.height, 2 * pad + step * len(fitted)),
    )
    region = annotated.crop(box)
    annotated.paste(Image.blend(region, Image.new("RGB", region.size), BOX_OPACITY), box[:2])
    draw = ImageDraw.Draw(annotated)
    for row, line in enumerate(fitted):
        draw.text((pad, pad + row * step), line, font=font, fill=(255, 255, 255))
    return annotated


def _font(size: int) -> Font:
    """Pillow's own font at ``size`` pixels; without FreeType, its fixed bitmap font (small, but text)."""
    try:
        return ImageFont.load_default(size=size)
    except ImportError:  # Pillow built without FreeType cannot scale a font
        return ImageFont.load_default()


def _fit(line: str, font: Font, width: int) -> str:
    """``line`` as drawn: shortened to ``width`` pixels with an ellipsis, or empty if not even that fits."""
    line = _drawable(" ".join(line.splitlines()), font)  # one line each: a line break would overprint
    if font.getlength(line) <= width:
        return line
    ellipsis = _drawable("…", font)
    shortest, longest = 0, len(line) - 1  # binary search for the longest prefix that fits with the ellipsis
    while shortest < longest:
        middle = (shortest + longest + 1) // 2
        if font.getlength(line[:middle].rstrip() + ellipsis) <= width:
            shortest = middle
        else:
            longest = middle - 1
    shortened = line[:shortest].rstrip() + ellipsis
    return shortened if font.getlength(shortened) <= width else ""


def _drawable(text: str, font: Font) -> str:
    """The bitmap font knows only Latin-1 and raises on anything else: there, "..." and "?" stand in."""
    if isinstance(font, ImageFont.FreeTypeFont):
        return text
    return text.replace("…", "...").encode("latin-1", "replace").decode("latin-1")


def _widest(lines: Sequence[str], font: Font) -> int:
    return max(round(font.getlength(line)) for line in lines)


def score_label(
    score: float | None, std: float | None = None, rank: int | None = None, error: str | None = None
) -> str:
    """A score as a preview shows it: ``3.91``, ``3.91 ± 0.12``, ``#1  3.91``, or ``no score`` (with the
    start of the error, when there is one), so an unjudged image is never mistaken for a low one."""
    if score is None:
        text = "no score" + (f": {short_reasoning(error, ERROR_CHARS)}" if error else "")
    else:
        text = f"{score:.2f}" + ("" if std is None else f" ± {std:.2f}")
    return text if rank is None else f"#{rank}  {text}"


def short_reasoning(text: str | None, limit: int = 120) -> str:
    """``text`` on one line of at most ``limit`` characters, for a UI that has no room for paragraphs:
    whitespace collapsed, and a longer text cut after its last whole word with an ellipsis."""
    if limit < 1:
        raise UsageError(f"limit must be at least 1 character, got {limit}")
    flat = " ".join((text or "").split())
    if len(flat) <= limit:
        return flat
    cut = flat[: limit - 1]
    if flat[limit - 1] != " " and " " in cut:  # the cut fell inside a word: end at the word before it
        cut = cut[: cut.rfind(" ")]
    return cut + "…"  # whitespace was collapsed to single spaces, so the cut never ends in one
