"""A tiny judge that answers: the tiny checkpoint taught, on the CPU in about a minute, to write
Q-Insight's format about a visible property of synthetic images, at the sizes users send.

The random tiny checkpoint (:mod:`qinsight_sdk.testing`) only writes gibberish, so on its own it tests
the pipeline's failure paths. This one is fine-tuned (supervised, a few hundred small steps) to answer
as the real weights do: a ``<think>`` block, then ``{"rating": X.YZ}`` with the rating following the
image's brightness (1 + 4 x mean level), ``{"distortion_class": ..., "severity": "moderate"}`` naming a
synthetic distortion of a striped image (noise, blur, darken, or "null" for none), and "Image A" or
"Image B" for the brighter of two images (with or without a reference image first). It learns on images of
28 to 1036 pixels on the long side, any pixel count, aspect ratios up to 4:1 either way, one to three
images per prompt, mostly small ones (they cost the least). It is for end-to-end tests of reason mode,
parsing, rankings, evaluation and nodes, and for plugin developers' CI:

    python -m qinsight_sdk.testing DIR --trained

Training is seeded and the image set fixed, so a build repeats; a built judge is reused from a cache
folder keyed by the recipe's code, the prompts it teaches and the torch and transformers versions.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ...judging.profiles import QINSIGHT

STEPS, BATCH, SEED = 460, 12, 0
LEARNING_RATE, WARMUP, CLIP = 1e-2, 20, 1.0
# the judge saved is an exponential average of the trained weights over about the last 20 steps: the last
# step's weights alone answered 97 of 100 unseen comparisons at transformers 4.51.3, the average 99 or 100
# at each release (a single step's weights sit wherever the last batches pushed them)
AVERAGE_DECAY = 0.95
# the random tiny checkpoint's attention scores start large for its width: shrunk, its language model
# learns to look at the image tokens instead of locking onto the text at this learning rate
ATTENTION_INIT_SCALE = 0.1
STEP_TOKENS = 2400  # a batch's rows x its longest row, roughly (see _tokens)
PROMPT_TOKENS = 180  # a prompt's text tokens with the tiny tokenizer, roughly
MAX_ASPECT = 4
# (shortest long side, longest long side, share of steps): mostly small images, some up to 1036 pixels
SIZE_BUCKETS = ((28, 140, 0.6), (141, 364, 0.2), (365, 700, 0.12), (701, 1036, 0.08))
# the tasks a batch takes in turn, from a seeded start: comparisons and degradations learn slowest
TASKS = ("comparison", "degradation", "score", "comparison-reference", "degradation", "comparison", "degradation")
TRAINING_SEEDS = 1_000_000  # image seeds from here on are training's; tests use smaller ones
COMPARISON_GAP = 0.15  # the least brightness difference of a taught comparison
DISTORTIONS = ("null", "noise", "blur", "darken")
THINK = "<think>\nok\n</think>\n"
MARKER = "qinsight-tiny-judge.json"


def _shape(size: int | tuple[int, int]) -> tuple[int, int]:
    """(height, width) of ``size``: a side for a square, or (width, height) as PIL gives sizes."""
    width, height = (size, size) if isinstance(size, int) else size
    return int(height), int(width)


def _texture(rng: Any, height: int, width: int, spread: int) -> Any:
    """Pixel noise of standard deviation about ``spread`` / sqrt(3) (uniform integers: cheap at 12 MP)."""
    import numpy as np

    return rng.integers(-spread, spread + 1, (height, width, 3), dtype=np.int16)


def brightness_image(level: float, seed: int, size: int | tuple[int, int] = 56) -> Any:
    """A grey image of mean ``level`` (0..1) with a little texture; its true rating is 1 + 4 x level.
    ``size``: a side, or (width, height)."""
    import numpy as np
    from PIL import Image

    height, width = _shape(size)
    pixels = _texture(np.random.default_rng(seed), height, width, 10) + np.int16(round(level * 255))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def distorted_image(distortion: str, seed: int, size: int | tuple[int, int] = 56) -> Any:
    """Vertical stripes, clean ("null") or with one synthetic distortion. ``size``: a side, or (width, height)."""
    import numpy as np
    from PIL import Image, ImageFilter

    rng = np.random.default_rng(seed)
    height, width = _shape(size)
    columns = np.where((np.arange(width) // 4) % 2, 200, 60).astype(np.int16)
    stripes = _texture(rng, height, width, 5) + columns[None, :, None]
    if distortion == "noise":
        stripes += _texture(rng, height, width, 121)
    elif distortion == "darken":
        stripes = stripes * 0.15
    image = Image.fromarray(np.clip(stripes, 0, 255).astype(np.uint8))
    return image.filter(ImageFilter.GaussianBlur(3)) if distortion == "blur" else image


def rating_of(level: float) -> float:
    return round(1 + 4 * level, 2)


def training_size(rng: random.Random, low: int, high: int) -> tuple[int, int]:
    """A (width, height) whose long side is ``low``..``high`` pixels and whose aspect ratio is up to
    :data:`MAX_ASPECT` (log-uniform, either orientation); any pixel count, as users send them."""
    long_side = rng.randint(low, high)
    short_side = max(1, round(long_side / math.exp(rng.uniform(0.0, math.log(MAX_ASPECT)))))
    return (long_side, short_side) if rng.random() < 0.5 else (short_side, long_side)


def _example(
    kind: str, rng: random.Random, seed: int, low: int, high: int
) -> tuple[list[dict[str, Any]], list[Any], str]:
    if kind == "score":
        level = rng.uniform(0.02, 0.98)
        answer = f'{{"rating": {rating_of(level):.2f}}}'
        return QINSIGHT.messages("score"), [brightness_image(level, seed, training_size(rng, low, high))], answer
    if kind == "degradation":
        label = rng.choice(DISTORTIONS)
        severity = "null" if label == "null" else "moderate"
        answer = f'{{"distortion_class": "{label}", "severity": "{severity}"}}'
        return QINSIGHT.messages("degradation"), [distorted_image(label, seed, training_size(rng, low, high))], answer
    first, second = rng.uniform(0.03, 0.97), rng.uniform(0.03, 0.97)
    if abs(first - second) < COMPARISON_GAP:
        second = (first + 0.5) % 1.0
    answer = "Image A" if first > second else "Image B"
    size = training_size(rng, low, high)  # a pair of the same size mostly, as restorations are
    sizes = [size, size] if rng.random() < 0.7 else [size, training_size(rng, low, high)]
    images = [brightness_image(first, seed, sizes[0]), brightness_image(second, seed + 1, sizes[1])]
    if kind == "comparison":
        return QINSIGHT.messages("comparison"), images, answer
    # against a reference (the degraded input): the answer is still the brighter of A and B
    reference = brightness_image(
        rng.uniform(0.0, 1.0), seed + 2, sizes[0] if rng.random() < 0.7 else training_size(rng, low, high)
    )
    return QINSIGHT.messages("comparison", with_reference=True), [reference, *images], answer


def _tokens(images: list[Any]) -> int:
    """What one example costs, roughly: its prompt and its image tokens."""
    return PROMPT_TOKENS + sum(image.width * image.height // 784 for image in images)


def _examples(step: int) -> list[tuple[list[dict[str, Any]], list[Any], str]]:
    """One training batch, all seeded: its images from one size bucket (so rows pad little), as many
    examples as fit :data:`STEP_TOKENS` (at least one), the tasks in turn from a seeded start.

    Each comparison comes in both orders, side by side: a judge taught one order per pair learned to
    favour a place (of 12 pairs of 56-pixel images asked both ways, 6 to 8 got the same verdict both times;
    taught both, 11 or 12, at transformers 4.51.3 and 5.25.0)."""
    from ...io.images import load_image

    rng = random.Random(SEED * 1_000_003 + step)
    low, high, _ = rng.choices(SIZE_BUCKETS, weights=[share for _, _, share in SIZE_BUCKETS])[0]
    batch: list[tuple[list[dict[str, Any]], list[Any], str]] = []
    longest, start = 0, rng.randrange(len(TASKS))
    for index in range(BATCH):
        seed = TRAINING_SEEDS + (step * BATCH + index) * 3  # images of seeds the tests never use
        kind = TASKS[(start + index) % len(TASKS)]
        conversation, images, answer = _example(kind, rng, seed, low, high)
        images = [load_image(image) for image in images]  # as the judge sees them: the same resampling
        group = [(conversation, images, answer)]
        if kind.startswith("comparison"):  # and the same pair swapped: see the docstring
            group.append(
                (conversation, [*images[:-2], images[-1], images[-2]], "Image B" if answer == "Image A" else "Image A")
            )
        longest = max(longest, _tokens(images))
        if batch and longest * (len(batch) + len(group)) > STEP_TOKENS:
            break
        batch.extend(group)
    return [(conversation, images, f"{THINK}<answer>\n{answer}\n</answer>") for conversation, images, answer in batch]


Examples = list[tuple[list[dict[str, Any]], list[Any], str]]


def _train(
    folder: Path,
    progress: bool,
    examples: Callable[[int], Examples] | None = None,
    steps: int = STEPS,
    what: str = "the tiny judge",
) -> None:
    """Fine-tune the tiny checkpoint in ``folder`` in place: cross-entropy on the answers only, and the
    weights saved are an average of the last steps' (see :data:`AVERAGE_DECAY`). ``examples(step)``: each
    step's batch (default: this module's images; the tiny video judge passes its videos)."""
    examples = examples or _examples
    import sys

    import torch
    from tqdm.auto import tqdm

    from .backend import QwenVLBackend

    torch.manual_seed(SEED)
    # the judge's own loading and encoding: safetensors only, rows padded on the left (so that each row's
    # answer ends it), the direct image encoder, and the faster vision tower (4.51.3's attends over all of a
    # batch's patches at once); the judge learns from exactly the inputs it will be given
    backend = QwenVLBackend.load(folder, device="cpu", dtype=torch.float32)
    model = backend.model
    model.train()
    _ready_for_training(model)
    trained = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trained, lr=LEARNING_RATE, betas=(0.9, 0.95))
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min((step + 1) / WARMUP, 1 - step / steps))
    average = [p.detach().clone() for p in trained]
    tail = _AnswerTail(model)
    # two threads at most: the same weights on any machine with two cores or more (the order of a sum
    # follows the thread count), the weights the recipe was tuned on (one thread gives others, which fail
    # the tiny judge's tests at transformers 4.51.3)
    threads = torch.get_num_threads()
    torch.set_num_threads(min(threads, 2))
    try:
        for step in tqdm(range(steps), desc=f"training {what}", unit="step", file=sys.stderr, disable=not progress):
            inputs, answer_ids = _batch(backend, examples(step))
            loss = tail.loss(inputs, answer_ids)
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP)
            optimizer.step()
            schedule.step()
            with torch.no_grad():
                for averaged, parameter in zip(average, trained):
                    averaged.lerp_(parameter, 1 - AVERAGE_DECAY)
    finally:
        torch.set_num_threads(threads)
    tail.remove()
    with torch.no_grad():
        for parameter, averaged in zip(trained, average):
            parameter.copy_(averaged)
    model.eval()
    for old in list(folder.glob("*.safetensors")) + list(folder.glob("*.safetensors.index.json")):
        old.unlink()
    model.save_pretrained(folder, safe_serialization=True)


def _batch(backend: Any, examples: list[tuple[list[dict[str, Any]], list[Any], str]]) -> tuple[Any, list[list[int]]]:
    """The model's inputs for ``examples``, encoded as the judge encodes them (left-padded, each row ending
    with its answer), and each answer's token ids."""
    end = "<|im_end|>"
    texts = [backend.render(conversation) + answer + end for conversation, _, answer in examples]
    inputs = backend.encode_texts(texts, [images for _, images, _ in examples]).inputs
    answers = backend.processor.tokenizer([answer + end for _, _, answer in examples], add_special_tokens=False)
    return inputs, answers.input_ids


class _AnswerTail:
    """The loss on the answers alone, with logits computed only where an answer is (the last positions
    of each left-padded row): the language-model head over every prompt and image token cost 13-25% of
    a step. A hook on the head does it, as transformers 4.51.3's Qwen2.5-VL has no ``logits_to_keep``."""

    def __init__(self, model: Any) -> None:
        self.model, self.keep = model, 0
        self._hook = model.lm_head.register_forward_pre_hook(
            lambda _, args: (args[0][:, -self.keep :],) if self.keep else None
        )

    def loss(self, inputs: Any, answer_ids: list[list[int]]) -> Any:
        import torch

        longest = max(len(ids) for ids in answer_ids)
        self.keep = longest + 1  # the position before an answer predicts its first token
        logits = self.model(**inputs).logits[:, :-1]
        targets = inputs["input_ids"][:, -longest:].clone()
        for row, ids in enumerate(answer_ids):
            targets[row, : longest - len(ids)] = -100
        return torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1), ignore_index=-100
        )

    def remove(self) -> None:
        self._hook.remove()


def _ready_for_training(model: Any) -> None:
    """Freeze the vision encoder but its merger (random features are features enough for brightness and
    stripes; the merger maps them into the language model) and shrink the language model's attention logits."""
    import torch

    from .vision import vision_tower

    tower = vision_tower(model)
    for name, parameter in tower.named_parameters():
        parameter.requires_grad_(name.startswith("merger."))
    in_tower = {id(parameter) for parameter in tower.parameters()}
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if id(parameter) not in in_tower and name.endswith(("q_proj.weight", "k_proj.weight")):
                parameter.mul_(ATTENTION_INIT_SCALE)


def recipe_files() -> tuple[Path, ...]:
    """The code that makes the judge: this module and the random checkpoint it starts from."""
    from . import tiny

    return Path(__file__), Path(tiny.__file__)


def recipe_digest(files: tuple[Path, ...]) -> str:
    """A digest of ``files``' bytes: any edit to the recipe, however small, is a new judge (a key kept by
    hand was forgotten once, and CI tested a judge the code no longer made)."""
    digest = hashlib.sha256()
    for file in files:
        digest.update(file.read_bytes())
    return digest.hexdigest()


def cache_key() -> str:
    """The recipe's code, the conversations it teaches (a changed prompt changes the judge) and the versions."""
    return recipe_key(
        recipe_files(),
        [
            QINSIGHT.messages("score"),
            QINSIGHT.messages("degradation"),
            QINSIGHT.messages("comparison"),
            QINSIGHT.messages("comparison", with_reference=True),
        ],
    )


def recipe_key(files: tuple[Path, ...], taught: list[Any]) -> str:
    """A build's cache key: the digest of its recipe ``files``, the conversations it teaches, and the torch
    and transformers versions (a tiny judge trained under one is not the judge another trains)."""
    import torch
    import transformers

    recipe = recipe_digest(files)
    conversations = json.dumps(taught)
    return hashlib.sha256(
        f"{recipe}|{conversations}|{torch.__version__}|{transformers.__version__}".encode()
    ).hexdigest()[:16]


def build_tiny_judge(folder: str | Path, progress: bool = False) -> Path:
    """Write the trained tiny judge into ``folder`` (created if needed) and return its path.

    Args:
        folder: where to write it.
        progress: show a progress bar of the training steps on standard error.

    Returns:
        ``folder``, as a path.
    """
    from .tiny import build_tiny_checkpoint

    folder = Path(folder)
    build_tiny_checkpoint(folder, seed=SEED)
    _train(folder, progress)
    (folder / MARKER).write_text(json.dumps({"key": cache_key()}) + "\n", encoding="utf-8")
    return folder


def cached_tiny_judge(cache: str | Path) -> Path:
    """The trained tiny judge in ``cache``, built there first if this recipe and these versions have none."""
    return cached_build(Path(cache) / f"tiny-judge-{cache_key()}", MARKER, build_tiny_judge)


def cached_build(target: Path, marker: str, build: Callable[[Path], Path]) -> Path:
    """``target``, built by ``build`` first unless its ``marker`` file says it is complete. Built in a
    temporary folder beside it and moved into place whole, so a killed build leaves nothing half-made."""
    if (target / marker).exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix=".building-", dir=target.parent))
    try:
        build(building)
        os.replace(building, target)
    except OSError:
        if not (target / marker).exists():  # another process may have finished first: theirs is as good
            raise
    finally:
        shutil.rmtree(building, ignore_errors=True)
    return target
