"""The node pack in a real ComfyUI (v0.3.75, headless, CPU), driven through its HTTP API."""

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from brightness_family import MARKER, install_as_plugin
from comfyui_server import ComfyUI, progress_of
from PIL import Image
from safetensors import safe_open
from samples import write_video

from qinsight_sdk import QualityJudge
from qinsight_sdk.judging.profiles import PROFILES, VISUALQUALITY_R1_NON_THINKING
from qinsight_sdk.testing import brightness_image, build_tiny_rali, video_frames

NODE_IDS = [
    "QInsightLoadJudge",
    "QInsightScore",
    "QInsightDegradation",
    "QInsightCompare",
    "QInsightBestOfN",
    "QInsightGate",
    "QInsightSaveImage",
    "QInsightReward",
]
ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = sorted((ROOT / "workflows").glob("*.json"))
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}


@pytest.fixture(scope="module")
def comfy(tmp_path_factory, tiny_judge_model, tiny_video_judge_model):
    # a model family installed as a plugin (an entry point), which ComfyUI's process reads with no edit
    server = ComfyUI(tmp_path_factory.mktemp("comfyui"), env=install_as_plugin(tmp_path_factory.mktemp("site")))
    server.prepare()
    (server.models / "meter").mkdir()
    (server.models / "meter" / MARKER).write_text("{}")
    build_tiny_rali(server.models / "rali")  # RALI's released layout: no config.json of its own
    # the tiny judge that answers, and a bright and a dark image for it to tell apart
    shutil.copytree(tiny_judge_model, server.models / "tiny-judge")
    brightness_image(0.85, 1).save(server.input_dir / "bright.png")
    brightness_image(0.15, 2).save(server.input_dir / "dark.png")
    # what the example workflows name: a checkpoint, an input image and the released model layout
    (server.workdir / "checkpoints").mkdir()
    (server.workdir / "checkpoints" / "v1-5-pruned-emaonly-fp16.safetensors").write_bytes(b"")
    shutil.copy(server.input_dir / "sample_0.png", server.input_dir / "example.png")
    for name in ("score_degradation", "comparison"):
        shutil.copytree(server.models / "tiny-qinsight", server.models / "Q-Insight" / name)
    shutil.copytree(tiny_video_judge_model, server.models / "Q-Insight" / "vqinsight-naturalvideo")
    write_video(server.input_dir / "example.mp4", video_frames(0.5, 1, (64, 48), 8), fps=8)
    # a checkpoint that brings its own judge profile, as 'qinsight train' writes one beside the weights
    shutil.copytree(server.models / "tiny-qinsight", server.models / "tiny-own-profile")
    VISUALQUALITY_R1_NON_THINKING.save(server.models / "tiny-own-profile")
    paths = json.loads((server.workdir / "paths.yaml").read_text())
    paths["qinsight_test"]["checkpoints"] = str(server.workdir / "checkpoints")
    (server.workdir / "paths.yaml").write_text(json.dumps(paths))
    server.start()
    yield server
    server.stop()
    assert server.process.poll() is not None  # stopped by its process id


def loader(after_run="keep on GPU", model="tiny-qinsight"):
    return {
        "class_type": "QInsightLoadJudge",
        "inputs": {
            "model": model,
            "hf_id": "",
            "allow_download": False,
            "device": "auto",
            "dtype": "auto",
            "after_run": after_run,
        },
    }


def image_batch(count):
    """LoadImage nodes "10".. and ImageBatch nodes joining them; returns (graph, id of the batch)."""
    graph = {str(10 + i): {"class_type": "LoadImage", "inputs": {"image": f"sample_{i}.png"}} for i in range(count)}
    last = "10"
    for i in range(1, count):
        node = str(30 + i)
        graph[node] = {"class_type": "ImageBatch", "inputs": {"image1": [last, 0], "image2": [str(10 + i), 0]}}
        last = node
    return graph, last


def succeeded(entry):
    errors = [m[1].get("exception_message") for m in entry["status"]["messages"] if m[0] == "execution_error"]
    assert entry["status"]["status_str"] == "success", errors or entry["status"]
    return entry["outputs"]


def fast_score_graph(count, **loader_inputs):
    graph, batch = image_batch(count)
    judge = loader()
    judge["inputs"].update(loader_inputs)
    graph.update(
        {
            "1": judge,
            "2": {"class_type": "QInsightScore", "inputs": {"judge": ["1", 0], "images": [batch, 0], "mode": "fast"}},
        }
    )
    return graph


def fast_scores(comfy, count, **loader_inputs):
    return succeeded(comfy.run(fast_score_graph(count, **loader_inputs)))["2"]["qinsight_scores"]


def loader_refusal(comfy, **loader_inputs):
    """The loader's validation error for these inputs (the prompt must be refused)."""
    status, answer = comfy.post("/prompt", {"prompt": fast_score_graph(1, **loader_inputs)})
    assert status == 400, answer
    return json.dumps(answer["node_errors"]["1"])


def test_the_image_size_preset_is_chosen_on_the_loader(comfy):
    """official (the default) or fast; the sample images are small, so both give the same scores."""
    assert fast_scores(comfy, 2, image_size="fast") == pytest.approx(fast_scores(comfy, 2), abs=1e-4)
    assert "image_size must be one of official, fast" in loader_refusal(comfy, image_size="huge")


def test_the_judge_choice_reaches_the_loaded_judge_and_its_rows(comfy):
    """auto: Q-Insight's profile for a plain checkpoint, the checkpoint's own qinsight_judge.json where it
    has one; a named profile as asked. Score Image Quality's rows name the profile, and its prompts are the
    ones used: VisualQuality-R1's fast score asks its non-thinking prompt, as its non-thinking profile does,
    so the same weights give the same scores under both and others under Q-Insight's."""
    cases = {
        "q-insight": ("tiny-qinsight", "auto"),
        "visualquality-r1": ("tiny-qinsight", "visualquality-r1"),
        "visualquality-r1-non-thinking": ("tiny-own-profile", "auto"),
    }
    graph = {"10": {"class_type": "LoadImage", "inputs": {"image": "sample_0.png"}}}
    for n, (model, judge) in enumerate(cases.values()):
        load, score, save = str(n + 1), str(n + 4), str(n + 7)
        graph[load] = loader(model=model)
        graph[load]["inputs"]["judge"] = judge
        graph[score] = {
            "class_type": "QInsightScore",
            "inputs": {"judge": [load, 0], "images": ["10", 0], "mode": "fast"},
        }
        graph[save] = {
            "class_type": "QInsightSaveImage",
            "inputs": {
                "images": ["10", 0],
                "filename_prefix": f"profiles/{n}",
                "score_batch": [score, 3],
                "score_in_name": False,
            },
        }
    outputs = succeeded(comfy.run(graph))
    scores, recorded = {}, {}
    for n, (expected, (model, _)) in enumerate(cases.items()):
        (saved,) = outputs[str(n + 7)]["images"]
        (row,) = json.loads(
            Image.open(comfy.workdir / "output" / saved["subfolder"] / saved["filename"]).text["qinsight"]
        )
        assert row["settings"]["model"].endswith(model) and row["settings"]["mode"] == "fast"
        recorded[expected] = row["settings"]["profile"]
        (scores[expected],) = outputs[str(n + 4)]["qinsight_scores"]
        assert row["score"] == scores[expected]
    assert recorded == {name: name for name in cases}
    assert scores["visualquality-r1"] == pytest.approx(scores["visualquality-r1-non-thinking"], abs=1e-5)
    assert abs(scores["visualquality-r1"] - scores["q-insight"]) > 1e-3


def test_the_judge_choice_is_checked(comfy):
    assert f"judge must be one of auto, {', '.join(sorted(PROFILES))}, got 'gpt-judge'" in loader_refusal(
        comfy, judge="gpt-judge"
    )


def test_a_judge_that_cannot_do_the_task_is_a_clear_node_error(comfy):
    """VisualQuality-R1 only scores: Detect Degradation on it stops with why, not with unknown verdicts."""
    graph, batch = image_batch(1)
    graph.update(
        {"1": loader(), "2": {"class_type": "QInsightDegradation", "inputs": {"judge": ["1", 0], "images": [batch, 0]}}}
    )
    graph["1"]["inputs"]["judge"] = "visualquality-r1"
    entry = comfy.run(graph)
    assert entry["status"]["status_str"] == "error"
    [error] = [data for kind, data in entry["status"]["messages"] if kind == "execution_error"]
    assert error["node_id"] == "2" and error["node_type"] == "QInsightDegradation"
    assert "judge profile 'visualquality-r1' cannot do degradation (it does score)" in error["exception_message"]


def test_every_node_is_registered_and_documented(comfy):
    info = comfy.get("/object_info")
    for node_id in NODE_IDS:
        assert node_id in info, node_id
        node = info[node_id]
        assert node["description"] and node["category"].startswith("image/quality")
        for group in ("required", "optional"):
            for name, spec in node["input"].get(group, {}).items():
                assert len(spec) > 1 and spec[1].get("tooltip"), f"{node_id}.{name} has no tooltip"


SEARCH_ALIASES = """
import dataclasses, importlib, importlib.util, json, sys
tree, root = sys.argv[1:]
sys.path.insert(0, tree)
sys.argv[1:] = ["--cpu"]
import comfy.options
comfy.options.enable_args_parsing()
spec = importlib.util.spec_from_file_location("qinsight_pack", root + "/__init__.py", submodule_search_locations=[root])
sys.modules["qinsight_pack"] = importlib.util.module_from_spec(spec)
spec.loader.exec_module(sys.modules["qinsight_pack"])
v3 = importlib.import_module("qinsight_pack.nodes.v3")
before = [getattr(node.define_schema(), "search_aliases", None) for node in v3.NODES]

@dataclasses.dataclass
class NewerSchema(v3.io.Schema):   # a ComfyUI whose schema has search aliases (0.8 and later)
    search_aliases: list = None

v3.io.Schema = NewerSchema
after = [node.define_schema().search_aliases for node in v3.NODES]
print(json.dumps({"before": before, "after": after}))
"""


def test_search_aliases_only_where_comfyui_has_them():
    from comfyui_server import comfyui_tree

    done = subprocess.run(
        [sys.executable, "-c", SEARCH_ALIASES, str(comfyui_tree()), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.splitlines()[-1])
    assert found["before"] == [None] * len(NODE_IDS)  # v0.3.75 has none: the schema is left as it was
    assert all({"IQA", "aesthetic", "best of", "filter"} <= set(aliases) for aliases in found["after"])
    assert len(found["after"]) == len(NODE_IDS)


def test_a_family_installed_as_a_plugin_is_listed(comfy):
    """ComfyUI's process reads the plugin's entry point: the loader lists a folder of that family."""
    model = comfy.get("/object_info/QInsightLoadJudge")["QInsightLoadJudge"]["input"]["required"]["model"]
    assert "meter" in model[1]["options"] and "tiny-qinsight" in model[1]["options"]


def test_a_family_installed_as_a_plugin_judges_in_the_nodes(comfy):
    """Its scores in the Score node and its ranking in Best of N."""
    graph, batch = image_batch(4)
    graph.update(
        {
            "1": loader(model="meter", after_run="unload"),  # each node loads it anew
            "2": {"class_type": "QInsightScore", "inputs": {"judge": ["1", 0], "images": [batch, 0], "mode": "fast"}},
            "3": {
                "class_type": "QInsightBestOfN",
                "inputs": {"judge": ["1", 0], "images": [batch, 0], "top_k": 2, "strategy": "score"},
            },
        }
    )
    outputs = succeeded(comfy.run(graph))
    levels = [
        float(np.asarray(Image.open(comfy.input_dir / f"sample_{i}.png").convert("RGB")).mean()) / 255 for i in range(4)
    ]
    assert outputs["2"]["qinsight_scores"] == pytest.approx([1 + 4 * level for level in levels], abs=0.05)
    assert outputs["3"]["qinsight_order"] == sorted(range(4), key=lambda i: -levels[i])[:2]


def test_rali_scores_in_the_nodes_as_in_python_and_prefilters_best_of_n(comfy):
    """A RALI folder loads in the loader (full precision, fp32), its fast scores are the SDK's on the same
    files, and as Best of N's prefilter it passes on only its best `keep`."""
    graph, batch = image_batch(4)
    graph.update(
        {
            "1": loader(model="rali"),
            "4": loader(),
            "2": {"class_type": "QInsightScore", "inputs": {"judge": ["1", 0], "images": [batch, 0], "mode": "fast"}},
            "3": {
                "class_type": "QInsightBestOfN",
                "inputs": {
                    "judge": ["4", 0],
                    "images": [batch, 0],
                    "top_k": 4,
                    "strategy": "score",
                    "prefilter": ["1", 0],
                    "keep": 2,
                },
            },
        }
    )
    outputs = succeeded(comfy.run(graph))
    judge = QualityJudge.from_pretrained(comfy.models / "rali", device="cpu")
    expected = [r.score for r in judge.score([comfy.input_dir / f"sample_{i}.png" for i in range(4)])]
    assert outputs["2"]["qinsight_scores"] == pytest.approx(expected, abs=1e-4)
    by_rali = sorted(range(4), key=lambda i: -expected[i])
    assert sorted(outputs["3"]["qinsight_order"][:2]) == sorted(by_rali[:2])
    assert outputs["3"]["qinsight_order"][2:] == by_rali[2:]  # past keep: in RALI's order


def test_score_graph(comfy):
    scores = fast_scores(comfy, 3)
    assert len(scores) == 3 and all(1 <= s <= 5 for s in scores)
    assert fast_scores(comfy, 3) == scores  # deterministic across runs


def test_degradation_and_reward_graphs(comfy):
    graph, batch = image_batch(2)
    graph.update(
        {
            "1": loader(),
            "2": {"class_type": "QInsightDegradation", "inputs": {"judge": ["1", 0], "images": [batch, 0]}},
            "3": {"class_type": "QInsightReward", "inputs": {"judge": ["1", 0], "images": [batch, 0]}},
        }
    )
    outputs = succeeded(comfy.run(graph))
    assert len(outputs["2"]["text"]) == 2 and outputs["2"]["text"][0].startswith("image 0: ")
    assert all(0 <= r <= 1 for r in outputs["3"]["qinsight_rewards"]) and len(outputs["3"]["qinsight_rewards"]) == 2


def test_compare_graph_with_reference(comfy):
    graph = {
        "1": loader(),
        "2": {"class_type": "LoadImage", "inputs": {"image": "sample_0.png"}},
        "3": {"class_type": "LoadImage", "inputs": {"image": "sample_1.png"}},
        "4": {"class_type": "LoadImage", "inputs": {"image": "sample_2.png"}},
        "5": {
            "class_type": "QInsightCompare",
            "inputs": {
                "judge": ["1", 0],
                "image_a": ["2", 0],
                "image_b": ["3", 0],
                "reference": ["4", 0],
                "both_orders": True,
            },
        },
        "6": {"class_type": "PreviewImage", "inputs": {"images": ["5", 1]}},
    }
    outputs = succeeded(comfy.run(graph))
    assert outputs["5"]["text"][0] == "winner: unknown"  # the random tiny model never writes a verdict
    assert len(outputs["6"]["images"]) == 1


def test_best_of_n_passes_latents_through(comfy):
    scores = fast_scores(comfy, 4)
    graph, batch = image_batch(4)
    graph.update(
        {
            "1": loader(),
            "2": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 48, "batch_size": 4}},
            "3": {
                "class_type": "QInsightBestOfN",
                "inputs": {
                    "judge": ["1", 0],
                    "images": [batch, 0],
                    "top_k": 2,
                    "strategy": "score",
                    "latent": ["2", 0],
                },
            },
            "4": {"class_type": "SaveLatent", "inputs": {"samples": ["3", 3], "filename_prefix": "best"}},
            "5": {"class_type": "PreviewImage", "inputs": {"images": ["3", 0]}},
        }
    )
    outputs = succeeded(comfy.run(graph))
    expected = sorted(range(4), key=lambda i: -scores[i])[:2]
    assert outputs["3"]["qinsight_order"] == expected
    assert len(outputs["5"]["images"]) == 2
    saved = comfy.workdir / "output" / outputs["4"]["latents"][0]["subfolder"] / outputs["4"]["latents"][0]["filename"]
    with safe_open(str(saved), "pt") as latent:
        assert list(latent.get_tensor("latent_tensor").shape) == [2, 4, 6, 8]


def test_the_nodes_on_a_judge_that_answers(comfy):
    """Reason-mode scores, a comparison and a tournament on the tiny judge trained to answer: the
    success paths the random model never reaches."""
    graph = {
        "1": loader(model="tiny-judge"),
        "10": {"class_type": "LoadImage", "inputs": {"image": "dark.png"}},
        "11": {"class_type": "LoadImage", "inputs": {"image": "bright.png"}},
        "12": {"class_type": "ImageBatch", "inputs": {"image1": ["10", 0], "image2": ["11", 0]}},
        "2": {"class_type": "QInsightScore", "inputs": {"judge": ["1", 0], "images": ["12", 0], "mode": "reason"}},
        "3": {
            "class_type": "QInsightCompare",
            "inputs": {"judge": ["1", 0], "image_a": ["10", 0], "image_b": ["11", 0], "both_orders": True},
        },
        "4": {
            "class_type": "QInsightBestOfN",
            "inputs": {"judge": ["1", 0], "images": ["12", 0], "top_k": 1, "strategy": "tournament"},
        },
    }
    outputs = succeeded(comfy.run(graph))
    dark, bright = outputs["2"]["qinsight_scores"]
    assert 1.0 <= dark < 2.5 < bright <= 5.0
    assert outputs["3"]["text"][0] == "winner: B"
    assert outputs["4"]["qinsight_order"] == [1] and "no verdict" not in outputs["4"]["text"][0]


def test_saved_images_keep_scores_and_degradations_made_elsewhere(comfy):
    """Reason-mode scores from Score Image Quality and the saver's own degradation verdicts, kept in each
    PNG (and its sidecar) as record rows; Best of N and Score draw their labels on the annotated images."""
    graph = {
        "1": loader(model="tiny-judge"),
        "10": {"class_type": "LoadImage", "inputs": {"image": "dark.png"}},
        "11": {"class_type": "LoadImage", "inputs": {"image": "bright.png"}},
        "12": {"class_type": "ImageBatch", "inputs": {"image1": ["10", 0], "image2": ["11", 0]}},
        "2": {"class_type": "QInsightScore", "inputs": {"judge": ["1", 0], "images": ["12", 0], "mode": "reason"}},
        "3": {
            "class_type": "QInsightSaveImage",
            "inputs": {
                "images": ["12", 0],
                "filename_prefix": "kept/q",
                "judge": ["1", 0],
                "score_batch": ["2", 3],
                "degradation": True,
                "score_in_name": True,
                "sidecar": True,
            },
        },
        "4": {
            "class_type": "QInsightBestOfN",
            "inputs": {"judge": ["1", 0], "images": ["12", 0], "top_k": 2, "strategy": "score"},
        },
        "5": {"class_type": "PreviewImage", "inputs": {"images": ["4", 5]}},
        "6": {"class_type": "PreviewImage", "inputs": {"images": ["2", 4]}},
    }
    outputs = succeeded(comfy.run(graph))
    scores = outputs["2"]["qinsight_scores"]
    saved = [comfy.workdir / "output" / s["subfolder"] / s["filename"] for s in outputs["3"]["images"]]
    assert [p.parent.name for p in saved] == ["kept", "kept"]
    for path, score in zip(saved, scores):
        assert path.name.endswith(f"_q{score:.2f}.png")
        rows = json.loads(Image.open(path).text["qinsight"])
        assert [r["task"] for r in rows] == ["score", "degradation"]
        assert rows[0]["score"] == score and rows[0]["reasoning"] and rows[0]["settings"]["mode"] == "reason"
        assert rows[0]["settings"]["model"].endswith("tiny-judge") and "decoding" in rows[0]["settings"]
        assert rows[1]["distortion"] in ("noise", "compression", "blur", "darken", None) and rows[1]["raw"]
        assert "mode" not in rows[1]["settings"] and rows[0]["key"] == str(path.resolve())
        assert json.loads(path.with_name(path.name + ".json").read_text())["qinsight"] == rows
    assert len(outputs["5"]["images"]) == 2 and len(outputs["6"]["images"]) == 2
    # read back later, without a model: the command line lists the same rows
    listed = subprocess.run(
        [sys.executable, "-m", "qinsight_sdk", "score", "--from-metadata", str(comfy.workdir / "output" / "kept")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert listed.returncode == 0, listed.stderr
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert sorted((r["image"], r["score"]) for r in rows) == sorted((str(p), s) for p, s in zip(saved, scores))


def test_the_saver_scores_and_names_distortions_with_each_image_encoded_once(comfy):
    """Save Image with Quality's own fast score and degradation share one pass of the vision tower."""

    def encoded():
        return sum(
            j["images_encoded"] or 0
            for j in comfy.get("/qinsight/status")["judges"]
            if j["model"].endswith("tiny-judge")
        )

    graph, batch = image_batch(3)
    graph["1"] = loader(model="tiny-judge")
    graph["2"] = {
        "class_type": "QInsightSaveImage",
        "inputs": {"images": [batch, 0], "filename_prefix": "once/q", "judge": ["1", 0], "degradation": True},
    }
    succeeded(comfy.run(graph))  # loads the judge (its load-time probe encodes images too)
    before = encoded()
    graph["2"]["inputs"]["filename_prefix"] = "once/r"  # a changed input: the saver runs again
    outputs = succeeded(comfy.run(graph))
    assert len(outputs["2"]["images"]) == 3
    assert encoded() - before == 3  # not 6: the score and the degradation share each image's features


def gate_graph(threshold):
    graph, batch = image_batch(3)
    graph.update(
        {
            "1": loader(),
            "2": {"class_type": "QInsightScore", "inputs": {"judge": ["1", 0], "images": [batch, 0], "mode": "fast"}},
            "3": {
                "class_type": "QInsightGate",
                "inputs": {"images": [batch, 0], "threshold": threshold, "score_batch": ["2", 3]},
            },
            "4": {"class_type": "PreviewImage", "inputs": {"images": ["3", 0]}},
            "5": {"class_type": "PreviewImage", "inputs": {"images": ["3", 1]}},
        }
    )
    return graph


def test_gate_where_some_pass(comfy):
    scores = fast_scores(comfy, 3)
    threshold = round((min(scores) + max(scores)) / 2, 4)
    outputs = succeeded(comfy.run(gate_graph(threshold)))
    passing = sum(s >= threshold for s in scores)
    assert 0 < passing < 3
    assert outputs["3"]["qinsight_passed"] == [i for i, s in enumerate(scores) if s >= threshold]
    assert len(outputs["4"]["images"]) == passing and len(outputs["5"]["images"]) == 3 - passing


def test_gate_where_none_pass_blocks_the_branch_and_finishes(comfy):
    started = time.monotonic()
    outputs = succeeded(comfy.run(gate_graph(5.0), timeout=120))
    assert outputs["3"]["qinsight_passed"] == []
    assert "4" not in outputs  # the blocked branch's output node never ran
    assert len(outputs["5"]["images"]) == 3
    assert time.monotonic() - started < 120


def test_gate_with_its_own_judge(comfy):
    graph, batch = image_batch(2)
    graph.update(
        {
            "1": loader(),
            "3": {"class_type": "QInsightGate", "inputs": {"images": [batch, 0], "threshold": 1.0, "judge": ["1", 0]}},
            "4": {"class_type": "PreviewImage", "inputs": {"images": ["3", 0]}},
        }
    )
    outputs = succeeded(comfy.run(graph))
    assert outputs["3"]["qinsight_passed"] == [0, 1]


@pytest.mark.parametrize("node,bad", [("top_k", 0), ("strategy", "vibes")])
def test_invalid_widget_values_are_rejected(comfy, node, bad):
    graph, batch = image_batch(2)
    inputs = {"judge": ["1", 0], "images": [batch, 0], "top_k": 1, "strategy": "score"}
    inputs[node] = bad
    graph.update(
        {
            "1": loader(),
            "3": {"class_type": "QInsightBestOfN", "inputs": inputs},
            "4": {"class_type": "PreviewImage", "inputs": {"images": ["3", 0]}},
        }
    )
    status, answer = comfy.post("/prompt", {"prompt": graph})
    assert status == 400 and "3" in answer["node_errors"]


def test_freeing_memory_unloads_the_judge(comfy):
    fast_scores(comfy, 2)
    before = comfy.get("/qinsight/status")
    assert before["registered_with_comfyui"] >= 1
    assert comfy.post("/free", {"unload_models": True})[0] == 200
    deadline = time.monotonic() + 30
    while comfy.get("/qinsight/status")["registered_with_comfyui"] and time.monotonic() < deadline:
        time.sleep(0.2)
    after = comfy.get("/qinsight/status")
    assert after["registered_with_comfyui"] == 0
    # on a CPU-only ComfyUI the weights stay on the CPU either way: what changes is ComfyUI's own account
    assert any(judge["comfyui_loaded_bytes"] > 0 for judge in before["judges"])
    assert all(judge["comfyui_loaded_bytes"] == 0 for judge in after["judges"])


def test_offload_after_run_leaves_other_models_loaded(comfy):
    images = {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 48, "batch_size": 1, "color": 4321}}
    graph = {
        "1": loader(),
        "2": loader(after_run="offload to CPU", model="Q-Insight/comparison"),
        "3": images,
        "4": {"class_type": "QInsightReward", "inputs": {"judge": ["1", 0], "images": ["3", 0]}},
        "5": {"class_type": "QInsightReward", "inputs": {"judge": ["2", 0], "images": ["3", 0]}},
    }
    succeeded(comfy.run(graph))
    judges = comfy.get("/qinsight/status")["judges"]
    kept = [j for j in judges if j["model"].endswith("tiny-qinsight")]
    offloaded = [j for j in judges if j["model"].endswith("comparison")]
    assert any(j["registered_with_comfyui"] for j in kept)  # the other judge's offload left this one loaded
    assert offloaded and all(j["loaded"] and not j["registered_with_comfyui"] for j in offloaded)
    assert all(j["comfyui_loaded_bytes"] == 0 and j["weight_devices"] == ["cpu"] for j in offloaded)
    assert {j["dtype"] for j in kept + offloaded if j["loaded"]} == {"float32"}  # "auto" on a CPU ComfyUI


def test_unload_after_run_frees_the_weights(comfy):
    graph, batch = image_batch(1)
    graph.update(
        {
            "1": loader(after_run="unload", model="Q-Insight/score_degradation"),
            "2": {"class_type": "QInsightScore", "inputs": {"judge": ["1", 0], "images": [batch, 0], "mode": "fast"}},
        }
    )
    succeeded(comfy.run(graph))
    status = comfy.get("/qinsight/status")
    mine = [j for j in status["judges"] if j["model"].endswith("score_degradation")]
    assert mine and not any(j["loaded"] for j in mine)


def test_bad_image_is_a_clear_node_error(comfy):
    graph = {
        "1": loader(),
        "2": {"class_type": "EmptyImage", "inputs": {"width": 1, "height": 16384, "batch_size": 1, "color": 0}},
        "3": {"class_type": "QInsightScore", "inputs": {"judge": ["1", 0], "images": ["2", 0], "mode": "fast"}},
    }
    entry = comfy.run(graph)
    assert entry["status"]["status_str"] == "error"
    message = json.dumps(entry["status"]["messages"])
    assert "image 0" in message and "aspect ratio" in message


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda p: p.name)
def test_example_workflows_use_valid_widget_values(comfy, workflow):
    info = comfy.get("/object_info")
    graph = json.loads(workflow.read_text())
    for node in graph["nodes"]:
        assert node["type"] in info, f"{workflow.name}: unknown node {node['type']}"
        spec = info[node["type"]]["input"]
        linked = {i["name"] for i in node.get("inputs", []) if i.get("link") is not None}
        values = list(node.get("widgets_values", []))
        for name, definition in list(spec.get("required", {}).items()) + list(spec.get("optional", {}).items()):
            kind, options = definition[0], (definition[1] if len(definition) > 1 else {})
            kind = options.get("widgetType") or kind  # a socket of several types with a widget: "FLOAT,INT"
            is_combo = isinstance(kind, list) or kind == "COMBO"
            if name in linked or not (is_combo or kind in WIDGET_TYPES) or options.get("forceInput"):
                continue
            assert values, f"{workflow.name}: {node['type']} lacks a value for {name}"
            value = values.pop(0)
            if is_combo:
                choices = kind if isinstance(kind, list) else options["options"]
                assert value in choices, f"{workflow.name}: {node['type']}.{name}={value!r} not in {choices}"
            elif kind in ("INT", "FLOAT"):
                assert options.get("min", value) <= value <= options.get("max", value), (node["type"], name)
            elif kind == "BOOLEAN":
                assert isinstance(value, bool)
            if options.get("control_after_generate"):
                assert values.pop(0) in ("fixed", "increment", "decrement", "randomize")
            if options.get("image_upload") or options.get("video_upload"):
                assert values.pop(0) == "image"  # the upload button's value, "image" for videos too
        assert not values, f"{workflow.name}: {node['type']} has extra widget values {values}"


def test_typed_hub_id_without_download_says_what_to_do(comfy):
    graph, batch = image_batch(1)
    judge = loader()
    judge["inputs"]["hf_id"] = "ByteDance/Q-Insight/score_degradation"
    graph.update(
        {
            "1": judge,
            "2": {"class_type": "QInsightScore", "inputs": {"judge": ["1", 0], "images": [batch, 0], "mode": "fast"}},
        }
    )
    entry = comfy.run(graph)
    assert entry["status"]["status_str"] == "error"
    assert "hf download ByteDance/Q-Insight" in json.dumps(entry["status"]["messages"])


def test_compare_best_of_n_and_reward_report_progress(comfy):
    graph, batch = image_batch(4)
    graph.update(
        {
            "1": loader(),
            "3": {
                "class_type": "QInsightBestOfN",
                "inputs": {"judge": ["1", 0], "images": [batch, 0], "top_k": 1, "strategy": "tournament"},
            },
            "4": {"class_type": "QInsightReward", "inputs": {"judge": ["1", 0], "images": [batch, 0]}},
            "5": {
                "class_type": "QInsightCompare",
                "inputs": {"judge": ["1", 0], "image_a": ["10", 0], "image_b": ["11", 0], "both_orders": False},
            },
        }
    )
    entry, messages = comfy.watch(graph)
    outputs = succeeded(entry)
    assert progress_of(messages, "3") == [(1, 3), (2, 3), (3, 3)]  # a knockout of 4 images: 3 matches
    # the random model never gives a verdict: image 0 goes through on its seed, and the node says so
    (text,) = outputs["3"]["text"]
    assert text.startswith("#1: image 0 (2.00); no verdict in any of its 2 matches: neither order gave a verdict: ")
    assert progress_of(messages, "4") == [(i, 4) for i in range(1, 5)]
    assert progress_of(messages, "5") == [(1, 1)]


def best_of_n_graph(count, size, color):
    """Best of N ("3", strategy score) over ``count`` blank images: ``count / 8`` batches of the judge."""
    return {
        "1": loader(),
        "2": {
            "class_type": "EmptyImage",
            "inputs": {"width": size, "height": size, "batch_size": count, "color": color},
        },
        "3": {
            "class_type": "QInsightBestOfN",
            "inputs": {"judge": ["1", 0], "images": ["2", 0], "top_k": 1, "strategy": "score"},
        },
    }


def test_interrupt_stops_best_of_n_between_batches(comfy):
    """POST /interrupt as the UI does, once the first batch has reported progress.

    Not a race: after that event four more batches of 512 px images remain (a second or more on a CPU),
    while the interrupt lands within milliseconds. (768 px images once took this test to 20 GB at
    transformers 4.51.3, whose vision attention is dense over a whole batch on the CPU.) The node checks it
    after each result, so it stops before another batch starts (here, still among the first batch's
    results)."""
    answers = []

    def interrupt_once(message):
        if message["type"] == "progress" and message["data"]["node"] == "3" and not answers:
            answers.append(comfy.post("/interrupt", {"prompt_id": message["data"]["prompt_id"]})[0])

    entry, messages = comfy.watch(best_of_n_graph(40, 512, 0x203040), interrupt_once)
    assert answers == [200]
    assert entry["status"]["status_str"] == "error" and "3" not in entry["outputs"]
    events = dict(entry["status"]["messages"])
    assert events["execution_interrupted"]["node_id"] == "3" and "execution_error" not in events
    progress = progress_of(messages, "3")
    assert progress[-1][1] == 40 and progress[-1][0] <= 16  # at most one batch after the interrupt
    # the server carries on: the next prompt runs to the end
    entry, messages = comfy.watch(best_of_n_graph(3, 64, 0x405060))
    assert len(succeeded(entry)["3"]["qinsight_order"]) == 1
    assert progress_of(messages, "3")[-1] == (3, 3)


def test_a_quantized_judge_counts_at_its_size_and_is_freed_not_moved(comfy, cpu_quantization):
    """ComfyUI sees the quantized bytes; where it would move the judge off its device, it is freed, and
    the next run loads it again with the same scores."""

    def judges(quantization):
        return [
            j
            for j in comfy.get("/qinsight/status")["judges"]
            if j["model"].endswith("tiny-judge") and j["loaded"] and j["quantization"] == quantization
        ]

    full = fast_scores(comfy, 3, model="tiny-judge")
    full_bytes = judges(None)[0]["comfyui_loaded_bytes"]
    four = fast_scores(comfy, 3, model="tiny-judge", quantization="4bit")
    assert all(1 <= s <= 5 for s in four) and four != full
    [loaded] = judges("4bit")
    assert loaded["registered_with_comfyui"] and 0 < loaded["comfyui_loaded_bytes"] < full_bytes
    assert comfy.post("/free", {"unload_models": True})[0] == 200
    deadline = time.monotonic() + 30
    while judges("4bit") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not judges("4bit")  # freed, where a full-precision judge only leaves ComfyUI's account
    # the same loader (its handle reloads), two of the three images (so the scorer runs again)
    assert fast_scores(comfy, 2, model="tiny-judge", quantization="4bit") == pytest.approx(four[:2], abs=1e-5)
    assert judges("4bit")
    eight = fast_scores(comfy, 3, model="tiny-judge", quantization="8bit", after_run="offload to CPU")
    assert all(1 <= s <= 5 for s in eight) and not judges("8bit")  # offloading a quantized judge frees it
    assert "quantization must be one of full, 8bit, 4bit" in loader_refusal(comfy, quantization="2bit")
