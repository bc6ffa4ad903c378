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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from PIL import Image

from .decoding import DecodingOptions, seeded
from .errors import ModelLoadError
from .prompts import Message

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

        def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
            self.image_token = getattr(tokenizer, "image_token", None) or "<|image_pad|>"
            self.video_token = getattr(tokenizer, "video_token", None) or "<|video_pad|>"
            self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
            self.video_token_id = tokenizer.convert_tokens_to_ids(self.video_token)
            ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)

    return ImageOnlyQwen2_5_VLProcessor


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
        eos = self.checkpoint_generation_config.eos_token_id
        self._end_ids = set(eos if isinstance(eos, (list, tuple)) else [eos]) - {None}

    @classmethod
    def load(cls, folder: Path, device: str | torch.device = "auto", dtype: str | torch.dtype = "auto",
             attn_implementation: str | None = None, trust_remote_code: bool = False) -> "QwenVLBackend":
        from transformers import Qwen2_5_VLForConditionalGeneration

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
        return self.processor.apply_chat_template(list(conversation), tokenize=False, add_generation_prompt=True)

    def _encode(self, conversations: Sequence[Sequence[Message]], images: Sequence[Sequence[Image.Image]],
                answer_prefix: str = "") -> Any:
        texts = [self.render(c) + answer_prefix for c in conversations]
        flat_images = [image for group in images for image in group]
        inputs = self.processor(text=texts, images=flat_images or None, padding=True, return_tensors="pt")
        return inputs.to(self.device)

    def generate(self, conversations: Sequence[Sequence[Message]], images: Sequence[Sequence[Image.Image]],
                 decoding: DecodingOptions) -> list[list[Generation]]:
        """``decoding.num_samples`` answers per conversation, in order, as one batched call."""
        inputs = self._encode(conversations, images)
        config, processors = decoding.generation_config(self.checkpoint_generation_config)
        with torch.inference_mode(), seeded(decoding.seed if decoding.do_sample else None, self.device):
            output = self.model.generate(**inputs, generation_config=config, logits_processor=processors)
        answers = output[:, inputs["input_ids"].shape[1]:].cpu()
        decoded = self.processor.tokenizer.batch_decode(answers, skip_special_tokens=True)
        finished = [bool(self._end_ids & set(row.tolist())) for row in answers]
        flat = [Generation(text, done) for text, done in zip(decoded, finished)]
        n = decoding.num_samples
        return [flat[i * n:(i + 1) * n] for i in range(len(conversations))]

    def _digit_ids(self) -> list[int]:
        ids = [self.processor.tokenizer.encode(str(d), add_special_tokens=False) for d in range(10)]
        if any(len(i) != 1 for i in ids):
            raise ValueError("fast scores need a tokenizer that writes each digit as one token")
        return [i[0] for i in ids]

    def rating_distributions(self, conversations: Sequence[Sequence[Message]],
                             images: Sequence[Sequence[Image.Image]], answer_prefix: str) -> list[RatingDistribution]:
        """Each conversation's rating digits, read from one prefill plus one two-token step per first digit.

        The prompt is followed by ``answer_prefix`` (the answer up to the rating). The prefill gives the
        first digit; then, for each first digit d in 1..5, the tokens "d." are appended on the cached
        prompt to read the first decimal, and the cache is cut back for the next d.
        """
        digits = self._digit_ids()
        dot = self.processor.tokenizer.encode(".", add_special_tokens=False)
        if len(dot) != 1:
            raise ValueError("fast scores need a tokenizer that writes '.' as one token")
        inputs = self._encode(conversations, images, answer_prefix)
        mask = inputs["attention_mask"]
        rows, length = mask.shape
        with torch.inference_mode():
            prefill = self.model(**inputs, use_cache=True)
            cache = getattr(prefill, "cache", None) or prefill.past_key_values
            first = _probabilities(prefill.logits[:, -1], digits[1:6])
            next_position = self._next_positions(inputs).to(self.device).view(rows, 1)
            positions = (next_position + torch.arange(2, device=self.device)).unsqueeze(0).expand(3, rows, 2)
            step_mask = torch.cat([mask, mask.new_ones(rows, 2)], dim=1)
            decimals = []
            for digit in digits[1:6]:
                step = torch.tensor([[digit, dot[0]]], device=self.device).expand(rows, 2)
                out = self.model(input_ids=step, attention_mask=step_mask, position_ids=positions,
                                 cache_position=torch.arange(length, length + 2, device=self.device),
                                 use_cache=True, **{self._cache_argument: cache})
                cache.crop(-2)  # drop the two candidate tokens again
                decimals.append(_probabilities(out.logits[:, -1], digits))
        decimals_by_row = torch.stack(decimals, dim=1)  # (rows, 5, 10)
        return [RatingDistribution(first[i], decimals_by_row[i]) for i in range(rows)]

    def _next_positions(self, inputs: Any) -> torch.Tensor:
        """Per row, the rotary position that follows the prompt (Qwen2.5-VL's 3-D positions).

        Computed by the model's own ``get_rope_index`` (on the inner model since transformers 4.52) and
        taken as the largest prompt position plus one, which holds whatever padding convention a
        transformers version uses internally.
        """
        inner = getattr(self.model, "model", None)
        owner = inner if hasattr(inner, "get_rope_index") else self.model
        extra = {"mm_token_type_ids": inputs["mm_token_type_ids"]} if "mm_token_type_ids" in inputs else {}
        positions, _ = owner.get_rope_index(inputs["input_ids"], image_grid_thw=inputs.get("image_grid_thw"),
                                            attention_mask=inputs["attention_mask"], **extra)
        return positions.amax(dim=(0, 2)) + 1


def _probabilities(logits: torch.Tensor, token_ids: list[int]) -> torch.Tensor:
    """Softmax over the given tokens only, in float64 (so batch composition cannot change the result)."""
    return torch.softmax(logits[:, token_ids].double(), dim=-1).cpu()
