"""Loading the checkpoint: the processor, with its fallback where torchvision does not work."""

from qinsight_sdk import QualityJudge


def test_image_only_processor_when_torchvision_is_missing(tiny_model, tiny_judge, image_files, monkeypatch):
    """Users with a CPU torch often lack a working torchvision; transformers 5 then needs our fallback."""
    from qinsight_sdk.backends.qwen2_5_vl import loading

    monkeypatch.setattr(loading, "_torchvision_works", lambda: False)
    judge = QualityJudge.from_pretrained(tiny_model, device="cpu", decoding=tiny_judge.decoding)
    assert type(judge.backend.processor).__name__ == "ImageOnlyQwen2_5_VLProcessor"
    result = judge.score(image_files[0])
    assert result.raw
