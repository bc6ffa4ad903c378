"""Screenshots of each shipped workflow in ComfyUI's own front end, after pressing Run, for docs/comfyui.md
(docs/screenshots/<workflow>.png) and for ComfyUI's template browser (workflows/<workflow>.jpg).

    python scripts/screenshots.py [--out docs/screenshots] [--thumbnails workflows] [--only NAME ...]

Runs the same headless ComfyUI (v0.3.75), front end and Chromium as tests/integration/test_browser.py, with the tiny
judges the tests teach on the CPU to answer in Q-Insight's and VQ-Insight's formats (about two minutes to
build): the pictures show what the nodes display, not what the real judges would say about these images.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

from qinsight_sdk.testing import build_tiny_judge, build_tiny_video_judge

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from comfyui_browser import CHROMIUM, WORKFLOWS, ComfyPage, prepare_front_end_server  # noqa: E402
from samples import write_video  # noqa: E402

THUMBNAIL_WIDTH = 640


def example_photo(size: tuple[int, int] = (512, 384)) -> Image.Image:
    """A made-up landscape (sky, sun, hills), so the previews show a picture rather than noise."""
    width, height = size
    image = Image.new("RGB", size)
    draw = ImageDraw.Draw(image)
    for y in range(height):
        t = y / height
        draw.line([(0, y), (width, y)], fill=(int(90 + 140 * t), int(150 + 70 * t), int(230 - 40 * t)))
    draw.ellipse([width * 0.68, height * 0.12, width * 0.84, height * 0.33], fill=(255, 214, 120))
    draw.polygon(
        [(0, height * 0.7), (width * 0.35, height * 0.45), (width * 0.7, height * 0.72), (0, height)],
        fill=(60, 120, 70),
    )
    draw.polygon(
        [(width * 0.3, height), (width * 0.75, height * 0.55), (width, height * 0.68), (width, height)],
        fill=(40, 95, 55),
    )
    return image


def example_video(frames: int = 24) -> Any:
    """The example photo panned across, a second of frames at a time, as uint8 ``(T, H, W, 3)``."""
    import numpy as np

    photo = np.asarray(example_photo((640, 384)))
    return np.stack([photo[:, 4 * k : 4 * k + 512] for k in range(frames)])


def capture(out: Path, thumbnails: Path, only: list[str]) -> list[Path]:
    from playwright.sync_api import sync_playwright

    written = []
    with tempfile.TemporaryDirectory() as work:
        server = prepare_front_end_server(Path(work), build_tiny_video_judge(Path(work) / "tiny-video-judge"))
        example_photo().save(server.input_dir / "example.png")
        write_video(server.input_dir / "example.mp4", example_video(), fps=12)
        judge = build_tiny_judge(Path(work) / "tiny-judge")
        for name in ("score_degradation", "comparison"):  # where the workflows expect the released weights
            shutil.rmtree(server.models / "Q-Insight" / name)
            shutil.copytree(judge, server.models / "Q-Insight" / name)
        server.start()
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
                for workflow in sorted(WORKFLOWS.glob("*.json")):
                    if only and workflow.stem not in only:
                        continue
                    page = ComfyPage(server, browser)
                    page.open_workflow(workflow)
                    page.run()
                    page.page.wait_for_timeout(1500)  # previews load after the run ends
                    shot = out / f"{workflow.stem}.png"
                    page.page.screenshot(path=str(shot))
                    thumbnail = Image.open(shot).convert("RGB")
                    thumbnail.thumbnail((THUMBNAIL_WIDTH, THUMBNAIL_WIDTH))
                    thumbnail.save(thumbnails / f"{workflow.stem}.jpg", quality=85)
                    written += [shot, thumbnails / f"{workflow.stem}.jpg"]
                    page.close()
                browser.close()
        finally:
            server.stop()
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    parser.add_argument("--thumbnails", type=Path, default=WORKFLOWS)
    parser.add_argument("--only", nargs="*", default=[], help="these workflows (file names without .json)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for path in capture(args.out, args.thumbnails, args.only):
        print(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)


if __name__ == "__main__":
    main()
