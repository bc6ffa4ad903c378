"""The VQ-Insight family's video rules (qinsight_sdk.io.video_sampling) against the reference: the
modified qwen-vl-utils' arithmetic transcribed here on its own (shared/reference/q-insight-family.md,
section 2.6), the results measured there, and torchvision's resize."""

import math

import numpy as np
import pytest
import torch

from qinsight_sdk.errors import ImageInputError
from qinsight_sdk.io import video_sampling as sampling


def reference_nframes(total, video_fps):
    """smart_nframes with fps 2.0, min_frames 4, max_frames min(16, total), FRAME_FACTOR 2."""
    min_frames = math.ceil(4 / 2) * 2
    max_frames = math.floor(min(16, total) / 2) * 2
    nframes = total / video_fps * 2.0
    nframes = min(min(max(nframes, min_frames), max_frames), total)
    nframes = math.floor(nframes / 2) * 2
    if not (2 <= nframes <= total):
        raise ValueError("nframes out of range")
    return nframes


def reference_size(height, width, nframes):
    """fetch_video's limits, then smart_resize with factor 28."""
    min_pixels = 128 * 28 * 28
    total_pixels = 90316800
    max_pixels = max(min(128 * 28 * 28, total_pixels / nframes * 2), int(min_pixels * 1.05))
    h_bar = max(28, round(height / 28) * 28)
    w_bar = max(28, round(width / 28) * 28)
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = max(28, math.floor(height / beta / 28) * 28)
        w_bar = max(28, math.floor(width / beta / 28) * 28)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / 28) * 28
        w_bar = math.ceil(width * beta / 28) * 28
    return h_bar, w_bar


@pytest.mark.parametrize(
    "total, fps, height, width, frames, size",
    [  # measured with the family's code on a CPU (the reference, section 2.6)
        (240, 30, 1080, 1920, 16, (224, 420)),
        (300, 25, 540, 960, 16, (224, 420)),
        (3, 30, 360, 640, 2, (224, 420)),
        (120, 24, 480, 720, 10, (252, 392)),
        (49, 8, 480, 720, 12, (252, 392)),
        (16, 8, 512, 512, 4, (308, 308)),
    ],
)
def test_the_measured_examples(total, fps, height, width, frames, size):
    assert sampling.frame_count(total, fps) == frames
    assert sampling.frame_size(height, width) == size


def test_frame_counts_follow_the_reference_everywhere():
    for total in range(2, 400, 3):
        for fps in (1, 2, 2.5, 7.5, 8, 23.976, 24, 25, 29.97, 30, 60, 120):
            assert sampling.frame_count(total, fps) == reference_nframes(total, fps), (total, fps)


def test_sizes_follow_the_reference_everywhere():
    rng = np.random.default_rng(0)
    # 225x447 rounds to exactly 100,352 pixels: left as rounded, not grown (grown, it would be 252x448)
    assert sampling.frame_size(225, 447) == (224, 448)
    for height, width in [(1, 200), (200, 1), (28, 28), (317, 317), (225, 447)] + [
        tuple(int(v) for v in rng.integers(8, 4000, 2)) for _ in range(400)
    ]:
        if max(height, width) / min(height, width) > 200:
            continue
        assert sampling.frame_size(height, width) == reference_size(height, width, 16), (height, width)


def test_every_size_is_on_the_grid_near_the_pixel_budget():
    """About 100,352 pixels: the floor branch can land below it (224x420 from 1080p) and the ceiling
    branch above the maximum (392x280 from 64x48), as in the family's code."""
    for height, width in [(1080, 1920), (720, 1280), (64, 48), (4000, 3000), (5, 900)]:
        h, w = sampling.frame_size(height, width)
        assert h % 28 == 0 and w % 28 == 0
        assert 0.9 * sampling.MIN_FRAME_PIXELS <= h * w <= 1.15 * sampling.MAX_FRAME_PIXELS


def test_indices_are_torch_linspace_rounded_half_to_even():
    assert sampling.frame_indices(48, 4) == [0, 16, 31, 47]
    assert sampling.frame_indices(4, 3) == [0, 2, 3]  # 1.5 rounds to 2 (half to even)
    assert sampling.frame_indices(6, 3) == [0, 2, 5]  # 2.5 rounds to 2
    for total in range(2, 300, 7):
        for count in range(2, min(16, total) + 1, 2):
            expected = torch.linspace(0, total - 1, count).round().long().tolist()
            assert sampling.frame_indices(total, count) == expected


def test_resizing_equals_torchvision_on_8_bit_frames():
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as F

    rng = np.random.default_rng(1)
    for height, width in [(240, 320), (1080, 1920), (50, 70), (97, 61)]:
        frames = rng.integers(0, 256, (3, height, width, 3), dtype=np.uint8)
        size = sampling.frame_size(height, width)
        expected = F.resize(
            torch.from_numpy(frames).permute(0, 3, 1, 2), list(size), InterpolationMode.BICUBIC, antialias=True
        )
        resized = sampling.resize_frames(frames, size)
        assert resized.dtype == np.uint8
        assert np.array_equal(resized, expected.permute(0, 2, 3, 1).numpy())


def test_frames_already_at_size_are_returned_as_they_are():
    frames = np.zeros((2, 28, 56, 3), dtype=np.uint8)
    assert sampling.resize_frames(frames, (28, 56)) is frames


def test_read_only_frames_resize_without_a_warning(recwarn):
    frames = np.zeros((2, 30, 30, 3), dtype=np.uint8)
    frames.flags.writeable = False
    assert sampling.resize_frames(frames, (28, 28)).shape == (2, 28, 28, 3)
    assert not [w for w in recwarn if "not writable" in str(w.message)]


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: sampling.frame_count(1, 24), "the video has 1 frame(s): a video needs at least 2"),
        (lambda: sampling.frame_count(0, 24, "clip.mp4"), "clip.mp4 has 0 frame(s): a video needs at least 2"),
        (lambda: sampling.frame_count(10, 0), "the video has no usable frame rate (0 frames per second)"),
        (lambda: sampling.frame_count(10, float("nan")), "the video has no usable frame rate (nan frames per second)"),
        (lambda: sampling.frame_size(0, 10), "the video has frames of 10x0: no pixels"),
        (
            lambda: sampling.frame_size(10, 2011, "wide.mp4"),
            "wide.mp4 has frames of 2011x10: aspect ratio above 200:1, which the model cannot take",
        ),
    ],
)
def test_refusals_name_the_video_and_the_problem(call, message):
    with pytest.raises(ImageInputError) as raised:
        call()
    assert str(raised.value) == message


def test_the_limits_are_the_family_s():
    assert (sampling.MIN_FRAME_PIXELS, sampling.MAX_FRAME_PIXELS) == (100352, 105369)
    assert (sampling.MIN_FRAMES, sampling.MAX_FRAMES, sampling.FRAMES_PER_SECOND) == (4, 16, 2.0)
    assert sampling.SECONDS_PER_GRID == 1.0
