"""The tiny checkpoint builder and the ComfyUI entry point."""

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

from PIL import Image

from qinsight_sdk.testing import build_tiny_checkpoint

ROOT = Path(__file__).resolve().parents[1]


def digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_tiny_checkpoint_is_deterministic_small_and_real_shaped(tiny_model, tmp_path):
    again = build_tiny_checkpoint(tmp_path / "again")
    assert digest(again) == digest(tiny_model)
    assert sum(p.stat().st_size for p in tiny_model.iterdir()) < 5_000_000
    names = {p.name for p in tiny_model.iterdir()}
    assert {"config.json", "generation_config.json", "preprocessor_config.json", "chat_template.json",
            "tokenizer.json", "tokenizer_config.json", "model.safetensors.index.json"} <= names
    index = json.loads((tiny_model / "model.safetensors.index.json").read_text())
    assert any(k.startswith("visual.") for k in index["weight_map"])          # released tensor names
    assert any(k.startswith("model.layers.") for k in index["weight_map"])
    config = json.loads((tiny_model / "config.json").read_text())
    assert config["model_type"] == "qwen2_5_vl" and config["rope_scaling"]["type"] == "mrope"


def test_tiny_checkpoint_from_the_command_line(tmp_path, tiny_model):
    done = subprocess.run([sys.executable, "-m", "qinsight_sdk.testing", str(tmp_path / "cli"),
                           "--sample-images", str(tmp_path / "images")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert digest(tmp_path / "cli") == digest(tiny_model)
    images = sorted((tmp_path / "images").iterdir())
    assert [p.suffix for p in images] == [".png", ".jpg", ".png", ".jpg"]
    assert all(Image.open(p).size[0] >= 96 for p in images)


def test_comfyui_entry_point_imports_nothing_heavy():
    code = ("import importlib.util, inspect, sys\n"
            f"spec = importlib.util.spec_from_file_location('qinsight_pack', {str(ROOT / '__init__.py')!r},\n"
            f"    submodule_search_locations=[{str(ROOT)!r}])\n"
            "module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module)\n"
            "heavy = [m for m in ('torch', 'transformers', 'qinsight_pack.qinsight_sdk') if m in sys.modules]\n"
            "assert not heavy, heavy\n"
            "assert inspect.iscoroutinefunction(module.comfy_entrypoint)\n"
            "assert not hasattr(module, 'NODE_CLASS_MAPPINGS')  # it would make ComfyUI skip the V3 entry\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=dict(os.environ), timeout=120)
    assert done.returncode == 0, done.stderr


def test_comfyui_requirements_never_force_torch():
    lines = [line.split("#")[0].strip() for line in (ROOT / "requirements.txt").read_text().splitlines()]
    names = {re.split(r"[<>=!~ ]", line)[0].lower() for line in lines if line}
    assert names and not names & {"torch", "torchvision", "torchaudio"}
    assert "transformers" in names
