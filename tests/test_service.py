"""The judge as a service: request checking (quick), then a real Ray Serve service on loopback with the
tiny judge, and its standard-library client in a process where torch cannot be imported."""

import asyncio
import base64
import io
import json
import os
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from qinsight_sdk import QualityJudge
from qinsight_sdk.client import RemoteError, RemoteJudge
from qinsight_sdk.service import (Call, RequestError, ServiceSettings, check_size, check_token, judge_calls,
                                  read_call)
from qinsight_sdk.testing import ScriptedBackend
from qinsight_sdk.tiny_judge import brightness_image

TOKEN = "s3cret-token"


def png(level: float = 0.5, seed: int = 0) -> bytes:
    buffer = io.BytesIO()
    brightness_image(level, seed).save(buffer, format="PNG")
    return buffer.getvalue()


def b64(data: bytes) -> dict:
    return {"base64": base64.b64encode(data).decode()}


def parse_call(task: str, content_type: str, body: bytes, settings: ServiceSettings) -> Call:
    """The call a request with this body makes, read as the service reads it (in 64 KiB chunks)."""
    request = FakeRequest("/" + task, body=body, chunk=65536, content_type=content_type)
    return asyncio.run(read_call(task, request, settings))


def refused(status: int, message: str, task: str, body, settings=ServiceSettings(), content_type="application/json"):
    """The request is refused with this status and exactly this message (a prefix, where it ends in ...)."""
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    with pytest.raises(RequestError) as caught:
        parse_call(task, content_type, raw, settings)
    assert caught.value.status == status
    if message.endswith("..."):
        assert caught.value.message.startswith(message[:-3]), caught.value.message
    else:
        assert caught.value.message == message
    assert str(caught.value) == caught.value.message


# -- checking requests, without a server -------------------------------------------------------------------

def test_a_good_json_request_becomes_a_call():
    call = parse_call("score", "application/json", json.dumps({"images": [b64(b"abc")], "mode": "fast"}).encode(),
                      ServiceSettings())
    assert call == Call("score", [b"abc"], {"mode": "fast"})
    pair = parse_call("compare", "application/json", json.dumps(
        {"image_a": b64(b"a"), "image_b": b64(b"b"), "reference": b64(b"r"), "both_orders": True}).encode(),
        ServiceSettings())
    assert pair == Call("compare", [b"a", b"b", b"r"], {"both_orders": True})
    ranked = parse_call("rank", "", json.dumps({"images": [b64(b"a")], "strategy": "hybrid", "top_k": 2,
                                               "pool": None}).encode(), ServiceSettings())
    assert ranked.options == {"strategy": "hybrid", "top_k": 2}   # a null option is the default


def multipart(parts, boundary="XyZ"):
    """A multipart/form-data body of (name, filename or None, data) parts, and its content type."""
    def header(name, filename):
        given = f'; name="{name}"' if name is not None else ""
        return f"Content-Disposition: form-data{given}{f'; filename={chr(34)}{filename}{chr(34)}' if filename else ''}"
    body = b"".join(f"--{boundary}\r\n{header(name, filename)}\r\n\r\n".encode() + data + b"\r\n"
                    for name, filename, data in parts) + f"--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def test_multipart_files_and_fields():
    body, kind = multipart([("images", "a.png", b"AAA"), ("images", "b.png", b""), ("mode", None, b"fast")])
    assert parse_call("score", kind, body, ServiceSettings()) == Call("score", [b"AAA", b""], {"mode": "fast"})
    for text, value in ((b"true", True), (b"1", True), (b"false", False), (b"0", False)):
        body, kind = multipart([("image_a", "a", b"A"), ("image_b", "b", b"B"), ("both_orders", None, text)])
        assert parse_call("compare", kind, body, ServiceSettings()) == Call("compare", [b"A", b"B"],
                                                                           {"both_orders": value})
    body, kind = multipart([("images", "a", b"A"), ("top_k", None, b"-3"), ("strategy", None, b"\xff\xfe")])
    assert parse_call("rank", kind, body, ServiceSettings()).options == {"top_k": -3, "strategy": "\xff\xfe"}
    body, kind = multipart([("images", "a", b"A"), (None, None, b"x")])
    refused(400, "the multipart body could not be read (The Content-Disposition header field ...", "score", body,
            content_type=kind)
    refused(400, "the multipart body could not be read (Missing boundary in multipart.)", "score", b"garbage",
            content_type="multipart/form-data")


@pytest.mark.parametrize("filename", ["x.png", None], ids=["files", "fields"])
def test_a_body_of_many_tiny_parts_is_refused_at_the_first_part_over_the_limit(filename):
    # 50,000 parts took 13 s of the replica's event loop to parse whole before the image count was checked
    body, kind = multipart([("images" if filename else f"f{i}", filename, b"x") for i in range(50_000)])
    request = FakeRequest("/score", body=body, chunk=4096, content_type=kind)
    with pytest.raises(RequestError) as caught:
        asyncio.run(read_call("score", request, ServiceSettings()))
    expected = ((413, "more than 64 files in one request; this service takes at most 64 images") if filename else
                (400, "more than 16 text fields: a request takes an endpoint's options, a few at most"))
    assert (caught.value.status, caught.value.message) == expected
    assert request.read < 2 * 4096 + len(body) * 70 // 50_000   # stopped at part 65 (or 17), not at the end


def test_malformed_requests_are_4xx_with_what_is_wrong():
    one = [b64(b"a")]
    refused(404, "no endpoint /nope: use one of /score, /degradation, /compare, /rank, /reward", "nope", {})
    refused(400, "the body is not JSON (...", "score", b"{nope")
    refused(400, "the body must be a JSON object", "score", [1, 2])
    refused(400, "/score needs images: a non-empty list", "score", b"")   # an empty body is an empty object
    refused(400, "send application/json or multipart/form-data, not text/plain", "score", {}, content_type="text/plain")
    refused(400, "/score needs images: a non-empty list", "score", {"images": []})
    refused(400, "/reward needs images: a non-empty list", "reward", {"images": "x.png"})
    refused(400, "images[1]: not valid base64", "score", {"images": [b64(b"a"), {"base64": "@@@"}]})
    refused(400, 'images[0]: an image is {"base64": ...} (or {"path": ...} where the server allows paths)', "score",
            {"images": [42]})
    refused(400, "/compare needs image_b", "compare", {"image_a": b64(b"a")})
    refused(400, "/compare needs image_a and image_b", "compare", {"reference": b64(b"a")})
    refused(400, "/score takes no option colour, size (it takes: mode)", "score",
            {"images": one, "size": 1, "colour": 1})
    refused(400, "/reward takes no option mode (it takes: none)", "reward", {"images": one, "mode": "fast"})
    refused(400, "/rank takes no option x (it takes: strategy, top_k, pool)", "rank", {"images": one, "x": 1})
    refused(400, "option top_k must be a int, got 'two'", "rank", {"images": one, "top_k": "two"})
    refused(400, "option top_k must be a int, got True", "rank", {"images": one, "top_k": True})
    refused(400, "option both_orders must be a bool, got 'maybe'", "compare",
            {"image_a": one[0], "image_b": one[0], "both_orders": "maybe"})


def test_size_limits():
    small = ServiceSettings(max_request_bytes=100, max_images=2)
    refused(413, "the request is over 100 bytes, the most this service takes", "score", b" " * 101, small)
    at_limit = b'{"images": []}'.ljust(100)
    refused(400, "/score needs images: a non-empty list", "score", at_limit, small)   # at the limit: read
    refused(413, "3 images in one request; this service takes at most 2", "score", {"images": [b64(b"a")] * 3},
            ServiceSettings(max_images=2))
    assert len(parse_call("score", "", json.dumps({"images": [b64(b"a")] * 2}).encode(), small).images) == 2
    with pytest.raises(RequestError) as caught:
        check_size({"content-length": "5000"}, small)
    assert (caught.value.status, caught.value.message) == (413, "the request is 5000 bytes; this service takes at "
                                                                "most 100")
    check_size({"content-length": "100"}, small)
    check_size({}, ServiceSettings(max_request_bytes=0))   # no length said: the reading limit applies
    with pytest.raises(RequestError) as caught:
        check_size({"content-length": "lots"}, small)
    assert (caught.value.status, caught.value.message) == (400, "Content-Length is not a number")


def test_the_token_when_one_is_set():
    settings = ServiceSettings(token=TOKEN)
    for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": TOKEN}):
        with pytest.raises(RequestError) as caught:
            check_token(headers, settings)
        assert (caught.value.status, caught.value.message) == (
            401, "this service needs its bearer token: Authorization: Bearer <token>")
    check_token({"authorization": f"Bearer {TOKEN}"}, settings)
    check_token({}, ServiceSettings())   # no token set: open


@pytest.mark.parametrize("token", ["", " ", f"{TOKEN} ", f" {TOKEN}"])
def test_a_token_no_client_could_send_is_refused_at_start(token):
    # QINSIGHT_TOKEN="" (or a padded one, whose spaces HTTP strips) made every request a 401, without a word
    from qinsight_sdk.errors import UsageError

    with pytest.raises(UsageError, match="the service's token is (empty|padded with spaces)"):
        ServiceSettings(token=token)
    with pytest.raises(UsageError, match="RemoteJudge's token is (empty|padded with spaces)"):
        RemoteJudge("http://127.0.0.1:1", token=token)


def test_an_empty_token_variable_stops_serve_before_ray_starts(monkeypatch, capsys):
    from qinsight_sdk import cli

    monkeypatch.setenv("QINSIGHT_TOKEN", "")
    monkeypatch.setattr(cli, "_judge_options", lambda args: pytest.fail("serve went on with an empty token"))
    assert cli.main(["serve", "--model", "unused-model-folder"]) == 2
    assert "the service's token is empty" in capsys.readouterr().err


def test_hostile_shapes_are_400s_not_500s(tmp_path):
    refused(400, "the body's JSON is nested too deeply", "score", b"[" * 100_000)
    refused(400, "images[0]: a path may not contain a NUL byte", "score", {"images": [{"path": "a\x00.png"}]},
            ServiceSettings(allow_paths=str(tmp_path)))


def test_paths_only_inside_the_allowed_folder(tmp_path):
    inside, outside = tmp_path / "allowed", tmp_path / "elsewhere"
    inside.mkdir(), outside.mkdir()
    (inside / "sub").mkdir()
    (inside / "sub" / "a.png").write_bytes(png())
    (outside / "secret.png").write_bytes(png())
    (inside / "link.png").symlink_to(outside / "secret.png")
    settings = ServiceSettings(allow_paths=str(inside))
    call = parse_call("score", "", json.dumps({"images": [{"path": "sub/a.png"}]}).encode(), settings)
    assert call.images == [inside.resolve() / "sub" / "a.png"]
    refused(403, "images[0]: this service reads no paths (send the image's bytes)", "score",
            {"images": [{"path": "sub/a.png"}]})
    refused(403, "images[0]: a path may not contain ..", "score",
            {"images": [{"path": "sub/../../elsewhere/secret.png"}]}, settings)
    refused(403, "images[0]: link.png is outside the folder this service may read", "score",
            {"images": [{"path": "link.png"}]}, settings)
    refused(403, f"image_b: {outside / 'secret.png'} is outside the folder this service may read", "compare",
            {"image_a": {"path": "sub/a.png"}, "image_b": {"path": str(outside / "secret.png")}}, settings)


def test_calls_judged_together_are_grouped_and_split_back():
    def answer(conversation, images):
        if len(images) == 2:
            return "<think>ok</think><answer>Image A</answer>"
        if "distortion" in str(conversation):
            return '<answer>{"distortion_class": "noise", "severity": "slight"}</answer>'
        return '<think>looked</think><answer>{"rating": %.1f}</answer>' % (1 + 4 * np.asarray(images[-1]).mean() / 255)

    backend = ScriptedBackend(answer)
    judge = QualityJudge(backend)
    as_png = []
    for value in (0, 255, 128):
        buffer = io.BytesIO()
        Image.new("RGB", (56, 56), (value, value, value)).save(buffer, format="PNG")
        as_png.append(buffer.getvalue())
    calls = [Call("score", as_png[:2], {"mode": "fast"}), Call("reward", [as_png[2]]),
             Call("score", [as_png[2]], {"mode": "fast"}), Call("score", [b"not an image", as_png[1]], {"mode": "reason"}),
             Call("rank", as_png, {"strategy": "score"}), Call("rank", as_png, {"top_k": 0}),
             Call("compare", as_png[:2], {}), Call("degradation", [as_png[0]]),
             Call("compare", as_png[:2], {"both_orders": True}), Call("score", [as_png[0]], {"mode": "fast"})]
    answers = judge_calls(judge, calls)
    assert [r["score"] for r in answers[0]["results"]] == pytest.approx([1.0, 5.0], abs=0.06)
    assert answers[1]["rewards"] == pytest.approx([0.5], abs=0.02)
    assert answers[2]["results"][0]["score"] == pytest.approx(3.0, abs=0.06)
    assert answers[9]["results"][0]["score"] == pytest.approx(1.0, abs=0.06)   # the third call of its batch
    assert all(r["reasoning"] is None for a in (0, 2, 9) for r in answers[a]["results"])   # fast: no text
    reasoned = answers[3]["results"]
    assert "not a recognised image file" in reasoned[0]["error"] and reasoned[1]["reasoning"] == "looked"
    assert answers[4]["ranking"]["order"] == [1, 2, 0]
    assert answers[5] == {"error": "top_k must be at least 1, got 0", "status": 400}
    # both orders asked only where asked: this judge always says A, so swapped it contradicts itself
    assert answers[6]["result"]["consistent"] is None and answers[8]["result"]["consistent"] is False
    assert answers[6]["result"]["winner"] == "A" and answers[7]["results"][0]["distortion"] == "noise"
    backend.calls.clear()
    judge_calls(judge, [Call("score", as_png[:2], {"mode": "fast"}), Call("score", [as_png[2]], {"mode": "fast"})])
    assert backend.calls == [3]   # two requests, one batch
    twins = judge_calls(judge, [Call("rank", as_png, {}), Call("rank", as_png[:2], {})])   # each its own ranking
    assert [a["ranking"]["order"] for a in twins] == [[1, 2, 0], [1, 0]]
    # only calls with the same options share a judge call: an absent mode is not an empty one
    alone, refused_mode = judge_calls(judge, [Call("score", [as_png[1]], {}), Call("score", [as_png[1]], {"mode": ""})])
    assert alone["results"][0]["score"] == pytest.approx(5.0, abs=0.06) and refused_mode["status"] == 400


def test_the_serve_command_wires_its_options_into_ray_serve(monkeypatch, tmp_path):
    ray = pytest.importorskip("ray", reason="the [ray] extra is not installed")
    from ray import serve

    from qinsight_sdk import cli, service

    seen = {}
    monkeypatch.setenv("QINSIGHT_TOKEN", "from-env")
    monkeypatch.setattr(ray, "init", lambda **kw: seen.setdefault("init", kw))
    monkeypatch.setattr(ray, "shutdown", lambda: seen.setdefault("ray_shutdown", True))
    monkeypatch.setattr(serve, "start", lambda **kw: seen.setdefault("start", kw))
    monkeypatch.setattr(serve, "run", lambda app, **kw: seen.setdefault("run", kw))
    monkeypatch.setattr(serve, "shutdown", lambda: seen.setdefault("serve_shutdown", True))
    monkeypatch.setattr(service, "build_app", lambda *a: seen.setdefault("app", a))
    monkeypatch.setattr(cli, "_wait_for_ctrl_c", lambda: (_ for _ in ()).throw(KeyboardInterrupt))
    code = cli.main(["serve", "--model", str(tmp_path), "--port", "9123", "--allow-paths", str(tmp_path),
                     "--max-batch-size", "4", "--batch-wait-ms", "20", "--max-request-mb", "1", "--max-images", "3",
                     "--replicas", "2", "--gpus-per-replica", "0.5", "--quantization", "4bit", "--device", "cpu"])
    assert code == 0 and seen["ray_shutdown"] and seen["serve_shutdown"]
    assert seen["start"] == {"http_options": {"host": "127.0.0.1", "port": 9123}}
    options, settings, replicas, gpus = seen["app"]
    assert (options["model"], options["quantization"], options["device"]) == (str(tmp_path), "4bit", "cpu")
    assert settings == ServiceSettings(token="from-env", max_request_bytes=2**20, max_images=3,
                                       allow_paths=str(tmp_path), max_batch_size=4, batch_wait_s=0.02)
    assert (replicas, gpus) == (2, 0.5) and seen["run"]["route_prefix"] == "/"


# -- a real service on loopback ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ray_service(tiny_judge_model, tmp_path_factory):
    """Ray Serve on 127.0.0.1 with the tiny judge, a token, small limits and a folder clients may name."""
    import ray
    from ray import serve

    from comfyui_server import free_port
    from qinsight_sdk.service import build_app

    allowed = tmp_path_factory.mktemp("allowed")
    brightness_image(0.8, 3).save(allowed / "inside.png")
    brightness_image(0.2, 4).save(allowed.parent / "outside.png")
    (allowed / "link.png").symlink_to(allowed.parent / "outside.png")
    port = free_port()
    settings = ServiceSettings(token=TOKEN, max_request_bytes=2 * 2**20, max_images=16, allow_paths=str(allowed),
                               max_batch_size=8, batch_wait_s=0.3)
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(build_app({"model": str(tiny_judge_model), "device": "cpu", "local_files_only": True}, settings,
                            cpus_per_replica=0.5), route_prefix="/", name="qinsight-test")
        yield f"http://127.0.0.1:{port}", allowed
    finally:
        serve.shutdown()
        ray.shutdown()


def post(url: str, task: str, body, token: str | None = TOKEN, content_type: str = "application/json"):
    """(status, answer) of one request, never raising for a 4xx/5xx."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"Content-Type": content_type, **({"Authorization": f"Bearer {token}"} if token else {})}
    request = urllib.request.Request(f"{url}/{task}", data=data, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_concurrent_clients_get_the_sdks_answers_in_shared_batches(ray_service, tiny_judge_model):
    url, _ = ray_service
    images = [brightness_image(level / 11, 80 + level) for level in range(12)]
    local = QualityJudge.from_pretrained(tiny_judge_model, device="cpu")
    remote = RemoteJudge(url, token=TOKEN)
    answers = [None] * len(images)

    def ask(index):
        answers[index] = remote.score(images[index], mode="fast").score

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(images))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    expected = [r.score for r in local.score(images, mode="fast")]
    assert answers == pytest.approx(expected, abs=1e-4)
    sizes = json.loads(urllib.request.urlopen(urllib.request.Request(
        f"{url}/stats", headers={"Authorization": f"Bearer {TOKEN}"}), timeout=30).read())["batch_sizes"]
    formed = {int(size): count for size, count in sizes.items()}
    assert max(formed) > 1 and sum(size * n for size, n in formed.items()) >= len(images), sizes   # shared batches
    print("batch sizes the server formed:", sizes)
    # every other method, against the SDK's own answers
    pair = remote.compare(images[1], images[10], both_orders=True)
    assert pair == local.compare(images[1], images[10], both_orders=True)
    assert remote.degradation(images[:2]) == local.degradation(images[:2])
    ranked, expected_ranking = (judge.rank(images[:5], strategy="hybrid", top_k=3) for judge in (remote, local))
    assert ranked.order == expected_ranking.order and ranked.decided_by == expected_ranking.decided_by
    assert ranked.scores == pytest.approx(expected_ranking.scores, abs=1e-4)
    assert remote.reward(images[:3]).tolist() == pytest.approx(local.reward(images[:3]).tolist(), abs=1e-4)
    reasoned = remote.score(images[:2])
    assert [(r.score, r.raw) for r in reasoned] == [(r.score, r.raw) for r in local.score(images[:2])]


def test_the_service_refuses_without_breaking(ray_service):
    url, _ = ray_service
    image = {"images": [b64(png())], "mode": "fast"}
    assert post(url, "score", image, token=None)[0] == 401
    assert post(url, "score", image, token="wrong")[0] == 401
    with pytest.raises(RemoteError, match="needs its bearer token") as caught:
        RemoteJudge(url).score(png(), mode="fast")
    assert caught.value.status == 401
    status, answer = post(url, "score", {"images": [{"base64": "A" * (3 * 2**20)}]})
    assert status == 413 and "most" in answer["error"]
    assert post(url, "score", {"images": [b64(png())] * 17})[0] == 413
    assert post(url, "score", b"{not json")[0] == 400
    assert post(url, "nope", image)[0] == 404
    assert post(url, "rank", {"images": [b64(png())], "top_k": 0})[0] == 400
    status, answer = post(url, "score", {"images": [b64(b"not an image"), b64(png())], "mode": "fast"})
    assert status == 200 and "not a recognised image file" in answer["results"][0]["error"]
    assert answer["results"][1]["score"] is not None   # the bad image took nothing else down
    assert post(url, "score", image)[0] == 200          # and the service still answers


def test_paths_inside_the_allowed_folder_only(ray_service):
    url, allowed = ray_service
    status, answer = post(url, "score", {"images": [{"path": "inside.png"}], "mode": "fast"})
    assert status == 200 and answer["results"][0]["error"] is None
    for path in ("../outside.png", "link.png", str(allowed.parent / "outside.png")):
        status, answer = post(url, "score", {"images": [{"path": path}], "mode": "fast"})
        assert status == 403, (path, answer)


def test_remote_judge_where_torch_cannot_be_imported(ray_service, tmp_path):
    url, allowed = ray_service
    script = tmp_path / "trainer.py"
    script.write_text(
        "import json, sys\n"
        "class Blocked:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('torch', 'transformers', 'PIL', 'numpy'):\n"
        "            raise ImportError(name + ' is not installed here')\n"
        "sys.meta_path.insert(0, Blocked())\n"
        "from qinsight_sdk.client import RemoteJudge\n"
        f"judge = RemoteJudge({url!r}, token={TOKEN!r})\n"
        f"result = judge.score({str(allowed / 'inside.png')!r}, mode='fast')\n"
        f"rewards = judge.reward([{str(allowed / 'inside.png')!r}])\n"
        "print(json.dumps({'score': result.score, 'type': type(result).__name__, 'rewards': rewards,\n"
        "                  'loaded': [m for m in ('torch', 'transformers', 'PIL', 'numpy') if m in sys.modules]}))\n")
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer["type"] == "ScoreResult" and 1 <= answer["score"] <= 5 and answer["loaded"] == []
    assert isinstance(answer["rewards"], list) and answer["rewards"][0] == pytest.approx((answer["score"] - 1) / 4,
                                                                                         abs=1e-6)


def test_the_client_sends_what_the_judge_would_have_read(tmp_path):
    import torch

    from qinsight_sdk.client import _image_bytes
    from qinsight_sdk.images import load_image

    chw = torch.rand(3, 28, 42, generator=torch.Generator().manual_seed(0))
    pil = brightness_image(0.4, 7)
    path = tmp_path / "a.png"
    pil.save(path)
    for given in (chw, chw.permute(1, 2, 0), pil, np.asarray(pil), str(path), path.read_bytes()):
        sent = load_image(_image_bytes(given))   # what the service's judge reads
        assert np.array_equal(np.asarray(sent), np.asarray(load_image(given))), type(given)
    with pytest.raises(TypeError, match="give a path, bytes, a PIL image, an array or a tensor, not dict"):
        _image_bytes({})


class FakeRequest:
    """What respond() reads of a Starlette request."""

    def __init__(self, path, method="POST", body=b"", headers=None, chunk=4, content_type="application/json"):
        self.url = type("URL", (), {"path": path})()
        self.method, self.body, self.chunk = method, body, chunk
        self.headers = {**({"content-type": content_type} if content_type else {}), **(headers or {})}

    async def stream(self):
        self.read = 0
        for start in range(0, len(self.body), self.chunk):
            self.read += len(self.body[start:start + self.chunk])
            yield self.body[start:start + self.chunk]


def test_each_http_outcome_of_a_request(caplog):
    """The HTTP layer without a server: statuses, and a judge that fails giving a 500 that says so."""
    import asyncio

    pytest.importorskip("starlette", reason="the [ray] extra is not installed")
    from qinsight_sdk.service import respond

    class Service:
        batch_sizes = Counter({2: 5, 1: 1})

        def __init__(self, fail=False):
            self.fail = fail

        async def judged(self, call):
            if self.fail:
                raise RuntimeError("out of memory")
            if call.task == "rank":
                return {"error": "top_k must be at least 1, got 0", "status": 400}
            return {"results": [len(image) for image in call.images]}

    def answer(request, service=Service(), settings=ServiceSettings(token=TOKEN, max_request_bytes=64)):
        response = asyncio.run(respond(service, request, settings))
        return response.status_code, json.loads(response.body)

    auth = {"authorization": f"Bearer {TOKEN}"}
    good = json.dumps({"images": [b64(b"abc")]}).encode()
    assert answer(FakeRequest("/score", body=good, headers=auth)) == (200, {"results": [3]})
    for path in ("/judge/v1/score", "/score/", "score", "//score"):   # routed exactly
        assert answer(FakeRequest(path, body=good, headers=auth))[0] == 404, path
    assert answer(FakeRequest("/score", body=good))[0] == 401
    assert answer(FakeRequest("/health", "GET", headers=auth)) == (200, {"status": "ok"})
    assert answer(FakeRequest("/health", "GET")) == (200, {"status": "ok"})   # a load balancer's check, no token
    assert answer(FakeRequest("/stats", "GET"))[0] == 401                     # but nothing else
    assert answer(FakeRequest("/health", "POST"))[0] == 401
    assert answer(FakeRequest("/stats", "GET", headers=auth)) == (200, {"batch_sizes": {"1": 1, "2": 5}})
    assert answer(FakeRequest("/score", "GET", headers=auth)) == (405, {"error": "GET /score: judging endpoints "
                                                                                "take POST"})
    form, kind = multipart([("images", "a.png", b"AB")])
    assert answer(FakeRequest("/score", body=form, headers={**auth, "content-type": kind}), Service(),
                  ServiceSettings(token=TOKEN)) == (200, {"results": [2]})
    assert answer(FakeRequest("/score", body=good.ljust(64), headers=auth)) == (200, {"results": [3]})   # at the limit
    assert answer(FakeRequest("/score", body=good, headers=auth, content_type=None)) == (200, {"results": [3]})
    status, said = answer(FakeRequest("/score", body=good.ljust(65), headers=auth))   # no Content-Length: read to it
    assert (status, said["error"]) == (413, "the request is over 64 bytes, the most this service takes")
    assert answer(FakeRequest("/score", body=good, headers={**auth, "content-length": "65"}))[0] == 413
    assert answer(FakeRequest("/score", body=b"{", headers=auth))[0] == 400
    rank = json.dumps({"images": [b64(b"a")]}).encode()
    assert answer(FakeRequest("/rank", body=rank, headers=auth)) == (400, {"error": "top_k must be at least 1, got 0"})
    status, said = answer(FakeRequest("/score", body=good, headers=auth), Service(fail=True))
    assert (status, said) == (500, {"error": "the judge failed on this request (RuntimeError: out of memory)"})
    assert "judging a /score request failed" in [r.getMessage() for r in caplog.records]
