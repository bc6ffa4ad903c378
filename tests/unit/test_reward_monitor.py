"""The reward-hacking monitor: each image statistic on images made to have its property, and warnings on
training runs made to hack (or not), with the reward and the second judge given or scored."""

import logging

import numpy as np
import pytest
import torch
from PIL import Image, ImageFilter
from scripted import brightness_answer

from qinsight_sdk import QualityJudge
from qinsight_sdk.errors import ImageInputError, UsageError
from qinsight_sdk.rl import HackingMonitor, JudgeReward, image_statistics
from qinsight_sdk.rl.image_statistics import (
    _harmonics,
    blockiness,
    colourfulness,
    grid_energy,
    pixels_of,
    saturation,
    sharpness,
)
from qinsight_sdk.testing import ScriptedBackend


def photo(seed=0, side=64, tint=(1.0, 0.9, 0.8)):
    """A smooth, textured, mildly tinted image (H, W, 3) in 0-255, like a generator's sample, with no
    structure on an 8-pixel lattice."""
    rng = np.random.default_rng(seed)
    noise = Image.fromarray(rng.uniform(0, 255, (side, side)).astype(np.uint8))
    smooth = np.asarray(noise.filter(ImageFilter.GaussianBlur(3)), dtype=float)
    smooth = 125 + (smooth - smooth.mean()) * (60 / max(smooth.std(), 1e-6))
    detail = rng.normal(0, 12, (side, side, 1))
    return np.clip((smooth[..., None] + detail) * np.array(tint), 0, 255)


def saturated(pixels, factor=2.5):
    """The same image, its colours pushed away from grey."""
    grey = pixels.mean(axis=-1, keepdims=True)
    return np.clip(grey + factor * (pixels - grey) + np.array([60, -20, -40]), 0, 255)


def with_grid(pixels, strength=70):
    """The same image with a bright line every 8 pixels, both ways."""
    out = pixels.copy()
    out[::8, :, :] += strength
    out[:, ::8, :] += strength
    return np.clip(out, 0, 255)


def blurred(pixels, radius=2):
    image = Image.fromarray(pixels.round().astype(np.uint8))
    return np.asarray(image.filter(ImageFilter.GaussianBlur(radius)), dtype=float)


# -- each statistic ------------------------------------------------------------------------------------------


def test_each_statistic_moves_on_an_image_made_to_have_its_property():
    for seed in range(5):
        base = photo(seed)
        assert saturation(saturated(base)) > saturation(base) + 0.15
        assert colourfulness(saturated(base)) > 1.5 * colourfulness(base)
        assert blockiness(with_grid(base)) > 1.5 * blockiness(base)
        assert grid_energy(with_grid(base)) > 3 * grid_energy(base)
        assert sharpness(blurred(base)) < 0.5 * sharpness(base)
        assert sharpness(saturated(base)) > 0.8 * sharpness(base)  # each moves on its own property
        assert abs(blockiness(blurred(base)) - blockiness(base)) < 0.2
        assert abs(saturation(blurred(base)) - saturation(base)) < 0.02
    natural = [blockiness(photo(seed)) for seed in range(5)]
    assert all(0.85 < value < 1.15 for value in natural), natural  # no blocks: steps alike everywhere


def test_statistics_of_images_whose_values_are_known():
    red = np.zeros((16, 16, 3))
    red[..., 0] = 255
    assert saturation(red) == 1.0
    assert colourfulness(red) == pytest.approx(0.3 * np.hypot(255, 127.5))  # flat: no spread, only the mean
    grey = np.full((16, 16, 3), 128.0)
    assert (saturation(grey), colourfulness(grey), sharpness(grey)) == (0.0, 0.0, 0.0)
    assert (blockiness(grey), grid_energy(grey)) == (1.0, 1.0)  # nothing to compare: neutral
    assert saturation(np.zeros((4, 4, 3))) == 0.0  # black is not saturated (and no division by zero)
    half = np.zeros((4, 4, 3))
    half[..., 0], half[..., 1], half[..., 2] = 200, 100, 100
    assert saturation(half) == pytest.approx(0.5)
    dot = np.zeros((5, 5, 3))
    dot[2, 2] = 255  # one bright pixel: the Laplacian is -4L at it, L beside it, over the 3x3 inside
    laplacian = np.array([0, 1, 0, 1, -4, 1, 0, 1, 0]) * 255.0
    assert sharpness(dot) == pytest.approx(laplacian.var())
    assert sharpness(np.zeros((2, 2, 3))) == 0.0
    dim = np.zeros((4, 4, 3))
    dim[..., 0] = 1  # barely lit, but pure red
    assert saturation(dim) == 1.0
    as_uint8 = photo(2, 16).round().astype(np.uint8)  # 8-bit values: no wrap-around, no integer division
    for statistic in (colourfulness, saturation, sharpness, blockiness, grid_energy):
        assert statistic(as_uint8) == pytest.approx(statistic(as_uint8.astype(float)), rel=1e-9), statistic


def test_blockiness_counts_steps_on_the_8_pixel_boundaries_only():
    steps = np.zeros((16, 16, 3))
    steps[:, 8:] = 100  # one step, from column 7 to 8: a block boundary
    assert blockiness(steps + np.arange(16)[None, :, None]) > 10
    shifted = np.zeros((16, 16, 3))
    shifted[:, 5:] = 100  # the same step inside a block
    assert blockiness(shifted + np.arange(16)[None, :, None]) < 1
    assert blockiness(np.full((6, 6, 3), 9.0) + np.arange(6)[None, :, None]) == 1.0  # under a block: neutral


def test_grid_energy_is_one_for_white_noise_and_counts_both_directions():
    noise = np.random.default_rng(0).uniform(0, 255, (64, 64, 3))
    assert grid_energy(noise) == pytest.approx(1.0, abs=0.15)
    rows = np.zeros((64, 64, 3))
    rows[::8] = 255
    columns = np.zeros((64, 64, 3))
    columns[:, ::8] = 255
    share = (4 * 64 + 4 * 64 - 16) / (64 * 64 - 1)  # of the bins, on the odd harmonics
    odd = 4 / 7  # a line every 8 pixels: equal power on its 7 harmonics, 4 of them odd
    assert grid_energy(rows) == pytest.approx(odd / share) and grid_energy(columns) == pytest.approx(odd / share)
    finer = np.zeros((64, 64, 3))
    finer[::4] = 255  # a 4-pixel period: not an 8-pixel grid
    assert grid_energy(finer) == 0.0
    odd = np.random.default_rng(1).uniform(0, 255, (50, 37, 3))  # sides that are no multiple of 8
    assert grid_energy(odd) == pytest.approx(1.0, abs=0.3)
    x = np.arange(64)
    waves = np.cos(2 * np.pi * 8 * x / 64) + np.cos(2 * np.pi * 3 * x / 64)  # equal power on and off the grid
    two = np.repeat(np.repeat(waves[None, :, None], 64, axis=0), 3, axis=-1) * 50 + 128
    assert grid_energy(two) == pytest.approx(0.5 / share)  # the 8-pixel wave on the grid, the other not
    assert grid_energy(np.random.default_rng(2).uniform(0, 255, (1, 9, 3))) > 0  # one row: no vertical grid
    assert _harmonics(64).tolist() == [8, 24, 40, 56]
    assert _harmonics(12).tolist() == [2, 4, 8, 10] and _harmonics(4).tolist() == [2]
    assert _harmonics(1).tolist() == [] and _harmonics(1).dtype == int


def test_images_in_every_layout_give_the_same_statistics():
    pixels = photo(3, side=32).round()
    as_uint8 = pixels.astype(np.uint8)
    layouts = [
        as_uint8,  # (H, W, C) uint8
        torch.from_numpy(pixels / 255).permute(2, 0, 1).float(),  # (C, H, W) float
        Image.fromarray(as_uint8),
        (pixels / 255).astype(np.float32),  # (H, W, C) float
        np.concatenate([as_uint8, np.full((32, 32, 1), 255, np.uint8)], axis=-1),  # RGBA
    ]
    for layout in layouts:
        np.testing.assert_allclose(pixels_of(layout), pixels, atol=0.01)
    grey = pixels_of(as_uint8[..., 0])
    assert grey.shape == (32, 32, 3) and np.array_equal(grey[..., 1], as_uint8[..., 0].astype(float))
    np.testing.assert_array_equal(pixels_of(np.full((2, 2, 3), 1.7)), 255.0)  # floats beyond 1 are white
    with pytest.raises(ImageInputError, match=r"shape \(2, 3, 4, 5\)"):
        pixels_of(np.zeros((2, 3, 4, 5)))
    with pytest.raises(ImageInputError, match="expected 1, 3 or 4 channels"):
        pixels_of(np.zeros((7, 6, 5)))
    with pytest.raises(ImageInputError, match="^an image with non-finite pixels$"):
        pixels_of(np.full((4, 4, 3), np.inf))
    np.testing.assert_array_equal(pixels_of(np.full((2, 2, 3), -0.5)), 0.0)  # and below 0 black
    grad = torch.full((3, 4, 4), 0.5, requires_grad=True)  # a generator's output, still in its graph
    np.testing.assert_allclose(pixels_of(grad), 127.5)
    palette = Image.fromarray(as_uint8).convert("P")
    np.testing.assert_array_equal(pixels_of(palette), np.asarray(palette.convert("RGB"), dtype=float))
    cmyk = Image.fromarray(as_uint8).convert("CMYK")
    np.testing.assert_array_equal(pixels_of(cmyk), np.asarray(cmyk.convert("RGB"), dtype=float))


@pytest.mark.parametrize(
    "shape, channels_first",
    [
        ((3, 4, 32), True),  # (C, H, W) with a short side that could pass for channels
        ((1, 16, 16), True),
        ((4, 16, 16), True),
        ((4, 16, 3), False),  # (H, W, C) with a first side that could pass for channels
        ((3, 16, 4), False),
        ((3, 16, 1), False),
    ],
)
def test_channels_are_found_first_or_last(shape, channels_first):
    values = np.random.default_rng(0).uniform(0, 1, shape)
    hwc = np.moveaxis(values, 0, -1) if channels_first else values
    expected = np.repeat(hwc, 3, axis=-1) if hwc.shape[-1] == 1 else hwc[..., :3]
    np.testing.assert_allclose(pixels_of(values), expected * 255)


def test_a_batch_s_statistics_one_per_image_and_nan_where_unmeasurable():
    images = np.stack([photo(0, 32), photo(2, 32), saturated(photo(1, 32))]) / 255  # (B, H, W, C) floats
    images[1, 0, 0, 0] = np.nan
    values = image_statistics(torch.from_numpy(images).permute(0, 3, 1, 2))
    assert set(values) == {"colourfulness", "saturation", "sharpness", "blockiness", "grid_energy"}
    assert values["saturation"][2] > values["saturation"][0] and np.isnan(values["saturation"][1])
    assert values["sharpness"][0] == pytest.approx(sharpness(photo(0, 32)), rel=1e-6)
    videos = (
        np.stack([np.stack([photo(k, 16) for k in range(5)]), np.stack([saturated(photo(k, 16)) for k in range(5)])])
        / 255
    )
    per_video = image_statistics(videos, video=True)  # (B, T, H, W, C): each video its frames' mean
    expected = np.mean([saturation(saturated(photo(k, 16))) for k in (0, 1, 3, 4)])  # 4 of 5 frames, spread
    assert per_video["saturation"][1] == pytest.approx(expected, rel=1e-6)
    assert np.isnan(image_statistics([[]], video=True)["sharpness"][0])


# -- the monitor ---------------------------------------------------------------------------------------------


def run(steps, make_batch, reward_of, second_of=None, monitor=None, batch=6):
    """Feed a made-up training run to a monitor: the reports, step by step."""
    monitor = monitor or HackingMonitor(window=4)
    reports = []
    for step in range(steps):
        images = np.stack([make_batch(step, k) for k in range(batch)])
        rewards = reward_of(step, images)
        second = None if second_of is None else second_of(step, images)
        reports.append(monitor.update(images.astype(np.uint8), rewards, second_rewards=second))
    return reports


def brightness_reward(step, images):
    return images.mean(axis=(1, 2, 3)) / 255


def honest(step, k):
    return np.clip(photo(100 * step + k, 32) + 3 * step, 0, 255)  # brighter, step by step, nothing else


def oversaturated(step, k):
    return saturated(photo(100 * step + k, 32), factor=1 + step / 8)


def test_an_honest_run_is_quiet_and_logs_what_it_saw():
    reports = run(16, honest, brightness_reward, second_of=lambda s, i: brightness_reward(s, i) * 0.9)
    assert all(not r.warnings for r in reports)
    last = reports[-1].stats
    assert last["qinsight/drift_reward"] > 2 and last["qinsight/hacking_warning"] == 0.0
    assert last["qinsight/agreement_srcc"] > 0.9
    assert last["qinsight/reward_mean"] == pytest.approx(
        np.mean(brightness_reward(0, np.stack([honest(15, k) for k in range(6)]))), abs=0.01
    )
    for name in (
        "reward_std",
        "reward_min",
        "reward_max",
        "colourfulness",
        "saturation",
        "sharpness",
        "blockiness",
        "grid_energy",
        "second_mean",
        "unmeasured",
        "drift_saturation",
        "drift_second",
    ):
        assert "qinsight/" + name in last
    assert all(isinstance(v, float) and np.isfinite(v) for v in last.values())
    assert "qinsight/drift_reward" not in reports[6].stats and "qinsight/drift_reward" in reports[7].stats
    assert [r.step for r in reports] == list(range(16))


def test_a_rising_reward_with_saturation_rising_warns_and_logs_once(caplog):
    with caplog.at_level(logging.WARNING, logger="qinsight"):
        reports = run(16, oversaturated, lambda s, images: images[..., 0].mean(axis=(1, 2)) / 255)
    assert not any(r.warnings for r in reports[:7])
    warned = [r for r in reports if r.warnings]
    assert warned and warned[-1] is reports[-1]
    assert any(w.startswith("saturation moved +") and "over-saturated colour" in w for w in reports[-1].warnings)
    assert reports[-1].stats["qinsight/hacking_warning"] == 1.0
    logged = [r.getMessage() for r in caplog.records if "saturation moved" in r.getMessage()]
    assert len(logged) == 1 and logged[0].startswith(f"possible reward hacking at batch {warned[0].step}: ")


def test_statistics_that_drift_while_the_reward_stays_say_nothing():
    reports = run(16, oversaturated, lambda s, images: np.random.default_rng(s).uniform(0.4, 0.6, len(images)))
    assert not any(r.warnings for r in reports)
    assert reports[-1].stats["qinsight/drift_saturation"] > 1


def test_a_second_judge_that_does_not_follow_or_disagrees_is_a_warning():
    flat = run(16, honest, brightness_reward, second_of=lambda s, i: np.random.default_rng(s).uniform(0.4, 0.6, len(i)))
    assert any(
        w.startswith("the second judge (given) moved") and "does not see the gain" in w for w in flat[-1].warnings
    )
    contrary = run(16, honest, brightness_reward, second_of=lambda s, i: 1 - brightness_reward(s, i))
    assert any("agree at SRCC -1.00 over the last 4 batches" in w for w in contrary[-1].warnings)
    assert contrary[-1].stats["qinsight/agreement_srcc"] == pytest.approx(-1.0)


def test_grids_and_blur_are_noticed_too():
    grid = run(16, lambda s, k: with_grid(photo(100 * s + k, 32), strength=6 * s), brightness_reward)
    kinds = {w.split(" ")[0] for w in grid[-1].warnings}
    assert {"blockiness", "grid_energy"} <= kinds
    blur = run(
        16, lambda s, k: np.clip(blurred(photo(100 * s + k, 32), radius=s / 5) + 3 * s, 0, 255), brightness_reward
    )
    assert any(w.startswith("sharpness moved -") for w in blur[-1].warnings)


def test_the_monitor_scores_with_its_own_second_judge():
    second = JudgeReward(QualityJudge(ScriptedBackend(brightness_answer)), name="bright")
    monitor = HackingMonitor(second, window=3, baseline=2)
    reports = run(8, honest, lambda s, images: np.random.default_rng(s).uniform(0, 1, len(images)), monitor=monitor)
    fooled = HackingMonitor(second, window=2, baseline=2)
    same = run(
        6,
        lambda s, k: photo(k, 32),
        lambda s, images: np.full(len(images), 0.1 * s) + 0.01 * np.arange(6),
        monitor=fooled,
    )
    assert any(w.startswith("the second judge (bright) moved +0.00") for w in same[-1].warnings)
    assert reports[0].stats["qinsight/second_mean"] == pytest.approx(
        second.compute(np.stack([honest(0, k) for k in range(6)]).astype(np.uint8)).rewards.mean(), abs=1e-6
    )
    assert "qinsight/drift_second" in reports[4].stats and "qinsight/drift_second" not in reports[3].stats


def test_the_monitor_refuses_what_it_cannot_use():
    with pytest.raises(UsageError, match="at least 2 batches, not 1 and 1"):
        HackingMonitor(window=1)
    with pytest.raises(UsageError, match="at least 2 batches, not 4 and 1"):
        HackingMonitor(window=4, baseline=1)
    monitor = HackingMonitor(window=2)
    with pytest.raises(UsageError, match="^3 rewards for 2 inputs$"):
        monitor.update(np.zeros((2, 8, 8, 3), np.uint8), [0.1, 0.2, 0.3])
    with pytest.raises(UsageError, match=r"rewards must be one value per input, not of shape \(2, 1\)"):
        monitor.update(np.zeros((2, 8, 8, 3), np.uint8), [[0.1], [0.2]])
    report = monitor.update(np.zeros((2, 8, 8, 3), np.uint8), torch.tensor([0.1, 0.2]))
    assert report.stats["qinsight/reward_max"] == pytest.approx(0.2)


def test_unmeasured_images_are_counted_and_left_out():
    monitor = HackingMonitor(window=2, prefix="rl/")
    images = np.stack([photo(0, 16), photo(1, 16), photo(0, 16)]) / 255
    images[1, 0, 0, 0] = np.nan
    report = monitor.update(images, [0.5, float("nan"), 0.5])
    assert report.stats["rl/unmeasured"] == 1.0
    assert report.stats["rl/saturation"] == pytest.approx(saturation(photo(0, 16)))
    assert report.stats["rl/reward_mean"] == 0.5 and report.stats["rl/reward_std"] == 0.0
    everything_bad = monitor.update(np.full((1, 4, 4, 3), np.nan), [float("nan")])
    assert "rl/reward_mean" not in everything_bad.stats and "rl/saturation" not in everything_bad.stats


# -- the monitor's arithmetic, exactly ---------------------------------------------------------------------


def feed(monitor, batches, second=None, image=None):
    """Reports for batches of rewards (one list per step), on flat grey images, with the second judge's."""
    reports = []
    for k, rewards in enumerate(batches):
        images = np.full((len(rewards), 8, 8, 3), 100, np.uint8) if image is None else image(len(rewards))
        reports.append(monitor.update(images, rewards, None if second is None else second[k]))
    return reports


def test_the_defaults_are_the_documented_ones():
    monitor = HackingMonitor()
    settings = (monitor.window, monitor.baseline, monitor.rise, monitor.drift, monitor.follow)
    assert settings == (8, 8, 0.5, 1.0, 0.25) and (monitor.min_agreement, monitor.alpha) == (0.2, 0.01)
    assert monitor.second is None and monitor.prefix == "qinsight/"


def test_without_scipy_the_monitor_says_what_to_install(monkeypatch):
    import sys

    from qinsight_sdk.errors import MissingDependencyError

    monkeypatch.setitem(sys.modules, "scipy.stats", None)
    with pytest.raises(MissingDependencyError, match=r"^the monitor needs scipy: pip install 'qinsight\[eval\]'$"):
        HackingMonitor()


def test_a_second_judge_given_by_name_is_loaded_with_its_options(monkeypatch):
    from qinsight_sdk.rl import rewards as rewards_module

    loads = []

    def load(cls, model, subfolder, **options):
        loads.append((model, subfolder, options))
        return QualityJudge(ScriptedBackend(brightness_answer))

    monkeypatch.setattr(QualityJudge, "from_pretrained", classmethod(load))
    monkeypatch.setattr(rewards_module, "_SHARED", {})
    monitor = HackingMonitor("someone/judge", device="cpu", fps=4.0)
    assert isinstance(monitor.second, JudgeReward) and monitor.second.fps == 4.0
    assert loads == [("someone/judge", None, {"device": "cpu"})]


def test_drift_is_the_latest_window_against_the_first_batches_in_their_spread():
    monitor = HackingMonitor(window=2, baseline=2)
    reports = feed(monitor, [[0, 1], [0, 1], [1, 2], [1, 2], [3, 3], [3, 3]])
    assert "qinsight/drift_reward" not in reports[2].stats
    assert reports[3].stats["qinsight/drift_reward"] == pytest.approx((1.5 - 0.5) / 0.5)
    assert reports[4].stats["qinsight/drift_reward"] == pytest.approx((2.25 - 0.5) / 0.5)  # steps 3 and 4 only
    assert reports[5].stats["qinsight/drift_reward"] == pytest.approx((3 - 0.5) / 0.5)
    constant = feed(HackingMonitor(window=2, baseline=2), [[0.5] * 4, [0.5] * 4, [0.5] * 4, [0.6] * 4])
    assert constant[3].stats["qinsight/drift_reward"] == pytest.approx(0.05 / 1e-9)  # any change from a constant


def test_a_rise_must_be_large_and_beyond_chance_welch_s_test():
    early = [[-1.0, 1.0] * 15] * 2  # mean 0, spread 1, 60 values
    flat_second = [[0.5] * 30] * 2 + [[0.5] * 3] * 2
    lucky = feed(HackingMonitor(window=2, baseline=2), [*early, [0, 0, 0], [0, 0, 10]], flat_second)
    assert lucky[-1].stats["qinsight/drift_reward"] > 1.6 and lucky[-1].warnings == []  # one outlier (Welch p 0.18)
    real = feed(HackingMonitor(window=2, baseline=2), [*early, [2, 2, 3], [2, 3, 2]], flat_second)
    assert any(w.startswith("the second judge (given) moved +0.00") for w in real[-1].warnings)


def test_each_threshold_is_inclusive():
    early = [[0.0, 1.0] * 32] * 2  # mean 0.5, spread 0.5
    at_rise = [[0.25, 1.25] * 32] * 2  # exactly 0.5 of the spread up
    second_at_follow = [[0.0, 1.0] * 32] * 2 + [[0.0625, 1.0625] * 32] * 2  # exactly 0.25 of the reward's rise
    assert feed(HackingMonitor(window=2, baseline=2), early + at_rise, second_at_follow)[-1].warnings == []
    second_under = [[0.0, 1.0] * 32] * 2 + [[0.06, 1.06] * 32] * 2
    warned = feed(HackingMonitor(window=2, baseline=2), early + at_rise, second_under)[-1]
    assert list(warned.warnings) and warned.stats["qinsight/drift_reward"] == 0.5
    at_drift = HackingMonitor(window=2, baseline=2, drift=0.5, follow=0.0)  # the saturation rise: measured first
    images = [lambda n, v=v: np.stack([np.full((8, 8, 3), (100 + v, 100, 100), np.uint8)] * n) for v in (0, 0, 50, 50)]
    levels = [saturation(images[k](1)[0]) for k in (0, 2)]
    assert levels[1] > levels[0]
    reports = [at_drift.update(images[k](64), early_or_rise) for k, early_or_rise in enumerate(early + at_rise)]
    assert reports[-1].stats["qinsight/drift_saturation"] > 1e6 and any("saturation" in w for w in reports[-1].warnings)


def test_statistics_count_only_the_way_hacking_moves_them():
    darker = HackingMonitor(window=3, baseline=3)
    reports = run(
        6, lambda s, k: saturated(photo(100 * s + k, 32), factor=1.5 - s / 5), brightness_reward, monitor=darker
    )
    assert reports[-1].stats["qinsight/drift_saturation"] < -1  # saturation fell: not a hack
    assert not [w for w in reports[-1].warnings if w.startswith(("saturation", "colourfulness"))]


def test_a_significant_but_small_change_is_not_a_warning():
    monitor = HackingMonitor(window=2, baseline=2)
    rng = np.random.default_rng(0)
    base = [np.clip(rng.normal(0.5, 0.1, 400), 0, 1) for _ in range(2)]
    risen = [np.clip(rng.normal(0.53, 0.1, 400), 0, 1) for _ in range(2)]  # 0.3 of the spread: p tiny, too small
    second = [b.copy() for b in base] * 2
    reports = feed(monitor, [*base, *risen], second, image=lambda n: np.full((n, 4, 4, 3), 90, np.uint8))
    assert 0.2 < reports[-1].stats["qinsight/drift_reward"] < 0.45 and reports[-1].warnings == []


def test_agreement_leaves_out_unmeasured_pairs_and_its_bound_is_inclusive():
    from scipy.stats import spearmanr

    rewards = [[0.1, 0.2, 0.3, 0.4]] * 2 + [[0.9, 0.5, 0.7, 0.8]] * 2
    second = [[0.1, 0.2, 0.3, 0.4]] * 2 + [[0.8, 0.6, float("nan"), 0.4]] * 2
    report = feed(HackingMonitor(window=2, baseline=2, follow=-10), rewards, second)[-1]
    expected = spearmanr([0.9, 0.5, 0.8] * 2, [0.8, 0.6, 0.4] * 2).statistic
    assert report.stats["qinsight/agreement_srcc"] == pytest.approx(expected)
    at_bound = feed(HackingMonitor(window=2, baseline=2, follow=-10, min_agreement=expected), rewards, second)[-1]
    assert at_bound.warnings == []
    above = feed(HackingMonitor(window=2, baseline=2, follow=-10, min_agreement=expected + 1e-9), rewards, second)[-1]
    assert any(w.startswith("the reward and the second judge agree at SRCC") for w in above.warnings)


def test_videos_are_found_by_their_shape_or_by_the_flag():
    videos = (
        np.stack([np.stack([photo(k, 16) for k in range(4)]), np.stack([saturated(photo(k, 16)) for k in range(4)])])
        / 255
    ).astype(np.float32)
    expected = image_statistics(videos, video=True)["saturation"].mean()
    assert HackingMonitor(window=2).update(videos, [0.1, 0.2]).stats["qinsight/saturation"] == pytest.approx(expected)
    listed = HackingMonitor(window=2).update(list(videos), [0.1, 0.2], video=True)
    assert listed.stats["qinsight/saturation"] == pytest.approx(expected)
    pil = [Image.fromarray(photo(k, 16).astype(np.uint8)) for k in range(2)]  # a list of images: no ndim
    assert HackingMonitor(window=2).update(pil, [0.1, 0.2]).stats["qinsight/unmeasured"] == 0.0


def test_rewards_from_a_graph_and_the_second_judge_s_shape():
    monitor = HackingMonitor(window=2)
    rewards = torch.tensor([0.25, 0.75], requires_grad=True) * 1.0
    report = monitor.update(np.zeros((2, 8, 8, 3), np.uint8), rewards, second_rewards=torch.tensor([0.5, 0.5]))
    assert report.stats["qinsight/reward_mean"] == 0.5 and report.stats["qinsight/second_mean"] == 0.5
    with pytest.raises(UsageError, match=r"^second_rewards must be one value per input, not of shape \(2, 1\)$"):
        monitor.update(np.zeros((2, 8, 8, 3), np.uint8), [0.1, 0.2], second_rewards=[[0.1], [0.2]])


def test_a_monitor_of_unmeasurable_batches_warns_of_nothing_and_raises_no_numpy_warning():
    import warnings

    monitor = HackingMonitor(window=2, baseline=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        reports = feed(monitor, [[float("nan")] * 2] * 5, image=lambda n: np.full((n, 4, 4, 3), np.nan))
    assert all(r.warnings == [] for r in reports)
    assert set(reports[-1].stats) == {"qinsight/unmeasured", "qinsight/hacking_warning"}
