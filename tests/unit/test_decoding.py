"""Decoding options: what reaches transformers' generate, and seeding that repeats without side effects."""

import json
import shutil

import pytest
import torch
from transformers import GenerationConfig

from qinsight_sdk.judging.decoding import DecodingOptions, PaddingBlindRepetitionPenalty, official_demo_sampling, seeded


def checkpoint_config(**values):
    base = dict(pad_token_id=7, eos_token_id=[5, 6], temperature=0.1, top_k=1, top_p=0.001, repetition_penalty=1.05)
    base.update(values)
    return GenerationConfig(**base)


def test_greedy_defaults_reach_generate_with_neutral_sampling_values():
    base = checkpoint_config()
    config, processors = DecodingOptions().generation_config(base)
    assert (config.max_new_tokens, config.min_new_tokens, config.do_sample, config.num_return_sequences) == (
        512,
        None,
        False,
        1,
    )
    assert (config.temperature, config.top_k, config.top_p, config.repetition_penalty) == (1.0, 50, 1.0, 1.0)
    assert (config.pad_token_id, config.eos_token_id) == (7, [5, 6])
    # the checkpoint's penalty is applied by our padding-blind processor instead of transformers' own
    (penalty,) = processors
    assert isinstance(penalty, PaddingBlindRepetitionPenalty) and (penalty.penalty, penalty.pad_token_id) == (1.05, 7)
    assert (base.temperature, base.repetition_penalty) == (0.1, 1.05)  # the checkpoint's config is left alone


def test_sampling_options_reach_generate():
    options = DecodingOptions(
        max_new_tokens=64,
        min_new_tokens=8,
        do_sample=True,
        temperature=0.7,
        top_k=20,
        top_p=0.9,
        num_samples=3,
        repetition_penalty=1.0,
    )
    config, processors = options.generation_config(checkpoint_config())
    assert (config.max_new_tokens, config.min_new_tokens, config.do_sample, config.num_return_sequences) == (
        64,
        8,
        True,
        3,
    )
    assert (config.temperature, config.top_k, config.top_p, config.repetition_penalty) == (0.7, 20, 0.9, 1.0)
    assert len(processors) == 0  # a penalty of 1.0 is no penalty


def test_a_checkpoint_without_a_penalty_gets_none():
    _, processors = DecodingOptions().generation_config(checkpoint_config(repetition_penalty=None))
    assert len(processors) == 0
    _, processors = DecodingOptions(repetition_penalty=1.2).generation_config(checkpoint_config())
    assert [p.penalty for p in processors] == [1.2]


QWEN_VALUES = {"do_sample": True, "repetition_penalty": 1.05, "temperature": 0.1, "top_k": 1, "top_p": 0.001}


@pytest.mark.parametrize("version", ["4.51.3", "4.50.0", "5.0.0", None])
def test_official_demo_takes_the_checkpoints_values_where_the_demo_passed_library_defaults(version):
    """transformers 4.51.3 replaced the values of the demo's GenerationConfig object that equal the library
    defaults (temperature 1.0, top-k 50, no penalty) with the checkpoint's when it was saved by >= 4.50; a
    file without a version is read by 4.51.3 as its own. top_p 0.95 is not a default: it stays."""
    saved = dict(QWEN_VALUES, **({"transformers_version": version} if version else {}))
    options = DecodingOptions.official_demo(saved)
    assert (
        options.do_sample,
        options.temperature,
        options.top_k,
        options.top_p,
        options.repetition_penalty,
        options.seed,
        options.max_new_tokens,
        options.num_samples,
    ) == (True, 0.1, 1, 0.95, 1.05, 42, 1024, 1)
    why = official_demo_sampling(saved)[1]
    assert why.endswith(
        "replaced the demo's default values with the checkpoint's: temperature 1 -> 0.1, top k 50 "
        "-> 1, repetition penalty 1 -> 1.05; top-p 0.95 stood"
    ), why
    assert (f"saved by transformers {version} (4.50 or later)" if version else "with no transformers version") in why


@pytest.mark.parametrize("version", ["4.49.0", "4.49.0.dev0", "4.37.2"])
def test_official_demo_keeps_the_demos_values_on_a_checkpoint_saved_before_4_50(version):
    options = DecodingOptions.official_demo(dict(QWEN_VALUES, transformers_version=version))
    assert (options.temperature, options.top_k, options.top_p, options.repetition_penalty) == (1.0, 50, 0.95, 1.0)
    assert official_demo_sampling(dict(QWEN_VALUES, transformers_version=version))[1] == (
        f"the checkpoint's generation_config.json was saved by transformers {version} (before 4.50), so the "
        "demo's own values stood: temperature 1.0, top-k 50, top-p 0.95, no repetition penalty"
    )


def test_official_demo_replaces_only_values_the_checkpoint_sets_away_from_the_default(tmp_path):
    # a checkpoint setting only a penalty, and one setting the defaults themselves
    options = DecodingOptions.official_demo(
        {"transformers_version": "4.51.3", "repetition_penalty": 1.2, "temperature": 1.0, "top_k": 50, "top_p": 0.5}
    )
    assert (options.temperature, options.top_k, options.top_p, options.repetition_penalty) == (1.0, 50, 0.95, 1.2)
    untouched = {"transformers_version": "4.51.3", "top_k": None}
    assert official_demo_sampling(untouched) == (
        {"temperature": 1.0, "top_k": 50, "top_p": 0.95, "repetition_penalty": 1.0},
        "the checkpoint's generation_config.json (saved by transformers 4.51.3) sets none of the demo's default "
        "values, so the demo's own values stood: temperature 1.0, top-k 50, top-p 0.95, no repetition penalty",
    )
    # a folder, its file, a loaded GenerationConfig and a folder without the file
    (tmp_path / "generation_config.json").write_text(json.dumps(dict(QWEN_VALUES, transformers_version="4.51.3")))
    loaded = GenerationConfig.from_pretrained(tmp_path)
    for given in (tmp_path, str(tmp_path / "generation_config.json"), loaded):
        assert DecodingOptions.official_demo(given, seed=3).top_k == 1
        assert DecodingOptions.official_demo(given, seed=3).seed == 3
    assert DecodingOptions.official_demo(tmp_path / "nothing-here").top_k == 50
    assert DecodingOptions.official_demo(tmp_path, max_new_tokens=9).max_new_tokens == 9


@pytest.mark.parametrize(
    "content,message",
    [
        ("{not json", "cannot read the generation config"),
        ("[1, 2]", "the generation config is not a JSON object"),
        ('{"transformers_version": "four"}', "transformers_version 'four' is not a version"),
    ],
)
def test_a_broken_generation_config_is_refused_with_its_name(tmp_path, content, message):
    from qinsight_sdk.errors import ModelLoadError

    (tmp_path / "generation_config.json").write_text(content)
    with pytest.raises(ModelLoadError, match=message):
        DecodingOptions.official_demo(tmp_path)


SAMPLING = "sampling needs temperature > 0, 0 < top_p <= 1 and top_k >= 0"


@pytest.mark.parametrize(
    "options,message",
    [
        (dict(max_new_tokens=0), "max_new_tokens must be at least 1, got 0"),
        (dict(num_samples=0, do_sample=True), "num_samples must be at least 1, got 0"),
        (dict(num_samples=2), "num_samples > 1 needs do_sample=True: greedy decoding gives one answer"),
        (dict(do_sample=True, temperature=0.0), SAMPLING),
        (dict(do_sample=True, top_p=0.0), SAMPLING),
        (dict(do_sample=True, top_p=1.01), SAMPLING),
        (dict(do_sample=True, top_k=-1), SAMPLING),
    ],
)
def test_bad_options_are_refused(options, message):
    with pytest.raises(ValueError) as refused:
        DecodingOptions(**options)
    assert str(refused.value) == message


@pytest.mark.parametrize(
    "options",
    [
        dict(max_new_tokens=1),
        dict(num_samples=2, do_sample=True),
        dict(do_sample=True, top_p=1.0, top_k=0),
        dict(temperature=0.0),
    ],
)
def test_edge_values_are_accepted(options):
    DecodingOptions(**options)


def test_penalty_divides_positive_and_multiplies_negative_scores_of_seen_tokens_except_padding():
    penalty = PaddingBlindRepetitionPenalty(2.0, pad_token_id=0)
    scores = torch.tensor([[4.0, 4.0, -4.0, 4.0, 0.5], [4.0, 4.0, -4.0, 4.0, 0.0]])
    out = penalty(torch.tensor([[0, 1, 2, 4], [3, 3, 3, 4]]), scores)
    assert out.tolist() == [[4.0, 2.0, -8.0, 4.0, 0.25], [4.0, 4.0, -4.0, 2.0, 0.0]]
    unpadded = PaddingBlindRepetitionPenalty(2.0, pad_token_id=None)(torch.tensor([[0, 1]]), scores[:1])
    assert unpadded.tolist() == [[2.0, 2.0, -4.0, 4.0, 0.5]]


def test_seeded_repeats_and_leaves_the_callers_random_state_alone():
    device = torch.device("cpu")
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    with seeded(42, device):
        first = torch.rand(3)
    assert torch.equal(torch.rand(3), expected_next)  # as if the seeded block had not run
    with seeded(42, device):
        assert torch.equal(torch.rand(3), first)
    with seeded(7, device):
        assert not torch.equal(torch.rand(3), first)
    torch.manual_seed(5)
    with seeded(None, device):
        unseeded = torch.rand(3)
    torch.manual_seed(5)
    assert torch.equal(torch.rand(3), unseeded)  # None: no seeding, the caller's stream goes on


def test_decoding_options_are_validated():
    with pytest.raises(ValueError, match="needs do_sample"):
        DecodingOptions(num_samples=2)
    with pytest.raises(ValueError, match="max_new_tokens"):
        DecodingOptions(max_new_tokens=0)


def test_repetition_penalty_ignores_left_padding():
    penalty = PaddingBlindRepetitionPenalty(2.0, pad_token_id=0)
    scores = torch.tensor([[4.0, 4.0, -4.0, 4.0]])
    out = penalty(torch.tensor([[0, 0, 1, 2]]), scores)
    assert out.tolist() == [[4.0, 2.0, -8.0, 4.0]]


def _tiny_copy(tiny_model, folder, version):
    shutil.copytree(tiny_model, folder)
    (folder / "generation_config.json").write_text(
        json.dumps(
            dict(
                QWEN_VALUES,
                bos_token_id=0,
                pad_token_id=0,
                transformers_version=version,
                eos_token_id=json.loads((tiny_model / "generation_config.json").read_text())["eos_token_id"],
            )
        )
    )
    return folder


@pytest.mark.parametrize("version", ["4.51.3", "4.49.0"])
def test_official_demo_samples_as_the_demos_own_call_did(tiny_model, tmp_path, version):
    """Issue 26: the demo called generate(**inputs, generation_config=GenerationConfig(do_sample=True,
    temperature=1.0, top_k=50, top_p=0.95, max_new_tokens=1024), use_cache=True) under transformers 4.51.3.
    official_demo(checkpoint) must give the tokens that call gave on a checkpoint saved by 4.51.3 (the
    official training code's pin) with Qwen2.5-VL's values, and on one saved before 4.50: under 4.51.3 the
    demo's own call form is run; under every release, generate() with the resolved values written out."""
    import transformers
    from PIL import Image
    from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

    from qinsight_sdk.backends.qwen2_5_vl.backend import QwenVLBackend
    from qinsight_sdk.judging.profiles import QINSIGHT
    from qinsight_sdk.judging.prompts import PromptOrder

    checkpoint = _tiny_copy(tiny_model, tmp_path / "ckpt", version)
    conversation = QINSIGHT.messages("score", PromptOrder.TEXT_FIRST)
    image = Image.new("RGB", (56, 56), (120, 80, 40))
    backend = QwenVLBackend.load(checkpoint, device="cpu")
    batch = backend.encode([conversation], [[image]])
    new_tokens = 24
    demo_model = Qwen2_5_VLForConditionalGeneration.from_pretrained(checkpoint).eval()  # as the demo loads it
    processor = AutoProcessor.from_pretrained(checkpoint)
    inputs = batch.inputs.to("cpu")

    def demo(**call):
        with seeded(42, torch.device("cpu")), torch.inference_mode():
            out = demo_model.generate(**inputs, use_cache=True, **call)
        return processor.tokenizer.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)

    length = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens)
    ours = backend.generate(batch, DecodingOptions.official_demo(checkpoint, **length))[0][0].text
    resolved = (
        dict(temperature=0.1, top_k=1, top_p=0.95, repetition_penalty=1.05)
        if version == "4.51.3"
        else dict(temperature=1.0, top_k=50, top_p=0.95, repetition_penalty=1.0)
    )
    assert ours == demo(
        generation_config=GenerationConfig(do_sample=True, **resolved, **length, **_token_ids(demo_model))
    )
    if transformers.__version__ == "4.51.3":  # the demo's own call form, in the release it ran under
        assert ours == demo(
            generation_config=GenerationConfig(do_sample=True, temperature=1.0, top_k=50, top_p=0.95, **length)
        )
    greedy = backend.generate(batch, DecodingOptions(**length))[0][0].text
    # top-k 1 after the penalty is greedy decoding: on a 4.51.3 save the demo's answers were our greedy ones
    assert (ours == greedy) == (version == "4.51.3")


def _token_ids(model):
    config = model.generation_config
    return dict(bos_token_id=config.bos_token_id, eos_token_id=config.eos_token_id, pad_token_id=config.pad_token_id)
