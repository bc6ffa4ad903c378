"""ComfyUI's own front end in Chromium, driven as a user drives it: open a workflow file, press Run, read
what the page shows. Used by the browser tests and by ``scripts/screenshots.py``.

The browser is Debian's ``chromium`` under Playwright (from PyPI); Playwright never downloads a browser
here. The front end is the ``comfyui-frontend-package`` release that the ComfyUI under test asks for.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

from comfyui_server import ComfyUI

CHROMIUM = "/usr/bin/chromium"
WORKFLOWS = Path(__file__).resolve().parents[1] / "workflows"
# what a fresh front end shows first (the template browser, the tour) would cover the graph
FRONT_END_SETTINGS = {"Comfy.TutorialCompleted": True, "Comfy.Minimap.Visible": False}
MISSING_NODES = "This workflow has missing nodes"
CLIP_LEVELS = [0.05 + 0.045 * ((7 * k) % 20) for k in range(20)]  # 20 clips' brightness, shuffled


def browser_unavailable() -> str | None:
    """Why the browser tests cannot run here, or None."""
    if shutil.which(CHROMIUM) is None:
        return f"{CHROMIUM} is not installed (apt-get install chromium; CI installs it)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install -e '.[dev]')"
    return None


def prepare_front_end_server(workdir: Path, video_judge: Path) -> ComfyUI:
    """A ComfyUI with its front end, the tiny models where the shipped workflows expect the released
    weights (``video_judge``: the tiny video judge), and the input image and video they name; not started."""
    from samples import write_video

    from qinsight_sdk.testing import video_frames

    server = ComfyUI(workdir, front_end=True)
    server.prepare()
    user = workdir / "base" / "user" / "default"
    user.mkdir(parents=True, exist_ok=True)
    (user / "comfy.settings.json").write_text(json.dumps(FRONT_END_SETTINGS))
    for name in ("score_degradation", "comparison"):
        shutil.copytree(server.models / "tiny-qinsight", server.models / "Q-Insight" / name)
    shutil.copytree(video_judge, server.models / "Q-Insight" / "vqinsight-naturalvideo")
    shutil.copy(server.input_dir / "sample_0.png", server.input_dir / "example.png")
    for name, brightness in (("example.mp4", 0.7), ("dark.mp4", 0.15)):  # the tiny judge scores brightness
        write_video(server.input_dir / name, video_frames(brightness, 1, (96, 64), 16), fps=8)
    for k, brightness in enumerate(CLIP_LEVELS):
        write_video(server.input_dir / f"clip_{k:02}.mp4", video_frames(brightness, 20 + k, (80, 60), 8), fps=4)
    return server


class ComfyPage:
    """One browser tab on the ComfyUI under test."""

    def __init__(self, server: ComfyUI, browser: Any, viewport: tuple[int, int] = (1600, 1000)) -> None:
        self.server = server
        self.page = browser.new_page(viewport={"width": viewport[0], "height": viewport[1]})
        self.page_errors: list[str] = []
        self.page.on("pageerror", lambda error: self.page_errors.append(str(error)))
        # the front end's announcement banner, dismissed as a user dismisses it (it remembers that here)
        self.page.add_init_script("localStorage.setItem('vueNodesBannerDismissed', 'true')")
        self.page.goto(server.url)
        # ready when the pack's nodes are registered with the front end
        self.page.wait_for_function(
            "() => window.LiteGraph?.registered_node_types?.QInsightScore !== undefined", timeout=120_000
        )

    def open_workflow(self, path: Path) -> None:
        """Open a workflow file through the front end's file input, as Workflow > Open does."""
        self.page.set_input_files("#comfy-file-input", str(path))
        self.page.wait_for_function(f"() => window.app.graph._nodes.length == {_node_count(path)}", timeout=30_000)
        self.page.wait_for_timeout(500)  # dialogs about the loaded graph open just after it

    def missing_nodes_shown(self) -> bool:
        return self.page.get_by_text(MISSING_NODES).count() > 0

    def nodes(self) -> list[dict]:
        """Each node on the canvas: id, type, whether the front end knows its type, its error mark and its
        widgets' values and combo options."""
        return self.page.evaluate("""() => window.app.graph._nodes.map(n => ({
            id: n.id, type: n.type, known: n.type in LiteGraph.registered_node_types,
            has_errors: !!n.has_errors,
            widgets: Object.fromEntries((n.widgets || []).map(w => [w.name, {value: w.value,
                                                                              options: w.options?.values}]))}))""")

    def set_widget(self, node_id: int, name: str, value: Any) -> None:
        self.page.evaluate(
            "([id, name, value]) => { const w = window.app.graph.getNodeById(id).widgets"
            ".find(w => w.name === name); w.value = value; w.callback?.(value); }",
            [node_id, name, value],
        )

    def run(self, timeout: float = 240.0) -> dict | None:
        """Press Run and wait for the prompt to finish: its history entry, or None when the server refused
        the graph (the page then shows why)."""
        before = set(self.server.get("/history"))
        self.page.get_by_role("button", name="Run", exact=True).click()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            new = set(self.server.get("/history")) - before
            if new:
                return self.server.wait(new.pop(), timeout)
            if self.node_errors() or self.error_dialogs():
                return None
            time.sleep(0.3)
        raise TimeoutError(f"nothing ran within {timeout} s of pressing Run")

    def node_errors(self) -> dict:
        """The validation errors the server sent back for the last Run, by node id."""
        return self.page.evaluate("() => window.app.lastNodeErrors || {}")

    def error_dialogs(self) -> list[str]:
        return self.page.evaluate(
            "() => [...document.querySelectorAll('[role=dialog]')].map(d => d.innerText)"
            ".filter(t => /fail|error/i.test(t))"
        )

    def error_toasts(self) -> list[str]:
        return self.page.evaluate(
            "() => [...document.querySelectorAll('.p-toast-message-error')].map(t => t.innerText)"
        )

    def report(self, node_id: int, timeout: float = 30.0) -> str:
        """The verdict text the pack's front-end extension shows on a node after a run."""
        area = self.page.locator(f"textarea.qinsight-report[data-qinsight-node='{node_id}']")
        area.wait_for(timeout=timeout * 1000)
        return area.input_value()

    def previews(self, node_id: int, timeout: float = 30.0) -> list[str]:
        """The addresses of the images a node shows (drawn on the canvas, so read from the node)."""
        self.page.wait_for_function(
            "id => window.app.graph.getNodeById(id).imgs?.length > 0", arg=node_id, timeout=timeout * 1000
        )
        return self.page.evaluate("id => window.app.graph.getNodeById(id).imgs.map(i => i.src)", node_id)

    def close(self) -> None:
        self.page.close()


def _node_count(path: Path) -> int:
    return len(json.loads(path.read_text())["nodes"])
