"""A video judge behind a real Ray Serve service on loopback, used through RemoteJudge: videos go as file
bytes, within the service's limits, and come back as the judge's own answers."""

import pytest
from samples import write_video

from qinsight_sdk import QualityJudge
from qinsight_sdk.client import RemoteJudge
from qinsight_sdk.service import ServiceSettings
from qinsight_sdk.testing import video_frames

LEVELS = (0.2, 0.5, 0.85)


@pytest.fixture(scope="module")
def ray_video_service(tiny_video_judge_model, tmp_path_factory):
    """Ray Serve on 127.0.0.1 with the tiny video judge and a 1 MiB body limit; no token."""
    import ray
    from comfyui_server import free_port
    from ray import serve

    from qinsight_sdk.service import build_app

    port = free_port()
    settings = ServiceSettings(max_request_bytes=2**20, max_batch_size=4, batch_wait_s=0.2)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        options = {"model": str(tiny_video_judge_model), "device": "cpu", "dtype": "fp32", "local_files_only": True}
        serve.run(build_app(options, settings, cpus_per_replica=0.5), route_prefix="/", name="qinsight-video")
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()
        ray.shutdown()


def test_remote_video_scores_equal_the_local_judges(ray_video_service, tiny_video_judge_model, tmp_path):
    frames = [video_frames(level, k, (64, 48), 12) for k, level in enumerate(LEVELS)]
    paths = [write_video(tmp_path / f"{k}.mp4", clip, fps=6) for k, clip in enumerate(frames)]
    (tmp_path / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(64))
    remote = RemoteJudge(ray_video_service, timeout=120)
    results = remote.score([*paths, tmp_path / "broken.mp4"], mode="fast")
    local = QualityJudge.from_pretrained(tiny_video_judge_model, device="cpu", dtype="fp32")
    expected = local.score(paths, mode="fast")
    assert [r.score for r in results[:3]] == pytest.approx([r.score for r in expected], abs=1e-5)
    assert results[0].score < results[1].score < results[2].score  # the tiny judge rates brightness
    assert results[3].score is None and "broken.mp4" not in results[3].error and results[3].error
    rewards = remote.reward([paths[0].read_bytes(), paths[2]])
    assert rewards.tolist() == pytest.approx([expected[0].score / 100, expected[2].score / 100], abs=1e-5)
    ranking = remote.rank(paths)
    assert ranking.order == [2, 1, 0]
