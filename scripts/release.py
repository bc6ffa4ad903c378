"""Prepare pyproject.toml for a release: check the tag against the version and fill the public addresses.

    python scripts/release.py --repository https://github.com/OWNER/NAME --tag v0.2.0

The release workflow (.github/workflows/release.yml) runs it on the tag's checkout before building the wheel
and publishing to PyPI and the Comfy Registry; the change is never committed. The repository's address is
written nowhere else, so it is filled here, from one place, at release time:

- ``[project.urls]``: Repository, Documentation (the docs at the tag) and Changelog;
- ``[tool.comfy] Icon``: the raw URL of docs/icon.png at the tag (the Registry and ComfyUI-Manager show the
  icon from a URL, and a relative path only works in the repository).

It refuses a tag that is not ``v`` + the version in pyproject.toml (the version is written once, there), an
address that is not an https GitHub repository, and a pyproject.toml that already has ``[project.urls]``.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REPOSITORY = re.compile(r"https://github\.com/(?P<owner>[\w.-]+)/(?P<name>[\w.-]+)")


class ReleaseError(Exception):
    """Why pyproject.toml cannot be prepared for this release."""


def prepare(text: str, repository: str, tag: str) -> str:
    """``text`` (a pyproject.toml) with the release's addresses filled in.

    Args:
        text: the pyproject.toml as committed.
        repository: the repository's https address on GitHub.
        tag: the release's tag, ``v`` and the version.

    Returns:
        The pyproject.toml to build and publish from.

    Raises:
        ReleaseError: the tag, the address or the file is not as described above.
    """
    found = REPOSITORY.fullmatch(repository.rstrip("/"))
    if found is None:
        raise ReleaseError(f"--repository must be https://github.com/OWNER/NAME, got {repository!r}")
    version = re.search(r'^\[project\]\nname = "qinsight"\nversion = "([^"]+)"$', text, re.MULTILINE)
    if version is None:
        raise ReleaseError("pyproject.toml has no [project] version for qinsight")
    if tag != f"v{version.group(1)}":
        raise ReleaseError(f"tag {tag!r} is not v + the version in pyproject.toml ({version.group(1)})")
    if re.search(r"^\[project\.urls\]$", text, re.MULTILINE):
        raise ReleaseError("pyproject.toml already has [project.urls]: release from the committed file")
    base, raw = repository.rstrip("/"), f"https://raw.githubusercontent.com/{found['owner']}/{found['name']}/{tag}"
    urls = (
        "[project.urls]\n"
        f'Repository = "{base}"\n'
        f'Documentation = "{base}/blob/{tag}/docs/index.md"\n'
        f'Changelog = "{base}/blob/{tag}/CHANGELOG.md"\n\n'
    )
    text, icons = re.subn(r'^Icon = "docs/icon\.png"$', f'Icon = "{raw}/docs/icon.png"', text, flags=re.MULTILINE)
    if icons != 1:
        raise ReleaseError('pyproject.toml has no [tool.comfy] Icon = "docs/icon.png" to fill')
    return text.replace("\n[project.optional-dependencies]\n", f"\n{urls}[project.optional-dependencies]\n", 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repository", required=True, help="https://github.com/OWNER/NAME")
    parser.add_argument("--tag", required=True, help="the release's tag: v and the version, v0.2.0")
    parser.add_argument("--pyproject", type=Path, default=ROOT / "pyproject.toml", help="the file to prepare")
    args = parser.parse_args(argv)
    try:
        prepared = prepare(args.pyproject.read_text(encoding="utf-8"), args.repository, args.tag)
    except ReleaseError as exc:
        print(f"release: {exc}", file=sys.stderr)
        return 1
    args.pyproject.write_text(prepared, encoding="utf-8")
    print(f"release: {args.pyproject} prepared for {args.tag} of {args.repository}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
