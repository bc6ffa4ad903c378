"""The documentation site: it builds strictly and offline, its API reference covers the public API with every
argument described, and README stays a landing page."""

import os
import re
import subprocess
import sys
from pathlib import Path

import griffe
import pytest

import qinsight_sdk

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("site")
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        capture_output=True, text=True, cwd=ROOT, timeout=600, env=dict(os.environ, NO_MKDOCS_2_WARNING="1"),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    return out


def test_every_page_is_built_and_nothing_is_fetched_from_elsewhere(site):
    pages = {p.stem for p in (ROOT / "docs").glob("*.md")}
    built = {p.parent.name if p.parent != site else "index" for p in site.rglob("index.html")}
    assert pages <= built | {"index"} and len(pages) >= 15
    for page in site.rglob("*.html"):
        html = page.read_text(encoding="utf-8")
        # stylesheets, scripts, fonts and images load from the site itself: nothing at view time from outside
        outside = re.findall(r'<(?:link|script|img)[^>]+(?:href|src)="(https?://[^"]+)"', html)
        assert outside == [] and "fonts.googleapis" not in html and "gtag(" not in html, (page, outside)


def test_the_api_reference_holds_every_public_name(site):
    html = (site / "api" / "index.html").read_text(encoding="utf-8")
    for name in qinsight_sdk.__all__:
        anchor = f"qinsight_sdk.{qinsight_sdk._EXPORTS[name]}.{name}"
        assert f'id="{anchor}"' in html, f"{name} ({anchor}) is not in the API reference"


def documented(obj) -> set[str]:
    """The names a Google-style docstring describes in its Args and Attributes sections."""
    names = set()
    for section in obj.docstring.parsed if obj.docstring else []:
        if section.kind.value in ("parameters", "other parameters", "attributes"):
            names |= {item.name.lstrip("*") for item in section.value}
    return names


def arguments(function) -> list[str]:
    return [p.name for p in function.parameters if p.name not in ("self", "cls")]


def public_callables():
    """(label, documented object, its arguments) for each public name and its classes' public methods; a
    dataclass's fields are its constructor's arguments."""
    package = griffe.load("qinsight_sdk", search_paths=[str(ROOT)], docstring_parser="google")
    for name in qinsight_sdk.__all__:
        obj = package[f"{qinsight_sdk._EXPORTS[name]}.{name}"]
        if obj.is_function:
            yield name, obj, arguments(obj)
        elif obj.is_class:
            init = obj.members.get("__init__")
            fields = [m.name for m in obj.members.values() if m.is_attribute and "dataclass-field" in m.labels]
            yield name, obj, arguments(init) if init is not None and not init.is_alias else fields
            for member in obj.members.values():
                # mutation testing's copy adds a function per mutant (xǁClassǁmethod__mutmut_1): not API
                if member.is_function and not member.name.startswith("_") and "__mutmut_" not in member.name:
                    yield f"{name}.{member.name}", member, arguments(member)


def test_every_argument_of_the_public_api_is_described():
    found = list(public_callables())
    assert len(found) >= 30 and any(label == "QualityJudge.score" for label, _, _ in found)
    assert sum(len(names) for _, _, names in found) >= 100  # the walk reached the arguments
    missing = {label: [a for a in names if a not in documented(obj)] for label, obj, names in found}
    assert {label: names for label, names in missing.items() if names} == {}


def test_readme_is_a_landing_page():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 300
    linked = set(re.findall(r"\]\(docs/([\w-]+\.md)\)", readme))
    assert {"index.md", "python.md", "cli.md", "comfyui.md", "judges.md"} <= linked
    assert all((ROOT / "docs" / page).is_file() for page in linked)
