"""The service's JSON ``/compute`` endpoint (Flow-Factory's remote reward request) and ``RemoteReward``,
without a server: requests read as the gateway reads them, calls judged as a replica judges them, the
client against a scripted HTTP server on loopback. test_service.py runs both against a real service."""

import base64
import io
import json
import os
import pickle

import numpy as np
import pytest
import torch
from PIL import Image
from scripted import brightness_answer
from service_doubles import ScriptedServer, parse_call, png, refused

from qinsight_sdk import QualityJudge, Video
from qinsight_sdk.client import RemoteError, RemoteReward
from qinsight_sdk.service import Call, RequestError, ServiceSettings, judge_calls
from qinsight_sdk.testing import ScriptedBackend, video_frames


def text(data: bytes) -> str:
    return base64.b64encode(data).decode()


def frame_pngs(frames) -> list[bytes]:
    out = []
    for frame in frames:
        buffer = io.BytesIO()
        Image.fromarray(frame).save(buffer, format="PNG")
        out.append(buffer.getvalue())
    return out


class RunsCommand:
    """Unpickling this runs a shell command that creates ``marker``: what a hostile reward client sends."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


# -- reading Flow-Factory's request ---------------------------------------------------------------------------


def test_flow_factory_s_request_becomes_a_call_with_prompts_and_conditions_not_judged():
    body = {
        "prompt": ["a cat", "a dog"],
        "image": [text(b"one"), text(b"two")],
        "video": None,
        "condition_images": None,
        "condition_videos": None,
    }
    assert parse_call("compute", "application/json", json.dumps(body).encode(), ServiceSettings()) == Call(
        "compute", [b"one", b"two"], {}
    )
    videos = {"prompt": ["p"], "video": [[text(b"f0"), text(b"f1")], [text(b"g0")]], "image": None, "fps": 16}
    call = parse_call("compute", "", json.dumps(videos).encode(), ServiceSettings())
    assert call == Call("compute", [[b"f0", b"f1"], [b"g0"]], {"fps": 16.0})
    assert isinstance(call.options["fps"], float)


def test_bad_compute_requests_say_what_is_wrong():
    image = text(png())
    refused(
        400,
        '/compute needs "image" (a list of base64 images) or "video" (a list of videos, each a list of base64 frames)',
        "compute",
        {"prompt": ["p"]},
    )
    refused(
        400,
        '/compute needs "image" (a list of base64 images) or "video" (a list of videos, each a list of '
        "base64 frames), not both",
        "compute",
        {"image": [image], "video": [[image]]},
    )
    refused(400, '/compute needs "image": a non-empty list', "compute", {"image": []})
    refused(400, '/compute needs "video": a non-empty list', "compute", {"video": image})
    refused(400, "image[1]: expected a base64 string, not dict", "compute", {"image": [image, {"base64": image}]})
    refused(400, "image[0]: not valid base64", "compute", {"image": ["%%%"]})
    refused(400, "video[0] frame 1: not valid base64", "compute", {"video": [[image, "%%%"]]})
    refused(400, "video[1]: a video is a non-empty list of base64 frames", "compute", {"video": [[image], []]})
    refused(400, "/compute takes no option mode (it takes: fps)", "compute", {"image": [image], "mode": "fast"})
    for fps in (0, -1, "16", True):
        refused(400, "option fps must be a ...", "compute", {"image": [image], "fps": fps})
    settings = ServiceSettings(max_images=2, max_video_frames=3)
    refused(413, "3 images in one request; this service takes at most 2", "compute", {"image": [image] * 3}, settings)
    refused(413, "video[0] has 4 frames; this service takes at most 3", "compute", {"video": [[image] * 4]}, settings)
    refused(
        400,
        "/compute takes application/json, not multipart/form-data; boundary=x (nothing here unpickles)",
        "compute",
        b"--x--",
        content_type="multipart/form-data; boundary=x",
    )


def test_frames_too_large_are_refused_from_their_headers_naming_the_frame():
    big = io.BytesIO()
    Image.new("RGB", (300, 200)).save(big, format="PNG")
    settings = ServiceSettings(max_image_pixels=50_000, max_request_pixels=100_000)
    small = text(png())
    refused(
        413,
        "video[1] frame 2 has 60,000 pixels; this service takes at most 50,000 per image ...",
        "compute",
        {"video": [[small], [small, small, text(big.getvalue())]]},
        settings,
    )
    refused(413, "the images have ...", "compute", {"image": [small] * 40}, settings)


@pytest.mark.parametrize("task", ["compute", "reward", "score", "rank"])
@pytest.mark.parametrize("content_type", ["", "application/octet-stream", "application/json"])
def test_a_pickled_body_is_refused_and_never_unpickled(task, content_type, tmp_path):
    marker = tmp_path / "pwned"
    body = pickle.dumps({"images": [RunsCommand(marker)], "image": [RunsCommand(marker)]})
    with pytest.raises(RequestError) as caught:
        parse_call(task, content_type, body, ServiceSettings())
    assert caught.value.status == 400 and not marker.exists()
    assert "not JSON" in caught.value.message or "nothing here unpickles" in caught.value.message


# -- judging /compute on a replica ----------------------------------------------------------------------------


def test_compute_answers_rewards_scores_and_errors_per_item_grouped_and_split_back():
    judge = QualityJudge(ScriptedBackend(brightness_answer))
    images = [png(level / 5, level) for level in range(5)]
    calls = [Call("compute", images[:3], {}), Call("compute", [b"not an image", images[4]], {})]
    first, second = judge_calls(judge, calls)
    own = judge.reward(images[:3]).tolist()
    assert first["rewards"] == pytest.approx(own, abs=1e-6) and first["errors"] == [None] * 3
    assert first["scores"] == [r.score for r in judge.score(images[:3], mode="fast")]
    assert second["rewards"][0] == 0.0 and second["scores"][0] is None
    assert "not a recognised image file" in second["errors"][0] and second["errors"][1] is None
    assert second["rewards"][1] == pytest.approx(judge.reward(images[4]).item(), abs=1e-6)
    assert "error" not in first and "error" not in second  # Flow-Factory's client fails a whole batch on "error"


def video_answer(conversation, clips):
    return f"<answer>{100 * float(clips[0].frames.mean()) / 255 - len(clips[0].frames):.2f}</answer>"


def test_compute_judges_videos_sent_as_frames_at_the_rate_given():
    judge = QualityJudge(ScriptedBackend(video_answer), profile="vqinsight-naturalvideo")
    videos = [video_frames(0.3, 1), video_frames(0.7, 2)]
    sent = [frame_pngs(v) for v in videos]
    broken = [sent[0][0], b"junk", sent[0][2]]
    (answer,) = judge_calls(judge, [Call("compute", [sent[0], broken, sent[1]], {"fps": 8.0})])
    own = judge.reward([Video(v, 8.0) for v in videos]).tolist()
    assert answer["rewards"][0] == pytest.approx(own[0], abs=1e-6) and answer["rewards"][2] == pytest.approx(
        own[1], abs=1e-6
    )
    assert answer["rewards"][1] == 0.0 and answer["errors"][1].startswith("video[1] frame 1 is not an image (")
    (default_rate,) = judge_calls(judge, [Call("compute", [sent[0]], {})])
    assert default_rate["rewards"][0] == pytest.approx(judge.reward([videos[0]]).item(), abs=1e-6)
    assert default_rate["rewards"][0] != pytest.approx(own[0], abs=1e-6)


def test_compute_refuses_the_wrong_media_for_its_judge_as_a_400():
    image_judge = QualityJudge(ScriptedBackend(brightness_answer))
    (answer,) = judge_calls(image_judge, [Call("compute", [[png()]], {})])
    assert answer == {"error": 'this service\'s judge rates images: send "image", not "video"', "http_status": 400}
    video_judge = QualityJudge(ScriptedBackend(video_answer), profile="vqinsight-naturalvideo")
    (answer,) = judge_calls(video_judge, [Call("compute", [png()], {})])
    assert answer["http_status"] == 400 and 'send "video", not "image"' in answer["error"]


# -- RemoteReward, against a scripted server ------------------------------------------------------------------


class Recording(ScriptedServer):
    """A scripted server that keeps each request's JSON body and answers one reward per item."""

    def __init__(self, replies=None):
        super().__init__(replies or [])
        self.bodies = []
        server = self

        def do_post(handler):
            body = json.loads(handler.rfile.read(int(handler.headers["Content-Length"])))
            server.bodies.append(body)
            server.requests += 1
            items = body.get("image") or body.get("video")
            if server.replies:
                status = server.replies.pop(0)
                data = json.dumps({"error": f"said {status}"}).encode()
            else:
                status = 200
                answer = {
                    "rewards": [0.1 * (k + 1) for k in range(len(items))],
                    "scores": [1.0] * len(items),
                    "errors": [None] * len(items),
                }
                data = json.dumps(answer).encode()
            handler.send_response(status)
            handler.send_header("Content-Length", str(len(data)))
            handler.end_headers()
            handler.wfile.write(data)

        self.http.RequestHandlerClass.do_POST = do_post


def test_remote_reward_sends_flow_factory_s_json_in_batches_and_answers_in_flow_grpo_s_convention(waits):
    images = torch.rand(5, 3, 8, 8)
    with Recording() as server:
        reward = RemoteReward(server.url, token="t0k", batch_size=2)
        rewards, info = reward(images, ["p"] * 5, [{}] * 5, only_strict=True)
    assert [len(body["image"]) for body in server.bodies] == [2, 2, 1]
    assert rewards.dtype == np.float32 and rewards.tolist() == pytest.approx([0.1, 0.2, 0.1, 0.2, 0.1])
    assert info == {"scores": [1.0] * 5, "errors": [None] * 5}
    sent = Image.open(io.BytesIO(base64.b64decode(server.bodies[0]["image"][1])))
    assert sent.format == "PNG" and sent.size == (8, 8)  # lossless, each image as it was
    expected = (images[1].permute(1, 2, 0) * 255).round().byte().numpy()
    np.testing.assert_array_equal(np.asarray(sent), expected)
    assert "fps" not in server.bodies[0]


def test_remote_reward_sends_videos_frame_by_frame_with_their_rate(waits):
    videos = torch.rand(2, 3, 3, 8, 8)  # Flow-GRPO's (B, T, C, H, W)
    with Recording() as server:
        RemoteReward(server.url, fps=16.0).compute(videos)
        RemoteReward(server.url).compute([[Image.new("RGB", (4, 4))] * 2])  # Flow-Factory's List[List[PIL]]
    first, second = server.bodies
    assert [len(v) for v in first["video"]] == [3, 3] and first["fps"] == 16.0
    assert len(second["video"]) == 1 and len(second["video"][0]) == 2 and "image" not in second


def test_remote_reward_retries_a_busy_service_and_raises_what_it_refuses(waits):
    with Recording([503, 503]) as server:
        rewards, _ = RemoteReward(server.url, retries=3, backoff_s=0.1)([b"png"])
    assert server.requests == 3 and waits == [0.1, 0.2] and rewards.tolist() == pytest.approx([0.1])
    waits.clear()
    with Recording([500]) as server:
        with pytest.raises(RemoteError, match=r"said 500 \(HTTP 500\)"):
            RemoteReward(server.url)([b"png"])
    assert server.requests == 1 and waits == []  # a fault is not repeated a thousand times
    with pytest.raises(TypeError, match="RemoteReward takes no option ref_images"):
        RemoteReward("http://127.0.0.1:1")([b"png"], None, None, ref_images=None)
    with pytest.raises(ValueError, match="batch_size must be at least 1, not 0"):
        RemoteReward("http://127.0.0.1:1", batch_size=0)
