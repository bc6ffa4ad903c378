"""Decoding options: what reaches transformers' generate, and seeding that repeats without side effects."""

import pytest
import torch
from transformers import GenerationConfig

from qinsight_sdk.decoding import DecodingOptions, PaddingBlindRepetitionPenalty, seeded


def checkpoint_config(**values):
    base = dict(pad_token_id=7, eos_token_id=[5, 6], temperature=0.1, top_k=1, top_p=0.001, repetition_penalty=1.05)
    base.update(values)
    return GenerationConfig(**base)


def test_greedy_defaults_reach_generate_with_neutral_sampling_values():
    base = checkpoint_config()
    config, processors = DecodingOptions().generation_config(base)
    assert (config.max_new_tokens, config.min_new_tokens, config.do_sample, config.num_return_sequences) == \
        (512, None, False, 1)
    assert (config.temperature, config.top_k, config.top_p, config.repetition_penalty) == (1.0, 50, 1.0, 1.0)
    assert (config.pad_token_id, config.eos_token_id) == (7, [5, 6])
    # the checkpoint's penalty is applied by our padding-blind processor instead of transformers' own
    (penalty,) = processors
    assert isinstance(penalty, PaddingBlindRepetitionPenalty) and (penalty.penalty, penalty.pad_token_id) == (1.05, 7)
    assert (base.temperature, base.repetition_penalty) == (0.1, 1.05)  # the checkpoint's config is left alone


def test_sampling_options_reach_generate():
    options = DecodingOptions(max_new_tokens=64, min_new_tokens=8, do_sample=True, temperature=0.7, top_k=20,
                              top_p=0.9, num_samples=3, repetition_penalty=1.0)
    config, processors = options.generation_config(checkpoint_config())
    assert (config.max_new_tokens, config.min_new_tokens, config.do_sample, config.num_return_sequences) == \
        (64, 8, True, 3)
    assert (config.temperature, config.top_k, config.top_p, config.repetition_penalty) == (0.7, 20, 0.9, 1.0)
    assert len(processors) == 0  # a penalty of 1.0 is no penalty


def test_a_checkpoint_without_a_penalty_gets_none():
    _, processors = DecodingOptions().generation_config(checkpoint_config(repetition_penalty=None))
    assert len(processors) == 0
    _, processors = DecodingOptions(repetition_penalty=1.2).generation_config(checkpoint_config())
    assert [p.penalty for p in processors] == [1.2]


def test_official_demo_settings():
    options = DecodingOptions.official_demo()
    assert (options.do_sample, options.temperature, options.top_k, options.top_p, options.seed,
            options.max_new_tokens, options.num_samples, options.repetition_penalty) == \
        (True, 1.0, 50, 0.95, 42, 1024, 1, None)           # None: the checkpoint's penalty, as the demo had
    assert DecodingOptions.official_demo(max_new_tokens=9).max_new_tokens == 9
    assert DecodingOptions() == DecodingOptions(max_new_tokens=512, min_new_tokens=0, do_sample=False, seed=42,
                                                num_samples=1, repetition_penalty=None)


SAMPLING = "sampling needs temperature > 0, 0 < top_p <= 1 and top_k >= 0"


@pytest.mark.parametrize("options,message", [
    (dict(max_new_tokens=0), "max_new_tokens must be at least 1, got 0"),
    (dict(num_samples=0, do_sample=True), "num_samples must be at least 1, got 0"),
    (dict(num_samples=2), "num_samples > 1 needs do_sample=True: greedy decoding gives one answer"),
    (dict(do_sample=True, temperature=0.0), SAMPLING),
    (dict(do_sample=True, top_p=0.0), SAMPLING),
    (dict(do_sample=True, top_p=1.01), SAMPLING),
    (dict(do_sample=True, top_k=-1), SAMPLING),
])
def test_bad_options_are_refused(options, message):
    with pytest.raises(ValueError) as refused:
        DecodingOptions(**options)
    assert str(refused.value) == message


@pytest.mark.parametrize("options", [dict(max_new_tokens=1), dict(num_samples=2, do_sample=True),
                                     dict(do_sample=True, top_p=1.0, top_k=0), dict(temperature=0.0)])
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


def test_official_demo_samples_exactly_as_the_demo_did(tiny_model):
    """Issue 11: what did the demo's generate(do_sample=True, temperature=1.0, top_k=50, top_p=0.95,
    max_new_tokens=1024) really sample with, under a checkpoint whose generation_config.json says
    temperature 0.1, top-k 1, top-p 0.001 and repetition penalty 1.05 (Qwen2.5-VL's, which the tiny
    checkpoint ships)? Whatever each transformers release does with it, official_demo() must give the
    same tokens from the same seed, and both must differ from the checkpoint's own near-greedy values."""
    from PIL import Image
    from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

    from qinsight_sdk.qwen_vl import QwenVLBackend
    from qinsight_sdk.prompts import PromptOrder
    from qinsight_sdk.profiles import QINSIGHT

    conversation = QINSIGHT.messages("score", PromptOrder.TEXT_FIRST)
    image = Image.new("RGB", (56, 56), (120, 80, 40))
    backend = QwenVLBackend.load(tiny_model, device="cpu")
    batch = backend.encode([conversation], [[image]])
    new_tokens = 24

    demo_model = Qwen2_5_VLForConditionalGeneration.from_pretrained(tiny_model).eval()  # as the demo loads it
    processor = AutoProcessor.from_pretrained(tiny_model)
    inputs = batch.inputs.to("cpu")

    def demo(**sampling):
        with seeded(42, torch.device("cpu")), torch.inference_mode():
            out = demo_model.generate(**inputs, max_new_tokens=new_tokens, min_new_tokens=new_tokens, **sampling)
        return processor.tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)

    ours = backend.generate(batch, DecodingOptions.official_demo(max_new_tokens=new_tokens,
                                                                 min_new_tokens=new_tokens))[0][0].text
    assert ours == demo(do_sample=True, temperature=1.0, top_k=50, top_p=0.95)
    assert ours != demo()   # the checkpoint's own settings sample differently: the demo's values were used
    assert DecodingOptions.official_demo().max_new_tokens == 1024
