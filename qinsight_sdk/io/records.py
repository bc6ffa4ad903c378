"""The record store: every command that writes results (score, degradation, compare, rank, eval) writes
the same kind of file, so that what one command wrote another can read, and a killed run resumes.

A file holds JSON lines, one row per judged item::

    {"task": "score", "key": "/data/a.png", "image": "a.png", "settings": {...}, "error": null,
     "score": 3.91, "std": 0.62, "samples": [], "reasoning": "...", "raw": "..."}

- ``task``: score, degradation, comparison or rank; ``key``: what was judged, resolved (the image file's
  real path; for a pair ``[reference|]image_a|image_b``), so one file named two ways is one item;
  ``image`` (or ``image_a``, ``image_b``, ``reference``): the paths as they were given;
  ``settings``: everything that changes the answer (model, subfolder, revision, profile, dtype, mode,
  decoding, prompt order, pixel bound; for rank also the strategy and the set of images);
  ``error``: null, or why the item has no result; then the result's own fields.
- One file holds one task made with one set of settings: a run whose settings differ stops before it
  loads a model and says which setting differs, so answers made different ways are never mixed.
- Rows are found by key and the last row of a key wins. Rows without ``settings`` were written by
  qinsight 0.1 (``score -o``, ``eval --predictions``): they are read as made with the current settings
  and converted in place, with a note.

What is guaranteed: a row is written to the operating system (unbuffered) as soon as its item is judged, so a run
that is killed (even with SIGKILL) loses only the row it was writing; a line cut off that way is cut from
the file when it is next opened (a last line that parses whole only lacks its newline: it is kept). Rows
are also fsynced at most a second apart and when the run ends, so a power failure loses at most the last
second. While a run writes a file it holds an exclusive lock on it (POSIX ``flock``; on Windows a
byte-range lock): a second run on the same file stops at once with a message instead of losing rows.
Strict JSON: a non-finite number is never written.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import IO, Any

from ..errors import QInsightError, UsageError
from ..judging.tasks import ANSWER_OF_WINNER

FSYNC_INTERVAL_S = 1.0
_LOCK_ATTEMPTS = 5
logger = logging.getLogger("qinsight")


class RecordFileError(QInsightError):
    """A record file that cannot be used as it is: a line that is not a row, or rows made another way."""


def key_of(*paths: str | os.PathLike[str]) -> str:
    """The key of an item: its files' real paths (links and ``..`` resolved) joined by ``|``."""
    return "|".join(os.path.realpath(path) for path in paths)


def _whole_bytes(handle: IO[bytes], repair: bool) -> bytes:
    """The file's complete lines. A last line cut off by a kill, even inside a multi-byte character, is
    cut from the file itself (``repair``), so that what is appended next starts on a line of its own. A
    last line that is whole JSON only lacks its newline (an editor or another tool wrote it; a row cut
    short never parses): it is kept, and (``repair``) its newline added."""
    handle.seek(0)
    data = handle.read()
    if data and not data.endswith(b"\n"):
        start = data.rfind(b"\n") + 1
        if _parses(data[start:]):
            data += b"\n"
            if repair:
                _append(handle, b"\n")  # the file is open for appending: this goes at its end
        else:
            data = data[:start]
            if repair:
                handle.truncate(len(data))
    return data


def _parses(line: bytes) -> bool:
    """Whether ``line`` is one JSON value (UTF-8): a row written whole, not the start of one."""
    try:
        json.loads(line.decode("utf-8"))
    except ValueError:  # UnicodeDecodeError included: a kill inside a character
        return False
    return True


def _decode_lines(data: bytes, path: Path) -> list[str]:
    try:
        return data.decode("utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise RecordFileError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def make_row(
    task: str, paths: Sequence[str], settings: dict[str, Any] | None, result: dict[str, Any]
) -> dict[str, Any]:
    """The row of one judged item: ``paths`` in prompt order (``[reference,] image_a, image_b`` for a
    pair), ``result`` the result's fields."""
    if task == "comparison":
        given = {"image_a": paths[-2], "image_b": paths[-1], "reference": paths[0] if len(paths) == 3 else None}
    else:
        (image,) = paths
        given = {"image": image}
    return {"task": task, "key": key_of(*paths), **given, "settings": settings, **result}


def answer_settings(
    model: str,
    subfolder: str | None,
    revision: str | None,
    profile: str,
    dtype: Any,
    prompt_order: str,
    max_pixels: int,
    quantization: str | None,
    decoding: Any,
    **task: Any,
) -> dict[str, Any]:
    """A row's ``settings``: everything that changes an answer, the same whether it comes from the command
    line's options (before a model loads) or from a loaded judge (the ComfyUI nodes), so rows made either
    way compare equal. A local model is named by its real path. Full precision records no quantization, so
    rows made before quantization existed still resume. Fast scores generate no text, so decoding options
    (a ``DecodingOptions``) do not change them and are left out."""
    settings = {
        "model": os.path.realpath(model) if Path(model).is_dir() else model,
        "subfolder": subfolder,
        "revision": revision,
        "profile": profile,
        "dtype": str(dtype).removeprefix("torch."),
        "prompt_order": prompt_order,
        "max_pixels": max_pixels,
        **task,
    }
    if quantization:
        settings["quantization"] = quantization
    if task.get("mode") != "fast":
        settings["decoding"] = asdict(decoding)
    return settings


def row_text(row: dict[str, Any]) -> str:
    """One row as strict JSON (never ``NaN``), readable where possible: escaped only when it holds a file
    name that is not UTF-8 (os.fsdecode's lone surrogates), so that it round-trips."""
    text = json.dumps(row, ensure_ascii=False, allow_nan=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = json.dumps(row)  # ASCII escapes; a non-finite number was already refused above
    return text


# -- locking: flock where there is one (Linux, macOS), a byte-range lock on Windows ---------------------


def _try_lock(handle: IO[bytes], exclusive: bool) -> bool:
    """Lock the open file without waiting: whether the lock was had."""
    try:
        import fcntl
    except ImportError:
        return _try_lock_on_windows(handle)
    try:
        fcntl.flock(handle.fileno(), (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _try_lock_on_windows(handle: IO[bytes]) -> bool:
    """Windows has no flock: an exclusive lock on the first byte (readers too take it, briefly)."""
    import msvcrt

    handle.seek(0)
    try:
        msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)  # type: ignore[attr-defined]
    except OSError:
        return False
    return True


def _open_locked(path: Path, exclusive: bool) -> IO[bytes]:
    """The file opened (created when writing) and locked, or a usage error saying who holds it.

    A run that rewrites the file replaces it: a lock won on the replaced file is retried on the new one
    (a few times: a file replaced again and again is someone else's doing)."""
    for _ in range(_LOCK_ATTEMPTS):
        try:
            handle = open(path, "a+b" if exclusive else "rb", buffering=0)
        except OSError as exc:
            raise RecordFileError(f"cannot open {path}: {exc.strerror or exc}") from None
        if not _try_lock(handle, exclusive):
            handle.close()
            raise UsageError(
                f"{path} is being written by another qinsight run; wait for it to finish or write to another file"
            )
        if os.fstat(handle.fileno()).st_ino == os.stat(path).st_ino:
            return handle
        handle.close()
    raise UsageError(f"{path} keeps being replaced while qinsight opens it; is another program rewriting it?")


def check_writable(path: str | os.PathLike[str]) -> None:
    """Create the folder a result file goes in; a path that cannot be a file is a usage error. Called
    before a model loads, so such a mistake costs no loading time."""
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"{path} is a folder; name a file to write to")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create the folder for {path}: {exc.strerror or exc}") from None


# -- the store -------------------------------------------------------------------------------------------


class RecordStore:
    """An open record file: its rows by key, and where new rows are appended. Use :func:`open_store`
    (or :func:`read_store`)."""

    def __init__(
        self,
        path: Path,
        handle: IO[bytes] | None,
        task: str,
        settings: dict[str, Any] | None,
        rows: dict[str, dict[str, Any]],
    ) -> None:
        self.path, self.task, self.settings = path, task, settings
        self.rows = rows
        self._handle = handle
        self._synced = time.monotonic()

    def done(self, key: str) -> bool:
        return key in self.rows

    def failed(self) -> int:
        return sum(row.get("error") is not None for row in self.rows.values())

    def write(self, paths: Sequence[str], result: dict[str, Any]) -> dict[str, Any]:
        """Append the row of one judged item (see :func:`make_row`)."""
        if self._handle is None:
            raise UsageError(f"{self.path} was opened for reading only")
        row = make_row(self.task, paths, self.settings, result)
        try:
            _append(self._handle, (row_text(row) + "\n").encode("utf-8"))  # unbuffered: a killed run keeps it
        except OSError as exc:
            raise RecordFileError(
                f"cannot write to {self.path}: {exc.strerror or exc}; the rows written "
                "before are kept, and rerunning the same command continues"
            ) from None
        if time.monotonic() - self._synced >= FSYNC_INTERVAL_S:
            self._sync()
        self.rows[row["key"]] = row
        return row

    def clear(self) -> None:
        """Forget every row, for a result that must be written whole (a ranking of a new set)."""
        assert self._handle is not None
        self._handle.truncate(0)
        self.rows.clear()

    def _sync(self) -> None:
        assert self._handle is not None
        os.fsync(self._handle.fileno())
        self._synced = time.monotonic()

    def close(self) -> None:
        if self._handle is not None:
            self._sync()
            self._handle.close()
            self._handle = None


def _parse(lines: list[str], path: Path) -> list[dict[str, Any]]:
    rows = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as exc:
            row = exc
        if not isinstance(row, dict):
            raise RecordFileError(
                f"{path}:{number}: not a qinsight row ({row}); remove that line, or start afresh (--overwrite)"
            )
        rows.append(row)
    return rows


def _differences(found: dict[str, Any], wanted: dict[str, Any]) -> str:
    """The settings that differ, plain values first ("mode: 'fast' there, 'reason' now")."""

    def said(name: str) -> tuple[bool, str]:
        there, now = found.get(name), wanted.get(name)
        if isinstance(there, dict) or isinstance(now, dict):
            return True, f"{name} " + (
                "not used there" if there is None else "not used now" if now is None else "differs"
            )
        return False, f"{name}: {there!r} there, {now!r} now"

    names = [name for name in {**found, **wanted} if found.get(name) != wanted.get(name)]
    return "; ".join(text for _, text in sorted(map(said, names)))


def _check_made_alike(row: dict[str, Any], task: str, settings: dict[str, Any], path: Path) -> None:
    if row.get("task") != task:
        raise RecordFileError(
            f"{path} holds {row.get('task')} rows, not {task}: write to another file, or start afresh (--overwrite)"
        )
    if row["settings"] != settings:
        raise RecordFileError(
            f"{path} holds rows made with other settings ({_differences(row['settings'], settings)}"
            "): write to another file, or start afresh (--overwrite)"
        )


def _legacy_key(row: dict[str, Any], root: str) -> str:
    """A qinsight 0.1 row's item: eval's ``key`` (paths relative to the data's image root), else the
    paths as ``score -o`` or ``compare -o`` were given them (relative to the folder they ran in)."""
    if "key" in row:
        paths = str(row["key"]).split("|")
    elif "image_a" in row:
        paths = ([row["reference"]] if row.get("reference") else []) + [row["image_a"], row["image_b"]]
    else:
        paths = [row["image"]]
    return key_of(*(os.path.join(root, path) for path in paths))


def _legacy(row: dict[str, Any], task: str, settings: dict[str, Any], root: str) -> dict[str, Any]:
    """A qinsight 0.1 row in today's schema (its winner was spelled "Image A"; it had no settings)."""
    converted = {"task": task, **row, "key": _legacy_key(row, root), "settings": settings}
    winners = {answer: winner for winner, answer in ANSWER_OF_WINNER.items()}
    if converted.get("winner") in winners:
        converted["winner"] = winners[converted["winner"]]
    return converted


def _rewrite(path: Path, rows: list[dict[str, Any]]) -> IO[bytes]:
    """The rows written to a new file that replaces ``path`` once complete, so a kill mid-way loses
    nothing; the new file is locked before it is in place."""
    temporary = path.with_name(path.name + ".rewrite")
    try:
        handle = open(temporary, "w+b", buffering=0)
    except OSError as exc:
        raise RecordFileError(f"cannot rewrite {path}: {exc.strerror or exc}; it is left as it was") from None
    try:
        if not _try_lock(handle, exclusive=True):
            raise UsageError(f"{path} is being rewritten by another qinsight run; wait for it to finish")
        _append(handle, "".join(row_text(row) + "\n" for row in rows).encode("utf-8"))
        os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException as exc:
        handle.close()
        temporary.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise RecordFileError(f"cannot rewrite {path}: {exc.strerror or exc}; it is left as it was") from None
        raise
    _sync_folder(path.parent)
    return handle


def _append(handle: IO[bytes], data: bytes) -> None:
    """All of ``data``, written straight to the file (an unbuffered write may take only part)."""
    written = 0
    while written < len(data):
        written += handle.write(data[written:])


def _sync_folder(folder: Path) -> None:
    """Make a replacement durable: the folder's entry for it is on disk too (POSIX only)."""
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:  # Windows cannot open a folder; its replace is durable enough
        return
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def open_store(
    path: str | os.PathLike[str],
    task: str,
    settings: dict[str, Any],
    *,
    overwrite: bool = False,
    retry_failed: bool = False,
    legacy_root: str | os.PathLike[str] = ".",
) -> RecordStore:
    """Open and lock the record file at ``path``, to add rows of ``task`` made with ``settings``.

    Rows of another task or made with other settings are an error, unless ``overwrite`` starts afresh.
    ``retry_failed`` forgets rows that carry an error, so their items are judged again.
    ``legacy_root`` is the folder a qinsight 0.1 row's relative paths start from.
    """
    path = Path(path)
    check_writable(path)
    handle = _open_locked(path, exclusive=True)
    try:
        if overwrite:
            handle.truncate(0)
            return RecordStore(path, handle, task, settings, {})
        found = _parse(_decode_lines(_whole_bytes(handle, repair=True), path), path)
        store, changed = _collect(path, handle, task, settings, found, str(legacy_root), retry_failed)
        if changed or len(found) != len(store.rows):  # one row per key, in today's schema
            store._handle = _rewrite(path, list(store.rows.values()))
            handle.close()
        return store  # appends go to the end: the file is open for appending
    except BaseException:
        handle.close()
        raise


def read_store(path: str | os.PathLike[str], task: str, legacy_root: str | os.PathLike[str] = ".") -> RecordStore:
    """The rows of ``task`` in the record file at ``path``, made with any one set of settings, for
    reading only (``eval --predictions-only``). Nothing is repaired: a writer may be mid-line. A file that
    is not there is an error (a mistyped name would otherwise read as no predictions at all)."""
    path = Path(path)
    if not path.exists():
        raise RecordFileError(f"{path}: no such predictions file (--predictions-only reads predictions, it makes none)")
    with _open_locked(path, exclusive=False) as handle:
        lines = _decode_lines(_whole_bytes(handle, repair=False), path)
    found = [row for row in _parse(lines, path) if row.get("task", task) == task]
    return _collect(path, None, task, None, found, str(legacy_root), retry_failed=False)[0]


def _collect(
    path: Path,
    handle: IO[bytes] | None,
    task: str,
    settings: dict[str, Any] | None,
    found: list[dict[str, Any]],
    legacy_root: str,
    retry_failed: bool,
) -> tuple[RecordStore, bool]:
    """The rows by key (checked to be made alike), and whether the file must be rewritten."""
    made = [row for row in found if "settings" in row]
    legacy = [row for row in found if "settings" not in row]
    expected = settings if settings is not None else (made[0]["settings"] if made else {})
    try:
        current = [row if "settings" in row else _legacy(row, task, expected, legacy_root) for row in found]
    except (KeyError, TypeError, ValueError) as exc:
        raise RecordFileError(f"{path}: a row without settings has no usable key ({exc!r})") from None
    for row in current:  # old rows too: one file holds one task
        _check_made_alike(row, task, expected, path)
    rows = {row["key"]: row for row in current}
    kept = {key: row for key, row in rows.items() if not (retry_failed and row.get("error") is not None)}
    store = RecordStore(path, handle, task, settings, kept)
    if legacy:
        logger.warning(
            f"{path}: {len(legacy)} rows written by qinsight 0.1 (no settings recorded) are "
            "taken as made with this run's settings" + ("" if handle is None else " and converted to today's rows")
        )
    return store, bool(legacy) or len(kept) < len(rows)
