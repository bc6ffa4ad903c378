"""Labelled images, for training and evaluation: one JSONL schema of our own, importers for the
formats people have, and mixing.

Schema, one object per line (paths relative to the image root):

    {"task": "score", "image": "a.jpg", "mos": 63.2, "mos_range": [0, 100]}    # or an mos already in 1..5
    {"task": "degradation", "image": "b.png", "distortion_class": "blur", "severity": "moderate"}
    {"task": "comparison", "image_a": "x.png", "image_b": "y.png", "reference": "lq.png", "answer": "Image A"}

MOS is min-max normalised to [1, 5] as the paper did: 4 * (mos - min) / (max - min) + 1. Problems are
reported with their source and row number before any training starts; a bad image is never silently
replaced by another sample. Evaluation reads the same files without opening the images first: an
unreadable image there is one failed item, reported by path.
"""

from __future__ import annotations

import csv
import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from PIL import Image

from .errors import QInsightError, UsageError
from .profiles import QINSIGHT
from .prompts import PromptOrder
from .tasks import TASKS

FORMATS = ("qinsight", "deqa", "qinsight-comparison", "csv")


class DataError(QInsightError):
    """Training data that cannot be used; the message lists every problem with its row."""


@dataclass(frozen=True)
class Sample:
    """One training sample. ``images`` are absolute paths, in prompt order ([reference,] A, B for pairs)."""

    task: str
    images: tuple[Path, ...]
    mos: float | None = None
    distortion_class: str | None = None
    severity: str | None = None
    answer: str | None = None
    origin: str = field(default="", compare=False)  # "file:row", for messages

    def conversation(self) -> list[dict[str, Any]]:
        """The prompt the SDK uses at inference with Q-Insight's profile, image first as in training."""
        return QINSIGHT.prompt(self.task).messages(PromptOrder.IMAGE_FIRST, len(self.images) == 3)

    def columns(self) -> dict[str, Any]:
        """The label columns the reward functions read."""
        return {"task": self.task, "mos": self.mos, "distortion_class": self.distortion_class,
                "severity": self.severity, "answer": self.answer, "sample_id": self.origin}


def _sample(record: dict[str, Any], root: Path, origin: str) -> Sample:
    task = record.get("task")
    if task not in TASKS:
        raise ValueError(f"task must be {', '.join(TASKS)}, got {task!r}")
    names, labels = TASKS[task].read_record(record)
    return Sample(task, tuple(root / name for name in names), origin=origin, **labels)


def _unreadable(path: Path) -> str | None:
    try:
        with Image.open(path) as image:
            image.verify()
    except FileNotFoundError:
        return f"{path} not found"
    except Exception as exc:  # noqa: BLE001 - any decoding failure disqualifies the sample
        return f"{path} unreadable ({exc})"
    return None


def load_records(records: Iterable[tuple[str, dict[str, Any]]], image_root: str | Path,
                 skip_bad: bool = False, check_images: bool = True) -> list[Sample]:
    """Samples from (origin, record) pairs, checked: labels, and (``check_images``) every image opening.

    Raises ``DataError`` listing every problem, or with ``skip_bad`` drops those rows and says how many.
    """
    root = Path(image_root)
    samples, problems = [], []
    for origin, record in records:
        try:
            sample = _sample(record, root, origin)
        except (KeyError, TypeError, ValueError) as exc:
            problems.append(f"{origin}: {exc if not isinstance(exc, KeyError) else f'missing field {exc}'}")
            continue
        broken = [p for p in (_unreadable(path) for path in sample.images) if p] if check_images else []
        if broken:
            problems.append(f"{origin}: {'; '.join(broken)}")
            continue
        samples.append(sample)
    if problems and not skip_bad:
        raise DataError(f"{len(problems)} bad rows (use skip_bad to leave them out):\n" + "\n".join(problems))
    if problems:
        import logging

        logging.getLogger("qinsight").warning("skipped %d bad rows: %s", len(problems), "; ".join(problems))
    return samples


def read_jsonl(path: str | Path, image_root: str | Path, skip_bad: bool = False,
               check_images: bool = True) -> list[Sample]:
    """Samples from a file in qinsight's JSONL schema."""
    path = Path(path)

    def records() -> Iterable[tuple[str, dict[str, Any]]]:
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if line.strip():
                try:
                    yield f"{path.name}:{number}", json.loads(line)
                except ValueError as exc:
                    yield f"{path.name}:{number}", {"task": f"<invalid JSON: {exc}>"}

    return load_records(records(), image_root, skip_bad, check_images)


def from_deqa(meta: str | Path) -> list[dict[str, Any]]:
    """Records from a DeQA-Score meta JSON (``image`` and the already normalised ``gt_score_norm``)."""
    items = json.loads(Path(meta).read_text(encoding="utf-8"))
    return [{"task": "score", "image": item["image"], "mos": item["gt_score_norm"]} for item in items]


def from_qinsight_comparison(path: str | Path) -> list[dict[str, Any]]:
    """Records from Q-Insight's comparison JSON (``ref_image``, ``ImageA``, ``ImageB``, ``result``)."""
    items = json.loads(Path(path).read_text(encoding="utf-8"))
    return [{"task": "comparison", "reference": item.get("ref_image"), "image_a": item["ImageA"],
             "image_b": item["ImageB"], "answer": item["result"]} for item in items]


def from_csv(path: str | Path, mos_range: Sequence[float] | None = None,
             file_range: bool = True) -> list[dict[str, Any]]:
    """Records from a CSV with the columns of one task: ``image,mos``; ``image,distortion_class,severity``;
    or ``image_a,image_b,answer`` (and optionally ``reference``).

    MOS values are normalised from ``mos_range`` to [1, 5]. Without one, ``file_range`` (training: the
    paper's per-data-set rule) normalises from the file's own min and max; without it (evaluation) the
    values are taken as they are, so a judge is measured against the labels, not a stretch of them."""
    with Path(path).open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    columns = set(rows[0]) if rows else set()
    if "answer" in columns:
        return [{"task": "comparison", "image_a": row["image_a"], "image_b": row["image_b"],
                 "reference": row.get("reference") or None, "answer": row["answer"]} for row in rows]
    if "distortion_class" in columns:
        return [{"task": "degradation", "image": row["image"], "distortion_class": row["distortion_class"],
                 "severity": row["severity"]} for row in rows]
    values = [float(row["mos"]) for row in rows]
    if mos_range is None and file_range:
        mos_range = (min(values), max(values))
    scale = {"mos_range": list(mos_range)} if mos_range is not None else {}
    return [{"task": "score", "image": row["image"], "mos": value, **scale} for row, value in zip(rows, values)]


def mix(sources: Sequence[tuple[Sequence[Sample], float]], seed: int = 0) -> list[Sample]:
    """Several sources in one shuffled list; a source's weight is how often each of its samples appears
    on average (2.0: twice; 0.5: a seeded random half)."""
    rng = random.Random(seed)
    mixed: list[Sample] = []
    for samples, weight in sources:
        if weight < 0:
            raise UsageError(f"weights must not be negative, got {weight}")
        whole, fraction = divmod(weight, 1.0)
        mixed.extend(list(samples) * int(whole))
        mixed.extend(rng.sample(list(samples), round(fraction * len(samples))))
    rng.shuffle(mixed)
    return mixed


def read_source(path: str | Path, format: str = "qinsight", image_root: str | Path | None = None,
                mos_range: Sequence[float] | None = None, skip_bad: bool = False,
                check_images: bool = True, file_range: bool = True) -> list[Sample]:
    """Samples from one data file in any supported format, checked like ``read_jsonl``.

    ``image_root`` defaults to the file's folder. Entries are numbered from 1 in messages (CSV: the
    data row, not counting the header). ``mos_range`` and ``file_range`` are as for :func:`from_csv`.
    """
    path = Path(path)
    root = Path(image_root) if image_root is not None else path.parent
    if format == "qinsight":
        return read_jsonl(path, root, skip_bad, check_images)
    importers = {"deqa": from_deqa, "qinsight-comparison": from_qinsight_comparison,
                 "csv": lambda p: from_csv(p, mos_range, file_range)}
    if format not in FORMATS:
        raise UsageError(f"unknown data format {format!r}; use {', '.join(FORMATS)}")
    try:
        records = importers[format](path)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"cannot read {path} as {format}: {type(exc).__name__}: {exc}") from None
    return load_records(((f"{path.name}:{i}", r) for i, r in enumerate(records, start=1)), root, skip_bad,
                        check_images)
