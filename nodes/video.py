"""The video nodes: VQ-Insight's judges on ComfyUI's VIDEO values and on IMAGE frame batches with their fps.

Every video input takes either a VIDEO (Load Video, Create Video) or an IMAGE batch of frames (as
VideoHelperSuite's loaders give them) with ``fps``, or a VHS_VIDEOINFO whose ``loaded_fps`` wins. A VIDEO
read from a file is streamed from it: only the 16 frames or fewer that the judge samples are decoded.
Scores are on the video judges' own 0-100 scale.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from fractions import Fraction
from typing import Any

import folder_paths
import torch
from comfy_api.latest import InputImpl, Types, io, ui

from qinsight_sdk.io.image_metadata import video_tags, write_sidecar
from qinsight_sdk.io.records import make_row
from qinsight_sdk.judging.prompts import VQ_AIGC_DIMENSIONS
from qinsight_sdk.judging.selection import HYBRID_POOL, STRATEGIES, ranking_steps

from . import adapters
from .memory import JudgeHandle
from .v3 import Judge, Scores, blocked_unless, check_choices, comfyui_metadata, judge_input, run_judged, schema

VIDEO_SLOTS = 6  # Best of N Videos' inputs: ComfyUI 0.3.x has no growing list of sockets
DEFAULT_THRESHOLD = 50.0  # the middle of the 0-100 scale
DIMENSIONS = VQ_AIGC_DIMENSIONS  # the AIGC judge's three scores, each an output of Score Video Quality


def video_input(name: str = "video", tooltip: str = "the video: a VIDEO, or an IMAGE batch of its frames") -> Any:
    return io.MultiType.Input(name, types=[io.Video, io.Image], tooltip=tooltip)


def rate_inputs() -> list[Any]:
    """The frame rate of IMAGE frame batches: a number (FLOAT, or INT as VideoHelperSuite gives it), or
    VideoHelperSuite's video info."""
    fps = io.Float.Input(
        "fps",
        default=24.0,
        min=0.01,
        max=1000.0,
        step=0.01,
        optional=True,
        tooltip="frames per second of IMAGE frame batches (a VIDEO carries its own rate)",
    )
    return [
        io.MultiType.Input(fps, types=[io.Int]),
        io.Custom("VHS_VIDEOINFO").Input(
            "video_info", optional=True, tooltip="optional: VideoHelperSuite's video info (its loaded_fps is used)"
        ),
    ]


def sdk_video(value: Any, fps: float | int | None, video_info: dict | None) -> Any:
    """The SDK's input for a node's video: Load Video's file streamed, other VIDEOs and IMAGEs as frames."""
    return adapters.as_video(value, fps, video_info, file_backed=isinstance(value, InputImpl.VideoFromFile))


def as_video_output(value: Any, fps: float | int | None, video_info: dict | None) -> Any:
    """A VIDEO for an output: a VIDEO as it came; IMAGE frames as a video at their rate (cropped to even
    sides, which H.264 needs to be saved)."""
    if not isinstance(value, torch.Tensor):
        return value
    frames = value[:, : value.shape[1] // 2 * 2, : value.shape[2] // 2 * 2]
    rate = Fraction(adapters.frame_rate(fps, video_info)).limit_denominator(1001)
    return InputImpl.VideoFromComponents(Types.VideoComponents(images=frames, frame_rate=rate))


def score_video(handle: JudgeHandle, source: Any, mode: str) -> tuple[Any, adapters.JudgedBatch]:
    """The clip the judge saw and its score with the settings it was made with; a video that cannot be
    judged stops the node with its reason."""

    def run(judge: Any, done: Callable[[int, Any], None]) -> tuple[Any, adapters.JudgedBatch]:
        clip = judge.load_video(source)
        result = judge.score(clip, mode=mode, on_result=done)
        settings = adapters.record_settings(handle.spec.model, handle.spec.subfolder, judge, mode=mode)
        return clip, adapters.JudgedBatch([result], settings)

    clip, made = run_judged(handle, run, 1, "video")
    if made.results[0].score is None:
        raise ValueError(f"scoring the video failed: {made.results[0].error}")
    return clip, made


def given_or_scored(
    handle: JudgeHandle | None,
    score_batch: adapters.JudgedBatch | None,
    video: Any,
    fps: float | int | None,
    video_info: dict | None,
    node: str,
) -> adapters.JudgedBatch:
    """A video's score: the connected score_batch (from Score Video Quality), else the judge's fast score
    (the video is read only then)."""
    if score_batch is not None:
        if len(score_batch.results) != 1:
            raise ValueError(f"score_batch holds {len(score_batch.results)} scores; {node} takes one video's")
        return score_batch
    if handle is None:
        raise ValueError(f"{node} needs a judge or a score_batch")
    return score_video(handle, sdk_video(video, fps, video_info), "fast")[1]


class ScoreVideoQuality(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return schema(
            node_id="QInsightScoreVideo",
            display_name="Score Video Quality",
            is_output_node=True,
            description="Rates a video's quality from 0 to 100 with a VQ-Insight judge (the AIGC judge also "
            "rates spatial quality, temporal quality and text-video consistency). fast reads the natural-video "
            "judge's rating from its probabilities; reason writes the judge's reasoning.",
            inputs=[
                judge_input("a video judge from Load Quality Judge"),
                video_input(),
                io.Combo.Input(
                    "mode",
                    options=["fast", "reason"],
                    default="fast",
                    tooltip="fast: no text, deterministic (natural-video judge); reason: the judge explains "
                    "its rating (the AIGC judge answers only this way)",
                ),
                *rate_inputs(),
            ],
            outputs=[
                io.Float.Output(display_name="score", tooltip="0-100 (the AIGC judge: the mean of its three)"),
                *(
                    io.Float.Output(
                        display_name=name,
                        tooltip=f"the AIGC judge's {name} score (0-100); other judges give none (its branch stops)",
                    )
                    for name in DIMENSIONS
                ),
                io.String.Output(display_name="reasoning", tooltip="the judge's reasoning (reason mode)"),
                Scores.Output(
                    display_name="score_batch",
                    tooltip="the score with how it was made, for Video Quality Gate and Save Video with Quality",
                ),
                io.Image.Output(
                    display_name="annotated", tooltip="the frames the judge saw, with the score drawn on them"
                ),
            ],
        )

    @classmethod
    def validate_inputs(cls, mode: str) -> bool | str:
        return check_choices(cls, mode=mode)

    @classmethod
    def execute(
        cls, judge: JudgeHandle, video: Any, mode: str, fps: float = 24.0, video_info: dict | None = None
    ) -> io.NodeOutput:
        clip, made = score_video(judge, sdk_video(video, fps, video_info), mode)
        result = made.results[0]
        dimensions = result.dimensions or {}
        text = adapters.video_score_text(result)
        return io.NodeOutput(
            result.score,
            *(blocked_unless(dimensions.get(name), name in dimensions) for name in DIMENSIONS),
            result.reasoning or "",
            made,
            adapters.annotated_frames(clip.frames, f"{result.score:.1f}"),
            ui={"text": [text] + ([result.reasoning] if result.reasoning else []), "qinsight_scores": [result.score]},
        )


class CompareVideos(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return schema(
            node_id="QInsightCompareVideos",
            display_name="Compare Videos",
            is_output_node=True,
            description="Says which of two videos is better, with VQ-Insight's comparison judge (vqinsight-comp).",
            inputs=[
                judge_input("the comparison judge (vqinsight-comp) from Load Quality Judge"),
                video_input("video_a", "the first video: a VIDEO, or an IMAGE batch of its frames"),
                video_input("video_b", "the second video: a VIDEO, or an IMAGE batch of its frames"),
                io.Boolean.Input(
                    "both_orders", default=True, tooltip="also ask with A and B swapped; disagreement means similar"
                ),
                *rate_inputs(),
            ],
            outputs=[
                io.String.Output(display_name="winner", tooltip="A, B, similar or unknown"),
                io.Video.Output(display_name="better", tooltip="the better video (A when similar)"),
                io.String.Output(display_name="reasoning", tooltip="the judge's reasoning"),
            ],
        )

    @classmethod
    def execute(
        cls,
        judge: JudgeHandle,
        video_a: Any,
        video_b: Any,
        both_orders: bool,
        fps: float = 24.0,
        video_info: dict | None = None,
    ) -> io.NodeOutput:
        a, b = sdk_video(video_a, fps, video_info), sdk_video(video_b, fps, video_info)
        result = run_judged(judge, lambda j, done: j.compare(a, b, both_orders=both_orders, on_result=done), 1, "video")
        if result.error and not result.raw:
            raise ValueError(f"comparison failed: {result.error}")
        winner = result.winner or adapters.SHOWN_UNKNOWN
        better = as_video_output(video_b if winner == "B" else video_a, fps, video_info)
        reasoning = result.reasoning or result.error or ""
        return io.NodeOutput(winner, better, reasoning, ui={"text": [f"winner: {winner}", reasoning]})


class BestOfNVideos(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        slots = [
            io.MultiType.Input(
                f"video_{n}",
                types=[io.Video, io.Image],
                optional=n > 2,
                tooltip=f"video {n}: a VIDEO, or an IMAGE batch of its frames" + (" (optional)" if n > 2 else ""),
            )
            for n in range(1, VIDEO_SLOTS + 1)
        ]
        return schema(
            node_id="QInsightBestOfNVideos",
            display_name="Best of N Videos",
            is_output_node=True,
            description=f"Keeps the best of 2 to {VIDEO_SLOTS} videos: by score (a score judge) or by pairwise "
            "comparison (tournament, with the comparison judge vqinsight-comp).",
            inputs=[
                judge_input("a video judge from Load Quality Judge"),
                *slots,
                io.Combo.Input(
                    "strategy",
                    options=list(STRATEGIES),
                    default="score",
                    tooltip="score: fast scores; tournament: pairwise knockout in both orders (vqinsight-comp); "
                    f"hybrid: fast scores, then pairwise among the top {HYBRID_POOL}",
                ),
                *rate_inputs(),
            ],
            outputs=[
                io.Video.Output(display_name="best", tooltip="the best video"),
                io.Int.Output(display_name="order", is_output_list=True, tooltip="the inputs' numbers, best first"),
                io.Float.Output(
                    display_name="scores", is_output_list=True, tooltip="their scores (rounds won for tournament)"
                ),
            ],
        )

    @classmethod
    def validate_inputs(cls, strategy: str) -> bool | str:
        return check_choices(cls, strategy=strategy)

    @classmethod
    def execute(
        cls, judge: JudgeHandle, strategy: str, fps: float = 24.0, video_info: dict | None = None, **videos: Any
    ) -> io.NodeOutput:
        given = {int(name.removeprefix("video_")): v for name, v in videos.items() if v is not None}
        numbers = sorted(given)
        sources = [sdk_video(given[n], fps, video_info) for n in numbers]
        ranking = run_judged(
            judge,
            lambda j, done: j.rank(sources, strategy=strategy, pool=HYBRID_POOL, on_result=done),
            ranking_steps(len(sources), strategy, HYBRID_POOL),
            "video",
        )
        errors = {numbers[i]: e for i, e in ranking.errors.items()}  # named by their inputs' numbers
        adapters.raise_for_errors(errors, len(sources), "ranking", "video")
        order = [numbers[i] for i in ranking.order]
        text = [f"#{rank + 1}: video {n} ({s:.2f})" for rank, (n, s) in enumerate(zip(order, ranking.scores))]
        best = as_video_output(given[order[0]], fps, video_info)
        return io.NodeOutput(best, order, ranking.scores, ui={"text": text, "qinsight_order": order})


class VideoQualityGate(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return schema(
            node_id="QInsightVideoGate",
            display_name="Video Quality Gate",
            is_output_node=True,
            description="Passes a video on when it scores at least the threshold (0-100), else on the rejected "
            "side. The side it does not take stops its branch (nothing downstream of it runs).",
            inputs=[
                video_input(),
                io.Float.Input(
                    "threshold",
                    default=DEFAULT_THRESHOLD,
                    min=0.0,
                    max=100.0,
                    step=0.5,
                    tooltip="a video scoring at least this passes (0..100)",
                ),
                Judge.Input("judge", optional=True, tooltip="scores the video (fast) when no score_batch is connected"),
                Scores.Input("score_batch", optional=True, tooltip="the score from Score Video Quality"),
                *rate_inputs(),
            ],
            outputs=[
                io.Video.Output(display_name="passed", tooltip="the video, if it passed"),
                io.Video.Output(display_name="rejected", tooltip="the video, if it did not"),
                io.Float.Output(display_name="score", tooltip="its score"),
            ],
        )

    @classmethod
    def execute(
        cls,
        video: Any,
        threshold: float,
        judge: JudgeHandle | None = None,
        score_batch: adapters.JudgedBatch | None = None,
        fps: float = 24.0,
        video_info: dict | None = None,
    ) -> io.NodeOutput:
        score = given_or_scored(judge, score_batch, video, fps, video_info, "Video Quality Gate").scores[0]
        passed = score is not None and score >= threshold
        output = as_video_output(video, fps, video_info)
        text = [f"{'passed' if passed else 'rejected'}: {score:.1f} (threshold {threshold:.1f})"]
        return io.NodeOutput(
            blocked_unless(output, passed),
            blocked_unless(output, not passed),
            score,
            ui={"text": text, "qinsight_passed": [0] if passed else []},
        )


class SaveVideoWithQuality(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return schema(
            node_id="QInsightSaveVideo",
            display_name="Save Video with Quality",
            is_output_node=True,
            description="Saves a video as MP4, like Save Video, with its quality kept in the file's metadata "
            "(the score, its dimensions and reasoning, with the judge and its settings, beside ComfyUI's "
            "workflow). Read them back without a model: qinsight score --from-metadata FOLDER.",
            inputs=[
                video_input("video", "the video to save: a VIDEO, or an IMAGE batch of its frames"),
                io.String.Input(
                    "filename_prefix",
                    default="qinsight/video",
                    tooltip="as for Save Video: a name, optionally in a subfolder of output",
                ),
                Judge.Input("judge", optional=True, tooltip="scores the video (fast) when no score_batch is connected"),
                Scores.Input("score_batch", optional=True, tooltip="the score from Score Video Quality"),
                io.Boolean.Input(
                    "score_in_name", default=True, optional=True, tooltip="put the score in the file name (_q61.2)"
                ),
                io.Boolean.Input(
                    "sidecar",
                    default=False,
                    optional=True,
                    tooltip="also write the rows to a JSON file beside the video (.mp4.json)",
                ),
                *rate_inputs(),
            ],
            outputs=[],
            hidden=[io.Hidden.prompt, io.Hidden.extra_pnginfo],
        )

    @classmethod
    def execute(
        cls,
        video: Any,
        filename_prefix: str,
        judge: JudgeHandle | None = None,
        score_batch: adapters.JudgedBatch | None = None,
        score_in_name: bool = True,
        sidecar: bool = False,
        fps: float = 24.0,
        video_info: dict | None = None,
    ) -> io.NodeOutput:
        made = given_or_scored(judge, score_batch, video, fps, video_info, "Save Video with Quality")
        output = as_video_output(video, fps, video_info)
        width, height = output.get_dimensions()
        folder, name, counter, subfolder, _ = folder_paths.get_save_image_path(
            filename_prefix, folder_paths.get_output_directory(), width, height
        )
        result = made.results[0]
        suffix = f"_q{result.score:.1f}" if score_in_name and result.score is not None else "_"
        path = os.path.join(folder, f"{name}_{counter:05}{suffix}.mp4")
        rows = [make_row("score", [path], made.settings, result.to_dict())]
        tags = comfyui_metadata(cls) | video_tags(rows)
        output.save_to(path, format=Types.VideoContainer.MP4, codec=Types.VideoCodec.AUTO, metadata=tags)
        if sidecar:
            write_sidecar(path, rows)
        saved = ui.SavedResult(os.path.basename(path), subfolder, io.FolderType.output)
        shown = ui.PreviewVideo([saved]).as_dict()
        return io.NodeOutput(ui={**shown, "text": [f"{saved.filename}: {adapters.video_score_text(result)}"]})


NODES = [ScoreVideoQuality, CompareVideos, BestOfNVideos, VideoQualityGate, SaveVideoWithQuality]
