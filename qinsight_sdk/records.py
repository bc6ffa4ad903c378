"""Result files: JSON lines appended as results arrive, so that a killed run loses at most the line it
was writing, and a rerun resumes from the rest."""

from __future__ import annotations

import os
from pathlib import Path


def whole_lines(path: Path) -> list[str]:
    """The file's complete lines. A last line cut off by a kill, even inside a multi-byte character, is
    cut from the file itself, so that what is appended next starts on a line of its own."""
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        data = data[:data.rfind(b"\n") + 1]
        os.truncate(path, len(data))
    return data.decode("utf-8").splitlines()
