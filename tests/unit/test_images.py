"""The image normaliser on every input kind users hand us, good and bad."""

import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from qinsight_sdk.errors import ImageInputError
from qinsight_sdk.io.images import PATCH_GRID, ImageBounds, fit_to_patch_grid, load_image, split_inputs

BOUNDS = ImageBounds()


def assert_model_ready(image: Image.Image, bounds: ImageBounds = BOUNDS) -> None:
    assert image.mode == "RGB"
    assert image.width % PATCH_GRID == 0 and image.height % PATCH_GRID == 0
    assert bounds.min_pixels <= image.width * image.height <= bounds.max_pixels


def test_png_path_keeps_native_size_when_on_grid(tmp_path):
    path = tmp_path / "a.png"
    Image.new("RGB", (224, 168), (10, 200, 30)).save(path)
    image = load_image(path)
    assert image.size == (224, 168) and image.getpixel((5, 5)) == (10, 200, 30)


def test_1024x768_stays_native_under_default_bounds():
    assert fit_to_patch_grid(1024, 768, BOUNDS) == (1036, 756)  # nearest grid sizes, not a downscale


def test_exif_orientation_is_applied(tmp_path):
    array = np.zeros((56, 112, 3), np.uint8)
    array[:, :56] = (255, 0, 0)  # left half red
    image = Image.fromarray(array)
    exif = image.getexif()
    exif[0x0112] = 6  # stored rotated: display needs a 90-degree clockwise turn
    path = tmp_path / "rotated.jpg"
    image.save(path, exif=exif, quality=95)
    loaded = load_image(path)
    assert loaded.size == (56, 112)  # portrait after transposing
    top = np.asarray(loaded)[:20].mean(axis=(0, 1))
    assert top[0] > 200 and top[1] < 60  # the red half is now on top


@pytest.mark.parametrize("mode", ["L", "1", "P", "CMYK", "LA", "RGBA", "I;16", "I", "F", "YCbCr"])
def test_every_pil_mode_becomes_rgb(tmp_path, mode):
    image = Image.new("RGB", (70, 50), (120, 60, 200)).convert(mode)
    assert_model_ready(load_image(image))


def test_rgba_is_composited_over_white():
    image = Image.new("RGBA", (56, 56), (0, 0, 0, 0))
    assert load_image(image).getpixel((10, 10)) == (255, 255, 255)


def test_palette_with_transparency_is_composited(tmp_path):
    image = Image.new("P", (56, 56), 0)
    image.putpalette([0, 0, 0] + [255, 0, 0] * 255)
    path = tmp_path / "p.png"
    image.save(path, transparency=0)
    assert load_image(path).getpixel((3, 3)) == (255, 255, 255)


def test_cmyk_jpeg_file(tmp_path):
    path = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (80, 60), (0, 255, 255, 0)).save(path)  # red in CMYK
    r, g, b = load_image(path).getpixel((10, 10))
    assert r > 200 and g < 60 and b < 60


def test_sixteen_bit_png_keeps_its_tones(tmp_path):
    path = tmp_path / "deep.png"
    Image.fromarray(np.full((60, 60), 32768, np.uint16)).save(path)
    assert Image.open(path).mode.startswith("I")
    assert load_image(path).getpixel((5, 5)) == (128, 128, 128)


def test_grayscale_file(tmp_path):
    path = tmp_path / "gray.png"
    Image.new("L", (60, 60), 77).save(path)
    assert load_image(path).getpixel((1, 1)) == (77, 77, 77)


def test_tiny_image_is_upscaled_to_the_model_minimum():
    image = load_image(Image.new("RGB", (1, 1), (9, 9, 9)))
    assert_model_ready(image)
    assert image.size == (56, 56)


def test_huge_image_is_bounded(tmp_path):
    path = tmp_path / "big.jpg"
    Image.new("RGB", (6000, 4000), (50, 60, 70)).save(path, quality=80)
    image = load_image(path)
    assert_model_ready(image)
    assert abs(image.width / image.height - 1.5) < 0.05


def test_custom_bounds_are_honoured():
    bounds = ImageBounds(min_pixels=3136, max_pixels=224 * 224)
    assert_model_ready(load_image(Image.new("RGB", (1000, 700)), bounds), bounds)


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims a size, followed by a few bytes of compressed data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


def test_decompression_bomb_is_refused(tmp_path):
    path = tmp_path / "bomb.png"
    path.write_bytes(_png_header_only(30000, 30000))
    with pytest.raises(ImageInputError, match="decompression bomb"):
        load_image(path)


def test_truncated_file_is_refused(tmp_path):
    path = tmp_path / "cut.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (200, 200, 3), np.uint8)).save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageInputError, match="truncated or corrupt"):
        load_image(path)


@pytest.mark.parametrize(
    "content,message", [(b"hello, not an image", "not a recognised image"), (b"", "not a recognised image")]
)
def test_non_image_file_is_refused(tmp_path, content, message):
    path = tmp_path / "x.png"
    path.write_bytes(content)
    with pytest.raises(ImageInputError, match=message):
        load_image(path)


def test_missing_file_and_directory_are_refused(tmp_path):
    with pytest.raises(ImageInputError, match="file not found"):
        load_image(tmp_path / "missing.png")
    with pytest.raises(ImageInputError, match="directory"):
        load_image(tmp_path)


def test_extreme_aspect_ratio_is_refused():
    with pytest.raises(ImageInputError, match="aspect ratio"):
        load_image(Image.new("RGB", (30000, 10)))


@pytest.mark.parametrize(
    "array",
    [
        np.full((50, 70, 3), 200, np.uint8),  # HWC uint8
        np.full((50, 70, 3), 0.5, np.float32),  # HWC float 0..1
        np.full((50, 70), 0.25, np.float64),  # HW float
        np.full((3, 50, 70), 100, np.uint8),  # CHW
        np.full((50, 70, 4), 255, np.uint8),  # HWC RGBA
        np.full((50, 70, 1), 9, np.uint8),  # HW1
        np.full((50, 70, 3), 40000, np.uint16),  # 16-bit
        np.ones((50, 70, 3), bool),  # mask-like
    ],
)
def test_numpy_arrays(array):
    assert_model_ready(load_image(array))


def test_float_values_map_to_8_bit():
    assert load_image(np.full((56, 56, 3), 0.5, np.float32)).getpixel((0, 0)) == (128, 128, 128)


@pytest.mark.parametrize(
    "tensor",
    [
        torch.full((3, 50, 70), 0.5),  # CHW float
        torch.full((50, 70, 3), 0.5),  # HWC float
        torch.full((1, 50, 70, 3), 0.5, dtype=torch.float16),  # ComfyUI BHWC, one image
        torch.full((3, 50, 70), 0.5, dtype=torch.bfloat16),  # bf16
        torch.full((50, 70, 3), 128, dtype=torch.uint8),
    ],
)
def test_torch_tensors(tensor):
    assert load_image(tensor).getpixel((1, 1)) == (128, 128, 128)


def test_comfyui_batch_splits_into_images():
    batch = torch.rand(4, 64, 80, 3)
    items, single = split_inputs(batch)
    assert not single and len(items) == 4
    assert all(load_image(item).size == (84, 56) for item in items)
    assert split_inputs("a.png") == (["a.png"], True)
    assert split_inputs(["a.png", "b.png"]) == (["a.png", "b.png"], False)


@pytest.mark.parametrize(
    "bad,message",
    [
        (np.full((50, 70, 3), np.nan, np.float32), "NaN or infinite"),
        (np.full((50, 70, 3), np.inf, np.float32), "NaN or infinite"),
        (torch.full((3, 50, 70), float("nan")), "NaN or infinite"),
        (np.zeros((0, 70, 3), np.uint8), "empty"),
        (np.zeros((50, 70, 7), np.uint8), "channel axis"),
        (np.zeros((2, 2, 50, 70, 3), np.uint8), "not an image"),
        (np.full((50, 70, 3), 255.0, np.float32), "expected 0..1"),
        (np.full((50, 70, 3), 300, np.int32), "expected 0..255"),
        (np.zeros((50, 70, 3), np.complex64), "unsupported dtype"),
        (12345, "unsupported image input"),
    ],
)
def test_bad_arrays_are_refused_clearly(bad, message):
    with pytest.raises(ImageInputError, match=message):
        load_image(bad)


def test_bounds_are_validated():
    with pytest.raises(ValueError):
        ImageBounds(min_pixels=100)
    with pytest.raises(ValueError):
        ImageBounds(min_pixels=10000, max_pixels=5000)


@pytest.mark.parametrize("value,expected", [(0, 0), (257, 1), (32896, 128), (60000, 233), (65535, 255)])
def test_sixteen_bit_arrays_map_full_scale_to_full_scale(value, expected):
    """65535 is white: the scale is 255/65535 = 1/257 (1/256 would wrap 65535 to black, 60000 to 234)."""
    assert load_image(np.full((56, 56, 3), value, np.uint16)).getpixel((0, 0)) == (expected,) * 3


def _processor_sizes():
    rng = np.random.default_rng(3)
    small = [(int(w), int(h)) for w, h in rng.integers(28, 400, (40, 2))]
    large = [(int(w), int(h)) for w, h in rng.integers(400, 5000, (40, 2))]
    sizes = small + large + [(28, 29), (1024, 768), (6000, 4000), (3000, 30)]
    return [(w, h) for w, h in sizes if max(w, h) / min(w, h) <= 200]  # beyond: refused by both


@pytest.mark.parametrize(
    "bounds",
    [
        ImageBounds(),
        ImageBounds(min_pixels=3136, max_pixels=12845056),
        ImageBounds(min_pixels=200 * 200, max_pixels=300 * 300),
    ],
)
def test_fitting_equals_qwen_processors_own_resize_rule(bounds):
    """Qwen2-VL's image processor must find nothing left to resize in what we hand it (sides of 28 and up:
    transformers 4.51 refuses smaller ones)."""
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

    for width, height in _processor_sizes():
        height_q, width_q = smart_resize(
            height, width, factor=PATCH_GRID, min_pixels=bounds.min_pixels, max_pixels=bounds.max_pixels
        )
        assert fit_to_patch_grid(width, height, bounds) == (width_q, height_q), (width, height)


@pytest.mark.parametrize(
    "size,fitted",
    [
        ((1, 1), (56, 56)),
        ((190, 13), (196, 28)),
        ((13, 190), (28, 196)),
        ((20, 20), (56, 56)),
        ((100, 10), (112, 28)),
        ((400, 2), (392, 28)),
    ],
)
def test_sides_under_one_patch_follow_the_official_pipeline(size, fitted):
    """Q-Insight's code resized with qwen_vl_utils, which rounds each side to at least one 28-pixel patch
    before the pixel bounds (newer transformers rounds such a side to 0 and then grows the image)."""
    assert fit_to_patch_grid(*size, BOUNDS) == fitted


def test_patches_equal_the_qwen_image_processor():
    """The direct patch encoder against the stock processor, on the tiny checkpoint's settings."""
    from transformers import Qwen2VLImageProcessor

    from qinsight_sdk.io.images import PatchSpec, patch_count, to_patches
    from qinsight_sdk.testing import PREPROCESSOR_CONFIG

    settings = {k: v for k, v in PREPROCESSOR_CONFIG.items() if k not in ("image_processor_type", "processor_class")}
    processor = Qwen2VLImageProcessor(**settings)
    spec = PatchSpec(
        mean=tuple(processor.image_mean),
        std=tuple(processor.image_std),
        rescale=processor.rescale_factor,
        patch=processor.patch_size,
        temporal=processor.temporal_patch_size,
        merge=processor.merge_size,
    )
    rng = np.random.default_rng(0)
    for height, width in [(56, 84), (112, 56), (28 * 5, 28 * 3)]:
        image = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
        expected = processor(images=[image], return_tensors="pt")
        patches, grid = to_patches(image, spec)
        assert grid == tuple(expected["image_grid_thw"][0].tolist())
        assert patches.shape == expected["pixel_values"].shape
        assert torch.allclose(torch.from_numpy(patches), expected["pixel_values"].float(), atol=1e-5)
        assert patch_count(image, spec) == patches.shape[0] == (height // 14) * (width // 14)


# -- pixel values, exactly ------------------------------------------------------------------------------


def test_half_transparent_pixels_are_blended_with_white():
    image = Image.new("RGBA", (56, 56), (255, 0, 0, 128))
    assert load_image(image).getpixel((0, 0)) == (255, 127, 127)
    gray_alpha = np.zeros((56, 56, 2), np.uint8)
    gray_alpha[..., 1] = 255  # opaque black
    assert load_image(gray_alpha).getpixel((0, 0)) == (0, 0, 0)
    gray_alpha[..., 1] = 0  # transparent: white shows
    assert load_image(gray_alpha).getpixel((0, 0)) == (255, 255, 255)


def test_palette_without_transparency_keeps_its_colours():
    image = Image.new("P", (56, 56), 1)
    image.putpalette([0, 0, 0, 10, 20, 30] + [0] * 762)
    assert load_image(image).getpixel((0, 0)) == (10, 20, 30)


@pytest.mark.parametrize(
    "mode,value,expected",
    [("F", 0.5, 128), ("F", 1.0, 255), ("F", 32768.0, 128), ("I", 65535, 255), ("I", 257, 255), ("I", 514, 2)],
)
def test_high_bit_depth_images(mode, value, expected):
    """Float images in 0..1 are scaled by 255; values from 512 up are 16-bit; between, 0..255 clipped."""
    image = Image.new(mode, (56, 56), value)
    assert load_image(image).getpixel((0, 0)) == (expected,) * 3


@pytest.mark.parametrize("value,expected", [(1.005, 255), (-0.005, 0), (0.5, 128), (0.2, 51), (0.0019, 0), (0.002, 1)])
def test_float_arrays_round_to_the_nearest_level_within_tolerance(value, expected):
    assert load_image(np.full((56, 56, 3), value, np.float32)).getpixel((0, 0)) == (expected,) * 3


@pytest.mark.parametrize("value", [1.02, -0.02])
def test_floats_beyond_the_tolerance_are_refused(value):
    with pytest.raises(ImageInputError, match="has float values in"):
        load_image(np.full((56, 56, 3), value, np.float32))


def test_integer_arrays_keep_their_values_and_name_their_range():
    assert load_image(np.full((56, 56), 200, np.int64)).getpixel((0, 0)) == (200, 200, 200)
    assert load_image(np.full((56, 56), 255, np.int16)).getpixel((0, 0)) == (255, 255, 255)
    with pytest.raises(
        ImageInputError,
        match=r"array of shape \(56, 56\) and dtype int16 has integer values in "
        r"\[-1, 0\]; expected 0..255",
    ):
        load_image(np.concatenate([np.zeros((55, 56)), -np.ones((1, 56))]).astype(np.int16))
    with pytest.raises(ImageInputError, match=r"\[0, 256\]"):
        load_image(np.concatenate([np.zeros((55, 56)), np.full((1, 56), 256)]).astype(np.int32))


def test_channel_axis_when_both_ends_could_be_channels():
    """(3, H, 3): numpy arrays are read channels-last, torch tensors channels-first."""
    array = np.zeros((3, 56, 3), np.uint8)
    array[0] = 255  # numpy: a white row over two black ones; torch: the red channel full, the others empty
    as_numpy = np.asarray(load_image(array)).astype(int)
    as_tensor = np.asarray(load_image(torch.from_numpy(array))).astype(int)
    assert as_numpy.shape[:2] == (28, 252) and as_tensor.shape[:2] == (252, 28)
    assert (as_numpy[..., 0] == as_numpy[..., 2]).all() and as_numpy[0].min() > 200 and as_numpy[-1].max() < 50
    assert as_tensor[..., 0].min() == 255 and as_tensor[..., 1:].max() == 0


def test_channels_first_numpy_when_the_last_axis_cannot_be_channels():
    array = np.zeros((3, 56, 56), np.uint8)
    array[2] = 200
    assert load_image(array).getpixel((0, 0)) == (0, 0, 200)
    assert load_image(np.zeros((1, 56, 56, 3), np.uint8)).size == (56, 56)  # a batch of one


def test_animated_images_are_judged_by_their_first_frame(tmp_path):
    frames = [Image.new("RGB", (56, 56), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:])
    with Image.open(path) as image:
        image.seek(1)
        r, g, b = load_image(image).getpixel((5, 5))
    assert r > 200 and b < 50


def test_a_large_jpeg_is_decoded_at_a_reduced_scale_first(tmp_path, monkeypatch):
    from PIL import JpegImagePlugin

    asked = []
    original = JpegImagePlugin.JpegImageFile.draft
    monkeypatch.setattr(
        JpegImagePlugin.JpegImageFile,
        "draft",
        lambda self, mode, size: asked.append((mode, size)) or original(self, mode, size),
    )
    path = tmp_path / "big.jpg"
    Image.new("RGB", (4000, 3000), (50, 60, 70)).save(path, quality=90)
    fast = ImageBounds.fast()
    assert load_image(path, fast).size == fit_to_patch_grid(4000, 3000, fast) == (1148, 840)
    assert asked == [("RGB", (1148, 840))]  # decoded at 1/2 scale (2000x1500), not at 12 megapixels
    Image.new("RGB", (30000, 20), (50, 60, 70)).save(path)  # unfittable: asks for its own size, then refused
    with pytest.raises(ImageInputError, match="aspect ratio"):
        load_image(path, fast)
    assert asked[-1] == ("RGB", (30000, 20))


def test_an_unsupported_input_says_what_would_do():
    with pytest.raises(
        ImageInputError,
        match="unsupported image input of type dict; pass a path, image file bytes, a PIL image, "
        "a numpy array or a torch tensor",
    ):
        load_image({"image": "a.png"})


def test_bounds_at_their_limits():
    assert ImageBounds(min_pixels=784, max_pixels=784).max_pixels == 784  # one token, exactly
    with pytest.raises(ValueError) as refused:
        ImageBounds(min_pixels=783)
    assert str(refused.value) == "need 784 <= min_pixels <= max_pixels, got min_pixels=783, max_pixels=12845056"


@pytest.mark.parametrize(
    "size, official, fast", [((1024, 768), 999, 999), ((4000, 3000), 15301, 1230), ((1920, 1080), 2691, 1222)]
)
def test_image_tokens_under_each_size_preset(size, official, fast):
    """Issue 11: the official code feeds images at native size up to 12,845,056 pixels; the fast preset
    caps at about 1 megapixel. One image token per 28x28 pixels."""

    def tokens(bounds):
        width, height = fit_to_patch_grid(*size, bounds)
        return width * height // 28**2

    assert (tokens(ImageBounds()), tokens(ImageBounds.official()), tokens(ImageBounds.fast())) == (
        official,
        official,
        fast,
    )
    assert ImageBounds.preset("official") == ImageBounds.official() and ImageBounds.preset("fast") == ImageBounds.fast()
    assert ImageBounds.preset("2000000") == ImageBounds.preset(2000000) == ImageBounds(max_pixels=2000000)


def test_file_errors_name_the_file(tmp_path):
    path = tmp_path / "cut.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (100, 100, 3), np.uint8)).save(path)
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(ImageInputError) as refused:
        load_image(path)
    assert str(refused.value).startswith(f"{path} is truncated or corrupt (")
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(_png_header_only(30000, 30000))
    with pytest.raises(ImageInputError) as refused:
        load_image(bomb)
    assert str(refused.value).startswith(f"{bomb}: refused as a possible decompression bomb (")
    assert str(refused.value).endswith("); downscale it before judging")


@pytest.mark.parametrize(
    "mode,value,expected",
    [
        ("I", 60000, 233),
        ("I", 32768, 128),
        ("I", -10000, 0),
        ("I", 0, 0),
        ("I", 65407, 255),
        ("I", 70000, 255),
        ("F", 1.5, 2),
        ("I;16B", 32768, 128),
    ],
)
def test_deep_values_map_from_the_16_bit_scale(mode, value, expected):
    if mode == "I;16B":
        image = Image.frombytes(mode, (56, 56), np.full((56, 56), value, ">u2").tobytes())
    else:
        image = Image.new(mode, (56, 56), value)
    assert load_image(image).getpixel((0, 0)) == (expected,) * 3


def test_integer_zeros_are_black():
    assert load_image(np.zeros((56, 56, 3), np.int32)).getpixel((0, 0)) == (0, 0, 0)


@pytest.mark.parametrize("value,expected", [(-0.01, 0), (1.01, 255)])
def test_float_tolerance_is_inclusive(value, expected):
    assert load_image(np.full((56, 56), value, np.float64)).getpixel((0, 0)) == (expected,) * 3


def test_array_errors_exactly():
    with pytest.raises(ImageInputError) as refused:
        load_image(np.zeros((50, 70, 7), np.uint8))
    assert str(refused.value) == "array of shape (50, 70, 7) and dtype uint8 has no channel axis of size 1, 2, 3 or 4"
    with pytest.raises(ImageInputError) as refused:
        load_image(np.full((56, 56), 2.0, np.float32))
    assert str(refused.value) == (
        "array of shape (56, 56) and dtype float32 has float values in [2, 2]; "
        "expected 0..1 (divide 0..255 data by 255)"
    )


@pytest.mark.parametrize("channels,expected", [(1, (90, 90, 90)), (2, (90, 90, 90)), (3, (90, 0, 0)), (4, (90, 0, 0))])
def test_channels_first_numpy_of_every_width(channels, expected):
    array = np.zeros((channels, 56, 56), np.uint8)
    array[0] = 90
    if channels in (2, 4):
        array[-1] = 255  # opaque
    assert load_image(array).getpixel((0, 0)) == expected


def test_a_single_row_image_is_not_a_batch():
    array = np.full((1, 56, 3), 77, np.uint8)  # one row of 56 RGB pixels
    image = load_image(array)
    assert image.size == fit_to_patch_grid(56, 1, BOUNDS) and image.getpixel((0, 0)) == (77, 77, 77)


def test_an_object_with_detach_is_not_taken_for_a_tensor():
    class Lookalike:
        def detach(self):
            raise AssertionError("not a tensor")

    with pytest.raises(ImageInputError, match="unsupported image input of type Lookalike"):
        load_image(Lookalike())


def test_an_embedded_colour_profile_converts_cmyk_to_srgb(monkeypatch):
    from PIL import ImageCms

    calls = []
    monkeypatch.setattr(ImageCms, "ImageCmsProfile", lambda data: ("profile", data.read()))

    def convert(image, source, target, outputMode):
        calls.append((image.mode, source, target.profile_description.strip(), outputMode))
        return Image.new("RGB", image.size, (1, 2, 3))

    monkeypatch.setattr(ImageCms, "profileToProfile", convert)
    image = Image.new("CMYK", (56, 56), (0, 255, 255, 0))
    image.info["icc_profile"] = b"embedded"
    assert load_image(image).getpixel((0, 0)) == (1, 2, 3)
    assert calls == [("CMYK", ("profile", b"embedded"), "sRGB built-in", "RGB")]


def test_a_broken_colour_profile_falls_back_to_the_plain_conversion():
    image = Image.new("CMYK", (56, 56), (0, 255, 255, 0))
    image.info["icc_profile"] = b"not a profile"
    assert load_image(image).getpixel((0, 0)) == Image.new("CMYK", (1, 1), (0, 255, 255, 0)).convert("RGB").getpixel(
        (0, 0)
    )


def test_patch_counts_are_integers():
    from qinsight_sdk.io.images import PatchSpec, patch_count

    count = patch_count(Image.new("RGB", (56, 84)), PatchSpec(mean=(0, 0, 0), std=(1, 1, 1)))
    assert count == 24 and isinstance(count, int)


@pytest.mark.parametrize("orientation,left_is_red", [(1, True), (2, False)])
def test_mirrored_exif_orientation_is_applied(tmp_path, orientation, left_is_red):
    array = np.zeros((56, 112, 3), np.uint8)
    array[:, :56] = (255, 0, 0)  # left half red
    image = Image.fromarray(array)
    exif = image.getexif()
    exif[0x0112] = orientation  # 2: mirrored left to right
    path = tmp_path / "mirrored.png"
    image.save(path, exif=exif)
    left = np.asarray(load_image(path))[:, :20].mean(axis=(0, 1))
    assert (left[0] > 200) == left_is_red


def test_fitting_messages_and_the_upper_bound_itself():
    with pytest.raises(ImageInputError) as refused:
        fit_to_patch_grid(0, 5, BOUNDS)
    assert str(refused.value) == "image is 0x5: it has no pixels"
    with pytest.raises(ImageInputError) as refused:
        fit_to_patch_grid(201, 1, BOUNDS)
    assert str(refused.value) == (
        "image is 201x1: aspect ratio above 200:1, which the model cannot take; crop it first"
    )
    # 100x120 rounds to 112x112, exactly the bound: kept, not shrunk
    assert fit_to_patch_grid(100, 120, ImageBounds(min_pixels=784, max_pixels=112 * 112)) == (112, 112)


def test_a_corrupt_pil_image_is_named_as_such(tmp_path):
    path = tmp_path / "cut.png"
    Image.fromarray(np.random.default_rng(2).integers(0, 255, (100, 100, 3), np.uint8)).save(path)
    path.write_bytes(path.read_bytes()[:300])
    with Image.open(path) as image:
        with pytest.raises(ImageInputError) as refused:
            load_image(image)
    assert str(refused.value).startswith("the PIL image is truncated or corrupt (")


def _png_with_chunk(path, kind, payload):
    """A valid 8x8 PNG with one extra chunk inserted after the header."""
    import io

    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (90, 90, 90)).save(buffer, "PNG")
    data = buffer.getvalue()
    chunk = struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))
    path.write_bytes(data[:33] + chunk + data[33:])
    return path


def _closed_image():
    image = Image.new("RGB", (8, 8))
    image.close()
    return image


@pytest.mark.parametrize(
    "make, named",
    [
        (
            lambda tmp: _png_with_chunk(tmp / "ztxt.png", b"zTXt", b"k\0\0" + zlib.compress(b"A" * 2_000_000)),
            "ztxt.png",
        ),
        (
            lambda tmp: _png_with_chunk(tmp / "iccp.png", b"iCCP", b"p\0\0" + zlib.compress(b"A" * 2_000_000)),
            "iccp.png",
        ),
        (lambda tmp: _closed_image(), "the PIL image"),
        (lambda tmp: torch.rand(3, 8, 8, device="meta"), "the tensor"),
        (lambda tmp: torch.rand(3, 8, 8).to_sparse(), "the tensor"),
    ],
)
def test_any_failure_reading_one_input_is_that_inputs_error(tmp_path, make, named):
    """Issue 10, defect 2: these raised other exception types and took the whole batch down."""
    with pytest.raises(ImageInputError, match=named):
        load_image(make(tmp_path))


class _BufferGone(np.ndarray):
    """An array whose shape can no longer be read, as a view of a released buffer might fail."""

    @property
    def shape(self):
        raise RuntimeError("its buffer is gone")


def test_an_unexpected_failure_names_the_input_and_the_exception():
    closed = _closed_image()
    with pytest.raises(ImageInputError) as refused:
        load_image(closed)
    assert str(refused.value) == "the PIL image cannot be read (ValueError: Operation on closed image)"
    with pytest.raises(ImageInputError) as refused:
        load_image(np.zeros((8, 8, 3), np.uint8).view(_BufferGone))
    assert str(refused.value) == "the _BufferGone cannot be read (RuntimeError: its buffer is gone)"


@pytest.mark.parametrize("mode", ["F", "I", "I;16"])
def test_an_image_pillow_converted_to_a_deep_mode_keeps_its_pixels(mode):
    """Pillow's convert("F"), ("I") and ("I;16") keep 8-bit values: judged as the same image in L (a
    4.6 image once scored 1.6, read as 16-bit data and so nearly black)."""
    colours = np.random.default_rng(8).integers(0, 256, (56, 84, 3), dtype=np.uint8)
    colours[0, 0] = 255  # the brightest value an 8-bit image holds
    rgb = Image.fromarray(colours)
    gray = np.asarray(rgb.convert("L")).astype(int)
    judged = np.asarray(load_image(rgb.convert(mode))).astype(int)
    assert np.abs(judged - gray[..., None]).max() <= 1  # F holds the luma unrounded; L rounds it
    assert (judged[..., 0] == gray).mean() > 0.99


def _stripes(values, mode: str) -> Image.Image:
    """One 56x56 square per value, side by side: on the patch grid already, so never resampled."""
    row = np.repeat(np.asarray(values, np.float64), 56)
    data = np.tile(row, (56, 1))
    return Image.fromarray(data.astype({"F": np.float32, "I": np.int32, "I;16": np.uint16}[mode]))


def _stripe_values(image: Image.Image) -> list[int]:
    pixels = np.asarray(image)
    return [int(v) for v in (pixels[0, ::56, 0] if pixels.ndim == 3 else pixels[0, ::56])]


@pytest.mark.parametrize("mode", ["F", "I"])
def test_values_outside_0_255_are_clipped_as_pillow_clips_them(mode):
    """Below 0 is black and 256-511 white, as Pillow's own conversion gives (whole numbers, where
    Pillow's truncation of floats and our rounding agree)."""
    image = _stripes([-300, -1, 0, 1, 100, 254, 255, 256, 300, 511], mode)
    assert image.mode == mode
    expected = [0, 0, 0, 1, 100, 254, 255, 255, 255, 255]
    assert _stripe_values(image.convert("L")) == expected  # Pillow's reading
    assert _stripe_values(load_image(image)) == expected


@pytest.mark.parametrize("mode", ["F", "I", "I;16"])
def test_from_512_up_an_image_is_16_bit_data(mode):
    """A 16-bit PNG or TIFF reaches 512 unless it is black: then 0..65535 is the range (Pillow's
    clipping would make it white); 511 still reads as 8-bit data that overshot."""
    assert _stripe_values(load_image(_stripes([100, 257, 511], mode))) == [100, 255, 255]
    assert _stripe_values(load_image(_stripes([100, 257, 512, 32768, 65535], mode))) == [0, 1, 2, 128, 255]


@pytest.mark.parametrize(
    "values,expected",
    [
        ([0.0, 0.5, 1.0], [0, 128, 255]),
        ([-0.5, 0.2, 1.01], [0, 51, 255]),  # the float arrays' tolerance
        ([0.0, 0.6, 1.02], [0, 1, 1]),  # past it: 0..255 data
        ([0.4, 1.5, 2.0], [0, 2, 2]),
    ],
)
def test_float_images_within_0_1_are_0_1_data(values, expected):
    assert _stripe_values(load_image(_stripes(values, "F"))) == expected


def test_the_reading_of_a_deep_image_is_logged(caplog):
    with caplog.at_level("DEBUG", logger="qinsight"):
        load_image(_stripes([3, 200], "I"))
        load_image(_stripes([0.25, 0.75], "F"))
        load_image(_stripes([3, 40000], "I;16"))
    assert [r.getMessage() for r in caplog.records if "data" in r.getMessage()] == [
        "a mode-I image with values in [3, 200] is read as 0..255 data",
        "a mode-F image with values in [0.25, 0.75] is read as 0..1 data",
        "a mode-I;16 image with values in [3, 40000] is read as 0..65535 data",
    ]


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_a_float_image_with_nan_or_infinity_is_refused_naming_it(tmp_path, value):
    image = _stripes([0.5, value], "F")
    with pytest.raises(ImageInputError, match=r"^the PIL image is a float \(F\) image with NaN or infinite values$"):
        load_image(image)
    path = tmp_path / "float.tif"
    image.save(path)
    with pytest.raises(ImageInputError, match=rf"^{path} is a float \(F\) image with NaN or infinite values$"):
        load_image(path)
