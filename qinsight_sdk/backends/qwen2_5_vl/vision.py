"""The vision tower, made faster and encoding each image once, without touching transformers' code.

Two changes to arithmetic, installed on one loaded model by replacing a module instance's ``forward`` with
ours over the module's own weights (the classes, and every other model, stay stock):

- the patch embedding as one matrix product: its Conv3d's kernel equals its stride and each input row is
  one patch, so every output is the dot product of a patch with the flattened kernel (a convolution
  kernel costs several times the product on a CPU), and over one frame of the two an image repeats;
- windowed attention without a loop over windows: for every attention but FlashAttention, transformers
  calls attention once per window of every image (128 calls for a batch of eight 448x448 images, per
  layer); windows of equal length are stacked and attended in one call.

Both are checked when the model loads: the tower's output on probe images of awkward sizes (windows of
unequal lengths) must equal the stock tower's within the weights' rounding, or the stock path is kept.

And one change to what is computed: inside :meth:`VisionMemory.remembering` (a ranking, a comparison,
a score then a degradation of the same images) every image is keyed by its pixels, and one that appears
twice in a batch (a pair asked in both orders) or was encoded by an earlier batch is not encoded again.
Outside such a block nothing is hashed or kept: plain scoring pays nothing for it.
"""

from __future__ import annotations

import hashlib
import logging
import sys
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

logger = logging.getLogger("qinsight")

MEMORY_BUDGET = 512 * 2**20  # bytes of image features kept inside remembering() before the oldest go


def image_key(image: Image.Image) -> str:
    """What identifies an image's features: its mode, size and pixels (the tower sees nothing else)."""
    digest = hashlib.blake2b(image.tobytes(), digest_size=16)
    digest.update(f"{image.mode}{image.size}".encode())
    return digest.hexdigest()


def vision_tower(model: Any) -> torch.nn.Module | None:
    """The model's vision tower: ``model.model.visual`` from transformers 4.52 on, ``model.visual`` before."""
    inner = getattr(model, "model", None)
    return getattr(inner, "visual", None) or getattr(model, "visual", None)


# -- faster arithmetic ------------------------------------------------------------------------------------


def install_fast_paths(tower: torch.nn.Module, probe: Callable[[], tuple[torch.Tensor, torch.Tensor]]) -> bool:
    """Replace the patch embedding's and the attention blocks' ``forward`` if the tower's output on
    ``probe()`` (pixel values, grids) stays equal to the stock tower's; True if they were kept."""
    if getattr(tower.config, "_attn_implementation", "sdpa") != "sdpa" or _has_hooks(tower):
        return False  # FlashAttention needs no help; eager was asked for; offloading hooks wrap forwards
    pixel_values, grids = probe()
    with torch.inference_mode():
        expected = _merged(tower(pixel_values, grid_thw=grids))
        originals = _replace_forwards(tower)
        found = _merged(tower(pixel_values, grid_thw=grids))
    tolerance = 1e-5 if expected.dtype == torch.float32 else 2e-2
    scale = float(expected.abs().max()) or 1.0
    if expected.shape == found.shape and bool(torch.allclose(found, expected, rtol=tolerance, atol=tolerance * scale)):
        return True
    for module, forward in originals:
        module.forward = forward
    logger.info(
        "the faster vision path differs from this transformers' tower (max difference %.3g); using the stock path",
        float((found - expected).abs().max()) if found.shape == expected.shape else float("nan"),
    )
    return False


def _has_hooks(tower: torch.nn.Module) -> bool:
    return any(hasattr(module, "_hf_hook") for module in tower.modules())


def _merged(output: Any) -> torch.Tensor:
    """The merged image features: the tower's output up to 4.57, its ``pooler_output`` from 5.0."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


def _replace_forwards(tower: torch.nn.Module) -> list[tuple[torch.nn.Module, Any]]:
    originals = [(tower.patch_embed, tower.patch_embed.forward)]
    tower.patch_embed.forward = _patch_embedding(tower.patch_embed)
    windows = _WindowGroups()
    for block in tower.blocks:
        rotate = sys.modules[type(block.attn).__module__].apply_rotary_pos_emb_vision
        originals.append((block.attn, block.attn.forward))
        block.attn.forward = _grouped_attention(block.attn, rotate, windows)
    return originals


def _patch_embedding(module: torch.nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """The embedding as a matrix product; in float32, over one frame when the frames are equal.

    An image is repeated over the temporal patch (a still has no motion), so the product with the kernel
    is the product of one frame with the kernel summed over time: half the arithmetic, checked per call
    (a video, whose frames differ, takes the whole product). Half-precision weights take the whole
    product too: their summed kernel would be rounded once more.
    """
    folded: dict[tuple[Any, ...], torch.Tensor] = {}

    def forward(hidden_states: torch.Tensor) -> torch.Tensor:
        weight = module.proj.weight  # (embed, channels, temporal, patch, patch): flattened as each row is
        embed, channels, frames = weight.shape[:3]
        rows = hidden_states.reshape(-1, channels, frames, weight[0, 0, 0].numel())
        still = frames > 1 and all(torch.equal(rows[:, :, 0], rows[:, :, t]) for t in range(1, frames))
        if weight.dtype == torch.float32 and still:
            key = (weight.data_ptr(), weight.device)  # moved weights get a new key (no version counter:
            # weights loaded under inference mode, as ComfyUI loads them, have none)
            if key not in folded:
                folded.clear()
                folded[key] = weight.sum(dim=2).reshape(embed, -1)
            return F.linear(rows[:, :, 0].reshape(rows.shape[0], -1), folded[key])
        return F.linear(hidden_states.reshape(-1, weight[0].numel()).to(weight.dtype), weight.reshape(embed, -1))

    return forward


class _WindowGroups:
    """The chunks of one ``cu_seqlens``, grouped by length; every windowed block of a forward shares one
    ``cu_seqlens`` tensor, so it is read (a device sync on a GPU) once rather than per block."""

    def __init__(self) -> None:
        self._last: tuple[torch.Tensor, list[tuple[int, torch.Tensor | None]]] | None = None

    def of(self, cu_seqlens: torch.Tensor) -> list[tuple[int, torch.Tensor | None]]:
        """(length, row indices of all chunks of that length, or None when that is every row in order)."""
        if self._last is not None and self._last[0] is cu_seqlens:
            return self._last[1]
        bounds = cu_seqlens.tolist()
        starts: dict[int, list[int]] = {}
        for start, end in zip(bounds, bounds[1:]):
            if end > start:
                starts.setdefault(end - start, []).append(start)
        if len(starts) == 1:  # chunks cover the rows from 0 in order: all alike means plain views
            groups: list[tuple[int, torch.Tensor | None]] = [(next(iter(starts)), None)]
        else:
            groups = [
                (length, (torch.tensor(firsts)[:, None] + torch.arange(length)).reshape(-1).to(cu_seqlens.device))
                for length, firsts in starts.items()
            ]
        self._last = (cu_seqlens, groups)  # holding the tensor keeps its identity from being reused
        return groups


def _grouped_attention(
    module: torch.nn.Module, rotate: Callable[..., Any], windows: _WindowGroups
) -> Callable[..., Any]:
    def forward(
        hidden_states: torch.Tensor,
        cu_seqlens: torch.Tensor,
        rotary_pos_emb: torch.Tensor | None = None,
        position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
        **_: Any,
    ) -> torch.Tensor:
        rows = hidden_states.shape[0]
        query, key, value = (
            module.qkv(hidden_states).reshape(rows, 3, module.num_heads, -1).permute(1, 0, 2, 3).unbind(0)
        )
        if position_embeddings is None:  # transformers 4.51 may pass the angles instead
            angles = torch.cat((rotary_pos_emb, rotary_pos_emb), dim=-1)
            position_embeddings = (angles.cos(), angles.sin())
        query, key = rotate(query, key, *position_embeddings)
        heads, width = query.shape[1], query.shape[2]
        groups = windows.of(cu_seqlens)
        attended = torch.empty_like(query) if len(groups) > 1 else None
        for length, index in groups:
            # called within this iteration only, so the loop variables it reads are this iteration's
            def stacked(states: torch.Tensor) -> torch.Tensor:
                chosen = states if index is None else states.index_select(0, index)  # noqa: B023
                return chosen.reshape(-1, length, heads, width).transpose(1, 2)  # noqa: B023

            out = F.scaled_dot_product_attention(stacked(query), stacked(key), stacked(value))
            out = out.transpose(1, 2).reshape(-1, heads, width)
            if attended is None:
                attended = out
            else:
                attended.index_copy_(0, index, out)
        return module.proj(attended.reshape(rows, -1))

    return forward


# -- each image encoded once --------------------------------------------------------------------------------


class VisionMemory:
    """Wraps the tower's ``forward`` so images whose keys it was told are encoded once; see the module
    docstring. ``encoded`` counts the images that really went through the tower."""

    def __init__(self, tower: torch.nn.Module, budget: int = MEMORY_BUDGET) -> None:
        self.tower, self.budget = tower, budget
        self.encoded = 0
        self._forward = tower.forward
        self._keys: tuple[str, ...] | None = None
        self._depth = 0
        self._kept: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._kept_bytes = 0
        self._merge_unit = tower.spatial_merge_size**2
        self._output_class: type | None = None  # None: the tower returns a tensor (before 5.0)
        tower.forward = self.forward

    @contextmanager
    def expecting(self, keys: Sequence[str]) -> Iterator[None]:
        """The next tower call within this block is for images with these keys, in order."""
        self._keys = tuple(keys)
        try:
            yield
        finally:
            self._keys = None

    @contextmanager
    def remembering(self) -> Iterator[None]:
        """Features computed inside this block are reused by later batches inside it (nested: the
        outermost block decides); forgotten when it ends."""
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1
            if self._depth == 0:
                self._kept.clear()
                self._kept_bytes = 0

    @property
    def remembering_now(self) -> bool:
        """Whether images are keyed now: only inside :meth:`remembering`, where an image can come back
        (hashing the pixels of every image would slow plain scoring for nothing)."""
        return self._depth > 0

    def forward(self, hidden_states: torch.Tensor, grid_thw: torch.Tensor, **kwargs: Any) -> Any:
        keys, self._keys = self._keys, None  # one call per announcement: generation calls the tower once
        if keys is None or len(keys) != len(grid_thw):
            return self._encode(hidden_states, grid_thw, **kwargs)
        patches = grid_thw.prod(-1).tolist()
        firsts: dict[str, int] = {}  # each new key's first position
        for position, key in enumerate(keys):
            if key not in self._kept:
                firsts.setdefault(key, position)
        if len(firsts) == len(keys):  # nothing seen before: the stock call, remembered if asked
            output = self._encode(hidden_states, grid_thw, **kwargs)
            self._keep(keys, _merged(output).split([n // self._merge_unit for n in patches]))
            return output
        features = dict(self._kept)  # a snapshot: keeping the new features may evict some of these
        if firsts:
            chosen = sorted(firsts.values())
            starts = np.cumsum([0] + patches)
            rows = torch.cat([torch.arange(starts[k], starts[k + 1]) for k in chosen]).to(hidden_states.device)
            output = self._encode(hidden_states.index_select(0, rows), grid_thw[chosen], **kwargs)
            fresh = _merged(output).split([patches[k] // self._merge_unit for k in chosen])
            features.update(zip((keys[k] for k in chosen), fresh))
            self._keep([keys[k] for k in chosen], fresh)
        merged = torch.cat([features[key] for key in keys])
        return merged if self._output_class is None else self._output_class(pooler_output=merged)

    def _encode(self, hidden_states: torch.Tensor, grid_thw: torch.Tensor, **kwargs: Any) -> Any:
        output = self._forward(hidden_states, grid_thw=grid_thw, **kwargs)
        self.encoded += len(grid_thw)
        self._output_class = None if isinstance(output, torch.Tensor) else type(output)
        return output

    def _keep(self, keys: Sequence[str], features: Sequence[torch.Tensor]) -> None:
        if self._depth == 0:
            return
        for key, feature in zip(keys, features):
            if key not in self._kept:
                self._kept[key] = feature
                self._kept_bytes += feature.numel() * feature.element_size()
        while self._kept_bytes > self.budget and self._kept:
            _, oldest = self._kept.popitem(last=False)
            self._kept_bytes -= oldest.numel() * oldest.element_size()
