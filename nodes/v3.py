"""The qinsight nodes in ComfyUI's V3 schema: thin adapters from ComfyUI types to SDK calls."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable
from typing import Any

import folder_paths
from comfy_api.latest import ComfyExtension, io
from comfy_execution.graph_utils import ExecutionBlocker

from qinsight_sdk.backends.checkpoints import DEFAULT_MODEL
from qinsight_sdk.io.annotation import score_label
from qinsight_sdk.io.image_metadata import embed, write_sidecar
from qinsight_sdk.io.images import IMAGE_SIZES
from qinsight_sdk.io.records import make_row
from qinsight_sdk.judging.profiles import (
    PROFILES,
    QINSIGHT,
    QINSIGHT_COMPARISON,
    RALI,
    VISUALQUALITY_R1,
    VQ_INSIGHT_AIGC,
    VQ_INSIGHT_COMPARISON,
    VQ_INSIGHT_NATURAL,
)
from qinsight_sdk.judging.selection import HYBRID_POOL, STRATEGIES, ranking_steps

from . import adapters
from .memory import AFTER_RUN, QUANTIZATION, JudgeHandle, JudgeSpec, all_status

CATEGORY = "image/quality (qinsight)"
MODEL_FOLDER = "quality_models"
Judge = io.Custom("QINSIGHT_JUDGE")
Scores = io.Custom("QINSIGHT_SCORES")
HUB_CHOICES = [
    f"{DEFAULT_MODEL}/{profile.subfolder}"
    for profile in (QINSIGHT, QINSIGHT_COMPARISON, RALI, VQ_INSIGHT_NATURAL, VQ_INSIGHT_AIGC, VQ_INSIGHT_COMPARISON)
] + [VISUALQUALITY_R1.hub_ids[0]]
JUDGE_CHOICES = ["auto", *sorted(PROFILES)]

if MODEL_FOLDER not in folder_paths.folder_names_and_paths:
    folder_paths.add_model_folder_path(MODEL_FOLDER, os.path.join(folder_paths.models_dir, MODEL_FOLDER))


# Words people search the node menu with; ComfyUI has search aliases only since 0.8 (detected, not assumed)
SEARCH_ALIASES = ["IQA", "image quality", "aesthetic", "best of", "filter", "Q-Insight"]


def schema(**fields: Any) -> io.Schema:
    """A node's schema in the pack's category, with the search aliases where ComfyUI has them."""
    if "search_aliases" in {f.name for f in dataclasses.fields(io.Schema)}:
        fields["search_aliases"] = SEARCH_ALIASES
    return io.Schema(category=CATEGORY, **fields)


def model_roots() -> list[str]:
    """Our model folder, plus the ``LLM`` folder other VLM packs register."""
    roots = list(folder_paths.get_folder_paths(MODEL_FOLDER))
    if "LLM" in folder_paths.folder_names_and_paths:
        roots += folder_paths.get_folder_paths("LLM")
    return roots


def judge_input(tooltip: str = "a judge from Load Quality Judge") -> Any:
    return Judge.Input("judge", tooltip=tooltip)


def images_input(name: str = "images", tooltip: str = "the images to judge (a batch)") -> Any:
    return io.Image.Input(name, tooltip=tooltip)


def run_judged(
    handle: JudgeHandle, task: Callable[[Any, Callable[[int, Any], None]], Any], total: int, media: str = "image"
) -> Any:
    """Run ``task(judge, on_result)`` with a progress bar, interruption between batches, and release; a
    judge of the other ``media`` (a video judge in an image node, or the reverse) is refused by name."""
    import comfy.model_management as mm
    import comfy.utils

    progress = comfy.utils.ProgressBar(total)

    def on_result(index: int, result: Any) -> None:
        progress.update(1)
        mm.throw_exception_if_processing_interrupted()

    judge = handle.acquire()
    try:
        if judge.profile.media != media:
            raise ValueError(
                f"this node judges {media}s; the loaded judge ({judge.profile.name}) judges {judge.profile.media}s: "
                + ("use the video nodes" if media == "image" else "load a VQ-Insight judge")
            )
        return task(judge, on_result)
    finally:
        handle.release()


def blocked_unless(value: Any, present: bool) -> Any:
    return value if present else ExecutionBlocker(None)


def judged(handle: JudgeHandle, batch: Any, *tasks: tuple[str, dict[str, Any]]) -> list[adapters.JudgedBatch]:
    """Each image's results of each ``(task, options)`` (score with its mode, or degradation), with the
    settings they were made with: one load of the judge, and each image through its vision tower once."""

    def run(judge: Any, done: Callable[[int, Any], None]) -> list[adapters.JudgedBatch]:
        found = []
        with judge.reusing_images():
            for task, options in tasks:
                method = judge.score if task == "score" else judge.degradation
                settings = adapters.record_settings(handle.spec.model, handle.spec.subfolder, judge, **options)
                found.append(adapters.JudgedBatch(method(batch, on_result=done, **options), settings))
        return found

    return run_judged(handle, run, len(batch) * len(tasks))


def scored(handle: JudgeHandle, batch: Any, mode: str) -> adapters.JudgedBatch:
    """Each image's ScoreResult; any image that could not be scored stops the node with its reason."""
    return checked_scores(judged(handle, batch, ("score", {"mode": mode}))[0], len(batch))


def checked_scores(scores: adapters.JudgedBatch, count: int) -> adapters.JudgedBatch:
    adapters.raise_for_errors(adapters.errors_of(scores.results), count, "scoring")
    return scores


def carried_along(latent: Any, mask: Any, indices: list[int], batch_size: int) -> tuple[Any, Any]:
    """The LATENT and MASK outputs that follow the chosen images; blocked when absent or empty."""
    chosen = bool(indices)
    return (
        blocked_unless(adapters.take_latent(latent, indices), chosen and latent is not None),
        blocked_unless(adapters.take_mask(mask, indices, batch_size), chosen and mask is not None),
    )


def check_choices(node: type[io.ComfyNode], **values: Any) -> bool | str:
    """validate_inputs for combo widgets: ComfyUI 0.3.x does not check V3 combo values itself."""
    inputs = {i.id: i for i in node.define_schema().inputs}
    for name, value in values.items():
        options = inputs[name].options
        if value is not None and value not in options:  # None: linked, checked when it arrives
            return f"{name} must be one of {', '.join(map(str, options))}, got {value!r}"
    return True


class LoadQualityJudge(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        choices = adapters.model_folders(model_roots()) + HUB_CHOICES
        return schema(
            node_id="QInsightLoadJudge",
            display_name="Load Quality Judge",
            description="Loads a Q-Insight quality judge from models/quality_models (or models/LLM), or from "
            "Hugging Face when downloads are allowed. The weights load when a judge node first runs.",
            inputs=[
                io.Combo.Input(
                    "model",
                    options=choices,
                    default=choices[0],
                    tooltip="a checkpoint folder in models/quality_models or models/LLM, or a "
                    "Hugging Face model (needs allow_download, or a filled cache)",
                ),
                io.String.Input(
                    "hf_id",
                    default="",
                    tooltip="optional: a Hugging Face id to use instead, as owner/name or "
                    "owner/name/subfolder (e.g. ByteDance/Q-Insight/comparison)",
                ),
                io.Boolean.Input(
                    "allow_download",
                    default=False,
                    tooltip="download a Hugging Face model that is not cached yet (about 16 GB)",
                ),
                io.Combo.Input(
                    "device", options=["auto", "cuda", "cpu", "mps"], default="auto", tooltip="auto: ComfyUI's device"
                ),
                io.Combo.Input(
                    "dtype",
                    options=["auto", "bf16", "fp16", "fp32"],
                    default="auto",
                    tooltip="auto: ComfyUI's choice for the device (bf16 where it has it, else fp16; fp32 on CPU)",
                ),
                io.Combo.Input(
                    "after_run",
                    options=list(AFTER_RUN),
                    default=AFTER_RUN[0],
                    tooltip="keep the judge on the GPU between runs (ComfyUI may still evict it), "
                    "move it to the CPU after each run, or free it entirely",
                ),
                io.Combo.Input(
                    "image_size",
                    options=list(IMAGE_SIZES),
                    default="official",
                    optional=True,
                    tooltip="official: images up to 12.8 megapixels at native size, as the weights "
                    "were trained; fast: downscaled to about 1 megapixel (much faster and "
                    "lighter on large images, but fine noise and blur may be hidden)",
                ),
                io.Combo.Input(
                    "quantization",
                    options=list(QUANTIZATION),
                    default="full",
                    optional=True,
                    tooltip="full: the weights as released (16.6 GB for the 7B judge in bf16); 8bit "
                    "or 4bit: the language model quantized with bitsandbytes (about 10 or 7 "
                    "GB, beside a diffusion model on a 12-24 GB card; needs pip install "
                    "bitsandbytes). A quantized judge is never offloaded to the CPU: it is "
                    "freed instead and loaded again from disk on next use",
                ),
                io.Combo.Input(
                    "judge",
                    options=JUDGE_CHOICES,
                    default="auto",
                    optional=True,
                    tooltip="the judge's prompts and answer format. auto: the checkpoint's own "
                    "qinsight_judge.json (a model fine-tuned with qinsight train has one), "
                    "else the profile of a known model, else q-insight",
                ),
            ],
            outputs=[Judge.Output(display_name="judge", tooltip="the judge, for the other qinsight nodes")],
        )

    @classmethod
    def validate_inputs(
        cls,
        model: str,
        device: str,
        dtype: str,
        after_run: str,
        image_size: str | None = "official",
        quantization: str | None = "full",
        judge: str | None = "auto",
    ) -> bool | str:
        return check_choices(
            cls,
            model=model,
            device=device,
            dtype=dtype,
            after_run=after_run,
            image_size=image_size,
            quantization=quantization,
            judge=judge,
        )

    @classmethod
    def execute(
        cls,
        model: str,
        hf_id: str,
        allow_download: bool,
        device: str,
        dtype: str,
        after_run: str,
        image_size: str = "official",
        quantization: str = "full",
        judge: str = "auto",
    ) -> io.NodeOutput:
        if hf_id.strip():
            repo, subfolder = adapters.parse_hub_id(hf_id)
        else:
            repo, subfolder = adapters.resolve_model_choice(model, model_roots(), HUB_CHOICES)
        spec = JudgeSpec(repo, subfolder, device, dtype, after_run, allow_download, image_size, quantization, judge)
        return io.NodeOutput(JudgeHandle(spec))


class ScoreImageQuality(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return schema(
            node_id="QInsightScore",
            display_name="Score Image Quality",
            is_output_node=True,
            description="Rates each image's quality from 1 (very poor) to 5 (excellent). fast reads the rating "
            "from the model's probabilities; reason also writes the model's reasoning (slower).",
            inputs=[
                judge_input(),
                images_input(),
                io.Combo.Input(
                    "mode",
                    options=["fast", "reason"],
                    default="fast",
                    tooltip="fast: no text, deterministic; reason: the model explains its rating",
                ),
            ],
            outputs=[
                io.Float.Output(display_name="scores", is_output_list=True, tooltip="one score per image"),
                io.Float.Output(display_name="mean_score", tooltip="the batch's mean score"),
                io.String.Output(display_name="reasoning", tooltip="each image's reasoning (reason mode)"),
                Scores.Output(
                    display_name="score_batch",
                    tooltip="the scores with how they were made, for Quality Gate and Save Image with Quality",
                ),
                io.Image.Output(
                    display_name="annotated", tooltip="the images with their score drawn on them, for Preview Image"
                ),
            ],
        )

    @classmethod
    def validate_inputs(cls, mode: str) -> bool | str:
        return check_choices(cls, mode=mode)

    @classmethod
    def execute(cls, judge: JudgeHandle, images: Any, mode: str) -> io.NodeOutput:
        batch = adapters.as_image_batch(images)
        made = scored(judge, batch, mode)
        results, scores = made.results, made.scores
        reasoning = "\n\n".join(f"image {i}: {r.reasoning}" for i, r in enumerate(results) if r.reasoning)
        ui = {"text": adapters.describe_scores(results), "qinsight_scores": scores}
        labels = [score_label(r.score, r.std) for r in results]
        return io.NodeOutput(
            scores, sum(scores) / len(scores), reasoning, made, adapters.annotated(batch, labels), ui=ui
        )


class DetectDegradation(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return schema(
            node_id="QInsightDegradation",
            display_name="Detect Degradation",
            is_output_node=True,
            description="Names each image's main distortion (noise, compression, blur, darken or none) and its "
            "severity (slight to catastrophic), with the model's reasoning.",
            inputs=[judge_input(), images_input()],
            outputs=[
                io.String.Output(
                    display_name="distortion",
                    is_output_list=True,
                    tooltip="per image: noise, compression, blur, darken, none or unknown",
                ),
                io.String.Output(
                    display_name="severity",
                    is_output_list=True,
                    tooltip="per image: slight .. catastrophic, none or unknown",
                ),
                io.String.Output(
                    display_name="reasoning",
                    is_output_list=True,
                    tooltip="per image: the reasoning, or why there is no verdict",
                ),
            ],
        )

    @classmethod
    def execute(cls, judge: JudgeHandle, images: Any) -> io.NodeOutput:
        batch = adapters.as_image_batch(images)
        results = run_judged(judge, lambda j, done: j.degradation(batch, on_result=done), len(batch))
        unreadable = [i for i, r in enumerate(results) if r.error and not r.raw]
        if unreadable:  # bad inputs are the user's to fix; an answer without a verdict is reported
            errors = adapters.errors_of(results)
            adapters.raise_for_errors({i: errors[i] for i in unreadable}, len(results), "degradation detection")
        distortion = [adapters.shown_label(r.distortion, r.error) for r in results]
        severity = [adapters.shown_label(r.severity, r.error) for r in results]
        reasoning = [r.reasoning or r.error or "" for r in results]
        text = [f"image {i}: {d} / {s}" for i, (d, s) in enumerate(zip(distortion, severity))]
        return io.NodeOutput(distortion, severity, reasoning, ui={"text": text})


class CompareImages(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return schema(
            node_id="QInsightCompare",
            display_name="Compare Images",
            is_output_node=True,
            description="Says which of two images is better. With a reference (the degraded input of a "
            "restoration) it judges fidelity too; use the comparison model for that.",
            inputs=[
                judge_input(),
                images_input("image_a", "the first image (first of its batch)"),
                images_input("image_b", "the second image (first of its batch)"),
                io.Image.Input("reference", optional=True, tooltip="optional: the degraded original"),
                io.Boolean.Input(
                    "both_orders", default=True, tooltip="also ask with A and B swapped; disagreement means similar"
                ),
            ],
            outputs=[
                io.String.Output(display_name="winner", tooltip="A, B, similar or unknown"),
                io.Image.Output(display_name="better", tooltip="the better image (A when similar)"),
                io.String.Output(display_name="reasoning", tooltip="the model's reasoning"),
            ],
        )

    @classmethod
    def execute(
        cls, judge: JudgeHandle, image_a: Any, image_b: Any, both_orders: bool, reference: Any = None
    ) -> io.NodeOutput:
        a, b = adapters.as_image_batch(image_a)[0], adapters.as_image_batch(image_b)[0]
        ref = adapters.as_image_batch(reference)[0] if reference is not None else None
        result = run_judged(
            judge, lambda j, done: j.compare(a, b, reference=ref, both_orders=both_orders, on_result=done), 1
        )
        if result.error and not result.raw:
            raise ValueError(f"comparison failed: {result.error}")
        winner = result.winner or adapters.SHOWN_UNKNOWN
        better = image_b[:1] if winner == "B" else image_a[:1]
        reasoning = result.reasoning or result.error or ""
        return io.NodeOutput(winner, better, reasoning, ui={"text": [f"winner: {winner}", reasoning]})


class BestOfN(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return schema(
            node_id="QInsightBestOfN",
            display_name="Best of N",
            is_output_node=True,
            description="Keeps the best images of a batch, best first. Latents and masks given alongside are "
            "reordered the same way, so you can keep working on the chosen ones.",
            inputs=[
                judge_input(),
                images_input(),
                io.Int.Input("top_k", default=1, min=1, max=4096, tooltip="how many images to keep"),
                io.Combo.Input(
                    "strategy",
                    options=list(STRATEGIES),
                    default="score",
                    tooltip="score: fast scores; tournament: pairwise knockout in both orders; "
                    f"hybrid: fast scores, then pairwise among the top {HYBRID_POOL}",
                ),
                io.Latent.Input("latent", optional=True, tooltip="optional: the latents of the images"),
                io.Mask.Input("mask", optional=True, tooltip="optional: masks of the images"),
                Judge.Input(
                    "prefilter",
                    optional=True,
                    tooltip="optional: a cheaper judge (RALI) that scores every image first; the judge "
                    "then ranks only the best `keep` of them",
                ),
                io.Int.Input(
                    "keep",
                    default=8,
                    min=1,
                    max=4096,
                    optional=True,
                    tooltip="with a prefilter: how many images it passes on to the judge",
                ),
            ],
            outputs=[
                io.Image.Output(display_name="images", tooltip="the top_k images, best first"),
                io.Int.Output(display_name="indices", is_output_list=True, tooltip="their input indices"),
                io.Float.Output(
                    display_name="scores", is_output_list=True, tooltip="their scores (rounds won for tournament)"
                ),
                io.Latent.Output(display_name="latent", tooltip="the latents, reordered like the images"),
                io.Mask.Output(display_name="mask", tooltip="the masks, reordered like the images"),
                io.Image.Output(
                    display_name="annotated", tooltip="the kept images with their rank and score drawn on them"
                ),
            ],
        )

    @classmethod
    def validate_inputs(cls, strategy: str) -> bool | str:
        return check_choices(cls, strategy=strategy)

    @classmethod
    def execute(
        cls,
        judge: JudgeHandle,
        images: Any,
        top_k: int,
        strategy: str,
        latent: Any = None,
        mask: Any = None,
        prefilter: JudgeHandle | None = None,
        keep: int = 8,
    ) -> io.NodeOutput:
        batch = adapters.as_image_batch(images)
        adapters.check_batch_sizes(batch, latent, mask)
        if prefilter is None:
            ranking = run_judged(
                judge,
                lambda j, done: j.rank(list(batch), strategy=strategy, top_k=top_k, pool=HYBRID_POOL, on_result=done),
                ranking_steps(len(batch), strategy, HYBRID_POOL),
            )
        else:
            cheap = prefilter.acquire()
            try:
                ranking = run_judged(
                    judge,
                    lambda j, done: j.rank(
                        list(batch),
                        strategy=strategy,
                        top_k=top_k,
                        pool=HYBRID_POOL,
                        on_result=done,
                        prefilter=cheap,
                        keep=keep,
                    ),
                    len(batch) + ranking_steps(min(keep, len(batch)), strategy, HYBRID_POOL),
                )
            finally:
                prefilter.release()
        adapters.raise_for_errors(ranking.errors, len(batch), "ranking")
        order = ranking.order
        text = [
            f"#{rank + 1}: image {i} ({s:.2f})" + (f"; {ranking.unjudged[i]}" if i in ranking.unjudged else "")
            for rank, (i, s) in enumerate(zip(order, ranking.scores))
        ]
        labels = [score_label(s, rank=rank + 1) for rank, s in enumerate(ranking.scores)]
        return io.NodeOutput(
            adapters.take(images, order),
            order,
            ranking.scores,
            *carried_along(latent, mask, order, len(batch)),
            adapters.annotated(adapters.take(batch, order), labels),
            ui={"text": text, "qinsight_order": order},
        )


class QualityGate(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return schema(
            node_id="QInsightGate",
            display_name="Quality Gate",
            is_output_node=True,
            description="Splits a batch into images scoring at least the threshold and the rest. An empty side "
            "stops its branch (nothing downstream of it runs) instead of passing a placeholder.",
            inputs=[
                images_input(),
                io.Float.Input(
                    "threshold",
                    default=3.0,
                    min=1.0,
                    max=5.0,
                    step=0.05,
                    tooltip="images scoring at least this pass (1..5)",
                ),
                Judge.Input(
                    "judge", optional=True, tooltip="scores the images (fast mode) when no score_batch is connected"
                ),
                Scores.Input("score_batch", optional=True, tooltip="scores from Score Image Quality"),
                io.Latent.Input("latent", optional=True, tooltip="optional: filtered like the images"),
                io.Mask.Input("mask", optional=True, tooltip="optional: filtered like the images"),
            ],
            outputs=[
                io.Image.Output(display_name="passed", tooltip="images at or above the threshold"),
                io.Image.Output(display_name="rejected", tooltip="images below the threshold"),
                io.Int.Output(display_name="passed_count", tooltip="how many passed"),
                io.Latent.Output(display_name="passed_latent", tooltip="the passed images' latents"),
                io.Mask.Output(display_name="passed_mask", tooltip="the passed images' masks"),
            ],
        )

    @classmethod
    def execute(
        cls,
        images: Any,
        threshold: float,
        judge: JudgeHandle | None = None,
        score_batch: adapters.JudgedBatch | None = None,
        latent: Any = None,
        mask: Any = None,
    ) -> io.NodeOutput:
        batch = adapters.as_image_batch(images)
        adapters.check_batch_sizes(batch, latent, mask)
        if score_batch is None:
            if judge is None:
                raise ValueError("Quality Gate needs a judge or a score_batch")
            score_batch = scored(judge, batch, "fast")
        scores = score_batch.scores
        if len(scores) != len(batch):
            raise ValueError(f"score_batch has {len(scores)} scores but there are {len(batch)} images")
        passed, rejected = adapters.split_by_threshold(scores, threshold)
        text = [f"{len(passed)} of {len(batch)} passed (threshold {threshold:.2f})"]
        return io.NodeOutput(
            blocked_unless(adapters.take(images, passed), bool(passed)),
            blocked_unless(adapters.take(images, rejected), bool(rejected)),
            len(passed),
            *carried_along(latent, mask, passed, len(batch)),
            ui={"text": text, "qinsight_passed": passed},
        )


class SaveImageWithQuality(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return schema(
            node_id="QInsightSaveImage",
            display_name="Save Image with Quality",
            is_output_node=True,
            description="Saves images as PNG, like Save Image, with each image's quality kept in the file: score, "
            "spread, reasoning, and optionally the distortion and its severity, with the judge and "
            "its settings (beside ComfyUI's workflow). Read them back without a model: "
            "qinsight score --from-metadata FOLDER.",
            inputs=[
                images_input("images", "the images to save"),
                io.String.Input(
                    "filename_prefix",
                    default="qinsight/quality",
                    tooltip="as for Save Image: a name, optionally in a subfolder of output",
                ),
                Judge.Input(
                    "judge",
                    optional=True,
                    tooltip="scores the images (fast mode) when no score_batch is connected; names distortions",
                ),
                Scores.Input("score_batch", optional=True, tooltip="scores from Score Image Quality"),
                io.Boolean.Input(
                    "degradation",
                    default=False,
                    optional=True,
                    tooltip="also name each image's distortion and severity (needs the judge; "
                    "writes reasoning text, so it is slower)",
                ),
                io.Boolean.Input(
                    "score_in_name",
                    default=True,
                    optional=True,
                    tooltip="put the score in the file name (name_00001_q3.91.png)",
                ),
                io.Boolean.Input(
                    "sidecar",
                    default=False,
                    optional=True,
                    tooltip="also write the rows to a JSON file beside each image (.png.json)",
                ),
            ],
            outputs=[],
            hidden=[io.Hidden.prompt, io.Hidden.extra_pnginfo],
        )

    @classmethod
    def execute(
        cls,
        images: Any,
        filename_prefix: str,
        judge: JudgeHandle | None = None,
        score_batch: adapters.JudgedBatch | None = None,
        degradation: bool = False,
        score_in_name: bool = True,
        sidecar: bool = False,
    ) -> io.NodeOutput:
        batch = adapters.as_image_batch(images)
        if score_batch is None and judge is None:
            raise ValueError("Save Image with Quality needs a judge or a score_batch")
        if degradation and judge is None:
            raise ValueError("Save Image with Quality needs a judge to name distortions (degradation is on)")
        if score_batch is not None and len(score_batch.results) != len(batch):
            raise ValueError(f"score_batch has {len(score_batch.results)} scores but there are {len(batch)} images")
        asked = ([] if score_batch is not None else [("score", {"mode": "fast"})]) + (
            [("degradation", {})] if degradation else []
        )
        found = judged(judge, batch, *asked) if asked else []  # both at once: each image encoded once
        scores = score_batch if score_batch is not None else checked_scores(found.pop(0), len(batch))
        distortions = found[0] if degradation else None
        # one output folder and counter for the batch, as Save Image numbers its images
        folder, name, counter, subfolder, _ = folder_paths.get_save_image_path(
            filename_prefix, folder_paths.get_output_directory(), batch.shape[2], batch.shape[1]
        )
        chunks = comfyui_chunks(cls)
        saved, text = [], []
        for index, image in enumerate(adapters.to_pil(batch)):
            score = scores.results[index]
            suffix = f"_q{score.score:.2f}" if score_in_name and score.score is not None else "_"
            path = os.path.join(folder, f"{name}_{counter + index:05}{suffix}.png")
            rows = [make_row("score", [path], scores.settings, score.to_dict())]
            if distortions is not None:
                rows.append(make_row("degradation", [path], distortions.settings, distortions.results[index].to_dict()))
            save_with_quality(image, path, chunks, rows, sidecar)
            saved.append({"filename": os.path.basename(path), "subfolder": subfolder, "type": "output"})
            text.append(f"{saved[-1]['filename']}: " + score_label(score.score, score.std))
        return io.NodeOutput(ui={"images": saved, "text": text})


def comfyui_metadata(node: type[io.ComfyNode]) -> dict[str, Any]:
    """The prompt and workflow ComfyUI keeps in the files it saves, as objects (Save Video passes them so);
    none where ComfyUI was told not to (--disable-metadata)."""
    from comfy.cli_args import args

    if args.disable_metadata:
        return {}
    found = {} if node.hidden.prompt is None else {"prompt": node.hidden.prompt}
    return found | dict(node.hidden.extra_pnginfo or {})


def comfyui_chunks(node: type[io.ComfyNode]) -> list[tuple[str, str]]:
    """:func:`comfyui_metadata` as the text chunks ComfyUI embeds in the PNGs it saves."""
    return [(key, json.dumps(value)) for key, value in comfyui_metadata(node).items()]


def save_with_quality(
    image: Any, path: str, chunks: list[tuple[str, str]], rows: list[dict[str, Any]], sidecar: bool
) -> None:
    """One PNG with ComfyUI's chunks and our rows (and, when asked, the rows in a sidecar)."""
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    for key, text in chunks:
        info.add_text(key, text)
    embed(info, rows)
    image.save(path, pnginfo=info, compress_level=4)
    if sidecar:
        write_sidecar(path, rows)


class QualityReward(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return schema(
            node_id="QInsightReward",
            display_name="Quality Reward",
            is_output_node=True,
            description="A reward in [0, 1] from the fast score (1 -> 0, 5 -> 1), deterministic, for loops and "
            "automation.",
            inputs=[judge_input(), images_input()],
            outputs=[
                io.Float.Output(display_name="reward", tooltip="the batch's mean reward"),
                io.Float.Output(display_name="rewards", is_output_list=True, tooltip="one per image"),
            ],
        )

    @classmethod
    def execute(cls, judge: JudgeHandle, images: Any) -> io.NodeOutput:
        batch = adapters.as_image_batch(images)
        rewards = run_judged(judge, lambda j, done: j.reward(batch, on_result=done), len(batch)).tolist()
        return io.NodeOutput(
            sum(rewards) / len(rewards),
            rewards,
            ui={"text": [f"reward {sum(rewards) / len(rewards):.4f}"], "qinsight_rewards": rewards},
        )


NODES = [
    LoadQualityJudge,
    ScoreImageQuality,
    DetectDegradation,
    CompareImages,
    BestOfN,
    QualityGate,
    SaveImageWithQuality,
    QualityReward,
]


class QInsightExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        from .video import NODES as VIDEO_NODES  # imports this module's helpers: imported once it is loaded

        return NODES + VIDEO_NODES


def register_routes() -> None:
    """GET /qinsight/status: each judge, whether it is loaded and registered, and where its weights are."""
    try:
        from aiohttp import web
        from server import PromptServer
    except ImportError:
        return

    @PromptServer.instance.routes.get("/qinsight/status")
    async def status(request: Any) -> Any:
        return web.json_response(all_status())


register_routes()
