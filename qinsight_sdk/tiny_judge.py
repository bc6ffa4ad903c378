"""A tiny judge that answers: the tiny checkpoint taught, on the CPU in a minute or two, to write
Q-Insight's format about a visible property of synthetic images.

The random tiny checkpoint (:mod:`qinsight_sdk.testing`) only writes gibberish, so on its own it tests
the pipeline's failure paths. This one is fine-tuned (supervised, a few hundred small steps) to answer
as the real weights do: a ``<think>`` block, then ``{"rating": X.YZ}`` with the rating following the
image's brightness (1 + 4 x mean level), ``{"distortion_class": ..., "severity": "moderate"}`` naming a
synthetic distortion of a striped image (noise, blur, darken, or "null" for none), and "Image A" or
"Image B" for the brighter of two images. It is for end-to-end tests of reason mode, parsing, rankings,
evaluation and nodes, and for plugin developers' CI:

    python -m qinsight_sdk.testing DIR --trained

Training is seeded and the image set fixed, so a build repeats; a built judge is reused from a cache
folder keyed by the recipe and the torch and transformers versions.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any

from .profiles import QINSIGHT

RECIPE = "qinsight-tiny-judge-1"          # change when the recipe changes: the cache key follows it
STEPS, BATCH, LEARNING_RATE, SEED = 240, 12, 3e-3, 0
DISTORTIONS = ("null", "noise", "blur", "darken")
THINK = "<think>\nok\n</think>\n"
MARKER = "qinsight-tiny-judge.json"


def brightness_image(level: float, seed: int, size: int = 56) -> Any:
    """A grey image of mean ``level`` (0..1) with a little texture; its true rating is 1 + 4 x level."""
    import numpy as np
    from PIL import Image

    pixels = np.full((size, size, 3), level * 255.0) + np.random.default_rng(seed).normal(0, 6, (size, size, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def distorted_image(distortion: str, seed: int, size: int = 56) -> Any:
    """Vertical stripes, clean ("null") or with one synthetic distortion."""
    import numpy as np
    from PIL import Image, ImageFilter

    rng = np.random.default_rng(seed)
    stripes = np.where((np.arange(size) // 4) % 2, 200.0, 60.0)[None, :, None] * np.ones((size, 1, 3))
    stripes += rng.normal(0, 3, stripes.shape)
    if distortion == "noise":
        stripes += rng.normal(0, 70, stripes.shape)
    elif distortion == "darken":
        stripes *= 0.15
    image = Image.fromarray(np.clip(stripes, 0, 255).astype(np.uint8))
    return image.filter(ImageFilter.GaussianBlur(3)) if distortion == "blur" else image


def rating_of(level: float) -> float:
    return round(1 + 4 * level, 2)


def _examples(step: int) -> list[tuple[list[dict[str, Any]], list[Any], str]]:
    """One training batch: half scores, a quarter degradations, a quarter comparisons; all seeded."""
    rng = random.Random(SEED * 1_000_003 + step)
    batch = []
    for index in range(BATCH):
        seed = step * BATCH + index
        kind = ("score", "score", "degradation", "comparison")[index % 4]
        if kind == "score":
            level = rng.uniform(0.03, 0.97)
            answer = f'{{"rating": {rating_of(level):.2f}}}'
            batch.append((QINSIGHT.messages("score"), [brightness_image(level, seed)], answer))
        elif kind == "degradation":
            label = rng.choice(DISTORTIONS)
            severity = "null" if label == "null" else "moderate"
            answer = f'{{"distortion_class": "{label}", "severity": "{severity}"}}'
            batch.append((QINSIGHT.messages("degradation"), [distorted_image(label, seed)], answer))
        else:
            first, second = rng.uniform(0.05, 0.95), rng.uniform(0.05, 0.95)
            if abs(first - second) < 0.2:
                second = (first + 0.5) % 1.0
            answer = "Image A" if first > second else "Image B"
            images = [brightness_image(first, seed), brightness_image(second, seed + 7)]
            batch.append((QINSIGHT.messages("comparison"), images, answer))
    return [(conversation, images, f"{THINK}<answer>\n{answer}\n</answer>") for conversation, images, answer in batch]


def _train(folder: Path) -> None:
    """Fine-tune the tiny checkpoint in ``folder`` in place: cross-entropy on the answers only."""
    import torch

    from .loading import load_model

    torch.manual_seed(SEED)
    # the judge's own loading: safetensors only, and a processor that pads on the left, so that each
    # row's answer ends it
    model, processor, _ = load_model(folder, device="cpu", dtype=torch.float32)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 - step / STEPS)
    end = "<|im_end|>"
    for step in range(STEPS):
        examples = _examples(step)
        texts = [processor.apply_chat_template(c, tokenize=False, add_generation_prompt=True) + a + end
                 for c, _, a in examples]
        inputs = processor(text=texts, images=[i for _, images, _ in examples for i in images], padding=True,
                           return_tensors="pt")
        labels = inputs["input_ids"].clone()
        for row, (_, _, answer) in enumerate(examples):   # left padding: each answer ends its row
            answer_length = len(processor.tokenizer(answer + end, add_special_tokens=False).input_ids)
            labels[row, :labels.shape[1] - answer_length] = -100
        labels[inputs["attention_mask"] == 0] = -100
        loss = model(**inputs, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    model.eval()
    for old in list(folder.glob("*.safetensors")) + list(folder.glob("*.safetensors.index.json")):
        old.unlink()
    model.save_pretrained(folder, safe_serialization=True)


def cache_key() -> str:
    """The recipe, the conversations it teaches (a changed prompt changes the judge) and the versions."""
    import torch
    import transformers

    taught = json.dumps([QINSIGHT.messages("score"), QINSIGHT.messages("degradation"),
                         QINSIGHT.messages("comparison"), QINSIGHT.messages("comparison", with_reference=True)])
    return hashlib.sha256(f"{RECIPE}|{taught}|{torch.__version__}|{transformers.__version__}".encode()
                          ).hexdigest()[:16]


def build_tiny_judge(folder: str | Path) -> Path:
    """Write the trained tiny judge into ``folder`` (created if needed) and return its path."""
    from .testing import build_tiny_checkpoint

    folder = Path(folder)
    build_tiny_checkpoint(folder, seed=SEED)
    _train(folder)
    (folder / MARKER).write_text(json.dumps({"recipe": RECIPE, "key": cache_key()}) + "\n", encoding="utf-8")
    return folder


def cached_tiny_judge(cache: str | Path) -> Path:
    """The trained tiny judge in ``cache``, built there first if this recipe and these versions have none.
    Built in a temporary folder and moved into place whole, so a killed build leaves nothing half-made."""
    target = Path(cache) / f"tiny-judge-{cache_key()}"
    if (target / MARKER).exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix=".building-", dir=target.parent))
    try:
        build_tiny_judge(building)
        os.replace(building, target)
    except OSError:
        if not (target / MARKER).exists():  # another process may have finished first: theirs is as good
            raise
    finally:
        shutil.rmtree(building, ignore_errors=True)
    return target
