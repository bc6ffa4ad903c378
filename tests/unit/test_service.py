"""The judge as a service: request checking (quick), then a real Ray Serve service on loopback with the
tiny judge, and its standard-library client in a process where torch cannot be imported."""

import asyncio
import contextlib
import io
import json
import os
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from service_doubles import FakeRequest, ScriptedServer, b64, parse_call, png, refused

from qinsight_sdk import QualityJudge
from qinsight_sdk.client import RemoteError, RemoteJudge, RemoteReward
from qinsight_sdk.service import Call, RequestError, ServiceSettings, check_size, check_token, judge_calls, read_call
from qinsight_sdk.testing import ScriptedBackend, brightness_image

TOKEN = "s3cret-token"


# -- checking requests, without a server -------------------------------------------------------------------


def test_a_good_json_request_becomes_a_call():
    call = parse_call(
        "score", "application/json", json.dumps({"images": [b64(b"abc")], "mode": "fast"}).encode(), ServiceSettings()
    )
    assert call == Call("score", [b"abc"], {"mode": "fast"})
    pair = parse_call(
        "compare",
        "application/json",
        json.dumps({"image_a": b64(b"a"), "image_b": b64(b"b"), "reference": b64(b"r"), "both_orders": True}).encode(),
        ServiceSettings(),
    )
    assert pair == Call("compare", [b"a", b"b", b"r"], {"both_orders": True})
    ranked = parse_call(
        "rank",
        "",
        json.dumps({"images": [b64(b"a")], "strategy": "hybrid", "top_k": 2, "pool": None}).encode(),
        ServiceSettings(),
    )
    assert ranked.options == {"strategy": "hybrid", "top_k": 2}  # a null option is the default


def multipart(parts, boundary="XyZ"):
    """A multipart/form-data body of (name, filename or None, data) parts, and its content type."""

    def header(name, filename):
        given = f'; name="{name}"' if name is not None else ""
        return f"Content-Disposition: form-data{given}{f'; filename={chr(34)}{filename}{chr(34)}' if filename else ''}"

    body = (
        b"".join(
            f"--{boundary}\r\n{header(name, filename)}\r\n\r\n".encode() + data + b"\r\n"
            for name, filename, data in parts
        )
        + f"--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"


def test_multipart_files_and_fields():
    body, kind = multipart([("images", "a.png", b"AAA"), ("images", "b.png", b""), ("mode", None, b"fast")])
    assert parse_call("score", kind, body, ServiceSettings()) == Call("score", [b"AAA", b""], {"mode": "fast"})
    for text, value in ((b"true", True), (b"1", True), (b"false", False), (b"0", False)):
        body, kind = multipart([("image_a", "a", b"A"), ("image_b", "b", b"B"), ("both_orders", None, text)])
        assert parse_call("compare", kind, body, ServiceSettings()) == Call(
            "compare", [b"A", b"B"], {"both_orders": value}
        )
    body, kind = multipart([("images", "a", b"A"), ("top_k", None, b"-3"), ("strategy", None, b"\xff\xfe")])
    assert parse_call("rank", kind, body, ServiceSettings()).options == {"top_k": -3, "strategy": "\xff\xfe"}
    body, kind = multipart([("images", "a", b"A"), (None, None, b"x")])
    refused(
        400,
        "the multipart body could not be read (The Content-Disposition header field ...",
        "score",
        body,
        content_type=kind,
    )
    refused(
        400,
        "the multipart body could not be read (Missing boundary in multipart.)",
        "score",
        b"garbage",
        content_type="multipart/form-data",
    )


def test_a_group_nobody_waits_for_stops_at_its_next_result():
    calls_seen = []
    backend = ScriptedBackend(lambda conversation, images: '<answer>{"rating": 3.0}</answer>')
    judge = QualityJudge(backend, batch_size=1)
    images = [png(level / 6, level) for level in range(6)]
    waiting, gone = Call("score", images[:3], {"mode": "fast"}), Call("score", images[3:], {"mode": "fast"})

    def leave_after_two(index, result):  # the client of both calls goes away after two images
        calls_seen.append(index)
        if len(calls_seen) == 2:
            waiting.cancelled = gone.cancelled = True

    original = judge.score
    judge.score = lambda images, on_result, **kw: original(
        images, on_result=lambda i, r: (leave_after_two(i, r), on_result(i, r)), **kw
    )
    assert judge_calls(judge, [waiting, gone]) == [{"error": "cancelled", "http_status": 499}] * 2
    assert backend.calls == [1, 1]  # two images judged of six: stopped at the next result, not at the end
    backend.calls.clear()
    one_left = [
        Call("score", images[:2], {"mode": "fast"}, cancelled=True),
        Call("score", images[2:3], {"mode": "fast"}),
    ]
    answers = judge_calls(judge, one_left)  # one client still waits: the group is judged for it
    assert backend.calls == [1, 1, 1] and answers[1]["results"][0]["score"] == pytest.approx(3.0)
    backend.calls.clear()
    assert judge_calls(judge, [Call("rank", images, {}, cancelled=True)])[0]["http_status"] == 499
    assert backend.calls == []  # cancelled before its batch ran: not started at all


@pytest.mark.parametrize(
    "task, options, full",
    [
        ("rank", {"strategy": "hybrid"}, 6 + 12),
        ("reward", {}, 6),
        ("compute", {}, 6),
        ("compare", {"both_orders": True}, 6),
    ],
)
def test_every_kind_of_call_stops_when_nobody_waits(task, options, full, caplog):
    """A ranking, rewards and comparisons stop at their next result once their clients went away."""
    import logging

    images = [png(level / 6, level) for level in range(6)]
    calls = [Call(task, images[:2], options) for _ in range(3)] if task == "compare" else [Call(task, images, options)]
    backend = ScriptedBackend(
        lambda conversation, shown: (
            "<answer>Image A</answer>" if len(shown) == 2 else '<answer>{"rating": 3.0}</answer>'
        )
    )
    judge = QualityJudge(backend, batch_size=1)
    judge_calls(judge, calls)
    assert sum(backend.calls) == full  # every image, match or pair, when someone waits
    backend.calls.clear()

    def leave(conversation, shown):  # the clients go away while the first answer is being made
        for call in calls:
            call.cancelled = True
        return "<answer>Image A</answer>" if len(shown) == 2 else '<answer>{"rating": 3.0}</answer>'

    for call in calls:
        call.cancelled = False
    backend.answer = leave
    with caplog.at_level(logging.INFO, logger="qinsight"):
        answers = judge_calls(judge, calls)
    assert answers == [{"error": "cancelled", "http_status": 499}] * len(calls)
    assert sum(backend.calls) < full / 2, backend.calls
    assert f"stopped judging {len(calls)} /{task} request(s): nobody waits for them" in caplog.messages


def test_images_too_large_are_refused_from_their_headers_before_decoding(tmp_path):
    bomb = io.BytesIO()
    Image.new("1", (13000, 13000)).save(bomb, format="PNG")  # 169 MP in a few KB: +1.5 GB once decoded
    assert len(bomb.getvalue()) < 64 * 1024
    refused(
        413,
        "images[1] has 169,000,000 pixels; this service takes at most 50,000,000 per image (downscale it first)",
        "score",
        {"images": [b64(png()), b64(bomb.getvalue())]},
    )
    huge = io.BytesIO()
    Image.new("1", (20000, 20000)).save(huge, format="PNG")  # past Pillow's own bomb limit
    refused(
        413,
        "images[0] is far over 50,000,000 pixels (Pillow refuses it as a possible decompression bomb)",
        "score",
        {"images": [b64(huge.getvalue())]},
    )
    small = ServiceSettings(max_image_pixels=56 * 56, max_request_pixels=2 * 56 * 56, allow_paths=str(tmp_path))
    image = png()  # 56 x 56
    tiny_file = io.BytesIO()
    Image.new("RGB", (8, 8)).save(tiny_file, format="PNG")
    tiny = tiny_file.getvalue()
    assert parse_call("score", "application/json", json.dumps({"images": [b64(image)] * 2}).encode(), small).images
    refused(
        413,
        "the images have 9,408 pixels together; this service takes at most 6,272 in one request",
        "score",
        {"images": [b64(image)] * 3},
        small,
    )
    refused(
        413,
        "reference has 3,136 pixels; this service takes at most 3,135 per image (downscale it first)",
        "compare",
        {"image_a": b64(tiny), "image_b": b64(tiny), "reference": b64(image)},
        ServiceSettings(max_image_pixels=56 * 56 - 1),
    )
    brightness_image(0.5, 0).resize((57, 56)).save(tmp_path / "wide.png")
    refused(413, "images[0] has 3,192 pixels; ...", "score", {"images": [{"path": "wide.png"}]}, small)
    unreadable = parse_call(
        "score",
        "application/json",
        json.dumps({"images": [b64(image), b64(b"not an image"), b64(image)]}).encode(),
        small,
    )
    assert unreadable.images[1] == b"not an image"  # no pixels counted: the judge says what is wrong with it


def test_the_size_the_headers_give():
    assert check_size({"content-length": "64"}, ServiceSettings()) == 64
    assert check_size({}, ServiceSettings()) == check_size({"content-length": "-5"}, ServiceSettings()) == 0


def test_a_rankings_pool_is_capped():
    one = [b64(png())]
    assert parse_call(
        "rank", "application/json", json.dumps({"images": one, "pool": 8}).encode(), ServiceSettings()
    ).options == {"pool": 8}
    refused(413, "pool 9: this service compares at most 8 finalists pairwise", "rank", {"images": one, "pool": 9})


@pytest.mark.parametrize("filename", ["x.png", None], ids=["files", "fields"])
def test_a_body_of_many_tiny_parts_is_refused_at_the_first_part_over_the_limit(filename):
    # 50,000 parts took 13 s of the replica's event loop to parse whole before the image count was checked
    body, kind = multipart([("images" if filename else f"f{i}", filename, b"x") for i in range(50_000)])
    request = FakeRequest("/score", body=body, chunk=4096, content_type=kind)
    with pytest.raises(RequestError) as caught:
        asyncio.run(read_call("score", request, ServiceSettings()))
    expected = (
        (413, "more than 64 files in one request; this service takes at most 64 images")
        if filename
        else (400, "more than 16 text fields: a request takes an endpoint's options, a few at most")
    )
    assert (caught.value.status, caught.value.message) == expected
    assert request.read < 2 * 4096 + len(body) * 70 // 50_000  # stopped at part 65 (or 17), not at the end


def test_malformed_requests_are_4xx_with_what_is_wrong():
    one = [b64(b"a")]
    refused(404, "no endpoint /nope: use one of /score, /degradation, /compare, /rank, /reward, /compute", "nope", {})
    refused(400, "the body is not JSON (...", "score", b"{nope")
    refused(400, "the body must be a JSON object", "score", [1, 2])
    refused(400, "/score needs images: a non-empty list", "score", b"")  # an empty body is an empty object
    refused(
        400,
        "/score takes application/json or multipart/form-data, not text/plain (nothing here unpickles)",
        "score",
        {},
        content_type="text/plain",
    )
    refused(400, "/score needs images: a non-empty list", "score", {"images": []})
    refused(400, "/reward needs images: a non-empty list", "reward", {"images": "x.png"})
    refused(400, "images[1]: not valid base64", "score", {"images": [b64(b"a"), {"base64": "@@@"}]})
    refused(
        400,
        'images[0]: an image is {"base64": ...} (or {"path": ...} where the server allows paths)',
        "score",
        {"images": [42]},
    )
    refused(400, "/compare needs image_b", "compare", {"image_a": b64(b"a")})
    refused(400, "/compare needs image_a and image_b", "compare", {"reference": b64(b"a")})
    refused(
        400, "/score takes no option colour, size (it takes: mode)", "score", {"images": one, "size": 1, "colour": 1}
    )
    refused(400, "/reward takes no option mode (it takes: none)", "reward", {"images": one, "mode": "fast"})
    refused(400, "/rank takes no option x (it takes: strategy, top_k, pool)", "rank", {"images": one, "x": 1})
    refused(400, "option top_k must be a int, got 'two'", "rank", {"images": one, "top_k": "two"})
    refused(400, "option top_k must be a int, got True", "rank", {"images": one, "top_k": True})
    refused(
        400,
        "option both_orders must be a bool, got 'maybe'",
        "compare",
        {"image_a": one[0], "image_b": one[0], "both_orders": "maybe"},
    )


def test_size_limits():
    small = ServiceSettings(max_request_bytes=100, max_images=2)
    refused(413, "the request is over 100 bytes, the most this service takes", "score", b" " * 101, small)
    at_limit = b'{"images": []}'.ljust(100)
    refused(400, "/score needs images: a non-empty list", "score", at_limit, small)  # at the limit: read
    refused(
        413,
        "3 images in one request; this service takes at most 2",
        "score",
        {"images": [b64(b"a")] * 3},
        ServiceSettings(max_images=2),
    )
    assert len(parse_call("score", "", json.dumps({"images": [b64(b"a")] * 2}).encode(), small).images) == 2
    with pytest.raises(RequestError) as caught:
        check_size({"content-length": "5000"}, small)
    assert (caught.value.status, caught.value.message) == (
        413,
        "the request is 5000 bytes; this service takes at most 100",
    )
    check_size({"content-length": "100"}, small)
    check_size({}, ServiceSettings(max_request_bytes=0))  # no length said: the reading limit applies
    with pytest.raises(RequestError) as caught:
        check_size({"content-length": "lots"}, small)
    assert (caught.value.status, caught.value.message) == (400, "Content-Length is not a number")


def test_the_token_when_one_is_set():
    settings = ServiceSettings(token=TOKEN)
    for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": TOKEN}):
        with pytest.raises(RequestError) as caught:
            check_token(headers, settings)
        assert (caught.value.status, caught.value.message) == (
            401,
            "this service needs its bearer token: Authorization: Bearer <token>",
        )
    check_token({"authorization": f"Bearer {TOKEN}"}, settings)
    check_token({}, ServiceSettings())  # no token set: open


@pytest.mark.parametrize("token", ["", " ", f"{TOKEN} ", f" {TOKEN}"])
def test_a_token_no_client_could_send_is_refused_at_start(token):
    # QINSIGHT_TOKEN="" (or a padded one, whose spaces HTTP strips) made every request a 401, without a word
    from qinsight_sdk.errors import UsageError

    said = "empty" if not token.strip() else "padded with spaces"
    with pytest.raises(UsageError, match=f"the service's token is {said}: give a token"):
        ServiceSettings(token=token)
    with pytest.raises(UsageError, match=f"RemoteJudge's token is {said}: give a token"):
        RemoteJudge("http://127.0.0.1:1", token=token)


def test_an_empty_token_variable_stops_serve_before_ray_starts(monkeypatch, capsys):
    from qinsight_sdk import cli

    monkeypatch.setenv("QINSIGHT_TOKEN", "")
    monkeypatch.setattr(cli, "_judge_config", lambda *args: pytest.fail("serve went on with an empty token"))
    assert cli.main(["serve", "--model", "unused-model-folder"]) == 2
    assert "the service's token is empty" in capsys.readouterr().err


def test_hostile_shapes_are_400s_not_500s(tmp_path):
    refused(400, "the body's JSON is nested too deeply", "score", b"[" * 100_000)
    refused(
        400,
        "images[0]: a path may not contain a NUL byte",
        "score",
        {"images": [{"path": "a\x00.png"}]},
        ServiceSettings(allow_paths=str(tmp_path)),
    )


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
    refused(
        403,
        "images[0]: this service reads no paths (send the image's bytes)",
        "score",
        {"images": [{"path": "sub/a.png"}]},
    )
    refused(
        403,
        "images[0]: a path may not contain ..",
        "score",
        {"images": [{"path": "sub/../../elsewhere/secret.png"}]},
        settings,
    )
    refused(
        403,
        "images[0]: link.png is outside the folder this service may read",
        "score",
        {"images": [{"path": "link.png"}]},
        settings,
    )
    refused(
        403,
        f"image_b: {outside / 'secret.png'} is outside the folder this service may read",
        "compare",
        {"image_a": {"path": "sub/a.png"}, "image_b": {"path": str(outside / "secret.png")}},
        settings,
    )


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
    calls = [
        Call("score", as_png[:2], {"mode": "fast"}),
        Call("reward", [as_png[2]]),
        Call("score", [as_png[2]], {"mode": "fast"}),
        Call("score", [b"not an image", as_png[1]], {"mode": "reason"}),
        Call("rank", as_png, {"strategy": "score"}),
        Call("rank", as_png, {"top_k": 0}),
        Call("compare", as_png[:2], {}),
        Call("degradation", [as_png[0]]),
        Call("compare", as_png[:2], {"both_orders": True}),
        Call("score", [as_png[0]], {"mode": "fast"}),
    ]
    answers = judge_calls(judge, calls)
    assert [r["score"] for r in answers[0]["results"]] == pytest.approx([1.0, 5.0], abs=0.06)
    assert answers[1]["rewards"] == pytest.approx([0.5], abs=0.02)
    assert answers[2]["results"][0]["score"] == pytest.approx(3.0, abs=0.06)
    assert answers[9]["results"][0]["score"] == pytest.approx(1.0, abs=0.06)  # the third call of its batch
    assert all(r["reasoning"] is None for a in (0, 2, 9) for r in answers[a]["results"])  # fast: no text
    reasoned = answers[3]["results"]
    assert "not a recognised image file" in reasoned[0]["error"] and reasoned[1]["reasoning"] == "looked"
    assert answers[4]["ranking"]["order"] == [1, 2, 0]
    assert answers[5] == {"error": "top_k must be at least 1, got 0", "http_status": 400}
    # both orders asked only where asked: this judge always says A, so swapped it contradicts itself
    assert answers[6]["result"]["consistent"] is None and answers[8]["result"]["consistent"] is False
    assert answers[6]["result"]["winner"] == "A" and answers[7]["results"][0]["distortion"] == "noise"
    backend.calls.clear()
    judge_calls(judge, [Call("score", as_png[:2], {"mode": "fast"}), Call("score", [as_png[2]], {"mode": "fast"})])
    assert backend.calls == [3]  # two requests, one batch
    twins = judge_calls(judge, [Call("rank", as_png, {}), Call("rank", as_png[:2], {})])  # each its own ranking
    assert [a["ranking"]["order"] for a in twins] == [[1, 2, 0], [1, 0]]
    # only calls with the same options share a judge call: an absent mode is not an empty one
    alone, refused_mode = judge_calls(judge, [Call("score", [as_png[1]], {}), Call("score", [as_png[1]], {"mode": ""})])
    assert alone["results"][0]["score"] == pytest.approx(5.0, abs=0.06) and refused_mode["http_status"] == 400


def test_the_serve_command_wires_its_options_into_ray_serve(monkeypatch, tmp_path):
    ray = pytest.importorskip("ray", reason="the [ray] extra is not installed")
    import signal

    from ray import serve

    from qinsight_sdk import cli, service

    seen = {}
    drains = iter([2, 1, 0])

    class Gateway:  # what cli reaches through serve.get_app_handle: drain() counts down the requests in flight
        class drain:
            @staticmethod
            def remote():
                return type("Response", (), {"result": lambda self, timeout_s: next(drains)})()

    monkeypatch.setenv("QINSIGHT_TOKEN", "from-env")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", raising=False)
    monkeypatch.setattr(signal, "signal", lambda signum, handler: seen.setdefault("signal", (signum, handler)))
    monkeypatch.setattr(ray, "init", lambda **kw: seen.setdefault("init", kw))
    monkeypatch.setattr(ray, "shutdown", lambda: seen.setdefault("ray_shutdown", True))
    monkeypatch.setattr(serve, "start", lambda **kw: seen.setdefault("start", kw))
    monkeypatch.setattr(serve, "run", lambda app, **kw: seen.setdefault("run", kw))
    monkeypatch.setattr(serve, "get_app_handle", lambda name: seen.setdefault("handle", name) and Gateway)
    monkeypatch.setattr(
        serve,
        "shutdown",
        lambda: seen.setdefault("serve_shutdown", "drained" if next(drains, "done") == "done" else "early"),
    )
    monkeypatch.setattr(service, "build_app", lambda *a: seen.setdefault("app", a))
    monkeypatch.setattr(cli, "_wait_for_ctrl_c", lambda: seen["signal"][1](signal.SIGTERM, None))
    code = cli.main(
        [
            "serve",
            "--model",
            str(tmp_path),
            "--port",
            "9123",
            "--allow-paths",
            str(tmp_path),
            "--max-batch-size",
            "4",
            "--batch-wait-ms",
            "20",
            "--max-request-mb",
            "1",
            "--max-images",
            "3",
            "--replicas",
            "2",
            "--gpus-per-replica",
            "0.5",
            "--quantization",
            "4bit",
            "--device",
            "cpu",
            "--max-image-mp",
            "2",
            "--max-request-mp",
            "5",
            "--max-pool",
            "3",
            "--body-timeout-s",
            "4",
            "--request-timeout-s",
            "6",
            "--max-inflight-mb",
            "7",
            "--keep-alive-s",
            "8",
            "--drain-s",
            "9",
        ]
    )
    # SIGTERM stops it as Ctrl-C does: drained (until no request is in flight), then Serve and Ray shut down
    assert code == 0 and seen["ray_shutdown"] and seen["serve_shutdown"] == "drained"
    assert seen["signal"][0] == signal.SIGTERM and seen["handle"] == "qinsight"
    assert os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] == "0"  # the Ray it starts listens on loopback only
    assert seen["start"] == {"http_options": {"host": "127.0.0.1", "port": 9123, "keep_alive_timeout_s": 8.0}}
    options, settings, replicas, gpus = seen["app"]
    assert (options.model, options.quantization, options.device) == (str(tmp_path), "4bit", "cpu")  # a JudgeConfig
    assert settings == ServiceSettings(
        token="from-env",
        max_request_bytes=2**20,
        max_images=3,
        allow_paths=str(tmp_path),
        max_batch_size=4,
        batch_wait_s=0.02,
        max_image_pixels=2_000_000,
        max_request_pixels=5_000_000,
        max_pool=3,
        body_timeout_s=4.0,
        request_timeout_s=6.0,
        max_inflight_bytes=7 * 2**20,
        keep_alive_s=8.0,
        drain_s=9.0,
    )
    assert (replicas, gpus) == (2, 0.5) and seen["run"]["route_prefix"] == "/"


def test_a_drain_that_cannot_ask_the_gateway_stops_anyway(caplog):
    from qinsight_sdk import cli

    class Gone:
        class drain:
            @staticmethod
            def remote():
                raise RuntimeError("the gateway's actor died")

    cli._drain(Gone, 5.0)  # returns: the shutdown that follows must not be skipped
    assert "serve: could not drain the requests in flight (the gateway's actor died); stopping" in caplog.text


def test_serve_joins_a_given_cluster_as_it_is(monkeypatch, tmp_path):
    """Only a Ray it starts itself is put on loopback: a cluster it joins keeps its own addresses."""
    ray = pytest.importorskip("ray", reason="the [ray] extra is not installed")
    from qinsight_sdk import cli

    monkeypatch.delenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", raising=False)
    monkeypatch.setattr(ray, "init", lambda **kw: (_ for _ in ()).throw(RuntimeError(f"init {kw['address']}")))
    with pytest.raises(RuntimeError, match="init ray://head:10001"):
        cli.main(["serve", "--model", str(tmp_path), "--ray-address", "ray://head:10001", "--device", "cpu"])
    assert "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER" not in os.environ


# -- a real service on loopback ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ray_service(tiny_judge_model, tmp_path_factory):
    """Ray Serve on 127.0.0.1 with the tiny judge, a token, small limits and a folder clients may name."""
    import ray
    from comfyui_server import free_port
    from ray import serve

    from qinsight_sdk.service import build_app

    allowed = tmp_path_factory.mktemp("allowed")
    brightness_image(0.8, 3).save(allowed / "inside.png")
    brightness_image(0.2, 4).save(allowed.parent / "outside.png")
    (allowed / "link.png").symlink_to(allowed.parent / "outside.png")
    port = free_port()
    settings = ServiceSettings(
        token=TOKEN,
        max_request_bytes=2 * 2**20,
        max_images=16,
        allow_paths=str(allowed),
        max_batch_size=8,
        batch_wait_s=0.3,
        body_timeout_s=3.0,
        keep_alive_s=2.0,
    )
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port, "keep_alive_timeout_s": settings.keep_alive_s})
        serve.run(
            build_app(
                {"model": str(tiny_judge_model), "device": "cpu", "local_files_only": True},
                settings,
                cpus_per_replica=0.5,
            ),
            route_prefix="/",
            name="qinsight-test",
        )
        yield f"http://127.0.0.1:{port}", allowed
    finally:
        serve.shutdown()
        ray.shutdown()


def post(
    url: str, task: str, body, token: str | None = TOKEN, content_type: str = "application/json", timeout: float = 120
):
    """(status, answer) of one request, never raising for a 4xx/5xx."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"Content-Type": content_type, **({"Authorization": f"Bearer {token}"} if token else {})}
    request = urllib.request.Request(f"{url}/{task}", data=data, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
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
    sizes = json.loads(
        urllib.request.urlopen(
            urllib.request.Request(f"{url}/stats", headers={"Authorization": f"Bearer {TOKEN}"}), timeout=30
        ).read()
    )["batch_sizes"]
    formed = {int(size): count for size, count in sizes.items()}
    assert max(formed) > 1 and sum(size * n for size, n in formed.items()) >= len(images), sizes  # shared batches
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
    assert answer["results"][1]["score"] is not None  # the bad image took nothing else down
    assert post(url, "score", image)[0] == 200  # and the service still answers


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
        "                  'loaded': [m for m in ('torch', 'transformers', 'PIL', 'numpy') if m in sys.modules]}))\n"
    )
    done = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer["type"] == "ScoreResult" and 1 <= answer["score"] <= 5 and answer["loaded"] == []
    assert isinstance(answer["rewards"], list) and answer["rewards"][0] == pytest.approx(
        (answer["score"] - 1) / 4, abs=1e-6
    )


def http_reply(connection) -> tuple[int, dict]:
    """The status and JSON body of one HTTP/1.1 reply read from a socket."""
    reply = b""
    while b"\r\n\r\n" not in reply:
        reply += connection.recv(65536)
    head, body = reply.split(b"\r\n\r\n", 1)
    length = int(
        next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length"))
    )
    while len(body) < length:
        body += connection.recv(65536)
    return int(head.split()[1]), json.loads(body)


def test_slow_uploads_and_idle_connections_stall_no_one(ray_service):
    """40 uploads sending nothing after their headers, and 300 connections sending nothing at all: a
    request beside them is answered, the uploads are cut at the body deadline, and a kept-alive
    connection is closed once idle. (bench/service_load.py measures the latencies, with 5,000 idle.)"""
    import socket

    url, _ = ray_service
    port = int(url.rsplit(":", 1)[1])
    head = (
        f"POST /score HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: "
        "application/json\r\nContent-Length: 100000\r\n\r\n{"
    ).encode()
    slow, idle = [], []
    try:
        for _ in range(40):
            slow.append(socket.create_connection(("127.0.0.1", port), timeout=15))
            slow[-1].sendall(head)
        idle = [socket.create_connection(("127.0.0.1", port), timeout=15) for _ in range(300)]
        status, answer = post(url, "score", {"images": [b64(png())], "mode": "fast"}, timeout=20)
        assert status == 200 and answer["results"][0]["score"] is not None
        for upload in slow:  # each told why, in JSON, at the 3 s body deadline
            assert http_reply(upload) == (408, {"error": "the body did not arrive within 3 s"})
        kept = socket.create_connection(("127.0.0.1", port), timeout=15)
        kept.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert http_reply(kept) == (200, {"status": "ok"})
        assert kept.recv(65536) == b""  # closed by the service once idle for its 2 s keep-alive
        kept.close()
    finally:
        for connection in slow + idle:
            connection.close()


def test_a_killed_replica_is_a_json_503_and_the_client_retries_it_to_success(ray_service):
    import ray

    url, _ = ray_service
    images = []
    for level in range(16):  # 448 px, reasoned: eight such requests keep the replica busy for seconds
        buffer = io.BytesIO()
        brightness_image(level / 15, level).resize((448, 448), Image.NEAREST).save(buffer, format="PNG")
        images.append(b64(buffer.getvalue()))
    answers = []
    asking = [
        threading.Thread(target=lambda: answers.append(post(url, "score", {"images": images}, timeout=60)))
        for _ in range(8)
    ]
    for thread in asking:
        thread.start()
    threading.Event().wait(1.5)  # past the batch wait: on the replica, in its batch or its queue
    replica = next(a for a in ray.util.list_named_actors(all_namespaces=True) if "JudgeReplica" in a["name"])
    ray.kill(ray.get_actor(replica["name"], namespace=replica["namespace"]), no_restart=True)
    for thread in asking:
        thread.join(timeout=60)
    lost = (503, {"error": "the judge replica stopped while judging this request; retry (a request is safe to repeat)"})
    assert lost in answers and all(a == lost or a[0] == 200 for a in answers), [a[0] for a in answers]
    # Serve starts another replica; until it answers, the retries wait for it
    assert RemoteJudge(url, token=TOKEN, retries=8, backoff_s=1.0).score(png(), mode="fast").score is not None


def test_the_client_sends_what_the_judge_would_have_read(tmp_path):
    import torch

    from qinsight_sdk.client import _image_bytes
    from qinsight_sdk.io.images import load_image

    chw = torch.rand(3, 28, 42, generator=torch.Generator().manual_seed(0))
    pil = brightness_image(0.4, 7)
    path = tmp_path / "a.png"
    pil.save(path)
    for given in (chw, chw.permute(1, 2, 0), pil, np.asarray(pil), str(path), path.read_bytes()):
        sent = load_image(_image_bytes(given))  # what the service's judge reads
        assert np.array_equal(np.asarray(sent), np.asarray(load_image(given))), type(given)
    with pytest.raises(TypeError, match="give a path, bytes, a PIL image, an array or a tensor, not dict"):
        _image_bytes({})


class FakeJudges:
    """What the gateway reaches of the judge replicas through a Serve handle: ``answer(call)`` after
    ``delay`` seconds, or ``error`` raised; the cancelled responses counted."""

    def __init__(self, answer=None, error=None, delay=0.0, ready=True):
        self.answer = answer or (lambda call: {"results": [len(image) for image in call.images]})
        self.error, self.delay, self.cancelled, self.calls = error, delay, 0, []
        self.ready = type("Ready", (), {"remote": lambda _: self._response(lambda: True if ready else 1 / 0)})()

    def remote(self, call):
        self.calls.append(call)
        return self._response(lambda: self.answer(call))

    def _response(self, value):
        judges = self

        class Response:
            def __await__(self):
                return self.run().__await__()

            async def run(self):
                await asyncio.sleep(judges.delay)
                if judges.error is not None:
                    raise judges.error
                return value()

            def cancel(self):
                judges.cancelled += 1

        return Response()


def gateway_answer(request, judges=None, settings=None, gateway=None):
    """(status, JSON answer, headers) of one request through a gateway (made here, unless given)."""
    pytest.importorskip("starlette", reason="the [ray] extra is not installed")
    from qinsight_sdk.service import Gateway

    gateway = gateway or Gateway(judges or FakeJudges(), settings or ServiceSettings(token=TOKEN, max_request_bytes=64))
    response = asyncio.run(gateway(request))
    return response.status_code, json.loads(response.body), response.headers


def answer(request, judges=None, settings=None):
    return gateway_answer(request, judges, settings)[:2]


AUTH = {"authorization": f"Bearer {TOKEN}"}
GOOD = json.dumps({"images": [b64(b"abc")]}).encode()


def test_each_http_outcome_of_a_request(caplog):
    """The gateway without a server: statuses, and a judge that fails giving a 500 that says so."""
    assert answer(FakeRequest("/score", body=GOOD, headers=AUTH)) == (200, {"results": [3]})
    for path in ("/judge/v1/score", "/score/", "score", "//score"):  # routed exactly
        assert answer(FakeRequest(path, body=GOOD, headers=AUTH))[0] == 404, path
    assert answer(FakeRequest("/score", body=GOOD))[0] == 401
    assert answer(FakeRequest("/health", "GET", headers=AUTH)) == (200, {"status": "ok"})
    assert answer(FakeRequest("/health", "GET")) == (200, {"status": "ok"})  # a load balancer's check, no token
    assert answer(FakeRequest("/health", "GET"), FakeJudges(ready=False)) == (
        503,
        {"error": "no judge replica answers"},
    )
    assert answer(FakeRequest("/stats", "GET"))[0] == 401  # but nothing else
    assert answer(FakeRequest("/health", "POST"))[0] == 401
    assert answer(FakeRequest("/score", "GET", headers=AUTH)) == (
        405,
        {"error": "GET /score: judging endpoints take POST"},
    )
    form, kind = multipart([("images", "a.png", b"AB")])
    assert answer(
        FakeRequest("/score", body=form, headers={**AUTH, "content-type": kind}),
        FakeJudges(),
        ServiceSettings(token=TOKEN),
    ) == (200, {"results": [2]})
    assert answer(FakeRequest("/score", body=GOOD.ljust(64), headers=AUTH)) == (200, {"results": [3]})  # at the limit
    assert answer(FakeRequest("/score", body=GOOD, headers=AUTH, content_type=None)) == (200, {"results": [3]})
    status, said = answer(FakeRequest("/score", body=GOOD.ljust(65), headers=AUTH))  # no Content-Length: read to it
    assert (status, said["error"]) == (413, "the request is over 64 bytes, the most this service takes")
    assert answer(FakeRequest("/score", body=GOOD, headers={**AUTH, "content-length": "65"}))[0] == 413
    assert answer(FakeRequest("/score", body=b"{", headers=AUTH))[0] == 400
    refusing = FakeJudges(answer=lambda call: {"error": "top_k must be at least 1, got 0", "http_status": 400})
    assert answer(FakeRequest("/rank", body=GOOD, headers=AUTH), refusing) == (
        400,
        {"error": "top_k must be at least 1, got 0"},
    )
    status, said = answer(FakeRequest("/score", body=GOOD, headers=AUTH), FakeJudges(error=RuntimeError("boom")))
    assert (status, said) == (500, {"error": "the judge failed on this request (RuntimeError: boom)"})
    assert "judging a /score request failed" in [r.getMessage() for r in caplog.records]


def test_stats_count_each_batch_once_across_replicas():
    from qinsight_sdk.service import Gateway

    sizes = iter([3, None, None, 1, 3])  # the first answer of each batch says its size, whichever replica
    judges = FakeJudges(answer=lambda call: {"results": [], **({"batch_size": size} if (size := next(sizes)) else {})})
    gateway = Gateway(judges, ServiceSettings(token=TOKEN))
    for _ in range(5):
        assert gateway_answer(FakeRequest("/score", body=GOOD, headers=AUTH), gateway=gateway)[:2] == (
            200,
            {"results": []},
        )  # the size is the gateway's, not the client's
    assert gateway_answer(FakeRequest("/stats", "GET", headers=AUTH), gateway=gateway)[:2] == (
        200,
        {"batch_sizes": {"1": 1, "3": 2}},
    )


@contextlib.contextmanager
def caplog_at_warning():
    """The qinsight logger's warnings while the block runs, as messages."""
    import logging

    messages = []

    class Keep(logging.Handler):
        def emit(self, record):
            messages.append(record.getMessage())

    handler = Keep(logging.WARNING)
    logging.getLogger("qinsight").addHandler(handler)
    try:
        yield messages
    finally:
        logging.getLogger("qinsight").removeHandler(handler)


def test_a_judge_replica_that_dies_is_a_json_503_to_retry():
    from ray.exceptions import ActorDiedError

    with caplog_at_warning() as logged:
        status, said, headers = gateway_answer(
            FakeRequest("/score", body=GOOD, headers=AUTH), FakeJudges(error=ActorDiedError())
        )
    assert logged == ["a judge replica could not answer (ActorDiedError): 503"]
    assert status == 503 and headers["retry-after"] == "1"
    assert said == {
        "error": "the judge replica stopped while judging this request; retry (a request is safe to repeat)"
    }


def test_past_its_deadline_a_request_is_504_and_its_judging_cancelled():
    judges = FakeJudges(delay=5)
    status, said = answer(
        FakeRequest("/score", body=GOOD, headers=AUTH), judges, ServiceSettings(token=TOKEN, request_timeout_s=0.2)
    )
    assert (status, judges.cancelled) == (504, 1)
    assert said == {"error": "judging took longer than 0.2 s, the most this service allows, and was stopped"}


def test_a_client_that_goes_away_cancels_its_judging():
    from qinsight_sdk.service import Gateway

    judges = FakeJudges(delay=5)
    gateway = Gateway(judges, ServiceSettings(token=TOKEN))

    async def leave():
        asked = asyncio.ensure_future(gateway(FakeRequest("/score", body=GOOD, headers=AUTH)))
        while not judges.calls:
            await asyncio.sleep(0.01)
        asked.cancel()  # what Serve does when the HTTP client disconnects
        with pytest.raises(asyncio.CancelledError):
            await asked

    asyncio.run(leave())
    assert judges.cancelled == 1 and gateway.in_flight == 0 and gateway.budget.used == 0


def test_a_slow_upload_is_408_and_holds_nothing():
    from qinsight_sdk.service import Gateway

    judges = FakeJudges()
    gateway = Gateway(judges, ServiceSettings(token=TOKEN, body_timeout_s=0.3))
    slow = FakeRequest("/score", body=GOOD, headers={**AUTH, "content-length": str(len(GOOD))}, pause=0.1)
    status, said, _ = gateway_answer(slow, gateway=gateway)
    assert (status, said) == (408, {"error": "the body did not arrive within 0.3 s"})
    assert (judges.calls, gateway.budget.used, gateway.in_flight) == ([], 0, 0)
    assert gateway_answer(FakeRequest("/score", body=GOOD, headers=AUTH, pause=0.01), gateway=gateway)[0] == 200


def test_bodies_held_at_once_are_bounded_503_with_retry_after():
    from qinsight_sdk.service import Gateway

    settings = ServiceSettings(token=TOKEN, max_request_bytes=100, max_inflight_bytes=140)
    gateway = Gateway(FakeJudges(delay=0.3), settings)

    def request(body=GOOD, size=None):
        return FakeRequest("/score", body=body, headers={**AUTH, **({"content-length": str(size)} if size else {})})

    async def beside_one_of_100(*others, full=False):
        answers = await asyncio.gather(gateway(request(size=100)), *map(gateway, others))
        return answers if full else [r.status_code for r in answers]

    held, refused = asyncio.run(beside_one_of_100(request(size=100), full=True))  # refused before a byte is read
    assert (held.status_code, refused.status_code, refused.headers["retry-after"]) == (200, 503, "1")
    assert json.loads(refused.body) == {
        "error": "the service holds as much request data as it may (140 bytes in flight); retry shortly"
    }
    # without a Content-Length, counted as the chunks arrive: 100 + 40 fits, 100 + 41 not
    assert asyncio.run(beside_one_of_100(request(GOOD.ljust(40)))) == [200, 200]
    assert asyncio.run(beside_one_of_100(request(GOOD.ljust(41)))) == [200, 503]
    assert gateway.budget.used == 0 and gateway.in_flight == 0  # all given back
    with pytest.raises(ValueError, match="must be at least one request's"):
        ServiceSettings(max_request_bytes=10, max_inflight_bytes=9)
    assert ServiceSettings(max_request_bytes=10, max_inflight_bytes=10).max_inflight_bytes == 10


def test_a_hold_grows_gives_back_and_starts_again_empty():
    from qinsight_sdk.service.admission import ByteBudget

    budget = ByteBudget(100)
    with budget.hold() as hold:
        hold.grow_to(60)
        hold.grow_to(30)  # never shrinks: it holds what was read
        assert (hold.size, budget.used) == (60, 60)
        hold.grow_to(100)
        with pytest.raises(RequestError, match="holds as much request data as it may"):
            budget.hold().grow_to(1)
    assert (hold.size, budget.used) == (0, 0)
    with hold:  # what a hold gave back is gone from it too: held again, it counts from nothing
        hold.grow_to(40)
        assert budget.used == 40
    assert budget.used == 0


def test_a_stopping_service_refuses_new_requests_and_says_so():
    from qinsight_sdk.service import Gateway

    gateway = Gateway(FakeJudges(), ServiceSettings(token=TOKEN))
    assert gateway_answer(FakeRequest("/health", "GET"), gateway=gateway)[:2] == (200, {"status": "ok"})
    assert asyncio.run(gateway.drain()) == 0
    status, said, headers = gateway_answer(FakeRequest("/score", body=GOOD, headers=AUTH), gateway=gateway)
    assert (status, said, headers["retry-after"]) == (
        503,
        {"error": "the service is stopping; retry on another replica"},
        "1",
    )
    # load balancers look away
    assert with_retry_after(gateway_answer(FakeRequest("/health", "GET"), gateway=gateway)) == (
        503,
        {"error": "the service is stopping"},
        "1",
    )


def with_retry_after(status_said_headers):
    status, said, headers = status_said_headers
    return status, said, headers.get("retry-after")


def test_health_is_503_when_no_judge_replica_answers_in_time(monkeypatch):
    from qinsight_sdk.service import app

    class Silent(FakeJudges):  # a replica that takes the call and never answers
        def __init__(self):
            super().__init__(delay=3600)

    monkeypatch.setattr(app, "HEALTH_TIMEOUT_S", 0.2)
    for judges in (Silent(), FakeJudges(ready=False)):
        assert with_retry_after(gateway_answer(FakeRequest("/health", "GET"), judges)) == (
            503,
            {"error": "no judge replica answers"},
            "1",
        )


def test_errors_name_paths_relative_to_the_allowed_folder(tmp_path):
    root = str(tmp_path)
    judges = FakeJudges(
        answer=lambda call: {
            "results": [{"error": f"{call.images[0]}: file not found"}],
            "ranking": {"errors": {"0": f"{root}/sub/b.png: cannot be read"}},
        }
    )
    body = json.dumps({"images": [{"path": "sub/a.png"}]}).encode()
    status, said = answer(
        FakeRequest("/score", body=body, headers=AUTH), judges, ServiceSettings(token=TOKEN, allow_paths=root)
    )
    assert status == 200 and root not in json.dumps(said)
    assert said == {
        "results": [{"error": "sub/a.png: file not found"}],
        "ranking": {"errors": {"0": "sub/b.png: cannot be read"}},
    }


# -- the client's retries, against a scripted server on loopback ---------------------------------------------


def test_the_client_retries_what_the_service_could_not_answer_for_a_while(waits):
    replies = [(503, {"Retry-After": "2"}), "drop", (502, {}), (200, {})]
    with ScriptedServer(replies) as server:
        assert RemoteJudge(server.url, retries=3, backoff_s=0.1).reward(
            [b"png"],
        ) == pytest.approx([0.25])
    assert server.requests == 4 and waits == [2.0, 0.2, 0.4]  # as asked, then doubling from backoff_s
    waits.clear()
    with ScriptedServer([(503, {"Retry-After": "86400"}), (503, {"Retry-After": "nan"}), (503, {})]) as server:
        with pytest.raises(RemoteError, match=r"said 503 \(HTTP 503\)") as caught:
            RemoteJudge(server.url, retries=2, backoff_s=0.1).reward([b"png"])
    assert caught.value.status == 503 and server.requests == 3 and waits == [30.0, 0.2]  # capped; NaN ignored


@pytest.mark.parametrize("reply", [(400, {}), (401, {}), (413, {}), (500, {}), (504, {})])
def test_the_client_raises_other_refusals_at_once(reply, waits):
    with ScriptedServer([reply]) as server:
        with pytest.raises(RemoteError, match=f"said {reply[0]}"):
            RemoteJudge(server.url).reward([b"png"])
    assert server.requests == 1 and waits == []


def test_the_client_does_not_repeat_a_request_the_service_is_slow_to_answer(waits):
    with ScriptedServer([("slow", 2.0)]) as server:
        with pytest.raises(RemoteError, match="no answer from the judge service at .* within 0.3 s") as caught:
            RemoteJudge(server.url, timeout=0.3).reward([b"png"])
    assert caught.value.status == 0 and server.requests == 1 and waits == []


def test_the_client_retries_a_service_it_cannot_reach(waits):
    from comfyui_server import free_port

    nobody = RemoteJudge(f"http://127.0.0.1:{free_port()}", retries=2, backoff_s=0.5)
    with pytest.raises(RemoteError, match="cannot reach the judge service at http://127.0.0.1:") as caught:
        nobody.reward([b"png"])
    assert caught.value.status == 0 and waits == [0.5, 1.0]
    assert nobody.health() is False and waits == [0.5, 1.0]  # a health check reports at once


def test_the_clients_health_check(waits):
    with ScriptedServer([]) as server:
        server.replies_get = [
            (200, {"status": "ok"}),
            (503, {"error": "no judge replica answers"}),
            (404, {"error": "no"}),
        ]
        judge = RemoteJudge(server.url)
        assert [judge.health(), judge.health(), judge.health()] == [True, False, False]
    assert waits == []


def test_flow_factory_s_compute_request_and_remote_reward_against_the_service(ray_service, tiny_judge_model):
    """/compute answers Flow-Factory's JSON request as the local judge would, with per-item errors; refuses
    a body over the limit and a request without the token; and never unpickles a body."""
    url, _ = ray_service
    images = [brightness_image(level / 5, 40 + level) for level in range(5)]
    local = QualityJudge.from_pretrained(tiny_judge_model, device="cpu")
    own = local.reward(images).tolist()
    as_text = [b64(png_of(image))["base64"] for image in images]
    body = {"prompt": ["p"] * 6, "image": [*as_text, b64(b"junk")["base64"]], "video": None, "condition_images": None}
    status, answer = post(url, "compute", body)
    assert status == 200 and answer["rewards"][:5] == pytest.approx(own, abs=1e-4)
    assert answer["rewards"][5] == 0.0 and "not a recognised image file" in answer["errors"][5]
    assert answer["errors"][:5] == [None] * 5 and "error" not in answer
    assert post(url, "compute", body, token=None)[0] == 401
    assert post(url, "compute", {"image": ["A" * (3 * 2**20)]})[0] == 413
    rewards, info = RemoteReward(url, token=TOKEN, batch_size=2)(images, ["p"] * 5, [{}] * 5)
    assert rewards.tolist() == pytest.approx(own, abs=1e-4) and info["errors"] == [None] * 5


def test_a_pickled_reward_request_runs_nothing_on_the_service(ray_service, tmp_path):
    """What a Flow-GRPO or DDPO client sends to a pickle reward server: refused as not JSON, on every
    endpoint, and the command its payload carries never runs."""
    import pickle

    url, _ = ray_service
    marker = tmp_path / "pwned"

    class RunsCommand:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    payload = pickle.dumps({"images": [RunsCommand()], "image": [RunsCommand()], "prompts": ["p"]})
    for task in ("compute", "reward", "score", ""):
        for content_type in ("application/octet-stream", "application/json"):
            request = urllib.request.Request(
                f"{url}/{task}",
                data=payload,
                headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": content_type},
                method="POST",
            )
            with pytest.raises(urllib.error.HTTPError) as caught:
                urllib.request.urlopen(request, timeout=60)
            assert caught.value.code in (400, 404), (task, content_type)
            assert "error" in json.loads(caught.value.read())
    assert not marker.exists()


def png_of(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
