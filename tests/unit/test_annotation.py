"""Scores drawn on images: where the text goes, that it fits, that the input is left alone, and the labels."""

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont
from samples import grey, noise_image

from qinsight_sdk.errors import UsageError
from qinsight_sdk.io import annotation
from qinsight_sdk.io.annotation import annotate, score_label, short_reasoning


def changed(before, after):
    """The pixels that differ, as a boolean height x width mask."""
    return (np.asarray(before.convert("RGB"), dtype=int) != np.asarray(after, dtype=int)).any(axis=2)


def test_the_text_goes_in_the_top_left_corner_on_a_dark_box_and_nowhere_else():
    image = grey(200, (280, 140))
    drawn = annotate(image, ["3.91 ± 0.12"])
    assert drawn.mode == "RGB" and drawn.size == (280, 140)
    mask = changed(image, drawn)
    rows, columns = np.nonzero(mask)
    assert mask[:10, :10].all()  # the box begins at the corner
    assert rows.max() < 140 // 2 and columns.max() < 280 * 3 // 4  # and stays near it
    assert not mask[-20:, -20:].any()
    pixels = np.asarray(drawn, dtype=int)
    assert pixels[2, 2].max() < 120  # dark: the box darkens the grey
    assert pixels[2, 2].min() > 0  # partly transparent: not black
    assert (pixels[mask] > 240).all(axis=1).any()  # white text on it


def test_different_labels_draw_different_pixels_and_the_same_label_the_same():
    image = noise_image(3, 200, 120)
    assert changed(annotate(image, ["1.00"]), annotate(image, ["4.99"])).any()
    assert not changed(annotate(image, ["1.00"]), annotate(image, ["1.00"])).any()
    one_line = changed(image, annotate(image, ["4.99"]))
    two_lines = changed(image, annotate(image, ["4.99", "sharp, well exposed"]))
    assert np.nonzero(two_lines)[0].max() > np.nonzero(one_line)[0].max()  # the second line goes below


def test_the_input_is_not_modified():
    image = noise_image(4, 90, 60)
    before = image.tobytes()
    drawn = annotate(image, ["2.50"])
    assert image.tobytes() == before and drawn is not image and changed(image, drawn).any()


@pytest.mark.parametrize("mode", ["RGBA", "L", "P", "I;16", "1", "CMYK", "LA", "F"])
def test_any_mode_is_drawn_on_as_rgb(mode):
    image = grey(255, (64, 48)).convert("RGBA" if mode in ("RGBA", "LA") else "RGB")  # white: "1" keeps it
    if mode == "I;16":
        image = Image.fromarray(np.asarray(image.convert("L"), dtype=np.uint16) * 257)
    elif mode == "F":
        image = Image.fromarray(np.asarray(image.convert("L"), dtype=np.float32) / 255)
    else:
        image = image.convert(mode)
    assert image.mode == mode
    drawn = annotate(image, ["3.00"])
    assert drawn.mode == "RGB" and drawn.size == (64, 48)
    mask = changed(annotation.to_rgb(image), drawn)
    assert mask[:4, :4].all() and not mask[-8:, -8:].any()


@pytest.mark.parametrize("size", [(16, 16), (1, 1), (3, 40), (40, 3)])
def test_tiny_images_get_what_fits_and_never_an_error(size):
    image = grey(128, size)
    drawn = annotate(image, ["#12  3.91 ± 0.12", "a long reasoning that cannot fit"])
    assert drawn.size == size


def test_a_huge_image_gets_large_text():
    image = grey(100, (4000, 3000))
    mask = changed(image, annotate(image, ["3.91"]))
    rows, columns = np.nonzero(mask)
    assert 3000 // 14 <= rows.max() < 3000 // 3 and columns.max() < 4000 // 2


def test_a_line_wider_than_the_image_ends_in_an_ellipsis_and_fits():
    font = annotation._font(max(annotation.MIN_FONT_PX, round(120 * annotation.FONT_SHARE)))
    pad = max(2, font.size // 4)
    fitted = annotation._fit("word " * 80, font, 200 - 2 * pad)
    assert fitted.endswith("…") and fitted.startswith("word word")
    assert ImageDraw.Draw(Image.new("RGB", (1, 1))).textlength(fitted, font=font) <= 200 - 2 * pad
    drawn = annotate(grey(90, (200, 120)), ["word " * 80])
    assert (np.asarray(drawn)[:, -1] == 90).all()  # the text and its padding end before the right edge
    assert annotation._fit("3.91", font, 200) == "3.91"
    assert annotation._fit("3.91", font, 3) == ""  # not even the ellipsis fits


def test_without_freetype_the_bitmap_font_draws_latin1_stand_ins(monkeypatch):
    """Pillow built without FreeType raises ImportError for a sized font, and its bitmap font raises on
    characters outside Latin-1."""
    original = ImageFont.load_default

    def without_freetype(size=None):
        if size is not None:
            raise ImportError("The _imagingft C module is not installed")
        return ImageFont.load_default_imagefont()

    monkeypatch.setattr(ImageFont, "load_default", without_freetype)
    assert not isinstance(annotation._font(20), ImageFont.FreeTypeFont)
    image = grey(150, (120, 60))
    drawn = annotate(image, ["3.91 ± 0.12", "清晰 " + "long " * 40])
    assert changed(image, drawn).any()
    assert annotation._fit("long " * 40, annotation._font(20), 100).endswith("...")
    monkeypatch.setattr(ImageFont, "load_default", original)
    assert isinstance(annotation._font(20), ImageFont.FreeTypeFont)


@pytest.mark.parametrize(
    "arguments, label",
    [
        ((3.914,), "3.91"),
        ((3.0, 0.123), "3.00 ± 0.12"),
        ((3.914, None, 1), "#1  3.91"),
        ((4.5, 0.25, 2), "#2  4.50 ± 0.25"),
        ((None,), "no score"),
        ((None, None, 3), "#3  no score"),
        ((None, None, None, "a.png: file not found"), "no score: a.png: file not found"),
        ((2.0, None, None, "ignored when there is a score"), "2.00"),
    ],
)
def test_score_labels(arguments, label):
    assert score_label(*arguments) == label


def test_a_long_error_is_shortened_in_its_label():
    label = score_label(None, error="no rating found in the\nanswer " + "x" * 200)
    assert label == "no score: no rating found in the answer…"
    wordy = score_label(None, error="the answer named no rating " * 10)
    assert len(wordy) <= len("no score: ") + 48 and wordy.endswith("…")


def test_a_line_keeps_what_the_scalable_font_can_draw():
    font = ImageFont.load_default(size=20)
    assert annotation._fit("清晰 sharp ± 0.12", font, 10_000) == "清晰 sharp ± 0.12"


@pytest.mark.parametrize(
    "text, limit, short",
    [
        ("Sharp  and\n\twell exposed.", 120, "Sharp and well exposed."),
        ("one two three four", 12, "one two…"),  # the cut inside "three" ends at the word before
        ("one two three four", 14, "one two three…"),  # the cut falls just after a word: that word is kept
        ("one two three four", 18, "one two three four"),
        ("abcdefghij", 5, "abcd…"),  # a single word is cut inside it
        (None, 10, ""),
        ("", 10, ""),
        ("abc", 1, "…"),
    ],
)
def test_short_reasoning(text, limit, short):
    assert short_reasoning(text, limit) == short
    assert len(short_reasoning(text, limit)) <= limit


def test_short_reasoning_refuses_a_limit_below_one():
    with pytest.raises(UsageError, match="limit must be at least 1 character, got 0"):
        short_reasoning("text", 0)


def test_a_line_break_inside_a_line_does_not_start_another_and_spaces_are_kept():
    font = annotation._font(20)
    assert annotation._fit("#1  3.91", font, 500) == "#1  3.91"
    assert annotation._fit("sharp\nand clear", font, 500) == "sharp and clear"


def white(image):
    """Where the text is: the pixels drawn pure white (the box under it is dark)."""
    return (np.asarray(image, dtype=int) == 255).all(axis=2)


def test_lines_go_one_under_another_in_white_inside_the_box():
    image = grey(120, (420, 420))
    one, two = annotate(image, ["3.91"]), annotate(image, ["3.91", "#1"])
    rows_one, rows_two = np.flatnonzero(white(one).any(axis=1)), np.flatnonzero(white(two).any(axis=1))
    assert rows_one.size and rows_two.max() > rows_one.max() + 10  # the second line sits lower
    assert rows_two.min() == rows_one.min()  # and the first stays where it was
    box = changed(image, two)
    assert box[white(two)].all()  # all text is inside the darkened box
    box_rows = np.flatnonzero(box.any(axis=1))
    assert box_rows.max() - rows_two.max() < 30  # which ends just below the last line
    assert box_rows.max() > np.flatnonzero(changed(image, one).any(axis=1)).max()  # and grows with it
    darkened = np.asarray(two, dtype=int)[box & ~white(two)]
    assert np.median(darkened) == 48  # 60% darker (120 -> 48) under the text


def test_text_height_follows_the_image_size():
    for side in (280, 840):
        rows = np.flatnonzero(white(annotate(grey(100, (side, side)), ["Ag 3.91"])).any(axis=1))
        height = rows.max() - rows.min() + 1
        assert side / 14 * 0.5 <= height <= side / 14 * 1.6, (side, height)


def test_a_shortened_line_is_the_longest_that_fits():
    font = ImageFont.load_default(size=20)
    line = "the model notices fine noise in the sky and slight blur along the edges of the lighthouse"
    for width in (60, 120, 250, 400):
        fitted = annotation._fit(line, font, width)
        assert fitted.endswith("…") and font.getlength(fitted) <= width
        kept = fitted[:-1]
        longer = line[: len(kept) + 1].rstrip() + "…"
        assert font.getlength(longer) > width or len(longer) <= len(fitted), (width, fitted)
    assert annotation._fit(line, font, 10_000) == line
    wide = line + " MWM"  # ends in letters wider than the ellipsis
    all_but_one = wide[:-1] + "…"
    assert font.getlength(wide) > font.getlength(all_but_one)
    assert annotation._fit(wide, font, font.getlength(all_but_one)) == all_but_one  # up to the last character
    exact = font.getlength(line[:30])
    assert annotation._fit(line[:30], font, exact) == line[:30]  # a line exactly as wide as the room fits


def test_reasoning_is_cut_after_a_whole_word_near_its_limit():
    text = "sharp " * 60
    short = short_reasoning(text)
    assert 114 <= len(short) <= 120 and short.endswith("sharp…") and " …" not in short
    assert short_reasoning("a" * 120 + " b") == "a" * 119 + "…"  # 120 characters at most, by default
