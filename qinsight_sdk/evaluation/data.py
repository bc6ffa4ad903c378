"""Labelled images, for training and evaluation: one JSONL schema of our own, importers for the
formats people have, and mixing.

Schema, one object per line (paths relative to the image root):

    {"task": "score", "image": "a.jpg", "mos": 63.2, "mos_range": [0, 100]}    # or an mos already in 1..5
    {"task": "degradation", "image": "b.png", "distortion_class": "blur", "severity": "moderate"}
    {"task": "comparison", "image_a": "x.png", "image_b": "y.png", "reference": "lq.png", "answer": "Image A"}

MOS is min-max normalised to [1, 5] as the paper did: 4 * (mos - min) / (max - min) + 1. Problems are
reported with their file and line (a CSV's header is line 1; a JSON list's items are numbered) before any
training starts; a bad image is never silently replaced by another sample. A table row is never read two
ways: more fields than its header, a column read twice, a MOS that is not a plain finite number, a file
without labels and a reversed ``mos_range`` are errors, not guesses. Evaluation reads the same files
without opening the images first: an unreadable image there is one failed item, reported by path.

Formats (:data:`FORMATS`; image paths are relative to the image root, by default the file's folder):

``qinsight``
    the JSONL schema above.
``deqa``
    DeQA-Score's meta JSON: a list of ``{"image", "gt_score_norm", ...}``.
``qinsight-comparison``
    Q-Insight's comparison JSON: a list of ``{"ref_image", "ImageA", "ImageB", "result"}``.
``csv``
    our CSV, the columns of one task: ``image,mos``; ``image,distortion_class,severity``; or
    ``image_a,image_b,answer`` (and optionally ``reference``).
``pyiqa``
    pyiqa (IQA-PyTorch) ``meta_info_*.csv``: the image is the ``dist_name`` column of full-reference
    sets (``ref_name``/``hq_name`` is ignored: the distorted image is judged alone) or the name column
    of no-reference sets (``img_name``, ``image_name``, ``Image name``, ``filename``, ...), the MOS the
    score column (``mos``, ``MOS``, ``qmos``, ``mos_quality``, ``score``, ``elo_score``, ...); other
    columns (std, splits, attributes) are not read. DMOS (lower is better) is refused, see
    :func:`from_pyiqa`.
``mos-list``
    whitespace-separated lines ``image mos [std]`` or ``reference image mos [std]``, as
    VisualQuality-R1 and several IQA repositories ship their labels; blank lines are skipped.
``koniq``
    KonIQ-10k's own ``koniq10k_scores_and_distributions.csv``: ``image_name`` and ``MOS`` (1-5).
``konvid``
    KoNViD-1k's ``KoNViD_1k_attributes.csv``: the video is ``file_name`` (else ``flickr_id`` + ``.mp4``),
    the score ``MOS`` (1-5).
``lsvq``
    LSVQ's ``labels_*.csv``: ``name`` (a path without its ``.mp4``) and ``mos`` (0-100).
``live-vqc``
    LIVE-VQC's ``data.mat``: ``video_list`` and ``mos`` (0-100), read with SciPy's MAT reader (data only;
    nothing in the file is run).
``dimensions``
    a CSV of multi-dimension labels for VQ-Insight's AIGC judge: ``video`` (or ``image``), ``spatial``,
    ``temporal``, ``consistency`` (0-100 unless ``mos_range`` says otherwise); the MOS is their mean, as the
    judge's score is the mean of its three.

The schema holds no standard deviation, so the std columns of these files are not read.
"""

from __future__ import annotations

import csv
import json
import math
import random
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..errors import QInsightError, UsageError
from ..judging.profiles import QINSIGHT
from ..judging.prompts import VQ_AIGC_DIMENSIONS, PromptOrder
from ..judging.tasks import TASKS

FORMATS = (
    "qinsight", "deqa", "qinsight-comparison", "csv", "pyiqa", "mos-list", "koniq", "konvid", "lsvq", "live-vqc",
    "dimensions",
)  # fmt: skip
VIDEO_SCALE = (0.0, 100.0)  # LSVQ's and LIVE-VQC's MOS: their labels' scale unless --mos-range says otherwise


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
    dimensions: tuple[tuple[str, float], ...] = ()  # a multi-dimension label's (name, value on [1, 5]) pairs
    origin: str = field(default="", compare=False)  # "file:row", for messages

    def conversation(self) -> list[dict[str, Any]]:
        """The prompt the SDK uses at inference with Q-Insight's profile, image first as in training."""
        return QINSIGHT.messages(self.task, PromptOrder.IMAGE_FIRST, len(self.images) == 3)

    def columns(self) -> dict[str, Any]:
        """The label columns the reward functions read."""
        return {
            "task": self.task,
            "mos": self.mos,
            "distortion_class": self.distortion_class,
            "severity": self.severity,
            "answer": self.answer,
            "sample_id": self.origin,
        }


def _sample(record: dict[str, Any], root: Path, origin: str) -> Sample:
    if not isinstance(record, dict):
        raise TypeError(f"not a JSON object: {record!r}")
    task = record.get("task")
    if task not in TASKS:
        raise ValueError(f"task must be {', '.join(TASKS)}, got {task!r}")
    if task == "score" and "mos" in record:  # NaN would pass as a label and turn every metric to n/a
        try:
            value = float(record["mos"])
        except (TypeError, ValueError):
            value = 0.0  # not a number: the task's reader says so
        except OverflowError:
            value = math.inf
        if not math.isfinite(value):
            raise ValueError(f"mos {value} is not a finite number")
    names, labels = TASKS[task].read_record(record)
    return Sample(task, tuple(root / name for name in names), origin=origin, **labels)


def _unreadable(path: Path) -> str | None:
    try:
        with Image.open(path) as image:
            image.verify()
    except FileNotFoundError:
        return f"{path} not found"
    except Exception as exc:
        return f"{path} unreadable ({exc})"
    return None


def load_records(
    records: Iterable[tuple[str, dict[str, Any]]],
    image_root: str | Path,
    skip_bad: bool = False,
    check_images: bool = True,
) -> list[Sample]:
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


def _jsonl_records(path: Path) -> list[tuple[int, dict[str, Any]]]:
    records = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            try:
                records.append((number, json.loads(line)))
            except ValueError as exc:
                records.append((number, {"task": f"<invalid JSON: {exc}>"}))
    return records


def read_jsonl(
    path: str | Path, image_root: str | Path, skip_bad: bool = False, check_images: bool = True
) -> list[Sample]:
    """Samples from a file in qinsight's JSONL schema."""
    path = Path(path)
    return load_records(((f"{path.name}:{n}", r) for n, r in _jsonl_records(path)), image_root, skip_bad, check_images)


def from_deqa(meta: str | Path) -> list[dict[str, Any]]:
    """Records from a DeQA-Score meta JSON (``image`` and the already normalised ``gt_score_norm``)."""
    items = json.loads(Path(meta).read_text(encoding="utf-8"))
    return [{"task": "score", "image": item["image"], "mos": item["gt_score_norm"]} for item in items]


def from_qinsight_comparison(path: str | Path) -> list[dict[str, Any]]:
    """Records from Q-Insight's comparison JSON (``ref_image``, ``ImageA``, ``ImageB``, ``result``)."""
    items = json.loads(Path(path).read_text(encoding="utf-8"))
    return [
        {
            "task": "comparison",
            "reference": item.get("ref_image"),
            "image_a": item["ImageA"],
            "image_b": item["ImageB"],
            "answer": item["result"],
        }
        for item in items
    ]


def from_csv(
    path: str | Path, mos_range: Sequence[float] | None = None, file_range: bool = True
) -> list[dict[str, Any]]:
    """Records from a CSV with the columns of one task: ``image,mos``; ``image,distortion_class,severity``;
    or ``image_a,image_b,answer`` (and optionally ``reference``).

    MOS values are normalised from ``mos_range`` to [1, 5]. Without one, ``file_range`` (training: the
    paper's per-data-set rule) normalises from the file's own min and max; without it (evaluation) the
    values are taken as they are, so a judge is measured against the labels, not a stretch of them.

    A row is never read two ways: one with more fields than the header (an unquoted decimal comma,
    ``a.png,3,5``) or fewer, a column the header names twice, or a MOS that is not a plain number (empty,
    ``nan``) is a ``DataError`` naming the file's line (the header is line 1)."""
    return [record for _, record in _read_csv(Path(path), mos_range, file_range)]


_OUR_COLUMNS = {
    "comparison": ("image_a", "image_b", "answer"),
    "degradation": ("image", "distortion_class", "severity"),
    "score": ("image", "mos"),
}


def _read_csv(
    path: Path, mos_range: Sequence[float] | None = None, file_range: bool = True
) -> list[tuple[int, dict[str, Any]]]:
    header, rows = _csv_table(path)
    task = "comparison" if "answer" in header else "degradation" if "distortion_class" in header else "score"
    missing = [name for name in _OUR_COLUMNS[task] if name not in header]
    if missing:
        raise DataError(
            f"cannot read {path} as csv: its header ({','.join(header)}) has no {', '.join(missing)} "
            "column; ours is image,mos; image,distortion_class,severity; or image_a,image_b,answer "
            "(and optionally reference)"
        )
    _refuse_repeated_columns(path, header, _OUR_COLUMNS[task] + ("reference",))
    column = {name: header.index(name) for name in header}
    rows, problems = _whole_rows(path, header, rows, needed=1 + max(column[name] for name in _OUR_COLUMNS[task]))
    if task == "score":
        return _scores(
            _table_scores(path, rows, column["image"], column["mos"], "mos", problems), mos_range, file_range
        )
    if problems:
        raise DataError(_bad_rows(path, problems))

    def cell(row: list[str], name: str) -> str | None:  # None: no such column, or the row ends before it
        index = column.get(name, len(row))
        return row[index] if index < len(row) else None

    if task == "comparison":
        return [
            (
                n,
                {
                    "task": "comparison",
                    "image_a": cell(row, "image_a"),
                    "image_b": cell(row, "image_b"),
                    "reference": cell(row, "reference") or None,
                    "answer": cell(row, "answer"),
                },
            )
            for n, row in rows
        ]
    return [
        (
            n,
            {
                "task": "degradation",
                "image": cell(row, "image"),
                "distortion_class": cell(row, "distortion_class"),
                "severity": cell(row, "severity"),
            },
        )
        for n, row in rows
    ]


# -- score tables that other tools write ---------------------------------------------------------------

_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")


def _is_number(text: str) -> bool:
    """A plain decimal number (not nan, inf, or Python's 1_000): what a label file writes as a score."""
    return _NUMBER.fullmatch(text) is not None


def _scores(
    rows: Sequence[tuple[int, str, float]], mos_range: Sequence[float] | None, file_range: bool
) -> list[tuple[int, dict[str, Any]]]:
    """Score records from (row number, image, MOS as the file writes it), with the rule of :func:`from_csv`:
    normalised from ``mos_range``, else (``file_range``) from the file's own min and max, else as they are.

    A value outside its scale by a rounding error (SRIQA-Bench writes 100.00000000000001 on 0-100) is set
    on the bound, so that it is not refused as outside [1, 5] once normalised."""
    check_mos_range(mos_range)
    if mos_range is None and file_range and rows:
        mos_range = (min(v for _, _, v in rows), max(v for _, _, v in rows))
    low, high = (float(mos_range[0]), float(mos_range[1])) if mos_range is not None else (1.0, 5.0)
    scale = {"mos_range": list(mos_range)} if mos_range is not None else {}
    slack = 1e-9 * max(high - low, 0.0)

    def snap(value: float) -> float:
        return low if low - slack <= value < low else high if high < value <= high + slack else value

    return [(number, {"task": "score", "image": image, "mos": snap(value), **scale}) for number, image, value in rows]


def check_mos_range(mos_range: Sequence[float] | None) -> None:
    """A ``UsageError`` unless ``mos_range`` is None or two finite numbers, LOW below HIGH: a reversed or
    empty scale would turn every MOS upside down or divide by zero."""
    if mos_range is None:
        return
    try:
        low, high = (float(value) for value in mos_range)
    except (TypeError, ValueError):
        raise UsageError(f"--mos-range needs two numbers, LOW and HIGH; got {mos_range!r}") from None
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise UsageError(
            f"--mos-range {low:g} {high:g}: LOW must be a number below HIGH (the scale the labels' MOS "
            "is on, e.g. --mos-range 0 100)"
        )


def _csv_table(path: Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """A CSV's header (stripped) and its non-empty rows, each with the file line it starts on (the header is
    line 1; a quoted value may hold line breaks). A file without a header or without rows is a ``DataError``."""
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle)
        header = [name.strip() for name in next(reader, [])]
        rows, start = [], reader.line_num + 1
        for row in reader:
            if any(cell.strip() for cell in row):
                rows.append((start, row))
            start = reader.line_num + 1
    if not any(header):
        raise DataError(f"{path}: empty, no header and no labels")
    if not rows:
        raise DataError(f"{path}: a header (line 1) and no rows of labels")
    return header, rows


def _refuse_repeated_columns(path: Path, header: Sequence[str], names: Iterable[str], fold: bool = False) -> None:
    """A header naming a column that is read twice is a ``DataError``: which of the two is meant cannot be told
    (``fold``: names compared ignoring case, as pyiqa's columns are found)."""
    said = [name.lower() for name in header] if fold else list(header)
    for name in names:
        columns = [i + 1 for i, found in enumerate(said) if found == name]
        if len(columns) > 1:
            times = "twice" if len(columns) == 2 else f"{len(columns)} times"
            where = ", ".join(map(str, columns[:-1])) + f" and {columns[-1]}"
            raise DataError(
                f"{path.name}:1: the header names {name!r} {times} (columns {where}); which one holds "
                "the labels cannot be told: rename or remove the other"
            )


def _whole_rows(
    path: Path, header: Sequence[str], rows: Iterable[tuple[int, list[str]]], needed: int = 0
) -> tuple[list[tuple[int, list[str]]], list[tuple[int, str]]]:
    """The rows whose fields match the header, and a problem for each other one. More fields (other than
    empty ones at the end) means a value holds an unquoted comma, so the columns after it are shifted;
    fewer than ``needed`` means the row lacks a column that is read (the cells of fewer otherwise read as
    empty)."""
    kept, problems = [], []
    for number, row in rows:
        longer = any(cell.strip() for cell in row[len(header) :])
        if longer or len(row) < needed:
            fields = f"{len(row)} field" + ("" if len(row) == 1 else "s")
            why = (
                ": an unquoted comma (a decimal comma?) splits a value; quote the value or write a decimal point"
                if longer
                else ""
            )
            problems.append((number, f"{fields}, but the header (line 1) has {len(header)}{why}"))
        else:
            kept.append((number, row))
    return kept, problems


def _table_scores(
    path: Path,
    rows: Iterable[tuple[int, list[str]]],
    image: int,
    score: int,
    score_name: str,
    problems: Sequence[tuple[int, str]] = (),
) -> list[tuple[int, str, float]]:
    """(line, image, MOS) from the given columns; a missing or non-numeric cell is an error naming file:line,
    listed with the ``problems`` found before."""
    found, problems = [], list(problems)
    for number, row in rows:
        name = row[image].strip() if image < len(row) else ""
        value = row[score].strip() if score < len(row) else ""
        if not name:
            problems.append((number, "no image name"))
        elif not _is_number(value):
            problems.append((number, f"{score_name} {value!r} is not a number"))
        else:
            found.append((number, name, float(value)))
    if problems:
        raise DataError(_bad_rows(path, problems))
    return found


def _bad_rows(path: Path, problems: Iterable[tuple[int, str]]) -> str:
    """One message for a file's bad rows, each named ``file:line``, in the file's order."""
    problems = sorted(problems, key=lambda problem: problem[0])
    return f"{path}: {len(problems)} bad rows:\n" + "\n".join(f"{path.name}:{n}: {text}" for n, text in problems)


# pyiqa (IQA-PyTorch) reads its meta_info files by position: the image name first (no-reference sets) or
# reference then distorted image (full-reference sets), then the score. The headers vary from file to
# file (img_name / image_name / "Image name" / filename; ref_name or hq_name, dist_name; mos / MOS /
# qmos / dmos / elo_score), so the columns are found by name, in this order of preference.
_PYIQA_IMAGE = (
    "dist_name",
    "img_name",
    "image_name",
    "image name",
    "filename",
    "img_path",
    "img_name/patch_name",
    "name",
    "image",
)
_PYIQA_SCORE = ("mos", "mos_quality", "qmos", "score", "elo_score", "scaled_elo_score", "dmos")
# Data sets whose score pyiqa's own configuration (default_dataset_configs.yml) marks ``lower_better: true``,
# by the name of their meta_info file: CSIQ's and LIVE-MD's dmos, and LIVE IQA's DMOS in a column named mos.
_PYIQA_LOWER_BETTER = {"csiq": "CSIQ", "liveiqa": "LIVE IQA", "livemd": "LIVE-MD"}


def _pyiqa_columns(header: Sequence[str]) -> tuple[int, int] | None:
    """The indexes of the image and score columns of a pyiqa meta_info header, or None."""
    index: dict[str, int] = {}
    for i, name in enumerate(header):
        index.setdefault(name.lower(), i)
    image = next((index[n] for n in _PYIQA_IMAGE if n in index), None)
    score = next((index[n] for n in _PYIQA_SCORE if n in index), None)
    return None if image is None or score is None else (image, score)


def _read_pyiqa(
    path: Path, mos_range: Sequence[float] | None = None, file_range: bool = True
) -> list[tuple[int, dict[str, Any]]]:
    header, rows = _csv_table(path)
    columns = _pyiqa_columns(header)
    if columns is None:
        raise DataError(
            f"{path}: not a pyiqa meta_info CSV: its header {','.join(header)!r} has no image column "
            f"({', '.join(_PYIQA_IMAGE)}) or no score column ({', '.join(_PYIQA_SCORE)}); pairwise "
            "sets (PieAPP, BAPPS) hold preferences, not MOS"
        )
    image, score = columns
    # qinsight measures a judge against MOS, where higher is better; DMOS (lower is better) read as MOS
    # would turn every correlation's sign without a word, so it is refused, with what to do instead.
    lower_better = next((label for key, label in _PYIQA_LOWER_BETTER.items() if key in path.name.lower()), None)
    convert = (
        "Convert it to MOS first (mos = HIGH - dmos, e.g. in a CSV image,mos) and evaluate that file, "
        "with --mos-range LOW HIGH"
    )
    if lower_better is not None:
        raise DataError(
            f"{path}: {lower_better}'s {header[score]!r} column is DMOS, where lower means better "
            f"(pyiqa's configuration says lower_better: true); qinsight measures a judge against MOS, "
            f"where higher is better, and does not read DMOS as MOS. {convert}."
        )
    if header[score].lower() == "dmos" and "kadid" not in path.name.lower():
        # KADID-10k's 'dmos' is the mean of degradation category ratings, 1 (very annoying) to 5
        # (imperceptible): higher is better (pyiqa: lower_better: false), so its meta_info is read as MOS.
        raise DataError(
            f"{path}: the score column is {header[score]!r}, a differential MOS, where lower usually "
            f"means better (CSIQ, LIVE-MD); qinsight measures a judge against MOS, where higher is "
            f"better, and does not read DMOS as MOS. {convert}; if higher is better in this file "
            f"after all (as in KADID-10k's), rename the column to mos."
        )
    _refuse_repeated_columns(path, header, (header[image].lower(), header[score].lower()), fold=True)
    rows, problems = _whole_rows(path, header, rows)
    return _scores(_table_scores(path, rows, image, score, header[score], problems), mos_range, file_range)


def from_pyiqa(
    meta: str | Path, mos_range: Sequence[float] | None = None, file_range: bool = True
) -> list[dict[str, Any]]:
    """Score records from a pyiqa (IQA-PyTorch) ``meta_info_*.csv``.

    No-reference sets (KonIQ-10k: ``img_name,mos,std,...``; SPAQ: ``Image name,MOS,...``; LIVE Challenge:
    ``img_name,mos,std``; KonIQ-10k++: ``filename,qmos,sd,...``) give the image and its MOS. Full-reference
    sets (KADID-10k: ``ref_name,dist_name,dmos,std``; TID2013: ``ref_name,dist_name,mos,std``; PIPAL:
    ``hq_name,dist_name,elo_score``) give the distorted image, which is judged alone: the reference is not
    read. Std, split and attribute columns are not read either.

    Scores where lower is better are refused rather than read as MOS: a ``dmos`` column (except KADID-10k's,
    whose "dmos" is a 1-5 rating where higher is better), and the data sets pyiqa itself marks
    ``lower_better`` (CSIQ, LIVE IQA, LIVE-MD), whatever their column is called. MOS is normalised as by
    :func:`from_csv`."""
    return [record for _, record in _read_pyiqa(Path(meta), mos_range, file_range)]


def _parse_mos_line(tokens: Sequence[str]) -> tuple[str, float] | None:
    """(image, MOS) from ``image mos [std]`` or ``reference image mos [std]``, or None if it is neither:
    the second token being a number is what tells the two apart."""
    if len(tokens) in (2, 3) and _is_number(tokens[1]):
        image, numbers = tokens[0], tokens[1:]
    elif len(tokens) in (3, 4) and not _is_number(tokens[1]):
        image, numbers = tokens[1], tokens[2:]
    else:
        return None
    return (image, float(numbers[0])) if all(_is_number(t) for t in numbers) else None


def mos_list_line(line: str) -> tuple[str, float] | None:
    """(image, MOS) if ``line`` is a line of a whitespace MOS list, else None (used to recognise one)."""
    return _parse_mos_line(line.split())


def _read_mos_list(
    path: Path, mos_range: Sequence[float] | None = None, file_range: bool = True
) -> list[tuple[int, dict[str, Any]]]:
    found, problems = [], []
    for number, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), start=1):
        if not line.strip():
            continue
        parsed = mos_list_line(line)
        if parsed is None:
            problems.append(
                f"{path.name}:{number}: expected 'image mos [std]' or 'reference image mos [std]', got {line.strip()!r}"
            )
        else:
            found.append((number, *parsed))
    if problems:
        raise DataError(f"{path}: {len(problems)} malformed lines:\n" + "\n".join(problems))
    return _scores(found, mos_range, file_range)


def from_mos_list(
    path: str | Path, mos_range: Sequence[float] | None = None, file_range: bool = True
) -> list[dict[str, Any]]:
    """Score records from a whitespace-separated list, one image a line, as VisualQuality-R1 ships its test
    labels: ``image mos [std]``, or ``reference image mos [std]`` (Deblur, SRIQA-Bench, dehaze, KADID-10k),
    told apart on each line by whether its second token is a number; the image judged is the one before
    the MOS, a reference is not read. Blank lines are skipped; any other line is an error naming
    ``file:line``. Scores are taken as MOS (higher is better); normalised as by :func:`from_csv`."""
    return [record for _, record in _read_mos_list(Path(path), mos_range, file_range)]


def _read_koniq(
    path: Path, mos_range: Sequence[float] | None = None, file_range: bool = True
) -> list[tuple[int, dict[str, Any]]]:
    header, rows = _csv_table(path)
    if "image_name" not in header or "MOS" not in header:
        raise DataError(f"{path}: not KonIQ-10k's scores CSV: no image_name or MOS column in {','.join(header)!r}")
    _refuse_repeated_columns(path, header, ("image_name", "MOS"))
    rows, problems = _whole_rows(path, header, rows)
    return _scores(
        _table_scores(path, rows, header.index("image_name"), header.index("MOS"), "MOS", problems),
        mos_range,
        file_range,
    )


def from_koniq(
    path: str | Path, mos_range: Sequence[float] | None = None, file_range: bool = True
) -> list[dict[str, Any]]:
    """Score records from KonIQ-10k's ``koniq10k_scores_and_distributions.csv`` (``image_name``, ``c1``-``c5``,
    ``c_total``, ``MOS``, ``SD``, ``MOS_zscore``): ``image_name`` and ``MOS``, on 1-5 already (not the
    z-scores, nor SD: the schema has no std). Normalised as by :func:`from_csv`."""
    return [record for _, record in _read_koniq(Path(path), mos_range, file_range)]


# -- video data sets ----------------------------------------------------------------------------------------


def _video_name(name: str) -> str:
    """A video's file name as a label file gives it: LSVQ's names and KoNViD-1k's ids lack the ``.mp4``."""
    return name if Path(name).suffix else name + ".mp4"


def _read_konvid(path: Path, mos_range: Sequence[float] | None, file_range: bool) -> list[tuple[int, dict[str, Any]]]:
    header, rows = _csv_table(path)
    video = next((c for c in ("file_name", "flickr_id") if c in header), None)
    if video is None or "MOS" not in header:
        raise DataError(
            f"{path}: not KoNViD-1k's attributes CSV: no file_name (or flickr_id) or no MOS column in "
            f"{','.join(header)!r}"
        )
    _refuse_repeated_columns(path, header, (video, "MOS"))
    rows, problems = _whole_rows(path, header, rows)
    found = _table_scores(path, rows, header.index(video), header.index("MOS"), "MOS", problems)
    return _scores([(n, _video_name(name), v) for n, name, v in found], mos_range, file_range)


def _read_lsvq(path: Path, mos_range: Sequence[float] | None, file_range: bool) -> list[tuple[int, dict[str, Any]]]:
    header, rows = _csv_table(path)
    if "name" not in header or "mos" not in header:
        raise DataError(f"{path}: not an LSVQ labels CSV: no name or mos column in {','.join(header)!r}")
    _refuse_repeated_columns(path, header, ("name", "mos"))
    rows, problems = _whole_rows(path, header, rows)
    found = _table_scores(path, rows, header.index("name"), header.index("mos"), "mos", problems)
    return _scores([(n, _video_name(name), v) for n, name, v in found], mos_range or VIDEO_SCALE, file_range)


def _read_live_vqc(path: Path, mos_range: Sequence[float] | None, file_range: bool) -> list[tuple[int, dict[str, Any]]]:
    """LIVE-VQC's ``data.mat`` (MATLAB 5 format): items numbered from 1 in the file's order."""
    try:
        from scipy.io import loadmat
        from scipy.io.matlab import MatReadError
    except ImportError:
        raise DataError(f"{path}: reading LIVE-VQC's data.mat needs SciPy (pip install 'qinsight[eval]')") from None
    try:
        data = loadmat(str(path), simplify_cells=True)  # arrays and cells only: MAT files hold no code
    except (MatReadError, NotImplementedError, ValueError, OSError) as exc:
        raise DataError(f"{path}: not a MATLAB file SciPy reads ({exc}); save it as MAT 5 (-v7) or as a CSV") from None
    if "video_list" not in data or "mos" not in data:
        held = ", ".join(sorted(key for key in data if not key.startswith("__")))  # not the file's own header
        raise DataError(f"{path}: not LIVE-VQC's data.mat: no video_list or mos in it ({held or 'nothing'})")
    names, scores = list(np.atleast_1d(data["video_list"])), list(np.atleast_1d(data["mos"]).ravel())
    if len(names) != len(scores):
        raise DataError(f"{path}: {len(names)} videos in video_list but {len(scores)} scores in mos")
    names = [name.strip() if isinstance(name, str) else "" for name in names]  # an empty cell reads as []
    problems = [(n, "no video name") for n, name in enumerate(names, start=1) if not name]
    problems += [(n, f"mos {v} is not a number") for n, v in enumerate(scores, start=1) if not _finite_number(v)]
    if problems:
        raise DataError(_bad_rows(path, problems))
    found = [(n, _video_name(name), float(v)) for n, (name, v) in enumerate(zip(names, scores), start=1)]
    return _scores(found, mos_range or VIDEO_SCALE, file_range)


def _read_dimensions(
    path: Path, mos_range: Sequence[float] | None, file_range: bool
) -> list[tuple[int, dict[str, Any]]]:
    header, rows = _csv_table(path)
    video = next((c for c in ("video", "image") if c in header), None)
    missing = [name for name in VQ_AIGC_DIMENSIONS if name not in header]
    if video is None or missing:
        raise DataError(
            f"{path}: not a multi-dimension label CSV: it needs a video (or image) column and "
            f"{', '.join(VQ_AIGC_DIMENSIONS)}; {','.join(header)!r} lacks {', '.join(missing) or 'video'}"
        )
    _refuse_repeated_columns(path, header, (video, *VQ_AIGC_DIMENSIONS))
    rows, problems = _whole_rows(path, header, rows, needed=len(header))
    scale = list(mos_range or VIDEO_SCALE)
    records = []
    for number, row in rows:
        name = row[header.index(video)].strip()
        cells = {dimension: row[header.index(dimension)].strip() for dimension in VQ_AIGC_DIMENSIONS}
        bad = [f"{dimension} {cell!r} is not a number" for dimension, cell in cells.items() if not _is_number(cell)]
        problems += [(number, text) for text in (["no video name"] if not name else []) + bad]
        if name and not bad:
            values = {dimension: float(cell) for dimension, cell in cells.items()}
            mos = sum(values.values()) / len(values)
            record = {"task": "score", "image": name, "mos": mos, "dimensions": values, "mos_range": scale}
            records.append((number, record))
    if problems:
        raise DataError(_bad_rows(path, problems))
    return records


def _finite_number(value: Any) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def csv_format(path: str | Path) -> str | None:
    """The format a CSV's header (and, for LSVQ, its name) says it is in: ``csv`` (ours), ``koniq``, ``konvid``,
    ``lsvq``, ``pyiqa``, or None."""
    header = _csv_header(Path(path))
    columns = set(header)
    if {"image_name", "MOS", "c_total"} <= columns:
        return "koniq"
    if {"flickr_id", "MOS"} <= columns:
        return "konvid"
    if set(VQ_AIGC_DIMENSIONS) <= columns:
        return "dimensions"
    if {"name", "mos"} <= columns and Path(path).name.startswith("labels"):  # LSVQ's labels_*.csv
        return "lsvq"
    if "answer" in columns or "distortion_class" in columns or {"image", "mos"} <= columns:
        return "csv"
    return "pyiqa" if _pyiqa_columns(header) is not None else None


def _csv_header(path: Path) -> list[str]:
    with path.open(newline="", encoding="utf-8-sig") as handle:
        return [name.strip() for name in next(csv.reader(handle), [])]


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


_READERS: dict[str, Callable[[Path, Sequence[float] | None, bool], list[tuple[int, dict[str, Any]]]]] = {
    "qinsight": lambda path, mos_range, file_range: _jsonl_records(path),
    "deqa": lambda path, mos_range, file_range: list(enumerate(from_deqa(path), start=1)),
    "qinsight-comparison": lambda path, mos_range, file_range: list(enumerate(from_qinsight_comparison(path), start=1)),
    "csv": _read_csv,
    "pyiqa": _read_pyiqa,
    "mos-list": _read_mos_list,
    "koniq": _read_koniq,
    "konvid": _read_konvid,
    "lsvq": _read_lsvq,
    "live-vqc": _read_live_vqc,
    "dimensions": _read_dimensions,
}


def read_records(
    path: str | Path, format: str = "qinsight", mos_range: Sequence[float] | None = None, file_range: bool = True
) -> list[tuple[str, dict[str, Any]]]:
    """(origin, record) pairs from one data file in any of :data:`FORMATS`, unchecked; the origin is
    ``file:number``: the line of the file (a JSONL file, a MOS list, or a CSV, whose header is line 1 and
    whose row is named by the line it starts on), or the item of a JSON list, numbered from 1.
    ``mos_range`` and ``file_range`` are as for :func:`from_csv`; a ``qinsight`` file carries its own.
    A file without labels is a ``DataError``; a reversed or empty ``mos_range`` a ``UsageError``."""
    if format not in FORMATS:
        raise UsageError(f"unknown data format {format!r}; use one of {', '.join(FORMATS)}")
    check_mos_range(mos_range)
    path = Path(path)
    try:
        numbered = _READERS[format](path, mos_range, file_range)
    except (OSError, ValueError, KeyError, TypeError, csv.Error) as exc:
        raise DataError(f"cannot read {path} as {format}: {type(exc).__name__}: {exc}") from None
    if not numbered:
        raise DataError(f"{path}: empty, no labels in it")
    return [(f"{path.name}:{number}", record) for number, record in numbered]


def read_source(
    path: str | Path,
    format: str = "qinsight",
    image_root: str | Path | None = None,
    mos_range: Sequence[float] | None = None,
    skip_bad: bool = False,
    check_images: bool = True,
    file_range: bool = True,
) -> list[Sample]:
    """Samples from one data file in any supported format, checked like ``read_jsonl``.

    ``image_root`` defaults to the file's folder. Messages name entries as :func:`read_records` does.
    ``mos_range`` and ``file_range`` are as for :func:`from_csv`.
    """
    path = Path(path)
    root = Path(image_root) if image_root is not None else path.parent
    return load_records(read_records(path, format, mos_range, file_range), root, skip_bad, check_images)
