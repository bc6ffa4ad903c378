"""The Qwen2.5-VL backend: batched encoding, generation and fast-score digits for a loaded checkpoint.

Generation renders each conversation with the checkpoint's own chat template, pads on the left so a
batch of different images decodes exactly as each would alone, and reports for every answer whether it
ended or ran out of tokens. Loading itself (device, dtype, attention) is :mod:`qinsight_sdk.loading`.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import logging
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from transformers import LogitsProcessor

from ...errors import ModelLoadError, UsageError
from ...io.images import PatchSpec, patch_count, to_patches, to_video_patches, video_patch_count
from ...io.video_sampling import SECONDS_PER_GRID
from ...io.videos import VideoClip
from ...judging.decoding import DecodingOptions, seeded
from ...judging.prompts import IMAGE_SLOT, Message
from ..base import EncodedBatch, Generation, RatingDistribution, TwoDigitDistribution
from ..quantization import Quantization, quantization_name
from .loading import load_model
from .positions import install_positions, rope_index
from .vision import VisionMemory, image_key, install_fast_paths, vision_tower

logger = logging.getLogger("qinsight")


class QwenVLBackend:
    """A loaded Qwen2.5-VL model and processor that turn conversations with images into answers."""

    def __init__(self, model: Any, processor: Any, device: torch.device, stock_vision: bool = False) -> None:
        """``stock_vision`` keeps transformers' own vision path and encodes every image anew, as a baseline
        to compare with (otherwise :mod:`qinsight_sdk.vision` makes it faster, checked on a probe first)."""
        from transformers import GenerationConfig

        self.model = model
        self.processor = processor
        self.device = device
        # The checkpoint's decoding defaults are applied by DecodingOptions alone. The model keeps only
        # its token ids: transformers 4.5x would otherwise put the checkpoint's values back wherever a
        # requested value equals the library default (turning temperature 1.0 into 0.1, for one).
        self.checkpoint_generation_config = model.generation_config
        if self.checkpoint_generation_config.pad_token_id is None:
            self.checkpoint_generation_config.pad_token_id = processor.tokenizer.pad_token_id
        model.generation_config = GenerationConfig(
            **{
                key: getattr(self.checkpoint_generation_config, key)
                for key in ("bos_token_id", "eos_token_id", "pad_token_id")
            }
        )
        # transformers 5 renamed forward's ``past_key_values`` to ``cache``
        forward_parameters = inspect.signature(model.forward).parameters
        self._cache_argument = "cache" if "cache" in forward_parameters else "past_key_values"
        # only the last position's logits are read: skip the vocabulary projection elsewhere (5.x)
        self._last_logits_only = {"logits_to_keep": 1} if "logits_to_keep" in forward_parameters else {}
        eos = self.checkpoint_generation_config.eos_token_id
        self._end_ids = set(eos if isinstance(eos, (list, tuple)) else [eos]) - {None}
        self._rendered: dict[str, str] = {}
        self._tokenizer_lock = threading.Lock()  # Rust tokenizers refuse concurrent use
        self._tokenised: dict[str, list[int]] = {}
        self._image_token = getattr(processor, "image_token", "<|image_pad|>")
        self._image_token_id = processor.tokenizer.convert_tokens_to_ids(self._image_token)
        self._video_token_id = processor.tokenizer.convert_tokens_to_ids(
            getattr(processor, "video_token", "<|video_pad|>")
        )
        install_positions(model)  # the positions the judges were trained with, at every transformers release
        self._wants_token_types = False  # whether the processor adds mm_token_type_ids (transformers 5)
        self._patch_spec = self._choose_encoder()  # None: the processor encodes
        tower = vision_tower(model)
        self.vision: VisionMemory | None = None  # none yet while the probe below is encoded
        self.fast_vision = not stock_vision and install_fast_paths(tower, self._vision_probe)
        self.vision = None if stock_vision else VisionMemory(tower)

    @classmethod
    def load(
        cls,
        folder: Path,
        device: str | torch.device = "auto",
        dtype: str | torch.dtype = "auto",
        attn_implementation: str | None = None,
        trust_remote_code: bool = False,
        quantization: Quantization = None,
        stock_vision: bool = False,
    ) -> QwenVLBackend:
        """The checkpoint in ``folder``, loaded as :func:`qinsight_sdk.loading.load_model` chooses, and
        checked to give finite logits."""
        backend = cls(
            *load_model(folder, device, dtype, attn_implementation, trust_remote_code, quantization),
            stock_vision=stock_vision,
        )
        backend.check_logits(folder)
        return backend

    def check_logits(self, folder: Path) -> None:
        """One forward pass over a small grey image and a few words. Logits that are not finite numbers
        (NaN weights, or a float16 overflow) would turn every answer into garbage or every fast score into
        an error, so such a checkpoint is refused at load instead of after a whole run."""
        conversation = [
            {"role": "user", "content": [dict(IMAGE_SLOT), {"type": "text", "text": "Rate the image quality."}]}
        ]
        batch = self.encode([conversation], [[Image.new("RGB", (56, 56), (128, 128, 128))]])
        with torch.inference_mode(), self._expecting(batch):
            logits = self.model(**batch.inputs.to(self.device), **self._last_logits_only).logits
        if not bool(torch.isfinite(logits).all()):
            hint = "; float16 can overflow in this model: try dtype bf16 or fp32" if self.dtype == torch.float16 else ""
            raise ModelLoadError(
                f"{folder}: the model's logits on a probe input are not finite numbers: its "
                f"weights are broken (NaN or infinite values){hint}"
            )

    @property
    def dtype(self) -> torch.dtype:
        return self.model.dtype

    @property
    def module(self) -> torch.nn.Module:
        """The weights as one module, for a memory manager (ComfyUI's) to move, offload and free."""
        return self.model

    @property
    def quantization(self) -> str | None:
        """ "8bit" or "4bit" when the weights are quantized, else None."""
        return quantization_name(self.model)

    def memory_footprint(self) -> int:
        return int(self.model.get_memory_footprint())

    def to(self, device: str | torch.device) -> QwenVLBackend:
        """Move the weights; later batches are sent to the same device.

        A quantized model stays where it was quantized: bitsandbytes' moves are not reliable (transformers
        4.57 refuses to move an 8-bit model; 4-bit weights that ran on a CPU with AVX-512 BF16 are repacked
        for it, and ``.to()`` does not undo that), so moving one is refused with what to do instead."""
        device = torch.device(device)
        if self.quantization:
            if _same_device(device, self.device):
                return self  # not even a no-op .to(): transformers 4.57 refuses any for an 8-bit model
            raise UsageError(
                f"a {self.quantization} judge cannot move from {self.device} to {device}: load it "
                f"again there (QualityJudge.from_pretrained(..., device={str(device)!r}))"
            )
        self.device = device
        self.model.to(self.device)
        return self

    def render(self, conversation: Sequence[Message], template_options: Mapping[str, Any] | None = None) -> str:
        """The prompt text the chat template makes of one conversation (image placeholders unexpanded),
        with a judge profile's template options (VisualQuality-R1's ``add_vision_id``, say)."""
        options = dict(template_options or {})
        key = json.dumps([conversation, options], sort_keys=True)
        if key not in self._rendered:  # a task asks the same conversation of every image
            if options:  # the processor of transformers 4.51 drops template variables; the tokenizer passes them on
                text = self.processor.tokenizer.apply_chat_template(
                    list(conversation),
                    chat_template=self.processor.chat_template,
                    tokenize=False,
                    add_generation_prompt=True,
                    **options,
                )
            else:
                text = self.processor.apply_chat_template(
                    list(conversation), tokenize=False, add_generation_prompt=True
                )
            self._rendered[key] = text
        return self._rendered[key]

    def encode(
        self,
        conversations: Sequence[Sequence[Message]],
        images: Sequence[Sequence[Image.Image]],
        answer_prefix: str = "",
        template_options: Mapping[str, Any] | None = None,
    ) -> EncodedBatch:
        """Model inputs for a batch: left-padded token ids, patch vectors and image grids (on the CPU).

        Safe to call from a helper thread while the model runs: tokenizer use is serialised.
        """
        return self.encode_texts([self.render(c, template_options) + answer_prefix for c in conversations], images)

    def encode_texts(self, texts: Sequence[str], images: Sequence[Sequence[Image.Image]]) -> EncodedBatch:
        """Model inputs for conversations already rendered (:meth:`render`, then anything appended: the
        tiny judge's training appends each row's answer), and each one's images.

        Args:
            texts: one rendered text per row, each with its image placeholders.
            images: each row's images, in the order of its placeholders.

        Returns:
            The batch, left-padded.
        """
        texts = list(texts)
        flat_images = [image for group in images for image in group]
        if self._patch_spec is None:
            if any(isinstance(item, VideoClip) for item in flat_images):
                raise UsageError(
                    "this checkpoint's processor encodes images unlike Qwen2-VL's, so it cannot take videos"
                )
            with self._tokenizer_lock:
                inputs = self.processor(text=texts, images=flat_images or None, padding=True, return_tensors="pt")
        else:
            inputs = self._encode_directly(texts, flat_images, self._patch_spec)
        remembering = self.vision is not None and self.vision.remembering_now
        kinds = {isinstance(item, VideoClip) for item in flat_images}
        # the tower is called once per kind: features are remembered for batches of one kind
        keys = tuple(_media_key(item) for item in flat_images) if remembering and len(kinds) == 1 else ()
        return EncodedBatch(inputs, [len(group) for group in images], keys)

    def reusing_images(self) -> Any:
        """Within this block an image's features, once computed, are reused (see :mod:`qinsight_sdk.vision`)."""
        return self.vision.remembering() if self.vision is not None else contextlib.nullcontext()

    def _expecting(self, batch: EncodedBatch) -> Any:
        """Tells the vision memory which images the next model call holds."""
        return self.vision.expecting(batch.image_keys) if self.vision is not None else contextlib.nullcontext()

    def _vision_probe(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Pixels of two images whose windows differ in length (and from each other's), on the tower's device."""
        rng = np.random.default_rng(1)
        images = [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for h, w in ((252, 168), (84, 140))]
        conversation = [{"role": "user", "content": [dict(IMAGE_SLOT)]}]
        inputs = self.encode([conversation] * 2, [[image] for image in images]).inputs
        tower = vision_tower(self.model)
        pixels = inputs["pixel_values"].to(self.device, next(tower.parameters()).dtype)
        return pixels, inputs["image_grid_thw"].to(self.device)

    def _encode_directly(self, texts: list[str], flat_media: list[Any], spec: PatchSpec) -> Any:
        """What the processor returns, built from :func:`to_patches` (images), :func:`to_video_patches`
        (videos) and cached token ids.

        Each distinct prompt is tokenised once; its image and video placeholders are then repeated once per
        token in id space, which is what tokenising the expanded text gives (special tokens are atomic).
        Every video gets ``second_per_grid_ts`` = 1.0, the value the judges were trained with
        (:data:`qinsight_sdk.io.video_sampling.SECONDS_PER_GRID`).
        """
        from transformers import BatchFeature

        images = [m for m in flat_media if not isinstance(m, VideoClip)]
        videos = [m for m in flat_media if isinstance(m, VideoClip)]
        data: dict[str, Any] = {}
        counts: dict[int, Any] = {}
        for token, items, encode, size, prefix in (
            (self._image_token_id, images, to_patches, patch_count, "image"),
            (
                self._video_token_id,
                videos,
                lambda v, s, out: to_video_patches(v.frames, s, out),
                lambda v, s: video_patch_count(v.frames, s),
                "video",
            ),
        ):
            if not items:
                continue
            sizes = [size(item, spec) for item in items]
            pixel_values = np.empty((sum(sizes), 3 * spec.temporal * spec.patch**2), dtype=np.float32)
            starts = np.cumsum([0] + sizes)
            grids = [encode(item, spec, pixel_values[starts[k] : starts[k + 1]])[1] for k, item in enumerate(items)]
            counts[token] = iter([t * h * w // spec.merge**2 for t, h, w in grids])
            data["pixel_values" if prefix == "image" else "pixel_values_videos"] = torch.from_numpy(pixel_values)
            data[f"{prefix}_grid_thw"] = torch.tensor(grids)
        if videos:
            data["second_per_grid_ts"] = torch.full((len(videos),), SECONDS_PER_GRID)
        rows = []
        for text in texts:
            ids: list[int] = []
            for token in self._token_ids(text):
                ids.extend([token] * next(counts[token]) if token in counts else (token,))
            rows.append(ids)
        width = max(len(r) for r in rows)
        input_ids = torch.full((len(rows), width), self.processor.tokenizer.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
        for row, ids in enumerate(rows):  # left padding, as batched generation needs
            input_ids[row, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
            attention_mask[row, width - len(ids) :] = 1
        tokens: dict[str, Any] = {"input_ids": input_ids, "attention_mask": attention_mask}
        if self._wants_token_types:  # transformers 5: 1 marks image tokens, 2 video tokens
            tokens["mm_token_type_ids"] = (input_ids == self._image_token_id).long() + 2 * (
                input_ids == self._video_token_id
            ).long()
        return BatchFeature({**tokens, **data})

    def _token_ids(self, text: str) -> list[int]:
        if text not in self._tokenised:
            with self._tokenizer_lock:
                self._tokenised[text] = self.processor.tokenizer(text, add_special_tokens=False)["input_ids"]
        return self._tokenised[text]

    def _choose_encoder(self) -> PatchSpec | None:
        """Our direct encoder if it reproduces the processor on a probe batch, else None (processor)."""
        ip = self.processor.image_processor
        try:
            spec = PatchSpec(
                mean=tuple(ip.image_mean),
                std=tuple(ip.image_std),
                rescale=ip.rescale_factor,
                patch=ip.patch_size,
                temporal=ip.temporal_patch_size,
                merge=ip.merge_size,
            )
            probe_text = [f"x<|vision_start|>{self._image_token}<|vision_end|>y"] * 2
            rng = np.random.default_rng(0)
            probe_images = [
                Image.fromarray(rng.integers(0, 256, (56, 84, 3), dtype=np.uint8)),
                Image.fromarray(rng.integers(0, 256, (112, 56, 3), dtype=np.uint8)),
            ]
            expected = self.processor(
                text=list(probe_text),
                images=probe_images,
                padding=True,  # 4.51 edits the list
                return_tensors="pt",
            )
            self._wants_token_types = "mm_token_type_ids" in expected
            ours = self._encode_directly(probe_text, probe_images, spec)
            same = set(ours) == set(expected) and all(
                torch.allclose(ours[k].float(), expected[k].float(), atol=1e-4) for k in expected
            )
        except Exception as exc:  # an unusual processor: use it as it is
            logger.info("direct image encoding unavailable (%s); using the processor", exc)
            return None
        if not same:
            logger.info("direct image encoding differs from this processor; using the processor")
        return spec if same else None

    def generate(
        self, batch: EncodedBatch, decoding: DecodingOptions, rating_key: str | None = None
    ) -> list[list[Generation]]:
        """``decoding.num_samples`` answers per conversation, in order, as one batched call.

        With ``rating_key``, the logits of the digit tokens are kept at every step (a few numbers per
        row and step, recorded before any penalty or sampling filter changes them), and each answer's
        ``rating`` is read where the digits it wrote after the key start: the first digit's probabilities
        from those logits, then each first digit's own decimals from a few cached steps that continue the
        generation's cache (:meth:`_rating_tree`); no second prefill.
        """
        inputs = batch.inputs.to(self.device)
        config, processors = decoding.generation_config(self.checkpoint_generation_config)
        recorder = self._digit_recorder() if rating_key is not None else None
        if recorder is not None:
            processors.insert(0, recorder)
            config.return_dict_in_generate = True  # with the cache, which the rating's decimals continue
        with (
            torch.inference_mode(),
            seeded(decoding.seed if decoding.do_sample else None, self.device),
            self._expecting(batch),
        ):
            output = self.model.generate(**inputs, generation_config=config, logits_processor=processors)
        sequences = output.sequences if recorder is not None else output
        width = inputs["input_ids"].shape[1]
        answers = sequences[:, width:].cpu()
        with self._tokenizer_lock:
            decoded = self.processor.tokenizer.batch_decode(answers, skip_special_tokens=True)
        ratings: list[RatingDistribution | None] = [None] * len(decoded)
        if recorder is not None:
            starts = recorder.rating_starts(answers, rating_key, self._decode_tail)
            ratings = self._ratings_after_generation(
                _cache_of(output), inputs, batch, decoding.num_samples, recorder, starts
            )
        flat = [
            Generation(text, *self._length(row.tolist()), rating=rating)
            for text, row, rating in zip(decoded, answers, ratings)
        ]
        n = decoding.num_samples
        return [flat[i * n : (i + 1) * n] for i in range(len(batch.images_per_row))]

    def _ratings_after_generation(
        self,
        cache: Any,
        inputs: Any,
        batch: EncodedBatch,
        samples: int,
        recorder: _DigitLogits,
        starts: list[int | None],
    ) -> list[RatingDistribution | None]:
        """Each answer's rating distribution where its rating starts (None where it wrote none), continuing
        the generation's own cache: the answer's later tokens are masked out, not cropped, since each row's
        rating starts elsewhere."""
        rows = [row for row, start in enumerate(starts) if start is not None]
        if not rows:
            return [None] * len(starts)
        width = inputs["input_ids"].shape[1]
        prompt_mask = inputs["attention_mask"].repeat_interleave(samples, dim=0)
        length = cache.get_seq_length()
        mask = torch.zeros(len(starts), length, dtype=prompt_mask.dtype, device=self.device)
        mask[:, :width] = prompt_mask
        for row in rows:
            mask[row, width : width + starts[row]] = 1
        next_position = self._next_positions(inputs).to(self.device)
        positions = next_position.repeat_interleave(samples) + torch.tensor(
            [start or 0 for start in starts], device=self.device
        )
        first = torch.stack([recorder.first_digit(row, starts[row]) for row in rows])
        chosen = torch.tensor(rows, device=self.device)
        with torch.inference_mode():
            cache.batch_select_indices(chosen)
            found = self._rating_tree(cache, mask[chosen], positions[chosen], first)
        ratings: list[RatingDistribution | None] = [None] * len(starts)
        for row, rating in zip(rows, found):
            ratings[row] = rating
        return ratings

    def _digit_recorder(self) -> _DigitLogits | None:
        try:
            return _DigitLogits(*self.rating_token_ids())
        except UsageError:  # a tokenizer that writes digits several at a time: no rating probabilities
            return None

    def _decode_tail(self, ids: list[int]) -> str:
        with self._tokenizer_lock:
            return self.processor.tokenizer.decode(ids, skip_special_tokens=True)

    def _length(self, tokens: list[int]) -> tuple[bool, int]:
        """Whether an answer's tokens hold an end token, and how many there are up to and with it."""
        end = next((i for i, token in enumerate(tokens) if token in self._end_ids), None)
        return end is not None, len(tokens) if end is None else end + 1

    @property
    def encodes_directly(self) -> bool:
        """Whether images are encoded by :func:`to_patches` (faster) rather than the checkpoint's processor."""
        return self._patch_spec is not None

    def rating_token_ids(self) -> tuple[list[int], int]:
        """Token ids of "0".."9" and ".", which fast scores need to be single tokens."""
        ids = [self._token_ids(c) for c in "0123456789."]
        if any(len(i) != 1 for i in ids):
            raise UsageError("fast scores need a tokenizer that writes each digit and '.' as one token")
        return [i[0] for i in ids[:10]], ids[10][0]

    def rating_distributions(self, batch: EncodedBatch) -> list[RatingDistribution]:
        """Each row's rating digits, read from one prefill plus two short cached steps.

        The batch must be encoded with the answer forced up to the rating (``answer_prefix``). The
        prefill gives the first digit; :meth:`_rating_tree` gives the decimals under each first digit.
        """
        digits, _ = self.rating_token_ids()
        inputs = batch.inputs.to(self.device)
        with torch.inference_mode(), self._expecting(batch):
            prefill = self.model(**inputs, use_cache=True, **self._last_logits_only)
            cache = _cache_of(prefill)
            first = _probabilities(prefill.logits[:, -1], digits[1:6])
            positions = self._next_positions(inputs).to(self.device)
            return self._rating_tree(cache, inputs["attention_mask"], positions, first)

    def two_digit_distributions(self, batch: EncodedBatch) -> list[TwoDigitDistribution]:
        """Each row's two-digit rating (a video judge's 0-100 score), read from one prefill and one short
        cached step: the first digit (1..9) where the forced prefix ends, then the second under each first
        digit worth continuing (:data:`PRUNED_MASS`).

        Args:
            batch: from :meth:`encode`, with the answer forced up to the rating.

        Returns:
            One distribution per row, in order.
        """
        digits, _ = self.rating_token_ids()
        inputs = batch.inputs.to(self.device)
        with torch.inference_mode(), self._expecting(batch):
            prefill = self.model(**inputs, use_cache=True, **self._last_logits_only)
            tens = _probabilities(prefill.logits[:, -1], digits[1:10])
            units = torch.full((len(tens), 9, 10), 0.1, dtype=torch.float64)
            branches = _likely_branches(tens)
            if branches:  # none: probabilities that are not numbers, which the judge reports
                mask = inputs["attention_mask"]
                out = self._continue(
                    _cache_of(prefill),
                    mask,
                    [row for row, _ in branches],
                    [[digits[d + 1]] for _, d in branches],
                    self._next_positions(inputs).to(self.device)[[row for row, _ in branches]],
                    mask.shape[1],
                )
                for (row, d), found in zip(branches, _probabilities(out, digits)):
                    units[row, d] = found
        return [TwoDigitDistribution(tens[i], units[i]) for i in range(len(tens))]

    def _rating_tree(
        self, cache: Any, mask: torch.Tensor, positions: torch.Tensor, first: torch.Tensor
    ) -> list[RatingDistribution]:
        """The decimals of a rating under each of its first digits, read by continuing ``cache``.

        ``cache`` holds one row per rating (``mask`` says which of its columns each row sees), the rating
        starts at rotary position ``positions[row]``, and ``first`` (rows, 5) is its first digit's
        distribution. One cached step appends "d." for each first digit d (each row's cache repeated per
        branch), a second appends each first decimal e after "d."; so each first digit gets its own first
        decimal and each "d.e" its own second decimal. Branches whose probabilities together are below
        :data:`PRUNED_MASS` per row are not continued (their unread digits count as uniform, which moves
        the mean by less than 1e-7), so a confident model continues a few branches, not 5 + 50.
        """
        digits, dot = self.rating_token_ids()
        rows = len(first)
        decimals = torch.full((rows, 5, 10), 0.1, dtype=torch.float64)
        hundredths = torch.full((rows, 5, 10, 10), 0.1, dtype=torch.float64)
        first_branches = _likely_branches(first)  # [(row, d)]
        if not first_branches:  # probabilities that are not numbers: the judge reports the error
            return [RatingDistribution(first[i].cpu(), decimals[i], hundredths[i]) for i in range(rows)]
        length = mask.shape[1]
        out = self._continue(
            cache,
            mask,
            [row for row, _ in first_branches],
            [[digits[d + 1], dot] for _, d in first_branches],
            positions[[row for row, _ in first_branches]],
            length,
        )
        step_one = _probabilities(out, digits)
        for k, (row, d) in enumerate(first_branches):
            decimals[row, d] = step_one[k]
        weights = first[:, :, None] * decimals  # p(d, e), (rows, 5, 10)
        likely = set(_likely_branches(weights.view(rows, 50)))
        second = [(k, e) for k, (row, d) in enumerate(first_branches) for e in range(10) if (row, d * 10 + e) in likely]
        if second:
            step_mask = torch.cat(
                [mask[[row for row, _ in first_branches]], mask.new_ones(len(first_branches), 2)], dim=1
            )
            parents = [k for k, _ in second]
            out = self._continue(
                cache,
                step_mask,
                parents,
                [[digits[e]] for _, e in second],
                positions[[first_branches[k][0] for k in parents]] + 2,
                length + 2,
            )
            step_two = _probabilities(out, digits)
            for j, (k, e) in enumerate(second):
                row, d = first_branches[k]
                hundredths[row, d, e] = step_two[j]
        return [RatingDistribution(first[i].cpu(), decimals[i], hundredths[i]) for i in range(rows)]

    def _continue(
        self,
        cache: Any,
        mask: torch.Tensor,
        parents: list[int],
        tokens: list[list[int]],
        positions: torch.Tensor,
        length: int,
    ) -> torch.Tensor:
        """The next-token logits after appending ``tokens[j]`` to cache row ``parents[j]`` (the cache is
        re-indexed in place to one row per continuation), the first token at rotary ``positions[j]``."""
        index = torch.tensor(parents, device=self.device)
        cache.batch_select_indices(index)
        count, steps = len(tokens), len(tokens[0])
        step_positions = (positions.view(-1, 1) + torch.arange(steps, device=self.device)).unsqueeze(0)
        out = self.model(
            input_ids=torch.tensor(tokens, device=self.device),
            attention_mask=torch.cat([mask[index], mask.new_ones(count, steps)], dim=1),
            position_ids=step_positions.expand(3, -1, -1),
            cache_position=torch.arange(length, length + steps, device=self.device),
            use_cache=True,
            **{self._cache_argument: cache},
            **self._last_logits_only,
        )
        return out.logits[:, -1]

    def _next_positions(self, inputs: Any) -> torch.Tensor:
        """Per row, the rotary position that follows the prompt: its unpadded length plus the delta of
        Qwen2.5-VL's 3-D positions (:func:`qinsight_sdk.backends.qwen2_5_vl.positions.rope_index`, the rule
        the model itself now uses)."""
        vision = self.model.config.vision_config
        _, deltas = rope_index(
            inputs["input_ids"].cpu(),
            inputs["attention_mask"].cpu(),
            inputs["image_grid_thw"].cpu() if "image_grid_thw" in inputs else None,
            inputs["video_grid_thw"].cpu() if "video_grid_thw" in inputs else None,
            inputs["second_per_grid_ts"].cpu() if "second_per_grid_ts" in inputs else None,
            image_token_id=self._image_token_id,
            video_token_id=self._video_token_id,
            merge=vision.spatial_merge_size,
            tokens_per_second=vision.tokens_per_second,
        )
        return inputs["attention_mask"].sum(dim=1).cpu() + deltas[:, 0]


def _same_device(a: torch.device, b: torch.device) -> bool:
    """ "cuda" and "cuda:N" are one device when N is the current one."""
    if a.type != b.type:
        return False
    if a.type != "cuda":
        return True
    current = torch.cuda.current_device()
    return (current if a.index is None else a.index) == (current if b.index is None else b.index)


class _DigitLogits(LogitsProcessor):
    """Keeps, at every generation step, the logits of the tokens "0".."9" (changing nothing), so the
    probabilities at a rating the model wrote can be read after it wrote it."""

    _TAIL_TOKENS = 12  # how much text before a first digit is decoded to look for the rating's key

    def __init__(self, digits: list[int], dot: int) -> None:
        self.digits, self.dot = digits, dot
        self.steps: list[torch.Tensor] = []
        self._columns: torch.Tensor | None = None  # the digits' ids on the model's device, made once

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self._columns is None:  # not a list per step: that would copy it to the device every token
            self._columns = torch.tensor(self.digits, device=scores.device)
        self.steps.append(scores.index_select(1, self._columns).float())
        return scores

    def rating_starts(
        self, answers: torch.Tensor, rating_key: str, decode: Callable[[list[int]], str]
    ) -> list[int | None]:
        """Per answer, the step where the last rating after ``rating_key`` starts (None: no rating)."""
        key = re.compile(rating_key + r"$")
        found = []
        for ids in answers.tolist():
            starts = [
                k
                for k, token in enumerate(ids[: len(self.steps)])
                if token in self.digits[1:6] and key.search(decode(ids[max(0, k - self._TAIL_TOKENS) : k]))
            ]
            found.append(starts[-1] if starts else None)
        return found

    def first_digit(self, row: int, step: int) -> torch.Tensor:
        """The first digit's distribution (1..5) where it was written."""
        return _probabilities(self.steps[step][row : row + 1], list(range(1, 6)))[0]


PRUNED_MASS = 1e-7  # per rating, the most probability whose branches are not continued


def _likely_branches(weights: torch.Tensor) -> list[tuple[int, int]]:
    """(row, column) of the branches worth continuing: all but the least likely ones, which together hold
    at most :data:`PRUNED_MASS` of a row's probability."""
    kept = []
    for row, values in enumerate(weights.tolist()):
        order = sorted(range(len(values)), key=lambda k: values[k])
        dropped, mass = set(), 0.0
        for k in order:
            if mass + values[k] > PRUNED_MASS:
                break
            mass += values[k]
            dropped.add(k)
        kept += [(row, k) for k in range(len(values)) if k not in dropped]
    return kept


def _cache_of(output: Any) -> Any:
    """A model or generate() output's key-value cache (transformers 5 renamed ``past_key_values`` to ``cache``)."""
    cache = getattr(output, "cache", None)
    return cache if cache is not None else output.past_key_values


def _probabilities(logits: torch.Tensor, token_ids: list[int]) -> torch.Tensor:
    """Softmax over the given tokens only, in float64 (so batch composition cannot change the result)."""
    return torch.softmax(logits[:, token_ids].double(), dim=-1).cpu()


def _media_key(item: Any) -> str:
    """A digest of an image's or a video clip's pixels (:class:`VisionMemory`'s key)."""
    return item.key if isinstance(item, VideoClip) else image_key(item)
