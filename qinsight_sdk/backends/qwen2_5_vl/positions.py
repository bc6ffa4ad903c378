"""Qwen2.5-VL's 3-D rotary positions, as transformers 4.51.3 computed them, at every transformers release.

The released judges were trained and published with transformers 4.51.3. Later releases changed how
positions are counted after a video: 4.51.3 continues the text at one past the largest position any of the
video's tokens used (the temporal ones included), 5.x at the video's start plus its larger spatial side,
ignoring how far its temporal positions reached. For a square-ish video of 16 frames the text after it then
starts 4 positions earlier than the judges ever saw. Images are unaffected (their temporal position is 0).

So the model's own ``get_rope_index`` is replaced by :func:`rope_index`, the 4.51.3 rule written once
(:func:`install_positions`), and the fast scores' positions come from the same function.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch


def rope_index(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    image_grid_thw: torch.Tensor | None,
    video_grid_thw: torch.Tensor | None,
    second_per_grid_ts: torch.Tensor | None,
    *,
    image_token_id: int,
    video_token_id: int,
    merge: int,
    tokens_per_second: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Position ids (3, batch, length) and each row's delta (batch, 1), by transformers 4.51.3's rule.

    Text tokens take one position each, starting one past the largest position used so far. A run of
    image or video tokens with grid (t, h, w) takes, from the text before it, temporal positions
    ``floor(k x seconds_per_grid x tokens_per_second)`` for each frame pair k (0 for an image), and h / merge
    by w / merge spatial positions. Padding (mask 0) gets position 1, as 4.51.3 left it. The delta is the
    next position after the row less its unpadded length (what generation adds to later positions).
    """
    batch, length = input_ids.shape
    positions = torch.ones(3, batch, length, dtype=input_ids.dtype, device=input_ids.device)
    grids = {
        image_token_id: iter(image_grid_thw.tolist() if image_grid_thw is not None else []),
        video_token_id: iter(video_grid_thw.tolist() if video_grid_thw is not None else []),
    }
    seconds = iter(second_per_grid_ts.tolist() if second_per_grid_ts is not None else [])
    deltas = []
    for row in range(batch):
        keep = attention_mask[row].bool() if attention_mask is not None else torch.ones(length, dtype=torch.bool)
        tokens = input_ids[row][keep.to(input_ids.device)].tolist()
        parts: list[torch.Tensor] = []
        start = 0
        k = 0
        while k < len(tokens):
            if tokens[k] not in grids:
                k += 1
                continue
            t, h, w = next(grids[tokens[k]])
            interval = (next(seconds, 1.0) if tokens[k] == video_token_id else 0.0) * tokens_per_second
            next_id = int(parts[-1].max()) + 1 if parts else 0
            parts.append(torch.arange(k - start).view(1, -1).expand(3, -1) + next_id)
            parts.append(_vision_positions(t, h // merge, w // merge, interval) + (k - start) + next_id)
            k += t * (h // merge) * (w // merge)
            start = k
        if start < len(tokens):
            next_id = int(parts[-1].max()) + 1 if parts else 0
            parts.append(torch.arange(len(tokens) - start).view(1, -1).expand(3, -1) + next_id)
        found = torch.cat(parts, dim=1) if parts else torch.zeros(3, 0, dtype=torch.long)
        positions[:, row, keep.to(positions.device)] = found.to(positions)
        deltas.append((int(found.max()) + 1 if found.numel() else 0) - len(tokens))
    return positions, torch.tensor(deltas, device=input_ids.device).unsqueeze(1)


def _vision_positions(t: int, h: int, w: int, interval: float) -> torch.Tensor:
    """(3, t*h*w): frame pair k at floor(k x interval), rows and columns from 0, in raster order."""
    temporal = (torch.arange(t).view(-1, 1).expand(-1, h * w) * interval).long().flatten()
    rows = torch.arange(h).view(1, -1, 1).expand(t, -1, w).flatten()
    columns = torch.arange(w).view(1, 1, -1).expand(t, h, -1).flatten()
    return torch.stack([temporal, rows, columns])


def install_positions(model: Any) -> None:
    """Make ``model`` (a loaded Qwen2.5-VL) count positions by :func:`rope_index` at any release.

    The method sits on the generation class in 4.51.3 and on its inner model later, is called with
    positional arguments in 4.51.3 and keywords later (the replacement reads its arguments by the
    original's own signature), and its deltas are relative to the padded row up to 4.57 and to the
    unpadded one in 5.x (generation adds them to different counts): which one this release uses is read
    from the original on a small left-padded probe.
    """
    owner = next(m for m in (getattr(model, "model", None), model) if m is not None and hasattr(m, "get_rope_index"))
    original = owner.get_rope_index
    signature = inspect.signature(original)
    config, vision = model.config, model.config.vision_config
    ids = {
        "image_token_id": _config_value(config, "image_token_id"),
        "video_token_id": _config_value(config, "video_token_id"),
    }
    rule = {"merge": vision.spatial_merge_size, "tokens_per_second": vision.tokens_per_second, **ids}

    def ours(found: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        return rope_index(
            found["input_ids"],
            found.get("attention_mask"),
            found.get("image_grid_thw"),
            found.get("video_grid_thw"),
            found.get("second_per_grid_ts"),
            **rule,
        )

    padded = _deltas_count_padding(
        original,
        signature,
        ours,
        {**rule, **{f"vision_{k}": _config_value(config, f"vision_{k}_token_id") for k in ("start", "end")}},
    )

    def get_rope_index(*args: Any, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        bound = signature.bind_partial(*args, **kwargs).arguments
        found = {**bound.get("kwargs", {}), **{k: v for k, v in bound.items() if k != "kwargs"}}
        position_ids, deltas = ours(found)
        mask = found.get("attention_mask")
        if padded and mask is not None:
            deltas = deltas - (mask.shape[1] - mask.sum(dim=1, keepdim=True)).to(deltas)
        return position_ids, deltas

    owner.get_rope_index = get_rope_index


def _deltas_count_padding(original: Any, signature: inspect.Signature, ours: Any, rule: dict[str, Any]) -> bool:
    """Whether this release's deltas count the row's padding: one image after one padding token, asked of
    the original (images are placed alike by every release). ``rule`` also holds the vision start and end
    token ids (4.51.3 finds images by them)."""
    image = rule["image_token_id"]
    found: dict[str, Any] = {
        "input_ids": torch.tensor([[0, rule["vision_start"]] + [image] * 4 + [rule["vision_end"], 1]]),
        "attention_mask": torch.tensor([[0, 1, 1, 1, 1, 1, 1, 1]]),
        "image_grid_thw": torch.tensor([[1, 2 * rule["merge"], 2 * rule["merge"]]]),
    }
    if "mm_token_type_ids" in signature.parameters:
        found["mm_token_type_ids"] = (found["input_ids"] == image).long()
    known = {k: v for k, v in found.items() if k in signature.parameters or "kwargs" in signature.parameters}
    _, theirs = original(**known)
    _, unpadded = ours(found)  # ours reads the image tokens alone
    return int(theirs[0, 0]) == int(unpadded[0, 0]) - 1


def _config_value(config: Any, name: str) -> int:
    value = getattr(config, name, None)
    if value is None:  # transformers 5 keeps some ids on the text config
        value = getattr(getattr(config, "text_config", None), name)
    return int(value)
