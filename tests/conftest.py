"""Shared fixtures: the tiny checkpoint (built once per run) and generated images. No network."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest
from samples import noise_image

from qinsight_sdk import DecodingOptions, QualityJudge
from qinsight_sdk.testing import (
    build_tiny_checkpoint,
    cached_tiny_judge,
    cached_tiny_video_judge,
)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    return build_tiny_checkpoint(tmp_path_factory.mktemp("tiny-qwen"))


@pytest.fixture(scope="session")
def tiny_judge(tiny_model):
    return QualityJudge.from_pretrained(tiny_model, device="cpu", decoding=DecodingOptions(max_new_tokens=24))


@pytest.fixture(scope="session")
def tiny_judge_model(tmp_path_factory):
    """The tiny checkpoint trained to answer in Q-Insight's format (about half a minute on this CPU),
    kept between runs in pytest's own temporary root, keyed by the recipe and the library versions."""
    return cached_tiny_judge(tmp_path_factory.getbasetemp().parent / "qinsight-cache")


@pytest.fixture(scope="session")
def tiny_video_judge_model(tmp_path_factory):
    """The tiny checkpoint trained to answer VQ-Insight's video tasks (about a minute on this CPU), kept
    between runs like the tiny judge."""
    return cached_tiny_video_judge(tmp_path_factory.getbasetemp().parent / "qinsight-cache")


@pytest.fixture(scope="session")
def cpu_quantization():
    """Skips, saying why, where transformers refuses bitsandbytes on the CPU (4.51.3; 4.57.1 on do not)."""
    import transformers
    from packaging.version import Version

    if Version(transformers.__version__) < Version("4.57"):
        pytest.skip(
            f"transformers {transformers.__version__} refuses bitsandbytes on the CPU (4.57.1 and newer "
            "quantize there); test_quantization checks the message its users get"
        )


@pytest.fixture
def image_files(tmp_path):
    """Five PNGs of different sizes, so batches need padding."""
    paths = []
    for i in range(5):
        path = tmp_path / f"img{i}.png"
        noise_image(i, 40 + 23 * i, 50 + 11 * i).save(path)
        paths.append(path)
    return paths


@pytest.fixture
def waits(monkeypatch):
    """The service clients' waits between attempts, recorded instead of slept."""
    from qinsight_sdk import client

    slept = []
    monkeypatch.setattr(client.time, "sleep", slept.append)
    return slept


_HEAVY_FIXTURES = {
    "tiny_model": "model",
    "tiny_judge": "model",
    "tiny_judge_model": "model",
    "tiny_video_judge_model": "model",
    "comfy": "comfyui",
    "ray_service": "ray",
    "ray_video_service": "ray",
    "ray_cluster": "ray",
}
# .ci/run sets this for its runs at the transformers floors: a Ray cluster and a browser on ComfyUI's front
# end are the same at every floor, and so are a wheel and README's first run: those tests run once, at the
# newest releases
FLOOR_RUN = os.environ.get("QINSIGHT_CI_FLOOR")


def pytest_collection_modifyitems(items):
    """Mark tests by what they start (``-m "not model and not comfyui"`` is the quick loop that
    mutation testing runs): the tiny checkpoint costs seconds per session, a ComfyUI server a minute."""
    for item in items:
        for fixture, marker in _HEAVY_FIXTURES.items():
            if fixture in getattr(item, "fixturenames", ()):
                item.add_marker(marker)
        heavy = [kind for kind in ("ray", "browser", "install") if kind in item.keywords]
        if FLOOR_RUN and heavy:
            item.add_marker(
                pytest.mark.skip(
                    reason=f"a {heavy[0]} integration test: CI runs it once, at the "
                    f"newest transformers, not at the {FLOOR_RUN} floor"
                )
            )
