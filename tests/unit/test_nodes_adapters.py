"""The node adapters without ComfyUI: conversions, reordering, gating, model folder discovery."""

import dataclasses
import importlib
import importlib.util
import shutil
import sys
from pathlib import Path

import pytest
import torch

from qinsight_sdk.testing import build_tiny_rali

ROOT = Path(__file__).resolve().parents[2]
# the pack as ComfyUI imports it: a package whose nodes reach the SDK by relative imports
spec = importlib.util.spec_from_file_location(
    "qinsight_pack", ROOT / "__init__.py", submodule_search_locations=[str(ROOT)]
)
sys.modules.setdefault("qinsight_pack", importlib.util.module_from_spec(spec))
spec.loader.exec_module(sys.modules["qinsight_pack"])
adapters = importlib.import_module("qinsight_pack.nodes.adapters")
HUB = ("ByteDance/Q-Insight/score_degradation", "ByteDance/Q-Insight/comparison")


def test_image_batches_are_normalised_defensively():
    batch = adapters.as_image_batch(torch.rand(2, 8, 8, 3, dtype=torch.bfloat16))
    assert batch.dtype == torch.float32 and batch.shape == (2, 8, 8, 3)
    assert adapters.as_image_batch(torch.rand(8, 8, 3)).shape == (1, 8, 8, 3)
    with pytest.raises(ValueError, match="IMAGE batch"):
        adapters.as_image_batch(torch.rand(0, 8, 8, 3))
    with pytest.raises(ValueError, match="IMAGE tensor"):
        adapters.as_image_batch([1, 2])
    # bicubic and lanczos scaling in ComfyUI overshoot 0..1 at edges; NaN is left for the SDK to report
    overshot = adapters.as_image_batch(torch.tensor([-0.0105, 0.5, 1.12, float("nan")]).view(1, 1, 4, 1))
    assert overshot.flatten()[:3].tolist() == [0.0, 0.5, 1.0] and overshot.flatten()[3].isnan()


def test_latents_and_masks_follow_the_images():
    samples = torch.arange(4.0).view(4, 1, 1, 1).expand(4, 4, 2, 2).clone()
    latent = {"samples": samples, "noise_mask": torch.arange(4.0).view(4, 1, 1), "batch_index": [10, 11, 12, 13]}
    chosen = adapters.take_latent(latent, [2, 0])
    assert chosen["samples"][:, 0, 0, 0].tolist() == [2.0, 0.0]
    assert chosen["noise_mask"][:, 0, 0].tolist() == [2.0, 0.0] and chosen["batch_index"] == [12, 10]
    assert latent["samples"].shape[0] == 4  # the input is untouched
    masks = torch.arange(4.0).view(4, 1, 1).expand(4, 3, 3)
    assert adapters.take_mask(masks, [3, 1], 4)[:, 0, 0].tolist() == [3.0, 1.0]
    shared = torch.ones(1, 3, 3)
    assert adapters.take_mask(shared, [3, 1], 4) is shared
    assert adapters.take_latent(None, [0]) is None and adapters.take_mask(None, [0], 1) is None


def test_batch_size_mismatches_are_refused():
    images = torch.rand(3, 8, 8, 3)
    with pytest.raises(ValueError, match="latent batch has 2"):
        adapters.check_batch_sizes(images, {"samples": torch.zeros(2, 4, 1, 1)}, None)
    with pytest.raises(ValueError, match="mask batch has 2"):
        adapters.check_batch_sizes(images, None, torch.zeros(2, 8, 8))
    adapters.check_batch_sizes(images, {"samples": torch.zeros(3, 4, 1, 1)}, torch.zeros(1, 8, 8))


def test_threshold_split_and_error_messages():
    assert adapters.split_by_threshold([3.0, 4.5, 2.9, 3.5], 3.5) == ([1, 3], [0, 2])
    assert adapters.split_by_threshold([1.0], 2.0) == ([], [0])
    with pytest.raises(ValueError, match=r"failed for 1 of 3 images; image 2: contains NaN"):
        adapters.raise_for_errors({2: "contains NaN"}, 3, "scoring")
    adapters.raise_for_errors({}, 3, "scoring")
    with pytest.raises(ValueError, match=r"^ranking failed for 2 of 6 videos; video 2: short; video 6: broken$"):
        adapters.raise_for_errors({6: "broken", 2: "short"}, 6, "ranking", "video")


def test_model_folders_and_choices(tmp_path):
    root = tmp_path / "quality_models"
    for name in ("Q-Insight/score_degradation", "Q-Insight/comparison", "my-judge"):
        (root / name).mkdir(parents=True)
        (root / name / "config.json").write_text("{}")
    (root / "notes").mkdir()
    build_tiny_rali(root / "Q-Insight" / "RALI")  # its layout, not its CLIP folder's config.json, makes it one
    folders = adapters.model_folders([root, tmp_path / "missing"])
    assert folders == ["Q-Insight/RALI", "Q-Insight/comparison", "Q-Insight/score_degradation", "my-judge"]
    assert adapters.resolve_model_choice("my-judge", [root], HUB) == (str(root / "my-judge"), None)
    # what is listed loads: RALI's folder has no config.json of its own; its CLIP folder is not a choice
    assert adapters.resolve_model_choice("Q-Insight/RALI", [tmp_path / "missing", root], HUB) == (
        str(root / "Q-Insight" / "RALI"),
        None,
    )
    with pytest.raises(ValueError, match="neither"):
        adapters.resolve_model_choice("Q-Insight/RALI/best", [root], HUB)
    assert adapters.resolve_model_choice("ByteDance/Q-Insight/comparison", [root], HUB) == (
        "ByteDance/Q-Insight",
        "comparison",
    )
    with pytest.raises(ValueError, match="neither"):
        adapters.resolve_model_choice("../etc", [root], HUB)
    shutil.rmtree(root / "my-judge")
    with pytest.raises(ValueError, match="neither"):
        adapters.resolve_model_choice("my-judge", [root], HUB)


def test_hub_ids():
    assert adapters.parse_hub_id(" ByteDance/Q-Insight/comparison ") == ("ByteDance/Q-Insight", "comparison")
    assert adapters.parse_hub_id("me/judge") == ("me/judge", None)
    for bad in ("judge", "me/../x", ""):
        with pytest.raises(ValueError, match="hf_id"):
            adapters.parse_hub_id(bad)


def test_labels_shown_for_no_distortion_and_no_verdict():
    assert adapters.shown_label("blur", None) == "blur"
    assert adapters.shown_label(None, None) == "none"  # the model found no distortion
    assert adapters.shown_label(None, "no answer") == "unknown"  # the model gave no readable verdict


def test_each_image_is_reported_on_one_line_with_its_reasoning_cut_short():
    from qinsight_sdk.judging.results import ScoreResult

    lines = adapters.describe_scores(
        [ScoreResult(score=3.914, std=0.25, reasoning="sharp   and\nclean " * 40), ScoreResult(error="image is 1x1")]
    )
    assert lines[0].startswith("image 0: 3.91 ± 0.25 — sharp and clean sharp")
    assert "\n" not in lines[0] and len(lines[0]) < 160 and lines[0].endswith("…")
    assert lines[1].startswith("image 1: no score") and "1x1" in lines[1]


def test_annotated_images_keep_size_and_order_and_change_only_where_the_label_is():
    batch = torch.zeros(2, 64, 96, 3)
    batch[1] += 1.0
    drawn = adapters.annotated(batch, ["3.91", "#1  4.50"])
    assert drawn.shape == (2, 64, 96, 3) and drawn.dtype == torch.float32
    assert not torch.equal(drawn[0, :12, :40], batch[0, :12, :40])  # the label, top left
    assert torch.equal(drawn[:, -8:, -8:], batch[:, -8:, -8:])  # the far corner untouched
    assert drawn[1, -1, -1].tolist() == [1.0, 1.0, 1.0]  # each image stays itself
    round_trip = adapters.from_pil(adapters.to_pil(torch.rand(3, 5, 7, 3)))
    assert round_trip.shape == (3, 5, 7, 3)


def test_settings_recorded_from_the_loaded_judge(tmp_path):
    from types import SimpleNamespace

    from qinsight_sdk import ImageBounds
    from qinsight_sdk.judging.decoding import DecodingOptions
    from qinsight_sdk.judging.profiles import QINSIGHT
    from qinsight_sdk.judging.prompts import PromptOrder

    judge = SimpleNamespace(
        profile=QINSIGHT,
        prompt_order=PromptOrder("image_first"),
        backend=SimpleNamespace(dtype=torch.bfloat16, quantization=None),
        image_bounds=ImageBounds(max_pixels=100_000),
        decoding=DecodingOptions(),
    )
    fast = adapters.record_settings(str(tmp_path), None, judge, mode="fast")
    assert fast == {
        "model": str(tmp_path.resolve()),
        "subfolder": None,
        "revision": None,
        "profile": "q-insight",
        "dtype": "bfloat16",
        "prompt_order": "image_first",
        "max_pixels": 100_000,
        "mode": "fast",
    }
    judge.backend.quantization = "4bit"
    reason = adapters.record_settings("ByteDance/Q-Insight", "score_degradation", judge, mode="reason")
    assert reason["model"] == "ByteDance/Q-Insight" and reason["quantization"] == "4bit"
    assert reason["decoding"] == dataclasses.asdict(DecodingOptions()) and "decoding" not in fast
    assert "mode" not in adapters.record_settings("m", None, judge)
    batch = adapters.JudgedBatch([SimpleNamespace(score=2.5), SimpleNamespace(score=4.0)], fast)
    assert batch.scores == [2.5, 4.0]


def test_frame_batches_are_read_frame_by_frame_clamped_and_their_rate_checked():
    from qinsight_sdk import Video
    from qinsight_sdk.io.videos import load_video

    images = torch.rand(30, 40, 56, 3, dtype=torch.float16) * 1.1 - 0.02  # ComfyUI's scalers overshoot
    frames = adapters.ClampedFrames(images)
    assert frames.shape == (30, 40, 56, 3) and frames.ndim == 4 and len(frames) == 30
    assert frames[3].dtype == torch.float32 and 0 <= frames[3].min() and frames[3].max() <= 1
    assert torch.equal(frames[3], images[3].float().clamp(0, 1))
    video = adapters.as_video(images, 12, None, file_backed=False)
    assert isinstance(video, Video) and video.fps == 12.0
    clip, whole = load_video(video), load_video(Video(images.float().clamp(0, 1), 12.0))
    assert clip.indices == whole.indices == (0, 10, 19, 29) and (clip.frames == whole.frames).all()
    assert adapters.as_video(images, 12, {"loaded_fps": 8}, file_backed=False).fps == 8.0  # VHS's info wins
    for bad in (0, -1.0, float("nan"), float("inf"), True, "24"):
        with pytest.raises(ValueError, match="fps must be a positive number"):
            adapters.frame_rate(bad, None)
    with pytest.raises(ValueError, match=r"IMAGE batch of frames \(T, H, W, C\), got \(40, 56, 3\)"):
        adapters.ClampedFrames(images[0])
    with pytest.raises(ValueError, match="expected a VIDEO or an IMAGE batch of frames, got str"):
        adapters.as_video("clip.mp4", None, None, file_backed=False)


def test_videos_from_a_file_are_streamed_and_others_read_as_frames():
    import io
    from fractions import Fraction
    from types import SimpleNamespace

    class FromFile:
        def __init__(self, source):
            self.source = source

        def get_stream_source(self):
            return self.source

        def get_components(self):
            raise AssertionError("a file-backed VIDEO must not be decoded whole")

    assert adapters.as_video(FromFile("/videos/a.mp4"), None, None, file_backed=True) == "/videos/a.mp4"
    assert adapters.as_video(FromFile(io.BytesIO(b"mp4 bytes")), None, None, file_backed=True) == b"mp4 bytes"
    images = torch.rand(4, 8, 8, 3)
    components = SimpleNamespace(images=images, frame_rate=Fraction(30000, 1001))
    video = adapters.as_video(SimpleNamespace(get_components=lambda: components), 5, None, file_backed=False)
    assert video.fps == pytest.approx(29.97, abs=1e-3) and video.frames.images is images


def test_video_scores_are_reported_with_their_dimensions_and_frames_annotated():
    import numpy as np

    from qinsight_sdk.judging.results import ScoreResult

    assert adapters.video_score_text(ScoreResult(score=61.25)) == "61.2/100"
    aigc = ScoreResult(score=50.0, dimensions={"spatial": 40.4, "temporal": 59.6, "consistency": 50.0})
    assert adapters.video_score_text(aigc) == "50.0/100, spatial 40, temporal 60, consistency 50"
    assert adapters.video_score_text(ScoreResult(error="no number")) == "no score (no number)"
    frames = np.full((4, 56, 84, 3), 128, np.uint8)
    shown = adapters.annotated_frames(frames, "61.2")
    assert shown.shape == (4, 56, 84, 3) and shown.dtype == torch.float32
    assert all(not torch.allclose(shown[k], torch.full_like(shown[k], 128 / 255)) for k in range(4))
