"""A tiny random-weight Qwen2.5-VL checkpoint, built offline, for tests and for plugin developers' CI
(``python -m qinsight_sdk.testing DIR``; the package :mod:`qinsight_sdk.testing` gathers the test tools).

The folder is laid out like the released Q-Insight / Qwen2.5-VL checkpoints: a flat ``config.json`` with
the same keys as the 7B model's, sharded ``model-*.safetensors`` with an index and the original
(transformers 4.x) tensor names, the Qwen special tokens, ``preprocessor_config.json`` and
``chat_template.json``. Loading it therefore takes exactly the code path real weights take. The weights
are drawn from a seeded generator in a fixed order, so the folder is byte-identical on every machine
and every transformers version.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

QWEN_SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)

# Qwen2-VL family chat template: system prompt, then interleaved image placeholders and text.
CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant."
    "<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}"
    "{% endfor %}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

PREPROCESSOR_CONFIG = {  # as shipped with Qwen2.5-VL-7B-Instruct and Q-Insight
    "min_pixels": 3136,
    "max_pixels": 12845056,
    "patch_size": 14,
    "temporal_patch_size": 2,
    "merge_size": 2,
    "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_std": [0.26862954, 0.26130258, 0.27577711],
    "image_processor_type": "Qwen2VLImageProcessor",
    "processor_class": "Qwen2_5_VLProcessor",
}


def tiny_config() -> dict[str, Any]:
    """Qwen2.5-VL-7B-Instruct's keys, in its order, so loading takes the real model's path; the sizes
    shrunk to under a million parameters, the vocabulary and special-token ids the tiny tokenizer's."""
    ids = _special_token_ids()
    return {
        "architectures": ["Qwen2_5_VLForConditionalGeneration"],
        "model_type": "qwen2_5_vl",
        "attention_dropout": 0.0,
        "hidden_act": "silu",
        "hidden_size": 64,
        "initializer_range": 0.02,
        "intermediate_size": 128,
        "max_position_embeddings": 4096,
        "max_window_layers": 2,
        "num_attention_heads": 4,
        "num_hidden_layers": 2,
        "num_key_value_heads": 2,
        "rms_norm_eps": 1e-06,
        "rope_theta": 1000000.0,
        "sliding_window": 4096,
        "use_sliding_window": False,
        "tie_word_embeddings": False,
        "torch_dtype": "float32",
        "use_cache": True,
        "vocab_size": -(-(max(ids.values()) + 1) // 64) * 64,
        "bos_token_id": ids["<|endoftext|>"],
        "eos_token_id": ids["<|im_end|>"],
        "vision_start_token_id": ids["<|vision_start|>"],
        "vision_end_token_id": ids["<|vision_end|>"],
        "vision_token_id": ids["<|vision_pad|>"],
        "image_token_id": ids["<|image_pad|>"],
        "video_token_id": ids["<|video_pad|>"],
        "rope_scaling": {"type": "mrope", "mrope_section": [2, 3, 3]},  # sums to head_dim // 2
        "vision_config": {
            "depth": 2,
            "hidden_act": "silu",
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_heads": 4,
            "in_chans": 3,
            "out_hidden_size": 64,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "spatial_patch_size": 14,
            "window_size": 112,
            "fullatt_block_indexes": [1],
            "tokens_per_second": 2,
            "temporal_patch_size": 2,
        },
    }


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


# Qwen2's pre-tokenizer pattern: words, single digits, punctuation runs, whitespace.
QWEN_SPLIT_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def _corpus() -> list[str]:
    """Text the tiny tokenizer gives whole-word tokens to, so prompts have realistic token counts."""
    from ...judging import prompts

    return [
        prompts.SYSTEM_PROMPT,
        prompts.SCORE_QUESTION,
        prompts.DEGRADATION_QUESTION,
        prompts.REFERENCE_COMPARISON_INTRO,
        prompts.REFERENCE_COMPARISON_QUESTION,
        prompts.NO_REFERENCE_COMPARISON_QUESTION,
        prompts.FAST_SCORE_ANSWER_PREFIX,
        "system\nuser\nassistant\nYou are a helpful assistant.\n<think>\n</think>\n<answer>\n</answer>",
        '{"rating": 3.85}\n{"distortion_class": "null", "severity": "null"}\nImage A Image B Similar',
    ]


def _tokenizer_model() -> Any:
    """Byte-level BPE over Qwen2's pre-tokenizer, with merges that spell out each corpus word.

    The merges are derived, not trained: every pre-token of the corpus is built left to right, one
    byte at a time, so the result is the same on every machine and tokenizers version. Digits stay
    single tokens, as in Qwen's vocabulary.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

    def pre_tokenizer() -> Any:
        return pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(QWEN_SPLIT_PATTERN), behavior="isolated"),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )

    vocab = {symbol: i for i, symbol in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    merges: list[tuple[str, str]] = []
    splitter = pre_tokenizer()
    for text in _corpus():
        for piece, _ in splitter.pre_tokenize_str(text):
            for end in range(2, len(piece) + 1):
                if piece[:end] not in vocab:
                    merges.append((piece[: end - 1], piece[end - 1]))
                    vocab[piece[:end]] = len(vocab)
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tokenizer.pre_tokenizer = pre_tokenizer()
    tokenizer.decoder = decoders.ByteLevel()
    return tokenizer


def _special_token_ids() -> dict[str, int]:
    base = _tokenizer_model().get_vocab_size()
    return {token: base + i for i, token in enumerate(QWEN_SPECIAL_TOKENS)}


def _write_tokenizer(folder: Path) -> None:
    from tokenizers import AddedToken

    tokenizer = _tokenizer_model()
    vocab = tokenizer.get_vocab()
    tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in QWEN_SPECIAL_TOKENS])
    tokenizer.save(str(folder / "tokenizer.json"))
    saved = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))["model"]
    _write_json(folder / "vocab.json", dict(sorted(vocab.items(), key=lambda kv: kv[1])))
    lines = [" ".join(m) if isinstance(m, list) else m for m in saved["merges"]]
    (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{m}\n" for m in lines), encoding="utf-8")
    ids = _special_token_ids()
    added = {
        str(ids[t]): {
            "content": t,
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
            "special": True,
        }
        for t in QWEN_SPECIAL_TOKENS
    }
    _write_json(
        folder / "tokenizer_config.json",
        {
            "add_prefix_space": False,
            "added_tokens_decoder": added,
            "additional_special_tokens": list(QWEN_SPECIAL_TOKENS[1:]),
            "bos_token": None,
            "clean_up_tokenization_spaces": False,
            "eos_token": "<|im_end|>",
            "errors": "replace",
            "model_max_length": 131072,
            "pad_token": "<|endoftext|>",
            "split_special_tokens": False,
            "tokenizer_class": "Qwen2Tokenizer",
            "unk_token": None,
        },
    )


def _legacy_name(name: str) -> str:
    """Tensor names as the released checkpoints store them (transformers >= 4.52 nests them)."""
    if name.startswith("model.language_model."):
        return "model." + name[len("model.language_model.") :]
    if name.startswith("model.visual."):
        return name[len("model.") :]
    return name


def _random_state_dict(config_folder: Path, seed: int) -> dict[str, Any]:
    import torch
    from transformers import AutoConfig, Qwen2_5_VLForConditionalGeneration

    config = AutoConfig.from_pretrained(config_folder, local_files_only=True)
    with torch.device("meta"):
        skeleton = Qwen2_5_VLForConditionalGeneration(config)
    shapes = {_legacy_name(k): v.shape for k, v in skeleton.state_dict().items()}
    generator = torch.Generator().manual_seed(seed)
    tensors = {}
    for name in sorted(shapes):
        shape = shapes[name]
        if name.endswith(".bias"):
            tensors[name] = torch.zeros(shape)
        elif "norm" in name or name.endswith("ln_q.weight"):
            tensors[name] = torch.ones(shape)
        else:
            tensors[name] = (
                torch.randn(shape, generator=generator) * 0.2
            )  # large enough that answers depend on the image
    return tensors


def _write_sharded_weights(folder: Path, tensors: dict[str, Any], shards: int = 2) -> None:
    from safetensors.torch import save

    names = sorted(tensors)
    per_shard = -(-len(names) // shards)
    weight_map, total = {}, 0
    for index in range(shards):
        part = names[index * per_shard : (index + 1) * per_shard]
        filename = f"model-{index + 1:05d}-of-{shards:05d}.safetensors"
        # written like any other file, so the umask applies (save_file makes them readable by the owner only)
        (folder / filename).write_bytes(save({n: tensors[n].contiguous() for n in part}, metadata={"format": "pt"}))
        for name in part:
            weight_map[name] = filename
            total += tensors[name].numel() * tensors[name].element_size()
    _write_json(folder / "model.safetensors.index.json", {"metadata": {"total_size": total}, "weight_map": weight_map})


def build_tiny_checkpoint(folder: str | Path, seed: int = 0) -> Path:
    """Write the tiny checkpoint into ``folder`` (created if needed) and return its path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = tiny_config()
    _write_json(folder / "config.json", config)
    _write_json(
        folder / "generation_config.json",
        {  # as shipped with Qwen2.5-VL-7B-Instruct
            "bos_token_id": config["bos_token_id"],
            "pad_token_id": config["bos_token_id"],
            "do_sample": True,
            "eos_token_id": [config["eos_token_id"], config["bos_token_id"]],
            "repetition_penalty": 1.05,
            "temperature": 0.1,
            "top_k": 1,
            "top_p": 0.001,
        },
    )
    _write_json(folder / "preprocessor_config.json", PREPROCESSOR_CONFIG)
    _write_json(folder / "chat_template.json", {"chat_template": CHAT_TEMPLATE})
    _write_tokenizer(folder)
    _write_sharded_weights(folder, _random_state_dict(folder, seed))
    return folder
