"""Video judging without a model: the video judges' answer readers, two-digit fast scores, the rotary
position rule and its installation, and QualityJudge's methods on videos with a scripted backend."""

import itertools
import random

import numpy as np
import pytest
import torch
from rope_reference import reference_rope_index

from qinsight_sdk import QualityJudge, Video
from qinsight_sdk.backends.base import TwoDigitDistribution
from qinsight_sdk.backends.qwen2_5_vl.positions import install_positions, rope_index
from qinsight_sdk.errors import UsageError
from qinsight_sdk.io.videos import VideoClip
from qinsight_sdk.judging.parsing import parse_video_comparison, parse_video_dimensions, parse_video_score
from qinsight_sdk.testing import ScriptedBackend, video_frames

# -- answer readers ---------------------------------------------------------------------------------------------

FAR_OUT = "rating {} is far outside the judge's scale 0-100 (more than 25 beyond it): the answer is broken"


@pytest.mark.parametrize(
    "text, score, error",
    [
        ("<think>fine</think>\n<answer>72.5</answer>", 72.5, None),
        ("<answer> 64 </answer>", 64.0, None),
        ("<answer>The score is 55.25 out of 100</answer>", 55.25, None),
        ("<answer>1,00</answer>", 100.0, None),  # separators dropped, as the family's reward drops them
        ("<answer>.5</answer>", 0.5, None),
        ("<answer>118</answer>", 118.0, None),  # within a quarter of the span beyond the scale: as written
        ("<think>x</think>42", 42.0, None),  # no tags: the tail, when it is the number alone
        ("<think>x</think>about 42", None, "no number found in the answer (no <answer> block found)"),
        ("<answer>126</answer>", None, FAR_OUT.format(126)),
        ("<answer>good</answer>", None, "no number found in the answer"),
        ("<think>rated 80", None, "no number found in the answer (no <answer> block found)"),
    ],
)  # fmt: skip
def test_natural_answers(text, score, error):
    parsed = parse_video_score(text)
    assert (parsed.score, parsed.error) == (score, error)


def test_natural_answers_keep_the_reasoning():
    assert parse_video_score("<think>sharp, steady</think><answer>80</answer>").reasoning == "sharp, steady"


@pytest.mark.parametrize(
    "text, dimensions, error",
    [
        ('<answer>{"spatial": 40.48, "temporal": 32.63, "consistency": 56.33}</answer>',
         {"spatial": 40.48, "temporal": 32.63, "consistency": 56.33}, None),
        ('<answer>"spatial": 40.48, "temporal": 32.63, "consistency": 56.33</answer>',
         {"spatial": 40.48, "temporal": 32.63, "consistency": 56.33}, None),  # as rewarded: no braces
        ("<answer>{'Spatial': 10, 'TEMPORAL': 20, 'consistency': 30,}</answer>",
         {"spatial": 10.0, "temporal": 20.0, "consistency": 30.0}, None),
        ('<answer>{"spatial": 40, "temporal": 30}</answer>', {"spatial": 40.0, "temporal": 30.0},
         "no consistency score"),
        ('<answer>{"spatial": 40, "temporal": 300, "consistency": 9}</answer>', {"spatial": 40.0, "consistency": 9.0},
         "temporal: " + FAR_OUT.format(300)),
        ("<answer>all good</answer>", None, "no spatial, temporal or consistency score in the answer"),
        ("no tags at all", None, "no spatial, temporal or consistency score in the answer (no <answer> block found)"),
    ],
)  # fmt: skip
def test_aigc_answers(text, dimensions, error):
    parsed = parse_video_dimensions(text)
    assert (parsed.dimensions, parsed.error) == (dimensions, error)
    if error is None:
        assert parsed.score == pytest.approx(sum(dimensions.values()) / 3)
    else:
        assert parsed.score is None


@pytest.mark.parametrize(
    "text, winner, error",
    [
        ("<answer>A</answer>", "A", None),
        ("<answer> b </answer>", "B", None),
        ("<answer>Video A</answer>", "A", None),
        ("<think>B is blurry</think><answer>Video B.</answer>", "B", None),
        ("<answer>I prefer Video B overall</answer>", "B", None),
        ("<answer>Video A or Video B</answer>", None, "the answer names both Video A and Video B"),
        ("<answer>Similar</answer>", None, "the answer names neither Video A nor Video B"),
        ("Video A", "A", None),
        ("nothing", None, "the answer names neither Video A nor Video B (no <answer> block found)"),
    ],
)
def test_comparison_answers(text, winner, error):
    parsed = parse_video_comparison(text)
    assert (parsed.winner, parsed.error) == (winner, error)


def test_readers_never_raise_on_odd_text():
    for text in ["", "<answer>", "</answer><answer>", "<answer>{{{</answer>", "\x00" * 10, "<answer>1e999</answer>"]:
        for read in (parse_video_score, parse_video_dimensions, parse_video_comparison):
            read(text)


# -- two-digit fast scores ---------------------------------------------------------------------------------------


def test_two_digit_expectation_is_the_mean_over_all_ninety_ratings():
    rng = np.random.default_rng(0)
    tens = torch.tensor(rng.dirichlet(np.ones(9)))
    units = torch.tensor(rng.dirichlet(np.ones(10), size=9))
    values = [(10 * d + e, float(tens[d - 1] * units[d - 1, e])) for d in range(1, 10) for e in range(10)]
    mean = sum(v * p for v, p in values)
    std = sum(p * (v - mean) ** 2 for v, p in values) ** 0.5
    found = TwoDigitDistribution(tens, units).expected()
    assert found == (pytest.approx(mean, abs=1e-12), pytest.approx(std, abs=1e-12))
    certain = torch.zeros(9, dtype=torch.float64)
    certain[6] = 1.0
    fives = torch.zeros(9, 10, dtype=torch.float64)
    fives[:, 5] = 1.0
    assert TwoDigitDistribution(certain, fives).expected() == (75.0, 0.0)


# -- rotary positions --------------------------------------------------------------------------------------------

IMAGE, VIDEO, START, END, PAD = 90, 91, 92, 93, 0
RULE = {"image_token_id": IMAGE, "video_token_id": VIDEO, "merge": 2, "tokens_per_second": 2}


def row_of(parts):
    """Token ids for a row: ints are text tokens, ("image" | "video", grid) a vision block."""
    ids, grids = [], {"image": [], "video": []}
    for part in parts:
        if isinstance(part, int):
            ids += [7] * part
            continue
        kind, grid = part
        t, h, w = grid
        ids += [START] + [IMAGE if kind == "image" else VIDEO] * (t * h * w // 4) + [END]
        grids[kind].append(grid)
    return ids, grids


def batch_of(rows):
    built = [row_of(parts) for parts in rows]
    width = max(len(ids) for ids, _ in built)
    input_ids = torch.full((len(rows), width), PAD)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for k, (ids, _) in enumerate(built):
        input_ids[k, width - len(ids) :] = torch.tensor(ids)
        mask[k, width - len(ids) :] = 1
    images = [g for _, grids in built for g in grids["image"]]
    videos = [g for _, grids in built for g in grids["video"]]
    return input_ids, mask, torch.tensor(images) if images else None, torch.tensor(videos) if videos else None


ROWS = [
    [5, ("video", (8, 22, 22)), 9],  # 16 frames, square: the text after starts past the temporal positions
    [3, ("video", (2, 16, 30)), 4],
    [2, ("image", (1, 8, 12)), 3, ("video", (4, 12, 20)), 2],
    [4, ("image", (1, 4, 4)), ("image", (1, 6, 2)), 6],
    [12],
]


@pytest.mark.parametrize("seconds", [1.0, 0.5, 2.0])
def test_positions_follow_the_4_51_3_rule(seconds):
    input_ids, mask, images, videos = batch_of(ROWS)
    per_video = torch.full((len(videos),), seconds)
    found, deltas = rope_index(input_ids, mask, images, videos, per_video, **RULE)
    expected, expected_deltas = reference_rope_index(
        input_ids, mask, images, videos, per_video, ids=(IMAGE, VIDEO, START), merge=2, tokens_per_second=2
    )
    assert torch.equal(found, expected)
    assert deltas[:, 0].tolist() == expected_deltas


def test_odd_rows_follow_the_rule_too():
    """Three vision blocks in a row, a row starting with image tokens, a row of padding only, no mask."""
    input_ids, mask, images, videos = batch_of([[1, ("image", (1, 4, 4)), 1, ("image", (1, 2, 6)), 1,
                                                 ("image", (1, 4, 2)), 2], [3]])  # fmt: skip
    mask[1] = 0  # a row of padding only: no positions, a delta of 0
    leading = torch.tensor([[IMAGE] * 4 + [7, 7]])
    found, deltas = rope_index(input_ids, mask, images, None, None, **RULE)
    expected, expected_deltas = reference_rope_index(
        input_ids[:1], mask[:1], images, None, None, ids=(IMAGE, VIDEO, START), merge=2, tokens_per_second=2
    )
    assert found.dtype == torch.long and torch.equal(found[:, :1], expected)
    assert deltas[:, 0].tolist() == [expected_deltas[0], 0] and (found[:, 1] == 1).all()
    first, _ = rope_index(leading, None, torch.tensor([[1, 4, 4]]), None, None, **RULE)
    assert first[0, 0].tolist() == [0, 0, 0, 0, 2, 3]
    assert first[1, 0].tolist() == [0, 0, 1, 1, 2, 3] and first[2, 0].tolist() == [0, 1, 0, 1, 2, 3]
    unmasked, _ = rope_index(input_ids[:1], None, images, None, None, **RULE)
    assert torch.equal(unmasked, found[:, :1])


def test_without_seconds_per_grid_a_video_takes_one_second_per_pair():
    input_ids, mask, images, videos = batch_of(ROWS[:2])
    assert torch.equal(
        rope_index(input_ids, mask, images, videos, None, **RULE)[0],
        rope_index(input_ids, mask, images, videos, torch.ones(2), **RULE)[0],
    )


class Original:
    """A model whose get_rope_index answers in a release's convention: deltas counting the padding (4.x)
    or not (5.x), called positionally (4.51.3) or by keyword."""

    def __init__(self, padded, keywords):
        self.padded, self.keywords, self.calls = padded, keywords, 0
        self.config = type("Config", (), {"image_token_id": IMAGE, "video_token_id": VIDEO})()
        self.config.vision_start_token_id, self.config.vision_end_token_id = START, END
        self.config.vision_config = type("Vision", (), {"spatial_merge_size": 2, "tokens_per_second": 2})()
        outer = self

        if keywords == "kwargs":  # everything but the ids by keyword, as a wrapper of the method would take it

            def get_rope_index(input_ids, **kwargs):
                return outer.answer(input_ids, kwargs.get("attention_mask"), kwargs.get("image_grid_thw"), None)
        elif keywords:  # 5.x: token types required, and they must mark the image tokens

            def get_rope_index(input_ids, mm_token_type_ids, image_grid_thw=None, video_grid_thw=None,
                               second_per_grid_ts=None, attention_mask=None, **kwargs):  # fmt: skip
                assert torch.equal(mm_token_type_ids.bool(), (input_ids == IMAGE) | (input_ids == VIDEO))
                return outer.answer(input_ids, attention_mask, image_grid_thw, video_grid_thw)
        else:

            def get_rope_index(input_ids, image_grid_thw=None, video_grid_thw=None, second_per_grid_ts=None,
                               attention_mask=None):  # fmt: skip
                return outer.answer(input_ids, attention_mask, image_grid_thw, video_grid_thw)

        self.get_rope_index = get_rope_index

    def answer(self, input_ids, attention_mask, image_grid_thw, video_grid_thw):
        self.calls += 1
        positions, deltas = rope_index(input_ids, attention_mask, image_grid_thw, video_grid_thw, None, **RULE)
        if self.padded:
            deltas = deltas - (attention_mask.shape[1] - attention_mask.sum(dim=1, keepdim=True))
        return positions * 0, deltas  # positions of its own (wrong here): replaced


@pytest.mark.parametrize("padded, keywords", [(True, False), (True, True), (False, True), (False, "kwargs")])
def test_installed_positions_keep_the_release_s_delta_convention(padded, keywords):
    model = Original(padded, keywords)
    original = model.get_rope_index
    install_positions(model)
    assert model.get_rope_index is not original and model.calls == 1  # the probe asked the original once
    input_ids, mask, images, videos = batch_of(ROWS)
    seconds = torch.full((len(videos),), 0.5)
    arguments = (input_ids, images, videos, seconds, mask)
    if keywords:
        found, deltas = model.get_rope_index(
            input_ids,
            image_grid_thw=images,
            video_grid_thw=videos,
            second_per_grid_ts=seconds,
            attention_mask=mask,
            mm_token_type_ids=None,
        )
    else:
        found, deltas = model.get_rope_index(*arguments)
    expected, unpadded = rope_index(input_ids, mask, images, videos, seconds, **RULE)
    padding = (mask.shape[1] - mask.sum(dim=1, keepdim=True)).long()
    assert torch.equal(found, expected)
    assert torch.equal(deltas, unpadded - padding if padded else unpadded)


def test_the_method_is_installed_on_the_inner_model_where_it_lives():
    outer = Original(False, True)
    inner = Original(False, True)
    outer.model = inner
    outer_method = outer.get_rope_index
    install_positions(outer)
    assert outer.get_rope_index is outer_method and inner.calls == 1
    generation = Original(True, False)  # 4.51.3: the inner model is the text model, without the method
    generation.model = object()
    install_positions(generation)
    assert generation.calls == 1


def test_token_ids_kept_on_the_text_config_are_found():
    """transformers 5 keeps some token ids on the text config only."""
    model = Original(False, True)
    text = type("Text", (), {"image_token_id": IMAGE, "video_token_id": VIDEO})()
    model.config.image_token_id = model.config.video_token_id = None
    model.config.text_config = text
    install_positions(model)
    input_ids, mask, images, videos = batch_of(ROWS[:3])
    found, _ = model.get_rope_index(input_ids, None, images, videos, None, mask)
    assert torch.equal(found, rope_index(input_ids, mask, images, videos, None, **RULE)[0])


# -- the judge's methods on videos -------------------------------------------------------------------------------


def brightness(conversation, clips):
    """A scripted video judge: the natural score is 100 x the first clip's mean level; comparisons pick the
    brighter of two."""
    levels = [float(clip.frames.mean()) / 255 for clip in clips]
    if len(clips) == 2:
        return "<answer>" + ("A" if levels[0] > levels[1] else "B") + "</answer>"
    return f"<think>ok</think><answer>{100 * levels[0]:.2f}</answer>"


def test_a_video_judge_scores_videos_in_input_order_with_errors_per_item():
    judge = QualityJudge(ScriptedBackend(brightness), profile="vqinsight-naturalvideo")
    assert judge.judges_video
    seen = []
    results = judge.score(
        [Video(video_frames(0.2, 1)), "missing.mp4", video_frames(0.7, 2), np.zeros((3, 3))],
        on_result=lambda index, result: seen.append(index),
    )
    assert [round(r.score) if r.ok else None for r in results] == [20, None, 70, None]
    assert results[1].error == "missing.mp4: file not found"
    assert "one image, not a video" in results[3].error
    assert seen == [0, 1, 2, 3]
    one = judge.score(Video(video_frames(0.5, 3)))
    assert isinstance(one.score, float) and round(one.score) == 50
    batch = torch.from_numpy(np.stack([video_frames(level, k) for k, level in enumerate((0.1, 0.9))]))
    assert [round(r.score) for r in judge.score(batch.permute(0, 1, 4, 2, 3) / 255.0)] == [10, 90]


def test_a_video_judge_s_reward_is_its_score_over_its_scale():
    judge = QualityJudge(ScriptedBackend(brightness), profile="vqinsight-naturalvideo")
    rewards = judge.reward([Video(video_frames(0.25, 1)), "missing.mp4"])
    assert rewards.tolist() == pytest.approx([0.25, 0.0], abs=0.01)


def test_fast_video_scores_come_from_two_digits():
    judge = QualityJudge(ScriptedBackend(brightness), profile="vqinsight-naturalvideo")
    results = judge.score([Video(video_frames(level, 1)) for level in (0.2, 0.61)], mode="fast")
    assert [(r.score, r.std) for r in results] == [(20.0, 0.0), (61.0, 0.0)]  # on 0-100, not mapped to 1-5


def test_fast_mode_needs_a_backend_that_reads_two_digits():
    class NoDigits(ScriptedBackend):
        two_digit_distributions = None

    judge = QualityJudge(NoDigits(brightness), profile="vqinsight-naturalvideo")
    with pytest.raises(UsageError, match="cannot read two-digit ratings, so 'vqinsight-naturalvideo' has no fast mode"):
        judge.score(Video(video_frames(0.5, 1)), mode="fast")


def test_the_comparison_judge_compares_and_ranks_videos():
    judge = QualityJudge(ScriptedBackend(brightness), profile="vqinsight-comp")
    dark, bright = Video(video_frames(0.2, 1)), Video(video_frames(0.8, 2))
    assert judge.compare(dark, bright).winner == "B"
    assert judge.compare(bright, dark, both_orders=True).winner == "A"
    with pytest.raises(UsageError, match="'vqinsight-comp' compares two without a reference"):
        judge.compare(dark, bright, reference=dark)
    levels = [0.3, 0.9, 0.1, 0.6]
    ranking = judge.rank([Video(video_frames(level, k)) for k, level in enumerate(levels)], strategy="tournament")
    assert list(ranking.order) == [1, 3, 0, 2]


def test_an_image_judge_still_takes_a_4_d_array_as_a_batch_of_images():
    judge = QualityJudge(ScriptedBackend(lambda c, images: '<answer>{"rating": 3}</answer>'))
    assert not judge.judges_video
    assert len(judge.score(np.zeros((3, 28, 28, 3), dtype=np.uint8))) == 3


def test_a_loaded_clip_is_judged_as_it_is():
    judge = QualityJudge(ScriptedBackend(brightness), profile="vqinsight-naturalvideo")
    clip = judge.load_video(Video(video_frames(0.4, 1)))
    assert isinstance(clip, VideoClip) and judge.load_video(clip) is clip
    assert round(judge.score(clip).score) == 40


def test_the_cost_of_a_video_is_its_tokens():
    judge = QualityJudge(ScriptedBackend(brightness), profile="vqinsight-naturalvideo")
    clip = VideoClip(np.zeros((6, 56, 84, 3), dtype=np.uint8), 2.0, 6, tuple(range(6)))
    assert judge._cost(clip) == 18
    seen = []

    class Counting(ScriptedBackend):
        def encode(self, conversations, images, answer_prefix="", template_options=None):
            seen.append(len(conversations))
            return super().encode(conversations, images, answer_prefix, template_options)

    small = QualityJudge(Counting(brightness), profile="vqinsight-naturalvideo", max_batch_tokens=2 * 560)
    small.score([Video(video_frames(0.5, k)) for k in range(4)])  # 8 frames of 280x392: 4 x 140 tokens each
    assert seen == [2, 2]


def test_video_folders_are_scanned_for_videos(tmp_path):
    from qinsight_sdk import cli

    for name in ("a.mp4", "b.MKV", "c.gif", "d.png", "e.txt", "f.webm"):
        (tmp_path / name).write_bytes(b"x")
    found = [p.split("/")[-1] for p in cli.expand_paths([str(tmp_path)], recursive=False, media="video")]
    assert found == ["a.mp4", "b.MKV", "c.gif", "f.webm"]
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "x.png").write_bytes(b"x")
    with pytest.raises(UsageError, match="no videos found in folder"):
        cli.expand_paths([str(empty)], recursive=False, media="video")


def test_the_scripted_brightness_judge_is_deterministic():
    rng = random.Random(0)
    clips = [Video(video_frames(rng.random(), k)) for k in range(3)]
    judge = QualityJudge(ScriptedBackend(brightness), profile="vqinsight-naturalvideo")
    first = [r.score for r in judge.score(clips)]
    assert first == [r.score for r in judge.score(clips, batch_size=1)]
    assert list(itertools.chain(first)) == first


def test_the_tiny_video_judge_is_built_trained_only(tmp_path, capsys):
    from qinsight_sdk.testing.__main__ import main

    with pytest.raises(SystemExit):
        main([str(tmp_path / "judge"), "--video"])
    assert "--video needs --trained" in capsys.readouterr().err
    assert not (tmp_path / "judge").exists()


def test_the_service_judges_videos_sent_as_bytes(tmp_path):
    """A video judge behind ``qinsight serve``: videos arrive as bytes (RemoteJudge sends a file's bytes),
    pass the door's pixel check (it reads image headers only; a video's limits are checked as it loads),
    and are judged per call, a broken one its own error."""
    from samples import write_video

    from qinsight_sdk.service.judging import judge_calls
    from qinsight_sdk.service.requests import check_pixels
    from qinsight_sdk.service.settings import Call, ServiceSettings

    clips = [write_video(tmp_path / f"{k}.mp4", video_frames(level, k), fps=2).read_bytes() for k, level in
             enumerate((0.3, 0.8))]  # fmt: skip
    calls = [Call("score", [clips[0], b"not a video"]), Call("score", [clips[1]]), Call("reward", clips)]
    for call in calls:
        check_pixels(call, ServiceSettings())
    judge = QualityJudge(ScriptedBackend(brightness), profile="vqinsight-naturalvideo")
    first, second, rewards = judge_calls(judge, calls)
    assert round(first["results"][0]["score"]) == 30 and "not a readable video" in first["results"][1]["error"]
    assert round(second["results"][0]["score"]) == 80
    assert rewards["rewards"] == pytest.approx([0.3, 0.8], abs=0.02)


def test_the_service_door_refuses_a_video_header_too_large_before_anything_is_judged(tmp_path, monkeypatch):
    """Bytes that are no image are read as a video header at the door: one announcing more frames (or a
    larger frame) than a video may have is a 413 naming it; other bytes pass, for the judge to name."""
    from samples import write_video

    from qinsight_sdk.io import videos
    from qinsight_sdk.service.requests import RequestError, check_pixels
    from qinsight_sdk.service.settings import Call, ServiceSettings

    clip = write_video(tmp_path / "clip.mp4", video_frames(0.5, 1, (64, 48), 12), fps=6).read_bytes()
    check_pixels(Call("score", [clip, b"not a video"]), ServiceSettings())
    monkeypatch.setattr(videos, "MAX_FRAMES", 10)  # 12 frames stand for a 100,000-frame header
    with pytest.raises(RequestError) as refused:
        check_pixels(Call("score", [b"not a video", clip]), ServiceSettings())
    assert refused.value.status == 413
    assert refused.value.message == "images[1] announces 12 frames, more than the 10 a video may have"
    monkeypatch.setattr(videos, "MAX_FRAMES", 36_000)
    monkeypatch.setattr(videos, "MAX_SIDE", 60)
    with pytest.raises(RequestError, match="images\\[0\\] has frames of 64x48, larger than 60 pixels on a side"):
        check_pixels(Call("score", [clip]), ServiceSettings())


def test_a_video_that_cannot_be_judged_gets_the_worst_reward_and_a_warning_naming_it(caplog):
    judge = QualityJudge(ScriptedBackend(brightness), profile="vqinsight-naturalvideo")
    rewards = judge.reward([Video(video_frames(0.6, 1)), b"not a video"])
    assert rewards[0] == pytest.approx(0.6, abs=0.02) and rewards[1] == 0.0
    assert "reward 0.0 for video 1: the video bytes (11 bytes): not a readable video" in caplog.text
