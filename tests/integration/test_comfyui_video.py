"""The video nodes in a real ComfyUI (v0.3.75, headless, CPU) on the tiny video judge, through its HTTP API:
core Load Video (a file, streamed), Get Video Components (frames and fps), the judges' answers, the gate,
and the saved MP4 with its scores."""

import json
import random
import shutil

import pytest
from comfyui_server import ComfyUI
from samples import write_video
from scipy.stats import spearmanr

from qinsight_sdk import QualityJudge
from qinsight_sdk.backends.checkpoints import PROFILE_FILE
from qinsight_sdk.io.image_metadata import read_rows
from qinsight_sdk.testing import video_frames

pytestmark = pytest.mark.comfyui
_RNG = random.Random(3)
LEVELS = [_RNG.uniform(0.05, 0.95) for _ in range(20)]


@pytest.fixture(scope="module")
def comfy(tmp_path_factory, tiny_video_judge_model):
    server = ComfyUI(tmp_path_factory.mktemp("comfyui-video"))
    server.prepare()
    # the released repository's layout: the comparison judge's folder holds no profile file of its own
    released = server.models / "Q-Insight"
    shutil.copytree(tiny_video_judge_model, released / "vqinsight-naturalvideo")
    shutil.copytree(tiny_video_judge_model, released / "vqinsight-comp")
    (released / "vqinsight-comp" / PROFILE_FILE).unlink()
    for k, level in enumerate(LEVELS):
        write_video(server.input_dir / f"video_{k:02}.mp4", video_frames(level, 50 + k, (64, 48), 12), fps=6)
    server.start()
    yield server
    server.stop()


def loader(model="Q-Insight/vqinsight-naturalvideo", **inputs):
    fields = {"model": model, "hf_id": "", "allow_download": False, "device": "auto", "dtype": "auto"}
    return {"class_type": "QInsightLoadJudge", "inputs": {**fields, "after_run": "keep on GPU", **inputs}}


def load_video(k):
    return {"class_type": "LoadVideo", "inputs": {"file": f"video_{k:02}.mp4"}}


def succeeded(entry):
    errors = [m[1].get("exception_message") for m in entry["status"]["messages"] if m[0] == "execution_error"]
    assert entry["status"]["status_str"] == "success", errors or entry["status"]
    return entry["outputs"]


def failure(entry):
    assert entry["status"]["status_str"] == "error"
    (error,) = [data for kind, data in entry["status"]["messages"] if kind == "execution_error"]
    return error


def score_graph(videos, mode="fast", as_frames=False):
    """Load Video -> Score Video Quality per video (nodes "s0".."sN"); ``as_frames``: through Get Video
    Components, as an IMAGE batch with its fps."""
    graph = {"j": loader()}
    for k in videos:
        graph[f"v{k}"] = load_video(k)
        source = {"video": [f"v{k}", 0]}
        if as_frames:
            graph[f"c{k}"] = {"class_type": "GetVideoComponents", "inputs": {"video": [f"v{k}", 0]}}
            source = {"video": [f"c{k}", 0], "fps": [f"c{k}", 2]}
        graph[f"s{k}"] = {"class_type": "QInsightScoreVideo", "inputs": {"judge": ["j", 0], "mode": mode, **source}}
    return graph


def test_the_video_nodes_are_registered_and_the_loader_lists_the_video_judges(comfy):
    info = comfy.get("/object_info")
    first = {"QInsightScoreVideo": "video", "QInsightCompareVideos": "video_a", "QInsightBestOfNVideos": "video_1"}
    for node, name in {**first, "QInsightVideoGate": "video", "QInsightSaveVideo": "video"}.items():
        spec = info[node]["input"]
        assert spec["required"][name][0] == "VIDEO,IMAGE"
        assert info[node]["description"] and info[node]["category"].startswith("image/quality")
        for group in ("required", "optional"):
            for field, definition in spec.get(group, {}).items():
                assert len(definition) > 1 and definition[1].get("tooltip"), f"{node}.{field} has no tooltip"
        assert spec["optional"]["fps"][0] == "FLOAT,INT" and spec["optional"]["video_info"][0] == "VHS_VIDEOINFO"
    choices = info["QInsightLoadJudge"]["input"]["required"]["model"][1]["options"]
    assert {"Q-Insight/vqinsight-naturalvideo", "Q-Insight/vqinsight-comp"} <= set(choices)
    assert {f"ByteDance/Q-Insight/vqinsight-{n}" for n in ("naturalvideo", "aigcvideo", "comp")} <= set(choices)


def test_scores_follow_brightness_and_each_input_form_agrees_with_the_sdk(comfy, tiny_video_judge_model):
    outputs = succeeded(comfy.run(score_graph(range(20))))
    scores = [outputs[f"s{k}"]["qinsight_scores"][0] for k in range(20)]
    assert spearmanr(scores, LEVELS)[0] >= 0.9
    as_frames = succeeded(comfy.run(score_graph(range(3), as_frames=True)))
    judge = QualityJudge.from_pretrained(tiny_video_judge_model, device="cpu", dtype="fp32")
    for k in range(3):  # the file streamed, its decoded frames with their fps, and the SDK on the file
        sdk = judge.score(comfy.input_dir / f"video_{k:02}.mp4", mode="fast").score
        assert as_frames[f"s{k}"]["qinsight_scores"][0] == pytest.approx(scores[k], abs=1e-5)
        assert sdk == pytest.approx(scores[k], abs=1e-5)
        assert f"{scores[k]:.1f}/100" in outputs[f"s{k}"]["text"][0]


def test_reason_mode_writes_reasoning_and_an_integer_frame_rate_is_taken(comfy):
    graph = score_graph([0, 19], mode="reason")
    graph["fps"] = {"class_type": "PrimitiveInt", "inputs": {"value": 6}}  # as VideoHelperSuite gives rates
    graph["c"] = {"class_type": "GetVideoComponents", "inputs": {"video": ["v0", 0]}}
    graph["s0"]["inputs"].update(video=["c", 0], fps=["fps", 0])
    outputs = succeeded(comfy.run(graph))
    dark, bright = (outputs[f"s{k}"] for k in (0, 19))
    assert len(dark["text"]) == 2 and dark["text"][1]  # the score line, then the reasoning
    assert (LEVELS[0] < LEVELS[19]) == (dark["qinsight_scores"][0] < bright["qinsight_scores"][0])


def test_the_comparison_judge_picks_the_brighter_video(comfy):
    pairs = [(2 * k, 2 * k + 1) for k in range(10)]
    graph = {"j": loader("Q-Insight/vqinsight-comp")}
    for a, b in pairs:
        graph[f"v{a}"], graph[f"v{b}"] = load_video(a), load_video(b)
        graph[f"c{a}"] = {
            "class_type": "QInsightCompareVideos",
            "inputs": {"judge": ["j", 0], "video_a": [f"v{a}", 0], "video_b": [f"v{b}", 0], "both_orders": True},
        }
    outputs = succeeded(comfy.run(graph))
    winners = [outputs[f"c{a}"]["text"][0].removeprefix("winner: ") for a, _ in pairs]
    truth = ["A" if LEVELS[a] > LEVELS[b] else "B" for a, b in pairs]
    assert sum(w == t for w, t in zip(winners, truth)) >= 9, (winners, truth)


def test_best_of_n_videos_reports_progress_per_video_and_refuses_a_broken_one_by_number(comfy):
    from comfyui_server import progress_of

    graph = {"j": loader(), **{f"v{k}": load_video(k) for k in range(3)}}
    slots = {f"video_{k + 1}": [f"v{k}", 0] for k in range(3)}
    graph["b"] = {"class_type": "QInsightBestOfNVideos", "inputs": {"judge": ["j", 0], "strategy": "score", **slots}}
    entry, messages = comfy.watch(graph)
    succeeded(entry)
    assert progress_of(messages, "b") == [(1, 3), (2, 3), (3, 3)]
    graph["c"] = {"class_type": "CreateVideo", "inputs": {"images": ["e", 0], "fps": 8.0}}
    graph["e"] = {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 48, "batch_size": 1, "color": 0}}
    graph["b"]["inputs"]["video_6"] = ["c", 0]  # one frame: no video
    error = failure(comfy.run(graph))
    assert "ranking failed for 1 of 4 videos; video 6: " in error["exception_message"]


def test_best_of_n_videos_orders_videos_and_frame_batches_by_score(comfy):
    clips = {1: 6, 2: 2, 3: 10, 5: 19}  # slot: clip, at least 0.2 apart in brightness (close ones may swap)
    graph = {"j": loader(), "c": {"class_type": "GetVideoComponents", "inputs": {"video": ["v19", 0]}}}
    for k in clips.values():
        graph[f"v{k}"] = load_video(k)
    slots = {"video_1": ["v6", 0], "video_2": ["v2", 0], "video_3": ["v10", 0], "video_5": ["c", 0]}
    graph["b"] = {
        "class_type": "QInsightBestOfNVideos",
        "inputs": {"judge": ["j", 0], "strategy": "score", "fps": ["c", 2], **slots},
    }
    graph["save"] = {
        "class_type": "SaveVideo",
        "inputs": {"video": ["b", 0], "filename_prefix": "best", "format": "auto", "codec": "auto"},
    }
    outputs = succeeded(comfy.run(graph))
    order = outputs["b"]["qinsight_order"]
    levels = {slot: LEVELS[k] for slot, k in clips.items()}
    assert min(abs(a - b) for a in levels.values() for b in levels.values() if a != b) >= 0.2
    assert order == sorted(levels, key=levels.get, reverse=True)
    assert outputs["save"]["images"]  # the best one reached Save Video


SCORE_BATCH = 5  # Score Video Quality's outputs: score, spatial, temporal, consistency, reasoning, score_batch


def gate_and_save(threshold):
    return {
        "j": loader(),
        "v": load_video(19),
        "s": {"class_type": "QInsightScoreVideo", "inputs": {"judge": ["j", 0], "video": ["v", 0], "mode": "fast"}},
        "g": {
            "class_type": "QInsightVideoGate",
            "inputs": {"video": ["v", 0], "threshold": threshold, "score_batch": ["s", SCORE_BATCH]},
        },
        "w": {
            "class_type": "QInsightSaveVideo",
            "inputs": {
                "video": ["g", 0],
                "filename_prefix": "gated/clip",
                "score_batch": ["s", SCORE_BATCH],
                "sidecar": True,
            },
        },
    }


def test_a_passing_video_is_saved_with_its_score_in_the_mp4(comfy):
    outputs = succeeded(comfy.run(gate_and_save(1.0)))
    score = outputs["s"]["qinsight_scores"][0]
    (saved,) = outputs["w"]["images"]
    path = comfy.workdir / "output" / saved["subfolder"] / saved["filename"]
    assert path.name.endswith(f"_q{score:.1f}.mp4") and outputs["w"]["animated"] == [True]
    (row,) = read_rows(path, "score")  # from the container's tags
    assert row["score"] == pytest.approx(score) and row["settings"]["mode"] == "fast"
    assert row["settings"]["profile"] == "vqinsight-naturalvideo"
    import av

    with av.open(str(path)) as container:
        assert {"prompt", "qinsight"} <= set(container.metadata)  # ComfyUI's metadata kept beside ours
        assert container.streams.video[0].frames == 12
    assert json.loads(path.with_name(path.name + ".json").read_text())["qinsight"][0]["score"] == row["score"]


def test_a_failing_video_stops_the_saving_branch(comfy):
    before = sorted((comfy.workdir / "output").rglob("*.mp4"))
    outputs = succeeded(comfy.run(gate_and_save(100.0)))
    assert "w" not in outputs and outputs["g"]["text"][0].startswith("rejected: ")
    assert sorted((comfy.workdir / "output").rglob("*.mp4")) == before


def test_the_saver_scores_frames_itself_and_names_each_judge_mismatch(comfy):
    graph = {
        "j": loader(),
        "v": load_video(5),
        "c": {"class_type": "GetVideoComponents", "inputs": {"video": ["v", 0]}},
        "w": {
            "class_type": "QInsightSaveVideo",
            "inputs": {"video": ["c", 0], "fps": ["c", 2], "filename_prefix": "frames", "judge": ["j", 0]},
        },
    }
    (saved,) = succeeded(comfy.run(graph))["w"]["images"]
    (row,) = read_rows(comfy.workdir / "output" / saved["subfolder"] / saved["filename"], "score")
    assert 0 <= row["score"] <= 100
    image_node = {
        "j": loader(),
        "e": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 0}},
        "s": {"class_type": "QInsightScore", "inputs": {"judge": ["j", 0], "images": ["e", 0], "mode": "fast"}},
    }
    error = failure(comfy.run(image_node))
    assert "judges images; the loaded judge (vqinsight-naturalvideo) judges videos" in error["exception_message"]


def test_a_broken_video_is_a_clear_node_error(comfy):
    (comfy.input_dir / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(200))
    graph = score_graph([0])
    graph["v0"]["inputs"]["file"] = "broken.mp4"
    error = failure(comfy.run(graph))
    assert error["node_type"] in ("LoadVideo", "QInsightScoreVideo")
    assert "broken.mp4" in error["exception_message"] or error["node_type"] == "LoadVideo"
