"""A corpus of bad inputs, mixed with good images, through the API and the command line.

Why: real folders hold corrupt downloads, half-written files, links to nowhere, FIFOs, decompression
bombs and images in every mode Pillow knows; code calling the API hands over arrays and tensors in
every shape and dtype. The promise is that no run stops: each bad input becomes an error on its own
item that names it (its path, or what kind of object it is) and the cause, every good input is judged
as usual, and the command line exits 1. Inputs that only look odd (RGBA, palette, CMYK, 16-bit, 1-bit,
an EXIF rotation, an animated GIF, a 1x1 image, a name that is not UTF-8) are good: they are
normalised and judged, not refused.

The corpus is one table per way in: ``FILE_KINDS`` (paths, through the API and the command line) and
``API_KINDS`` (objects, through the API). Each row is (name, how to make it, the cause its error must
give, or None for a good input that must be judged). A kind this platform or user cannot make (an
unreadable file when running as root, a FIFO without ``os.mkfifo``) is left out of the corpus and not
counted. Deliberate choices: a 2-channel array is grey plus alpha and a bool array a mask (both
judged); float data must lie in 0..1 (0..255 floats are refused with a hint); an animated image is
judged by its first frame.
"""

from __future__ import annotations

import io
import json
import os
import struct
import threading
import warnings
import zlib
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image, features
from samples import noise_image

from qinsight_sdk import QualityJudge, cli
from qinsight_sdk.testing import ScriptedBackend

CANNOT_MAKE = object()  # what a maker returns for a kind this platform or user cannot make


@dataclass(frozen=True)
class Kind:
    name: str
    make: Callable[[Path], Any]  # the input, built under a folder (file kinds return the path as a str)
    cause: str | None  # a substring of the error that says why; None: a good input, judged
    names: str | None = None  # how the error names an API object (a file is named by its path)
    cli: bool = True  # file kinds: also through the command line


# -- making files -------------------------------------------------------------------------------------------


def _encoded(image: Image.Image, kind: str, **options: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, kind, **options)
    return buffer.getvalue()


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def _write(path: Path, data: bytes | str) -> str:
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return str(path)


def _save(path: Path, image: Image.Image, **options: Any) -> str:
    image.save(path, **options)
    return str(path)


def _bomb_header() -> bytes:
    """A PNG that claims 30000x30000 pixels: refused on opening, nothing allocated."""
    header = _chunk(b"IHDR", struct.pack(">IIBBBBB", 30000, 30000, 8, 2, 0, 0, 0))
    return b"\x89PNG\r\n\x1a\n" + header + _chunk(b"IEND", b"")


def _ztxt_bomb() -> bytes:
    """A valid PNG with a text chunk that inflates past Pillow's limit."""
    data = _encoded(noise_image(5, 80, 60), "PNG")
    return data[:33] + _chunk(b"zTXt", b"k\0\0" + zlib.compress(b"A" * 2_000_000)) + data[33:]


def _palette_with_transparency(path: Path) -> str:
    image = Image.new("P", (80, 60), 1)
    image.putpalette([0, 0, 0, 200, 10, 10] + [0] * 762)
    return _save(path, image, transparency=0)


def _red_then_blue_gif(path: Path) -> str:
    frames = [Image.new("RGB", (56, 56), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    return _save(path, frames[0], save_all=True, append_images=frames[1:])


def _exif_rotated_jpeg(path: Path) -> str:
    """Stored landscape with its left half red; orientation 6 turns it upright, the red half on top."""
    array = np.zeros((56, 112, 3), np.uint8)
    array[:, :56] = (255, 0, 0)
    image = Image.fromarray(array)
    exif = image.getexif()
    exif[0x0112] = 6
    return _save(path, image, exif=exif, quality=95)


def _unreadable(path: Path) -> Any:
    _save(path, noise_image(6))
    path.chmod(0)
    return CANNOT_MAKE if os.access(path, os.R_OK) else str(path)  # root reads it anyway


def _link(path: Path, target: Path) -> Any:
    try:
        path.symlink_to(target)
    except (OSError, NotImplementedError):
        return CANNOT_MAKE
    return str(path)


def _fifo(path: Path) -> Any:
    if not hasattr(os, "mkfifo"):
        return CANNOT_MAKE
    os.mkfifo(path)
    return str(path)


def _not_utf8_name(folder: Path) -> Any:
    try:
        return _save(folder / os.fsdecode(b"bad_\xff.png"), noise_image(7))
    except (OSError, UnicodeError):  # filesystems that insist on UTF-8 names
        return CANNOT_MAKE


def _webp(path: Path) -> Any:
    return _save(path, noise_image(8), format="WEBP") if features.check("webp") else CANNOT_MAKE


FILE_KINDS = [
    Kind(
        "random_bytes_png",
        lambda d: _write(d / "random.png", b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 2),
        ": not a recognised image file",
    ),
    Kind("empty_png", lambda d: _write(d / "empty.png", b""), ": not a recognised image file"),
    Kind("zero_length_jpg", lambda d: _write(d / "zero.jpg", b""), ": not a recognised image file"),
    Kind(
        "truncated_png",
        lambda d: _write(d / "cut.png", _encoded(noise_image(1, 100, 100), "PNG")[:300]),
        " is truncated or corrupt",
    ),
    Kind(
        "truncated_jpeg",
        lambda d: _write(d / "cut.jpg", _encoded(noise_image(2, 200, 200), "JPEG")[:3000]),
        " is truncated or corrupt",
    ),
    Kind(
        "truncated_bmp",
        lambda d: _write(d / "cut.bmp", _encoded(noise_image(3), "BMP")[:100]),
        " is truncated or corrupt",
    ),
    Kind("text_named_png", lambda d: _write(d / "notes.png", "hello, I am text\n"), ": not a recognised image file"),
    Kind(
        "html_error_page_named_jpg",
        lambda d: _write(d / "download.jpg", "<html><body>403 Forbidden</body></html>"),
        ": not a recognised image file",
    ),
    Kind(
        "decompression_bomb_header",
        lambda d: _write(d / "bomb.png", _bomb_header()),
        ": refused as a possible decompression bomb",
    ),
    Kind("ztxt_chunk_bomb", lambda d: _write(d / "ztxt.png", _ztxt_bomb()), "Decompressed data too large"),
    Kind(
        "thin_1x5000",
        lambda d: _save(d / "thin.png", Image.new("RGB", (1, 5000), (9, 9, 9))),
        " is 1x5000: aspect ratio above 200:1",
    ),
    Kind("missing_file", lambda d: str(d / "missing.png"), ": file not found"),
    Kind("broken_symlink", lambda d: _link(d / "dangling.png", d / "nowhere.png"), ": file not found"),
    Kind("symlink_loop", lambda d: _link(d / "loop.png", d / "loop.png"), "Too many levels of symbolic links"),
    Kind(
        "path_through_a_file",
        lambda d: str(Path(_save(d / "plain.png", noise_image(4))) / "x.png"),
        ": cannot be read (Not a directory)",
    ),
    Kind("fifo_named_png", lambda d: _fifo(d / "pipe.png"), ": not a regular file"),
    Kind("unreadable_file", lambda d: _unreadable(d / "locked.png"), ": cannot be read (Permission denied)"),
    # the command line reads a folder argument as the images in it (and stops on an empty one), so a
    # directory named like an image is a file kind for the API only
    Kind(
        "directory_named_png",
        lambda d: (d / "folder.png").mkdir() or str(d / "folder.png"),
        ": is a directory, not an image file",
        cli=False,
    ),
    # cli.expand_paths stops on it (Path.is_dir raises ENAMETOOLONG): see test_cli_survives_a_name_too_long
    Kind("name_too_long", lambda d: str(d / ("x" * 300 + ".png")), ": cannot be read (File name too long)", cli=False),
    # good files: normalised and judged
    Kind("one_pixel", lambda d: _save(d / "dot.png", Image.new("RGB", (1, 1), (9, 9, 9))), None),
    Kind(
        "grey_16_bit_png", lambda d: _save(d / "deep.png", Image.fromarray(np.full((60, 80), 40000, np.uint16))), None
    ),
    Kind("int32_tiff", lambda d: _save(d / "int32.tif", Image.new("I", (80, 60), 30000)), None),
    Kind("float_tiff", lambda d: _save(d / "float.tif", Image.new("F", (80, 60), 0.5)), None),
    Kind("cmyk_jpeg", lambda d: _save(d / "cmyk.jpg", Image.new("CMYK", (80, 60), (0, 255, 255, 0))), None),
    Kind("palette_png_with_transparency", lambda d: _palette_with_transparency(d / "palette.png"), None),
    Kind("rgba_png", lambda d: _save(d / "rgba.png", Image.new("RGBA", (80, 60), (255, 0, 0, 128))), None),
    Kind("la_png", lambda d: _save(d / "la.png", Image.new("LA", (80, 60), (100, 200))), None),
    Kind("one_bit_png", lambda d: _save(d / "bits.png", Image.new("1", (80, 60), 1)), None),
    Kind("animated_gif", lambda d: _red_then_blue_gif(d / "anim.gif"), None),
    Kind("exif_rotated_jpeg", lambda d: _exif_rotated_jpeg(d / "rotated.jpg"), None),
    Kind("webp", lambda d: _webp(d / "photo.webp"), None),
    Kind("jpeg_named_png", lambda d: _write(d / "really_a_jpeg.png", _encoded(noise_image(9), "JPEG")), None),
    Kind("not_utf8_name", _not_utf8_name, None),
]


# -- making objects -----------------------------------------------------------------------------------------


def _closed_image() -> Image.Image:
    image = Image.new("RGB", (8, 8))
    image.close()
    return image


def _lazy_truncated_image() -> Image.Image:
    return Image.open(io.BytesIO(_encoded(noise_image(1, 100, 100), "PNG")[:300]))


def _nested_tensor() -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "nested tensors are a prototype"
        return torch.nested.nested_tensor([torch.rand(3, 5, 5), torch.rand(3, 6, 6)])


def _array(shape: tuple[int, ...], value: Any, dtype: Any) -> np.ndarray:
    return np.full(shape, value, dtype)


UNSUPPORTED = "unsupported image input of type"
API_KINDS = [
    Kind("array_1d", lambda d: _array((100,), 0, np.uint8), "is not an image", "array of shape (100,)"),
    Kind("array_0d", lambda d: np.array(5, np.uint8), "is not an image", "array of shape ()"),
    Kind(
        "array_5d", lambda d: _array((2, 2, 5, 5, 3), 0, np.uint8), "is not an image", "array of shape (2, 2, 5, 5, 3)"
    ),
    Kind("array_zero_size", lambda d: _array((0, 70, 3), 0, np.uint8), "is empty", "array of shape (0, 70, 3)"),
    Kind(
        "array_nan",
        lambda d: _array((50, 70, 3), np.nan, np.float32),
        "contains NaN or infinite values",
        "array of shape (50, 70, 3) and dtype float32",
    ),
    Kind(
        "array_inf",
        lambda d: _array((50, 70, 3), -np.inf, np.float64),
        "contains NaN or infinite values",
        "array of shape (50, 70, 3) and dtype float64",
    ),
    Kind(
        "array_5_channels",
        lambda d: _array((50, 70, 5), 0, np.uint8),
        "has no channel axis of size 1, 2, 3 or 4",
        "array of shape (50, 70, 5)",
    ),
    Kind(
        "array_complex", lambda d: _array((50, 70, 3), 0, np.complex64), "has an unsupported dtype", "dtype complex64"
    ),
    Kind("array_object", lambda d: _array((50, 70, 3), None, object), "has an unsupported dtype", "dtype object"),
    Kind("array_strings", lambda d: _array((50, 70, 3), "a", "<U1"), "has an unsupported dtype", "dtype <U1"),
    Kind(
        "array_float_0_to_255",
        lambda d: _array((50, 70, 3), 200.0, np.float32),
        "expected 0..1 (divide 0..255",
        "array of shape (50, 70, 3) and dtype float32",
    ),
    Kind(
        "array_negative_float",
        lambda d: _array((50, 70, 3), -0.5, np.float32),
        "expected 0..1",
        "array of shape (50, 70, 3) and dtype float32",
    ),
    Kind(
        "array_int_out_of_range",
        lambda d: _array((50, 70, 3), 300, np.int32),
        "values in [300, 300]; expected 0..255",
        "dtype int32",
    ),
    Kind("array_thin", lambda d: _array((1, 5000, 3), 0, np.uint8), "is 5000x1: aspect ratio above 200:1", "the array"),
    Kind(
        "tensor_nan",
        lambda d: torch.full((3, 50, 70), float("nan")),
        "contains NaN or infinite values",
        "tensor of shape (3, 50, 70) and dtype float32",
    ),
    Kind(
        "tensor_bf16_inf",
        lambda d: torch.full((3, 50, 70), float("inf"), dtype=torch.bfloat16),
        "contains NaN or infinite values",
        "tensor of shape (3, 50, 70) and dtype bfloat16",
    ),
    Kind("tensor_wrong_shape", lambda d: torch.zeros(7, 50, 70), "has no channel axis", "tensor of shape (7, 50, 70)"),
    Kind("tensor_zero_size", lambda d: torch.zeros(3, 0, 70), "is empty", "tensor of shape (3, 0, 70)"),
    Kind(
        "tensor_int64_out_of_range",
        lambda d: torch.full((3, 50, 70), 10**12),
        "expected 0..255",
        "tensor of shape (3, 50, 70) and dtype int64",
    ),
    Kind(
        "tensor_meta", lambda d: torch.rand(3, 8, 8, device="meta"), "cannot be read (NotImplementedError", "the tensor"
    ),
    Kind("tensor_sparse", lambda d: torch.rand(3, 8, 8).to_sparse(), "cannot be read (TypeError", "the tensor"),
    Kind("tensor_nested", lambda d: _nested_tensor(), "cannot be read (RuntimeError", "the tensor"),
    Kind(
        "pil_closed",
        lambda d: _closed_image(),
        "cannot be read (ValueError: Operation on closed image)",
        "the PIL image",
    ),
    Kind("pil_zero_size", lambda d: Image.new("RGB", (0, 0)), "is 0x0: it has no pixels", "the PIL image"),
    Kind("pil_truncated_lazy", lambda d: _lazy_truncated_image(), "is truncated or corrupt", "the PIL image"),
    Kind("pil_thin", lambda d: Image.new("RGB", (10000, 5)), "is 10000x5: aspect ratio above 200:1", "the PIL image"),
    Kind("none", lambda d: None, UNSUPPORTED, "of type NoneType"),
    Kind("int", lambda d: 7, UNSUPPORTED, "of type int"),
    Kind("bytes_not_an_image", lambda d: b"GIF89a? no, just words", "not a recognised image file", "the image bytes"),
    Kind("bytes_empty", lambda d: b"", "empty bytes hold no image", ""),
    Kind("bytes_bomb", lambda d: _bomb_header(), "refused as a possible decompression bomb", "the image bytes"),
    Kind("file_object", lambda d: io.BytesIO(_encoded(noise_image(0), "PNG")), UNSUPPORTED, "of type BytesIO"),
    Kind("str_not_a_path", lambda d: "a photo of a cat", ": file not found", "a photo of a cat"),
    Kind(
        "url",
        lambda d: "https://example.com/a.png",
        "file not found (URLs are not downloaded",
        "https://example.com/a.png",
    ),
    Kind("empty_str", lambda d: "", "an empty path names no image file", ""),  # nothing to name but its index
    # good objects: normalised and judged
    Kind("array_2_channels_grey_alpha", lambda d: _array((50, 70, 2), 200, np.uint8), None),
    Kind("array_bool_mask", lambda d: _array((50, 70, 3), True, bool), None),
    Kind("array_float16", lambda d: _array((50, 70, 3), 0.5, np.float16), None),
    Kind("array_uint16", lambda d: _array((50, 70, 3), 40000, np.uint16), None),
    Kind("array_not_contiguous", lambda d: np.asarray(noise_image(10, 50, 70)).transpose(1, 0, 2), None),
    Kind("tensor_requires_grad", lambda d: torch.rand(3, 50, 70, requires_grad=True), None),
    Kind("tensor_bool", lambda d: torch.ones(3, 50, 70, dtype=torch.bool), None),
    Kind("pil_palette_without_palette_data", lambda d: Image.frombytes("P", (56, 56), bytes(56 * 56)), None),
    Kind("pil_i16", lambda d: Image.new("I;16", (56, 56), 30000), None),
    Kind("pil_ycbcr", lambda d: Image.new("YCbCr", (56, 56), (120, 128, 128)), None),
    Kind("pil_lab", lambda d: Image.new("LAB", (56, 56), (50, 128, 128)), None),
    Kind("path_object", lambda d: Path(_save(d / "as_path.png", noise_image(11))), None),
    Kind("png_bytes", lambda d: _encoded(noise_image(12), "PNG"), None),
    Kind("jpeg_bytearray", lambda d: bytearray(_encoded(noise_image(13), "JPEG")), None),
]

# Scores the redness judge below must give, so that a good input is shown judged the right way
EXPECTED_SCORES = {
    "animated_gif": (5.0, 5.0),  # its first frame (red), not its last (blue, 1.0)
    "exif_rotated_jpeg": (4.5, 5.0),  # upright: the red half on top (stored sideways: 3.0)
}


# -- the judges and the corpus ---------------------------------------------------------------------------


def redness_answer(conversation: Any, images: list[Image.Image]) -> str:
    """A scripted model: rates an image by the redness of its top half (1: none, 5: full red) and
    finds slight noise in every image."""
    if "distortion" in str(conversation):
        return '<answer>{"distortion_class": "noise", "severity": "slight"}</answer>'
    pixels = np.asarray(images[-1])
    red = pixels[: pixels.shape[0] // 2, :, 0].mean() / 255
    return f'<answer>{{"rating": {1 + 4 * red:.1f}}}</answer>'


@pytest.fixture
def judge():
    return QualityJudge(ScriptedBackend(redness_answer), batch_size=4)


@contextmanager
def _fifo_watchdog(fifos: list[str]):
    """Reading a FIFO waits for a writer forever. Should the loader ever open one again, this opens the
    writing end whenever a reader waits, so the reader sees end-of-file and the test fails, not hangs."""
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(0.2):
            for fifo in fifos:
                try:
                    os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))  # fails (ENXIO) unless a reader waits
                except OSError:
                    pass

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


@dataclass(frozen=True)
class Item:
    name: str
    source: Any
    cause: str | None  # None: must be judged
    names: str = ""  # what the error must contain to name the input
    cli: bool = False


def _good(index: int, folder: Path) -> Any:
    """A plain good image, in turn a path, a PIL image, an array and a tensor."""
    image = noise_image(100 + index, 48 + 7 * (index % 5), 40 + 5 * (index % 3))
    form = index % 4
    if form == 0:
        return _save(folder / f"good_{index:02d}.png", image)
    if form == 1:
        return image
    array = np.asarray(image)
    return array if form == 2 else torch.from_numpy(array.copy()).permute(2, 0, 1).float() / 255


@pytest.fixture
def corpus(tmp_path):
    """Every kind that can be made here, each after a good image: the mixed list the tests judge."""
    folder = tmp_path / "corpus"
    folder.mkdir()
    items = []
    for index, (kind, is_file) in enumerate([(k, True) for k in FILE_KINDS] + [(k, False) for k in API_KINDS]):
        source = kind.make(folder)
        if source is CANNOT_MAKE:
            continue
        good = _good(index, folder)
        items.append(Item(f"good_{index:02d}", good, None, cli=isinstance(good, str)))
        names = str(source) if is_file else kind.names
        items.append(Item(kind.name, source, kind.cause, names, cli=is_file and kind.cli))
    with _fifo_watchdog([str(i.source) for i in items if i.name == "fifo_named_png"]):
        yield items


def _mismatches(items: list[Item], errors: list[str | None], judged: list[bool]) -> list[str]:
    """What is wrong with each item's outcome, all of them at once (empty: all as expected)."""
    wrong = []
    for item, error, ok in zip(items, errors, judged, strict=True):
        if item.cause is None and (error is not None or not ok):
            wrong.append(f"{item.name}: should be judged, got error {error!r}")
        elif item.cause is not None and (error is None or item.cause not in error or item.names not in error):
            wrong.append(f"{item.name}: error should name {item.names!r} and say {item.cause!r}, got {error!r}")
    return wrong


def _nothing_wrong(wrong: list[str]) -> None:
    assert not wrong, "\n" + "\n".join(wrong)


def _scores_as_expected(items: list[Item], scores: list[float | None]) -> list[str]:
    wrong = []
    for item, score in zip(items, scores, strict=True):
        low, high = EXPECTED_SCORES.get(item.name, (1.0, 5.0))
        if item.cause is None and not (score is not None and low <= score <= high):
            wrong.append(f"{item.name}: score {score} outside [{low}, {high}]")
    return wrong


# -- the tests ----------------------------------------------------------------------------------------------


def test_the_corpus_has_at_least_30_kinds_of_bad_input(corpus):
    bad = {item.name for item in corpus if item.cause is not None}
    good_kinds = {item.name for item in corpus if item.cause is None and not item.name.startswith("good_")}
    assert len(bad) >= 30, sorted(bad)
    assert len({item.name for item in corpus if item.cli and item.cause is not None}) >= 15
    assert len(good_kinds) >= 20 and len(corpus) == len({item.name for item in corpus})


def test_api_score_judges_the_good_and_names_each_bad_input(judge, corpus):
    results = judge.score([item.source for item in corpus], mode="fast")
    assert len(results) == len(corpus)
    _nothing_wrong(_mismatches(corpus, [r.error for r in results], [r.score is not None for r in results]))
    _nothing_wrong(_scores_as_expected(corpus, [r.score for r in results]))


def test_api_degradation_reward_and_rank_keep_going(judge, corpus):
    sources = [item.source for item in corpus]
    bad = [i for i, item in enumerate(corpus) if item.cause is not None]
    good = [i for i, item in enumerate(corpus) if item.cause is None]

    found = judge.degradation(sources)
    _nothing_wrong(_mismatches(corpus, [r.error for r in found], [r.distortion == "noise" for r in found]))

    scores = [r.score for r in judge.score(sources, mode="fast")]
    rewards = judge.reward(sources)  # the worst reward, 0.0, for each bad input; the fast score mapped to 0..1 else
    assert rewards.tolist() == pytest.approx([0.0 if s is None else (s - 1) / 4 for s in scores])
    assert [s is None for s in scores] == [item.cause is not None for item in corpus]

    ranking = judge.rank(sources, strategy="score")
    assert sorted(ranking.order[: len(good)]) == good and ranking.order[len(good) :] == bad  # the bad ones last
    assert ranking.scores[len(good) :] == [None] * len(bad)
    _nothing_wrong(_mismatches([corpus[i] for i in bad], [ranking.errors.get(i) for i in bad], [False] * len(bad)))


@pytest.fixture
def scripted_cli(monkeypatch):
    """The command line with the redness judge instead of a checkpoint."""
    monkeypatch.setattr(
        QualityJudge,
        "from_config",
        classmethod(lambda cls, *a, **k: cls(ScriptedBackend(redness_answer), batch_size=4)),
    )


def test_cli_writes_a_row_per_file_and_exits_one(scripted_cli, corpus, tmp_path, capsys):
    files = [item for item in corpus if item.cli]
    folder = tmp_path / "corpus"
    listed = {str(folder / name) for name in os.listdir(folder)}  # what FOLDER/* expands to
    paths = sorted(listed & {item.source for item in files}) + [i.source for i in files if i.source not in listed]
    output = tmp_path / "out.jsonl"
    code = cli.main(["score", *paths, "--mode", "fast", "-o", str(output)])
    capsys.readouterr()
    rows = {row["image"]: row for row in map(json.loads, output.read_text(encoding="utf-8").splitlines())}
    assert code == 1 and len(rows) == len(files) == len(paths)
    found = [rows[item.source] for item in files]
    assert all(row["task"] == "score" and row["settings"]["mode"] == "fast" for row in found)
    _nothing_wrong(_mismatches(files, [r["error"] for r in found], [r["score"] is not None for r in found]))
    _nothing_wrong(_scores_as_expected(files, [r["score"] for r in found]))


def test_cli_survives_a_name_too_long(scripted_cli, tmp_path, capsys):
    """cli.expand_paths called Path.is_dir, which raises on ENAMETOOLONG: the run stopped with a traceback."""
    good = _save(tmp_path / "good.png", noise_image(0))
    code = cli.main(["score", good, str(tmp_path / ("x" * 300 + ".png")), "--mode", "fast"])
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert code == 1 and rows[0]["error"] is None and "File name too long" in rows[1]["error"]


def test_the_real_pipeline_keeps_going(tiny_judge, corpus):
    """The tiny checkpoint in fast mode: the same outcomes, so nothing in the real pipeline raises."""
    results = tiny_judge.score([item.source for item in corpus], mode="fast")
    assert len(results) == len(corpus)
    _nothing_wrong(
        _mismatches(corpus, [r.error for r in results], [r.score is not None and 1 <= r.score <= 5 for r in results])
    )
