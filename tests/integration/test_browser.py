"""The node pack as a user meets it: ComfyUI's own front end in Chromium, each shipped workflow opened
from its file and run with the Run button, on the tiny model."""

import json

import pytest
from comfyui_browser import WORKFLOWS, ComfyPage, browser_unavailable, prepare_front_end_server
from PIL import Image

from qinsight_sdk.io.image_metadata import read_rows

pytestmark = [
    pytest.mark.comfyui,
    pytest.mark.browser,
    pytest.mark.skipif(browser_unavailable() is not None, reason=str(browser_unavailable())),
]
NEEDS_SD_CHECKPOINT = {"best_of_n_generations.json"}  # text to image: the tests have no SD checkpoint


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_video_judge_model):
    comfy = prepare_front_end_server(tmp_path_factory.mktemp("comfyui-front-end"), tiny_video_judge_model)
    comfy.start()
    yield comfy
    comfy.stop()


@pytest.fixture(scope="module")
def browser(server):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
        yield chromium
        chromium.close()


@pytest.fixture
def page(server, browser):
    tab = ComfyPage(server, browser)
    yield tab
    assert not tab.page_errors, tab.page_errors  # no uncaught JavaScript error, ours or the front end's
    tab.close()


def node_of(page, node_type):
    (node,) = [n for n in page.nodes() if n["type"] == node_type]
    return node


def test_the_front_end_is_the_one_this_comfyui_asks_for(server):
    from importlib.metadata import version

    from comfyui_server import comfyui_tree

    wanted = [
        line.split("==")[1].strip()
        for line in (comfyui_tree() / "requirements.txt").read_text().splitlines()
        if line.startswith("comfyui-frontend-package==")
    ]
    assert wanted == [version("comfyui-frontend-package")]


def test_a_missing_node_is_reported(page, tmp_path):
    """The check below is worth something: a workflow naming an unknown node does show the dialog."""
    workflow = json.loads((WORKFLOWS / "compare_two_results.json").read_text())
    workflow["nodes"][1]["type"] = "NoSuchNode"
    (tmp_path / "broken.json").write_text(json.dumps(workflow))
    page.open_workflow(tmp_path / "broken.json")
    assert page.missing_nodes_shown()
    assert [n["type"] for n in page.nodes() if not n["known"]] == ["NoSuchNode"]


@pytest.mark.parametrize("workflow", sorted(p.name for p in WORKFLOWS.glob("*.json")))
def test_each_workflow_opens_and_runs(page, server, workflow):
    page.open_workflow(WORKFLOWS / workflow)
    assert not page.missing_nodes_shown()
    nodes = page.nodes()
    assert all(n["known"] and not n["has_errors"] for n in nodes), nodes
    loaders = [n for n in nodes if n["type"] == "QInsightLoadJudge"]
    assert loaders and all("tiny-qinsight" in n["widgets"]["model"]["options"] for n in loaders)
    entry = page.run()
    if workflow in NEEDS_SD_CHECKPOINT:
        assert entry is None
        errors = page.node_errors()
        assert [e["class_type"] for e in errors.values()] == ["CheckpointLoaderSimple"], errors
        (only,) = [e for node in errors.values() for e in node["errors"]]
        assert only["type"] == "value_not_in_list" and only["extra_info"]["input_name"] == "ckpt_name"
        return
    assert entry is not None and entry["status"]["status_str"] == "success", entry
    assert not page.error_toasts() and not page.error_dialogs()
    ours = [n["id"] for n in nodes if n["type"].startswith("QInsight") and n["type"] != "QInsightLoadJudge"]
    for node in ours:  # every judging node shows its verdict on itself, never a complaint about its input
        report = page.report(node)
        assert report.strip() and "expected 0..1" not in report and "no score" not in report, report


def test_a_batch_is_scored_and_shown_with_its_scores(page, server):
    page.open_workflow(WORKFLOWS / "score_a_batch.json")
    entry = page.run()
    outputs = entry["outputs"]
    score = node_of(page, "QInsightScore")
    scores = outputs[str(score["id"])]["qinsight_scores"]
    assert len(scores) == 4
    report = page.report(score["id"]).splitlines()
    assert [line.split(":")[0] for line in report] == [f"image {i}" for i in range(4)]
    assert all(f"{s:.2f}" in line for s, line in zip(scores, report))
    preview = node_of(page, "PreviewImage")
    shown = outputs[str(preview["id"])]["images"]
    assert len(shown) == 4  # the annotated images reach Preview Image
    original = Image.open(server.input_dir / "example.png").convert("RGB")
    first = Image.open(server.view(shown[0])).convert("RGB")
    assert first.size == original.size and first.tobytes() != original.tobytes()  # the score is drawn on it
    assert shown[0]["filename"] in page.previews(preview["id"])[0]  # and the page shows them on the node


def test_a_gate_at_the_maximum_leaves_the_passed_branch_unrun(page, server):
    page.open_workflow(WORKFLOWS / "restoration_quality_gate.json")
    gate, save = node_of(page, "QInsightGate"), node_of(page, "QInsightSaveImage")
    page.set_widget(gate["id"], "threshold", 5.0)
    saved_before = sorted((server.workdir / "output").rglob("*.png"))
    entry = page.run()
    assert entry["status"]["status_str"] == "success"
    assert str(save["id"]) not in entry["outputs"]  # the Save node never ran
    assert sorted((server.workdir / "output").rglob("*.png")) == saved_before
    assert page.report(gate["id"]).startswith("0 of 1 passed")
    assert not page.error_toasts() and not page.error_dialogs()


def test_saved_images_keep_their_quality(page, server):
    page.open_workflow(WORKFLOWS / "restoration_quality_gate.json")
    gate, save = node_of(page, "QInsightGate"), node_of(page, "QInsightSaveImage")
    page.set_widget(gate["id"], "threshold", 1.0)
    page.set_widget(save["id"], "sidecar", True)
    entry = page.run()
    (saved,) = entry["outputs"][str(save["id"])]["images"]
    path = server.workdir / "output" / saved["subfolder"] / saved["filename"]
    text = Image.open(path).text
    assert {"prompt", "workflow", "qinsight"} <= set(text)  # ComfyUI's metadata is kept beside ours
    (row,) = read_rows(path, "score")
    assert path.name.endswith(f"_q{row['score']:.2f}.png")
    assert row["settings"]["model"].endswith("score_degradation") and row["settings"]["mode"] == "fast"
    assert json.loads(path.with_name(path.name + ".json").read_text())
    assert saved["filename"] in page.report(save["id"])


def test_the_video_gate_saves_a_good_video_with_its_score_and_stops_a_bad_one(page, server):
    page.open_workflow(WORKFLOWS / "video_quality_gate.json")
    load, score = node_of(page, "LoadVideo"), node_of(page, "QInsightScoreVideo")
    gate, save = node_of(page, "QInsightVideoGate"), node_of(page, "QInsightSaveVideo")
    entry = page.run()
    good = entry["outputs"][str(score["id"])]["qinsight_scores"][0]
    (saved,) = entry["outputs"][str(save["id"])]["images"]
    (row,) = read_rows(server.workdir / "output" / saved["subfolder"] / saved["filename"], "score")
    assert row["score"] == pytest.approx(good) and saved["filename"].endswith(f"_q{good:.1f}.mp4")
    assert page.report(score["id"]).startswith(f"{good:.1f}/100") and page.report(gate["id"]).startswith("passed")
    assert len(page.previews(node_of(page, "PreviewImage")["id"])) == 4  # the frames the judge saw: 2 s at 2 fps
    page.set_widget(load["id"], "file", "dark.mp4")
    saved_before = sorted((server.workdir / "output").rglob("*.mp4"))
    entry = page.run()
    bad = entry["outputs"][str(score["id"])]["qinsight_scores"][0]
    assert bad < 50 <= good and page.report(gate["id"]).startswith(f"rejected: {bad:.1f}")
    assert str(save["id"]) not in entry["outputs"]  # the Save node never ran
    assert sorted((server.workdir / "output").rglob("*.mp4")) == saved_before
    assert not page.error_toasts() and not page.error_dialogs()


def test_the_video_workflow_scores_twenty_clips_by_their_brightness(page, server):
    """The shipped workflow run from the page for 20 clips of known brightness, one after another, as a user
    picks each file in Load Video: the scores follow the brightness (the tiny judge's rule)."""
    from comfyui_browser import CLIP_LEVELS
    from scipy.stats import spearmanr

    page.open_workflow(WORKFLOWS / "video_quality_gate.json")
    load, score = node_of(page, "LoadVideo"), node_of(page, "QInsightScoreVideo")
    scores = []
    for k in range(len(CLIP_LEVELS)):
        page.set_widget(load["id"], "file", f"clip_{k:02}.mp4")
        entry = page.run()
        assert entry["status"]["status_str"] == "success", entry
        scores.append(entry["outputs"][str(score["id"])]["qinsight_scores"][0])
    assert spearmanr(scores, CLIP_LEVELS)[0] >= 0.9, scores
    assert not page.error_toasts() and not page.error_dialogs()


def test_the_template_browser_lists_each_workflow_with_its_thumbnail(server):
    listed = server.get("/api/workflow_templates")
    assert sorted(listed["qinsight"]) == sorted(p.stem for p in WORKFLOWS.glob("*.json"))
    for name in listed["qinsight"]:
        thumbnail = Image.open(server.view_path(f"/api/workflow_templates/qinsight/{name}.jpg"))
        assert thumbnail.format == "JPEG" and thumbnail.width >= 320
