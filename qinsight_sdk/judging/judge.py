"""``QualityJudge``: the one entry point for scoring, degradation perception, comparison and ranking.

Every task runs the same pipeline: the profile builds the conversation, the batching engine
(:mod:`qinsight_sdk.judging.batching`) normalises each input and runs the good ones through the backend, the
profile's parser reads each answer, and the task's spec (:mod:`qinsight_sdk.judging.tasks`) aggregates the
samples into a result. A bad input or an unreadable answer becomes an error on that item only.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, cast

import torch
from PIL import Image

from ..backends.base import Backend
from ..backends.checkpoints import COMPARISON_SUBFOLDER, DEFAULT_MODEL
from ..backends.quantization import Quantization
from ..errors import UsageError
from ..io.images import PATCH_GRID_GEOMETRY, ImageBounds, ImageInput, load_image, split_inputs
from ..io.videos import VideoClip, load_video, split_videos
from .batching import BatchRunner, Failure, Outcome, Request, Step
from .decoding import DecodingOptions
from .judge_config import JudgeConfig, resolve_judge_config
from .profiles import JudgeProfile, find_profile
from .prompts import PromptOrder
from .results import ComparisonResult, DegradationResult, ResultCallback, ScoreResult
from .selection import HYBRID_POOL, Ranking, cascade, rank_images
from .tasks import TASKS, reconcile, score_of_distribution

logger = logging.getLogger("qinsight")


class QualityJudge:
    """Judges image quality with a vision-language model behind a :class:`~qinsight_sdk.backends.base.Backend`.

    Build it with :meth:`from_pretrained`. Results never raise for bad images or unreadable answers:
    each carries ``error`` instead, and the rest of the batch is judged as usual. Every method takes
    ``on_result(index, result)``, called once per finished item, for progress and streaming.

    Batching: images are decoded a window at a time, sorted by size so a batch pads little, and packed
    up to ``batch_size`` images and ``max_batch_tokens`` padded image tokens. On out-of-memory the batch
    is halved and retried (and later batches stay at the smaller size); nothing is dropped or judged twice.

    Args:
        backend: the loaded model (:meth:`from_pretrained` builds it; tests pass a scripted one).
        decoding: how reason mode decodes (default: greedy, up to 512 new tokens).
        image_bounds: the pixel counts images are fitted into (default: the official ones).
        prompt_order: ``"image_first"`` or ``"text_first"`` (default: where the profile puts the image).
        batch_size: the most images judged together.
        max_batch_tokens: the most padded image tokens in one batch.
        profile: the judge profile: a ``JudgeProfile``, a built-in name or a profile file (default:
            Q-Insight's).
        profile_source: why this profile was chosen, as logged and recorded (default: "given" or "the
            default").
        config: the resolved settings the backend was loaded with, kept as ``judge.config``.
    """

    def __init__(
        self,
        backend: Backend,
        *,
        decoding: DecodingOptions | None = None,
        image_bounds: ImageBounds | None = None,
        prompt_order: PromptOrder | str | None = None,
        batch_size: int = 8,
        max_batch_tokens: int = 16384,
        profile: JudgeProfile | str | Path | None = None,
        profile_source: str | None = None,
        config: JudgeConfig | None = None,
    ) -> None:
        self.backend = backend
        self.config = config  # the resolved settings it was loaded with (None: built from a backend directly)
        self.decoding = decoding or DecodingOptions()
        self.image_bounds = image_bounds or ImageBounds()
        self.profile = find_profile(profile)
        self.profile_source = profile_source or ("given" if profile is not None else "the default")
        # None: each prompt's image where the profile puts it; the recorded order is then the profile's own
        self.prompt_order = PromptOrder(prompt_order) if prompt_order is not None else self.profile.own_order()
        self._reorder = prompt_order is not None
        self.batch_size = batch_size
        # how this model family sizes images and what each costs (Qwen2-VL's patch grid unless it says)
        self.geometry = getattr(backend, "geometry", PATCH_GRID_GEOMETRY)
        self.batching = BatchRunner(
            self.load,
            max_batch_tokens,
            overlap=lambda: self.backend.device.type != "cpu",
            cost=self._cost,
        )
        self._warned_zero_shot = False

    @classmethod
    def from_pretrained(
        cls,
        model: str | Path | None = None,
        subfolder: str | None = None,
        *,
        revision: str | None = None,
        device: str | torch.device = "auto",
        dtype: str | torch.dtype = "auto",
        attn_implementation: str | None = None,
        trust_remote_code: bool = False,
        local_files_only: bool = False,
        cache_dir: str | None = None,
        profile: JudgeProfile | str | Path | None = None,
        quantization: Quantization = None,
        **options: Any,
    ) -> QualityJudge:
        """Load a checkpoint: a Hugging Face id (with subfolder and revision) or a local folder.

        The settings are resolved first, by :func:`qinsight_sdk.judging.judge_config.resolve_judge_config`,
        and kept as ``judge.config``; the profile chosen and why is logged (``judge.profile_source``).

        Args:
            model: a Hugging Face id or a local folder (default: ``$QINSIGHT_MODEL``, else
                ``ByteDance/Q-Insight``).
            subfolder: the folder inside ``model`` (default for ``ByteDance/Q-Insight``:
                ``score_degradation``).
            revision: a hub branch, tag or commit.
            device: ``"auto"`` (CUDA, then MPS, then CPU), or a device such as ``"cuda:1"``.
            dtype: ``"auto"``, ``"bf16"``, ``"fp16"``, ``"fp32"`` or a ``torch.dtype``.
            attn_implementation: transformers' attention implementation (default: the fastest that gives
                the same answers on this device).
            trust_remote_code: allow code shipped with the checkpoint to run (off: nothing downloaded runs).
            local_files_only: never download; a model not cached is a ``ModelLoadError``.
            cache_dir: the Hugging Face cache to use.
            profile: the judge profile: a name, a profile file or a ``JudgeProfile`` (default: the
                checkpoint's own ``qinsight_judge.json``, else the profile of a known id or released
                subfolder, else Q-Insight's).
            quantization: ``"8bit"`` or ``"4bit"`` loads the language model quantized with bitsandbytes (the
                ``[quant]`` extra; what stays in full precision and why:
                :mod:`qinsight_sdk.backends.quantization`), or a transformers ``BitsAndBytesConfig``.
            **options: ``decoding``, ``image_bounds`` and ``prompt_order`` (part of the judgement's
                settings) and ``batch_size``, ``max_batch_tokens`` (passed to the constructor).

        Returns:
            The judge, its model loaded on ``device``.

        Raises:
            ModelLoadError: the checkpoint is missing, half-written, not cached while offline, or cannot
                be loaded.
            UsageError: a setting cannot be (an unknown dtype, profile or quantization).
        """
        settings = {k: options.pop(k) for k in ("decoding", "image_bounds", "prompt_order") if k in options}
        config = resolve_judge_config(
            model,
            subfolder,
            revision=revision,
            profile=profile,
            device=str(device),
            dtype=dtype,
            quantization=quantization,
            attn_implementation=attn_implementation,
            trust_remote_code=trust_remote_code,
            local_files_only=local_files_only,
            cache_dir=cache_dir,
            **settings,
        )
        logger.info("judge profile %r (%s)", config.profile.name, config.profile_source)
        return cls.from_config(config, **options)

    @classmethod
    def from_config(cls, config: JudgeConfig, **options: Any) -> QualityJudge:
        """The judge a resolved configuration describes, its model loaded.

        Args:
            config: settings from :func:`qinsight_sdk.judging.judge_config.resolve_judge_config`.
            **options: ``batch_size``, ``max_batch_tokens``, passed to the constructor.

        Returns:
            The judge, with ``judge.config`` set to ``config``.
        """
        return cls(
            config.load_backend(),
            decoding=config.decoding,
            image_bounds=config.image_bounds,
            prompt_order=config.prompt_order,
            profile=config.profile,
            profile_source=config.profile_source,
            config=config,
            **options,
        )

    # -- public tasks -------------------------------------------------------------------------------

    def score(
        self,
        images: Any,
        batch_size: int | None = None,
        decoding: DecodingOptions | None = None,
        on_result: ResultCallback | None = None,
        mode: str | None = None,
    ) -> ScoreResult | list[ScoreResult]:
        """A 1-5 quality rating for one image or each of many.

        Args:
            images: one image (a path, bytes, PIL image, array or tensor) or a list or batch of them.
            batch_size: images per batch (default: the judge's).
            decoding: how reason mode samples (default: the judge's).
            on_result: called as ``on_result(index, result)`` once per finished image.
            mode: ``"reason"`` generates the model's reasoning and reads the rating from its answer.
                ``"fast"`` generates nothing: the score is the expected value of the model's distribution
                over ratings (for a vision-language judge, the rating's digits after an answer forced up to
                them; for RALI, its prototypes' scores), continuous and deterministic, with ``std`` its
                spread. Default: reason mode, or fast for a judge that writes no text (RALI).

        Returns:
            A ``ScoreResult`` for one image, else a list of them in input order.
        """
        writes = getattr(self.backend, "writes_text", True)
        if mode is None:
            mode = "reason" if writes else "fast"
        if mode not in TASKS["score"].modes:
            raise UsageError(f"mode must be 'reason' or 'fast', got {mode!r}")
        if mode == "reason" and not writes:
            raise UsageError(
                f"judge profile {self.profile.name!r} scores without writing text, so it has no "
                "reasoning to give: use mode='fast' (its default)"
            )
        if mode == "fast":
            step = Step(self._encoder(self.profile.fast_prefix()), self._fast_reader())
            scale, keep = self.profile.rating_range, self.profile.media == "video"
            return self._single_image_task(
                "score", images, step, lambda d: score_of_distribution(d, scale, keep), batch_size, on_result, fast=True
            )
        return self._single_image_task(
            "score",
            images,
            self._generate_step(decoding, self.profile.rating_key),
            self._aggregator("score"),
            batch_size,
            on_result,
        )

    def degradation(
        self,
        images: Any,
        batch_size: int | None = None,
        decoding: DecodingOptions | None = None,
        on_result: ResultCallback | None = None,
    ) -> DegradationResult | list[DegradationResult]:
        """The distortion (noise, compression, blur, darken or None) and its severity, per image.

        Args:
            images: one image (a path, bytes, PIL image, array or tensor) or a list or batch of them.
            batch_size: images per batch (default: the judge's).
            decoding: how the answer is decoded (default: the judge's).
            on_result: called as ``on_result(index, result)`` once per finished image.

        Returns:
            A ``DegradationResult`` for one image, else a list of them in input order.
        """
        return self._single_image_task(
            "degradation", images, self._generate_step(decoding), self._aggregator("degradation"), batch_size, on_result
        )

    def compare(
        self,
        image_a: ImageInput,
        image_b: ImageInput,
        reference: ImageInput | None = None,
        both_orders: bool = False,
        decoding: DecodingOptions | None = None,
        on_result: ResultCallback | None = None,
    ) -> ComparisonResult:
        """Which image is better: "A", "B" or "similar".

        With a reference (the degraded input of a restoration), the reference-based prompt of the
        comparison weights is used; without, the paper's zero-shot two-image prompt.

        Args:
            image_a: the first image.
            image_b: the second image.
            reference: the degraded input both were restored from, if any.
            both_orders: also ask with A and B swapped and keep a verdict only if both agree (VLM judges
                favour a position); a disagreement becomes "similar" with ``consistent=False``.
            decoding: how the answer is decoded (default: the judge's).
            on_result: called as ``on_result(0, result)`` when the verdict is ready.

        Returns:
            The verdict, its reasoning and the model's answer.
        """
        return self.compare_pairs([(image_a, image_b)], reference, both_orders, decoding, on_result=on_result)[0]

    def compare_pairs(
        self,
        pairs: Sequence[Sequence[ImageInput]],
        reference: ImageInput | None = None,
        both_orders: bool = False,
        decoding: DecodingOptions | None = None,
        batch_size: int | None = None,
        on_result: ResultCallback | None = None,
    ) -> list[ComparisonResult]:
        """:meth:`compare` for many pairs, batched.

        Args:
            pairs: each ``(image_a, image_b)``, or ``(image_a, image_b, reference)`` with its own reference.
            reference: the reference of the pairs that bring none.
            both_orders: ask each pair in both orders, as :meth:`compare` does.
            decoding: how the answers are decoded (default: the judge's).
            batch_size: questions per batch (default: the judge's).
            on_result: called as ``on_result(index, result)`` in input order as results are ready (once
                per pair, after both orders when asked).

        Returns:
            One ``ComparisonResult`` per pair, in input order.
        """
        self.profile.prompt("comparison")  # a judge that does not compare says so before any image loads
        requests = []
        for pair in pairs:
            if len(pair) not in (2, 3):
                raise UsageError(
                    f"a pair is (image_a, image_b) or (image_a, image_b, reference), got {len(pair)} items"
                )
            image_a, image_b = pair[0], pair[1]
            chosen = pair[2] if len(pair) == 3 and pair[2] is not None else reference
            if chosen is not None and self.profile.prompt("comparison").with_reference is None:
                raise UsageError(f"judge profile {self.profile.name!r} compares two without a reference")
            conversation = self.profile.messages("comparison", with_reference=chosen is not None)
            if chosen is not None:
                self._warn_zero_shot_reference()
            prefix = [chosen] if chosen is not None else []
            requests.append(Request(conversation, prefix + [image_a, image_b]))
            if both_orders:
                requests.append(Request(conversation, prefix + [image_b, image_a]))
        forward: dict[int, ComparisonResult] = {}
        aggregate = self._aggregator("comparison")

        def finish(index: int, outcome: Outcome) -> ComparisonResult:
            result = self._result("comparison", outcome, aggregate)
            if both_orders:
                if index % 2 == 0:
                    forward[index] = result
                    return result
                result = reconcile(forward.pop(index - 1), result)
                index //= 2
            if on_result is not None:
                on_result(index, result)
            return result

        with self.reusing_images():  # both orders of a pair, and a pair's shared reference, encode once
            results = self.batching.run(requests, self._batch_size(batch_size), self._generate_step(decoding), finish)
        return results[1::2] if both_orders else results

    def _warn_zero_shot_reference(self) -> None:
        """Weights not trained to compare against a reference still answer, but in the paper's zero-shot
        setting (75.5% on SRIQA-Bench where the comparison weights reach 82.8%): said once per judge."""
        if self.profile.compares_with_reference or self._warned_zero_shot:
            return
        self._warned_zero_shot = True
        logger.warning(
            "comparing with a reference on weights not trained for it (profile %r): this is the paper's "
            "zero-shot setting (75.5%% accuracy vs 82.8%% with the comparison weights); load subfolder "
            "%r of %s, or pass profile='q-insight-comparison' if these weights were trained for it",
            self.profile.name,
            COMPARISON_SUBFOLDER,
            DEFAULT_MODEL,
        )

    def rank(
        self,
        images: Sequence[ImageInput],
        strategy: str = "score",
        top_k: int | None = None,
        pool: int = HYBRID_POOL,
        batch_size: int | None = None,
        on_result: ResultCallback | None = None,
        prefilter: Any = None,
        keep: int = 8,
    ) -> Ranking:
        """Order images best first; see :mod:`qinsight_sdk.judging.selection` for the strategies.

        Args:
            images: the candidates (paths, PIL images, arrays or tensors).
            strategy: ``score``, ``tournament`` or ``hybrid``.
            top_k: keep only the best ``top_k`` in the ranking.
            pool: finalists compared pairwise by ``hybrid``.
            batch_size: images per batch (default: the judge's).
            on_result: ``on_result(step, result)`` follows each image scored and each match (a pair in both
                orders); :func:`qinsight_sdk.judging.selection.ranking_steps` says how many there will be.
            prefilter: a cheaper judge (RALI, say) that scores all images first; this judge then ranks only
                the ``keep`` best of them (:func:`qinsight_sdk.judging.selection.cascade`).
            keep: how many images the prefilter passes on.

        Returns:
            A ``Ranking``; with a prefilter, its ``stages`` say which images each judge saw.
        """
        if prefilter is not None:
            with self.reusing_images():
                return cascade(
                    self,
                    prefilter,
                    images,
                    keep=keep,
                    strategy=strategy,
                    top_k=top_k,
                    pool=pool,
                    batch_size=batch_size,
                    on_result=on_result,
                )
        with self.reusing_images():
            return rank_images(
                self, images, strategy=strategy, top_k=top_k, pool=pool, batch_size=batch_size, on_result=on_result
            )

    def reusing_images(self) -> AbstractContextManager[None]:
        """Within this block each image is encoded by the vision tower once, however many questions are
        asked about it: ``with judge.reusing_images(): judge.score(images); judge.degradation(images)``.
        Rankings and comparisons do this themselves. The features are kept on the model's device until
        the block ends (up to :data:`qinsight_sdk.backends.qwen2_5_vl.vision.MEMORY_BUDGET`; the oldest go first)."""
        return self.backend.reusing_images()

    def reward(
        self,
        images: Any,
        batch_size: int | None = None,
        on_result: ResultCallback | None = None,
        dimension: str | None = None,
    ) -> torch.Tensor:
        """A reward in [0, 1] per image for training loops: the fast score mapped from [1, 5] (a video
        judge's from its own scale, 0-100 for VQ-Insight's: reward = score / 100).

        For a judge whose profile has no fast mode, the greedily decoded score (slower, as deterministic).
        A score a little beyond the scale (a fast score can reach 5.99) gives the bound, 1.0 or 0.0: the
        reward's range is part of its contract, the score itself is kept as it is. Deterministic and
        independent of batch size and order. An image that cannot be judged (NaN pixels, say) gets 0.0,
        the worst reward, and a logged warning, so a loop never breaks on it.

        Args:
            images: one image or a list or batch of them, as for :meth:`score`.
            batch_size: images per batch (default: the judge's).
            on_result: called as ``on_result(index, score_result)`` once per image, as for :meth:`score`.
            dimension: for a judge that scores several dimensions (VQ-Insight's AIGC judge: ``spatial``,
                ``temporal``, ``consistency``), the one to reward (default: their mean, the score).

        Returns:
            A float32 tensor of one reward per image, in input order.

        Raises:
            UsageError: ``dimension`` names none of this judge's dimensions.
        """
        if dimension is not None and dimension not in self.profile.dimensions:
            known = ", ".join(self.profile.dimensions) or "none"
            raise UsageError(f"{self.profile.name!r} scores no dimension {dimension!r} (its dimensions: {known})")
        if self.profile.fast_score_prefix is not None:
            results = self.score(images, batch_size=batch_size, mode="fast", on_result=on_result)
        else:
            results = self.score(images, batch_size=batch_size, decoding=DecodingOptions(), on_result=on_result)
        results = results if isinstance(results, list) else [results]
        for index, result in enumerate(results):
            if result.score is None:
                logger.warning("reward 0.0 for %s %d: %s", self.profile.media, index, result.error)
        return torch.tensor([self.reward_of(result, dimension) for result in results], dtype=torch.float32)

    def reward_of(self, result: ScoreResult, dimension: str | None = None) -> float:
        """The reward :meth:`reward` gives for one of this judge's score results: its score (or one
        ``dimension``'s) mapped from the judge's scale onto [0, 1] and kept there; 0.0 for no score.

        Args:
            result: a score result of this judge.
            dimension: one of a multi-dimension judge's dimensions (default: the score).

        Returns:
            The reward.
        """
        score = result.score if dimension is None or result.dimensions is None else result.dimensions[dimension]
        if score is None:
            return 0.0
        low, high = self.profile.rating_range if self.judges_video else (1.0, 5.0)  # the scale results are on
        return min(1.0, max(0.0, (score - low) / (high - low)))

    def load_image(self, source: ImageInput) -> Image.Image:
        """One input decoded and fitted to this judge's image bounds, as every task does it.

        Args:
            source: a path, image file bytes, PIL image, array or tensor.

        Returns:
            An RGB image on the model's patch grid.

        Raises:
            ImageInputError: the input is missing, corrupt, empty, of an unsupported kind or shape, or holds
                values that are not pixels (NaN, out of range).
        """
        return load_image(source, self.image_bounds, self.geometry)

    @property
    def judges_video(self) -> bool:
        """Whether this judge looks at videos (its profile's ``media``): its methods then take videos
        (paths, frames, arrays, :class:`~qinsight_sdk.io.videos.Video`) wherever images are taken."""
        return self.profile.media == "video"

    def load_video(self, source: Any) -> VideoClip:
        """One video decoded, sampled and resized as the VQ-Insight judges saw videos, as every task does it.

        Args:
            source: a path, video file bytes, a list of frames, a ``(T, H, W, C)`` or ``(T, C, H, W)`` array
                or tensor, or :class:`~qinsight_sdk.io.videos.Video` (frames with their frame rate).

        Returns:
            The frames the judge sees (:mod:`qinsight_sdk.io.video_sampling`).

        Raises:
            ImageInputError: the input is missing, broken, too large, or not a video.
        """
        return load_video(source)

    def load(self, source: Any) -> Image.Image | VideoClip:
        """One input as this judge takes it: :meth:`load_video` for a video judge, else :meth:`load_image`.

        Args:
            source: an image or a video input.

        Returns:
            What the model is shown.

        Raises:
            ImageInputError: the input cannot be judged.
        """
        return self.load_video(source) if self.judges_video else self.load_image(source)

    def to(self, device: str | torch.device) -> QualityJudge:
        """Move the model (for callers that manage memory, such as ComfyUI).

        Args:
            device: where to move it, such as ``"cpu"`` or ``"cuda:0"``.

        Returns:
            The judge itself.
        """
        self.backend.to(device)
        return self

    # -- the pipeline, task by task --------------------------------------------------------------------

    def _cost(self, item: Image.Image | VideoClip) -> int:
        return item.tokens if isinstance(item, VideoClip) else self.geometry.tokens(item.width, item.height)

    def _fast_reader(self) -> Callable[[Any], list[Any]]:
        """The backend's reading of rating digits, as this judge's profile writes its ratings."""
        if self.profile.fast_rating == "d.dd":
            return self.backend.rating_distributions
        reader = getattr(self.backend, "two_digit_distributions", None)
        if reader is None:
            raise UsageError(f"this backend cannot read two-digit ratings, so {self.profile.name!r} has no fast mode")
        return cast("Callable[[Any], list[Any]]", reader)

    def _batch_size(self, batch_size: int | None) -> int:
        return self.batch_size if batch_size is None else batch_size

    def _generate_step(self, decoding: DecodingOptions | None, rating_key: str | None = None) -> Step:
        options = decoding or self.decoding
        return Step(self._encoder(""), lambda batch: self.backend.generate(batch, options, rating_key))

    def _encoder(self, answer_prefix: str) -> Callable[[list[Request]], Any]:
        options = dict(self.profile.chat_template_options)
        # the batcher hands over only requests whose images it loaded
        return lambda chosen: self.backend.encode(
            [r.conversation for r in chosen],
            [cast("list[Image.Image]", r.images) for r in chosen],
            answer_prefix,
            options,
        )

    def _aggregator(self, task: str) -> Callable[[Any], Any]:
        """The task's aggregation of sampled answers, read with this judge's parser for the task."""
        parse = self.profile.parser(task)
        return lambda generations: TASKS[task].aggregate(generations, parse)

    @staticmethod
    def _result(task: str, outcome: Outcome, aggregate: Callable[[Any], Any]) -> Any:
        """The task's result for one request's outcome: its failure, or its aggregated output."""
        if isinstance(outcome, Failure):
            return TASKS[task].result_type(error=outcome.message)
        return aggregate(outcome)

    def _single_image_task(
        self,
        task: str,
        images: Any,
        step: Step,
        aggregate: Callable[[Any], Any],
        batch_size: int | None,
        on_result: ResultCallback | None,
        fast: bool = False,
    ) -> Any:
        conversation = self.profile.messages(task, self.prompt_order if self._reorder else None, fast=fast)
        sources, single = split_videos(images) if self.judges_video else split_inputs(images)

        def finish(index: int, outcome: Outcome) -> Any:
            result = self._result(task, outcome, aggregate)
            if on_result is not None:
                on_result(index, result)
            return result

        results = self.batching.run(
            [Request(conversation, [s]) for s in sources], self._batch_size(batch_size), step, finish
        )
        return results[0] if single else results


def load_judge(spec: JudgeConfig | dict[str, Any]) -> QualityJudge:
    """A judge from a resolved configuration, or from ``QualityJudge.from_pretrained``'s arguments (what
    Ray workers and service replicas are given)."""
    if isinstance(spec, JudgeConfig):
        return QualityJudge.from_config(spec)
    return QualityJudge.from_pretrained(**spec)
