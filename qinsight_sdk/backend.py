"""The model behind the judge: a Qwen2.5-VL checkpoint on a chosen device, and batched generation.

Loading picks the device (CUDA, then MPS, then CPU), the dtype (bf16 where the GPU has it, fp16 on
other GPUs, fp32 on CPU) and the attention kernel (FlashAttention-2 when installed and usable, else
SDPA). Generation renders each conversation with the checkpoint's own chat template, pads on the left
so a batch of different images decodes exactly as each would alone, and reports for every answer
whether it ended or ran out of tokens.
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image

from .decoding import DecodingOptions, seeded
from .errors import ModelLoadError
from .images import PatchSpec, patch_count, to_patches
from .prompts import Message

logger = logging.getLogger("qinsight")
_DTYPES = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16,
           "float16": torch.float16, "half": torch.float16, "fp32": torch.float32, "float32": torch.float32}


@dataclass(frozen=True)
class RatingDistribution:
    """The model's belief about a rating's first two digits, read after a forced answer prefix.

    ``first[i]`` is the probability that the rating starts with the digit ``i + 1`` (1..5, renormalised
    over those five); ``decimals[i, k]`` that the first decimal is ``k`` given that first digit.
    """

    first: torch.Tensor     # (5,) float64
    decimals: torch.Tensor  # (5, 10) float64

    def expected(self) -> tuple[float, float]:
        """Mean and standard deviation of the rating "d.k" under this distribution.

        Each first digit d contributes d + E[k | d] / 10; the spread adds the decimals' own variance
        to the spread between first digits (the law of total variance).
        """
        tenths = torch.arange(10, dtype=torch.float64) / 10
        within_mean = (self.decimals * tenths).sum(-1)
        within_var = (self.decimals * tenths ** 2).sum(-1) - within_mean ** 2
        means = torch.arange(1, 6, dtype=torch.float64) + within_mean
        mean = (self.first * means).sum()
        variance = (self.first * (within_var + (means - mean) ** 2)).sum()
        return float(mean), float(variance.clamp_min(0).sqrt())


@dataclass(frozen=True)
class EncodedBatch:
    """Model inputs for one batch, prepared on the CPU (possibly while the model runs another)."""

    inputs: Any                # BatchFeature: input_ids, attention_mask, pixel_values, image_grid_thw, ...
    images_per_row: list[int]


@dataclass(frozen=True)
class Generation:
    """One answer: its text, and whether the model ended it (False: cut at ``max_new_tokens``)."""

    text: str
    finished: bool


def choose_device(device: str | torch.device = "auto") -> torch.device:
    if str(device) != "auto":
        chosen = torch.device(device)
        if chosen.type == "cuda" and not torch.cuda.is_available():
            raise ModelLoadError(f"device {device!r} asked for, but CUDA is not available here")
        if chosen.type == "mps" and not torch.backends.mps.is_available():
            raise ModelLoadError(f"device {device!r} asked for, but MPS is not available here")
        return chosen
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def choose_dtype(dtype: str | torch.dtype, device: torch.device) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype != "auto":
        if dtype not in _DTYPES:
            raise ModelLoadError(f"dtype {dtype!r} is not one of auto, {', '.join(sorted(_DTYPES))}")
        return _DTYPES[dtype]
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "mps":
        return torch.float16
    return torch.float32


def choose_attention(requested: str | None, device: torch.device, dtype: torch.dtype) -> str:
    if requested:
        return requested
    half = dtype in (torch.float16, torch.bfloat16)
    if device.type == "cuda" and half and importlib.util.find_spec("flash_attn") is not None:
        try:
            from transformers.utils import is_flash_attn_2_available

            if is_flash_attn_2_available():
                return "flash_attention_2"
        except ImportError:
            pass
    return "sdpa"


def _torchvision_works() -> bool:
    try:
        import torchvision  # noqa: F401
    except Exception:  # absent, or a build that does not match torch
        return False
    return True


def load_processor(folder: Path, trust_remote_code: bool = False) -> Any:
    """The checkpoint's processor, left-padding for batched generation.

    transformers 5 builds Qwen2.5-VL's video processor with torchvision; where torchvision is missing
    or broken, an image-only processor from the same files is used instead.
    """
    from transformers import AutoProcessor

    if _torchvision_works():
        processor = AutoProcessor.from_pretrained(folder, local_files_only=True,
                                                  trust_remote_code=trust_remote_code)
    else:
        processor = _image_only_processor_class().from_pretrained(folder, local_files_only=True)
    if not hasattr(processor, "image_processor"):
        raise ModelLoadError(f"{folder} did not give a vision processor (got {type(processor).__name__})")
    processor.tokenizer.padding_side = "left"
    return processor


def _image_only_processor_class() -> type:
    from transformers import Qwen2_5_VLProcessor
    from transformers.processing_utils import ProcessorMixin

    class ImageOnlyQwen2_5_VLProcessor(Qwen2_5_VLProcessor):
        """Qwen2.5-VL's processor without the video modality, which needs torchvision."""

        attributes = ["image_processor", "tokenizer"]   # transformers 4.x checks the parts against this

        def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
            self.image_token = getattr(tokenizer, "image_token", None) or "<|image_pad|>"
            self.video_token = getattr(tokenizer, "video_token", None) or "<|video_pad|>"
            self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
            self.video_token_id = tokenizer.convert_tokens_to_ids(self.video_token)
            ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)

    return ImageOnlyQwen2_5_VLProcessor


def _warn_if_broken_transformers() -> None:
    """pip keeps these releases out; this catches an environment that has one anyway."""
    import transformers
    from packaging.version import Version

    if Version("4.54") <= Version(transformers.__version__) < Version("4.57"):
        logging.getLogger("qinsight").warning(
            "transformers %s gives Qwen2.5-VL different answers in padded batches than alone; "
            "use 4.51.3-4.53.x or 4.57.1 and newer", transformers.__version__)


def _dtype_kwarg(dtype: torch.dtype) -> dict[str, torch.dtype]:
    import transformers
    from packaging.version import Version

    name = "dtype" if Version(transformers.__version__) >= Version("4.56") else "torch_dtype"
    return {name: dtype}


class QwenVLBackend:
    """A loaded Qwen2.5-VL model and processor that turn conversations with images into answers."""

    def __init__(self, model: Any, processor: Any, device: torch.device) -> None:
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
        model.generation_config = GenerationConfig(**{
            key: getattr(self.checkpoint_generation_config, key)
            for key in ("bos_token_id", "eos_token_id", "pad_token_id")})
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
        self._wants_token_types = False  # whether the processor adds mm_token_type_ids (transformers 5)
        self._patch_spec = self._choose_encoder()

    @classmethod
    def load(cls, folder: Path, device: str | torch.device = "auto", dtype: str | torch.dtype = "auto",
             attn_implementation: str | None = None, trust_remote_code: bool = False) -> "QwenVLBackend":
        from transformers import Qwen2_5_VLForConditionalGeneration

        _warn_if_broken_transformers()
        chosen_device = choose_device(device)
        chosen_dtype = choose_dtype(dtype, chosen_device)
        attention = choose_attention(attn_implementation, chosen_device, chosen_dtype)
        try:
            processor = load_processor(folder, trust_remote_code)
            model = Qwen2_5_VLForConditionalGeneration.from_pretrained(
                folder, local_files_only=True, use_safetensors=True, trust_remote_code=trust_remote_code,
                attn_implementation=attention, low_cpu_mem_usage=True,
                device_map={"": chosen_device} if chosen_device.type == "cuda" else None,
                **_dtype_kwarg(chosen_dtype))
        except ModelLoadError:
            raise
        except Exception as exc:
            raise ModelLoadError(f"could not load the model from {folder}: {type(exc).__name__}: {exc}") from exc
        model.to(chosen_device).eval()
        return cls(model, processor, chosen_device)

    @property
    def dtype(self) -> torch.dtype:
        return self.model.dtype

    def render(self, conversation: Sequence[Message]) -> str:
        """The prompt text the chat template makes of one conversation (image placeholders unexpanded)."""
        key = json.dumps(conversation, sort_keys=True)
        if key not in self._rendered:  # a task asks the same conversation of every image
            self._rendered[key] = self.processor.apply_chat_template(list(conversation), tokenize=False,
                                                                     add_generation_prompt=True)
        return self._rendered[key]

    def encode(self, conversations: Sequence[Sequence[Message]], images: Sequence[Sequence[Image.Image]],
               answer_prefix: str = "") -> EncodedBatch:
        """Model inputs for a batch: left-padded token ids, patch vectors and image grids (on the CPU).

        Safe to call from a helper thread while the model runs: tokenizer use is serialised.
        """
        texts = [self.render(c) + answer_prefix for c in conversations]
        flat_images = [image for group in images for image in group]
        if self._patch_spec is None:
            with self._tokenizer_lock:
                inputs = self.processor(text=texts, images=flat_images or None, padding=True,
                                        return_tensors="pt")
        else:
            inputs = self._encode_directly(texts, flat_images, self._patch_spec)
        return EncodedBatch(inputs, [len(group) for group in images])

    def _encode_directly(self, texts: list[str], flat_images: list[Image.Image], spec: PatchSpec) -> Any:
        """What the processor returns, built from :func:`to_patches` and cached token ids.

        Each distinct prompt is tokenised once; its image placeholder is then repeated once per image
        token in id space, which is what tokenising the expanded text gives (special tokens are atomic).
        """
        from transformers import BatchFeature

        sizes = [patch_count(image, spec) for image in flat_images]
        pixel_values = torch.empty(sum(sizes), 3 * spec.temporal * spec.patch ** 2)
        starts = np.cumsum([0] + sizes)
        grids = [to_patches(image, spec, out=pixel_values[starts[k]:starts[k + 1]])[1]
                 for k, image in enumerate(flat_images)]
        counts = iter([t * h * w // spec.merge ** 2 for t, h, w in grids])
        rows = []
        for text in texts:
            ids: list[int] = []
            for token in self._token_ids(text):
                ids.extend([token] * next(counts) if token == self._image_token_id else (token,))
            rows.append(ids)
        width = max(len(r) for r in rows)
        input_ids = torch.full((len(rows), width), self.processor.tokenizer.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
        for row, ids in enumerate(rows):  # left padding, as batched generation needs
            input_ids[row, width - len(ids):] = torch.tensor(ids, dtype=torch.long)
            attention_mask[row, width - len(ids):] = 1
        data: dict[str, Any] = {"input_ids": input_ids, "attention_mask": attention_mask}
        if self._wants_token_types:
            data["mm_token_type_ids"] = (input_ids == self._image_token_id).long()
        if grids:
            data["pixel_values"] = pixel_values
            data["image_grid_thw"] = torch.tensor(grids)
        return BatchFeature(data)

    def _token_ids(self, text: str) -> list[int]:
        if text not in self._tokenised:
            with self._tokenizer_lock:
                self._tokenised[text] = self.processor.tokenizer(text, add_special_tokens=False)["input_ids"]
        return self._tokenised[text]

    def _choose_encoder(self) -> PatchSpec | None:
        """Our direct encoder if it reproduces the processor on a probe batch, else None (processor)."""
        ip = self.processor.image_processor
        try:
            spec = PatchSpec(mean=tuple(ip.image_mean), std=tuple(ip.image_std), rescale=ip.rescale_factor,
                             patch=ip.patch_size, temporal=ip.temporal_patch_size, merge=ip.merge_size)
            probe_text = [f"x<|vision_start|>{self._image_token}<|vision_end|>y"] * 2
            rng = np.random.default_rng(0)
            probe_images = [Image.fromarray(rng.integers(0, 256, (56, 84, 3), dtype=np.uint8)),
                            Image.fromarray(rng.integers(0, 256, (112, 56, 3), dtype=np.uint8))]
            expected = self.processor(text=list(probe_text), images=probe_images, padding=True,  # 4.51 edits the list
                                      return_tensors="pt")
            self._wants_token_types = "mm_token_type_ids" in expected
            ours = self._encode_directly(probe_text, probe_images, spec)
            same = set(ours) == set(expected) and all(
                torch.allclose(ours[k].float(), expected[k].float(), atol=1e-4) for k in expected)
        except Exception as exc:  # an unusual processor: use it as it is
            logger.info("direct image encoding unavailable (%s); using the processor", exc)
            return None
        if not same:
            logger.info("direct image encoding differs from this processor; using the processor")
        return spec if same else None

    def generate(self, batch: EncodedBatch, decoding: DecodingOptions) -> list[list[Generation]]:
        """``decoding.num_samples`` answers per conversation, in order, as one batched call."""
        inputs = batch.inputs.to(self.device)
        config, processors = decoding.generation_config(self.checkpoint_generation_config)
        with torch.inference_mode(), seeded(decoding.seed if decoding.do_sample else None, self.device):
            output = self.model.generate(**inputs, generation_config=config, logits_processor=processors)
        answers = output[:, inputs["input_ids"].shape[1]:].cpu()
        with self._tokenizer_lock:
            decoded = self.processor.tokenizer.batch_decode(answers, skip_special_tokens=True)
        finished = [bool(self._end_ids & set(row.tolist())) for row in answers]
        flat = [Generation(text, done) for text, done in zip(decoded, finished)]
        n = decoding.num_samples
        return [flat[i * n:(i + 1) * n] for i in range(len(batch.images_per_row))]

    def _digit_ids(self) -> tuple[list[int], int]:
        """Token ids of "0".."9" and ".", which fast scores need to be single tokens."""
        ids = [self._token_ids(c) for c in "0123456789."]
        if any(len(i) != 1 for i in ids):
            raise ValueError("fast scores need a tokenizer that writes each digit and '.' as one token")
        return [i[0] for i in ids[:10]], ids[10][0]

    def rating_distributions(self, batch: EncodedBatch) -> list[RatingDistribution]:
        """Each row's rating digits, read from one prefill plus one two-token cached step.

        The batch must be encoded with the answer forced up to the rating (``answer_prefix``). The
        prefill gives the first digit; then the cache is repeated five times per row and the tokens
        "d." for d = 1..5 appended in one step, which gives the first decimal under each first digit.
        """
        digits, dot = self._digit_ids()
        inputs = batch.inputs.to(self.device)
        mask = inputs["attention_mask"]
        rows, length = mask.shape
        with torch.inference_mode():
            prefill = self.model(**inputs, use_cache=True, **self._last_logits_only)
            cache = getattr(prefill, "cache", None) or prefill.past_key_values
            first = _probabilities(prefill.logits[:, -1], digits[1:6])
            # one step for all five first digits: each row's cache repeated five times
            next_position = self._next_positions(inputs, batch.images_per_row).to(self.device)
            next_position = next_position.repeat_interleave(5).view(-1, 1)
            positions = (next_position + torch.arange(2, device=self.device)).unsqueeze(0).expand(3, -1, 2)
            step_mask = torch.cat([mask, mask.new_ones(rows, 2)], dim=1).repeat_interleave(5, dim=0)
            step = torch.tensor([[digit, dot] for digit in digits[1:6]], device=self.device).repeat(rows, 1)
            cache.batch_repeat_interleave(5)
            out = self.model(input_ids=step, attention_mask=step_mask, position_ids=positions,
                             cache_position=torch.arange(length, length + 2, device=self.device),
                             use_cache=True, **{self._cache_argument: cache}, **self._last_logits_only)
            decimals = _probabilities(out.logits[:, -1], digits).view(rows, 5, 10)
        return [RatingDistribution(first[i], decimals[i]) for i in range(rows)]

    def _next_positions(self, inputs: Any, images_per_row: list[int]) -> torch.Tensor:
        """Per row, the rotary position that follows the prompt under Qwen2.5-VL's 3-D positions.

        Text tokens advance the position by one each; an image of h x w merged tokens spans only
        max(h, w) positions. So the next position is the prompt's real length, less each image's
        tokens, plus each image's span. (Checked against full forwards in the tests.)
        """
        merge = self.processor.image_processor.merge_size
        grids = inputs["image_grid_thw"].tolist() if "image_grid_thw" in inputs else []
        lengths = inputs["attention_mask"].sum(dim=1).tolist()
        positions, image = [], 0
        for length, count in zip(lengths, images_per_row):
            for t, h, w in grids[image:image + count]:
                length += max(t, h // merge, w // merge) - t * (h // merge) * (w // merge)
            image += count
            positions.append(length)
        return torch.tensor(positions, dtype=torch.long)


def _probabilities(logits: torch.Tensor, token_ids: list[int]) -> torch.Tensor:
    """Softmax over the given tokens only, in float64 (so batch composition cannot change the result)."""
    return torch.softmax(logits[:, token_ids].double(), dim=-1).cpu()
